/* loop_int.h — internals of the run loop shared by loop.c, loop_model.c and
 * loop_batch.c (not for other modules). */
#ifndef RLRUN_LOOP_INT_H
#define RLRUN_LOOP_INT_H

#include "model/model.h"
#include "runner/recipe.h"
#include "stages/rollout.h"
#include "stages/tokenizer.h"
#include "stages/train.h"
#include "state/ckpt.h"
#include "state/store.h"
#include "stages/rollout_cuda.h"
#include "stages/prompts.h"
#include "stages/sync.h"

/* The model a recipe names: model.path (HF dir), model.checkpoint (a run's
 * checkpoint directory) or model.init (a fresh model: weights drawn from
 * N(0, 0.02²) by a counter-based generator keyed by (seed, tensor, element),
 * norms 1). *config_json gets the config.json text the checkpoints carry. */
int loop_model_build(const recipe *r, const tokenizer *tok, model **out, char **config_json, rl_err *e);
/* The config.json of a fresh model (model.init) — also what model_config_parse reads. */
char *loop_model_init_config(const recipe *r, const tokenizer *tok);
/* The model's BF16 master weights as checkpoint tensors (data points into m). */
ckpt_tensor *loop_model_tensors(model *m, int *n);
/* Copy a checkpoint's model.safetensors into the model's BF16 weights (every
 * tensor must be present, BF16, with the parameter's shape). */
int loop_model_load_weights(model *m, const char *path, rl_err *e);
/* The trainer's state as checkpoint tensors (data points into the trainer);
 * *out is one block holding the tensors and their names: free(*out). */
int loop_trainer_tensors(trainer *t, ckpt_tensor **out, int *n, rl_err *e);

/* Quant policy of a precision name (bf16, fp8-block, mxfp8, nvfp4). */
void loop_policy(prec_format f, int emulate, int ue8m0, quant_policy *p);

/* Store rows of a batch (pointers into b; prompt_index = the data-stream
 * position (iteration−1)·B + p). *out is malloc'd. */
store_sample *loop_batch_to_rows(const rollout_batch *b, int64_t batch_size);
/* Rebuild iteration k's batch from its committed samples; B prompts × G. */
int loop_batch_from_store(store *s, int64_t iteration, int64_t B, int64_t G, int route_layers,
                          int route_topk, rollout_batch *out, rl_err *e);

/* SFT (train.algorithm sft): the JSONL field holding the target text. */
#define LOOP_SFT_FIELD "completion"
/* Iteration k's SFT batch (runner/loop_sft.c): B examples of the data stream
 * (prompts_batch of (seed, k, B)) as [BOS] ++ prompt → completion ++ [EOS],
 * one sample per example (group 1); max_len > 0 bounds the sequence length. */
int loop_sft_batch(prompt_source *src, const tokenizer *tok, uint64_t seed, int64_t k, int64_t B, int64_t max_len,
                   rollout_batch *out, rl_err *e);

/* GPU backends (runner/loop_gpu.c). loop_gpu_wanted: the recipe's run class
 * on this machine is a GPU. loop_gpu_generate: rollout_generate's contract
 * (text prompts → a batch) on the CUDA engine over m (model_cuda_init done),
 * or over the rollout replica when the run has one, made on first use and
 * re-made when a batch needs more positions; stop strings are refused
 * (RL_EXIT_USAGE), completion_text is the decoded completion (special tokens
 * skipped). */

/* Where a GPU run's trainer and rollout engine live: one GPU each; the same
 * one is colocated (the sync re-quantizes on the device), two different ones
 * give the rollout engine a replica of the model on its own GPU (the sync
 * re-quantizes on the train GPU and broadcasts the bytes over NCCL). */
typedef struct loop_place {
  int train_gpu, rollout_gpu;
  int nccl; /* 1: separate GPUs, sync over NCCL */
  int dp;   /* data-parallel ranks: gpus.train's length (1: one train GPU) */
  int train_gpus[TRAIN_DP_MAX]; /* gpus.train; [0] = train_gpu, rank 0 */
} loop_place;
/* The placement of recipe r on a machine with n_gpus GPUs: rank 0 =
 * gpus.train[0] (every GPU of gpus.train a data-parallel rank) and
 * gpus.rollout[0]; sync.transport auto → nccl when the rollout GPU is not
 * rank 0's, device when it is. Refused: a rollout list of more than one GPU
 * (the split is not implemented yet) or a GPU the machine lacks
 * (RL_EXIT_HARDWARE); an empty list, a GPU listed twice, the rollout on a
 * rank other than 0, device with two GPUs or nccl with one (RL_EXIT_USAGE). */
int loop_gpu_place(const recipe *r, int n_gpus, loop_place *out, rl_err *e);

typedef struct loop_gpu {
  rollout_cuda_engine *eng;
  int slots;
  int64_t max_len;
  loop_place place;
  model *replica;  /* separate GPUs: the rollout engine's model on the rollout GPU; NULL colocated */
  sync_nccl *nccl; /* separate GPUs: the transport train GPU → rollout GPU */
} loop_gpu;
int loop_gpu_wanted(const recipe *r);
/* Open the devices of a GPU run around the trainer's model m: place it
 * (loop_gpu_place on the GPUs found), model_cuda_init m on the train GPU; with
 * separate GPUs also the replica on the rollout GPU (m's config, host weights
 * left zero and never read; device views made in the rollout policy pol, filled
 * by the first loop_gpu_sync) and the NCCL transport (buckets of
 * sync.bucket_mb). The train GPU is then the current device, and stays it
 * between calls: the trainer and the checkpoints run there;
 * loop_gpu_generate switches to the rollout GPU and back. */
int loop_gpu_open(loop_gpu *g, const recipe *r, model *m, const quant_policy *pol, rl_err *e);
/* The sync of a GPU run (stages/sync.h): sync_colocated(m) on one GPU,
 * sync_nccl_run(m → replica) on two; the same sync_stats either way. */
int loop_gpu_sync(loop_gpu *g, model *m, const quant_policy *p, const sync_opts *o, sync_stats *st, rl_err *e);
int loop_gpu_generate(loop_gpu *g, model *m, const quant_policy *pol, const tokenizer *tok,
                      const prompt_item *prompts, int64_t n_prompts, int G, int64_t iteration,
                      const rollout_opts *o, rollout_batch *out, rl_err *e);
void loop_gpu_free(loop_gpu *g);

#endif
