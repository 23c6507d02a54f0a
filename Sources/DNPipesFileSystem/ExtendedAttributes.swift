import Foundation
import Logging
import DNPipesCore
#if canImport(Glibc)
import Glibc
#endif

/// A pipe's facts as extended attributes (`getfattr -d -m user.dnpipes PIPE`): what it retains now, who
/// reads it here, and its retention, the one attribute that can be set.
enum PipeAttribute: String, CaseIterable {
    /// Messages retained now (from the oldest offset a reader gets to the end).
    case messages
    /// Their bytes, framed as a reader gets them (each with its newline).
    case bytes
    /// The oldest offset a reader gets, and the offset the next push gets.
    case oldest, end
    /// Open read handles on this mount.
    case readers
    /// How long messages are kept (`7d`, `none`); settable.
    case retention

    static let prefix = "user.dnpipes."
    var name: String { PipeAttribute.prefix + rawValue }

    init?(name: String) {
        guard name.hasPrefix(PipeAttribute.prefix) else { return nil }
        self.init(rawValue: String(name.dropFirst(PipeAttribute.prefix.count)))
    }

    /// Every name, each ending in NUL, as listxattr answers.
    static let list: [UInt8] = allCases.flatMap { Array($0.name.utf8) + [0] }
}

/// What a pipe retains now, for its attributes and `dnpipes ls -l`.
public struct RetainedFacts: Sendable, Equatable {
    public var messages: Int64
    public var bytes: Int64
    public var oldest: Int64
    public var end: Int64
}

extension PipeFileSystem {
    /// Answers a getxattr: from memory when the pipe's log is open and settled, else (a pipe not opened
    /// here yet, or Kafka counting its own acknowledged pushes) parked and answered from the work queue once
    /// the log has opened and settled, as `getattr` does.
    /// `size` is the room the caller has (0: it asks for the length alone).
    public func getxattr(_ reply: Reply<AttributeValue>, ino: UInt64, name: String, size: Int) {
        if case .member(let group, let pipe, _) = inodes.node(ino) {
            return groupBacklog(reply, group: group, pipe: pipe, name: name, size: size)
        }
        guard case .pipe(let pipe, _) = inodes.node(ino) else {
            return reply.fail(inodes.node(ino) == nil ? ENOENT : ENODATA)
        }
        guard let attribute = PipeAttribute(name: name) else { return reply.fail(ENODATA) }
        if attribute == .readers { return reply.finish(AttributeValue.fitting(Array("\(openReaders(of: pipe))".utf8), size: size)) }
        // A Kafka pipe's retention is read from the brokers as its stream starts, which settling does.
        if let log = store.openedLog(pipe), !log.isSettling {
            return reply.finish(AttributeValue.fitting(Array(value(of: attribute, pipe, log).utf8), size: size))
        }
        let pending = PendingReply(reply, interrupts: interrupts)
        work.async { [self] in
            do {
                guard let log = try store.open(pipe) else { return pending.fail(ENOENT) }
                log.settle {
                    let text = self.value(of: attribute, pipe, log)
                    pending.answer { $0.finish(AttributeValue.fitting(Array(text.utf8), size: size)) }
                }
            } catch {
                logger.error("opening pipe failed", metadata: ["pipe": "\(pipe)", "op": "getxattr", "error": "\(error)"])
                pending.fail(EIO)
            }
        }
    }

    public func listxattr(_ reply: Reply<AttributeValue>, ino: UInt64, size: Int) {
        switch inodes.node(ino) {
        case .pipe: reply.finish(AttributeValue.fitting(PipeAttribute.list, size: size))
        case .member: reply.finish(AttributeValue.fitting(GroupAttribute.list, size: size))
        case nil: reply.fail(ENOENT)
        default: reply.finish(AttributeValue.fitting([], size: size))
        }
    }

    /// Only `user.dnpipes.retention` can be set, on a pipe (not a view of it); the facts are read-only
    /// (EPERM) and no other attribute is kept (ENOTSUP). A bad value is refused with EINVAL, changing nothing.
    /// `value` is valid only during the call.
    public func setxattr(_ reply: Reply<Done>, ino: UInt64, name: String, value bytes: UnsafeRawBufferPointer, flags: Int32) {
        guard case .pipe(let pipe, let view) = inodes.node(ino) else {
            return inodes.node(ino) == nil ? reply.fail(ENOENT)
                : refuseAttribute(reply, ENOTSUP, "setting \(name) on a directory refused: only pipes have attributes", name)
        }
        guard let attribute = PipeAttribute(name: name) else {
            return refuseAttribute(reply, ENOTSUP, "setting \(name) on \(pipe) refused: the only attribute that can be set is \(PipeAttribute.retention.name)", name)
        }
        guard attribute == .retention else {
            return refuseAttribute(reply, EPERM, "setting \(name) on \(pipe) refused: it is a fact of the pipe, read-only", name)
        }
        guard view == .pipe else {
            return refuseAttribute(reply, EACCES, "setting \(name) on view \(pipe) refused: views are read-only", name)
        }
        if flags & 1 != 0 {  // XATTR_CREATE
            return refuseAttribute(reply, EEXIST, "creating \(name) on \(pipe) refused: every pipe has a retention already", name)
        }
        let retention: Retention
        do {
            guard bytes.count <= 64, let text = String(validating: bytes, as: UTF8.self) else {
                throw Retention.Invalid(description: "a retention is a short text such as 7d or none")
            }
            retention = try Retention(parsing: text)
        } catch {
            return refuseAttribute(reply, EINVAL, "retention of \(pipe) not changed: \(error)", name)
        }
        changeRetention(reply, pipe, retention)
    }

