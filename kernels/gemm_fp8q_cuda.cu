/* gemm_fp8q_cuda.cu — gemm_fp8q_cuda (gemm.h): y[M][N] (BF16) = x · wᵀ for an
 * fp8-block weight with the BF16 activation x quantized INSIDE the GEMM, so that
 * linear_forward's separate activation pass (3·M·K bytes of memory traffic: the
 * gap between linear_forward and a bare cuBLASLt call at M ≥ 512, issue #5) goes
 * away. Hopper (sm_90a) only.
 *
 *   Tile      a CTA owns 128 rows of x × 128 weight rows (one 128×128 weight scale
 *             block a K step) and walks K in 128-wide blocks (one activation scale
 *             block). Two warpgroups (rows 0–63, 64–127), 256 threads, one CTA an
 *             SM (a separate producer warp would leave too few registers: 9 warps
 *             put 3 on one of the SM's four 16K-register partitions).
 *   Loads     thread 0 issues the Tensor Memory Accelerator: x's 128 × 128 BF16
 *             block as two 64-wide boxes, the weight's 128 × 128 E4M3 block as one,
 *             all in the 128-byte swizzle, into a ring of FQ_NST stages (the first
 *             FQ_NST at the start, then stage kb again for block kb + FQ_NST once
 *             both warpgroups are done with it); an mbarrier a stage counts the
 *             bytes in (full) and the 8 warps out (empty). Rows, columns and K past
 *             the tensor are the TMA's zero fill.
 *   Quantize  each consumer thread reads its two rows' 32 + 32 BF16 of the block
 *             straight from the swizzled stage, takes the integer amax of the
 *             |bf16| bits (the 4 lanes of a row by shuffle: 128 values), the scale
 *             fmt_fp8_block_scale and the E4M3 codes of RN(x / s) by the quantizer's
 *             own device functions (quant_cuda_dev.cuh) — the bytes and scales
 *             quant_fp8_block_act_cuda writes for linear_forward, bit for bit —
 *             and keeps the codes in registers as wgmma's A fragments.
 *   MMA       4 × wgmma m64n128k32 E4M3 (A from registers, the weight block from
 *             shared memory) from zero, then acc = fmaf(part, sx ·_rn sw, acc) —
 *             the order of the small-M fp8 kernels (gs_fp8_scale_acc), which match
 *             cuBLASLt's block-scaled GEMM on 99.99–100 % of outputs. A warpgroup
 *             quantizes block kb + 1 only after block kb's MMAs are done: a wgmma
 *             in flight reads its A registers asynchronously and nothing stops the
 *             register allocator from reusing them (an overlapped schedule gave
 *             wrong, run-to-run different sums once the quantizer code changed,
 *             H100 2026-12-06). The two warpgroups still overlap each other.
 *   Store     bf16_rne(acc) to y, rows and columns inside the tensor.
 *
 * Status (issue #5, EXPERIMENTAL, linear_forward uses it only under
 * RLRUN_LINEAR_FP8Q=1): the overlapped form passed gemm_fp8q_gpu_test 58/0, 100 % of
 * the outputs bitwise equal to linear_forward's, but ran at 12–26 % of the bare
 * cuBLASLt GEMM: the inlined division slow paths made 37,866 SASS lines and the
 * warps waited on instruction fetch (ncu: 6.6 of 10.4 cycles an instruction). With
 * the quantizer code compacted as it is now, the overlapped form ran at 24–44 % of
 * bare but with the wrong sums above, so its speed is an upper bound for this
 * schedule's, not a measurement of it. What is left, measured (H100, M = 8192,
 * N = 1024, K = 2048): the loads alone, no quantization and no MMA, take 58.6 µs against the bare GEMM's
 * 33 µs — each CTA reads its BF16 x tile once per 128-column tile, 2 bytes an
 * element, so the L2 → SM traffic is ~4× cuBLASLt's: sharing x across a cluster of
 * CTAs (TMA multicast) and quantizing it once per cluster is the next step. This
 * non-overlapped schedule has not run on a GPU yet (device time ran out).
 *
 * Rows are read in a permuted order so that the 8-byte shared loads of a warp
 * never conflict: fragment row g of a warp is tile row 2g (g < 4) or 2(g − 4) + 1,
 * whose 16-byte chunks the swizzle spreads over distinct banks; the output row
 * follows the same map. Non-finite activations poison their block (NaN scale,
 * zero codes) as the quantizer does: that row of y is NaN. The E4M3 conversion is
 * the hardware's (quant_cuda_soft_cvt's software codec gives the same bytes). */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "kernels/common.h"
