import AsyncHTTPClient
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import TracegateConfig
import TracegateProxy
import TracegateExport
import TracegateTrace

/// Runs tracegate: binds the listeners, serves until SIGTERM/SIGINT, then drains and exits.
public enum TracegateApp {
    /// Returns the process exit code.
    public static func run(settings: TracegateSettings) async -> Int32 {
        Malloc.limitArenas()
        let logger = makeLogger(level: settings.logLevel)
        var settings = settings
        let openFiles = FileDescriptorLimit.raiseToHardLimit()
        let allowed = FileDescriptorLimit.connectionsAllowed(byLimit: openFiles)
        if settings.maxConnections == 0 {
            settings.maxConnections = allowed
        } else if settings.maxConnections > allowed {
            logger.warning(
                "max_connections (\(settings.maxConnections)) is more than the open-file limit (\(openFiles)) allows (\(allowed)): beyond that, accepts fail and are counted in tracegate_accept_errors_total")
        }
        let threads = settings.threads == 0 ? System.coreCount : settings.threads
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let code = await serve(settings: settings, group: group, threads: threads, logger: logger)
        try? await group.shutdownGracefully()
        return code
    }

    private static func serve(
        settings: TracegateSettings, group: EventLoopGroup, threads: Int, logger: Logger
    ) async -> Int32 {

        let accessLog: LineWriter? = settings.accessLog == .off ? nil : LineWriter()
        let metrics = TracegateMetrics()
        let tracing: TracingPipeline?
        do {
            tracing = try TracingPipeline(settings: settings, metrics: metrics, logger: logger)
        } catch let error as SpoolError {
            logger.critical("cannot use spool_dir: \(error)")
            return 2
        } catch {
            logger.critical("cannot open the trace file \(settings.traceFile ?? ""): \(error)")
            return 2
        }
        if let path = settings.feedbackPath, tracing?.feedback == nil {
            logger.critical(
                "feedback_path \(path) needs traces exported to MLflow: set MLFLOW_TRACKING_URI (and leave capture on)")
            await tracing?.finish()
            return 2
        }
        var observers: [ExchangeObserver] = [MetricsObserver(metrics: metrics), ConnectionEventLog(logger: logger)]
        if let accessLog { observers.append(AccessLog(format: settings.accessLog, writer: accessLog)) }
        if let tracing {
            observers.append(
                TraceObserver(
                    settings: TraceCaptureSettings(settings: settings), captures: tracing.captures,
                    budget: tracing.captureBudget, inPlace: tracing.inPlace))
        }
        let observer: ExchangeObserver? = observers.isEmpty ? nil : (observers.count == 1 ? observers[0] : CompositeObserver(observers))
        let code = await serveUntilSignalled(
            settings: settings, group: group, observer: observer, metrics: metrics, threads: threads,
            feedback: tracing?.feedback?.service(settings: settings), logger: logger)
        // In-flight exchanges are over. Traces an event loop was about to build in place are built once
        // every loop has run what it had queued; then all are queued: deliver them before exiting.
        for loop in group.makeIterator() { try? await loop.submit {}.get() }
        await tracing?.finish()
        accessLog?.flush()
        logger.info("stopped")
        return code
    }

