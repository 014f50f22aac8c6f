/* gemm_fp8q_cuda.cu — gemm_fp8q_cuda (gemm.h): y[M][N] (BF16) = x · wᵀ for an
 * fp8-block weight with the BF16 activation x quantized INSIDE the GEMM, so that
 * linear_forward's separate activation pass (3·M·K bytes of memory traffic: the
 * gap between linear_forward and a bare cuBLASLt call at M ≥ 512, issue #5) goes
 * away. Hopper (sm_90a) only.
 *
 *   Work      a CTA computes a 128 × 256 tile (two 128×128 weight scale blocks a K
 *             step), walking K in 128-wide blocks (one activation scale block). CTAs
 *             run in clusters of CL (RLRUN_FP8Q_CLUSTER = 1, 2 or 4; by default 4 when
 *             the tiles fit one wave of the SMs, else 2: gemm_fp8q_cluster_pick) on
 *             neighbouring column tiles of the same 128 rows: each CTA quantizes
 *             128 / CL of the rows and writes their codes and scales into every CTA
 *             of the cluster (st.async), so a row block is quantized once a cluster
 *             instead of once a column tile. Bit-neutral (gemm_fp8q_gpu_test).
 *   Roles     512 threads, four warpgroups, registers moved by setmaxnreg:
 *             0 the producer (24 registers; thread 0 issues x's loads, thread 32
 *               the weight's),
 *             1 the quantizer (72), 2 and 3 the MMAs of rows 0–63 and 64–127 (208).
 *   Loads     the Tensor Memory Accelerator, 128-byte swizzle. x's (128 / CL) × 128
 *             BF16 block, as two 64-wide boxes, into an x ring (NX stages, freed by
 *             the quantizer once read); the weight's 256 × 128 E4M3 block, as two
 *             128-row boxes, into a ring of FQ_NST stages of 48 KB that also hold
 *             the tile's codes (freed by the MMA warps of every CTA of the cluster:
 *             the weight's producer and the quantizer both wait for that release, so
 *             the codes are written everywhere only when no CTA still reads them).
 *             Rows and columns past the tensor are the TMA's zero fill; K past the
 *             tensor is masked.
 *   Quantize  thread (row r, K part h; 2 threads a row, 4 for CL = 4) holds its 64
 *             (32) BF16 in registers, takes the integer amax of the |bf16| bits (the
 *             row's parts meet by shuffles), the scale fmt_fp8_block_scale and the
 *             E4M3 codes of RN(x / s) by the quantizer's own device functions
 *             (quant_cuda_dev.cuh) — the bytes and scales quant_fp8_block_act_cuda
 *             writes for linear_forward, bit for bit — and stores the codes in the
 *             swizzle wgmma reads (its A operand), the scale beside them; into the
 *             peers by st.async, which completes the bytes on their qfull barrier.
 *   MMA       a warpgroup's 64 rows × 256 columns as two 128-column halves: 4 ×
 *             wgmma m64n128k32 E4M3, both operands from shared memory, from zero,
 *             then acc = fmaf(part, sx ·_rn sw, acc) — the order of the small-M fp8
 *             kernels (gs_fp8_scale_acc), which match cuBLASLt's block-scaled GEMM
 *             on 99.99–100 % of outputs.
 *   Store     bf16_rne(acc) to y, rows and columns inside the tensor.
 *
 * Status (issue #5, EXPERIMENTAL, linear_forward uses it only under
 * RLRUN_LINEAR_FP8Q=1). H100, % of the bare cuBLASLt GEMM at 8192×1024×2048,
 * 512×3072×1024, 8192³: the 64 × 256 form of session 18 (thread 0 of the quantizer
 * also loading) 25 / 37 / 19; this form with single CTAs 37 / 31 / 34, with pairs
 * 47 / 37 / 49, with clusters of 4 at 512 rows 38. What each step bought, and
 * what each part costs (FQ_ABL below: the loads, barriers and stores alone reach
 * 88 % of bare at 8192³, the quantizer's arithmetic takes that to 69 %, the MMAs
 * to 49 % — the parts add instead of overlapping), is in docs/gpu-results.md.
 * Tried and dropped (session 20): the scaling overlapped with the next 64-column
 * quarter's wgmma (slower), 2 × 2 clusters sharing the weight by TMA multicast
 * (slower).
 *
 * Non-finite activations poison their block (NaN scale, zero codes) as the
 * quantizer does: that row of y is NaN. The E4M3 conversion is the hardware's
 * (quant_cuda_soft_cvt's software codec gives the same bytes). */
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