#include "kernels/device.h"
}
#include "kernels/formats.h"
#include "kernels/gemm.h"
#include "kernels/ptx_util.cuh"
#include "kernels/quant_cuda_dev.cuh"

namespace {

constexpr int FQ_BM = 128, FQ_BN = 128, FQ_BK = 128;
constexpr int FQ_NST = 4;                            /* ring stages */
constexpr int FQ_A_BYTES = FQ_BM * FQ_BK * 2;        /* x block, BF16: two 64-wide boxes */
constexpr int FQ_B_BYTES = FQ_BN * FQ_BK;            /* weight block, E4M3 */
constexpr int FQ_STAGE = FQ_A_BYTES + FQ_B_BYTES;    /* 48 KB */
#define FQ_BOX_A (FQ_A_BYTES / 2)                    /* one x box: 128 rows × 128 B */
constexpr int FQ_THREADS = 256;                      /* 2 warpgroups; thread 0 also issues the loads */
constexpr int FQ_SMEM = FQ_NST * FQ_STAGE + 1024 + 2 * FQ_NST * 8;

struct fq_args {
  CUtensorMap tx; /* x [M][K] BF16, box 64 × 128 */
  CUtensorMap tw; /* w [N][K] E4M3, box 128 × 128 */
  const float *sw;
  int64_t sld;
  uint16_t *y;
  int M, N, K, kblocks, ntn;
  int ue8m0, pair_store;
};

/* The device helpers exist where the kernel has a body (sm_90a). */
#if !defined(__CUDA_ARCH__) || RLRUN_HAVE_WGMMA
/* The fragment-row → tile-row map (see top): conflict-free 8-byte loads. */
__device__ __forceinline__ int fq_perm(int g) { return g < 4 ? 2 * g : 2 * g - 7; }

/* d (64 × 128 FP32, 64 registers a thread) = (acc ? d : 0) + A · B, A (64 × 32
 * E4M3) from registers (a[0..3]: the m16n8k32 A fragment of this warp's 16 rows),
 * B (32 × 128) from shared memory by descriptor db. */
__device__ __forceinline__ void wgmma_rs_e4m3_n128(float *d, const uint32_t *a, uint64_t db, int acc) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,"
      "%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,"
      "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(acc));
#else
  (void)d, (void)a, (void)db, (void)acc;
#endif
}

/* Keep the compiler from moving accumulator reads or writes across an in-flight wgmma. */
__device__ __forceinline__ void fq_fence_acc(float *d) {
#pragma unroll
  for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}

/* … and the A fragments a wgmma in flight still reads from registers. */
__device__ __forceinline__ void fq_fence_frag(uint32_t *f) {
#pragma unroll
  for (int i = 0; i < 16; i++) asm volatile("" : "+r"(f[i])::"memory");
}

