/* store_data.c — the run store's bulk data: samples, metrics, artifacts. */
#include "state/store_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ samples */

/* Bind a blob, or NULL when there is no data. */
static void bind_blob(sqlite3_stmt *st, int i, const void *p, size_t bytes) {
  if (p) sqlite3_bind_blob64(st, i, p, bytes, SQLITE_STATIC);
  else sqlite3_bind_null(st, i);
}

int store_samples_put(store *s, const store_sample *v, int n, rl_err *e) {
  if (n <= 0) return 0;
  const char *sql = "INSERT INTO samples(iteration, prompt_index, sample_index, prompt, completion, "
                    "prompt_tokens, tokens, logprobs, reward, extra, finish_reason, routed_experts) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)";
  if (store_tx_enter(s, 1, e)) return e ? e->code : RL_EXIT_FAIL;
  sqlite3_stmt *st;
  int err = store_prepare(s, sql, &st, e);
  for (int i = 0; !err && i < n; i++) {
    const store_sample *x = &v[i];
    if (x->n_tokens < 0 || x->n_logprobs < 0 || x->n_prompt_tokens < 0) {
      err = rl_errf(e, RL_EXIT_FAIL, "store_samples_put: negative length in sample %d of %d", i, n);
      break;
    }
    sqlite3_bind_int64(st, 1, x->iteration);
    sqlite3_bind_int64(st, 2, x->prompt_index);
    sqlite3_bind_int(st, 3, x->sample_index);
    sqlite3_bind_text(st, 4, x->prompt ? x->prompt : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, x->completion ? x->completion : "", -1, SQLITE_STATIC);
    bind_blob(st, 6, x->prompt_tokens, (size_t)x->n_prompt_tokens * 4);
    bind_blob(st, 7, x->tokens, (size_t)x->n_tokens * 4);
    bind_blob(st, 8, x->logprobs, (size_t)x->n_logprobs * 4);
    if (isnan(x->reward)) sqlite3_bind_null(st, 9);
    else sqlite3_bind_double(st, 9, x->reward);
    sqlite3_bind_text(st, 10, x->extra_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, x->finish_reason, -1, SQLITE_STATIC);
    bind_blob(st, 12, x->routed_experts, x->routed_experts_bytes);
    err = store_step_done(s, st, e);
    if (err)
      rl_err_prefix(e, "storing sample (iteration %lld, prompt %lld, sample %d): ",
                    (long long)x->iteration, (long long)x->prompt_index, x->sample_index);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
  }
  sqlite3_finalize(st);
  int lerr = store_tx_leave(s, !err, e);
  return err ? err : lerr;
}

/* Copy a blob column into a fresh array of `elem`-byte items; sets *count. */
static void *col_blob_copy(sqlite3_stmt *st, int col, size_t elem, int32_t *count) {
  int bytes = sqlite3_column_bytes(st, col);
  const void *p = sqlite3_column_blob(st, col);
  *count = 0;
  if (!p || bytes <= 0) return NULL;
  void *q = rl_xmalloc((size_t)bytes);
  memcpy(q, p, (size_t)bytes);
  *count = (int32_t)((size_t)bytes / elem);
  return q;
}

int store_samples_query(store *s, const store_sample_query *q, store_sample_list *out, rl_err *e) {
  out->v = NULL;
  out->n = 0;
  char sql[600];
  const char *order = q->order == STORE_ORDER_REWARD_DESC
                          ? "reward IS NULL, reward DESC, iteration, prompt_index, sample_index"
                      : q->order == STORE_ORDER_REWARD_ASC
                          ? "reward IS NULL, reward ASC, iteration, prompt_index, sample_index"
                          : "iteration, prompt_index, sample_index";
  snprintf(sql, sizeof sql,
           "SELECT iteration, prompt_index, sample_index, prompt, completion, %s, reward, extra, "
           "finish_reason FROM samples %s ORDER BY %s%s",
           q->with_blobs ? "prompt_tokens, tokens, logprobs, routed_experts"
                         : "NULL, NULL, NULL, NULL",
           q->iteration >= 0 ? "WHERE iteration = ?1" : "", order, q->limit > 0 ? " LIMIT ?2" : "");
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  if (q->iteration >= 0) sqlite3_bind_int64(st, 1, q->iteration);
  if (q->limit > 0) sqlite3_bind_int(st, 2, q->limit);
  int cap = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (out->n == cap) out->v = rl_xrealloc(out->v, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *out->v);
    store_sample *x = &out->v[out->n++];
    memset(x, 0, sizeof *x);
    x->iteration = sqlite3_column_int64(st, 0);
    x->prompt_index = sqlite3_column_int64(st, 1);
    x->sample_index = sqlite3_column_int(st, 2);
    x->prompt = store_col_strdup(st, 3);
    x->completion = store_col_strdup(st, 4);
    x->prompt_tokens = col_blob_copy(st, 5, 4, &x->n_prompt_tokens);
    x->tokens = col_blob_copy(st, 6, 4, &x->n_tokens);
    x->logprobs = col_blob_copy(st, 7, 4, &x->n_logprobs);
    int32_t nre = 0;
    x->routed_experts = col_blob_copy(st, 8, 1, &nre);
    x->routed_experts_bytes = (size_t)nre;
    x->reward = store_col_double(st, 9);
    x->extra_json = store_col_strdup(st, 10);
    x->finish_reason = store_col_strdup(st, 11);
  }
  int err = rc == SQLITE_DONE ? 0 : store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  if (err) store_sample_list_free(out);
  return err;
}

