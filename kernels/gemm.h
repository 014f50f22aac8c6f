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
  GEMM_PATH_NVFP4,           /* cuBLASLt NVFP4 (Blackwell native) */
  GEMM_PATH_FP8_BLOCK_FUSED  /* fp8-block, x quantized inside the GEMM (gemm_fp8q_cuda, Hopper) */
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
 * Three entry points, one kernel:
 *   gemm_small_bf16_cuda         one weight matrix.
 *   gemm_small_bf16_group_cuda   1 … GEMM_SMALL_MAX_SEGS matrices that share x and K
 *                                (the decode step's q, k, v) in one launch, each
 *                                segment written to its own y [M][N_i].
 *   gemm_small_bf16_swiglu_cuda  gate and up projections and the activation in one
 *                                launch: act[m][n] = bf16_rne(silu(g)·u) (FP32 product,
 *                                __fmul_rn) with g, u the BF16-rounded sums of wg and wu,
 *                                silu(g) = g / (1 + e^−g) — the function
 *                                ops_swiglu_forward_cuda uses (kernels/ops_cuda_util.cuh).
 *                                act is BF16 [M][N]: the down projection's input.
 *
 * Batch invariance: a CTA owns 32 or 64 weight rows (of each of wg, wu for the
 * SwiGLU) × one K slice; the slices (count and boundaries) are a function of
 * the shapes only (gemm_small_plan of the launch's weight rows: N for one
 * matrix, Σ_i ceil(N_i / GEMM_SMALL_BN)·GEMM_SMALL_BN for a group, the group
 * {wg, wu} for the SwiGLU), each slice is summed in a fixed order by the tensor
 * cores (wgmma on sm_90a, 16 K a step in K order), and the FP32 partials of the
 * slices are added in slice order 0, 1, …, S−1 (no float atomics). So a row's bits never depend on M or on the other rows.
 * Consequences the tests check: a one-segment group == gemm_small_bf16_cuda, and
 * the SwiGLU == ops_swiglu_forward_cuda of the group {wg, wu}'s outputs, bitwise.
 * The tile width, the CTA shape and the reduction path (below) are chosen by M
 * and the knobs, but none of them changes a sum or its order.
 *
 * Requirements (else RL_EXIT_USAGE): 1 ≤ M ≤ GEMM_SMALL_MAX_M (M = 0 or N = 0
 * does nothing), K % 8 == 0, x and w 16-byte aligned, y 4-byte aligned (act
 * 2-byte), device pointers. `stream` is a cudaStream_t (NULL: the per-thread
 * default stream). Split-K partials are reduced either inside a thread-block
 * cluster (the S CTAs of a tile, S ≤ 8: through distributed shared memory, no
 * workspace) or through a per-device workspace (partials, counters), grown on
 * demand (device_buffers_changed() when it moves) and shared: one stream per
 * device, as for linear.h. Capturable in a CUDA graph once it has grown (one
 * eager call of the shape first). */
#define GEMM_SMALL_MAX_M 256
#define GEMM_SMALL_BN 32    /* weight rows of a tile, as the K split counts them */
#define GEMM_SMALL_BK 128   /* K per pipeline stage */
/* CTAs the K split aims at: 1.5 per SM of an H100/H200. One whole-step sweep (H100,
 * 2026-12-06, decode-step GEMM graphs, µs at M = 1 / 8 / 64): 132 737 / 757 / 1,027–1,056,
 * 198 726 / 734 / 956, 264 987 / 1,015 / 907 — 198 is the fastest at the M the engine
 * gives this kernel where 264 loses a third at M ≤ 8 (a rollout's tail); bench_rollout
 * bf16 batch 64 30,513 / 30,507 tok/s against 29,604 / 29,589 with 132. A constant (not
 * the device's SM count): the K split, so a row's bits, must be the same on every GPU. */
#define GEMM_SMALL_CTAS 198
#define GEMM_SMALL_MAX_SLICES 32
#define GEMM_SMALL_MAX_SEGS 4
#define GEMM_SMALL_MAX_CLUSTER 8 /* most slices reduced inside a cluster (portable size) */

/* Tuning knobs, read once from the environment (rl_env_*: a value a knob does
 * not take leaves its default, with a warning):
 *   RLRUN_SMALL_GEMM_CTAS        1 … 65536, default GEMM_SMALL_CTAS: the CTA target
 *                                of the K split. CHANGES THE SUMS (a different plan).
 *                                Measured with the wgmma kernel (H100, 2026-12-05,
 *                                bench_rollout bf16 batch 64 / decode-step GEMM graphs):
 *                                40: 23,741 tok/s; 66: 25,180; 132: 26,626; 180:
 *                                26,819; 264: 27,433 (M = 64 GEMMs 1,017 vs 1,080 µs,
 *                                but M = 8 1,172 vs 870: small batches — a rollout's
 *                                tail — pay more than batch 64 gains; default 132
 *                                until 2026-12-06, 198 since: see GEMM_SMALL_CTAS);
 *                                396 / 528: ~22,100 (more than 8 slices: no cluster).
 *   RLRUN_SMALL_GEMM_MIN_STAGES  1 … 16, default 2: at most ceil(stages / min_stages)
 *                                slices (stages: 128-K stages of K), i.e. slices of
 *                                about min_stages stages or more. CHANGES THE SUMS.
 *   RLRUN_SMALL_GEMM_BN          0 (auto), 32, 64: weight rows of a CTA at M > 32 in
 *                                one-matrix and group launches. Auto: 64 (and 64 at
 *                                any M when 64-row tiles alone give ≥ ctas CTAs:
 *                                lm_head); 64 halves the L2 reads of x per weight
 *                                byte (decode-step GEMMs at M = 64: 1,378 µs against
 *                                1,468 with 32, H100 2026-12-05). With the wgmma kernel
 *                                and the CTA target 198, 32 makes the GEMMs alone
 *                                faster at M = 64 (step graphs 914 vs 962 µs) but the
 *                                whole decode step slower (bench_rollout bf16 batch 64
 *                                30,550 / 30,648 vs 30,811 / 31,094 tok/s; H100
 *                                2026-12-06): 64 stays. Bits unchanged.
 *   RLRUN_SMALL_GEMM_REDUCE      cluster (default), global: the split-K reduction.
 *                                cluster: the S CTAs of a tile (S ≤ GEMM_SMALL_MAX_CLUSTER)
 *                                form a thread-block cluster; each keeps its FP32 partial
 *                                in shared memory and, after one cluster barrier, sums
 *                                1/S of the tile's outputs over the S partials, read
 *                                through distributed shared memory (no workspace, no
 *                                counters, no global round trip). Where S > 8 or the GPU
 *                                cannot schedule the cluster: global. global: partials
 *                                through the workspace, an arrival counter per tile, the
 *                                last CTA sums them. Bits unchanged.
 *   RLRUN_SMALL_GEMM_PDL         1 (default), 0: launch with programmatic dependent
 *                                launch. A CTA starts copying its first weight stages
 *                                into shared memory, then waits (griddepcontrol.wait)
 *                                for the previous kernel to finish before it touches x,
 *                                y or the workspace; it lets the next grid launch once
 *                                its main loop is done (the decode step's RMSNorm and
 *                                attention-combine kernels let it launch at their
 *                                start). Bits unchanged. GEMM-only step graphs gain
 *                                (H100, 2026-12-05, wgmma kernel: M = 64 1,059 vs 1,094
 *                                µs, M = 1 743 vs 856); the whole decode step gains only
 *                                with the norms and rck_qkv_post launched as dependents
 *                                too (RLRUN_OPS_PDL=1, kernels/ops.h): bench_rollout bf16
 *                                batch 64 28,376 vs 27,340 tok/s in one call (either
 *                                alone: no gain); again 28,604 / 28,766 vs 27,569 /
 *                                27,556 (2026-12-05, sixth session), the GPU tests
 *                                passing with the pair on: both default on since.
 * gemm_small_tune_set replaces them for the rest of the process (benchmarks and tests
 * sweep them in one run); not thread-safe: call it while no GEMM is being launched. */
enum { GEMM_SMALL_REDUCE_CLUSTER, GEMM_SMALL_REDUCE_GLOBAL };
typedef struct gemm_small_tune {
  int ctas;       /* RLRUN_SMALL_GEMM_CTAS */
  int min_stages; /* RLRUN_SMALL_GEMM_MIN_STAGES */
  int bn;         /* RLRUN_SMALL_GEMM_BN: 0, 32 or 64 */
  int reduce;     /* RLRUN_SMALL_GEMM_REDUCE: GEMM_SMALL_REDUCE_* */
  int pdl;        /* RLRUN_SMALL_GEMM_PDL: 1 = programmatic dependent launch (default 1) */
} gemm_small_tune;

/* The knobs in force (the environment's, or the last gemm_small_tune_set). */
gemm_small_tune gemm_small_tune_get(void);
/* Replace the knobs (values out of range fall back to the defaults); NULL: back
 * to the environment's. */
void gemm_small_tune_set(const gemm_small_tune *t);
/* "ctas=198 min_stages=2 bn=auto reduce=cluster pdl=0" (for reports); buf of ≥ 80 bytes. */
const char *gemm_small_tune_str(const gemm_small_tune *t, char *buf, size_t n);

/* The CTA target of the K split: gemm_small_tune_get().ctas. */
int gemm_small_ctas(void);

/* The K split of a product with N weight rows: `slices` slices of `slice_k`
 * elements (a multiple of GEMM_SMALL_BK; the last slice may be shorter). As many
 * slices as bring ceil(N / GEMM_SMALL_BN) tiles × slices up to gemm_small_ctas(),
 * but at most ceil(stages / min_stages) (with the default 2: every slice at least
 * two stages long where K has two) and at most GEMM_SMALL_MAX_SLICES. Depends on N
 * and K only (batch invariance). */
void gemm_small_plan(int64_t N, int64_t K, int *slices, int64_t *slice_k);
/* The K-split rule both small-M GEMMs (BF16 and fp8-block) plan with: K in stages of
 * bk, N in tiles of row_tile rows, as many slices as bring tiles × slices up to
 * ctas, at most ceil(stages / min_stages) and max_slices, whole stages a slice. */
void gemm_small_split(int64_t N, int64_t K, int64_t row_tile, int64_t bk, int ctas, int min_stages, int max_slices,
                      int *slices, int64_t *slice_k);

/* One matrix of a grouped launch: y [M][N] = x · wᵀ, w [N][K]. */
typedef struct gemm_small_seg {
  float *y;
  const uint16_t *w;
  int64_t N;
} gemm_small_seg;

/* The weight rows the K split of a group counts: Σ ceil(N_i / GEMM_SMALL_BN)·GEMM_SMALL_BN
 * (a tile never straddles two segments). The group's plan is
 * gemm_small_plan(gemm_small_group_rows(…), K); the SwiGLU's is that of the group
 * {wg, wu}: gemm_small_plan(2·ceil(N / GEMM_SMALL_BN)·GEMM_SMALL_BN, K). */
int64_t gemm_small_group_rows(const gemm_small_seg *seg, int n_seg);

/* The argument checks of the entry points (no device access); gemm_small_b_check:
 * gemm_small_bf16_b_cuda's, its BF16 y 2-byte aligned. */
int gemm_small_check(const float *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                     int64_t K, rl_err *e);
int gemm_small_b_check(const uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                       int64_t K, rl_err *e);
int gemm_small_group_check(const gemm_small_seg *seg, int n_seg, const uint16_t *x, int64_t M,
                           int64_t K, rl_err *e);
int gemm_small_swiglu_check(const uint16_t *act, const uint16_t *x, const uint16_t *wg,
                            const uint16_t *wu, int64_t M, int64_t N, int64_t K, rl_err *e);

int gemm_small_bf16_cuda(float *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                         int64_t K, void *stream, rl_err *e);
/* gemm_small_bf16_cuda's result stored as the BF16 it is (y [M][N] BF16, 2-byte
 * aligned): the same bits as converting that FP32 output to BF16, half the bytes
 * written (the decode step's lm_head: 64 × 151,936 logits). */
int gemm_small_bf16_b_cuda(uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                           int64_t K, void *stream, rl_err *e);
int gemm_small_bf16_group_cuda(const gemm_small_seg *seg, int n_seg /* 1 … GEMM_SMALL_MAX_SEGS */,
                               const uint16_t *x, int64_t M, int64_t K, void *stream, rl_err *e);
int gemm_small_bf16_swiglu_cuda(uint16_t *act, const uint16_t *x, const uint16_t *wg,
                                const uint16_t *wu, int64_t M, int64_t N, int64_t K, void *stream,
                                rl_err *e);

/* ---- the same kernel on fp8-block operands (the decode step's unified fp8-block
 * linears): y[m][n] = bf16_rne(Σ_kb fma-chain of part_kb · (sx[m][kb] ·_rn sw[n/128][kb]))
 * where part_kb = Σ_{k in block kb} qx[m][k]·qw[n][k] on the tensor cores (wgmma E4M3,
 * 4 × 32 K in order, from zero: FP8 accumulation inside the block, as cuBLASLt's),
 * then acc = fmaf(part_kb, sx·sw, acc) block by block in K order within a slice and the
 * slices' FP32 partials added in slice order — the scale step of gemm_small_fp8_block.
 * x arrives quantized (qx E4M3 [M][K], the bytes quant_fp8_block_act_cuda or the
 * producers' q8 kernels write; sx FP32 at xs[m·xs_rs + kb·xs_ks]: row-major [M][kb]
 * is (kb, 1), cuBLASLt's VEC128 layout of an ops_fp8_act is (1, scale_ld)), so no
 * quantizer runs here; w is the sync's fp8-block weight (E4M3 [N][K], 128×128 scales,
 * ROWMAJOR or HOPPER_WEIGHT). Output: FP32 of the BF16-rounded sum (out_bf16 = 0) or
 * that BF16 itself (out_bf16 = 1). The K split, tiles, reductions and knobs are
 * gemm_small_bf16_group_cuda's (gemm_small_plan of the group's rows): batch invariant
 * in the same sense. Not cuBLASLt's summation order: its rows differ from
 * linear_forward's by FP8-accumulation noise (tests: gemm_small_fp8_gpu_test).
 * sm_90 only (wgmma); elsewhere RL_EXIT_HARDWARE (use linear_forward). K % 16 == 0;
 * xq and each weight's data 16-byte aligned, scales and y 4-byte (BF16 y 2-byte). */
typedef struct gemm_small_seg8 {
  void *y;          /* [M][N] FP32 or BF16 */
  const qtensor *w; /* fp8-block, on the device, cols == K */
} gemm_small_seg8;
int gemm_small_fp8_group_check(const gemm_small_seg8 *seg, int n_seg, const uint8_t *xq, const float *xs,
                               int64_t M, int64_t K, int out_bf16, rl_err *e);
/* 1 when the current device runs gemm_small_fp8_group_cuda (a CUDA build on a
 * compute capability 9.0 GPU); 0 otherwise, and in a build without CUDA. */
int gemm_small_fp8_group_supported(void);
int gemm_small_fp8_group_cuda(const gemm_small_seg8 *seg, int n_seg /* 1 … GEMM_SMALL_MAX_SEGS */,
                              const uint8_t *xq, const float *xs, int64_t xs_rs, int64_t xs_ks, int64_t M,
                              int64_t K, int out_bf16, void *stream, rl_err *e);

/* ---- the SwiGLU pair of that form with its output quantized for the next GEMM
 * (the decode step's gate/up → down in the unified fp8-block mode): g and u are
 * gemm_small_fp8_group_cuda's outputs of the group {wg, wu} on the same x, bit for
 * bit (the same plan, tiles of 32 rows of each matrix); act [M][N] BF16 =
 * bf16(silu(g)·u) as gemm_small_bf16_swiglu_cuda's epilogue computes it; and act's
 * fp8-block quantization, the bytes ops_swiglu_forward_q8_bx_cuda writes for that
 * act: codes qo->q [qo->rows_pad][N] (row stride N), scales at
 * qo->scales[kb·qo->scale_ld + m] (cuBLASLt's VEC128 layout; rows [M, rows_pad):
 * codes and scales 0). One launch instead of the group and the SwiGLU's: the four
 * tiles of a 128-column block share their rows' amax inside a thread-block cluster
 * (or, where none can hold them, the CTA that finishes the block's last tile, by an
 * arrival counter, quantizes it). Requirements (RL_EXIT_USAGE): gemm_small_fp8_group_check of
 * both weights (same shape, N × K), K ≥ 16, N % 16 == 0, M ≤ rows_pad ≤ M rounded
 * up to 8, scale_ld ≥ rows_pad, act and q 16-byte aligned, scales 4-byte. One call
 * at a time per device (the counters are the device's). sm_90 only. */
typedef struct gemm_small_q8out {
  uint8_t *q;
  float *scales;
  int64_t scale_ld;
  int rows_pad, ue8m0;
} gemm_small_q8out;
int gemm_small_fp8_swiglu_check(const uint16_t *act, const gemm_small_q8out *qo, const qtensor *wg,
                                const qtensor *wu, const uint8_t *xq, const float *xs, int64_t M, int64_t K,
                                rl_err *e);
int gemm_small_fp8_swiglu_cuda(uint16_t *act, const gemm_small_q8out *qo, const qtensor *wg,
                               const qtensor *wu, const uint8_t *xq, const float *xs, int64_t xs_rs,
                               int64_t xs_ks, int64_t M, int64_t K, void *stream, rl_err *e);

/* Free the workspace of the small-M GEMMs (also done by gemm_cuda_release). */
void gemm_small_release(void);

/* ---------------------------------------------------------------- fp8-block GEMM, quantizing x
 * y [M][N] (BF16) = x · wᵀ for an fp8-block 128×128 weight, x BF16 [M][K] quantized
 * inside the GEMM (kernels/gemm_fp8q_cuda.cu): linear_forward's fp8-block product
 * without its separate activation pass. Numerics, in order:
 *   1. qx, sx: x's 1×128 blocks quantized with the quantizer's arithmetic (integer
 *      amax of the |bf16| bits, fmt_fp8_block_scale, E4M3_satfinite(RN(x / sx))) —
 *      BIT-IDENTICAL to what quant_fp8_block_act_cuda writes for linear_forward; a
 *      block holding Inf/NaN is poisoned as there (sx = NaN: its row of y is NaN).
 *   2. part = Σ_{k in block kb} qx·qw: 4 wgmma m64n128k32 E4M3 from zero.
 *   3. acc = fmaf(part, sx[m][kb] ·_rn sw[n/128][kb], acc), kb in order from +0.
 *   4. y = bf16_rne(acc).
 * Against linear_forward (the same qx, sx, qw, sw through cuBLASLt): steps 2–4 are
 * the order of the small-M fp8 kernels, bitwise cuBLASLt's on most outputs; the rest
 * differ in accumulation order only. A row's bits do not depend on M or its
 * neighbours (no K split). pol->ue8m0 is the only field read.
 * Requirements (else RL_EXIT_USAGE): w fp8-block 128×128 on the device, scales
 * ROWMAJOR or HOPPER_WEIGHT; K = w->cols a multiple of 16 (a short last block is
 * the part that exists); 0 ≤ M, N, K < 2^31; x and w->data 16-byte aligned, y 2-byte.
 * RL_EXIT_HARDWARE off sm_90 (gemm_fp8q_supported() says 0) or without the driver's
 * tensor-map encoder. Asynchronous on `stream` (NULL: the per-thread default stream);
 * capturable in a CUDA graph (the tensor maps travel in the kernel's parameters).
 * EXPERIMENTAL: slower than the quantizer + cuBLASLt so far (the file's top says what
 * was measured and what is left); linear_forward uses it only under
 * RLRUN_LINEAR_FP8Q=1. */
int gemm_fp8q_check(const uint16_t *y, const uint16_t *x, const qtensor *w, int64_t M, rl_err *e);
int gemm_fp8q_supported(void);
/* The CTAs of gemm_fp8q_cuda in clusters of 1, 2 or 4 on neighbouring column tiles,
 * which quantize each row block once for the cluster (bit-neutral). RLRUN_FP8Q_CLUSTER
 * = 1, 2 or 4 fixes the size; unset or 0 is automatic (another value: a warning, automatic):
 * gemm_fp8q_cluster_pick. set ≥ 0 overrides (1, 2 and 4 as such, anything else 0),
 * −1 asks. */
int gemm_fp8q_cluster(int set);
/* The size a launch uses: cl if 1, 2 or 4, else (automatic) 4 when the mtiles × ntn
 * tiles (one CTA each) fit one wave of n_sm SMs and 2 when they do not (H100, sessions
 * 19 and 20: clusters of 4 were as fast as pairs or faster in one wave, slower over
 * many); then halved until no wider than the ntn column tiles. */
int gemm_fp8q_cluster_pick(int cl, int64_t mtiles, int64_t ntn, int n_sm);
int gemm_fp8q_cuda(uint16_t *y, const uint16_t *x, const qtensor *w, int64_t M, const quant_policy *pol,
                   void *stream, rl_err *e);

/* ---------------------------------------------------------------- small-M fp8-block GEMM
 * The decode step's linear layers in the unified fp8-block mode (M = active
 * sequences, 1 … 64) in one kernel (kernels/gemm_small_fp8_cuda.cu), instead of
 * linear_forward's activation quantizer + cuBLASLt block-scaled FP8 GEMM + the
 * BF16 → FP32 conversion:
 *
 *   y[m][n] = f32(bf16_rne(Σ_kb (sx[m][kb]·sw[n/128][kb]) · Σ_{k in block kb} qx[m][k]·qw[n][k]))
 *
 * w is the fp8-block weight as linear_forward receives it (device qtensor: E4M3
 * [N][K], block_rows 128, FP32 scales ROWMAJOR [ceil(N/128)][ceil(K/128)] or
 * HOPPER_WEIGHT [ceil(N/128)][roundup(ceil(K/128), 4)] — what sync makes); x is
 * BF16 [M][K]; y FP32 [M][N]. The design is gemm_small_bf16_cuda's before it moved
 * to wgmma (weight rows × K slices per CTA, cp.async ring, mma.sync, ordered
 * split-K reduction).
 *
 * Numerics, in order:
 *   1. qx, sx: each CTA quantizes the x rows × 128-K blocks it multiplies with the
 *      device functions of quant_cuda_dev.cuh in k_quant_rows' order: amax = integer
 *      max of the |bf16| bit patterns of the block (the part of a short last block
 *      that exists), sx = fmt_fp8_block_scale(amax, pol->ue8m0) (amax/448 correctly
 *      rounded, 1 for amax = 0, 2^ceil(log2(amax/448)) with ue8m0), qx =
 *      E4M3_satfinite(RN(x / sx)) (Markstein's exact division, the cvt instruction).
 *      A block holding Inf/NaN is poisoned as the quantizer poisons it (sx = NaN,
 *      qx = 0), so its row of y is NaN, as linear_forward's is on CUDA (which does not
 *      report it either). qx and sx are BIT-IDENTICAL to what quant_fp8_block_act_cuda
 *      (hence quant_fp8_block_act_cpu) writes for linear_forward: nothing to refuse.
 *      gemm_small_fp8_block_probe_cuda returns them (tests).
 *   2. partial[m][n][kb] = Σ_{k in kb} qx·qw: four mma.sync m16n8k32 E4M3 × E4M3 → FP32
 *      (two 64-K chunks, each two k32 MMAs, in K order) from 0 — the tensor core's own
 *      accumulation (on Hopper fewer bits than FP32 inside an MMA; exact whenever the
 *      block sum needs ≤ ~13 significant bits).
 *   3. acc = fmaf(partial, fmul_rn(sx[m][kb], sw[n/128][kb]), acc), kb in order over
 *      the K slice, acc starting at +0.
 *   4. y = f32(bf16_rne(((acc_0 + acc_1) + …) + acc_{S−1})) over the S slices of
 *      gemm_small_fp8_plan(N, K), added in slice order (FP32, __fadd_rn).
 * Against linear_forward (cuBLASLt on the same qx, sx, qw, sw, BF16 output, then
 * FP32): the same products and scales; steps 2–4 differ in accumulation order and
 * final rounding only (cuBLASLt's order is its own), so results agree within the
 * tolerance tests/gpu/gemm_small_fp8_gpu_test.c states, not bitwise. pol->ue8m0 is
 * the only field read: pol->pin_algo (rows bitwise equal to the training GEMM) is not
 * honoured — this kernel has its own batch-invariant order; a caller that needs
 * pin_algo's bits calls linear_forward.
 *
 * Batch invariance as gemm_small_bf16_cuda: the K split is a function of (N, K)
 * only (and the CTAS/MIN_STAGES knobs), slices are added in slice order by one CTA
 * (integer counter or cluster barrier, no float atomics), the quantization of row m
 * reads row m only: a row's bits never depend on M or its neighbours. Tile width,
 * CTA shape, reduction path and PDL change no sum.
 *
 * Requirements (else RL_EXIT_USAGE, with a message that says to use linear_forward):
 * 0 ≤ M ≤ GEMM_SMALL_FP8_MAX_M (M = 0 or N = 0 does nothing; K = 0 writes zeros),
 * K % 16 == 0 (K % 128 need not be 0: the short last block is the part that exists,
 * as FORMATS.md says), N any; x and w->data 16-byte aligned, w->scales and y 4-byte
 * aligned, device pointers. `stream`: cudaStream_t (NULL: the per-thread default
 * stream). Split-K partials go through a cluster (S ≤ 8) or a per-device workspace
 * (grown on demand, device_buffers_changed() when it moves; one stream per device, as
 * linear.h); capturable in a CUDA graph once grown (one eager call of the shape first).
 *
 * PDL (knob RLRUN_SMALL_FP8_PDL, default 1): the kernel is launched with programmatic
 * stream serialization. Before griddepcontrol.wait it only lets the next kernel launch
 * and asks L2 to prefetch its weight slice (no data enters the SM, so a weight written
 * by the previous kernel is never read stale); x, y, the scales, the workspace are
 * touched after the previous kernel has completed. A kernel after it that is launched
 * normally waits for it to complete, as always. */
#define GEMM_SMALL_FP8_MAX_M 64
#define GEMM_SMALL_FP8_BK 128        /* K per pipeline stage = one scale block */
#define GEMM_SMALL_FP8_PLAN_ROWS 32  /* weight rows of a tile, as the K split counts them */
#define GEMM_SMALL_FP8_CTAS 264      /* CTAs the K split aims at (2 per SM of an H100/H200) */
#define GEMM_SMALL_FP8_MIN_STAGES 2  /* fewest 128-K stages per slice where K allows */
#define GEMM_SMALL_FP8_MAX_SLICES 32
#define GEMM_SMALL_FP8_MAX_CLUSTER 8 /* most slices reduced inside a cluster (portable size) */

/* Tuning knobs, read once from the environment (rl_env_*: a value a knob does
 * not take leaves its default, with a warning):
 *   RLRUN_SMALL_FP8_CTAS        1 … 65536, default GEMM_SMALL_FP8_CTAS: the CTA target of
 *                               the K split. CHANGES THE SUMS (another plan).
 *   RLRUN_SMALL_FP8_MIN_STAGES  1 … 16, default GEMM_SMALL_FP8_MIN_STAGES. CHANGES THE SUMS.
 *   RLRUN_SMALL_FP8_BN          0 (auto), 32, 64: weight rows of a CTA. Auto: 64 where
 *                               64-row tiles alone give ≥ ctas CTAs (lm_head), and at M > 32;
 *                               else 32. 64 halves the x reads and x quantizations per weight
 *                               byte. Bits unchanged.
 *   RLRUN_SMALL_FP8_REDUCE      cluster (default) or global: the split-K reduction
 *                               (gemm_small's two paths). Bits unchanged.
 *   RLRUN_SMALL_FP8_PDL         1 (default) or 0: programmatic dependent launch. Bits unchanged.
 * gemm_small_fp8_tune_set replaces them for the rest of the process (benchmarks, tests);
 * not thread-safe: call it while no GEMM is being launched. */
enum { GEMM_SMALL_FP8_REDUCE_CLUSTER, GEMM_SMALL_FP8_REDUCE_GLOBAL };
typedef struct gemm_small_fp8_tune {
  int ctas;       /* RLRUN_SMALL_FP8_CTAS */
  int min_stages; /* RLRUN_SMALL_FP8_MIN_STAGES */
  int bn;         /* RLRUN_SMALL_FP8_BN: 0, 32 or 64 */
  int reduce;     /* RLRUN_SMALL_FP8_REDUCE: GEMM_SMALL_FP8_REDUCE_* */
  int pdl;        /* RLRUN_SMALL_FP8_PDL: 0 or 1 */
} gemm_small_fp8_tune;

/* The knobs in force; replace them (NULL: back to the environment's); "ctas=264
 * min_stages=2 bn=auto reduce=cluster pdl=1" (buf of ≥ 96 bytes). CUDA builds only. */
gemm_small_fp8_tune gemm_small_fp8_tune_get(void);
void gemm_small_fp8_tune_set(const gemm_small_fp8_tune *t);
const char *gemm_small_fp8_tune_str(const gemm_small_fp8_tune *t, char *buf, size_t n);

/* The K split of an N × K fp8-block product: `slices` slices of `slice_k` elements (a
 * multiple of 128; the last may be shorter): as many as bring ceil(N / 32) tiles ×
 * slices up to the CTA target, each at least min_stages 128-K stages where K allows,
 * at most GEMM_SMALL_FP8_MAX_SLICES. Depends on N, K and the two knobs only. CUDA builds only. */
void gemm_small_fp8_plan(int64_t N, int64_t K, int *slices, int64_t *slice_k);

/* The argument checks of the entry points (no device access). CUDA builds only. */
int gemm_small_fp8_check(const float *y, const uint16_t *x, const qtensor *w, int64_t M,
                         const quant_policy *pol, rl_err *e);

/* y [M][N] (FP32) = the product above; pol: the policy linear_forward would get. */
int gemm_small_fp8_block_cuda(float *y, const uint16_t *x, const qtensor *w, int64_t M,
                              const quant_policy *pol, void *stream, rl_err *e);
/* The same, and the activation as the kernel quantized and multiplied it: qx [M][K] E4M3
 * (16-byte aligned) and sx [M][ceil(K/128)] FP32 row-major, device memory (a test hook). */
int gemm_small_fp8_block_probe_cuda(float *y, uint8_t *qx, float *sx, const uint16_t *x,
                                    const qtensor *w, int64_t M, const quant_policy *pol,
                                    void *stream, rl_err *e);

/* Free the workspace of the small-M fp8-block GEMM (also done by gemm_cuda_release). */
void gemm_small_fp8_release(void);

#ifdef __cplusplus
}
#endif

#endif
