/* test_sft.c — SFT runs (train.algorithm sft over {"prompt", "completion"}
 * lines), the SFT → RL chain through model.checkpoint, and the run lock, end
 * to end through the rlrun binary with the CPU recipes of recipes/. */
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "harness.h"
#include "runner/recipe.h"
#include "state/ckpt.h"
#include "state/sha256.h"
#include "state/store.h"

/* The rlrun binary as an absolute path. */
static const char *sft_bin(void) {
  static char p[PATH_MAX];
  if (!p[0] && !realpath(harness_bin(), p)) snprintf(p, sizeof p, "%s", harness_bin());
  return p;
}

/* Run `ENV rlrun ARGS` from the repository root. */
static int sft_rl(const char *env, const char *args, char *out, size_t n) {
  size_t len = strlen(env) + strlen(sft_bin()) + strlen(args) + 16;
  char *cmd = malloc(len);
  snprintf(cmd, len, "%s %s %s; exit $?", env, sft_bin(), args);
  int rc = harness_run(cmd, out, n);
  free(cmd);
  return rc;
}

/* The newest run directory RUNS/NAME-* into rd. */
static int sft_run_dir(const char *runs, const char *name, char *rd, size_t n) {
  char cmd[2048], out[2048];
  snprintf(cmd, sizeof cmd, "ls -d %s/%s-*/ 2>/dev/null | tail -1", runs, name);
  if (harness_run(cmd, out, sizeof out) != 0 || !out[0]) return -1;
  out[strcspn(out, "\n")] = 0;
  if (out[strlen(out) - 1] == '/') out[strlen(out) - 1] = 0;
  snprintf(rd, n, "%s", out);
  return 0;
}

/* The weights of checkpoint `step` of runs a and b are the same bytes. */
static void sft_same_weights(const char *a, const char *b, int step) {
  char p[2400], ha[65], hb[65];
  rl_err e;
  snprintf(p, sizeof p, "%s/checkpoints/step-%06d/model.safetensors", a, step);
  REQUIRE(sha256_file(p, ha, NULL, &e) == 0);
  snprintf(p, sizeof p, "%s/checkpoints/step-%06d/model.safetensors", b, step);
  REQUIRE(sha256_file(p, hb, NULL, &e) == 0);
  CHECK_STREQ(ha, hb);
}

/* Metric `name` of iteration k in run rd (NAN when absent). */
static double sft_metric(const char *rd, int64_t k, const char *name) {
  char db[2200];
  snprintf(db, sizeof db, "%s/state.db", rd);
  rl_err e;
  store *s = store_open(db, 0, &e);
  if (!s) return NAN;
  double v = NAN;
  int found = 0;
  store_metric_get(s, k, name, &v, &found, &e);
  store_close(s);
  return found ? v : NAN;
}

