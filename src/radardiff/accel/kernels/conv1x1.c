// radardiff: 1x1 convolutions (the UNets' shortcut projections), fp32, AVX2+FMA.
//
//   forward and input gradient:  y[n][m][p] = bias[m] + sum_k a[m][k] x[n][k][p]
//   weight gradient:             dW[m][k]   = sum over n, p of gy[n][m][p] x[n][k][p]
//
// for the positions p of each image. The product is one matrix product per image, M x K by
// K x P, with a = w (Co, Ci) for the forward pass and a = w^T for the input gradient. Two layouts:
//
// * channels-last (channel stride 1): 6 positions x 16 output channels in registers, the 6
//   positions' inputs broadcast from x as they are, the weight packed in panels of 16 output
//   channels [M/16][K][16].
// * NCHW (each channel's plane contiguous): 6 output channels x 16 positions in registers, the
//   weight broadcast from a as it is, the input packed in strips of 16 positions [K][16].
//
// The weight gradient (NCHW) takes 3 rows of gy against 4 rows of x, 8 positions per lane,
// summed over a chunk of positions, reduced across lanes and added to dW chunk after chunk.
//
// Every output's sum runs in an order fixed by the shapes alone: the forward pass's by K, for
// each image alone (not by the batch), and the weight gradient's by the chunks, whatever the
// thread count.
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define MR 6       // broadcast rows of a register tile
#define NR 16      // vector columns of a register tile
#ifndef STRIP
#define STRIP 64  // positions of x packed at a time (NCHW)
#endif
#ifndef GROUPS
#define GROUPS 8  // 6-position groups per unit (channels-last)
#endif
#define WG_ROWS 3  // rows of gy per weight-gradient register tile
#define WG_COLS 4  // rows of x per weight-gradient register tile

typedef struct {
  const float *x, *a, *bias, *gy;
  float *y, *pack;
  long xs[4], ys[4], xp, yp, am, ak;  // xp, yp: the position strides
  int N, P, K, M, units, pc;
  int t, T, failed;
} job_t;

// c[i][0..16) = bias + sum over k < K of b_i[k * bs] * v[k * 16 + 0..16), for the MR row
// pointers b_i, stored to c + i * crs for the rows < rows and columns < cols; rowbias adds a
// scalar per row, colbias a vector per column (either may be NULL)
static inline void tile(int K, const float *const *b, long bs, const float *v, float *c, long crs,
                        int rows, int cols, const float *rowbias, const float *colbias) {
  const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3], *b4 = b[4], *b5 = b[5];
  ZERO_TILE_6X16;
  for (int k = 0; k < K; k++, v += NR) {
    const long o = k * bs;
    const __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
    FMA_TILE_6X16(b0 + o, b1 + o, b2 + o, b3 + o, b4 + o, b5 + o, v0, v1);
  }
  __m256 r[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 cb0 = colbias ? _mm256_loadu_ps(colbias) : _mm256_setzero_ps();
  const __m256 cb1 = colbias ? _mm256_loadu_ps(colbias + 8) : _mm256_setzero_ps();
  for (int i = 0; i < rows; i++) {
    const __m256 rb = _mm256_set1_ps(rowbias ? rowbias[i] : 0.f);
    const __m256 lo = _mm256_add_ps(_mm256_add_ps(r[i][0], rb), cb0);
    const __m256 hi = _mm256_add_ps(_mm256_add_ps(r[i][1], rb), cb1);
    float *dst = c + i * crs;
    if (cols == NR) {
      _mm256_storeu_ps(dst, lo);
      _mm256_storeu_ps(dst + 8, hi);
    } else {
      float tmp[NR] __attribute__((aligned(32)));
      _mm256_store_ps(tmp, lo);
      _mm256_store_ps(tmp + 8, hi);
      memcpy(dst, tmp, sizeof(float) * cols);
    }
  }
}

// NCHW: units are (image, strip of STRIP positions); x's strip is packed [STRIP / 16][K][16]
static void forward_planes(job_t *j) {
  const int K = j->K, M = j->M, P = j->P, strips = (P + STRIP - 1) / STRIP;
  float *pack = aligned_alloc(64, sizeof(float) * (size_t)K * STRIP);
  if (!pack) {
    j->failed = 1;
    return;
  }
  const long *xs = j->xs, *ys = j->ys;
  for (long u = (long)j->units * j->t / j->T; u < (long)j->units * (j->t + 1) / j->T; u++) {
    const int n = (int)(u / strips), p0 = (int)(u % strips) * STRIP;
    const int np = P - p0 < STRIP ? P - p0 : STRIP, nsub = (np + NR - 1) / NR;
    const float *src = j->x + n * xs[0] + p0;
    for (int s = 0; s < nsub; s++) {
      const int w = np - s * NR < NR ? np - s * NR : NR;
      float *dst = pack + (long)s * K * NR;
      for (int k = 0; k < K; k++, dst += NR) {
        memcpy(dst, src + k * xs[1] + s * NR, sizeof(float) * w);
        if (w < NR) memset(dst + w, 0, sizeof(float) * (NR - w));
      }
    }
    float *out = j->y + n * ys[0] + p0;
    for (int s = 0; s < nsub; s++) {
      const int w = np - s * NR < NR ? np - s * NR : NR;
      for (int m0 = 0; m0 < M; m0 += MR) {
        const int rows = M - m0 < MR ? M - m0 : MR;
        const float *b[MR];
        for (int i = 0; i < MR; i++) b[i] = j->a + (m0 + (i < rows ? i : rows - 1)) * j->am;
        tile(K, b, j->ak, pack + (long)s * K * NR, out + m0 * ys[1] + s * NR, ys[1], rows, w,
             j->bias ? j->bias + m0 : NULL, NULL);
      }
    }
  }
  free(pack);
}

