/* test_tokenizer_hf.c — the byte-level BPE tokenizer (tokenizer.type: hf):
 * merges by rank on a tokenizer.json written here, added tokens,
 * tokenizer_config.json's specials, what it refuses, UTF-8 repair, and the
 * oracle: every case of tests/oracle/ci_tokenizer.py (tokenizers trained and
 * run by Hugging Face's `tokenizers`) encoded and decoded to the same ids and
 * text. */
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stages/tokenizer.h"

/* GPT-2's byte-level character of byte b, as UTF-8 */
static void bl_char(int b, char out[4]) {
  int k = 256;
  for (int x = 0; x < b; x++)
    if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174)) k++;
  unsigned cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 ? (unsigned)b : (unsigned)k;
  if (cp < 0x80) out[0] = (char)cp, out[1] = 0;
  else out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
}

/* A tokenizer.json: the 256 bytes as ids 0..255 (id = byte), then the merges
 * given as "a b" pairs of byte-level strings, each making the next id;
 * pre_tokenizer and normalizer as JSON text ("null" for none). */
static char *write_tok(const char *dir, const char *name, const char *const *merges, int nm, const char *pre,
                       const char *norm, const char *added, const char *config) {
  json_t *vocab = json_object(), *ml = json_array();
  for (int b = 0; b < 256; b++) {
    char c[4];
    bl_char(b, c);
    json_object_set_new(vocab, c, json_integer(b));
  }
  for (int i = 0; i < nm; i++) {
    const char *sp = strchr(merges[i], ' ');
    char joined[64];
    snprintf(joined, sizeof joined, "%.*s%s", (int)(sp - merges[i]), merges[i], sp + 1);
    json_object_set_new(vocab, joined, json_integer(256 + i));
    json_array_append_new(ml, json_string(merges[i]));
  }
  json_t *model = json_pack("{s:s,s:o,s:o}", "type", "BPE", "vocab", vocab, "merges", ml);
  json_t *root = json_pack("{s:o,s:o,s:o,s:o,s:{s:s}}", "model", model, "pre_tokenizer", json_loads(pre, JSON_DECODE_ANY, NULL),
                           "normalizer", json_loads(norm, JSON_DECODE_ANY, NULL), "added_tokens",
                           json_loads(added ? added : "[]", 0, NULL), "decoder", "type", "ByteLevel");
  char *sub = malloc(strlen(dir) + strlen(name) + 32);
  sprintf(sub, "%s/%s", dir, name);
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", sub);
  if (system(cmd)) return NULL;
  char *path = malloc(strlen(sub) + 32);
  sprintf(path, "%s/tokenizer.json", sub);
  json_dump_file(root, path, JSON_INDENT(1));
  json_decref(root);
  if (config) {
    char cp[1200];
    snprintf(cp, sizeof cp, "%s/tokenizer_config.json", sub);
    harness_write_file(cp, config);
  }
  free(sub);
  return path;
}

static void check_ids(const tokenizer *t, const char *text, const int32_t *want, int64_t nwant) {
  int32_t *ids = NULL;
  int64_t n = 0;
  rl_err e;
  int rc = tokenizer_encode(t, text, strlen(text), &ids, &n, &e);
  CHECK_MSG(rc == 0, "encode \"%s\": %s", text, rc ? e.msg : "");
  int same = rc == 0 && n == nwant;
  for (int64_t i = 0; same && i < n; i++) same = ids[i] == want[i];
  if (!same) {
    char got[400] = "", exp[400] = "";
    for (int64_t i = 0; i < n && strlen(got) < 380; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", ids[i]);
    for (int64_t i = 0; i < nwant && strlen(exp) < 380; i++) snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%d ", want[i]);
    CHECK_MSG(0, "encode \"%s\": got [%s] want [%s]", text, got, exp);
  }
  if (rc == 0) { /* decode gives the text back (no normalizer in these) */
    char *s = tokenizer_decode(t, ids, n, 0, &e);
    CHECK_STREQ(s, text);
    free(s);
  }
  free(ids);
}

#define GPT2_PRE "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}"

TEST(tokenizer_hf_merges_by_rank) {
  /* Ġ is the byte-level space */
  const char *merges[] = {"h e", "l l", "he ll", "hell o", "Ġ w", "b c", "a b", "a a"};
  char *p = write_tok(harness_tmpdir(), "rank", merges, 8, GPT2_PRE, "null", NULL, NULL);
  REQUIRE(p);
  tokenizer *t;
  rl_err e;
  REQUIRE(tokenizer_hf_new(p, &t, &e) == 0);
  CHECK_EQ_I64(tokenizer_vocab_size(t), 264);
  CHECK_EQ_I64(t->bos, -1);
  CHECK_EQ_I64(t->eos, -1);
  /* "hello" → he, ll, hell, hello; " world" is its own piece: Ġw then bytes */
  check_ids(t, "hello world", (const int32_t[]){259, 260, 'o', 'r', 'l', 'd'}, 6);
  /* "abc": (b,c) ranks before (a,b), so a + bc, not ab + c */
  check_ids(t, "abc", (const int32_t[]){'a', 261}, 2);
  /* "aaa": the leftmost pair first */
  check_ids(t, "aaa", (const int32_t[]){263, 'a'}, 2);
  /* the GPT-2 pattern keeps "h" and "e" of "h e" apart: no merge across pieces */
  check_ids(t, "h e", (const int32_t[]){'h', ' ', 'e'}, 3);
  /* "'s" and digits are their own pieces; trailing spaces: all but the last before a word */
  check_ids(t, "it's  12", (const int32_t[]){'i', 't', '\'', 's', ' ', ' ', '1', '2'}, 8);
  check_ids(t, "", NULL, 0);
  /* bytes of a 3-byte character, one id each */
  check_ids(t, "€", (const int32_t[]){0xE2, 0x82, 0xAC}, 3);
  tokenizer_free(t);
  free(p);
}

TEST(tokenizer_hf_added_tokens_and_config) {
  const char *merges[] = {"h i"};
  const char *added = "[{\"id\":257,\"content\":\"<|end|>\",\"special\":true},"
                      "{\"id\":258,\"content\":\"<|end|>x\",\"special\":true},"
                      "{\"id\":259,\"content\":\"<tool>\",\"special\":false,\"lstrip\":true}]";
  char *p = write_tok(harness_tmpdir(), "added", merges, 1, GPT2_PRE, "{\"type\":\"NFC\"}", added,
                      "{\"bos_token\": null, \"eos_token\": {\"content\": \"<|end|>\"}, \"pad_token\": \"<|end|>\"}");
  REQUIRE(p);
  tokenizer *t;
  rl_err e;
  REQUIRE(tokenizer_hf_new(p, &t, &e) == 0);
  CHECK_EQ_I64(tokenizer_vocab_size(t), 260);
  CHECK_EQ_I64(t->bos, -1);
  CHECK_EQ_I64(t->eos, 257);
  CHECK_EQ_I64(t->pad, 257);
  /* cut out before the BPE, the longest first; a partial one is text */
  check_ids(t, "hi<|end|>hi", (const int32_t[]){256, 257, 256}, 3);
  check_ids(t, "<|end|>xhi", (const int32_t[]){258, 256}, 2);
  check_ids(t, "<|end|", (const int32_t[]){'<', '|', 'e', 'n', 'd', '|'}, 6);
  /* lstrip: the spaces before <tool> are part of it (decode gives the token's own text) */
  int32_t *ids;
  int64_t n;
  REQUIRE(tokenizer_encode(t, "hi  <tool>", 10, &ids, &n, &e) == 0);
  CHECK_EQ_I64(n, 2);
  if (n == 2) {
    CHECK_EQ_I64(ids[0], 256);
    CHECK_EQ_I64(ids[1], 259);
  }
  free(ids);
  /* specials: named, or left out */
  const int32_t sp[3] = {256, 257, 259};
  char *s = tokenizer_decode(t, sp, 3, 0, &e);
  CHECK_STREQ(s, "hi<|end|><tool>");
  free(s);
  s = tokenizer_decode(t, sp, 3, TOKENIZER_SKIP_SPECIAL, &e);
  CHECK_STREQ(s, "hi<tool>");
  free(s);
  /* NFC before the BPE: e + combining acute is é (2 bytes, 2 ids) */
  REQUIRE(tokenizer_encode(t, "e\xCC\x81", 3, &ids, &n, &e) == 0);
  CHECK_EQ_I64(n, 2);
  if (n == 2) {
    CHECK_EQ_I64(ids[0], 0xC3);
    CHECK_EQ_I64(ids[1], 0xA9);
  }
  free(ids);
  /* invalid UTF-8 in the text: refused, naming the offset */
  CHECK(tokenizer_encode(t, "ab\xFF", 3, &ids, &n, &e) == RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "byte offset 2");
  tokenizer_free(t);
  free(p);
}

/* `tokenizers`' two added-token passes: normalized: false ones on the raw
 * text first, then normalized: true ones inside the normalized rest; a
 * single_word match that touches a word character is dropped whole. */
TEST(tokenizer_hf_added_token_passes_and_single_word) {
  const char *merges[] = {"a b", "b c"};
  const char *added = "[{\"id\":258,\"content\":\"bc\",\"special\":true,\"normalized\":false},"
                      "{\"id\":259,\"content\":\"ab\",\"special\":false,\"normalized\":true},"
                      "{\"id\":260,\"content\":\"caf\xc3\xa9\",\"special\":false,\"normalized\":true},"
                      "{\"id\":261,\"content\":\"xab\",\"special\":false,\"normalized\":false,\"single_word\":true}]";
  char *p = write_tok(harness_tmpdir(), "passes", merges, 2, GPT2_PRE, "{\"type\":\"NFC\"}", added, NULL);
  REQUIRE(p);
  tokenizer *t;
  rl_err e;
  REQUIRE(tokenizer_hf_new(p, &t, &e) == 0);
  int32_t *ids;
  int64_t n;
  struct {
    const char *text;
    int32_t want[8];
    int n;
  } c[] = {
      {"abc", {'a', 258}, 2},                      /* bc (raw pass) before ab (normalized pass) */
      {"abab", {259, 259}, 2},                     /* ab in the normalized pass */
      {"cafe\xcc\x81", {260}, 1},                  /* café after NFC: e + U+0301 composes */
      {"zxab", {'z', 'x', 259}, 3},               /* xab touches z: dropped, its text plain (ab then matches in pass 2) */
      {"xab!", {261, '!'}, 2},                    /* xab alone: kept */
      {"xab\xcc\x81", {'x', 259, 0xCC, 0x81}, 4}, /* a combining mark is a word character */
  };
  for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
    REQUIRE(tokenizer_encode(t, c[i].text, strlen(c[i].text), &ids, &n, &e) == 0);
    int same = n == c[i].n;
    for (int64_t k = 0; same && k < n; k++) same = ids[k] == c[i].want[k];
    CHECK_MSG(same, "case %zu \"%s\": got %lld ids, first %d", i, c[i].text, (long long)n, n ? ids[0] : -1);
    free(ids);
  }
  tokenizer_free(t);
  free(p);
}

