/* test_rollout_split.c — one iteration's batch split over several engines
 * (stages/rollout.h: rollout_split_generate, rollout_batch_concat,
 * opts.prompt_base): each part on a CPU engine of its own, run at once on
 * threads of their own, gives the batch one engine gives, bit for bit (ids,
 * log-probs, routing, texts, prompt fields); errors name the part; bad parts
 * are refused by the concatenation. Micro models of test_rollout_util.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "model/model.h"
#include "stages/rollout.h"
#include "stages/tokenizer.h"
#include "test_rollout_util.h"

#define RS_P 16 /* prompts */
#define RS_G 3  /* samples each */

/* The context of the parts: an engine per part over one model, and the
 * prompts' ids (a prompt_item's index is its row here). */
typedef struct rs_ctx {
  rollout_engine *eng[ROLLOUT_SPLIT_MAX];
  const int32_t *const *ids;
  const int64_t *n_ids;
  int text;     /* 1: text prompts through rollout_generate */
  int fail_at;  /* part that fails (−1: none) */
  int calls[ROLLOUT_SPLIT_MAX];
  int64_t base_seen[ROLLOUT_SPLIT_MAX];
  int worker[ROLLOUT_SPLIT_MAX]; /* rollout_split_on_worker() as part k saw it */
  int wait_cancel;               /* part that waits (≤ 10 s) for its cancel flag first (−1: none) */
  int saw_cancel;                /* … and saw it raised */
  int rc_seen[ROLLOUT_SPLIT_MAX];
  char msg_seen[ROLLOUT_SPLIT_MAX][256]; /* what part k returned */
} rs_ctx;

static int rs_part(void *ctx, int part, const prompt_item *prompts, int64_t n_prompts, int G, int64_t iteration,
                   const rollout_opts *o, rollout_batch *out, rl_err *e) {
  rs_ctx *c = ctx;
  c->calls[part]++, c->base_seen[part] = o->prompt_base, c->worker[part] = rollout_split_on_worker();
  if (part == c->fail_at) return rl_errf(e, RL_EXIT_FAIL, "injected failure");
  if (part == c->wait_cancel) {
    for (int i = 0; i < 1000 && !rollout_cancelled(o); i++) nanosleep(&(struct timespec){0, 10000000}, NULL);
    c->saw_cancel = rollout_cancelled(o);
  }
  int rc;
  if (c->text) rc = rollout_generate(c->eng[part], prompts, n_prompts, G, iteration, o, out, e);
  else {
    const int32_t **ids = rl_xcalloc((size_t)n_prompts + 1, sizeof *ids);
    int64_t *n = rl_xcalloc((size_t)n_prompts + 1, sizeof *n);
    for (int64_t p = 0; p < n_prompts; p++) ids[p] = c->ids[prompts[p].index], n[p] = c->n_ids[prompts[p].index];
    rc = rollout_generate_ids(c->eng[part], ids, n, n_prompts, G, iteration, o, out, e);
    free(ids), free(n);
  }
  c->rc_seen[part] = rc;
  snprintf(c->msg_seen[part], sizeof c->msg_seen[part], "%.200s", rc ? e->msg : "");
  return rc;
}

