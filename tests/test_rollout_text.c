/* test_rollout_text.c — the rollout engine with text prompts and the
 * character tokenizer: BOS, prompt fields, stop rules (EOS, stop strings
 * across tokens, exclude_stop, max_new_tokens), and the errors a user meets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"
#include "stages/rollout.h"
#include "test_rollout_util.h"

#define RT_CHARS "0123456789+= " /* ids 3.. ; 0 <pad>, 1 <bos>, 2 <eos> */

/* 16 arithmetic prompts "a+b=" with an extra field each. */
static void rt_items(prompt_item it[16], char text[16][16], char extra[16][32]) {
  for (int p = 0; p < 16; p++) {
    snprintf(text[p], sizeof text[p], "%d+%d=", p * 7 % 50, p * 3 % 20);
    snprintf(extra[p], sizeof extra[p], "{\"answer\":\"%d\"}", p * 7 % 50 + p * 3 % 20);
    it[p] = (prompt_item){.text = text[p], .extra_json = extra[p], .index = 100 + p, .epoch = 2};
  }
}

/* The non-special text of ids[0..n). */
static void rt_decode(const tokenizer *t, const int32_t *ids, int64_t n, char *out, size_t cap) {
  rl_err e = {0};
  char *s = tokenizer_decode(t, ids, n, TOKENIZER_SKIP_SPECIAL, &e);
  snprintf(out, cap, "%s", s ? s : "");
  free(s);
}

/* Every sample obeys the stop rules, and each rule fires at least once. */
static void rt_stop_rules(int exclude) {
  tokenizer *tok = NULL;
  rl_err e = {0};
  REQUIRE(!tokenizer_chars_new(RT_CHARS, &tok, &e));
  model *m = ro_model_v(0, 21, tokenizer_vocab_size(tok));
  REQUIRE(m);
  rollout_engine *eng = NULL;
  REQUIRE(!rollout_engine_new(m, NULL, tok, NULL, &eng, &e));
  prompt_item it[16];
  char text[16][16], extra[16][32];
  rt_items(it, text, extra);
  char *stops[2] = {"5", "+="};
  rollout_opts o;
  rollout_opts_default(&o);
  o.seed = 3, o.max_new_tokens = 10, o.stop = stops, o.n_stop = 2, o.exclude_stop = exclude;
  o.max_slots = 9;
  rollout_batch b;
  REQUIRE(!rollout_generate(eng, it, 16, 4, 1, &o, &b, &e));
  int seen[4] = {0}, multi = 0;
  for (int64_t i = 0; i < b.n; i++) {
    const rollout_sample *s = &b.s[i];
    char full[64], prev[64];
    rt_decode(tok, s->completion_ids, s->n_completion, full, sizeof full);
    rt_decode(tok, s->completion_ids, s->n_completion - 1, prev, sizeof prev);
    int has_eos = 0;
    for (int64_t j = 0; j < s->n_completion; j++) has_eos |= s->completion_ids[j] == 2;
    seen[s->finish]++;
    CHECK(s->n_completion >= 1 && s->n_completion <= 10);
    if (s->finish == FINISH_STOP) {
      const char *st = stops[s->stop_index];
      char *at = strstr(full, st);
      REQUIRE(at);
      /* the earliest end of any stop string, completed by the last token */
      const char *other = stops[1 - s->stop_index];
      char *o2 = strstr(full, other);
      CHECK(!o2 || o2 + strlen(other) >= at + strlen(st));
      CHECK(!strstr(prev, "5") && !strstr(prev, "+="));
      CHECK(!has_eos);
      size_t want = (size_t)(at - full) + (exclude ? 0 : strlen(st));
      CHECK_EQ_I64(strlen(s->completion_text), want);
      CHECK(!strncmp(s->completion_text, full, want));
      multi += s->stop_index == 1;
    } else {
      CHECK_EQ_I64(s->stop_index, -1);
      CHECK(!strstr(full, "5") && !strstr(full, "+="));
      CHECK_STREQ(s->completion_text, full);
      if (s->finish == FINISH_EOS) CHECK_EQ_I64(s->completion_ids[s->n_completion - 1], 2);
      if (s->finish == FINISH_LENGTH) CHECK(s->n_completion == 10 && !has_eos);
    }
    /* prompt side: BOS + the characters, fields carried */
    const prompt_item *p = &it[s->prompt_index];
    CHECK_EQ_I64(s->n_prompt, (int64_t)strlen(p->text) + 1);
    CHECK_EQ_I64(s->prompt_ids[0], 1);
    CHECK_EQ_I64(s->prompt_ids[1], 3 + (strchr(RT_CHARS, p->text[0]) - RT_CHARS));
    CHECK_STREQ(s->prompt_text, p->text);
    CHECK_STREQ(s->extra_json, p->extra_json);
    CHECK_EQ_I64(s->data_index, 100 + s->prompt_index);
    CHECK_EQ_I64(s->data_epoch, 2);
    CHECK(s->reward == 0 && s->routed == NULL);
  }
  CHECK_MSG(seen[FINISH_EOS] && seen[FINISH_STOP] && seen[FINISH_LENGTH] && multi,
            "finish reasons: eos %d, stop %d (\"+=\" %d), length %d", seen[FINISH_EOS], seen[FINISH_STOP],
            multi, seen[FINISH_LENGTH]);
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  model_free(m);
  tokenizer_free(tok);
}

TEST(rollout_stop_rules) { rt_stop_rules(0); }
TEST(rollout_stop_rules_exclude_stop) { rt_stop_rules(1); }

