/*
 * threadpool.c - a small fixed-size pool of POSIX threads (no OpenMP).
 *
 * bitnn_parallel_for splits [0, n) into one contiguous range per thread, in
 * multiples of `grain`. Callers only ever split work whose items are computed
 * independently (output rows, input rows), so results do not depend on the
 * number of threads.
 *
 * Workers spin briefly on the job counter before sleeping on a condition
 * variable: token-by-token decoding issues many small jobs back to back and
 * a futex wake-up per job would dominate. Every SPIN_YIELD_EVERY turns the
 * spinning thread yields its CPU (sched_yield): when the pool has more
 * threads than free cores (BITNN_NUM_THREADS above the cores it gets, other
 * busy processes, a taskset narrower than the thread count), the thread it
 * waits for may be queued on the spinner's own core, and pure spinning would
 * hold it off for the whole spin (measured on a 2-core Zen 4 VM, the small
 * decoder in int8 with 2 threads in a process pinned to one core: 83-89
 * tokens/s with pure spinning, 408-645 with the yields, 436-920 with 1
 * thread; the machine's speed varied). With a core of its own, a yield
 * returns at once (about 0.5 us there).
 *
 * Fork: a child process has only the thread that called fork(), so every
 * pool's workers are gone there. A pthread_atfork child handler walks the
 * list of live pools, re-initialises their locks and marks them as having no
 * workers; the next bitnn_parallel_for in the child starts them again. The
 * parent's pools are untouched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bitnn.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ volatile("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

#define SPIN_ITERS 2000 /* a few microseconds: covers the gap between back-to-back jobs, not idle time */
#define SPIN_YIELD_EVERY 32

/* One turn of a spin-wait: a pause, and every SPIN_YIELD_EVERY turns the CPU
 * to another runnable thread, if any (see the top of the file). */
static inline void spin_turn(int i)
{
    if (i % SPIN_YIELD_EVERY == SPIN_YIELD_EVERY - 1) sched_yield();
    else CPU_RELAX();
}

struct bitnn_pool {
    int n;                 /* threads in total, the caller included */
    int started;           /* workers running: n - 1, or 0 (in a forked child until first use) */
    pthread_t *workers;    /* n - 1 */
    pthread_mutex_t mu;    /* guards sleeping / waking */
    pthread_cond_t wake;   /* new job or stop */
    pthread_cond_t done;   /* pending reached 0 */
    pthread_mutex_t run_mu;/* one job at a time per pool */
    /* the current job, published by incrementing generation */
    bitnn_range_fn fn;
    void *ctx;
    size_t items, grain;
    atomic_uint generation;
    atomic_int pending;
    atomic_int stop;
    atomic_int threads_used; /* distinct threads that ran a non-empty share */
    int caller_ran;          /* the caller's share counted (under run_mu) */
    struct bitnn_pool *next, *prev; /* the list of live pools, for the fork handler */
};

/* Live pools. Guarded by pools_mu, which the fork handlers hold across fork()
 * so that the child sees a consistent list. */
static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
static bitnn_pool *pools_head;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

typedef struct {
    bitnn_pool *pool;
    int index;
} worker_arg;

/* Runs thread t's share of the current job; returns whether it was non-empty. */
static int run_share(bitnn_pool *p, int t)
{
    const size_t blocks = (p->items + p->grain - 1) / p->grain;
    const size_t b0 = blocks * (size_t)t / (size_t)p->n;
    const size_t b1 = blocks * (size_t)(t + 1) / (size_t)p->n;
    size_t begin = b0 * p->grain, end = b1 * p->grain;
    if (end > p->items) end = p->items;
    if (begin >= end) return 0;
    p->fn(p->ctx, begin, end);
    return 1;
}

