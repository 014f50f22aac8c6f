/* test_drift.c — stages/drift.h on the tiny fixture models (CPU): the
 * structural facts the drift benchmark must show (same precision on both
 * sides → exactly 0; fp8 rollout × bf16 train → > 0; R3 lowers the MoE
 * mismatch), the measured-token selection against an independent
 * per-sequence computation, sampling determinism and the token file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "kernels/device.h"
#include "model/model.h"
#include "stages/drift.h"
#include "stages/rollout.h"

#define DR_FX "tests/fixtures/model"

/* Load fixture model `name` (qwen3 or qwen3_moe). */
static model *dr_load(const char *name) {
  char dir[256];
  snprintf(dir, sizeof dir, DR_FX "/%s/hf", name);
  model *m = NULL;
  rl_err e = {0};
  if (model_load(dir, NULL, &m, &e)) {
    harness_fail(__FILE__, __LINE__, "model_load %s: %s", dir, e.msg);
    return NULL;
  }
  return m;
}

/* Measure rollout policy (f, ef) × train policy (g, gf). */
static int dr_pair(model *m, const drift_seqs *s, qformat f, qformat ef, qformat tf, qformat tef,
                   drift_result *r) {
  quant_policy ro, tr;
  quant_policy_init(&ro, f, ef);
  quant_policy_init(&tr, tf, tef);
  rl_err e = {0};
  int rc = drift_measure(m, s, &ro, &tr, DRIFT_CPU, r, &e);
  if (rc) harness_fail(__FILE__, __LINE__, "drift_measure: %s", e.msg);
  return rc;
}

/* Every metric says "no mismatch", bit-exactly. */
static void dr_check_zero(const rl_mismatch *x, int64_t n, const char *what) {
  CHECK_MSG(x->n_tokens == n, "%s: %lld tokens, want %lld", what, (long long)x->n_tokens, (long long)n);
  CHECK_MSG(x->logp_abs_diff == 0 && x->kl_k3 == 0 && x->max_abs_diff == 0 && x->ess == 1,
            "%s: abs %.3g kl %.3g max %.3g ess %.9g, want exactly 0 0 0 1", what, x->logp_abs_diff, x->kl_k3,
            x->max_abs_diff, x->ess);
}

/* The sampled set used by the tests: 6 sequences × (4 prompt + 20 sampled). */
static int dr_sample(model *m, uint64_t seed, drift_seqs *s) {
  drift_sample_opts o = {.n_seq = 6, .n_prompt = 4, .n_gen = 20, .seed = seed};
  quant_policy bf;
  quant_policy_init(&bf, QFMT_BF16, QFMT_BF16);
  rl_err e = {0};
  int rc = drift_sample_cpu(m, &bf, &o, s, &e);
  if (rc) harness_fail(__FILE__, __LINE__, "drift_sample_cpu: %s", e.msg);
  return rc;
}

/* Mean |logp_a − logp_b| over the sampled tokens, each sequence run ALONE
 * through model_forward (an independent path to drift_measure's packing). */
static double dr_manual_abs_diff(model *m, const drift_seqs *s, qformat fa, qformat fb) {
  int len = s->n_prompt + s->n_gen;
  model_acts *a = model_acts_new();
  float *la = malloc((size_t)len * 4), *lb = malloc((size_t)len * 4);
  int32_t *tg = malloc((size_t)len * 4), off[2] = {0, len};
  double sum = 0;
  rl_err e = {0};
  for (int i = 0; i < s->n_seq; i++) {
    const int32_t *tok = s->tokens + (size_t)i * len;
    model_batch b = {len, tok, {1, off}};
    model_targets_next(tok, &b.seqs, len, tg);
    for (int side = 0; side < 2; side++) {
      quant_policy p;
      quant_policy_init(&p, side ? fb : fa, side ? fb : fa);
      if (model_quantize(m, &p, &e) || model_forward(m, &b, NULL, a, &e) ||
          model_logprob_forward(a, tg, 1.0f, side ? lb : la, NULL, &e))
        harness_fail(__FILE__, __LINE__, "manual forward: %s", e.msg);
    }
    for (int j = s->n_prompt - 1; j < len - 1; j++) sum += fabs((double)lb[j] - (double)la[j]);
  }
  model_acts_free(a);
  free(la), free(lb), free(tg);
  return sum / ((double)s->n_seq * s->n_gen);
}

