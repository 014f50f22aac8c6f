/* cmd_convert.c — `rlrun convert`: a Hugging Face model directory to
 * fp8-block / mxfp8 / nvfp4, or any of them back to bf16 (stages/convert.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "runner/cli.h"
#include "stages/convert.h"

static const char convert_usage[] =
    "usage: rlrun convert --in DIR --out DIR --to fp8-block|mxfp8|nvfp4|bf16 [options]\n"
    "\n"
    "Convert a Hugging Face model directory (qwen3 / qwen3_moe, safetensors) to a\n"
    "low-precision checkpoint (layouts and quantization_config as FORMATS.md), or\n"
    "dequantize an fp8-block / mxfp8 / nvfp4 checkpoint back to bf16. Embeddings,\n"
    "norms, the MoE router (mlp.gate.), lm_head and non-2-D tensors stay BF16: every\n"
    "floating-point tensor left unquantized is written as BF16 (F32/F16 rounded to\n"
    "nearest-even). nvfp4 applies to routed MoE experts only (a model without any is\n"
    "refused). F32/F16 weights are\n"
    "quantized from their own values (on the CPU), not from their BF16 rounding.\n"
    "Tokenizer and other files are copied. The weights are checked against config.json\n"
    "first, as `rlrun score` loads them: every tensor it implies present with its shape, as\n"
    "many layers as num_hidden_layers (tensors the model does not use are noted and kept).\n"
    "\n"
    "options:\n"
    "  --in DIR                 input model directory (config.json + *.safetensors)\n"
    "  --out DIR                output directory (built under a temporary name, then renamed)\n"
    "  --to FORMAT              fp8-block, mxfp8, nvfp4 or bf16\n"
    "  --keep-bf16 PATTERN      keep tensors whose name or module name matches the glob\n"
    "                           PATTERN in BF16 (repeatable), e.g. '*.self_attn.*'; a broken\n"
    "                           glob (an unclosed '[') is refused\n"
    "  --scale-fmt ue8m0|fp32   fp8-block scales as powers of two (default fp32; mxfp8 is ue8m0)\n"
    "  --bf16-first-layers N    keep layers 0..N-1 in BF16\n"
    "  --bf16-last-layers N     keep the last N layers in BF16\n"
    "  --shard-size SIZE        largest output shard (default 5GB; B KB MB GB KiB MiB GiB)\n"
    "  --device auto|cpu|cuda   where to quantize (default auto: the GPU when one is found;\n"
    "                           the bytes are identical either way)\n"
    "  --force                  replace --out when it exists\n"
    "  --progress | --no-progress  bar (default on a terminal) or one line per tensor\n"
    "  --quiet                  no per-tensor output\n"
    "\n"
    "exit codes: 0 done, 1 I/O failure, 2 invalid input or options (unknown architecture,\n"
    "corrupt checkpoint, weights that disagree with config.json, non-finite weights),\n"
    "3 --device cuda without a usable GPU\n";

/* The value of option argv[*i] ("--opt VALUE" or "--opt=VALUE"), or NULL. A
 * following "--…" argument is an option, not this one's value: *missing is set
 * (write --opt=--x for such a value). */
static const char *opt_value(int argc, char **argv, int *i, const char *opt, int *missing) {
  size_t n = strlen(opt);
  if (strncmp(argv[*i], opt, n)) return NULL;
  if (argv[*i][n] == '=') return argv[*i] + n + 1;
  if (argv[*i][n]) return NULL;
  if (*i + 1 >= argc || !strncmp(argv[*i + 1], "--", 2)) {
    *missing = 1;
    return NULL;
  }
  return argv[++*i];
}

/* A non-negative integer option value. */
static int parse_count(const char *opt, const char *v, int64_t *out) {
  char *end;
  errno = 0;
  long long n = strtoll(v, &end, 10);
  if (*v < '0' || *v > '9' || *end || errno || n < 0) { /* no sign, no blank, no saturated huge value */
    fprintf(stderr, "rlrun convert: %s wants a non-negative integer, got '%s'\n", opt, v);
    return RL_EXIT_USAGE;
  }
  *out = n;
  return 0;
}

