/* recipe_yaml.c — YAML text → located tree (recipe_tree.h). libyaml's event
 * parser does the syntax; this file refuses what recipes do not allow (anchors,
 * aliases, tags, merge keys, duplicate keys, several documents, tabs in
 * indentation, bytes that are not UTF-8) with FILE:LINE:COL messages. */
#include "runner/recipe_tree.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Deepest nesting accepted (the schema is 4 deep; this keeps fuzzing off the stack limit). */
#define RTREE_MAX_DEPTH 64
/* Most keys in one mapping, and most nodes (keys' values, list items) in one document: the
 * schema has about 150 keys, so more is not a recipe, and these bound the duplicate-key
 * check (quadratic in the keys of a map) to well under a second. */
#define RTREE_MAX_KEYS 4096
#define RTREE_MAX_NODES 100000

const char *recipe_intern(recipe *r, const char *s) {
  for (int i = 0; i < r->n_strs; i++)
    if (!strcmp(r->strs[i], s)) return r->strs[i];
  r->strs = rl_xrealloc(r->strs, sizeof *r->strs * (size_t)(r->n_strs + 1));
  r->strs[r->n_strs] = rl_xstrdup(s);
  return r->strs[r->n_strs++];
}

const char *recipe_loc_str(const recipe_loc *loc, char *buf, size_t n) {
  if (!loc || !loc->file) snprintf(buf, n, "recipe");
  else if (loc->line > 0) snprintf(buf, n, "%s:%d:%d", loc->file, loc->line, loc->col);
  else snprintf(buf, n, "%s", loc->file);
  return buf;
}

int recipe_loc_names_key(const recipe_loc *loc, const char *path) {
  if (!loc || !loc->file || loc->line > 0 || strncmp(loc->file, "--set ", 6)) return 0;
  size_t n = strlen(path);
  return !strncmp(loc->file + 6, path, n) && loc->file[6 + n] == '=';
}

/* The last line of an error list that counts the errors left out. */
#define MORE_MARK "\xe2\x80\xa6 and " /* "… and " */

/* n more errors past RECIPE_MAX_ERRORS: add or update the last line,
 * "… and N more error(s)", keeping room for it in e->msg. */
static void count_left_out(rl_err *e, long n) {
  char *last = strrchr(e->msg, '\n');
  long more = 0;
  if (last && !strncmp(last + 1, MORE_MARK, strlen(MORE_MARK))) more = strtol(last + 1 + strlen(MORE_MARK), NULL, 10);
  else last = e->msg + strlen(e->msg);
  char line[96];
  more += n;
  snprintf(line, sizeof line, "\n" MORE_MARK "%ld more error%s (fix these and validate again)", more, more == 1 ? "" : "s");
  size_t at = (size_t)(last - e->msg);
  while (at + strlen(line) + 1 > sizeof e->msg && at > 0) { /* cut the listed errors, never the count */
    char *nl = memrchr(e->msg, '\n', at);
    at = nl ? (size_t)(nl - e->msg) : 0;
  }
  snprintf(e->msg + at, sizeof e->msg - at, "%s", line);
}

/* Append "LOC: what" to e, or count it once RECIPE_MAX_ERRORS are listed. */
static void err_append(rl_err *e, const recipe_loc *loc, const char *what) {
  int lines = e->msg[0] ? 1 : 0;
  for (const char *p = e->msg; *p; p++) lines += *p == '\n';
  e->code = RL_EXIT_USAGE;
  if (lines >= RECIPE_MAX_ERRORS) {
    count_left_out(e, 1);
    return;
  }
  char where[1200];
  recipe_loc_str(loc, where, sizeof where);
  size_t used = strlen(e->msg);
  snprintf(e->msg + used, sizeof e->msg - used, "%s%s: %s", used ? "\n" : "", where, what);
}

/* Errors held back between recipe_errs_begin and recipe_errs_end (this
 * thread's): the RECIPE_MAX_ERRORS first in the order of the files, by line
 * and column, and how many came after them. */
typedef struct held_err {
  recipe_loc loc;
  long seq; /* report order: keeps equal locations (a JSONL file's lines) in order */
  char *what;
} held_err;

