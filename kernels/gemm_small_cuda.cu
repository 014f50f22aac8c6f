/* gemm_small_cuda.cu — the small-M BF16 GEMMs of gemm.h (gemm_small_bf16_cuda,
 * its grouped launch gemm_small_bf16_group_cuda and the SwiGLU pair
 * gemm_small_bf16_swiglu_cuda): y = x·wᵀ for the decode step's small M (1 … 256
 * rows) on BF16 tensor cores, FP32 accumulation, the sum rounded to BF16 and
 * stored as FP32 or, by gemm_small_bf16_b_cuda, as that BF16 (or, for the SwiGLU,
 * passed through silu(g)·u and stored as BF16).
 *
 * Why not cuBLASLt: at M ≤ 64 a decode GEMM is a weight stream (the Qwen3-0.6B
 * layers hold 2–6 MB each); cuBLASLt's 128-wide N tiles give 8–24 CTAs for
 * N = 1024–3072 and it does not split K, so 132 SMs wait on a few. Here:
 *
 *   Launch    one kernel for 1 … 4 weight matrices that share x and K (a group:
 *             the CTAs enumerate the tiles of every segment in turn, a tile never
 *             straddles two) or for the SwiGLU pair (a CTA owns the same rows of wg
 *             and wu: two accumulator sets, the activation in the epilogue). One
 *             launch instead of three (q, k, v) or three (gate, up, swiglu): the
 *             per-launch latency (launch, ramp, split-K chain) is paid once.
 *   Tile      a CTA is one warpgroup (4 warps, 128 threads) and owns BN = 32
 *             weight rows (of each matrix of the pair), or 64 where that still gives
 *             enough CTAs (lm_head at any M) and at M > 32 (half the L2 reads of x
 *             per weight byte, see gemm.h's RLRUN_SMALL_GEMM_BN) × one K slice ×
 *             8·MB rows of x (MB = 1, 2, 4, 8 by M). The slices come from
 *             gemm_small_plan of the launch's weight rows (a function of the shapes
 *             only). M > 64 runs the 64-row chunks of x as more CTAs; they sit next
 *             to each other in launch order, so a weight tile comes from HBM once
 *             and from L2 for its other chunks.
 *   Pipeline  the CTA streams its slice in stages of 128 K (its weight rows and x
 *             rows of the stage) through a ring of NST shared-memory buffers with
 *             cp.async (NST − 1 stages in flight while one is multiplied); a
 *             thread works out its copies' addresses once (sg_cp) and a stage
 *             adds its K offset. Launched as a programmatic dependent
 *             (RLRUN_SMALL_GEMM_PDL=1), the prologue asks for its weight stages
 *             before griddepcontrol.wait and for x after; every CTA lets the next
 *             grid launch once its main loop is done.
 *   MMA       Hopper's wgmma (sm_90a) m64n(8·MB)k16 with the weights as A (the 64
 *             rows of the MMA: BN rows of each matrix, a 32-row single matrix
 *             padded with zero rows written once) and x as B (8·MB columns), both
 *             K-major from shared memory in the 128-byte swizzle: a stage holds two
 *             K halves of 64, each row 128 B with 16-byte chunk c at c ^ (r & 7),
 *             so each of the 8 steps of 16 K is one wgmma on descriptors 32 B
 *             apart. 8 MMAs a stage, issued by the warpgroup, waited for before
 *             the ring slot is refilled. Targets without sm_90a (the Blackwell
 *             build) run mma.sync m16n8k16 on the same tiles, K in the same order.
 *             (Until 2026-12-05 mma.sync on every target, from 256-byte rows with K
 *             permuted inside 32-wide chunks: at M = 64 the MMAs bounded the
 *             kernel — H100, whole-step GEMMs 1,380 µs, now 1,080.)
 *   Split K   with one slice the accumulators go to y directly (the pair: through
 *             the CTA's shared memory, where g and u of an output meet). Otherwise, where
 *             the S ≤ 8 CTAs of a tile can form a thread-block cluster (the
 *             default): each CTA writes its FP32 partial into its own (now idle)
 *             shared memory, one cluster barrier, then CTA r sums every S-th group
 *             of 4 outputs of the tile over the S partials in slice order 0 … S−1,
 *             read through distributed shared memory, and writes y; a second barrier
 *             keeps each partial alive until the others have read it. No workspace,
 *             no counters, no global round trip. Else (S > 8, or
 *             RLRUN_SMALL_GEMM_REDUCE=global) each CTA writes its partial to a
 *             workspace laid out [tile][m-chunk][slice][part][row][BN], counts itself
 *             in with an atomicAdd on the tile's counter (after __threadfence); the
 *             CTA that arrives last copies the tile's S partials into shared memory
 *             (cp.async, all in flight at once), adds them in slice order, writes y,
 *             and resets the counter to 0 for the next call (or graph replay).
 *
 * Determinism and batch invariance: y[m][n] is the sum of the same MMAs
 * (same K positions, same order) and the same ordered slice sum whatever M
 * is, wherever row m sits in the batch, whatever the tile width, CTA shape or
 * reduction path: those decide which thread computes an output, not how (a
 * wgmma's output element does not depend on the instruction's N: the M
 * invariance tests of gemm_gpu_test assert it across every MB). Padded
 * rows and columns are zeros whose outputs are dropped, K beyond a slice's end
 * is zero in both operands. No float atomics. The SwiGLU epilogue is
 * ops_swiglu_forward_cuda's arithmetic on the BF16-rounded g and u (silu shared
 * through ops_cuda_util.cuh, same compile flags).
 *
 * The F8 form (gemm_small_fp8_group_cuda, template flag F8): the same tiles,
 * plan, pipeline, reductions and PDL on fp8-block operands — x as E4M3 codes
 * with one FP32 scale per (row, 128-K block), quantized beforehand (the decode
 * step's q8 norms and SwiGLU), w the fp8-block weight with its 128×128 scales.
 * A stage is one 128-K scale block: 128-byte rows (one swizzle row), so the
 * stage's x rows' scales and the tile's weight scale ride in a small array after
 * the ring (cp.async, zeros past M). Per stage: part = 4 wgmma m64n(8·MB)k32 E4M3
 * from zero, then acc = fmaf(part, sx ·_rn sw, acc) per output — the order of
 * gemm_small_fp8_block, and in the tests bitwise cuBLASLt's on 99.99–100 % of the
 * outputs. sm_90a only (elsewhere the host refuses).
 *
 * The F8 pair (gemm_small_fp8_swiglu_cuda: the decode step's gate/up → down in the
 * unified fp8-block mode): a CTA owns 32 rows of gate and the same 32 of up (the
 * MMA's 64 rows; each half scaled by its own weight scale), the SwiGLU epilogue of
 * the BF16 pair, and then down's activation: the 128-column fp8-block of act spans
 * four tiles. Where a cluster can hold a block (one row chunk, ≤ 2 slices: the
 * decode step's gate/up) the cluster is 4 tiles × the slices and the tiles
 * exchange their rows' amax through distributed shared memory (sg_q8_block);
 * otherwise each tile's writer counts it in (an atomic counter per m-chunk and
 * block, after a __threadfence) and the CTA that counts the last one reads the
 * block's act back from L2 and quantizes it (sg_q8_tail; the counters follow the
 * split-K tile counters and are reset by their last reader). Either way the
 * quantizer's arithmetic: one launch where the group GEMM and
 * ops_swiglu_forward_q8_bx_cuda took two, the same bytes. */
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "kernels/ops_cuda_util.cuh" /* silu; common.h with C linkage */
#include "kernels/quant_cuda_dev.cuh" /* the fp8-block quantizer's arithmetic (the F8 pair's output) */
extern "C" {
#include "kernels/device.h"
}
#include "kernels/formats.h"
#include "kernels/gemm.h"
#include "kernels/gemm_small_common.cuh" /* PTX wrappers, bf16_round, host helpers */

