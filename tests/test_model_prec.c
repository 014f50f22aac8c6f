/* test_model_prec.c — the model under the low-precision policies, loading
 * quantized checkpoints, and `rlrun score` on the fixture models.
 *
 * Tolerances (rel = max|ours − ref| / max|ref| against the FP32 oracle's
 * logits; worst measured on this machine in brackets):
 *   fp8-block (W 128×128, X 1×128, E4M3: 3 mantissa bits, ≤ 3.1% rounding per
 *   element of weights and activations, through 7–8 linear layers): rel ≤ 0.3
 *   [dense 0.127, MoE 0.200]; mxfp8 (1×32 E8M0 scales): rel ≤ 0.2 [0.116];
 *   nvfp4 experts (MoE, rest BF16): rel ≤ 0.2 [0.104]. (The random fixture
 *   weights make every logit sensitive; BF16 is 0.014 on the same measure.)
 * Each must also differ from the BF16 policy's logits (the format really ran).
 * A checkpoint written by `convert` (fp8-block, mxfp8, nvfp4) loads to BF16
 * masters within the format's rounding of the original (rel ≤ 2^-4 per
 * tensor for E4M3, ≤ 0.5 for E2M1 blocks) and gives logits within the same
 * bounds. `rlrun score --precision fp32` reproduces the fixture log-probs to
 * 2e-5, bf16 to 8e-2. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"
#include "stages/convert.h"
#include "stages/sync.h"
#include "state/safetensors.h"

#define FXR "tests/fixtures/model"

/* Fixture float tensor (caller frees), NULL when absent. */
static void *fxp_read(const char *model_name, const char *tensor, size_t *numel) {
  char path[256];
  snprintf(path, sizeof path, FXR "/%s/fixtures.safetensors", model_name);
  st_file *f;
  rl_err e = {0};
  if (st_file_open(path, &f, &e)) return NULL;
  const st_tensor *t = st_file_find(f, tensor);
  void *x = t ? malloc(t->nbytes + 4) : NULL;
  if (x && st_file_read(f, t, x, &e)) free(x), x = NULL;
  if (x && numel) *numel = t->numel;
  st_file_close(f);
  return x;
}

static double relerr(const float *a, const float *b, size_t n) {
  double dm = 0, bm = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= dm)) dm = d;
    bm = fmax(bm, fabs((double)b[i]));
  }
  return bm > 0 ? dm / bm : dm;
}

/* Logits of the fixture batch through the model in dir under policy (fmt,
 * expert_fmt); NULL on failure (reported). */
static float *prec_logits(const char *model_name, const char *dir, qformat fmt, qformat efmt) {
  rl_err e = {0};
  model *m = NULL;
  if (model_load(dir, NULL, &m, &e)) {
    harness_fail(__FILE__, __LINE__, "model_load %s: %s", dir, e.msg);
    return NULL;
  }
  quant_policy p;
  quant_policy_init(&p, fmt, efmt);
  size_t nt = 0, no = 0;
  int32_t *tok = fxp_read(model_name, "tokens", &nt), *off = fxp_read(model_name, "seq_off", &no);
  model_acts *a = model_acts_new();
  model_batch b = {(int)nt, tok, {(int)no - 1, off}};
  float *out = NULL;
  if (model_quantize(m, &p, &e) || model_forward(m, &b, NULL, a, &e)) {
    harness_fail(__FILE__, __LINE__, "%s: %s", model_name, e.msg);
  } else {
    out = malloc(nt * (size_t)m->V * sizeof(float));
    memcpy(out, a->logits, nt * (size_t)m->V * sizeof(float));
  }
  model_acts_free(a);
  model_free(m);
  free(tok), free(off);
  return out;
}

/* One policy against the oracle and against BF16. */
static void prec_case(const char *model_name, const char *label, qformat fmt, qformat efmt,
                      double tol) {
  char dir[256];
  snprintf(dir, sizeof dir, FXR "/%s/hf", model_name);
  size_t n = 0;
  float *ref = fxp_read(model_name, "logits", &n);
  float *bf = prec_logits(model_name, dir, QFMT_BF16, QFMT_BF16);
  float *q = prec_logits(model_name, dir, fmt, efmt);
  REQUIRE(ref && bf && q);
  double r = relerr(q, ref, n), rb = relerr(bf, ref, n), d = relerr(q, bf, n);
  printf("  %-22s logits rel vs fp32 oracle %.3e (bf16: %.3e), vs bf16 policy %.3e (tol %.2g)\n",
         label, r, rb, d, tol);
  CHECK(r <= tol);
  CHECK(d > 1e-3); /* the format was applied */
  free(ref), free(bf), free(q);
}

