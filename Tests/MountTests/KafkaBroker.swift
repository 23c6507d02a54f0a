import DNPipesTestSupport
import XCTest

/// The test process's tansu broker (see `TestBroker`).
enum KafkaBroker {
    static var shared: TestBroker { TestBroker.shared }

    /// The broker, or a test failure explaining why there is none.
    static func require(file: StaticString = #filePath, line: UInt = #line) throws -> TestBroker {
        if let failure = shared.failure {
            XCTFail(failure, file: file, line: line)
            throw XCTSkip(failure)
        }
        return shared
    }
}
