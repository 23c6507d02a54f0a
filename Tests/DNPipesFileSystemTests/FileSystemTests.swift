import Dispatch
import XCTest
import DNPipesCore
@testable import DNPipesFileSystem
#if canImport(Glibc)
import Glibc
#endif

/// The filesystem's semantics without a kernel, on the in-memory store (and, through
/// `EmbeddedFileSystemTests`, the embedded store). What only a kernel shows stays in MountTests.
class FileSystemTests: FileSystemTestCase {
    func testAReadGetsWhatWasWrittenAndAReadAtTheEndWaitsForAPush() {
        let (_, w, r) = pipeWithWriterAndReader()
        written(w, "one\ntwo\n")
        XCTAssertEqual(readText(r, count: 8), "one\ntwo\n")
        let parked = read(r)
        XCTAssertTrue(parked.isPending(), "a read at the end waits")
        written(w, "three\n")
        XCTAssertEqual(taken(r, parked), "three\n")
        XCTAssertTrue(isOK(close(w)))
        XCTAssertTrue(isOK(close(r)))
        XCTAssertEqual(parked.count, 1)
    }

    func testAHandleRefusesTheDirectionItWasNotOpenedFor() {
        let (_, w, r) = pipeWithWriterAndReader()
        XCTAssertEqual(read(w).error(), EBADF)
        XCTAssertEqual(write(r, "x\n").error(), EBADF)
        XCTAssertEqual(request { fs.open($0, ino: lookUp("jobs", in: Inodes.drainDirectory), flags: O_WRONLY) }.error(), EACCES)
        _ = close(w)
        _ = close(r)
    }

    /// `exec 3<>P; echo a >&3; read l <&3`: a handle open for both reads its own messages, and a read
    /// parked on it is answered by its own write.
    func testAReadAndWriteHandleReadsWhatItWrote() {
        let ino = makePipe("jobs")
        let fh = open(ino, O_RDWR)
        written(fh, "a\n")
        XCTAssertEqual(taken(fh, read(fh)), "a\n")
        let parked = read(fh)
        XCTAssertTrue(parked.isPending())
        written(fh, "b\n")
        XCTAssertEqual(taken(fh, parked), "b\n")
        XCTAssertTrue(isOK(close(fh)))
    }

    func testTwoReadAndWriteHandlesAtOnce() {
        let ino = makePipe("jobs")
        let a = open(ino, O_RDWR)
        let b = open(ino, O_RDWR)
        let parkedA = read(a)
        let parkedB = read(b)
        XCTAssertTrue(parkedA.isPending())
        written(a, "from a\n")
        XCTAssertEqual(taken(a, parkedA), "from a\n")
        XCTAssertEqual(taken(b, parkedB), "from a\n")
        written(b, "from b\n")
        XCTAssertEqual(taken(a, read(a)), "from b\n")
        XCTAssertEqual(taken(b, read(b)), "from b\n")
        XCTAssertTrue(isOK(close(a)))
        XCTAssertTrue(isOK(close(b)))
    }

    /// O_NONBLOCK is the file's flag at each read (fcntl may change it after the open), either way.
    func testNonBlockingIsDecidedAtEachRead() {
        let ino = makePipe("jobs")
        let w = open(ino, O_WRONLY)
        let opened = open(ino, O_RDONLY | O_NONBLOCK)
        XCTAssertEqual(read(opened, flags: O_RDONLY | O_NONBLOCK).error(), EAGAIN)
        let parked = read(opened, flags: O_RDONLY)
        XCTAssertTrue(parked.isPending(), "with O_NONBLOCK cleared, a read waits")
        written(w, "x\n")
        XCTAssertEqual(taken(opened, parked), "x\n")

        let blocking = open(ino, O_RDONLY)
        XCTAssertEqual(taken(blocking, read(blocking)), "x\n")
        XCTAssertEqual(read(blocking, flags: O_RDONLY | O_NONBLOCK).error(), EAGAIN)
        _ = close(w)
        _ = close(opened)
        _ = close(blocking)
    }

    func testAnInterruptAnswersAParkedReadWithEINTROnce() throws {
        let (_, w, r) = pipeWithWriterAndReader()
        let parked = read(r)
        XCTAssertTrue(parked.isPending())
        let token = try XCTUnwrap(parked.interruptToken, "a parked read arms its interrupt")
        fs.interrupted(token: token)
        XCTAssertEqual(parked.error(), EINTR)
        fs.interrupted(token: token)
        written(w, "late\n")
        // The read restarted after the signal gets the message; the interrupted one got nothing more.
        XCTAssertEqual(taken(r, read(r)), "late\n")
        XCTAssertTrue(isOK(close(w)))
        XCTAssertTrue(isOK(close(r)))
        XCTAssertEqual(parked.count, 1)
    }

