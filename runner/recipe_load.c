/* recipe_load.c — the recipe's entry points: read a file and its `base:`
 * chain, deep-merge them, apply `--set` overrides, then hand the merged tree to
 * the schema (recipe_schema.c) and the rules (recipe_check.c). */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/recipe_tree.h"

/* Longest base: chain (a recipe, its base, its base's base, ...). */
#define RECIPE_MAX_BASE_DEPTH 16
/* Characters of a --set value shown where a message names the override. */
#define RECIPE_SET_CLIP 200

void rtree_merge(rnode *base, rnode *child) {
  for (int i = 0; i < child->n; i++) {
    rentry *ce = &child->ents[i];
    rnode *bv = rtree_get(base, ce->key);
    if (bv && bv->kind == RN_MAP && ce->val->kind == RN_MAP) {
      rtree_merge(bv, ce->val); /* consumes ce->val */
    } else {
      rtree_put(base, ce->key, &ce->loc, ce->val);
    }
    ce->val = NULL;
    free(ce->key);
    ce->key = NULL;
  }
  child->n = 0;
  rtree_free(child);
}

/* Mark every node of an override tree with the override's location. */
static void mark_override(rnode *n, const recipe_loc *l) {
  n->loc = *l;
  for (int i = 0; i < n->n; i++) {
    if (n->kind == RN_MAP) {
      n->ents[i].loc = *l;
      mark_override(n->ents[i].val, l);
    } else if (n->kind == RN_SEQ) {
      mark_override(n->items[i], l);
    }
  }
}

int rtree_apply_set(recipe *r, rnode *root, const char *set, rl_err *e) {
  recipe_loc l = {NULL, 0, 0};
  char tmp[1200], clip[4 * RECIPE_SET_CLIP + 8];
  const char *eq = strchr(set, '=');
  /* messages name the override as "--set KEY=VALUE", VALUE cut after
   * RECIPE_SET_CLIP characters (a path shows whole; a 2,000-character
   * tokenizer.chars pushed the reason far off) and its control characters
   * escaped (a newline split the message's line) */
  if (eq && eq - set < 256)
    snprintf(tmp, sizeof tmp, "--set %.*s%s", (int)(eq - set + 1), set, recipe_clip_at(eq + 1, RECIPE_SET_CLIP, clip, sizeof clip));
  else snprintf(tmp, sizeof tmp, "--set %s", recipe_clip(set, clip, sizeof clip));
  l.file = recipe_intern(r, tmp);
  size_t klen = eq ? (size_t)(eq - set) : 0;
  int ok = eq && klen > 0 && klen < 256;
  for (size_t i = 0; ok && i < klen; i++) {
    char ch = set[i];
    int word = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
    if (!word && !(ch == '.' && i > 0 && i + 1 < klen && set[i + 1] != '.')) ok = 0;
  }
  if (!ok) return recipe_errf(e, &l, "expected KEY=VALUE with a dotted KEY, e.g. --set train.lr=1e-6");
  char key[256];
  memcpy(key, set, klen);
  key[klen] = 0;
  const char *val = eq + 1;
  rnode *v = NULL;
  if (rtree_parse(r, val, strlen(val), l.file, 1, &v, e)) return RL_EXIT_USAGE;
  mark_override(v, &l);
  rnode *cur = root;
  char *save = NULL;
  char *seg = strtok_r(key, ".", &save);
  while (seg) {
    char *next = strtok_r(NULL, ".", &save);
    if (!next) {
      rtree_put(cur, seg, &l, v);
      return 0;
    }
    rnode *child = rtree_get(cur, seg);
    if (child && child->kind == RN_NULL) {
      rtree_put(cur, seg, &l, rtree_new(RN_MAP, &l));
      child = rtree_get(cur, seg);
    } else if (!child) {
      rtree_put(cur, seg, &l, rtree_new(RN_MAP, &l));
      child = rtree_get(cur, seg);
    } else if (child->kind != RN_MAP) {
      char at[1200];
      rtree_free(v);
      return recipe_errf(e, &l, "'%s' is a value (written at %s), not a section", seg,
                         recipe_loc_str(&child->loc, at, sizeof at));
    }
    cur = child;
    seg = next;
  }
  rtree_free(v);
  return 0;
}

