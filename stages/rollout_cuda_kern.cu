/* rollout_cuda_kern.cu — the kernels of the CUDA rollout engine
 * (stages/rollout_cuda.c): the KV-cache write of a step's rows and the
 * decode attention (one query row per sequence against its own cached K/V,
 * split over the KV length, combined in a fixed order: deterministic and
 * independent of which slot a sequence sits in or how many rows a step has).
 *
 * Numerics follow the tensor-core attention of the full forward
 * (kernels/ops_attn_tc_cuda.cu), so rollout and trainer log-probs differ only
 * by summation order: q and the cached keys and values are BF16 (RNE), the
 * scores and the softmax are FP32 (exp2 of the log2e-scaled score), the row
 * sum adds the FP32 probabilities, and P is rounded to BF16 before P·V with
 * FP32 accumulation. */
#include <pthread.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "kernels/formats.h" /* fmt_bf16_from_f32 / fmt_bf16_to_f32: the one BF16 codec */
#include "kernels/ops_cuda_util.cuh" /* qk_norm_rope_head (the full forward's QK path), warp_sum / warp_max */
#include "kernels/ptx_util.cuh"   /* cp.async */
#include "kernels/quant_cuda_dev.cuh" /* the fp8-block activation encoder (o's input, rck_qk_in.q8) */
#include "stages/rollout_cuda_kern.h"
extern "C" {
#include "kernels/device.h" /* DEVICE_MAX_GPUS */
}

extern "C" int ops_pdl(void); /* kernels/ops.h (a C header): RLRUN_OPS_PDL */

#define RCK_CHUNK 128 /* KV positions per split (fixed: results never depend on the batch) */
#define RCK_THREADS 128
#define RCK_WARPS (RCK_THREADS / 32)
#define RCK_LOG2E 1.4426950408889634f

/* Where (slot s, KV head h, position p) starts in a cache [slot][n_kv][max_len][hd]:
 * head-major, so one head's positions are contiguous (a decode CTA of (row, KV
 * head) streams them in one run). */
static __host__ __device__ __forceinline__ int64_t rck_kv_at(int64_t s, int h, int64_t p, int nkv, int64_t max_len,
                                                             int hd) {
  return ((s * nkv + h) * max_len + p) * hd;
}

/* Row r of the step: the attention key (after QK-norm + RoPE) and V of slot[r]
 * at position pos[r], both rounded to BF16. */
template <typename T>
__global__ void rck_kv_write_kernel(uint16_t *kc, uint16_t *vc, const T *k, const T *v, const int32_t *slot,
                                    const int32_t *pos, int64_t max_len, int nkv, int hd) {
  const int r = blockIdx.x, kvd = nkv * hd;
  for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
    const int64_t at = rck_kv_at(slot[r], i / hd, pos[r], nkv, max_len, hd) + i % hd;
    kc[at] = fmt_bf16_from_f32(ldf(k, (int64_t)r * kvd + i));
    vc[at] = fmt_bf16_from_f32(ldf(v, (int64_t)r * kvd + i));
  }
}

/* The same, 8 elements (16 bytes of the cache) a thread: head_dim a multiple of
 * 8 and k, v 16-byte aligned (rck_kv8_ok). */
__device__ __forceinline__ uint4 rck_bf16x8(const float *p) {
  const float4 a = *reinterpret_cast<const float4 *>(p), b = *reinterpret_cast<const float4 *>(p + 4);
  return make_uint4((uint32_t)fmt_bf16_from_f32(a.x) | (uint32_t)fmt_bf16_from_f32(a.y) << 16,
                    (uint32_t)fmt_bf16_from_f32(a.z) | (uint32_t)fmt_bf16_from_f32(a.w) << 16,
                    (uint32_t)fmt_bf16_from_f32(b.x) | (uint32_t)fmt_bf16_from_f32(b.y) << 16,
                    (uint32_t)fmt_bf16_from_f32(b.z) | (uint32_t)fmt_bf16_from_f32(b.w) << 16);
}
__device__ __forceinline__ uint4 rck_bf16x8(const uint16_t *p) { return *reinterpret_cast<const uint4 *>(p); }
template <typename T>
__global__ void rck_kv_write8_kernel(uint16_t *kc, uint16_t *vc, const T *k, const T *v, const int32_t *slot,
                                     const int32_t *pos, int n, int64_t max_len, int nkv, int hd) {
  const int kvd = nkv * hd, per = kvd / 8;
  const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= (int64_t)n * per) return;
  const int r = (int)(j / per), i = (int)(j % per) * 8;
  const int64_t at = rck_kv_at(slot[r], i / hd, pos[r], nkv, max_len, hd) + i % hd;
  *reinterpret_cast<uint4 *>(kc + at) = rck_bf16x8(k + (int64_t)r * kvd + i);
  *reinterpret_cast<uint4 *>(vc + at) = rck_bf16x8(v + (int64_t)r * kvd + i);
}
static bool rck_kv8_ok(const void *k, const void *v, const void *kc, const void *vc, int hd) {
  return hd % 8 == 0 && (uintptr_t)k % 16 == 0 && (uintptr_t)v % 16 == 0 && (uintptr_t)kc % 16 == 0 &&
         (uintptr_t)vc % 16 == 0;
}

/* Launch status as an rl_err (RL_EXIT_HARDWARE naming the kernel). */
static int rck_check(const char *what, rl_err *e) {
  cudaError_t s = cudaGetLastError();
  if (s == cudaSuccess) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "rollout (CUDA): kernel %s failed to launch: %s", what, cudaGetErrorString(s));
}

extern "C" int rck_kv_write(uint16_t *kc, uint16_t *vc, const float *k, const float *v, const int32_t *slot,
                            const int32_t *pos, int n, int64_t max_len, int nkv, int hd, cudaStream_t st,
                            rl_err *e) {
  if (n <= 0) return 0;
  if (rck_kv8_ok(k, v, kc, vc, hd)) { /* the same bytes, 16 a thread */
    const int64_t t = (int64_t)n * nkv * hd / 8;
    rck_kv_write8_kernel<float><<<(unsigned)((t + 255) / 256), 256, 0, st>>>(kc, vc, k, v, slot, pos, n, max_len, nkv, hd);
  } else {
    rck_kv_write_kernel<float><<<n, RCK_THREADS, 0, st>>>(kc, vc, k, v, slot, pos, max_len, nkv, hd);
  }
  return rck_check("kv_write", e);
}

extern "C" int rck_kv_write_b(uint16_t *kc, uint16_t *vc, const uint16_t *k, const uint16_t *v, const int32_t *slot,
                              const int32_t *pos, int n, int64_t max_len, int nkv, int hd, cudaStream_t st,
                              rl_err *e) {
  if (n <= 0) return 0;
  if (rck_kv8_ok(k, v, kc, vc, hd)) { /* the same bytes, 16 a thread */
    const int64_t t = (int64_t)n * nkv * hd / 8;
    rck_kv_write8_kernel<uint16_t><<<(unsigned)((t + 255) / 256), 256, 0, st>>>(kc, vc, k, v, slot, pos, n, max_len, nkv, hd);
  } else {
    rck_kv_write_kernel<uint16_t><<<n, RCK_THREADS, 0, st>>>(kc, vc, k, v, slot, pos, max_len, nkv, hd);
  }
  return rck_check("kv_write", e);
}

/* tok[i] = the token sampled for row map[i] of the step before (its
 * sampler_out, `stride` int32 apart, token first) where map[i] >= 0. */
__global__ void rck_step_tokens_kernel(int32_t *tok, const int32_t *map, const int32_t *prev, int stride, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && map[i] >= 0) tok[i] = prev[(int64_t)map[i] * stride];
}
extern "C" int rck_step_tokens(int32_t *tok, const int32_t *map, const int32_t *prev, int stride, int n, cudaStream_t st,
                               rl_err *e) {
  if (n <= 0) return 0;
  rck_step_tokens_kernel<<<(n + 255) / 256, 256, 0, st>>>(tok, map, prev, stride, n);
  return rck_check("step_tokens", e);
}

/* The exact mode's log-probs (rollout_cuda.c rc_exact_logp): the sampled
 * tokens out of the samples (rows of `stride` int32, the token first), and the
 * trainer's FP32 log-probs into their logp field (doubles, `lstride` apart). */
