import NIOConcurrencyHelpers
import NIOSSL

/// The public listener's TLS certificate and key, replaceable while serving: new connections use
/// the latest context, open ones keep the one they started with.
public final class ServerTLS: Sendable {
    private let certificateFile: String
    private let keyFile: String
    private let current: NIOLockedValueBox<NIOSSLContext>

    /// Reads both PEM files; throws when either cannot be read or they do not form a usable pair.
    public init(certificateFile: String, keyFile: String) throws {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.current = NIOLockedValueBox(try Self.makeContext(certificateFile: certificateFile, keyFile: keyFile))
    }

    var context: NIOSSLContext { current.withLockedValue { $0 } }

    /// Reads the files again; on failure the previous certificate stays in use.
    public func reload() throws {
        let context = try Self.makeContext(certificateFile: certificateFile, keyFile: keyFile)
        current.withLockedValue { $0 = context }
    }

    private static func makeContext(certificateFile: String, keyFile: String) throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: keyFile, format: .pem)
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        configuration.applicationProtocols = ["http/1.1"]
        return try NIOSSLContext(configuration: configuration)
    }
}
