/// How a message body is delimited on the wire.
enum BodyFraming: Equatable {
    /// The message has no body (a HEAD response, 204, 304, a GET without framing headers…).
    case none
    case contentLength
    case chunked
    /// A response body that ends when the upstream closes the connection.
    case untilClose
}

@inline(__always)
func lowerASCII(_ byte: UInt8) -> UInt8 {
    (byte >= 0x41 && byte <= 0x5A) ? byte | 0x20 : byte
}
