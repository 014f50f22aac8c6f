/* rl_loss.h — the RL math of a training step that needs no model: advantages,
 * the PPO-clip policy loss with TIS / IcePop weights, the k3 KL to a reference
 * policy, the entropy bonus, the SFT cross-entropy, and their gradients with
 * respect to the per-token log-probabilities (docs RL.md is the contract).
 *
 * The model's backward consumes what this module produces: for every token,
 * dL/dlogp_new (and dL/dentropy when the bonus is on) — the upstream gradient
 * of ops_logprob_backward_cpu. All arithmetic is FP64; inputs and gradients
 * are FP32 (what the model writes and reads).
 *
 * Conventions chosen here (RL.md leaves them open):
 *   - grpo's std is the SAMPLE std over the G rewards of a group (divide by
 *     G − 1, Bessel), as torch's r.std() — what verl, slime, TRL and OpenRLHF
 *     compute for RL.md's std(r); A_i = (r_i − mean) / (std + 1e-6). (The
 *     reward/std metric is the population std of the whole batch: rl_metrics.h.)
 *   - A group whose rewards are all equal (always so for G = 1) is degenerate:
 *     its advantages are exactly 0, rl_advantages clears its `keep` flags and
 *     counts it (metric groups/degenerate). Sequences with keep = 0 contribute
 *     nothing: no loss, no gradient, not counted in any denominator.
 *   - PPO clip at the boundary: ρ = 1 + ε_high (A > 0) or ρ = 1 − ε_low (A < 0)
 *     exactly is NOT clipped (gradient −A·ρ·w flows, as torch's clamp/max
 *     give); a token is clipped (gradient 0, counted in policy/clipfrac) when
 *     A > 0 and ρ > 1 + ε_high, or A < 0 and ρ < 1 − ε_low.
 *   - TIS / IcePop weights multiply the policy term only (not KL, not entropy);
 *     IcePop's masked tokens (w = 0) stay in the token-mean denominator.
 *   - 0 · anything = 0: a token with w = 0 or A = 0 has policy term and gradient
 *     exactly 0 even when its ratio exp(logp_new − logp_old) overflows to Inf
 *     (RL.md's L_t is 0 there; IEEE would give NaN and stop the step). A
 *     non-finite term elsewhere (A < 0, ρ = Inf: L_t = +Inf) stops the step.
 *   - k3 KL to the reference: with d = logp_ref − logp_new,
 *     kl_t = exp(d) − 1 − d (≥ 0), dkl/dlogp_new = 1 − exp(d); loss += β·kl.
 *   - Entropy bonus: loss −= c·H_t (dL/dH_t = −c·agg weight).
 *   - token_mean: Σ_t ℓ_t / N, N = kept tokens of the WHOLE batch (all
 *     microbatches); seq_mean_token_mean: (1/S) Σ_s (Σ_{t∈s} ℓ_t / n_s), S =
 *     kept sequences with at least one token. Pass the batch's totals (rl_norm)
 *     so that summing the microbatches' losses and gradients gives the batch's.
 *   - SFT: mean cross-entropy over target tokens, always token_mean:
 *     L = −Σ_t logp_t / N, dL/dlogp_t = −1/N. */
#ifndef RLRUN_RL_LOSS_H
#define RLRUN_RL_LOSS_H

#include <stdint.h>

#include "kernels/common.h"

/* Advantage estimators (same order as the recipe's train.algorithm). */
typedef enum rl_adv_kind { RL_ADV_GRPO, RL_ADV_DR_GRPO, RL_ADV_RLOO } rl_adv_kind;
/* Losses. */
typedef enum rl_loss_kind { RL_LOSS_PPO, RL_LOSS_SFT } rl_loss_kind;
/* Aggregations (same order as the recipe's train.loss_agg). */
typedef enum rl_agg { RL_AGG_TOKEN_MEAN, RL_AGG_SEQ_MEAN_TOKEN_MEAN } rl_agg;
/* Rollout-correction weights (same order as the recipe's train.tis.mode). */
typedef enum rl_tis_mode { RL_TIS_OFF, RL_TIS_TRUNCATE, RL_TIS_MASK } rl_tis_mode;

#define RL_GRPO_STD_EPS 1e-6

/* What the loss computes; rl_loss_cfg_default gives RL.md's defaults. */
typedef struct rl_loss_cfg {
  int kind;            /* rl_loss_kind */
  int agg;             /* rl_agg */
  double eps_low;      /* PPO clip below 1 (0.2) */
  double eps_high;     /* PPO clip above 1 (0.2) */
  int tis_mode;        /* rl_tis_mode (off) */
  double tis_clip;     /* C of truncate mode (2.0) */
  double tis_low;      /* IcePop interval [low, high] (0.5, 2.0) */
  double tis_high;
  double kl_beta;      /* k3 KL to the reference policy; 0 = off */
  double entropy_coef; /* entropy bonus; 0 = off */
} rl_loss_cfg;

