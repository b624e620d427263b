import NIOCore
import XCTest

@testable import TracegateProxy

/// A stand-in upstream connection: the machine only compares identities.
private final class Connection: CustomStringConvertible {
    let name: String
    init(_ name: String) { self.name = name }
    var description: String { name }
}

private typealias Machine = ExchangeStateMachine<Connection>

/// Drives `ExchangeStateMachine` through every event in every state, without channels or time.
final class ExchangeStateMachineTests: XCTestCase {
    private let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    private let a = Connection("A")
    private let b = Connection("B")
    private let streamed = Machine.Response(framing: .chunked, chunkedToClient: true, upstreamKeepsAlive: true, closeClientAfter: false)
    private let timeouts = Machine.Timeouts(
        connect: .seconds(5), firstByte: .seconds(60), idle: .seconds(30), clientBody: .seconds(20), tunnelIdle: .seconds(90))

    // MARK: Reaching each state through legal events

    private func machine(
        hasBody: Bool = false, buffers: Bool = false, resendable: Bool = true, limit: Int? = nil, webSocket: Bool = false
    ) -> Machine {
        Machine(hasBody: hasBody, buffersBody: buffers, resendable: resendable, maxBodyBytes: limit, now: t0, asksWebSocket: webSocket)
    }

    /// A WebSocket upgrade the upstream accepted on connection A.
    private var tunnel: Machine {
        var machine = machine(webSocket: true)
        _ = machine.upstreamConnected(a)
        _ = machine.switchedProtocols(now: t0)
        return machine
    }

    /// Every state an exchange can be in, by name, each reached from a new exchange by legal events.
    private var everyState: [(String, Machine)] {
        var awaitingReceiving = machine(hasBody: true)
        _ = awaitingReceiving.upstreamConnected(a)
        var awaitingComplete = machine()
        _ = awaitingComplete.upstreamConnected(a)
        var respondingReceiving = awaitingReceiving
        _ = respondingReceiving.responseHeadReceived(streamed, now: t0)
        var respondingComplete = awaitingComplete
        _ = respondingComplete.responseHeadReceived(streamed, now: t0)
        var finished = machine()
        _ = finished.fail(.connectTimeout)
        return [
            ("bufferingRequest", machine(hasBody: true, buffers: true)),
            ("connecting(receiving)", machine(hasBody: true)),
            ("connecting(complete)", machine()),
            ("awaitingResponse(A, receiving)", awaitingReceiving),
            ("awaitingResponse(A, complete)", awaitingComplete),
            ("responding(A, receiving)", respondingReceiving),
            ("responding(A, complete)", respondingComplete),
            ("tunnelling(A)", tunnel),
            ("finished", finished),
        ]
    }

    /// Applies `event` in every state and compares "action → new state" with `expected`, by state name.
    private func check(
        _ event: (inout Machine) -> Machine.Action, _ expected: [String: String], file: StaticString = #filePath, line: UInt = #line
    ) {
        let states = everyState
        XCTAssertEqual(Set(expected.keys), Set(states.map(\.0)), "every state is covered", file: file, line: line)
        for (name, start) in states {
            var machine = start
            let action = event(&machine)
            XCTAssertEqual("\(describe(action)) → \(describe(machine.state))", expected[name], "in \(name)", file: file, line: line)
        }
    }

    /// Every state stays as it was, with no action, except those named.
    private func unchanged(except changed: [String: String] = [:]) -> [String: String] {
        Dictionary(uniqueKeysWithValues: everyState.map { name, _ in (name, changed[name] ?? "none → \(name)") })
    }

    // MARK: Starting

    func testANewExchangeTakesAConnectionAtOnceUnlessItsBodyIsBufferedFirst() {
        XCTAssertEqual(describe(machine().startAction), "acquireConnection")
        XCTAssertEqual(describe(machine().state), "connecting(complete)")
        XCTAssertEqual(describe(machine(hasBody: true).startAction), "acquireConnection")
        XCTAssertEqual(describe(machine(hasBody: true).state), "connecting(receiving)")
        XCTAssertEqual(describe(machine(hasBody: true, buffers: true).startAction), "none")
        XCTAssertEqual(describe(machine(hasBody: true, buffers: true).state), "bufferingRequest")
        XCTAssertEqual(describe(machine(hasBody: false, buffers: true).state), "connecting(complete)", "nothing to buffer")
        var gone = machine(hasBody: true)
        _ = gone.clientClosed()  // the client left while its body was being invited (100 Continue)
        XCTAssertEqual(describe(gone.startAction), "none", "no connection for an exchange that is over")
    }

