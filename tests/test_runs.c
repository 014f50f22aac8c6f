/* test_runs.c — end-to-end runs through the rlrun binary on a tiny model
 * (hidden 16, 1 layer, char vocabulary): kill -9 anywhere + resume ends
 * bit-identical, no prompt skipped or repeated, failed checkpoint writes,
 * corrupt state.db, wrong checkpoint hash, edited recipe, the read commands,
 * export, SIGTERM. Each run takes well under a second. */
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "runner/runs.h"
#include "state/ckpt.h"
#include "state/sha256.h"
#include "state/store.h"

#define T_B 4 /* rollout.batch */
#define T_G 4 /* samples_per_prompt */

/* The rlrun binary as an absolute path (commands run in the test's directory). */
static const char *bin(void) {
  static char p[PATH_MAX];
  if (!p[0] && !realpath(harness_bin(), p)) snprintf(p, sizeof p, "%s", harness_bin());
  return p;
}

/* A test directory with t.yaml (N iterations), task.lua and reward.lua (copies). */
static void setup(const char *dir, int iterations) {
  char cmd[2048], text[2048];
  snprintf(cmd, sizeof cmd, "mkdir -p %s && cp lua/scripts/task_add_digits.lua %s/task.lua && "
           "cp lua/scripts/digit_match.lua %s/reward.lua", dir, dir, dir);
  harness_run(cmd, NULL, 0);
  snprintf(text, sizeof text,
           "name: t\nseed: 7\ndevice: cpu\n"
           "model:\n  init: {arch: qwen3, hidden: 16, layers: 1, heads: 2, kv_heads: 1, head_dim: 8, ffn: 32, max_seq_len: 12}\n"
           "tokenizer: {type: chars, chars: \"0123456789+=\"}\n"
           "data:\n  task: task.lua\n"
           "rollout: {batch: %d, samples_per_prompt: %d, max_prompt_tokens: 6, max_new_tokens: 3}\n"
           "reward:\n  script: reward.lua\n"
           "train: {algorithm: grpo, lr: 1.0e-2, microbatch: 8}\n"
           "loop: {iterations: %d, checkpoint_interval: 2, keep_checkpoints: 2}\n",
           T_B, T_G, iterations);
  snprintf(cmd, sizeof cmd, "%s/t.yaml", dir);
  harness_write_file(cmd, text);
}

/* Edit dir/t.yaml of setup: train.lr 1.0e-2 → 1.0e-3 (a recipe change resume
 * reports). 0, or -1 when the file or the setting is not there. */
static int setup_lower_lr(const char *dir) {
  char p[1200];
  snprintf(p, sizeof p, "%s/t.yaml", dir);
  char *y = NULL;
  size_t len;
  rl_err e;
  if (rl_read_file(p, &y, &len, &e) != 0) return -1;
  char *lr = strstr(y, "lr: 1.0e-2");
  if (lr) {
    lr[9] = '3';
    harness_write_file(p, y);
  }
  free(y);
  return lr ? 0 : -1;
}

/* Run `rlrun ARGS` in dir with environment assignments env (may be ""). */
static int rl(const char *dir, const char *env, const char *args, char *out, size_t n) {
  size_t len = strlen(dir) + strlen(env) + strlen(bin()) + strlen(args) + 16;
  char *cmd = malloc(len);
  snprintf(cmd, len, "cd %s && %s %s %s; exit $?", dir, env, bin(), args); /* the subshell reports kills */
  int rc = harness_run(cmd, out, n);
  free(cmd);
  return rc;
}

/* The one run directory under dir/runs (absolute). */
static int run_dir(const char *dir, char *rd, size_t n) {
  char cmd[1024], out[1024];
  snprintf(cmd, sizeof cmd, "for d in %s/runs/*/; do [ -d \"$d\" ] && echo \"$d\"; done | head -1", dir);
  if (harness_run(cmd, out, sizeof out) != 0 || strncmp(out, dir, strlen(dir))) return -1;
  out[strcspn(out, "\n")] = 0;
  if (out[strlen(out) - 1] == '/') out[strlen(out) - 1] = 0;
  snprintf(rd, n, "%s", out);
  return 0;
}

/* sha256 of the final weights of a run (checkpoint of iteration it). */
static int weights_sha(const char *rd, int it, char hex[65]) {
  char p[2048];
  rl_err e;
  ckpt_file_path(rd, it, CKPT_WEIGHTS, p, sizeof p);
  return sha256_file(p, hex, NULL, &e);
}

/* A complete uninterrupted run of N iterations in dir; its final weights' sha256. */
static int reference(const char *dir, int n, char hex[65]) {
  setup(dir, n);
  char out[4096], rd[2048];
  if (rl(dir, "", "run t.yaml --runs-dir runs --quiet", out, sizeof out) != 0) {
    fprintf(stderr, "reference run failed:\n%s\n", out);
    return -1;
  }
  if (run_dir(dir, rd, sizeof rd)) return -1;
  return weights_sha(rd, n, hex);
}

/* No prompt skipped or repeated: iteration k holds prompts (k-1)B..kB-1, G samples each. */
static void check_samples_table(const char *rd, int n) {
  char db[2048];
  snprintf(db, sizeof db, "%s/state.db", rd);
  rl_err e;
  store *s = store_open(db, 0, &e);
  REQUIRE(s);
  int64_t total = -1;
  store_samples_count(s, -1, &total, &e);
  CHECK_EQ_I64(total, (int64_t)n * T_B * T_G);
  for (int k = 1; k <= n; k++) {
    store_sample_query q = {.iteration = k, .order = STORE_ORDER_INDEX};
    store_sample_list l = {0};
    REQUIRE(store_samples_query(s, &q, &l, &e) == 0);
    CHECK_EQ_I64(l.n, T_B * T_G);
    int seen[T_B] = {0};
    for (int i = 0; i < l.n; i++) {
      int64_t p = l.v[i].prompt_index - (int64_t)(k - 1) * T_B;
      CHECK_MSG(p >= 0 && p < T_B, "iteration %d holds prompt %lld", k, (long long)l.v[i].prompt_index);
      if (p >= 0 && p < T_B) seen[p]++;
    }
    for (int p = 0; p < T_B; p++) CHECK_EQ_I64(seen[p], T_G);
    store_sample_list_free(&l);
    int st = -1;
    store_step_status(s, k, "train", &st, &e);
    CHECK_EQ_I64(st, STORE_STEP_DONE);
  }
  /* the weights did move: the optimizer stepped */
  double v = 0;
  int found = 0;
  store_metric_get(s, n, "optim/step", &v, &found, &e);
  CHECK(found && v >= 1);
  store_close(s);
}

/* 1 when rc is what a SIGKILLed rlrun gives. */
static int killed(int rc) { return rc == 137 || rc == -1; }

TEST(runs_kill_anywhere_resume_is_bit_identical) {
  char ref[1024], dir[1024], want[65], got[65], rd[2048], out[8192];
  snprintf(ref, sizeof ref, "%s/ref", harness_tmpdir());
  snprintf(dir, sizeof dir, "%s/k", harness_tmpdir());
  REQUIRE(reference(ref, 16, want) == 0);
  setup(dir, 16);
  /* one kill per process, at every stage: rollout, reward, commit, train, sync,
   * checkpoint (before, mid-write, before publish, before the record), convert */
  const char *faults[] = {"loop.train@2", "loop.checkpoint@1", "ckpt.write_weights@1", "ckpt.before_publish@1",
                          "ckpt.before_record@1", "loop.rollout@2", "loop.reward@2", "loop.commit@2",
                          "loop.sync@3", "ckpt.write_optim@2", "loop.train@4", "loop.convert@1"};
  int kills = 0, n = (int)(sizeof faults / sizeof *faults);
  for (int i = 0; i < n; i++) {
    char env[128], args[2300];
    snprintf(env, sizeof env, "RLRUN_FAULT=%s:kill", faults[i]);
    if (i == 0) snprintf(args, sizeof args, "run t.yaml --runs-dir runs --quiet");
    else snprintf(args, sizeof args, "resume %s --quiet", rd);
    int rc = rl(dir, env, args, out, sizeof out);
    CHECK_MSG(killed(rc), "%s: exit %d, not killed:\n%s", faults[i], rc, out);
    kills += killed(rc);
    if (i == 0) REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  }
  CHECK(kills >= 10);
  char args[2300];
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  int rc = rl(dir, "", args, out, sizeof out);
  CHECK_EQ_I64(rc, 0);
  REQUIRE(weights_sha(rd, 16, got) == 0);
  CHECK_STREQ(got, want);
  check_samples_table(rd, 16);
  /* the same for the optimizer state */
  char a[2048], b[2048];
  char ra[2048];
  REQUIRE(run_dir(ref, ra, sizeof ra) == 0);
  ckpt_file_path(ra, 16, CKPT_OPTIM, a, sizeof a);
  ckpt_file_path(rd, 16, CKPT_OPTIM, b, sizeof b);
  rl_err e;
  REQUIRE(sha256_file(a, want, NULL, &e) == 0 && sha256_file(b, got, NULL, &e) == 0);
  CHECK_STREQ(got, want);
}

/* Scripts that keep state in globals (a counter in reward(), another in prompts()):
 * the scripts are loaded afresh for every reward stage and every prompts() call,
 * so every iteration scores and draws alike (reward/mean the same each iteration)
 * and a run killed in its 3rd iteration's training resumes to the uninterrupted
 * run's weights. (A global carried over from call to call: after a resume the
 * counters restarted, so other rewards and prompts — other weights.) */
