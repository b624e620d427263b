import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import TracegateConfig
import TracegateProxy
import TracegateExport
import TracegateTrace

/// Runs tracegate: binds the listeners, serves until SIGTERM/SIGINT, then drains and exits; or pushes
/// trace files to the tracking server.
public enum TracegateApp {
    /// Returns the process exit code.
    public static func run(settings: TracegateSettings) async -> Int32 {
        let logger = makeLogger(level: settings.logLevel)
        let usableCPUs = EventLoopPlacement.usableCPUs()
        let threads = EventLoopPlacement.threadCount(
            setting: settings.threads, coreCount: System.coreCount, usableCPUs: usableCPUs)
        Malloc.limitArenas(eventLoops: threads)  // before the event loops and background threads start
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let placement = EventLoopPlacement(threads: threads, usableCPUs: usableCPUs, affinity: settings.cpuAffinity)
        if let cpus = placement.cpus { await pin(eventLoops, to: cpus, logger: logger) }
        await makeHeapsWritable(of: eventLoops)
        let code = await serve(settings: settings, eventLoops: eventLoops, threads: threads, logger: logger)
        try? await eventLoops.shutdownGracefully()
        return code
    }

    /// Pins each event loop's thread to its CPU, from the loop itself; a refusal is logged and leaves
    /// that loop unpinned.
    private static func pin(_ eventLoops: MultiThreadedEventLoopGroup, to cpus: [Int], logger: Logger) async {
        var refused: [Int] = []
        for (eventLoop, cpu) in zip(eventLoops.makeIterator(), cpus) {
            let pinned = (try? await eventLoop.submit { EventLoopPlacement.pinCurrentThread(to: cpu) }.get()) ?? false
            if !pinned { refused.append(cpu) }
        }
        let list = cpus.map(String.init).joined(separator: ",")
        if refused.isEmpty {
            logger.info("event loops pinned to their own CPUs", metadata: ["cpus": "\(list)"])
        } else {
            logger.warning(
                "could not pin event loops to their CPUs; the scheduler places them (cpu_affinity = off silences this)",
                metadata: ["cpus": "\(list)", "refused": "\(refused.map(String.init).joined(separator: ","))"])
        }
    }

    /// Makes each event loop's heap writable ahead (`Malloc.makeHeapWritableAhead`), so a crowd arriving
    /// at a fresh process does not grow it a page at a time; all loops at once. Then gives free pages
    /// back once, before serving: what another thread's allocations kept from the trim (see there).
    private static func makeHeapsWritable(of eventLoops: MultiThreadedEventLoopGroup) async {
        guard let bytes = Malloc.heapToMakeWritable() else { return }
        let done = eventLoops.makeIterator().map { eventLoop in
            eventLoop.submit { Malloc.makeHeapWritableAhead(bytes: bytes) }
        }
        for future in done { try? await future.get() }
        Malloc.releaseFreeMemory()
    }

    /// Sets up the services and runs them until SIGTERM/SIGINT, then stops them in reverse order
    /// (`TracegateServices`).
    private static func serve(
        settings: TracegateSettings, eventLoops: EventLoopGroup, threads: Int, logger: Logger
    ) async -> Int32 {
        let running: TracegateServices
        do {
            running = try await TracegateServices.start(settings: settings, eventLoops: eventLoops, threads: threads, logger: logger)
        } catch {
            return error.exitCode
        }
        let group = ServiceGroup(
            configuration: .init(services: running.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            logger.critical("a service failed: \(error)")
            return 1
        }
        logger.info("stopped")
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
        configuration.maxWebSocketConnections = maxWebSocketConnections
        configuration.webSocketIdleTimeout = TimeAmount(webSocketIdleTimeout)
        configuration.requestBufferingBytes = requestBuffering
        return configuration
    }
}
