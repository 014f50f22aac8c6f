/* tokenizer_hf.c — byte-level BPE from a Hugging Face tokenizer.json (the
 * GPT-2, Qwen2/Qwen3 and Llama-3 families), behind tokenizer.h's interface.
 *
 * Encoding follows the `tokenizers` library's pipeline, stage by stage:
 *   1. added tokens (added_tokens: the special ones and any others) are cut
 *      out of the raw text first, leftmost-longest, honouring lstrip / rstrip /
 *      single_word; each becomes its id;
 *   2. every other segment is normalized (null or NFC: stages/unicode.h);
 *   3. pre-tokenized: Split (a regex, behaviours Isolated / Removed /
 *      MergedWithPrevious / MergedWithNext), ByteLevel (add_prefix_space, and
 *      with use_regex the GPT-2 pattern), Digits, or a Sequence of them, each
 *      applied to every piece the step before made;
 *   4. each piece's bytes go through BPE: single bytes first, then the merges
 *      by rank (lowest first, leftmost on ties), as `tokenizers` does with a
 *      heap; with ignore_merges a piece that is a whole vocabulary entry is
 *      that entry.
 * The vocabulary is held as raw bytes: a byte-level key ("Ġhello") is mapped
 * back through GPT-2's byte ↔ character table, so decode is the concatenation
 * of token bytes (tokenizer.h) and ByteLevel's decoder needs no code.
 *
 * The pre-tokenizer's regexes run on stages/tokenizer_regex.h's matcher
 * (Oniguruma's semantics over the subset tokenizer patterns use); a pattern
 * outside that subset is refused when the tokenizer loads, naming the pattern
 * and the construct.
 *
 * What is refused, with the reason: a model other than BPE, BPE dropout,
 * byte_fallback, subword prefixes/suffixes (WordPiece-style), a normalizer
 * other than NFC, a pre-tokenizer other than the above (Metaspace: a
 * SentencePiece tokenizer such as Llama 2's), and a vocabulary whose keys are
 * not byte-level strings. */
#include "stages/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "stages/tokenizer_regex.h"
#include "stages/unicode.h"

/* ------------------------------------------------------------- tokenizer */

/* bytes → id: open addressing over FNV-1a */
typedef struct {
  uint32_t *slot; /* id + 1; 0 = empty */
  size_t mask;
} tok_map;

static uint64_t tok_hash(const char *b, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)b[i]) * 1099511628211ull;
  return h;
}

/* pair (a, b) → (rank, merged id) */
typedef struct {
  uint64_t key; /* (a + 1) << 32 | (b + 1); 0 = empty */
  int32_t rank, id;
} tok_merge;

typedef enum { PT_SPLIT, PT_BYTELEVEL } pt_kind;
typedef enum { SB_ISOLATED, SB_REMOVED, SB_MERGED_PREV, SB_MERGED_NEXT } split_behavior;
typedef struct {
  pt_kind kind;
  rx_prog *rx;             /* Split, Digits, ByteLevel with use_regex */
  split_behavior behavior; /* Split */
  int prefix_space;        /* ByteLevel's add_prefix_space */
} pre_step;

typedef struct {
  char *content;
  size_t len;
  int32_t id;
  uint8_t special, lstrip, rstrip, single_word, normalized; /* normalized: matched after the normalizer */
} added_tok;

typedef struct {
  tokenizer base;
  char **bytes; /* [vocab] a token's raw bytes (NULL: an id with no token) */
  char **shown; /* [vocab] for a token holding a 0x00 byte, its bytes with U+FFFD for each (else NULL) */
  uint32_t *blen;
  uint8_t *special;
  tok_map vocab; /* raw bytes → id, the BPE vocabulary */
  tok_merge *merges;
  size_t merge_mask;
  int32_t byte_id[256];
  int nfc, ignore_merges;
  int32_t unk;
  pre_step *steps;
  int nsteps;
  added_tok *added; /* longest content first */
  int nadded, n_normalized;
  uint8_t added_first[256]; /* 1 for a byte some added token starts with */
  char *cfg_bad[3]; /* tokenizer_config.json's bos/eos/pad naming no token: the message (the id is -1) */
} tok_hf;

static int32_t map_get(const tok_hf *t, const char *b, size_t n) {
  if (!t->vocab.slot) return -1;
  for (size_t i = tok_hash(b, n) & t->vocab.mask;; i = (i + 1) & t->vocab.mask) {
    uint32_t v = t->vocab.slot[i];
    if (!v) return -1;
    if (t->blen[v - 1] == n && !memcmp(t->bytes[v - 1], b, n)) return (int32_t)(v - 1);
  }
}
static void map_put(tok_hf *t, int32_t id) {
  for (size_t i = tok_hash(t->bytes[id], t->blen[id]) & t->vocab.mask;; i = (i + 1) & t->vocab.mask)
    if (!t->vocab.slot[i]) {
      t->vocab.slot[i] = (uint32_t)id + 1;
      return;
    }
}
static uint64_t merge_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)(a + 1) << 32 | (uint32_t)(b + 1); }
static size_t merge_slot(uint64_t k) { return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 17); }
static const tok_merge *merge_get(const tok_hf *t, int32_t a, int32_t b) {
  if (!t->merges) return NULL;
  uint64_t k = merge_key(a, b);
  for (size_t i = merge_slot(k) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
    if (!t->merges[i].key) return NULL;
    if (t->merges[i].key == k) return &t->merges[i];
  }
}

