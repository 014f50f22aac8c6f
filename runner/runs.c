/* runs.c — run directory helpers for the run commands (runs.h). */
#include "runner/runs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runner/inputs.h"
#include "runner/loop.h"
#include "state/sha256.h"

/* Replace *p by its realpath when it resolves. */
static int canon(char **p, const char *key, rl_err *e) {
  if (!*p) return 0;
  char *abs = realpath(*p, NULL);
  if (!abs) return rl_errf(e, RL_EXIT_USAGE, "%s: %s: %s", key, *p, strerror(errno));
  free(*p);
  *p = abs;
  return 0;
}

/* The same for a file whose siblings count (a tokenizer.json and its
 * tokenizer_config.json): the directory made absolute, the name kept, so a
 * symlink (a Hugging Face hub snapshot links each file to a blob) is not
 * followed away from its siblings. */
static int canon_keep_name(char **p, const char *key, rl_err *e) {
  if (!*p) return 0;
  char *slash = strrchr(*p, '/');
  if (slash && !slash[1]) return canon(p, key, e); /* "dir/": the reader says what is wrong */
  char *dir = slash ? rl_xstrdup(*p) : rl_xstrdup(".");
  if (slash) dir[slash - *p + (slash == *p)] = 0; /* "/x" keeps "/" */
  char *abs = realpath(dir, NULL);
  free(dir);
  if (!abs || access(*p, F_OK) != 0) {
    free(abs);
    return rl_errf(e, RL_EXIT_USAGE, "%s: %s: %s", key, *p, strerror(errno ? errno : ENOENT));
  }
  const char *name = slash ? slash + 1 : *p;
  char *out = rl_xmalloc(strlen(abs) + strlen(name) + 2);
  sprintf(out, "%s%s%s", abs, strcmp(abs, "/") ? "/" : "", name);
  free(abs);
  free(*p);
  *p = out;
  return 0;
}

int runs_canonical_recipe(recipe *r, rl_err *e) {
  if (r->model.checkpoint && access(r->model.checkpoint, F_OK) != 0) /* validation let a pending one through */
    return rl_errf(e, RL_EXIT_USAGE, "model.checkpoint: %s holds no checkpoint yet (no checkpoint or run directory, "
                   "no run NAME-<id> beside it): run the recipe that writes it first", r->model.checkpoint);
  if (canon(&r->model.path, "model.path", e) || canon(&r->model.checkpoint, "model.checkpoint", e) ||
      canon_keep_name(&r->tokenizer.path, "tokenizer.path", e) || canon(&r->data.prompts, "data.prompts", e) ||
      canon(&r->data.task, "data.task", e) || canon(&r->reward.script, "reward.script", e))
    return e->code;
  return 0;
}

char *runs_resolved_text(const recipe *r) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  recipe_print(f, r);
  fclose(f);
  /* the first line names the recipe file (a comment): drop it, the content is what counts */
  if (buf && !strncmp(buf, "==", 2)) {
    char *nl = strchr(buf, '\n');
    if (nl) memmove(buf, nl + 1, strlen(nl + 1) + 1);
  }
  return buf;
}

/* Add one file's hash to obj. */
static int hash_into(json_t *obj, const char *path, rl_err *e) {
  char hex[65];
  if (sha256_file(path, hex, NULL, e)) return e->code;
  json_object_set_new(obj, path, json_string(hex));
  return 0;
}

/* Add every regular file of a model directory (not hidden) to obj. */
static int hash_dir(json_t *obj, const char *dir, rl_err *e) {
  DIR *d = opendir(dir);
  if (!d) return rl_errf(e, RL_EXIT_USAGE, "%s: cannot open directory: %s", dir, strerror(errno));
  struct dirent *de;
  int rc = 0;
  while (!rc && (de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char path[PATH_MAX + 256];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) rc = hash_into(obj, path, e);
  }
  closedir(d);
  return rc;
}

