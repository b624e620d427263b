/// Cuts a WebSocket connection into conversation turns from its bytes as they pass, both ways.
/// Reads frames (RFC 6455), joins messages, inflates `permessage-deflate` ones (RFC 7692), and
/// hands back each turn as it ends. Never changes what it reads; a frame that breaks the protocol
/// stops the tracing of its direction, not the connection.
///
/// Turns: in a generic protocol each client message opens a turn and the server messages until the
/// next one are its output. Once OpenAI's event protocol is recognised (Realtime, Responses over
/// WebSocket), a turn runs from the client's first event to the end-of-response event.
///
/// Memory per connection is bounded by `keptBytes`: at most that much of a frame being read and of
/// a message being joined, each way, plus that much of each direction of the open turn in at most
/// `maxMessagesKept` messages, and of the greeting until the first turn is traced (all of it
/// `heldBytes`, which the caller can charge to a budget and `shed` when it is spent), plus a 32 KiB
/// inflation window each way once a compressed message was read.
public struct WebSocketTurnTracker: Sendable {
    /// Bytes of each direction of a turn kept for its trace (the capture cap).
    public let keptBytes: Int
    /// A message inflating to more than this stops inflation for its direction (a decompression bomb).
    public let maxInflatedBytes: Int
    public private(set) var protocolKind: WebSocketChatProtocol = .generic
    /// Frames read each way, data and control.
    public private(set) var clientFrames = 0
    public private(set) var serverFrames = 0

    private var clientParser: WebSocketFrameParser
    private var serverParser: WebSocketFrameParser
    private var clientAssembler: WebSocketMessageAssembler
    private var serverAssembler: WebSocketMessageAssembler
    /// Present while compressed messages of that direction can be inflated.
    private var clientInflater: PermessageDeflateInflater?
    private var serverInflater: PermessageDeflateInflater?
    private var turn: WebSocketTurn?
    private var turnsOpened = 0
    /// The first close frame, from either side.
    private var closeFrame: (code: UInt16?, reason: String)?
    /// The session's settings so far (recognised protocols): the last client `session.update` and
    /// the last server `session.created`/`session.updated`, each at most `keptBytes`.
    private var sessionSettings: [WebSocketTurnMessage] = []
    /// Notes for the turn that is open or opens next.
    private var pendingNotes: [String] = []
    /// `shed` lowered what the parsers and assemblers keep: raised again before the next bytes.
    private var shedding = false
    /// Generic protocols: the server's messages before the client's first one, for the first turn.
    private var greeting: [WebSocketTurnMessage] = []
    private var greetingMessageCount = 0
    /// Bytes of the greeting kept (against the capture cap), and the memory they hold.
    private var greetingBytes = 0
    private var greetingStorage = 0
    /// The turn last traced for a quiet server, while the client has not spoken since: further
    /// server messages continue its answer (in a turn of their own).
    private var answerContinuesOf: Int?

    /// Socket.IO over Engine.IO: control packets (pings, pongs, connects) are no messages, and an
    /// event's packet prefix (`42`, a namespace, an ack id) is left out of what is kept.
    public let speaksSocketIO: Bool
    /// Engine.IO 3 (Socket.IO 2 clients): a binary attachment starts with the message packet type, 4.
    let engineIOv3: Bool

    /// `compressed`: the upstream's 101 accepted `permessage-deflate`. `target`: the upgrade
    /// request's target (`/socket.io/?EIO=4&transport=websocket` speaks Socket.IO).
    public init(compressed: Bool, target: String = "", keptBytes: Int = 64 * 1024, maxInflatedBytes: Int = 16 << 20) {
        let query = Self.queryItems(of: target)
        speaksSocketIO = query.contains { $0.hasPrefix("EIO=") }
        engineIOv3 = speaksSocketIO && query.contains("EIO=3")
        self.keptBytes = keptBytes
        self.maxInflatedBytes = max(maxInflatedBytes, keptBytes)
        clientParser = WebSocketFrameParser(fromClient: true, maxKeptPayload: keptBytes)
        serverParser = WebSocketFrameParser(fromClient: false, maxKeptPayload: keptBytes)
        clientAssembler = WebSocketMessageAssembler(maxKeptBytes: keptBytes)
        serverAssembler = WebSocketMessageAssembler(maxKeptBytes: keptBytes)
        if compressed {
            clientInflater = PermessageDeflateInflater()
            serverInflater = PermessageDeflateInflater()
        }
    }