/* GPT-2's byte ↔ character table: printable bytes stand for themselves, the
 * other 68 (controls, space, 0x7F–0xA0, 0xAD) for U+0100 onward in byte order */
static int bytelevel_byte(uint32_t cp) { /* the byte a character stands for, −1 if none */
  if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
  if (cp < 256 || cp >= 256 + 68) return -1;
  const int k = (int)cp - 256; /* the k-th of the 68 in byte order: 0..32, 127..160, 173 */
  return k <= 32 ? k : k <= 66 ? 127 + (k - 33) : 173;
}

/* A byte-level string ("Ġhello") → its raw bytes (malloc'd); −1 if a character is not byte-level. */
static int bytelevel_decode(const char *s, char **out, uint32_t *n) {
  size_t len = strlen(s), i = 0, k = 0;
  char *b = rl_xmalloc(len + 1);
  uint32_t cp;
  while (i < len) {
    int v;
    if (uni_utf8_next(s, len, &i, &cp) || (v = bytelevel_byte(cp)) < 0) {
      free(b);
      return -1;
    }
    b[k++] = (char)v;
  }
  b[k] = 0;
  *out = b, *n = (uint32_t)k;
  return 0;
}

static void tok_hf_destroy(tokenizer *base) {
  tok_hf *t = (tok_hf *)base;
  if (t->bytes)
    for (int64_t i = 0; i < t->base.vocab; i++) free(t->bytes[i]);
  if (t->shown)
    for (int64_t i = 0; i < t->base.vocab; i++) free(t->shown[i]);
  free(t->bytes), free(t->shown), free(t->blen), free(t->special), free(t->vocab.slot), free(t->merges);
  for (int i = 0; i < t->nsteps; i++) rx_prog_free(t->steps[i].rx);
  free(t->steps);
  for (int i = 0; i < t->nadded; i++) free(t->added[i].content);
  free(t->added);
  for (int i = 0; i < 3; i++) free(t->cfg_bad[i]);
  free(t);
}

static void tok_hf_token_bytes(const tokenizer *base, int32_t id, const char **bytes, size_t *len, int *special) {
  const tok_hf *t = (const tok_hf *)base;
  if (t->shown && t->shown[id]) *bytes = t->shown[id], *len = strlen(t->shown[id]);
  else *bytes = t->bytes[id] ? t->bytes[id] : "", *len = t->blen[id];
  *special = t->special[id] || !t->bytes[id];
}

/* ids output vector */
typedef struct {
  int32_t *v;
  int64_t n, cap;
} idvec;
static void idv_push(idvec *o, int32_t id) {
  if (o->n == o->cap) o->cap = o->cap ? 2 * o->cap : 64, o->v = rl_xrealloc(o->v, (size_t)o->cap * sizeof *o->v);
  o->v[o->n++] = id;
}

/* BPE over one piece's bytes */
typedef struct {
  int32_t rank, pos, id;
} bpe_cand;
static int cand_less(const bpe_cand *a, const bpe_cand *b) { return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos; }
static void heap_push(bpe_cand *h, int *n, bpe_cand c) {
  int i = (*n)++;
  h[i] = c;
  while (i > 0 && cand_less(&h[i], &h[(i - 1) / 2])) {
    bpe_cand x = h[i];
    h[i] = h[(i - 1) / 2], h[(i - 1) / 2] = x;
    i = (i - 1) / 2;
  }
}
static bpe_cand heap_pop(bpe_cand *h, int *n) {
  bpe_cand top = h[0];
  h[0] = h[--*n];
  for (int i = 0;;) {
    int l = 2 * i + 1, r = l + 1, m = i;
    if (l < *n && cand_less(&h[l], &h[m])) m = l;
    if (r < *n && cand_less(&h[r], &h[m])) m = r;
    if (m == i) break;
    bpe_cand x = h[i];
    h[i] = h[m], h[m] = x;
    i = m;
  }
  return top;
}

static int bpe_piece(const tok_hf *t, const char *b, size_t n, idvec *out, rl_err *e) {
  if (!n) return 0;
  if (t->ignore_merges) {
    int32_t whole = map_get(t, b, n);
    if (whole >= 0) return idv_push(out, whole), 0;
  }
  int32_t *sym = rl_xmalloc(n * sizeof *sym), *prv = rl_xmalloc(n * sizeof *prv), *nxt = rl_xmalloc(n * sizeof *nxt);
  for (size_t i = 0; i < n; i++) {
    sym[i] = t->byte_id[(unsigned char)b[i]];
    if (sym[i] < 0) {
      if (t->unk < 0) {
        free(sym), free(prv), free(nxt);
        return rl_errf(e, RL_EXIT_USAGE,
                       "tokenizer: byte 0x%02X has no token in tokenizer.json's vocabulary and there is no unk_token",
                       (unsigned char)b[i]);
      }
      sym[i] = t->unk;
    }
    prv[i] = (int32_t)i - 1, nxt[i] = i + 1 < n ? (int32_t)i + 1 : -1;
  }
  bpe_cand *h = rl_xmalloc(2 * n * sizeof *h + sizeof *h);
  int nh = 0;
  for (size_t i = 0; i + 1 < n; i++) {
    const tok_merge *m = merge_get(t, sym[i], sym[i + 1]);
    if (m) heap_push(h, &nh, (bpe_cand){m->rank, (int32_t)i, m->id});
  }
  while (nh) {
    bpe_cand c = heap_pop(h, &nh);
    const int32_t i = c.pos, j = nxt[i];
    if (sym[i] < 0 || j < 0) continue; /* merged away, or no right neighbour any more */
    const tok_merge *m = merge_get(t, sym[i], sym[j]);
    if (!m || m->id != c.id) continue; /* stale: a neighbour changed */
    sym[i] = m->id, sym[j] = -1;
    nxt[i] = nxt[j];
    if (nxt[i] >= 0) prv[nxt[i]] = i;
    if (prv[i] >= 0 && (m = merge_get(t, sym[prv[i]], sym[i]))) heap_push(h, &nh, (bpe_cand){m->rank, prv[i], m->id});
    if (nxt[i] >= 0 && (m = merge_get(t, sym[i], sym[nxt[i]]))) heap_push(h, &nh, (bpe_cand){m->rank, i, m->id});
  }
  for (int32_t i = 0; i >= 0; i = nxt[i]) idv_push(out, sym[i]);
  free(sym), free(prv), free(nxt), free(h);
  return 0;
}

