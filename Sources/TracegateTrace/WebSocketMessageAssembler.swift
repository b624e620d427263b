/// What one direction of a WebSocket connection said, message by message: data frames joined across
/// fragments (§5.4), control frames as they come (they may arrive between fragments).
public enum WebSocketEvent: Sendable, Equatable {
    case message(WebSocketMessage)
    case ping([UInt8])
    case pong([UInt8])
    /// A close frame: its status code and reason, when it has them (§5.5.1).
    case close(code: UInt16?, reason: String)
}

/// A whole data message.
public struct WebSocketMessage: Sendable, Equatable {
    public var isText: Bool
    /// The payload as sent (still compressed when `isCompressed`), at most the assembler's
    /// `maxKeptBytes` of it.
    public var data: [UInt8]
    /// The whole payload's length, kept or not.
    public var length: Int
    /// Sent with `permessage-deflate` (RSV1 on its first frame).
    public var isCompressed: Bool
    public var frames: Int

    public var isTruncated: Bool { data.count < length }

    public init(isText: Bool, data: [UInt8], length: Int? = nil, isCompressed: Bool = false, frames: Int = 1) {
        self.isText = isText
        self.data = data
        self.length = length ?? data.count
        self.isCompressed = isCompressed
        self.frames = frames
    }
}

/// Joins frames into messages. A frame out of order (a continuation with no message started, a new
/// message before the last one ended) is a protocol error the peer will act on: the assembler drops
/// what it was building and starts over, so the trace loses one message, not the connection.
public struct WebSocketMessageAssembler: Sendable {
    /// Lowered to 0 when memory is short: messages are still joined, their data not kept.
    public var maxKeptBytes: Int
    private var building: WebSocketMessage?

    /// Lets go of what was kept of the message being joined; none of the rest of it is kept.
    public mutating func dropKept() {
        guard building != nil, building!.length > 0 else { return }
        building!.data = []
    }

    /// Bytes kept of the message being joined.
    public var heldBytes: Int { building?.data.capacity ?? 0 }
    /// No fragmented message is being joined.
    public var isBetweenMessages: Bool { building == nil }
    /// Frames that did not fit the message sequence (counted, dropped).
    public private(set) var outOfOrderFrames = 0

    public init(maxKeptBytes: Int = 1 << 20) { self.maxKeptBytes = maxKeptBytes }

    /// The event `frame` completes, if any.
    public mutating func take(_ frame: WebSocketFrame) -> WebSocketEvent? {
        switch frame.opcode {
        case .ping: return .ping(frame.payload)
        case .pong: return .pong(frame.payload)
        case .close:
            guard frame.payload.count >= 2 else { return .close(code: nil, reason: "") }
            let code = UInt16(frame.payload[0]) << 8 | UInt16(frame.payload[1])
            return .close(code: code, reason: String(decoding: frame.payload[2...], as: UTF8.self))
        case .text, .binary:
            if building != nil { outOfOrderFrames += 1 }
            building = WebSocketMessage(
                isText: frame.opcode == .text, data: [], length: 0, isCompressed: frame.rsv1, frames: 0)
            return append(frame)
        case .continuation:
            guard building != nil else {
                outOfOrderFrames += 1
                return nil
            }
            return append(frame)
        }
    }

    private mutating func append(_ frame: WebSocketFrame) -> WebSocketEvent? {
        guard var message = building else { return nil }
        building = nil  // `message` is changed in place, not copied
        // Once part of the message is missing, nothing after it is kept: the data stays one prefix.
        let room = message.isTruncated ? 0 : max(0, maxKeptBytes - message.data.count)
        if message.data.isEmpty && frame.payload.count <= room {
            message.data = frame.payload  // a message's first frame: its payload is the data, not copied
        } else {
            message.data += frame.payload.prefix(room)
        }
        message.length += frame.length
        message.frames += 1
        guard frame.fin else {
            building = message
            return nil
        }
        return .message(message)
    }
}
