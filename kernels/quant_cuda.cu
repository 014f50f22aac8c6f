/* quant_cuda.cu — the CUDA twins of quant_cpu.c: same bytes, written for
 * bandwidth. Per-element and per-block arithmetic comes from formats.h (the
 * CPU's code); divisions and products go through __fdiv_rn/__fmul_rn, so no
 * FMA contraction can change a bit.
 *
 * Fast path (K % 16 == 0, 16-byte aligned pointers): one thread owns a chunk
 * of 16 consecutive elements of a row (two 16-byte loads, one 16-byte store of
 * E4M3 or one 8-byte store of packed E2M1); the threads of one scale block
 * reduce amax with warp shuffles (1×128: 8 lanes, 1×32: 2, 1×16: 1, 16×16:
 * 16 lanes = 16 rows); 128×128 blocks are one CTA holding the block in
 * registers. One pass over x: amax, scale and encode fused, nothing read
 * twice, no host round trip. Other shapes take simple per-block kernels. */
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/formats.h"
#include "kernels/quant.h"

/* Process-wide settings of the CUDA quantizers. */
static struct {
  int soft_cvt; /* 1: software E4M3 codec instead of the cvt instruction */
} g_qcuda;

extern "C" void quant_cuda_set_hw_cvt(int on) { g_qcuda.soft_cvt = !on; }

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

enum { F_FP8A = 0, F_MX = 1, F_NV = 2 };
#define FULL 0xffffffffu

/* Kernel parameters that do not change between launches of one call. */
struct qparams {
  int64_t rows, K;
  int ue8m0, hopper, stochastic, soft;
  int64_t scale_ld;
  uint64_t sr_seed, sr_offset;
};

/* ---------------------------------------------------------------- device helpers */

/* E4M3 codes of two values (RNE, satfinite), hardware or software. */
__device__ __forceinline__ uint32_t e4m3x2(float a, float b, int soft) {
  if (soft) return (uint32_t)fmt_e4m3_from_f32(a) | ((uint32_t)fmt_e4m3_from_f32(b) << 8);
  return (uint32_t)__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
}

