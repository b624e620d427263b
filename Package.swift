// swift-tools-version:6.0
import PackageDescription

/// Release builds of our modules leave out the run-time exclusivity checks (debug builds and the tests keep
/// them): on the data plane, the access log and trace building they cost 3–5% of the CPU per request.
let hotPathSettings: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "tracegate",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "tracegate", targets: ["tracegate"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        /// Settings: one table of keys, parsed from proxy.conf, the environment and flags. Pure.
        .target(name: "TracegateConfig", dependencies: ["TracegateTrace"]),
        /// Traces as values: the trace record, chat-payload understanding (OpenAI, Anthropic, SSE),
        /// validation of user/session/request ids, and the MLflow wire encodings. Pure, no I/O.
        .target(name: "TracegateTrace", swiftSettings: hotPathSettings),
        /// Delivery of traces: the capture queue, the MLflow tracking-server client, the batching exporter and its spool.
        .target(
            name: "TracegateExport",
            dependencies: [
                "TracegateTrace",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPathSettings
        ),
        /// The data plane: client and upstream channel handlers, the upstream pool, header rules.
        .target(
            name: "TracegateProxy",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: hotPathSettings
        ),
        /// Wiring: the services tracegate runs (listener, admin endpoints, trace builder, exporters,
        /// access log, certificate reloads) in one `ServiceGroup`, and graceful shutdown.
        .target(
            name: "TracegateServer",
            dependencies: [
                "TracegateConfig", "TracegateProxy", "TracegateTrace", "TracegateExport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: hotPathSettings
        ),
        .executableTarget(name: "tracegate", dependencies: ["TracegateServer", "TracegateConfig"]),
        /// CPU per trace of trace building (`benchmarks/trace_build`).
        .executableTarget(name: "trace-build-benchmark", dependencies: ["TracegateTrace"], path: "benchmarks/TraceBuildBenchmark"),
        .testTarget(name: "TracegateConfigTests", dependencies: ["TracegateConfig"]),
        .testTarget(
            name: "TracegateServerTests",
            dependencies: [
                "TracegateServer", "TracegateProxy", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "TracegateTraceTests", dependencies: ["TracegateTrace"]),
        .testTarget(
            name: "TracegateExportTests",
            dependencies: [
                "TracegateExport", "TracegateTrace", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "TracegateProxyTests",
            dependencies: [
                "TracegateProxy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ]
)
