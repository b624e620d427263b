import Foundation
import XCTest
@testable import TracegateTrace

/// Property-based tests of the SSE parser, the JSON reader and the chat-payload interpreter: generated
/// and mutated inputs, checked against properties that must hold for every input.
///
/// Each test runs cases from a seeded generator until a time budget (`TRACEGATE_FUZZ_SECONDS`, default 2)
/// or a case cap (lifted when `TRACEGATE_FUZZ_SECONDS` is set) is spent. A failing case reports its seed; `TRACEGATE_FUZZ_SEED=<seed>` replays it first.
/// Every test prints its base seed, so a crash (which no assertion can report) is replayed the same way.
final class ParserPropertyTests: XCTestCase {
    typealias F = ChatFixtures

    // MARK: SSE parser

    func testSSEEventsDoNotDependOnWhereTheInputIsSplit() {
        Fuzz.check { rng in
            let body = SSEGen.stream(&rng)
            let maxEventSize = rng.chance(0.3) ? rng.int(1...200) : SSEParser.defaultMaxEventSize
            let whole = SSERun(body, maxEventSize: maxEventSize, splits: [])
            let splits = rng.chance(0.1) ? Array(0...body.count) : Gen.splits(&rng, count: body.count)
            let split = SSERun(body, maxEventSize: maxEventSize, splits: splits)
            try require(split == whole, "split at \(splits) gives\n\(split)\nwhole gives\n\(whole)\ninput \(Gen.show(body))")
        }
    }

    func testSSEParserAgreesWithAPlainReadingOfTheSpec() {
        Fuzz.check { rng in
            let body = SSEGen.stream(&rng)
            let reference = ReferenceSSE.parse(body)
            let actual = SSERun(body, maxEventSize: Int.max / 2, splits: Gen.splits(&rng, count: body.count))
            try require(actual.events == reference.events, "events\n\(actual.events)\nexpected\n\(reference.events)\ninput \(Gen.show(body))")
            try require(actual.retry == reference.retry, "retry \(String(describing: actual.retry)), expected \(String(describing: reference.retry))")
            try require(actual.discardedPartial == reference.pending, "partial event \(actual.discardedPartial), expected \(reference.pending); input \(Gen.show(body))")
        }
    }

