import ArgumentParser

struct DNPipes: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dnpipes",
        abstract: "Distributed named pipes, as a filesystem.",
        discussion: """
        dnpipes mounts a directory in which every file is a pipe that processes on any host can push to and \
        pull from:

          mkfifo /dnp/jobs              create a pipe
          echo hello > /dnp/jobs        push: every line written is one message
          cat /dnp/jobs                 pull: every reader sees every message, oldest first, then waits
          cat /dnp/.drain/jobs          pull what is there now, then stop (batch jobs)
          cat /dnp/.tail/jobs           pull only messages pushed from now on
          truncate -s 0 /dnp/jobs       reset: remove every message
          rm /dnp/jobs                  delete the pipe

        Pipes are stored in an embedded store on local disk unless --brokers names a Kafka cluster.

        mount(8) helpers may also call: dnpipes SOURCE MOUNTPOINT [-o OPTIONS], where SOURCE is a data \
        directory or kafka://HOST:PORT,...
        """,
        subcommands: [Mount.self, Unmount.self, Push.self, Pull.self, Reset.self, List.self]
    )
}

/// Turns the `dnpipes SOURCE MOUNTPOINT -o OPTIONS` form used by mount(8) helpers into `dnpipes mount`.
enum MountHelperForm {
    static func rewrite(_ args: [String]) -> [String] {
        guard let first = args.first, !first.hasPrefix("-"), !["mount", "unmount", "push", "pull", "reset", "ls", "help"].contains(first) else { return args }
        var positionals: [String] = []
        var rest: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "-o", i + 1 < args.count {
                rest += ["-o", args[i + 1]]
                i += 2
                continue
            }
            if a.hasPrefix("-") { rest.append(a) } else { positionals.append(a) }
            i += 1
        }
        guard positionals.count == 2 else { return args }
        return ["mount", positionals[1], "--source", positionals[0]] + rest
    }
}