TEST(sft_run_learns_and_resumes_bit_identical) {
  char runs[1024], args[8192], out[8192], ra[2048], rb[2048], wa[65], wb[65], p[2300];
  snprintf(runs, sizeof runs, "%s/sft-a", harness_tmpdir());
  const char *sets = "--set loop.iterations=6 --set loop.checkpoint_interval=2 --quiet";
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s %s", runs, sets);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  REQUIRE(sft_run_dir(runs, "sft-demo-cpu", ra, sizeof ra) == 0);
  double l1 = sft_metric(ra, 1, "loss"), l6 = sft_metric(ra, 6, "loss");
  CHECK_MSG(l1 > 2.0 && l1 < 3.5, "first loss %g: expected about ln(15) = 2.7 for a fresh model", l1);
  CHECK_MSG(l6 < 0.8 * l1, "loss %g -> %g: SFT did not learn", l1, l6);
  CHECK_EQ_I64((int64_t)sft_metric(ra, 6, "train/tokens"), 50); /* 25 examples x (digit + EOS) */
  CHECK(sft_metric(ra, 6, "train/tokens_per_s") > 0);
  /* the run's recipe.resolved.yaml validates as a recipe of its own (its scale_fmt: fp32, the default
   * written out, was refused as "applies to fp8-block only"), without the note on keys sft does not read */
  snprintf(args, sizeof args, "validate %s/recipe.resolved.yaml", ra);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK(strstr(out, "note:") == NULL);
  /* keys an sft run does not read, set in the recipe or with --set, are named once; a base's are not */
  CHECK_EQ_I64(sft_rl("", "validate recipes/sft-demo-cpu.yaml", out, sizeof out), 0);
  CHECK(strstr(out, "note:") == NULL);
  CHECK_EQ_I64(sft_rl("", "validate recipes/sft-demo-cpu.yaml --set train.kl_coef=0.5 --set rollout.samples_per_prompt=4 "
                          "--set train.microbatch=25", out, sizeof out), 0);
  CHECK_CONTAINS(out, "note: train.algorithm sft does not read rollout.samples_per_prompt, train.kl_coef (no rollout, "
                      "reward or RL loss terms): they have no effect");
  /* no rollout: no samples, no rollout step */
  char db[2200];
  snprintf(db, sizeof db, "%s/state.db", ra);
  rl_err e;
  store *s = store_open(db, 0, &e);
  REQUIRE(s);
  int64_t n = -1;
  int st = -1;
  store_samples_count(s, -1, &n, &e);
  CHECK_EQ_I64(n, 0);
  store_step_status(s, 3, "rollout", &st, &e);
  CHECK_EQ_I64(st, STORE_STEP_NONE);
  store_step_status(s, 3, "train", &st, &e);
  CHECK_EQ_I64(st, STORE_STEP_DONE);
  store_close(s);
  /* no reward: none recorded, and the read commands say so rather than show a 0 */
  CHECK(isnan(sft_metric(ra, 6, "reward/mean")));
  snprintf(args, sizeof args, "ls %s", runs);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, " complete  6/6         -          ");
  snprintf(args, sizeof args, "status %s", ra);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK(strstr(out, "reward/mean") == NULL);
  /* the plan numbers the steps status counts (README): convert, train and sync
   * per iteration, 3 checkpoints — it listed a rollout and a reward per
   * iteration too (28 steps) */
  CHECK_CONTAINS(out, "6 of 6 iterations trained; 16 steps done");
  snprintf(args, sizeof args, "plan recipes/sft-demo-cpu.yaml --set loop.iterations=6 --set loop.checkpoint_interval=2");
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "\n    2  train#1        sft on 25 sequences");
  CHECK_CONTAINS(out, "\n   16  checkpoint#6 ");
  CHECK_CONTAINS(out, "\n16 steps; keep the newest 3 checkpoints\n");
  CHECK(strstr(out, "rollout#") == NULL && strstr(out, "reward#") == NULL);
  snprintf(args, sizeof args, "samples %s --iter 2", ra);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 2);
  snprintf(p, sizeof p, "rlrun samples: --iter 2: run %s has no samples (an sft run trains on its data and samples "
           "nothing)\n", ra);
  CHECK_STREQ(out, p);
  snprintf(args, sizeof args, "samples %s", ra); /* without --iter: says why there are none */
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "(no samples: an sft run trains on its data and samples nothing)\n");
  /* killed in the 5th update, resumed: the same weights, bit for bit */
  snprintf(runs, sizeof runs, "%s/sft-b", harness_tmpdir());
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s %s", runs, sets);
  int rc = sft_rl("RLRUN_FAULT=loop.train@5:kill", args, out, sizeof out);
  CHECK_MSG(rc == 137 || rc == -1, "exit %d, not killed:\n%s", rc, out);
  REQUIRE(sft_run_dir(runs, "sft-demo-cpu", rb, sizeof rb) == 0);
  snprintf(args, sizeof args, "resume %s --quiet", rb);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "resuming");
  ckpt_file_path(ra, 6, CKPT_WEIGHTS, p, sizeof p);
  REQUIRE(sha256_file(p, wa, NULL, &e) == 0);
  ckpt_file_path(rb, 6, CKPT_WEIGHTS, p, sizeof p);
  REQUIRE(sha256_file(p, wb, NULL, &e) == 0);
  CHECK_STREQ(wb, wa);
  CHECK(sft_metric(rb, 6, "loss") == l6);
}

