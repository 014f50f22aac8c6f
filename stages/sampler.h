/* sampler.h — one token from one row of logits: temperature, top-k, top-p,
 * min-p, greedy; counter-based randomness; the token's log-prob.
 *
 *   sampler_params p = sampler_default_params();   p.temperature = 0.7; p.top_p = 0.9;
 *   sampler_key k = {seed, iteration, prompt, sample, position};
 *   sampler_out o;
 *   if (sampler_sample(&p, logits, vocab, &k, &o, &e)) ...   o.token, o.logp
 *
 * The contract (the CPU reference here and the CUDA kernel in
 * sampler_cuda.cu follow it bit for bit: they share sampler_math.h):
 *
 * 1. Scaled logits z_i = (double)logit_i / T in FP64, T = temperature, except
 *    T = 1 when T = 0 (greedy). m = max z_i. e_i = smp_exp(z_i - m) (exp of
 *    sampler_math.h: exp(0) = 1 exactly, identical bits on CPU and GPU).
 *    A logit may be -Inf (a masked token: e = 0); NaN or +Inf is an error.
 * 2. Every sum over a row ("Σ" below) is taken in one fixed order: 32-lane
 *    segments summed as a shuffle-down tree (smp_tree32), segment sums added
 *    one tile of 1024 tokens after another into 32 per-segment-slot
 *    accumulators W_0..W_31, then smp_tree32(W). S = Σ e_i.
 * 3. Log-prob (RL.md): logp = (z_tok - m) - log(S): log_softmax(logits/T)
 *    of the FULL temperature-scaled distribution, not of the truncated one —
 *    what the trainer recomputes. logp_kept = (z_tok - m) - log(S_kept) is the
 *    log-prob under the distribution actually drawn from (after masks).
 *    entropy = log(S) - Σ e_i (z_i - m) / S (full distribution, nats).
 * 4. Greedy (greedy flag, or T = 0): the argmax of the logits, ties to the
 *    lowest id; no draw; logp as in 3 (with T = 1 when T = 0, else T).
 * 5. Masks, in Hugging Face's warper order (top-k, then top-p on the top-k
 *    survivors renormalised, then min-p). Tokens are ranked by (logit
 *    descending, id ascending):
 *    - top-k (k > 0, k < vocab): the first k in rank order. k = 1 is argmax.
 *    - top-p (0 < p < 1): with K the top-k survivors, pS = p · Σ_K e_i, and
 *      v* the largest logit whose mass Σ_K{e_i : logit_i >= v*} >= pS, keep
 *      every token of K with logit > v*, and the tokens of K tied at v* in id
 *      order while A + j·e* < pS (j = 0, 1, … their position among the tied,
 *      A = Σ_K{e_i : logit_i > v*}): the smallest rank prefix whose mass
 *      reaches p (a boundary cumulative sum equal to p stops there: that token
 *      is the last one kept); ties at the boundary go to the lower ids.
 *    - min-p (0 < min_p <= 1): keep e_i >= min_p (prob >= min_p · max prob).
 *    p >= 1, k = 0 or k >= vocab, min_p = 0 switch a mask off.
 * 6. The draw: u = smp_uniform(seed, iteration, prompt, sample, position) in
 *    [0, 1) (Philox4x32-10, 53 bits; a function of the key alone, so a
 *    sample never depends on batch size, order or thread count). Inverse CDF
 *    over x_i = e_i for kept tokens, 0 otherwise, in FP64: t = u · S_kept,
 *    then walk the segment slots w = 0..31 (cumulative over W_w), within the
 *    chosen slot the tiles in order (cumulative over segment sums), within the
 *    chosen segment the 32 tokens in id order; at each level the first entry
 *    whose cumulative sum exceeds t is taken (if rounding leaves none, the
 *    last non-zero entry of that level). Tokens with x_i = 0 are never drawn.
 */
#ifndef RLRUN_SAMPLER_H
#define RLRUN_SAMPLER_H

#include <stdint.h>

#include "kernels/common.h"

