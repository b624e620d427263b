import Foundation

/// Short, readable reasons for errors thrown by the caller's `readFile`.
enum ErrorReason {
    /// `No such file or directory` for Foundation file errors (from the underlying POSIX error),
    /// the `LocalizedError` description, or the error's own description.
    static func describe(_ error: any Error) -> String {
        let nsError = error as NSError
        let underlying = (nsError.userInfo[NSUnderlyingErrorKey] as? any Error).map { $0 as NSError }
        let posix = nsError.domain == NSPOSIXErrorDomain ? nsError : underlying
        if let posix, posix.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(truncatingIfNeeded: posix.code)))
        }
        if let localized = error as? LocalizedError, let description = localized.errorDescription {
            return description
        }
        if nsError.domain == NSCocoaErrorDomain {
            return nsError.localizedDescription
        }
        return String(describing: error)
    }
}
