/* quant_cuda.cu — the CUDA twins of quant_cpu.c: same bytes, written for
 * bandwidth. Per-element and per-block arithmetic follows formats.h (the
 * CPU's code) exactly; the cheaper device forms of it (integer amax, exact
 * Markstein division, branch-free E2M1) live in quant_cuda_dev.cuh and are
 * checked against formats.h by quant_cuda_selftest_fast (in
 * quant_selftest_cuda.cu). Divisions and products go through
 * __fdiv_rn/__fmul_rn/__fmaf_rn: no contraction can change a bit.
 *
 * Fast path (K % 16 == 0, 16-byte aligned pointers): a chunk is 16
 * consecutive elements of a row (two 16-byte loads, one 16-byte store of E4M3
 * or one 8-byte store of packed E2M1); each thread loads two chunks before
 * using either; the lanes of one scale block reduce amax with warp shuffles
 * (1×128: 8 lanes, 1×32: 2, 1×16: 1, 16×16: 16 lanes = 16 rows); 128×128
 * blocks are one CTA holding the block in registers. One pass over x: amax,
 * scale and encode fused, nothing read twice, no host round trip. Other
 * shapes take simple per-block kernels. Weights of many tensors (the sync
 * step: hundreds of small linears) go in one launch: the multi kernels run
 * the single-tensor kernels' device bodies (fp8w_block, rows_cta) on
 * descriptors found by binary search, so the bytes are the same by
 * construction. */
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "kernels/device.h" /* device_sm_count */
}
#include "kernels/formats.h"
#include "kernels/quant.h"
#include "kernels/quant_cuda_dev.cuh"

/* Process-wide settings of the CUDA quantizers. */
static struct {
  int soft_cvt; /* 1: software E4M3 codec instead of the cvt instruction */
} g_qcuda;

extern "C" void quant_cuda_set_hw_cvt(int on) { g_qcuda.soft_cvt = !on; }
extern "C" int quant_cuda_soft_cvt(void) { return g_qcuda.soft_cvt; }

#define QCHECK(call)                                                                     \
  do {                                                                                   \
    cudaError_t err_ = (call);                                                           \
    if (err_ != cudaSuccess) {                                                           \
      rl_errf(e, RL_EXIT_HARDWARE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,           \
              cudaGetErrorString(err_));                                                 \
      return QUANT_CUDA_ERROR;                                                           \
    }                                                                                    \
  } while (0)
#define QLAUNCH() QCHECK(cudaGetLastError())

enum { F_FP8A = 0, F_MX = 1, F_NV = 2, F_NVSR = 3 /* NVFP4, stochastic rounding */ };
#define FULL 0xffffffffu
#define QNAN_F32 0x7fc00000u /* the scale of a poisoned fp8-block block */

/* Kernel parameters that do not change between launches of one call. */
struct qparams {
  int64_t rows, K;
  int ue8m0, hopper, stochastic, soft;
  int64_t scale_ld;
  uint64_t sr_seed, sr_offset;
  /* 1×B kernels: chunks per row, its fast division, the rows [row0, row1) of this launch */
  uint32_t cpr;
  qd_fastdiv fd;
  int64_t row0, row1;
};

/* Record non-finite inputs in the device stats (see qd_note_nonfinite). */
__device__ __forceinline__ void note_nonfinite(quant_stats *st, int n, int64_t first) {
  qd_note_nonfinite(st, n, first);
}

/* Fill the NVFP4 encode-multiplier table enc[sb] (enc[0x7F] = 0: poisoned) of
 * the CTA and return S_enc/6 (the block-scale multiplier); writes S_dec once. */
__device__ __forceinline__ float nv_setup(float *tab, const float *d_amax, float *d_sdec) {
  const float ta = *d_amax, s_enc = fmt_nvfp4_senc(ta), s_dec = fmt_nvfp4_sdec(ta);
  for (int i = threadIdx.x; i < 128; i += blockDim.x) tab[i] = i < 127 ? fmt_nvfp4_enc((uint8_t)i, s_dec) : 0.0f;
  if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0 && d_sdec) *d_sdec = s_dec;
  __syncthreads();
  return qf_mul(s_enc, 1.0f / 6.0f);
}

/* NVFP4 block scale code of a block amax (E4M3 of amax·S_enc/6, satfinite). */
__device__ __forceinline__ uint8_t nv_block_scale(float amax, float c6, int soft) {
  const float v = qf_mul(amax, c6);
  return soft ? fmt_e4m3_from_f32(v) : (uint8_t)__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3);
}

/* Packed E2M1 codes of one 16-element chunk (RNE or stochastic); 0 when enc = 0. */
template <bool SR>
__device__ __forceinline__ uint2 nv_encode16(uint4 a, uint4 b, float enc, const qparams &p, int64_t idx0) {
  if (enc == 0.0f) return make_uint2(0, 0);
  if (SR)
    return make_uint2(qd_enc_e2m1_sr_8(a.x, a.y, a.z, a.w, enc, p.sr_seed, p.sr_offset, (uint64_t)idx0),
                      qd_enc_e2m1_sr_8(b.x, b.y, b.z, b.w, enc, p.sr_seed, p.sr_offset, (uint64_t)idx0 + 8));
  return make_uint2(qd_enc_e2m1_8(a.x, a.y, a.z, a.w, enc), qd_enc_e2m1_8(b.x, b.y, b.z, b.w, enc));
}

/* ---------------------------------------------------------------- 1×B kernels (fast) */

enum { ROWS_U = 2 }; /* chunks per thread, all loaded before use */

/* 1×128 (fp8-block act), 1×32 (MXFP8), 1×16 (NVFP4) along K; K % 16 == 0:
 * the work of CTA `cta` of a tensor (k_quant_rows, k_quant_rows_multi).
 * Chunk g (relative to row0·cpr) is row g / cpr, chunk g % cpr of it (cpr =
 * K/16 rounded up to the lanes of one block, so blocks are lane-aligned);
 * warp w owns chunks [32·U·w, 32·U·(w+1)), lane l the chunks l + 32u.
 * NVFP4: enc_tab and c6 from nv_setup. */
