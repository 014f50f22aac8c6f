/* train.h — the train stage: one RL (GRPO / Dr.GRPO / RLOO, PPO-clip with
 * TIS or IcePop) or SFT update of a model from a rollout batch with rewards
 * (docs RL.md is the contract; the math per token is stages/rl_loss.h).
 *
 *   trainer *t;
 *   train_opts o; train_opts_default(&o);
 *   o.optim.lr = recipe.train.lr; ...              (the runner maps the recipe)
 *   trainer_new(m, &o, &t, &e);                    m: model.h, BF16 master weights
 *   ... rollout_generate(...) → batch; the runner fills batch.s[i].reward ...
 *   train_result r;
 *   trainer_step(t, &batch, &r, &e);               one (or more) optimizer steps
 *   rl_metric_list_store(&r.metrics, store, iteration, &e);
 *   train_result_free(&r);
 *   trainer_free(t);
 *
 * One trainer_step, in order:
 *   1. rewards → advantages per group (rl_advantages; degenerate groups are
 *      left out of the loss and counted); a NaN/Inf reward stops the step.
 *   2. old-logprob pass: forward of every sample (prompt_ids ++ completion_ids
 *      as one packed sequence) with the current weights in the TRAINING
 *      precision (model_quantize with opts.policy), no gradient →
 *      logp_old[completion token], at the rollout temperature. Mismatch
 *      metrics vs the rollout's logp_rollout over every generated token
 *      (rl_metrics.h), accumulated in sample order. With R3 (opts.r3 on a MoE
 *      model) every forward replays the rollout's routed ids (batch routed
 *      table) and r3/overlap is measured on this pass.
 *   3. for each of ppo_epochs epochs, for each of `minibatches` contiguous
 *      slices of the kept samples (one optimizer step each): microbatches of
 *      `microbatch` sequences, forward under gradient → logp_new (+ entropy
 *      when the bonus is on) → rl_loss_compute (denominators of the whole
 *      slice) → model_backward_logprob, gradients summed over microbatches →
 *      grad hook (tests) → AdamW step (kernels/optim.h: every gradient checked
 *      finite first, global-norm clip, warm-up) → BF16 weights rewritten →
 *      model_quantize again. Prompt tokens are context only: the loss covers
 *      the completion tokens (including EOS).
 *   SFT (algorithm TRAIN_ALGO_SFT): the completion ids are the targets; step
 *   2 is skipped; loss = mean cross-entropy over the completion tokens.
 *
 * Atomicity: every check that can fail (rewards, shapes, routing tables,
 * non-finite log-probs, loss or gradients) runs before the optimizer step it
 * guards, so a failing step leaves weights and optimizer state untouched.
 * With several optimizer steps per call (ppo_epochs or minibatches > 1) the
 * steps before a failing one have been applied (the error says which step).
 *
 * Determinism: the microbatch plan is a function of the batch and the
 * options; every sum has a fixed order (model.h, rl_loss.h, optim.h); so two
 * trainers from the same state and batch write bit-identical weights, and
 * the result does not depend on the OpenMP thread count. The first
 * microbatch forward of an update is the same computation as the old-logprob
 * pass (same packing, same weights, same policy), so the first PPO ratio is
 * exactly 1 (train_result.first_ratio_max_dev == 0).
 *
 * Data parallelism (train_opts.dp_ranks = N > 1, device cuda only): rank 0
 * is the trainer's model m on GPU dp_gpus[0] (the current device); ranks
 * 1..N−1 are replicas (model_create + model_cuda_init on dp_gpus[r]) that
 * hold BF16 masters, training views, gradients and activations, but no
 * optimizer state. Per optimizer step (one slice of the plan above):
 *   - the slice's microbatches (the same plan as one GPU: `microbatch`
 *     sequences each, kept samples in index order) are dealt to the ranks in
 *     contiguous runs: rank r takes microbatches [ceil(n·r/N), ceil(n·(r+1)/N))
 *     of the slice's n, so the ranks' shares are contiguous sample ranges in rank
 *     order; a rank with nothing to do idles (n < N);
 *   - the loss denominators are the whole slice's (as on one GPU), so each
 *     rank's gradient is its share of the single-GPU gradient's terms;
 *   - each rank accumulates its microbatches into its own zeroed FP32
 *     gradients (the single-GPU order within the rank), then
 *     sync_dp_reduce_grads sums the ranks in rank order (sync.h: every rank
 *     ends with ((G_0 + G_1) + …) bit for bit);
 *   - AdamW runs on rank 0 only (the optimizer state exists there once),
 *     then rank 0's new BF16 masters are broadcast (bytes) to every replica,
 *     which re-quantizes its training views: every replica's weights are
 *     bit-identical to rank 0's by construction;
 *   - the old-logprob pass runs on rank 0 alone (the same packing as one GPU).
 * Microbatches run round-robin over the ranks (rank 0's first, rank 1's
 * first, …, rank 0's second, …) from one thread: a rank's backward is queued
 * without waiting, so it overlaps the next rank's forward; each forward
 * waits for its log-probs (the loss is computed on the host).
 * What equals a single-GPU run, bit for bit (same recipe, same `microbatch`,
 * gpus.train = [dp_gpus[0]]):
 *   - the old-logprob pass, hence logp_old, the mismatch metrics and R3;
 *   - every microbatch's forward, loss and d loss/d logp (same packing, same
 *     weights, same denominators) — so the first step's loss metrics;
 *   - the gradients whenever every rank gets at most one microbatch per step
 *     (n ≤ N: e.g. microbatch ≥ ceil(batch / N)) for every parameter whose
 *     backward adds into its FP32 buffer once per microbatch with a single
 *     rounding: single GPU g = (0 + a) + b, DP (0 + a) + (0 + b), and 0 + x
 *     == x here because an accumulator that starts at +0 never holds −0.
 *     That covers the linear weights (cuBLASLt dW GEMM accumulating into the
 *     FP32 buffer, beta 1 — assumed a single rounding of acc + C; the GPU
 *     test "dp" checks it on the real run).
 * What is NOT bitwise equal in general (hence the weights after a step,
 * and the samples of every later iteration, can differ from one GPU):
 *   - RMSNorm weights (input/post-attention/final/q/k norms): the backward
 *     adds a double-precision column sum into the FP32 buffer in double
 *     (dw = f32(f64(dw) + s)): one GPU rounds (G_0 + s_1) once, DP rounds
 *     s_1 to FP32 first;
 *   - the embedding rows of tokens that occur more than once in a later
 *     rank's share (scatter-add token by token: one GPU ((G + d1) + d2), DP
 *     G + (d1 + d2)), and with tied embeddings the lm_head's dW lands in the
 *     same buffer as the embedding's scatter-add (two adds per microbatch);
 *   - with more than one microbatch per rank, any parameter (the grouping
 *     of the microbatch sum changes);
 *   - the global gradient norm, clip coefficient and AdamW update are
 *     computed from the reduced gradients, so they follow the above.
 * What IS bitwise in every case: two DP runs of the same recipe and GPUs
 * (weights, optimizer state, samples), a DP run killed and resumed vs the
 * uninterrupted one, and the replicas among themselves (broadcast masters).
 * Checkpoints hold rank 0's masters and optimizer state, as on one GPU; a
 * load uploads them to rank 0 and broadcasts the masters to the replicas.
 *
 * Checkpoint state (trainer_state_list / _save / _load): named tensors
 *   optim.step           I64 [1]   optimizer updates done so far
 *   optim.m.<param>      F32 [shape of the parameter]   first moment
 *   optim.v.<param>      F32                             second moment
 *   optim.main.<param>   F32        FP32 main parameters (main_params fp32 only)
 *   train.ref.<param>    BF16       reference policy weights (kl_coef > 0 only; F32 in f32 mode)
 * with <param> the checkpoint (hub) name of the model parameter, shapes as the
 * checkpoint stores the weight ([rows] for vectors, [rows, cols] for matrices).
 * The BF16 master weights themselves are the model's (saved by the runner). */