TEST(model_prec_fp8_block_mxfp8_nvfp4_policies) {
  prec_case("qwen3", "qwen3 fp8-block", QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, 0.3);
  prec_case("qwen3", "qwen3 mxfp8", QFMT_MXFP8, QFMT_MXFP8, 0.2);
  prec_case("qwen3_moe", "moe fp8-block", QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, 0.3);
  prec_case("qwen3_moe", "moe nvfp4 experts", QFMT_BF16, QFMT_NVFP4, 0.2);
  /* nvfp4 outside the experts is refused (FORMATS.md) */
  rl_err e = {0};
  model *m = NULL;
  REQUIRE(model_load(FXR "/qwen3/hf", NULL, &m, &e) == 0);
  quant_policy p;
  quant_policy_init(&p, QFMT_NVFP4, QFMT_NVFP4);
  CHECK_EQ_I64(model_quantize(m, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "nvfp4");
  /* stale views are refused after a weight change */
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  REQUIRE(model_quantize(m, &p, &e) == 0);
  m->quantized = 0;
  int32_t tok[2] = {1, 2}, off[2] = {0, 2};
  model_batch b = {2, tok, {1, off}};
  model_acts *a = model_acts_new();
  CHECK_EQ_I64(model_forward(m, &b, NULL, a, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "model_quantize");
  /* bad token ids name the position */
  m->quantized = 1;
  tok[1] = 999;
  CHECK_EQ_I64(model_forward(m, &b, NULL, a, &e), RL_EXIT_USAGE);
  model_acts_free(a);
  model_free(m);
}

/* Convert fixture model_name to fmt with the convert stage, load it back. */
static void ckpt_case(const char *model_name, qformat to, double tol_w, double tol_logits) {
  char in[512], out[512];
  snprintf(in, sizeof in, FXR "/%s/hf", model_name);
  /* The MoE fixture's config.json has transformers 5's num_local_experts and no
   * head_dim: the converter reads it as saved. */
  snprintf(out, sizeof out, "%s/%s-%d", harness_tmpdir(), model_name, (int)to);
  convert_opts o;
  convert_opts_init(&o);
  o.in_dir = in, o.out_dir = out, o.to = to, o.quiet = 1, o.device = CONVERT_DEVICE_CPU;
  FILE *devnull = fopen("/dev/null", "w");
  o.log = devnull;
  convert_stats st;
  rl_err e = {0};
  int rc = convert_run(&o, &st, &e);
  fclose(devnull);
  CHECK_MSG(rc == 0, "convert %s: %s", model_name, e.msg);
  if (rc) return;
  model *a = NULL, *b = NULL;
  REQUIRE(model_load(in, NULL, &a, &e) == 0);
  rc = model_load(out, NULL, &b, &e);
  CHECK_MSG(rc == 0, "load converted %s: %s", out, e.msg);
  if (rc) {
    model_free(a);
    return;
  }
  double worst = 0;
  int changed = 0;
  for (int i = 0; i < a->n_params; i++) {
    size_t n = (size_t)(a->params[i].rows * a->params[i].cols);
    float *x = malloc(n * 4), *y = malloc(n * 4);
    ops_f32_from_bf16_cpu(x, a->params[i].w, n);
    ops_f32_from_bf16_cpu(y, b->params[i].w, n);
    double r = relerr(y, x, n);
    worst = fmax(worst, r);
    changed += r > 0;
    free(x), free(y);
  }
  model_free(a), model_free(b);
  float *ref = fxp_read(model_name, "logits", NULL), *q = prec_logits(model_name, out, QFMT_BF16, QFMT_BF16);
  size_t n = 0;
  free(fxp_read(model_name, "logits", &n));
  REQUIRE(ref && q);
  double rl = relerr(q, ref, n);
  printf("  %s %s checkpoint: %d tensors changed, worst master rel %.3e (tol %.2g); logits rel "
         "%.3e (tol %.2g)\n",
         model_name, qtensor_format_name(to), changed, worst, tol_w, rl, tol_logits);
  CHECK(changed > 0);
  CHECK(worst <= tol_w);
  CHECK(rl <= tol_logits);
  free(ref), free(q);
}

TEST(model_prec_loads_quantized_checkpoints) {
  ckpt_case("qwen3", QFMT_FP8_BLOCK, 0.0625, 0.15);
  ckpt_case("qwen3", QFMT_MXFP8, 0.0625, 0.15);
  ckpt_case("qwen3_moe", QFMT_NVFP4, 0.5, 0.2);
}

/* Run `rlrun score` on the fixture's sequences; compare with its log-probs. */
static void score_case(const char *prec, double tol) {
  const char *dir = harness_tmpdir();
  char in[512], outp[512], cmd[2048], text[8192];
  snprintf(in, sizeof in, "%s/in.jsonl", dir);
  snprintf(outp, sizeof outp, "%s/out-%s.jsonl", dir, prec);
  size_t nt = 0, no = 0;
  int32_t *tok = fxp_read("qwen3", "tokens", &nt), *off = fxp_read("qwen3", "seq_off", &no);
  float *lp = fxp_read("qwen3", "logprobs", NULL);
  REQUIRE(tok && off && lp);
  FILE *f = fopen(in, "w");
  REQUIRE(f);
  for (size_t s = 0; s + 1 < no; s++) {
    fputs("{\"tokens\": [", f);
    for (int t = off[s]; t < off[s + 1]; t++) fprintf(f, "%s%d", t > off[s] ? ", " : "", tok[t]);
    fputs("]}\n\n", f); /* blank lines are skipped */
  }
  fclose(f);
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s --precision %s",
           harness_bin(), in, outp, prec);
  int st = harness_run(cmd, text, sizeof text);
  CHECK_MSG(st == 0, "%s → %d: %s", cmd, st, text);
  CHECK_CONTAINS(text, "2 sequences, 27 tokens");
  json_error_t je;
  json_t *line;
  FILE *g = fopen(outp, "r");
  REQUIRE(g);
  double worst = 0;
  int lines = 0, vals = 0;
  char buf[8192];
  while (fgets(buf, sizeof buf, g)) {
    line = json_loads(buf, 0, &je);
    json_t *arr = json_object_get(line, "logprobs");
    CHECK(json_is_array(arr));
    if (lines + 1 < (int)no && json_is_array(arr)) {
      CHECK_EQ_I64(json_array_size(arr), off[lines + 1] - off[lines] - 1);
      for (size_t t = 0; t < json_array_size(arr); t++, vals++)
        worst = fmax(worst, fabs(json_number_value(json_array_get(arr, t)) - lp[off[lines] + t]));
    }
    json_decref(line);
    lines++;
  }
  fclose(g);
  printf("  score --precision %s: %d lines, %d log-probs, max abs diff %.2e (tol %.0e)\n", prec,
         lines, vals, worst, tol);
  CHECK_EQ_I64(lines, 2);
  CHECK_EQ_I64(vals, 25);
  CHECK(worst <= tol);
  free(tok), free(off), free(lp);
}

TEST(model_score_command_reproduces_fixture_logprobs) {
  score_case("fp32", 2e-5);
  score_case("bf16", 8e-2);
  char text[4096], cmd[1024];
  const char *dir = harness_tmpdir();
  /* errors: bad token id (file:line named), cuda (exit 3), nvfp4 on dense, missing args */
  char in[512];
  snprintf(in, sizeof in, "%s/bad.jsonl", dir);
  harness_write_file(in, "{\"tokens\": [1, 2]}\n{\"tokens\": [1, 256]}\n");
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/o.jsonl",
           harness_bin(), in, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  CHECK_CONTAINS(text, "bad.jsonl:2: tokens[1]");
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/o.jsonl --device cuda",
           harness_bin(), in, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 3);
  CHECK_CONTAINS(text, "--device cpu");
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/o.jsonl --precision nvfp4",
           harness_bin(), in, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  CHECK_CONTAINS(text, "MoE experts only");
  snprintf(cmd, sizeof cmd, "%s score --input x", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  snprintf(cmd, sizeof cmd, "%s score --help", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 0);
  CHECK_CONTAINS(text, "usage: rlrun score");
}

/* FORMATS.md "What is never quantized": a recipe's keep_bf16 patterns and
 * first/last layers stay BF16 whatever the policy — the rule, the views
 * model_quantize makes, the logits (everything kept under fp8-block == the
 * BF16 policy, bit for bit) and the sync's manifest. */
TEST(model_keep_bf16_rules_views_and_sync) {
  const char *pat[] = {"*.o_proj", "*k_proj.weight"};
  CHECK_EQ_I64(model_keep_bf16_rule("model.layers.0.self_attn.q_proj.weight", NULL, 0, 1, 0, 2), MODEL_KEEP_FIRST);
  CHECK_EQ_I64(model_keep_bf16_rule("model.layers.1.mlp.down_proj.weight", NULL, 0, 0, 1, 2), MODEL_KEEP_LAST);
  CHECK_EQ_I64(model_keep_bf16_rule("model.layers.1.mlp.down_proj.weight", NULL, 0, 1, 0, 2), MODEL_KEEP_NONE);
  CHECK_EQ_I64(model_keep_bf16_rule("model.layers.1.self_attn.o_proj.weight", pat, 2, 0, 0, 2), MODEL_KEEP_PATTERN);
  CHECK_EQ_I64(model_keep_bf16_rule("model.layers.1.self_attn.k_proj.weight", pat, 2, 0, 0, 2), MODEL_KEEP_PATTERN);
  CHECK_EQ_I64(model_keep_bf16_rule("model.layers.1.self_attn.q_proj.weight", pat, 2, 0, 0, 2), MODEL_KEEP_NONE);
  CHECK_EQ_I64(model_keep_bf16_rule("model.layers.10.mlp.up_proj.weight", NULL, 0, 1, 0, 12), MODEL_KEEP_NONE);
  CHECK_EQ_I64(model_keep_bf16_rule("model.layers.10.mlp.up_proj.weight", NULL, 0, 0, 2, 12), MODEL_KEEP_LAST);
  const char *head[] = {"lm_head"};
  CHECK_EQ_I64(model_keep_bf16_rule("lm_head.weight", head, 1, 0, 0, 2), MODEL_KEEP_PATTERN);
  CHECK_EQ_I64(model_layer_of_name("model.layers.17.mlp.gate_proj.weight"), 17);
  CHECK_EQ_I64(model_layer_of_name("lm_head.weight"), -1);

  rl_err e = {0};
  model *m = NULL;
  REQUIRE(model_load(FXR "/qwen3/hf", NULL, &m, &e) == 0);
  REQUIRE(m->L == 2);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  /* layer 0 by bf16_first_layers 1; layer 1's o_proj and k_proj by pattern */
  model_keep_bf16(m, pat, 2, 1, 0);
  REQUIRE(model_quantize(m, &p, &e) == 0);
  const model_layer *y0 = &m->layers[0], *y1 = &m->layers[1];
  const model_linear *kept[] = {&y0->q, &y0->k, &y0->v, &y0->o, &y0->gate, &y0->up, &y0->down, &y1->o, &y1->k};
  const model_linear *quant[] = {&y1->q, &y1->v, &y1->gate, &y1->up, &y1->down};
  for (size_t i = 0; i < sizeof kept / sizeof *kept; i++)
    CHECK_MSG(kept[i]->q.fmt == QFMT_BF16, "%s: format %d, want bf16", kept[i]->p->name, kept[i]->q.fmt);
  for (size_t i = 0; i < sizeof quant / sizeof *quant; i++)
    CHECK_MSG(quant[i]->q.fmt == QFMT_FP8_BLOCK, "%s: format %d, want fp8-block", quant[i]->p->name, quant[i]->q.fmt);
  /* the sync sends exactly those as BF16 masters */
  sync_manifest mf;
  REQUIRE(sync_manifest_build(m, &p, 0, 0, &mf, &e) == 0);
  int n_bf16_lin = 0, n_fp8 = 0;
  for (int i = 0; i < mf.n; i++) {
    const model_param *q = &m->params[mf.v[i].param];
    if (q->cols == 1 || strstr(q->name, "embed") || strstr(q->name, "norm")) continue;
    if (mf.v[i].part == SYNC_PART_BF16) {
      n_bf16_lin++;
      CHECK_MSG(q->keep_bf16, "%s sent as bf16", q->name);
    }
    if (mf.v[i].part == SYNC_PART_DATA) {
      n_fp8++;
      CHECK_MSG(!q->keep_bf16, "%s sent quantized", q->name);
    }
  }
  CHECK_EQ_I64(n_bf16_lin, 9);
  CHECK_EQ_I64(n_fp8, 5);
  sync_manifest_free(&mf);
  /* everything kept: the fp8-block policy computes the BF16 policy's logits bit for bit */
  size_t nt = 0, no = 0;
  int32_t *tok = fxp_read("qwen3", "tokens", &nt), *off = fxp_read("qwen3", "seq_off", &no);
  REQUIRE(tok && off);
  model_batch b = {(int)nt, tok, {(int)no - 1, off}};
  model_acts *a = model_acts_new();
  const char *all[] = {"*"};
  quant_policy pb;
  quant_policy_init(&pb, QFMT_BF16, QFMT_BF16);
  float *lb = malloc(nt * (size_t)m->V * sizeof(float));
  REQUIRE(model_quantize(m, &pb, &e) == 0 && model_forward(m, &b, NULL, a, &e) == 0);
  memcpy(lb, a->logits, nt * (size_t)m->V * sizeof(float));
  model_keep_bf16(m, all, 1, 0, 0);
  REQUIRE(model_quantize(m, &p, &e) == 0 && model_forward(m, &b, NULL, a, &e) == 0);
  CHECK(memcmp(lb, a->logits, nt * (size_t)m->V * sizeof(float)) == 0);
  model_keep_bf16(m, NULL, 0, 0, 0); /* marks cleared: fp8-block differs again */
  REQUIRE(model_quantize(m, &p, &e) == 0 && model_forward(m, &b, NULL, a, &e) == 0);
  CHECK(memcmp(lb, a->logits, nt * (size_t)m->V * sizeof(float)) != 0);
  free(lb), free(tok), free(off);
  model_acts_free(a);
  model_free(m);
}

/* Write value v as element (row, col) of F32 tensor `name` of a safetensors
 * file (a vector: element row, col 0). */
static int poke_f32(const char *path, const char *name, int64_t row, int64_t col, float v) {
  st_file *f;
  rl_err e;
  if (st_file_open(path, &f, &e)) return -1;
  const st_tensor *t = st_file_find(f, name);
  int64_t cols = t && t->ndim == 2 ? t->shape[1] : 1;
  uint64_t at = t && t->dtype == ST_F32 && t->ndim <= 2 ? t->begin + (uint64_t)(row * cols + col) * 4 : 0;
  st_file_close(f);
  FILE *g = fopen(path, "r+b");
  uint64_t hl = 0;
  if (!at || !g || fread(&hl, 8, 1, g) != 1 || fseek(g, (long)(8 + hl + at), SEEK_SET) || fwrite(&v, 4, 1, g) != 1) {
    if (g) fclose(g);
    return -1;
  }
  return fclose(g);
}

/* A NaN or Inf weight is a damaged checkpoint: `rlrun score` names the tensor,
 * the first bad row and column, exit 2 (bad input). It said "the logits of
 * token 0 are not finite; the forward diverged (lower the learning rate or
 * check the weights)", exit 1. */
TEST(model_score_names_a_nonfinite_weight) {
  const char *dir = harness_tmpdir();
  char cmd[2048], text[4096], in[600], want[2048];
  snprintf(cmd, sizeof cmd, "cp -r " FXR "/qwen3/hf %s/nan", dir);
  REQUIRE(harness_run(cmd, NULL, 0) == 0);
  snprintf(in, sizeof in, "%s/nan/model.safetensors", dir);
  REQUIRE(poke_f32(in, "model.layers.1.mlp.up_proj.weight", 5, 17, NAN) == 0);
  REQUIRE(poke_f32(in, "model.layers.1.mlp.up_proj.weight", 9, 0, INFINITY) == 0);
  snprintf(in, sizeof in, "%s/in.jsonl", dir);
  harness_write_file(in, "{\"tokens\": [1, 2, 3]}\n");
  const char *precs[] = {"bf16", "fp32", "fp8-block"};
  for (int i = 0; i < 3; i++) {
    snprintf(cmd, sizeof cmd, "%s score --model %s/nan --input %s --out %s/o.jsonl --precision %s", harness_bin(), dir,
             in, dir, precs[i]);
    CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
    snprintf(want, sizeof want, "rlrun score: --model %s/nan: tensor 'model.layers.1.mlp.up_proj.weight' [128 x 128] "
             "holds 2 non-finite values (NaN first, at row 5, column 17): the checkpoint is damaged; fix or "
             "re-export it\n", dir);
    CHECK_STREQ(text, want);
  }
  /* a norm weight (never quantized, so model_quantize never saw it) */
  snprintf(cmd, sizeof cmd, "cp " FXR "/qwen3/hf/model.safetensors %s/nan/model.safetensors", dir);
  REQUIRE(harness_run(cmd, NULL, 0) == 0);
  char st[800];
  snprintf(st, sizeof st, "%s/nan/model.safetensors", dir);
  REQUIRE(poke_f32(st, "model.norm.weight", 7, 0, -INFINITY) == 0);
  snprintf(cmd, sizeof cmd, "%s score --model %s/nan --input %s --out %s/o.jsonl", harness_bin(), dir, in, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  CHECK_CONTAINS(text, "tensor 'model.norm.weight' [128 x 1] holds 1 non-finite value (-Inf first, at row 7, column 0)");
  /* finite but huge: the forward overflows; the advice is about the checkpoint, not a learning rate */
  for (int i = 0; i < 128; i++) REQUIRE(poke_f32(st, "model.norm.weight", i, 0, 3e38f) == 0);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  CHECK_CONTAINS(text, "not finite; the forward diverged (every weight is finite, but the activations overflow: the "
                       "checkpoint's values are too large)\n");
  CHECK(strstr(text, "learning rate") == NULL);
}

/* `rlrun score` checks its files before it loads the model: an --input that is
 * a directory was read as empty (exit 0, "0 sequences"); an --out that is a
 * directory, empty, a device or in a directory that does not exist failed
 * only after the scoring, exit 1. Each is exit 2 now, naming the option. */
TEST(model_score_checks_input_and_out_paths_first) {
  const char *dir = harness_tmpdir(), *bin = harness_bin();
  char in[600], cmd[2048], text[4096], want[2048];
  snprintf(in, sizeof in, "%s/in.jsonl", dir);
  harness_write_file(in, "{\"tokens\": [1, 2, 3]}\n");
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/o.jsonl", bin, dir, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  snprintf(want, sizeof want, "rlrun score: --input %s is a directory: give a JSONL file ('-' reads stdin)\n", dir);
  CHECK_STREQ(text, want);
  struct { const char *out, *msg; } bad[] = {
      {"%s", "--out %s is a directory: give the path of a file to write (in it, or elsewhere)"},
      {"", "--out is empty: give the path of the file to write"},
      {"%s/no/o.jsonl", "--out %s/no/o.jsonl: directory %s/no: No such file or directory (create it first)"},
      {"%s/in.jsonl/o.jsonl", "--out %s/in.jsonl/o.jsonl: %s/in.jsonl is a file, not a directory"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char out[700], m[2000];
    snprintf(out, sizeof out, bad[i].out, dir);
    snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out '%s'", bin, in, out);
    CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
    snprintf(m, sizeof m, bad[i].msg, dir, dir);
    snprintf(want, sizeof want, "rlrun score: %s\n", m);
    CHECK_STREQ(text, want);
  }
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input - --out %s/o.jsonl < %s", bin, dir, in);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 0); /* stdin still reads */
  CHECK_CONTAINS(text, "score: 1 sequence, 3 tokens");
}

/* `rlrun score` input and options it took before: --batch-tokens past long's
 * range (strtol saturated), a sequence longer than max_position_embeddings
 * (256 on the fixture: 300 tokens ran), a NUL byte after the JSON object
 * (json_loads stopped there). Each is exit 2 naming FILE:LINE[:COL]; no
 * output is left behind. */
TEST(model_score_refuses_long_sequences_nul_bytes_and_huge_batches) {
  const char *dir = harness_tmpdir(), *bin = harness_bin();
  char in[600], cmd[2048], text[4096], want[2048];
  snprintf(in, sizeof in, "%s/in.jsonl", dir);
  harness_write_file(in, "{\"tokens\": [1, 2, 3]}\n");
  const char *bt[] = {"99999999999999999999", "-99999999999999999999", "1048577", "0", "12x", ""};
  for (size_t i = 0; i < sizeof bt / sizeof *bt; i++) {
    snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/o.jsonl --batch-tokens '%s'",
             bin, in, dir, bt[i]);
    CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
    snprintf(want, sizeof want, "rlrun score: --batch-tokens '%s' is not an integer in [1, 1048576] (tokens per "
             "forward; default 4096)\n", bt[i]);
    CHECK_STREQ(text, want);
  }
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/o.jsonl --batch-tokens 1048576",
           bin, in, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 0);
  /* max_position_embeddings: 256 tokens score, 300 are refused before any forward runs on them */
  char *buf = malloc(8192), *p = buf;
  for (int n = 256; n <= 300; n += 44) {
    p += sprintf(p, "{\"tokens\": [");
    for (int t = 0; t < n; t++) p += sprintf(p, "%s%d", t ? ", " : "", t % 200);
    p += sprintf(p, "]}\n");
  }
  harness_write_file(in, buf);
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/long.jsonl", bin, in, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  snprintf(want, sizeof want, "rlrun score: %s:2: the sequence has 300 tokens, more than the model's "
           "max_position_embeddings (256 in config.json); split or truncate it\n", in);
  CHECK_STREQ(text, want);
  *strchr(buf, '\n') = 0; /* the first line alone: 256 tokens, accepted */
  harness_write_file(in, buf);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 0);
  CHECK_CONTAINS(text, "score: 1 sequence, 256 tokens");
  free(buf);
  /* a NUL byte after the object (and one inside it) */
  const char lines[] = "{\"tokens\": [1, 2]}\n{\"tokens\": [1, 2, 3]}\0junk\n";
  FILE *f = fopen(in, "wb");
  REQUIRE(f && fwrite(lines, 1, sizeof lines - 1, f) == sizeof lines - 1 && fclose(f) == 0);
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/nul.jsonl", bin, in, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  snprintf(want, sizeof want, "rlrun score: %s:2:22: a NUL byte (0x00) in the line; each line is one JSON object "
           "{\"tokens\": [...]} and nothing else\n", in);
  CHECK_STREQ(text, want);
  const char inner[] = "{\"tokens\": [1,\0 2]}\n";
  f = fopen(in, "wb");
  REQUIRE(f && fwrite(inner, 1, sizeof inner - 1, f) == sizeof inner - 1 && fclose(f) == 0);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  CHECK_CONTAINS(text, "in.jsonl:1:15: a NUL byte (0x00) in the line");
  /* a second "tokens" key is ambiguous: refused, as the prompt reader does */
  harness_write_file(in, "{\"tokens\": [1, 2], \"tokens\": [3]}\n");
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  CHECK_CONTAINS(text, "in.jsonl:1:");
  CHECK_CONTAINS(text, "duplicate object key");
  /* a regular file is read whole before the model loads: a bad last line
   * stops the command before any line is scored (to stdout, nothing printed) */
  char *many = malloc(64 * 40 + 64);
  p = many;
  for (int i = 0; i < 64; i++) p += sprintf(p, "{\"tokens\": [%d, %d, %d]}\n", i, i + 1, i + 2);
  sprintf(p, "{\"tokens\": [1, 2, 9999]}\n");
  harness_write_file(in, many);
  free(many);
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out - --batch-tokens 3", bin, in);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  CHECK(strstr(text, "logprobs") == NULL);
  CHECK_CONTAINS(text, "in.jsonl:65:");
  snprintf(cmd, sizeof cmd, "ls %s", dir);
  harness_run(cmd, text, sizeof text);
  CHECK_STREQ(text, "in.jsonl\nlong.jsonl\no.jsonl\n"); /* the two that scored; no nul.jsonl */
}

