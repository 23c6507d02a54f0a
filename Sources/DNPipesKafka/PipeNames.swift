import Foundation
import DNPipesCore

/// The pipes' names as this mount knows them: the brokers' latest listing of topics, corrected for what this
/// mount did that a listing may not show yet.
///
/// A pipe made (or looked up) here is listed at once, and stays listed while the brokers' metadata does not
/// have it yet, for `grace` seconds after its topic was made, or however long making it takes; once a listing
/// has it, it has no such grace any more, and a later listing without it means it was deleted. A pipe removed
/// here is left out while its topic is being deleted and, after that, while listings still show it (for at
/// most `grace` seconds); then it is forgotten, so that a pipe of that name made elsewhere is listed again.
/// A value, without clocks or clients of its own: the store keeps it in its lock box and tells it the time.
struct PipeNames {
    static let grace: TimeInterval = 10
    /// How old a graced name is before its topic may be asked about alone (see `beginListing`).
    static let recheckAfter: TimeInterval = 2
    /// How long lookups are answered from the cache after one went unanswered (see `KafkaStore.lookUp`).
    static let quietNanoseconds: UInt64 = 2_000_000_000

    private(set) var names: Set<PipeName> = []
    /// Pipes made or found here, by when, until a listing has them.
    private var createdAt: [PipeName: Date] = [:]
    /// Pipes whose topic is being made on the brokers.
    private var creating: Set<PipeName> = []
    /// Pipes removed here whose topics are being deleted (no date yet) or were deleted at the date.
    private var deleting: [PipeName: Date?] = [:]
    /// When a lookup on the brokers last went unanswered.
    private var lookupsUnansweredAt: DispatchTime?
    /// Partition counts from the latest metadata, by topic.
    private var partitionCounts: [String: Int] = [:]

    func contains(_ name: PipeName) -> Bool { names.contains(name) }

    // MARK: What this mount does

    /// Reserves a name for a pipe being made here; false if it is taken.
    mutating func reserve(_ name: PipeName, now: Date) -> Bool {
        guard !names.contains(name) else { return false }
        names.insert(name)
        createdAt[name] = now
        creating.insert(name)
        deleting[name] = nil
        return true
    }

    /// The brokers made the pipe's topic (its grace runs from now, however long making it took) or refused
    /// it (the name goes).
    mutating func made(_ name: PipeName, refused: Bool, now: Date) {
        creating.remove(name)
        if refused {
            names.remove(name)
            createdAt[name] = nil
        } else if names.contains(name) {
            createdAt[name] = now
        }
    }

    /// A lookup found the pipe's topic on the brokers.
    mutating func found(_ name: PipeName, now: Date) {
        names.insert(name)
        createdAt[name] = now
    }

    /// The pipe was removed here; its topic is being deleted.
    mutating func remove(_ name: PipeName) {
        names.remove(name)
        createdAt[name] = nil
        deleting[name] = .some(nil)
    }

    /// The brokers deleted the pipe's topic, or did not (it comes back with the next listing). Returns false
    /// when the pipe was made again meanwhile: that creation owns the name now.
    mutating func deleted(_ name: PipeName, failed: Bool, now: Date) -> Bool {
        guard deleting[name] != nil else { return false }
        deleting[name] = failed ? nil : .some(now)
        return true
    }

    /// Whether a lookup may ask the brokers: not while a removal here is under way, nor for a while after a
    /// lookup went unanswered.
    func mayAsk(about name: PipeName, now: DispatchTime) -> Bool {
        let quiet = lookupsUnansweredAt.map { now.uptimeNanoseconds < $0.uptimeNanoseconds + PipeNames.quietNanoseconds } ?? false
        return !quiet && deleting[name] == nil
    }

    mutating func lookupUnanswered(at now: DispatchTime) { lookupsUnansweredAt = now }

    // MARK: What the brokers list

    mutating func notePartitions(_ count: Int, of topic: String) { partitionCounts[topic] = count }

    /// The topic's partition count as the latest metadata gave it (1 when unknown).
    func partitionCount(of topic: String) -> Int { max(1, partitionCounts[topic] ?? 1) }

    /// The first half of taking a listing of the cluster's pipes (`listed`, with their topics' partition
    /// counts). Returns the listed names less those being deleted here, and the names within their grace:
    /// the caller adds those it keeps (it may ask the brokers about one first, see `recheckAfter`) and hands
    /// the result to `finishListing`.
    ///
    /// Runs under the store's lock, which every lookup takes: its work grows with the names this mount made or
    /// removed lately, not with the cluster's topics (`listed` is only looked into, and copied only while a
    /// removal is under way).
    mutating func beginListing(_ listed: Set<PipeName>, partitionCounts counts: [String: Int],
                               now: Date) -> (seen: Set<PipeName>, graced: [PipeName: Date]) {
        partitionCounts = counts
        createdAt = createdAt.filter { name, at in !listed.contains(name) && now.timeIntervalSince(at) < PipeNames.grace }
        deleting = deleting.filter { name, deletedAt in
            guard let deletedAt else { return true }   // still being deleted
            return listed.contains(name) && now.timeIntervalSince(deletedAt) < PipeNames.grace
        }
        return (deleting.isEmpty ? listed : listed.subtracting(deleting.keys), createdAt)
    }

    /// The second half (see `beginListing`): `seen` becomes the names, with those made here meanwhile and
    /// those still being made. Returns the names.
    @discardableResult
    mutating func finishListing(_ seen: Set<PipeName>, graced: [PipeName: Date]) -> Set<PipeName> {
        let meanwhile = createdAt.keys.filter { graced[$0] == nil } + creating
        names = meanwhile.isEmpty ? seen : seen.union(meanwhile)
        return names
    }

    /// Whether a graced name is old enough for its topic to be asked about alone.
    static func mayRecheck(createdAt: Date, now: Date) -> Bool { now.timeIntervalSince(createdAt) >= recheckAfter }
}