#ifndef RLRUN_TRAIN_H
#define RLRUN_TRAIN_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/optim.h"
#include "kernels/qtensor.h"
#include "stages/rl_loss.h"
#include "stages/rl_metrics.h"
#include "stages/rollout.h"
#include "state/safetensors.h"

struct model;
typedef struct trainer trainer;

/* Most data-parallel ranks (GPUs of one process). */
#define TRAIN_DP_MAX 16

/* Algorithms (same order as the recipe's train.algorithm). */
typedef enum train_algo_kind {
  TRAIN_ALGO_GRPO,
  TRAIN_ALGO_DR_GRPO,
  TRAIN_ALGO_RLOO,
  TRAIN_ALGO_SFT
} train_algo_kind;

/* Extra metric names of the train stage (the RL.md ones are in rl_metrics.h). */
#define TRAIN_M_TOKENS "train/tokens"             /* completion tokens in the loss */
#define TRAIN_M_TOKENS_PER_S "train/tokens_per_s" /* forward+backward tokens / train seconds */
#define TRAIN_M_SECONDS "train/seconds"           /* wall time of trainer_step */
#define TRAIN_M_OPTIM_STEP "optim/step"           /* optimizer updates so far */
#define TRAIN_M_CLIP_COEF "optim/clip_coef"       /* gradient scale of the last step */

