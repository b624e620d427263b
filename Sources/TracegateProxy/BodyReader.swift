import NIOCore

/// Reads one message body out of a byte stream as data slices, following its framing
/// (RFC 9112 §6–7): a declared length, chunked coding, or everything until the connection closes.
/// Slices share storage with the input: nothing is copied.
struct BodyReader {
    enum Event {
        /// Body bytes (never empty).
        case data(ByteBuffer)
        /// The body ended; for chunked bodies, the trailer section's field lines (each ending in CRLF), if any.
        case end(trailers: ByteBuffer?)
        /// The rest of the body has not arrived yet.
        case needMore
    }

    enum Failure: Error, Equatable {
        case invalidChunkSize
        case invalidChunkTerminator
        case trailersTooLarge
        /// A trailer line that is not `name: value` with a token name and no control characters in
        /// the value: refused as it would be in the head.
        case invalidTrailerField
        /// A chunk-size, chunk-data or trailer line ended by a lone LF. RFC 9112 §7.1 frames chunks with
        /// CRLF, and parsers that accept a lone LF there disagree on where chunks end (llhttp refuses it).
        case bareLineFeed
    }

    private enum State {
        case length(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
        case done
    }

    /// Longest chunk-size line (with extensions) and largest trailer section accepted.
    static let maxChunkLineBytes = 4096
    static let maxTrailerBytes = 16 * 1024

    private var state: State
    private var trailers: ByteBuffer?

    init(framing: BodyFraming, contentLength: Int = 0) {
        switch framing {
        case .none: state = .done
        case .contentLength: state = contentLength == 0 ? .done : .length(remaining: contentLength)
        case .chunked: state = .chunkSize
        case .untilClose: state = .untilClose
        }
    }

    var isDone: Bool {
        if case .done = state { return true }
        return false
    }

    /// The next event from `buffer`, consuming what it returns.
    /// A body with nothing to read (`.none`, a zero length) ends at once.
    mutating func next(_ buffer: inout ByteBuffer) throws -> Event {
        while true {
            switch state {
            case .done:
                return .end(trailers: nil)
            case .untilClose:
                guard buffer.readableBytes > 0 else { return .needMore }
                return .data(buffer.readSlice(length: buffer.readableBytes)!)
            case .length(let remaining):
                guard buffer.readableBytes > 0 else { return .needMore }
                let take = min(remaining, buffer.readableBytes)
                let slice = buffer.readSlice(length: take)!
                state = take == remaining ? .done : .length(remaining: remaining - take)
                return .data(slice)
            case .chunkData(let remaining):
                guard buffer.readableBytes > 0 else { return .needMore }
                let take = min(remaining, buffer.readableBytes)
                let slice = buffer.readSlice(length: take)!
                state = take == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - take)
                return .data(slice)
            case .chunkDataEnd:
                guard let terminator = try Self.lineLength(in: buffer, limit: 0) else {
                    if buffer.readableBytes >= 2 { throw Failure.invalidChunkTerminator }
                    return .needMore
                }
                guard terminator.content == 0 else { throw Failure.invalidChunkTerminator }
                buffer.moveReaderIndex(forwardBy: terminator.total)
                state = .chunkSize
            case .chunkSize:
                guard let line = try Self.lineLength(in: buffer, limit: Self.maxChunkLineBytes) else {
                    if buffer.readableBytes > Self.maxChunkLineBytes { throw Failure.invalidChunkSize }
                    return .needMore
                }
                let size = try Self.chunkSize(buffer, length: line.content)
                buffer.moveReaderIndex(forwardBy: line.total)
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .trailers:
                guard let line = try Self.lineLength(in: buffer, limit: Self.maxTrailerBytes) else {
                    if buffer.readableBytes > Self.maxTrailerBytes { throw Failure.trailersTooLarge }
                    return .needMore
                }
                if line.content == 0 {
                    buffer.moveReaderIndex(forwardBy: line.total)
                    state = .done
                    let section = trailers
                    trailers = nil
                    return .end(trailers: section)
                }
                var section = trailers ?? ByteBuffer()
                guard section.readableBytes + line.content + 2 <= Self.maxTrailerBytes else { throw Failure.trailersTooLarge }
                let field = buffer.readableBytesView.prefix(line.content)
                guard Self.isValidField(field) else { throw Failure.invalidTrailerField }
                var content = buffer.readSlice(length: line.content)!
                buffer.moveReaderIndex(forwardBy: line.total - line.content)
                if Self.isAllowedInTrailers(field) {
                    section.writeBuffer(&content)
                    section.writeStaticString("\r\n")
                }
                trailers = section
            }
        }
    }

