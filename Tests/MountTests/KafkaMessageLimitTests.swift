import XCTest

/// A Kafka mount whose librdkafka limit (`kafka.message.max.bytes`) is below its own `max_message`: a line
/// over librdkafka's limit is refused at the write with EMSGSIZE and a log line naming that limit, nothing of
/// the write is stored (not even its earlier, small lines), and the mount keeps serving.
final class KafkaMessageLimitTests: MountTestCase {
    override class var backend: Backend { .kafka }
    override var mountArguments: [String] { ["-o", "kafka.message.max.bytes=2000"] }

    func testALineOverKafkasLimitIsRefusedAndNothingOfTheWriteIsStored() {
        ok("echo before > p")
        XCTAssertEqual(writeEach([#"b"small\n" + b"y" * 3000 + b"\n""#]), "EMSGSIZE\nclose: EMSGSIZE\n")
        ok("echo after > p")
        XCTAssertEqual(ok("cat .drain/p", timeout: 30), "before\nafter\n")
        XCTAssertTrue(log.contains("message of 3000 bytes exceeds the limit of 2000 bytes"), log)
        // A line under the limit still goes through.
        let fits = String(repeating: "z", count: 1500)
        ok("echo \(fits) > p")
        XCTAssertEqual(ok("tail -n 1 .drain/p", timeout: 30), fits + "\n")
    }
}
