/* pattern.c — string.find/match/gmatch/gsub for the sandbox: Lua 5.4 pattern
 * matching (reference manual §6.4.1) whose steps are charged to the call's
 * limits (pattern.h says how). Written from the manual and checked against
 * the stock library by tests/test_lua_pattern.c (a corpus and a fuzz, results and
 * error messages alike). */
#include "lua/pattern.h"
#include "lua/host_int.h"

#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define PAT_MAXCAPTURES 32 /* as stock Lua: "too many captures" past it */
#define PAT_MAXDEPTH 200   /* nested matcher frames before "pattern too complex" */
#define PAT_SHORT 48       /* patterns up to this length compile on the C stack */
#define PAT_UNFINISHED (-1)
#define PAT_POSITION (-2)

/* The byte classes, built once: one mask per byte, '.', and %a…%z with their
 * complements (the C library's ctype, as the stock matcher uses). */
static struct {
  pthread_once_t once;
  uint32_t byte[256][8];
  uint32_t any[8];
  uint32_t cls[26][2][8]; /* [letter]['A'-style complement] */
  uint8_t has_cls[26];    /* letters that name a class; %q is a literal q */
} T = {.once = PTHREAD_ONCE_INIT};

static int pat_ctype(int letter, int c) {
  switch (letter) {
  case 'a': return isalpha(c);
  case 'c': return iscntrl(c);
  case 'd': return isdigit(c);
  case 'g': return isgraph(c);
  case 'l': return islower(c);
  case 'p': return ispunct(c);
  case 's': return isspace(c);
  case 'u': return isupper(c);
  case 'w': return isalnum(c);
  case 'x': return isxdigit(c);
  case 'z': return c == 0; /* deprecated in the manual, still accepted by 5.4 */
  default: return -1;
  }
}

static void pat_tables_init(void) {
  for (int c = 0; c < 256; c++) T.byte[c][c >> 5] = 1u << (c & 31);
  memset(T.any, 0xff, sizeof T.any);
  for (int l = 'a'; l <= 'z'; l++) {
    if (pat_ctype(l, 0) < 0) continue;
    T.has_cls[l - 'a'] = 1;
    for (int c = 0; c < 256; c++) {
      int in = pat_ctype(l, c) != 0;
      T.cls[l - 'a'][!in][c >> 5] |= 1u << (c & 31);
    }
  }
}

static inline int pat_in(const uint32_t *set, unsigned char c) { return set[c >> 5] >> (c & 31) & 1; }

/* The mask of "%x": a class when x names one (complemented when x is upper
 * case), else the byte x itself ("%." is a dot, "%q" a q). */
static const uint32_t *pat_escape(unsigned char x) {
  int l = tolower(x);
  if (l >= 'a' && l <= 'z' && T.has_cls[l - 'a']) return T.cls[l - 'a'][isupper(x) != 0];
  return T.byte[x];
}

/* ------------------------------------------------------------------ reading a pattern */

enum pat_op {
  PAT_ONE,       /* one byte of `set`, repeated as `rep` says */
  PAT_OPEN,      /* "(": capture `a` starts */
  PAT_POS,       /* "()": capture `a` is the position */
  PAT_CLOSE,     /* ")": capture `a` ends */
  PAT_BACKREF,   /* "%1".."%9": capture `a`'s text again */
  PAT_BALANCE,   /* "%bxy": a = x, b = y */
  PAT_FRONTIER,  /* "%f[set]" */
  PAT_AT_END,    /* "$" as the last byte of the pattern */
  PAT_MALFORMED, /* what follows cannot be read: error `a` (capture index b) when reached */
  PAT_DONE       /* the end of the pattern: a match */
};

enum pat_err { PAT_ERR_PERCENT, PAT_ERR_BRACKET, PAT_ERR_FRONTIER, PAT_ERR_BALANCE, PAT_ERR_INDEX,
               PAT_ERR_CLOSE, PAT_ERR_TOO_MANY };

