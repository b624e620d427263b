import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One file descriptor held back so that the listener can still accept at the open-file limit.
///
/// Why: when `accept` fails with `EMFILE`, SwiftNIO leaves the listener's read pending and keeps it
/// registered for readability, so it retries at once — thousands of times a second — and the accept
/// backoff never gets a say (it only acts on a read that is asked for again, which happens after a
/// successful accept). Releasing this descriptor lets the next accept succeed; that connection is
/// answered 503 and closed, the descriptor is taken back, and the backoff pauses accepting, leaving
/// the waiting connections in the kernel's backlog. (libuv and nginx use the same reserve.)
final class DescriptorReserve: Sendable {
    private struct State {
        var descriptor: CInt
        var released: Bool { descriptor < 0 }
    }

    private let state: NIOLockedValueBox<State>

    init() {
        state = NIOLockedValueBox(State(descriptor: Self.openPlaceholder()))
    }

    deinit {
        let descriptor = state.withLockedValue { $0.descriptor }
        if descriptor >= 0 { close(descriptor) }
    }

    /// Frees the reserved descriptor for the next accept.
    func release() {
        state.withLockedValue { state in
            guard !state.released else { return }
            close(state.descriptor)
            state.descriptor = -1
        }
    }

    /// True while the reserve is spent: connections accepted meanwhile are refused.
    var isReleased: Bool { state.withLockedValue { $0.released } }

    /// Takes the descriptor back (after a refused connection closed).
    func reacquire() {
        state.withLockedValue { state in
            guard state.released else { return }
            state.descriptor = Self.openPlaceholder()
        }
    }

    private static func openPlaceholder() -> CInt {
        open("/dev/null", O_RDONLY | O_CLOEXEC)
    }
}
