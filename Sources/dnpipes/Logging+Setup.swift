import Foundation
import Logging

/// Log lines go to standard error: the terminal with --foreground, the log file otherwise (the daemon's
/// standard error is that file).
func makeLogger(level: Logger.Level = .info) -> Logger {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    return Logger(label: "dnpipes")
}
