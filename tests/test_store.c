/* test_store.c — sha256 vectors and the SQLite run store: schema, migrations,
 * refusals (newer, foreign, corrupt), transactions, every table's API. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "state/rundir.h"
#include "state/sha256.h"
#include "state/store.h"

/* ------------------------------------------------------------------ sha256 */

static void hex_of(const void *p, size_t n, char hex[65]) {
  uint8_t d[32];
  sha256_buf(p, n, d);
  sha256_hex(d, hex);
}

TEST(sha256_fips_vectors) {
  char h[65];
  hex_of("", 0, h);
  CHECK_STREQ(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  hex_of("abc", 3, h);
  CHECK_STREQ(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  hex_of(m448, strlen(m448), h);
  CHECK_STREQ(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopq"
                     "klmnopqrlmnopqrsmnopqrstnopqrstu";
  hex_of(m896, strlen(m896), h);
  CHECK_STREQ(h, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  /* One million 'a', fed in uneven pieces (exercises the partial-block path). */
  char *a = malloc(1000000);
  memset(a, 'a', 1000000);
  sha256_ctx c;
  sha256_init(&c);
  for (size_t off = 0, step = 1; off < 1000000; off += step, step = step * 7 % 1013 + 1)
    sha256_update(&c, a + off, off + step > 1000000 ? 1000000 - off : step);
  uint8_t d[32];
  sha256_final(&c, d);
  sha256_hex(d, h);
  CHECK_STREQ(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  free(a);
}

TEST(sha256_file_matches_buffer) {
  unsigned char b[768];
  for (int i = 0; i < 768; i++) b[i] = (unsigned char)i;
  char path[700], h[65];
  snprintf(path, sizeof path, "%s/bytes.bin", harness_tmpdir());
  FILE *f = fopen(path, "wb");
  REQUIRE(f && fwrite(b, 1, sizeof b, f) == sizeof b);
  fclose(f);
  uint64_t size = 0;
  rl_err e;
  CHECK_EQ_I64(sha256_file(path, h, &size, &e), 0);
  CHECK_EQ_I64(size, 768);
  CHECK_STREQ(h, "f3a25aa93aa2fbba28d79260535bbd6a5eb0fc1c24a8b0f04e12b484c1dfe363");
  snprintf(path, sizeof path, "%s/none.bin", harness_tmpdir());
  CHECK_EQ_I64(sha256_file(path, h, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "none.bin: cannot open");
}

/* ------------------------------------------------------------------ helpers */

static char *db_path(const char *name) {
  static char p[800];
  snprintf(p, sizeof p, "%s/%s", harness_tmpdir(), name);
  return p;
}

/* One integer from a raw SQL query on a second connection (-1 on error). */
static long long raw_int(const char *path, const char *sql) {
  sqlite3 *db;
  long long v = -1;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return v;
}

static int raw_exec(const char *path, const char *sql) {
  sqlite3 *db;
  int rc = sqlite3_open(path, &db);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  sqlite3_close(db);
  return rc;
}

static void file_hash(const char *path, char h[65]) {
  rl_err e;
  if (sha256_file(path, h, NULL, &e)) snprintf(h, 65, "unreadable");
}

/* n samples of one iteration: prompt p, G = 2 samples each, with blobs. */
static void make_samples(store_sample *v, int n, int64_t iteration, int32_t *tok, float *lp) {
  for (int i = 0; i < 6; i++) tok[i] = 100 + i, lp[i] = -0.25f * (float)i;
  for (int i = 0; i < n; i++) {
    memset(&v[i], 0, sizeof v[i]);
    v[i].iteration = iteration;
    v[i].prompt_index = i / 2;
    v[i].sample_index = i % 2;
    v[i].prompt = "2+2=";
    v[i].completion = i % 2 ? "5" : "4";
    v[i].tokens = tok;
    v[i].n_tokens = 1 + i % 6;
    v[i].logprobs = lp;
    v[i].n_logprobs = 1 + i % 6;
    v[i].reward = i % 2 ? 0.0 : 1.0 + i;
    v[i].extra_json = "{\"answer\":\"4\"}";
    v[i].finish_reason = "stop";
  }
}

/* ------------------------------------------------------------------ open, schema */

TEST(store_create_sets_pragmas_and_schema) {
  rl_err e;
  char *p = db_path("state.db");
  store *s = store_open(p, 1, &e);
  REQUIRE(s);
  CHECK_EQ_I64(store_schema_version(s), STORE_SCHEMA_VERSION);
  store_close(s);
  CHECK_EQ_I64(raw_int(p, "PRAGMA application_id"), 0x524C524E);
  CHECK_EQ_I64(raw_int(p, "PRAGMA user_version"), 2);
  CHECK_EQ_I64(raw_int(p, "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"), 6);
  /* WAL is a persistent property of the file: header bytes 18 and 19 are 2. */
  unsigned char hdr[20] = {0};
  FILE *f = fopen(p, "rb");
  REQUIRE(f && fread(hdr, 1, 20, f) == 20);
  fclose(f);
  CHECK_EQ_I64(hdr[18], 2);
  CHECK_EQ_I64(hdr[19], 2);
  /* Reopen: same version, nothing re-created. */
  s = store_open(p, 0, &e);
  REQUIRE(s);
  CHECK_EQ_I64(store_schema_version(s), 2);
  store_close(s);
}

TEST(store_missing_file_without_create) {
  rl_err e;
  store *s = store_open(db_path("nope.db"), 0, &e);
  CHECK(s == NULL);
  CHECK_EQ_I64(e.code, RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "nope.db: no run store here");
  CHECK(access(db_path("nope.db"), F_OK) != 0);
}

/* An emptied (0-byte) state.db is a damaged store, refused as one (exit 4) and
 * left as it is: SQLite would take it for a new database and write a schema
 * into it, and the run would look "never started". */
TEST(store_empty_file_is_refused_as_damaged) {
  rl_err e;
  char *p = db_path("empty.db");
  REQUIRE(harness_write_file(p, "") == 0);
  store *s = store_open(p, 0, &e);
  CHECK(s == NULL);
  CHECK_EQ_I64(e.code, RL_EXIT_STATE);
  char want[1200];
  snprintf(want, sizeof want, "%s: the run store is empty (0 bytes): it was truncated or damaged, and the run's "
           "state (steps, samples, metrics, checkpoint records) is gone with it; restore state.db from a copy, or "
           "start the run again with `rlrun run`", p);
  CHECK_STREQ(e.msg, want);
  struct stat st;
  REQUIRE(stat(p, &st) == 0);
  CHECK_EQ_I64(st.st_size, 0); /* nothing written */
  CHECK(access(db_path("empty.db-wal"), F_OK) != 0);
  store_close(s);
}

TEST(store_migrates_v1_to_latest_keeping_data) {
  rl_err e;
  char *p = db_path("old.db");
  store *s = store_open_version(p, 1, 1, &e);
  REQUIRE(s);
  CHECK_EQ_I64(store_schema_version(s), 1);
  store_sample v[4];
  int32_t tok[6];
  float lp[6];
  make_samples(v, 4, 1, tok, lp);
  CHECK_EQ_I64(store_samples_put(s, v, 4, &e), 0);
  CHECK_EQ_I64(store_metric_put(s, 1, "reward/mean", 0.5, &e), 0);
  store_close(s);
  CHECK_EQ_I64(raw_int(p, "PRAGMA user_version"), 1);
  CHECK_EQ_I64(raw_int(p, "SELECT count(*) FROM sqlite_schema WHERE name = 'samples_by_reward'"), 0);
  /* Newer code opens it: migrated forward, data kept. */
  s = store_open(p, 0, &e);
  REQUIRE(s);
  CHECK_EQ_I64(store_schema_version(s), 2);
  int64_t n = -1;
  CHECK_EQ_I64(store_samples_count(s, 1, &n, &e), 0);
  CHECK_EQ_I64(n, 4);
  double val;
  int found;
  CHECK_EQ_I64(store_metric_get(s, 1, "reward/mean", &val, &found, &e), 0);
  CHECK_EQ_I64(found, 1);
  CHECK_NEAR(val, 0.5, 0);
  store_close(s);
  CHECK_EQ_I64(raw_int(p, "PRAGMA user_version"), 2);
  CHECK_EQ_I64(raw_int(p, "SELECT count(*) FROM sqlite_schema WHERE name = 'samples_by_reward'"), 1);
  CHECK(store_migration_sql(1) && strstr(store_migration_sql(1), "CREATE TABLE samples"));
  CHECK(store_migration_sql(3) == NULL);
}

TEST(store_refuses_newer_schema) {
  rl_err e;
  char *p = db_path("new.db");
  store *s = store_open(p, 1, &e);
  REQUIRE(s);
  store_close(s);
  REQUIRE(raw_exec(p, "PRAGMA user_version = 3") == SQLITE_OK);
  char before[65], after[65];
  file_hash(p, before);
  s = store_open(p, 0, &e);
  CHECK(s == NULL);
  CHECK_EQ_I64(e.code, RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "schema version 3 is newer than this rlrun");
  CHECK_CONTAINS(e.msg, "supports (2)");
  file_hash(p, after);
  CHECK_STREQ(after, before);
  store_close(s);
}

TEST(store_refuses_foreign_database) {
  rl_err e;
  char *p = db_path("other.db");
  REQUIRE(raw_exec(p, "CREATE TABLE t(x); INSERT INTO t VALUES (1)") == SQLITE_OK);
  store *s = store_open(p, 0, &e);
  CHECK(s == NULL);
  CHECK_EQ_I64(e.code, RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "not an rlrun state database (application_id 0x00000000");
  CHECK_EQ_I64(raw_int(p, "SELECT x FROM t"), 1);
}

/* Build a store with enough rows to span several pages; returns its path. */
static char *make_populated_store(const char *name) {
  rl_err e;
  char *p = db_path(name);
  store *s = store_open(p, 1, &e);
  if (!s) return p;
  store_sample v[200];
  int32_t tok[6];
  float lp[6];
  make_samples(v, 200, 1, tok, lp);
  store_samples_put(s, v, 200, &e);
  store_close(s);
  return p;
}

TEST(store_corrupt_page_is_refused_and_left_alone) {
  char *p = make_populated_store("corrupt.db");
  long long pages = raw_int(p, "PRAGMA page_count");
  REQUIRE(pages >= 4);
  /* Overwrite page 3 (a b-tree page) with garbage. */
  FILE *f = fopen(p, "r+b");
  REQUIRE(f);
  unsigned char junk[4096];
  memset(junk, 0xA5, sizeof junk);
  long psz = (long)raw_int(p, "PRAGMA page_size");
  REQUIRE(psz > 0 && psz <= 4096);
  fseek(f, 2 * psz, SEEK_SET);
  REQUIRE(fwrite(junk, 1, (size_t)psz, f) == (size_t)psz);
  fclose(f);
  char before[65], after[65];
  file_hash(p, before);
  rl_err e;
  store *s = store_open(p, 0, &e);
  CHECK(s == NULL);
  CHECK_EQ_I64(e.code, RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "the run store is corrupt (quick_check: *** in database main *** Page 3");
  CHECK_CONTAINS(e.msg, "left as it is");
  CHECK(strchr(e.msg, '\n') == NULL);
  file_hash(p, after);
  CHECK_STREQ(after, before);
  store_close(s);
}

TEST(store_corrupt_header_is_refused) {
  char *p = make_populated_store("header.db");
  FILE *f = fopen(p, "r+b");
  REQUIRE(f);
  fwrite("this is not sqlite!!", 1, 20, f);
  fclose(f);
  rl_err e;
  store *s = store_open(p, 0, &e);
  CHECK(s == NULL);
  CHECK_EQ_I64(e.code, RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "cannot read the run store: not an SQLite database");
  CHECK_CONTAINS(e.msg, "SQLITE_NOTADB, extended code 26");
  store_close(s);
}

/* ------------------------------------------------------------------ transactions */

TEST(store_rollback_leaves_no_partial_batch) {
  rl_err e;
  store *s = store_open(db_path("tx.db"), 1, &e);
  REQUIRE(s);
  store_sample v[6];
  int32_t tok[6];
  float lp[6];
  make_samples(v, 6, 2, tok, lp);
  /* Whole transaction rolled back: nothing stays. Explicit transactions run
   * with synchronous=FULL (2), the connection otherwise NORMAL (1). */
  CHECK_EQ_I64(store_sync_level(s), 1);
  CHECK_EQ_I64(store_begin(s, &e), 0);
  CHECK_EQ_I64(store_sync_level(s), 2);
  CHECK_EQ_I64(store_samples_put(s, v, 6, &e), 0);
  CHECK_EQ_I64(store_step_mark(s, 2, "rollout", STORE_STEP_DONE, NULL, NULL, &e), 0);
  store_rollback(s);
  CHECK_EQ_I64(store_sync_level(s), 1);
  int64_t n = -1;
  int st;
  CHECK_EQ_I64(store_samples_count(s, -1, &n, &e), 0);
  CHECK_EQ_I64(n, 0);
  CHECK_EQ_I64(store_step_status(s, 2, "rollout", &st, &e), 0);
  CHECK_EQ_I64(st, STORE_STEP_NONE);
  /* A batch whose 5th sample duplicates the 1st fails as a whole. */
  store_sample bad[6];
  memcpy(bad, v, sizeof bad);
  bad[4].prompt_index = 0, bad[4].sample_index = 0;
  CHECK_EQ_I64(store_samples_put(s, bad, 6, &e), RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "INSERT INTO samples");
  CHECK_CONTAINS(e.msg, "SQLITE_CONSTRAINT_PRIMARYKEY, extended code 1555");
  CHECK_CONTAINS(e.msg, "iteration 2, prompt 0, sample 0");
  CHECK_EQ_I64(store_samples_count(s, -1, &n, &e), 0);
  CHECK_EQ_I64(n, 0);
  /* Inside a caller's transaction, the failed batch is undone, the good one kept. */
  CHECK_EQ_I64(store_begin(s, &e), 0);
  CHECK_EQ_I64(store_samples_put(s, v, 4, &e), 0);
  store_sample more[2];
  memcpy(more, v + 4, sizeof more);
  more[1].prompt_index = 0, more[1].sample_index = 1; /* duplicate of v[1] */
  CHECK_EQ_I64(store_samples_put(s, more, 2, &e), RL_EXIT_STATE);
  CHECK_EQ_I64(store_in_transaction(s), 1);
  CHECK_EQ_I64(store_commit(s, &e), 0);
  CHECK_EQ_I64(store_sync_level(s), 1);
  CHECK_EQ_I64(store_samples_count(s, 2, &n, &e), 0);
  CHECK_EQ_I64(n, 4);
  CHECK_EQ_I64(store_begin(s, &e), 0);
  CHECK_EQ_I64(store_begin(s, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "not nestable");
  store_rollback(s);
  CHECK_EQ_I64(store_commit(s, &e), RL_EXIT_FAIL);
  store_close(s);
}

/* ------------------------------------------------------------------ tables */

TEST(store_samples_roundtrip_and_top) {
  rl_err e;
  store *s = store_open(db_path("samples.db"), 1, &e);
  REQUIRE(s);
  store_sample v[6];
  int32_t tok[6];
  float lp[6];
  make_samples(v, 6, 3, tok, lp);
  uint8_t experts[5] = {1, 2, 3, 4, 250};
  v[5].routed_experts = experts, v[5].routed_experts_bytes = 5;
  v[3].reward = NAN;
  v[3].extra_json = NULL, v[3].finish_reason = NULL;
  REQUIRE(store_samples_put(s, v, 6, &e) == 0);
  store_sample_list l;
  REQUIRE(store_samples_get(s, 3, &l, &e) == 0);
  REQUIRE(l.n == 6);
  CHECK_EQ_I64(l.v[5].prompt_index, 2);
  CHECK_EQ_I64(l.v[5].sample_index, 1);
  CHECK_STREQ(l.v[5].completion, "5");
  CHECK_EQ_I64(l.v[5].n_tokens, 6);
  CHECK_EQ_I64(l.v[5].tokens[5], 105);
  CHECK_EQ_I64(l.v[4].n_logprobs, 5);
  CHECK_NEAR(l.v[4].logprobs[4], -1.0, 0);
  CHECK_EQ_I64(l.v[5].routed_experts_bytes, 5);
  CHECK_EQ_I64(((const uint8_t *)l.v[5].routed_experts)[4], 250);
  CHECK(isnan(l.v[3].reward));
  CHECK(l.v[3].extra_json == NULL && l.v[3].finish_reason == NULL);
  CHECK_STREQ(l.v[2].extra_json, "{\"answer\":\"4\"}");
  CHECK_STREQ(l.v[2].finish_reason, "stop");
  CHECK_NEAR(l.v[4].reward, 5.0, 0);
  store_sample_list_free(&l);
  /* Top 3 by reward: 5, 3, 1 (samples 4, 2, 0); unscored last. */
  store_sample_query q = {.iteration = -1, .order = STORE_ORDER_REWARD_DESC, .limit = 3};
  REQUIRE(store_samples_query(s, &q, &l, &e) == 0);
  REQUIRE(l.n == 3);
  CHECK_NEAR(l.v[0].reward, 5.0, 0);
  CHECK_NEAR(l.v[1].reward, 3.0, 0);
  CHECK_NEAR(l.v[2].reward, 1.0, 0);
  CHECK(l.v[0].tokens == NULL && l.v[0].n_tokens == 0); /* no blobs asked */
  store_sample_list_free(&l);
  q.limit = 0;
  REQUIRE(store_samples_query(s, &q, &l, &e) == 0);
  REQUIRE(l.n == 6);
  CHECK(isnan(l.v[5].reward));
  store_sample_list_free(&l);
  q.iteration = 4;
  REQUIRE(store_samples_query(s, &q, &l, &e) == 0);
  CHECK_EQ_I64(l.n, 0);
  store_sample_list_free(&l);
  store_close(s);
}

TEST(store_steps_lifecycle) {
  rl_err e;
  store *s = store_open(db_path("steps.db"), 1, &e);
  REQUIRE(s);
  int st;
  CHECK_EQ_I64(store_step_mark(s, 0, "convert", STORE_STEP_RUNNING, NULL, NULL, &e), 0);
  CHECK_EQ_I64(store_step_mark(s, 0, "convert", STORE_STEP_DONE, NULL, "{\"s\":1}", &e), 0);
  CHECK_EQ_I64(store_step_mark(s, 1, "rollout", STORE_STEP_PENDING, NULL, NULL, &e), 0);
  CHECK_EQ_I64(store_step_mark(s, 1, "rollout", STORE_STEP_RUNNING, NULL, NULL, &e), 0);
  CHECK_EQ_I64(store_step_mark(s, 1, "rollout", STORE_STEP_FAILED, "reward.lua:3: boom", NULL, &e), 0);
  CHECK_EQ_I64(store_step_status(s, 1, "rollout", &st, &e), 0);
  CHECK_EQ_I64(st, STORE_STEP_FAILED);
  CHECK_EQ_I64(store_step_mark(s, 1, "rollout", STORE_STEP_RUNNING, NULL, NULL, &e), 0);
  CHECK_EQ_I64(store_step_mark(s, 1, "rollout", STORE_STEP_DONE, NULL, NULL, &e), 0);
  CHECK_EQ_I64(store_step_mark(s, 1, "train", STORE_STEP_RUNNING, NULL, NULL, &e), 0);
  /* A done step is never redone. */
  CHECK_EQ_I64(store_step_mark(s, 1, "rollout", STORE_STEP_RUNNING, NULL, NULL, &e), RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "step rollout#1 is already done");
  CHECK_EQ_I64(store_step_status(s, 1, "rollout", &st, &e), 0);
  CHECK_EQ_I64(st, STORE_STEP_DONE);
  CHECK_EQ_I64(store_step_status(s, 9, "train", &st, &e), 0);
  CHECK_EQ_I64(st, STORE_STEP_NONE);
  store_step *v;
  int n;
  REQUIRE(store_steps_list(s, &v, &n, &e) == 0);
  REQUIRE(n == 3);
  CHECK_STREQ(v[0].stage, "convert");
  CHECK_STREQ(v[0].timings, "{\"s\":1}");
  CHECK(v[0].seconds >= 0 && v[0].seconds < 60);
  CHECK_STREQ(v[1].stage, "rollout");
  CHECK_EQ_I64(v[1].attempts, 2);
  CHECK_EQ_I64(v[1].status, STORE_STEP_DONE);
  CHECK(v[1].error == NULL); /* cleared by the retry */
  CHECK_STREQ(v[2].stage, "train");
  CHECK_EQ_I64(v[2].status, STORE_STEP_RUNNING);
  CHECK(isnan(v[2].finished));
  store_steps_free(v, n);
  store_summary sum;
  REQUIRE(store_summary_get(s, &sum, &e) == 0);
  CHECK_EQ_I64(sum.steps_total, 3);
  CHECK_EQ_I64(sum.steps_done, 2);
  CHECK_EQ_I64(sum.steps_running, 1);
  CHECK_EQ_I64(sum.last_done_iteration, 1);
  CHECK_STREQ(sum.last_done_stage, "rollout");
  CHECK(isnan(sum.latest_reward_mean));
  CHECK_EQ_I64(store_step_mark(s, 2, "a-very-long-stage-name-over-31-chars", STORE_STEP_DONE,
                               NULL, NULL, &e), RL_EXIT_FAIL);
  store_close(s);
}

static int collect_metric(void *ud, int64_t it, const char *name, double v) {
  char *buf = ud;
  size_t n = strlen(buf);
  snprintf(buf + n, 512 - n, "%lld:%s=%g;", (long long)it, name, v);
  return 0;
}

TEST(store_metrics_put_get_each) {
  rl_err e;
  store *s = store_open(db_path("metrics.db"), 1, &e);
  REQUIRE(s);
  CHECK_EQ_I64(store_metric_put(s, 2, "reward/mean", 0.25, &e), 0);
  CHECK_EQ_I64(store_metric_put(s, 1, "reward/mean", 0.125, &e), 0);
  CHECK_EQ_I64(store_metric_put(s, 1, "mismatch/kl_k3", 1e-4, &e), 0);
  CHECK_EQ_I64(store_metric_put(s, 2, "reward/mean", 0.5, &e), 0); /* replaces */
  CHECK_EQ_I64(store_metric_put(s, 2, "loss", NAN, &e), 0);
  double v;
  int found;
  CHECK_EQ_I64(store_metric_get(s, 2, "reward/mean", &v, &found, &e), 0);
  CHECK_EQ_I64(found, 1);
  CHECK_NEAR(v, 0.5, 0);
  CHECK_EQ_I64(store_metric_get(s, 2, "loss", &v, &found, &e), 0);
  CHECK(found == 1 && isnan(v));
  CHECK_EQ_I64(store_metric_get(s, 3, "loss", &v, &found, &e), 0);
  CHECK_EQ_I64(found, 0);
  char buf[512] = "";
  CHECK_EQ_I64(store_metrics_each(s, NULL, collect_metric, buf, &e), 0);
  CHECK_STREQ(buf, "1:mismatch/kl_k3=0.0001;1:reward/mean=0.125;2:loss=nan;2:reward/mean=0.5;");
  buf[0] = 0;
  CHECK_EQ_I64(store_metrics_each(s, "reward/mean", collect_metric, buf, &e), 0);
  CHECK_STREQ(buf, "1:reward/mean=0.125;2:reward/mean=0.5;");
  char **names;
  int n;
  REQUIRE(store_metric_names(s, &names, &n, &e) == 0);
  REQUIRE(n == 3);
  CHECK_STREQ(names[0], "loss");
  CHECK_STREQ(names[2], "reward/mean");
  store_strings_free(names, n);
  store_summary sum;
  REQUIRE(store_summary_get(s, &sum, &e) == 0);
  CHECK_NEAR(sum.latest_reward_mean, 0.5, 0);
  CHECK_EQ_I64(sum.latest_metric_iteration, 2);
  store_close(s);
}

static int count_artifact(void *ud, const store_artifact *a) {
  (*(int *)ud)++;
  return strcmp(a->path, "checkpoints/step-000002/model.safetensors") == 0; /* stop there */
}

TEST(store_artifacts_put_get_delete) {
  rl_err e;
  store *s = store_open(db_path("art.db"), 1, &e);
  REQUIRE(s);
  store_artifact a = {.kind = "checkpoint", .iteration = 2, .size = 768};
  snprintf(a.path, sizeof a.path, "checkpoints/step-000002/model.safetensors");
  snprintf(a.sha256, sizeof a.sha256, "f3a25aa93aa2fbba28d79260535bbd6a5eb0fc1c24a8b0f04e12b484c1dfe363");
  CHECK_EQ_I64(store_artifact_put(s, &a, &e), 0);
  a.iteration = 4;
  snprintf(a.path, sizeof a.path, "checkpoints/step-000004/model.safetensors");
  CHECK_EQ_I64(store_artifact_put(s, &a, &e), 0);
  store_artifact got;
  int found;
  CHECK_EQ_I64(store_artifact_get(s, "checkpoints/step-000002/model.safetensors", &got, &found, &e), 0);
  CHECK_EQ_I64(found, 1);
  CHECK_EQ_I64(got.iteration, 2);
  CHECK_EQ_I64(got.size, 768);
  CHECK_STREQ(got.kind, "checkpoint");
  CHECK_STREQ(got.sha256, a.sha256);
  CHECK(got.created > 1.6e9);
  int count = 0;
  CHECK_EQ_I64(store_artifacts_each(s, "checkpoint", count_artifact, &count, &e), 0);
  CHECK_EQ_I64(count, 1); /* stopped at the first */
  CHECK_EQ_I64(store_artifact_delete(s, "checkpoints/step-000002/model.safetensors", &e), 0);
  CHECK_EQ_I64(store_artifact_get(s, "checkpoints/step-000002/model.safetensors", &got, &found, &e), 0);
  CHECK_EQ_I64(found, 0);
  count = 0;
  CHECK_EQ_I64(store_artifacts_each(s, NULL, count_artifact, &count, &e), 0);
  CHECK_EQ_I64(count, 1);
  snprintf(a.sha256, sizeof a.sha256, "abc");
  CHECK_EQ_I64(store_artifact_put(s, &a, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "64-hex sha256");
  store_close(s);
}

static int collect_event(void *ud, const store_event_row *ev) {
  char *buf = ud;
  size_t n = strlen(buf);
  snprintf(buf + n, 512 - n, "%s|%lld|%s|%s;", store_level_name(ev->level), (long long)ev->iteration,
           ev->stage ? ev->stage : "-", ev->message);
  return 0;
}

TEST(store_events_and_run_row) {
  rl_err e;
  store *s = store_open(db_path("run.db"), 1, &e);
  REQUIRE(s);
  store_run r;
  CHECK_EQ_I64(store_run_get(s, &r, &e), RL_EXIT_STATE);
  store_run in = {.id = "demo-20260101T000000-ab12", .name = "demo", .recipe = "model: x\n",
                  .recipe_resolved = "{\"model\":\"x\"}", .input_hashes = "{\"data.jsonl\":\"00\"}"};
  CHECK_EQ_I64(store_run_init(s, &in, &e), 0);
  CHECK_EQ_I64(store_run_init(s, &in, &e), RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "already holds a run");
  REQUIRE(store_run_get(s, &r, &e) == 0);
  CHECK_STREQ(r.id, "demo-20260101T000000-ab12");
  CHECK_STREQ(r.rlrun_version, RLRUN_VERSION);
  CHECK_STREQ(r.recipe, "model: x\n");
  CHECK_EQ_I64(strlen(r.created), 20);
  CHECK_EQ_I64(r.created[10], 'T');
  store_run_free(&r);
  CHECK_EQ_I64(store_run_update(s, NULL, "{\"data.jsonl\":\"11\"}", &e), 0);
  REQUIRE(store_run_get(s, &r, &e) == 0);
  CHECK_STREQ(r.input_hashes, "{\"data.jsonl\":\"11\"}");
  CHECK_STREQ(r.recipe_resolved, "{\"model\":\"x\"}");
  store_run_free(&r);
  CHECK_EQ_I64(store_event(s, STORE_INFO, -1, NULL, &e, "run started"), 0);
  CHECK_EQ_I64(store_event(s, STORE_WARN, 3, "train", &e, "grad norm %.1f", 12.5), 0);
  CHECK_EQ_I64(store_event(s, STORE_ERROR, 4, "rollout", &e, "%s", "reward.lua:3: boom"), 0);
  char buf[512] = "";
  CHECK_EQ_I64(store_events_each(s, STORE_WARN, collect_event, buf, &e), 0);
  CHECK_STREQ(buf, "warn|3|train|grad norm 12.5;error|4|rollout|reward.lua:3: boom;");
  store_summary sum;
  REQUIRE(store_summary_get(s, &sum, &e) == 0);
  CHECK_EQ_I64(sum.warnings, 1);
  CHECK_EQ_I64(sum.errors, 1);
  store_close(s);
}

/* ------------------------------------------------------------------ run directory */

TEST(rundir_create_and_atomic_write) {
  rl_err e;
  char runs[800], dir[1200], path[1400];
  snprintf(runs, sizeof runs, "%s/nested/runs", harness_tmpdir());
  REQUIRE(rundir_create(runs, "gsm8k-demo", dir, sizeof dir, &e) == 0);
  /* <runs>/gsm8k-demo-YYYYMMDDTHHMMSSZ-hhhh */
  const char *id = dir + strlen(runs) + 1;
  CHECK_EQ_I64(strncmp(id, "gsm8k-demo-", 11), 0);
  CHECK_EQ_I64(strlen(id), 11 + 16 + 1 + 4);
  CHECK_EQ_I64(id[11 + 8], 'T');
  CHECK_EQ_I64(id[11 + 15], 'Z');
  snprintf(path, sizeof path, "%s/checkpoints", dir);
  CHECK(access(path, F_OK) == 0);
  char dir2[1200];
  REQUIRE(rundir_create(runs, "gsm8k-demo", dir2, sizeof dir2, &e) == 0);
  CHECK(strcmp(dir, dir2) != 0);
  CHECK_EQ_I64(rundir_create(runs, "bad/name", dir2, sizeof dir2, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "character 4 ('/')");
  /* Atomic write replaces the content whole and leaves no temporary file. */
  snprintf(path, sizeof path, "%s/recipe.yaml", dir);
  REQUIRE(rundir_write_atomic(path, "a: 1\n", 5, &e) == 0);
  REQUIRE(rundir_write_atomic(path, "a: 2\nb: 3\n", 10, &e) == 0);
  char *text;
  size_t n;
  REQUIRE(rl_read_file(path, &text, &n, &e) == 0);
  CHECK_STREQ(text, "a: 2\nb: 3\n");
  free(text);
  char cmd[1600], out[256];
  snprintf(cmd, sizeof cmd, "ls '%s' | grep -c tmp", dir);
  harness_run(cmd, out, sizeof out);
  CHECK_STREQ(out, "0\n");
  snprintf(path, sizeof path, "%s/no-such-dir/x", dir);
  CHECK_EQ_I64(rundir_write_atomic(path, "x", 1, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "cannot create: No such file or directory");
}

TEST(store_reader_opens_while_a_writer_holds_the_lock) {
  rl_err e;
  char *p = db_path("busy.db");
  store *w = store_open(p, 1, &e);
  REQUIRE(w);
  REQUIRE(store_begin(w, &e) == 0);
  REQUIRE(store_metric_put(w, 1, "x", 1.0, &e) == 0);
  /* A second connection (rlrun status) opens and reads without waiting. */
  double t0 = rl_now();
  store *r = store_open(p, 0, &e);
  REQUIRE(r);
  CHECK(rl_now() - t0 < 1.0);
  int64_t n = -1;
  CHECK_EQ_I64(store_steps_count(r, -1, &n, &e), 0);
  CHECK_EQ_I64(n, 0);
  double v;
  int found = 1;
  CHECK_EQ_I64(store_metric_get(r, 1, "x", &v, &found, &e), 0);
  CHECK_EQ_I64(found, 0); /* not committed yet */
  CHECK_EQ_I64(store_commit(w, &e), 0);
  CHECK_EQ_I64(store_metric_get(r, 1, "x", &v, &found, &e), 0);
  CHECK_EQ_I64(found, 1);
  store_close(r);
  store_close(w);
}
