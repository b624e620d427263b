import XCTest
@testable import TracegateTrace

final class SSEParserTests: XCTestCase {
    private func parseAll(_ text: String, maxEventSize: Int = SSEParser.defaultMaxEventSize) -> (events: [SSEEvent], parser: SSEParser) {
        var parser = SSEParser(maxEventSize: maxEventSize)
        let events = parser.feed(Array(text.utf8))
        return (events, parser)
    }

    func testDataLinesAreJoinedWithNewlineAndEventsEndAtBlankLine() {
        let (events, _) = parseAll("event: update\ndata: first\ndata: second\n\ndata: third\n\n")
        XCTAssertEqual(events, [
            SSEEvent(event: "update", data: "first\nsecond"),
            SSEEvent(event: nil, data: "third"),
        ])
        XCTAssertEqual(events[1].type, "message")
    }

    func testCommentsAreIgnoredAndFieldsWithoutSpaceOrColonFollowTheSpec() {
        let (events, parser) = parseAll(": keep-alive\ndata:no-space\ndata:  two spaces\ndata\nretry: 3000\nunknown: x\n\n")
        XCTAssertEqual(events, [SSEEvent(data: "no-space\n two spaces\n")])
        XCTAssertEqual(parser.retry, 3000)
    }

    func testEventWithoutDataIsNotDispatched() {
        let (events, _) = parseAll("event: ping\n\n: comment only\n\ndata: x\n\n")
        XCTAssertEqual(events, [SSEEvent(data: "x")])
    }

    func testIDPersistsAcrossEventsAndIDWithNullIsIgnored() {
        let (events, parser) = parseAll("id: 7\ndata: a\n\ndata: b\n\nid: bad\u{0}id\ndata: c\n\nid\ndata: d\n\n")
        XCTAssertEqual(events.map(\.id), ["7", "7", "7", nil])
        XCTAssertEqual(parser.lastEventID, "")
    }

    func testCRLFAndCRLineEndsAreEquivalentToLF() {
        let expected = [SSEEvent(event: "e", data: "1\n2"), SSEEvent(data: "3")]
        for lineEnd in ["\r\n", "\r", "\n"] {
            let text = "event: e\(lineEnd)data: 1\(lineEnd)data: 2\(lineEnd)\(lineEnd)data: 3\(lineEnd)\(lineEnd)"
            XCTAssertEqual(parseAll(text).events, expected, "line end \(lineEnd.debugDescription)")
        }
    }

    func testCRLFSplitAcrossChunksIsOneLineEnd() {
        var parser = SSEParser()
        var events = parser.feed(Array("data: a\r".utf8))
        events += parser.feed(Array("\n\r".utf8))
        events += parser.feed(Array("\ndata: b\r\n\r\n".utf8))
        XCTAssertEqual(events, [SSEEvent(data: "a"), SSEEvent(data: "b")])
    }

    func testLeadingByteOrderMarkIsSkippedEvenWhenSplit() {
        let body: [UInt8] = [0xEF, 0xBB, 0xBF] + Array("data: x\n\n".utf8)
        for split in 0...body.count {
            var parser = SSEParser()
            let events = parser.feed(body[..<split]) + parser.feed(body[split...])
            XCTAssertEqual(events, [SSEEvent(data: "x")], "split at \(split)")
        }
        // Only at the very start: a later BOM is data.
        XCTAssertEqual(parseAll("data: x\n\n\u{FEFF}data: y\n\n").events.count, 1)
    }

    func testNonBOMFirstBytesAreNotLost() {
        var parser = SSEParser()
        let events = parser.feed([0xEF]) + parser.feed(Array("data: x\n\n".utf8))
        XCTAssertEqual(events.count, 0, "the stray byte makes the first line an unknown field")
        XCTAssertEqual(parser.feed(Array("data: y\n\n".utf8)), [SSEEvent(data: "y")])
    }