static int load_tree_text(recipe *r, const char *text, size_t len, const char *file, int depth,
                          char **chain, int flags, rnode **out, rl_err *e);

/* Read a file and load it (with its base chain) into a tree. */
static int load_tree_file(recipe *r, const char *path, const recipe_loc *from, int depth, char **chain,
                          int flags, rnode **out, rl_err *e) {
  char *text = NULL;
  size_t len = 0;
  rl_err fe;
  if (rl_read_file(path, &text, &len, &fe)) {
    if (from) return recipe_errf(e, from, "base: %s", fe.msg);
    rl_errf(e, RL_EXIT_USAGE, "%s", fe.msg);
    return RL_EXIT_USAGE;
  }
  int rc = load_tree_text(r, text, len, recipe_intern(r, path), depth, chain, flags, out, e);
  free(text);
  return rc;
}

static int load_tree_text(recipe *r, const char *text, size_t len, const char *file, int depth,
                          char **chain, int flags, rnode **out, rl_err *e) {
  rnode *root = NULL;
  *out = NULL;
  if (rtree_parse(r, text, len, file, 0, &root, e)) return RL_EXIT_USAGE;
  if (root->kind == RN_NULL) {
    recipe_loc l = root->loc;
    rtree_free(root);
    root = rtree_new(RN_MAP, &l);
  }
  if (root->kind != RN_MAP) {
    recipe_errf(e, &root->loc, "a recipe is a mapping of keys (name: ..., model: ...), not a %s",
                root->kind == RN_SEQ ? "list" : "single value");
    rtree_free(root);
    return RL_EXIT_USAGE;
  }
  recipe_loc bl;
  rnode *b = rtree_take(root, "base", &bl);
  if (!b) {
    *out = root;
    return 0;
  }
  int rc = RL_EXIT_USAGE;
  char real[PATH_MAX], *dir = NULL, bpath[PATH_MAX + 512];
  if (b->kind == RN_NULL) { /* base: null = no base */
    rtree_free(b);
    *out = root;
    return 0;
  }
  if (b->kind != RN_SCALAR || !b->len || strlen(b->text) != b->len) {
    recipe_errf(e, &b->loc, "base: expected the path of another recipe (a string)");
    goto done;
  }
  if (flags & RECIPE_NO_FS) {
    recipe_errf(e, &b->loc, "base: is not available when a recipe is loaded from memory");
    goto done;
  }
  if (depth >= RECIPE_MAX_BASE_DEPTH) {
    recipe_errf(e, &b->loc, "base: chain deeper than %d recipes", RECIPE_MAX_BASE_DEPTH);
    goto done;
  }
  char *fcopy = rl_xstrdup(file);
  dir = rl_xstrdup(dirname(fcopy));
  free(fcopy);
  if (b->text[0] == '/') snprintf(bpath, sizeof bpath, "%s", b->text);
  else snprintf(bpath, sizeof bpath, "%s/%s", dir, b->text);
  if (!realpath(bpath, real)) {
    recipe_errf(e, &b->loc, "base: cannot open '%s': %s (paths are relative to the including file)", bpath,
                strerror(errno));
    goto done;
  }
  for (int i = 0; i <= depth; i++)
    if (chain[i] && !strcmp(chain[i], real)) {
      char msg[1600];
      size_t k = 0;
      msg[0] = 0;
      for (int j = i; j <= depth; j++) {
        const char *s = strrchr(chain[j], '/');
        k += (size_t)snprintf(msg + k, k < sizeof msg ? sizeof msg - k : 0, "%.200s -> ", s ? s + 1 : chain[j]);
      }
      const char *s = strrchr(real, '/');
      snprintf(msg + k, k < sizeof msg ? sizeof msg - k : 0, "%.200s", s ? s + 1 : real);
      recipe_errf(e, &b->loc, "base: cycle %s: a recipe cannot inherit from itself", msg);
      goto done;
    }
  chain[depth + 1] = rl_xstrdup(real);
  rnode *base = NULL;
  rc = load_tree_file(r, bpath, &b->loc, depth + 1, chain, flags, &base, e);
  free(chain[depth + 1]);
  chain[depth + 1] = NULL;
  if (rc) goto done;
  rtree_merge(base, root);
  root = base;
  *out = root;
  root = NULL;
  rc = 0;
done:
  free(dir);
  rtree_free(b);
  rtree_free(root);
  return rc;
}