typedef struct pat_item {
  uint8_t op;
  uint8_t rep;         /* PAT_ONE: 0 (exactly once), '*', '+', '-' or '?' */
  uint8_t a, b;        /* see enum pat_op */
  int16_t lit;         /* PAT_ONE: the one byte the set holds, else -1 (memchr can skip) */
  const uint32_t *set; /* PAT_ONE, PAT_FRONTIER */
} pat_item;

typedef struct pat_prog {
  pat_item *item;      /* ends with PAT_DONE or PAT_MALFORMED */
  uint32_t (*sets)[8]; /* storage for the masks of "[...]" sets */
  int n, nsets;        /* counted, or filled when item != NULL */
  int ncap;            /* captures in the pattern: a match opens all of them */
} pat_prog;

/* Index of the ']' that closes the set opening at p[i], 0 when there is none.
 * A ']' right after "[" or "[^" belongs to the set, and "%]" does not close it. */
static size_t pat_set_end(const char *p, size_t lp, size_t i) {
  size_t j = i + 1;
  if (j < lp && p[j] == '^') j++;
  do {
    if (j >= lp) return 0;
    if (p[j++] == '%' && j < lp) j++;
  } while (j >= lp || p[j] != ']');
  return j;
}

/* The mask of the set p[open..close] ('[' … ']'): bytes, "x-y" ranges, "%x"
 * classes or escapes, complemented after a leading '^'. A '-' is a range only
 * with a byte on each side before the closing ']' ("[a-]" holds a and -). */
static void pat_set_build(uint32_t *set, const char *p, size_t open, size_t close) {
  size_t k = open;
  int neg = p[k + 1] == '^';
  memset(set, 0, 32);
  if (neg) k++;
  while (++k < close) {
    unsigned char c = (unsigned char)p[k];
    if (c == '%') {
      const uint32_t *cl = pat_escape((unsigned char)p[++k]);
      for (int w = 0; w < 8; w++) set[w] |= cl[w];
    } else if (p[k + 1] == '-' && k + 2 < close) {
      for (unsigned x = c; x <= (unsigned char)p[k + 2]; x++) set[x >> 5] |= 1u << (x & 31);
      k += 2;
    } else {
      set[c >> 5] |= 1u << (c & 31);
    }
  }
  if (neg)
    for (int w = 0; w < 8; w++) set[w] = ~set[w];
}

/* Read p into items (prog->item NULL: only count items and sets). Never
 * raises: an unreadable part ends the list with a PAT_MALFORMED item. */