    func testSSEParserSurvivesArbitraryBytesAndHugeLines() {
        Fuzz.check(maxCases: 400) { rng in
            var body: [UInt8]
            var hugeLine = false
            switch rng.int(0...2) {
            case 0: body = (0..<rng.int(0...4096)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1: body = Mutate.apply(SSEGen.stream(&rng), &rng)
            default:
                // One line far over the limit, then a normal event that must still come through.
                hugeLine = true
                body = Array("data: ".utf8) + [UInt8](repeating: rng.pick([0x78, 0x00, 0xFF]), count: rng.int(1...300_000))
                    + Array("\n\ndata: after\n\n".utf8)
            }
            let maxEventSize = rng.pick([16, 1024, 65_536])
            var parser = SSEParser(maxEventSize: maxEventSize)
            var events: [SSEEvent] = []
            for range in Gen.ranges(Gen.splits(&rng, count: body.count), count: body.count) {
                events += parser.feed(body[range])
            }
            _ = parser.finish()
            for event in events {
                let size = event.data.utf8.count + (event.event?.utf8.count ?? 0)
                // Invalid UTF-8 can grow by decoding (1 byte to 3 for U+FFFD).
                try require(size <= 3 * maxEventSize, "event of \(size) bytes passed a \(maxEventSize)-byte limit")
            }
            if hugeLine, body.count > maxEventSize + 20 {
                try require(events.last == SSEEvent(data: "after"), "the event after an oversized line was lost: \(events.suffix(2))")
            }
        }
    }

    // MARK: JSON reader

    func testJSONReaderReadsWhatItWritesAndWritesOnlyValidJSON() {
        Fuzz.check { rng in
            let text = JSONGen.document(&rng)
            guard let value = PayloadJSON.parse(text) else { throw PropertyFailure("valid JSON rejected: \(text)") }
            let serialized = value.serialized
            try require(StrictJSON.isValid(serialized), "serialized form is not valid JSON: \(serialized)\nfrom \(text)")
            try require(PayloadJSON.parse(serialized) == value, "re-reading \(serialized) changes the value (from \(text))")

            let mutated = Mutate.apply(Array(text.utf8), &rng)
            for truncation in [false, true] {
                if let parsed = PayloadJSON.parse(mutated, allowTruncation: truncation) {
                    try require(StrictJSON.isValid(parsed.value.serialized),
                                "reading \(Gen.show(mutated)) (truncation \(truncation)) gives invalid JSON \(parsed.value.serialized)")
                }
            }
        }
    }

    func testEveryPrefixOfAJSONObjectIsReadableWhenTruncationIsAllowed() {
        Fuzz.check(maxCases: 300) { rng in
            let text = Array(JSONGen.object(&rng, depth: 0).utf8)
            for cut in 1...text.count {
                guard let parsed = PayloadJSON.parse(text[..<cut], allowTruncation: true) else {
                    throw PropertyFailure("prefix \(Gen.show(Array(text[..<cut]))) of \(Gen.show(text)) not readable")
                }
                try require(parsed.value.isObject, "prefix gave \(parsed.value.serialized)")
                try require(parsed.truncated == (cut < text.count), "truncated flag \(parsed.truncated) at \(cut)/\(text.count)")
                try require(StrictJSON.isValid(parsed.value.serialized), "prefix gave invalid JSON \(parsed.value.serialized)")
            }
        }
    }

    // MARK: Chat payloads

    func testGeneratedStreamsReassembleExactlyToTheirText() {
        Fuzz.check { rng in
            let stream = ChatStreamGen.stream(&rng)
            let exchange = ChatTest.accumulate(path: stream.path, request: stream.request, body: stream.body,
                                               splits: Gen.splits(&rng, count: stream.body.count))
            guard let exchange else { throw PropertyFailure("\(stream.api) stream not recognised:\n\(Gen.show(stream.body))") }
            let context = "\(stream.api) stream\n\(Gen.show(stream.body))"
            try require(exchange.assistantText == (stream.text.isEmpty ? nil : stream.text),
                        "text \(String(reflecting: exchange.assistantText)), expected \(String(reflecting: stream.text)); \(context)")
            try require(exchange.toolCalls.map(\.arguments) == stream.toolArguments,
                        "tool arguments \(exchange.toolCalls.map(\.arguments)), expected \(stream.toolArguments); \(context)")
            try require(exchange.warnings == [], "warnings \(exchange.warnings); \(context)")
            try require(exchange.streamCompleted, "stream not completed; \(context)")
            try require(exchange.usage == stream.usage, "usage \(String(describing: exchange.usage)), expected \(String(describing: stream.usage))")
            if let usage = exchange.usage {
                try require(usage.totalTokens == usage.inputTokens + usage.outputTokens, "total tokens \(usage)")
                try require(PayloadJSON.parse(usage.mlflowJSON)?["total_tokens"]?.int == usage.totalTokens, usage.mlflowJSON)
            }
            try checkOutputs(exchange, context)
            // The text is also where the API's own shape puts it. (Not read with JSONSerialization: it drops
            // U+FEFF inside strings.)
            let output = PayloadJSON.parse(exchange.outputJSON ?? "") ?? .null
            let held = stream.textIn(output)
            try require(held == stream.text, "output JSON holds \(String(reflecting: held)) (\(Array(held.unicodeScalars).map { String($0.value, radix: 16) })), expected \(String(reflecting: stream.text)) (\(Array(stream.text.unicodeScalars).map { String($0.value, radix: 16) })): \(exchange.outputJSON ?? "nil")")
        }
    }

    func testMutatedChatPayloadsNeverCrashAndGiveValidJSONWhateverTheSplit() {
        Fuzz.check { rng in
            let (path, request, original, streamed) = ChatStreamGen.sample(&rng)
            let body = Mutate.apply(original, &rng)
            let requestBody = rng.chance(0.1) ? Mutate.apply(Array(request.utf8), &rng) : Array(request.utf8)
            let truncated = rng.chance(0.3)
            let contentType = rng.pick(["text/event-stream", "application/json", nil, "text/plain"])
            let result = ChatPayloadInterpreter.interpret(path: path, requestBody: requestBody, responseBody: body,
                                                          responseContentType: contentType, responseTruncated: truncated)
            let context = "\(path) \(String(describing: contentType)) truncated \(truncated) streamed \(streamed)\nbody \(Gen.show(body))"
            if let result {
                try checkOutputs(result, context)
                try require(result.warnings.count <= StreamNotes.maxWarnings, "\(result.warnings.count) warnings")
                if let usage = result.usage {
                    try require(StrictJSON.isValid(usage.mlflowJSON), "usage JSON \(usage.mlflowJSON)")
                }
            }
            // Streams: the accumulator fed in random chunks agrees with one whole reading.
            if let recognized = ChatPayloadInterpreter.recognizeRequest(path: path, requestBody: requestBody) {
                let whole = ChatPayloadInterpreter.interpret(request: recognized, responseBody: body,
                                                             responseContentType: "text/event-stream", responseTruncated: truncated)
                var accumulator = StreamingChatAccumulator(request: recognized)
                for range in Gen.ranges(Gen.splits(&rng, count: body.count), count: body.count) {
                    accumulator.feed(body[range])
                }
                let chunked = accumulator.finish(truncated: truncated)
                try require(chunked == whole, "chunked reading differs:\n\(String(describing: chunked))\nwhole:\n\(String(describing: whole))\n\(context)")
            }
        }
    }

    private func checkOutputs(_ exchange: ChatExchange, _ context: String) throws {
        for (name, json) in [("outputJSON", exchange.outputJSON), ("openAIShapedOutput", exchange.openAIShapedOutput)] {
            guard let json else { continue }
            try require(StrictJSON.isValid(json), "\(name) is not valid JSON: \(json)\n\(context)")
            try require(PayloadJSON.parse(json)?.isObject == true, "\(name) is not an object: \(json)")
        }
    }
}

// MARK: - Running properties

struct PropertyFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw PropertyFailure(message()) }
}

