import CoreMetrics
import Foundation
import DNPipesCore

/// Whether the per-pipe series are recorded: set once, before the mount is made (see `FuseMetrics.enable`).
public enum PipeMetrics {
    /// Set once, before the session starts (its threads are made after it), and only read afterwards.
    nonisolated(unsafe) public private(set) static var isEnabled = false

    public static func enable() { isEnabled = true }
}

/// A pipe's counters, shared by its open handles on this mount.
final class PipeCounters: Sendable {
    let pushedMessages: Counter
    let pushedBytes: Counter
    let delivered: Counter

    init(_ pipe: PipeName) {
        let dimensions = [("pipe", pipe.value)]
        pushedMessages = Counter(label: "dnpipes_messages_pushed_total", dimensions: dimensions)
        pushedBytes = Counter(label: "dnpipes_bytes_pushed_total", dimensions: dimensions)
        delivered = Counter(label: "dnpipes_messages_delivered_total", dimensions: dimensions)
    }

    /// Messages pushed, counted with their newlines as written.
    func pushed(_ messages: MessageBlock) {
        guard PipeMetrics.isEnabled, !messages.isEmpty else { return }
        pushedMessages.increment(by: messages.count)
        pushedBytes.increment(by: messages.payloadBytes + messages.count)
    }

    /// A read's answer: every newline in it ends a message handed to the reader.
    func delivered(_ bytes: [UInt8]) {
        guard PipeMetrics.isEnabled, !bytes.isEmpty else { return }
        let count = bytes.withUnsafeBufferPointer { buffer in
            var n = 0
            for byte in buffer where byte == UInt8(ascii: "\n") { n += 1 }
            return n
        }
        if count > 0 { delivered.increment(by: count) }
    }

    fileprivate func destroy() {
        pushedMessages.destroy()
        pushedBytes.destroy()
        delivered.destroy()
    }
}

/// The series that carry a `pipe` label, so that those of a deleted pipe go away (bounded cardinality).
public final class PipeSeries: Sendable {
    public static let shared = PipeSeries()

    private struct Gauges: Sendable {
        var readers: Gauge
        var retained: Gauge?
    }
    private let state = LockedValue<(counters: [PipeName: PipeCounters], gauges: [PipeName: Gauges])>(([:], [:]))
    private let pipes = Gauge(label: "dnpipes_pipes")
    /// A group's backlog per pipe it reads here, by (pipe, group).
    private let backlogs = LockedValue<[String: Gauge]>([:])

    /// A pipe's counters; without metrics a handle's own, which counts nothing, so nothing is kept per pipe.
    func counters(for pipe: PipeName) -> PipeCounters {
        guard PipeMetrics.isEnabled else { return PipeCounters(pipe) }
        return state.withLock { state in
            if let c = state.counters[pipe] { return c }
            let c = PipeCounters(pipe)
            state.counters[pipe] = c
            return c
        }
    }

    /// Brings the gauges up to date before a scrape and drops the series of pipes that no longer exist.
    /// Answers from memory only (the store's listing, open logs), so a scrape never waits for the brokers.
    public func refresh(_ filesystem: PipeFileSystem) {
        guard let names = try? filesystem.store.list().filter({ !GroupJournal.isJournal($0) }) else { return }
        let existing = Set(names)
        let readers = filesystem.openReaders()
        var retained: [PipeName: Int64] = [:]
        for name in names {
            if let log = filesystem.store.openedLog(name) { retained[name] = PipeFileSystem.facts(of: log).messages }
        }
        // Series are made and dropped under the lock, values recorded after it.
        let (gone, current) = state.withLock { state -> ([(PipeCounters?, Gauges?)], [PipeName: Gauges]) in
            let stale = Set(state.counters.keys).union(state.gauges.keys).subtracting(existing)
            let gone = stale.map { (state.counters.removeValue(forKey: $0), state.gauges.removeValue(forKey: $0)) }
            for name in names {
                var g = state.gauges[name] ?? Gauges(readers: Gauge(label: "dnpipes_readers", dimensions: [("pipe", name.value)]))
                if retained[name] != nil && g.retained == nil {
                    g.retained = Gauge(label: "dnpipes_messages_retained", dimensions: [("pipe", name.value)])
                }
                state.gauges[name] = g
            }
            return (gone, state.gauges)
        }
        for (counters, gauges) in gone {
            counters?.destroy()
            gauges?.readers.destroy()
            gauges?.retained?.destroy()
        }
        for (name, g) in current {
            g.readers.record(readers[name] ?? 0)
            if let count = retained[name] { g.retained?.record(count) }
        }
        pipes.record(names.count)
        refreshBacklogs(filesystem.groups.members)
    }

    /// `dnpipes_group_backlog_messages{pipe,group}` for every group read on this mount; a forgotten group's
    /// series goes.
    private func refreshBacklogs(_ members: [GroupMember]) {
        let known = members.compactMap { m in m.currentBacklog().map { ("\(m.pipeName)\u{0}\(m.group)", m, $0.free) } }
        let (gone, gauges) = backlogs.withLock { all -> ([Gauge], [String: Gauge]) in
            let keep = Set(known.map(\.0))
            let gone = all.filter { !keep.contains($0.key) }
            for key in gone.keys { all[key] = nil }
            for (key, member, _) in known where all[key] == nil {
                all[key] = Gauge(label: "dnpipes_group_backlog_messages",
                                 dimensions: [("pipe", member.pipeName.value), ("group", member.group.value)])
            }
            return (Array(gone.values), all)
        }
        gone.forEach { $0.destroy() }
        for (key, _, free) in known { gauges[key]?.record(free) }
    }
}
