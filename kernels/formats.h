/* formats.h — the element codecs and scale rules of FORMATS.md, shared
 * verbatim by the CPU reference (C) and the CUDA kernels (nvcc): every
 * function here is `static inline` and `__host__ __device__` under nvcc, so the
 * two backends run the same code and produce the same bytes.
 *
 * Codecs work on bit patterns with integer arithmetic (no reliance on the
 * FPU's rounding mode or the GPU's cvt instructions). The few FP32 operations
 * of the scale rules go through qf_div/qf_mul, which are correctly rounded on
 * both sides (__fdiv_rn/__fmul_rn on the GPU: never contracted into an FMA).
 *
 *   type  bits   bias  max    codes
 *   BF16  1-8-7  127   3.39e38  RNE from FP32, NaN stays NaN (quiet)
 *   E4M3  1-4-3  7     448      RNE, satfinite (|x| >= 448 and ±Inf → ±448), NaN → 0x7F|sign
 *   E8M0  8      127   2^127    value 2^(e-127); 0xFF = NaN; RCEIL from FP32
 *   E2M1  1-2-1  1     6        RNE, satfinite; NaN → 0 (the format has no NaN;
 *                                quantizers report non-finite inputs first)
 * E2M1 codes are packed two per byte, element 2i in the LOW nibble. */
#ifndef RLRUN_FORMATS_H
#define RLRUN_FORMATS_H

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define QF_HOSTDEV static inline __host__ __device__
#else
#define QF_HOSTDEV static inline
#endif

#define FMT_E4M3_MAX 448.0f
#define FMT_E2M1_MAX 6.0f
#define FMT_E4M3_MAX_CODE 0x7Eu /* 448 */
#define FMT_E2M1_MAX_CODE 0x7u  /* 6 */
#define FMT_FLT_MAX 3.40282346638528859812e+38f

/* ---------------------------------------------------------------- FP32 bits */

/* The bit pattern of an FP32 value. */
QF_HOSTDEV uint32_t qf_f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
#endif
}

/* The FP32 value of a bit pattern. */
QF_HOSTDEV float qf_f32_from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, 4);
  return f;
#endif
}

/* 1 when x is neither Inf nor NaN. */
QF_HOSTDEV int qf_isfinite(float x) { return (qf_f32_bits(x) & 0x7f800000u) != 0x7f800000u; }

/* Any NaN → the one canonical quiet NaN 0x7FC00000, so dequantized outputs of a
 * non-finite block are the same bytes on CPU and GPU (their NaN payloads differ). */
QF_HOSTDEV float qf_canon_nan(float x) { return x != x ? qf_f32_from_bits(0x7fc00000u) : x; }

/* Correctly rounded FP32 division and multiplication, identical on CPU and GPU. */
QF_HOSTDEV float qf_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
QF_HOSTDEV float qf_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

/* |x| for FP32, by clearing the sign bit. */
QF_HOSTDEV float qf_fabs(float x) { return qf_f32_from_bits(qf_f32_bits(x) & 0x7fffffffu); }

/* The larger of two non-negative, non-NaN FP32 values (exact, order-free). */
QF_HOSTDEV float qf_fmax_pos(float a, float b) { return a > b ? a : b; }

/* v / 2^s rounded to nearest, ties to even (integer significand, s >= 1). */
QF_HOSTDEV uint32_t qf_rne_shift(uint32_t v, int s) {
  if (s >= 32) return 0;
  uint32_t q = v >> s, rem = v & ((1u << s) - 1u), half = 1u << (s - 1);
  if (rem > half || (rem == half && (q & 1u))) q++;
  return q;
}

/* Magnitude code of |x| (bits u, sign cleared, finite) in a small float format
 * with mb mantissa bits and exponent bias `bias` (subnormals included), rounded
 * to nearest-even, not yet saturated: may exceed the format's max code. */
QF_HOSTDEV uint32_t qf_small_float_code(uint32_t u, int mb, int bias) {
  if (u == 0) return 0;
  int e = (int)(u >> 23);
  uint32_t sig = u & 0x7fffffu;
  int E; /* unbiased exponent of the leading significand bit position 23 */
  if (e == 0) E = -126; /* FP32 subnormal: no implicit bit */
  else sig |= 0x800000u, E = e - 127;
  int emin = 1 - bias;
  if (E >= emin) /* normal in the target: mantissa carry rolls into the exponent */
    return ((uint32_t)(E + bias - 1) << mb) + qf_rne_shift(sig, 23 - mb);
  return qf_rne_shift(sig, 23 - mb + (emin - E)); /* subnormal (or rounds up to min normal) */
}