/// The fixtures' SplitMix64: small, fast, and the same sequence on every platform.
typealias FuzzRandom = SeededGenerator

extension SeededGenerator {
    init(seed: UInt64) { self.init(state: seed) }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func chance(_ probability: Double) -> Bool { Double.random(in: 0..<1, using: &self) < probability }
    mutating func pick<T>(_ items: [T]) -> T { items[Int.random(in: 0..<items.count, using: &self)] }
}

enum Fuzz {
    /// The time budget per test; set explicitly, it also lifts the case caps.
    static var seconds: Double { explicitSeconds ?? 2 }

    static var explicitSeconds: Double? {
        ProcessInfo.processInfo.environment["TRACEGATE_FUZZ_SECONDS"].flatMap(Double.init)
    }

    static var baseSeed: UInt64 {
        guard let text = ProcessInfo.processInfo.environment["TRACEGATE_FUZZ_SEED"] else { return 0x7472_6163_6567_6174 }
        return text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) ?? 0 : UInt64(text) ?? 0
    }

    /// The seed of case `n`: case 0 uses the base seed itself, so a reported seed replays as the first case.
    static func seed(base: UInt64, case n: Int) -> UInt64 {
        if n == 0 { return base }
        var mixer = FuzzRandom(seed: base &+ UInt64(n))
        return mixer.next()
    }

    /// Runs `property` on cases until the time budget or `maxCases` is spent (at least `minCases`);
    /// stops at the first failing case and reports its seed.
    static func check(_ name: String = #function, minCases: Int = 10, maxCases: Int = 5_000,
                      file: StaticString = #filePath, line: UInt = #line,
                      _ property: (inout FuzzRandom) throws -> Void) {
        let base = baseSeed
        let budget = seconds
        let maxCases = explicitSeconds == nil ? maxCases : Int.max
        print("\(name): base seed 0x\(String(base, radix: 16)) (TRACEGATE_FUZZ_SEED), budget \(budget)s")
        let start = Date()
        var cases = 0
        while cases < maxCases, cases < minCases || Date().timeIntervalSince(start) < budget {
            let seed = Self.seed(base: base, case: cases)
            var rng = FuzzRandom(seed: seed)
            do {
                try property(&rng)
            } catch {
                XCTFail("\(name): case \(cases) failed; replay with TRACEGATE_FUZZ_SEED=0x\(String(seed, radix: 16))\n\(error)",
                        file: file, line: line)
                return
            }
            cases += 1
        }
        print("\(name): \(cases) cases passed in \(String(format: "%.2f", Date().timeIntervalSince(start)))s")
    }
}

// MARK: - Generators

enum Gen {
    /// Sorted split points in 0...count (a few, or many small chunks).
    static func splits(_ rng: inout FuzzRandom, count: Int) -> [Int] {
        guard count > 0 else { return [] }
        let n = rng.chance(0.2) ? rng.int(0...min(count, 400)) : rng.int(0...6)
        return (0..<n).map { _ in rng.int(0...count) }.sorted()
    }

    static func ranges(_ splits: [Int], count: Int) -> [Range<Int>] {
        var start = 0
        var out: [Range<Int>] = []
        for split in splits + [count] {
            out.append(start..<split)
            start = split
        }
        return out
    }

    /// Pieces of text that stress encoders and decoders.
    static let fragments: [String] = [
        "a", "Hello", " ", "world", ",", ":", "data: ", "event:", "[DONE]", "\"", "\\", "\\u0041", "/", "{", "}",
        "é", "日本語", "🎉", "👩‍👩‍👧", "e\u{301}", "\u{0}", "\u{1F}", "\u{7F}", "\u{85}", "\u{2028}", "\t", "\n", "\r\n", "\r", "",
        "\u{FEFF}", "\u{FFFD}", "𝄞", "ÿ",
    ]

