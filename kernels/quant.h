/* quant.h — the quantizers of FORMATS.md: one API, a CPU reference
 * (quant_cpu.c) and CUDA twins (quant_cuda.cu) that produce identical bytes.
 *
 * Inputs are row-major BF16 matrices x[rows][K] (bit patterns, uint16_t), K
 * being the reduction dimension (contiguous); the CPU reference also has _f32
 * variants that read FP32 x. Outputs (all row-major unless a layout says
 * otherwise):
 *
 *   format          data                      scales
 *   fp8-block W     E4M3 [rows][K]            FP32 [ceil(rows/128)][ceil(K/128)]  (128×128 blocks)
 *   fp8-block act   E4M3 [rows][K]            FP32 [rows][ceil(K/128)]            (1×128 tiles)
 *   mxfp8           E4M3 [rows][K]            E8M0 [rows][ceil(K/32)]             (1×32)
 *   nvfp4           E2M1 packed [rows][ceil(K/2)] (element 2i in the low nibble)
 *                                             E4M3 [rows][ceil(K/16)] + FP32 S_dec (1×16)
 * Partial edge blocks are the part of the block that exists; padding nibbles
 * of an odd K are 0.
 *
 * Non-finite inputs (±Inf, NaN) are never silently encoded: the quantizer
 * returns QUANT_NONFINITE, fills quant_stats (count, first flat index
 * row*K + k), writes every finite block normally and "poisons" each block that
 * holds a non-finite value: its data bytes are 0 and its scale is NaN (FP32
 * 0x7FC00000, E8M0 0xFF, E4M3 0x7F), so a consumer that ignores the status
 * reads NaN, not garbage. For NVFP4 the tensor amax is taken over finite values.
 *
 * CUDA twins (`_cuda`) take device pointers and a cudaStream_t passed as
 * `void *` (NULL = default stream); they enqueue work and return at once (no
 * host round trip). Their quant_stats pointer is DEVICE memory (may be NULL),
 * reset by the call and filled by the kernels; read it only through
 * quant_stats_fetch_cuda (its device encoding differs from quant_stats). They return 0 or QUANT_CUDA_ERROR
 * (launch/API failure, message in rl_err when given). In a build without CUDA
 * they return QUANT_NO_CUDA. */
#ifndef RLRUN_QUANT_H
#define RLRUN_QUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/common.h"

/* The formats of a quantized tensor (new values at the end). */
typedef enum qformat { QFMT_BF16, QFMT_FP8_BLOCK, QFMT_MXFP8, QFMT_NVFP4 } qformat;

/* Where a tensor's scales are laid out (new values at the end). */
typedef enum qlayout {
  QLAYOUT_ROWMAJOR,        /* the checkpoint layout in the table above */
  QLAYOUT_HOPPER_ACT,      /* fp8-block 1×128 act scales [ceil(K/128)][ld >= M], M contiguous */
  QLAYOUT_HOPPER_WEIGHT,   /* fp8-block 128×128 scales [ceil(N/128)][roundup(ceil(K/128), 4)] */
  QLAYOUT_BLACKWELL_128x4  /* MXFP8/NVFP4 scales in cuBLAS's swizzled 128×4 tiles */
} qlayout;

/* Status values of the quantizers (0 = ok). */
enum quant_status {
  QUANT_OK = 0,
  QUANT_NONFINITE = 1,  /* input held ±Inf/NaN: see quant_stats; poisoned blocks written */
  QUANT_BAD_ARGS = 2,   /* a shape or option the function does not take */
  QUANT_CUDA_ERROR = 3, /* a CUDA call or launch failed */
  QUANT_NO_CUDA = 4     /* this build has no CUDA code */
};

/* What a quantizer saw of non-finite inputs. first_index = -1 when none. */
typedef struct quant_stats {
  int64_t n_nonfinite;
  int64_t first_index; /* smallest flat index row*K + k of a non-finite input */
} quant_stats;

/* Options; pass NULL for the defaults (all zero). New fields go at the end. */
typedef struct quant_opts {
  int ue8m0;          /* fp8-block: power-of-two scales 2^ceil(log2(amax/448)) */
  int nvfp4_2d;       /* nvfp4: 16×16 blocks (weights); scales still [rows][ceil(K/16)],
                         each value repeated over the block's 16 rows */
  int stochastic;     /* nvfp4: stochastic rounding of the E2M1 elements */
  uint64_t sr_seed;   /* key of the counter-based RNG (Philox4x32-10) */
  uint64_t sr_offset; /* counter offset, e.g. (iteration << 32 | tensor id) */
  int scale_layout;   /* fp8-block act: QLAYOUT_ROWMAJOR (0) or QLAYOUT_HOPPER_ACT
                         (scales written straight into cuBLASLt's [ceil(K/128)][scale_ld]);
                         fp8-block weight: QLAYOUT_ROWMAJOR or QLAYOUT_HOPPER_WEIGHT
                         ([ceil(N/128)][roundup(ceil(K/128),4)]; padding left untouched) */
  int64_t scale_ld;   /* QLAYOUT_HOPPER_ACT leading dimension (>= rows; 0 → rows) */
} quant_opts;