template <int FMT>
__device__ __forceinline__ void rows_cta(const uint16_t *__restrict__ x, uint8_t *__restrict__ q,
                                         void *__restrict__ scales, const float *enc_tab, float c6,
                                         const qparams &p, quant_stats *st, uint32_t cta) {
  constexpr int G = FMT == F_FP8A ? 8 : FMT == F_MX ? 2 : 1, U = ROWS_U;
  const uint32_t nch = (uint32_t)(p.K / 16), lane = threadIdx.x & 31;
  const uint32_t base = ((cta * blockDim.x + threadIdx.x) >> 5) * (32 * U) + lane;
  uint4 ra[U], rb[U];
  int64_t row[U];
  uint32_t col[U];
#pragma unroll
  for (int u = 0; u < U; u++) { /* all loads first */
    const uint32_t g = base + 32 * u, lr = qd_div(g, p.fd);
    row[u] = p.row0 + lr, col[u] = g - lr * p.cpr;
    ra[u] = rb[u] = make_uint4(0, 0, 0, 0);
    if (row[u] < p.row1 && col[u] < nch) {
      const uint4 *src = reinterpret_cast<const uint4 *>(x + row[u] * p.K + col[u] * 16);
      ra[u] = __ldg(src), rb[u] = __ldg(src + 1);
    }
  }
#pragma unroll
  for (int u = 0; u < U; u++) {
    const bool in = row[u] < p.row1 && col[u] < nch;
    const int64_t e0 = row[u] * p.K + col[u] * 16; /* flat index of the chunk */
    uint32_t m = qd_fold16(qd_amax_bits16(ra[u], rb[u]));
    if (m >= 0x7f80u && in) { /* rare: Inf/NaN in this chunk */
      const uint32_t nf = qd_nonfinite16(ra[u], rb[u]);
      note_nonfinite(st, (int)(nf & 0xff), e0 + (nf >> 8));
    }
#pragma unroll
    for (int o = 1; o < G; o <<= 1) m = max(m, __shfl_xor_sync(FULL, m, o));
    if (!in) continue;
    const bool bad = m >= 0x7f80u, lead = (col[u] % G) == 0;
    const float amax = qd_bits_to_amax(m);
    if constexpr (FMT == F_FP8A) {
      const float s = bad ? __uint_as_float(QNAN_F32) : fmt_fp8_block_scale(amax, p.ue8m0);
      *reinterpret_cast<uint4 *>(q + e0) = bad ? make_uint4(0, 0, 0, 0) : qd_enc_fp8_div(ra[u], rb[u], s, p.soft);
      if (lead) {
        float *sc = static_cast<float *>(scales);
        if (p.hopper) sc[(int64_t)(col[u] / 8) * p.scale_ld + row[u]] = s;
        else sc[row[u] * (p.cpr / 8) + col[u] / 8] = s;
      }
    } else if constexpr (FMT == F_MX) {
      const uint8_t e8 = bad ? 0xFF : fmt_mxfp8_scale(amax);
      *reinterpret_cast<uint4 *>(q + e0) =
          bad ? make_uint4(0, 0, 0, 0) : qd_enc_fp8_mul(ra[u], rb[u], fmt_e8m0_inv_f32(e8), p.soft);
      if (lead) static_cast<uint8_t *>(scales)[row[u] * (p.cpr / 2) + col[u] / 2] = e8;
    } else {
      const uint8_t sb = bad ? 0x7F : nv_block_scale(amax, c6, p.soft);
      *reinterpret_cast<uint2 *>(q + row[u] * (p.K / 2) + col[u] * 8) =
          nv_encode16<FMT == F_NVSR>(ra[u], rb[u], enc_tab[sb], p, e0);
      static_cast<uint8_t *>(scales)[row[u] * nch + col[u]] = sb;
    }
  }
}

/* One tensor's 1×B quantization, one launch per slab of rows (launch_rows). */
template <int FMT>
__global__ void __launch_bounds__(256, FMT == F_NV ? 6 : 1) /* NVFP4 RNE: <= 40 registers, 6 CTAs per SM */
    k_quant_rows(const uint16_t *__restrict__ x, uint8_t *__restrict__ q, void *__restrict__ scales,
                 const float *d_amax, float *d_sdec, qparams p, quant_stats *st) {
  __shared__ float enc_tab[FMT >= F_NV ? 128 : 1];
  float c6 = 0.0f;
  if constexpr (FMT >= F_NV) c6 = nv_setup(enc_tab, d_amax, d_sdec);
  rows_cta<FMT>(x, q, scales, enc_tab, c6, p, st, blockIdx.x);
}

/* NVFP4 16×16 blocks, K % 16 == 0. A warp owns 16 rows × 8 chunks: lane
 * (r, h) = (lane % 16, lane / 16) loads chunks 4h..4h+3 of row r (128
 * contiguous bytes); the 16 lanes of one h reduce the four block amaxes two
 * at a time (packed 16-bit max). */
