import XCTest

@testable import TracegateTrace

/// Messages as permessage-deflate senders make them: Python's zlib, `compressobj(level, DEFLATED, -15)`,
/// `compress` + `flush(Z_SYNC_FLUSH)`, the trailing `00 00 ff ff` stripped. Several messages of one
/// test come from one compressor, in order, so later ones refer back into earlier ones.
final class PermessageDeflateInflaterTests: XCTestCase {
    private let unlimited = Int.max

    /// The examples of RFC 7692 §7.2.3: one block, a shared window, a stored block, BFINAL set, two blocks.
    func testTheRFCsExamples() throws {
        let hello = Array("Hello".utf8)
        for (name, message) in [
            ("one compressed block", [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
            ("stored block", [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]),
            ("BFINAL set", [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]),
            ("two blocks", [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00]),
        ] as [(String, [UInt8])] {
            var inflater = PermessageDeflateInflater()
            let output = try inflater.inflate(message: message, keep: unlimited, maxOutput: unlimited)
            XCTAssertEqual(output.kept, hello, name)
            XCTAssertEqual(output.length, 5, name)
        }
        var inflater = PermessageDeflateInflater()
        for message: [UInt8] in [[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], [0xf2, 0x00, 0x11, 0x00, 0x00]] {
            XCTAssertEqual(try inflater.inflate(message: message, keep: unlimited, maxOutput: unlimited).kept, hello)
        }
    }

    func testAStoredBlock() throws {
        XCTAssertEqual(Vectors.stored[0] >> 1 & 3, 0, "block type")
        XCTAssertEqual(try inflate([Vectors.stored]), [Array("A stored block: level 0 copies the bytes as they are.".utf8)])
    }

    func testFixedHuffmanCodes() throws {
        XCTAssertEqual(Vectors.fixed[0] >> 1 & 3, 1, "block type")
        XCTAssertEqual(try inflate([Vectors.fixed]), [Array("Hello, permessage-deflate! Hello again.".utf8)])
    }

    func testDynamicHuffmanCodesOfAChatRequest() throws {
        XCTAssertEqual(Vectors.chat[0] >> 1 & 3, 2, "block type")
        let request = Self.chatRequest()
        XCTAssertEqual(request.count, 2338)
        XCTAssertEqual(try inflate([Vectors.chat]), [request])
    }

    /// The second message is a back-reference into the first: it reads only with the first one's window.
    func testContextTakeover() throws {
        let sentence = Array("The same sentence, sent twice, is a back-reference the second time.".utf8)
        XCTAssertEqual(try inflate([Vectors.takeover1, Vectors.takeover2]), [sentence, sentence])

        var fresh = PermessageDeflateInflater()
        XCTAssertThrowsError(try fresh.inflate(message: Vectors.takeover2, keep: unlimited, maxOutput: unlimited)) {
            XCTAssertEqual($0 as? PermessageDeflateInflater.Failure, .malformed("distance too far back"))
        }
    }

    /// 200 letters, 32,000 dots, then the letters again as the next message: a copy from 32,200 bytes
    /// back, across the message boundary.
    func testABackReferenceNearlyAWindowBack() throws {
        var letters: [UInt8] = []
        var state = 7
        for _ in 0..<200 {
            state = (state * 1_103_515_245 + 12345) & 0x7fff_ffff
            letters.append(UInt8(97 + (state >> 16) % 26))
        }
        XCTAssertEqual(Vectors.far2.count, 7, "a single copy")
        XCTAssertEqual(
            try inflate([Vectors.far1, Vectors.far2]), [letters + [UInt8](repeating: 0x2e, count: 32000), letters])
    }

    /// 100 KB in four messages of 25 KB from one compressor: the ring wraps, and each message copies
    /// from the one before.
    func testALargerRoundTrip() throws {
        let text = Self.largeText()
        let messages = try inflate([Vectors.big0, Vectors.big1, Vectors.big2, Vectors.big3])
        XCTAssertEqual(messages.map(\.count), [25000, 25000, 25000, 25000])
        XCTAssertEqual(messages.flatMap { $0 }, text)
    }

    func testKeepingAPrefixStillCountsTheWholeLength() throws {
        let request = Self.chatRequest()
        for keep in [0, 1, 10, 1000, request.count, request.count + 1] {
            var inflater = PermessageDeflateInflater()
            let output = try inflater.inflate(message: Vectors.chat, keep: keep, maxOutput: unlimited)
            XCTAssertEqual(output.kept, Array(request.prefix(keep)), "keep \(keep)")
            XCTAssertEqual(output.length, request.count, "keep \(keep)")
        }
        // A prefix kept from the first message does not cut the window the second one copies from.
        var inflater = PermessageDeflateInflater()
        _ = try inflater.inflate(message: Vectors.takeover1, keep: 3, maxOutput: unlimited)
        let second = try inflater.inflate(message: Vectors.takeover2, keep: 8, maxOutput: unlimited)
        XCTAssertEqual(second.kept, Array("The same".utf8))
        XCTAssertEqual(second.length, 67)
    }

    /// At most `maxOutput` bytes: literals, copies (the chat request) and stored bytes alike.
    func testOutputPastTheLimitThrows() throws {
        for (name, message, length) in [
            ("dynamic", Vectors.chat, 2338), ("stored", Vectors.stored, 53), ("fixed", Vectors.fixed, 39),
        ] {
            var inflater = PermessageDeflateInflater()
            XCTAssertEqual(try inflater.inflate(message: message, keep: 0, maxOutput: length).length, length, name)
            for maxOutput in [0, 1, length / 2, length - 1] {
                var inflater = PermessageDeflateInflater()
                XCTAssertThrowsError(try inflater.inflate(message: message, keep: 0, maxOutput: maxOutput), name) {
                    XCTAssertEqual($0 as? PermessageDeflateInflater.Failure, .outputLimit, "\(name), \(maxOutput)")
                }
            }
        }
        // A small message that would inflate to a lot: 32,000 dots behind the letters.
        var inflater = PermessageDeflateInflater()
        XCTAssertThrowsError(try inflater.inflate(message: Vectors.far1, keep: 0, maxOutput: 10_000)) {
            XCTAssertEqual($0 as? PermessageDeflateInflater.Failure, .outputLimit)
        }
    }

    func testMalformedInputThrows() {
        let cases: [(String, [UInt8], PermessageDeflateInflater.Failure?)] = [
            ("block type 3", [0x06], .malformed("block type 3")),
            (
                "stored length and its complement disagree", [0x00, 0x05, 0x00, 0x00, 0x00],
                .malformed("stored block length check failed")
            ),
            (
                "stored block longer than the input and the trailer", [0x00, 0x0a, 0x00, 0xf5, 0xff, 0x48],
                .malformed("input ends inside a stored block")
            ),
            // Fixed codes: a copy of 3 bytes from 1 back, with nothing output yet.
            ("copy before any output", [0x02, 0x02, 0x00], .malformed("distance too far back")),
            // Dynamic block, cut short: the restored trailer is read as its data and then runs out.
            ("cut short", Array(Vectors.chat.prefix(100)), nil),
        ]
        for (name, message, expected) in cases {
            var inflater = PermessageDeflateInflater()
            XCTAssertThrowsError(try inflater.inflate(message: message, keep: unlimited, maxOutput: unlimited), name) {
                guard let failure = $0 as? PermessageDeflateInflater.Failure else { return XCTFail(name) }
                if let expected {
                    XCTAssertEqual(failure, expected, name)
                } else if case .outputLimit = failure {
                    XCTFail(name)
                }
            }
        }
    }

    /// An empty payload, and an empty stored block (RFC 7692 §7.2.3.6), are empty messages.
    func testEmptyMessages() throws {
        var inflater = PermessageDeflateInflater()
        for message: [UInt8] in [[], [0x00]] {
            let output = try inflater.inflate(message: message, keep: unlimited, maxOutput: 0)
            XCTAssertEqual(output.kept, [])
            XCTAssertEqual(output.length, 0)
        }
    }

    // MARK: Helpers

    /// Inflates the messages in order with one inflater, keeping all of each.
    private func inflate(_ messages: [[UInt8]]) throws -> [[UInt8]] {
        var inflater = PermessageDeflateInflater()
        return try messages.map { message in
            let output = try inflater.inflate(message: message, keep: unlimited, maxOutput: unlimited)
            XCTAssertEqual(output.kept.count, output.length)
            return output.kept
        }
    }

    /// A chat-completions request of 2,338 bytes, as `Vectors.chat` was made from.
    static func chatRequest() -> [UInt8] {
        var json = #"{"model":"gpt-4o","stream":true,"messages":[{"role":"system","content":"You are a helpful assistant. Answer briefly."}"#
        for turn in 1...20 {
            json += #",{"role":"user","content":"Question \#(turn): what is \#(turn) times 7?"}"#
            json += #",{"role":"assistant","content":"\#(turn) times 7 is \#(turn * 7)."}"#
        }
        return Array((json + "]}").utf8)
    }

    /// 100,000 bytes of lines: paragraphs of eight phrases, in one of four orders a linear
    /// congruential generator picks.
    static func largeText() -> [UInt8] {
        let phrases = [
            "the quick brown fox jumps over the lazy dog", "tracegate forwards the request upstream",
            "a websocket message may refer back into an earlier one", "lorem ipsum dolor sit amet",
            #"{"role":"assistant","content":"ok"}"#, "0123456789", "permessage-deflate", "sliding window of 32 KiB",
        ]
        var text: [UInt8] = []
        var state = 2024
        while text.count < 100_000 {
            state = (state * 1_103_515_245 + 12345) & 0x7fff_ffff
            let order = (state >> 16) % 4
            for index in 0..<8 { text += Array("\(phrases[(index * (2 * order + 1) + order) % 8])\n".utf8) }
        }
        return Array(text.prefix(100_000))
    }
}

/// The compressed messages, in hex.
private enum Vectors {
    static func bytes(_ hex: String) -> [UInt8] {
        let digits = hex.utf8.compactMap { UInt8(String(UnicodeScalar($0)), radix: 16) }
        return stride(from: 0, to: digits.count, by: 2).map { digits[$0] << 4 | digits[$0 + 1] }
    }

    static let stored = bytes(
        """
        003500caff412073746f72656420626c6f636b3a206c6576656c203020636f7069657320746865206279746573206173
        2074686579206172652e00
        """)
    static let fixed = bytes(
        "f248cdc9c9d75128482dca4d2d2e4e4c4fd54d494dcb492c495554f000492924a62766e6e90100")
    static let chat = bytes(
        """
        94d5bb6ec3300c85e1571134a7818f7cf752f4113a164507b7555203be04968c2008f2ee4d9688dcc8d510f57be1a7ab
        9d965f3fdace1e4ff1a558ecce86b8fa7eb25d5c37bfb3930fa13ffa60bbcfab5d97d1df8f864b887eba1ffd59e6e8e7
        78fff4b16ca65fbde9cd9f1f4f876d347d084388fd1cf7e66d0e67bf9aef75f087f1b2b7b7ddf3aa2df8955df4bef910
        876536e8ccf9af8f660806260ef7ff30f52b1d7d06d8fcf3ec63b016b65c6a3945cbd1160a612c4fb15c11cb69cc4118
        2b52ac50c40a166b84b132c54a45aca4b1bc14c6aa14ab14b18ac60a278cd529562b62358bb5c25893628d22d6d05859
        09636d8ab58a584b63552edde98c2c75a6d9ea8cad7526ed5144548a7046a48e8040028d24609434524a402c81061330
        4d5aa926209c40e3091828ad14141051a02105cc146452544054818615305700292c20b240430b6a1e94e202a20b34bc
        80f90227050644186888013306b914194790711a645cc6dff387325fb77f00
        """)
    static let takeover1 = bytes(
        """
        0ac94855284ecc0512a97925a979c9a93a609642497926889d59ac90a89094989cad5b949a965a0452a05002d2929a9c
        9f97a25092999baa0700
        """)
    static let takeover2 = bytes(
        "0aa1dc080000")
    static let far1 = bytes(
        """
        ecced97583300000c18ed2932c0e81640e0983a1fae42365cc14b06fdf7d884389ad3bd2b2f767de3eebddd2dceafb7b
        8e7d59dfedaa29acd31cae395ffbb86fa93e47eaafa36fa54f3994b5bd9f2b4d21a4b6c76e284b6a6bbd3ea59ddd5c87
        6e6ef91e3f4faec719d72ece4f3bf69c6a8bf12c29c754f7d76738cf7d5bae2d9776842575cb7dc43e7f9f6b8bdf27b5
        b9fe0ddc29dcddf6fadee13595945ae88f71fc6be7617f6a9b7e00000000000000000000000000000000000000000000
        000000000000000000fefd02
        """)
    static let far2 = bytes(
        "ca1d26f7b80300")
    static let big0 = bytes(
        """
        ec97cd4ec3301084ef7e8a55ce2041cb6f8f5c790a37d914d3244e6d875010ef8e8538f4d05669c589995bd358b1f7cb
        eccc26bda86c0657ae6519fcd849eddfe57568fb28fe4d83a47cbbb11f5ba9fccaa4604b5dd9a47955186da8e2cffda0
        9b416392a18f29a86d8d955197d1976b4dd26a8c76a5d2da6d5e58e7472e6ddecc75c98bed446d685cfed3776a1a1fb4
        15d7c7a1cddbe52b892e896d3599cf22f8468b4561637431d92e151745e9bba4f9d7a2f0ebe2cb5c5dcfe637b777f70f
        8fa6d7f0bbef65a575934f6c62e32ad7ad64745de547f1b5cc67f2ec9e4c22007400138b9a7284839b9c4964a7a453de
        d311907bc8c00338f36c076b9d026a2af43dc73d52dc298c76d1a22b800008001d00e70070051c597de6b1a7223da5a6
        8368f754b483ed2f33f9df2a808310ba02e801e80a809f03688254001580ad0002808f4174009c04d115401384570001
        a00340f700f8188407c0af41740f800700df02f026c84108dd0308001e003d005c018c417405c04f82f02608af007800
        f02dc018640c827b003c00b600ba02e00130063908812b001e0063103d0508001d007c0cc203808f4178003441740f80
        9f04e115006f82f000d802f00a600a80b70001c00340f700f8148007c0cf6178138407809e02f000e04d101e00e70074
        05c003f8a339e01b
        """)
    static let big1 = bytes(
        """
        ecd8010dc0400cc340feac4b23d59982e5f8bbfdbd03324037a043489f4077806e00df8000e8cf201f41de801a900119
        801bc003d027d01da01bd0d7201f411e80de8000f000f806044007a037a04b5037806f4013d00da801ba0135409f403f
        456b00de007e023c007e027c0403a003a801fa29cc4f80bf03f809f006f000f809f0af007f08d500be013a007e027c04
        f909f000f806644006e006f01f43bc0135403720007c0475007d0dea0dc800dd00fe100a800e806f007f0805409f4087
        903e01fe19e427c01b5003740302a003e02fc12d0007
        """)
    static let big2 = bytes(
        """
        ecdac111c04008c3c0febba60a7f58b5a0c1325cd28b5011e8186a13ac0673400ee841a447d1aec15e84fa3adc97a124
        9804db047340bfc9cd6b30003a805a406f013e023c003e02fc22540be81310001e80de02ed017a04f809680fd0251800
        5d8201d001f035c84f402dd004e0139004f509e01dc047a073b808e011e02780774011d017213e024d803e010108000e
        8097200f808f40007400fc391c805a0077000f807700ff24c64720003a00de0101d001f00ee01721fe18e21dc0034882
        ba0378007c0402a003e01dd01e50048a801d8197e7f001
        """)
    static let big3 = bytes(
        """
        ecdc091100300c0241ffae5180825b0b0c4f4233f538ea585a2bec58da32641700805a5c2dce042d434a5100f0001e40
        027e907028a9125389d905a4804148292a05a48041c89d2000982013f43aec61440c4a0129a00f7026c7039cca2a445c
        89791902000fc0803a03f229000000b401b00bd45320cf80bc07e42590670000eacb90142081b80400509740de04f300
        e43dc02e80017106e44d10007500f21e60142681b804f200e43d0000008803c004eb0cc8f701f94910007500a4403d05
        30a0ce80fc1c400224109700067c0006
        """)
}