/* Human-readable name of a status value. */
const char *quant_status_str(int status);
/* Shape helpers. */
static inline int64_t quant_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t quant_roundup(int64_t a, int64_t b) { return quant_cdiv(a, b) * b; }

/* Record a quantizer status as an error (code RL_EXIT_USAGE for non-finite
 * input, RL_EXIT_FAIL otherwise) naming `what` (tensor name) and the first bad
 * element; returns the rl_exit code (0 when status is 0). */
int quant_status_err(int status, const quant_stats *st, const char *what, int64_t K, rl_err *e);

/* ---------------------------------------------------------------- CPU reference */

/* Absolute maximum of n BF16 values over the finite ones; counts non-finite in
 * *st (may be NULL). */
float quant_amax_bf16_cpu(const uint16_t *x, int64_t n, quant_stats *st);

/* fp8-block, 128×128 blocks (weights): q [rows][K] E4M3, scales FP32
 * [ceil(rows/128)][ceil(K/128)]. opt->ue8m0 honoured. */
int quant_fp8_block_weight_cpu(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q,
                               float *scales, const quant_opts *opt, quant_stats *st);
/* fp8-block, 1×128 tiles (activations): q [rows][K] E4M3, scales FP32
 * [rows][ceil(K/128)] (or QLAYOUT_HOPPER_ACT per opt). opt->ue8m0 honoured. */
int quant_fp8_block_act_cpu(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q,
                            float *scales, const quant_opts *opt, quant_stats *st);
/* MXFP8, 1×32: q [rows][K] E4M3, scales E8M0 [rows][ceil(K/32)]. */
int quant_mxfp8_cpu(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                    const quant_opts *opt, quant_stats *st);
/* NVFP4, 1×16 (or 16×16 with opt->nvfp4_2d): q packed [rows][ceil(K/2)],
 * scales E4M3 [rows][ceil(K/16)], *s_dec = S_dec; the tensor amax is computed. */
int quant_nvfp4_cpu(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                    float *s_dec, const quant_opts *opt, quant_stats *st);
/* NVFP4 with an externally supplied tensor amax (e.g. the max over an
 * expert's gate and up projections, so the two share S_dec). amax must be
 * finite and >= every |x| of this tensor (larger is allowed). */
int quant_nvfp4_amax_cpu(const uint16_t *x, int64_t rows, int64_t K, float amax, uint8_t *q,
                         uint8_t *scales, float *s_dec, const quant_opts *opt, quant_stats *st);

/* The same quantizers reading FP32 input x[rows][K] instead of BF16 (for
 * converting F32/F16 checkpoints: FORMATS.md applies the rules to the source
 * values, not to their BF16 rounding). Same outputs, options, non-finite
 * handling and statuses; an FP32 input that is exactly BF16 gives the bytes
 * of the BF16 function. CPU only (the CUDA twins take BF16). */
float quant_amax_f32_cpu(const float *x, int64_t n, quant_stats *st);
int quant_fp8_block_weight_f32_cpu(const float *x, int64_t rows, int64_t K, uint8_t *q,
                                   float *scales, const quant_opts *opt, quant_stats *st);
int quant_fp8_block_act_f32_cpu(const float *x, int64_t rows, int64_t K, uint8_t *q,
                                float *scales, const quant_opts *opt, quant_stats *st);
int quant_mxfp8_f32_cpu(const float *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                        const quant_opts *opt, quant_stats *st);
int quant_nvfp4_f32_cpu(const float *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                        float *s_dec, const quant_opts *opt, quant_stats *st);
int quant_nvfp4_amax_f32_cpu(const float *x, int64_t rows, int64_t K, float amax, uint8_t *q,
                             uint8_t *scales, float *s_dec, const quant_opts *opt,
                             quant_stats *st);

/* Dequantizers (checkpoint layouts): write FP32 into out_f32 and/or the
 * BF16 (RNE) of the same values into out_bf16 (either may be NULL). */
void dequant_fp8_block_weight_cpu(const uint8_t *q, const float *scales, int64_t rows, int64_t K,
                                  float *out_f32, uint16_t *out_bf16);
void dequant_fp8_block_act_cpu(const uint8_t *q, const float *scales, int64_t rows, int64_t K,
                               float *out_f32, uint16_t *out_bf16);