/* RL.md: the SFT loss is the mean cross-entropy of the targets — the rollout
 * temperature (there are no sampled tokens) does not enter it. */
TEST(sft_loss_ignores_rollout_temperature) {
  char runs[1024], rd[1200], args[2400], out[8192];
  double loss[2];
  const char *temp[2] = {"1.0", "0.5"};
  for (int k = 0; k < 2; k++) {
    snprintf(runs, sizeof runs, "%s/sft_t%d", harness_tmpdir(), k);
    snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s --quiet --set loop.iterations=1 "
             "--set rollout.temperature=%s", runs, temp[k]);
    CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
    REQUIRE(sft_run_dir(runs, "sft-demo-cpu", rd, sizeof rd) == 0);
    loss[k] = sft_metric(rd, 1, "loss");
  }
  CHECK_MSG(isfinite(loss[0]) && loss[0] > 0 && loss[0] == loss[1], "SFT loss at T=1: %.9g, at T=0.5: %.9g", loss[0],
            loss[1]);
}

TEST(sft_chain_rl_from_checkpoint_starts_higher) {
  char runs[1024], args[8192], out[8192], rs[2048], rr[2048], rd[2048];
  snprintf(runs, sizeof runs, "%s/chain", harness_tmpdir());
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s --set loop.iterations=20 --quiet", runs);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  REQUIRE(sft_run_dir(runs, "sft-demo-cpu", rs, sizeof rs) == 0);
  /* model.checkpoint: RUNS/sft-demo-cpu = the newest sft-demo-cpu run's newest checkpoint */
  snprintf(args, sizeof args, "run recipes/rl-from-sft-cpu.yaml --runs-dir %s --set model.checkpoint=%s/sft-demo-cpu "
           "--set loop.iterations=1 --quiet", runs, runs);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  REQUIRE(sft_run_dir(runs, "rl-from-sft-cpu", rr, sizeof rr) == 0);
  snprintf(args, sizeof args, "run recipes/demo-cpu.yaml --runs-dir %s --set loop.iterations=1 --quiet", runs);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  REQUIRE(sft_run_dir(runs, "demo-cpu", rd, sizeof rd) == 0);
  double warm = sft_metric(rr, 1, "reward/mean"), cold = sft_metric(rd, 1, "reward/mean");
  CHECK_MSG(warm > cold + 0.15, "initial reward from the SFT checkpoint %g, from scratch %g", warm, cold);
  CHECK_MSG(cold < 0.1, "from scratch %g", cold);
  /* the resolved recipe names the exact checkpoint it started from */
  char p[2300], *text = NULL;
  size_t len;
  rl_err e;
  snprintf(p, sizeof p, "%s/recipe.resolved.yaml", rr);
  REQUIRE(rl_read_file(p, &text, &len, &e) == 0);
  char want[2400];
  snprintf(want, sizeof want, "/checkpoints/step-000020\"");
  CHECK_CONTAINS(text, want);
  CHECK_CONTAINS(text, "sft-demo-cpu-");
  free(text);
  /* a run directory resolves to its newest checkpoint too */
  snprintf(args, sizeof args, "plan recipes/rl-from-sft-cpu.yaml --set model.checkpoint=%s", rs);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "checkpoints/step-000020");
}