/* 2-D tensor-map load of the box at (c0 innermost, c1) into dst, completing on bar. */
__device__ __forceinline__ void fq_tma2d(void *dst, const CUtensorMap *map, int c0, int c1, uint64_t *bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
          "r"(smem_u32(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(smem_u32(bar))
      : "memory");
}

__device__ __forceinline__ void fq_arrive(uint64_t *bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}

/* 4 packed BF16 → 4 E4M3 codes of RN(x / s), r = RN(1/s), s with qd_mdiv_ok (the
 * quantizer's qd_enc_fp8_div arithmetic; the hardware cvt, which the software codec
 * equals bit for bit). */
__device__ __forceinline__ uint32_t fq_enc4(uint2 v, float s, float r) {
  const float x0 = __uint_as_float(v.x << 16), x1 = __uint_as_float(v.x & 0xffff0000u);
  const float x2 = __uint_as_float(v.y << 16), x3 = __uint_as_float(v.y & 0xffff0000u);
  return qd_e4m3x2(qd_mdiv(x0, s, r), qd_mdiv(x1, s, r), 0) | (qd_e4m3x2(qd_mdiv(x2, s, r), qd_mdiv(x3, s, r), 0) << 16);
}

/* The rare scales outside qd_mdiv_ok's range: plain IEEE division, kept out of line
 * (inlined, its 32 divisions' slow paths multiplied the loop's code several times
 * over and the warps stalled on instruction fetch). */
__device__ __noinline__ uint32_t fq_enc4_div(uint2 v, float s) {
  const float x0 = __uint_as_float(v.x << 16), x1 = __uint_as_float(v.x & 0xffff0000u);
  const float x2 = __uint_as_float(v.y << 16), x3 = __uint_as_float(v.y & 0xffff0000u);
  return qd_e4m3x2(__fdiv_rn(x0, s), __fdiv_rn(x1, s), 0) | (qd_e4m3x2(__fdiv_rn(x2, s), __fdiv_rn(x3, s), 0) << 16);
}

/* Quantize one row's part of a stage (32 values of this lane: 8 pieces of 4) into
 * 8 fragment words; the row's scale (over the 4 lanes of the row) into *sx. */
__device__ __forceinline__ void fq_quant_row(const uint2 (&v)[8], uint32_t (&q)[8], float *sx, int ue8m0) {
  const uint32_t k = 0x7fff7fffu;
  uint32_t m = 0;
#pragma unroll
  for (int i = 0; i < 8; i++) m = __vmaxu2(m, __vmaxu2(v[i].x & k, v[i].y & k));
  m = qd_fold16(m);
  m = max(m, __shfl_xor_sync(QD_FULL, m, 1));
  m = max(m, __shfl_xor_sync(QD_FULL, m, 2));
  const bool bad = m >= 0x7f80u;
  const float s = bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(qd_bits_to_amax(m), ue8m0);
  *sx = s;
  if (bad) {
#pragma unroll
    for (int i = 0; i < 8; i++) q[i] = 0;
  } else if (qd_mdiv_ok(s)) {
    const float r = __frcp_rn(s);
#pragma unroll
    for (int i = 0; i < 8; i++) q[i] = fq_enc4(v[i], s, r);
  } else {
#pragma unroll
    for (int i = 0; i < 8; i++) q[i] = fq_enc4_div(v[i], s);
  }
}

/* The thread's 8 BF16 pieces of tile row r of stage A (two boxes of 64 K, rows of
 * 128 B, 16-byte chunk c at c ^ (r & 7)): piece 2j + h = K 32j + 16h + 4t … + 3. */
__device__ __forceinline__ void fq_load_row(const uint8_t *A, int r, int t, uint2 (&v)[8]) {
#pragma unroll
  for (int j = 0; j < 4; j++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int c = (j & 1) * 4 + 2 * h + (t >> 1); /* chunk of the 128-byte row */
      const uint8_t *p = A + (j >> 1) * FQ_BOX_A + r * 128 + ((c ^ (r & 7)) << 4) + (t & 1) * 8;
      v[2 * j + h] = *reinterpret_cast<const uint2 *>(p);
    }
}

/* Zero the pieces at K ≥ kv of a short last block (the TMA's fill of a box wholly
 * past K is not relied on). */
__device__ __forceinline__ void fq_mask_row(uint2 (&v)[8], int kv, int t) {
#pragma unroll
  for (int j = 0; j < 4; j++)
#pragma unroll
    for (int h = 0; h < 2; h++)
      if (32 * j + 16 * h + 4 * t >= kv) v[2 * j + h] = make_uint2(0, 0);
}

#endif

__global__ void __launch_bounds__(FQ_THREADS, 1) gemm_fp8q_kernel(const __grid_constant__ fq_args a) {
#if RLRUN_HAVE_WGMMA
  extern __shared__ uint8_t fq_smem_raw[];
  uint8_t *sm = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(fq_smem_raw) + 1023) & ~(uintptr_t)1023);
  uint64_t *full = reinterpret_cast<uint64_t *>(sm + FQ_NST * FQ_STAGE), *empty = full + FQ_NST;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int mt = (int)(blockIdx.x / a.ntn), nt = (int)(blockIdx.x % a.ntn);
  const int m0 = mt * FQ_BM, n0 = nt * FQ_BN, KB = a.kblocks;
  if (tid == 0) {
    for (int s = 0; s < FQ_NST; s++) mbar_init(&full[s], 1), mbar_init(&empty[s], 8);
    fence_mbar_init();
  }
  __syncthreads();
  /* thread 0 issues the Tensor Memory Accelerator: block kb's x and weight tiles into stage kb % FQ_NST */
  auto load = [&](int kb) {
    const int s = kb % FQ_NST;
    uint8_t *st = sm + s * FQ_STAGE;
    mbar_arrive_tx(&full[s], FQ_STAGE);
    fq_tma2d(st, &a.tx, kb * FQ_BK, m0, &full[s]);
    fq_tma2d(st + FQ_BOX_A, &a.tx, kb * FQ_BK + 64, m0, &full[s]);
    fq_tma2d(st + FQ_A_BYTES, &a.tw, kb * FQ_BK, n0, &full[s]);
  };
  if (tid == 0) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(&a.tx) : "memory");
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(&a.tw) : "memory");
    for (int kb = 0; kb < FQ_NST && kb < KB; kb++) load(kb);
  }
  /* a consumer: warpgroup c = rows 64c …, warp w of it = rows 16w …, lane (g, t) */
  const int c = warp >> 2, w = warp & 3, g = lane >> 2, t = lane & 3; /* warpgroup c = rows 64c … */
  const int r0 = 64 * c + 16 * w + fq_perm(g), r1 = r0 + 8; /* tile rows of fragment rows g, g + 8 */
  const float *swp = a.sw + (int64_t)nt * a.sld;
  float acc[64], part[64];