    // MARK: Request events

    func testABodyPartIsForwardedOnlyWhileTheRequestIsStillArriving() {
        check({ $0.requestBodyReceived(bytes: 10, now: self.t0) }, [
            "bufferingRequest": "forwardBody → bufferingRequest",
            "connecting(receiving)": "forwardBody → connecting(receiving)",
            "connecting(complete)": "none → connecting(complete)",
            "awaitingResponse(A, receiving)": "forwardBody → awaitingResponse(A, receiving)",
            "awaitingResponse(A, complete)": "none → awaitingResponse(A, complete)",
            "responding(A, receiving)": "forwardBody → responding(A, receiving)",
            "responding(A, complete)": "none → responding(A, complete)",
            "tunnelling(A)": "none → tunnelling(A)",
            "finished": "none → finished",
        ])
    }

    func testABodyBeyondTheLimitIsAnswered413OrCutOnceAResponseStarted() {
        var buffering = machine(hasBody: true, buffers: true, limit: 15)
        XCTAssertEqual(describe(buffering.requestBodyReceived(bytes: 10, now: t0)), "forwardBody")
        XCTAssertEqual(
            describe(buffering.requestBodyReceived(bytes: 10, now: t0)),
            "end(answer(bodyTooLarge(limit: 15), upstream: none, requestComplete: false))")
        XCTAssertTrue(buffering.isFinished)

        var sent = machine(hasBody: true, limit: 15)
        _ = sent.upstreamConnected(a)
        XCTAssertEqual(
            describe(sent.requestBodyReceived(bytes: 16, now: t0)),
            "end(answer(bodyTooLarge(limit: 15), upstream: close(A), requestComplete: false))")

        var responding = machine(hasBody: true, limit: 15)
        _ = responding.upstreamConnected(a)
        _ = responding.responseHeadReceived(streamed, now: t0)
        XCTAssertEqual(
            describe(responding.requestBodyReceived(bytes: 16, now: t0)),
            "end(abort(rejected(\"request body larger than the limit of 15 bytes\"), upstream: close(A)))")
        XCTAssertEqual(responding.requestBodyBytes, 16)
    }

    func testTheRequestsEndTakesAConnectionAfterBufferingAndFlushesOnceSent() {
        check({ $0.requestEnded(now: self.t0 + .seconds(1)) }, [
            "bufferingRequest": "acquireConnection → connecting(complete)",
            "connecting(receiving)": "none → connecting(complete)",
            "connecting(complete)": "none → connecting(complete)",
            "awaitingResponse(A, receiving)": "flushUpstream → awaitingResponse(A, complete)",
            "awaitingResponse(A, complete)": "none → awaitingResponse(A, complete)",
            "responding(A, receiving)": "flushUpstream → responding(A, complete)",
            "responding(A, complete)": "none → responding(A, complete)",
            "tunnelling(A)": "none → tunnelling(A)",
            "finished": "none → finished",
        ])
        var request = machine(hasBody: true)
        _ = request.requestEnded(now: t0 + .seconds(3))
        XCTAssertEqual(request.request, .complete(at: t0 + .seconds(3)), "the end's time starts the first-byte timeout")
    }

    // MARK: Upstream connection events

    func testAConnectionIsUsedOnlyByAnExchangeWaitingForOneAndReturnedOtherwise() {
        check({ $0.upstreamConnected(self.b) }, [
            "bufferingRequest": "releaseLateConnection(B) → bufferingRequest",
            "connecting(receiving)": "sendRequest(B) → awaitingResponse(B, receiving)",
            "connecting(complete)": "sendRequest(B) → awaitingResponse(B, complete)",
            "awaitingResponse(A, receiving)": "releaseLateConnection(B) → awaitingResponse(A, receiving)",
            "awaitingResponse(A, complete)": "releaseLateConnection(B) → awaitingResponse(A, complete)",
            "responding(A, receiving)": "releaseLateConnection(B) → responding(A, receiving)",
            "responding(A, complete)": "releaseLateConnection(B) → responding(A, complete)",
            "tunnelling(A)": "releaseLateConnection(B) → tunnelling(A)",
            "finished": "releaseLateConnection(B) → finished",
        ])
    }

