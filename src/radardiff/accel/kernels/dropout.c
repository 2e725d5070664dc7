// radardiff's dropout: y[i] = x[i] * scale where element i is kept, else 0, the kept elements
// chosen by a counter-based generator, Philox4x32-10 (Salmon et al. 2011, "Parallel random
// numbers: as easy as 1, 2, 3"; the generator of torch's CUDA dropout), keyed by a 64-bit seed.
//
// Element i is kept when word w of the Philox block of counter c is >= threshold (unsigned), with
//   b = i / 32, r = i % 32, w = r / 8, c = 8 b + r % 8,
// the counter's 64 bits in its first two words (low, high), the other two zero; so eight
// counters in the eight lanes of a vector give 32 consecutive elements, four vectors of eight.
// The mask is a function of (seed, i) alone: the same whatever the thread count, and the
// backward pass is this same kernel on the output gradient with the same seed.
#include <stdint.h>

#include "common.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// the eight lanes' 32 x 32 -> 64-bit products of a and m: their low and high halves
static inline void mulhilo8(__m256i a, __m256i m, __m256i *lo, __m256i *hi) {
  const __m256i even = _mm256_mul_epu32(a, m);                         // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1, 3, 5, 7
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Philox4x32-10 of the counters r[0..3] in eight lanes, key (k0, k1): its words, in r
static inline void philox8(__m256i r[4], uint32_t k0, uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi32((int)PHILOX_M0), m1 = _mm256_set1_epi32((int)PHILOX_M1);
  __m256i x0 = r[0], x1 = r[1], x2 = r[2], x3 = r[3];
  for (int round = 0; round < 10; round++) {
    __m256i lo0, hi0, lo1, hi1;
    mulhilo8(x0, m0, &lo0, &hi0);
    mulhilo8(x2, m1, &lo1, &hi1);
    const __m256i key0 = _mm256_set1_epi32((int)k0), key1 = _mm256_set1_epi32((int)k1);
    x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), key0);
    x1 = lo1;
    x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), key1);
    x3 = lo0;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  r[0] = x0, r[1] = x1, r[2] = x2, r[3] = x3;
}

typedef struct {
  const float *x;
  float *y;
  long n;
  uint64_t seed;
  uint32_t threshold;
  float scale;
  int t, T, failed;
} job_t;

static void dropout(job_t *j) {
  const long blocks = (j->n + 31) / 32;
  const long b0 = blocks * j->t / j->T, b1 = blocks * (j->t + 1) / j->T;
  const uint32_t k0 = (uint32_t)j->seed, k1 = (uint32_t)(j->seed >> 32);
  const __m256i flip = _mm256_set1_epi32((int)0x80000000u);
  // kept: word >= threshold, as signed words offset by 2^31 > threshold - 1 offset likewise
  const __m256i limit = _mm256_set1_epi32((int)((j->threshold - 1u) ^ 0x80000000u));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 scale = _mm256_set1_ps(j->scale);
  for (long b = b0; b < b1; b++) {
    const uint64_t c = (uint64_t)b * 8;  // the block's first counter (8 b + lane: no carry
    // out of the low word within a block, as 8 b is a multiple of 8)
    __m256i r[4] = {_mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)c), lane),
                    _mm256_set1_epi32((int)(uint32_t)(c >> 32)), _mm256_setzero_si256(),
                    _mm256_setzero_si256()};
    philox8(r, k0, k1);
    const long base = b * 32;
    for (int w = 0; w < 4; w++) {
      const long i = base + 8 * w;
      if (i >= j->n) break;
      const __m256 keep =
          _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_xor_si256(r[w], flip), limit));
      if (i + 8 <= j->n) {
        const __m256 v = _mm256_loadu_ps(j->x + i);
        _mm256_storeu_ps(j->y + i, _mm256_and_ps(_mm256_mul_ps(v, scale), keep));
      } else {  // the last, partial vector
        const __m256i in = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(j->n - i)), lane);
        const __m256 v = _mm256_maskload_ps(j->x + i, in);
        _mm256_maskstore_ps(j->y + i, in, _mm256_and_ps(_mm256_mul_ps(v, scale), keep));
      }
    }
  }
}

THREAD_ENTRY(job_t, dropout)
DEFINE_RUN(job_t)

// y = x * scale where kept (word >= threshold, threshold >= 1), else 0, over n floats; x and y
// may be the same array. Returns 0.
int radardiff_dropout(const float *x, float *y, long n, uint64_t seed, uint32_t threshold,
                      float scale, int threads) {
  const job_t base = {x, y, n, seed, threshold < 1u ? 1u : threshold, scale, 0, 1, 0};
  long blocks = (n + 31) / 32;
  threads = clamp_threads(threads);
  if (blocks < 64L * threads) threads = 1;  // small tensors: not worth waking threads
  run(dropout, WORKER(dropout), &base, threads);
  return 0;
}

// The Philox4x32-10 words of the counters (ctr[0] + k, ctr[1], ctr[2], ctr[3]), k < 8 (no
// carry), key (key[0], key[1]): out[4 k + w]. For tests against the published known answers.
int radardiff_philox(const uint32_t *ctr, const uint32_t *key, uint32_t *out) {
  __m256i r[4];
  for (int w = 0; w < 4; w++) r[w] = _mm256_set1_epi32((int)ctr[w]);
  r[0] = _mm256_add_epi32(r[0], _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  philox8(r, key[0], key[1]);
  uint32_t words[4][8];
  for (int w = 0; w < 4; w++) _mm256_storeu_si256((__m256i *)words[w], r[w]);
  for (int k = 0; k < 8; k++)
    for (int w = 0; w < 4; w++) out[4 * k + w] = words[w][k];
  return 0;
}