/* a list of pieces: byte ranges into one buffer */
typedef struct {
  char *buf;
  size_t len, cap;
  size_t *at, *n;
  int count, pcap;
} pieces;
static void pcs_add(pieces *p, const char *b, size_t n, const char *prefix) {
  size_t pl = prefix ? strlen(prefix) : 0;
  if (!n && !pl) return;
  if (p->len + n + pl > p->cap) {
    while (p->len + n + pl > p->cap) p->cap = p->cap ? 2 * p->cap : 256;
    p->buf = rl_xrealloc(p->buf, p->cap);
  }
  if (p->count == p->pcap) {
    p->pcap = p->pcap ? 2 * p->pcap : 16;
    p->at = rl_xrealloc(p->at, (size_t)p->pcap * sizeof *p->at), p->n = rl_xrealloc(p->n, (size_t)p->pcap * sizeof *p->n);
  }
  if (pl) memcpy(p->buf + p->len, prefix, pl);
  if (n) memcpy(p->buf + p->len + pl, b, n);
  p->at[p->count] = p->len, p->n[p->count] = n + pl, p->count++;
  p->len += n + pl;
}
static void pcs_free(pieces *p) { free(p->buf), free(p->at), free(p->n); }

/* Split a piece by a regex: the matches and what lies between them, by behaviour */
static int split_piece(const rx_prog *rx, split_behavior bh, const char *b, size_t n, pieces *out, rl_err *e) {
  uint32_t *cp = rl_xmalloc((n + 1) * sizeof *cp);
  size_t *off = rl_xmalloc((n + 1) * sizeof *off), m = 0;
  for (size_t i = 0; i < n;) {
    off[m] = i;
    if (uni_utf8_next(b, n, &i, &cp[m])) {
      free(cp), free(off);
      return rl_errf(e, RL_EXIT_USAGE, "tokenizer: invalid UTF-8 in the text");
    }
    m++;
  }
  off[m] = n;
  long budget = 20000 + 2000 * (long)m; /* tokenizer patterns are linear: this only stops a runaway one */
  size_t pos = 0, pend = 0; /* pend: start of the text not yet emitted (MergedWithNext carries a match) */
  int rc = 0;
  while (pos <= m && !rc) {
    size_t s = pos, end = 0;
    int hit = 0;
    for (; s < m; s++) {
      int r = rx_match_at(rx, cp, m, s, &end, &budget);
      if (r < 0) {
        rc = rl_errf(e, RL_EXIT_USAGE, "tokenizer: the pre-tokenizer's pattern took too many steps on a text of %zu characters", m);
        break;
      }
      if (r == 1 && end > s) {
        hit = 1;
        break;
      }
    }
    if (rc) break;
    if (!hit) break;
    /* [pend, s) unmatched, [s, end) the match */
    if (bh == SB_MERGED_NEXT) {
      pcs_add(out, b + off[pend], off[s] - off[pend], NULL); /* what came before (itself with an earlier match) */
      pend = s; /* the match starts the next piece */
    } else if (bh == SB_MERGED_PREV) {
      pcs_add(out, b + off[pend], off[end] - off[pend], NULL);
      pend = end;
    } else {
      pcs_add(out, b + off[pend], off[s] - off[pend], NULL);
      if (bh == SB_ISOLATED) pcs_add(out, b + off[s], off[end] - off[s], NULL);
      pend = end;
    }
    pos = end;
  }
  if (!rc) pcs_add(out, b + off[pend], off[m] - off[pend], NULL);
  free(cp), free(off);
  return rc;
}

/* pre-tokenize + BPE one normalized piece that holds no added token */
static int encode_pretok(const tok_hf *t, const char *text, size_t nlen, idvec *out, rl_err *e) {
  pieces cur = {0};
  pcs_add(&cur, text, nlen, NULL);
  int rc = 0;
  for (int k = 0; k < t->nsteps && !rc; k++) {
    const pre_step *st = &t->steps[k];
    pieces nx = {0};
    for (int i = 0; i < cur.count && !rc; i++) {
      const char *b = cur.buf + cur.at[i];
      size_t n = cur.n[i];
      if (st->kind == PT_BYTELEVEL) {
        if (st->prefix_space && n && b[0] != ' ') {
          if (!st->rx) pcs_add(&nx, b, n, " ");
          else {
            char *w = rl_xmalloc(n + 1);
            w[0] = ' ', memcpy(w + 1, b, n);
            rc = split_piece(st->rx, SB_ISOLATED, w, n + 1, &nx, e);
            free(w);
          }
        } else if (st->rx) rc = split_piece(st->rx, SB_ISOLATED, b, n, &nx, e);
        else pcs_add(&nx, b, n, NULL);
      } else rc = split_piece(st->rx, st->behavior, b, n, &nx, e);
    }
    pcs_free(&cur);
    cur = nx;
  }
  for (int i = 0; i < cur.count && !rc; i++) rc = bpe_piece(t, cur.buf + cur.at[i], cur.n[i], out, e);
  pcs_free(&cur);
  return rc;
}