TEST(runs_lua_globals_do_not_outlive_an_iteration) {
  char ref[1024], dir[1024], want[65], got[65], rd[2048], ra[2048], out[8192], args[2300];
  snprintf(ref, sizeof ref, "%s/gref", harness_tmpdir());
  snprintf(dir, sizeof dir, "%s/gkill", harness_tmpdir());
  const char *reward = "n = 0\nfunction reward(s)\n  n = n + 1\n  return n / 100\nend\n";
  const char *task = "calls = 0\nfunction prompts(n, rng)\n  calls = calls + 1\n  local out = {}\n"
                     "  for i = 1, n do out[i] = {prompt = tostring(calls) .. \"+\" .. tostring(i % 10) .. \"=\"} end\n"
                     "  return out\nend\n";
  for (int k = 0; k < 2; k++) {
    const char *d = k ? dir : ref;
    char p[1200];
    setup(d, 3);
    snprintf(p, sizeof p, "%s/reward.lua", d);
    harness_write_file(p, reward);
    snprintf(p, sizeof p, "%s/task.lua", d);
    harness_write_file(p, task);
  }
  CHECK_EQ_I64(rl(ref, "", "run t.yaml --runs-dir runs --quiet", out, sizeof out), 0);
  REQUIRE(run_dir(ref, ra, sizeof ra) == 0);
  REQUIRE(weights_sha(ra, 3, want) == 0);
  snprintf(args, sizeof args, "metrics %s --csv", ra);
  CHECK_EQ_I64(rl(ref, "", args, out, sizeof out), 0);
  /* rewards 1 … 16 / 100 in every iteration: mean 0.085 */
  int col = -1, ci = 0, rows = 0;
  char *save = NULL, *line = strtok_r(out, "\n", &save), *head = line ? strdup(line) : NULL;
  for (char *tp = head, *f; tp && (f = strsep(&tp, ",")); ci++)
    if (!strcmp(f, "reward/mean")) col = ci;
  free(head);
  REQUIRE(col >= 0);
  while ((line = strtok_r(NULL, "\n", &save))) {
    char *tp = line, *f = NULL;
    for (int i = 0; i <= col; i++) f = strsep(&tp, ",");
    CHECK_MSG(f && fabs(strtod(f, NULL) - 0.085) < 1e-12, "reward/mean %s in row %d (want 0.085)", f ? f : "-", rows);
    rows++;
  }
  CHECK_EQ_I64(rows, 3);
  /* prompts() restarts its counter too: iteration 3 asks "1+…" as iteration 1 did */
  snprintf(args, sizeof args, "samples %s --iter 3", ra);
  CHECK_EQ_I64(rl(ref, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, " \"1+1=\" -> ");
  int rc = rl(dir, "RLRUN_FAULT=loop.train@3:kill", "run t.yaml --runs-dir runs --quiet", out, sizeof out);
  CHECK_MSG(killed(rc), "exit %d, not killed:\n%s", rc, out);
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  REQUIRE(weights_sha(rd, 3, got) == 0);
  CHECK_STREQ(got, want);
}

TEST(runs_random_kills_resume_is_bit_identical) {
  char ref[1024], dir[1024], want[65], got[65], rd[2048] = "", out[8192];
  snprintf(ref, sizeof ref, "%s/ref", harness_tmpdir());
  snprintf(dir, sizeof dir, "%s/k", harness_tmpdir());
  double t0 = rl_now();
  REQUIRE(reference(ref, 30, want) == 0);
  /* Kill delays scale with how long a whole run takes on this machine (a loaded
   * 2-core CI box under ASan is many times slower than a quiet one): early
   * attempts die at a few percent of a run, later ones live past a whole run,
   * so progress is certain and at least a few kills land whatever the speed. */
  double t_run = rl_now() - t0;
  setup(dir, 30);
  unsigned x = 12345;
  int kills = 0, rc = -1;
  for (int i = 0; i < 40 && rc != 0; i++) {
    x = x * 1103515245u + 12345u;
    double jitter = 0.5 + (double)((x >> 16) % 1000) / 1000.0; /* 0.5 .. 1.5 */
    double delay = t_run * (0.03 + 0.05 * i) * jitter;
    char env[64], args[2300];
    snprintf(env, sizeof env, "timeout -s KILL %.3f", delay);
    if (!rd[0]) snprintf(args, sizeof args, "run t.yaml --runs-dir runs --quiet");
    else snprintf(args, sizeof args, "resume %s --quiet", rd);
    rc = rl(dir, env, args, out, sizeof out);
    kills += killed(rc);
    if (!rd[0] && run_dir(dir, rd, sizeof rd)) rd[0] = 0; /* killed before the directory existed */
    CHECK_MSG(rc == 0 || killed(rc), "attempt %d: exit %d:\n%s", i, rc, out);
  }
  REQUIRE(rd[0]);
  if (rc != 0) {
    char args[2300];
    snprintf(args, sizeof args, "resume %s --quiet", rd);
    rc = rl(dir, "", args, out, sizeof out);
  }
  CHECK_EQ_I64(rc, 0);
  CHECK(kills >= 3);
  REQUIRE(weights_sha(rd, 30, got) == 0);
  CHECK_STREQ(got, want);
  check_samples_table(rd, 30);
}

TEST(runs_failed_checkpoint_write_keeps_previous_and_resumes) {
  char ref[1024], dir[1024], want[65], got[65], rd[2048], out[8192], args[2300];
  snprintf(ref, sizeof ref, "%s/ref", harness_tmpdir());
  snprintf(dir, sizeof dir, "%s/d", harness_tmpdir());
  REQUIRE(reference(ref, 6, want) == 0);
  setup(dir, 6);
  /* the disk "fills up" while writing the optimizer state of the 2nd checkpoint */
  int rc = rl(dir, "RLRUN_FAULT=ckpt.write_optim@2", "run t.yaml --runs-dir runs --quiet", out, sizeof out);
  CHECK_EQ_I64(rc, 1);
  CHECK_CONTAINS(out, "checkpoint checkpoints/step-000004 was not written");
  CHECK_CONTAINS(out, "No space left on device");
  CHECK_CONTAINS(out, "rlrun resume");
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  char db[2100];
  snprintf(db, sizeof db, "%s/state.db", rd);
  rl_err e;
  store *s = store_open(db, 0, &e);
  REQUIRE(s);
  ckpt_info info;
  int found = 0;
  CHECK_EQ_I64(ckpt_latest(rd, s, &info, &found, &e), 0); /* step 2 still verifies */
  CHECK_EQ_I64(found, 1);
  CHECK_EQ_I64(info.iteration, 2);
  ckpt_info_free(&info);
  store_close(s);
  struct stat st;
  char p[2100];
  ckpt_file_path(rd, 4, NULL, p, sizeof p);
  CHECK(stat(p, &st) != 0); /* nothing half-written under the final name */
  snprintf(args, sizeof args, "status %s", rd);
  rl(dir, "", args, out, sizeof out);
  CHECK_CONTAINS(out, "state      failed");
  CHECK_CONTAINS(out, "\nnext       fix what the error above names, then rlrun resume ");
  CHECK_CONTAINS(out, " (--allow-changed when the fix changed an input or the recipe)\n");
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  REQUIRE(weights_sha(rd, 6, got) == 0);
  CHECK_STREQ(got, want);
  /* the plan's step count is the store's: status of the complete run says as many steps done */
  long long planned = -1, done = -1;
  CHECK_EQ_I64(rl(dir, "", "plan t.yaml --hardware cpu", out, sizeof out), 0);
  const char *at = strstr(out, " steps; keep");
  while (at && at > out && at[-1] >= '0' && at[-1] <= '9') at--;
  if (at) planned = atoll(at);
  snprintf(args, sizeof args, "status %s", rd);
  rl(dir, "", args, out, sizeof out);
  at = strstr(out, "iterations trained; ");
  if (at) done = atoll(at + strlen("iterations trained; "));
  CHECK_MSG(planned > 6 && planned == done, "plan: %lld steps, status: %lld steps done", planned, done);
}

/* A run of 6 iterations stopped (killed) in iteration 3's train: checkpoint 2 exists. */
static int stopped_run(const char *dir, char *rd, size_t n) {
  setup(dir, 6);
  char out[4096];
  int rc = rl(dir, "RLRUN_FAULT=loop.train@3:kill", "run t.yaml --runs-dir runs --quiet", out, sizeof out);
  if (!killed(rc)) return -1;
  return run_dir(dir, rd, n);
}

TEST(runs_corrupt_state_db_is_refused_and_kept) {
  char dir[1024], rd[2048], out[8192], args[2300], db[2100], before[65], after[65], w0[65], w1[65];
  snprintf(dir, sizeof dir, "%s/c", harness_tmpdir());
  REQUIRE(stopped_run(dir, rd, sizeof rd) == 0);
  snprintf(db, sizeof db, "%s/state.db", rd);
  REQUIRE(weights_sha(rd, 2, w0) == 0);
  snprintf(args, sizeof args, "status %s", rd); /* a clean close folds the WAL into state.db */
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  /* an option after RUNDIR is refused, not ignored (it printed the status, exit 0) */
  snprintf(args, sizeof args, "status %s --json", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun status: unknown option '--json': status takes RUNDIR alone; see `rlrun status --help`\n");
  FILE *f = fopen(db, "r+b");
  REQUIRE(f);
  for (int i = 0; i < 6000; i++) fputc(i < 16 ? 'x' : 0xA5, f); /* header and the schema page */
  fclose(f);
  rl_err e;
  REQUIRE(sha256_file(db, before, NULL, &e) == 0);
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "cannot resume");
  CHECK_CONTAINS(out, "state.db");
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
  REQUIRE(sha256_file(db, after, NULL, &e) == 0);
  CHECK_STREQ(after, before); /* never modified */
  REQUIRE(weights_sha(rd, 2, w1) == 0);
  CHECK_STREQ(w1, w0); /* checkpoints untouched */
}

/* An emptied (0-byte) state.db beside run.json and checkpoints is a damaged
 * store: status and resume refuse it with exit 4 saying so (not "the run was
 * never started?"), ls lists the run as damaged, and the file stays 0 bytes.
 * `run --runs-dir ''` is refused (exit 2), not ": cannot open directory". */
TEST(runs_empty_state_db_and_empty_runs_dir) {
  char dir[1024], rd[2048], out[8192], args[2300], db[2100], want[5000];
  snprintf(dir, sizeof dir, "%s/z", harness_tmpdir());
  REQUIRE(stopped_run(dir, rd, sizeof rd) == 0);
  snprintf(db, sizeof db, "%s/state.db", rd);
  REQUIRE(truncate(db, 0) == 0);
  char db_msg[2600];
  snprintf(db_msg, sizeof db_msg, "%s: the run store is empty (0 bytes): it was truncated or damaged, and the run's "
           "state (steps, samples, metrics, checkpoint records) is gone with it; restore state.db from a copy, or "
           "start the run again with `rlrun run`", db);
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
  snprintf(want, sizeof want, "rlrun status: %s\n", db_msg);
  CHECK_STREQ(out, want);
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
  snprintf(want, sizeof want, "rlrun resume: cannot resume %s: %s\n", rd, db_msg);
  CHECK_STREQ(out, want);
  CHECK_EQ_I64(rl(dir, "", "ls runs", out, sizeof out), 0);
  CHECK_CONTAINS(out, " damaged   ");
  CHECK_CONTAINS(out, "the run store is empty (0 bytes)");
  struct stat st;
  REQUIRE(stat(db, &st) == 0);
  CHECK_EQ_I64(st.st_size, 0);
  CHECK_EQ_I64(rl(dir, "", "run t.yaml --runs-dir '' --quiet", out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun run: --runs-dir is empty: give the directory for run directories (default: runs; '.' for "
                   "the current directory)\n");
}

/* An option of `rlrun run` missing its value (the last argument) is named as
 * validate names it; it said "unexpected argument '--set'", and so did a 65th
 * --set. resume's short usage lists --quiet, as its --help does. */
TEST(runs_run_option_without_value_is_named) {
  char out[4096], args[4096];
  const char *dir = harness_tmpdir();
  static const char *const opts[] = {"--set", "--name", "--runs-dir"};
  for (int i = 0; i < 3; i++) {
    char want[200];
    snprintf(args, sizeof args, "run t.yaml --quiet %s", opts[i]);
    CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
    snprintf(want, sizeof want, "rlrun run: %s needs a value; see `rlrun run --help`\n", opts[i]);
    CHECK_STREQ(out, want);
  }
  snprintf(args, sizeof args, "run t.yaml");
  for (int i = 0; i < 65; i++) strcat(args, " --set seed=1");
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun run: more than 64 --set overrides\n");
  CHECK_EQ_I64(rl(dir, "", "resume", out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun resume: missing RUNDIR; usage: rlrun resume RUNDIR [--set K=V]... [--allow-changed] [--quiet]\n");
}

/* --name follows a recipe's name rule (a letter or digit first): `--name
 * --quiet` made a run named "--quiet" and ate the option; "_a" was taken by
 * --name and refused as `name: _a`. Nothing is created. */
TEST(runs_name_option_starts_with_a_letter_or_digit) {
  char dir[1024], out[4096], cmd[3000];
  snprintf(dir, sizeof dir, "%s/nameopt", harness_tmpdir());
  setup(dir, 1);
  static const char *const bad[] = {"--quiet", "_a", "-x"};
  for (int i = 0; i < 3; i++) {
    char want[200];
    snprintf(cmd, sizeof cmd, "run t.yaml --name %s --runs-dir runs", bad[i]);
    CHECK_EQ_I64(rl(dir, "", cmd, out, sizeof out), 2);
    snprintf(want, sizeof want, "rlrun run: run name '%s' must start with a letter or digit\n", bad[i]);
    CHECK_STREQ(out, want);
  }
  snprintf(cmd, sizeof cmd, "test -e %s/runs && ls -A %s/runs", dir, dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out) != 0 || out[0] == 0 || !strcmp(out, ".init\n"), 1);
}

TEST(runs_checkpoint_with_wrong_hash_is_refused) {
  char ref[1024], dir[1024], rd[2048], out[8192], args[2300], p[2100], want[65], got[65];
  snprintf(ref, sizeof ref, "%s/ref", harness_tmpdir());
  snprintf(dir, sizeof dir, "%s/h", harness_tmpdir());
  REQUIRE(reference(ref, 6, want) == 0);
  REQUIRE(stopped_run(dir, rd, sizeof rd) == 0);
  ckpt_file_path(rd, 2, CKPT_WEIGHTS, p, sizeof p);
  FILE *f = fopen(p, "r+b");
  REQUIRE(f);
  fseek(f, -2, SEEK_END);
  int c = fgetc(f);
  fseek(f, -2, SEEK_END);
  fputc(c ^ 1, f);
  fclose(f);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "step-000002/model.safetensors: checkpoint file changed after it was written");
  CHECK_CONTAINS(out, "recorded");
  /* nothing lost: put the byte back and the run completes bit-identical */
  f = fopen(p, "r+b");
  REQUIRE(f);
  fseek(f, -2, SEEK_END);
  fputc(c, f);
  fclose(f);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  REQUIRE(weights_sha(rd, 6, got) == 0);
  CHECK_STREQ(got, want);
}

TEST(runs_edited_recipe_or_input_is_refused) {
  char dir[1024], rd[2048], out[8192], args[2300], p[1200], text[4096];
  snprintf(dir, sizeof dir, "%s/e", harness_tmpdir());
  REQUIRE(stopped_run(dir, rd, sizeof rd) == 0);
  REQUIRE(setup_lower_lr(dir) == 0);
  snprintf(p, sizeof p, "%s/reward.lua", dir);
  FILE *f = fopen(p, "a");
  REQUIRE(f);
  fputs("-- edited\n", f);
  fclose(f);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "changed since the run started");
  CHECK_CONTAINS(out, "recipe changed in train: lr: 0.01  →  lr: 0.001\n");
  CHECK_CONTAINS(out, "input changed:");
  CHECK_CONTAINS(out, "reward.lua");
  CHECK_CONTAINS(out, "--allow-changed");
  snprintf(args, sizeof args, "resume %s --quiet --allow-changed", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, text, sizeof text), 0);
  CHECK_CONTAINS(text, "state      complete");
  CHECK_CONTAINS(text, "resumed with --allow-changed");
  /* a complete run says so and does nothing */
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "already complete (6 iterations, final checkpoint step-000006); nothing to do");
  /* … also when an input changed since (exit 0, the change noted, nothing written) */
  char rw[1200], db[2100], before[65], after[65];
  snprintf(rw, sizeof rw, "%s/reward.lua", dir);
  snprintf(db, sizeof db, "%s/state.db", rd);
  rl_err se;
  REQUIRE(sha256_file(db, before, NULL, &se) == 0);
  FILE *fw = fopen(rw, "a");
  REQUIRE(fw);
  fputs("-- edited again\n", fw);
  fclose(fw);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "already complete (6 iterations, final checkpoint step-000006); nothing to do");
  CHECK_CONTAINS(out, "note: the recipe or its inputs changed since the run started:");
  CHECK_CONTAINS(out, "reward.lua");
  CHECK_CONTAINS(out, "pass --allow-changed");
  REQUIRE(sha256_file(db, after, NULL, &se) == 0);
  CHECK_STREQ(after, before);
}

