/// A few lower-case ASCII words searched for in text, ASCII case ignored: the anchors of the built-in
/// redaction patterns (run over whole captured bodies) and the sensitive query-parameter words (run
/// for every access-log line). One pass over the bytes; a pair of bytes that starts no word costs one
/// bit test, and the words are stored flat, so the loop touches no reference-counted storage.
struct ASCIIWords: Sendable {
    /// Every word's bytes, one after the other.
    private let bytes: [UInt8]
    /// Where each word starts in `bytes`, and one past the last word.
    private let starts: [Int]
    /// One bit per (lower-cased) pair of bytes, `first << 8 | second`: whether some word starts with
    /// the pair (a one-letter word marks every pair it starts, `first << 8 | 0` among them, which
    /// stands for the text's last byte). English text starts a word's first letter often, its first
    /// two letters seldom.
    private let startsAWordPair: [UInt64]
    /// One bit per byte, either case: whether some word starts with it. Most bytes of a text start
    /// none, and are passed over on this alone.
    private let startsAWord: [UInt64]

    /// `words` must be lower-case ASCII (no NUL) and not empty.
    init(_ words: [String]) {
        var bytes: [UInt8] = []
        var starts: [Int] = []
        var pairs = [UInt64](repeating: 0, count: 65_536 / 64)
        var firsts = [UInt64](repeating: 0, count: 4)
        for word in words {
            let utf8 = Array(word.utf8)
            precondition(!utf8.isEmpty && utf8.allSatisfy { $0 != 0 && $0 < 0x80 && !(0x41...0x5A).contains($0) })
            for first in [utf8[0], (0x61...0x7A).contains(utf8[0]) ? utf8[0] - 0x20 : utf8[0]] {
                firsts[Int(first >> 6)] |= 1 << UInt64(first & 63)
            }
            starts.append(bytes.count)
            bytes += utf8
            for second in utf8.count > 1 ? [utf8[1]] : Array(0...255) {
                let pair = Int(utf8[0]) << 8 | Int(second)
                pairs[pair >> 6] |= 1 << UInt64(pair & 63)
            }
        }
        starts.append(bytes.count)
        self.bytes = bytes
        self.starts = starts
        startsAWordPair = pairs
        startsAWord = firsts
    }

    func occur(in text: String) -> Bool {
        var text = text
        return text.withUTF8 { occur(in: $0) }
    }

    func occur(in text: UnsafeBufferPointer<UInt8>) -> Bool {
        bytes.withUnsafeBufferPointer { words in
            starts.withUnsafeBufferPointer { starts in
                startsAWordPair.withUnsafeBufferPointer { pairs in
                    startsAWord.withUnsafeBufferPointer { firsts in
                        Self.occur(in: text, words: words, starts: starts, pairs: pairs, firsts: firsts)
                    }
                }
            }
        }
    }

    private static func occur(
        in text: UnsafeBufferPointer<UInt8>, words: UnsafeBufferPointer<UInt8>, starts: UnsafeBufferPointer<Int>,
        pairs: UnsafeBufferPointer<UInt64>, firsts: UnsafeBufferPointer<UInt64>
    ) -> Bool {
        @inline(__always) func lower(_ byte: UInt8) -> UInt8 { (byte >= 0x41 && byte <= 0x5A) ? byte | 0x20 : byte }
        var position = 0
        while position < text.count {
            let byte = text[position]
            guard firsts[Int(byte >> 6)] & (1 << UInt64(byte & 63)) != 0 else {
                position += 1
                continue
            }
            let first = lower(byte)
            // The last byte can only start a one-letter word: those mark the pair (first, 0).
            let second = position + 1 < text.count ? lower(text[position + 1]) : 0
            let pair = Int(first) << 8 | Int(second)
            if pairs[pair >> 6] & (1 << UInt64(pair & 63)) != 0 {
                var word = 0
                while word + 1 < starts.count {
                    let start = starts[word]
                    let length = starts[word + 1] - start
                    if words[start] == first && position + length <= text.count {
                        var offset = 1
                        while offset < length && lower(text[position + offset]) == words[start + offset] { offset += 1 }
                        if offset == length { return true }
                    }
                    word += 1
                }
            }
            position += 1
        }
        return false
    }
}
