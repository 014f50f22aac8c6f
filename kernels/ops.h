/* ops.h — the non-GEMM operators of the transformer (Qwen3 dense and MoE),
 * forward and backward: embedding, RMSNorm (+ fused residual add), per-head
 * QK-norm, RoPE, causal grouped-query attention, SwiGLU, the MoE router
 * (top-k and R3 replay), and the final log-softmax + gather + entropy.
 *
 * `_cpu` is the reference (ops_cpu.c): plain C, OpenMP over independent rows,
 * and deterministic — every reduction runs in a fixed order that does not
 * depend on the thread count (sums over tokens are owned by one thread per
 * output element; no atomics). The CUDA twins (declared at the end of this
 * file) are checked against it by tests/gpu/ops_gpu_test.c.
 *
 * Conventions
 *   - Activations are row-major FP32 on the CPU: a [T, H] tensor is T rows of H.
 *     Reductions that matter (norm variance, softmax sums, attention dot
 *     products, logsumexp, weight-gradient sums over tokens) accumulate in FP64.
 *   - BF16 storage: the model keeps BF16 where a linear layer reads (the input
 *     of every linear_forward is a BF16 matrix) and for the embedding table.
 *     So the ops whose output feeds a linear layer — rmsnorm, residual+rmsnorm,
 *     attention (→ o_proj), swiglu (→ down_proj) — take an optional `y_bf16`
 *     that receives fmt_bf16_from_f32 (RNE) of the FP32 result in the same
 *     pass, and the embedding lookup reads a BF16 table directly
 *     (ops_embedding_forward_bf16_cpu). Gradients stay FP32.
 *   - Packed variable-length batches (shared by rollout prefill and the
 *     trainer): n_seq sequences laid end to end, T tokens in all, described by
 *     offsets off[0] = 0 ≤ off[1] ≤ … ≤ off[n_seq] = T (flash-attn's
 *     cu_seqlens). Attention is causal inside each sequence and never crosses
 *     one; RoPE takes a position per token (ops_seqs_positions gives
 *     t − off[s], the usual choice).
 *   - Gradient buffers: activation gradients are WRITTEN (=), parameter
 *     gradients (dtable, dw) are ACCUMULATED (+=, so micro-batches add up).
 *     The one exception is the residual stream: ops_residual_rmsnorm_backward_cpu
 *     adds into the residual gradient (that is what the residual add means).
 *   - Functions that can meet bad input (token ids, offsets, expert ids) return
 *     0 or an rl_exit code with the message in *e; shape arguments are trusted.
 */
#ifndef RLRUN_OPS_H
#define RLRUN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- batches */

/* A packed batch: off has n_seq + 1 entries; sequence s is tokens
 * [off[s], off[s+1]). */
typedef struct ops_seqs {
  int n_seq;
  const int32_t *off;
} ops_seqs;

/* Check that seqs describes exactly T tokens (off[0] = 0, non-decreasing,
 * off[n_seq] = T). */
int ops_seqs_check(const ops_seqs *seqs, int T, rl_err *e);

/* pos[t] = t − off[s] for the sequence s holding token t. */
void ops_seqs_positions(const ops_seqs *seqs, int32_t *pos);

/* ---------------------------------------------------------------- BF16 */

/* dst[i] = BF16 (RNE, fmt_bf16_from_f32) of src[i]. */
void ops_bf16_from_f32_cpu(uint16_t *dst, const float *src, size_t n);
/* dst[i] = FP32 value of the BF16 src[i] (exact). */
void ops_f32_from_bf16_cpu(float *dst, const uint16_t *src, size_t n);
/* Round x to BF16-representable FP32 values in place (RNE): emulates BF16
 * storage of an FP32 activation. */
void ops_bf16_round_cpu(float *x, size_t n);

/* ---------------------------------------------------------------- embedding */

/* out[t, :] = table[tokens[t], :] (table [V, H]). A token outside [0, V) is an
 * error (RL_EXIT_USAGE) naming the position. */
int ops_embedding_forward_cpu(float *out, const float *table, const int32_t *tokens, int T,
                              int V, int H, rl_err *e);
/* The same from a BF16 table (the master weights' storage). */
int ops_embedding_forward_bf16_cpu(float *out, const uint16_t *table, const int32_t *tokens,
                                   int T, int V, int H, rl_err *e);
/* dtable[tokens[t], :] += dout[t, :], a scatter-add in token order (each
 * column owned by one thread, tokens summed t = 0..T−1 in FP32: the same
 * result for any thread count). */
int ops_embedding_backward_cpu(float *dtable, const float *dout, const int32_t *tokens, int T,
                               int V, int H, rl_err *e);

/* ---------------------------------------------------------------- RMSNorm */

