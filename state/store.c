/* store.c — the SQLite run store: open (checks, WAL, migrations), transactions,
 * the run row, steps and events. Samples, metrics and artifacts live in
 * store_data.c; shared internals in store_int.h. */
#include "state/store_int.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Forward migrations: entry v-1 turns schema v-1 into schema v. Append only;
 * never edit a step that has shipped. STRICT tables need SQLite >= 3.37 (linked
 * statically). */
static const char *const store_migrations[] = {
    /* v1: the tables */
    "CREATE TABLE run(\n"
    "  id TEXT PRIMARY KEY NOT NULL,\n"
    "  name TEXT NOT NULL,\n"
    "  created TEXT NOT NULL,\n"
    "  rlrun_version TEXT NOT NULL,\n"
    "  recipe TEXT NOT NULL,\n"
    "  recipe_resolved TEXT NOT NULL,\n"
    "  input_hashes TEXT NOT NULL DEFAULT '{}'\n"
    ") STRICT;\n"
    "CREATE TABLE steps(\n"
    "  iteration INTEGER NOT NULL,\n"
    "  stage TEXT NOT NULL,\n"
    "  status TEXT NOT NULL CHECK (status IN ('pending','running','done','failed')),\n"
    "  attempts INTEGER NOT NULL DEFAULT 0,\n"
    "  started REAL, finished REAL, seconds REAL,\n"
    "  timings TEXT,\n"
    "  error TEXT,\n"
    "  PRIMARY KEY (iteration, stage)\n"
    ") STRICT;\n"
    "CREATE TABLE samples(\n"
    "  iteration INTEGER NOT NULL,\n"
    "  prompt_index INTEGER NOT NULL,\n"
    "  sample_index INTEGER NOT NULL,\n"
    "  prompt TEXT NOT NULL,\n"
    "  completion TEXT NOT NULL,\n"
    "  prompt_tokens BLOB,\n"
    "  tokens BLOB,\n"
    "  logprobs BLOB,\n"
    "  reward REAL,\n"
    "  extra TEXT,\n"
    "  finish_reason TEXT,\n"
    "  routed_experts BLOB,\n"
    "  PRIMARY KEY (iteration, prompt_index, sample_index)\n"
    ") STRICT;\n"
    "CREATE TABLE metrics(\n"
    "  iteration INTEGER NOT NULL,\n"
    "  name TEXT NOT NULL,\n"
    "  value REAL,\n"
    "  PRIMARY KEY (iteration, name)\n"
    ") STRICT;\n"
    "CREATE TABLE artifacts(\n"
    "  path TEXT PRIMARY KEY NOT NULL,\n"
    "  kind TEXT NOT NULL,\n"
    "  iteration INTEGER,\n"
    "  size INTEGER NOT NULL,\n"
    "  sha256 TEXT NOT NULL CHECK (length(sha256) = 64),\n"
    "  created REAL NOT NULL\n"
    ") STRICT;\n"
    "CREATE TABLE events(\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  time REAL NOT NULL,\n"
    "  level TEXT NOT NULL CHECK (level IN ('debug','info','warn','error')),\n"
    "  iteration INTEGER,\n"
    "  stage TEXT,\n"
    "  message TEXT NOT NULL\n"
    ") STRICT;\n",
    /* v2: indexes for the query commands (samples --top, metrics NAME, checkpoints) */
    "CREATE INDEX samples_by_reward ON samples(iteration, reward);\n"
    "CREATE INDEX metrics_by_name ON metrics(name, iteration);\n"
    "CREATE INDEX artifacts_by_kind ON artifacts(kind, iteration);\n"
    "CREATE INDEX events_by_level ON events(level);\n",
};
_Static_assert(sizeof store_migrations / sizeof store_migrations[0] == STORE_SCHEMA_VERSION,
               "one migration per schema version");

const char *store_migration_sql(int version) {
  if (version < 1 || version > STORE_SCHEMA_VERSION) return NULL;
  return store_migrations[version - 1];
}

/* ------------------------------------------------------------------ errors */

