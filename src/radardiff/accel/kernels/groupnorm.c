// radardiff's group normalization fused with the activation after it, fp32, AVX2+FMA:
//
//   y[n][c][p] = act(a),  a = xhat A[n][c] + B[n][c],  xhat = (x[n][c][p] - mean[n][g]) rstd[n][g]
//
// for channel c of group g (C / G channels a group) and position p, act SiLU (a sigmoid(a)) or
// the identity. mean and rstd = 1 / sqrt(var + eps) are over the group's channels and positions,
// by two passes (the mean, then the squares of the deviations from it) while the group is still
// in cache; each channel's sums run in float over at most 64 positions a lane, then in double,
// the first about the group's first value (a mean large against the spread costs the sums no
// digits; the float mean itself is rounded, as torch's is).
// A and B are (N, C): GroupNorm's weight and bias (the same for every image), or those with a
// scale and shift per image folded in (diffusers' "scale_shift" time embedding).
//
// The backward pass gives dx and, per image and channel, S1 = sum_p da and S2 = sum_p da xhat
// (the gradients of B and A), with da = dy act'(a) and act'(a) = s (1 + a (1 - s)), s = sigmoid(a),
// recomputed from x rather than stored:
//
//   dx = rstd (A da - m1 - xhat m2),  m1 = mean over the group of A S1, m2 = of A S2 (per position).
//
// a is computed as (x - mean) (rstd A) + B: folding the mean into the shift, x (rstd A) + (B -
// mean rstd A), loses the digits of a group whose mean is large against its spread.
//
// Layouts: dense (N, C, P) with the positions contiguous (NCHW) or the channels (channels-last,
// C a multiple of 8), the same for x, y, dy and dx. The work is shared out by the groups of each
// image (NCHW) or by images (channels-last), each summed in an order fixed by the shapes alone:
// the results do not depend on the thread count, nor on the other images of the batch.
#include <math.h>
#include <stdlib.h>

#include "common.h"

#define SPAN 64  // positions summed in float before the sums go to double

typedef struct {
  const float *x, *dy, *A, *B;
  float *y, *mean, *rstd, *S1, *S2;
  int N, C, P, G, cl, silu;
  float eps;
  int t, T, failed;
} job_t;

// e^x, x clamped to [-87, 88]: x = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor series to r^7
// (relative error under 2e-8 before rounding), 2^n put in the exponent
static inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(88.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln2 in two parts (Cody-Waite)
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 sigmoid8(__m256 a) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), a))));
}

// act(a)
static inline __m256 act8(__m256 a, int silu) { return silu ? _mm256_mul_ps(a, sigmoid8(a)) : a; }

// act'(a)
static inline __m256 dact8(__m256 a, int silu) {
  const __m256 one = _mm256_set1_ps(1.f);
  if (!silu) return one;
  const __m256 s = sigmoid8(a);
  return _mm256_mul_ps(s, _mm256_fmadd_ps(a, _mm256_sub_ps(one, s), one));
}

// lanes k < nv all ones (a tail of nv < 8 positions)
static inline __m256i head(int nv) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(nv), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 8 floats from p, nv of them real (the rest 0)
static inline __m256 load_n(const float *p, int nv) {
  return nv == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, head(nv));
}

// v's lanes k < nv to p
static inline void store_n(float *p, int nv, __m256 v) {
  if (nv == 8)
    _mm256_storeu_ps(p, v);
  else
    _mm256_maskstore_ps(p, head(nv), v);
}

// da = dy act'(a) at 8 positions, nv of them real (da 0 past them), and d = x - mean
static inline __m256 grad_act(const float *x, const float *dy, int nv, __m256 mv, __m256 scale,
                              __m256 shift, int silu, __m256 *d) {
  *d = _mm256_sub_ps(load_n(x, nv), mv);
  return _mm256_mul_ps(load_n(dy, nv), dact8(_mm256_fmadd_ps(*d, scale, shift), silu));
}