/* Qwen3 RMSNorm over rows of length dim:
 *   rstd[r] = 1 / sqrt(mean_i x[r,i]² + eps),  y[r,i] = w[i] · (x[r,i] · rstd[r])
 * (the weight multiplies the normalised value; no +1 offset). y and/or y_bf16
 * may be NULL; rstd (FP32, [rows]) is saved for the backward. The per-head QK
 * norm is this with rows = T·n_heads and dim = head_dim (see ops_qk_norm_rope_*). */
void ops_rmsnorm_forward_cpu(float *y, uint16_t *y_bf16, float *rstd, const float *x,
                             const float *w, int rows, int dim, float eps);
/* Fused residual add + RMSNorm: h = resid + x (h may alias resid or x), then
 * y = rmsnorm(h) as above. h is the new residual stream. */
void ops_residual_rmsnorm_forward_cpu(float *h, float *y, uint16_t *y_bf16, float *rstd,
                                      const float *resid, const float *x, const float *w, int rows,
                                      int dim, float eps);
/* Backward of ops_rmsnorm_forward_cpu at input x:
 *   dx[r,i]  = rstd·w[i]·dy[r,i] − x[r,i]·rstd³/dim · Σ_j w[j]·dy[r,j]·x[r,j]   (written)
 *   dw[i]   += Σ_r dy[r,i]·x[r,i]·rstd[r]                                        (accumulated)
 * dw may be NULL (no weight gradient). */
void ops_rmsnorm_backward_cpu(float *dx, float *dw, const float *dy, const float *x, const float *w,
                              const float *rstd, int rows, int dim);
/* Backward of the fused residual variant (x here is the h it produced):
 * dresid += rmsnorm_backward(dy) — dresid holds the gradient of the residual
 * stream after the add, and afterwards the gradient of both addends. */
void ops_residual_rmsnorm_backward_cpu(float *dresid, float *dw, const float *dy, const float *h,
                                       const float *w, const float *rstd, int rows, int dim);

/* ---------------------------------------------------------------- RoPE */

/* The inverse frequencies of RoPE as transformers computes them (FP32):
 * inv[i] = 1 / (theta ^ ((float)(2i) / head_dim)), i < head_dim/2. */
void ops_rope_inv_freq(float *inv, int head_dim, float theta);
/* cos/sin [T, head_dim/2] of angle (float)(inv[i] · (float)pos[t]) (the FP32
 * product, as transformers forms it), each correctly rounded from double. */
void ops_rope_table_cpu(float *cos_t, float *sin_t, const int32_t *pos, int T, int head_dim,
                        float theta);
/* RoPE in place on x [T, n_heads, head_dim], HF rotate_half convention: the
 * pair (i, i + d/2) rotates by the angle of frequency i:
 *   x'[i] = x[i]·c − x[i+d/2]·s,   x'[i+d/2] = x[i+d/2]·c + x[i]·s. */
void ops_rope_forward_cpu(float *x, const int32_t *pos, int T, int n_heads, int head_dim,
                          float theta);
/* Backward (in place on the gradient): the transposed rotation. */
void ops_rope_backward_cpu(float *dx, const int32_t *pos, int T, int n_heads, int head_dim,
                           float theta);
/* Qwen3's q/k path in one call: y = rope(rmsnorm_head(x)) on x [T, n_heads,
 * head_dim] with the head_dim weight w; rstd [T·n_heads] saved. y must not
 * alias x: the backward needs x. */
void ops_qk_norm_rope_forward_cpu(float *y, float *rstd, const float *x, const float *w,
                                  const int32_t *pos, int T, int n_heads, int head_dim, float eps,
                                  float theta);
/* Its backward: dx written, dw accumulated. dy is left unchanged. */
void ops_qk_norm_rope_backward_cpu(float *dx, float *dw, const float *dy, const float *x,
                                   const float *w, const float *rstd, const int32_t *pos, int T,
                                   int n_heads, int head_dim, float theta);

/* ---------------------------------------------------------------- attention */

/* Shape of a grouped-query attention call: q [T, n_q_heads, head_dim],
 * k and v [T, n_kv_heads, head_dim]; q head h reads kv head
 * h / (n_q_heads / n_kv_heads). */
typedef struct ops_attn_shape {
  int T, n_q_heads, n_kv_heads, head_dim;
} ops_attn_shape;

/* Causal GQA for training and prefill over a packed batch:
 *   o[i,h] = Σ_{j ≤ i, same sequence} softmax_j(q[i,h]·k[j,g] / sqrt(head_dim)) v[j,g]
 * Softmax max-subtracted, in FP64. out [T, n_q_heads, head_dim] (and/or its
 * BF16 copy; either may be NULL), lse [T, n_q_heads] = the row's logsumexp of
 * scaled scores (saved for the backward). The reference never stores more
 * than one score row per thread. Errors: bad offsets, n_q_heads not a multiple
 * of n_kv_heads. */
int ops_attention_forward_cpu(float *out, uint16_t *out_bf16, float *lse, const float *q,
                              const float *k, const float *v, const ops_seqs *seqs,
                              ops_attn_shape sh, rl_err *e);
