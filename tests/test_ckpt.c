/* test_ckpt.c — run checkpoints (state/ckpt.h): write + record + verify,
 * retention, stale directories, injected failures (state/fault.h). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "state/ckpt.h"
#include "state/fault.h"
#include "state/rundir.h"
#include "state/sha256.h"
#include "state/store.h"

/* A run directory with a store; returns the store. */
static store *make_run(const char *sub, char *dir, size_t n) {
  snprintf(dir, n, "%s/%s", harness_tmpdir(), sub);
  mkdir(dir, 0755);
  char db[800];
  snprintf(db, sizeof db, "%s/state.db", dir);
  rl_err e;
  return store_open(db, 1, &e);
}

/* Tensors whose values depend on the iteration. */
typedef struct fake_state {
  uint16_t w[6];
  float m[6];
  int64_t step;
  ckpt_tensor wt[1], ot[2];
} fake_state;

static void fake_fill(fake_state *f, int64_t it) {
  for (int i = 0; i < 6; i++) f->w[i] = (uint16_t)(0x3f80 + it + i), f->m[i] = (float)(it * 10 + i);
  f->step = it;
  f->wt[0] = (ckpt_tensor){.name = "model.embed_tokens.weight", .dtype = ST_BF16, .ndim = 2, .shape = {2, 3}, .data = f->w};
  f->ot[0] = (ckpt_tensor){.name = "optim.step", .dtype = ST_I64, .ndim = 1, .shape = {1}, .data = &f->step};
  f->ot[1] = (ckpt_tensor){.name = "optim.m.model.embed_tokens.weight", .dtype = ST_F32, .ndim = 2, .shape = {2, 3}, .data = f->m};
}

static int write_ckpt(const char *dir, store *s, int64_t it, rl_err *e) {
  fake_state f;
  fake_fill(&f, it);
  ckpt_content c = {.iteration = it, .data_cursor = it * 4, .weights = f.wt, .n_weights = 1, .optim = f.ot,
                    .n_optim = 2, .config_json = "{\"model_type\": \"qwen3\"}\n", .extra_json = "{\"optim_step\": 3}"};
  return ckpt_write(dir, s, &c, e);
}

TEST(ckpt_write_records_and_verifies) {
  char dir[700];
  store *s = make_run("r1", dir, sizeof dir);
  REQUIRE(s);
  rl_err e;
  CHECK_EQ_I64(write_ckpt(dir, s, 2, &e), 0);
  /* files, manifest, step mark, artifacts with the files' sha256 */
  char path[900], hex[65];
  ckpt_file_path(dir, 2, CKPT_WEIGHTS, path, sizeof path);
  REQUIRE(sha256_file(path, hex, NULL, &e) == 0);
  store_artifact a;
  int found = 0;
  CHECK_EQ_I64(store_artifact_get(s, "checkpoints/step-000002/model.safetensors", &a, &found, &e), 0);
  CHECK_EQ_I64(found, 1);
  CHECK_STREQ(a.sha256, hex);
  CHECK_STREQ(a.kind, "checkpoint");
  CHECK_EQ_I64(a.iteration, 2);
  int st = -1;
  CHECK_EQ_I64(store_step_status(s, 2, CKPT_STAGE, &st, &e), 0);
  CHECK_EQ_I64(st, STORE_STEP_DONE);
  ckpt_info info;
  found = 0;
  CHECK_EQ_I64(ckpt_latest(dir, s, &info, &found, &e), 0);
  CHECK_EQ_I64(found, 1);
  CHECK_EQ_I64(info.iteration, 2);
  CHECK_EQ_I64(info.data_cursor, 8);
  CHECK_CONTAINS(info.extra_json, "\"optim_step\":3");
  ckpt_info_free(&info);
  /* the weights file reads back */
  st_file *f;
  REQUIRE(st_file_open(path, &f, &e) == 0);
  const st_tensor *t = st_file_find(f, "model.embed_tokens.weight");
  REQUIRE(t);
  uint16_t w[6];
  CHECK_EQ_I64(st_file_read(f, t, w, &e), 0);
  CHECK_EQ_U64(w[5], 0x3f80 + 2 + 5);
  st_file_close(f);
  /* writing the same iteration again is a no-op (idempotent) */
  CHECK_EQ_I64(write_ckpt(dir, s, 2, &e), 0);
  /* a changed byte is caught with both hashes and the file named */
  FILE *fp = fopen(path, "r+b");
  REQUIRE(fp);
  fseek(fp, -1, SEEK_END);
  fputc(0x55, fp);
  fclose(fp);
  CHECK_EQ_I64(ckpt_verify(dir, s, 2, &e), RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "step-000002/model.safetensors: checkpoint file changed after it was written");
  CHECK_CONTAINS(e.msg, a.sha256);
  found = 0;
  CHECK_EQ_I64(ckpt_latest(dir, s, &info, &found, &e), RL_EXIT_STATE);
  store_close(s);
}