template <bool SR>
__global__ void __launch_bounds__(256) k_quant_nvfp4_2d(const uint16_t *__restrict__ x, uint8_t *__restrict__ q,
                                                        uint8_t *__restrict__ scales, const float *d_amax,
                                                        float *d_sdec, qparams p, quant_stats *st) {
  __shared__ float enc_tab[128];
  const float c6 = nv_setup(enc_tab, d_amax, d_sdec);
  const int64_t nch = p.K / 16, ncg = (nch + 7) / 8;
  const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  const int64_t r = w / ncg * 16 + lane % 16, j0 = w % ncg * 8 + lane / 16 * 4;
  uint4 ra[4], rb[4];
  uint32_t m[4];
#pragma unroll
  for (int k = 0; k < 4; k++) { /* all loads first */
    ra[k] = rb[k] = make_uint4(0, 0, 0, 0);
    if (r < p.rows && j0 + k < nch) {
      const uint4 *src = reinterpret_cast<const uint4 *>(x + r * p.K + (j0 + k) * 16);
      ra[k] = __ldg(src), rb[k] = __ldg(src + 1);
    }
  }
#pragma unroll
  for (int k = 0; k < 4; k++) {
    m[k] = qd_fold16(qd_amax_bits16(ra[k], rb[k]));
    if (m[k] >= 0x7f80u && r < p.rows && j0 + k < nch) {
      const uint32_t nf = qd_nonfinite16(ra[k], rb[k]);
      note_nonfinite(st, (int)(nf & 0xff), r * p.K + (j0 + k) * 16 + (nf >> 8));
    }
  }
  uint32_t m01 = m[0] | (m[1] << 16), m23 = m[2] | (m[3] << 16);
#pragma unroll
  for (int o = 1; o < 16; o <<= 1) {
    m01 = __vmaxu2(m01, __shfl_xor_sync(FULL, m01, o));
    m23 = __vmaxu2(m23, __shfl_xor_sync(FULL, m23, o));
  }
  m[0] = m01 & 0xffffu, m[1] = m01 >> 16, m[2] = m23 & 0xffffu, m[3] = m23 >> 16;
  if (r >= p.rows) return;
#pragma unroll
  for (int k = 0; k < 4; k++) {
    if (j0 + k >= nch) break;
    const uint8_t sb = m[k] >= 0x7f80u ? 0x7F : nv_block_scale(qd_bits_to_amax(m[k]), c6, p.soft);
    *reinterpret_cast<uint2 *>(q + r * (p.K / 2) + (j0 + k) * 8) =
        nv_encode16<SR>(ra[k], rb[k], enc_tab[sb], p, r * p.K + (j0 + k) * 16);
    scales[r * nch + j0 + k] = sb;
  }
}

/* fp8-block 128×128, K % 16 == 0: block (b, jb) of a tensor [rows][K] by one
 * CTA of 256 threads (k_quant_fp8_weight, k_quant_fp8_weight_multi), the
 * block held in registers as raw BF16 (4 chunks of 16 per thread: rows ri +
 * 32i, chunk t % 8, all loaded before use); amax by warp shuffles + shared
 * memory; the scale at [b][jb] of a row of kb (roundup(kb, 4) when hopper). */
__device__ __forceinline__ void fp8w_block(const uint16_t *__restrict__ x, uint8_t *__restrict__ q,
                                           float *__restrict__ scales, const qparams &p, quant_stats *st,
                                           int64_t b, int64_t jb) {
  __shared__ uint32_t s_m[8];
  const int64_t kb = (p.K + 127) / 128;
  const int tid = threadIdx.x, cj = tid % 8, ri = tid / 8;
  const int64_t col = jb * 128 + cj * 16;
  uint4 ra[4], rb[4];
#pragma unroll
  for (int i = 0; i < 4; i++) { /* 128 bytes in flight per thread */
    const int64_t r = b * 128 + ri + 32 * i;
    ra[i] = rb[i] = make_uint4(0, 0, 0, 0);
    if (r < p.rows && col < p.K) {
      const uint4 *src = reinterpret_cast<const uint4 *>(x + r * p.K + col);
      ra[i] = __ldg(src), rb[i] = __ldg(src + 1);
    }
  }
  uint32_t m = 0;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const uint32_t mi = qd_fold16(qd_amax_bits16(ra[i], rb[i]));
    const int64_t r = b * 128 + ri + 32 * i;
    if (mi >= 0x7f80u && r < p.rows && col < p.K) {
      const uint32_t nf = qd_nonfinite16(ra[i], rb[i]);
      note_nonfinite(st, (int)(nf & 0xff), r * p.K + col + (nf >> 8));
    }
    m = max(m, mi);
  }
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) m = max(m, __shfl_xor_sync(FULL, m, o));
  if (tid % 32 == 0) s_m[tid / 32] = m;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < 8; w++) m = max(m, s_m[w]);
  const bool bad = m >= 0x7f80u;
  const float s = bad ? __uint_as_float(QNAN_F32) : fmt_fp8_block_scale(qd_bits_to_amax(m), p.ue8m0);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t r = b * 128 + ri + 32 * i;
    if (r < p.rows && col < p.K)
      *reinterpret_cast<uint4 *>(q + r * p.K + col) =
          bad ? make_uint4(0, 0, 0, 0) : qd_enc_fp8_div(ra[i], rb[i], s, p.soft);
  }
  if (tid == 0) scales[b * (p.hopper ? (kb + 3) / 4 * 4 : kb) + jb] = s;
}

/* One tensor: block (blockIdx.y, blockIdx.x). */
__global__ void __launch_bounds__(256) k_quant_fp8_weight(const uint16_t *__restrict__ x, uint8_t *__restrict__ q,
                                                          float *__restrict__ scales, qparams p,
                                                          quant_stats *st) {
  fp8w_block(x, q, scales, p, st, blockIdx.y, blockIdx.x);
}

/* ---------------------------------------------------------------- multi-tensor kernels */

/* One tensor of a multi-tensor launch (the device copy lives in the caller's
 * workspace, followed by first[n + 1]: the first CTA of each tensor). */
struct qm_desc {
  const uint16_t *x;
  uint8_t *q;
  void *scales;
  quant_stats *st;
  int64_t rows, K;
  uint64_t fd_mul; /* MXFP8: qd_fastdiv of cpr */
  uint32_t cpr;
  int fd_sh;
};
static_assert(sizeof(qm_desc) == 64, "quant_cpu.c's quant_multi_ws_bytes assumes 64 + 4 bytes a tensor");

/* The tensor of CTA c: the last t < n with first[t] <= c (first[0] = 0). */
__device__ __forceinline__ int qm_find(const uint32_t *__restrict__ first, int n, uint32_t c) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (__ldg(first + mid) <= c) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* Reset the device stats of the n tensors of a launch (before it). */
__global__ void k_multi_stats_reset(const qm_desc *__restrict__ d, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n && d[i].st) d[i].st->n_nonfinite = 0, d[i].st->first_index = 0;
}

