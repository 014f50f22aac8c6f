/* test_convert_rules.c — which tensors the converter quantizes, what it
 * refuses (non-finite weights, unknown architectures, quantized inputs, bad
 * options), config.json parsing, the progress display, and peak memory. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "model/config.h"
#include "stages/convert.h"
#include "state/rundir.h"
#include "test_convert_util.h"

static char out[1 << 17];

#define QWEN3_CFG(H, I, L)                                                                     \
  "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"vocab_size\": 64, " \
  "\"hidden_size\": " #H ", \"intermediate_size\": " #I ", \"num_hidden_layers\": " #L ", "     \
  "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 32}"

/* Value i of a synthetic tensor: deterministic, mixed signs and magnitudes. */
static float synth(uint64_t i) {
  uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  return (float)((int64_t)(h % 20001) - 10000) * 1e-4f;
}

/* A model directory with config `cfg` and one file of tensors (name, dtype
 * BF16 or F32, 1-D or 2-D shape), filled with synth() in row chunks; element
 * `bad` (if >= 0) of tensor `bad_name` is set to bad_val. */
typedef struct synth_tensor {
  const char *name;
  st_dtype dt;
  int ndim;
  int64_t shape[2];
} synth_tensor;

static int make_dir(const char *dir, const char *cfg, const synth_tensor *ts, int n,
                    const char *bad_name, int64_t bad, float bad_val) {
  char p[1100];
  mkdir(dir, 0755);
  snprintf(p, sizeof p, "%s/config.json", dir);
  if (harness_write_file(p, cfg)) return -1;
  snprintf(p, sizeof p, "%s/model.safetensors", dir);
  st_writer *w = st_writer_new(p);
  rl_err e;
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) rc = st_writer_add(w, ts[i].name, ts[i].dt, ts[i].ndim, ts[i].shape, &e);
  if (!rc) rc = st_writer_begin(w, &e);
  const size_t CH = 1 << 20;
  float *f = rl_xmalloc(CH * 4);
  uint16_t *b = rl_xmalloc(CH * 2);
  for (int i = 0; i < n && !rc; i++) {
    uint64_t numel = (uint64_t)ts[i].shape[0] * (uint64_t)(ts[i].ndim == 2 ? ts[i].shape[1] : 1);
    size_t esz = st_dtype_size(ts[i].dt);
    for (uint64_t o = 0; o < numel && !rc; o += CH) {
      size_t m = numel - o < CH ? (size_t)(numel - o) : CH;
      for (size_t j = 0; j < m; j++) {
        f[j] = synth(o + j + (uint64_t)i * 7919);
        if (bad_name && !strcmp(bad_name, ts[i].name) && (int64_t)(o + j) == bad) f[j] = bad_val;
        b[j] = fmt_bf16_from_f32(f[j]);
      }
      rc = st_writer_write_part(w, i, o * esz, esz == 4 ? (void *)f : (void *)b, m * esz, &e);
    }
  }
  free(f), free(b);
  if (rc) {
    st_writer_abort(w);
    harness_fail(__FILE__, __LINE__, "%s", e.msg);
    return rc;
  }
  return st_writer_finish(w, &e);
}

/* A qwen3_moe config: E experts of FFN I in layers 1.. (layer 0 dense, FFN I). */
#define QWEN3_MOE_CFG(H, I, L, E)                                                                       \
  "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"model_type\": \"qwen3_moe\", \"vocab_size\": 64, " \
  "\"hidden_size\": " #H ", \"intermediate_size\": " #I ", \"moe_intermediate_size\": " #I ", "           \
  "\"num_hidden_layers\": " #L ", \"num_attention_heads\": 2, \"num_key_value_heads\": 1, "               \
  "\"head_dim\": 32, \"num_experts\": " #E ", \"num_experts_per_tok\": 1, \"mlp_only_layers\": [0]}"

/* Every tensor of a complete QWEN3_CFG(H, I, L) checkpoint (E = 0) or
 * QWEN3_MOE_CFG(H, I, L, E) one, as config.json implies them, in dtype dt,
 * into ts (names kept in a static buffer: one list at a time). Entries of
 * `over` replace the tensor of that name (dtype, shape), or are appended when
 * new. Returns the count. */
static int full_ckpt(synth_tensor *ts, int cap, int64_t H, int64_t I, int L, int E, st_dtype dt,
                     const synth_tensor *over, int n_over) {
  static char names[512][96];
  int n = 0;
#define T(r, c, nd, ...)                                                            \
  do {                                                                              \
    if (n < cap && n < 512) {                                                       \
      snprintf(names[n], sizeof names[n], __VA_ARGS__);                             \
      ts[n] = (synth_tensor){names[n], dt, nd, {r, c}};                             \
      n++;                                                                          \
    }                                                                               \
  } while (0)
  T(64, H, 2, "model.embed_tokens.weight");
  for (int l = 0; l < L; l++) {
    T(H, 0, 1, "model.layers.%d.input_layernorm.weight", l);
    T(64, H, 2, "model.layers.%d.self_attn.q_proj.weight", l);
    T(32, H, 2, "model.layers.%d.self_attn.k_proj.weight", l);
    T(32, H, 2, "model.layers.%d.self_attn.v_proj.weight", l);
    T(H, 64, 2, "model.layers.%d.self_attn.o_proj.weight", l);
    T(32, 0, 1, "model.layers.%d.self_attn.q_norm.weight", l);
    T(32, 0, 1, "model.layers.%d.self_attn.k_norm.weight", l);
    T(H, 0, 1, "model.layers.%d.post_attention_layernorm.weight", l);
    if (!E || l == 0) {
      T(I, H, 2, "model.layers.%d.mlp.gate_proj.weight", l);
      T(I, H, 2, "model.layers.%d.mlp.up_proj.weight", l);
      T(H, I, 2, "model.layers.%d.mlp.down_proj.weight", l);
      continue;
    }
    T(E, H, 2, "model.layers.%d.mlp.gate.weight", l);
    for (int x = 0; x < E; x++) {
      T(I, H, 2, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, x);
      T(I, H, 2, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, x);
      T(H, I, 2, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, x);
    }
  }
  T(H, 0, 1, "model.norm.weight");
  T(64, H, 2, "lm_head.weight");
#undef T
  for (int j = 0; j < n_over; j++) {
    int k = 0;
    while (k < n && strcmp(ts[k].name, over[j].name)) k++;
    if (k == n && n < cap) n++;
    if (k < n) ts[k] = over[j];
  }
  return n;
}