static void pat_compile(pat_prog *g, const char *p, size_t lp) {
  uint8_t open[PAT_MAXCAPTURES]; /* capture k is open (not closed, not a position) */
  int level = 0;
  size_t i = 0;
  g->n = g->nsets = 0;
  for (;;) {
    pat_item it = {.op = PAT_DONE, .lit = -1};
    if (i >= lp) goto emit_last;
    unsigned char c = (unsigned char)p[i], d = i + 1 < lp ? (unsigned char)p[i + 1] : 0;
    if (c == '(') {
      if (level >= PAT_MAXCAPTURES) {
        it.op = PAT_MALFORMED, it.a = PAT_ERR_TOO_MANY;
        goto emit_last;
      }
      it.a = (uint8_t)level;
      if (i + 1 < lp && d == ')') it.op = PAT_POS, open[level++] = 0, i += 2;
      else it.op = PAT_OPEN, open[level++] = 1, i++;
    } else if (c == ')') {
      int k = level - 1;
      while (k >= 0 && !open[k]) k--;
      if (k < 0) {
        it.op = PAT_MALFORMED, it.a = PAT_ERR_CLOSE;
        goto emit_last;
      }
      open[k] = 0;
      it.op = PAT_CLOSE, it.a = (uint8_t)k, i++;
    } else if (c == '$' && i + 1 == lp) {
      it.op = PAT_AT_END, i++;
    } else if (c == '%' && i + 1 < lp && d == 'b') {
      if (i + 3 >= lp) {
        it.op = PAT_MALFORMED, it.a = PAT_ERR_BALANCE;
        goto emit_last;
      }
      it.op = PAT_BALANCE, it.a = (uint8_t)p[i + 2], it.b = (uint8_t)p[i + 3], i += 4;
    } else if (c == '%' && i + 1 < lp && d == 'f') {
      size_t e = i + 2 < lp && p[i + 2] == '[' ? pat_set_end(p, lp, i + 2) : 0;
      if (!e) {
        it.op = PAT_MALFORMED, it.a = i + 2 < lp && p[i + 2] == '[' ? PAT_ERR_BRACKET : PAT_ERR_FRONTIER;
        goto emit_last;
      }
      it.op = PAT_FRONTIER;
      if (g->item) pat_set_build(g->sets[g->nsets], p, i + 2, e), it.set = g->sets[g->nsets];
      g->nsets++;
      i = e + 1;
    } else if (c == '%' && i + 1 < lp && d >= '0' && d <= '9') {
      int l = d - '1';
      if (l < 0 || l >= level || open[l]) {
        it.op = PAT_MALFORMED, it.a = PAT_ERR_INDEX, it.b = (uint8_t)(l + 1);
        goto emit_last;
      }
      it.op = PAT_BACKREF, it.a = (uint8_t)l, i += 2;
    } else {
      /* one byte of a class, maybe repeated */
      it.op = PAT_ONE;
      if (c == '%') {
        if (i + 1 >= lp) {
          it.op = PAT_MALFORMED, it.a = PAT_ERR_PERCENT;
          goto emit_last;
        }
        it.set = pat_escape(d);
        if (it.set == T.byte[d]) it.lit = d;
        i += 2;
      } else if (c == '[') {
        size_t e = pat_set_end(p, lp, i);
        if (!e) {
          it.op = PAT_MALFORMED, it.a = PAT_ERR_BRACKET;
          goto emit_last;
        }
        if (g->item) pat_set_build(g->sets[g->nsets], p, i, e), it.set = g->sets[g->nsets];
        g->nsets++;
        i = e + 1;
      } else {
        it.set = c == '.' ? T.any : T.byte[c];
        if (c != '.') it.lit = c;
        i++;
      }
      if (i < lp && (p[i] == '*' || p[i] == '+' || p[i] == '-' || p[i] == '?')) it.rep = (uint8_t)p[i++];
    }
    if (g->item) g->item[g->n] = it;
    g->n++;
    continue;
  emit_last:
    if (g->item) g->item[g->n] = it;
    g->n++;
    g->ncap = level;
    return;
  }
}

/* Compile p: into `small` (stack storage the caller owns) when it fits, else
 * into a userdata pushed on the stack (collected with it). */
typedef struct pat_small {
  pat_item item[PAT_SHORT + 1];
  uint32_t sets[PAT_SHORT / 3 + 1][8];
} pat_small;

static void pat_prepare(lua_State *L, pat_prog *g, const char *p, size_t lp, pat_small *small) {
  pthread_once(&T.once, pat_tables_init);
  if (small && lp <= PAT_SHORT) {
    g->item = small->item, g->sets = small->sets;
  } else {
    g->item = NULL;
    pat_compile(g, p, lp); /* count */
    char *mem = lua_newuserdatauv(L, (size_t)g->nsets * 32 + (size_t)g->n * sizeof(pat_item), 0);
    g->sets = (uint32_t(*)[8])mem; /* the 32-byte masks first keep both aligned */
    g->item = (pat_item *)(mem + (size_t)g->nsets * 32);
  }
  pat_compile(g, p, lp);
}

/* ------------------------------------------------------------------ matching */

/* One matching: the subject, the pattern, the captures of the attempt at hand. */
typedef struct pat_state {
  const char *src, *end; /* the subject */
  lua_State *L;
  const pat_prog *g;
  int depth;       /* matcher frames still allowed */
  int64_t ticks;   /* steps left before they are charged */
  struct {
    const char *at;
    ptrdiff_t len; /* or PAT_UNFINISHED, PAT_POSITION */
  } cap[PAT_MAXCAPTURES];
} pat_state;

