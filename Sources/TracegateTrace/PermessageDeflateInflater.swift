/// Raw DEFLATE (RFC 1951) as WebSocket `permessage-deflate` (RFC 7692) uses it: each call inflates one
/// whole message, and the LZ77 window carries from message to message ("context takeover"), so a
/// later message may copy from earlier ones' output. Pure Swift: no zlib, no Foundation.
///
/// A sender that negotiated `no_context_takeover` never refers back past its own message, so the
/// same inflater reads its messages too. Use one inflater per direction of a connection.
public struct PermessageDeflateInflater: Sendable {
    public enum Failure: Error, Sendable, Equatable {
        /// Not DEFLATE data; the reason says what was wrong.
        case malformed(String)
        /// The message inflates to more than `maxOutput` bytes.
        case outputLimit
    }

    fileprivate static let windowSize = 1 << 15
    fileprivate static let windowMask = windowSize - 1

    /// The last 32 KiB of all messages' output, as a ring: output byte `n` sits at `n & windowMask`.
    /// Empty until the first message.
    private var window: [UInt8] = []
    /// Bytes inflated by all messages so far.
    private var totalOutput = 0

    public init() {}

    /// Inflates one compressed message: its first `keep` bytes and its whole length.
    ///
    /// The sender stripped the `00 00 ff ff` that ends its sync flush (RFC 7692 §7.2.1); this puts it
    /// back (§7.2.2). Decoding stops where the input ends on a block boundary, or after a block with BFINAL set.
    /// An empty payload is an empty message. After a throw the window is no longer the sender's:
    /// the inflater must not be used again.
    public mutating func inflate(
        message: [UInt8], keep: Int, maxOutput: Int
    ) throws(Failure) -> (kept: [UInt8], length: Int) {
        guard !message.isEmpty else { return ([], 0) }
        // Taken out of `self` so the ring is uniquely referenced while written through a pointer.
        var ring = window.isEmpty ? [UInt8](repeating: 0, count: Self.windowSize) : window
        window = []
        defer { window = ring }
        let outputBefore = totalOutput
        let (kept, length, outputAfter) = try ring.withUnsafeMutableBufferPointer {
            (ring) throws(Failure) -> ([UInt8], Int, Int) in
            try message.withUnsafeBufferPointer { (input) throws(Failure) -> ([UInt8], Int, Int) in
                var inflation = MessageInflation(
                    input: input, window: ring.baseAddress!, totalOutput: outputBefore,
                    keep: keep, maxOutput: maxOutput)
                try inflation.run()
                return (inflation.kept, inflation.produced, inflation.totalOutput)
            }
        }
        totalOutput = outputAfter
        return (kept, length)
    }
}

/// A canonical Huffman code (RFC 1951 §3.2.2), ready to decode.
private struct HuffmanCode: Sendable {
    static let fastBits = 10
    static let fastMask = (1 << fastBits) - 1

    /// Indexed by the next `fastBits` input bits: `symbol << 4 | codeLength` for codes that short,
    /// 0 for longer (or unused) codes, which `counts` and `symbols` decode.
    private(set) var fast: [UInt16]
    /// `counts[n]`: how many symbols have an `n`-bit code.
    private(set) var counts: [UInt16]
    /// The coded symbols in canonical order: by code length, then by value.
    private(set) var symbols: [UInt16]