int runs_input_hashes_present(const recipe *r, int present_only, char **json, rl_err *e) {
  json_t *o = json_object();
  int rc = 0;
  struct stat st;
#define RUNS_THERE(p) (!present_only || stat((p), &st) == 0)
  if (r->model.path && RUNS_THERE(r->model.path)) rc = hash_dir(o, r->model.path, e);
  if (!rc && r->model.checkpoint && RUNS_THERE(r->model.checkpoint)) rc = hash_dir(o, r->model.checkpoint, e);
  const char *files[] = {r->tokenizer.path, r->data.prompts, r->data.task, r->reward.script};
  for (size_t i = 0; i < sizeof files / sizeof *files && !rc; i++)
    if (files[i] && RUNS_THERE(files[i])) rc = hash_into(o, files[i], e);
  /* an hf tokenizer's files wherever they come from (tokenizer.path, or the one
   * model.checkpoint recorded): tokenizer_config.json decides BOS and EOS
   * (model.path's own are among its files already) */
  if (!rc && r->tokenizer.type == TOKENIZER_HF && (!r->model.path || r->tokenizer.path)) {
    const char *key;
    char *tp = recipe_tokenizer_path(r, &key);
    if (tp) {
      if (RUNS_THERE(tp) && !json_object_get(o, tp)) rc = hash_into(o, tp, e);
      char *slash = strrchr(tp, '/');
      if (slash) {
        slash[1] = 0; /* the directory, with its '/' */
        char *cfg = rl_xmalloc(strlen(tp) + 32);
        sprintf(cfg, "%stokenizer_config.json", tp);
        if (!rc && stat(cfg, &st) == 0) rc = hash_into(o, cfg, e);
        free(cfg);
      }
      free(tp);
    }
  }
#undef RUNS_THERE
  *json = rc ? NULL : json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
  json_decref(o);
  return rc;
}

int runs_input_hashes(const recipe *r, char **json, rl_err *e) { return runs_input_hashes_present(r, 0, json, e); }