/* Measurement builds only (never the default): FQ_ABL = 1 the quantizer without its
 * arithmetic, 2 the MMA warps without wgmma, 3 the wgmma accumulating without the
 * per-block scaling, 4 both 1 and 2 (the loads, barriers and stores alone) — wrong
 * sums, to see what each part costs (docs/gpu-results.md, session 20). */
#ifndef FQ_ABL
#define FQ_ABL 0
#endif

namespace {

constexpr int FQ_BM = 128, FQ_BN = 256, FQ_BK = 128;
constexpr int FQ_NST = 3;                              /* weight + codes ring stages (free after the MMAs) */
constexpr int FQ_W_BYTES = FQ_BN * FQ_BK;              /* weight block, E4M3: two boxes of 128 rows */
#define FQ_WBOX (FQ_W_BYTES / 2)
constexpr int FQ_C_BYTES = FQ_BM * FQ_BK;              /* the tile's E4M3 codes, wgmma's A */
constexpr int FQ_STAGE = FQ_W_BYTES + FQ_C_BYTES;      /* 48 KB */
constexpr int FQ_THREADS = 512;                        /* producer, quantizer and 2 MMA warpgroups */
constexpr int FQ_REG_P = 24, FQ_REG_Q = 72, FQ_REG_MMA = 208; /* setmaxnreg; the MMA code needs 208 */
static_assert(128 * FQ_REG_P + 128 * FQ_REG_Q + 256 * FQ_REG_MMA <= 65536, "the register file");
/* A cluster of CL CTAs covers CL neighbouring column tiles of the same 128 rows: each
 * CTA loads and quantizes FQ_BM / CL of the rows and writes their codes and scales
 * into every CTA of the cluster. */
template <int CL> struct fq_geo {
  enum : int {
    QR = FQ_BM / CL,                                   /* rows this CTA quantizes */
    NX = CL == 1 ? 2 : CL == 2 ? 3 : 4,                /* x ring stages (free once quantized) */
    TPR = CL == 4 ? 4 : 2,                             /* quantizer threads a row */
    RPW = 32 / TPR, KS = FQ_BK / TPR,                  /* rows a warp, K a thread */
    ROUNDS = QR * TPR / 128,                           /* rows a quantizer thread takes in turn */
    XBOX = QR * 128,                                   /* one 64-wide K half of the x block, BF16 */
    XST = 2 * XBOX,
    SMEM = 1024 + NX * XST + FQ_NST * FQ_STAGE + FQ_NST * FQ_BM * 4 + (2 * NX + 3 * FQ_NST) * 8,
    RBYTES = (CL - 1) * QR * (128 + 4)                 /* codes and scales from the peers, a block */
  };
  static_assert(XST % 1024 == 0 && FQ_STAGE % 1024 == 0, "stages keep the 128-byte swizzle's alignment");
  static_assert(SMEM <= 232448, "the rings fit an sm_90 CTA's shared memory");
  static_assert(ROUNDS >= 1 && QR * TPR % 128 == 0, "the quantizer warpgroup covers whole rounds of rows");
};

struct fq_args {
  CUtensorMap tx; /* x [M][K] BF16, box 64 × 64 */
  CUtensorMap tw; /* w [N][K] E4M3, box 128 × 128 */
  const float *sw;
  int64_t sld;
  uint16_t *y;
  int M, N, K, kblocks, ntn;
  int ue8m0, pair_store;
};

/* The device helpers exist where the kernel has a body (sm_90a). */
#if !defined(__CUDA_ARCH__) || RLRUN_HAVE_WGMMA
/* d (64 × 128 FP32, 64 registers a thread) = (acc ? d : 0) + A · B, A (64 × 32
 * E4M3) and B (32 × 128 E4M3) from shared memory by descriptors. */
__device__ __forceinline__ void wgmma_ss_e4m3_n128(float *d, uint64_t da, uint64_t db, int acc) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,"
      "%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,"
      "%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(acc));
#else
  (void)d, (void)da, (void)db, (void)acc;
#endif
}

