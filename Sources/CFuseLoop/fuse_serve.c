// The request loop that serves a libfuse session.
//
// Why not fuse_session_loop_mt: there every request goes to a worker asleep in read(2) on /dev/fuse, and the
// next read is left to another sleeping worker. A program that makes one small request at a time (bash's
// `read` asks the daemon whether the file is a terminal on every line) then pays, per request, for waking
// a thread and, on a virtual machine whose idle CPUs halt, for waking a halted CPU: about 45 µs a round trip
// where this loop takes about 20.
//
// Here one worker at a time holds the reader's turn. It reads without blocking; when nothing is there it
// keeps asking for a short while (`spin`), as a SCHED_IDLE thread so that any other runnable thread takes
// its CPU at once, then sleeps in poll(2). A request that came while the reader was waiting is processed by
// the reader itself, which then reads again: one thread, no wake-up. A request that was already queued when
// the reader came back means the mount is busy: the reader then passes its turn to a sleeping worker before
// it processes, so busy mounts have every worker reading and processing side by side. So does a request
// that carries more than LARGE_REQUEST bytes (a large write): the embedded store answers a write and then
// encodes and writes its records in the same callback, while the writer's next write should already be
// read. Callbacks never wait (a request that must wait is parked and answered later from another thread),
// so a request processed by the reader holds the others back only for as long as its callback runs.
#define _GNU_SOURCE
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>
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
    int idle_priority;  // readers may drop to SCHED_IDLE while they spin, and come back
    pthread_mutex_t lock;
    pthread_cond_t turn;
    int reading;        // a worker holds the reader's turn
    int error;          // the first error that ended the loop, negative
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int set_policy(int policy) {
    struct sched_param param;
    memset(&param, 0, sizeof param);
    return sched_setscheduler(0, policy, &param);  // 0: the calling thread
}

// A thread that drops to SCHED_IDLE may come back to SCHED_OTHER only with CAP_SYS_NICE or a high enough
// RLIMIT_NICE. Tried on a thread of its own, so a daemon without that right never strands a worker.
static void *probe_idle_priority(void *arg) {
    (void)arg;
    int ok = set_policy(SCHED_IDLE) == 0 && set_policy(SCHED_OTHER) == 0;
    return (void *)(intptr_t)ok;
}

static int idle_priority_allowed(void) {
    pthread_t t;
    void *ok = NULL;
    if (pthread_create(&t, NULL, probe_idle_priority, NULL) != 0) return 0;
    pthread_join(t, &ok);
    return ok != NULL;
}

// Reads the next request into `buf`: > 0 a request, 0 the session ended, < 0 an error. `*queued` says
// whether the request was there at the first try.
static int next_request(struct serve *s, struct fuse_buf *buf, int *queued) {
    int idle = 0;
    uint64_t deadline = 0;
    int res;
    *queued = 1;
    for (;;) {
        res = fuse_session_receive_buf(s->se, buf);
        if (res != -EAGAIN && res != -EINTR) break;
        *queued = 0;
        if (res == -EAGAIN && s->spin_ns) {
            uint64_t now = now_ns();
            if (deadline == 0) deadline = now + s->spin_ns;
            if (now < deadline) {
                if (!idle && s->idle_priority) idle = set_policy(SCHED_IDLE) == 0;
                continue;
            }
        }
        if (idle) idle = set_policy(SCHED_OTHER) != 0;
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0 && errno != EINTR) {
            res = -errno;
            break;
        }
        // POLLERR means unmounted: the next read says so (ENODEV ends the session).
    }
    if (idle) set_policy(SCHED_OTHER);
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
    s.idle_priority = spin_us > 0 && idle_priority_allowed();
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
