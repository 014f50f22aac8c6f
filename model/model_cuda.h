/* model_cuda.h — the CUDA path of the model: the same Qwen3 / Qwen3-MoE graph
 * as model/forward.c, backward.c and moe.c (POLICY mode), with weights,
 * quantized views, activations and gradients in device memory.
 *
 *   model *m;  model_load(dir, NULL, &m, &e);          host BF16 masters (as on the CPU)
 *   model_cuda_init(m, &e);                            upload masters → m->cu
 *   quant_policy p; quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
 *   model_cuda_quantize(m, &p, &e);                    device views (the sync step)
 *   model_cuda_acts *a = model_cuda_acts_new();
 *   model_cuda_forward(m, &batch, NULL, a, &e);        batch in HOST memory (checked, uploaded)
 *   model_cuda_logprob_forward(m, a, targets, 1.0f, logp, NULL, &e);   logp on the host
 *   model_cuda_grads_zero(m, &e); model_cuda_backward_logprob(m, a, dlogp, NULL, &e);
 *   model_cuda_grads_to_host(m, &e);                   (tests) p->g ← device gradients
 *
 * Why separate entry points rather than a device switch inside model_forward:
 * the CPU API hands out host pointers (a->logits, p->g) that other modules
 * read directly; the CUDA path keeps everything on the device and copies only
 * what a caller asks for, so it has its own small API and leaves the CPU one
 * untouched. The only link is m->cu (NULL until model_cuda_init; model_free
 * releases it).
 *
 * Numerics: the CPU's POLICY mode, op for op — every linear layer through
 * linear_forward (device qtensor views, quantized on the device by the
 * `_cuda` quantizers: the same bytes as model_quantize) and linear_backward
 * (cuBLASLt BF16, FP32 accumulation into FP32 gradient buffers), every other
 * op through its `_cuda` twin of kernels/ops.h (FP32 reductions in fixed
 * orders), norm weights = FP32 values of the BF16 masters. MoE: router →
 * top-k or R3 replay (ops_router_forward_cuda) → the routed ids are copied to
 * the host (one synchronisation per MoE layer) to group the rows by expert in
 * the CPU's fixed order (experts in index order, tokens ascending) → a device
 * gather, one linear_forward per expert, and a combine that sums a token's k
 * choices in choice order. No float atomics anywhere: two runs give the same
 * bits. head_dim other than 64/128 (the tiny test models: 32) runs the
 * attention kernel zero-padded to 64/128 with q pre-scaled by
 * sqrt(D_pad / head_dim), which gives the same scores up to FP32 rounding.
 *
 * Everything runs on the current CUDA device's default stream; calls return
 * after enqueueing except where they copy results to the host. */
#ifndef RLRUN_MODEL_CUDA_H
#define RLRUN_MODEL_CUDA_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/optim.h"
#include "model/model.h"

/* Device copies of one parameter (device pointers). */
typedef struct model_cuda_param {
  uint16_t *w; /* BF16 master [rows][cols] */
  float *g;    /* FP32 gradient accumulator, NULL until model_cuda_grads_zero */
  float *wf;   /* vectors (norm weights): FP32 of w, refreshed by model_cuda_quantize */
} model_cuda_param;

/* Upload the BF16 masters of m to the current GPU (m->cu). Idempotent: a
 * second call re-uploads the host masters. RL_EXIT_HARDWARE with a message
 * when the build has no CUDA or no GPU is usable. */
int model_cuda_init(model *m, rl_err *e);
/* Release m->cu (model_free calls it). */
void model_cuda_free(model *m);
/* The device copies of parameter i of m->params (NULL before model_cuda_init). */
model_cuda_param *model_cuda_param_at(model *m, int i);
/* Copy the host masters p->w into the device masters (after a host update). */
int model_cuda_upload(model *m, rl_err *e);
/* Copy the device masters into the host masters p->w (after a device update,
 * e.g. before a checkpoint). */