/* Backward: dq, dk, dv (written) from dout, the forward's out and lse.
 * dQ rows are independent; dK/dV of key j sum over the query heads of its
 * group and over queries i ≥ j in a fixed order (one thread per key row). */
int ops_attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q, const float *k,
                               const float *v, const ops_seqs *seqs, ops_attn_shape sh, rl_err *e);

/* ---------------------------------------------------------------- SwiGLU */

/* out[t,i] = silu(gate[t,i]) · up[t,i], silu(g) = g / (1 + e^−g). gate and up
 * have row stride ld (ld = I for separate [T, I] tensors; gate = gu, up =
 * gu + I, ld = 2I for one fused [T, 2I] gate_up product). out is [T, I]
 * contiguous; out and/or out_bf16 may be NULL. */
void ops_swiglu_forward_cpu(float *out, uint16_t *out_bf16, const float *gate, const float *up,
                            int T, int I, int ld);
/* dgate = dout·up·silu'(gate), dup = dout·silu(gate) (written, row stride ld;
 * they may alias gate and up). */
void ops_swiglu_backward_cpu(float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, int T, int I, int ld);

/* ---------------------------------------------------------------- MoE router */

typedef enum ops_route_mode {
  OPS_ROUTE_TOPK = 0,  /* choose the top-k experts (ids are written) */
  OPS_ROUTE_REPLAY = 1 /* R3: use the given ids (ids are read) */
} ops_route_mode;

/* Router of Qwen3-MoE on logits [T, E] (FP32):
 *   probs = softmax(logits) (FP64 sums, stored FP32 [T, E], saved for backward)
 *   TOPK:   ids[t, 0..k) = the k largest probs, in descending order; ties go
 *           to the lower expert index.
 *   REPLAY: ids given (each in [0, E), distinct within a token; else an error
 *           RL_EXIT_USAGE naming token and slot).
 *   weights[t, j] = probs[t, ids[t,j]], divided by Σ_j probs[t, ids[t,j]] when
 *   norm_topk_prob. */
int ops_router_forward_cpu(int32_t *ids, float *weights, float *probs, const float *logits, int T,
                           int E, int k, int norm_topk_prob, ops_route_mode mode, rl_err *e);
/* Gradient into the router logits (written, [T, E]) from dweights [T, k], for
 * both modes (the selection itself carries no gradient):
 *   norm:    dp[ids_j] = (dw_j − Σ_m dw_m·w_m) / S,  S = Σ_m p[ids_m]
 *   no norm: dp[ids_j] = dw_j
 *   dlogits = p ⊙ (dp − Σ_e p_e·dp_e). */
void ops_router_backward_cpu(float *dlogits, const float *dweights, const float *probs,
                             const int32_t *ids, int T, int E, int k, int norm_topk_prob);
/* R3 metric r3/overlap: the fraction of the T·k replayed ids that the router's
 * own top-k (from probs) would also have chosen. */
double ops_router_overlap_cpu(const float *probs, const int32_t *ids, int T, int E, int k);

/* ---------------------------------------------------------------- log-probs */

/* Per token t of logits [T, V] at temperature temp (> 0), z = logits / temp:
 *   lse[t]     = logsumexp(z[t, :])                       (saved for backward)
 *   logp[t]    = z[t, targets[t]] − lse[t]   (0 where targets[t] < 0: no target)
 *   entropy[t] = lse[t] − Σ_v softmax(z)_v · z_v
 * logp, entropy and targets may be NULL (no targets: logp is not written). A
 * target ≥ V is an error (RL_EXIT_USAGE). The mean cross-entropy of SFT is
 * −mean(logp) over the tokens with a target. */
int ops_logprob_forward_cpu(float *logp, float *entropy, float *lse, const float *logits,
                            const int32_t *targets, int T, int V, float temp, rl_err *e);
/* Backward with an upstream gradient per token: dlogits[t, v] (written) =
 *   dlogp[t]    · (onehot(target)_v − p_v) / temp
 * + dentropy[t] · (−p_v · (log p_v + entropy_t)) / temp
 * dlogp and/or dentropy may be NULL (no gradient from that output). dlogits
 * may alias logits (the row is read before it is overwritten). */
int ops_logprob_backward_cpu(float *dlogits, const float *dlogp, const float *dentropy,
                             const float *logits, const float *lse, const int32_t *targets, int T,
                             int V, float temp, rl_err *e);

