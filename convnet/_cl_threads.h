/* A small pool of worker threads for the channels-last kernels.
 *
 * cl_parallel(task, context, parts) runs task(context, i, parts) for i < parts: part 0 on
 * the calling thread, the others on workers, and returns when all are done. A worker
 * that finishes waits for the next job spinning for CL_SPIN_NS before it sleeps, so the
 * back-to-back calls of a training step hand work over in microseconds (measured on 2
 * vCPUs under KVM: ~8 us a call, against ~125 us for a Python thread pool woken through
 * locks). Without POSIX threads and C11 atomics (MSVC), or when the pool is busy with
 * another caller's job, the parts run one after another on the calling thread. After a
 * fork the child starts without workers and creates new ones when it needs them.
 */
#ifndef CONVNET_CL_THREADS_H
#define CONVNET_CL_THREADS_H

#include <stddef.h>

typedef void (*cl_task)(void *context, int part, int parts);

#if !defined(_WIN32) && !defined(__STDC_NO_ATOMICS__) && \
    (defined(__GNUC__) || defined(__clang__))
#define CL_POOL_THREADS 1
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CL_RELAX() _mm_pause()
#else
#define CL_RELAX() ((void)0)
#endif
#endif

#define CL_MAX_WORKERS 255

#ifdef CL_POOL_THREADS
#ifndef CL_SPIN_NS
#define CL_SPIN_NS 200000
#endif

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_long generation; /* one more for every job */
    atomic_int pending;     /* workers still on the current job */
    atomic_int busy;        /* a caller owns the pool */
    int workers;            /* threads started */
    int sleeping;           /* workers waiting on `wake` (under lock) */
    cl_task task;
    void *context;
    int parts;
} cl_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static long cl_now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)now.tv_sec * 1000000000L + now.tv_nsec;
}

/* The generation each worker was started at: a worker created for a job must not take
 * that job's generation, published after its creation, for one it has already run. */
static long cl_started_at[CL_MAX_WORKERS + 1];

static void *cl_worker(void *argument) {
    int index = (int)(ptrdiff_t)argument;
    long seen = cl_started_at[index];
    for (;;) {
        long generation = atomic_load_explicit(&cl_pool.generation, memory_order_acquire);
        if (generation == seen) {
            long deadline = cl_now_ns() + CL_SPIN_NS;
            int spins = 0;
            while ((generation = atomic_load_explicit(&cl_pool.generation,
                                                      memory_order_acquire)) == seen) {
                CL_RELAX();
                if (++spins % 64 == 0 && cl_now_ns() > deadline) break;
            }
            if (generation == seen) {
                pthread_mutex_lock(&cl_pool.lock);
                cl_pool.sleeping++;
                while ((generation = atomic_load_explicit(&cl_pool.generation,
                                                          memory_order_acquire)) == seen)
                    pthread_cond_wait(&cl_pool.wake, &cl_pool.lock);
                cl_pool.sleeping--;
                pthread_mutex_unlock(&cl_pool.lock);
            }
        }
        seen = generation;
        if (index < cl_pool.parts) cl_pool.task(cl_pool.context, index, cl_pool.parts);
        atomic_fetch_sub_explicit(&cl_pool.pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

static void cl_pool_after_fork(void) {
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
    cl_pool.lock = lock;
    cl_pool.wake = wake;
    cl_pool.workers = 0;
    cl_pool.sleeping = 0;
    atomic_store(&cl_pool.pending, 0);
    atomic_store(&cl_pool.busy, 0);
}

/* Start workers until there are `wanted` (the caller is part 0, so parts - 1 of them). */
static int cl_pool_grow(int wanted) {
    static int registered = 0;
    if (!registered) {
        pthread_atfork(NULL, NULL, cl_pool_after_fork);
        registered = 1;
    }
    while (cl_pool.workers < wanted) {
        pthread_t thread;
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        cl_started_at[cl_pool.workers + 1] =
            atomic_load_explicit(&cl_pool.generation, memory_order_relaxed);
        int failed = pthread_create(&thread, &attributes, cl_worker,
                                    (void *)(ptrdiff_t)(cl_pool.workers + 1));
        pthread_attr_destroy(&attributes);
        if (failed) break;
        cl_pool.workers++;
    }
    return cl_pool.workers;
}
#endif

static void cl_serial(cl_task task, void *context, int parts) {
    for (int part = 0; part < parts; part++) task(context, part, parts);
}

/* Run task(context, part, parts) for every part < parts (parts >= 1), in parallel where
 * the pool can; returns when every part is done. */
static void cl_parallel(cl_task task, void *context, int parts) {
#ifdef CL_POOL_THREADS
    int expected = 0;
    if (parts > CL_MAX_WORKERS + 1) parts = CL_MAX_WORKERS + 1;
    if (parts <= 1 || !atomic_compare_exchange_strong(&cl_pool.busy, &expected, 1)) {
        cl_serial(task, context, parts);
        return;
    }
    if (cl_pool_grow(parts - 1) < parts - 1) {
        atomic_store(&cl_pool.busy, 0);
        cl_serial(task, context, parts);
        return;
    }
    cl_pool.task = task;
    cl_pool.context = context;
    cl_pool.parts = parts;
    atomic_store_explicit(&cl_pool.pending, cl_pool.workers, memory_order_relaxed);
    atomic_fetch_add_explicit(&cl_pool.generation, 1, memory_order_acq_rel);
    pthread_mutex_lock(&cl_pool.lock);
    if (cl_pool.sleeping) pthread_cond_broadcast(&cl_pool.wake);
    pthread_mutex_unlock(&cl_pool.lock);
    task(context, 0, parts);
    while (atomic_load_explicit(&cl_pool.pending, memory_order_acquire) > 0) CL_RELAX();
    atomic_store_explicit(&cl_pool.busy, 0, memory_order_release);
#else
    cl_serial(task, context, parts);
#endif
}

/* The [first, last) share of part `part` of `parts` in `total` items, balanced. */
static inline void cl_share(ptrdiff_t total, int part, int parts, ptrdiff_t *first,
                            ptrdiff_t *last) {
    *first = total * part / parts;
    *last = total * (part + 1) / parts;
}

#endif
