/* ops_attn_cuda.cu — causal grouped-query attention on packed sequences, for
 * prefill and training: the CUDA twin of ops_attention_{forward,backward}_cpu.
 *
 * Flash-style, FP32 SIMT (the BF16 tensor-core kernels, the default, are in
 * ops_attn_tc_cuda.cu; the entry points below pick per ops_attention_choose): a block of 256 threads owns a
 * 64-row tile and streams 32-row tiles of the other side through shared
 * memory; the score tile lives in registers (4 rows × 2 columns a thread) and
 * is never stored for more than one tile. Thread (ty, tx) = (tid / 16,
 * tid % 16) owns rows 4ty..4ty+3 and tile columns tx, tx+16; for the 64×D
 * accumulators it owns rows 4ty..4ty+3 and columns 64c + 4tx..+3.
 *
 *   forward   block = (64 queries of one q head); keys in tiles of 32 from the
 *             sequence start up to the diagonal; online softmax (max, sum),
 *             O rescaled in registers; writes O (and BF16), lse = m + log l.
 *   dQ        block = (64 queries of one q head); recomputes P = exp(s − lse)
 *             and dP = dO·Vᵀ per key tile, dS = P (dP − δ), dQ += dS K.
 *   dK, dV    block = (64 keys of one kv head); walks the q heads of its group
 *             and their query tiles (queries ≥ the tile's first key) in order:
 *             dV += Pᵀ dO, dK += dSᵀ Q. One owner per output: no atomics.
 *   δ         δ[i,h] = dO·O, one warp per row (before dQ and dK/dV).
 *
 * Every sum runs in an order fixed by the sequence length alone (tiles start
 * at the sequence start), so a sequence's results do not depend on the other
 * sequences of the batch or on the grid; a block loops over tiles with a
 * stride of gridDim.x, so max_len only sizes the grid. */
#include "kernels/ops_cuda_util.cuh" /* OCHECK, OLAUNCH, FULL, C linkage of common.h */

namespace {

constexpr int NT = 256;      /* threads per block */
constexpr int BM = 64;       /* rows of a block's own tile */
constexpr int BN = 32;       /* rows of a streamed tile */
constexpr int PLD = BN + 4;  /* row stride of the P / dS tile in shared memory */

/* Arguments shared by the attention kernels. */
struct attn_args {
  const float *q, *k, *v, *o, *dout, *lse, *delta;
  float *out, *dq, *dk, *dv, *lse_out;
  uint16_t *out_bf16;
  const int32_t *off;
  int Hq, Hkv, rep;
  float scale;
};

/* Component k (0..3) of a float4 (k known at compile time after unrolling). */
__device__ __forceinline__ float f4(const float4 &v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}

/* Copy nrows rows of D floats (global row stride gs floats) into shared
 * memory with row stride lds; rows ≥ nvalid become 0. */
template <int D>
__device__ __forceinline__ void load_rows(float *S, int lds, const float *G, size_t gs, int nrows, int nvalid) {
  for (int idx = threadIdx.x; idx < nrows * (D / 4); idx += NT) {
    int r = idx / (D / 4), c = (idx % (D / 4)) * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r < nvalid) v = __ldg(reinterpret_cast<const float4 *>(G + (size_t)r * gs + c));
    *reinterpret_cast<float4 *>(S + r * lds + c) = v;
  }
}

/* acc[i][j] = Σ_d A[4ty+i][d] · B[tx+16j][d]   (A: 64 rows, stride lda; B:
 * 32 rows, stride ldb = D + 4 so the 8 lanes of a quarter-warp hit distinct
 * banks; the A reads are broadcasts). */
