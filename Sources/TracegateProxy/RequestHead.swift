import NIOCore
import NIOHTTP1

/// A request head, parsed in place: the bytes as the client sent them plus field offsets.
public struct RequestHead {
    public let method: HTTPMethod
    public let version: HTTPVersion
    public let headers: HeaderFields
    let targetRange: Range<Int>
    let facts: HeadFacts

    var bytes: ByteBuffer { headers.bytes }
    var fields: [HeadField] { headers.fields }

    /// The request target exactly as sent.
    public var uri: String {
        bytes.getString(at: bytes.readerIndex + targetRange.lowerBound, length: targetRange.count) ?? ""
    }

    /// Whether the client expects the connection to stay open after this exchange.
    public var isKeepAlive: Bool { facts.keepsAlive(version) }
}
