/* rollout.h — the rollout stage: G sampled completions per prompt from the
 * model in the ROLLOUT precision, with per-token log-probs and (MoE) the
 * routed experts of every token (R3).
 *
 *   rollout_engine *eng;
 *   rollout_engine_new(m, &rollout_policy, tok, NULL, &eng, &e);   // m: model.h
 *   rollout_opts o; rollout_opts_default(&o);
 *   o.seed = recipe.seed; o.max_new_tokens = 256; o.temperature = 1.0; ...
 *   rollout_batch b;
 *   rollout_generate(eng, items, n_prompts, G, iteration, &o, &b, &e); // items: prompts.h
 *   ... b.s[i].completion_ids, b.s[i].logp_rollout, b.s[i].routed ...
 *   ... the runner fills b.s[i].reward, the trainer reads the batch ...
 *   rollout_batch_free(&b); rollout_engine_free(eng);
 *
 * The batch (what reward hook, SQLite and trainer read):
 *   - n = n_prompts · G samples, prompt-major: s[p·G + g] is sample g of
 *     prompt p (p = prompt_index, g = sample_index).
 *   - prompt_ids are exactly the ids the model saw before the completion
 *     (BOS first when opts.add_bos and the tokenizer has one); the trainer's
 *     sequence is prompt_ids ++ completion_ids, and logp_rollout[i] is the
 *     log-prob of completion_ids[i] given everything before it.
 *   - logp_rollout[i] = log_softmax(logits / T)[token] of the FULL
 *     temperature-scaled distribution the token was sampled from (RL.md; T = 1
 *     for greedy / T = 0), computed from the very logits the sampler used.
 *   - completion_ids keep every generated token, EOS included (it has a
 *     log-prob and is trained on); completion_text is the stop-rule text
 *     (stages/stop.h: specials add no text; a stop string ends the text).
 *     Ids past the tokenizer's vocabulary (a model vocabulary padded beyond
 *     it) are kept too and add no text.
 *   - routed (MoE models only, else NULL): [n_prompt + n_completion][L][k]
 *     int32, position-aligned with prompt_ids ++ completion_ids: the top-k
 *     expert ids (router choice order) each token was routed to as model
 *     input, in every layer l = 0..L−1 (route_layers = L = all decoder
 *     layers, route_topk = k; dense layers of a MoE model hold −1). Exactly
 *     what a full forward of the sequence in the rollout precision routes, so
 *     it is a complete R3 replay table: rollout_routed_layer() gives one
 *     layer's [T, k] block for model_fwd_opts.replay_ids.
 *
 * Agreement with the trainer: the decode logits of a token equal those of a
 * full forward (model_forward, `rlrun score`) over the same sequence in the
 * same precision bit for bit — the BF16 KV cache holds the keys before
 * QK-norm/RoPE, which in the POLICY mode are BF16 GEMM outputs and so stored
 * exactly. logp_rollout then differs from the trainer's log_softmax only by
 * the summation order of the log-sum-exp (both FP64): ≤ 2e-6 measured.
 *
 * Determinism: the token at position j of sample (prompt p, sample g) is a
 * function of (model weights, prompt ids, opts, seed, iteration, p, g, j)
 * alone: the sampler's counter-based draw (stages/sampler.h) is keyed by
 * (seed, iteration, prompt index p, sample index g, position j = 0 for the
 * first generated token), and every per-sequence computation (forward of one
 * row, attention over its own cache, sampling) has a fixed order that does not
 * depend on which slot it sits in, on the slot count, or on the thread count.
 * So batch sizes 1, 7 and 64 give bit-identical batches. */
#ifndef RLRUN_ROLLOUT_H
#define RLRUN_ROLLOUT_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/qtensor.h"
#include "stages/prompts.h"
#include "stages/stop.h"
#include "stages/tokenizer.h"

struct model;
typedef struct rollout_engine rollout_engine;