namespace {

constexpr int BK = GEMM_SMALL_BK; /* K per stage */
constexpr int CH = BK / 8;        /* 16-byte chunks per stage row */
constexpr int MAXSEG = GEMM_SMALL_MAX_SEGS;
constexpr int SMEM_BUDGET = 98304; /* ring bytes a CTA aims at: two CTAs per SM */
static_assert(BK % 32 == 0 && CH == 16, "the swizzle assumes 16 chunks per row");

/* The CTA: one warpgroup (4 warps, SG_T = 128 threads) multiplies 64 weight rows
 * by 8·MB rows of x with wgmma m64n(8·MB)k16 (sm_90a; mma16816 on the same
 * shared tiles elsewhere). P weight matrices (the SwiGLU pair: 2) of BN = 16·WN
 * rows each fill rows 0 … P·BN−1 of the MMA's 64; with one 32-row matrix
 * (WN = 2) rows 32 … 63 are zeros written once and their outputs dropped. Warp
 * w computes rows 16w … 16w+15: rows 16·(w % WN) … of matrix w / WN. */
constexpr int SG_T = 128, SG_RM = 64;
__host__ __device__ constexpr int sg_parts(bool sw) { return sw ? 2 : 1; }
__host__ __device__ constexpr int sg_bn(int wn) { return 16 * wn; }
/* BF16 elements of one stage: the MMA's 64 weight rows and 8·MB x rows of BK
 * (the ring and its depth follow from MB alone). */
__host__ __device__ constexpr int sg_stage_elems(int mb) { return (SG_RM + 8 * mb) * BK; }
/* Bytes of one stage: BF16 (2 a K) or, for the fp8-block form (F8), E4M3 (1 a K:
 * one 128-byte swizzled row a weight or x row, the stage one 128-K scale block). */
__host__ __device__ constexpr int sg_stage_bytes(int mb, bool f8) { return sg_stage_elems(mb) * (f8 ? 1 : 2); }
/* Stages of the ring: as many as fit SMEM_BUDGET, 2 … 6. (A ring of ~196 KB at
 * one CTA an SM, 5 stages in flight, measured slower: H100, whole-step GEMMs at
 * M = 64 1,433 vs 1,094 µs.) */
__host__ __device__ constexpr int sg_nst(int mb, bool f8 = false) {
  return gs_clamp(SMEM_BUDGET / sg_stage_bytes(mb, f8), 2, 6);
}
/* Bytes of the ring (the partials of the split-K reduction reuse them) … */
__host__ __device__ constexpr int sg_ring_bytes(int mb, bool f8 = false) { return sg_nst(mb, f8) * sg_stage_bytes(mb, f8); }
/* … the F8 form's scales of a stage after it (floats: the 8·MB x rows' scales, then
 * the weight's, padded to 16 bytes) … */
__host__ __device__ constexpr int sg_sc_floats(int mb) { return 8 * mb + 4; }
/* … and of the launch: + 1 KB to align the ring to the swizzle's 1024 bytes. */
__host__ __device__ constexpr int sg_smem_bytes(int mb, bool f8 = false) {
  return sg_ring_bytes(mb, f8) + (f8 ? sg_nst(mb, f8) * sg_sc_floats(mb) * 4 : 0) + 1024;
}
/* Row stride (floats) of a partial kept in shared memory for the cluster
 * reduction: +4 spreads the rows 2t of the accumulator writes over the banks. */
__host__ __device__ constexpr int sg_ldp(int wn) { return sg_bn(wn) + 4; }
/* Index of a kernel instance (bits of the per-device "attribute set" masks). */
__host__ __device__ constexpr int sg_kid(int mb, int wn, bool sw, bool f8 = false) {
  return (mb == 1 ? 0 : mb == 2 ? 1 : mb == 4 ? 2 : 3) * 4 + (wn == 4 ? 2 : 0) + (sw ? 1 : 0) + (f8 ? 16 : 0);
}

/* Byte offset of 16-byte chunk c (K 16c … 16c+15 of the stage) of row r in an F8
 * stage operand: rows of 128 B in the 128-byte swizzle (chunk c at c ^ r & 7). */
__host__ __device__ __forceinline__ int sg_off8(int r, int c) { return r * 128 + 16 * (c ^ (r & 7)); }

/* Element offset of 16-byte chunk c (K 8c … 8c+7 of the stage) of row r in a
 * stage operand of `rows` rows: two K halves of 64, each `rows` rows of 128 B
 * in the 128-byte swizzle of wgmma_desc_sw128 (chunk c & 7 at c & 7 ^ r & 7). */
__host__ __device__ __forceinline__ int sg_off(int r, int c, int rows) {
  return (c >> 3) * rows * 64 + r * 64 + 8 * ((c & 7) ^ (r & 7));
}

/* What a launch needs. Segments: tiles t0[i] … t0[i+1]−1 are rows of w[i] (N = n[i]),
 * written to y[i]; the SwiGLU pair has one segment, w[0] = gate, w[1] = up, out act. */
struct sg_args {
  const uint16_t *x;
  const uint16_t *w[MAXSEG];
  float *y[MAXSEG];
  uint16_t *act;
  float *ws;
  unsigned *cnt;
  int64_t n[MAXSEG], t0[MAXSEG + 1];
  int64_t K, slice_k;
  int M, slices, n_mc, n_seg; /* n_mc: chunks of 8·MB rows of x */
  int cluster;                /* 1: the slices of a tile are a cluster and reduce through DSMEM */
  int pdl;                    /* 1: launched with programmatic stream serialization */
  /* the fp8-block form (gemm_small_fp8_group_cuda): x as E4M3 codes [M][K] and FP32
   * scales (row m, block kb at xs[m·xs_rs + kb·xs_ks]); w8[i] E4M3 [N][K] with 128×128
   * FP32 scales sw[i][(n / 128)·sld[i] + kb]; ob: y[i] are BF16 [M][N] */
  const uint8_t *xq;
  const float *xs;
  int64_t xs_rs, xs_ks;
  const uint8_t *w8[MAXSEG];
  const float *sw[MAXSEG];
  int64_t sld[MAXSEG];
  int ob;
  /* the F8 pair (gemm_small_fp8_swiglu_cuda): w8[0] = gate, w8[1] = up; act as
   * above, and its fp8-block quantization: codes q8 [q8_pad][N], scales
   * q8s[kb·q8_ld + m]; qcnt: an arrival counter per (m-chunk, 128-column block) */
  uint8_t *q8;
  float *q8s;
  int64_t q8_ld;
  int q8_pad, ue8m0, soft;
  unsigned *qcnt;
  int qcl; /* 1: clusters of 4 tiles × the slices (sg_q8_block), else the counters (sg_q8_tail) */
};

/* ---------------------------------------------------------------- kernel */

/* One output: y = bf16(g) as FP32, or (SwiGLU) act = bf16(silu(bf16(g)) · bf16(u)) —
 * ops_swiglu_forward_cuda's expression on what gemm_small would have stored. */
__device__ __forceinline__ uint16_t sg_act(float g, float u) {
  return fmt_bf16_from_f32(__fmul_rn(silu(bf16_round(g)), bf16_round(u)));
}
/* 4 BF16 bit patterns, in order, packed for one 8-byte store. */
__device__ __forceinline__ uint2 sg_pack4(uint16_t v0, uint16_t v1, uint16_t v2, uint16_t v3) {
  return make_uint2(v0 | (uint32_t)v1 << 16, v2 | (uint32_t)v3 << 16);
}
/* sg_act of 4 outputs, packed. */
__device__ __forceinline__ uint2 sg_act4(const float (&g)[4], const float (&u)[4]) {
  return sg_pack4(sg_act(g[0], u[0]), sg_act(g[1], u[1]), sg_act(g[2], u[2]), sg_act(g[3], u[3]));
}
template <bool SW>
__device__ __forceinline__ void sg_put(const sg_args &a, float *y, int64_t N, int m, int64_t n, float g, float u) {
  if constexpr (SW) a.act[(int64_t)m * N + n] = sg_act(g, u);
  else if (a.ob) reinterpret_cast<uint16_t *>(y)[(int64_t)m * N + n] = fmt_bf16_from_f32(g); /* the same BF16 */
  else y[(int64_t)m * N + n] = bf16_round(g);
}
/* Outputs n … n+3 of row m (n a multiple of 4): one 8- or 16-byte store where
 * all four exist, N % 4 == 0 and the output is 8- (BF16) or 16-byte (FP32)
 * aligned (then so is every group of 4), else sg_put for each that exists. The
 * same values. */
template <bool SW>
__device__ __forceinline__ void sg_put4(const sg_args &a, float *y, int64_t N, int m, int64_t n, const float (&g)[4],
                                        const float (&u)[4]) {
  const uintptr_t base = SW ? (uintptr_t)a.act : (uintptr_t)y, al = SW || a.ob ? 7 : 15;
  if ((N & 3) == 0 && n + 4 <= N && (base & al) == 0) {
    const int64_t o = (int64_t)m * N + n;
    if constexpr (SW) {
      *reinterpret_cast<uint2 *>(a.act + o) = sg_act4(g, u);
    } else if (a.ob) {
      *reinterpret_cast<uint2 *>(reinterpret_cast<uint16_t *>(y) + o) =
          sg_pack4(fmt_bf16_from_f32(g[0]), fmt_bf16_from_f32(g[1]), fmt_bf16_from_f32(g[2]), fmt_bf16_from_f32(g[3]));
    } else {
      *reinterpret_cast<float4 *>(y + o) = make_float4(bf16_round(g[0]), bf16_round(g[1]), bf16_round(g[2]),
                                                       bf16_round(g[3]));
    }
    return;
  }
#pragma unroll
  for (int e = 0; e < 4; e++)
    if (n + e < N) sg_put<SW>(a, y, N, m, n + e, g[e], u[e]);
}

/* 4 bytes global → shared, asynchronously; bytes = 0 writes zeros. */
__device__ __forceinline__ void cp_async4(uint32_t dst, const void *src, int bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}

/* A thread's share of one operand's stage copies (16 bytes each), worked out once
 * a CTA: every stage then only adds its K offset. (Until session 23 the loaders
 * redid the index arithmetic — rows, chunks, swizzle, 64-bit addresses, bounds —
 * at every stage: ~160 instructions for the 4 weight copies of an F8 stage at 64
 * rows, most of the CTA's instructions before its loads were in flight.) Copy j
 * reads g[j] + st·BK·EB bytes at stage st; it exists (else it writes zeros)
 * where bit j of `rows` is set and st·BK + ck < kl (the slice's K, elements);
 * it lands at the stage operand's base + so + j·DJ (its row is RJ·j below copy
 * 0's, RJ a multiple of 8: the swizzle's r & 7 is copy 0's). g[j] of a row that
 * does not exist is the matrix itself (a valid address, never read). */
template <int J>
struct sg_cp {
  const uint8_t *g[J];
  unsigned rows;
  int ck;
  uint32_t so;
};

/* Copies of stage st: dst = the stage operand's shared address. */
template <int J, int DJ, int EB>
__device__ __forceinline__ void sg_cp_issue(const sg_cp<J> &cp, uint32_t dst, int st, int kl) {
  const bool kin = st * BK + cp.ck < kl;
  const int64_t off = (int64_t)st * (BK * EB);
#pragma unroll
  for (int j = 0; j < J; j++) {
    const bool ok = kin && (cp.rows >> j & 1u);
    cp_async16(dst + cp.so + (uint32_t)(j * DJ), cp.g[j] + (ok ? off : 0), ok ? 16 : 0);
  }
}

/* The weight copies' plan: P·BN rows (the pair, SW: BN rows of w, then BN of w1)
 * of BK elements — F8: 8 chunks a row (one 128-byte swizzle row), BF16: 16 (two K
 * halves of 64). Rows past N: zeros. */
template <int WN, bool SW, bool F8>
struct sg_wplan {
  static constexpr int R = sg_parts(SW) * sg_bn(WN), CPR = F8 ? 8 : CH, J = R * CPR / SG_T, RJ = SG_T / CPR;
  static constexpr int DJ = F8 ? RJ * 128 : RJ * 64 * 2, EB = F8 ? 1 : 2;
  static_assert(R * CPR % SG_T == 0 && RJ % 8 == 0, "whole copies per thread, rows 8-aligned a copy");
};
template <int WN, bool SW, bool F8>
__device__ __forceinline__ sg_cp<sg_wplan<WN, SW, F8>::J> sg_plan_w(const uint8_t *w, const uint8_t *w1, int64_t K,
                                                                     int64_t N, int64_t n0, int64_t k0) {
  using L = sg_wplan<WN, SW, F8>;
  constexpr int BN = sg_bn(WN);
  sg_cp<L::J> cp;
  const int r0 = (int)threadIdx.x / L::CPR, c = (int)threadIdx.x % L::CPR;
  cp.ck = F8 ? 16 * c : 8 * c;
  cp.so = F8 ? (uint32_t)sg_off8(r0, c) : (uint32_t)sg_off(r0, c, SG_RM) * 2;
  cp.rows = 0;
#pragma unroll
  for (int j = 0; j < L::J; j++) {
    const int r = r0 + j * L::RJ;
    const uint8_t *wp = SW && r >= BN ? w1 : w;
    const int64_t n = n0 + (r % BN);
    const bool ok = n < N;
    cp.g[j] = ok ? wp + (n * K + k0 + cp.ck) * L::EB : wp;
    cp.rows |= (unsigned)ok << j;
  }
  return cp;
}

/* … and x's: 8·MB rows (past M: zeros); F8 at MB = 1 has copies for threads
 * 0 … 63 only (sg_xlive). */
template <int MB, bool F8>
struct sg_xplan {
  static constexpr int XR = 8 * MB, CPR = F8 ? 8 : CH, J = (XR * CPR + SG_T - 1) / SG_T, RJ = SG_T / CPR;
  static constexpr int DJ = F8 ? RJ * 128 : RJ * 64 * 2, EB = F8 ? 1 : 2;
  static_assert(XR * CPR % SG_T == 0 || J == 1, "whole copies per thread, or one for some");
};
template <int MB, bool F8>
__device__ __forceinline__ bool sg_xlive() {
  using L = sg_xplan<MB, F8>;
  return L::XR * L::CPR % SG_T == 0 || (int)threadIdx.x < L::XR * L::CPR;
}
template <int MB, bool F8>
__device__ __forceinline__ sg_cp<sg_xplan<MB, F8>::J> sg_plan_x(const uint8_t *x, int64_t K, int M, int m0,
                                                                 int64_t k0) {
  using L = sg_xplan<MB, F8>;
  sg_cp<L::J> cp;
  const int r0 = (int)threadIdx.x / L::CPR, c = (int)threadIdx.x % L::CPR;
  cp.ck = F8 ? 16 * c : 8 * c;
  cp.so = F8 ? (uint32_t)sg_off8(r0, c) : (uint32_t)sg_off(r0, c, L::XR) * 2;
  cp.rows = 0;
#pragma unroll
  for (int j = 0; j < L::J; j++) {
    const int m = m0 + r0 + j * L::RJ;
    const bool ok = m < M;
    cp.g[j] = ok ? x + ((int64_t)m * K + k0 + cp.ck) * L::EB : x;
    cp.rows |= (unsigned)ok << j;
  }
  return cp;
}

/* acc (64 × 8·MB, the wgmma layout) += the stage at Ws (64 weight rows) and Xs
 * (8·MB x rows): BK / 16 steps of 16 K in order. */
template <int MB>
__device__ __forceinline__ void sg_mma_stage(float (&acc)[MB][4], const uint16_t *Ws, const uint16_t *Xs, uint32_t ws_s,
                                             uint32_t xs_s) { /* ws_s, xs_s: Ws, Xs as shared addresses */
  constexpr int XR = 8 * MB;
#if RLRUN_HAVE_WGMMA
  const uint64_t dw = wgmma_desc_sw128(ws_s), dx = wgmma_desc_sw128(xs_s);
  wgmma_fence();
#pragma unroll
  for (int s = 0; s < BK / 16; s++) {
    const uint32_t h = (uint32_t)(s >> 2), o = (uint32_t)(s & 3) * 32; /* K half, 32 B per 16 K */
    wgmma_bf16<XR>(&acc[0][0], wgmma_desc_add(dw, h * SG_RM * 128 + o), wgmma_desc_add(dx, h * XR * 128 + o));
  }
  wgmma_commit();
  wgmma_wait<0>();
#else
  /* mma16816 per warp: its 16 weight rows (A) × every 8-row block of x (B) */
  const int warp = (int)threadIdx.x >> 5, lane = (int)threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int r0 = 16 * warp + g;
#pragma unroll
  for (int s = 0; s < BK / 16; s++) {
    const int c = 2 * s; /* chunk of K 16s … 16s+7; K 16s+8 … is chunk c + 1 */
    uint32_t af[4];
    af[0] = *reinterpret_cast<const uint32_t *>(Ws + sg_off(r0, c, SG_RM) + 2 * t);
    af[1] = *reinterpret_cast<const uint32_t *>(Ws + sg_off(r0 + 8, c, SG_RM) + 2 * t);
    af[2] = *reinterpret_cast<const uint32_t *>(Ws + sg_off(r0, c + 1, SG_RM) + 2 * t);
    af[3] = *reinterpret_cast<const uint32_t *>(Ws + sg_off(r0 + 8, c + 1, SG_RM) + 2 * t);
#pragma unroll
    for (int i = 0; i < MB; i++) {
      const uint32_t b0 = *reinterpret_cast<const uint32_t *>(Xs + sg_off(8 * i + g, c, XR) + 2 * t);
      const uint32_t b1 = *reinterpret_cast<const uint32_t *>(Xs + sg_off(8 * i + g, c + 1, XR) + 2 * t);
      mma16816(acc[i], af, b0, b1);
    }
  }
#endif
}

/* The F8 form's stage: part = the block's 4 MMAs of 32 K in K order, from zero
 * (E4M3 × E4M3 on the tensor cores), then acc = fma(part, sx[row] · sw, acc) —
 * gemm_small_fp8_block's scale step (one rounding for the product of the scales,
 * one for the fused multiply-add). sc: the stage's x scales; swv: this warp's
 * weight scale (the pair: gate's or up's). */
template <int MB>
__device__ __forceinline__ void sg_mma_stage8(float (&acc)[MB][4], uint32_t ws_s, const float *sc, float swv) {
#if RLRUN_HAVE_WGMMA
  constexpr int XR = 8 * MB;
  float part[MB][4];
#pragma unroll
  for (int i = 0; i < MB; i++) part[i][0] = part[i][1] = part[i][2] = part[i][3] = 0.f;
  const uint64_t dw = wgmma_desc_sw128(ws_s), dx = wgmma_desc_sw128(ws_s + SG_RM * BK);
  wgmma_fence();
#pragma unroll
  for (int s = 0; s < BK / 32; s++)
    wgmma_e4m3<XR>(&part[0][0], wgmma_desc_add(dw, (uint32_t)s * 32), wgmma_desc_add(dx, (uint32_t)s * 32));
  wgmma_commit();
  wgmma_wait<0>();
  gs_fp8_scale_acc<MB, true>(acc, part, sc, swv, 2 * ((int)threadIdx.x & 3)); /* sc: 8-byte aligned (sg_sc_floats even) */
#else
  (void)acc, (void)ws_s, (void)sc, (void)swv;
  __trap(); /* the host runs this form on sm_90 only */
#endif
}

/* The F8 pair's last step, run by the CTA that wrote (its share of) tile `tile`'s
 * act values for rows m0 … m0+8·MB−1: count the tile in at its 128-column block
 * (its act bytes made visible device-wide first); the CTA that counts a block's
 * last tile in quantizes the block's act rows as ops_swiglu_forward_q8_bx_cuda does
 * (8 lanes a row's block, 16 elements a lane, the integer amax over the 8 lanes,
 * fmt_fp8_block_scale, the division encoder; a block with Inf/NaN: scale NaN, codes
 * 0; rows [M, q8_pad): codes and scales 0) and resets the counter for the next call.
 * Which CTA that is changes nothing: the act values are final when it reads them. */
template <int MB, int WN>
__device__ __forceinline__ void sg_q8_tail(const sg_args &a, int64_t tile, int mc, int m0, int64_t N, int *flag) {
  constexpr int XR = 8 * MB, BN = sg_bn(WN), TPB = 128 / BN; /* tiles a block */
  static_assert(128 % BN == 0 && 8 * XR % 32 == 0, "tiles inside blocks; whole warps a row group");
  const int64_t blk = tile / TPB, ntiles = (N + BN - 1) / BN, nblk = (N + 127) / 128;
  const unsigned want = (unsigned)(min((blk + 1) * TPB, ntiles) - blk * TPB);
  unsigned *cnt = a.qcnt + (int64_t)mc * nblk + blk;
  __threadfence(); /* this CTA's act stores, device-wide, before the count says so */
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    *flag = atomicAdd(cnt, 1u) == want - 1;
  }
  __syncthreads();
  if (!*flag) return;
  __threadfence(); /* the other tiles' act stores are read after their counts */
  const int rows = min(XR, a.q8_pad - m0);
  for (int t = (int)threadIdx.x; t < 8 * XR; t += SG_T) { /* whole warps: 8·XR is a multiple of 32 */
    const int r = t >> 3, l = t & 7, m = m0 + r;
    const int64_t c = blk * 128 + 16 * l;
    const bool in = c < N, real = m < a.M;
    uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
    if (in && real) {
      const uint4 *src = reinterpret_cast<const uint4 *>(a.act + (int64_t)m * N + c);
      x0 = __ldcg(src), x1 = __ldcg(src + 1);
    }
    uint32_t mx = qd_fold16(qd_amax_bits16(x0, x1));
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) mx = max(mx, __shfl_xor_sync(QD_FULL, mx, o));
    if (r >= rows || !in) continue;
    const bool bad = mx >= 0x7f80u;
    const float sc = !real ? 0.0f
                     : bad ? __uint_as_float(0x7fc00000u)
                           : fmt_fp8_block_scale(qd_bits_to_amax(mx), a.ue8m0);
    *reinterpret_cast<uint4 *>(a.q8 + (int64_t)m * N + c) =
        (bad || !real) ? make_uint4(0, 0, 0, 0) : qd_enc_fp8_div(x0, x1, sc, a.soft);
    if (l == 0) a.q8s[blk * a.q8_ld + m] = sc;
  }
  if (threadIdx.x == 0) *cnt = 0; /* every tile of the block has counted: ready for the next call */
}

