import Foundation

/// Writes all of `bytes` to `fd` (short writes continue, `EINTR` is retried); the `errno` of a failure, or nil.
func writeFully(_ fd: Int32, _ bytes: some ContiguousBytes) -> Int32? {
    bytes.withUnsafeBytes { raw -> Int32? in
        guard let base = raw.baseAddress else { return nil }
        var offset = 0
        while offset < raw.count {
            let n = write(fd, base + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            offset += n
        }
        return nil
    }
}

/// `strerror` as a Swift string.
func describeErrno(_ code: Int32) -> String { String(cString: strerror(code)) }
