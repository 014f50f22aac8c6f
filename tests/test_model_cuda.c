/* test_model_cuda.c — what CI can check of the CUDA model (model_cuda.h)
 * without a GPU: every entry point refuses cleanly (RL_EXIT_HARDWARE with a
 * message, or RL_EXIT_USAGE for a misuse), model_free works with and without
 * device copies, and `rlrun score --device cuda` exits 3 saying what to do.
 * The numerics are checked on the GPU by tests/gpu/model_gpu_test.c. */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"
#include "model/model_cuda.h"

#define FXR "tests/fixtures/model"

TEST(model_cuda_refuses_cleanly_without_a_gpu) {
  rl_err e = {0};
  model *m = NULL;
  REQUIRE(model_load(FXR "/qwen3/hf", NULL, &m, &e) == 0);
  int rc = model_cuda_init(m, &e);
  if (rc == 0) { /* a GPU is there: the device copies exist and are freed by model_free */
    CHECK(m->cu != NULL && model_cuda_param_at(m, 0) != NULL);
    model_free(m);
    return;
  }
  CHECK_EQ_I64(rc, RL_EXIT_HARDWARE);
  CHECK(strlen(e.msg) > 10);
  CHECK_CONTAINS(e.msg, "model_cuda_init");
  CHECK(m->cu == NULL && model_cuda_param_at(m, 0) == NULL);
  /* the other entry points do not touch a model without device copies */
  quant_policy p;
  quant_policy_init(&p, QFMT_BF16, QFMT_BF16);
  rl_err e2 = {0};
  int rq = model_cuda_quantize(m, &p, &e2);
  CHECK(rq == RL_EXIT_USAGE || rq == RL_EXIT_HARDWARE);
  CHECK(e2.msg[0] != 0);
  int32_t tok[3] = {1, 2, 3}, off[2] = {0, 3};
  model_batch b = {3, tok, {1, off}};
  model_cuda_acts *a = model_cuda_acts_new();
  rl_err e3 = {0};
  int rf = model_cuda_forward(m, &b, NULL, a, &e3);
  CHECK(rf == RL_EXIT_USAGE || rf == RL_EXIT_HARDWARE);
  CHECK(e3.msg[0] != 0);
  model_cuda_acts_free(a);
  /* the CPU model is unaffected */
  model_acts *ca = model_acts_new();
  rl_err e4 = {0};
  CHECK_EQ_I64(model_forward(m, &b, NULL, ca, &e4), 0);
  model_acts_free(ca);
  model_free(m);
}

TEST(model_score_device_cuda_without_gpu_exits_3) {
  char text[4096], cmd[1024], in[512];
  const char *dir = harness_tmpdir();
  snprintf(in, sizeof in, "%s/in.jsonl", dir);
  harness_write_file(in, "{\"tokens\": [1, 2, 3]}\n");
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/o.jsonl --device cuda",
           harness_bin(), in, dir);
  int rc = harness_run(cmd, text, sizeof text);
  if (rc == 0) return; /* a GPU machine: the GPU test compares the output */
  CHECK_EQ_I64(rc, 3);
  CHECK_CONTAINS(text, "--device cpu");
  /* one piece of advice, for the option (not the recipe key "device: cpu") */
  CHECK(strstr(text, "use device: cpu") == NULL);
  const char *adv = strstr(text, "use --device cpu");
  CHECK(adv && !strstr(adv + 1, "use --device cpu"));
#if !RLRUN_CUDA
  CHECK_STREQ(text, "rlrun score: --device cuda: no usable GPU (this binary was built without CUDA); use --device cpu\n");
#endif
  /* fp32 is a CPU-only mode: refused as bad input */
  snprintf(cmd, sizeof cmd, "%s score --model " FXR "/qwen3/hf --input %s --out %s/o.jsonl --device cuda --precision fp32",
           harness_bin(), in, dir);
  rc = harness_run(cmd, text, sizeof text);
  CHECK(rc == 2 || rc == 3);
  CHECK(strstr(text, "CPU only") != NULL || strstr(text, "without CUDA") != NULL);
}