/* ================================================================ CUDA twins
 * (ops_cuda.cu, ops_norm_cuda.cu, ops_attn_cuda.cu, ops_attn_tc_cuda.cu, ops_router_cuda.cu;
 * kernels/ops_nocuda.c in a build without CUDA)
 *
 * The `_cuda` twin of each operator above: the same arguments, every tensor a
 * DEVICE pointer, plus the stream (a cudaStream_t passed as void *, NULL = the
 * default stream) and an rl_err. They enqueue work and return at once (no host
 * round trip) unless said otherwise, and return 0, RL_EXIT_USAGE for what they
 * can check on the host (shapes, pointer alignment), or RL_EXIT_HARDWARE when
 * a CUDA call or launch fails, the build has no CUDA, or a shape is valid but
 * has no kernel (attention head_dim other than 64 or 128).
 *
 * Data-dependent checks (token ids, targets, replayed expert ids, sequence
 * offsets) need the data on the host. The kernels never read out of bounds: a
 * bad token id gives a NaN row (embedding) or is skipped (its backward), a bad
 * target a NaN log-prob, a bad replayed id NaN weights. Callers whose ids did
 * not come from a checked host copy call ops_ids_check_cuda /
 * ops_router_check_ids_cuda / ops_seqs_check_cuda first (these synchronize).
 * Non-finite logits are not an error here: they propagate as NaN.
 *
 * Numerics: reductions run in FP32 (the CPU reference uses FP64) in a fixed
 * order that depends only on the shapes — never on the launch configuration,
 * on the GPU, or on the other sequences of a packed batch — and there are no
 * float atomics: two runs give the same bits. BF16 copies are RNE
 * (fmt_bf16_from_f32); the RoPE table is the CPU's (same FP32 inverse
 * frequencies and angles, cos/sin rounded from double); element-wise FP32
 * products and sums are written without FMA contraction where the CPU result
 * is reproduced bit for bit (embedding and its backward, RoPE, the BF16
 * conversions, router weights for given probabilities).
 *
 * Packed batches: seqs->off is a DEVICE array of n_seq + 1 offsets; max_len
 * is a hint for the grid (the longest sequence; any value ≥ 1 gives the same
 * bits, a too-small one is only slower). Attention supports head_dim 64 and
 * 128 (BF16 tensor cores by default, or FP32 SIMT tiles: ops_attention_set_impl;
 * online softmax, lse saved; no score matrix is stored), n_seq and n_q_heads
 * ≤ 65535. */

/* Check ids[0..n) ⊂ [lo, hi) on the device; synchronizes the stream. An id
 * outside is RL_EXIT_USAGE naming `what`, the first bad position and value. */
int ops_ids_check_cuda(const int32_t *ids, int64_t n, int32_t lo, int32_t hi, const char *what,
                       void *stream, rl_err *e);
/* ops_seqs_check on a device offset array (copies it to the host; synchronizes). */
int ops_seqs_check_cuda(const ops_seqs *seqs, int T, void *stream, rl_err *e);
/* pos[t] = t − off[s] (device). */
int ops_seqs_positions_cuda(const ops_seqs *seqs, int T, int32_t *pos, void *stream, rl_err *e);

int ops_bf16_from_f32_cuda(uint16_t *dst, const float *src, size_t n, void *stream, rl_err *e);
int ops_f32_from_bf16_cuda(float *dst, const uint16_t *src, size_t n, void *stream, rl_err *e);
int ops_bf16_round_cuda(float *x, size_t n, void *stream, rl_err *e);

/* Embedding; the backward is one owner per (vocab row, column) adding the
 * tokens in order t = 0..T−1 in FP32, as the CPU does (bitwise equal). */
int ops_embedding_forward_cuda(float *out, const float *table, const int32_t *tokens, int T, int V,
                               int H, void *stream, rl_err *e);
int ops_embedding_forward_bf16_cuda(float *out, const uint16_t *table, const int32_t *tokens, int T,
                                    int V, int H, void *stream, rl_err *e);
int ops_embedding_backward_cuda(float *dtable, const float *dout, const int32_t *tokens, int T,
                                int V, int H, void *stream, rl_err *e);

/* RMSNorm family (one warp per row; dw from fixed row-block partials — 32 rows
 * for the fused backward of dim = 128·k ≤ 1024, else 128 — reduced in a fixed
 * order, no atomics). */
/* 1 unless RLRUN_OPS_PDL=0 (read once; default 1): the RMSNorm forwards (and
 * the rollout's rck_qkv_post) launch as programmatic dependents of the kernel
 * before them — they wait for it at their very start, so only their launch
 * overlaps its tail. With the small-M GEMMs' PDL (RLRUN_SMALL_GEMM_PDL=1,
 * kernels/gemm.h) the decode step's chain overlaps launch for launch: bf16
 * batch 64 28,376 vs 27,340 tok/s (H100, 2026-12-05, one call); either alone
 * gains nothing; again 28,604 / 28,766 vs 27,569 / 27,556 (sixth session, the
 * GPU tests passing with the pair on). Bits unchanged. */
int ops_pdl(void);
/* 1 unless RLRUN_NORM_WIDE=0 (read once; set ≥ 0 overrides from then on, −1
 * asks): the RMSNorm forwards (plain, residual, _q8) at rows < 1024 with dim =
 * 128·j ≤ 4096 and aligned operands spread a row over 4 warps (8 at dim ≥ 1024:
 * ops_norm_wide_warps) — built to give
 * the same bits as the one-warp kernel, which leaves a decode step's few rows to
 * a serial chain a lane (ops_norm_cuda.cu, rmsnorm_fwd_wide_kernel). The same
 * bytes on the H100 (ops_gpu_test, rollout_gpu_test); fp8-block batch 64
 * 30,037 / 30,381 vs 29,196 / 29,189 tok/s, bf16 31,787 / 31,740 vs 31,302 /
 * 31,337 (docs/gpu-results.md, session 23), hence on. */
