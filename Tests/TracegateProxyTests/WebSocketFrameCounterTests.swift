import NIOCore
import XCTest

@testable import TracegateProxy

/// Frames counted from their headers, whatever the chunks the bytes arrive in.
final class WebSocketFrameCounterTests: XCTestCase {
    /// A frame's bytes, masked when `masked` (as a client's are).
    private func frame(_ opcode: UInt8, payloadLength: Int, fin: Bool = true, masked: Bool) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payloadLength < 126 {
            bytes.append(maskBit | UInt8(payloadLength))
        } else if payloadLength < 65536 {
            bytes += [maskBit | 126, UInt8(payloadLength >> 8), UInt8(payloadLength & 0xFF)]
        } else {
            bytes.append(maskBit | 127)
            bytes += (0..<8).reversed().map { UInt8((payloadLength >> ($0 * 8)) & 0xFF) }
        }
        if masked { bytes += [1, 2, 3, 4] }
        return bytes + [UInt8](repeating: 0x61, count: payloadLength)
    }

    func testEveryLengthFormCountsOnceWholeOrSplitAtAnyByte() {
        for masked in [false, true] {
            let stream =
                frame(0x1, payloadLength: 0, masked: masked) + frame(0x2, payloadLength: 125, masked: masked)
                + frame(0x1, payloadLength: 126, fin: false, masked: masked) + frame(0x0, payloadLength: 70_000, masked: masked)
                + frame(0x9, payloadLength: 3, masked: masked) + frame(0x8, payloadLength: 2, masked: masked)
            var whole = WebSocketFrameCounter()
            whole.count(ByteBuffer(bytes: stream))
            XCTAssertEqual(whole.frames, 6)
            for split in stride(from: 0, through: stream.count, by: 97) + [1, 2, 3, 130, stream.count - 1] {
                var counter = WebSocketFrameCounter()
                counter.count(ByteBuffer(bytes: stream[..<split]))
                counter.count(ByteBuffer(bytes: stream[split...]))
                XCTAssertEqual(counter.frames, 6, "split at \(split), masked \(masked)")
            }
            var byteByByte = WebSocketFrameCounter()
            for byte in stream.prefix(400) { byteByByte.count(ByteBuffer(bytes: [byte])) }
            XCTAssertEqual(byteByByte.frames, 4, "a frame counts once its header is read: three frames and the fourth one's header")
        }
    }
}
