/* test_train_cuda.c — the GPU path of the trainer and the run loop as far as
 * a machine without a GPU can check it: option refusals of the CUDA trainer,
 * the no-CUDA / no-GPU errors (exit 3), and that the CPU trainer ignores the
 * device field's default. The device numerics run in tests/gpu/run.sh. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"
#include "runner/matrix.h"
#include "stages/train.h"
#include "train_util.h"

/* 1 when this machine has a usable GPU (the no-GPU checks are skipped then). */
static int have_gpu(void) {
  hw_target t;
  hw_target_detect(&t);
  return t.cls != HW_CPU;
}

TEST(train_cuda_refuses_unsupported_options) {
  model *m = tu_micro_model(0, 1, 16, 3);
  REQUIRE(m != NULL);
  train_opts o;
  train_opts_default(&o);
  CHECK_EQ_I64(o.device, TRAIN_DEVICE_CPU);
  o.device = TRAIN_DEVICE_CUDA;
  trainer *t = NULL;
  rl_err e;
  o.loss.kl_beta = 0.1;
  CHECK_EQ_I64(trainer_new(m, &o, &t, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "KL reference");
  CHECK_CONTAINS(e.msg, "device: cpu");
  REQUIRE(t == NULL);
  o.loss.kl_beta = 0;
  o.f32 = 1;
  CHECK_EQ_I64(trainer_new(m, &o, &t, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "FP32-exact");
  o.f32 = 0;
  o.device = 7;
  CHECK_EQ_I64(trainer_new(m, &o, &t, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "bad device");
  if (!RLRUN_CUDA) { /* the device path of a CPU-only build: exit 3, nothing leaked (ASan) */
    o.device = TRAIN_DEVICE_CUDA;
    CHECK_EQ_I64(trainer_new(m, &o, &t, &e), RL_EXIT_HARDWARE);
    CHECK_CONTAINS(e.msg, "without CUDA");
    REQUIRE(t == NULL);
  }
  /* data parallelism: the CUDA trainer only, at most TRAIN_DP_MAX ranks */
  o.device = TRAIN_DEVICE_CPU;
  o.dp_ranks = 2, o.dp_gpus[1] = 1;
  CHECK_EQ_I64(trainer_new(m, &o, &t, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "data parallelism over 2 GPUs needs the CUDA trainer (device: cuda)");
  REQUIRE(t == NULL);
  o.dp_ranks = TRAIN_DP_MAX + 1;
  CHECK_EQ_I64(trainer_new(m, &o, &t, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "bad dp_ranks");
  o.dp_ranks = 0;
  /* the CPU trainer: trainer_sync_host is a no-op */
  o.device = TRAIN_DEVICE_CPU;
  REQUIRE(trainer_new(m, &o, &t, &e) == 0);
  CHECK_EQ_I64(trainer_sync_host(t, &e), 0);
  trainer_free(t);
  model_free(m);
}

/* A tiny recipe with `device: DEV` in dir/t.yaml (the test_runs.c model). */
static void write_recipe(const char *dir, const char *dev) {
  char cmd[2048], text[2048];
  snprintf(cmd, sizeof cmd, "mkdir -p %s && cp lua/scripts/task_add_digits.lua %s/task.lua && "
           "cp lua/scripts/digit_match.lua %s/reward.lua", dir, dir, dir);
  harness_run(cmd, NULL, 0);
  snprintf(text, sizeof text,
           "name: t\nseed: 7\ndevice: %s\n"
           "model:\n  init: {arch: qwen3, hidden: 16, layers: 1, heads: 2, kv_heads: 1, head_dim: 8, ffn: 32, max_seq_len: 12}\n"
           "tokenizer: {type: chars, chars: \"0123456789+=\"}\n"
           "data:\n  task: task.lua\n"
           "rollout: {batch: 2, samples_per_prompt: 2, max_prompt_tokens: 6, max_new_tokens: 3}\n"
           "reward:\n  script: reward.lua\n"
           "train: {algorithm: grpo, lr: 1.0e-2, microbatch: 4}\n"
           "loop: {iterations: 1, checkpoint_interval: 1, keep_checkpoints: 1}\n", dev);
  snprintf(cmd, sizeof cmd, "%s/t.yaml", dir);
  harness_write_file(cmd, text);
}

TEST(run_cuda_recipe_without_gpu_exits_3) {
  if (have_gpu()) {
    printf("  skipped: this machine has a GPU (tests/gpu/run.sh runs the GPU loop)\n");
    return;
  }
  char dir[1024], bin[PATH_MAX], cmd[PATH_MAX + 1200], out[4096];
  snprintf(dir, sizeof dir, "%s/cudaloop", harness_tmpdir());
  if (!realpath(harness_bin(), bin)) snprintf(bin, sizeof bin, "%s", harness_bin());
  write_recipe(dir, "cuda");
  snprintf(cmd, sizeof cmd, "cd %s && %s run t.yaml --runs-dir runs --quiet 2>&1; exit $?", dir, bin);
  int rc = harness_run(cmd, out, sizeof out);
  CHECK_EQ_I64(rc, RL_EXIT_HARDWARE);
  CHECK_CONTAINS(out, "no GPU found");
  CHECK_CONTAINS(out, "device: cpu");
  /* the reason said once: not "no GPU found (no GPU (...))" */
  CHECK(strstr(out, "(no GPU (") == NULL);
#if !RLRUN_CUDA
  CHECK_STREQ(out, "rlrun run: t.yaml: no GPU found (this binary was built without CUDA), but the recipe says "
                   "device: cuda; set `device: cpu` (or --set device=cpu) to run the CPU reference\n");
  char cmd2[PATH_MAX + 1200];
  snprintf(cmd2, sizeof cmd2, "cd %s && %s validate t.yaml", dir, bin);
  CHECK_EQ_I64(harness_run(cmd2, out, sizeof out), RL_EXIT_HARDWARE);
  CHECK_STREQ(out, "t.yaml: valid, but not runnable on cpu (cpu):\n"
                   "t.yaml:3:9: device: cuda, but this machine has no GPU: this binary was built without CUDA\n");
  snprintf(cmd2, sizeof cmd2, "%s matrix", bin);
  CHECK_EQ_I64(harness_run(cmd2, out, sizeof out), 0);
  CHECK_CONTAINS(out, "this machine: cpu (cpu; no GPU: this binary was built without CUDA, detected)\n");
#endif
  /* device: auto on this machine is the CPU reference and completes */
  write_recipe(dir, "auto");
  rc = harness_run(cmd, out, sizeof out);
  CHECK_EQ_I64(rc, 0);
  CHECK_CONTAINS(out, "run complete");
}