/* One sampled completion. Every pointer is owned by the batch (malloc'd). */
typedef struct rollout_sample {
  int64_t prompt_index; /* p: index of the prompt in this iteration's batch */
  int64_t sample_index; /* g: 0..G-1 inside the group */
  int64_t data_index;   /* prompt_item.index (JSONL index; task: -1) */
  int64_t data_epoch;   /* prompt_item.epoch */
  char *prompt_text;
  char *extra_json;     /* the prompt line's other fields ("{}" when none) */
  int32_t *prompt_ids;
  int64_t n_prompt;
  int32_t *completion_ids;
  int64_t n_completion;
  char *completion_text; /* NUL-terminated */
  float *logp_rollout;   /* [n_completion] */
  finish_reason finish;  /* FINISH_EOS | FINISH_STOP | FINISH_LENGTH */
  int32_t stop_index;    /* which stop string matched (FINISH_STOP), else -1 */
  int32_t *routed;       /* [n_prompt + n_completion][route_layers][route_topk] or NULL */
  double reward;         /* 0 from rollout; filled by the runner (Lua reward) */
} rollout_sample;

/* The samples of one iteration. */
typedef struct rollout_batch {
  int64_t iteration;
  int64_t n_prompts, group; /* B prompts, G samples each */
  int64_t n;                /* B · G */
  rollout_sample *s;        /* [n], s[p·G + g] */
  int route_layers;         /* L when routed is recorded (MoE), else 0 */
  int route_topk;           /* k, else 0 */
  int64_t n_generated;      /* Σ n_completion */
  double wall_s;            /* time rollout_generate took */
} rollout_batch;

/* How to sample (per call of rollout_generate). */
typedef struct rollout_opts {
  uint64_t seed;
  double temperature;     /* T > 0; 0 = greedy */
  int greedy;             /* 1: argmax whatever T */
  double top_p;           /* (0, 1]; 1 = off */
  int64_t top_k;          /* 0 = off */
  double min_p;           /* 0 = off */
  int64_t max_new_tokens; /* >= 1 */
  int64_t max_prompt_tokens; /* 0 = no limit; a longer prompt is an error naming it */
  char *const *stop;      /* stop strings */
  int n_stop;
  int exclude_stop;       /* cut the completion text before the stop string */
  int add_bos;            /* prefix the tokenizer's BOS (default 1; no-op without one) */
  int ignore_eos;         /* 1: EOS does not end a sequence (benchmarks) */
  int max_slots;          /* sequences decoded together (the decode batch); 0 = 64 */
  int32_t eos_id;         /* -2 (default): the tokenizer's EOS; -1: none; else this id */
  const int32_t *stop_ids; /* more ids that end a sequence as EOS does (with a tokenizer; not under ignore_eos) */
  int n_stop_ids;
  int64_t prompt_base;    /* index in the iteration's batch of prompts[0] (default 0): a part
                             of a batch split over engines (rollout_split_generate) keys its
                             draws and numbers its samples (prompt_index = prompt_base + p,
                             also in error messages) as the whole batch does */
  const int *cancel;      /* NULL, or a flag read (atomically) before every engine step: once
                             nonzero, the call stops there and fails with "rollout cancelled"
                             (rollout_split_generate raises its own when a part fails) */
} rollout_opts;

/* Engine options; NULL = defaults. */
typedef struct rollout_engine_opts {
  int f32;         /* the FP32-exact mode of model.h (needs the model's w32) */
  int64_t max_len; /* KV cache length per slot; 0 = from the opts of each call */
  int kv_f32;      /* FP32 KV cache instead of BF16 (always so in the f32 mode) */
  int kv_post_rope; /* BF16 cache of keys after QK-norm + RoPE (the usual layout; one
                       more rounding than the full forward) instead of the exact
                       pre-RoPE keys (model/kvcache.h); for measurements */
} rollout_engine_opts;

/* T = 1, no masks, max_new_tokens 256, add_bos 1, max_slots 64. */
void rollout_opts_default(rollout_opts *o);
/* The stop rule of o for a sequence (both engines): the EOS (o->eos_id, or
 * -2: tok's), the extra end ids, stop strings and length; no end id under
 * ignore_eos. */
stop_rule rollout_stop_rule(const rollout_opts *o, const tokenizer *tok);

/* An engine over model m (not owned; must outlive the engine) and tokenizer
 * t (not owned; may be NULL for rollout_generate_ids: then completion texts
 * are empty, stop strings are refused and EOS needs opts.eos_id). policy:
 * the rollout precision; rollout_generate re-runs model_quantize when the
 * model's views are stale or in another policy (NULL: use the model's
 * current views as they are). */
int rollout_engine_new(struct model *m, const quant_policy *policy, const tokenizer *t,
                       const rollout_engine_opts *eo, rollout_engine **out, rl_err *e);