/* What a single_word token may not touch: the characters of Rust's regex \w
 * (`tokenizers` tests the neighbours with it) — Alphabetic (letters, Nl, the
 * circled and squared letters among the symbols), marks, Nd, Pc, Join_Control. */
static int is_word_char(uint32_t c) {
  return uni_gc_in(c, 'L', 0) || uni_gc_in(c, 'M', 0) || uni_gc_in(c, 'N', 'd') || uni_gc_in(c, 'N', 'l') ||
         uni_gc_in(c, 'P', 'c') || c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) ||
         (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
}

/* The code point that ends before byte i (or −1 at the start) / starts at byte i (−1 at the end) */
static int64_t cp_before(const char *s, size_t i) {
  if (!i) return -1;
  size_t j = i - 1;
  while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
  uint32_t c;
  size_t k = j;
  return uni_utf8_next(s, i, &k, &c) ? -1 : (int64_t)c;
}
static int64_t cp_at(const char *s, size_t len, size_t i) {
  uint32_t c;
  return i < len && !uni_utf8_next(s, len, &i, &c) ? (int64_t)c : -1;
}

/* The next added token of one pass (those whose `normalized` flag is
 * `normalized`) in text[from..len), as `tokenizers` finds them: leftmost, the
 * longest there, never overlapping; a single_word match that touches a word
 * character is dropped whole (its text stays plain, the search goes on after
 * it). 1 with [*s, *end) — lstrip / rstrip spread over whitespace, never back
 * before `from` — and *id; 0 when there is none. */
static int next_added(const tok_hf *t, int normalized, const char *text, size_t len, size_t from, size_t *s,
                      size_t *end, int32_t *id) {
  for (size_t i = from; i < len;) {
    const added_tok *hit = NULL;
    if (t->added_first[(unsigned char)text[i]]) /* they are sorted longest first */
      for (int k = 0; k < t->nadded && !hit; k++) {
        const added_tok *a = &t->added[k];
        if (a->normalized == normalized && a->len && a->len <= len - i && !memcmp(text + i, a->content, a->len)) hit = a;
      }
    if (!hit) {
      i++;
      while (i < len && ((unsigned char)text[i] & 0xC0) == 0x80) i++;
      continue;
    }
    if (hit->single_word) {
      int64_t pb = cp_before(text, i), na = cp_at(text, len, i + hit->len);
      if ((pb >= 0 && is_word_char((uint32_t)pb)) || (na >= 0 && is_word_char((uint32_t)na))) {
        i += hit->len;
        continue;
      }
    }
    *s = i, *end = i + hit->len, *id = hit->id;
    if (hit->lstrip) /* the whitespace before it is part of it */
      for (int64_t c; *s > from && (c = cp_before(text, *s)) >= 0 && uni_is_space((uint32_t)c);) {
        (*s)--;
        while (*s > from && ((unsigned char)text[*s] & 0xC0) == 0x80) (*s)--;
      }
    if (hit->rstrip)
      for (int64_t c; (c = cp_at(text, len, *end)) >= 0 && uni_is_space((uint32_t)c);) {
        uint32_t cc;
        if (uni_utf8_next(text, len, end, &cc)) break;
      }
    return 1;
  }
  return 0;
}

/* A piece between the raw text's added tokens: normalized, then cut at the
 * added tokens matched on normalized text (normalized: true), the rest
 * pre-tokenized and merged — `tokenizers`' second pass. */
static int encode_segment(const tok_hf *t, const char *text, size_t len, idvec *out, rl_err *e) {
  char *norm = NULL;
  size_t nlen = len;
  if (t->nfc && len) {
    if (uni_nfc(text, len, &norm, &nlen)) return rl_errf(e, RL_EXIT_USAGE, "tokenizer: invalid UTF-8 in the text");
    text = norm;
  }
  size_t seg = 0, s, end;
  int32_t id;
  int rc = 0;
  while (!rc && t->n_normalized && next_added(t, 1, text, nlen, seg, &s, &end, &id)) {
    rc = encode_pretok(t, text + seg, s - seg, out, e);
    idv_push(out, id);
    seg = end;
  }
  if (!rc && seg < nlen) rc = encode_pretok(t, text + seg, nlen - seg, out, e);
  free(norm);
  return rc;
}

static int tok_hf_encode(const tokenizer *base, const char *text, size_t len, int32_t **ids, int64_t *n, rl_err *e) {
  const tok_hf *t = (const tok_hf *)base;
  { /* the whole text must be UTF-8 (a segment's check would name a piece, not the text) */
    uint32_t c;
    for (size_t i = 0; i < len;) {
      size_t at = i;
      if (uni_utf8_next(text, len, &i, &c))
        return rl_errf(e, RL_EXIT_USAGE, "tokenizer: invalid UTF-8 at byte offset %zu of the text", at);
    }
  }
  /* first pass: the added tokens matched on the raw text (normalized: false) */
  idvec out = {0};
  size_t seg = 0, s, end;
  int32_t id;
  int rc = 0;
  while (!rc && next_added(t, 0, text, len, seg, &s, &end, &id)) {
    rc = encode_segment(t, text + seg, s - seg, &out, e);
    idv_push(&out, id);
    seg = end;
  }
  if (!rc && seg < len) rc = encode_segment(t, text + seg, len - seg, &out, e);
  if (rc) {
    free(out.v);
    return rc;
  }
  *ids = out.v ? out.v : rl_xmalloc(sizeof(int32_t)), *n = out.n;
  return 0;
}

