import XCTest
@testable import TracegateConfig

final class SettingsLoaderTests: XCTestCase {
    func testDefaults() throws {
        let settings = try Fixture.load(Fixture.upstream)
        XCTAssertEqual(settings.listen, HostPort(host: "0.0.0.0", port: 8080))
        XCTAssertEqual(settings.adminListen, HostPort(host: "127.0.0.1", port: 9090))
        XCTAssertEqual(settings.threads, 0)
        XCTAssertEqual(settings.cpuAffinity, .auto)
        XCTAssertEqual(settings.upstream, UpstreamURL(scheme: .http, host: "127.0.0.1", port: 8000, basePath: ""))
        XCTAssertFalse(settings.preserveHost)
        XCTAssertTrue(settings.upstreamTLSVerify)
        XCTAssertNil(settings.upstreamCAFile)
        XCTAssertEqual(settings.upstreamPoolSize, 64)
        XCTAssertEqual(settings.connectTimeout, .seconds(5))
        XCTAssertEqual(settings.firstByteTimeout, .seconds(300))
        XCTAssertEqual(settings.idleTimeout, .seconds(300))
        XCTAssertEqual(settings.clientKeepaliveTimeout, .seconds(75))
        XCTAssertEqual(settings.shutdownGrace, .seconds(30))
        XCTAssertEqual(settings.maxHeaderBytes, 32 * 1024)
        XCTAssertEqual(settings.maxBodyBytes, 64 * 1024 * 1024)
        XCTAssertEqual(settings.requestIDHeader, "X-Request-ID")
        XCTAssertEqual(settings.forwardedHeaders, .xForwarded)
        XCTAssertEqual(settings.accessLog, .text)
        XCTAssertEqual(settings.logLevel, .info)
        XCTAssertEqual(settings, TracegateSettings.defaults(upstream: settings.upstream))
    }

    func testCPUAffinityIsAutoOrOff() throws {
        XCTAssertEqual(try Fixture.load(Fixture.upstream + ["--cpu-affinity", "off"]).cpuAffinity, .off)
        XCTAssertEqual(try Fixture.load(Fixture.upstream, env: ["TRACEGATE_CPU_AFFINITY": "auto"]).cpuAffinity, .auto)
        XCTAssertThrowsError(try Fixture.load(Fixture.upstream + ["--cpu-affinity", "0,1"])) { error in
            XCTAssertTrue("\(error)".contains("cpu_affinity"), "\(error)")
            XCTAssertTrue("\(error)".contains("auto"), "\(error)")
        }
    }

    func testConfigFileNotReadWithoutConfigFlagOrVariable() throws {
        let settings = try SettingsLoader.load(arguments: Fixture.upstream, environment: [:]) { path in
            XCTFail("read \(path)")
            return ""
        }
        XCTAssertEqual(settings.listen.port, 8080)
    }

    func testPrecedenceFlagOverEnvironmentOverFile() throws {
        let conf = "upstream = http://file\nthreads = 1\nlog_level = debug\naccess_log = json\n"
        let env = ["TRACEGATE_THREADS": "2", "TRACEGATE_LOG_LEVEL": "error", "TRACEGATE_UPSTREAM": "http://env"]
        let settings = try Fixture.load(["--threads", "3"], env: env, conf: conf)
        XCTAssertEqual(settings.threads, 3)          // flag > env > file
        XCTAssertEqual(settings.logLevel, .error)    // env > file
        XCTAssertEqual(settings.accessLog, .json)    // file > default
        XCTAssertEqual(settings.upstream.host, "env")
        XCTAssertEqual(settings.forwardedHeaders, .xForwarded) // default
    }

    func testConfigPathFromFlagWinsOverEnvironment() throws {
        var read: [String] = []
        let settings = try SettingsLoader.load(
            arguments: ["--config=/etc/flag.conf"],
            environment: ["TRACEGATE_CONFIG": "/etc/env.conf"]
        ) { path in
            read.append(path)
            return "upstream = http://from-file"
        }
        XCTAssertEqual(read, ["/etc/flag.conf"])
        XCTAssertEqual(settings.upstream.host, "from-file")

        read = []
        _ = try SettingsLoader.load(arguments: [], environment: ["TRACEGATE_CONFIG": "/etc/env.conf"]) { path in
            read.append(path)
            return "upstream = http://from-file"
        }
        XCTAssertEqual(read, ["/etc/env.conf"])
    }