/* The F8 pair where a cluster holds a whole 128-column block of act (a.qcl: one
 * row chunk, S ≤ 2 slices; the cluster = 4 consecutive tiles × S slices, rank =
 * (tile % 4)·S + slice, the grid padded to whole blocks with tiles past N that
 * compute zeros). The kernel's cluster reduction (from ranks (tile % 4)·S + t)
 * leaves the CTA's act values in shared memory at sg_q8_act_off; this step
 * publishes each of its rows' amax over the tile's columns (the integer amax of
 * the BF16 bits, columns < N) and, after a cluster barrier, reads the other three
 * tiles' amax of its rows through distributed shared memory: the block's amax,
 * hence the scale and codes of ops_swiglu_forward_q8_bx_cuda, with no global
 * round trip. Rows of the m-chunk are owned by slice (r / 16) % S (the rows its
 * reduction share covers). Called after the reduction's reads of the partials and
 * before the cluster barrier that frees them: two more barriers (amax written;
 * amax read). */
template <int MB, int WN>
__host__ __device__ constexpr int sg_q8_act_off() { /* after the partials [2][8·MB][LDP] */
  return (2 * 8 * MB * sg_ldp(WN) * 4 + 15) / 16 * 16;
}
template <int MB, int WN>
__device__ __forceinline__ void sg_q8_block(const sg_args &a, uint8_t *ring, int64_t tile, int s, int m0, int64_t n0,
                                            int64_t N, int rows) {
  constexpr int XR = 8 * MB, BN = sg_bn(WN), T = SG_T, RPC = T / (BN / 4), HB = BN / 16; /* 16-column halves */
  static_assert(sg_q8_act_off<MB, WN>() + XR * BN * 2 + XR * 4 <= sg_ring_bytes(MB, true) && BN % 16 == 0,
                "the epilogue fits the ring");
  const int S = a.slices, tq = (int)(tile & 3), tid = threadIdx.x;
  const uint16_t *act_s = reinterpret_cast<const uint16_t *>(ring + sg_q8_act_off<MB, WN>()); /* [XR][BN] */
  uint32_t *pam = reinterpret_cast<uint32_t *>(ring + sg_q8_act_off<MB, WN>() + XR * BN * 2); /* [XR] */
  __syncthreads(); /* this CTA's rows of act_s written */
  if (tid < rows && tid / RPC % S == s) { /* a row's amax over the tile's columns below N */
    uint32_t m = 0;
#pragma unroll
    for (int h = 0; h < HB; h++)
      if (n0 + 16 * h < N) {
        const uint4 *v = reinterpret_cast<const uint4 *>(act_s + tid * BN + 16 * h);
        m = max(m, qd_fold16(qd_amax_bits16(v[0], v[1])));
      }
    pam[tid] = m;
  }
  cluster_sync(); /* the partials are read (the ring may go); every tile's amax is written */
  const int prow = min(XR, a.q8_pad - m0); /* rows with codes: real ones, then pad rows (zeros) */
  for (int t = tid; t < XR * HB; t += T) {
    const int r = t / HB, h = t % HB;
    if (r >= prow || r / RPC % S != s) continue;
    const int64_t n = n0 + 16 * h, m = m0 + r;
    float sc = 0.0f;
    uint4 code = make_uint4(0, 0, 0, 0);
    if (r < rows) {
      uint32_t mx = 0;
#pragma unroll
      for (int t4 = 0; t4 < 4; t4++) mx = max(mx, cluster_ld_u32(cluster_map(smem_u32(pam + r), t4 * S + s)));
      const bool bad = mx >= 0x7f80u;
      sc = bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(qd_bits_to_amax(mx), a.ue8m0);
      const uint4 *v = reinterpret_cast<const uint4 *>(act_s + r * BN + 16 * h);
      if (!bad) code = qd_enc_fp8_div(v[0], v[1], sc, a.soft);
    }
    if (n < N) *reinterpret_cast<uint4 *>(a.q8 + m * N + n) = code;
    if (tq == 0 && h == 0) a.q8s[(n0 / 128) * a.q8_ld + m] = sc;
  }
  cluster_sync(); /* the other tiles have read this CTA's amax: its shared memory may go */
}

