/* ops_attn_tc_cuda.cu — causal GQA attention on packed sequences with BF16
 * tensor cores (FlashAttention-2 style): the OPS_ATTN_TC kernels behind
 * ops_attention_{forward,backward}_cuda (see ops.h), head_dim 64 and 128.
 *
 * Numerics: q, k, v (and dout) are rounded to BF16 (RNE) once, by a
 * conversion pass into a stream-ordered workspace; every matrix product is
 * mma.sync m16n8k16 with BF16 operands and FP32 accumulation; softmax, lse,
 * δ = dO·O and the masks are FP32. P (forward, dV) and dS (dQ, dK) are rounded
 * to BF16 as mma operands — what FlashAttention and every BF16 framework do.
 *
 * Layout: a block of 4 warps (128 threads) owns a 64-row tile, 16 rows a warp;
 * the other side streams through shared memory in 64-row tiles, double-
 * buffered with cp.async (tile j+1 is in flight while tile j is computed).
 * Shared rows are padded to D + 8 BF16 (a 16-byte shift per row) so the
 * 8 row addresses of each ldmatrix phase hit distinct banks.
 *
 *   forward  block = 64 queries of one q head; Q fragments live in registers,
 *            S = Q Kᵀ and the online softmax (max, sum) in registers, P goes
 *            from the S accumulators straight into the A operand of P V.
 *   dQ       block = 64 queries of one q head; per key tile S = Q Kᵀ,
 *            dP = dO Vᵀ, P = exp(S − lse), dS = P ∘ (dP − δ), dQ += dS K.
 *   dK, dV   block = 64 keys of one kv head; walks the q heads of its group
 *            and their query tiles (from the key tile's diagonal) in order,
 *            32 queries at a time: Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, dV += Pᵀ dO,
 *            dK += dSᵀ Q. One owner per output: no atomics, deterministic.
 *
 * As in the SIMT kernels, tiles start at the sequence start and every sum
 * runs in an order fixed by the sequence length alone, so a sequence gives the
 * same bits alone or inside any packed batch, for any max_len hint. */
#include <cuda_bf16.h>

#include "kernels/ops_cuda_util.cuh" /* OCHECK, OLAUNCH, FULL, C linkage of common.h */
#include "kernels/ptx_util.cuh"

