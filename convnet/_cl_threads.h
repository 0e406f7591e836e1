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

/* Placement (Linux): while a job that wakes sleeping workers runs, the caller stays on
 * the CPU it started it on, and the workers move off that CPU (as map_groups does in
 * _parallel.py) and stay off it until a later waking job names another. Left to itself
 * the scheduler may wake a worker onto the caller's CPU after an idle pause, and the two
 * then share one CPU for milliseconds. cl_set_placement(0) leaves the threads alone. */
#if defined(CL_POOL_THREADS) && defined(__linux__) && defined(_GNU_SOURCE)
#define CL_PLACE_THREADS 1
#include <sched.h>
#endif
static int cl_place = 1;

#ifdef CL_POOL_THREADS
static void cl_set_placement(int place) { __atomic_store_n(&cl_place, place, __ATOMIC_RELAXED); }
#else
static void cl_set_placement(int place) { cl_place = place; }
#endif

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
    int avoid_cpu; /* the CPU the caller stays on during the job, or -1 */
} cl_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

#ifdef CL_PLACE_THREADS
/* Move the calling worker to `allowed` minus `avoid_cpu` (all of `allowed` for -1, or when
 * nothing else is left). */
static void cl_place_worker(const cpu_set_t *allowed, int avoid_cpu) {
    cpu_set_t cpus = *allowed;
    if (avoid_cpu >= 0 && avoid_cpu < CPU_SETSIZE && CPU_ISSET(avoid_cpu, &cpus)) {
        CPU_CLR(avoid_cpu, &cpus);
        if (CPU_COUNT(&cpus) == 0) cpus = *allowed;
    }
    pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);
}

/* Keep the caller on its CPU for a job of `parts` parts: returns that CPU (its affinity
 * saved in `saved`), or -1 where placement is off, the caller may run on too few CPUs for
 * its workers to keep off its own, or the system refuses. */
static int cl_pin_caller(int parts, cpu_set_t *saved) {
    if (!__atomic_load_n(&cl_place, __ATOMIC_RELAXED)) return -1;
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE) return -1;
    if (pthread_getaffinity_np(pthread_self(), sizeof *saved, saved) != 0) return -1;
    if (!CPU_ISSET(cpu, saved) || CPU_COUNT(saved) <= parts - 1) return -1;
    cpu_set_t only;
    CPU_ZERO(&only);
    CPU_SET(cpu, &only);
    return pthread_setaffinity_np(pthread_self(), sizeof only, &only) == 0 ? cpu : -1;
}
#endif

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
#ifdef CL_PLACE_THREADS
    cpu_set_t allowed; /* inherited from the thread that started this one */
    int placed_off = -1, known = pthread_getaffinity_np(pthread_self(), sizeof allowed,
                                                        &allowed) == 0;
#endif
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
#ifdef CL_PLACE_THREADS
        if (known && cl_pool.avoid_cpu >= 0 && cl_pool.avoid_cpu != placed_off) {
            placed_off = cl_pool.avoid_cpu;
            cl_place_worker(&allowed, placed_off);
        } else if (known && placed_off >= 0 && !__atomic_load_n(&cl_place, __ATOMIC_RELAXED)) {
            placed_off = -1; /* placement turned off: every CPU the worker started with */
            cl_place_worker(&allowed, -1);
        }
#endif
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
#ifdef CL_PLACE_THREADS
    /* Only a call that wakes sleeping workers places them: back-to-back calls find them
     * spinning where they were put, and skip the system calls. */
    cpu_set_t saved;
    int pinned = -1;
    if (__atomic_load_n(&cl_pool.sleeping, __ATOMIC_RELAXED) > 0)
        pinned = cl_pin_caller(parts, &saved);
#else
    int pinned = -1;
#endif
    cl_pool.task = task;
    cl_pool.context = context;
    cl_pool.parts = parts;
    cl_pool.avoid_cpu = pinned;
    atomic_store_explicit(&cl_pool.pending, cl_pool.workers, memory_order_relaxed);
    atomic_fetch_add_explicit(&cl_pool.generation, 1, memory_order_acq_rel);
    pthread_mutex_lock(&cl_pool.lock);
    if (cl_pool.sleeping) pthread_cond_broadcast(&cl_pool.wake);
    pthread_mutex_unlock(&cl_pool.lock);
    task(context, 0, parts);
    while (atomic_load_explicit(&cl_pool.pending, memory_order_acquire) > 0) CL_RELAX();
#ifdef CL_PLACE_THREADS
    if (pinned >= 0) pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
#endif
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
