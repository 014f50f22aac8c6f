/* ops_nocuda.c — the `_cuda` operators of ops.h in a build without CUDA:
 * each says so (RL_EXIT_HARDWARE) instead of leaving the symbol undefined, so
 * the model code links either way and picks the device at run time. */
#include "kernels/ops.h"

#if !RLRUN_CUDA

/* The one message of every stub. */
static int no_cuda(const char *fn, rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "%s: this build of rlrun has no CUDA support (nvcc was not found when it was "
                 "built); rebuild on a machine with the CUDA toolkit, or use device: cpu",
                 fn);
}

int ops_ids_check_cuda(const int32_t *ids, int64_t n, int32_t lo, int32_t hi, const char *what, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_seqs_check_cuda(const ops_seqs *seqs, int T, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_seqs_positions_cuda(const ops_seqs *seqs, int T, int32_t *pos, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_bf16_from_f32_cuda(uint16_t *dst, const float *src, size_t n, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_f32_from_bf16_cuda(float *dst, const uint16_t *src, size_t n, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_bf16_round_cuda(float *x, size_t n, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_embedding_forward_cuda(float *out, const float *table, const int32_t *tokens, int T, int V, int H, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_embedding_forward_bf16_cuda(float *out, const uint16_t *table, const int32_t *tokens, int T, int V, int H, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_embedding_backward_cuda(float *dtable, const float *dout, const int32_t *tokens, int T, int V, int H, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_rmsnorm_forward_cuda(float *y, uint16_t *y_bf16, float *rstd, const float *x, const float *w, int rows, int dim, float eps, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_residual_rmsnorm_forward_cuda(float *h, float *y, uint16_t *y_bf16, float *rstd, const float *resid, const float *x, const float *w, int rows, int dim, float eps, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_rmsnorm_backward_cuda(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd, int rows, int dim, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_residual_rmsnorm_backward_cuda(float *dresid, float *dw, const float *dy, const float *h, const float *w, const float *rstd, int rows, int dim, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_rope_forward_cuda(float *x, const int32_t *pos, int T, int n_heads, int head_dim, float theta, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_rope_backward_cuda(float *dx, const int32_t *pos, int T, int n_heads, int head_dim, float theta, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_qk_norm_rope_forward_cuda(float *y, float *rstd, const float *x, const float *w, const int32_t *pos, int T, int n_heads, int head_dim, float eps, float theta, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_rope_table_cuda(float *cs, float *sn, const int32_t *pos, int T, int head_dim, float theta, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_qk_norm_rope_forward_tab_cuda(float *y, float *rstd, const float *x, const float *w, const float *cs, const float *sn, int T, int n_heads, int head_dim, float eps, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_qk_norm_rope_backward_cuda(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd, const int32_t *pos, int T, int n_heads, int head_dim, float theta, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_attention_forward_cuda(float *out, uint16_t *out_bf16, float *lse, const float *q, const float *k, const float *v, const ops_seqs *seqs, int max_len, ops_attn_shape sh, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_attention_backward_cuda(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q, const float *k, const float *v, const ops_seqs *seqs, int max_len, ops_attn_shape sh, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_swiglu_forward_cuda(float *out, uint16_t *out_bf16, const float *gate, const float *up, int T, int I, int ld, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_swiglu_backward_cuda(float *dgate, float *dup, const float *dout, const float *gate, const float *up, int T, int I, int ld, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_residual_rmsnorm_forward_bx_cuda(float *h, float *y, uint16_t *y_bf16, float *rstd, const float *resid, const uint16_t *x, const float *w, int rows, int dim, float eps, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_rmsnorm_forward_q8_cuda(float *h, uint16_t *y_bf16, float *rstd, const float *resid, const float *x, const uint16_t *x_bf16, const float *w, int rows, int dim, float eps, const ops_fp8_act *qa, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_swiglu_forward_q8_bx_cuda(uint16_t *out_bf16, const uint16_t *gate, const uint16_t *up, int T, int I, int ld, const ops_fp8_act *qa, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_residual_rmsnorm_backward_bx_cuda(float *dresid, uint16_t *dresid_bf16, float *dw, const float *dy, const uint16_t *const *dy_bf16, int n_dy_bf16, const float *h, const float *w, const float *rstd, int rows, int dim, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_qk_norm_rope_forward_bx_cuda(float *y, uint16_t *y_bf16, float *rstd, const uint16_t *x, const float *w, const int32_t *pos, int T, int n_heads, int head_dim, float eps, float theta, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_qk_norm_rope_forward2_bx_cuda(float *yq, uint16_t *yq_b, float *rq, const uint16_t *xq, const float *wq, int nq, float *yk, uint16_t *yk_b, float *rk, const uint16_t *xk, const float *wk, int nk, const int32_t *pos, int T, int head_dim, float eps, float theta, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_qk_norm_rope_backward_bx_cuda(uint16_t *dx, float *dw, const float *dy, const uint16_t *x, const float *w, const float *rstd, const int32_t *pos, int T, int n_heads, int head_dim, float theta, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_swiglu_forward_bx_cuda(float *out, uint16_t *out_bf16, const uint16_t *gate, const uint16_t *up, int T, int I, int ld, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_swiglu_backward_bx_cuda(uint16_t *dgate, uint16_t *dup, const uint16_t *dout, const uint16_t *gate, const uint16_t *up, int T, int I, int ld, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_attention_forward_bx_cuda(float *out, uint16_t *out_bf16, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v, const ops_seqs *seqs, int max_len, ops_attn_shape sh, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_attention_backward_bx_cuda(float *dq, float *dk, float *dv, const uint16_t *dout, const float *out, const float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v, const ops_seqs *seqs, int max_len, ops_attn_shape sh, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_logprob_forward_bx_cuda(float *logp, float *entropy, float *lse, const uint16_t *logits, const int32_t *targets, int T, int V, float temp, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}
int ops_logprob_backward_bx_cuda(uint16_t *dlogits, const float *dlogp, const float *dentropy, const uint16_t *logits, const float *lse, const int32_t *targets, int T, int V, float temp, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_router_forward_cuda(int32_t *ids, float *weights, float *probs, const float *logits, int T, int E, int k, int norm_topk_prob, ops_route_mode mode, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_router_backward_cuda(float *dlogits, const float *dweights, const float *probs, const int32_t *ids, int T, int E, int k, int norm_topk_prob, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_router_check_ids_cuda(const int32_t *ids, int T, int E, int k, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_router_overlap_cuda(double *overlap, const float *probs, const int32_t *ids, int T, int E, int k, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_logprob_forward_cuda(float *logp, float *entropy, float *lse, const float *logits, const int32_t *targets, int T, int V, float temp, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

int ops_logprob_backward_cuda(float *dlogits, const float *dlogp, const float *dentropy, const float *logits, const float *lse, const int32_t *targets, int T, int V, float temp, void *stream, rl_err *e) {
  return no_cuda(__func__, e);
}

#else
typedef int ops_nocuda_unused; /* the CUDA build has the real ones */
#endif
