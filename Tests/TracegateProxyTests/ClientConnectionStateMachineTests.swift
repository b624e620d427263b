import NIOCore
import XCTest

@testable import TracegateProxy

/// Drives `ClientConnectionStateMachine` through every event in every state, without a channel.
final class ClientConnectionStateMachineTests: XCTestCase {
    private typealias Machine = ClientConnectionStateMachine
    private let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    private let timeouts = ClientConnectionStateMachine.Timeouts(header: .seconds(10), keepalive: .seconds(60), send: .seconds(30))

    /// Every state, by name, each reached from an accepted connection by legal events.
    private var everyState: [(String, Machine)] {
        let fresh = Machine(acceptedAt: t0)
        var readingHead = fresh
        _ = readingHead.headBytesWaiting(now: t0 + .seconds(1), timeouts: timeouts)
        var inExchange = fresh
        inExchange.requestHeadParsed()
        var keptAlive = inExchange
        _ = keptAlive.exchangeEnded(now: t0 + .seconds(2))
        var closingAfterExchange = inExchange
        closingAfterExchange.mustClose(now: t0 + .seconds(2))
        var closing = fresh
        closing.mustClose(now: t0 + .seconds(3))
        var closed = fresh
        closed.closed()
        return [
            ("idle(first)", fresh), ("idle(kept alive)", keptAlive), ("readingHead", readingHead), ("inExchange", inExchange),
            ("closingAfterExchange", closingAfterExchange), ("closing", closing), ("closed", closed),
        ]
    }

    private func check<Result: Equatable>(
        _ event: (inout Machine) -> Result, _ expected: [String: (Result, Machine.State)],
        file: StaticString = #filePath, line: UInt = #line
    ) {
        let states = everyState
        XCTAssertEqual(Set(expected.keys), Set(states.map(\.0)), "every state is covered", file: file, line: line)
        for (name, start) in states {
            var machine = start
            let result = event(&machine)
            guard let (wanted, state) = expected[name] else { continue }
            XCTAssertEqual(result, wanted, "result in \(name)", file: file, line: line)
            XCTAssertEqual(machine.state, state, "state after, in \(name)", file: file, line: line)
        }
    }

    func testOnlyAConnectionWithoutAnExchangeTakesARequestAndOnlyUntilItCloses() {
        let taking = everyState.filter { $0.1.takesRequests }.map(\.0)
        XCTAssertEqual(taking, ["idle(first)", "idle(kept alive)", "readingHead"])
        let closing = everyState.filter { $0.1.isClosing }.map(\.0)
        XCTAssertEqual(closing, ["closingAfterExchange", "closing", "closed"])
    }

    func testTheHeaderTimeoutStartsWithTheFirstByteOfAHeadOnAnIdleConnection() {
        let now = t0 + .seconds(5)
        check({ $0.headBytesWaiting(now: now, timeouts: self.timeouts) }, [
            "idle(first)": (now + .seconds(10), .readingHead(since: now)),
            "idle(kept alive)": (now + .seconds(10), .readingHead(since: now)),
            "readingHead": (nil, .readingHead(since: t0 + .seconds(1))),
            "inExchange": (nil, .inExchange),
            "closingAfterExchange": (nil, .closingAfterExchange),
            "closing": (nil, .closing(since: t0 + .seconds(3))),
            "closed": (nil, .closed),
        ])
    }

    func testAParsedHeadStartsAnExchangeOnlyWhereRequestsAreTaken() {
        check({ machine -> Bool in machine.requestHeadParsed(); return true }, [
            "idle(first)": (true, .inExchange),
            "idle(kept alive)": (true, .inExchange),
            "readingHead": (true, .inExchange),
            "inExchange": (true, .inExchange),
            "closingAfterExchange": (true, .closingAfterExchange),
            "closing": (true, .closing(since: t0 + .seconds(3))),
            "closed": (true, .closed),
        ])
    }

    func testAnEndedExchangeKeepsTheConnectionUnlessItIsClosing() {
        let now = t0 + .seconds(9)
        check({ $0.exchangeEnded(now: now) }, [
            "idle(first)": (false, .idle(since: t0, hadRequest: false)),
            "idle(kept alive)": (false, .idle(since: t0 + .seconds(2), hadRequest: true)),
            "readingHead": (false, .readingHead(since: t0 + .seconds(1))),
            "inExchange": (true, .idle(since: now, hadRequest: true)),
            "closingAfterExchange": (false, .closing(since: now)),
            "closing": (false, .closing(since: t0 + .seconds(3))),
            "closed": (false, .closed),
        ])
    }

