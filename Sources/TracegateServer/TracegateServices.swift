import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import TracegateConfig
import TracegateExport
import TracegateProxy
import UnixSignals

/// Everything tracegate runs, set up from its settings: the listeners bound, the services in start
/// order. A `ServiceGroup` stops them in reverse: the listener stops accepting and drains, the admin
/// endpoints close, the builder builds what is left, each exporter delivers or spools it, the feedback
/// delivery and the exporters' HTTP client stop, and the access log is written out last.
struct TracegateServices {
    /// Start order.
    let services: [any Service]
    let publicAddress: SocketAddress
    let adminAddress: SocketAddress?

    /// Startup failed; the reason is logged. 2: the settings cannot work; 1: an address cannot be bound.
    struct StartupFailure: Error {
        let exitCode: Int32
    }

    /// Binds the listeners and sets up every service. `accessLogFD` is where access-log lines go.
    static func start(
        settings: TracegateSettings, eventLoops: EventLoopGroup, threads: Int, logger: Logger,
        accessLogFD: Int32 = STDOUT_FILENO
    ) async throws(StartupFailure) -> TracegateServices {
        var settings = settings
        let openFiles = FileDescriptorLimit.raiseToHardLimit()
        let allowed = FileDescriptorLimit.connectionsAllowed(byLimit: openFiles)
        if settings.maxConnections == 0 {
            settings.maxConnections = allowed
        } else if settings.maxConnections > allowed {
            logger.warning(
                "max_connections (\(settings.maxConnections)) is more than the open-file limit (\(openFiles)) allows (\(allowed)): beyond that, accepts fail and are counted in tracegate_accept_errors_total")
        }
        FileDescriptorLimit.presizeTable(
            descriptors: FileDescriptorLimit.tableSize(maxConnections: settings.maxConnections, limit: openFiles))
        let accessLog: LineWriter? = settings.accessLog == .off ? nil : LineWriter(fd: accessLogFD)
        let metrics = TracegateMetrics()
        let tracing: TracingPipeline?
        do {
            tracing = try TracingPipeline(settings: settings, metrics: metrics, logger: logger)
        } catch let error as SpoolError {
            logger.critical("cannot use spool_dir: \(error)")
            throw StartupFailure(exitCode: 2)
        } catch {
            logger.critical("cannot open the trace file \(settings.traceFile ?? ""): \(error)")
            throw StartupFailure(exitCode: 2)
        }
        let background: [any Service] =
            (accessLog.map { [AccessLogService(writer: $0)] } ?? []) + (tracing?.services(logger: logger) ?? [])
        /// On a failure from here on, what was set up still stops in order (traces already spooled stay).
        func fail(_ code: Int32) async -> StartupFailure {
            let group = ServiceGroup(services: background, logger: logger)
            await group.triggerGracefulShutdown()
            try? await group.run()
            return StartupFailure(exitCode: code)
        }

        if let path = settings.feedbackPath, tracing?.feedback == nil {
            logger.critical(
                "feedback_path \(path) needs traces exported to MLflow: set MLFLOW_TRACKING_URI (and leave capture on)")
            throw await fail(2)
        }
        var observers: [ExchangeObserver] = [MetricsObserver(metrics: metrics), ConnectionEventLog(logger: logger)]
        if let accessLog { observers.append(AccessLog(format: settings.accessLog, writer: accessLog)) }
        if let tracing {
            observers.append(
                TraceObserver(
                    settings: TraceCaptureSettings(settings: settings), captures: tracing.captures,
                    budget: tracing.captureBudget, inPlace: tracing.inPlace))
        }
        let observer: ExchangeObserver = observers.count == 1 ? observers[0] : CompositeObserver(observers)

        var tls: ServerTLS?
        if let certificate = settings.tlsCertFile, let key = settings.tlsKeyFile {
            do {
                tls = try ServerTLS(certificateFile: certificate, keyFile: key)
            } catch {
                logger.critical("cannot load the TLS certificate \(certificate) and key \(key): \(error)")
                throw await fail(2)
            }
        }
        var configuration = settings.proxyConfiguration
        var feedbackServer: Channel?
        if let feedback = tracing?.feedback?.service(settings: settings), let path = settings.feedbackPath {
            // The feedback endpoint is a route to a loopback server of tracegate's own.
            do {
                let channel = try await FeedbackServer(group: eventLoops, service: feedback).start()
                feedbackServer = channel
                configuration.routes.append(
                    .init(rule: .init(pathPrefix: path), upstream: .init(host: "127.0.0.1", port: channel.localAddress?.port ?? 0, usesTLS: false)))
            } catch {
                logger.critical("cannot start the feedback endpoint: \(error)")
                throw await fail(1)
            }
        }
        let listener: ProxyListener
        do {
            listener = try ProxyListener(configuration: configuration, group: eventLoops, observer: observer, tls: tls)
        } catch {
            logger.critical("cannot set up the upstream connection: \(error)")
            try? await feedbackServer?.close()
            throw await fail(2)
        }
        let readiness = Readiness()
        let adminLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let admin = AdminServer(
            group: adminLoops, readiness: readiness, upstreamHost: settings.upstream.host, upstreamPort: settings.upstream.port,
            metrics: metrics)
        let adminChannel: Channel
        let publicAddress: SocketAddress
        do {
            adminChannel = try await admin.start(host: settings.adminListen.host, port: settings.adminListen.port)
        } catch {
            logger.critical("cannot listen on admin address \(settings.adminListen): \(error)")
            try? await feedbackServer?.close()
            try? await adminLoops.shutdownGracefully()
            throw await fail(1)
        }
        do {
            publicAddress = try await listener.start(host: settings.listen.host, port: settings.listen.port)
        } catch {
            logger.critical("cannot listen on \(settings.listen): \(error)")
            try? await adminChannel.close()
            try? await feedbackServer?.close()
            try? await adminLoops.shutdownGracefully()
            throw await fail(1)
        }
        logger.info(
            "tracegate listening",
            metadata: [
                "listen": "\(publicAddress)", "tls": "\(tls != nil)", "admin": "\(adminChannel.localAddress.map { "\($0)" } ?? "?")",
                "upstream": "\(settings.upstream)", "threads": "\(threads)",
            ])
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let services =
            background + [
                CertificateReloadService(hangups: hangups, tls: tls, logger: logger) as any Service,
                MemoryReturnService(listener: listener),
                AdminService(channel: adminChannel, eventLoops: adminLoops),
                ProxyService(
                    listener: listener, readiness: readiness, grace: settings.shutdownGrace, eventLoops: eventLoops,
                    feedbackServer: feedbackServer, logger: logger),
            ]
        return TracegateServices(services: services, publicAddress: publicAddress, adminAddress: adminChannel.localAddress)
    }
}
