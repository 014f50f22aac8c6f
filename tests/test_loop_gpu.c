/* test_loop_gpu.c — where a GPU run puts its trainer and rollout engine
 * (runner/loop_gpu.c, loop_gpu_place): one GPU colocated, two GPUs with an
 * NCCL sync, sync.transport auto/device/nccl against the lists, data
 * parallelism (gpus.train of several GPUs: ranks, the rollout colocated with
 * rank 0 or apart), the rollout split over several GPUs (colocated part and
 * replicas), a GPU the machine lacks refused; the same rules at validation
 * (recipe_check_hardware) and for recipes/bf16-baseline-2gpu.yaml and
 * bf16-baseline-rollout2.yaml. The GPU side (the run itself on two
 * GPUs) is tests/gpu/run.sh, section "twogpu". */
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "kernels/device.h"
#include "runner/loop_int.h"
#include "runner/recipe.h"

static char out[1 << 14];

/* A minimal valid recipe with overrides (no files touched). */
static int lg_recipe(const char *const *sets, int n, recipe *r, rl_err *e) {
  static const char *text = "model:\n  init: {arch: qwen3}\n"
                            "tokenizer: {type: chars, chars: \"0123456789+= \"}\n"
                            "data: {prompts: p.jsonl}\n"
                            "reward: {script: r.lua}\n";
  return recipe_load_string(text, strlen(text), "lg.yaml", sets, n, RECIPE_NO_FS, r, e);
}

/* Validation of recipe r, which uses GPUs 0 and 1, on an H200 target: exit 3
 * on one GPU with a message containing why, 0 on two; *plan gets the plan
 * printed for two (malloc'd; NULL when it could not be made). */
