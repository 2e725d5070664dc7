// radardiff: the forward pass and the weight gradient of a 3x3, stride-1, zero-padding-1
// convolution, fp32, AVX2+FMA, by Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray 2016):
//
//   y[n][k][4ty + r][4tx + s] = bias[k] + (A^T [ sum_c (G w[k][c] G^T) (.) (B^T d[n][c] B) ] A)[r][s]
//
// for the 6x6 input tile d that starts at (4ty - 1, 4tx - 1), zero outside the image: 36
// multiplications per 4x4 outputs and input-output channel pair, against 144 directly.
//
// The weight is transformed once per call of radardiff_wino_weights into U[36][Co/16][Ci][16].
// The forward pass takes the tiles a block of TB at a time (each block belongs to one thread):
// it transforms the block's inputs into V[36][TB][Ci], computes the 36 products
// M[e] = V[e] U[e] (6 tiles x 16 output channels in registers at a time, summed over the input
// channels in their order), and transforms M back into the output, adding the bias. Every tile's
// sums run in an order fixed by the channel counts alone, so an image's result depends neither on
// the thread count nor on the other images of the batch. Inputs and outputs are read and written
// through their element strides; the channels-last layout (channel stride 1) is the fast one.
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define ALPHA 6  // input tile side
#define E 36     // transformed elements per tile
#define MT 4     // output tile side
#define MR 6     // tiles per register block
#define NR 16    // output channels per register block
#ifndef TB
#define TB 36  // tiles per block (a multiple of MR)
#endif

typedef struct {
  const float *x, *w, *u, *bias, *gy;
  const float *res;  // the forward pass's residual, added to y (y's strides), or NULL
  float *y, *uout, *V, *G, *M;  // V, G, M: the weight gradient's transformed inputs and sums
  float *pack;                  // the weight gradient's panels, pack_len floats a thread
  long pack_len;
  long xs[4], ys[4], ws[4], gs[4];
  long tiles, p0;  // the weight gradient's tiles (all images), the first of this super-block
  int nsb;         // the tiles in this super-block
  int N, H, W, Ci, Co, nkp, tb, flip, ldm;
  int epad;      // floats between the e-th block of V (and of G) and the next, past tb rows
  int ldv, ldg;  // floats between the rows (tiles) of V and of G
  int t, T, failed;
} job_t;

// 8 channels from p (channel stride cs), nv of them real, the rest zero
static inline __m256 load8(const float *p, long cs, int nv) {
  if (cs == 1 && nv == 8) return _mm256_loadu_ps(p);
  float tmp[8] __attribute__((aligned(32))) = {0};
  for (int k = 0; k < nv; k++) tmp[k] = p[k * cs];
  return _mm256_load_ps(tmp);
}

static inline void store8(float *p, long cs, int nv, __m256 v) {
  if (cs == 1 && nv == 8) {
    _mm256_storeu_ps(p, v);
    return;
  }
  float tmp[8] __attribute__((aligned(32)));
  _mm256_store_ps(tmp, v);
  for (int k = 0; k < nv; k++) p[k * cs] = tmp[k];
}

// r[i] lane l = v[l] lane i: the 8 x 8 transpose (channels in lanes <-> positions in lanes)
static inline void transpose8(const __m256 *v, __m256 *r) {
  const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
  const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
  const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
  const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// r = B^T d for one line of 6 (B^T's rows: 4 0 -5 0 1 0 / 0 -4 -4 1 1 0 / 0 4 -4 -1 1 0 /
// 0 -2 -1 2 1 0 / 0 2 -1 -2 1 0 / 0 4 0 -5 0 1)
static inline void bt6(const __m256 *d, long ds, __m256 *r, long rs) {
  const __m256 four = _mm256_set1_ps(4.f), five = _mm256_set1_ps(5.f), two = _mm256_set1_ps(2.f);
  const __m256 d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
  const __m256 a = _mm256_fnmadd_ps(four, d2, d4), b = _mm256_fnmadd_ps(four, d1, d3);
  const __m256 c = _mm256_sub_ps(d4, d2), e = _mm256_mul_ps(two, _mm256_sub_ps(d3, d1));
  r[0] = _mm256_fmadd_ps(four, d0, _mm256_fnmadd_ps(five, d2, d4));
  r[rs] = _mm256_add_ps(a, b);
  r[2 * rs] = _mm256_sub_ps(a, b);
  r[3 * rs] = _mm256_add_ps(c, e);
  r[4 * rs] = _mm256_sub_ps(c, e);
  r[5 * rs] = _mm256_fmadd_ps(four, d1, _mm256_fnmadd_ps(five, d3, d5));
}

// o = A^T m for one line of 6 (A^T's rows: 1 1 1 1 1 0 / 0 1 -1 2 -2 0 / 0 1 1 4 4 0 /
// 0 1 -1 8 -8 1)
static inline void at6(const __m256 *m, long ms, __m256 *o, long os) {
  const __m256 s12 = _mm256_add_ps(m[ms], m[2 * ms]), d12 = _mm256_sub_ps(m[ms], m[2 * ms]);
  const __m256 s34 = _mm256_add_ps(m[3 * ms], m[4 * ms]), d34 = _mm256_sub_ps(m[3 * ms], m[4 * ms]);
  o[0] = _mm256_add_ps(_mm256_add_ps(m[0], s12), s34);
  o[os] = _mm256_fmadd_ps(_mm256_set1_ps(2.f), d34, d12);
  o[2 * os] = _mm256_fmadd_ps(_mm256_set1_ps(4.f), s34, s12);
  o[3 * os] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.f), d34, d12), m[5 * ms]);
}