int ops_norm_wide(int set);
/* The wide forwards' warps a row at dim ≥ 1024: 8 (a 128-column block a warp at
 * dim 1024) unless RLRUN_NORM_WIDE_8=0, then 4 (read once; set 4 or 8 overrides
 * from then on, −1 asks). The same bits either way: the square-sum terms are
 * added in block order whichever warp holds a block. fp8-block batch 64 (H100,
 * session 25): 34,118 / 34,135 tok/s on 8 against 33,556 / 33,574 on 4; bf16
 * unchanged (its norms have no encode), hence on. */
int ops_norm_wide_warps(int set);
/* 1 unless RLRUN_SWIGLU_Q8_PDL=0 (read once; set ≥ 0 overrides, −1 asks):
 * ops_swiglu_forward_q8_bx_cuda launches as a programmatic dependent (under
 * ops_pdl()), so that in the decode step the down GEMM after it can launch and
 * stream its weights while it runs. Bits unchanged (the same GPU tests). With
 * the wide norm, fp8-block batch 64 30,715 / 30,623 vs 30,037 / 30,381 tok/s
 * (H100, session 23), hence on. */
int ops_swiglu_q8_pdl(int set);
/* 1 unless RLRUN_SWIGLU_Q8_LANE4=0 (read once; set ≥ 0 overrides, −1 asks):
 * ops_swiglu_forward_q8_bx_cuda at < 1024 rows (a decode step's) computes 4
 * values a thread, a warp a 128-element block, instead of 16 a thread — four
 * times the threads, the same bytes (ops_gpu_test runs both). fp8-block batch
 * 64 (H100, session 25): ~34,630 against ~34,030 tok/s, the kernel 4.5 → 3.7 µs. */
int ops_swiglu_q8_lane4(int set);
int ops_rmsnorm_forward_cuda(float *y, uint16_t *y_bf16, float *rstd, const float *x,
                             const float *w, int rows, int dim, float eps, void *stream, rl_err *e);
int ops_residual_rmsnorm_forward_cuda(float *h, float *y, uint16_t *y_bf16, float *rstd,
                                      const float *resid, const float *x, const float *w, int rows,
                                      int dim, float eps, void *stream, rl_err *e);
int ops_rmsnorm_backward_cuda(float *dx, float *dw, const float *dy, const float *x, const float *w,
                              const float *rstd, int rows, int dim, void *stream, rl_err *e);
int ops_residual_rmsnorm_backward_cuda(float *dresid, float *dw, const float *dy, const float *h,
                                       const float *w, const float *rstd, int rows, int dim,
                                       void *stream, rl_err *e);

/* RoPE (pos is a device array) and the fused QK-norm + RoPE. head_dim even,
 * ≤ 512. */
int ops_rope_forward_cuda(float *x, const int32_t *pos, int T, int n_heads, int head_dim,
                          float theta, void *stream, rl_err *e);
int ops_rope_backward_cuda(float *dx, const int32_t *pos, int T, int n_heads, int head_dim,
                           float theta, void *stream, rl_err *e);
int ops_qk_norm_rope_forward_cuda(float *y, float *rstd, const float *x, const float *w,
                                  const int32_t *pos, int T, int n_heads, int head_dim, float eps,
                                  float theta, void *stream, rl_err *e);
/* The same with the RoPE table made once: ops_rope_table_cuda fills cs, sn
 * ([T][head_dim/2] FP32 each, device) for positions pos, exactly as the calls
 * above make it per call; ops_qk_norm_rope_forward_tab_cuda then applies it
 * (bitwise equal to ops_qk_norm_rope_forward_cuda). For callers that rotate
 * many tensors at the same positions (the rollout engine's decode step). */
int ops_rope_table_cuda(float *cs, float *sn, const int32_t *pos, int T, int head_dim, float theta,
                        void *stream, rl_err *e);
int ops_qk_norm_rope_forward_tab_cuda(float *y, float *rstd, const float *x, const float *w,
                                      const float *cs, const float *sn, int T, int n_heads,
                                      int head_dim, float eps, void *stream, rl_err *e);
int ops_qk_norm_rope_backward_cuda(float *dx, float *dw, const float *dy, const float *x,
                                   const float *w, const float *rstd, const int32_t *pos, int T,
                                   int n_heads, int head_dim, float theta, void *stream, rl_err *e);

/* Flash-style causal GQA over a packed batch (see the note above). The
 * backward recomputes P from lse: one pass owns a 64-key tile of one kv head
 * (dK, dV summed over its query heads and queries in order), one pass owns a
 * 64-query tile (dQ); a device workspace of T·n_q_heads floats is taken from
 * the stream-ordered allocator. */
