import Dispatch
import Foundation
import DNPipesCore
import DNPipesFileSystem
import Logging

/// `dnpipes ls -l`: a line per pipe with what it retains, when it was last pushed to, its retention, and the
/// backlog of every group that reads it (`GROUP=N`: messages no member of the group has yet).
enum LongListing {
    struct Row {
        var name: PipeName
        var facts: RetainedFacts
        var lastPush: timespec?
        var retention: Retention
    }

    /// Opens every pipe and lets each settle at once (a Kafka pipe counts what its topic holds, briefly
    /// bounded), then prints them in name order.
    static func print(_ store: PipeStore) throws {
        let names = try store.list().filter { !GroupJournal.isJournal($0) }
        let rows = LockedValue<[PipeName: Row]>([:])
        let done = DispatchGroup()
        for name in names {
            guard let log = try store.open(name) else { continue }
            done.enter()
            log.synchronize {
                log.settle {
                    let row = Row(name: name, facts: PipeFileSystem.facts(of: log), lastPush: log.streamExtent()?.lastPush,
                                  retention: (store as? RetentionControl)?.retention(of: name) ?? .none)
                    rows.withLock { $0[name] = row }
                    done.leave()
                }
            }
        }
        done.wait()
        let found = rows.withLock { $0 }
        let backlogs = try groupBacklogs(store)
        Swift.print(format(["MESSAGES", "BYTES", "LAST PUSH", "RETENTION", "GROUPS", "PIPE"]))
        for name in names {
            guard let row = found[name] else { continue }
            let groups = (backlogs[name] ?? []).map { "\($0.group)=\($0.free)" }.joined(separator: ",")
            Swift.print(format(["\(row.facts.messages)", "\(row.facts.bytes)", row.lastPush.map(timestamp) ?? "-",
                                "\(row.retention)", groups.isEmpty ? "-" : groups, name.value]))
        }
    }

    /// Each group's backlog, per pipe: a member reads the group's journal (writing nothing: it has no reader,
    /// so it claims nothing, and it takes no other member for lost).
    private static func groupBacklogs(_ store: PipeStore) throws -> [PipeName: [(group: PipeName, free: Int)]] {
        var logger = Logger(label: "dnpipes")   // the logging system was set up with the store
        logger.logLevel = .warning
        let groups = Groups(store: store, settings: GroupSettings(memberTimeout: 3600, othersMayBeAlive: true), logger: logger)
        defer { groups.shutdown() }
        let found = LockedValue<[PipeName: [(group: PipeName, free: Int)]]>([:])
        let done = DispatchGroup()
        for (group, pipe) in try store.list().compactMap(GroupJournal.parse) {
            guard let member = try? groups.member(group: group, pipe: pipe) else { continue }
            done.enter()
            member.backlog { free, _ in
                found.withLock { $0[pipe, default: []].append((group, free)) }
                done.leave()
            }
        }
        _ = done.wait(timeout: .now() + 15)
        return found.withLock { all in all.mapValues { $0.sorted { $0.group < $1.group } } }
    }

    private static func format(_ columns: [String]) -> String {
        let widths = [10, 14, 20, 9, 16]
        var line = ""
        for (i, column) in columns.enumerated() {
            if i < widths.count {
                line += String(repeating: " ", count: max(0, widths[i] - column.count)) + column + "  "
            } else {
                line += column
            }
        }
        return line
    }

    /// UTC, to the second: `2026-12-01T23:04:05Z`.
    static func timestamp(_ t: timespec) -> String {
        var seconds = time_t(t.tv_sec)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec)
    }
}