__global__ void rck_sample_ids_kernel(int32_t *tgt, const int32_t *samples, int stride, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) tgt[i] = samples[(int64_t)i * stride];
}
__global__ void rck_sample_put_logp_kernel(double *logp, int lstride, const float *lp, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) logp[(int64_t)i * lstride] = (double)lp[i];
}
extern "C" int rck_sample_ids(int32_t *tgt, const int32_t *samples, int stride, int n, cudaStream_t st, rl_err *e) {
  if (n <= 0) return 0;
  rck_sample_ids_kernel<<<(n + 255) / 256, 256, 0, st>>>(tgt, samples, stride, n);
  return rck_check("sample_ids", e);
}
extern "C" int rck_sample_put_logp(double *logp, int lstride, const float *lp, int n, cudaStream_t st, rl_err *e) {
  if (n <= 0) return 0;
  rck_sample_put_logp_kernel<<<(n + 255) / 256, 256, 0, st>>>(logp, lstride, lp, n);
  return rck_check("sample_put_logp", e);
}

/* The decode step's QK path and cache write in one launch, one warp per
 * (row, head) over n rows × (nq + 2·nkv) heads: query heads → q =
 * rope(q_norm(qr)); key heads → k = rope(k_norm(kr)) (FP32, then its BF16
 * into the cache at (slot[r], pos[r])); value heads → BF16 of v into the
 * cache. The same arithmetic as ops_qk_norm_rope_forward_tab_cuda twice and
 * rck_kv_write (qk_norm_rope_head is the forward's own), in one kernel. */
__global__ void rck_qkv_post_kernel(float *q, float *k, uint16_t *kc, uint16_t *vc, const float *qr, const float *kr,
                                    const float *v, const float *wq, const float *wk, const float *cs, const float *sn,
                                    const int32_t *slot, const int32_t *pos, int n, int nq, int nkv, int hd,
                                    int64_t max_len, float eps) {
  pdl_launch_dependents(); /* the decode attention (a programmatic dependent) may start on the older cache rows */
  pdl_wait();              /* launched as a dependent itself (ops_pdl): nothing touched before the grid before ends */
  const int lane = threadIdx.x & 31, heads = nq + 2 * nkv, half = hd / 2;
  const int64_t wi = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (wi >= (int64_t)n * heads) return;
  const int r = (int)(wi / heads), j = (int)(wi % heads);
  const float *c = cs + (size_t)r * half, *s = sn + (size_t)r * half;
  if (j < nq) {
    const size_t o = ((size_t)r * nq + j) * hd;
    qk_norm_rope_head(q + o, qr + o, wq, c, s, hd, eps, lane);
    return;
  }
  if (j < nq + nkv) {
    const int h = j - nq;
    const size_t o = ((size_t)r * nkv + h) * hd;
    qk_norm_rope_head(k + o, kr + o, wk, c, s, hd, eps, lane);
    __syncwarp(); /* the warp's k row is written before its lanes read it back */
    const int64_t at = rck_kv_at(slot[r], h, pos[r], nkv, max_len, hd);
    for (int i = lane; i < hd; i += 32) kc[at + i] = fmt_bf16_from_f32(k[o + i]);
  } else {
    const int h = j - nq - nkv;
    const size_t o = ((size_t)r * nkv + h) * hd;
    const int64_t at = rck_kv_at(slot[r], h, pos[r], nkv, max_len, hd);
    for (int i = lane; i < hd; i += 32) vc[at + i] = fmt_bf16_from_f32(v[o + i]);
  }
}

extern "C" int rck_qkv_post(float *q, float *k, uint16_t *kc, uint16_t *vc, const float *qr, const float *kr,
                            const float *v, const float *wq, const float *wk, const float *cs, const float *sn,
                            const int32_t *slot, const int32_t *pos, int n, int nq, int nkv, int hd, int64_t max_len,
                            float eps, cudaStream_t st, rl_err *e) {
  if (n <= 0) return 0;
  const int64_t warps = (int64_t)n * (nq + 2 * nkv);
  cudaLaunchAttribute at[1];
  const cudaLaunchConfig_t cfg = pdl_launch_cfg(at, dim3((unsigned)((warps + 7) / 8)), dim3(256), 0, st, ops_pdl());
  if (cudaLaunchKernelEx(&cfg, rck_qkv_post_kernel, q, k, kc, vc, qr, kr, v, wq, wk, cs, sn, slot, pos, n, nq, nkv, hd,
                         max_len, eps) != cudaSuccess)
    return rck_check("qkv_post (launch)", e);
  return rck_check("qkv_post", e);
}

/* DPL consecutive BF16 values (DPL·2-byte aligned) as floats, in one load. */
template <int DPL>
static __device__ __forceinline__ void rck_load(const uint16_t *p, float *out) {
  if constexpr (DPL == 1) {
    out[0] = fmt_bf16_to_f32(p[0]);
  } else {
    using V = typename std::conditional<DPL == 2, uint32_t, typename std::conditional<DPL == 4, uint2, uint4>::type>::type;
    V v = *reinterpret_cast<const V *>(p);
    const uint16_t *h = reinterpret_cast<const uint16_t *>(&v);
#pragma unroll
    for (int i = 0; i < DPL; i++) out[i] = fmt_bf16_to_f32(h[i]);
  }
}

static __device__ __forceinline__ float rck_bf16r(float x) { return fmt_bf16_to_f32(fmt_bf16_from_f32(x)); }

/* A split past the row's length contributes nothing: zero partial sums, max
 * −inf, sum 0 for each of the grp query heads of (row r, KV head kh). */
static __device__ __forceinline__ void rck_empty_split(float *pacc, float *pml, int hd, int grp, int r, int nq, int kh,
                                                       int n_split, int z) {
  for (int g = 0; g < grp; g++) {
    int64_t o = ((int64_t)r * nq + kh * grp + g) * n_split + z;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) pacc[o * hd + d] = 0.0f;
    if (threadIdx.x == 0) pml[2 * o] = -INFINITY, pml[2 * o + 1] = 0.0f;
  }
}

/* The softmax of each of the grp heads' n scores sc[g·ld + j] (warp g % WARPS
 * owns head g), in place: P = exp2(s·sl2 − max·sl2) in FP32, rounded to BF16
 * (P enters P·V in BF16); (the max in log2 units, Σ P in FP32) to pml of
 * (row r, query head kh·grp + g, split z), and to pms[2g], pms[2g + 1] too
 * when pms is given. */
static __device__ __forceinline__ void rck_softmax_heads(float *sc, int ld, int grp, int n, float sl2, float *pml, int r,
                                                         int nq, int kh, int n_split, int z, float *pms = nullptr) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  for (int g = w; g < grp; g += RCK_WARPS) {
    float *s = sc + g * ld, mx = -INFINITY, sum = 0.0f;
    for (int j = lane; j < n; j += 32) mx = fmaxf(mx, s[j]);
    mx = warp_max(mx);
    const float mxs = mx * sl2;
    for (int j = lane; j < n; j += 32) {
      float p = exp2f(fmaf(s[j], sl2, -mxs));
      sum += p;
      s[j] = rck_bf16r(p);
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      int64_t o = ((int64_t)r * nq + kh * grp + g) * n_split + z;
      pml[2 * o] = mxs, pml[2 * o + 1] = sum;
      if (pms) pms[2 * g] = mxs, pms[2 * g + 1] = sum; /* a shared-memory copy (the staged kernel's combine) */
    }
  }
}

/* Partial attention of split z = blockIdx.z of row r = blockIdx.x, KV head
 * blockIdx.y, for the grp query heads of its group: positions
 * [z·CHUNK, min(len, (z+1)·CHUNK)). head_dim = 32·DPL: lane l owns dims
 * [l·DPL, (l+1)·DPL). Warp w takes positions in runs of U (U·w … U·w+U−1,
 * then every 4U further) for the scores and for P·V; the warps' partial sums
 * are added in warp order. Writes acc[hd]
 * (Σ p_j v_j), and (max, Σ p_j) per (row, query head, split).
 * Shared: scores [grp][CHUNK], q [grp][hd], partial P·V [WARPS][grp][hd]. */
