/* test_train.c — the train stage (stages/train.h) on micro models: the
 * policy-loss gradient against central finite differences through the whole
 * model, ratio exactly 1 and zero mismatch before any update, determinism,
 * microbatch invariance, NaN stops, optimizer state round trip, RL.md's metrics
 * and loss through trainer_step against tests/oracle/rl_ref.py. The learning
 * tests (SFT memorises, RL raises a Lua reward) are in test_train_learn.c. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"
#include "stages/train.h"
#include "train_util.h"

/* ---------------------------------------------------------------- finite differences */

/* Captures the gradients at a given optimizer step and stops the step there. */
typedef struct grab_ctx {
  int64_t at_step;
  float **g; /* [n_params] copies */
  int grabbed;
} grab_ctx;

static int grab_hook(void *ud, model *m, int64_t step) {
  grab_ctx *c = ud;
  if (step != c->at_step) return 0;
  c->g = calloc((size_t)m->n_params, sizeof(float *));
  for (int i = 0; i < m->n_params; i++) {
    size_t n = (size_t)(m->params[i].rows * m->params[i].cols);
    c->g[i] = malloc(n * sizeof(float));
    memcpy(c->g[i], m->params[i].g, n * sizeof(float));
  }
  c->grabbed = 1;
  return RL_EXIT_FAIL; /* stop: the weights stay where the gradient was taken */
}

/* The batch loss with fixed logp_old / logp_ref / advantages, from the
 * current weights (trainer_logprobs), as rl_loss_compute over all samples. */
static double fd_batch_loss(trainer *t, const rollout_batch *b, const rl_loss_cfg *c,
                            const float *lp_old, const float *lp_ref, const double *adv,
                            const uint8_t *keep) {
  int64_t n = b->n, tot = 0;
  int64_t *off = malloc((size_t)(n + 1) * sizeof(int64_t));
  off[0] = 0;
  for (int64_t i = 0; i < n; i++) off[i + 1] = off[i] + b->s[i].n_completion;
  tot = off[n];
  float *lp = malloc((size_t)tot * sizeof(float)), *roll = malloc((size_t)tot * sizeof(float));
  float **ptr = malloc((size_t)n * sizeof(float *));
  for (int64_t i = 0; i < n; i++) {
    ptr[i] = lp + off[i];
    memcpy(roll + off[i], b->s[i].logp_rollout, (size_t)b->s[i].n_completion * sizeof(float));
  }
  rl_err e = {0};
  double loss = NAN;
  if (trainer_logprobs(t, b, ptr, &e) == 0) {
    rl_seqs sq = {(int)n, off, NULL, keep, adv, lp, lp_old, roll, lp_ref, NULL};
    float *g = malloc((size_t)tot * sizeof(float));
    rl_loss_out o;
    if (rl_loss_compute(c, &sq, NULL, &o, g, NULL, &e) == 0) loss = o.loss;
    free(g);
  }
  if (isnan(loss)) harness_fail(__FILE__, __LINE__, "fd loss: %s", e.msg);
  free(off), free(lp), free(roll), free(ptr);
  return loss;
}

/* The FD check of one micro model: gradient of the PPO + TIS + KL loss at
 * the second optimizer step of a call (ppo_epochs 2: ρ ≠ 1 there), against
 * central differences of the same loss with logp_old fixed. */
