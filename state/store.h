/* store.h — the SQLite run store (runs/<name>-<id>/state.db).
 *
 * One database per run. What it holds, table by table (schema in store.c):
 *   run        the one row describing the run: id, name, created (UTC ISO 8601),
 *              rlrun version, recipe as given, resolved recipe, input hashes (JSON)
 *   steps      (iteration, stage) → status pending|running|done|failed, attempts,
 *              started/finished (unix seconds), seconds, timings (JSON), error
 *   samples    (iteration, prompt_index, sample_index) → prompt, completion, token ids,
 *              log-probs, reward, extra fields (JSON), finish reason, routed experts
 *   metrics    (iteration, name) → value
 *   artifacts  path (relative to the run directory) → kind, iteration, size, sha256
 *   events     time, level, iteration, stage, message
 *
 * Guarantees: WAL journal; `application_id` = STORE_APPLICATION_ID; schema
 * version in `user_version`, upgraded by forward migrations on open (a newer
 * database is refused, RL_EXIT_STATE); `PRAGMA quick_check` on every open of an
 * existing database (corruption is reported, the file is never modified);
 * writers take the lock up front (BEGIN IMMEDIATE); explicit transactions
 * (store_begin … store_commit, e.g. a step's outputs plus its "done" mark)
 * commit with synchronous=FULL, and so do step marks, sample batches and
 * artifact records written on their own; events and metrics written on their
 * own commit with synchronous=NORMAL (WAL: never corrupt, and made durable by
 * the next FULL commit). Defensive settings: SQLITE_DBCONFIG_DEFENSIVE,
 * untrusted schema, foreign_keys on, a busy timeout. Every SQL failure is
 * reported with the statement and the extended result code.
 *
 * Blobs are little-endian: tokens int32, logprobs float32, routed experts as
 * the rollout engine lays them out (opaque here). Floats that are NaN are stored
 * as NULL by SQLite and read back as NaN.
 *
 *   rl_err e;
 *   store *s = store_open("runs/x/state.db", 1, &e);
 *   if (!s) { fprintf(stderr, "%s\n", e.msg); return e.code; }
 *   store_begin(s, &e); store_samples_put(s, v, n, &e);
 *   store_step_mark(s, 3, "rollout", STORE_STEP_DONE, NULL, NULL, &e); store_commit(s, &e);
 *   store_close(s);
 */
#ifndef RLRUN_STORE_H
#define RLRUN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/common.h"

#define STORE_APPLICATION_ID 0x524C524E /* "RLRN" */
#define STORE_SCHEMA_VERSION 2          /* newest schema this build writes */

typedef struct store store;

/* Open (create = 1: create when missing) a run store and migrate it to
 * STORE_SCHEMA_VERSION. Returns NULL with e set: RL_EXIT_USAGE when the file is
 * missing and create = 0, RL_EXIT_STATE when it is not an rlrun store, is
 * corrupt or has a newer schema, RL_EXIT_FAIL for I/O errors. */
store *store_open(const char *path, int create, rl_err *e);
/* The same, migrating only up to `version` (1..STORE_SCHEMA_VERSION); for tests
 * and tools that need an older schema. */
store *store_open_version(const char *path, int create, int version, rl_err *e);
/* Open an existing store read-only (never written, not migrated): for reading
 * a run whose directory this user cannot write (permissions, a read-only file
 * system). A store without uncheckpointed WAL content (state.db-wal absent or
 * empty) is read even where state.db-shm cannot be created. Errors as
 * store_open; a store that cannot be read for want of write access is
 * RL_EXIT_FAIL, never reported as damaged. */
store *store_open_readonly(const char *path, rl_err *e);
/* 1 when s was opened by store_open_readonly. */
int store_is_readonly(store *s);
void store_close(store *s);
/* Schema version of the open database (user_version). */
int store_schema_version(store *s);
/* The SQL of one migration step (1-based; that step yields `version`), or NULL. */
const char *store_migration_sql(int version);

/* Explicit write transaction (BEGIN IMMEDIATE, synchronous=FULL at commit).
 * Not nestable. Helpers called inside it join it (through a savepoint: a helper
 * that fails leaves the transaction as it was before the call); outside one
 * they commit on their own. */
