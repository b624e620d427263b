import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import TracegateProxy

/// The request parser against SwiftNIO's llhttp decoder, on generated and mutated requests.
///
/// Each case is a byte stream of one to three pipelined requests built from framing fields, list
/// values, whitespace, case, obs-fold, chunk syntax, trailers and line endings, then fed to both:
/// - llhttp (`HTTPRequestDecoder`) says which messages it reads and where it fails;
/// - the whole data plane (`ClientConnectionHandler` on in-memory channels, every forwarded request
///   answered `200`) says which requests it forwards.
///
/// Properties checked for every case:
/// 1. What tracegate sends upstream parses with llhttp, without error, as exactly the requests it
///    answered for, in order: no bytes that could read as a request nobody sent.
/// 2. Each forwarded request has the method, target and body llhttp reads from the client's bytes.
/// 3. Accepted and refused agree: tracegate forwards no message past the one llhttp refuses, and
///    refuses one llhttp accepts only for a reason listed in `deliberateRefusals`.
///
/// `TRACEGATE_FUZZ_SECONDS` sets the time budget (default 2 s); a failure reports the case's seed, and
/// `TRACEGATE_FUZZ_SEED=<seed>` replays it.
final class ParserDifferentialTests: XCTestCase {
    /// Requests llhttp accepts and tracegate refuses on purpose (the start of its JSON error).
    static let deliberateRefusals = [
        "malformed request: HTTP/1.1 request without a Host header",
        "malformed request: more than one Host header",
        "malformed request: Transfer-Encoding in an HTTP/1.0 request",
        "the only expectation supported is 100-continue",
        // Transfer codings other than a single `chunked` (`gzip, chunked`): the proxy decodes only chunked.
        "malformed request: unsupported Transfer-Encoding",
    ]

    func testTracegateForwardsExactlyWhatLLHTTPReadsAndFramesItExactly() throws {
        let budget = Double(ProcessInfo.processInfo.environment["TRACEGATE_FUZZ_SECONDS"] ?? "") ?? 2
        let replay = ProcessInfo.processInfo.environment["TRACEGATE_FUZZ_SEED"].flatMap { UInt64($0) }
        var seeds = SplitMix(seed: replay ?? UInt64(Date().timeIntervalSince1970 * 1000))
        let deadline = Date().addingTimeInterval(budget)
        var cases = 0
        var forwarded = 0
        var refused = 0
        repeat {
            let seed = replay ?? seeds.next()
            var rng = SplitMix(seed: seed)
            let input = RequestGen.stream(&rng)
            let splits = rng.chance(0.5) ? [] : (0..<rng.int(1...4)).map { _ in rng.int(0...input.count) }.sorted()
            guard let outcome = try check(input, splits: splits, seed: seed) else { return }
            forwarded += outcome.forwarded
            refused += outcome.refused ? 1 : 0
            cases += 1
        } while replay == nil && Date() < deadline
        print("parser differential: \(cases) cases, \(forwarded) requests forwarded, \(refused) streams refused")
        XCTAssertGreaterThan(cases, 50)
        XCTAssertGreaterThan(forwarded, 0)
        XCTAssertGreaterThan(refused, 0)
    }

    /// The differential tests find what they were built for: the request that `Connection: Content-Length`
    /// once smuggled would read as two requests upstream.
    func testTheSmugglingShapeOfTheDesyncIsForwardedAsOneRequest() throws {
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        let input = Array(
            "POST /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Content-Length\r\nContent-Length: \(smuggled.utf8.count)\r\n\r\n\(smuggled)"
                .utf8)
        let outcome = try check(input, splits: [], seed: 0)
        XCTAssertEqual(outcome?.forwarded, 1)
    }

    // MARK: Running both parsers

    private struct Outcome {
        var forwarded: Int
        var refused: Bool
    }