TEST(convert_decide_default_skip_list_and_formats) {
  convert_opts o;
  convert_opts_init(&o);
  model_config c;
  memset(&c, 0, sizeof c);
  c.num_hidden_layers = 10;
  struct {
    const char *name;
    int ndim;
    int64_t n, k;
    qformat want[3]; /* fp8-block, mxfp8, nvfp4 */
    const char *why; /* for fp8-block when kept */
  } cases[] = {
      {"model.embed_tokens.weight", 2, 64, 128, {QFMT_BF16, QFMT_BF16, QFMT_BF16}, "embedding"},
      {"lm_head.weight", 2, 64, 128, {QFMT_BF16, QFMT_BF16, QFMT_BF16}, "lm_head"},
      {"model.norm.weight", 1, 128, 0, {QFMT_BF16, QFMT_BF16, QFMT_BF16}, "not 2-D"},
      {"model.layers.3.self_attn.q_norm.weight", 1, 64, 0, {QFMT_BF16, QFMT_BF16, QFMT_BF16}, "not 2-D"},
      {"model.layers.3.input_layernorm.weight", 2, 1, 128, {QFMT_BF16, QFMT_BF16, QFMT_BF16}, "norm"},
      {"model.layers.3.mlp.gate.weight", 2, 8, 128, {QFMT_BF16, QFMT_BF16, QFMT_BF16}, "router"},
      {"model.layers.3.mlp.gate_proj.weight", 2, 64, 128, {QFMT_FP8_BLOCK, QFMT_MXFP8, QFMT_BF16}, NULL},
      {"model.layers.3.mlp.experts.7.gate_proj.weight", 2, 64, 128, {QFMT_FP8_BLOCK, QFMT_MXFP8, QFMT_NVFP4}, NULL},
      {"model.layers.3.mlp.experts.7.down_proj.weight", 2, 128, 48, {QFMT_FP8_BLOCK, QFMT_BF16, QFMT_NVFP4}, NULL},
      {"model.layers.3.mlp.experts.7.up_proj.weight", 2, 128, 40, {QFMT_FP8_BLOCK, QFMT_BF16, QFMT_BF16}, NULL},
      {"model.layers.3.self_attn.o_proj.weight", 2, 128, 100, {QFMT_FP8_BLOCK, QFMT_BF16, QFMT_BF16}, NULL},
      {"model.layers.3.self_attn.o_proj.bias", 1, 128, 0, {QFMT_BF16, QFMT_BF16, QFMT_BF16}, "not a weight"},
      {"model.layers.3.mlp.experts.gate_up_proj", 3, 4, 64, {QFMT_BF16, QFMT_BF16, QFMT_BF16}, "not a weight"},
  };
  qformat tos[3] = {QFMT_FP8_BLOCK, QFMT_MXFP8, QFMT_NVFP4};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    for (int f = 0; f < 3; f++) {
      o.to = tos[f];
      const char *why;
      int64_t sh[2] = {cases[i].n, cases[i].k};
      qformat got = convert_decide(&o, &c, cases[i].name, cases[i].ndim, sh, 1, &why);
      CHECK_MSG(got == cases[i].want[f], "%s to %d: got %d want %d", cases[i].name, (int)tos[f],
                (int)got, (int)cases[i].want[f]);
      if (f == 0 && cases[i].why) CHECK_STREQ(why, cases[i].why);
    }
  /* Options: patterns on tensor or module names, first/last layers. */
  const char *keep[2] = {"*.self_attn.o_proj", "model.layers.5.mlp.*"};
  o.to = QFMT_FP8_BLOCK;
  o.keep_bf16 = keep, o.n_keep_bf16 = 2;
  o.bf16_first_layers = 2, o.bf16_last_layers = 3;
  int64_t sh[2] = {64, 128};
  const char *why;
  CHECK_EQ_I64(convert_decide(&o, &c, "model.layers.4.self_attn.o_proj.weight", 2, sh, 1, &why), QFMT_BF16);
  CHECK_STREQ(why, "--keep-bf16");
  CHECK_EQ_I64(convert_decide(&o, &c, "model.layers.5.mlp.down_proj.weight", 2, sh, 1, &why), QFMT_BF16);
  CHECK_EQ_I64(convert_decide(&o, &c, "model.layers.4.self_attn.q_proj.weight", 2, sh, 1, &why), QFMT_FP8_BLOCK);
  CHECK_EQ_I64(convert_decide(&o, &c, "model.layers.1.self_attn.q_proj.weight", 2, sh, 1, &why), QFMT_BF16);
  CHECK_STREQ(why, "--bf16-first-layers");
  CHECK_EQ_I64(convert_decide(&o, &c, "model.layers.2.self_attn.q_proj.weight", 2, sh, 1, &why), QFMT_FP8_BLOCK);
  CHECK_EQ_I64(convert_decide(&o, &c, "model.layers.6.self_attn.q_proj.weight", 2, sh, 1, &why), QFMT_FP8_BLOCK);
  CHECK_EQ_I64(convert_decide(&o, &c, "model.layers.7.self_attn.q_proj.weight", 2, sh, 1, &why), QFMT_BF16);
  CHECK_STREQ(why, "--bf16-last-layers");
  CHECK_EQ_I64(convert_decide(&o, &c, "model.layers.4.self_attn.q_proj.weight", 2, sh, 0, &why), QFMT_BF16);
  CHECK_STREQ(why, "not BF16/F16/F32");
  uint64_t sz;
  CHECK_EQ_I64(convert_parse_size("5GB", &sz), 0);
  CHECK_EQ_U64(sz, 5000000000ull);
  CHECK_EQ_I64(convert_parse_size("2GiB", &sz), 0);
  CHECK_EQ_U64(sz, 2147483648ull);
  CHECK_EQ_I64(convert_parse_size("1.5MB", &sz), 0);
  CHECK_EQ_U64(sz, 1500000);
  CHECK_EQ_I64(convert_parse_size("12 parsecs", &sz), -1);
  CHECK_EQ_I64(convert_parse_size("0", &sz), -1);
}

TEST(convert_cli_keep_patterns_and_layer_ranges) {
  char cmd[4096], qd[800];
  snprintf(qd, sizeof qd, "%s/q", harness_tmpdir());
  snprintf(cmd, sizeof cmd,
           "OMP_WAIT_POLICY=passive %s convert --in %s --out %s --to fp8-block --keep-bf16 "
           "'*.o_proj' --bf16-first-layers 1 --bf16-last-layers=1",
           harness_bin(), tc_fixture("tiny_qwen3"), qd);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  CHECK_CONTAINS(out, "(6 quantized, 0 dequantized, 30 kept)"); /* layer 1 without o_proj */
  CHECK_CONTAINS(out, "model.layers.0.mlp.up_proj.weight BF16 [200,320] -> copied (--bf16-first-layers)");
  CHECK_CONTAINS(out, "model.layers.2.mlp.up_proj.weight BF16 [200,320] -> copied (--bf16-last-layers)");
  CHECK_CONTAINS(out, "model.layers.1.self_attn.o_proj.weight BF16 [320,256] -> copied (--keep-bf16)");
  CHECK_CONTAINS(out, "model.layers.1.mlp.down_proj.weight BF16 [320,200] -> fp8-block");
  json_t *qc = tc_quant_config(qd);
  REQUIRE(qc != NULL);
  char *mods = json_dumps(json_object_get(qc, "modules_to_not_convert"), JSON_COMPACT);
  CHECK_CONTAINS(mods, "\"model.layers.1.self_attn.o_proj\"");
  CHECK_CONTAINS(mods, "\"model.layers.0.self_attn.q_proj\"");
  CHECK(strstr(mods, "model.layers.1.self_attn.q_proj") == NULL);
  free(mods);
  json_decref(qc);
  /* options that keep every tensor: not refused, nvfp4 on a MoE model included
   * (refused only where no tensor qualifies: a dense model) */
  const char *keep_all[2] = {"--to fp8-block --bf16-first-layers 2", "--to nvfp4 --keep-bf16 '*.experts.*'"};
  for (int i = 0; i < 2; i++) {
    snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s/k%d %s", harness_bin(),
             tc_fixture("tiny_qwen3_moe"), harness_tmpdir(), i, keep_all[i]);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
    CHECK_CONTAINS(out, "(0 quantized, 0 dequantized, ");
    CHECK_CONTAINS(out, "the output stays unquantized\n");
  }
  /* a --keep-bf16 pattern that keeps nothing is said (a typo?); an F32
   * checkpoint's config names the BF16 its kept tensors became */
  snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s/k3 --to fp8-block --keep-bf16 '*.o_porj'", harness_bin(),
           tc_fixture("tiny_qwen3_f32"), harness_tmpdir());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "convert: note: --keep-bf16 '*.o_porj' matches no tensor of ");
  snprintf(cmd, sizeof cmd, "%s/k3/config.json", harness_tmpdir());
  json_t *cj = json_load_file(cmd, 0, NULL);
  REQUIRE(cj != NULL);
  CHECK_STREQ(json_string_value(json_object_get(cj, "torch_dtype")), "bfloat16"); /* the input's: float32 */
  json_decref(cj);
  snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s/k2 --to nvfp4", harness_bin(), tc_fixture("tiny_qwen3"),
           harness_tmpdir());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "--to nvfp4 quantizes the routed MoE experts only (FORMATS.md), and no tensor of ");
}

