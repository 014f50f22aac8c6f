/* ckpt.c — writing, recording, verifying and pruning run checkpoints (ckpt.h). */
#include "state/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "state/ckpt_dir.h"
#include "state/fault.h"
#include "state/rundir.h"
#include "state/sha256.h"

void ckpt_info_free(ckpt_info *i) {
  if (!i) return;
  free(i->extra_json);
  i->extra_json = NULL;
}

void ckpt_rel_dir(int64_t iteration, char *out, size_t outsz) {
  snprintf(out, outsz, CKPT_SUBDIR "/step-%06lld", (long long)iteration);
}

void ckpt_file_path(const char *run_dir, int64_t iteration, const char *name, char *out, size_t outsz) {
  char rel[64];
  ckpt_rel_dir(iteration, rel, sizeof rel);
  if (name) snprintf(out, outsz, "%s/%s/%s", run_dir, rel, name);
  else snprintf(out, outsz, "%s/%s", run_dir, rel);
}

/* The error of an injected failure at `point`: what a full disk would say. */
static int ckpt_injected(rl_err *e, const char *path, const char *point) {
  return rl_errf(e, RL_EXIT_FAIL, "%s: write failed: %s (injected at %s by RLRUN_FAULT)", path,
                 strerror(ENOSPC), point);
}

/* Write one safetensors file of tensors t[0..n) at path (fsynced). */
static int ckpt_write_tensors(const char *path, const ckpt_tensor *t, int n, const char *point,
                              rl_err *e) {
  st_writer *w = st_writer_new(path);
  int rc = st_writer_meta(w, "format", "pt", e);
  for (int i = 0; i < n && !rc; i++) rc = st_writer_add(w, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, e);
  if (!rc) rc = st_writer_begin(w, e);
  for (int i = 0; i < n && !rc; i++) {
    uint64_t numel = 1;
    for (int d = 0; d < t[i].ndim; d++) numel *= (uint64_t)t[i].shape[d];
    rc = st_writer_write(w, t[i].name, t[i].data, (size_t)(numel * st_dtype_size(t[i].dtype)), e);
    if (!rc && i == n / 2 && fault_hit(point)) rc = ckpt_injected(e, path, point);
  }
  if (rc) {
    st_writer_abort(w);
    return rc;
  }
  return st_writer_finish(w, e);
}

int ckpt_write_weights_file(const char *path, const ckpt_tensor *t, int n, rl_err *e) {
  return ckpt_write_tensors(path, t, n, "ckpt.write_weights_file", e);
}

/* Hash the files of a directory listed in names into a manifest "files" object. */
static int ckpt_hash_files(const char *dir, const char *const *names, int n, json_t *files, rl_err *e) {
  for (int i = 0; i < n; i++) {
    char path[4400], hex[65];
    uint64_t size = 0;
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (sha256_file(path, hex, &size, e)) return e->code;
    json_object_set_new(files, names[i], json_pack("{s:I,s:s}", "size", (json_int_t)size, "sha256", hex));
  }
  return 0;
}

/* The manifest's JSON text (malloc'd). */
static char *ckpt_manifest_text(const ckpt_content *c, json_t *files) {
  json_t *extra = NULL;
  if (c->extra_json) extra = json_loads(c->extra_json, 0, NULL);
  if (!json_is_object(extra)) {
    json_decref(extra);
    extra = json_object();
  }
  char created[32];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
  json_t *m = json_pack("{s:s,s:i,s:I,s:I,s:s,s:s,s:O,s:o}", "format", CKPT_FORMAT, "version",
                        CKPT_FORMAT_VERSION, "iteration", (json_int_t)c->iteration, "data_cursor",
                        (json_int_t)c->data_cursor, "rlrun_version", RLRUN_VERSION, "created", created,
                        "files", files, "extra", extra);
  char *text = json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(m);
  return text;
}

