/* test_prompts.c — JSONL and Lua prompt sources, and the data cursor: every
 * prompt once per epoch, iteration k's prompts recomputable alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "lua/host.h"
#include "stages/prompts.h"

/* Write text to a fresh file in the test's directory; returns its path. */
static const char *tmp_file(const char *name, const char *text) {
  static char path[4][512];
  static int next;
  char *p = path[next++ % 4];
  snprintf(p, 512, "%s/%s", harness_tmpdir(), name);
  harness_write_file(p, text);
  return p;
}

TEST(prompts_jsonl_fields) {
  const char *path = tmp_file("a.jsonl", "{\"prompt\": \"1+1=\", \"answer\": \"2\", \"id\": 7}\n"
                                         "\n"
                                         "  {\"prompt\": \"é\", \"meta\": {\"b\": [1, 2], \"a\": null}}\r\n"
                                         "{\"q\": \"x\", \"prompt\": \"3+4=\", \"sol\": 7}");
  prompt_source *s;
  rl_err e;
  REQUIRE(prompts_open_jsonl(path, NULL, "sol", &s, &e) == 0);
  CHECK_EQ_I64(prompts_count(s), 3);
  prompts_set_shuffle(s, 0);
  prompt_item *v;
  REQUIRE(prompts_batch(s, 1, 1, 4, &v, &e) == 0);
  CHECK_STREQ(v[0].text, "1+1=");
  CHECK_STREQ(v[0].extra_json, "{\"id\":7}"); /* no "sol" on this line: no answer (its own "answer" is not it) */
  CHECK_STREQ(v[1].text, "é");
  CHECK_STREQ(v[1].extra_json, "{\"meta\":{\"a\":null,\"b\":[1,2]}}");
  CHECK_STREQ(v[2].extra_json, "{\"answer\":7,\"q\":\"x\",\"sol\":7}"); /* answer_key copied to answer */
  CHECK_STREQ(v[3].text, "1+1="); /* next epoch */
  CHECK_EQ_I64(v[3].epoch, 1);
  CHECK_EQ_I64(v[2].index, 2);
  prompts_items_free(v, 4);
  prompts_close(s);
}

/* data.prompt_template: every prompt of a batch put into it at its {prompt};
 * the fields untouched; none set: the prompt as it is */
TEST(prompts_template) {
  const char *path = tmp_file("t.jsonl", "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n{\"prompt\": \"{prompt}\"}\n");
  prompt_source *s;
  rl_err e;
  REQUIRE(prompts_open_jsonl(path, NULL, NULL, &s, &e) == 0);
  prompts_set_shuffle(s, 0);
  prompts_set_template(s, "<u>\n{prompt}</u>\n<a>");
  prompt_item *v;
  REQUIRE(prompts_batch(s, 1, 1, 2, &v, &e) == 0);
  CHECK_STREQ(v[0].text, "<u>\n1+1=</u>\n<a>");
  CHECK_STREQ(v[0].extra_json, "{\"answer\":\"2\"}");
  CHECK_STREQ(v[1].text, "<u>\n{prompt}</u>\n<a>"); /* a prompt that reads {prompt} is put in once, not again */
  prompts_items_free(v, 2);
  prompts_set_template(s, NULL);
  REQUIRE(prompts_batch(s, 1, 1, 1, &v, &e) == 0);
  CHECK_STREQ(v[0].text, "1+1=");
  prompts_items_free(v, 1);
  prompts_close(s);
  char *t = prompts_apply_template("{prompt}", "x");
  CHECK_STREQ(t, "x");
  free(t);
  t = prompts_apply_template(NULL, "x");
  CHECK_STREQ(t, "x");
  free(t);
}

/* Expect opening `text` as JSONL to fail with a message containing want. */
static void jsonl_error(const char *text, const char *want) {
  const char *path = tmp_file("bad.jsonl", text);
  prompt_source *s = NULL;
  rl_err e;
  CHECK_EQ_I64(prompts_open_jsonl(path, NULL, NULL, &s, &e), RL_EXIT_USAGE);
  CHECK(s == NULL);
  CHECK_CONTAINS(e.msg, want);
}