TEST(convert_refuses_nonfinite_weights_naming_the_tensor) {
  const char *d = harness_tmpdir();
  char in[800], o[800], cmd[4096];
  snprintf(in, sizeof in, "%s/in", d);
  snprintf(o, sizeof o, "%s/out", d);
  /* a complete qwen3_moe checkpoint: layer 0 dense, layer 1 with 2 experts, one of them F32 */
  synth_tensor f32x = {"model.layers.1.mlp.experts.1.gate_proj.weight", ST_F32, 2, {16, 64}}, ts[64];
  int n = full_ckpt(ts, 64, 64, 16, 2, 2, ST_BF16, &f32x, 1);
  const char *up = "model.layers.0.mlp.up_proj.weight";
  const char *fmts[2] = {"fp8-block", "mxfp8"};
  REQUIRE(make_dir(in, QWEN3_MOE_CFG(64, 16, 2, 2), ts, n, up, 3 * 64 + 7, NAN) == 0);
  for (int i = 0; i < 2; i++) {
    snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s --to %s", harness_bin(), in, o, fmts[i]);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
    CHECK_CONTAINS(out, "model.layers.0.mlp.up_proj.weight: 1 non-finite value(s) (Inf/NaN), "
                        "first at row 3, column 7; refusing to quantize it");
  }
  /* Inf / NaN in an F32 expert (the FP32-input quantizers), refused by every
   * format; nothing is left behind. */
  const char *all[3] = {"fp8-block", "mxfp8", "nvfp4"};
  for (int i = 0; i < 6; i++) {
    REQUIRE(make_dir(in, QWEN3_MOE_CFG(64, 16, 2, 2), ts, n, f32x.name, 15 * 64 + 63, i < 3 ? -INFINITY : NAN) == 0);
    snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s --to %s", harness_bin(), in, o, all[i % 3]);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
    CHECK_CONTAINS(out, "model.layers.1.mlp.experts.1.gate_proj.weight: 1 non-finite value(s) "
                        "(Inf/NaN), first at row 15, column 63");
  }
  /* a tensor kept in BF16 (a norm, the embeddings): refused too — the loaders
   * of score and run refuse such a model — by --to bf16 as well; an F32 value
   * past BF16's range rounds to Inf and is refused as one */
  const char *kept[3] = {"model.layers.0.input_layernorm.weight", "model.embed_tokens.weight", "model.norm.weight"};
  const char *said[3] = {"tensor 'model.layers.0.input_layernorm.weight' (kept in BF16) holds a non-finite value at "
                         "element 5 (NaN); fix the source checkpoint",
                         "tensor 'model.embed_tokens.weight' (kept in BF16) holds a non-finite value at row 2, column "
                         "9 (+Inf); fix the source checkpoint",
                         "tensor 'model.norm.weight' (kept in BF16) holds a non-finite value at element 7 (+Inf, or a "
                         "value past BF16's range of \xc2\xb1" "3.39e38); fix the source checkpoint"};
  synth_tensor f32n = {"model.norm.weight", ST_F32, 1, {64, 0}};
  for (int i = 0; i < 6; i++) {
    const int k = i / 2;
    n = full_ckpt(ts, 64, 64, 16, 2, 2, ST_BF16, k == 2 ? &f32n : NULL, k == 2);
    REQUIRE(make_dir(in, QWEN3_MOE_CFG(64, 16, 2, 2), ts, n, kept[k], k == 0 ? 5 : k == 1 ? 2 * 64 + 9 : 7,
                     k == 0 ? NAN : k == 1 ? INFINITY : 3.4e38f) == 0);
    snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s --to %s", harness_bin(), in, o, i % 2 ? "bf16" : "fp8-block");
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
    CHECK_CONTAINS(out, said[k]);
  }
  /* finite weights whose codes x scale decode past BF16's range: BF16's
   * largest value under a power-of-two scale (mxfp8, fp8-block ue8m0) rounds up
   * to E4M3 256 x 2^120 = 2^128, and an F32 weight past ±3.39e38 decodes to
   * Inf in any format. Refused, the element named (the loaders would refuse
   * the file); the same BF16 weight under FP32 scales converts, and back. */
  n = full_ckpt(ts, 64, 64, 16, 2, 2, ST_BF16, &f32x, 1);
  REQUIRE(make_dir(in, QWEN3_MOE_CFG(64, 16, 2, 2), ts, n, up, 5 * 64 + 33, -0x1.fep127f) == 0);
  const char *pow2[2] = {"mxfp8", "fp8-block --scale-fmt ue8m0"};
  for (int i = 0; i < 2; i++) {
    snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s --to %s", harness_bin(), in, o, pow2[i]);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
    CHECK_CONTAINS(out, "tensor 'model.layers.0.mlp.up_proj.weight' at row 5, column 33: the weight quantizes to ");
    CHECK_CONTAINS(out, " codes x scale past BF16's range (\xc2\xb1" "3.39e38), which would decode to -Inf; keep the "
                        "tensor in BF16 (--keep-bf16 'model.layers.0.mlp.up_proj.weight') or scale the source down");
  }
  snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s --to fp8-block --quiet && %s convert --in %s --out %s/back "
           "--to bf16 --quiet && rm -r %s %s/back", harness_bin(), in, o, harness_bin(), o, d, o, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  REQUIRE(make_dir(in, QWEN3_MOE_CFG(64, 16, 2, 2), ts, n, f32x.name, 4 * 64 + 2, 3.4e38f) == 0);
  for (int i = 0; i < 3; i++) {
    snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s --to %s", harness_bin(), in, o, all[i]);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
    CHECK_CONTAINS(out, "tensor 'model.layers.1.mlp.experts.1.gate_proj.weight' at row 4, column 2: the weight "
                        "quantizes to ");
    CHECK_CONTAINS(out, "which would decode to +Inf");
  }
  snprintf(cmd, sizeof cmd, "ls %s", d);
  harness_run(cmd, out, sizeof out);
  CHECK_STREQ(out, "in\n");
}

/* FP32 amax of elements [r0,r1)×[c0,c1) of x (row stride K), optionally of their BF16 rounding. */
static float amax_of(const float *x, int64_t K, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                     int bf16) {
  float m = 0;
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++) {
      float v = bf16 ? fmt_bf16_to_f32(fmt_bf16_from_f32(x[r * K + c])) : x[r * K + c];
      m = fabsf(v) > m ? fabsf(v) : m;
    }
  return m;
}

/* An F32 checkpoint: what every format quantizes is quantized from the F32
 * values; every tensor it keeps (skip list, K % 32 for mxfp8, --keep-bf16,
 * --bf16-last-layers, non-weights) becomes BF16 (RNE), as --to bf16 does.
 * Tensors the model does not use (a router in a dense model, rotary
 * inv_freq) are noted and converted like the others. */