static void pat_begin(pat_state *m, lua_State *L, const pat_prog *g, const char *s, size_t ls) {
  m->src = s, m->end = s + ls, m->L = L, m->g = g;
  m->ticks = PAT_CHARGE_EVERY;
}

/* Charge the steps so far; check the limits when `check` (raises on a hit). */
static void pat_settle(pat_state *m, int check) {
  int64_t used = PAT_CHARGE_EVERY - m->ticks;
  m->ticks = PAT_CHARGE_EVERY;
  if (used > 0 || check) lh_charge(m->L, used, check);
}

static inline void pat_steps(pat_state *m, int64_t n) {
  m->ticks -= n;
  if (m->ticks <= 0) pat_settle(m, 1);
}

static const char *pat_match(pat_state *m, const char *s, const pat_item *it);

/* x* and x+ : the longest run first, then one byte shorter each time. */
static const char *pat_greedy(pat_state *m, const char *s, const pat_item *it) {
  size_t n = 0, room = (size_t)(m->end - s);
  while (n < room && pat_in(it->set, (unsigned char)s[n])) n++;
  pat_steps(m, (int64_t)n);
  for (;;) {
    const char *r = pat_match(m, s + n, it + 1);
    if (r || n == 0) return r;
    n--;
  }
}

/* x- : the shortest run first, then one byte longer each time. */
static const char *pat_lazy(pat_state *m, const char *s, const pat_item *it) {
  for (;;) {
    const char *r = pat_match(m, s, it + 1);
    if (r) return r;
    if (s < m->end && pat_in(it->set, (unsigned char)*s)) s++;
    else return NULL;
  }
}

/* Raise the error of the part pat_compile could not read, in Lua's words. */
static void pat_malformed(pat_state *m, const pat_item *it) {
  static const char *const msg[] = {
      [PAT_ERR_PERCENT] = "malformed pattern (ends with '%%')",
      [PAT_ERR_BRACKET] = "malformed pattern (missing ']')",
      [PAT_ERR_FRONTIER] = "missing '[' after '%%f' in pattern",
      [PAT_ERR_BALANCE] = "malformed pattern (missing arguments to '%%b')",
      [PAT_ERR_INDEX] = "invalid capture index %%%d",
      [PAT_ERR_CLOSE] = "invalid pattern capture",
      [PAT_ERR_TOO_MANY] = "too many captures",
  };
  luaL_error(m->L, msg[it->a], (int)it->b);
}

/* Match items from `it` on at s: the end of the match, or NULL. Recurses
 * for each way a repetition may go on, and at captures — not needed there,
 * but the stock matcher does, so "pattern too complex" (past PAT_MAXDEPTH
 * frames) comes for the same patterns. A capture's slot needs no undoing
 * when an attempt fails: every path to a back-reference or to a match sets
 * it again, and pat_compile already refused references to open captures. */