    func testFlagForms() throws {
        let settings = try Fixture.load([
            "--upstream=https://api:8443/v1/", "--listen", "[::1]:0", "--admin-listen=127.0.0.1:0",
            "--preserve-host", "--upstream-tls-verify", "off", "--max-body-bytes=0", "--upstream-ca-file", "/ca.pem",
            "--request-id-header=X-Trace", "--forwarded-headers", "both", "--connect-timeout=250ms",
        ])
        XCTAssertEqual(settings.upstream, UpstreamURL(scheme: .https, host: "api", port: 8443, basePath: "/v1"))
        XCTAssertEqual(settings.listen, HostPort(host: "::1", port: 0))
        XCTAssertEqual(settings.adminListen, HostPort(host: "127.0.0.1", port: 0))
        XCTAssertTrue(settings.preserveHost)
        XCTAssertFalse(settings.upstreamTLSVerify)
        XCTAssertNil(settings.maxBodyBytes)
        XCTAssertEqual(settings.upstreamCAFile, "/ca.pem")
        XCTAssertEqual(settings.requestIDHeader, "X-Trace")
        XCTAssertEqual(settings.forwardedHeaders, .both)
        XCTAssertEqual(settings.connectTimeout, .milliseconds(250))
    }

    func testBareBooleanFlags() throws {
        XCTAssertTrue(try Fixture.load(Fixture.upstream + ["--preserve-host"]).preserveHost)
        XCTAssertTrue(try Fixture.load(["--preserve-host"] + Fixture.upstream).preserveHost)
        XCTAssertTrue(try Fixture.load(["--preserve-host", "yes"] + Fixture.upstream).preserveHost)
        XCTAssertFalse(try Fixture.load(["--preserve-host=false"] + Fixture.upstream).preserveHost)
        XCTAssertFalse(try Fixture.load(["--preserve-host", "0"] + Fixture.upstream).preserveHost)
        XCTAssertEqual(Fixture.message(["--preserve-host", "maybe"] + Fixture.upstream),
                       "flag --preserve-host: invalid value 'maybe' for preserve_host: expected true/false, yes/no, on/off or 1/0")
    }

    func testEmptyValueUnsetsOptionalSetting() throws {
        let conf = "upstream = http://x\nupstream_ca_file = /from/file.pem\n"
        XCTAssertEqual(try Fixture.load(conf: conf).upstreamCAFile, "/from/file.pem")
        XCTAssertNil(try Fixture.load(env: ["TRACEGATE_UPSTREAM_CA_FILE": ""], conf: conf).upstreamCAFile)
        XCTAssertNil(try Fixture.load(["--upstream-ca-file="], conf: conf).upstreamCAFile)
        XCTAssertNil(try Fixture.load(conf: "upstream = http://x\nupstream_ca_file = \"\"").upstreamCAFile)
    }

    func testQuotedAndCommentedFileValues() throws {
        let conf = """
        upstream = "http://backend:9000/api/"   # the backend
        request_id_header = X-Req # comment
        """
        let settings = try Fixture.load(conf: conf)
        XCTAssertEqual(settings.upstream, UpstreamURL(scheme: .http, host: "backend", port: 9000, basePath: "/api"))
        XCTAssertEqual(settings.requestIDHeader, "X-Req")
    }

    // MARK: - Errors

    func testMissingRequiredUpstream() {
        let error = Fixture.error()
        XCTAssertEqual(error?.source, ConfigError.Source.none)
        XCTAssertEqual(error?.key, "upstream")
        XCTAssertEqual(error?.description,
                       "missing required setting upstream: set upstream in the config file, "
                           + "TRACEGATE_UPSTREAM in the environment, or --upstream on the command line")
        XCTAssertEqual(Fixture.error(conf: "# upstream = http://x\nthreads = 1")?.key, "upstream")
    }

