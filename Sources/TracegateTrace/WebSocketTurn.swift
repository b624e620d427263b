/// One conversation turn of a WebSocket connection, as `WebSocketTurnTracker` cut it: the client
/// messages that opened it and the server messages that answered, with when each arrived.
public struct WebSocketTurn: Sendable, Equatable {
    /// How the turn ended.
    public enum Ending: Sendable, Equatable {
        /// The client sent its next message (generic protocols).
        case nextClientMessage
        /// The protocol's end-of-response event (`response.done`, `response.completed`…).
        case endOfResponse(String)
        /// The connection closed after a close frame (RFC 6455 §5.5.1); code and reason of the first one.
        case closed(code: UInt16?, reason: String)
        /// The connection ended without a close handshake: why.
        case cut(String)
        /// Generic protocols: nothing passed either way for `WebSocketTurnTracker.quietNanos` after
        /// the server had answered, so the answer is taken as complete.
        case quiet
    }

    /// 1 for the connection's first turn.
    public var number: Int
    public var protocolKind: WebSocketChatProtocol
    public var clientMessages: [WebSocketTurnMessage] = []
    public var serverMessages: [WebSocketTurnMessage] = []
    /// Recognised protocols: the session's settings as they stood when the turn opened (the last
    /// `session.update` and `session.created`/`updated` of earlier turns), which still apply to it.
    public var context: [WebSocketTurnMessage] = []
    /// Generic protocols, the connection's first turn: what the server sent before the client's
    /// first message (a welcome, the chat's opening question), which the client's message answers.
    public var greeting: [WebSocketTurnMessage] = []
    /// Every data message of the greeting, kept or not.
    public var greetingMessageCount = 0
    /// Every data message of the turn, kept or not.
    public var clientMessageCount = 0
    public var serverMessageCount = 0
    /// Since the tunnel opened: the turn's first message, its end, and the first server message that answered.
    public var startNanos: Int64
    public var endNanos: Int64
    public var firstServerMessageNanos: Int64?
    /// Recognised protocols: when the response was asked for (`response.create`), and its first text or audio delta.
    public var responseRequestedNanos: Int64?
    public var firstDeltaNanos: Int64?
    public var ending: Ending = .nextClientMessage
    /// Recognised protocols: a response had started and had not ended when the turn did.
    public var responsePending = false
    /// Bytes of messages kept so far, each way (held against the capture cap).
    public internal(set) var keptClientBytes = 0
    public internal(set) var keptServerBytes = 0
    /// Part of a message was not kept: the turn's capture cap was reached.
    public var truncated = false
    /// What degraded the turn's record (a malformed frame, a message that could not be inflated).
    public var notes: [String] = []
    /// Server messages that came after turn `continues` was traced for a quiet server (generic
    /// protocols): the rest of that turn's answer, opened by no client message.
    public var continues: Int?

    public init(number: Int, protocolKind: WebSocketChatProtocol, startNanos: Int64) {
        self.number = number
        self.protocolKind = protocolKind
        self.startNanos = startNanos
        self.endNanos = startNanos
    }

    /// Bytes the kept messages, context and greeting hold (what the capture budget is charged),
    /// kept up to date as messages are added: a turn may have thousands of them.
    public var storage = 0

    /// Lets go of every message text the turn holds (sizes, counts and times stay), with `note`
    /// saying why: memory or the capture budget was short.
    public mutating func dropTexts(because note: String) {
        for index in clientMessages.indices { clientMessages[index].data = [] }
        for index in serverMessages.indices { serverMessages[index].data = [] }
        for index in greeting.indices { greeting[index].data = [] }
        context = []
        storage = 0
        truncated = true
        if !notes.contains(note) { notes.append(note) }
    }

    /// Whether the turn ends in error: cut off mid-response, closed with an error code, or a failed response.
    public var failure: (type: String, message: String)? {
        switch ending {
        case .endOfResponse(let type) where type == "response.failed":
            return ("ResponseFailed", "the response failed (\(type))")
        case .endOfResponse(let type) where type == "error":
            return ("ResponseFailed", "the server answered with an error event")
        case .endOfResponse, .nextClientMessage, .quiet:
            return nil
        case .closed(let code, let reason):
            if responsePending { return ("ConnectionClosed", "the connection closed before the response ended") }
            guard let code, ![1000, 1001].contains(code) else { return nil }
            return ("ConnectionClosed", "the connection closed with code \(code)" + (reason.isEmpty ? "" : ": \(reason)"))
        case .cut(let why):
            return ("ConnectionClosed", why)
        }
    }
}

/// A data message of a turn.
public struct WebSocketTurnMessage: Sendable, Equatable {
    public var fromClient: Bool
    public var isText: Bool
    /// What was kept: the message as the application reads it (inflated when it was compressed), at
    /// most the turn's capture cap; empty when it was left out (audio) or could not be read.
    public var data: [UInt8]
    /// The whole message's length: inflated, or as sent when it could not be inflated.
    public var length: Int
    /// Compressed (`permessage-deflate`) and not inflated: `data` is empty.
    public var compressedNotInflated = false
    /// Left out of the trace on purpose (audio, whose size alone is recorded).
    public var omitted = false
    /// Since the tunnel opened.
    public var atNanos: Int64
    /// The top-level `"type"` of a JSON message, read from its start.
    public var eventType: String?

    public var isTruncated: Bool { data.count < length && !compressedNotInflated && !omitted }

    public init(
        fromClient: Bool, isText: Bool, data: [UInt8], length: Int? = nil, atNanos: Int64 = 0, eventType: String? = nil,
        compressedNotInflated: Bool = false, omitted: Bool = false
    ) {
        self.fromClient = fromClient
        self.isText = isText
        self.data = data
        self.length = length ?? data.count
        self.atNanos = atNanos
        self.eventType = eventType
        self.compressedNotInflated = compressedNotInflated
        self.omitted = omitted
    }
}

/// The chat protocol spoken over a WebSocket, as far as turns and traces are concerned.
public enum WebSocketChatProtocol: String, Sendable, Equatable {
    /// Any JSON or text protocol: each client message opens a turn.
    case generic
    /// OpenAI's event protocols, Realtime and the Responses API over WebSocket: a turn lasts from the
    /// client's first event to the end of the response (`response.done`, `response.completed`…).
    case openAIEvents = "openai-events"
}