int cmd_convert(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    fputs(convert_usage, stdout);
    return RL_EXIT_OK;
  }
  convert_opts o;
  convert_opts_init(&o);
  int have_to = 0, rc = 0, scale_fmt_set = 0;
  const char **keep = rl_xcalloc((size_t)argc + 1, sizeof(char *));
  for (int i = 1; i < argc && !rc; i++) {
    const char *v;
    int missing = 0;
    if ((v = opt_value(argc, argv, &i, "--in", &missing))) o.in_dir = v;
    else if ((v = opt_value(argc, argv, &i, "--out", &missing))) o.out_dir = v;
    else if ((v = opt_value(argc, argv, &i, "--to", &missing))) {
      have_to = 1;
      if (!strcmp(v, "fp8-block")) o.to = QFMT_FP8_BLOCK;
      else if (!strcmp(v, "mxfp8")) o.to = QFMT_MXFP8;
      else if (!strcmp(v, "nvfp4")) o.to = QFMT_NVFP4;
      else if (!strcmp(v, "bf16")) o.to = QFMT_BF16;
      else {
        fprintf(stderr, "rlrun convert: --to '%s' is not a format (fp8-block, mxfp8, nvfp4, bf16)\n", v);
        rc = RL_EXIT_USAGE;
      }
    } else if ((v = opt_value(argc, argv, &i, "--keep-bf16", &missing))) keep[o.n_keep_bf16++] = v;
    else if ((v = opt_value(argc, argv, &i, "--scale-fmt", &missing))) {
      scale_fmt_set = 1;
      if (!strcmp(v, "ue8m0")) o.ue8m0 = 1;
      else if (!strcmp(v, "fp32")) o.ue8m0 = 0;
      else {
        fprintf(stderr, "rlrun convert: --scale-fmt '%s' is not ue8m0 or fp32\n", v);
        rc = RL_EXIT_USAGE;
      }
    } else if ((v = opt_value(argc, argv, &i, "--bf16-first-layers", &missing)))
      rc = parse_count("--bf16-first-layers", v, &o.bf16_first_layers);
    else if ((v = opt_value(argc, argv, &i, "--bf16-last-layers", &missing)))
      rc = parse_count("--bf16-last-layers", v, &o.bf16_last_layers);
    else if ((v = opt_value(argc, argv, &i, "--shard-size", &missing))) {
      if (convert_parse_size(v, &o.shard_size)) {
        fprintf(stderr, "rlrun convert: --shard-size '%s' is not a size (e.g. 5GB, 500MB, 2GiB)\n", v);
        rc = RL_EXIT_USAGE;
      }
    } else if ((v = opt_value(argc, argv, &i, "--device", &missing))) {
      if (!strcmp(v, "auto")) o.device = CONVERT_DEVICE_AUTO;
      else if (!strcmp(v, "cpu")) o.device = CONVERT_DEVICE_CPU;
      else if (!strcmp(v, "cuda")) o.device = CONVERT_DEVICE_CUDA;
      else {
        fprintf(stderr, "rlrun convert: --device '%s' is not auto, cpu or cuda\n", v);
        rc = RL_EXIT_USAGE;
      }
    } else if (!strcmp(argv[i], "--force")) o.force = 1;
    else if (!strcmp(argv[i], "--progress")) o.progress = 1;
    else if (!strcmp(argv[i], "--no-progress")) o.progress = 0;
    else if (!strcmp(argv[i], "--quiet")) o.quiet = 1;
    else if (missing) {
      fprintf(stderr, "rlrun convert: %s needs a value%s%s%s; see rlrun convert --help\n", argv[i],
              i + 1 < argc ? " (the next argument, '" : "", i + 1 < argc ? argv[i + 1] : "",
              i + 1 < argc ? "', is an option: write OPTION=VALUE for a value starting with --)" : "");
      rc = RL_EXIT_USAGE;
    } else {
      fprintf(stderr, "rlrun convert: unknown or incomplete option '%s'; see rlrun convert --help\n",
              argv[i]);
      rc = RL_EXIT_USAGE;
    }
  }
  if (!rc && scale_fmt_set && have_to && o.to != QFMT_FP8_BLOCK && !(o.to == QFMT_MXFP8 && o.ue8m0)) {
    fprintf(stderr, "rlrun convert: --scale-fmt applies to fp8-block (mxfp8 scales are always ue8m0, nvfp4 block "
            "scales E4M3), not to %s\n", o.to == QFMT_MXFP8 ? "mxfp8" : o.to == QFMT_NVFP4 ? "nvfp4" : "bf16");
    rc = RL_EXIT_USAGE;
  }
  if (!rc && (!o.in_dir || !o.out_dir || !have_to)) {
    fprintf(stderr, "rlrun convert: --in, --out and --to are required; see rlrun convert --help\n");
    rc = RL_EXIT_USAGE;
  }
  if (rc) {
    free(keep);
    return rc;
  }
  o.keep_bf16 = keep;
  convert_stats st;
  rl_err e;
  rl_err_clear(&e);
  rl_interrupt_install("rlrun convert: interrupt: stopping; a partial output is removed (interrupt again to stop "
                       "now)",
                       "rlrun: second interrupt: stopping now (a temporary may be left beside the output)");
  rc = convert_run(&o, &st, &e);
  free(keep);
  if (rc) {
    fprintf(stderr, "rlrun convert: %s\n", e.msg);
    return rc;
  }
  printf("converted %s -> %s: %d tensors in, %d out (%d quantized, %d dequantized, %d kept), "
         "%d shard(s), %d file(s) copied, %.2f GB -> %.2f GB in %.1f s on %s\n",
         o.in_dir, o.out_dir, st.tensors_in, st.tensors_out, st.quantized, st.dequantized, st.kept,
         st.shards, st.files_copied, (double)st.bytes_in / 1e9, (double)st.bytes_out / 1e9,
         st.seconds, st.used_gpu ? "the GPU" : "the CPU");
  return RL_EXIT_OK;
}
