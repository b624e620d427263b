import XCTest

@testable import TracegateTrace

/// Conversations cut into turns: generic text and JSON protocols, OpenAI Realtime and Responses
/// events, compressed messages, closes, and frames that break the protocol.
final class WebSocketTurnTrackerTests: XCTestCase {
    private let key: [UInt8] = [0x11, 0x22, 0x33, 0x44]

    private func client(_ text: String) -> [UInt8] { WebSocketFrameParserTests.frame(0x1, Array(text.utf8), mask: key) }
    private func server(_ text: String) -> [UInt8] { WebSocketFrameParserTests.frame(0x1, Array(text.utf8)) }
    private func text(_ message: WebSocketTurnMessage) -> String { String(decoding: message.data, as: UTF8.self) }

    func testATurnWhoseServerFellQuietIsTracedWithoutWaitingForTheNextClientMessage() throws {
        let quiet = WebSocketTurnTracker.quietNanos
        var tracker = WebSocketTurnTracker(compressed: false)
        _ = tracker.feed(client("hi"), fromClient: true, atNanos: 10)
        XCTAssertNil(tracker.quietDeadlineNanos, "no answer yet: the client may wait as long as it likes")
        XCTAssertNil(tracker.endQuietTurn(atNanos: 10 + 2 * quiet))
        _ = tracker.feed(server("Hel"), fromClient: false, atNanos: 20)
        _ = tracker.feed(server("lo"), fromClient: false, atNanos: 30)
        XCTAssertEqual(tracker.quietDeadlineNanos, 30 + quiet)
        XCTAssertNil(tracker.endQuietTurn(atNanos: 30 + quiet - 1))
        let first = try XCTUnwrap(tracker.endQuietTurn(atNanos: 30 + quiet))
        XCTAssertEqual(first.number, 1)
        XCTAssertEqual(first.ending, .quiet)
        XCTAssertEqual(first.serverMessages.map(text), ["Hel", "lo"])
        XCTAssertEqual(first.endNanos, 30, "the turn lasts until its last message, not until the quiet was noticed")
        XCTAssertNil(first.failure)
        XCTAssertNil(tracker.quietDeadlineNanos)

        // The server was not done after all: the rest of the answer is one more turn, which a
        // quiet server does not end (a server pushing forever makes one turn, not one per burst).
        let late = 40 + quiet
        _ = tracker.feed(server(" again"), fromClient: false, atNanos: late)
        _ = tracker.feed(server("!"), fromClient: false, atNanos: late + 5)
        XCTAssertNil(tracker.quietDeadlineNanos)
        XCTAssertNil(tracker.endQuietTurn(atNanos: late + 5 + 3 * quiet))
        _ = tracker.feed(server("?"), fromClient: false, atNanos: late + 10 + 3 * quiet)
        let rest = try XCTUnwrap(tracker.finish(atNanos: late + 11 + 3 * quiet))
        XCTAssertEqual(rest.number, 2)
        XCTAssertEqual(rest.continues, 1)
        XCTAssertEqual(rest.clientMessageCount, 0)
        XCTAssertEqual(rest.serverMessages.map(text), [" again", "!", "?"])
        XCTAssertEqual(rest.startNanos, late)

        // The client speaking again starts over: the server's later messages answer it.
        var next = WebSocketTurnTracker(compressed: false)
        _ = next.feed(client("a"), fromClient: true, atNanos: 1)
        _ = next.feed(server("b"), fromClient: false, atNanos: 2)
        _ = try XCTUnwrap(next.endQuietTurn(atNanos: 2 + quiet))
        _ = next.feed(client("c"), fromClient: true, atNanos: 3 + quiet)
        _ = next.feed(server("d"), fromClient: false, atNanos: 4 + quiet)
        let answered = try XCTUnwrap(next.finish(atNanos: 5 + quiet))
        XCTAssertEqual(answered.number, 2)
        XCTAssertNil(answered.continues)
        XCTAssertEqual(answered.clientMessages.map(text), ["c"])
    }