/* Names of the result codes a user may meet; others print their number only. */
static const char *store_rc_name(int rc) {
  static const struct { int rc; const char *name; } names[] = {
      {SQLITE_ERROR, "SQLITE_ERROR"}, {SQLITE_BUSY, "SQLITE_BUSY"},
      {SQLITE_BUSY_SNAPSHOT, "SQLITE_BUSY_SNAPSHOT"}, {SQLITE_LOCKED, "SQLITE_LOCKED"},
      {SQLITE_NOMEM, "SQLITE_NOMEM"}, {SQLITE_READONLY, "SQLITE_READONLY"},
      {SQLITE_INTERRUPT, "SQLITE_INTERRUPT"}, {SQLITE_IOERR, "SQLITE_IOERR"},
      {SQLITE_IOERR_WRITE, "SQLITE_IOERR_WRITE"}, {SQLITE_IOERR_FSYNC, "SQLITE_IOERR_FSYNC"},
      {SQLITE_IOERR_READ, "SQLITE_IOERR_READ"}, {SQLITE_IOERR_SHORT_READ, "SQLITE_IOERR_SHORT_READ"},
      {SQLITE_CORRUPT, "SQLITE_CORRUPT"}, {SQLITE_CORRUPT_INDEX, "SQLITE_CORRUPT_INDEX"},
      {SQLITE_FULL, "SQLITE_FULL"}, {SQLITE_CANTOPEN, "SQLITE_CANTOPEN"},
      {SQLITE_CONSTRAINT, "SQLITE_CONSTRAINT"},
      {SQLITE_CONSTRAINT_PRIMARYKEY, "SQLITE_CONSTRAINT_PRIMARYKEY"},
      {SQLITE_CONSTRAINT_UNIQUE, "SQLITE_CONSTRAINT_UNIQUE"},
      {SQLITE_CONSTRAINT_CHECK, "SQLITE_CONSTRAINT_CHECK"},
      {SQLITE_CONSTRAINT_NOTNULL, "SQLITE_CONSTRAINT_NOTNULL"},
      {SQLITE_CONSTRAINT_DATATYPE, "SQLITE_CONSTRAINT_DATATYPE"},
      {SQLITE_MISMATCH, "SQLITE_MISMATCH"}, {SQLITE_MISUSE, "SQLITE_MISUSE"},
      {SQLITE_NOTADB, "SQLITE_NOTADB"}, {SQLITE_RANGE, "SQLITE_RANGE"},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (names[i].rc == rc) return names[i].name;
  return NULL;
}

int store_sql_fail(store *s, rl_err *e, const char *sql, int rc) {
  int ext = s && s->db ? sqlite3_extended_errcode(s->db) : rc;
  if ((ext & 0xff) != (rc & 0xff)) ext = rc; /* the db's last code is about another call */
  const char *msg = s && s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
  const char *name = store_rc_name(ext);
  if (!name) name = store_rc_name(ext & 0xff);
  const char *hint = "";
  int code = RL_EXIT_FAIL;
  switch (ext & 0xff) {
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    hint = "; another process holds this run's database (is another rlrun working on it?)";
    break;
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB:
    hint = "; the database is damaged: restore state.db from a copy";
    code = RL_EXIT_STATE;
    break;
  case SQLITE_FULL: hint = "; the disk is full: free space, then resume the run"; break;
  case SQLITE_READONLY:
  case SQLITE_CANTOPEN: hint = "; check that the run directory is writable"; break;
  case SQLITE_CONSTRAINT: code = RL_EXIT_STATE; break;
  default: break;
  }
  /* One line: squeeze whitespace out of multi-line SQL and cut it short. */
  char q[300];
  size_t n = 0;
  for (const char *p = sql ? sql : "?"; *p && n + 4 < sizeof q; p++) {
    char c = (*p == '\n' || *p == '\t') ? ' ' : *p;
    if (c == ' ' && n && q[n - 1] == ' ') continue;
    q[n++] = c;
  }
  if (sql && strlen(sql) > n) q[n++] = '.', q[n++] = '.', q[n++] = '.';
  q[n] = 0;
  return rl_errf(e, code, "%s: SQL error in `%s`: %s (%s, extended code %d)%s",
                 s ? s->path : "state.db", q, msg, name ? name : "?", ext, hint);
}

/* ------------------------------------------------------------------ small helpers */

double store_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int store_exec(store *s, const char *sql, rl_err *e) {
  int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
  return rc == SQLITE_OK ? 0 : store_sql_fail(s, e, sql, rc);
}

int store_prepare(store *s, const char *sql, sqlite3_stmt **st, rl_err *e) {
  int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);
  if (rc != SQLITE_OK) {
    *st = NULL;
    return store_sql_fail(s, e, sql, rc);
  }
  return 0;
}

int store_step_done(store *s, sqlite3_stmt *st, rl_err *e) {
  int rc = sqlite3_step(st);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) return 0;
  return store_sql_fail(s, e, sqlite3_sql(st), rc);
}

/* Run a query that yields one integer (0 when no row). */
static int store_query_int(store *s, const char *sql, int64_t *out, rl_err *e) {
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  int rc = sqlite3_step(st);
  *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  int err = (rc == SQLITE_ROW || rc == SQLITE_DONE) ? 0 : store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  return err;
}