TEST(convert_f32_input_quantized_from_f32_and_kept_as_bf16) {
  const char *d = harness_tmpdir();
  char in[800], cmd[4096], want[2048];
  snprintf(in, sizeof in, "%s/in", d);
  synth_tensor extra[2] = {{"model.layers.0.mlp.gate.weight", ST_F32, 2, {4, 64}},
                           {"model.layers.0.self_attn.rotary_emb.inv_freq", ST_F32, 1, {16, 0}}}, ts[64];
  int n = full_ckpt(ts, 64, 64, 80, 2, 0, ST_F32, extra, 2); /* down_proj [64, 80]: K % 32 != 0 */
  REQUIRE(make_dir(in, QWEN3_CFG(64, 80, 2), ts, n, NULL, -1, 0) == 0);
  const char *fmts[4] = {"bf16", "fp8-block", "mxfp8", "nvfp4"};
  const char *down = "model.layers.0.mlp.down_proj.weight", *up = "model.layers.0.mlp.up_proj.weight";
  st_ckpt *a = tc_open(in);
  REQUIRE(a != NULL);
  for (int f = 0; f < 4; f++) {
    char o[900];
    snprintf(o, sizeof o, "%s/%s", d, fmts[f]);
    snprintf(cmd, sizeof cmd,
             "OMP_WAIT_POLICY=passive %s convert --in %s --out %s --to %s --no-progress%s", harness_bin(),
             in, o, fmts[f], f ? " --keep-bf16 '*.o_proj' --bf16-last-layers 1" : "");
    if (f == 3) { /* a dense model: nvfp4 (routed experts only) would quantize nothing, refused */
      CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
      CHECK_CONTAINS(out, "--to nvfp4 quantizes the routed MoE experts only (FORMATS.md), and no tensor of");
      continue;
    }
    REQUIRE(harness_run(cmd, out, sizeof out) == 0);
    snprintf(want, sizeof want, "convert: note: 2 tensors of %s are not used by the model (the first: "
             "'model.layers.0.mlp.gate.weight'); written to the output all the same\n", in);
    CHECK_CONTAINS(out, want);
    if (f) CHECK_CONTAINS(out, "model.embed_tokens.weight F32 [64,64] -> bf16 (cast) (embedding)");
    if (f) CHECK_CONTAINS(out, "model.layers.0.mlp.gate.weight F32 [4,64] -> bf16 (cast) (router)");
    st_ckpt *q = tc_open(o);
    REQUIRE(q != NULL);
    int n_quant = 0;
    for (int i = 0; i < n; i++) {
      const char *nm = ts[i].name;
      int quant = f && !strncmp(nm, "model.layers.0.", 15) && strstr(nm, "_proj.weight") && !strstr(nm, "o_proj") &&
                  !(f == 2 && !strcmp(nm, down)); /* mxfp8: down_proj's K = 80 stays */
      n_quant += quant;
      if (quant) continue;
      CHECK_MSG(tc_kept_bf16_bad(a, q, nm) == 0, "--to %s: %s should be BF16 (RNE) of the F32", fmts[f], nm);
    }
    CHECK_EQ_I64(n_quant, f == 0 ? 0 : f == 1 ? 6 : 5);
    if (f == 1) { /* down_proj [64, 80]: one block; its scale comes from the F32 amax */
      int64_t N, K;
      float *x = tc_load_f32(a, down, &N, &K), s = 0;
      REQUIRE(tc_read(q, "model.layers.0.mlp.down_proj.weight_scale_inv", ST_F32, &s, 4) == 0);
      float want_s = amax_of(x, K, 0, N, 0, K, 0) / 448.0f;
      CHECK_EQ_U64(qf_f32_bits(s), qf_f32_bits(want_s));
      CHECK(qf_f32_bits(amax_of(x, K, 0, N, 0, K, 1) / 448.0f) != qf_f32_bits(want_s)); /* differs */
      free(x);
    }
    if (f == 2) { /* up_proj [80, 64]: E8M0 of each 1×32 block's F32 amax */
      float *x = tc_load_f32(a, up, NULL, NULL);
      uint8_t e8[160];
      REQUIRE(tc_read(q, "model.layers.0.mlp.up_proj.weight_scale_inv", ST_U8, e8, 160) == 0);
      for (int b = 0; b < 160; b++)
        CHECK_EQ_U64(e8[b], fmt_e8m0_rceil(amax_of(x, 64, b / 2, b / 2 + 1, (b % 2) * 32, (b % 2) * 32 + 32, 0) / 448.0f));
      free(x);
    }
    st_ckpt_close(q);
  }
  st_ckpt_close(a);
}

TEST(convert_refuses_bad_inputs_and_options) {
  const char *d = harness_tmpdir(), *bin = harness_bin(), *src = tc_fixture("tiny_qwen3");
  char in[800], o[800], cmd[4096];
  snprintf(in, sizeof in, "%s/llama", d);
  snprintf(o, sizeof o, "%s/out", d);
  synth_tensor ts[1] = {{"model.layers.0.mlp.up_proj.weight", ST_BF16, 2, {16, 64}}};
  REQUIRE(make_dir(in, "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"]}", ts,
                   1, NULL, -1, 0) == 0);
  struct {
    const char *args;
    int code;
    const char *msg;
  } cases[] = {
      {"--in %s/llama --out %s/out --to fp8-block", 2,
       "model_type 'llama' (LlamaForCausalLM) is not supported: rlrun runs qwen3"},
      {"--in %s --out %s/out --to fp4", 2, "--to 'fp4' is not a format"},
      {"--in %s --out %s/out", 2, "--in, --out and --to are required"},
      {"--in %s --out %s/out --to nvfp4 --scale-fmt ue8m0", 2, "--scale-fmt applies to fp8-block"},
      {"--in %s --out %s/out --to mxfp8 --bf16-first-layers x", 2, "wants a non-negative integer"},
      {"--in %s --out %s/out --to mxfp8 --shard-size 5XB", 2, "is not a size"},
      {"--in %s --out %s/out --to mxfp8 --bogus", 2, "unknown or incomplete option '--bogus'"},
      {"--in %s/nowhere --out %s/out --to mxfp8", 2, "is not a directory"},
      /* an option where a value belongs is not taken as the value */
      {"--in %s --out %s/out --to mxfp8 --keep-bf16 --quiet", 2,
       "rlrun convert: --keep-bf16 needs a value (the next argument, '--quiet', is an option: write OPTION=VALUE for "
       "a value starting with --)"},
      /* requests that would do nothing are refused */
      {"--in %s --out %s/out --to mxfp8 --scale-fmt fp32", 2,
       "--scale-fmt applies to fp8-block (mxfp8 scales are always ue8m0, nvfp4 block scales E4M3), not to mxfp8"},
      {"--in %s --out %s/out --to fp8-block --bf16-first-layers 3 --bf16-last-layers 1", 2,
       "--bf16-first-layers 3 + --bf16-last-layers 1 exceed the model's 3 layers"},
      {"--in %s --out %s/out --to nvfp4", 2,
       "--to nvfp4 quantizes the routed MoE experts only (FORMATS.md), and no tensor of"},
      /* a glob fnmatch would take silently (matching nothing) */
      {"--in %s --out %s/out --to fp8-block --keep-bf16 '['", 2,
       "rlrun convert: --keep-bf16: pattern '[': the '[' at position 1 opens a bracket expression that no ']' "
       "closes (tensor names hold no '['); close it, e.g. 'model.layers.[0-3].*'\n"},
      {"--in %s --out %s/out --to fp8-block --keep-bf16 '*.o_proj' --keep-bf16 'model.layers.[0-1.*'", 2,
       "rlrun convert: --keep-bf16: pattern 'model.layers.[0-1.*': the '[' at position 14 opens a bracket "
       "expression that no ']' closes"},
      {"--in %s --out %s/out --to fp8-block --keep-bf16 '*[[:digit]]*'", 2,
       "pattern '*[[:digit]]*': '[:' at position 3 is not closed by ':]'"},
      {"--in %s --out %s/out --to fp8-block --keep-bf16 '*[[:dig:]]*'", 2,
       "pattern '*[[:dig:]]*': [:dig:] at position 3 is not a character class (alnum, alpha, digit, lower, "
       "upper, ...)"},
      {"--in %s --out %s/out --to fp8-block --keep-bf16 'lm_head\\'", 2,
       "pattern 'lm_head\\' ends in a lone '\\' (an escape with nothing to escape); remove it"},
      {"--in %s --out %s/out --to fp8-block --keep-bf16=", 2, "--keep-bf16: the pattern is empty"},
  };
  /* the library's messages carry no "convert: " of their own: `rlrun convert: ` says it once */
  snprintf(cmd, sizeof cmd, "%s convert --in %s/nowhere --out %s/out --to mxfp8", bin, d, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  char want[2400];
  snprintf(want, sizeof want, "rlrun convert: --in %s/nowhere is not a directory\n", d);
  CHECK_STREQ(out, want);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char args[2048];
    snprintf(args, sizeof args, cases[i].args, i == 0 || i == 7 ? d : src, d);
    snprintf(cmd, sizeof cmd, "%s convert %s", bin, args);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), cases[i].code);
    CHECK_CONTAINS(out, cases[i].msg);
  }