/* Append a formatted line to a growing report. */
static void report_add(char **report, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_add(char **report, const char *fmt, ...) {
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  size_t old = *report ? strlen(*report) : 0, add = strlen(line);
  *report = rl_xrealloc(*report, old + add + 2);
  memcpy(*report + old, line, add);
  (*report)[old + add] = '\n';
  (*report)[old + add + 1] = 0;
}

/* An input's role in recipe r: the key whose path names it ("data.prompts",
 * "model.path/config.json", ...), the tokenizer's files ("tokenizer:NAME"),
 * else its path. Inputs of two recipes with the same roles and contents are
 * the same experiment wherever the files are (malloc'd). */
static char *input_role(const recipe *r, const char *path, const char *tok_dir) {
  static const char *const file_keys[] = {"tokenizer.path", "data.prompts", "data.task", "reward.script"};
  const char *file_vals[] = {r->tokenizer.path, r->data.prompts, r->data.task, r->reward.script};
  for (size_t i = 0; i < sizeof file_keys / sizeof *file_keys; i++)
    if (file_vals[i] && !strcmp(file_vals[i], path)) return rl_xstrdup(file_keys[i]);
  const char *dir_keys[] = {"model.path", "model.checkpoint"}, *dir_vals[] = {r->model.path, r->model.checkpoint};
  for (int i = 0; i < 2; i++) {
    size_t n = dir_vals[i] ? strlen(dir_vals[i]) : 0;
    if (n && !strncmp(path, dir_vals[i], n) && path[n] == '/') {
      char *o = rl_xmalloc(strlen(dir_keys[i]) + strlen(path + n) + 1);
      sprintf(o, "%s%s", dir_keys[i], path + n);
      return o;
    }
  }
  size_t dn = tok_dir ? strlen(tok_dir) : 0;
  if (dn && !strncmp(path, tok_dir, dn) && path[dn] && !strchr(path + dn, '/')) {
    char *o = rl_xmalloc(strlen(path + dn) + 16);
    sprintf(o, "tokenizer:%s", path + dn);
    return o;
  }
  return rl_xstrdup(path);
}

/* {role: {"sha256", "path"}} of a recipe's input hashes. */
/* The directory of an hf recipe's tokenizer.json, with its '/' (malloc'd), or
 * NULL: where input_role finds the tokenizer's files. */
static char *tokenizer_dir(const recipe *r) {
  const char *key;
  char *tp = r->tokenizer.type == TOKENIZER_HF ? recipe_tokenizer_path(r, &key) : NULL;
  char *slash = tp ? strrchr(tp, '/') : NULL;
  if (slash) slash[1] = 0;
  else free(tp), tp = NULL;
  return tp;
}

static json_t *input_roles(const recipe *r, const char *hashes_json) {
  json_t *h = json_loads(hashes_json ? hashes_json : "{}", 0, NULL), *out = json_object();
  char *tok_dir = tokenizer_dir(r);
  const char *path;
  json_t *v;
  json_object_foreach(h, path, v) {
    char *role = input_role(r, path, tok_dir);
    json_object_set_new(out, role, json_pack("{s:s,s:s}", "sha256", json_string_value(v) ? json_string_value(v) : "",
                                             "path", path));
    free(role);
  }
  free(tok_dir);
  json_decref(h);
  return out;
}

int runs_inputs_compare(const recipe *old_r, const char *old_hashes, const recipe *new_r, const char *new_hashes,
                        char **report) {
  json_t *a = input_roles(old_r, old_hashes), *b = input_roles(new_r, new_hashes);
  int n = 0;
  const char *role;
  json_t *x;
  json_object_foreach(a, role, x) {
    json_t *y = json_object_get(b, role);
    const char *sa = json_string_value(json_object_get(x, "sha256")), *pa = json_string_value(json_object_get(x, "path"));
    if (!y) {
      report_add(report, "  %s: no such input now (it was %s)", role, pa), n++;
      continue;
    }
    const char *sb = json_string_value(json_object_get(y, "sha256")), *pb = json_string_value(json_object_get(y, "path"));
    if (strcmp(sa, sb))
      report_add(report, "  %s: other contents: %s has sha256 %.16s…, the run's %s had %.16s…", role, pb, sb, pa, sa), n++;
  }
  json_object_foreach(b, role, x) if (!json_object_get(a, role)) {
    report_add(report, "  %s: an input the run did not have: %s", role, json_string_value(json_object_get(x, "path")));
    n++;
  }
  json_decref(a), json_decref(b);
  return n;
}

int runs_hashes_keep_missing(const recipe *r, const char *old_json, int but_model, char **new_json) {
  json_t *o = json_loads(old_json ? old_json : "{}", 0, NULL), *nw = json_loads(*new_json ? *new_json : "{}", 0, NULL);
  char *tok_dir = tokenizer_dir(r);
  int kept = 0;
  const char *path;
  json_t *v;
  struct stat st;
  json_object_foreach(o, path, v) {
    if (!nw || json_object_get(nw, path) || stat(path, &st) == 0 || errno != ENOENT) continue;
    char *role = input_role(r, path, tok_dir);
    if (strcmp(role, path) && !(but_model && !strncmp(role, "model.", 6))) /* one of r's inputs, not a stray path */
      json_object_set(nw, path, v), kept++;
    free(role);
  }
  if (kept) {
    free(*new_json);
    *new_json = json_dumps(nw, JSON_SORT_KEYS | JSON_COMPACT);
  }
  free(tok_dir);
  json_decref(o), json_decref(nw);
  return kept;
}

int runs_model_source_missing(const recipe *r, const char *hashes_json, char **report) {
  json_t *o = json_loads(hashes_json ? hashes_json : "{}", 0, NULL);
  int n = 0;
  const char *path;
  json_t *v;
  struct stat st;
  json_object_foreach(o, path, v) {
    char *role = input_role(r, path, NULL);
    if (!strncmp(role, "model.", 6) && stat(path, &st) != 0)
      report_add(report, "  %s: %s (%s)", role, path, strerror(errno)), n++;
    free(role);
  }
  json_decref(o);
  return n;
}

int runs_inputs_changed(const char *stored_json, char **report) { return runs_inputs_check(stored_json, 0, report); }

int runs_inputs_check(const char *stored_json, int missing_only, char **report) {
  json_t *o = json_loads(stored_json ? stored_json : "{}", 0, NULL);
  int n = 0;
  const char *path;
  json_t *v;
  json_object_foreach(o, path, v) {
    char hex[65];
    rl_err fe;
    const char *want = json_string_value(v);
    if (sha256_file(path, hex, NULL, &fe)) report_add(report, "  input missing: %s (%s)", path, fe.msg), n++;
    else if (want && strcmp(hex, want) && !missing_only)
      report_add(report, "  input changed: %s (sha256 %.12s… was %.12s…)", path, hex, want), n++;
  }
  json_decref(o);
  return n;
}

/* The lines of a text (pointers into a copy; *n of them). */
static char **split_lines(char *text, int *n) {
  int cap = 64;
  char **v = rl_xmalloc((size_t)cap * sizeof *v);
  *n = 0;
  for (char *p = text; p && *p;) {
    char *nl = strchr(p, '\n');
    if (nl) *nl = 0;
    if (*n == cap) v = rl_xrealloc(v, (size_t)(cap *= 2) * sizeof *v);
    v[(*n)++] = p;
    p = nl ? nl + 1 : NULL;
  }
  return v;
}

/* A key a newer rlrun added whose default changes what a run does, and its
 * line as runs_compat_stored sets it for a run stored without it: that line
 * against no line is no change. */
#define COMPAT_GEN_EOS_KEY "rollout.generation_config_eos"
#define COMPAT_GEN_EOS_LINE "generation_config_eos: false"

/* A line without its "  # default" comment, for comparing values. */
static void strip_comment(const char *line, char *out, size_t n) {
  snprintf(out, n, "%s", line);
  char *c = strstr(out, "  # ");
  if (c) *c = 0;
}

/* One key of a resolved recipe: its sections' dotted path, its line (value
 * and key, indentation and comment dropped) and whether it is a default. */
typedef struct recipe_key {
  char sect[512], line[1024];
  char path[600];
  int is_default, matched;
} recipe_key;

/* The keys of a resolved text in order (*n of them): every "key: value" line
 * under its section headers ("name:" alone); comment lines are skipped. */
static recipe_key *recipe_keys(const char *text, int *n) {
  char *copy = rl_xstrdup(text ? text : "");
  int nl;
  char **l = split_lines(copy, &nl);
  recipe_key *k = rl_xcalloc((size_t)(nl > 0 ? nl : 1), sizeof *k);
  struct {
    int ind;
    char name[128];
  } st[32];
  int depth = 0;
  *n = 0;
  for (int i = 0; i < nl; i++) {
    char x[1024];
    strip_comment(l[i], x, sizeof x);
    const int ind = (int)strspn(x, " ");
    const char *body = x + ind;
    if (!*body || *body == '#') continue;
    while (depth > 0 && st[depth - 1].ind >= ind) depth--;
    const size_t kl = strcspn(body, ":");
    const char *rest = body + kl + (body[kl] == ':');
    rest += strspn(rest, " ");
    char sect[512] = "";
    for (int d = 0; d < depth; d++)
      snprintf(sect + strlen(sect), sizeof sect - strlen(sect), "%s%s", d ? "." : "", st[d].name);
    if (!*rest && body[kl] == ':') { /* a section header */
      if (depth < 32) st[depth].ind = ind, snprintf(st[depth].name, sizeof st[depth].name, "%.*s", (int)kl, body), depth++;
      continue;
    }
    recipe_key *r = &k[(*n)++];
    snprintf(r->sect, sizeof r->sect, "%s", sect);
    snprintf(r->line, sizeof r->line, "%s", body);
    snprintf(r->path, sizeof r->path, "%s%s%.*s", sect, sect[0] ? "." : "", (int)kl, body);
    r->is_default = strstr(l[i], "  # default") != NULL;
  }
  free(l), free(copy);
  return k;
}

int runs_recipe_changed(const char *old_text, const char *new_text, char **report) {
  return runs_recipe_changed_ex(old_text, new_text, report, NULL);
}

int runs_recipe_changed_ex(const char *old_text, const char *new_text, char **report, int *n_values) {
  /* compared key by key, not line by line: a key a newer rlrun added (or an older one had)
   * at its default value is no change, and one changed key is one line of the report */
  int na, nb, changed = 0;
  if (n_values) *n_values = 0;
  recipe_key *a = recipe_keys(old_text, &na), *b = recipe_keys(new_text, &nb);
  for (int i = 0; i < na; i++) {
    recipe_key *y = NULL;
    for (int j = 0; j < nb && !y; j++)
      if (!b[j].matched && !strcmp(a[i].path, b[j].path)) y = &b[j];
    if (y) y->matched = 1;
    if (y ? !strcmp(a[i].line, y->line) : a[i].is_default) continue;
    changed++;
    if (n_values && !recipe_key_is_path(recipe_key_index(a[i].path))) (*n_values)++;
    report_add(report, "  recipe changed%s%s: %s  →  %s", a[i].sect[0] ? " in " : "", a[i].sect, a[i].line,
               y ? y->line : "(none)");
  }
  for (int j = 0; j < nb; j++) {
    if (b[j].matched || b[j].is_default) continue;
    if (!strcmp(b[j].path, COMPAT_GEN_EOS_KEY) && !strcmp(b[j].line, COMPAT_GEN_EOS_LINE)) continue;
    changed++;
    if (n_values && !recipe_key_is_path(recipe_key_index(b[j].path))) (*n_values)++;
    report_add(report, "  recipe changed%s%s: (none)  →  %s", b[j].sect[0] ? " in " : "", b[j].sect, b[j].line);
  }
  free(a), free(b);
  return changed;
}

/* Indentation of a line. */
static int indent_of(const char *l) { return (int)strspn(l, " "); }

/* The resolved text reduced to the keys the recipe set: lines marked
 * "# default" and comment lines go (their defaults apply again), then section
 * headers left without children. The printer writes keys a given setting
 * makes meaningless (scale_fmt under bf16) as defaults, so this is what loads. */
static char *set_keys_only(const char *resolved) {
  char *copy = rl_xstrdup(resolved);
  int n;
  char **l = split_lines(copy, &n);
  char *keep = rl_xcalloc((size_t)n + 1, 1);
  for (int i = 0; i < n; i++) {
    const char *t = l[i] + indent_of(l[i]);
    size_t len = strlen(l[i]);
    keep[i] = *t && *t != '#' && !(len >= 9 && !strcmp(l[i] + len - 9, "# default"));
  }
  for (int changed = 1; changed;) {
    changed = 0;
    for (int i = 0; i < n; i++) {
      if (!keep[i]) continue;
      size_t len = strlen(l[i]);
      if (len == 0 || l[i][len - 1] != ':') continue; /* a section header ends with ':' */
      int j = i + 1;
      while (j < n && !keep[j]) j++;
      if (j >= n || indent_of(l[j]) <= indent_of(l[i])) keep[i] = 0, changed = 1;
    }
  }
  size_t total = strlen(resolved) + 2, at = 0;
  char *out = rl_xmalloc(total);
  for (int i = 0; i < n; i++)
    if (keep[i]) at += (size_t)sprintf(out + at, "%s\n", l[i]);
  out[at] = 0;
  free(keep), free(l), free(copy);
  return out;
}

/* Comment out line `line` (1-based) of text in place-ish (returns a new string). */
static char *comment_line(const char *text, int line) {
  size_t n = strlen(text);
  char *out = rl_xmalloc(n + 32);
  const char *p = text;
  for (int l = 1; l < line && p; l++) {
    p = strchr(p, '\n');
    if (p) p++;
  }
  if (!p) {
    memcpy(out, text, n + 1);
    return out;
  }
  size_t head = (size_t)(p - text), ind = strspn(p, " ");
  memcpy(out, text, head + ind);
  memcpy(out + head + ind, "# n/a: ", 7);
  memcpy(out + head + ind + 7, p + ind, n - head - ind + 1);
  return out;
}

char *runs_loadable_text(const char *resolved, const char *name) {
  char *text = rl_xstrdup(resolved);
  size_t nl = strlen(name);
  for (int round = 0; round < 64; round++) {
    recipe r;
    rl_err e;
    memset(&r, 0, sizeof r);
    if (!recipe_load_string(text, strlen(text), name, NULL, 0, RECIPE_NO_DATA, &r, &e)) {
      recipe_free(&r);
      return text;
    }
    /* the printer writes keys another setting makes meaningless (scale_fmt
     * under bf16) as their defaults: comment out each line the loader names */
    int fixed = 0;
    for (const char *m = strstr(e.msg, name); m; m = strstr(m + 1, name)) {
      int line = atoi(m + nl + 1);
      if (m[nl] != ':' || line <= 0) continue;
      char *next = comment_line(text, line);
      free(text);
      text = next;
      fixed = 1;
      break; /* line numbers hold: commenting keeps the line count */
    }
    if (!fixed) break;
  }
  free(text);
  return set_keys_only(resolved);
}

void runs_compat_stored(recipe *r, const char *stored) {
  /* rollout.generation_config_eos came in true: a run stored without it ran without those end ids */
  int i = recipe_key_index(COMPAT_GEN_EOS_KEY);
  if (stored && !strstr(stored, "generation_config_eos:") && i >= 0 && !r->key_set[i]) {
    r->rollout.generation_config_eos = 0;
    r->key_set[i] = 1; /* printed as set: the stored recipe keeps saying so */
  }
}

int runs_load_stored(const char *run_dir, const char *resolved, const char *const *sets, int n_sets, int flags,
                     recipe *r, rl_err *e) {
  char name[4200];
  snprintf(name, sizeof name, "%s/" RUNS_RESOLVED, run_dir);
  char *text = runs_loadable_text(resolved, name);
  int rc = recipe_load_string(text, strlen(text), name, sets, n_sets, flags, r, e);
  free(text);
  if (!rc) runs_compat_stored(r, resolved);
  return rc;
}

int runs_load_stored_recipe(const char *run_dir, const char *resolved, recipe *r, rl_err *e) {
  if (runs_load_stored(run_dir, resolved, NULL, 0, RECIPE_NO_DATA, r, e))
    return rl_err_prefix(e, "the run's stored recipe no longer validates (a file it names changed or is gone, or this "
                            "rlrun reads it otherwise): ");
  return 0;
}

/* One "# rlrun-input: sha256 HEX PATH" line of an export into sha and path (a
 * path written as a JSON string when it holds control characters); 1 when
 * the line is one. */
static int export_input_line(const char *line, char sha[65], char *path, size_t n) {
  char rest[PATH_MAX + 64];
  if (sscanf(line, "# rlrun-input: sha256 %64s %4159[^\n]", sha, rest) != 2) return 0;
  if (rest[0] != '"') {
    if (strlen(rest) >= n) return 0;
    memcpy(path, rest, strlen(rest) + 1);
    return 1;
  }
  json_t *j = json_loads(rest, JSON_DECODE_ANY, NULL);
  int ok = json_is_string(j) && strlen(json_string_value(j)) < n;
  if (ok) snprintf(path, n, "%s", json_string_value(j));
  json_decref(j);
  return ok;
}

int runs_check_export_content(const char *what, const char *text, const recipe *r, const char *hashes, rl_err *e) {
  json_t *want = json_object();
  int line = 1;
  for (const char *p = text; p && *p; line++) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    char buf[PATH_MAX + 128], sha[65], path[PATH_MAX];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf - 1 ? len : sizeof buf - 1), p);
    if (export_input_line(buf, sha, path, sizeof path)) json_object_set_new(want, path, json_string(sha));
    p = nl ? nl + 1 : NULL;
  }
  int rc = 0;
  if (json_object_size(want)) {
    /* the exported recipe as written (its inputs where the export found them) against the recipe as set */
    recipe old;
    rl_err le;
    char *wj = json_dumps(want, JSON_COMPACT), *msg = NULL;
    if (recipe_load_string(text, strlen(text), what, NULL, 0, RECIPE_NO_FS, &old, &le) == 0) {
      if (runs_inputs_compare(&old, wj, r, hashes, &msg))
        rc = rl_errf(e, RL_EXIT_STATE,
                     "%s: the inputs differ from the exported run's (not the same experiment):\n%s"
                     "point the --set values at the files of the export, or delete the '# rlrun-input:' lines to run "
                     "with these files", what, msg);
      recipe_free(&old);
    } else {
      rc = rl_errf(e, RL_EXIT_STATE, "%s: the exported recipe does not load as written (%s): its inputs cannot be "
                   "compared", what, le.msg);
    }
    free(msg), free(wj);
  }
  json_decref(want);
  return rc;
}