template <int DPL, int U>
__global__ void rck_attn_split_kernel(float *pacc, float *pml, const float *q, const uint16_t *kc, const uint16_t *vc,
                                      const int32_t *slot, const int32_t *len, int nq, int nkv, int64_t max_len,
                                      int n_split, float sl2) {
  constexpr int HD = 32 * DPL;
  extern __shared__ float sm[];
  const int r = blockIdx.x, kh = blockIdx.y, z = blockIdx.z, grp = nq / nkv;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  float *sc = sm, *qs = sm + grp * RCK_CHUNK, *part = qs + grp * HD;
  const int64_t p0 = (int64_t)z * RCK_CHUNK;
  int n = (int)(len[r] - p0 < RCK_CHUNK ? len[r] - p0 : RCK_CHUNK);
  if (n <= 0) return rck_empty_split(pacc, pml, HD, grp, r, nq, kh, n_split, z);
  const uint16_t *kb = kc + rck_kv_at(slot[r], kh, p0, nkv, max_len, HD) + lane * DPL;
  const uint16_t *vb = vc + rck_kv_at(slot[r], kh, p0, nkv, max_len, HD) + lane * DPL;
  for (int i = threadIdx.x; i < grp * HD; i += blockDim.x)
    qs[i] = rck_bf16r(q[((int64_t)r * nq + kh * grp) * HD + i]);
  __syncthreads();
  /* scores: s_j = q · k_j in FP32 (lane partials in dim order, then the butterfly) */
  /* U positions in flight per warp (their loads overlap: the kernel waits on
   * memory latency, not bandwidth, at a decode step's lengths) */
  for (int j0 = w * U; j0 < n; j0 += RCK_WARPS * U) {
    float kx[U][DPL];
#pragma unroll
    for (int u = 0; u < U; u++)
      if (j0 + u < n) rck_load<DPL>(kb + (int64_t)(j0 + u) * HD, kx[u]);
      else
#pragma unroll
        for (int i = 0; i < DPL; i++) kx[u][i] = 0.0f;
    for (int g = 0; g < grp; g++) {
#pragma unroll
      for (int u = 0; u < U; u++) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) s = fmaf(qs[g * HD + lane * DPL + i], kx[u][i], s);
        s = warp_sum(s);
        if (lane == 0 && j0 + u < n) sc[g * RCK_CHUNK + j0 + u] = s;
      }
    }
  }
  __syncthreads();
  rck_softmax_heads(sc, RCK_CHUNK, grp, n, sl2, pml, r, nq, kh, n_split, z);
  __syncthreads();
  /* P·V: warp w over its positions, lanes over dims; then the warps in order */
  for (int g = 0; g < grp; g++) {
    float acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.0f;
    for (int j0 = w * U; j0 < n; j0 += RCK_WARPS * U) {
      float vx[U][DPL];
#pragma unroll
      for (int u = 0; u < U; u++)
        if (j0 + u < n) rck_load<DPL>(vb + (int64_t)(j0 + u) * HD, vx[u]);
        else
#pragma unroll
          for (int i = 0; i < DPL; i++) vx[u][i] = 0.0f;
#pragma unroll
      for (int u = 0; u < U; u++) {
        const float p = j0 + u < n ? sc[g * RCK_CHUNK + j0 + u] : 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] = fmaf(p, vx[u][i], acc[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < DPL; i++) part[(w * grp + g) * HD + lane * DPL + i] = acc[i];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < grp * HD; i += blockDim.x) {
    const int g = i / HD, d = i % HD;
    float a = part[g * HD + d];
    for (int ww = 1; ww < RCK_WARPS; ww++) a += part[(ww * grp + g) * HD + d];
    pacc[(((int64_t)r * nq + kh * grp + g) * n_split + z) * HD + d] = a;
  }
}

/* Sum v[i] over the 32 lanes for NV = 2^b values at once (reduce-scatter
 * butterfly: NV/2 + NV/4 + … + 1 exchanges, then the rest of the full
 * reduction, instead of 5 per value). Lane l ends with the sum of value
 * (l >> (5 − b)) — the value whose index bits are the lane's top b bits. Each
 * exchange adds the two partners' partials the same way on both sides (a + b
 * == b + a), so every lane holding a value holds the same bits. */
template <int NV, int O = 16>
static __device__ __forceinline__ float rck_multi_sum(const float (&v)[NV], int lane) {
  static_assert(NV >= 1 && (NV == 1 || NV <= 2 * O) && (NV & (NV - 1)) == 0, "NV: a power of two <= 32");
  if constexpr (NV == 1) {
    float x = v[0];
#pragma unroll
    for (int o = O; o > 0; o >>= 1) x += __shfl_xor_sync(FULL, x, o);
    return x;
  } else {
    constexpr int H = NV / 2;
    const bool up = lane & O;
    float h[H]; /* the half this lane keeps, plus the partner's copy of it */
#pragma unroll
    for (int i = 0; i < H; i++) {
      const float send = up ? v[i] : v[i + H], keep = up ? v[i + H] : v[i];
      h[i] = keep + __shfl_xor_sync(FULL, send, O);
    }
    return rck_multi_sum<H, O / 2>(h, lane);
  }
}

/* o's fp8-block activation of heads h0 … h0+nh−1 of row r (head_dim 128: a head
 * is one 128-K block) from their BF16 output out_b, which this CTA wrote (a
 * barrier before): quant_fp8_block_act_cuda's arithmetic — 8 lanes a block, 16
 * elements a lane, the integer amax of |bf16| bits, shuffle max, the block
 * scale, the division encoder; Inf/NaN in a block: scale NaN, codes 0. Whole
 * warps take part (the shuffles); lanes past the heads do nothing visible. */
static __device__ __forceinline__ void rck_q8_heads(const uint16_t *out_b, const rck_qk_in &qk, int r, int nq, int h0,
                                                    int nh, int nthreads) {
  for (int t = threadIdx.x; t < (8 * nh + 31) / 32 * 32; t += nthreads) {
    const int g = t >> 3, l = t & 7;
    const bool in = g < nh;
    const int64_t e0 = ((int64_t)r * nq + h0 + g) * 128 + 16 * l;
    uint4 xa = make_uint4(0, 0, 0, 0), xb = xa;
    if (in) xa = *reinterpret_cast<const uint4 *>(out_b + e0), xb = *reinterpret_cast<const uint4 *>(out_b + e0 + 8);
    uint32_t m = qd_fold16(qd_amax_bits16(xa, xb));
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (!in) continue;
    const bool bad = m >= 0x7f80u;
    const float sc = bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(qd_bits_to_amax(m), qk.q8_ue8m0);
    *reinterpret_cast<uint4 *>(qk.q8 + e0) = bad ? make_uint4(0, 0, 0, 0) : qd_enc_fp8_div(xa, xb, sc, qk.q8_soft);
    if (l == 0) qk.q8s[(int64_t)(h0 + g) * qk.q8_ld + r] = sc;
  }
}

/* out[r, h, :] and out_b (BF16) from the splits of (row r, head h), splits
 * combined in index order (maxima in log2 units); threads d0, d0 + step, … of
 * head_dim. */
/* The split combine's maximum M and weight sum L = Σ sum_z · 2^(max_z − M), in
 * split order, over the (max, sum) pairs ml[z·ms], ml[z·ms + 1] of splits 0 …
 * n − 1 (maxima in log2 units; empty splits, sum 0, skipped) — for the combine
 * kernel and the staged kernel's fused combine alike. */
static __device__ __forceinline__ void rck_splits_max_sum(const float *ml, int ms, int n, float *M, float *L) {
  float m = -INFINITY, l = 0.0f;
  for (int z = 0; z < n; z++) m = fmaxf(m, ml[z * ms]);
  for (int z = 0; z < n; z++)
    if (ml[z * ms + 1] > 0.0f) l = __fadd_rn(l, __fmul_rn(ml[z * ms + 1], exp2f(ml[z * ms] - m)));
  *M = m, *L = l;
}

static __device__ __forceinline__ void rck_combine_head(float *out, uint16_t *out_b, const float *pacc, const float *pml,
                                                        int r, int h, int nq, int hd, int n_split, int d0, int step) {
  int64_t o = ((int64_t)r * nq + h) * n_split;
  float M, L;
  rck_splits_max_sum(pml + 2 * o, 2, n_split, &M, &L);
  for (int d = d0; d < hd; d += step) {
    float acc = 0.0f;
    for (int z = 0; z < n_split; z++)
      if (pml[2 * (o + z) + 1] > 0.0f) acc = __fadd_rn(acc, __fmul_rn(pacc[(o + z) * hd + d], exp2f(pml[2 * (o + z)] - M)));
    float y = __fdiv_rn(acc, L);
    out[((int64_t)r * nq + h) * hd + d] = y;
    if (out_b) out_b[((int64_t)r * nq + h) * hd + d] = fmt_bf16_from_f32(y);
  }
}

/* The combine as its own launch: block (row r, head h); o's fp8 activation of
 * the head too when qk.q8 (the rest of qk unused). */
__global__ void rck_attn_combine_kernel(float *out, uint16_t *out_b, const float *pacc, const float *pml, int nq,
                                        int hd, int n_split, const rck_qk_in qk) {
  pdl_launch_dependents(); /* the o projection (a programmatic dependent) may fetch its weights */
  rck_combine_head(out, out_b, pacc, pml, blockIdx.x, blockIdx.y, nq, hd, n_split, threadIdx.x, blockDim.x);
  if (qk.q8) {
    __syncthreads(); /* the head's out_b is written */
    rck_q8_heads(out_b, qk, blockIdx.x, nq, blockIdx.y, 1, blockDim.x);
  }
}

/* The staged decode attention (the default; RLRUN_DECODE_ATTN=split runs
 * rck_attn_split_kernel instead). Splits of RCK_SCHUNK = 64 positions; a CTA
 * (row r, KV head kh) takes `per` consecutive splits (blockIdx.z picks which)
 * and streams their K and V rows through a ring of `ring` shared-memory slots
 * of 64 positions each (K_z, V_z, K_z+1, …: the next split's rows land while
 * this one's are used), filled by bulk copies (one a slot, completing on the
 * slot's mbarrier) or by cp.async (16 bytes a copy, one commit group a slot).
 * A split: scores from K in shared memory (the GRP·U dot products of U
 * positions reduced in one butterfly, rck_multi_sum), the softmax of each head
 * (as the two-phase kernel: FP32, exp2, P rounded to BF16, the FP32 sum), and
 * P·V with every V row read once for all GRP heads (warps over positions, then
 * the warps' partials in warp order) to pacc / pml. When one CTA has all the
 * splits of its (row, KV head) it also combines them (the combine kernel's
 * arithmetic, in split order) into out — a thread's (at most 2) values
 * together, their pacc partials loaded 4 splits at a time before any is used
 * (one round trip to L2 for both instead of one a split and a value: each was
 * ~1 µs with the cache's bulk copies in flight, session 26's timeline);
 * otherwise rck_attn_combine_kernel does. Neither `per` nor `ring` changes a
 * bit of the output: each split's sums and the combine are the same whichever
 * CTA computes them (per = 1, ring = 2 is the earlier one-split-a-CTA kernel).
 * head_dim = 32·DPL; GRP query heads per KV head. Shared: the ring's mbarriers (128 bytes), the ring
 * [ring][RCK_SCHUNK][HD] BF16, scores [GRP][RCK_SCHUNK], q [GRP][HD], partial
 * P·V [WARPS][GRP][HD] and a combining CTA's (max, sum) [RCK_PML_CAP][GRP][2]
 * (FP32). */
#ifdef RCK_TRACE /* the per-CTA timeline of rollout_cuda_kern.h (RCK_TR_*) */
__device__ unsigned long long rck_trace_buf[RCK_TR_CTAS * RCK_TR_N];
static __device__ __forceinline__ void rck_tr(int slot, int what) { /* what: 0 clock, 1 global timer, 2 SM id */
  const unsigned cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  if (threadIdx.x != 0 || cta >= RCK_TR_CTAS) return;
  unsigned long long v;
  if (what == 1) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(v));
  else if (what == 2) { unsigned sm; asm volatile("mov.u32 %0, %%smid;" : "=r"(sm)); v = sm; }
  else v = clock64();
  rck_trace_buf[(size_t)cta * RCK_TR_N + slot] = v;
}
extern "C" int rck_trace_read(uint64_t *host, size_t ctas) {
  return cudaMemcpyFromSymbol(host, rck_trace_buf, (ctas < RCK_TR_CTAS ? ctas : RCK_TR_CTAS) * RCK_TR_N * 8) != cudaSuccess;
}
extern "C" int rck_trace_clear(void) {
  void *p = NULL;
  return cudaGetSymbolAddress(&p, rck_trace_buf) != cudaSuccess || cudaMemset(p, 0, sizeof rck_trace_buf) != cudaSuccess;
}
#define RCK_TR(slot) rck_tr((slot), 0)
#define RCK_TR_AT(slot, what) rck_tr((slot), (what))
#define RCK_TR_SPLIT_AT(zz, step) ((zz) < 4 ? rck_tr(RCK_TR_SPLIT + 5 * (zz) + (step), 0) : (void)0) /* split zz's step */
#else
#define RCK_TR(slot) ((void)0)
#define RCK_TR_AT(slot, what) ((void)0)
#define RCK_TR_SPLIT_AT(zz, step) ((void)0)
#endif