#if !RLRUN_CUDA
  snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s --to mxfp8 --device cuda", bin, src, o);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_HARDWARE);
  CHECK_STREQ(out, "rlrun convert: --device cuda: no usable GPU (this binary was built without CUDA); use "
                   "--device cpu (or auto)\n");
#endif
  /* An existing output: refused, then replaced with --force. */
  snprintf(cmd, sizeof cmd, "mkdir -p %s && touch %s/keep && %s convert --in %s --out %s --to mxfp8 --quiet",
           o, o, bin, src, o);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "already exists and is not empty; choose another --out or pass --force");
  /* a regular file there (an empty one too): said as such, not as a non-empty directory */
  snprintf(cmd, sizeof cmd, "touch %s.f && %s convert --in %s --out %s.f --to mxfp8 --quiet", o, bin, src, o);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, ".f: is a file, not a directory (--out names the checkpoint directory to write); choose another "
                      "--out, or pass --force to replace the file by the directory");
  snprintf(cmd, sizeof cmd, "rm -f %s.f", o);
  harness_run(cmd, NULL, 0);
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s/ --to mxfp8 --quiet --force && ls %s",
           bin, src, o, o);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK(strstr(out, "keep") == NULL);
  CHECK_CONTAINS(out, "model.safetensors");
  /* A quantized input converts only back to bf16. */
  snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s/again --to fp8-block", bin, o, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "is already quantized (mxfp8); convert it --to bf16 first");
  /* --keep-bf16=--x: a value starting with -- can still be given */
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s/dash --to fp8-block --quiet "
           "--keep-bf16=--none", bin, src, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  /* well-formed brackets and classes are taken (and match) */
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s/br --to fp8-block --no-progress "
           "--keep-bf16 'model.layers.[!1-9].mlp.[]u]p_proj' --keep-bf16 '*.[[:digit:]].self_attn.q_proj'", bin, src, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "model.layers.0.mlp.up_proj.weight BF16 [200,320] -> copied (--keep-bf16)");
  CHECK_CONTAINS(out, "model.layers.1.mlp.up_proj.weight BF16 [200,320] -> fp8-block");
  CHECK_CONTAINS(out, "model.layers.2.self_attn.q_proj.weight BF16 [256,320] -> copied (--keep-bf16)");
}

/* The weights against config.json before anything is written, as model_load
 * (`rlrun score`, runs) checks them: a layer count, a shape, a name or an
 * expert count that disagrees is exit 2 naming the tensor, expected and
 * found shape. It converted them all (exit 0). */
/* A model rlrun cannot run itself (here: yarn RoPE scaling) converts all the
 * same — the output is for engines that can — with a note that says why. */
TEST(convert_notes_a_model_rlrun_cannot_run) {
  const char *d = harness_tmpdir();
  char in[800], o[800], cmd[4096];
  snprintf(in, sizeof in, "%s/yarn", d);
  snprintf(o, sizeof o, "%s/yarn-fp8", d);
  synth_tensor ts[64];
  int n = full_ckpt(ts, 64, 64, 16, 2, 0, ST_BF16, NULL, 0);
  const char *cfg = "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"vocab_size\": 64, "
                    "\"hidden_size\": 64, \"intermediate_size\": 16, \"num_hidden_layers\": 2, "
                    "\"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 32, "
                    "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}";
  REQUIRE(make_dir(in, cfg, ts, n, NULL, 0, 0) == 0);
  snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s --to fp8-block", harness_bin(), in, o);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "convert: note: rlrun itself cannot score or train this model (rope scaling 'yarn' is not "
                      "implemented yet");
  CHECK_CONTAINS(out, "the conversion is written all the same, for engines that can\n");
  snprintf(cmd, sizeof cmd, "%s/model.safetensors", o);
  CHECK(access(cmd, F_OK) == 0);
  /* and score refuses it, saying the same */
  snprintf(cmd, sizeof cmd, "%s/in.jsonl", d);
  harness_write_file(cmd, "{\"tokens\": [1, 2, 3]}\n");
  snprintf(cmd, sizeof cmd, "%s score --model %s --input %s/in.jsonl --out %s/s.jsonl", harness_bin(), o, d, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "rope scaling 'yarn' is not implemented yet");
}

