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
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "kernels/formats.h" /* fmt_bf16_from_f32 / fmt_bf16_to_f32: the one BF16 codec */
#include "kernels/ops_cuda_util.cuh" /* qk_norm_rope_head (the full forward's QK path), warp_sum / warp_max */
#include "kernels/ptx_util.cuh"   /* cp.async */
#include "stages/rollout_cuda_kern.h"

#define RCK_CHUNK 128 /* KV positions per split (fixed: results never depend on the batch) */
#define RCK_THREADS 128
#define RCK_WARPS (RCK_THREADS / 32)
#define RCK_LOG2E 1.4426950408889634f

/* Row r of the step: the attention key (after QK-norm + RoPE) and V of slot[r]
 * at position pos[r], both rounded to BF16. */
template <typename T>
__global__ void rck_kv_write_kernel(uint16_t *kc, uint16_t *vc, const T *k, const T *v, const int32_t *slot,
                                    const int32_t *pos, int64_t max_len, int kvd) {
  int r = blockIdx.x;
  int64_t base = ((int64_t)slot[r] * max_len + pos[r]) * kvd;
  for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
    kc[base + i] = fmt_bf16_from_f32(ldf(k, (int64_t)r * kvd + i));
    vc[base + i] = fmt_bf16_from_f32(ldf(v, (int64_t)r * kvd + i));
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
  rck_kv_write_kernel<float><<<n, RCK_THREADS, 0, st>>>(kc, vc, k, v, slot, pos, max_len, kvd);
  return rck_check("kv_write", e);
}

extern "C" int rck_kv_write_b(uint16_t *kc, uint16_t *vc, const uint16_t *k, const uint16_t *v, const int32_t *slot,
                              const int32_t *pos, int n, int64_t max_len, int kvd, cudaStream_t st, rl_err *e) {
  if (n <= 0) return 0;
  rck_kv_write_kernel<uint16_t><<<n, RCK_THREADS, 0, st>>>(kc, vc, k, v, slot, pos, max_len, kvd);
  return rck_check("kv_write", e);
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
  const int lane = threadIdx.x & 31, heads = nq + 2 * nkv, half = hd / 2, kvd = nkv * hd;
  const int64_t wi = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (wi >= (int64_t)n * heads) return;
  const int r = (int)(wi / heads), j = (int)(wi % heads);
  const float *c = cs + (size_t)r * half, *s = sn + (size_t)r * half;
  if (j < nq) {
    const size_t o = ((size_t)r * nq + j) * hd;
    qk_norm_rope_head(q + o, qr + o, wq, c, s, hd, eps, lane);
    return;
  }
  const int64_t base = ((int64_t)slot[r] * max_len + pos[r]) * kvd;
  if (j < nq + nkv) {
    const int h = j - nq;
    const size_t o = ((size_t)r * nkv + h) * hd;
    qk_norm_rope_head(k + o, kr + o, wk, c, s, hd, eps, lane);
    __syncwarp(); /* the warp's k row is written before its lanes read it back */
    for (int i = lane; i < hd; i += 32) kc[base + h * hd + i] = fmt_bf16_from_f32(k[o + i]);
  } else {
    const int h = j - nq - nkv;
    const size_t o = ((size_t)r * nkv + h) * hd;
    for (int i = lane; i < hd; i += 32) vc[base + h * hd + i] = fmt_bf16_from_f32(v[o + i]);
  }
}