/* One CTA: block (slice, m-chunk, tile), so the slices of a tile are adjacent and
 * form its cluster (the F8 pair's block clusters: slices × 1 × 4 tiles). */
template <int MB, int WN, bool SW, bool F8>
__global__ void __launch_bounds__(SG_T) gemm_small_kernel(const sg_args a) {
  extern __shared__ uint4 sg_smem[];
  __shared__ int s_last;
  constexpr bool Q8 = SW && F8; /* the F8 pair: act quantized for the next GEMM */
  static_assert(!Q8 || WN == 2, "the F8 pair's tiles are 32 rows of each matrix");
  constexpr int P = sg_parts(SW), NST = sg_nst(MB, F8), XR = 8 * MB, SE = sg_stage_elems(MB);
  constexpr int BN = sg_bn(WN), T = SG_T, RING = sg_ring_bytes(MB, F8);
  /* the ring, aligned to the 1024 bytes of the swizzle (the same offset in every CTA) */
  uint8_t *ring = reinterpret_cast<uint8_t *>(sg_smem) + ((1024 - (smem_u32(sg_smem) & 1023)) & 1023);
  uint16_t *sm = reinterpret_cast<uint16_t *>(ring);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gr = lane >> 2, tg = lane & 3;
  const int s = (int)blockIdx.x, mc = (int)blockIdx.y;
  const int64_t tile = blockIdx.z;
  /* the tile's segment (constant indices only: no local copy of the arguments) */
  const uint16_t *w0 = a.w[0], *w1 = a.w[1];
  const uint8_t *w8 = a.w8[0];
  const float *sw = a.sw[0];
  int64_t sld = a.sld[0];
  float *y = a.y[0];
  int64_t N = a.n[0], tb = 0;
  if (!SW) {
#pragma unroll
    for (int i = 1; i < MAXSEG; i++)
      if (i < a.n_seg && tile >= a.t0[i]) {
        w0 = a.w[i], y = a.y[i], N = a.n[i], tb = a.t0[i];
        if (F8) w8 = a.w8[i], sw = a.sw[i], sld = a.sld[i];
      }
  }
  const int64_t n0 = (tile - tb) * BN;
  const int m0 = mc * XR;
  const int64_t k0 = (int64_t)s * a.slice_k, k1 = min(a.K, k0 + a.slice_k);
  const int nst = (int)((k1 - k0 + BK - 1) / BK);

  if constexpr (F8 && P * BN < SG_RM) { /* the same for the F8 form's 128-byte rows */
    constexpr int ZV = (SG_RM - P * BN) * 8, SB = sg_stage_bytes(MB, true);
    for (int i = tid; i < NST * ZV; i += T)
      *reinterpret_cast<uint4 *>(ring + (i / ZV) * SB + P * BN * 128 + 16 * (i % ZV)) = make_uint4(0, 0, 0, 0);
  } else if constexpr (!F8 && P * BN < SG_RM) { /* the MMA rows no matrix fills: zeros in every slot, once */
    constexpr int ZV = (SG_RM - P * BN) * 8; /* 16-byte vectors of one K half */
    for (int i = tid; i < NST * 2 * ZV; i += T) {
      const int slot = i / (2 * ZV), h = i / ZV % 2, j = i % ZV;
      *reinterpret_cast<uint4 *>(sm + slot * SE + h * SG_RM * 64 + (P * BN + j / 8) * 64 + 8 * (j % 8)) =
          make_uint4(0, 0, 0, 0);
    }
  }

  /* prologue: NST − 1 stages in flight. Launched as a dependent, the weights
   * (constant while the previous kernel runs) are asked for before its end. */
  using LW = sg_wplan<WN, SW, F8>;
  using LX = sg_xplan<MB, F8>;
  constexpr int SB = F8 ? sg_stage_bytes(MB, true) : sg_stage_elems(MB) * 2, XOFF = SG_RM * BK * LW::EB;
  const int kl = (int)(k1 - k0);
  const uint32_t ring_s = smem_u32(ring);
  const sg_cp<LW::J> cw = F8 ? sg_plan_w<WN, SW, F8>(w8, a.w8[1], a.K, N, n0, k0)
                             : sg_plan_w<WN, SW, F8>(reinterpret_cast<const uint8_t *>(w0),
                                                     reinterpret_cast<const uint8_t *>(w1), a.K, N, n0, k0);
  const sg_cp<LX::J> cx =
      sg_plan_x<MB, F8>(F8 ? a.xq : reinterpret_cast<const uint8_t *>(a.x), a.K, a.M, m0, k0);
  const bool xlive = sg_xlive<MB, F8>();
  /* the F8 form's scales of a stage: thread t < 8·MB x row m0 + t's (zero past M),
   * thread t < P the weight's (gate's, up's) of the tile's 128-row block; + st a stage */
  const float *scp = nullptr;
  int64_t scs = 1;
  int scb = 0;
  if constexpr (F8) {
    if (tid < XR) {
      const int m = m0 + tid;
      scp = m < a.M ? a.xs + (int64_t)m * a.xs_rs + (k0 / BK) * a.xs_ks : a.xs;
      scs = m < a.M ? a.xs_ks : 0, scb = m < a.M ? 4 : 0;
    }
  }
  const float *wsp = nullptr;
  if constexpr (F8) {
    if (tid < P) wsp = (SW && tid == 1 ? a.sw[1] : sw) + (n0 / 128) * (SW && tid == 1 ? a.sld[1] : sld) + k0 / BK;
  }
  /* stage st into ring slot sl = st % NST */
  auto load_w = [&](int st, int sl) {
    const uint32_t slot = ring_s + (uint32_t)(sl * SB);
    sg_cp_issue<LW::J, LW::DJ, LW::EB>(cw, slot, st, kl);
    if constexpr (F8)
      if (tid < P) cp_async4(ring_s + (uint32_t)(RING + (sl * sg_sc_floats(MB) + XR + tid) * 4), wsp + st, 4);
  };
  auto load_x = [&](int st, int sl) {
    const uint32_t slot = ring_s + (uint32_t)(sl * SB + XOFF);
    if (xlive) sg_cp_issue<LX::J, LX::DJ, LX::EB>(cx, slot, st, kl);
    if constexpr (F8)
      if (tid < XR)
        cp_async4(ring_s + (uint32_t)(RING + (sl * sg_sc_floats(MB) + tid) * 4), scp + st * scs, scb);
  };
  if (a.pdl) {
#pragma unroll
    for (int st = 0; st < NST - 1; st++)
      if (st < nst) load_w(st, st);
    pdl_wait(); /* the previous kernel wrote x (and may still read y, the workspace, the counters) */
  }
#pragma unroll
  for (int st = 0; st < NST - 1; st++) {
    if (st < nst) {
      if (!a.pdl) load_w(st, st);
      load_x(st, st);
    }
    cp_commit();
  }

  float acc[MB][4];
#pragma unroll
  for (int i = 0; i < MB; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
  static_assert(!F8 || (sg_sc_floats(MB) % 2 == 0 && RING % 16 == 0), "a slot's x scales 8-byte aligned");
  for (int st = 0, slot = 0; st < nst; st++, slot = slot + 1 == NST ? 0 : slot + 1) { /* slot = st % NST */
    cp_wait<NST - 2>();  /* stage st has landed (this thread's copies) … */
    fence_proxy_async(); /* … visible to the tensor cores' reads … */
    __syncthreads();     /* … everyone's, and slot (st − 1) % NST is free again */
    if (st + NST - 1 < nst) { /* into the slot freed above: (st − 1) % NST */
      const int fs = slot == 0 ? NST - 1 : slot - 1;
      load_w(st + NST - 1, fs);
      load_x(st + NST - 1, fs);
    }
    cp_commit(); /* (empty groups at the tail keep the count uniform) */
    if constexpr (F8) {
      const float *sc = reinterpret_cast<const float *>(ring + RING) + slot * sg_sc_floats(MB);
      sg_mma_stage8<MB>(acc, ring_s + (uint32_t)(slot * SB), sc, sc[XR + (SW ? warp / WN : 0)]);
    } else {
      const uint16_t *Ws = sm + slot * SE;
      const uint32_t ws_s = ring_s + (uint32_t)(slot * SB);
      sg_mma_stage<MB>(acc, Ws, Ws + SG_RM * BK, ws_s, ws_s + SG_RM * BK * 2);
    }
  }
  pdl_launch_dependents(); /* only the epilogue is left: a dependent grid may start its weights */

  /* acc[i][h + 2v] is (x row m0 + rc + 8i + h, row ra + 8v of matrix p's tile) */
  const int p = warp / WN, ra = (warp % WN) * 16 + gr, rc = 2 * tg;
  const bool live = p < P; /* else: the zero rows of a 32-row tile */
  const int rows = min(XR, a.M - m0);
  if (a.slices == 1 && !SW) {
    if (!live) return;
#pragma unroll
    for (int i = 0; i < MB; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = rc + 8 * i + h;
        if (r >= rows) continue;
#pragma unroll
        for (int v = 0; v < 2; v++) {
          const int64_t n = n0 + ra + 8 * v;
          if (n < N) sg_put<SW>(a, y, N, m0 + r, n, acc[i][h + 2 * v], 0.f);
        }
      }
    return;
  }

  const int S = a.slices;
  const bool qcl = Q8 && a.qcl; /* the F8 pair's block clusters (sg_q8_block) */
  if (a.cluster || S == 1 || qcl) {
    /* the partial [p][row][LDP] in this CTA's shared memory; split K: summed
     * inside the cluster; one slice (the pair): g and u of an output meet here */
    constexpr int LDP = sg_ldp(WN), V4 = BN / 4;
    static_assert(P * XR * LDP * 4 <= RING, "the partial fits the ring");
    float *buf = reinterpret_cast<float *>(ring);
    cp_wait<0>();
    __syncthreads(); /* every warp is done with the ring */
    if (live)
#pragma unroll
      for (int i = 0; i < MB; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int r = rc + 8 * i + h;
          buf[(p * XR + r) * LDP + ra] = acc[i][h];
          buf[(p * XR + r) * LDP + ra + 8] = acc[i][h + 2];
        }
    if (S == 1 && !qcl) {
      __syncthreads();
      for (int j = tid; j < rows * V4; j += T) {
        const int r = j / V4, c = (j % V4) * 4;
        const float4 g = *reinterpret_cast<const float4 *>(buf + r * LDP + c);
        const float4 u = *reinterpret_cast<const float4 *>(buf + ((P - 1) * XR + r) * LDP + c);
        const float gv[4] = {g.x, g.y, g.z, g.w}, uv[4] = {u.x, u.y, u.z, u.w};
        sg_put4<SW>(a, y, N, m0 + r, n0 + c, gv, uv);
      }
      if constexpr (Q8) sg_q8_tail<MB, WN>(a, tile, mc, m0, N, &s_last);
      return;
    }
    cluster_sync(); /* all S partials written */
    const uint32_t base = smem_u32(buf);
    /* CTA s (its rank in the cluster: + rk0 in a block cluster) takes blocks of T groups of 4
     * outputs, every S-th block */
    const int rk0 = qcl ? (int)(tile & 3) * S : 0;
    /* sc: the slice count as a compile-time constant (sg_ic<0>: S at run time, up to
     * GEMM_SMALL_MAX_CLUSTER loads predicated on it) */
    auto sum = [&](auto sc) {
      constexpr int SC = decltype(sc)::value, MC = SC ? SC : GEMM_SMALL_MAX_CLUSTER;
      const int SS = SC ? SC : S;
      for (int j = s * T + tid; j < rows * V4; j += SS * T) {
        const int r = j / V4, c = (j % V4) * 4;
        const uint32_t og = base + (uint32_t)(r * LDP + c) * 4, ou = og + (uint32_t)(XR * LDP) * 4;
        float4 pg[MC], pu[MC]; /* all S loads in flight before the first add */
#pragma unroll
        for (int t = 0; t < MC; t++)
          if (SC || t < S) {
            pg[t] = cluster_ld4(cluster_map(og, rk0 + t));
            if (SW) pu[t] = cluster_ld4(cluster_map(ou, rk0 + t));
          }
        float4 g = pg[0], u = SW ? pu[0] : pg[0];
#pragma unroll
        for (int t = 1; t < MC; t++)
          if (SC || t < S) {
            g = add4(g, pg[t]);
            if (SW) u = add4(u, pu[t]);
          }
        const float gv[4] = {g.x, g.y, g.z, g.w}, uv[4] = {u.x, u.y, u.z, u.w};
        sg_put4<SW>(a, y, N, m0 + r, n0 + c, gv, uv);
        if (qcl) /* the act bits for sg_q8_block, column pads included (it masks them) */
          *reinterpret_cast<uint2 *>(ring + sg_q8_act_off<MB, WN>() + (r * BN + c) * 2) = sg_act4(gv, uv);
      }
    };
    static_assert(GEMM_SMALL_MAX_CLUSTER == 8, "the slice counts given their own sum");
    switch (S) {
    case 1: sum(sg_ic<1>{}); break;
    case 2: sum(sg_ic<2>{}); break;
    case 4: sum(sg_ic<4>{}); break;
    case 6: sum(sg_ic<6>{}); break;
    case 8: sum(sg_ic<8>{}); break;
    default: sum(sg_ic<0>{}); break;
    }
    if constexpr (Q8)
      if (qcl) {
        sg_q8_block<MB, WN>(a, ring, tile, s, m0, n0, N, rows);
        return;
      }
    /* the others have read this CTA's partial: its shared memory may go. The loads'
     * values are in registers already (stored above); only the Q8 count needs the
     * act stores released first */
    if constexpr (Q8) {
      __threadfence(); /* this CTA's act stores, device-wide, before the cluster's count */
      cluster_sync();
    } else {
      cluster_sync_relaxed();
    }
    if constexpr (Q8)
      if (s == 0) sg_q8_tail<MB, WN>(a, tile, mc, m0, N, &s_last); /* one count for the cluster's tile */
    return;
  }

  /* split K through the workspace: this slice's partial, then the arrival count of the tile */
  const int64_t tix = tile * a.n_mc + mc;
  float *part = a.ws + ((size_t)tix * S + s) * P * XR * BN;
  if (live)
#pragma unroll
    for (int i = 0; i < MB; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int r = rc + 8 * i + h;
        if (r >= rows) continue;
        part[(p * XR + r) * BN + ra] = acc[i][h];
        part[(p * XR + r) * BN + ra + 8] = acc[i][h + 2];
      }
  __threadfence(); /* the partial is visible device-wide before the count says so */
  __syncthreads();
  if (tid == 0) s_last = atomicAdd(a.cnt + tix, 1u) == (unsigned)(S - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence(); /* the other slices' partials are read after their counts */

  /* last CTA of the tile: y = Σ_s partial_s in slice order, in passes of rows
   * that fit the (now idle) shared memory; buf holds [slice][part][row][BN] */
  float *buf = reinterpret_cast<float *>(ring);
  const float *src = a.ws + (size_t)tix * S * P * XR * BN;
  const int cap_rows = RING / (4 * BN * S * P); /* ≥ 1: S ≤ GEMM_SMALL_MAX_SLICES */
  const int per = max(1, min(rows, cap_rows));
  cp_wait<0>();
  __syncthreads(); /* the ring is idle: no copy of the main loop is outstanding */
  for (int r0 = 0; r0 < rows; r0 += per) {
    const int nr = min(per, rows - r0), vec = nr * BN / 4; /* 16-byte vectors per (slice, part) */
    for (int i = tid; i < S * P * vec; i += T) {
      const int tp = i / vec, j = i % vec; /* tp = slice · P + part */
      cp_async16(smem_u32(buf + (size_t)i * 4), src + ((size_t)tp * XR + r0) * BN + (size_t)j * 4, 16);
    }
    cp_commit();
    cp_wait<0>();
    __syncthreads();
    for (int i = tid; i < nr * BN; i += T) {
      const int64_t n = n0 + i % BN;
      float g = buf[i], u = SW ? buf[nr * BN + i] : 0.f;
      for (int t = 1; t < S; t++) {
        g = __fadd_rn(g, buf[(t * P) * nr * BN + i]);
        if (SW) u = __fadd_rn(u, buf[(t * P + 1) * nr * BN + i]);
      }
      if (n < N) sg_put<SW>(a, y, N, m0 + r0 + i / BN, n, g, u);
    }
    __syncthreads(); /* buf is read before the next pass overwrites it */
  }
  if (tid == 0) a.cnt[tix] = 0; /* every slice has counted: ready for the next call */
  if constexpr (Q8) sg_q8_tail<MB, WN>(a, tile, mc, m0, N, &s_last);
}

/* ---------------------------------------------------------------- host side */

constexpr int NKERN = 32; /* sg_kid range */

/* The workspace per device and what has been asked of each kernel instance
 * once per device (gemm_small_common.cuh). */
static gs_state<NKERN> SG = GS_STATE_INIT;

constexpr const char *WHO = "gemm_small"; /* the error messages' prefix */

/* Launch gemm_small_kernel<MB, WN, SW> over a's tiles: the cluster reduction when
 * asked for and schedulable, else the workspace. */
template <int MB, int WN, bool SW, bool F8>
int sg_launch(int dev, sg_args &a, int want_cluster, cudaStream_t s, rl_err *e) {
  constexpr int bytes = sg_smem_bytes(MB, F8), kid = sg_kid(MB, WN, SW, F8), T = SG_T;
  constexpr int P = sg_parts(SW), XR = 8 * MB, BN = sg_bn(WN);
  static_assert(bytes <= 227 * 1024 && 4 * BN * GEMM_SMALL_MAX_SLICES * P <= sg_ring_bytes(MB, F8), "shared memory");
  static_assert(P * XR * sg_ldp(WN) * 4 <= sg_ring_bytes(MB, F8), "the cluster partial fits the ring");
  auto kern = gemm_small_kernel<MB, WN, SW, F8>;
  if (gs_smem_attr(SG, kern, kid, dev, bytes, WHO, e)) return RL_EXIT_FAIL;
  const int64_t tiles = a.t0[a.n_seg];
  if ((tiles + 3) / 4 * 4 > 65535 || a.n_mc > 65535)
    return rl_errf(e, RL_EXIT_USAGE,
                   "gemm_small: %lld column tiles or %d row chunks is more than a grid dimension's 65535; "
                   "use gemm_bf16 or linear_forward (cuBLASLt) for an output this wide",
                   (long long)tiles, a.n_mc);
  /* the F8 pair: a cluster per 128-column block of act where one can hold it */
  a.qcl = SW && F8 && a.n_mc == 1 && 4 * a.slices <= GEMM_SMALL_MAX_CLUSTER && want_cluster &&
          gs_cluster_ok(SG, kern, kid, dev, 4 * a.slices, T, bytes);
  a.cluster = !a.qcl && a.slices > 1 && want_cluster && a.slices <= GEMM_SMALL_MAX_CLUSTER &&
              gs_cluster_ok(SG, kern, kid, dev, a.slices, T, bytes);
  /* … else the block counters, after the tile counters (all 0 between calls) */
  const size_t qb = SW && F8 && !a.qcl ? (size_t)a.n_mc * (size_t)((a.n[0] + 127) / 128) * sizeof(unsigned) : 0;
  const bool split_ws = a.slices > 1 && !a.cluster && !a.qcl; /* the split-K partials go through the workspace */
  if (split_ws || qb) {
    size_t wsb = split_ws ? (size_t)(tiles * a.n_mc * a.slices) * P * XR * BN * sizeof(float) : 16;
    size_t cb = (size_t)(tiles * a.n_mc) * sizeof(unsigned) + qb;
    if (gs_workspace(SG, dev, wsb, cb, s, WHO, &a.ws, &a.cnt, e)) return RL_EXIT_FAIL;
    a.qcnt = a.cnt + tiles * a.n_mc;
  }
  /* the F8 pair's clusters: whole blocks of act (4 tiles) */
  const dim3 grid((unsigned)a.slices, (unsigned)a.n_mc, (unsigned)(a.qcl ? (tiles + 3) / 4 * 4 : tiles));
  if (a.qcl || a.cluster || a.pdl) {
    cudaLaunchAttribute at[2];
    const dim3 cl(a.qcl || a.cluster ? (unsigned)a.slices : 1u, 1u, a.qcl ? 4u : 1u);
    cudaLaunchConfig_t cfg = gs_launch_cfg(at, cl, a.pdl, grid, T, bytes, s);
    return gs_ok(cudaLaunchKernelEx(&cfg, kern, a), WHO, "gemm_small_kernel launch", e) ? RL_EXIT_FAIL : 0;
  }
  kern<<<grid, T, bytes, s>>>(a);
  return gs_ok(cudaGetLastError(), WHO, "gemm_small_kernel launch", e) ? RL_EXIT_FAIL : 0;
}

/* The kernel of MB m-blocks for a tile width and kind. */
template <int WN, bool SW, bool F8 = false>
int sg_launch_mb(int mb, int dev, sg_args &a, int want_cluster, cudaStream_t s, rl_err *e) {
  switch (mb) {
    case 1: return sg_launch<1, WN, SW, F8>(dev, a, want_cluster, s, e);
    case 2: return sg_launch<2, WN, SW, F8>(dev, a, want_cluster, s, e);
    case 4: return sg_launch<4, WN, SW, F8>(dev, a, want_cluster, s, e);
    default: return sg_launch<8, WN, SW, F8>(dev, a, want_cluster, s, e);
  }
}

/* Plan and launch a product whose segments (a.w, a.y, a.n, a.n_seg), x, M and K
 * are filled; plan_rows: the weight rows the K split counts. The CTA shape:
 *   MB       8·MB ≥ M rows of x a CTA (M > 64: 64-row chunks).
 *   width    64 rows where 64-row tiles alone reach the CTA target (lm_head), or at
 *            M > 32 unless RLRUN_SMALL_GEMM_BN=32; else 32. The pair: 32 rows of
 *            each matrix.
 * None of these changes a sum: they decide which CTA and thread compute an
 * output, while its K order (the plan) and its slice sum order stay put. */
int sg_run(sg_args &a, bool sw, int64_t plan_rows, cudaStream_t s, rl_err *e, bool f8 = false) {
  int dev = 0;
  int rc = gs_device(SG, WHO, &dev, e);
  if (rc) return rc;
  const gemm_small_tune tune = gemm_small_tune_get();
  gemm_small_plan(plan_rows, a.K, &a.slices, &a.slice_k);
  const int64_t M = a.M;
  const int mb = M > 32 ? 8 : M > 16 ? 4 : M > 8 ? 2 : 1;
  int64_t t64 = 0;
  for (int i = 0; i < a.n_seg; i++) t64 += (a.n[i] + 63) / 64;
  int wn = 2;
  if (!sw) {
    if (t64 >= tune.ctas) wn = 4;
    else if (mb == 8) wn = tune.bn == 32 ? 2 : 4;
  }
  const int64_t bn = 16 * wn;
  a.t0[0] = 0;
  for (int i = 0; i < a.n_seg; i++) a.t0[i + 1] = a.t0[i] + (a.n[i] + bn - 1) / bn;
  a.n_mc = (int)((M + 8 * mb - 1) / (8 * mb));
  const int cl = tune.reduce != GEMM_SMALL_REDUCE_GLOBAL;
  a.pdl = tune.pdl;
  if (sw) return f8 ? sg_launch_mb<2, true, true>(mb, dev, a, cl, s, e) : sg_launch_mb<2, true>(mb, dev, a, cl, s, e);
  if (f8)
    return wn == 4 ? sg_launch_mb<4, false, true>(mb, dev, a, cl, s, e)
                   : sg_launch_mb<2, false, true>(mb, dev, a, cl, s, e);
  return wn == 4 ? sg_launch_mb<4, false>(mb, dev, a, cl, s, e) : sg_launch_mb<2, false>(mb, dev, a, cl, s, e);
}

/* The grouped product after its checks: empty segments dropped, K = 0 as zeros. */
int sg_group(const gemm_small_seg *seg, int n_seg, const uint16_t *x, int64_t M, int64_t K, void *stream, rl_err *e,
             int ob = 0) {
  sg_args a;
  memset(&a, 0, sizeof a);
  for (int i = 0; i < n_seg; i++)
    if (seg[i].N > 0) a.w[a.n_seg] = seg[i].w, a.y[a.n_seg] = seg[i].y, a.n[a.n_seg] = seg[i].N, a.n_seg++;
  if (M == 0 || a.n_seg == 0) return 0;
  cudaStream_t s = gs_stream(stream);
  int dev = 0, rc = gs_device(SG, WHO, &dev, e);
  if (rc) return rc;
  if (K == 0) { /* empty sums */
    for (int i = 0; i < a.n_seg; i++)
      if (gs_ok(cudaMemsetAsync(a.y[i], 0, (size_t)(M * a.n[i]) * (ob ? 2 : 4), s), WHO, "cudaMemsetAsync", e))
        return RL_EXIT_FAIL;
    return 0;
  }
  a.x = x, a.M = (int)M, a.K = K, a.ob = ob;
  return sg_run(a, false, gemm_small_group_rows(seg, n_seg), s, e);
}

/* 1 when device dev runs the F8 form (compute capability 9.0: the sm_90a build's
 * wgmma); asked once per device. */
int sg_f8_device(int dev) {
  static int cc[DEVICE_MAX_GPUS]; /* 0: not asked; else major·10 + minor + 1 */
  int v = __atomic_load_n(&cc[dev], __ATOMIC_ACQUIRE);
  if (!v) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
      cudaGetLastError(), major = minor = 0;
    v = major * 10 + minor + 1;
    __atomic_store_n(&cc[dev], v, __ATOMIC_RELEASE);
  }
  return v == 91;
}

} /* namespace */

