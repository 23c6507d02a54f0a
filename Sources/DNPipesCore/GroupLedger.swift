/// One entry of a group's journal: what a member (one mount's daemon, or one command-line client) did.
///
/// Entries are lines of text, so a journal can be read with `cat` when something looks wrong:
///
///     claim M 10-14,17     M asks for these messages; it gets those free when the entry is applied
///     done M 10,11         M's readers finished them: nobody gets them again
///     release M 12         M gives them back (the handle holding it was closed first)
///     unclaim M 13,14      M gives back what it claimed ahead and handed to no reader: not a delivery
///     dead M 17            M moved it to the dead-letter pipe (it was given out too often): done
///     alive M              M is still there (it holds messages; see `GroupMember` for the timeout)
///     expire B M           B saw nothing from M for too long: everything M holds is free again
public enum GroupRecord: Equatable, Sendable {
    case claim(member: String, offsets: [Int64])
    case done(member: String, offsets: [Int64])
    case release(member: String, offsets: [Int64])
    case unclaim(member: String, offsets: [Int64])
    case dead(member: String, offsets: [Int64])
    case alive(member: String)
    case expire(by: String, member: String)

    /// The member that wrote the entry.
    public var author: String {
        switch self {
        case .claim(let m, _), .done(let m, _), .release(let m, _), .unclaim(let m, _), .dead(let m, _), .alive(let m): return m
        case .expire(let by, _): return by
        }
    }

    public var line: String {
        switch self {
        case .claim(let m, let o): return "claim \(m) \(GroupRecord.format(o))"
        case .done(let m, let o): return "done \(m) \(GroupRecord.format(o))"
        case .release(let m, let o): return "release \(m) \(GroupRecord.format(o))"
        case .unclaim(let m, let o): return "unclaim \(m) \(GroupRecord.format(o))"
        case .dead(let m, let o): return "dead \(m) \(GroupRecord.format(o))"
        case .alive(let m): return "alive \(m)"
        case .expire(let by, let m): return "expire \(by) \(m)"
        }
    }

    /// Parses an entry; nil for a line that is not one (it is skipped, so a newer format's entries do not stop
    /// an older reader).
    public init?(line: some Collection<UInt8>) {
        let words = line.split(separator: UInt8(ascii: " ")).map { String(decoding: $0, as: UTF8.self) }
        guard let verb = words.first else { return nil }
        switch (verb, words.count) {
        case ("alive", 2): self = .alive(member: words[1])
        case ("expire", 3): self = .expire(by: words[1], member: words[2])
        case (_, 3):
            guard let offsets = GroupRecord.parse(words[2]) else { return nil }
            switch verb {
            case "claim": self = .claim(member: words[1], offsets: offsets)
            case "done": self = .done(member: words[1], offsets: offsets)
            case "release": self = .release(member: words[1], offsets: offsets)
            case "unclaim": self = .unclaim(member: words[1], offsets: offsets)
            case "dead": self = .dead(member: words[1], offsets: offsets)
            default: return nil
            }
        default: return nil
        }
    }

    /// Ascending offsets as ranges: `3-5,9`.
    static func format(_ offsets: [Int64]) -> String {
        var parts: [String] = []
        var i = 0
        while i < offsets.count {
            var j = i
            while j + 1 < offsets.count && offsets[j + 1] == offsets[j] + 1 { j += 1 }
            parts.append(i == j ? "\(offsets[i])" : "\(offsets[i])-\(offsets[j])")
            i = j + 1
        }
        return parts.joined(separator: ",")
    }

    static func parse(_ text: String) -> [Int64]? {
        var out: [Int64] = []
        for part in text.split(separator: ",") {
            let ends = part.split(separator: "-", omittingEmptySubsequences: false)
            guard let first = Int64(ends[0]), first >= 0 else { return nil }
            if ends.count == 1 { out.append(first); continue }
            guard ends.count == 2, let last = Int64(ends[1]), last >= first, last - first < 1 << 20 else { return nil }
            out.append(contentsOf: first...last)
        }
        return out.isEmpty ? nil : out
    }
}