    func testInvalidValueMessagesNameSourceKeyValueAndAcceptedForms() {
        XCTAssertEqual(Fixture.message(env: ["TRACEGATE_CONNECT_TIMEOUT": "abc"] , conf: "upstream = http://x"),
                       "environment variable TRACEGATE_CONNECT_TIMEOUT: invalid value 'abc' for connect_timeout: "
                           + "expected a duration such as 250ms, 5s, 2m or 1h")
        XCTAssertEqual(Fixture.message(["--listen", "localhost"] + Fixture.upstream),
                       "flag --listen: invalid value 'localhost' for listen: the port is missing; "
                           + "expected host:port, e.g. 0.0.0.0:8080 or [::1]:8080")
        let error = Fixture.error(conf: "upstream = http://x\n\nthreads = 1000\n")
        XCTAssertEqual(error, ConfigError(source: .file(path: "proxy.conf", line: 3), key: "threads",
                                          message: "invalid value '1000' for threads: 1000 is out of range; "
                                              + "expected a whole number from 0 to 256"))
        XCTAssertEqual(error?.description, "proxy.conf:3: invalid value '1000' for threads: 1000 is out of range; "
                           + "expected a whole number from 0 to 256")
    }

    func testEveryKindRejectsWithItsAcceptedForms() {
        let cases: [(flag: String, value: String, message: String)] = [
            ("--admin-listen", "[::1]", "the port is missing; expected host:port, e.g. 0.0.0.0:8080 or [::1]:8080"),
            ("--listen", "::1:80", "an IPv6 address must be in brackets, e.g. [::1]:8080; expected host:port, e.g. 0.0.0.0:8080 or [::1]:8080"),
            ("--listen", "h:70000", "port '70000' is not a number from 0 to 65535; expected host:port, e.g. 0.0.0.0:8080 or [::1]:8080"),
            ("--upstream", "ftp://x", "the scheme must be http or https; expected http://host[:port][/base-path] or https://host[:port][/base-path], e.g. http://127.0.0.1:8000"),
            ("--upstream", "http://x/?q", "a query or fragment is not allowed; expected http://host[:port][/base-path] or https://host[:port][/base-path], e.g. http://127.0.0.1:8000"),
            ("--upstream-pool-size", "100001", "100001 is out of range; expected a whole number from 0 to 100000"),
            ("--upstream-pool-size", "many", "expected a whole number from 0 to 100000"),
            ("--idle-timeout", "0s", "it must be greater than zero; expected a duration such as 250ms, 5s, 2m or 1h"),
            ("--shutdown-grace", "5d", "expected a duration such as 250ms, 5s, 2m or 1h"),
            ("--max-header-bytes", "81KiB", "it is out of range; expected a size between 1KiB and 80KiB, such as 1024, 16K or 64KiB"),
            ("--max-header-bytes", "1023", "it is out of range; expected a size between 1KiB and 80KiB, such as 1024, 16K or 64KiB"),
            ("--max-body-bytes", "10TB", "expected a size such as 512, 64KiB, 10MiB or 1GiB, or 0 for no limit"),
            ("--upstream-tls-verify", "nope", "expected true/false, yes/no, on/off or 1/0"),
            ("--request-id-header", "X Request", "expected an HTTP header name made of letters, digits and !#$%&'*+-.^_`|~, e.g. X-Request-ID"),
            ("--forwarded-headers", "forwarded", "expected one of x-forwarded, via, both, none"),
            ("--access-log", "xml", "expected one of text, json, off"),
            ("--log-level", "warn", "expected one of trace, debug, info, notice, warning, error, critical"),
        ]
        for (flag, value, message) in cases {
            let key = String(flag.dropFirst(2).map { $0 == "-" ? "_" : $0 })
            let arguments = (flag == "--upstream" ? [] : ["--upstream=http://x"]) + ["\(flag)=\(value)"]
            let error = Fixture.error(arguments)
            XCTAssertEqual(error?.source, .flag(flag), flag)
            XCTAssertEqual(error?.key, key, flag)
            XCTAssertEqual(error?.description, "flag \(flag): invalid value '\(value)' for \(key): \(message)")
        }
    }

