import NIOCore

/// Counts the RFC 6455 frames of one direction of a tunnel from their headers alone, payloads
/// skipped by their length: a few comparisons per frame on the forwarding path, nothing kept but a
/// header being read (at most 14 bytes). Bytes that are not WebSocket frames count as whatever
/// their bytes say; the figure is only a metric.
struct WebSocketFrameCounter {
    private(set) var frames = 0
    private var payloadLeft: UInt64 = 0
    private var header: [UInt8] = []

    mutating func count(_ bytes: ByteBuffer) {
        let view = bytes.readableBytesView
        var index = view.startIndex
        while index < view.endIndex {
            if payloadLeft > 0 {
                let skipped = Int(min(payloadLeft, UInt64(view.endIndex - index)))
                index += skipped
                payloadLeft -= UInt64(skipped)
                continue
            }
            if header.capacity < 14 { header.reserveCapacity(14) }
            header.append(view[index])
            index += 1
            guard header.count >= 2 else { continue }
            let shortLength = header[1] & 0x7F
            let lengthBytes = shortLength == 126 ? 2 : shortLength == 127 ? 8 : 0
            guard header.count == 2 + lengthBytes + (header[1] & 0x80 != 0 ? 4 : 0) else { continue }
            payloadLeft = lengthBytes == 0 ? UInt64(shortLength) : header[2..<(2 + lengthBytes)].reduce(0) { $0 << 8 | UInt64($1) }
            frames += 1
            header.removeAll(keepingCapacity: true)
        }
    }
}
