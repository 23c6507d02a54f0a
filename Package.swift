// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "dnpipes",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "dnpipes", targets: ["dnpipes"]),
        .executable(name: "dnpipes-bench", targets: ["dnpipes-bench"]),
        .executable(name: "dnpipes-fuse-ceiling", targets: ["dnpipes-fuse-ceiling"]),
        .executable(name: "dnpipes-csi", targets: ["dnpipes-csi"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // gRPC for the Kubernetes CSI plugin only (the dnpipes binary does not link it).
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // C interop: thin system-library targets, one per C library.
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // librdkafka >= 2.3 (scripts/setup builds it into /usr/local where the system's is older).
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka"),

        // The loop that serves a libfuse session: one reader at a time, a lone request answered by the thread
        // that read it, a short poll for the next request of the same process before it sleeps.
        .target(name: "CFuseLoop", linkerSettings: [.linkedLibrary("fuse3")]),
        // CRC-32C with the CPU's instruction, which Swift cannot reach (the embedded store checksums every record).
        .target(name: "CCRC32C"),
        // sync_file_range, so that the disk writes a segment while it is being appended, not all at the fsync.
        .target(name: "CWriteback"),

        // Pipe semantics: names, framing, cursors, the storage protocol. Knows neither FUSE nor Kafka.
        .target(name: "DNPipesCore", dependencies: [.product(name: "Logging", package: "swift-log")]),
        // The embedded durable store: one append-only, checksummed log per pipe.
        .target(name: "DNPipesEmbedded", dependencies: ["CCRC32C", "CWriteback", "DNPipesCore", .product(name: "Logging", package: "swift-log")]),
        // The Kafka backend: pipes are single-partition topics; readers of a pipe share one fetched stream.
        .target(name: "DNPipesKafka", dependencies: [
            "CRdKafka", "DNPipesCore", .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // The filesystem's semantics: a PipeStore served as a directory of pipes, its operations taking plain
        // values and answering through reply tokens. Knows nothing of the kernel's interface.
        .target(name: "DNPipesFileSystem", dependencies: [
            "DNPipesCore", .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // The kernel interface: libfuse's callbacks and replies over DNPipesFileSystem.
        .target(name: "DNPipesFUSE", dependencies: [
            "CFuse", "CFuseLoop", "DNPipesCore", "DNPipesFileSystem", .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // The command line.
        .executableTarget(name: "dnpipes", dependencies: [
            "DNPipesCore", "DNPipesEmbedded", "DNPipesKafka", "DNPipesFileSystem", "DNPipesFUSE",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // The Kubernetes CSI node plugin: serves CSI's Identity and Node services on a unix socket and runs a
        // `dnpipes mount` daemon per published volume. Generated/ comes from proto/csi.proto (scripts/generate-csi).
        .executableTarget(name: "dnpipes-csi", dependencies: [
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The benchmark (scripts/bench): dnpipes next to kcat, plain librdkafka clients and a plain file.
        .executableTarget(name: "dnpipes-bench", dependencies: [
            "CRdKafka", "DNPipesTestSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // The benchmark's peer for reads through FUSE: one file served from memory by libfuse's own loop.
        .executableTarget(name: "dnpipes-fuse-ceiling", linkerSettings: [.linkedLibrary("fuse3")]),

        // Helpers shared by the tests and the benchmark (a seeded generator, free loopback ports, the test
        // broker, an in-memory PipeStore).
        .target(name: "DNPipesTestSupport", dependencies: ["DNPipesCore"], path: "Tests/DNPipesTestSupport"),
        .testTarget(name: "DNPipesCoreTests", dependencies: ["DNPipesCore", "DNPipesTestSupport"]),
        .testTarget(name: "DNPipesEmbeddedTests", dependencies: [
            "DNPipesEmbedded", "DNPipesTestSupport", .product(name: "Logging", package: "swift-log"),
        ]),
        // The Kafka backend's logic that needs no broker: the shared window of a partition, the names' cache,
        // a writer's bookkeeping, reset floors.
        .testTarget(name: "DNPipesKafkaTests", dependencies: ["DNPipesKafka", "DNPipesCore"]),
        // One contract for every PipeStore, run in-process on the in-memory store, the embedded store and Kafka
        // (a real tansu broker): pipes, writers, observers, resets, removal, stream positions, consumer groups.
        .testTarget(name: "PipeStoreContractTests", dependencies: [
            "DNPipesCore", "DNPipesEmbedded", "DNPipesKafka", "DNPipesTestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The filesystem's semantics in-process, without a kernel: its operations called with reply tokens
        // that record their answers, on the in-memory store and the embedded store.
        .testTarget(name: "DNPipesFileSystemTests", dependencies: [
            "DNPipesFileSystem", "DNPipesCore", "DNPipesEmbedded", "DNPipesTestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Drives the real binary on real FUSE mounts from a shell.
        .testTarget(name: "MountTests", dependencies: ["DNPipesCore", "DNPipesTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
