/* test_tokenizer.c — the character tokenizer (ids, round trips, errors), the
 * recipe hook, and the per-sequence stop conditions (stages/stop.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "runner/inputs.h"
#include "stages/stop.h"
#include "stages/tokenizer.h"

TEST(tokenizer_chars_ids_and_round_trip) {
  tokenizer *t;
  rl_err e;
  REQUIRE(tokenizer_chars_new("0123456789+= ", &t, &e) == 0);
  CHECK_EQ_I64(tokenizer_vocab_size(t), 16);
  CHECK_EQ_I64(t->pad, 0);
  CHECK_EQ_I64(t->bos, 1);
  CHECK_EQ_I64(t->eos, 2);
  int32_t *ids;
  int64_t n;
  REQUIRE(tokenizer_encode(t, "12+30= 42", 9, &ids, &n, &e) == 0);
  const int32_t want[9] = {4, 5, 13, 6, 3, 14, 15, 7, 5};
  CHECK_EQ_I64(n, 9);
  for (int i = 0; i < 9 && i < n; i++) CHECK_EQ_I64(ids[i], want[i]);
  char *s = tokenizer_decode(t, ids, n, 0, &e);
  CHECK_STREQ(s, "12+30= 42");
  free(s), free(ids);
  /* specials: named, or skipped */
  const int32_t sp[5] = {1, 4, 2, 0, 5};
  s = tokenizer_decode(t, sp, 5, 0, &e);
  CHECK_STREQ(s, "<bos>1<eos><pad>2");
  free(s);
  s = tokenizer_decode(t, sp, 5, TOKENIZER_SKIP_SPECIAL, &e);
  CHECK_STREQ(s, "12");
  free(s);
  /* empty text */
  REQUIRE(tokenizer_encode(t, "", 0, &ids, &n, &e) == 0);
  CHECK_EQ_I64(n, 0);
  free(ids);
  tokenizer_free(t);
}

TEST(tokenizer_chars_utf8_round_trip) {
  tokenizer *t;
  rl_err e;
  REQUIRE(tokenizer_chars_new("aé€😀\n", &t, &e) == 0);
  CHECK_EQ_I64(tokenizer_vocab_size(t), 8);
  const char *text = "😀a\né€a";
  int32_t *ids;
  int64_t n;
  REQUIRE(tokenizer_encode(t, text, strlen(text), &ids, &n, &e) == 0);
  const int32_t want[6] = {6, 3, 7, 4, 5, 3};
  CHECK_EQ_I64(n, 6);
  for (int i = 0; i < 6 && i < n; i++) CHECK_EQ_I64(ids[i], want[i]);
  char *s = tokenizer_decode(t, ids, n, 0, &e);
  CHECK_STREQ(s, text);
  free(s), free(ids);
  tokenizer_free(t);
}