#define RCK_SCHUNK 64
#define RCK_RING_MAX 4
#define RCK_PML_CAP 16 /* splits whose (max, sum) a combining CTA keeps in shared memory */
__host__ __device__ constexpr int rck_staged_smem(int dpl, int grp, int ring) {
  return 128 + ring * RCK_SCHUNK * 32 * dpl * 2 +
         (grp * RCK_SCHUNK + grp * 32 * dpl * (1 + RCK_WARPS) + RCK_PML_CAP * grp * 2) * 4 +
         2 * 32 * dpl * 2; /* the fused QK path's K and V rows of position len − 1 (BF16) */
}
/* Until at most ring − 1 of this thread's groups are in flight (ring 2 … 4). */
static __device__ __forceinline__ void rck_ring_wait(int ring) {
  if (ring == 2) cp_wait<1>();
  else if (ring == 3) cp_wait<2>();
  else cp_wait<3>();
}
template <int DPL, int GRP, bool L4 = false> /* L4: o's encode from shared memory (qk.q8_lane4) */
__global__ void __launch_bounds__(RCK_THREADS) rck_attn_staged_kernel(float *out, uint16_t *out_b, float *pacc, float *pml,
                                                                     const float *q, const uint16_t *kc,
                                                                     const uint16_t *vc, const int32_t *slot,
                                                                     const int32_t *len, int nq, int nkv,
                                                                     int64_t max_len, int n_split, int per, int ring,
                                                                     float sl2, int pdl, int tma, int ef,
                                                                     const rck_qk_in qk) {
  constexpr int HD = 32 * DPL, C = RCK_SCHUNK, U = GRP >= 8 ? 32 / GRP : 8, NV = U * GRP, CPR = HD / 8;
  constexpr int LOGNV = NV == 32 ? 5 : NV == 16 ? 4 : 3, NT = RCK_THREADS, W = RCK_WARPS;
  static_assert(NV == 8 || NV == 16 || NV == 32, "U·GRP: 8, 16 or 32");
  extern __shared__ float4 rck_sm4[];
  uint64_t *bar = reinterpret_cast<uint64_t *>(rck_sm4); /* a ring slot's mbarrier (tma) */
  uint16_t *rb = reinterpret_cast<uint16_t *>(reinterpret_cast<char *>(rck_sm4) + 128);
  float *sc = reinterpret_cast<float *>(rb + ring * C * HD), *qs = sc + GRP * C, *part = qs + GRP * HD;
  float *pms = part + W * GRP * HD; /* [RCK_PML_CAP][GRP][2]: the combine's (max, sum) of each split */
  uint16_t *kvs = reinterpret_cast<uint16_t *>(pms + RCK_PML_CAP * GRP * 2); /* fused QK: K, V of row len − 1 */
  const int r = blockIdx.x, kh = blockIdx.y, lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  RCK_TR_AT(RCK_TR_GT0, 1), RCK_TR(RCK_TR_CLK0), RCK_TR_AT(RCK_TR_SM, 2);
  /* the QK path fused in: q, k normed and rotated here, row len − 1 written;
   * from FP32 rows (qr, kr, v) or BF16 ones (qb, kb, vb) */
  const bool fqk = qk.qr != nullptr || qk.qb != nullptr;
  const int64_t L = len[r];
  const int z0 = blockIdx.z * per, z1 = min(n_split, z0 + per), fused = per >= n_split;
  const int zl = max(z0, min(z1, (int)((L + C - 1) / C))); /* splits [z0, zl) hold positions */
  if (zl == z0 && !fused) { /* nothing but empty splits (after the kernel before: it may read pacc, pml) */
    if (pdl) pdl_wait();
    for (int z = zl; z < z1; z++) rck_empty_split(pacc, pml, HD, GRP, r, nq, kh, n_split, z);
    RCK_TR(RCK_TR_END), RCK_TR_AT(RCK_TR_GT1, 1);
    return;
  }
  const int64_t at = rck_kv_at(slot[r], kh, 0, nkv, max_len, HD);
  const uint16_t *kb = kc + at, *vb = vc + at; /* this head's positions, contiguous */
  const int nl = 2 * (zl - z0); /* loads: K then V of each split */
  /* load i into ring slot i % ring (`older`: positions before L − 1 only):
   * cp.async, one commit group each (empty past the last), or (tma) one bulk
   * copy by thread 0 completing on the slot's mbarrier, evict-first in L2 (ef):
   * the cache streams through once a step, the small tensors the kernels
   * around it share stay */
  const uint64_t pol = tma && ef ? l2_policy_evict_first() : 0;
  if (tma) {
    if (threadIdx.x == 0) {
      for (int k = 0; k < ring; k++) mbar_init(bar + k, 1);
      fence_mbar_init();
    }
    __syncthreads();
  }
  auto issue = [&](int i, bool older) {
    if (i < nl) {
      const int64_t p0 = (int64_t)(z0 + i / 2) * C;
      const int n = (int)min((int64_t)C, L - p0) - (older && p0 + C >= L);
      const uint16_t *src = ((i & 1) ? vb : kb) + p0 * HD;
      uint16_t *dst = rb + (i % ring) * C * HD;
      if (tma) {
        if (threadIdx.x == 0) {
          mbar_arrive_tx(bar + i % ring, (uint32_t)n * HD * 2);
          if (n > 0) {
            if (ef) bulk_g2s_hint(dst, src, (uint32_t)n * HD * 2, bar + i % ring, pol);
            else bulk_g2s(dst, src, (uint32_t)n * HD * 2, bar + i % ring);
          }
        }
      } else {
        for (int t = threadIdx.x; t < n * CPR; t += NT) cp_async16_all(smem_u32(dst) + 16 * t, src + 8 * t);
      }
    }
    if (!tma) cp_commit();
  };
  /* until load i has landed (for this thread: a __syncthreads makes it everyone's) */
  auto landed = [&](int i) {
    if (tma) mbar_wait(bar + i % ring, (uint32_t)(i / ring) & 1u);
    else rck_ring_wait(ring);
  };
  /* A programmatic dependent of the kernel that writes q and the cache rows
   * at L − 1 (rck_qkv_post; with the QK path fused, of the q/k/v GEMM, and this
   * kernel writes row L − 1 itself): the older rows are in place already, so
   * their copies start before griddepcontrol.wait; row L − 1 and q after it. */
  for (int i = 0; i < ring; i++) issue(i, pdl != 0 || fqk);
  if (pdl && fqk) pdl_wait(); /* the q/k/v GEMM's outputs are in place */
  RCK_TR(RCK_TR_ISSUED);
  if (pdl && !fqk) {
    pdl_wait();
    const int zn = (int)((L - 1) / C), in = 2 * (zn - z0); /* the loads that hold row L − 1 */
    for (int t = threadIdx.x; t < 2 * CPR; t += NT) {
      const int i = in + t / CPR;
      if (zn >= z0 && zn < zl && i < ring) {
        const int64_t row = (L - 1) * HD + (t % CPR) * 8;
        *reinterpret_cast<uint4 *>(rb + (i % ring) * C * HD + (L - 1 - (int64_t)zn * C) * HD + (t % CPR) * 8) =
            *reinterpret_cast<const uint4 *>(((i & 1) ? vb : kb) + row);
      }
    }
  }
  if (!fused)
    for (int z = zl; z < z1; z++) rck_empty_split(pacc, pml, HD, GRP, r, nq, kh, n_split, z);
  /* with the QK path fused: the CTA whose splits hold position len − 1 (one a
   * (row, KV head)) writes that row of the cache and keeps it (kvs) for its ring,
   * whose copies leave it out (`older`); every CTA norms and rotates its q heads.
   * rck_qkv_post_kernel's arithmetic (qk_norm_rope_head, the same BF16 roundings) */
  const int zn = (int)((L - 1) / C);
  const bool own = fqk && zn >= z0 && zn < zl;
  if (fqk) {
    const float *cr = qk.cs + (size_t)r * (HD / 2), *sr = qk.sn + (size_t)r * (HD / 2);
    for (int tk = w; tk < GRP + 2; tk += W) {
      if (tk < GRP) {
        float *qo = qs + tk * HD;
        const int64_t qo_at = ((int64_t)r * nq + kh * GRP + tk) * HD;
        if (qk.qb) qk_norm_rope_head(qo, qk.qb + qo_at, qk.wq, cr, sr, HD, qk.eps, lane);
        else qk_norm_rope_head(qo, qk.qr + qo_at, qk.wq, cr, sr, HD, qk.eps, lane);
        __syncwarp();
        for (int i = lane; i < HD; i += 32) qo[i] = rck_bf16r(qo[i]);
      } else if (own) {
        const int64_t at = rck_kv_at(slot[r], kh, L - 1, nkv, max_len, HD), o = ((int64_t)r * nkv + kh) * HD;
        uint16_t *dst = kvs + (tk - GRP) * HD;
        if (tk == GRP) {
          float *kf = part + (size_t)w * GRP * HD; /* this warp's P·V partial, free until the main loop */
          if (qk.qb) qk_norm_rope_head(kf, qk.kb + o, qk.wk, cr, sr, HD, qk.eps, lane);
          else qk_norm_rope_head(kf, qk.kr + o, qk.wk, cr, sr, HD, qk.eps, lane);
          __syncwarp();
          for (int i = lane; i < HD; i += 32) qk.kc[at + i] = dst[i] = fmt_bf16_from_f32(kf[i]);
        } else {
          if (qk.qb) { /* BF16 already: the same bits as rounding its exact FP32 copy. All of the
                        * lane's loads before its first store (one round trip, not DPL) */
            uint16_t vv[DPL];
#pragma unroll
            for (int t = 0; t < DPL; t++) vv[t] = qk.vb[o + lane + 32 * t];
#pragma unroll
            for (int t = 0; t < DPL; t++) qk.vc[at + lane + 32 * t] = dst[lane + 32 * t] = vv[t];
          }
          else
            for (int i = lane; i < HD; i += 32) qk.vc[at + i] = dst[i] = fmt_bf16_from_f32(qk.v[o + i]);
        }
      }
    }
  } else {
    for (int i = threadIdx.x; i < GRP * HD; i += NT) qs[i] = rck_bf16r(q[((int64_t)r * nq + kh * GRP) * HD + i]);
  }
  __syncthreads();
  RCK_TR(RCK_TR_QK);
  /* row len − 1 into the ring slot of chunk zn's K or V once it has landed */
  auto patch = [&](uint16_t *slot_base, const uint16_t *row) {
    for (int t = threadIdx.x; t < CPR; t += NT)
      *reinterpret_cast<uint4 *>(slot_base + (L - 1 - (int64_t)zn * C) * HD + 8 * t) =
          *reinterpret_cast<const uint4 *>(row + 8 * t);
    fence_proxy_async(); /* before a later bulk copy into the slot */
  };
  float qv[GRP][DPL];
#pragma unroll
  for (int g = 0; g < GRP; g++)
#pragma unroll
    for (int i = 0; i < DPL; i++) qv[g][i] = qs[g * HD + lane * DPL + i];
  for (int z = z0; z < zl; z++) {
    const int i = 2 * (z - z0), n = (int)min((int64_t)C, L - (int64_t)z * C);
    const uint16_t *ks = rb + (i % ring) * C * HD, *vs = rb + ((i + 1) % ring) * C * HD;
    landed(i);       /* this thread's K_z copies have landed … */
    if (own && z == zn) patch(const_cast<uint16_t *>(ks), kvs);
    __syncthreads(); /* … and everyone's */
    RCK_TR_SPLIT_AT(z - z0, 0);
    /* scores: warp w takes positions U·w … U·w+U−1, then every W·U further */
    for (int j0 = w * U; j0 < n; j0 += W * U) {
      float part_s[NV], kx[U][DPL];
#pragma unroll
      for (int u = 0; u < U; u++)
        if (j0 + u < n) rck_load<DPL>(ks + (j0 + u) * HD + lane * DPL, kx[u]);
        else
#pragma unroll
          for (int t = 0; t < DPL; t++) kx[u][t] = 0.0f;
#pragma unroll
      for (int g = 0; g < GRP; g++)
#pragma unroll
        for (int u = 0; u < U; u++) {
          float d = 0.0f;
#pragma unroll
          for (int t = 0; t < DPL; t++) d = fmaf(qv[g][t], kx[u][t], d);
          part_s[g * U + u] = d;
        }
      const float mine = rck_multi_sum<NV>(part_s, lane);
      const int idx = lane >> (5 - LOGNV), g = idx / U, u = idx % U;
      if ((lane & ((1 << (5 - LOGNV)) - 1)) == 0 && j0 + u < n) sc[g * C + j0 + u] = mine;
    }
    __syncthreads();
    RCK_TR_SPLIT_AT(z - z0, 1);
    issue(i + ring, fqk); /* K_z's slot is read: the load `ring` ahead goes there */
    rck_softmax_heads(sc, C, GRP, n, sl2, pml, r, nq, kh, n_split, z,
                      fused && z < RCK_PML_CAP ? pms + z * GRP * 2 : nullptr);
    landed(i + 1); /* V_z */
    if (own && z == zn) patch(const_cast<uint16_t *>(vs), kvs + HD);
    __syncthreads();
    RCK_TR_SPLIT_AT(z - z0, 2);
    /* P·V: warp w over its positions (each V row read once for every head), lanes over dims */
    float acc[GRP][DPL];
#pragma unroll
    for (int g = 0; g < GRP; g++)
#pragma unroll
      for (int t = 0; t < DPL; t++) acc[g][t] = 0.0f;
    for (int j = w; j < n; j += W) {
      float vx[DPL];
      rck_load<DPL>(vs + j * HD + lane * DPL, vx);
#pragma unroll
      for (int g = 0; g < GRP; g++) {
        const float pj = sc[g * C + j];
#pragma unroll
        for (int t = 0; t < DPL; t++) acc[g][t] = fmaf(pj, vx[t], acc[g][t]);
      }
    }
#pragma unroll
    for (int g = 0; g < GRP; g++)
#pragma unroll
      for (int t = 0; t < DPL; t++) part[(w * GRP + g) * HD + lane * DPL + t] = acc[g][t];
    __syncthreads();
    RCK_TR_SPLIT_AT(z - z0, 3);
    issue(i + 1 + ring, fqk); /* V_z's slot is read */
    for (int t = threadIdx.x; t < GRP * HD; t += NT) {
      const int g = t / HD, d = t % HD;
      float a = part[g * HD + d];
      for (int ww = 1; ww < W; ww++) a += part[(ww * GRP + g) * HD + d];
      pacc[(((int64_t)r * nq + kh * GRP + g) * n_split + z) * HD + d] = a;
    }
    RCK_TR_SPLIT_AT(z - z0, 4);
  }
  if (!tma) cp_wait<0>(); /* nothing left in flight (the trailing groups are empty) */
  pdl_launch_dependents(); /* only the combine is left: the o projection may fetch its weights */
  RCK_TR(RCK_TR_LOOP);
  if (!fused) {
    RCK_TR(RCK_TR_END), RCK_TR_AT(RCK_TR_GT1, 1);
    return;
  }
  __syncthreads(); /* every split's (max, sum) (written by lane 0 of the head's warp) is visible to the block */
  RCK_TR(RCK_TR_CMB_SYNC);
  /* splits past zl are empty (max −inf, sum 0): the combine skips them all the same. (max, sum)
   * from shared memory when every split's is there, each thread's pacc values (its own writes)
   * loaded ahead of their use */
  const bool in_sm = zl <= RCK_PML_CAP;
  const int ms = in_sm ? 2 * GRP : 2; /* stride between splits' (max, sum) */
  /* value t's output y = a / Ls into out, out_b and (o's encode from shared memory) part */
  auto store = [&](const int t, const float a, const float Ls) {
    const int g = t / HD, d = t % HD, h = kh * GRP + g;
    const float y = __fdiv_rn(a, Ls);
    if (t == 0) RCK_TR(RCK_TR_CMB_Y);
    out[((int64_t)r * nq + h) * HD + d] = y;
    if (out_b) out_b[((int64_t)r * nq + h) * HD + d] = fmt_bf16_from_f32(y);
    if (t == 0) RCK_TR(RCK_TR_CMB_ST);
    if (L4 && HD == 128 && qk.q8) /* the BF16 also into `part` (free: every warp is past its reads) */
      reinterpret_cast<uint16_t *>(part)[t] = fmt_bf16_from_f32(y);
  };
  constexpr int KT = (GRP * HD + NT - 1) / NT; /* values a thread */
  if constexpr (KT <= 2) {
    /* a thread's values together, their partials loaded 4 splits at a time before any
     * is used (one round trip a 4 splits for both, not one a split and a value): the
     * same operations, in the same order, for each value */
    constexpr int ZB = 4;
    float M[KT], Ls[KT], a[KT];
    const float *mlk[KT];
    int64_t pk[KT];
    bool in[KT];
#pragma unroll
    for (int k = 0; k < KT; k++) {
      const int t = threadIdx.x + k * NT;
      in[k] = KT * NT == GRP * HD || t < GRP * HD;
      const int g = in[k] ? t / HD : 0, d = t % HD, h = kh * GRP + g;
      const int64_t o = ((int64_t)r * nq + h) * n_split;
      mlk[k] = in_sm ? pms + 2 * g : pml + 2 * o;
      pk[k] = o * HD + d;
      a[k] = 0.0f;
      rck_splits_max_sum(mlk[k], ms, zl, &M[k], &Ls[k]);
    }
    for (int z0b = 0; z0b < zl; z0b += ZB) {
      float pv[ZB][KT];
#pragma unroll
      for (int j = 0; j < ZB; j++)
#pragma unroll
        for (int k = 0; k < KT; k++) pv[j][k] = in[k] && z0b + j < zl ? pacc[pk[k] + (int64_t)(z0b + j) * HD] : 0.0f;
#pragma unroll
      for (int j = 0; j < ZB; j++)
#pragma unroll
        for (int k = 0; k < KT; k++) {
          const int z = z0b + j;
          if (in[k] && z < zl && mlk[k][z * ms + 1] > 0.0f)
            a[k] = __fadd_rn(a[k], __fmul_rn(pv[j][k], exp2f(mlk[k][z * ms] - M[k])));
        }
    }
#pragma unroll
    for (int k = 0; k < KT; k++)
      if (in[k]) store(threadIdx.x + k * NT, a[k], Ls[k]);
  } else {
    for (int t = threadIdx.x; t < GRP * HD; t += NT) {
      const int g = t / HD, d = t % HD, h = kh * GRP + g;
      const int64_t o = ((int64_t)r * nq + h) * n_split;
      const float *ml = in_sm ? pms + 2 * g : pml + 2 * o;
      float M, Ls, a = 0.0f;
      rck_splits_max_sum(ml, ms, zl, &M, &Ls);
#pragma unroll 4
      for (int z = 0; z < zl; z++) {
        const float pv = pacc[(o + z) * HD + d];
        if (ml[z * ms + 1] > 0.0f) a = __fadd_rn(a, __fmul_rn(pv, exp2f(ml[z * ms] - M)));
      }
      store(t, a, Ls);
    }
  }
  RCK_TR(RCK_TR_COMBINE);
  if (HD == 128 && qk.q8) {
    __syncthreads(); /* the group's out_b rows are written */
    if constexpr (L4) { /* rck_q8_heads' bytes: a warp a head, 4 values a lane, from shared memory */
      const uint16_t *ob = reinterpret_cast<const uint16_t *>(part);
      for (int g = w; g < GRP; g += W) {
        const uint2 hv = *reinterpret_cast<const uint2 *>(ob + g * HD + 4 * lane);
        uint32_t m = qd_amax_bits4(hv);
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
        const bool bad = m >= 0x7f80u;
        const float bs = bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(qd_bits_to_amax(m), qk.q8_ue8m0);
        const int h = kh * GRP + g;
        *reinterpret_cast<uint32_t *>(qk.q8 + ((int64_t)r * nq + h) * 128 + 4 * lane) =
            bad ? 0u : qd_enc_fp8_div4(hv, bs, qk.q8_soft);
        if (lane == 0) qk.q8s[(int64_t)h * qk.q8_ld + r] = bs;
      }
    } else {
      rck_q8_heads(out_b, qk, r, nq, kh * GRP, GRP, NT);
    }
  }
  RCK_TR(RCK_TR_END), RCK_TR_AT(RCK_TR_GT1, 1);
}

