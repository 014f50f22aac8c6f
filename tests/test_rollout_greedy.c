/* test_rollout_greedy.c — greedy rollout against transformers' greedy
 * continuation of the tiny fixture models (tests/fixtures/model/NAME/
 * greedy.json, written on the GPU machine by
 * tests/oracle/make_greedy_fixtures.py; the test says SKIPPED when absent).
 *
 *   FP32 mode (the model's FP32-exact path): token for token, required.
 *   BF16 policy (the rollout default): compared too; where it first diverges
 *   is printed, and a divergence fails unless it is a near-tie that BF16 can
 *   legitimately flip: the FP32 margin (top-1 − top-2 logit, from the
 *   fixture) at that step must be at most twice the largest logit change our
 *   BF16 policy makes on that very row (|BF16 − FP32 logits| of a full
 *   forward over the same prefix). transformers' own BF16 continuation is
 *   reported for comparison. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "model/model.h"
#include "stages/rollout.h"
#include "test_rollout_util.h"

#define RG_MAXP 8
#define RG_MAXN 64

/* A greedy fixture. */
typedef struct rg_fixture {
  int n_prompts, new_tokens;
  int32_t prompt[RG_MAXP][RG_MAXN];
  int64_t n_prompt[RG_MAXP];
  int32_t greedy[RG_MAXP][RG_MAXN], greedy_bf16[RG_MAXP][RG_MAXN];
  double margin[RG_MAXP][RG_MAXN];
  int has_bf16;
} rg_fixture;

/* Fill dst[0..n) from a JSON array of numbers; the count or −1. */
static int rg_array(json_t *a, double *dst, int cap) {
  if (!json_is_array(a) || (int)json_array_size(a) > cap) return -1;
  for (size_t i = 0; i < json_array_size(a); i++) dst[i] = json_number_value(json_array_get(a, i));
  return (int)json_array_size(a);
}

/* Read a greedy.json; 0 or −1 (with a failure recorded). */
static int rg_load(const char *path, rg_fixture *f) {
  json_error_t je;
  json_t *root = json_load_file(path, 0, &je);
  memset(f, 0, sizeof *f);
  if (!root) {
    harness_fail(__FILE__, __LINE__, "%s:%d: %s", path, je.line, je.text);
    return -1;
  }
  json_t *P = json_object_get(root, "prompts"), *G = json_object_get(root, "greedy");
  json_t *M = json_object_get(root, "margins"), *B = json_object_get(root, "greedy_bf16");
  f->new_tokens = (int)json_integer_value(json_object_get(root, "new_tokens"));
  f->n_prompts = json_is_array(P) ? (int)json_array_size(P) : 0;
  int ok = f->n_prompts > 0 && f->n_prompts <= RG_MAXP && f->new_tokens > 0 && f->new_tokens <= RG_MAXN;
  f->has_bf16 = json_is_array(B);
  double buf[RG_MAXN];
  for (int p = 0; ok && p < f->n_prompts; p++) {
    int n = rg_array(json_array_get(P, p), buf, RG_MAXN);
    ok = n > 0;
    for (int j = 0; j < n; j++) f->prompt[p][j] = (int32_t)buf[j];
    f->n_prompt[p] = n;
    ok = ok && rg_array(json_array_get(G, p), buf, RG_MAXN) == f->new_tokens;
    for (int j = 0; ok && j < f->new_tokens; j++) f->greedy[p][j] = (int32_t)buf[j];
    ok = ok && rg_array(json_array_get(M, p), f->margin[p], RG_MAXN) == f->new_tokens;
    if (ok && f->has_bf16) {
      ok = rg_array(json_array_get(B, p), buf, RG_MAXN) == f->new_tokens;
      for (int j = 0; ok && j < f->new_tokens; j++) f->greedy_bf16[p][j] = (int32_t)buf[j];
    }
  }
  json_decref(root);
  if (!ok) harness_fail(__FILE__, __LINE__, "%s: needs prompts, greedy, margins and new_tokens", path);
  return ok ? 0 : -1;
}

/* Greedy rollout of the fixture's prompts; ids[p][j]. 0 or −1. */
static int rg_rollout(model *m, int f32, const rg_fixture *f, int32_t ids[RG_MAXP][RG_MAXN]) {
  const int32_t *ptr[RG_MAXP];
  for (int p = 0; p < f->n_prompts; p++) ptr[p] = f->prompt[p];
  rl_err e = {0};
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  rollout_engine_opts eo = {f32, 0, 0, 0};
  rollout_engine *eng = NULL;
  rollout_opts o;
  rollout_opts_default(&o);
  o.greedy = 1, o.max_new_tokens = f->new_tokens, o.eos_id = -1;
  rollout_batch b = {0};
  int rc = rollout_engine_new(m, &pol, NULL, &eo, &eng, &e);
  if (!rc) rc = rollout_generate_ids(eng, ptr, f->n_prompt, f->n_prompts, 1, 1, &o, &b, &e);
  if (rc) harness_fail(__FILE__, __LINE__, "greedy rollout: %s", e.msg);
  for (int p = 0; !rc && p < f->n_prompts; p++) memcpy(ids[p], b.s[p].completion_ids, (size_t)f->new_tokens * 4);
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  return rc ? -1 : 0;
}

/* Largest |BF16-policy − FP32| logit of the last row of a full forward over seq[0..T). */
static double rg_bf16_perturbation(model *m, const int32_t *seq, int T) {
  rl_err e = {0};
  float *a = ro_full_logits(m, seq, T, 1, &e), *b = ro_full_logits(m, seq, T, 0, &e);
  double d = 0;
  for (int v = 0; a && b && v < m->V; v++) {
    double x = fabs((double)a[(size_t)(T - 1) * m->V + v] - b[(size_t)(T - 1) * m->V + v]);
    d = x > d ? x : d;
  }
  free(a), free(b);
  return d;
}

