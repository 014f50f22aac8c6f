/* ops_router_cuda.cu — the CUDA twins of the MoE router (top-k / R3 replay,
 * backward, replay checks, overlap; one warp per token) and of the
 * log-softmax + gather + entropy (one 512-thread block per vocabulary row,
 * one online pass). Reductions in a fixed order; no float atomics. */
#include "kernels/ops_cuda_util.cuh"

/* ---------------------------------------------------------------- MoE router */

/* Warp argmax over p[x] for x ≡ lane (mod 32), skipping the k_done ids in
 * sel: the largest value, ties to the lower index. Returns the expert. */
__device__ int warp_argmax_excl(const float *p, int E, const int32_t *sel, int k_done) {
  int lane = threadIdx.x & 31, best = -1;
  float bv = 0;
  for (int x = lane; x < E; x += 32) {
    int taken = 0;
    for (int m = 0; m < k_done; m++) taken |= sel[m] == x;
    if (taken) continue;
    if (best < 0 || p[x] > bv) best = x, bv = p[x];
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    int ob = __shfl_xor_sync(FULL, best, o);
    float ov = __shfl_xor_sync(FULL, bv, o);
    if (ob >= 0 && (best < 0 || ov > bv || (ov == bv && ob < best))) best = ob, bv = ov;
  }
  return best;
}

/* One warp per token: probs, the top-k (or the replayed ids), weights. */
__global__ void router_fwd_kernel(int32_t *ids, float *weights, float *probs, const float *logits, int T, int E,
                                  int k, int norm, int replay) {
  __shared__ int32_t sel[WARPS][64];
  int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
  int64_t t = (int64_t)blockIdx.x * WARPS + wp;
  if (t >= T) return;
  const float *l = logits + (size_t)t * E;
  float *p = probs + (size_t)t * E;
  float m = -INFINITY;
  for (int x = lane; x < E; x += 32) m = fmaxf(m, l[x]);
  m = warp_max(m);
  float s = 0;
  for (int x = lane; x < E; x += 32) s += expf(l[x] - m);
  s = warp_sum(s);
  for (int x = lane; x < E; x += 32) p[x] = expf(l[x] - m) / s;
  __syncwarp();
  int32_t *id = ids + (size_t)t * k;
  if (replay) {
    if (lane < k) sel[wp][lane] = id[lane];
    if (lane + 32 < k) sel[wp][lane + 32] = id[lane + 32];
  } else {
    for (int j = 0; j < k; j++) {
      int b = warp_argmax_excl(p, E, sel[wp], j); /* p[x] of this lane's x: written by this lane */
      if (lane == 0) sel[wp][j] = b;
      __syncwarp();
    }
    if (lane < k) id[lane] = sel[wp][lane];
    if (lane + 32 < k) id[lane + 32] = sel[wp][lane + 32];
  }
  __syncwarp();
  /* Weights: the sum over the k picked probabilities in double, as the CPU. */
  if (lane == 0) {
    double sum = 0;
    int bad = 0;
    for (int j = 0; j < k; j++) {
      int x = sel[wp][j];
      if (x < 0 || x >= E) bad = 1;
      else sum += p[x];
    }
    for (int j = 0; j < k; j++) {
      int x = sel[wp][j];
      float v = bad ? __int_as_float(0x7fc00000) : (norm ? (float)(p[x] / sum) : p[x]);
      weights[(size_t)t * k + j] = v;
    }
  }
}