static const char *pat_match(pat_state *m, const char *s, const pat_item *it) {
  if (m->depth == 0) luaL_error(m->L, "pattern too complex");
  m->depth--;
  if (--m->ticks <= 0) pat_settle(m, 1);
  for (;; it++) {
    switch (it->op) {
    case PAT_ONE: {
      int here = s < m->end && pat_in(it->set, (unsigned char)*s);
      if (!here) {
        if (it->rep == 0 || it->rep == '+') goto fail;
        continue; /* zero times */
      }
      if (it->rep == 0) {
        s++;
        continue;
      }
      if (it->rep == '?') {
        const char *r = pat_match(m, s + 1, it + 1);
        if (r) {
          s = r;
          goto done;
        }
        continue; /* zero times */
      }
      s = it->rep == '-' ? pat_lazy(m, s, it) : pat_greedy(m, it->rep == '+' ? s + 1 : s, it);
      goto done;
    }
    case PAT_OPEN:
    case PAT_POS:
      m->cap[it->a].at = s;
      m->cap[it->a].len = it->op == PAT_POS ? PAT_POSITION : PAT_UNFINISHED;
      s = pat_match(m, s, it + 1);
      goto done;
    case PAT_CLOSE:
      m->cap[it->a].len = s - m->cap[it->a].at;
      s = pat_match(m, s, it + 1);
      goto done;
    case PAT_BACKREF: {
      ptrdiff_t len = m->cap[it->a].len; /* never unfinished here: pat_compile checked */
      if (len == PAT_POSITION || m->end - s < len || memcmp(m->cap[it->a].at, s, (size_t)len))
        goto fail;
      pat_steps(m, len);
      s += len;
      continue;
    }
    case PAT_BALANCE: {
      if (s >= m->end || (unsigned char)*s != it->a) goto fail;
      int open = 1;
      const char *t = s + 1;
      for (; t < m->end; t++) {
        if ((unsigned char)*t == it->b) {
          if (--open == 0) break;
        } else if ((unsigned char)*t == it->a) {
          open++;
        }
      }
      pat_steps(m, t - s);
      if (t >= m->end) goto fail;
      s = t + 1;
      continue;
    }
    case PAT_FRONTIER: {
      /* the subject's edges count as '\0' */
      unsigned char before = s > m->src ? (unsigned char)s[-1] : 0;
      unsigned char after = s < m->end ? (unsigned char)*s : 0;
      if (pat_in(it->set, before) || !pat_in(it->set, after)) goto fail;
      continue;
    }
    case PAT_AT_END:
      if (s != m->end) goto fail;
      continue;
    case PAT_MALFORMED:
      pat_malformed(m, it);
      goto fail;
    case PAT_DONE:
      goto done;
    }
  }
fail:
  s = NULL;
done:
  m->depth++;
  return s;
}

/* One attempt at s: the end of the match or NULL. */
static const char *pat_try(pat_state *m, const char *s) {
  m->depth = PAT_MAXDEPTH;
  return pat_match(m, s, m->g->item);
}

/* The first position from s where an attempt can succeed, when the pattern
 * starts with a byte it must have ("x", "[set]", "%d+"): skipping the others
 * changes no result, and a literal first byte is found with memchr. */
static const char *pat_skip(pat_state *m, const char *s) {
  const pat_item *it = m->g->item;
  if (it->op != PAT_ONE || (it->rep != 0 && it->rep != '+') || s >= m->end) return s;
  const char *t;
  if (it->lit >= 0) {
    t = memchr(s, it->lit, (size_t)(m->end - s));
    if (!t) t = m->end;
  } else {
    for (t = s; t < m->end && !pat_in(it->set, (unsigned char)*t);) t++;
  }
  pat_steps(m, t - s);
  return t;
}

/* ------------------------------------------------------------------ captures */

/* Capture i of the last match s..e (with no captures, i == 0 is the whole
 * match): its text, or NULL after pushing its position (an integer). */
static const char *pat_capture(pat_state *m, int i, const char *s, const char *e, size_t *len) {
  if (i >= m->g->ncap) {
    if (i != 0) luaL_error(m->L, "invalid capture index %%%d", i + 1);
    *len = (size_t)(e - s);
    return s;
  }
  ptrdiff_t l = m->cap[i].len;
  if (l == PAT_UNFINISHED) luaL_error(m->L, "unfinished capture");
  if (l == PAT_POSITION) {
    lua_pushinteger(m->L, (lua_Integer)(m->cap[i].at - m->src) + 1);
    return NULL;
  }
  *len = (size_t)l;
  return m->cap[i].at;
}

static void pat_push_capture(pat_state *m, int i, const char *s, const char *e) {
  size_t len;
  const char *t = pat_capture(m, i, s, e, &len);
  if (t) lua_pushlstring(m->L, t, len);
}

/* Push every capture (the whole match when there are none and s is given). */
static int pat_push_captures(pat_state *m, const char *s, const char *e) {
  int n = m->g->ncap == 0 && s ? 1 : m->g->ncap;
  luaL_checkstack(m->L, n, "too many captures");
  for (int i = 0; i < n; i++) pat_push_capture(m, i, s, e);
  return n;
}