typedef struct sampler_params {
  double temperature; /* T > 0; 0 = greedy */
  int greedy;         /* 1: argmax whatever T (logp still uses T when T > 0) */
  int64_t top_k;      /* 0 = off */
  double top_p;       /* (0, 1]; 1 = off */
  double min_p;       /* [0, 1]; 0 = off */
} sampler_params;

/* What a draw is a function of (with the logits). Values are taken mod 2^32. */
typedef struct sampler_key {
  uint64_t seed;
  uint32_t iteration, prompt, sample, position;
} sampler_key;

enum sampler_status {
  SAMPLER_OK = 0,
  SAMPLER_NONFINITE = 1, /* a NaN or +Inf logit; token = its index */
  SAMPLER_ALL_MASKED = 2 /* every logit is -Inf */
};

/* One sampled token (the CUDA kernel writes the same struct). */
typedef struct sampler_out {
  int32_t token;
  int32_t status;    /* enum sampler_status */
  int32_t n_kept;    /* tokens left by the masks (1 for greedy) */
  int32_t pad_;
  double logp;       /* log_softmax(logits / T)[token] */
  double logp_kept;  /* log-prob under the masked, renormalised distribution */
  double entropy;    /* of softmax(logits / T), nats */
  double u;          /* the uniform draw (0 for greedy) */
} sampler_out;

/* T = 1, no masks, not greedy. */
sampler_params sampler_default_params(void);
/* RL_EXIT_USAGE with the offending field unless p is valid. */
int sampler_check_params(const sampler_params *p, rl_err *e);
/* The uniform draw of a key (contract step 6). */
double sampler_uniform(const sampler_key *k);

/* Sample one token from logits[vocab] (FP32). Returns 0, or RL_EXIT_FAIL
 * (non-finite or all -Inf logits: out->status says which) or RL_EXIT_USAGE
 * (bad params, vocab < 1) with e set. */
int sampler_sample(const sampler_params *p, const float *logits, int64_t vocab,
                   const sampler_key *k, sampler_out *out, rl_err *e);
/* rows independent rows (row r at logits + r * ld), one key each; rows run
 * in parallel (OpenMP). Returns the first row's error, if any. */
int sampler_sample_rows(const sampler_params *p, const float *logits, int64_t rows, int64_t vocab,
                        int64_t ld, const sampler_key *keys, sampler_out *out, rl_err *e);

/* The CUDA sampler: same contract, the same
 * sampler_out bytes as sampler_sample_rows for the same inputs (log and the
 * entropy's log may differ by an ulp between libm and CUDA). All pointers are
 * device pointers; runs on `stream` (cudaStream_t) without synchronizing.
 * Statuses are in out[r].status (read back to check). Returns 0 or
 * RL_EXIT_HARDWARE (no CUDA in this build) / RL_EXIT_FAIL (launch error). */
int sampler_sample_cuda(const sampler_params *p, const float *d_logits, int64_t rows, int64_t vocab,
                        int64_t ld, const sampler_key *d_keys, sampler_out *d_out, void *stream,
                        rl_err *e);
/* The same on BF16 logits (bit patterns, row r at d_logits + r * ld): each value
 * widened to FP32 exactly, so the sampler_out bytes of sampler_sample_cuda on the
 * FP32 rows of those values — a rollout whose logits are BF16 anyway (every
 * linear_forward output is) reads half the bytes. Same errors. */
int sampler_sample_bf16_cuda(const sampler_params *p, const uint16_t *d_logits, int64_t rows, int64_t vocab,
                             int64_t ld, const sampler_key *d_keys, sampler_out *d_out, void *stream,
                             rl_err *e);
/* Its kernels (speed only: the outputs are the same bytes either way). Greedy
 * and unmasked sampling (top_k, top_p, min_p off) run the plain kernel over
 * `cl` CTAs a row (a cluster; 0: the most of 1, 2, 4, 8 that keep rows·cl
 * within the SMs); masked sampling, and every row when plain = 0, the fused
 * kernel (one 1024-thread block a row). Defaults: plain 1, cl 0;
 * RLRUN_SAMPLER_PLAIN / RLRUN_SAMPLER_CL set them at the first call. Not
 * thread-safe: call it while no sampler is being launched. */
void sampler_cuda_tune(int plain, int cl);

#endif
