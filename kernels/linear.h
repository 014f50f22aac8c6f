/* linear.h — the one function every linear layer of the model calls, in
 * rollout and in training alike, so that both share one quantization path:
 *
 *   linear_forward   out[M,N] = x[M,K] · Wᵀ, W [N,K] already quantized (a qtensor
 *                    made at sync); x (BF16) is quantized on the fly in W's format
 *                    with the quantizers of quant.h: fp8-block 1×128, mxfp8 1×32,
 *                    nvfp4 1×16 (per-tensor S_dec from x's amax). BF16 output.
 *   linear_backward  dX = dY·W and dW = dYᵀ·X in BF16 from the BF16 master weight
 *                    and the saved BF16 input, FP32 accumulation; dW as BF16 and/or
 *                    accumulated into an FP32 buffer (gradient accumulation).
 *
 * Memory: host pointers when w->on_device is 0 (the CPU reference), CUDA
 * device pointers otherwise. CUDA calls are asynchronous on opts->stream; the
 * module keeps per-device scratch buffers (quantized activations, padding)
 * reused from call to call: use one stream per device. */
#ifndef RLRUN_LINEAR_H
#define RLRUN_LINEAR_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/gemm.h"
#include "kernels/qtensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per-call options; NULL = defaults (default stream, no report). */
typedef struct linear_opts {
  void *stream;    /* cudaStream_t (NULL: default stream) */
  gemm_info *info; /* when set: which GEMM path ran, padded M, pinned algorithm */
} linear_opts;

/* out[m][N] (BF16) = x[m][K] · wᵀ with N = w->rows, K = w->cols, quantizing x
 * as policy p says for w's format (p->ue8m0, p->emulate, p->pin_algo).
 * Errors: RL_EXIT_USAGE (bad shapes; on the CPU a non-finite activation, named
 * by row and column), RL_EXIT_HARDWARE (MXFP8/NVFP4 on a GPU without native
 * support and p->emulate off; device memory in a build without CUDA),
 * RL_EXIT_FAIL (CUDA failure). On CUDA a non-finite activation is not
 * reported: its quantization block is poisoned (NaN scale), so its output row
 * is NaN and the loss check downstream stops the step. */
int linear_forward(uint16_t *out, const uint16_t *x, int64_t m, const qtensor *w,
                   const quant_policy *p, rl_err *e);
int linear_forward_ex(uint16_t *out, const uint16_t *x, int64_t m, const qtensor *w,
                      const quant_policy *p, const linear_opts *o, rl_err *e);

/* The fused fp8-block path (RLRUN_LINEAR_FP8Q=1; off by default, EXPERIMENTAL: slower
 * than the default path so far, see kernels/gemm_fp8q_cuda.cu): linear_forward on
 * an fp8-block weight runs gemm_fp8q_cuda (gemm.h), which quantizes x inside the
 * GEMM, where the GPU is a Hopper, the policy does not pin the algorithm and the
 * operands suit it (else the quantizer + cuBLASLt as always; info->path tells
 * GEMM_PATH_FP8_BLOCK_FUSED). The same quantized operands, another accumulation
 * order than cuBLASLt's: rows agree within FP32-order noise, not bitwise, so while
 * it is on linear_forward_prepared (always cuBLASLt) is no longer bitwise
 * linear_forward. set ≥ 0 turns it on (1) or off (0) for the process; −1 asks. */
int linear_fp8q(int set);

/* An activation quantized once for several linears that share it (q, k and v;
 * gate and up): linear_act_prepare quantizes x [m][k] for weights of format fmt
 * under policy p into this module's device scratch, and each
 * linear_forward_prepared(out, a, w, …) then runs only the GEMM — the same bits
 * as linear_forward(out, x, m, w, p) of each weight. Device weights only (the
 * CUDA model). The prepared copy is valid until the next linear_forward or
 * linear_act_prepare of the thread (its scratch is reused): using it after one
 * is refused (RL_EXIT_USAGE), as is a weight of another format, K or scale format. */
typedef struct linear_act {
  qtensor xq;          /* the quantized activation (rows padded as the GEMM wants) */
  int64_t m, k;        /* real rows, K */
  qformat fmt;
  int ue8m0;
  unsigned long epoch; /* which quantization into the scratch it is */
  int external;        /* linear_act_wrap_fp8: the caller's buffers (no scratch, no epoch) */
} linear_act;
int linear_act_prepare(linear_act *a, const uint16_t *x, int64_t m, int64_t k, qformat fmt, const quant_policy *p,
                       const linear_opts *o, rl_err *e);
int linear_forward_prepared(uint16_t *out, const linear_act *a, const qtensor *w, const quant_policy *p,
                            const linear_opts *o, rl_err *e);
/* A linear_act over an fp8-block activation its producer quantized already
 * (kernels/ops.h ops_fp8_act: an RMSNorm that writes E4M3 codes q [m_pad][k]
 * and FP32 scales [ceil(k/128)][m_pad] in cuBLASLt's Hopper layout, pad rows
 * zero), m_pad = m rounded up to a multiple of 8 as linear_act_prepare pads:
 * linear_forward_prepared then gives the bits linear_forward gives on the BF16
 * activation those bytes quantize. Valid while the caller's buffers hold it. */
int linear_act_wrap_fp8(linear_act *a, const uint8_t *q, const float *scales, int64_t m, int64_t m_pad, int64_t k,
                        const quant_policy *p, rl_err *e);

/* Operands and outputs of the backward of one linear layer. */
typedef struct linear_bwd {
  int64_t m, n, k;      /* tokens, output features, input features */
  const uint16_t *dy;   /* [m][n] BF16 gradient of the output */
  const uint16_t *x;    /* [m][k] BF16 saved input */
  const uint16_t *w;    /* [n][k] BF16 master weight */
  uint16_t *dx;         /* [m][k] BF16 out: dY·W (NULL: skip) */
  uint16_t *dw;         /* [n][k] BF16 out: dYᵀ·X (NULL: skip) */
  float *dw_acc;        /* [n][k] FP32: dw_acc += dYᵀ·X, summed in FP32 (NULL: skip) */
  int on_device;        /* 1: every pointer above is device memory */
  void *stream;         /* cudaStream_t (NULL: default) */
} linear_bwd;

/* Run the backward GEMMs b asks for (dx, dw, dw_acc). */
int linear_backward(const linear_bwd *b, rl_err *e);

/* Free the CUDA scratch buffers of this module and the GEMM plan cache. */
void linear_release(void);

#ifdef __cplusplus
}
#endif

#endif