    /// Whether a 101's `Sec-WebSocket-Extensions` value accepted `permessage-deflate`.
    public static func negotiatesCompression(_ extensions: String?) -> Bool {
        guard let extensions else { return false }
        return extensions.split(separator: ",").contains { offer in
            ASCIIText.lowercased(offer.prefix { $0 != ";" }.trimmingSpaces) == "permessage-deflate"
        }
    }

    /// Bytes of message data held: frames being read, messages being joined, the open turn, the
    /// greeting and the session settings (not the inflation windows).
    public private(set) var heldBytes = 0

    /// `heldBytes` and `quietDeadlineNanos` are measured as each call that changes them returns:
    /// stored figures, which the tap reads on every read without copying the tracker.
    private mutating func refreshFigures() {
        heldBytes = measuredHeldBytes
        quietDeadlineNanos = measuredQuietDeadline
    }

    private var measuredHeldBytes: Int {
        clientParser.heldBytes + serverParser.heldBytes + clientAssembler.heldBytes + serverAssembler.heldBytes + (turn?.storage ?? 0)
            + sessionSettings.reduce(0) { $0 + $1.data.capacity } + greetingStorage
    }

    /// Memory is short: drops every message text held, including what was kept of the frames and
    /// messages being read, none of whose rest is kept (they are still read, counted and timed).
    /// What comes next is kept again, to be charged, and shed again if memory is still short.
    public mutating func shed() {
        defer { refreshFigures() }
        clientParser.maxKeptPayload = 0
        serverParser.maxKeptPayload = 0
        clientAssembler.maxKeptBytes = 0
        serverAssembler.maxKeptBytes = 0
        clientParser.dropKept()
        serverParser.dropKept()
        clientAssembler.dropKept()
        serverAssembler.dropKept()
        sessionSettings = []
        if !greeting.isEmpty {
            for index in greeting.indices { greeting[index].data = [] }
            greetingStorage = 0
            if !pendingNotes.contains(Self.greetingShedNote) { pendingNotes.append(Self.greetingShedNote) }
        }
        shedding = true
        turn?.dropTexts(because: Self.shedNote)
    }

    static let shedNote = "capture_memory_limit was reached: message texts of this turn were not kept"
    static let greetingShedNote = "capture_memory_limit was reached: the greeting's texts were not kept"

    /// Reads `bytes` sent by the client (or the server) `atNanos` after the tunnel opened; returns
    /// the turns they ended.
    public mutating func feed(_ bytes: some Collection<UInt8>, fromClient: Bool, atNanos: Int64) -> [WebSocketTurn] {
        Array(bytes).withUnsafeBytes { feed($0, fromClient: fromClient, atNanos: atNanos) }
    }