TEST(sft_pending_checkpoint_and_bad_data_are_named) {
  char args[8192], out[8192], dir[1024], p[3000];
  snprintf(dir, sizeof dir, "%s/pend", harness_tmpdir());
  /* an SFT output that does not exist yet: valid (a note), not runnable (exit 2) */
  snprintf(args, sizeof args, "validate recipes/rl-from-sft-cpu.yaml --set model.checkpoint=%s/nothing", dir);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "holds no checkpoint yet");
  snprintf(args, sizeof args, "run recipes/rl-from-sft-cpu.yaml --runs-dir %s --set model.checkpoint=%s/nothing", dir, dir);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "holds no checkpoint yet");
  /* an existing directory that is no checkpoint: invalid */
  snprintf(args, sizeof args, "validate recipes/rl-from-sft-cpu.yaml --set model.checkpoint=recipes");
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "neither a checkpoint directory");
  /* sft samples nothing: rollout lengths past model.init.max_seq_len do not matter (its examples are
   * checked one by one), where an RL recipe with the same model is refused */
  CHECK_EQ_I64(sft_rl("", "validate recipes/sft-demo-cpu.yaml --set rollout.max_new_tokens=256", out, sizeof out), 0);
  CHECK_EQ_I64(sft_rl("", "validate recipes/demo-cpu.yaml --set rollout.max_new_tokens=256", out, sizeof out), 2);
  CHECK_CONTAINS(out, "exceed model.init.max_seq_len (16)");
  /* a line without "completion": named */
  snprintf(p, sizeof p, "mkdir -p %s && printf '{\"prompt\": \"1+1=\", \"completion\": \"2\"}\\n"
           "{\"prompt\": \"1+2=\", \"answer\": \"3\"}\\n' > %s/d.jsonl", dir, dir);
  REQUIRE(harness_run(p, NULL, 0) == 0);
  /* refused by validation, the line named, before any run directory exists */
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s/runs --set data.prompts=%s/d.jsonl "
           "--set rollout.batch=2 --set train.microbatch=2 --quiet", dir, dir);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 2);
  snprintf(p, sizeof p, "rlrun run: --set data.prompts=%s/d.jsonl: %s/d.jsonl:2: no string field \"completion\" "
           "(the target text): train.algorithm sft needs {\"prompt\": \"...\", \"completion\": \"...\"}\n", dir, dir);
  CHECK_STREQ(out, p);
  snprintf(p, sizeof p, "test -e %s/runs", dir);
  CHECK(harness_run(p, NULL, 0) != 0);
  snprintf(args, sizeof args, "validate recipes/sft-demo-cpu.yaml --set data.prompts=%s/d.jsonl", dir);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "d.jsonl:2: no string field \"completion\"");
}

