import XCTest
@testable import TracegateConfig

/// proxy.conf.example is the specification: the table must match it key for key, default for default.
final class ExampleFileTests: XCTestCase {
    /// `<repo>/proxy.conf.example`, three directories up from this file.
    private var examplePath: String {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()   // TracegateConfigTests
            .deletingLastPathComponent()   // Tests
            .deletingLastPathComponent()   // repository root
            .appendingPathComponent("proxy.conf.example").path
    }

    private func exampleLines() throws -> [String] {
        try String(contentsOfFile: examplePath, encoding: .utf8)
            .split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map(String.init)
    }

    /// Keys of `key = value` lines, and of `# key = ...` lines (settings shown without a default).
    private func exampleKeys() throws -> (set: [String: String], commented: Set<String>) {
        var set: [String: String] = [:]
        var commented: Set<String> = []
        for line in try exampleLines() {
            if line.hasPrefix("# "), let key = settingKey(String(line.dropFirst(2))) {
                commented.insert(key)
            } else if !line.hasPrefix("#"), let key = settingKey(line), let equals = line.firstIndex(of: "=") {
                set[key] = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return (set, commented)
    }

    /// `key` when the line reads `key = ...` with a lowercase snake_case key.
    private func settingKey(_ line: String) -> String? {
        guard let space = line.firstIndex(of: " "), line[space...].hasPrefix(" ="),
              line[..<space].allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "_" }), !line[..<space].isEmpty
        else { return nil }
        return String(line[..<space])
    }

    func testEveryTableSettingAppearsWithItsDefault() throws {
        let example = try exampleKeys()
        for setting in SettingsTable.all {
            switch setting.defaultValue {
            case .value(let text):
                XCTAssertEqual(example.set[setting.key], text, "\(setting.key) = \(text) not in the example")
            case .required:
                XCTAssertTrue(example.commented.contains(setting.key), "# \(setting.key) = ... not in the example")
                XCTAssertNil(example.set[setting.key], setting.key)
            }
        }
    }

    func testEveryExampleKeyIsInTheTable() throws {
        let example = try exampleKeys()
        XCTAssertFalse(example.set.isEmpty)
        for key in Set(example.set.keys).union(example.commented) {
            XCTAssertNotNil(SettingsTable.byKey[key], "example key \(key) is not in the settings table")
        }
    }

    func testLoadingTheExampleGivesExactlyTheDefaults() throws {
        let path = examplePath
        let settings = try SettingsLoader.load(
            arguments: ["--config", path, "--upstream", "http://x"], environment: [:]
        ) { path in
            try String(contentsOfFile: path, encoding: .utf8)
        }
        let upstream = try XCTUnwrap(UpstreamURL.parse("http://x"))
        XCTAssertEqual(settings, TracegateSettings.defaults(upstream: upstream))
        XCTAssertEqual(settings, try Fixture.load(["--upstream", "http://x"]))
    }
}
