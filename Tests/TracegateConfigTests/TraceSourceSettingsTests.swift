import XCTest
@testable import TracegateConfig

/// The settings behind MLflow's Source column and trace names.
final class TraceSourceSettingsTests: XCTestCase {
    func testDefaultsLeaveTheNameToTheRouteOrUpstreamAndNameChatByOperation() throws {
        let settings = try Fixture.load(Fixture.upstream)
        XCTAssertNil(settings.traceSourceName)
        XCTAssertEqual(settings.traceSourceType, "PROXY")
        XCTAssertEqual(settings.traceNames, .operation)
    }

    func testGlobalAndRouteSourceNamesAndTypeAreRead() throws {
        let settings = try Fixture.load(conf: """
            upstream = http://default:8000
            trace_source_name = support-bot
            trace_source_type = JOB
            trace_names = request

            [route chat]
            path_prefix = /v1/chat
            upstream = http://chat:9000
            trace_source_name = chat frontend
            """)
        XCTAssertEqual(settings.traceSourceName, "support-bot")
        XCTAssertEqual(settings.traceSourceType, "JOB")
        XCTAssertEqual(settings.traceNames, .request)
        XCTAssertEqual(settings.routes[0].traceSourceName, "chat frontend")
    }

    func testAnEmptySourceNameMeansTheDefault() throws {
        XCTAssertNil(try Fixture.load(conf: "upstream = http://a:1\ntrace_source_name =\n").traceSourceName)
    }

    func testBadValuesNameTheLineKeyAndWhatIsAccepted() {
        let long = String(repeating: "n", count: 251)
        let cases: [(String, String)] = [
            ("trace_source_name = team/bot", "proxy.conf:2: invalid value 'team/bot' for trace_source_name: expected a name of at most 250 characters without / or control characters"),
            ("trace_source_name = \(long)", "proxy.conf:2: invalid value '\(long)' for trace_source_name"),
            ("trace_source_type = not a word", "proxy.conf:2: invalid value 'not a word' for trace_source_type: expected a word of letters, digits and _"),
            ("trace_names = model", "proxy.conf:2: invalid value 'model' for trace_names"),
            ("[route a]\npath_prefix = /a\nupstream = http://a:1\ntrace_source_name = a/b",
             "proxy.conf:5: invalid value 'a/b' for trace_source_name in [route a]"),
        ]
        for (text, expected) in cases {
            guard let error = Fixture.error(Fixture.upstream, conf: "\n" + text) else { continue }
            XCTAssertTrue("\(error)".hasPrefix(expected), "\(error)\nshould start with\n\(expected)")
        }
    }
}
