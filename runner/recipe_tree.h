/* recipe_tree.h — internal to the recipe loader: the YAML document as a small
 * tree whose every node remembers where it was written (file, line, col), so
 * that a value inherited through `base:` or given with `--set` is reported at
 * its own origin. Built by recipe_yaml.c, merged by recipe_merge.c, read by
 * recipe_schema.c. */
#ifndef RLRUN_RECIPE_TREE_H
#define RLRUN_RECIPE_TREE_H

#include <stddef.h>

#include "runner/recipe.h"

typedef enum rnode_kind { RN_NULL, RN_SCALAR, RN_MAP, RN_SEQ } rnode_kind;

typedef struct rnode rnode;

/* One key of a mapping, with the location of the key itself. */
typedef struct rentry {
  char *key;
  recipe_loc loc;
  rnode *val;
} rentry;

struct rnode {
  rnode_kind kind;
  recipe_loc loc;
  char *text;   /* RN_SCALAR: the value (NUL-terminated) */
  size_t len;   /* its length in bytes (a "\0" escape makes it differ from strlen) */
  int quoted;   /* RN_SCALAR: 1 unless plain style (quoted, literal, folded) */
  rentry *ents; /* RN_MAP */
  rnode **items; /* RN_SEQ */
  int n, cap;   /* entries or items */
};

/* Error budget: the schema pass reports up to this many errors at once. */
#define RECIPE_MAX_ERRORS 8

/* Keep a copy of s for the life of r (file names, override texts). */
const char *recipe_intern(recipe *r, const char *s);

/* "FILE:LINE:COL" (or the --set text) of loc, into buf. */
const char *recipe_loc_str(const recipe_loc *loc, char *buf, size_t n);

/* 1 when loc is a --set whose KEY is path: its text names the key already, so
 * a message about that key leaves the path out. A --set of a section
 * (--set 'rollout={batch: 0}') names no key inside it. */
int recipe_loc_names_key(const recipe_loc *loc, const char *path);

/* Append "LOC: message" to e (one line per error, up to RECIPE_MAX_ERRORS, then
 * one last line "… and N more errors (fix these and validate again)");
 * returns RL_EXIT_USAGE. */
int recipe_errf(rl_err *e, const recipe_loc *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Hold back the errors recipe_errf reports into e (on this thread) from
 * recipe_errs_begin until recipe_errs_end, which appends them to e in the
 * order a reader meets them: main_file's (the recipe given) by line and
 * column, then base files', then --set overrides'; still up to
 * RECIPE_MAX_ERRORS, the first ones in that order, then the count of the
 * rest. The check passes find errors in schema and rule order. */
void recipe_errs_begin(rl_err *e, const char *main_file);
void recipe_errs_end(rl_err *e);

/* Parse YAML text into a tree. file is an interned name; override=1 marks every
 * node as coming from the `--set` named by file (no line:col). */
int rtree_parse(recipe *r, const char *text, size_t len, const char *file, int override, rnode **out,
                rl_err *e);
void rtree_free(rnode *n);
/* The value of key in map n, or NULL. */
rnode *rtree_get(rnode *n, const char *key);
/* Remove key from map n and return its value (caller frees), or NULL. */
rnode *rtree_take(rnode *n, const char *key, recipe_loc *keyloc);
/* Add or replace key in map n (takes val). */
void rtree_put(rnode *n, const char *key, const recipe_loc *keyloc, rnode *val);
rnode *rtree_new(rnode_kind kind, const recipe_loc *loc);

/* Deep-merge child onto base (both maps; child is consumed): maps merge key
 * by key, everything else is replaced by the child's value. */
void rtree_merge(rnode *base, rnode *child);
/* Apply one "a.b.c=value" override to root. */
int rtree_apply_set(recipe *r, rnode *root, const char *set, rl_err *e);

/* A value quoted in a message, short enough that the reason after it always
 * shows: its first RECIPE_CLIP characters (cut between UTF-8 characters), then
 * "…" when there is more; a control character is written as an escape (\n,
 * \t, \r, \x01), so that a message stays on its one line. n: at least
 * 4 * RECIPE_CLIP + 4 bytes. */
#define RECIPE_CLIP 40
const char *recipe_clip(const char *s, char *buf, size_t n);
/* The same, cut after `limit` characters (n: at least 4 * limit + 4 bytes). */
const char *recipe_clip_at(const char *s, size_t limit, char *buf, size_t n);

/* Levenshtein distance (for "did you mean"), capped at 99. */
int recipe_edit_distance(const char *a, const char *b);

/* Fill r from the merged tree: schema check, conversion, defaults (recipe_schema.c). */
int recipe_schema_fill(recipe *r, rnode *root, rl_err *e);
/* Cross-field rules, files, the precision matrix (recipe_check.c). */
int recipe_check_rules(recipe *r, int flags, rl_err *e);
/* Location of key path in r (where it was written), or the recipe file. */
recipe_loc recipe_key_loc(const recipe *r, const char *path);
/* Append a warning line to r->warnings. */
void recipe_warn(recipe *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