/* ---------------------------------------------------------------- BF16 */

/* FP32 → BF16, round to nearest-even; NaN stays a (quiet) NaN of the same sign. */
QF_HOSTDEV uint16_t fmt_bf16_from_f32(float x) {
  uint32_t u = qf_f32_bits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

/* BF16 → FP32 (exact). */
QF_HOSTDEV float fmt_bf16_to_f32(uint16_t h) { return qf_f32_from_bits((uint32_t)h << 16); }

/* ---------------------------------------------------------------- E4M3 */

/* FP32 → E4M3 (float8_e4m3fn): RNE, satfinite (±Inf and |x| >= 448 → ±448),
 * NaN → 0x7F with the input's sign. */
QF_HOSTDEV uint8_t fmt_e4m3_from_f32(float x) {
  uint32_t u = qf_f32_bits(x);
  uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return (uint8_t)(sign | 0x7Fu);
  if (u >= 0x43e00000u) return (uint8_t)(sign | FMT_E4M3_MAX_CODE); /* 448.0f */
  uint32_t c = qf_small_float_code(u, 3, 7);
  if (c > FMT_E4M3_MAX_CODE) c = FMT_E4M3_MAX_CODE;
  return (uint8_t)(sign | c);
}

/* E4M3 → FP32 (exact; 0x7F/0xFF → NaN). */
QF_HOSTDEV float fmt_e4m3_to_f32(uint8_t c) {
  uint32_t sign = (uint32_t)(c & 0x80u) << 24;
  uint32_t e = (c >> 3) & 0xFu, m = c & 7u;
  if (e == 0xFu && m == 7u) return qf_f32_from_bits(sign | 0x7fc00000u);
  if (e == 0) { /* subnormal: m × 2^-9 */
    if (m == 0) return qf_f32_from_bits(sign);
    int p = m >= 4 ? 2 : (m >= 2 ? 1 : 0); /* leading bit of m */
    uint32_t frac = (m - (1u << p)) << (23 - p);
    return qf_f32_from_bits(sign | ((uint32_t)(p - 9 + 127) << 23) | frac);
  }
  return qf_f32_from_bits(sign | ((e - 7u + 127u) << 23) | (m << 20));
}

/* ---------------------------------------------------------------- E8M0 */

/* RCEIL: the biased E8M0 exponent e with 2^(e-127) >= v, as FORMATS.md (MXFP8)
 * defines it: e = biased exponent of v, plus 1 if v's mantissa is non-zero,
 * clamped to [0, 254]. v = 0 → 0; the sign of v is ignored; +Inf → 254;
 * NaN → 0xFF. (FP32 subnormal v → 1, i.e. 2^-126.) */
QF_HOSTDEV uint8_t fmt_e8m0_rceil(float v) {
  uint32_t u = qf_f32_bits(v) & 0x7fffffffu;
  if (u > 0x7f800000u) return 0xFF;
  if (u == 0) return 0;
  uint32_t e = (u >> 23) + ((u & 0x7fffffu) != 0);
  return (uint8_t)(e > 254u ? 254u : e);
}

/* E8M0 → FP32: 2^(e-127) (exact; e = 0 gives the subnormal 2^-127; 0xFF → NaN). */
QF_HOSTDEV float fmt_e8m0_to_f32(uint8_t e) {
  if (e == 0xFF) return qf_f32_from_bits(0x7fc00000u);
  if (e == 0) return qf_f32_from_bits(0x00400000u);
  return qf_f32_from_bits((uint32_t)e << 23);
}

/* 2^(127-e) as FP32 (the exact encode multiplier of an E8M0 scale e <= 254). */
QF_HOSTDEV float fmt_e8m0_inv_f32(uint8_t e) {
  int k = 127 - (int)e; /* in [-127, 127] */
  if (k >= -126) return qf_f32_from_bits((uint32_t)(k + 127) << 23);
  return qf_f32_from_bits(0x00400000u); /* 2^-127 */
}

/* ---------------------------------------------------------------- E2M1 */

/* FP32 → E2M1 (4-bit code in the low nibble): RNE, satfinite (|x| >= 6 and
 * ±Inf → ±6); NaN → 0 (E2M1 has no NaN). Written as comparisons against the
 * midpoints between neighbours (cheap on the GPU; Hopper has no E2M1 cvt):
 * a tie goes to the even code, hence > or >= at each midpoint. */
QF_HOSTDEV uint8_t fmt_e2m1_from_f32(float x) {
  uint32_t u = qf_f32_bits(x);
  uint8_t sign = (uint8_t)((u >> 28) & 0x8u);
  float a = qf_f32_from_bits(u & 0x7fffffffu);
  if (!(a == a)) return 0; /* NaN */
  uint32_t c = (uint32_t)(a > 0.25f) + (uint32_t)(a >= 0.75f) + (uint32_t)(a > 1.25f) +
               (uint32_t)(a >= 1.75f) + (uint32_t)(a > 2.5f) + (uint32_t)(a >= 3.5f) +
               (uint32_t)(a > 5.0f);
  return (uint8_t)(sign | c);
}

/* E2M1 code (low nibble) → FP32 (exact). */
QF_HOSTDEV float fmt_e2m1_to_f32(uint8_t c) {
  /* magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6} as FP32 bit patterns */
  uint32_t m = c & 7u, bits;
  switch (m) {
    case 0: bits = 0x00000000u; break;
    case 1: bits = 0x3f000000u; break;
    case 2: bits = 0x3f800000u; break;
    case 3: bits = 0x3fc00000u; break;
    case 4: bits = 0x40000000u; break;
    case 5: bits = 0x40400000u; break;
    case 6: bits = 0x40800000u; break;
    default: bits = 0x40c00000u; break;
  }
  return qf_f32_from_bits(bits | ((uint32_t)(c & 8u) << 28));
}

/* FP32 → E2M1 with stochastic rounding: with y = |x| between neighbours
 * lo <= y < hi, rounds up when the top 24 bits of r, as a fraction of 2^24, are
 * below (y - lo) / (hi - lo) (FP32). |x| >= 6 and ±Inf saturate; NaN → 0.
 * r is one 32-bit draw of the counter-based generator (qf_philox_u32). */
QF_HOSTDEV uint8_t fmt_e2m1_from_f32_sr(float x, uint32_t r) {
  uint32_t u = qf_f32_bits(x);
  uint8_t sign = (uint8_t)((u >> 28) & 0x8u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return 0;
  if (u >= 0x40c00000u) return (uint8_t)(sign | FMT_E2M1_MAX_CODE);
  float y = qf_f32_from_bits(u);
  uint32_t lo = 0; /* largest code whose value is <= y */
  while (lo < 7u && fmt_e2m1_to_f32((uint8_t)(lo + 1u)) <= y) lo++;
  float vlo = fmt_e2m1_to_f32((uint8_t)lo), vhi = fmt_e2m1_to_f32((uint8_t)(lo + 1u));
  float p = qf_div(y - vlo, vhi - vlo); /* y - vlo is exact (Sterbenz / small ints) */
  float t = qf_mul((float)(r >> 8), 5.9604644775390625e-08f); /* × 2^-24, exact */
  uint32_t c = t < p ? lo + 1u : lo;
  return (uint8_t)(sign | c);
}

/* ---------------------------------------------------------------- RNG */

/* Philox4x32-10 (Salmon et al., 2011; the constants of Random123): the one
 * block function of rlrun (stochastic rounding, the Lua task rng, the
 * sampler): 4 × 32 random bits for a 128-bit counter and a 64-bit key. */
QF_HOSTDEV void qf_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
  for (int i = 0; i < 10; i++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c1 = (uint32_t)p1, c3 = (uint32_t)p0, c0 = n0, c2 = n2;
    k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* Word 0 of Philox4x32-10; counter-based, so any element's draw is computable
 * alone. Stochastic rounding draws with counter = (element index lo, hi,
 * offset lo, hi) and key = seed. */
QF_HOSTDEV uint32_t qf_philox_u32(uint64_t seed, uint64_t index, uint64_t offset) {
  const uint32_t ctr[4] = {(uint32_t)index, (uint32_t)(index >> 32), (uint32_t)offset,
                           (uint32_t)(offset >> 32)};
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  uint32_t out[4];
  qf_philox4x32(ctr, key, out);
  return out[0];
}

/* ---------------------------------------------------------------- scale rules */

/* The smallest power of two >= v, as FP32 (v finite, > 0; FP32 subnormal
 * powers 2^-149..2^-127 included; a result above 2^127 saturates to 2^127). */
QF_HOSTDEV float fmt_pow2_ceil_f32(float v) {
  uint32_t u = qf_f32_bits(v) & 0x7fffffffu, m = u & 0x7fffffu, e = u >> 23;
  if (e == 0) { /* subnormal v = m × 2^-149 */
    uint32_t p = 1;
    while (p < m) p <<= 1;
    return qf_f32_from_bits(p); /* 2^23 → the bits of 2^-126, the smallest normal */
  }
  e += (m != 0);
  return qf_f32_from_bits((e > 254u ? 254u : e) << 23);
}

/* fp8-block scale (dequant multiplier) of a block with absolute maximum amax
 * (finite, >= 0): amax/448 correctly rounded; amax = 0 → 1. With ue8m0: the
 * power of two 2^ceil(log2(amax/448)) of the FP32 quotient, exactly. A
 * quotient that underflows to 0 (amax < ~3.1e-43, an FP32 source's subnormal
 * block) is the smallest subnormal 2^-149 in both: the block's values divided by
 * it stay finite (≤ ~224), where a scale of 0 made every element NaN or ±448. */
QF_HOSTDEV float fmt_fp8_block_scale(float amax, int ue8m0) {
  if (amax == 0.0f) return 1.0f;
  float s = qf_div(amax, FMT_E4M3_MAX);
  if (s == 0.0f) s = qf_f32_from_bits(1u); /* 2^-149 */
  return ue8m0 ? fmt_pow2_ceil_f32(s) : s;
}

/* MXFP8 scale exponent (biased E8M0) of a block with absolute maximum amax. */
QF_HOSTDEV uint8_t fmt_mxfp8_scale(float amax) {
  return fmt_e8m0_rceil(qf_div(amax, FMT_E4M3_MAX));
}

/* NVFP4 per-tensor encode scale S_enc = 448·6 / amax (amax = 0 → 1), capped at
 * FLT_MAX so that tiny tensors (amax < 8e-36) do not produce Inf (as
 * TransformerEngine does). S_dec = 1 / S_enc (fmt_nvfp4_sdec). */
QF_HOSTDEV float fmt_nvfp4_senc(float amax) {
  if (amax == 0.0f) return 1.0f;
  float s = qf_div(FMT_E4M3_MAX * FMT_E2M1_MAX, amax);
  return s > FMT_FLT_MAX ? FMT_FLT_MAX : s;
}

/* NVFP4 per-tensor decode scale S_dec = 1 / S_enc (what checkpoints store as
 * weight_scale_2). */
QF_HOSTDEV float fmt_nvfp4_sdec(float amax) { return qf_div(1.0f, fmt_nvfp4_senc(amax)); }

/* NVFP4 block scale code sb = E4M3_sat(amax_block × (S_enc × (1/6))). */
QF_HOSTDEV uint8_t fmt_nvfp4_block_scale(float amax_block, float s_enc) {
  return fmt_e4m3_from_f32(qf_mul(amax_block, qf_mul(s_enc, 1.0f / 6.0f)));
}

/* NVFP4 element encode multiplier enc = 1 / (float(sb) × S_dec), capped at
 * FLT_MAX; 0 when sb = 0 (every element of the block encodes to 0). */
QF_HOSTDEV float fmt_nvfp4_enc(uint8_t sb, float s_dec) {
  float b = fmt_e4m3_to_f32(sb);
  if (b == 0.0f) return 0.0f;
  float e = qf_div(1.0f, qf_mul(b, s_dec));
  return e > FMT_FLT_MAX ? FMT_FLT_MAX : e;
}

/* ---------------------------------------------------------------- arrays (formats.c) */
#if !defined(__CUDACC__)
/* n FP32 values → BF16 (RNE), and back; for converters and tests. */
void fmt_bf16_from_f32_n(const float *x, uint16_t *out, int64_t n);
void fmt_bf16_to_f32_n(const uint16_t *x, float *out, int64_t n);
/* n E4M3 codes → FP32. */
void fmt_e4m3_to_f32_n(const uint8_t *x, float *out, int64_t n);
#endif

#endif