/* fp8-block 128×128 over many tensors: CTA c quantizes block c − first[t] of
 * tensor t (row-major over its ceil(rows/128) × ceil(K/128) blocks). */
__global__ void __launch_bounds__(256) k_quant_fp8_weight_multi(const qm_desc *__restrict__ d,
                                                                const uint32_t *__restrict__ first, int n,
                                                                qparams p0) {
  const int t = qm_find(first, n, blockIdx.x);
  const uint32_t lb = blockIdx.x - __ldg(first + t);
  qparams p = p0;
  p.rows = d[t].rows, p.K = d[t].K;
  const uint32_t kb = (uint32_t)((p.K + 127) / 128);
  fp8w_block(d[t].x, d[t].q, static_cast<float *>(d[t].scales), p, d[t].st, lb / kb, lb % kb);
}

/* MXFP8 1×32 over many tensors: CTA c is CTA c − first[t] of tensor t's
 * k_quant_rows launch (one slab: rows × cpr < 2^30 chunks). */
__global__ void __launch_bounds__(256) k_quant_mx_multi(const qm_desc *__restrict__ d,
                                                        const uint32_t *__restrict__ first, int n, qparams p0) {
  const int t = qm_find(first, n, blockIdx.x);
  const uint32_t cta = blockIdx.x - __ldg(first + t);
  qparams p = p0;
  p.rows = d[t].rows, p.K = d[t].K, p.cpr = d[t].cpr, p.fd.mul = d[t].fd_mul, p.fd.sh = d[t].fd_sh;
  p.row0 = 0, p.row1 = p.rows;
  rows_cta<F_MX>(d[t].x, d[t].q, d[t].scales, nullptr, 0.0f, p, d[t].st, cta);
}

/* ---------------------------------------------------------------- general shapes */

/* Any shape: one thread per block of br×bc (fp8-block weight/act, MXFP8,
 * NVFP4 1×16/16×16); the CPU's loop, element by element. */
__global__ void k_quant_generic(const uint16_t *__restrict__ x, uint8_t *__restrict__ q, void *scales,
                                const float *d_amax, float *d_sdec, int fmt, int br, int bc, qparams p,
                                quant_stats *st) {
  const int64_t kb = (p.K + bc - 1) / bc, nb = (p.rows + br - 1) / br;
  const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= nb * kb) return;
  const int64_t b = t / kb, j = t % kb, r0 = b * br, c0 = j * bc;
  const int64_t r1 = min(r0 + br, p.rows), c1 = min(c0 + bc, p.K);
  float amax = 0.0f;
  int64_t nbad = 0, first = INT64_MAX;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++) {
      float v = fmt_bf16_to_f32(x[r * p.K + c]);
      if (qf_isfinite(v)) amax = fmaxf(amax, fabsf(v));
      else {
        nbad++;
        if (r * p.K + c < first) first = r * p.K + c;
      }
    }
  note_nonfinite(st, (int)nbad, first);
  if (fmt == F_NV) {
    const float ta = *d_amax, s_enc = fmt_nvfp4_senc(ta), s_dec = fmt_nvfp4_sdec(ta);
    if (t == 0 && d_sdec) *d_sdec = s_dec;
    const int64_t kp = (p.K + 1) / 2;
    uint8_t sb = nbad ? 0x7F : fmt_nvfp4_block_scale(amax, s_enc);
    float enc = nbad ? 0.0f : fmt_nvfp4_enc(sb, s_dec);
    for (int64_t r = r0; r < r1; r++) {
      static_cast<uint8_t *>(scales)[r * kb + j] = sb;
      for (int64_t c = c0; c < c1; c += 2) {
        uint8_t byte = 0;
        for (int h = 0; h < 2 && c + h < c1; h++) {
          uint8_t code = 0;
          if (enc != 0.0f) {
            float y = __fmul_rn(fmt_bf16_to_f32(x[r * p.K + c + h]), enc);
            code = p.stochastic ? fmt_e2m1_from_f32_sr(y, qf_philox_u32(p.sr_seed, (uint64_t)(r * p.K + c + h), p.sr_offset))
                                : fmt_e2m1_from_f32(y);
          }
          byte |= (uint8_t)(code << (4 * h));
        }
        q[r * kp + c / 2] = byte;
      }
    }
    return;
  }
  float s = 0.0f;
  uint8_t e8 = 0;
  if (fmt == F_MX) e8 = nbad ? 0xFF : fmt_mxfp8_scale(amax), s = fmt_e8m0_inv_f32(e8);
  else s = nbad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(amax, p.ue8m0);
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++) {
      float v = fmt_bf16_to_f32(x[r * p.K + c]);
      float y = fmt == F_MX ? __fmul_rn(v, s) : __fdiv_rn(v, s);
      q[r * p.K + c] = nbad ? 0 : fmt_e4m3_from_f32(y);
    }
  if (fmt == F_MX) static_cast<uint8_t *>(scales)[b * kb + j] = e8;
  else if (br == 1 && p.hopper) static_cast<float *>(scales)[j * p.scale_ld + b] = s;
  else if (br == 128 && p.hopper) static_cast<float *>(scales)[b * ((kb + 3) / 4 * 4) + j] = s;
  else static_cast<float *>(scales)[b * kb + j] = s;
}

/* amax over finite values into *d_amax (pre-zeroed; FP32 bits compared as
 * integers, valid for non-negative values); non-finite values counted. The
 * vector path (n % 8 == 0, x 16-byte aligned) keeps four 16-byte loads in
 * flight per thread and takes the max of |bf16| bit patterns two at a time. */
