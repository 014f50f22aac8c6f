/* fuzz_tokenizer.c — libFuzzer target for the byte-level BPE tokenizer
 * (stages/tokenizer_hf.c) and its regex matcher (stages/tokenizer_regex.h).
 * The first byte picks what the rest is:
 *   0  a regex pattern, NUL, a subject: compile, then every match left to
 *      right under a step budget — no crash, no hang, matches inside the text;
 *   1  a text for the tokenizer at $RLRUN_FUZZ_TOKENIZER (default the qwen2
 *      oracle fixture, build/fixtures/tokenizer/qwen2/tokenizer.json): valid
 *      UTF-8 must encode to ids in the vocabulary that decode to its NFC form
 *      (the file's normalizer), invalid UTF-8 must be refused; a difference
 *      aborts (the input is the reproducer);
 *   2  a tokenizer.json's text: loaded, then (when it loads) "héllo wörld 12"
 *      encoded and decoded — every refusal a message, never a crash.
 *
 *   make fixtures && make fuzz && build-fuzz/fuzz_tokenizer -runs=500000 -max_len=512 -timeout=10 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/tokenizer.h"
#include "stages/tokenizer_regex.h"
#include "stages/unicode.h"

static tokenizer *fixed_tok(void) {
  static tokenizer *t;
  static int tried;
  if (!tried) {
    tried = 1;
    const char *p = getenv("RLRUN_FUZZ_TOKENIZER");
    rl_err e;
    if (tokenizer_hf_new(p ? p : "build/fixtures/tokenizer/qwen2/tokenizer.json", &t, &e)) {
      fprintf(stderr, "fuzz_tokenizer: %s (run make fixtures, or set RLRUN_FUZZ_TOKENIZER)\n", e.msg);
      abort();
    }
  }
  return t;
}

static void fuzz_regex(const char *d, size_t n) {
  const char *nul = memchr(d, 0, n);
  if (!nul) return;
  char *pat = strndup(d, (size_t)(nul - d));
  const char *subj = nul + 1;
  size_t sl = n - (size_t)(nul - d) - 1, m = 0, i = 0;
  const char *why;
  size_t at;
  rx_prog *g = rx_compile_pattern(pat, &why, &at);
  free(pat);
  if (!g) return;
  uint32_t *cp = malloc((sl + 1) * sizeof *cp);
  while (i < sl && !uni_utf8_next(subj, sl, &i, &cp[m])) m++;
  long budget = 200000;
  for (size_t pos = 0; pos < m;) {
    size_t end = 0;
    int r = rx_match_at(g, cp, m, pos, &end, &budget);
    if (r < 0) break;
    if (r == 1 && (end < pos || end > m)) abort();
    pos = r == 1 && end > pos ? end : pos + 1;
  }
  free(cp);
  rx_prog_free(g);
}

static void fuzz_encode(const char *d, size_t n) {
  tokenizer *t = fixed_tok();
  int32_t *ids;
  int64_t k;
  rl_err e;
  char *nfc = NULL;
  size_t nl;
  const int valid = !memchr(d, 0, n) && uni_nfc(d, n, &nfc, &nl) == 0;
  const int rc = tokenizer_encode(t, d, n, &ids, &k, &e);
  if (!memchr(d, 0, n) && (rc == 0) != valid) abort(); /* refused exactly when not UTF-8 */
  if (rc == 0) {
    for (int64_t i = 0; i < k; i++)
      if (ids[i] < 0 || ids[i] >= tokenizer_vocab_size(t)) abort();
    char *s = tokenizer_decode(t, ids, k, 0, &e);
    if (valid && (!s || strcmp(s, nfc))) abort();
    free(s), free(ids);
  }
  free(nfc);
}

static void fuzz_load(const char *d, size_t n) {
  tokenizer *t;
  rl_err e;
  if (tokenizer_hf_new_mem(d, n, "fuzz.json", 0, &t, &e)) return;
  const char *text = "h\xc3\xa9llo w\xc3\xb6rld 12";
  int32_t *ids;
  int64_t k;
  if (tokenizer_encode(t, text, strlen(text), &ids, &k, &e) == 0) {
    char *s = tokenizer_decode(t, ids, k, 0, &e);
    free(s), free(ids);
  }
  tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const char *d = (const char *)data + 1;
  if (data[0] % 3 == 0) fuzz_regex(d, size - 1);
  else if (data[0] % 3 == 1) fuzz_encode(d, size - 1);
  else fuzz_load(d, size - 1);
  return 0;
}