int store_begin(store *s, rl_err *e);
int store_commit(store *s, rl_err *e);
/* Roll back the open transaction (no-op when none is open). */
void store_rollback(store *s);
/* 1 while an explicit transaction is open. */
int store_in_transaction(store *s);
/* The connection's PRAGMA synchronous now (1 NORMAL, 2 FULL; -1 on error); for tests. */
int store_sync_level(store *s);

/* ------------------------------------------------------------------ run */
typedef struct store_run {
  char *id;              /* "<name>-<timestamp>-<rand>" */
  char *name;
  char *created;         /* UTC, ISO 8601 (store fills it when NULL at init) */
  char *rlrun_version;   /* store fills RLRUN_VERSION when NULL at init */
  char *recipe;          /* the recipe text as given */
  char *recipe_resolved; /* the resolved recipe (YAML or JSON text) */
  char *input_hashes;    /* JSON object {"path": "sha256", …} */
} store_run;

/* Write the run's row (once; a second call fails with RL_EXIT_STATE). */
int store_run_init(store *s, const store_run *r, rl_err *e);
/* Read the run's row into malloc'd strings (free with store_run_free). Returns
 * RL_EXIT_STATE when the store has no run row yet. */
int store_run_get(store *s, store_run *out, rl_err *e);
/* Replace the recorded input hashes and resolved recipe (resume --allow-changed). */
int store_run_update(store *s, const char *recipe_resolved, const char *input_hashes, rl_err *e);
void store_run_free(store_run *r);

/* ------------------------------------------------------------------ steps */
enum store_step_status {
  STORE_STEP_NONE = -1, /* no row for this step */
  STORE_STEP_PENDING = 0,
  STORE_STEP_RUNNING = 1,
  STORE_STEP_DONE = 2,
  STORE_STEP_FAILED = 3
};
const char *store_step_status_name(int status);

/* Record a step's status. RUNNING stamps `started` and counts an attempt;
 * DONE and FAILED stamp `finished` and `seconds`. `error` (FAILED) and
 * `timings_json` may be NULL. A step already DONE is never changed: marking
 * it again fails with RL_EXIT_STATE ("a committed step is never redone"). */
int store_step_mark(store *s, int64_t iteration, const char *stage, int status, const char *error,
                    const char *timings_json, rl_err *e);
/* Status of one step (STORE_STEP_NONE when it has no row). */
int store_step_status(store *s, int64_t iteration, const char *stage, int *status, rl_err *e);

typedef struct store_step {
  int64_t iteration;
  char stage[32];
  int status;
  int attempts;
  double started, finished, seconds; /* NaN when not set */
  char *timings;                     /* JSON or NULL */
  char *error;                       /* or NULL */
} store_step;
/* Every step in plan order (iteration, then the order the steps were first
 * recorded). Free with store_steps_free. */
int store_steps_list(store *s, store_step **out, int *n, rl_err *e);
void store_steps_free(store_step *v, int n);
/* Count the steps with a status (-1: all). */
int store_steps_count(store *s, int status, int64_t *n, rl_err *e);

/* ------------------------------------------------------------------ samples */
typedef struct store_sample {
  int64_t iteration;
  int64_t prompt_index;  /* the prompt's position in the data stream (the group) */
  int32_t sample_index;  /* 0..G-1 within the group */
  const char *prompt;
  const char *completion;
  const int32_t *prompt_tokens; int32_t n_prompt_tokens; /* may be NULL/0 */
  const int32_t *tokens; int32_t n_tokens;               /* completion token ids */
  const float *logprobs; int32_t n_logprobs;             /* rollout log-probs */
  double reward;                                         /* NaN: not scored */
  const char *extra_json;      /* JSON object or NULL */
  const char *finish_reason;   /* "stop", "length", … or NULL */
  const void *routed_experts; size_t routed_experts_bytes; /* MoE R3 record or NULL */
} store_sample;

/* Samples read back: every pointer in v[] is owned by the list. */
typedef struct store_sample_list {
  store_sample *v;
  int n;
} store_sample_list;

/* Insert a batch of samples, all or nothing (one transaction, or one
 * savepoint inside the caller's). A sample already stored fails the batch. */
int store_samples_put(store *s, const store_sample *v, int n, rl_err *e);

