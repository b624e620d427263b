import XCTest

@testable import TracegateConfig

/// `feedback_path`, `feedback_cors_origins`, `feedback_rate_limit`.
final class FeedbackSettingsTests: XCTestCase {
    func testFeedbackIsOffByDefaultAndReadWhenSet() throws {
        XCTAssertNil(try Fixture.load(Fixture.upstream).feedbackPath)
        let settings = try Fixture.load(conf: """
            upstream = http://a:1
            feedback_path = /_tracegate/feedback
            feedback_cors_origins = https://chat.example.com, http://localhost:3000
            feedback_rate_limit = 5
            """)
        XCTAssertEqual(settings.feedbackPath, "/_tracegate/feedback")
        XCTAssertEqual(settings.feedbackCORSOrigins, ["https://chat.example.com", "http://localhost:3000"])
        XCTAssertEqual(settings.feedbackRateLimit, 5)
    }

    func testBadValuesAreRefusedWithTheLineAndWhy() {
        let cases: [(String, String)] = [
            ("feedback_path = feedback", "proxy.conf:3: invalid value 'feedback' for feedback_path: expected a path starting with /"),
            ("feedback_path = /fb?x=1", "proxy.conf:3: invalid value '/fb?x=1' for feedback_path"),
            ("feedback_cors_origins = chat.example.com", "proxy.conf:3: invalid value 'chat.example.com' for feedback_cors_origins: 'chat.example.com' is not an http:// or https:// origin"),
            ("feedback_cors_origins = https://chat.example.com/page", "proxy.conf:3: invalid value 'https://chat.example.com/page' for feedback_cors_origins: 'https://chat.example.com/page' must be scheme://host[:port]"),
            ("feedback_cors_origins = https://*.example.com", "must be scheme://host[:port], without a path or wildcard"),
            ("feedback_rate_limit = 0", "proxy.conf:3: invalid value '0' for feedback_rate_limit"),
            ("feedback_path = /v1/chat\n[route chat]\npath_prefix = /v1/chat\nupstream = http://c:1",
             "proxy.conf:3: feedback_path /v1/chat is also the path_prefix of route 'chat'"),
        ]
        for (line, expected) in cases {
            guard let error = Fixture.error(Fixture.upstream, conf: "\n\n" + line) else { continue }
            XCTAssertTrue("\(error)".contains(expected), "\(error)\nshould contain\n\(expected)")
        }
    }
}