    /// `feed` as the forwarding path calls it, on the bytes where they are.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, fromClient: Bool, atNanos: Int64) -> [WebSocketTurn] {
        defer { refreshFigures() }
        if shedding {
            shedding = false
            clientParser.maxKeptPayload = keptBytes
            serverParser.maxKeptPayload = keptBytes
            clientAssembler.maxKeptBytes = keptBytes
            serverAssembler.maxKeptBytes = keptBytes
        }
        let frames: [WebSocketFrame]
        if fromClient {
            let failedBefore = clientParser.failure != nil
            frames = clientParser.feed(bytes)
            clientFrames += frames.count
            if !failedBefore, let failure = clientParser.failure { note("client frames break RFC 6455 (\(failure)); the client's later messages are not traced") }
        } else {
            let failedBefore = serverParser.failure != nil
            frames = serverParser.feed(bytes)
            serverFrames += frames.count
            if !failedBefore, let failure = serverParser.failure { note("server frames break RFC 6455 (\(failure)); the server's later messages are not traced") }
        }
        var ended: [WebSocketTurn] = []
        for frame in frames {
            let event = fromClient ? clientAssembler.take(frame) : serverAssembler.take(frame)
            switch event {
            case .message(let message)?:
                guard let read = read(message, fromClient: fromClient, atNanos: atNanos) else { continue }
                if let turn = take(read.message, opensTurn: read.opensTurn) { ended.append(turn) }
            case .close(let code, let reason)?:
                if closeFrame == nil { closeFrame = (code, reason) }
            case .ping?, .pong?, nil:
                break
            }
        }
        return ended
    }

    /// How long no message may pass either way after the server answered before a generic
    /// protocol's turn is traced without waiting for the client's next message (which may never
    /// come while the user reads the answer, or leaves the page open). Long enough for a model's
    /// pause before its first token after a status message, or between tool calls.
    public static let quietNanos: Int64 = 10_000_000_000

    /// When the open turn is complete if nothing passes before: the time of its last message plus
    /// `quietNanos`. Nil unless it is a generic protocol's turn that a client message opened and
    /// the server began to answer, and no frame or message is half read either way. (The rest of
    /// an answer after a quiet end, in a turn of its own, ends only at the client's next message or
    /// the close: a server that pushes forever makes one such turn, not one per burst.)
    public private(set) var quietDeadlineNanos: Int64?

    private var measuredQuietDeadline: Int64? {
        guard protocolKind == .generic, let answered = turn?.serverMessageCount, answered > 0, turn?.continues == nil,
            let end = turn?.endNanos, clientParser.isBetweenFrames, serverParser.isBetweenFrames, clientAssembler.isBetweenMessages,
            serverAssembler.isBetweenMessages
        else { return nil }
        return end + Self.quietNanos
    }

    /// The open turn, if `quietDeadlineNanos` has passed at `atNanos`: its answer is taken as complete.
    public mutating func endQuietTurn(atNanos: Int64) -> WebSocketTurn? {
        defer { refreshFigures() }
        guard let deadline = quietDeadlineNanos, atNanos >= deadline, var open = turn.take() else { return nil }
        open.ending = .quiet
        answerContinuesOf = open.number
        return open
    }

    /// The connection ended `atNanos` after the tunnel opened: the open turn, if it is one to trace.
    /// `why`: what cut it, when no close handshake did.
    public mutating func finish(atNanos: Int64, why: String = "the connection closed without a close handshake") -> WebSocketTurn? {
        defer { refreshFigures() }
        (greeting, greetingStorage) = ([], 0)  // a greeting no client message answered is no turn
        guard var open = turn.take() else { return nil }
        // A recognised protocol's server-only messages between responses (`rate_limits.updated`) are no turn.
        if open.clientMessageCount == 0 && !open.responsePending && open.continues == nil { return nil }
        open.endNanos = max(open.endNanos, atNanos)
        open.ending = closeFrame.map { .closed(code: $0.code, reason: $0.reason) } ?? .cut(why)
        return open
    }

    // MARK: Messages

    /// The message as the trace keeps it: inflated if it can be, at most the room left in the turn;
    /// nil for a Socket.IO control packet or an application heartbeat. What kind of message it is
    /// (its event type, a Socket.IO packet, a heartbeat) is read from its start before it is cut to
    /// the room left. `opensTurn` is false for what a Socket.IO client sends as part of the turn
    /// open: an ack answering the server, a binary event's attachment.
    private mutating func read(_ message: WebSocketMessage, fromClient: Bool, atNanos: Int64) -> (message: WebSocketTurnMessage, opensTurn: Bool)? {
        let kept = fromClient ? turn?.keptClientBytes ?? 0 : turn?.keptServerBytes ?? (turnsOpened == 0 ? greetingBytes : 0)
        let roomInTurn = max(0, keptBytes - kept)
        // A client message opens a new turn in a generic protocol: the whole cap is its own.
        var room = fromClient && protocolKind == .generic ? keptBytes : roomInTurn
        var data = message.data
        var length = message.length
        var notInflated = false
        if message.isCompressed {
            if let inflated = inflate(message, fromClient: fromClient, keep: max(room, Self.classifiedBytes)) {
                (data, length) = inflated
            } else {
                data = []
                notInflated = true
            }
        }
        var type: String?
        var opensTurn = true
        if speaksSocketIO && message.isText && !notInflated {
            let payload: ArraySlice<UInt8>
            switch Self.socketIOPacket(data) {
            case .control: return nil
            case .event(let event): payload = event
            case .ack(let ack): (payload, opensTurn, room) = (ack, false, roomInTurn)
            }
            length -= data.count - payload.count
            data = Array(payload.prefix(room))
        } else if message.isText {
            type = Self.eventType(data)
        } else if speaksSocketIO {
            (opensTurn, room) = (false, roomInTurn)
            if engineIOv3 && !notInflated && data.first == 4 {
                data = Array(data.dropFirst().prefix(room))  // one copy, already cut to the room left
                length -= 1
            }
        }
        var read = WebSocketTurnMessage(
            fromClient: fromClient, isText: message.isText, data: data, length: length, atNanos: atNanos, eventType: type,
            compressedNotInflated: notInflated)
        // An application-level heartbeat is no message (it would split a turn otherwise), told
        // before the message is cut to the room left.
        if protocolKind == .generic && Self.isHeartbeat(read) { return nil }
        if read.data.count > room { read.data = Array(read.data.prefix(room)) }
        return (read, opensTurn)
    }

    /// Bytes of a message's start kept long enough to tell what it is, whatever room the turn has left.
    static let classifiedBytes = 1024

    private mutating func inflate(_ message: WebSocketMessage, fromClient: Bool, keep: Int) -> (data: [UInt8], length: Int)? {
        let side = fromClient ? "client" : "server"
        // Taken out while it works, so that its window is changed in place rather than copied.
        var taken: PermessageDeflateInflater?
        if fromClient { swap(&taken, &clientInflater) } else { swap(&taken, &serverInflater) }
        guard var inflater = taken else { return nil }
        taken = nil
        let failure: String
        if message.isTruncated {
            // The rest of the stream refers back to what was not kept: no later message can be read.
            failure = "a compressed \(side) message of \(message.length) bytes was not kept whole (capture_max_body_bytes or capture_memory_limit)"
        } else {
            // At most 64 bytes out per compressed byte (text compresses 3 to 10 times): a bomb costs
            // the forwarding thread no more than a plain message of that ratio would.
            let maxOutput = min(maxInflatedBytes, message.data.count * 64 + 65536)
            do {
                let result = try inflater.inflate(message: message.data, keep: keep, maxOutput: maxOutput)
                if fromClient { clientInflater = inflater } else { serverInflater = inflater }
                return (result.kept, result.length)
            } catch .outputLimit {
                failure = "a compressed \(side) message inflated to more than \(maxOutput) bytes"
            } catch {
                failure = "a compressed \(side) message could not be inflated (\(error))"
            }
        }
        note(failure + "; the \(side)'s later compressed messages are recorded by size only")
        return nil
    }

    // MARK: Turns

    /// Adds a message to the turns; returns the turn it ended. `opensTurn`: a generic protocol's
    /// client message opens a new turn (unless it only continues the one open).
    private mutating func take(_ message: WebSocketTurnMessage, opensTurn: Bool) -> WebSocketTurn? {
        if protocolKind == .generic, let type = message.eventType, Self.announcesOpenAIEvents(type, fromClient: message.fromClient) {
            protocolKind = .openAIEvents
            turn?.protocolKind = .openAIEvents
        }
        var message = message
        if protocolKind == .openAIEvents, let type = message.eventType, Self.isAudio(type) {
            message.omitted = true
            message.data = []
        }
        var ended: WebSocketTurn?
        switch (protocolKind, message.fromClient) {
        case (.generic, true):
            guard opensTurn || turn == nil else { break }
            if turn != nil {
                turn!.ending = .nextClientMessage
                ended = turn.take()
            }
            answerContinuesOf = nil
            open(at: message.atNanos)
        case (.generic, false):
            if turn == nil {
                // Server messages before the client's first one answer nothing: the first turn
                // keeps them as its greeting.
                if turnsOpened == 0 {
                    keepAsGreeting(message)
                    return nil
                }
                guard let continued = answerContinuesOf else { return nil }
                open(at: message.atNanos)
                turn!.continues = continued
            }
        case (.openAIEvents, _):
            if turn == nil { open(at: message.atNanos) }
        }
        append(message)
        if protocolKind == .openAIEvents, let type = message.eventType, Self.isSessionSettings(type) {
            sessionSettings.removeAll { $0.fromClient == message.fromClient }
            sessionSettings.append(message)
        }
        if protocolKind == .openAIEvents, let type = message.eventType {
            ended = respond(to: type, fromClient: message.fromClient, atNanos: message.atNanos) ?? ended
        }
        return ended
    }

    private mutating func open(at nanos: Int64) {
        turnsOpened += 1
        turn = WebSocketTurn(number: turnsOpened, protocolKind: protocolKind, startNanos: nanos)
        turn!.notes = pendingNotes
        turn!.context = sessionSettings
        turn!.storage = sessionSettings.reduce(0) { $0 + $1.data.capacity }
        pendingNotes = []
        if turnsOpened == 1 && greetingMessageCount > 0 {
            if protocolKind == .generic {
                turn!.greeting = greeting
                turn!.greetingMessageCount = greetingMessageCount
                turn!.storage += greetingStorage
                if greeting.contains(where: \.isTruncated) || greeting.count < greetingMessageCount { turn!.truncated = true }
            }
            greeting = []
            (greetingBytes, greetingStorage) = (0, 0)
        }
    }

    /// A server message before the client's first: kept within the capture cap and `maxMessagesKept`.
    private mutating func keepAsGreeting(_ message: WebSocketTurnMessage) {
        greetingMessageCount += 1
        guard greeting.count < Self.maxMessagesKept else { return }
        greetingBytes += message.data.count
        greetingStorage += message.data.capacity
        greeting.append(message)
    }

    private mutating func append(_ message: WebSocketTurnMessage) {
        guard turn != nil else { return }
        Self.append(message, to: &turn!)  // changed where it is: a copy would retain all it holds
    }

    private static func append(_ message: WebSocketTurnMessage, to open: inout WebSocketTurn) {
        if message.isTruncated { open.truncated = true }
        let kept: Bool
        if message.fromClient {
            // A server-opened turn (Realtime voice) starts when the client first speaks in it.
            if open.clientMessageCount == 0 && open.serverMessageCount > 0 && open.continues == nil { open.startNanos = message.atNanos }
            open.clientMessageCount += 1
            kept = open.clientMessages.count < Self.maxMessagesKept
            if kept {
                open.keptClientBytes += message.data.count
                open.clientMessages.append(message)
            }
        } else {
            open.serverMessageCount += 1
            if open.firstServerMessageNanos == nil && open.clientMessageCount > 0 { open.firstServerMessageNanos = message.atNanos }
            kept = open.serverMessages.count < Self.maxMessagesKept || Self.endOfResponseEvents.contains(message.eventType ?? "")
            if kept {
                open.keptServerBytes += message.data.count
                open.serverMessages.append(message)
            }
        }
        if kept {
            open.storage += message.data.capacity
        } else {
            let note = message.fromClient ? Self.clientMessagesNotKept : Self.serverMessagesNotKept
            if !open.notes.contains(note) {
                open.notes.append(note)
                open.truncated = true
            }
        }
        open.endNanos = max(open.endNanos, message.atNanos)
    }

    /// Messages of each direction a turn keeps (the rest are counted and timed): a server that
    /// pushes forever, or a client streaming audio, holds no more than this until the turn ends.
    static let maxMessagesKept = 1000
    static let clientMessagesNotKept = "more than \(maxMessagesKept) client messages: the later ones are counted, not kept"
    static let serverMessagesNotKept = "more than \(maxMessagesKept) server messages: the later ones are counted, not kept"

    /// OpenAI events: a requested or started response, its first delta, and its end, which ends the turn.
    private mutating func respond(to type: String, fromClient: Bool, atNanos: Int64) -> WebSocketTurn? {
        guard turn != nil else { return nil }
        if fromClient {
            if type == "response.create" {
                turn!.responsePending = true
                if turn!.responseRequestedNanos == nil { turn!.responseRequestedNanos = atNanos }
            }
            return nil
        }
        if type == "response.created" { turn!.responsePending = true }
        if turn!.firstDeltaNanos == nil, Self.isOutputDelta(type) { turn!.firstDeltaNanos = atNanos }
        let ends =
            Self.endOfResponseEvents.contains(type)
            // An error answering `response.create` before any response started ends that request.
            || (type == "error" && turn!.responsePending && !turn!.serverMessages.contains { $0.eventType == "response.created" })
        guard ends else { return nil }
        turn!.ending = .endOfResponse(type)
        turn!.responsePending = false
        return turn.take()
    }

    private mutating func note(_ text: String) {
        if turn != nil { turn!.notes.append(text) } else { pendingNotes.append(text) }
    }

    // MARK: Socket.IO

    private static func queryItems(of target: String) -> [Substring] {
        guard let query = target.split(separator: "?", maxSplits: 1).dropFirst().first else { return [] }
        return query.split(separator: "&")
    }

    /// An Engine.IO text packet as the conversation sees it.
    enum SocketIOPacket: Equatable {
        /// Open, ping, pong, connect, disconnect…: no message.
        case control
        /// A Socket.IO event's JSON (`42["chat",{…}]` → `["chat",{…}]`, namespace and ack id
        /// dropped), or a plain Engine.IO message's text.
        case event(ArraySlice<UInt8>)
        /// An ack's JSON: the answer to an event the other side emitted.
        case ack(ArraySlice<UInt8>)
    }

    static func socketIOPacket(_ data: [UInt8]) -> SocketIOPacket {
        guard data.first == UInt8(ascii: "4") else { return .control }
        var rest = data[1...]
        guard let kind = rest.first, kind >= UInt8(ascii: "0") && kind <= UInt8(ascii: "9") else { return .event(rest) }
        // 2 event, 3 ack, 5 binary event, 6 binary ack; 0 connect, 1 disconnect, 4 connect error are control.
        let isBinary = kind == UInt8(ascii: "5") || kind == UInt8(ascii: "6")
        let isAck = kind == UInt8(ascii: "3") || kind == UInt8(ascii: "6")
        guard isBinary || isAck || kind == UInt8(ascii: "2") else { return .control }
        rest = rest.dropFirst()
        if isBinary, let dash = rest.firstIndex(of: UInt8(ascii: "-")) { rest = rest[(dash + 1)...] }
        if rest.first == UInt8(ascii: "/"), let comma = rest.firstIndex(of: UInt8(ascii: ",")) { rest = rest[(comma + 1)...] }
        while let digit = rest.first, digit >= UInt8(ascii: "0") && digit <= UInt8(ascii: "9") { rest = rest.dropFirst() }
        return isAck ? .ack(rest) : .event(rest)
    }

    // MARK: Event types

    static let endOfResponseEvents: Set<String> = ["response.done", "response.completed", "response.failed", "response.incomplete"]

    /// Events only OpenAI's Realtime and Responses WebSocket protocols send.
    static func announcesOpenAIEvents(_ type: String, fromClient: Bool) -> Bool {
        fromClient
            ? ["response.create", "session.update", "conversation.item.create", "input_audio_buffer.append", "transcription_session.update"]
                .contains(type)
            : ["session.created", "response.created", "response.done", "response.completed"].contains(type)
    }

    static let heartbeats: Set<String> = ["ping", "pong", "heartbeat", "keepalive", "keep_alive", "keep-alive", "ka"]
    static let longestHeartbeat = heartbeats.map(\.utf8.count).max()!

    /// `ping`, `pong`, `heartbeat`, `keepalive` as a whole text message or as a JSON message's `type`
    /// (any case): what chat front ends send to keep a connection alive.
    static func isHeartbeat(_ message: WebSocketTurnMessage) -> Bool {
        guard message.isText, message.length <= 64 else { return false }
        if let type = message.eventType { return heartbeats.contains(ASCIIText.lowercased(type)) }
        let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        guard let first = message.data.firstIndex(where: { !isSpace($0) }), let last = message.data.lastIndex(where: { !isSpace($0) }),
            last - first < longestHeartbeat
        else { return false }
        return heartbeats.contains(ASCIIText.lowercased(String(decoding: message.data[first...last], as: UTF8.self)))
    }

    static func isSessionSettings(_ type: String) -> Bool {
        type == "session.update" || type == "session.created" || type == "session.updated"
    }

    /// Audio is recorded by size only: `input_audio_buffer.append`, `response.audio.delta`, `response.output_audio.delta`.
    static func isAudio(_ type: String) -> Bool {
        type == "input_audio_buffer.append" || (type.hasSuffix("audio.delta") && !type.hasSuffix("transcript.delta"))
    }

    /// The events that carry the first piece of an answer (text, transcript, audio, tool-call arguments).
    static func isOutputDelta(_ type: String) -> Bool {
        type.hasPrefix("response.") && type.hasSuffix(".delta")
    }

    /// The top-level `"type"` string of a JSON object, if it is among its first 1 KiB: found without
    /// parsing the message (which may be megabytes of audio), on the forwarding thread.
    public static func eventType(_ data: [UInt8]) -> String? {
        var scanner = TopLevelKeyScanner(bytes: data.prefix(classifiedBytes))
        return scanner.stringValue(of: "type")
    }
}

