/* test_rollout_logp.c — rollout log-probs against the full-sequence forward
 * (what `rlrun score` and the trainer compute) on the tiny fixture models
 * (tests/fixtures/model/{qwen3,qwen3_moe}/hf), the `rlrun score` binary on
 * rollout sequences, and transformers' greedy continuation
 * (tests/fixtures/model/NAME/greedy.json, written by
 * tests/oracle/make_greedy_fixtures.py; skipped when absent).
 *
 * The bound: the rollout's logits equal the full forward's bit for bit (the
 * default BF16 cache of pre-RoPE keys is exact, see model/kvcache.h; FP32
 * cache likewise), in BF16 and fp8-block alike, so the log-probs differ only
 * by how the log-softmax is summed (the sampler's fixed tree vs the ops
 * reference, both FP64, rounded to FP32): |Δ| ≤ RO_LOGP_EXACT per token.
 * The conventional post-RoPE BF16 cache is measured for comparison. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"
#include "stages/rollout.h"
#include "test_rollout_util.h"

#define RO_FX "tests/fixtures/model"
#define RO_LOGP_EXACT 2e-6
#define RO_LOGP_ROPED_BF16 0.06
#define RO_LOGP_ROPED_FP8 0.3

/* Load fixture model `name` (FP32 weights kept). */
static model *ro_fixture(const char *name) {
  char dir[256];
  snprintf(dir, sizeof dir, RO_FX "/%s/hf", name);
  model_load_opts lo = {1};
  model *m = NULL;
  rl_err e = {0};
  if (model_load(dir, &lo, &m, &e)) {
    harness_fail(__FILE__, __LINE__, "model_load %s: %s", dir, e.msg);
    return NULL;
  }
  return m;
}

/* 8 prompts of 2..9 ids below 256. */
static void ro_fx_prompts(int32_t ids[8][9], int64_t n[8], const int32_t **ptr) {
  uint32_t s = 4242;
  for (int p = 0; p < 8; p++) {
    n[p] = 2 + p;
    for (int j = 0; j < n[p]; j++) ids[p][j] = (int32_t)(ro_rand(&s) % 256);
    ptr[p] = ids[p];
  }
}

/* b's sequences (prompt, then completion) packed into one batch: *tok and
 * *off allocated here (the caller frees them); returns the token count. */
static int ro_pack(const rollout_batch *b, int32_t **tok, int32_t **off) {
  int T = 0;
  for (int64_t i = 0; i < b->n; i++) T += (int)(b->s[i].n_prompt + b->s[i].n_completion);
  *tok = malloc((size_t)T * 4), *off = malloc((size_t)(b->n + 1) * 4);
  (*off)[0] = 0;
  for (int64_t i = 0; i < b->n; i++) {
    const rollout_sample *s = &b->s[i];
    memcpy(*tok + (*off)[i], s->prompt_ids, (size_t)s->n_prompt * 4);
    memcpy(*tok + (*off)[i] + s->n_prompt, s->completion_ids, (size_t)s->n_completion * 4);
    (*off)[i + 1] = (*off)[i] + (int32_t)(s->n_prompt + s->n_completion);
  }
  return T;
}

/* Full-forward log-probs at temperature temp of every completion token of b,
 * all sequences in one packed forward (as score and the trainer pack them);
 * out[i] is sample i's [n_completion] array inside one flat buffer. */
static float *ro_full_logp(model *m, const rollout_batch *b, float temp, rl_err *e) {
  int32_t *tok, *off;
  const int T = ro_pack(b, &tok, &off);
  int32_t *tg = malloc((size_t)T * 4);
  float *lp = malloc((size_t)T * 4);
  model_batch mb = {T, tok, {(int)b->n, off}};
  model_targets_next(tok, &mb.seqs, T, tg);
  model_acts *a = model_acts_new();
  int rc = model_forward(m, &mb, NULL, a, e);
  if (!rc) rc = model_logprob_forward(a, tg, temp, lp, NULL, e);
  model_acts_free(a);
  /* keep the completion part: logp of completion token j sits at its previous position */
  float *out = NULL;
  if (!rc) {
    out = malloc((size_t)T * 4);
    int k = 0;
    for (int64_t i = 0; i < b->n; i++)
      for (int64_t j = 0; j < b->s[i].n_completion; j++) out[k++] = lp[off[i] + b->s[i].n_prompt - 1 + j];
  }
  free(tok), free(off), free(tg), free(lp);
  return out;
}

/* Rollout vs full forward on fixture `name` in format fmt; returns the max |Δ|
 * (−1 on error) and checks it against bound. */