namespace {

constexpr int TNT = 128; /* threads per block: 4 warps */
constexpr int TB = 64;   /* rows of every tile (own and streamed) */
constexpr float LOG2E = 1.4426950408889634f;

/* Arguments shared by the tensor-core kernels (BF16 copies of the inputs). */
struct tc_args {
  const uint16_t *q, *k, *v, *dout;
  const float *lse, *delta;
  float *out, *lse_out, *dq, *dk, *dv;
  uint16_t *out_bf16;
  const int32_t *off;
  int Hq, Hkv, rep;
  float scale;
};

/* ---------------------------------------------------------------- PTX wrappers
 * (smem_u32, cp.async, mma16816: kernels/ptx_util.cuh) */

/* Four 8×8 BF16 matrices from shared memory (lane l gives a row address of
 * matrix l / 8); .trans delivers them transposed. */
__device__ __forceinline__ void ldsm4(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm4t(uint32_t r[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/* Two FP32 → one BF16 pair (RNE), lo in the low half (the lower column). */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t *>(&v);
}

/* The A operand (16 rows × 16) of columns 16kk..16kk+15 from two adjacent
 * 16×8 accumulators (n-blocks 2kk and 2kk+1): FA2's register reuse of P. */
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float c0[4], const float c1[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

/* ---------------------------------------------------------------- tiles */

/* Start copying 64 rows of D BF16 (global row stride gs elements) into a
 * shared tile of row stride D + 8; rows ≥ nvalid and columns ≥ ncols (a
 * multiple of 8: the decode kernel's unpadded cache rows) become zeros. */
template <int D>
__device__ __forceinline__ void tile_load(uint16_t *S, const uint16_t *G, size_t gs, int nvalid, int ncols = D) {
  constexpr int CH = D / 8; /* 16-byte chunks per row */
#pragma unroll
  for (int idx = threadIdx.x; idx < TB * CH; idx += TNT) {
    const int r = idx / CH, c = (idx % CH) * 8;
    const bool ok = r < nvalid && c < ncols;
    cp_async16(smem_u32(S + r * (D + 8) + c), G + (ok ? (size_t)r * gs + c : 0), ok ? 16 : 0);
  }
}

/* A fragment (rows r0..r0+15, columns c0..c0+15) of a row-major shared tile. */
template <int D>
__device__ __forceinline__ void frag_a(uint32_t a[4], const uint16_t *S, int r0, int c0, int lane) {
  ldsm4(a, smem_u32(S + (r0 + (lane & 15)) * (D + 8) + c0 + (lane >> 4) * 8));
}
/* B fragments of two n-blocks where B[k][n] = S[n0 + n][k0 + k] (the tile is
 * the transposed operand, e.g. K for Q Kᵀ): b[0..1] for n0..n0+7, b[2..3] for
 * n0+8..n0+15. */
template <int D>
__device__ __forceinline__ void frag_bt(uint32_t b[4], const uint16_t *S, int n0, int k0, int lane) {
  ldsm4(b, smem_u32(S + (n0 + (lane >> 4) * 8 + (lane & 7)) * (D + 8) + k0 + ((lane >> 3) & 1) * 8));
}
/* B fragments of two n-blocks where B[k][n] = S[k0 + k][n0 + n] (the tile is
 * the operand itself, e.g. V for P V): b[0..1] for n0..n0+7, b[2..3] for n0+8... */
template <int D>
__device__ __forceinline__ void frag_b(uint32_t b[4], const uint16_t *S, int k0, int n0, int lane) {
  ldsm4t(b, smem_u32(S + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * (D + 8) + n0 + (lane >> 4) * 8));
}

/* acc[nb] (16 rows × 8·NB columns) += A-tile rows [r0, r0+16) · Bᵀ-tile rows
 * [n0, n0 + 8·NB), over all D columns of both (S = Q Kᵀ and the like). */
template <int D, int NB>
__device__ __forceinline__ void mma_abt(float acc[][4], const uint16_t *A, int r0, const uint16_t *Bt, int n0,
                                        int lane) {
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    uint32_t a[4];
    frag_a<D>(a, A, r0, kk * 16, lane);
#pragma unroll
    for (int nb = 0; nb < NB; nb += 2) {
      uint32_t b[4];
      frag_bt<D>(b, Bt, n0 + nb * 8, kk * 16, lane);
      mma16816(acc[nb], a, b[0], b[1]);
      mma16816(acc[nb + 1], a, b[2], b[3]);
    }
  }
}

/* acc[nb] (16 × D) += P (16 × 16·KS, accumulator layout, n-blocks 2kk, 2kk+1 per
 * k-step) · B-tile rows [k0, k0 + 16·KS) (P V, dS K, Pᵀ dO, dSᵀ Q). */
template <int D, int KS>
__device__ __forceinline__ void mma_pb(float acc[][4], const float p[][4], const uint16_t *B, int k0, int lane) {
#pragma unroll
  for (int kk = 0; kk < KS; kk++) {
    uint32_t a[4];
    acc_to_a(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
    for (int db = 0; db < D / 16; db++) {
      uint32_t b[4];
      frag_b<D>(b, B, k0 + kk * 16, db * 16, lane);
      mma16816(acc[2 * db], a, b[0], b[1]);
      mma16816(acc[2 * db + 1], a, b[2], b[3]);
    }
  }
}

/* Write a warp's 16 × D accumulator rows (row0 + gr, row0 + gr + 8 of the
 * sequence; rows ≥ L skipped) times mul[rh] to X [*, H, D] head hd (+ BF16). */
template <int D>
__device__ __forceinline__ void acc_store(float *X, uint16_t *Xb, const float acc[][4], const float mul[2], int s0,
                                          int row0, int L, int H, int hd, int lane) {
  const int gr = lane >> 2, tg = lane & 3;
#pragma unroll
  for (int rh = 0; rh < 2; rh++) {
    const int r = row0 + gr + rh * 8;
    if (r >= L) continue;
    const size_t base = ((size_t)(s0 + r) * H + hd) * D + 2 * tg;
#pragma unroll
    for (int nb = 0; nb < D / 8; nb++) {
      const float x0 = acc[nb][2 * rh] * mul[rh], x1 = acc[nb][2 * rh + 1] * mul[rh];
      if (X) *reinterpret_cast<float2 *>(X + base + nb * 8) = make_float2(x0, x1);
      if (Xb)
        *reinterpret_cast<uint32_t *>(Xb + base + nb * 8) =
            (uint32_t)fmt_bf16_from_f32(x0) | ((uint32_t)fmt_bf16_from_f32(x1) << 16);
    }
  }
}

/* Shared memory of each kernel, in bytes: tiles of 64 × (D + 8) BF16. */
template <int D> __host__ __device__ constexpr int tile_elems() { return TB * (D + 8); }
template <int D> constexpr int fwd_bytes() { return 5 * tile_elems<D>() * 2; }
template <int D> constexpr int dq_bytes() { return 6 * tile_elems<D>() * 2; }
template <int D> constexpr int dkv_bytes() { return 6 * tile_elems<D>() * 2 + 4 * TB * 4; }

/* ---------------------------------------------------------------- forward */

/* The forward's arithmetic for the 64-query tile qt of one sequence (queries
 * i0 = 64·qt …, their Q tile in Qs: its cp.async group committed, or plain
 * stores before a barrier) against key tiles 0 … qt (keys kseq / vseq, row
 * stride ks, L keys valid, kcols columns of each key row, zeros past them;
 * Ks and Vs two stages each): o (unnormalised), the row max m (unscaled) and
 * the row sum l (this warp's rows: gr, gr + 8; summed over the row's 4 lanes
 * on return). A row's query position is its place in the tile (i0 + its row),
 * or qpos for every row when qpos >= 0 (the decode kernel's rows: query heads
 * of one position). The forward kernel and the decode kernel share it, so a
 * decode row gets the forward's bits: every product, exp and sum in the same
 * order (a row's arithmetic does not depend on the other rows of the tile). */
template <int D>
__device__ __forceinline__ void fwd_rows(float o[][4], float m[2], float l[2], const uint16_t *Qs, uint16_t *Ks,
                                         uint16_t *Vs, const uint16_t *kseq, const uint16_t *vseq, size_t ks, int L,
                                         int qt, int kcols, float sl2, int qpos) {
  constexpr int TE = tile_elems<D>();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tg = lane & 3;
  const int i0 = qt * TB;
  uint32_t qf[D / 16][4];
  m[0] = m[1] = -INFINITY, l[0] = l[1] = 0.f;
#pragma unroll
  for (int nb = 0; nb < D / 8; nb++) o[nb][0] = o[nb][1] = o[nb][2] = o[nb][3] = 0.f;
  for (int jt = 0; jt <= qt; jt++) {
    const int j0 = jt * TB, st = jt & 1;
    if (jt < qt) { /* next key tile in flight while this one is used */
      tile_load<D>(Ks + (st ^ 1) * TE, kseq + (size_t)(j0 + TB) * ks, ks, min(TB, L - j0 - TB), kcols);
      tile_load<D>(Vs + (st ^ 1) * TE, vseq + (size_t)(j0 + TB) * ks, ks, min(TB, L - j0 - TB), kcols);
      cp_commit();
      cp_wait<1>();
    } else {
      cp_wait<0>();
    }
    __syncthreads();
    if (jt == 0)
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) frag_a<D>(qf[kk], Qs, warp * 16, kk * 16, lane);
    const uint16_t *Kt = Ks + st * TE, *Vt = Vs + st * TE;
    float sc[TB / 8][4];
#pragma unroll
    for (int nb = 0; nb < TB / 8; nb++) sc[nb][0] = sc[nb][1] = sc[nb][2] = sc[nb][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
#pragma unroll
      for (int nb = 0; nb < TB / 8; nb += 2) {
        uint32_t b[4];
        frag_bt<D>(b, Kt, nb * 8, kk * 16, lane);
        mma16816(sc[nb], qf[kk], b[0], b[1]);
        mma16816(sc[nb + 1], qf[kk], b[2], b[3]);
      }
    /* online softmax, rows gr (rh = 0) and gr + 8 (rh = 1) of the warp */
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
      const int qi = qpos >= 0 ? qpos : i0 + warp * 16 + gr + rh * 8;
      float mx = m[rh];
#pragma unroll
      for (int nb = 0; nb < TB / 8; nb++)
#pragma unroll
        for (int e2 = 0; e2 < 2; e2++) {
          const int kj = j0 + nb * 8 + 2 * tg + e2;
          float &x = sc[nb][2 * rh + e2];
          if (jt == qt && (kj > qi || kj >= L)) x = -INFINITY; /* only the diagonal tile masks */
          mx = fmaxf(mx, x);
        }
      mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, 2));
      /* key 0 is visible to every row, so mx is finite from the first tile on */
      const float mxs = mx * sl2, alpha = exp2f(m[rh] * sl2 - mxs);
      float rs = 0.f;
#pragma unroll
      for (int nb = 0; nb < TB / 8; nb++)
#pragma unroll
        for (int e2 = 0; e2 < 2; e2++) {
          float &x = sc[nb][2 * rh + e2];
          x = exp2f(fmaf(x, sl2, -mxs));
          rs += x;
        }
      l[rh] = l[rh] * alpha + rs; /* this lane's part of the row sum */
      m[rh] = mx;
#pragma unroll
      for (int nb = 0; nb < D / 8; nb++) o[nb][2 * rh] *= alpha, o[nb][2 * rh + 1] *= alpha;
    }
    mma_pb<D, TB / 16>(o, sc, Vt, 0, lane);
    __syncthreads(); /* stage st is refilled by the next iteration */
  }
#pragma unroll
  for (int rh = 0; rh < 2; rh++) {
    float t = l[rh];
    t += __shfl_xor_sync(FULL, t, 1);
    t += __shfl_xor_sync(FULL, t, 2);
    l[rh] = t;
  }
}

/* Forward: grid (query-tile slots, Hq, n_seq). */
template <int D>
__global__ void __launch_bounds__(TNT, 2) attn_tc_fwd_kernel(tc_args a) {
  extern __shared__ uint4 tc_smem[];
  constexpr int TE = tile_elems<D>();
  uint16_t *Qs = reinterpret_cast<uint16_t *>(tc_smem), *Ks = Qs + TE, *Vs = Ks + 2 * TE;
  const int h = blockIdx.y, s = blockIdx.z, g = h / a.rep;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tg = lane & 3;
  const int s0 = a.off[s], L = a.off[s + 1] - s0, nqt = (L + TB - 1) / TB;
  const size_t qs = (size_t)a.Hq * D, ks = (size_t)a.Hkv * D;
  const uint16_t *kseq = a.k + ((size_t)s0 * a.Hkv + g) * D, *vseq = a.v + ((size_t)s0 * a.Hkv + g) * D;
  const float sl2 = a.scale * LOG2E;
  for (int qt = nqt - 1 - (int)blockIdx.x; qt >= 0; qt -= gridDim.x) { /* longest tiles first */
    const int i0 = qt * TB;
    __syncthreads(); /* the previous tile's reads of shared memory are done */
    tile_load<D>(Qs, a.q + ((size_t)(s0 + i0) * a.Hq + h) * D, qs, min(TB, L - i0));
    tile_load<D>(Ks, kseq, ks, min(TB, L));
    tile_load<D>(Vs, vseq, ks, min(TB, L));
    cp_commit();
    float o[D / 8][4], m[2], l[2];
    fwd_rows<D>(o, m, l, Qs, Ks, Vs, kseq, vseq, ks, L, qt, D, sl2, -1);
    const float inv[2] = {1.0f / l[0], 1.0f / l[1]};
    acc_store<D>(a.out, a.out_bf16, o, inv, s0, i0 + warp * 16, L, a.Hq, h, lane);
    if (a.lse_out && tg == 0)
#pragma unroll
      for (int rh = 0; rh < 2; rh++) {
        const int qi = i0 + warp * 16 + gr + rh * 8;
        if (qi < L) a.lse_out[(size_t)(s0 + qi) * a.Hq + h] = m[rh] * a.scale + logf(l[rh]);
      }
  }
}

/* Arguments of the decode kernel: one query row per sequence against the
 * rollout engine's KV cache (stages/rollout_cuda.c; layer-major
 * [slot][Hkv][max_len][hd] BF16 rows, hd ≤ D columns, the rest read as zeros). */
struct tc_dec_args {
  const float *q;      /* [n][Hq][hd] FP32, rounded to BF16 after × qscale; or */
  const uint16_t *qb;  /* [n][Hq][hd] BF16 as it is (when not NULL) */
  const uint16_t *kc, *vc;
  const int32_t *slot, *len;
  float *out;          /* [n][Hq][hd] */
  uint16_t *out_bf16;  /* same, BF16 (may be NULL) */
  int Hq, Hkv, rep, hd;
  int64_t max_len;
  float qscale, scale;
};

/* Decode: grid (Hkv, n). Row i's rep query heads of KV head g (position p =
 * len[i] − 1) are rows 0 … rep − 1 of one query tile (the other rows zero),
 * every row at position p, run by fwd_rows over the cached keys 0 … p: the
 * forward's bits for each (ops.h ops_attention_decode_tc_cuda), the group's
 * keys and values read once. */
template <int D>
__global__ void __launch_bounds__(TNT, 2) attn_tc_dec_kernel(tc_dec_args a) {
  extern __shared__ uint4 tc_smem[];
  constexpr int TE = tile_elems<D>();
  uint16_t *Qs = reinterpret_cast<uint16_t *>(tc_smem), *Ks = Qs + TE, *Vs = Ks + 2 * TE;
  const int g = blockIdx.x, i = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tg = lane & 3;
  const int L = a.len[i], qt = (L - 1) / TB;
  const size_t ks = (size_t)a.hd;
  const size_t cbase = ((size_t)a.slot[i] * a.Hkv + g) * (size_t)a.max_len * a.hd;
  const uint16_t *kseq = a.kc + cbase, *vseq = a.vc + cbase;
  tile_load<D>(Ks, kseq, ks, min(TB, L), a.hd);
  tile_load<D>(Vs, vseq, ks, min(TB, L), a.hd);
  cp_commit();
  const size_t qrow0 = ((size_t)i * a.Hq + (size_t)g * a.rep) * a.hd; /* head g·rep + row */
  for (int idx = threadIdx.x; idx < TB * D; idx += TNT) { /* the Q tile: rows < rep, zeros elsewhere */
    const int row = idx / D, c = idx % D;
    uint16_t v = 0;
    if (row < a.rep && c < a.hd) {
      const size_t qi = qrow0 + (size_t)row * a.hd + c;
      v = a.qb ? a.qb[qi] : fmt_bf16_from_f32(__fmul_rn(a.q[qi], a.qscale));
    }
    Qs[row * (D + 8) + c] = v;
  }
  float o[D / 8][4], m[2], l[2];
  fwd_rows<D>(o, m, l, Qs, Ks, Vs, kseq, vseq, ks, L, qt, a.hd, a.scale * LOG2E, L - 1);
#pragma unroll
  for (int rh = 0; rh < 2; rh++) {
    const int row = warp * 16 + gr + rh * 8;
    if (row >= a.rep) continue;
    const float inv = 1.0f / l[rh];
    const size_t qrow = qrow0 + (size_t)row * a.hd;
    for (int nb = 0; nb < D / 8; nb++) {
      const int c = nb * 8 + 2 * tg;
      if (c >= a.hd) break;
      const float x0 = o[nb][2 * rh] * inv, x1 = o[nb][2 * rh + 1] * inv;
      *reinterpret_cast<float2 *>(a.out + qrow + c) = make_float2(x0, x1);
      if (a.out_bf16)
        *reinterpret_cast<uint32_t *>(a.out_bf16 + qrow + c) =
            (uint32_t)fmt_bf16_from_f32(x0) | ((uint32_t)fmt_bf16_from_f32(x1) << 16);
    }
  }
}

/* ---------------------------------------------------------------- backward */

/* dst = BF16 (RNE) of src, n a multiple of 4, 16-byte aligned. */
__global__ void tc_bf16_kernel(uint16_t *dst, const float *src, int64_t n4) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
    stf4(dst, (size_t)i * 4, __ldg(reinterpret_cast<const float4 *>(src) + i));
  }
}

