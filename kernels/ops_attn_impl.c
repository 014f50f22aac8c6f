/* ops_attn_impl.c — the runtime switch between the CUDA attention kernels
 * (FP32 SIMT in ops_attn_cuda.cu, BF16 tensor cores in ops_attn_tc_cuda.cu),
 * see ops_attention_set_impl in ops.h; and, in a build without CUDA, the
 * stubs of the tensor-core entry points. */
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"

/* The switch: what ops_attention_set_impl asked for (DEFAULT = not set). */
static struct {
  ops_attn_impl set;
} attn_impl = {OPS_ATTN_DEFAULT};

/* Choose the kernels for every later attention call (OPS_ATTN_DEFAULT goes
 * back to RLRUN_ATTN / the built-in default). Call it before launching work. */
void ops_attention_set_impl(ops_attn_impl impl) { attn_impl.set = impl; }

/* The kernels an attention call of head_dim runs: the set impl, else
 * RLRUN_ATTN=simt|tc, else OPS_ATTN_DEFAULT_IMPL. Both have kernels for
 * head_dim 64 and 128 only (other sizes are refused by the caller). */
int ops_attention_choose(int head_dim, ops_attn_impl *impl, rl_err *e) {
  (void)head_dim;
  ops_attn_impl r = attn_impl.set;
  if (r == OPS_ATTN_DEFAULT) {
    const char *env = getenv("RLRUN_ATTN");
    if (!env || !*env) r = OPS_ATTN_DEFAULT_IMPL;
    else if (!strcmp(env, "simt")) r = OPS_ATTN_SIMT;
    else if (!strcmp(env, "tc")) r = OPS_ATTN_TC;
    else
      return rl_errf(e, RL_EXIT_USAGE,
                     "RLRUN_ATTN=%s: unknown attention kernels; use simt (FP32) or tc (BF16 tensor "
                     "cores), or unset it for the default",
                     env);
  }
  if (r != OPS_ATTN_SIMT && r != OPS_ATTN_TC)
    return rl_errf(e, RL_EXIT_USAGE, "attention: unknown kernel choice %d (ops_attention_set_impl)", (int)r);
  *impl = r;
  return 0;
}

#if !RLRUN_CUDA

/* Stubs: this build has no CUDA kernels. */
int ops_attention_forward_tc_cuda(float *out, uint16_t *out_bf16, float *lse, const float *q,
                                  const float *k, const float *v, const ops_seqs *seqs, int max_len,
                                  ops_attn_shape sh, void *stream, rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "%s: this build of rlrun has no CUDA support; rebuild with the CUDA toolkit, or "
                 "use device: cpu",
                 __func__);
}

int ops_attention_backward_tc_cuda(float *dq, float *dk, float *dv, const float *dout,
                                   const float *out, const float *lse, const float *q,
                                   const float *k, const float *v, const ops_seqs *seqs,
                                   int max_len, ops_attn_shape sh, void *stream, rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "%s: this build of rlrun has no CUDA support; rebuild with the CUDA toolkit, or "
                 "use device: cpu",
                 __func__);
}

int ops_attention_decode_tc_cuda(float *out, uint16_t *out_bf16, const float *q, const uint16_t *qb, float qscale,
                                 const uint16_t *kc, const uint16_t *vc, const int32_t *slot, const int32_t *len,
                                 int n, int n_q_heads, int n_kv_heads, int hd, int dp, int64_t max_len, void *stream,
                                 rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "%s: this build of rlrun has no CUDA support; rebuild with the CUDA toolkit, or "
                 "use device: cpu",
                 __func__);
}

#endif