static double ro_logp_case(const char *name, qformat fmt, int kv_f32, int post_rope, double temp, double bound) {
  model *m = ro_fixture(name);
  if (!m) return -1;
  int32_t ids[8][9];
  int64_t n[8];
  const int32_t *ptr[8];
  ro_fx_prompts(ids, n, ptr);
  rl_err e = {0};
  quant_policy pol;
  quant_policy_init(&pol, fmt, fmt);
  rollout_engine_opts eo = {0, 0, kv_f32, post_rope};
  rollout_engine *eng = NULL;
  rollout_batch b = {0};
  double maxd = -1, sum = 0;
  int cnt = 0;
  rollout_opts o;
  rollout_opts_default(&o);
  o.seed = 77, o.temperature = temp, o.max_new_tokens = 24, o.eos_id = -1, o.max_slots = 5;
  if (rollout_engine_new(m, &pol, NULL, &eo, &eng, &e) ||
      rollout_generate_ids(eng, ptr, n, 8, 2, 1, &o, &b, &e)) {
    harness_fail(__FILE__, __LINE__, "%s: %s", name, e.msg);
    goto out;
  }
  float *ref = ro_full_logp(m, &b, (float)temp, &e);
  if (!ref) {
    harness_fail(__FILE__, __LINE__, "full forward: %s", e.msg);
    goto out;
  }
  maxd = 0;
  for (int64_t i = 0, k = 0; i < b.n; i++)
    for (int64_t j = 0; j < b.s[i].n_completion; j++, k++) {
      double d = fabs((double)b.s[i].logp_rollout[j] - ref[k]);
      maxd = d > maxd ? d : maxd, sum += d, cnt++;
    }
  free(ref);
  printf("    %-9s %-9s KV %-5s T=%.1f: %d tokens, max |Δlogp| %.3g, mean %.3g (bound %.3g)\n", name,
         qtensor_format_name(fmt), kv_f32 ? "fp32" : post_rope ? "bf16r" : "bf16", temp, cnt, maxd, cnt ? sum / cnt : 0, bound);
  CHECK_MSG(maxd <= bound, "%s %s: max |logp_rollout − logp_full| = %.3g > %.3g", name,
            qtensor_format_name(fmt), maxd, bound);
out:
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  model_free(m);
  return maxd;
}

TEST(rollout_logp_vs_full_forward_bf16) {
  ro_logp_case("qwen3", QFMT_BF16, 0, 0, 1.0, RO_LOGP_EXACT);
  ro_logp_case("qwen3", QFMT_BF16, 0, 0, 0.7, RO_LOGP_EXACT);
  ro_logp_case("qwen3_moe", QFMT_BF16, 0, 0, 1.0, RO_LOGP_EXACT);
  ro_logp_case("qwen3", QFMT_BF16, 1, 0, 1.0, RO_LOGP_EXACT);
}

TEST(rollout_logp_vs_full_forward_fp8_block) {
  ro_logp_case("qwen3", QFMT_FP8_BLOCK, 0, 0, 1.0, RO_LOGP_EXACT);
  ro_logp_case("qwen3_moe", QFMT_FP8_BLOCK, 0, 0, 1.0, RO_LOGP_EXACT);
}

/* The usual post-RoPE BF16 cache, for comparison: one more rounding of the
 * keys, drift measured (dense only: on MoE a routing flip moves a log-prob
 * by O(1), which is why the engine does not cache that way). */
TEST(rollout_logp_post_rope_kv_drift) {
  ro_logp_case("qwen3", QFMT_BF16, 0, 1, 1.0, RO_LOGP_ROPED_BF16);
  ro_logp_case("qwen3", QFMT_FP8_BLOCK, 0, 1, 1.0, RO_LOGP_ROPED_FP8);
}

/* The entropy (nats, FP64) of softmax(logits / temp) at the position before
 * each completion token of b, from the full forward's FP32 logits: out[k] in
 * the order of ro_full_logp. An implementation apart from the ops' own. */
static double *ro_full_entropy(model *m, const rollout_batch *b, double temp, rl_err *e) {
  int32_t *tok, *off;
  const int T = ro_pack(b, &tok, &off);
  model_batch mb = {T, tok, {(int)b->n, off}};
  model_acts *a = model_acts_new();
  double *out = NULL;
  if (!model_forward(m, &mb, NULL, a, e)) {
    out = malloc((size_t)T * sizeof(double));
    int k = 0;
    for (int64_t i = 0; i < b->n; i++)
      for (int64_t j = 0; j < b->s[i].n_completion; j++) {
        const float *z = a->logits + (size_t)(off[i] + b->s[i].n_prompt - 1 + j) * m->V;
        double mx = -INFINITY, sum = 0, dot = 0;
        for (int v = 0; v < m->V; v++) mx = fmax(mx, z[v] / temp);
        for (int v = 0; v < m->V; v++) {
          double u = z[v] / temp - mx, p = exp(u);
          sum += p, dot += p * u;
        }
        out[k++] = log(sum) - dot / sum; /* H = log Z − E[u] */
      }
  }
  model_acts_free(a);
  free(tok), free(off);
  return out;
}