static void fd_train(int moe) {
  model *m = tu_micro_model(moe, 1, 16, moe ? 4711u : 1234u);
  REQUIRE(m);
  rollout_batch b;
  tu_batch_random(&b, m, 2, 3, 3, 4, 555u);
  if (moe) tu_batch_route_own(&b, m, 1);
  train_opts o;
  train_opts_default(&o);
  o.f32 = 1;
  o.r3 = moe;
  o.ppo_epochs = 2;
  o.microbatch = 2;
  o.optim.lr = 2e-3;
  o.optim.weight_decay = 0;
  o.loss.tis_mode = RL_TIS_TRUNCATE;
  o.loss.tis_clip = 1.05; /* some tokens truncated: the weight is a constant */
  o.loss.kl_beta = 0.3;
  grab_ctx gc = {2, NULL, 0};
  o.grad_hook = grab_hook, o.grad_hook_ud = &gc;
  trainer *t;
  rl_err e = {0};
  REQUIRE(trainer_new(m, &o, &t, &e) == 0);
  /* logp_old = logp_ref = the starting weights' log-probs. */
  int64_t tot = 0;
  for (int64_t i = 0; i < b.n; i++) tot += b.s[i].n_completion;
  float *lp0 = malloc((size_t)tot * sizeof(float)), **ptr = malloc((size_t)b.n * sizeof(float *));
  for (int64_t i = 0, q = 0; i < b.n; q += b.s[i].n_completion, i++) ptr[i] = lp0 + q;
  REQUIRE(trainer_logprobs(t, &b, ptr, &e) == 0);
  train_result r;
  int rc = trainer_step(t, &b, &r, &e);
  CHECK(rc != 0); /* stopped by the hook at step 2 */
  CHECK_CONTAINS(e.msg, "gradient hook");
  REQUIRE(gc.grabbed);
  CHECK_EQ_I64(trainer_step_count(t), 1);
  double rw[16], adv[16];
  uint8_t keep[16];
  for (int64_t i = 0; i < b.n; i++) rw[i] = b.s[i].reward;
  REQUIRE(rl_advantages(RL_ADV_GRPO, rw, b.n_prompts, (int)b.group, adv, keep, NULL, &e) == 0);
  rl_loss_cfg c = o.loss;
  c.kind = RL_LOSS_PPO;
  uint32_t s = 17;
  int checked = 0, bad = 0;
  double worst = 0;
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    int64_t n = p->rows * p->cols, pick[4] = {0, 0, 0, 0};
    double gmax = 0;
    for (int64_t j = 0; j < n; j++)
      if (fabs(gc.g[i][j]) > gmax) gmax = fabs(gc.g[i][j]), pick[0] = j;
    for (int q = 1; q < 4; q++) pick[q] = (int64_t)(tu_frand(&s, 0, 1) * (float)n) % n;
    for (int q = 0; q < 4; q++) {
      int64_t j = pick[q];
      float w0 = p->w32[j], h = 1e-2f * fmaxf(fabsf(w0), 0.1f);
      p->w32[j] = w0 + h;
      double lp = fd_batch_loss(t, &b, &c, lp0, lp0, adv, keep);
      p->w32[j] = w0 - h;
      double lm = fd_batch_loss(t, &b, &c, lp0, lp0, adv, keep);
      p->w32[j] = w0;
      double fd = (lp - lm) / ((double)(w0 + h) - (double)(w0 - h)), g = gc.g[i][j];
      double tol = 2e-3 * gmax + 2e-2 * fabs(g) + 1e-6, err = fabs(fd - g);
      checked++;
      if (err / tol > worst) worst = err / tol;
      if (err > tol) {
        bad++;
        printf("  FD mismatch %s[%lld]: fd %.7g vs backward %.7g (tol %.2g)\n", p->name,
               (long long)j, fd, g, tol);
      }
    }
  }
  printf("  %s: %d elements in %d tensors checked at step 2 (ratio != 1, TIS + KL on), worst "
         "err/tol %.3f\n",
         moe ? "moe (r3 replay)" : "dense", checked, m->n_params, worst);
  CHECK_EQ_I64(bad, 0);
  CHECK(checked >= 4 * 20);
  for (int i = 0; i < m->n_params; i++) free(gc.g[i]);
  free(gc.g), free(lp0), free(ptr);
  train_result_free(&r);
  trainer_free(t);
  tu_batch_free(&b);
  model_free(m);
}

TEST(train_fd_policy_grad_dense_micro) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1);
  fd_train(0);
  omp_set_num_threads(nt);
}

TEST(train_fd_policy_grad_moe_micro) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1);
  fd_train(1);
  omp_set_num_threads(nt);
}

/* ---------------------------------------------------------------- same precision: ratio 1 */

/* Rewards from the completion: 1 when its first token is even (varies in a group). */
static void reward_even_first(rollout_batch *b) {
  for (int64_t i = 0; i < b->n; i++)
    b->s[i].reward = b->s[i].n_completion > 0 && b->s[i].completion_ids[0] % 2 == 0 ? 1.0 : 0.0;
}

/* Rollout (the engine) and trainer in the same precision, before any update:
 * the mismatch is floating-point noise only and the first ratio exactly 1. */