template <int D>
__device__ __forceinline__ void tile_dot(float acc[4][2], const float *A, int lda, const float *B, int ldb, int ty,
                                         int tx) {
#pragma unroll
  for (int i = 0; i < 4; i++) acc[i][0] = acc[i][1] = 0.f;
#pragma unroll 4
  for (int d = 0; d < D; d += 4) {
    float4 a[4], b[2];
#pragma unroll
    for (int i = 0; i < 4; i++) a[i] = *reinterpret_cast<const float4 *>(A + (ty * 4 + i) * lda + d);
#pragma unroll
    for (int j = 0; j < 2; j++) b[j] = *reinterpret_cast<const float4 *>(B + (tx + 16 * j) * ldb + d);
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) {
        acc[i][j] = fmaf(a[i].x, b[j].x, acc[i][j]);
        acc[i][j] = fmaf(a[i].y, b[j].y, acc[i][j]);
        acc[i][j] = fmaf(a[i].z, b[j].z, acc[i][j]);
        acc[i][j] = fmaf(a[i].w, b[j].w, acc[i][j]);
      }
  }
}

/* acc[i][4c+e] += Σ_{k<32} P[4ty+i][k] · B[k][64c + 4tx + e]   (P stride PLD,
 * B stride ldb; c < D/64). */
template <int D>
__device__ __forceinline__ void tile_acc(float (*acc)[D / 16], const float *P, const float *B, int ldb, int ty,
                                         int tx) {
#pragma unroll 2
  for (int k = 0; k < BN; k += 4) {
    float4 p[4];
#pragma unroll
    for (int i = 0; i < 4; i++) p[i] = *reinterpret_cast<const float4 *>(P + (ty * 4 + i) * PLD + k);
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
      for (int c = 0; c < D / 64; c++) {
        float4 b = *reinterpret_cast<const float4 *>(B + (k + kk) * ldb + c * 64 + tx * 4);
#pragma unroll
        for (int i = 0; i < 4; i++) {
          float pv = f4(p[i], kk);
          acc[i][c * 4 + 0] = fmaf(pv, b.x, acc[i][c * 4 + 0]);
          acc[i][c * 4 + 1] = fmaf(pv, b.y, acc[i][c * 4 + 1]);
          acc[i][c * 4 + 2] = fmaf(pv, b.z, acc[i][c * 4 + 2]);
          acc[i][c * 4 + 3] = fmaf(pv, b.w, acc[i][c * 4 + 3]);
        }
      }
  }
}

/* Max / sum over the 16 lanes of a half-warp (xor partners add the same two
 * numbers, so all 16 agree to the bit). */
__device__ __forceinline__ float half_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
  return v;
}
__device__ __forceinline__ float half_sum(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
  return v;
}

/* Write rows of a 64×D accumulator tile (rows 4ty+i of the tile starting at
 * sequence row r0; valid rows < L) scaled by mul[i], to X [*, H, D] head hd. */
template <int D>
__device__ __forceinline__ void store_tile(float *X, uint16_t *Xb, float (*acc)[D / 16], const float mul[4], int s0,
                                           int r0, int L, int H, int hd, int ty, int tx) {
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int r = r0 + ty * 4 + i;
    if (r >= L) continue;
    size_t base = ((size_t)(s0 + r) * H + hd) * D;
#pragma unroll
    for (int c = 0; c < D / 64; c++) {
      float4 v = make_float4(acc[i][c * 4] * mul[i], acc[i][c * 4 + 1] * mul[i], acc[i][c * 4 + 2] * mul[i],
                             acc[i][c * 4 + 3] * mul[i]);
      size_t o = base + c * 64 + tx * 4;
      if (X) *reinterpret_cast<float4 *>(X + o) = v;
      if (Xb) stf4(Xb, o, v);
    }
  }
}

/* Shared memory of each kernel, in floats. */
template <int D> constexpr int fwd_smem() { return BM * D + 2 * BN * (D + 4) + BM * PLD; }
template <int D> constexpr int dq_smem() { return 2 * BM * D + 2 * BN * (D + 4) + BM * PLD; }
template <int D> constexpr int dkv_smem() { return 2 * BM * D + 2 * BN * (D + 4) + BM * PLD + 2 * BN; }

