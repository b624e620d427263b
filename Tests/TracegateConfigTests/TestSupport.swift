import XCTest
@testable import TracegateConfig

/// Test helpers: load settings from in-memory inputs and capture errors.
enum Fixture {
    static let upstream = ["--upstream", "http://127.0.0.1:8000"]

    struct ReadFailure: Error, CustomStringConvertible {
        var description: String { "permission denied" }
    }

    /// Loads with `conf` served as the contents of `proxy.conf` (given via `--config proxy.conf`
    /// unless the arguments or environment name a config file already).
    static func load(
        _ arguments: [String] = [],
        env: [String: String] = [:],
        conf: String? = nil
    ) throws(ConfigError) -> TracegateSettings {
        var arguments = arguments
        if conf != nil, !arguments.contains(where: { $0.hasPrefix("--config") }), env["TRACEGATE_CONFIG"] == nil {
            arguments = ["--config", "proxy.conf"] + arguments
        }
        return try SettingsLoader.load(arguments: arguments, environment: env) { _ in
            guard let conf else { throw ReadFailure() }
            return conf
        }
    }

    /// The error thrown by `load`, or nil (and a test failure) when it succeeds.
    static func error(
        _ arguments: [String] = [],
        env: [String: String] = [:],
        conf: String? = nil,
        file testFile: StaticString = #filePath,
        line: UInt = #line
    ) -> ConfigError? {
        do {
            let settings = try load(arguments, env: env, conf: conf)
            XCTFail("expected an error, got \(settings)", file: testFile, line: line)
            return nil
        } catch {
            return error
        }
    }

    /// The message text for `error(...)`, for compact assertions.
    static func message(
        _ arguments: [String] = [],
        env: [String: String] = [:],
        conf: String? = nil,
        file testFile: StaticString = #filePath,
        line: UInt = #line
    ) -> String? {
        error(arguments, env: env, conf: conf, file: testFile, line: line)?.description
    }
}