static void same_precision(int moe, qformat fmt, int kv_f32) {
  model *m = tu_micro_model(moe, 0, 32, moe ? 99u : 98u);
  REQUIRE(m);
  quant_policy pol;
  quant_policy_init(&pol, fmt, fmt);
  rollout_engine *eng;
  rollout_engine_opts eo = {0};
  eo.kv_f32 = kv_f32;
  rl_err e = {0};
  REQUIRE(rollout_engine_new(m, &pol, NULL, &eo, &eng, &e) == 0);
  rollout_opts ro;
  rollout_opts_default(&ro);
  ro.seed = 7, ro.max_new_tokens = 6, ro.eos_id = -1, ro.temperature = 1.0;
  int32_t p0[4] = {5, 9, 11, 3}, p1[3] = {20, 4, 17}, p2[5] = {8, 8, 30, 12, 6};
  const int32_t *ids[3] = {p0, p1, p2};
  int64_t nids[3] = {4, 3, 5};
  rollout_batch b;
  REQUIRE(rollout_generate_ids(eng, ids, nids, 3, 4, 1, &ro, &b, &e) == 0);
  reward_even_first(&b);
  train_opts o;
  train_opts_default(&o);
  o.policy = pol;
  o.r3 = moe;
  o.microbatch = 5;
  o.loss.tis_mode = RL_TIS_TRUNCATE;
  o.optim.lr = 1e-3;
  trainer *t;
  REQUIRE(trainer_new(m, &o, &t, &e) == 0);
  train_result r;
  int rc = trainer_step(t, &b, &r, &e);
  CHECK_MSG(rc == 0, "%s", e.msg);
  printf("  %s %s kv %s: kl_k3 %.3g, abs diff %.3g (max %.3g), ess %.9f, first ratio max "
         "|dlogp| %.3g, r3/overlap %.4f, %lld tokens\n",
         moe ? "moe" : "dense", qtensor_format_name(fmt), kv_f32 ? "f32" : "bf16",
         r.mismatch.kl_k3, r.mismatch.logp_abs_diff, r.mismatch.max_abs_diff, r.mismatch.ess,
         r.first_ratio_max_dev, moe ? r.r3_overlap : 1.0, (long long)r.mismatch.n_tokens);
  CHECK(r.first_ratio_max_dev == 0.0); /* bitwise: old pass == first microbatch */
  CHECK_EQ_I64(r.mismatch.n_tokens, b.n_generated);
  /* Same logits bit for bit — an FP32 cache, and the default BF16 cache of the
   * pre-RoPE keys alike (model/kvcache.h: it holds the BF16 GEMM outputs
   * exactly); the two log-softmax codes (sampler vs trainer) differ by
   * rounding only: |δ| <= 1e-6, k3 ~ δ²/2 <= 1e-12. */
  CHECK_MSG(r.mismatch.kl_k3 >= 0 && r.mismatch.kl_k3 <= 1e-12, "kl_k3 %g (kv_f32 %d)", r.mismatch.kl_k3, kv_f32);
  CHECK_MSG(r.mismatch.max_abs_diff <= 1e-6, "max_abs_diff %g (kv_f32 %d)", r.mismatch.max_abs_diff, kv_f32);
  CHECK_NEAR(r.mismatch.ess, 1.0, 1e-9);
  if (moe) CHECK(r.r3_overlap == 1.0);
  int found = 0;
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_KL_K3, &found), r.mismatch.kl_k3, 0);
  CHECK(found);
  rl_metric_get(&r.metrics, RL_M_R3_OVERLAP, &found);
  CHECK_EQ_I64(found, moe);
  CHECK_EQ_I64(r.steps, 1);
  train_result_free(&r);
  trainer_free(t);
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  model_free(m);
}

TEST(train_same_precision_ratio_one_zero_mismatch) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1); /* tiny work: OpenMP barriers on a loaded machine cost more */
  same_precision(0, QFMT_BF16, 1);
  same_precision(0, QFMT_FP8_BLOCK, 1);
  same_precision(1, QFMT_BF16, 1);
  same_precision(1, QFMT_FP8_BLOCK, 1);
  same_precision(0, QFMT_BF16, 0);
  omp_set_num_threads(nt);
}

/* ---------------------------------------------------------------- determinism */