/* Forward: grid (query-tile slots, Hq, n_seq). */
template <int D>
__global__ void __launch_bounds__(NT, 2) attn_fwd_kernel(attn_args a) {
  extern __shared__ float4 smem4[];
  float *Qs = reinterpret_cast<float *>(smem4), *Ks = Qs + BM * D, *Vs = Ks + BN * (D + 4), *Ps = Vs + BN * (D + 4);
  const int h = blockIdx.y, s = blockIdx.z, g = h / a.rep, tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
  const int s0 = a.off[s], L = a.off[s + 1] - s0, nqt = (L + BM - 1) / BM;
  for (int qt = nqt - 1 - (int)blockIdx.x; qt >= 0; qt -= gridDim.x) { /* longest tiles first */
    const int i0 = qt * BM;
    __syncthreads();
    load_rows<D>(Qs, D, a.q + ((size_t)(s0 + i0) * a.Hq + h) * D, (size_t)a.Hq * D, BM, min(BM, L - i0));
    float m[4], l[4], o[4][D / 16];
#pragma unroll
    for (int i = 0; i < 4; i++) {
      m[i] = -INFINITY, l[i] = 0.f;
#pragma unroll
      for (int c = 0; c < D / 16; c++) o[i][c] = 0.f;
    }
    const int kend = min(L, i0 + BM);
    for (int j0 = 0; j0 < kend; j0 += BN) {
      load_rows<D>(Ks, D + 4, a.k + ((size_t)(s0 + j0) * a.Hkv + g) * D, (size_t)a.Hkv * D, BN, min(BN, L - j0));
      load_rows<D>(Vs, D + 4, a.v + ((size_t)(s0 + j0) * a.Hkv + g) * D, (size_t)a.Hkv * D, BN, min(BN, L - j0));
      __syncthreads();
      float sc[4][2];
      tile_dot<D>(sc, Qs, D, Ks, D + 4, ty, tx);
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int qi = i0 + ty * 4 + i;
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 2; j++) {
          const int kj = j0 + tx + 16 * j;
          sc[i][j] = (kj <= qi && kj < L) ? sc[i][j] * a.scale : -INFINITY;
          mx = fmaxf(mx, sc[i][j]);
        }
        /* key 0 is visible to every row, so mn is finite from the first tile on */
        const float mn = fmaxf(m[i], half_max(mx)), alpha = expf(m[i] - mn);
        float rs = 0.f;
#pragma unroll
        for (int j = 0; j < 2; j++) {
          const float p = expf(sc[i][j] - mn);
          Ps[(ty * 4 + i) * PLD + tx + 16 * j] = p;
          rs += p;
        }
        l[i] = l[i] * alpha + half_sum(rs);
        m[i] = mn;
#pragma unroll
        for (int c = 0; c < D / 16; c++) o[i][c] *= alpha;
      }
      __syncthreads();
      tile_acc<D>(o, Ps, Vs, D + 4, ty, tx);
      __syncthreads();
    }
    float inv[4];
#pragma unroll
    for (int i = 0; i < 4; i++) inv[i] = 1.0f / l[i];
    store_tile<D>(a.out, a.out_bf16, o, inv, s0, i0, L, a.Hq, h, ty, tx);
    if (a.lse_out && tx == 0)
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int qi = i0 + ty * 4 + i;
        if (qi < L) a.lse_out[(size_t)(s0 + qi) * a.Hq + h] = m[i] + logf(l[i]);
      }
  }
}