/* Keep the compiler from moving accumulator reads or writes across an in-flight wgmma. */
__device__ __forceinline__ void fq_fence_acc(float *d) {
#pragma unroll
  for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}

/* 2-D tensor-map load of the box at (c0 innermost, c1) into dst, completing on bar. */
__device__ __forceinline__ void fq_tma2d(void *dst, const CUtensorMap *map, int c0, int c1, uint64_t *bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
          "r"(smem_u32(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(smem_u32(bar))
      : "memory");
}

/* 16 bytes into another CTA's shared memory (shared::cluster address a), completing 16
 * bytes of the transaction count of that CTA's mbarrier at cluster address bar. */
__device__ __forceinline__ void fq_st_async16(uint32_t a, uint4 v, uint32_t bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];\n" ::"r"(a),
               "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(bar)
               : "memory");
}
__device__ __forceinline__ void fq_st_async4(uint32_t a, float v, uint32_t bar) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];\n" ::"r"(a),
               "r"(__float_as_uint(v)), "r"(bar)
               : "memory");
}
/* An arrival on the mbarrier at shared::cluster address a (another CTA's). Relaxed: it
 * only says this CTA's wgmma reads of a stage are over, which wgmma.wait_group already
 * ordered; release.cluster compiled to a memory barrier that cost ~22 % of the MMA
 * warps' stall samples (ncu, H100). */
__device__ __forceinline__ void fq_arrive_remote(uint32_t a) {
  asm volatile("mbarrier.arrive.relaxed.cluster.shared::cluster.b64 _, [%0];\n" ::"r"(a) : "memory");
}
__device__ __forceinline__ void fq_arrive(uint64_t *bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
/* The rare scales outside qd_mdiv_ok's range: plain IEEE division, kept out of line
 * (inlined, the divisions' slow paths multiply the loop's code and the warps stall
 * on instruction fetch). */
__device__ __noinline__ uint4 fq_enc16_div(uint4 a, uint4 b, float s) { return qd_enc_fp8_fdiv(a, b, s, 0); }

#endif

#if !defined(__CUDA_ARCH__) || RLRUN_HAVE_WGMMA
__device__ __forceinline__ void fq_setmaxnreg_p() {
#if RLRUN_HAVE_WGMMA
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(FQ_REG_P) : "memory");
#endif
}
__device__ __forceinline__ void fq_setmaxnreg_q() {
#if RLRUN_HAVE_WGMMA
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(FQ_REG_Q) : "memory");
#endif
}
__device__ __forceinline__ void fq_setmaxnreg_mma() {
#if RLRUN_HAVE_WGMMA
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(FQ_REG_MMA) : "memory");
#endif
}
#endif

/* One CTA a 128 × 256 tile; a cluster of CL CTAs shares the quantization of its rows.
 * Rings: x (NX stages, freed by the quantizer once it has read a block) and weight +
 * codes (FQ_NST stages, freed by the MMA warps of every CTA of the cluster). */
