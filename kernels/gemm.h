/* gemm.h — the matrix products of rlrun, one API over two backends:
 *
 *   gemm_q_*     Y[M,N] = X[M,K] · W[N,K]ᵀ on quantized operands (the forward
 *                of every linear layer): BF16, fp8-block (W 128×128, X 1×128),
 *                MXFP8 (1×32), NVFP4 (1×16 + per-tensor S_dec).
 *   gemm_bf16_*  C = op(A)·op(B) in BF16 with FP32 accumulation, row-major, any
 *                transposes, BF16 or FP32 output, optional FP32 accumulation
 *                into C (the backward: dX = dY·W, dW = dYᵀ·X).
 *
 * `_cpu` is the reference (dequantize to FP32, FP32 GEMM in a fixed order:
 * gemm_cpu.c); `_cuda` runs cuBLASLt with a cached plan per shape and format
 * (gemm_cuda.cu). Both take row-major matrices; W is [N][K] as checkpoints
 * store it. In cuBLASLt's column-major terms Y = X·Wᵀ is the TN case (A = W,
 * op T; B = X, op N; D = Yᵀ column-major = Y row-major).
 *
 * What runs on CUDA (gemm_info.path says which did):
 *   BF16                  cuBLASLt BF16, FP32 compute.
 *   FP8_BLOCK (Hopper+)   native block-scaled FP8 (W BLK128x128_32F as A, X VEC128_32F
 *                         as B). M not a multiple of 8 is padded with zero rows; when K
 *                         is not a multiple of 16 or N not a multiple of 8 (cuBLASLt
 *                         refuses those) both operands are dequantized to FP32 and an
 *                         FP32 GEMM runs instead (GEMM_PATH_FP8_DEQUANT_F32).
 *   MXFP8, NVFP4          native on Blackwell (sm_100+: VEC32_UE8M0 / VEC16_UE4M3,
 *                         swizzled scales) — compiled, never run on our Hopper machine;
 *                         on Hopper only with opts.emulate: dequantize to BF16 exactly
 *                         (NVFP4: E2M1 × E4M3 block scale; the two S_dec go into alpha),
 *                         BF16 GEMM with FP32 accumulation. Otherwise an error
 *                         (RL_EXIT_HARDWARE).
 */
#ifndef RLRUN_GEMM_H
#define RLRUN_GEMM_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/qtensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The M the pinned algorithm of a (N, K, format) family is chosen for. */
#define GEMM_PIN_M 8192

/* Which implementation computed a product. */
typedef enum gemm_path {
  GEMM_PATH_NONE,            /* nothing ran (M, N or K was 0, or an error) */
  GEMM_PATH_CPU,             /* the CPU reference */
  GEMM_PATH_BF16,            /* cuBLASLt BF16 */
  GEMM_PATH_FP8_BLOCK,       /* cuBLASLt block-scaled FP8 (Hopper native) */
  GEMM_PATH_FP8_DEQUANT_F32, /* fp8-block shape cuBLASLt refuses: FP32 GEMM on dequantized operands */
  GEMM_PATH_EMULATED,        /* MXFP8/NVFP4 exact emulation: BF16 GEMM on dequantized operands */
  GEMM_PATH_MXFP8,           /* cuBLASLt MXFP8 (Blackwell native) */
  GEMM_PATH_NVFP4            /* cuBLASLt NVFP4 (Blackwell native) */
} gemm_path;

/* What a call did, for reports and tests (may be passed as NULL). */
typedef struct gemm_info {
  gemm_path path;
  int padded_m;   /* the M the GEMM ran with (M rounded up to 8 on the fp8-block path) */
  int pinned;     /* 1 when the pinned per-(N, K, format) algorithm ran */
  int algo_id;    /* cuBLASLt CUBLASLT_ALGO_CONFIG_ID of the algorithm (-1 on CPU) */
  int splitk;     /* its CUBLASLT_ALGO_CONFIG_SPLITK_NUM (1 = no split-K) */
} gemm_info;

/* Name of a path: "cpu", "bf16", "fp8-block", "fp8-block→f32-dequant",
 * "emulated-bf16", "mxfp8", "nvfp4". */
const char *gemm_path_name(gemm_path p);

/* Options of the quantized product; NULL = all zero. */
typedef struct gemm_opts {
  int emulate;  /* allow the MXFP8/NVFP4 emulation where there is no native GEMM */
  int pin_algo; /* use the pinned algorithm of the (N, K, format) family and M bucket (CUDA):
                   rows bitwise independent of M */
  int out_f32;  /* y is FP32 [M][N] instead of BF16 (tests; FP32 consumers) */
  void *stream; /* cudaStream_t (NULL: the default stream) */
} gemm_opts;

/* y[M][N] = x · wᵀ with M = x->rows, N = w->rows, K = x->cols = w->cols.
 * x and w have the same format (BF16 x with BF16 w, …); FP8_BLOCK x is 1×128,
 * w is 128×128. y is BF16 (or FP32 with opts.out_f32), row-major, in the
 * memory of x and w. Returns 0 or an rl_exit code with the message in e. */
int gemm_q_cpu(void *y, const qtensor *x, const qtensor *w, const gemm_opts *o, gemm_info *info,
               rl_err *e);
