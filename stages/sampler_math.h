/* sampler_math.h — the arithmetic of one sampling step, shared verbatim by the
 * CPU reference (stages/sampler.c) and the fused CUDA kernel
 * (stages/sampler_cuda.cu): every function is `static inline` (and
 * `__host__ __device__` under nvcc), every FP64 operation goes through
 * smp_add/smp_sub/smp_mul/smp_div (correctly rounded on both sides, never
 * contracted into an FMA on the GPU), and exp is computed here rather than by
 * the two math libraries, so both backends produce the same bits and so the
 * same token. The sampling contract itself is documented in sampler.h. */
#ifndef RLRUN_SAMPLER_MATH_H
#define RLRUN_SAMPLER_MATH_H

#include <math.h>
#include <stdint.h>

#include "kernels/formats.h"

/* Tokens of a row are laid out in tiles of SMP_TILE = 32 segments × 32 lanes:
 * token i sits in tile i / 1024, segment (i % 1024) / 32, lane i % 32 — the
 * CUDA block has 1024 threads and thread t handles lane t % 32 of segment
 * t / 32 in every tile. All sums follow that layout (smp_tree32, sampler.h). */
#define SMP_LANES 32
#define SMP_SEGS 32
#define SMP_TILE (SMP_LANES * SMP_SEGS)

/* Domain tag xored into the high key word ("samp"): the sampler's stream is
 * disjoint from the Lua task rng ("task") for the same seed. */
#define SMP_KEY_TAG 0x73616d70u

#if defined(__CUDA_ARCH__)
#define SMP_ADD(a, b) __dadd_rn((a), (b))
#define SMP_SUB(a, b) __dsub_rn((a), (b))
#define SMP_MUL(a, b) __dmul_rn((a), (b))
#define SMP_DIV(a, b) __ddiv_rn((a), (b))
#else
#define SMP_ADD(a, b) ((a) + (b))
#define SMP_SUB(a, b) ((a) - (b))
#define SMP_MUL(a, b) ((a) * (b))
#define SMP_DIV(a, b) ((a) / (b))
#endif

/* Correctly rounded FP64 operations, identical on CPU and GPU. */
QF_HOSTDEV double smp_add(double a, double b) { return SMP_ADD(a, b); }
QF_HOSTDEV double smp_sub(double a, double b) { return SMP_SUB(a, b); }
QF_HOSTDEV double smp_mul(double a, double b) { return SMP_MUL(a, b); }
QF_HOSTDEV double smp_div(double a, double b) { return SMP_DIV(a, b); }

/* 2^k as FP64 for -1022 <= k <= 1023 (exact, from the bits). */
QF_HOSTDEV double smp_pow2(int k) {
  uint64_t u = (uint64_t)(k + 1023) << 52;
  double d;
#if defined(__CUDA_ARCH__)
  d = __longlong_as_double((long long)u);
#else
  memcpy(&d, &u, 8);
#endif
  return d;
}

/* exp(x) for x <= 0 (the only range the sampler needs: z - max), within a
 * few ulp, the same bits on CPU and GPU: x = k·ln2 + r with |r| <= ln2/2
 * (Cody–Waite, fdlibm's split of ln2 so k·ln2_hi is exact), e^r by its Taylor
 * series to r^13 (truncation < 1e-17 relative) in Horner form, then × 2^k in
 * two exact-or-once-rounded steps (subnormal results included). exp(0) = 1
 * exactly; x < -746 or x = -Inf → 0; NaN → NaN; x > 0 → +Inf (unused).
 *
 * Branch-free (the special inputs are selected at the end, the polynomial
 * runs on a stand-in), so the GPU interleaves the exps of a segment instead of
 * running each one's dependent chain alone; k = floor(x/ln2 + 1/2) comes from
 * the round-to-nearest of adding 1.5·2^52 (exact for |y| < 2^51), less one
 * where that rounded up — floor's bits, with no FP64 conversion instruction.
 * tests/test_sampler.c checks these bits against the earlier branching form
 * (libm floor, (int) cast) on every kind of input. */