/// What a group has done with a pipe's messages, as its journal says: the state every member computes alike,
/// because every member applies the same entries in the journal's order. A claim wins the offsets that are
/// free when it is applied, so two members claiming the same message cannot both get it.
///
/// A message is free until claimed, out while a member holds it, free again when released or its member
/// expired, and done for good once done (or moved to the dead-letter pipe). Offsets that are not messages
/// (gaps, offsets removed by a reset) are marked done by the member that finds so.
public struct GroupLedger: Sendable {
    /// Every offset below is done.
    public private(set) var floor: Int64 = 0
    /// Offsets at or after this one were never claimed.
    public private(set) var frontier: Int64 = 0
    /// Done offsets at or above `floor`.
    private var done: Set<Int64> = []
    /// Offsets below `frontier` that are free again (released or expired), not done, not out.
    public private(set) var returned: Set<Int64> = []
    /// Who holds each offset that is out.
    private var holder: [Int64: String] = [:]
    /// What each member holds.
    public private(set) var holdings: [String: Set<Int64>] = [:]
    /// How often each offset not done yet was given out.
    private var deliveries: [Int64: Int] = [:]

    public init() {}

    /// What applying an entry changed for the members it concerns.
    public struct Change: Equatable, Sendable {
        /// Offsets a claim won.
        public var won: [Int64] = []
        /// The member whose holdings an expiry freed, and what it held.
        public var expiredMember: String?
        public var expiredOffsets: [Int64] = []
    }

    @discardableResult
    public mutating func apply(_ record: GroupRecord) -> Change {
        var change = Change()
        switch record {
        case .claim(let member, let offsets):
            for o in offsets where isFree(o) {
                returned.remove(o)
                holder[o] = member
                holdings[member, default: []].insert(o)
                deliveries[o, default: 0] += 1
                advanceFrontier(past: o)
                change.won.append(o)
            }
        case .done(_, let offsets), .dead(_, let offsets):
            for o in offsets where o >= floor && !done.contains(o) {
                if let member = holder.removeValue(forKey: o) { holdings[member]?.remove(o) }
                returned.remove(o)
                deliveries[o] = nil
                advanceFrontier(past: o)
                done.insert(o)
            }
            while done.remove(floor) != nil { floor += 1 }
        case .release(let member, let offsets):
            for o in offsets where holder[o] == member { free(o) }
        case .unclaim(let member, let offsets):
            for o in offsets where holder[o] == member {
                free(o)
                deliveries[o] = max(0, (deliveries[o] ?? 1) - 1)
            }
        case .expire(_, let member):
            let held = (holdings[member] ?? []).sorted()
            for o in held { free(o) }
            holdings[member] = nil
            change.expiredMember = member
            change.expiredOffsets = held
        case .alive:
            break
        }
        for (member, held) in holdings where held.isEmpty { holdings[member] = nil }
        return change
    }

    /// Moves the frontier past `o`; offsets skipped over between the old frontier and `o` stay free.
    private mutating func advanceFrontier(past o: Int64) {
        guard o >= frontier else { return }
        for skipped in frontier..<o { returned.insert(skipped) }
        frontier = o + 1
    }

    private mutating func free(_ o: Int64) {
        if let member = holder.removeValue(forKey: o) { holdings[member]?.remove(o) }
        returned.insert(o)
    }

    public func isFree(_ o: Int64) -> Bool {
        guard o >= floor, !done.contains(o), holder[o] == nil else { return false }
        return o >= frontier || returned.contains(o)
    }

    public func isDone(_ o: Int64) -> Bool { o < floor || done.contains(o) }
    public func holder(of o: Int64) -> String? { holder[o] }
    /// How often `o` was given out without being done.
    public func deliveries(of o: Int64) -> Int { deliveries[o] ?? 0 }

    /// Up to `limit` free offsets in `oldest..<end`, the oldest first (messages given back come before new ones).
    public func free(from oldest: Int64, below end: Int64, limit: Int) -> [Int64] {
        var out = returned.filter { $0 >= oldest && $0 < end }.sorted()
        if out.count > limit { out.removeLast(out.count - limit) }
        var o = max(frontier, oldest, floor)
        while out.count < limit && o < end {
            if !done.contains(o) { out.append(o) }
            o += 1
        }
        return out
    }

    /// Messages in `oldest..<end` not done yet: free ones and ones out.
    public func backlog(from oldest: Int64, below end: Int64) -> (free: Int, out: Int) {
        let out = holder.keys.filter { $0 >= oldest && $0 < end }.count
        let freeReturned = returned.filter { $0 >= oldest && $0 < end }.count
        let start = max(frontier, oldest, floor)
        let fresh = end > start ? Int(end - start) - done.filter { $0 >= start && $0 < end }.count : 0
        return (freeReturned + fresh, out)
    }
}
