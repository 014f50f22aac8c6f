/* gemm_small_cuda.cu — gemm_small_bf16_cuda (gemm.h): y = x·wᵀ for the decode
 * step's small M (1 … 256 rows) on BF16 tensor cores, FP32 accumulation, the
 * sum rounded to BF16 and stored as FP32.
 *
 * Why not cuBLASLt: at M ≤ 64 a decode GEMM is a weight stream (the Qwen3-0.6B
 * layers hold 2–6 MB each); cuBLASLt's 128-wide N tiles give 8–24 CTAs for
 * N = 1024–3072 and it does not split K, so 132 SMs wait on a few. Here:
 *
 *   Tile      a CTA owns BN = 32 weight rows (64 when N alone gives enough
 *             CTAs, e.g. lm_head: half the reads of x per weight byte) × one K
 *             slice × 8·MB rows of x (MB = 1, 2, 4, 8 by M). 16 weight rows a
 *             warp, and from 17 rows of x on two warps along M, so 2–8 warps.
 *             The slices come from gemm_small_plan(N, K) (enough CTAs to fill
 *             the GPU; a function of N and K only). M > 64 runs the 64-row
 *             chunks of x as more CTAs; they sit next to each other in launch
 *             order, so a weight tile comes from HBM once and from L2 for its
 *             other chunks.
 *   Pipeline  the CTA streams its slice in stages of 128 K (its weight rows
 *             and x rows of the stage) through a ring of NST shared-memory
 *             buffers with cp.async (NST − 1 stages in flight while one is
 *             multiplied): the weights never pass through registers unused.
 *   MMA       mma.sync m16n8k16 with the weights as A (16 rows n) and x as B
 *             (8 columns m): M is padded to 8, not 16. Within each 32-wide K
 *             chunk, lane (g, t) reads 16 bytes — K positions 8t … 8t+7 — of
 *             weight rows g and g+8 and of x row g, and feeds them to two MMAs:
 *             K 8t+0,1 and 8t+2,3 into the first (its logical K 2t,2t+1 and
 *             2t+8,2t+9), 8t+4 … 8t+7 into the second. A and B use the same
 *             permutation of K, so the products are exactly Σ_k x[m][k]·w[n][k];
 *             it lets every fragment be one 16-byte shared load. Rows are 256 B;
 *             16-byte chunk c of row r sits at c ^ 4·(r & 1), so the 8 lanes of
 *             each load phase (rows g, g+1) hit 8 distinct bank groups.
 *   Split K   with one slice the accumulators go to y directly. Otherwise each
 *             CTA writes its FP32 partial to a workspace laid out per tile
 *             [tile][m-chunk][slice][row][BN], then counts itself in with an
 *             atomicAdd on the tile's counter (after __threadfence); the CTA
 *             that arrives last copies the tile's S partials into shared memory
 *             (cp.async, all in flight at once), adds them in slice order
 *             0, 1, …, S−1, rounds and writes y, and resets the counter to 0 for
 *             the next call (or graph replay).
 *
 * Determinism and batch invariance: y[m][n] is the sum of the same MMAs
 * (same K positions, same order) and the same ordered slice sum whatever M
 * is and wherever row m sits in the batch; padded rows and columns are zeros
 * whose outputs are dropped, K beyond a slice's end is zero in both operands.
 * No float atomics. */
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "kernels/common.h" /* C linkage (common.h has no extern "C" guards) */
#include "kernels/device.h"
}
#include "kernels/formats.h"
#include "kernels/gemm.h"