__global__ void __launch_bounds__(256) k_amax(const uint16_t *__restrict__ x, int64_t n, float *d_amax,
                                              quant_stats *st) {
  __shared__ uint32_t s_m[32];
  uint32_t m = 0; /* packed |bf16| maxima (vector path) or one FP32 bit pattern */
  const int64_t stride = (int64_t)gridDim.x * blockDim.x, t0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if ((n % 8 == 0) && ((uintptr_t)x % 16 == 0)) {
    const uint4 *xv = reinterpret_cast<const uint4 *>(x);
    const int64_t nv = n / 8;
    for (int64_t i = t0; i < nv; i += 4 * stride) {
      uint4 v[4];
#pragma unroll
      for (int k = 0; k < 4; k++) v[k] = i + k * stride < nv ? __ldg(xv + i + k * stride) : make_uint4(0, 0, 0, 0);
      uint32_t mk[4];
#pragma unroll
      for (int k = 0; k < 4; k++) mk[k] = qd_fold16(qd_amax_bits16(v[k], make_uint4(0, 0, 0, 0)));
#pragma unroll
      for (int k = 0; k < 4; k++) {
        if (mk[k] < 0x7f80u) {
          m = max(m, mk[k]);
          continue;
        }
        const uint32_t w[4] = {v[k].x, v[k].y, v[k].z, v[k].w}; /* rare: Inf/NaN among these 8 */
        int bad = 0, first = 8;
        for (int h = 7; h >= 0; h--) {
          const uint32_t b = (w[h / 2] >> (16 * (h % 2))) & 0x7fffu;
          if (b >= 0x7f80u) bad++, first = h;
          else m = max(m, b);
        }
        note_nonfinite(st, bad, (i + k * stride) * 8 + first);
      }
    }
    m <<= 16; /* as FP32 bits */
  } else {
    float mf = 0.0f;
    for (int64_t i = t0; i < n; i += stride) {
      float v = fmt_bf16_to_f32(x[i]);
      if (qf_isfinite(v)) mf = fmaxf(mf, fabsf(v));
      else note_nonfinite(st, 1, i);
    }
    m = __float_as_uint(mf);
  }
  for (int o = 16; o >= 1; o >>= 1) m = max(m, __shfl_xor_sync(FULL, m, o));
  if (threadIdx.x % 32 == 0) s_m[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (int)blockDim.x / 32; w++) m = max(m, s_m[w]);
    atomicMax(reinterpret_cast<unsigned int *>(d_amax), m);
  }
}

/* S_dec of a tensor amax (for empty tensors, where no block kernel runs; in
 * place after quant_nvfp4_cuda's quantizer). */
__global__ void k_sdec(const float *d_amax, float *d_sdec) {
  if (d_sdec) *d_sdec = fmt_nvfp4_sdec(*d_amax);
}

/* ---------------------------------------------------------------- dequantizers */

/* Store one dequantized value into the requested outputs. */
__device__ __forceinline__ void deq_store(float v, int64_t i, float *f32, uint16_t *bf16) {
  v = qf_canon_nan(v);
  if (f32) f32[i] = v;
  if (bf16) bf16[i] = fmt_bf16_from_f32(v);
}

/* One thread per element: x̂ = code × scale in the checkpoint layouts (fmt:
 * 0 fp8-block with br-row blocks, 1 MXFP8, 2 NVFP4 with *d_sdec). */
__global__ void k_dequant(const uint8_t *__restrict__ q, const void *__restrict__ scales, const float *d_sdec,
                          int fmt, int br, int64_t rows, int64_t K, float *f32, uint16_t *bf16) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows * K) return;
  const int64_t r = i / K, c = i % K;
  float v;
  if (fmt == F_FP8A) {
    const int64_t kb = (K + 127) / 128;
    v = __fmul_rn(fmt_e4m3_to_f32(q[i]), static_cast<const float *>(scales)[(r / br) * kb + c / 128]);
  } else if (fmt == F_MX) {
    const int64_t kb = (K + 31) / 32;
    v = __fmul_rn(fmt_e4m3_to_f32(q[i]), fmt_e8m0_to_f32(static_cast<const uint8_t *>(scales)[r * kb + c / 32]));
  } else {
    const int64_t kb = (K + 15) / 16, kp = (K + 1) / 2;
    const uint8_t byte = q[r * kp + c / 2], code = (uint8_t)((c & 1) ? byte >> 4 : byte & 0x0F);
    const float sb = fmt_e4m3_to_f32(static_cast<const uint8_t *>(scales)[r * kb + c / 16]);
    v = __fmul_rn(__fmul_rn(fmt_e2m1_to_f32(code), sb), *d_sdec);
  }
  deq_store(v, i, f32, bf16);
}

/* Launch the dequantizer over rows × K elements. */
static int launch_dequant(const uint8_t *q, const void *scales, const float *d_sdec, int fmt, int br,
                          int64_t rows, int64_t K, float *f32, uint16_t *bf16, void *stream, rl_err *e) {
  if (rows <= 0 || K <= 0) return 0;
  k_dequant<<<(unsigned)((rows * K + 255) / 256), 256, 0, (cudaStream_t)stream>>>(q, scales, d_sdec, fmt, br,
                                                                                 rows, K, f32, bf16);
  QLAUNCH();
  return 0;
}

extern "C" int dequant_fp8_block_weight_cuda(const uint8_t *q, const float *scales, int64_t rows, int64_t K,
                                             float *out_f32, uint16_t *out_bf16, void *stream, rl_err *e) {
  return launch_dequant(q, scales, NULL, F_FP8A, 128, rows, K, out_f32, out_bf16, stream, e);
}
extern "C" int dequant_fp8_block_act_cuda(const uint8_t *q, const float *scales, int64_t rows, int64_t K,
                                          float *out_f32, uint16_t *out_bf16, void *stream, rl_err *e) {
  return launch_dequant(q, scales, NULL, F_FP8A, 1, rows, K, out_f32, out_bf16, stream, e);
}
extern "C" int dequant_mxfp8_cuda(const uint8_t *q, const uint8_t *scales, int64_t rows, int64_t K,
                                  float *out_f32, uint16_t *out_bf16, void *stream, rl_err *e) {
  return launch_dequant(q, scales, NULL, F_MX, 1, rows, K, out_f32, out_bf16, stream, e);
}
extern "C" int dequant_nvfp4_cuda(const uint8_t *q, const uint8_t *scales, const float *d_s_dec, int64_t rows,
                                  int64_t K, float *out_f32, uint16_t *out_bf16, void *stream, rl_err *e) {
  return launch_dequant(q, scales, d_s_dec, F_NV, 1, rows, K, out_f32, out_bf16, stream, e);
}

