// radardiff: the weight gradient of a 3x3, stride-1, zero-padding-1 convolution, fp32, AVX2+FMA.
//
//   dW[co][ci][kh][kw] = sum over n, h, w of gy[n][co][h][w] * x[n][ci][h+kh-1][w+kw-1]
//
// x and gy are read through their element strides (NCHW, channels-last or any other). gy is
// packed once into panels of MR output channels, x with a zero border into panels of NR input
// channels. Every (MR-panel group, NR-panel) unit then accumulates its nine MR x NR tiles over all
// positions, a few image rows at a time, in registers. A unit belongs to one thread, and its sums
// run in the same order whatever the thread count, so the result does not depend on it.
// The output is written as [Co][3][3][Ci], the channels-last layout of a (Co, Ci, 3, 3) weight.
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define MR 6
#define NR 16
#ifndef GROUP
#define GROUP 4  // MR-panels sharing one NR-panel's rows in L1
#endif
#ifndef ROW_POSITIONS
#define ROW_POSITIONS 128  // positions per block of image rows
#endif

typedef struct {
  const float *x, *gy;
  long xs[4], gs[4];  // element strides (n, c, h, w)
  float *apack, *bpack, *out;
  int N, H, W, Ci, Co, ncb, nkb;
  int t, T;
} job_t;

// c[MR][NR] += sum over nrows rows of W positions of a[p][0..MR) (x) b[p][0..NR)
static inline void micro(int nrows, const float *a, long astride, const float *b, long bstride,
                         int W, float *c) {
  ZERO_TILE_6X16;
  for (int r = 0; r < nrows; r++, a += astride, b += bstride) {
    const float *pa = a, *pb = b;
    for (int w = 0; w < W; w++, pa += MR, pb += NR) {
      __m256 b0 = _mm256_loadu_ps(pb), b1 = _mm256_loadu_ps(pb + 8), t;
      t = _mm256_broadcast_ss(pa + 0); c00 = _mm256_fmadd_ps(t, b0, c00); c01 = _mm256_fmadd_ps(t, b1, c01);
      t = _mm256_broadcast_ss(pa + 1); c10 = _mm256_fmadd_ps(t, b0, c10); c11 = _mm256_fmadd_ps(t, b1, c11);
      t = _mm256_broadcast_ss(pa + 2); c20 = _mm256_fmadd_ps(t, b0, c20); c21 = _mm256_fmadd_ps(t, b1, c21);
      t = _mm256_broadcast_ss(pa + 3); c30 = _mm256_fmadd_ps(t, b0, c30); c31 = _mm256_fmadd_ps(t, b1, c31);
      t = _mm256_broadcast_ss(pa + 4); c40 = _mm256_fmadd_ps(t, b0, c40); c41 = _mm256_fmadd_ps(t, b1, c41);
      t = _mm256_broadcast_ss(pa + 5); c50 = _mm256_fmadd_ps(t, b0, c50); c51 = _mm256_fmadd_ps(t, b1, c51);
    }
  }
#define ACC(row, lo, hi)                                                              \
  _mm256_storeu_ps(c + row * NR, _mm256_add_ps(_mm256_loadu_ps(c + row * NR), lo));  \
  _mm256_storeu_ps(c + row * NR + 8, _mm256_add_ps(_mm256_loadu_ps(c + row * NR + 8), hi));
  ACC(0, c00, c01) ACC(1, c10, c11) ACC(2, c20, c21) ACC(3, c30, c31) ACC(4, c40, c41) ACC(5, c50, c51)
#undef ACC
}

// d[w * lanes + k] = src[k * cs + w * ws] for W positions and nv channels, read in the order of
// the smaller stride (channels innermost in channels-last, positions innermost in NCHW)
static inline void pack_row(float *d, int lanes, const float *src, long cs, long ws, int W, int nv) {
  if (cs == 1) {
    for (int w = 0; w < W; w++, d += lanes)
      for (int k = 0; k < nv; k++) d[k] = src[w * ws + k];
  } else {
    for (int k = 0; k < nv; k++)
      for (int w = 0; w < W; w++) d[w * lanes + k] = src[k * cs + w * ws];
  }
}

// apack: [cb][n][h][w][MR]; bpack: [kb][n][h+1][w+1][NR] with a zero border. Each thread packs
// its share of images.
static void pack(const job_t *j) {
  const int H = j->H, W = j->W, Ci = j->Ci, Co = j->Co;
  const long HW = (long)H * W;
  const int n0 = (int)((long)j->N * j->t / j->T), n1 = (int)((long)j->N * (j->t + 1) / j->T);
  const long *gs = j->gs, *xs = j->xs;
  for (int cb = 0; cb < j->ncb; cb++) {
    const int co0 = cb * MR, nv = Co - co0 < MR ? Co - co0 : MR;
    for (int n = n0; n < n1; n++) {
      float *dst = j->apack + ((size_t)cb * j->N + n) * HW * MR;
      if (nv < MR) memset(dst, 0, sizeof(float) * HW * MR);
      for (int h = 0; h < H; h++) {
        const float *src = j->gy + n * gs[0] + (long)co0 * gs[1] + h * gs[2];
        pack_row(dst + (long)h * W * MR, MR, src, gs[1], gs[3], W, nv);
      }
    }
  }
  const long rowlen = (long)(W + 2) * NR, plane = (long)(H + 2) * rowlen;
  for (int kb = 0; kb < j->nkb; kb++) {
    const int ci0 = kb * NR, nv = Ci - ci0 < NR ? Ci - ci0 : NR;
    for (int n = n0; n < n1; n++) {
      float *img = j->bpack + ((size_t)kb * j->N + n) * plane;
      memset(img, 0, sizeof(float) * rowlen);
      memset(img + (H + 1) * rowlen, 0, sizeof(float) * rowlen);
      for (int h = 0; h < H; h++) {
        float *row = img + (h + 1) * rowlen;
        if (nv < NR) memset(row, 0, sizeof(float) * rowlen);
        memset(row, 0, sizeof(float) * NR);
        memset(row + (W + 1) * NR, 0, sizeof(float) * NR);
        const float *src = j->x + n * xs[0] + (long)ci0 * xs[1] + h * xs[2];
        pack_row(row + NR, NR, src, xs[1], xs[3], W, nv);
      }
    }
  }
}