int runs_check_export(const char *what, const char *text, rl_err *e) {
  int line = 1, bad = 0;
  char *msg = NULL;
  for (const char *p = text; p && *p; line++) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    char buf[PATH_MAX + 128], hex[65], want[65], path[PATH_MAX];
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf - 1 ? len : sizeof buf - 1), p);
    if (export_input_line(buf, want, path, sizeof path)) {
      rl_err fe;
      if (sha256_file(path, hex, NULL, &fe))
        bad++, report_add(&msg, "  %s:%d: %s is missing", what, line, path);
      else if (strcmp(hex, want))
        bad++, report_add(&msg, "  %s:%d: %s has sha256 %.16s…, the export says %.16s…", what, line, path,
                          hex, want);
    }
    p = nl ? nl + 1 : NULL;
  }
  int rc = 0;
  if (bad)
    rc = rl_errf(e, RL_EXIT_STATE,
                 "%s: %d %s from the exported run (not the same experiment):\n%s"
                 "restore the inputs, point the recipe at where they are now (--set model.path=DIR ...: files "
                 "with the same contents pass), or delete the '# rlrun-input:' lines to run with these files",
                 what, bad, bad == 1 ? "input differs" : "inputs differ", msg);
  free(msg);
  return rc;
}

int runs_export(FILE *f, const store_run *run, rl_err *e) {
  fprintf(f, "# rlrun-export: rlrun %s, run %s (created %s with rlrun %s)\n", RLRUN_VERSION, run->id, run->created,
          run->rlrun_version);
  fprintf(f, "# `rlrun run` of this file checks that every input below has this sha256.\n");
  json_t *o = json_loads(run->input_hashes ? run->input_hashes : "{}", 0, NULL);
  if (!o) return rl_errf(e, RL_EXIT_STATE, "run %s: the recorded input hashes are not JSON", run->id);
  const char *path;
  json_t *v;
  json_object_foreach(o, path, v) {
    int plain = path[0] != '"';
    for (const char *c = path; plain && *c; c++) plain = (unsigned char)*c >= 0x20 && *c != 0x7f;
    json_t *js = plain ? NULL : json_string(path); /* a path with a newline would end the comment line */
    char *q = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
    fprintf(f, "# rlrun-input: sha256 %s %s\n", json_string_value(v), q ? q : path);
    free(q);
    json_decref(js);
  }
  json_decref(o);
  char *text = runs_loadable_text(run->recipe_resolved, "export");
  fputs(text, f);
  free(text);
  return 0;
}

