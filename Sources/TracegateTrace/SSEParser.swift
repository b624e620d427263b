/// One dispatched Server-Sent Event.
public struct SSEEvent: Sendable, Equatable {
    /// The `event:` field, nil when the event had none (the event's type is then "message").
    public var event: String?
    /// The `data:` lines joined with "\n".
    public var data: String
    /// The last event ID in effect when the event was dispatched (ids persist across events), nil if never set or empty.
    public var id: String?

    /// The event type: the `event:` field, or "message".
    public var type: String { event ?? "message" }

    public init(event: String? = nil, data: String, id: String? = nil) {
        self.event = event
        self.data = data
        self.id = id
    }
}

/// Incremental parser for a `text/event-stream` body, following the WHATWG HTML "event stream"
/// interpretation rules: lines end with CRLF, LF or CR; a blank line dispatches the event; `data:`
/// lines are joined with "\n"; `event:` sets the type; `id:` sets the last event ID (ignored if it
/// contains NUL); `retry:` (digits only) sets `retry`; lines starting with `:` are comments; a line
/// without a colon is a field with an empty value; one space after the colon is removed; unknown fields
/// are ignored; an event with no data is not dispatched; a UTF-8 byte order mark at the very start is
/// skipped; invalid UTF-8 decodes to U+FFFD.
///
/// Chunks may split lines, CRLF pairs and UTF-8 sequences anywhere. Memory is bounded by
/// `maxEventSize`: an event whose buffered size (data, event type, id and the current line) would
/// exceed it is dropped, counted in `oversizedEvents`, and the rest of it skipped up to its blank
/// line without being buffered. Comment lines are never buffered. Never throws.
public struct SSEParser: Sendable {
    public static let defaultMaxEventSize = 1 << 20

    public let maxEventSize: Int
    /// Events dropped because they grew beyond `maxEventSize`.
    public private(set) var oversizedEvents = 0
    /// Events dispatched so far.
    public private(set) var dispatchedEvents = 0
    /// The last `retry:` value (milliseconds), if any.
    public private(set) var retry: Int?
    /// The last event ID buffer (persists across events, as in the spec).
    public private(set) var lastEventID = ""

    private enum LineMode: Sendable { case normal, comment, discarding }

    private var line: [UInt8] = []
    private var lineMode = LineMode.normal
    /// Whether anything (even a comment) has been seen on the current line.
    private var lineStarted = false
    private var data: [UInt8] = []
    private var hasData = false
    private var eventType: [UInt8] = []
    private var idBuffer: [UInt8]?
    /// The current event is oversized: skip until its end.
    private var discardingEvent = false
    private var lastByteWasCR = false
    /// Bytes of a possible byte order mark seen so far at the start of the stream; nil once decided.
    private var bomPrefix: [UInt8]? = []

    public init(maxEventSize: Int = SSEParser.defaultMaxEventSize) {
        self.maxEventSize = max(1, maxEventSize)
    }

    /// Whether a partial event (or line) is buffered, which `finish()` would discard.
    public var hasPendingEvent: Bool {
        hasData || !eventType.isEmpty || lineStarted || discardingEvent
    }

    /// Feeds bytes and returns the events they completed.
    public mutating func feed<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> [SSEEvent] {
        var events: [SSEEvent] = []
        feed(bytes) { events.append($0) }
        return events
    }

    /// Feeds bytes, calling `onEvent` for each event they complete, in order.
    public mutating func feed<Bytes: Collection<UInt8>>(_ bytes: Bytes, onEvent: (SSEEvent) -> Void) {
        if bytes.withContiguousStorageIfAvailable({ buffer in feedBuffer(buffer, onEvent: onEvent) }) == nil {
            let copy = Array(bytes)
            copy.withUnsafeBufferPointer { feedBuffer($0, onEvent: onEvent) }
        }
    }

    /// Ends the stream. Per the spec, an event not terminated by a blank line is discarded; returns
    /// whether one was. The parser can then be reused for a new stream.
    @discardableResult
    public mutating func finish() -> Bool {
        var discarded = hasPendingEvent
        if let prefix = bomPrefix, !prefix.isEmpty { discarded = true }
        let oversized = oversizedEvents
        let dispatched = dispatchedEvents
        self = SSEParser(maxEventSize: maxEventSize)
        oversizedEvents = oversized
        dispatchedEvents = dispatched
        return discarded
    }