TEST(runs_read_commands_and_export) {
  char dir[1024], rd[2048], out[16384], args[4400], ex[1200];
  snprintf(dir, sizeof dir, "%s/r", harness_tmpdir());
  setup(dir, 4);
  CHECK_EQ_I64(rl(dir, "", "run t.yaml --runs-dir runs", out, sizeof out), 0);
  CHECK_CONTAINS(out, "run directory: runs/t-");
  CHECK_CONTAINS(out, "iter 4/4  reward ");
  CHECK_CONTAINS(out, "run complete");
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  /* the status line (forced on): "-" until a value exists, never "nan" */
  CHECK_EQ_I64(rl(dir, "RLRUN_PROGRESS=1", "run t.yaml --runs-dir runs2 --set loop.iterations=2", out, sizeof out), 0);
  CHECK_CONTAINS(out, "[0/2] convert ");
  CHECK_CONTAINS(out, "reward -  mismatch -");
  CHECK_CONTAINS(out, "[2/2] rollout ");
  CHECK(strstr(out, "nan") == NULL);
  CHECK_CONTAINS(out, "iter 2/2  reward ");
  /* --quiet on a terminal: the status line without the per-iteration lines (they went to the terminal) */
  CHECK_EQ_I64(rl(dir, "RLRUN_PROGRESS=1", "run t.yaml --runs-dir runs2q --set loop.iterations=2 --quiet", out, sizeof out), 0);
  CHECK_CONTAINS(out, "[2/2] rollout ");
  CHECK(strstr(out, "iter 1/2") == NULL);
  CHECK(strstr(out, "checkpoint step-") == NULL);
  /* a knob's value it does not take: said once, the default used (not a terminal here: plain lines) */
  CHECK_EQ_I64(rl(dir, "RLRUN_PROGRESS=yes", "run t.yaml --runs-dir runs3 --set loop.iterations=1", out, sizeof out), 0);
  CHECK_CONTAINS(out, "rlrun: warning: RLRUN_PROGRESS=yes is not a value it takes (0 or 1); using its default, 0\n");
  CHECK(strstr(out, "[1/1] rollout ") == NULL);
  CHECK_CONTAINS(out, "run complete");
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "state      complete");
  CHECK_CONTAINS(out, "progress   4 of 4 iterations trained");
  CHECK_CONTAINS(out, "samples    64");
  CHECK_CONTAINS(out, "\nlatest     reward/mean "); /* the metrics on one line (the names outrun the label column) */
  CHECK_CONTAINS(out, ", loss ");
  CHECK_CONTAINS(out, "checkpoints step-000002 step-000004");
  { /* the fresh model's config.json: reals at the digits that give them back */
    char cp[2200], *cj = NULL;
    size_t cl = 0;
    rl_err ce = {0};
    snprintf(cp, sizeof cp, "%s/checkpoints/step-000004/config.json", rd);
    REQUIRE(rl_read_file(cp, &cj, &cl, &ce) == 0);
    CHECK_CONTAINS(cj, "\"rms_norm_eps\": 1e-6,");
    CHECK_CONTAINS(cj, "\"rope_theta\": ");
    CHECK(strstr(cj, "99999") == NULL);
    free(cj);
  }
  CHECK_EQ_I64(rl(dir, "", "ls runs", out, sizeof out), 0);
  CHECK_CONTAINS(out, "complete  4/4");
  snprintf(args, sizeof args, "metrics %s --csv", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "iteration,");
  CHECK_CONTAINS(out, "reward/mean");
  CHECK_CONTAINS(out, "\n4,");
  snprintf(args, sizeof args, "metrics %s --json", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "{\"iteration\": 1, ");
  CHECK_CONTAINS(out, "\"mismatch/kl_k3\": ");
  snprintf(args, sizeof args, "samples %s --iter 2 --top 3", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  int lines = 0;
  for (char *q = out; (q = strchr(q, '\n')); q++) lines++;
  CHECK_EQ_I64(lines, 4); /* header + 3 */
  CHECK_CONTAINS(out, "    2       ");
  /* options may come before RUNDIR, as for run and resume (it said "missing RUNDIR") */
  char *first = rl_xstrdup(out);
  snprintf(args, sizeof args, "samples --top 3 --iter 2 %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_STREQ(out, first);
  free(first);
  snprintf(args, sizeof args, "metrics --csv %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "\n4,");
  snprintf(args, sizeof args, "export --out first.yaml %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, " to first.yaml\n");
  snprintf(args, sizeof args, "export %s --out", rd); /* said "unknown argument '--out'" */
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun export: --out needs a value (FILE: where the export is written)\n");
  /* an iteration without samples is an error that names the last one */
  char want[2600];
  snprintf(args, sizeof args, "samples %s --iter 99", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  snprintf(want, sizeof want, "rlrun samples: --iter 99: run %s has no samples in iteration 99; its last iteration "
           "with samples is 4 (samples in iterations 1..4)\n", rd);
  CHECK_STREQ(out, want);
  /* iterations count from 1, --top takes 1 or more (0 printed every sample, -1 was taken) */
  const char *bad_args[][2] = {
      {"--iter 0 --top 2", "rlrun samples: --iter 0: iterations count from 1; give K >= 1, or leave --iter out for "
                           "the latest iteration with samples\n"},
      {"--iter -1", "rlrun samples: --iter -1: iterations count from 1; give K >= 1, or leave --iter out for the "
                    "latest iteration with samples\n"},
      {"--top 0", "rlrun samples: --top 0: N must be 1 or more (the N highest rewards); leave --top out for every "
                  "sample of the iteration shown (--iter K, default the latest)\n"},
      {"--top -3", "rlrun samples: --top -3: N must be 1 or more (the N highest rewards); leave --top out for every "
                   "sample of the iteration shown (--iter K, default the latest)\n"},
      {"--iter 2x", "rlrun samples: --iter '2x' is not a whole number (K: an iteration, counted from 1)\n"},
      {"--iter 99999999999999999999", "rlrun samples: --iter '99999999999999999999' is out of range (K: an "
                                      "iteration, counted from 1)\n"},
      {"--top -99999999999999999999", "rlrun samples: --top '-99999999999999999999' is out of range (N: how many "
                                      "samples, 1 or more)\n"},
      {"--top", "rlrun samples: --top needs a value (N: how many samples, 1 or more)\n"},
      {"--last 2", "rlrun samples: unknown option '--last' (--iter K, --top N, --full, --json)\n"}};
  for (size_t k = 0; k < sizeof bad_args / sizeof *bad_args; k++) {
    snprintf(args, sizeof args, "samples %s %s", rd, bad_args[k][0]);
    CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
    CHECK_STREQ(out, bad_args[k][1]);
  }
  /* --top past long long is every sample (it was "is not a whole number") */
  snprintf(args, sizeof args, "samples %s --top 99999999999999999999", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  snprintf(args, sizeof args, "samples %s --top 1000000", rd);
  char all[8192];
  CHECK_EQ_I64(rl(dir, "", args, all, sizeof all), 0);
  CHECK_STREQ(out, all);
  /* one output format at a time */
  snprintf(args, sizeof args, "metrics %s --csv --json", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun metrics: --csv and --json exclude each other: pass one (no option: a table)\n");
  /* export, then run the export: hashes check out; change an input: refused */
  snprintf(ex, sizeof ex, "%s/exported.yaml", dir);
  snprintf(args, sizeof args, "export %s --out %s", rd, ex);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  char *text = NULL;
  size_t len;
  rl_err e;
  REQUIRE(rl_read_file(ex, &text, &len, &e) == 0);
  CHECK_CONTAINS(text, "# rlrun-export: rlrun " RLRUN_VERSION);
  CHECK_CONTAINS(text, "# rlrun-input: sha256 ");
  CHECK_CONTAINS(text, "/reward.lua\n");
  CHECK_CONTAINS(text, "/task.lua\n");
  free(text);
  CHECK_EQ_I64(rl(dir, "", "run exported.yaml --runs-dir runs2 --quiet --set loop.iterations=1", out, sizeof out), 0);
  CHECK_CONTAINS(out, " (1 iteration)\n"); /* not "(1 iterations)" */
  char p[1200];
  snprintf(p, sizeof p, "%s/task.lua", dir);
  FILE *f = fopen(p, "a");
  REQUIRE(f);
  fputs("-- changed\n", f);
  fclose(f);
  CHECK_EQ_I64(rl(dir, "", "run exported.yaml --runs-dir runs3 --quiet", out, sizeof out), 4);
  CHECK_CONTAINS(out, "rlrun run: exported.yaml: 1 input differs from the exported run (not the same experiment):\n");
  CHECK_CONTAINS(out, "task.lua has sha256");
}

/* What changed in a recipe is named by its dotted key: one colon after the section. */
TEST(runs_recipe_changed_names_dotted_keys) {
  const char *a = "seed: 1\ntrain:\n  lr: 0.01\n  optimizer:\n    name: adamw\n    beta1: 0.9  # default\n"
                  "loop:\n  iterations: 4\n";
  const char *b = "seed: 2\ntrain:\n  lr: 0.01\n  optimizer:\n    name: adamw\n    beta1: 0.95\n"
                  "loop:\n  iterations: 4\n";
  char *report = NULL;
  CHECK_EQ_I64(runs_recipe_changed(a, b, &report), 2);
  REQUIRE(report);
  CHECK_STREQ(report, "  recipe changed: seed: 1  →  seed: 2\n"
                      "  recipe changed in train.optimizer: beta1: 0.9  →  beta1: 0.95\n");
  free(report);
}

/* Keys are compared by their dotted path, not by line number: a key a newer rlrun added (or
 * an older one had) at its default is no change — a run started before precision.exact_logprobs
 * existed resumes without --allow-changed — and the lines after it are not reported as moved. */
TEST(runs_recipe_changed_by_key_not_line) {
  const char *old = "seed: 1\nprecision:\n  rollout: bf16  # default\n  scale_fmt: fp32  # default\n"
                    "  gone_key: 3  # default\ndata:\n  shuffle: true  # default\nloop:\n  iterations: 4\n";
  const char *now = "seed: 1\nprecision:\n  rollout: bf16  # default\n  scale_fmt: fp32  # default\n"
                    "  exact_logprobs: false  # default\ndata:\n  shuffle: true  # default\nloop:\n  iterations: 4\n";
  char *report = NULL;
  CHECK_EQ_I64(runs_recipe_changed(old, now, &report), 0);
  CHECK(report == NULL);
  /* the same new key set in the recipe, and one changed value after it: two lines, nothing shifted */
  const char *set = "seed: 1\nprecision:\n  rollout: bf16  # default\n  scale_fmt: fp32  # default\n"
                    "  exact_logprobs: true\ndata:\n  shuffle: true  # default\nloop:\n  iterations: 6\n";
  CHECK_EQ_I64(runs_recipe_changed(old, set, &report), 2);
  REQUIRE(report);
  CHECK_STREQ(report, "  recipe changed in loop: iterations: 4  →  iterations: 6\n"
                      "  recipe changed in precision: (none)  →  exact_logprobs: true\n");
  free(report);
  report = NULL;
  /* a key the recipe had set that the new text lacks */
  CHECK_EQ_I64(runs_recipe_changed(set, old, &report), 2);
  REQUIRE(report);
  CHECK_CONTAINS(report, "  recipe changed in precision: exact_logprobs: true  →  (none)\n");
  free(report);
}

TEST(runs_sigterm_stops_resumably) {
  char dir[1024], out[8192], cmd[4096], rd[2048];
  snprintf(dir, sizeof dir, "%s/s", harness_tmpdir());
  setup(dir, 100000);
  snprintf(cmd, sizeof cmd,
           "cd %s && { %s run t.yaml --runs-dir runs --quiet & p=$!; i=0; "
           "while ! ls runs/*/state.db >/dev/null 2>&1 && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
           "sleep 0.3; kill -TERM $p; wait $p; echo rc=$?; }",
           dir, bin());
  harness_run(cmd, out, sizeof out);
  CHECK_CONTAINS(out, "rc=130");
  CHECK_CONTAINS(out, "rlrun: interrupt: stopping at the next step boundary (interrupt again to stop now");
  CHECK_CONTAINS(out, "interrupted at iteration");
  CHECK_CONTAINS(out, "resume with `rlrun resume");
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  char args[2300];
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "state      stopped");
  CHECK_CONTAINS(out, "0 failed");
}

/* A model too large for the machine: exit 1 with what to do (no abort), the
 * run's log says how it ended, and status names the state. Skipped under
 * AddressSanitizer (its allocator refuses such a size itself, and its shadow
 * memory does not live under `ulimit -v`). */
TEST(runs_out_of_memory_ends_the_run_cleanly) {
#if defined(__SANITIZE_ADDRESS__)
  printf("    (skipped under AddressSanitizer)\n");
#else
  char dir[1024], out[8192], rd[2048], args[2400];
  snprintf(dir, sizeof dir, "%s/oom", harness_tmpdir());
  setup(dir, 2);
  /* ffn 1048576 × hidden 65536: one 128 GiB weight, past a 4 GB address space */
  CHECK_EQ_I64(rl(dir, "ulimit -v 4000000;", "run t.yaml --runs-dir runs --set model.init.hidden=65536 "
                  "--set model.init.ffn=1048576", out, sizeof out), RL_EXIT_FAIL);
  CHECK_CONTAINS(out, "rlrun: out of memory allocating ");
  CHECK_CONTAINS(out, "make the model or the batch smaller, or free memory\n");
  CHECK_CONTAINS(out, "stopped: out of memory at iteration 0 (convert), allocating ");
  CHECK(strstr(out, "Aborted") == NULL);
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "%s/logs/run.log", rd);
  char *log = NULL;
  size_t n;
  rl_err e;
  REQUIRE(rl_read_file(args, &log, &n, &e) == 0);
  CHECK_CONTAINS(log, "stopped: out of memory at iteration 0 (convert)");
  CHECK_CONTAINS(log, "`rlrun resume ");
  free(log);
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "state      new");
#endif
}

/* A signal while a large data file is validated stops the command before a
 * run directory exists (it was made, and its convert step run, before the
 * exit 130). */
TEST(runs_interrupt_during_validation_makes_no_run) {
  char dir[1024], out[8192], cmd[4096];
  snprintf(dir, sizeof dir, "%s/iv", harness_tmpdir());
  setup(dir, 2);
  snprintf(cmd, sizeof cmd, "%s/big.jsonl", dir);
  FILE *f = fopen(cmd, "w");
  REQUIRE(f != NULL);
  for (int i = 0; i < 2000000; i++) fputs("{\"prompt\": \"1+2=\", \"answer\": \"3\"}\n", f);
  REQUIRE(fclose(f) == 0);
  snprintf(cmd, sizeof cmd,
           "cd %s && { %s run t.yaml --runs-dir runs --set data.prompts=big.jsonl --set data.task=null & p=$!; "
           "sleep 0.4; kill -TERM $p; wait $p; echo rc=$?; ls -A runs 2>&1 | grep -v '^.init$'; }",
           dir, bin());
  harness_run(cmd, out, sizeof out);
  CHECK_CONTAINS(out, "rlrun run: interrupted while the recipe was checked; no run directory was made\n");
  CHECK_CONTAINS(out, "rc=130\n");
  CHECK(strstr(out, "t-") == NULL); /* no run under runs/ */
}

TEST(runs_reward_script_error_is_named_and_resumable) {
  char dir[1024], rd[2048], out[8192], args[2300], p[1200];
  snprintf(dir, sizeof dir, "%s/l", harness_tmpdir());
  setup(dir, 4);
  snprintf(p, sizeof p, "%s/reward.lua", dir);
  char *orig = NULL;
  size_t len;
  rl_err e;
  REQUIRE(rl_read_file(p, &orig, &len, &e) == 0);
  size_t n = len + 200;
  char *bad = malloc(n);
  snprintf(bad, n, "%s\nlocal inner = reward\nfunction reward(s)\n  if s.iteration == 3 then local x = nil; return x.y end\n"
           "  return inner(s)\nend\n", orig);
  harness_write_file(p, bad);
  CHECK_EQ_I64(rl(dir, "", "run t.yaml --runs-dir runs --quiet", out, sizeof out), 1);
  CHECK_CONTAINS(out, "reward.lua:");
  CHECK_CONTAINS(out, "sample 0 of iteration 3");
  CHECK_CONTAINS(out, "the run stays resumable");
  CHECK_CONTAINS(out, "where a reward or task script raised the error, fix it first: resume then sees the changed "
                      "script and needs --allow-changed");
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  /* logs/run.log ends as the terminal did: the iterations, then the failure
   * and what to do (it used to hold the iteration lines only) */
  char log[2200], *text = NULL;
  size_t tl;
  snprintf(log, sizeof log, "%s/logs/run.log", rd);
  REQUIRE(rl_read_file(log, &text, &tl, &e) == 0);
  CHECK_CONTAINS(text, "run directory: runs/t-");
  CHECK_CONTAINS(text, "\niter 2/4  reward ");
  const char *tail = strstr(out, "\nrlrun: "); /* the lines after "run directory: …" */
  REQUIRE(tail);
  CHECK_MSG(tl >= strlen(tail) && !strcmp(text + tl - strlen(tail), tail), "run.log does not end with\n%s\ngot:\n%s",
            tail, text);
  free(text);
  /* the script is fixed: the run continues from what was committed */
  harness_write_file(p, orig);
  snprintf(args, sizeof args, "resume %s --quiet --allow-changed", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "input changed:");
  check_samples_table(rd, 4);
  REQUIRE(rl_read_file(log, &text, &tl, &e) == 0);
  char want[2400];
  snprintf(want, sizeof want, "\nresuming %s\n", rd);
  CHECK_CONTAINS(text, want);
  CHECK_CONTAINS(text, "\niter 4/4  reward ");
  snprintf(want, sizeof want, "\nrun complete: %s (4 iterations)\n", rd);
  CHECK_MSG(tl >= strlen(want) && !strcmp(text + tl - strlen(want), want), "run.log does not end with %s:\n%s", want,
            text);
  free(text);
  free(orig);
  free(bad);
}

/* Every step (stage, status, attempts), event and artifact record of a run,
 * as text: what a refused resume must leave exactly as it was. */
static int snap_event(void *ud, const store_event_row *ev) {
  char **t = ud;
  size_t old = *t ? strlen(*t) : 0, add = strlen(ev->message) + 96;
  *t = realloc(*t, old + add);
  snprintf(*t + old, add, "event %d %lld %s: %s\n", ev->level, (long long)ev->iteration, ev->stage ? ev->stage : "-",
           ev->message);
  return 0;
}
static int snap_artifact(void *ud, const store_artifact *a) {
  char **t = ud;
  size_t old = *t ? strlen(*t) : 0, add = strlen(a->path) + 128;
  *t = realloc(*t, old + add);
  snprintf(*t + old, add, "artifact %s %lld %s\n", a->path, (long long)a->size, a->sha256);
  return 0;
}
static char *store_snapshot(const char *rd) {
  char db[2100];
  snprintf(db, sizeof db, "%s/state.db", rd);
  rl_err e;
  store *s = store_open(db, 0, &e);
  if (!s) return NULL;
  char *t = calloc(1, 1);
  store_step *v = NULL;
  int n = 0;
  if (store_steps_list(s, &v, &n, &e) == 0) {
    for (int i = 0; i < n; i++) {
      size_t old = strlen(t);
      t = realloc(t, old + 128);
      snprintf(t + old, 128, "step %lld %s %d %d\n", (long long)v[i].iteration, v[i].stage, v[i].status,
               v[i].attempts);
    }
    store_steps_free(v, n);
  }
  store_events_each(s, STORE_DEBUG, snap_event, &t, &e);
  store_artifacts_each(s, NULL, snap_artifact, &t, &e);
  store_close(s);
  return t;
}

/* Flip one byte near the end of a file. */
static int flip_byte(const char *p) {
  FILE *f = fopen(p, "r+b");
  if (!f) return -1;
  fseek(f, -3, SEEK_END);
  int c = fgetc(f);
  fseek(f, -3, SEEK_END);
  fputc(c ^ 0x10, f);
  return fclose(f);
}

/* The checkpoint resume would load has a wrong hash: exit 4 naming the file and
 * nothing modified (no state change, no failed step, no event, on every try).
 * Following the advice (remove the directory) resumes from the checkpoint
 * before it, and the removed one is written again, byte for byte what an
 * uninterrupted run writes (it used to stay recorded: "checkpoint file is
 * missing" at that iteration, a dead end). */
TEST(runs_bad_checkpoint_refused_untouched_then_removed_is_rewritten) {
  char ref[1024], dir[1024], rd[2048], ra[2048], out[8192], args[2300], p[2100], q[2100], want[65], got[65];
  char db[2100], db0[65], db1[65];
  snprintf(ref, sizeof ref, "%s/ref", harness_tmpdir());
  snprintf(dir, sizeof dir, "%s/b", harness_tmpdir());
  REQUIRE(reference(ref, 6, want) == 0);
  REQUIRE(run_dir(ref, ra, sizeof ra) == 0);
  setup(dir, 6);
  /* killed in iteration 5's train: checkpoints 2 and 4 recorded, 4 the newest */
  REQUIRE(killed(rl(dir, "RLRUN_FAULT=loop.train@5:kill", "run t.yaml --runs-dir runs --quiet", out, sizeof out)));
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "status %s", rd); /* a clean close folds the WAL into state.db */
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "state      stopped");
  CHECK_CONTAINS(out, "checkpoints step-000002 step-000004");
  char next[2200];
  snprintf(next, sizeof next, "\nnext       rlrun resume %s   (continues from the last committed step)\n", rd);
  CHECK_CONTAINS(out, next);
  ckpt_file_path(rd, 4, CKPT_WEIGHTS, p, sizeof p);
  REQUIRE(flip_byte(p) == 0);
  snprintf(db, sizeof db, "%s/state.db", rd);
  rl_err e;
  REQUIRE(sha256_file(db, db0, NULL, &e) == 0);
  char *before = store_snapshot(rd);
  REQUIRE(before);
  for (int attempt = 0; attempt < 2; attempt++) {
    const char *flags = attempt ? "--quiet --allow-changed" : "--quiet";
    snprintf(args, sizeof args, "resume %s %s", rd, flags);
    CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
    CHECK_CONTAINS(out, "step-000004/model.safetensors: checkpoint file changed after it was written");
    CHECK_CONTAINS(out, "remove the directory checkpoints/step-000004 entirely");
    CHECK_CONTAINS(out, "nothing was modified");
    CHECK_MSG(!strstr(out, "resuming"), "a refused resume said it was resuming:\n%s", out);
    CHECK_MSG(!strstr(out, "stays resumable"), "a refused resume:\n%s", out);
    char *now = store_snapshot(rd);
    REQUIRE(now);
    CHECK_STREQ(now, before);
    free(now);
  }
  REQUIRE(sha256_file(db, db1, NULL, &e) == 0);
  CHECK_STREQ(db1, db0); /* not a byte of state.db changed */
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "state      stopped");
  CHECK_CONTAINS(out, "0 failed");
  CHECK_CONTAINS(out, "0 errors");
  free(before);
  /* as advised: remove the directory; resume falls back to step 2 and writes 4 again */
  ckpt_file_path(rd, 4, NULL, p, sizeof p);
  char cmd[2300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", p);
  REQUIRE(harness_run(cmd, NULL, 0) == 0);
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "checkpoint step-000004 removed from the run directory: resuming from checkpoint step-000002");
  CHECK_CONTAINS(out, "resuming after checkpoint step-000002");
  CHECK_CONTAINS(out, "checkpoint step-000004 written");
  CHECK_CONTAINS(out, "run complete");
  const char *files[] = {CKPT_WEIGHTS, CKPT_OPTIM, CKPT_CONFIG};
  for (int i = 0; i < 3; i++) { /* the rewritten checkpoint = the uninterrupted run's */
    ckpt_file_path(ra, 4, files[i], p, sizeof p);
    ckpt_file_path(rd, 4, files[i], q, sizeof q);
    REQUIRE(sha256_file(p, want, NULL, &e) == 0);
    REQUIRE(sha256_file(q, got, NULL, &e) == 0);
    CHECK_MSG(!strcmp(got, want), "step-000004/%s: sha256 %s, the uninterrupted run's %s", files[i], got, want);
  }
  REQUIRE(weights_sha(ra, 6, want) == 0);
  REQUIRE(weights_sha(rd, 6, got) == 0);
  CHECK_STREQ(got, want);
  check_samples_table(rd, 6);
  /* the store records the new files (sha256 verified) and the fallback */
  store *s = store_open(db, 0, &e);
  REQUIRE(s);
  CHECK_EQ_I64(ckpt_verify(rd, s, 4, &e), 0);
  CHECK_EQ_I64(ckpt_verify(rd, s, 6, &e), 0);
  int64_t *v = NULL;
  int n = 0;
  REQUIRE(ckpt_list(s, &v, &n, &e) == 0);
  REQUIRE(n == 2); /* keep_checkpoints 2 */
  CHECK_EQ_I64(v[0], 4);
  CHECK_EQ_I64(v[1], 6);
  free(v);
  store_artifact a;
  int found = 0;
  ckpt_file_path(rd, 4, CKPT_WEIGHTS, q, sizeof q);
  REQUIRE(sha256_file(q, got, NULL, &e) == 0);
  CHECK_EQ_I64(store_artifact_get(s, "checkpoints/step-000004/model.safetensors", &a, &found, &e), 0);
  CHECK_EQ_I64(found, 1);
  CHECK_STREQ(a.sha256, got);
  store_close(s);
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "state      complete");
  CHECK(strstr(out, "\nnext ") == NULL); /* a complete run: nothing to resume */
  CHECK_CONTAINS(out, "0 failed");
  CHECK_CONTAINS(out, "[warn] iteration 2 checkpoint: checkpoint directory step-000004 removed: resumed from checkpoint step-000002");
}

