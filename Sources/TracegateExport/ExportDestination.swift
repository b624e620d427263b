/// Where an exporter delivers traces.
public enum ExportDestination: Sendable {
    /// An OpenTelemetry backend: spans only.
    case spans(any SpanSink)
    /// An MLflow tracking server: the experiment is resolved before the first delivery, spans go into
    /// it, and each stored trace then gets StartTraceV3 (client_request_id, metadata).
    case mlflow(any MLflowTraceSink, experiment: ExperimentSource)
}