    func testAFailedConnectIsAnsweredOnlyWhileConnecting() {
        check({ $0.connectFailed(.connectTimeout) }, [
            "bufferingRequest": "none → bufferingRequest",
            "connecting(receiving)": "end(answer(connectTimeout, upstream: none, requestComplete: false)) → finished",
            "connecting(complete)": "end(answer(connectTimeout, upstream: none, requestComplete: true)) → finished",
            "awaitingResponse(A, receiving)": "none → awaitingResponse(A, receiving)",
            "awaitingResponse(A, complete)": "none → awaitingResponse(A, complete)",
            "responding(A, receiving)": "none → responding(A, receiving)",
            "responding(A, complete)": "none → responding(A, complete)",
            "tunnelling(A)": "none → tunnelling(A)",
            "finished": "none → finished",
        ])
    }

    func testTheUpstreamClosingBeforeAnsweringIsA502AndMidResponseACut() {
        check({ $0.upstreamClosed(self.a, hadServed: false, error: nil) }, [
            "bufferingRequest": "none → bufferingRequest",
            "connecting(receiving)": "none → connecting(receiving)",
            "connecting(complete)": "none → connecting(complete)",
            "awaitingResponse(A, receiving)": "end(answer(upstreamClosedEarly, upstream: none, requestComplete: false)) → finished",
            "awaitingResponse(A, complete)": "end(answer(upstreamClosedEarly, upstream: none, requestComplete: true)) → finished",
            "responding(A, receiving)":
                "end(abort(upstreamFailed(\"upstream closed the connection mid-response\"), upstream: none)) → finished",
            "responding(A, complete)":
                "end(abort(upstreamFailed(\"upstream closed the connection mid-response\"), upstream: none)) → finished",
            "tunnelling(A)": "end(tunnelClosed(upstream: none, idle: false)) → finished",
            "finished": "none → finished",
        ])
        check({ $0.upstreamClosed(self.a, hadServed: false, error: "connection reset by peer") }, [
            "bufferingRequest": "none → bufferingRequest",
            "connecting(receiving)": "none → connecting(receiving)",
            "connecting(complete)": "none → connecting(complete)",
            "awaitingResponse(A, receiving)":
                "end(answer(upstreamUnreachable(\"connection reset by peer\"), upstream: none, requestComplete: false)) → finished",
            "awaitingResponse(A, complete)":
                "end(answer(upstreamUnreachable(\"connection reset by peer\"), upstream: none, requestComplete: true)) → finished",
            "responding(A, receiving)":
                "end(abort(upstreamFailed(\"upstream closed the connection mid-response\"), upstream: none)) → finished",
            "responding(A, complete)":
                "end(abort(upstreamFailed(\"upstream closed the connection mid-response\"), upstream: none)) → finished",
            "tunnelling(A)": "end(tunnelClosed(upstream: none, idle: false)) → finished",
            "finished": "none → finished",
        ])
    }

    func testTheCloseOfAConnectionTheExchangeDoesNotUseChangesNothing() {
        check({ $0.upstreamClosed(self.b, hadServed: true, error: nil) }, unchanged())
    }