    func testUserInfoIsRefusedAndNotEchoed() {
        XCTAssertEqual(Fixture.message(["--upstream", "https://admin:s3cret@api/x"]),
                       "flag --upstream: invalid value 'https://***@api/x' for upstream: user info (user:password@) "
                           + "is not allowed; expected http://host[:port][/base-path] or https://host[:port][/base-path], "
                           + "e.g. http://127.0.0.1:8000")
    }

    func testOverriddenValuesAreStillValidated() {
        // Every given value is validated, even one that a higher-precedence source overrides.
        XCTAssertEqual(Fixture.message(["--threads", "2"], env: ["TRACEGATE_THREADS": "x"], conf: "upstream = http://x")?
                           .hasPrefix("environment variable TRACEGATE_THREADS: invalid value 'x' for threads"), true)
    }

    func testUnknownFlag() {
        let error = Fixture.error(["--upstrem", "http://x"])
        XCTAssertEqual(error?.description, "unknown flag --upstrem (did you mean --upstream?)")
        XCTAssertEqual(Fixture.message(["--upstream_pool_size=3"] + Fixture.upstream),
                       "unknown flag --upstream_pool_size (did you mean --upstream-pool-size?)")
        XCTAssertEqual(Fixture.message(["-listen", "0.0.0.0:1"] + Fixture.upstream),
                       "unknown flag -listen (did you mean --listen?)")
        XCTAssertEqual(Fixture.message(["--frobnicate"] + Fixture.upstream), "unknown flag --frobnicate")
        XCTAssertEqual(Fixture.message(["--confg", "x"]), "unknown flag --confg (did you mean --config?)")
    }

    func testFlagMissingValue() {
        XCTAssertEqual(Fixture.message(Fixture.upstream + ["--listen"]),
                       "flag --listen: missing value; expected host:port, e.g. 0.0.0.0:8080 or [::1]:8080")
        XCTAssertEqual(Fixture.message(["--connect-timeout", "--threads", "2"] + Fixture.upstream),
                       "flag --connect-timeout: missing value; expected a duration such as 250ms, 5s, 2m or 1h")
        XCTAssertEqual(Fixture.message(["--config"]), "flag --config: missing value; expected the path of a config file")
        XCTAssertEqual(Fixture.message(["--config="]), "flag --config: missing value; expected the path of a config file")
    }

    func testNegativeNumberIsTakenAsValue() {
        XCTAssertEqual(Fixture.message(["--threads", "-1"] + Fixture.upstream),
                       "flag --threads: invalid value '-1' for threads: -1 is out of range; expected a whole number from 0 to 256")
    }

    func testStrayPositionalArgument() {
        XCTAssertEqual(Fixture.message(Fixture.upstream + ["serve"]),
                       "unexpected argument 'serve': settings are given as --key VALUE or --key=VALUE")
    }

    func testFlagGivenTwice() {
        let error = Fixture.error(Fixture.upstream + ["--threads=1", "--threads", "2"])
        XCTAssertEqual(error, ConfigError(source: .flag("--threads"), key: "threads", message: "given more than once"))
        XCTAssertEqual(error?.description, "flag --threads: given more than once")
    }

    func testUnknownTracegateEnvironmentVariable() {
        let error = Fixture.error(Fixture.upstream, env: ["TRACEGATE_LISTN": "0.0.0.0:1", "HOME": "/root"])
        XCTAssertEqual(error?.source, .environment("TRACEGATE_LISTN"))
        XCTAssertEqual(error?.description,
                       "environment variable TRACEGATE_LISTN: unknown setting (did you mean TRACEGATE_LISTEN?)")
        XCTAssertEqual(Fixture.message(Fixture.upstream, env: ["TRACEGATE_WHATEVER_ELSE": "1"]),
                       "environment variable TRACEGATE_WHATEVER_ELSE: unknown setting")
    }

