#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// How many tasks the kernel has ready to run right now, all CPUs together (the running tasks
/// included): the numerator of the fourth field of `/proc/loadavg` ("0.52 0.58 0.59 3/245 12345").
/// Read with one `pread` on a descriptor opened once (`prepare()`, when a background thread starts,
/// so not at a moment the process may be out of descriptors); nil where the file cannot be read.
enum ReadyTasks {
    private static let descriptor: Int32 = open("/proc/loadavg", O_RDONLY | O_CLOEXEC)

    /// Opens the file now, if it is not open yet.
    static func prepare() { _ = descriptor }

    /// The tasks ready to run now, all CPUs together; nil if `/proc/loadavg` cannot be read.
    static func count() -> Int? {
        guard descriptor >= 0 else { return nil }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 128) { buffer -> Int? in
            let read = pread(descriptor, buffer.baseAddress, buffer.count, 0)
            guard read > 0 else { return nil }
            return parse(UnsafeBufferPointer(rebasing: buffer[..<read]))
        }
    }

    /// The ready count in the text of `/proc/loadavg`; nil if it is not there.
    static func parse(_ text: UnsafeBufferPointer<UInt8>) -> Int? {
        var field = 0
        var index = 0
        // Skip three fields and the spaces after each.
        while index < text.count, field < 3 {
            if text[index] == UInt8(ascii: " ") {
                field += 1
                while index + 1 < text.count, text[index + 1] == UInt8(ascii: " ") { index += 1 }
            }
            index += 1
        }
        var value = 0
        var digits = 0
        while index < text.count, text[index] >= UInt8(ascii: "0"), text[index] <= UInt8(ascii: "9"), digits < 9 {
            value = value * 10 + Int(text[index] - UInt8(ascii: "0"))
            digits += 1
            index += 1
        }
        guard field == 3, digits > 0, index < text.count, text[index] == UInt8(ascii: "/") else { return nil }
        return value
    }
}