int store_samples_get(store *s, int64_t iteration, store_sample_list *out, rl_err *e) {
  store_sample_query q = {.iteration = iteration, .order = STORE_ORDER_INDEX, .with_blobs = 1};
  return store_samples_query(s, &q, out, e);
}

void store_sample_list_free(store_sample_list *l) {
  for (int i = 0; l->v && i < l->n; i++) {
    store_sample *x = &l->v[i];
    free((void *)x->prompt), free((void *)x->completion), free((void *)x->prompt_tokens);
    free((void *)x->tokens), free((void *)x->logprobs), free((void *)x->routed_experts);
    free((void *)x->extra_json), free((void *)x->finish_reason);
  }
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

int store_samples_count(store *s, int64_t iteration, int64_t *n, rl_err *e) {
  const char *sql = iteration >= 0 ? "SELECT count(*) FROM samples WHERE iteration = ?"
                                   : "SELECT count(*) FROM samples";
  sqlite3_stmt *st;
  *n = 0;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  if (iteration >= 0) sqlite3_bind_int64(st, 1, iteration);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *n = sqlite3_column_int64(st, 0);
  int err = rc == SQLITE_ROW ? 0 : store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  return err;
}

/* ------------------------------------------------------------------ metrics */

int store_metric_put(store *s, int64_t iteration, const char *name, double value, rl_err *e) {
  if (!name || !*name) return rl_errf(e, RL_EXIT_FAIL, "store_metric_put: empty metric name");
  const char *sql = "INSERT INTO metrics(iteration, name, value) VALUES (?,?,?) "
                    "ON CONFLICT(iteration, name) DO UPDATE SET value = excluded.value";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  sqlite3_bind_int64(st, 1, iteration);
  sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
  if (isnan(value)) sqlite3_bind_null(st, 3);
  else sqlite3_bind_double(st, 3, value);
  int err = store_step_done(s, st, e);
  sqlite3_finalize(st);
  return err;
}

int store_metric_get(store *s, int64_t iteration, const char *name, double *value, int *found,
                     rl_err *e) {
  *value = NAN;
  *found = 0;
  const char *sql = "SELECT value FROM metrics WHERE iteration = ? AND name = ?";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  sqlite3_bind_int64(st, 1, iteration);
  sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st), err = 0;
  if (rc == SQLITE_ROW) *value = store_col_double(st, 0), *found = 1;
  else if (rc != SQLITE_DONE) err = store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  return err;
}

int store_metrics_each(store *s, const char *name, store_metric_fn fn, void *ud, rl_err *e) {
  const char *sql = name ? "SELECT iteration, name, value FROM metrics WHERE name = ? "
                           "ORDER BY iteration"
                         : "SELECT iteration, name, value FROM metrics ORDER BY iteration, name";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  if (name) sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    if (fn(ud, sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
           store_col_double(st, 2))) {
      rc = SQLITE_DONE;
      break;
    }
  int err = rc == SQLITE_DONE ? 0 : store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  return err;
}

