import Foundation
import TracegateTrace

/// The exporter's place on disk: traces still owing their spans (`spans/`), traces whose spans are
/// stored but whose trace info is still owed (`info/`), and the dead-letter file.
public struct ExportSpool: Sendable {
    public let directory: String
    public let spans: TraceSpool
    public let traceInfo: TraceSpool
    public let deadLetters: DeadLetterFile

    /// `maxBytes` bounds each of the two queues.
    public init(directory: String, maxBytes: Int, fsyncInterval: Duration = .seconds(1)) throws {
        self.directory = directory
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw SpoolError("cannot create the spool directory \(directory): \(error.localizedDescription)")
        }
        spans = try TraceSpool(configuration: .init(directory: directory + "/spans", maxBytes: maxBytes, fsyncInterval: fsyncInterval))
        traceInfo = try TraceSpool(configuration: .init(directory: directory + "/info", maxBytes: maxBytes, fsyncInterval: fsyncInterval))
        deadLetters = DeadLetterFile(path: directory + "/dead-letter.jsonl")
    }
}