/* δ[r] = Σ_d dout[r,d]·out[r,d], one warp per row. */
template <int D>
__global__ void attn_delta_kernel(float *delta, const float *dout, const float *out, int64_t rows) {
  int lane = threadIdx.x & 31;
  int64_t r = (int64_t)blockIdx.x * (NT / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  float s = 0.f;
#pragma unroll
  for (int d = lane; d < D; d += 32) s += dout[r * D + d] * out[r * D + d];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(FULL, s, o);
  if (lane == 0) delta[r] = s;
}

/* dQ: grid (query-tile slots, Hq, n_seq). */
template <int D>
__global__ void __launch_bounds__(NT, 2) attn_dq_kernel(attn_args a) {
  extern __shared__ float4 smem4[];
  float *Qs = reinterpret_cast<float *>(smem4), *dOs = Qs + BM * D, *Ks = dOs + BM * D, *Vs = Ks + BN * (D + 4),
        *dSs = Vs + BN * (D + 4);
  const int h = blockIdx.y, s = blockIdx.z, g = h / a.rep, tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
  const int s0 = a.off[s], L = a.off[s + 1] - s0, nqt = (L + BM - 1) / BM;
  for (int qt = nqt - 1 - (int)blockIdx.x; qt >= 0; qt -= gridDim.x) {
    const int i0 = qt * BM;
    __syncthreads();
    const size_t qrow = ((size_t)(s0 + i0) * a.Hq + h) * D;
    load_rows<D>(Qs, D, a.q + qrow, (size_t)a.Hq * D, BM, min(BM, L - i0));
    load_rows<D>(dOs, D, a.dout + qrow, (size_t)a.Hq * D, BM, min(BM, L - i0));
    float lse[4], del[4], acc[4][D / 16];
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int qi = i0 + ty * 4 + i;
      const size_t r = (size_t)(s0 + qi) * a.Hq + h;
      lse[i] = qi < L ? a.lse[r] : 0.f;
      del[i] = qi < L ? a.delta[r] : 0.f;
#pragma unroll
      for (int c = 0; c < D / 16; c++) acc[i][c] = 0.f;
    }
    const int kend = min(L, i0 + BM);
    for (int j0 = 0; j0 < kend; j0 += BN) {
      load_rows<D>(Ks, D + 4, a.k + ((size_t)(s0 + j0) * a.Hkv + g) * D, (size_t)a.Hkv * D, BN, min(BN, L - j0));
      load_rows<D>(Vs, D + 4, a.v + ((size_t)(s0 + j0) * a.Hkv + g) * D, (size_t)a.Hkv * D, BN, min(BN, L - j0));
      __syncthreads();
      float sc[4][2], dp[4][2];
      tile_dot<D>(sc, Qs, D, Ks, D + 4, ty, tx);
      tile_dot<D>(dp, dOs, D, Vs, D + 4, ty, tx);
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
          const int qi = i0 + ty * 4 + i, kj = j0 + tx + 16 * j;
          const float p = (kj <= qi && kj < L && qi < L) ? expf(sc[i][j] * a.scale - lse[i]) : 0.f;
          dSs[(ty * 4 + i) * PLD + tx + 16 * j] = p * (dp[i][j] - del[i]);
        }
      __syncthreads();
      tile_acc<D>(acc, dSs, Ks, D + 4, ty, tx);
      __syncthreads();
    }
    const float mul[4] = {a.scale, a.scale, a.scale, a.scale};
    store_tile<D>(a.dq, NULL, acc, mul, s0, i0, L, a.Hq, h, ty, tx);
  }
}

