import Dispatch
import Foundation
import DNPipesCore
import DNPipesFUSE

/// `dnpipes ls -l`: a line per pipe with what it retains, when it was last pushed to and its retention.
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
        Swift.print(format(["MESSAGES", "BYTES", "LAST PUSH", "RETENTION", "PIPE"]))
        for name in names {
            guard let row = found[name] else { continue }
            Swift.print(format(["\(row.facts.messages)", "\(row.facts.bytes)", row.lastPush.map(timestamp) ?? "-",
                                "\(row.retention)", name.value]))
        }
    }

    private static func format(_ columns: [String]) -> String {
        let widths = [10, 14, 20, 9]
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