/* ------------------------------------------------------------------ the library functions */

/* A 1-based (or from-the-end negative) start as a 0-based offset; may be > len. */
static size_t pat_start(lua_Integer pos, size_t len) {
  if (pos > 0) return (size_t)pos - 1;
  if (pos == 0 || pos < -(lua_Integer)len) return 0;
  return len - (size_t)(-pos);
}

/* No byte that means something in a pattern: find searches it as plain text. */
static int pat_is_plain(const char *p, size_t lp) {
  for (size_t i = 0; i < lp; i++)
    if (memchr("^$*+?.([%-", p[i], 10)) return 0;
  return 1;
}

static int pat_find_aux(lua_State *L, int find) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = pat_start(luaL_optinteger(L, 3, 1), ls);
  if (init > ls) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || pat_is_plain(p, lp))) {
    const char *hit = memmem(s + init, ls - init, p, lp);
    if (!hit) {
      luaL_pushfail(L);
      return 1;
    }
    lua_pushinteger(L, (lua_Integer)(hit - s) + 1);
    lua_pushinteger(L, (lua_Integer)((size_t)(hit - s) + lp));
    return 2;
  }
  int anchor = lp > 0 && *p == '^';
  if (anchor) p++, lp--;
  pat_small small;
  pat_prog g;
  pat_prepare(L, &g, p, lp, &small);
  pat_state m;
  pat_begin(&m, L, &g, s, ls);
  const char *at = s + init;
  for (;;) {
    if (!anchor) at = pat_skip(&m, at);
    const char *e = pat_try(&m, at);
    if (e) {
      pat_settle(&m, 0);
      if (!find) return pat_push_captures(&m, at, e);
      lua_pushinteger(L, (lua_Integer)(at - s) + 1);
      lua_pushinteger(L, (lua_Integer)(e - s));
      return 2 + pat_push_captures(&m, NULL, NULL);
    }
    if (anchor || at >= m.end) break;
    at++;
  }
  pat_settle(&m, 0);
  luaL_pushfail(L);
  return 1;
}

static int pat_find(lua_State *L) { return pat_find_aux(L, 1); }
static int pat_match_fn(lua_State *L) { return pat_find_aux(L, 0); }

/* gmatch's iterator state: a userdata upvalue holding the compiled pattern
 * after this header. */
typedef struct pat_gmatch {
  size_t next;    /* where the next attempt starts (0-based; > len: done) */
  size_t last;    /* end of the previous match + 1 (0: none) */
  pat_prog g;
  pat_state m;
} pat_gmatch;

/* The iterator: the next match that does not end where the previous one
 * ended (5.4: "a*" on "baac" yields "", "aa" and the "" at the end, not
 * also a "" right after "aa"). */
static int pat_gmatch_next(lua_State *L) {
  pat_gmatch *gm = lua_touserdata(L, lua_upvalueindex(3));
  pat_state *m = &gm->m;
  m->L = L;
  size_t ls = (size_t)(m->end - m->src);
  while (gm->next <= ls) {
    const char *at = pat_skip(m, m->src + gm->next);
    const char *e = pat_try(m, at);
    if (e && (size_t)(e - m->src) + 1 != gm->last) {
      gm->next = (size_t)(e - m->src);
      gm->last = gm->next + 1;
      pat_settle(m, 0);
      return pat_push_captures(m, at, e);
    }
    gm->next = (size_t)(at - m->src) + 1;
  }
  pat_settle(m, 0);
  return 0;
}