/* `rlrun score` inputs a careless user gives: whitespace-only lines (were
 * "not valid JSON: '[' or '{' expected near end of file", though blank lines
 * are skipped) and a UTF-8 BOM (was "not valid JSON" on line 1) are taken;
 * --out naming the --input file replaced the sequences with their log-probs,
 * and an --input named OUT.tmp was truncated as the temporary (exit 0, "0
 * sequences", the input gone); --batch-tokens ' 5' and '+5' were taken. */
TEST(model_score_blank_lines_bom_and_outputs_over_the_input) {
  const char *dir = harness_tmpdir(), *bin = harness_bin();
  char in[600], cmd[2048], text[4096], want[2048];
  snprintf(in, sizeof in, "%s/in.jsonl", dir);
  harness_write_file(in, "\xef\xbb\xbf{\"tokens\": [1, 2]}\n  \n\t\r\n \n{\"tokens\": [1, 2]}\n");
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out - 2>&1", bin, in);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 0);
  CHECK_CONTAINS(text, "score: 2 sequences, 4 tokens");
  harness_write_file(in, "{\"tokens\": [1, 2]}\n\xef\xbb\xbf{\"tokens\": [1, 2]}\n"); /* a BOM only starts the file */
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  CHECK_CONTAINS(text, "in.jsonl:2:1: not valid JSON");
  /* --out is the --input (by another name too) */
  harness_write_file(in, "{\"tokens\": [1, 2]}\n");
  const char *outs[] = {"%s/in.jsonl", "%s/./in.jsonl", "%s/link.jsonl"};
  snprintf(cmd, sizeof cmd, "ln %s %s/link.jsonl", in, dir);
  REQUIRE(harness_run(cmd, text, sizeof text) == 0);
  for (size_t i = 0; i < sizeof outs / sizeof *outs; i++) {
    char o[700];
    snprintf(o, sizeof o, outs[i], dir);
    snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s", bin, in, o);
    CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
    snprintf(want, sizeof want, "rlrun score: --out %s is the --input file: the log-probs would replace the sequences; "
             "give another --out\n", o);
    CHECK_STREQ(text, want);
  }
  snprintf(cmd, sizeof cmd, "cat %s", in);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 0);
  CHECK_STREQ(text, "{\"tokens\": [1, 2]}\n"); /* untouched */
  /* an --input named like the temporary of --out */
  char tin[700];
  snprintf(tin, sizeof tin, "%s/s.jsonl.tmp", dir);
  harness_write_file(tin, "{\"tokens\": [1, 2, 3]}\n");
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/s.jsonl && cat %s && ls %s", bin, tin,
           dir, tin, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 0);
  CHECK_CONTAINS(text, "score: 1 sequence, 3 tokens");
  CHECK_CONTAINS(text, "{\"tokens\": [1, 2, 3]}\nin.jsonl\nlink.jsonl\ns.jsonl\ns.jsonl.tmp\n");
  snprintf(cmd, sizeof cmd, "grep -c , %s/s.jsonl", dir); /* two log-probs */
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 0);
  CHECK_STREQ(text, "1\n");
  const char *bt[] = {" 5", "+5"};
  for (size_t i = 0; i < 2; i++) {
    snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/o.jsonl --batch-tokens '%s'", bin,
             in, dir, bt[i]);
    CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
    snprintf(want, sizeof want, "rlrun score: --batch-tokens '%s' is not an integer in [1, 1048576] (tokens per "
             "forward; default 4096)\n", bt[i]);
    CHECK_STREQ(text, want);
  }
}

