/* test_ops_cuda.c — what CI can check of the CUDA operators without a GPU:
 * a build without CUDA answers every `_cuda` call with RL_EXIT_HARDWARE and a
 * message saying why; a CUDA build refuses bad arguments on the host (before
 * any CUDA call) with the right code. The numerics are checked against the
 * CPU reference on the GPU machine (tests/gpu/ops_gpu_test.c). */
#include <string.h>

#include "harness.h"
#include "kernels/ops.h"

TEST(ops_cuda_host_side_refusals) {
  rl_err e = {0};
  int32_t off[2] = {0, 4};
  ops_seqs s = {1, off};
  ops_attn_shape bad_dim = {4, 2, 1, 96}, bad_gqa = {4, 3, 2, 128};
#if RLRUN_CUDA
  CHECK_EQ_I64(ops_attention_forward_cuda(NULL, NULL, NULL, NULL, NULL, NULL, &s, 4, bad_dim, NULL, &e),
               RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "head_dim 96 is not supported by the CUDA attention (64 or 128)");
  CHECK_EQ_I64(ops_attention_backward_cuda(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &s, 4, bad_gqa,
                                           NULL, &e),
               RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "3 query heads cannot share 2 key/value heads");
  CHECK_EQ_I64(ops_router_forward_cuda(NULL, NULL, NULL, NULL, 4, 128, 65, 1, OPS_ROUTE_TOPK, NULL, &e),
               RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "top-k 65");
  CHECK_EQ_I64(ops_logprob_forward_cuda(NULL, NULL, NULL, NULL, NULL, 4, 10, 0.0f, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "temperature 0 must be");
  CHECK_EQ_I64(ops_qk_norm_rope_forward_cuda(NULL, NULL, NULL, NULL, NULL, 4, 2, 7, 1e-6f, 1e6f, NULL, &e),
               RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "head_dim 7 must be even");
  /* empty work enqueues nothing and succeeds */
  CHECK_EQ_I64(ops_rmsnorm_forward_cuda(NULL, NULL, NULL, NULL, NULL, 0, 1024, 1e-6f, NULL, &e), 0);
  CHECK_EQ_I64(ops_swiglu_forward_cuda(NULL, NULL, NULL, NULL, 0, 3072, 6144, NULL, &e), 0);
#else
  CHECK_EQ_I64(ops_attention_forward_cuda(NULL, NULL, NULL, NULL, NULL, NULL, &s, 4, bad_dim, NULL, &e),
               RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "ops_attention_forward_cuda: this build of rlrun has no CUDA support");
  (void)bad_gqa;
  CHECK_EQ_I64(ops_rmsnorm_forward_cuda(NULL, NULL, NULL, NULL, NULL, 0, 1024, 1e-6f, NULL, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "use device: cpu");
  CHECK_EQ_I64(ops_logprob_backward_cuda(NULL, NULL, NULL, NULL, NULL, NULL, 1, 1, 1.0f, NULL, &e),
               RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "ops_logprob_backward_cuda");
#endif
}
