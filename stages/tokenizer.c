/* tokenizer.c — the tokenizer interface and the character tokenizer
 * (contract in tokenizer.h). */
#include "stages/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/unicode.h"

#define TOK_N_SPECIAL 3

static const char *const tok_special_names[TOK_N_SPECIAL] = {"<pad>", "<bos>", "<eos>"};

/* One entry of the character table: a code point and its id. */
typedef struct tok_char {
  uint32_t cp;
  int32_t id;
} tok_char;

/* The character tokenizer: the handle, then its tables. */
typedef struct tok_chars {
  tokenizer base;
  int64_t n;           /* characters */
  char **bytes;        /* [n] UTF-8 bytes of character id - TOK_N_SPECIAL */
  unsigned char *blen; /* [n] their lengths */
  tok_char *by_cp;     /* [n] sorted by code point, for encode */
} tok_chars;

/* The length (1..4) of the UTF-8 character at s (len bytes left) and its code
 * point, or 0 when the bytes there are not UTF-8 (stages/unicode.h decodes). */
static int tok_utf8_next(const unsigned char *s, size_t len, uint32_t *cp) {
  size_t i = 0;
  return uni_utf8_next((const char *)s, len, &i, cp) ? 0 : (int)i;
}

/* A printable rendering of code point cp (for messages): the character
 * itself, or \xNN for control characters. */
static void tok_show(uint32_t cp, const unsigned char *bytes, int len, char out[16]) {
  if (cp < 0x20 || cp == 0x7F) snprintf(out, 16, "\\x%02x", (unsigned)cp);
  else memcpy(out, bytes, (size_t)len), out[len] = 0;
}

static int tok_cmp_cp(const void *a, const void *b) {
  uint32_t x = ((const tok_char *)a)->cp, y = ((const tok_char *)b)->cp;
  return x < y ? -1 : x > y;
}

static int tok_chars_encode(const tokenizer *t, const char *text, size_t len, int32_t **ids, int64_t *n,
                            rl_err *e) {
  const tok_chars *c = (const tok_chars *)t;
  const unsigned char *s = (const unsigned char *)text;
  int32_t *v = rl_xmalloc((len ? len : 1) * sizeof *v);
  int64_t k = 0;
  for (size_t i = 0; i < len;) {
    uint32_t cp;
    int l = tok_utf8_next(s + i, len - i, &cp);
    if (!l) {
      free(v);
      return rl_errf(e, RL_EXIT_USAGE, "tokenizer: invalid UTF-8 at byte offset %zu (character %lld, counting from 1) of the text",
                     i, (long long)k + 1);
    }
    tok_char key = {cp, 0}, *hit = bsearch(&key, c->by_cp, (size_t)c->n, sizeof key, tok_cmp_cp);
    if (!hit) {
      char shown[16];
      tok_show(cp, s + i, l, shown);
      free(v);
      return rl_errf(e, RL_EXIT_USAGE,
                     "tokenizer: character '%s' (U+%04X) at character %lld (byte offset %zu) of the text is not in "
                     "tokenizer.chars: add it to the recipe's tokenizer.chars or remove it from the text",
                     shown, (unsigned)cp, (long long)k + 1, i);
    }
    v[k++] = hit->id;
    i += (size_t)l;
  }
  *ids = v, *n = k;
  return 0;
}

static void tok_chars_token_bytes(const tokenizer *t, int32_t id, const char **bytes, size_t *len,
                                  int *special) {
  const tok_chars *c = (const tok_chars *)t;
  if (id < TOK_N_SPECIAL) {
    *bytes = tok_special_names[id], *len = strlen(*bytes), *special = 1;
    return;
  }
  *bytes = c->bytes[id - TOK_N_SPECIAL], *len = c->blen[id - TOK_N_SPECIAL], *special = 0;
}

static void tok_chars_destroy(tokenizer *t) {
  tok_chars *c = (tok_chars *)t;
  for (int64_t i = 0; i < c->n; i++) free(c->bytes[i]);
  free(c->bytes), free(c->blen), free(c->by_cp), free(c);
}

static const tokenizer_ops tok_chars_ops = {"chars", tok_chars_encode, tok_chars_token_bytes,
                                            tok_chars_destroy};

