/* gemm_fp8q_cuda.cu — gemm_fp8q_cuda (gemm.h): y[M][N] (BF16) = x · wᵀ for an
 * fp8-block weight with the BF16 activation x quantized INSIDE the GEMM, so that
 * linear_forward's separate activation pass (3·M·K bytes of memory traffic: the
 * gap between linear_forward and a bare cuBLASLt call at M ≥ 512, issue #5) goes
 * away. Hopper (sm_90a) only.
 *
 *   Work      a tile is 64 rows of x × 256 weight rows (two 128×128 weight scale
 *             blocks a K step); K is walked in 128-wide blocks (one activation
 *             scale block), one CTA a tile, one CTA an SM (224 KB of ring).
 *             RLRUN_FP8Q_CLUSTER=1 (gemm_fp8q_cluster, off by default: measured
 *             slower): CTAs run in pairs on neighbouring row tiles of the same
 *             columns, each loading half of the weight block into both (TMA
 *             multicast). The CTA loop also streams several tiles through one ring
 *             when the grid is smaller than the tiles (a persistent grid, one CTA an
 *             SM: measured ~10 % slower, so the launch gives every tile a CTA).
 *   Roles     384 threads. Warpgroup 0 quantizes (thread 0 also issues the loads);
 *             warpgroups 1 and 2 run the MMAs of columns 0–127 and 128–255.
 *   Loads     the Tensor Memory Accelerator, 128-byte swizzle: x's 64 × 128 BF16
 *             block as two 64-wide boxes, the weight's 256 × 128 E4M3 block as two
 *             128-row boxes, into a ring of FQ_NST stages of 56 KB (x, weight, and
 *             the codes the quantizer writes). mbarriers a stage: full (the TMA's
 *             bytes), qfull (the 128 quantizer threads), empty (the MMA warps of
 *             this CTA and of its pair). Thread 0 refills every released stage as
 *             soon as it sees it, also while it waits for its own next block.
 *             Rows and columns past the tensor are the TMA's zero fill; K past the
 *             tensor is masked.
 *   Quantize  thread (row r, half h) reads its 64 BF16 straight from the swizzled
 *             stage, takes the integer amax of the |bf16| bits (the row's two
 *             halves by one shuffle), the scale fmt_fp8_block_scale and the E4M3
 *             codes of RN(x / s) by the quantizer's own device functions
 *             (quant_cuda_dev.cuh) — the bytes and scales quant_fp8_block_act_cuda
 *             writes for linear_forward, bit for bit — and stores the codes into
 *             the stage in the swizzle wgmma reads (its A operand), the scale
 *             beside it.
 *   MMA       4 × wgmma m64n128k32 E4M3, both operands from shared memory, from
 *             zero, then acc = fmaf(part, sx ·_rn sw, acc) — the order of the
 *             small-M fp8 kernels (gs_fp8_scale_acc), which match cuBLASLt's
 *             block-scaled GEMM on 99.99–100 % of outputs.
 *   Store     bf16_rne(acc) to y, rows and columns inside the tensor.
 *
 * Status (issue #5, EXPERIMENTAL, linear_forward uses it only under
 * RLRUN_LINEAR_FP8Q=1). History (H100): the first form (128 × 128 tiles, every
 * thread quantizing its own rows into register A fragments) ran at 12–26 % of the
 * bare cuBLASLt GEMM; with separate quantizer and MMA warpgroups, 64 × 256 tiles,
 * shared-memory codes: 25–41 %. ncu then showed the pipeline itself starved: the
 * shared accesses had become generic (a pointer rebuilt from an integer), thread 0
 * refilled stages only between its own blocks, and each tile paid the ring's fill.
 * docs/gpu-results.md has the numbers of the current form. A timing build with
 * `make BUILD=build-diag CU_BUILD=build-diag/cu EXTRA_NVCCFLAGS=-DFQ_DIAG` reads FQ_DIAG
 * (1: no quantizer arithmetic, 2: no MMAs, 3: neither; wrong sums) to see what each part costs.
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

namespace {

constexpr int FQ_BM = 64, FQ_BN = 256, FQ_BK = 128;
constexpr int FQ_NST = 4;                              /* ring stages */
constexpr int FQ_X_BYTES = FQ_BM * FQ_BK * 2;          /* x block, BF16: two 64-wide boxes */
#define FQ_XBOX (FQ_X_BYTES / 2)                       /* one x box: 64 rows × 128 B */
constexpr int FQ_W_BYTES = FQ_BN * FQ_BK;              /* weight block, E4M3: two boxes of 128 rows */
#define FQ_WBOX (FQ_W_BYTES / 2)                       /* one weight box: 128 rows × 128 B */
constexpr int FQ_C_BYTES = FQ_BM * FQ_BK;              /* x's E4M3 codes, wgmma's A */
constexpr int FQ_STAGE = FQ_X_BYTES + FQ_W_BYTES + FQ_C_BYTES; /* 56 KB */
constexpr int FQ_THREADS = 384;                        /* quantizer warpgroup + 2 MMA warpgroups */
constexpr int FQ_SMEM = 1024 + FQ_NST * FQ_STAGE + FQ_NST * FQ_BM * 4 + 3 * FQ_NST * 8;
static_assert(FQ_STAGE % 1024 == 0, "stages keep the 128-byte swizzle's 1024-byte alignment");
static_assert(FQ_SMEM <= 232448, "the ring fits an sm_90 CTA's shared memory");