namespace {

constexpr int BK = GEMM_SMALL_BK; /* K per stage */
constexpr int CH = BK / 8;        /* 16-byte chunks per stage row */
static_assert(BK % 32 == 0 && CH == 16, "the swizzle assumes 16 chunks per row");

/* The CTA shape of MB m-blocks (8 rows of x each) and WN warps along N:
 * WM warps along M (2 from MB = 4, i.e. M ≥ 17, so that 4 warps share the MMAs),
 * BN = 16·WN weight rows, MB / WM m-blocks a warp. */
__host__ __device__ constexpr int sg_wm(int mb) { return mb >= 4 ? 2 : 1; }
__host__ __device__ constexpr int sg_threads(int mb, int wn) { return 32 * wn * sg_wm(mb); }
__host__ __device__ constexpr int sg_bn(int wn) { return 16 * wn; }
/* BF16 elements of one stage: BN weight rows and 8·MB x rows of BK. */
__host__ __device__ constexpr int sg_stage_elems(int mb, int wn) { return (sg_bn(wn) + 8 * mb) * BK; }
/* Stages of the ring: as many as fit ~96 KB of shared memory, 2 … 6. */
__host__ __device__ constexpr int sg_clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
__host__ __device__ constexpr int sg_nst(int mb, int wn) { return sg_clamp(98304 / (2 * sg_stage_elems(mb, wn)), 2, 6); }
__host__ __device__ constexpr int sg_smem_bytes(int mb, int wn) { return sg_nst(mb, wn) * sg_stage_elems(mb, wn) * 2; }

/* Element offset of 16-byte chunk c of row r in a stage tile (rows of BK, XOR swizzle). */
__host__ __device__ __forceinline__ int sg_off(int r, int c) { return r * BK + 8 * (c ^ ((r & 1) << 2)); }

/* What a launch needs. */
struct sg_args {
  float *y, *ws;
  unsigned *cnt;
  const uint16_t *x, *w;
  int64_t N, K, slice_k;
  int M, slices, n_mc; /* n_mc: chunks of 8·MB rows of x */
};

/* ---------------------------------------------------------------- PTX wrappers */

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16 bytes global → shared (L2 only), asynchronously; bytes = 0 writes zeros. */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* c (16×8 FP32) += a (16×16 BF16, row) · b (16×8 BF16, col). */
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* FP32 rounded to BF16 (RNE, the project's codec), as FP32. */
__device__ __forceinline__ float bf16_round(float v) { return fmt_bf16_to_f32(fmt_bf16_from_f32(v)); }

/* ---------------------------------------------------------------- kernel */

/* Start copying stage st of the CTA's slice [k0, k1) into ring slot st % NST:
 * weight rows n0 … n0+BN−1 and x rows m0 … m0+8·MB−1; rows past N or M and
 * chunks past k1 become zeros. */
template <int MB, int WN>
__device__ __forceinline__ void sg_load(uint16_t *sm, const sg_args &a, int st, int64_t n0, int m0, int64_t k0,
                                        int64_t k1) {
  constexpr int NST = sg_nst(MB, WN), XR = 8 * MB, BN = sg_bn(WN), T = sg_threads(MB, WN);
  static_assert(BN * CH % T == 0 && XR * CH % T == 0, "whole copies per thread");
  uint16_t *Ws = sm + (st % NST) * sg_stage_elems(MB, WN), *Xs = Ws + BN * BK;
  const int64_t kb = k0 + (int64_t)st * BK;
#pragma unroll
  for (int j = 0; j < BN * CH / T; j++) {
    const int i = (int)threadIdx.x + j * T, r = i / CH, c = i % CH;
    const int64_t n = n0 + r, k = kb + 8 * c;
    const bool ok = n < a.N && k < k1;
    cp_async16(smem_u32(Ws + sg_off(r, c)), ok ? a.w + n * a.K + k : a.w, ok ? 16 : 0);
  }
#pragma unroll
  for (int j = 0; j < XR * CH / T; j++) {
    const int i = (int)threadIdx.x + j * T, r = i / CH, c = i % CH;
    const int m = m0 + r;
    const int64_t k = kb + 8 * c;
    const bool ok = m < a.M && k < k1;
    cp_async16(smem_u32(Xs + sg_off(r, c)), ok ? a.x + (int64_t)m * a.K + k : a.x, ok ? 16 : 0);
  }
}

/* One CTA: block b = (tile · slices + slice) · n_mc + m-chunk. */
template <int MB, int WN>
__global__ void __launch_bounds__(sg_threads(MB, WN)) gemm_small_kernel(sg_args a) {
  extern __shared__ uint4 sg_smem[];
  __shared__ int s_last;
  constexpr int NST = sg_nst(MB, WN), XR = 8 * MB, SE = sg_stage_elems(MB, WN), BN = sg_bn(WN);
  constexpr int T = sg_threads(MB, WN), WM = sg_wm(MB), MBW = MB / WM;
  uint16_t *sm = reinterpret_cast<uint16_t *>(sg_smem);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gr = lane >> 2, tg = lane & 3;
  const int wn = warp % WN, wm = warp / WN;
  int64_t b = blockIdx.x;
  const int mc = (int)(b % a.n_mc);
  b /= a.n_mc;
  const int s = (int)(b % a.slices);
  const int64_t tile = b / a.slices, n0 = tile * BN;
  const int m0 = mc * XR;
  const int64_t k0 = (int64_t)s * a.slice_k, k1 = min(a.K, k0 + a.slice_k);
  const int nst = (int)((k1 - k0 + BK - 1) / BK);

  float acc[MBW][4];
#pragma unroll
  for (int i = 0; i < MBW; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

#pragma unroll
  for (int st = 0; st < NST - 1; st++) { /* prologue: NST − 1 stages in flight */
    if (st < nst) sg_load<MB, WN>(sm, a, st, n0, m0, k0, k1);
    cp_commit();
  }
  const int ra = wn * 16 + gr;   /* this lane's weight rows: ra, ra + 8 of the tile */
  const int rx = wm * MBW * 8 + gr; /* its x rows: rx + 8i, i < MBW */
  for (int st = 0; st < nst; st++) {
    cp_wait<NST - 2>(); /* stage st has landed (this thread's copies) … */
    __syncthreads();    /* … everyone's, and slot (st − 1) % NST is free again */
    if (st + NST - 1 < nst) sg_load<MB, WN>(sm, a, st + NST - 1, n0, m0, k0, k1);
    cp_commit(); /* (empty groups at the tail keep the count uniform) */
    const uint16_t *Ws = sm + (st % NST) * SE, *Xs = Ws + BN * BK;
#pragma unroll
    for (int c = 0; c < BK / 32; c++) {
      const int q = 4 * c + tg; /* 16-byte chunk: K positions 32c + 8tg … +7 of the stage */
      const uint4 wa = *reinterpret_cast<const uint4 *>(Ws + sg_off(ra, q));
      const uint4 wb = *reinterpret_cast<const uint4 *>(Ws + sg_off(ra + 8, q));
      const uint32_t a0[4] = {wa.x, wb.x, wa.y, wb.y}, a1[4] = {wa.z, wb.z, wa.w, wb.w};
#pragma unroll
      for (int i = 0; i < MBW; i++) {
        const uint4 xv = *reinterpret_cast<const uint4 *>(Xs + sg_off(rx + 8 * i, q));
        mma16816(acc[i], a0, xv.x, xv.y);
        mma16816(acc[i], a1, xv.z, xv.w);
      }
    }
  }

  /* acc[i][h + 2v] is (x row m0 + rx − gr + 8i + 2tg + h, weight row n0 + ra + 8v) */
  const int rc = rx - gr + 2 * tg; /* x row (in the chunk) of acc[0][0] */
  if (a.slices == 1) {
#pragma unroll
    for (int i = 0; i < MBW; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int m = m0 + rc + 8 * i + h;
        if (m >= a.M) continue;
#pragma unroll
        for (int v = 0; v < 2; v++) {
          const int64_t n = n0 + ra + 8 * v;
          if (n < a.N) a.y[(int64_t)m * a.N + n] = bf16_round(acc[i][h + 2 * v]);
        }
      }
    return;
  }

  /* split K: this slice's partial, then the arrival count of the tile */
  const int rows = min(XR, a.M - m0);
  const int64_t tix = tile * a.n_mc + mc;
  float *part = a.ws + ((size_t)tix * a.slices + s) * XR * BN;
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
  if (tid == 0) s_last = atomicAdd(a.cnt + tix, 1u) == (unsigned)(a.slices - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence(); /* the other slices' partials are read after their counts */

  /* last CTA of the tile: y = Σ_s partial_s in slice order, in passes of rows
   * that fit the (now idle) shared memory */
  float *buf = reinterpret_cast<float *>(sg_smem);
  const float *src = a.ws + (size_t)tix * a.slices * XR * BN;
  const int cap_rows = sg_smem_bytes(MB, WN) / (4 * BN * a.slices); /* ≥ 1: slices ≤ GEMM_SMALL_MAX_SLICES */
  const int per = max(1, min(rows, cap_rows));
  cp_wait<0>();
  __syncthreads(); /* the ring is idle: no copy of the main loop is outstanding */
  for (int r0 = 0; r0 < rows; r0 += per) {
    const int nr = min(per, rows - r0), vec = nr * BN / 4; /* 16-byte vectors per slice */
    for (int i = tid; i < a.slices * vec; i += T) {
      const int t = i / vec, j = i % vec;
      cp_async16(smem_u32(buf + (size_t)i * 4), src + ((size_t)t * XR + r0) * BN + (size_t)j * 4, 16);
    }
    cp_commit();
    cp_wait<0>();
    __syncthreads();
    for (int i = tid; i < nr * BN; i += T) {
      const int64_t n = n0 + i % BN;
      float v = buf[i];
      for (int t = 1; t < a.slices; t++) v = __fadd_rn(v, buf[t * nr * BN + i]);
      if (n < a.N) a.y[(int64_t)(m0 + r0 + i / BN) * a.N + n] = bf16_round(v);
    }
    __syncthreads(); /* buf is read before the next pass overwrites it */
  }
  if (tid == 0) a.cnt[tix] = 0; /* every slice has counted: ready for the next call */
}

/* ---------------------------------------------------------------- host side */

/* The workspace per device (grown on demand; a captured graph holds its
 * pointers, hence device_buffers_changed() on every move). */
static struct {
  void *ws[DEVICE_MAX_GPUS], *cnt[DEVICE_MAX_GPUS];
  size_t ws_cap[DEVICE_MAX_GPUS], cnt_cap[DEVICE_MAX_GPUS];
  unsigned attr[DEVICE_MAX_GPUS]; /* bit MB (+ 8 when WN = 4): gemm_small_kernel<MB, WN>'s shared-memory limit is raised */
  int n_devices;                  /* cudaGetDeviceCount, -1 until asked */
} SG = {{0}, {0}, {0}, {0}, {0}, -1};

/* Check a CUDA runtime status; the message names the call. */
int sg_ok(cudaError_t st, const char *what, rl_err *e) {
  if (st == cudaSuccess) return 0;
  cudaGetLastError();
  return rl_errf(e, RL_EXIT_FAIL, "gemm_small: %s failed: %s", what, cudaGetErrorString(st));
}

/* *buf with at least `bytes` (grown by 25 % headroom); zero: cleared on (re)allocation. */
void *sg_grow(void **buf, size_t *cap, size_t bytes, int zero, cudaStream_t s, const char *what, rl_err *e) {
  if (*cap >= bytes) return *buf;
  if (*buf && sg_ok(cudaFree(*buf), "cudaFree of the workspace", e)) return NULL;
  *buf = NULL, *cap = 0;
  size_t c = bytes + bytes / 4;
  device_buffers_changed();
  if (sg_ok(cudaMalloc(buf, c), what, e)) return NULL;
  if (zero && sg_ok(cudaMemsetAsync(*buf, 0, c, s), "cudaMemsetAsync of the tile counters", e)) return NULL;
  *cap = c;
  return *buf;
}

template <int MB, int WN>
int sg_launch(int dev, const sg_args &a, unsigned blocks, cudaStream_t s, rl_err *e) {
  constexpr int bytes = sg_smem_bytes(MB, WN);
  constexpr unsigned bit = 1u << (MB + (WN == 4 ? 8 : 0));
  static_assert(bytes <= 227 * 1024 && 4 * sg_bn(WN) * GEMM_SMALL_MAX_SLICES <= bytes, "shared memory");
  if (!(SG.attr[dev] & bit)) {
    if (sg_ok(cudaFuncSetAttribute(gemm_small_kernel<MB, WN>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
              "cudaFuncSetAttribute (shared memory)", e))
      return RL_EXIT_FAIL;
    SG.attr[dev] |= bit;
  }
  gemm_small_kernel<MB, WN><<<blocks, sg_threads(MB, WN), bytes, s>>>(a);
  return sg_ok(cudaGetLastError(), "gemm_small_kernel launch", e) ? RL_EXIT_FAIL : 0;
}

/* The kernel of MB m-blocks, narrow (WN = 2: 32 weight rows) or wide (4: 64). */
template <int WN>
int sg_launch_mb(int mb, int dev, const sg_args &a, unsigned blocks, cudaStream_t s, rl_err *e) {
  switch (mb) {
    case 1: return sg_launch<1, WN>(dev, a, blocks, s, e);
    case 2: return sg_launch<2, WN>(dev, a, blocks, s, e);
    case 4: return sg_launch<4, WN>(dev, a, blocks, s, e);
    default: return sg_launch<8, WN>(dev, a, blocks, s, e);
  }
}

} /* namespace */

extern "C" int gemm_small_bf16_cuda(float *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                                    int64_t K, void *stream, rl_err *e) {
  int rc = gemm_small_check(y, x, w, M, N, K, e);
  if (rc || M == 0 || N == 0) return rc;
  cudaStream_t s = stream ? (cudaStream_t)stream : cudaStreamPerThread;
  int dev = 0;
  cudaError_t st = cudaSuccess;
  if (SG.n_devices < 0) { /* asked once */
    st = cudaGetDeviceCount(&SG.n_devices);
    if (st != cudaSuccess) cudaGetLastError(), SG.n_devices = 0;
  }
  if (SG.n_devices > 0) st = cudaGetDevice(&dev);
  if (SG.n_devices == 0 || st != cudaSuccess) {
    cudaGetLastError();
    return rl_errf(e, RL_EXIT_HARDWARE, "gemm_small: no usable CUDA device (%s); use device: cpu",
                   st != cudaSuccess ? cudaGetErrorString(st) : "the driver reports none");
  }
  if (dev < 0 || dev >= DEVICE_MAX_GPUS)
    return rl_errf(e, RL_EXIT_HARDWARE, "gemm_small: device %d beyond the %d supported", dev, DEVICE_MAX_GPUS);
  if (K == 0) /* an empty sum */
    return sg_ok(cudaMemsetAsync(y, 0, (size_t)(M * N) * 4, s), "cudaMemsetAsync", e) ? RL_EXIT_FAIL : 0;
  sg_args a;
  memset(&a, 0, sizeof a);
  gemm_small_plan(N, K, &a.slices, &a.slice_k);
  /* wide tiles (64 weight rows: half the reads of x per weight byte) where they
   * still give the CTA target; the tile width does not change any sum */
  const int wn = (N + 63) / 64 >= gemm_small_ctas() ? 4 : 2, bn = 16 * wn;
  const int mb = M > 32 ? 8 : M > 16 ? 4 : M > 8 ? 2 : 1;
  a.y = y, a.x = x, a.w = w, a.N = N, a.K = K, a.M = (int)M;
  a.n_mc = (int)((M + 8 * mb - 1) / (8 * mb));
  const int64_t tiles = (N + bn - 1) / bn, blocks = tiles * a.slices * a.n_mc;
  if (blocks > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "gemm_small: N=%lld K=%lld needs %lld CTAs (more than 2^31-1)",
                   (long long)N, (long long)K, (long long)blocks);
  if (a.slices > 1) {
    size_t wsb = (size_t)(tiles * a.n_mc * a.slices) * 8 * mb * bn * sizeof(float);
    size_t cb = (size_t)(tiles * a.n_mc) * sizeof(unsigned);
    a.ws = (float *)sg_grow(&SG.ws[dev], &SG.ws_cap[dev], wsb, 0, s, "cudaMalloc of the split-K workspace", e);
    a.cnt = a.ws ? (unsigned *)sg_grow(&SG.cnt[dev], &SG.cnt_cap[dev], cb, 1, s, "cudaMalloc of the tile counters", e)
                 : NULL;
    if (!a.cnt) return RL_EXIT_FAIL;
  }
  return wn == 4 ? sg_launch_mb<4>(mb, dev, a, (unsigned)blocks, s, e) : sg_launch_mb<2>(mb, dev, a, (unsigned)blocks, s, e);
}

extern "C" void gemm_small_release(void) {
  int freed = 0;
  for (int d = 0; d < DEVICE_MAX_GPUS; d++) { /* best effort, as gemm_cuda_release */
    if (SG.ws[d]) cudaFree(SG.ws[d]), freed = 1;
    if (SG.cnt[d]) cudaFree(SG.cnt[d]), freed = 1;
    SG.ws[d] = SG.cnt[d] = NULL, SG.ws_cap[d] = SG.cnt_cap[d] = 0;
  }
  if (freed) device_buffers_changed();
}