/* One warp per token: dlogits = p ⊙ (dp − Σ p·dp), dp nonzero at the k ids. */
__global__ void router_bwd_kernel(float *dlogits, const float *dweights, const float *probs, const int32_t *ids,
                                  int T, int E, int k, int norm) {
  int lane = threadIdx.x & 31;
  int64_t t = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
  if (t >= T) return;
  const float *p = probs + (size_t)t * E, *dw = dweights + (size_t)t * k;
  const int32_t *id = ids + (size_t)t * k;
  int bad = 0;
  for (int j = 0; j < k; j++) bad |= id[j] < 0 || id[j] >= E;
  if (bad) { /* an unchecked replay id: NaN, never a wild read */
    for (int x = lane; x < E; x += 32) dlogits[(size_t)t * E + x] = __int_as_float(0x7fc00000);
    return;
  }
  double S = 0, c = 0, dot = 0;
  for (int j = 0; j < k; j++) S += p[id[j]];
  if (norm)
    for (int j = 0; j < k; j++) c += dw[j] * (p[id[j]] / S);
  for (int j = 0; j < k; j++) dot += p[id[j]] * (norm ? (dw[j] - c) / S : (double)dw[j]);
  for (int x = lane; x < E; x += 32) {
    double dp = 0;
    for (int j = 0; j < k; j++)
      if (id[j] == x) dp = norm ? (dw[j] - c) / S : (double)dw[j];
    dlogits[(size_t)t * E + x] = (float)(p[x] * (dp - dot));
  }
}

/* First bad replay slot (flat t·k + j) by range or repetition. */
__global__ void router_check_kernel(const int32_t *ids, int T, int E, int k, unsigned long long *first) {
  int64_t n = (int64_t)T * k;
  for (int64_t f = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; f < n; f += (int64_t)gridDim.x * blockDim.x) {
    int32_t id = ids[f];
    int j = (int)(f % k), bad = id < 0 || id >= E;
    for (int m = 0; m < j && !bad; m++) bad = ids[f - j + m] == id;
    if (bad) atomicMin(first, (unsigned long long)f);
  }
}

/* One warp per token: hits of the replayed ids in the router's own top-k. */
__global__ void router_overlap_kernel(const float *probs, const int32_t *ids, int T, int E, int k,
                                      unsigned long long *hits) {
  __shared__ int32_t sel[WARPS][64];
  int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
  int64_t t = (int64_t)blockIdx.x * WARPS + wp;
  if (t >= T) return;
  const float *p = probs + (size_t)t * E;
  for (int j = 0; j < k; j++) {
    int b = warp_argmax_excl(p, E, sel[wp], j);
    if (lane == 0) sel[wp][j] = b;
    __syncwarp();
  }
  if (lane == 0) {
    unsigned long long h = 0;
    for (int j = 0; j < k; j++)
      for (int m = 0; m < k; m++) h += ids[(size_t)t * k + j] == sel[wp][m];
    atomicAdd(hits, h);
  }
}

/* Host check of the router's shape arguments. */
static int router_args(int E, int k, rl_err *e) {
  if (k < 1 || k > E || k > 64)
    return rl_errf(e, RL_EXIT_USAGE, "router: top-k %d must be in [1, %d] (num_experts_per_tok ≤ num_experts) and ≤ 64",
                   k, E);
  return 0;
}

extern "C" int ops_router_forward_cuda(int32_t *ids, float *weights, float *probs, const float *logits, int T, int E,
                                       int k, int norm_topk_prob, ops_route_mode mode, void *stream, rl_err *e) {
  if (router_args(E, k, e)) return RL_EXIT_USAGE;
  if (T <= 0) return 0;
  router_fwd_kernel<<<(unsigned)((T + WARPS - 1) / WARPS), NTHR, 0, (cudaStream_t)stream>>>(
      ids, weights, probs, logits, T, E, k, norm_topk_prob, mode == OPS_ROUTE_REPLAY);
  OLAUNCH();
  return 0;
}

extern "C" int ops_router_backward_cuda(float *dlogits, const float *dweights, const float *probs, const int32_t *ids,
                                        int T, int E, int k, int norm_topk_prob, void *stream, rl_err *e) {
  if (router_args(E, k, e)) return RL_EXIT_USAGE;
  if (T <= 0) return 0;
  router_bwd_kernel<<<(unsigned)((T + WARPS - 1) / WARPS), NTHR, 0, (cudaStream_t)stream>>>(
      dlogits, dweights, probs, ids, T, E, k, norm_topk_prob);
  OLAUNCH();
  return 0;
}