/* dK, dV: grid (key-tile slots, Hkv, n_seq). */
template <int D>
__global__ void __launch_bounds__(NT, 2) attn_dkv_kernel(attn_args a) {
  extern __shared__ float4 smem4[];
  float *Ks = reinterpret_cast<float *>(smem4), *Vs = Ks + BM * D, *Qs = Vs + BM * D, *dOs = Qs + BN * (D + 4),
        *Ps = dOs + BN * (D + 4), *lses = Ps + BM * PLD, *dels = lses + BN;
  const int g = blockIdx.y, s = blockIdx.z, tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;
  const int s0 = a.off[s], L = a.off[s + 1] - s0, nkt = (L + BM - 1) / BM;
  for (int kt = blockIdx.x; kt < nkt; kt += gridDim.x) { /* the first key tiles see the most queries */
    const int j0 = kt * BM;
    __syncthreads();
    load_rows<D>(Ks, D, a.k + ((size_t)(s0 + j0) * a.Hkv + g) * D, (size_t)a.Hkv * D, BM, min(BM, L - j0));
    load_rows<D>(Vs, D, a.v + ((size_t)(s0 + j0) * a.Hkv + g) * D, (size_t)a.Hkv * D, BM, min(BM, L - j0));
    float dk[4][D / 16], dv[4][D / 16];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int c = 0; c < D / 16; c++) dk[i][c] = dv[i][c] = 0.f;
    for (int h = g * a.rep; h < (g + 1) * a.rep; h++)
      for (int i0 = j0; i0 < L; i0 += BN) { /* queries before the tile's first key see none of it */
        __syncthreads();
        const size_t qrow = ((size_t)(s0 + i0) * a.Hq + h) * D;
        load_rows<D>(Qs, D + 4, a.q + qrow, (size_t)a.Hq * D, BN, min(BN, L - i0));
        load_rows<D>(dOs, D + 4, a.dout + qrow, (size_t)a.Hq * D, BN, min(BN, L - i0));
        if (tid < BN) {
          const int qi = i0 + tid;
          const size_t r = (size_t)(s0 + qi) * a.Hq + h;
          lses[tid] = qi < L ? a.lse[r] : 0.f;
          dels[tid] = qi < L ? a.delta[r] : 0.f;
        }
        __syncthreads();
        float sc[4][2], dp[4][2];
        tile_dot<D>(sc, Ks, D, Qs, D + 4, ty, tx); /* rows: keys, columns: queries */
        tile_dot<D>(dp, Vs, D, dOs, D + 4, ty, tx);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 2; j++) {
            const int kj = j0 + ty * 4 + i, qc = tx + 16 * j, qi = i0 + qc;
            const float p = (kj <= qi && qi < L) ? expf(sc[i][j] * a.scale - lses[qc]) : 0.f;
            Ps[(ty * 4 + i) * PLD + qc] = p;
            sc[i][j] = p * (dp[i][j] - dels[qc]); /* dS, kept for the second product */
          }
        __syncthreads();
        tile_acc<D>(dv, Ps, dOs, D + 4, ty, tx);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 2; j++) Ps[(ty * 4 + i) * PLD + tx + 16 * j] = sc[i][j];
        __syncthreads();
        tile_acc<D>(dk, Ps, Qs, D + 4, ty, tx);
      }
    const float one[4] = {1.f, 1.f, 1.f, 1.f}, sc4[4] = {a.scale, a.scale, a.scale, a.scale};
    store_tile<D>(a.dk, NULL, dk, sc4, s0, j0, L, a.Hkv, g, ty, tx);
    store_tile<D>(a.dv, NULL, dv, one, s0, j0, L, a.Hkv, g, ty, tx);
  }
}

}  // namespace

/* Host checks shared by forward and backward. */
static int attn_check(const ops_seqs *seqs, int max_len, ops_attn_shape sh, const void *const *ptrs, int nptr,
                      const char *what, rl_err *e) {
  if (sh.n_q_heads <= 0 || sh.n_kv_heads <= 0 || sh.T < 0 || sh.n_q_heads % sh.n_kv_heads)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: %d query heads cannot share %d key/value heads; the query head count must be a "
                   "positive multiple of the key/value head count",
                   what, sh.n_q_heads, sh.n_kv_heads);
  if (sh.head_dim != 64 && sh.head_dim != 128)
    return rl_errf(e, RL_EXIT_HARDWARE,
                   "%s: head_dim %d is not supported by the CUDA attention (64 or 128); use device: cpu",
                   what, sh.head_dim);
  if (!seqs || seqs->n_seq < 0 || (seqs->n_seq > 0 && !seqs->off))
    return rl_errf(e, RL_EXIT_USAGE, "%s: no sequence offsets given for %d tokens", what, sh.T);
  if (seqs->n_seq > 65535 || sh.n_q_heads > 65535)
    return rl_errf(e, RL_EXIT_USAGE, "%s: %d sequences / %d heads in one call; at most 65535 each", what,
                   seqs->n_seq, sh.n_q_heads);
  for (int i = 0; i < nptr; i++)
    if (ptrs[i] && (uintptr_t)ptrs[i] % 16)
      return rl_errf(e, RL_EXIT_USAGE, "%s: tensor argument %d is not 16-byte aligned (use cudaMalloc'd rows)",
                     what, i + 1);
  (void)max_len;
  return 0;
}