    func testAPooledConnectionFoundClosedIsRetriedOnceOnAFreshOneForAnIdempotentBodilessRequest() {
        var get = machine()
        _ = get.upstreamConnected(a)
        XCTAssertEqual(describe(get.upstreamClosed(a, hadServed: true, error: nil)), "openFreshConnection")
        XCTAssertEqual(describe(get.state), "connecting(complete)")
        XCTAssertEqual(describe(get.upstreamConnected(b)), "sendRequest(B)")
        XCTAssertEqual(
            describe(get.upstreamClosed(b, hadServed: true, error: nil)),
            "end(answer(upstreamClosedEarly, upstream: none, requestComplete: true))", "once only")

        var post = machine(resendable: false)
        _ = post.upstreamConnected(a)
        XCTAssertEqual(
            describe(post.upstreamClosed(a, hadServed: true, error: nil)),
            "end(answer(upstreamClosedEarly, upstream: none, requestComplete: true))", "not resendable (POST, or chunked): not retried")

        var put = machine(hasBody: true)
        _ = put.requestBodyReceived(bytes: 3, now: t0)
        _ = put.requestEnded(now: t0)
        _ = put.upstreamConnected(a)
        XCTAssertEqual(
            describe(put.upstreamClosed(a, hadServed: true, error: nil)),
            "end(answer(upstreamClosedEarly, upstream: none, requestComplete: true))", "its body is gone: not retried")

        var fresh = machine()
        _ = fresh.upstreamConnected(a)
        XCTAssertEqual(
            describe(fresh.upstreamClosed(a, hadServed: false, error: nil)),
            "end(answer(upstreamClosedEarly, upstream: none, requestComplete: true))", "a new connection is not retried")
    }

    // MARK: Response events

    func testAResponseHeadStartsTheResponseOnlyWhileOneIsAwaited() {
        check({ $0.responseHeadReceived(self.streamed, now: self.t0) }, [
            "bufferingRequest": "none → bufferingRequest",
            "connecting(receiving)": "none → connecting(receiving)",
            "connecting(complete)": "none → connecting(complete)",
            "awaitingResponse(A, receiving)": "none → responding(A, receiving)",
            "awaitingResponse(A, complete)": "none → responding(A, complete)",
            "responding(A, receiving)": "none → responding(A, receiving)",
            "responding(A, complete)": "none → responding(A, complete)",
            "tunnelling(A)": "none → tunnelling(A)",
            "finished": "none → finished",
        ])
    }

    func testAnEndedResponseKeepsItsConnectionOnlyWhenBothMessagesWereExactlyDelimited() {
        check({ $0.responseEnded(nothingFollowed: true) }, [
            "bufferingRequest": "none → bufferingRequest",
            "connecting(receiving)": "none → connecting(receiving)",
            "connecting(complete)": "none → connecting(complete)",
            "awaitingResponse(A, receiving)": "none → awaitingResponse(A, receiving)",
            "awaitingResponse(A, complete)": "none → awaitingResponse(A, complete)",
            "responding(A, receiving)": "end(completed(upstream: close(A), requestComplete: false)) → finished",
            "responding(A, complete)": "end(completed(upstream: keep(A), requestComplete: true)) → finished",
            "tunnelling(A)": "none → tunnelling(A)",
            "finished": "none → finished",
        ])
        let cases: [(Machine.Response, Bool, String)] = [
            (streamed, true, "keep(A)"),
            (streamed, false, "close(A)"),  // bytes after the response
            (.init(framing: .contentLength, chunkedToClient: false, upstreamKeepsAlive: false, closeClientAfter: false), true, "close(A)"),
            (.init(framing: .untilClose, chunkedToClient: true, upstreamKeepsAlive: true, closeClientAfter: false), true, "close(A)"),
            (.init(framing: .none, chunkedToClient: false, upstreamKeepsAlive: true, closeClientAfter: true), true, "keep(A)"),
        ]
        for (response, nothingFollowed, expected) in cases {
            var machine = machine()
            _ = machine.upstreamConnected(a)
            _ = machine.responseHeadReceived(response, now: t0)
            guard case .end(.completed(let upstream, _, let ended)) = machine.responseEnded(nothingFollowed: nothingFollowed) else {
                return XCTFail("not completed: \(response)")
            }
            XCTAssertEqual(describe(upstream), expected, "\(response), nothing followed: \(nothingFollowed)")
            XCTAssertEqual(ended, response, "the response's framing goes with its end")
        }
    }

    func testACloseDelimitedBodyEndsCleanlyWhenTheUpstreamCloses() {
        var machine = machine()
        _ = machine.upstreamConnected(a)
        _ = machine.responseHeadReceived(.init(framing: .untilClose, chunkedToClient: true, upstreamKeepsAlive: false, closeClientAfter: false), now: t0)
        XCTAssertEqual(describe(machine.upstreamClosed(a, hadServed: false, error: nil)), "end(completed(upstream: none, requestComplete: true))")
    }