    func testSplittingAtEveryByteBoundaryGivesTheSameEvents() {
        let text = "event: greet\r\ndata: héllo 日本 🎉\r\n: c\r\nid: 1\r\n\r\ndata: second\rdata: line\r\r"
        let body = Array(text.utf8)
        let whole = parseAll(text).events
        XCTAssertEqual(whole, [SSEEvent(event: "greet", data: "héllo 日本 🎉", id: "1"), SSEEvent(data: "second\nline", id: "1")])
        for split in 0...body.count {
            var parser = SSEParser()
            let events = parser.feed(body[..<split]) + parser.feed(body[split...])
            XCTAssertEqual(events, whole, "split at \(split)")
        }
        var parser = SSEParser()
        var bytewise: [SSEEvent] = []
        for byte in body { bytewise += parser.feed(CollectionOfOne(byte)) }
        XCTAssertEqual(bytewise, whole)
    }

    func testInvalidUTF8DecodesToReplacementCharacters() {
        var parser = SSEParser()
        let events = parser.feed(Array("data: a".utf8) + [0xFF, 0xC3] + Array("\n\n".utf8))
        XCTAssertEqual(events, [SSEEvent(data: "a\u{FFFD}\u{FFFD}")])
    }

    func testOversizedEventIsDroppedAndCountedAndParsingResumesAfterIt() {
        let big = String(repeating: "x", count: 300)
        let (events, parser) = parseAll("data: small\n\ndata: \(big)\ndata: more\n\ndata: after\n\n", maxEventSize: 100)
        XCTAssertEqual(events, [SSEEvent(data: "small"), SSEEvent(data: "after")])
        XCTAssertEqual(parser.oversizedEvents, 1)
    }

    func testManyDataLinesAddingUpBeyondTheLimitDropTheEvent() {
        let lines = String(repeating: "data: 0123456789\n", count: 20)
        let (events, parser) = parseAll(lines + "\ndata: ok\n\n", maxEventSize: 100)
        XCTAssertEqual(events, [SSEEvent(data: "ok")])
        XCTAssertEqual(parser.oversizedEvents, 1)
    }

    func testEndlessLineDoesNotGrowMemoryAndIsCountedWhenItsEventEnds() {
        var parser = SSEParser(maxEventSize: 1024)
        XCTAssertEqual(parser.feed(Array("data: ".utf8)), [])
        let chunk = [UInt8](repeating: UInt8(ascii: "y"), count: 64 * 1024)
        for _ in 0..<64 { XCTAssertEqual(parser.feed(chunk), []) } // 4 MiB of one line
        XCTAssertEqual(parser.oversizedEvents, 0, "counted when the event ends")
        XCTAssertEqual(parser.feed(Array("\n\ndata: next\n\n".utf8)), [SSEEvent(data: "next")])
        XCTAssertEqual(parser.oversizedEvents, 1)
    }

    func testLongCommentLinesAreNotBufferedAndDoNotDropTheEvent() {
        let comment = ":" + String(repeating: "z", count: 5000) + "\n"
        let (events, parser) = parseAll("data: a\n" + comment + "data: b\n\n", maxEventSize: 100)
        XCTAssertEqual(events, [SSEEvent(data: "a\nb")])
        XCTAssertEqual(parser.oversizedEvents, 0)
    }

    func testFinishDiscardsAnUnterminatedEvent() {
        var parser = SSEParser()
        XCTAssertEqual(parser.feed(Array("data: done\n\ndata: partial".utf8)), [SSEEvent(data: "done")])
        XCTAssertTrue(parser.hasPendingEvent)
        XCTAssertTrue(parser.finish())
        XCTAssertFalse(parser.finish())
        XCTAssertEqual(parser.dispatchedEvents, 1)
    }

    func testEmptyInputAndBinaryGarbageYieldNothingAndDoNotCrash() {
        var parser = SSEParser(maxEventSize: 64)
        XCTAssertEqual(parser.feed([UInt8]()), [])
        var state: UInt64 = 42
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 33
        }
        for _ in 0..<200 {
            let chunk = (0..<Int(next() % 300)).map { _ in UInt8(truncatingIfNeeded: next()) }
            _ = parser.feed(chunk) // must never trap
        }
        _ = parser.finish()
    }

    /// Found by ParserPropertyTests: a `retry:` too large for an Int erased the last valid value.
    func testRetryTooLargeForAnIntIsIgnored() {
        let (_, parser) = parseAll("retry: 1500\nretry: 99999999999999999999999\ndata: x\n\n")
        XCTAssertEqual(parser.retry, 1500)
    }
}
