/* quant_cuda_dev.cuh — device helpers of the fast CUDA quantizers (included by
 * quant_cuda.cu, and by quant_selftest_cuda.cu whose quant_cuda_selftest_fast
 * checks them). Each one computes exactly what formats.h computes, with
 * fewer instructions; quant_cuda_selftest_fast checks them on the device
 * (every input pattern where that is cheap) and tests/gpu checks the bytes.
 *
 *   amax      integer max of |bf16| bit patterns, two lanes per 32-bit op
 *             (max.u16x2); a result >= 0x7F80 means the group holds Inf/NaN.
 *   division  x / s (fp8-block) as Markstein's sequence with r = RN(1/s):
 *             q = RN(x·r), rem = s·q − x (exact, FMA), q' = RN(q − rem·r) =
 *             RN(x/s) when s ∈ [2^-90, 2^126] (else __fdiv_rn); the sign of
 *             a zero or underflowed quotient is kept.
 *   E2M1      round to nearest even by one magic addition: y + 2^(e+22) (e =
 *             the exponent of y clamped to [0, 2]) rounds y to the E2M1 grid
 *             of its binade; code = r + 2e, where r is the added offset. */
#pragma once
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/formats.h"
#include "kernels/quant.h"

#define QD_FULL 0xffffffffu

/* Largest |bf16| bit pattern (sign cleared) of 8 packed words (16 values). */
__device__ __forceinline__ uint32_t qd_amax_bits16(uint4 a, uint4 b) {
  const uint32_t k = 0x7fff7fffu;
  uint32_t m = __vmaxu2(__vmaxu2(__vmaxu2(a.x & k, a.y & k), __vmaxu2(a.z & k, a.w & k)),
                        __vmaxu2(__vmaxu2(b.x & k, b.y & k), __vmaxu2(b.z & k, b.w & k)));
  return m;  /* two 16-bit lanes: fold with qd_fold16 */
}

/* max of the two 16-bit lanes of a packed word. */
__device__ __forceinline__ uint32_t qd_fold16(uint32_t m) { return max(m & 0xffffu, m >> 16); }

/* Largest |bf16| bit pattern of 2 packed words (4 values), folded. */
__device__ __forceinline__ uint32_t qd_amax_bits4(uint2 h) {
  return qd_fold16(__vmaxu2(h.x & 0x7fff7fffu, h.y & 0x7fff7fffu));
}

/* FP32 value of a |bf16| bit pattern (finite). */
__device__ __forceinline__ float qd_bits_to_amax(uint32_t m) { return __uint_as_float(m << 16); }

/* Non-finite values among 16 packed bf16: count | (position of the first << 8). */
static __device__ __noinline__ uint32_t qd_nonfinite16(uint4 a, uint4 b) {
  const uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
  uint32_t n = 0, f = 16;
#pragma unroll
  for (int i = 15; i >= 0; i--) {
    uint32_t h = (w[i / 2] >> (16 * (i % 2))) & 0x7fffu;
    if (h >= 0x7f80u) n++, f = (uint32_t)i;
  }
  return n | (f << 8);
}

/* Record non-finite inputs in device stats. The device copy keeps the first
 * index complemented (atomicMax of ~index), so an all-zero struct is "none";
 * quant_stats_fetch_cuda turns it back into quant_stats. */
__device__ __forceinline__ void qd_note_nonfinite(quant_stats *st, int n, int64_t first) {
  if (!st || !n) return;
  atomicAdd(reinterpret_cast<unsigned long long *>(&st->n_nonfinite), (unsigned long long)n);
  atomicMax(reinterpret_cast<unsigned long long *>(&st->first_index), ~(unsigned long long)first);
}

/* ---------------------------------------------------------------- fp8-block division */

/* Whether Markstein's division by s is exact for every BF16 x (see top). */
__device__ __forceinline__ bool qd_mdiv_ok(float s) { return s >= 0x1p-90f && s <= 0x1p126f; }

/* RN(x / s) given r = RN(1/s), for s with qd_mdiv_ok(s). */
__device__ __forceinline__ float qd_mdiv(float x, float s, float r) {
  float q = __fmul_rn(x, r);
  float rem = __fmaf_rn(s, q, -x);
  return __fmaf_rn(-rem, r, q);
}

/* E4M3 codes of two values (RNE, satfinite), hardware or software. */
__device__ __forceinline__ uint32_t qd_e4m3x2(float a, float b, int soft) {
  if (soft) return (uint32_t)fmt_e4m3_from_f32(a) | ((uint32_t)fmt_e4m3_from_f32(b) << 8);
  return (uint32_t)__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
}

/* 4 packed bf16 (w0, w1) → 4 E4M3 codes of f(x), in order, two codes a
 * conversion (the encoders below differ only in f). */
