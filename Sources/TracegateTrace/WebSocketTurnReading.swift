/// What a WebSocket turn says, for its trace: inputs and outputs as JSON or text, and, for OpenAI's
/// Realtime and Responses protocols, the chat it holds (model, usage, assembled answer). Pure; runs
/// in the trace builder.
public struct WebSocketTurnReading: Sendable, Equatable {
    public var inputs: String?
    public var outputs: String?
    public var chat: ChatExchange?

    /// Reads `turn`; `query` is the upgrade request's query string (Realtime names its model there).
    public init(_ turn: WebSocketTurn, query: Substring = "") {
        if turn.protocolKind == .openAIEvents {
            if turn.serverMessages.contains(where: { $0.eventType.map(OpenAIRealtime.isRealtimeOnly) ?? false })
                || turn.ending == .endOfResponse("response.done")
            {
                self = OpenAIRealtime.read(turn, query: query)
                return
            }
            if let reading = Self.readResponses(turn) {
                self = reading
                return
            }
        }
        inputs = Self.describe(turn.clientMessages)
        outputs = Self.describe(turn.serverMessages)
        chat = nil
    }

    init(inputs: String?, outputs: String?, chat: ChatExchange?) {
        self.inputs = inputs
        self.outputs = outputs
        self.chat = chat
    }

    /// The Responses API over WebSocket: `response.create` carries what the HTTP request body would,
    /// and the server sends the events an HTTP stream would; read them as that stream.
    static func readResponses(_ turn: WebSocketTurn) -> WebSocketTurnReading? {
        guard let create = turn.clientMessages.last(where: { $0.eventType == "response.create" }),
            let event = PayloadJSON.parse(create.data), case .object(let members) = event
        else { return nil }
        let body = (event["response"].flatMap { $0.isObject ? $0 : nil } ?? .object(members.filter { $0.0 != "type" })).serialized
        guard let request = ChatPayloadInterpreter.recognizeRequest(path: "/v1/responses", requestBody: Array(body.utf8)) else { return nil }
        var stream: [UInt8] = []
        for message in turn.serverMessages where message.isText && !message.omitted && !message.isTruncated {
            stream.append(contentsOf: "data: ".utf8)
            stream.append(contentsOf: message.data)
            stream.append(contentsOf: "\n\n".utf8)
        }
        guard
            var chat = ChatPayloadInterpreter.interpret(
                request: ChatRequest(
                    format: .openAIResponses, model: request.model, streamRequested: true, lastUserText: request.lastUserText,
                    previousResponseID: request.previousResponseID),
                responseBody: stream, responseContentType: "text/event-stream", responseTruncated: false)
        else { return nil }
        chat.eventCount = turn.serverMessageCount
        return WebSocketTurnReading(inputs: body, outputs: chat.outputJSON ?? describe(turn.serverMessages), chat: chat)
    }

    // MARK: Generic

    /// One message as itself (JSON or text); several as a JSON array of them, in order (JSON messages
    /// as JSON, text as strings, binary ones as a note of their size and the texts protobuf carries).
    static func describe(_ messages: [WebSocketTurnMessage]) -> String? {
        guard let first = messages.first else { return nil }
        if messages.count == 1 { return text(of: first) }
        let items: [PayloadJSON] = messages.map { message in
            if message.isText && !message.isTruncated, let json = PayloadJSON.parse(message.data) { return json }
            return note(message) ?? .string(text(of: message) ?? "")
        }
        return PayloadJSON.array(items).serialized
    }

    /// A message as text; binary, compressed and omitted messages as a note of their size (with
    /// the texts a protobuf message carries).
    static func text(of message: WebSocketTurnMessage) -> String? {
        if let note = note(message) { return note.serialized }
        let text = String(decoding: message.data, as: UTF8.self)
        return message.isTruncated ? text + "… [truncated: \(message.length) bytes in all]" : text
    }

    private static func note(_ message: WebSocketTurnMessage) -> PayloadJSON? {
        let size = PayloadJSON.number(String(message.length))
        if message.compressedNotInflated {
            return .object([("compressed", .string("permessage-deflate")), ("size", size)])
        }
        if message.omitted {
            return .object([("omitted", .string(message.eventType ?? "audio")), ("size", size)])
        }
        guard message.isText, String(validating: message.data, as: UTF8.self) != nil || message.isTruncated else {
            guard !message.isText, let texts = ProtobufTexts.texts(in: message.data[...], truncated: message.isTruncated), !texts.isEmpty
            else { return .object([("binary", .bool(true)), ("size", size)]) }
            return .object([("binary", .bool(true)), ("size", size), ("texts", .array(texts.map(PayloadJSON.string)))])
        }
        return nil
    }
}