    private mutating func feedBuffer(_ input: UnsafeBufferPointer<UInt8>, onEvent: (SSEEvent) -> Void) {
        var buffer = input
        if var prefix = bomPrefix {
            // Decide whether the stream starts with EF BB BF, possibly across chunks.
            let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
            var consumed = 0
            while prefix.count < 3, consumed < buffer.count, buffer[consumed] == bom[prefix.count] {
                prefix.append(buffer[consumed])
                consumed += 1
            }
            if prefix.count == 3 {
                bomPrefix = nil // a BOM: dropped
                buffer = UnsafeBufferPointer(rebasing: buffer[consumed...])
            } else if consumed == buffer.count {
                bomPrefix = prefix // still undecided
                return
            } else {
                // Not a BOM: replay the bytes held back, then the rest.
                bomPrefix = nil
                prefix.withUnsafeBufferPointer { process($0, onEvent: onEvent) }
                buffer = UnsafeBufferPointer(rebasing: buffer[consumed...])
            }
        }
        process(buffer, onEvent: onEvent)
    }

    private mutating func process(_ buffer: UnsafeBufferPointer<UInt8>, onEvent: (SSEEvent) -> Void) {
        var index = 0
        let count = buffer.count
        while index < count {
            let byte = buffer[index]
            if byte == 0x0A || byte == 0x0D {
                if byte == 0x0A, lastByteWasCR {
                    // The LF of a CRLF pair: the line already ended at the CR.
                    lastByteWasCR = false
                    index += 1
                    continue
                }
                lastByteWasCR = byte == 0x0D
                endLine(onEvent: onEvent)
                index += 1
                continue
            }
            lastByteWasCR = false
            // A run of line content up to the next line end.
            var end = index + 1
            while end < count, buffer[end] != 0x0A, buffer[end] != 0x0D { end += 1 }
            appendToLine(UnsafeBufferPointer(rebasing: buffer[index..<end]))
            index = end
        }
    }

    private mutating func appendToLine(_ run: UnsafeBufferPointer<UInt8>) {
        if !lineStarted {
            lineStarted = true
            lineMode = run.first == UInt8(ascii: ":") ? .comment : (discardingEvent ? .discarding : .normal)
        }
        guard lineMode == .normal else { return }
        if line.count + run.count + data.count + eventType.count + (idBuffer?.count ?? 0) > maxEventSize {
            dropOversizedEvent()
            return
        }
        line.append(contentsOf: run)
    }

    private mutating func dropOversizedEvent() {
        discardingEvent = true
        lineMode = .discarding
        line = []
        data = []
        hasData = false
        eventType = []
    }

    private mutating func endLine(onEvent: (SSEEvent) -> Void) {
        defer {
            line.removeAll(keepingCapacity: line.capacity <= 4096)
            lineStarted = false
            lineMode = .normal
        }
        if !lineStarted {
            // A blank line: the end of the event.
            if discardingEvent {
                discardingEvent = false
                oversizedEvents += 1
            } else {
                dispatch(onEvent: onEvent)
            }
            return
        }
        guard lineMode == .normal else { return }
        processField()
    }

    private mutating func processField() {
        let colon = line.firstIndex(of: UInt8(ascii: ":"))
        let name = line[..<(colon ?? line.endIndex)]
        var valueStart = colon.map { line.index(after: $0) } ?? line.endIndex
        if valueStart < line.endIndex, line[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
        let value = line[valueStart...]
        if name.elementsEqual("data".utf8) {
            if data.count + value.count + 1 > maxEventSize {
                dropOversizedEvent()
                return
            }
            data.append(contentsOf: value)
            data.append(0x0A)
            hasData = true
        } else if name.elementsEqual("event".utf8) {
            eventType = Array(value)
        } else if name.elementsEqual("id".utf8) {
            if !value.contains(0) { idBuffer = Array(value) }
        } else if name.elementsEqual("retry".utf8) {
            // Digits only; a value too large for an Int is ignored (it must not erase the last valid one).
            if !value.isEmpty, value.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
               let milliseconds = Int(String(decoding: value, as: UTF8.self)) {
                retry = milliseconds
            }
        }
    }

    private mutating func dispatch(onEvent: (SSEEvent) -> Void) {
        if let id = idBuffer {
            lastEventID = String(decoding: id, as: UTF8.self)
            idBuffer = nil
        }
        defer {
            data.removeAll(keepingCapacity: data.capacity <= 65536)
            hasData = false
            eventType = []
        }
        guard hasData else { return }
        if data.last == 0x0A { data.removeLast() }
        let event = SSEEvent(
            event: eventType.isEmpty ? nil : String(decoding: eventType, as: UTF8.self),
            data: String(decoding: data, as: UTF8.self),
            id: lastEventID.isEmpty ? nil : lastEventID
        )
        dispatchedEvents += 1
        onEvent(event)
    }
}