extern "C" int gemm_small_fp8_group_supported(void) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= DEVICE_MAX_GPUS) {
    cudaGetLastError();
    return 0;
  }
  return sg_f8_device(dev);
}

extern "C" int gemm_small_fp8_group_cuda(const gemm_small_seg8 *seg, int n_seg, const uint8_t *xq, const float *xs,
                                         int64_t xs_rs, int64_t xs_ks, int64_t M, int64_t K, int out_bf16,
                                         void *stream, rl_err *e) {
  int rc = gemm_small_fp8_group_check(seg, n_seg, xq, xs, M, K, out_bf16, e);
  if (rc) return rc;
  sg_args a;
  memset(&a, 0, sizeof a);
  int64_t rows = 0;
  for (int i = 0; i < n_seg; i++) {
    const qtensor *w = seg[i].w;
    if (w->rows == 0) continue;
    const int64_t kb = (K + BK - 1) / BK;
    a.w8[a.n_seg] = (const uint8_t *)w->data, a.sw[a.n_seg] = (const float *)w->scales;
    a.sld[a.n_seg] = w->layout == QLAYOUT_HOPPER_WEIGHT ? (kb + 3) / 4 * 4 : kb;
    a.y[a.n_seg] = (float *)seg[i].y, a.n[a.n_seg] = w->rows, a.n_seg++;
    rows += (w->rows + GEMM_SMALL_BN - 1) / GEMM_SMALL_BN * GEMM_SMALL_BN;
  }
  if (M == 0 || a.n_seg == 0) return 0;
  cudaStream_t s = gs_stream(stream);
  int dev = 0;
  if ((rc = gs_device(SG, WHO, &dev, e))) return rc;
  if (K == 0) { /* empty sums */
    for (int i = 0; i < a.n_seg; i++)
      if (gs_ok(cudaMemsetAsync(a.y[i], 0, (size_t)(M * a.n[i]) * (out_bf16 ? 2 : 4), s), WHO, "cudaMemsetAsync", e))
        return RL_EXIT_FAIL;
    return 0;
  }
  if (!sg_f8_device(dev))
    return rl_errf(e, RL_EXIT_HARDWARE, "gemm_small_fp8_group: device %d is not a compute capability 9.0 GPU (the "
                   "kernel runs Hopper's wgmma); use linear_forward", dev);
  a.xq = xq, a.xs = xs, a.xs_rs = xs_rs, a.xs_ks = xs_ks, a.ob = out_bf16 != 0, a.M = (int)M, a.K = K;
  return sg_run(a, false, rows, s, e, true);
}