/* Called after the gradients of an optimizer step are accumulated, before the
 * step (tests inject faults here; NULL = none). Nonzero return stops the step. */
typedef int (*train_grad_hook)(void *ud, struct model *m, int64_t step);

/* What the trainer does; train_opts_default gives RL.md's defaults. The
 * runner maps the resolved recipe onto it (train.* keys, precision.train,
 * rollout.temperature). */
typedef struct train_opts {
  int algorithm;          /* train_algo_kind (grpo) */
  rl_loss_cfg loss;       /* clip eps, TIS/IcePop, kl_beta, entropy_coef, aggregation
                             (loss.kind is set from algorithm) */
  optim_cfg optim;        /* AdamW: lr, warm-up, betas, eps, weight decay, grad clip, main params */
  quant_policy policy;    /* the TRAINING precision (default: BF16 everywhere) */
  double temperature;     /* the rollout temperature T of log p (1; 0 = greedy → 1) */
  int r3;                 /* replay the rollout's routed experts (MoE models; ignored on dense) */
  int recompute;          /* activation recomputation (model_fwd_opts.recompute; device cuda —
                             the CPU trainer keeps every activation) */
  int64_t microbatch;     /* sequences per forward/backward (4) */
  int ppo_epochs;         /* passes over the batch per call (1) */
  int minibatches;        /* optimizer steps per pass: the kept samples cut in this many
                             contiguous slices (1) */
  int f32;                /* the FP32-exact model mode (model.h; needs the model's w32) */
  train_grad_hook grad_hook;
  void *grad_hook_ud;
  int device;             /* train_device (cpu). cuda: forward/backward/AdamW on the model's
                             CUDA copy (m->cu; uploaded by trainer_new when unset), the RL
                             loss on the host; f32, kl_coef > 0 and grad_hook are refused */
  int dp_ranks;           /* data parallelism (device cuda): ranks on dp_gpus[0..dp_ranks);
                             0 or 1 = one GPU (the default); see "Data parallelism" above */
  int dp_gpus[TRAIN_DP_MAX]; /* dp_gpus[0]: the current device, where m->cu lives */
  uint64_t dp_bucket_bytes;  /* gradient all-reduce buckets (0 = sync's default) */
} train_opts;

/* Where the trainer's model math runs (train_opts.device). */
typedef enum train_device { TRAIN_DEVICE_CPU, TRAIN_DEVICE_CUDA } train_device;

void train_opts_default(train_opts *o);
/* Checks the options (RL_EXIT_USAGE naming the bad value). */
int train_opts_check(const train_opts *o, rl_err *e);

/* What one trainer_step did. metrics: every metric of the iteration (RL.md:
 * reward/mean, reward/std, groups/degenerate (these three not for sft), loss, loss/policy,
 * policy/clipfrac, mismatch/..., tis/..., r3/overlap, optim/grad_norm, optim/lr,
 * train/tokens_per_s, …) for rl_metric_list_store; free with train_result_free. */