TEST(tokenizer_chars_errors) {
  tokenizer *t;
  rl_err e;
  REQUIRE(tokenizer_chars_new("abc", &t, &e) == 0);
  int32_t *ids;
  int64_t n;
  CHECK_EQ_I64(tokenizer_encode(t, "abxc", 4, &ids, &n, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "character 'x' (U+0078) at character 3 (byte offset 2)");
  CHECK_CONTAINS(e.msg, "tokenizer.chars");
  CHECK_EQ_I64(tokenizer_encode(t, "aé", 3, &ids, &n, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "'é' (U+00E9) at character 2 (byte offset 1)");
  CHECK_EQ_I64(tokenizer_encode(t, "a\tb", 3, &ids, &n, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "'\\x09'");
  CHECK_EQ_I64(tokenizer_encode(t, "a\xff", 2, &ids, &n, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "invalid UTF-8 at byte offset 1");
  CHECK_EQ_I64(tokenizer_encode(t, "\xc3", 1, &ids, &n, &e), RL_EXIT_USAGE); /* truncated */
  const int32_t bad[3] = {3, 6, 4};
  CHECK(tokenizer_decode(t, bad, 3, 0, &e) == NULL);
  CHECK_CONTAINS(e.msg, "token 2 of 3");
  CHECK_CONTAINS(e.msg, "token id 6 is outside the vocabulary [0, 6)");
  tokenizer_free(t);
  CHECK_EQ_I64(tokenizer_chars_new("abca", &t, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "'a' (U+0061) appears twice (again as character 4)");
  CHECK(t == NULL);
  CHECK_EQ_I64(tokenizer_chars_new("", &t, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(tokenizer_chars_new("a\xe2\x82", &t, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "invalid UTF-8 at byte offset 1");
}

TEST(recipe_tokenizer_chars) {
  const char *y = "model:\n  init: {hidden: 64, layers: 1, heads: 2, kv_heads: 1, head_dim: 32, ffn: 128}\n"
                  "tokenizer:\n  type: chars\n  chars: \"0123456789+=\"\n"
                  "data:\n  task: task.lua\nreward:\n  script: r.lua\n";
  recipe r;
  rl_err e;
  if (recipe_load_string(y, strlen(y), "t.yaml", NULL, 0, RECIPE_NO_FS, &r, &e)) {
    CHECK_MSG(0, "recipe: %s", e.msg);
    return;
  }
  tokenizer *t;
  REQUIRE(recipe_tokenizer(&r, &t, &e) == 0);
  CHECK_EQ_I64(tokenizer_vocab_size(t), 15);
  CHECK_STREQ(t->ops->kind, "chars");
  tokenizer_free(t);
  r.tokenizer.type = TOKENIZER_HF;
  CHECK_EQ_I64(recipe_tokenizer(&r, &t, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "tokenizer.type hf: no tokenizer.json (set tokenizer.path");
  recipe_free(&r);
}

/* Push the characters of s (each one token) and then an optional id. */
static finish_reason push_text(stop_seq *q, const stop_rule *r, const tokenizer *t, const char *s) {
  rl_err e;
  int32_t *ids;
  int64_t n;
  if (tokenizer_encode(t, s, strlen(s), &ids, &n, &e)) return (finish_reason)-1;
  int rc = FINISH_NONE;
  for (int64_t i = 0; i < n && rc == FINISH_NONE; i++) rc = stop_seq_push(q, r, t, ids[i], &e);
  free(ids);
  return (finish_reason)rc;
}

TEST(stop_conditions) {
  tokenizer *t;
  rl_err e;
  REQUIRE(tokenizer_chars_new("abc</>nswer 0123456789", &t, &e) == 0);
  char *stops[2] = {"</answer>", "00"};
  stop_rule r = {.eos = t->eos, .stop = stops, .n_stop = 2, .max_new_tokens = 20};
  stop_seq q;
  /* stop string: included, text ends right after it, tokens all counted */
  stop_seq_init(&q);
  CHECK_EQ_I64(push_text(&q, &r, t, "42</answer>"), FINISH_STOP);
  CHECK_STREQ(q.text, "42</answer>");
  CHECK_EQ_I64(q.n_tokens, 11);
  CHECK_EQ_I64(q.stop_index, 0);
  CHECK_STREQ(finish_reason_name(q.reason), "stop");
  CHECK_EQ_I64(stop_seq_push(&q, &r, t, 3, &e), -1); /* already finished */
  stop_seq_free(&q);
  /* excluded */
  r.exclude_stop = 1;
  stop_seq_init(&q);
  CHECK_EQ_I64(push_text(&q, &r, t, "7 100"), FINISH_STOP);
  CHECK_STREQ(q.text, "7 1");
  CHECK_EQ_I64(q.stop_index, 1);
  stop_seq_free(&q);
  r.exclude_stop = 0;
  /* EOS: counted as a token, no text */
  stop_seq_init(&q);
  CHECK_EQ_I64(push_text(&q, &r, t, "ab"), FINISH_NONE);
  CHECK_EQ_I64(stop_seq_push(&q, &r, t, t->eos, &e), FINISH_EOS);
  CHECK_STREQ(q.text, "ab");
  CHECK_EQ_I64(q.n_tokens, 3);
  CHECK_STREQ(finish_reason_name(q.reason), "eos");
  stop_seq_free(&q);
  /* another end token (rollout.stop_tokens): an EOS too, its text not added; others still text */
  int32_t more[2] = {t->pad, 3 + 5}; /* <pad> and '>' (ids: 3 + the character's index) */
  r.eos_more = more, r.n_eos_more = 2;
  stop_seq_init(&q);
  CHECK_EQ_I64(push_text(&q, &r, t, "ab"), FINISH_NONE);
  CHECK_EQ_I64(stop_seq_push(&q, &r, t, 3 + 5, &e), FINISH_EOS);
  CHECK_STREQ(q.text, "ab");
  CHECK_EQ_I64(q.n_tokens, 3);
  stop_seq_free(&q);
  stop_seq_init(&q);
  CHECK_EQ_I64(push_text(&q, &r, t, "ca"), FINISH_NONE);
  CHECK_EQ_I64(stop_seq_push(&q, &r, t, t->pad, &e), FINISH_EOS);
  stop_seq_free(&q);
  r.eos_more = NULL, r.n_eos_more = 0;
  /* length: exactly max_new_tokens tokens; a stop string on the last token wins */
  r.max_new_tokens = 4;
  stop_seq_init(&q);
  CHECK_EQ_I64(push_text(&q, &r, t, "abcabc"), FINISH_LENGTH);
  CHECK_EQ_I64(q.n_tokens, 4);
  CHECK_STREQ(q.text, "abca");
  CHECK_STREQ(finish_reason_name(q.reason), "length");
  stop_seq_free(&q);
  stop_seq_init(&q);
  CHECK_EQ_I64(push_text(&q, &r, t, "1200"), FINISH_STOP);
  stop_seq_free(&q);
  /* BOS/PAD add no text; an id outside the vocabulary is an error */
  stop_seq_init(&q);
  CHECK_EQ_I64(stop_seq_push(&q, &r, t, t->pad, &e), FINISH_NONE);
  CHECK_STREQ(q.text, "");
  CHECK_EQ_I64(stop_seq_push(&q, &r, t, 999, &e), -1);
  CHECK_CONTAINS(e.msg, "generated token 1: tokenizer: token id 999");
  stop_seq_free(&q);
  CHECK(finish_reason_name(FINISH_NONE) == NULL);
  tokenizer_free(t);
}