// o = G g for one line of 3 (G's rows: 1/4 0 0 / -1/6 -1/6 -1/6 / -1/6 1/6 -1/6 /
// 1/24 1/12 1/6 / 1/24 -1/12 1/6 / 0 0 1)
static inline void g3(const __m256 *g, long gs, __m256 *o, long os) {
  const __m256 g0 = g[0], g1 = g[gs], g2 = g[2 * gs], s02 = _mm256_add_ps(g0, g2);
  const __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(1.f / 24), g0, _mm256_mul_ps(_mm256_set1_ps(1.f / 6), g2));
  const __m256 q = _mm256_mul_ps(_mm256_set1_ps(1.f / 12), g1);
  o[0] = _mm256_mul_ps(_mm256_set1_ps(1.f / 4), g0);
  o[os] = _mm256_mul_ps(_mm256_set1_ps(-1.f / 6), _mm256_add_ps(s02, g1));
  o[2 * os] = _mm256_mul_ps(_mm256_set1_ps(-1.f / 6), _mm256_sub_ps(s02, g1));
  o[3 * os] = _mm256_add_ps(p, q);
  o[4 * os] = _mm256_sub_ps(p, q);
  o[5 * os] = g2;
}

// U[e][kp][c][16] = (G w[k][c] G^T)[e] for the (kp, c) pairs of this thread; lanes past Co are 0
static void weights(job_t *j) {
  const long *ws = j->ws;
  const long pairs = (long)j->nkp * j->Ci;
  for (long q = pairs * j->t / j->T; q < pairs * (j->t + 1) / j->T; q++) {
    const int kp = (int)(q / j->Ci), c = (int)(q % j->Ci);
    for (int half = 0; half < 2; half++) {
      const int k0 = kp * NR + half * 8;
      const int nv = j->Co - k0 < 0 ? 0 : (j->Co - k0 < 8 ? j->Co - k0 : 8);
      __m256 g[3][3], t[ALPHA][3], u[ALPHA][ALPHA];
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
          const int ka = j->flip ? 2 - a : a, kb = j->flip ? 2 - b : b;
          g[a][b] = load8(j->w + k0 * ws[0] + c * ws[1] + ka * ws[2] + kb * ws[3], ws[0], nv);
        }
      for (int b = 0; b < 3; b++) g3(&g[0][b], 3, &t[0][b], 3);
      for (int a = 0; a < ALPHA; a++) g3(&t[a][0], 1, &u[a][0], 1);
      for (int e = 0; e < E; e++)
        _mm256_storeu_ps(j->uout + (((long)e * j->nkp + kp) * j->Ci + c) * NR + half * 8,
                         u[e / ALPHA][e % ALPHA]);
    }
  }
}

// c[r][0..16) = sum over k < K of a[r * lda + k] * b[k][0..16), for r < 6
static inline void micro(int K, const float *a, long lda, const float *b, float *c, long ldc) {
  ZERO_TILE_6X16;
  const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda,
              *a5 = a + 5 * lda;
  for (int k = 0; k < K; k++, b += NR) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    FMA_TILE_6X16(a0 + k, a1 + k, a2 + k, a3 + k, a4 + k, a5 + k, b0, b1);
  }
