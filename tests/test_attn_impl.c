/* test_attn_impl.c — the switch between the CUDA attention kernels (FP32 SIMT
 * and BF16 tensor cores, ops_attention_set_impl / RLRUN_ATTN): which one a
 * call picks, and the refusal of an unknown RLRUN_ATTN value before any CUDA
 * call. The kernels themselves are checked on the GPU (tests/gpu/ops_gpu_test.c). */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/ops.h"

TEST(attn_impl_switch_and_env) {
  rl_err e = {0};
  ops_attn_impl impl = OPS_ATTN_DEFAULT;
  const char *old = getenv("RLRUN_ATTN");
  char *saved = old ? strdup(old) : NULL;

  unsetenv("RLRUN_ATTN");
  ops_attention_set_impl(OPS_ATTN_DEFAULT);
  CHECK_EQ_I64(ops_attention_choose(128, &impl, &e), 0);
  CHECK_EQ_I64(impl, OPS_ATTN_DEFAULT_IMPL);
  setenv("RLRUN_ATTN", "tc", 1);
  CHECK_EQ_I64(ops_attention_choose(64, &impl, &e), 0);
  CHECK_EQ_I64(impl, OPS_ATTN_TC);
  setenv("RLRUN_ATTN", "simt", 1);
  CHECK_EQ_I64(ops_attention_choose(128, &impl, &e), 0);
  CHECK_EQ_I64(impl, OPS_ATTN_SIMT);
  /* an explicit choice wins over the environment */
  ops_attention_set_impl(OPS_ATTN_TC);
  CHECK_EQ_I64(ops_attention_choose(128, &impl, &e), 0);
  CHECK_EQ_I64(impl, OPS_ATTN_TC);
  ops_attention_set_impl(OPS_ATTN_SIMT);
  setenv("RLRUN_ATTN", "tc", 1);
  CHECK_EQ_I64(ops_attention_choose(128, &impl, &e), 0);
  CHECK_EQ_I64(impl, OPS_ATTN_SIMT);
  CHECK_EQ_I64(ops_attention_choose(128, &impl, &e), 0);
  ops_attention_set_impl((ops_attn_impl)7);
  CHECK_EQ_I64(ops_attention_choose(128, &impl, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "unknown kernel choice 7");

  /* a typo in the environment is refused, naming the value and the choices */
  ops_attention_set_impl(OPS_ATTN_DEFAULT);
  setenv("RLRUN_ATTN", "tensorcore", 1);
  impl = OPS_ATTN_DEFAULT;
  CHECK_EQ_I64(ops_attention_choose(128, &impl, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "RLRUN_ATTN=tensorcore: unknown attention kernels; use simt");
  CHECK_EQ_I64(impl, OPS_ATTN_DEFAULT);
  int32_t off[2] = {0, 4};
  ops_seqs s = {1, off};
  ops_attn_shape sh = {4, 2, 1, 128};
#if RLRUN_CUDA
  /* the attention calls report it too, before touching the device */
  CHECK_EQ_I64(ops_attention_forward_cuda(NULL, NULL, NULL, NULL, NULL, NULL, &s, 4, sh, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "RLRUN_ATTN=tensorcore");
  CHECK_EQ_I64(ops_attention_backward_cuda(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &s, 4, sh, NULL, &e),
               RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "RLRUN_ATTN=tensorcore");
#else
  CHECK_EQ_I64(ops_attention_forward_tc_cuda(NULL, NULL, NULL, NULL, NULL, NULL, &s, 4, sh, NULL, &e),
               RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "ops_attention_forward_tc_cuda: this build of rlrun has no CUDA support");
  CHECK_EQ_I64(ops_attention_backward_tc_cuda(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &s, 4, sh, NULL,
                                              &e),
               RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "ops_attention_backward_tc_cuda: this build of rlrun has no CUDA support");
#endif

  if (saved) setenv("RLRUN_ATTN", saved, 1);
  else unsetenv("RLRUN_ATTN");
  free(saved);
  ops_attention_set_impl(OPS_ATTN_DEFAULT);
}
