import XCTest

@testable import TracegateTrace

/// Frames as RFC 6455 §5.7 spells them out, fed whole and split at every byte.
final class WebSocketFrameParserTests: XCTestCase {
    /// A frame's bytes: `mask` (4 bytes) masks the payload, as a client must.
    static func frame(
        _ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false, mask: [UInt8]? = nil
    ) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode]
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        if payload.count < 126 {
            bytes.append(maskBit | UInt8(payload.count))
        } else if payload.count < 65536 {
            bytes += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            bytes.append(maskBit | 127)
            bytes += (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        if let mask {
            bytes += mask
            bytes += payload.enumerated().map { $0.element ^ mask[$0.offset & 3] }
        } else {
            bytes += payload
        }
        return bytes
    }

    private let key: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]

    func testTheRFCsExamplesParseWholeAndSplitAtEveryByte() {
        // §5.7: an unmasked "Hello" from a server, the masked one from a client.
        let unmasked: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]
        let masked: [UInt8] = [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
        for (bytes, fromClient) in [(unmasked, false), (masked, true)] {
            for split in 0...bytes.count {
                var parser = WebSocketFrameParser(fromClient: fromClient)
                let frames = parser.feed(bytes[..<split]) + parser.feed(bytes[split...])
                XCTAssertEqual(frames, [WebSocketFrame(fin: true, opcode: .text, payload: Array("Hello".utf8))], "split at \(split)")
            }
        }
    }

    func testLengthsOf16And64BitsAndEveryByteFedAlone() {
        for size in [125, 126, 65535, 65536, 70000] {
            let payload = (0..<size).map { UInt8($0 % 251) }
            let bytes = Self.frame(0x2, payload, mask: key)
            var parser = WebSocketFrameParser(fromClient: true)
            var frames: [WebSocketFrame] = []
            for byte in bytes { frames += parser.feed([byte]) }
            XCTAssertEqual(frames, [WebSocketFrame(fin: true, opcode: .binary, payload: payload)], "\(size) bytes")
        }
    }

    /// Payloads are unmasked eight bytes at a time: every length around a word, split at every
    /// offset (so chunks start at each of the key's four bytes), against the byte-wise XOR of §5.3.
    func testMaskedPayloadsSplitAnywhereUnmaskLikeTheByteWiseXOR() {
        for size in 0...40 {
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let bytes = Self.frame(0x2, payload, mask: key)
            for first in 0...bytes.count {
                for second in first...min(bytes.count, first + 9) {
                    var parser = WebSocketFrameParser(fromClient: true)
                    let frames = parser.feed(bytes[..<first]) + parser.feed(bytes[first..<second]) + parser.feed(bytes[second...])
                    XCTAssertEqual(frames, [WebSocketFrame(fin: true, opcode: .binary, payload: payload)], "\(size) bytes split at \(first), \(second)")
                }
            }
        }
    }

    func testControlFramesBetweenFragmentsAndSeveralFramesInOneChunk() {
        let bytes =
            Self.frame(0x1, Array("Hel".utf8), fin: false) + Self.frame(0x9, Array("ping".utf8))
            + Self.frame(0x0, Array("lo".utf8)) + Self.frame(0x8, [0x03, 0xE8] + Array("bye".utf8))
        var parser = WebSocketFrameParser(fromClient: false)
        var assembler = WebSocketMessageAssembler()
        let events = parser.feed(bytes).compactMap { assembler.take($0) }
        XCTAssertEqual(
            events,
            [
                .ping(Array("ping".utf8)),
                .message(WebSocketMessage(isText: true, data: Array("Hello".utf8), frames: 2)),
                .close(code: 1000, reason: "bye"),
            ])
    }

    func testAPayloadBeyondTheBoundIsCountedNotKept() {
        var parser = WebSocketFrameParser(fromClient: true, maxKeptPayload: 10)
        let payload = Array(repeating: UInt8(ascii: "a"), count: 1000)
        let frames = parser.feed(Self.frame(0x1, payload, mask: key) + Self.frame(0x1, Array("next".utf8), mask: key))
        XCTAssertEqual(frames.count, 2, "the frame after a long one is read in step")
        XCTAssertEqual(frames[0].payload, Array(repeating: UInt8(ascii: "a"), count: 10))
        XCTAssertEqual(frames[0].length, 1000)
        XCTAssertTrue(frames[0].isTruncated)
        XCTAssertEqual(frames[1].payload, Array("next".utf8))

        var assembler = WebSocketMessageAssembler(maxKeptBytes: 6)
        let message = [
            WebSocketFrame(fin: false, opcode: .text, payload: Array("abcd".utf8)),
            WebSocketFrame(fin: true, opcode: .continuation, payload: Array("efgh".utf8)),
        ].compactMap { assembler.take($0) }
        XCTAssertEqual(message, [.message(WebSocketMessage(isText: true, data: Array("abcdef".utf8), length: 8, frames: 2))])
    }

    func testACompressedMessageIsMarkedOnItsFirstFrame() {
        var parser = WebSocketFrameParser(fromClient: false)
        var assembler = WebSocketMessageAssembler()
        let events = parser.feed(Self.frame(0x1, [0xF2, 0x48, 0x05, 0x00], fin: false, rsv1: true) + Self.frame(0x0, [0x00]))
            .compactMap { assembler.take($0) }
        guard case .message(let message) = events.first else { return XCTFail("\(events)") }
        XCTAssertTrue(message.isCompressed)
        XCTAssertEqual(message.data, [0xF2, 0x48, 0x05, 0x00, 0x00])
    }

    func testMalformedFramesStopTheParser() {
        let cases: [([UInt8], Bool, WebSocketFrameParser.Failure)] = [
            ([0x83, 0x00], false, .reservedOpcode(0x3)),
            ([0x81, 0x05] + Array("Hello".utf8), true, .wrongMasking),  // a client frame without a mask
            ([0x81, 0x85] + key + [0, 0, 0, 0, 0], false, .wrongMasking),  // a server frame with one
            ([0x09, 0x00], false, .invalidControlFrame),  // a fragmented ping
            ([0x89, 0x7E, 0x00, 0x80] + Array(repeating: 0, count: 128), false, .invalidControlFrame),
            ([0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1], false, .invalidLength),
        ]
        for (bytes, fromClient, failure) in cases {
            var parser = WebSocketFrameParser(fromClient: fromClient)
            XCTAssertEqual(parser.feed(bytes), [], "\(bytes.prefix(4))")
            XCTAssertEqual(parser.failure, failure)
            XCTAssertEqual(parser.feed(Self.frame(0x1, [1])), [], "nothing more is read after a failure")
        }
    }

    func testFramesOutOfOrderLoseOneMessageNotTheStream() {
        var assembler = WebSocketMessageAssembler()
        XCTAssertNil(assembler.take(WebSocketFrame(fin: true, opcode: .continuation, payload: [1])))
        XCTAssertNil(assembler.take(WebSocketFrame(fin: false, opcode: .text, payload: Array("lost".utf8))))
        XCTAssertEqual(
            assembler.take(WebSocketFrame(fin: true, opcode: .text, payload: Array("kept".utf8))),
            .message(WebSocketMessage(isText: true, data: Array("kept".utf8))))
        XCTAssertEqual(assembler.outOfOrderFrames, 2)
        XCTAssertEqual(assembler.take(WebSocketFrame(fin: true, opcode: .close, payload: [])), .close(code: nil, reason: ""))
    }
}