#define PUT(row, lo, hi)                        \
  _mm256_storeu_ps(c + row * ldc, lo);          \
  _mm256_storeu_ps(c + row * ldc + 8, hi);
  PUT(0, c00, c01) PUT(1, c10, c11) PUT(2, c20, c21) PUT(3, c30, c31) PUT(4, c40, c41) PUT(5, c50, c51)
#undef PUT
}

// tile p: image n, tile row ty, tile column tx (tiles numbered image by image, row by row)
static inline void tile_of(const job_t *j, long p, int *n, int *ty, int *tx) {
  const int th = (j->H + MT - 1) / MT, tw = (j->W + MT - 1) / MT;
  *n = (int)(p / ((long)th * tw)), *ty = (int)(p / tw % th), *tx = (int)(p % tw);
}

// V[e][tl][c] for the nt tiles from tile p0 (rows nt.. up to a multiple of MR are zero): each
// row of the 6 x 6 input tile transformed as it is loaded, then each column
static void input_transform(const job_t *j, long p0, int nt, float *V) {
  const int H = j->H, W = j->W, Ci = j->Ci, tb = j->tb;
  const long *xs = j->xs, ldv = j->ldv, es = (long)tb * ldv + j->epad;
  const __m256i six = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
  const __m256i xpos = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int tl = 0; tl < nt; tl++) {
    int n, ty, tx;
    tile_of(j, p0 + tl, &n, &ty, &tx);
    const int y0 = ty * MT - 1, x0 = tx * MT - 1;
    const int inside = y0 >= 0 && y0 + ALPHA <= H && x0 >= 0 && x0 + ALPHA <= W;
    // NCHW: each channel's row contiguous, read by masked loads (the tile's columns inside)
    const __m256i cols_in = _mm256_and_si256(
        six, _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_add_epi32(xpos, _mm256_set1_epi32(x0 + 1)), _mm256_setzero_si256()),
                              _mm256_cmpgt_epi32(_mm256_set1_epi32(W - x0), xpos)));
    for (int c0 = 0; c0 < Ci; c0 += 8) {
      const int nv = Ci - c0 < 8 ? Ci - c0 : 8, fast = inside && nv == 8 && xs[1] == 1;
      const int rows = !fast && nv == 8 && xs[3] == 1;
      const float *base = j->x + n * xs[0] + c0 * xs[1];
      float *dst = V + tl * ldv + c0;
      __m256 t[ALPHA][ALPHA], d[ALPHA], v[ALPHA];
      for (int a = 0; a < ALPHA; a++) {
        const float *row = base + (y0 + a) * xs[2] + x0 * xs[3];
        if (fast) {
          for (int b = 0; b < ALPHA; b++) d[b] = _mm256_loadu_ps(row + b * xs[3]);
        } else if (rows) {  // 6 positions of each of 8 channels, transposed
          if (y0 + a < 0 || y0 + a >= H) {
            for (int b = 0; b < ALPHA; b++) d[b] = _mm256_setzero_ps();
          } else {
            __m256 line[8], cols[8];
            for (int c = 0; c < 8; c++) line[c] = _mm256_maskload_ps(row + c * xs[1], cols_in);
            transpose8(line, cols);
            for (int b = 0; b < ALPHA; b++) d[b] = cols[b];
          }
        } else {
          const int iy = y0 + a;
          for (int b = 0; b < ALPHA; b++)
            d[b] = (iy >= 0 && iy < H && x0 + b >= 0 && x0 + b < W)
                       ? load8(row + b * xs[3], xs[1], nv)
                       : _mm256_setzero_ps();
        }
        bt6(d, 1, t[a], 1);
      }
      for (int b = 0; b < ALPHA; b++) {
        bt6(&t[0][b], ALPHA, v, 1);
        for (int a = 0; a < ALPHA; a++) store8(dst + (a * ALPHA + b) * es, 1, nv, v[a]);
      }
    }
  }
  const int ntr = (nt + MR - 1) / MR * MR;
  if (ntr > nt)
    for (int e = 0; e < E; e++)
      memset(V + e * es + nt * ldv, 0, sizeof(float) * (size_t)((ntr - nt) * ldv));
}