TEST(prompts_jsonl_errors_name_file_and_line) {
  jsonl_error("{\"prompt\": \"a\"}\n{\"prompt\": \"b\",}\n", "bad.jsonl:2:");
  jsonl_error("{\"prompt\": \"a\"}\n{\"prompt\": \"b\",}\n", "not valid JSON");
  jsonl_error("{\"prompt\": \"a\"}\n\n{\"text\": \"b\"}\n", "bad.jsonl:3: no field \"prompt\"");
  jsonl_error("{\"prompt\": 5}\n", "bad.jsonl:1: field \"prompt\" must be a string");
  jsonl_error("[1, 2]\n", "bad.jsonl:1: expected a JSON object");
  jsonl_error("{\"prompt\": \"a\", \"prompt\": \"b\"}\n", "bad.jsonl:1:");
  jsonl_error("\n  \n", "no prompts");
  prompt_source *s;
  rl_err e;
  CHECK_EQ_I64(prompts_open_jsonl("/nonexistent/p.jsonl", NULL, NULL, &s, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "data.prompts");
  /* a custom prompt key */
  const char *path = tmp_file("k.jsonl", "{\"question\": \"q1\", \"prompt\": 3}\n");
  REQUIRE(prompts_open_jsonl(path, "question", NULL, &s, &e) == 0);
  prompt_item *v;
  REQUIRE(prompts_batch(s, 0, 1, 1, &v, &e) == 0);
  CHECK_STREQ(v[0].text, "q1");
  CHECK_STREQ(v[0].extra_json, "{\"prompt\":3,\"question\":\"q1\"}"); /* the prompt key's field kept as written */
  prompts_items_free(v, 1);
  CHECK_EQ_I64(prompts_batch(s, 0, 0, 1, &v, &e), RL_EXIT_USAGE); /* iterations count from 1 */
  prompts_close(s);
}

/* A NUL byte in a JSONL line is named at its FILE:LINE:COL (jansson stopped
 * there and called the rest "end of file expected"); a \u0000 in a string is
 * refused in words; a path that is not a regular file (/dev/zero: endless, a
 * FIFO: waits for a writer) is refused at once. */
TEST(prompts_jsonl_nul_bytes_and_special_files) {
  static const char line1[] = "{\"prompt\": \"1+1=\"}\n{\"prompt\": \"\xc3\xa9+2=\"}\0\n";
  char path[600];
  snprintf(path, sizeof path, "%s/nul.jsonl", harness_tmpdir());
  FILE *f = fopen(path, "wb");
  REQUIRE(f);
  fwrite(line1, 1, sizeof line1 - 1, f);
  fclose(f);
  prompt_source *s = NULL;
  rl_err e;
  char want[1200];
  CHECK_EQ_I64(prompts_open_jsonl(path, NULL, NULL, &s, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "%s:2:19: NUL byte: a JSONL file is UTF-8 text, one JSON object per line (remove "
           "the NUL bytes)", path);
  CHECK_STREQ(e.msg, want);
  const char *p2 = tmp_file("u0.jsonl", "{\"prompt\": \"1+\\u0000=\", \"answer\": \"2\"}\n");
  CHECK_EQ_I64(prompts_open_jsonl(p2, NULL, NULL, &s, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "%s:1:22: a string holds \\u0000 (a NUL character): prompts and their fields are "
           "text without NUL", p2);
  CHECK_STREQ(e.msg, want);
  CHECK_EQ_I64(prompts_open_jsonl("/dev/zero", NULL, NULL, &s, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "data.prompts: /dev/zero: is not a regular file (a character device): give a JSONL file");
  CHECK_EQ_I64(prompts_open_jsonl(harness_tmpdir(), NULL, NULL, &s, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, ": is not a regular file (a directory): give a JSONL file");
  CHECK(s == NULL);
}

/* An empty prompt is refused at its FILE:LINE, by the run's reader and by
 * validation's check (it ran: the model got BOS alone with a chars tokenizer,
 * and with a tokenizer without BOS the rollout failed mid-run on a prompt of
 * no tokens). A prompt of one space is text and stays. */
static void collect_bad(void *ud, const char *msg) {
  char *buf = ud;
  size_t n = strlen(buf);
  snprintf(buf + n, 4096 - n, "%s\n", msg);
}

TEST(prompts_jsonl_empty_prompt_refused) {
  const char *path = tmp_file("empty.jsonl", "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n"
                                             "{\"prompt\": \"\", \"answer\": \"4\"}\n"
                                             "{\"prompt\": \" \"}\n"
                                             "{\"q\": \"\"}\n");
  prompt_source *s = NULL;
  rl_err e;
  char want[1200];
  CHECK_EQ_I64(prompts_open_jsonl(path, NULL, NULL, &s, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "%s:2: field \"prompt\" is empty: a prompt is the text the model continues; fill it "
           "in or remove the line", path);
  CHECK_STREQ(e.msg, want);
  CHECK(s == NULL);
  char got[4096] = "";
  int64_t n = 0;
  CHECK_EQ_I64(prompts_check_jsonl(path, NULL, NULL, collect_bad, got, &n), 2);
  snprintf(want, sizeof want, "%s:2: field \"prompt\" is empty: a prompt is the text the model continues; fill it "
           "in or remove the line\n%s:4: no field \"prompt\": each line needs the prompt there (data.prompt_key)\n",
           path, path);
  CHECK_STREQ(got, want);
  CHECK_EQ_I64(n, 2);
  got[0] = 0; /* data.prompt_key names the field */
  CHECK_EQ_I64(prompts_check_jsonl(path, "q", NULL, collect_bad, got, &n), 4); /* lines 1-3 lack it */
  CHECK_CONTAINS(got, ":4: field \"q\" is empty");
}

/* A line whose extra JSON the reward hook cannot take (a value inside more
 * than LUAHOST_MAX_JSON_DEPTH objects and arrays) is refused where the file is
 * read, naming the line: it used to pass validation and then fail every
 * reward stage with exit 1, blaming the script. The deepest line allowed does
 * reach the hook. */
static char *nested_line(int arrays) {
  char *t = malloc((size_t)(2 * arrays + 64));
  int n = sprintf(t, "{\"prompt\": \"a\", \"m\": ");
  for (int i = 0; i < arrays; i++) t[n++] = '[';
  t[n++] = '1';
  for (int i = 0; i < arrays; i++) t[n++] = ']';
  strcpy(t + n, "}\n");
  return t;
}

static void count_bad(void *ud, const char *msg) {
  (void)msg;
  ++*(int *)ud;
}

TEST(prompts_jsonl_nesting_the_hook_takes) {
  char *deep = nested_line(LUAHOST_MAX_JSON_DEPTH); /* 1 inside the line's object and 64 arrays */
  const char *path = tmp_file("deep.jsonl", deep);
  free(deep);
  prompt_source *s = NULL;
  rl_err e;
  char want[1200];
  CHECK_EQ_I64(prompts_open_jsonl(path, NULL, NULL, &s, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "%s:1: nested too deep: a value sits inside more than 64 objects and arrays (the "
           "line's own counted), more than a Lua hook's sample can hold: flatten the line", path);
  CHECK_STREQ(e.msg, want);
  int n_bad = 0;
  CHECK_EQ_I64(prompts_check_jsonl(path, NULL, NULL, count_bad, &n_bad, NULL), 1); /* rlrun validate's reader */
  CHECK_EQ_I64(n_bad, 1);
  char *ok = nested_line(LUAHOST_MAX_JSON_DEPTH - 1);
  path = tmp_file("ok.jsonl", ok);
  free(ok);
  REQUIRE(prompts_open_jsonl(path, NULL, NULL, &s, &e) == 0);
  prompt_item *v;
  REQUIRE(prompts_batch(s, 0, 1, 1, &v, &e) == 0);
  static const char src[] = "function reward(s)\n"
                            "  local d, t = 0, s.m\n"
                            "  while type(t) == 'table' do d, t = d + 1, t[1] end\n"
                            "  return d\n"
                            "end\n";
  luahost *h = luahost_open_string("depth.lua", src, sizeof src - 1, NULL, &e);
  REQUIRE(h);
  luahost_sample smp = {.prompt = v[0].text, .completion = "", .extra_json = v[0].extra_json};
  luahost_reward out;
  REQUIRE(luahost_reward_one(h, &smp, &out, &e) == 0);
  CHECK(out.reward == LUAHOST_MAX_JSON_DEPTH - 1);
  luahost_close(h);
  prompts_items_free(v, 1);
  prompts_close(s);
}

TEST(prompts_cursor_is_a_permutation_per_epoch) {
  const int64_t sizes[6] = {1, 2, 5, 17, 100, 1000};
  for (int z = 0; z < 6; z++) {
    int64_t n = sizes[z];
    char *seen = calloc((size_t)n, 1);
    for (int64_t epoch = 0; epoch < 3; epoch++) {
      memset(seen, 0, (size_t)n);
      int64_t dup = 0, out = 0, fixed = 0;
      for (int64_t o = 0; o < n; o++) {
        int64_t i = prompts_cursor_index(42, 1, n, epoch * n + o);
        if (i < 0 || i >= n) { out++; continue; }
        dup += seen[i]++;
        fixed += i == o;
      }
      CHECK_EQ_I64(out, 0);
      CHECK_EQ_I64(dup, 0);
      if (n >= 100) CHECK_MSG(fixed < n / 10, "n=%lld epoch %lld: %lld fixed points", (long long)n, (long long)epoch, (long long)fixed);
    }
    free(seen);
  }
  /* epochs and seeds give different orders; no shuffle is the identity */
  int64_t diff_epoch = 0, diff_seed = 0;
  for (int64_t o = 0; o < 100; o++) {
    diff_epoch += prompts_cursor_index(42, 1, 100, o) != prompts_cursor_index(42, 1, 100, 100 + o);
    diff_seed += prompts_cursor_index(42, 1, 100, o) != prompts_cursor_index(43, 1, 100, o);
    CHECK_EQ_I64(prompts_cursor_index(42, 0, 100, 300 + o), o);
  }
  CHECK(diff_epoch > 80 && diff_seed > 80);
}

TEST(prompts_batches_cover_epochs_and_recompute) {
  /* 10 prompts, batch 4: iterations 1..5 cover two epochs; each prompt twice,
   * once in positions 0..9 and once in 10..19 */
  char text[1024] = "";
  for (int i = 0; i < 10; i++) snprintf(text + strlen(text), sizeof text - strlen(text), "{\"prompt\": \"p%d\"}\n", i);
  const char *path = tmp_file("ten.jsonl", text);
  prompt_source *s, *s2;
  rl_err e;
  REQUIRE(prompts_open_jsonl(path, NULL, NULL, &s, &e) == 0);
  REQUIRE(prompts_open_jsonl(path, NULL, NULL, &s2, &e) == 0);
  int count[2][10] = {{0}};
  char first[5][4][8];
  for (int64_t k = 1; k <= 5; k++) {
    prompt_item *v;
    REQUIRE(prompts_batch(s, 9, k, 4, &v, &e) == 0);
    for (int i = 0; i < 4; i++) {
      int64_t g = (k - 1) * 4 + i;
      CHECK_EQ_I64(v[i].epoch, g / 10);
      count[g / 10][v[i].index]++;
      snprintf(first[k - 1][i], 8, "%s", v[i].text);
      char want[8];
      snprintf(want, 8, "p%lld", (long long)v[i].index);
      CHECK_STREQ(v[i].text, want);
    }
    prompts_items_free(v, 4);
  }
  for (int ep = 0; ep < 2; ep++)
    for (int i = 0; i < 10; i++) CHECK_MSG(count[ep][i] == 1, "epoch %d prompt %d drawn %d times", ep, i, count[ep][i]);
  /* a fresh source, iterations asked in another order: the same prompts */
  for (int64_t k = 5; k >= 1; k--) {
    prompt_item *v;
    REQUIRE(prompts_batch(s2, 9, k, 4, &v, &e) == 0);
    for (int i = 0; i < 4; i++) CHECK_STREQ(v[i].text, first[k - 1][i]);
    prompts_items_free(v, 4);
  }
  prompts_close(s), prompts_close(s2);
}

TEST(prompts_lua_task) {
  const char *path = tmp_file("task.lua",
                              "function prompts(n, rng)\n"
                              "  local out = {}\n"
                              "  for i = 1, n do\n"
                              "    local a = rng:int(0, 99)\n"
                              "    out[i] = {prompt = string.format('%d+1=', a), answer = tostring(a + 1)}\n"
                              "  end\n"
                              "  return out\n"
                              "end\n");
  prompt_source *s;
  rl_err e;
  REQUIRE(prompts_open_task(path, NULL, &s, &e) == 0);
  CHECK_EQ_I64(prompts_count(s), -1);
  prompt_item *a, *b;
  REQUIRE(prompts_batch(s, 5, 3, 6, &a, &e) == 0);
  REQUIRE(prompts_batch(s, 5, 3, 6, &b, &e) == 0);
  luahost_rng r;
  luahost_rng_init(&r, 5, 3);
  for (int i = 0; i < 6; i++) {
    CHECK_STREQ(a[i].text, b[i].text);
    char want[32], ans[64];
    int64_t x = luahost_rng_int(&r, 0, 99);
    snprintf(want, sizeof want, "%lld+1=", (long long)x);
    snprintf(ans, sizeof ans, "{\"answer\":\"%lld\"}", (long long)x + 1);
    CHECK_STREQ(a[i].text, want);
    CHECK_STREQ(a[i].extra_json, ans);
    CHECK_EQ_I64(a[i].index, -1);
  }
  prompts_items_free(a, 6), prompts_items_free(b, 6);
  prompts_close(s);
  const char *none = tmp_file("none.lua", "x = 1\n");
  CHECK_EQ_I64(prompts_open_task(none, NULL, &s, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "defines no function prompts");
}
