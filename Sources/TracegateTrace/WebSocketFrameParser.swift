/// One RFC 6455 frame (§5.2), its payload unmasked.
public struct WebSocketFrame: Sendable, Equatable {
    public var fin: Bool
    /// RSV1: on the first frame of a message, the message is compressed (`permessage-deflate`, RFC 7692).
    public var rsv1: Bool
    public var opcode: WebSocketOpcode
    /// The payload as sent, unmasked; at most `maxKeptPayload` bytes of it.
    public var payload: [UInt8]
    /// The payload's whole length, kept or not.
    public var length: Int

    public var isTruncated: Bool { payload.count < length }

    public init(fin: Bool, rsv1: Bool = false, opcode: WebSocketOpcode, payload: [UInt8], length: Int? = nil) {
        self.fin = fin
        self.rsv1 = rsv1
        self.opcode = opcode
        self.payload = payload
        self.length = length ?? payload.count
    }
}

/// RFC 6455 §5.2 opcodes; the reserved ones are malformed.
public enum WebSocketOpcode: UInt8, Sendable {
    case continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA

    public var isControl: Bool { rawValue & 0x8 != 0 }
}

/// Reads the frames of one direction of a WebSocket connection from its bytes, in chunks split
/// anywhere (a tunnel's bytes as they pass). Off the forwarding path: a frame that breaks RFC 6455
/// stops the parser (`failure`) and degrades only the trace; nothing it reads is ever written back.
///
/// Memory is bounded: at most `maxKeptPayload` bytes of each frame's payload are kept (the rest is
/// counted in `length`), and a frame header is at most 14 bytes.
public struct WebSocketFrameParser: Sendable {
    public enum Failure: Error, Sendable, Equatable {
        case reservedOpcode(UInt8)
        /// A control frame longer than 125 bytes, or fragmented (§5.5).
        case invalidControlFrame
        /// A client frame without a mask, or a server frame with one (§5.1).
        case wrongMasking
        /// A 64-bit length with its top bit set (§5.2).
        case invalidLength
    }

    private enum State: Sendable {
        case header
        /// Reading a payload: `remaining` bytes of it still to come.
        /// `mask`: the masking key (a client frame), its first byte lowest, else nil.
        case payload(WebSocketFrame, remaining: Int, mask: UInt32?, offset: Int)
        case failed(Failure)
    }

    /// Client frames are masked and server frames are not (§5.1).
    public let fromClient: Bool
    /// Lowered to 0 when memory is short: frames are still read, their payloads not kept.
    public var maxKeptPayload: Int
    private var state: State = .header
    private var header: [UInt8] = []

    public init(fromClient: Bool, maxKeptPayload: Int = 1 << 20) {
        self.fromClient = fromClient
        self.maxKeptPayload = maxKeptPayload
    }

    /// Bytes of payload kept for the frame being read.
    public var heldBytes: Int {
        if case .payload(let frame, _, _, _) = state { return frame.payload.capacity }
        return 0
    }

    /// Not in the middle of a frame (or stopped for good: nothing more will be read).
    public var isBetweenFrames: Bool {
        switch state {
        case .header: return header.isEmpty
        case .payload: return false
        case .failed: return true
        }
    }

    /// Lets go of what was kept of the frame being read; none of the rest of it is kept.
    public mutating func dropKept() {
        guard case .payload(var frame, let remaining, let mask, let offset) = state, offset > 0 else { return }
        frame.payload = []
        state = .payload(frame, remaining: remaining, mask: mask, offset: offset)
    }

    /// Why the parser stopped, if it did.
    public var failure: Failure? {
        if case .failed(let failure) = state { return failure }
        return nil
    }

    /// The frames completed by `bytes`.
    public mutating func feed(_ bytes: some Collection<UInt8>) -> [WebSocketFrame] {
        Array(bytes).withUnsafeBytes { feed($0) }
    }