void dequant_mxfp8_cpu(const uint8_t *q, const uint8_t *scales, int64_t rows, int64_t K,
                       float *out_f32, uint16_t *out_bf16);
/* x̂ = (E2M1(q) × float(sb)) × S_dec, in FP32. */
void dequant_nvfp4_cpu(const uint8_t *q, const uint8_t *scales, float s_dec, int64_t rows,
                       int64_t K, float *out_f32, uint16_t *out_bf16);

/* ---------------------------------------------------------------- scale layouts (CPU) */

/* 1×128 act scales [M][kb] row-major → cuBLASLt Hopper VEC128 [kb][ld] (M contiguous,
 * ld >= M; columns M..ld-1 are set to 1.0). kb = ceil(K/128). */
void quant_layout_fp8_act_scales_to_cublaslt(const float *src, int64_t M, int64_t kb, int64_t ld,
                                             float *dst);
/* The inverse: [kb][ld] → [M][kb]. */
void quant_layout_fp8_act_scales_from_cublaslt(const float *src, int64_t M, int64_t kb, int64_t ld,
                                               float *dst);
/* 128×128 weight scales [nb][kb] → cuBLASLt BLK128x128 [nb][roundup(kb,4)]
 * (padding set to 1.0). */
void quant_layout_fp8_weight_scales_to_cublaslt(const float *src, int64_t nb, int64_t kb,
                                                float *dst);
void quant_layout_fp8_weight_scales_from_cublaslt(const float *src, int64_t nb, int64_t kb,
                                                  float *dst);
/* Bytes of a Blackwell swizzled scale buffer for a [rows][cols] byte scale
 * matrix: roundup(rows,128) × roundup(cols,4). */
size_t quant_layout_swizzle_bytes(int64_t rows, int64_t cols);
/* Byte offset of scale (r, c) in the swizzled layout (cuBLAS "block scaling
 * factors layout": 128×4 tiles, tile (r/128, c/4) at (r/128 × ceil(cols/4) +
 * c/4) × 512, inside it (r%32)×16 + ((r/32)%4)×4 + c%4). */
size_t quant_layout_swizzle_offset(int64_t r, int64_t c, int64_t cols);
/* MXFP8 (E8M0) or NVFP4 (E4M3) byte scales [rows][cols] → swizzled (padding 0). */
void quant_layout_scales_to_swizzled(const uint8_t *src, int64_t rows, int64_t cols, uint8_t *dst);
void quant_layout_scales_from_swizzled(const uint8_t *src, int64_t rows, int64_t cols, uint8_t *dst);

/* ---------------------------------------------------------------- CUDA twins */

/* E4M3 encoding in the CUDA kernels: 1 (default) = the hardware cvt.rn.satfinite
 * instruction, 0 = the software codec of formats.h (the CPU's code). Both must
 * give the CPU's bytes; tests/gpu checks both. Process-wide; not thread-safe. */
void quant_cuda_set_hw_cvt(int on);
/* 1 when the software codec is in force (the flag kernels outside quant_cuda.cu
 * that encode E4M3 themselves pass on); 0 in a build without CUDA. */
int quant_cuda_soft_cvt(void);

/* Diagnostic for tests/gpu: encode every FP32 bit pattern with the hardware
 * cvt and with formats.h's fmt_e4m3_from_f32 on the device; *mismatch = how
 * many codes differ, *first = the first differing pattern (or -1). Synchronous. */
int quant_cuda_selftest_e4m3(int64_t *mismatch, int64_t *first, rl_err *e);

/* Diagnostic for tests/gpu: the fast device forms of formats.h's rules used by
 * the kernels, checked on the device. mismatch[0]: E2M1 RNE encoder, [1]: E2M1
 * stochastic-rounding encoder, both over every non-negative FP32 pattern;
 * [2]: the exact (Markstein) division x/s vs __fdiv_rn, bit for bit, over every
 * BF16 × FP32 significand pair; [3]: E4M3 codes of that division vs
 * __fdiv_rn's for every finite BF16 x and 3456 divisors 2^-90..2^126. All 0
 * when correct. Synchronous. */
int quant_cuda_selftest_fast(int64_t mismatch[4], rl_err *e);

/* Synchronize `stream`, then copy the device stats *dstats into *host (the
 * device copy has its own encoding: read it only through this function). */
int quant_stats_fetch_cuda(const quant_stats *dstats, quant_stats *host, void *stream, rl_err *e);
/* The same for the n device stats dstats[0..n) into host[0..n): one copy. */
int quant_stats_fetch_n_cuda(const quant_stats *dstats, quant_stats *host, int64_t n, void *stream,
                             rl_err *e);

