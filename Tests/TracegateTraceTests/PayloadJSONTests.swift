import XCTest
@testable import TracegateTrace

final class PayloadJSONTests: XCTestCase {
    func testParsesAndReserializesKeepingMemberOrderAndNumberLexemes() {
        let text = #"{"z":1,"a":[true,false,null,-0.5e+10,12345678901234567890],"m":{"k":"v"},"s":"a\"b\\c\/d\n\u00e9\ud83d\ude00"}"#
        let value = PayloadJSON.parse(text)
        XCTAssertEqual(value?.serialized, #"{"z":1,"a":[true,false,null,-0.5e+10,12345678901234567890],"m":{"k":"v"},"s":"a\"b\\c/d\né😀"}"#)
        XCTAssertEqual(value?["s"]?.string, "a\"b\\c/d\né😀")
        XCTAssertEqual(value?["z"]?.int, 1)
    }

    /// Strings without escapes are taken straight from the input; those with escapes, cut off, or
    /// holding invalid UTF-8 are decoded the long way. Both give the same strings.
    func testStringsWithAndWithoutEscapesDecodeAlike() {
        XCTAssertEqual(PayloadJSON.parse(#"["", "plain", "a longer plain string of text", "x\"y", "\\", "end\n"]"#)?.serialized,
                       #"["","plain","a longer plain string of text","x\"y","\\","end\n"]"#)
        XCTAssertEqual(PayloadJSON.parse([0x22, 0x61, 0xFF, 0x62, 0x22])?.string, "a\u{FFFD}b", "invalid UTF-8 is repaired")
        XCTAssertEqual(PayloadJSON.parse(Array(#"{"k":"unfinished"#.utf8), allowTruncation: true)?.value["k"]?.string, "unfinished")
        XCTAssertEqual(PayloadJSON.parse(Array(#"{"k":"unfin\"ished"#.utf8), allowTruncation: true)?.value["k"]?.string, "unfin\"ished")
        XCTAssertNil(PayloadJSON.parse(#""unterminated"#))
    }

    func testRejectsInvalidJSON() {
        for text in ["", "{", "{\"a\":}", "[1,]", "{\"a\" 1}", "tru", "01x", "\"\\x\"", "{} {}", "-", "1.", "1e"] {
            XCTAssertNil(PayloadJSON.parse(text), text)
        }
    }

    func testLoneSurrogatesBecomeReplacementCharacters() {
        XCTAssertEqual(PayloadJSON.parse(#""\ud800x\udc00""#)?.string, "\u{FFFD}x\u{FFFD}")
    }

    func testDeepNestingIsRejectedWithoutExhaustingTheStack() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        XCTAssertNil(PayloadJSON.parse(deep))
        XCTAssertNil(PayloadJSON.parse(Array(deep.utf8), allowTruncation: true))
    }

    func testTruncatedTextIsClosedWhereItWasCut() throws {
        let cases: [(String, String)] = [
            (#"{"a":"hel"#, #"{"a":"hel"}"#),
            (#"{"a":[1,2,{"b":"x"#, #"{"a":[1,2,{"b":"x"}]}"#),
            (#"{"a":12"#, #"{}"#), // the number may have lost digits
            (#"{"a":1,"b"#, #"{"a":1}"#),
            (#"{"a":1,"b":"#, #"{"a":1}"#),
            (#"{"a":tr"#, #"{}"#),
            (#"{"a":"x\"#, #"{"a":"x"}"#),
            (#"{"a":"x\u00"#, #"{"a":"x"}"#),
            (#"{"a":"\ud83d"#, #"{"a":""}"#),
        ]
        for (cut, closed) in cases {
            let result = try XCTUnwrap(PayloadJSON.parse(Array(cut.utf8), allowTruncation: true), cut)
            XCTAssertTrue(result.truncated, cut)
            XCTAssertEqual(result.value.serialized, closed, cut)
        }
        let complete = try XCTUnwrap(PayloadJSON.parse(Array(#"{"a":1}"#.utf8), allowTruncation: true))
        XCTAssertFalse(complete.truncated)
        XCTAssertNil(PayloadJSON.parse(Array(#"{"a":1]"#.utf8), allowTruncation: true), "invalid, not merely cut")
    }

    func testControlCharactersAreEscapedWhenSerializing() {
        XCTAssertEqual(PayloadJSON.string("a\u{1}\t\r\u{7F}").serialized, #""a\u0001\t\r\u007f""#)
    }

    /// Found by ParserPropertyTests: "05.5" was read and written back as "05.5", which no JSON reader accepts.
    func testNumbersWithLeadingZerosAreRejected() {
        for text in ["01", "-01", "00", "05.5", "{\"a\":007}", "[1,02]"] {
            XCTAssertNil(PayloadJSON.parse(text), text)
            XCTAssertNil(PayloadJSON.parse(Array(text.utf8), allowTruncation: true), text)
        }
        for text in ["0", "-0", "0.5", "-0.0e1", "10", "100"] {
            XCTAssertEqual(PayloadJSON.parse(text)?.serialized, text)
        }
    }
}