/* 1 when the two batches hold the same samples bit for bit (says where not). */
static int rs_same(const rollout_batch *a, const rollout_batch *b, const char *what) {
  if (a->n != b->n || a->n_prompts != b->n_prompts || a->group != b->group || a->iteration != b->iteration ||
      a->route_layers != b->route_layers || a->route_topk != b->route_topk || a->n_generated != b->n_generated) {
    harness_fail(__FILE__, __LINE__, "%s: batch shapes differ (%lld vs %lld samples)", what, (long long)a->n,
                 (long long)b->n);
    return 0;
  }
  for (int64_t i = 0; i < a->n; i++) {
    const rollout_sample *x = &a->s[i], *y = &b->s[i];
    int64_t T = x->n_prompt + x->n_completion;
    if (x->prompt_index != y->prompt_index || x->sample_index != y->sample_index || x->n_prompt != y->n_prompt ||
        x->n_completion != y->n_completion || x->finish != y->finish || x->stop_index != y->stop_index ||
        x->data_index != y->data_index || x->data_epoch != y->data_epoch ||
        memcmp(x->prompt_ids, y->prompt_ids, (size_t)x->n_prompt * 4) ||
        memcmp(x->completion_ids, y->completion_ids, (size_t)x->n_completion * 4) ||
        memcmp(x->logp_rollout, y->logp_rollout, (size_t)x->n_completion * 4) ||
        strcmp(x->completion_text, y->completion_text) || strcmp(x->prompt_text, y->prompt_text) ||
        strcmp(x->extra_json, y->extra_json) ||
        (a->route_layers && memcmp(x->routed, y->routed, (size_t)(T * a->route_layers * a->route_topk) * 4))) {
      harness_fail(__FILE__, __LINE__, "%s: sample %lld differs", what, (long long)i);
      return 0;
    }
  }
  return 1;
}

/* Split into 1, 2, 3, 5 and 20 parts (20 > 16 prompts: four empty parts that
 * call nothing) == one engine over the whole batch. */