/* Device amax over finite values into *d_amax (device FP32); non-finite counted in dstats. */
int quant_amax_bf16_cuda(const uint16_t *x, int64_t n, float *d_amax, quant_stats *dstats,
                         void *stream, rl_err *e);
int quant_fp8_block_weight_cuda(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q,
                                float *scales, const quant_opts *opt, quant_stats *dstats,
                                void *stream, rl_err *e);

/* One tensor of a multi-tensor quantization (device pointers, as the
 * single-tensor call's arguments). */
typedef struct quant_item {
  const uint16_t *x;   /* BF16 [rows][K] */
  int64_t rows, K;
  uint8_t *q;          /* E4M3 [rows][K] */
  void *scales;        /* fp8-block: FP32 as opt->scale_layout says; mxfp8: E8M0 [rows][ceil(K/32)] */
  quant_stats *dstats; /* this tensor's own device stats (may be NULL), reset by the call */
} quant_item;
/* Bytes of device workspace that lets a multi call take n tensors per launch. */
size_t quant_multi_ws_bytes(int n);
/* quant_fp8_block_weight_cuda of n tensors, the same bytes and stats
 * tensor by tensor (one kernel body), in one launch for every tensor the fast
 * kernel takes (K % 16 == 0, 16-byte aligned; more launches when the
 * workspace holds fewer): their descriptors are copied into the device
 * workspace ws (ws_bytes; stream-ordered reuse, so one ws per stream), each
 * CTA finds its tensor by binary search over the prefix sum of block counts.
 * Other tensors take the single-tensor call. items is host memory, read
 * before the call returns; distinct items need distinct dstats slots. */
int quant_fp8_block_weight_multi_cuda(const quant_item *items, int n, const quant_opts *opt, void *ws,
                                      size_t ws_bytes, void *stream, rl_err *e);
/* The same for quant_mxfp8_cuda (scales E8M0 [rows][ceil(K/32)]). */
int quant_mxfp8_multi_cuda(const quant_item *items, int n, const quant_opts *opt, void *ws,
                           size_t ws_bytes, void *stream, rl_err *e);
int quant_fp8_block_act_cuda(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q,
                             float *scales, const quant_opts *opt, quant_stats *dstats,
                             void *stream, rl_err *e);
int quant_mxfp8_cuda(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                     const quant_opts *opt, quant_stats *dstats, void *stream, rl_err *e);
/* NVFP4 computing the tensor amax on the device (two passes over x); *d_s_dec
 * is device FP32. */
int quant_nvfp4_cuda(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                     float *d_s_dec, const quant_opts *opt, quant_stats *dstats, void *stream,
                     rl_err *e);
/* NVFP4 with the tensor amax already on the device (*d_amax, FP32): one pass. */
int quant_nvfp4_amax_cuda(const uint16_t *x, int64_t rows, int64_t K, const float *d_amax,
                          uint8_t *q, uint8_t *scales, float *d_s_dec, const quant_opts *opt,
                          quant_stats *dstats, void *stream, rl_err *e);

/* Device dequantizers to BF16 and/or FP32 (either may be NULL). */
int dequant_fp8_block_weight_cuda(const uint8_t *q, const float *scales, int64_t rows, int64_t K,
                                  float *out_f32, uint16_t *out_bf16, void *stream, rl_err *e);
int dequant_fp8_block_act_cuda(const uint8_t *q, const float *scales, int64_t rows, int64_t K,
                               float *out_f32, uint16_t *out_bf16, void *stream, rl_err *e);
int dequant_mxfp8_cuda(const uint8_t *q, const uint8_t *scales, int64_t rows, int64_t K,
                       float *out_f32, uint16_t *out_bf16, void *stream, rl_err *e);
/* s_dec is a device pointer (as the quantizer wrote it). */
int dequant_nvfp4_cuda(const uint8_t *q, const uint8_t *scales, const float *d_s_dec,
                       int64_t rows, int64_t K, float *out_f32, uint16_t *out_bf16, void *stream,
                       rl_err *e);

/* Device layout conversions (same layouts as the CPU ones above). */
int quant_layout_fp8_act_scales_to_cublaslt_cuda(const float *src, int64_t M, int64_t kb,
                                                 int64_t ld, float *dst, void *stream, rl_err *e);
int quant_layout_fp8_weight_scales_to_cublaslt_cuda(const float *src, int64_t nb, int64_t kb,
                                                    float *dst, void *stream, rl_err *e);
int quant_layout_scales_to_swizzled_cuda(const uint8_t *src, int64_t rows, int64_t cols,
                                         uint8_t *dst, void *stream, rl_err *e);

#ifdef __cplusplus
}
#endif

#endif
