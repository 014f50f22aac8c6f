/* test_rollout.c — the rollout engine (stages/rollout.h) on the CPU: batch
 * composition independence, greedy = argmax of a full forward, rollout
 * log-probs against the full-sequence forward (`rlrun score` included), stop
 * rules, MoE routing capture, text prompts. Micro models with seeded weights
 * (hidden 32, 2 layers, 4 query / 2 KV heads of 8, vocab 40; MoE: layer 0
 * dense, layer 1 with 4 experts top-2). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"
#include "stages/rollout.h"
#include "test_rollout_util.h"

/* 16 prompts of 1..9 tokens (ids 3..39), deterministic. */
static void ro_prompts(int32_t ids[16][9], int64_t n[16], const int32_t **ptr) {
  uint32_t s = 99;
  for (int p = 0; p < 16; p++) {
    n[p] = 1 + p % 9;
    for (int j = 0; j < n[p]; j++) ids[p][j] = 3 + (int32_t)(ro_rand(&s) % 37);
    ptr[p] = ids[p];
  }
}

/* 1 when two batches hold the same samples bit for bit (and says where not). */
static int ro_same(const rollout_batch *a, const rollout_batch *b, const char *what) {
  if (a->n != b->n || a->route_layers != b->route_layers || a->route_topk != b->route_topk) {
    harness_fail(__FILE__, __LINE__, "%s: batch shapes differ", what);
    return 0;
  }
  for (int64_t i = 0; i < a->n; i++) {
    const rollout_sample *x = &a->s[i], *y = &b->s[i];
    int64_t T = x->n_prompt + x->n_completion;
    if (x->n_completion != y->n_completion || x->finish != y->finish ||
        memcmp(x->completion_ids, y->completion_ids, (size_t)x->n_completion * 4) ||
        memcmp(x->logp_rollout, y->logp_rollout, (size_t)x->n_completion * 4) ||
        (x->routed && memcmp(x->routed, y->routed, (size_t)(T * a->route_layers * a->route_topk) * 4))) {
      harness_fail(__FILE__, __LINE__, "%s: sample %lld differs", what, (long long)i);
      return 0;
    }
  }
  return 1;
}

/* Same (seed, iteration, prompt, sample) → same tokens, log-probs and routing
 * with 1, 7 and 64 slots, and with 1 or 2 threads. */
static void ro_invariance(int moe) {
  model *m = ro_model(moe, 7, 0);
  REQUIRE(m);
  int32_t ids[16][9];
  int64_t n[16];
  const int32_t *ptr[16];
  ro_prompts(ids, n, ptr);
  rl_err e = {0};
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  rollout_engine *eng = NULL;
  REQUIRE(!rollout_engine_new(m, &pol, NULL, NULL, &eng, &e));
  rollout_opts o;
  rollout_opts_default(&o);
  o.seed = 1234, o.max_new_tokens = 12, o.eos_id = 5, o.top_p = 0.95, o.temperature = 1.3;
  rollout_batch b[4];
  int slots[3] = {1, 7, 64};
  for (int r = 0; r < 3; r++) {
    o.max_slots = slots[r];
    int rc = rollout_generate_ids(eng, ptr, n, 16, 4, 3, &o, &b[r], &e);
    CHECK_MSG(!rc, "generate (%d slots): %s", slots[r], e.msg);
    if (rc) goto out;
  }
  int nt = omp_get_max_threads();
  omp_set_num_threads(nt > 1 ? 1 : 2);
  int rc = rollout_generate_ids(eng, ptr, n, 16, 4, 3, &o, &b[3], &e);
  omp_set_num_threads(nt);
  CHECK_MSG(!rc, "generate: %s", e.msg);
  CHECK_EQ_I64(b[0].n, 64);
  CHECK_EQ_I64(b[0].route_layers, moe ? 2 : 0);
  ro_same(&b[0], &b[1], "1 vs 7 slots");
  ro_same(&b[0], &b[2], "1 vs 64 slots");
  if (!rc) ro_same(&b[0], &b[3], "other thread count");
  /* the batch is meaningful: both finish reasons, varied lengths, finite log-probs ≤ 0 */
  int n_eos = 0, n_len = 0;
  for (int64_t i = 0; i < b[0].n; i++) {
    const rollout_sample *s = &b[0].s[i];
    CHECK_EQ_I64(s->prompt_index, i / 4);
    CHECK_EQ_I64(s->sample_index, i % 4);
    n_eos += s->finish == FINISH_EOS, n_len += s->finish == FINISH_LENGTH;
    if (s->finish == FINISH_EOS) CHECK_EQ_I64(s->completion_ids[s->n_completion - 1], 5);
    if (s->finish == FINISH_LENGTH) CHECK_EQ_I64(s->n_completion, 12);
    for (int64_t j = 0; j < s->n_completion; j++) CHECK(s->logp_rollout[j] <= 0 && isfinite(s->logp_rollout[j]));
  }
  CHECK_MSG(n_eos >= 4 && n_len >= 4, "finish reasons: %d eos, %d length", n_eos, n_len);
  /* siblings differ (the sample index is in the key) */
  CHECK(memcmp(b[0].s[0].completion_ids, b[0].s[1].completion_ids, 4 * 3) != 0);
  /* another iteration gives other samples */
  rollout_batch c;
  REQUIRE(!rollout_generate_ids(eng, ptr, n, 16, 4, 4, &o, &c, &e));
  int diff = 0;
  for (int64_t i = 0; i < c.n; i++) diff += c.s[i].completion_ids[0] != b[0].s[i].completion_ids[0];
  CHECK(diff > 16);
  rollout_batch_free(&c);
  rollout_batch_free(&b[3]);
out:
  for (int r = 0; r < 3; r++) rollout_batch_free(&b[r]);
  rollout_engine_free(eng);
  model_free(m);
}