char *store_col_strdup(sqlite3_stmt *st, int col) {
  const unsigned char *t = sqlite3_column_text(st, col);
  return t ? rl_xstrdup((const char *)t) : NULL;
}

double store_col_double(sqlite3_stmt *st, int col) {
  return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

/* ------------------------------------------------------------------ transactions */

int store_begin(store *s, rl_err *e) {
  if (s->in_txn)
    return rl_errf(e, RL_EXIT_FAIL, "%s: store_begin inside an open transaction (not nestable)",
                   s->path);
  /* The safety level can only change outside a transaction: step commits are FULL. */
  if (store_exec(s, "PRAGMA synchronous=FULL", e)) return e ? e->code : RL_EXIT_FAIL;
  if (store_exec(s, "BEGIN IMMEDIATE", e)) return e ? e->code : RL_EXIT_FAIL;
  s->in_txn = 1;
  return 0;
}

int store_commit(store *s, rl_err *e) {
  if (!s->in_txn) return rl_errf(e, RL_EXIT_FAIL, "%s: store_commit without store_begin", s->path);
  int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    int code = store_sql_fail(s, e, "COMMIT", rc);
    store_rollback(s);
    return code;
  }
  s->in_txn = 0;
  sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  return 0;
}

void store_rollback(store *s) {
  if (!s || !s->in_txn) return;
  if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  s->in_txn = 0;
  sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
}

int store_in_transaction(store *s) { return s->in_txn; }

int store_tx_enter(store *s, int durable, rl_err *e) {
  if (s->in_txn) return store_exec(s, "SAVEPOINT store_helper", e);
  s->helper_durable = durable;
  if (durable && store_exec(s, "PRAGMA synchronous=FULL", e)) return e ? e->code : RL_EXIT_FAIL;
  if (store_exec(s, "BEGIN IMMEDIATE", e)) {
    if (durable) sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
    s->helper_durable = 0;
    return e ? e->code : RL_EXIT_FAIL;
  }
  return 0;
}

int store_sync_level(store *s) {
  int64_t v = -1;
  return store_query_int(s, "PRAGMA synchronous", &v, NULL) ? -1 : (int)v;
}

int store_tx_leave(store *s, int ok, rl_err *e) {
  if (s->in_txn) {
    if (ok) return store_exec(s, "RELEASE store_helper", e);
    sqlite3_exec(s->db, "ROLLBACK TO store_helper; RELEASE store_helper", NULL, NULL, NULL);
    return 0;
  }
  int code = 0;
  if (ok) {
    int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) code = store_sql_fail(s, e, "COMMIT", rc);
  }
  if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  if (s->helper_durable) sqlite3_exec(s->db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
  s->helper_durable = 0;
  return code;
}

/* ------------------------------------------------------------------ open */

/* Checks on an existing file before anything writes to it: an SQLite file of
 * ours, not newer than this build, structurally sound. Never modifies it. */
