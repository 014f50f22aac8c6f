/* model.h — the transformer of rlrun: Qwen3 dense and Qwen3-MoE, on the CPU
 * (the reference; the CUDA path is model/model_cuda.h).
 *
 *   model *m;
 *   model_load("Qwen3-0.6B", NULL, &m, &e);          BF16 master weights from an HF dir
 *   quant_policy p; quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
 *   model_quantize(m, &p, &e);                       the per-policy views ("sync")
 *   model_acts *a = model_acts_new();
 *   model_forward(m, &batch, NULL, a, &e);           a->logits [T, V]
 *   model_logprob_forward(a, targets, 1.0f, logp, NULL, &e);
 *   model_grads_init(m); model_backward_logprob(m, a, dlogp, NULL, &e);   m->params[i].g
 *
 * Memory layout (host memory, row-major, one allocation per tensor):
 *   - Every parameter is a model_param named by its checkpoint (hub) name, in
 *     m->params[] in a fixed order: embed_tokens; per layer input_layernorm,
 *     q/k/v/o_proj, q_norm, k_norm, post_attention_layernorm, then the dense
 *     mlp.{gate,up,down}_proj or the MoE mlp.gate (router) and
 *     mlp.experts.{e}.{gate,up,down}_proj for e = 0..E−1; model.norm; lm_head
 *     (absent when tied: the lm_head linear then reads embed_tokens).
 *     A matrix is [rows][cols] = [out features][in features] (as checkpoints
 *     store it, K = cols contiguous); a vector has cols = 1.
 *   - p->w    BF16 master weights (always).
 *     p->w32  FP32 copy, only when loaded with opts.keep_f32 (the FP32-exact
 *             path: the checkpoint's own FP32 values, not rounded).
 *     p->g    FP32 gradient accumulator (model_grads_init; zeroed by
 *             model_grads_zero; backward ADDS into it, so micro-batches sum).
 *   - Each linear layer (model_linear) holds a qtensor view made by
 *     model_quantize from the BF16 master in the format its class asks for
 *     (BF16: the master itself, no copy; fp8-block 128×128 / mxfp8 1×32 /
 *     nvfp4 1×16 (gate and up of one expert share the tensor amax): owned
 *     buffers, scales in the ROWMAJOR checkpoint layout). MXFP8 keeps tensors
 *     whose K is not a multiple of 32 in BF16, as the converter does.
 *   - Activations (model_acts) are FP32 [T, …] per layer, with BF16 copies of
 *     every linear input; everything the backward reads is kept (the CUDA
 *     model can keep one layer's and recompute: model_fwd_opts). MoE rows are grouped by expert: row r of an
 *     expert buffer is slot slot_of_row[r] = t·k + j (token t, choice j),
 *     experts in index order, tokens ascending inside an expert.
 *
 * Numerics. Two execution modes:
 *   POLICY (default): every linear layer goes through linear_forward with the
 *     model's quant_policy (BF16 input, BF16 output) and linear_backward (BF16
 *     operands, FP32 accumulation, dW accumulated in FP32); every other op is
 *     the FP32 reference of kernels/ops.h (FP64 reductions), norm weights are
 *     the BF16 master values.
 *   F32 (opts.f32, needs keep_f32): the same graph with FP32 weights and FP32
 *     products accumulated in FP64 — the exact reference that matches
 *     transformers' FP32 model to ~1e-5.
 * Everything is deterministic: fixed reduction orders, no atomics; the MoE
 * output of a token sums its k experts in choice order j = 0..k−1.
 *
 * CUDA: model/model_cuda.h runs the same graph (POLICY mode) with weights,
 * activations and gradients in device memory, through its own entry points
 * (model_cuda_init / _quantize / _forward / _backward…) linked by m->cu. */
#ifndef RLRUN_MODEL_H
#define RLRUN_MODEL_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/ops.h"
#include "kernels/qtensor.h"
#include "model/config.h"

#define MODEL_NAME_MAX 96

/* One parameter tensor (see the layout above). */
typedef struct model_param {
  char name[MODEL_NAME_MAX]; /* checkpoint name, e.g. model.layers.0.self_attn.q_proj.weight */
  int64_t rows, cols;        /* a vector is [rows][1] */
  uint16_t *w;               /* BF16 master */
  float *w32;                /* FP32 copy (keep_f32) or NULL */
  float *g;                  /* FP32 gradient or NULL */
  int keep_bf16;             /* a linear weight kept in BF16 whatever the policy (model_keep_bf16) */
} model_param;