template <int CL>
__global__ void __launch_bounds__(FQ_THREADS, 1) gemm_fp8q_kernel(const __grid_constant__ fq_args a) {
#if RLRUN_HAVE_WGMMA
  using G = fq_geo<CL>;
  extern __shared__ uint8_t fq_smem_raw[];
  uint8_t *sm = fq_smem_raw + ((1024u - (smem_u32(fq_smem_raw) & 1023u)) & 1023u);
  uint8_t *xr = sm, *wr = sm + G::NX * G::XST;
  float *sxs = reinterpret_cast<float *>(wr + FQ_NST * FQ_STAGE); /* [stage][128] */
  uint64_t *xfull = reinterpret_cast<uint64_t *>(sxs + FQ_NST * FQ_BM), *xempty = xfull + G::NX;
  uint64_t *wfull = xempty + G::NX, *qfull = wfull + FQ_NST, *empty = qfull + FQ_NST;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, KB = a.kblocks;
  const int rank = CL == 1 ? 0 : (int)(blockIdx.x % CL), cid = (int)(blockIdx.x / CL);
  const int ngroups = (a.ntn + CL - 1) / CL;
  const int m0 = (cid / ngroups) * FQ_BM, n0 = ((cid % ngroups) * CL + rank) * FQ_BN;
  if (tid == 0) {
    for (int s = 0; s < G::NX; s++) mbar_init(&xfull[s], 1), mbar_init(&xempty[s], 4);
    for (int s = 0; s < FQ_NST; s++) mbar_init(&wfull[s], 1), mbar_init(&qfull[s], 128), mbar_init(&empty[s], 8 * CL);
    fence_mbar_init();
  }
  if (CL > 1) cluster_sync(); /* the peers' barriers exist before anything reaches them */
  else __syncthreads();

  if (warp < 4) {
    /* ---------------- the producer warpgroup: thread 0 issues x's loads and thread 32 the
     * weight's, each as soon as its stage is free (two streams: an x block need not wait
     * for the weight ring, nor the weight for the x ring) */
    fq_setmaxnreg_p();
    if (tid == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(&a.tx) : "memory");
      const int xrow = m0 + rank * G::QR;
      for (int kb = 0; kb < KB; kb++) {
        const int xs = kb % G::NX;
        if (kb >= G::NX) mbar_wait(&xempty[xs], (uint32_t)((kb / G::NX - 1) & 1));
        mbar_arrive_tx(&xfull[xs], (uint32_t)G::XST);
        fq_tma2d(xr + xs * G::XST, &a.tx, kb * FQ_BK, xrow, &xfull[xs]);
        fq_tma2d(xr + xs * G::XST + G::XBOX, &a.tx, kb * FQ_BK + 64, xrow, &xfull[xs]);
      }
    } else if (tid == 32) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(&a.tw) : "memory");
      for (int kb = 0; kb < KB; kb++) {
        const int s = kb % FQ_NST;
        /* the stage is free in every CTA of the cluster (the quantizers write into all) */
        if (kb >= FQ_NST) mbar_wait(&empty[s], (uint32_t)((kb / FQ_NST - 1) & 1));
        mbar_arrive_tx(&wfull[s], FQ_W_BYTES);
        fq_tma2d(wr + s * FQ_STAGE, &a.tw, kb * FQ_BK, n0, &wfull[s]);
        fq_tma2d(wr + s * FQ_STAGE + FQ_WBOX, &a.tw, kb * FQ_BK, n0 + 128, &wfull[s]);
      }
    }
  } else if (warp < 8) {
    /* ---------------- the quantizer warpgroup: thread (row r of this CTA's QR rows, K part
     * h) holds its KS BF16 in registers: TPR threads a row, the row's parts in one warp
     * (lanes RPW apart), meeting by shuffles; rows in ROUNDS turns */
    fq_setmaxnreg_q();
    const int qt = tid - 128, qwarp = warp - 4, h = lane / G::RPW; /* h: the thread's K part */
    uint32_t peer[CL > 1 ? CL - 1 : 1]; /* the peers' shared::cluster address offsets */
#pragma unroll
    for (int p = 1; p < CL; p++) peer[p - 1] = cluster_map(smem_u32(sm), (rank + p) % CL) - smem_u32(sm);
    (void)peer;
    constexpr int NV = G::KS / 8, NC = G::KS / 16; /* 8-value loads, 16-code chunks a thread */
    const int box = h * G::KS / 64, c0 = h * G::KS % 64 / 8;
    for (int kb = 0; kb < KB; kb++) {
      const int xs = kb % G::NX, s = kb % FQ_NST;
      mbar_wait(&xfull[xs], (uint32_t)((kb / G::NX) & 1));
      /* the codes' slots: free in every CTA of the cluster once the stage's last use is
       * over everywhere (the barrier the weight's producer waits on; the quantizer need
       * not wait for the weight itself to land) */
      if (kb >= FQ_NST) mbar_wait(&empty[s], (uint32_t)((kb / FQ_NST - 1) & 1));
      const int kv = a.K - kb * FQ_BK - G::KS * h; /* K of this part inside x */
      const uint32_t qbar = smem_u32(&qfull[s]);
#pragma unroll 1
      for (int rr = 0; rr < G::ROUNDS; rr++) {
        const int r = rr * (128 / G::TPR) + G::RPW * qwarp + lane % G::RPW, sw7 = r & 7, rg = rank * G::QR + r;
        const uint8_t *X = xr + xs * G::XST + box * G::XBOX + r * 128;
        uint4 v[NV];
#pragma unroll
        for (int j = 0; j < NV; j++) v[j] = *reinterpret_cast<const uint4 *>(X + (((c0 + j) ^ sw7) << 4));
        if (kv < G::KS) {
#pragma unroll
          for (int j = 0; j < NV; j++)
            if (8 * j >= kv) v[j] = make_uint4(0, 0, 0, 0);
        }
#if FQ_ABL == 1 || FQ_ABL == 4 /* the loads and stores without the arithmetic (wrong codes: timing only) */
        {
          float *scp = sxs + s * FQ_BM + rg;
          if (h == 0) {
            *scp = 1.0f;
#pragma unroll
            for (int p = 1; p < CL; p++) fq_st_async4(smem_u32(scp) + peer[p - 1], 1.0f, qbar + peer[p - 1]);
          }
          uint4 *C = reinterpret_cast<uint4 *>(wr + s * FQ_STAGE + FQ_W_BYTES + rg * 128);
#pragma unroll
          for (int jj = 0; jj < NC; jj++) {
            const uint4 q = make_uint4(v[2 * jj].x ^ v[2 * jj + 1].x, v[2 * jj].y ^ v[2 * jj + 1].y,
                                       v[2 * jj].z ^ v[2 * jj + 1].z, v[2 * jj].w ^ v[2 * jj + 1].w);
            uint4 *d = C + ((NC * h + jj) ^ sw7);
            *d = q;
#pragma unroll
            for (int p = 1; p < CL; p++) fq_st_async16(smem_u32(d) + peer[p - 1], q, qbar + peer[p - 1]);
          }
          continue;
        }
#endif
        const uint32_t k7 = 0x7fff7fffu;
        uint32_t m = 0;
#pragma unroll
        for (int j = 0; j < NV; j++)
          m = __vmaxu2(m, __vmaxu2(__vmaxu2(v[j].x & k7, v[j].y & k7), __vmaxu2(v[j].z & k7, v[j].w & k7)));
        m = qd_fold16(m);
#pragma unroll
        for (int o = G::RPW; o < 32; o <<= 1) m = max(m, __shfl_xor_sync(QD_FULL, m, o));
        const bool bad = m >= 0x7f80u;
        const float sc = bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(qd_bits_to_amax(m), a.ue8m0);
        float *scp = sxs + s * FQ_BM + rg;
        if (h == 0) {
          *scp = sc;
#pragma unroll
          for (int p = 1; p < CL; p++) fq_st_async4(smem_u32(scp) + peer[p - 1], sc, qbar + peer[p - 1]);
        }
        uint4 *C = reinterpret_cast<uint4 *>(wr + s * FQ_STAGE + FQ_W_BYTES + rg * 128);
        const bool fast = qd_mdiv_ok(sc);
        const float rc = fast ? __frcp_rn(sc) : 0.0f;
#pragma unroll
        for (int jj = 0; jj < NC; jj++) {
          uint4 q;
          if (bad) q = make_uint4(0, 0, 0, 0);
          else if (fast) q = qd_enc_fp8_mdiv(v[2 * jj], v[2 * jj + 1], sc, rc, 0);
          else q = fq_enc16_div(v[2 * jj], v[2 * jj + 1], sc);
          uint4 *d = C + ((NC * h + jj) ^ sw7);
          *d = q;
#pragma unroll
          for (int p = 1; p < CL; p++) fq_st_async16(smem_u32(d) + peer[p - 1], q, qbar + peer[p - 1]);
        }
      }
      __syncwarp();
      if (lane == 0) fq_arrive(&xempty[xs]); /* this warp is done with x block kb */
      fence_proxy_async(); /* the codes, written here, read by the tensor cores */
      if (CL > 1 && qt == 0) mbar_arrive_tx(&qfull[s], (uint32_t)G::RBYTES); /* and the peers' bytes */
      else fq_arrive(&qfull[s]);
    }
  } else {
    fq_setmaxnreg_mma();
    /* ---------------- an MMA warpgroup: rows 64c …, all 256 columns as two 128-column halves */
    const int c = (warp - 8) >> 2, w = warp & 3, g = lane >> 2, t = lane & 3;
    const bool live0 = n0 < a.N, live1 = n0 + 128 < a.N; /* the halves inside the weight */
    const float *sw0 = a.sw + (int64_t)(live0 ? n0 / 128 : 0) * a.sld, *sw1 = a.sw + (int64_t)(live1 ? n0 / 128 + 1 : 0) * a.sld;
    uint32_t peer_empty[CL > 1 ? CL - 1 : 1];
#pragma unroll
    for (int p = 1; p < CL; p++) peer_empty[p - 1] = cluster_map(smem_u32(empty), (rank + p) % CL);
    (void)peer_empty;
    /* stage s of the ring is over for this warp: in this CTA and in every peer */
    auto release = [&](int s) {
      __syncwarp();
      if (lane == 0) {
        fq_arrive(&empty[s]);
#pragma unroll
        for (int p = 1; p < CL; p++) fq_arrive_remote(peer_empty[p - 1] + 8u * s);
      }
      __syncwarp();
    };
    /* descriptors of stage 0's codes (this warpgroup's 64 rows) and weight; a stage, a
     * half and a K step move the start address field (bytes / 16) */
    const uint64_t dA0 = wgmma_desc_sw128(smem_u32(wr + FQ_W_BYTES + c * 64 * 128)), dB0 = wgmma_desc_sw128(smem_u32(wr));
    float acc[128], part[64];
#pragma unroll
    for (int i = 0; i < 128; i++) acc[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < 64; i++) part[i] = 0.0f;
    for (int kb = 0; kb < KB; kb++) {
      const int s = kb % FQ_NST;
      const uint32_t ph = (uint32_t)((kb / FQ_NST) & 1);
      const float swa = live0 ? __ldg(sw0 + kb) : 0.0f, swb = live1 ? __ldg(sw1 + kb) : 0.0f; /* ahead of the waits */
      mbar_wait(&wfull[s], ph);
      mbar_wait(&qfull[s], ph);
      if (CL > 1) fence_proxy_async(); /* the peers' codes, stored by st.async, read by the tensor cores */
      const uint64_t da = dA0 + (uint64_t)((s * FQ_STAGE) >> 4);
      const float x0 = sxs[s * FQ_BM + 64 * c + 16 * w + g], x1 = sxs[s * FQ_BM + 64 * c + 16 * w + g + 8];
#if FQ_ABL == 3 /* no per-block scaling: the wgmma accumulate (wrong sums: timing only) */
      (void)swa, (void)swb, (void)x0, (void)x1;
      wgmma_fence();
#pragma unroll
      for (int hf = 0; hf < 2; hf++)
#pragma unroll
        for (int j = 0; j < 4; j++)
          wgmma_ss_e4m3_n128(acc + 64 * hf, da + 2 * j,
                             dB0 + (uint64_t)((s * FQ_STAGE + hf * FQ_WBOX) >> 4) + 2 * j, 1);
      wgmma_commit();
      wgmma_wait<0>();
      fq_fence_acc(acc), fq_fence_acc(acc + 64);
#else
#pragma unroll
      for (int hf = 0; hf < 2; hf++) {
        if ((hf == 0 && !live0) || (hf == 1 && !live1)) continue;
        const uint64_t db = dB0 + (uint64_t)((s * FQ_STAGE + hf * FQ_WBOX) >> 4);
        const float sw = hf ? swb : swa;
#if FQ_ABL != 2 && FQ_ABL != 4
        wgmma_fence();
#pragma unroll
        for (int j = 0; j < 4; j++) wgmma_ss_e4m3_n128(part, da + 2 * j, db + 2 * j, j); /* + 32 bytes of K a step */
        wgmma_commit();
        fq_fence_acc(part);
#else
        (void)db;
#endif
        const float s0 = __fmul_rn(x0, sw), s1 = __fmul_rn(x1, sw);
#if FQ_ABL != 2 && FQ_ABL != 4
        wgmma_wait<0>();
        fq_fence_acc(part);
#endif
        float *ac = acc + 64 * hf;
#pragma unroll
        for (int j = 0; j < 16; j++) {
          ac[4 * j + 0] = __fmaf_rn(part[4 * j + 0], s0, ac[4 * j + 0]);
          ac[4 * j + 1] = __fmaf_rn(part[4 * j + 1], s0, ac[4 * j + 1]);
          ac[4 * j + 2] = __fmaf_rn(part[4 * j + 2], s1, ac[4 * j + 2]);
          ac[4 * j + 3] = __fmaf_rn(part[4 * j + 3], s1, ac[4 * j + 3]);
        }
      }
#endif
      release(s);
    }
    /* store: fragment (row 64c + 16w + g / + 8, column 128·hf + 8j + 2t + h) → y */
    const int64_t row0 = (int64_t)m0 + 64 * c + 16 * w + g;
#pragma unroll
    for (int hf = 0; hf < 2; hf++)
#pragma unroll
      for (int j = 0; j < 16; j++) {
        const int n = n0 + 128 * hf + 8 * j + 2 * t;
#pragma unroll
        for (int v = 0; v < 2; v++) {
          const int64_t row = row0 + 8 * v;
          if (row >= a.M || n >= a.N) continue;
          const float *ac = acc + 64 * hf;
          const uint16_t lo = fmt_bf16_from_f32(ac[4 * j + 2 * v]), hi = fmt_bf16_from_f32(ac[4 * j + 2 * v + 1]);
          uint16_t *dst = a.y + row * a.N + n;
          if (a.pair_store && n + 1 < a.N) *reinterpret_cast<uint32_t *>(dst) = (uint32_t)lo | ((uint32_t)hi << 16);
          else {
            dst[0] = lo;
            if (n + 1 < a.N) dst[1] = hi;
          }
        }
      }
  }
  if (CL > 1) cluster_sync(); /* no store or arrival may reach a CTA that has exited */
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
           int64_t inner, int64_t outer, int64_t row_bytes, int box_inner, int box_outer, const char *what, rl_err *e) {
  const cuuint64_t dims[2] = {(cuuint64_t)inner, (cuuint64_t)outer}, strides[1] = {(cuuint64_t)row_bytes};
  const cuuint32_t box[2] = {(cuuint32_t)box_inner, (cuuint32_t)box_outer}, es[2] = {1, 1};
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
  /* clusters of cl CTAs (RLRUN_FP8Q_CLUSTER, or by the tile count), no wider than the
   * column tiles */
  const int64_t ntn = (N + FQ_BN - 1) / FQ_BN, mtiles = (M + FQ_BM - 1) / FQ_BM;
  const int nsm = device_sm_count(); /* 0: unknown (then pairs) */
  const int cl = gemm_fp8q_cluster_pick(gemm_fp8q_cluster(-1), mtiles, ntn, nsm > 0 ? nsm : -1);
  fq_args a;
  memset(&a, 0, sizeof a);
  if (fq_map(enc, &a.tx, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, x, K, M, K * 2, 64, FQ_BM / cl, "x", e) ||
      fq_map(enc, &a.tw, CU_TENSOR_MAP_DATA_TYPE_UINT8, w->data, K, N, K, 128, 128, "the weight", e))
    return RL_EXIT_FAIL;
  const int64_t kb = (K + FQ_BK - 1) / FQ_BK;
  a.sw = (const float *)w->scales;
  a.sld = w->layout == QLAYOUT_HOPPER_WEIGHT ? (kb + 3) / 4 * 4 : kb;
  a.y = y;
  a.M = (int)M, a.N = (int)N, a.K = (int)K, a.kblocks = (int)kb;
  a.ntn = (int)ntn;
  a.ue8m0 = pol ? pol->ue8m0 : 0;
  a.pair_store = N % 2 == 0 && (uintptr_t)y % 4 == 0;
  const int64_t units = mtiles * ((a.ntn + cl - 1) / cl);
  if (units * cl > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "gemm_fp8q: M=%lld × N=%lld needs %lld tiles of %d × %d, more than the kernel "
                   "counts; split the product or use linear_forward", (long long)M, (long long)N, (long long)(units * cl),
                   FQ_BM, FQ_BN);
  /* a CTA a tile (a persistent grid streaming several tiles through one ring measured
   * ~10 % slower in session 18's form, docs/gpu-results.md) */
  const int64_t grid = (int64_t)cl * units;
  const int smem = cl == 4 ? (int)fq_geo<4>::SMEM : cl == 2 ? (int)fq_geo<2>::SMEM : (int)fq_geo<1>::SMEM;
  if (!fq_attr[dev]) {
    const cudaFuncAttribute sa = cudaFuncAttributeMaxDynamicSharedMemorySize;
    if (cudaFuncSetAttribute(gemm_fp8q_kernel<1>, sa, fq_geo<1>::SMEM) != cudaSuccess ||
        cudaFuncSetAttribute(gemm_fp8q_kernel<2>, sa, fq_geo<2>::SMEM) != cudaSuccess ||
        cudaFuncSetAttribute(gemm_fp8q_kernel<4>, sa, fq_geo<4>::SMEM) != cudaSuccess) {
      cudaError_t st = cudaGetLastError();
      return rl_errf(e, RL_EXIT_FAIL, "gemm_fp8q: cudaFuncSetAttribute (shared memory): %s", cudaGetErrorString(st));
    }
    fq_attr[dev] = 1;
  }
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute at[1];
  at[0] = cudaLaunchAttribute{};
  at[0].id = cudaLaunchAttributeClusterDimension;
  at[0].val.clusterDim.x = (unsigned)cl, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
  cfg.gridDim = dim3((unsigned)grid), cfg.blockDim = dim3(FQ_THREADS), cfg.dynamicSmemBytes = smem, cfg.stream = s;
  cfg.attrs = at, cfg.numAttrs = 1;
  cudaError_t st = cl == 4   ? cudaLaunchKernelEx(&cfg, gemm_fp8q_kernel<4>, a)
                   : cl == 2 ? cudaLaunchKernelEx(&cfg, gemm_fp8q_kernel<2>, a)
                             : cudaLaunchKernelEx(&cfg, gemm_fp8q_kernel<1>, a);
  const cudaError_t last = cudaGetLastError(); /* consumed either way */
  if (st == cudaSuccess) st = last;
  if (st != cudaSuccess) return rl_errf(e, RL_EXIT_FAIL, "gemm_fp8q: launch failed: %s", cudaGetErrorString(st));
  return 0;
}