template <int DPL, int U>
static int rck_attn_launch(float *pacc, float *pml, const float *q, const uint16_t *kc, const uint16_t *vc,
                           const int32_t *slot, const int32_t *len, int n, int nq, int nkv, int64_t max_len,
                           int n_split, float sl2, cudaStream_t st, rl_err *e) {
  int grp = nq / nkv;
  size_t shm = ((size_t)grp * RCK_CHUNK + (size_t)grp * 32 * DPL * (1 + RCK_WARPS)) * sizeof(float);
  if (shm > 48 * 1024)
    return rl_errf(e, RL_EXIT_USAGE,
                   "rollout (CUDA): decode attention for %d query heads per KV head and head_dim %d needs %zu bytes of "
                   "shared memory (max 49152)",
                   grp, 32 * DPL, shm);
  rck_attn_split_kernel<DPL, U><<<dim3(n, nkv, n_split), RCK_THREADS, shm, st>>>(pacc, pml, q, kc, vc, slot, len, nq, nkv,
                                                                              max_len, n_split, sl2);
  return rck_check("attn_split", e);
}

/* Positions in flight per warp: RLRUN_DECODE_ATTN_U (4, 8 or 16; a tuning
 * knob, read once) or 8. It sets which positions a warp sums in P·V, so the
 * bits of the output depend on it (never on the batch). */