TEST(runs_lock_refuses_a_second_writer_readers_still_work) {
  char runs[1024], args[8192], out[16384], rd[2048], p[2200];
  snprintf(runs, sizeof runs, "%s/lock", harness_tmpdir());
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s --set loop.iterations=2 --quiet", runs);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  REQUIRE(sft_run_dir(runs, "sft-demo-cpu", rd, sizeof rd) == 0);
  /* a real second writer: resume while a long run works on the directory */
  char lr[1024];
  snprintf(lr, sizeof lr, "%s/long", harness_tmpdir());
  snprintf(args, sizeof args,
           "{ %s run recipes/sft-demo-cpu.yaml --runs-dir %s --set loop.iterations=100000 --quiet >/dev/null 2>&1 & b=$!; "
           "i=0; while ! grep -qs \"^$b$\" %s/sft-demo-cpu-*/lock && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
           "sleep 0.2; %s resume %s/sft-demo-cpu-* --quiet; echo rc=$?; echo \"holder=(pid $b)\"; "
           "rm -f %s/sft-demo-cpu-*/lock; %s resume %s/sft-demo-cpu-* --quiet 2>/dev/null; echo unlinked_rc=$?; "
           "%s metrics %s/sft-demo-cpu-* --csv >/dev/null; echo metrics=$?; kill -TERM $b; wait $b; echo first=$?; }",
           sft_bin(), lr, lr, sft_bin(), lr, lr, sft_bin(), lr, sft_bin(), lr);
  harness_run(args, out, sizeof out);
  CHECK_CONTAINS(out, "rc=4");
  /* the lock is the directory's: removing the `lock` file (which names the pid) lets no second writer in */
  CHECK_CONTAINS(out, "unlinked_rc=4");
  CHECK_CONTAINS(out, "metrics=0");
  CHECK_CONTAINS(out, "first=130");
  char *h = strstr(out, "holder=");
  REQUIRE(h);
  char holder[64];
  snprintf(holder, sizeof holder, "%.*s", (int)strcspn(h + 7, "\n"), h + 7);
  char *ref = strstr(out, "another rlrun ");
  REQUIRE(ref);
  CHECK_MSG(!strncmp(ref + 14, holder, strlen(holder)), "the refusal does not name %s:\n%s", holder, out);
  CHECK_CONTAINS(out, "is working on this run");
  /* the same with the lock held by this process, against a finished run */
  int fd, dfd;
  snprintf(p, sizeof p, "%s/lock", rd);
  REQUIRE((dfd = open(rd, O_RDONLY | O_DIRECTORY)) >= 0);
  REQUIRE(flock(dfd, LOCK_EX | LOCK_NB) == 0);
  REQUIRE((fd = open(p, O_RDWR)) >= 0);
  char pid[32];
  int np = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  REQUIRE(ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)np, 0) == np);
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 4);
  char want[2400];
  snprintf(want, sizeof want, "%s: another rlrun (pid %ld) is working on this run", rd, (long)getpid());
  CHECK_CONTAINS(out, want);
  /* readers are not blocked */
  const char *readers[] = {"status %s", "metrics %s --csv", "samples %s", "export %s"};
  for (int i = 0; i < 4; i++) {
    char a[2400];
    snprintf(a, sizeof a, readers[i], rd);
    CHECK_MSG(sft_rl("", a, out, sizeof out) == 0, "%s under the lock: %s", a, out);
  }
  snprintf(args, sizeof args, "ls %s", runs);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "sft-demo-cpu-");
  close(fd);
  close(dfd); /* released: a resume goes through */
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "already complete");
}

/* model.checkpoint: RUNS/NAME matches only NAME-<run id> (YYYYMMDDTHHMMSSZ-hhhh):
 * a run of another name that starts with NAME- and a digit (sft-7b-<id>) was
 * taken for a newer run of NAME before. */
TEST(sft_checkpoint_name_matches_only_that_names_runs) {
  char p[4096], want[2048];
  const char *t = harness_tmpdir();
  snprintf(p, sizeof p, "cd %s && for d in runs/sft-20260101T000000Z-00aa runs/sft-7b-20260301T000000Z-0001 "
           "runs/sft-20260201T000000Z-00bb runs/sft-2026x runs/sft-20260401T000000Z-0001.old; do "
           "mkdir -p $d/checkpoints/step-000004 && touch $d/checkpoints/step-000004/config.json "
           "$d/checkpoints/step-000004/model.safetensors $d/checkpoints/step-000004/manifest.json; done", t);
  REQUIRE(harness_run(p, NULL, 0) == 0);
  snprintf(p, sizeof p, "%s/runs/sft", t);
  char *got = recipe_resolve_checkpoint(p);
  snprintf(want, sizeof want, "%s/runs/sft-20260201T000000Z-00bb/checkpoints/step-000004", t);
  CHECK_STREQ(got ? got : "(null)", want);
  free(got);
  snprintf(p, sizeof p, "%s/runs/sft-7b", t);
  got = recipe_resolve_checkpoint(p);
  snprintf(want, sizeof want, "%s/runs/sft-7b-20260301T000000Z-0001/checkpoints/step-000004", t);
  CHECK_STREQ(got ? got : "(null)", want);
  free(got);
}

/* A checkpoint directory named directly without its weights (config.json
 * alone, or beside optimizer.safetensors) is refused by validation, exit 2,
 * before a run directory exists; it was valid, and the run then loaded the
 * optimizer's tensors as the model and failed mid-run. */
