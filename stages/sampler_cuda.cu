/* sampler_cuda.cu — the fused sampling kernel: one block of 1024 threads per
 * row does validation + argmax, the FP64 sums, the top-k / top-p / min-p
 * masks, the Philox draw and the inverse CDF, all in the order of the
 * contract in sampler.h, with the arithmetic of sampler_math.h, so it returns
 * the CPU reference's token bit for bit (logp and entropy within an ulp of
 * log). Thread t handles lane t % 32 of segment slot t / 32 of every tile of
 * 1024 tokens; a segment's sum is a warp shuffle-down tree (smp_tree32's
 * order), slot accumulators live in lane 0 of each warp.
 *
 * The kept-token mask is one bit per token in shared memory (V/8 bytes: 19 KB
 * for Qwen3's 151936 tokens); top-k and top-p find their threshold logit by a
 * 32-step binary search over the order-preserving key, one pass over the row
 * per step (top-p recomputes exp each pass: its cost is about 33 row passes,
 * paid only when top_p < 1). The FP64 work dominates (one SM a row): s and the
 * entropy sum share one exp pass, T = 1 skips the (exact) division, and with no
 * mask the kept sums are s's own — the walk then reads each tile's segment sum
 * from shared memory instead of recomputing exp — so plain sampling reads the
 * row twice (argmax, sums) and computes each exp once. Both kernels take FP32
 * or BF16 rows (smp_row): a BF16 row is read as the FP32 row of its values. */
#include <pthread.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels/ptx_util.cuh" /* the cluster's barrier and distributed shared memory */
#include "stages/sampler_math.h"
extern "C" {
#include "kernels/device.h" /* device_sm_count */
#include "stages/sampler.h"
}

#define FULL 0xffffffffu
#define SMP_THREADS 1024
#define SMP_MAX_SHARED (200 * 1024)

/* What one block shares. */
struct smp_shared {
  double w[SMP_SEGS];  /* slot accumulators of the last block sum */
  double w2[SMP_SEGS]; /* blk_sum_eh: the slot accumulators of its second sum */
  double tot, tot2;
  int64_t cnt;
  uint32_t wcnt[SMP_SEGS];
  int bad;
  uint32_t kmax;
  int arg;
};

/* A row of logits as the kernels read it: FP32, or BF16 widened to FP32 —
 * exactly, every BF16 value being an FP32 one, so a BF16 row gives the
 * sampler_out bytes of the FP32 row of the same values (sampler_sample_bf16_cuda).
 * quad(i): tokens i … i+3 in one load (i % 4 == 0, the row 4-element aligned). */
template <class LT> struct smp_row;
template <> struct smp_row<float> {
  const float *p;
  __device__ __forceinline__ float operator[](int64_t i) const { return p[i]; }
  __device__ __forceinline__ float4 quad(int64_t i) const { return *reinterpret_cast<const float4 *>(p + i); }
};
template <> struct smp_row<uint16_t> {
  const uint16_t *p;
  __device__ __forceinline__ float operator[](int64_t i) const { return __uint_as_float((uint32_t)p[i] << 16); }
  __device__ __forceinline__ float4 quad(int64_t i) const {
    const uint2 v = *reinterpret_cast<const uint2 *>(p + i);
    return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u), __uint_as_float(v.y << 16),
                       __uint_as_float(v.y & 0xffff0000u));
  }
};

/* The FP32 logit of a key (inverse of smp_key). */
__device__ static float smp_logit_of_key(uint32_t k) {
  uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  return __uint_as_float(u);
}

/* Σ x(i) over the row in the contract's order; leaves W in sh->w. */
template <class F>
__device__ static double blk_sum(int64_t V, F x, smp_shared *sh) {
  int t = threadIdx.x, w = t >> 5, l = t & 31;
  int64_t tiles = (V + SMP_TILE - 1) / SMP_TILE;
  double acc = 0.0;
  for (int64_t k = 0; k < tiles; k++) {
    int64_t i = k * SMP_TILE + t;
    double v = i < V ? x(i) : 0.0;
    for (int off = 16; off >= 1; off >>= 1) v = __dadd_rn(v, __shfl_down_sync(FULL, v, off));
    if (l == 0) acc = __dadd_rn(acc, v);
  }
  __syncthreads();
  if (l == 0) sh->w[w] = acc;
  __syncthreads();
  if (w == 0) {
    double v = sh->w[l];
    for (int off = 16; off >= 1; off >>= 1) v = __dadd_rn(v, __shfl_down_sync(FULL, v, off));
    if (l == 0) sh->tot = v;
  }
  __syncthreads();
  return sh->tot;
}