typedef struct train_result {
  double reward_mean, reward_std;
  int64_t n_degenerate;      /* groups whose rewards were all equal */
  rl_loss_out loss;          /* summed over the microbatches of the LAST optimizer step */
  double loss_mean;          /* loss averaged over the optimizer steps of this call */
  double clipfrac;           /* clipped / kept tokens over every step of this call */
  rl_mismatch mismatch;      /* old-logprob pass vs rollout (zeros for SFT) */
  double r3_overlap;         /* NaN when R3 is off */
  optim_info optim;          /* the last optimizer step */
  double grad_norm_mean;     /* mean global gradient norm over the steps */
  int64_t steps;             /* optimizer steps done by this call */
  int64_t n_tokens;          /* completion tokens in the loss (per epoch) */
  int64_t n_forward_tokens;  /* tokens through forward(+backward), all passes */
  double first_ratio_max_dev; /* max |logp_new − logp_old| over the first microbatch of the
                                 first step (0 exactly when nothing drifted) */
  double seconds, tokens_per_s;
  rl_metric_list metrics;
} train_result;

void train_result_free(train_result *r);

/* A trainer over model m (not owned; it must outlive the trainer). Allocates
 * the gradients and the optimizer state (moments zero, FP32 main = the
 * current weights: w32 in f32 mode, else the BF16 master); with kl_coef > 0
 * keeps a copy of the current weights as the reference policy. */
int trainer_new(struct model *m, const train_opts *o, trainer **out, rl_err *e);
void trainer_free(trainer *t);
/* Optimizer updates done so far (optim.step). */
int64_t trainer_step_count(const trainer *t);

/* Device trainer: copy the device BF16 masters into the model's host p->w and
 * the device optimizer state into the host buffers of trainer_state_list
 * (before a checkpoint; trainer_state_list/_save copy the optimizer state
 * themselves, not the masters). CPU trainer: no-op. */
int trainer_sync_host(trainer *t, rl_err *e);

/* One update from a batch with rewards (see the top of this file). */
int trainer_step(trainer *t, const rollout_batch *b, train_result *res, rl_err *e);

/* Per-token log-probs of the completion tokens of every sample with the
 * current weights in the training precision (the old-logprob pass alone):
 * logp[i] points at n_completion floats the caller allocated. */
int trainer_logprobs(trainer *t, const rollout_batch *b, float *const *logp, rl_err *e);

/* ---------------------------------------------------------------- checkpoint state */

#define TRAIN_STATE_NAME_MAX 128

/* One named tensor of the trainer's state; data points into the trainer's own
 * buffers (write them to save; fill them, then trainer_state_apply, to load). */
typedef struct train_state_tensor {
  char name[TRAIN_STATE_NAME_MAX];
  st_dtype dtype; /* ST_F32, ST_I64 (optim.step) or ST_BF16 (train.ref.*) */
  int ndim;
  int64_t shape[2]; /* [rows] (ndim 1, shape[1] = 0) or [rows, cols] */
  void *data;
  uint64_t nbytes;
} train_state_tensor;

/* The list of state tensors (order fixed: optim.step, then per parameter in
 * model order m, v, main, then ref). *out is malloc'd; free it (not the data). */
int trainer_state_list(trainer *t, train_state_tensor **out, int *n, rl_err *e);
/* After the state buffers were filled from a checkpoint: the BF16 weights
 * (and w32 in f32 mode) are rewritten from the FP32 main parameters (main
 * params fp32) and the training views re-quantized. A non-finite value is an
 * error naming the tensor. */
int trainer_state_apply(trainer *t, rl_err *e);
/* Write the state into one safetensors file (atomic: temporary name, fsync,
 * rename), with __metadata__ format = "rlrun-train-state", version = "1". */
int trainer_state_save(trainer *t, const char *path, rl_err *e);
/* Read it back: every tensor of trainer_state_list must be there with its
 * dtype and shape (errors name the tensor and the file), then
 * trainer_state_apply. optim.step may also be F32/F64/I32 [1] or a scalar. */
int trainer_state_load(trainer *t, const char *path, rl_err *e);

#endif
