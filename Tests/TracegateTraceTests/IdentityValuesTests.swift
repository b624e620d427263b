import XCTest
@testable import TracegateTrace

final class IdentityValuesTests: XCTestCase {
    func testPlainValuesPassThrough() {
        let ids = IdentityValues.validate(user: "u1", session: "sess-42", requestID: "req-7f3c9a")
        XCTAssertEqual(ids, IdentityValues(user: "u1", session: "sess-42", clientRequestID: "req-7f3c9a"))
    }

    func testAbsentValuesStayAbsent() {
        XCTAssertEqual(IdentityValues.validate(user: nil, session: nil, requestID: nil), IdentityValues())
    }

    func testValuesAreTrimmedAndBlankMeansAbsent() {
        let ids = IdentityValues.validate(user: "  alice \t", session: " \u{3000}\u{A0}", requestID: "")
        XCTAssertEqual(ids.user, "alice")
        XCTAssertNil(ids.session)
        XCTAssertNil(ids.clientRequestID)
        XCTAssertEqual(ids.warnings, [])
    }

    /// Values whose ends are printable ASCII skip Foundation's trimming; any other end still gets it.
    func testTrimmingIsSkippedOnlyWhereItCannotChangeTheValue() {
        for value in ["alice", "a b", "\u{3000}bob", "bob\u{A0}", "\u{2028}x", "x\u{85}", "é", "🚀x", " x", "x\n", "\u{7F}x"] {
            let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
            if !IdentityValues.mayNeedTrimming(value) {
                XCTAssertEqual(trimmed, value, "skipped trimming of \(value.debugDescription) would change it")
            }
        }
        XCTAssertFalse(IdentityValues.mayNeedTrimming("alice"))
        XCTAssertTrue(IdentityValues.mayNeedTrimming("\u{3000}bob"), "non-ASCII ends are trimmed by Foundation")
        XCTAssertEqual(IdentityValues.validate(user: "\u{3000}bob\u{A0}", session: nil, requestID: nil).user, "bob")
    }

    func testControlCharactersDropTheValueWithAWarning() {
        for bad in ["a\u{0}b", "a\tb", "a\u{1B}[31mred", "a\u{7F}", "a\u{85}b", "a\u{9F}", "line\nbreak", "x\r\ny"] {
            let ids = IdentityValues.validate(user: bad, session: bad, requestID: bad)
            XCTAssertEqual(ids.user, nil, bad.debugDescription)
            XCTAssertEqual(ids.session, nil, bad.debugDescription)
            XCTAssertEqual(ids.clientRequestID, nil, bad.debugDescription)
            XCTAssertEqual(ids.tags, [:])
            XCTAssertEqual(ids.warnings.map(\.field), [.user, .session, .clientRequestID])
            XCTAssertTrue(ids.warnings.allSatisfy { $0.problem == .controlCharacter })
        }
    }

    func testWarningsNeverContainTheValue() {
        let secret = "tok\u{0}en-secret"
        let ids = IdentityValues.validate(user: secret, session: String(repeating: "s", count: 300), requestID: nil)
        for warning in ids.warnings {
            XCTAssertFalse(warning.description.contains("secret"))
            XCTAssertFalse(warning.description.contains("sss"))
        }
        XCTAssertEqual(ids.warnings.map(\.description), [
            "user id contains a control character; not exported",
            "session id has 300 characters, MLflow allows 250; exported shortened; full value in tag tracegate.session_full",
        ])
    }

