/* ops_cuda_util.cuh — what the CUDA files of the operators (ops_cuda.cu,
 * ops_norm_cuda.cu, ops_router_cuda.cu) share: the checked-call macros, launch
 * sizes, warp reductions, and the SwiGLU activation (also used by the fused
 * gate/up GEMM of gemm_small_cuda.cu, which must give ops_swiglu_forward_cuda's
 * bits). Included by .cu files only. */
#ifndef RLRUN_OPS_CUDA_UTIL_CUH
#define RLRUN_OPS_CUDA_UTIL_CUH

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

extern "C" {
#include "kernels/common.h" /* C linkage for rl_errf & co. (common.h has no guards) */
}
#include "kernels/formats.h"
#include "kernels/ops.h"

#define OCHECK(call)                                                                      \
  do {                                                                                    \
    cudaError_t err_ = (call);                                                            \
    if (err_ != cudaSuccess)                                                              \
      return rl_errf(e, RL_EXIT_HARDWARE, "%s (%s:%d): %s: %s", __func__, __FILE__, __LINE__, \
                     #call, cudaGetErrorString(err_));                                    \
  } while (0)
#define OLAUNCH() OCHECK(cudaGetLastError())
#define FULL 0xffffffffu

enum { WARPS = 8, NTHR = WARPS * 32, LSM_THREADS = 512, DW_ROWS = 128, ROPE_MAX_HALF = 256 };

/* Blocks for n items at per items per block, capped for grid-stride loops. */
static inline unsigned grid_for(int64_t n, int per) {
  int64_t b = (n + per - 1) / per;
  if (b < 1) b = 1;
  return (unsigned)(b > (1 << 20) ? (1 << 20) : b);
}

/* 1 when p is aligned to a bytes. */
static inline int aligned(const void *p, unsigned a) { return ((uintptr_t)p % a) == 0; }

/* ---------------------------------------------------------------- device helpers */

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
  return v;
}

/* silu(g) = g / (1 + e^−g) in FP32 — the one definition of ops_swiglu_forward_cuda
 * and gemm_small_bf16_swiglu_cuda: both files are compiled with the same nvcc flags
 * (no fast math), so the same expression gives the same bits in both. */
__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }
/* silu(g) · u of four elements, each product rounded once (the SwiGLU forwards' element). */
__device__ __forceinline__ float4 swiglu4(float4 g, float4 u) {
  return make_float4(__fmul_rn(silu(g.x), u.x), __fmul_rn(silu(g.y), u.y), __fmul_rn(silu(g.z), u.z),
                     __fmul_rn(silu(g.w), u.w));
}

/* FP32 of BF16 bits. */
__device__ __forceinline__ float bf(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

/* Typed loads and stores of the operators that take FP32 or BF16 operands (the
 * training forward's GEMM outputs stay BF16, kernels/ops.h "_bx"): FP32 of
 * element i, four elements as a float4 (16-byte aligned FP32, 8-byte aligned
 * BF16), and stores rounding to BF16 by RNE as ops_bf16_from_f32_cuda does.
 * FP32 of a BF16 value is exact, so an operator gives the same bits on a BF16
 * operand as on its FP32 copy. */
__device__ __forceinline__ float ldf(const float *p, size_t i) { return p[i]; }
__device__ __forceinline__ float ldf(const uint16_t *p, size_t i) { return bf(p[i]); }
__device__ __forceinline__ float4 ldf4(const float *p, size_t i) { return *reinterpret_cast<const float4 *>(p + i); }
__device__ __forceinline__ float4 ldf4(const uint16_t *p, size_t i) {
  const uint2 u = *reinterpret_cast<const uint2 *>(p + i);
  return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                     __uint_as_float(u.y & 0xffff0000u));
}
__device__ __forceinline__ void stf(float *p, size_t i, float v) { p[i] = v; }
__device__ __forceinline__ void stf(uint16_t *p, size_t i, float v) { p[i] = fmt_bf16_from_f32(v); }
/* Four values as RNE BF16, packed in element order (x in the low half of .x). */
__device__ __forceinline__ uint2 bf16x4(float4 v) {
  return make_uint2((uint32_t)fmt_bf16_from_f32(v.x) | ((uint32_t)fmt_bf16_from_f32(v.y) << 16),
                    (uint32_t)fmt_bf16_from_f32(v.z) | ((uint32_t)fmt_bf16_from_f32(v.w) << 16));
}
/* Four values at p + i: a float4, or four RNE BF16 packed into one 8-byte store. */
__device__ __forceinline__ void stf4(float *p, size_t i, float4 v) { *reinterpret_cast<float4 *>(p + i) = v; }
__device__ __forceinline__ void stf4(uint16_t *p, size_t i, float4 v) { *reinterpret_cast<uint2 *>(p + i) = bf16x4(v); }

/* rstd from a row's FP32 sum of squares, finished in double as the CPU does. */
__device__ __forceinline__ float rstd_of(float ss, int dim, float eps) {
  return (float)(1.0 / sqrt((double)ss / dim + (double)eps));
}

/* One (token, head) of the QK path, by the warp's lane `lane`: yr = rope(w ⊙
 * xr·rstd) over head_dim d with the token's RoPE row (cs, sn: d/2 each);
 * returns rstd. The one definition the full forward (qk_fwd_kernel) and the
 * rollout engine's fused decode kernel both use, so their bits agree. */
template <typename TX, typename TY>
__device__ __forceinline__ float qk_norm_rope_head(TY *yr, const TX *xr, const float *w, const float *cs,
                                                   const float *sn, int d, float eps, int lane) {
  const int half = d / 2;
  if (d == 128) { /* every load of the lane (x, w, the RoPE row) issued before the sum waits on the first: one
                   * memory round trip instead of two; the loop below's operations, in its order */
    float x[4], wv[4], c[2], sv[2];
#pragma unroll
    for (int k = 0; k < 4; k++) x[k] = ldf(xr, lane + 32 * k), wv[k] = w[lane + 32 * k];
#pragma unroll
    for (int k = 0; k < 2; k++) c[k] = cs[lane + 32 * k], sv[k] = sn[lane + 32 * k];
    float ss = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) ss += x[k] * x[k];
    const float s = rstd_of(warp_sum(ss), d, eps);
#pragma unroll
    for (int k = 0; k < 2; k++) { /* i = lane + 32k, i + half = lane + 32(k + 2) */
      const int i = lane + 32 * k;
      const float a = __fmul_rn(wv[k], __fmul_rn(x[k], s)), b = __fmul_rn(wv[k + 2], __fmul_rn(x[k + 2], s));
      stf(yr, i, __fsub_rn(__fmul_rn(a, c[k]), __fmul_rn(b, sv[k])));
      stf(yr, i + half, __fadd_rn(__fmul_rn(b, c[k]), __fmul_rn(a, sv[k])));
    }
    return s;
  }
  float ss = 0;
#pragma unroll 4 /* head_dim 128: a lane's four loads in flight at once (same sum order) */
  for (int i = lane; i < d; i += 32) ss += ldf(xr, i) * ldf(xr, i);
  const float s = rstd_of(warp_sum(ss), d, eps);
#pragma unroll 2
  for (int i = lane; i < half; i += 32) {
    float a = __fmul_rn(w[i], __fmul_rn(ldf(xr, i), s)), b = __fmul_rn(w[i + half], __fmul_rn(ldf(xr, i + half), s));
    float c = cs[i], sn_ = sn[i];
    stf(yr, i, __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, sn_)));
    stf(yr, i + half, __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, sn_)));
  }
  return s;
}

#endif
