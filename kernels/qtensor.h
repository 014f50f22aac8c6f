/* qtensor.h — the two numeric types the model builds on:
 *   qtensor       a quantized 2-D tensor: data + scales (in a named layout)
 *                 + NVFP4's per-tensor scale + its format and shape;
 *   quant_policy  which format each class of linear layer uses, and the
 *                 switches that go with it (emulate, ue8m0, pinned GEMM algorithm).
 * Formats, layouts and the quantizers themselves are in kernels/quant.h. */
#ifndef RLRUN_QTENSOR_H
#define RLRUN_QTENSOR_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A quantized matrix [rows][cols], cols being the reduction dimension K
 * (contiguous). Buffers belong to whoever made the qtensor; it owns nothing.
 *
 *   fmt        data                              scales (layout ROWMAJOR; see quant.h for others)
 *   BF16       uint16 [rows][cols]               none (NULL)
 *   FP8_BLOCK  E4M3 [rows][cols]                 FP32, block_rows = 128: [ceil(rows/128)][ceil(cols/128)]
 *                                                      block_rows = 1:   [rows][ceil(cols/128)]
 *   MXFP8      E4M3 [rows][cols]                 E8M0 [rows][ceil(cols/32)]
 *   NVFP4      E2M1 packed [rows][ceil(cols/2)]  E4M3 [rows][ceil(cols/16)], + S_dec
 */
typedef struct qtensor {
  qformat fmt;
  qlayout layout;      /* of the scales: ROWMAJOR, HOPPER_ACT, HOPPER_WEIGHT, BLACKWELL_128x4 */
  int on_device;       /* 1: data, scales and d_s_dec are CUDA device pointers */
  int64_t rows, cols;
  int block_rows;      /* FP8_BLOCK: 128 (weights, 128×128 blocks) or 1 (activations, 1×128) */
  int64_t scale_ld;    /* QLAYOUT_HOPPER_ACT: leading dimension of the scales (>= rows); else 0 */
  void *data;
  void *scales;
  float s_dec;         /* NVFP4 per-tensor decode scale S_dec (host tensors) */
  const float *d_s_dec; /* NVFP4 S_dec in device memory (device tensors) */
} qtensor;

/* A BF16 matrix [rows][cols] as a qtensor (host or device memory). */
qtensor qtensor_bf16(const uint16_t *data, int64_t rows, int64_t cols, int on_device);

/* Name of a format as recipes spell it: "bf16", "fp8-block", "mxfp8", "nvfp4". */
const char *qtensor_format_name(qformat f);

/* The classes of linear layers a policy tells apart. */
typedef enum linear_class {
  LINEAR_ATTN,    /* q/k/v/o projections */
  LINEAR_MLP,     /* dense MLP (and shared-expert) gate/up/down */
  LINEAR_EXPERT,  /* routed MoE experts */
  LINEAR_ROUTER,  /* the MoE router (mlp.gate) */
  LINEAR_LM_HEAD, /* the output projection */
  LINEAR_CLASS_COUNT
} linear_class;

/* Name of a linear class ("attention", "mlp", "experts", "router", "lm_head"). */
const char *linear_class_name(linear_class c);

/* How the linear layers of one engine (rollout or training) are quantized.
 * Weights are quantized at sync in fmt[class]; linear_forward quantizes the
 * activation on the fly in the weight's format. */
typedef struct quant_policy {
  qformat fmt[LINEAR_CLASS_COUNT];
  int emulate;  /* MXFP8/NVFP4 where the GPU has no native GEMM (Hopper): exact emulation
                   (quantize → dequantize to BF16 → BF16 GEMM, FP32 accumulation) */
  int ue8m0;    /* fp8-block: power-of-two scales (activations; weights at sync) */
  int pin_algo; /* batch invariance: per (N, K, format) the no-split-K algorithm chosen for
                   M = 8192, or per power-of-two M bucket one verified bitwise equal to it
                   (gemm_cuda.cu): a row's output does not depend on M */
} quant_policy;

/* A policy with `fmt` for attention and dense MLP, `expert_fmt` for routed
 * experts, and BF16 for the router and lm_head (FORMATS.md: never quantized
 * by default); switches off. */
void quant_policy_init(quant_policy *p, qformat fmt, qformat expert_fmt);

/* Refuse policies FORMATS.md does not allow (NVFP4 outside the experts, an
 * unknown format); the message names the class and what to do. */
int quant_policy_check(const quant_policy *p, rl_err *e);

#ifdef __cplusplus
}
#endif

#endif
