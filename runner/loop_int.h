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
 * norms 1). *config_json gets the config.json text the checkpoints carry.
 * from, when not NULL, is a checkpoint of the run itself (its resume point)
 * to build a model.checkpoint recipe's model from instead: a resumed chain
 * needs the checkpoint it started from no longer once it has one of its own. */
int loop_model_build(const recipe *r, const tokenizer *tok, const char *from, model **out, char **config_json,
                     rl_err *e);
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
 * (text prompts → a batch) on the CUDA engines of the rollout GPUs, each
 * over m (colocated) or its replica, a contiguous share of the prompts each
 * (one thread a GPU; the batch is bit-identical to one engine's), with the
 * stop rules of the CPU engine (the tokenizer handed to each engine). */

/* Where a GPU run's trainer and rollout engines live. The rollout runs on
 * every GPU of gpus.rollout, each taking a contiguous share of the batch's
 * prompts (rollout_split_generate: bit-identical to one engine). A rollout
 * GPU that is the train GPU (gpus.train[0], data-parallel rank 0) is
 * colocated: its engine reads the trainer's model, whose views the sync
 * re-quantizes on the device. Any other rollout GPU (outside gpus.train)
 * holds a replica of the model; the sync re-quantizes on the train GPU and
 * broadcasts the bytes to all replicas over NCCL. */
#define LOOP_ROLLOUT_MAX 15 /* SYNC_NCCL_MAX_RANKS - 1: the trainer broadcasts to at most 15 replicas */
typedef struct loop_place {
  int train_gpu, rollout_gpu;   /* gpus.train[0]; gpus.rollout[0] */
  int nccl;                     /* 1: some rollout GPU is not the train GPU: sync over NCCL to those */
  int dp;                       /* data-parallel ranks: gpus.train's length (1: one train GPU) */
  int train_gpus[TRAIN_DP_MAX]; /* gpus.train; [0] = train_gpu, rank 0 */
  int n_rollout;                /* gpus.rollout's length: the parts of the rollout split */
  int rollout_gpus[LOOP_ROLLOUT_MAX];
} loop_place;
/* The placement of recipe r on a machine with n_gpus GPUs: rank 0 =
 * gpus.train[0] (every GPU of gpus.train a data-parallel rank); every GPU of
 * gpus.rollout a rollout part; sync.transport auto → nccl when a rollout GPU
 * is not rank 0's, device when the only one is. Refused: a GPU the machine
 * lacks (RL_EXIT_HARDWARE); an empty list, a GPU listed twice, a rollout GPU
 * that is data-parallel rank 1 or later, device with a rollout GPU other
 * than rank 0's, nccl with none (RL_EXIT_USAGE). */
int loop_gpu_place(const recipe *r, int n_gpus, loop_place *out, rl_err *e);

/* One rollout GPU's part: its engine (made on first use, re-made when a
 * batch needs more positions or slots) over the trainer's model (colocated)
 * or over its replica. */
typedef struct loop_roll {
  int gpu;
  model *replica; /* NULL: colocated with the trainer (the engine reads its model) */
  rollout_cuda_engine *eng;
  int slots;
  int64_t max_len;
} loop_roll;

typedef struct loop_gpu {
  loop_place place;
  loop_roll roll[LOOP_ROLLOUT_MAX]; /* [place.n_rollout] */
  sync_nccl *nccl;                  /* the transport train GPU → the replicas' GPUs; NULL without replicas */
} loop_gpu;
int loop_gpu_wanted(const recipe *r);
/* Open the devices of a GPU run around the trainer's model m: place it
 * (loop_gpu_place on the GPUs found), model_cuda_init m on the train GPU; for
 * every rollout GPU other than the train GPU a replica (m's config, host
 * weights left zero and never read; device views made in the rollout policy
 * pol, filled by the first loop_gpu_sync) and, when there is one, the NCCL
 * transport to all of them (buckets of sync.bucket_mb). The train GPU is
 * then the current device, and stays it between calls: the trainer and the
 * checkpoints run there; loop_gpu_generate runs each part with its GPU
 * current (on a thread of its own when there are several) and comes back. */
int loop_gpu_open(loop_gpu *g, const recipe *r, model *m, const quant_policy *pol, rl_err *e);
/* The sync of a GPU run (stages/sync.h): sync_colocated(m) when the only
 * rollout GPU is the train GPU, else sync_nccl_run(m → every replica), which
 * also re-quantizes m's own views (the colocated part's, when there is one);
 * the same sync_stats either way. */
int loop_gpu_sync(loop_gpu *g, model *m, const quant_policy *p, const sync_opts *o, sync_stats *st, rl_err *e);
int loop_gpu_generate(loop_gpu *g, model *m, const quant_policy *pol, const tokenizer *tok,
                      const prompt_item *prompts, int64_t n_prompts, int G, int64_t iteration,
                      const rollout_opts *o, rollout_batch *out, rl_err *e);
void loop_gpu_free(loop_gpu *g);

#endif