/* Overrides, schema, rules: everything after the tree is loaded. */
static int finish_load(recipe *r, rnode *root, const char *const *overrides, int n_overrides, int flags,
                       rl_err *e) {
  for (int i = 0; i < n_overrides; i++)
    if (rtree_apply_set(r, root, overrides[i], e)) {
      rtree_free(root);
      return RL_EXIT_USAGE;
    }
  int rc = recipe_schema_fill(r, root, e);
  rtree_free(root);
  if (rc) return rc;
  return recipe_check_rules(r, flags, e);
}

static int load_any(const char *text, size_t len, const char *path, const char *const *overrides,
                    int n_overrides, const char *override_dir, int flags, recipe *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  rl_err_clear(e);
  out->file = rl_xstrdup(path);
  if (override_dir && *override_dir) out->override_dir = rl_xstrdup(override_dir);
  char *chain[RECIPE_MAX_BASE_DEPTH + 2] = {0};
  char real[PATH_MAX];
  if (!(flags & RECIPE_NO_FS) && realpath(path, real)) chain[0] = rl_xstrdup(real);
  rnode *root = NULL;
  recipe_errs_begin(e, recipe_intern(out, path));
  int rc = text ? load_tree_text(out, text, len, recipe_intern(out, path), 0, chain, flags, &root, e)
                : load_tree_file(out, path, NULL, 0, chain, flags, &root, e);
  free(chain[0]);
  if (!rc) rc = finish_load(out, root, overrides, n_overrides, flags, e);
  recipe_errs_end(e); /* before recipe_free: the locations point into out */
  if (rc) {
    if (!e->code) e->code = rc;
    recipe_free(out);
  }
  return rc;
}

int recipe_load(const char *path, const char *const *overrides, int n_overrides, recipe *out, rl_err *e) {
  return load_any(NULL, 0, path, overrides, n_overrides, NULL, 0, out, e);
}

int recipe_load_at(const char *path, const char *const *overrides, int n_overrides, const char *override_dir,
                   recipe *out, rl_err *e) {
  return load_any(NULL, 0, path, overrides, n_overrides, override_dir, 0, out, e);
}

int recipe_load_string(const char *text, size_t len, const char *name, const char *const *overrides,
                       int n_overrides, int flags, recipe *out, rl_err *e) {
  return load_any(text, len, name, overrides, n_overrides, NULL, flags, out, e);
}

recipe_loc recipe_key_loc(const recipe *r, const char *path) {
  int i = recipe_key_index(path);
  if (i >= 0 && r->key_set[i]) return r->key_loc[i];
  return (recipe_loc){r->file, 0, 0};
}

void recipe_warn(recipe *r, const char *fmt, ...) {
  char line[1500];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  size_t old = r->warnings ? strlen(r->warnings) : 0, add = strlen(line);
  r->warnings = rl_xrealloc(r->warnings, old + add + 2);
  memcpy(r->warnings + old, line, add);
  r->warnings[old + add] = '\n';
  r->warnings[old + add + 1] = 0;
}