    /// Removing the retention keeps messages until a reset, as `none` does.
    public func removexattr(_ reply: Reply<Done>, ino: UInt64, name: String) {
        guard case .pipe(let pipe, let view) = inodes.node(ino) else {
            return reply.fail(inodes.node(ino) == nil ? ENOENT : ENODATA)
        }
        guard let attribute = PipeAttribute(name: name) else { return reply.fail(ENODATA) }
        guard attribute == .retention else {
            return refuseAttribute(reply, EPERM, "removing \(name) from \(pipe) refused: it is a fact of the pipe, read-only", name)
        }
        guard view == .pipe else {
            return refuseAttribute(reply, EACCES, "removing \(name) from view \(pipe) refused: views are read-only", name)
        }
        changeRetention(reply, pipe, .none)
    }

    private func changeRetention(_ reply: Reply<Done>, _ pipe: PipeName, _ retention: Retention) {
        guard let control = store as? RetentionControl else {
            return refuseAttribute(reply, ENOTSUP, "retention of \(pipe) not changed: this store keeps every message", PipeAttribute.retention.name)
        }
        let pending = PendingReply(reply, interrupts: interrupts)
        let logger = self.logger
        work.async {
            control.setRetention(retention, of: pipe) { error in
                if let error {
                    let code: Int32 = {
                        if case PipeError.noSuchPipe = error { return ENOENT }
                        if case PipeError.removed = error { return ENOENT }
                        return EIO
                    }()
                    logger.error("setting the retention failed",
                                 metadata: ["pipe": "\(pipe)", "op": "setxattr", "errno": "\(errnoName(code))", "error": "\(error)"])
                    return pending.fail(code)
                }
                logger.info("retention set", metadata: ["pipe": "\(pipe)", "retention": "\(retention)"])
                pending.send(Done())
            }
        }
    }

    private func refuseAttribute(_ reply: Reply<Done>, _ code: Int32, _ message: String, _ attribute: String) {
        logger.notice("\(message)", metadata: ["op": "xattr", "attribute": "\(attribute)", "errno": "\(errnoName(code))"])
        reply.fail(code)
    }

    private func value(of attribute: PipeAttribute, _ pipe: PipeName, _ log: PipeLog) -> String {
        switch attribute {
        case .readers: return "\(openReaders(of: pipe))"
        case .retention: return "\(retention(of: pipe))"
        case .messages, .bytes, .oldest, .end: return PipeFileSystem.facts(of: log).value(of: attribute)
        }
    }

    /// The pipe's retention as the store knows it (none for a store without retention).
    func retention(of pipe: PipeName) -> Retention {
        (store as? RetentionControl)?.retention(of: pipe) ?? .none
    }

    /// Open read handles on `pipe` (its views' included).
    func openReaders(of pipe: PipeName) -> Int {
        handles.withLock { $0.open.values.reduce(0) { $0 + ($1.canRead && $1.pipeName == pipe ? 1 : 0) } }
    }

    /// Open read handles per pipe.
    public func openReaders() -> [PipeName: Int] {
        handles.withLock { state in
            var counts: [PipeName: Int] = [:]
            for handle in state.open.values where handle.canRead { counts[handle.pipeName, default: 0] += 1 }
            return counts
        }
    }

    /// What a log retains: exact where the store counts it (`RetainedCounting`); otherwise from its bounds
    /// and its stream's size, where offsets taken by markers count as messages.
    public static func facts(of log: PipeLog) -> RetainedFacts {
        if let counting = log as? RetainedCounting {
            let r = counting.retained()
            return RetainedFacts(messages: r.messages, bytes: r.bytes, oldest: r.oldest, end: r.end)
        }
        let bounds = log.bounds()
        return RetainedFacts(messages: max(0, bounds.end - bounds.oldest), bytes: log.streamExtent()?.size ?? 0,
                             oldest: bounds.oldest, end: bounds.end)
    }
}

extension RetainedFacts {
    func value(of attribute: PipeAttribute) -> String {
        switch attribute {
        case .messages: return "\(messages)"
        case .bytes: return "\(bytes)"
        case .oldest: return "\(oldest)"
        case .end: return "\(end)"
        case .readers, .retention: preconditionFailure("\(attribute) is not a retained fact")
        }
    }
}
