// The request loop that serves a libfuse session (see fuse_serve.c for why it is not libfuse's own).
#ifndef DNPIPES_FUSE_SERVE_H
#define DNPIPES_FUSE_SERVE_H

struct fuse_session;

/// Serves `se` with `threads` workers until it is unmounted or exited. After a request from the process that
/// sent the one before, the reading worker keeps asking for the next one for `spin_us` microseconds before
/// it sleeps in poll(2); 0 never does. Returns 0 on a clean end, else a negative errno.
int dnp_fuse_serve(struct fuse_session *se, unsigned threads, unsigned spin_us);

#endif
