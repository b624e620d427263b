import XCTest

@testable import TracegateTrace

/// MLflow's limits: lengths in Unicode scalars, cuts between whole characters, tag and metadata
/// keys. Lengths and control characters are read from UTF-8 bytes: they must agree with the
/// Unicode scalars they stand for, whatever the text.
final class MLflowLimitsTests: XCTestCase {
    func testTruncationCutsBetweenWholeCharacters() {
        XCTAssertEqual(MLflowLimits.truncated("abcdef", to: 3), "abc")
        XCTAssertEqual(MLflowLimits.truncated("ab", to: 3), "ab")
        XCTAssertEqual(MLflowLimits.truncated("e\u{301}e\u{301}", to: 3), "e\u{301}")
        XCTAssertEqual(MLflowLimits.truncated("🇫🇷🇫🇷", to: 3), "🇫🇷")
        XCTAssertEqual(MLflowLimits.truncated("abc", to: 0), "")
    }

    func testShortenedFitsExactlyAndLeavesShortValuesAlone() {
        XCTAssertEqual(MLflowLimits.shortened("short", to: 50), "short")
        let out = MLflowLimits.shortened(String(repeating: "a", count: 60), to: 50)
        XCTAssertEqual(out.count, 50)
        XCTAssertTrue(out.hasPrefix(String(repeating: "a", count: 33) + "~"))
        XCTAssertEqual(MLflowLimits.fnv1a64(""), 0xcbf2_9ce4_8422_2325)
        XCTAssertEqual(MLflowLimits.fnv1a64("a"), 0xaf63_dc4c_8601_ec8c)
    }

    func testTagKeysFollowMLflowsRule() {
        for good in ["proxy.backend", "a/b", "x-request-id", "team name", "ns:key", "用户", "_", ".hidden", String(repeating: "k", count: 250)] {
            XCTAssertTrue(MLflowLimits.isValidTagKey(good), good)
        }
        for bad in ["", "a b\n", "a\"b", "a'b", "a$b", "/abs", "a/", "a//b", "a/./b", "a/../b", "..x", ".", "a/..",
                    "e\u{301}", "tab\there", String(repeating: "k", count: 251)] {
            XCTAssertFalse(MLflowLimits.isValidTagKey(bad), bad.debugDescription)
        }
    }

    func testExportableTagsDropReservedAndInvalidKeysAndCapValues() {
        let tags = MLflowLimits.exportableTags([
            "mlflow.traceName": String(repeating: "n", count: 5000),
            "mlflow.trace.spansLocation": "ARTIFACT_REPO",
            "mlflow.user": "x",
            "bad key!": "x",
            "env": String(repeating: "v", count: 9000),
            "a": "1",
        ])
        XCTAssertEqual(tags.map(\.key), ["a", "env", "mlflow.traceName"])
        XCTAssertEqual(tags[1].value.count, 8000)
        XCTAssertEqual(tags[2].value.count, 4096)
        XCTAssertEqual(MLflowLimits.exportableTags([:], defaultTraceName: "GET /x").map(\.value), ["GET /x"])
        XCTAssertEqual(MLflowLimits.exportableTags(["mlflow.traceName": "set"], defaultTraceName: "GET /x").map(\.value), ["set"])
    }

    func testMetadataHelpers() {
        XCTAssertTrue(MLflowLimits.isValidMetadataKey("proxy.backend"))
        XCTAssertFalse(MLflowLimits.isValidMetadataKey(""))
        XCTAssertFalse(MLflowLimits.isValidMetadataKey("a\u{0}"))
        XCTAssertFalse(MLflowLimits.isValidMetadataKey(String(repeating: "k", count: 251)))
        XCTAssertEqual(MLflowLimits.metadataValue(String(repeating: "v", count: 8001)).count, 8000)
        XCTAssertEqual(MLflowLimits.tagValue(String(repeating: "v", count: 8001)).count, 8000)
    }

    private let samples: [String] = [
        "", "a", "user-42", "é", "e\u{301}", "🇫🇷", "日本語のテキスト", "tab\there", "new\nline", "del\u{7F}",
        "c1\u{80}", "c1 end\u{9F}", "\u{A0}no-break space", "\u{C2}", "Â\u{9F}", "ÂŸ", String(repeating: "ü", count: 300),
    ]

    func testLengthCountsUnicodeScalarsAsMLflowDoes() {
        for text in samples + samples.map({ $0 + "x" + $0 }) {
            XCTAssertEqual(MLflowLimits.length(text), text.unicodeScalars.count, text.debugDescription)
        }
        // A bridged or sliced string without contiguous UTF-8 takes the scalar view.
        XCTAssertEqual(MLflowLimits.length(String(Substring("héllo"))), 5)
    }

    func testControlCharactersAreC0DELAndC1Only() {
        for text in samples + samples.map({ "x" + $0 + "y" }) {
            XCTAssertEqual(
                MLflowLimits.containsControlCharacter(text), text.unicodeScalars.contains(where: MLflowLimits.isControlCharacter),
                text.debugDescription)
        }
        XCTAssertTrue(MLflowLimits.containsControlCharacter("a\u{85}b"), "NEL is C1")
        XCTAssertFalse(MLflowLimits.containsControlCharacter("a\u{A0}b\u{C0}"), "U+00A0 and U+00C0 are not")
    }

    func testShortenedLeavesWhatFitsAndCutsWhatDoesNot() {
        XCTAssertEqual(MLflowLimits.shortened("short", to: 50), "short")
        XCTAssertEqual(MLflowLimits.shortened(String(repeating: "é", count: 50), to: 50), String(repeating: "é", count: 50), "100 bytes, 50 scalars")
        let long = MLflowLimits.shortened(String(repeating: "é", count: 51), to: 50)
        XCTAssertEqual(long.unicodeScalars.count, 50)
        XCTAssertEqual(long.unicodeScalars.suffix(17).first, "~", "a prefix, ~ and 16 hex digits")
    }
}