TEST(sft_checkpoint_without_weights_is_invalid) {
  char p[4096], args[4096], out[4096], want[4096];
  const char *t = harness_tmpdir();
  snprintf(p, sizeof p, "mkdir -p %s/half && printf '{}' > %s/half/config.json && touch %s/half/optimizer.safetensors",
           t, t, t);
  REQUIRE(harness_run(p, NULL, 0) == 0);
  snprintf(args, sizeof args, "run recipes/rl-from-sft-cpu.yaml --runs-dir %s/runs --set model.checkpoint=%s/half --quiet",
           t, t);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 2);
  snprintf(want, sizeof want, "rlrun run: --set model.checkpoint=%s/half: '%s/half' is an incomplete checkpoint "
           "directory: no model.safetensors beside its config.json\n", t, t);
  CHECK_STREQ(out, want);
  snprintf(p, sizeof p, "test -e %s/runs", t);
  CHECK(harness_run(p, NULL, 0) != 0);
}

/* A chain in d: the SFT demo (2 iterations) into d/sft, then rl-from-sft-cpu
 * from d/sft/sft-demo-cpu with the options rl, uninterrupted into d/ref and
 * killed in the train step of iteration kill_at into d/rl; their run
 * directories into ref and rd. */
static void sft_chain_pair(const char *d, const char *rl, int kill_at, char *rd, char *ref, size_t n) {
  char args[8192], out[16384], env[64];
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s/sft --set loop.iterations=2 --quiet", d);
  REQUIRE(sft_rl("", args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "run recipes/rl-from-sft-cpu.yaml --runs-dir %s/ref --set model.checkpoint=%s/sft/sft-demo-cpu %s",
           d, d, rl);
  REQUIRE(sft_rl("", args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "run recipes/rl-from-sft-cpu.yaml --runs-dir %s/rl --set model.checkpoint=%s/sft/sft-demo-cpu %s",
           d, d, rl);
  snprintf(env, sizeof env, "RLRUN_FAULT=loop.train@%d:kill", kill_at);
  CHECK_EQ_I64(sft_rl(env, args, out, sizeof out), 137);
  REQUIRE(sft_run_dir(d, "rl/rl-from-sft-cpu", rd, n) == 0);
  REQUIRE(sft_run_dir(d, "ref/rl-from-sft-cpu", ref, n) == 0);
}

/* A chain's RL run that has checkpoints of its own resumes after the SFT run it
 * started from was moved away: resume exits 4 listing the missing inputs,
 * `--allow-changed` continues from the run's own checkpoint and ends with the
 * uninterrupted run's bits. Before, --allow-changed failed (exit 2) hashing
 * and loading the start checkpoint that was gone. */
TEST(sft_chain_resumes_after_the_start_run_is_moved) {
  char args[8192], out[16384], d[1024], p[8192], rd[2048], ref[2048];
  snprintf(d, sizeof d, "%s/mv", harness_tmpdir());
  const char *rl = "--set loop.iterations=6 --set loop.checkpoint_interval=2 --set rollout.batch=8 "
                   "--set train.microbatch=64 --quiet";
  sft_chain_pair(d, rl, 5, rd, ref, sizeof rd);
  snprintf(p, sizeof p, "mv %s/sft %s/sft-moved", d, d);
  REQUIRE(harness_run(p, NULL, 0) == 0);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "input missing: ");
  snprintf(args, sizeof args, "resume %s --allow-changed --quiet", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK_CONTAINS(out, "run complete: ");
  sft_same_weights(rd, ref, 6);
  /* the inputs recorded are those still there: a second resume has nothing missing to report */
  snprintf(args, sizeof args, "resume %s", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK(strstr(out, "input missing") == NULL);
}

/* An RL recipe whose model.checkpoint names an SFT run (or RUNS/NAME) that is
 * not complete validates with a note: the run stopped, and which checkpoint
 * it starts from; once the run is complete, no note. */
TEST(sft_chain_notes_a_start_run_that_is_not_complete) {
  char args[8192], out[16384], d[1024], rd[2048];
  snprintf(d, sizeof d, "%s/inc", harness_tmpdir());
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s/sft --set loop.iterations=4 "
           "--set loop.checkpoint_interval=2 --quiet", d);
  CHECK_EQ_I64(sft_rl("RLRUN_FAULT=loop.train@3:kill", args, out, sizeof out), 137);
  REQUIRE(sft_run_dir(d, "sft/sft-demo-cpu", rd, sizeof rd) == 0);
  snprintf(args, sizeof args, "validate recipes/rl-from-sft-cpu.yaml --set model.checkpoint=%s/sft/sft-demo-cpu", d);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  char want[4096];
  snprintf(want, sizeof want, "note: model.checkpoint '%s/sft/sft-demo-cpu': the run %s is not complete (stopped, 4 "
           "iterations planned): this recipe starts from its newest checkpoint, step-000002", d, rd);
  CHECK_CONTAINS(out, want);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  REQUIRE(sft_rl("", args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "validate recipes/rl-from-sft-cpu.yaml --set model.checkpoint=%s", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK(strstr(out, "note:") == NULL);
}

/* An RL run from RUNS/NAME resumes after a newer run of that name appeared:
 * the recipe still names the run it started from (the stored checkpoint), so
 * resume needs no --allow-changed and ends with the bits of an uninterrupted
 * run from that checkpoint. Before, the newer run made it "recipe changed in
 * model: checkpoint" (exit 4). A new run of the recipe takes the newer one. */
TEST(sft_chain_resume_keeps_its_start_when_a_newer_run_appears) {
  char args[8192], out[16384], d[1024], rd[2048], ref[2048], a[2048];
  snprintf(d, sizeof d, "%s/nw", harness_tmpdir());
  const char *rl = "--set loop.iterations=4 --set loop.checkpoint_interval=2 --set rollout.batch=8 "
                   "--set train.microbatch=64 --quiet";
  sft_chain_pair(d, rl, 3, rd, ref, sizeof rd); /* both from the one SFT run there is, a */
  REQUIRE(sft_run_dir(d, "sft/sft-demo-cpu", a, sizeof a) == 0);
  /* a newer SFT run of the same name (run ids hold the second: wait for the next one) */
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s/sft --set loop.iterations=2 --set seed=9 --quiet", d);
  harness_run("sleep 1.1", NULL, 0);
  REQUIRE(sft_rl("", args, out, sizeof out) == 0);
  char b[2048];
  REQUIRE(sft_run_dir(d, "sft/sft-demo-cpu", b, sizeof b) == 0);
  REQUIRE(strcmp(a, b) != 0);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  CHECK(strstr(out, "changed") == NULL);
  sft_same_weights(rd, ref, 4);
  /* a new run of the recipe starts from the newer SFT run */
  snprintf(args, sizeof args, "plan recipes/rl-from-sft-cpu.yaml --set model.checkpoint=%s/sft/sft-demo-cpu", d);
  REQUIRE(sft_rl("", args, out, sizeof out) == 0);
  CHECK_CONTAINS(out, b);
}

/* A chain's RL run stopped before a checkpoint of its own, its start run moved
 * away: --allow-changed cannot continue it (the run starts again from that
 * model) and says so before it records anything (exit 4). Another model at the
 * recorded place is then a change (exit 4, the files named), and the start
 * run moved back resumes to the uninterrupted run's bits. Before, the failed
 * --allow-changed dropped the start's sha256 from the record, and a plain
 * resume then trained another model found at that path without a word. */
TEST(sft_chain_without_its_own_checkpoint_keeps_its_start_recorded) {
  char args[8192], out[16384], d[1024], p[8192], rd[2048], ref[2048], other[2048];
  snprintf(d, sizeof d, "%s/nc", harness_tmpdir());
  const char *rl = "--set loop.iterations=4 --set loop.checkpoint_interval=4 --set rollout.batch=8 "
                   "--set train.microbatch=64 --quiet";
  sft_chain_pair(d, rl, 2, rd, ref, sizeof rd);
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s/other --set loop.iterations=2 --set seed=99 "
           "--quiet", d);
  REQUIRE(sft_rl("", args, out, sizeof out) == 0);
  REQUIRE(sft_run_dir(d, "other/sft-demo-cpu", other, sizeof other) == 0);
  char start[2048];
  REQUIRE(sft_run_dir(d, "sft/sft-demo-cpu", start, sizeof start) == 0);
  snprintf(p, sizeof p, "mv %s/sft %s/sft-moved", d, d);
  REQUIRE(harness_run(p, NULL, 0) == 0);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "input missing: ");
  snprintf(args, sizeof args, "resume %s --allow-changed --quiet", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "the run has no checkpoint of its own yet, so it starts again from its model, and files of it "
                      "are gone:\n  model.checkpoint/config.json: ");
  CHECK_CONTAINS(out, "point --set model.checkpoint=PATH at the same model where it is now; nothing was modified");
  /* a newer run of the recipe's RUNS/NAME: --allow-changed would train it on the samples of the first
   * (it did, with logp_abs_diff 0.3): refused too */
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s/sft --set loop.iterations=2 --set seed=7 --quiet",
           d);
  REQUIRE(sft_rl("", args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "resume %s --allow-changed --quiet", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "the run has no checkpoint of its own yet and its model would change (model.checkpoint ");
  CHECK_CONTAINS(out, "while its committed samples came from the first; start a new run for the other model");
  snprintf(p, sizeof p, "rm -r %s/sft", d);
  REQUIRE(harness_run(p, NULL, 0) == 0);
  /* another SFT run's checkpoint where the start was: a change, not a start */
  snprintf(p, sizeof p, "mkdir -p %s/checkpoints && cp -r %s/checkpoints/step-000002 %s/checkpoints/", start, other, start);
  REQUIRE(harness_run(p, NULL, 0) == 0);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 4);
  CHECK_CONTAINS(out, "/checkpoints/step-000002/model.safetensors (sha256 ");
  /* the start back: the uninterrupted run's bits */
  snprintf(p, sizeof p, "rm -r %s/sft && mv %s/sft-moved %s/sft", d, d, d);
  REQUIRE(harness_run(p, NULL, 0) == 0);
  snprintf(args, sizeof args, "resume %s --quiet", rd);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0);
  sft_same_weights(rd, ref, 4);
}