int ops_attention_forward_cuda(float *out, uint16_t *out_bf16, float *lse, const float *q,
                               const float *k, const float *v, const ops_seqs *seqs, int max_len,
                               ops_attn_shape sh, void *stream, rl_err *e);
int ops_attention_backward_cuda(float *dq, float *dk, float *dv, const float *dout,
                                const float *out, const float *lse, const float *q, const float *k,
                                const float *v, const ops_seqs *seqs, int max_len,
                                ops_attn_shape sh, void *stream, rl_err *e);

/* Which kernels the two calls above run (process-wide; ops_attn_tc_cuda.cu):
 *   OPS_ATTN_SIMT  FP32 SIMT tiles: FP32 operands (the tolerances of ops_gpu_test: out, lse
 *                  rel 2e-5, gradients rel 1e-4 of the CPU reference).
 *   OPS_ATTN_TC    BF16 tensor cores (mma.sync m16n8k16, FlashAttention-2 style): q, k, v,
 *                  dout and P / dS are BF16 operands with FP32 accumulation and FP32 softmax,
 *                  so results agree with the CPU reference within BF16-operand tolerances
 *                  (ops_gpu_test: out, dq, dk, dv rel 2e-2, lse rel 5e-3 of the largest |value|;
 *                  measured on the H200: out 5.3e-3, lse 1.1e-3, dq 4.6e-3, dk 4.2e-3, dv 3.3e-3).
 *                  Deterministic, packed == alone and max_len-invariant bitwise, as SIMT.
 *                  The default: 2.8x / 4.4x (fwd / bwd) the SIMT speed at 16 x 512 tokens.
 * OPS_ATTN_DEFAULT resolves to RLRUN_ATTN=simt|tc from the environment when set, else to
 * OPS_ATTN_DEFAULT_IMPL. ops_attention_choose gives the kernels a call of head_dim will run
 * (an unknown RLRUN_ATTN value is RL_EXIT_USAGE, reported by the attention calls too). */
typedef enum ops_attn_impl { OPS_ATTN_DEFAULT = 0, OPS_ATTN_SIMT = 1, OPS_ATTN_TC = 2 } ops_attn_impl;
#define OPS_ATTN_DEFAULT_IMPL OPS_ATTN_TC
void ops_attention_set_impl(ops_attn_impl impl);
int ops_attention_choose(int head_dim, ops_attn_impl *impl, rl_err *e);
/* The OPS_ATTN_TC kernels themselves (no argument checks: called by the two above). */
int ops_attention_forward_tc_cuda(float *out, uint16_t *out_bf16, float *lse, const float *q,
                                  const float *k, const float *v, const ops_seqs *seqs, int max_len,
                                  ops_attn_shape sh, void *stream, rl_err *e);
int ops_attention_backward_tc_cuda(float *dq, float *dk, float *dv, const float *dout,
                                   const float *out, const float *lse, const float *q,
                                   const float *k, const float *v, const ops_seqs *seqs,
                                   int max_len, ops_attn_shape sh, void *stream, rl_err *e);
/* Decode attention with the forward's arithmetic (the rollout engine's exact
 * decode, precision.exact_logprobs): row i's query heads (position p =
 * len[i] − 1) against the first len[i] rows of cache slot slot[i] — kc, vc one
 * layer's [slots][n_kv_heads][max_len][hd] BF16 rows — give, bit for bit, what
 * ops_attention_forward_cuda (OPS_ATTN_TC) gives row p of that sequence when its
 * keys and values are those rows: one CTA per (row, KV head) puts the
 * group's query heads in rows of one query tile, each masked at position p,
 * and runs the forward kernel's own loop (fwd_rows) over the key tiles of p,
 * reading them once for the group (n_q_heads / n_kv_heads ≤ 64). Query:
 * qb (BF16, when not NULL) or BF16(q × qscale) (FP32 q; qscale = sqrt(dp / hd),
 * the forward's padding, 1 when dp = hd). dp: the forward's head width, 64 or
 * 128 (hd ≤ dp, a multiple of 8; columns past hd are zeros as in the padded
 * forward). out [n][n_q_heads][hd] FP32 and out_bf16 (may be NULL). */
int ops_attention_decode_tc_cuda(float *out, uint16_t *out_bf16, const float *q, const uint16_t *qb, float qscale,
                                 const uint16_t *kc, const uint16_t *vc, const int32_t *slot, const int32_t *len,
                                 int n, int n_q_heads, int n_kv_heads, int hd, int dp, int64_t max_len, void *stream,
                                 rl_err *e);
/* Their BF16-operand forms (called by ops_attention_{forward,backward}_bx_cuda). */
int ops_attention_forward_tc_bx_cuda(float *out, uint16_t *out_bf16, float *lse, const uint16_t *q,
                                     const uint16_t *k, const uint16_t *v, const ops_seqs *seqs,
                                     int max_len, ops_attn_shape sh, void *stream, rl_err *e);