enum store_sample_order {
  STORE_ORDER_INDEX = 0,       /* iteration, prompt_index, sample_index */
  STORE_ORDER_REWARD_DESC = 1, /* reward high to low (unscored last), then index */
  STORE_ORDER_REWARD_ASC = 2
};
typedef struct store_sample_query {
  int64_t iteration; /* -1: every iteration */
  int order;         /* enum store_sample_order */
  int limit;         /* 0: no limit */
  int with_blobs;    /* 0: skip tokens/logprobs/routed experts (listing) */
} store_sample_query;
int store_samples_query(store *s, const store_sample_query *q, store_sample_list *out, rl_err *e);
/* All samples of one iteration with their blobs, in index order. */
int store_samples_get(store *s, int64_t iteration, store_sample_list *out, rl_err *e);
void store_sample_list_free(store_sample_list *l);
/* Number of samples (iteration -1: all). */
int store_samples_count(store *s, int64_t iteration, int64_t *n, rl_err *e);

/* ------------------------------------------------------------------ metrics */
/* Set (or replace) a metric of an iteration. */
int store_metric_put(store *s, int64_t iteration, const char *name, double value, rl_err *e);
/* Read one metric; *found = 0 (and *value NaN) when absent. */
int store_metric_get(store *s, int64_t iteration, const char *name, double *value, int *found,
                     rl_err *e);
/* Call fn for every metric (name NULL: all names), ordered by iteration then
 * name; fn returning non-zero stops the walk. */
typedef int (*store_metric_fn)(void *ud, int64_t iteration, const char *name, double value);
int store_metrics_each(store *s, const char *name, store_metric_fn fn, void *ud, rl_err *e);
/* The distinct metric names, sorted (malloc'd array of malloc'd strings). */
int store_metric_names(store *s, char ***names, int *n, rl_err *e);
void store_strings_free(char **v, int n);

/* ------------------------------------------------------------------ artifacts */
typedef struct store_artifact {
  char path[1024];   /* relative to the run directory */
  char kind[32];     /* "checkpoint", "export", "log", … */
  int64_t iteration; /* -1 when not tied to one */
  int64_t size;
  char sha256[65];
  double created;    /* unix seconds */
} store_artifact;
/* Record (or replace) an artifact; created = now when 0. */
int store_artifact_put(store *s, const store_artifact *a, rl_err *e);
/* Look one up by path; *found = 0 when absent. */
int store_artifact_get(store *s, const char *path, store_artifact *out, int *found, rl_err *e);
int store_artifact_delete(store *s, const char *path, rl_err *e);
/* Walk the artifacts (kind NULL: all) by iteration then path; fn != 0 stops. */
typedef int (*store_artifact_fn)(void *ud, const store_artifact *a);
int store_artifacts_each(store *s, const char *kind, store_artifact_fn fn, void *ud, rl_err *e);

/* ------------------------------------------------------------------ events */
enum store_level { STORE_DEBUG = 0, STORE_INFO = 1, STORE_WARN = 2, STORE_ERROR = 3 };
const char *store_level_name(int level);
/* Append an event (iteration -1 and stage NULL when not tied to a step). */
int store_event(store *s, int level, int64_t iteration, const char *stage, rl_err *e,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));
typedef struct store_event_row {
  int64_t id;
  double time;
  int level;
  int64_t iteration; /* -1 when none */
  const char *stage; /* NULL when none */
  const char *message;
} store_event_row;
/* Walk the events with level >= min_level in order; fn != 0 stops. */
typedef int (*store_event_fn)(void *ud, const store_event_row *ev);
int store_events_each(store *s, int min_level, store_event_fn fn, void *ud, rl_err *e);

/* ------------------------------------------------------------------ status */
/* The metric the summary reports as the latest reward. */
#define STORE_METRIC_REWARD_MEAN "reward/mean"

/* What `rlrun status` and `rlrun ls` show, in one read. */
typedef struct store_summary {
  int64_t steps_total, steps_done, steps_failed, steps_running;
  int64_t last_done_iteration;   /* -1 when none */
  char last_done_stage[32];
  int64_t samples;
  int64_t warnings, errors;      /* events */
  double latest_reward_mean;     /* metric "reward/mean" of the newest iteration, NaN if none */
  int64_t latest_metric_iteration; /* -1 when no metric */
} store_summary;
int store_summary_get(store *s, store_summary *out, rl_err *e);

#endif