static const tokenizer_ops tok_hf_ops = {"hf", tok_hf_encode, tok_hf_token_bytes, tok_hf_destroy};

/* ------------------------------------------------------------- loading */

#define GPT2_PATTERN "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static int hf_bad(rl_err *e, const char *path, const char *fmt, const char *what) {
  char msg[400];
  snprintf(msg, sizeof msg, fmt, what ? what : "");
  return rl_errf(e, RL_EXIT_USAGE, "tokenizer.json %s: %s", path, msg);
}

static int add_step(tok_hf *t, pre_step st) {
  t->steps = rl_xrealloc(t->steps, (size_t)(t->nsteps + 1) * sizeof *t->steps);
  t->steps[t->nsteps++] = st;
  return 0;
}

static int load_regex(const char *path, const char *pat, rx_prog **out, rl_err *e) {
  const char *why = NULL;
  size_t at = 0;
  *out = rx_compile_pattern(pat, &why, &at);
  if (*out && rx_can_match_empty(*out)) {
    rx_prog_free(*out), *out = NULL;
    return rl_errf(e, RL_EXIT_USAGE,
                   "tokenizer.json %s: the pre-tokenizer's regex \"%.80s\" can match the empty string, where "
                   "`tokenizers` splits between every two characters; rlrun does not reproduce that: it reads the "
                   "patterns of byte-level BPE tokenizers (GPT-2, Qwen, Llama 3), none of which can", path, pat);
  }
  if (!*out)
    return rl_errf(e, RL_EXIT_USAGE,
                   "tokenizer.json %s: the pre-tokenizer's regex uses %s (at character %zu of \"%.80s\"), which rlrun's "
                   "matcher does not run: it reads the patterns of byte-level BPE tokenizers (GPT-2, Qwen, Llama 3)",
                   path, why, at + 1, pat);
  return 0;
}

static int load_pre(tok_hf *t, const char *path, json_t *p, int *bytelevel, rl_err *e) {
  if (!p || json_is_null(p)) return 0;
  const char *ty = json_string_value(json_object_get(p, "type"));
  if (!ty) return hf_bad(e, path, "pre_tokenizer has no \"type\"%s", NULL);
  if (!strcmp(ty, "Sequence")) {
    json_t *a = json_object_get(p, "pretokenizers");
    if (!json_is_array(a)) return hf_bad(e, path, "the Sequence pre_tokenizer has no \"pretokenizers\" list%s", NULL);
    size_t i;
    json_t *x;
    json_array_foreach(a, i, x) if (load_pre(t, path, x, bytelevel, e)) return e->code;
    return 0;
  }
  pre_step st = {0};
  if (!strcmp(ty, "ByteLevel")) {
    json_t *ur = json_object_get(p, "use_regex");
    st.kind = PT_BYTELEVEL, st.prefix_space = json_is_true(json_object_get(p, "add_prefix_space"));
    if ((!ur || json_is_true(ur)) && load_regex(path, GPT2_PATTERN, &st.rx, e)) return e->code;
    *bytelevel = 1;
    return add_step(t, st);
  }
  if (!strcmp(ty, "Digits")) {
    st.kind = PT_SPLIT, st.behavior = SB_ISOLATED;
    if (load_regex(path, json_is_true(json_object_get(p, "individual_digits")) ? "\\p{N}" : "\\p{N}+", &st.rx, e))
      return e->code;
    return add_step(t, st);
  }
  if (!strcmp(ty, "Split")) {
    json_t *pt = json_object_get(p, "pattern");
    const char *rx = json_string_value(json_object_get(pt, "Regex")), *lit = json_string_value(json_object_get(pt, "String"));
    const char *bh = json_string_value(json_object_get(p, "behavior"));
    if (json_is_true(json_object_get(p, "invert"))) return hf_bad(e, path, "a Split pre_tokenizer with invert: true is not supported%s", NULL);
    st.kind = PT_SPLIT;
    if (!bh || !strcmp(bh, "Isolated")) st.behavior = SB_ISOLATED;
    else if (!strcmp(bh, "Removed")) st.behavior = SB_REMOVED;
    else if (!strcmp(bh, "MergedWithPrevious")) st.behavior = SB_MERGED_PREV;
    else if (!strcmp(bh, "MergedWithNext")) st.behavior = SB_MERGED_NEXT;
    else return hf_bad(e, path, "a Split pre_tokenizer's behavior %s is not supported (Isolated, Removed, MergedWithPrevious, MergedWithNext are)", bh);
    if (rx) {
      if (load_regex(path, rx, &st.rx, e)) return e->code;
    } else if (lit) { /* a literal: every character escaped */
      size_t n = strlen(lit);
      char *q = rl_xmalloc(2 * n + 1), *w = q;
      for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)lit[i];
        if (c < 128 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) *w++ = '\\';
        *w++ = (char)c;
      }
      *w = 0;
      int rc = load_regex(path, q, &st.rx, e);
      free(q);
      if (rc) return rc;
    } else return hf_bad(e, path, "a Split pre_tokenizer has no pattern (Regex or String)%s", NULL);
    return add_step(t, st);
  }
  return hf_bad(e, path,
                "pre_tokenizer %s is not supported: rlrun reads byte-level BPE tokenizers (a ByteLevel pre_tokenizer, "
                "optionally after Split or Digits), such as GPT-2's, Qwen's and Llama 3's; SentencePiece-style ones "
                "(Metaspace) are not",
                ty);
}

