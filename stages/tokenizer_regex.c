/* tokenizer_regex.c — the regex matcher of the BPE tokenizer's pre-tokenizer
 * (contract in tokenizer_regex.h): parse → AST → a backtracking program. */
#include "stages/tokenizer_regex.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "stages/unicode.h"


enum { RX_CHAR, RX_CLASS, RX_ANY, RX_SPLIT, RX_JMP, RX_LOOK, RX_LEND, RX_MATCH };
typedef struct {
  uint8_t op, icase, neg; /* neg: RX_LOOK (?!…) */
  int32_t x, y;           /* SPLIT: try x, then y; JMP / LOOK: x (LOOK: where the body ends) */
  uint32_t cp;            /* CHAR: the code point; CLASS: the class index */
} rx_inst;

enum { CI_RANGE, CI_PROP, CI_SPACE, CI_DIGIT, CI_WORD };
typedef struct {
  uint8_t kind, neg;
  char major, minor; /* CI_PROP */
  uint32_t lo, hi;   /* CI_RANGE */
} rx_item;
typedef struct {
  int neg, n;
  rx_item *it;
} rx_class;

struct rx_prog {
  rx_inst *code;
  int n, cap;
  rx_class *cls;
  int ncls;
  int nullable; /* the whole pattern can match the empty string */
};

/* AST of a pattern (parse → compile) */
enum { N_EMPTY, N_CHAR, N_CLASS, N_ANY, N_CAT, N_ALT, N_REP, N_LOOK };
typedef struct rx_node {
  int type, icase, neg, min, max, greedy; /* REP: max −1 = unbounded */
  uint32_t cp;                            /* CHAR: code point; CLASS: class index */
  struct rx_node **kid;
  int nkid;
} rx_node;

typedef struct {
  const uint32_t *p;
  size_t n, i;
  rx_prog *prog;
  const char *err; /* the construct refused (static text) */
  size_t err_at;
} rx_parser;

static rx_node *rx_new(int type) {
  rx_node *n = rl_xcalloc(1, sizeof *n);
  n->type = type;
  return n;
}
static void rx_add(rx_node *n, rx_node *k) {
  n->kid = rl_xrealloc(n->kid, (size_t)(n->nkid + 1) * sizeof *n->kid);
  n->kid[n->nkid++] = k;
}
static void rx_free_node(rx_node *n) {
  if (!n) return;
  for (int i = 0; i < n->nkid; i++) rx_free_node(n->kid[i]);
  free(n->kid), free(n);
}
static int rx_fail(rx_parser *ps, const char *what) {
  if (!ps->err) ps->err = what, ps->err_at = ps->i;
  return -1;
}
static int rx_peek(rx_parser *ps) { return ps->i < ps->n ? (int)ps->p[ps->i] : -1; }

static int rx_hex(rx_parser *ps, int digits, uint32_t *v) { /* digits −1: {h…} */
  uint32_t x = 0;
  int k = 0, brace = digits < 0;
  if (brace) {
    if (rx_peek(ps) != '{') return rx_fail(ps, "\\x without hex digits");
    ps->i++;
  }
  while (ps->i < ps->n && (brace || k < digits)) {
    uint32_t c = ps->p[ps->i];
    int d = c >= '0' && c <= '9' ? (int)(c - '0') : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
            : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10) : -1;
    if (d < 0) break;
    x = x * 16 + (uint32_t)d, k++, ps->i++;
    if (x > 0x10FFFF) return rx_fail(ps, "a code point past U+10FFFF");
  }
  if (brace) {
    if (rx_peek(ps) != '}' || !k) return rx_fail(ps, "\\x{…} not closed");
    ps->i++;
  } else if (k != digits) return rx_fail(ps, "a short hex escape");
  *v = x;
  return 0;
}

/* After a backslash: a class item (\s, \p{L}, …) into *it and 1, or a literal
 * code point into *cp and 0; −1 on a refused escape. */