/* 16 BF16 held as two 16-byte words → FP32. */
__device__ __forceinline__ void unpack16(uint4 a, uint4 b, float *v) {
  uint32_t w[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
  for (int i = 0; i < 8; i++) {
    v[2 * i] = __uint_as_float(w[i] << 16);
    v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

/* Load 16 BF16 (two 16-byte loads) as FP32. */
__device__ __forceinline__ void load16(const uint16_t *p, float *v) {
  unpack16(__ldg(reinterpret_cast<const uint4 *>(p)), __ldg(reinterpret_cast<const uint4 *>(p) + 1), v);
}

/* amax over finite values of v[16]; returns the count of non-finite ones and
 * the position of the first in *firstpos. */
__device__ __forceinline__ int amax16(const float *v, float *amax, int *firstpos) {
  float m = 0.0f;
  int bad = 0, first = 16;
#pragma unroll
  for (int i = 0; i < 16; i++) {
    if (qf_isfinite(v[i])) m = fmaxf(m, fabsf(v[i]));
    else {
      bad++;
      first = min(first, i);
    }
  }
  *amax = m;
  *firstpos = first;
  return bad;
}

/* Record non-finite inputs in the device stats (rare: atomics are fine). */
__device__ __forceinline__ void note_nonfinite(quant_stats *st, int n, int64_t first) {
  if (!st || !n) return;
  atomicAdd(reinterpret_cast<unsigned long long *>(&st->n_nonfinite), (unsigned long long)n);
  atomicMin(reinterpret_cast<unsigned long long *>(&st->first_index), (unsigned long long)first);
}

/* Encode 16 values by fp8-block division or MXFP8 multiplication into 16 bytes. */
__device__ __forceinline__ uint4 enc_e4m3_16(const float *v, float s, int div, int soft) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float a[4];
#pragma unroll
    for (int k = 0; k < 4; k++) a[k] = div ? __fdiv_rn(v[4 * i + k], s) : __fmul_rn(v[4 * i + k], s);
    w[i] = e4m3x2(a[0], a[1], soft) | (e4m3x2(a[2], a[3], soft) << 16);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

/* Encode 16 values to packed E2M1 (8 bytes), RNE or stochastic rounding. */
__device__ __forceinline__ uint2 enc_e2m1_16(const float *v, float enc, const qparams &p,
                                             int64_t idx0) {
  uint32_t w[2] = {0, 0};
  if (enc != 0.0f) {
#pragma unroll
    for (int i = 0; i < 16; i++) {
      float y = __fmul_rn(v[i], enc);
      uint32_t c = p.stochastic
                       ? fmt_e2m1_from_f32_sr(y, qf_philox_u32(p.sr_seed, (uint64_t)(idx0 + i), p.sr_offset))
                       : fmt_e2m1_from_f32(y);
      w[i / 8] |= c << (4 * (i % 8));
    }
  }
  return make_uint2(w[0], w[1]);
}

/* ---------------------------------------------------------------- 1×B kernels (fast) */

/* 1×128 (fp8-block act), 1×32 (MXFP8), 1×16 (NVFP4) along K; K % 16 == 0.
 * Thread t: row t / cpr, chunk t % cpr (cpr = K/16 rounded up to the lanes
 * per block, so a block's lanes are aligned in the warp). */
template <int FMT>
__global__ void __launch_bounds__(256) k_quant_rows(const uint16_t *__restrict__ x, uint8_t *__restrict__ q,
                                                    void *__restrict__ scales, const float *d_amax,
                                                    float *d_sdec, qparams p, quant_stats *st) {
  constexpr int G = FMT == F_FP8A ? 8 : FMT == F_MX ? 2 : 1;
  const int64_t nch = p.K / 16, cpr = (nch + G - 1) / G * G;
  const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t r = t / cpr, j = t % cpr;
  const bool in = r < p.rows && j < nch;
  float v[16];
  if (in) load16(x + r * p.K + j * 16, v);
  else {
#pragma unroll
    for (int i = 0; i < 16; i++) v[i] = 0.0f;
  }
  float amax;
  int fpos, nbad = amax16(v, &amax, &fpos);
  if (in) note_nonfinite(st, nbad, r * p.K + j * 16 + fpos);
  int bad = nbad;
#pragma unroll
  for (int o = 1; o < G; o <<= 1) {
    amax = fmaxf(amax, __shfl_xor_sync(FULL, amax, o));
    bad |= __shfl_xor_sync(FULL, bad, o);
  }
  if (!in) return;
  const bool lead = (j % G) == 0;
  if constexpr (FMT == F_FP8A) {
    const int64_t kb = (p.K + 127) / 128;
    float s = bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(amax, p.ue8m0);
    uint4 o = bad ? make_uint4(0, 0, 0, 0) : enc_e4m3_16(v, s, 1, p.soft);
    *reinterpret_cast<uint4 *>(q + r * p.K + j * 16) = o;
    if (lead) {
      float *sc = static_cast<float *>(scales);
      if (p.hopper) sc[(j / 8) * p.scale_ld + r] = s;
      else sc[r * kb + j / 8] = s;
    }
  } else if constexpr (FMT == F_MX) {
    const int64_t kb = (p.K + 31) / 32;
    uint8_t e8 = bad ? 0xFF : fmt_mxfp8_scale(amax);
    uint4 o = bad ? make_uint4(0, 0, 0, 0) : enc_e4m3_16(v, fmt_e8m0_inv_f32(e8), 0, p.soft);
    *reinterpret_cast<uint4 *>(q + r * p.K + j * 16) = o;
    if (lead) static_cast<uint8_t *>(scales)[r * kb + j / 2] = e8;
  } else {
    const float ta = *d_amax, s_enc = fmt_nvfp4_senc(ta), s_dec = fmt_nvfp4_sdec(ta);
    if (t == 0 && d_sdec) *d_sdec = s_dec;
    uint8_t sb = bad ? 0x7F : fmt_nvfp4_block_scale(amax, s_enc);
    float enc = bad ? 0.0f : fmt_nvfp4_enc(sb, s_dec);
    *reinterpret_cast<uint2 *>(q + r * (p.K / 2) + j * 8) = enc_e2m1_16(v, enc, p, r * p.K + j * 16);
    static_cast<uint8_t *>(scales)[r * nch + j] = sb;
  }
}

/* NVFP4 16×16 blocks, K % 16 == 0: 16 lanes = the 16 rows of one block. */
__global__ void __launch_bounds__(256) k_quant_nvfp4_2d(const uint16_t *__restrict__ x, uint8_t *__restrict__ q,
                                                        uint8_t *__restrict__ scales, const float *d_amax,
                                                        float *d_sdec, qparams p, quant_stats *st) {
  const int64_t nch = p.K / 16, t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t g = t / 16, rb = g / nch, j = g % nch, r = rb * 16 + (t % 16);
  const bool in = r < p.rows && rb < (p.rows + 15) / 16;
  float v[16];
  if (in) load16(x + r * p.K + j * 16, v);
  else {
#pragma unroll
    for (int i = 0; i < 16; i++) v[i] = 0.0f;
  }
  float amax;
  int fpos, nbad = amax16(v, &amax, &fpos);
  if (in) note_nonfinite(st, nbad, r * p.K + j * 16 + fpos);
  int bad = nbad;
#pragma unroll
  for (int o = 1; o < 16; o <<= 1) {
    amax = fmaxf(amax, __shfl_xor_sync(FULL, amax, o));
    bad |= __shfl_xor_sync(FULL, bad, o);
  }
  if (!in) return;
  const float ta = *d_amax, s_enc = fmt_nvfp4_senc(ta), s_dec = fmt_nvfp4_sdec(ta);
  if (t == 0 && d_sdec) *d_sdec = s_dec;
  uint8_t sb = bad ? 0x7F : fmt_nvfp4_block_scale(amax, s_enc);
  float enc = bad ? 0.0f : fmt_nvfp4_enc(sb, s_dec);
  *reinterpret_cast<uint2 *>(q + r * (p.K / 2) + j * 8) = enc_e2m1_16(v, enc, p, r * p.K + j * 16);
  scales[r * nch + j] = sb;
}

/* fp8-block 128×128, K % 16 == 0: one CTA (256 threads) per block, the block
 * held in registers as raw BF16 (4 chunks of 16 per thread: rows ri + 32i,
 * chunk t % 8), so that three CTAs fit on an SM. */
__global__ void __launch_bounds__(256) k_quant_fp8_weight(const uint16_t *__restrict__ x, uint8_t *__restrict__ q,
                                                          float *__restrict__ scales, qparams p,
                                                          quant_stats *st) {
  __shared__ float s_amax[8];
  const int64_t b = blockIdx.y, jb = blockIdx.x, kb = (p.K + 127) / 128;
  const int tid = threadIdx.x, cj = tid % 8, ri = tid / 8;
  const int64_t col = jb * 128 + cj * 16;
  uint4 raw[4][2];
#pragma unroll
  for (int i = 0; i < 4; i++) { /* all loads first: 128 bytes in flight per thread */
    const int64_t r = b * 128 + ri + 32 * i;
    raw[i][0] = raw[i][1] = make_uint4(0, 0, 0, 0);
    if (r < p.rows && col < p.K) {
      raw[i][0] = __ldg(reinterpret_cast<const uint4 *>(x + r * p.K + col));
      raw[i][1] = __ldg(reinterpret_cast<const uint4 *>(x + r * p.K + col) + 1);
    }
  }
  float amax = 0.0f;
  int nbad = 0;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t r = b * 128 + ri + 32 * i;
    float v[16], m;
    unpack16(raw[i][0], raw[i][1], v);
    int fpos, nb = amax16(v, &m, &fpos);
    if (r < p.rows && col < p.K) note_nonfinite(st, nb, r * p.K + col + fpos);
    amax = fmaxf(amax, m);
    nbad += nb;
  }
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(FULL, amax, o));
  if (tid % 32 == 0) s_amax[tid / 32] = amax;
  const int bad = __syncthreads_or(nbad);
  amax = s_amax[0];
#pragma unroll
  for (int w = 1; w < 8; w++) amax = fmaxf(amax, s_amax[w]);
  const float s = bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(amax, p.ue8m0);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t r = b * 128 + ri + 32 * i;
    if (r < p.rows && col < p.K) {
      float v[16];
      unpack16(raw[i][0], raw[i][1], v);
      *reinterpret_cast<uint4 *>(q + r * p.K + col) = bad ? make_uint4(0, 0, 0, 0) : enc_e4m3_16(v, s, 1, p.soft);
    }
  }
  if (tid == 0) scales[b * (p.hopper ? (kb + 3) / 4 * 4 : kb) + jb] = s;
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
 * integers, valid for non-negative values); non-finite values counted. */
