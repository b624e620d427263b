import XCTest
@testable import TracegateConfig

final class PrivacySettingsTests: XCTestCase {
    func testDefaultsAreSafe() throws {
        let settings = try Fixture.load(Fixture.upstream)
        XCTAssertEqual(settings.capture, .full)
        XCTAssertEqual(settings.redactBuiltin, [.apiKeys])
        for header in ["Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key"] {
            XCTAssertTrue(settings.redactHeaders.contains(header), header)
        }
        XCTAssertEqual(settings.sampleRatio, 1)
        XCTAssertEqual(settings.spoolDir, "tracegate-spool")
        XCTAssertEqual(settings.spoolMaxBytes, 1 << 30)
    }

    func testPrivacyAndSamplingSettingsParse() throws {
        let settings = try Fixture.load(
            Fixture.upstream, conf: """
                capture = metadata
                redact_json_fields = user.email, messages.*.name ,**.password
                redact_builtin = api-keys,emails
                redact_regex = (?i)ssn=[0-9-]+
                sample_ratio = 0.25
                spool_dir =
                """)
        XCTAssertEqual(settings.capture, .metadata)
        XCTAssertEqual(settings.redactJSONFields, ["user.email", "messages.*.name", "**.password"])
        XCTAssertEqual(settings.redactBuiltin, [.apiKeys, .emails])
        XCTAssertEqual(settings.redactRegex, "(?i)ssn=[0-9-]+")
        XCTAssertEqual(settings.sampleRatio, 0.25)
        XCTAssertNil(settings.spoolDir)
        XCTAssertEqual(try Fixture.load(Fixture.upstream + ["--redact-builtin", "none"]).redactBuiltin, [])
    }

    func testBadPrivacyValuesNameTheLineKeyAndWhatIsAccepted() {
        let cases: [(String, String)] = [
            ("redact_regex = (unclosed", "regular expression"),
            ("redact_json_fields = a..b", "empty segment"),
            ("redact_json_fields = a.**", "cannot end with **"),
            ("redact_builtin = passwords", "api-keys, emails"),
            ("sample_ratio = 1.5", "a number from 0 to 1"),
            ("capture = bodies", "full, metadata, off"),
            ("spool_max_bytes = 10", "between 1MiB and 1TiB"),
        ]
        for (line, accepted) in cases {
            guard let error = Fixture.error(Fixture.upstream, conf: "\n" + line) else { continue }
            let message = "\(error)"
            XCTAssertTrue(message.contains("proxy.conf:2"), message)
            XCTAssertTrue(message.contains(String(line.prefix(while: { $0 != " " }))), message)
            XCTAssertTrue(message.contains(accepted), "\(message) should say \(accepted)")
        }
    }
}
