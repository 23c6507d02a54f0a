import Dispatch
import DNPipesCore

/// Retention on the embedded store (see EmbeddedLog+Retention.swift).
extension EmbeddedStore: RetentionControl {
    public func retention(of name: PipeName) -> Retention {
        lock.lock()
        let log = logs[name]
        lock.unlock()
        return log?.retention ?? EmbeddedLog.readRetention(directory + "/pipes/" + name.value)
    }

    public func setRetention(_ retention: Retention, of name: PipeName, completion: @escaping @Sendable (Error?) -> Void) {
        do {
            guard let log = try open(name) as? EmbeddedLog else { return completion(PipeError.noSuchPipe(name)) }
            log.setRetention(retention, completion: completion)
        } catch {
            completion(error)
        }
    }

    /// What a pipe retains now (for its extended attributes and `dnpipes ls -l`); nil for no such pipe.
    public func retained(_ name: PipeName) throws -> (messages: Int64, bytes: Int64, oldest: Int64, end: Int64)? {
        (try open(name) as? EmbeddedLog)?.retained()
    }

    /// Once a second, the open pipes with a retention free their expired segments, on `queue` (the sync
    /// queue: in order with resets and syncs).
    func startExpiry(queue: DispatchQueue) -> DispatchSourceTimer {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + 1, repeating: 1, leeway: .milliseconds(200))
        timer.setEventHandler { [weak self] in
            guard let self else { return }
            self.lock.lock()
            let open = Array(self.logs.values)
            self.lock.unlock()
            for log in open { log.dropExpiredSegments(logger: self.logger) }
        }
        timer.resume()
        return timer
    }
}