/* Two steps of a fresh trainer over a copy of m0 with microbatch mb; returns the model. */
static model *train_two_steps(model *m0, int moe, int64_t mb, int threads, train_result *last) {
  model *m = tu_model_copy(m0);
  rollout_batch b1, b2;
  tu_batch_random(&b1, m, 3, 4, 4, 5, 11u);
  tu_batch_random(&b2, m, 3, 4, 3, 6, 12u);
  if (moe) tu_batch_route_own(&b1, m, 0), tu_batch_route_own(&b2, m, 0);
  train_opts o;
  train_opts_default(&o);
  o.microbatch = mb;
  o.r3 = moe;
  o.optim.lr = 1e-2;
  o.loss.tis_mode = RL_TIS_TRUNCATE;
  o.loss.entropy_coef = 0.01;
  o.loss.kl_beta = 0.05;
  int nt = omp_get_max_threads();
  omp_set_num_threads(threads);
  trainer *t;
  rl_err e = {0};
  train_result r;
  if (trainer_new(m, &o, &t, &e) || trainer_step(t, &b1, &r, &e)) {
    harness_fail(__FILE__, __LINE__, "%s", e.msg);
  } else {
    train_result_free(&r);
    if (trainer_step(t, &b2, last, &e)) harness_fail(__FILE__, __LINE__, "%s", e.msg);
  }
  omp_set_num_threads(nt);
  trainer_free(t);
  tu_batch_free(&b1), tu_batch_free(&b2);
  return m;
}

TEST(train_deterministic_bitwise) {
  for (int moe = 0; moe < 2; moe++) {
    model *m0 = tu_micro_model(moe, 0, 32, 31u);
    REQUIRE(m0);
    train_result ra, rb;
    model *a = train_two_steps(m0, moe, 3, 2, &ra);
    model *b = train_two_steps(m0, moe, 3, 1, &rb);
    CHECK(tu_weights_equal(a, b));
    CHECK(!tu_weights_equal(a, m0)); /* it did move */
    CHECK(ra.loss.loss == rb.loss.loss);
    CHECK(ra.optim.grad_norm == rb.optim.grad_norm);
    printf("  %s: 2 steps, loss %.6f, grad norm %.6f, identical with 2 and 1 threads\n",
           moe ? "moe" : "dense", ra.loss.loss, ra.optim.grad_norm);
    train_result_free(&ra), train_result_free(&rb);
    model_free(a), model_free(b), model_free(m0);
  }
}

/* Gradients of the first step, copied (the step continues). */
typedef struct copy_ctx {
  float **g;
} copy_ctx;

static int copy_hook(void *ud, model *m, int64_t step) {
  copy_ctx *c = ud;
  if (step != 1) return 0;
  c->g = calloc((size_t)m->n_params, sizeof(float *));
  for (int i = 0; i < m->n_params; i++) {
    size_t n = (size_t)(m->params[i].rows * m->params[i].cols);
    c->g[i] = malloc(n * sizeof(float));
    memcpy(c->g[i], m->params[i].g, n * sizeof(float));
  }
  return 0;
}

