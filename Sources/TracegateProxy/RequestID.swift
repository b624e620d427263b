/// Random (version 4) UUIDs for requests that arrive without an id.
enum RequestID {
    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// A lowercase RFC 9562 version-4 UUID, e.g. `1b4e28ba-2fa1-4d2b-883f-0016d3cca427`.
    static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        var high = rng.next() as UInt64
        var low = rng.next() as UInt64
        high = (high & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000  // version 4
        low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000  // variant 10
        return String(unsafeUninitializedCapacity: 36) { buffer in
            var i = 0
            func put(_ value: UInt64, nibbles: Int) {
                for shift in stride(from: (nibbles - 1) * 4, through: 0, by: -4) {
                    buffer[i] = hex[Int((value >> UInt64(shift)) & 0xF)]
                    i += 1
                }
            }
            func dash() { buffer[i] = UInt8(ascii: "-"); i += 1 }
            put(high >> 32, nibbles: 8); dash()
            put((high >> 16) & 0xFFFF, nibbles: 4); dash()
            put(high & 0xFFFF, nibbles: 4); dash()
            put(low >> 48, nibbles: 4); dash()
            put(low & 0xFFFF_FFFF_FFFF, nibbles: 12)
            return i
        }
    }
}