static int rck_unroll_u;
static void rck_unroll_read(void) {
  static const int us[3] = {4, 8, 16};
  rck_unroll_u = rl_env_int_of("RLRUN_DECODE_ATTN_U", us, 3, 8);
}
static int rck_unroll(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT; /* one thread a GPU may ask first at once */
  pthread_once(&once, rck_unroll_read);
  return rck_unroll_u;
}

/* Which decode attention kernel: 0 the two-phase kernel (splits of RCK_CHUNK),
 * 1 the staged kernel (splits of RCK_SCHUNK, 1/2/4/8 query heads per KV head;
 * the default: 0.69 against 0.86 ms of a batch-64 decode step's attention on
 * the H100, 2026-12-05). RLRUN_DECODE_ATTN=split picks the two-phase kernel (read once);
 * rck_decode_attn_mode(m ≥ 0) sets it (tests), −1 asks. The choice sets the
 * split and the summation order, so the output bits depend on it (never on the
 * batch), and the split count rck_n_split gives. */
static int rck_attn_mode = -1;
static void rck_attn_mode_env(void) {
  static const char *const modes[2] = {"split", "staged"};
  rck_attn_mode = rl_env_word("RLRUN_DECODE_ATTN", modes, 2, 1);
}
extern "C" int rck_decode_attn_mode(int mode) {
  static pthread_once_t once = PTHREAD_ONCE_INIT; /* one thread a GPU may ask first at once */
  pthread_once(&once, rck_attn_mode_env);
  if (mode >= 0) rck_attn_mode = mode != 0;
  return rck_attn_mode;
}

