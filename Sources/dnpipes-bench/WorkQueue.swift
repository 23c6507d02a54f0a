import Foundation

/// Competing consumers against one plain reader: four `while read` workers of one group, on the given mounts
/// (two per mount with two Kafka hosts), doing the jobs of a pipe, against one `while read` loop reading
/// the same jobs through `.drain/`. Both sides count each job; a round of the group ends when every job is
/// counted once. A new group per round starts at the oldest job, so both sides read the same jobs; it is
/// made (opened once on every mount) before its round is timed.
struct WorkQueueThroughput {
    let backend: String
    let mounts: [PipeMount]
    let rounds: Int
    let jobs = 5_000

    func run() throws -> Comparison {
        let first = mounts[0]
        try first.makePipe("work-queue", visibleOn: Array(mounts.dropFirst()))
        try shell("seq 1 \(jobs) | sed 's/$/ job-payload-of-some-forty-bytes..../' > \(q(first.path + "/work-queue"))")
        var group = [Double](), plain = [Double]()
        for r in 0..<rounds {
            let viaGroup = { group.append(try groupRound("round-\(r)")) }
            let viaPlain = { plain.append(try plainLoop()) }
            if r % 2 == 0 { try viaGroup(); try viaPlain() } else { try viaPlain(); try viaGroup() }
            progress("work queue (\(backend)) round \(r + 1)/\(rounds): 4 group workers \(fmt(group.last!)) s, one plain loop \(fmt(plain.last!)) s")
        }
        try shell("rm \(q(first.path + "/work-queue"))")
        return throughput("work queue, 4 workers (\(backend))", peer: "one while-read loop", lines: jobs,
                          dnpipes: group, peer: plain, atLeast: 0.5)
    }

    private func plainLoop() throws -> Double {
        let script = "s=$EPOCHREALTIME; n=0; while IFS= read -r l; do n=$((n + 1)); done < \(q(mounts[0].path + "/.drain/work-queue")); e=$EPOCHREALTIME; echo \"$n $s $e\""
        let out = try shellOutput(script).split(separator: " ").map(String.init)
        guard out.count == 3, let start = Double(out[1]), let end = Double(out[2]), Int(out[0]) == jobs else {
            throw BenchError("plain loop printed \(out), expected \(jobs) jobs")
        }
        return end - start
    }

    /// Four workers, each appending the jobs it reads to its own file; done once the files hold every job.
    /// Each job must be there exactly once.
    private func groupRound(_ name: String) throws -> Double {
        let dir = try shellOutput("mktemp -d /tmp/dnpipes-bench-wq.XXXXXX")
        defer { _ = try? shell("rm -rf \(q(dir))") }
        let views = (0..<4).map { mounts[$0 * mounts.count / 4].path + "/.group/\(name)/work-queue" }
        // The group exists before the clock starts (its journal made and read on every host), as a queue's
        // group does in use: the rows compare handing out jobs, not making a group.
        let script = """
            for v in \(Set(views).map(q).joined(separator: " ")); do exec 3< "$v"; exec 3<&-; done
            sleep 1
            s=$EPOCHREALTIME
            for w in 0 1 2 3; do
              v=("\(views[0])" "\(views[1])" "\(views[2])" "\(views[3])")
              ( while IFS= read -r l; do echo "$l"; done < "${v[$w]}" > \(q(dir))/w$w ) & pids[$w]=$!
            done
            while [ "$(cat \(q(dir))/w* 2>/dev/null | wc -l)" -lt \(jobs) ]; do sleep 0.01; done
            e=$EPOCHREALTIME
            kill ${pids[@]}; wait ${pids[@]} 2>/dev/null
            echo "$(cut -d' ' -f1 \(q(dir))/w* | sort -u | wc -l) $(cat \(q(dir))/w* | wc -l) $s $e"
            """
        let out = try shellOutput("timeout 300 bash -c \(q(script))").split(separator: " ").map(String.init)
        guard out.count == 4, let start = Double(out[2]), let end = Double(out[3]) else { throw BenchError("group round printed \(out)") }
        guard Int(out[0]) == jobs, Int(out[1]) == jobs else {
            throw BenchError("group \(name) did \(out[0]) distinct jobs in \(out[1]) lines, expected \(jobs) each")
        }
        return end - start
    }
}