static int store_check_existing(store *s, rl_err *e) {
  int64_t app = 0, ver = 0, ntables = 0;
  if (store_query_int(s, "PRAGMA application_id", &app, NULL) ||
      store_query_int(s, "PRAGMA user_version", &ver, NULL) ||
      store_query_int(s, "SELECT count(*) FROM sqlite_schema", &ntables, NULL)) {
    int ext = sqlite3_extended_errcode(s->db);
    const char *name = store_rc_name(ext) ? store_rc_name(ext) : store_rc_name(ext & 0xff);
    if ((ext & 0xff) == SQLITE_READONLY || (ext & 0xff) == SQLITE_CANTOPEN || (ext & 0xff) == SQLITE_PERM)
      /* WAL needs state.db-shm and -wal beside the file: a directory the user
       * cannot write is no damage (it said "restore state.db from a copy") */
      return rl_errf(e, RL_EXIT_FAIL,
                     "%s: cannot open the run store: %s (%s, extended code %d); the file is not damaged: "
                     "the run directory and its files must be writable (check their owner and permissions, "
                     "or a read-only file system)",
                     s->path, sqlite3_errmsg(s->db), name ? name : "?", ext);
    return rl_errf(e, RL_EXIT_STATE,
                   "%s: cannot read the run store: not an SQLite database, or its header is "
                   "damaged (%s: %s, extended code %d); the file was left as it is: restore "
                   "state.db from a copy, or start a new run",
                   s->path, sqlite3_errmsg(s->db), name ? name : "?", ext);
  }
  if (app == 0 && ver == 0 && ntables == 0) return 0; /* an empty database: initialise it */
  if ((uint32_t)app != STORE_APPLICATION_ID)
    return rl_errf(e, RL_EXIT_STATE,
                   "%s: not an rlrun state database (application_id 0x%08x, expected 0x%08x); "
                   "point rlrun at a run directory it created",
                   s->path, (unsigned)app, STORE_APPLICATION_ID);
  if (ver > STORE_SCHEMA_VERSION)
    return rl_errf(e, RL_EXIT_STATE,
                   "%s: schema version %lld is newer than this rlrun (" RLRUN_VERSION
                   ") supports (%d); open this run with the newer rlrun that wrote it",
                   s->path, (long long)ver, STORE_SCHEMA_VERSION);
  sqlite3_stmt *st;
  const char *sql = "PRAGMA quick_check(5)";
  int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return store_sql_fail(s, e, sql, rc);
  char found[1024] = "";
  size_t n = 0;
  int ok = 1;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *t = (const char *)sqlite3_column_text(st, 0);
    if (t && !strcmp(t, "ok")) continue;
    ok = 0;
    n += (size_t)snprintf(found + n, n < sizeof found ? sizeof found - n : 0, "%s%s",
                          n ? "; " : "", t ? t : "?");
    if (n >= sizeof found) n = sizeof found - 1;
  }
  for (char *c = found; *c; c++)
    if (*c == '\n') *c = ' '; /* quick_check reports on several lines: keep one */
  if (rc != SQLITE_DONE) {
    int ext = sqlite3_extended_errcode(s->db);
    const char *name = store_rc_name(ext) ? store_rc_name(ext) : store_rc_name(ext & 0xff);
    ok = 0;
    snprintf(found, sizeof found, "%s (%s, extended code %d)", sqlite3_errmsg(s->db),
             name ? name : "?", ext);
  }
  sqlite3_finalize(st);
  if (!ok)
    return rl_errf(e, RL_EXIT_STATE,
                   "%s: the run store is corrupt (quick_check: %s); the file was left as it is: "
                   "restore state.db from a copy, or start a new run",
                   s->path, found);
  return 0;
}

/* Apply the migrations from the current version up to `target`, each step in
 * its own transaction (the version re-read under the write lock, so two
 * processes opening an old store at once migrate it once). */
static int store_migrate(store *s, int target, rl_err *e) {
  int64_t now = 0;
  if (store_query_int(s, "PRAGMA user_version", &now, e)) return e ? e->code : RL_EXIT_FAIL;
  if (now >= target) { /* the common case: no write lock, so readers never wait for a writer */
    s->version = (int)now;
    return 0;
  }
  for (;;) {
    if (store_exec(s, "BEGIN IMMEDIATE", e)) return e ? e->code : RL_EXIT_FAIL;
    int64_t ver = 0;
    if (store_query_int(s, "PRAGMA user_version", &ver, e)) goto fail;
    if (ver >= target) {
      sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
      s->version = (int)ver;
      return 0;
    }
    if (ver == 0) {
      char sql[64];
      snprintf(sql, sizeof sql, "PRAGMA application_id=%d", (int)STORE_APPLICATION_ID);
      if (store_exec(s, sql, e)) goto fail;
    }
    if (store_exec(s, store_migrations[ver], e)) {
      rl_err_prefix(e, "migrating the run store from schema %lld to %lld: ", (long long)ver,
                    (long long)ver + 1);
      goto fail;
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version=%d", (int)ver + 1);
    if (store_exec(s, sql, e)) goto fail;
    int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
      store_sql_fail(s, e, "COMMIT", rc);
      goto fail;
    }
    continue;
  fail:
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return e ? e->code : RL_EXIT_FAIL;
  }
}

/* A path as an SQLite URI filename (file:…, with ?, #, % and bytes outside
 * ASCII percent-encoded) plus query; malloc'd. */
static char *store_uri(const char *path, const char *query) {
  size_t n = strlen(path);
  char *out = rl_xmalloc(3 * n + strlen(query) + 16), *o = out;
  o += sprintf(o, "file:");
  for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
    if (*p == '?' || *p == '#' || *p == '%' || *p <= 0x20 || *p >= 0x7f) o += sprintf(o, "%%%02X", *p);
    else *o++ = (char)*p;
  }
  sprintf(o, "?%s", query);
  return out;
}

/* Open an existing store read-only, for the read commands in a run directory
 * the user cannot write (permissions, a read-only file system, a run shared
 * read-only). WAL readers need state.db-shm: where it cannot be created and no
 * state.db-wal holds commits (a run that ended closes its WAL into state.db),
 * the file is opened immutable, the only way SQLite reads it then. */