/* 1 vs 4 microbatches (and 8: one): the same update up to FP32 summation order. */
TEST(train_microbatch_split_invariance) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1); /* tiny work: OpenMP barriers on a loaded machine cost more */
  for (int moe = 0; moe < 2; moe++) {
    model *m0 = tu_micro_model(moe, 0, 32, 77u);
    REQUIRE(m0);
    rollout_batch b;
    tu_batch_random(&b, m0, 2, 4, 4, 5, 21u);
    if (moe) tu_batch_route_own(&b, m0, 0);
    int64_t mbs[2] = {8, 2}; /* 1 microbatch vs 4 */
    model *mm[2];
    copy_ctx cc[2] = {{NULL}, {NULL}};
    train_result rr[2];
    for (int k = 0; k < 2; k++) {
      mm[k] = tu_model_copy(m0);
      train_opts o;
      train_opts_default(&o);
      o.microbatch = mbs[k];
      o.r3 = moe;
      o.optim.lr = 1e-3;
      o.loss.agg = moe ? RL_AGG_SEQ_MEAN_TOKEN_MEAN : RL_AGG_TOKEN_MEAN;
      o.grad_hook = copy_hook, o.grad_hook_ud = &cc[k];
      trainer *t;
      rl_err e = {0};
      REQUIRE(trainer_new(mm[k], &o, &t, &e) == 0);
      CHECK_MSG(trainer_step(t, &b, &rr[k], &e) == 0, "%s", e.msg);
      trainer_free(t);
    }
    REQUIRE(cc[0].g && cc[1].g);
    double gmax = 0, gdiff = 0;
    int64_t wdiff = 0, wtot = 0;
    for (int i = 0; i < m0->n_params; i++) {
      int64_t n = m0->params[i].rows * m0->params[i].cols;
      for (int64_t j = 0; j < n; j++) {
        gmax = fmax(gmax, fabs(cc[0].g[i][j]));
        gdiff = fmax(gdiff, fabs((double)cc[0].g[i][j] - cc[1].g[i][j]));
        wdiff += mm[0]->params[i].w[j] != mm[1]->params[i].w[j];
      }
      wtot += n;
      free(cc[0].g[i]), free(cc[1].g[i]);
    }
    double dl = fabs(rr[0].loss.loss - rr[1].loss.loss);
    printf("  %s: 1 vs 4 microbatches: max |dg| %.3g (max |g| %.3g, rel %.3g), |dloss| %.3g, "
           "%lld of %lld BF16 weights differ\n",
           moe ? "moe seq_mean_token_mean" : "dense token_mean", gdiff, gmax, gdiff / gmax, dl,
           (long long)wdiff, (long long)wtot);
    /* FP32 summation noise: gradients sum microbatches in another order. */
    CHECK(gdiff <= 1e-5 * gmax);
    CHECK(dl <= 1e-6 * fmax(1.0, fabs(rr[0].loss.loss)));
    CHECK(wdiff * 100 <= wtot); /* at most 1% of weights one BF16 rounding apart */
    CHECK_EQ_I64(rr[0].loss.n_tokens, rr[1].loss.n_tokens);
    free(cc[0].g), free(cc[1].g);
    train_result_free(&rr[0]), train_result_free(&rr[1]);
    model_free(mm[0]), model_free(mm[1]), model_free(m0);
    tu_batch_free(&b);
  }
  omp_set_num_threads(nt);
}

/* ---------------------------------------------------------------- NaN stops the step */

/* Puts a NaN into one gradient element at step 1. */
static int poison_hook(void *ud, model *m, int64_t step) {
  (void)ud;
  m->params[3].g[2] = NAN;
  return 0;
}

/* Flat copy of the optimizer state (moments, main, step). */
static uint8_t *state_snapshot(trainer *t, size_t *len) {
  train_state_tensor *v;
  int n;
  rl_err e = {0};
  if (trainer_state_list(t, &v, &n, &e)) return NULL;
  size_t tot = 0;
  for (int i = 0; i < n; i++) tot += v[i].nbytes;
  uint8_t *s = malloc(tot), *p = s;
  for (int i = 0; i < n; i++) memcpy(p, v[i].data, v[i].nbytes), p += v[i].nbytes;
  free(v);
  *len = tot;
  return s;
}

TEST(train_nonfinite_stops_before_weights_change) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1); /* tiny work: OpenMP barriers on a loaded machine cost more */
  model *m = tu_micro_model(0, 0, 16, 5u);
  REQUIRE(m);
  model *m0 = tu_model_copy(m);
  rollout_batch b;
  tu_batch_random(&b, m, 2, 4, 3, 4, 8u);
  for (int c = 0; c < 3; c++) {
    train_opts o;
    train_opts_default(&o);
    o.loss.tis_mode = RL_TIS_TRUNCATE;
    o.optim.lr = 1e-2;
    if (c == 2) o.grad_hook = poison_hook;
    trainer *t;
    rl_err e = {0};
    REQUIRE(trainer_new(m, &o, &t, &e) == 0);
    double keep_r = b.s[1].reward;
    float keep_l = b.s[5].logp_rollout[0];
    if (c == 0) b.s[1].reward = NAN;
    if (c == 1) b.s[5].logp_rollout[0] = INFINITY;
    size_t n0, n1;
    uint8_t *s0 = state_snapshot(t, &n0);
    train_result r;
    int rc = trainer_step(t, &b, &r, &e);
    uint8_t *s1 = state_snapshot(t, &n1);
    CHECK_EQ_I64(rc, RL_EXIT_FAIL);
    printf("  case %d: %s\n", c, e.msg);
    if (c == 0) CHECK_CONTAINS(e.msg, "reward");
    if (c == 1) CHECK_CONTAINS(e.msg, "logp_rollout");
    if (c == 2) CHECK_CONTAINS(e.msg, "model.layers.0.self_attn.k_proj.weight");
    CHECK(tu_weights_equal(m, m0));
    CHECK(n0 == n1 && memcmp(s0, s1, n0) == 0);
    CHECK_EQ_I64(trainer_step_count(t), 0);
    free(s0), free(s1);
    b.s[1].reward = keep_r, b.s[5].logp_rollout[0] = keep_l;
    trainer_free(t);
  }
  tu_batch_free(&b);
  model_free(m), model_free(m0);
  omp_set_num_threads(nt);
}

