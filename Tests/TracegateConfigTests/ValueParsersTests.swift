import XCTest
@testable import TracegateConfig

final class HostPortTests: XCTestCase {
    func testAccepts() {
        XCTAssertEqual(HostPort.parse("0.0.0.0:8080"), HostPort(host: "0.0.0.0", port: 8080))
        XCTAssertEqual(HostPort.parse("localhost:0"), HostPort(host: "localhost", port: 0))
        XCTAssertEqual(HostPort.parse("proxy-1.example.com:65535"), HostPort(host: "proxy-1.example.com", port: 65535))
        XCTAssertEqual(HostPort.parse("[::1]:8080"), HostPort(host: "::1", port: 8080))
        XCTAssertEqual(HostPort.parse("[::]:80"), HostPort(host: "::", port: 80))
        XCTAssertEqual(HostPort.parse("[2001:db8::10]:443"), HostPort(host: "2001:db8::10", port: 443))
        XCTAssertEqual(HostPort.parse("[::ffff:192.0.2.1]:1"), HostPort(host: "::ffff:192.0.2.1", port: 1))
        XCTAssertEqual(HostPort.parse("[fe80::1%eth0]:9"), HostPort(host: "fe80::1%eth0", port: 9))
        XCTAssertEqual(HostPort.parse("[1:2:3:4:5:6:7:8]:9"), HostPort(host: "1:2:3:4:5:6:7:8", port: 9))
    }

    func testRejects() {
        for text in ["localhost", "0.0.0.0", ":8080", "host:", "host:65536", "host:-1", "host:8o", "host:+80",
                     "::1:8080", "[::1]", "[::1]8080", "[::1:8080", "[nothex::]:80", "[1:2:3:4:5:6:7:8:9]:80",
                     "[1::2::3]:80", "256.0.0.1:80", "1.2.3:80", "bad_host!:80", "-lead.example:80",
                     "a..b:80", "", "host:123456", "ho st:80"] {
            XCTAssertNil(HostPort.parse(text), text)
        }
    }

    func testDescriptionBracketsIPv6() {
        XCTAssertEqual(HostPort(host: "::1", port: 8080).description, "[::1]:8080")
        XCTAssertEqual(HostPort(host: "10.0.0.1", port: 80).description, "10.0.0.1:80")
    }
}

final class UpstreamURLTests: XCTestCase {
    func testAccepts() {
        XCTAssertEqual(UpstreamURL.parse("http://127.0.0.1:8000"),
                       UpstreamURL(scheme: .http, host: "127.0.0.1", port: 8000, basePath: ""))
        XCTAssertEqual(UpstreamURL.parse("https://api.example.com"),
                       UpstreamURL(scheme: .https, host: "api.example.com", port: 443, basePath: ""))
        XCTAssertEqual(UpstreamURL.parse("http://backend"),
                       UpstreamURL(scheme: .http, host: "backend", port: 80, basePath: ""))
        XCTAssertEqual(UpstreamURL.parse("http://backend/"),
                       UpstreamURL(scheme: .http, host: "backend", port: 80, basePath: ""))
        XCTAssertEqual(UpstreamURL.parse("http://backend:9000/api/v1/"),
                       UpstreamURL(scheme: .http, host: "backend", port: 9000, basePath: "/api/v1"))
        XCTAssertEqual(UpstreamURL.parse("HTTPS://[::1]:8443/x%20y"),
                       UpstreamURL(scheme: .https, host: "::1", port: 8443, basePath: "/x%20y"))
        XCTAssertEqual(UpstreamURL.parse("https://[2001:db8::1]/base"),
                       UpstreamURL(scheme: .https, host: "2001:db8::1", port: 443, basePath: "/base"))
    }

    func testRejects() {
        for text in ["ftp://host", "127.0.0.1:8000", "host", "http://", "http:///path", "http://user:pw@host",
                     "http://user@host/", "http://host?x=1", "http://host/path?x=1", "http://host/#frag",
                     "http://host:99999", "http://host:", "http://::1/", "http://ho st/", "http://host/a b",
                     "http://host/%zz", "http://host/%2", "//host/path", ""] {
            XCTAssertNil(UpstreamURL.parse(text), text)
        }
    }

    func testDerivedProperties() throws {
        let plain = try XCTUnwrap(UpstreamURL.parse("http://backend:80/api"))
        XCTAssertFalse(plain.usesTLS)
        XCTAssertEqual(plain.authority, "backend")
        XCTAssertEqual(plain.description, "http://backend/api")
        let tls = try XCTUnwrap(UpstreamURL.parse("https://[::1]:8443"))
        XCTAssertTrue(tls.usesTLS)
        XCTAssertEqual(tls.authority, "[::1]:8443")
        XCTAssertEqual(tls.description, "https://[::1]:8443")
    }
}

