// Thin shim over libfuse3's low-level API. Some libfuse entry points are macros chosen by FUSE_USE_VERSION,
// and struct fuse_file_info uses bitfields; Swift sees neither reliably, so they get static inline wrappers.
#ifndef DNPIPES_CFUSE_SHIM_H
#define DNPIPES_CFUSE_SHIM_H
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <sys/stat.h>
#include <errno.h>
#include <stddef.h>
#include <poll.h>

// A pipe is a seekable file whose every read reaches the daemon: no page cache (the content grows and is
// reset elsewhere), but positions, so programs that seek back (bash's read, head) work as on a file.
static inline void dnp_fi_set_pipe(struct fuse_file_info *fi) {
    fi->direct_io = 1;
    fi->nonseekable = 0;
    fi->keep_cache = 0;
}
// A `.drain` view whose every byte position is known is an ordinary cached file: what lies at a position
// changes only by a reset, which changes the size, and the kernel drops a file's cached pages whenever it
// sees its size change. keep_cache stays off, so each open starts from the pipe as it is then.
static inline void dnp_fi_set_cached(struct fuse_file_info *fi) {
    fi->direct_io = 0;
    fi->nonseekable = 0;
    fi->keep_cache = 0;
}
static inline int dnp_fi_flags(const struct fuse_file_info *fi) { return fi->flags; }
static inline uint64_t dnp_fi_fh(const struct fuse_file_info *fi) { return fi->fh; }
static inline void dnp_fi_set_fh(struct fuse_file_info *fi, uint64_t fh) { fi->fh = fh; }

static inline void dnp_conn_setup(struct fuse_conn_info *conn, unsigned max_write) {
    conn->max_write = max_write;
    // Read-ahead serves cached `.drain` handles only (every other handle is direct I/O, which asynchronous
    // reads leave alone): sent asynchronously, the next window is read while the reader copies this one,
    // which makes `cat` of a cached drain as fast as of a direct one.
    conn->max_readahead = max_write;
    conn->want |= FUSE_CAP_ASYNC_READ;
    // Otherwise every cached read first asks for the attributes, a round trip per read(2); the size check
    // that drops stale pages stays (see dnp_fi_set_cached).
    conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
}

static inline struct fuse_args dnp_args_init(void) {
    struct fuse_args a = FUSE_ARGS_INIT(0, NULL);
    return a;
}

#endif
