import Logging
import NIOConcurrencyHelpers

/// Keeps every log message with its metadata, in order.
struct RecordingLogHandler: LogHandler {
    let messages: NIOLockedValueBox<[(String, Logger.Metadata)]>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        messages.withLockedValue { $0.append((event.message.description, event.metadata ?? [:])) }
    }
}