/* Every checkpoint directory removed: the run starts over from iteration 1
 * (the committed samples read back), and ends bit-identical. */
TEST(runs_all_checkpoints_removed_resumes_from_the_start) {
  char ref[1024], dir[1024], rd[2048], out[8192], args[2300], want[65], got[65], cmd[4300];
  snprintf(ref, sizeof ref, "%s/ref", harness_tmpdir());
  snprintf(dir, sizeof dir, "%s/a", harness_tmpdir());
  REQUIRE(reference(ref, 6, want) == 0);
  setup(dir, 6);
  REQUIRE(killed(rl(dir, "RLRUN_FAULT=loop.train@5:kill", "run t.yaml --runs-dir runs --quiet", out, sizeof out)));
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(cmd, sizeof cmd, "rm -rf %s/checkpoints/step-000002 %s/checkpoints/step-000004", rd, rd);
  REQUIRE(harness_run(cmd, NULL, 0) == 0);
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "checkpoints step-000002 step-000004 removed from the run directory: resuming from the start");
  REQUIRE(weights_sha(rd, 6, got) == 0);
  CHECK_STREQ(got, want);
  check_samples_table(rd, 6);
}

/* A run started with a relative path in an override, from a recipe reached
 * through a symbolic link whose base: is relative to the link's directory,
 * resumes from any working directory; edits are still detected there. */
