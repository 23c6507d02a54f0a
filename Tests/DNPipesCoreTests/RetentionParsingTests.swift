import XCTest
@testable import DNPipesCore

final class RetentionParsingTests: XCTestCase {
    func testValuesAndTheirShortestText() throws {
        let cases: [(String, Int64?, String)] = [
            ("7d", 7 * 86400, "7d"), ("90m", 5400, "90m"), ("3600s", 3600, "1h"), ("48h", 172_800, "2d"),
            ("none", nil, "none"), (" 5s\n", 5, "5s"), ("61s", 61, "61s"),
        ]
        for (text, seconds, shown) in cases {
            let r = try Retention(parsing: text)
            XCTAssertEqual(r.seconds, seconds, text)
            XCTAssertEqual(r.description, shown, text)
        }
    }

    func testBadValuesAreRefused() {
        for text in ["", "7", "d", "7w", "0s", "-1d", "+1d", "1.5h", "1 h", "NONE", "99999999999d", "\(Int64.max)s"] {
            XCTAssertThrowsError(try Retention(parsing: text), "'\(text)' was taken")
        }
    }
}

final class MessageAgesTests: XCTestCase {
    func testExpiryFollowsTheNewestMessageOfEachEntry() {
        var ages = MessageAges(retention: Retention(seconds: 10))
        ages.note(offset: 0, millis: 1_000, byte: 0)
        ages.note(offset: 5, millis: 1_500, byte: 50)     // joins the first entry (within a second)
        ages.note(offset: 8, millis: 5_000, byte: 80)
        ages.note(offset: 9, millis: 20_000, byte: 90)
        XCTAssertEqual(ages.entries.count, 3)
        // At 11.4 s nothing is older than 10 s; at 11.6 s the first entry (newest 1.5 s) has expired.
        XCTAssertEqual(ages.firstKept(oldest: 0, end: 12, nowMillis: 11_400), 0)
        XCTAssertEqual(ages.firstKept(oldest: 0, end: 12, nowMillis: 11_600), 8)
        XCTAssertEqual(ages.byte(at: 8), 80)
        XCTAssertEqual(ages.firstKept(oldest: 0, end: 12, nowMillis: 29_000), 9)
        XCTAssertEqual(ages.firstKept(oldest: 0, end: 12, nowMillis: 31_000), 12, "everything expired: the end")
        XCTAssertEqual(ages.firstKept(oldest: 10, end: 12, nowMillis: 11_600), 10, "never below the oldest offset")
        ages.retention = .none
        XCTAssertEqual(ages.firstKept(oldest: 0, end: 12, nowMillis: 31_000), 0)
    }

    func testRebaseAndRestart() {
        var ages = MessageAges(retention: Retention(seconds: 1))
        ages.note(offset: 0, millis: 0, byte: 0)
        ages.note(offset: 10, millis: 2_000, byte: 100)
        ages.note(offset: 20, millis: 4_000, byte: 200)
        ages.rebase(at: 15, byte: 150)
        XCTAssertEqual(ages.entries.map(\.offset), [15, 20])
        XCTAssertEqual(ages.byte(at: 15), 150)
        ages.restart(at: 30)
        XCTAssertTrue(ages.entries.isEmpty)
        XCTAssertEqual(ages.firstKept(oldest: 30, end: 30, nowMillis: 100_000), 30)
    }
}