/* The two sums of the row's distribution in one pass: s = Σ e(i) and
 * h = Σ (e(i) > 0 ? e(i)·z(i) : 0), z(i) = x(i)/T − m, e(i) = exp(z(i)), each
 * bitwise what blk_sum returns for it (same tiles, trees and slot order; the
 * division is skipped at T = 1, where it is exact). Leaves s's slot
 * accumulators in sh->w; seg (when not NULL) gets each tile's segment sums of
 * e, [tile][slot]: the level-2 walk's values when no token is masked. */
template <class R>
__device__ static void blk_sum_eh(int64_t V, const R lg, double teff, double m, smp_shared *sh, double *seg,
                                  double *s_out, double *h_out) {
  int t = threadIdx.x, w = t >> 5, l = t & 31;
  const bool t1 = teff == 1.0;
  int64_t tiles = (V + SMP_TILE - 1) / SMP_TILE;
  double as = 0.0, ah = 0.0;
  for (int64_t k = 0; k < tiles; k++) {
    int64_t i = k * SMP_TILE + t;
    double e = 0.0, eh = 0.0;
    if (i < V) {
      const double x = (double)lg[i], z = smp_sub(t1 ? x : smp_div(x, teff), m);
      e = smp_exp(z);
      eh = e > 0.0 ? smp_mul(e, z) : 0.0;
    }
    for (int off = 16; off >= 1; off >>= 1) {
      e = __dadd_rn(e, __shfl_down_sync(FULL, e, off));
      eh = __dadd_rn(eh, __shfl_down_sync(FULL, eh, off));
    }
    if (l == 0) {
      as = __dadd_rn(as, e), ah = __dadd_rn(ah, eh);
      if (seg) seg[k * SMP_SEGS + w] = e;
    }
  }
  __syncthreads();
  if (l == 0) sh->w[w] = as, sh->w2[w] = ah;
  __syncthreads();
  if (w == 0) {
    double v = sh->w[l], v2 = sh->w2[l];
    for (int off = 16; off >= 1; off >>= 1) {
      v = __dadd_rn(v, __shfl_down_sync(FULL, v, off));
      v2 = __dadd_rn(v2, __shfl_down_sync(FULL, v2, off));
    }
    if (l == 0) sh->tot = v, sh->tot2 = v2;
  }
  __syncthreads();
  *s_out = sh->tot, *h_out = sh->tot2;
}
/* Block-wide count of tokens with pred(i). */
template <class F>
__device__ static int64_t blk_count(int64_t V, F pred, smp_shared *sh) {
  int64_t n = 0;
  __syncthreads();
  if (threadIdx.x == 0) sh->cnt = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < V; i += SMP_THREADS) n += pred(i) ? 1 : 0;
  for (int off = 16; off >= 1; off >>= 1) n += __shfl_down_sync(FULL, n, off);
  if ((threadIdx.x & 31) == 0) atomicAdd((unsigned long long *)&sh->cnt, (unsigned long long)n);
  __syncthreads();
  return sh->cnt;
}

/* Walk the tied tokens (tied(i)) in id order, each told its rank; new keep
 * bit = keepf(i, rank) for tied tokens, other(i) for the rest. */
template <class T, class K, class O>
__device__ static void blk_tie_walk(int64_t V, uint32_t *keepw, T tied, K keepf, O other, smp_shared *sh) {
  int t = threadIdx.x, w = t >> 5, l = t & 31;
  int64_t tiles = (V + SMP_TILE - 1) / SMP_TILE, base = 0;
  for (int64_t k = 0; k < tiles; k++) {
    int64_t i = k * SMP_TILE + t;
    int is_tied = i < V && tied(i);
    uint32_t b = __ballot_sync(FULL, is_tied);
    __syncthreads();
    if (l == 0) sh->wcnt[w] = __popc(b);
    __syncthreads();
    int64_t pre = 0, tot = 0;
    for (int j = 0; j < SMP_SEGS; j++) pre += j < w ? sh->wcnt[j] : 0, tot += sh->wcnt[j];
    int64_t rank = base + pre + __popc(b & ((1u << l) - 1u));
    int kb = i < V && (is_tied ? keepf(i, rank) : other(i));
    uint32_t word = __ballot_sync(FULL, kb);
    if (l == 0) keepw[k * SMP_SEGS + w] = word;
    base += tot;
  }
  __syncthreads();
}

