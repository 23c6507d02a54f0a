import ArgumentParser
import Dispatch
import Foundation
import Logging
import DNPipesCore
import DNPipesEmbedded
import DNPipesFileSystem
import DNPipesFUSE
import DNPipesKafka
#if canImport(Glibc)
import Glibc
#endif

enum Daemon {
    /// Starts the daemon in the background and returns once it reports the mount ready, or failed.
    ///
    /// The daemon is this program again, started with --foreground and a pipe on which it writes one byte
    /// once mounted: forking a process that already runs threads is not safe, starting a fresh one is.
    static func start(_ settings: Mount.Settings, arguments: [String]) throws {
        try FileManager.default.createDirectory(atPath: (settings.logFile as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        let logFD = open(settings.logFile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard logFD >= 0 else { throw CommandError("cannot open log file \(settings.logFile): \(String(cString: strerror(errno)))") }
        defer { close(logFD) }
        let logStart = lseek(logFD, 0, SEEK_END)

        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw CommandError("pipe: \(String(cString: strerror(errno)))") }
        let readyChild: Int32 = 3
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, logFD, 1)
        posix_spawn_file_actions_adddup2(&actions, logFD, 2)
        posix_spawn_file_actions_adddup2(&actions, fds[1], readyChild)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, 0x80) // POSIX_SPAWN_SETSID (glibc), not exported to Swift

        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        // Secret settings (-o kafka.sasl.password=...) reach the daemon through its environment, which only
        // its user can read, not through its command line, which every local user can.
        let (publicArguments, secrets) = SecretOptions.split(arguments)
        let argv = [executable] + publicArguments + ["--foreground", "--ready-fd", String(readyChild)]
        var cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var environment = ProcessInfo.processInfo.environment
        environment[SecretOptions.variable] = secrets.isEmpty ? nil : secrets.joined(separator: ",")
        var cEnv = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cEnv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, &cArgs, &cEnv)
        close(fds[1])
        defer { close(fds[0]) }
        guard rc == 0 else { throw CommandError("cannot start the daemon: \(String(cString: strerror(rc)))") }

        // Wait for the ready byte, or for the daemon to exit.
        var byte: UInt8 = 0
        var pfd = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, 60_000) == 1 && read(fds[0], &byte, 1) == 1
        if ready {
            print("dnpipes: mounted \(settings.mountpoint) (daemon pid \(pid), log \(settings.logFile))")
            return
        }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == 0 { kill(pid, SIGTERM); _ = waitpid(pid, &status, 0) }
        let log = (try? FileHandle(forReadingFrom: URL(fileURLWithPath: settings.logFile))).map { h -> String in
            try? h.seek(toOffset: UInt64(max(0, logStart)))
            return String(decoding: h.readDataToEndOfFile(), as: UTF8.self)
        } ?? ""
        // librdkafka's own lines would hide the daemon's reason.
        let tail = log.split(separator: "\n").filter { !$0.contains(" librdkafka: ") }.suffix(5).joined(separator: "\n")
        FileHandle.standardError.write(Data("dnpipes: mounting \(settings.mountpoint) failed\n\(tail)\n".utf8))
        throw ExitCode(1)
    }

    /// The background daemon outlives the command that started it: it must not hold any descriptor that
    /// command inherited from its own caller (a pipe, a socket), or the caller would wait for an end-of-file
    /// until the daemon exits.
    static func closeInheritedDescriptors(keeping keep: Int32) {
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.compactMap { Int32($0) } ?? []
        for fd in open where fd > 2 && fd != keep { close(fd) }
    }

    /// Serves the mount in this process until it is unmounted or signalled.
    static func serve(_ settings: Mount.Settings, readyFD: Int32?) throws {
        if let readyFD { closeInheritedDescriptors(keeping: readyFD) }
        signal(SIGPIPE, SIG_IGN)
        keepLargeBuffersOnTheHeap()
        let trimmer = returnFreeMemoryEverySecond()
        defer { trimmer.cancel() }
        let logger = makeLogger()
        raiseOpenFileLimit(logger: logger)
        // Before the store: its metrics are made with the factory this bootstraps.
        let served = LockedValue<PipeFileSystem?>(nil)
        let metrics: MetricsServer?
        do {
            metrics = try settings.metricsAddress.map { address in
                try MetricsServer(address: address, logger: logger) { served.withLock { $0 }.map(PipeSeries.shared.refresh) }
            }
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
        let store: PipeStore
        do {
            store = try makeStore(kafka: settings.kafka, dataDirectory: settings.dataDirectory,
                                  maxMessageBytes: settings.maxMessageBytes, defaultRetention: settings.defaultRetention,
                                  logger: logger)
        } catch {
            logger.critical("cannot open the store: \(error)")
            throw ExitCode(1)
        }
        let filesystem = PipeFileSystem(store: store, options: .init(maxMessageBytes: settings.maxMessageBytes,
                                                                             groups: settings.groups,
                                                                             uid: settings.uid, gid: settings.gid,
                                                                             pipeMode: settings.mode ?? 0o644), logger: logger)
        served.withLock { $0 = filesystem }
        let mount: FuseMount
        do {
            mount = try FuseMount(filesystem: filesystem, mountpoint: settings.mountpoint,
                                  fuseOptions: settings.fuseOptions,
                                  busyPollMicroseconds: settings.busyPollMicroseconds, logger: logger)
            // Before the mount exists: a signal from then on ends the loop as soon as it starts.
            try mount.stopOnSignals()
            try mount.mount()
        } catch {
            logger.critical("\(error)")
            store.shutdown()
            throw ExitCode(1)
        }
        logger.info("mounted \(settings.mountpoint) (pid \(getpid()))")
        if let metrics, let address = settings.metricsAddress {
            metrics.start()
            logger.info("metrics at http://\(address)/metrics")
        }
        PidFile.write(for: settings.mountpoint)
        defer { PidFile.remove(for: settings.mountpoint) }

        if let readyFD {
            var one: UInt8 = 1
            _ = write(readyFD, &one, 1)
            close(readyFD)
        }
        let rc = mount.run()
        if let signal = mount.stopSignal {
            logger.info("signal \(signal): unmounting \(settings.mountpoint)")
            mount.detach()
            // Closes waiting for the brokers are answered now (within the store's bound), while the session
            // can still carry their answers.
            store.stopTakingWrites()
        }
        filesystem.groups.shutdown()
        store.shutdown()
        mount.unmountAndDestroy()
        logger.info("unmounted \(settings.mountpoint)\(rc == 0 ? "" : " (loop ended with \(rc))")")
    }
}