/* 1 when the store records a checkpoint at iteration. */
static int ckpt_is_recorded(store *s, int64_t iteration, rl_err *e) {
  int64_t *v = NULL;
  int n = 0, found = 0;
  if (ckpt_list(s, &v, &n, e)) return -1;
  for (int i = 0; i < n; i++) found |= v[i] == iteration;
  free(v);
  return found;
}

/* Record the published checkpoint's files and mark its step: one transaction. */
static int ckpt_record(const char *run_dir, store *s, int64_t iteration, const char *const *names, int n,
                       rl_err *e) {
  char rel[64];
  ckpt_rel_dir(iteration, rel, sizeof rel);
  if (store_begin(s, e)) return e->code;
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) {
    store_artifact a = {0};
    char path[4400];
    uint64_t size = 0;
    snprintf(a.path, sizeof a.path, "%s/%s", rel, names[i]);
    snprintf(path, sizeof path, "%s/%s", run_dir, a.path);
    snprintf(a.kind, sizeof a.kind, "%s", CKPT_KIND);
    a.iteration = iteration;
    rc = sha256_file(path, a.sha256, &size, e);
    a.size = (int64_t)size;
    if (!rc) rc = store_artifact_put(s, &a, e);
  }
  int status = STORE_STEP_NONE;
  if (!rc) rc = store_step_status(s, iteration, CKPT_STAGE, &status, e);
  if (!rc && status != STORE_STEP_DONE)
    rc = store_step_mark(s, iteration, CKPT_STAGE, STORE_STEP_DONE, NULL, NULL, e);
  if (!rc) rc = store_commit(s, e);
  if (rc) store_rollback(s);
  return rc;
}

int ckpt_write(const char *run_dir, store *s, const ckpt_content *c, rl_err *e) {
  char out[4200], tmp[4300], parent[4200];
  ckpt_file_path(run_dir, c->iteration, NULL, out, sizeof out);
  snprintf(parent, sizeof parent, "%s/" CKPT_SUBDIR, run_dir);
  if (s) {
    int rec = ckpt_is_recorded(s, c->iteration, e);
    if (rec < 0) return e->code;
    if (rec) return ckpt_verify(run_dir, s, c->iteration, e); /* written before: idempotent */
  }
  if (c->n_copies > CKPT_MAX_COPIES)
    return rl_errf(e, RL_EXIT_FAIL, "checkpoint: %d files to copy (at most %d)", c->n_copies, CKPT_MAX_COPIES);
  if (mkdir(parent, 0755) != 0 && errno != EEXIST)
    return rl_errf(e, RL_EXIT_FAIL, "%s: cannot create: %s", parent, strerror(errno));
  snprintf(tmp, sizeof tmp, "%s/.tmp-step-%06lld-%ld", parent, (long long)c->iteration, (long)getpid());
  if (ckpt_dir_remove(tmp, e)) return e->code;
  if (mkdir(tmp, 0755) != 0) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot create: %s", tmp, strerror(errno));

  const char *names[4 + CKPT_MAX_COPIES];
  int n = 0, rc = 0;
  char path[4400];
  snprintf(path, sizeof path, "%s/" CKPT_WEIGHTS, tmp);
  rc = ckpt_write_tensors(path, c->weights, c->n_weights, "ckpt.write_weights", e);
  names[n++] = CKPT_WEIGHTS;
  if (!rc && c->n_optim > 0) {
    snprintf(path, sizeof path, "%s/" CKPT_OPTIM, tmp);
    rc = ckpt_write_tensors(path, c->optim, c->n_optim, "ckpt.write_optim", e);
    names[n++] = CKPT_OPTIM;
  }
  if (!rc && c->config_json) {
    snprintf(path, sizeof path, "%s/" CKPT_CONFIG, tmp);
    rc = rundir_write_atomic(path, c->config_json, strlen(c->config_json), e);
    names[n++] = CKPT_CONFIG;
  }
  for (int i = 0; i < c->n_copies && !rc; i++) {
    const char *base = c->copies[i].name;
    if (!*base || strchr(base, '/') || base[0] == '.' || !strcmp(base, CKPT_WEIGHTS) ||
        !strcmp(base, CKPT_OPTIM) || !strcmp(base, CKPT_CONFIG) || !strcmp(base, CKPT_MANIFEST)) {
      rc = rl_errf(e, RL_EXIT_FAIL, "checkpoint: %s cannot be copied in as '%s'", c->copies[i].src, base);
      break;
    }
    snprintf(path, sizeof path, "%s/%s", tmp, base);
    rc = ckpt_dir_copy_file(c->copies[i].src, path, e);
    names[n++] = base;
  }
  if (!rc) {
    json_t *files = json_object();
    rc = ckpt_hash_files(tmp, names, n, files, e);
    if (!rc) {
      char *text = ckpt_manifest_text(c, files);
      snprintf(path, sizeof path, "%s/" CKPT_MANIFEST, tmp);
      rc = rundir_write_atomic(path, text, strlen(text), e);
      free(text);
      names[n++] = CKPT_MANIFEST;
    }
    json_decref(files);
  }
  if (!rc && fault_hit("ckpt.before_publish")) rc = ckpt_injected(e, tmp, "ckpt.before_publish");
  if (!rc) rc = ckpt_dir_publish(tmp, out, 1, e);
  if (rc) {
    rl_err ignore;
    ckpt_dir_remove(tmp, &ignore);
    char rel[64];
    ckpt_rel_dir(c->iteration, rel, sizeof rel);
    return rl_err_prefix(e, "checkpoint %s was not written (earlier checkpoints are intact; fix the "
                            "cause, then resume): ", rel);
  }
  if (!s) return 0;
  if (fault_hit("ckpt.before_record")) return ckpt_injected(e, out, "ckpt.before_record");
  return ckpt_record(run_dir, s, c->iteration, names, n, e);
}