static int rx_escape(rx_parser *ps, rx_item *it, uint32_t *cp) {
  if (ps->i >= ps->n) return rx_fail(ps, "a pattern ending in a backslash");
  uint32_t c = ps->p[ps->i++];
  memset(it, 0, sizeof *it);
  switch (c) {
  case 'n': *cp = '\n'; return 0;
  case 'r': *cp = '\r'; return 0;
  case 't': *cp = '\t'; return 0;
  case 'f': *cp = '\f'; return 0;
  case 'v': *cp = '\v'; return 0;
  case 'a': *cp = 7; return 0;
  case 'e': *cp = 27; return 0;
  case '0': *cp = 0; return 0;
  case 'x': return rx_peek(ps) == '{' ? rx_hex(ps, -1, cp) : rx_hex(ps, 2, cp);
  case 'u': return rx_hex(ps, 4, cp);
  case 's': case 'S': it->kind = CI_SPACE, it->neg = c == 'S'; return 1;
  case 'd': case 'D': it->kind = CI_DIGIT, it->neg = c == 'D'; return 1;
  case 'w': case 'W': it->kind = CI_WORD, it->neg = c == 'W'; return 1;
  case 'p': case 'P': {
    it->kind = CI_PROP, it->neg = c == 'P';
    char name[32];
    size_t k = 0;
    if (rx_peek(ps) == '{') {
      ps->i++;
      if (rx_peek(ps) == '^') it->neg = !it->neg, ps->i++;
      while (ps->i < ps->n && ps->p[ps->i] != '}' && k < sizeof name - 1) name[k++] = (char)ps->p[ps->i++];
      if (rx_peek(ps) != '}') return rx_fail(ps, "\\p{…} not closed");
      ps->i++;
    } else if (ps->i < ps->n) name[k++] = (char)ps->p[ps->i++];
    name[k] = 0;
    if (uni_gc_parse(name, k, &it->major, &it->minor)) return rx_fail(ps, "a \\p{…} property other than a general category");
    return 1;
  }
  default:
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '1' && c <= '9'))
      return rx_fail(ps, "an escape it does not know (anchors, backreferences, \\b, \\h, …)");
    *cp = c; /* an escaped punctuation character stands for itself */
    return 0;
  }
}

static int rx_new_class(rx_prog *g) {
  g->cls = rl_xrealloc(g->cls, (size_t)(g->ncls + 1) * sizeof *g->cls);
  memset(&g->cls[g->ncls], 0, sizeof g->cls[g->ncls]);
  return g->ncls++;
}
static void rx_class_add(rx_class *c, rx_item it) {
  c->it = rl_xrealloc(c->it, (size_t)(c->n + 1) * sizeof *c->it);
  c->it[c->n++] = it;
}

static rx_node *rx_parse_class(rx_parser *ps, int icase) { /* after '[' */
  int ci = rx_new_class(ps->prog);
  rx_class *c = &ps->prog->cls[ci];
  if (rx_peek(ps) == '^') c->neg = 1, ps->i++;
  int first = 1;
  for (;;) {
    if (ps->i >= ps->n) return rx_fail(ps, "a class '[' not closed"), NULL;
    uint32_t ch = ps->p[ps->i];
    if (ch == ']' && !first) {
      ps->i++;
      break;
    }
    first = 0;
    if (ch == '[') return rx_fail(ps, "nested classes or class operations"), NULL;
    if (ch == '&' && ps->i + 1 < ps->n && ps->p[ps->i + 1] == '&') return rx_fail(ps, "class intersection (&&)"), NULL;
    rx_item it;
    uint32_t lo;
    ps->i++;
    if (ch == '\\') {
      int k = rx_escape(ps, &it, &lo);
      if (k < 0) return NULL;
      c = &ps->prog->cls[ci];
      if (k == 1) {
        rx_class_add(c, it);
        continue;
      }
    } else lo = ch;
    uint32_t hi = lo;
    if (rx_peek(ps) == '-' && ps->i + 1 < ps->n && ps->p[ps->i + 1] != ']') {
      ps->i++;
      uint32_t h = ps->p[ps->i++];
      if (h == '\\') {
        if (rx_escape(ps, &it, &h) != 0) return rx_fail(ps, "a range ending in a class escape"), NULL;
      }
      if (h < lo) return rx_fail(ps, "a range out of order"), NULL;
      hi = h;
    }
    rx_class_add(&ps->prog->cls[ci], (rx_item){.kind = CI_RANGE, .lo = lo, .hi = hi});
    c = &ps->prog->cls[ci];
  }
  rx_node *n = rx_new(N_CLASS);
  n->cp = (uint32_t)ci, n->icase = icase;
  return n;
}

