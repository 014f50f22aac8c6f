/* rl_metrics.h — the metrics a training iteration logs (RL.md): rollout/train
 * mismatch, TIS statistics, reward statistics, and a small named-metric list
 * that the train stage hands to the run store in one transaction.
 *
 *   rl_mismatch_acc a; rl_mismatch_init(&a);
 *   for each microbatch: rl_mismatch_add(&a, &cfg, logp_old, logp_rollout, mask, n);
 *   rl_mismatch m; rl_mismatch_finish(&a, &m);
 *   rl_metric_list l = {0}; rl_metric_list_add_mismatch(&l, &m, cfg.tis_mode);
 *   rl_metric_set(&l, RL_M_GRAD_NORM, info.grad_norm);
 *   rl_metric_list_store(&l, store, iteration, &e); rl_metric_list_free(&l);
 *
 * Mismatch, with δ_t = logp_old_t − logp_rollout_t over the kept tokens:
 *   logp_abs_diff = mean |δ|, kl_k3 = mean (exp δ − 1 − δ), max_abs_diff = max |δ|,
 *   ess = (Σ w)² / (N Σ w²), w = exp δ (computed with the largest δ factored
 *   out, so it cannot overflow; exactly 1 when every δ is 0),
 *   tis/clipfrac = fraction of tokens whose weight truncation/IcePop changed,
 *   tis/mean = mean of the weights actually used (rl_tis_weight).
 * Sums are FP64 in token order: the same inputs give the same bits. A
 * non-finite δ makes every mismatch metric NaN (and counts in n_nonfinite). */
#ifndef RLRUN_RL_METRICS_H
#define RLRUN_RL_METRICS_H

#include <stdint.h>

#include "kernels/common.h"
#include "stages/rl_loss.h"
#include "state/store.h"

/* Metric names (the store's keys). */
#define RL_M_REWARD_MEAN STORE_METRIC_REWARD_MEAN /* "reward/mean" */
#define RL_M_REWARD_STD "reward/std"
#define RL_M_GROUPS_DEGENERATE "groups/degenerate"
#define RL_M_LOSS "loss"
#define RL_M_LOSS_POLICY "loss/policy"
#define RL_M_LOSS_KL "loss/kl"
#define RL_M_LOSS_ENTROPY "loss/entropy"
#define RL_M_POLICY_CLIPFRAC "policy/clipfrac"
#define RL_M_LOGP_ABS_DIFF "mismatch/logp_abs_diff"
#define RL_M_KL_K3 "mismatch/kl_k3"
#define RL_M_ESS "mismatch/ess"
#define RL_M_MAX_ABS_DIFF "mismatch/max_abs_diff"
#define RL_M_TIS_CLIPFRAC "tis/clipfrac"
#define RL_M_TIS_MEAN "tis/mean"
#define RL_M_R3_OVERLAP "r3/overlap"
#define RL_M_GRAD_NORM "optim/grad_norm"
#define RL_M_LR "optim/lr"

/* Running sums of the mismatch metrics over microbatches. */
typedef struct rl_mismatch_acc {
  int64_t n;            /* tokens seen */
  int64_t n_nonfinite;  /* tokens with a non-finite δ */
  double sum_abs, sum_k3, max_abs;
  double ess_shift;     /* the largest δ so far; s1 = Σ exp(δ − shift), s2 = Σ exp(2(δ − shift)) */
  double ess_s1, ess_s2;
  int64_t tis_clipped;
  double tis_sum;
} rl_mismatch_acc;

/* The finished metrics. */
typedef struct rl_mismatch {
  int64_t n_tokens, n_nonfinite;
  double logp_abs_diff, kl_k3, ess, max_abs_diff, tis_clipfrac, tis_mean;
} rl_mismatch;

void rl_mismatch_init(rl_mismatch_acc *a);
/* Add n tokens (mask: 1 = counted, NULL = all). cfg gives the TIS mode and bounds. */
void rl_mismatch_add(rl_mismatch_acc *a, const rl_loss_cfg *cfg, const float *logp_old,
                     const float *logp_rollout, const uint8_t *mask, int64_t n);
/* The metrics (all 0 and ess 1 when no token was added). */
void rl_mismatch_finish(const rl_mismatch_acc *a, rl_mismatch *out);

/* Mean and POPULATION std (divide by n) of n rewards; NaN when n = 0. */
void rl_reward_stats(const double *r, int64_t n, double *mean, double *std);

/* A named metric and a growable list of them (zero-initialise the list). */
typedef struct rl_metric {
  char name[64];
  double value;
} rl_metric;
typedef struct rl_metric_list {
  rl_metric *v;
  int n, cap;
} rl_metric_list;

/* Set (or replace) a metric; names longer than 63 bytes are truncated. */
void rl_metric_set(rl_metric_list *l, const char *name, double value);
/* The value of a metric; *found (may be NULL) = 0 and NaN when absent. */
double rl_metric_get(const rl_metric_list *l, const char *name, int *found);
/* The mismatch metrics (the tis/ ones only when tis_mode is not RL_TIS_OFF). */
void rl_metric_list_add_mismatch(rl_metric_list *l, const rl_mismatch *m, int tis_mode);
/* The loss metrics of a whole batch (the microbatches' rl_loss_out summed):
 * loss, loss/policy, policy/clipfrac (PPO), loss/kl and loss/entropy when on. */
void rl_metric_list_add_loss(rl_metric_list *l, const rl_loss_cfg *c, const rl_loss_out *sum);
/* Write every metric for an iteration: inside the caller's transaction when one
 * is open, else in one transaction of its own (all or nothing). */
int rl_metric_list_store(const rl_metric_list *l, store *s, int64_t iteration, rl_err *e);
void rl_metric_list_free(rl_metric_list *l);

#endif