static store *store_open_ro(const char *path, rl_err *e) {
  store *s = rl_xcalloc(1, sizeof *s);
  snprintf(s->path, sizeof s->path, "%s", path);
  s->readonly = 1;
  char wal[1100];
  struct stat wst;
  snprintf(wal, sizeof wal, "%s-wal", path);
  int no_wal = stat(wal, &wst) != 0 || wst.st_size == 0;
  for (int immutable = 0; immutable < 1 + no_wal; immutable++) {
    char *uri = store_uri(path, immutable ? "immutable=1" : "mode=ro");
    int rc = sqlite3_open_v2(uri, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOFOLLOW, NULL);
    free(uri);
    if (rc == SQLITE_OK) {
      sqlite3_extended_result_codes(s->db, 1);
      sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
      sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
      sqlite3_busy_timeout(s->db, 10000);
      rc = store_check_existing(s, e) ? SQLITE_ERROR : SQLITE_OK;
      int64_t ver = 0;
      if (rc == SQLITE_OK && store_query_int(s, "PRAGMA user_version", &ver, e)) rc = SQLITE_ERROR;
      if (rc == SQLITE_OK) {
        s->version = (int)ver;
        return s;
      }
    } else {
      store_sql_fail(s, e, "(open)", rc);
      rl_err_prefix(e, "cannot open the run store: ");
    }
    sqlite3_close_v2(s->db);
    s->db = NULL;
    if (e && e->code == RL_EXIT_STATE) break; /* damaged, not unreadable: said as it is */
  }
  free(s);
  return NULL;
}

/* store_open_version, or read-only (readonly = 1: an existing store, never written). */
static store *store_open_mode(const char *path, int create, int version, int readonly, rl_err *e) {
  if (version < 1 || version > STORE_SCHEMA_VERSION) {
    rl_errf(e, RL_EXIT_FAIL, "store_open_version: no schema version %d (1..%d)", version,
            STORE_SCHEMA_VERSION);
    return NULL;
  }
  struct stat sb;
  int exists = stat(path, &sb) == 0;
  if (!exists && !create) {
    rl_errf(e, RL_EXIT_USAGE, "%s: no run store here; give a run directory made by `rlrun run`",
            path);
    return NULL;
  }
  if (exists && !S_ISREG(sb.st_mode)) {
    rl_errf(e, RL_EXIT_USAGE, "%s: not a regular file (expected a run's state.db)", path);
    return NULL;
  }
  if (exists && sb.st_size == 0 && !create) {
    /* SQLite would take an empty file for a new database and write a fresh schema into it: a
     * truncated store must be refused and left as it is, like any other damaged one */
    rl_errf(e, RL_EXIT_STATE, "%s: the run store is empty (0 bytes): it was truncated or damaged, and the run's "
            "state (steps, samples, metrics, checkpoint records) is gone with it; restore state.db from a copy, "
            "or start the run again with `rlrun run`", path);
    return NULL;
  }
  if (readonly) return store_open_ro(path, e);
  store *s = rl_xcalloc(1, sizeof *s);
  snprintf(s->path, sizeof s->path, "%s", path);
  int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOFOLLOW;
  int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
  if (rc != SQLITE_OK) {
    store_sql_fail(s, e, "(open)", rc);
    rl_err_prefix(e, "cannot open the run store: ");
    store_close(s);
    return NULL;
  }
  sqlite3_extended_result_codes(s->db, 1);
  /* Defensive settings: no writes to shadow tables or the schema by SQL, no
   * functions with side effects from the schema, no double-quoted strings. */
  sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
  sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
  sqlite3_db_config(s->db, SQLITE_DBCONFIG_DQS_DDL, 0, (int *)NULL);
  sqlite3_db_config(s->db, SQLITE_DBCONFIG_DQS_DML, 0, (int *)NULL);
  sqlite3_db_config(s->db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)NULL);
  sqlite3_busy_timeout(s->db, 10000);
  if ((exists && sb.st_size > 0 && store_check_existing(s, e)) ||
      store_exec(s, "PRAGMA foreign_keys=ON", e)) {
    store_close(s);
    return NULL;
  }
  /* WAL: readers (rlrun status) never block the writer; switching needs no open transaction. */
  sqlite3_stmt *st;
  if (store_prepare(s, "PRAGMA journal_mode=WAL", &st, e)) {
    store_close(s);
    return NULL;
  }
  rc = sqlite3_step(st);
  const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
  int wal = mode && !strcmp(mode, "wal");
  if (!wal) {
    if (rc == SQLITE_ROW)
      rl_errf(e, RL_EXIT_FAIL, "%s: cannot switch the run store to WAL (journal_mode is %s); "
                               "put the run directory on a local file system", path, mode ? mode : "?");
    else
      store_sql_fail(s, e, "PRAGMA journal_mode=WAL", rc);
  }
  sqlite3_finalize(st);
  if (!wal || store_exec(s, "PRAGMA synchronous=NORMAL", e) || store_migrate(s, version, e)) {
    store_close(s);
    return NULL;
  }
  return s;
}