extern "C" int ops_router_check_ids_cuda(const int32_t *ids, int T, int E, int k, void *stream, rl_err *e) {
  if (router_args(E, k, e)) return RL_EXIT_USAGE;
  if (T <= 0) return 0;
  cudaStream_t st = (cudaStream_t)stream;
  unsigned long long *d = NULL, h = ~0ull;
  OCHECK(cudaMallocAsync((void **)&d, sizeof *d, st));
  OCHECK(cudaMemcpyAsync(d, &h, sizeof h, cudaMemcpyHostToDevice, st));
  router_check_kernel<<<grid_for((int64_t)T * k, 256), 256, 0, st>>>(ids, T, E, k, d);
  OLAUNCH();
  OCHECK(cudaMemcpyAsync(&h, d, sizeof h, cudaMemcpyDeviceToHost, st));
  OCHECK(cudaFreeAsync(d, st));
  OCHECK(cudaStreamSynchronize(st));
  if (h == ~0ull) return 0;
  int32_t row[64];
  int t = (int)(h / k), j = (int)(h % k);
  OCHECK(cudaMemcpy(row, ids + (size_t)t * k, (size_t)k * sizeof(int32_t), cudaMemcpyDeviceToHost));
  if (row[j] < 0 || row[j] >= E)
    return rl_errf(e, RL_EXIT_USAGE,
                   "router replay (R3): expert id %d at token %d, slot %d is outside [0, %d); "
                   "the recorded routing does not belong to this model",
                   (int)row[j], t, j, E);
  int m = 0;
  while (m < j && row[m] != row[j]) m++;
  return rl_errf(e, RL_EXIT_USAGE,
                 "router replay (R3): expert %d appears twice at token %d (slots %d and %d); "
                 "replayed top-k ids must be distinct",
                 (int)row[j], t, m, j);
}

extern "C" int ops_router_overlap_cuda(double *overlap, const float *probs, const int32_t *ids, int T, int E, int k,
                                       void *stream, rl_err *e) {
  if (router_args(E, k, e)) return RL_EXIT_USAGE;
  if (T <= 0) {
    *overlap = 1.0;
    return 0;
  }
  cudaStream_t st = (cudaStream_t)stream;
  unsigned long long *d = NULL, h = 0;
  OCHECK(cudaMallocAsync((void **)&d, sizeof *d, st));
  OCHECK(cudaMemsetAsync(d, 0, sizeof *d, st));
  router_overlap_kernel<<<(unsigned)((T + WARPS - 1) / WARPS), NTHR, 0, st>>>(probs, ids, T, E, k, d);
  OLAUNCH();
  OCHECK(cudaMemcpyAsync(&h, d, sizeof h, cudaMemcpyDeviceToHost, st));
  OCHECK(cudaFreeAsync(d, st));
  OCHECK(cudaStreamSynchronize(st));
  *overlap = (double)h / ((double)T * k);
  return 0;
}

/* ---------------------------------------------------------------- log-probs */

/* Online (max, Σe, Σe·z) of a softmax row, merged in a fixed order. */
struct lsm3 {
  float m, s1, s2;
};

/* Add one value z. */
__device__ __forceinline__ void lsm_add(lsm3 &a, float z) {
  if (z > a.m) {
    float r = expf(a.m - z); /* a.m = −inf at the start: r = 0 */
    a.s1 = a.s1 * r + 1.0f;
    a.s2 = a.s2 * r + z;
    a.m = z;
  } else {
    float x = expf(z - a.m);
    a.s1 += x;
    a.s2 += x * z;
  }
}

