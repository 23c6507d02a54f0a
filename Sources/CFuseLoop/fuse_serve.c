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
//
// The loop ends when a read says the session is over (unmounted), when a worker finds the session exited
// after processing a request (as libfuse's own loops do), or at once when `stop_fd` becomes readable: the
// reader polls it beside /dev/fuse, so a daemon told to stop does not wait for a request that may never come
// (a mount whose files stay open, a reader parked for ever).
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
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LARGE_REQUEST (64 * 1024)

struct serve {
    struct fuse_session *se;
    int fd;
    int stop_fd;        // readable once the loop is to end, or -1
    uint64_t spin_ns;
    pthread_mutex_t lock;
    pthread_cond_t turn;
    int reading;        // a worker holds the reader's turn
    int ended;          // every worker is to return
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

// Reads the next request into `buf`: > 0 a request, 0 the session ended or the loop was stopped, < 0 an
// error. `*queued` says whether the request was there at the first try.
static int next_request(struct serve *s, struct fuse_buf *buf, int *queued) {
    uint64_t deadline = 0;
    int spin = s->spin_ns && s->same_caller;
    int res;
    *queued = 1;
    for (;;) {
        if (fuse_session_exited(s->se)) return 0;
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
        struct pollfd p[2] = {{.fd = s->fd, .events = POLLIN}, {.fd = s->stop_fd, .events = POLLIN}};
        if (poll(p, s->stop_fd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR) {
            res = -errno;
            break;
        }
        if (s->stop_fd >= 0 && p[1].revents) return 0;
        // POLLERR means unmounted: the next read says so (ENODEV ends the session).
    }
    if (res >= (int)sizeof(struct fuse_in_header) && !(buf->flags & FUSE_BUF_IS_FD)) {
        uint32_t pid = ((const struct fuse_in_header *)buf->mem)->pid;
        s->same_caller = pid != 0 && pid == s->last_pid;
        s->last_pid = pid;
    }
    return res;
}

// Ends the loop: every worker returns once it has processed what it holds. `res` < 0 is the error that ended it.
static void end_loop(struct serve *s, int res) {
    pthread_mutex_lock(&s->lock);
    if (res < 0 && s->error == 0) s->error = res;
    s->ended = 1;
    fuse_session_exit(s->se);
    pthread_cond_broadcast(&s->turn);
    pthread_mutex_unlock(&s->lock);
}

// Gives up the reader's turn to a sleeping worker.
static void pass_turn(struct serve *s) {
    pthread_mutex_lock(&s->lock);
    s->reading = 0;
    pthread_cond_signal(&s->turn);
    pthread_mutex_unlock(&s->lock);
}

// Processes one request; returns whether the loop goes on.
static int process(struct serve *s, struct fuse_buf *buf) {
    fuse_session_process_buf(s->se, buf);
    if (!fuse_session_exited(s->se)) return 1;
    end_loop(s, 0);
    return 0;
}

static void *worker(void *arg) {
    struct serve *s = arg;
    struct fuse_buf buf;
    memset(&buf, 0, sizeof buf);
    for (;;) {
        pthread_mutex_lock(&s->lock);
        while (s->reading && !s->ended) pthread_cond_wait(&s->turn, &s->lock);
        if (s->ended) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        s->reading = 1;
        pthread_mutex_unlock(&s->lock);

        int res, queued, going = 1;
        while (going && (res = next_request(s, &buf, &queued)) > 0 && !queued && buf.size <= LARGE_REQUEST)
            going = process(s, &buf);
        if (!going) break;
        if (res <= 0) {
            end_loop(s, res);
            break;
        }
        pass_turn(s);
        if (!process(s, &buf)) break;
    }
    free(buf.mem);
    return NULL;
}

int dnp_fuse_serve(struct fuse_session *se, unsigned threads, unsigned spin_us, int stop_fd) {
    struct serve s;
    memset(&s, 0, sizeof s);
    s.se = se;
    s.fd = fuse_session_fd(se);
    s.stop_fd = stop_fd;
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

// The signal that asked the loop to stop, and where its handler writes. A plain handler, not a dispatch
// source: it runs whatever the daemon's thread pools are doing, and only does what is safe in a handler.
static volatile sig_atomic_t stop_signal;
static int stop_signal_fd = -1;

static void on_stop_signal(int signo) {
    int saved = errno;
    if (stop_signal == 0) stop_signal = signo;
    char one = 1;
    ssize_t ignored = write(stop_signal_fd, &one, 1);
    (void)ignored;
    errno = saved;
}

int dnp_stop_on_signals(int fd) {
    stop_signal_fd = fd;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    const int signals[] = {SIGTERM, SIGINT, SIGHUP};
    for (unsigned i = 0; i < sizeof signals / sizeof signals[0]; i++)
        if (sigaction(signals[i], &sa, NULL) != 0) return -errno;
    return 0;
}

int dnp_stop_signal(void) { return stop_signal; }