store *store_open_version(const char *path, int create, int version, rl_err *e) {
  return store_open_mode(path, create, version, 0, e);
}

store *store_open(const char *path, int create, rl_err *e) {
  return store_open_mode(path, create, STORE_SCHEMA_VERSION, 0, e);
}

store *store_open_readonly(const char *path, rl_err *e) {
  return store_open_mode(path, 0, STORE_SCHEMA_VERSION, 1, e);
}

int store_is_readonly(store *s) { return s->readonly; }

void store_close(store *s) {
  if (!s) return;
  if (s->db) {
    store_rollback(s);
    sqlite3_close_v2(s->db);
  }
  free(s);
}

int store_schema_version(store *s) { return s->version; }

/* ------------------------------------------------------------------ run */

/* UTC now as ISO 8601 with seconds. */
static void store_iso_now(char out[32]) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int store_run_init(store *s, const store_run *r, rl_err *e) {
  if (!r->id || !r->name || !r->recipe || !r->recipe_resolved)
    return rl_errf(e, RL_EXIT_FAIL, "store_run_init: id, name, recipe and recipe_resolved are required");
  int64_t have = 0;
  if (store_query_int(s, "SELECT count(*) FROM run", &have, e)) return e ? e->code : RL_EXIT_FAIL;
  if (have)
    return rl_errf(e, RL_EXIT_STATE, "%s: this store already holds a run; a run is initialised once",
                   s->path);
  char created[32];
  store_iso_now(created);
  const char *sql = "INSERT INTO run(id, name, created, rlrun_version, recipe, recipe_resolved, "
                    "input_hashes) VALUES (?,?,?,?,?,?,?)";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, r->name, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, r->created ? r->created : created, -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(st, 4, r->rlrun_version ? r->rlrun_version : RLRUN_VERSION, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, r->recipe, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 6, r->recipe_resolved, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 7, r->input_hashes ? r->input_hashes : "{}", -1, SQLITE_STATIC);
  int err = store_step_done(s, st, e);
  sqlite3_finalize(st);
  return err;
}

int store_run_get(store *s, store_run *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  const char *sql = "SELECT id, name, created, rlrun_version, recipe, recipe_resolved, input_hashes "
                    "FROM run LIMIT 1";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  int rc = sqlite3_step(st), err = 0;
  if (rc == SQLITE_ROW) {
    char **f[] = {&out->id, &out->name, &out->created, &out->rlrun_version,
                  &out->recipe, &out->recipe_resolved, &out->input_hashes};
    for (int i = 0; i < 7; i++) *f[i] = store_col_strdup(st, i);
  } else if (rc == SQLITE_DONE) {
    err = rl_errf(e, RL_EXIT_STATE, "%s: the store holds no run yet (the run was never started?)",
                  s->path);
  } else {
    err = store_sql_fail(s, e, sql, rc);
  }
  sqlite3_finalize(st);
  return err;
}

int store_run_update(store *s, const char *recipe_resolved, const char *input_hashes, rl_err *e) {
  const char *sql = "UPDATE run SET recipe_resolved = coalesce(?1, recipe_resolved), "
                    "input_hashes = coalesce(?2, input_hashes)";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  sqlite3_bind_text(st, 1, recipe_resolved, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, input_hashes, -1, SQLITE_STATIC);
  int err = store_step_done(s, st, e);
  if (!err && sqlite3_changes(s->db) != 1)
    err = rl_errf(e, RL_EXIT_STATE, "%s: the store holds no run to update", s->path);
  sqlite3_finalize(st);
  return err;
}