static inline double hsum(__m256 v) {
  float t[8];
  _mm256_storeu_ps(t, v);
  return (((double)t[0] + t[1]) + ((double)t[2] + t[3])) + (((double)t[4] + t[5]) + ((double)t[6] + t[7]));
}

// sum over the P positions of one NCHW channel row of x - m, or of its square with sq
static double row_sum(const float *x, int P, float m, int sq) {
  const __m256 mv = _mm256_set1_ps(m);
  double total = 0;
  for (int p0 = 0; p0 < P; p0 += 8 * SPAN) {
    __m256 acc = _mm256_setzero_ps();
    const int p1 = P - p0 < 8 * SPAN ? P : p0 + 8 * SPAN;
    for (int p = p0; p < p1; p += 8) {
      const int nv = p1 - p < 8 ? p1 - p : 8;
      __m256 v = _mm256_sub_ps(load_n(x + p, nv), mv);
      if (nv < 8) v = _mm256_and_ps(v, _mm256_castsi256_ps(head(nv)));
      acc = sq ? _mm256_fmadd_ps(v, v, acc) : _mm256_add_ps(acc, v);
    }
    total += hsum(acc);
  }
  return total;
}

// ---- NCHW: a unit is a group of one image, Cg * P contiguous floats

static void forward_nchw(job_t *j) {
  const int C = j->C, P = j->P, G = j->G, cg = C / G;
  const long units = (long)j->N * G;
  for (long u = units * j->t / j->T; u < units * (j->t + 1) / j->T; u++) {
    const int n = (int)(u / G), g = (int)(u % G);
    const float *x = j->x + ((long)n * C + (long)g * cg) * P;
    float *y = j->y + ((long)n * C + (long)g * cg) * P;
    const double cnt = (double)cg * P;
    double s = 0;  // about the group's first value: float sums of values near 0
    for (int c = 0; c < cg; c++) s += row_sum(x + (long)c * P, P, x[0], 0);
    const float mean = (float)(x[0] + s / cnt);
    double q = 0;
    for (int c = 0; c < cg; c++) q += row_sum(x + (long)c * P, P, mean, 1);
    const float rstd = (float)(1.0 / sqrt(q / cnt + j->eps));
    j->mean[u] = mean, j->rstd[u] = rstd;
    for (int c = 0; c < cg; c++) {
      const long nc = (long)n * C + g * cg + c;
      const __m256 mv = _mm256_set1_ps(mean), scale = _mm256_set1_ps(rstd * j->A[nc]),
                   shift = _mm256_set1_ps(j->B[nc]);
      const float *xr = x + (long)c * P;
      float *yr = y + (long)c * P;
      for (int p = 0; p < P; p += 8) {
        const int nv = P - p < 8 ? P - p : 8;
        store_n(yr + p, nv, act8(_mm256_fmadd_ps(_mm256_sub_ps(load_n(xr + p, nv), mv), scale, shift), j->silu));
      }
    }
  }
}

