import NIOCore
import NIOHTTP1

/// A response head, parsed in place.
public struct ResponseHead {
    public let version: HTTPVersion
    public let status: HTTPResponseStatus
    public let headers: HeaderFields
    /// From the space before the status code to the end of the reason phrase, as sent.
    let statusRange: Range<Int>
    let facts: HeadFacts

    var bytes: ByteBuffer { headers.bytes }
    var fields: [HeadField] { headers.fields }

    public var isKeepAlive: Bool { facts.keepsAlive(version) }
}