/* Merge b into a (symmetric: a ⊕ b and b ⊕ a give the same bits). */
__device__ __forceinline__ lsm3 lsm_merge(lsm3 a, lsm3 b) {
  float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return a;
  float ra = expf(a.m - m), rb = expf(b.m - m);
  /* no FMA contraction: the merge must be symmetric to the bit */
  lsm3 r = {m, __fadd_rn(__fmul_rn(a.s1, ra), __fmul_rn(b.s1, rb)),
            __fadd_rn(__fmul_rn(a.s2, ra), __fmul_rn(b.s2, rb))};
  return r;
}

/* Block-wide merge: xor butterfly inside warps, then warp 0 merges the warps
 * in order. Every thread gets the result. */
__device__ lsm3 lsm_block(lsm3 a) {
  __shared__ lsm3 part[LSM_THREADS / 32];
  __shared__ lsm3 total;
  int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    lsm3 b = {__shfl_xor_sync(FULL, a.m, o), __shfl_xor_sync(FULL, a.s1, o), __shfl_xor_sync(FULL, a.s2, o)};
    a = lsm_merge(a, b);
  }
  if (lane == 0) part[wp] = a;
  __syncthreads();
  if (threadIdx.x == 0) {
    lsm3 r = part[0];
    for (int k = 1; k < LSM_THREADS / 32; k++) r = lsm_merge(r, part[k]);
    total = r;
  }
  __syncthreads();
  return total;
}

/* Block sum of a float (same scheme). */
__device__ float sum_block(float v) {
  __shared__ float part[LSM_THREADS / 32];
  __shared__ float total;
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float r = 0;
    for (int k = 0; k < LSM_THREADS / 32; k++) r += part[k];
    total = r;
  }
  __syncthreads();
  return total;
}

/* One block per row: lse, entropy and the target's log-prob in one read
 * (logits FP32 or BF16: TL). */
template <bool VEC, typename TL>
__global__ void __launch_bounds__(LSM_THREADS) logprob_fwd_kernel(float *logp, float *entropy, float *lse,
                                                                  const TL *logits, const int32_t *targets,
                                                                  int V, float temp) {
  int64_t t = blockIdx.x;
  const TL *l = logits + (size_t)t * V;
  lsm3 a = {-INFINITY, 0.0f, 0.0f};
  if (VEC) {
    for (int v = threadIdx.x * 4; v < V; v += LSM_THREADS * 4) {
      float4 x = ldf4(l, v);
      lsm_add(a, __fdiv_rn(x.x, temp));
      lsm_add(a, __fdiv_rn(x.y, temp));
      lsm_add(a, __fdiv_rn(x.z, temp));
      lsm_add(a, __fdiv_rn(x.w, temp));
    }
  } else {
    for (int v = threadIdx.x; v < V; v += LSM_THREADS) lsm_add(a, __fdiv_rn(ldf(l, v), temp));
  }
  a = lsm_block(a);
  if (threadIdx.x) return;
  float L = a.m + logf(a.s1);
  lse[t] = L;
  if (entropy) entropy[t] = L - a.s2 / a.s1;
  if (logp && targets) {
    int tg = targets[t];
    logp[t] = tg < 0 ? 0.0f : tg >= V ? __int_as_float(0x7fc00000) : __fdiv_rn(ldf(l, tg), temp) - L;
  }
}

/* One block per row: dlogits (may alias logits of its type: each element is
 * read by the thread that writes it, after the entropy pass has finished).
 * TL, TD: logits read, dlogits written as FP32 or BF16 (RNE of the FP32 value). */