    static func text(_ rng: inout FuzzRandom, maxPieces: Int = 6) -> String {
        (0..<rng.int(0...maxPieces)).map { _ in rng.pick(fragments) }.joined()
    }

    static func show(_ bytes: [UInt8]) -> String {
        let head = bytes.prefix(3000)
        let text = String(decoding: head, as: UTF8.self)
        return String(reflecting: text) + (bytes.count > head.count ? "… (\(bytes.count) bytes)" : "")
    }
}

/// Random `text/event-stream` bodies: every kind of line, every line end, odd bytes in values.
enum SSEGen {
    static func stream(_ rng: inout FuzzRandom) -> [UInt8] {
        var out: [UInt8] = []
        if rng.chance(0.1) { out += [0xEF, 0xBB, 0xBF] }
        if rng.chance(0.05) { out += [0xEF, 0xBB] } // a BOM's first bytes that are not one
        for _ in 0..<rng.int(0...30) {
            out += line(&rng)
            out += rng.pick([[0x0A], [0x0D], [0x0D, 0x0A]])
        }
        if rng.chance(0.3) { out += line(&rng) } // an unterminated last line
        return out
    }

    static func line(_ rng: inout FuzzRandom) -> [UInt8] {
        let colon = rng.pick([":", ": ", ":  ", ""])
        switch rng.int(0...11) {
        case 0...3: return Array("data".utf8) + (rng.chance(0.9) ? Array(colon.utf8) + value(&rng) : [])
        case 4: return Array("event".utf8) + Array(colon.utf8) + value(&rng)
        case 5: return Array("id".utf8) + Array(colon.utf8) + value(&rng) + (rng.chance(0.2) ? [0] : [])
        case 6: return Array("retry".utf8) + Array(colon.utf8) + Array(rng.pick(["3000", "0", "12a", "", "99999999999999999999999"]).utf8)
        case 7: return [UInt8(ascii: ":")] + value(&rng)
        case 8, 9: return [] // a blank line: dispatch
        case 10: return Array(rng.pick(["Data", "data ", " data", "dat", "ev", "x-custom"]).utf8) + Array(colon.utf8) + value(&rng)
        default: return value(&rng) // random bytes as a field name
        }
    }

    /// A value: text, invalid UTF-8 and NUL, never a line end.
    static func value(_ rng: inout FuzzRandom) -> [UInt8] {
        var bytes = Array(Gen.text(&rng).utf8).filter { $0 != 0x0A && $0 != 0x0D }
        if rng.chance(0.15) {
            bytes.insert(rng.pick([0xFF, 0xC3, 0x80, 0xE2, 0xF0, 0x00]), at: rng.int(0...bytes.count))
        }
        return bytes
    }
}

struct SSERun: Equatable, CustomStringConvertible {
    var events: [SSEEvent] = []
    var retry: Int?
    var lastEventID = ""
    var oversized = 0
    var dispatched = 0
    var discardedPartial = false

    init(_ body: [UInt8], maxEventSize: Int, splits: [Int]) {
        var parser = SSEParser(maxEventSize: maxEventSize)
        for range in Gen.ranges(splits, count: body.count) { events += parser.feed(body[range]) }
        retry = parser.retry
        lastEventID = parser.lastEventID
        discardedPartial = parser.finish()
        oversized = parser.oversizedEvents
        dispatched = parser.dispatchedEvents
    }

    var description: String {
        "events \(events) retry \(String(describing: retry)) lastEventID \(lastEventID.debugDescription) oversized \(oversized) dispatched \(dispatched) partial \(discardedPartial)"
    }
}