/* An fp8-block checkpoint whose weight_scale_inv is not F32 was taken for
 * mxfp8 (any non-F32 scale was), and the message asked for its layout:
 * "is F16 with 2 dims; want U8 [128, 4]". Now the fp8-block layout is asked
 * for, with the shape found. */
TEST(model_load_names_the_fp8_block_scale_layout) {
  const char *dir = harness_tmpdir(), *bin = harness_bin();
  char cmd[2048], text[4096], want[2048], path[700];
  snprintf(cmd, sizeof cmd, "%s convert --device cpu --quiet --to fp8-block --in " FXR "/qwen3/hf-bf16 --out %s/q", bin,
           dir);
  REQUIRE(harness_run(cmd, text, sizeof text) == 0);
  snprintf(path, sizeof path, "%s/q/model.safetensors", dir);
  FILE *f = fopen(path, "r+b");
  REQUIRE(f);
  char head[4096];
  size_t n = fread(head, 1, sizeof head - 1, f);
  head[n] = 0;
  const char *key = "\"model.layers.0.mlp.down_proj.weight_scale_inv\":{\"dtype\":\"F32\",\"shape\":[1,1]";
  char *p = strstr(head + 8, key); /* past the length prefix (NUL bytes) */
  REQUIRE(p);
  memcpy(p + strlen(key) - 18, "F16\",\"shape\":[1,2]", 18); /* the same 4 bytes */
  REQUIRE(fseek(f, 0, SEEK_SET) == 0 && fwrite(head, 1, n, f) == n && fclose(f) == 0);
  snprintf(path, sizeof path, "%s/in.jsonl", dir);
  harness_write_file(path, "{\"tokens\": [1, 2]}\n");
  snprintf(cmd, sizeof cmd, "%s score --model %s/q --input %s --out %s/o.jsonl", bin, dir, path, dir);
  CHECK_EQ_I64(harness_run(cmd, text, sizeof text), 2);
  snprintf(want, sizeof want, "rlrun score: loading model %s/q: %s/q/model.safetensors: tensor "
           "'model.layers.0.mlp.down_proj.weight_scale_inv' is F16 [1, 2]; want F32 [1, 1]\n", dir, dir);
  CHECK_STREQ(text, want);
}
