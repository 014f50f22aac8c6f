/* gemm_small_fp8_cuda.cu — the small-M fp8-block GEMM of gemm.h
 * (gemm_small_fp8_block_cuda): the decode step's linear layers in the unified
 * fp8-block mode, one kernel instead of linear_forward's three (activation
 * quantizer, cuBLASLt block-scaled FP8 GEMM, BF16 → FP32 conversion):
 *
 *   y[m][n] = f32(bf16_rne(Σ_kb (sx[m][kb]·sw[n/128][kb]) · Σ_{k in kb} qx[m][k]·qw[n][k]))
 *
 * with qx, sx the activation quantized inside the kernel exactly as
 * quant_fp8_block_act_cuda quantizes it for linear_forward, and qw, sw the
 * fp8-block weight as sync made it (E4M3 [N][K], 128×128 FP32 scales).
 *
 * Design (the one of gemm_small_cuda.cu, read that first):
 *   Tile      a CTA owns BN = 32 or 64 weight rows (64 at M > 32 and where 64-row
 *             tiles alone fill the GPU; inside one 128-row scale block either way, so
 *             one weight scale per stage) × one K slice × 8·MB rows of x (MB = 1, 2,
 *             4, 8 by M). 16 weight rows a warp, two warps along M from 17 rows of x
 *             on: 64 … 256 threads.
 *   Pipeline  stages of 128 K = one scale block: the stage's BN × 128 weight bytes,
 *             8·MB × 128 BF16 of x and the block's weight scale go through a ring of
 *             NST shared-memory slots with cp.async (NST − 1 stages in flight).
 *   Quantize  every stage, the CTA quantizes its x rows × this 128-K block from the
 *             ring slot into an E4M3 tile + one scale per row: 8 lanes a row, 16
 *             elements a lane, with quant_cuda_dev.cuh's functions in
 *             k_quant_rows' order (integer amax of |bf16| bits, shuffle max over the
 *             8 lanes, fmt_fp8_block_scale, qd_enc_fp8_div; a non-finite block:
 *             scale NaN, codes 0). So qx, sx are the bytes linear_forward's quantizer
 *             writes (the probe entry point returns them for the tests).
 *   MMA       mma.sync m16n8k32 E4M3 × E4M3 → FP32, weights as A (16 rows n), x as B
 *             (8 columns m). Lane (g, t) reads 16 bytes — K positions 16t … 16t+15
 *             of the 64-wide chunk — of weight rows g, g+8 and x row g and feeds
 *             bytes 0–7 to one MMA (its logical K 4t…4t+3 and 16+4t…16+4t+3) and
 *             bytes 8–15 to the next; A and B share the permutation, so the
 *             products are exactly Σ_k qx·qw. Rows are 128 B; 16-byte chunk c of row
 *             r sits at c ^ 4·(r & 1) (8 lanes of a load phase: 8 bank groups). The
 *             raw BF16 x rows (256 B) put chunk c at c ^ ((c >> 3) & 1), so the 8
 *             lanes of a row reading chunks 2l (or 2l + 1) hit 8 bank groups.
 *   Scales    per stage: partial = the 4 MMAs of the block (two 64-K chunks, in
 *             order) from zero, FP32 on the tensor cores; then
 *             acc = fmaf(partial, sx[m][kb] ·_rn sw[nb][kb], acc) (one rounding for
 *             the scale product, one for the fused multiply-add).
 *   Split K   the slices come from gemm_small_fp8_plan(N, K) (shapes only). One
 *             slice: acc goes to y. Else, as gemm_small: the S ≤ 8 CTAs of a tile
 *             form a cluster and reduce through distributed shared memory (each CTA
 *             sums 1/S of the tile's outputs over the S partials in slice order), or
 *             (S > 8, RLRUN_SMALL_FP8_REDUCE=global) partials go through a
 *             workspace, an integer arrival counter per tile, and the last CTA adds
 *             the S partials in slice order 0 … S−1 and resets the counter.
 *   PDL       launched with programmatic stream serialization (RLRUN_SMALL_FP8_PDL,
 *             default on): a CTA lets the next kernel of the stream launch, asks L2 to
 *             prefetch its weight slice (cp.async.bulk.prefetch: nothing is read into
 *             the SM, so a weight written by the kernel before cannot be read
 *             stale), then waits (griddepcontrol.wait) for the previous kernel to
 *             finish before it reads x or touches y, the workspace or the counters.
 *             The next launch's CTAs take the SMs as this one's drain: the launch
 *             latency and the first weight bytes overlap the previous GEMM's tail.
 *
 * Determinism and batch invariance: y[m][n] is the same MMAs (same K positions,
 * same order), the same per-block scale step and the same ordered slice sum
 * whatever M is, wherever row m sits, whatever the tile width, CTA shape,
 * reduction path or PDL: those decide which thread computes an output, not how.
 * The quantization of row m uses row m only. Padded rows/columns and K beyond a
 * slice are zeros (their scale 1, their products 0); no float atomics. */
