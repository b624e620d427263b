extension TraceBuilder {
    /// The trace of one WebSocket turn, named `WS /path`: the client's messages as inputs, the
    /// server's as outputs (a recognised chat protocol read as its chat), when the answer began, and
    /// how the turn ended; the first turn also records what the server said before it (a greeting).
    /// The session is the connection's when the upgrade request named none, and the client request
    /// id is the upgrade's request id with the turn number.
    func record(for exchange: CapturedExchange, turn: WebSocketTurn, chain: inout ResponseSessionChain) -> TraceRecord {
        let path = exchange.target.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(exchange.target[..<$0]) } ?? exchange.target
        let query = exchange.target.utf8.firstIndex(of: UInt8(ascii: "?")).map { exchange.target[exchange.target.index(after: $0)...] } ?? ""
        let start = UInt64(max(0, exchange.startEpochNanos))
        let name = redaction.text("WS \(path)")
        var record = TraceRecord(
            traceID: TraceID(high: exchange.traceIDHigh, low: exchange.traceIDLow), rootSpanID: SpanID(value: exchange.rootSpanID),
            parentSpanID: nil, name: name, startTimeUnixNano: start, endTimeUnixNano: start + UInt64(max(0, exchange.durationNanos)))
        record.attributes.reserveCapacity(24)  // a turn's root holds about 15, a recognised chat's more
        record.tags.reserveCapacity(staticTags.count + exchange.headerTags.count + 4)
        for (key, value) in staticTags { record.tags[key] = value }
        for (key, value) in exchange.headerTags { record.tags[key] = String(redaction.text(value).prefix(MLflowLimits.tagValue)) }
        describeSource(exchange, into: &record)

        record.attributes[TraceAttributeKey.httpRequestMethod] = .string(exchange.method)
        record.attributes[TraceAttributeKey.urlPath] = .string(
            redaction.text(identity.redactingIdentityQuery(QueryRedaction.target(exchange.target))))
        if !exchange.upstream.isEmpty { record.attributes["tracegate.upstream"] = .string(exchange.upstream) }
        record.attributes["tracegate.request_id"] = .string(String(exchange.requestID.prefix(MLflowLimits.tagValue)))
        record.attributes["tracegate.websocket.turn"] = .int(Int64(turn.number))
        record.attributes["tracegate.websocket.protocol"] = .string(turn.protocolKind.rawValue)
        record.attributes["tracegate.websocket.client_messages"] = .int(Int64(turn.clientMessageCount))
        record.attributes["tracegate.websocket.server_messages"] = .int(Int64(turn.serverMessageCount))
        record.attributes["tracegate.websocket.turn_duration_ms"] = .double(Double(max(0, exchange.durationNanos)) / 1e6)
        record.attributes["tracegate.websocket.ended_by"] = .string(Self.describe(turn.ending))
        if turn.greetingMessageCount > 0 {
            record.attributes["tracegate.websocket.greeting_messages"] = .int(Int64(turn.greetingMessageCount))
        }
        if let continued = turn.continues { record.attributes["tracegate.websocket.continues_turn"] = .int(Int64(continued)) }
        let answerFrom = turn.responseRequestedNanos ?? turn.startNanos
        if let first = turn.firstServerMessageNanos {
            record.attributes["tracegate.websocket.time_to_first_message_ms"] = .double(Double(max(0, first - turn.startNanos)) / 1e6)
        }
        if turn.truncated { record.attributes["tracegate.response.truncated"] = .bool(true) }
        if !turn.notes.isEmpty { record.attributes["tracegate.websocket.notes"] = .string(turn.notes.joined(separator: "; ")) }

        let reading = WebSocketTurnReading(turn, query: query)
        if capturesBodies {
            record.inputs = reading.inputs.map(redaction.body)
            record.outputs = reading.outputs.map(redaction.body)
            if let greeting = WebSocketTurnReading.describe(turn.greeting) {
                record.attributes["tracegate.websocket.greeting"] = .string(redaction.body(greeting))
            }
        }
        if let chat = reading.chat {
            describe(chat, into: &record)
            // MLflow previews neither protocol's shapes itself: give it the texts.
            if capturesBodies { previewTexts(of: chat, into: &record) }
        }

        // The upgrade's request id, with the turn number, within MLflow's 50 characters (a long id
        // keeps a hash of itself, so two ids alike at the start stay apart; the whole id is a tag).
        let suffix = ":\(turn.number)"
        var identified = exchange
        let shortened = MLflowLimits.shortened(exchange.requestID, to: MLflowLimits.clientRequestID - suffix.utf8.count)  // the suffix is ASCII
        identified.requestID = shortened + suffix
        describeIdentity(identified, chat: reading.chat, chain: &chain, into: &record)
        if shortened != exchange.requestID {
            record.tags[IdentityValues.requestIDFullTag] = String(exchange.requestID.prefix(MLflowLimits.tagValue))
        }
        if record.session == nil, let connection = exchange.webSocketConnectionID {
            record.session = connection
            record.attributes["tracegate.session.source"] = .string("websocket connection")
        }

        if let failure = turn.failure ?? reading.chat?.error.map({ ("ResponseFailed", $0) }) {
            record.status = .error(message: failure.message)
            record.events.append(.exception(type: failure.type, message: failure.message, timeUnixNano: record.endTimeUnixNano))
        }

        var span = UpstreamSpan(
            spanID: UpstreamSpan.spanID(under: record.rootSpanID), name: name, startTimeUnixNano: record.startTimeUnixNano,
            endTimeUnixNano: record.endTimeUnixNano, status: record.status, spanType: reading.chat == nil ? .unknown : .llm)
        if !exchange.upstream.isEmpty { span.attributes["tracegate.upstream"] = .string(exchange.upstream) }
        for key in Self.modelAttributeKeys {
            if let value = record.attributes.removeValue(forKey: key) { span.attributes[key] = value }
        }
        if let format = record.attributes[TraceAttributeKey.messageFormat] { span.attributes[TraceAttributeKey.messageFormat] = format }
        if let first = turn.firstDeltaNanos ?? (reading.chat == nil ? turn.firstServerMessageNanos : nil) {
            let nanos = max(0, first - answerFrom)
            span.attributes["tracegate.time_to_first_token_ms"] = .double(Double(nanos) / 1e6)
            span.events.append(SpanEvent(name: "first_token", timeUnixNano: span.clamped(start + UInt64(max(0, first - turn.startNanos)))))
        }
        record.upstreamSpan = span

        if exchange.routeIndex >= 0, exchange.routeIndex < routeTags.count {
            for (key, value) in routeTags[exchange.routeIndex] { record.tags[key] = value }
        }
        return record
    }

    static func describe(_ ending: WebSocketTurn.Ending) -> String {
        switch ending {
        case .nextClientMessage: return "next client message"
        case .quiet: return "quiet after the answer"
        case .endOfResponse(let type): return type
        case .closed(let code, _): return "close frame" + (code.map { " \($0)" } ?? "")
        case .cut: return "connection cut"
        }
    }
}