int tokenizer_chars_new(const char *chars, tokenizer **out, rl_err *e) {
  *out = NULL;
  if (!chars || !*chars)
    return rl_errf(e, RL_EXIT_USAGE, "tokenizer.chars is empty: list the characters of the vocabulary");
  const unsigned char *s = (const unsigned char *)chars;
  size_t len = strlen(chars);
  tok_chars *c = rl_xcalloc(1, sizeof *c);
  c->bytes = rl_xmalloc(len * sizeof *c->bytes);
  c->blen = rl_xmalloc(len);
  c->by_cp = rl_xmalloc(len * sizeof *c->by_cp);
  for (size_t i = 0; i < len;) {
    uint32_t cp;
    int l = tok_utf8_next(s + i, len - i, &cp);
    if (!l) {
      tok_chars_destroy(&c->base);
      return rl_errf(e, RL_EXIT_USAGE, "tokenizer.chars: invalid UTF-8 at byte offset %zu: give the characters as UTF-8 text", i);
    }
    c->bytes[c->n] = rl_xmalloc((size_t)l + 1);
    memcpy(c->bytes[c->n], s + i, (size_t)l);
    c->bytes[c->n][l] = 0;
    c->blen[c->n] = (unsigned char)l;
    c->by_cp[c->n] = (tok_char){cp, (int32_t)(TOK_N_SPECIAL + c->n)};
    c->n++;
    i += (size_t)l;
  }
  qsort(c->by_cp, (size_t)c->n, sizeof *c->by_cp, tok_cmp_cp);
  for (int64_t i = 1; i < c->n; i++)
    if (c->by_cp[i].cp == c->by_cp[i - 1].cp) {
      char shown[16];
      int32_t id = c->by_cp[i].id > c->by_cp[i - 1].id ? c->by_cp[i].id : c->by_cp[i - 1].id;
      tok_show(c->by_cp[i].cp, (const unsigned char *)c->bytes[id - TOK_N_SPECIAL], c->blen[id - TOK_N_SPECIAL], shown);
      rl_errf(e, RL_EXIT_USAGE, "tokenizer.chars: character '%s' (U+%04X) appears twice (again as character %d): list each character once",
              shown, (unsigned)c->by_cp[i].cp, id - TOK_N_SPECIAL + 1);
      tok_chars_destroy(&c->base);
      return RL_EXIT_USAGE;
    }
  c->base.ops = &tok_chars_ops;
  c->base.vocab = TOK_N_SPECIAL + c->n;
  c->base.pad = 0, c->base.bos = 1, c->base.eos = 2;
  *out = &c->base;
  return 0;
}

void tokenizer_free(tokenizer *t) {
  if (t) t->ops->destroy(t);
}

int64_t tokenizer_vocab_size(const tokenizer *t) { return t->vocab; }

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int32_t **ids, int64_t *n,
                     rl_err *e) {
  *ids = NULL, *n = 0;
  return t->ops->encode(t, text, len, ids, n, e);
}

int tokenizer_token_bytes(const tokenizer *t, int32_t id, const char **bytes, size_t *len, int *special,
                          rl_err *e) {
  if (id < 0 || id >= t->vocab)
    return rl_errf(e, RL_EXIT_USAGE, "tokenizer: token id %d is outside the vocabulary [0, %lld)", id,
                   (long long)t->vocab);
  t->ops->token_bytes(t, id, bytes, len, special);
  return 0;
}

/* Length of the maximal subpart of an ill-formed sequence at s (>= 1):
 * the lead byte and the continuation bytes that could still complete it. */
static size_t tok_bad_run(const unsigned char *s, size_t len) {
  const unsigned c = s[0];
  size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (!need) return 1;
  size_t k = 1;
  for (; k < need && k < len; k++) {
    const unsigned d = s[k];
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range depends on the lead (no overlongs, surrogates, > U+10FFFF) */
    if (k == 1) {
      if (c == 0xE0) lo = 0xA0;
      else if (c == 0xED) hi = 0x9F;
      else if (c == 0xF0) lo = 0x90;
      else if (c == 0xF4) hi = 0x8F;
    }
    if (d < lo || d > hi) break;
  }
  return k;
}

int32_t tokenizer_find(const tokenizer *t, const char *text) {
  const size_t n = strlen(text);
  int32_t hit = -1;
  if (!n) return -1;
  for (int64_t id = 0; id < t->vocab; id++) { /* a special token's text before a plain one's */
    const char *b;
    size_t l;
    int special;
    t->ops->token_bytes(t, (int32_t)id, &b, &l, &special);
    if (l == n && !memcmp(b, text, n) && (hit < 0 || special)) {
      hit = (int32_t)id;
      if (special) break;
    }
  }
  return hit;
}

int64_t tokenizer_fix_utf8(char **text) {
  const unsigned char *s = (const unsigned char *)*text;
  size_t len = strlen(*text), i = 0;
  uint32_t cp;
  int l;
  while (i < len && (l = tok_utf8_next(s + i, len - i, &cp)) > 0) i += (size_t)l;
  if (i == len) return 0;
  char *out = rl_xmalloc(i + 3 * (len - i) + 1); /* a replacement (3 bytes) never outgrows 3 a byte */
  memcpy(out, s, i);
  size_t o = i;
  int64_t n = 0;
  while (i < len) {
    if ((l = tok_utf8_next(s + i, len - i, &cp)) > 0) {
      memcpy(out + o, s + i, (size_t)l), o += (size_t)l, i += (size_t)l;
      continue;
    }
    i += tok_bad_run(s + i, len - i);
    memcpy(out + o, "\xEF\xBF\xBD", 3), o += 3, n++;
  }
  out[o] = 0;
  free(*text);
  *text = out;
  return n;
}

char *tokenizer_decode(const tokenizer *t, const int32_t *ids, int64_t n, int flags, rl_err *e) {
  size_t cap = 16, len = 0;
  char *out = rl_xmalloc(cap);
  for (int64_t i = 0; i < n; i++) {
    const char *b;
    size_t l;
    int special;
    if (tokenizer_token_bytes(t, ids[i], &b, &l, &special, e)) {
      rl_err_prefix(e, "decoding token %lld of %lld: ", (long long)i + 1, (long long)n);
      free(out);
      return NULL;
    }
    if (special && (flags & TOKENIZER_SKIP_SPECIAL)) continue;
    if (len + l + 1 > cap) {
      while (len + l + 1 > cap) cap *= 2;
      out = rl_xrealloc(out, cap);
    }
    memcpy(out + len, b, l);
    len += l;
  }
  out[len] = 0;
  tokenizer_fix_utf8(&out);
  return out;
}
