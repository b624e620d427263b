import Logging
import ServiceLifecycle
import TracegateProxy
import UnixSignals

/// SIGHUP reloads the listener's certificate; other settings need a restart (see README).
struct CertificateReloadService: Service {
    /// Trapped before the listener is ready, so an early SIGHUP never kills the process.
    let hangups: UnixSignalsSequence
    let tls: ServerTLS?
    let logger: Logger

    func run() async {
        for await _ in hangups.cancelOnGracefulShutdown() {
            guard let tls else {
                logger.notice("SIGHUP: nothing to reload (only the TLS certificate is; other settings need a restart)")
                continue
            }
            do {
                try tls.reload()
                logger.notice("SIGHUP: reloaded the TLS certificate; new connections use it")
            } catch {
                logger.error("SIGHUP: cannot reload the TLS certificate, keeping the current one: \(error)")
            }
        }
    }
}