void store_run_free(store_run *r) {
  if (!r) return;
  free(r->id), free(r->name), free(r->created), free(r->rlrun_version);
  free(r->recipe), free(r->recipe_resolved), free(r->input_hashes);
  memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------ steps */

static const char *const step_names[] = {"pending", "running", "done", "failed"};

const char *store_step_status_name(int status) {
  return status >= 0 && status <= 3 ? step_names[status] : "none";
}

static int step_status_parse(const char *t) {
  for (int i = 0; i < 4; i++)
    if (t && !strcmp(t, step_names[i])) return i;
  return STORE_STEP_NONE;
}

int store_step_status(store *s, int64_t iteration, const char *stage, int *status, rl_err *e) {
  *status = STORE_STEP_NONE;
  const char *sql = "SELECT status FROM steps WHERE iteration = ? AND stage = ?";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  sqlite3_bind_int64(st, 1, iteration);
  sqlite3_bind_text(st, 2, stage, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st), err = 0;
  if (rc == SQLITE_ROW) *status = step_status_parse((const char *)sqlite3_column_text(st, 0));
  else if (rc != SQLITE_DONE) err = store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  return err;
}

int store_step_mark(store *s, int64_t iteration, const char *stage, int status, const char *error,
                    const char *timings_json, rl_err *e) {
  if (status < STORE_STEP_PENDING || status > STORE_STEP_FAILED)
    return rl_errf(e, RL_EXIT_FAIL, "store_step_mark: bad status %d", status);
  if (!stage || !*stage || strlen(stage) >= 32)
    return rl_errf(e, RL_EXIT_FAIL, "store_step_mark: stage name must be 1..31 characters");
  if (store_tx_enter(s, 1, e)) return e ? e->code : RL_EXIT_FAIL;
  int cur, err = store_step_status(s, iteration, stage, &cur, e);
  if (!err && cur == STORE_STEP_DONE)
    err = rl_errf(e, RL_EXIT_STATE,
                  "%s: step %s#%lld is already done and cannot be marked %s (a committed step is "
                  "never redone)",
                  s->path, stage, (long long)iteration, step_names[status]);
  if (!err) {
    const char *sql;
    if (status == STORE_STEP_RUNNING)
      sql = "INSERT INTO steps(iteration, stage, status, attempts, started) VALUES (?1,?2,?3,1,?4) "
            "ON CONFLICT(iteration, stage) DO UPDATE SET status = ?3, attempts = attempts + 1, "
            "started = ?4, finished = NULL, seconds = NULL, error = NULL";
    else if (status == STORE_STEP_PENDING)
      sql = "INSERT INTO steps(iteration, stage, status) VALUES (?1,?2,?3) "
            "ON CONFLICT(iteration, stage) DO UPDATE SET status = ?3";
    else
      sql = "INSERT INTO steps(iteration, stage, status, finished, error, timings) "
            "VALUES (?1,?2,?3,?4,?5,?6) ON CONFLICT(iteration, stage) DO UPDATE SET status = ?3, "
            "finished = ?4, seconds = ?4 - started, error = ?5, timings = coalesce(?6, timings)";
    sqlite3_stmt *st;
    err = store_prepare(s, sql, &st, e);
    if (!err) {
      sqlite3_bind_int64(st, 1, iteration);
      sqlite3_bind_text(st, 2, stage, -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 3, step_names[status], -1, SQLITE_STATIC);
      if (status >= STORE_STEP_RUNNING) sqlite3_bind_double(st, 4, store_now());
      if (status >= STORE_STEP_DONE) {
        sqlite3_bind_text(st, 5, status == STORE_STEP_FAILED ? error : NULL, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, timings_json, -1, SQLITE_STATIC);
      }
      err = store_step_done(s, st, e);
      sqlite3_finalize(st);
    }
  }
  int lerr = store_tx_leave(s, !err, e);
  return err ? err : lerr;
}

int store_steps_list(store *s, store_step **out, int *n, rl_err *e) {
  *out = NULL;
  *n = 0;
  const char *sql = "SELECT iteration, stage, status, attempts, started, finished, seconds, "
                    "timings, error FROM steps ORDER BY iteration, rowid";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  int cap = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (*n == cap) *out = rl_xrealloc(*out, (size_t)(cap = cap ? 2 * cap : 16) * sizeof **out);
    store_step *p = &(*out)[(*n)++];
    memset(p, 0, sizeof *p);
    p->iteration = sqlite3_column_int64(st, 0);
    const char *stage = (const char *)sqlite3_column_text(st, 1);
    snprintf(p->stage, sizeof p->stage, "%s", stage ? stage : "");
    p->status = step_status_parse((const char *)sqlite3_column_text(st, 2));
    p->attempts = sqlite3_column_int(st, 3);
    p->started = store_col_double(st, 4);
    p->finished = store_col_double(st, 5);
    p->seconds = store_col_double(st, 6);
    p->timings = store_col_strdup(st, 7);
    p->error = store_col_strdup(st, 8);
  }
  int err = rc == SQLITE_DONE ? 0 : store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  if (err) store_steps_free(*out, *n), *out = NULL, *n = 0;
  return err;
}