/* The largest key K with f(K) true (f non-increasing in K, f(0) true). */
template <class F>
__device__ static uint32_t blk_key_search(F f) {
  uint32_t lo = 0, hi = 0xffffffffu;
  while (lo < hi) {
    uint32_t mid = lo + (uint32_t)((hi - lo) / 2 + (hi - lo) % 2);
    if (f(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

template <class LT>
__global__ void __launch_bounds__(SMP_THREADS)
    sampler_kernel(sampler_params p, const LT *logits, int64_t V, int64_t ld, const sampler_key *keys,
                   sampler_out *outs, int use_seg) {
  extern __shared__ uint32_t keepw[];
  __shared__ smp_shared sh;
  const smp_row<LT> lg{logits + (int64_t)blockIdx.x * ld};
  const sampler_key key = keys[blockIdx.x];
  sampler_out *out = &outs[blockIdx.x];
  int t = threadIdx.x, w = t >> 5, l = t & 31;
  int64_t tiles = (V + SMP_TILE - 1) / SMP_TILE;

  /* validation and argmax (key desc, id asc) */
  if (t == 0) sh.bad = INT32_MAX, sh.kmax = 0, sh.arg = INT32_MAX;
  __syncthreads();
  uint32_t bk = 0;
  int barg = INT32_MAX;
  for (int64_t i = t; i < V; i += SMP_THREADS) {
    float x = lg[i];
    if (!smp_logit_ok(x)) atomicMin(&sh.bad, (int)i);
    uint32_t k = smp_key(x);
    if (barg == INT32_MAX || k > bk) bk = k, barg = (int)i;
  }
  for (int off = 16; off >= 1; off >>= 1) {
    uint32_t ok = __shfl_down_sync(FULL, bk, off);
    int oa = __shfl_down_sync(FULL, barg, off);
    if (oa != INT32_MAX && (barg == INT32_MAX || ok > bk || (ok == bk && oa < barg))) bk = ok, barg = oa;
  }
  if (l == 0 && barg != INT32_MAX) atomicMax(&sh.kmax, bk);
  __syncthreads();
  if (l == 0 && barg != INT32_MAX && bk == sh.kmax) atomicMin(&sh.arg, barg);
  __syncthreads();
  if (sh.bad != INT32_MAX || lg[sh.arg] == -INFINITY) {
    if (t == 0) {
      sampler_out o = {};
      o.status = sh.bad != INT32_MAX ? SAMPLER_NONFINITE : SAMPLER_ALL_MASKED;
      o.token = sh.bad != INT32_MAX ? sh.bad : -1;
      *out = o;
    }
    return;
  }
  const int arg = sh.arg;
  const double teff = p.temperature > 0.0 ? p.temperature : 1.0;
  const bool t1 = teff == 1.0; /* x / 1 == x: the division is skipped, bits unchanged */
  const double m = smp_div((double)lg[arg], teff);
  auto zm = [&](int64_t i) { const double x = (double)lg[i]; return smp_sub(t1 ? x : smp_div(x, teff), m); };
  auto ex = [&](int64_t i) { return smp_exp(zm(i)); };
  /* no mask at all (sampling at T > 0 with top_k, top_p, min_p off): kept = every
   * token, so the kept sums are s's own — its per-tile segment sums are kept for
   * the walk instead of a second and third pass over the row */
  const bool sampling = !(p.greedy || p.temperature == 0.0);
  const bool nomask = sampling && !(p.top_k > 0 && p.top_k < V) && !(p.top_p < 1.0) && !(p.min_p > 0.0);
  double *seg = nomask && use_seg ? reinterpret_cast<double *>(keepw + tiles * SMP_SEGS + (tiles * SMP_SEGS & 1)) : NULL;
  double s, h;
  blk_sum_eh(V, lg, teff, m, &sh, seg, &s, &h); /* sh.w = s's slot accumulators W */

  sampler_out o = {};
  int64_t tok = arg;
  double s_kept = 1.0;
  if (!sampling) {
    o.n_kept = 1;
  } else {
    if (!nomask) {
      for (int64_t k = 0; k < tiles; k++) {
        uint32_t word = __ballot_sync(FULL, k * SMP_TILE + t < V);
        if (l == 0) keepw[k * SMP_SEGS + w] = word;
      }
      __syncthreads();
    }
    auto kept = [&](int64_t i) { return nomask ? (uint32_t)(i < V) : (keepw[i >> 5] >> (i & 31)) & 1u; };
    auto kof = [&](int64_t i) { return smp_key(lg[i]); };
    if (p.top_k > 0 && p.top_k < V) {
      uint32_t kk = blk_key_search([&](uint32_t K) { return blk_count(V, [&](int64_t i) { return kof(i) >= K; }, &sh) >= p.top_k; });
      int64_t need = p.top_k - (kk == 0xffffffffu ? 0 : blk_count(V, [&](int64_t i) { return kof(i) > kk; }, &sh));
      blk_tie_walk(V, keepw, [&](int64_t i) { return kof(i) == kk; },
                   [&](int64_t i, int64_t r) { return r < need; }, [&](int64_t i) { return kof(i) > kk; }, &sh);
    }
    if (p.top_p < 1.0) {
      auto mass = [&](uint32_t K) { return blk_sum(V, [&](int64_t i) { return kept(i) && kof(i) >= K ? ex(i) : 0.0; }, &sh); };
      const double ps = smp_mul(p.top_p, mass(0));
      uint32_t kp = blk_key_search([&](uint32_t K) { return mass(K) >= ps; });
      const double a = kp == 0xffffffffu ? 0.0 : mass(kp + 1);
      const double estar = smp_exp(smp_sub(smp_div((double)smp_logit_of_key(kp), teff), m));
      blk_tie_walk(V, keepw, [&](int64_t i) { return kept(i) && kof(i) == kp; },
                   [&](int64_t i, int64_t r) { return smp_add(a, smp_mul((double)r, estar)) < ps; },
                   [&](int64_t i) { return kept(i) && kof(i) > kp; }, &sh);
    }
    if (p.min_p > 0.0) {
      for (int64_t k = 0; k < tiles; k++) {
        int64_t i = k * SMP_TILE + t;
        uint32_t word = __ballot_sync(FULL, i < V && kept(i) && ex(i) >= p.min_p);
        __syncthreads();
        if (l == 0) keepw[k * SMP_SEGS + w] = word;
        __syncthreads();
      }
    }
    auto xk = [&](int64_t i) { return kept(i) ? ex(i) : 0.0; };
    if (nomask) {
      o.n_kept = (int32_t)V, s_kept = s; /* sh.w: s's slot accumulators, the same W */
    } else {
      o.n_kept = (int32_t)blk_count(V, [&](int64_t i) { return kept(i) != 0; }, &sh);
      s_kept = blk_sum(V, xk, &sh); /* sh.w = the slot accumulators W */
    }
    o.u = smp_uniform(key.seed, key.iteration, key.prompt, key.sample, key.position);
    const double tt = smp_mul(o.u, s_kept);
    /* level 1: slots (every thread, the same walk) */
    double c = 0.0, clast = 0.0;
    int ws = -1, wlast = -1;
    for (int j = 0; j < SMP_SEGS; j++) {
      double v = sh.w[j];
      if (v == 0.0) continue;
      double nx = smp_add(c, v);
      if (nx > tt) { ws = j; break; }
      wlast = j, clast = c, c = nx;
    }
    if (ws < 0) ws = wlast, c = clast;
    /* levels 2 and 3: the chosen slot's warp, all lanes walking in step */
    __syncthreads();
    if (w == ws) {
      int64_t ks = -1, klast = -1;
      clast = c;
      for (int64_t k = 0; k < tiles; k++) {
        double v;
        if (seg) {
          v = seg[k * SMP_SEGS + ws]; /* the tile's segment sum, as blk_sum_eh's tree made it */
        } else {
          int64_t i = k * SMP_TILE + (int64_t)ws * SMP_LANES + l;
          v = i < V ? xk(i) : 0.0;
          for (int off = 16; off >= 1; off >>= 1) v = __dadd_rn(v, __shfl_down_sync(FULL, v, off));
          v = __shfl_sync(FULL, v, 0);
        }
        if (v == 0.0) continue;
        double nx = smp_add(c, v);
        if (nx > tt) { ks = k; break; }
        klast = k, clast = c, c = nx;
      }
      if (ks < 0) ks = klast, c = clast;
      int64_t base = ks * SMP_TILE + (int64_t)ws * SMP_LANES;
      double mine = base + l < V ? xk(base + l) : 0.0;
      int ls = -1, llast = -1;
      for (int j = 0; j < SMP_LANES; j++) {
        double v = __shfl_sync(FULL, mine, j);
        if (v == 0.0) continue;
        double nx = smp_add(c, v);
        if (nx > tt) { ls = j; break; }
        llast = j, c = nx;
      }
      if (ls < 0) ls = llast;
      if (l == 0) sh.arg = (int)(base + ls);
    }
    __syncthreads();
    tok = sh.arg;
  }
  if (t == 0) {
    const double zt = zm(tok), logs = log(s);
    o.token = (int32_t)tok;
    o.status = SAMPLER_OK;
    o.logp = smp_sub(zt, logs);
    o.logp_kept = smp_sub(zt, log(s_kept));
    o.entropy = smp_sub(logs, smp_div(h, s));
    *out = o;
  }
}

/* ---------------------------------------------------------------- the plain path
 * Sampling with no mask (T > 0; top_k, top_p, min_p off: what RL rollouts use)
 * and greedy need only the argmax and the two sums s, h of blk_sum_eh, and
 * the walk needs only the tile segment sums. sampler_plain_kernel computes
 * them over CL CTAs a row (a thread-block cluster when CL > 1, CL·rows ≤ the
 * SMs) with the bits of sampler_kernel:
 *   - argmax: each CTA over its share of the row, then the CL results combined
 *     (key desc, id asc: any split gives the same token) through distributed
 *     shared memory;
 *   - segment sums: a thread owns whole segments (32 tokens of a tile, the
 *     shuffle tree's inputs) and adds its 32 exps in smp_tree32's order itself
 *     — the leaves in bit-reversed order on a 5-deep stack — instead of 5
 *     shuffle rounds a segment (the FP64 shuffles and their latency bounded
 *     sampler_kernel: 0.154 ms for 64 rows of 151,936 on the H100, 5.4× a copy
 *     of the logits). The CTAs split the segments and store each sum into CTA
 *     0's shared memory;
 *   - CTA 0 then forms the 32 slot accumulators (tiles in order, the sums of
 *     blk_sum_eh's lane 0), their tree, and walks as sampler_kernel does.
 * The argmax reads 16 bytes a load, four loads in flight a thread; a whole
 * segment at T = 1 has no branch (smp_exp is branch-free), so its 32 exps
 * interleave — 64 rows of 151,936 on the H100 0.083 → 0.074 ms, 256 rows
 * 0.333 → 0.252 ms (session 26; the FP64 work is the floor: ~50 operations a
 * token at 64 a clock an SM, ~30 µs for 64 rows).
 * Greedy, no-mask sampling at any temperature, non-finite and all -inf rows
 * give sampler_kernel's outputs bit for bit (sampler_gpu_test compares both
 * paths with the CPU on every case). */
#define SMF_THREADS 512
#define SMF_MAX_CL 8

/* Segment j's sums: e = Σ exp(z(i)) and h = Σ (e > 0 ? e·z : 0) over its 32
 * tokens (0 past V), each in smp_tree32's order. WHOLE: all 32 below V (no
 * bounds checks); T1: teff = 1 (no division) — then the segment has no branch
 * and its 32 exps interleave. */
template <bool WHOLE, bool T1, class R>
__device__ __forceinline__ static void smf_segment(const R lg, int64_t V, int64_t j, bool vec, double teff,
                                                   double m, double *se, double *sh_) {
  float x[SMP_LANES];
  const int64_t i0 = j * SMP_LANES;
  if (WHOLE && vec) {
#pragma unroll
    for (int q = 0; q < SMP_LANES / 4; q++) {
      const float4 v = lg.quad(i0 + 4 * q);
      x[4 * q] = v.x, x[4 * q + 1] = v.y, x[4 * q + 2] = v.z, x[4 * q + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int q = 0; q < SMP_LANES; q++) x[q] = WHOLE || i0 + q < V ? lg[i0 + q] : 0.0f;
  }
  double ste[5], sth[5]; /* the stack: one partial sum a level */
#pragma unroll
  for (int q = 0; q < SMP_LANES; q++) {
    const int l = ((q & 1) << 4) | ((q & 2) << 2) | (q & 4) | ((q & 8) >> 2) | ((q & 16) >> 4); /* bit-reversed */
    double e = 0.0, eh = 0.0;
    if (WHOLE || i0 + l < V) {
      const double xd = (double)x[l], z = smp_sub(T1 ? xd : smp_div(xd, teff), m);
      e = smp_exp(z);
      eh = e > 0.0 ? smp_mul(e, z) : 0.0;
    }
    /* push, then merge equal levels: q + 1 has as many trailing zeros as merges */
    int lv = 0;
#pragma unroll
    for (int b = 0; b < 5; b++)
      if (((q + 1) >> b & 1) == 0 && lv == b) {
        e = __dadd_rn(ste[b], e), eh = __dadd_rn(sth[b], eh);
        lv = b + 1;
      }
    if (lv < 5) ste[lv] = e, sth[lv] = eh;
    else *se = e, *sh_ = eh;
  }
}

template <int CL, class LT>
__global__ void __launch_bounds__(SMF_THREADS, 1)
    sampler_plain_kernel(sampler_params p, const LT *logits, int64_t V, int64_t ld, const sampler_key *keys,
                         sampler_out *outs, int vec) {
  extern __shared__ double smf_seg[]; /* CTA 0: [NS] segment sums of e, then [NS] of h */
  __shared__ int s_bad, s_arg;
  __shared__ uint32_t s_kmax;
  __shared__ double s_w[SMP_SEGS], s_w2[SMP_SEGS], s_tot, s_tot2;
  const int rank = CL > 1 ? cluster_rank() : 0, row = (int)(blockIdx.x / CL);
  const int t = threadIdx.x, w = t >> 5, l = t & 31;
  const smp_row<LT> lg{logits + (int64_t)row * ld};
  const int64_t tiles = (V + SMP_TILE - 1) / SMP_TILE, NS = tiles * SMP_SEGS;

  /* argmax and validation over this CTA's share of the row */
  if (t == 0) s_bad = INT32_MAX, s_kmax = 0, s_arg = INT32_MAX;
  __syncthreads();
  /* shares of a multiple of 4 tokens (4-token loads when the row allows them); a
   * thread visits its tokens in increasing order and keeps the first of equal
   * keys, as every split does */
  const int64_t per = ((V + CL - 1) / CL + 3) & ~(int64_t)3, a0 = min(V, rank * per), a1 = min(V, a0 + per);
  uint32_t bk = 0;
  int barg = INT32_MAX;
  auto visit = [&](float x, int64_t i) {
    if (!smp_logit_ok(x)) atomicMin(&s_bad, (int)i);
    const uint32_t k = smp_key(x);
    if (barg == INT32_MAX || k > bk) bk = k, barg = (int)i;
  };
  int64_t i = a0 + t;
  if (vec) {
    const int64_t n4 = (a1 - a0) / 4;
    int64_t q = t;
    for (; q + 3 * SMF_THREADS < n4; q += 4 * SMF_THREADS) { /* four 16-byte (BF16: 8-byte) loads in flight */
      float4 v[4];
#pragma unroll
      for (int u = 0; u < 4; u++) v[u] = lg.quad(a0 + 4 * (q + u * SMF_THREADS));
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int64_t b = a0 + 4 * (q + u * SMF_THREADS);
        visit(v[u].x, b), visit(v[u].y, b + 1), visit(v[u].z, b + 2), visit(v[u].w, b + 3);
      }
    }
    for (; q < n4; q += SMF_THREADS) {
      const float4 v = lg.quad(a0 + 4 * q);
      const int64_t b = a0 + 4 * q;
      visit(v.x, b), visit(v.y, b + 1), visit(v.z, b + 2), visit(v.w, b + 3);
    }
    i = a0 + 4 * n4 + t; /* the share's last V % 4 tokens (its end is the row's) */
  }
  for (; i < a1; i += SMF_THREADS) visit(lg[i], i);
  for (int off = 16; off >= 1; off >>= 1) {
    const uint32_t ok = __shfl_down_sync(FULL, bk, off);
    const int oa = __shfl_down_sync(FULL, barg, off);
    if (oa != INT32_MAX && (barg == INT32_MAX || ok > bk || (ok == bk && oa < barg))) bk = ok, barg = oa;
  }
  if (l == 0 && barg != INT32_MAX) atomicMax(&s_kmax, bk);
  __syncthreads();
  if (l == 0 && barg != INT32_MAX && bk == s_kmax) atomicMin(&s_arg, barg);
  __syncthreads();
  int bad = s_bad, arg = s_arg;
  if (CL > 1) { /* the cluster's: every CTA reads every CTA's three values */
    cluster_sync();
    uint32_t kmax = 0;
    arg = INT32_MAX, bad = INT32_MAX;
    for (int c = 0; c < CL; c++) {
      const int a = (int)cluster_ld_u32(cluster_map(smem_u32(&s_arg), c));
      const uint32_t k = cluster_ld_u32(cluster_map(smem_u32(&s_kmax), c));
      bad = min(bad, (int)cluster_ld_u32(cluster_map(smem_u32(&s_bad), c)));
      if (a != INT32_MAX && (arg == INT32_MAX || k > kmax || (k == kmax && a < arg))) kmax = k, arg = a;
    }
  }
  sampler_out *out = &outs[row];
  if (bad != INT32_MAX || lg[arg] == -INFINITY) {
    if (rank == 0 && t == 0) {
      sampler_out o = {};
      o.status = bad != INT32_MAX ? SAMPLER_NONFINITE : SAMPLER_ALL_MASKED;
      o.token = bad != INT32_MAX ? bad : -1;
      *out = o;
    }
    if (CL > 1) cluster_sync(); /* the others have read this CTA's values */
    return;
  }
  const double teff = p.temperature > 0.0 ? p.temperature : 1.0;
  const bool t1 = teff == 1.0;
  const double m = smp_div((double)lg[arg], teff);

  /* segment sums of this CTA's share, into CTA 0 */
  const int64_t sper = (NS + CL - 1) / CL, j0 = rank * sper, j1 = min(NS, j0 + sper);
  const uint32_t seg0 = smem_u32(smf_seg), segc = CL > 1 ? cluster_map(seg0, 0) : seg0;
  for (int64_t j = j0 + t; j < j1; j += SMF_THREADS) {
    double se, sh_;
    const bool full = (j + 1) * SMP_LANES <= V;
    if (full && t1) smf_segment<true, true>(lg, V, j, vec != 0, teff, m, &se, &sh_);
    else if (full) smf_segment<true, false>(lg, V, j, vec != 0, teff, m, &se, &sh_);
    else smf_segment<false, false>(lg, V, j, vec != 0, teff, m, &se, &sh_);
    if (CL > 1) {
      cluster_st_f64(segc + (uint32_t)(8 * j), se);
      cluster_st_f64(segc + (uint32_t)(8 * (NS + j)), sh_);
    } else {
      smf_seg[j] = se, smf_seg[NS + j] = sh_;
    }
  }
  if (CL > 1) cluster_sync(); /* every sum in CTA 0; no CTA's shared memory is read after this */
  else __syncthreads();
  if (rank != 0) return;

  /* the slot accumulators (tiles in order), then their tree: blk_sum_eh's s and h */
  if (t < 2 * SMP_SEGS) {
    const double *a = smf_seg + (t < SMP_SEGS ? 0 : NS) + (t & 31);
    double acc = 0.0;
#pragma unroll 8
    for (int64_t k = 0; k < tiles; k++) acc = __dadd_rn(acc, a[k * SMP_SEGS]);
    (t < SMP_SEGS ? s_w : s_w2)[t & 31] = acc;
  }
  __syncthreads();
  if (w == 0) {
    double v = s_w[l], v2 = s_w2[l];
    for (int off = 16; off >= 1; off >>= 1) {
      v = __dadd_rn(v, __shfl_down_sync(FULL, v, off));
      v2 = __dadd_rn(v2, __shfl_down_sync(FULL, v2, off));
    }
    if (l == 0) s_tot = v, s_tot2 = v2;
  }
  __syncthreads();
  const double s = s_tot, h = s_tot2;
  auto zm = [&](int64_t i) { const double x = (double)lg[i]; return smp_sub(t1 ? x : smp_div(x, teff), m); };
  sampler_out o = {};
  int64_t tok = arg;
  const bool sampling = !(p.greedy || p.temperature == 0.0);
  if (!sampling) {
    o.n_kept = 1;
  } else if (w == 0) { /* the walk of sampler_kernel's unmasked path, by one warp */
    o.n_kept = (int32_t)V;
    o.u = smp_uniform(keys[row].seed, keys[row].iteration, keys[row].prompt, keys[row].sample, keys[row].position);
    const double tt = smp_mul(o.u, s);
    double c = 0.0, clast = 0.0;
    int ws = -1, wlast = -1;
    for (int j = 0; j < SMP_SEGS; j++) { /* level 1: slots */
      const double v = s_w[j];
      if (v == 0.0) continue;
      const double nx = smp_add(c, v);
      if (nx > tt) { ws = j; break; }
      wlast = j, clast = c, c = nx;
    }
    if (ws < 0) ws = wlast, c = clast;
    int64_t ks = -1, klast = -1;
    clast = c;
    for (int64_t k = 0; k < tiles; k++) { /* level 2: the slot's tile segments */
      const double v = smf_seg[k * SMP_SEGS + ws];
      if (v == 0.0) continue;
      const double nx = smp_add(c, v);
      if (nx > tt) { ks = k; break; }
      klast = k, clast = c, c = nx;
    }
    if (ks < 0) ks = klast, c = clast;
    const int64_t base = ks * SMP_TILE + (int64_t)ws * SMP_LANES;
    const double mine = base + l < V ? smp_exp(zm(base + l)) : 0.0;
    int ls = -1, llast = -1;
    for (int j = 0; j < SMP_LANES; j++) { /* level 3: the segment's lanes */
      const double v = __shfl_sync(FULL, mine, j);
      if (v == 0.0) continue;
      const double nx = smp_add(c, v);
      if (nx > tt) { ls = j; break; }
      llast = j, c = nx;
    }
    if (ls < 0) ls = llast;
    tok = base + ls;
  }
  if (t == 0) {
    const double zt = zm(tok), logs = log(s);
    o.token = (int32_t)tok;
    o.status = SAMPLER_OK;
    o.logp = smp_sub(zt, logs);
    o.logp_kept = sampling ? o.logp : zt; /* log of the kept sum: s, or 1 (one kept token) */
    o.entropy = smp_sub(logs, smp_div(h, s));
    *out = o;
  }
}

/* The tuning of sampler.h (sampler_cuda_tune): the plain kernel where it
 * applies (1) or never (0); its CTAs a row (1, 2, 4, 8; 0: by rows). */
static int smf_plain = -1, smf_cl = 0;
static void smf_env(void) {
  static const int cls[5] = {0, 1, 2, 4, 8};
  smf_plain = rl_env_bool("RLRUN_SAMPLER_PLAIN", 1);
  smf_cl = rl_env_int_of("RLRUN_SAMPLER_CL", cls, 5, 0);
}
static void smf_read(void) { /* once: the engines of a split rollout sample from threads of their own */
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, smf_env);
}
extern "C" void sampler_cuda_tune(int plain, int cl) {
  smf_read();
  smf_plain = plain != 0;
  smf_cl = cl == 1 || cl == 2 || cl == 4 || cl == 8 ? cl : 0;
}
template <int CL, class LT>
static cudaError_t smf_launch(const sampler_params *p, const LT *d_logits, int64_t rows, int64_t vocab, int64_t ld,
                              const sampler_key *d_keys, sampler_out *d_out, size_t shmem, int vec, cudaStream_t st) {
  cudaError_t err = cudaFuncSetAttribute(sampler_plain_kernel<CL, LT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)shmem);
  if (err != cudaSuccess) return err;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeClusterDimension;
  at[0].val.clusterDim.x = CL, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)(rows * CL)), cfg.blockDim = dim3(SMF_THREADS), cfg.dynamicSmemBytes = shmem;
  cfg.stream = st, cfg.attrs = at, cfg.numAttrs = CL > 1 ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, sampler_plain_kernel<CL, LT>, *p, d_logits, vocab, ld, d_keys, d_out, vec);
}