    func testMustCloseWaitsForTheExchangeInFlight() {
        let now = t0 + .seconds(9)
        check({ machine -> Bool in machine.mustClose(now: now); return machine.isClosing }, [
            "idle(first)": (true, .closing(since: now)),
            "idle(kept alive)": (true, .closing(since: now)),
            "readingHead": (true, .closing(since: now)),
            "inExchange": (true, .closingAfterExchange),
            "closingAfterExchange": (true, .closingAfterExchange),
            "closing": (true, .closing(since: t0 + .seconds(3))),
            "closed": (true, .closed),
        ])
    }

    func testAGracefulShutdownClosesAnIdleConnectionAtOnceAndABusyOneAfterItsExchange() {
        let now = t0 + .seconds(9)
        check({ $0.stopTakingRequests(now: now) }, [
            "idle(first)": (true, .closing(since: now)),
            "idle(kept alive)": (true, .closing(since: now)),
            "readingHead": (true, .closing(since: now)),
            "inExchange": (false, .closingAfterExchange),
            "closingAfterExchange": (false, .closingAfterExchange),
            "closing": (true, .closing(since: t0 + .seconds(3))),
            "closed": (false, .closed),
        ])
    }

    func testEachStateIsHeldToItsTimeout() {
        let late = t0 + .seconds(200)
        check({ $0.timerFired(now: late, bufferedBytes: 0, timeouts: self.timeouts).decision }, [
            "idle(first)": (.closeIdle(firstRequest: true), .idle(since: t0, hadRequest: false)),
            "idle(kept alive)": (.closeIdle(firstRequest: false), .idle(since: t0 + .seconds(2), hadRequest: true)),
            "readingHead": (.headerTimedOut, .readingHead(since: t0 + .seconds(1))),
            "inExchange": (.exchange, .inExchange),
            "closingAfterExchange": (.exchange, .closingAfterExchange),
            "closing": (.closeIdle(firstRequest: false), .closing(since: t0 + .seconds(3))),
            "closed": (.nothing, .closed),
        ])
        let early = t0 + .seconds(4)
        check({ $0.timerFired(now: early, bufferedBytes: 0, timeouts: self.timeouts).decision }, [
            "idle(first)": (.wait(until: t0 + .seconds(10)), .idle(since: t0, hadRequest: false)),
            "idle(kept alive)": (.wait(until: t0 + .seconds(62)), .idle(since: t0 + .seconds(2), hadRequest: true)),
            "readingHead": (.wait(until: t0 + .seconds(11)), .readingHead(since: t0 + .seconds(1))),
            "inExchange": (.exchange, .inExchange),
            "closingAfterExchange": (.exchange, .closingAfterExchange),
            "closing": (.wait(until: t0 + .seconds(63)), .closing(since: t0 + .seconds(3))),
            "closed": (.nothing, .closed),
        ])
    }

    func testAClientThatTakesNothingForTheSendTimeoutIsGivenUpOnButASlowReaderIsNot() {
        var machine = Machine(acceptedAt: t0)
        machine.requestHeadParsed()
        XCTAssertEqual(machine.writabilityChanged(writable: false, now: t0, bufferedBytes: 9_000, timeouts: timeouts), t0 + .seconds(30))
        XCTAssertNil(
            machine.writabilityChanged(writable: false, now: t0 + .seconds(1), bufferedBytes: 9_000, timeouts: timeouts),
            "already stalled: the first stall's deadline holds")

        var early = machine.timerFired(now: t0 + .seconds(10), bufferedBytes: 9_000, timeouts: timeouts)
        XCTAssertEqual(early.decision, .exchange)
        XCTAssertEqual(early.sendDeadline, t0 + .seconds(30))

        // It took 1,000 bytes: a slow reader; the stall starts again from now.
        early = machine.timerFired(now: t0 + .seconds(20), bufferedBytes: 8_000, timeouts: timeouts)
        XCTAssertEqual(early.sendDeadline, t0 + .seconds(50))
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(49), bufferedBytes: 8_000, timeouts: timeouts).decision, .exchange)
        XCTAssertEqual(machine.timerFired(now: t0 + .seconds(50), bufferedBytes: 8_000, timeouts: timeouts).decision, .sendTimedOut)

        XCTAssertNil(machine.writabilityChanged(writable: true, now: t0 + .seconds(51), bufferedBytes: 0, timeouts: timeouts))
        XCTAssertNil(machine.sendStall, "writable again: no stall")
        let after = machine.timerFired(now: t0 + .seconds(500), bufferedBytes: 8_000, timeouts: timeouts)
        XCTAssertEqual(after.decision, .exchange)
        XCTAssertNil(after.sendDeadline)
    }

    func testAClosedConnectionStaysClosed() {
        var machine = Machine(acceptedAt: t0)
        machine.closed()
        machine.requestHeadParsed()
        machine.mustClose(now: t0)
        XCTAssertFalse(machine.stopTakingRequests(now: t0))
        XCTAssertFalse(machine.exchangeEnded(now: t0))
        XCTAssertEqual(machine.state, .closed)
    }
}