extern "C" int gemm_small_fp8_swiglu_cuda(uint16_t *act, const gemm_small_q8out *qo, const qtensor *wg,
                                          const qtensor *wu, const uint8_t *xq, const float *xs, int64_t xs_rs,
                                          int64_t xs_ks, int64_t M, int64_t K, void *stream, rl_err *e) {
  int rc = gemm_small_fp8_swiglu_check(act, qo, wg, wu, xq, xs, M, K, e);
  if (rc) return rc;
  const int64_t N = wg->rows;
  if (M == 0 || N == 0) return 0;
  cudaStream_t s = gs_stream(stream);
  int dev = 0;
  if ((rc = gs_device(SG, WHO, &dev, e))) return rc;
  if (!sg_f8_device(dev))
    return rl_errf(e, RL_EXIT_HARDWARE, "gemm_small_fp8_swiglu: device %d is not a compute capability 9.0 GPU (the "
                   "kernel runs Hopper's wgmma); use linear_forward and the SwiGLU", dev);
  sg_args a;
  memset(&a, 0, sizeof a);
  const int64_t kb = (K + BK - 1) / BK;
  const qtensor *w[2] = {wg, wu};
  for (int i = 0; i < 2; i++) {
    a.w8[i] = (const uint8_t *)w[i]->data, a.sw[i] = (const float *)w[i]->scales;
    a.sld[i] = w[i]->layout == QLAYOUT_HOPPER_WEIGHT ? (kb + 3) / 4 * 4 : kb;
  }
  a.act = act, a.n[0] = N, a.n_seg = 1, a.xq = xq, a.xs = xs, a.xs_rs = xs_rs, a.xs_ks = xs_ks, a.M = (int)M, a.K = K;
  a.q8 = qo->q, a.q8s = qo->scales, a.q8_ld = qo->scale_ld, a.q8_pad = qo->rows_pad, a.ue8m0 = qo->ue8m0 != 0;
  a.soft = quant_cuda_soft_cvt();
  /* the plan of the group {wg, wu} (gemm_small_fp8_group_cuda's rows): g, u are that group's outputs, bitwise */
  const int64_t rows = (N + GEMM_SMALL_BN - 1) / GEMM_SMALL_BN * GEMM_SMALL_BN;
  return sg_run(a, true, 2 * rows, s, e, true);
}