static rx_node *rx_parse_alt(rx_parser *ps, int icase);

static rx_node *rx_parse_atom(rx_parser *ps, int icase) {
  uint32_t c = ps->p[ps->i++];
  if (c == '(') {
    rx_node *body, *look = NULL;
    int ic = icase;
    if (rx_peek(ps) == '?') {
      ps->i++;
      int k = rx_peek(ps);
      if (k == ':') ps->i++;
      else if (k == '=' || k == '!') {
        ps->i++;
        look = rx_new(N_LOOK);
        look->neg = k == '!';
      } else if (k == 'i' && ps->i + 1 < ps->n && ps->p[ps->i + 1] == ':') ps->i += 2, ic = 1;
      else return rx_fail(ps, "a group kind other than (?:…), (?i:…), (?=…), (?!…) (lookbehind, inline flags, names)"), NULL;
    }
    body = rx_parse_alt(ps, ic);
    if (!body) {
      free(look);
      return NULL;
    }
    if (rx_peek(ps) != ')') {
      rx_free_node(body), free(look);
      return rx_fail(ps, "a group '(' not closed"), NULL;
    }
    ps->i++;
    if (look) rx_add(look, body), body = look;
    return body;
  }
  if (c == '[') return rx_parse_class(ps, icase);
  if (c == '.') return rx_new(N_ANY);
  if (c == '^' || c == '$') return rx_fail(ps, "anchors (^, $)"), NULL;
  if (c == ')' || c == '*' || c == '+' || c == '?') return ps->i--, rx_fail(ps, "a quantifier or ')' with nothing before it"), NULL;
  uint32_t cp = c;
  if (c == '\\') {
    rx_item it;
    int k = rx_escape(ps, &it, &cp);
    if (k < 0) return NULL;
    if (k == 1) {
      int ci = rx_new_class(ps->prog);
      rx_class_add(&ps->prog->cls[ci], it);
      rx_node *n = rx_new(N_CLASS);
      n->cp = (uint32_t)ci, n->icase = icase;
      return n;
    }
  }
  rx_node *n = rx_new(N_CHAR);
  n->cp = cp, n->icase = icase;
  return n;
}

static int rx_number(rx_parser *ps, int *v) {
  int k = 0, x = 0;
  while (ps->i < ps->n && ps->p[ps->i] >= '0' && ps->p[ps->i] <= '9' && x < 100000) x = x * 10 + (int)(ps->p[ps->i++] - '0'), k++;
  *v = x;
  return k;
}