__global__ void k_amax(const uint16_t *__restrict__ x, int64_t n, float *d_amax, quant_stats *st) {
  __shared__ float s_m[32];
  float m = 0.0f;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const bool vec = (n % 16 == 0) && ((uintptr_t)x % 16 == 0);
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; vec ? i < n / 16 : i < n; i += stride) {
    if (vec) {
      float v[16], a;
      int fpos;
      load16(x + i * 16, v);
      int nb = amax16(v, &a, &fpos);
      note_nonfinite(st, nb, i * 16 + fpos);
      m = fmaxf(m, a);
    } else {
      float v = fmt_bf16_to_f32(x[i]);
      if (qf_isfinite(v)) m = fmaxf(m, fabsf(v));
      else note_nonfinite(st, 1, i);
    }
  }
  for (int o = 16; o >= 1; o >>= 1) m = fmaxf(m, __shfl_xor_sync(FULL, m, o));
  if (threadIdx.x % 32 == 0) s_m[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (int)blockDim.x / 32; w++) m = fmaxf(m, s_m[w]);
    atomicMax(reinterpret_cast<int *>(d_amax), __float_as_int(m));
  }
}

/* S_dec of a tensor amax (for empty tensors, where no block kernel runs). */
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

/* Every FP32 pattern hi·2^24 + [0, 2^24): hardware vs software E4M3 codes. */
__global__ void k_selftest_e4m3(uint32_t hi, unsigned long long *count, unsigned long long *first) {
  const uint32_t u = (hi << 24) | (blockIdx.x * blockDim.x + threadIdx.x);
  const float f = __uint_as_float(u);
  const uint8_t hw = (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3), sw = fmt_e4m3_from_f32(f);
  /* NaN: both must give a NaN code (the sign of a NaN is not part of the contract) */
  const bool same = hw == sw || ((hw & 0x7F) == 0x7F && (sw & 0x7F) == 0x7F);
  if (!same) {
    atomicAdd(count, 1ull);
    atomicMin(first, (unsigned long long)u);
  }
}