extern "C" int gemm_small_bf16_cuda(float *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                                    int64_t K, void *stream, rl_err *e) {
  int rc = gemm_small_check(y, x, w, M, N, K, e);
  if (rc || M == 0 || N == 0) return rc;
  const gemm_small_seg seg = {y, w, N};
  return sg_group(&seg, 1, x, M, K, stream, e);
}

extern "C" int gemm_small_bf16_b_cuda(uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                                      int64_t K, void *stream, rl_err *e) {
  int rc = gemm_small_b_check(y, x, w, M, N, K, e);
  if (rc || M == 0 || N == 0) return rc;
  const gemm_small_seg seg = {reinterpret_cast<float *>(y), w, N}; /* BF16 through a.ob */
  return sg_group(&seg, 1, x, M, K, stream, e, 1);
}

extern "C" int gemm_small_bf16_group_cuda(const gemm_small_seg *seg, int n_seg, const uint16_t *x, int64_t M,
                                          int64_t K, void *stream, rl_err *e) {
  int rc = gemm_small_group_check(seg, n_seg, x, M, K, e);
  return rc ? rc : sg_group(seg, n_seg, x, M, K, stream, e);
}

extern "C" int gemm_small_bf16_swiglu_cuda(uint16_t *act, const uint16_t *x, const uint16_t *wg, const uint16_t *wu,
                                           int64_t M, int64_t N, int64_t K, void *stream, rl_err *e) {
  int rc = gemm_small_swiglu_check(act, x, wg, wu, M, N, K, e);
  if (rc || M == 0 || N == 0) return rc;
  cudaStream_t s = gs_stream(stream);
  int dev = 0;
  if ((rc = gs_device(SG, WHO, &dev, e))) return rc;
  if (K == 0) /* g = u = 0: silu(0)·0 = +0 */
    return gs_ok(cudaMemsetAsync(act, 0, (size_t)(M * N) * 2, s), WHO, "cudaMemsetAsync", e) ? RL_EXIT_FAIL : 0;
  sg_args a;
  memset(&a, 0, sizeof a);
  a.x = x, a.w[0] = wg, a.w[1] = wu, a.act = act, a.n[0] = N, a.n_seg = 1, a.M = (int)M, a.K = K;
  /* the plan of the group {wg, wu}: the SwiGLU's g, u are that group's outputs, bitwise */
  const int64_t rows = (N + GEMM_SMALL_BN - 1) / GEMM_SMALL_BN * GEMM_SMALL_BN;
  return sg_run(a, true, 2 * rows, s, e);
}

extern "C" void gemm_small_release(void) { gs_release(SG); }