template <class F>
__device__ __forceinline__ uint32_t qd_enc_fp8_map4(uint32_t w0, uint32_t w1, int soft, F f) {
  const float y0 = f(__uint_as_float(w0 << 16)), y1 = f(__uint_as_float(w0 & 0xffff0000u));
  const float y2 = f(__uint_as_float(w1 << 16)), y3 = f(__uint_as_float(w1 & 0xffff0000u));
  return qd_e4m3x2(y0, y1, soft) | (qd_e4m3x2(y2, y3, soft) << 16);
}

/* 16 packed bf16 → 16 E4M3 codes of f(x), in order. */
template <class F>
__device__ __forceinline__ uint4 qd_enc_fp8_map(uint4 a, uint4 b, int soft, F f) {
  return make_uint4(qd_enc_fp8_map4(a.x, a.y, soft, f), qd_enc_fp8_map4(a.z, a.w, soft, f),
                    qd_enc_fp8_map4(b.x, b.y, soft, f), qd_enc_fp8_map4(b.z, b.w, soft, f));
}

/* 16 packed bf16 → 16 E4M3 codes of x/s by Markstein's division, r = RN(1/s),
 * s with qd_mdiv_ok(s) (kernels that hoist r call this directly). */
__device__ __forceinline__ uint4 qd_enc_fp8_mdiv(uint4 a, uint4 b, float s, float r, int soft) {
  return qd_enc_fp8_map(a, b, soft, [=](float x) { return qd_mdiv(x, s, r); });
}

/* The same by IEEE division (any s; the slow path of the two). */
__device__ __forceinline__ uint4 qd_enc_fp8_fdiv(uint4 a, uint4 b, float s, int soft) {
  return qd_enc_fp8_map(a, b, soft, [=](float x) { return __fdiv_rn(x, s); });
}

/* 16 packed bf16 → 16 E4M3 codes of x/s (fp8-block, exact division). */
__device__ __forceinline__ uint4 qd_enc_fp8_div(uint4 a, uint4 b, float s, int soft) {
  return qd_mdiv_ok(s) ? qd_enc_fp8_mdiv(a, b, s, __frcp_rn(s), soft) : qd_enc_fp8_fdiv(a, b, s, soft);
}

/* 4 packed bf16 → 4 E4M3 codes of x/s (fp8-block, exact division; the same
 * arithmetic as qd_enc_fp8_div, for kernels that hold 4 values a lane). */
__device__ __forceinline__ uint32_t qd_enc_fp8_div4(uint2 h, float s, int soft) {
  if (qd_mdiv_ok(s)) {
    const float r = __frcp_rn(s);
    return qd_enc_fp8_map4(h.x, h.y, soft, [=](float x) { return qd_mdiv(x, s, r); });
  }
  return qd_enc_fp8_map4(h.x, h.y, soft, [=](float x) { return __fdiv_rn(x, s); });
}

/* 16 packed bf16 → 16 E4M3 codes of x·m (MXFP8: m = 2^(127-e), exact). */
__device__ __forceinline__ uint4 qd_enc_fp8_mul(uint4 a, uint4 b, float m, int soft) {
  return qd_enc_fp8_map(a, b, soft, [=](float x) { return __fmul_rn(x, m); });
}

/* ---------------------------------------------------------------- E2M1 */

/* Bias of qd_e2m1_mag_biased: true code = result − QD_E2M1_BIAS (mod 2^32). */
#define QD_E2M1_BIAS ((22u << 23) + 254u)

/* E2M1 magnitude code (RNE, satfinite) of y >= 0 (or +Inf), plus QD_E2M1_BIAS;
 * the bias is removed once per packed word (the packing is linear). */
__device__ __forceinline__ uint32_t qd_e2m1_mag_biased(float y) {
  const float yc = fminf(y, 6.0f);
  const uint32_t eb = max(__float_as_uint(yc) & 0x7f800000u, 0x3f800000u);
  const float s = __fadd_rn(yc, __fmul_rn(__uint_as_float(eb), 4194304.0f)); /* + 2^(e+22) */
  return __float_as_uint(s) - eb + (eb >> 22);
}

/* Sign bits of 8 packed bf16 (4 words) at bit 3 of each nibble. */
__device__ __forceinline__ uint32_t qd_signs8(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
  uint32_t lo = __byte_perm(w0, w1, 0x7531), hi = __byte_perm(w2, w3, 0x7531); /* high bytes */
  uint32_t even = __byte_perm(lo, hi, 0x6420), odd = __byte_perm(lo, hi, 0x7531);
  return ((even >> 4) & 0x08080808u) | (odd & 0x80808080u);
}