/// The WHATWG event-stream interpretation written as plainly as possible over the whole input.
enum ReferenceSSE {
    static func parse(_ input: [UInt8]) -> (events: [SSEEvent], retry: Int?, pending: Bool) {
        var bytes = input[...]
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes = bytes.dropFirst(3) }
        // Lines: CRLF, LF or CR ends a line; a last line without an end is not a line.
        var lines: [[UInt8]] = []
        var current: [UInt8] = []
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == 0x0D || byte == 0x0A {
                lines.append(current)
                current = []
                if byte == 0x0D, index + 1 < bytes.endIndex, bytes[index + 1] == 0x0A { index += 1 }
            } else {
                current.append(byte)
            }
            index += 1
        }
        let unterminated = !current.isEmpty || (input.count > 0 && input.count < 3 && [0xEF, 0xBB, 0xBF].starts(with: input))

        var events: [SSEEvent] = []
        var data: [UInt8] = []
        var type: [UInt8] = []
        var idBuffer: [UInt8] = []
        var lastEventID: [UInt8] = []
        var retry: Int?
        for line in lines {
            if line.isEmpty {
                lastEventID = idBuffer
                if !data.isEmpty {
                    data.removeLast() // the LF after the last data line
                    events.append(SSEEvent(event: type.isEmpty ? nil : String(decoding: type, as: UTF8.self),
                                           data: String(decoding: data, as: UTF8.self),
                                           id: lastEventID.isEmpty ? nil : String(decoding: lastEventID, as: UTF8.self)))
                }
                data = []
                type = []
                continue
            }
            if line.first == UInt8(ascii: ":") { continue }
            var name = line[...]
            var value: ArraySlice<UInt8> = []
            if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                name = line[..<colon]
                value = line[(colon + 1)...]
                if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
            }
            switch String(decoding: name, as: UTF8.self) {
            case "data":
                data += value
                data.append(0x0A)
            case "event":
                type = Array(value)
            case "id":
                if !value.contains(0) { idBuffer = Array(value) }
            case "retry":
                if !value.isEmpty, value.allSatisfy({ (0x30...0x39).contains($0) }) {
                    retry = Int(String(decoding: value, as: UTF8.self)) ?? retry
                }
            default:
                break
            }
        }
        return (events, retry, unterminated || !data.isEmpty || !type.isEmpty)
    }
}

/// Random JSON documents written by hand (not by the code under test): odd whitespace, escapes of
/// every kind, surrogate pairs, numbers in every form.
enum JSONGen {
    static func document(_ rng: inout FuzzRandom) -> String {
        space(&rng) + value(&rng, depth: 0) + space(&rng)
    }

    static func value(_ rng: inout FuzzRandom, depth: Int) -> String {
        switch rng.int(0...(depth > 4 ? 3 : 5)) {
        case 0: return rng.pick(["true", "false", "null"])
        case 1: return number(&rng)
        case 2, 3: return string(rng.chance(0.3) ? Gen.text(&rng) : rng.pick(["id", "choices", "content", "usage", "x"]), &rng)
        case 4: return object(&rng, depth: depth)
        default:
            let items = (0..<rng.int(0...4)).map { _ in space(&rng) + value(&rng, depth: depth + 1) + space(&rng) }
            return "[" + items.joined(separator: ",") + "]"
        }
    }

    static func object(_ rng: inout FuzzRandom, depth: Int) -> String {
        let members = (0..<rng.int(0...4)).map { _ in
            space(&rng) + string(rng.chance(0.2) ? Gen.text(&rng) : rng.pick(["a", "type", "text", "delta", "index"]), &rng)
                + space(&rng) + ":" + space(&rng) + value(&rng, depth: depth + 1) + space(&rng)
        }
        return "{" + members.joined(separator: ",") + "}"
    }

    static func space(_ rng: inout FuzzRandom) -> String {
        rng.chance(0.7) ? "" : (0..<rng.int(1...3)).map { _ in rng.pick([" ", "\t", "\n", "\r"]) }.joined()
    }

    static func number(_ rng: inout FuzzRandom) -> String {
        rng.pick(["0", "-0", "1", "42", "-17", "0.5", "-0.0", "1e5", "1E+2", "2.5e-3", "123456789012345678901234567890",
                  "9223372036854775807", "-9223372036854775808", "1e400", String(rng.int(0...1_000_000))])
    }

