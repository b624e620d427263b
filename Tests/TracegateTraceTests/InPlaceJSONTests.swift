import XCTest
@testable import TracegateTrace

final class InPlaceJSONTests: XCTestCase {
    /// What `InPlaceJSON` accepts and reads, against `PayloadJSON.parse` on the same bytes: generated
    /// documents (escaped keys, surrogate pairs, odd whitespace) and their mutations.
    func testAcceptsExactlyWhatTheParserAcceptsAndReadsTheSameValues() {
        Fuzz.check { rng in
            let text = Array(JSONGen.document(&rng).utf8)
            for bytes in [text, Mutate.apply(text, &rng), Mutate.apply(text, &rng)] {
                let parsed = PayloadJSON.parse(bytes)
                try bytes.withUnsafeBufferPointer { buffer in
                    let json = InPlaceJSON(buffer)
                    try require((json == nil) == (parsed == nil),
                                "in place \(json == nil ? "rejects" : "accepts"), the parser \(parsed == nil ? "rejects" : "accepts") \(Gen.show(bytes))")
                    guard let json, let parsed else { return }
                    let read = try Self.walk(json, at: json.root)
                    try require(read.serialized == parsed.serialized, "in place read \(read.serialized), the parser \(parsed.serialized)")
                }
            }
        }
    }

    func testMembersAreNamedAsDecodedAndTheirValuesFound() throws {
        try Self.withJSON(#" {"a\u0062c" : [1, {"x":"y"}] , "plain":"v\"w", "e":{}, "z":[ ]} "#) { json in
            let members = Array(json.members(at: json.root))
            XCTAssertEqual(members.count, 4)
            XCTAssertTrue(members[0].isNamed("abc", in: json))
            XCTAssertFalse(members[0].isNamed("a\\u0062c", in: json))
            XCTAssertEqual(json.elements(at: members[0].valueOffset).map { json.value(at: $0) }, [.number("1"), .object([("x", .string("y"))])])
            XCTAssertTrue(members[1].isNamed("plain", in: json))
            XCTAssertEqual(json.string(at: members[1].valueOffset), "v\"w")
            XCTAssertTrue(Array(json.members(at: members[2].valueOffset)).isEmpty)
            XCTAssertTrue(Array(json.elements(at: members[3].valueOffset)).isEmpty)
            XCTAssertNil(json.string(at: members[0].valueOffset))
            XCTAssertTrue(Array(json.members(at: members[0].valueOffset)).isEmpty, "an array has no members")
        }
    }

    func testIntegersReadAsThePayloadReadsThem() throws {
        for number in ["0", "7", "42", "-0", "-17", "0.5", "1.0", "1e2", "1E+2", "2.5e-3", "123456789012345678",
                       "1234567890123456789", "9223372036854775807", "92233720368547758070", "1e400", "9007199254740993"] {
            try Self.withJSON("[\(number) ,\n\"\(number)\"]") { json in
                let offsets = Array(json.elements(at: json.root))
                XCTAssertEqual(json.int(at: offsets[0]), PayloadJSON.parse(number)?.int, number)
                XCTAssertNil(json.int(at: offsets[1]), "a string is no integer")
            }
            try Self.withJSON(number) { json in
                XCTAssertEqual(json.int(at: json.root), PayloadJSON.parse(number)?.int, "\(number) alone")
            }
        }
    }

    func testRejectsWhatTheParserRejects() {
        let nested = String(repeating: "[", count: PayloadJSONParser.maxDepth + 1) + String(repeating: "]", count: PayloadJSONParser.maxDepth + 1)
        for text in [#"{"a":1"#, #"{"a":1}x"#, #"{"a":01}"#, #"{"a":"\x"}"#, #"{"a":"\u12"}"#, #"{a:1}"#, "", " ", nested, "[1,]"] {
            let accepted = Array(text.utf8).withUnsafeBufferPointer { InPlaceJSON($0) != nil }
            XCTAssertFalse(accepted, text)
            XCTAssertNil(PayloadJSON.parse(text), text)
        }
        let deepest = String(repeating: "[", count: PayloadJSONParser.maxDepth) + String(repeating: "]", count: PayloadJSONParser.maxDepth)
        XCTAssertTrue(Array(deepest.utf8).withUnsafeBufferPointer { InPlaceJSON($0) != nil })
        XCTAssertTrue(Array("\u{FEFF} {}".utf8).withUnsafeBufferPointer { InPlaceJSON($0) != nil }, "a byte order mark is tolerated")
    }

    /// The value at `offset`, rebuilt from the in-place walk: keys decoded, containers walked, leaves
    /// decoded. Along the way, each member's `isNamed` and each leaf's `int(at:)` must agree with the
    /// decoded key and value.
    private static func walk(_ json: InPlaceJSON, at offset: Int) throws -> PayloadJSON {
        if json.isObject(at: offset) {
            return .object(try json.members(at: offset).map { member in
                let key = json.string(at: member.keyOffset) ?? "?"
                for (name, named) in [("id", member.isNamed("id", in: json)), ("index", member.isNamed("index", in: json)),
                                      ("delta", member.isNamed("delta", in: json)), ("x", member.isNamed("x", in: json))] {
                    try require(named == (key.utf8.elementsEqual(name.utf8)), "key \(String(reflecting: key)) named \(name): \(named)")
                }
                return (key, try walk(json, at: member.valueOffset))
            })
        }
        if json.isArray(at: offset) { return .array(try json.elements(at: offset).map { try walk(json, at: $0) }) }
        let value = json.value(at: offset)
        try require(json.int(at: offset) == value.int, "int \(String(describing: json.int(at: offset))) for \(value.serialized)")
        return value
    }

    private static func withJSON(_ text: String, _ body: (InPlaceJSON) throws -> Void) throws {
        try Array(text.utf8).withUnsafeBufferPointer { buffer in
            try body(try XCTUnwrap(InPlaceJSON(buffer)))
        }
    }
}