static void backward_nchw(job_t *j) {
  const int C = j->C, P = j->P, G = j->G, cg = C / G, silu = j->silu;
  const long units = (long)j->N * G;
  for (long u = units * j->t / j->T; u < units * (j->t + 1) / j->T; u++) {
    const int n = (int)(u / G), g = (int)(u % G);
    const long off = ((long)n * C + (long)g * cg) * P, nc0 = (long)n * C + (long)g * cg;
    const float mean = j->mean[u], rstd = j->rstd[u];
    const __m256 mv = _mm256_set1_ps(mean), rv = _mm256_set1_ps(rstd);
    double m1 = 0, m2 = 0;
    for (int c = 0; c < cg; c++) {  // S1, S2 of each channel
      const __m256 scale = _mm256_set1_ps(rstd * j->A[nc0 + c]), shift = _mm256_set1_ps(j->B[nc0 + c]);
      const float *xr = j->x + off + (long)c * P, *dr = j->dy + off + (long)c * P;
      double s1 = 0, s2 = 0;
      for (int p0 = 0; p0 < P; p0 += 8 * SPAN) {
        __m256 a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps();
        const int p1 = P - p0 < 8 * SPAN ? P : p0 + 8 * SPAN;
        for (int p = p0; p < p1; p += 8) {
          __m256 d;
          const __m256 da = grad_act(xr + p, dr + p, p1 - p < 8 ? p1 - p : 8, mv, scale, shift, silu, &d);
          a1 = _mm256_add_ps(a1, da);
          a2 = _mm256_fmadd_ps(da, _mm256_mul_ps(d, rv), a2);
        }
        s1 += hsum(a1), s2 += hsum(a2);
      }
      j->S1[nc0 + c] = (float)s1, j->S2[nc0 + c] = (float)s2;
      m1 += j->A[nc0 + c] * s1, m2 += j->A[nc0 + c] * s2;
    }
    const double cnt = (double)cg * P;
    m1 /= cnt, m2 /= cnt;
    for (int c = 0; c < cg; c++) {  // dx = da (rstd A) + (x - mean) k4 + k5
      const __m256 scale = _mm256_set1_ps(rstd * j->A[nc0 + c]), shift = _mm256_set1_ps(j->B[nc0 + c]);
      const __m256 k1 = scale, k4 = _mm256_set1_ps((float)(-(double)rstd * rstd * m2)),
                   k5 = _mm256_set1_ps((float)(-rstd * m1));
      const float *xr = j->x + off + (long)c * P, *dr = j->dy + off + (long)c * P;
      float *out = j->y + off + (long)c * P;
      for (int p = 0; p < P; p += 8) {
        const int nv = P - p < 8 ? P - p : 8;
        __m256 d;
        const __m256 da = grad_act(xr + p, dr + p, nv, mv, scale, shift, silu, &d);
        store_n(out + p, nv, _mm256_fmadd_ps(da, k1, _mm256_fmadd_ps(d, k4, k5)));
      }
    }
  }
}

// ---- channels-last: a unit is an image, P rows of C channels; per-channel sums in buf

// dsum[c] = sum over the image's positions of x[p][c] - m[c], or of its square with sq
static void channel_sums(const float *x, int P, int C, const float *m, int sq, float *acc, double *dsum) {
  for (int c = 0; c < C; c++) dsum[c] = 0;
  for (int p0 = 0; p0 < P; p0 += SPAN) {
    const int p1 = P - p0 < SPAN ? P : p0 + SPAN;
    for (int c = 0; c < C; c += 8) _mm256_storeu_ps(acc + c, _mm256_setzero_ps());
    for (int p = p0; p < p1; p++) {
      const float *row = x + (long)p * C;
      for (int c = 0; c < C; c += 8) {
        const __m256 v = _mm256_sub_ps(_mm256_loadu_ps(row + c), _mm256_loadu_ps(m + c)), a = _mm256_loadu_ps(acc + c);
        _mm256_storeu_ps(acc + c, sq ? _mm256_fmadd_ps(v, v, a) : _mm256_add_ps(a, v));
      }
    }
    for (int c = 0; c < C; c++) dsum[c] += acc[c];
  }
}

// this thread's images, [n0, n1): the same split as the NCHW path's units, so with fewer images
// than threads the images go to the last threads (N = 1, T = 2: thread 1), never to none
static void cl_range(const job_t *j, int *n0, int *n1) {
  *n0 = (int)((long)j->N * j->t / j->T);
  *n1 = (int)((long)j->N * (j->t + 1) / j->T);
}

// this thread's buffers, 7 C floats and 2 C doubles; 0 where it has no image or no memory (then
// failed is set)
static int cl_buffers(job_t *j, float **f, double **d) {
  int n0, n1;
  cl_range(j, &n0, &n1);
  if (n0 >= n1) return 0;
  *f = aligned_alloc(32, ((size_t)7 * j->C * sizeof(float) + 31) / 32 * 32);
  *d = malloc((size_t)2 * j->C * sizeof(double));
  if (!*f || !*d) {
    free(*f);
    free(*d);
    j->failed = 1;
    return 0;
  }
  return 1;
}