static void compute(const job_t *j) {
  const int H = j->H, W = j->W;
  const long HW = (long)H * W, rowlen = (long)(W + 2) * NR, plane = (long)(H + 2) * rowlen;
  const int ngroups = (j->ncb + GROUP - 1) / GROUP;
  const long units = (long)j->nkb * ngroups;
  int rows = ROW_POSITIONS / W;
  if (rows < 1) rows = 1;
  if (rows > H) rows = H;
  float tiles[GROUP][9][MR * NR] __attribute__((aligned(64)));
  for (long u = units * j->t / j->T; u < units * (j->t + 1) / j->T; u++) {
    const int kb = (int)(u / ngroups), g = (int)(u % ngroups);
    const int cb0 = g * GROUP, cb1 = cb0 + GROUP < j->ncb ? cb0 + GROUP : j->ncb;
    const int ci0 = kb * NR, nv = j->Ci - ci0 < NR ? j->Ci - ci0 : NR;
    memset(tiles, 0, sizeof(tiles));
    for (int n = 0; n < j->N; n++) {
      const float *bimg = j->bpack + ((size_t)kb * j->N + n) * plane;
      for (int h0 = 0; h0 < H; h0 += rows) {
        const int R = h0 + rows <= H ? rows : H - h0;
        for (int cb = cb0; cb < cb1; cb++) {
          const float *a = j->apack + (((size_t)cb * j->N + n) * HW + (long)h0 * W) * MR;
          for (int kh = 0; kh < 3; kh++)
            for (int kw = 0; kw < 3; kw++)
              micro(R, a, (long)W * MR, bimg + (h0 + kh) * rowlen + kw * NR, rowlen, W,
                    tiles[cb - cb0][kh * 3 + kw]);
        }
      }
    }
    for (int cb = cb0; cb < cb1; cb++)
      for (int m = 0; m < MR && cb * MR + m < j->Co; m++)
        for (int s = 0; s < 9; s++)
          memcpy(j->out + ((size_t)(cb * MR + m) * 9 + s) * j->Ci + ci0,
                 tiles[cb - cb0][s] + m * NR, sizeof(float) * nv);
  }
}

THREAD_ENTRY(const job_t, pack)
THREAD_ENTRY(const job_t, compute)

// Returns 0, 1 when the packed panels' memory cannot be had, 2 for a bad size.
int radardiff_conv3x3_wgrad(const float *x, const long *xs, const float *gy, const long *gs,
                            float *out, int N, int H, int W, int Ci, int Co, int threads) {
  if (N < 1 || H < 1 || W < 1 || Ci < 1 || Co < 1) return 2;
  const int ncb = (Co + MR - 1) / MR, nkb = (Ci + NR - 1) / NR;
  const size_t asize = (size_t)ncb * N * H * W * MR * sizeof(float);
  const size_t bsize = (size_t)nkb * N * (H + 2) * (W + 2) * NR * sizeof(float);
  float *apack = aligned_alloc(64, (asize + 63) / 64 * 64);
  float *bpack = aligned_alloc(64, (bsize + 63) / 64 * 64);
  if (!apack || !bpack) {
    free(apack);
    free(bpack);
    return 1;
  }
  threads = clamp_threads(threads);
  const job_t base = {.x = x, .gy = gy, .apack = apack, .bpack = bpack, .out = out, .N = N,
                      .H = H, .W = W, .Ci = Ci, .Co = Co, .ncb = ncb, .nkb = nkb};
#ifdef _OPENMP
  // torch's own OpenMP threads when torch's libgomp is the one loaded (the same soname): they
  // run this the moment torch's last parallel region hands them over, instead of spinning
  // beside threads of ours for the same cores
#pragma omp parallel num_threads(threads)
  {
    job_t j = base;
    memcpy(j.xs, xs, sizeof(j.xs));
    memcpy(j.gs, gs, sizeof(j.gs));
    j.t = omp_get_thread_num();
    j.T = omp_get_num_threads();
    pack(&j);
#pragma omp barrier
    compute(&j);
  }
#else
  job_t jobs[MAX_THREADS];
  for (int t = 0; t < threads; t++) {
    jobs[t] = base;
    memcpy(jobs[t].xs, xs, sizeof(jobs[t].xs));
    memcpy(jobs[t].gs, gs, sizeof(jobs[t].gs));
    jobs[t].t = t;
    jobs[t].T = threads;
  }
  run_phase(WORKER(pack), jobs, sizeof(job_t), threads);
  run_phase(WORKER(compute), jobs, sizeof(job_t), threads);
#endif
  free(apack);
  free(bpack);
  return 0;
}
