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
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include <type_traits>

#include "kernels/formats.h" /* fmt_bf16_from_f32 / fmt_bf16_to_f32: the one BF16 codec */

extern "C" {
#include "kernels/common.h"
}

#define RCK_CHUNK 128 /* KV positions per split (fixed: results never depend on the batch) */
#define RCK_THREADS 128
#define RCK_WARPS (RCK_THREADS / 32)
#define RCK_FULL 0xffffffffu
#define RCK_LOG2E 1.4426950408889634f

/* Row r of the step: the attention key (after QK-norm + RoPE) and V of slot[r]
 * at position pos[r], both rounded to BF16. */
__global__ void rck_kv_write_kernel(uint16_t *kc, uint16_t *vc, const float *k, const float *v, const int32_t *slot,
                                    const int32_t *pos, int64_t max_len, int kvd) {
  int r = blockIdx.x;
  int64_t base = ((int64_t)slot[r] * max_len + pos[r]) * kvd;
  for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
    kc[base + i] = fmt_bf16_from_f32(k[(int64_t)r * kvd + i]);
    vc[base + i] = fmt_bf16_from_f32(v[(int64_t)r * kvd + i]);
  }
}

/* Launch status as an rl_err (RL_EXIT_HARDWARE naming the kernel). */
static int rck_check(const char *what, rl_err *e) {
  cudaError_t s = cudaGetLastError();
  if (s == cudaSuccess) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "rollout (CUDA): kernel %s failed to launch: %s", what, cudaGetErrorString(s));
}

extern "C" int rck_kv_write(uint16_t *kc, uint16_t *vc, const float *k, const float *v, const int32_t *slot,
                            const int32_t *pos, int n, int64_t max_len, int kvd, cudaStream_t st, rl_err *e) {
  if (n <= 0) return 0;
  rck_kv_write_kernel<<<n, RCK_THREADS, 0, st>>>(kc, vc, k, v, slot, pos, max_len, kvd);
  return rck_check("kv_write", e);
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

/* Butterfly sum / max over a warp: every lane ends with the same value, the
 * order fixed by the lane pattern. */
static __device__ __forceinline__ float rck_wsum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(RCK_FULL, v, o);
  return v;
}
static __device__ __forceinline__ float rck_wmax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(RCK_FULL, v, o));
  return v;
}

/* Partial attention of split z = blockIdx.z of row r = blockIdx.x, KV head
 * blockIdx.y, for the grp query heads of its group: positions
 * [z·CHUNK, min(len, (z+1)·CHUNK)). head_dim = 32·DPL: lane l owns dims
 * [l·DPL, (l+1)·DPL). Warp w takes positions in runs of U (4w … 4w+3, then
 * 16 further) for the scores and for P·V; the warps' partial sums are added
 * in warp order. Writes acc[hd]
 * (Σ p_j v_j), and (max, Σ p_j) per (row, query head, split).
 * Shared: scores [grp][CHUNK], q [grp][hd], partial P·V [WARPS][grp][hd]. */
template <int DPL>
__global__ void rck_attn_split_kernel(float *pacc, float *pml, const float *q, const uint16_t *kc, const uint16_t *vc,
                                      const int32_t *slot, const int32_t *len, int nq, int nkv, int64_t max_len,
                                      int n_split, float sl2) {
  constexpr int HD = 32 * DPL;
  extern __shared__ float sm[];
  const int r = blockIdx.x, kh = blockIdx.y, z = blockIdx.z, grp = nq / nkv, kvd = nkv * HD;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  float *sc = sm, *qs = sm + grp * RCK_CHUNK, *part = qs + grp * HD;
  const int64_t p0 = (int64_t)z * RCK_CHUNK;
  int n = (int)(len[r] - p0 < RCK_CHUNK ? len[r] - p0 : RCK_CHUNK);
  if (n <= 0) { /* an empty split: contributes nothing */
    for (int g = 0; g < grp; g++) {
      int64_t o = ((int64_t)r * nq + kh * grp + g) * n_split + z;
      for (int d = threadIdx.x; d < HD; d += blockDim.x) pacc[o * HD + d] = 0.0f;
      if (threadIdx.x == 0) pml[2 * o] = -INFINITY, pml[2 * o + 1] = 0.0f;
    }
    return;
  }
  const uint16_t *kb = kc + ((int64_t)slot[r] * max_len + p0) * kvd + kh * HD + lane * DPL;
  const uint16_t *vb = vc + ((int64_t)slot[r] * max_len + p0) * kvd + kh * HD + lane * DPL;
  for (int i = threadIdx.x; i < grp * HD; i += blockDim.x)
    qs[i] = rck_bf16r(q[((int64_t)r * nq + kh * grp) * HD + i]);
  __syncthreads();
  /* scores: s_j = q · k_j in FP32 (lane partials in dim order, then the butterfly) */
  constexpr int U = 4; /* positions in flight per warp: their loads overlap */
  for (int j0 = w * U; j0 < n; j0 += RCK_WARPS * U) {
    float kx[U][DPL];
#pragma unroll
    for (int u = 0; u < U; u++)
      if (j0 + u < n) rck_load<DPL>(kb + (int64_t)(j0 + u) * kvd, kx[u]);
      else
#pragma unroll
        for (int i = 0; i < DPL; i++) kx[u][i] = 0.0f;
    for (int g = 0; g < grp; g++) {
#pragma unroll
      for (int u = 0; u < U; u++) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) s = fmaf(qs[g * HD + lane * DPL + i], kx[u][i], s);
        s = rck_wsum(s);
        if (lane == 0 && j0 + u < n) sc[g * RCK_CHUNK + j0 + u] = s;
      }
    }
  }
  __syncthreads();
  /* softmax of each head's scores: warp g % WARPS owns head g */
  for (int g = w; g < grp; g += RCK_WARPS) {
    float *s = sc + g * RCK_CHUNK, mx = -INFINITY, sum = 0.0f;
    for (int j = lane; j < n; j += 32) mx = fmaxf(mx, s[j]);
    mx = rck_wmax(mx);
    const float mxs = mx * sl2;
    for (int j = lane; j < n; j += 32) {
      float p = exp2f(fmaf(s[j], sl2, -mxs));
      sum += p;
      s[j] = rck_bf16r(p); /* P enters P·V in BF16 */
    }
    sum = rck_wsum(sum);
    if (lane == 0) {
      int64_t o = ((int64_t)r * nq + kh * grp + g) * n_split + z;
      pml[2 * o] = mx * sl2, pml[2 * o + 1] = sum; /* the max in log2 units */
    }
  }
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
        if (j0 + u < n) rck_load<DPL>(vb + (int64_t)(j0 + u) * kvd, vx[u]);
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

