import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import TracegateProxy

/// Typed HTTP messages to bytes and back. The bytes the data plane writes are read back with
/// NIO's own HTTP/1 parser, so the tests check them with a parser independent of the proxy's.
enum Wire {
    static func bytes(_ head: HTTPRequestHead) -> ByteBuffer {
        var out = ByteBuffer(string: "\(head.method.rawValue) \(head.uri) HTTP/\(head.version.major).\(head.version.minor)\r\n")
        for (name, value) in head.headers { out.writeString("\(name): \(value)\r\n") }
        out.writeString("\r\n")
        return out
    }

    static func bytes(_ head: HTTPResponseHead) -> ByteBuffer {
        var out = ByteBuffer(string: "HTTP/\(head.version.major).\(head.version.minor) \(head.status.code) \(head.status.reasonPhrase)\r\n")
        for (name, value) in head.headers { out.writeString("\(name): \(value)\r\n") }
        out.writeString("\r\n")
        return out
    }

    /// Body bytes as they go on the wire: one chunk per part when `chunked`.
    static func body(_ part: String, chunked: Bool) -> ByteBuffer {
        guard chunked else { return ByteBuffer(string: part) }
        return ByteBuffer(string: String(part.utf8.count, radix: 16) + "\r\n" + part + "\r\n")
    }

    static let lastChunk = ByteBuffer(string: "0\r\n\r\n")

    /// The proxy's parse of `head` once serialized.
    static func requestHead(_ head: HTTPRequestHead, requestIDHeader: String = "X-Request-ID") throws -> RequestHead {
        var parser = HeadParser(requestIDHeader: requestIDHeader, maxHeadBytes: 64 * 1024)
        var buffer = bytes(head)
        let length = try XCTUnwrap(try parser.headLength(in: &buffer))
        return try parser.parseRequest(buffer.readSlice(length: length)!)
    }

    static func responseHead(_ head: HTTPResponseHead, requestIDHeader: String = "X-Request-ID") throws -> ResponseHead {
        var parser = HeadParser(requestIDHeader: requestIDHeader, maxHeadBytes: 64 * 1024)
        var buffer = bytes(head)
        let length = try XCTUnwrap(try parser.headLength(in: &buffer))
        return try parser.parseResponse(buffer.readSlice(length: length)!)
    }

    /// The request head in `bytes`, as NIO parses it.
    static func decodeRequestHead(_ bytes: ByteBuffer) throws -> HTTPRequestHead {
        let decoder = RequestDecoder()
        guard case .head(let head) = try XCTUnwrap(decoder.feed(bytes).first) else {
            throw XCTSkip("unreachable")
        }
        return head
    }

    /// The response head in `bytes`, as NIO parses it.
    static func decodeResponseHead(_ bytes: ByteBuffer) throws -> HTTPResponseHead {
        let decoder = ResponseDecoder()
        try decoder.expectResponse(to: .GET)
        guard case .head(let head) = try XCTUnwrap(decoder.feed(bytes).first) else {
            throw XCTSkip("unreachable")
        }
        return head
    }
}

/// Decodes a stream of request bytes with NIO's parser, keeping state between feeds.
final class RequestDecoder {
    private let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))

    func feed(_ bytes: ByteBuffer) throws -> [HTTPServerRequestPart] {
        try channel.writeInbound(bytes)
        var parts: [HTTPServerRequestPart] = []
        while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(part) }
        return parts
    }
}

/// Decodes a stream of response bytes with NIO's parser, keeping state between feeds.
final class ResponseDecoder {
    private let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)))

    /// NIO's decoder frames a response by its request (HEAD has no body): tell it one was sent.
    func expectResponse(to method: HTTPMethod) throws {
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
        _ = try channel.readOutbound(as: HTTPClientRequestPart.self)
    }

    func feed(_ bytes: ByteBuffer) throws -> [HTTPClientResponsePart] {
        try channel.writeInbound(bytes)
        var parts: [HTTPClientResponsePart] = []
        while let part = try channel.readInbound(as: HTTPClientResponsePart.self) { parts.append(part) }
        return parts
    }
}