#define DS_BOS "<\xef\xbd\x9c" "begin\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>" /* <｜begin▁of▁sentence｜> */

/* Specials that sit in vocab under their own text (DeepSeek's files), and a
 * token holding a 0x00 byte: shown as U+FFFD, so decoded text (a C string)
 * keeps what follows it. */
TEST(tokenizer_hf_vocab_specials_and_nul) {
  const char *dir = harness_tmpdir();
  char path[1024];
  snprintf(path, sizeof path, "%s/ds.json", dir);
  json_t *vocab = json_object();
  for (int b = 0; b < 256; b++) {
    char c[4];
    bl_char(b, c);
    json_object_set_new(vocab, c, json_integer(b + 1));
  }
  json_object_set_new(vocab, DS_BOS, json_integer(0));
  json_t *root = json_pack("{s:{s:s,s:o,s:[]},s:o,s:{s:s},s:[{s:i,s:s,s:b}]}", "model", "type", "BPE", "vocab", vocab,
                           "merges", "pre_tokenizer", json_loads(GPT2_PRE, 0, NULL), "decoder", "type", "ByteLevel",
                           "added_tokens", "id", 0, "content",
                           DS_BOS, "special", 1);
  REQUIRE(json_dump_file(root, path, 0) == 0);
  json_decref(root);
  tokenizer *t;
  rl_err e;
  int rc = tokenizer_hf_new(path, &t, &e);
  CHECK_MSG(rc == 0, "%s", rc ? e.msg : "");
  if (rc) return;
  const char *text = DS_BOS "a";
  int32_t *ids;
  int64_t n;
  REQUIRE(tokenizer_encode(t, text, strlen(text), &ids, &n, &e) == 0);
  CHECK_EQ_I64(n, 2);
  if (n == 2) {
    CHECK_EQ_I64(ids[0], 0);
    CHECK_EQ_I64(ids[1], 'a' + 1);
  }
  char *s = tokenizer_decode(t, ids, n, 0, &e);
  CHECK_STREQ(s, text);
  free(s), free(ids);
  const int32_t nul[3] = {'a' + 1, 0 + 1, 'b' + 1}; /* a, the byte 0x00, b */
  s = tokenizer_decode(t, nul, 3, 0, &e);
  CHECK_STREQ(s, "a\xef\xbf\xbd" "b");
  free(s);
  tokenizer_free(t);
}

TEST(tokenizer_hf_split_behaviours_and_regex) {
  /* a Split with the Qwen2 pattern, then ByteLevel without its regex */
  const char *pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+"
                    "[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
                    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}";
  /* merges that would join across the pattern's pieces if it did not split there */
  const char *merges[] = {"1 2", "' S", "a Ġ", "Ġ Ġ", "ĠĠ b"};
  char *p = write_tok(harness_tmpdir(), "qwen", merges, 5, pre, "null", NULL, NULL);
  REQUIRE(p);
  tokenizer *t;
  rl_err e;
  REQUIRE(tokenizer_hf_new(p, &t, &e) == 0);
  check_ids(t, "12", (const int32_t[]){'1', '2'}, 2);                     /* \p{N}: one digit a piece */
  check_ids(t, "IT'S", (const int32_t[]){'I', 'T', 257}, 3);              /* (?i:'s) takes 'S */
  check_ids(t, "a  b", (const int32_t[]){'a', ' ', ' ', 'b'}, 4);         /* "a", " ", " b" */
  check_ids(t, "   b", (const int32_t[]){259, ' ', 'b'}, 3);             /* "  " then " b" */
  check_ids(t, "x\n\n y", (const int32_t[]){'x', '\n', '\n', ' ', 'y'}, 5); /* \s*[\r\n]+ then " y" */
  tokenizer_free(t);
  free(p);
}

static void expect_refusal(const char *name, const char *pre, const char *norm, const char *want) {
  const char *merges[] = {"a b"};
  char *p = write_tok(harness_tmpdir(), name, merges, 1, pre, norm, NULL, NULL);
  tokenizer *t = NULL;
  rl_err e;
  int rc = p ? tokenizer_hf_new(p, &t, &e) : -1;
  CHECK_MSG(rc == RL_EXIT_USAGE, "%s: rc %d, want a refusal", name, rc);
  if (rc == RL_EXIT_USAGE) {
    CHECK_CONTAINS(e.msg, want);
    CHECK_CONTAINS(e.msg, p);
  }
  tokenizer_free(t);
  free(p);
}

TEST(tokenizer_hf_refusals) {
  expect_refusal("meta", "{\"type\":\"Metaspace\",\"replacement\":\"▁\"}", "null", "pre_tokenizer Metaspace is not supported");
  expect_refusal("lower", GPT2_PRE, "{\"type\":\"Lowercase\"}", "normalizer Lowercase is not supported");
  expect_refusal("lookbehind", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?<=a)b\"},"
                 "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]}", "null",
                 "a group kind other than");
  expect_refusal("anchor", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"^a\"},"
                 "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]}", "null", "anchors");
  /* a pattern that can match the empty string (tokenizers splits at every such match) */
  expect_refusal("nullable", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"x?\"},"
                 "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]}", "null",
                 "can match the empty string");
  /* not byte-level: no ByteLevel step (BPE over raw characters) */
  expect_refusal("nopre", "null", "null", "no ByteLevel step in its pre_tokenizer");
  expect_refusal("prop", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{Han}\"},"
                 "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"use_regex\":false}]}", "null",
                 "a \\p{…} property other than a general category");
  /* a merge that names no token; a WordPiece model; not JSON */
  const char *dir = harness_tmpdir();
  char path[1024];
  snprintf(path, sizeof path, "%s/bad.json", dir);
  tokenizer *t = NULL;
  rl_err e;
  harness_write_file(path, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a c\"]},"
                           "\"pre_tokenizer\":" GPT2_PRE ",\"decoder\":{\"type\":\"ByteLevel\"}}");
  CHECK(tokenizer_hf_new(path, &t, &e) == RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "merges[0] \"a c\" names a token");
  harness_write_file(path, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":" GPT2_PRE
                           ",\"decoder\":null}");
  CHECK(tokenizer_hf_new(path, &t, &e) == RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "decoder null is not supported");
  harness_write_file(path, "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}");
  CHECK(tokenizer_hf_new(path, &t, &e) == RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "model type WordPiece is not supported");
  harness_write_file(path, "{\"model\":\n{\"type\": BPE}}");
  CHECK(tokenizer_hf_new(path, &t, &e) == RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "bad.json:2:");
  snprintf(path, sizeof path, "%s/none/tokenizer.json", dir);
  CHECK(tokenizer_hf_new(path, &t, &e) == RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "none/tokenizer.json");
  CHECK(t == NULL);
}