    /// The code with these code lengths (0: symbol unused). An incomplete code is malformed, except
    /// one single 1-bit code where `allowsLoneCode` (zlib's rule for literal/length and distance codes).
    init(lengths: ArraySlice<UInt8>, allowsLoneCode: Bool) throws(PermessageDeflateInflater.Failure) {
        var counts = [UInt16](repeating: 0, count: 16)
        for length in lengths { counts[Int(length)] += 1 }
        counts[0] = 0
        var unusedCodes = 1
        var longest = 0
        for length in 1...15 {
            unusedCodes = unusedCodes << 1 - Int(counts[length])
            guard unusedCodes >= 0 else { throw .malformed("over-subscribed Huffman code") }
            if counts[length] != 0 { longest = length }
        }
        guard unusedCodes == 0 || (allowsLoneCode && longest <= 1) else {
            throw .malformed("incomplete Huffman code")
        }

        var firstIndex = [Int](repeating: 0, count: 16)
        var nextCode = [Int](repeating: 0, count: 16)
        for length in 1..<15 {
            firstIndex[length + 1] = firstIndex[length] + Int(counts[length])
            nextCode[length + 1] = (nextCode[length] + Int(counts[length])) << 1
        }
        var symbols = [UInt16](repeating: 0, count: lengths.count)
        var fast = [UInt16](repeating: 0, count: 1 << Self.fastBits)
        for (symbol, byte) in lengths.enumerated() where byte != 0 {
            let length = Int(byte)
            symbols[firstIndex[length]] = UInt16(symbol)
            firstIndex[length] += 1
            let code = nextCode[length]
            nextCode[length] += 1
            guard length <= Self.fastBits else { continue }
            // The input holds a code's first bit lowest: index by the code reversed, every value of the bits after it.
            var reversed = 0
            for bit in 0..<length where code & (1 << bit) != 0 { reversed |= 1 << (length - 1 - bit) }
            for index in stride(from: reversed, to: fast.count, by: 1 << length) {
                fast[index] = UInt16(symbol << 4 | length)
            }
        }
        self.fast = fast
        self.counts = counts
        self.symbols = symbols
    }

    /// RFC 1951 §3.2.6.
    static let fixedLiterals = try! HuffmanCode(
        lengths: ArraySlice(
            [UInt8](repeating: 8, count: 144) + [UInt8](repeating: 9, count: 112)
                + [UInt8](repeating: 7, count: 24) + [UInt8](repeating: 8, count: 8)),
        allowsLoneCode: false)
    /// All 32 five-bit codes; 30 and 31 never occur in valid data.
    static let fixedDistances = try! HuffmanCode(
        lengths: ArraySlice([UInt8](repeating: 5, count: 32)), allowsLoneCode: false)
}

/// One message's decoding: reading the input's bits, writing output to the window and the kept prefix.
private struct MessageInflation {
    typealias Failure = PermessageDeflateInflater.Failure

    let input: UnsafeBufferPointer<UInt8>
    /// The next byte to read, counting the 4 restored `00 00 ff ff` bytes as following `input`.
    var position = 0
    /// Bits read but not consumed, the next one lowest; the bits above `bitCount` are zero.
    var bitBuffer: UInt64 = 0
    var bitCount = 0

    let window: UnsafeMutablePointer<UInt8>
    /// Bytes output by all messages, this one included so far.
    var totalOutput: Int
    /// Bytes output by this message.
    var produced = 0
    let keep: Int
    let maxOutput: Int
    var kept: [UInt8] = []

    init(
        input: UnsafeBufferPointer<UInt8>, window: UnsafeMutablePointer<UInt8>, totalOutput: Int, keep: Int, maxOutput: Int
    ) {
        self.input = input
        self.window = window
        self.totalOutput = totalOutput
        self.keep = keep
        self.maxOutput = maxOutput
    }

    var inputEnd: Int { input.count + 4 }

    mutating func run() throws(Failure) {
        while true {
            // A message ends on a block boundary: what is left is at most the last byte's padding.
            if bitCount + 8 * (inputEnd - position) < 8 { return }
            let header = try bits(3)
            switch header >> 1 {
            case 0: try storedBlock()
            case 1: try compressedBlock(literals: HuffmanCode.fixedLiterals, distances: HuffmanCode.fixedDistances)
            case 2:
                let (literals, distances) = try dynamicCodes()
                try compressedBlock(literals: literals, distances: distances)
            default: throw .malformed("block type 3")
            }
            if header & 1 == 1 { return }
        }
    }

    // MARK: Bits

    /// Fills `bitBuffer` with at least 56 bits, or with all the input has left.
    mutating func refill() {
        if position + 8 <= input.count {
            let word = UInt64(
                littleEndian: UnsafeRawPointer(input.baseAddress! + position).loadUnaligned(as: UInt64.self))
            let bytes = (63 - bitCount) >> 3
            bitBuffer |= (word & ((1 << UInt64(bytes << 3)) - 1)) << UInt64(bitCount)
            position += bytes
            bitCount += bytes << 3
            return
        }
        while bitCount <= 56 && position < inputEnd {
            let byte: UInt8 = position < input.count ? input[position] : (position - input.count < 2 ? 0 : 0xFF)
            bitBuffer |= UInt64(byte) << UInt64(bitCount)
            position += 1
            bitCount += 8
        }
    }

