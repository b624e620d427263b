import XCTest

@testable import TracegateTrace

/// Texts read out of binary protobuf messages without a schema, on bytes the real Streamlit
/// protobuf classes produced.
final class ProtobufTextsTests: XCTestCase {
    private func bytes(_ hex: String) -> ArraySlice<UInt8> {
        var result: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            result.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return result[...]
    }

    /// `BackMsg(rerun_script=ClientState(widget_states=[WidgetState(id="$$ID-8c1f-chat",
    /// chat_input_value=ChatInputValue(data="What is the refund policy?"))], page_script_hash="a1b2c3"))`
    private let backMsg =
        "5a3a12300a2e0a0e242449442d386331662d636861747a1c0a1a576861742069732074686520726566756e6420706f6c6963793f1a06613162326333"
    /// `ForwardMsg(hash="9f8e7d", metadata=ForwardMsgMetadata(delta_path=[0, 1, 0]),
    /// delta=Delta(new_element=Element(markdown=Markdown(body="Refunds take **5 days**."))))`
    private let forwardMsg = "0a06396638653764120512030001002a1f1a1dea011a0a18526566756e64732074616b65202a2a3520646179732a2a2e"

    func testTheTextsOfNestedMessagesAreFoundInOrderAndPackedNumbersAreNoText() {
        XCTAssertEqual(ProtobufTexts.texts(in: bytes(backMsg)), ["$$ID-8c1f-chat", "What is the refund policy?", "a1b2c3"])
        XCTAssertEqual(ProtobufTexts.texts(in: bytes(forwardMsg)), ["9f8e7d", "Refunds take **5 days**."])
    }

    func testANestedMessageWhoseBytesAreAllPrintableIsStillReadAsOne() {
        // As Streamlit sends its session id: field 6 holds a message whose field 1 has 36 characters ("2&\n$…").
        let name = Array("the refund desk, session of a client".utf8)
        XCTAssertEqual(ProtobufTexts.texts(in: ([0x32, 0x26, 0x0A, 0x24] + name)[...]), [String(decoding: name, as: UTF8.self)])
        let uuid = Array("e0e22b4f-a310-4d7d-8cc3-16b4a6f4a9ce".utf8)
        XCTAssertEqual(ProtobufTexts.texts(in: ([0x32, 0x26, 0x0A, 0x24] + uuid)[...]), [], "the id is read, then left out")
        let lines = Array("Dear customer,\nyour refund is on its way.\n\tThe desk".utf8)
        XCTAssertEqual(ProtobufTexts.texts(in: ([0x0A, UInt8(lines.count)] + lines)[...]), [String(decoding: lines, as: UTF8.self)])
    }

    func testAMessageCutShortGivesTheTextsBeforeTheCutOnlyWhenItWasCutOnPurpose() {
        let cut = bytes(backMsg).dropLast(10)
        XCTAssertNil(ProtobufTexts.texts(in: cut), "bytes that end inside a field are no message")
        XCTAssertEqual(ProtobufTexts.texts(in: cut, truncated: true), ["$$ID-8c1f-chat", "What is the refund polic"])
        let midText = bytes(forwardMsg).dropLast(6)
        XCTAssertEqual(ProtobufTexts.texts(in: midText, truncated: true), ["9f8e7d", "Refunds take **5 d"])
    }

    func testATextCutShortStaysTextAndLosesOnlyAHalfCharacter() {
        let poem = Array("Roses are red\nviolets are blue".utf8)
        let cut = ([0x0A, UInt8(poem.count)] + poem).prefix(20)
        XCTAssertEqual(ProtobufTexts.texts(in: cut[...], truncated: true), ["Roses are red\nviol"], "not read as a message cut short")
        let accented = Array("café crème".utf8)
        let midCharacter = ([0x0A, UInt8(accented.count)] + accented).prefix(2 + 4)  // "caf" and half of "é"
        XCTAssertEqual(ProtobufTexts.texts(in: midCharacter[...], truncated: true), ["caf"])
        XCTAssertEqual(ProtobufTexts.texts(in: ([0x08] + [UInt8](repeating: 0x80, count: 11) + [0x01, 0x12, 0x01, 0x61])[...], truncated: true),
                       nil, "an 11-byte varint is malformed, not cut")
    }

    func testOpaqueIdsAreLeftOutAndTextAroundThemKept() {
        let ids = ["e0e22b4f-a310-4d7d-8cc3-16b4a6f4a9ce", "$$ID-5d86c102a3beb97d040b91e9ac9c7080-None", "48c4b5a2f1e3b03251d8d8c20f34f66b"]
        let texts = [
            "the blue kettle", "Commit 48c4b5a2f1e3b03251d8d8c20f34f66b is live", "no-machine-id-v4", "1.67.0",
            "https://github.com/org/repo/commit/48c4b5a2f1e3b03251d8d8c20f34f66b", "340282366920938463463374607431768211456",
            "supercalifragilisticexpialidocious-and-then-some", "48c4b5a2f1e3b03251d8d8c20f34f66-plus-a-31-digit-run",
            "返金は48c4b5a2f1e3b03251d8d8c20f34f66bの注文", "line\n48c4b5a2f1e3b03251d8d8c20f34f66b",
        ]
        let message: [UInt8] = (ids + texts).flatMap { [0x12, UInt8($0.utf8.count)] + Array($0.utf8) }
        XCTAssertEqual(ProtobufTexts.texts(in: message[...]), texts)
    }

    func testWhatIsNotProtobufIsNoMessage() {
        XCTAssertNil(ProtobufTexts.texts(in: Array(#"{"type":"hello"}"#.utf8)[...]), "JSON: `{` is a group start")
        XCTAssertNil(ProtobufTexts.texts(in: [0x08][...]), "a tag without its value")
        XCTAssertNil(ProtobufTexts.texts(in: [0x00, 0x01][...]), "field number 0")
        XCTAssertNil(ProtobufTexts.texts(in: [0x0F, 0x01][...]), "wire type 7")
        XCTAssertNil(ProtobufTexts.texts(in: [0x0A, 0x05, 0x61][...]), "a length past the end")
        XCTAssertNil(ProtobufTexts.texts(in: [][...]))
        XCTAssertEqual(ProtobufTexts.texts(in: [0x08, 0x96, 0x01, 0x15, 1, 2, 3, 4][...]), [], "numbers only: a message with no text")
    }

    func testBytesThatAreNeitherTextNorAMessageAreLeftOutAndNestingIsBounded() {
        XCTAssertEqual(ProtobufTexts.texts(in: [0x0A, 0x02, 0xFF, 0xFE, 0x12, 0x02, 0x68, 0x69][...]), ["hi"])
        var deep: [UInt8] = Array("deep".utf8)
        deep = [0x12, UInt8(deep.count)] + deep
        for _ in 0..<20 { deep = [0x0A, UInt8(deep.count)] + deep }
        let found = ProtobufTexts.texts(in: deep[...])
        XCTAssertNotNil(found, "a message nested past the depth limit is still a message")
        XCTAssertFalse(found!.contains("deep"), "its innermost text is not reached")
        let many = (0..<300).flatMap { _ in [0x12, 0x01, 0x61] as [UInt8] }
        XCTAssertEqual(ProtobufTexts.texts(in: many[...])?.count, ProtobufTexts.maxTexts)
    }
}