static rx_node *rx_parse_cat(rx_parser *ps, int icase) {
  rx_node *cat = rx_new(N_CAT);
  while (ps->i < ps->n && ps->p[ps->i] != '|' && ps->p[ps->i] != ')') {
    rx_node *a = rx_parse_atom(ps, icase);
    if (!a) {
      rx_free_node(cat);
      return NULL;
    }
    int q = rx_peek(ps), min = 1, max = 1;
    if (q == '?') min = 0, max = 1, ps->i++;
    else if (q == '*') min = 0, max = -1, ps->i++;
    else if (q == '+') min = 1, max = -1, ps->i++;
    else if (q == '{') { /* {n} {n,} {n,m} {,m} (Ruby syntax: 0 to m); anything else is a literal '{' */
      size_t at = ps->i++;
      int lo = 0, hi = -1, comma = 0;
      const int has_lo = rx_number(ps, &lo) > 0;
      if (rx_peek(ps) == ',') {
        ps->i++, comma = 1;
        if (!rx_number(ps, &hi)) hi = -1;
      } else hi = lo;
      if ((has_lo || (comma && hi >= 0)) && rx_peek(ps) == '}') {
        ps->i++;
        min = lo, max = hi;
        if ((max >= 0 && max < min) || min > 1000 || max > 1000) {
          rx_free_node(a), rx_free_node(cat);
          return rx_fail(ps, "a counted repeat {n,m} with m < n or past 1000"), NULL;
        }
      } else {
        ps->i = at;
        q = 0;
      }
    } else q = 0;
    if (q) {
      rx_node *r = rx_new(N_REP);
      r->min = min, r->max = max, r->greedy = 1;
      if (rx_peek(ps) == '?') r->greedy = 0, ps->i++;
      else if (rx_peek(ps) == '+') {
        rx_free_node(a), rx_free_node(r), rx_free_node(cat);
        return rx_fail(ps, "possessive quantifiers (*+, ++, ?+)"), NULL;
      }
      if (a->type == N_LOOK) {
        rx_free_node(a), rx_free_node(r), rx_free_node(cat);
        return rx_fail(ps, "a quantified lookahead"), NULL;
      }
      rx_add(r, a), a = r;
    }
    rx_add(cat, a);
  }
  return cat;
}

static rx_node *rx_parse_alt(rx_parser *ps, int icase) {
  rx_node *first = rx_parse_cat(ps, icase);
  if (!first || rx_peek(ps) != '|') return first;
  rx_node *alt = rx_new(N_ALT);
  rx_add(alt, first);
  while (rx_peek(ps) == '|') {
    ps->i++;
    rx_node *b = rx_parse_cat(ps, icase);
    if (!b) {
      rx_free_node(alt);
      return NULL;
    }
    rx_add(alt, b);
  }
  return alt;
}

/* 1 when n can match the empty string (a loop over it would not advance) */
static int rx_nullable(const rx_node *n) {
  switch (n->type) {
  case N_EMPTY: case N_LOOK: return 1;
  case N_CHAR: case N_CLASS: case N_ANY: return 0;
  case N_REP: return n->min == 0 || rx_nullable(n->kid[0]);
  case N_CAT:
    for (int i = 0; i < n->nkid; i++)
      if (!rx_nullable(n->kid[i])) return 0;
    return 1;
  default:
    for (int i = 0; i < n->nkid; i++)
      if (rx_nullable(n->kid[i])) return 1;
    return 0;
  }
}

static int rx_emit(rx_prog *g, rx_inst in) {
  if (g->n == g->cap) g->cap = g->cap ? 2 * g->cap : 64, g->code = rl_xrealloc(g->code, (size_t)g->cap * sizeof *g->code);
  g->code[g->n] = in;
  return g->n++;
}

