import DNPipesCore
import XCTest

/// A block's messages, and the part of a block a backend keeps when its queue takes only a prefix.
final class MessageBlockTests: XCTestCase {
    func testDroppingFirstKeepsTheRestInOrder() {
        let block = MessageBlock([[1], [2, 2], [], [4, 4, 4]])
        XCTAssertEqual(block.droppingFirst(0).messages, [[1], [2, 2], [], [4, 4, 4]])
        XCTAssertEqual(block.droppingFirst(1).messages, [[2, 2], [], [4, 4, 4]])
        XCTAssertEqual(block.droppingFirst(3).messages, [[4, 4, 4]])
        XCTAssertTrue(block.droppingFirst(4).isEmpty)
        XCTAssertEqual(block.droppingFirst(2).largest, 3)
        XCTAssertEqual(block.count, 4, "the block itself is unchanged")
    }

    func testKeepFirstAndDroppingFirstSplitABlock() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            let messages = (0..<Int.random(in: 0...20, using: &rng)).map { _ in
                (0..<Int.random(in: 0...5, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            }
            let block = MessageBlock(messages)
            let cut = Int.random(in: 0...messages.count, using: &rng)
            var head = block
            head.keepFirst(cut)
            XCTAssertEqual(head.messages + block.droppingFirst(cut).messages, messages)
        }
    }
}
