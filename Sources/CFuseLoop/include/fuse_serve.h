// The request loop that serves a libfuse session (see fuse_serve.c for why it is not libfuse's own).
#ifndef DNPIPES_FUSE_SERVE_H
#define DNPIPES_FUSE_SERVE_H

struct fuse_session;

/// Serves `se` with `threads` workers until it is unmounted, exited, or `stop_fd` (-1: none) becomes
/// readable. After a request from the process that sent the one before, the reading worker keeps asking for
/// the next one for `spin_us` microseconds before it sleeps in poll(2); 0 never does. Returns 0 on a clean
/// end, else a negative errno.
int dnp_fuse_serve(struct fuse_session *se, unsigned threads, unsigned spin_us, int stop_fd);

/// Makes SIGTERM, SIGINT and SIGHUP end the loop: their handler notes the signal and writes a byte to `fd`
/// (the write end of the pipe whose read end the loop polls). Returns 0, else a negative errno.
int dnp_stop_on_signals(int fd);

/// The first signal that reached that handler, or 0.
int dnp_stop_signal(void);

#endif