static int rx_compile(rx_prog *g, const rx_node *n) {
  switch (n->type) {
  case N_EMPTY: return 0;
  case N_CHAR: rx_emit(g, (rx_inst){.op = RX_CHAR, .icase = (uint8_t)n->icase, .cp = n->icase ? uni_fold(n->cp) : n->cp}); return 0;
  case N_CLASS: rx_emit(g, (rx_inst){.op = RX_CLASS, .icase = (uint8_t)n->icase, .cp = n->cp}); return 0;
  case N_ANY: rx_emit(g, (rx_inst){.op = RX_ANY}); return 0;
  case N_CAT:
    for (int i = 0; i < n->nkid; i++)
      if (rx_compile(g, n->kid[i])) return -1;
    return 0;
  case N_ALT: {
    int *jumps = rl_xmalloc((size_t)n->nkid * sizeof *jumps);
    for (int i = 0; i < n->nkid; i++) {
      int split = -1;
      if (i + 1 < n->nkid) split = rx_emit(g, (rx_inst){.op = RX_SPLIT});
      if (split >= 0) g->code[split].x = g->n;
      if (rx_compile(g, n->kid[i])) return free(jumps), -1;
      jumps[i] = i + 1 < n->nkid ? rx_emit(g, (rx_inst){.op = RX_JMP}) : -1;
      if (split >= 0) g->code[split].y = g->n;
    }
    for (int i = 0; i < n->nkid; i++)
      if (jumps[i] >= 0) g->code[jumps[i]].x = g->n;
    free(jumps);
    return 0;
  }
  case N_LOOK: {
    int look = rx_emit(g, (rx_inst){.op = RX_LOOK, .neg = (uint8_t)n->neg});
    if (rx_compile(g, n->kid[0])) return -1;
    rx_emit(g, (rx_inst){.op = RX_LEND});
    g->code[look].x = g->n;
    return 0;
  }
  case N_REP: {
    const rx_node *k = n->kid[0];
    if (n->max != n->min && rx_nullable(k)) return -1; /* a loop that may not advance */
    for (int i = 0; i < n->min; i++)
      if (rx_compile(g, k)) return -1;
    if (n->max < 0) { /* L0: SPLIT body, out; body; JMP L0 */
      int l0 = rx_emit(g, (rx_inst){.op = RX_SPLIT});
      int body = g->n;
      if (rx_compile(g, k)) return -1;
      rx_emit(g, (rx_inst){.op = RX_JMP, .x = l0});
      g->code[l0].x = n->greedy ? body : g->n, g->code[l0].y = n->greedy ? g->n : body;
      return 0;
    }
    int nopt = n->max - n->min, *splits = rl_xmalloc((size_t)(nopt ? nopt : 1) * sizeof *splits);
    for (int i = 0; i < nopt; i++) { /* SPLIT body, end; body … (every optional copy may end the repeat) */
      splits[i] = rx_emit(g, (rx_inst){.op = RX_SPLIT});
      g->code[splits[i]].x = g->n;
      if (rx_compile(g, k)) return free(splits), -1;
    }
    for (int i = 0; i < nopt; i++) {
      const int body = splits[i] + 1;
      g->code[splits[i]].x = n->greedy ? body : g->n, g->code[splits[i]].y = n->greedy ? g->n : body;
    }
    free(splits);
    return 0;
  }
  }
  return -1;
}

static int rx_item_has(const rx_item *it, uint32_t c) {
  int in;
  switch (it->kind) {
  case CI_RANGE: return c >= it->lo && c <= it->hi;
  case CI_PROP: in = uni_gc_in(c, it->major, it->minor); break;
  case CI_SPACE: in = uni_is_space(c); break;
  case CI_DIGIT: in = uni_gc_in(c, 'N', 'd'); break;
  default: /* \w: letters, marks, decimal digits, connector punctuation (Oniguruma's Unicode \w) */
    in = uni_gc_in(c, 'L', 0) || uni_gc_in(c, 'M', 0) || uni_gc_in(c, 'N', 'd') || uni_gc_in(c, 'P', 'c');
  }
  return in != it->neg;
}
static int rx_class_has1(const rx_class *k, uint32_t c) {
  for (int i = 0; i < k->n; i++)
    if (rx_item_has(&k->it[i], c)) return 1;
  return 0;
}
static int rx_class_has(const rx_class *k, uint32_t c, int icase) {
  int in = rx_class_has1(k, c);
  if (!in && icase) { /* a case variant in the class: c's folding, or an ASCII letter's other case */
    uint32_t f = uni_fold(c);
    in = (f != c && rx_class_has1(k, f)) || (c < 128 && ((c | 32) >= 'a' && (c | 32) <= 'z') && rx_class_has1(k, c ^ 32));
  }
  return in != k->neg;
}