/* δ[r] = Σ_d dout[r,d]·out[r,d] in FP32 (dout FP32 or BF16: TDO), one warp per row. */
template <int D, typename TDO>
__global__ void tc_delta_kernel(float *delta, const TDO *dout, const float *out, int64_t rows) {
  const int lane = threadIdx.x & 31;
  const int64_t r = (int64_t)blockIdx.x * (TNT / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;
  float s = 0.f;
#pragma unroll
  for (int d = lane; d < D; d += 32) s += ldf(dout, r * D + d) * out[r * D + d];
  s = warp_sum(s);
  if (lane == 0) delta[r] = s;
}

/* dQ: grid (query-tile slots, Hq, n_seq). */
template <int D>
__global__ void __launch_bounds__(TNT, 2) attn_tc_dq_kernel(tc_args a) {
  extern __shared__ uint4 tc_smem[];
  constexpr int TE = tile_elems<D>();
  uint16_t *Qs = reinterpret_cast<uint16_t *>(tc_smem), *dOs = Qs + TE, *Ks = dOs + TE, *Vs = Ks + 2 * TE;
  const int h = blockIdx.y, s = blockIdx.z, g = h / a.rep;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tg = lane & 3;
  const int s0 = a.off[s], L = a.off[s + 1] - s0, nqt = (L + TB - 1) / TB;
  const size_t qs = (size_t)a.Hq * D, ks = (size_t)a.Hkv * D;
  const uint16_t *kseq = a.k + ((size_t)s0 * a.Hkv + g) * D, *vseq = a.v + ((size_t)s0 * a.Hkv + g) * D;
  const float sl2 = a.scale * LOG2E;
  for (int qt = nqt - 1 - (int)blockIdx.x; qt >= 0; qt -= gridDim.x) {
    const int i0 = qt * TB;
    __syncthreads();
    const size_t qrow = ((size_t)(s0 + i0) * a.Hq + h) * D;
    tile_load<D>(Qs, a.q + qrow, qs, min(TB, L - i0));
    tile_load<D>(dOs, a.dout + qrow, qs, min(TB, L - i0));
    tile_load<D>(Ks, kseq, ks, min(TB, L));
    tile_load<D>(Vs, vseq, ks, min(TB, L));
    cp_commit();
    float lse2[2], del[2], dq[D / 8][4];
#pragma unroll
    for (int rh = 0; rh < 2; rh++) {
      const int qi = i0 + warp * 16 + gr + rh * 8;
      const size_t r = (size_t)(s0 + qi) * a.Hq + h;
      lse2[rh] = qi < L ? a.lse[r] * LOG2E : 0.f;
      del[rh] = qi < L ? a.delta[r] : 0.f;
    }
#pragma unroll
    for (int nb = 0; nb < D / 8; nb++) dq[nb][0] = dq[nb][1] = dq[nb][2] = dq[nb][3] = 0.f;
    for (int jt = 0; jt <= qt; jt++) {
      const int j0 = jt * TB, st = jt & 1;
      if (jt < qt) {
        tile_load<D>(Ks + (st ^ 1) * TE, kseq + (size_t)(j0 + TB) * ks, ks, min(TB, L - j0 - TB));
        tile_load<D>(Vs + (st ^ 1) * TE, vseq + (size_t)(j0 + TB) * ks, ks, min(TB, L - j0 - TB));
        cp_commit();
        cp_wait<1>();
      } else {
        cp_wait<0>();
      }
      __syncthreads();
      const uint16_t *Kt = Ks + st * TE, *Vt = Vs + st * TE;
      float sc[TB / 8][4], dp[TB / 8][4];
#pragma unroll
      for (int nb = 0; nb < TB / 8; nb++)
#pragma unroll
        for (int c = 0; c < 4; c++) sc[nb][c] = dp[nb][c] = 0.f;
      mma_abt<D, TB / 8>(sc, Qs, warp * 16, Kt, 0, lane);
      mma_abt<D, TB / 8>(dp, dOs, warp * 16, Vt, 0, lane);
#pragma unroll
      for (int nb = 0; nb < TB / 8; nb++)
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const int rh = c >> 1, qi = i0 + warp * 16 + gr + rh * 8, kj = j0 + nb * 8 + 2 * tg + (c & 1);
          const float p = (qi < L && kj <= qi) ? exp2f(fmaf(sc[nb][c], sl2, -lse2[rh])) : 0.f;
          sc[nb][c] = p * (dp[nb][c] - del[rh]); /* dS */
        }
      mma_pb<D, TB / 16>(dq, sc, Kt, 0, lane);
      __syncthreads();
    }
    const float mul[2] = {a.scale, a.scale};
    acc_store<D>(a.dq, NULL, dq, mul, s0, i0 + warp * 16, L, a.Hq, h, lane);
  }
}