/* Collects distinct iterations of checkpoint artifacts (walk in iteration order). */
typedef struct iter_acc {
  int64_t *v;
  int n, cap;
} iter_acc;

static int ckpt_collect_iter(void *ud, const store_artifact *a) {
  iter_acc *acc = ud;
  if (acc->n && acc->v[acc->n - 1] == a->iteration) return 0;
  if (acc->n == acc->cap) {
    acc->cap = acc->cap ? 2 * acc->cap : 16;
    acc->v = rl_xrealloc(acc->v, (size_t)acc->cap * sizeof *acc->v);
  }
  acc->v[acc->n++] = a->iteration;
  return 0;
}

int ckpt_list(store *s, int64_t **iters, int *n, rl_err *e) {
  iter_acc acc = {0};
  if (store_artifacts_each(s, CKPT_KIND, ckpt_collect_iter, &acc, e)) {
    free(acc.v);
    return e->code;
  }
  *iters = acc.v;
  *n = acc.n;
  return 0;
}

/* Collects the artifacts of one iteration. */
typedef struct art_acc {
  int64_t iteration;
  store_artifact *v;
  int n, cap;
} art_acc;

static int ckpt_collect_art(void *ud, const store_artifact *a) {
  art_acc *acc = ud;
  if (a->iteration != acc->iteration) return 0;
  if (acc->n == acc->cap) {
    acc->cap = acc->cap ? 2 * acc->cap : 8;
    acc->v = rl_xrealloc(acc->v, (size_t)acc->cap * sizeof *acc->v);
  }
  acc->v[acc->n++] = *a;
  return 0;
}