/* Grid x: tile slots of a block (≥ 1; any value gives the same result). */
static unsigned attn_slots(int max_len) {
  long n = ((long)(max_len > 0 ? max_len : 1) + BM - 1) / BM;
  return (unsigned)(n > 65535 ? 65535 : n);
}

/* Launch a kernel with its dynamic shared memory (opted in above 48 KiB). */
template <typename K>
static int attn_launch(K kernel, dim3 grid, int smem_floats, const attn_args &a, cudaStream_t st, rl_err *e) {
  size_t bytes = (size_t)smem_floats * sizeof(float);
  OCHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  kernel<<<grid, NT, bytes, st>>>(a);
  OLAUNCH();
  return 0;
}

extern "C" int ops_attention_forward_cuda(float *out, uint16_t *out_bf16, float *lse, const float *q, const float *k,
                                          const float *v, const ops_seqs *seqs, int max_len, ops_attn_shape sh,
                                          void *stream, rl_err *e) {
  const void *p[] = {out, q, k, v};
  if (attn_check(seqs, max_len, sh, p, 4, "attention", e)) return e ? e->code : RL_EXIT_USAGE;
  if (out_bf16 && (uintptr_t)out_bf16 % 8)
    return rl_errf(e, RL_EXIT_USAGE, "attention: the BF16 output is not 8-byte aligned");
  if (sh.T == 0 || seqs->n_seq == 0) return 0;
  ops_attn_impl impl;
  if (ops_attention_choose(sh.head_dim, &impl, e)) return e ? e->code : RL_EXIT_USAGE;
  if (impl == OPS_ATTN_TC) return ops_attention_forward_tc_cuda(out, out_bf16, lse, q, k, v, seqs, max_len, sh, stream, e);
  attn_args a = {};
  a.q = q, a.k = k, a.v = v, a.out = out, a.out_bf16 = out_bf16, a.lse_out = lse, a.off = seqs->off;
  a.Hq = sh.n_q_heads, a.Hkv = sh.n_kv_heads, a.rep = sh.n_q_heads / sh.n_kv_heads;
  a.scale = (float)(1.0 / sqrt((double)sh.head_dim));
  dim3 grid(attn_slots(max_len), sh.n_q_heads, seqs->n_seq);
  cudaStream_t st = (cudaStream_t)stream;
  if (sh.head_dim == 128) return attn_launch(attn_fwd_kernel<128>, grid, fwd_smem<128>(), a, st, e);
  return attn_launch(attn_fwd_kernel<64>, grid, fwd_smem<64>(), a, st, e);
}

/* The BF16-operand forms take the tensor-core kernels only (ops.h). */
static int attn_bx_impl(int head_dim, const char *what, rl_err *e) {
  ops_attn_impl impl;
  if (ops_attention_choose(head_dim, &impl, e)) return e ? e->code : RL_EXIT_USAGE;
  if (impl != OPS_ATTN_TC)
    return rl_errf(e, RL_EXIT_USAGE, "%s: BF16 operands need the tensor-core kernels (RLRUN_ATTN=tc), not the SIMT ones",
                   what);
  return 0;
}

extern "C" int ops_attention_forward_bx_cuda(float *out, uint16_t *out_bf16, float *lse, const uint16_t *q,
                                             const uint16_t *k, const uint16_t *v, const ops_seqs *seqs, int max_len,
                                             ops_attn_shape sh, void *stream, rl_err *e) {
  const void *p[] = {out, q, k, v};
  if (attn_check(seqs, max_len, sh, p, 4, "attention", e)) return e ? e->code : RL_EXIT_USAGE;
  if (out_bf16 && (uintptr_t)out_bf16 % 8)
    return rl_errf(e, RL_EXIT_USAGE, "attention: the BF16 output is not 8-byte aligned");
  if (attn_bx_impl(sh.head_dim, "attention", e)) return e->code;
  return ops_attention_forward_tc_bx_cuda(out, out_bf16, lse, q, k, v, seqs, max_len, sh, stream, e);
}