/* A linear layer: its weight and the quantized view of the current policy. */
typedef struct model_linear {
  model_param *p;
  linear_class cls;
  qtensor q;            /* valid after model_quantize */
  void *qdata, *qscales; /* owned when q.fmt != BF16 */
} model_linear;

/* One decoder layer. Dense layers use gate/up/down; MoE layers router + experts. */
typedef struct model_layer {
  int moe;
  model_param *ln1, *ln2, *q_norm, *k_norm;
  model_linear q, k, v, o;
  model_linear gate, up, down;
  model_linear router;
  model_linear *eg, *eu, *ed; /* [E] expert gate/up/down (MoE layers) */
} model_layer;

typedef struct model {
  model_config cfg;
  /* sizes from cfg, as ints */
  int H, V, L, nq, nkv, hd, I, E, topk, Im;
  float eps, theta;
  model_param *params;
  int n_params;
  model_param *embed, *final_norm;
  model_linear lm_head; /* lm_head.p == embed when tied */
  int lm_head_keep_bf16; /* the lm_head view kept in BF16 whatever the policy (model_keep_bf16) */
  model_layer *layers;
  quant_policy policy;
  int quantized; /* model_quantize has run since the last weight change */
  int has_f32;   /* every parameter has w32 */
  struct model_cuda *cu; /* device copies (model/model_cuda.h), NULL until model_cuda_init */
} model;

/* Options of model_load / model_create; NULL = defaults (all zero). */
typedef struct model_load_opts {
  int keep_f32; /* also keep FP32 weights (the F32 execution mode) */
} model_load_opts;

/* Allocate a model for config c (copied) with zeroed weights: params named
 * and shaped, w (and w32 with keep_f32) allocated. Refuses what the model
 * cannot run (rope scaling other than "default", attention bias, sliding
 * window) with a message. */
int model_create(const model_config *c, const model_load_opts *o, model **out, rl_err *e);
/* 0 when rlrun runs a model of config c (what model_create refuses first: rope
 * scaling, attention biases, a sliding window, an odd head_dim, absurd sizes),
 * else RL_EXIT_USAGE and why. */
int model_config_runnable(const model_config *c, rl_err *e);
void model_free(model *m);
/* Read config.json of dir, accepting transformers-5 spellings
 * (num_local_experts; qwen3_moe without head_dim = hidden / heads). */
int model_config_load_hf(const char *dir, model_config *c, rl_err *e);
/* Load an HF directory: config.json + safetensors (single, sharded, or every
 * *.safetensors), hub tensor names. Weights F32/BF16/F16, or fp8-block,
 * mxfp8, nvfp4 quantized tensors (dequantized to BF16). The checkpoint is
 * checked first (model_ckpt_check): as many layers as num_hidden_layers, every
 * expected tensor present with its shape; errors name the tensor and the file. */
int model_load(const char *dir, const model_load_opts *o, model **out, rl_err *e);
/* One tensor a config implies (hub name, shape): what model_create allocates
 * and what model_load and `rlrun convert` expect of a checkpoint.
 * model_tensor_specs lists them for config c in m->params order (lm_head only
 * when untied) into *out (malloc'd; free it); returns how many. */
typedef struct model_tensor_spec {
  char name[MODEL_NAME_MAX];
  int64_t rows, cols; /* a vector has cols = 1 and is stored 1-D [rows] */
  int vec;            /* a norm weight (a vector) */
  const char *dims;   /* the config keys of the shape, e.g. "[vocab_size, hidden_size]" */
} model_tensor_spec;
int model_tensor_specs(const model_config *c, model_tensor_spec **out);

/* What model_ckpt_check found besides the expected tensors. */
typedef struct model_ckpt_report {
  int n_unused;                 /* tensors no expected tensor uses (neither one nor its quantization scales) */
  char first_unused[MODEL_NAME_MAX + 64]; /* the first of them, in file order ("" when none) */
} model_ckpt_report;
struct st_ckpt;
/* Check a checkpoint against config c without reading tensor data: its
 * layers (model.layers.N) match num_hidden_layers, its experts num_experts,
 * and every tensor of model_tensor_specs is there with its shape (1-D for a
 * norm; [rows, cols] for F32/BF16/F16 and F8_E4M3 (fp8-block, mxfp8); U8
 * [rows, ceil(cols/2)] for nvfp4) and one of those dtypes. Other tensors are
 * not an error (model_load ignores them, convert copies them): counted in r
 * (may be NULL). 0, or RL_EXIT_USAGE naming the tensor (and its file),
 * expected and found shape; the caller prefixes the directory. */