static void *worker_main(void *arg)
{
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    bitnn_pool *p = wa.pool;
    unsigned seen = 0; /* 0 at creation: a job published before we ran is not missed */
    int counted = 0;
    for (;;) {
        unsigned g = seen;
        for (int i = 0; i < SPIN_ITERS; i++) {
            g = atomic_load_explicit(&p->generation, memory_order_acquire);
            if (g != seen || atomic_load(&p->stop)) break;
            spin_turn(i);
        }
        if (g == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
                   !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        if (run_share(p, wa.index) && !counted) {
            counted = 1;
            atomic_fetch_add_explicit(&p->threads_used, 1, memory_order_relaxed);
        }
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

static void fork_prepare(void) { pthread_mutex_lock(&pools_mu); }
static void fork_parent(void) { pthread_mutex_unlock(&pools_mu); }

/* In the child only the forking thread exists: no lock can be held by anyone
 * else, and no worker is left. Reset every pool to "no workers, no job". */
static void fork_child(void)
{
    pthread_mutex_init(&pools_mu, NULL);
    for (bitnn_pool *p = pools_head; p; p = p->next) {
        pthread_mutex_init(&p->mu, NULL);
        pthread_mutex_init(&p->run_mu, NULL);
        pthread_cond_init(&p->wake, NULL);
        pthread_cond_init(&p->done, NULL);
        atomic_store(&p->generation, 0);
        atomic_store(&p->pending, 0);
        atomic_store(&p->stop, 0);
        p->started = 0;
    }
}

static void register_atfork(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* Stops and joins the running workers (all of them, or the first `started`). */
static void stop_workers(bitnn_pool *p)
{
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++) pthread_join(p->workers[i], NULL);
    p->started = 0;
    atomic_store(&p->stop, 0);
}

/* Starts workers 1..n-1; on failure stops the ones started and returns the error. */
static bitnn_status start_workers(bitnn_pool *p)
{
    for (int i = 1; i < p->n; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        int rc = wa ? 0 : ENOMEM;
        if (wa) {
            wa->pool = p;
            wa->index = i;
            rc = pthread_create(&p->workers[i - 1], NULL, worker_main, wa);
            if (rc) free(wa);
        }
        if (rc) {
            stop_workers(p);
            return rc == ENOMEM ? BITNN_ENOMEM : BITNN_ESYS;
        }
        p->started = i;
    }
    return BITNN_OK;
}

bitnn_status bitnn_pool_create(int n, bitnn_pool **out)
{
    if (!out || n < 1 || n > 1024) return BITNN_EINVAL;
    *out = NULL;
    bitnn_pool *p = calloc(1, sizeof *p);
    if (!p) return BITNN_ENOMEM;
    p->n = n;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->threads_used, 0);
    if (n > 1) {
        p->workers = calloc((size_t)(n - 1), sizeof *p->workers);
        if (!p->workers) {
            free(p);
            return BITNN_ENOMEM;
        }
    }
    pthread_once(&atfork_once, register_atfork);
    bitnn_status st = start_workers(p);
    if (st != BITNN_OK) {
        bitnn_pool_destroy(p);
        return st;
    }
    pthread_mutex_lock(&pools_mu);
    p->next = pools_head;
    if (pools_head) pools_head->prev = p;
    pools_head = p;
    pthread_mutex_unlock(&pools_mu);
    *out = p;
    return BITNN_OK;
}

void bitnn_pool_destroy(bitnn_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&pools_mu);
    if (p->prev) p->prev->next = p->next;
    else if (pools_head == p) pools_head = p->next;
    if (p->next) p->next->prev = p->prev;
    pthread_mutex_unlock(&pools_mu);
    stop_workers(p);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->run_mu);
    free(p->workers);
    free(p);
}

int bitnn_pool_size(const bitnn_pool *p) { return p ? p->n : 1; }

int bitnn_pool_threads_used(const bitnn_pool *p)
{
    return p ? atomic_load_explicit(&((bitnn_pool *)p)->threads_used, memory_order_relaxed) : 0;
}

void bitnn_parallel_for(bitnn_pool *p, size_t n, size_t grain, bitnn_range_fn fn, void *ctx)
{
    if (n == 0) return;
    if (grain == 0) grain = 1;
    if (!p || p->n == 1 || n <= grain) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    if (p->started != p->n - 1 && start_workers(p) != BITNN_OK) {
        /* a forked child that cannot start threads: run the job here */
        pthread_mutex_unlock(&p->run_mu);
        fn(ctx, 0, n);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->items = n;
    p->grain = grain;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    if (run_share(p, 0) && !p->caller_ran) {
        p->caller_ran = 1;
        atomic_fetch_add_explicit(&p->threads_used, 1, memory_order_relaxed);
    }

    for (int i = 0; i < SPIN_ITERS && atomic_load_explicit(&p->pending, memory_order_acquire) != 0; i++)
        spin_turn(i);
    if (atomic_load_explicit(&p->pending, memory_order_acquire) != 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&p->run_mu);
}

/* ------------------------------------------------------- how many threads */
static int cgroup_cpu_limit(void)
{
    /* cgroup v2: "max 100000" or "<quota> <period>" */
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char q[32] = {0};
        long period = 0;
        int ok = fscanf(f, "%31s %ld", q, &period) == 2;
        fclose(f);
        if (ok && strcmp(q, "max") != 0 && period > 0) {
            long quota = atol(q);
            if (quota > 0) return (int)((quota + period - 1) / period);
        }
        return 0;
    }
    /* cgroup v1 */
    long quota = 0, period = 0;
    f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r");
    if (f) {
        if (fscanf(f, "%ld", &quota) != 1) quota = 0;
        fclose(f);
    }
    f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r");
    if (f) {
        if (fscanf(f, "%ld", &period) != 1) period = 0;
        fclose(f);
    }
    if (quota > 0 && period > 0) return (int)((quota + period - 1) / period);
    return 0;
}

int bitnn_available_cpus(void)
{
    int n = 0;
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
#endif
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    int limit = cgroup_cpu_limit();
    if (limit > 0 && limit < n) n = limit;
    if (n > 1024) n = 1024;
    return n;
}

bitnn_status bitnn_default_threads(int *n, char *msg, size_t msg_len)
{
    const char *env = getenv("BITNN_NUM_THREADS");
    if (env && *env) {
        char *end = NULL;
        errno = 0;
        long v = strtol(env, &end, 10);
        if (errno || end == env || *end != '\0' || v < 1 || v > 1024) {
            snprintf(msg, msg_len, "BITNN_NUM_THREADS=%s is not a whole number from 1 to 1024", env);
            return BITNN_EENV;
        }
        *n = (int)v;
        return BITNN_OK;
    }
    *n = bitnn_available_cpus();
    return BITNN_OK;
}