QF_HOSTDEV double smp_exp(double x) {
  const int nan = x != x, low = x < -746.0, pos = x >= 0.0;
  const double xc = nan || low || pos ? -1.0 : x; /* the polynomial's input: x where x is in range */
  const double inv_ln2 = 1.44269504088896338700e+00;
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  const double M = 6755399441055744.0; /* 1.5·2^52: adding it rounds to an integer, held in the low bits */
  const double y = smp_add(smp_mul(xc, inv_ln2), 0.5), t = smp_add(y, M), n = smp_sub(t, M);
  const int up = n > y; /* y rounded up: floor is one less */
  const double kd = up ? smp_sub(n, 1.0) : n;
  uint64_t tb;
#if defined(__CUDA_ARCH__)
  tb = (uint64_t)__double_as_longlong(t);
#else
  memcpy(&tb, &t, 8);
#endif
  const int k = (int)(int32_t)(uint32_t)tb - up; /* in [-1077, 0] */
  const double r = smp_sub(smp_sub(xc, smp_mul(kd, ln2_hi)), smp_mul(kd, ln2_lo));
  /* 1/n! for n = 13 … 1 */
  const double c[13] = {1.6059043836821614599e-10, 2.0876756987868098979e-09, 2.5052108385441718775e-08,
                        2.7557319223985890653e-07, 2.7557319223985890653e-06, 2.4801587301587301566e-05,
                        1.9841269841269841253e-04, 1.3888888888888888889e-03, 8.3333333333333333333e-03,
                        4.1666666666666666667e-02, 1.6666666666666666667e-01, 5.0000000000000000000e-01,
                        1.0};
  double p = c[0];
  for (int i = 1; i < 13; i++) p = smp_add(smp_mul(p, r), c[i]);
  p = smp_add(smp_mul(p, r), 1.0);
  const int k1 = k / 2, k2 = k - k1;
  const double e = smp_mul(smp_mul(p, smp_pow2(k1)), smp_pow2(k2));
  return nan ? x : low ? 0.0 : pos ? (x == 0.0 ? 1.0 : HUGE_VAL) : e;
}

/* Order-preserving key of a float logit: a > b ⇔ key(a) > key(b); -0 and +0
 * share the key of +0 (they are the same logit). */
QF_HOSTDEV uint32_t smp_key(float x) {
  uint32_t u = qf_f32_bits(x);
  if ((u & 0x7fffffffu) == 0) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* 1 when a logit may enter a row: finite or -Inf (+Inf and NaN are refused). */
QF_HOSTDEV int smp_logit_ok(float x) {
  uint32_t u = qf_f32_bits(x);
  return (u & 0x7f800000u) != 0x7f800000u || u == 0xff800000u;
}

/* The sum of 32 values in the order of a warp's shuffle-down reduction:
 * for off = 16, 8, 4, 2, 1: v[l] += v[l + off] for l < off; result v[0].
 * v is overwritten. */
QF_HOSTDEV double smp_tree32(double *v) {
  for (int off = 16; off >= 1; off >>= 1)
    for (int l = 0; l < off; l++) v[l] = smp_add(v[l], v[l + off]);
  return v[0];
}

/* The uniform draw of one sampling step, in [0, 1) with 53 random bits:
 * Philox4x32-10 with counter = (position, sample, prompt, iteration) and key =
 * (seed lo, seed hi ^ "samp"); u = ((x0 | x1 << 32) >> 11) · 2^-53. */
QF_HOSTDEV double smp_uniform(uint64_t seed, uint32_t iteration, uint32_t prompt, uint32_t sample,
                              uint32_t position) {
  const uint32_t ctr[4] = {position, sample, prompt, iteration};
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32) ^ SMP_KEY_TAG};
  uint32_t x[4];
  qf_philox4x32(ctr, key, x);
  uint64_t u = (uint64_t)x[0] | (uint64_t)x[1] << 32;
  return (double)(u >> 11) * 0x1.0p-53;
}

#endif
