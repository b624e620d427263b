import XCTest

@testable import TracegateServer

final class InPlaceBuildScheduleTests: XCTestCase {
    typealias Schedule = InPlaceBuildSchedule<Int>

    func testTheLastExchangeOfAnIdleLoopIsBuiltInPlaceAfterItsIO() {
        var schedule = Schedule()
        schedule.exchangeStarted()
        XCTAssertEqual(schedule.exchangeFinished(forwarded: true, capture: 1, fitsInPlace: true), .waitAndScheduleRun)
        let run = schedule.run()
        XCTAssertEqual(run.build, [1])
        XCTAssertEqual(run.handOff, [])
        XCTAssertEqual(schedule.run().build, [], "built once")
    }

    /// An open WebSocket tunnel leaves the loop idle between its messages: it must not send every
    /// other exchange's trace of that loop to the builder thread for as long as it stays open.
    func testAnOpenTunnelDoesNotCountAsAnExchangeInFlight() {
        var schedule = Schedule()
        schedule.exchangeStarted()
        schedule.exchangeBecameTunnel()
        XCTAssertEqual(schedule.inFlight, 0)
        schedule.exchangeStarted()
        XCTAssertEqual(schedule.exchangeFinished(forwarded: true, capture: 1, fitsInPlace: true), .waitAndScheduleRun)
        XCTAssertEqual(schedule.run().build, [1], "built in place while the tunnel is open")
        XCTAssertNil(schedule.exchangeFinished(forwarded: false, capture: nil, fitsInPlace: true), "the tunnel's end")
        XCTAssertEqual(schedule.inFlight, 0)
    }

    func testCapturesEndingWhileOthersAreInFlightGoToTheBuilderThread() {
        var schedule = Schedule()
        schedule.exchangeStarted()
        schedule.exchangeStarted()
        XCTAssertEqual(schedule.exchangeFinished(forwarded: true, capture: 1, fitsInPlace: true), .handOff)
        XCTAssertEqual(schedule.exchangeFinished(forwarded: true, capture: 2, fitsInPlace: true), .waitAndScheduleRun)
        XCTAssertEqual(schedule.run().build, [2])
    }

    func testAnExchangeStartingBeforeTheRunSendsWhatWaitsToTheBuilderThread() {
        var schedule = Schedule()
        schedule.exchangeStarted()
        XCTAssertEqual(schedule.exchangeFinished(forwarded: true, capture: 1, fitsInPlace: true), .waitAndScheduleRun)
        schedule.exchangeStarted()  // read in the same wake-up: forwarding it comes first
        let run = schedule.run()
        XCTAssertEqual(run.build, [])
        XCTAssertEqual(run.handOff, [1])
    }

    func testOneRunIsScheduledForEverythingThatWaits() {
        var schedule = Schedule()
        schedule.exchangeStarted()
        XCTAssertEqual(schedule.exchangeFinished(forwarded: true, capture: 1, fitsInPlace: true), .waitAndScheduleRun)
        schedule.exchangeStarted()
        XCTAssertEqual(schedule.exchangeFinished(forwarded: true, capture: 2, fitsInPlace: true), .wait)
        XCTAssertEqual(schedule.run().build, [1, 2])
        schedule.exchangeStarted()
        XCTAssertEqual(schedule.exchangeFinished(forwarded: true, capture: 3, fitsInPlace: true), .waitAndScheduleRun, "a new run after the last")
    }

    func testLargeCapturesAndExchangesWithoutCaptureAreNotHeld() {
        var schedule = Schedule()
        schedule.exchangeStarted()
        XCTAssertEqual(schedule.exchangeFinished(forwarded: true, capture: 1, fitsInPlace: false), .handOff)
        schedule.exchangeStarted()
        XCTAssertNil(schedule.exchangeFinished(forwarded: true, capture: nil, fitsInPlace: true))
        XCTAssertEqual(schedule.inFlight, 0)
    }

    func testRefusalsWithoutAStartDoNotUnbalanceTheCount() {
        var schedule = Schedule()
        XCTAssertNil(schedule.exchangeFinished(forwarded: false, capture: nil, fitsInPlace: true))
        XCTAssertEqual(schedule.inFlight, 0)
        schedule.exchangeStarted()
        XCTAssertNil(schedule.exchangeFinished(forwarded: false, capture: nil, fitsInPlace: true))
        XCTAssertEqual(schedule.inFlight, 1, "a refusal ends no started exchange")
        XCTAssertNil(schedule.exchangeFinished(forwarded: true, capture: nil, fitsInPlace: true))
        XCTAssertNil(schedule.exchangeFinished(forwarded: true, capture: nil, fitsInPlace: true))
        XCTAssertEqual(schedule.inFlight, 0, "never below zero")
    }
}