extern "C" int ops_attention_backward_bx_cuda(float *dq, float *dk, float *dv, const uint16_t *dout, const float *out,
                                              const float *lse, const uint16_t *q, const uint16_t *k,
                                              const uint16_t *v, const ops_seqs *seqs, int max_len,
                                              ops_attn_shape sh, void *stream, rl_err *e) {
  const void *p[] = {dq, dk, dv, dout, out, q, k, v};
  if (attn_check(seqs, max_len, sh, p, 8, "attention backward", e)) return e ? e->code : RL_EXIT_USAGE;
  if (attn_bx_impl(sh.head_dim, "attention backward", e)) return e->code;
  return ops_attention_backward_tc_bx_cuda(dq, dk, dv, dout, out, lse, q, k, v, seqs, max_len, sh, stream, e);
}

extern "C" int ops_attention_backward_cuda(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                           const float *lse, const float *q, const float *k, const float *v,
                                           const ops_seqs *seqs, int max_len, ops_attn_shape sh, void *stream,
                                           rl_err *e) {
  const void *p[] = {dq, dk, dv, dout, out, q, k, v};
  if (attn_check(seqs, max_len, sh, p, 8, "attention backward", e)) return e ? e->code : RL_EXIT_USAGE;
  if (sh.T == 0 || seqs->n_seq == 0) return 0;
  ops_attn_impl impl;
  if (ops_attention_choose(sh.head_dim, &impl, e)) return e ? e->code : RL_EXIT_USAGE;
  if (impl == OPS_ATTN_TC)
    return ops_attention_backward_tc_cuda(dq, dk, dv, dout, out, lse, q, k, v, seqs, max_len, sh, stream, e);
  cudaStream_t st = (cudaStream_t)stream;
  int64_t rows = (int64_t)sh.T * sh.n_q_heads;
  float *delta = NULL;
  OCHECK(cudaMallocAsync((void **)&delta, (size_t)rows * sizeof(float), st));
  unsigned dblocks = (unsigned)((rows + NT / 32 - 1) / (NT / 32));
  if (sh.head_dim == 128) attn_delta_kernel<128><<<dblocks, NT, 0, st>>>(delta, dout, out, rows);
  else attn_delta_kernel<64><<<dblocks, NT, 0, st>>>(delta, dout, out, rows);
  int rc = 0;
  if (cudaGetLastError() != cudaSuccess) rc = rl_errf(e, RL_EXIT_HARDWARE, "attention backward: δ kernel launch failed");
  attn_args a = {};
  a.q = q, a.k = k, a.v = v, a.o = out, a.dout = dout, a.lse = lse, a.delta = delta;
  a.dq = dq, a.dk = dk, a.dv = dv, a.off = seqs->off;
  a.Hq = sh.n_q_heads, a.Hkv = sh.n_kv_heads, a.rep = sh.n_q_heads / sh.n_kv_heads;
  a.scale = (float)(1.0 / sqrt((double)sh.head_dim));
  dim3 gq(attn_slots(max_len), sh.n_q_heads, seqs->n_seq), gk(attn_slots(max_len), sh.n_kv_heads, seqs->n_seq);
  if (!rc) {
    if (sh.head_dim == 128) rc = attn_launch(attn_dq_kernel<128>, gq, dq_smem<128>(), a, st, e);
    else rc = attn_launch(attn_dq_kernel<64>, gq, dq_smem<64>(), a, st, e);
  }
  if (!rc) {
    if (sh.head_dim == 128) rc = attn_launch(attn_dkv_kernel<128>, gk, dkv_smem<128>(), a, st, e);
    else rc = attn_launch(attn_dkv_kernel<64>, gk, dkv_smem<64>(), a, st, e);
  }
  cudaError_t fr = cudaFreeAsync(delta, st);
  if (!rc && fr != cudaSuccess)
    rc = rl_errf(e, RL_EXIT_HARDWARE, "attention backward: cudaFreeAsync: %s", cudaGetErrorString(fr));
  return rc;
}