    @inline(__always)
    mutating func consume(_ count: Int) {
        bitBuffer >>= UInt64(count)
        bitCount -= count
    }

    /// The next `count` (at most 32) bits as a number, first bit lowest.
    @inline(__always)
    mutating func bits(_ count: Int) throws(Failure) -> Int {
        if bitCount < count {
            refill()
            guard bitCount >= count else { throw .malformed("input ends inside a block") }
        }
        let value = Int(truncatingIfNeeded: bitBuffer & ((1 << UInt64(count)) - 1))
        consume(count)
        return value
    }

    @inline(__always)
    mutating func decode(_ code: HuffmanCode) throws(Failure) -> Int {
        if bitCount < 15 { refill() }
        let entry = Int(code.fast[Int(truncatingIfNeeded: bitBuffer) & HuffmanCode.fastMask])
        let length = entry & 15
        if length != 0 && length <= bitCount {
            consume(length)
            return entry >> 4
        }
        return try decodeLong(code)
    }

    /// A code longer than the fast table's (or an unused or cut-off one), bit by bit as zlib's puff.c does.
    mutating func decodeLong(_ code: HuffmanCode) throws(Failure) -> Int {
        var value = 0  // the code's bits so far, first bit highest
        var first = 0  // the first code of this length
        var index = 0  // where this length's symbols start
        for length in 1...15 {
            guard length <= bitCount else { throw .malformed("input ends inside a block") }
            value |= Int(truncatingIfNeeded: bitBuffer >> UInt64(length - 1)) & 1
            let count = Int(code.counts[length])
            if value - first < count {
                consume(length)
                return Int(code.symbols[index + value - first])
            }
            index += count
            first = (first + count) << 1
            value <<= 1
        }
        throw .malformed("invalid Huffman code")
    }

    // MARK: Output

    @inline(__always)
    mutating func emit(_ byte: UInt8) throws(Failure) {
        guard produced < maxOutput else { throw .outputLimit }
        window[totalOutput & PermessageDeflateInflater.windowMask] = byte
        totalOutput += 1
        if produced < keep { kept.append(byte) }
        produced += 1
    }

    mutating func emit(_ bytes: UnsafeBufferPointer<UInt8>) throws(Failure) {
        guard bytes.count <= maxOutput - produced else { throw .outputLimit }
        if produced < keep { kept += bytes.prefix(keep - produced) }
        // Only the last window's worth can be referred to.
        let size = PermessageDeflateInflater.windowSize
        var from = max(0, bytes.count - size)
        totalOutput += from
        while from < bytes.count {
            let at = totalOutput & PermessageDeflateInflater.windowMask
            let count = min(size - at, bytes.count - from)
            (window + at).update(from: bytes.baseAddress! + from, count: count)
            totalOutput += count
            from += count
        }
        produced += bytes.count
    }

    /// Copies `length` bytes from `distance` back, which may overlap what it writes (RFC 1951 §3.2.3).
    @inline(__always)
    mutating func copyMatch(length: Int, distance: Int) throws(Failure) {
        guard distance <= totalOutput else { throw .malformed("distance too far back") }
        guard length <= maxOutput - produced else { throw .outputLimit }
        let mask = PermessageDeflateInflater.windowMask
        let start = totalOutput
        var from = start - distance
        for _ in 0..<length {
            window[totalOutput & mask] = window[from & mask]
            from += 1
            totalOutput += 1
        }
        if produced < keep {
            for offset in 0..<min(length, keep - produced) { kept.append(window[(start + offset) & mask]) }
        }
        produced += length
    }

    // MARK: Blocks