#pragma unroll
  for (int i = 0; i < 64; i++) acc[i] = 0.0f, part[i] = 0.0f;
  uint32_t fa[16]; /* fragments of the block in flight: [j][0..3] = a0 … a3 of K step j */
  float sx0 = 0.0f, sx1 = 0.0f;

  /* quantize block kb (its stage full) into fragments f, scales *s0, *s1 */
  auto quant = [&](int kb, uint32_t (&f)[16], float *s0, float *s1) {
    const int s = kb % FQ_NST;
    mbar_wait(&full[s], (uint32_t)((kb / FQ_NST) & 1));
    const uint8_t *A = sm + s * FQ_STAGE;
    uint2 v[8];
    uint32_t q[8];
    const int kv = a.K - kb * FQ_BK; /* K of this block inside x (< 128: the last block) */
    fq_load_row(A, r0, t, v);
    if (kv < FQ_BK) fq_mask_row(v, kv, t);
    fq_quant_row(v, q, s0, a.ue8m0);
#pragma unroll
    for (int j = 0; j < 4; j++) f[4 * j + 0] = q[2 * j], f[4 * j + 2] = q[2 * j + 1];
    fq_load_row(A, r1, t, v);
    if (kv < FQ_BK) fq_mask_row(v, kv, t);
    fq_quant_row(v, q, s1, a.ue8m0);
#pragma unroll
    for (int j = 0; j < 4; j++) f[4 * j + 1] = q[2 * j], f[4 * j + 3] = q[2 * j + 1];
  };
  auto issue = [&](int kb, const uint32_t (&f)[16]) {
    const uint32_t b = smem_u32(sm + (kb % FQ_NST) * FQ_STAGE + FQ_A_BYTES);
    wgmma_fence();
#pragma unroll
    for (int j = 0; j < 4; j++) wgmma_rs_e4m3_n128(part, f + 4 * j, wgmma_desc_sw128(b + 32 * j), j);
    wgmma_commit();
    fq_fence_acc(part);
    fq_fence_frag(const_cast<uint32_t *>(f));
  };

  /* block kb's MMAs done: release its stage, fold its part into acc */
  auto fold = [&](int kb, float x0, float x1) {
    const float sw = __ldg(swp + kb);
    wgmma_wait<0>();
    fq_fence_acc(part);
    fq_fence_frag(fa);
    if (lane == 0) fq_arrive(&empty[kb % FQ_NST]);
    if (tid == 0 && kb + FQ_NST < KB) { /* refill the stage once both warpgroups are done with it */
      mbar_wait(&empty[kb % FQ_NST], (uint32_t)((kb / FQ_NST) & 1));
      load(kb + FQ_NST);
    }
    __syncwarp(); /* warp 0 whole again before its next wgmma (.aligned) */
    const float s0 = __fmul_rn(x0, sw), s1 = __fmul_rn(x1, sw);
#pragma unroll
    for (int j = 0; j < 16; j++) {
      acc[4 * j + 0] = __fmaf_rn(part[4 * j + 0], s0, acc[4 * j + 0]);
      acc[4 * j + 1] = __fmaf_rn(part[4 * j + 1], s0, acc[4 * j + 1]);
      acc[4 * j + 2] = __fmaf_rn(part[4 * j + 2], s1, acc[4 * j + 2]);
      acc[4 * j + 3] = __fmaf_rn(part[4 * j + 3], s1, acc[4 * j + 3]);
    }
  };
  if (KB > 0) {
    quant(0, fa, &sx0, &sx1);
    issue(0, fa);
    for (int kb = 0; kb + 1 < KB; kb++) {
      uint32_t fn[16];
      float nx0, nx1;
      /* block kb's MMAs done before the next block's fragments are written: the
       * registers an in-flight wgmma reads are not protected against reuse (overlapping
       * the two measured no faster and gave wrong sums with some register schedules) */
      fold(kb, sx0, sx1);
      quant(kb + 1, fn, &nx0, &nx1);
#pragma unroll
      for (int i = 0; i < 16; i++) fa[i] = fn[i];
      sx0 = nx0, sx1 = nx1;
      issue(kb + 1, fa);
    }
    fold(KB - 1, sx0, sx1);
  }
  /* store: fragment (row g / g + 8, column 8j + 2t + h) → y */
  const int64_t row0 = (int64_t)m0 + r0, row1 = (int64_t)m0 + r1;