template <typename TL, typename TD>
__global__ void __launch_bounds__(LSM_THREADS) logprob_bwd_kernel(TD *dlogits, const float *dlogp,
                                                                  const float *dentropy, const TL *logits,
                                                                  const float *lse, const int32_t *targets, int V,
                                                                  float temp) {
  int64_t t = blockIdx.x;
  const TL *l = logits + (size_t)t * V;
  TD *d = dlogits + (size_t)t * V;
  float L = lse[t];
  int tgt = targets ? targets[t] : -1;
  float gl = (dlogp && tgt >= 0) ? dlogp[t] : 0.0f;
  float ge = dentropy ? dentropy[t] : 0.0f;
  float H = 0;
  if (ge != 0.0f) {
    float pz = 0;
    for (int v = threadIdx.x; v < V; v += LSM_THREADS) {
      float z = __fdiv_rn(ldf(l, v), temp);
      pz += expf(z - L) * z;
    }
    H = L - sum_block(pz);
  }
  if (tgt >= V) gl = __int_as_float(0x7fc00000);
  for (int v = threadIdx.x; v < V; v += LSM_THREADS) {
    float z = __fdiv_rn(ldf(l, v), temp), lp = z - L, p = expf(lp);
    float g = gl * ((v == tgt ? 1.0f : 0.0f) - p) + ge * (-p * (lp + H));
    const float dv = g / temp;
    stf(d, v, dv);
  }
}

/* Host check of the temperature. */
static int temp_check(float temp, const char *what, rl_err *e) {
  if (!(temp > 0) || !isfinite(temp))
    return rl_errf(e, RL_EXIT_USAGE, "%s: temperature %g must be a finite number > 0", what, (double)temp);
  return 0;
}

template <typename TL>
static int logprob_fwd_run(float *logp, float *entropy, float *lse, const TL *logits, const int32_t *targets, int T,
                           int V, float temp, void *stream, rl_err *e) {
  if (temp_check(temp, "log-probs", e)) return RL_EXIT_USAGE;
  if (T <= 0 || V <= 0) return 0;
  cudaStream_t st = (cudaStream_t)stream;
  if (V % 4 == 0 && aligned(logits, 4 * sizeof(TL)))
    logprob_fwd_kernel<true, TL><<<T, LSM_THREADS, 0, st>>>(logp, entropy, lse, logits, targets, V, temp);
  else
    logprob_fwd_kernel<false, TL><<<T, LSM_THREADS, 0, st>>>(logp, entropy, lse, logits, targets, V, temp);
  OLAUNCH();
  return 0;
}

extern "C" int ops_logprob_forward_cuda(float *logp, float *entropy, float *lse, const float *logits,
                                        const int32_t *targets, int T, int V, float temp, void *stream, rl_err *e) {
  return logprob_fwd_run(logp, entropy, lse, logits, targets, T, V, temp, stream, e);
}

extern "C" int ops_logprob_forward_bx_cuda(float *logp, float *entropy, float *lse, const uint16_t *logits,
                                           const int32_t *targets, int T, int V, float temp, void *stream, rl_err *e) {
  return logprob_fwd_run(logp, entropy, lse, logits, targets, T, V, temp, stream, e);
}

template <typename TL, typename TD>
static int logprob_bwd_run(TD *dlogits, const float *dlogp, const float *dentropy, const TL *logits, const float *lse,
                           const int32_t *targets, int T, int V, float temp, void *stream, rl_err *e) {
  if (temp_check(temp, "log-probs backward", e)) return RL_EXIT_USAGE;
  if (T <= 0 || V <= 0) return 0;
  logprob_bwd_kernel<TL, TD><<<T, LSM_THREADS, 0, (cudaStream_t)stream>>>(dlogits, dlogp, dentropy, logits, lse,
                                                                          targets, V, temp);
  OLAUNCH();
  return 0;
}

extern "C" int ops_logprob_backward_cuda(float *dlogits, const float *dlogp, const float *dentropy,
                                         const float *logits, const float *lse, const int32_t *targets, int T, int V,
                                         float temp, void *stream, rl_err *e) {
  return logprob_bwd_run(dlogits, dlogp, dentropy, logits, lse, targets, T, V, temp, stream, e);
}

extern "C" int ops_logprob_backward_bx_cuda(uint16_t *dlogits, const float *dlogp, const float *dentropy,
                                            const uint16_t *logits, const float *lse, const int32_t *targets, int T,
                                            int V, float temp, void *stream, rl_err *e) {
  return logprob_bwd_run(dlogits, dlogp, dentropy, logits, lse, targets, T, V, temp, stream, e);
}