TEST(ckpt_retention_keeps_last_and_every_mth) {
  char dir[700];
  store *s = make_run("r2", dir, sizeof dir);
  REQUIRE(s);
  rl_err e;
  for (int it = 1; it <= 7; it++) REQUIRE(write_ckpt(dir, s, it, &e) == 0);
  int removed = 0;
  CHECK_EQ_I64(ckpt_retain(dir, s, 2, 3, &removed, &e), 0);
  CHECK_EQ_I64(removed, 4); /* the last two (6, 7) and every 3rd (3, 6) stay */
  int64_t *v = NULL;
  int n = 0;
  REQUIRE(ckpt_list(s, &v, &n, &e) == 0);
  REQUIRE(n == 3);
  CHECK_EQ_I64(v[0], 3);
  CHECK_EQ_I64(v[1], 6);
  CHECK_EQ_I64(v[2], 7);
  free(v);
  /* the removed directories are gone, the kept ones verify */
  char p[900];
  struct stat st;
  ckpt_file_path(dir, 4, NULL, p, sizeof p);
  CHECK(stat(p, &st) != 0);
  ckpt_file_path(dir, 7, NULL, p, sizeof p);
  CHECK(stat(p, &st) == 0);
  CHECK_EQ_I64(ckpt_verify(dir, s, 7, &e), 0);
  store_close(s);
}

/* A removed checkpoint directory: ckpt_latest falls back, ckpt_forget_after
 * drops the newer records (not the older, not the step rows), and ckpt_write
 * of that iteration then writes it anew instead of verifying missing files. */