TEST(drift_dense_exact_zero_for_unified_pairs) {
  model *m = dr_load("qwen3");
  REQUIRE(m);
  drift_seqs s;
  if (dr_sample(m, 7, &s)) {
    model_free(m);
    return;
  }
  CHECK_EQ_I64(s.n_seq, 6);
  CHECK_EQ_I64(s.n_gen, 20);
  drift_result r;
  if (!dr_pair(m, &s, QFMT_BF16, QFMT_BF16, QFMT_BF16, QFMT_BF16, &r)) {
    dr_check_zero(&r.plain, 120, "bf16 x bf16");
    CHECK_EQ_I64(r.moe, 0);
    CHECK(isnan(r.r3_overlap));
    CHECK(r.entropy > 3.0 && r.entropy <= log(256.0) + 1e-9);
    /* the rollout engine's own log-probs vs the full forward (rollout.h: <= 2e-6) */
    CHECK_EQ_I64(r.has_engine, 1);
    CHECK_EQ_I64(r.engine.n_tokens, 120);
    CHECK(r.engine.max_abs_diff <= 2e-6);
  }
  if (!dr_pair(m, &s, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, &r))
    dr_check_zero(&r.plain, 120, "fp8-block x fp8-block");
  if (!dr_pair(m, &s, QFMT_MXFP8, QFMT_MXFP8, QFMT_MXFP8, QFMT_MXFP8, &r)) dr_check_zero(&r.plain, 120, "mxfp8 x mxfp8");
  if (!dr_pair(m, &s, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, QFMT_BF16, QFMT_BF16, &r)) {
    const rl_mismatch *x = &r.plain;
    CHECK_EQ_I64(x->n_tokens, 120);
    CHECK(x->logp_abs_diff > 1e-3);
    CHECK(x->kl_k3 > 0);
    CHECK(x->ess < 1 && x->ess > 0.5);
    CHECK(x->max_abs_diff >= x->logp_abs_diff);
    CHECK(r.r3.logp_abs_diff == x->logp_abs_diff); /* dense: no R3 */
    /* the same number from each sequence run alone (the measured tokens are the sampled ones) */
    double manual = dr_manual_abs_diff(m, &s, QFMT_FP8_BLOCK, QFMT_BF16);
    CHECK_NEAR(x->logp_abs_diff, manual, 1e-12);
  }
  drift_seqs_free(&s);
  model_free(m);
}

TEST(drift_moe_r3_reduces_mismatch) {
  model *m = dr_load("qwen3_moe");
  REQUIRE(m);
  drift_seqs s;
  if (dr_sample(m, 7, &s)) {
    model_free(m);
    return;
  }
  drift_result r;
  if (!dr_pair(m, &s, QFMT_BF16, QFMT_BF16, QFMT_BF16, QFMT_BF16, &r)) {
    CHECK_EQ_I64(r.moe, 1);
    dr_check_zero(&r.plain, 120, "moe bf16 x bf16");
    dr_check_zero(&r.r3, 120, "moe bf16 x bf16 r3");
    CHECK(r.r3_overlap == 1.0);
  }
  if (!dr_pair(m, &s, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, &r)) {
    dr_check_zero(&r.plain, 120, "moe fp8 x fp8");
    dr_check_zero(&r.r3, 120, "moe fp8 x fp8 r3");
    CHECK(r.r3_overlap == 1.0);
  }
  if (!dr_pair(m, &s, QFMT_BF16, QFMT_NVFP4, QFMT_BF16, QFMT_NVFP4, &r))
    dr_check_zero(&r.plain, 120, "moe nvfp4 x nvfp4");
  if (!dr_pair(m, &s, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK, QFMT_BF16, QFMT_BF16, &r)) {
    CHECK(r.plain.logp_abs_diff > 1e-3);
    CHECK_MSG(r.r3.logp_abs_diff <= r.plain.logp_abs_diff, "R3 %.6g > without %.6g", r.r3.logp_abs_diff,
              r.plain.logp_abs_diff);
    CHECK(r.r3.kl_k3 <= r.plain.kl_k3);
    CHECK(r.r3.logp_abs_diff > 0); /* replay fixes routing, not the GEMM numerics */
    CHECK_MSG(r.r3_overlap > 0.5 && r.r3_overlap < 1.0, "r3/overlap %.6g", r.r3_overlap);
  }
  drift_seqs_free(&s);
  model_free(m);
}

