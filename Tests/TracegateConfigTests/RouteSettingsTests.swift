import XCTest
@testable import TracegateConfig

final class RouteSettingsTests: XCTestCase {
    func testRouteSectionsBecomeRoutesInFileOrder() throws {
        let settings = try Fixture.load(conf: """
            upstream = http://default:8000
            trace_tags = environment=prod

            [route chat]
            path_prefix = /v1/chat
            upstream = http://chat:9000/api
            mlflow_experiment_name = chat-traces
            trace_tags = team=chat

            [route admin]
            path_prefix = /admin
            host = Internal.Example.com
            upstream = https://admin:8443
            mlflow_experiment_id = 42
            """)
        XCTAssertEqual(settings.upstream.host, "default", "keys before the first section stay global")
        XCTAssertEqual(settings.traceTags, NamedPairs([("environment", "prod")]))
        XCTAssertEqual(settings.routes.map(\.name), ["chat", "admin"])
        let chat = settings.routes[0]
        XCTAssertEqual(chat.pathPrefix, "/v1/chat")
        XCTAssertNil(chat.host)
        XCTAssertEqual(chat.upstream.description, "http://chat:9000/api")
        XCTAssertEqual(chat.mlflowExperimentName, "chat-traces")
        XCTAssertEqual(chat.traceTags, NamedPairs([("team", "chat")]))
        let admin = settings.routes[1]
        XCTAssertEqual(admin.host, "internal.example.com")
        XCTAssertEqual(admin.mlflowExperimentID, "42")
        XCTAssertTrue(admin.upstream.usesTLS)
    }

    func testBadRoutesNameTheFileLineKeyAndWhatIsAccepted() {
        let cases: [(String, String)] = [
            ("[route a]\npath_prefix = v1\nupstream = http://a:1", "proxy.conf:3: invalid value 'v1' for path_prefix in [route a]: expected a path starting with /"),
            ("[route a]\npath_prefix = /a", "proxy.conf:2: route 'a' needs upstream"),
            ("[route a]\nupstream = http://a:1", "proxy.conf:2: route 'a' needs path_prefix"),
            ("[route a]\npath_prefix = /a\nupstream = http://a:1\nlisten = 0.0.0.0:1", "proxy.conf:5: unknown key 'listen' in [route a] (accepted there: path_prefix, host, upstream"),
            ("[route a]\npath_prefix = /a\nupstream = http://a:1\n[route a]", "proxy.conf:5: duplicate route 'a' (already defined on line 2)"),
            ("[routes a]", "proxy.conf:2: expected a section header '[route NAME]'"),
            ("[route a]\npath_prefix = /a\nupstream = http://a:1\n[route b]\npath_prefix = /a\nupstream = http://b:1", "proxy.conf:5: route 'b' has the same path_prefix and host as route 'a'"),
            ("[route a]\npath_prefix = /a\nupstream = ftp://a", "proxy.conf:4: invalid value 'ftp://a' for upstream in [route a]"),
        ]
        for (text, expected) in cases {
            guard let error = Fixture.error(Fixture.upstream, conf: "\n" + text) else { continue }
            XCTAssertTrue("\(error)".hasPrefix(expected), "\(error)\nshould start with\n\(expected)")
        }
    }
}