static _Thread_local struct {
  rl_err *target; /* the rl_err being collected for, or NULL: recipe_errf appends at once */
  const char *main_file;
  held_err errs[RECIPE_MAX_ERRORS];
  int n;
  long seq, dropped;
} held;

/* Where an error sorts: the recipe's own file, then base files (by name),
 * then --set overrides, then anything else; in a file by line, column. */
static int loc_rank(const recipe_loc *l) {
  if (!l->file) return 3;
  if (l->line == 0 && !strncmp(l->file, "--set ", 6)) return 2;
  if (held.main_file && !strcmp(l->file, held.main_file)) return 0;
  return 1;
}

static int held_before(const held_err *a, const held_err *b) {
  int ra = loc_rank(&a->loc), rb = loc_rank(&b->loc);
  if (ra != rb) return ra < rb;
  if (ra == 1) {
    int c = strcmp(a->loc.file, b->loc.file);
    if (c) return c < 0;
  }
  if (a->loc.line != b->loc.line) return a->loc.line < b->loc.line;
  if (a->loc.col != b->loc.col) return a->loc.col < b->loc.col;
  return a->seq < b->seq;
}

static void held_add(const recipe_loc *loc, const char *what) {
  held_err x = {*loc, held.seq++, NULL};
  if (held.n == RECIPE_MAX_ERRORS) {
    held.dropped++;
    if (!held_before(&x, &held.errs[held.n - 1])) return;
    free(held.errs[--held.n].what); /* the last one listed gives way */
  }
  int at = held.n;
  while (at > 0 && held_before(&x, &held.errs[at - 1])) at--;
  memmove(&held.errs[at + 1], &held.errs[at], sizeof *held.errs * (size_t)(held.n - at));
  x.what = rl_xstrdup(what);
  held.errs[at] = x;
  held.n++;
}

void recipe_errs_begin(rl_err *e, const char *main_file) {
  if (held.target) return; /* one load at a time on a thread: an inner one reports as it goes */
  held.target = e;
  held.main_file = main_file;
  held.n = 0;
  held.seq = held.dropped = 0;
}

void recipe_errs_end(rl_err *e) {
  if (held.target != e || !e) return;
  held.target = NULL;
  for (int i = 0; i < held.n; i++) {
    err_append(e, &held.errs[i].loc, held.errs[i].what);
    free(held.errs[i].what);
  }
  if (held.dropped) count_left_out(e, held.dropped);
  held.n = 0;
  held.dropped = 0;
}

int recipe_errf(rl_err *e, const recipe_loc *loc, const char *fmt, ...) {
  if (!e) return RL_EXIT_USAGE;
  char what[1500];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  e->code = RL_EXIT_USAGE;
  if (held.target == e) held_add(loc, what);
  else err_append(e, loc, what);
  return RL_EXIT_USAGE;
}

const char *recipe_clip(const char *s, char *buf, size_t n) { return recipe_clip_at(s, RECIPE_CLIP, buf, n); }

const char *recipe_clip_at(const char *s, size_t limit, char *buf, size_t n) {
  size_t at = 0, chars = 0, w = 0;
  if (!n) return buf;
  while (s[at] && chars < limit) {
    unsigned char b = (unsigned char)s[at];
    char one[8];
    size_t len = 1;
    /* a control character as an escape: a newline in a key or value split the
     * message's line, and the part after it had no FILE:LINE:COL */
    if (b == '\n') snprintf(one, sizeof one, "\\n");
    else if (b == '\t') snprintf(one, sizeof one, "\\t");
    else if (b == '\r') snprintf(one, sizeof one, "\\r");
    else if (b < 0x20 || b == 0x7f) snprintf(one, sizeof one, "\\x%02x", b);
    else {
      while (((unsigned char)s[at + len] & 0xC0) == 0x80 && len < 4) len++; /* the rest of a UTF-8 character */
      memcpy(one, s + at, len);
      one[len] = 0;
    }
    size_t k = strlen(one);
    if (w + k + 1 > n) break;
    memcpy(buf + w, one, k);
    w += k, at += len, chars++;
  }
  buf[w] = 0;
  if (s[at] && w + 4 <= n) memcpy(buf + w, "\xe2\x80\xa6", 4); /* "…" and its NUL */
  return buf;
}