static int load_normalizer(tok_hf *t, const char *path, json_t *p, rl_err *e) {
  if (!p || json_is_null(p)) return 0;
  const char *ty = json_string_value(json_object_get(p, "type"));
  if (ty && !strcmp(ty, "Sequence")) {
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(p, "normalizers"), i, x) if (load_normalizer(t, path, x, e)) return e->code;
    return 0;
  }
  if (ty && !strcmp(ty, "NFC")) return t->nfc = 1, 0;
  return hf_bad(e, path, "normalizer %s is not supported (rlrun applies NFC or none)", ty ? ty : "(no type)");
}

/* tokenizer_config.json's bos/eos/pad token (which: 0, 1, 2): a string,
 * {"content": …} or null; one that names no token is -1 with the problem kept
 * (tokenizer_hf_config_problem: the recipe may name the token itself) */
static int32_t config_token(tok_hf *t, json_t *cfg, int which, const char *path, const char *cfg_path) {
  static const char *const key[3] = {"bos_token", "eos_token", "pad_token"};
  json_t *v = json_object_get(cfg, key[which]);
  if (json_is_object(v)) v = json_object_get(v, "content");
  const char *s = json_string_value(v);
  if (!s) return -1;
  for (int k = 0; k < t->nadded; k++)
    if (!strcmp(t->added[k].content, s)) return t->added[k].id;
  int32_t id = map_get(t, s, strlen(s));
  if (id < 0) {
    size_t n = strlen(cfg_path) + strlen(path) + strlen(s) + 64;
    t->cfg_bad[which] = rl_xmalloc(n);
    snprintf(t->cfg_bad[which], n, "%s: %s \"%s\" is no token of %s", cfg_path, key[which], s, path);
  }
  return id;
}

const char *tokenizer_hf_config_problem(const tokenizer *base, int which) {
  if (strcmp(base->ops->kind, "hf") || which < 0 || which > 2) return NULL;
  return ((const tok_hf *)base)->cfg_bad[which];
}

static int cmp_added(const void *a, const void *b) {
  const added_tok *x = a, *y = b;
  return x->len != y->len ? (x->len < y->len ? 1 : -1) : (x->id > y->id) - (x->id < y->id);
}

int tokenizer_hf_new(const char *path, tokenizer **out, rl_err *e) {
  *out = NULL;
  char *text = NULL;
  size_t tlen = 0;
  if (rl_read_file_max(path, (size_t)512 << 20, &text, &tlen, e)) return rl_err_prefix(e, "tokenizer.json: "), e->code;
  int rc = tokenizer_hf_new_mem(text, tlen, path, 1, out, e);
  free(text);
  return rc;
}