int ops_attention_backward_tc_bx_cuda(float *dq, float *dk, float *dv, const uint16_t *dout,
                                      const float *out, const float *lse, const uint16_t *q,
                                      const uint16_t *k, const uint16_t *v, const ops_seqs *seqs,
                                      int max_len, ops_attn_shape sh, void *stream, rl_err *e);

/* SwiGLU (+ BF16 copy), element-wise. */
int ops_swiglu_forward_cuda(float *out, uint16_t *out_bf16, const float *gate, const float *up,
                            int T, int I, int ld, void *stream, rl_err *e);
int ops_swiglu_backward_cuda(float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, int T, int I, int ld, void *stream, rl_err *e);

/* BF16-operand twins ("_bx") for the training forward and backward, whose linear
 * layers read and write BF16 (model/model_cuda.c): the same kernels, with the
 * operands named uint16_t read as BF16 (FP32 of a BF16 value is exact) and the
 * outputs named uint16_t written as the RNE BF16 of the FP32 result, as
 * ops_bf16_from_f32_cuda rounds. Each gives bit for bit what its FP32 twin gives
 * on the FP32 copies of its BF16 operands, followed by ops_bf16_from_f32_cuda of
 * its BF16 outputs (ops_gpu_test asserts it) — without the copies' passes.
 *   residual_rmsnorm_forward_bx   h = resid + x with x BF16
 *   residual_rmsnorm_backward_bx  dresid += …, and dresid_bf16 (may be NULL) = its BF16; dy FP32,
 *                                 or (dy NULL) the sum of n_dy_bf16 (1–3) BF16 parts dy_bf16[],
 *                                 added in order in FP32 — the bits of the FP32 dy they sum to
 *   qk_norm_rope_forward_bx       x BF16; y in FP32 or (y_bf16) BF16 — exactly one given
 *   qk_norm_rope_backward_bx      x BF16, dx written as BF16 only
 *   swiglu_forward_bx             gate, up BF16
 *   swiglu_backward_bx            dout, gate, up BF16; dgate, dup written as BF16 only */
int ops_residual_rmsnorm_forward_bx_cuda(float *h, float *y, uint16_t *y_bf16, float *rstd,
                                         const float *resid, const uint16_t *x, const float *w, int rows,
                                         int dim, float eps, void *stream, rl_err *e);
/* An activation quantized for fp8-block weights by the kernel that makes it:
 * E4M3 codes q [rows_pad][dim] and FP32 1×128 scales in cuBLASLt's Hopper
 * layout (scales[block · scale_ld + row], scale_ld ≥ rows_pad); rows past the
 * real ones up to rows_pad are written as zeros (codes and scales) — the bytes
 * linear_forward's quantizer (quant_fp8_block_act_cuda, QLAYOUT_HOPPER_ACT, pad
 * rows zero) writes for the kernel's BF16 output. ue8m0: power-of-two scales. */
typedef struct ops_fp8_act {
  uint8_t *q;
  float *scales;
  int64_t scale_ld;
  int rows_pad, ue8m0;
} ops_fp8_act;
/* RMSNorm forward (h, resid NULL) or residual + RMSNorm (h = resid + x) of x
 * FP32 or x_bf16 (exactly one given), writing y_bf16 (may be NULL) and rstd
 * (may be NULL) as ops_residual_rmsnorm_forward[_bx]_cuda does and the fp8-block
 * quantization of y's BF16 values into *qa: one pass where the norm and
 * quant_fp8_block_act_cuda took two, the same bytes. dim % 4 == 0 and
 * 16-byte-aligned operands (RL_EXIT_USAGE otherwise: quantize separately). */
int ops_rmsnorm_forward_q8_cuda(float *h, uint16_t *y_bf16, float *rstd, const float *resid, const float *x,
                                const uint16_t *x_bf16, const float *w, int rows, int dim, float eps,
                                const ops_fp8_act *qa, void *stream, rl_err *e);
/* ops_swiglu_forward_bx_cuda's BF16 result out_bf16 [T][I] (gate/up rows of
 * stride ld) and its fp8-block quantization into *qa in one pass: the bytes of
 * the SwiGLU then quant_fp8_block_act_cuda. I % 16 == 0, ld % 8 == 0, 16-byte
 * aligned operands (RL_EXIT_USAGE otherwise: quantize separately). */
int ops_swiglu_forward_q8_bx_cuda(uint16_t *out_bf16, const uint16_t *gate, const uint16_t *up, int T, int I, int ld,
                                  const ops_fp8_act *qa, void *stream, rl_err *e);
int ops_residual_rmsnorm_backward_bx_cuda(float *dresid, uint16_t *dresid_bf16, float *dw, const float *dy,
                                          const uint16_t *const *dy_bf16, int n_dy_bf16, const float *h,
                                          const float *w, const float *rstd, int rows, int dim,
                                          void *stream, rl_err *e);