    func testOtherEnvironmentVariablesAreIgnored() throws {
        let env = ["PATH": "/bin", "LISTEN": "x", "tracegate_listen": "x", "MLFLOW_TRACKING_URI": "http://m"]
        XCTAssertEqual(try Fixture.load(Fixture.upstream, env: env).listen.port, 8080)
    }

    func testUnreadableConfigFile() {
        XCTAssertEqual(Fixture.message(["--config", "/etc/tracegate/proxy.conf"]),
                       "flag --config: cannot read config file '/etc/tracegate/proxy.conf': permission denied")
        let error = Fixture.error(env: ["TRACEGATE_CONFIG": "/missing.conf"])
        XCTAssertEqual(error?.source, .environment("TRACEGATE_CONFIG"))
        XCTAssertEqual(error?.description,
                       "environment variable TRACEGATE_CONFIG: cannot read config file '/missing.conf': permission denied")
    }

    func testFoundationReadErrorReason() {
        let path = "/nonexistent-\(UInt64.random(in: 0...UInt64.max))/proxy.conf"
        do {
            _ = try SettingsLoader.load(arguments: ["--config", path], environment: [:]) { path in
                try String(contentsOfFile: path, encoding: .utf8)
            }
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual(error.description,
                           "flag --config: cannot read config file '\(path)': No such file or directory")
        }
    }

    func testFileErrorsUseThePathAsGiven() {
        let error = Fixture.error(["--config", "conf/proxy.conf"], conf: "upstream = http://x\nlisten = nope\n")
        XCTAssertEqual(error?.source, .file(path: "conf/proxy.conf", line: 2))
        XCTAssertEqual(error?.description.hasPrefix("conf/proxy.conf:2: invalid value 'nope' for listen:"), true)
    }

    func testUsageListsEverySetting() {
        let usage = SettingsLoader.usage
        XCTAssertTrue(usage.contains("--config PATH  (env TRACEGATE_CONFIG)"))
        for setting in SettingsTable.all {
            XCTAssertTrue(usage.contains(setting.flag), setting.key)
            XCTAssertTrue(usage.contains(setting.environmentVariable), setting.key)
            XCTAssertTrue(usage.contains(setting.doc), setting.key)
        }
        XCTAssertTrue(usage.contains("  --listen HOST:PORT  (env TRACEGATE_LISTEN, default: 0.0.0.0:8080)\n"))
        XCTAssertTrue(usage.contains("  --upstream URL  (env TRACEGATE_UPSTREAM, required)\n"))
        XCTAssertTrue(usage.contains("  --preserve-host[=BOOL]  (env TRACEGATE_PRESERVE_HOST, default: false)\n"))
        XCTAssertTrue(usage.contains("  --upstream-ca-file PATH  (env TRACEGATE_UPSTREAM_CA_FILE, default: none)\n"))
        XCTAssertTrue(usage.contains("  --log-level trace|debug|info|notice|warning|error|critical"))
    }

    func testTableNamesAreConsistent() {
        XCTAssertEqual(Set(SettingsTable.all.map(\.key)).count, SettingsTable.all.count)
        for setting in SettingsTable.all {
            // MLflow's and OpenTelemetry's settings keep their own variable names; every other one is TRACEGATE_<KEY>.
            let foreign = setting.key.hasPrefix("mlflow_") || setting.key.hasPrefix("otel_")
            let expected = foreign ? setting.key.uppercased() : "TRACEGATE_" + setting.key.uppercased()
            XCTAssertEqual(setting.environmentVariable, expected)
            XCTAssertEqual(setting.flag, "--" + setting.key.replacingOccurrences(of: "_", with: "-"))
            XCTAssertFalse(setting.doc.contains("\n"), setting.key)
        }
        let custom = SettingDescriptor("upstream", \.upstream, .upstreamURL, default: .required,
                                       environment: "MLFLOW_TRACKING_URI", doc: "x")
        XCTAssertEqual(custom.environmentVariable, "MLFLOW_TRACKING_URI")
        XCTAssertEqual(custom.flag, "--upstream")
    }
}