    mutating func storedBlock() throws(Failure) {
        consume(bitCount & 7)  // to a byte boundary
        let length = try bits(16)
        guard length ^ (try bits(16)) == 0xFFFF else { throw .malformed("stored block length check failed") }
        var remaining = length
        while remaining > 0 && bitCount > 0 {
            try emit(UInt8(truncatingIfNeeded: bitBuffer))
            consume(8)
            remaining -= 1
        }
        while remaining > 0 {
            if position < input.count {
                let count = min(remaining, input.count - position)
                try emit(UnsafeBufferPointer(rebasing: input[position..<position + count]))
                position += count
                remaining -= count
            } else {
                guard position < inputEnd else { throw .malformed("input ends inside a stored block") }
                try emit(position - input.count < 2 ? 0 : 0xFF)
                position += 1
                remaining -= 1
            }
        }
    }

    /// RFC 1951 §3.2.5: length symbols 257...285 and distance symbols 0...29.
    static let lengthBases: [UInt16] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258,
    ]
    static let lengthExtraBits: [UInt8] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ]
    static let distanceBases: [UInt16] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
        4097, 6145, 8193, 12289, 16385, 24577,
    ]
    static let distanceExtraBits: [UInt8] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
    ]

    mutating func compressedBlock(literals: HuffmanCode, distances: HuffmanCode) throws(Failure) {
        let lengthBases = Self.lengthBases, lengthExtraBits = Self.lengthExtraBits
        let distanceBases = Self.distanceBases, distanceExtraBits = Self.distanceExtraBits
        while true {
            let symbol = try decode(literals)
            if symbol < 256 {
                try emit(UInt8(truncatingIfNeeded: symbol))
                continue
            }
            if symbol == 256 { return }
            let lengthIndex = symbol - 257
            guard lengthIndex < 29 else { throw .malformed("invalid length symbol \(symbol)") }
            let length = Int(lengthBases[lengthIndex]) + (try bits(Int(lengthExtraBits[lengthIndex])))
            let distanceIndex = try decode(distances)
            guard distanceIndex < 30 else { throw .malformed("invalid distance symbol \(distanceIndex)") }
            let distance = Int(distanceBases[distanceIndex]) + (try bits(Int(distanceExtraBits[distanceIndex])))
            try copyMatch(length: length, distance: distance)
        }
    }

    /// The order in which a dynamic block lists its code-length code's lengths (RFC 1951 §3.2.7).
    static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    /// A dynamic block's header: its literal/length and distance codes (RFC 1951 §3.2.7).
    mutating func dynamicCodes() throws(Failure) -> (literals: HuffmanCode, distances: HuffmanCode) {
        let literalCount = try bits(5) + 257
        let distanceCount = try bits(5) + 1
        let codeLengthCount = try bits(4) + 4
        guard literalCount <= 286, distanceCount <= 30 else { throw .malformed("too many length or distance codes") }
        var codeLengthLengths = [UInt8](repeating: 0, count: 19)
        for index in 0..<codeLengthCount {
            codeLengthLengths[Self.codeLengthOrder[index]] = UInt8(try bits(3))
        }
        let codeLengthCode = try HuffmanCode(lengths: codeLengthLengths[...], allowsLoneCode: false)

        var lengths = [UInt8](repeating: 0, count: literalCount + distanceCount)
        var index = 0
        while index < lengths.count {
            let symbol = try decode(codeLengthCode)
            if symbol < 16 {
                lengths[index] = UInt8(symbol)
                index += 1
                continue
            }
            let length: UInt8
            let repeats: Int
            switch symbol {
            case 16:
                guard index > 0 else { throw .malformed("repeat with no length before it") }
                length = lengths[index - 1]
                repeats = 3 + (try bits(2))
            case 17:
                length = 0
                repeats = 3 + (try bits(3))
            default:
                length = 0
                repeats = 11 + (try bits(7))
            }
            guard index + repeats <= lengths.count else { throw .malformed("code lengths run past their count") }
            for _ in 0..<repeats {
                lengths[index] = length
                index += 1
            }
        }
        guard lengths[256] != 0 else { throw .malformed("no end-of-block code") }
        return (
            try HuffmanCode(lengths: lengths[..<literalCount], allowsLoneCode: true),
            try HuffmanCode(lengths: lengths[literalCount...], allowsLoneCode: true)
        )
    }
}