TEST(ckpt_forget_after_lets_removed_checkpoints_be_rewritten) {
  char dir[700], p[900], before[65], after[65];
  store *s = make_run("r4", dir, sizeof dir);
  REQUIRE(s);
  rl_err e;
  for (int it = 1; it <= 3; it++) REQUIRE(write_ckpt(dir, s, it, &e) == 0);
  ckpt_file_path(dir, 2, CKPT_WEIGHTS, p, sizeof p);
  REQUIRE(sha256_file(p, before, NULL, &e) == 0);
  ckpt_file_path(dir, 2, NULL, p, sizeof p);
  char cmd[1000];
  snprintf(cmd, sizeof cmd, "rm -rf %s", p);
  harness_run(cmd, NULL, 0);
  ckpt_file_path(dir, 3, NULL, p, sizeof p);
  snprintf(cmd, sizeof cmd, "rm -rf %s", p);
  harness_run(cmd, NULL, 0);
  /* the dead end this fixes: the record of 2 still there, the files gone */
  CHECK(write_ckpt(dir, s, 2, &e) == RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "step-000002/");
  CHECK_CONTAINS(e.msg, "checkpoint file is missing");
  ckpt_info info;
  int found = 0;
  REQUIRE(ckpt_latest(dir, s, &info, &found, &e) == 0);
  CHECK_EQ_I64(found, 1);
  CHECK_EQ_I64(info.iteration, 1); /* 3 and 2 skipped: their directories are gone */
  ckpt_info_free(&info);
  int64_t *gone = NULL, *v = NULL;
  int n_gone = 0, n = 0;
  CHECK_EQ_I64(ckpt_forget_after(s, 1, &gone, &n_gone, &e), 0);
  REQUIRE(n_gone == 2);
  CHECK_EQ_I64(gone[0], 2);
  CHECK_EQ_I64(gone[1], 3);
  free(gone);
  REQUIRE(ckpt_list(s, &v, &n, &e) == 0);
  REQUIRE(n == 1);
  CHECK_EQ_I64(v[0], 1);
  free(v);
  int found_a = 1;
  store_artifact a;
  CHECK_EQ_I64(store_artifact_get(s, "checkpoints/step-000003/manifest.json", &a, &found_a, &e), 0);
  CHECK_EQ_I64(found_a, 0);
  CHECK_EQ_I64(store_artifact_get(s, "checkpoints/step-000001/model.safetensors", &a, &found_a, &e), 0);
  CHECK_EQ_I64(found_a, 1);
  int st = -1;
  CHECK_EQ_I64(store_step_status(s, 2, CKPT_STAGE, &st, &e), 0);
  CHECK_EQ_I64(st, STORE_STEP_DONE); /* step rows are kept */
  CHECK_EQ_I64(ckpt_verify(dir, s, 1, &e), 0);
  /* nothing newer: a no-op */
  CHECK_EQ_I64(ckpt_forget_after(s, 1, &gone, &n_gone, &e), 0);
  CHECK_EQ_I64(n_gone, 0);
  free(gone);
  /* 2 is written again: the same bytes, recorded, verified */
  CHECK_EQ_I64(write_ckpt(dir, s, 2, &e), 0);
  ckpt_file_path(dir, 2, CKPT_WEIGHTS, p, sizeof p);
  REQUIRE(sha256_file(p, after, NULL, &e) == 0);
  CHECK_STREQ(after, before);
  CHECK_EQ_I64(ckpt_verify(dir, s, 2, &e), 0);
  CHECK_EQ_I64(store_artifact_get(s, "checkpoints/step-000002/model.safetensors", &a, &found_a, &e), 0);
  CHECK_EQ_I64(found_a, 1);
  CHECK_STREQ(a.sha256, before);
  /* inside the caller's transaction: rolled back with it */
  REQUIRE(store_begin(s, &e) == 0);
  CHECK_EQ_I64(ckpt_forget_after(s, 0, NULL, NULL, &e), 0);
  store_rollback(s);
  REQUIRE(ckpt_list(s, &v, &n, &e) == 0);
  CHECK_EQ_I64(n, 2);
  free(v);
  store_close(s);
}

TEST(ckpt_failed_write_keeps_previous_and_cleans_up) {
  char dir[700];
  store *s = make_run("r3", dir, sizeof dir);
  REQUIRE(s);
  rl_err e;
  REQUIRE(write_ckpt(dir, s, 1, &e) == 0);
  const char *points[] = {"ckpt.write_weights", "ckpt.write_optim", "ckpt.before_publish", "ckpt.before_record"};
  for (int i = 0; i < 4; i++) {
    char spec[64];
    snprintf(spec, sizeof spec, "%s@1", points[i]);
    setenv("RLRUN_FAULT", spec, 1);
    fault_reset();
    int rc = write_ckpt(dir, s, 2, &e);
    unsetenv("RLRUN_FAULT");
    CHECK_EQ_I64(rc, RL_EXIT_FAIL);
    CHECK_CONTAINS(e.msg, "No space left on device");
    /* step 2 is not recorded; the newest valid checkpoint is still 1 */
    ckpt_info info;
    int found = 0;
    CHECK_EQ_I64(ckpt_latest(dir, s, &info, &found, &e), 0);
    CHECK_EQ_I64(found, 1);
    CHECK_EQ_I64(info.iteration, 1);
    ckpt_info_free(&info);
    int st = -1;
    store_step_status(s, 2, CKPT_STAGE, &st, &e);
    CHECK_EQ_I64(st, STORE_STEP_NONE);
  }
  /* before_record left a published but unrecorded step-000002: stale, removed */
  char p[900];
  struct stat sb;
  ckpt_file_path(dir, 2, NULL, p, sizeof p);
  CHECK(stat(p, &sb) == 0);
  char tmp[900];
  snprintf(tmp, sizeof tmp, "%s/checkpoints/.tmp-step-000009-1", dir);
  mkdir(tmp, 0755);
  int removed = 0;
  CHECK_EQ_I64(ckpt_clean_stale(dir, s, &removed, &e), 0);
  CHECK_EQ_I64(removed, 2);
  CHECK(stat(p, &sb) != 0);
  CHECK(stat(tmp, &sb) != 0);
  /* and the write succeeds afterwards */
  CHECK_EQ_I64(write_ckpt(dir, s, 2, &e), 0);
  CHECK_EQ_I64(ckpt_verify(dir, s, 2, &e), 0);
  store_close(s);
}