/* sampler_sample_cuda and sampler_sample_bf16_cuda: the same kernels on either row type. */
template <class LT>
static int smp_sample(const sampler_params *p, const LT *d_logits, int64_t rows, int64_t vocab, int64_t ld,
                      const sampler_key *d_keys, sampler_out *d_out, void *stream, rl_err *e) {
  if (sampler_check_params(p, e)) return RL_EXIT_USAGE;
  if (vocab < 1 || vocab > INT32_MAX || ld < vocab || rows < 0 || rows > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "sampler (cuda): bad shape: %lld rows of %lld logits (stride %lld)",
                   (long long)rows, (long long)vocab, (long long)ld);
  if (rows == 0) return 0;
  const bool plain = p->greedy || p->temperature == 0.0 ||
                     (!(p->top_k > 0 && p->top_k < vocab) && !(p->top_p < 1.0) && !(p->min_p > 0.0));
  const size_t plain_shmem = (size_t)((vocab + SMP_TILE - 1) / SMP_TILE) * SMP_SEGS * 2 * sizeof(double);
  smf_read();
  if (plain && smf_plain && plain_shmem <= SMP_MAX_SHARED) {
    const int sms = device_sm_count();
    int cl = smf_cl ? smf_cl : 1;
    if (sms < 1) return rl_errf(e, RL_EXIT_FAIL, "sampler (cuda): the CUDA driver did not give the device's SM count");
    while (!smf_cl && cl < SMF_MAX_CL && rows * cl * 2 <= sms) cl *= 2;
    const int vec = ld % 4 == 0 && ((uintptr_t)d_logits & (4 * sizeof(LT) - 1)) == 0;
    cudaStream_t st = (cudaStream_t)stream;
    cudaError_t err = cl == 1   ? smf_launch<1>(p, d_logits, rows, vocab, ld, d_keys, d_out, plain_shmem, vec, st)
                      : cl == 2 ? smf_launch<2>(p, d_logits, rows, vocab, ld, d_keys, d_out, plain_shmem, vec, st)
                      : cl == 4 ? smf_launch<4>(p, d_logits, rows, vocab, ld, d_keys, d_out, plain_shmem, vec, st)
                                : smf_launch<8>(p, d_logits, rows, vocab, ld, d_keys, d_out, plain_shmem, vec, st);
    if (err == cudaSuccess) err = cudaGetLastError();
    if (err != cudaSuccess)
      return rl_errf(e, RL_EXIT_FAIL, "sampler (cuda): launching the plain kernel (%lld rows × %lld, %d CTAs a row): %s",
                     (long long)rows, (long long)vocab, cl, cudaGetErrorString(err));
    return 0;
  }
  const size_t words = (size_t)((vocab + SMP_TILE - 1) / SMP_TILE) * SMP_SEGS;
  size_t shmem = words * sizeof(uint32_t);
  if (shmem > SMP_MAX_SHARED)
    return rl_errf(e, RL_EXIT_USAGE, "sampler (cuda): vocabulary %lld is too large for the fused kernel's mask (max %d)",
                   (long long)vocab, SMP_MAX_SHARED * 8);
  /* room for the segment sums of the unmasked walk after the mask (8-byte aligned), when it fits */
  const size_t with_seg = (words + (words & 1)) * sizeof(uint32_t) + words * sizeof(double);
  const int use_seg = with_seg <= SMP_MAX_SHARED;
  if (use_seg) shmem = with_seg;
  cudaError_t err = cudaFuncSetAttribute(sampler_kernel<LT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shmem);
  if (err == cudaSuccess) {
    sampler_kernel<LT><<<(unsigned)rows, SMP_THREADS, shmem, (cudaStream_t)stream>>>(*p, d_logits, vocab, ld, d_keys,
                                                                                   d_out, use_seg);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess)
    return rl_errf(e, RL_EXIT_FAIL, "sampler (cuda): launching the kernel (%lld rows × %lld): %s", (long long)rows,
                   (long long)vocab, cudaGetErrorString(err));
  return 0;
}

extern "C" int sampler_sample_cuda(const sampler_params *p, const float *d_logits, int64_t rows, int64_t vocab,
                                   int64_t ld, const sampler_key *d_keys, sampler_out *d_out, void *stream,
                                   rl_err *e) {
  return smp_sample(p, d_logits, rows, vocab, ld, d_keys, d_out, stream, e);
}

extern "C" int sampler_sample_bf16_cuda(const sampler_params *p, const uint16_t *d_logits, int64_t rows,
                                        int64_t vocab, int64_t ld, const sampler_key *d_keys, sampler_out *d_out,
                                        void *stream, rl_err *e) {
  return smp_sample(p, d_logits, rows, vocab, ld, d_keys, d_out, stream, e);
}