void rollout_engine_free(rollout_engine *eng);

/* Generate G completions for each of n_prompts prompts (prompts.h items) of
 * `iteration`; fills *out (free with rollout_batch_free; on error *out is
 * left empty). Errors: RL_EXIT_USAGE (bad opts, a prompt the tokenizer
 * cannot encode or longer than max_prompt_tokens, a sequence longer than the
 * model's max_position_embeddings), RL_EXIT_FAIL (non-finite logits: the
 * message names prompt, sample and position). */
int rollout_generate(rollout_engine *eng, const prompt_item *prompts, int64_t n_prompts, int G,
                     int64_t iteration, const rollout_opts *o, rollout_batch *out, rl_err *e);

/* Same, from token ids directly (tests, benchmarks, `rlrun score`-style
 * checks): prompt p is ids[p][0 .. n_ids[p]−1], used as is (no BOS added);
 * texts are decoded from the ids. */
int rollout_generate_ids(rollout_engine *eng, const int32_t *const *ids, const int64_t *n_ids,
                         int64_t n_prompts, int G, int64_t iteration, const rollout_opts *o,
                         rollout_batch *out, rl_err *e);

void rollout_batch_free(rollout_batch *b);

/* ---- a batch split over several engines (e.g. one per rollout GPU)
 *
 * rollout_split_range: part k of `parts` of n prompts is the contiguous run
 * [lo, hi) = [⌊n·k/parts⌋, ⌊n·(k+1)/parts⌋) (sizes differ by at most one;
 * a part may be empty when parts > n). A prompt's G samples stay together.
 *
 * rollout_split_generate: runs fn for every part at once — part 0 on the
 * calling thread, parts 1 … parts−1 each on a thread of its own — with the
 * part's prompts (prompts + lo, hi − lo of them) and opts whose prompt_base
 * is o->prompt_base + lo, then concatenates the parts' batches in part order
 * (rollout_batch_concat). By the determinism contract above, the result is
 * bit-identical to one engine generating the whole batch. fn must fill *out
 * as rollout_generate does (prompt_index counting from the base it is
 * given); it may leave *out empty on error. The first part to fail cancels
 * the others: their opts' cancel is a flag of the split's own (the caller's
 * o->cancel is not passed on), raised when a part returns an error, so the
 * other engines stop at their next step instead of finishing their share.
 * Errors: the first failing part's (not a part it cancelled), prefixed
 * "rollout part k of P: "; every batch is freed and *out left empty.
 * parts: 1 … ROLLOUT_SPLIT_MAX. */
#define ROLLOUT_SPLIT_MAX 64
typedef int (*rollout_part_fn)(void *ctx, int part, const prompt_item *prompts, int64_t n_prompts, int G,
                               int64_t iteration, const rollout_opts *o, rollout_batch *out, rl_err *e);
void rollout_split_range(int64_t n_prompts, int parts, int k, int64_t *lo, int64_t *hi);
/* 1 when o asks the engine to stop (o->cancel is set and nonzero). */
int rollout_cancelled(const rollout_opts *o);
/* 1 when called on a thread of its own that rollout_split_generate started for
 * a part (it exits when the part returns), 0 on the calling thread — where part
 * 0 runs, and any part whose thread could not be created. */
int rollout_split_on_worker(void);
int rollout_split_generate(int parts, rollout_part_fn fn, void *ctx, const prompt_item *prompts, int64_t n_prompts,
                           int G, int64_t iteration, const rollout_opts *o, rollout_batch *out, rl_err *e);
/* Move the samples of parts[0 … n) (consecutive prompt runs of one
 * iteration, same G) into *out in order; the parts are left empty. wall_s:
 * the longest part's. Refused (RL_EXIT_FAIL, nothing moved) when the parts'
 * iteration, group or routing shape differ or a part's prompt_index does not
 * continue where the previous part ended. */
int rollout_batch_concat(rollout_batch *parts, int n, rollout_batch *out, rl_err *e);

/* Layer l's routing of sample s as [n_prompt + n_completion][k] into dst
 * (the replay_ids layout of model_fwd_opts); 0, or −1 when the batch has no
 * routing or l is out of range. */
int rollout_routed_layer(const rollout_batch *b, const rollout_sample *s, int l, int32_t *dst);

#endif
