/* store_int.h — internals shared by store.c and store_data.c (not for other modules). */
#ifndef RLRUN_STORE_INT_H
#define RLRUN_STORE_INT_H

#include <sqlite3.h>

#include "state/store.h"

struct store {
  sqlite3 *db;
  char path[1024]; /* for messages */
  int in_txn;      /* an explicit store_begin transaction is open */
  int version;     /* user_version after migration */
  int helper_durable; /* the helper transaction now open switched to synchronous=FULL */
  int readonly;       /* opened by store_open_readonly: never written */
};

/* Record an SQL failure: the statement (one line, shortened), SQLite's message,
 * the extended result code by name and number, and a hint. Returns the code. */
int store_sql_fail(store *s, rl_err *e, const char *sql, int rc);
int store_exec(store *s, const char *sql, rl_err *e);
int store_prepare(store *s, const char *sql, sqlite3_stmt **st, rl_err *e);
/* Step a write statement to completion; 0 or the recorded error. */
int store_step_done(store *s, sqlite3_stmt *st, rl_err *e);
/* A helper's own transaction: BEGIN IMMEDIATE (durable: committed with
 * synchronous=FULL), or a savepoint inside the caller's transaction. */
int store_tx_enter(store *s, int durable, rl_err *e);
/* Commit (ok) or undo what the helper did since store_tx_enter. */
int store_tx_leave(store *s, int ok, rl_err *e);
char *store_col_strdup(sqlite3_stmt *st, int col);
double store_col_double(sqlite3_stmt *st, int col);
/* Wall-clock unix time in seconds. */
double store_now(void);

#endif