    /// Binds the listeners, serves until SIGTERM/SIGINT, then drains in-flight exchanges.
    private static func serveUntilSignalled(
        settings: TracegateSettings, group: EventLoopGroup, observer: ExchangeObserver?, metrics: TracegateMetrics,
        threads: Int, feedback: FeedbackService?, logger: Logger
    ) async -> Int32 {
        let readiness = Readiness()
        let signals = SignalWaiter(signals: [SIGTERM, SIGINT])

        var tls: ServerTLS?
        if let certificate = settings.tlsCertFile, let key = settings.tlsKeyFile {
            do {
                tls = try ServerTLS(certificateFile: certificate, keyFile: key)
            } catch {
                logger.critical("cannot load the TLS certificate \(certificate) and key \(key): \(error)")
                return 2
            }
        }
        var configuration = settings.proxyConfiguration
        var feedbackChannel: Channel?
        if let feedback, let path = settings.feedbackPath {
            // The feedback endpoint is a route to a loopback server of tracegate's own.
            do {
                let channel = try await FeedbackServer(group: group, service: feedback).start()
                feedbackChannel = channel
                configuration.routes.append(
                    .init(rule: .init(pathPrefix: path), upstream: .init(host: "127.0.0.1", port: channel.localAddress?.port ?? 0, usesTLS: false)))
            } catch {
                logger.critical("cannot start the feedback endpoint: \(error)")
                return 1
            }
        }
        defer { feedbackChannel?.close(promise: nil) }
        let listener: ProxyListener
        do {
            listener = try ProxyListener(
                configuration: configuration, group: group, observer: observer, tls: tls)
        } catch {
            logger.critical("cannot set up the upstream connection: \(error)")
            return 2
        }
        // Its own thread: a metrics scrape reads figures the exporters keep under locks that their
        // idle-priority thread may hold; waiting for one must never stall forwarding.
        let adminGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { adminGroup.shutdownGracefully { _ in } }
        let admin = AdminServer(
            group: adminGroup, readiness: readiness, upstreamHost: settings.upstream.host, upstreamPort: settings.upstream.port,
            metrics: metrics)
        let adminChannel: Channel
        let publicAddress: SocketAddress
        do {
            adminChannel = try await admin.start(host: settings.adminListen.host, port: settings.adminListen.port)
        } catch {
            logger.critical("cannot listen on admin address \(settings.adminListen): \(error)")
            return 1
        }
        do {
            publicAddress = try await listener.start(host: settings.listen.host, port: settings.listen.port)
        } catch {
            logger.critical("cannot listen on \(settings.listen): \(error)")
            try? await adminChannel.close()
            return 1
        }
        readiness.set(true)
        logger.info(
            "tracegate listening",
            metadata: [
                "listen": "\(publicAddress)", "tls": "\(tls != nil)", "admin": "\(adminChannel.localAddress.map { "\($0)" } ?? "?")",
                "upstream": "\(settings.upstream)", "threads": "\(threads)",
            ])

        // SIGHUP reloads the listener's certificate; other settings need a restart (see README).
        let hangups = SignalWaiter(signals: [SIGHUP])
        let reloads = Task {
            while !Task.isCancelled {
                _ = await hangups.next()
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
        defer { reloads.cancel() }
        // After a crowd of connections is gone (an attack, a burst), give its memory back.
        let memoryReturn = Task {
            var policy = MemoryReturn()
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                if policy.observe(openConnections: listener.openConnections) { Malloc.releaseFreeMemory() }
            }
        }
        defer { memoryReturn.cancel() }
        let signal = await signals.next()
        logger.info("received \(signal == SIGINT ? "SIGINT" : "SIGTERM"), draining", metadata: ["grace": "\(settings.shutdownGrace)"])
        readiness.set(false)
        let clean = await listener.shutdown(grace: TimeAmount(settings.shutdownGrace))
        if !clean { logger.warning("grace period over: closed the connections still open") }
        try? await adminChannel.close()
        return 0
    }

    /// `tracegate push FILE...`: sends trace files (a trace file and its rotated parts) to the tracking
    /// server with the same exporter (batches, retries, splitting of rejected batches), one file at a
    /// time so memory holds one file's traces. Exit 0 when every trace of every file was delivered.
    public static func push(files: [String], settings: TracegateSettings) async -> Int32 {
        let logger = makeLogger(level: settings.logLevel)
        guard let trackingURI = settings.mlflowTrackingURI else {
            logger.critical("push needs a tracking server: set MLFLOW_TRACKING_URI or --mlflow-tracking-uri")
            return 2
        }
        var exportSettings = settings
        exportSettings.exportBatchDelay = .milliseconds(1)
        exportSettings.exportDrainTimeout = .seconds(365 * 86_400)  // push waits for every trace
        let http = HTTPClient(eventLoopGroupProvider: .singleton)
        var code: Int32 = 0
        for file in files {
            let records: [TraceRecord]
            do {
                let read = try TraceFileReader.read(path: file)
                records = read.records
                if !read.badLines.isEmpty {
                    logger.warning("\(file): \(read.badLines.count) lines are not traces and were skipped (lines \(read.badLines.prefix(10).map(String.init).joined(separator: ", ")))")
                }
            } catch {
                logger.critical("cannot read \(file): \(error)")
                code = 2
                break
            }
            let exporter = TracingPipeline.makeExporter(
                trackingURI: trackingURI, settings: exportSettings, http: http, logger: logger, memoryBound: max(1_000, records.count))
            exporter.submit(contentsOf: records)
            exporter.shutdown()
            await exporter.run()
            let stats = exporter.stats
            print("pushed \(stats.exported) of \(records.count) traces from \(file) (rejected \(stats.rejected), not delivered \(stats.dropped))")
            if stats.exported != records.count { code = 1 }
        }
        try? await http.shutdown()
        return code
    }

    static func makeLogger(level: TracegateConfig.LogLevel) -> Logger {
        var logger = Logger(label: "tracegate") { label in StreamLogHandler.standardError(label: label) }
        logger.logLevel = Logger.Level(rawValue: level.rawValue) ?? .info
        return logger
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

extension TracegateSettings {
    /// The data plane's view of these settings.
    var proxyConfiguration: ProxyConfiguration {
        var configuration = ProxyConfiguration(
            upstream: .init(
                host: upstream.host, port: upstream.port, usesTLS: upstream.usesTLS, basePath: upstream.basePath,
                verifyCertificate: upstreamTLSVerify, caFile: upstreamCAFile))
        configuration.routes = routes.map { route in
            .init(
                rule: .init(pathPrefix: route.pathPrefix, host: route.host),
                upstream: .init(
                    host: route.upstream.host, port: route.upstream.port, usesTLS: route.upstream.usesTLS,
                    basePath: route.upstream.basePath, verifyCertificate: upstreamTLSVerify, caFile: upstreamCAFile))
        }
        configuration.preserveHost = preserveHost
        configuration.forwardedHeaders = {
            switch forwardedHeaders {
            case .xForwarded: return .xForwarded
            case .via: return .via
            case .both: return .both
            case .none: return .none
            }
        }()
        configuration.requestIDHeader = requestIDHeader
        configuration.serverTiming = serverTiming
        configuration.upstreamPoolSize = upstreamPoolSize
        configuration.connectTimeout = TimeAmount(connectTimeout)
        configuration.firstByteTimeout = TimeAmount(firstByteTimeout)
        configuration.idleTimeout = TimeAmount(idleTimeout)
        configuration.clientKeepaliveTimeout = TimeAmount(clientKeepaliveTimeout)
        configuration.maxHeaderBytes = maxHeaderBytes
        configuration.maxBodyBytes = maxBodyBytes
        configuration.clientHeaderTimeout = TimeAmount(clientHeaderTimeout)
        configuration.clientBodyTimeout = TimeAmount(clientBodyTimeout)
        configuration.sendTimeout = TimeAmount(sendTimeout)
        configuration.maxConnections = maxConnections
        configuration.requestBufferingBytes = requestBuffering
        return configuration
    }
}