int model_cuda_download(model *m, rl_err *e);
/* Make the device quantized view of every linear layer from the device BF16
 * masters for policy p with the `_cuda` quantizers (fp8-block scales written
 * in cuBLASLt's layout), and refresh the FP32 norm weights: the sync step.
 * Call again after every device weight update. Buffers are allocated when a
 * format changes (first call) and reused after; every fp8-block linear is
 * quantized in one multi-tensor launch, every MXFP8 one in another, NVFP4
 * experts per tensor; one device→host copy of all the non-finite statistics
 * at the end names the first bad tensor (RL_EXIT_USAGE). */
int model_cuda_quantize(model *m, const quant_policy *p, rl_err *e);
/* model_cuda_quantize in three steps, for a caller that launches the work in
 * pieces on a stream of its own (the NCCL sync overlaps each bucket's
 * re-quantization with the previous bucket's broadcast); the same bytes:
 *   _begin   the views and buffers as model_cuda_quantize makes them, NVFP4
 *            experts quantized (null stream), the fp8-block / MXFP8 linears
 *            collected, not launched; the caller orders its stream after the
 *            null stream's work (the weights' last update) itself;
 *   _launch  the collected linears not launched yet for which want(ctx, pi) is
 *            true (pi: the weight's parameter index, −1 the lm_head view; want
 *            NULL: all), one multi-tensor launch a format, on `stream`;
 *   _end     what is left launched, `stream` synchronized, the FP32 norm
 *            weights refreshed, the non-finite statistics checked; frees q.
 * On an error of _begin nothing is to free; after one of _launch call
 * model_cuda_qplan_free. */
typedef struct model_cuda_qplan model_cuda_qplan;
int model_cuda_quantize_begin(model *m, const quant_policy *p, model_cuda_qplan **q, rl_err *e);
int model_cuda_quantize_launch(model *m, model_cuda_qplan *q, int (*want)(void *ctx, int pi), void *ctx,
                               void *stream, rl_err *e);
int model_cuda_quantize_end(model *m, model_cuda_qplan *q, void *stream, rl_err *e);
void model_cuda_qplan_free(model_cuda_qplan *q);
/* Only the FP32 norm weights from the device BF16 masters (one launch): what
 * a model whose masters were overwritten in place needs (the NCCL sync's
 * rollout side). */
int model_cuda_refresh_norms(model *m, rl_err *e);
/* The RMSNorms that feed fp8-block linears through cuBLASLt write the
 * quantized activation themselves (ops_rmsnorm_forward_q8_cuda) — in the full
 * forward and the rollout engine's decode step — one quantizer pass fewer per
 * group, the same bytes. On unless RLRUN_NORM_Q8=0 (read once); set ≥ 0
 * overrides (tests), −1 only asks. Not thread-safe: set it before engines run. */
int model_cuda_norm_q8(int set);
/* The decode step's fp8-block linears that take a quantized activation (from the
 * q8 norms and SwiGLU) at M ≤ 64 run gemm_small_fp8_group_cuda (wgmma E4M3, the
 * small-M kernel's split K: q/k/v in one launch) instead of one cuBLASLt call each,
 * when the policy is not pinned and the forward not row-invariant (the prefill,
 * exact_logprobs) and the GPU is sm_90. Its rows are not cuBLASLt's bits (FP8
 * accumulation noise). On unless RLRUN_SMALL_GEMM_Q8=0 (read once); set ≥ 0
 * overrides (tests), −1 only asks. Not thread-safe: set it before engines run. */
int model_cuda_small_q8(int set);
/* (M ≤ 64 by default; RLRUN_SMALL_GEMM_Q8_MAX_M = 65 … 256 raises the limit: the
 * fp8-block linears keep the kernel's order in steps of up to that many rows, slower
 * above 128 rows — model/model_cuda.c.) */
/* Launches of that kernel so far, process-wide (a graph capture counts once; tests). */
long long model_cuda_small_q8_calls(void);
/* With it, the decode step's gate/up pair runs gemm_small_fp8_swiglu_cuda: the
 * SwiGLU and the fp8-block quantization of its output for down in the GEMM's
 * epilogue — one launch where the group GEMM and the q8 SwiGLU took two, the same
 * bytes. Off unless RLRUN_SMALL_FP8_SWIGLU=1 (read once; experimental, see
 * docs/gpu-results.md); set ≥ 0 overrides (tests), −1 only asks. Not
 * thread-safe: set it before engines run. */