TEST(rollout_batch_size_invariance_dense) { ro_invariance(0); }
TEST(rollout_batch_size_invariance_moe) { ro_invariance(1); }

/* Greedy rollout = argmax of model_forward over the growing sequence, token
 * for token: exactly with the default BF16 cache (raw keys), an FP32 cache,
 * and in the F32 mode. With the post-RoPE BF16 cache the keys carry one BF16
 * rounding the full forward does not have, so a full-forward near-tie (logit
 * gap ≤ RO_GREEDY_GAP, two BF16 ulps of a logit in [4, 8)) may be decided the
 * other way; anything wider fails. */
#define RO_GREEDY_GAP 0.0625
static void ro_greedy_argmax(int moe, int f32, int kv_f32, int post_rope) {
  model *m = ro_model(moe, 11, 1);
  REQUIRE(m);
  int32_t ids[16][9];
  int64_t n[16];
  const int32_t *ptr[16];
  ro_prompts(ids, n, ptr);
  rl_err e = {0};
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  rollout_engine_opts eo = {f32, 0, kv_f32, post_rope};
  rollout_engine *eng = NULL;
  REQUIRE(!rollout_engine_new(m, &pol, NULL, &eo, &eng, &e));
  rollout_opts o;
  rollout_opts_default(&o);
  o.greedy = 1, o.max_new_tokens = 10, o.eos_id = -1, o.max_slots = 5;
  rollout_batch b;
  int rc = rollout_generate_ids(eng, ptr, n, 6, 1, 1, &o, &b, &e);
  CHECK_MSG(!rc, "generate: %s", e.msg);
  if (!rc) {
    if (!f32) REQUIRE(!model_quantize(m, &pol, &e));
    int bad = 0, steps = 0, near = 0;
    double max_gap = 0;
    for (int64_t i = 0; i < b.n && !bad; i++) {
      const rollout_sample *s = &b.s[i];
      int32_t seq[32];
      memcpy(seq, s->prompt_ids, (size_t)s->n_prompt * 4);
      memcpy(seq + s->n_prompt, s->completion_ids, (size_t)s->n_completion * 4);
      for (int64_t j = 0; j < s->n_completion && !bad; j++) {
        int T = (int)(s->n_prompt + j);
        float *lg = ro_full_logits(m, seq, T, f32, &e);
        REQUIRE(lg);
        int32_t am = 0;
        for (int v = 1; v < m->V; v++)
          if (lg[(size_t)(T - 1) * m->V + v] > lg[(size_t)(T - 1) * m->V + am]) am = v;
        /* exact with an FP32 cache; with the BF16 cache a near-tie of the full
         * forward's logits (gap ≤ RO_GREEDY_GAP) may go the other way */
        const float *row = lg + (size_t)(T - 1) * m->V;
        double gap = (double)row[am] - row[s->completion_ids[j]];
        steps++;
        if (am != s->completion_ids[j]) near++, max_gap = gap > max_gap ? gap : max_gap;
        if (am != s->completion_ids[j] && (!post_rope || gap > RO_GREEDY_GAP)) {
          harness_fail(__FILE__, __LINE__,
                       "prompt %lld token %lld: rollout %d, full-forward argmax %d (logit gap %.3g)",
                       (long long)i, (long long)j, s->completion_ids[j], am, gap);
          bad = 1;
        }
        free(lg);
      }
    }
    if (post_rope)
      printf("    greedy (%s, BF16 post-RoPE KV): %d steps, %d near-ties taken the other way, largest gap %.3g\n",
             moe ? "moe" : "dense", steps, near, max_gap);
  }
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  model_free(m);
}

