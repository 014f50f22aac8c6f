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
 * made on first use and re-made when a batch needs more positions; stop
 * strings are refused (RL_EXIT_USAGE), completion_text is the decoded
 * completion (special tokens skipped). */
typedef struct loop_gpu {
  rollout_cuda_engine *eng;
  int slots;
  int64_t max_len;
} loop_gpu;
int loop_gpu_wanted(const recipe *r);
int loop_gpu_generate(loop_gpu *g, model *m, const quant_policy *pol, const tokenizer *tok,
                      const prompt_item *prompts, int64_t n_prompts, int G, int64_t iteration,
                      const rollout_opts *o, rollout_batch *out, rl_err *e);
void loop_gpu_free(loop_gpu *g);

#endif