int model_cuda_small_q8_swiglu(int set);
/* Launches of that kernel so far, process-wide (a graph capture counts once; tests). */
long long model_cuda_small_q8_swiglu_calls(void);
/* Allocate (first call) and zero the device FP32 gradients. */
int model_cuda_grads_zero(model *m, rl_err *e);
/* Copy the device gradients into the host p->g (allocated as needed). */
int model_cuda_grads_to_host(model *m, rl_err *e);
/* optim_tensor views of every parameter over the device masters and
 * gradients (t[n_params]); main/m/v are left NULL for the caller to fill. */
int model_cuda_optim_views(model *m, optim_tensor *t, rl_err *e);

/* Device activations of the last forward (opaque; reused and grown). */
typedef struct model_cuda_acts model_cuda_acts;
model_cuda_acts *model_cuda_acts_new(void);
void model_cuda_acts_free(model_cuda_acts *a);

/* Run the model on a packed batch given in HOST memory (tokens and offsets
 * are checked on the host: bad ids/offsets are RL_EXIT_USAGE, then uploaded).
 * o->f32 is refused (the FP32-exact mode is CPU only); o->replay_ids are host
 * arrays. Needs model_cuda_quantize. Logits stay on the device. */
int model_cuda_forward(model *m, const model_batch *b, const model_fwd_opts *o, model_cuda_acts *a,
                       rl_err *e);
/* Device pointer to the FP32 logits [T, V] of the last forward, or NULL when
 * the acts hold them in BF16 (the BF16 flow's: every acts but those an owner
 * set to the FP32 flow) — read those with the two calls below. */
const float *model_cuda_logits(const model_cuda_acts *a);
/* Device bytes the activations a hold (0 before a forward). */
size_t model_cuda_acts_bytes(const model_cuda_acts *a);
/* Copy the logits [T, V] to host memory out (FP32). */
int model_cuda_logits_to_host(const model_cuda_acts *a, float *out, rl_err *e);
/* dst[i, :] = FP32 logits of row rows[i] (host array, n rows) into DEVICE dst [n, V]. */
int model_cuda_logits_rows(const model_cuda_acts *a, const int32_t *rows, int n, float *dst, rl_err *e);
/* The routed expert ids [T, k] of MoE layer l after a forward (host copy), or NULL. */
const int32_t *model_cuda_routed_ids(const model_cuda_acts *a, int l);
/* Per-token log-probs (and entropies) of host targets at temperature temp,
 * fused log-softmax + gather on the device; logp / entropy are HOST arrays
 * [T] (either may be NULL: then nothing is copied back). */
int model_cuda_logprob_forward(model *m, model_cuda_acts *a, const int32_t *targets, float temp,
                               float *logp, float *entropy, rl_err *e);
/* Backward from HOST upstream gradients of the last log-probs / entropies
 * (either may be NULL): ADDS every parameter gradient into the device g
 * (model_cuda_grads_zero first). */
int model_cuda_backward_logprob(model *m, model_cuda_acts *a, const float *dlogp,
                                const float *dentropy, rl_err *e);
/* Backward from DEVICE dlogits [T, V] (read only). */
int model_cuda_backward(model *m, model_cuda_acts *a, const float *dlogits, rl_err *e);
/* Wait for the device and report a failed kernel (RL_EXIT_FAIL). */
int model_cuda_sync(rl_err *e);
/* The device views of the linear layers, for the sync stage: views[i] (an
 * array of m->n_params) = the view whose weight is m->params[i], NULL for a
 * parameter that is no linear weight (lm_head excluded); *lm_head = the
 * output projection's view (of embed_tokens when tied). Pointers into m->cu,
 * valid until model_cuda_quantize changes a format; the rollout side of a
 * sync overwrites the bytes they point at. */
int model_cuda_linear_views(model *m, const qtensor **views, const qtensor **lm_head, rl_err *e);

#endif
