import Foundation
import Testing
@testable import LazyPullLayers

/// The TOC parser against Foundation's JSONDecoder (the reference for what is accepted and
/// what it means), and against malformed input.
@Suite("TOC JSON parser")
struct TOCJSONParserTests {
    static let documents: [String] = [
        #"{"version":1,"entries":[]}"#,
        #"{"entries":[{"name":"etc/hosts","type":"reg","size":3,"offset":10,"endOffset":40,"digest":"sha256:00","chunkDigest":"sha256:00","mode":420,"uid":0,"gid":0,"modtime":"2020-01-01T00:00:00Z"}],"version":1}"#,
        #"{"version":1,"entries":[{"name":"d\u00e9j\u00e0\/\"q\"\\\n\t\b\f\r\ud83d\ude00","type":"reg"}]}"#,
        #"{"version":1,"entries":[{"name":"x","type":"dir","size":null,"xattrs":null,"linkName":null,"uid":null}]}"#,
        #"{"version":1,"extra":{"a":[1,-2.5e3,true,false,null,{"b":"c"}]},"entries":[{"name":"x","type":"symlink","linkName":"y","future":[[]],"xattrs":{"user.a":"YQ==","security.capability":""}}]}"#,
        " \n{ \"version\" : 2 ,\n \"entries\" : [ { \"name\" : \"z\" , \"type\" : \"chunk\" , \"chunkOffset\" : 4194304 , \"chunkSize\": 9223372036854775807, \"innerOffset\": -0 } ] } \n",
        #"{"version":1,"entries":[{"name":"dev/null","type":"char","devMajor":1,"devMinor":3,"mode":438},{"name":"a","type":"hardlink","linkName":"b"}]}"#,
    ]

    @Test("decodes like JSONDecoder", arguments: documents)
    func matchesJSONDecoder(_ json: String) throws {
        let expected = try JSONDecoder().decode(LayerTOC.self, from: Data(json.utf8))
        #expect(try TOCJSONParser.parse(Array(json.utf8)) == expected)
    }

    static let malformed: [(json: String, reason: String)] = [
        ("", "unexpected end"),
        (#"{"version":1}"#, #"missing "entries""#),
        (#"{"entries":[]}"#, #"missing "version""#),
        (#"{"version":1,"entries":[{"type":"reg"}]}"#, #"without "name""#),
        (#"{"version":1,"entries":[{"name":"a"}]}"#, #"without "type""#),
        (#"{"version":1.5,"entries":[]}"#, "expected an integer"),
        (#"{"version":99999999999999999999,"entries":[]}"#, "out of range"),
        (#"{"version":1,"entries":[]} x"#, "unexpected data"),
        (#"{"version":1,"entries":[{"name":"a\ud800","type":"reg"}]}"#, "surrogate"),
        (#"{"version":1,"entries":[{"name":"a\x","type":"reg"}]}"#, "invalid escape"),
        ("{\"version\":1,\"entries\":[{\"name\":\"a\tb\",\"type\":\"reg\"}]}", "control character"),
        (#"{"version":1,"entries":[{"name":"a","type":"reg"}"#, "unexpected end"),
        (#"{"version":1,"entries":[{"name":"a","type":"reg"}}"#, #"expected "," or "]""#),
        (#"{"version":1,"entries":[{"name":"a","type":"reg","size":"3"}]}"#, "expected a number"),
        (#"{"version":1,"entries":[{"name":1,"type":"reg"}]}"#, #"expected """#),
        (#"{"version":tru,"entries":[]}"#, "expected a number"),
        (#"{"version":1,"x":"# + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + #","entries":[]}"#,
         "nested too deeply"),
    ]

    @Test("rejects malformed input with the reason and where", arguments: malformed)
    func rejects(_ json: String, reason: String) {
        #expect {
            try TOCJSONParser.parse(Array(json.utf8))
        } throws: { error in
            "\(error)".contains(reason) && "\(error)".contains("at byte")
        }
    }
}
