import Foundation
import LazyPullFuzz
import Testing

/// Every input in `Tests/Fuzz/<target>/` (the seed corpus, and every input a fuzzer ever
/// crashed on, kept as a regression test) runs through its target: each must return, a
/// thrown error being a fine answer.
@Suite("Fuzz corpora")
struct FuzzCorpusTests {
    static let corpusRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fuzz").path

    static var targetNames: [String] { FuzzTarget.all.map(\.name) }

    @Test("every corpus input of the target returns", arguments: targetNames)
    func corpus(_ name: String) throws {
        let target = try #require(FuzzTarget.named(name))
        let directory = "\(Self.corpusRoot)/\(name)"
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { !$0.hasPrefix(".") }.sorted()
        #expect(!files.isEmpty, "no seed inputs in \(directory)")
        for file in files {
            let input = try #require(FileManager.default.contents(atPath: "\(directory)/\(file)"))
            target.run(Array(input))
        }
    }

    @Test("every fuzz executable has a target and a corpus directory")
    func executablesMatchTargets() throws {
        let sources = URL(fileURLWithPath: Self.corpusRoot).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/Fuzz").path
        let executables = try FileManager.default.contentsOfDirectory(atPath: sources).sorted()
        #expect(executables == Self.targetNames.sorted())
    }
}