/* dK, dV: grid (key-tile slots, Hkv, n_seq). */
template <int D>
__global__ void __launch_bounds__(TNT, 2) attn_tc_dkv_kernel(tc_args a) {
  extern __shared__ uint4 tc_smem[];
  constexpr int TE = tile_elems<D>();
  uint16_t *Ks = reinterpret_cast<uint16_t *>(tc_smem), *Vs = Ks + TE, *Qs = Vs + TE, *dOs = Qs + 2 * TE;
  float *lses = reinterpret_cast<float *>(dOs + 2 * TE), *dels = lses + 2 * TB; /* [2][TB] each */
  const int g = blockIdx.y, s = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tg = lane & 3;
  const int s0 = a.off[s], L = a.off[s + 1] - s0, nkt = (L + TB - 1) / TB;
  const size_t qs = (size_t)a.Hq * D, ks = (size_t)a.Hkv * D;
  const float sl2 = a.scale * LOG2E;
  for (int kt = blockIdx.x; kt < nkt; kt += gridDim.x) { /* the first key tiles see the most queries */
    const int j0 = kt * TB, nq = nkt - kt, items = a.rep * nq;
    /* item it = (q head g·rep + it / nq, query tile kt + it % nq): stage it & 1 */
    auto issue = [&](int it) {
      const int h = g * a.rep + it / nq, i0 = (kt + it % nq) * TB, stg = it & 1;
      const size_t qrow = ((size_t)(s0 + i0) * a.Hq + h) * D;
      tile_load<D>(Qs + stg * TE, a.q + qrow, qs, min(TB, L - i0));
      tile_load<D>(dOs + stg * TE, a.dout + qrow, qs, min(TB, L - i0));
      cp_commit();
      if (threadIdx.x < TB) {
        const int qi = i0 + threadIdx.x;
        const size_t r = (size_t)(s0 + qi) * a.Hq + h;
        lses[stg * TB + threadIdx.x] = qi < L ? a.lse[r] * LOG2E : 0.f;
        dels[stg * TB + threadIdx.x] = qi < L ? a.delta[r] : 0.f;
      }
    };
    __syncthreads();
    tile_load<D>(Ks, a.k + ((size_t)(s0 + j0) * a.Hkv + g) * D, ks, min(TB, L - j0));
    tile_load<D>(Vs, a.v + ((size_t)(s0 + j0) * a.Hkv + g) * D, ks, min(TB, L - j0));
    issue(0); /* commits K, V and item 0 as one group */
    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int nb = 0; nb < D / 8; nb++)
#pragma unroll
      for (int c = 0; c < 4; c++) dk[nb][c] = dv[nb][c] = 0.f;
    for (int it = 0; it < items; it++) {
      const int i0 = (kt + it % nq) * TB, st = it & 1;
      if (it + 1 < items) {
        issue(it + 1);
        cp_wait<1>();
      } else {
        cp_wait<0>();
      }
      __syncthreads();
      const uint16_t *Qt = Qs + st * TE, *dOt = dOs + st * TE;
      const float *ls = lses + st * TB, *ds = dels + st * TB;
#pragma unroll
      for (int hq = 0; hq < 2; hq++) { /* 32 queries at a time (register budget) */
        float sc[4][4], dp[4][4];
#pragma unroll
        for (int nb = 0; nb < 4; nb++)
#pragma unroll
          for (int c = 0; c < 4; c++) sc[nb][c] = dp[nb][c] = 0.f;
        mma_abt<D, 4>(sc, Ks, warp * 16, Qt, hq * 32, lane); /* rows: keys, columns: queries */
        mma_abt<D, 4>(dp, Vs, warp * 16, dOt, hq * 32, lane);
#pragma unroll
        for (int nb = 0; nb < 4; nb++)
#pragma unroll
          for (int c = 0; c < 4; c++) {
            const int kj = j0 + warp * 16 + gr + (c >> 1) * 8, qc = hq * 32 + nb * 8 + 2 * tg + (c & 1),
                      qi = i0 + qc;
            const float p = (qi < L && kj <= qi) ? exp2f(fmaf(sc[nb][c], sl2, -ls[qc])) : 0.f;
            sc[nb][c] = p;
            dp[nb][c] = p * (dp[nb][c] - ds[qc]); /* dSᵀ */
          }
        mma_pb<D, 2>(dv, sc, dOt, hq * 32, lane);
        mma_pb<D, 2>(dk, dp, Qt, hq * 32, lane);
      }
      __syncthreads();
    }
    const float one[2] = {1.f, 1.f}, sc2[2] = {a.scale, a.scale};
    acc_store<D>(a.dk, NULL, dk, sc2, s0, j0 + warp * 16, L, a.Hkv, g, lane);
    acc_store<D>(a.dv, NULL, dv, one, s0, j0 + warp * 16, L, a.Hkv, g, lane);
  }
}

}  // namespace

