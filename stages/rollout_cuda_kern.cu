/* rollout_cuda_kern.cu — the kernels of the CUDA rollout engine
 * (stages/rollout_cuda.c): the KV-cache write of a step's rows and the
 * decode attention (one query row per sequence against its own cached K/V,
 * split over the KV length, combined in a fixed order: deterministic and
 * independent of which slot a sequence sits in or how many rows a step has). */
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels/formats.h" /* fmt_bf16_from_f32 / fmt_bf16_to_f32: the one BF16 codec */

extern "C" {
#include "kernels/common.h"
}

#define RCK_CHUNK 256 /* KV positions per split (fixed: results never depend on the batch) */
#define RCK_THREADS 128

/* Row r of the step: raw K and V (BF16) and the attention key (FP32) into the
 * cache of slot[r] at position pos[r]. */
__global__ void rck_kv_write_kernel(uint16_t *kc, uint16_t *vc, float *kf, const float *kr, const float *v,
                                    const float *k, const int32_t *slot, const int32_t *pos, int64_t max_len,
                                    int kvd) {
  int r = blockIdx.x;
  int64_t base = ((int64_t)slot[r] * max_len + pos[r]) * kvd;
  for (int i = threadIdx.x; i < kvd; i += blockDim.x) {
    kc[base + i] = fmt_bf16_from_f32(kr[(int64_t)r * kvd + i]);
    vc[base + i] = fmt_bf16_from_f32(v[(int64_t)r * kvd + i]);
    kf[base + i] = k[(int64_t)r * kvd + i];
  }
}

/* Launch status as an rl_err (RL_EXIT_HARDWARE naming the kernel). */
static int rck_check(const char *what, rl_err *e) {
  cudaError_t s = cudaGetLastError();
  if (s == cudaSuccess) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "rollout (CUDA): kernel %s failed to launch: %s", what, cudaGetErrorString(s));
}

extern "C" int rck_kv_write(uint16_t *kc, uint16_t *vc, float *kf, const float *kr, const float *v, const float *k,
                            const int32_t *slot, const int32_t *pos, int n, int64_t max_len, int kvd, rl_err *e) {
  if (n <= 0) return 0;
  rck_kv_write_kernel<<<n, RCK_THREADS>>>(kc, vc, kf, kr, v, k, slot, pos, max_len, kvd);
  return rck_check("kv_write", e);
}

/* Block-wide reduction of v (max when is_max, else sum) over RCK_THREADS
 * threads as a fixed shared-memory tree: the same order every launch. */
static __device__ float rck_reduce(float v, float *red, int is_max) {
  int t = threadIdx.x;
  red[t] = v;
  __syncthreads();
  for (int s = RCK_THREADS / 2; s > 0; s >>= 1) {
    if (t < s) red[t] = is_max ? fmaxf(red[t], red[t + s]) : __fadd_rn(red[t], red[t + s]);
    __syncthreads();
  }
  float r = red[0];
  __syncthreads();
  return r;
}

/* Partial attention of split blockIdx.z of row blockIdx.x, KV head blockIdx.y,
 * for every query head of its group: positions [z·CHUNK, min(len, (z+1)·CHUNK)).
 * Writes acc[hd] (Σ e_j v_j), and (max, Σ e_j) per (row, query head, split). */