/// Keeps secret mount options off the daemon's command line.
enum SecretOptions {
    static let variable = "DNPIPES_SECRET_OPTIONS"

    /// Splits `-o` lists into the options that may be shown and the secret ones.
    static func split(_ arguments: [String]) -> (public: [String], secrets: [String]) {
        var kept: [String] = []
        var secrets: [String] = []
        var i = 0
        while i < arguments.count {
            if arguments[i] == "-o", i + 1 < arguments.count {
                var shown: [String] = []
                for item in arguments[i + 1].split(separator: ",").map(String.init) {
                    let key = String(item.prefix { $0 != "=" })
                    if key.hasPrefix("kafka."), KafkaConfiguration.isSecret(String(key.dropFirst(6))) {
                        secrets.append(item)
                    } else {
                        shown.append(item)
                    }
                }
                if !shown.isEmpty { kept += ["-o", shown.joined(separator: ",")] }
                i += 2
            } else {
                kept.append(arguments[i])
                i += 1
            }
        }
        return (kept, secrets)
    }

    /// The secret options handed over by `dnpipes mount`, taken out of the environment once read.
    static func take() -> [String] {
        guard let value = ProcessInfo.processInfo.environment[variable], !value.isEmpty else { return [] }
        unsetenv(variable)
        return [value]
    }
}

/// Every FUSE write brings up to 1 MiB, framed and encoded into buffers of about that size. Above glibc's
/// default threshold (128 KiB) each of those is a fresh mmap, zeroed page by page by the kernel and unmapped
/// again: faulting and zeroing those pages took about a sixth of a push's time in profiles. Served from the
/// heap, they reuse memory instead. Free memory beyond 4 MiB at the top of a heap still goes back to the
/// system, so that what a burst of writes used does not stay resident.
///
/// Below that 4 MiB, an arena's top is kept: glibc's malloc_trim returns free pages inside an arena but never
/// shrinks the top of a thread arena. With glibc's default of eight arenas per core, FUSE workers spread over
/// sixteen arenas on two cores and memory crept up by tens of megabytes as load reached more of them. So the
/// arenas are capped at one per core (at least two, at most eight), which bounds what the allocator keeps:
/// on two cores, pushes were as fast with two arenas as with sixteen (one writer and four at once).
private func keepLargeBuffersOnTheHeap() {
    let M_TRIM_THRESHOLD: Int32 = -1, M_MMAP_THRESHOLD: Int32 = -3, M_ARENA_MAX: Int32 = -8
    _ = mallopt(M_MMAP_THRESHOLD, 4 << 20)
    _ = mallopt(M_TRIM_THRESHOLD, 4 << 20)
    _ = mallopt(M_ARENA_MAX, Int32(min(max(2, sysconf(Int32(_SC_NPROCESSORS_ONLN))), 8)))
}

/// Every pipe the daemon has open holds descriptors (its segment and directory on the embedded store), and
/// services start with a soft limit of 1024 (systemd's default) although the hard limit allows far more:
/// the daemon takes the hard limit, so a mount of a thousand pipes does not fail for want of descriptors.
private func raiseOpenFileLimit(logger: Logger) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    let soft = limit.rlim_cur
    limit.rlim_cur = limit.rlim_max
    if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
        logger.info("open files limit raised", metadata: ["from": "\(soft)", "to": "\(limit.rlim_max)"])
    } else {
        logger.warning("open files limit stays low", metadata: ["limit": "\(soft)", "errno": "\(errno)"])
    }
}

@_silgen_name("mallopt")
private func mallopt(_ parameter: Int32, _ value: Int32) -> Int32

/// Once a second, hands memory the allocator holds free back to the system (malloc_trim): each FUSE thread
/// allocates from its own arena, and after a burst of writers those arenas would otherwise keep tens of
/// megabytes resident. A trim costs a few milliseconds at most, once a second.
private func returnFreeMemoryEverySecond() -> DispatchSourceTimer {
    let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "dnpipes.trim", qos: .utility))
    timer.schedule(deadline: .now() + 1, repeating: 1, leeway: .milliseconds(250))
    timer.setEventHandler { _ = malloc_trim(0) }
    timer.resume()
    return timer
}

@_silgen_name("malloc_trim")
private func malloc_trim(_ pad: Int) -> Int32