/* ---------------------------------------------------------------- host */

/* Grid x: tile slots of a block (≥ 1; any value gives the same result). */
static unsigned tc_slots(int max_len) {
  long n = ((long)(max_len > 0 ? max_len : 1) + TB - 1) / TB;
  return (unsigned)(n > 65535 ? 65535 : n);
}

/* Launch a kernel with its dynamic shared memory (opted in above 48 KiB). */
template <typename K>
static int tc_launch(K kernel, dim3 grid, int bytes, const tc_args &a, cudaStream_t st, rl_err *e) {
  OCHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  kernel<<<grid, TNT, bytes, st>>>(a);
  OLAUNCH();
  return 0;
}

/* Enqueue dst = BF16(src) for n floats (n a multiple of 4). */
static int tc_to_bf16(uint16_t *dst, const float *src, size_t n, cudaStream_t st, rl_err *e) {
  const int64_t n4 = (int64_t)(n / 4);
  if (n4 == 0) return 0;
  tc_bf16_kernel<<<grid_for(n4, 256), 256, 0, st>>>(dst, src, n4);
  OLAUNCH();
  return 0;
}

/* The forward kernel on BF16 q, k, v. */
static int tc_forward(float *out, uint16_t *out_bf16, float *lse, const uint16_t *q, const uint16_t *k,
                      const uint16_t *v, const ops_seqs *seqs, int max_len, ops_attn_shape sh, cudaStream_t st,
                      rl_err *e) {
  tc_args a = {};
  a.q = q, a.k = k, a.v = v;
  a.out = out, a.out_bf16 = out_bf16, a.lse_out = lse, a.off = seqs->off;
  a.Hq = sh.n_q_heads, a.Hkv = sh.n_kv_heads, a.rep = sh.n_q_heads / sh.n_kv_heads;
  a.scale = (float)(1.0 / sqrt((double)sh.head_dim));
  dim3 grid(tc_slots(max_len), sh.n_q_heads, seqs->n_seq);
  if (sh.head_dim == 128) return tc_launch(attn_tc_fwd_kernel<128>, grid, fwd_bytes<128>(), a, st, e);
  return tc_launch(attn_tc_fwd_kernel<64>, grid, fwd_bytes<64>(), a, st, e);
}