#pragma unroll
  for (int j = 0; j < 16; j++) {
    const int n = n0 + 8 * j + 2 * t;
#pragma unroll
    for (int v = 0; v < 2; v++) {
      const int64_t row = v ? row1 : row0;
      if (row >= a.M) continue;
      const uint16_t lo = fmt_bf16_from_f32(acc[4 * j + 2 * v]), hi = fmt_bf16_from_f32(acc[4 * j + 2 * v + 1]);
      uint16_t *dst = a.y + row * a.N + n;
      if (a.pair_store && n + 1 < a.N) *reinterpret_cast<uint32_t *>(dst) = (uint32_t)lo | ((uint32_t)hi << 16);
      else {
        if (n < a.N) dst[0] = lo;
        if (n + 1 < a.N) dst[1] = hi;
      }
    }
  }
#else
  __trap();
#endif
}

/* ---------------------------------------------------------------- host side */

PFN_cuTensorMapEncodeTiled_v12000 fq_encode_fn(rl_err *e) {
  static PFN_cuTensorMapEncodeTiled_v12000 fn;
  static int asked;
  if (!__atomic_load_n(&asked, __ATOMIC_ACQUIRE)) {
    void *p = NULL;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    cudaError_t st = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
    if (st != cudaSuccess || q != cudaDriverEntryPointSuccess) cudaGetLastError(), p = NULL;
    fn = (PFN_cuTensorMapEncodeTiled_v12000)p;
    __atomic_store_n(&asked, 1, __ATOMIC_RELEASE);
  }
  if (!fn) rl_errf(e, RL_EXIT_HARDWARE, "gemm_fp8q: the driver has no cuTensorMapEncodeTiled; use linear_forward");
  return fn;
}