/* ops_qk_norm_rope_forward_bx_cuda of q (nq heads) and of k (nk heads) at the
 * same positions in one launch with one RoPE table: the same bits as the two
 * calls (each (token, head) warp runs the same arithmetic). One output each:
 * yq and yk FP32, or yq_b and yk_b BF16. */
int ops_qk_norm_rope_forward2_bx_cuda(float *yq, uint16_t *yq_b, float *rq, const uint16_t *xq, const float *wq,
                                      int nq, float *yk, uint16_t *yk_b, float *rk, const uint16_t *xk,
                                      const float *wk, int nk, const int32_t *pos, int T, int head_dim, float eps,
                                      float theta, void *stream, rl_err *e);
int ops_qk_norm_rope_forward_bx_cuda(float *y, uint16_t *y_bf16, float *rstd, const uint16_t *x,
                                     const float *w, const int32_t *pos, int T, int n_heads, int head_dim,
                                     float eps, float theta, void *stream, rl_err *e);
int ops_qk_norm_rope_backward_bx_cuda(uint16_t *dx, float *dw, const float *dy, const uint16_t *x,
                                      const float *w, const float *rstd, const int32_t *pos, int T,
                                      int n_heads, int head_dim, float theta, void *stream, rl_err *e);
int ops_swiglu_forward_bx_cuda(float *out, uint16_t *out_bf16, const uint16_t *gate, const uint16_t *up,
                               int T, int I, int ld, void *stream, rl_err *e);
int ops_swiglu_backward_bx_cuda(uint16_t *dgate, uint16_t *dup, const uint16_t *dout,
                                const uint16_t *gate, const uint16_t *up, int T, int I, int ld,
                                void *stream, rl_err *e);
/*   attention_forward_bx          q, k, v BF16 (the tensor-core kernels' operands, which
 *                                 round FP32 ones to BF16 first: the same bits without that
 *                                 pass); OPS_ATTN_TC only — RL_EXIT_USAGE when the kernels in
 *                                 force (ops_attention_choose) are the SIMT ones
 *   attention_backward_bx         the same for the backward, dout BF16 too (out stays FP32)
 *   logprob_forward_bx            logits BF16
 *   logprob_backward_bx           logits BF16, dlogits written as BF16 only */
int ops_attention_forward_bx_cuda(float *out, uint16_t *out_bf16, float *lse, const uint16_t *q,
                                  const uint16_t *k, const uint16_t *v, const ops_seqs *seqs, int max_len,
                                  ops_attn_shape sh, void *stream, rl_err *e);
int ops_attention_backward_bx_cuda(float *dq, float *dk, float *dv, const uint16_t *dout, const float *out,
                                   const float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                                   const ops_seqs *seqs, int max_len, ops_attn_shape sh, void *stream, rl_err *e);
int ops_logprob_forward_bx_cuda(float *logp, float *entropy, float *lse, const uint16_t *logits,
                                const int32_t *targets, int T, int V, float temp, void *stream, rl_err *e);
int ops_logprob_backward_bx_cuda(uint16_t *dlogits, const float *dlogp, const float *dentropy,
                                 const uint16_t *logits, const float *lse, const int32_t *targets, int T,
                                 int V, float temp, void *stream, rl_err *e);

/* Router (one warp per token; k ≤ 64). TOPK ties go to the lower index among
 * equal FP32 probabilities. */
int ops_router_forward_cuda(int32_t *ids, float *weights, float *probs, const float *logits, int T,
                            int E, int k, int norm_topk_prob, ops_route_mode mode, void *stream,
                            rl_err *e);
int ops_router_backward_cuda(float *dlogits, const float *dweights, const float *probs,
                             const int32_t *ids, int T, int E, int k, int norm_topk_prob,
                             void *stream, rl_err *e);
/* The replay ids' checks of ops_router_forward_cpu (range, distinct); synchronizes. */
int ops_router_check_ids_cuda(const int32_t *ids, int T, int E, int k, void *stream, rl_err *e);
/* ops_router_overlap_cpu on the device; synchronizes, result in *overlap. */
int ops_router_overlap_cuda(double *overlap, const float *probs, const int32_t *ids, int T, int E,
                            int k, void *stream, rl_err *e);

/* Log-softmax + gather + entropy, one row per block in one pass over the
 * vocabulary (online max/sum); the backward reads the row once (twice when
 * dentropy is given: the entropy is recomputed as on the CPU). */
int ops_logprob_forward_cuda(float *logp, float *entropy, float *lse, const float *logits,
                             const int32_t *targets, int T, int V, float temp, void *stream,
                             rl_err *e);
int ops_logprob_backward_cuda(float *dlogits, const float *dlogp, const float *dentropy,
                              const float *logits, const float *lse, const int32_t *targets, int T,
                              int V, float temp, void *stream, rl_err *e);

#ifdef __cplusplus
}
#endif

#endif
