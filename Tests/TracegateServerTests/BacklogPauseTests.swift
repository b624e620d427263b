import XCTest

@testable import TracegateServer

final class BacklogPauseTests: XCTestCase {
    func testPausesOnlyWhenEveryAnsweringServerIsAtTheLimit() {
        var pause = BacklogPause(limit: 100)
        XCTAssertNil(pause.observe(backlogs: [99, 500]), "one exporter below the limit keeps capture going")
        XCTAssertFalse(pause.isPaused)
        XCTAssertEqual(pause.observe(backlogs: [100, 500]), true)
        XCTAssertTrue(pause.isPaused)
        XCTAssertNil(pause.observe(backlogs: [100, 500]), "no change, nothing to do")
    }

    func testResumesBelowNinetyPercentNotAtTheLimit() {
        var pause = BacklogPause(limit: 100)
        XCTAssertEqual(pause.observe(backlogs: [100]), true)
        XCTAssertNil(pause.observe(backlogs: [99]), "just under the limit: still paused, no flapping")
        XCTAssertNil(pause.observe(backlogs: [90]))
        XCTAssertEqual(pause.observe(backlogs: [89]), false)
        XCTAssertFalse(pause.isPaused)
        XCTAssertNil(pause.observe(backlogs: [99]), "resumed: pauses again only at the limit")
        XCTAssertEqual(pause.observe(backlogs: [100]), true)
    }

    func testAServerThatDoesNotAnswerKeepsCaptureGoing() {
        var pause = BacklogPause(limit: 10)
        XCTAssertNil(pause.observe(backlogs: [nil, 50]), "an outage: its spool keeps the traces, so capture goes on")
        XCTAssertEqual(pause.observe(backlogs: [10, 50]), true)
        XCTAssertEqual(pause.observe(backlogs: [nil, 50]), false, "the server stopped answering: capture resumes")
    }

    func testNoExporterNeverPauses() {
        var pause = BacklogPause(limit: 0)
        XCTAssertNil(pause.observe(backlogs: []))
    }
}