/* The forward of OPS_ATTN_TC; arguments already checked by ops_attention_forward_cuda. */
extern "C" int ops_attention_forward_tc_cuda(float *out, uint16_t *out_bf16, float *lse, const float *q,
                                             const float *k, const float *v, const ops_seqs *seqs, int max_len,
                                             ops_attn_shape sh, void *stream, rl_err *e) {
  if (sh.T == 0 || seqs->n_seq == 0) return 0;
  cudaStream_t st = (cudaStream_t)stream;
  const size_t nq = (size_t)sh.T * sh.n_q_heads * sh.head_dim, nk = (size_t)sh.T * sh.n_kv_heads * sh.head_dim;
  uint16_t *ws = NULL;
  OCHECK(cudaMallocAsync((void **)&ws, (nq + 2 * nk) * sizeof(uint16_t), st));
  int rc = tc_to_bf16(ws, q, nq, st, e);
  if (!rc) rc = tc_to_bf16(ws + nq, k, nk, st, e);
  if (!rc) rc = tc_to_bf16(ws + nq + nk, v, nk, st, e);
  if (!rc) rc = tc_forward(out, out_bf16, lse, ws, ws + nq, ws + nq + nk, seqs, max_len, sh, st, e);
  cudaError_t fr = cudaFreeAsync(ws, st);
  if (!rc && fr != cudaSuccess)
    rc = rl_errf(e, RL_EXIT_HARDWARE, "attention (tensor cores): cudaFreeAsync: %s", cudaGetErrorString(fr));
  return rc;
}