TEST(fault_points_count_hits) {
  setenv("RLRUN_FAULT", "a.b@3,c.d,e.f@2:every", 1);
  fault_reset();
  CHECK_EQ_I64(fault_hit("a.b"), 0);
  CHECK_EQ_I64(fault_hit("a.b"), 0);
  CHECK_EQ_I64(fault_hit("a.b"), 1);
  CHECK_EQ_I64(fault_hit("a.b"), 0);
  CHECK_EQ_I64(fault_hit("c.d"), 1);
  CHECK_EQ_I64(fault_hit("c.d"), 0);
  CHECK_EQ_I64(fault_hit("e.f"), 0);
  CHECK_EQ_I64(fault_hit("e.f"), 1);
  CHECK_EQ_I64(fault_hit("e.f"), 1);
  CHECK_EQ_I64(fault_hit("a.bc"), 0);
  unsetenv("RLRUN_FAULT");
  fault_reset();
  CHECK_EQ_I64(fault_hit("a.b"), 0);
}

/* Files copied into a checkpoint (the tokenizer's): byte-equal, in the
 * manifest and the store, verified like the weights (an edited copy is named);
 * a copy that would take a checkpoint file's name is refused, nothing published. */
TEST(ckpt_copies_are_recorded_and_verified) {
  char dir[700], src[800], path[900], out[4096];
  store *s = make_run("rc", dir, sizeof dir);
  REQUIRE(s);
  snprintf(src, sizeof src, "%s/tok.json", harness_tmpdir());
  REQUIRE(harness_write_file(src, "{\"model\": {\"type\": \"BPE\"}}\n") == 0);
  fake_state f;
  fake_fill(&f, 1);
  ckpt_copy cp[2] = {{src, "tokenizer.json"}, {src, CKPT_MANIFEST}};
  ckpt_content c = {.iteration = 1, .weights = f.wt, .n_weights = 1, .copies = cp, .n_copies = 2};
  rl_err e;
  CHECK(ckpt_write(dir, s, &c, &e) != 0);
  CHECK_CONTAINS(e.msg, "cannot be copied in as 'manifest.json'");
  ckpt_file_path(dir, 1, NULL, path, sizeof path);
  struct stat st;
  CHECK(stat(path, &st) != 0); /* nothing published */
  c.n_copies = 1;
  REQUIRE(ckpt_write(dir, s, &c, &e) == 0);
  ckpt_file_path(dir, 1, "tokenizer.json", path, sizeof path);
  char cmd[4000];
  snprintf(cmd, sizeof cmd, "cmp %s %s && grep -c '\"tokenizer.json\"' %s/checkpoints/step-000001/manifest.json", src,
           path, dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_EQ_I64(ckpt_verify(dir, s, 1, &e), 0);
  REQUIRE(harness_write_file(path, "{\"model\": {\"type\": \"WordPiece\"}}\n") == 0);
  CHECK(ckpt_verify(dir, s, 1, &e) == RL_EXIT_STATE);
  CHECK_CONTAINS(e.msg, "tokenizer.json");
  store_close(s);
}