TEST(convert_refuses_checkpoints_that_disagree_with_config) {
  const char *d = harness_tmpdir(), *bin = harness_bin();
  char dir[800], cmd[4096], want[4096];
  synth_tensor ts[128];
  struct {
    const char *name, *cfg;
    int L, E;
    synth_tensor over;
    const char *msg; /* after "rlrun convert: DIR: " */
  } cases[] = {
      {"l2", QWEN3_CFG(64, 16, 3), 2, 0, {NULL, ST_BF16, 0, {0, 0}},
       "config.json says num_hidden_layers = 3, but the checkpoint's tensors are for 2 layers (model.layers.0 to "
       "model.layers.1): the config and the weights disagree; fix num_hidden_layers or use the config.json these "
       "weights came with"},
      {"l4", QWEN3_CFG(64, 16, 3), 4, 0, {NULL, ST_BF16, 0, {0, 0}},
       "config.json says num_hidden_layers = 3, but the checkpoint's tensors are for 4 layers (model.layers.0 to "
       "model.layers.3): the config and the weights disagree; fix num_hidden_layers or use the config.json these "
       "weights came with"},
      {"kt", QWEN3_CFG(64, 16, 3), 3, 0, {"model.layers.1.self_attn.k_proj.weight", ST_BF16, 2, {64, 32}},
       "tensor 'model.layers.1.self_attn.k_proj.weight' (model.safetensors) has shape [64, 32], but config.json "
       "implies [32, 64] = [num_key_value_heads × head_dim, hidden_size] (transposed? checkpoints store a linear "
       "weight as [out features, in features]): the config and the weights disagree; use the config.json these "
       "weights came with, or re-export the checkpoint"},
      {"qn", QWEN3_CFG(64, 16, 3), 3, 0, {"model.layers.2.self_attn.q_norm.weight", ST_BF16, 2, {1, 32}},
       "tensor 'model.layers.2.self_attn.q_norm.weight' (model.safetensors) has shape [1, 32], but config.json "
       "implies [32] = [head_dim]: the config and the weights disagree; use the config.json these weights came "
       "with, or re-export the checkpoint"},
      {"nm", QWEN3_CFG(64, 16, 3), 3, 0, {NULL, ST_BF16, 0, {0, 0}},
       "the checkpoint has no tensor 'model.norm.weight' (config.json implies [64] = [hidden_size]); it holds 1 "
       "tensor this config does not use, 'model.final_norm.weight' (renamed?): the config and the weights "
       "disagree; use the config.json these weights came with, or re-export the checkpoint with Hugging Face's "
       "tensor names"},
      {"x3", QWEN3_MOE_CFG(64, 16, 2, 2), 2, 2, {"model.layers.1.mlp.experts.2.up_proj.weight", ST_BF16, 2, {16, 64}},
       "tensor 'model.layers.1.mlp.experts.2.up_proj.weight' is for routed expert 2, but config.json has "
       "num_experts = 2 (experts 0 to 1): the config and the weights disagree; fix num_experts or use the "
       "config.json these weights came with"},
      {"dx", QWEN3_CFG(64, 16, 2), 2, 2, {NULL, ST_BF16, 0, {0, 0}},
       "tensor 'model.layers.1.mlp.experts.1.gate_proj.weight' is for routed expert 1, but config.json's "
       "model_type qwen3 is dense (no experts): the config and the weights disagree; use the config.json these "
       "weights came with (qwen3_moe?)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    snprintf(dir, sizeof dir, "%s/%s", d, cases[i].name);
    int n = full_ckpt(ts, 128, 64, 16, cases[i].L, cases[i].E, ST_BF16, &cases[i].over, cases[i].over.name ? 1 : 0);
    if (!strcmp(cases[i].name, "nm"))
      for (int k = 0; k < n; k++)
        if (!strcmp(ts[k].name, "model.norm.weight")) ts[k].name = "model.final_norm.weight";
    REQUIRE(make_dir(dir, cases[i].cfg, ts, n, NULL, -1, 0) == 0);
    const char *fmts[2] = {"fp8-block", "bf16"};
    for (int f = 0; f < 2; f++) {
      snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s/out --to %s", bin, dir, d, fmts[f]);
      CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
      snprintf(want, sizeof want, "rlrun convert: %s: %s\n", dir, cases[i].msg);
      CHECK_STREQ(out, want);
    }
    /* `rlrun score` refuses the same checkpoint with the same words */
    snprintf(cmd, sizeof cmd, "%s score --model %s --input /dev/null --out %s/s.jsonl", bin, dir, d);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
    snprintf(want, sizeof want, "rlrun score: loading model %s: %s\n", dir, cases[i].msg);
    CHECK_STREQ(out, want);
  }
  snprintf(cmd, sizeof cmd, "ls %s", d); /* nothing written */
  harness_run(cmd, out, sizeof out);
  CHECK_STREQ(out, "dx\nkt\nl2\nl4\nnm\nqn\nx3\n");
}

TEST(model_config_reads_qwen3_and_refuses_the_rest) {
  model_config c;
  rl_err e;
  REQUIRE(model_config_load(tc_fixture("tiny_qwen3"), &c, &e) == 0);
  CHECK_EQ_I64(c.kind, MODEL_KIND_QWEN3);
  CHECK_EQ_I64(c.hidden_size, 320);
  CHECK_EQ_I64(c.num_key_value_heads, 2);
  CHECK_EQ_I64(c.head_dim, 64);
  CHECK_NEAR(c.rope_theta, 1e6, 0);
  CHECK_STREQ(c.rope_type, "default");
  CHECK_EQ_I64(c.n_eos, 2);
  CHECK_EQ_I64(c.eos_token_ids[1], 3);
  CHECK_STREQ(c.dtype, "bfloat16");
  CHECK_EQ_I64(model_config_layer_is_moe(&c, 0), 0);
  model_config_free(&c);
  REQUIRE(model_config_load(tc_fixture("tiny_qwen3_moe"), &c, &e) == 0);
  CHECK_EQ_I64(c.kind, MODEL_KIND_QWEN3_MOE);
  CHECK_EQ_I64(c.num_experts, 4);
  CHECK_EQ_I64(c.num_experts_per_tok, 2);
  CHECK_EQ_I64(c.moe_intermediate_size, 64);
  CHECK_EQ_I64(c.norm_topk_prob, 1);
  CHECK_EQ_I64(c.tie_word_embeddings, 1);
  CHECK_EQ_I64(c.bos_token_id, -1);
  CHECK_NEAR(c.rope_theta, 1e6, 0); /* transformers 5.x rope_parameters */
  CHECK_EQ_I64(model_config_layer_is_moe(&c, 1), 1);
  model_config_free(&c);
  struct {
    const char *json, *msg;
  } bad[] = {
      {"{\"model_type\": \"qwen2\"}", "model_type 'qwen2' is not supported"},
      {"{\"model_type\": \"qwen3\", \"architectures\": [\"Qwen3ForSequenceClassification\"]}",
       "architectures[0] is 'Qwen3ForSequenceClassification'"},
      {"{\"model_type\": \"qwen3\", \"vocab_size\": 10}", "key 'hidden_size' is missing"},
      {"{\"model_type\": \"qwen3\", \"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 8, "
       "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 8}",
       "'num_key_value_heads' is 8, outside [1, 4]"},
      {"{\"model_type\": \"qwen3\", \"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 8, "
       "\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"num_key_value_heads\": 4}",
       "test.json"},
      {"{\"model_type\": \"qwen3\", \"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 8, "
       "\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"num_key_value_heads\": 4}",
       "num_attention_heads (6) is not a multiple of num_key_value_heads (4)"},
      {"{\"model_type\": \"qwen3\", \"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 8, "
       "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"hidden_act\": \"gelu\"}",
       "hidden_act 'gelu' is not supported"},
      {"{\"model_type\": \"qwen3_moe\", \"vocab_size\": 10, \"hidden_size\": 64, \"num_hidden_layers\": 2, "
       "\"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 8, "
       "\"moe_intermediate_size\": 8}",
       "'num_experts_per_tok' is 8, outside [1, 4]"},
      {"{\"model_type\": \"qwen3_moe\", \"vocab_size\": 10, \"hidden_size\": 64, \"num_hidden_layers\": 2, "
       "\"num_attention_heads\": 4, \"num_experts\": 4, \"num_experts_per_tok\": 2, "
       "\"moe_intermediate_size\": 8, \"mlp_only_layers\": [5]}",
       "mlp_only_layers[0] is not a layer index in [0, 2)"},
      {"{\"model_type\": \"qwen3\", \"vocab_size\": 10, \"hidden_size\": 64, \"intermediate_size\": 8, "
       "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"rope_scaling\": {\"type\": \"warp\"}}",
       "rope type 'warp' is unknown"},
      {"{\"model_type\": \"qwen3\",}", "test.json:1:"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK_EQ_I64(model_config_parse("test.json", bad[i].json, strlen(bad[i].json), &c, &e), RL_EXIT_USAGE);
    CHECK_CONTAINS(e.msg, bad[i].msg);
  }
}

TEST(convert_progress_lines_and_bar) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s/a --to fp8-block",
           harness_bin(), tc_fixture("tiny_qwen3"), harness_tmpdir());
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  CHECK_CONTAINS(out, "convert: [1/36] ");
  CHECK_CONTAINS(out, "convert: [36/36] ");
  CHECK(strchr(out, '\r') == NULL);
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s/b --to fp8-block --progress",
           harness_bin(), tc_fixture("tiny_qwen3"), harness_tmpdir());
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  CHECK_CONTAINS(out, "\r[##############################] 36/36 tensors  0.00/0.00 GB");
  CHECK_CONTAINS(out, "MB/s");
  CHECK(strstr(out, "convert: [1/36]") == NULL);
}