/* The same on BF16 operands (no conversion pass); arguments checked by ops_attention_forward_bx_cuda. */
extern "C" int ops_attention_forward_tc_bx_cuda(float *out, uint16_t *out_bf16, float *lse, const uint16_t *q,
                                                const uint16_t *k, const uint16_t *v, const ops_seqs *seqs,
                                                int max_len, ops_attn_shape sh, void *stream, rl_err *e) {
  if (sh.T == 0 || seqs->n_seq == 0) return 0;
  return tc_forward(out, out_bf16, lse, q, k, v, seqs, max_len, sh, (cudaStream_t)stream, e);
}

extern "C" int ops_attention_decode_tc_cuda(float *out, uint16_t *out_bf16, const float *q, const uint16_t *qb,
                                            float qscale, const uint16_t *kc, const uint16_t *vc, const int32_t *slot,
                                            const int32_t *len, int n, int n_q_heads, int n_kv_heads, int hd, int dp,
                                            int64_t max_len, void *stream, rl_err *e) {
  if (n <= 0) return 0;
  if ((dp != 64 && dp != 128) || hd < 8 || hd > dp || hd % 8 || n_kv_heads < 1 || n_q_heads % n_kv_heads ||
      n_q_heads / n_kv_heads > TB ||
      (!q && !qb) || !out || !kc || !vc || !slot || !len || max_len < 1)
    return rl_errf(e, RL_EXIT_USAGE,
                   "decode attention (tensor cores): bad arguments (head_dim %d padded to %d, %d / %d heads)", hd, dp,
                   n_q_heads, n_kv_heads);
  tc_dec_args a = {};
  a.q = q, a.qb = qb, a.kc = kc, a.vc = vc, a.slot = slot, a.len = len, a.out = out, a.out_bf16 = out_bf16;
  a.Hq = n_q_heads, a.Hkv = n_kv_heads, a.rep = n_q_heads / n_kv_heads, a.hd = hd, a.max_len = max_len;
  a.qscale = qscale, a.scale = (float)(1.0 / sqrt((double)dp)); /* the forward's scale at the padded width */
  const dim3 grid((unsigned)n_kv_heads, (unsigned)n);
  cudaStream_t st = (cudaStream_t)stream;
  /* the shared-memory opt-in once per device and width (not again inside a graph capture) */
  static thread_local int opted[2][64];
  int dev = 0;
  OCHECK(cudaGetDevice(&dev));
  int *done = &opted[dp == 128][dev & 63];
  if (dp == 128) {
    if (!*done)
      OCHECK(cudaFuncSetAttribute(attn_tc_dec_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, fwd_bytes<128>()));
    attn_tc_dec_kernel<128><<<grid, TNT, fwd_bytes<128>(), st>>>(a);
  } else {
    if (!*done)
      OCHECK(cudaFuncSetAttribute(attn_tc_dec_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, fwd_bytes<64>()));
    attn_tc_dec_kernel<64><<<grid, TNT, fwd_bytes<64>(), st>>>(a);
  }
  *done = 1;
  OLAUNCH();
  return 0;
}

/* The backward of OPS_ATTN_TC (arguments already checked by ops_attention_backward_cuda);
 * qb, kb, vb: BF16 operands given (ops_attention_backward_tc_bx_cuda), else converted from q, k, v. */