int model_ckpt_check(const model_config *c, struct st_ckpt *ck, model_ckpt_report *r, rl_err *e);
/* A --keep-bf16 / precision.keep_bf16 glob that fnmatch can use as written:
 * 0, or RL_EXIT_USAGE saying what is wrong where (an unclosed '[' bracket
 * expression or [:class:], an unknown character class, a trailing backslash,
 * an empty pattern); fnmatch itself takes those silently, matching no tensor. */
int model_keep_bf16_pattern_check(const char *pattern, rl_err *e);
/* The parameter with checkpoint name `name`, or NULL. */
model_param *model_find_param(model *m, const char *name);
/* Copy w32 → w (BF16 RNE) for every parameter (after editing FP32 weights). */
void model_sync_bf16_from_f32(model *m);

/* Linear weights kept in BF16 whatever the format (FORMATS.md "What is never
 * quantized": a recipe adds name patterns, precision.keep_bf16, and the
 * first/last N layers, precision.bf16_first/last_layers; `rlrun convert` has
 * the same options). model_keep_bf16_rule: which rule keeps the weight
 * `name` — MODEL_KEEP_PATTERN when a pattern matches (fnmatch) the tensor name
 * or its module name (the name without ".weight"), MODEL_KEEP_FIRST /
 * MODEL_KEEP_LAST when its layer (the N of "layers.N.") is among the first /
 * last ones of L, else MODEL_KEEP_NONE. model_keep_bf16: mark m's linears by
 * these rules (lm_head as "lm_head.weight", tied or not); model_quantize,
 * model_cuda_quantize and the sync's manifest then keep them BF16, in the
 * rollout and the training policy alike. model_keep_bf16_copy: the same marks
 * on a replica of m's config. */
enum { MODEL_KEEP_NONE, MODEL_KEEP_PATTERN, MODEL_KEEP_FIRST, MODEL_KEEP_LAST };
int model_keep_bf16_rule(const char *name, const char *const *patterns, int n_patterns, int64_t first, int64_t last,
                         int64_t L);
void model_keep_bf16(model *m, const char *const *patterns, int n_patterns, int64_t first, int64_t last);
void model_keep_bf16_copy(model *dst, const model *src);
/* The N of the first "layers.N." in a tensor name (preceded by '.' or at its start), or −1. */
int64_t model_layer_of_name(const char *name);
/* Make the quantized view of every linear layer from the BF16 master for
 * policy p (checked with quant_policy_check); call again after each weight
 * update (this is what sync does). Non-finite weights are an error naming the
 * tensor. */
int model_quantize(model *m, const quant_policy *p, rl_err *e);
/* Every weight finite (the BF16 masters, and the FP32 copies when kept)?
 * 0, or RL_EXIT_USAGE naming the first tensor (in m->params order) with a
 * NaN or an infinity, its first bad row and column (a vector: row, column 0)
 * and how many it holds: a damaged checkpoint is bad input. */
int model_check_finite(const model *m, rl_err *e);
/* Allocate (zeroed) the FP32 gradient of every parameter, or zero them. */
void model_grads_init(model *m);
void model_grads_zero(model *m);

/* ---------------------------------------------------------------- forward / backward */

/* A packed batch of sequences (ops_seqs layout: off[0] = 0 … off[n_seq] = T). */
typedef struct model_batch {
  int T;
  const int32_t *tokens;
  ops_seqs seqs;
} model_batch;

/* Forward options; NULL = defaults (POLICY mode, router top-k). */
typedef struct model_fwd_opts {
  int f32; /* the FP32-exact mode (needs has_f32) */
  /* R3 replay: replay_ids[l] = [T, k] expert ids for MoE layer l (NULL
   * entries: top-k for that layer); NULL = top-k everywhere. */
  const int32_t *const *replay_ids;
  /* forward only, no backward of it follows (scoring, reference log-probs): the
   * CUDA forward keeps one layer's activations for all layers (memory of one
   * layer instead of L, no backward scratch); model_cuda_backward then refuses.
   * The CPU forward ignores it. Results are the same bits either way. */
  int no_grad;
  /* activation recomputation (long sequences): the CUDA forward keeps each
   * layer's input (the residual stream) and one layer's activations; the
   * backward re-runs each layer's forward before its backward (MoE layers
   * replay the routed ids of the forward). The same bits as keeping every
   * activation, for about one more forward of GEMM work. The CPU ignores it. */
  int recompute;
  /* CUDA: every linear runs cuBLASLt with a pinned algorithm (gemm.h's
   * pin_algo: no split-K, one algorithm per shape family) and never the small-M
   * kernels, so that a row's bits do not depend on the other rows of the batch
   * nor on how many there are (the rollout engine's prefill, which packs the
   * prompts admitted together). The CPU ignores it (its rows never depend on
   * the batch). */
  int row_invariant;
  /* R3 diagnostics (the CUDA forward): where layer l replays ids and
   * own_ids[l] is not NULL, the router's own top-k choice ([T, k], descending
   * probability, ties to the lower id) is written there too (host memory), so
   * that the trainer can log r3/overlap. The CPU forward keeps the router
   * probabilities in its activations instead (ops_router_overlap_cpu). */
  int32_t *const *own_ids;
} model_fwd_opts;