int gemm_q_cuda(void *y, const qtensor *x, const qtensor *w, const gemm_opts *o, gemm_info *info,
                rl_err *e);
/* Dispatch on where the operands are (x->on_device). */
int gemm_q(void *y, const qtensor *x, const qtensor *w, const gemm_opts *o, gemm_info *info,
           rl_err *e);

/* C[m][n] (+)= op(A)[m][k] · op(B)[k][n], row-major BF16 operands:
 * A is [m][k], or [k][m] when trans_a; B is [k][n], or [n][k] when trans_b. */
typedef struct gemm_bf16_args {
  int64_t m, n, k;
  int trans_a, trans_b;
  const uint16_t *a, *b;
  void *c;       /* [m][n]: BF16, or FP32 when c_f32 */
  int c_f32;
  float beta;    /* FP32 C only: C = beta·C + op(A)·op(B) (gradient accumulation: 1) */
  int on_device; /* 1: a, b, c are CUDA device pointers */
  void *stream;  /* cudaStream_t (NULL: default) */
} gemm_bf16_args;

/* Validate the arguments (sizes, pointers, beta only with FP32 C). */
int gemm_bf16_check(const gemm_bf16_args *g, rl_err *e);
int gemm_bf16_cpu(const gemm_bf16_args *g, rl_err *e);
int gemm_bf16_cuda(const gemm_bf16_args *g, gemm_info *info, rl_err *e);
/* Dispatch on g->on_device. */
int gemm_bf16(const gemm_bf16_args *g, gemm_info *info, rl_err *e);

/* Validate a product's operands: formats, shapes, layouts, pointers. */
int gemm_q_check(const qtensor *x, const qtensor *w, rl_err *e);

/* The current CUDA device, with the GEMM context of it ready (cuBLASLt
 * handle, workspace); RL_EXIT_HARDWARE with a message when no GPU is usable. */
int gemm_cuda_device(int *dev, rl_err *e);

/* CUDA plan cache: number of cached plans, and release of every plan and
 * buffer (at exit or between tests). No-ops in a CPU-only build. */
int gemm_cuda_plan_count(void);
void gemm_cuda_release(void);

/* ---------------------------------------------------------------- small-M BF16 GEMM
 * The decode step's linear layers (M = active sequences, 1 … 256) on tensor
 * cores without cuBLASLt (kernels/gemm_small_cuda.cu):
 *
 *   y[m][n] = f32(bf16_rne(Σ_k x[m][k]·w[n][k]))
 *
 * x [M][K] and w [N][K] BF16 row-major (w as checkpoints store it), FP32
 * accumulation, the sum rounded to BF16 (RNE) and stored as FP32 — what
 * linear_forward's BF16 output followed by a BF16 → FP32 conversion gives, in
 * one kernel. Each weight element is read from HBM once per call.
 *
 * Batch invariance: a CTA owns 32 or 64 weight rows × one K slice; the slices
 * (count and boundaries) are a function of (N, K) only (gemm_small_plan), each
 * slice is summed in a fixed order by mma.sync, and the FP32 partials of the
 * slices are added in slice order by the last CTA of each tile (an integer
 * arrival counter; no float atomics). So y[m][n] has the same bits whatever M
 * and the other rows are.
 *
 * Requirements (else RL_EXIT_USAGE): 1 ≤ M ≤ GEMM_SMALL_MAX_M (M = 0 or N = 0
 * does nothing), K % 8 == 0, x and w 16-byte aligned, y 4-byte aligned,
 * device pointers. `stream` is a cudaStream_t (NULL: the per-thread default
 * stream). The workspace (partials, counters) is per device, grown on demand
 * (device_buffers_changed() when it moves) and shared: one stream per device,
 * as for linear.h. Capturable in a CUDA graph once it has grown. */
#define GEMM_SMALL_MAX_M 256
#define GEMM_SMALL_BN 32    /* weight rows of a tile, as the K split counts them */
#define GEMM_SMALL_BK 128   /* K per pipeline stage */
#define GEMM_SMALL_CTAS 264 /* CTAs the K split aims at (2 per SM of an H100/H200) */
#define GEMM_SMALL_MAX_SLICES 32

/* The CTA target of the K split: RLRUN_SMALL_GEMM_CTAS (a tuning knob, 1 …
 * 65536) or GEMM_SMALL_CTAS. */
int gemm_small_ctas(void);

/* The K split of an (N, K) product: `slices` slices of `slice_k` elements (a
 * multiple of GEMM_SMALL_BK; the last slice may be shorter). As many slices as
 * bring ceil(N / GEMM_SMALL_BN) tiles × slices up to gemm_small_ctas(), but
 * each slice at least two stages long where K allows, and at most
 * GEMM_SMALL_MAX_SLICES slices. Depends on N and K only (batch invariance). */
void gemm_small_plan(int64_t N, int64_t K, int *slices, int64_t *slice_k);

/* The argument checks of gemm_small_bf16_cuda (no device access). */
int gemm_small_check(const float *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                     int64_t K, rl_err *e);

int gemm_small_bf16_cuda(float *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                         int64_t K, void *stream, rl_err *e);

/* Free the workspace of gemm_small_bf16_cuda (also done by gemm_cuda_release). */
void gemm_small_release(void);

#ifdef __cplusplus
}
#endif

#endif