static int tc_backward(float *dq, float *dk, float *dv, const float *dout, const uint16_t *doutb, const float *out,
                       const float *lse, const float *q, const float *k, const float *v, const uint16_t *qb,
                       const uint16_t *kb, const uint16_t *vb, const ops_seqs *seqs, int max_len, ops_attn_shape sh,
                       void *stream, rl_err *e) {
  if (sh.T == 0 || seqs->n_seq == 0) return 0;
  cudaStream_t st = (cudaStream_t)stream;
  const size_t nq = (size_t)sh.T * sh.n_q_heads * sh.head_dim, nk = (size_t)sh.T * sh.n_kv_heads * sh.head_dim;
  const int64_t rows = (int64_t)sh.T * sh.n_q_heads;
  const int given = qb != NULL;
  /* workspace: δ (FP32, first: keeps 16-byte alignment), then BF16 dout (and q, k, v unless given) */
  void *ws = NULL;
  OCHECK(cudaMallocAsync(&ws, (size_t)rows * 4 + 16 + (given ? nq : 2 * nq + 2 * nk) * sizeof(uint16_t), st));
  float *delta = (float *)ws;
  uint16_t *b = (uint16_t *)((char *)ws + (((size_t)rows * 4 + 15) / 16) * 16);
  tc_args a = {};
  a.dout = doutb ? doutb : b;
  if (given) a.q = qb, a.k = kb, a.v = vb;
  else a.q = b + nq, a.k = b + 2 * nq, a.v = b + 2 * nq + nk;
  a.lse = lse, a.delta = delta, a.dq = dq, a.dk = dk, a.dv = dv, a.off = seqs->off;
  a.Hq = sh.n_q_heads, a.Hkv = sh.n_kv_heads, a.rep = sh.n_q_heads / sh.n_kv_heads;
  a.scale = (float)(1.0 / sqrt((double)sh.head_dim));
  int rc = doutb ? 0 : tc_to_bf16(b, dout, nq, st, e);
  if (!rc && !given) rc = tc_to_bf16(b + nq, q, nq, st, e);
  if (!rc && !given) rc = tc_to_bf16(b + 2 * nq, k, nk, st, e);
  if (!rc && !given) rc = tc_to_bf16(b + 2 * nq + nk, v, nk, st, e);
  if (!rc) {
    const unsigned dblocks = (unsigned)((rows + TNT / 32 - 1) / (TNT / 32));
    if (doutb && sh.head_dim == 128) tc_delta_kernel<128><<<dblocks, TNT, 0, st>>>(delta, doutb, out, rows);
    else if (doutb) tc_delta_kernel<64><<<dblocks, TNT, 0, st>>>(delta, doutb, out, rows);
    else if (sh.head_dim == 128) tc_delta_kernel<128><<<dblocks, TNT, 0, st>>>(delta, dout, out, rows);
    else tc_delta_kernel<64><<<dblocks, TNT, 0, st>>>(delta, dout, out, rows);
    cudaError_t le = cudaGetLastError();
    if (le != cudaSuccess)
      rc = rl_errf(e, RL_EXIT_HARDWARE, "attention backward (tensor cores): δ kernel launch: %s",
                   cudaGetErrorString(le));
  }
  dim3 gq(tc_slots(max_len), sh.n_q_heads, seqs->n_seq), gk(tc_slots(max_len), sh.n_kv_heads, seqs->n_seq);
  if (!rc) {
    if (sh.head_dim == 128) rc = tc_launch(attn_tc_dq_kernel<128>, gq, dq_bytes<128>(), a, st, e);
    else rc = tc_launch(attn_tc_dq_kernel<64>, gq, dq_bytes<64>(), a, st, e);
  }
  if (!rc) {
    if (sh.head_dim == 128) rc = tc_launch(attn_tc_dkv_kernel<128>, gk, dkv_bytes<128>(), a, st, e);
    else rc = tc_launch(attn_tc_dkv_kernel<64>, gk, dkv_bytes<64>(), a, st, e);
  }
  cudaError_t fr = cudaFreeAsync(ws, st);
  if (!rc && fr != cudaSuccess)
    rc = rl_errf(e, RL_EXIT_HARDWARE, "attention backward (tensor cores): cudaFreeAsync: %s",
                 cudaGetErrorString(fr));
  return rc;
}

extern "C" int ops_attention_backward_tc_cuda(float *dq, float *dk, float *dv, const float *dout, const float *out,
                                              const float *lse, const float *q, const float *k, const float *v,
                                              const ops_seqs *seqs, int max_len, ops_attn_shape sh, void *stream,
                                              rl_err *e) {
  return tc_backward(dq, dk, dv, dout, NULL, out, lse, q, k, v, NULL, NULL, NULL, seqs, max_len, sh, stream, e);
}

extern "C" int ops_attention_backward_tc_bx_cuda(float *dq, float *dk, float *dv, const uint16_t *dout,
                                                 const float *out, const float *lse, const uint16_t *q,
                                                 const uint16_t *k, const uint16_t *v, const ops_seqs *seqs,
                                                 int max_len, ops_attn_shape sh, void *stream, rl_err *e) {
  return tc_backward(dq, dk, dv, NULL, dout, out, lse, NULL, NULL, NULL, q, k, v, seqs, max_len, sh, stream, e);
}
