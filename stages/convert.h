/* convert.h — the convert stage: a Hugging Face model directory (qwen3 /
 * qwen3_moe, safetensors) into a low-precision checkpoint, or back to BF16.
 *
 *   convert_opts o;
 *   convert_opts_init(&o);
 *   o.in_dir = "Qwen3-0.6B"; o.out_dir = "q"; o.to = QFMT_FP8_BLOCK;
 *   if (convert_run(&o, &stats, &e)) { print e.msg; exit e.code; }
 *
 * Per FORMATS.md: naming and quantization_config of each format, the default
 * BF16 list (embeddings, norms, the router mlp.gate., lm_head, anything not
 * 2-D), NVFP4 for routed MoE experts only with gate_proj/up_proj of one expert
 * sharing one tensor amax, MXFP8 only where K % 32 == 0. Every floating-point
 * tensor left unquantized is written as BF16 (F32/F16 rounded to nearest-even);
 * F32/F16 weights are quantized from their own values (widened exactly to
 * FP32), not from their BF16 rounding. Non-finite weights are refused with the
 * tensor name. `to = QFMT_BF16` dequantizes a checkpoint
 * of any of the three formats (read from its quantization_config).
 *
 * Streaming: tensors are read with pread in row chunks (≤ ~32 MiB), quantized
 * and written at their offsets in the output shard, so resident memory stays
 * near a few chunks whatever the model size. The output directory is built
 * under a temporary name and renamed into place when complete. */
#ifndef RLRUN_STAGES_CONVERT_H
#define RLRUN_STAGES_CONVERT_H

#include <stdint.h>
#include <stdio.h>

#include "kernels/common.h"
#include "kernels/quant.h"
#include "model/config.h"

typedef enum convert_device {
  CONVERT_DEVICE_AUTO, /* a GPU when this build has CUDA and one is found, else the CPU */
  CONVERT_DEVICE_CPU,
  CONVERT_DEVICE_CUDA
} convert_device;

#define CONVERT_DEFAULT_SHARD_SIZE 5000000000ull /* 5 GB, as Hugging Face */

typedef struct convert_opts {
  const char *in_dir, *out_dir;
  qformat to;                    /* QFMT_BF16 = dequantize / cast back */
  int ue8m0;                     /* fp8-block: power-of-two scales (scale_fmt ue8m0) */
  const char *const *keep_bf16;  /* glob patterns (fnmatch) on tensor or module names */
  int n_keep_bf16;
  int64_t bf16_first_layers, bf16_last_layers;
  uint64_t shard_size;           /* largest output shard in bytes of tensor data */
  int force;                     /* replace out_dir when it exists */
  int progress;                  /* -1: a bar when `log` is a terminal, else lines; 0: lines; 1: bar */
  int quiet;                     /* no per-tensor lines or bar */
  convert_device device;
  FILE *log;                     /* progress and notes (NULL = stderr) */
} convert_opts;

typedef struct convert_stats {
  int tensors_in, tensors_out, quantized, dequantized, kept;
  int shards, files_copied;
  uint64_t bytes_in, bytes_out;
  double seconds;
  int used_gpu;
} convert_stats;

void convert_opts_init(convert_opts *o);

/* Run the conversion; 0 or an rl_exit code with the message in e. */
int convert_run(const convert_opts *o, convert_stats *stats, rl_err *e);

/* What happens to one tensor of the input when converting to o->to: returns
 * the format it is written in (QFMT_BF16 = unquantized: BF16, cast when it is
 * F32/F16) and, when kept, a short reason in *why ("norm", "router",
 * "--keep-bf16 PATTERN", "K % 32 != 0", ...).
 * dtype_ok: the tensor is BF16/F16/F32. Exposed for tests and `--dry-run`. */
qformat convert_decide(const convert_opts *o, const model_config *c, const char *name, int ndim,
                       const int64_t *shape, int dtype_ok, const char **why);

/* Parse "5GB", "500MB", "2GiB", "123" (bytes); 0 or -1. */
int convert_parse_size(const char *s, uint64_t *out);

#endif