/* ---------------------------------------------------------------- host side */

/* Whether the fast kernels apply: K a multiple of 16 and 16-byte alignment. */
static int fast_ok(const void *x, const void *q, int64_t K) {
  return K % 16 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)q % 16 == 0;
}

/* Reset device stats (all zero = none; see qd_note_nonfinite): one memset. */
static int stats_reset(quant_stats *dstats, cudaStream_t s, rl_err *e) {
  if (!dstats) return 0;
  QCHECK(cudaMemsetAsync(dstats, 0, sizeof *dstats, s));
  return 0;
}

static qparams params_of(int64_t rows, int64_t K, const quant_opts *opt) {
  static const quant_opts zero = {};
  if (!opt) opt = &zero;
  qparams p = {};
  p.rows = rows, p.K = K, p.ue8m0 = opt->ue8m0, p.stochastic = opt->stochastic;
  p.hopper = opt->scale_layout == QLAYOUT_HOPPER_ACT || opt->scale_layout == QLAYOUT_HOPPER_WEIGHT;
  p.scale_ld = opt->scale_ld ? opt->scale_ld : rows;
  p.sr_seed = opt->sr_seed, p.sr_offset = opt->sr_offset, p.soft = g_qcuda.soft_cvt;
  return p;
}

static unsigned grid_of(int64_t threads) { return (unsigned)((threads + 255) / 256); }

/* Launch the per-block fallback for any shape. */
static int launch_generic(const uint16_t *x, uint8_t *q, void *scales, const float *d_amax, float *d_sdec,
                          int fmt, int br, int bc, const qparams &p, quant_stats *dstats, cudaStream_t s,
                          rl_err *e) {
  int64_t nblk = (p.rows + br - 1) / br * ((p.K + bc - 1) / bc);
  if (nblk == 0) return 0;
  k_quant_generic<<<grid_of(nblk), 256, 0, s>>>(x, q, scales, d_amax, d_sdec, fmt, br, bc, p, dstats);
  QLAUNCH();
  return 0;
}

extern "C" int quant_stats_fetch_n_cuda(const quant_stats *dstats, quant_stats *host, int64_t n, void *stream,
                                        rl_err *e) {
  QCHECK(cudaStreamSynchronize((cudaStream_t)stream));
  if (n <= 0) return 0;
  QCHECK(cudaMemcpy(host, dstats, (size_t)n * sizeof *host, cudaMemcpyDeviceToHost));
  for (int64_t i = 0; i < n; i++) /* the first index is stored complemented */
    host[i].first_index = host[i].n_nonfinite ? (int64_t)~(uint64_t)host[i].first_index : -1;
  return 0;
}

extern "C" int quant_stats_fetch_cuda(const quant_stats *dstats, quant_stats *host, void *stream, rl_err *e) {
  return quant_stats_fetch_n_cuda(dstats, host, 1, stream, e);
}

extern "C" int quant_amax_bf16_cuda(const uint16_t *x, int64_t n, float *d_amax, quant_stats *dstats,
                                    void *stream, rl_err *e) {
  cudaStream_t s = (cudaStream_t)stream;
  if (stats_reset(dstats, s, e)) return QUANT_CUDA_ERROR;
  QCHECK(cudaMemsetAsync(d_amax, 0, sizeof(float), s));
  if (n <= 0) return 0;
  /* one wave of resident CTAs (a second partial wave would cost a third of the time) */
  static int resident[64];
  int dev = 0;
  QCHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) dev = 63;
  if (!resident[dev]) {
    int per_sm = 0;
    QCHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_amax, 256, 0));
    const int sms = device_sm_count();
    resident[dev] = per_sm * sms > 0 ? per_sm * sms : 132;
  }
  int64_t work = (n % 8 == 0) ? n / 32 : n; /* vector path: 4 × 8 elements per thread and step */
  int64_t blocks = (work + 255) / 256;
  unsigned grid = (unsigned)(blocks < resident[dev] ? blocks : resident[dev]);
  k_amax<<<grid, 256, 0, s>>>(x, n, d_amax, dstats);
  QLAUNCH();
  return 0;
}

extern "C" int quant_fp8_block_weight_cuda(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q,
                                           float *scales, const quant_opts *opt, quant_stats *dstats,
                                           void *stream, rl_err *e) {
  cudaStream_t s = (cudaStream_t)stream;
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  if (opt && opt->scale_layout != QLAYOUT_ROWMAJOR && opt->scale_layout != QLAYOUT_HOPPER_WEIGHT) return QUANT_BAD_ARGS;
  if (stats_reset(dstats, s, e)) return QUANT_CUDA_ERROR;
  qparams p = params_of(rows, K, opt);
  if (rows == 0 || K == 0) return 0;
  if (!fast_ok(x, q, K)) return launch_generic(x, q, scales, NULL, NULL, F_FP8A, 128, 128, p, dstats, s, e);
  dim3 grid((unsigned)((K + 127) / 128), (unsigned)((rows + 127) / 128));
  k_quant_fp8_weight<<<grid, 256, 0, s>>>(x, q, scales, p, dstats);
  QLAUNCH();
  return 0;
}

/* Launch the 1×B fast kernel of a format, in slabs of rows of < 2^30 chunks
 * (the kernel's 32-bit chunk index and fast division). */