/* ---------------------------------------------------------------- checkpoint state */

/* Save after one step, load into a fresh trainer over a copy of the weights:
 * the next step is bit-identical to the uninterrupted trainer's. */
TEST(train_state_roundtrip_resumes_bitwise) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1); /* tiny work: OpenMP barriers on a loaded machine cost more */
  for (int mainp = 0; mainp < 2; mainp++) {
    model *m = tu_micro_model(1, 0, 16, 314u);
    REQUIRE(m);
    rollout_batch b1, b2;
    tu_batch_random(&b1, m, 2, 4, 3, 4, 1u);
    tu_batch_random(&b2, m, 2, 4, 4, 3, 2u);
    tu_batch_route_own(&b1, m, 0), tu_batch_route_own(&b2, m, 0);
    train_opts o;
    train_opts_default(&o);
    o.r3 = 1;
    o.optim.lr = 1e-2;
    o.optim.main_params = mainp ? OPTIM_MAIN_BF16 : OPTIM_MAIN_FP32;
    o.loss.kl_beta = 0.1;
    trainer *t, *t2;
    rl_err e = {0};
    train_result r;
    REQUIRE(trainer_new(m, &o, &t, &e) == 0);
    REQUIRE(trainer_step(t, &b1, &r, &e) == 0);
    train_result_free(&r);
    char path[512];
    snprintf(path, sizeof path, "%s/train_state_%d.safetensors", harness_tmpdir(), mainp);
    CHECK_MSG(trainer_state_save(t, path, &e) == 0, "%s", e.msg);
    model *m2 = tu_model_copy(m); /* the runner restores the BF16 master weights */
    train_opts o2 = o;
    o2.loss.kl_beta = 0.1;
    REQUIRE(trainer_new(m2, &o2, &t2, &e) == 0); /* its reference = m2's weights now: wrong until loaded */
    CHECK_MSG(trainer_state_load(t2, path, &e) == 0, "%s", e.msg);
    CHECK_EQ_I64(trainer_step_count(t2), 1);
    REQUIRE(trainer_step(t, &b2, &r, &e) == 0);
    train_result_free(&r);
    REQUIRE(trainer_step(t2, &b2, &r, &e) == 0);
    train_result_free(&r);
    CHECK(tu_weights_equal(m, m2));
    size_t n1, n2;
    uint8_t *s1 = state_snapshot(t, &n1), *s2 = state_snapshot(t2, &n2);
    CHECK(n1 == n2 && memcmp(s1, s2, n1) == 0);
    free(s1), free(s2);
    /* A state of another configuration is refused, naming the tensor. */
    trainer *t3;
    train_opts o3 = o;
    o3.optim.main_params = mainp ? OPTIM_MAIN_FP32 : OPTIM_MAIN_BF16;
    REQUIRE(trainer_new(m2, &o3, &t3, &e) == 0);
    int rc = trainer_state_load(t3, path, &e);
    if (mainp) {
      CHECK_EQ_I64(rc, RL_EXIT_STATE);
      CHECK_CONTAINS(e.msg, "optim.main.model.embed_tokens.weight");
    } else {
      CHECK_EQ_I64(rc, 0); /* extra main tensors are ignored when main params are BF16 */
    }
    trainer_free(t3);
    trainer_free(t), trainer_free(t2);
    tu_batch_free(&b1), tu_batch_free(&b2);
    model_free(m), model_free(m2);
  }
  omp_set_num_threads(nt);
}