    // MARK: Failures and the client

    func testAFailureIsAnsweredUntilAResponseStartsAndCutsItAfter() {
        check({ $0.fail(.firstByteTimeout) }, [
            "bufferingRequest": "end(answer(firstByteTimeout, upstream: none, requestComplete: false)) → finished",
            "connecting(receiving)": "end(answer(firstByteTimeout, upstream: none, requestComplete: false)) → finished",
            "connecting(complete)": "end(answer(firstByteTimeout, upstream: none, requestComplete: true)) → finished",
            "awaitingResponse(A, receiving)": "end(answer(firstByteTimeout, upstream: close(A), requestComplete: false)) → finished",
            "awaitingResponse(A, complete)": "end(answer(firstByteTimeout, upstream: close(A), requestComplete: true)) → finished",
            "responding(A, receiving)": "end(abort(upstreamTimeout(\"upstream sent no response within the first-byte timeout\"), upstream: close(A))) → finished",
            "responding(A, complete)": "end(abort(upstreamTimeout(\"upstream sent no response within the first-byte timeout\"), upstream: close(A))) → finished",
            "tunnelling(A)": "end(abort(upstreamTimeout(\"upstream sent no response within the first-byte timeout\"), upstream: close(A))) → finished",
            "finished": "none → finished",
        ])
    }

    func testAnAbortCutsTheExchangeInAnyStateButTheEnd() {
        check({ $0.abort(.clientAborted) }, [
            "bufferingRequest": "end(abort(clientAborted, upstream: none)) → finished",
            "connecting(receiving)": "end(abort(clientAborted, upstream: none)) → finished",
            "connecting(complete)": "end(abort(clientAborted, upstream: none)) → finished",
            "awaitingResponse(A, receiving)": "end(abort(clientAborted, upstream: close(A))) → finished",
            "awaitingResponse(A, complete)": "end(abort(clientAborted, upstream: close(A))) → finished",
            "responding(A, receiving)": "end(abort(clientAborted, upstream: close(A))) → finished",
            "responding(A, complete)": "end(abort(clientAborted, upstream: close(A))) → finished",
            "tunnelling(A)": "end(abort(clientAborted, upstream: close(A))) → finished",
            "finished": "none → finished",
        ])
    }

    func testTheClientGoingAwayClosesTheUpstreamConnection() {
        check({ $0.clientClosed() }, [
            "bufferingRequest": "end(clientGone(upstream: none)) → finished",
            "connecting(receiving)": "end(clientGone(upstream: none)) → finished",
            "connecting(complete)": "end(clientGone(upstream: none)) → finished",
            "awaitingResponse(A, receiving)": "end(clientGone(upstream: close(A))) → finished",
            "awaitingResponse(A, complete)": "end(clientGone(upstream: close(A))) → finished",
            "responding(A, receiving)": "end(clientGone(upstream: close(A))) → finished",
            "responding(A, complete)": "end(clientGone(upstream: close(A))) → finished",
            "tunnelling(A)": "end(clientGone(upstream: close(A))) → finished",
            "finished": "none → finished",
        ])
    }

    // MARK: Tunnels

    func testOnlyAWholeWebSocketUpgradeAwaitingItsAnswerCanSwitchProtocols() {
        let invalid = "invalidUpstreamResponse(\"101 Switching Protocols without an upgrade request\")"
        check({ $0.switchedProtocols(now: self.t0) }, [
            "bufferingRequest": "end(answer(\(invalid), upstream: none, requestComplete: false)) → finished",
            "connecting(receiving)": "end(answer(\(invalid), upstream: none, requestComplete: false)) → finished",
            "connecting(complete)": "end(answer(\(invalid), upstream: none, requestComplete: true)) → finished",
            "awaitingResponse(A, receiving)": "end(answer(\(invalid), upstream: close(A), requestComplete: false)) → finished",
            "awaitingResponse(A, complete)": "end(answer(\(invalid), upstream: close(A), requestComplete: true)) → finished",
            "responding(A, receiving)": "end(abort(upstreamFailed(\"invalid response from upstream: 101 Switching Protocols without an upgrade request\"), upstream: close(A))) → finished",
            "responding(A, complete)": "end(abort(upstreamFailed(\"invalid response from upstream: 101 Switching Protocols without an upgrade request\"), upstream: close(A))) → finished",
            "tunnelling(A)": "end(abort(upstreamFailed(\"invalid response from upstream: 101 Switching Protocols without an upgrade request\"), upstream: close(A))) → finished",
            "finished": "none → finished",
        ])
        var upgrade = machine(webSocket: true)
        _ = upgrade.upstreamConnected(a)
        XCTAssertEqual(describe(upgrade.switchedProtocols(now: t0 + .seconds(2))), "openTunnel(A)")
        XCTAssertEqual(describe(upgrade.state), "tunnelling(A)")
        XCTAssertEqual(upgrade.upstream === a, true)
        XCTAssertTrue(upgrade.requestComplete, "nothing of the handshake is left to read")
        XCTAssertEqual(upgrade.lastActivity, t0 + .seconds(2))
    }