template <int FMT>
static int launch_rows(const uint16_t *x, uint8_t *q, void *scales, const float *d_amax, float *d_sdec,
                       const qparams &p0, quant_stats *dstats, cudaStream_t s, rl_err *e) {
  constexpr int G = FMT == F_FP8A ? 8 : FMT == F_MX ? 2 : 1;
  qparams p = p0;
  const int64_t cpr = (p.K / 16 + G - 1) / G * G, per = 256 * ROWS_U;
  if (cpr >= (1 << 29)) return QUANT_BAD_ARGS; /* K >= 2^33: not a tensor this program makes */
  p.cpr = (uint32_t)cpr, p.fd = qd_fastdiv_make((uint32_t)cpr);
  const int64_t slab = ((int64_t)1 << 30) / cpr;
  for (int64_t r0 = 0; r0 < p.rows; r0 += slab) {
    p.row0 = r0, p.row1 = r0 + slab < p.rows ? r0 + slab : p.rows;
    k_quant_rows<FMT><<<(unsigned)(((p.row1 - r0) * cpr + per - 1) / per), 256, 0, s>>>(x, q, scales, d_amax, d_sdec,
                                                                                       p, dstats);
    QLAUNCH();
  }
  return 0;
}

extern "C" int quant_fp8_block_act_cuda(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q,
                                        float *scales, const quant_opts *opt, quant_stats *dstats,
                                        void *stream, rl_err *e) {
  cudaStream_t s = (cudaStream_t)stream;
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  qparams p = params_of(rows, K, opt);
  if (opt && opt->scale_layout != QLAYOUT_ROWMAJOR && opt->scale_layout != QLAYOUT_HOPPER_ACT) return QUANT_BAD_ARGS;
  if (p.hopper && p.scale_ld < rows) return QUANT_BAD_ARGS;
  if (stats_reset(dstats, s, e)) return QUANT_CUDA_ERROR;
  if (rows == 0 || K == 0) return 0;
  if (!fast_ok(x, q, K)) return launch_generic(x, q, scales, NULL, NULL, F_FP8A, 1, 128, p, dstats, s, e);
  return launch_rows<F_FP8A>(x, q, scales, NULL, NULL, p, dstats, s, e);
}

extern "C" int quant_mxfp8_cuda(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                                const quant_opts *opt, quant_stats *dstats, void *stream, rl_err *e) {
  cudaStream_t s = (cudaStream_t)stream;
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  if (stats_reset(dstats, s, e)) return QUANT_CUDA_ERROR;
  qparams p = params_of(rows, K, opt);
  if (rows == 0 || K == 0) return 0;
  if (!fast_ok(x, q, K)) return launch_generic(x, q, scales, NULL, NULL, F_MX, 1, 32, p, dstats, s, e);
  return launch_rows<F_MX>(x, q, scales, NULL, NULL, p, dstats, s, e);
}

extern "C" int quant_nvfp4_amax_cuda(const uint16_t *x, int64_t rows, int64_t K, const float *d_amax,
                                     uint8_t *q, uint8_t *scales, float *d_s_dec, const quant_opts *opt,
                                     quant_stats *dstats, void *stream, rl_err *e) {
  cudaStream_t s = (cudaStream_t)stream;
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  if (stats_reset(dstats, s, e)) return QUANT_CUDA_ERROR;
  qparams p = params_of(rows, K, opt);
  int d2 = opt && opt->nvfp4_2d;
  if (rows == 0 || K == 0) { /* nothing to encode, but S_dec is still defined by the amax */
    k_sdec<<<1, 1, 0, s>>>(d_amax, d_s_dec);
    QLAUNCH();
    return 0;
  }
  if (!fast_ok(x, q, K)) return launch_generic(x, q, scales, d_amax, d_s_dec, F_NV, d2 ? 16 : 1, 16, p, dstats, s, e);
  if (!d2)
    return p.stochastic ? launch_rows<F_NVSR>(x, q, scales, d_amax, d_s_dec, p, dstats, s, e)
                        : launch_rows<F_NV>(x, q, scales, d_amax, d_s_dec, p, dstats, s, e);
  int64_t threads = (rows + 15) / 16 * ((K / 16 + 7) / 8) * 32; /* a warp per 16 rows × 8 chunks */
  if (p.stochastic) k_quant_nvfp4_2d<true><<<grid_of(threads), 256, 0, s>>>(x, q, scales, d_amax, d_s_dec, p, dstats);
  else k_quant_nvfp4_2d<false><<<grid_of(threads), 256, 0, s>>>(x, q, scales, d_amax, d_s_dec, p, dstats);
  QLAUNCH();
  return 0;
}

extern "C" int quant_nvfp4_cuda(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                                float *d_s_dec, const quant_opts *opt, quant_stats *dstats, void *stream,
                                rl_err *e) {
  cudaStream_t s = (cudaStream_t)stream;
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  /* *d_s_dec holds the tensor amax until the quantizer (which reads it and
   * writes no S_dec) is done, then becomes S_dec in place: no allocation */
  int rc = quant_amax_bf16_cuda(x, rows * K, d_s_dec, NULL, stream, e);
  if (!rc) rc = quant_nvfp4_amax_cuda(x, rows, K, d_s_dec, q, scales, NULL, opt, dstats, stream, e);
  if (rc) return rc;
  k_sdec<<<1, 1, 0, s>>>(d_s_dec, d_s_dec);
  QLAUNCH();
  return 0;
}

/* ---------------------------------------------------------------- multi-tensor host side */

extern "C" size_t quant_multi_ws_bytes(int n) {
  return (size_t)(n > 0 ? n : 0) * (sizeof(qm_desc) + sizeof(uint32_t)) + 16;
}

/* Tensors per launch that a workspace of `bytes` holds. */
static int qm_capacity(size_t bytes) {
  if (bytes < quant_multi_ws_bytes(1)) return 0;
  size_t k = (bytes - 16) / (sizeof(qm_desc) + sizeof(uint32_t));
  return k > (1u << 24) ? (1 << 24) : (int)k;
}

