import ServiceLifecycle
import TracegateExport

/// Delivers queued feedback (`feedback_path`) to MLflow on the export thread, until shutdown.
struct FeedbackDeliveryService: Service {
    let delivery: FeedbackDelivery
    let executor: ExportExecutor

    func run() async {
        let delivery = self.delivery
        await executor.runAsService({ await delivery.run() }, stop: { delivery.stop() })
    }
}