// the output tiles of the nt tiles from p0, from M[e][tl][kp * 16 + lane], plus the bias, plus
// the residual where there is one (added last: the bits of torch's res + (conv + bias))
static void output_transform(const job_t *j, long p0, int nt, const float *Mb) {
  const int H = j->H, W = j->W, Co = j->Co, tb = j->tb, ldm = j->nkp * NR;
  const long *ys = j->ys;
  for (int tl = 0; tl < nt; tl++) {
    int n, ty, tx;
    tile_of(j, p0 + tl, &n, &ty, &tx);
    for (int k0 = 0; k0 < Co; k0 += 8) {
      const int nv = Co - k0 < 8 ? Co - k0 : 8;
      __m256 m[ALPHA][ALPHA], s[MT][ALPHA], o[MT][MT];
      for (int e = 0; e < E; e++) m[e / ALPHA][e % ALPHA] = _mm256_load_ps(Mb + ((long)e * tb + tl) * ldm + k0);
      for (int b = 0; b < ALPHA; b++) at6(&m[0][b], ALPHA, &s[0][b], ALPHA);
      for (int r = 0; r < MT; r++) at6(&s[r][0], 1, &o[r][0], 1);
      const __m256 bias = j->bias ? load8(j->bias + k0, 1, nv) : _mm256_setzero_ps();
      float *base = j->y + n * ys[0] + k0 * ys[1];
      const float *rbase = j->res ? j->res + n * ys[0] + k0 * ys[1] : NULL;
      if (nv == 8 && ys[1] != 1 && ys[3] == 1 && ty * MT + MT <= H && tx * MT + MT <= W) {
        // NCHW: each channel's 4 outputs of a row contiguous, from the transpose
        for (int r = 0; r < MT; r++) {
          __m256 line[8], chans[8];
          for (int q = 0; q < MT; q++) line[q] = _mm256_add_ps(o[r][q], bias);
          for (int q = MT; q < 8; q++) line[q] = _mm256_setzero_ps();
          transpose8(line, chans);
          const long off = (ty * MT + r) * ys[2] + tx * MT;
          for (int c = 0; c < 8; c++) {
            __m128 v = _mm256_castps256_ps128(chans[c]);
            if (rbase) v = _mm_add_ps(v, _mm_loadu_ps(rbase + off + c * ys[1]));
            _mm_storeu_ps(base + off + c * ys[1], v);
          }
        }
        continue;
      }
      for (int r = 0; r < MT && ty * MT + r < H; r++)
        for (int q = 0; q < MT && tx * MT + q < W; q++) {
          const long off = (ty * MT + r) * ys[2] + (tx * MT + q) * ys[3];
          __m256 v = _mm256_add_ps(o[r][q], bias);
          if (rbase) v = _mm256_add_ps(v, load8(rbase + off, ys[1], nv));
          store8(base + off, ys[1], nv, v);
        }
    }
  }
}

static void forward(job_t *j) {
  const int Ci = j->Ci, tb = j->tb, nkp = j->nkp, ldm = nkp * NR;
  const long P = (long)j->N * ((j->H + MT - 1) / MT) * ((j->W + MT - 1) / MT);
  const long blocks = (P + tb - 1) / tb, b0 = blocks * j->t / j->T, b1 = blocks * (j->t + 1) / j->T;
  if (b0 >= b1) return;
  float *V = aligned_alloc(64, ((size_t)E * tb * Ci * sizeof(float) + 63) / 64 * 64);
  float *Mb = aligned_alloc(64, (size_t)E * tb * ldm * sizeof(float));
  if (!V || !Mb) {
    j->failed = 1;
    free(V);
    free(Mb);
    return;
  }
  for (long blk = b0; blk < b1; blk++) {
    const long p0 = blk * tb;
    const int nt = P - p0 < tb ? (int)(P - p0) : tb;
    input_transform(j, p0, nt, V);
    for (int e = 0; e < E; e++)
      for (int kp = 0; kp < nkp; kp++) {
        const float *b = j->u + ((long)e * nkp + kp) * Ci * NR;
        for (int g = 0; g < nt; g += MR)
          micro(Ci, V + ((long)e * tb + g) * Ci, Ci, b, Mb + ((long)e * tb + g) * ldm + kp * NR, ldm);
      }
    output_transform(j, p0, nt, Mb);
  }
  free(V);
  free(Mb);
}

// ---- the weight gradient, by the same algorithm read the other way (Lavin and Gray 2016):
//
//   dW[k][c] = G^T [ sum over tiles of (A gy_tile A^T) (.) (B^T d_tile B) ] G
//
// for each 4x4 tile of the output gradient and the 6x6 input tile d under it (the forward
// pass's), A = (A^T)^T and G as above: 36 multiplications per tile and channel pair, against 144.
// The tiles are taken a super-block at a time: all threads transform its tiles (V[e][tile][Ci]
// from x, G[e][tile][Co] from gy), then each thread adds the products M[e] += G[e]^T V[e] of its
// own e, the tiles in their order (from panels of the e-th slices, copied once per super-block);
// at the end dW is computed from M. A super-block's e-th slices of V and G fit in L2 together,
// the whole super-block in L3.