static int pat_gmatch_fn(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = pat_start(luaL_optinteger(L, 3, 1), ls);
  lua_settop(L, 2); /* the subject and the pattern become upvalues: they stay alive */
  pthread_once(&T.once, pat_tables_init);
  pat_prog count = {0};
  pat_compile(&count, p, lp);
  size_t head = (sizeof(pat_gmatch) + 31) / 32 * 32;
  char *mem = lua_newuserdatauv(L, head + (size_t)count.nsets * 32 + (size_t)count.n * sizeof(pat_item), 0);
  pat_gmatch *gm = (pat_gmatch *)mem;
  gm->g.sets = (uint32_t(*)[8])(mem + head);
  gm->g.item = (pat_item *)(mem + head + (size_t)count.nsets * 32);
  pat_compile(&gm->g, p, lp);
  pat_begin(&gm->m, L, &gm->g, s, ls);
  gm->next = init > ls ? ls + 1 : init;
  gm->last = 0;
  lua_pushcclosure(L, pat_gmatch_next, 3);
  return 1;
}

/* Append the replacement string (argument 3) for the match s..e: "%0" the
 * match, "%1".."%9" a capture, "%%" a percent sign. */
static void pat_add_string(pat_state *m, luaL_Buffer *b, const char *s, const char *e) {
  size_t l;
  const char *r = lua_tolstring(m->L, 3, &l), *pct;
  while ((pct = memchr(r, '%', l)) != NULL) {
    luaL_addlstring(b, r, (size_t)(pct - r));
    char c = pct + 1 < r + l ? pct[1] : 0;
    if (c == '%') {
      luaL_addchar(b, '%');
    } else if (c == '0') {
      luaL_addlstring(b, s, (size_t)(e - s));
    } else if (c >= '1' && c <= '9') {
      size_t len;
      const char *t = pat_capture(m, c - '1', s, e, &len);
      if (t) luaL_addlstring(b, t, len);
      else luaL_addvalue(b); /* a position */
    } else {
      luaL_error(m->L, "invalid use of '%c' in replacement string", '%');
    }
    l -= (size_t)(pct + 2 - r);
    r = pct + 2;
  }
  luaL_addlstring(b, r, l);
}

/* Append the replacement for the match s..e; 0 when the match stays as it
 * was (a table or function answered false or nil). */
static int pat_add_value(pat_state *m, luaL_Buffer *b, const char *s, const char *e, int tr) {
  lua_State *L = m->L;
  if (tr == LUA_TFUNCTION) {
    lua_pushvalue(L, 3);
    int n = pat_push_captures(m, s, e);
    pat_settle(m, 0); /* the function's own instructions count from here */
    lua_call(L, n, 1);
  } else if (tr == LUA_TTABLE) {
    pat_push_capture(m, 0, s, e);
    lua_gettable(L, 3);
  } else {
    pat_add_string(m, b, s, e);
    return 1;
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
    return 0;
  }
  if (!lua_isstring(L, -1)) return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  luaL_addvalue(b);
  return 1;
}

static int pat_gsub(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  int tr = lua_type(L, 3);
  lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
  luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                   "string/function/table");
  int anchor = lp > 0 && *p == '^';
  if (anchor) p++, lp--;
  pat_small small;
  pat_prog g;
  pat_prepare(L, &g, p, lp, &small);
  pat_state m;
  pat_begin(&m, L, &g, s, ls);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  const char *at = s, *last = NULL;
  lua_Integer n = 0;
  int changed = 0;
  while (n < max) {
    if (!anchor) {
      const char *to = pat_skip(&m, at);
      luaL_addlstring(&b, at, (size_t)(to - at));
      at = to;
    }
    const char *e = pat_try(&m, at);
    if (e && e != last) {
      n++;
      changed |= pat_add_value(&m, &b, at, e, tr);
      at = last = e;
    } else if (at < m.end) {
      luaL_addchar(&b, *at++);
    } else {
      break;
    }
    if (anchor) break;
  }
  pat_settle(&m, 0);
  if (!changed) {
    lua_pushvalue(L, 1);
  } else {
    luaL_addlstring(&b, at, (size_t)(m.end - at));
    luaL_pushresult(&b);
  }
  lua_pushinteger(L, n);
  return 2;
}

void lh_pattern_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"find", pat_find}, {"match", pat_match_fn}, {"gmatch", pat_gmatch_fn},
                                 {"gsub", pat_gsub}, {NULL, NULL}};
  luaL_setfuncs(L, fns, 0);
}
