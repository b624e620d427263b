import XCTest
@testable import TracegateConfig

final class ConfigFileTests: XCTestCase {
    private let keys = SettingsTable.all.map(\.key)

    private func entries(_ text: String) throws(ConfigError) -> [String: String] {
        let parsed = try ConfigFile.parse(text, path: "proxy.conf", knownKeys: keys)
        return Dictionary(uniqueKeysWithValues: parsed.map { ($0.key, $0.value) })
    }

    private func error(_ text: String, line: UInt = #line) -> ConfigError? {
        do {
            let parsed = try ConfigFile.parse(text, path: "proxy.conf", knownKeys: keys)
            XCTFail("expected an error, got \(parsed)", line: line)
            return nil
        } catch {
            return error
        }
    }

    func testCommentsBlankLinesAndWhitespace() throws {
        let text = """
        # a comment
           # an indented comment

        listen=0.0.0.0:1
        \tadmin_listen   =   127.0.0.1:2   \t
        threads = 4 # trailing comment
        request_id_header = X-Id#not-a-comment
        upstream_ca_file = # only a comment: empty value
        """
        XCTAssertEqual(try entries(text), [
            "listen": "0.0.0.0:1", "admin_listen": "127.0.0.1:2", "threads": "4",
            "request_id_header": "X-Id#not-a-comment", "upstream_ca_file": "",
        ])
    }

    func testQuotedValues() throws {
        let text = #"""
        upstream_ca_file = "/etc/my certs/ca.pem # not a comment"   # a comment
        request_id_header = "X-Id"
        access_log = ""
        log_level = "say \"hi\" \\ \d"
        """#
        XCTAssertEqual(try entries(text), [
            "upstream_ca_file": "/etc/my certs/ca.pem # not a comment",
            "request_id_header": "X-Id",
            "access_log": "",
            "log_level": #"say "hi" \ \d"#,
        ])
    }

    func testEmptyValueAndLineEndings() throws {
        XCTAssertEqual(try entries("\u{FEFF}upstream_ca_file =\r\nthreads = 2\r\n"),
                       ["upstream_ca_file": "", "threads": "2"])
        let parsed = try ConfigFile.parse("\n\nthreads = 2\r\n\r\nlisten = a:1", path: "p", knownKeys: keys)
        XCTAssertEqual(parsed.map(\.line), [3, 5])
    }

    func testUnknownKeyWithSuggestion() {
        let error = error("listen = 0.0.0.0:1\n\nupstrem = http://x\n")
        XCTAssertEqual(error, ConfigError(source: .file(path: "proxy.conf", line: 3), key: "upstrem",
                                          message: "unknown key 'upstrem' (did you mean 'upstream'?)"))
        XCTAssertEqual(error?.description, "proxy.conf:3: unknown key 'upstrem' (did you mean 'upstream'?)")
    }

    func testUnknownKeyWithoutSuggestion() {
        XCTAssertEqual(error("frobnicate = 1")?.description, "proxy.conf:1: unknown key 'frobnicate'")
        XCTAssertEqual(error("LISTEN = 0.0.0.0:1")?.description,
                       "proxy.conf:1: unknown key 'LISTEN' (did you mean 'listen'?)")
    }

    func testDuplicateKeyNamesBothLines() {
        let error = error("listen = 0.0.0.0:1\nthreads = 1\n# again:\nlisten = 0.0.0.0:2\n")
        XCTAssertEqual(error?.source, .file(path: "proxy.conf", line: 4))
        XCTAssertEqual(error?.key, "listen")
        XCTAssertEqual(error?.description, "proxy.conf:4: duplicate key 'listen' (already set on line 1)")
    }

    func testSyntaxErrors() {
        XCTAssertEqual(error("threads 4")?.description, "proxy.conf:1: expected 'key = value', got 'threads 4'")
        XCTAssertEqual(error("\n = 4")?.description, "proxy.conf:2: expected 'key = value', got '= 4'")
        XCTAssertEqual(error(#"log_level = "info"#)?.description, "proxy.conf:1: missing closing quote for log_level")
        XCTAssertEqual(error(#"log_level = "info" debug"#)?.description,
                       "proxy.conf:1: unexpected text 'debug' after the closing quote for log_level")
    }
}