    func testUnicodeQuotesAndNonControlFormatCharactersAreKept() {
        let values = ["Zoë 👩‍👩‍👧 用户", #"o'brien "quoted" \back"#, "\u{202E}evil\u{202C}", "שלום"]
        for value in values {
            let ids = IdentityValues.validate(user: value, session: value, requestID: value)
            XCTAssertEqual(ids.user, value)
            XCTAssertEqual(ids.session, value)
            XCTAssertEqual(ids.clientRequestID, value)
            XCTAssertEqual(ids.warnings, [])
        }
    }

    func testSessionOfExactly250IsKeptAnd251IsShortenedWithTheFullValueInATag() {
        let exact = String(repeating: "s", count: 250)
        XCTAssertEqual(IdentityValues.validate(user: nil, session: exact, requestID: nil).session, exact)

        let long = String(repeating: "s", count: 250) + "t"
        let ids = IdentityValues.validate(user: nil, session: long, requestID: nil)
        let session = try! XCTUnwrap(ids.session)
        XCTAssertEqual(session.unicodeScalars.count, 250)
        XCTAssertTrue(session.hasPrefix(String(repeating: "s", count: 233) + "~"))
        XCTAssertEqual(ids.tags, [IdentityValues.sessionFullTag: long])
        XCTAssertEqual(ids.warnings, [IdentityWarning(
            field: .session, problem: .shortened(length: 251, limit: 250, fullValueTag: "tracegate.session_full"))])
    }

    func testRequestIDOfExactly50IsKeptAnd51IsShortened() {
        let exact = String(repeating: "r", count: 50)
        XCTAssertEqual(IdentityValues.validate(user: nil, session: nil, requestID: exact).clientRequestID, exact)

        let long = String(repeating: "r", count: 51)
        let ids = IdentityValues.validate(user: nil, session: nil, requestID: long)
        XCTAssertEqual(ids.clientRequestID?.unicodeScalars.count, 50)
        XCTAssertEqual(ids.tags, [IdentityValues.requestIDFullTag: long])
        XCTAssertEqual(ids.warnings.first?.field, .clientRequestID)
    }

    func testShortenedValuesAreStableAndDistinct() {
        let a = String(repeating: "x", count: 300) + "a"
        let b = String(repeating: "x", count: 300) + "b"
        let first = IdentityValues.validate(user: nil, session: a, requestID: nil).session
        XCTAssertEqual(first, IdentityValues.validate(user: nil, session: a, requestID: nil).session)
        XCTAssertNotEqual(first, IdentityValues.validate(user: nil, session: b, requestID: nil).session)
    }

    func testLengthsCountUnicodeScalarsLikeMLflow() {
        // 125 family emoji = 125 Characters but 625 scalars: far over 250 for MLflow.
        let family = String(repeating: "👩‍👩‍👧", count: 125)
        let ids = IdentityValues.validate(user: nil, session: family, requestID: nil)
        let session = try! XCTUnwrap(ids.session)
        XCTAssertLessThanOrEqual(session.unicodeScalars.count, 250)
        XCTAssertTrue(session.hasPrefix("👩‍👩‍👧"))
        // Never cut inside an emoji: the part before "~" is whole families.
        let prefix = session.split(separator: "~").first.map(String.init) ?? ""
        XCTAssertTrue(prefix.allSatisfy { $0 == "👩‍👩‍👧" })
        XCTAssertEqual(ids.tags[IdentityValues.sessionFullTag], family)
    }

    func testTenThousandCharacterIDsAreShortenedAndTheirTagsCappedAt8000() {
        let huge = String(repeating: "é", count: 10_000)
        let ids = IdentityValues.validate(user: huge, session: huge, requestID: huge)
        XCTAssertEqual(ids.user?.unicodeScalars.count, 250)
        XCTAssertEqual(ids.session?.unicodeScalars.count, 250)
        XCTAssertEqual(ids.clientRequestID?.unicodeScalars.count, 50)
        XCTAssertEqual(ids.tags[IdentityValues.userFullTag]?.unicodeScalars.count, 8000)
        XCTAssertEqual(ids.tags[IdentityValues.sessionFullTag]?.unicodeScalars.count, 8000)
        XCTAssertEqual(ids.tags[IdentityValues.requestIDFullTag]?.unicodeScalars.count, 8000)
        XCTAssertEqual(ids.warnings.count, 3)
    }
}
