// The request loop that serves a libfuse session.
//
// Why not fuse_session_loop_mt: there every request goes to a worker asleep in read(2) on /dev/fuse. A
// program that makes one small request after another (bash's `read` asks the daemon whether the file is a
// terminal on every line; a line-buffered writer writes each line) then pays, per request, for waking a
// thread and, on a virtual machine whose idle CPUs halt, for waking a halted CPU.
//
// Here one worker at a time holds the reader's turn. It reads without blocking; when nothing is there it
// sleeps in poll(2), except after a request from the same process as the one before it: then it keeps
// asking for `spin` first, yielding its CPU to any other runnable thread at every try, because that process
// is likely to ask again as soon as it has its answer. Requests from several processes in turn (workers of
// a queue, readers of a fan-out) get no such polling: they keep the CPUs busy on their own, and a polling
// thread would only take time from them.
//
// A request that came while the reader was waiting is processed by the reader itself, which then reads
// again: one thread, no wake-up. A request that was already queued when the reader came back means the
// mount is busy: the reader then passes its turn to a sleeping worker before it processes, so busy mounts
// have every worker reading and processing side by side. So does a request that carries more than
// LARGE_REQUEST bytes (a large write): the embedded store answers a write and then encodes and writes its
// records in the same callback, while the writer's next write should already be read. Callbacks never wait
// (a request that must wait is parked and answered later from another thread), so a request processed by
// the reader holds the others back only for as long as its callback runs.
#define _GNU_SOURCE
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
#include <linux/fuse.h>
#include "fuse_serve.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LARGE_REQUEST (64 * 1024)

struct serve {
    struct fuse_session *se;
    int fd;
    uint64_t spin_ns;
    pthread_mutex_t lock;
    pthread_cond_t turn;
    int reading;        // a worker holds the reader's turn
    int error;          // the first error that ended the loop, negative
    // Read and written only by the worker holding the reader's turn (the turn passes under `lock`).
    uint32_t last_pid;  // the process that sent the last request
    int same_caller;    // the last two requests came from one process
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// Reads the next request into `buf`: > 0 a request, 0 the session ended, < 0 an error. `*queued` says
// whether the request was there at the first try.
static int next_request(struct serve *s, struct fuse_buf *buf, int *queued) {
    uint64_t deadline = 0;
    int spin = s->spin_ns && s->same_caller;
    int res;
    *queued = 1;
    for (;;) {
        res = fuse_session_receive_buf(s->se, buf);
        if (res != -EAGAIN && res != -EINTR) break;
        *queued = 0;
        if (res == -EAGAIN && spin) {
            uint64_t now = now_ns();
            if (deadline == 0) deadline = now + s->spin_ns;
            if (now < deadline) {
                sched_yield();
                continue;
            }
        }
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) {
            res = -errno;
            break;
        }
        // POLLERR means unmounted: the next read says so (ENODEV ends the session).
    }
    if (res >= (int)sizeof(struct fuse_in_header) && !(buf->flags & FUSE_BUF_IS_FD)) {
        uint32_t pid = ((const struct fuse_in_header *)buf->mem)->pid;
        s->same_caller = pid != 0 && pid == s->last_pid;
        s->last_pid = pid;
    }
    return res;
}

// Gives up the reader's turn; after an end or an error, wakes every worker so that all of them return.
static void pass_turn(struct serve *s, int res) {
    pthread_mutex_lock(&s->lock);
    s->reading = 0;
    if (res <= 0) {
        if (res < 0 && s->error == 0) s->error = res;
        fuse_session_exit(s->se);
        pthread_cond_broadcast(&s->turn);
    } else {
        pthread_cond_signal(&s->turn);
    }
    pthread_mutex_unlock(&s->lock);
}

static void *worker(void *arg) {
    struct serve *s = arg;
    struct fuse_buf buf;
    memset(&buf, 0, sizeof buf);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (s->reading && !fuse_session_exited(s->se)) pthread_cond_wait(&s->turn, &s->lock);
        if (fuse_session_exited(s->se)) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        s->reading = 1;
        pthread_mutex_unlock(&s->lock);

        int res, queued;
        while ((res = next_request(s, &buf, &queued)) > 0 && !queued && buf.size <= LARGE_REQUEST)
            fuse_session_process_buf(s->se, &buf);
        pass_turn(s, res);
        if (res <= 0) break;
        fuse_session_process_buf(s->se, &buf);
    }
    free(buf.mem);
    return NULL;
}

int dnp_fuse_serve(struct fuse_session *se, unsigned threads, unsigned spin_us) {
    struct serve s;
    memset(&s, 0, sizeof s);
    s.se = se;
    s.fd = fuse_session_fd(se);
    s.spin_ns = (uint64_t)spin_us * 1000u;
    if (threads == 0) threads = 1;
    int flags = fcntl(s.fd, F_GETFL);
    if (flags < 0 || fcntl(s.fd, F_SETFL, flags | O_NONBLOCK) < 0) return -errno;
    pthread_t *ids = calloc(threads, sizeof *ids);
    if (!ids) return -ENOMEM;
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.turn, NULL);
    unsigned started = 0;
    while (started < threads && pthread_create(&ids[started], NULL, worker, &s) == 0) started++;
    for (unsigned i = 0; i < started; i++) pthread_join(ids[i], NULL);
    free(ids);
    pthread_cond_destroy(&s.turn);
    pthread_mutex_destroy(&s.lock);
    fuse_session_reset(se);
    return started == 0 ? -EAGAIN : s.error;
}