TEST(runs_resume_does_not_depend_on_the_working_directory) {
  char ref[1024], dir[1024], real[PATH_MAX], rd[2048], out[8192], args[2300], cmd[PATH_MAX + 64], p[2100], want[65],
      got[65];
  snprintf(ref, sizeof ref, "%s/ref", harness_tmpdir());
  snprintf(dir, sizeof dir, "%s/w", harness_tmpdir());
  REQUIRE(reference(ref, 6, want) == 0);
  setup(dir, 6);
  snprintf(cmd, sizeof cmd, "cd %s && mkdir -p a b/deep sub && cp reward.lua sub/r2.lua && "
           "printf 'base: ../t.yaml\\n' > b/deep/child.yaml && ln -s ../b/deep/child.yaml a/link.yaml", dir);
  REQUIRE(harness_run(cmd, NULL, 0) == 0);
  REQUIRE(realpath(dir, real));
  REQUIRE(killed(rl(dir, "RLRUN_FAULT=loop.train@3:kill",
                    "run a/link.yaml --set reward.script=sub/r2.lua --runs-dir runs --quiet", out, sizeof out)));
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  char *info = NULL;
  size_t len;
  rl_err e;
  snprintf(p, sizeof p, "%s/run.json", rd);
  REQUIRE(rl_read_file(p, &info, &len, &e) == 0);
  snprintf(cmd, sizeof cmd, "\"recipe_path\": \"%s/a/link.yaml\"", real);
  CHECK_CONTAINS(info, cmd);
  snprintf(cmd, sizeof cmd, "\"cwd\": \"%s\"", real);
  CHECK_CONTAINS(info, cmd);
  CHECK_CONTAINS(info, "\"reward.script=sub/r2.lua\"");
  free(info);
  /* from elsewhere: an edit of the base recipe and of the override's file are still found */
  char *orig = NULL;
  snprintf(p, sizeof p, "%s/t.yaml", dir);
  REQUIRE(rl_read_file(p, &orig, &len, &e) == 0);
  char *edited = strdup(orig), *lr = strstr(edited, "lr: 1.0e-2");
  REQUIRE(lr);
  lr[9] = '3';
  harness_write_file(p, edited);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(rl("/", "", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "recipe changed in train: lr: 0.01  →  lr: 0.001");
  CHECK_MSG(!strstr(out, "no longer loads"), "%s", out);
  harness_write_file(p, orig);
  snprintf(p, sizeof p, "%s/sub/r2.lua", dir);
  char *lua = NULL;
  REQUIRE(rl_read_file(p, &lua, &len, &e) == 0);
  char *lua2 = malloc(len + 16);
  REQUIRE(lua2);
  snprintf(lua2, len + 16, "%s-- edited\n", lua);
  harness_write_file(p, lua2);
  free(lua2);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "input changed:");
  CHECK_CONTAINS(out, "/sub/r2.lua");
  CHECK_MSG(!strstr(out, "recipe changed"), "%s", out);
  harness_write_file(p, lua);
  /* nothing changed: it resumes from / and ends where the uninterrupted run does */
  CHECK_EQ_I64(rl("/", "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "run complete");
  REQUIRE(weights_sha(rd, 6, got) == 0);
  CHECK_STREQ(got, want);
  check_samples_table(rd, 6);
  free(orig), free(edited), free(lua);
}

/* precision.keep_bf16 / bf16_first_layers reach the run (FORMATS.md): an fp8-block
 * rollout with every linear kept BF16 is the BF16 trainer's own numerics
 * (mismatch 0, nothing quantized to sync), one layer kept sends fewer bytes than none. */
TEST(runs_keep_bf16_reaches_rollout_and_sync) {
  char dir[1024], out[16384], args[4400];
  const char *sets[3] = {"--set 'precision.keep_bf16=[]'", "--set 'precision.keep_bf16=[\"*\"]'",
                         "--set precision.bf16_first_layers=1"};
  double diff[3] = {-1, -1, -1}, bytes[3] = {-1, -1, -1};
  for (int k = 0; k < 3; k++) {
    snprintf(dir, sizeof dir, "%s/kb%d", harness_tmpdir(), k);
    setup(dir, 1);
    snprintf(args, sizeof args, "run t.yaml --runs-dir runs --quiet --set precision.rollout=fp8-block --set "
             "'model.init={arch: qwen3, hidden: 16, layers: 2, heads: 2, kv_heads: 1, head_dim: 8, ffn: 32, "
             "max_seq_len: 12}' %s", sets[k]);
    CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
    char rd[2048];
    REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
    snprintf(args, sizeof args, "metrics %s --json", rd);
    CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
    const char *d = strstr(out, "\"mismatch/logp_abs_diff\": "), *b = strstr(out, "\"sync/bytes\": ");
    REQUIRE(d && b);
    diff[k] = atof(d + strlen("\"mismatch/logp_abs_diff\": "));
    bytes[k] = atof(b + strlen("\"sync/bytes\": "));
  }
  CHECK_MSG(diff[0] > 0 && bytes[0] > 0, "fp8-block rollout: mismatch %g, sync %g bytes", diff[0], bytes[0]);
  CHECK_MSG(diff[1] == 0 && bytes[1] == 0, "all kept: mismatch %g, sync %g bytes", diff[1], bytes[1]);
  CHECK_MSG(bytes[2] > 0 && bytes[2] < bytes[0], "layer 0 kept: %g bytes, none kept: %g", bytes[2], bytes[0]);
}

/* train.ppo_epochs / minibatches reach the trainer: one optimizer step per
 * iteration (the default) never clips (ratio 1); four, with tight clip bounds, do. */
TEST(runs_ppo_epochs_make_clipping_act) {
  char dir[1024], out[16384], args[4400], rd[2048];
  const char *sets[2] = {"", "--set train.ppo_epochs=2 --set train.minibatches=2"};
  double clip[2] = {-1, -1};
  for (int k = 0; k < 2; k++) {
    snprintf(dir, sizeof dir, "%s/ppo%d", harness_tmpdir(), k);
    setup(dir, 2);
    snprintf(args, sizeof args, "run t.yaml --runs-dir runs --quiet --set train.clip_low=0.001 "
             "--set train.clip_high=0.001 --set train.lr=0.05 %s", sets[k]);
    CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
    REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
    snprintf(args, sizeof args, "metrics %s --json", rd);
    CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
    double sum = 0;
    for (const char *p = strstr(out, "\"policy/clipfrac\": "); p; p = strstr(p + 1, "\"policy/clipfrac\": "))
      sum += atof(p + strlen("\"policy/clipfrac\": "));
    clip[k] = sum;
  }
  CHECK_MSG(clip[0] == 0, "one step per iteration: clipfrac sum %g (want 0)", clip[0]);
  CHECK_MSG(clip[1] > 0, "four steps per iteration: clipfrac sum %g (want > 0)", clip[1]);
  snprintf(args, sizeof args, "plan t.yaml --hardware cpu %s", sets[1]);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, ", 4 optimizer steps (2 epochs x 2 minibatches)");
}

/* A run directory holding only a store with its run row (no recipe ran): for
 * the read commands on hand-made samples and metrics. */
static store *fake_run(const char *rd) {
  char cmd[2200];
  snprintf(cmd, sizeof cmd, "mkdir -p %s", rd);
  if (harness_run(cmd, NULL, 0) != 0) return NULL;
  snprintf(cmd, sizeof cmd, "%s/state.db", rd);
  rl_err e;
  store *s = store_open(cmd, 1, &e);
  store_run run = {.id = "fake", .name = "fake", .recipe = "", .recipe_resolved = "", .input_hashes = "{}"};
  if (s && store_run_init(s, &run, &e)) store_close(s), s = NULL;
  return s;
}

/* `rlrun samples` prints every text unambiguously: a backslash is escaped (a
 * completion "\n\b" and a newline-backslash-b printed alike), control bytes
 * and bytes that are not UTF-8 as \xNN, and a cut text (60 bytes of a prompt,
 * 120 of a completion) is cut between characters and marked with the bytes
 * left out. */
TEST(runs_samples_text_is_unambiguous) {
  char rd[1200], out[16384], args[1400], long_c[200], long_p[80], full[200];
  snprintf(rd, sizeof rd, "%s/fake", harness_tmpdir());
  store *s = fake_run(rd);
  REQUIRE(s);
  memset(long_c, 'a', 119);
  snprintf(long_c + 119, sizeof long_c - 119, "\xc3\xa9" "bcd"); /* é straddles byte 120 */
  memset(full, 'x', 120);
  full[120] = 0;
  memset(long_p, 'q', 61);
  long_p[61] = 0;
  const char *comp[] = {"\n\\b", "ends in \\", "tab\tcr\rsoh\x01" "del\x7f" "quote\"", "\xff\xfe ok \xc3\xa9 nel\xc2\x85",
                        long_c, full, "short"};
  int n = (int)(sizeof comp / sizeof *comp);
  store_sample v[8];
  memset(v, 0, sizeof v);
  for (int i = 0; i < n; i++)
    v[i] = (store_sample){.iteration = 1, .prompt_index = 0, .sample_index = i, .prompt = i == n - 1 ? long_p : "p",
                          .completion = comp[i], .reward = 0.5, .finish_reason = "stop"};
  rl_err e;
  REQUIRE(store_begin(s, &e) == 0);
  REQUIRE(store_samples_put(s, v, n, &e) == 0);
  REQUIRE(store_commit(s, &e) == 0);
  store_close(s);
  snprintf(args, sizeof args, "samples %s", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  char want[4096], as[130], xs[130], qs[70];
  memset(as, 'a', 119), as[119] = 0;
  memset(xs, 'x', 120), xs[120] = 0;
  memset(qs, 'q', 60), qs[60] = 0;
  snprintf(want, sizeof want,
           " ITER  PROMPT SAMPLE    REWARD FINISH  PROMPT -> COMPLETION\n"
           "    1       0      0    0.5000 stop    \"p\" -> \"\\n\\\\b\"\n"
           "    1       0      1    0.5000 stop    \"p\" -> \"ends in \\\\\"\n"
           "    1       0      2    0.5000 stop    \"p\" -> \"tab\\tcr\\rsoh\\x01del\\x7Fquote\\\"\"\n"
           "    1       0      3    0.5000 stop    \"p\" -> \"\\xFF\\xFE ok \xc3\xa9 nel\\u0085\"\n"
           "    1       0      4    0.5000 stop    \"p\" -> \"%s\"…(+5 bytes)\n"
           "    1       0      5    0.5000 stop    \"p\" -> \"%s\"\n"
           "    1       0      6    0.5000 stop    \"%s\"…(+1 byte) -> \"short\"\n",
           as, xs, qs);
  CHECK_STREQ(out, want);
  /* --full: the whole texts, escaped the same way */
  snprintf(args, sizeof args, "samples %s --full --top 7", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  snprintf(want, sizeof want, "\"p\" -> \"%s\"\n", long_c);
  CHECK_CONTAINS(out, want);
  snprintf(want, sizeof want, "\"%s\" -> \"short\"\n", long_p);
  CHECK_CONTAINS(out, want);
  CHECK(strstr(out, "…(+") == NULL);
}

/* `rlrun samples` keeps a reward's column: 4 decimals from 1e-3 to 1e4, %g
 * outside (1e30 did not fit, 1e-5 read 0.0000). */
TEST(runs_samples_reward_column) {
  char rd[1200], out[8192], args[1400];
  snprintf(rd, sizeof rd, "%s/fake_rw", harness_tmpdir());
  store *s = fake_run(rd);
  REQUIRE(s);
  const double rw[6] = {1e30, 1e-5, -2.5, 0, 9999.5, 12345.6};
  store_sample v[6];
  memset(v, 0, sizeof v);
  for (int i = 0; i < 6; i++)
    v[i] = (store_sample){.iteration = 1, .sample_index = i, .prompt = "p", .completion = "c", .reward = rw[i],
                          .finish_reason = "eos"};
  rl_err e;
  REQUIRE(store_begin(s, &e) == 0);
  REQUIRE(store_samples_put(s, v, 6, &e) == 0);
  REQUIRE(store_commit(s, &e) == 0);
  store_close(s);
  snprintf(args, sizeof args, "samples %s", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_STREQ(out, " ITER  PROMPT SAMPLE    REWARD FINISH  PROMPT -> COMPLETION\n"
                   "    1       0      0     1e+30 eos     \"p\" -> \"c\"\n"
                   "    1       0      1     1e-05 eos     \"p\" -> \"c\"\n"
                   "    1       0      2   -2.5000 eos     \"p\" -> \"c\"\n"
                   "    1       0      3    0.0000 eos     \"p\" -> \"c\"\n"
                   "    1       0      4 9999.5000 eos     \"p\" -> \"c\"\n"
                   "    1       0      5  1.23e+04 eos     \"p\" -> \"c\"\n");
}

/* `rlrun metrics --csv / --json` write each value in the shortest form that reads back as the
 * same double (1.5e-07, not 1.4999999999999999e-07; 0.30000000000000004 keeps its 17 digits;
 * 20, not 2e+01), as the resolved recipe prints its numbers (rl_fmt_double). */
TEST(runs_metrics_export_shortest_round_trip) {
  char rd[1200], out[8192], args[1400];
  snprintf(rd, sizeof rd, "%s/fake_rt", harness_tmpdir());
  store *s = fake_run(rd);
  REQUIRE(s);
  rl_err e;
  volatile double a = 0.1, b = 0.2;
  const double v[6] = {a + b, 1.5e-7, 1.0 / 3.0, 1e300, 0.001, 20};
  const char *names[6] = {"m/a", "m/b", "m/c", "m/d", "m/e", "m/f"};
  for (int i = 0; i < 6; i++) REQUIRE(store_metric_put(s, 1, names[i], v[i], &e) == 0);
  store_close(s);
  snprintf(args, sizeof args, "metrics %s --csv", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "\n1,0.30000000000000004,1.5e-07,0.3333333333333333,1e+300,0.001,20\n");
  const char *p = strchr(out, '\n');
  REQUIRE(p);
  p = strchr(p + 1, ','); /* past the iteration */
  for (int i = 0; i < 6 && p; i++) {
    char *end;
    const double r = strtod(p + 1, &end);
    CHECK_MSG(memcmp(&r, &v[i], sizeof r) == 0, "%s: %.17g read back as %.17g", names[i], v[i], r);
    p = strchr(end, ',');
  }
  snprintf(args, sizeof args, "metrics %s --json", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "\"m/a\": 0.30000000000000004, \"m/b\": 1.5e-07, \"m/c\": 0.3333333333333333, "
                      "\"m/d\": 1e+300, \"m/e\": 0.001, \"m/f\": 20}");
}

/* `rlrun metrics`: table columns as wide as the names, "-" where an iteration
 * recorded nothing, "nan" where it recorded a NaN; CSV and JSON as before. */
TEST(runs_metrics_table_fits_names_and_marks_missing) {
  char rd[1200], out[8192], args[1400];
  snprintf(rd, sizeof rd, "%s/fake", harness_tmpdir());
  store *s = fake_run(rd);
  REQUIRE(s);
  rl_err e;
  REQUIRE(store_metric_put(s, 1, "groups/degenerate", 2, &e) == 0);
  REQUIRE(store_metric_put(s, 1, "mismatch/logp_abs_diff", -NAN, &e) == 0);
  REQUIRE(store_metric_put(s, 1, "loss", -0.25, &e) == 0);
  REQUIRE(store_metric_put(s, 2, "groups/degenerate", 3, &e) == 0);
  REQUIRE(store_metric_put(s, 2, "loss", 1.5e-7, &e) == 0);
  store_close(s);
  snprintf(args, sizeof args, "metrics %s", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_STREQ(out, "iteration  groups/degenerate          loss  mismatch/logp_abs_diff\n"
                   "        1                  2         -0.25                     nan\n"
                   "        2                  3       1.5e-07                       -\n");
  snprintf(args, sizeof args, "metrics %s --csv", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_STREQ(out, "iteration,groups/degenerate,loss,mismatch/logp_abs_diff\n1,2,-0.25,\n2,3,1.5e-07,\n");
  snprintf(args, sizeof args, "metrics %s --json", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_STREQ(out, "[{\"iteration\": 1, \"groups/degenerate\": 2, \"loss\": -0.25, \"mismatch/logp_abs_diff\": null},\n"
                   " {\"iteration\": 2, \"groups/degenerate\": 3, \"loss\": 1.5e-07, "
                   "\"mismatch/logp_abs_diff\": null}\n]\n");
}

/* `rlrun export --out` names a file to write: a directory, an empty path, a
 * device or a missing directory is exit 2 before anything is read or written
 * (a directory was exit 1, "cannot rename DIR.tmp-PID to DIR"). */
TEST(runs_export_out_must_be_a_file_path) {
  char rd[1200], out[4096], args[4000], want[4000];
  snprintf(rd, sizeof rd, "%s/fake", harness_tmpdir());
  store *s = fake_run(rd);
  REQUIRE(s);
  store_close(s);
  snprintf(args, sizeof args, "export %s --out %s", rd, rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 2);
  snprintf(want, sizeof want, "rlrun export: --out %s is a directory: give the path of a file to write (in it, or "
           "elsewhere)\n", rd);
  CHECK_STREQ(out, want);
  snprintf(args, sizeof args, "export %s --out ''", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun export: --out is empty: give the path of the file to write\n");
  snprintf(args, sizeof args, "export %s --out %s/none/x.yaml", rd, rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 2);
  snprintf(want, sizeof want, "rlrun export: --out %s/none/x.yaml: directory %s/none: No such file or directory "
           "(create it first)\n", rd, rd);
  CHECK_STREQ(out, want);
  /* a device or FIFO (/dev/null) is written in place, never replaced (a FIFO stands in for /dev/null) */
  char fifo[1200];
  snprintf(fifo, sizeof fifo, "%s/export.fifo", harness_tmpdir());
  unlink(fifo);
  REQUIRE(mkfifo(fifo, 0644) == 0);
  int rd_fd = open(fifo, O_RDWR | O_NONBLOCK); /* a reader, so the writer's open does not block */
  REQUIRE(rd_fd >= 0);
  snprintf(args, sizeof args, "export %s --out %s", rd, fifo);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  char got[4096];
  ssize_t n = read(rd_fd, got, sizeof got - 1);
  REQUIRE(n > 0);
  got[n] = 0;
  CHECK_CONTAINS(got, "# rlrun-export: rlrun");
  struct stat st;
  REQUIRE(stat(fifo, &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
  close(rd_fd);
}

/* `rlrun metrics`' table aligns names of several bytes a character (a Lua
 * reward's "reward/Δreward_total", Cyrillic, CJK taking two columns, a
 * combining accent taking none) by the columns they fill on a terminal, not
 * by their bytes. */
TEST(runs_metrics_table_aligns_utf8_names) {
  char rd[1200], out[8192], args[1400];
  snprintf(rd, sizeof rd, "%s/fake", harness_tmpdir());
  store *s = fake_run(rd);
  REQUIRE(s);
  rl_err e;
  REQUIRE(store_metric_put(s, 1, "loss", 0.5, &e) == 0);
  REQUIRE(store_metric_put(s, 1, "reward/\xce\x94reward_total", 0.25, &e) == 0);    /* Δ: 2 bytes, 1 column */
  REQUIRE(store_metric_put(s, 1, "reward/\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87", 1, &e) == 0); /* ключ: 8 bytes, 4 */
  REQUIRE(store_metric_put(s, 1, "reward/\xe4\xb8\xad\xe6\x96\x87x", 2, &e) == 0);  /* 中文: 6 bytes, 4 columns */
  REQUIRE(store_metric_put(s, 1, "reward/e\xcc\x81t\xc3\xa9", 3, &e) == 0);        /* e + U+0301: 0 columns */
  store_close(s);
  snprintf(args, sizeof args, "metrics %s", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_STREQ(out, "iteration          loss    reward/e\xcc\x81t\xc3\xa9  reward/\xce\x94reward_total"
                   "   reward/\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87  reward/\xe4\xb8\xad\xe6\x96\x87x\n"
                   "        1           0.5             3                  0.25             1             2\n");
}

/* Metric names from a store that holds any bytes (older runs did not check the
 * names a reward returned): `metrics --json` is valid JSON whatever they are,
 * CSV quotes a name with a comma, quote or line break, the table shows control
 * characters and spaces escaped. */
TEST(runs_metrics_escape_any_stored_name) {
  char rd[1200], out[8192], args[1400];
  snprintf(rd, sizeof rd, "%s/fake", harness_tmpdir());
  store *s = fake_run(rd);
  REQUIRE(s);
  rl_err e;
  REQUIRE(store_metric_put(s, 1, "reward/m/1\n\xff", 1, &e) == 0);
  REQUIRE(store_metric_put(s, 1, "a,\"b\\", 2, &e) == 0);
  REQUIRE(store_metric_put(s, 1, "loss", 0.5, &e) == 0);
  store_close(s);
  snprintf(args, sizeof args, "metrics %s --json", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_STREQ(out, "[{\"iteration\": 1, \"a,\\\"b\\\\\": 2, \"loss\": 0.5, \"reward/m/1\\u000a\\ufffd\": 1}\n]\n");
  json_error_t je;
  json_t *j = json_loads(out, 0, &je);
  CHECK_MSG(j != NULL, "metrics --json is not valid JSON: %s", je.text);
  CHECK(json_is_number(json_object_get(json_array_get(j, 0), "a,\"b\\")));
  json_decref(j);
  snprintf(args, sizeof args, "metrics %s --csv", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_STREQ(out, "iteration,\"a,\"\"b\\\",loss,\"reward/m/1\n\xff\"\n1,2,0.5,1\n");
  snprintf(args, sizeof args, "metrics %s", rd);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  CHECK_STREQ(out, "iteration        a,\"b\\\\          loss  reward/m/1\\x0A\\xFF\n"
                   "        1             2           0.5                   1\n");
}

/* `rlrun ls` on a directory without runs: says so, exit 0 (it aborted under
 * UBSan: qsort(NULL, 0, …)); an empty RUNS_DIR is refused (exit 2). */
TEST(runs_ls_without_runs) {
  char dir[1200], out[4096], args[2600];
  snprintf(dir, sizeof dir, "%s/none", harness_tmpdir());
  REQUIRE(mkdir(dir, 0755) == 0);
  snprintf(args, sizeof args, "ls %s", dir);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 0);
  char want[3000];
  snprintf(want, sizeof want, "no runs in %s (start one with `rlrun run RECIPE --runs-dir %s`)\n", dir, dir);
  CHECK_STREQ(out, want);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", "ls ''", out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun ls: RUNS_DIR is empty: give a directory of runs (default: runs)\n");
  snprintf(args, sizeof args, "ls %s extra", dir);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun ls: unexpected argument 'extra'; usage: rlrun ls [RUNS_DIR]\n");
  /* run --runs-dir naming a file: a usage error that names the option (it was exit 1 naming FILE/.init) */
  char file[1300], cmd[4000];
  snprintf(file, sizeof file, "%s/afile", dir);
  harness_write_file(file, "x\n");
  snprintf(cmd, sizeof cmd, "%s run recipes/demo-cpu.yaml --runs-dir %s --quiet", bin(), file);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  snprintf(want, sizeof want, "rlrun run: --runs-dir %s is a file, not a directory; name a directory (one that does "
           "not exist yet is created)\n", file);
  CHECK_STREQ(out, want);
  /* an option is not a directory of runs; a file given as a run directory is named as a file */
  CHECK_EQ_I64(rl(harness_tmpdir(), "", "ls --bogus", out, sizeof out), 2);
  CHECK_STREQ(out, "rlrun ls: unknown option '--bogus'; usage: rlrun ls [RUNS_DIR]\n");
  snprintf(args, sizeof args, "status %s", file);
  CHECK_EQ_I64(rl(harness_tmpdir(), "", args, out, sizeof out), 2);
  snprintf(want, sizeof want, "rlrun status: %s: is a file, not a run directory (give the directory `rlrun run` "
           "printed)\n", file);
  CHECK_STREQ(out, want);
}

/* 1 when path exists. */
static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Bad data is found by validation, before a run directory exists: the whole
 * JSONL file parsed (each bad line as FILE:LINE[:COL], up to 8), an empty file,
 * characters outside tokenizer.chars, prompts over rollout.max_prompt_tokens,
 * a task whose prompts() returns bad items. (validate said "valid" and `run`
 * created a directory, then failed with "the run stays resumable".) A BOM is
 * accepted, as in a YAML recipe. */
TEST(runs_bad_data_is_refused_before_the_run_directory) {
  char dir[1024], out[8192], args[2048], p[1200], want[4096];
  snprintf(dir, sizeof dir, "%s/d", harness_tmpdir());
  setup(dir, 1);
  static const struct { const char *name, *text, *err; } cases[] = {
      {"json", "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n\n{\"prompt\": \"1+2=\" \"answer\": \"3\"}\n",
       "json.jsonl:3:26: not valid JSON: '}' expected near '\"answer\"' (one JSON object per line)\n"},
      {"empty", "", "empty.jsonl: no prompts (the file has no JSON lines): add one object per line\n"},
      {"blank", "\n  \n", "blank.jsonl: no prompts (the file has no JSON lines): add one object per line\n"},
      {"chars", "{\"prompt\": \"1+1=\"}\n{\"prompt\": \"1*2=\"}\n",
       "chars.jsonl:2: the prompt: character '*' (U+002A) at character 2 (byte offset 1) of the text is not in "
       "tokenizer.chars: add it to the recipe's tokenizer.chars or remove it from the text\n"},
      {"long", "{\"prompt\": \"1+1=\"}\n{\"prompt\": \"12+34=\"}\n",
       "long.jsonl:2: the prompt is 7 tokens (with BOS), more than rollout.max_prompt_tokens (6): shorten it or "
       "raise rollout.max_prompt_tokens\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    snprintf(p, sizeof p, "%s/%s.jsonl", dir, cases[i].name);
    harness_write_file(p, cases[i].text);
    snprintf(args, sizeof args, "validate t.yaml --set data.task=null --set data.prompts=%s.jsonl", cases[i].name);
    CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
    snprintf(want, sizeof want, "--set data.prompts=%s.jsonl: %s", cases[i].name, cases[i].err);
    CHECK_STREQ(out, want);
    snprintf(args, sizeof args, "run t.yaml --runs-dir runs-%s --set data.task=null --set data.prompts=%s.jsonl",
             cases[i].name, cases[i].name);
    CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
    snprintf(want, sizeof want, "rlrun run: --set data.prompts=%s.jsonl: %s", cases[i].name, cases[i].err);
    CHECK_STREQ(out, want);
    snprintf(p, sizeof p, "%s/runs-%s", dir, cases[i].name);
    CHECK_MSG(!exists(p), "%s was created", p);
  }
  /* every bad line in one pass: 8 named, then the count */
  char many[2048] = "";
  for (int i = 0; i < 11; i++) strcat(many, i == 4 ? "{\"prompt\": \"1+1=\"}\n" : "{\"prompt\": 5}\n");
  snprintf(p, sizeof p, "%s/many.jsonl", dir);
  harness_write_file(p, many);
  CHECK_EQ_I64(rl(dir, "", "validate t.yaml --set data.task=null --set data.prompts=many.jsonl", out, sizeof out), 2);
  CHECK_CONTAINS(out, "--set data.prompts=many.jsonl: many.jsonl:9: field \"prompt\" must be a string (the prompt text)\n"
                      "… and 2 more errors");
  CHECK(strstr(out, "many.jsonl:5:") == NULL);
  /* the same lines in a recipe file: FILE:LINE:COL of the key, then the data file's line */
  snprintf(p, sizeof p, "%s/f.yaml", dir);
  harness_write_file(p, "base: t.yaml\ndata:\n  task: null\n  prompts: chars.jsonl\n");
  CHECK_EQ_I64(rl(dir, "", "validate f.yaml", out, sizeof out), 2);
  CHECK_CONTAINS(out, "f.yaml:4:12: data.prompts: chars.jsonl:2: the prompt: character '*'");
  /* a BOM at the start is fine (it was "not valid JSON" at 1:1) */
  snprintf(p, sizeof p, "%s/bom.jsonl", dir);
  harness_write_file(p, "\xef\xbb\xbf{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n");
  CHECK_EQ_I64(rl(dir, "", "run t.yaml --runs-dir runs-bom --quiet --set data.task=null --set data.prompts=bom.jsonl",
                  out, sizeof out), 0);
  CHECK_CONTAINS(out, "(1 iteration)\n");
  /* a run's data broken after it started: resume reports the changed input
   * (exit 4, as for any change), not "the stored recipe does not load" */
  CHECK_EQ_I64(rl(dir, "RLRUN_FAULT=loop.train@1", "run t.yaml --runs-dir runs-chg --quiet --set data.task=null "
                  "--set data.prompts=bom.jsonl", out, sizeof out), 1);
  harness_write_file(p, "{\"prompt\": 1}\n");
  char rd[1024];
  snprintf(want, sizeof want, "for d in %s/runs-chg/*/; do echo \"$d\"; done", dir);
  REQUIRE(harness_run(want, rd, sizeof rd) == 0);
  rd[strcspn(rd, "\n")] = 0;
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "/bom.jsonl (sha256 ");
  /* a task: its prompts of iteration 1 are called and checked by validation */
  snprintf(p, sizeof p, "%s/star.lua", dir);
  harness_write_file(p, "function prompts(n, rng)\n  local o = {}\n  for i = 1, n do o[i] = {prompt = i == 3 and '2*2=' "
                        "or '1+1=', answer = '2'} end\n  return o\nend\n");
  CHECK_EQ_I64(rl(dir, "", "validate t.yaml --set data.task=star.lua", out, sizeof out), 2);
  CHECK_STREQ(out, "--set data.task=star.lua: star.lua: prompts(n, rng) of iteration 1, item 3: the prompt: character "
                   "'*' (U+002A) at character 2 (byte offset 1) of the text is not in tokenizer.chars: add it to the "
                   "recipe's tokenizer.chars or remove it from the text\n");
  snprintf(p, sizeof p, "%s/shape.lua", dir);
  harness_write_file(p, "function prompts(n, rng)\n  return {{answer = '2'}}\nend\n");
  CHECK_EQ_I64(rl(dir, "", "validate t.yaml --set data.task=shape.lua", out, sizeof out), 2);
  CHECK_STREQ(out, "--set data.task=shape.lua: shape.lua:1: prompts(n, rng) returned table of length 1 for n = 4; "
                   "return an array of n prompts (prompts for iteration 1)\n");
}

/* A task whose prompts() goes wrong in a later iteration: bad input, exit 2
 * (it was 1, "a stage failed"), and no claim that the run resumes as it is;
 * the log says the same. */
TEST(runs_bad_task_output_mid_run_is_exit_2) {
  char dir[1024], out[8192], rd[2048], p[1200];
  snprintf(dir, sizeof dir, "%s/t2", harness_tmpdir());
  setup(dir, 3);
  snprintf(p, sizeof p, "%s/task.lua", dir);
  /* bad at iteration 2 only: seed 7's first draw is 469823, 320813, 779450 in iterations 1, 2, 3
   * (a global call counter no longer tells: the script is loaded afresh for every call) */
  harness_write_file(p, "function prompts(n, rng)\n  local bad = rng:int(1, 1000000) < 400000\n  local o = {}\n"
                        "  for i = 1, n do o[i] = {prompt = '1+1=', answer = '2'} end\n"
                        "  if bad then o[2] = {answer = '2'} end\n  return o\nend\n");
  CHECK_EQ_I64(rl(dir, "", "validate t.yaml", out, sizeof out), 0);
  CHECK_EQ_I64(rl(dir, "", "run t.yaml --runs-dir runs --quiet", out, sizeof out), 2);
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  const char *rel = strstr(rd, "/runs/") + 1;
  char want[4096];
  snprintf(want, sizeof want,
           "run directory: %s\n"
           "rlrun: %s/task.lua:1: prompts(n, rng) item 2 has no string field 'prompt' (prompts for iteration 2)\n"
           "rlrun: the run stopped on bad input, and a resume as it is fails the same way: fix the input (or the "
           "recipe), then `rlrun resume %s --allow-changed` continues from what is committed\n", rel, dir, rel);
  CHECK_STREQ(out, want);
  CHECK(strstr(out, "stays resumable") == NULL);
  char log[2200], *text = NULL;
  size_t tl;
  rl_err e;
  snprintf(log, sizeof log, "%s/logs/run.log", rd);
  REQUIRE(rl_read_file(log, &text, &tl, &e) == 0);
  const char *tail = strstr(want, "\nrlrun: ") + 1;
  CHECK_MSG(tl >= strlen(tail) && !strcmp(text + tl - strlen(tail), tail), "run.log:\n%s", text);
  free(text);
}

/* README's metrics table and what a run records cannot drift apart: a CPU run
 * that turns on every optional metric (MoE + R3, TIS, KL and entropy terms,
 * sync.verify, a reward with extra fields) records exactly the names the
 * table lists (reward/<name>: the reward's own fields). */
TEST(runs_readme_lists_every_recorded_metric) {
  char *readme = NULL;
  size_t len;
  rl_err e;
  REQUIRE(rl_read_file("README.md", &readme, &len, &e) == 0);
  char *a = strstr(readme, "<!-- metrics:begin -->"), *b = a ? strstr(a, "<!-- metrics:end -->") : NULL;
  REQUIRE(a && b);
  *b = 0;
  char *names[64];
  int n = 0;
  for (char *l = strstr(a, "\n| `"); l && n < 64; l = strstr(l + 1, "\n| `")) {
    char *end = strchr(l + 4, '`');
    if (!end) break;
    names[n++] = strndup(l + 4, (size_t)(end - l - 4));
  }
  CHECK(n >= 30);
  char dir[1024], out[16384], rd[2048], p[1200];
  snprintf(dir, sizeof dir, "%s/m", harness_tmpdir());
  setup(dir, 1);
  snprintf(p, sizeof p, "%s/all.yaml", dir);
  harness_write_file(p, "base: t.yaml\n"
                        "model:\n  init: {arch: qwen3_moe, experts: 4, top_k: 2, moe_ffn: 16}\n"
                        "rollout: {batch: 2, samples_per_prompt: 2}\n"
                        "train: {microbatch: 4, kl_coef: 0.01, entropy_coef: 0.01, r3: true, tis: {mode: truncate}}\n"
                        "sync: {verify: true}\n");
  CHECK_EQ_I64(rl(dir, "", "run all.yaml --runs-dir runs --quiet", out, sizeof out), 0);
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  char args[2300];
  snprintf(args, sizeof args, "metrics %s --json", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  json_error_t je;
  json_t *arr = json_loads(out, 0, &je), *row = json_array_get(arr, 0);
  REQUIRE(json_is_object(row));
  /* every listed name is recorded (reward/<name>: some reward/ field other than mean and std) */
  for (int i = 0; i < n; i++) {
    int found = json_object_get(row, names[i]) != NULL;
    if (!strcmp(names[i], "reward/<name>")) found = json_object_get(row, "reward/exact") != NULL;
    CHECK_MSG(found, "README lists metric %s, the run did not record it:\n%s", names[i], out);
  }
  /* every recorded name is listed */
  const char *key;
  json_t *v;
  json_object_foreach(row, key, v) {
    if (!strcmp(key, "iteration")) continue;
    int listed = !strcmp(key, "reward/exact") || !strcmp(key, "reward/length_ok"); /* digit_match.lua's fields */
    for (int i = 0; i < n && !listed; i++) listed = !strcmp(names[i], key);
    CHECK_MSG(listed, "the run recorded metric %s, README's metrics table does not list it", key);
  }
  json_decref(arr);
  for (int i = 0; i < n; i++) free(names[i]);
  free(readme);
}

/* A complete run whose final checkpoint directory was removed is not "complete":
 * resume falls back to the checkpoint before it and writes the final one again,
 * byte for byte; then it is complete again. */
TEST(runs_complete_run_rewrites_a_removed_final_checkpoint) {
  char dir[1024], rd[2048], out[16384], args[4400], want[65], got[65];
  snprintf(dir, sizeof dir, "%s/fin", harness_tmpdir());
  setup(dir, 4);
  CHECK_EQ_I64(rl(dir, "", "run t.yaml --runs-dir runs --quiet", out, sizeof out), 0);
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  REQUIRE(weights_sha(rd, 4, want) == 0);
  snprintf(args, sizeof args, "rm -rf %s/checkpoints/step-000004", rd);
  REQUIRE(harness_run(args, NULL, 0) == 0);
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "resuming ");
  CHECK_CONTAINS(out, "step-000004 removed from the run directory");
  REQUIRE(weights_sha(rd, 4, got) == 0);
  CHECK_STREQ(got, want);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "already complete (4 iterations, final checkpoint step-000004); nothing to do");
}

/* sha256 of a file, "" when it cannot be read. */
static void file_sha(const char *path, char hex[65]) {
  rl_err e;
  if (sha256_file(path, hex, NULL, &e)) hex[0] = 0;
}

/* A run directory its user cannot write (permissions; a read-only file system
 * alike) is read, not called damaged: status, metrics, samples, export and ls
 * work — a killed run's commits in state.db-wal included — resume of a
 * complete run says so (exit 0), and of any other refuses at once naming the
 * cause (exit 1), state.db and its WAL untouched. It said "cannot read the run
 * store: not an SQLite database, or its header is damaged ... restore state.db
 * from a copy" (exit 4), and ls listed both runs as damaged. As root, chmod
 * binds nobody: the commands run as the user nobody (setpriv) then. */
TEST(runs_read_only_run_directory_is_read_not_damaged) {
  char dir[1024], kdir[1024], rd[2048], rk[2048], out[16384], cmd[8192], as[128] = "";
  if (geteuid() == 0) {
    if (harness_run("command -v setpriv", NULL, 0) != 0) {
      fprintf(stderr, "  (skipped: running as root without setpriv to drop to another user)\n");
      return;
    }
    snprintf(as, sizeof as, "setpriv --reuid=65534 --regid=65534 --clear-groups ");
  }
  /* the runs, their inputs and the binary where every user may enter (the test directory is 0700) */
  char ro[] = "/tmp/rlrun-ro-XXXXXX";
  REQUIRE(mkdtemp(ro) && chmod(ro, 0755) == 0);
  snprintf(dir, sizeof dir, "%s/done", ro);
  snprintf(kdir, sizeof kdir, "%s/killed", ro);
  setup(dir, 4);
  setup(kdir, 4);
  char db[4200], wal[4200], sha_db[65] = "", sha_wal[65] = "", now[65];
  if (rl(dir, "", "run t.yaml --runs-dir runs --quiet", out, sizeof out) != 0 ||
      !killed(rl(kdir, "RLRUN_FAULT=loop.train@3:kill", "run t.yaml --runs-dir runs --quiet", out, sizeof out)) ||
      run_dir(dir, rd, sizeof rd) || run_dir(kdir, rk, sizeof rk)) {
    CHECK_MSG(0, "the runs did not start as planned:\n%s", out);
    goto done;
  }
  snprintf(cmd, sizeof cmd, "cp %s %s/rlrun && test -s %s/state.db-wal && chmod -R a-w %s/runs %s/runs", bin(), ro,
           rk, dir, kdir);
  if (harness_run(cmd, out, sizeof out) != 0) {
    CHECK_MSG(0, "could not prepare %s:\n%s", ro, out);
    goto done;
  }
  snprintf(db, sizeof db, "%s/state.db", rk);
  snprintf(wal, sizeof wal, "%s/state.db-wal", rk);
  file_sha(db, sha_db), file_sha(wal, sha_wal);
#define RO(args) (snprintf(cmd, sizeof cmd, "cd %s && %s./rlrun %s", ro, as, args), harness_run(cmd, out, sizeof out))
  CHECK_EQ_I64(RO("status done/runs/t-*"), 0);
  CHECK_CONTAINS(out, "state      complete");
  CHECK_EQ_I64(RO("status killed/runs/t-*"), 0);
  CHECK_CONTAINS(out, "state      stopped");
  CHECK_CONTAINS(out, "progress   2 of 4 iterations trained");
  CHECK_EQ_I64(RO("metrics killed/runs/t-* --csv"), 0);
  CHECK_CONTAINS(out, "\n2,");
  CHECK_EQ_I64(RO("samples killed/runs/t-* --iter 2"), 0);
  CHECK_EQ_I64(RO("export done/runs/t-*"), 0);
  CHECK_CONTAINS(out, "# rlrun-export: ");
  CHECK_EQ_I64(RO("ls killed/runs"), 0);
  CHECK_MSG(!strstr(out, "damaged"), "ls:\n%s", out);
  CHECK_CONTAINS(out, "stopped   2/4");
  CHECK_EQ_I64(RO("resume done/runs/t-*"), 0);
  CHECK_CONTAINS(out, "the run is already complete (4 iterations");
  CHECK_EQ_I64(RO("resume killed/runs/t-*"), 1);
  CHECK_CONTAINS(out, " is not writable (Permission denied)");
  CHECK_CONTAINS(out, "nothing was modified");
  CHECK_MSG(!strstr(out, "damaged"), "resume:\n%s", out);
#undef RO
  file_sha(db, now);
  CHECK_STREQ(now, sha_db);
  file_sha(wal, now);
  CHECK_STREQ(now, sha_wal);
done:
  snprintf(cmd, sizeof cmd, "chmod -R u+w %s && rm -rf %s", ro, ro);
  harness_run(cmd, NULL, 0);
}

/* resume --allow-changed with fewer iterations than the run has trained is
 * refused (exit 2, the store untouched): it said "run complete (2 iterations)"
 * over the weights of iteration 4, its status 2 of 2. */
TEST(runs_fewer_iterations_than_trained_are_refused) {
  char dir[1024], rd[2048], out[16384], args[4400], db[4400], before[65], after[65];
  snprintf(dir, sizeof dir, "%s/few", harness_tmpdir());
  setup(dir, 4);
  REQUIRE(rl(dir, "", "run t.yaml --runs-dir runs --quiet", out, sizeof out) == 0);
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(db, sizeof db, "%s/state.db", rd);
  file_sha(db, before);
  setup(dir, 2); /* the recipe edited: iterations 4 -> 2 */
  snprintf(args, sizeof args, "resume %s --allow-changed", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "loop.iterations 2 is below iteration 4, which this run has already trained");
  CHECK_CONTAINS(out, "nothing was modified");
  file_sha(db, after);
  CHECK_STREQ(after, before);
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "progress   4 of 4 iterations trained");
  /* more iterations are taken */
  setup(dir, 6);
  snprintf(args, sizeof args, "resume %s --allow-changed --quiet", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "run complete: ");
}

/* logs/ removed before a resume is made again: logs/run.log gets the resume
 * and how the run ended (it got nothing, silently). */
TEST(runs_removed_logs_directory_is_made_again) {
  char dir[1024], rd[2048], out[16384], args[4400];
  snprintf(dir, sizeof dir, "%s/logs", harness_tmpdir());
  setup(dir, 4);
  REQUIRE(killed(rl(dir, "RLRUN_FAULT=loop.train@3:kill", "run t.yaml --runs-dir runs --quiet", out, sizeof out)));
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "rm -r %s/logs", rd);
  REQUIRE(harness_run(args, NULL, 0) == 0);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  char log[4400], *text = NULL;
  size_t len = 0;
  rl_err e;
  snprintf(log, sizeof log, "%s/logs/run.log", rd);
  REQUIRE(rl_read_file(log, &text, &len, &e) == 0);
  CHECK_CONTAINS(text, "resuming ");
  CHECK_CONTAINS(text, "iter 4/4");
  CHECK_CONTAINS(text, "run complete: ");
  free(text);
}

/* Killed after the final checkpoint is recorded but before retention prunes
 * the older ones: resume finds the run complete and prunes them then (a third
 * checkpoint stayed for good with keep_checkpoints: 2), and removes leftovers
 * of an interrupted removal or write. */
TEST(runs_kill_before_final_retention_prunes_on_resume) {
  char dir[1024], rd[2048], out[16384], args[4400], path[4400];
  struct stat st;
  snprintf(dir, sizeof dir, "%s/ret", harness_tmpdir());
  setup(dir, 6); /* checkpoints 2, 4, 6; keep 2 */
  REQUIRE(killed(rl(dir, "RLRUN_FAULT=ckpt.before_retain@3:kill", "run t.yaml --runs-dir runs --quiet", out,
                    sizeof out)));
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  ckpt_file_path(rd, 2, NULL, path, sizeof path);
  REQUIRE(stat(path, &st) == 0);
  /* and what a kill in the middle of removing a directory leaves */
  char tmp[4400];
  snprintf(tmp, sizeof tmp, "%s/checkpoints/.tmp-step-000006-1", rd);
  REQUIRE(mkdir(tmp, 0755) == 0);
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "the run is already complete (6 iterations");
  CHECK_CONTAINS(out, "removed 2 checkpoint directories the run no longer keeps");
  CHECK_MSG(stat(path, &st) != 0, "%s is still there", path);
  CHECK_MSG(stat(tmp, &st) != 0, "%s is still there", tmp);
  snprintf(args, sizeof args, "status %s", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "checkpoints step-000004 step-000006\n");
}

/* resume --allow-changed re-runs the updates after the checkpoint it resumes
 * from under the changed recipe: an update already done (and committed) before
 * the stop gets the re-run's metrics, and an event says why. Killed in the sync
 * of iteration 3 (its train done, checkpoint 2), lr 1e-2 → 1e-3: iteration 3's
 * optim/lr was left at 0.01 next to weights trained with 0.001. */
TEST(runs_allow_changed_rerun_replaces_metrics) {
  char dir[1024], rd[2048], out[16384], args[2300];
  snprintf(dir, sizeof dir, "%s/ac", harness_tmpdir());
  setup(dir, 4);
  REQUIRE(killed(rl(dir, "RLRUN_FAULT=loop.sync@3:kill", "run t.yaml --runs-dir runs --quiet", out, sizeof out)));
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "metrics %s --json", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  const char *it3 = strstr(out, "{\"iteration\": 3,");
  REQUIRE(it3);
  CHECK(strstr(it3, "\"optim/lr\": 0.01,") != NULL); /* the first run's update of iteration 3 is committed */
  REQUIRE(setup_lower_lr(dir) == 0);
  snprintf(args, sizeof args, "resume %s --quiet --allow-changed", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  snprintf(args, sizeof args, "metrics %s --json", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  it3 = strstr(out, "{\"iteration\": 3,");
  REQUIRE(it3);
  const char *it4 = strstr(it3, "{\"iteration\": 4,");
  REQUIRE(it4);
  const char *lr3 = strstr(it3, "\"optim/lr\": 0.001,");
  CHECK(lr3 != NULL && lr3 < it4);
  CHECK(strstr(it4, "\"optim/lr\": 0.001,") != NULL);
  char *snap = store_snapshot(rd);
  REQUIRE(snap);
  CHECK_CONTAINS(snap, "event 1 3 train: iteration 3 re-run under the changed recipe (--allow-changed): ");
  CHECK(strstr(snap, "not bit-reproducible") == NULL);
  free(snap);
}

/* A task's prompt that a later iteration makes too long stops the run with
 * exit 2 naming the iteration and the script (it said only "rollout: prompt
 * 0 ..."); seed 7 draws a too-long prompt first in iteration 2. */
TEST(runs_task_prompt_refused_mid_run_names_its_iteration_and_script) {
  char dir[1200], task[1400], args[8192], out[8192], cwd[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/tl", harness_tmpdir());
  REQUIRE(mkdir(dir, 0755) == 0);
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(task, sizeof task, "%s/t_long.lua", dir);
  REQUIRE(harness_write_file(task, "function prompts(n, rng)\n  local t = {}\n  for i = 1, n do t[i] = {prompt = "
                                   "string.rep(\"1\", rng:int(1, 12)) .. \"+2=\", answer = \"3\"} end\n  return t\nend\n") == 0);
  snprintf(args, sizeof args, "run %s/recipes/demo-cpu.yaml --set data.task=%s --set rollout.batch=2 --set "
           "train.microbatch=4 --set rollout.max_prompt_tokens=12 --set seed=7 --set loop.iterations=3 --runs-dir runs "
           "--quiet", cwd, task);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), RL_EXIT_USAGE);
  char want[2000];
  snprintf(want, sizeof want, "iteration 2, the prompts of data.task %s: rollout: prompt 0 (\"111111111+2=\") has 13 "
           "tokens, more than max_prompt_tokens 12", task);
  CHECK_CONTAINS(out, want);
  CHECK_CONTAINS(out, "--allow-changed` continues from what is committed");
}

/* `rlrun samples --json`: one object per sample with what is stored — the
 * demo's first iteration: 256 lines in order, as many log-probs as tokens
 * (each a log-probability), the completion the chars tokenizer's text of its
 * tokens, the rewards those of the table, the task's answer among the fields. */
TEST(runs_samples_json_holds_everything) {
  char dir[1200], args[8192], out[1 << 20], cwd[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/sj", harness_tmpdir());
  REQUIRE(mkdir(dir, 0755) == 0);
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(args, sizeof args, "run %s/recipes/demo-cpu.yaml --set loop.iterations=1 --runs-dir runs --quiet", cwd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  char rd[1400];
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "samples %s --top 1", rd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  double best = strtod(strchr(strchr(out, '\n') + 1, '.') - 1, NULL); /* the first row's REWARD column */
  snprintf(args, sizeof args, "samples %s --json --full", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "--full and --json exclude each other");
  snprintf(args, sizeof args, "samples %s --json --iter 1", rd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  const char *chars = "0123456789+=";
  int lines = 0, decoded = 0;
  double top = -1e300;
  for (char *l = out, *nl; *l; l = nl + 1) {
    nl = strchr(l, '\n');
    REQUIRE(nl != NULL);
    *nl = 0;
    json_error_t je;
    json_t *o = json_loads(l, 0, &je);
    REQUIRE(o != NULL);
    CHECK_EQ_I64(json_integer_value(json_object_get(o, "iteration")), 1);
    CHECK_EQ_I64(json_integer_value(json_object_get(o, "prompt_index")) * 8 +
                     json_integer_value(json_object_get(o, "sample_index")), lines);
    json_t *tk = json_object_get(o, "tokens"), *lp = json_object_get(o, "logprobs");
    CHECK(json_array_size(tk) >= 1);
    CHECK_EQ_I64(json_array_size(lp), json_array_size(tk));
    for (size_t k = 0; k < json_array_size(lp); k++) CHECK(json_real_value(json_array_get(lp, k)) <= 0);
    char text[512];
    size_t w = 0;
    for (size_t k = 0; k < json_array_size(tk) && w + 1 < sizeof text; k++) {
      json_int_t id = json_integer_value(json_array_get(tk, k));
      if (id >= 3) text[w++] = chars[id - 3];
    }
    text[w] = 0;
    decoded += !strcmp(text, json_string_value(json_object_get(o, "completion")));
    CHECK(json_is_string(json_object_get(json_object_get(o, "fields"), "answer")));
    CHECK(json_array_size(json_object_get(o, "prompt_tokens")) >= 2);
    double r = json_number_value(json_object_get(o, "reward"));
    if (r > top) top = r;
    json_decref(o);
    lines++;
  }
  CHECK_EQ_I64(lines, 256);
  CHECK_EQ_I64(decoded, 256);
  CHECK_NEAR(top, best, 5e-5); /* the table prints 4 decimals */
}

/* rlrun init writes the fresh model a model.init recipe's run starts from: a
 * run with it as model.path (same seed) has the model.init run's samples and
 * trained weights byte for byte, and score on it gives iteration 1's rollout
 * log-probs (BF16: the same logits, log-softmax summed apart: 2e-6). --out
 * that exists, a recipe without model.init and a bad recipe are exit 2, and
 * nothing is written. */
TEST(runs_init_writes_the_model_iteration_one_starts_from) {
  char dir[1200], args[8192], out[1 << 20], cwd[PATH_MAX], rd[1400], rd2[1400];
  snprintf(dir, sizeof dir, "%s/in", harness_tmpdir());
  REQUIRE(mkdir(dir, 0755) == 0);
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(args, sizeof args, "init %s/recipes/demo-cpu.yaml --out m --set seed=4", cwd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  CHECK_CONTAINS(out, "wrote m: the fresh model of ");
  snprintf(args, sizeof args, "run %s/recipes/demo-cpu.yaml --set loop.iterations=1 --set seed=4 --runs-dir runs --quiet", cwd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "run %s/recipes/demo-cpu.yaml --set loop.iterations=1 --set seed=4 --set model.init=null "
           "--set model.path=m --runs-dir runs2 --quiet", cwd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "for d in %s/runs2/*/; do echo $d; done | head -1", dir);
  REQUIRE(harness_run(args, rd2, sizeof rd2) == 0);
  rd2[strcspn(rd2, "\n")] = 0;
  char a[65], b[65], p[2000];
  REQUIRE(weights_sha(rd, 1, a) == 0 && weights_sha(rd2, 1, b) == 0);
  CHECK_STREQ(a, b);
  snprintf(args, sizeof args, "samples %s --json > s1.jsonl && %s samples %s --json > s2.jsonl && cmp s1.jsonl s2.jsonl",
           rd, bin(), rd2);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  /* score on it: iteration 1's rollout log-probs */
  snprintf(args, sizeof args, "samples %s --json", rd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  snprintf(p, sizeof p, "%s/seqs.jsonl", dir);
  FILE *f = fopen(p, "w");
  REQUIRE(f);
  json_t *rows = json_array();
  for (char *l = out, *nl; *l; l = nl + 1) {
    nl = strchr(l, '\n');
    REQUIRE(nl);
    *nl = 0;
    json_t *o = json_loads(l, 0, NULL), *tk = json_array();
    REQUIRE(o);
    json_array_extend(tk, json_object_get(o, "prompt_tokens"));
    json_array_extend(tk, json_object_get(o, "tokens"));
    char *js = json_dumps(tk, JSON_COMPACT);
    fprintf(f, "{\"tokens\": %s}\n", js);
    free(js);
    json_decref(tk);
    json_array_append_new(rows, o);
  }
  fclose(f);
  REQUIRE(rl(dir, "", "score --model m --input seqs.jsonl --out scores.jsonl", out, sizeof out) == 0);
  snprintf(p, sizeof p, "%s/scores.jsonl", dir);
  f = fopen(p, "r");
  REQUIRE(f);
  char line[65536];
  double maxd = 0;
  size_t k = 0, cnt = 0;
  while (fgets(line, sizeof line, f) && k < json_array_size(rows)) {
    json_t *sc = json_loads(line, 0, NULL), *r = json_array_get(rows, k++);
    json_t *lp = json_object_get(sc, "logprobs"), *want = json_object_get(r, "logprobs");
    size_t np = json_array_size(json_object_get(r, "prompt_tokens"));
    for (size_t j = 0; j < json_array_size(want); j++, cnt++) {
      double d = fabs(json_number_value(json_array_get(lp, np - 1 + j)) - json_number_value(json_array_get(want, j)));
      maxd = d > maxd ? d : maxd;
    }
    json_decref(sc);
  }
  fclose(f);
  CHECK_EQ_I64(k, 256);
  CHECK(cnt > 256);
  CHECK_MSG(maxd <= 2e-6, "score on rlrun init's model vs iteration 1's rollout log-probs: max |d| %.3g", maxd);
  json_decref(rows);
  /* refusals: an --out that exists, a recipe with a model directory, a bad recipe; nothing written */
  snprintf(args, sizeof args, "init %s/recipes/demo-cpu.yaml --out m", cwd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "rlrun init: --out m exists: give a new directory");
  snprintf(args, sizeof args, "init %s/recipes/demo-cpu.yaml --out m2 --set model.init=null --set model.path=m", cwd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "has no model.init: its model (model.path ");
  snprintf(args, sizeof args, "init %s/recipes/demo-cpu.yaml --out m2 --set train.lr=2", cwd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "train.lr=2: 2 is out of range");
  snprintf(args, sizeof args, "init %s/recipes/demo-cpu.yaml --out no/such", cwd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "rlrun init: --out no/such: its parent no is not a directory (No such file or directory)");
  snprintf(args, sizeof args, "ln -s nowhere %s/dl", dir);
  REQUIRE(harness_run(args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "init %s/recipes/demo-cpu.yaml --out dl", cwd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2); /* a dangling link: rename would not replace it */
  CHECK_CONTAINS(out, "--out dl exists");
  snprintf(args, sizeof args, "init %s/recipes/demo-cpu.yaml --out --x", cwd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "looks like an option");
  snprintf(args, sizeof args, "cd %s && test ! -e m2 && ! ls -a | grep tmp", dir);
  CHECK_EQ_I64(harness_run(args, out, sizeof out), 0);
  /* DIR/ is DIR: written beside, renamed to DIR */
  snprintf(args, sizeof args, "init %s/recipes/demo-cpu.yaml --out m3/ --set seed=4", cwd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  snprintf(args, sizeof args, "cmp %s/m/model.safetensors %s/m3/model.safetensors", dir, dir);
  CHECK_EQ_I64(harness_run(args, out, sizeof out), 0); /* the same seed: the same bytes */
}

/* A model.path run with checkpoints of its own still loads model.path (then
 * its own weights): with the model's weights file gone, resume --allow-changed
 * is refused before it records anything (exit 4; it used to record the
 * change, drop the file's sha256, then fail loading, exit 2), other weights
 * put back are a change (exit 4), and the file itself back resumes to the
 * uninterrupted run's bits. */
TEST(runs_resume_needs_the_model_path_it_loads) {
  char dir[1200], args[16384], out[65536], cwd[PATH_MAX], rd[1400];
  snprintf(dir, sizeof dir, "%s/mp", harness_tmpdir());
  REQUIRE(mkdir(dir, 0755) == 0);
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(args, sizeof args, "init %s/recipes/demo-cpu.yaml --out m && %s init %s/recipes/demo-cpu.yaml --out m2 "
           "--set seed=77", cwd, bin(), cwd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  const char *set = "--set model.init=null --set model.path=m --set loop.iterations=4 --set loop.checkpoint_interval=2 "
                    "--quiet";
  snprintf(args, sizeof args, "run %s/recipes/demo-cpu.yaml --runs-dir ref %s", cwd, set);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "run %s/recipes/demo-cpu.yaml --runs-dir runs %s", cwd, set);
  REQUIRE(killed(rl(dir, "RLRUN_FAULT=loop.train@3:kill", args, out, sizeof out)));
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  char *before = store_snapshot(rd);
  REQUIRE(before);
  snprintf(args, sizeof args, "cd %s && mv m/model.safetensors w.away", dir);
  REQUIRE(harness_run(args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "resume %s --allow-changed --quiet", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "the run loads its model.path before its own checkpoint's weights, so it still reads it from its "
                      "model, and files of it are gone:\n  model.path/model.safetensors: ");
  char *now = store_snapshot(rd);
  REQUIRE(now);
  CHECK_STREQ(now, before); /* nothing recorded */
  free(now), free(before);
  snprintf(args, sizeof args, "cd %s && cp m2/model.safetensors m/", dir);
  REQUIRE(harness_run(args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "/m/model.safetensors (sha256 ");
  snprintf(args, sizeof args, "cd %s && mv w.away m/model.safetensors", dir);
  REQUIRE(harness_run(args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  char a[65], b[65], refd[1400];
  snprintf(args, sizeof args, "for d in %s/ref/*/; do echo $d; done | head -1", dir);
  REQUIRE(harness_run(args, refd, sizeof refd) == 0);
  refd[strcspn(refd, "\n")] = 0;
  REQUIRE(weights_sha(rd, 4, a) == 0 && weights_sha(refd, 4, b) == 0);
  CHECK_STREQ(a, b);
}

/* A MoE run (R3 on): samples --json carries each sample's routing record, a
 * list per token (prompt, then completion) of layers x top_k expert ids,
 * every id an expert of the model; a dense run's lines have no such field. */
TEST(runs_samples_json_carries_the_moe_routing) {
  char dir[1200], args[8192], out[1 << 20], cwd[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/sm", harness_tmpdir());
  REQUIRE(mkdir(dir, 0755) == 0);
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(args, sizeof args, "run %s/recipes/demo-cpu.yaml --set loop.iterations=1 --runs-dir runs --quiet "
           "--set model.init.arch=qwen3_moe --set model.init.experts=6 --set model.init.top_k=2 "
           "--set model.init.moe_ffn=32 --set train.r3=true --set rollout.batch=4 --set train.microbatch=8", cwd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  char rd[1400];
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "samples %s --json", rd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  int lines = 0, bad = 0, used[6] = {0};
  for (char *l = out, *nl; *l; l = nl + 1) {
    nl = strchr(l, '\n');
    REQUIRE(nl != NULL);
    *nl = 0;
    json_t *o = json_loads(l, 0, NULL), *re = o ? json_object_get(o, "routed_experts") : NULL;
    REQUIRE(o != NULL);
    CHECK_EQ_I64(json_array_size(re),
                 json_array_size(json_object_get(o, "prompt_tokens")) + json_array_size(json_object_get(o, "tokens")));
    for (size_t t = 0; t < json_array_size(re); t++) {
      json_t *ids = json_array_get(re, t);
      CHECK_EQ_I64(json_array_size(ids), 2 * 2); /* 2 layers x top_k 2 */
      for (size_t k = 0; k < json_array_size(ids); k++) {
        json_int_t id = json_integer_value(json_array_get(ids, k));
        if (id < 0 || id >= 6) bad++;
        else used[id]++;
      }
      /* a token's two choices in one layer are two experts */
      bad += json_integer_value(json_array_get(ids, 0)) == json_integer_value(json_array_get(ids, 1));
    }
    json_decref(o);
    lines++;
  }
  CHECK_EQ_I64(lines, 4 * 8);
  CHECK_EQ_I64(bad, 0);
  for (int x = 0; x < 6; x++) CHECK_MSG(used[x] > 0, "expert %d never chosen", x);
  /* the dense demo stores no routing */
  snprintf(args, sizeof args, "run %s/recipes/demo-cpu.yaml --set loop.iterations=1 --runs-dir dense --quiet "
           "--set rollout.batch=2 --set train.microbatch=8", cwd);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "samples $(ls -d %s/dense/*/) --json", dir);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  CHECK(strstr(out, "routed_experts") == NULL);
  CHECK(strstr(out, "\"tokens\"") != NULL);
}

/* An input path with a newline: export writes it as a JSON string (a raw one
 * ended the comment line, and the rest became recipe keys), and the exported
 * recipe runs, its inputs checked. */
TEST(runs_export_quotes_a_path_with_a_newline) {
  char dir[1200], args[8192], out[16384], cwd[PATH_MAX], task[1400];
  snprintf(dir, sizeof dir, "%s/nl", harness_tmpdir());
  REQUIRE(mkdir(dir, 0755) == 0);
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(task, sizeof task, "%s/t\nseed: 9\n#.lua", dir);
  char src[PATH_MAX + 64];
  snprintf(src, sizeof src, "%s/lua/scripts/task_add_digits.lua", cwd);
  char *text = NULL;
  size_t len = 0;
  rl_err e;
  REQUIRE(rl_read_file(src, &text, &len, &e) == 0);
  REQUIRE(harness_write_file(task, text) == 0);
  free(text);
  snprintf(args, sizeof args, "run %s/recipes/demo-cpu.yaml --set loop.iterations=1 --set 'data.task=\"%s/t\\nseed: 9\\n#.lua\"' "
           "--runs-dir runs --quiet", cwd, dir);
  REQUIRE(rl(dir, "", args, out, sizeof out) == 0);
  char rd[1400];
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "export %s --out %s/ex.yaml && grep -c '^seed:' %s/ex.yaml && grep 'rlrun-input.*t\\\\nseed' "
           "%s/ex.yaml", rd, dir, dir, dir);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "1\n# rlrun-input: sha256 ");
  CHECK_CONTAINS(out, " \"");
  snprintf(args, sizeof args, "run %s/ex.yaml --runs-dir runs2 --quiet", dir);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), 0);
}

/* resume with a script changed in place that no longer loads: the validator's
 * FILE:LINE and exit 2 (not "inputs gone"); resume --set of moved inputs with
 * a corrupt checkpoint: exit 4 and nothing modified (the move was recorded
 * before the checkpoint's check). */
TEST(runs_resume_set_checks_before_it_records) {
  char dir[1200], args[20000], out[16384], cwd[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/rsc", harness_tmpdir());
  REQUIRE(mkdir(dir, 0755) == 0);
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(args, sizeof args, "mkdir in && cp %s/lua/scripts/task_add_digits.lua %s/lua/scripts/digit_match.lua in/ && "
           "RLRUN_FAULT=loop.train@2:fail %s run %s/recipes/demo-cpu.yaml --set loop.iterations=3 --set "
           "loop.checkpoint_interval=1 --set data.task=in/task_add_digits.lua --set reward.script=in/digit_match.lua "
           "--runs-dir runs --quiet", cwd, cwd, bin(), cwd);
  char cmd[24000];
  snprintf(cmd, sizeof cmd, "cd %s && %s", dir, args);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 1);
  char rd[1400];
  REQUIRE(run_dir(dir, rd, sizeof rd) == 0);
  snprintf(cmd, sizeof cmd, "cd %s && cp in/digit_match.lua keep.lua && printf 'function reward(s\\n' >> in/digit_match.lua", dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  snprintf(args, sizeof args, "resume %s --allow-changed", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "digit_match.lua:");
  CHECK(strstr(out, "gone since it started") == NULL);
  /* moved, and the checkpoint corrupt: refused before anything is written */
  snprintf(cmd, sizeof cmd, "cd %s && cp keep.lua in/digit_match.lua && mv in in2 && printf x >> %s/checkpoints/step-000001/model.safetensors && "
           "md5sum %s/state.db %s/run.json %s/recipe.resolved.yaml > before.md5", dir, rd, rd, rd, rd);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  snprintf(args, sizeof args, "resume %s --set data.task=in2/task_add_digits.lua --set reward.script=in2/digit_match.lua", rd);
  CHECK_EQ_I64(rl(dir, "", args, out, sizeof out), RL_EXIT_STATE);
  CHECK_CONTAINS(out, "model.safetensors");
  snprintf(cmd, sizeof cmd, "cd %s && md5sum -c --quiet before.md5", dir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
}

/* rollout.generation_config_eos came in true: a run stored before it (its
 * resolved recipe without the key) resumes with it false — the end ids it ran
 * without — and that is no change of its recipe. */
TEST(runs_stored_recipe_without_generation_config_eos_keeps_it_off) {
  recipe r, old, now;
  rl_err e;
  REQUIRE(recipe_load("recipes/demo-cpu.yaml", NULL, 0, &r, &e) == 0);
  REQUIRE(runs_canonical_recipe(&r, &e) == 0);
  char *text = runs_resolved_text(&r);
  REQUIRE(text != NULL && strstr(text, "generation_config_eos: true") != NULL);
  char *cut = strdup(text), *l = strstr(cut, "  generation_config_eos:");
  REQUIRE(l != NULL);
  memmove(l, strchr(l, '\n') + 1, strlen(strchr(l, '\n') + 1) + 1);
  REQUIRE(runs_load_stored_recipe(harness_tmpdir(), text, &now, &e) == 0);
  CHECK_EQ_I64(now.rollout.generation_config_eos, 1);
  REQUIRE(runs_load_stored_recipe(harness_tmpdir(), cut, &old, &e) == 0);
  CHECK_EQ_I64(old.rollout.generation_config_eos, 0);
  char *again = runs_resolved_text(&old), *report = NULL;
  CHECK_CONTAINS(again, "generation_config_eos: false\n"); /* said as set: it stays off on every resume */
  CHECK_EQ_I64(runs_recipe_changed(cut, again, &report), 0);
  CHECK_EQ_I64(runs_recipe_changed(text, again, &report), 1); /* against a run stored with it on: a change */
  free(report), free(again), free(cut), free(text);
  recipe_free(&r), recipe_free(&old), recipe_free(&now);
}
