// The benchmark's ceiling for reads through FUSE: a filesystem of one read-only file, `f`, whose bytes are
// a copy of FILE held in memory, served with libfuse's own multi-threaded loop and the options dnpipes
// gives a `.drain` handle of that size (up to 16 MiB read through the kernel's page cache, longer ones with
// direct I/O; nothing kept between opens, 1 MiB reads and read-ahead, asynchronous reads). Nothing a real store does (finding messages, cursors, checks) is
// done: a read is one reply from memory. dnpipes-bench reads both and prints the ratio, so that the pull
// row shows how close dnpipes comes to what FUSE itself allows on the machine.
//
// Usage: dnpipes-fuse-ceiling MOUNTPOINT FILE. Mounts, then serves until unmounted or signalled.
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REQUEST_BYTES (1 << 20)
// As OpenPipe.cachedDrainBytes.
#define CACHED_DRAIN_BYTES (16 << 20)
#define FILE_INODE 2

static char *content;
static size_t content_size;

static void fill_stat(fuse_ino_t ino, struct stat *st) {
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    if (ino == FUSE_ROOT_ID) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)content_size;
        st->st_blksize = REQUEST_BYTES;
    }
}

static void ceiling_init(void *userdata, struct fuse_conn_info *conn) {
    (void)userdata;
    conn->max_write = REQUEST_BYTES;
    conn->max_readahead = REQUEST_BYTES;
    conn->want |= FUSE_CAP_ASYNC_READ;
}

static void ceiling_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    if (parent != FUSE_ROOT_ID || strcmp(name, "f") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.ino = FILE_INODE;
    e.attr_timeout = 1;
    e.entry_timeout = 1;
    fill_stat(FILE_INODE, &e.attr);
    fuse_reply_entry(req, &e);
}

static void ceiling_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)fi;
    struct stat st;
    fill_stat(ino, &st);
    fuse_reply_attr(req, &st, 1);
}

static void ceiling_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    if (ino != FILE_INODE) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    fi->keep_cache = 0;
    fi->direct_io = content_size > CACHED_DRAIN_BYTES;
    fuse_reply_open(req, fi);
}

static void ceiling_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)ino;
    (void)fi;
    size_t at = off < 0 ? content_size : (size_t)off;
    if (at > content_size) at = content_size;
    if (size > content_size - at) size = content_size - at;
    fuse_reply_buf(req, content + at, size);
}

static const struct fuse_lowlevel_ops operations = {
    .init = ceiling_init,
    .lookup = ceiling_lookup,
    .getattr = ceiling_getattr,
    .open = ceiling_open,
    .read = ceiling_read,
};

static int load(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) return -1;
    content_size = (size_t)st.st_size;
    content = malloc(content_size ? content_size : 1);
    size_t done = 0;
    while (content && done < content_size) {
        ssize_t n = read(fd, content + done, content_size - done);
        if (n <= 0) break;
        done += (size_t)n;
    }
    close(fd);
    return content && done == content_size ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MOUNTPOINT FILE\n", argv[0]);
        return 2;
    }
    if (load(argv[2]) != 0) {
        fprintf(stderr, "%s: cannot read %s: %s\n", argv[0], argv[2], strerror(errno));
        return 1;
    }
    char *fuse_argv[] = {argv[0], "-o", "fsname=dnpipes-fuse-ceiling", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
    struct fuse_session *se = fuse_session_new(&args, &operations, sizeof operations, NULL);
    if (!se || fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, argv[1]) != 0) {
        fprintf(stderr, "%s: cannot mount on %s\n", argv[0], argv[1]);
        return 1;
    }
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(config, 16);
    int rc = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    free(content);
    return rc == 0 ? 0 : 1;
}