/* Bad batches are refused with what is wrong. */
TEST(train_rejects_bad_batches) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1); /* tiny work: OpenMP barriers on a loaded machine cost more */
  model *m = tu_micro_model(1, 0, 16, 3u);
  REQUIRE(m);
  rollout_batch b;
  tu_batch_random(&b, m, 1, 2, 3, 3, 4u);
  train_opts o;
  train_opts_default(&o);
  o.r3 = 1;
  trainer *t;
  rl_err e = {0};
  train_result r;
  REQUIRE(trainer_new(m, &o, &t, &e) == 0);
  CHECK_EQ_I64(trainer_step(t, &b, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "routed experts");
  tu_batch_route_own(&b, m, 0);
  b.s[1].n_prompt = 0;
  CHECK_EQ_I64(trainer_step(t, &b, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "at least one prompt token");
  b.s[1].n_prompt = 3;
  b.s[0].routed[2] = 7; /* token 0, MoE layer 1, choice 0: expert id out of range */
  CHECK(trainer_step(t, &b, &r, &e) != 0);
  CHECK_CONTAINS(e.msg, "router replay (R3): expert id 7 at token 0, slot 0 is outside [0, 4)");
  CHECK_EQ_I64(trainer_step_count(t), 0);
  train_opts bad = o;
  bad.microbatch = 0;
  trainer *t2;
  CHECK_EQ_I64(trainer_new(m, &bad, &t2, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "microbatch");
  trainer_free(t);
  tu_batch_free(&b);
  model_free(m);
  omp_set_num_threads(nt);
}

/* The metric list of an iteration: every RL.md metric, with values checked
 * against hand counts (one degenerate group, warm-up lr, token counts). */
TEST(train_metrics_named_list) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1);
  model *m = tu_micro_model(1, 0, 16, 8u);
  REQUIRE(m);
  rollout_batch b;
  tu_batch_random(&b, m, 3, 2, 3, 4, 66u);
  tu_batch_route_own(&b, m, 0);
  /* group 0: 1, 0; group 1: 0.5, 0.5 (degenerate); group 2: 0, 1 */
  double rw[6] = {1, 0, 0.5, 0.5, 0, 1};
  int64_t kept_tokens = 0;
  for (int i = 0; i < 6; i++) {
    b.s[i].reward = rw[i];
    if (i / 2 != 1) kept_tokens += b.s[i].n_completion;
  }
  train_opts o;
  train_opts_default(&o);
  o.r3 = 1;
  o.optim.lr = 1e-3, o.optim.warmup_steps = 4;
  o.loss.tis_mode = RL_TIS_MASK;
  trainer *t;
  rl_err e = {0};
  train_result r;
  REQUIRE(trainer_new(m, &o, &t, &e) == 0);
  REQUIRE(trainer_step(t, &b, &r, &e) == 0);
  const char *names[] = {RL_M_REWARD_MEAN, RL_M_REWARD_STD, RL_M_GROUPS_DEGENERATE, RL_M_LOSS,
                         RL_M_LOSS_POLICY, RL_M_POLICY_CLIPFRAC, RL_M_LOGP_ABS_DIFF, RL_M_KL_K3,
                         RL_M_ESS, RL_M_MAX_ABS_DIFF, RL_M_TIS_CLIPFRAC, RL_M_TIS_MEAN,
                         RL_M_R3_OVERLAP, RL_M_GRAD_NORM, RL_M_LR, TRAIN_M_TOKENS_PER_S,
                         TRAIN_M_TOKENS, TRAIN_M_OPTIM_STEP};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    int found = 0;
    double v = rl_metric_get(&r.metrics, names[i], &found);
    CHECK_MSG(found && isfinite(v), "metric %s: found %d value %g", names[i], found, v);
  }
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_REWARD_MEAN, NULL), 0.5, 1e-15);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_REWARD_STD, NULL), sqrt(1.0 / 6.0), 1e-15);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_GROUPS_DEGENERATE, NULL), 1, 0);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_LR, NULL), 1e-3 / 4, 1e-18);
  CHECK_NEAR(rl_metric_get(&r.metrics, TRAIN_M_TOKENS, NULL), (double)kept_tokens, 0);
  CHECK_EQ_I64(r.loss.n_tokens, kept_tokens);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_R3_OVERLAP, NULL), 1.0, 0); /* its own routing */
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_GRAD_NORM, NULL), r.optim.grad_norm, 0);
  /* logp_rollout ≈ −log 32 ± 0.3 vs the model's own: IcePop keeps w in [0.5, 2]. */
  double tm = rl_metric_get(&r.metrics, RL_M_TIS_MEAN, NULL),
         tc = rl_metric_get(&r.metrics, RL_M_TIS_CLIPFRAC, NULL);
  CHECK_NEAR(tm, 1.0 - tc, 1e-12); /* mask weights are 0 or 1 */
  train_result_free(&r);
  trainer_free(t);
  tu_batch_free(&b);
  model_free(m);
  omp_set_num_threads(nt);
}