int fq_map(PFN_cuTensorMapEncodeTiled_v12000 enc, CUtensorMap *m, CUtensorMapDataType dt, const void *base,
           int64_t inner, int64_t outer, int64_t row_bytes, int box_inner, const char *what, rl_err *e) {
  const cuuint64_t dims[2] = {(cuuint64_t)inner, (cuuint64_t)outer}, strides[1] = {(cuuint64_t)row_bytes};
  const cuuint32_t box[2] = {(cuuint32_t)box_inner, 128}, es[2] = {1, 1};
  CUresult r = enc(m, dt, 2, const_cast<void *>(base), dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE,
                   CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return rl_errf(e, RL_EXIT_FAIL, "gemm_fp8q: cuTensorMapEncodeTiled of %s failed (CUresult %d)", what, (int)r);
  return 0;
}

int fq_attr[DEVICE_MAX_GPUS]; /* the shared-memory limit raised on this device */

} /* namespace */

/* The devices that run the sm_90a build's wgmma: the small-M fp8 kernel's test (compute capability 9.0). */
extern "C" int gemm_fp8q_supported(void) { return gemm_small_fp8_group_supported(); }

extern "C" int gemm_fp8q_cuda(uint16_t *y, const uint16_t *x, const qtensor *w, int64_t M, const quant_policy *pol,
                              void *stream, rl_err *e) {
  int rc = gemm_fp8q_check(y, x, w, M, e);
  if (rc) return rc;
  const int64_t N = w->rows, K = w->cols;
  if (M == 0 || N == 0) return 0;
  cudaStream_t s = stream ? (cudaStream_t)stream : cudaStreamPerThread;
  if (K == 0) { /* an empty sum: zeros (+0 in BF16) */
    cudaError_t st = cudaMemsetAsync(y, 0, (size_t)(M * N) * 2, s);
    if (st != cudaSuccess) cudaGetLastError();
    return st == cudaSuccess ? 0 : rl_errf(e, RL_EXIT_FAIL, "gemm_fp8q: cudaMemsetAsync: %s", cudaGetErrorString(st));
  }
  int dev = 0;
  if (!gemm_fp8q_supported() || cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return rl_errf(e, RL_EXIT_HARDWARE, "gemm_fp8q: needs an sm_90 GPU (Hopper); use linear_forward");
  }
  PFN_cuTensorMapEncodeTiled_v12000 enc = fq_encode_fn(e);
  if (!enc) return RL_EXIT_HARDWARE;
  fq_args a;
  memset(&a, 0, sizeof a);
  if (fq_map(enc, &a.tx, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, x, K, M, K * 2, 64, "x", e) ||
      fq_map(enc, &a.tw, CU_TENSOR_MAP_DATA_TYPE_UINT8, w->data, K, N, K, 128, "the weight", e))
    return RL_EXIT_FAIL;
  const int64_t kb = (K + FQ_BK - 1) / FQ_BK;
  a.sw = (const float *)w->scales;
  a.sld = w->layout == QLAYOUT_HOPPER_WEIGHT ? (kb + 3) / 4 * 4 : kb;
  a.y = y;
  a.M = (int)M, a.N = (int)N, a.K = (int)K, a.kblocks = (int)kb;
  a.ntn = (int)((N + FQ_BN - 1) / FQ_BN);
  a.ue8m0 = pol ? pol->ue8m0 : 0;
  a.pair_store = N % 2 == 0 && (uintptr_t)y % 4 == 0;
  const int64_t grid = (int64_t)a.ntn * ((M + FQ_BM - 1) / FQ_BM);
  if (grid > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "gemm_fp8q: M=%lld × N=%lld needs %lld tiles of 128 × 128, more than one launch "
                   "takes; split the product or use linear_forward", (long long)M, (long long)N, (long long)grid);
  if (!fq_attr[dev]) {
    if (cudaFuncSetAttribute(gemm_fp8q_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, FQ_SMEM) != cudaSuccess) {
      cudaError_t st = cudaGetLastError();
      return rl_errf(e, RL_EXIT_FAIL, "gemm_fp8q: cudaFuncSetAttribute (shared memory): %s", cudaGetErrorString(st));
    }
    fq_attr[dev] = 1;
  }
  gemm_fp8q_kernel<<<(unsigned)grid, FQ_THREADS, FQ_SMEM, s>>>(a);
  cudaError_t st = cudaGetLastError();
  if (st != cudaSuccess) return rl_errf(e, RL_EXIT_FAIL, "gemm_fp8q: launch failed: %s", cudaGetErrorString(st));
  return 0;
}