TEST(tokenizer_fix_utf8_replaces_maximal_subparts) {
  struct {
    const char *in, *out;
    int64_t n;
  } c[] = {
      {"abc", "abc", 0},
      {"a\xE2\x82", "a\xEF\xBF\xBD", 1},                   /* € cut after 2 of 3 bytes: one U+FFFD */
      {"\xE2\x82\xAC\xF0\x9F", "\xE2\x82\xAC\xEF\xBF\xBD", 1}, /* a 4-byte lead and one continuation */
      {"\xFFx\x80", "\xEF\xBF\xBDx\xEF\xBF\xBD", 2},         /* stray bytes: one each */
      {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD", 2},            /* an overlong lead never starts a character */
      {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", 3}, /* a surrogate: ED's second byte must be < A0 */
  };
  for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
    char *s = strdup(c[i].in);
    CHECK_EQ_I64(tokenizer_fix_utf8(&s), c[i].n);
    CHECK_STREQ(s, c[i].out);
    free(s);
  }
}

/* ------------------------------------------------------------ the oracle */

/* Every case of DIR/NAME/cases.jsonl through DIR/NAME/tokenizer.json: the same
 * ids, and decode gives the same text; at least min_cases of them. */
/* `tokenizers`' decoded text as rlrun gives it: a 0x00 byte shown as U+FFFD
 * (decoded text is a C string; tokenizer_hf.c) — malloc'd. */
static char *nul_shown(const json_t *s) {
  const char *v = json_string_value(s);
  size_t n = json_string_length(s), o = 0;
  char *w = malloc(3 * n + 1);
  for (size_t i = 0; v && i < n; i++)
    if (v[i]) w[o++] = v[i];
    else memcpy(w + o, "\xef\xbf\xbd", 3), o += 3;
  w[o] = 0;
  return w;
}

/* A decode case: {"ids", "decoded", "decoded_skip"} */
static int oracle_decode_case(const tokenizer *t, const char *name, int n, json_t *c, int report) {
  json_t *ids = json_object_get(c, "ids");
  int64_t k = (int64_t)json_array_size(ids);
  int32_t *v = malloc((size_t)(k + 1) * sizeof *v);
  for (int64_t i = 0; i < k; i++) v[i] = (int32_t)json_integer_value(json_array_get(ids, (size_t)i));
  int bad = 0;
  rl_err e;
  for (int skip = 0; skip < 2; skip++) {
    char *want = nul_shown(json_object_get(c, skip ? "decoded_skip" : "decoded"));
    char *got = tokenizer_decode(t, v, k, skip ? TOKENIZER_SKIP_SPECIAL : 0, &e);
    if ((!got || strcmp(got, want)) && !bad && report) {
      char *ij = json_dumps(ids, JSON_COMPACT);
      CHECK_MSG(0, "%s case %d ids %.200s%s: decoded \"%s\" want \"%s\"", name, n, ij, skip ? " (skip specials)" : "",
                got ? got : "(null)", want);
      free(ij);
    }
    bad |= !got || strcmp(got, want);
    free(got), free(want);
  }
  free(v);
  return bad;
}

static void oracle_dir(const char *base, const char *name, int min_cases) {
  char path[1024], cases[1024];
  snprintf(path, sizeof path, "%s/%s/tokenizer.json", base, name);
  snprintf(cases, sizeof cases, "%s/%s/cases.jsonl", base, name);
  tokenizer *t;
  rl_err e;
  int rc = tokenizer_hf_new(path, &t, &e);
  CHECK_MSG(rc == 0, "%s: %s (run: make fixtures)", name, rc ? e.msg : "");
  if (rc) return;
  FILE *f = fopen(cases, "r");
  CHECK_MSG(f != NULL, "fixture missing: %s (run: make fixtures)", cases);
  if (!f) {
    tokenizer_free(t);
    return;
  }
  char *line = NULL;
  size_t cap = 0;
  int n = 0, bad = 0;
  while (getline(&line, &cap, f) > 0) {
    json_error_t je;
    json_t *c = json_loads(line, JSON_ALLOW_NUL, &je);
    if (!c) {
      CHECK_MSG(0, "%s: case %d is not JSON: %s", name, n + 1, je.text);
      break;
    }
    if (!json_object_get(c, "text")) { /* a decode case */
      n++;
      bad += oracle_decode_case(t, name, n, c, bad < 5);
      json_decref(c);
      continue;
    }
    const char *text = json_string_value(json_object_get(c, "text"));
    size_t tl = json_string_length(json_object_get(c, "text"));
    char *dec = nul_shown(json_object_get(c, "decoded"));
    json_t *want = json_object_get(c, "ids");
    int32_t *ids = NULL;
    int64_t k = 0;
    n++;
    if (tokenizer_encode(t, text, tl, &ids, &k, &e)) {
      if (bad++ < 5) CHECK_MSG(0, "%s case %d %s: %s", name, n, json_dumps(json_object_get(c, "text"), JSON_ENCODE_ANY), e.msg);
      free(dec);
      json_decref(c);
      continue;
    }
    int same = (size_t)k == json_array_size(want);
    for (int64_t i = 0; same && i < k; i++) same = ids[i] == json_integer_value(json_array_get(want, (size_t)i));
    if (!same && bad++ < 5) {
      char got[300] = "";
      for (int64_t i = 0; i < k && strlen(got) < 280; i++) snprintf(got + strlen(got), sizeof got - strlen(got), "%d,", ids[i]);
      char *wj = json_dumps(want, JSON_COMPACT), *tj = json_dumps(json_object_get(c, "text"), JSON_ENCODE_ANY);
      CHECK_MSG(0, "%s case %d %s: ids [%s] want %.300s", name, n, tj, got, wj);
      free(wj), free(tj);
    }
    char *s = tokenizer_decode(t, ids, k, 0, &e);
    if (same && (!s || strcmp(s, dec)) && bad++ < 5) {
      char *tj = json_dumps(json_object_get(c, "text"), JSON_ENCODE_ANY);
      CHECK_MSG(0, "%s case %d %s: decoded \"%s\" want \"%s\"", name, n, tj, s ? s : "(null)", dec);
      free(tj);
    }
    free(s), free(ids), free(dec);
    json_decref(c);
  }
  free(line);
  fclose(f);
  CHECK_MSG(n >= min_cases, "%s: only %d cases in %s", name, n, cases);
  CHECK_MSG(bad == 0, "%s: %d of %d cases differ from tokenizers'", name, bad, n);
  tokenizer_free(t);
}

static void oracle_config(const char *name) {
  const char *fx = getenv("RLRUN_FIXTURES");
  char base[1024];
  snprintf(base, sizeof base, "%s/tokenizer", fx ? fx : "build/fixtures");
  oracle_dir(base, name, 100);
}

TEST(tokenizer_hf_oracle_qwen2) { oracle_config("qwen2"); }
TEST(tokenizer_hf_oracle_qwen2_legacy_merges) { oracle_config("qwen2_legacy"); }
TEST(tokenizer_hf_oracle_gpt2) { oracle_config("gpt2"); }
TEST(tokenizer_hf_oracle_llama3) { oracle_config("llama3"); }
TEST(tokenizer_hf_oracle_prefix_space) { oracle_config("prefix"); }
TEST(tokenizer_hf_oracle_added_token_passes) { oracle_config("added_norm"); }
TEST(tokenizer_hf_oracle_single_word) { oracle_config("single_word"); }
TEST(tokenizer_hf_oracle_vocab_specials) { oracle_config("vocab_special"); }
TEST(tokenizer_hf_oracle_decode) { oracle_config("qwen2_decode"); }

/* The released vocabularies (Qwen2/Qwen3's 151,643 tokens, Llama 3's, GPT-2's)
 * against the ids Hugging Face `tokenizers` gave llama.cpp's tokenizer test
 * strings: opt-in, since it downloads llama.cpp's sources from PyPI —
 * `python3 tests/oracle/real_vocabs.py --out DIR` then RLRUN_REAL_VOCABS=DIR. */
TEST(tokenizer_hf_real_vocabs) {
  const char *dir = getenv("RLRUN_REAL_VOCABS");
  if (!dir) {
    printf("    skipped: set RLRUN_REAL_VOCABS (tests/oracle/real_vocabs.py makes it)\n");
    return;
  }
  const char *names[] = {"qwen2", "llama-bpe", "gpt-2"};
  for (int i = 0; i < 3; i++) oracle_dir(dir, names[i], 40);
}

/* ------------------------------------------------ a run with tokenizer hf */

static int hf_rl(const char *args, char *out, size_t n) {
  char bin[PATH_MAX], cmd[8192];
  if (!realpath(harness_bin(), bin)) snprintf(bin, sizeof bin, "%s", harness_bin());
  snprintf(cmd, sizeof cmd, "%s %s; exit $?", bin, args);
  return harness_run(cmd, out, n);
}

/* rlrun ARGS (printf-style): its exit code is want_rc and its output holds
 * want (when not NULL); the output is left in out. */
static void cli_expect(char *out, size_t n, int want_rc, const char *want, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void cli_expect(char *out, size_t n, int want_rc, const char *want, const char *fmt, ...) {
  char args[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  int rc = hf_rl(args, out, n);
  CHECK_MSG(rc == want_rc, "rlrun %s: exit %d, want %d: %s", args, rc, want_rc, out);
  if (want) CHECK_MSG(strstr(out, want) != NULL, "rlrun %s: output lacks \"%s\": %s", args, want, out);
}

/* A fresh model on real text through the qwen2 fixture's tokenizer: validate,
 * run (checkpoint records the tokenizer), a second run from that checkpoint
 * finds it without tokenizer.path, and another tokenizer.json is refused. */
TEST(tokenizer_hf_run_end_to_end) {
  const char *fx = getenv("RLRUN_FIXTURES");
  char tok[PATH_MAX], tok2[PATH_MAX], rel[1200], reward[PATH_MAX];
  snprintf(rel, sizeof rel, "%s/tokenizer/qwen2/tokenizer.json", fx ? fx : "build/fixtures");
  REQUIRE(realpath(rel, tok) != NULL);
  snprintf(rel, sizeof rel, "%s/tokenizer/gpt2/tokenizer.json", fx ? fx : "build/fixtures");
  REQUIRE(realpath(rel, tok2) != NULL);
  REQUIRE(realpath("lua/scripts/exact_match.lua", reward) != NULL);
  const char *dir = harness_tmpdir();
  char data[1200], recipe[1200], recipe2[1200], runs[1200], text[16384], args[8192], out[16384];
  snprintf(data, sizeof data, "%s/qa.jsonl", dir);
  REQUIRE(harness_write_file(data, "{\"prompt\": \"What is two plus three? Answer:\", \"answer\": \"5\"}\n"
                                   "{\"prompt\": \"Ünïcödé and 東京, then 12+30=\", \"answer\": \"42\"}\n"
                                   "{\"prompt\": \"<|im_start|>user\\nSay hi<|im_end|>\\n\", \"answer\": \"hi\"}\n") == 0);
  snprintf(recipe, sizeof recipe, "%s/hf.yaml", dir);
  snprintf(text, sizeof text,
           "name: hf-text\nseed: 3\ndevice: cpu\nmodel:\n  init: {arch: qwen3, hidden: 32, layers: 1, heads: 2, "
           "kv_heads: 1, head_dim: 16, ffn: 64, max_seq_len: 48}\ntokenizer:\n  type: hf\n  path: %s\n"
           "data:\n  prompts: %s\nrollout:\n  batch: 3\n  samples_per_prompt: 2\n  max_prompt_tokens: 40\n"
           "  max_new_tokens: 6\nreward:\n  script: %s\ntrain:\n  algorithm: grpo\n  lr: 1.0e-3\n"
           "loop:\n  iterations: 2\n  checkpoint_interval: 2\n",
           tok, data, reward);
  REQUIRE(harness_write_file(recipe, text) == 0);
  snprintf(args, sizeof args, "validate %s", recipe);
  CHECK_EQ_I64(hf_rl(args, out, sizeof out), 0);
  /* the plan names the file and the specials a run uses (tokenizer_config.json's) */
  snprintf(args, sizeof args, "plan %s", recipe);
  CHECK_EQ_I64(hf_rl(args, out, sizeof out), 0);
  char want[PATH_MAX + 160];
  snprintf(want, sizeof want, "\n== tokenizer ==\nhf %s: 3005 ids\nbos: none\neos: 3002 \"<|im_end|>\"\npad: 3000 \"<|endoftext|>\"\n", tok);
  CHECK_CONTAINS(out, want);
  /* more end tokens: listed by plan; one that is no token is named at validation */
  cli_expect(out, sizeof out, 0, "\nends a completion too: 3000 \"<|endoftext|>\"  (rollout.stop_tokens)\n",
             "plan %s --set 'rollout.stop_tokens=[\"<|endoftext|>\"]'", recipe);
  cli_expect(out, sizeof out, 2, "\"<|nope|>\" is no token of the tokenizer",
             "validate %s --set 'rollout.stop_tokens=[\"<|endoftext|>\", \"<|nope|>\"]'", recipe);
  /* the recipe's BOS / EOS over tokenizer_config.json's; one that is no token is named */
  cli_expect(out, sizeof out, 0, "\nbos: 3001 \"<|im_start|>\"\neos: 3000 \"<|endoftext|>\"\n",
             "plan %s --set 'tokenizer.eos=<|endoftext|>' --set 'tokenizer.bos=<|im_start|>'", recipe);
  cli_expect(out, sizeof out, 2, "tokenizer.eos=<|im_end: \"<|im_end\" is no token of ",
             "validate %s --set 'tokenizer.eos=<|im_end'", recipe);
  snprintf(runs, sizeof runs, "%s/runs", dir);
  snprintf(args, sizeof args, "run %s --runs-dir %s --quiet", recipe, runs);
  int rc = hf_rl(args, out, sizeof out);
  CHECK_MSG(rc == 0, "run: rc %d: %s", rc, out);
  /* the samples: the prompt's text back from its ids, specials included */
  snprintf(args, sizeof args, "samples $(ls -d %s/hf-text-*/ | tail -1) --iter 1", runs);
  CHECK_EQ_I64(hf_rl(args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "What is two plus three? Answer:");
  /* the checkpoint records the tokenizer: a run from it finds the same file */
  char cmd[2400];
  snprintf(cmd, sizeof cmd, "cat %s/hf-text-*/checkpoints/step-000002/manifest.json", runs);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "\"type\": \"hf\"");
  CHECK_CONTAINS(out, tok);
  snprintf(recipe2, sizeof recipe2, "%s/hf2.yaml", dir);
  snprintf(text, sizeof text,
           "name: hf-more\nseed: 4\ndevice: cpu\nmodel:\n  checkpoint: %s/hf-text\ndata:\n  prompts: %s\n"
           "rollout:\n  batch: 3\n  samples_per_prompt: 2\n  max_prompt_tokens: 40\n  max_new_tokens: 6\n"
           "reward:\n  script: %s\ntrain:\n  algorithm: grpo\n  lr: 1.0e-3\nloop:\n  iterations: 1\n",
           runs, data, reward);
  REQUIRE(harness_write_file(recipe2, text) == 0);
  snprintf(args, sizeof args, "validate %s", recipe2);
  rc = hf_rl(args, out, sizeof out);
  CHECK_MSG(rc == 0, "validate from the checkpoint: rc %d: %s", rc, out);
  cli_expect(out, sizeof out, 2, "differs from the tokenizer.json model.checkpoint", "validate %s --set tokenizer.path=%s",
             recipe2, tok2);
  cli_expect(out, sizeof out, 2, "was trained with a tokenizer of type hf",
             "validate %s --set 'tokenizer={type: chars, chars: \"ab\"}'", recipe2);
  /* data.prompt_template: counted in the prompt's tokens (21: tokenizers' count of the templated first
   * prompt); none or two {prompt} refused */
  cli_expect(out, sizeof out, 0, "valid", "validate %s --set 'data.prompt_template=\"<|im_start|>user\\n{prompt}<|im_end|>\\n\"'",
             recipe);
  cli_expect(out, sizeof out, 2, "qa.jsonl:1: the prompt in data.prompt_template is 21 tokens",
             "validate %s --set rollout.max_prompt_tokens=16 --set 'data.prompt_template=\"<|im_start|>user\\n{prompt}<|im_end|>\\n\"'",
             recipe);
  cli_expect(out, sizeof out, 2, "data.prompt_template=x: has no {prompt}", "validate %s --set data.prompt_template=x", recipe);
  cli_expect(out, sizeof out, 2, "holds {prompt} more than once",
             "validate %s --set 'data.prompt_template=\"{prompt}{prompt}\"'", recipe);
  /* with characters the tokenizer lacks, a bad template is one error, not one a data line (a chars
   * tokenizer: '{' is not in it; the 8 errors shown used to be the lines' and hide this one) */
  cli_expect(out, sizeof out, 2, "--set data.prompt_template=ab{prompt}{prompt}: holds {prompt} more than once: each "
             "prompt goes in one place\n", "validate recipes/demo-cpu.yaml --set 'data.prompt_template=ab{prompt}{prompt}'");
  CHECK(strstr(out, "tokenizer.chars") == NULL);
  /* a prompt longer than max_prompt_tokens is named at validation, counted in this tokenizer's tokens */
  cli_expect(out, sizeof out, 2, "qa.jsonl:1", "validate %s --set rollout.max_prompt_tokens=4", recipe);
}

/* tokenizer_config.json naming no token: refused unless the recipe names the
 * token; no EOS and a stop string that is a special's text are warned of; the
 * plan escapes control characters; an edited tokenizer_config.json stops a
 * resume (exit 4) as any input does. */
TEST(tokenizer_hf_config_and_warnings) {
  const char *fx = getenv("RLRUN_FIXTURES"), *dir = harness_tmpdir();
  char cmd[4096], out[16384], recipe[1200], text[8192], runs[1200];
  snprintf(cmd, sizeof cmd, "mkdir -p %s/tk && cp %s/tokenizer/qwen2/tokenizer.json %s/tk/ && "
           "printf '{\"eos_token\": \"<|end|>\"}' > %s/tk/tokenizer_config.json && "
           "printf '{\"prompt\": \"hello there\", \"answer\": \"x\"}\\n' > %s/p.jsonl",
           dir, fx ? fx : "build/fixtures", dir, dir, dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  char reward[PATH_MAX];
  REQUIRE(realpath("lua/scripts/exact_match.lua", reward) != NULL);
  snprintf(recipe, sizeof recipe, "%s/c.yaml", dir);
  snprintf(text, sizeof text,
           "name: cfg\ndevice: cpu\nmodel:\n  init: {arch: qwen3, hidden: 32, layers: 1, heads: 2, kv_heads: 1, "
           "head_dim: 16, ffn: 64, max_seq_len: 32}\ntokenizer:\n  path: %s/tk/tokenizer.json\ndata:\n  prompts: %s/p.jsonl\n"
           "rollout: {batch: 1, samples_per_prompt: 4, max_prompt_tokens: 16, max_new_tokens: 4}\n"
           "reward:\n  script: %s\nloop: {iterations: 2, checkpoint_interval: 1}\n", dir, dir, reward);
  REQUIRE(harness_write_file(recipe, text) == 0);
  cli_expect(out, sizeof out, 2, "eos_token \"<|end|>\" is no token of ", "validate %s", recipe);
  CHECK_CONTAINS(out, "fix it there, or set tokenizer.eos to the token's text");
  cli_expect(out, sizeof out, 0, "valid", "validate %s --set 'tokenizer.eos=<|im_end|>'", recipe);
  /* a config without an EOS: a warning; a stop string that is a special's text: a warning */
  snprintf(cmd, sizeof cmd, "printf '{}' > %s/tk/tokenizer_config.json", dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  cli_expect(out, sizeof out, 0, "warning: the tokenizer has no EOS", "validate %s --set 'rollout.stop=[\"<|im_end|>\"]'",
             recipe);
  CHECK_CONTAINS(out, "warning: rollout.stop \"<|im_end|>\" is the text of special token 3002");
  /* sft without an EOS: its targets get no end token, whatever else ends a sampled completion */
  snprintf(cmd, sizeof cmd, "printf '{\"prompt\": \"a\", \"completion\": \"b\"}\\n' > %s/s.jsonl", dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  cli_expect(out, sizeof out, 0, "warning: the tokenizer has no EOS (no tokenizer_config.json beside its tokenizer.json "
             "names an eos_token): sft targets get no end token", "validate %s --set train.algorithm=sft --set "
             "data.prompts=%s/s.jsonl --set 'rollout.stop_tokens=[\"<|im_end|>\"]'", recipe, dir);
  /* the plan shows control characters escaped */
  cli_expect(out, sizeof out, 0, "\nends a completion too: 198 \"\\n\"  (rollout.stop_tokens)\n", "plan %s --set 'rollout.stop_tokens=[\"\\n\"]'",
             recipe);
  /* a run stopped in iteration 2, then its tokenizer_config.json edited: resume refuses, naming it */
  snprintf(runs, sizeof runs, "%s/runs", dir);
  snprintf(cmd, sizeof cmd, "RLRUN_FAULT=loop.train@2:fail %s run %s --runs-dir %s --quiet --set 'tokenizer.eos=<|im_end|>'",
           harness_bin(), recipe, runs);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 1);
  snprintf(cmd, sizeof cmd, "printf '{\"eos_token\": \"<|endoftext|>\"}' > %s/tk/tokenizer_config.json", dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  cli_expect(out, sizeof out, 4, "input changed: ", "resume $(ls -d %s/cfg-*/ | tail -1)", runs);
  CHECK_CONTAINS(out, "/tk/tokenizer_config.json");
}

/* model.path without a tokenizer.json: validate says where it looked and what to set */
TEST(tokenizer_hf_missing_file_named_at_validation) {
  const char *dir = harness_tmpdir();
  char recipe[1200], text[4096], out[8192], args[2400];
  snprintf(recipe, sizeof recipe, "%s/r.yaml", dir);
  snprintf(text, sizeof text,
           "name: nofile\ndevice: cpu\nmodel:\n  init: {arch: qwen3, hidden: 32, layers: 1, heads: 2, kv_heads: 1, "
           "head_dim: 16, ffn: 64, max_seq_len: 16}\ntokenizer:\n  path: %s/nowhere/tokenizer.json\n"
           "data:\n  task: %s/lua/scripts/task_add_digits.lua\nreward:\n  script: %s/lua/scripts/digit_match.lua\n",
           dir, getenv("PWD") ? getenv("PWD") : ".", getenv("PWD") ? getenv("PWD") : ".");
  REQUIRE(harness_write_file(recipe, text) == 0);
  snprintf(args, sizeof args, "validate %s", recipe);
  CHECK_EQ_I64(hf_rl(args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "tokenizer.path");
  CHECK_CONTAINS(out, "nowhere/tokenizer.json: No such file or directory");
}

/* rollout.stop_tokens end a completion as EOS does: with "3" one, no completion
 * text holds a 3 and more samples end "eos" (the demo's first iteration:
 * without it, 35 of 256 completions hold a 3). */
TEST(rollout_stop_tokens_end_completions) {
  char args[4096], out[65536], runs[1200];
  snprintf(runs, sizeof runs, "%s/st", harness_tmpdir());
  snprintf(args, sizeof args, "run recipes/demo-cpu.yaml --runs-dir %s --quiet --set loop.iterations=1 "
           "--set 'rollout.stop_tokens=[\"3\"]' && %s samples %s/demo-cpu-*/ --iter 1", runs,
           getenv("RLRUN_BIN") ? getenv("RLRUN_BIN") : "build/rlrun", runs);
  REQUIRE(hf_rl(args, out, sizeof out) == 0);
  int eos = 0, threes = 0, lines = 0;
  for (char *l = out; (l = strstr(l, "\n    1 ")); l++) {
    lines++;
    char *arrow = strstr(l, "-> \""), *end = strchr(l + 1, '\n');
    if (strstr(l, " eos ") && (!end || strstr(l, " eos ") < end)) eos++;
    if (arrow && (!end || arrow < end))
      for (char *p = arrow + 4; *p && *p != '"'; p++) threes += *p == '3';
  }
  CHECK_EQ_I64(lines, 256);
  CHECK_EQ_I64(threes, 0);
  CHECK_MSG(eos > 50, "%d samples ended eos; with \"3\" an end token, expected well over the ~37 of <eos> alone", eos);
}

/* dir/tk (the qwen2 fixture's tokenizer.json and tokenizer_config.json),
 * dir/p.jsonl (one prompt) and dir/a.yaml: a one-iteration run of a fresh
 * tiny model named `name` through that tokenizer (its path in recipe). */
static void tk_start(const char *dir, const char *name, const char *reward, char *recipe, size_t n) {
  const char *fx = getenv("RLRUN_FIXTURES");
  char cmd[8192], out[4096], text[8192];
  snprintf(cmd, sizeof cmd, "mkdir -p %s/tk && cp %s/tokenizer/qwen2/tokenizer.json %s/tokenizer/qwen2/tokenizer_config.json "
           "%s/tk/ && printf '{\"prompt\": \"hello there\", \"answer\": \"x\"}\\n' > %s/p.jsonl",
           dir, fx ? fx : "build/fixtures", fx ? fx : "build/fixtures", dir, dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  snprintf(recipe, n, "%s/a.yaml", dir);
  snprintf(text, sizeof text,
           "name: %s\nseed: 2\ndevice: cpu\nmodel:\n  init: {arch: qwen3, hidden: 32, layers: 1, heads: 2, kv_heads: 1, "
           "head_dim: 16, ffn: 64, max_seq_len: 32}\ntokenizer:\n  path: %s/tk/tokenizer.json\ndata:\n  prompts: %s/p.jsonl\n"
           "rollout: {batch: 1, samples_per_prompt: 4, max_prompt_tokens: 16, max_new_tokens: 4}\n"
           "reward:\n  script: %s\nloop: {iterations: 1}\n", name, dir, dir, reward);
  REQUIRE(harness_write_file(recipe, text) == 0);
}

/* An hf run's checkpoint carries its tokenizer files: with the run directory
 * moved and the original tokenizer gone, a run from the checkpoint finds them
 * in it; resume says a complete run is complete and refuses a stopped one
 * (exit 4) until --set points it at the files' new place (the same contents: a
 * move; others: a change), and the run's export runs from there the same way;
 * convert from a checkpoint leaves its manifest behind. The model's generation_config.json eos_token_id ends completions too
 * (as in transformers' generate): plan lists them (the EOS itself not twice),
 * rollout.generation_config_eos: false drops them, bad files are named at
 * validation, and the checkpoint carries the file on. */
TEST(tokenizer_hf_checkpoint_carries_tokenizer_and_generation_eos) {
  const char *fx = getenv("RLRUN_FIXTURES"), *dir = harness_tmpdir();
  char cmd[8192], out[16384], recipe[1200], recipe2[1200], text[8192], reward[PATH_MAX];
  REQUIRE(realpath("lua/scripts/exact_match.lua", reward) != NULL);
  tk_start(dir, "carry", reward, recipe, sizeof recipe);
  cli_expect(out, sizeof out, 0, NULL, "run %s --runs-dir %s/runs --quiet", recipe, dir);
  /* the checkpoint holds byte-equal copies, listed (size, sha256) in its manifest */
  snprintf(cmd, sizeof cmd, "cd %s/runs/carry-*/checkpoints/step-000001 && cmp tokenizer.json %s/tk/tokenizer.json && "
           "cmp tokenizer_config.json %s/tk/tokenizer_config.json && ls && cat manifest.json", dir, dir, dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "\"tokenizer.json\": {");
  CHECK_CONTAINS(out, "\"tokenizer_config.json\": {");
  CHECK(strstr(out, "generation_config.json") == NULL); /* none to carry: model.init */
  snprintf(cmd, sizeof cmd, "RLRUN_FAULT=loop.train@1:fail %s run %s --runs-dir %s/stopped --quiet", harness_bin(),
           recipe, dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 1);
  /* the run directory moved, the tokenizer it was made with gone: a run from it still validates and runs */
  snprintf(cmd, sizeof cmd, "mv %s/runs %s/moved && mv %s/tk %s/tk-gone", dir, dir, dir, dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  /* resume, its recipe's tokenizer.path gone: a complete run is complete (exit 0), a stopped one is refused as
   * changed inputs are (exit 4), the missing files listed */
  cli_expect(out, sizeof out, 0, "the run is already complete (1 iteration", "resume $(ls -d %s/moved/carry-*/)", dir);
  CHECK_CONTAINS(out, "/tk/tokenizer.json");
  cli_expect(out, sizeof out, 4, "inputs of the run are gone since it started:\n  input missing: ",
             "resume $(ls -d %s/stopped/carry-*/)", dir);
  CHECK_CONTAINS(out, "/tk/tokenizer.json");
  CHECK_CONTAINS(out, "nothing was done");
  /* --set points the run at where its inputs are now: the same contents (sha256) is a move, not a change; a
   * value, or a file with other contents, is a change (exit 4 unless --allow-changed); nothing is modified */
  cli_expect(out, sizeof out, 4, "the --set values change the run", "resume $(ls -d %s/stopped/carry-*/) --set "
             "tokenizer.path=%s/tk-gone/tokenizer.json --set train.lr=0.5", dir, dir);
  CHECK_CONTAINS(out, "recipe changed in train: lr: ");
  snprintf(cmd, sizeof cmd, "mkdir -p %s/other && cp %s/tokenizer/gpt2/tokenizer.json %s/other/", dir,
           fx ? fx : "build/fixtures", dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  cli_expect(out, sizeof out, 4, "the --set values change the run", "resume $(ls -d %s/stopped/carry-*/) --set "
             "tokenizer.path=%s/other/tokenizer.json", dir, dir);
  cli_expect(out, sizeof out, 0, "with the same contents (sha256 checked):\n  recipe changed in tokenizer: path: ",
             "resume $(ls -d %s/stopped/carry-*/) --set tokenizer.path=%s/tk-gone/tokenizer.json", dir, dir);
  CHECK_CONTAINS(out, "run complete: ");
  snprintf(cmd, sizeof cmd, "cd %s && cmp stopped/carry-*/checkpoints/step-000001/model.safetensors "
           "moved/carry-*/checkpoints/step-000001/model.safetensors && grep -c tk-gone stopped/carry-*/run.json "
           "stopped/carry-*/recipe.resolved.yaml", dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  cli_expect(out, sizeof out, 0, "the run is already complete", "resume $(ls -d %s/stopped/carry-*/)", dir);
  CHECK(strstr(out, "changed") == NULL); /* the original recipe with run.json's overrides is the run's recipe again */
  /* its export, run where the tokenizer is now: refused by path, accepted by contents with --set, refused for
   * other contents */
  cli_expect(out, sizeof out, 0, NULL, "export $(ls -d %s/moved/carry-*/) --out %s/exp.yaml", dir, dir);
  cli_expect(out, sizeof out, 4, "/tk/tokenizer.json is missing", "run %s/exp.yaml --runs-dir %s/r3 --quiet", dir, dir);
  /* a --set that moves nothing keeps the check by path (exit 4, not the validator's exit 2) */
  cli_expect(out, sizeof out, 4, "/tk/tokenizer.json is missing", "run %s/exp.yaml --runs-dir %s/r3 --quiet --set "
             "loop.iterations=1", dir, dir);
  CHECK_CONTAINS(out, "point the recipe at where they are now (--set model.path=DIR ...");
  cli_expect(out, sizeof out, 4, "  tokenizer.path: other contents: ", "run %s/exp.yaml --runs-dir "
             "%s/r3 --quiet --set tokenizer.path=%s/other/tokenizer.json", dir, dir, dir);
  cli_expect(out, sizeof out, 2, "exp.yaml is an exported run: its inputs are named where they were; give each one "
             "that moved its new place with --set", "run %s/exp.yaml --runs-dir %s/r3 --quiet --set data.prompts=%s/p.jsonl",
             dir, dir, dir);
  cli_expect(out, sizeof out, 0, "run complete", "run %s/exp.yaml --runs-dir %s/r3 --set tokenizer.path=%s/tk-gone/"
             "tokenizer.json", dir, dir, dir);
  /* convert from a checkpoint: its tokenizer files go along, its manifest.json (the source's files) does not */
  cli_expect(out, sizeof out, 0, NULL, "convert --in $(ls -d %s/moved/carry-*/checkpoints/step-000001) --out %s/cv --to fp8-block",
             dir, dir);
  snprintf(cmd, sizeof cmd, "ls %s/cv", dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_STREQ(out, "config.json\nmodel.safetensors\ntokenizer.json\ntokenizer_config.json\n");
  /* a quantized model.path: the plan says its weights become the BF16 masters */
  cli_expect(out, sizeof out, 0, "convert        load the Hugging Face model (fp8 weights, dequantized), bf16 master",
             "plan %s --set model.init=null --set model.path=%s/cv --set tokenizer.path=null", recipe, dir);
  snprintf(recipe2, sizeof recipe2, "%s/b.yaml", dir);
  snprintf(text, sizeof text,
           "name: from\nseed: 3\ndevice: cpu\nmodel:\n  checkpoint: %s/moved/carry\ndata:\n  prompts: %s/p.jsonl\n"
           "rollout: {batch: 1, samples_per_prompt: 4, max_prompt_tokens: 16, max_new_tokens: 4}\n"
           "reward:\n  script: %s\nloop: {iterations: 1}\n", dir, dir, reward);
  REQUIRE(harness_write_file(recipe2, text) == 0);
  cli_expect(out, sizeof out, 0, "/checkpoints/step-000001/tokenizer.json: 3005 ids\nbos: none\neos: 3002 \"<|im_end|>\"\n",
             "plan %s", recipe2);
  /* a model directory (the checkpoint copied) with a generation config naming the EOS and <|endoftext|> */
  snprintf(cmd, sizeof cmd, "cp -r $(ls -d %s/moved/carry-*/checkpoints/step-000001) %s/model && rm %s/model/manifest.json "
           "%s/model/optimizer.safetensors && printf '{\"eos_token_id\": [3002, 3000], \"temperature\": 0.6}' > "
           "%s/model/generation_config.json", dir, dir, dir, dir, dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  char gen[1400], want[2000];
  snprintf(gen, sizeof gen, "%s/model/generation_config.json", dir);
  snprintf(want, sizeof want, "eos: 3002 \"<|im_end|>\"\npad: 3000 \"<|endoftext|>\"\nends a completion too: 3000 \"<|endoftext|>\"  "
           "(eos_token_id of %s)\n", gen);
  const char *m = "--set model.checkpoint=null --set model.path=";
  cli_expect(out, sizeof out, 0, want, "plan %s %s%s/model", recipe2, m, dir);
  CHECK(strstr(out, "ends a completion too: 3002") == NULL); /* the EOS is not listed again */
  cli_expect(out, sizeof out, 0, NULL, "plan %s %s%s/model --set rollout.generation_config_eos=false", recipe2, m, dir);
  CHECK(strstr(out, "ends a completion too") == NULL);
  /* one id, the same as a stop token: listed once, as the stop token */
  cli_expect(out, sizeof out, 0, "\npad: 3000 \"<|endoftext|>\"\nends a completion too: 3000 \"<|endoftext|>\"  (rollout.stop_tokens)\n\n",
             "plan %s %s%s/model --set 'rollout.stop_tokens=[\"<|endoftext|>\"]'", recipe2, m, dir);
  /* bad generation configs: the file, what is wrong, how to go on */
  static const char *const bad[][2] = {
      {"{\"eos_token_id\": 4000}", "eos_token_id 4000 is no id of the tokenizer (it has 3005)"},
      {"{\"eos_token_id\": [3000, \"x\"]}", "eos_token_id is neither a token id nor a list of ids"},
      {"{\"eos_token_id\": 3000", "(the model's generation config; fix the file, or set rollout.generation_config_eos: false"},
      {"[3000]", "not a JSON object"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    REQUIRE(harness_write_file(gen, bad[i][0]) == 0);
    cli_expect(out, sizeof out, 2, bad[i][1], "validate %s %s%s/model", recipe2, m, dir);
    CHECK_CONTAINS(out, "rollout.generation_config_eos");
    CHECK_CONTAINS(out, gen);
    cli_expect(out, sizeof out, 0, "valid", "validate %s %s%s/model --set rollout.generation_config_eos=false", recipe2, m, dir);
  }
  /* null: no more ends; the run from the model directory carries its generation config on */
  REQUIRE(harness_write_file(gen, "{\"eos_token_id\": null}") == 0);
  cli_expect(out, sizeof out, 0, NULL, "plan %s %s%s/model", recipe2, m, dir);
  CHECK(strstr(out, "ends a completion too") == NULL);
  REQUIRE(harness_write_file(gen, "{\"eos_token_id\": 3000}") == 0);
  cli_expect(out, sizeof out, 0, NULL, "run %s %s%s/model --runs-dir %s/r2 --quiet", recipe2, m, dir, dir);
  snprintf(cmd, sizeof cmd, "cmp %s $(ls -d %s/r2/from-*/checkpoints/step-000001)/generation_config.json", gen, dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  cli_expect(out, sizeof out, 0, "\nends a completion too: 3000 \"<|endoftext|>\"  (eos_token_id of ",
             "plan %s --set model.checkpoint=%s/r2/from", recipe2, dir);
  /* resume --set compares inputs file by file (by the key that names each), not as a bag of contents: a model
   * directory with two files' contents swapped is a change, its exact copy a move */
  snprintf(cmd, sizeof cmd, "RLRUN_FAULT=loop.train@1:fail %s run %s %s%s/model --runs-dir %s/r4 --quiet", harness_bin(),
           recipe2, m, dir, dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 1);
  snprintf(cmd, sizeof cmd, "cd %s && cp -r model model-mv && cp -r model model-sw && cp model/tokenizer_config.json "
           "model-sw/generation_config.json && cp model/generation_config.json model-sw/tokenizer_config.json", dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  cli_expect(out, sizeof out, 4, "  model.path/generation_config.json: other contents: ", "resume $(ls -d %s/r4/from-*/) "
             "--set model.path=%s/model-sw", dir, dir);
  CHECK_CONTAINS(out, "  model.path/tokenizer_config.json: other contents: ");
  cli_expect(out, sizeof out, 0, "with the same contents (sha256 checked)", "resume $(ls -d %s/r4/from-*/) --set "
             "model.path=%s/model-mv", dir, dir);
  snprintf(cmd, sizeof cmd, "cd %s && cmp r2/from-*/checkpoints/step-000001/model.safetensors "
           "r4/from-*/checkpoints/step-000001/model.safetensors", dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
}

/* A chain with an hf tokenizer and no tokenizer.path: the RL recipe validates
 * before the checkpoint it starts from exists (a note, as with chars); a run
 * of it stopped in iteration 3, its start checkpoint then moved away, is
 * refused on resume (exit 4, the missing inputs listed) and with
 * --allow-changed finishes from its own checkpoint's tokenizer copies, with
 * the final weights of an uninterrupted run. */
TEST(tokenizer_hf_chain_validates_early_and_resumes_without_its_start) {
  const char *dir = harness_tmpdir();
  char cmd[8192], out[16384], a[1200], b[1200], text[8192], reward[PATH_MAX];
  REQUIRE(realpath("lua/scripts/exact_match.lua", reward) != NULL);
  tk_start(dir, "start", reward, a, sizeof a);
  snprintf(b, sizeof b, "%s/b.yaml", dir);
  snprintf(text, sizeof text,
           "name: next\nseed: 3\ndevice: cpu\nmodel:\n  checkpoint: runs/start\ndata:\n  prompts: %s/p.jsonl\n"
           "rollout: {batch: 1, samples_per_prompt: 4, max_prompt_tokens: 16, max_new_tokens: 4}\n"
           "reward:\n  script: %s\nloop: {iterations: 4, checkpoint_interval: 1, keep_checkpoints: 1}\n", dir, reward);
  REQUIRE(harness_write_file(b, text) == 0);
  cli_expect(out, sizeof out, 0, "/runs/start' holds no checkpoint yet", "validate %s", b);
  CHECK_CONTAINS(out, ": valid: ");
  cli_expect(out, sizeof out, 0, NULL, "run %s --runs-dir %s/runs --quiet", a, dir);
  snprintf(cmd, sizeof cmd, "mv %s/tk %s/tk-gone", dir, dir); /* the chain's tokenizer is its checkpoint's now */
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  /* uninterrupted, and stopped in iteration 3 */
  cli_expect(out, sizeof out, 0, NULL, "run %s --runs-dir %s/whole --quiet", b, dir);
  snprintf(cmd, sizeof cmd, "RLRUN_FAULT=loop.train@3:fail %s run %s --runs-dir %s/cut --quiet", harness_bin(), b, dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 1);
  snprintf(cmd, sizeof cmd, "mv %s/runs %s/runs-moved", dir, dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  cli_expect(out, sizeof out, 4, "input missing: ", "resume $(ls -d %s/cut/next-*/)", dir);
  CHECK_CONTAINS(out, "/checkpoints/step-000001/tokenizer.json");
  cli_expect(out, sizeof out, 0, "using its checkpoint's copies", "resume $(ls -d %s/cut/next-*/) --allow-changed", dir);
  snprintf(cmd, sizeof cmd, "cd %s && cmp whole/next-*/checkpoints/step-000004/model.safetensors "
           "cut/next-*/checkpoints/step-000004/model.safetensors && cmp tk-gone/tokenizer.json "
           "cut/next-*/checkpoints/step-000004/tokenizer.json && ls cut/next-*/checkpoints", dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK(strstr(out, "step-000003") == NULL); /* retention pruned the checkpoint the copies first came from */
}

/* rlrun tokenize: the ids of `tokenizers` itself (the oracle cases of the
 * qwen2 fixture) through a recipe and through --tokenizer, the token lines,
 * --prompt (template, then BOS), --decode, and bad input named (exit 2). */
TEST(tokenize_command_matches_the_oracle) {
  const char *fx = getenv("RLRUN_FIXTURES"), *dir = harness_tmpdir();
  char tok[PATH_MAX], rel[1200], recipe[1200], text[16384], out[65536], cases[1200];
  snprintf(rel, sizeof rel, "%s/tokenizer/qwen2/tokenizer.json", fx ? fx : "build/fixtures");
  REQUIRE(realpath(rel, tok) != NULL);
  snprintf(cases, sizeof cases, "%s/tokenizer/qwen2/cases.jsonl", fx ? fx : "build/fixtures");
  snprintf(recipe, sizeof recipe, "%s/t.yaml", dir);
  snprintf(text, sizeof text,
           "name: tk\ndevice: cpu\nmodel:\n  init: {arch: qwen3, hidden: 32, layers: 1, heads: 2, kv_heads: 1, "
           "head_dim: 16, ffn: 64, max_seq_len: 64}\ntokenizer:\n  path: %s\ndata:\n  task: %s/lua/scripts/task_add_digits.lua\n"
           "rollout: {max_prompt_tokens: 32, max_new_tokens: 8}\n"
           "reward:\n  script: %s/lua/scripts/digit_match.lua\n", tok, getenv("PWD") ? getenv("PWD") : ".",
           getenv("PWD") ? getenv("PWD") : ".");
  REQUIRE(harness_write_file(recipe, text) == 0);
  json_error_t je;
  FILE *f = fopen(cases, "r");
  REQUIRE(f != NULL);
  char line[65536];
  int checked = 0;
  for (int k = 0; fgets(line, sizeof line, f) && checked < 12; k++) {
    if (k % 60 != 7) continue; /* a spread of the cases (mixed scripts, specials, spaces, digits) */
    json_t *c = json_loads(line, 0, &je);
    REQUIRE(c != NULL);
    const char *t = json_string_value(json_object_get(c, "text"));
    if (!t || !*t) {
      json_decref(c);
      continue;
    }
    char *want = json_dumps(json_object_get(c, "ids"), 0);
    char path[1400];
    snprintf(path, sizeof path, "%s/in.txt", dir);
    REQUIRE(harness_write_file(path, t) == 0);
    for (int via = 0; via < 2; via++) {
      char cmd[8192];
      snprintf(cmd, sizeof cmd, "%s tokenize %s%s --ids < %s", harness_bin(), via ? "--tokenizer " : "",
               via ? tok : recipe, path);
      CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
      char got[65536];
      snprintf(got, sizeof got, "%s\n", want);
      CHECK_STREQ(out, got);
    }
    free(want);
    json_decref(c);
    checked++;
  }
  fclose(f);
  CHECK(checked >= 10);
  /* the token lines, the prompt's ids with the template and a BOS, decode */
  cli_expect(out, sizeof out, 0, "3 tokens\n    2065  \"Hello\"\n     220  \" \"\n    3002  \"<|im_end|>\"  special\n",
             "tokenize %s 'Hello <|im_end|>'", recipe);
  cli_expect(out, sizeof out, 0, "[3001, 71, 72, 3002]\n", "tokenize %s --ids --prompt --set 'tokenizer.bos=<|im_start|>' "
             "--set 'data.prompt_template=\"{prompt}<|im_end|>\"' hi", recipe);
  cli_expect(out, sizeof out, 0, "[71, 72]\n", "tokenize %s --ids hi", recipe);
  cli_expect(out, sizeof out, 0, "Hello <|im_end|>\n", "tokenize --tokenizer %s --decode '[2065, 220, 3002]'", tok);
  cli_expect(out, sizeof out, 2, "token id 3005 is outside the vocabulary", "tokenize %s --decode '3005'", recipe);
  cli_expect(out, sizeof out, 2, "'x1' is not a token id", "tokenize %s --decode '1 x1'", recipe);
  cli_expect(out, sizeof out, 2, "which tokenizer?", "tokenize");
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "printf 'a\\0b' | %s tokenize %s", harness_bin(), recipe);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  CHECK_CONTAINS(out, "the text holds a NUL byte at byte 1");
  cli_expect(out, sizeof out, 2, "tokenizer.path", "tokenize %s --set tokenizer.path=%s/none.json hi", recipe, dir);
}

/* A tokenizer.path that is a symlink (a Hugging Face hub snapshot links each
 * file to a blob elsewhere): its tokenizer_config.json is the one beside the
 * link, for the run as for validate (the run read none: no EOS). */
TEST(tokenizer_hf_symlinked_tokenizer_keeps_its_config) {
  const char *dir = harness_tmpdir();
  char cmd[8192], out[16384], recipe[1200], reward[PATH_MAX];
  REQUIRE(realpath("lua/scripts/exact_match.lua", reward) != NULL);
  tk_start(dir, "hub", reward, recipe, sizeof recipe);
  snprintf(cmd, sizeof cmd, "cd %s && mkdir -p hub/blobs hub/snap && cp tk/tokenizer.json hub/blobs/aa && "
           "cp tk/tokenizer_config.json hub/blobs/bb && ln -s ../blobs/aa hub/snap/tokenizer.json && "
           "ln -s ../blobs/bb hub/snap/tokenizer_config.json", dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  cli_expect(out, sizeof out, 0, NULL, "run %s --runs-dir %s/runs --quiet --set tokenizer.path=%s/hub/snap/tokenizer.json",
             recipe, dir, dir);
  snprintf(cmd, sizeof cmd, "cd %s/runs/hub-*/checkpoints/step-000001 && ls && cmp tokenizer_config.json %s/tk/tokenizer_config.json "
           "&& grep -c 'hub/snap/tokenizer.json' manifest.json %s/runs/hub-*/recipe.resolved.yaml", dir, dir, dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "tokenizer_config.json\n");
  /* with model.path and tokenizer.path both set, the config beside tokenizer.path is a run input too */
  snprintf(cmd, sizeof cmd, "cd %s && cp -r runs/hub-*/checkpoints/step-000001 mdl && rm mdl/tokenizer*", dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  cli_expect(out, sizeof out, 0, NULL, "run %s --runs-dir %s/r2 --quiet --set model.init=null --set model.path=%s/mdl "
             "--set tokenizer.path=%s/tk/tokenizer.json", recipe, dir, dir, dir);
  char want[1400];
  snprintf(want, sizeof want, " %s/tk/tokenizer_config.json\n", dir);
  cli_expect(out, sizeof out, 0, want, "export $(ls -d %s/r2/hub-*/)", dir);
}

/* An hf run killed while its checkpoints (with their tokenizer copies) are
 * written — before the directory is published, then before it is recorded —
 * resumes to the uninterrupted run's weights and copies, no stray directory. */
TEST(tokenizer_hf_checkpoint_copies_survive_kills) {
  const char *dir = harness_tmpdir();
  char cmd[8192], out[16384], recipe[1200], reward[PATH_MAX];
  REQUIRE(realpath("lua/scripts/exact_match.lua", reward) != NULL);
  tk_start(dir, "kill", reward, recipe, sizeof recipe);
  const char *sets = "--set loop.iterations=3 --set loop.checkpoint_interval=1 --quiet";
  cli_expect(out, sizeof out, 0, NULL, "run %s --runs-dir %s/ref %s", recipe, dir, sets);
  snprintf(cmd, sizeof cmd, "RLRUN_FAULT=ckpt.before_publish@2:kill %s run %s --runs-dir %s/k %s; exit $?", harness_bin(),
           recipe, dir, sets);
  int rc = harness_run(cmd, out, sizeof out);
  CHECK_MSG(rc == 137 || rc == -1, "not killed: %d %s", rc, out);
  snprintf(cmd, sizeof cmd, "RLRUN_FAULT=ckpt.before_record@1:kill %s resume $(ls -d %s/k/kill-*/) --quiet; exit $?",
           harness_bin(), dir);
  rc = harness_run(cmd, out, sizeof out);
  CHECK_MSG(rc == 137 || rc == -1, "not killed: %d %s", rc, out);
  cli_expect(out, sizeof out, 0, NULL, "resume $(ls -d %s/k/kill-*/) --quiet", dir);
  snprintf(cmd, sizeof cmd, "cd %s && for f in model.safetensors tokenizer.json tokenizer_config.json; do cmp "
           "ref/kill-*/checkpoints/step-000003/$f k/kill-*/checkpoints/step-000003/$f || exit 1; done && "
           "ls -a k/kill-*/checkpoints | grep -c tmp; true", dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_STREQ(out, "0\n");
}