// r = A g for one line of 4 (A's rows: 1 0 0 0 / 1 1 1 1 / 1 -1 1 -1 / 1 2 4 8 / 1 -2 4 -8 /
// 0 0 0 1)
static inline void a4(const __m256 *g, long gs, __m256 *r, long rs) {
  const __m256 g0 = g[0], g1 = g[gs], g2 = g[2 * gs], g3 = g[3 * gs];
  const __m256 s02 = _mm256_add_ps(g0, g2), s13 = _mm256_add_ps(g1, g3);
  const __m256 t02 = _mm256_fmadd_ps(_mm256_set1_ps(4.f), g2, g0);
  const __m256 t13 = _mm256_mul_ps(_mm256_set1_ps(2.f), _mm256_fmadd_ps(_mm256_set1_ps(4.f), g3, g1));
  r[0] = g0;
  r[rs] = _mm256_add_ps(s02, s13);
  r[2 * rs] = _mm256_sub_ps(s02, s13);
  r[3 * rs] = _mm256_add_ps(t02, t13);
  r[4 * rs] = _mm256_sub_ps(t02, t13);
  r[5 * rs] = g3;
}

// o = G^T m for one line of 6 (G^T's rows: 1/4 -1/6 -1/6 1/24 1/24 0 / 0 -1/6 1/6 1/12 -1/12 0 /
// 0 -1/6 -1/6 1/6 1/6 1)
static inline void gt6(const __m256 *m, long ms, __m256 *o, long os) {
  const __m256 s12 = _mm256_add_ps(m[ms], m[2 * ms]), d21 = _mm256_sub_ps(m[2 * ms], m[ms]);
  const __m256 s34 = _mm256_add_ps(m[3 * ms], m[4 * ms]), d34 = _mm256_sub_ps(m[3 * ms], m[4 * ms]);
  const __m256 sixth = _mm256_set1_ps(1.f / 6);
  o[0] = _mm256_fmadd_ps(_mm256_set1_ps(1.f / 24), s34,
                         _mm256_fnmadd_ps(sixth, s12, _mm256_mul_ps(_mm256_set1_ps(0.25f), m[0])));
  o[os] = _mm256_fmadd_ps(_mm256_set1_ps(1.f / 12), d34, _mm256_mul_ps(sixth, d21));
  o[2 * os] = _mm256_add_ps(_mm256_mul_ps(sixth, _mm256_sub_ps(s34, s12)), m[5 * ms]);
}

// G[e][tl][k] for the nt tiles from tile p0: the 4x4 tile of gy (zero outside the image), each
// row transformed as it is loaded, then each column
static void grad_transform(const job_t *j, long p0, int nt, float *G) {
  const int H = j->H, W = j->W, Co = j->Co;
  const long *gs = j->gs, ldg = j->ldg, es = (long)j->tb * ldg + j->epad;
  const __m256i xpos = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int tl = 0; tl < nt; tl++) {
    int n, ty, tx;
    tile_of(j, p0 + tl, &n, &ty, &tx);
    const int y0 = ty * MT, x0 = tx * MT, inside = y0 + MT <= H && x0 + MT <= W;
    const int span = W - x0 < MT ? W - x0 : MT;  // the tile's columns inside
    const __m256i cols_in = _mm256_cmpgt_epi32(_mm256_set1_epi32(span), xpos);
    for (int k0 = 0; k0 < Co; k0 += 8) {
      const int nv = Co - k0 < 8 ? Co - k0 : 8;
      const float *base = j->gy + n * gs[0] + k0 * gs[1];
      float *dst = G + tl * ldg + k0;
      __m256 t[MT][ALPHA], d[MT], v[ALPHA];
      for (int a = 0; a < MT; a++) {
        const float *row = base + (y0 + a) * gs[2] + x0 * gs[3];
        if (inside && nv == 8 && gs[1] == 1) {
          for (int b = 0; b < MT; b++) d[b] = _mm256_loadu_ps(row + b * gs[3]);
        } else if (nv == 8 && gs[3] == 1) {  // NCHW: 4 positions of 8 channels, transposed
          if (y0 + a >= H) {
            for (int b = 0; b < MT; b++) d[b] = _mm256_setzero_ps();
          } else {
            __m256 line[8], cols[8];
            for (int c = 0; c < 8; c++) line[c] = _mm256_maskload_ps(row + c * gs[1], cols_in);
            transpose8(line, cols);
            for (int b = 0; b < MT; b++) d[b] = cols[b];
          }
        } else {
          for (int b = 0; b < MT; b++)
            d[b] = (y0 + a < H && x0 + b < W) ? load8(row + b * gs[3], gs[1], nv) : _mm256_setzero_ps();
        }
        a4(d, 1, t[a], 1);
      }
      for (int b = 0; b < ALPHA; b++) {
        a4(&t[0][b], ALPHA, v, 1);
        for (int a = 0; a < ALPHA; a++) store8(dst + (a * ALPHA + b) * es, 1, nv, v[a]);
      }
    }
  }
}