final class ScalarParserTests: XCTestCase {
    private func duration(_ text: String) -> Duration? { try? ValueParsers.duration(text) }
    private func size(_ text: String) -> Int? { try? ValueParsers.size(text) }
    private func bool(_ text: String) -> Bool? { try? ValueParsers.bool(text) }

    func testDurations() {
        XCTAssertEqual(duration("250ms"), .milliseconds(250))
        XCTAssertEqual(duration("5s"), .seconds(5))
        XCTAssertEqual(duration("5"), .seconds(5))
        XCTAssertEqual(duration("2m"), .seconds(120))
        XCTAssertEqual(duration("1h"), .seconds(3600))
        XCTAssertEqual(duration("1.5s"), .milliseconds(1500))
        XCTAssertEqual(duration("0.25"), .milliseconds(250))
        XCTAssertEqual(duration("10MS"), .milliseconds(10))
        for text in ["", "0", "0s", "0ms", "0.0", "-5s", "abc", "5 s", "5sec", "5d", "s", ".5s", "1.s", "1.2.3s",
                     "99999999999999999999h", "9999999999h"] {
            XCTAssertNil(duration(text), text)
        }
    }

    func testSizes() {
        XCTAssertEqual(size("0"), 0)
        XCTAssertEqual(size("512"), 512)
        XCTAssertEqual(size("512b"), 512)
        for suffix in ["K", "KB", "KiB", "k", "kb", "kib", "KIB"] { XCTAssertEqual(size("64" + suffix), 65536, suffix) }
        for suffix in ["M", "MB", "MiB", "mib"] { XCTAssertEqual(size("10" + suffix), 10 << 20, suffix) }
        for suffix in ["G", "GB", "GiB", "gb"] { XCTAssertEqual(size("1" + suffix), 1 << 30, suffix) }
        for text in ["", "KiB", "-1", "+1", "1.5MiB", "10 MiB", "10TiB", "10x", "99999999999999999999",
                     "9999999999999GiB"] {
            XCTAssertNil(size(text), text)
        }
    }

    func testBooleans() {
        for text in ["true", "yes", "on", "1", "TRUE", "Yes"] { XCTAssertEqual(bool(text), true, text) }
        for text in ["false", "no", "off", "0", "False", "OFF"] { XCTAssertEqual(bool(text), false, text) }
        for text in ["", "t", "2", "enabled", "y"] { XCTAssertNil(bool(text), text) }
    }

    func testIntegers() {
        XCTAssertEqual(try? ValueParsers.integer("0", in: 0...256), 0)
        XCTAssertEqual(try? ValueParsers.integer("256", in: 0...256), 256)
        XCTAssertNil(try? ValueParsers.integer("257", in: 0...256))
        XCTAssertNil(try? ValueParsers.integer("-1", in: 0...256))
        XCTAssertNil(try? ValueParsers.integer("4.0", in: 0...256))
        XCTAssertNil(try? ValueParsers.integer("", in: 0...256))
    }

    func testEnums() {
        XCTAssertEqual(try? ValueParsers.oneOf("x-forwarded", ForwardedHeaders.self), .xForwarded)
        XCTAssertEqual(try? ValueParsers.oneOf("VIA", ForwardedHeaders.self), .via)
        XCTAssertEqual(try? ValueParsers.oneOf("json", AccessLogFormat.self), .json)
        XCTAssertEqual(try? ValueParsers.oneOf("critical", LogLevel.self), .critical)
        XCTAssertNil(try? ValueParsers.oneOf("x_forwarded", ForwardedHeaders.self))
        XCTAssertNil(try? ValueParsers.oneOf("warn", LogLevel.self))
        XCTAssertTrue(LogLevel.trace < LogLevel.critical)
    }

    func testHeaderNameTokens() {
        for text in ["X-Request-ID", "x_trace", "A!#$%&'*+-.^_`|~9"] {
            XCTAssertEqual(try? ValueParsers.token(text), text)
        }
        for text in ["", "X Request", "X:Id", "X-\u{e9}", "(id)", "a\"b", "a/b"] {
            XCTAssertNil(try? ValueParsers.token(text), text)
        }
    }

    func testSuggestions() {
        XCTAssertEqual(Suggestions.closest(to: "upstrem", among: ["listen", "upstream"]), "upstream")
        XCTAssertEqual(Suggestions.closest(to: "LISTN", among: ["listen"]), "listen")
        XCTAssertNil(Suggestions.closest(to: "completely_else", among: ["listen", "upstream"]))
        XCTAssertNil(Suggestions.closest(to: "ab", among: ["listen", "xy"]))
        XCTAssertEqual(Suggestions.editDistance(Array("kitten"), Array("sitting")), 3)
    }
}