    /// `token ":" value` (RFC 9110 §5.1, §5.5): a non-empty name of token characters right before the
    /// colon, and a value without control characters other than horizontal tab.
    static func isValidField(_ line: some Collection<UInt8>) -> Bool {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon != line.startIndex else { return false }
        for byte in line[..<colon] where !isTokenByte(byte) { return false }
        for byte in line[line.index(after: colon)...] where (byte < 0x20 && byte != 0x09) || byte == 0x7F { return false }
        return true
    }

    /// Fields that must not be sent in a trailer section (RFC 9110 §6.5.1: framing, routing, request
    /// modifiers, authentication, response control and content format). Received in trailers, they are
    /// dropped: a recipient that merged them into the head would reframe or reroute the message.
    static let fieldsForbiddenInTrailers: Set<String> = [
        "content-length", "transfer-encoding", "host", "connection", "keep-alive", "proxy-connection", "te",
        "trailer", "upgrade", "expect", "max-forwards", "range", "if-match", "if-none-match", "if-modified-since",
        "if-unmodified-since", "if-range", "authorization", "proxy-authorization", "www-authenticate",
        "proxy-authenticate", "cookie", "set-cookie", "content-type", "content-encoding", "content-range",
        "content-location", "cache-control", "pragma", "age", "expires", "date", "location", "retry-after", "vary",
        "warning", "http2-settings",
    ]

    /// Whether a valid trailer field line may be passed on (its name is not in `fieldsForbiddenInTrailers`).
    static func isAllowedInTrailers(_ line: some Collection<UInt8>) -> Bool {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return false }
        let name = String(decoding: line[..<colon].lazy.map(lowerASCII), as: UTF8.self)
        return !fieldsForbiddenInTrailers.contains(name)
    }

    /// The length of the line at the start of `buffer` without and with its CRLF terminator, nil when no
    /// terminator is within reach yet.
    private static func lineLength(in buffer: ByteBuffer, limit: Int) throws -> (content: Int, total: Int)? {
        try buffer.withUnsafeReadableBytes { raw in
            let end = min(raw.count, limit + 2)
            var index = 0
            while index < end {
                switch raw[index] {
                case 0x0A:
                    throw Failure.bareLineFeed
                case 0x0D:
                    guard index + 1 < raw.count else { return nil }
                    guard raw[index + 1] == 0x0A else { throw Failure.invalidChunkTerminator }
                    return (index, index + 2)
                default:
                    index += 1
                }
            }
            return nil
        }
    }

    /// The hex size at the start of a chunk-size line, ignoring extensions.
    private static func chunkSize(_ buffer: ByteBuffer, length: Int) throws -> Int {
        try buffer.withUnsafeReadableBytes { raw in
            var size = 0
            var digits = 0
            var index = 0
            while index < length {
                let byte = raw[index]
                let value: Int
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): value = Int(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): value = Int(byte - UInt8(ascii: "a")) + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): value = Int(byte - UInt8(ascii: "A")) + 10
                default: value = -1
                }
                if value < 0 { break }
                digits += 1
                guard digits <= 15 else { throw Failure.invalidChunkSize }
                size = size * 16 + value
                index += 1
            }
            guard digits > 0 else { throw Failure.invalidChunkSize }
            // What follows the digits: nothing or a `;` extension. No whitespace: RFC 9112 §7.1.1 allows it
            // only for compatibility, and llhttp refuses it, so a server behind might read a different size.
            guard index == length || raw[index] == UInt8(ascii: ";") else { throw Failure.invalidChunkSize }
            return size
        }
    }
}

/// Writes bodies in chunked coding (RFC 9112 §7.1).
enum ChunkedCoding {
    /// `data` as one chunk; empty data writes nothing (an empty chunk would end the body).
    static func writeChunk(_ data: ByteBuffer, into out: inout ByteBuffer) {
        guard data.readableBytes > 0 else { return }
        writeHex(data.readableBytes, into: &out)
        out.writeStaticString("\r\n")
        var data = data
        out.writeBuffer(&data)
        out.writeStaticString("\r\n")
    }

    /// The chunk-size line for `data`; the data and a CRLF follow it on the wire.
    static func chunkHeader(for length: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var header = allocator.buffer(capacity: 18)
        writeHex(length, into: &header)
        header.writeStaticString("\r\n")
        return header
    }

    /// The last chunk and the trailer section.
    static func writeEnd(trailers: ByteBuffer?, into out: inout ByteBuffer) {
        out.writeStaticString("0\r\n")
        if var trailers { out.writeBuffer(&trailers) }
        out.writeStaticString("\r\n")
    }

    private static func writeHex(_ value: Int, into out: inout ByteBuffer) {
        let digits: StaticString = "0123456789abcdef"
        var shift = (Int.bitWidth - value.leadingZeroBitCount + 3) / 4 * 4 - 4
        if shift < 0 { shift = 0 }
        while shift >= 0 {
            out.writeInteger(digits.utf8Start[(value >> shift) & 0xF])
            shift -= 4
        }
    }
}