/* The `rlrun score` binary on rollout sequences sampled at temperature temp
 * (BF16, default cache): its log-probs of the completion tokens equal
 * logp_rollout within RO_LOGP_EXACT (score --temperature temp unless temp is
 * 1, the default); with --entropy its entropies equal ro_full_entropy's to
 * 2e-5 (an FP32 value printed with 9 digits, against FP64), one a log-prob. */
static void ro_score_case(double temp) {
  model *m = ro_fixture("qwen3");
  REQUIRE(m);
  int32_t ids[8][9];
  int64_t n[8];
  const int32_t *ptr[8];
  ro_fx_prompts(ids, n, ptr);
  rl_err e = {0};
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  rollout_engine *eng = NULL;
  rollout_batch b = {0};
  rollout_opts o;
  rollout_opts_default(&o);
  o.seed = 5, o.max_new_tokens = 16, o.eos_id = -1, o.temperature = temp;
  REQUIRE(!rollout_engine_new(m, &pol, NULL, NULL, &eng, &e));
  REQUIRE(!rollout_generate_ids(eng, ptr, n, 8, 2, 1, &o, &b, &e));
  const int ent = temp != 1.0;
  double *want_ent = ent ? ro_full_entropy(m, &b, temp, &e) : NULL;
  REQUIRE(!ent || want_ent);
  char in[512], out[512], cmd[2048], res[4096], opt[64] = "";
  snprintf(in, sizeof in, "%s/seqs.jsonl", harness_tmpdir());
  snprintf(out, sizeof out, "%s/scores.jsonl", harness_tmpdir());
  if (ent) snprintf(opt, sizeof opt, " --temperature %.17g --entropy", temp);
  FILE *f = fopen(in, "w");
  REQUIRE(f);
  for (int64_t i = 0; i < b.n; i++) {
    fputs("{\"tokens\": [", f);
    for (int64_t t = 0; t < b.s[i].n_prompt; t++) fprintf(f, "%s%d", t ? ", " : "", b.s[i].prompt_ids[t]);
    for (int64_t t = 0; t < b.s[i].n_completion; t++) fprintf(f, ", %d", b.s[i].completion_ids[t]);
    fputs("]}\n", f);
  }
  fclose(f);
  snprintf(cmd, sizeof cmd, "%s score --model " RO_FX "/qwen3/hf --input %s --out %s --precision bf16%s",
           harness_bin(), in, out, opt);
  int st = harness_run(cmd, res, sizeof res);
  CHECK_MSG(st == 0, "rlrun score exited %d: %s", st, res);
  json_error_t je;
  FILE *g = st == 0 ? fopen(out, "r") : NULL;
  char line[65536];
  double maxd = 0, maxh = 0;
  int64_t i = 0, cnt = 0, k = 0;
  while (g && fgets(line, sizeof line, g) && i < b.n) {
    json_t *root = json_loads(line, 0, &je), *lp = root ? json_object_get(root, "logprobs") : NULL;
    json_t *h = root ? json_object_get(root, "entropy") : NULL;
    const rollout_sample *s = &b.s[i++];
    CHECK_EQ_I64(json_array_size(lp), s->n_prompt + s->n_completion - 1);
    CHECK_EQ_I64(json_array_size(h), ent ? s->n_prompt + s->n_completion - 1 : 0);
    for (int64_t j = 0; j < s->n_completion && lp; j++) {
      double d = fabs(json_real_value(json_array_get(lp, (size_t)(s->n_prompt - 1 + j))) - s->logp_rollout[j]);
      maxd = d > maxd ? d : maxd, cnt++;
      if (ent) {
        double dh = fabs(json_number_value(json_array_get(h, (size_t)(s->n_prompt - 1 + j))) - want_ent[k++]);
        maxh = dh > maxh ? dh : maxh;
      }
    }
    json_decref(root);
  }
  if (g) fclose(g);
  CHECK_EQ_I64(i, b.n);
  printf("    rlrun score vs rollout (qwen3 bf16, T %g): %lld tokens, max |Δlogp| %.3g, max |Δentropy| %.3g\n", temp,
         (long long)cnt, maxd, maxh);
  CHECK_MSG(maxd <= RO_LOGP_EXACT, "max |score − logp_rollout| = %.3g", maxd);
  CHECK_MSG(maxh <= 2e-5, "max |score's entropy − FP64 entropy| = %.3g", maxh);
  free(want_ent);
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  model_free(m);
}

TEST(rollout_logp_vs_rlrun_score) { ro_score_case(1.0); }

/* At temperature 0.6 a rollout's log-probs are under softmax(logits / 0.6):
 * score --temperature 0.6 gives them (at 1 they differ by far more) */
TEST(rollout_logp_vs_rlrun_score_at_a_temperature) { ro_score_case(0.6); }