static void rs_split(int moe, int text) {
  tokenizer *tok = NULL;
  rl_err e = {0};
  if (text) REQUIRE(!tokenizer_chars_new("0123456789+= ", &tok, &e));
  model *m = text ? ro_model_v(moe, 5, tokenizer_vocab_size(tok)) : ro_model(moe, 5, 0);
  REQUIRE(m);
  int32_t ids[RS_P][9];
  int64_t n_ids[RS_P];
  const int32_t *ptr[RS_P];
  prompt_item it[RS_P];
  char txt[RS_P][16], extra[RS_P][24];
  uint32_t seed = 7;
  for (int p = 0; p < RS_P; p++) {
    n_ids[p] = 1 + p % 9;
    for (int j = 0; j < n_ids[p]; j++) ids[p][j] = 3 + (int32_t)(ro_rand(&seed) % 37);
    ptr[p] = ids[p];
    snprintf(txt[p], sizeof txt[p], "%d+%d=", p * 7 % 50, p * 3 % 20);
    snprintf(extra[p], sizeof extra[p], "{\"p\":%d}", p);
    it[p] = (prompt_item){.text = txt[p], .extra_json = extra[p], .index = text ? 100 + p : p, .epoch = 3};
  }
  rs_ctx c;
  memset(&c, 0, sizeof c);
  c.ids = ptr, c.n_ids = n_ids, c.text = text, c.fail_at = -1, c.wait_cancel = -1;
  for (int k = 0; k < 20; k++) REQUIRE(!rollout_engine_new(m, NULL, tok, NULL, &c.eng[k], &e));
  rollout_opts o;
  rollout_opts_default(&o);
  o.seed = 4321, o.max_new_tokens = 9, o.eos_id = text ? -2 : 5, o.temperature = 1.2, o.top_p = 0.9, o.max_slots = 5;
  rollout_batch whole, part;
  int rc = rs_part(&c, 0, it, RS_P, RS_G, 2, &o, &whole, &e);
  CHECK_MSG(!rc, "whole batch: %s", e.msg);
  REQUIRE(!rc);
  CHECK_EQ_I64(whole.n, RS_P * RS_G);
  int n_eos = 0, n_len = 0;
  for (int64_t i = 0; i < whole.n; i++)
    n_eos += whole.s[i].finish == FINISH_EOS, n_len += whole.s[i].finish == FINISH_LENGTH;
  CHECK_MSG(n_eos >= 2 && n_len >= 2, "a varied batch: %d EOS, %d length", n_eos, n_len);
  int parts[5] = {1, 2, 3, 5, 20};
  for (int r = 0; r < 5; r++) {
    memset(c.calls, 0, sizeof c.calls);
    rc = rollout_split_generate(parts[r], rs_part, &c, it, RS_P, RS_G, 2, &o, &part, &e);
    CHECK_MSG(!rc, "%d parts: %s", parts[r], e.msg);
    if (rc) continue;
    char what[32];
    snprintf(what, sizeof what, "%d parts", parts[r]);
    rs_same(&whole, &part, what);
    for (int k = 0; k < parts[r]; k++) {
      int64_t lo, hi;
      rollout_split_range(RS_P, parts[r], k, &lo, &hi);
      CHECK_EQ_I64(c.calls[k], hi > lo ? 1 : 0);
      if (hi > lo) CHECK_EQ_I64(c.base_seen[k], lo);
      if (hi > lo) CHECK_EQ_I64(c.worker[k], k > 0); /* part 0 on the calling thread, the others each on its own */
    }
    rollout_batch_free(&part);
  }
  /* a part alone: prompts 6..10 with prompt_base 6 are samples 18..32 of the whole */
  o.prompt_base = 6;
  rc = rs_part(&c, 1, it + 6, 5, RS_G, 2, &o, &part, &e);
  CHECK_EQ_I64(c.worker[1], 0); /* called directly: the caller's thread */
  CHECK_MSG(!rc, "part alone: %s", e.msg);
  if (!rc) {
    rollout_batch tail = whole;
    tail.s += 6 * RS_G, tail.n = 5 * RS_G, tail.n_prompts = 5, tail.n_generated = part.n_generated;
    rs_same(&tail, &part, "prompt_base 6");
    CHECK_EQ_I64(part.s[0].prompt_index, 6);
    rollout_batch_free(&part);
  }
  o.prompt_base = 0;
  /* another base is another batch: the draws are keyed by the global prompt index */
  o.prompt_base = 1;
  REQUIRE(!rs_part(&c, 0, it, 1, RS_G, 2, &o, &part, &e));
  CHECK(part.s[0].n_completion != whole.s[0].n_completion ||
        memcmp(part.s[0].completion_ids, whole.s[0].completion_ids, (size_t)whole.s[0].n_completion * 4));
  rollout_batch_free(&part);
  o.prompt_base = 0;
  /* a failing part: its error, named, and nothing returned */
  c.fail_at = 2;
  rc = rollout_split_generate(4, rs_part, &c, it, RS_P, RS_G, 2, &o, &part, &e);
  CHECK_EQ_I64(rc, RL_EXIT_FAIL);
  CHECK_MSG(strstr(e.msg, "rollout part 2 of 4: ") && strstr(e.msg, "injected failure"), "message: %s", e.msg);
  CHECK_EQ_I64(part.n, 0);
  CHECK(part.s == NULL);
  /* the first failure cancels the others: part 0 (the caller's thread) waits for its flag, then
   * its engine stops at its first step; the split's error is part 1's, not the cancellation */
  c.fail_at = 1, c.wait_cancel = 0;
  rc = rollout_split_generate(4, rs_part, &c, it, RS_P, RS_G, 2, &o, &part, &e);
  CHECK_EQ_I64(rc, RL_EXIT_FAIL);
  CHECK_MSG(strstr(e.msg, "rollout part 1 of 4: injected failure"), "message: %s", e.msg);
  CHECK_EQ_I64(c.saw_cancel, 1);
  CHECK_EQ_I64(c.rc_seen[0], RL_EXIT_FAIL);
  CHECK_MSG(strstr(c.msg_seen[0], "rollout cancelled"), "part 0 returned: %s", c.msg_seen[0]);
  CHECK_EQ_I64(part.n, 0);
  c.fail_at = -1, c.wait_cancel = -1;
  /* the engine alone: a raised flag stops it before its first step, a lowered one changes nothing */
  int flag = 1;
  o.cancel = &flag;
  rc = rs_part(&c, 0, it, RS_P, RS_G, 2, &o, &part, &e);
  CHECK_EQ_I64(rc, RL_EXIT_FAIL);
  CHECK_MSG(strstr(e.msg, "rollout cancelled"), "message: %s", e.msg);
  CHECK_EQ_I64(part.n, 0);
  flag = 0;
  rc = rs_part(&c, 0, it, RS_P, RS_G, 2, &o, &part, &e);
  CHECK_MSG(!rc, "flag down: %s", e.msg);
  if (!rc) rs_same(&whole, &part, "cancel flag down");
  rollout_batch_free(&part);
  o.cancel = NULL;
  /* bad part counts */
  CHECK_EQ_I64(rollout_split_generate(0, rs_part, &c, it, RS_P, RS_G, 2, &o, &part, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(rollout_split_generate(ROLLOUT_SPLIT_MAX + 1, rs_part, &c, it, RS_P, RS_G, 2, &o, &part, &e),
               RL_EXIT_USAGE);
  o.prompt_base = -1;
  CHECK_EQ_I64(rs_part(&c, 0, it, 2, RS_G, 2, &o, &part, &e), RL_EXIT_USAGE);
  CHECK_MSG(strstr(e.msg, "prompt_base"), "message: %s", e.msg);
  rollout_batch_free(&whole);
  for (int k = 0; k < 20; k++) rollout_engine_free(c.eng[k]);
  model_free(m);
  tokenizer_free(tok);
}

TEST(rollout_split_dense_ids) { rs_split(0, 0); }
TEST(rollout_split_moe_ids) { rs_split(1, 0); }
TEST(rollout_split_dense_text) { rs_split(0, 1); }

/* rollout_batch_concat refuses parts that are not consecutive prompt runs of
 * one iteration and group, and leaves them as they were. */
TEST(rollout_batch_concat_refuses) {
  model *m = ro_model(0, 9, 0);
  REQUIRE(m);
  rl_err e = {0};
  rollout_engine *eng = NULL;
  REQUIRE(!rollout_engine_new(m, NULL, NULL, NULL, &eng, &e));
  int32_t a[3] = {3, 4, 5};
  const int32_t *ids[2] = {a, a};
  int64_t n[2] = {3, 2};
  rollout_opts o;
  rollout_opts_default(&o);
  o.max_new_tokens = 4, o.eos_id = -1;
  rollout_batch b[2], out;
  REQUIRE(!rollout_generate_ids(eng, ids, n, 2, 2, 1, &o, &b[0], &e));
  o.prompt_base = 3; /* prompts 3, 4: a gap after 0, 1 */
  REQUIRE(!rollout_generate_ids(eng, ids, n, 2, 2, 1, &o, &b[1], &e));
  CHECK_EQ_I64(rollout_batch_concat(b, 2, &out, &e), RL_EXIT_FAIL);
  CHECK_MSG(strstr(e.msg, "consecutive"), "message: %s", e.msg);
  CHECK_EQ_I64(b[1].n, 4);
  CHECK(out.s == NULL);
  rollout_batch_free(&b[1]);
  o.prompt_base = 2; /* consecutive, but another iteration */
  REQUIRE(!rollout_generate_ids(eng, ids, n, 2, 2, 5, &o, &b[1], &e));
  CHECK_EQ_I64(rollout_batch_concat(b, 2, &out, &e), RL_EXIT_FAIL);
  CHECK_MSG(strstr(e.msg, "does not fit"), "message: %s", e.msg);
  rollout_batch_free(&b[1]);
  REQUIRE(!rollout_generate_ids(eng, ids, n, 2, 2, 1, &o, &b[1], &e));
  int64_t g0 = b[0].n_generated + b[1].n_generated;
  REQUIRE(!rollout_batch_concat(b, 2, &out, &e));
  CHECK_EQ_I64(out.n, 8);
  CHECK_EQ_I64(out.n_prompts, 4);
  CHECK_EQ_I64(out.n_generated, g0);
  CHECK_EQ_I64(out.s[7].prompt_index, 3);
  CHECK_EQ_I64(out.s[7].sample_index, 1);
  CHECK_EQ_I64(b[0].n, 0);
  CHECK(b[0].s == NULL && b[1].s == NULL);
  rollout_batch_free(&out);
  rollout_engine_free(eng);
  model_free(m);
}
