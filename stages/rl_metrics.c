/* rl_metrics.c — mismatch / TIS / reward metrics and the named-metric list
 * (definitions in rl_metrics.h and RL.md). */
#include "stages/rl_metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rl_mismatch_init(rl_mismatch_acc *a) { memset(a, 0, sizeof *a); }

/* Adds one finite δ to the ESS sums, rescaling them when δ is the new maximum. */
static void ess_add(rl_mismatch_acc *a, double d) {
  if (a->ess_s1 == 0) {
    a->ess_shift = d, a->ess_s1 = 1, a->ess_s2 = 1;
  } else if (d > a->ess_shift) {
    double f = exp(a->ess_shift - d);
    a->ess_s1 = a->ess_s1 * f + 1;
    a->ess_s2 = a->ess_s2 * f * f + 1;
    a->ess_shift = d;
  } else {
    double w = exp(d - a->ess_shift);
    a->ess_s1 += w;
    a->ess_s2 += w * w;
  }
}

void rl_mismatch_add(rl_mismatch_acc *a, const rl_loss_cfg *cfg, const float *logp_old,
                     const float *logp_rollout, const uint8_t *mask, int64_t n) {
  for (int64_t t = 0; t < n; t++) {
    if (mask && !mask[t]) continue;
    double d = (double)logp_old[t] - (double)logp_rollout[t];
    a->n++;
    if (!isfinite(d)) {
      a->n_nonfinite++;
      continue;
    }
    double ad = fabs(d);
    a->sum_abs += ad;
    a->sum_k3 += rl_k3(d);
    if (ad > a->max_abs) a->max_abs = ad;
    ess_add(a, d);
    if (cfg && cfg->tis_mode != RL_TIS_OFF) {
      int cl;
      a->tis_sum += rl_tis_weight(cfg, d, &cl);
      a->tis_clipped += cl;
    }
  }
}

void rl_mismatch_finish(const rl_mismatch_acc *a, rl_mismatch *out) {
  memset(out, 0, sizeof *out);
  out->n_tokens = a->n;
  out->n_nonfinite = a->n_nonfinite;
  out->ess = 1.0;
  if (a->n == 0) return;
  if (a->n_nonfinite) {
    out->logp_abs_diff = out->kl_k3 = out->ess = out->max_abs_diff = NAN;
    out->tis_clipfrac = out->tis_mean = NAN;
    return;
  }
  double n = (double)a->n;
  out->logp_abs_diff = a->sum_abs / n;
  out->kl_k3 = a->sum_k3 / n;
  out->max_abs_diff = a->max_abs;
  out->ess = a->ess_s1 * a->ess_s1 / (n * a->ess_s2);
  out->tis_clipfrac = (double)a->tis_clipped / n;
  out->tis_mean = a->tis_sum / n;
}

void rl_reward_stats(const double *r, int64_t n, double *mean, double *std) {
  if (n <= 0) {
    *mean = *std = NAN;
    return;
  }
  double s = 0, ss = 0;
  for (int64_t i = 0; i < n; i++) s += r[i];
  double m = s / (double)n;
  for (int64_t i = 0; i < n; i++) ss += (r[i] - m) * (r[i] - m);
  *mean = m;
  *std = sqrt(ss / (double)n);
}

/* Index of a metric in the list, or -1. */
static int metric_find(const rl_metric_list *l, const char *name) {
  for (int i = 0; i < l->n; i++)
    if (strncmp(l->v[i].name, name, sizeof l->v[i].name - 1) == 0) return i;
  return -1;
}

void rl_metric_set(rl_metric_list *l, const char *name, double value) {
  int i = metric_find(l, name);
  if (i < 0) {
    if (l->n == l->cap) {
      l->cap = l->cap ? 2 * l->cap : 16;
      l->v = rl_xrealloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    i = l->n++;
    snprintf(l->v[i].name, sizeof l->v[i].name, "%s", name);
  }
  l->v[i].value = value;
}

double rl_metric_get(const rl_metric_list *l, const char *name, int *found) {
  int i = metric_find(l, name);
  if (found) *found = i >= 0;
  return i >= 0 ? l->v[i].value : NAN;
}

void rl_metric_list_add_mismatch(rl_metric_list *l, const rl_mismatch *m, int tis_mode) {
  rl_metric_set(l, RL_M_LOGP_ABS_DIFF, m->logp_abs_diff);
  rl_metric_set(l, RL_M_KL_K3, m->kl_k3);
  rl_metric_set(l, RL_M_ESS, m->ess);
  rl_metric_set(l, RL_M_MAX_ABS_DIFF, m->max_abs_diff);
  if (tis_mode != RL_TIS_OFF) {
    rl_metric_set(l, RL_M_TIS_CLIPFRAC, m->tis_clipfrac);
    rl_metric_set(l, RL_M_TIS_MEAN, m->tis_mean);
  }
}

void rl_metric_list_add_loss(rl_metric_list *l, const rl_loss_cfg *c, const rl_loss_out *sum) {
  rl_metric_set(l, RL_M_LOSS, sum->loss);
  if (c->kind != RL_LOSS_PPO) return;
  rl_metric_set(l, RL_M_LOSS_POLICY, sum->policy);
  rl_metric_set(l, RL_M_POLICY_CLIPFRAC,
                sum->n_tokens ? (double)sum->n_clipped / (double)sum->n_tokens : 0.0);
  if (c->kl_beta != 0) rl_metric_set(l, RL_M_LOSS_KL, sum->kl);
  if (c->entropy_coef != 0) rl_metric_set(l, RL_M_LOSS_ENTROPY, sum->entropy);
}

int rl_metric_list_store(const rl_metric_list *l, store *s, int64_t iteration, rl_err *e) {
  int own = !store_in_transaction(s);
  if (own) {
    int rc = store_begin(s, e);
    if (rc) return rc;
  }
  for (int i = 0; i < l->n; i++) {
    int rc = store_metric_put(s, iteration, l->v[i].name, l->v[i].value, e);
    if (rc) {
      if (own) store_rollback(s);
      return rl_err_prefix(e, "storing metric %s of iteration %lld: ", l->v[i].name,
                           (long long)iteration);
    }
  }
  return own ? store_commit(s, e) : 0;
}

void rl_metric_list_free(rl_metric_list *l) {
  free(l->v);
  l->v = NULL;
  l->n = l->cap = 0;
}