static void lg_two_gpu_plan(recipe *r, const char *why, char **plan) {
  rl_err e = {0};
  hw_target t;
  int emu = 0;
  *plan = NULL;
  REQUIRE(hw_target_named("h200:1", &t, &e) == 0);
  CHECK_EQ_I64(recipe_check_hardware(r, &t, &emu, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, why);
  REQUIRE(hw_target_named("h200:2", &t, &e) == 0);
  CHECK_EQ_I64(recipe_check_hardware(r, &t, &emu, &e), 0);
  size_t len = 0;
  FILE *f = open_memstream(plan, &len);
  REQUIRE(f);
  recipe_print_plan(f, r, &t, emu);
  fclose(f);
}

TEST(loop_gpu_place_colocated_and_separate) {
  recipe r;
  rl_err e = {0};
  loop_place p;
  /* defaults: gpus [0] / [0], transport auto → colocated on GPU 0 */
  REQUIRE(lg_recipe(NULL, 0, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 1, &p, &e), 0);
  CHECK_EQ_I64(p.train_gpu, 0);
  CHECK_EQ_I64(p.rollout_gpu, 0);
  CHECK_EQ_I64(p.nccl, 0);
  recipe_free(&r);
  /* colocated on GPU 1 of two */
  const char *s1[] = {"gpus.rollout=[1]", "gpus.train=[1]"};
  REQUIRE(lg_recipe(s1, 2, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 2, &p, &e), 0);
  CHECK_EQ_I64(p.train_gpu, 1);
  CHECK_EQ_I64(p.rollout_gpu, 1);
  CHECK_EQ_I64(p.nccl, 0);
  recipe_free(&r);
  /* rollout 1, train 0: auto → nccl; nccl named explicitly too */
  const char *s2[] = {"gpus.rollout=[1]", "gpus.train=[0]", "sync.transport=auto"};
  for (int explicit = 0; explicit < 2; explicit++) {
    if (explicit) s2[2] = "sync.transport=nccl";
    REQUIRE(lg_recipe(s2, 3, &r, &e) == 0);
    CHECK_EQ_I64(loop_gpu_place(&r, 2, &p, &e), 0);
    CHECK_EQ_I64(p.train_gpu, 0);
    CHECK_EQ_I64(p.rollout_gpu, 1);
    CHECK_EQ_I64(p.nccl, 1);
    recipe_free(&r);
  }
  /* train on GPU 3 of 4, rollout on GPU 2 */
  const char *s3[] = {"gpus.rollout=[2]", "gpus.train=[3]"};
  REQUIRE(lg_recipe(s3, 2, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), 0);
  CHECK_EQ_I64(p.train_gpu, 3);
  CHECK_EQ_I64(p.rollout_gpu, 2);
  CHECK_EQ_I64(p.nccl, 1);
  recipe_free(&r);
}

TEST(loop_gpu_place_refusals) {
  recipe r;
  rl_err e = {0};
  loop_place p;
  /* a GPU the machine lacks: exit 3 naming the list and the count */
  const char *s1[] = {"gpus.rollout=[1]", "gpus.train=[0]"};
  REQUIRE(lg_recipe(s1, 2, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 1, &p, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "lg.yaml: gpus.rollout uses GPU 1, but this machine has 1 GPU; name a GPU it has");
  CHECK_EQ_I64(loop_gpu_place(&r, 0, &p, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "gpus.train uses GPU 0, but this machine has 0 GPUs");
  /* the runtime re-checks the transport even when the recipe was changed after validation */
  r.sync.transport = SYNC_DEVICE;
  CHECK_EQ_I64(loop_gpu_place(&r, 2, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "sync.transport device needs rollout and training on the same GPU (rollout 1, train 0)");
  r.gpus.rollout.items[0] = 0;
  r.sync.transport = SYNC_NCCL;
  CHECK_EQ_I64(loop_gpu_place(&r, 2, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "sync.transport nccl needs rollout and training on different GPUs (both are on GPU 0)");
  r.gpus.train.n = 0;
  CHECK_EQ_I64(loop_gpu_place(&r, 2, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "gpus.train is empty");
  recipe_free(&r);
  /* data parallelism: a train GPU the machine lacks (rank 2 of 3 on two GPUs) */
  const char *s2[] = {"gpus.rollout=[0]", "gpus.train=[0, 1, 2]"};
  REQUIRE(lg_recipe(s2, 2, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 2, &p, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "lg.yaml: gpus.train uses GPU 2, but this machine has 2 GPUs; name a GPU it has");
  /* the rollout on a rank other than 0 (the recipe changed after validation) */
  r.gpus.rollout.items[0] = 1;
  CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "the rollout GPU 1 is data-parallel rank 1 of gpus.train; a rollout GPU is gpus.train[0] (0");
  r.gpus.rollout.items[0] = 0;
  r.gpus.train.items[2] = 0;
  CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "gpus.train lists GPU 0 twice");
  recipe_free(&r);
  /* the rollout on data-parallel rank 1's GPU (the recipe changed after validation) */
  const char *s3[] = {"gpus.rollout=[0, 1]", "gpus.train=[0, 2]"};
  REQUIRE(lg_recipe(s3, 2, &r, &e) == 0);
  r.gpus.train.items[1] = 1;
  CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "the rollout GPU 1 is data-parallel rank 1 of gpus.train; a rollout GPU is gpus.train[0] (0, "
                        "colocated with rank 0) or a GPU outside gpus.train");
  /* a rollout GPU listed twice */
  r.gpus.train.items[1] = 2, r.gpus.rollout.items[1] = 0;
  CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "gpus.rollout lists GPU 0 twice");
  /* device transport with a rollout GPU apart */
  r.gpus.train.items[1] = 3, r.gpus.rollout.items[1] = 2, r.sync.transport = SYNC_DEVICE;
  CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "sync.transport device needs rollout and training on the same GPU (rollout 2, train 0)");
  recipe_free(&r);
  /* validation refuses the same at load time, and ignores the lists on the CPU */
  const char *s4[] = {"gpus.rollout=[0, 1]", "gpus.train=[0, 1]"};
  CHECK_EQ_I64(lg_recipe(s4, 2, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "--set gpus.rollout=[0, 1]: GPU 1 is data-parallel rank 1 of gpus.train; a rollout GPU is "
                        "gpus.train[0] (0, colocated with rank 0) or a GPU outside gpus.train");
  const char *s5[] = {"gpus.rollout=[0, 1]", "gpus.train=[0]", "sync.transport=device"};
  CHECK_EQ_I64(lg_recipe(s5, 3, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "--set sync.transport=device: device needs the rollout on the trainer's GPU alone "
                        "(gpus.rollout = [0], gpus.train[0])");
  const char *s6[] = {"gpus.rollout=[0, 3]", "gpus.train=[0]"};
  REQUIRE(lg_recipe(s6, 2, &r, &e) == 0);
  hw_target t;
  int emu = 0;
  REQUIRE(hw_target_named("h200:2", &t, &e) == 0);
  CHECK_EQ_I64(recipe_check_hardware(&r, &t, &emu, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "--set gpus.rollout=[0, 3]: uses GPU 3, but h200 has 2 GPUs");
  REQUIRE(hw_target_named("h200:4", &t, &e) == 0);
  CHECK_EQ_I64(recipe_check_hardware(&r, &t, &emu, &e), 0);
  REQUIRE(hw_target_named("cpu", &t, &e) == 0);
  CHECK_EQ_I64(recipe_check_hardware(&r, &t, &emu, &e), 0);
  recipe_free(&r);
}

/* The rollout split over several GPUs: the parts in list order, the train
 * GPU's part colocated, the others replicas fed over NCCL (auto or nccl). */
TEST(loop_gpu_place_rollout_split) {
  recipe r;
  rl_err e = {0};
  loop_place p;
  const char *s1[] = {"gpus.rollout=[1, 0, 3]", "gpus.train=[0]", "sync.transport=auto"};
  for (int explicit = 0; explicit < 2; explicit++) {
    if (explicit) s1[2] = "sync.transport=nccl";
    REQUIRE(lg_recipe(s1, 3, &r, &e) == 0);
    CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), 0);
    CHECK_EQ_I64(p.n_rollout, 3);
    CHECK_EQ_I64(p.rollout_gpus[0], 1);
    CHECK_EQ_I64(p.rollout_gpus[1], 0);
    CHECK_EQ_I64(p.rollout_gpus[2], 3);
    CHECK_EQ_I64(p.rollout_gpu, 1);
    CHECK_EQ_I64(p.train_gpu, 0);
    CHECK_EQ_I64(p.nccl, 1);
    recipe_free(&r);
  }
  /* with data parallelism: rank 0 and two GPUs outside gpus.train */
  const char *s2[] = {"gpus.rollout=[0, 2, 3]", "gpus.train=[0, 1]"};
  REQUIRE(lg_recipe(s2, 2, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), 0);
  CHECK_EQ_I64(p.dp, 2);
  CHECK_EQ_I64(p.n_rollout, 3);
  CHECK_EQ_I64(p.nccl, 1);
  recipe_free(&r);
  /* one rollout GPU, the train GPU: no split, no NCCL */
  REQUIRE(lg_recipe(NULL, 0, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 1, &p, &e), 0);
  CHECK_EQ_I64(p.n_rollout, 1);
  CHECK_EQ_I64(p.nccl, 0);
  recipe_free(&r);
  /* recipes/bf16-baseline-rollout2.yaml: exit 3 on one GPU, 0 on two; the plan says so */
  REQUIRE(recipe_load("recipes/bf16-baseline-rollout2.yaml", NULL, 0, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 2, &p, &e), 0);
  CHECK_EQ_I64(p.n_rollout, 2);
  CHECK_EQ_I64(p.nccl, 1);
  CHECK_EQ_I64(loop_gpu_place(&r, 1, &p, &e), RL_EXIT_HARDWARE);
  char *buf = NULL;
  lg_two_gpu_plan(&r, "gpus.rollout: uses GPU 1, but h200 has 1 GPU", &buf);
  REQUIRE(buf);
  CHECK_CONTAINS(buf, "split over 2 GPUs, a contiguous share of the prompts each (one engine's samples)");
  CHECK_CONTAINS(buf, "re-quantize bf16 master -> bf16 rollout weights, NCCL broadcast in buckets to every rollout "
                      "GPU apart");
  free(buf);
  recipe_free(&r);
}

/* Data parallelism: gpus.train lists the ranks (rank 0 first); the rollout
 * colocated with rank 0 or on a GPU of its own; validation on 4 GPUs. */
TEST(loop_gpu_place_data_parallel) {
  recipe r;
  rl_err e = {0};
  loop_place p;
  const char *s1[] = {"gpus.rollout=[2]", "gpus.train=[2, 0, 3]"};
  REQUIRE(lg_recipe(s1, 2, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), 0);
  CHECK_EQ_I64(p.dp, 3);
  CHECK_EQ_I64(p.train_gpu, 2);
  CHECK_EQ_I64(p.train_gpus[0], 2);
  CHECK_EQ_I64(p.train_gpus[1], 0);
  CHECK_EQ_I64(p.train_gpus[2], 3);
  CHECK_EQ_I64(p.rollout_gpu, 2);
  CHECK_EQ_I64(p.nccl, 0); /* colocated with rank 0 */
  hw_target t;
  int emu = 0;
  REQUIRE(hw_target_named("h200:4", &t, &e) == 0);
  CHECK_EQ_I64(recipe_check_hardware(&r, &t, &emu, &e), 0);
  REQUIRE(hw_target_named("h200:3", &t, &e) == 0);
  CHECK_EQ_I64(recipe_check_hardware(&r, &t, &emu, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "gpus.train=[2, 0, 3]: uses GPU 3, but h200 has 3 GPUs");
  recipe_free(&r);
  /* the rollout on a GPU outside gpus.train: an NCCL sync from rank 0 */
  const char *s2[] = {"gpus.rollout=[3]", "gpus.train=[0, 1]"};
  REQUIRE(lg_recipe(s2, 2, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 4, &p, &e), 0);
  CHECK_EQ_I64(p.dp, 2);
  CHECK_EQ_I64(p.train_gpu, 0);
  CHECK_EQ_I64(p.rollout_gpu, 3);
  CHECK_EQ_I64(p.nccl, 1);
  recipe_free(&r);
  /* the rollout on rank 1's GPU: refused at validation */
  const char *s3[] = {"gpus.rollout=[1]", "gpus.train=[0, 1]"};
  CHECK_EQ_I64(lg_recipe(s3, 2, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "--set gpus.rollout=[1]: GPU 1 is data-parallel rank 1 of gpus.train; a rollout GPU is "
                        "gpus.train[0]");
  /* one GPU: no data parallelism (dp 1), today's placement */
  REQUIRE(lg_recipe(NULL, 0, &r, &e) == 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 1, &p, &e), 0);
  CHECK_EQ_I64(p.dp, 1);
  recipe_free(&r);
}

/* recipes/bf16-baseline-dp2.yaml: ranks on GPUs 0 and 1, the rollout
 * colocated with rank 0; exit 3 on a one-GPU H200, 0 on two; the plan says so. */
TEST(loop_gpu_recipe_dp2) {
  recipe r;
  rl_err e = {0};
  REQUIRE(recipe_load("recipes/bf16-baseline-dp2.yaml", NULL, 0, &r, &e) == 0);
  CHECK_EQ_I64(r.gpus.train.n, 2);
  CHECK_EQ_I64(r.gpus.train.items[1], 1);
  CHECK_EQ_I64(r.gpus.rollout.n, 1);
  CHECK_EQ_I64(r.gpus.rollout.items[0], 0);
  CHECK_EQ_I64(r.train.microbatch, 128);
  loop_place p;
  CHECK_EQ_I64(loop_gpu_place(&r, 2, &p, &e), 0);
  CHECK_EQ_I64(p.dp, 2);
  CHECK_EQ_I64(p.nccl, 0);
  CHECK_EQ_I64(loop_gpu_place(&r, 1, &p, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "gpus.train uses GPU 1, but this machine has 1 GPU");
  char *buf = NULL;
  lg_two_gpu_plan(&r, "gpus.train: uses GPU 1, but h200 has 1 GPU", &buf);
  REQUIRE(buf);
  CHECK_CONTAINS(buf, "microbatches of 128, forward bf16, backward bf16, no TIS, data-parallel on 2 GPUs "
                      "(fixed-order gradient all-reduce)");
  CHECK_CONTAINS(buf, "re-quantize bf16 master -> bf16 rollout weights, device copy (colocated)");
  free(buf);
  recipe_free(&r);
}

/* Without a GPU, opening a GPU run's devices refuses cleanly, and freeing the
 * half-open state is safe (on a GPU machine this part is the GPU tests'). */
TEST(loop_gpu_open_without_gpu) {
  device_info d;
  device_query(&d);
  if (d.n_gpus > 0) return;
  recipe r;
  rl_err e = {0};
  REQUIRE(lg_recipe(NULL, 0, &r, &e) == 0);
  loop_gpu g;
  memset(&g, 0, sizeof g);
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  CHECK_EQ_I64(loop_gpu_open(&g, &r, NULL, &pol, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "gpus.train uses GPU 0, but this machine has 0 GPUs");
  CHECK(g.roll[0].replica == NULL && g.roll[0].eng == NULL && g.nccl == NULL);
  loop_gpu_free(&g);
  CHECK_EQ_I64(device_set_current(0, &e), RL_EXIT_HARDWARE);
  recipe_free(&r);
}

/* recipes/bf16-baseline-2gpu.yaml: trainer GPU 0, rollout GPU 1, NCCL sync in
 * the plan; exit 3 on a one-GPU H200, 0 on two. */
TEST(loop_gpu_recipe_2gpu) {
  recipe r;
  rl_err e = {0};
  REQUIRE(recipe_load("recipes/bf16-baseline-2gpu.yaml", NULL, 0, &r, &e) == 0);
  CHECK_EQ_I64(r.gpus.train.n, 1);
  CHECK_EQ_I64(r.gpus.train.items[0], 0);
  CHECK_EQ_I64(r.gpus.rollout.items[0], 1);
  CHECK_EQ_I64(r.sync.transport, SYNC_AUTO);
  CHECK_EQ_I64(r.device, DEVICE_CUDA);
  loop_place p;
  CHECK_EQ_I64(loop_gpu_place(&r, 2, &p, &e), 0);
  CHECK_EQ_I64(p.nccl, 1);
  char *buf = NULL;
  lg_two_gpu_plan(&r, "gpus.rollout: uses GPU 1, but h200 has 1 GPU", &buf);
  REQUIRE(buf);
  CHECK_CONTAINS(buf, "re-quantize bf16 master -> bf16 rollout weights, NCCL broadcast in buckets");
  free(buf);
  recipe_free(&r);
  /* the command line: validate on a named one-GPU target exits 3 and says why */
  char cmd[512];
  snprintf(cmd, sizeof cmd, "%s validate recipes/bf16-baseline-2gpu.yaml --hardware h200:1", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 3);
  CHECK_CONTAINS(out, "recipes/bf16-baseline-2gpu.yaml:11:12: gpus.rollout: uses GPU 1, but h200 has 1 GPU");
  snprintf(cmd, sizeof cmd, "%s validate recipes/bf16-baseline-2gpu.yaml --hardware h200:2", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
}