void store_steps_free(store_step *v, int n) {
  for (int i = 0; v && i < n; i++) free(v[i].timings), free(v[i].error);
  free(v);
}

int store_steps_count(store *s, int status, int64_t *n, rl_err *e) {
  char sql[96];
  if (status < 0) snprintf(sql, sizeof sql, "SELECT count(*) FROM steps");
  else snprintf(sql, sizeof sql, "SELECT count(*) FROM steps WHERE status = '%s'",
                store_step_status_name(status));
  return store_query_int(s, sql, n, e);
}

/* ------------------------------------------------------------------ events */

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *store_level_name(int level) {
  return level >= 0 && level <= 3 ? level_names[level] : "info";
}

int store_event(store *s, int level, int64_t iteration, const char *stage, rl_err *e,
                const char *fmt, ...) {
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char *sql = "INSERT INTO events(time, level, iteration, stage, message) VALUES (?,?,?,?,?)";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  sqlite3_bind_double(st, 1, store_now());
  sqlite3_bind_text(st, 2, store_level_name(level), -1, SQLITE_STATIC);
  if (iteration >= 0) sqlite3_bind_int64(st, 3, iteration);
  sqlite3_bind_text(st, 4, stage, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, msg, -1, SQLITE_STATIC);
  int err = store_step_done(s, st, e);
  sqlite3_finalize(st);
  return err;
}

int store_events_each(store *s, int min_level, store_event_fn fn, void *ud, rl_err *e) {
  const char *sql = "SELECT id, time, level, iteration, stage, message FROM events ORDER BY id";
  sqlite3_stmt *st;
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    store_event_row ev = {0};
    ev.id = sqlite3_column_int64(st, 0);
    ev.time = sqlite3_column_double(st, 1);
    const char *lv = (const char *)sqlite3_column_text(st, 2);
    ev.level = STORE_INFO;
    for (int i = 0; i < 4; i++)
      if (lv && !strcmp(lv, level_names[i])) ev.level = i;
    if (ev.level < min_level) continue;
    ev.iteration = sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 3);
    ev.stage = (const char *)sqlite3_column_text(st, 4);
    ev.message = (const char *)sqlite3_column_text(st, 5);
    if (fn(ud, &ev)) {
      rc = SQLITE_DONE;
      break;
    }
  }
  int err = rc == SQLITE_DONE ? 0 : store_sql_fail(s, e, sql, rc);
  sqlite3_finalize(st);
  return err;
}

/* ------------------------------------------------------------------ summary */

int store_summary_get(store *s, store_summary *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  out->last_done_iteration = -1;
  out->latest_metric_iteration = -1;
  out->latest_reward_mean = NAN;
  if (store_steps_count(s, -1, &out->steps_total, e) ||
      store_steps_count(s, STORE_STEP_DONE, &out->steps_done, e) ||
      store_steps_count(s, STORE_STEP_FAILED, &out->steps_failed, e) ||
      store_steps_count(s, STORE_STEP_RUNNING, &out->steps_running, e) ||
      store_samples_count(s, -1, &out->samples, e) ||
      store_query_int(s, "SELECT count(*) FROM events WHERE level = 'warn'", &out->warnings, e) ||
      store_query_int(s, "SELECT count(*) FROM events WHERE level = 'error'", &out->errors, e))
    return e ? e->code : RL_EXIT_FAIL;
  sqlite3_stmt *st;
  const char *sql = "SELECT iteration, stage FROM steps WHERE status = 'done' "
                    "ORDER BY iteration DESC, finished DESC, rowid DESC LIMIT 1";
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  if (sqlite3_step(st) == SQLITE_ROW) {
    out->last_done_iteration = sqlite3_column_int64(st, 0);
    const char *t = (const char *)sqlite3_column_text(st, 1);
    snprintf(out->last_done_stage, sizeof out->last_done_stage, "%s", t ? t : "");
  }
  sqlite3_finalize(st);
  sql = "SELECT max(iteration) FROM metrics";
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
    out->latest_metric_iteration = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sql = "SELECT value FROM metrics WHERE name = '" STORE_METRIC_REWARD_MEAN "' "
        "ORDER BY iteration DESC LIMIT 1";
  if (store_prepare(s, sql, &st, e)) return e ? e->code : RL_EXIT_FAIL;
  if (sqlite3_step(st) == SQLITE_ROW) out->latest_reward_mean = store_col_double(st, 0);
  sqlite3_finalize(st);
  return 0;
}