// the image's group means and rstd (into mg, rg per channel, and mean, rstd per group)
static void cl_stats(const job_t *j, int n, const float *x, float *mg, float *rg, float *acc, double *dsum) {
  const int C = j->C, P = j->P, G = j->G, cg = C / G;
  const double cnt = (double)cg * P;
  for (int c = 0; c < C; c++) mg[c] = x[c / cg * cg];  // about each group's first value
  channel_sums(x, P, C, mg, 0, acc, dsum);
  for (int g = 0; g < G; g++) {
    double s = 0;
    for (int c = g * cg; c < (g + 1) * cg; c++) s += dsum[c];
    const float mean = (float)(mg[g * cg] + s / cnt);
    for (int c = g * cg; c < (g + 1) * cg; c++) mg[c] = mean;
  }
  channel_sums(x, P, C, mg, 1, acc, dsum);
  for (int g = 0; g < G; g++) {
    double q = 0;
    for (int c = g * cg; c < (g + 1) * cg; c++) q += dsum[c];
    const float r = (float)(1.0 / sqrt(q / cnt + j->eps));
    for (int c = g * cg; c < (g + 1) * cg; c++) rg[c] = r;
    j->mean[(long)n * G + g] = mg[g * cg], j->rstd[(long)n * G + g] = r;
  }
}

static void forward_cl(job_t *j) {
  const int C = j->C, P = j->P;
  float *f;
  double *d;
  int n0, n1;
  if (!cl_buffers(j, &f, &d)) return;
  cl_range(j, &n0, &n1);
  float *mg = f, *rg = f + C, *acc = f + 2 * C, *scale = f + 3 * C, *shift = f + 4 * C;
  for (int n = n0; n < n1; n++) {
    const float *x = j->x + (long)n * P * C;
    float *y = j->y + (long)n * P * C;
    cl_stats(j, n, x, mg, rg, acc, d);
    for (int c = 0; c < C; c++) {
      scale[c] = rg[c] * j->A[(long)n * C + c];
      shift[c] = j->B[(long)n * C + c];
    }
    for (int p = 0; p < P; p++)
      for (int c = 0; c < C; c += 8) {
        const long i = (long)p * C + c;
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(mg + c));
        const __m256 a = _mm256_fmadd_ps(d, _mm256_loadu_ps(scale + c), _mm256_loadu_ps(shift + c));
        _mm256_storeu_ps(y + i, act8(a, j->silu));
      }
  }
  free(f);
  free(d);
}