/* The lock is a flock on the run directory itself: deleting or replacing the
 * `lock` file (which only names the holder's pid, for the refusal's message)
 * cannot let a second writer in. */
int runs_lock(const char *run_dir, rl_err *e) {
  char path[4200];
  snprintf(path, sizeof path, "%s/" RUNS_LOCK, run_dir);
  int dfd = open(run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot open the run directory to lock it: %s", run_dir, strerror(errno)), -1;
  /* a reader's probe (runs_is_locked: status, ls) holds a shared lock for an instant: try again for
   * up to ~0.2 s before taking the lock for another writer's */
  int held = flock(dfd, LOCK_EX | LOCK_NB) != 0;
  for (int i = 0; held && errno == EWOULDBLOCK && i < 20; i++) {
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
    held = flock(dfd, LOCK_EX | LOCK_NB) != 0;
  }
  if (held) {
    char pid[32] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? pread(fd, pid, sizeof pid - 1, 0) : -1;
    if (fd >= 0) close(fd);
    pid[got > 0 ? got : 0] = 0;
    pid[strcspn(pid, "\n")] = 0;
    close(dfd);
    rl_errf(e, RL_EXIT_STATE, "%s: another rlrun (pid %s) is working on this run; wait for it or stop it first",
            run_dir, pid[0] ? pid : "?");
    return -1;
  }
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) { /* informative only */
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)n, 0) < 0) { /* the message falls back to "pid ?" */ }
    close(fd);
  }
  return dfd;
}