    func testAHalfCloseIsPassedOnAndTheTunnelEndsWhenBothSidesHaveFinished() {
        check({ $0.clientFinishedSending() }, [
            "bufferingRequest": "none → bufferingRequest",
            "connecting(receiving)": "none → connecting(receiving)",
            "connecting(complete)": "none → connecting(complete)",
            "awaitingResponse(A, receiving)": "none → awaitingResponse(A, receiving)",
            "awaitingResponse(A, complete)": "none → awaitingResponse(A, complete)",
            "responding(A, receiving)": "none → responding(A, receiving)",
            "responding(A, complete)": "none → responding(A, complete)",
            "tunnelling(A)": "closeUpstreamOutput → tunnelling(A, client finished)",
            "finished": "none → finished",
        ])
        check({ $0.upstreamFinishedSending(self.a) }, [
            "bufferingRequest": "none → bufferingRequest",
            "connecting(receiving)": "none → connecting(receiving)",
            "connecting(complete)": "none → connecting(complete)",
            "awaitingResponse(A, receiving)": "none → awaitingResponse(A, receiving)",
            "awaitingResponse(A, complete)": "none → awaitingResponse(A, complete)",
            "responding(A, receiving)": "none → responding(A, receiving)",
            "responding(A, complete)": "none → responding(A, complete)",
            "tunnelling(A)": "closeClientOutput → tunnelling(A, upstream finished)",
            "finished": "none → finished",
        ])
        var clientFirst = tunnel
        _ = clientFirst.clientFinishedSending()
        XCTAssertEqual(describe(clientFirst.clientFinishedSending()), "none", "told once")
        XCTAssertEqual(describe(clientFirst.upstreamFinishedSending(b)), "none", "another connection's half-close")
        XCTAssertEqual(describe(clientFirst.upstreamFinishedSending(a)), "end(tunnelClosed(upstream: close(A), idle: false))")
        XCTAssertTrue(clientFirst.isFinished)

        var upstreamFirst = tunnel
        _ = upstreamFirst.upstreamFinishedSending(a)
        XCTAssertEqual(describe(upstreamFirst.clientFinishedSending()), "end(tunnelClosed(upstream: close(A), idle: false))")
    }