int tokenizer_hf_new_mem(const char *text, size_t tlen, const char *path, int with_config, tokenizer **out, rl_err *e) {
  *out = NULL;
  json_error_t je;
  json_t *root = json_loadb(text, tlen, 0, &je);
  if (!root)
    return rl_errf(e, RL_EXIT_USAGE, "tokenizer.json %s:%d:%d: %s (not valid JSON)", path, je.line, je.column, je.text);
  tok_hf *t = rl_xcalloc(1, sizeof *t);
  t->base.ops = &tok_hf_ops;
  t->base.bos = t->base.eos = t->base.pad = -1;
  t->unk = -1;
  int rc = 0, bytelevel = 0;
  json_t *model = json_object_get(root, "model");
  const char *mt = json_string_value(json_object_get(model, "type"));
  json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
  json_t *dropout = json_object_get(model, "dropout");
  const char *pre = json_string_value(json_object_get(model, "continuing_subword_prefix"));
  const char *suf = json_string_value(json_object_get(model, "end_of_word_suffix"));
  if (!json_is_object(model)) rc = hf_bad(e, path, "no \"model\" object: is this a Hugging Face tokenizer.json?%s", NULL);
  else if (mt && strcmp(mt, "BPE"))
    rc = hf_bad(e, path, "model type %s is not supported: rlrun reads byte-level BPE tokenizers", mt);
  else if (!json_is_object(vocab) || (merges && !json_is_array(merges)))
    rc = hf_bad(e, path, "the BPE model needs a \"vocab\" object and a \"merges\" list%s", NULL);
  else if (json_number_value(dropout) > 0) rc = hf_bad(e, path, "BPE dropout is not supported (set \"dropout\": null)%s", NULL);
  else if (json_is_true(json_object_get(model, "byte_fallback")))
    rc = hf_bad(e, path, "byte_fallback (a SentencePiece-style BPE) is not supported%s", NULL);
  else if ((pre && *pre) || (suf && *suf))
    rc = hf_bad(e, path, "subword prefixes/suffixes (continuing_subword_prefix, end_of_word_suffix) are not supported%s", NULL);
  if (!rc) rc = load_normalizer(t, path, json_object_get(root, "normalizer"), e);
  if (!rc) rc = load_pre(t, path, json_object_get(root, "pre_tokenizer"), &bytelevel, e);
  if (!rc && !bytelevel)
    rc = hf_bad(e, path, "it is not byte-level (no ByteLevel step in its pre_tokenizer): rlrun reads byte-level BPE "
                         "tokenizers (GPT-2, Qwen, Llama 3)%s", NULL);
  if (!rc) { /* decode is the concatenation of token bytes: ByteLevel's decoder, nothing after it */
    const char *dt = json_string_value(json_object_get(json_object_get(root, "decoder"), "type"));
    if (!dt || strcmp(dt, "ByteLevel"))
      rc = hf_bad(e, path, "decoder %s is not supported: rlrun decodes as ByteLevel's decoder does (the bytes of the "
                           "tokens, joined)", dt ? dt : "null");
  }
  t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
  json_t *added = json_object_get(root, "added_tokens");
  /* the vocabulary size: every id of vocab and added_tokens */
  int64_t V = 0;
  const char *key;
  json_t *val;
  if (!rc) {
    json_object_foreach(vocab, key, val) {
      json_int_t id = json_integer_value(val);
      if (!json_is_integer(val) || id < 0 || id >= (1 << 24)) {
        rc = rl_errf(e, RL_EXIT_USAGE, "tokenizer.json %s: vocab entry \"%.60s\" has id %s: ids are integers in [0, 2^24)",
                     path, key, json_is_integer(val) ? "out of range" : "that is not an integer");
        break;
      }
      if (id + 1 > V) V = id + 1;
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
      json_int_t id = json_integer_value(json_object_get(a, "id"));
      if (!json_is_string(json_object_get(a, "content")) || id < 0 || id >= (1 << 24)) {
        if (!rc) rc = rl_errf(e, RL_EXIT_USAGE, "tokenizer.json %s: added_tokens[%zu] needs an \"id\" in [0, 2^24) and a \"content\" string", path, i);
        break;
      }
      if (id + 1 > V) V = id + 1;
    }
  }
  if (!rc && !V) rc = hf_bad(e, path, "the vocabulary is empty%s", NULL);
  if (!rc) {
    t->base.vocab = V;
    t->bytes = rl_xcalloc((size_t)V, sizeof *t->bytes);
    t->blen = rl_xcalloc((size_t)V, sizeof *t->blen);
    t->special = rl_xcalloc((size_t)V, 1);
    size_t cap = 16;
    while (cap < 2 * (size_t)json_object_size(vocab) + 2) cap *= 2;
    t->vocab.slot = rl_xcalloc(cap, sizeof *t->vocab.slot), t->vocab.mask = cap - 1;
    /* added tokens may sit in vocab too, under their own text (DeepSeek's
     * "<｜begin▁of▁sentence｜>"): those entries are not byte-level strings
     * and take no part in BPE */
    uint8_t *is_added = rl_xcalloc((size_t)V, 1);
    size_t ai;
    json_t *aj;
    json_array_foreach(added, ai, aj) is_added[json_integer_value(json_object_get(aj, "id"))] = 1;
    json_object_foreach(vocab, key, val) {
      int32_t id = (int32_t)json_integer_value(val);
      if (t->bytes[id]) {
        rc = rl_errf(e, RL_EXIT_USAGE, "tokenizer.json %s: id %d appears twice in vocab", path, id);
        break;
      }
      const int not_bl = bytelevel_decode(key, &t->bytes[id], &t->blen[id]); /* UTF-8 (an added token's) when not */
      if (not_bl && is_added[id]) {
        t->bytes[id] = rl_xstrdup(key), t->blen[id] = (uint32_t)strlen(key);
        continue;
      }
      if (not_bl) {
        rc = rl_errf(e, RL_EXIT_USAGE,
                     "tokenizer.json %s: vocab entry \"%.60s\" (id %d) is not a byte-level string (GPT-2's byte "
                     "alphabet): rlrun reads byte-level BPE tokenizers", path, key, id);
        break;
      }
      if (map_get(t, t->bytes[id], t->blen[id]) >= 0) {
        rc = rl_errf(e, RL_EXIT_USAGE, "tokenizer.json %s: vocab entry \"%.60s\" appears twice", path, key);
        break;
      }
      map_put(t, id);
    }
    free(is_added);
  }
  for (int b = 0; b < 256 && !rc; b++) {
    char c = (char)b;
    t->byte_id[b] = map_get(t, &c, 1);
  }
  const char *unk = json_string_value(json_object_get(model, "unk_token"));
  if (!rc && unk) t->unk = map_get(t, unk, strlen(unk)); /* unk's name is plain ASCII: its own bytes */
  /* merges: "a b" strings (older files) or ["a", "b"] pairs */
  if (!rc && merges) {
    size_t nm = json_array_size(merges), cap = 16, i;
    while (cap < 2 * nm + 2) cap *= 2;
    t->merges = rl_xcalloc(cap, sizeof *t->merges), t->merge_mask = cap - 1;
    json_t *m;
    json_array_foreach(merges, i, m) {
      char *part[2] = {NULL, NULL}, *joined;
      const char *s = json_string_value(m);
      if (s) {
        const char *sp = strchr(s, ' ');
        if (sp && !strchr(sp + 1, ' ')) part[0] = strndup(s, (size_t)(sp - s)), part[1] = rl_xstrdup(sp + 1);
      } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                 json_is_string(json_array_get(m, 1)))
        part[0] = rl_xstrdup(json_string_value(json_array_get(m, 0))), part[1] = rl_xstrdup(json_string_value(json_array_get(m, 1)));
      int32_t a = -1, b = -1, ab = -1;
      if (part[0] && part[1]) {
        char *ba, *bb;
        uint32_t la, lb;
        if (!bytelevel_decode(part[0], &ba, &la)) {
          if (!bytelevel_decode(part[1], &bb, &lb)) {
            a = map_get(t, ba, la), b = map_get(t, bb, lb);
            joined = rl_xmalloc((size_t)la + lb + 1);
            memcpy(joined, ba, la), memcpy(joined + la, bb, lb);
            ab = map_get(t, joined, (size_t)la + lb);
            free(joined), free(bb);
          }
          free(ba);
        }
      }
      if (a < 0 || b < 0 || ab < 0) {
        char shown[120];
        char *d = json_dumps(m, JSON_ENCODE_ANY);
        snprintf(shown, sizeof shown, "%s", d ? d : "?");
        free(d);
        rc = rl_errf(e, RL_EXIT_USAGE,
                     "tokenizer.json %s: merges[%zu] %s %s", path, i, shown,
                     !part[0] || !part[1] ? "is neither \"a b\" nor [\"a\", \"b\"]"
                                          : "names a token (or makes one) that is not in vocab");
        free(part[0]), free(part[1]);
        break;
      }
      free(part[0]), free(part[1]);
      uint64_t k = merge_key(a, b);
      size_t s2 = merge_slot(k) & t->merge_mask;
      while (t->merges[s2].key && t->merges[s2].key != k) s2 = (s2 + 1) & t->merge_mask;
      if (!t->merges[s2].key) t->merges[s2] = (tok_merge){k, (int32_t)i, ab}; /* a repeated pair keeps its first rank */
    }
  }
  /* added tokens */
  if (!rc) {
    size_t i;
    json_t *a;
    t->added = rl_xcalloc(json_array_size(added) + 1, sizeof *t->added);
    json_array_foreach(added, i, a) {
      const char *c = json_string_value(json_object_get(a, "content"));
      int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
      added_tok *x = &t->added[t->nadded++];
      x->special = json_is_true(json_object_get(a, "special"));
      x->lstrip = json_is_true(json_object_get(a, "lstrip")), x->rstrip = json_is_true(json_object_get(a, "rstrip"));
      x->single_word = json_is_true(json_object_get(a, "single_word"));
      json_t *nj = json_object_get(a, "normalized"); /* `tokenizers`' default: special ones are not */
      x->normalized = nj ? json_is_true(nj) : !x->special;
      t->n_normalized += x->normalized;
      size_t cl = strlen(c);
      if (!(x->normalized && t->nfc && !uni_nfc(c, cl, &x->content, &x->len))) /* matched (and shown) as NFC makes it */
        x->content = rl_xstrdup(c), x->len = cl;
      if (x->len) t->added_first[(unsigned char)x->content[0]] = 1;
      x->id = id;
      /* an added token outside the BPE vocabulary: its bytes are what ByteLevel's
       * decoder makes of its text — the bytes its characters stand for when all
       * of them are byte-level characters ("<|im_end|>"), else its UTF-8 */
      if (!t->bytes[id] && bytelevel_decode(x->content, &t->bytes[id], &t->blen[id]))
        t->bytes[id] = rl_xstrdup(x->content), t->blen[id] = (uint32_t)x->len;
      t->special[id] = x->special;
    }
    qsort(t->added, (size_t)t->nadded, sizeof *t->added, cmp_added);
    /* a token holding a 0x00 byte (byte-level id of "\0" and merges of it) is
     * shown with U+FFFD for it: decoded text is a C string, and a NUL would cut
     * everything after it off */
    for (int64_t id = 0; id < V; id++) {
      if (!t->bytes[id] || !memchr(t->bytes[id], 0, t->blen[id])) continue;
      if (!t->shown) t->shown = rl_xcalloc((size_t)V, sizeof *t->shown);
      char *w = t->shown[id] = rl_xmalloc(3 * (size_t)t->blen[id] + 1);
      for (uint32_t k = 0; k < t->blen[id]; k++)
        if (t->bytes[id][k]) *w++ = t->bytes[id][k];
        else memcpy(w, "\xEF\xBF\xBD", 3), w += 3;
      *w = 0;
    }
  }
  json_decref(root);
  /* bos / eos / pad: tokenizer_config.json beside tokenizer.json, when there is one */
  if (!rc && with_config) {
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path + 1) : 0;
    char *cfg_path = rl_xmalloc(dl + 32);
    memcpy(cfg_path, path, dl);
    strcpy(cfg_path + dl, "tokenizer_config.json");
    struct stat st;
    if (stat(cfg_path, &st) == 0) {
      char *ctext = NULL;
      size_t clen = 0;
      json_t *cfg = NULL;
      if (rl_read_file(cfg_path, &ctext, &clen, e)) rc = e->code; /* not a regular file: said so */
      else if (!(cfg = json_loadb(ctext, clen, 0, &je)))
        rc = rl_errf(e, RL_EXIT_USAGE, "%s:%d:%d: %s (not valid JSON)", cfg_path, je.line, je.column, je.text);
      else {
        t->base.bos = config_token(t, cfg, 0, path, cfg_path);
        t->base.eos = config_token(t, cfg, 1, path, cfg_path);
        t->base.pad = config_token(t, cfg, 2, path, cfg_path);
        if (json_is_false(json_object_get(cfg, "add_bos_token"))) t->base.bos = -1; /* the model never saw one */
        json_decref(cfg);
      }
      free(ctext);
    }
    free(cfg_path);
  }
  if (rc) {
    tok_hf_destroy(&t->base);
    return rc;
  }
  *out = &t->base;
  return 0;
}