int ckpt_verify(const char *run_dir, store *s, int64_t iteration, rl_err *e) {
  art_acc acc = {.iteration = iteration};
  if (store_artifacts_each(s, CKPT_KIND, ckpt_collect_art, &acc, e)) {
    free(acc.v);
    return e->code;
  }
  char rel[64];
  ckpt_rel_dir(iteration, rel, sizeof rel);
  int rc = acc.n ? 0 : rl_errf(e, RL_EXIT_STATE, "%s/%s: no checkpoint is recorded for iteration %lld",
                               run_dir, rel, (long long)iteration);
  for (int i = 0; i < acc.n && !rc; i++) {
    char path[4400], hex[65];
    uint64_t size = 0;
    snprintf(path, sizeof path, "%s/%s", run_dir, acc.v[i].path);
    rl_err fe;
    if (sha256_file(path, hex, &size, &fe))
      rc = rl_errf(e, RL_EXIT_STATE,
                   "%s: checkpoint file is missing or unreadable (%s); restore the directory %s, or "
                   "remove it entirely to resume from the previous checkpoint",
                   path, fe.msg, rel);
    else if ((int64_t)size != acc.v[i].size || strcmp(hex, acc.v[i].sha256))
      rc = rl_errf(e, RL_EXIT_STATE,
                   "%s: checkpoint file changed after it was written: sha256 %s (%llu bytes), "
                   "recorded %s (%lld bytes); restore the file, or remove the directory %s entirely "
                   "to resume from the previous checkpoint",
                   path, hex, (unsigned long long)size, acc.v[i].sha256, (long long)acc.v[i].size, rel);
  }
  free(acc.v);
  return rc;
}

/* Collects the artifacts of the iterations after one. */
typedef struct after_acc {
  int64_t after;
  store_artifact *v;
  int n, cap;
} after_acc;

static int ckpt_collect_after(void *ud, const store_artifact *a) {
  after_acc *acc = ud;
  if (a->iteration <= acc->after) return 0;
  if (acc->n == acc->cap) {
    acc->cap = acc->cap ? 2 * acc->cap : 8;
    acc->v = rl_xrealloc(acc->v, (size_t)acc->cap * sizeof *acc->v);
  }
  acc->v[acc->n++] = *a;
  return 0;
}

int ckpt_forget_after(store *s, int64_t iteration, int64_t **iters, int *n, rl_err *e) {
  if (iters) *iters = NULL;
  if (n) *n = 0;
  after_acc acc = {.after = iteration};
  if (store_artifacts_each(s, CKPT_KIND, ckpt_collect_after, &acc, e)) {
    free(acc.v);
    return e->code;
  }
  int own = !store_in_transaction(s), rc = 0;
  if (acc.n && own) rc = store_begin(s, e);
  for (int i = 0; i < acc.n && !rc; i++) rc = store_artifact_delete(s, acc.v[i].path, e);
  if (acc.n && own) {
    if (!rc) rc = store_commit(s, e);
    else store_rollback(s);
  }
  if (!rc && iters && n) { /* distinct iterations, ascending (the walk's order) */
    for (int i = 0; i < acc.n; i++) {
      if (*n && (*iters)[*n - 1] == acc.v[i].iteration) continue;
      *iters = rl_xrealloc(*iters, (size_t)(*n + 1) * sizeof **iters);
      (*iters)[(*n)++] = acc.v[i].iteration;
    }
  }
  free(acc.v);
  return rc;
}

int ckpt_read_manifest(const char *dir, ckpt_info *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  char path[4400];
  snprintf(path, sizeof path, "%s/" CKPT_MANIFEST, dir);
  json_error_t je;
  json_t *m = json_load_file(path, 0, &je);
  if (!m) return rl_errf(e, RL_EXIT_STATE, "%s:%d: cannot read the checkpoint manifest: %s", path, je.line, je.text);
  const char *fmt = json_string_value(json_object_get(m, "format"));
  json_t *it = json_object_get(m, "iteration"), *cur = json_object_get(m, "data_cursor");
  int rc = 0;
  if (!fmt || strcmp(fmt, CKPT_FORMAT) || !json_is_integer(it) || !json_is_integer(cur))
    rc = rl_errf(e, RL_EXIT_STATE, "%s: not an rlrun checkpoint manifest (format, iteration or data_cursor missing)", path);
  else if (json_integer_value(json_object_get(m, "version")) > CKPT_FORMAT_VERSION)
    rc = rl_errf(e, RL_EXIT_STATE, "%s: checkpoint format version %lld is newer than this rlrun reads (%d); upgrade rlrun",
                 path, (long long)json_integer_value(json_object_get(m, "version")), CKPT_FORMAT_VERSION);
  if (!rc) {
    out->iteration = json_integer_value(it);
    out->data_cursor = json_integer_value(cur);
    snprintf(out->dir, sizeof out->dir, "%s", dir);
    const char *v = json_string_value(json_object_get(m, "rlrun_version"));
    snprintf(out->rlrun_version, sizeof out->rlrun_version, "%s", v ? v : "?");
    json_t *x = json_object_get(m, "extra");
    out->extra_json = x ? json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS) : rl_xstrdup("{}");
  }
  json_decref(m);
  return rc;
}

