import XCTest

/// A large pipe on the embedded store: its first open after a mount reads and checks every segment, which
/// takes a while; lookups and opens of other pipes must not wait for it.
final class LargePipeTests: MountTestCase {
    override class var backend: Backend { .embedded }

    func testFirstOpenOfALargePipeDoesNotDelayOtherPipes() throws {
        ok("seq 1 2000000 > big; echo x > small", timeout: 120)
        unmountAll()
        try mount()
        let out = ok("""
        ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
        start=$(date +%s%N)
        ( stat -c %s big > /dev/null; echo "big $(ms $start)" > "$ROOT/big.time" ) &
        sleep 0.05
        small=$(date +%s%N); stat -c %s small > /dev/null; small=$(ms $small)
        wait
        read -r _ big < "$ROOT/big.time"
        # The large pipe's first stat must still have been reading when the small one answered.
        [ "$big" -gt $((small + 200)) ] && echo "small answered first" || echo "big $big ms, small $small ms"
        """, timeout: 60)
        XCTAssertEqual(out, "small answered first\n")
    }
}
