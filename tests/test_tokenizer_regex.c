/* test_tokenizer_regex.c — the pre-tokenizer's regex matcher
 * (stages/tokenizer_regex.h) on constructs the tokenizer oracle's three
 * patterns do not reach (lazy and counted repeats, positive lookahead, \w \d,
 * hex escapes, literal braces), each against matches worked out by hand from
 * Oniguruma's leftmost-first semantics; and what it refuses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stages/tokenizer_regex.h"
#include "stages/unicode.h"

/* The non-empty, non-overlapping matches of pattern in text, left to right,
 * joined by '|' (as a tokenizer's Split walks them). */
static void find_all(const char *pattern, const char *text, char *out, size_t cap) {
  const char *why = NULL;
  size_t at = 0;
  rx_prog *g = rx_compile_pattern(pattern, &why, &at);
  out[0] = 0;
  if (!g) {
    snprintf(out, cap, "REFUSED: %s", why);
    return;
  }
  size_t len = strlen(text), n = 0, i = 0;
  uint32_t *cp = malloc((len + 1) * sizeof *cp);
  size_t *off = malloc((len + 1) * sizeof *off);
  while (i < len) {
    off[n] = i;
    if (uni_utf8_next(text, len, &i, &cp[n])) break;
    n++;
  }
  off[n] = len;
  long budget = 1000000;
  int first = 1;
  for (size_t pos = 0; pos < n;) {
    size_t end = 0;
    int r = rx_match_at(g, cp, n, pos, &end, &budget);
    if (r == 1 && end > pos) {
      snprintf(out + strlen(out), cap - strlen(out), "%s%.*s", first ? "" : "|", (int)(off[end] - off[pos]), text + off[pos]);
      first = 0;
      pos = end;
    } else pos++;
  }
  free(cp), free(off);
  rx_prog_free(g);
}

TEST(tokenizer_regex_matches) {
  static const struct {
    const char *pat, *text, *want;
  } c[] = {
      {"a+?b", "aaab", "aaab"},                      /* lazy: grows until b matches */
      {"a+?", "aaa", "a|a|a"},                       /* lazy alone: the shortest */
      {"a{2,3}", "aaaaaaa", "aaa|aaa"},              /* greedy count; the 7th a is too few */
      {"a{2,}?", "aaaaa", "aa|aa"},                  /* lazy at least 2 */
      {"a{,2}", "aaa", "aa|a"},                      /* {,m}: 0 to m (Ruby syntax) */
      {"a{2}", "aaaaa", "aa|aa"},
      {"a{", "a{b", "a{"},                           /* a brace that starts no count: literal */
      {"x{1,2", "x{1,2", "x{1,2"},                   /* an unclosed count: literal too */
      {"\\d+", "x12\xd9\xa3" "4", "12\xd9\xa3" "4"}, /* \d is Nd: Arabic-Indic three included */
      {"\\w+", "h\xc3\xa9llo_w\xc3\xb6rld-ok", "h\xc3\xa9llo_w\xc3\xb6rld|ok"},
      {"[^a-c]+", "abxyzcq", "xyz|q"},
      {"x(?=y)", "xyxzxy", "x|x"},                   /* positive lookahead: x before y only */
      {"x(?!y)", "xyxzxy", "x"},
      {"(?i:stra\xc3\x9f" "e)", "STRASSE Stra\xc3\x9f" "e", "Stra\xc3\x9f" "e"}, /* simple folding: no ß = ss */
      {"(?i:k)", "K\xe2\x84\xaa" "k", "K|\xe2\x84\xaa|k"},  /* KELVIN SIGN folds to k */
      {"\\x{41}\\u0042\\x43", "ABC", "ABC"},
      {"a|ab", "ab", "a"},                           /* leftmost-first, not longest */
      {"(?:ab|a)c", "ac abc", "ac|abc"},             /* backtracking into the group */
      {".+", "ab\ncd", "ab|cd"},                     /* . stops at \n */
      {"\\p{Lu}\\p{Ll}+", "Hello World", "Hello|World"},
      {"\\P{L}+", "ab12!c", "12!"},
      {"\\p{Letter}+", "a1b", "a|b"},
      {"[\\p{N}\\s]+", "a1 2b", "1 2"},
      {"\\S+", "a\xc2\xa0" "b", "a|b"},              /* U+00A0 is White_Space */
      {"\\.\\*\\\\", "x.*\\", ".*\\"},
  };
  char out[512];
  for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
    find_all(c[i].pat, c[i].text, out, sizeof out);
    CHECK_MSG(!strcmp(out, c[i].want), "/%s/ on \"%s\": got \"%s\", want \"%s\"", c[i].pat, c[i].text, out, c[i].want);
  }
}

TEST(tokenizer_regex_refusals) {
  static const struct {
    const char *pat, *why;
  } c[] = {
      {"(?<=a)b", "a group kind other than"},
      {"(?<n>a)", "a group kind other than"},
      {"(?i)a", "a group kind other than"},
      {"^a", "anchors"},
      {"a$", "anchors"},
      {"\\ba", "an escape it does not know"},
      {"(a)\\1", "an escape it does not know"},
      {"a*+", "possessive"},
      {"[a[b]]", "nested classes"},
      {"[a&&b]", "class intersection"},
      {"(a*)*", "can match nothing"},
      {"a{3,2}", "m < n"},
      {"a{1001}", "past 1000"},
      {"\\p{Greek}", "property other than a general category"},
      {"(a", "not closed"},
      {"a)", "unmatched ')'"},
      {"*a", "nothing before it"},
      {"[ab", "not closed"},
  };
  for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
    const char *why = NULL;
    size_t at = 0;
    rx_prog *g = rx_compile_pattern(c[i].pat, &why, &at);
    CHECK_MSG(g == NULL, "/%s/ compiled; want a refusal (%s)", c[i].pat, c[i].why);
    if (!g) CHECK_MSG(why && strstr(why, c[i].why), "/%s/: \"%s\", want \"%s\"", c[i].pat, why ? why : "", c[i].why);
    rx_prog_free(g);
  }
  /* a runaway search stops at its budget (−1), it does not hang */
  const char *why;
  size_t at;
  rx_prog *g = rx_compile_pattern("(?:a|a)+b", &why, &at);
  REQUIRE(g);
  uint32_t s[40];
  for (int i = 0; i < 40; i++) s[i] = 'a';
  long budget = 100000;
  size_t end;
  CHECK_EQ_I64(rx_match_at(g, s, 40, 0, &end, &budget), -1);
  rx_prog_free(g);
}