/* 1 when the staged kernel runs for query groups of grp heads. */
static int rck_staged(int grp) { return rck_decode_attn_mode(-1) && (grp == 1 || grp == 2 || grp == 4 || grp == 8); }

/* The staged kernel's tuning — speed only, the output bits depend on none of
 * it (rollout_gpu_test checks each combination's bits): ring slots (2 …
 * RCK_RING_MAX; RLRUN_DECODE_ATTN_RING, default 0: 3 for steps of ≤ 64 rows,
 * 2 above — H200 2026-12-06, bf16 batch 64: ring 3 +1.5 %), splits a CTA
 * (RLRUN_DECODE_ATTN_PER; default 0: chosen by rck_per), programmatic
 * dependent launch (RLRUN_DECODE_ATTN_PDL, default 1) and bulk copies into
 * the ring (RLRUN_DECODE_ATTN_TMA, default 1; 0: cp.async) loading the cache
 * evict-first in L2 (RLRUN_DECODE_ATTN_EF, default 1), read once, or
 * rck_decode_attn_tune. Measured on the H100 (bench_decode_attn, bench_rollout,
 * 2026-12-05): ring 2 and 3 within noise at batch 64 and ring 2 ahead at
 * batch 256 (ring 4 leaves 3 CTAs an SM: slower), PDL +1.9 % a decode step,
 * bulk copies 1–3 % on the attention alone; 256 threads a CTA (the P·V dims
 * split over warp pairs, same sums) measured slower and went. Evict-first:
 * bf16 batch 64 +2.0 % and +2.7 %, batch 256 +2.7 % (two machines); an L2
 * prefetch of the layer's o / gate / up / down weights by the attention CTAs
 * on top measured 1.5–4 % slower, evict-first for the small GEMMs' weight
 * loads 0.8 % slower. */
static int rck_tune_ring = 0, rck_tune_per = -1, rck_tune_pdl = -1, rck_tune_tma = -1, rck_tune_ef = -1;
static void rck_tune_env(void) {
  static_assert(RCK_RING_MAX == 4, "the ring sizes RLRUN_DECODE_ATTN_RING takes");
  static const int rings[4] = {0, 2, 3, 4}; /* 0: by the rows (rck_staged_launch) */
  rck_tune_ef = rl_env_bool("RLRUN_DECODE_ATTN_EF", 1);
  rck_tune_tma = rl_env_bool("RLRUN_DECODE_ATTN_TMA", 1);
  rck_tune_pdl = rl_env_bool("RLRUN_DECODE_ATTN_PDL", 1);
  rck_tune_ring = rl_env_int_of("RLRUN_DECODE_ATTN_RING", rings, 4, 0);
  rck_tune_per = rl_env_int("RLRUN_DECODE_ATTN_PER", 0, 1 << 20, 0); /* 0: by rck_per */
}
static void rck_tune_read(void) { /* the environment once (one thread a GPU may ask first at once) */
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, rck_tune_env);
}
extern "C" void rck_decode_attn_tune(int per, int ring, int pdl, int tma, int ef) {
  rck_tune_read();
  rck_tune_per = per > 0 ? per : 0;
  rck_tune_ring = ring >= 2 && ring <= RCK_RING_MAX ? ring : 0;
  rck_tune_pdl = pdl != 0;
  rck_tune_tma = tma != 0;
  rck_tune_ef = ef != 0;
}

/* Splits a staged CTA takes: the knob when set, else as many as keep
 * n·nkv·⌈n_split / per⌉ CTAs within one wave (`fit` CTAs an SM on every SM),
 * so that a (row, KV head) is one CTA that also combines whenever the grid
 * allows it. */
static int rck_per(int n, int nkv, int n_split, int fit) {
  if (rck_tune_per) return rck_tune_per < n_split ? rck_tune_per : n_split;
  const int asked = device_sm_count(), sms = asked > 0 ? asked : 132; /* the current device's (kept per device) */
  const int64_t pairs = (int64_t)n * nkv, cap = (int64_t)(fit > 0 ? fit : 1) * sms;
  const int64_t groups = cap / pairs > 1 ? cap / pairs : 1; /* CTAs a (row, KV head) may have in the wave */
  return groups >= n_split ? 1 : (int)((n_split + groups - 1) / groups);
}