/* A run's checkpoint records its tokenizer (manifest.json "extra"): a run that
 * starts from it with the same number of characters in another order is
 * refused at validation (exit 2, nothing made). Before, "+" and "=" swapped
 * validated and ran, feeding the SFT weights other token ids. */
TEST(sft_checkpoint_tokenizer_must_match) {
  char args[4096], out[8192], d[1024], p[4400];
  snprintf(d, sizeof d, "%s/tok", harness_tmpdir());
  snprintf(args, sizeof args, "run recipes/sft-demo-cpu.yaml --runs-dir %s/sft --set loop.iterations=1 --quiet", d);
  REQUIRE(sft_rl("", args, out, sizeof out) == 0);
  snprintf(args, sizeof args, "validate recipes/rl-from-sft-cpu.yaml --set model.checkpoint=%s/sft/sft-demo-cpu", d);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 0); /* the same characters */
  snprintf(args, sizeof args, "validate recipes/rl-from-sft-cpu.yaml --set model.checkpoint=%s/sft/sft-demo-cpu "
           "--set 'tokenizer.chars=0123456789=+'", d);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 2);
  CHECK_CONTAINS(out, "differs from the characters model.checkpoint");
  CHECK_CONTAINS(out, "(\"0123456789+=\", its manifest.json)");
  snprintf(args, sizeof args, "run recipes/rl-from-sft-cpu.yaml --runs-dir %s/rl --set model.checkpoint=%s/sft/sft-demo-cpu "
           "--set 'tokenizer.chars=0123456789=+' --quiet", d, d);
  CHECK_EQ_I64(sft_rl("", args, out, sizeof out), 2);
  snprintf(p, sizeof p, "test -e %s/rl", d);
  CHECK(harness_run(p, NULL, 0) != 0);
}
