import Foundation
import Logging

/// The consumer groups of one process (a mount's daemon, or a command-line client): one `GroupMember` per
/// group and pipe read here, all under one member id, which is new for every process so that a restarted
/// daemon is a new member and what the old one held is given out again.
// @unchecked Sendable: `byJournal` lives in a lock box; the rest is set in init.
public final class Groups: @unchecked Sendable {
    public let store: PipeStore
    public let settings: GroupSettings
    public let memberID: String
    private let logger: Logger
    private let byJournal = LockedValue<[PipeName: GroupMember]>([:])

    public init(store: PipeStore, settings: GroupSettings, logger: Logger) {
        self.store = store
        self.settings = settings
        self.logger = logger
        memberID = Groups.newMemberID()
    }

    /// `host-pid-random`, with only the characters journal entries allow in a word.
    static func newMemberID() -> String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).map { PipeName.isAllowed($0) ? $0 : "_" }
        return "\(String(host.prefix(64)))-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
    }

    /// This process's member of `group` for `pipe`, made (and the group's journal with it) on first use.
    /// May read the disk or wait on the network: never call it on a FUSE thread.
    public func member(group: PipeName, pipe: PipeName) throws -> GroupMember {
        let journalName = try GroupJournal.name(group: group, pipe: pipe)
        if let known = byJournal.withLock({ $0[journalName] }) { return known }
        guard let log = try store.open(pipe) else { throw PipeError.noSuchPipe(pipe) }
        try store.create(journalName)
        guard let journal = try store.open(journalName) else { throw PipeError.noSuchPipe(journalName) }
        let made = try GroupMember(group: group, pipe: log, journal: journal, store: store, memberID: memberID,
                                   settings: settings, logger: logger)
        let (member, isNew) = byJournal.withLock { all -> (GroupMember, Bool) in
            if let raced = all[journalName] { return (raced, false) }
            all[journalName] = made
            return (made, true)
        }
        if isNew { member.start() }
        return member
    }

    /// This process's members, one per group and pipe read here.
    public var members: [GroupMember] { byJournal.withLock { Array($0.values) } }

    /// The groups that have read some pipe (their journals exist), by name.
    public func list() throws -> [PipeName] {
        Array(Set(try store.list().compactMap { GroupJournal.parse($0)?.group })).sorted()
    }

    /// Forgets a group: its journals go, so a group of that name starts again from the oldest message.
    public func remove(group: PipeName) throws {
        for name in try store.list() where GroupJournal.parse(name)?.group == group { try removeJournal(name) }
    }

    /// Forgets one group's reading of one pipe.
    public func remove(group: PipeName, pipe: PipeName) throws {
        let name = try GroupJournal.name(group: group, pipe: pipe)
        guard store.contains(name) else { throw PipeError.noSuchPipe(name) }
        try removeJournal(name)
    }

    /// Forgets every group's reading of a deleted pipe, so a pipe made again under its name starts afresh.
    public func pipeRemoved(_ pipe: PipeName) {
        for name in (try? store.list()) ?? [] where GroupJournal.parse(name)?.pipe == pipe {
            do { try removeJournal(name) } catch {
                logger.error("deleting a group's journal failed", metadata: ["journal": "\(name)", "error": "\(error)"])
            }
        }
    }

    /// The member's last entries reach the journal before it goes: a late one would land in a journal made
    /// again under the name (a Kafka topic re-created).
    private func removeJournal(_ name: PipeName) throws {
        byJournal.withLock { $0.removeValue(forKey: name) }?.stop(wait: true)
        try store.remove(name)
    }

    /// Stops every member (what they claimed ahead goes back).
    public func shutdown() {
        let all = byJournal.withLock { all -> [GroupMember] in
            defer { all = [:] }
            return Array(all.values)
        }
        all.forEach { $0.stop(wait: true) }
    }
}
