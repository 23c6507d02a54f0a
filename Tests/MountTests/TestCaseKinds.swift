import DNPipesTestSupport
import Foundation
import XCTest

/// Two hosts on one Kafka cluster: the usual mount, and a second daemon's mount at `mnt2` on the same broker.
class TwoHostTestCase: MountTestCase {
    override class var backend: Backend { .kafka }
    var mnt2: String { root + "/mnt2" }

    override func setUpWithError() throws {
        try super.setUpWithError()
        try FileManager.default.createDirectory(atPath: mnt2, withIntermediateDirectories: true)
        try mount(at: mnt2)
    }
}

/// A broker of the test's own that clients reach only through a relay on `relayPort` (the broker advertises
/// it). A subclass starts the relay it needs in its setUp; tearDown stops both whatever happened.
class RelayedBrokerTestCase: MountTestCase {
    override class var backend: Backend { .kafka }
    override var mountsInSetUp: Bool { false }
    let relayPort = freeLoopbackPort()
    let brokerPort = freeLoopbackPort()
    var broker: Process?

    override func setUpWithError() throws {
        try super.setUpWithError()
        broker = try BrokerRig.startBroker(listen: brokerPort, advertise: relayPort)
    }

    override func tearDownWithError() throws {
        unmountAll()
        BrokerRig.stopRelay(listen: relayPort)
        broker?.terminate()
        broker?.waitUntilExit()
        try super.tearDownWithError()
    }
}