    /// A JSON string literal: each scalar raw or escaped (\uXXXX, surrogate pairs for astral ones).
    static func string(_ text: String, _ rng: inout FuzzRandom) -> String {
        var out = "\""
        let escapeAll = rng.chance(0.2)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += rng.chance(0.5) ? "\\n" : "\\u000a"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "/" where rng.chance(0.5): out += "\\/"
            default:
                if scalar.value < 0x20 || escapeAll || (scalar.value > 0x7E && rng.chance(0.3)) {
                    if scalar.value > 0xFFFF {
                        let v = scalar.value - 0x10000
                        out += String(format: "\\u%04x\\u%04X", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
                    } else {
                        out += String(format: "\\u%04x", scalar.value)
                    }
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

/// Mutations of valid input: what a broken upstream, a cut connection or a hostile peer produces.
enum Mutate {
    static func apply(_ original: [UInt8], _ rng: inout FuzzRandom) -> [UInt8] {
        var bytes = original
        for _ in 0..<rng.int(1...4) {
            switch rng.int(0...10) {
            case 0 where !bytes.isEmpty: // a bit flip
                bytes[rng.int(0...bytes.count - 1)] ^= UInt8(1) << UInt8(rng.int(0...7))
            case 1: // truncation
                bytes = Array(bytes.prefix(rng.int(0...bytes.count)))
            case 2, 3: // a line duplicated, dropped or swapped
                var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
                guard !lines.isEmpty else { break }
                let i = rng.int(0...lines.count - 1), j = rng.int(0...lines.count - 1)
                switch rng.int(0...2) {
                case 0: lines.insert(lines[i], at: j)
                case 1: lines.remove(at: i)
                default: lines.swapAt(i, j)
                }
                bytes = Array(lines.joined(separator: [0x0A]))
            case 4: // odd bytes inserted
                let junk: [UInt8] = (0..<rng.int(1...4)).map { _ in rng.pick([0x00, 0xFF, 0xC3, 0x80, 0x0D, 0x0A, 0x22, 0x5C, 0x7B, 0x5D, 0x30]) }
                bytes.insert(contentsOf: junk, at: rng.int(0...bytes.count))
            case 5: // a number made huge or odd
                guard let digit = bytes.indices.filter({ (0x30...0x39).contains(bytes[$0]) }).randomElement(using: &rng) else { break }
                let huge = rng.pick(["9223372036854775807", "-9223372036854775808", "99999999999999999999", "1e400", "-0", "01", "1.5"])
                bytes.replaceSubrange(digit...digit, with: Array(huge.utf8))
            case 6: // a range deleted
                guard !bytes.isEmpty else { break }
                let a = rng.int(0...bytes.count - 1)
                bytes.removeSubrange(a..<min(bytes.count, a + rng.int(1...40)))
            case 7 where rng.chance(0.1): // a huge field, over the SSE parser's 1 MiB event limit
                let field = Array("data: ".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: rng.int(1 << 20 ... (1 << 20) + 5000)) + [0x0A]
                bytes.insert(contentsOf: field, at: rng.int(0...bytes.count))
            case 8: // a string value lengthened with escapes and odd characters
                guard let quote = bytes.indices.filter({ bytes[$0] == 0x22 }).randomElement(using: &rng) else { break }
                bytes.insert(contentsOf: Array(rng.pick(["\\n", "\\ud83d", "\\udc00", "\\u0000", "é", "\\\"", "\\x"]).utf8), at: quote + 1)
            case 9: // a chunk of the body repeated
                guard !bytes.isEmpty else { break }
                let a = rng.int(0...bytes.count - 1)
                let piece = bytes[a..<min(bytes.count, a + rng.int(1...200))]
                bytes.insert(contentsOf: piece, at: rng.int(0...bytes.count))
            default: // CRLF or CR line ends
                bytes = Array(String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\n", with: rng.pick(["\r\n", "\r"])).utf8)
            }
        }
        return bytes
    }
}

/// Valid chat streams of the three APIs, built from random text deltas (and tool-call argument fragments).
struct ChatStreamGen {
    typealias F = ChatFixtures

    var api: String
    var path: String
    var request: String
    var body: [UInt8]
    var text: String
    var toolArguments: [String]
    var usage: TokenUsage?
    /// Where the API's own output shape holds the assistant's text.
    var textIn: (PayloadJSON) -> String

    static func stream(_ rng: inout FuzzRandom) -> ChatStreamGen {
        let deltas = (0..<rng.int(0...12)).map { _ in Gen.text(&rng, maxPieces: rng.chance(0.1) ? 60 : 3) }
        let lineEnd = rng.pick(["\n", "\r\n", "\r"])
        let usage = rng.chance(0.8) ? TokenUsage(inputTokens: rng.int(0...1_000_000_000), outputTokens: rng.int(0...1_000_000_000)) : nil
        func s(_ text: String) -> String { JSONGen.string(text, &rng) }
        func sse(_ events: [(String?, String)]) -> [UInt8] {
            Array(events.map { name, data in (name.map { "event: \($0)\(lineEnd)" } ?? "") + "data: \(data)\(lineEnd)\(lineEnd)" }.joined().utf8)
        }
        switch rng.int(0...2) {
        case 0:
            // Tool-call arguments: a JSON text cut into fragments anywhere between characters.
            var fragments: [String] = []
            if rng.chance(0.4) {
                let arguments = Array("{\"q\":" + s(Gen.text(&rng)) + "}")
                var start = 0
                for cut in (0..<rng.int(0...5)).map({ _ in rng.int(0...arguments.count) }).sorted() + [arguments.count] {
                    fragments.append(String(arguments[start..<cut]))
                    start = cut
                }
            }
            let head = #"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":"#
            var events: [(String?, String)] = [(nil, head + #"[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#)]
            events += deltas.map { (nil, head + #"[{"index":0,"delta":{"content":"# + s($0) + #"},"finish_reason":null}]}"#) }
            if !fragments.isEmpty {
                events.append((nil, head + #"[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}"#))
                events += fragments.map { (nil, head + #"[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"# + s($0) + "}}]},\"finish_reason\":null}]}") }
            }
            events.append((nil, head + #"[{"index":0,"delta":{},"finish_reason":"stop"}]}"#))
            if let usage {
                events.append((nil, head + #"[],"usage":{"prompt_tokens":\#(usage.inputTokens),"completion_tokens":\#(usage.outputTokens),"total_tokens":\#(usage.totalTokens)}}"#))
            }
            events.append((nil, "[DONE]"))
            return ChatStreamGen(api: "chat", path: F.chatPath, request: F.chatStreamRequest, body: sse(events), text: deltas.joined(),
                                 toolArguments: fragments.isEmpty ? [] : [fragments.joined()], usage: usage) { output in
                output["choices"]?[0]?["message"]?["content"]?.string ?? ""
            }
        case 1:
            let text = deltas.joined()
            var events: [(String?, String)] = [
                ("response.created", #"{"type":"response.created","response":{"id":"resp_1","object":"response","status":"in_progress","model":"m","output":[]}}"#),
                ("response.output_item.added", #"{"type":"response.output_item.added","output_index":0,"item":{"id":"msg_1","type":"message","role":"assistant","content":[]}}"#),
                ("response.content_part.added", #"{"type":"response.content_part.added","item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":""}}"#),
            ]
            events += deltas.map { ("response.output_text.delta", #"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"# + s($0) + "}") }
            if rng.chance(0.5) {
                events.append(("response.output_text.done", #"{"type":"response.output_text.done","item_id":"msg_1","output_index":0,"content_index":0,"text":"# + s(text) + "}"))
            }
            // The final event carries the whole output, or (as some servers send it) none.
            let output = rng.chance(0.5) ? #"[{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"output_text","text":"# + s(text) + "}]}]" : "[]"
            let usageJSON = usage.map { #","usage":{"input_tokens":\#($0.inputTokens),"output_tokens":\#($0.outputTokens),"total_tokens":\#($0.totalTokens)}"# } ?? ""
            events.append(("response.completed", #"{"type":"response.completed","response":{"id":"resp_1","object":"response","status":"completed","model":"m","output":"# + output + usageJSON + "}}"))
            return ChatStreamGen(api: "responses", path: F.responsesPath, request: F.responsesStringRequest, body: sse(events), text: text,
                                 toolArguments: [], usage: usage) { output in
                (output["output"]?.array ?? []).flatMap { $0["content"]?.array ?? [] }.compactMap { $0["text"]?.string }.joined()
            }
        default:
            let fragments = rng.chance(0.4) ? [#"{"loc"#, #"ation": "#, s(Gen.text(&rng)), "}"] : []
            var events: [(String?, String)] = [
                ("message_start", #"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"usage":{"input_tokens":\#(usage?.inputTokens ?? 0),"output_tokens":1}}}"#),
                ("content_block_start", #"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
                ("ping", #"{"type":"ping"}"#),
            ]
            events += deltas.map { ("content_block_delta", #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"# + s($0) + "}}") }
            events.append(("content_block_stop", #"{"type":"content_block_stop","index":0}"#))
            if !fragments.isEmpty {
                events.append(("content_block_start", #"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}"#))
                events += fragments.map { ("content_block_delta", #"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"# + s($0) + "}}") }
                events.append(("content_block_stop", #"{"type":"content_block_stop","index":1}"#))
            }
            events.append(("message_delta", #"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":\#(usage?.outputTokens ?? 1)}}"#))
            events.append(("message_stop", #"{"type":"message_stop"}"#))
            // Anthropic always reports usage (message_start); the arguments are the input re-serialized.
            let arguments = fragments.isEmpty ? [] : [PayloadJSON.parse(fragments.joined())?.serialized ?? "unparsable"]
            return ChatStreamGen(api: "anthropic", path: F.anthropicPath, request: F.anthropicRequest, body: sse(events),
                                 text: deltas.joined(), toolArguments: arguments,
                                 usage: TokenUsage(inputTokens: usage?.inputTokens ?? 0, outputTokens: usage?.outputTokens ?? 1)) { output in
                (output["content"]?.array ?? []).filter { $0["type"]?.string == "text" }.compactMap { $0["text"]?.string }.joined()
            }
        }
    }

    /// A chat exchange to mutate: a fixture or a generated stream, or a fixture's non-streamed JSON.
    static func sample(_ rng: inout FuzzRandom) -> (path: String, request: String, body: [UInt8], streamed: Bool) {
        switch rng.int(0...6) {
        case 0: return (F.chatPath, F.chatStreamRequest, Array(F.chatStream.utf8), true)
        case 1: return (F.chatPath, F.chatStreamRequest, Array(F.chatToolCallStream.utf8), true)
        case 2: return (F.responsesPath, F.responsesStringRequest, Array(F.responsesStream.utf8), true)
        case 3: return (F.anthropicPath, F.anthropicRequest, Array(F.anthropicStream.utf8), true)
        case 4:
            return rng.pick([(F.chatPath, F.chatRequest, Array(F.chatCompletion.utf8), false),
                             (F.chatPath, F.chatRequest, Array(F.chatCompletionWithToolCalls.utf8), false),
                             (F.responsesPath, F.responsesRequest, Array(F.responsesResponse.utf8), false),
                             (F.anthropicPath, F.anthropicRequest, Array(F.anthropicMessage.utf8), false)])
        default:
            let generated = stream(&rng)
            return (generated.path, generated.request, generated.body, true)
        }
    }
}

/// A strict RFC 8259 grammar check, independent of `PayloadJSON`: what any JSON reader (MLflow's
/// Python `json.loads`, the UI's `JSON.parse`) accepts.
enum StrictJSON {
    static func isValid(_ text: String) -> Bool {
        var validator = Validator(bytes: Array(text.utf8))
        return validator.document()
    }

    private struct Validator {
        let bytes: [UInt8]
        var i = 0
        var depth = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        var current: UInt8? { i < bytes.count ? bytes[i] : nil }

        mutating func document() -> Bool {
            space()
            guard value() else { return false }
            space()
            return i == bytes.count
        }

        mutating func space() {
            while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { i += 1 }
        }

        mutating func value() -> Bool {
            switch current {
            case UInt8(ascii: "{")?: return container(close: UInt8(ascii: "}"), member: true)
            case UInt8(ascii: "[")?: return container(close: UInt8(ascii: "]"), member: false)
            case UInt8(ascii: "\"")?: return string()
            case UInt8(ascii: "t")?: return literal("true")
            case UInt8(ascii: "f")?: return literal("false")
            case UInt8(ascii: "n")?: return literal("null")
            case let byte? where byte == UInt8(ascii: "-") || (0x30...0x39).contains(byte): return number()
            default: return false
            }
        }

        mutating func container(close: UInt8, member: Bool) -> Bool {
            depth += 1
            defer { depth -= 1 }
            guard depth < 1000 else { return false }
            i += 1
            space()
            if current == close {
                i += 1
                return true
            }
            while true {
                space()
                if member {
                    guard current == UInt8(ascii: "\""), string() else { return false }
                    space()
                    guard current == UInt8(ascii: ":") else { return false }
                    i += 1
                    space()
                }
                guard value() else { return false }
                space()
                if current == UInt8(ascii: ",") {
                    i += 1
                } else if current == close {
                    i += 1
                    return true
                } else {
                    return false
                }
            }
        }

        mutating func literal(_ word: String) -> Bool {
            let expected = Array(word.utf8)
            guard bytes.count - i >= expected.count, Array(bytes[i..<(i + expected.count)]) == expected else { return false }
            i += expected.count
            return true
        }

        mutating func digits() -> Int {
            let start = i
            while let byte = current, (0x30...0x39).contains(byte) { i += 1 }
            return i - start
        }

        mutating func number() -> Bool {
            if current == UInt8(ascii: "-") { i += 1 }
            if current == UInt8(ascii: "0") {
                i += 1
            } else if let byte = current, (0x31...0x39).contains(byte) {
                _ = digits()
            } else {
                return false
            }
            if current == UInt8(ascii: ".") {
                i += 1
                guard digits() > 0 else { return false }
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                i += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { i += 1 }
                guard digits() > 0 else { return false }
            }
            return true
        }

        mutating func string() -> Bool {
            i += 1
            while let byte = current {
                i += 1
                switch byte {
                case UInt8(ascii: "\""): return true
                case 0..<0x20: return false
                case UInt8(ascii: "\\"):
                    guard let escaped = current else { return false }
                    i += 1
                    if escaped == UInt8(ascii: "u") {
                        for _ in 0..<4 {
                            guard let hex = current, (0x30...0x39).contains(hex) || (0x41...0x46).contains(hex) || (0x61...0x66).contains(hex)
                            else { return false }
                            i += 1
                        }
                    } else if !Array(#""\/bfnrt"#.utf8).contains(escaped) {
                        return false
                    }
                default: continue
                }
            }
            return false
        }
    }
}