// channels-last: units are (image, GROUPS x 6 positions); j->pack holds a as [M/16][K][16]
static void forward_rows(job_t *j) {
  const int K = j->K, M = j->M, P = j->P, per = GROUPS * MR, chunks = (P + per - 1) / per;
  const long *xs = j->xs, *ys = j->ys;
  for (long u = (long)j->units * j->t / j->T; u < (long)j->units * (j->t + 1) / j->T; u++) {
    const int n = (int)(u / chunks), q0 = (int)(u % chunks) * per;
    const int q1 = q0 + per < P ? q0 + per : P;
    for (int m0 = 0; m0 < M; m0 += NR) {
      const int cols = M - m0 < NR ? M - m0 : NR;
      float colbias[NR] = {0};
      if (j->bias) memcpy(colbias, j->bias + m0, sizeof(float) * cols);
      for (int q = q0; q < q1; q += MR) {
        const int rows = q1 - q < MR ? q1 - q : MR;
        const float *b[MR];
        for (int i = 0; i < MR; i++) b[i] = j->x + n * xs[0] + (q + (i < rows ? i : rows - 1)) * j->xp;
        tile(K, b, xs[1], j->pack + (long)(m0 / NR) * K * NR, j->y + n * ys[0] + q * j->yp + m0,
             j->yp, rows, cols, NULL, colbias);
      }
    }
  }
}

// the four lane sums of a, b, c, d
static inline __m128 sum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

