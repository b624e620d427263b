import NIOCore

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

extension ByteBuffer {
    /// Writes a non-negative integer in decimal ASCII, without building a string (framing fields are
    /// written for every message).
    public mutating func writeDecimal(_ value: Int) {
        precondition(value >= 0, "lengths are never negative")
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // room for 24 digits, more than Int.max has
        withUnsafeMutableBytes(of: &digits) { scratch in
            var remaining = value
            var index = scratch.count
            repeat {
                index -= 1
                scratch[index] = UInt8(ascii: "0") + UInt8(remaining % 10)
                remaining /= 10
            } while remaining > 0
            writeBytes(UnsafeRawBufferPointer(rebasing: scratch[index...]))
        }
    }
}