/* ignore_eos and eos_id: EOS stops only when asked. */
TEST(rollout_ignore_eos) {
  tokenizer *tok = NULL;
  rl_err e = {0};
  REQUIRE(!tokenizer_chars_new(RT_CHARS, &tok, &e));
  model *m = ro_model_v(0, 21, 16);
  REQUIRE(m);
  rollout_engine *eng = NULL;
  REQUIRE(!rollout_engine_new(m, NULL, tok, NULL, &eng, &e));
  prompt_item it[16];
  char text[16][16], extra[16][32];
  rt_items(it, text, extra);
  rollout_opts o;
  rollout_opts_default(&o);
  o.seed = 3, o.max_new_tokens = 10, o.ignore_eos = 1;
  rollout_batch b;
  REQUIRE(!rollout_generate(eng, it, 16, 4, 1, &o, &b, &e));
  int eos_inside = 0;
  for (int64_t i = 0; i < b.n; i++) {
    CHECK_EQ_I64(b.s[i].finish, FINISH_LENGTH);
    CHECK_EQ_I64(b.s[i].n_completion, 10);
    for (int j = 0; j < 9; j++) eos_inside += b.s[i].completion_ids[j] == 2;
  }
  CHECK(eos_inside > 0); /* the same seed without ignore_eos stopped at these */
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  model_free(m);
  tokenizer_free(tok);
}

/* The errors a user meets name the prompt and what to do. */
TEST(rollout_errors) {
  tokenizer *tok = NULL;
  rl_err e = {0};
  REQUIRE(!tokenizer_chars_new(RT_CHARS, &tok, &e));
  model *m = ro_model_v(0, 21, 16);
  REQUIRE(m);
  rollout_engine *eng = NULL;
  REQUIRE(!rollout_engine_new(m, NULL, tok, NULL, &eng, &e));
  prompt_item it[2] = {{.text = "1+2=", .extra_json = "{}", .index = 0}, {.text = "1*2=", .extra_json = "{}", .index = 1}};
  rollout_opts o;
  rollout_opts_default(&o);
  o.max_new_tokens = 4;
  rollout_batch b;
  CHECK_EQ_I64(rollout_generate(eng, it, 2, 2, 1, &o, &b, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "prompt 1");
  CHECK_EQ_I64(b.n, 0);
  o.max_prompt_tokens = 3;
  CHECK_EQ_I64(rollout_generate(eng, it, 1, 2, 1, &o, &b, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "max_prompt_tokens 3");
  o.max_prompt_tokens = 0, o.max_new_tokens = 60; /* 5 + 60 > 64 positions */
  CHECK_EQ_I64(rollout_generate(eng, it, 1, 2, 1, &o, &b, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "max_position_embeddings (64)");
  o.max_new_tokens = 0;
  CHECK_EQ_I64(rollout_generate(eng, it, 1, 2, 1, &o, &b, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "max_new_tokens");
  o.max_new_tokens = 4, o.top_p = 1.5;
  CHECK_EQ_I64(rollout_generate(eng, it, 1, 2, 1, &o, &b, &e), RL_EXIT_USAGE);
  o.top_p = 1.0;
  CHECK_EQ_I64(rollout_generate(eng, it, 1, 0, 1, &o, &b, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "samples_per_prompt");
  /* stale weights are re-quantized when the engine has a policy, refused without */
  m->quantized = 0;
  CHECK_EQ_I64(rollout_generate(eng, it, 1, 2, 1, &o, &b, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "stale");
  rollout_engine_free(eng);
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  REQUIRE(!rollout_engine_new(m, &pol, tok, NULL, &eng, &e));
  CHECK_EQ_I64(rollout_generate(eng, it, 1, 2, 1, &o, &b, &e), 0);
  CHECK_EQ_I64(b.n, 2);
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  /* a tokenizer larger than the model's vocabulary */
  model *small = ro_model_v(0, 1, 12);
  REQUIRE(small);
  CHECK_EQ_I64(rollout_engine_new(small, NULL, tok, NULL, &eng, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "vocabulary");
  model_free(small);
  model_free(m);
  tokenizer_free(tok);
}

/* A model vocabulary padded past the tokenizer's: ids the tokenizer lacks are
 * kept (with their log-probs) and add no text; the run does not fail. */
TEST(rollout_padded_vocabulary) {
  tokenizer *tok = NULL;
  rl_err e = {0};
  REQUIRE(!tokenizer_chars_new(RT_CHARS, &tok, &e));
  model *m = ro_model_v(0, 8, 40); /* 16 tokenizer ids, 24 padding ids */
  REQUIRE(m);
  rollout_engine *eng = NULL;
  REQUIRE(!rollout_engine_new(m, NULL, tok, NULL, &eng, &e));
  prompt_item it[16];
  char text[16][16], extra[16][32];
  rt_items(it, text, extra);
  rollout_opts o;
  rollout_opts_default(&o);
  o.seed = 1, o.max_new_tokens = 8, o.ignore_eos = 1;
  rollout_batch b;
  int rc = rollout_generate(eng, it, 16, 2, 1, &o, &b, &e);
  CHECK_MSG(!rc, "%s", e.msg);
  int padded = 0;
  for (int64_t i = 0; !rc && i < b.n; i++) {
    const rollout_sample *s = &b.s[i];
    CHECK_EQ_I64(s->n_completion, 8);
    CHECK_EQ_I64(s->finish, FINISH_LENGTH);
    size_t chars = 0;
    for (int j = 0; j < 8; j++) {
      padded += s->completion_ids[j] >= 16;
      chars += s->completion_ids[j] >= 3 && s->completion_ids[j] < 16;
    }
    CHECK_EQ_I64(strlen(s->completion_text), chars);
  }
  CHECK(padded > 0);
  if (!rc) rollout_batch_free(&b);
  rollout_engine_free(eng);
  model_free(m);
  tokenizer_free(tok);
}