#define WG_CHUNK 36  // tiles per unit of the transform pass
#ifndef SB_BYTES
#define SB_BYTES 65536  // a super-block's e-th slices of V and G together
#endif

// this thread's chunks of the super-block's tiles, both transforms
static void wgrad_transform(job_t *j) {
  const long chunks = (j->nsb + WG_CHUNK - 1) / WG_CHUNK;
  for (long q = chunks * j->t / j->T; q < chunks * (j->t + 1) / j->T; q++) {
    const long p = q * WG_CHUNK;
    const int nt = j->nsb - p < WG_CHUNK ? (int)(j->nsb - p) : WG_CHUNK;
    input_transform(j, j->p0 + p, nt, j->V + p * j->ldv);
    grad_transform(j, j->p0 + p, nt, j->G + p * j->ldg);
  }
}

// c[r * ldc + 0..16) += sum over t < n of a[t * as + r] * b[t * bs + 0..16), for r < 6; the 6
// rows of the next tile, next[r * ldc + 0..16), are prefetched meanwhile
static inline void micro_acc(int n, const float *a, long as, const float *b, long bs, float *c,
                             long ldc, const float *next) {
  for (int r = 0; r < MR; r++) _mm_prefetch((const char *)(next + r * ldc), _MM_HINT_T0);
  ZERO_TILE_6X16;
  for (int t = 0; t < n; t++, a += as, b += bs) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    FMA_TILE_6X16(a + 0, a + 1, a + 2, a + 3, a + 4, a + 5, b0, b1);
  }
#define ACC(row, lo, hi)                                                                 \
  _mm256_storeu_ps(c + row * ldc, _mm256_add_ps(_mm256_loadu_ps(c + row * ldc), lo));   \
  _mm256_storeu_ps(c + row * ldc + 8, _mm256_add_ps(_mm256_loadu_ps(c + row * ldc + 8), hi));
  ACC(0, c00, c01) ACC(1, c10, c11) ACC(2, c20, c21) ACC(3, c30, c31) ACC(4, c40, c41) ACC(5, c50, c51)
#undef ACC
}

// M[e] (ceil(Co / 6) * 6 rows of ldm) += G[e]^T V[e] over the super-block, for this thread's e.
// Each e's slices are first copied into panels, V's 16 channels and G's 6 a tile, tile after
// tile: the micro tiles then read two contiguous streams. Read in place, a row (tile) apart,
// they ran at 60 % of the speed (1.24-1.29x on the weight gradients of a training step).
static void wgrad_products(job_t *j) {
  const int Ci = j->Ci, Co = j->Co, ldm = j->ldm, rows = (Co + MR - 1) / MR * MR, n = j->nsb;
  const int vpan = (Ci + NR - 1) / NR, gpan = rows / MR;
  const long ldv = j->ldv, ldg = j->ldg, ev = j->tb * ldv + j->epad, eg = j->tb * ldg + j->epad;
  float *Vp = j->pack + j->t * j->pack_len, *Gp = Vp + (long)vpan * j->tb * NR;
  for (int e = E * j->t / j->T; e < E * (j->t + 1) / j->T; e++) {
    float *M = j->M + (long)e * rows * ldm;
    if (j->p0 == 0) memset(M, 0, sizeof(float) * rows * ldm);
    const float *Ve = j->V + e * ev, *Ge = j->G + e * eg;
    for (int t = 0; t < n; t++) {
      for (int q = 0; q < vpan; q++) {
        float *dst = Vp + ((long)q * n + t) * NR;
        _mm256_store_ps(dst, _mm256_loadu_ps(Ve + t * ldv + q * NR));
        _mm256_store_ps(dst + 8, _mm256_loadu_ps(Ve + t * ldv + q * NR + 8));
      }
      for (int q = 0; q < gpan; q++) memcpy(Gp + ((long)q * n + t) * MR, Ge + t * ldg + q * MR, sizeof(float) * MR);
    }
    // each tile of M comes from L3 (a super-block's products visit all 36 M[e]) and is loaded
    // only after its sums, too late to overlap them: the next one is prefetched meanwhile
    for (int q = 0; q < vpan; q++)
      for (int p = 0; p < gpan; p++) {
        float *c = M + p * MR * ldm + q * NR;
        const float *next = p + 1 < gpan ? c + MR * ldm : (q + 1 < vpan ? M + (q + 1) * NR : c);
        micro_acc(n, Gp + (long)p * n * MR, MR, Vp + (long)q * n * NR, NR, c, ldm, next);
      }
  }
}