struct fq_args {
  CUtensorMap tx; /* x [M][K] BF16, box 64 × 64 */
  CUtensorMap tw; /* w [N][K] E4M3, box 128 × 128 */
  const float *sw;
  int64_t sld;
  uint16_t *y;
  int M, N, K, kblocks, ntn, mtiles;
  int ue8m0, pair_store;
#ifdef FQ_DIAG
  int diag; /* timing experiments only (-DFQ_DIAG, env FQ_DIAG): 1 no quantizer arithmetic, 2 no MMA */
#endif
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

/* The same box into dst of every CTA of the cluster in `mask`, completing on the
 * mbarrier at bar's offset in each of them. */
__device__ __forceinline__ void fq_tma2d_mc(void *dst, const CUtensorMap *map, int c0, int c1, uint64_t *bar,
                                            uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster "
      "[%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(smem_u32(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(smem_u32(bar)), "h"(mask)
      : "memory");
}

__device__ __forceinline__ void fq_arrive(uint64_t *bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
}
/* An arrival on the mbarrier at shared::cluster address a (another CTA's). */
__device__ __forceinline__ void fq_arrive_remote(uint32_t a) {
  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(a) : "memory");
}
/* The rare scales outside qd_mdiv_ok's range: the quantizer's IEEE-division encoder,
 * kept out of line (inlined, its divisions' slow paths multiply the loop's code and
 * the warps stall on instruction fetch). */
__device__ __noinline__ uint4 fq_enc16_div(uint4 a, uint4 b, float s) { return qd_enc_fp8_fdiv(a, b, s, 0); }

#endif

/* CL = 2: a cluster of two CTAs on neighbouring row tiles of the same columns, each
 * loading half of the weight block for both (TMA multicast). */