/* Check our greedy continuations of model dir hf against fixture f; returns
 * the number of failures (printing what it found). */
static int rg_check(const char *name, const char *hf, const rg_fixture *f) {
  model_load_opts lo = {1};
  model *m = NULL;
  rl_err e = {0};
  if (model_load(hf, &lo, &m, &e)) {
    harness_fail(__FILE__, __LINE__, "model_load %s: %s", hf, e.msg);
    return 1;
  }
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  int32_t g32[RG_MAXP][RG_MAXN], gbf[RG_MAXP][RG_MAXN];
  int fails = 0;
  if (model_quantize(m, &pol, &e) || rg_rollout(m, 1, f, g32) || rg_rollout(m, 0, f, gbf)) {
    model_free(m);
    return 1;
  }
  for (int p = 0; p < f->n_prompts; p++) {
    int d32 = -1, dbf = -1, dhf = -1;
    for (int j = f->new_tokens - 1; j >= 0; j--) {
      if (g32[p][j] != f->greedy[p][j]) d32 = j;
      if (gbf[p][j] != f->greedy[p][j]) dbf = j;
      if (f->has_bf16 && f->greedy_bf16[p][j] != f->greedy[p][j]) dhf = j;
    }
    if (d32 >= 0) {
      printf("    %s prompt %d: FP32 path diverges at step %d (ours %d, transformers %d)\n", name, p, d32,
             g32[p][d32], f->greedy[p][d32]);
      fails++;
    }
    if (dbf < 0) {
      printf("    %s prompt %d: BF16 policy = transformers FP32 for all %d tokens%s\n", name, p, f->new_tokens,
             dhf >= 0 ? " (transformers' own BF16 diverges)" : "");
      continue;
    }
    int32_t seq[2 * RG_MAXN];
    memcpy(seq, f->prompt[p], (size_t)f->n_prompt[p] * 4);
    memcpy(seq + f->n_prompt[p], f->greedy[p], (size_t)dbf * 4);
    double pert = rg_bf16_perturbation(m, seq, (int)f->n_prompt[p] + dbf);
    int near = f->margin[p][dbf] <= 2 * pert;
    printf("    %s prompt %d: BF16 policy first diverges at step %d (ours %d, transformers %d): FP32 margin "
           "%.3g, BF16 perturbation of that row %.3g → %s; transformers BF16 diverges at %d\n",
           name, p, dbf, gbf[p][dbf], f->greedy[p][dbf], f->margin[p][dbf], pert,
           near ? "a near-tie" : "NOT a near-tie", dhf);
    fails += !near;
  }
  model_free(m);
  return fails;
}

/* The fixture test of one model, or SKIPPED without greedy.json. */
static void rg_fixture_test(const char *name) {
  char json[256], hf[256];
  snprintf(json, sizeof json, "tests/fixtures/model/%s/greedy.json", name);
  snprintf(hf, sizeof hf, "tests/fixtures/model/%s/hf", name);
  if (access(json, R_OK)) {
    printf("    SKIPPED: %s is absent; run tests/oracle/make_greedy_fixtures.py on the GPU machine "
           "(torch + transformers, HF_HUB_OFFLINE=1) to write it\n", json);
    return;
  }
  rg_fixture f;
  if (rg_load(json, &f)) return;
  int fails = rg_check(name, hf, &f);
  CHECK_MSG(fails == 0, "%s: %d greedy continuation(s) differ from transformers (see above)", name, fails);
}

TEST(rollout_greedy_vs_transformers_qwen3) { rg_fixture_test("qwen3"); }
TEST(rollout_greedy_vs_transformers_qwen3_moe) { rg_fixture_test("qwen3_moe"); }

/* The checker itself, on a fixture written from our own FP32 greedy run:
 * accepted as is, refused with a token changed at a wide margin. */
TEST(rollout_greedy_fixture_checker) {
  const char *hf = "tests/fixtures/model/qwen3/hf";
  model_load_opts lo = {1};
  model *m = NULL;
  rl_err e = {0};
  REQUIRE(!model_load(hf, &lo, &m, &e));
  rg_fixture f;
  memset(&f, 0, sizeof f);
  f.n_prompts = 2, f.new_tokens = 6;
  int32_t pr[2][3] = {{1, 17, 42}, {200, 5, 61}};
  for (int p = 0; p < 2; p++) memcpy(f.prompt[p], pr[p], sizeof pr[p]), f.n_prompt[p] = 3;
  REQUIRE(!rg_rollout(m, 1, &f, f.greedy));
  for (int p = 0; p < 2; p++)
    for (int j = 0; j < 6; j++) {
      int32_t seq[16];
      memcpy(seq, f.prompt[p], 12);
      memcpy(seq + 3, f.greedy[p], (size_t)j * 4);
      float *lg = ro_full_logits(m, seq, 3 + j, 1, &e);
      REQUIRE(lg);
      const float *row = lg + (size_t)(2 + j) * m->V;
      float a = -INFINITY, b = -INFINITY;
      for (int v = 0; v < m->V; v++)
        if (row[v] > a) b = a, a = row[v];
        else if (row[v] > b) b = row[v];
      f.margin[p][j] = (double)a - b;
      CHECK(row[f.greedy[p][j]] == a);
      free(lg);
    }
  model_free(m);
  CHECK_EQ_I64(rg_check("self", hf, &f), 0);
  f.greedy[1][2] = (f.greedy[1][2] + 1) % 256, f.margin[1][2] = 5.0;
  CHECK_EQ_I64(rg_check("self-corrupted", hf, &f), 2); /* FP32 and BF16 both differ, wide margin */
}