/* out[r, h, :] and out_b (BF16) from the splits of (row r = blockIdx.x, head
 * h = blockIdx.y), splits combined in index order (maxima in log2 units). */
__global__ void rck_attn_combine_kernel(float *out, uint16_t *out_b, const float *pacc, const float *pml, int nq,
                                        int hd, int n_split) {
  int r = blockIdx.x, h = blockIdx.y;
  int64_t o = ((int64_t)r * nq + h) * n_split;
  float M = -INFINITY;
  for (int z = 0; z < n_split; z++) M = fmaxf(M, pml[2 * (o + z)]);
  float L = 0.0f;
  for (int z = 0; z < n_split; z++)
    if (pml[2 * (o + z) + 1] > 0.0f) L = __fadd_rn(L, __fmul_rn(pml[2 * (o + z) + 1], exp2f(pml[2 * (o + z)] - M)));
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int z = 0; z < n_split; z++)
      if (pml[2 * (o + z) + 1] > 0.0f) acc = __fadd_rn(acc, __fmul_rn(pacc[(o + z) * hd + d], exp2f(pml[2 * (o + z)] - M)));
    float y = __fdiv_rn(acc, L);
    out[((int64_t)r * nq + h) * hd + d] = y;
    if (out_b) out_b[((int64_t)r * nq + h) * hd + d] = fmt_bf16_from_f32(y);
  }
}

template <int DPL>
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
  rck_attn_split_kernel<DPL><<<dim3(n, nkv, n_split), RCK_THREADS, shm, st>>>(pacc, pml, q, kc, vc, slot, len, nq, nkv,
                                                                              max_len, n_split, sl2);
  return rck_check("attn_split", e);
}

extern "C" int rck_decode_attention(float *out, uint16_t *out_b, const float *q, const uint16_t *kc,
                                    const uint16_t *vc, const int32_t *slot, const int32_t *len, int n, int nq,
                                    int nkv, int hd, int64_t max_len, int n_split, float *pacc, float *pml,
                                    cudaStream_t st, rl_err *e) {
  if (n <= 0) return 0;
  if (nq % nkv || (hd != 32 && hd != 64 && hd != 128 && hd != 256))
    return rl_errf(e, RL_EXIT_USAGE,
                   "rollout (CUDA): decode attention needs head_dim 32, 64, 128 or 256 and n_q %% n_kv == 0 (got %d, "
                   "%d/%d); use device: cpu for this model",
                   hd, nq, nkv);
  const float sl2 = RCK_LOG2E / sqrtf((float)hd);
  int rc = hd == 32    ? rck_attn_launch<1>(pacc, pml, q, kc, vc, slot, len, n, nq, nkv, max_len, n_split, sl2, st, e)
           : hd == 64  ? rck_attn_launch<2>(pacc, pml, q, kc, vc, slot, len, n, nq, nkv, max_len, n_split, sl2, st, e)
           : hd == 128 ? rck_attn_launch<4>(pacc, pml, q, kc, vc, slot, len, n, nq, nkv, max_len, n_split, sl2, st, e)
                       : rck_attn_launch<8>(pacc, pml, q, kc, vc, slot, len, n, nq, nkv, max_len, n_split, sl2, st, e);
  if (rc) return rc;
  rck_attn_combine_kernel<<<dim3(n, nq), RCK_THREADS, 0, st>>>(out, out_b, pacc, pml, nq, hd, n_split);
  return rck_check("attn_combine", e);
}

/* Splits of a cache of max_len positions. */
extern "C" int rck_n_split(int64_t max_len) { return (int)((max_len + RCK_CHUNK - 1) / RCK_CHUNK); }