// out[k][3][3][Ci] = G^T M[.][k] G for this thread's output channels k
static void wgrad_output(job_t *j) {
  const int Ci = j->Ci, ldm = j->ldm, rows = (j->Co + MR - 1) / MR * MR;
  for (int k = (int)((long)j->Co * j->t / j->T); k < (int)((long)j->Co * (j->t + 1) / j->T); k++)
    for (int c0 = 0; c0 < Ci; c0 += 8) {
      const int nv = Ci - c0 < 8 ? Ci - c0 : 8;
      __m256 m[ALPHA][ALPHA], s[ALPHA][3], o[3][3];
      for (int e = 0; e < E; e++) m[e / ALPHA][e % ALPHA] = _mm256_loadu_ps(j->M + ((long)e * rows + k) * ldm + c0);
      for (int a = 0; a < ALPHA; a++) gt6(m[a], 1, s[a], 1);
      for (int b = 0; b < 3; b++) gt6(&s[0][b], 3, &o[0][b], 3);
      for (int r = 0; r < 3; r++)
        for (int q = 0; q < 3; q++) store8(j->y + ((long)k * 9 + r * 3 + q) * Ci + c0, 1, nv, o[r][q]);
    }
}

THREAD_ENTRY(job_t, weights)
THREAD_ENTRY(job_t, forward)
THREAD_ENTRY(job_t, wgrad_transform)
THREAD_ENTRY(job_t, wgrad_products)
THREAD_ENTRY(job_t, wgrad_output)
DEFINE_RUN(job_t)

// u (36 * ceil(Co / 16) * Ci * 16 floats) from the (Co, Ci, 3, 3) weight w read through its
// strides ws; flip reads the kernel rotated by 180 degrees. Returns 0, or 2 for a bad size.
int radardiff_wino_weights(const float *w, const long *ws, int flip, int Co, int Ci, float *u,
                           int threads) {
  if (Co < 1 || Ci < 1) return 2;
  job_t base = {.w = w, .uout = u, .Co = Co, .Ci = Ci, .nkp = (Co + NR - 1) / NR, .flip = flip};
  memcpy(base.ws, ws, sizeof(base.ws));
  run(weights, WORKER(weights), &base, clamp_threads(threads));
  return 0;
}

// y = res + conv2d(x, w, bias, padding=1) from u = radardiff_wino_weights(w); bias and res
// may be NULL, res (not y's memory) is read through y's strides. Returns 0, 1 when a block's
// buffers cannot be had, 2 for a bad size.
int radardiff_conv3x3_wino_res(const float *x, const long *xs, const float *u, const float *bias,
                               const float *res, float *y, const long *ys, int N, int H, int W,
                               int Ci, int Co, int threads) {
  if (N < 1 || H < 1 || W < 1 || Ci < 1 || Co < 1) return 2;
  threads = clamp_threads(threads);
  const long P = (long)N * ((H + MT - 1) / MT) * ((W + MT - 1) / MT);
  // blocks of TB tiles, smaller where that leaves a thread without one
  long share = (P + threads - 1) / threads;
  int tb = share < TB ? (int)((share + MR - 1) / MR * MR) : TB;
  job_t base = {.x = x, .u = u, .bias = bias, .res = res, .y = y, .N = N, .H = H, .W = W, .Ci = Ci,
                .Co = Co, .nkp = (Co + NR - 1) / NR, .tb = tb, .ldv = Ci};
  memcpy(base.xs, xs, sizeof(base.xs));
  memcpy(base.ys, ys, sizeof(base.ys));
  return run(forward, WORKER(forward), &base, threads) ? 1 : 0;
}