static void backward_cl(job_t *j) {
  const int C = j->C, P = j->P, G = j->G, cg = C / G, silu = j->silu;
  float *f;
  double *d;
  int n0, n1;
  if (!cl_buffers(j, &f, &d)) return;
  cl_range(j, &n0, &n1);
  float *mg = f, *rg = f + C, *a1 = f + 2 * C, *a2 = f + 3 * C, *scale = f + 4 * C, *shift = f + 5 * C,
        *k4 = f + 6 * C;
  double *s1 = d, *s2 = d + C;
  for (int n = n0; n < n1; n++) {
    const long base = (long)n * P * C, nc = (long)n * C;
    const float *x = j->x + base, *dy = j->dy + base;
    for (int g = 0; g < G; g++)
      for (int c = g * cg; c < (g + 1) * cg; c++) mg[c] = j->mean[(long)n * G + g], rg[c] = j->rstd[(long)n * G + g];
    for (int c = 0; c < C; c++) {
      scale[c] = rg[c] * j->A[nc + c];
      shift[c] = j->B[nc + c];
      s1[c] = s2[c] = 0;
    }
    for (int p0 = 0; p0 < P; p0 += SPAN) {
      const int p1 = P - p0 < SPAN ? P : p0 + SPAN;
      for (int c = 0; c < C; c += 8) _mm256_storeu_ps(a1 + c, _mm256_setzero_ps()), _mm256_storeu_ps(a2 + c, _mm256_setzero_ps());
      for (int p = p0; p < p1; p++)
        for (int c = 0; c < C; c += 8) {
          const long i = (long)p * C + c;
          __m256 d;
          const __m256 da = grad_act(x + i, dy + i, 8, _mm256_loadu_ps(mg + c), _mm256_loadu_ps(scale + c),
                                     _mm256_loadu_ps(shift + c), silu, &d);
          const __m256 xhat = _mm256_mul_ps(d, _mm256_loadu_ps(rg + c));
          _mm256_storeu_ps(a1 + c, _mm256_add_ps(_mm256_loadu_ps(a1 + c), da));
          _mm256_storeu_ps(a2 + c, _mm256_fmadd_ps(da, xhat, _mm256_loadu_ps(a2 + c)));
        }
      for (int c = 0; c < C; c++) s1[c] += a1[c], s2[c] += a2[c];
    }
    const double cnt = (double)cg * P;
    for (int g = 0; g < G; g++) {
      double m1 = 0, m2 = 0;
      for (int c = g * cg; c < (g + 1) * cg; c++) {
        j->S1[nc + c] = (float)s1[c], j->S2[nc + c] = (float)s2[c];
        m1 += j->A[nc + c] * s1[c], m2 += j->A[nc + c] * s2[c];
      }
      m1 /= cnt, m2 /= cnt;
      const double r = rg[g * cg];
      for (int c = g * cg; c < (g + 1) * cg; c++) {  // a1: k5, k4: the (x - mean) factor (k1 = scale)
        k4[c] = (float)(-r * r * m2);
        a1[c] = (float)(-r * m1);
      }
    }
    float *dx = j->y + base;
    for (int p = 0; p < P; p++)
      for (int c = 0; c < C; c += 8) {
        const long i = (long)p * C + c;
        const __m256 sc = _mm256_loadu_ps(scale + c);
        __m256 d;
        const __m256 da = grad_act(x + i, dy + i, 8, _mm256_loadu_ps(mg + c), sc, _mm256_loadu_ps(shift + c), silu, &d);
        _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(da, sc, _mm256_fmadd_ps(d, _mm256_loadu_ps(k4 + c), _mm256_loadu_ps(a1 + c))));
      }
  }
  free(f);
  free(d);
}

static void forward(job_t *j) { (j->cl ? forward_cl : forward_nchw)(j); }
static void backward(job_t *j) { (j->cl ? backward_cl : backward_nchw)(j); }

THREAD_ENTRY(job_t, forward)
THREAD_ENTRY(job_t, backward)
DEFINE_RUN(job_t)

static int bad(int N, int C, int P, int G, int cl) {
  return N < 1 || C < 1 || P < 1 || G < 1 || C % G != 0 || (cl && C % 8 != 0);
}

// y = act(group_norm(x) with A, B per image and channel); mean, rstd: N * G floats out.
// Returns 0, 1 when a thread's buffers cannot be had, 2 for a bad size.
int radardiff_gn_forward(const float *x, const float *A, const float *B, float *y, float *mean,
                         float *rstd, int N, int C, int P, int G, float eps, int cl, int silu,
                         int threads) {
  if (bad(N, C, P, G, cl)) return 2;
  job_t base = {.x = x, .A = A, .B = B, .y = y, .mean = mean, .rstd = rstd, .N = N, .C = C,
                .P = P, .G = G, .cl = cl, .silu = silu, .eps = eps};
  return run(forward, WORKER(forward), &base, clamp_threads(threads)) ? 1 : 0;
}

// dx and S1, S2 (N * C floats each) from x, dy and the forward pass's A, B, mean, rstd.
int radardiff_gn_backward(const float *x, const float *dy, const float *A, const float *B,
                          const float *mean, const float *rstd, float *dx, float *S1, float *S2,
                          int N, int C, int P, int G, int cl, int silu, int threads) {
  if (bad(N, C, P, G, cl)) return 2;
  job_t base = {.x = x, .dy = dy, .A = A, .B = B, .y = dx, .mean = (float *)mean,
                .rstd = (float *)rstd, .S1 = S1, .S2 = S2, .N = N, .C = C, .P = P, .G = G,
                .cl = cl, .silu = silu};
  return run(backward, WORKER(backward), &base, clamp_threads(threads)) ? 1 : 0;
}
