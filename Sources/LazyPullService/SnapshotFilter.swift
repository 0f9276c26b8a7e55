import Foundation
import LazyPullOCI

/// A containerd list filter (containerd `filters` package syntax), applied to snapshots.
///
/// One filter string is a comma-separated conjunction of conditions; `List` ORs the strings
/// it gets. A condition is a field path, optionally followed by an operator and a value:
///
///     name==default/3/sha256:ab…          exact match
///     labels."containerd.io/snapshot.ref"  the label is present
///     kind!=committed                      anything else
///     parent~=^default/                    regular expression
///
/// Path components and values may be double-quoted (with backslash escapes); the snapshot
/// fields are `name`, `parent`, `kind` and `labels.<key>`.
public struct SnapshotFilter: Sendable, Equatable {
    public enum Operator: String, Sendable { case equal = "==", notEqual = "!=", matches = "~=" }

    public struct Condition: Sendable, Equatable {
        public var path: [String]
        /// nil: the field only has to be present.
        public var test: (op: Operator, value: String)?

        public static func == (a: Condition, b: Condition) -> Bool {
            a.path == b.path && a.test?.op == b.test?.op && a.test?.value == b.test?.value
        }
    }

    /// The fields of one snapshot a filter can look at.
    public struct Fields: Sendable {
        public var name: String
        public var parent: String
        public var kind: String
        public var labels: [String: String]

        public init(name: String, parent: String, kind: String, labels: [String: String]) {
            self.name = name
            self.parent = parent
            self.kind = kind
            self.labels = labels
        }

        func value(at path: [String]) -> String? {
            switch path.first {
            case "name": path.count == 1 ? name : nil
            case "parent": path.count == 1 ? parent : nil
            case "kind": path.count == 1 ? kind : nil
            case "labels":
                path.count >= 2 ? labels[path.dropFirst().joined(separator: ".")] : nil
            default: nil
            }
        }
    }

    public var conditions: [Condition]

    public init(parsing text: String) throws {
        var parser = Parser(text: Array(text.unicodeScalars))
        conditions = try parser.conditions()
    }

    public func matches(_ fields: Fields) -> Bool {
        conditions.allSatisfy { condition in
            guard let value = fields.value(at: condition.path) else {
                // An absent field equals nothing, so it is "not equal" to any value.
                return condition.test?.op == .notEqual
            }
            guard let (op, wanted) = condition.test else { return true }
            switch op {
            case .equal: return value == wanted
            case .notEqual: return value != wanted
            case .matches: return value.range(of: wanted, options: .regularExpression) != nil
            }
        }
    }

    /// True when any of `filters` matches (an empty list matches everything).
    public static func matchesAny(_ filters: [SnapshotFilter], _ fields: Fields) -> Bool {
        filters.isEmpty || filters.contains { $0.matches(fields) }
    }

    private struct Parser {
        let text: [Unicode.Scalar]
        var at = 0

        mutating func conditions() throws -> [Condition] {
            var result: [Condition] = []
            skipSpaces()
            guard at < text.count else { return [] }
            while true {
                result.append(try condition())
                skipSpaces()
                if at == text.count { return result }
                guard text[at] == "," else { throw failure("expected ',' or the end") }
                at += 1
                skipSpaces()
            }
        }

        mutating func condition() throws -> Condition {
            var path = [try field()]
            while at < text.count, text[at] == "." {
                at += 1
                path.append(try field())
            }
            skipSpaces()
            guard at + 1 < text.count, let op = Operator(rawValue: String(text[at]) + String(text[at + 1])) else {
                return Condition(path: path, test: nil)
            }
            at += 2
            skipSpaces()
            return Condition(path: path, test: (op, try value()))
        }

        mutating func field() throws -> String {
            if at < text.count, text[at] == "\"" { return try quoted() }
            let start = at
            while at < text.count, text[at].properties.isAlphabetic || ("0"..."9").contains(text[at]) || text[at] == "_" {
                at += 1
            }
            guard at > start else { throw failure("expected a field name") }
            return String(String.UnicodeScalarView(text[start..<at]))
        }

        mutating func value() throws -> String {
            if at < text.count, text[at] == "\"" { return try quoted() }
            let start = at
            while at < text.count, text[at] != ",", !text[at].properties.isWhitespace { at += 1 }
            guard at > start else { throw failure("expected a value") }
            return String(String.UnicodeScalarView(text[start..<at]))
        }

        mutating func quoted() throws -> String {
            at += 1
            var out = String.UnicodeScalarView()
            while at < text.count {
                let c = text[at]
                at += 1
                switch c {
                case "\"": return String(out)
                case "\\":
                    guard at < text.count else { break }
                    let e = text[at]
                    at += 1
                    switch e {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    default: out.append(e)
                    }
                default: out.append(c)
                }
            }
            throw failure("unterminated quoted string")
        }

        mutating func skipSpaces() {
            while at < text.count, text[at].properties.isWhitespace { at += 1 }
        }

        func failure(_ what: String) -> LazyPullError {
            LazyPullError(.invalidArgument, "invalid filter \"\(String(String.UnicodeScalarView(text)))\" at \(at): \(what)")
        }
    }
}