#include <pthread.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant_cuda_dev.cuh" /* formats.h; quant.h (common.h with C linkage) */
extern "C" {
#include "kernels/device.h"
}
#include "kernels/gemm.h"
#include "kernels/gemm_small_common.cuh" /* PTX wrappers, bf16_round, host helpers */

namespace {

constexpr int BK = GEMM_SMALL_FP8_BK; /* K per stage = one scale block */
constexpr int WROW = BK;              /* bytes of a weight row of a stage (E4M3) */
constexpr int XROW = 2 * BK;          /* bytes of an x row of a stage (BF16) */
constexpr int SMEM_BUDGET = 102400;   /* ring bytes a CTA aims at: two CTAs per SM */
static_assert(BK == 128, "one stage is one 128-K scale block");

/* The CTA shape of MB m-blocks (8 rows of x each) and WN warps along N: WM warps
 * along M (two from MB = 4, i.e. M ≥ 17), BN = 16·WN weight rows, MB / WM m-blocks a warp. */
__host__ __device__ constexpr int sf_wm(int mb) { return mb >= 4 ? 2 : 1; }
__host__ __device__ constexpr int sf_threads(int mb, int wn) { return 32 * wn * sf_wm(mb); }
__host__ __device__ constexpr int sf_bn(int wn) { return 16 * wn; }
/* Bytes of one ring slot: BN weight rows (E4M3), 8·MB x rows (BF16), the stage's weight scale (16 B). */
__host__ __device__ constexpr int sf_slot(int mb, int wn) { return sf_bn(wn) * WROW + 8 * mb * XROW + 16; }
/* Slots of the ring: as many as fit SMEM_BUDGET, 2 … 6. */
__host__ __device__ constexpr int sf_nst(int mb, int wn) { return gs_clamp(SMEM_BUDGET / sf_slot(mb, wn), 2, 6); }
/* After the ring: the quantized x of the current stage (8·MB rows of 128 E4M3) and its 8·MB scales. */
__host__ __device__ constexpr int sf_smem_bytes(int mb, int wn) { return sf_nst(mb, wn) * sf_slot(mb, wn) + 8 * mb * (BK + 4); }
/* Row stride (floats) of a partial kept in shared memory for the cluster reduction. */
__host__ __device__ constexpr int sf_ldp(int wn) { return sf_bn(wn) + 4; }
/* Index of a kernel instance (bits of the per-device masks). */
__host__ __device__ constexpr int sf_kid(int mb, int wn) { return (mb == 1 ? 0 : mb == 2 ? 1 : mb == 4 ? 2 : 3) * 2 + (wn == 4); }
constexpr int NKERN = 8;

/* Offset of 16-byte chunk c (0 … 7) of row r of an E4M3 stage tile (weights, quantized x). */
__host__ __device__ __forceinline__ int sf_off8(int r, int c) { return r * WROW + 16 * (c ^ ((r & 1) << 2)); }
/* Offset of 16-byte chunk c (0 … 15) of row r of a raw BF16 x stage tile. */
__host__ __device__ __forceinline__ int sf_offx(int r, int c) { return r * XROW + 16 * (c ^ ((c >> 3) & 1)); }

/* What a launch needs. */
struct sf_args {
  const uint16_t *x;  /* [M][K] BF16 */
  const uint8_t *w;   /* [N][K] E4M3 */
  const float *sw;    /* weight scales [ceil(N/128)][sld] */
  float *y;           /* [M][N] */
  float *ws;          /* split-K partials (global reduction) */
  unsigned *cnt;      /* arrival counters per (tile, m-chunk) */
  uint8_t *dq;        /* probe: qx [M][K] (NULL: none) */
  float *ds;          /* probe: sx [M][ceil(K/128)] */
  int64_t N, K, sld, slice_k, tiles;
  int M, slices, n_mc, ue8m0;
  int cluster; /* 1: the slices of a tile form a cluster and reduce through DSMEM */
  int pdl;     /* 1: launched with programmatic stream serialization */
};

/* ---------------------------------------------------------------- PTX wrappers
 * (the rest: gemm_small_common.cuh) */

/* 4 bytes global → shared, asynchronously. */
__device__ __forceinline__ void cp_async4(uint32_t dst, const void *src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}

/* c (16×8 FP32) += a (16×32 E4M3, row) · b (32×8 E4M3, col). */
__device__ __forceinline__ void mma_e4m3(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* ---------------------------------------------------------------- kernel */

/* Start copying stage st of the CTA's slice [k0, k1) into ring slot st % NST: weight
 * rows n0 … n0+BN−1, x rows m0 … m0+8·MB−1 (rows past N or M, chunks past k1: zeros)
 * and the weight scale of the stage's block. */
template <int MB, int WN>
__device__ __forceinline__ void sf_load(uint8_t *sm, const sf_args &a, int st, int64_t n0, int m0, int64_t k0,
                                        int64_t k1) {
  constexpr int NST = sf_nst(MB, WN), XR = 8 * MB, BN = sf_bn(WN), T = sf_threads(MB, WN);
  constexpr int WC = WROW / 16, XC = XROW / 16; /* 16-byte chunks per row */
  static_assert(BN * WC % T == 0 && XR * XC % T == 0, "whole copies per thread");
  uint8_t *W = sm + (st % NST) * sf_slot(MB, WN), *X = W + BN * WROW;
  const int64_t kb = k0 + (int64_t)st * BK;
#pragma unroll
  for (int j = 0; j < BN * WC / T; j++) {
    const int i = (int)threadIdx.x + j * T, r = i / WC, c = i % WC;
    const int64_t n = n0 + r, k = kb + 16 * c;
    const bool ok = n < a.N && k < k1;
    cp_async16(smem_u32(W + sf_off8(r, c)), ok ? a.w + n * a.K + k : a.w, ok ? 16 : 0);
  }
#pragma unroll
  for (int j = 0; j < XR * XC / T; j++) {
    const int i = (int)threadIdx.x + j * T, r = i / XC, c = i % XC;
    const int m = m0 + r;
    const int64_t k = kb + 8 * c;
    const bool ok = m < a.M && k < k1;
    cp_async16(smem_u32(X + sf_offx(r, c)), ok ? a.x + (int64_t)m * a.K + k : a.x, ok ? 16 : 0);
  }
  if (threadIdx.x == 0) cp_async4(smem_u32(X + XR * XROW), a.sw + (n0 / 128) * a.sld + kb / BK);
}

/* Quantize the x tile of a stage (ring slot X, K block kb) into Xq (E4M3, sf_off8 layout)
 * and sx (one scale per row): k_quant_rows' arithmetic for fp8-block activations. */
template <int MB, int WN>
__device__ __forceinline__ void sf_quantize(const sf_args &a, const uint8_t *X, uint8_t *Xq, float *sx, int m0,
                                            int64_t kb, bool probe) {
  constexpr int XR = 8 * MB, T = sf_threads(MB, WN);
  /* 8·XR lane tasks; 8·XR is a multiple of 32, so each warp is in or out as a whole */
  for (int t = (int)threadIdx.x; t < 8 * XR; t += T) {
    const int r = t >> 3, l = t & 7; /* row, lane of the row: elements 16l … 16l+15 */
    const uint4 xa = *reinterpret_cast<const uint4 *>(X + sf_offx(r, 2 * l));
    const uint4 xb = *reinterpret_cast<const uint4 *>(X + sf_offx(r, 2 * l + 1));
    uint32_t m = qd_fold16(qd_amax_bits16(xa, xb));
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) m = max(m, __shfl_xor_sync(QD_FULL, m, o));
    const bool bad = m >= 0x7f80u; /* Inf/NaN in the block: poisoned as the quantizer does */
    const float s = bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(qd_bits_to_amax(m), a.ue8m0);
    const uint4 q = bad ? make_uint4(0, 0, 0, 0) : qd_enc_fp8_div(xa, xb, s, 0);
    *reinterpret_cast<uint4 *>(Xq + sf_off8(r, l)) = q;
    if (l == 0) sx[r] = s;
    if (probe && m0 + r < a.M) { /* the test hook: the bytes as the kernel multiplies them */
      const int64_t k = kb + 16 * l, row = m0 + r;
      if (k < a.K) *reinterpret_cast<uint4 *>(a.dq + row * a.K + k) = q;
      if (l == 0) a.ds[row * ((a.K + BK - 1) / BK) + kb / BK] = s;
    }
  }
}

/* One CTA: block b = ((tile · n_mc) + m-chunk) · slices + slice (the slices of a
 * tile adjacent: they form its cluster). */
template <int MB, int WN>
__global__ void __launch_bounds__(sf_threads(MB, WN)) gemm_small_fp8_kernel(const sf_args a) {
  extern __shared__ uint4 sf_smem[];
  __shared__ int s_last;
  constexpr int NST = sf_nst(MB, WN), XR = 8 * MB, SLOT = sf_slot(MB, WN), BN = sf_bn(WN);
  constexpr int T = sf_threads(MB, WN), WM = sf_wm(MB), MBW = MB / WM;
  uint8_t *sm = reinterpret_cast<uint8_t *>(sf_smem);
  uint8_t *Xq = sm + NST * SLOT;
  float *sx = reinterpret_cast<float *>(Xq + XR * BK);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gr = lane >> 2, tg = lane & 3;
  const int wn = warp % WN, wm = warp / WN;
  int64_t b = blockIdx.x;
  const int s = (int)(b % a.slices);
  b /= a.slices;
  const int mc = (int)(b % a.n_mc);
  const int64_t tile = b / a.n_mc, n0 = tile * BN;
  const int m0 = mc * XR;
  const int64_t k0 = (int64_t)s * a.slice_k, k1 = min(a.K, k0 + a.slice_k);
  const int nst = (int)((k1 - k0 + BK - 1) / BK);

  if (a.pdl) {
    pdl_launch_dependents();
    if (mc == 0 && tid < BN && n0 + tid < a.N) l2_prefetch(a.w + (n0 + tid) * a.K + k0, (uint32_t)(k1 - k0));
    pdl_wait(); /* the previous kernel wrote x (and may still read y, the workspace, the counters) */
  }

  float acc[MBW][4];
#pragma unroll
  for (int i = 0; i < MBW; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

#pragma unroll
  for (int st = 0; st < NST - 1; st++) { /* prologue: NST − 1 stages in flight */
    if (st < nst) sf_load<MB, WN>(sm, a, st, n0, m0, k0, k1);
    cp_commit();
  }
  const int ra = wn * 16 + gr;      /* this lane's weight rows: ra, ra + 8 of the tile */
  const int rx = wm * MBW * 8 + gr; /* its x rows (B columns): rx + 8i, i < MBW */
  const int rc = rx - gr + 2 * tg;  /* x row of acc[0][0]; acc[i][h + 2v] is (rc + 8i + h, ra + 8v) */
  const bool probe = a.dq && tile == 0;
  for (int st = 0; st < nst; st++) {
    cp_wait<NST - 2>(); /* stage st has landed (this thread's copies) … */
    __syncthreads();    /* … everyone's; slot (st − 1) % NST and Xq are free again */
    if (st + NST - 1 < nst) sf_load<MB, WN>(sm, a, st + NST - 1, n0, m0, k0, k1);
    cp_commit(); /* (empty groups at the tail keep the count uniform) */
    const uint8_t *W = sm + (st % NST) * SLOT, *X = W + BN * WROW;
    const float swv = *reinterpret_cast<const float *>(X + XR * XROW);
    sf_quantize<MB, WN>(a, X, Xq, sx, m0, k0 + (int64_t)st * BK, probe);
    __syncthreads(); /* Xq, sx written */
    float part[MBW][4];
#pragma unroll
    for (int i = 0; i < MBW; i++) part[i][0] = part[i][1] = part[i][2] = part[i][3] = 0.f;
#pragma unroll
    for (int c = 0; c < BK / 64; c++) {
      const int q = 4 * c + tg; /* 16-byte chunk: K positions 64c + 16tg … +15 of the stage */
      const uint4 wa = *reinterpret_cast<const uint4 *>(W + sf_off8(ra, q));
      const uint4 wb = *reinterpret_cast<const uint4 *>(W + sf_off8(ra + 8, q));
#pragma unroll
      for (int i = 0; i < MBW; i++) {
        const uint4 xv = *reinterpret_cast<const uint4 *>(Xq + sf_off8(rx + 8 * i, q));
        mma_e4m3(part[i], wa.x, wb.x, wa.y, wb.y, xv.x, xv.y);
        mma_e4m3(part[i], wa.z, wb.z, wa.w, wb.w, xv.z, xv.w);
      }
    }
    gs_fp8_scale_acc<MBW>(acc, part, sx, swv, rc);
  }

  const int rows = min(XR, a.M - m0);
  if (a.slices == 1) {
#pragma unroll
    for (int i = 0; i < MBW; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = rc + 8 * i + h;
        if (r >= rows) continue;
#pragma unroll
        for (int v = 0; v < 2; v++) {
          const int64_t n = n0 + ra + 8 * v;
          if (n < a.N) a.y[(int64_t)(m0 + r) * a.N + n] = bf16_round(acc[i][h + 2 * v]);
        }
      }
    return;
  }

  const int S = a.slices;
  if (a.cluster) {
    /* split K inside the cluster: partial [row][LDP] in this CTA's shared memory */
    constexpr int LDP = sf_ldp(WN), V4 = BN / 4;
    static_assert(XR * LDP * 4 <= sf_smem_bytes(MB, WN), "the partial fits the ring");
    float *buf = reinterpret_cast<float *>(sf_smem);
    cp_wait<0>();
    __syncthreads(); /* every warp is done with the ring */
#pragma unroll
    for (int i = 0; i < MBW; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = rc + 8 * i + h;
        buf[r * LDP + ra] = acc[i][h];
        buf[r * LDP + ra + 8] = acc[i][h + 2];
      }
    cluster_sync(); /* all S partials written */
    const uint32_t base = smem_u32(buf);
    for (int j = s * T + tid; j < rows * V4; j += S * T) { /* CTA s takes every S-th block of T float4 */
      const int r = j / V4, c = (j % V4) * 4;
      const uint32_t o = base + (uint32_t)(r * LDP + c) * 4;
      float4 g = cluster_ld4(cluster_map(o, 0));
      for (int t = 1; t < S; t++) g = add4(g, cluster_ld4(cluster_map(o, t)));
      const float gv[4] = {g.x, g.y, g.z, g.w};
#pragma unroll
      for (int e = 0; e < 4; e++)
        if (n0 + c + e < a.N) a.y[(int64_t)(m0 + r) * a.N + n0 + c + e] = bf16_round(gv[e]);
    }
    cluster_sync(); /* the others have read this CTA's partial: its shared memory may go */
    return;
  }

  /* split K through the workspace: this slice's partial, then the arrival count of the tile */
  const int64_t tix = tile * a.n_mc + mc;
  float *part = a.ws + ((size_t)tix * S + s) * XR * BN;
#pragma unroll
  for (int i = 0; i < MBW; i++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = rc + 8 * i + h;
      if (r >= rows) continue;
      part[r * BN + ra] = acc[i][h];
      part[r * BN + ra + 8] = acc[i][h + 2];
    }
  __threadfence(); /* the partial is visible device-wide before the count says so */
  __syncthreads();
  if (tid == 0) s_last = atomicAdd(a.cnt + tix, 1u) == (unsigned)(S - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence(); /* the other slices' partials are read after their counts */

  /* last CTA of the tile: y = Σ_s partial_s in slice order, in passes of rows that
   * fit the (now idle) shared memory; buf holds [slice][row][BN] */
  float *buf = reinterpret_cast<float *>(sf_smem);
  const float *src = a.ws + (size_t)tix * S * XR * BN;
  const int cap_rows = sf_smem_bytes(MB, WN) / (4 * BN * S); /* ≥ 1: S ≤ GEMM_SMALL_FP8_MAX_SLICES */
  const int per = max(1, min(rows, cap_rows));
  cp_wait<0>();
  __syncthreads(); /* the ring is idle: no copy of the main loop is outstanding */
  for (int r0 = 0; r0 < rows; r0 += per) {
    const int nr = min(per, rows - r0), vec = nr * BN / 4; /* 16-byte vectors per slice */
    for (int i = tid; i < S * vec; i += T) {
      const int t = i / vec, j = i % vec;
      cp_async16(smem_u32(buf + (size_t)i * 4), src + ((size_t)t * XR + r0) * BN + (size_t)j * 4, 16);
    }
    cp_commit();
    cp_wait<0>();
    __syncthreads();
    for (int i = tid; i < nr * BN; i += T) {
      const int64_t n = n0 + i % BN;
      float g = buf[i];
      for (int t = 1; t < S; t++) g = __fadd_rn(g, buf[t * nr * BN + i]);
      if (n < a.N) a.y[(int64_t)(m0 + r0 + i / BN) * a.N + n] = bf16_round(g);
    }
    __syncthreads(); /* buf is read before the next pass overwrites it */
  }
  if (tid == 0) a.cnt[tix] = 0; /* every slice has counted: ready for the next call */
}

/* ---------------------------------------------------------------- host side */

/* The per-device workspace and what has been asked of each kernel instance once
 * per device (gemm_small_common.cuh), and the knobs. */
struct sf_state : gs_state<NKERN> {
  int have_env, have_set; /* the environment's knobs read; a tune_set in force */
  gemm_small_fp8_tune env, set;
};
static sf_state SF = {GS_STATE_INIT, 0, 0, {0, 0, 0, 0, 0}, {0, 0, 0, 0, 0}};

constexpr const char *WHO = "gemm_small_fp8"; /* the error messages' prefix */

/* Launch gemm_small_fp8_kernel<MB, WN> over a's tiles: the cluster reduction when
 * asked for and schedulable, else the workspace. */
template <int MB, int WN>
int sf_launch(int dev, sf_args &a, int want_cluster, cudaStream_t s, rl_err *e) {
  constexpr int bytes = sf_smem_bytes(MB, WN), kid = sf_kid(MB, WN), T = sf_threads(MB, WN);
  constexpr int XR = 8 * MB, BN = sf_bn(WN);
  static_assert(bytes <= 227 * 1024 && 4 * BN * GEMM_SMALL_FP8_MAX_SLICES <= bytes, "shared memory");
  auto kern = gemm_small_fp8_kernel<MB, WN>;
  if (gs_smem_attr(SF, kern, kid, dev, bytes, WHO, e)) return RL_EXIT_FAIL;
  const int64_t blocks = a.tiles * a.n_mc * a.slices;
  if (blocks > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "gemm_small_fp8: %lld tiles × %d slices × %d row chunks is more than 2^31-1 CTAs",
                   (long long)a.tiles, a.slices, a.n_mc);
  a.cluster = a.slices > 1 && want_cluster && a.slices <= GEMM_SMALL_FP8_MAX_CLUSTER &&
              gs_cluster_ok(SF, kern, kid, dev, a.slices, T, bytes);
  if (a.slices > 1 && !a.cluster) {
    size_t wsb = (size_t)blocks * XR * BN * sizeof(float), cb = (size_t)(a.tiles * a.n_mc) * sizeof(unsigned);
    if (gs_workspace(SF, dev, wsb, cb, s, WHO, &a.ws, &a.cnt, e)) return RL_EXIT_FAIL;
  }
  cudaLaunchAttribute at[2];
  cudaLaunchConfig_t cfg = gs_launch_cfg(at, dim3(a.cluster ? (unsigned)a.slices : 1u), a.pdl, dim3((unsigned)blocks), T, bytes, s);
  return gs_ok(cudaLaunchKernelEx(&cfg, kern, a), WHO, "gemm_small_fp8_kernel launch", e) ? RL_EXIT_FAIL : 0;
}

/* The kernel of MB m-blocks for a tile width. */
template <int WN>
int sf_launch_mb(int mb, int dev, sf_args &a, int want_cluster, cudaStream_t s, rl_err *e) {
  switch (mb) {
    case 1: return sf_launch<1, WN>(dev, a, want_cluster, s, e);
    case 2: return sf_launch<2, WN>(dev, a, want_cluster, s, e);
    case 4: return sf_launch<4, WN>(dev, a, want_cluster, s, e);
    default: return sf_launch<8, WN>(dev, a, want_cluster, s, e);
  }
}

/* The knobs with every out-of-range value replaced by its default. */
gemm_small_fp8_tune sf_tune_fix(gemm_small_fp8_tune t) {
  if (t.ctas < 1 || t.ctas > 65536) t.ctas = GEMM_SMALL_FP8_CTAS;
  if (t.min_stages < 1 || t.min_stages > 16) t.min_stages = GEMM_SMALL_FP8_MIN_STAGES;
  if (t.bn != 0 && t.bn != 32 && t.bn != 64) t.bn = 0;
  if (t.reduce != GEMM_SMALL_FP8_REDUCE_CLUSTER && t.reduce != GEMM_SMALL_FP8_REDUCE_GLOBAL) t.reduce = GEMM_SMALL_FP8_REDUCE_CLUSTER;
  if (t.pdl != 0 && t.pdl != 1) t.pdl = 1;
  return t;
}

/* The environment's knobs (read once: pthread_once, since one thread a GPU may
 * ask first at the same time). */
static void sf_env_read(void) {
  static const int bns[3] = {0, 32, 64};
  static const char *const reduce[2] = {"cluster", "global"};
  gemm_small_fp8_tune t;
  t.ctas = rl_env_int("RLRUN_SMALL_FP8_CTAS", 1, 65536, GEMM_SMALL_FP8_CTAS);
  t.min_stages = rl_env_int("RLRUN_SMALL_FP8_MIN_STAGES", 1, 16, GEMM_SMALL_FP8_MIN_STAGES);
  t.bn = rl_env_int_of("RLRUN_SMALL_FP8_BN", bns, 3, 0);
  t.reduce = rl_env_word("RLRUN_SMALL_FP8_REDUCE", reduce, 2, 0) ? GEMM_SMALL_FP8_REDUCE_GLOBAL
                                                                 : GEMM_SMALL_FP8_REDUCE_CLUSTER;
  t.pdl = rl_env_bool("RLRUN_SMALL_FP8_PDL", 1);
  SF.env = t, SF.have_env = 1;
}
gemm_small_fp8_tune sf_tune_env(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, sf_env_read);
  return SF.env;
}

/* The product after its checks (probe: also write qx, sx). */
int sf_run(float *y, uint8_t *dq, float *ds, const uint16_t *x, const qtensor *w, int64_t M, const quant_policy *pol,
           void *stream, rl_err *e) {
  const int64_t N = w->rows, K = w->cols;
  if (M == 0 || N == 0) return 0;
  cudaStream_t s = gs_stream(stream);
  int dev = 0, rc = gs_device(SF, WHO, &dev, e);
  if (rc) return rc;
  if (K == 0) /* empty sums */
    return gs_ok(cudaMemsetAsync(y, 0, (size_t)(M * N) * 4, s), WHO, "cudaMemsetAsync", e) ? RL_EXIT_FAIL : 0;
  const gemm_small_fp8_tune tune = gemm_small_fp8_tune_get();
  sf_args a;
  memset(&a, 0, sizeof a);
  a.x = x, a.w = (const uint8_t *)w->data, a.sw = (const float *)w->scales, a.y = y, a.dq = dq, a.ds = ds;
  a.N = N, a.K = K, a.M = (int)M, a.ue8m0 = pol->ue8m0 != 0, a.pdl = tune.pdl;
  const int64_t kb = (K + BK - 1) / BK;
  a.sld = w->layout == QLAYOUT_HOPPER_WEIGHT ? (kb + 3) / 4 * 4 : kb;
  gemm_small_fp8_plan(N, K, &a.slices, &a.slice_k);
  /* the CTA shape: 8·MB ≥ M rows of x; 64 weight rows where 64-row tiles alone reach
   * the CTA target (lm_head) or at M > 32 (half the x reads and x quantizations per
   * weight byte: the whole decode step at M = 64 took 2381 µs instead of 3017 µs on
   * the H200), else 32 (RLRUN_SMALL_FP8_BN overrides). None changes a sum. */
  const int mb = M > 32 ? 8 : M > 16 ? 4 : M > 8 ? 2 : 1;
  const int64_t t64 = (N + 63) / 64;
  int wn = 2;
  if (tune.bn == 64) wn = 4;
  else if (tune.bn == 0 && (t64 >= tune.ctas || mb == 8)) wn = 4;
  const int64_t bn = 16 * wn;
  a.tiles = (N + bn - 1) / bn;
  a.n_mc = 1;
  const int cl = tune.reduce != GEMM_SMALL_FP8_REDUCE_GLOBAL;
  return wn == 4 ? sf_launch_mb<4>(mb, dev, a, cl, s, e) : sf_launch_mb<2>(mb, dev, a, cl, s, e);
}

} /* namespace */

extern "C" gemm_small_fp8_tune gemm_small_fp8_tune_get(void) { return SF.have_set ? SF.set : sf_tune_env(); }

extern "C" void gemm_small_fp8_tune_set(const gemm_small_fp8_tune *t) {
  if (!t) {
    SF.have_set = 0;
    return;
  }
  SF.set = sf_tune_fix(*t), SF.have_set = 1;
}

extern "C" const char *gemm_small_fp8_tune_str(const gemm_small_fp8_tune *t, char *buf, size_t n) {
  char bn[16];
  if (t->bn) snprintf(bn, sizeof bn, "%d", t->bn);
  else snprintf(bn, sizeof bn, "auto");
  snprintf(buf, n, "ctas=%d min_stages=%d bn=%s reduce=%s pdl=%d", t->ctas, t->min_stages, bn,
           t->reduce == GEMM_SMALL_FP8_REDUCE_GLOBAL ? "global" : "cluster", t->pdl);
  return buf;
}

extern "C" void gemm_small_fp8_plan(int64_t N, int64_t K, int *slices, int64_t *slice_k) {
  const gemm_small_fp8_tune t = gemm_small_fp8_tune_get();
  gemm_small_split(N, K, GEMM_SMALL_FP8_PLAN_ROWS, BK, t.ctas, t.min_stages, GEMM_SMALL_FP8_MAX_SLICES, slices,
                   slice_k);
}

extern "C" int gemm_small_fp8_check(const float *y, const uint16_t *x, const qtensor *w, int64_t M,
                                    const quant_policy *pol, rl_err *e) {
  const char *fn = "gemm_small_fp8_block";
  if (!w || !pol) return rl_errf(e, RL_EXIT_USAGE, "%s: weight or policy is NULL", fn);
  if (w->fmt != QFMT_FP8_BLOCK || w->block_rows != 128)
    return rl_errf(e, RL_EXIT_USAGE, "%s: the weight is %s with block_rows %d; this kernel takes fp8-block 128×128 "
                   "weights (use linear_forward)", fn, qtensor_format_name(w->fmt), w->block_rows);
  if (!w->on_device)
    return rl_errf(e, RL_EXIT_USAGE, "%s: the weight is in host memory; pass the device qtensor (or use "
                   "linear_forward on the CPU)", fn);
  if (w->layout != QLAYOUT_ROWMAJOR && w->layout != QLAYOUT_HOPPER_WEIGHT)
    return rl_errf(e, RL_EXIT_USAGE, "%s: weight scale layout %d; use ROWMAJOR or HOPPER_WEIGHT", fn, (int)w->layout);
  const int64_t N = w->rows, K = w->cols;
  if (M < 0 || N < 0 || K < 0 || N > INT32_MAX || K > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "%s: bad shape M=%lld N=%lld K=%lld (0 .. 2^31-1)", fn, (long long)M,
                   (long long)N, (long long)K);
  if (M > GEMM_SMALL_FP8_MAX_M)
    return rl_errf(e, RL_EXIT_USAGE, "%s: M=%lld rows exceeds the small-M kernel's %d; use linear_forward "
                   "(cuBLASLt) for larger batches", fn, (long long)M, GEMM_SMALL_FP8_MAX_M);
  if (K % 16)
    return rl_errf(e, RL_EXIT_USAGE, "%s: K=%lld is not a multiple of 16 (weight rows must be whole 16-byte "
                   "vectors); use linear_forward for this layer", fn, (long long)K);
  if (M == 0 || N == 0) return 0;
  if (!y || (K > 0 && (!x || !w->data || !w->scales)))
    return rl_errf(e, RL_EXIT_USAGE, "%s: y, x, the weight's data or its scales is NULL (M=%lld N=%lld K=%lld)", fn,
                   (long long)M, (long long)N, (long long)K);
  if ((uintptr_t)x % 16 || (uintptr_t)w->data % 16 || (uintptr_t)w->scales % 4 || (uintptr_t)y % 4)
    return rl_errf(e, RL_EXIT_USAGE, "%s: x (%p) and the weight data (%p) must be 16-byte aligned, its scales (%p) "
                   "and y (%p) 4-byte aligned; pass row-aligned views or use linear_forward", fn, (const void *)x,
                   w->data, w->scales, (void *)y);
  return 0;
}

extern "C" int gemm_small_fp8_block_cuda(float *y, const uint16_t *x, const qtensor *w, int64_t M,
                                         const quant_policy *pol, void *stream, rl_err *e) {
  int rc = gemm_small_fp8_check(y, x, w, M, pol, e);
  return rc ? rc : sf_run(y, NULL, NULL, x, w, M, pol, stream, e);
}

extern "C" int gemm_small_fp8_block_probe_cuda(float *y, uint8_t *qx, float *sx, const uint16_t *x, const qtensor *w,
                                               int64_t M, const quant_policy *pol, void *stream, rl_err *e) {
  int rc = gemm_small_fp8_check(y, x, w, M, pol, e);
  if (rc) return rc;
  if (M > 0 && w->rows > 0 && w->cols > 0 && (!qx || !sx || (uintptr_t)qx % 16 || (uintptr_t)sx % 4))
    return rl_errf(e, RL_EXIT_USAGE, "gemm_small_fp8_block_probe: qx (%p, 16-byte aligned) and sx (%p) are needed",
                   (void *)qx, (void *)sx);
  return sf_run(y, qx, sx, x, w, M, pol, stream, e);
}

extern "C" void gemm_small_fp8_release(void) { gs_release(SF); }
