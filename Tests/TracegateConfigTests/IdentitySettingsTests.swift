import TracegateTrace
import XCTest

@testable import TracegateConfig

/// `user_from`, `session_from`, `identity_hash` and its key file.
final class IdentitySettingsTests: XCTestCase {
    private func load(_ files: [String: String], _ arguments: [String] = []) throws(ConfigError) -> TracegateSettings {
        try SettingsLoader.load(arguments: ["--config", "proxy.conf"] + arguments, environment: [:]) { path in
            guard let text = files[path] else { throw Fixture.ReadFailure() }
            return text
        }
    }

    func testByDefaultTheHeadersGiveUserAndSession() throws {
        let settings = try Fixture.load(Fixture.upstream + ["--user-header", "X-Who"])
        XCTAssertEqual(settings.userSources, [.header("X-Who")])
        XCTAssertEqual(settings.sessionSources, [.header("X-Session-ID")])
        XCTAssertEqual(settings.identityHash, .off)
        XCTAssertNil(settings.identityHashKey)
    }

    func testSourcesAreReadInOrder() throws {
        let settings = try Fixture.load(conf: """
            upstream = http://a:1
            user_from = jwt:sub, header:X-User-ID, body:user
            session_from = body:metadata.session_id, chain:previous_response_id
            """)
        XCTAssertEqual(settings.userSources, [.jwt(claim: "sub", cookie: nil), .header("X-User-ID"), .body(["user"])])
        XCTAssertEqual(settings.sessionSources, [.body(["metadata", "session_id"]), .responseChain])
    }

    func testBadSourcesNameTheLineKeyAndWhatIsWrong() {
        let cases: [(String, String)] = [
            ("user_from = jwt:sub, email", "proxy.conf:3: invalid value 'jwt:sub, email' for user_from: 'email' has no KIND: prefix; expected a comma-separated list of sources"),
            ("user_from = chain:previous_response_id", "proxy.conf:3: invalid value 'chain:previous_response_id' for user_from: 'chain:previous_response_id' gives sessions only"),
            ("session_from = form:sid", "proxy.conf:3: invalid value 'form:sid' for session_from: 'form' is not a kind of source"),
        ]
        for (line, expected) in cases {
            guard let error = Fixture.error(Fixture.upstream, conf: "\n\n" + line) else { continue }
            XCTAssertTrue("\(error)".hasPrefix(expected), "\(error)\nshould start with\n\(expected)")
        }
    }

    func testTheKeyIsReadWithoutItsTrailingNewline() throws {
        let settings = try load([
            "proxy.conf": "upstream = http://a:1\nidentity_hash = hmac-sha256\nidentity_hash_key_file = id.key\n",
            "id.key": "0123456789abcdef0123456789abcdef\n",
        ])
        XCTAssertEqual(settings.identityHash, .hmacSHA256)
        XCTAssertEqual(settings.identityHashKey, Array("0123456789abcdef0123456789abcdef".utf8))
    }

    func testAMissingShortOrUnreadableKeyStopsStartUp() {
        let conf = "upstream = http://a:1\nidentity_hash = hmac-sha256\n"
        let cases: [([String: String], String)] = [
            (["proxy.conf": conf], "missing setting identity_hash_key_file: identity_hash = hmac-sha256 needs a key file"),
            (["proxy.conf": conf + "identity_hash_key_file = id.key\n"], "proxy.conf:3: cannot read identity_hash_key_file 'id.key': permission denied"),
            (["proxy.conf": conf + "identity_hash_key_file = id.key\n", "id.key": "short\n"],
             "proxy.conf:3: identity_hash_key_file 'id.key' holds 5 bytes: expected a key of at least 16 characters"),
            (["proxy.conf": "upstream = http://a:1\nidentity_hash_key_file = id.key\n", "id.key": "0123456789abcdef"],
             "proxy.conf:2: identity_hash_key_file is set but identity_hash is off"),
        ]
        for (files, expected) in cases {
            do {
                let settings = try load(files)
                XCTFail("expected \(expected), got \(settings.identityHash)")
            } catch {
                XCTAssertTrue("\(error)".hasPrefix(expected), "\(error)\nshould start with\n\(expected)")
            }
        }
    }
}