    /// Checks one case; nil (with the failure recorded) when a property does not hold.
    private func check(_ input: [UInt8], splits: [Int], seed: UInt64) throws -> Outcome? {
        let reference = LLHTTPReading(Self.asLLHTTPReadsIt(input))
        let proxy = try ProxyRun(input, splits: splits)
        let context = "seed \(seed) (TRACEGATE_FUZZ_SEED=\(seed))\ninput: \(show(input))\nllhttp: \(reference)\nproxy: \(proxy)"

        // 1. Upstream bytes frame exactly the requests answered.
        for (index, upstream) in proxy.upstreamReadings.enumerated() {
            guard !upstream.failed else { return fail("upstream \(index) bytes do not parse\n\(context)") }
        }
        let sentUpstream = proxy.upstreamReadings.flatMap(\.messages)
        guard sentUpstream.count == proxy.answered else {
            return fail("\(sentUpstream.count) requests upstream, \(proxy.answered) answered\n\(context)")
        }
        // 2. Each forwarded request is the one llhttp reads.
        for (index, message) in sentUpstream.enumerated() {
            guard index < reference.messages.count else {
                return fail("request \(index) forwarded, llhttp read only \(reference.messages.count)\n\(context)")
            }
            let expected = reference.messages[index]
            guard message.head.method == expected.head.method, message.body == expected.body,
                message.head.uri.hasSuffix(Self.path(of: expected.head.uri))
            else {
                return fail("request \(index) forwarded as \(message), llhttp read \(expected)\n\(context)")
            }
        }
        // 3. Accepted and refused agree.
        if let refusal = proxy.refusal, sentUpstream.count < reference.messages.count {
            guard Self.deliberateRefusals.contains(where: { refusal.hasPrefix($0) }) else {
                return fail("tracegate refused what llhttp accepts: \(refusal)\n\(context)")
            }
        }
        return Outcome(forwarded: sentUpstream.count, refused: proxy.refusal != nil)
    }

    private func fail(_ message: String) -> Outcome? {
        XCTFail(message)
        return nil
    }

    /// Deliberate leniencies, written out as the input llhttp is given instead:
    /// - tracegate serves `HTTP/1.2` (any higher 1.x) as HTTP/1.1 (RFC 9112 §2.3) where llhttp refuses
    ///   it: the reference reads such a request line as 1.1;
    /// - tracegate drops framing fields from a trailer section (RFC 9110 §6.5.1) where llhttp refuses
    ///   the message: the reference reads the trailers without them.
    static func asLLHTTPReadsIt(_ input: [UInt8]) -> [UInt8] {
        var text = String(decoding: input, as: UTF8.self)
        text = text.replacingOccurrences(of: " HTTP/1.2\r\n", with: " HTTP/1.1\r\n")
        for field in ["Content-Length: 50\r\n", "Transfer-Encoding: chunked\r\n"] {
            text = text.replacingOccurrences(of: "\r\n0\r\n" + field, with: "\r\n0\r\n")
        }
        return Array(text.utf8)
    }

    /// The origin-form path of a target (absolute-form is forwarded reduced to it).
    private static func path(of uri: String) -> String {
        RequestHeadRewriter.originForm(uri) ?? uri
    }

    private func show(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self).debugDescription
    }
}

/// One message as llhttp reads it.
struct ReadMessage: CustomStringConvertible {
    var head: HTTPRequestHead
    var body: [UInt8]
    var description: String { "\(head.method) \(head.uri) body=\(body.count)B" }
}

/// The complete messages llhttp reads from a byte stream, and whether it failed on what followed.
struct LLHTTPReading: CustomStringConvertible {
    var messages: [ReadMessage] = []
    var failed = false

    init(_ bytes: [UInt8]) {
        let channel = EmbeddedChannel(
            handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .fireError)))
        var current: ReadMessage?
        func drain() throws {
            while let part = try channel.readInbound(as: HTTPServerRequestPart.self) {
                switch part {
                case .head(let head): current = ReadMessage(head: head, body: [])
                case .body(let buffer): current?.body += Array(buffer.readableBytesView)
                case .end:
                    if let message = current { messages.append(message) }
                    current = nil
                }
            }
        }
        do {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
            try drain()
        } catch {
            try? drain()
            failed = true
        }
        _ = try? channel.finish()
    }

    var description: String { "\(messages)\(failed ? " then error" : "")" }
}

/// The data plane run on in-memory channels: the client's bytes in (at `splits`), every complete
/// upstream request answered `200`, until nothing moves.
struct ProxyRun: CustomStringConvertible {
    var upstreamReadings: [LLHTTPReading] = []
    /// `200` responses the client received.
    var answered = 0
    /// The error message of a refusal the client received, if any.
    var refusal: String?

