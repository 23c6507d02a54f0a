import Dispatch
import Foundation
import Logging
import XCTest
import DNPipesCore
import DNPipesTestSupport

/// What every `PipeStore` must do, written once against the protocol (PipeContractTests.swift,
/// GroupContractTests.swift) and run here on `InMemoryStore`. Each subclass runs it all again on another store
/// (`makeStore`, fresh for every test), with tests of its own for what only that store shows: SwiftPM lists a
/// subclass, with the tests it inherits, only when it declares a test itself.
///
/// Every wait here is bounded: a store that never answers fails the test instead of hanging the run.
class StoreContractTests: XCTestCase {
    /// The store under test, made fresh for each test.
    private(set) var store: PipeStore!
    /// How long a wait for a store (a flush, a notification, a fetch on the network) may take.
    let patience: Double = 15

    /// A fresh, empty store.
    func makeStore() throws -> PipeStore { InMemoryStore() }

    /// What tear-down undoes before the store shuts down (groups, a second store), whatever the test did.
    private var cleanups: [() -> Void] = []

    static let logger: Logger = {
        var logger = Logger(label: "dnpipes.contract")
        // DNPIPES_CONTRACT_LOG=debug shows what the stores and groups do, to see why a test failed.
        logger.logLevel = ProcessInfo.processInfo.environment["DNPIPES_CONTRACT_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        return logger
    }()

    override func setUpWithError() throws {
        store = try makeStore()
    }

    override func tearDown() {
        let store = self.store
        let steps = cleanups.reversed()
        cleanups = []
        bounded("shutting the store down", seconds: patience) {
            steps.forEach { $0() }
            store?.shutdown()
        }
        self.store = nil
        super.tearDown()
    }

    /// Runs `step` at tear-down, before the store shuts down (later steps first).
    func atTearDown(_ step: @escaping () -> Void) { cleanups.append(step) }

    // MARK: Helpers

    func name(_ text: String) -> PipeName { try! PipeName(validating: text) }

    /// Runs `body` on another thread and fails the test if it takes more than `seconds`; the test goes on
    /// (a store stuck in `body` cannot stall the run).
    func bounded(_ what: String, seconds: Double, file: StaticString = #filePath, line: UInt = #line,
                 _ body: @escaping () -> Void) {
        let done = DispatchSemaphore(value: 0)
        let work = UncheckedBox(body)
        Thread.detachNewThread {
            work.value()
            done.signal()
        }
        if done.wait(timeout: .now() + seconds) == .timedOut {
            XCTFail("\(what) did not finish within \(seconds) s", file: file, line: line)
        }
    }

    /// Makes a pipe and opens it, brought up to date as a reader's open does.
    func makePipe(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> PipeLog {
        XCTAssertTrue(try store.create(name(text)), "create \(text)", file: file, line: line)
        guard let log = try store.open(name(text)) else {
            XCTFail("no log for \(text) just made", file: file, line: line)
            throw PipeError.noSuchPipe(name(text))
        }
        synchronize(log, file: file, line: line)
        return log
    }

    func synchronize(_ log: PipeLog, file: StaticString = #filePath, line: UInt = #line) {
        let done = expectation(description: "synchronize \(log.name)")
        log.synchronize { done.fulfill() }
        wait(for: [done], timeout: patience)
    }

    /// Pushes one batch, waiting (bounded) while the store has no room.
    func push(_ writer: PipeWriter, _ messages: [[UInt8]], file: StaticString = #filePath, line: UInt = #line) throws {
        let deadline = Date().addingTimeInterval(patience)
        while true {
            do { return try writer.push(messages) } catch PipeError.full {
                let room = DispatchSemaphore(value: 0)
                writer.whenRoom { room.signal() }
                guard room.wait(timeout: .now() + max(0, deadline.timeIntervalSinceNow)) == .success else {
                    XCTFail("no room for a push within \(patience) s", file: file, line: line)
                    throw PipeError.full
                }
            }
        }
    }

    /// Waits for a flush; returns its error.
    @discardableResult
    func flush(_ writer: PipeWriter, file: StaticString = #filePath, line: UInt = #line) -> Error? {
        let done = expectation(description: "flush")
        let outcome = LockedValue<Error?>(nil)
        writer.flush { error in
            outcome.withLock { $0 = error }
            done.fulfill()
        }
        wait(for: [done], timeout: patience)
        let error = outcome.withLock { $0 }
        XCTAssertNil(error, "flush failed", file: file, line: line)
        return error
    }

    /// Pushes `messages` in one batch through a new writer and waits for its flush.
    func write(_ log: PipeLog, _ messages: [[UInt8]], file: StaticString = #filePath, line: UInt = #line) throws {
        let writer = try log.makeWriter()
        try push(writer, messages, file: file, line: line)
        flush(writer, file: file, line: line)
    }

    func reset(_ log: PipeLog, file: StaticString = #filePath, line: UInt = #line) {
        let done = expectation(description: "reset")
        log.reset { error in
            XCTAssertNil(error, "reset failed", file: file, line: line)
            done.fulfill()
        }
        wait(for: [done], timeout: patience)
    }

    /// Whether `condition` holds within `seconds`: asked again whenever the log tells its observers, and at
    /// least every 50 ms (some of what a condition reads, such as bounds, changes without a notification).
    func eventually(_ log: PipeLog?, seconds: Double? = nil, _ condition: () -> Bool) -> Bool {
        let changed = DispatchSemaphore(value: 0)
        let token = log?.addObserver { changed.signal() }
        defer { if let token { log?.removeObserver(token) } }
        let deadline = Date().addingTimeInterval(seconds ?? patience)
        while true {
            if condition() { return true }
            if Date() >= deadline { return false }
            _ = changed.wait(timeout: .now() + min(0.05, max(0, deadline.timeIntervalSinceNow)))
        }
    }

    /// Fetches from `offset` until `count` messages came (or, with `count` nil, until nothing more comes for
    /// a moment), waiting for the log's notifications in between; fails the test when they do not come.
    func fetch(_ log: PipeLog, from offset: Int64, count: Int, maxBytes: Int = 1 << 16,
               file: StaticString = #filePath, line: UInt = #line) -> [(offset: Int64, bytes: [UInt8])] {
        var got: [(offset: Int64, bytes: [UInt8])] = []
        var next = offset
        let complete = eventually(log) {
            while got.count < count {
                guard case .messages(let batch) = try? log.fetch(from: next, maxBytes: maxBytes) else { return false }
                for (o, m) in zip(batch.offsets, batch.messages) { got.append((o, m)) }
                next = batch.offsets[batch.count - 1] + 1
            }
            return true
        }
        XCTAssertTrue(complete, "fetched \(got.count) of \(count) messages from \(log.name) within \(patience) s",
                      file: file, line: line)
        return got
    }

    /// `count` messages `prefix-0`, `prefix-1`, ...
    func messages(_ prefix: String, _ count: Int) -> [[UInt8]] { (0..<count).map { Array("\(prefix)-\($0)".utf8) } }
}

/// Hands a non-Sendable closure to another thread whose end the caller waits for.
struct UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