extern "C" int rck_qkv_post(float *q, float *k, uint16_t *kc, uint16_t *vc, const float *qr, const float *kr,
                            const float *v, const float *wq, const float *wk, const float *cs, const float *sn,
                            const int32_t *slot, const int32_t *pos, int n, int nq, int nkv, int hd, int64_t max_len,
                            float eps, cudaStream_t st, rl_err *e) {
  if (n <= 0) return 0;
  const int64_t warps = (int64_t)n * (nq + 2 * nkv);
  rck_qkv_post_kernel<<<(unsigned)((warps + 7) / 8), 256, 0, st>>>(q, k, kc, vc, qr, kr, v, wq, wk, cs, sn, slot, pos,
                                                                  n, nq, nkv, hd, max_len, eps);
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
 * (row r, query head kh·grp + g, split z). */
static __device__ __forceinline__ void rck_softmax_heads(float *sc, int ld, int grp, int n, float sl2, float *pml, int r,
                                                         int nq, int kh, int n_split, int z) {
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
  const int r = blockIdx.x, kh = blockIdx.y, z = blockIdx.z, grp = nq / nkv, kvd = nkv * HD;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  float *sc = sm, *qs = sm + grp * RCK_CHUNK, *part = qs + grp * HD;
  const int64_t p0 = (int64_t)z * RCK_CHUNK;
  int n = (int)(len[r] - p0 < RCK_CHUNK ? len[r] - p0 : RCK_CHUNK);
  if (n <= 0) return rck_empty_split(pacc, pml, HD, grp, r, nq, kh, n_split, z);
  const uint16_t *kb = kc + ((int64_t)slot[r] * max_len + p0) * kvd + kh * HD + lane * DPL;
  const uint16_t *vb = vc + ((int64_t)slot[r] * max_len + p0) * kvd + kh * HD + lane * DPL;
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

/* out[r, h, :] and out_b (BF16) from the splits of (row r, head h), splits
 * combined in index order (maxima in log2 units); threads d0, d0 + step, … of
 * head_dim. */
static __device__ __forceinline__ void rck_combine_head(float *out, uint16_t *out_b, const float *pacc, const float *pml,
                                                        int r, int h, int nq, int hd, int n_split, int d0, int step) {
  int64_t o = ((int64_t)r * nq + h) * n_split;
  float M = -INFINITY;
  for (int z = 0; z < n_split; z++) M = fmaxf(M, pml[2 * (o + z)]);
  float L = 0.0f;
  for (int z = 0; z < n_split; z++)
    if (pml[2 * (o + z) + 1] > 0.0f) L = __fadd_rn(L, __fmul_rn(pml[2 * (o + z) + 1], exp2f(pml[2 * (o + z)] - M)));
  for (int d = d0; d < hd; d += step) {
    float acc = 0.0f;
    for (int z = 0; z < n_split; z++)
      if (pml[2 * (o + z) + 1] > 0.0f) acc = __fadd_rn(acc, __fmul_rn(pacc[(o + z) * hd + d], exp2f(pml[2 * (o + z)] - M)));
    float y = __fdiv_rn(acc, L);
    out[((int64_t)r * nq + h) * hd + d] = y;
    if (out_b) out_b[((int64_t)r * nq + h) * hd + d] = fmt_bf16_from_f32(y);
  }
}

/* The combine as its own launch: block (row r, head h). */
__global__ void rck_attn_combine_kernel(float *out, uint16_t *out_b, const float *pacc, const float *pml, int nq,
                                        int hd, int n_split) {
  pdl_launch_dependents(); /* the o projection (a programmatic dependent) may fetch its weights */
  rck_combine_head(out, out_b, pacc, pml, blockIdx.x, blockIdx.y, nq, hd, n_split, threadIdx.x, blockDim.x);
}

/* The staged decode attention (the default; RLRUN_DECODE_ATTN=split runs
 * rck_attn_split_kernel instead): splits of
 * RCK_SCHUNK = 64 positions, whose K and V rows are all copied into shared
 * memory at the block's start (cp.async, 16 bytes a copy: the whole chunk in
 * flight at once, V still landing while the scores are computed), then the
 * same three phases from shared memory: scores (the GRP·U dot products of U
 * positions reduced in one butterfly, rck_multi_sum), the softmax of each
 * head (as the two-phase kernel: FP32, exp2, P rounded to BF16, the FP32 sum),
 * and P·V with every V row read once for all GRP heads (warps over positions,
 * then the warps' partials in warp order). head_dim = 32·DPL; GRP query heads
 * per KV head. Shared: K, V [RCK_SCHUNK][HD] BF16, scores [GRP][RCK_SCHUNK],
 * q [GRP][HD], partial P·V [WARPS][GRP][HD] (FP32). */
#define RCK_SCHUNK 64
__host__ __device__ constexpr int rck_staged_smem(int dpl, int grp) {
  return 2 * RCK_SCHUNK * 32 * dpl * 2 + (grp * RCK_SCHUNK + grp * 32 * dpl * (1 + RCK_WARPS)) * 4;
}
template <int DPL, int GRP>
static __device__ __forceinline__ void rck_staged_split(float *pacc, float *pml, const float *q, const uint16_t *kc,
                                                        const uint16_t *vc, const int32_t *slot, int nq, int nkv,
                                                        int64_t max_len, int n_split, float sl2, int r, int kh, int z,
                                                        int n) {
  constexpr int HD = 32 * DPL, C = RCK_SCHUNK, U = GRP >= 8 ? 32 / GRP : 8, NV = U * GRP, CPR = HD / 8;
  constexpr int LOGNV = NV == 32 ? 5 : NV == 16 ? 4 : 3;
  extern __shared__ float4 rck_sm4[];
  uint16_t *ks = reinterpret_cast<uint16_t *>(rck_sm4), *vs = ks + C * HD;
  float *sc = reinterpret_cast<float *>(vs + C * HD), *qs = sc + GRP * C, *part = qs + GRP * HD;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, kvd = nkv * HD;
  const int64_t p0 = (int64_t)z * C;
  const uint16_t *kb = kc + ((int64_t)slot[r] * max_len + p0) * kvd + kh * HD;
  const uint16_t *vb = vc + ((int64_t)slot[r] * max_len + p0) * kvd + kh * HD;
  for (int i = threadIdx.x; i < n * CPR; i += RCK_THREADS) /* K: group 0 */
    cp_async16_all(smem_u32(ks + (i / CPR) * HD + (i % CPR) * 8), kb + (int64_t)(i / CPR) * kvd + (i % CPR) * 8);
  cp_commit();
  for (int i = threadIdx.x; i < n * CPR; i += RCK_THREADS) /* V: group 1 */
    cp_async16_all(smem_u32(vs + (i / CPR) * HD + (i % CPR) * 8), vb + (int64_t)(i / CPR) * kvd + (i % CPR) * 8);
  cp_commit();
  for (int i = threadIdx.x; i < GRP * HD; i += RCK_THREADS) qs[i] = rck_bf16r(q[((int64_t)r * nq + kh * GRP) * HD + i]);
  cp_wait<1>();    /* this thread's K copies have landed … */
  __syncthreads(); /* … and everyone's */
  /* scores: warp w takes positions U·w … U·w+U−1, then every 4U further */
  float qv[GRP][DPL];
#pragma unroll
  for (int g = 0; g < GRP; g++)
#pragma unroll
    for (int i = 0; i < DPL; i++) qv[g][i] = qs[g * HD + lane * DPL + i];
  for (int j0 = w * U; j0 < n; j0 += RCK_WARPS * U) {
    float part_s[NV], kx[U][DPL];
#pragma unroll
    for (int u = 0; u < U; u++)
      if (j0 + u < n) rck_load<DPL>(ks + (j0 + u) * HD + lane * DPL, kx[u]);
      else
#pragma unroll
        for (int i = 0; i < DPL; i++) kx[u][i] = 0.0f;
#pragma unroll
    for (int g = 0; g < GRP; g++)
#pragma unroll
      for (int u = 0; u < U; u++) {
        float d = 0.0f;
#pragma unroll
        for (int i = 0; i < DPL; i++) d = fmaf(qv[g][i], kx[u][i], d);
        part_s[g * U + u] = d;
      }
    const float mine = rck_multi_sum<NV>(part_s, lane);
    const int idx = lane >> (5 - LOGNV), g = idx / U, u = idx % U;
    if ((lane & ((1 << (5 - LOGNV)) - 1)) == 0 && j0 + u < n) sc[g * C + j0 + u] = mine;
  }
  __syncthreads();
  rck_softmax_heads(sc, C, GRP, n, sl2, pml, r, nq, kh, n_split, z);
  cp_wait<0>(); /* V */
  __syncthreads();
  /* P·V: warp w over its positions (each V row read once for every head), lanes over dims */
  float acc[GRP][DPL];
#pragma unroll
  for (int g = 0; g < GRP; g++)
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[g][i] = 0.0f;
  for (int j = w; j < n; j += RCK_WARPS) {
    float vx[DPL];
    rck_load<DPL>(vs + j * HD + lane * DPL, vx);
#pragma unroll
    for (int g = 0; g < GRP; g++) {
      const float pj = sc[g * C + j];
#pragma unroll
      for (int i = 0; i < DPL; i++) acc[g][i] = fmaf(pj, vx[i], acc[g][i]);
    }
  }
#pragma unroll
  for (int g = 0; g < GRP; g++)
#pragma unroll
    for (int i = 0; i < DPL; i++) part[(w * GRP + g) * HD + lane * DPL + i] = acc[g][i];
  __syncthreads();
  for (int i = threadIdx.x; i < GRP * HD; i += RCK_THREADS) {
    const int g = i / HD, d = i % HD;
    float a = part[g * HD + d];
    for (int ww = 1; ww < RCK_WARPS; ww++) a += part[(ww * GRP + g) * HD + d];
    pacc[(((int64_t)r * nq + kh * GRP + g) * n_split + z) * HD + d] = a;
  }
}

template <int DPL, int GRP>
__global__ void __launch_bounds__(RCK_THREADS) rck_attn_staged_kernel(float *pacc, float *pml, const float *q,
                                                                     const uint16_t *kc, const uint16_t *vc,
                                                                     const int32_t *slot, const int32_t *len, int nq,
                                                                     int nkv, int64_t max_len, int n_split, float sl2) {
  constexpr int HD = 32 * DPL, C = RCK_SCHUNK, U = GRP >= 8 ? 32 / GRP : 8, NV = U * GRP;
  static_assert(NV == 8 || NV == 16 || NV == 32, "U·GRP: 8, 16 or 32");
  const int r = blockIdx.x, kh = blockIdx.y, z = blockIdx.z;
  const int64_t p0 = (int64_t)z * C;
  const int n = (int)(len[r] - p0 < C ? len[r] - p0 : C);
  if (n <= 0) rck_empty_split(pacc, pml, HD, GRP, r, nq, kh, n_split, z);
  else rck_staged_split<DPL, GRP>(pacc, pml, q, kc, vc, slot, nq, nkv, max_len, n_split, sl2, r, kh, z, n);
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
static int rck_unroll(void) {
  static int u = 0;
  if (!u) {
    const char *v = getenv("RLRUN_DECODE_ATTN_U");
    int x = v ? atoi(v) : 8;
    u = x == 4 || x == 16 ? x : 8;
  }
  return u;
}

/* Which decode attention kernel: 0 the two-phase kernel (splits of RCK_CHUNK),
 * 1 the staged kernel (splits of RCK_SCHUNK, 1/2/4/8 query heads per KV head;
 * the default: 0.69 against 0.86 ms of a batch-64 decode step's attention on
 * the H100, 2026-12-05). RLRUN_DECODE_ATTN=split picks the two-phase kernel (read once);
 * rck_decode_attn_mode(m ≥ 0) sets it (tests), −1 asks. The choice sets the
 * split and the summation order, so the output bits depend on it (never on the
 * batch), and the split count rck_n_split gives. */
static int rck_attn_mode = -1;
extern "C" int rck_decode_attn_mode(int mode) {
  if (rck_attn_mode < 0) {
    const char *v = getenv("RLRUN_DECODE_ATTN");
    rck_attn_mode = !(v && !strcmp(v, "split"));
  }
  if (mode >= 0) rck_attn_mode = mode != 0;
  return rck_attn_mode;
}

/* 1 when the staged kernel runs for query groups of grp heads. */
static int rck_staged(int grp) { return rck_decode_attn_mode(-1) && (grp == 1 || grp == 2 || grp == 4 || grp == 8); }

template <int DPL, int GRP>
static int rck_staged_launch(float *pacc, float *pml, const float *q, const uint16_t *kc, const uint16_t *vc,
                             const int32_t *slot, const int32_t *len, int n, int nq, int nkv, int64_t max_len,
                             int n_split, float sl2, cudaStream_t st, rl_err *e) {
  constexpr int shm = rck_staged_smem(DPL, GRP);
  static_assert(shm <= 227 * 1024, "shared memory");
  static int attr_set = 0; /* per process: the engine runs on one device per thread */
  if (shm > 48 * 1024 && !attr_set) {
    if (cudaFuncSetAttribute(rck_attn_staged_kernel<DPL, GRP>, cudaFuncAttributeMaxDynamicSharedMemorySize, shm) !=
        cudaSuccess)
      return rck_check("attn_staged (shared memory attribute)", e);
    attr_set = 1;
  }
  rck_attn_staged_kernel<DPL, GRP><<<dim3(n, nkv, n_split), RCK_THREADS, shm, st>>>(
      pacc, pml, q, kc, vc, slot, len, nq, nkv, max_len, n_split, sl2);
  return rck_check("attn_staged", e);
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
  const int grp = nq / nkv;
  if (n_split != rck_n_split(max_len, grp))
    return rl_errf(e, RL_EXIT_USAGE, "rollout (CUDA): decode attention given %d splits of a %lld-position cache, "
                   "the kernel in force needs %d (the attention mode changed after the engine was made)",
                   n_split, (long long)max_len, rck_n_split(max_len, grp));
  int rc;
  if (rck_staged(grp)) {
#define RCK_S(D, G) rck_staged_launch<D, G>(pacc, pml, q, kc, vc, slot, len, n, nq, nkv, max_len, n_split, sl2, st, e)
#define RCK_SG(D) (grp == 1 ? RCK_S(D, 1) : grp == 2 ? RCK_S(D, 2) : grp == 4 ? RCK_S(D, 4) : RCK_S(D, 8))
    rc = hd == 32 ? RCK_SG(1) : hd == 64 ? RCK_SG(2) : hd == 128 ? RCK_SG(4) : RCK_SG(8);
#undef RCK_SG
#undef RCK_S
  } else { /* two-phase */
    const int u = rck_unroll();
#define RCK_L(D, U_) rck_attn_launch<D, U_>(pacc, pml, q, kc, vc, slot, len, n, nq, nkv, max_len, n_split, sl2, st, e)
#define RCK_LU(D) (u == 4 ? RCK_L(D, 4) : u == 16 ? RCK_L(D, 16) : RCK_L(D, 8))
    rc = hd == 32 ? RCK_LU(1) : hd == 64 ? RCK_LU(2) : hd == 128 ? RCK_LU(4) : RCK_LU(8);
#undef RCK_LU
#undef RCK_L
  }
  if (rc) return rc;
  rck_attn_combine_kernel<<<dim3(n, nq), RCK_THREADS, 0, st>>>(out, out_b, pacc, pml, nq, hd, n_split);
  return rck_check("attn_combine", e);
}

/* Splits of a cache of max_len positions. */
extern "C" int rck_n_split(int64_t max_len, int grp) {
  const int c = rck_staged(grp) ? RCK_SCHUNK : RCK_CHUNK;
  return (int)((max_len + c - 1) / c);
}