    init(_ input: [UInt8], splits: [Int]) throws {
        let loop = EmbeddedEventLoop()
        let upstreams = EmbeddedUpstreams(loop: loop)
        var configuration = ProxyConfiguration(upstream: .init(host: "backend", port: 8000, usesTLS: false))
        configuration.maxBodyBytes = nil
        let pools = [UpstreamPool(eventLoop: loop, connector: upstreams, maxIdle: 4)]
        let client = EmbeddedChannel(loop: loop)
        try client.pipeline.syncOperations.addHandler(
            ClientConnectionHandler(
                shared: ProxyShared(configuration: configuration, observer: nil), loop: LoopShared(eventLoop: loop, pools: pools, observer: nil)))
        try client.connect(to: SocketAddress(ipAddress: "10.1.2.3", port: 4000)).wait()

        var received: [[UInt8]] = []
        var answeredUpstream: [Int] = []
        var clientBytes: [UInt8] = []
        func pump() throws {
            var moved = true
            while moved {
                moved = false
                for (index, channel) in upstreams.channels.enumerated() {
                    if index == received.count {
                        received.append([])
                        answeredUpstream.append(0)
                    }
                    while let bytes = try channel.readOutbound(as: ByteBuffer.self) {
                        received[index] += Array(bytes.readableBytesView)
                    }
                    let complete = LLHTTPReading(received[index]).messages.count
                    while answeredUpstream[index] < complete && channel.isActive {
                        answeredUpstream[index] += 1
                        moved = true
                        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
                    }
                }
                while let bytes = try client.readOutbound(as: ByteBuffer.self) { clientBytes += Array(bytes.readableBytesView) }
            }
        }
        var offset = 0
        for split in splits + [input.count] where split >= offset {
            if client.isActive {
                try client.writeInbound(ByteBuffer(bytes: input[offset..<split]))
            }
            offset = split
            try pump()
        }
        upstreamReadings = received.map { LLHTTPReading($0) }
        let text = String(decoding: clientBytes, as: UTF8.self)
        answered = text.components(separatedBy: " 200 OK\r\n").count - 1
        if let range = text.range(of: "{\"error\":\"") {
            refusal = String(text[range.upperBound...].prefix { $0 != "\"" })
        }
        _ = try? client.finish()
        for channel in upstreams.channels { _ = try? channel.finish() }
    }

    var description: String {
        "answered \(answered), upstream \(upstreamReadings), refusal \(refusal ?? "none")"
    }
}

/// Generated request streams: valid requests and their near misses.
enum RequestGen {
    static func stream(_ rng: inout SplitMix) -> [UInt8] {
        var bytes: [UInt8] = []
        if rng.chance(0.05) { bytes += Array("\r\n".utf8) }  // leading empty line (RFC 9112 §2.2)
        for _ in 0..<rng.int(1...3) { bytes += message(&rng) }
        if rng.chance(0.15) { bytes = Array(bytes.prefix(rng.int(0...bytes.count))) }  // cut short
        return bytes
    }