    /// The frames completed by `bytes`: the forwarding path's form (no generic iteration per byte).
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) -> [WebSocketFrame] {
        var frames: [WebSocketFrame] = []
        var index = 0
        let end = bytes.count
        while index < end {
            switch state {
            case .failed:
                return frames
            case .header:
                header.append(bytes[index])
                index += 1
                switch readHeader() {
                case .needMore:
                    continue
                case .failed(let failure):
                    state = .failed(failure)
                    header = []
                    return frames
                case .frame(let frame, let remaining, let mask):
                    header.removeAll(keepingCapacity: true)
                    if remaining == 0 {
                        frames.append(frame)
                    } else {
                        state = .payload(frame, remaining: remaining, mask: mask, offset: 0)
                    }
                }
            case .payload(var frame, let remaining, let mask, let offset):
                state = .header  // `frame` is changed in place, not copied
                let count = min(remaining, end - index)
                // Only a prefix is kept: once a byte was not kept (`maxKeptPayload` lowered), none after it is.
                let room = frame.payload.count == offset ? min(count, max(0, maxKeptPayload - frame.payload.count)) : 0
                if room > 0 {
                    let chunk = UnsafeRawBufferPointer(rebasing: bytes[index..<(index + room)])
                    frame.payload.append(contentsOf: chunk)
                    if let mask { Self.unmask(&frame.payload, from: frame.payload.count - room, key: mask, keyOffset: offset) }
                }
                index += count
                if remaining == count {
                    frames.append(frame)
                } else {
                    state = .payload(frame, remaining: remaining - count, mask: mask, offset: offset + count)
                }
            }
        }
        return frames
    }

    /// XORs `payload[from...]` with the masking key (§5.3), whose byte `keyOffset % 4` comes first:
    /// eight bytes at a time.
    static func unmask(_ payload: inout [UInt8], from start: Int, key: UInt32, keyOffset: Int) {
        // The key as it lines up with `payload[start]`, repeated to eight bytes, first byte lowest.
        let shift = UInt32((keyOffset & 3) * 8)
        let rotated = shift == 0 ? key : (key >> shift) | (key << (32 - shift))
        let word = UInt64(rotated) | UInt64(rotated) << 32
        payload.withUnsafeMutableBytes { bytes in
            var index = start
            while bytes.count - index >= 8 {
                let value = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self))
                bytes.storeBytes(of: (value ^ word).littleEndian, toByteOffset: index, as: UInt64.self)
                index += 8
            }
            var keyByte = 0
            while index < bytes.count {
                bytes[index] ^= UInt8(truncatingIfNeeded: word >> UInt64(keyByte * 8))
                index += 1
                keyByte += 1
            }
        }
    }

    private enum HeaderRead {
        case needMore
        case failed(Failure)
        case frame(WebSocketFrame, remaining: Int, mask: UInt32?)
    }

    /// The frame `header` starts, once all of its header is there.
    private func readHeader() -> HeaderRead {
        guard header.count >= 2 else { return .needMore }
        let first = header[0]
        let second = header[1]
        guard let opcode = WebSocketOpcode(rawValue: first & 0x0F) else { return .failed(.reservedOpcode(first & 0x0F)) }
        let fin = first & 0x80 != 0
        let masked = second & 0x80 != 0
        guard masked == fromClient else { return .failed(.wrongMasking) }
        let shortLength = Int(second & 0x7F)
        let lengthBytes = shortLength == 126 ? 2 : shortLength == 127 ? 8 : 0
        let headerLength = 2 + lengthBytes + (masked ? 4 : 0)
        guard header.count >= headerLength else { return .needMore }
        var length = shortLength
        if lengthBytes > 0 {
            if lengthBytes == 8 && header[2] & 0x80 != 0 { return .failed(.invalidLength) }
            length = header[2..<(2 + lengthBytes)].reduce(0) { $0 << 8 | Int($1) }
        }
        if opcode.isControl && (length > 125 || !fin) { return .failed(.invalidControlFrame) }
        let mask = masked ? header[(2 + lengthBytes)..<headerLength].reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) } : nil
        let frame = WebSocketFrame(fin: fin, rsv1: first & 0x40 != 0, opcode: opcode, payload: [], length: length)
        return .frame(frame, remaining: length, mask: mask)
    }
}