// NCHW weight gradient: units are blocks of WG_ROWS rows of dW (output channels); each sums over
// the images and their chunks of j->pc positions in that order
static void weight_grad(job_t *j) {
  const int K = j->K, M = j->M, P = j->P, pc = j->pc;
  const long *xs = j->xs, *gs = j->ys;
  const int u0 = (int)((long)j->units * j->t / j->T), u1 = (int)((long)j->units * (j->t + 1) / j->T);
  for (int m = u0 * WG_ROWS; m < M && m < u1 * WG_ROWS; m++) memset(j->y + (long)m * K, 0, sizeof(float) * K);
  for (int n = 0; n < j->N; n++)
    for (int p0 = 0; p0 < P; p0 += pc) {
      const int np = P - p0 < pc ? P - p0 : pc, full = np / 8 * 8, tail = np - full;
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      for (int u = u0; u < u1; u++) {
        const int m0 = u * WG_ROWS, rows = M - m0 < WG_ROWS ? M - m0 : WG_ROWS;
        const float *g[WG_ROWS];
        for (int i = 0; i < WG_ROWS; i++)
          g[i] = j->gy + n * gs[0] + (m0 + (i < rows ? i : rows - 1)) * gs[1] + p0;
        for (int k0 = 0; k0 < K; k0 += WG_COLS) {
          const int cols = K - k0 < WG_COLS ? K - k0 : WG_COLS;
          const float *x[WG_COLS];
          for (int c = 0; c < WG_COLS; c++)
            x[c] = j->x + n * xs[0] + (k0 + (c < cols ? c : cols - 1)) * xs[1] + p0;
          __m256 acc[WG_ROWS][WG_COLS];
          for (int i = 0; i < WG_ROWS; i++)
            for (int c = 0; c < WG_COLS; c++) acc[i][c] = _mm256_setzero_ps();
          for (int p = 0; p <= np - 8; p += 8) {
            const __m256 g0 = _mm256_loadu_ps(g[0] + p), g1 = _mm256_loadu_ps(g[1] + p);
            const __m256 g2 = _mm256_loadu_ps(g[2] + p);
            for (int c = 0; c < WG_COLS; c++) {
              const __m256 xv = _mm256_loadu_ps(x[c] + p);
              acc[0][c] = _mm256_fmadd_ps(g0, xv, acc[0][c]);
              acc[1][c] = _mm256_fmadd_ps(g1, xv, acc[1][c]);
              acc[2][c] = _mm256_fmadd_ps(g2, xv, acc[2][c]);
            }
          }
          if (tail) {
            __m256 gt[WG_ROWS];
            for (int i = 0; i < WG_ROWS; i++) gt[i] = _mm256_maskload_ps(g[i] + full, mask);
            for (int c = 0; c < WG_COLS; c++) {
              const __m256 xv = _mm256_maskload_ps(x[c] + full, mask);
              for (int i = 0; i < WG_ROWS; i++) acc[i][c] = _mm256_fmadd_ps(gt[i], xv, acc[i][c]);
            }
          }
          for (int i = 0; i < rows; i++) {
            float s[WG_COLS], *dst = j->y + (long)(m0 + i) * K + k0;
            _mm_storeu_ps(s, sum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
            for (int c = 0; c < cols; c++) dst[c] += s[c];
          }
        }
      }
    }
}

THREAD_ENTRY(job_t, forward_planes)
THREAD_ENTRY(job_t, forward_rows)
THREAD_ENTRY(job_t, weight_grad)
DEFINE_RUN(job_t)

// the stride between t's consecutive positions (over H x W, strides ts[2], ts[3]), 0 for a single
// position, -1 where they are not one stride apart
static long position_stride(const long *ts, int H, int W) {
  if (H == 1) return W == 1 ? 0 : ts[3];
  if (W == 1) return ts[2];
  return ts[2] == W * ts[3] ? ts[3] : -1;
}

// 1 for NCHW planes (positions one element apart), 2 for channels-last (channel stride 1), else 0
static int layout(const long *ts, int H, int W) {
  const long ps = position_stride(ts, H, W);
  if (ps == 0 || ps == 1) return 1;
  return ps > 0 && ts[1] == 1 ? 2 : 0;
}

// y = a x (+ bias) for the (M, K) matrix a (element strides am, ak) and every image of x
// (N, K, H, W), y (N, M, H, W): both NCHW, or both channels-last. Returns 0, 1 when buffers
// cannot be had, 2 for a bad size, 3 for layouts the kernel does not take.
int radardiff_conv1x1(const float *x, const long *xs, const float *a, long am, long ak,
                      const float *bias, float *y, const long *ys, int N, int H, int W, int K,
                      int M, int threads) {
  if (N < 1 || H < 1 || W < 1 || K < 1 || M < 1) return 2;
  const int lx = layout(xs, H, W), ly = layout(ys, H, W);
  if (lx == 0 || lx != ly) return 3;
  threads = clamp_threads(threads);
  job_t base = {.x = x, .a = a, .bias = bias, .y = y, .am = am, .ak = ak, .N = N, .P = H * W,
                .K = K, .M = M, .xp = position_stride(xs, H, W), .yp = position_stride(ys, H, W)};
  memcpy(base.xs, xs, sizeof(base.xs));
  memcpy(base.ys, ys, sizeof(base.ys));
  if (lx == 1) {
    base.units = N * ((H * W + STRIP - 1) / STRIP);
    return run(forward_planes, WORKER(forward_planes), &base, threads) ? 1 : 0;
  }
  const int panels = (M + NR - 1) / NR;
  float *pack = aligned_alloc(64, sizeof(float) * (size_t)panels * K * NR);
  if (!pack) return 1;
  for (int m = 0; m < panels * NR; m++)
    for (int k = 0; k < K; k++)
      pack[((long)(m / NR) * K + k) * NR + m % NR] = m < M ? a[m * am + k * ak] : 0.f;
  base.pack = pack;
  base.units = N * ((H * W + GROUPS * MR - 1) / (GROUPS * MR));
  const int failed = run(forward_rows, WORKER(forward_rows), &base, threads);
  free(pack);
  return failed ? 1 : 0;
}

// out (M, K), contiguous = the weight gradient of the 1x1 convolution from x (N, K, H, W) and
// gy (N, M, H, W), both NCHW. Returns 0, 2 for a bad size, 3 for layouts the kernel does not take.
int radardiff_conv1x1_wgrad(const float *x, const long *xs, const float *gy, const long *gs,
                            float *out, int N, int H, int W, int K, int M, int threads) {
  if (N < 1 || H < 1 || W < 1 || K < 1 || M < 1) return 2;
  if (layout(xs, H, W) != 1 || layout(gs, H, W) != 1) return 3;
  // a chunk's rows of x about 192 KiB, in L2 beside the rows of gy
  int pc = 49152 / K / 8 * 8;
  pc = pc < 64 ? 64 : pc;
  job_t base = {.x = x, .gy = gy, .y = out, .N = N, .P = H * W, .K = K, .M = M,
                .units = (M + WG_ROWS - 1) / WG_ROWS, .pc = pc};
  memcpy(base.xs, xs, sizeof(base.xs));
  memcpy(base.ys, gs, sizeof(base.ys));
  run(weight_grad, WORKER(weight_grad), &base, clamp_threads(threads));
  return 0;
}