typedef struct {
  int pc;
  size_t pos;
} rx_frame;

/* Depth-first from (pc, pos) until MATCH (or, in a lookahead's body, LEND):
 * 1 and *end, 0 when nothing matches, −1 when the step budget ran out. */
static int rx_run(const rx_prog *g, int pc0, const uint32_t *s, size_t n, size_t pos0, size_t *end, long *budget) {
  size_t cap = 32, top = 0;
  rx_frame *st = rl_xmalloc(cap * sizeof *st);
  st[top++] = (rx_frame){pc0, pos0};
  int rc = 0;
  while (top && !rc) {
    rx_frame f = st[--top];
    int pc = f.pc;
    size_t pos = f.pos;
    for (;;) {
      if (--*budget < 0) {
        rc = -1;
        break;
      }
      const rx_inst *in = &g->code[pc];
      if (in->op == RX_CHAR) {
        if (pos < n && (in->icase ? uni_fold(s[pos]) == in->cp : s[pos] == in->cp)) pc++, pos++;
        else break;
      } else if (in->op == RX_CLASS) {
        if (pos < n && rx_class_has(&g->cls[in->cp], s[pos], in->icase)) pc++, pos++;
        else break;
      } else if (in->op == RX_ANY) {
        if (pos < n && s[pos] != '\n') pc++, pos++;
        else break;
      } else if (in->op == RX_SPLIT) {
        if (top == cap) cap *= 2, st = rl_xrealloc(st, cap * sizeof *st);
        st[top++] = (rx_frame){in->y, pos};
        pc = in->x;
      } else if (in->op == RX_JMP) pc = in->x;
      else if (in->op == RX_LOOK) {
        size_t e2;
        int r = rx_run(g, pc + 1, s, n, pos, &e2, budget);
        if (r < 0) {
          rc = -1;
          break;
        }
        if ((r == 1) != in->neg) pc = in->x;
        else break;
      } else { /* MATCH, LEND */
        *end = pos;
        rc = 1;
        break;
      }
    }
  }
  free(st);
  return rc;
}

void rx_prog_free(rx_prog *g) {
  if (!g) return;
  for (int i = 0; i < g->ncls; i++) free(g->cls[i].it);
  free(g->cls), free(g->code), free(g);
}

rx_prog *rx_compile_pattern(const char *pat, const char **why, size_t *at) {
  size_t len = strlen(pat), i = 0, n = 0;
  uint32_t *cps = rl_xmalloc((len + 1) * sizeof *cps), cp;
  while (i < len) {
    if (uni_utf8_next(pat, len, &i, &cp)) {
      free(cps);
      *why = "invalid UTF-8", *at = n;
      return NULL;
    }
    cps[n++] = cp;
  }
  rx_prog *g = rl_xcalloc(1, sizeof *g);
  rx_parser ps = {cps, n, 0, g, NULL, 0};
  rx_node *root = rx_parse_alt(&ps, 0);
  if (root && ps.i < n) rx_fail(&ps, "an unmatched ')'");
  if (root && !ps.err && rx_compile(g, root)) ps.err = "a repeat of something that can match nothing ((a?)*)", ps.err_at = 0;
  if (root && !ps.err) g->nullable = rx_nullable(root);
  rx_free_node(root);
  free(cps);
  if (ps.err) {
    *why = ps.err, *at = ps.err_at;
    rx_prog_free(g);
    return NULL;
  }
  rx_emit(g, (rx_inst){.op = RX_MATCH});
  return g;
}

int rx_can_match_empty(const rx_prog *g) { return g->nullable; }

int rx_match_at(const rx_prog *g, const uint32_t *s, size_t n, size_t pos, size_t *end, long *budget) {
  return rx_run(g, 0, s, n, pos, end, budget);
}
