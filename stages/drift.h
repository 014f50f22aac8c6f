/* drift.h — the rollout/train drift measurement of bench/bench_drift.c (issue
 * #12): one model, one fixed set of sampled sequences, and for a (rollout,
 * train) pair of quant_policies the mismatch metrics of RL.md between the
 * rollout log-probs and the trainer log-probs of every sampled token.
 *
 *   drift_sample_opts so = {.n_seq = 64, .n_prompt = 16, .n_gen = 256, .seed = 1};
 *   drift_seqs s;
 *   drift_sample_cpu(m, &bf16, &so, &s, &e);     rollout engine (stages/rollout.h), or
 *   drift_sample_cuda(m, &bf16, &so, &s, &e);    the CUDA model, full forward per step
 *   drift_result r;
 *   drift_measure(m, &s, &fp8, &bf16, DRIFT_CUDA, &r, &e);   r.plain, r.r3, r.r3_overlap
 *   drift_measure_engine_cuda(m, &so, &fp8, &bf16, &r, NULL, &e);   engine mode (below)
 *   drift_seqs_free(&s);
 *
 * Sequences: n_seq sequences of n_prompt prompt tokens (drawn uniformly from
 * the vocabulary by a counter-based hash of (seed, sequence, position)) and
 * n_gen tokens sampled from the model at temperature 1 (no EOS: every
 * sequence has the same length), keyed by the sampler's (seed, iteration 0,
 * sequence, 0, position). The same sequences serve every pair.
 *
 * Both sides are a full forward of the packed sequences (model_forward on
 * the CPU, model_cuda_forward on the GPU) with the model quantized for that
 * side's policy, then the per-token log-probs at temperature 1 by the same
 * function. The rollout side stands for the rollout engine: on the CPU its
 * decode logits equal the full forward's bit for bit in every format but NVFP4
 * experts (model/decode.h runs NVFP4 expert rows one at a time, so their
 * per-tensor activation scale differs). The CUDA engine's do not (its decode
 * attention sums in another order): the engine mode below measures it.
 * Measured tokens: the n_gen sampled ones of every sequence (δ_t over
 * n_seq · n_gen tokens, in sequence order, through rl_metrics.h).
 *
 * MoE (R3): the trainer side runs twice, with its own top-k routing (plain)
 * and replaying the rollout side's routed ids of every token and MoE layer
 * (r3, model_fwd_opts.replay_ids). r3_overlap is the runner's r3/overlap:
 * over every token of the R3 forward and every MoE layer, the fraction of
 * replayed ids the trainer's router would have chosen itself. Dense models:
 * r3 = plain, r3_overlap NaN.
 *
 * Engine mode (drift_measure_engine_cuda): the rollout side IS the CUDA
 * rollout engine (stages/rollout_cuda.h: prefill, KV-cache decode steps,
 * fused sampler). Per pair, an engine in the ROLLOUT policy (slots = n_seq,
 * max_len = n_prompt + n_gen) generates n_gen tokens for each of the fixed
 * set's prompts (the same prompt tokens; T = 1, ignore_eos, seed o->seed,
 * iteration 0, G = 1, so the sampler key of sequence i, position j is
 * (seed, 0, i, 0, j) as above), and the rollout log-probs are the engine's
 * own logp_rollout. So the TOKEN SETS DIFFER PER PAIR: each pair samples in
 * its own rollout precision (pairs with the same rollout policy get the same
 * set, the engine being deterministic). The trainer side is drift_measure's:
 * the model re-quantized for the train policy (the engine quantizes the
 * device views for its policy; the engine is freed first), a full forward of
 * the packed prompt + completion sequences, log-probs at T = 1; MoE plain and
 * R3 replaying the engine's routed ids (rollout_sample.routed). The engine
 * never feeds the last generated token, so its rows hold −1: R3 fills them
 * with the trainer's own plain routing (they change only that position's
 * logits, which score no token) and r3/overlap leaves them out. A full
 * forward in the rollout policy gives the entropy and the engine check
 * (drift_result.engine: that forward vs the engine's log-probs on the same
 * tokens, i.e. decode vs prefill numerics). drift_measure_batch is the same
 * measurement for a batch of either engine (the CPU tests use it).
 *
 * Token files (drift_seqs_save / _load): "RLDRIFT1" magic, then u32 version
 * 1, n_seq, n_prompt, n_gen, then n_seq·(n_prompt+n_gen) int32 tokens, all
 * little-endian; a fixed set can be measured again without re-sampling. */