    func testAnIdleTunnelIsClosedAndActivityEitherWayKeepsItOpen() {
        check({ $0.closeTunnel(idle: true) }, unchanged(except: [
            "tunnelling(A)": "end(tunnelClosed(upstream: close(A), idle: true)) → finished",
        ]))
        var machine = tunnel
        machine.noteActivity(now: t0 + .seconds(50))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(100), clientReadsHeld: false, timeouts: timeouts), .wait(until: t0 + .seconds(140)))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(140), clientReadsHeld: true, timeouts: timeouts), .closeIdleTunnel)
    }

    func testATunnelWhoseUpstreamTakesNothingForTheSendTimeoutIsClosed() {
        check({ $0.closeTunnel(idle: false) }, unchanged(except: [
            "tunnelling(A)": "end(tunnelClosed(upstream: close(A), idle: false)) → finished",
        ]))
        var stalls = timeouts
        stalls.send = .seconds(10)
        var stalled = tunnel
        XCTAssertEqual(stalled.upstreamWritabilityChanged(writable: false, now: t0 + .seconds(1), bufferedBytes: 70_000, timeouts: stalls), t0 + .seconds(11))
        XCTAssertNil(stalled.upstreamWritabilityChanged(writable: false, now: t0 + .seconds(2), bufferedBytes: 70_000, timeouts: stalls), "the stall started before")
        stalled.noteActivity(now: t0 + .seconds(5))  // the upstream still sends: no idle tunnel, but still stalled
        stalled.upstreamStillStalled(bufferedBytes: 70_000, now: t0 + .seconds(6))
        XCTAssertEqual(stalled.timerFired(now: t0 + .seconds(6), clientReadsHeld: true, timeouts: stalls), .wait(until: t0 + .seconds(11)))
        XCTAssertEqual(stalled.timerFired(now: t0 + .seconds(11), clientReadsHeld: true, timeouts: stalls), .closeStalledTunnel)

        var slow = tunnel
        _ = slow.upstreamWritabilityChanged(writable: false, now: t0 + .seconds(1), bufferedBytes: 70_000, timeouts: stalls)
        slow.upstreamStillStalled(bufferedBytes: 60_000, now: t0 + .seconds(11))
        XCTAssertEqual(slow.timerFired(now: t0 + .seconds(11), clientReadsHeld: true, timeouts: stalls), .wait(until: t0 + .seconds(21)),
                       "it took some: a slow reader, whose stall starts over")

        var resumed = tunnel
        _ = resumed.upstreamWritabilityChanged(writable: false, now: t0 + .seconds(1), bufferedBytes: 70_000, timeouts: stalls)
        XCTAssertNil(resumed.upstreamWritabilityChanged(writable: true, now: t0 + .seconds(3), bufferedBytes: 0, timeouts: stalls))
        XCTAssertEqual(resumed.timerFired(now: t0 + .seconds(11), clientReadsHeld: false, timeouts: stalls), .wait(until: t0 + .seconds(90)))

        var notYetATunnel = machine(webSocket: true)
        _ = notYetATunnel.upstreamConnected(a)
        XCTAssertNil(notYetATunnel.upstreamWritabilityChanged(writable: false, now: t0, bufferedBytes: 70_000, timeouts: stalls),
                     "other states have their own timeouts")
    }

    func testADeclinedUpgradeIsAnOrdinaryResponse() {
        var declined = machine(webSocket: true)
        _ = declined.upstreamConnected(a)
        let refused = Machine.Response(framing: .contentLength, chunkedToClient: false, upstreamKeepsAlive: false, closeClientAfter: false)
        XCTAssertEqual(describe(declined.responseHeadReceived(refused, now: t0)), "none")
        XCTAssertEqual(describe(declined.responseEnded(nothingFollowed: true)), "end(completed(upstream: close(A), requestComplete: true))")
    }

    // MARK: Timers

    func testEachStateIsHeldToItsTimeout() {
        let early = t0 + .seconds(1)
        let late = t0 + .seconds(100)
        for (name, machine) in everyState {
            let due = machine.timerFired(now: late, clientReadsHeld: false, timeouts: timeouts)
            let notDue = machine.timerFired(now: early, clientReadsHeld: false, timeouts: timeouts)
            let held = machine.timerFired(now: late, clientReadsHeld: true, timeouts: timeouts)
            let expected: (Machine.TimerDecision, Machine.TimerDecision, Machine.TimerDecision)
            switch name {
            case "bufferingRequest":
                expected = (.clientBodyTimeout, .wait(until: t0 + .seconds(20)), .fail(.idleTimeout))
            case "connecting(receiving)":
                expected = (.clientBodyTimeout, .wait(until: t0 + .seconds(20)), .wait(until: late + .seconds(5)))
            case "connecting(complete)":
                expected = (.wait(until: late + .seconds(5)), .wait(until: early + .seconds(5)), .wait(until: late + .seconds(5)))
            case "awaitingResponse(A, receiving)":
                expected = (.clientBodyTimeout, .wait(until: t0 + .seconds(20)), .fail(.idleTimeout))
            case "awaitingResponse(A, complete)":
                expected = (.fail(.firstByteTimeout), .wait(until: t0 + .seconds(60)), .fail(.firstByteTimeout))
            case "responding(A, receiving)", "responding(A, complete)":
                expected = (.abortIdle, .wait(until: t0 + .seconds(30)), .abortIdle)
            case "tunnelling(A)":
                expected = (.closeIdleTunnel, .wait(until: t0 + .seconds(90)), .closeIdleTunnel)
            case "finished":
                expected = (.wait(until: .distantFuture), .wait(until: .distantFuture), .wait(until: .distantFuture))
            default:
                return XCTFail("no expectation for \(name)")
            }
            XCTAssertEqual(due, expected.0, "\(name), due")
            XCTAssertEqual(notDue, expected.1, "\(name), not due")
            XCTAssertEqual(held, expected.2, "\(name), client reads held")
        }
    }

    func testActivityAndResumedReadsPushTheDeadlinesBack() {
        var machine = machine(hasBody: true)
        _ = machine.upstreamConnected(a)
        _ = machine.requestBodyReceived(bytes: 1, now: t0 + .seconds(10))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(25), clientReadsHeld: false, timeouts: timeouts), .wait(until: t0 + .seconds(30)))
        machine.clientReadsResumed(now: t0 + .seconds(28))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(30), clientReadsHeld: false, timeouts: timeouts), .wait(until: t0 + .seconds(48)))
        _ = machine.requestEnded(now: t0 + .seconds(30))
        _ = machine.responseHeadReceived(streamed, now: t0 + .seconds(31))
        machine.noteActivity(now: t0 + .seconds(40))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(60), clientReadsHeld: false, timeouts: timeouts), .wait(until: t0 + .seconds(70)))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(70), clientReadsHeld: false, timeouts: timeouts), .abortIdle)
    }

    // MARK: Descriptions

    private func describe(_ action: Machine.Action) -> String {
        switch action {
        case .none: return "none"
        case .acquireConnection: return "acquireConnection"
        case .openFreshConnection: return "openFreshConnection"
        case .sendRequest(let connection): return "sendRequest(\(connection))"
        case .forwardBody: return "forwardBody"
        case .flushUpstream: return "flushUpstream"
        case .releaseLateConnection(let connection): return "releaseLateConnection(\(connection))"
        case .openTunnel(let connection): return "openTunnel(\(connection))"
        case .closeUpstreamOutput: return "closeUpstreamOutput"
        case .closeClientOutput: return "closeClientOutput"
        case .end(let ending): return "end(\(describe(ending)))"
        }
    }

    private func describe(_ ending: Machine.Ending) -> String {
        switch ending {
        case .completed(let upstream, let requestComplete, _):
            return "completed(upstream: \(describe(upstream)), requestComplete: \(requestComplete))"
        case .answer(let error, let upstream, let requestComplete):
            return "answer(\(error), upstream: \(describe(upstream)), requestComplete: \(requestComplete))"
        case .abort(let outcome, let upstream):
            return "abort(\(outcome), upstream: \(describe(upstream)))"
        case .clientGone(let upstream):
            return "clientGone(upstream: \(describe(upstream)))"
        case .tunnelClosed(let upstream, let idle):
            return "tunnelClosed(upstream: \(describe(upstream)), idle: \(idle))"
        }
    }

    private func describe(_ release: Machine.Release) -> String {
        switch release {
        case .keep(let connection): return "keep(\(connection))"
        case .close(let connection): return "close(\(connection))"
        case .none: return "none"
        }
    }

    private func describe(_ state: Machine.State) -> String {
        func request(_ request: Machine.Request) -> String {
            if case .complete = request { return "complete" }
            return "receiving"
        }
        switch state {
        case .bufferingRequest: return "bufferingRequest"
        case .connecting(let r): return "connecting(\(request(r)))"
        case .awaitingResponse(let connection, let r): return "awaitingResponse(\(connection), \(request(r)))"
        case .responding(let connection, let r, _): return "responding(\(connection), \(request(r)))"
        case .tunnelling(let connection, let sides):
            switch (sides.clientSends, sides.upstreamSends) {
            case (true, true): return "tunnelling(\(connection))"
            case (false, true): return "tunnelling(\(connection), client finished)"
            case (true, false): return "tunnelling(\(connection), upstream finished)"
            case (false, false): return "tunnelling(\(connection), both finished)"
            }
        case .finished: return "finished"
        }
    }
}