/* Activations of one layer (FP32 unless noted; sizes for T tokens). */
typedef struct model_layer_acts {
  float *xn1, *rstd1;          /* input norm [T,H], [T] */
  uint16_t *xn1_b;             /* BF16 copy of xn1 */
  float *qr, *kr, *v;          /* projections [T, nq·hd], [T, nkv·hd] */
  float *q, *k, *rstd_q, *rstd_k; /* after QK-norm + RoPE; rstd [T·nq], [T·nkv] */
  float *att, *lse;            /* attention output [T, nq·hd], logsumexp [T, nq] */
  uint16_t *att_b;
  float *h;                    /* residual after attention [T,H] */
  float *xn2, *rstd2;          /* post-attention norm */
  uint16_t *xn2_b;
  /* dense MLP: gate, up [T,I]; act [T,I] */
  float *gate, *up, *act;
  uint16_t *act_b;
  /* MoE (R = T·k rows grouped by expert) */
  float *rlogits, *probs, *rw; /* router logits, probs [T,E]; weights [T,k] */
  int32_t *ids;                /* [T,k] chosen (or replayed) experts */
  int32_t *e_start, *e_cnt;    /* [E] rows of each expert */
  int32_t *slot_of_row, *row_of_slot; /* [R] */
  float *xg;                   /* gathered inputs [R,H] */
  uint16_t *xg_b;
  float *eg, *eu, *eact, *eout; /* [R,Im] ×3, [R,H] */
  uint16_t *eact_b;
} model_layer_acts;

/* Everything one forward keeps for the backward; reused across calls (grown). */
typedef struct model_acts {
  int T, L, H, V, f32, cap_T;
  int shape_key[10];           /* the model sizes the buffers were made for */
  int32_t *tokens, *pos, *off; /* copies */
  ops_seqs seqs;
  float *res;        /* residual stream [(L+1)][T,H]: res[l] enters layer l, res[L] the final norm */
  float *xf, *rstdf; /* final norm output [T,H], [T] */
  uint16_t *xf_b;
  float *logits;     /* [T,V] */
  float *lp_lse;     /* logsumexp per token of the last model_logprob_forward [T] */
  int32_t *lp_targets; /* copy of its targets [T] */
  float lp_temp;
  model_layer_acts *la; /* [L] */
} model_acts;

model_acts *model_acts_new(void);
void model_acts_free(model_acts *a);

/* Run the model on a packed batch; a->logits [T, V] (FP32; BF16-valued in
 * POLICY mode since lm_head outputs BF16). Needs model_quantize in POLICY
 * mode. Token ids outside [0, V) and bad offsets are errors (RL_EXIT_USAGE). */
int model_forward(model *m, const model_batch *b, const model_fwd_opts *o, model_acts *a,
                  rl_err *e);
/* The routed expert ids of MoE layer l after a forward ([T, k]), or NULL. */
const int32_t *model_routed_ids(const model_acts *a, int l);

/* targets[t] = tokens[t+1] inside the same sequence, −1 at a sequence's end. */
void model_targets_next(const int32_t *tokens, const ops_seqs *seqs, int T, int32_t *targets);
/* Per-token log-probs (and entropy, may be NULL) of targets at temperature
 * temp from a->logits; keeps what model_backward_logprob needs. */
int model_logprob_forward(model_acts *a, const int32_t *targets, float temp, float *logp,
                          float *entropy, rl_err *e);
/* Mean cross-entropy over the tokens with a target: −mean(logp). With dlogp
 * non-NULL, writes its gradient (−1/n on target tokens, 0 elsewhere). */
double model_loss_ce(const float *logp, const int32_t *targets, int T, float *dlogp);

/* Backward from dlogits [T,V] (read only) of the last forward: ADDS every
 * parameter gradient into p->g (model_grads_init first). */
int model_backward(model *m, model_acts *a, const float *dlogits, rl_err *e);
/* Backward from upstream gradients of the per-token log-probs (and/or
 * entropies; either may be NULL) of the last model_logprob_forward. */
int model_backward_logprob(model *m, model_acts *a, const float *dlogp, const float *dentropy,
                           rl_err *e);

#endif