    /// A push and an interrupt of the read it answers, at once, many times: each read is answered once,
    /// with the message or with EINTR (and then the next read gets the message).
    func testAnInterruptRacingAPushAnswersTheReadOnce() throws {
        let (_, w, r) = pipeWithWriterAndReader()
        let filesystem: PipeFileSystem = fs
        var interrupted = 0
        for i in 0..<100 {
            let message = "m\(i)\n"
            let parked = read(r)
            let token = try XCTUnwrap(parked.interruptToken)
            let pushed = ReplyRecorder<Int>()
            DispatchQueue.concurrentPerform(iterations: 2) { k in
                if k == 0 {
                    let bytes = Array(message.utf8)
                    bytes.withUnsafeBytes { filesystem.write(pushed.reply(), fh: w, bytes: $0, flags: 0) }
                } else {
                    filesystem.interrupted(token: token)
                }
            }
            XCTAssertEqual(pushed.answer(), message.utf8.count)
            if parked.error() == EINTR {
                interrupted += 1
                XCTAssertEqual(taken(r, read(r)), message)
            } else {
                XCTAssertEqual(taken(r, parked), message)
            }
            XCTAssertEqual(parked.count, 1)
        }
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertTrue(isOK(close(w)))
        XCTAssertTrue(isOK(close(r)))
        print("interrupt won \(interrupted) of 100 races")
    }

    /// A line over the limit is refused whole with EMSGSIZE, later lines go on, and the handle's next fsync
    /// and its close report the refusal: a writer that checks only close() learns of it.
    func testARefusedLineFailsTheNextFsyncAndTheClose() {
        let ino = makePipe("jobs")
        let w = open(ino, O_WRONLY)
        written(w, "fine\n")
        XCTAssertEqual(write(w, String(repeating: "x", count: Self.maxMessageBytes * 2) + "\n").error(), EMSGSIZE)
        written(w, "after\n")
        XCTAssertEqual(fsync(w).error(), EMSGSIZE)
        XCTAssertEqual(errorCode(close(w)), EMSGSIZE)
        let r = open(ino, O_RDONLY)
        XCTAssertEqual(readText(r, count: 11), "fine\nafter\n", "nothing of the refused line is stored")
        XCTAssertEqual(read(r, flags: O_NONBLOCK).error(), EAGAIN)
        _ = close(r)
    }

    /// An open directory lists from the listing its first readdir took: a pipe made between two batches
    /// is neither skipped nor repeated; a readdir from offset 0 (rewinddir) lists again.
    func testAListingIsKeptPerOpenDirectory() throws {
        for pipe in ["b", "c", "d"] { makePipe(pipe) }
        let dir = try XCTUnwrap(request { fs.opendir($0, ino: Inodes.root) }.answer()).fh
        let first = try XCTUnwrap(request { fs.readdir($0, fh: dir, offset: 0) }.answer()).prefix(3)
        XCTAssertEqual(first.map(\.name), [".", "..", "b"])
        makePipe("a")
        let next = try XCTUnwrap(first.last).next
        let rest = try XCTUnwrap(request { fs.readdir($0, fh: dir, offset: next) }.answer())
        XCTAssertEqual(rest.map(\.name), ["c", "d"])
        let again = try XCTUnwrap(request { fs.readdir($0, fh: dir, offset: 0) }.answer())
        XCTAssertEqual(again.map(\.name), [".", "..", "a", "b", "c", "d"])
        XCTAssertNotNil(request { fs.releasedir($0, fh: dir) }.answer())
        XCTAssertEqual(request { fs.readdir($0, fh: dir, offset: 0) }.error(), EBADF)
    }

    /// `truncate -s 0`: a reader midway goes on in the new stream (its waiting read gets the first new
    /// message), and a reader opened after the reset starts at it.
    func testAResetIsSeenByAReader() {
        let (ino, w, r) = pipeWithWriterAndReader()
        written(w, "old1\nold2\n")
        XCTAssertEqual(readText(r, count: 10), "old1\nold2\n")
        let parked = read(r)
        let reset = request { fs.setattr($0, ino: ino, changes: truncation(to: 0)) }
        XCTAssertEqual(reset.answer()?.size, 0)
        XCTAssertTrue(parked.isPending(), "a reset alone gives a reader nothing")
        written(w, "new\n")
        XCTAssertEqual(taken(r, parked), "new\n")
        let late = open(ino, O_RDONLY)
        XCTAssertEqual(readText(late, count: 4), "new\n")
        XCTAssertEqual(request { fs.setattr($0, ino: ino, changes: truncation(to: 3)) }.error(), EINVAL)
        _ = close(w)
        _ = close(r)
        _ = close(late)
    }

    /// A poll of a handle with nothing to read keeps its waiter and tells it once a push comes.
    func testAPollerIsToldOfAPush() {
        let (_, w, r) = pipeWithWriterAndReader()
        let waiter = RecordingPollWaiter()
        XCTAssertEqual(request { fs.poll($0, fh: r, waiter: waiter) }.answer(), 0)
        written(w, "x\n")
        let deadline = Date() + 10
        while waiter.notified == 0 && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        XCTAssertEqual(waiter.notified, 1)
        XCTAssertEqual(request { fs.poll($0, fh: r, waiter: nil) }.answer(), Int32(POLLIN | POLLRDNORM))
        XCTAssertEqual(waiter.discarded, 0)
        _ = close(w)
        _ = close(r)
    }

    /// `truncate -s SIZE`.
    private func truncation(to size: Int64) -> AttributeChanges {
        var changes = AttributeChanges()
        changes.size = size
        return changes
    }
}