    static func message(_ rng: inout SplitMix) -> [UInt8] {
        let eol = rng.chance(0.05) ? "\n" : "\r\n"
        let method = rng.pick(["GET", "POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])
        let target = rng.pick(["/v1/chat/completions", "/a?b=c", "/", "http://example.com/abs", "/x%20y"])
        let version = rng.pick(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.2"])
        var fields: [(String, String)] = []
        let hosts = rng.chance(0.9) ? 1 : rng.pick([0, 2])
        for _ in 0..<hosts { fields.append((caseOf("Host", &rng), "example.com")) }
        if rng.chance(0.3) { fields.append(("X-Extra", rng.pick(["a", " spaced ", "a, b", "\t"]))) }
        if rng.chance(0.3) {
            fields.append((caseOf("Connection", &rng), rng.pick([
                "keep-alive", "close", "Content-Length", "keep-alive, content-length", "Transfer-Encoding", "x-hop", "Host",
            ])))
        }
        if rng.chance(0.1) { fields.append(("Expect", rng.pick(["100-continue", "100-Continue", "nothing"]))) }

        let body = Array(rng.pick(["", "hello", "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", String(repeating: "z", count: 300)]).utf8)
        var bodyBytes: [UInt8] = []
        switch rng.int(0...9) {
        case 0...3:  // Content-Length
            fields.append((caseOf("Content-Length", &rng), contentLength(body.count, &rng)))
            bodyBytes = body
        case 4...6:  // chunked
            fields.append((caseOf("Transfer-Encoding", &rng), transferEncoding(&rng)))
            bodyBytes = chunked(body, eol: eol, &rng)
        case 7:  // both
            fields.append(("Content-Length", String(body.count)))
            fields.append(("Transfer-Encoding", "chunked"))
            bodyBytes = chunked(body, eol: eol, &rng)
        default:
            break
        }
        fields = mutate(fields, &rng)
        var head = "\(method) \(target) \(version)\(eol)"
        for (name, value) in fields { head += "\(name):\(rng.chance(0.8) ? " " : "")\(value)\(eol)" }
        head += eol
        return Array(head.utf8) + bodyBytes
    }

    static func contentLength(_ length: Int, _ rng: inout SplitMix) -> String {
        switch rng.int(0...12) {
        case 0: return "+\(length)"
        case 1: return "0\(length)"
        case 2: return "\(length), \(length + 1)"
        case 3: return String(length, radix: 16, uppercase: false) == String(length) ? "0x\(length)" : "0x" + String(length, radix: 16)
        case 4: return "\(length) "
        case 5: return "-\(length)"
        default: return String(length)
        }
    }

    static func transferEncoding(_ rng: inout SplitMix) -> String {
        rng.pick(["chunked", "chunked", "chunked", "Chunked", "chunked, chunked", "gzip, chunked", "chunked, gzip", "identity", "xchunked", "chunked "])
    }

    static func chunked(_ body: [UInt8], eol: String, _ rng: inout SplitMix) -> [UInt8] {
        var out: [UInt8] = []
        var rest = body[...]
        while !rest.isEmpty {
            let size = min(rest.count, rng.int(1...200))
            var sizeLine = String(size, radix: 16, uppercase: rng.chance(0.5))
            switch rng.int(0...15) {
            case 0: sizeLine += ";ext=1"
            case 1: sizeLine += " "
            case 2: sizeLine = "0x" + sizeLine
            case 3: sizeLine += ";q=\"a b\""
            case 4: sizeLine = "0" + sizeLine
            default: break
            }
            out += Array((sizeLine + eol).utf8) + Array(rest.prefix(size))
            out += Array((rng.chance(0.03) ? "" : eol).utf8)
            rest = rest.dropFirst(size)
        }
        out += Array("0\(eol)".utf8)
        if rng.chance(0.2) {
            out += Array("\(rng.pick(["X-Checksum: 1", "Content-Length: 50", "Host: evil", "Transfer-Encoding: chunked"]))\(eol)".utf8)
        }
        out += Array(eol.utf8)
        return out
    }

    /// Field-level mutations: space before the colon, obs-fold, a control character, a duplicate.
    static func mutate(_ fields: [(String, String)], _ rng: inout SplitMix) -> [(String, String)] {
        guard !fields.isEmpty, rng.chance(0.25) else { return fields }
        var fields = fields
        let index = rng.int(0...(fields.count - 1))
        switch rng.int(0...4) {
        case 0: fields[index].0 += " "
        case 1: fields[index].1 += "\r\n folded"
        case 2: fields[index].1 += "\u{1}"
        case 3: fields.insert(fields[index], at: index)
        default: fields[index].1 = "\t" + fields[index].1
        }
        return fields
    }

    static func caseOf(_ name: String, _ rng: inout SplitMix) -> String {
        rng.chance(0.3) ? (rng.chance(0.5) ? name.lowercased() : name.uppercased()) : name
    }
}

/// A small seeded generator (SplitMix64): the same seed gives the same case.
struct SplitMix {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }

    mutating func chance(_ probability: Double) -> Bool {
        Double(next() % 1_000_000) / 1_000_000 < probability
    }

    mutating func pick<T>(_ choices: [T]) -> T { choices[int(0...(choices.count - 1))] }
}