/* ---------------------------------------------------------------- host side */

/* Whether the fast kernels apply: K a multiple of 16 and 16-byte alignment. */
static int fast_ok(const void *x, const void *q, int64_t K) {
  return K % 16 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)q % 16 == 0;
}

/* Reset device stats: count 0, first index -1 (all bits set). */
static int stats_reset(quant_stats *dstats, cudaStream_t s, rl_err *e) {
  if (!dstats) return 0;
  QCHECK(cudaMemsetAsync(&dstats->n_nonfinite, 0, sizeof(int64_t), s));
  QCHECK(cudaMemsetAsync(&dstats->first_index, 0xFF, sizeof(int64_t), s));
  return 0;
}

static qparams params_of(int64_t rows, int64_t K, const quant_opts *opt) {
  static const quant_opts zero = {};
  if (!opt) opt = &zero;
  qparams p;
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

extern "C" int quant_cuda_selftest_e4m3(int64_t *mismatch, int64_t *first, rl_err *e) {
  unsigned long long *d = NULL, h[2] = {0, ~0ull};
  QCHECK(cudaMalloc((void **)&d, 2 * sizeof *d));
  QCHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice));
  for (uint32_t hi = 0; hi < 256; hi++) {
    k_selftest_e4m3<<<(1u << 24) / 256, 256>>>(hi, d, d + 1);
    QLAUNCH();
  }
  QCHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  QCHECK(cudaFree(d));
  *mismatch = (int64_t)h[0];
  *first = h[0] ? (int64_t)h[1] : -1;
  return 0;
}

