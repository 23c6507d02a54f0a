/// Where a consumer group keeps what it did with one pipe: a journal, itself a pipe of the same store under a
/// reserved name, so that both backends keep it the way they keep messages (the embedded store durably on
/// disk, Kafka in a topic every host of the cluster reads) and its order is the same for every reader.
///
/// The name is `.group.` then the group name's length, a dot, the group name, a dot and the pipe name, e.g.
/// `.group.7.workers.jobs` for group `workers` reading pipe `jobs`: both names may contain dots, and the length
/// makes the split unambiguous. Names starting with `.group.` are not pipes: they are hidden from listings and
/// refused to `mkfifo`.
public enum GroupJournal {
    public static let prefix = ".group."

    /// Whether `name` is a journal rather than a pipe users made.
    public static func isJournal(_ name: PipeName) -> Bool { name.value.hasPrefix(prefix) }

    /// The journal of `group` reading `pipe`; throws when the two names together are too long for a pipe name.
    public static func name(group: PipeName, pipe: PipeName) throws -> PipeName {
        let raw = "\(prefix)\(group.value.utf8.count).\(group.value).\(pipe.value)"
        guard raw.utf8.count <= PipeName.maxLength else {
            throw PipeError.invalidName("group \(group) with pipe \(pipe): the two names together are too long (at most \(PipeName.maxLength - prefix.count - 5) characters)")
        }
        return try PipeName(validating: raw)
    }

    /// The group and pipe a journal name stands for, or nil when `name` is not a journal's.
    public static func parse(_ name: PipeName) -> (group: PipeName, pipe: PipeName)? {
        guard isJournal(name) else { return nil }
        let rest = name.value.utf8.dropFirst(prefix.utf8.count)
        guard let dot = rest.firstIndex(of: UInt8(ascii: ".")),
              let length = Int(String(decoding: rest[rest.startIndex..<dot], as: UTF8.self)), length > 0 else { return nil }
        let groupStart = rest.index(after: dot)
        guard rest.distance(from: groupStart, to: rest.endIndex) > length + 1 else { return nil }
        let groupEnd = rest.index(groupStart, offsetBy: length)
        guard rest[groupEnd] == UInt8(ascii: "."),
              let group = try? PipeName(validatingBytes: rest[groupStart..<groupEnd]),
              let pipe = try? PipeName(validatingBytes: rest[rest.index(after: groupEnd)...]) else { return nil }
        return (group, pipe)
    }
}
