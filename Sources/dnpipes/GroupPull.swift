import Dispatch
import Foundation
import Logging
import DNPipesCore
import DNPipesKafka
#if canImport(Glibc)
import Glibc
#endif

/// `dnpipes pull --group GROUP PIPE`: a member of the group on a host without FUSE, sharing the group with
/// mounted readers through the same journal. A message is done once the next one was written to standard
/// output (as a mounted reader's is done at its next read); the last one once written, at exit. One that
/// could not be written (the reader of our output went away) goes back to the group.
struct GroupPull {
    let store: PipeStore
    let group: PipeName
    let pipe: PipeName
    let limit: Int?

    func run() throws {
        var logger = Logger(label: "dnpipes")   // the logging system was set up with the store
        logger.logLevel = .warning
        let groups = Groups(store: store, settings: GroupSettings(othersMayBeAlive: store is KafkaStore), logger: logger)
        defer { groups.shutdown() }
        let member: GroupMember
        do { member = try groups.member(group: group, pipe: pipe) } catch { throw CommandError("\(error)") }
        member.readerOpened()
        defer { member.readerClosed() }
        signal(SIGPIPE, SIG_IGN)
        var previous: Int64?
        var count = 0
        while limit.map({ count < $0 }) ?? true {
            let granted = LockedValue<GroupGrant?>(nil)
            let ready = DispatchSemaphore(value: 0)
            member.take(waiter: UInt64(count), nonBlocking: false) { grant in
                granted.withLock { $0 = grant }
                ready.signal()
                return true
            }
            ready.wait()
            if let previous { member.done(previous) }
            previous = nil
            switch granted.withLock({ $0 }) {
            case .message(let offset, var bytes)?:
                bytes.append(UInt8(ascii: "\n"))
                guard writeToStandardOutput(bytes) else { member.giveBack(offset); return }
                previous = offset
                count += 1
            case .removed?, .wouldBlock?, nil:
                throw CommandError("pipe \(pipe) was deleted, or group \(group) forgotten")
            }
        }
        if let previous { member.done(previous) }
    }
}
