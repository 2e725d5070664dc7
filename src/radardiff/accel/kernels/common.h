// radardiff's kernels: what both share (the 6 x 16 register tile, threads without OpenMP).
#ifndef RADARDIFF_COMMON_H
#define RADARDIFF_COMMON_H
#include <immintrin.h>

// the twelve accumulators c<row><half> of a 6 x 16 fp32 tile (two 8-lane halves per row), zeroed
#define ZERO_TILE_6X16                                                    \
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();          \
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();          \
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();          \
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();          \
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();          \
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps()

// one step of the 6 x 16 tile: c<r>0 += *p<r> * b0 and c<r>1 += *p<r> * b1 for the six rows r
#define FMA_TILE_6X16(p0, p1, p2, p3, p4, p5, b0, b1)                                          \
  do {                                                                                       \
    __m256 s_;                                                                               \
    s_ = _mm256_broadcast_ss(p0); c00 = _mm256_fmadd_ps(s_, b0, c00); c01 = _mm256_fmadd_ps(s_, b1, c01); \
    s_ = _mm256_broadcast_ss(p1); c10 = _mm256_fmadd_ps(s_, b0, c10); c11 = _mm256_fmadd_ps(s_, b1, c11); \
    s_ = _mm256_broadcast_ss(p2); c20 = _mm256_fmadd_ps(s_, b0, c20); c21 = _mm256_fmadd_ps(s_, b1, c21); \
    s_ = _mm256_broadcast_ss(p3); c30 = _mm256_fmadd_ps(s_, b0, c30); c31 = _mm256_fmadd_ps(s_, b1, c31); \
    s_ = _mm256_broadcast_ss(p4); c40 = _mm256_fmadd_ps(s_, b0, c40); c41 = _mm256_fmadd_ps(s_, b1, c41); \
    s_ = _mm256_broadcast_ss(p5); c50 = _mm256_fmadd_ps(s_, b0, c50); c51 = _mm256_fmadd_ps(s_, b1, c51); \
  } while (0)

// at most this many threads (the POSIX-thread path's arrays of jobs are this long)
#define MAX_THREADS 64

static inline int clamp_threads(int threads) {
  return threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
}

#ifdef _OPENMP
#include <omp.h>
#else
#include <pthread.h>

// Runs fn(jobs + t * size) for t < threads: jobs 1.. on threads of their own, job 0 here, and any
// job whose thread cannot be started here too, after the others (its share is the same either
// way, so the result does not depend on which thread ran it).
static void run_phase(void *(*fn)(void *), void *jobs, size_t size, int threads) {
  pthread_t tid[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  char *base = (char *)jobs;
  for (int t = 1; t < threads; t++)
    started[t] = pthread_create(&tid[t], NULL, fn, base + t * size) == 0;
  fn(base);
  for (int t = 1; t < threads; t++) {
    if (started[t])
      pthread_join(tid[t], NULL);
    else
      fn(base + t * size);
  }
}
#endif

// DEFINE_RUN(JOB) defines run(fn, worker, base, threads) for a struct type JOB with int fields
// t, T and failed: fn runs on `threads` copies of *base, copy t of T, on OpenMP's threads (or,
// without OpenMP, on POSIX threads calling worker, made by THREAD_ENTRY); it returns whether any
// copy set failed. WORKER(f) names f's POSIX-thread entry, NULL with OpenMP.
#ifdef _OPENMP
#define WORKER(f) NULL
#define THREAD_ENTRY(JOB, f)
#define DEFINE_RUN(JOB)                                                                      \
  static int run(void (*fn)(JOB *), void *(*worker)(void *), const JOB *base, int threads) { \
    int failed = 0;                                                                          \
    (void)worker;                                                                            \
    _Pragma("omp parallel num_threads(threads) reduction(| : failed)") {                     \
      JOB j = *base;                                                                         \
      j.t = omp_get_thread_num();                                                            \
      j.T = omp_get_num_threads();                                                           \
      fn(&j);                                                                                \
      failed |= j.failed;                                                                    \
    }                                                                                        \
    return failed;                                                                           \
  }
#else
#define WORKER(f) f##_worker
#define THREAD_ENTRY(JOB, f)             \
  static void *f##_worker(void *arg) {   \
    f((JOB *)arg);                       \
    return NULL;                         \
  }
#define DEFINE_RUN(JOB)                                                                      \
  static int run(void (*fn)(JOB *), void *(*worker)(void *), const JOB *base, int threads) { \
    int failed = 0;                                                                          \
    JOB jobs[MAX_THREADS];                                                                   \
    (void)fn;                                                                                \
    for (int t = 0; t < threads; t++) {                                                      \
      jobs[t] = *base;                                                                       \
      jobs[t].t = t;                                                                         \
      jobs[t].T = threads;                                                                   \
    }                                                                                        \
    run_phase(worker, jobs, sizeof(JOB), threads);                                           \
    for (int t = 0; t < threads; t++) failed |= jobs[t].failed;                              \
    return failed;                                                                           \
  }
#endif
#endif
