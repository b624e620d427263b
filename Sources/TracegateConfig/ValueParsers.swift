/// Why a value was refused, beyond the kind's list of accepted forms; nil reason when that list says it all.
struct ValueRejection: Error {
    var reason: String?

    init(_ reason: String? = nil) {
        self.reason = reason
    }
}

/// Parsers for the scalar value kinds: durations, sizes, booleans, integers, enums and tokens.
enum ValueParsers {
    /// `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds; fractions allowed (`1.5s`); must be > 0.
    static func duration(_ text: String) throws(ValueRejection) -> Duration {
        let lower = text.lowercased()
        let numberEnd = lower.firstIndex { !($0.isASCIIDigit || $0 == ".") } ?? lower.endIndex
        let nanosecondsPerUnit: Int64
        switch lower[numberEnd...] {
        case "", "s": nanosecondsPerUnit = 1_000_000_000
        case "ms": nanosecondsPerUnit = 1_000_000
        case "m": nanosecondsPerUnit = 60_000_000_000
        case "h": nanosecondsPerUnit = 3_600_000_000_000
        default: throw ValueRejection()
        }
        let parts = lower[..<numberEnd].split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, let wholeValue = Int64(whole) else {
            throw ValueRejection()
        }
        let (wholeNanoseconds, overflow) = wholeValue.multipliedReportingOverflow(by: nanosecondsPerUnit)
        guard !overflow else { throw ValueRejection("it is too long") }
        var nanoseconds = wholeNanoseconds
        if parts.count == 2 {
            let fraction = parts[1]
            guard (1...9).contains(fraction.count), let fractionValue = Double("0." + fraction) else {
                throw ValueRejection()
            }
            let (sum, overflow) = nanoseconds.addingReportingOverflow(
                Int64((fractionValue * Double(nanosecondsPerUnit)).rounded()))
            guard !overflow else { throw ValueRejection("it is too long") }
            nanoseconds = sum
        }
        guard nanoseconds > 0 else { throw ValueRejection("it must be greater than zero") }
        return .nanoseconds(nanoseconds)
    }

    /// A byte count: bare bytes or `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB` (all ×1024), any case.
    static func size(_ text: String) throws(ValueRejection) -> Int {
        let lower = text.lowercased()
        let numberEnd = lower.firstIndex { !$0.isASCIIDigit } ?? lower.endIndex
        let multiplier: Int
        switch lower[numberEnd...] {
        case "", "b": multiplier = 1
        case "k", "kb", "kib": multiplier = 1 << 10
        case "m", "mb", "mib": multiplier = 1 << 20
        case "g", "gb", "gib": multiplier = 1 << 30
        default: throw ValueRejection()
        }
        guard numberEnd > lower.startIndex, let number = Int(lower[..<numberEnd]) else {
            throw ValueRejection()
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { throw ValueRejection("it is too large") }
        return bytes
    }

    /// `true/false`, `yes/no`, `on/off`, `1/0`, any case.
    static func bool(_ text: String) throws(ValueRejection) -> Bool {
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw ValueRejection()
        }
    }

    /// A decimal integer within `range`.
    static func integer(_ text: String, in range: ClosedRange<Int>) throws(ValueRejection) -> Int {
        guard let value = Int(text) else { throw ValueRejection() }
        guard range.contains(value) else { throw ValueRejection("\(value) is out of range") }
        return value
    }

    /// One of the enum's raw values, any case.
    static func oneOf<E: RawRepresentable & CaseIterable>(_ text: String, _: E.Type) throws(ValueRejection) -> E
    where E.RawValue == String {
        let lower = text.lowercased()
        guard let value = E.allCases.first(where: { $0.rawValue == lower }) else { throw ValueRejection() }
        return value
    }

    /// An HTTP field name: a non-empty RFC 9110 token.
    static func token(_ text: String) throws(ValueRejection) -> String {
        guard !text.isEmpty, text.allSatisfy(isTokenCharacter) else { throw ValueRejection() }
        return text
    }

    /// RFC 9110 `tchar`.
    static func isTokenCharacter(_ c: Character) -> Bool {
        c.isASCIILetter || c.isASCIIDigit || "!#$%&'*+-.^_`|~".contains(c)
    }
}