template <int CL>
__global__ void __launch_bounds__(FQ_THREADS, 1) gemm_fp8q_kernel(const __grid_constant__ fq_args a) {
#if RLRUN_HAVE_WGMMA
  extern __shared__ uint8_t fq_smem_raw[];
  /* offset arithmetic on the shared array keeps the accesses ld/st.shared (a pointer
   * rebuilt from an integer would be generic) */
  uint8_t *sm = fq_smem_raw + ((1024u - (smem_u32(fq_smem_raw) & 1023u)) & 1023u);
  float *sxs = reinterpret_cast<float *>(sm + FQ_NST * FQ_STAGE); /* [stage][64]: the rows' scales */
  uint64_t *full = reinterpret_cast<uint64_t *>(sxs + FQ_NST * FQ_BM), *qfull = full + FQ_NST, *empty = qfull + FQ_NST;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  /* this CTA (pair) takes units u0, u0 + stride, … (a unit: one tile, or CL tiles of neighbouring
   * rows and the same columns; the launch gives each unit its own, stride = the grid) and streams
   * their K blocks through one ring: block g of the stream is K block g % KB of its unit g / KB,
   * in stage g % FQ_NST */
  const int rank = CL == 2 ? (int)(blockIdx.x & 1) : 0, KB = a.kblocks;
  const int u0 = (int)(blockIdx.x / CL), ustride = (int)(gridDim.x / CL);
  const int nunits = a.ntn * ((a.mtiles + CL - 1) / CL);
  const int my_units = u0 < nunits ? (nunits - 1 - u0) / ustride + 1 : 0;
  const int total = my_units * KB; /* blocks streamed */
  auto unit_m0 = [&](int i) { return (CL * ((u0 + i * ustride) / a.ntn) + rank) * FQ_BM; };
  auto unit_n0 = [&](int i) { return ((u0 + i * ustride) % a.ntn) * FQ_BN; };
  if (tid == 0) {
    for (int s = 0; s < FQ_NST; s++)
      mbar_init(&full[s], 1), mbar_init(&qfull[s], 128), mbar_init(&empty[s], 8 * CL);
    fence_mbar_init();
  }
  if (CL == 2) cluster_sync(); /* the peer's barriers exist before anything lands in them */
  else __syncthreads();
  /* thread 0: stream block g's x tile and (its half of) the weight tile into stage g % FQ_NST */
  auto load = [&](int g) {
    const int s = g % FQ_NST, i = g / KB, k0 = (g % KB) * FQ_BK, m0 = unit_m0(i), n0 = unit_n0(i);
    uint8_t *st = sm + s * FQ_STAGE;
    mbar_arrive_tx(&full[s], FQ_X_BYTES + FQ_W_BYTES);
    fq_tma2d(st, &a.tx, k0, m0, &full[s]);
    fq_tma2d(st + FQ_XBOX, &a.tx, k0 + 64, m0, &full[s]);
    if (CL == 2) fq_tma2d_mc(st + FQ_X_BYTES + rank * FQ_WBOX, &a.tw, k0, n0 + 128 * rank, &full[s], 3);
    else {
      fq_tma2d(st + FQ_X_BYTES, &a.tw, k0, n0, &full[s]);
      fq_tma2d(st + FQ_X_BYTES + FQ_WBOX, &a.tw, k0, n0 + 128, &full[s]);
    }
  };

  if (warp < 4) {
    /* ---------------- the quantizer warpgroup: row r = 16·warp + lane % 16, K half h = lane / 16 */
    int next = 0; /* thread 0: the next block to load */
    if (tid == 0) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(&a.tx) : "memory");
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(&a.tw) : "memory");
      for (; next < FQ_NST && next < total; next++) load(next);
    }
    /* thread 0, the quantizer at block g: load every block up to g + FQ_NST − 1 whose
     * stage the MMA warps have released (block g's own: waiting for it) */
    auto refill = [&](int g) {
      while (next < total && next < g + FQ_NST) {
        const uint32_t ph = (uint32_t)((next / FQ_NST - 1) & 1);
        if (next == g) mbar_wait(&empty[next % FQ_NST], ph);
        else if (!mbar_test(&empty[next % FQ_NST], ph)) break;
        load(next++);
      }
    };
    const int r = 16 * warp + (lane & 15), h = lane >> 4, sw7 = r & 7;
    for (int g = 0; g < total; g++) {
      const int s = g % FQ_NST, kb = g % KB;
      const uint32_t ph = (uint32_t)((g / FQ_NST) & 1);
      if (tid == 0) { /* while block g is in flight, keep the loads behind it going */
        refill(g);
        while (!mbar_test(&full[s], ph)) refill(g);
      }
      __syncwarp();
      mbar_wait(&full[s], ph);
      uint8_t *st = sm + s * FQ_STAGE;
      const uint8_t *X = st + h * FQ_XBOX + r * 128;
      uint4 v[8];
#pragma unroll
      for (int j = 0; j < 8; j++) v[j] = *reinterpret_cast<const uint4 *>(X + ((j ^ sw7) << 4));
      const int kv = a.K - kb * FQ_BK - 64 * h; /* K of this half inside x */
      if (kv < 64) {
#pragma unroll
        for (int j = 0; j < 8; j++)
          if (8 * j >= kv) v[j] = make_uint4(0, 0, 0, 0);
      }
      const uint32_t k7 = 0x7fff7fffu;
      uint32_t m = 0;
#pragma unroll
      for (int j = 0; j < 8; j++) m = __vmaxu2(m, __vmaxu2(__vmaxu2(v[j].x & k7, v[j].y & k7), __vmaxu2(v[j].z & k7, v[j].w & k7)));
      m = qd_fold16(m);
      m = max(m, __shfl_xor_sync(QD_FULL, m, 16));
      const bool bad = m >= 0x7f80u;
      const float sc = bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(qd_bits_to_amax(m), a.ue8m0);
      if (h == 0) sxs[s * FQ_BM + r] = sc;
      uint8_t *C = st + FQ_X_BYTES + FQ_W_BYTES + r * 128;
      uint4 q[4];
#ifdef FQ_DIAG
      if (a.diag & 1) {
#pragma unroll
        for (int jj = 0; jj < 4; jj++) q[jj] = v[2 * jj];
      } else
#endif
      if (bad) {
#pragma unroll
        for (int jj = 0; jj < 4; jj++) q[jj] = make_uint4(0, 0, 0, 0);
      } else if (qd_mdiv_ok(sc)) {
        const float rc = __frcp_rn(sc);
#pragma unroll
        for (int jj = 0; jj < 4; jj++)
          q[jj] = qd_enc_fp8_mdiv(v[2 * jj], v[2 * jj + 1], sc, rc, 0);
      } else {
#pragma unroll
        for (int jj = 0; jj < 4; jj++) q[jj] = fq_enc16_div(v[2 * jj], v[2 * jj + 1], sc);
      }
#pragma unroll
      for (int jj = 0; jj < 4; jj++) *reinterpret_cast<uint4 *>(C + (((4 * h + jj) ^ sw7) << 4)) = q[jj];
      fence_proxy_async(); /* the codes, written here, read by the tensor cores */
      fq_arrive(&qfull[s]);
      if (tid == 0) refill(g + 1);
      __syncwarp();
    }
  } else {
    /* ---------------- an MMA warpgroup: columns 128c … of the tile; warp w = rows 16w …, lane (g, t) */
    const int c = (warp - 4) >> 2, w = warp & 3, g = lane >> 2, t = lane & 3;
    float acc[64], part[64];
#pragma unroll
    for (int i = 0; i < 64; i++) part[i] = 0.0f;
    for (int i = 0; i < my_units; i++) {
      const int m0 = unit_m0(i), n0 = unit_n0(i), nt = n0 / FQ_BN;
      const bool live = n0 + 128 * c < a.N; /* columns inside the weight (else: only the barriers) */
      const float *swp = a.sw + (int64_t)(live ? nt * 2 + c : 0) * a.sld;
#pragma unroll
      for (int j = 0; j < 64; j++) acc[j] = 0.0f;
      for (int kb = 0; kb < KB; kb++) {
        const int gi = i * KB + kb, s = gi % FQ_NST;
        const uint32_t ph = (uint32_t)((gi / FQ_NST) & 1);
        mbar_wait(&full[s], ph);
        mbar_wait(&qfull[s], ph);
        const uint8_t *st = sm + s * FQ_STAGE;
        float s0 = 0.0f, s1 = 0.0f;
#ifdef FQ_DIAG
        if (live && !(a.diag & 2)) {
#else
        if (live) {
#endif
          const uint32_t ab = smem_u32(st + FQ_X_BYTES + FQ_W_BYTES), bb = smem_u32(st + FQ_X_BYTES + c * FQ_WBOX);
          const float sw = __ldg(swp + kb);
          wgmma_fence();
#pragma unroll
          for (int j = 0; j < 4; j++)
            wgmma_ss_e4m3_n128(part, wgmma_desc_sw128(ab + 32 * j), wgmma_desc_sw128(bb + 32 * j), j);
          wgmma_commit();
          fq_fence_acc(part);
          s0 = __fmul_rn(sxs[s * FQ_BM + 16 * w + g], sw), s1 = __fmul_rn(sxs[s * FQ_BM + 16 * w + g + 8], sw);
          wgmma_wait<0>();
          fq_fence_acc(part);
        }
        __syncwarp();
        if (lane == 0) { /* stage s released, in this CTA and (its weight half came from there) the peer */
          fq_arrive(&empty[s]);
          if (CL == 2) fq_arrive_remote(cluster_map(smem_u32(&empty[s]), rank ^ 1));
        }
        __syncwarp(); /* the warp whole again before its next wgmma (.aligned) */
        if (live) {
#pragma unroll
          for (int j = 0; j < 16; j++) {
            acc[4 * j + 0] = __fmaf_rn(part[4 * j + 0], s0, acc[4 * j + 0]);
            acc[4 * j + 1] = __fmaf_rn(part[4 * j + 1], s0, acc[4 * j + 1]);
            acc[4 * j + 2] = __fmaf_rn(part[4 * j + 2], s1, acc[4 * j + 2]);
            acc[4 * j + 3] = __fmaf_rn(part[4 * j + 3], s1, acc[4 * j + 3]);
          }
        }
      }
      /* store: fragment (row 16w + g / + 8, column 8j + 2t + h) → y */
      if (live) {
        const int64_t row0 = (int64_t)m0 + 16 * w + g;
#pragma unroll
        for (int j = 0; j < 16; j++) {
          const int n = n0 + 128 * c + 8 * j + 2 * t;
#pragma unroll
          for (int v = 0; v < 2; v++) {
            const int64_t row = row0 + 8 * v;
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
      }
    }
  }
  if (CL == 2) cluster_sync(); /* no arrival or multicast may reach a CTA that has exited */
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
  fq_args a;
  memset(&a, 0, sizeof a);
  if (fq_map(enc, &a.tx, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, x, K, M, K * 2, 64, FQ_BM, "x", e) ||
      fq_map(enc, &a.tw, CU_TENSOR_MAP_DATA_TYPE_UINT8, w->data, K, N, K, 128, 128, "the weight", e))
    return RL_EXIT_FAIL;
  const int64_t kb = (K + FQ_BK - 1) / FQ_BK;
  a.sw = (const float *)w->scales;
  a.sld = w->layout == QLAYOUT_HOPPER_WEIGHT ? (kb + 3) / 4 * 4 : kb;
  a.y = y;
  a.M = (int)M, a.N = (int)N, a.K = (int)K, a.kblocks = (int)kb;
  a.ntn = (int)((N + FQ_BN - 1) / FQ_BN);
  a.ue8m0 = pol ? pol->ue8m0 : 0;
  a.pair_store = N % 2 == 0 && (uintptr_t)y % 4 == 0;
#ifdef FQ_DIAG
  a.diag = getenv("FQ_DIAG") ? atoi(getenv("FQ_DIAG")) : 0;
#endif
  const int cl = gemm_fp8q_cluster(-1) ? 2 : 1;
  const int64_t mtiles = (M + FQ_BM - 1) / FQ_BM, units = (int64_t)a.ntn * ((mtiles + cl - 1) / cl);
  if (units * cl > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "gemm_fp8q: M=%lld × N=%lld needs %lld tiles of %d × %d, more than the kernel "
                   "counts; split the product or use linear_forward", (long long)M, (long long)N, (long long)(units * cl),
                   FQ_BM, FQ_BN);
  a.mtiles = (int)mtiles;
  /* a CTA (pair) a unit: a persistent grid of one CTA an SM streaming several units
   * through its ring measured ~10 % slower (H100, docs/gpu-results.md) */
  const int64_t grid = (int64_t)cl * units;
  if (!fq_attr[dev]) {
    if (cudaFuncSetAttribute(gemm_fp8q_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, FQ_SMEM) != cudaSuccess ||
        cudaFuncSetAttribute(gemm_fp8q_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, FQ_SMEM) != cudaSuccess) {
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
  cfg.gridDim = dim3((unsigned)grid), cfg.blockDim = dim3(FQ_THREADS), cfg.dynamicSmemBytes = FQ_SMEM, cfg.stream = s;
  cfg.attrs = at, cfg.numAttrs = 1;
  cudaError_t st = cl == 2 ? cudaLaunchKernelEx(&cfg, gemm_fp8q_kernel<2>, a) : cudaLaunchKernelEx(&cfg, gemm_fp8q_kernel<1>, a);
  const cudaError_t last = cudaGetLastError(); /* consumed either way */
  if (st == cudaSuccess) st = last;
  if (st != cudaSuccess) return rl_errf(e, RL_EXIT_FAIL, "gemm_fp8q: launch failed: %s", cudaGetErrorString(st));
  return 0;
}