/* Peak RSS of a conversion stays within 2 × the largest tensor + 64 MiB
 * (FORMATS/issue contract); CI size: one 64 MiB tensor. The ≥ 2 GB run is
 * bench/bench_convert.c. Skipped under ASan (its shadow memory counts in RSS). */
TEST(convert_peak_memory_streams) {
#if defined(__SANITIZE_ADDRESS__)
  printf("    (skipped under AddressSanitizer)\n");
#else
  const char *d = harness_tmpdir();
  char in[800], cmd[4096];
  snprintf(in, sizeof in, "%s/big", d);
  synth_tensor ts[16]; /* a complete 1-layer model: gate, up and down are 64 MiB each */
  int n = full_ckpt(ts, 16, 4096, 8192, 1, 0, ST_BF16, NULL, 0);
  REQUIRE(make_dir(in, QWEN3_CFG(4096, 8192, 1), ts, n, NULL, -1, 0) == 0);
  const char *fmts[2] = {"fp8-block", "nvfp4"};
  for (int i = 0; i < 1; i++) {
    /* the conversion's own exit status (not a pipe's): it must have converted */
    snprintf(cmd, sizeof cmd,
             "/usr/bin/time -o %s/rss%d -f 'maxrss_kb=%%M' %s convert --in %s --out %s/o%d --to %s --quiet && cat %s/rss%d",
             d, i, harness_bin(), in, d, i, fmts[i], d, i);
    REQUIRE(harness_run(cmd, out, sizeof out) == 0);
    long kb = 0;
    const char *p = strstr(out, "maxrss_kb=");
    REQUIRE(p != NULL);
    kb = atol(p + 10);
    /* What the process holds before converting anything (in a CUDA build the
     * cuBLASLt/NCCL/runtime images alone are ~150 MiB) is not the converter's. */
    snprintf(cmd, sizeof cmd, "/usr/bin/time -f 'maxrss_kb=%%M' %s version 2>&1 | grep maxrss_kb",
             harness_bin());
    REQUIRE(harness_run(cmd, out, sizeof out) == 0);
    p = strstr(out, "maxrss_kb=");
    REQUIRE(p != NULL);
    long base = atol(p + 10);
    long limit = base + (2 * 64 + 64) * 1024;
    printf("    peak RSS %ld KiB for a 64 MiB tensor (baseline %ld KiB; limit %ld KiB, %.2f of it)\n",
           kb, base, limit, (double)kb / (double)limit);
    CHECK_MSG(kb > 0 && kb <= limit, "peak RSS %ld KiB > %ld KiB", kb, limit);
  }
#endif
}

/* SIGTERM (or SIGINT) stops score between lines: exit 130, the temporary
 * OUT.tmp.PID removed, OUT not written. The input is a FIFO the shell holds
 * open, so score is waiting for line 3 when the signal comes. */
TEST(score_interrupted_removes_its_temporary) {
  char d[1024], cmd[12000], out[4096], bin[PATH_MAX], model[PATH_MAX];
  snprintf(d, sizeof d, "%s/score-int", harness_tmpdir());
  mkdir(d, 0755);
  REQUIRE(realpath(harness_bin(), bin) && realpath(tc_fixture("tiny_qwen3"), model));
  /* 3<>: a read-write open of the FIFO, which never blocks (a write-only one
   * waits for a reader, forever if score never starts) */
  snprintf(cmd, sizeof cmd,
           "cd %s && mkfifo in.fifo && { %s score --model %s --input in.fifo --out o.jsonl & p=$!; exec 3<>in.fifo; "
           "printf '{\"tokens\": [1, 2]}\\n{\"tokens\": [3, 4, 5]}\\n' >&3; "
           "i=0; while ! ls o.jsonl.tmp.* >/dev/null 2>&1 && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
           "sleep 0.3; kill -TERM $p; wait $p; echo rc=$?; exec 3>&-; ls; }",
           d, bin, model);
  harness_run(cmd, out, sizeof out);
  CHECK_CONTAINS(out, "rlrun score: interrupt: stopping; a partial output is removed (interrupt again to stop now)");
  CHECK_CONTAINS(out, "rlrun score: interrupted after input line 2: o.jsonl is not written");
  CHECK_CONTAINS(out, "rc=130\nin.fifo\n");
  CHECK(strstr(out, "\no.jsonl") == NULL); /* neither OUT nor its temporary */
}

/* An output path that is a FIFO (or /dev/null: a device) is written in place:
 * `score --out` used to write OUT.tmp and rename it over the path, which run as
 * root replaced /dev/null by a regular file; `convert --force` moved it aside.
 * A FIFO stands in for the device here (the test keeps its read end open). */