int store_metric_names(store *s, char ***names, int *n, rl_err *e) {
  *names = NULL;
  *n = 0;
  const char *sql = "SELECT DISTINCT name FROM metrics ORDER BY name";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  int cap = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (*n == cap) *names = rl_xrealloc(*names, (size_t)(cap = cap ? 2 * cap : 16) * sizeof **names);
    (*names)[(*n)++] = store_col_strdup(st, 0);
  }
  int err = rc == SQLITE_DONE ? 0 : store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  if (err) store_strings_free(*names, *n), *names = NULL, *n = 0;
  return err;
}

void store_strings_free(char **v, int n) {
  for (int i = 0; v && i < n; i++) free(v[i]);
  free(v);
}

/* ------------------------------------------------------------------ artifacts */

int store_artifact_put(store *s, const store_artifact *a, rl_err *e) {
  if (!a->path[0] || !a->kind[0] || strlen(a->sha256) != 64)
    return rl_errf(e, RL_EXIT_FAIL, "store_artifact_put: path, kind and a 64-hex sha256 are required"
                                    " (path '%s')", a->path);
  const char *sql = "INSERT INTO artifacts(path, kind, iteration, size, sha256, created) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT(path) DO UPDATE SET kind = excluded.kind, "
                    "iteration = excluded.iteration, size = excluded.size, "
                    "sha256 = excluded.sha256, created = excluded.created";
  sqlite3_stmt *st;
  if (store_tx_enter(s, 1, e)) return e ? e->code : RL_EXIT_FAIL;
  int err = store_prepare(s, sql, &st, e);
  if (!err) {
    sqlite3_bind_text(st, 1, a->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->kind, -1, SQLITE_STATIC);
    if (a->iteration >= 0) sqlite3_bind_int64(st, 3, a->iteration);
    sqlite3_bind_int64(st, 4, a->size);
    sqlite3_bind_text(st, 5, a->sha256, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 6, a->created > 0 ? a->created : store_now());
    err = store_step_done(s, st, e);
    sqlite3_finalize(st);
  }
  int lerr = store_tx_leave(s, !err, e);
  return err ? err : lerr;
}

/* Fill an artifact from a row of (path, kind, iteration, size, sha256, created). */
static void artifact_from_row(sqlite3_stmt *st, store_artifact *a) {
  memset(a, 0, sizeof *a);
  const char *t = (const char *)sqlite3_column_text(st, 0);
  snprintf(a->path, sizeof a->path, "%s", t ? t : "");
  t = (const char *)sqlite3_column_text(st, 1);
  snprintf(a->kind, sizeof a->kind, "%s", t ? t : "");
  a->iteration = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 2);
  a->size = sqlite3_column_int64(st, 3);
  t = (const char *)sqlite3_column_text(st, 4);
  snprintf(a->sha256, sizeof a->sha256, "%s", t ? t : "");
  a->created = sqlite3_column_double(st, 5);
}

int store_artifact_get(store *s, const char *path, store_artifact *out, int *found, rl_err *e) {
  *found = 0;
  memset(out, 0, sizeof *out);
  const char *sql = "SELECT path, kind, iteration, size, sha256, created FROM artifacts "
                    "WHERE path = ?";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st), err = 0;
  if (rc == SQLITE_ROW) artifact_from_row(st, out), *found = 1;
  else if (rc != SQLITE_DONE) err = store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  return err;
}

int store_artifact_delete(store *s, const char *path, rl_err *e) {
  const char *sql = "DELETE FROM artifacts WHERE path = ?";
  sqlite3_stmt *st;
  if (store_tx_enter(s, 1, e)) return e ? e->code : RL_EXIT_FAIL;
  int err = store_prepare(s, sql, &st, e);
  if (!err) {
    sqlite3_bind_text(st, 1, path, -1, SQLITE_STATIC);
    err = store_step_done(s, st, e);
    sqlite3_finalize(st);
  }
  int lerr = store_tx_leave(s, !err, e);
  return err ? err : lerr;
}

int store_artifacts_each(store *s, const char *kind, store_artifact_fn fn, void *ud, rl_err *e) {
  const char *sql = kind ? "SELECT path, kind, iteration, size, sha256, created FROM artifacts "
                           "WHERE kind = ? ORDER BY iteration, path"
                         : "SELECT path, kind, iteration, size, sha256, created FROM artifacts "
                           "ORDER BY iteration, path";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  if (kind) sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
  int rc;
  store_artifact a;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    artifact_from_row(st, &a);
    if (fn(ud, &a)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  int err = rc == SQLITE_DONE ? 0 : store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  return err;
}