void rl_loss_cfg_default(rl_loss_cfg *c);

/* Advantages of n_groups groups of G samples; rewards[g*G + i] is sample i of
 * group g. Writes adv[] (same layout) and, when keep is not NULL, keep[] (0 for
 * the samples of degenerate groups, else 1); *n_degenerate (may be NULL) gets
 * the number of degenerate groups. A NaN/Inf reward is an error (RL_EXIT_FAIL)
 * naming the group and sample. */
int rl_advantages(rl_adv_kind kind, const double *rewards, int64_t n_groups, int G, double *adv,
                  uint8_t *keep, int64_t *n_degenerate, rl_err *e);

/* The rollout-correction weight of one token from δ = logp_old − logp_rollout:
 * truncate: min(exp δ, C); mask: 1 if low ≤ exp δ ≤ high else 0; off: 1.
 * *clipped (may be NULL) = 1 when truncation or the mask changed the weight. */
double rl_tis_weight(const rl_loss_cfg *c, double delta, int *clipped);

/* The PPO-clip term of one token, −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A)
 * (without the TIS weight). *dloss_dlogp (may be NULL) = dterm/dlogp_new =
 * −A·ρ when unclipped, 0 when clipped; *clipped (may be NULL) as above. */
double rl_ppo_term(double rho, double A, double eps_low, double eps_high, double *dloss_dlogp,
                   int *clipped);

/* The k3 estimator exp(d) − 1 − d (exactly 0 at d = 0). */
double rl_k3(double d);

/* A microbatch: n_seq sequences whose tokens lie flat in the arrays. */
typedef struct rl_seqs {
  int n_seq;
  const int64_t *off;          /* [n_seq + 1]: sequence s holds tokens off[s] .. off[s+1]−1 */
  const uint8_t *mask;         /* [tokens] 1 = token in the loss; NULL = all */
  const uint8_t *seq_keep;     /* [n_seq] 0 = sequence left out (degenerate group); NULL = all */
  const double *adv;           /* [n_seq] advantage of each sequence (PPO) */
  const float *logp_new;       /* [tokens] under gradient */
  const float *logp_old;       /* [tokens] before the update (PPO) */
  const float *logp_rollout;   /* [tokens] rollout engine's (TIS/IcePop; NULL: w = 1) */
  const float *logp_ref;       /* [tokens] reference policy (kl_beta > 0) */
  const float *entropy;        /* [tokens] policy entropy (entropy_coef > 0) */
} rl_seqs;

/* The denominators of the whole batch (accumulate every microbatch with
 * rl_norm_add before computing any loss). */
typedef struct rl_norm {
  int64_t n_tokens; /* kept tokens */
  int64_t n_seqs;   /* kept sequences with at least one kept token */
} rl_norm;

void rl_norm_add(rl_norm *n, const rl_seqs *mb);

/* One microbatch's share of the batch loss and its statistics. */
typedef struct rl_loss_out {
  double loss;          /* policy + β·kl − c·entropy (SFT: cross-entropy) */
  double policy;        /* the (TIS-weighted) PPO term, aggregated (SFT: the cross-entropy) */
  double kl;            /* the k3 KL, aggregated (without β) */
  double entropy;       /* the entropy, aggregated (without c) */
  int64_t n_tokens;     /* kept tokens of this microbatch */
  int64_t n_clipped;    /* of those, tokens the PPO clip cut (policy/clipfrac = Σ n_clipped / Σ n_tokens) */
  int64_t n_tis_clipped; /* tokens whose TIS weight was truncated or masked */
  double tis_weight_sum; /* Σ w_t over kept tokens */
} rl_loss_out;

/* acc += o (losses and counts of several microbatches; zero-initialise acc). */
void rl_loss_out_add(rl_loss_out *acc, const rl_loss_out *o);

/* Loss and gradients of one microbatch. norm = the whole batch's totals
 * (NULL: this microbatch alone). grad_logp[tokens] (required) gets dL/dlogp_new
 * (0 on masked tokens); grad_entropy[tokens] gets dL/dH (may be NULL when the
 * bonus is off). Errors (RL_EXIT_FAIL / RL_EXIT_USAGE): missing inputs the
 * configuration needs, a non-finite log-prob or loss (names sequence and token,
 * so the step stops before any weight changes). */
int rl_loss_compute(const rl_loss_cfg *c, const rl_seqs *mb, const rl_norm *norm, rl_loss_out *out,
                    float *grad_logp, float *grad_entropy, rl_err *e);

#endif