/* Packed E2M1 codes (RNE) of 8 packed bf16 values times enc (enc > 0). */
__device__ __forceinline__ uint32_t qd_enc_e2m1_8(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3, float enc) {
  const uint32_t w[4] = {w0, w1, w2, w3};
  uint32_t acc = 0, bias = 0;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    acc += qd_e2m1_mag_biased(__fmul_rn(fabsf(__uint_as_float(w[i] << 16)), enc)) << (8 * i);
    acc += qd_e2m1_mag_biased(__fmul_rn(fabsf(__uint_as_float(w[i] & 0xffff0000u)), enc)) << (8 * i + 4);
    bias += (QD_E2M1_BIAS << (8 * i)) + (QD_E2M1_BIAS << (8 * i + 4));
  }
  return (acc - bias) | qd_signs8(w0, w1, w2, w3);
}

/* E2M1 code (stochastic rounding, formats.h's rule) of y >= 0 (or +Inf) and
 * one 32-bit draw r; branch-free: the neighbours below/above y are a grid
 * step 2^(e-1) apart, so the probability is an exact product. */
__device__ __forceinline__ uint32_t qd_e2m1_sr_mag(float y, uint32_t r) {
  if (__float_as_uint(y) >= 0x40c00000u) return 7u;
  const uint32_t eb = max(__float_as_uint(y) & 0x7f800000u, 0x3f800000u);
  const float m = __fmul_rn(__uint_as_float(eb), 4194304.0f);
  const float s = __fadd_rz(y, m);                            /* y rounded down to the grid */
  const uint32_t lo = __float_as_uint(s) - __float_as_uint(m) + ((eb >> 22) - 254u);
  const float vlo = __fsub_rn(s, m);                          /* exact */
  const float p = __fmul_rn(__fsub_rn(y, vlo), __uint_as_float(0x7f800000u - eb)); /* / step, exact */
  const float t = __fmul_rn((float)(r >> 8), 5.9604644775390625e-08f);
  return t < p ? lo + 1u : lo;
}

/* Philox4x32-10 word 0, as qf_philox_u32 (formats.h), with the round keys
 * recomputed from the seed (loop-invariant: the compiler hoists them). */
__device__ __forceinline__ uint32_t qd_philox(uint64_t seed, uint64_t index, uint64_t offset) {
  uint32_t c0 = (uint32_t)index, c1 = (uint32_t)(index >> 32);
  uint32_t c2 = (uint32_t)offset, c3 = (uint32_t)(offset >> 32);
#pragma unroll
  for (int i = 0; i < 10; i++) {
    const uint32_t k0 = (uint32_t)seed + (uint32_t)i * 0x9E3779B9u;
    const uint32_t k1 = (uint32_t)(seed >> 32) + (uint32_t)i * 0xBB67AE85u;
    const uint32_t h0 = __umulhi(0xD2511F53u, c0), l0 = 0xD2511F53u * c0;
    const uint32_t h1 = __umulhi(0xCD9E8D57u, c2), l1 = 0xCD9E8D57u * c2;
    c0 = h1 ^ c1 ^ k0, c2 = h0 ^ c3 ^ k1, c1 = l1, c3 = l0;
  }
  return c0;
}

/* Packed E2M1 codes (stochastic rounding) of 8 packed bf16 times enc (> 0);
 * idx0 = flat index of the first value (the RNG counter). */
__device__ __forceinline__ uint32_t qd_enc_e2m1_sr_8(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3, float enc,
                                                     uint64_t seed, uint64_t offset, uint64_t idx0) {
  const uint32_t w[4] = {w0, w1, w2, w3};
  uint32_t acc = 0;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float y0 = __fmul_rn(fabsf(__uint_as_float(w[i] << 16)), enc);
    float y1 = __fmul_rn(fabsf(__uint_as_float(w[i] & 0xffff0000u)), enc);
    acc |= qd_e2m1_sr_mag(y0, qd_philox(seed, idx0 + 2 * i, offset)) << (8 * i);
    acc |= qd_e2m1_sr_mag(y1, qd_philox(seed, idx0 + 2 * i + 1, offset)) << (8 * i + 4);
  }
  return acc | qd_signs8(w0, w1, w2, w3);
}

/* ---------------------------------------------------------------- indexing */

/* n / d for n < 2^31 by one multiply: mul = floor(2^sh / d) + 1, sh = 31 +
 * ceil(log2 d) (error n·(mul − 2^sh/d)/2^sh < 2^-ceil(log2 d) <= 1/d). */
struct qd_fastdiv {
  uint64_t mul;
  int sh;
};

/* Host: the constants of division by d (1 <= d < 2^31). */
static inline qd_fastdiv qd_fastdiv_make(uint32_t d) {
  int l = 0;
  while ((1ull << l) < d) l++;
  qd_fastdiv f;
  f.sh = 31 + l;
  f.mul = ((1ull << f.sh) / d) + 1;
  return f;
}

/* n / d (n < 2^31). */
__device__ __forceinline__ uint32_t qd_div(uint32_t n, qd_fastdiv f) {
  return (uint32_t)(((uint64_t)n * f.mul) >> f.sh); /* n·mul < 2^31·2^32 */
}