int runs_is_locked(const char *run_dir) {
  int dfd = open(run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0;
  int locked = flock(dfd, LOCK_SH | LOCK_NB) != 0;
  close(dfd);
  return locked;
}

int runs_writable(const char *run_dir, char *why, size_t n) {
  /* access() answers for this user, and for root too on a read-only file system */
  const char *names[] = {"", RUNS_DB, RUNS_DB "-wal", RUNS_DB "-shm"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char path[4200];
    snprintf(path, sizeof path, "%s%s%s", run_dir, names[i][0] ? "/" : "", names[i]);
    if (i >= 2 && access(path, F_OK) != 0) continue; /* -wal and -shm come and go */
    if (access(path, W_OK) != 0) {
      if (why) snprintf(why, n, "%s is not writable (%s)", path, strerror(errno));
      return 0;
    }
  }
  return 1;
}

/* The checks every open of a run's store makes first, saying clearly what is wrong. */
static int runs_check_dir(const char *run_dir, char *path, size_t n, rl_err *e) {
  struct stat st;
  if (stat(run_dir, &st) != 0) return rl_errf(e, RL_EXIT_USAGE, "%s: no such run directory", run_dir);
  if (!S_ISDIR(st.st_mode)) /* it exists: say what it is instead of "no such" */
    return rl_errf(e, RL_EXIT_USAGE, "%s: is %s, not a run directory (give the directory `rlrun run` printed)",
                   run_dir, rl_file_kind(st.st_mode));
  snprintf(path, n, "%s/" RUNS_DB, run_dir);
  if (stat(path, &st) != 0) return rl_errf(e, RL_EXIT_USAGE, "%s: not a run directory (no " RUNS_DB ")", run_dir);
  return 0;
}

store *runs_open_store(const char *run_dir, rl_err *e) {
  char path[4200];
  return runs_check_dir(run_dir, path, sizeof path, e) ? NULL : store_open(path, 0, e);
}

store *runs_open_store_read(const char *run_dir, rl_err *e) {
  char path[4200];
  if (runs_check_dir(run_dir, path, sizeof path, e)) return NULL;
  return runs_writable(run_dir, NULL, 0) ? store_open(path, 0, e) : store_open_readonly(path, e);
}

int64_t runs_stored_iterations(const char *resolved) {
  const char *p = resolved ? strstr(resolved, "\nloop:") : NULL;
  const char *it = p ? strstr(p, "iterations:") : NULL;
  return it ? strtoll(it + 11, NULL, 10) : 0;
}

int runs_is_complete(const char *run_dir, int64_t *iters) {
  char db[4200];
  struct stat st;
  *iters = 0;
  if (snprintf(db, sizeof db, "%s/state.db", run_dir) >= (int)sizeof db || stat(db, &st) != 0) return -1;
  rl_err e;
  store *s = runs_open_store_read(run_dir, &e);
  if (!s) return -1;
  store_run run;
  memset(&run, 0, sizeof run);
  int rc = -1;
  if (!store_run_get(s, &run, &e)) {
    *iters = runs_stored_iterations(run.recipe_resolved);
    rc = *iters > 0 && loop_is_complete(s, *iters);
  }
  store_run_free(&run);
  store_close(s);
  return rc;
}