__global__ void rck_attn_split_kernel(float *pacc, float *pml, const float *q, const float *kf, const uint16_t *vc,
                                      const int32_t *slot, const int32_t *len, int nq, int nkv, int hd,
                                      int64_t max_len, int n_split, float scale) {
  __shared__ float sc[RCK_CHUNK];
  __shared__ float red[RCK_THREADS];
  __shared__ float qs[256];
  int r = blockIdx.x, kh = blockIdx.y, z = blockIdx.z, grp = nq / nkv, kvd = nkv * hd;
  int64_t p0 = (int64_t)z * RCK_CHUNK, n = len[r] - p0;
  if (n > RCK_CHUNK) n = RCK_CHUNK;
  const float *kbase = kf + (int64_t)slot[r] * max_len * kvd + kh * hd;
  const uint16_t *vbase = vc + (int64_t)slot[r] * max_len * kvd + kh * hd;
  for (int g = 0; g < grp; g++) {
    int h = kh * grp + g;
    int64_t o = ((int64_t)r * nq + h) * n_split + z;
    if (n <= 0) { /* an empty split: contributes nothing */
      for (int d = threadIdx.x; d < hd; d += blockDim.x) pacc[o * hd + d] = 0.0f;
      if (threadIdx.x == 0) pml[2 * o] = -INFINITY, pml[2 * o + 1] = 0.0f;
      continue;
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[((int64_t)r * nq + h) * hd + d];
    __syncthreads();
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      const float *kr = kbase + (p0 + j) * kvd;
      float s = 0.0f;
      for (int d = 0; d < hd; d++) s = __fmaf_rn(qs[d], kr[d], s);
      s = __fmul_rn(s, scale);
      sc[j] = s;
      mx = fmaxf(mx, s);
    }
    mx = rck_reduce(mx, red, 1);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      float ev = expf(sc[j] - mx);
      sc[j] = ev;
      sum = __fadd_rn(sum, ev);
    }
    sum = rck_reduce(sum, red, 0); /* also a barrier: sc is complete */
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
      float acc = 0.0f;
      for (int j = 0; j < n; j++) acc = __fmaf_rn(sc[j], fmt_bf16_to_f32(vbase[(p0 + j) * kvd + d]), acc);
      pacc[o * hd + d] = acc;
    }
    if (threadIdx.x == 0) pml[2 * o] = mx, pml[2 * o + 1] = sum;
    __syncthreads();
  }
}

/* out[r, h, :] and out_b (BF16) from the splits of (row r = blockIdx.x, head
 * h = blockIdx.y), splits combined in index order. */
__global__ void rck_attn_combine_kernel(float *out, uint16_t *out_b, const float *pacc, const float *pml, int nq,
                                        int hd, int n_split) {
  int r = blockIdx.x, h = blockIdx.y;
  int64_t o = ((int64_t)r * nq + h) * n_split;
  float M = -INFINITY;
  for (int z = 0; z < n_split; z++) M = fmaxf(M, pml[2 * (o + z)]);
  float L = 0.0f;
  for (int z = 0; z < n_split; z++)
    if (pml[2 * (o + z) + 1] > 0.0f) L = __fadd_rn(L, __fmul_rn(pml[2 * (o + z) + 1], expf(pml[2 * (o + z)] - M)));
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int z = 0; z < n_split; z++)
      if (pml[2 * (o + z) + 1] > 0.0f) acc = __fadd_rn(acc, __fmul_rn(pacc[(o + z) * hd + d], expf(pml[2 * (o + z)] - M)));
    float y = __fdiv_rn(acc, L);
    out[((int64_t)r * nq + h) * hd + d] = y;
    if (out_b) out_b[((int64_t)r * nq + h) * hd + d] = fmt_bf16_from_f32(y);
  }
}

extern "C" int rck_decode_attention(float *out, uint16_t *out_b, const float *q, const float *kf, const uint16_t *vc,
                                    const int32_t *slot, const int32_t *len, int n, int nq, int nkv, int hd,
                                    int64_t max_len, int n_split, float *pacc, float *pml, rl_err *e) {
  if (n <= 0) return 0;
  if (hd > 256 || nq % nkv)
    return rl_errf(e, RL_EXIT_USAGE, "rollout (CUDA): decode attention needs head_dim <= 256 and n_q %% n_kv == 0 (got %d, %d/%d)",
                   hd, nq, nkv);
  rck_attn_split_kernel<<<dim3(n, nkv, n_split), RCK_THREADS>>>(pacc, pml, q, kf, vc, slot, len, nq, nkv, hd,
                                                                 max_len, n_split, 1.0f / sqrtf((float)hd));
  int rc = rck_check("attn_split", e);
  if (rc) return rc;
  rck_attn_combine_kernel<<<dim3(n, nq), RCK_THREADS>>>(out, out_b, pacc, pml, nq, hd, n_split);
  return rck_check("attn_combine", e);
}

/* Splits of a cache of max_len positions. */
extern "C" int rck_n_split(int64_t max_len) { return (int)((max_len + RCK_CHUNK - 1) / RCK_CHUNK); }