#ifndef RLRUN_DRIFT_H
#define RLRUN_DRIFT_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/qtensor.h"
#include "stages/rl_metrics.h"

struct model;
struct rollout_batch;

/* Where drift_measure runs its forwards. */
typedef enum drift_device { DRIFT_CPU, DRIFT_CUDA } drift_device;

/* How the sequences are drawn. */
typedef struct drift_sample_opts {
  int n_seq, n_prompt, n_gen; /* >= 1 each */
  uint64_t seed;
  int progress; /* drift_sample_cuda: a line on stderr every 32 positions (benchmarks) */
} drift_sample_opts;

/* The fixed set: sequence i is tokens[i·len .. (i+1)·len−1], len = n_prompt + n_gen. */
typedef struct drift_seqs {
  int n_seq, n_prompt, n_gen;
  int32_t *tokens;
  float *logp_engine; /* [n_seq · n_gen] the rollout engine's own log-probs
                         (drift_sample_cpu), else NULL */
  double wall_s;      /* time the sampling took */
} drift_seqs;

/* One pair's result. */
typedef struct drift_result {
  int moe;             /* the model routes (R3 measured) */
  rl_mismatch plain;   /* trainer with its own routing */
  rl_mismatch r3;      /* trainer replaying the rollout's routing (= plain when dense) */
  double r3_overlap;   /* NaN when dense */
  double entropy;      /* mean entropy of the rollout side's distributions over the
                          measured tokens (nats) */
  int has_engine;      /* s->logp_engine was given (always in the engine mode): */
  rl_mismatch engine;  /* rollout-side forward vs the rollout engine's own log-probs
                          (the engine check; meaningful when the rollout policy is the
                          one the set was sampled in) */
  double wall_s;
} drift_result;

/* Sample the set with the CPU rollout engine under `policy` (the model's
 * views are re-made for it). Fills *out (drift_seqs_free). */
int drift_sample_cpu(struct model *m, const quant_policy *policy, const drift_sample_opts *o,
                     drift_seqs *out, rl_err *e);
/* The same sampling contract on the GPU: one full model_cuda_forward of the
 * growing sequences per generated position, the last row of each sequence
 * sampled by the CUDA sampler (stages/sampler.h). Initialises m->cu when
 * needed. RL_EXIT_HARDWARE without CUDA. */
int drift_sample_cuda(struct model *m, const quant_policy *policy, const drift_sample_opts *o,
                      drift_seqs *out, rl_err *e);
void drift_seqs_free(drift_seqs *s);
/* Write / read a token file (format above); load checks magic, version,
 * sizes, and every id against vocab (vocab <= 0: not checked). */
int drift_seqs_save(const drift_seqs *s, const char *path, rl_err *e);
int drift_seqs_load(const char *path, int64_t vocab, drift_seqs *out, rl_err *e);

/* Measure one (rollout, train) pair on set s (see above). The model's
 * quantized views are left in the train policy. */
int drift_measure(struct model *m, const drift_seqs *s, const quant_policy *rollout,
                  const quant_policy *train, drift_device dev, drift_result *out, rl_err *e);

/* Engine mode (above): sample with the CUDA rollout engine in `rollout`, then
 * measure against the trainer in `train`. set (non-NULL) receives the pair's
 * sequences and the engine's log-probs (wall_s = the generate call;
 * drift_seqs_free). Initialises m->cu when needed; the views are left in the
 * train policy. RL_EXIT_HARDWARE without CUDA or GPU. */
int drift_measure_engine_cuda(struct model *m, const drift_sample_opts *o, const quant_policy *rollout,
                              const quant_policy *train, drift_result *out, drift_seqs *set, rl_err *e);
/* The trainer side of the engine mode for batch b of either engine (every
 * sample n_prompt + n_completion tokens of the same lengths, logp_rollout
 * set; MoE models: routed for every layer, −1 rows = not fed). `rollout` is
 * the policy b was generated in (the entropy and engine-check forward). set
 * as above (wall_s = b->wall_s). RL_EXIT_USAGE for a batch of another shape. */
int drift_measure_batch(struct model *m, const struct rollout_batch *b, const quant_policy *rollout,
                        const quant_policy *train, drift_device dev, drift_result *out, drift_seqs *set,
                        rl_err *e);

#endif