TEST(rollout_greedy_argmax_dense_bf16kv) { ro_greedy_argmax(0, 0, 0, 0); }
TEST(rollout_greedy_argmax_moe_bf16kv) { ro_greedy_argmax(1, 0, 0, 0); }
TEST(rollout_greedy_argmax_dense_f32kv) { ro_greedy_argmax(0, 0, 1, 0); }
TEST(rollout_greedy_argmax_dense_post_rope_kv) { ro_greedy_argmax(0, 0, 0, 1); }
TEST(rollout_greedy_argmax_moe_post_rope_kv) { ro_greedy_argmax(1, 0, 0, 1); }
TEST(rollout_greedy_argmax_dense_f32mode) { ro_greedy_argmax(0, 1, 1, 0); }
TEST(rollout_greedy_argmax_moe_f32mode) { ro_greedy_argmax(1, 1, 1, 0); }

/* MoE: the routing recorded for every token (prompt and completion, last
 * token included) equals what a full forward of the sequence routes — exactly
 * with the default BF16 cache and an FP32 one; with the post-RoPE BF16 cache
 * it may differ only at router near-ties (the full forward's probabilities of the swapped ids within
 * RO_ROUTE_GAP; order swaps included), for at most 2% of the ids. */
#define RO_ROUTE_GAP 0.01
static void ro_routing(int kv_f32, int post_rope) {
  model *m = ro_model(1, 5, 0);
  REQUIRE(m);
  int32_t ids[16][9];
  int64_t n[16];
  const int32_t *ptr[16];
  ro_prompts(ids, n, ptr);
  rl_err e = {0};
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  rollout_engine_opts eo = {0, 0, kv_f32, post_rope};
  rollout_engine *eng = NULL;
  REQUIRE(!rollout_engine_new(m, &pol, NULL, &eo, &eng, &e));
  rollout_opts o;
  rollout_opts_default(&o);
  o.seed = 9, o.max_new_tokens = 9, o.eos_id = 7, o.max_slots = 6;
  rollout_batch b;
  REQUIRE(!rollout_generate_ids(eng, ptr, n, 8, 3, 2, &o, &b, &e));
  CHECK_EQ_I64(b.route_layers, 2);
  CHECK_EQ_I64(b.route_topk, 2);
  model_acts *a = model_acts_new();
  int mism = 0, total = 0;
  double near_gap = 0;
  for (int64_t i = 0; i < b.n; i++) {
    const rollout_sample *s = &b.s[i];
    int T = (int)(s->n_prompt + s->n_completion);
    int32_t seq[32], off[2] = {0, T}, got[64];
    memcpy(seq, s->prompt_ids, (size_t)s->n_prompt * 4);
    memcpy(seq + s->n_prompt, s->completion_ids, (size_t)s->n_completion * 4);
    model_batch mb = {T, seq, {1, off}};
    REQUIRE(!model_forward(m, &mb, NULL, a, &e));
    CHECK_EQ_I64(rollout_routed_layer(&b, s, 1, got), 0);
    const int32_t *want = model_routed_ids(a, 1);
    for (int t = 0; t < T; t++) {
      int d = (got[2 * t] != want[2 * t]) + (got[2 * t + 1] != want[2 * t + 1]);
      mism += d, total += 2;
      if (!d) continue;
      /* a near-tie of the full forward's router: the probabilities of the ids
       * that differ are within RO_ROUTE_GAP of each other */
      const float *pr = a->la[1].probs + (size_t)t * 4;
      double gap = 0;
      for (int j = 0; j < 2; j++) {
        double g = fabs((double)pr[got[2 * t + j]] - pr[want[2 * t + j]]);
        gap = g > gap ? g : gap;
      }
      near_gap = gap > near_gap ? gap : near_gap;
      CHECK_MSG(post_rope && gap <= RO_ROUTE_GAP,
                "sample %lld token %d: routed (%d,%d), full forward (%d,%d), probability gap %.3g",
                (long long)i, t, got[2 * t], got[2 * t + 1], want[2 * t], want[2 * t + 1], gap);
    }
    CHECK_EQ_I64(rollout_routed_layer(&b, s, 0, got), 0);
    for (int t = 0; t < T * 2; t++) CHECK_EQ_I64(got[t], -1);
  }
  if (post_rope)
    printf("    routing (BF16 post-RoPE KV): %d of %d ids differ from the full forward, at near-ties up to %.3g\n",
           mism, total, near_gap);
  CHECK_MSG(mism * 50 <= total, "%d of %d routed ids differ from the full forward", mism, total);
  CHECK_EQ_I64(rollout_routed_layer(&b, &b.s[0], 2, (int32_t[64]){0}), -1);
  model_acts_free(a);
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  model_free(m);
}

TEST(rollout_moe_routing_capture_bf16kv) { ro_routing(0, 0); }
TEST(rollout_moe_routing_capture_f32kv) { ro_routing(1, 0); }
TEST(rollout_moe_routing_capture_post_rope_kv) { ro_routing(0, 1); }