int recipe_edit_distance(const char *a, const char *b) {
  int n = (int)strlen(a), m = (int)strlen(b);
  if (n > 40 || m > 40) return 99;
  int d[41][41];
  for (int i = 0; i <= n; i++) d[i][0] = i;
  for (int j = 0; j <= m; j++) d[0][j] = j;
  for (int i = 1; i <= n; i++)
    for (int j = 1; j <= m; j++) {
      int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
      d[i][j] = c;
    }
  return d[n][m];
}

rnode *rtree_new(rnode_kind kind, const recipe_loc *loc) {
  rnode *n = rl_xcalloc(1, sizeof *n);
  n->kind = kind;
  if (loc) n->loc = *loc;
  return n;
}

/* Append a key known to be new to map n (takes key and val). */
static void map_append(rnode *n, char *key, const recipe_loc *keyloc, rnode *val) {
  if (n->n == n->cap) {
    n->cap = n->cap ? 2 * n->cap : 8;
    n->ents = rl_xrealloc(n->ents, sizeof *n->ents * (size_t)n->cap);
  }
  n->ents[n->n++] = (rentry){key, *keyloc, val};
}

void rtree_free(rnode *n) {
  if (!n) return;
  free(n->text);
  for (int i = 0; n->kind == RN_MAP && i < n->n; i++) {
    free(n->ents[i].key);
    rtree_free(n->ents[i].val);
  }
  for (int i = 0; n->kind == RN_SEQ && i < n->n; i++) rtree_free(n->items[i]);
  free(n->ents);
  free(n->items);
  free(n);
}

rnode *rtree_get(rnode *n, const char *key) {
  if (!n || n->kind != RN_MAP) return NULL;
  for (int i = 0; i < n->n; i++)
    if (!strcmp(n->ents[i].key, key)) return n->ents[i].val;
  return NULL;
}

rnode *rtree_take(rnode *n, const char *key, recipe_loc *keyloc) {
  if (!n || n->kind != RN_MAP) return NULL;
  for (int i = 0; i < n->n; i++)
    if (!strcmp(n->ents[i].key, key)) {
      rnode *v = n->ents[i].val;
      if (keyloc) *keyloc = n->ents[i].loc;
      free(n->ents[i].key);
      memmove(&n->ents[i], &n->ents[i + 1], sizeof *n->ents * (size_t)(n->n - i - 1));
      n->n--;
      return v;
    }
  return NULL;
}

void rtree_put(rnode *n, const char *key, const recipe_loc *keyloc, rnode *val) {
  for (int i = 0; i < n->n; i++)
    if (!strcmp(n->ents[i].key, key)) {
      rtree_free(n->ents[i].val);
      n->ents[i].val = val;
      n->ents[i].loc = *keyloc;
      return;
    }
  map_append(n, rl_xstrdup(key), keyloc, val);
}

static void seq_push(rnode *n, rnode *item) {
  if (n->n == n->cap) {
    n->cap = n->cap ? 2 * n->cap : 8;
    n->items = rl_xrealloc(n->items, sizeof *n->items * (size_t)n->cap);
  }
  n->items[n->n++] = item;
}