extern "C" int quant_stats_fetch_cuda(const quant_stats *dstats, quant_stats *host, void *stream, rl_err *e) {
  QCHECK(cudaStreamSynchronize((cudaStream_t)stream));
  QCHECK(cudaMemcpy(host, dstats, sizeof *host, cudaMemcpyDeviceToHost));
  return 0;
}

extern "C" int quant_amax_bf16_cuda(const uint16_t *x, int64_t n, float *d_amax, quant_stats *dstats,
                                    void *stream, rl_err *e) {
  cudaStream_t s = (cudaStream_t)stream;
  if (stats_reset(dstats, s, e)) return QUANT_CUDA_ERROR;
  QCHECK(cudaMemsetAsync(d_amax, 0, sizeof(float), s));
  if (n <= 0) return 0;
  int64_t work = (n % 16 == 0) ? n / 16 : n;
  int64_t blocks = (work + 255) / 256;
  unsigned grid = (unsigned)(blocks < 132 * 16 ? blocks : 132 * 16);
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

/* Launch the 1×B fast kernel of a format. */
template <int FMT>
static int launch_rows(const uint16_t *x, uint8_t *q, void *scales, const float *d_amax, float *d_sdec,
                       const qparams &p, quant_stats *dstats, cudaStream_t s, rl_err *e) {
  constexpr int G = FMT == F_FP8A ? 8 : FMT == F_MX ? 2 : 1;
  int64_t cpr = (p.K / 16 + G - 1) / G * G;
  k_quant_rows<FMT><<<grid_of(p.rows * cpr), 256, 0, s>>>(x, q, scales, d_amax, d_sdec, p, dstats);
  QLAUNCH();
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
  if (!d2) return launch_rows<F_NV>(x, q, scales, d_amax, d_s_dec, p, dstats, s, e);
  int64_t threads = (rows + 15) / 16 * (K / 16) * 16;
  k_quant_nvfp4_2d<<<grid_of(threads), 256, 0, s>>>(x, q, scales, d_amax, d_s_dec, p, dstats);
  QLAUNCH();
  return 0;
}

extern "C" int quant_nvfp4_cuda(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                                float *d_s_dec, const quant_opts *opt, quant_stats *dstats, void *stream,
                                rl_err *e) {
  cudaStream_t s = (cudaStream_t)stream;
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  float *d_amax = NULL;
  QCHECK(cudaMallocAsync((void **)&d_amax, sizeof(float), s));
  int rc = quant_amax_bf16_cuda(x, rows * K, d_amax, NULL, stream, e);
  if (!rc) rc = quant_nvfp4_amax_cuda(x, rows, K, d_amax, q, scales, d_s_dec, opt, dstats, stream, e);
  QCHECK(cudaFreeAsync(d_amax, s));
  return rc;
}