int ckpt_latest(const char *run_dir, store *s, ckpt_info *out, int *found, rl_err *e) {
  *found = 0;
  memset(out, 0, sizeof *out);
  int64_t *v = NULL;
  int n = 0;
  if (ckpt_list(s, &v, &n, e)) return e->code;
  int rc = 0;
  for (int i = n - 1; i >= 0 && !rc && !*found; i--) {
    char dir[4200];
    struct stat st;
    ckpt_file_path(run_dir, v[i], NULL, dir, sizeof dir);
    if (stat(dir, &st) != 0) continue; /* removed by hand: fall back to the one before */
    rc = ckpt_verify(run_dir, s, v[i], e);
    if (!rc) rc = ckpt_read_manifest(dir, out, e);
    if (!rc && out->iteration != v[i])
      rc = rl_errf(e, RL_EXIT_STATE, "%s: manifest says iteration %lld, its directory %lld", dir,
                   (long long)out->iteration, (long long)v[i]);
    if (!rc) *found = 1;
  }
  free(v);
  return rc;
}

int ckpt_retain(const char *run_dir, store *s, int64_t keep_last, int64_t keep_every, int *n_removed,
                rl_err *e) {
  if (n_removed) *n_removed = 0;
  int64_t *v = NULL;
  int n = 0;
  if (ckpt_list(s, &v, &n, e)) return e->code;
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) {
    int keep = keep_last <= 0 || i >= n - keep_last || (keep_every > 0 && v[i] % keep_every == 0);
    if (keep) continue;
    art_acc acc = {.iteration = v[i]};
    rc = store_artifacts_each(s, CKPT_KIND, ckpt_collect_art, &acc, e);
    if (!rc) rc = store_begin(s, e);
    for (int j = 0; j < acc.n && !rc; j++) rc = store_artifact_delete(s, acc.v[j].path, e);
    if (!rc) rc = store_commit(s, e);
    else store_rollback(s);
    free(acc.v);
    char dir[4200];
    ckpt_file_path(run_dir, v[i], NULL, dir, sizeof dir);
    if (!rc) rc = ckpt_dir_remove(dir, e);
    if (!rc && n_removed) (*n_removed)++;
  }
  free(v);
  return rc;
}

int ckpt_clean_stale(const char *run_dir, store *s, int *n_removed, rl_err *e) {
  if (n_removed) *n_removed = 0;
  char parent[4200];
  snprintf(parent, sizeof parent, "%s/" CKPT_SUBDIR, run_dir);
  DIR *d = opendir(parent);
  if (!d) return 0;
  int64_t *v = NULL;
  int n = 0;
  if (ckpt_list(s, &v, &n, e)) {
    closedir(d);
    return e->code;
  }
  int rc = 0;
  struct dirent *de;
  while (!rc && (de = readdir(d))) {
    long long it = -1;
    char tail = 0;
    int stale = !strncmp(de->d_name, ".tmp-", 5) || strstr(de->d_name, ".old.") != NULL;
    if (!stale && sscanf(de->d_name, "step-%lld%c", &it, &tail) == 1) {
      stale = 1;
      for (int i = 0; i < n; i++)
        if (v[i] == it) stale = 0;
    }
    if (!stale) continue;
    char path[4500];
    snprintf(path, sizeof path, "%s/%s", parent, de->d_name);
    rc = ckpt_dir_remove(path, e);
    if (!rc && n_removed) (*n_removed)++;
  }
  closedir(d);
  free(v);
  return rc;
}