/* First byte that is not valid UTF-8 (or a NUL), with its 1-based line:col; 0 if none. */
static int utf8_find_invalid(const unsigned char *s, size_t len, int *line, int *col, unsigned *byte) {
  int l = 1, c = 1;
  size_t i = 0;
  if (len >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) i = 3; /* BOM */
  while (i < len) {
    unsigned b = s[i];
    size_t need = 0;
    unsigned cp = 0;
    if (b == 0) goto bad;
    if (b < 0x80) need = 0, cp = b;
    else if (b >= 0xC2 && b <= 0xDF) need = 1, cp = b & 0x1F;
    else if (b >= 0xE0 && b <= 0xEF) need = 2, cp = b & 0x0F;
    else if (b >= 0xF0 && b <= 0xF4) need = 3, cp = b & 0x07;
    else goto bad;
    if (i + need >= len && need) goto bad;
    for (size_t k = 1; k <= need; k++) {
      if ((s[i + k] & 0xC0) != 0x80) goto bad;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((need == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
      goto bad;
    if (b == '\n') l++, c = 1;
    else c++;
    i += need + 1;
    continue;
  bad:
    *line = l, *col = c, *byte = b;
    return 1;
  }
  return 0;
}

/* A tab in the leading whitespace of the line at or before line0 (0-based); its line:col. */
static int find_indent_tab(const char *s, size_t len, size_t upto_line, int *line, int *col) {
  size_t l = 0, i = 0;
  while (i < len && l <= upto_line) {
    size_t j = i;
    int c = 1;
    while (j < len && (s[j] == ' ' || s[j] == '\t')) {
      if (s[j] == '\t') {
        *line = (int)l + 1, *col = c;
        return 1;
      }
      j++, c++;
    }
    while (j < len && s[j] != '\n') j++;
    i = j + 1, l++;
  }
  return 0;
}

typedef struct parse_ctx {
  recipe *r;
  yaml_parser_t p;
  const char *text;
  size_t len;
  const char *file;
  int override;
  int nodes; /* parsed so far (RTREE_MAX_NODES) */
  rl_err *e;
} parse_ctx;

static recipe_loc mark_loc(parse_ctx *c, yaml_mark_t m) {
  recipe_loc l = {c->file, (int)m.line + 1, (int)m.column + 1};
  if (c->override) l.line = l.col = 0;
  return l;
}

/* libyaml's syntax error, with a clearer message for tabs. */
static int syntax_error(parse_ctx *c) {
  yaml_parser_t *p = &c->p;
  recipe_loc l = mark_loc(c, p->problem_mark);
  int tl, tc;
  if (p->error == YAML_READER_ERROR) {
    /* the reader reports a byte offset (problem_offset), not a mark: count lines and characters */
    l = (recipe_loc){c->file, 0, 0};
    if (!c->override && p->problem_offset <= c->len) {
      l.line = l.col = 1;
      for (size_t i = 0; i < p->problem_offset; i++) {
        unsigned char b = (unsigned char)c->text[i];
        if (b == '\n') l.line++, l.col = 1;
        else if ((b & 0xC0) != 0x80 && !(i < 3 && p->problem_offset >= 3 && !memcmp(c->text, "\xEF\xBB\xBF", 3)))
          l.col++; /* one per UTF-8 character (a BOM counts none) */
      }
    }
    char cp[48] = "";
    if (p->problem_value >= 0) snprintf(cp, sizeof cp, " (U+%04X)", (unsigned)p->problem_value);
    return recipe_errf(c->e, &l, "cannot read as YAML text: %s%s: remove it, or write it as an escape "
                       "(\\x01, \\uFFFF) inside a double-quoted string", p->problem ? p->problem : "reader error", cp);
  }
  if (find_indent_tab(c->text, c->len, p->problem_mark.line, &tl, &tc)) {
    if (!c->override) l.line = tl, l.col = tc;
    return recipe_errf(c->e, &l, "tab character in indentation: YAML indents with spaces only (replace the tab)");
  }
  return recipe_errf(c->e, &l, "YAML syntax error: %s%s%s", p->problem ? p->problem : "invalid YAML",
                     p->context ? " " : "", p->context ? p->context : "");
}

static int next_event(parse_ctx *c, yaml_event_t *ev) {
  if (!yaml_parser_parse(&c->p, ev)) return syntax_error(c);
  return 0;
}

/* Refuse anchors and tags on a node event. */
static int check_props(parse_ctx *c, yaml_event_t *ev) {
  yaml_char_t *anchor = NULL, *tag = NULL;
  if (ev->type == YAML_SCALAR_EVENT) anchor = ev->data.scalar.anchor, tag = ev->data.scalar.tag;
  if (ev->type == YAML_SEQUENCE_START_EVENT) anchor = ev->data.sequence_start.anchor, tag = ev->data.sequence_start.tag;
  if (ev->type == YAML_MAPPING_START_EVENT) anchor = ev->data.mapping_start.anchor, tag = ev->data.mapping_start.tag;
  recipe_loc l = mark_loc(c, ev->start_mark);
  if (anchor)
    return recipe_errf(c->e, &l, "anchors (&%s) are not supported in recipes: write values out, or share "
                       "settings with base: other.yaml", (char *)anchor);
  if (tag) { /* as written: libyaml resolves !!int to tag:yaml.org,2002:int */
    const char *std = "tag:yaml.org,2002:", *t = (const char *)tag;
    int core = !strncmp(t, std, strlen(std));
    char shown[4 * RECIPE_CLIP + 8];
    return recipe_errf(c->e, &l, "tags (%s%s) are not supported in recipes: remove the tag (quote a value to "
                       "make it a string)", core ? "!!" : "", recipe_clip(core ? t + strlen(std) : t, shown, sizeof shown));
  }
  return 0;
}

static int parse_node(parse_ctx *c, yaml_event_t *ev, int depth, rnode **out);

static int parse_map(parse_ctx *c, yaml_event_t *start, int depth, rnode **out) {
  recipe_loc ml = mark_loc(c, start->start_mark);
  rnode *m = rtree_new(RN_MAP, &ml);
  for (;;) {
    yaml_event_t ev;
    if (next_event(c, &ev)) goto fail;
    if (ev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&ev);
      break;
    }
    recipe_loc kl = mark_loc(c, ev.start_mark);
    if (ev.type == YAML_ALIAS_EVENT || check_props(c, &ev)) {
      if (ev.type == YAML_ALIAS_EVENT)
        recipe_errf(c->e, &kl, "aliases (*%s) are not supported in recipes: write the value out",
                    (char *)ev.data.alias.anchor);
      yaml_event_delete(&ev);
      goto fail;
    }
    if (ev.type != YAML_SCALAR_EVENT) {
      recipe_errf(c->e, &kl, "a key must be a plain name, not a %s",
                  ev.type == YAML_MAPPING_START_EVENT ? "mapping" : "list");
      yaml_event_delete(&ev);
      goto fail;
    }
    char *key = rl_xstrdup((char *)ev.data.scalar.value);
    size_t klen = ev.data.scalar.length;
    int plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    yaml_event_delete(&ev);
    if (plain && !strcmp(key, "<<")) {
      recipe_errf(c->e, &kl, "merge keys (<<) are not supported in recipes: use base: other.yaml to inherit");
      free(key);
      goto fail;
    }
    if (klen == 0 || strlen(key) != klen) {
      recipe_errf(c->e, &kl, "empty key (or a key with a NUL byte)");
      free(key);
      goto fail;
    }
    if (m->n >= RTREE_MAX_KEYS) {
      char at[1200];
      recipe_errf(c->e, &kl, "more than %d keys in one mapping (the one at %s): no recipe needs that many "
                  "(the whole schema has a few hundred); is this the right file?", RTREE_MAX_KEYS,
                  recipe_loc_str(&ml, at, sizeof at));
      free(key);
      goto fail;
    }
    for (int i = 0; i < m->n; i++)
      if (!strcmp(m->ents[i].key, key)) {
        char first[1200];
        recipe_errf(c->e, &kl, "duplicate key '%s' (first written at %s): keep one", key,
                    recipe_loc_str(&m->ents[i].loc, first, sizeof first));
        free(key);
        goto fail;
      }
    rnode *val = NULL;
    if (next_event(c, &ev)) {
      free(key);
      goto fail;
    }
    int rc = parse_node(c, &ev, depth + 1, &val);
    if (rc) {
      free(key);
      goto fail;
    }
    map_append(m, key, &kl, val); /* not a duplicate: checked above */
  }
  *out = m;
  return 0;
fail:
  rtree_free(m);
  return RL_EXIT_USAGE;
}

/* Build the node that starts with event ev (consumed). */
static int parse_node(parse_ctx *c, yaml_event_t *ev, int depth, rnode **out) {
  recipe_loc l = mark_loc(c, ev->start_mark);
  *out = NULL;
  if (depth > RTREE_MAX_DEPTH) {
    yaml_event_delete(ev);
    return recipe_errf(c->e, &l, "nesting deeper than %d levels", RTREE_MAX_DEPTH);
  }
  if (++c->nodes > RTREE_MAX_NODES) {
    yaml_event_delete(ev);
    return recipe_errf(c->e, &l, "more than %d values in one recipe: no recipe needs that many; is this the "
                       "right file?", RTREE_MAX_NODES);
  }
  if (ev->type == YAML_ALIAS_EVENT) {
    recipe_errf(c->e, &l, "aliases (*%s) are not supported in recipes: write the value out",
                (char *)ev->data.alias.anchor);
    yaml_event_delete(ev);
    return RL_EXIT_USAGE;
  }
  if (check_props(c, ev)) {
    yaml_event_delete(ev);
    return RL_EXIT_USAGE;
  }
  if (ev->type == YAML_SCALAR_EVENT) {
    rnode *n = rtree_new(RN_SCALAR, &l);
    n->len = ev->data.scalar.length;
    n->text = rl_xmalloc(n->len + 1);
    memcpy(n->text, ev->data.scalar.value, n->len);
    n->text[n->len] = 0;
    n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    const char *t = n->text;
    if (!n->quoted && (!*t || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") || !strcmp(t, "NULL")))
      n->kind = RN_NULL;
    yaml_event_delete(ev);
    *out = n;
    return 0;
  }
  if (ev->type == YAML_MAPPING_START_EVENT) {
    int rc = parse_map(c, ev, depth, out);
    yaml_event_delete(ev);
    return rc;
  }
  if (ev->type == YAML_SEQUENCE_START_EVENT) {
    yaml_event_delete(ev);
    rnode *s = rtree_new(RN_SEQ, &l);
    for (;;) {
      yaml_event_t iev;
      if (next_event(c, &iev)) break;
      if (iev.type == YAML_SEQUENCE_END_EVENT) {
        yaml_event_delete(&iev);
        *out = s;
        return 0;
      }
      rnode *item = NULL;
      if (parse_node(c, &iev, depth + 1, &item)) break;
      seq_push(s, item);
    }
    rtree_free(s);
    return RL_EXIT_USAGE;
  }
  yaml_event_delete(ev);
  return recipe_errf(c->e, &l, "unexpected YAML event");
}

int rtree_parse(recipe *r, const char *text, size_t len, const char *file, int override, rnode **out,
                rl_err *e) {
  *out = NULL;
  parse_ctx c = {.r = r, .text = text, .len = len, .file = file, .override = override, .e = e};
  int bl, bc;
  unsigned byte;
  if (utf8_find_invalid((const unsigned char *)text, len, &bl, &bc, &byte)) {
    recipe_loc l = {file, override ? 0 : bl, override ? 0 : bc};
    if (byte == 0) return recipe_errf(e, &l, "NUL byte: a recipe is UTF-8 text");
    return recipe_errf(e, &l, "invalid UTF-8 (byte 0x%02x): save the recipe as UTF-8 text", byte);
  }
  yaml_parser_initialize(&c.p);
  /* No yaml_parser_set_encoding: libyaml's own detection (UTF-8 here, the text
   * was checked above) is what drops a BOM in the reader; with the encoding set,
   * its scanner skips the BOM as a character of line 1, so a key written there
   * sat at column 1 and the next line's key, at column 0, was a syntax error. */
  yaml_parser_set_input_string(&c.p, (const unsigned char *)text, len);
  rnode *root = NULL;
  int rc = RL_EXIT_USAGE, docs = 0;
  for (;;) {
    yaml_event_t ev;
    if (next_event(&c, &ev)) goto done;
    yaml_event_type_t t = ev.type;
    recipe_loc l = mark_loc(&c, ev.start_mark);
    if (t == YAML_STREAM_END_EVENT) {
      yaml_event_delete(&ev);
      break;
    }
    if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
      yaml_event_delete(&ev);
      recipe_errf(e, &l, "a second YAML document ('---'): a recipe is one document");
      goto done;
    }
    if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_START_EVENT || t == YAML_DOCUMENT_END_EVENT) {
      yaml_event_delete(&ev);
      continue;
    }
    if (parse_node(&c, &ev, 0, &root)) goto done;
  }
  if (!root) { /* an empty document */
    recipe_loc l = {file, override ? 0 : 1, override ? 0 : 1};
    root = rtree_new(RN_NULL, &l);
  }
  *out = root;
  root = NULL;
  rc = 0;
done:
  rtree_free(root);
  yaml_parser_delete(&c.p);
  return rc;
}