/* Upload nb descriptors (host[0..nb)) and their first CTAs into ws as one
 * copy, reset their stats, launch the multi kernel over `ctas` CTAs. The
 * host buffer is free again on return (a pageable copy is staged at once). */
static int qm_flush(int mx, uint8_t *host, const uint32_t *first, int nb, uint64_t ctas, void *ws,
                    const qparams &p0, cudaStream_t s, rl_err *e) {
  const size_t db = (size_t)nb * sizeof(qm_desc);
  memcpy(host + db, first, (size_t)nb * sizeof *first);
  reinterpret_cast<uint32_t *>(host + db)[nb] = (uint32_t)ctas;
  QCHECK(cudaMemcpyAsync(ws, host, db + (size_t)(nb + 1) * sizeof *first, cudaMemcpyHostToDevice, s));
  const qm_desc *dd = static_cast<const qm_desc *>(ws);
  const uint32_t *df = reinterpret_cast<const uint32_t *>(static_cast<const uint8_t *>(ws) + db);
  k_multi_stats_reset<<<grid_of(nb), 256, 0, s>>>(dd, nb);
  QLAUNCH();
  if (mx) k_quant_mx_multi<<<(unsigned)ctas, 256, 0, s>>>(dd, df, nb, p0);
  else k_quant_fp8_weight_multi<<<(unsigned)ctas, 256, 0, s>>>(dd, df, nb, p0);
  QLAUNCH();
  return 0;
}

/* quant_fp8_block_weight_multi_cuda (mx 0) and quant_mxfp8_multi_cuda (mx 1). */
static int quant_multi(int mx, const quant_item *it, int n, const quant_opts *opt, void *ws, size_t ws_bytes,
                       cudaStream_t s, rl_err *e) {
  if (n < 0 || (n > 0 && !it)) return QUANT_BAD_ARGS;
  if (!mx && opt && opt->scale_layout != QLAYOUT_ROWMAJOR && opt->scale_layout != QLAYOUT_HOPPER_WEIGHT)
    return QUANT_BAD_ARGS;
  for (int i = 0; i < n; i++)
    if (it[i].rows < 0 || it[i].K < 0) return QUANT_BAD_ARGS;
  const int cap = qm_capacity(ws_bytes), bcap = n < cap ? n : cap;
  if (n > 0 && (!ws || cap < 1)) {
    rl_errf(e, RL_EXIT_USAGE, "%s multi-tensor quantizer: a workspace of %zu bytes holds no tensor; pass "
            "quant_multi_ws_bytes(n) bytes of device memory", mx ? "mxfp8" : "fp8-block", ws ? ws_bytes : 0);
    return QUANT_BAD_ARGS;
  }
  if (n == 0) return 0;
  const qparams p0 = params_of(0, 0, opt);
  uint8_t *host = static_cast<uint8_t *>(rl_xmalloc(quant_multi_ws_bytes(bcap)));
  uint32_t *first = static_cast<uint32_t *>(rl_xmalloc((size_t)bcap * sizeof(uint32_t)));
  qm_desc *hd = reinterpret_cast<qm_desc *>(host);
  int nb = 0, rc = 0;
  uint64_t ctas = 0;
  for (int i = 0; i < n && !rc; i++) {
    const quant_item &x = it[i];
    uint64_t c = 0; /* CTAs of this tensor in a multi launch; 0: the per-tensor path */
    uint32_t cpr = 0;
    if (x.rows > 0 && x.K > 0 && fast_ok(x.x, x.q, x.K)) {
      if (mx) {
        cpr = (uint32_t)((x.K / 16 + 1) / 2 * 2); /* as launch_rows<F_MX> */
        const uint64_t chunks = (uint64_t)x.rows * cpr, per = 256 * ROWS_U;
        if (chunks <= (1u << 30)) c = (chunks + per - 1) / per;
      } else {
        c = (uint64_t)quant_cdiv(x.rows, 128) * (uint64_t)quant_cdiv(x.K, 128);
        if (c >= (1u << 30)) c = 0;
      }
    }
    if (!c) { /* other shapes, empty or huge tensors: exactly the single-tensor call */
      rc = mx ? quant_mxfp8_cuda(x.x, x.rows, x.K, x.q, static_cast<uint8_t *>(x.scales), opt, x.dstats, s, e)
              : quant_fp8_block_weight_cuda(x.x, x.rows, x.K, x.q, static_cast<float *>(x.scales), opt, x.dstats,
                                            s, e);
      continue;
    }
    if (nb == bcap || ctas + c > (uint64_t)INT32_MAX) {
      if ((rc = qm_flush(mx, host, first, nb, ctas, ws, p0, s, e))) break;
      nb = 0, ctas = 0;
    }
    qm_desc &d = hd[nb];
    d.x = x.x, d.q = x.q, d.scales = x.scales, d.st = x.dstats, d.rows = x.rows, d.K = x.K;
    d.cpr = cpr, d.fd_mul = 0, d.fd_sh = 0;
    if (mx) {
      const qd_fastdiv f = qd_fastdiv_make(cpr);
      d.fd_mul = f.mul, d.fd_sh = f.sh;
    }
    first[nb++] = (uint32_t)ctas;
    ctas += c;
  }
  if (!rc && nb) rc = qm_flush(mx, host, first, nb, ctas, ws, p0, s, e);
  free(host), free(first);
  return rc;
}

extern "C" int quant_fp8_block_weight_multi_cuda(const quant_item *items, int n, const quant_opts *opt, void *ws,
                                                 size_t ws_bytes, void *stream, rl_err *e) {
  return quant_multi(0, items, n, opt, ws, ws_bytes, (cudaStream_t)stream, e);
}

extern "C" int quant_mxfp8_multi_cuda(const quant_item *items, int n, const quant_opts *opt, void *ws,
                                      size_t ws_bytes, void *stream, rl_err *e) {
  return quant_multi(1, items, n, opt, ws, ws_bytes, (cudaStream_t)stream, e);
}