TEST(drift_sampling_deterministic_and_token_file) {
  model *m = dr_load("qwen3");
  REQUIRE(m);
  drift_seqs a, b, c, d;
  REQUIRE(!dr_sample(m, 11, &a));
  REQUIRE(!dr_sample(m, 11, &b));
  REQUIRE(!dr_sample(m, 12, &c));
  size_t n = (size_t)a.n_seq * (a.n_prompt + a.n_gen);
  CHECK(memcmp(a.tokens, b.tokens, n * 4) == 0);
  CHECK(memcmp(a.tokens, c.tokens, n * 4) != 0);
  for (size_t i = 0; i < n; i++) CHECK_MSG(a.tokens[i] >= 0 && a.tokens[i] < 256, "token %zu = %d", i, a.tokens[i]);
  char path[1024], bad[1100];
  snprintf(path, sizeof path, "%s/set.tok", harness_tmpdir());
  rl_err e = {0};
  CHECK_EQ_I64(drift_seqs_save(&a, path, &e), 0);
  REQUIRE(drift_seqs_load(path, 256, &d, &e) == 0);
  CHECK_EQ_I64(d.n_seq, 6);
  CHECK_EQ_I64(d.n_prompt, 4);
  CHECK(d.logp_engine == NULL);
  CHECK(memcmp(a.tokens, d.tokens, n * 4) == 0);
  drift_seqs_free(&d);
  /* ids beyond a smaller vocabulary, a bad magic, a truncated file */
  CHECK_EQ_I64(drift_seqs_load(path, 2, &d, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "outside the vocabulary");
  snprintf(bad, sizeof bad, "%s/bad.tok", harness_tmpdir());
  CHECK_EQ_I64(harness_write_file(bad, "RLDRIFT2 and more bytes than the header"), 0);
  CHECK_EQ_I64(drift_seqs_load(bad, 256, &d, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "not a drift token file");
  FILE *f = fopen(path, "r+b");
  REQUIRE(f);
  CHECK_EQ_I64(ftruncate(fileno(f), 40), 0);
  fclose(f);
  CHECK_EQ_I64(drift_seqs_load(path, 256, &d, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "not a valid version-1");
  /* sequences longer than the model's positions (256) are refused before sampling */
  drift_sample_opts o = {.n_seq = 2, .n_prompt = 200, .n_gen = 100, .seed = 1};
  quant_policy bf;
  quant_policy_init(&bf, QFMT_BF16, QFMT_BF16);
  CHECK_EQ_I64(drift_sample_cpu(m, &bf, &o, &d, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "max_position_embeddings 256");
  /* no GPU here: the CUDA sampler says so */
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    o.n_prompt = 4, o.n_gen = 4;
    CHECK_EQ_I64(drift_sample_cuda(m, &bf, &o, &d, &e), RL_EXIT_HARDWARE);
  }
  drift_seqs_free(&a), drift_seqs_free(&b), drift_seqs_free(&c);
  model_free(m);
}

/* The engine mode's trainer side (drift_measure_batch) on a CPU engine batch:
 * the CPU engine reproduces the full forward (rollout.h), so it must agree
 * with drift_measure on the same tokens up to the log-sum-exp order; rows the
 * engine never fed (−1, the CUDA engine's last token) must not change the
 * measured tokens and are left out of r3/overlap. */
TEST(drift_measure_batch_engine_mode) {
  model *m = dr_load("qwen3_moe");
  REQUIRE(m);
  enum { N = 6, NP = 4, NG = 20, LEN = NP + NG };
  int32_t prompts[N][NP];
  const int32_t *ids[N];
  int64_t n_ids[N];
  for (int i = 0; i < N; i++) {
    for (int j = 0; j < NP; j++) prompts[i][j] = (int32_t)((i * 37 + j * 11 + 5) % 256);
    ids[i] = prompts[i], n_ids[i] = NP;
  }
  quant_policy fp8, bf;
  quant_policy_init(&fp8, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  quant_policy_init(&bf, QFMT_BF16, QFMT_BF16);
  rl_err e = {0};
  rollout_engine *eng = NULL;
  rollout_batch b;
  memset(&b, 0, sizeof b);
  rollout_opts o;
  rollout_opts_default(&o);
  o.seed = 3, o.max_new_tokens = NG, o.ignore_eos = 1, o.eos_id = -1, o.add_bos = 0;
  REQUIRE(rollout_engine_new(m, &fp8, NULL, NULL, &eng, &e) == 0);
  int rc = rollout_generate_ids(eng, ids, n_ids, N, 1, 0, &o, &b, &e);
  rollout_engine_free(eng);
  if (rc) {
    harness_fail(__FILE__, __LINE__, "rollout_generate_ids: %s", e.msg);
    model_free(m);
    return;
  }
  drift_result r, f, u, c;
  drift_seqs set;
  REQUIRE(drift_measure_batch(m, &b, &fp8, &bf, DRIFT_CPU, &r, &set, &e) == 0);
  CHECK_EQ_I64(set.n_seq, N);
  CHECK_EQ_I64(set.n_prompt, NP);
  CHECK_EQ_I64(set.n_gen, NG);
  for (int i = 0; i < N; i++) {
    CHECK(memcmp(set.tokens + i * LEN, prompts[i], NP * 4) == 0);
    CHECK(memcmp(set.tokens + i * LEN + NP, b.s[i].completion_ids, NG * 4) == 0);
    CHECK(memcmp(set.logp_engine + i * NG, b.s[i].logp_rollout, NG * 4) == 0);
  }
  CHECK_EQ_I64(r.moe, 1);
  CHECK_EQ_I64(r.has_engine, 1);
  CHECK_EQ_I64(r.plain.n_tokens, N * NG);
  CHECK(r.engine.max_abs_diff <= 2e-6);
  CHECK(r.plain.logp_abs_diff > 1e-3); /* fp8 engine x bf16 trainer drifts */
  /* the full-forward mode on the same tokens: the engine's log-probs differ by <= 2e-6 per token */
  REQUIRE(drift_measure(m, &set, &fp8, &bf, DRIFT_CPU, &f, &e) == 0);
  CHECK_NEAR(r.plain.logp_abs_diff, f.plain.logp_abs_diff, 2e-6);
  CHECK_NEAR(r.plain.max_abs_diff, f.plain.max_abs_diff, 4e-6);
  CHECK_NEAR(r.r3.logp_abs_diff, f.r3.logp_abs_diff, 2e-6);
  CHECK(r.r3_overlap == f.r3_overlap); /* the CPU engine routes as the full forward */
  CHECK(r.r3_overlap > 0.5 && r.r3_overlap < 1.0);
  CHECK(r.engine.max_abs_diff == f.engine.max_abs_diff && r.entropy == f.entropy);
  /* unified: what is left is the engine check itself (δ = forward − engine both times) */
  REQUIRE(drift_measure_batch(m, &b, &fp8, &fp8, DRIFT_CPU, &u, NULL, &e) == 0);
  CHECK(u.plain.max_abs_diff == r.engine.max_abs_diff && u.plain.logp_abs_diff == r.engine.logp_abs_diff);
  CHECK(u.r3.max_abs_diff == r.engine.max_abs_diff);
  CHECK(u.r3_overlap == 1.0);
  /* the last token never fed (its routing −1 in every layer): the same measured numbers, and
   * r3/overlap over the other rows: full·S_full − skip·S_skip = the last rows' hits, in [0, S_last] */
  int k = m->topk, n_moe = 0;
  for (int l = 0; l < m->L; l++) n_moe += m->layers[l].moe;
  for (int i = 0; i < N; i++)
    for (int j = 0; j < m->L * k; j++) b.s[i].routed[(size_t)(LEN - 1) * m->L * k + j] = -1;
  REQUIRE(drift_measure_batch(m, &b, &fp8, &bf, DRIFT_CPU, &c, NULL, &e) == 0);
  CHECK(c.plain.logp_abs_diff == r.plain.logp_abs_diff);
  CHECK_MSG(c.r3.logp_abs_diff == r.r3.logp_abs_diff && c.r3.max_abs_diff == r.r3.max_abs_diff,
            "r3 with unfed last rows %.9g / %.9g, fed %.9g / %.9g", c.r3.logp_abs_diff, c.r3.max_abs_diff,
            r.r3.logp_abs_diff, r.r3.max_abs_diff);
  double s_full = (double)N * LEN * k * n_moe, s_skip = (double)N * (LEN - 1) * k * n_moe;
  double last_hits = r.r3_overlap * s_full - c.r3_overlap * s_skip;
  CHECK_MSG(!isnan(c.r3_overlap) && last_hits > -1e-6 && last_hits < N * k * n_moe + 1e-6,
            "overlap fed %.9g, without the last rows %.9g: %g hits on %d last-row slots", r.r3_overlap,
            c.r3_overlap, last_hits, N * k * n_moe);
  CHECK_NEAR(last_hits, round(last_hits), 1e-6);
  /* a batch of uneven lengths is refused */
  b.s[2].n_completion = NG - 1;
  CHECK_EQ_I64(drift_measure_batch(m, &b, &fp8, &bf, DRIFT_CPU, &c, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "sample 2 has 4 + 19 tokens");
  b.s[2].n_completion = NG;
  /* no GPU here: the engine mode says so */
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    drift_sample_opts so = {.n_seq = 2, .n_prompt = 4, .n_gen = 4, .seed = 1};
    CHECK_EQ_I64(drift_measure_engine_cuda(m, &so, &fp8, &bf, &c, NULL, &e), RL_EXIT_HARDWARE);
    CHECK(isnan(c.r3_overlap));
  }
  drift_seqs_free(&set);
  rollout_batch_free(&b);
  model_free(m);
}