TEST(outputs_to_a_fifo_are_written_in_place) {
  const char *bin = harness_bin();
  char d[1024], fifo[1100], in[1100], cmd[4096], out[4096];
  snprintf(d, sizeof d, "%s/fifo-out", harness_tmpdir());
  mkdir(d, 0755);
  snprintf(fifo, sizeof fifo, "%s/out.fifo", d);
  snprintf(in, sizeof in, "%s/in.jsonl", d);
  unlink(fifo);
  REQUIRE(mkfifo(fifo, 0644) == 0);
  FILE *f = fopen(in, "w");
  REQUIRE(f);
  fputs("{\"tokens\": [1, 2, 3]}\n", f);
  fclose(f);
  int rd = open(fifo, O_RDWR | O_NONBLOCK); /* a reader, so the writer's open does not block */
  REQUIRE(rd >= 0);
  snprintf(cmd, sizeof cmd, "%s score --model %s --input %s --out %s 2>/dev/null", bin, tc_fixture("tiny_qwen3"), in,
           fifo);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  char buf[4096];
  ssize_t n = read(rd, buf, sizeof buf - 1);
  REQUIRE(n > 0);
  buf[n] = 0;
  CHECK(strncmp(buf, "{\"logprobs\": [", 14) == 0);
  struct stat st;
  REQUIRE(stat(fifo, &st) == 0);
  CHECK(S_ISFIFO(st.st_mode)); /* still the FIFO, not a renamed regular file */
  snprintf(cmd, sizeof cmd, "ls %s", d);
  harness_run(cmd, out, sizeof out);
  CHECK_STREQ(out, "in.jsonl\nout.fifo\n"); /* no out.fifo.tmp left */
  /* `--out -`: stdout */
  snprintf(cmd, sizeof cmd, "%s score --model %s --input %s --out - 2>/dev/null", bin, tc_fixture("tiny_qwen3"), in);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK(strncmp(out, buf, (size_t)n) == 0 && strlen(out) == (size_t)n);
  /* convert never moves such a path aside, --force or not */
  snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s --to fp8-block --force", bin, tc_fixture("tiny_qwen3"), fifo);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "is a FIFO, not a directory");
  REQUIRE(stat(fifo, &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
  /* rundir_write_atomic (export --out, run files) */
  rl_err e;
  REQUIRE(rundir_write_atomic(fifo, "abc\n", 4, &e) == 0);
  n = read(rd, buf, sizeof buf - 1);
  CHECK_EQ_I64(n, 4);
  CHECK(strncmp(buf, "abc\n", 4) == 0);
  REQUIRE(stat(fifo, &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
  close(rd);
}

#define HF_BF16 "tests/fixtures/model/qwen3/hf-bf16"

/* An --out that holds --in: with --force, publishing the output replaced the
 * directory the input lay in, deleting the model it had just converted (exit
 * 0). An --out inside --in became part of the model directory. Both are exit
 * 2 now, before anything is read, and the input stays. */
TEST(convert_refuses_nested_in_and_out) {
  const char *d = harness_tmpdir();
  char cmd[8192], want[2048], bin[2048];
  if (!realpath(harness_bin(), bin)) snprintf(bin, sizeof bin, "%s", harness_bin()); /* the test cds */
  snprintf(cmd, sizeof cmd, "mkdir -p %s/p && cp -r " HF_BF16 " %s/p/in", d, d);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  snprintf(cmd, sizeof cmd, "%s convert --device cpu --quiet --to fp8-block --in %s/p/in --out %s/p --force", bin, d, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  snprintf(want, sizeof want, "rlrun convert: --in %s/p/in lies inside --out %s/p: writing --out would replace the "
           "input it reads; choose an --out outside the model directory\n", d, d);
  CHECK_STREQ(out, want);
  snprintf(cmd, sizeof cmd, "%s convert --device cpu --quiet --to fp8-block --in %s/p/in/ --out %s/p/in/q/", bin, d, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  snprintf(want, sizeof want, "rlrun convert: --out %s/p/in/q/ lies inside --in %s/p/in/: the output would become "
           "part of the model directory it converts; choose an --out outside it\n", d, d);
  CHECK_STREQ(out, want);
  snprintf(cmd, sizeof cmd, "ls %s/p %s/p/in", d, d);
  harness_run(cmd, out, sizeof out);
  snprintf(want, sizeof want, "%s/p:\nin\n\n%s/p/in:\nconfig.json\ngeneration_config.json\nmodel.safetensors\n", d, d);
  CHECK_STREQ(out, want); /* the input intact, nothing written */
  /* a sibling is fine, relative paths resolved */
  snprintf(cmd, sizeof cmd, "cd %s/p/in && %s convert --device cpu --quiet --to fp8-block --in . --out ../q", d, bin);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  snprintf(cmd, sizeof cmd, "cd %s/p/in && %s convert --device cpu --quiet --to fp8-block --in . --out q", d, bin);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  CHECK_CONTAINS(out, "rlrun convert: --out q lies inside --in .: ");
}

/* --bf16-first-layers and --bf16-last-layers near INT64_MAX: their sum
 * overflowed negative and passed the "more than the model's layers" check
 * (exit 0, every layer BF16); a value past int64 saturated silently, '+1' and
 * ' 1' were taken. --shard-size took hex ("0x10": 16 bytes) and a leading
 * blank. Each is exit 2 now. */
TEST(convert_refuses_layer_counts_past_the_model_and_odd_numbers) {
  const char *d = harness_tmpdir(), *bin = harness_bin();
  struct {
    const char *args, *msg;
  } cases[] = {
      {"--bf16-first-layers 9223372036854775807 --bf16-last-layers 9223372036854775807",
       "rlrun convert: --bf16-first-layers 9223372036854775807 + --bf16-last-layers 9223372036854775807 exceed the "
       "model's 2 layers\n"},
      {"--bf16-last-layers 9223372036854775807 --bf16-first-layers 1",
       "rlrun convert: --bf16-first-layers 1 + --bf16-last-layers 9223372036854775807 exceed the model's 2 layers\n"},
      {"--bf16-first-layers 99999999999999999999",
       "rlrun convert: --bf16-first-layers wants a non-negative integer, got '99999999999999999999'\n"},
      {"--bf16-last-layers +1", "rlrun convert: --bf16-last-layers wants a non-negative integer, got '+1'\n"},
      {"--bf16-last-layers ' 1'", "rlrun convert: --bf16-last-layers wants a non-negative integer, got ' 1'\n"},
      {"--shard-size 0x10", "rlrun convert: --shard-size '0x10' is not a size (e.g. 5GB, 500MB, 2GiB)\n"},
      {"--shard-size ' 5GB'", "rlrun convert: --shard-size ' 5GB' is not a size (e.g. 5GB, 500MB, 2GiB)\n"},
      {"--shard-size infGB", "rlrun convert: --shard-size 'infGB' is not a size (e.g. 5GB, 500MB, 2GiB)\n"},
  };
  char cmd[4096];
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    snprintf(cmd, sizeof cmd, "%s convert --device cpu --quiet --to fp8-block --in " HF_BF16 " --out %s/o %s", bin, d,
             cases[i].args);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
    CHECK_STREQ(out, cases[i].msg);
  }
  uint64_t sz = 0;
  CHECK_EQ_I64(convert_parse_size("+5GB", &sz), -1);
  CHECK_EQ_I64(convert_parse_size(".5KB", &sz), 0);
  CHECK_EQ_U64(sz, 500);
  CHECK_EQ_I64(convert_parse_size("1B", &sz), 0); /* one tensor a shard, still valid */
  CHECK_EQ_U64(sz, 1);
  snprintf(cmd, sizeof cmd, "%s convert --device cpu --quiet --to fp8-block --in " HF_BF16 " --out %s/o "
           "--bf16-first-layers 1 --bf16-last-layers 1", bin, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "24 tensors in, 24 out (0 quantized, 0 dequantized, 24 kept)");
}

/* The files convert copies through: a tokenizer.json that is a directory or a
 * FIFO, or a dangling symlink, was skipped without a word (exit 0, the output
 * without its tokenizer); an index that is a directory was "not valid JSON:
 * '[' or '{' expected". Exit 2 naming the entry now; a subdirectory with
 * another name is still skipped. */
TEST(convert_refuses_model_files_that_are_not_files) {
  const char *d = harness_tmpdir(), *bin = harness_bin();
  char cmd[4096], want[2048];
  struct {
    const char *make, *msg;
  } cases[] = {
      {"mkdir %s/m/tokenizer.json", "rlrun convert: %s/m/tokenizer.json is a directory, not a file: the model's files "
                                    "are copied to the output; replace it with the file or remove it\n"},
      {"mkfifo %s/m/merges.txt", "rlrun convert: %s/m/merges.txt is a FIFO, not a file: the model's files are copied "
                                 "to the output; replace it with the file or remove it\n"},
      {"ln -s /nonexistent %s/m/tokenizer_config.json",
       "rlrun convert: %s/m/tokenizer_config.json: cannot read it (No such file or directory; a dangling symlink?): "
       "the model's files are copied to the output; restore the file or remove the entry\n"},
      {"mkdir %s/m/model.safetensors.index.json",
       "rlrun convert: %s/m/model.safetensors.index.json is a directory, not the index file of a sharded checkpoint; "
       "replace it with the file or remove it\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char mk[1024];
    snprintf(mk, sizeof mk, cases[i].make, d);
    snprintf(cmd, sizeof cmd, "rm -rf %s/m && cp -r " HF_BF16 " %s/m && %s", d, d, mk);
    REQUIRE(harness_run(cmd, out, sizeof out) == 0);
    snprintf(cmd, sizeof cmd, "%s convert --device cpu --quiet --to fp8-block --in %s/m --out %s/o%zu", bin, d, d, i);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
    snprintf(want, sizeof want, cases[i].msg, d);
    CHECK_STREQ(out, want);
    snprintf(cmd, sizeof cmd, "test -e %s/o%zu", d, i);
    CHECK(harness_run(cmd, out, sizeof out) != 0); /* nothing written */
  }
  /* a subdirectory of another name (onnx/) is skipped as before; a symlink to a file is copied */
  snprintf(cmd, sizeof cmd, "rm -rf %s/m && cp -r " HF_BF16 " %s/m && mkdir %s/m/onnx && echo '{}' > %s/t.json && "
           "ln -s %s/t.json %s/m/tokenizer.json && %s convert --device cpu --quiet --to fp8-block --in %s/m --out %s/ok "
           "&& ls %s/ok", d, d, d, d, d, d, bin, d, d, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "2 file(s) copied");
  CHECK_CONTAINS(out, "config.json\ngeneration_config.json\nmodel.safetensors\ntokenizer.json\n");
}