// y = conv2d(x, w, bias, padding=1): radardiff_conv3x3_wino_res without a residual
int radardiff_conv3x3_wino(const float *x, const long *xs, const float *u, const float *bias,
                           float *y, const long *ys, int N, int H, int W, int Ci, int Co,
                           int threads) {
  return radardiff_conv3x3_wino_res(x, xs, u, bias, NULL, y, ys, N, H, W, Ci, Co, threads);
}

// out (Co * 3 * 3 * Ci floats, [Co][3][3][Ci]) = the weight gradient of conv2d(x, w, padding=1)
// given the output gradient gy, both read through their strides. Returns 0, 1 when the
// transformed tiles' memory cannot be had, 2 for a bad size.
int radardiff_conv3x3_wino_wgrad(const float *x, const long *xs, const float *gy, const long *gs,
                                 float *out, int N, int H, int W, int Ci, int Co, int threads) {
  if (N < 1 || H < 1 || W < 1 || Ci < 1 || Co < 1) return 2;
  threads = clamp_threads(threads);
  const long tiles = (long)N * ((H + MT - 1) / MT) * ((W + MT - 1) / MT);
  // rows of V and G an odd number of cache lines long: at a power-of-two stride the products'
  // column reads (one row per tile) fell into a few L1 sets, and ran from L2
  const int ldv = ((Ci + NR - 1) / NR | 1) * NR, ldg = ((Co + NR - 1) / NR | 1) * NR;
  // super-blocks of tiles whose e-th slices of V and G take about SB_BYTES together, and at
  // least 72 tiles (each 6 x 16 tile of M is loaded and stored once per super-block)
  long sb = SB_BYTES / 4 / (Ci + Co) / MR * MR;
  sb = sb < 72 ? 72 : sb;
  sb = sb > (tiles + MR - 1) / MR * MR ? (tiles + MR - 1) / MR * MR : sb;
  const int ldm = (Ci + NR - 1) / NR * NR, rows = (Co + MR - 1) / MR * MR;
  // past the last tile's row, a micro tile's reads run on by up to 16 floats (V) and 6 (G)
  // e-th blocks a cache line more than a multiple of their rows apart: 36 stores of a tile's
  // transform then fall in different L1 sets (a multiple of 4 KiB apart, they shared one)
  const int epad = NR;
  const size_t vsize = ((size_t)E * (sb * ldv + epad) + NR) * sizeof(float);
  const size_t gsize = ((size_t)E * (sb * ldg + epad) + NR) * sizeof(float);
  float *V = aligned_alloc(64, (vsize + 63) / 64 * 64), *G = aligned_alloc(64, (gsize + 63) / 64 * 64);
  float *M = aligned_alloc(64, (size_t)E * rows * ldm * sizeof(float));
  // each thread's panels: V's ceil(Ci / 16) of sb x 16, then G's rows / 6 of sb x 6
  const long pack_len = ((long)ldm * sb + (long)rows * sb + 15) / 16 * 16;
  float *pack = aligned_alloc(64, (size_t)threads * pack_len * sizeof(float));
  int failed = !V || !G || !M || !pack;
  if (!failed) {
    memset(V, 0, vsize);
    memset(G, 0, gsize);
    job_t base = {.x = x, .gy = gy, .y = out, .V = V, .G = G, .M = M, .tiles = tiles, .N = N,
                  .H = H, .W = W, .Ci = Ci, .Co = Co, .tb = (int)sb, .ldm = ldm, .epad = epad,
                  .ldv = ldv, .ldg = ldg, .pack = pack, .pack_len = pack_len};
    memcpy(base.xs, xs, sizeof(base.xs));
    memcpy(base.gs, gs, sizeof(base.gs));
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
      job_t j = base;
      j.t = omp_get_thread_num();
      j.T = omp_get_num_threads();
      for (j.p0 = 0; j.p0 < tiles; j.p0 += sb) {
        j.nsb = tiles - j.p0 < sb ? (int)(tiles - j.p0) : (int)sb;
        wgrad_transform(&j);
#pragma omp barrier
        wgrad_products(&j);
#pragma omp barrier
      }
      wgrad_output(&j);
    }
#else
    for (base.p0 = 0; base.p0 < tiles; base.p0 += sb) {
      base.nsb = tiles - base.p0 < sb ? (int)(tiles - base.p0) : (int)sb;
      run(wgrad_transform, WORKER(wgrad_transform), &base, threads);
      run(wgrad_products, WORKER(wgrad_products), &base, threads);
    }
    run(wgrad_output, WORKER(wgrad_output), &base, threads);
#endif
  }
  free(V);
  free(G);
  free(M);
  free(pack);
  return failed ? 1 : 0;
}