template <int DPL, int GRP, bool L4 = false>
static int rck_staged_launch(float *out, uint16_t *out_b, float *pacc, float *pml, const float *q, const uint16_t *kc,
                             const uint16_t *vc, const int32_t *slot, const int32_t *len, int n, int nq, int nkv,
                             int64_t max_len, int n_split, float sl2, cudaStream_t st, rl_err *e, int *fused,
                             const rck_qk_in &qk) {
  static_assert(rck_staged_smem(DPL, GRP, RCK_RING_MAX) <= 227 * 1024, "shared memory");
  rck_tune_read();
  const int ring = rck_tune_ring ? rck_tune_ring : n <= 64 ? 3 : 2, shm = rck_staged_smem(DPL, GRP, ring);
  /* per device (a thread drives one device at a time; the split rollout drives
   * several devices from as many threads): the attribute, CTAs an SM by ring */
  static int attr_set[DEVICE_MAX_GPUS] = {0}, fit[DEVICE_MAX_GPUS][RCK_RING_MAX + 1] = {{0}};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= DEVICE_MAX_GPUS)
    return rl_errf(e, RL_EXIT_HARDWARE, "rollout (CUDA): attn_staged: no current device below %d", DEVICE_MAX_GPUS);
  if (!attr_set[dev]) {
    constexpr int top = rck_staged_smem(DPL, GRP, RCK_RING_MAX);
    if (top > 48 * 1024 && cudaFuncSetAttribute(rck_attn_staged_kernel<DPL, GRP, L4>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, top) != cudaSuccess)
      return rck_check("attn_staged (shared memory attribute)", e);
    attr_set[dev] = 1;
  }
  if (!fit[dev][ring] && cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                             &fit[dev][ring], rck_attn_staged_kernel<DPL, GRP, L4>, RCK_THREADS, shm) != cudaSuccess)
    return rck_check("attn_staged (occupancy)", e);
  const int per = rck_per(n, nkv, n_split, fit[dev][ring]);
  *fused = per >= n_split;
  cudaLaunchAttribute at[1];
  const cudaLaunchConfig_t cfg =
      pdl_launch_cfg(at, dim3(n, nkv, (n_split + per - 1) / per), dim3(RCK_THREADS), shm, st, rck_tune_pdl);
  if (cudaLaunchKernelEx(&cfg, rck_attn_staged_kernel<DPL, GRP, L4>, out, out_b, pacc, pml, q, kc, vc, slot, len, nq, nkv,
                         max_len, n_split, per, ring, sl2, rck_tune_pdl, rck_tune_tma, rck_tune_ef, qk) != cudaSuccess)
    return rck_check("attn_staged (launch)", e);
  return rck_check("attn_staged", e);
}
static int rck_attention(float *out, uint16_t *out_b, const float *q, const uint16_t *kc, const uint16_t *vc,
                         const int32_t *slot, const int32_t *len, int n, int nq, int nkv, int hd, int64_t max_len,
                         int n_split, float *pacc, float *pml, cudaStream_t st, rl_err *e, const rck_qk_in &qk) {
  if (n <= 0) return 0;
  if (nq % nkv || (hd != 32 && hd != 64 && hd != 128 && hd != 256))
    return rl_errf(e, RL_EXIT_USAGE,
                   "rollout (CUDA): decode attention needs head_dim 32, 64, 128 or 256 and n_q %% n_kv == 0 (got %d, "
                   "%d/%d); use device: cpu for this model",
                   hd, nq, nkv);
  const float sl2 = RCK_LOG2E / sqrtf((float)hd);
  const int grp = nq / nkv;
  if (n_split != rck_n_split(max_len, grp))
    return rl_errf(e, RL_EXIT_USAGE, "rollout (CUDA): decode attention given %d splits of a %lld-position cache, "
                   "the kernel in force needs %d (the attention mode changed after the engine was made)",
                   n_split, (long long)max_len, rck_n_split(max_len, grp));
  if (qk.q8 && (hd != 128 || !out_b || !qk.q8s || qk.q8_ld < n))
    return rl_errf(e, RL_EXIT_USAGE, "rollout (CUDA): the attention writes o's fp8 activation only at head_dim 128 "
                   "with its BF16 output and scales of ≥ %d rows (got head_dim %d, ld %lld)", n, hd,
                   (long long)qk.q8_ld);
  int rc, fused = 0;
  if (rck_staged(grp)) {
#define RCK_S(D, G)                                                                                              \
  rck_staged_launch<D, G>(out, out_b, pacc, pml, q, kc, vc, slot, len, n, nq, nkv, max_len, n_split, sl2, st, e, \
                          &fused, qk)
#define RCK_SG(D) (grp == 1 ? RCK_S(D, 1) : grp == 2 ? RCK_S(D, 2) : grp == 4 ? RCK_S(D, 4) : RCK_S(D, 8))
#define RCK_S4(G)                                                                                                \
  rck_staged_launch<4, G, true>(out, out_b, pacc, pml, q, kc, vc, slot, len, n, nq, nkv, max_len, n_split, sl2, st, e, \
                                &fused, qk)
#define RCK_SG4 (grp == 1 ? RCK_S4(1) : grp == 2 ? RCK_S4(2) : grp == 4 ? RCK_S4(4) : RCK_S4(8))
    /* the o encode from shared memory: its own instantiations (head_dim 128), the default kernel untouched */
    const int l4 = hd == 128 && qk.q8 && qk.q8_lane4;
    rc = hd == 32 ? RCK_SG(1) : hd == 64 ? RCK_SG(2) : hd == 128 ? (l4 ? RCK_SG4 : RCK_SG(4)) : RCK_SG(8);
#undef RCK_SG4
#undef RCK_S4
#undef RCK_SG
#undef RCK_S
  } else { /* two-phase */
    if (qk.qr || qk.qb)
      return rl_errf(e, RL_EXIT_USAGE, "rollout (CUDA): the fused QK path needs the staged decode attention");
    const int u = rck_unroll();
#define RCK_L(D, U_) rck_attn_launch<D, U_>(pacc, pml, q, kc, vc, slot, len, n, nq, nkv, max_len, n_split, sl2, st, e)
#define RCK_LU(D) (u == 4 ? RCK_L(D, 4) : u == 16 ? RCK_L(D, 16) : RCK_L(D, 8))
    rc = hd == 32 ? RCK_LU(1) : hd == 64 ? RCK_LU(2) : hd == 128 ? RCK_LU(4) : RCK_LU(8);
#undef RCK_LU
#undef RCK_L
  }
  if (rc || fused) return rc;
  rck_attn_combine_kernel<<<dim3(n, nq), RCK_THREADS, 0, st>>>(out, out_b, pacc, pml, nq, hd, n_split, qk);
  return rck_check("attn_combine", e);
}

extern "C" int rck_decode_attention(float *out, uint16_t *out_b, const float *q, const uint16_t *kc,
                                    const uint16_t *vc, const int32_t *slot, const int32_t *len, int n, int nq,
                                    int nkv, int hd, int64_t max_len, int n_split, float *pacc, float *pml,
                                    cudaStream_t st, rl_err *e) {
  const rck_qk_in none = {};
  return rck_attention(out, out_b, q, kc, vc, slot, len, n, nq, nkv, hd, max_len, n_split, pacc, pml, st, e, none);
}

extern "C" int rck_decode_attention_qk(float *out, uint16_t *out_b, const rck_qk_in *qk, const int32_t *slot,
                                       const int32_t *len, int n, int nq, int nkv, int hd, int64_t max_len,
                                       int n_split, float *pacc, float *pml, cudaStream_t st, rl_err *e) {
  if (!qk || !qk->kc || !qk->vc || (qk->qb ? !qk->kb || !qk->vb : !qk->qr || !qk->kr || !qk->v))
    return rl_errf(e, RL_EXIT_USAGE, "rollout (CUDA): rck_decode_attention_qk without its q/k/v rows or cache");
  rck_qk_in q = *qk;
  q.q8_lane4 = rck_attn_q8_lane4(-1);
  return rck_attention(out, out_b, NULL, qk->kc, qk->vc, slot, len, n, nq, nkv, hd, max_len, n_split, pacc, pml, st, e,
                       q);
}

extern "C" int rck_attn_q8_lane4(int set) {
  static int cache = -1;
  return rl_env_switch_def(&cache, "RLRUN_DECODE_ATTN_Q8_LANE4", 1, set);
}

/* RLRUN_DECODE_QK_FUSED=0: the separate rck_qkv_post launch (read once). */
static int rck_qk_env = -1;
static void rck_qk_env_read(void) { rck_qk_env = rl_env_bool("RLRUN_DECODE_QK_FUSED", 1); }
extern "C" int rck_decode_qk_fused(int grp, int set) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, rck_qk_env_read);
  if (set >= 0) rck_qk_env = set != 0;
  return rck_qk_env && rck_staged(grp);
}

/* Splits of a cache of max_len positions. */
extern "C" int rck_n_split(int64_t max_len, int grp) {
  const int c = rck_staged(grp) ? RCK_SCHUNK : RCK_CHUNK;
  return (int)((max_len + c - 1) / c);
}