/// Finds a top-level member of a JSON object by walking its text: strings and nested values are
/// skipped, not parsed. Gives up (nil) on anything that is not well-formed up to the member.
struct TopLevelKeyScanner {
    let bytes: ArraySlice<UInt8>
    var index: Int

    init(bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        index = bytes.startIndex
    }

    mutating func stringValue(of key: String) -> String? {
        skipSpace()
        guard next() == UInt8(ascii: "{") else { return nil }
        let wanted = Array(key.utf8)
        while true {
            skipSpace()
            guard peek() == UInt8(ascii: "\""), let name = string() else { return nil }
            skipSpace()
            guard next() == UInt8(ascii: ":") else { return nil }
            skipSpace()
            if name.elementsEqual(wanted) {
                guard peek() == UInt8(ascii: "\""), let value = string(), value.count <= 128 else { return nil }
                return String(decoding: value, as: UTF8.self)
            }
            guard skipValue() else { return nil }
            skipSpace()
            guard next() == UInt8(ascii: ",") else { return nil }
        }
    }

    private func peek() -> UInt8? { index < bytes.endIndex ? bytes[index] : nil }

    private mutating func next() -> UInt8? {
        guard index < bytes.endIndex else { return nil }
        defer { index += 1 }
        return bytes[index]
    }

    private mutating func skipSpace() {
        while let byte = peek(), byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
    }

    /// A string's raw bytes (escapes left as they are), the cursor past its closing quote.
    private mutating func string() -> ArraySlice<UInt8>? {
        guard next() == UInt8(ascii: "\"") else { return nil }
        let start = index
        while let byte = next() {
            if byte == UInt8(ascii: "\\") {
                guard next() != nil else { return nil }
            } else if byte == UInt8(ascii: "\"") {
                return bytes[start..<(index - 1)]
            }
        }
        return nil
    }

    /// Skips one value: a string, or anything up to the `,` or `}` that ends it at this depth.
    private mutating func skipValue() -> Bool {
        var depth = 0
        while let byte = peek() {
            switch byte {
            case UInt8(ascii: "\""):
                guard string() != nil else { return false }
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if depth == 0 { return true }
                depth -= 1
            case UInt8(ascii: ","):
                if depth == 0 { return true }
            default:
                break
            }
            index += 1
        }
        return false
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return text
    }
}