    func testAMessageHalfReadEitherWayIsNoQuiet() throws {
        let quiet = WebSocketTurnTracker.quietNanos
        var tracker = WebSocketTurnTracker(compressed: false)
        _ = tracker.feed(client("hi"), fromClient: true, atNanos: 1)
        _ = tracker.feed(server("yo"), fromClient: false, atNanos: 2)
        let big = server(String(repeating: "x", count: 300))
        _ = tracker.feed(big.prefix(100), fromClient: false, atNanos: 3)
        XCTAssertNil(tracker.quietDeadlineNanos, "a frame still arriving")
        XCTAssertNil(tracker.endQuietTurn(atNanos: 3 + 2 * quiet))
        _ = tracker.feed(big.dropFirst(100), fromClient: false, atNanos: 4 + 2 * quiet)
        XCTAssertEqual(tracker.quietDeadlineNanos, 4 + 3 * quiet)
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x1, Array("frag".utf8), fin: false), fromClient: false, atNanos: 5 + 2 * quiet)
        XCTAssertNil(tracker.quietDeadlineNanos, "a fragmented message still being joined")
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x0, Array("ment".utf8)), fromClient: false, atNanos: 6 + 2 * quiet)
        let turn = try XCTUnwrap(tracker.endQuietTurn(atNanos: 6 + 3 * quiet))
        XCTAssertEqual(turn.serverMessages.map(text).last, "fragment")
    }

    func testAClientAckInTheRestOfAnAnswerKeepsItsStart() throws {
        let quiet = WebSocketTurnTracker.quietNanos
        var tracker = WebSocketTurnTracker(compressed: false, target: "/socket.io/?EIO=4&transport=websocket")
        _ = tracker.feed(client(#"42["chat","hi"]"#), fromClient: true, atNanos: 1)
        _ = tracker.feed(server(#"42["token","a"]"#), fromClient: false, atNanos: 2)
        _ = try XCTUnwrap(tracker.endQuietTurn(atNanos: 2 + quiet))
        _ = tracker.feed(server(#"421["ask","sure?"]"#), fromClient: false, atNanos: 3 + quiet)
        _ = tracker.feed(client(#"431["yes"]"#), fromClient: true, atNanos: 4 + quiet)
        let rest = try XCTUnwrap(tracker.finish(atNanos: 5 + quiet))
        XCTAssertEqual(rest.continues, 1)
        XCTAssertEqual(rest.startNanos, 3 + quiet, "the rest of the answer starts with its first message")
        XCTAssertEqual(rest.clientMessages.map(text), [#"["yes"]"#])
    }

    func testRecognisedProtocolsWaitForTheirEndOfResponseEvenWhenQuiet() {
        var tracker = WebSocketTurnTracker(compressed: false)
        _ = tracker.feed(client(#"{"type":"response.create"}"#), fromClient: true, atNanos: 1)
        _ = tracker.feed(server(#"{"type":"response.created"}"#), fromClient: false, atNanos: 2)
        XCTAssertNil(tracker.quietDeadlineNanos)
        XCTAssertNil(tracker.endQuietTurn(atNanos: 2 + 10 * WebSocketTurnTracker.quietNanos))
    }

    func testEachClientMessageOpensATurnAndTheServerMessagesUntilTheNextAreItsOutput() {
        var tracker = WebSocketTurnTracker(compressed: false)
        XCTAssertEqual(tracker.feed(server("welcome"), fromClient: false, atNanos: 1), [], "a greeting answers nothing")
        XCTAssertNil(tracker.quietDeadlineNanos, "a greeting is no answer to wait on")
        XCTAssertEqual(tracker.feed(client("hi"), fromClient: true, atNanos: 10), [])
        XCTAssertEqual(tracker.feed(server("Hel") + server("lo"), fromClient: false, atNanos: 15), [])
        let first = tracker.feed(client("bye"), fromClient: true, atNanos: 30)
        XCTAssertEqual(first.count, 1)
        XCTAssertEqual(first[0].number, 1)
        XCTAssertEqual(first[0].clientMessages.map(text), ["hi"])
        XCTAssertEqual(first[0].serverMessages.map(text), ["Hel", "lo"])
        XCTAssertEqual(first[0].startNanos, 10)
        XCTAssertEqual(first[0].firstServerMessageNanos, 15)
        XCTAssertEqual(first[0].endNanos, 15)
        XCTAssertEqual(first[0].ending, .nextClientMessage)
        XCTAssertNil(first[0].failure)
        XCTAssertEqual(first[0].greeting.map(text), ["welcome"], "the first turn keeps what the server said before it")
        XCTAssertEqual(first[0].serverMessageCount, 2, "the greeting is no part of the answer")

        _ = tracker.feed(server("Goodbye"), fromClient: false, atNanos: 40)
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x8, [0x03, 0xE8], mask: key), fromClient: true, atNanos: 50)
        let last = tracker.finish(atNanos: 60)
        XCTAssertEqual(last?.number, 2)
        XCTAssertEqual(last?.serverMessages.map(text), ["Goodbye"])
        XCTAssertEqual(last?.ending, .closed(code: 1000, reason: ""))
        XCTAssertNil(last?.failure, "a normal close ends the last turn well")
        XCTAssertEqual(last?.endNanos, 60)
        XCTAssertEqual(tracker.clientFrames, 3)
        XCTAssertEqual(tracker.serverFrames, 4)
    }

    func testAGreetingIsKeptForTheFirstTurnWithinTheCapAndShedLikeATurn() {
        var alone = WebSocketTurnTracker(compressed: false, keptBytes: 8)
        _ = alone.feed(server("Hello!"), fromClient: false, atNanos: 1)
        XCTAssertGreaterThanOrEqual(alone.heldBytes, 6, "what is kept of a greeting is held")
        XCTAssertNil(alone.finish(atNanos: 2), "a greeting alone is no turn")
        XCTAssertEqual(alone.heldBytes, 0)

        var capped = WebSocketTurnTracker(compressed: false, keptBytes: 8)
        _ = capped.feed(server("Hello!") + server("PING") + server("Ask me"), fromClient: false, atNanos: 1)
        _ = capped.feed(client("hi"), fromClient: true, atNanos: 2)
        _ = capped.feed(server("answer"), fromClient: false, atNanos: 3)
        let first = capped.feed(client("again"), fromClient: true, atNanos: 4)[0]
        XCTAssertEqual(first.greeting.map(text), ["Hello!", "As"], "8 bytes of greeting, as a turn's server messages")
        XCTAssertEqual(first.greeting.map(\.length), [6, 6])
        XCTAssertEqual(first.greetingMessageCount, 2, "a heartbeat is no greeting")
        XCTAssertEqual(first.serverMessages.map(text), ["answer"], "the answer has room of its own")
        XCTAssertTrue(first.truncated)
        XCTAssertEqual(
            first.storage,
            first.greeting.reduce(0) { $0 + $1.data.capacity } + first.clientMessages[0].data.capacity + first.serverMessages[0].data.capacity)
        XCTAssertEqual(capped.finish(atNanos: 5)?.greeting, [], "only the first turn has one")

        var realtime = WebSocketTurnTracker(compressed: false)
        _ = realtime.feed(server("welcome") + server(#"{"type":"session.created"}"#), fromClient: false, atNanos: 1)
        _ = realtime.feed(client(#"{"type":"response.create"}"#), fromClient: true, atNanos: 2)
        XCTAssertEqual(realtime.finish(atNanos: 3)?.greeting, [], "a recognised protocol's turns have its session events as context")
    }

    func testAGreetingShedBeforeOrAfterTheFirstTurnOpensKeepsOnlyItsSizes() {
        var before = WebSocketTurnTracker(compressed: false, keptBytes: 8)
        _ = before.feed(server("Hello!"), fromClient: false, atNanos: 1)
        before.shed()
        XCTAssertEqual(before.heldBytes, 0)
        _ = before.feed(server("Ask me"), fromClient: false, atNanos: 2)
        _ = before.feed(client("hi"), fromClient: true, atNanos: 3)
        let shedFirst = before.finish(atNanos: 4)!
        XCTAssertEqual(shedFirst.greeting.map(\.length), [6, 6])
        XCTAssertEqual(shedFirst.greeting.map(text), ["", "As"], "the cap still counts what was shed")
        XCTAssertEqual(shedFirst.notes, [WebSocketTurnTracker.greetingShedNote])
        XCTAssertTrue(shedFirst.truncated)

        var after = WebSocketTurnTracker(compressed: false)
        _ = after.feed(server("Hello!"), fromClient: false, atNanos: 1)
        _ = after.feed(client("hi"), fromClient: true, atNanos: 2)
        after.shed()
        XCTAssertEqual(after.heldBytes, 0, "the open turn's greeting is let go too")
        let shedOpen = after.finish(atNanos: 3)!
        XCTAssertEqual(shedOpen.greeting.map(\.data), [[]])
        XCTAssertEqual(shedOpen.greeting.map(\.length), [6])
        XCTAssertEqual(shedOpen.storage, 0)
    }

    func testApplicationHeartbeatsNeitherOpenTurnsNorSplitAnswers() {
        var tracker = WebSocketTurnTracker(compressed: false)
        _ = tracker.feed(client("question"), fromClient: true, atNanos: 1)
        _ = tracker.feed(server("first half"), fromClient: false, atNanos: 2)
        for beat in [#"{"type":"ping"}"#, "PING", #"{"type": "heartbeat", "t": 5}"#] {
            XCTAssertEqual(tracker.feed(client(beat), fromClient: true, atNanos: 3), [], beat)
        }
        _ = tracker.feed(server(#"{"type":"pong"}"#) + server("second half"), fromClient: false, atNanos: 4)
        let turn = tracker.finish(atNanos: 5)
        XCTAssertEqual(turn?.number, 1)
        XCTAssertEqual(turn?.clientMessages.map(text), ["question"])
        XCTAssertEqual(turn?.serverMessages.map(text), ["first half", "second half"])
        var plain = WebSocketTurnTracker(compressed: false)
        _ = plain.feed(client("ping me when it is done"), fromClient: true, atNanos: 1)
        XCTAssertEqual(plain.finish(atNanos: 2)?.clientMessages.map(text), ["ping me when it is done"], "only a whole heartbeat is one")
    }

    func testAConnectionCutWithoutACloseHandshakeLeavesAFailedTurn() {
        var tracker = WebSocketTurnTracker(compressed: false)
        _ = tracker.feed(client("question"), fromClient: true, atNanos: 1)
        _ = tracker.feed(server("partial ans"), fromClient: false, atNanos: 2)
        let turn = tracker.finish(atNanos: 3, why: "the upstream connection failed")
        XCTAssertEqual(turn?.ending, .cut("the upstream connection failed"))
        XCTAssertEqual(turn?.failure?.message, "the upstream connection failed")
        XCTAssertEqual(turn?.serverMessages.map(text), ["partial ans"], "the partial output is kept")
    }

    func testACloseWithAnErrorCodeFailsTheTurn() {
        var tracker = WebSocketTurnTracker(compressed: false)
        _ = tracker.feed(client("q"), fromClient: true, atNanos: 1)
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x8, [0x03, 0xF3] + Array("oops".utf8)), fromClient: false, atNanos: 2)
        let turn = tracker.finish(atNanos: 3)
        XCTAssertEqual(turn?.ending, .closed(code: 1011, reason: "oops"))
        XCTAssertEqual(turn?.failure?.message, "the connection closed with code 1011: oops")
    }

    func testFragmentedMessagesAndControlFramesBetweenFragmentsJoin() {
        var tracker = WebSocketTurnTracker(compressed: false)
        let bytes =
            WebSocketFrameParserTests.frame(0x1, Array("frag".utf8), fin: false, mask: key)
            + WebSocketFrameParserTests.frame(0x9, [], mask: key)
            + WebSocketFrameParserTests.frame(0x0, Array("mented".utf8), mask: key)
        for byte in bytes { _ = tracker.feed([byte], fromClient: true, atNanos: 1) }
        XCTAssertEqual(tracker.finish(atNanos: 2)?.clientMessages.map(text), ["fragmented"])
    }

    func testEachDirectionOfATurnKeepsAtMostTheCap() {
        var tracker = WebSocketTurnTracker(compressed: false, keptBytes: 8)
        _ = tracker.feed(client("0123456789"), fromClient: true, atNanos: 1)
        _ = tracker.feed(server("abcdef") + server("ghijkl"), fromClient: false, atNanos: 2)
        let turn = tracker.finish(atNanos: 3)!
        XCTAssertEqual(turn.clientMessages.map(text), ["01234567"])
        XCTAssertEqual(turn.clientMessages[0].length, 10)
        XCTAssertEqual(turn.serverMessages.map(text), ["abcdef", "gh"])
        XCTAssertEqual(turn.serverMessageCount, 2)
        XCTAssertTrue(turn.truncated)
    }

    func testWhatIsHeldIsCountedAndShedWhenMemoryIsShortUntilTheNextTurn() {
        var tracker = WebSocketTurnTracker(compressed: false, keptBytes: 1024)
        XCTAssertEqual(tracker.heldBytes, 0)
        _ = tracker.feed(client(String(repeating: "q", count: 300)), fromClient: true, atNanos: 1)
        let partial = WebSocketFrameParserTests.frame(0x1, Array(repeating: 0x61, count: 500))
        _ = tracker.feed(partial.prefix(204), fromClient: false, atNanos: 2)  // header and 200 bytes of payload
        XCTAssertGreaterThanOrEqual(tracker.heldBytes, 500, "the turn's message and the frame being read")
        tracker.shed()
        XCTAssertEqual(tracker.heldBytes, 0)
        _ = tracker.feed(partial.dropFirst(204), fromClient: false, atNanos: 3)
        XCTAssertEqual(tracker.heldBytes, 0, "the rest of a frame cut short is not kept")
        _ = tracker.feed(server("later"), fromClient: false, atNanos: 3)
        let shed = tracker.feed(client("next"), fromClient: true, atNanos: 4)[0]
        XCTAssertEqual(shed.clientMessages.map(\.data), [[]])
        XCTAssertEqual(shed.serverMessages.map(\.length), [500, 5], "sizes and counts stay")
        XCTAssertEqual(shed.serverMessages.map(text), ["", "later"], "what comes after is kept again")
        XCTAssertTrue(shed.truncated)
        XCTAssertEqual(shed.notes, [WebSocketTurnTracker.shedNote])
        XCTAssertEqual(tracker.finish(atNanos: 6)?.clientMessages.map(text), ["next"], "the next turn keeps its texts")
    }

    func testABrokenFrameStopsOnlyTheTracingOfItsDirection() {
        var tracker = WebSocketTurnTracker(compressed: false)
        _ = tracker.feed(client("hi"), fromClient: true, atNanos: 1)
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x1, Array("unmasked".utf8)), fromClient: true, atNanos: 2)
        _ = tracker.feed(client("after"), fromClient: true, atNanos: 3)
        _ = tracker.feed(server("still read"), fromClient: false, atNanos: 4)
        let turn = tracker.finish(atNanos: 5)!
        XCTAssertEqual(turn.clientMessages.map(text), ["hi"])
        XCTAssertEqual(turn.serverMessages.map(text), ["still read"])
        XCTAssertEqual(turn.notes.count, 1)
        XCTAssertTrue(turn.notes[0].contains("wrongMasking"), turn.notes[0])
    }

    func testARealtimeResponseIsOneTurnFromTheClientsFirstEventToResponseDone() {
        var tracker = WebSocketTurnTracker(compressed: false)
        XCTAssertEqual(tracker.feed(server(#"{"type":"session.created","session":{"model":"gpt-realtime"}}"#), fromClient: false, atNanos: 1), [])
        XCTAssertEqual(tracker.protocolKind, .openAIEvents)
        for event in [
            #"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"Say hi"}]}}"#,
            #"{"type":"response.create"}"#,
        ] {
            XCTAssertEqual(tracker.feed(client(event), fromClient: true, atNanos: 10), [])
        }
        XCTAssertEqual(tracker.feed(server(#"{"type":"response.created"}"#), fromClient: false, atNanos: 11), [])
        XCTAssertEqual(tracker.feed(server(#"{"event_id":"e1","type":"response.audio.delta","delta":"AAAA"}"#), fromClient: false, atNanos: 12), [])
        XCTAssertEqual(tracker.feed(server(#"{"type":"response.text.delta","delta":"Hi"}"#), fromClient: false, atNanos: 13), [])
        let turns = tracker.feed(server(#"{"type":"response.done","response":{"status":"completed"}}"#), fromClient: false, atNanos: 20)
        XCTAssertEqual(turns.count, 1)
        let turn = turns[0]
        XCTAssertEqual(turn.ending, .endOfResponse("response.done"))
        XCTAssertEqual(turn.clientMessageCount, 2)
        XCTAssertEqual(turn.startNanos, 10, "the turn starts when the client speaks")
        XCTAssertEqual(turn.responseRequestedNanos, 10)
        XCTAssertEqual(turn.firstDeltaNanos, 12)
        XCTAssertFalse(turn.responsePending)
        let audio = turn.serverMessages.first { $0.eventType == "response.audio.delta" }!
        XCTAssertTrue(audio.omitted)
        XCTAssertEqual(audio.data, [], "audio is recorded by size only")
        XCTAssertNil(tracker.finish(atNanos: 30), "nothing is open after response.done")
    }

    func testARealtimeConnectionClosedMidResponseLeavesAFailedTurn() {
        var tracker = WebSocketTurnTracker(compressed: false)
        _ = tracker.feed(client(#"{"type":"response.create"}"#), fromClient: true, atNanos: 1)
        _ = tracker.feed(server(#"{"type":"response.text.delta","delta":"Hal"}"#), fromClient: false, atNanos: 2)
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x8, [0x03, 0xE8], mask: key), fromClient: true, atNanos: 3)
        let turn = tracker.finish(atNanos: 4)
        XCTAssertEqual(turn?.responsePending, true)
        XCTAssertEqual(turn?.failure?.message, "the connection closed before the response ended")
    }

    func testServerEventsBetweenResponsesAreNoTurnOfTheirOwn() {
        var tracker = WebSocketTurnTracker(compressed: false)
        _ = tracker.feed(server(#"{"type":"session.created"}"#), fromClient: false, atNanos: 1)
        _ = tracker.feed(server(#"{"type":"rate_limits.updated"}"#), fromClient: false, atNanos: 2)
        XCTAssertNil(tracker.finish(atNanos: 3))
    }

    func testCompressedMessagesAreInflatedWithTheirContextKept() throws {
        // "hello hello" compressed twice by one raw-deflate stream with sync flushes, the trailing
        // 00 00 ff ff removed (Python's zlib, wbits -15): the second message refers back into the first.
        let first: [UInt8] = [0xca, 0x48, 0xcd, 0xc9, 0xc9, 0x57, 0xc8, 0x00, 0x91, 0x00, 0x00]
        let second: [UInt8] = [0xca, 0x40, 0x30, 0x01, 0x00]
        var tracker = WebSocketTurnTracker(compressed: true)
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x1, first, rsv1: true, mask: key), fromClient: true, atNanos: 1)
        let turns = tracker.feed(WebSocketFrameParserTests.frame(0x1, second, rsv1: true, mask: key), fromClient: true, atNanos: 2)
        let last = try XCTUnwrap(tracker.finish(atNanos: 3))
        XCTAssertEqual(turns.first?.clientMessages.map(text), ["hello hello"])
        XCTAssertEqual(last.clientMessages.map(text), ["hello hello"])

        var uncompressing = WebSocketTurnTracker(compressed: false)
        _ = uncompressing.feed(WebSocketFrameParserTests.frame(0x1, first, rsv1: true, mask: key), fromClient: true, atNanos: 1)
        let unread = try XCTUnwrap(uncompressing.finish(atNanos: 2)).clientMessages[0]
        XCTAssertTrue(unread.compressedNotInflated, "without the extension negotiated, a compressed message is noted by size")
        XCTAssertEqual(unread.length, first.count)
    }

    func testACompressionBombStopsInflationForItsDirectionOnly() throws {
        // 200 KiB of zeros in 215 bytes (Python's zlib, level 9, wbits -15, sync flush without its
        // 00 00 ff ff): far beyond 64 bytes out per byte in, so it is not inflated on the forwarding thread.
        let zeros = [UInt8](repeating: 0, count: 210)
        let bomb: [UInt8] = [0xec, 0xc1, 0x01, 0x0d, 0x00, 0x00, 0x00, 0xc2, 0xa0, 0xf7, 0x4f, 0x6d, 0x0f, 0x07, 0x14] + zeros.prefix(198) + [0x4f, 0x06]
        XCTAssertEqual(bomb.count, 215)
        let hello: [UInt8] = [0xca, 0x48, 0xcd, 0xc9, 0xc9, 0x57, 0xc8, 0x00, 0x91, 0x00, 0x00]  // "hello hello", as above
        var tracker = WebSocketTurnTracker(compressed: true)
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x1, bomb, rsv1: true, mask: key), fromClient: true, atNanos: 1)
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x1, hello, rsv1: true), fromClient: false, atNanos: 2)
        let next = tracker.feed(WebSocketFrameParserTests.frame(0x1, hello, rsv1: true, mask: key), fromClient: true, atNanos: 3)
        let turn = try XCTUnwrap(next.first)
        XCTAssertTrue(turn.clientMessages[0].compressedNotInflated)
        XCTAssertTrue(turn.notes.contains { $0.contains("inflated to more than") }, "\(turn.notes)")
        XCTAssertEqual(turn.serverMessages.map(text), ["hello hello"], "the other direction still inflates")
        let after = try XCTUnwrap(tracker.finish(atNanos: 4))
        XCTAssertTrue(after.clientMessages[0].compressedNotInflated, "a failed inflater is not used again")
    }

    func testATurnKeepsAThousandMessagesEachWayAndStillSeesTheEndOfTheResponse() throws {
        var tracker = WebSocketTurnTracker(compressed: false, keptBytes: 64)
        _ = tracker.feed(client(#"{"type":"response.create"}"#), fromClient: true, atNanos: 1)
        var deltas: [UInt8] = []
        for _ in 0..<1500 { deltas += server(#"{"type":"response.output_text.delta","delta":"word "}"#) }
        XCTAssertEqual(tracker.feed(deltas, fromClient: false, atNanos: 2), [])
        let ended = tracker.feed(server(#"{"type":"response.completed","response":{"status":"completed"}}"#), fromClient: false, atNanos: 3)
        let turn = try XCTUnwrap(ended.first, "the end of the response is recognised past the capture cap")
        XCTAssertEqual(turn.ending, .endOfResponse("response.completed"))
        XCTAssertEqual(turn.serverMessageCount, 1501)
        XCTAssertEqual(turn.serverMessages.count, WebSocketTurnTracker.maxMessagesKept + 1, "the kept ones and the end of the response")
        XCTAssertTrue(turn.truncated)
        XCTAssertTrue(turn.notes.contains { $0.contains("counted, not kept") })
        XCTAssertLessThanOrEqual(turn.keptServerBytes, 64)
    }

    func testCompressionNegotiationIsReadFromTheExtensionsHeader() {
        XCTAssertTrue(WebSocketTurnTracker.negotiatesCompression("permessage-deflate; client_max_window_bits=15"))
        XCTAssertTrue(WebSocketTurnTracker.negotiatesCompression("x-other, Permessage-Deflate"))
        XCTAssertFalse(WebSocketTurnTracker.negotiatesCompression("x-webkit-deflate-frame"))
        XCTAssertFalse(WebSocketTurnTracker.negotiatesCompression(nil))
    }

    func testTheEventTypeIsFoundWithoutParsingTheMessage() {
        XCTAssertEqual(WebSocketTurnTracker.eventType(Array(#" {"event_id":"e\"1","nested":{"type":"no"},"list":[1,{"a":"]"}],"type":"response.done"}"#.utf8)), "response.done")
        XCTAssertNil(WebSocketTurnTracker.eventType(Array(#"{"kind":"x"}"#.utf8)))
        XCTAssertNil(WebSocketTurnTracker.eventType(Array("plain text".utf8)))
        XCTAssertNil(WebSocketTurnTracker.eventType(Array(#"["type","x"]"#.utf8)))
    }
}

/// Socket.IO (Chainlit, Rasa and Botpress web chats): only events are messages.
final class WebSocketSocketIOTests: XCTestCase {
    private let key: [UInt8] = [0x11, 0x22, 0x33, 0x44]
    private func client(_ text: String) -> [UInt8] { WebSocketFrameParserTests.frame(0x1, Array(text.utf8), mask: key) }
    private func server(_ text: String) -> [UInt8] { WebSocketFrameParserTests.frame(0x1, Array(text.utf8)) }
    private func text(_ message: WebSocketTurnMessage) -> String { String(decoding: message.data, as: UTF8.self) }

    func testPingsPongsAndConnectsAreNoTurnsAndEventPrefixesAreDropped() throws {
        var tracker = WebSocketTurnTracker(compressed: false, target: "/socket.io/?EIO=4&transport=websocket")
        XCTAssertTrue(tracker.speaksSocketIO)
        _ = tracker.feed(server(#"0{"sid":"abc","pingInterval":25000}"#), fromClient: false, atNanos: 1)
        _ = tracker.feed(client("40"), fromClient: true, atNanos: 2)
        _ = tracker.feed(server(#"40{"sid":"def"}"#), fromClient: false, atNanos: 3)
        _ = tracker.feed(client(#"42["client_message",{"content":"hi"}]"#), fromClient: true, atNanos: 4)
        _ = tracker.feed(server(#"42["stream_token",{"token":"He"}]"#), fromClient: false, atNanos: 5)
        _ = tracker.feed(server("2"), fromClient: false, atNanos: 6)
        XCTAssertEqual(tracker.feed(client("3"), fromClient: true, atNanos: 7), [], "a pong opens no turn")
        _ = tracker.feed(server(#"42/chat,7["stream_token",{"token":"llo"}]"#), fromClient: false, atNanos: 8)
        let turn = try XCTUnwrap(tracker.finish(atNanos: 9))
        XCTAssertEqual(turn.number, 1)
        XCTAssertEqual(turn.clientMessages.map(text), [#"["client_message",{"content":"hi"}]"#])
        XCTAssertEqual(turn.serverMessages.map(text), [#"["stream_token",{"token":"He"}]"#, #"["stream_token",{"token":"llo"}]"#])
    }

    func testAClientsAcksAndBinaryAttachmentsBelongToTheTurnOpen() throws {
        var tracker = WebSocketTurnTracker(compressed: false, target: "/socket.io/?EIO=4&transport=websocket")
        _ = tracker.feed(client(#"451-["upload",{"_placeholder":true,"num":0}]"#), fromClient: true, atNanos: 1)
        XCTAssertEqual(tracker.feed(WebSocketFrameParserTests.frame(0x2, [1, 2, 3], mask: key), fromClient: true, atNanos: 2), [],
                       "the attachment is the event's, not a turn of its own")
        _ = tracker.feed(server(#"42["uploaded",{"size":3}]"#), fromClient: false, atNanos: 3)
        let upload = try XCTUnwrap(tracker.feed(client(#"42["ask_me",{"question":"q?"}]"#), fromClient: true, atNanos: 4).first)
        XCTAssertEqual(upload.number, 1)
        XCTAssertEqual(upload.clientMessages.map(\.isText), [true, false])
        XCTAssertEqual(upload.clientMessageCount, 2)
        _ = tracker.feed(server(#"421["ask",{"question":"q?"}]"#), fromClient: false, atNanos: 5)
        XCTAssertEqual(tracker.feed(client(#"431["forty-two"]"#), fromClient: true, atNanos: 6), [], "an ack answers the server inside the turn")
        _ = tracker.feed(server(#"42["thanks",{"answer":"forty-two"}]"#), fromClient: false, atNanos: 7)
        let asked = try XCTUnwrap(tracker.finish(atNanos: 8))
        XCTAssertEqual(asked.number, 2)
        XCTAssertEqual(asked.clientMessages.map(text), [#"["ask_me",{"question":"q?"}]"#, #"["forty-two"]"#])
        XCTAssertEqual(asked.serverMessages.map(text), [#"["ask",{"question":"q?"}]"#, #"["thanks",{"answer":"forty-two"}]"#])
    }

    func testAnEngineIO3AttachmentLosesItsPacketTypeByte() throws {
        for (version, kept) in [("3", [1, 2, 3] as [UInt8]), ("4", [4, 1, 2, 3])] {
            var tracker = WebSocketTurnTracker(compressed: false, target: "/socket.io/?EIO=\(version)&transport=websocket")
            _ = tracker.feed(client(#"451-["upload",{"_placeholder":true,"num":0}]"#), fromClient: true, atNanos: 1)
            _ = tracker.feed(WebSocketFrameParserTests.frame(0x2, [4, 1, 2, 3], mask: key), fromClient: true, atNanos: 2)
            let turn = try XCTUnwrap(tracker.finish(atNanos: 3))
            XCTAssertEqual(turn.clientMessages.last?.data, kept, "EIO=\(version)")
            XCTAssertEqual(turn.clientMessages.last?.length, kept.count, "EIO=\(version)")
        }
    }

    func testAcksAndAttachmentsShareTheTurnsCaptureCap() throws {
        var tracker = WebSocketTurnTracker(compressed: false, target: "/socket.io/?EIO=4&transport=websocket", keptBytes: 40)
        _ = tracker.feed(client(#"451-["upload",{"_placeholder":true,"num":0}]"#), fromClient: true, atNanos: 1)
        _ = tracker.feed(WebSocketFrameParserTests.frame(0x2, [UInt8](repeating: 7, count: 30), mask: key), fromClient: true, atNanos: 2)
        _ = tracker.feed(client(#"43["an answer longer than the room left"]"#), fromClient: true, atNanos: 3)
        let turn = try XCTUnwrap(tracker.finish(atNanos: 4))
        XCTAssertEqual(turn.clientMessages.map(\.length), [40, 30, 39])
        XCTAssertEqual(turn.clientMessages.map(\.data.count), [36, 4, 0], "40 bytes kept in all (the first frame was read to 40 bytes)")
        XCTAssertTrue(turn.truncated)
    }

    func testAnAckWithNoTurnOpenOpensOne() throws {
        var tracker = WebSocketTurnTracker(compressed: false, target: "/socket.io/?EIO=4&transport=websocket")
        _ = tracker.feed(server(#"421["ask",{"question":"name?"}]"#), fromClient: false, atNanos: 1)
        _ = tracker.feed(client(#"431["Ada"]"#), fromClient: true, atNanos: 2)
        let turn = try XCTUnwrap(tracker.finish(atNanos: 3))
        XCTAssertEqual(turn.clientMessages.map(text), [#"["Ada"]"#])
    }

    func testOnlyAnEngineIOQueryMakesItSocketIO() {
        XCTAssertFalse(WebSocketTurnTracker(compressed: false, target: "/ws?x=EIO").speaksSocketIO)
        XCTAssertFalse(WebSocketTurnTracker(compressed: false, target: "/socket.io/").speaksSocketIO)
        XCTAssertTrue(WebSocketTurnTracker(compressed: false, target: "/ws/socket.io/?transport=websocket&EIO=3").speaksSocketIO)
        let packet = { (text: String) in WebSocketTurnTracker.socketIOPacket(Array(text.utf8)) }
        XCTAssertEqual(packet("4hello"), .event(Array("hello".utf8)[...]))
        XCTAssertEqual(packet(#"451-["upload",{"_placeholder":true}]"#), .event(Array(#"["upload",{"_placeholder":true}]"#.utf8)[...]))
        XCTAssertEqual(packet(#"43/chat,12["yes"]"#), .ack(Array(#"["yes"]"#.utf8)[...]))
        XCTAssertEqual(packet(#"461-7[{"_placeholder":true,"num":0}]"#), .ack(Array(#"[{"_placeholder":true,"num":0}]"#.utf8)[...]))
        XCTAssertEqual(packet("41"), .control)
        XCTAssertEqual(packet("44{\"message\":\"no\"}"), .control)
        XCTAssertEqual(packet("2probe"), .control)
    }
}