/* RL.md end to end through trainer_step: the mismatch metrics cover every
 * generated token (the degenerate group's too), the loss only the kept groups'
 * tokens (token mean), grpo's std is the sample std, IcePop weights the policy
 * term. logp_rollout = logp_old + a[t % 5] exactly (a multiple of the FP32 ulp,
 * toward 0), so δ_t = −a[t % 5] and the metrics depend on δ alone. Expected
 * values from tests/oracle/rl_ref.py (case_trainer_mismatch_all_tokens). */
TEST(train_mismatch_over_every_generated_token) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1);
  model *m = tu_micro_model(0, 0, 16, 21u);
  REQUIRE(m);
  rollout_batch b;
  tu_batch_random(&b, m, 3, 3, 3, 4, 77u);
  const double rw[9] = {1, 0, 0.5, 0.5, 0.5, 0.5, 0, 0, 1};
  const int64_t len[9] = {3, 1, 4, 2, 3, 1, 4, 2, 2};
  const float a[5] = {0, 0.125f, 0.5f, 1, 1.5f};
  uint32_t seed = 5u;
  for (int i = 0; i < 9; i++) { /* the completions of the lengths above */
    rollout_sample *s = &b.s[i];
    s->reward = rw[i];
    s->n_completion = len[i];
    s->completion_ids = realloc(s->completion_ids, (size_t)len[i] * sizeof(int32_t));
    s->logp_rollout = realloc(s->logp_rollout, (size_t)len[i] * sizeof(float));
    for (int64_t j = 0; j < len[i]; j++)
      s->completion_ids[j] = 3 + (int32_t)(tu_frand(&seed, 0, 1) * (float)(m->V - 3));
  }
  train_opts o;
  train_opts_default(&o);
  o.microbatch = 16;
  o.loss.tis_mode = RL_TIS_MASK;
  trainer *t;
  rl_err e = {0};
  REQUIRE(trainer_new(m, &o, &t, &e) == 0);
  float *lp[9];
  for (int i = 0; i < 9; i++) lp[i] = b.s[i].logp_rollout;
  REQUIRE(trainer_logprobs(t, &b, lp, &e) == 0); /* logp_old, into logp_rollout */
  int64_t k = 0;
  for (int i = 0; i < 9; i++)
    for (int64_t j = 0; j < len[i]; j++, k++) {
      float old = lp[i][j], roll = old + a[k % 5];
      REQUIRE(old < -1.5f && (double)old - (double)roll == -(double)a[k % 5]);
      lp[i][j] = roll;
    }
  REQUIRE(k == 22);
  train_result r;
  REQUIRE(trainer_step(t, &b, &r, &e) == 0);
  CHECK_NEAR(r.first_ratio_max_dev, 0, 0);
  CHECK_EQ_I64(r.mismatch.n_tokens, 22);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_LOGP_ABS_DIFF, NULL), 0.57386363636363635, 1e-15);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_KL_K3, NULL), 0.21943843441149993, 1e-15);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_ESS, NULL), 0.82557724513868114, 1e-15);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_MAX_ABS_DIFF, NULL), 1.5, 0);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_TIS_CLIPFRAC, NULL), 0.36363636363636365, 1e-15);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_TIS_MEAN, NULL), 0.63636363636363635, 1e-15);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_LOSS_POLICY, NULL), -0.22358395432520986, 1e-12);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_LOSS, NULL), -0.22358395432520986, 1e-12);
  CHECK_NEAR(rl_metric_get(&r.metrics, TRAIN_M_TOKENS, NULL), 16, 0);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_GROUPS_DEGENERATE, NULL), 1, 0);
  CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_POLICY_CLIPFRAC, NULL), 0, 0);
  train_result_free(&r);
  trainer_free(t);
  tu_batch_free(&b);
  model_free(m);
  omp_set_num_threads(nt);
}
