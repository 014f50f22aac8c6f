/* test_train_learn.c — the train stage learns: SFT memorises a short
 * sequence, and GRPO with the rollout engine and a Lua reward raises the mean
 * reward of a tiny model on a trivially learnable task (end to end on CPU). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "lua/host.h"
#include "model/model.h"
#include "stages/rollout.h"
#include "stages/train.h"
#include "train_util.h"

/* SFT on one 12-token target after a 1-token prompt: the mean cross-entropy
 * falls from ~log(32) to below 0.05 within 60 steps. */
TEST(train_sft_memorises_sequence) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1); /* tiny work: OpenMP barriers on a loaded machine cost more */
  model *m = tu_micro_model(0, 0, 32, 2024u);
  REQUIRE(m);
  static const int32_t target[12] = {7, 19, 4, 4, 28, 13, 9, 30, 3, 16, 22, 11};
  rollout_batch b;
  memset(&b, 0, sizeof b);
  b.iteration = 1, b.n_prompts = 1, b.group = 1, b.n = 1;
  b.s = calloc(1, sizeof *b.s);
  b.s[0].n_prompt = 1;
  b.s[0].prompt_ids = malloc(sizeof(int32_t));
  b.s[0].prompt_ids[0] = 1;
  b.s[0].n_completion = 12;
  b.s[0].completion_ids = malloc(sizeof target);
  memcpy(b.s[0].completion_ids, target, sizeof target);
  train_opts o;
  train_opts_default(&o);
  o.algorithm = TRAIN_ALGO_SFT;
  o.optim.lr = 1e-2;
  trainer *t;
  rl_err e = {0};
  REQUIRE(trainer_new(m, &o, &t, &e) == 0);
  double first = NAN, loss = NAN;
  int steps = 0;
  for (steps = 1; steps <= 60; steps++) {
    train_result r;
    REQUIRE(trainer_step(t, &b, &r, &e) == 0);
    loss = r.loss.loss;
    if (steps == 1) {
      first = loss;
      int found;
      rl_metric_get(&r.metrics, RL_M_POLICY_CLIPFRAC, &found);
      CHECK(!found); /* no PPO metrics in SFT */
      CHECK_NEAR(rl_metric_get(&r.metrics, RL_M_LOSS, NULL), loss, 0);
    }
    train_result_free(&r);
    if (loss < 0.05) break;
  }
  printf("  SFT: cross-entropy %.4f -> %.4f in %d steps (log 32 = %.4f)\n", first, loss, steps,
         log(32.0));
  CHECK(first > 2.5);
  CHECK(loss < 0.05);
  CHECK_EQ_I64(trainer_step_count(t), steps > 60 ? 60 : steps);
  trainer_free(t);
  tu_batch_free(&b);
  model_free(m);
  omp_set_num_threads(nt);
}

/* The task: every completion token below 12 scores 1/4 (completions of 4
 * tokens, no EOS); a uniform policy scores 12/32 = 0.375. */
static const char REWARD_LUA[] =
    "function reward(s)\n"
    "  local n = 0\n"
    "  for _, t in ipairs(s.tokens) do if t < 12 then n = n + 1 end end\n"
    "  return n / 4\n"
    "end\n";

/* Rewards of a batch from the Lua host. */
static int score_batch(luahost *h, rollout_batch *b, rl_err *e) {
  for (int64_t i = 0; i < b->n; i++) {
    rollout_sample *s = &b->s[i];
    luahost_sample ls = {s->prompt_text ? s->prompt_text : "",
                         s->completion_text ? s->completion_text : "",
                         s->completion_ids, (int)s->n_completion, "length", i,
                         s->prompt_index, b->iteration, NULL};
    luahost_reward r;
    int rc = luahost_reward_one(h, &ls, &r, e);
    if (rc) return rc;
    s->reward = r.reward;
  }
  return 0;
}

/* GRPO end to end: rollout (BF16, same precision as training) → Lua reward →
 * trainer, 12 iterations of 4 prompts x 8 samples. */
TEST(train_grpo_raises_lua_reward) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1);
  model *m = tu_micro_model(0, 0, 32, 606u);
  REQUIRE(m);
  rl_err e = {0};
  luahost *h = luahost_open_string("reward_low_tokens.lua", REWARD_LUA, sizeof REWARD_LUA - 1,
                                   NULL, &e);
  REQUIRE(h);
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  rollout_engine *eng;
  REQUIRE(rollout_engine_new(m, &pol, NULL, NULL, &eng, &e) == 0);
  rollout_opts ro;
  rollout_opts_default(&ro);
  ro.seed = 3, ro.max_new_tokens = 4, ro.eos_id = -1, ro.temperature = 1.0;
  train_opts o;
  train_opts_default(&o);
  o.policy = pol;
  o.microbatch = 8;
  o.optim.lr = 1e-2;
  o.loss.tis_mode = RL_TIS_TRUNCATE;
  trainer *t;
  REQUIRE(trainer_new(m, &o, &t, &e) == 0);
  int32_t p[4][3] = {{5, 9, 13}, {20, 21, 22}, {30, 3, 17}, {8, 25, 14}};
  const int32_t *ids[4] = {p[0], p[1], p[2], p[3]};
  int64_t nids[4] = {3, 3, 3, 3};
  enum { ITERS = 12 };
  double mean[ITERS];
  for (int it = 0; it < ITERS; it++) {
    rollout_batch b;
    REQUIRE(rollout_generate_ids(eng, ids, nids, 4, 8, it + 1, &ro, &b, &e) == 0);
    REQUIRE(score_batch(h, &b, &e) == 0);
    train_result r;
    int rc = trainer_step(t, &b, &r, &e);
    CHECK_MSG(rc == 0, "iteration %d: %s", it + 1, e.msg);
    mean[it] = r.reward_mean;
    if (it == 0 || it == ITERS - 1)
      printf("  iteration %d: reward %.3f (std %.3f), loss %.4f, clipfrac %.3f, kl_k3 %.2g, "
             "grad norm %.3f, %.0f tokens/s\n",
             it + 1, r.reward_mean, r.reward_std, r.loss.loss, r.clipfrac, r.mismatch.kl_k3,
             r.optim.grad_norm, r.tokens_per_s);
    train_result_free(&r);
    rollout_batch_free(&b);
    if (rc) break;
  }
  double early = (mean[0] + mean[1]) / 2, late = (mean[ITERS - 2] + mean[ITERS - 1]) / 2;
  printf("  mean reward: first two iterations %.3f, last two %.3f\n", early, late);
  CHECK(late >= early + 0.3);
  trainer_free(t);
  rollout_engine_free(eng);
  luahost_close(h);
  model_free(m);
  omp_set_num_threads(nt);
}
