/* rl_loss.c — advantages, PPO-clip + TIS/IcePop, k3 KL, entropy bonus and SFT
 * cross-entropy with their gradients w.r.t. the per-token log-probs (FP64
 * arithmetic; conventions in rl_loss.h). */
#include "stages/rl_loss.h"

#include <math.h>
#include <string.h>

void rl_loss_cfg_default(rl_loss_cfg *c) {
  memset(c, 0, sizeof *c);
  c->kind = RL_LOSS_PPO;
  c->agg = RL_AGG_TOKEN_MEAN;
  c->eps_low = 0.2;
  c->eps_high = 0.2;
  c->tis_mode = RL_TIS_OFF;
  c->tis_clip = 2.0;
  c->tis_low = 0.5;
  c->tis_high = 2.0;
}

/* The advantages of one group of G rewards (G >= 2, not all equal). */
static void adv_group(rl_adv_kind kind, const double *r, int G, double *adv) {
  double sum = 0;
  for (int i = 0; i < G; i++) sum += r[i];
  double mean = sum / G;
  if (kind == RL_ADV_GRPO) {
    double ss = 0;
    for (int i = 0; i < G; i++) ss += (r[i] - mean) * (r[i] - mean);
    double sd = sqrt(ss / (G - 1)); /* sample std (Bessel), as torch's r.std(); G >= 2 here */
    for (int i = 0; i < G; i++) adv[i] = (r[i] - mean) / (sd + RL_GRPO_STD_EPS);
  } else if (kind == RL_ADV_DR_GRPO) {
    for (int i = 0; i < G; i++) adv[i] = r[i] - mean;
  } else {
    for (int i = 0; i < G; i++) adv[i] = r[i] - (sum - r[i]) / (G - 1);
  }
}

int rl_advantages(rl_adv_kind kind, const double *rewards, int64_t n_groups, int G, double *adv,
                  uint8_t *keep, int64_t *n_degenerate, rl_err *e) {
  if (n_degenerate) *n_degenerate = 0;
  if (G < 1 || n_groups < 0 || (unsigned)kind > RL_ADV_RLOO)
    return rl_errf(e, RL_EXIT_USAGE, "rl_advantages: bad arguments (kind %d, %lld groups of G=%d)",
                   (int)kind, (long long)n_groups, G);
  int64_t degenerate = 0;
  for (int64_t g = 0; g < n_groups; g++) {
    const double *r = rewards + g * G;
    int all_equal = 1;
    for (int i = 0; i < G; i++) {
      if (!isfinite(r[i]))
        return rl_errf(e, RL_EXIT_FAIL,
                       "advantages: group %lld sample %d has reward %g: every sample needs a finite "
                       "reward (check the Lua reward function)",
                       (long long)g, i, r[i]);
      if (r[i] != r[0]) all_equal = 0;
    }
    double *a = adv + g * G;
    if (all_equal) {
      for (int i = 0; i < G; i++) a[i] = 0;
      degenerate++;
    } else {
      adv_group(kind, r, G, a);
    }
    if (keep)
      for (int i = 0; i < G; i++) keep[g * G + i] = (uint8_t)!all_equal;
  }
  if (n_degenerate) *n_degenerate = degenerate;
  return 0;
}

double rl_tis_weight(const rl_loss_cfg *c, double delta, int *clipped) {
  int cl = 0;
  double w = 1.0;
  if (c->tis_mode == RL_TIS_TRUNCATE) {
    w = exp(delta);
    if (w > c->tis_clip) w = c->tis_clip, cl = 1;
  } else if (c->tis_mode == RL_TIS_MASK) {
    double r = exp(delta);
    if (!(r >= c->tis_low && r <= c->tis_high)) w = 0.0, cl = 1;
  }
  if (clipped) *clipped = cl;
  return w;
}

double rl_ppo_term(double rho, double A, double eps_low, double eps_high, double *dloss_dlogp,
                   int *clipped) {
  double lo = 1.0 - eps_low, hi = 1.0 + eps_high;
  if (A == 0) { /* min(ρ·0, clip(ρ)·0) = 0 for every ρ, an overflowed one (Inf) included */
    if (dloss_dlogp) *dloss_dlogp = 0.0;
    if (clipped) *clipped = 0;
    return 0.0;
  }
  int cl = (A > 0 && rho > hi) || (A < 0 && rho < lo);
  double term;
  if (cl) term = -(A > 0 ? hi : lo) * A;
  else term = -rho * A;
  if (dloss_dlogp) *dloss_dlogp = cl ? 0.0 : -A * rho;
  if (clipped) *clipped = cl;
  return term;
}

double rl_k3(double d) { return expm1(d) - d; }

/* 1 when token t of a sequence is kept by the mask. */
static int tok_on(const rl_seqs *mb, int64_t t) { return !mb->mask || mb->mask[t]; }
static int seq_on(const rl_seqs *mb, int s) { return !mb->seq_keep || mb->seq_keep[s]; }

void rl_norm_add(rl_norm *n, const rl_seqs *mb) {
  for (int s = 0; s < mb->n_seq; s++) {
    if (!seq_on(mb, s)) continue;
    int64_t k = 0;
    for (int64_t t = mb->off[s]; t < mb->off[s + 1]; t++) k += tok_on(mb, t);
    n->n_tokens += k;
    n->n_seqs += k > 0;
  }
}

/* Checks that the arrays the configuration needs are present. */
static int loss_check_inputs(const rl_loss_cfg *c, const rl_seqs *mb, const float *grad_logp,
                             const float *grad_entropy, rl_err *e) {
  const char *miss = NULL;
  if (mb->n_seq < 0 || (mb->n_seq > 0 && !mb->off)) miss = "off (sequence offsets)";
  else if (!mb->logp_new) miss = "logp_new";
  else if (!grad_logp) miss = "grad_logp (output)";
  else if (c->kind == RL_LOSS_PPO && !mb->logp_old) miss = "logp_old";
  else if (c->kind == RL_LOSS_PPO && !mb->adv) miss = "adv";
  else if (c->kind == RL_LOSS_PPO && c->tis_mode != RL_TIS_OFF && !mb->logp_rollout)
    miss = "logp_rollout (TIS/IcePop is on)";
  else if (c->kind == RL_LOSS_PPO && c->kl_beta != 0 && !mb->logp_ref)
    miss = "logp_ref (the KL term is on)";
  else if (c->kind == RL_LOSS_PPO && c->entropy_coef != 0 && !mb->entropy)
    miss = "entropy (the entropy bonus is on)";
  else if (c->kind == RL_LOSS_PPO && c->entropy_coef != 0 && !grad_entropy)
    miss = "grad_entropy (output; the entropy bonus is on)";
  if (miss) return rl_errf(e, RL_EXIT_USAGE, "rl_loss: missing input %s", miss);
  if ((unsigned)c->kind > RL_LOSS_SFT || (unsigned)c->agg > RL_AGG_SEQ_MEAN_TOKEN_MEAN ||
      (unsigned)c->tis_mode > RL_TIS_MASK)
    return rl_errf(e, RL_EXIT_USAGE, "rl_loss: bad configuration (kind %d, agg %d, tis mode %d)",
                   c->kind, c->agg, c->tis_mode);
  for (int s = 0; s < mb->n_seq; s++)
    if (mb->off[s + 1] < mb->off[s])
      return rl_errf(e, RL_EXIT_USAGE, "rl_loss: sequence %d has offsets %lld..%lld (decreasing)", s,
                     (long long)mb->off[s], (long long)mb->off[s + 1]);
  return 0;
}

/* Error for a non-finite per-token input or result. */
static int loss_nonfinite(rl_err *e, const char *what, int s, int64_t t, int64_t t0, double v) {
  return rl_errf(e, RL_EXIT_FAIL,
                 "loss: %s is %g at sequence %d token %lld (flat index %lld); the step is stopped "
                 "before any weight changes: check the model's log-probs (overflow in low precision?)",
                 what, v, s, (long long)(t - t0), (long long)t);
}

int rl_loss_compute(const rl_loss_cfg *c, const rl_seqs *mb, const rl_norm *norm, rl_loss_out *out,
                    float *grad_logp, float *grad_entropy, rl_err *e) {
  memset(out, 0, sizeof *out);
  int rc = loss_check_inputs(c, mb, grad_logp, grad_entropy, e);
  if (rc) return rc;
  rl_norm own = {0, 0};
  if (!norm) rl_norm_add(&own, mb), norm = &own;
  int sft = c->kind == RL_LOSS_SFT;
  int agg = sft ? RL_AGG_TOKEN_MEAN : c->agg;
  int64_t n_all = mb->n_seq ? mb->off[mb->n_seq] - mb->off[0] : 0;
  for (int64_t t = 0; t < n_all; t++) {
    grad_logp[mb->off[0] + t] = 0.0f;
    if (grad_entropy) grad_entropy[mb->off[0] + t] = 0.0f;
  }
  for (int s = 0; s < mb->n_seq; s++) {
    if (!seq_on(mb, s)) continue;
    int64_t t0 = mb->off[s], t1 = mb->off[s + 1], ns = 0;
    for (int64_t t = t0; t < t1; t++) ns += tok_on(mb, t);
    if (ns == 0) continue;
    /* The aggregation weight of each kept token of this sequence. */
    double denom = agg == RL_AGG_TOKEN_MEAN ? (double)norm->n_tokens : (double)norm->n_seqs * ns;
    if (!(denom > 0))
      return rl_errf(e, RL_EXIT_USAGE,
                     "rl_loss: the batch totals (rl_norm: %lld tokens, %lld sequences) do not cover "
                     "sequence %d: call rl_norm_add for every microbatch first",
                     (long long)norm->n_tokens, (long long)norm->n_seqs, s);
    double wagg = 1.0 / denom;
    double A = sft ? 0 : mb->adv[s];
    double sum_pol = 0, sum_kl = 0, sum_ent = 0; /* this sequence's sums, scaled once at the end */
    for (int64_t t = t0; t < t1; t++) {
      if (!tok_on(mb, t)) continue;
      out->n_tokens++;
      double lp = mb->logp_new[t];
      if (!isfinite(lp)) return loss_nonfinite(e, "logp_new", s, t, t0, lp);
      if (sft) {
        sum_pol += -lp;
        grad_logp[t] = (float)(-wagg);
        continue;
      }
      double lo = mb->logp_old[t];
      if (!isfinite(lo)) return loss_nonfinite(e, "logp_old", s, t, t0, lo);
      double w = 1.0;
      if (c->tis_mode != RL_TIS_OFF) {
        double lr = mb->logp_rollout[t];
        if (!isfinite(lr)) return loss_nonfinite(e, "logp_rollout", s, t, t0, lr);
        int tcl;
        w = rl_tis_weight(c, lo - lr, &tcl);
        out->n_tis_clipped += tcl;
      }
      out->tis_weight_sum += w;
      double rho = exp(lp - lo), dterm;
      int cl;
      double term = rl_ppo_term(rho, A, c->eps_low, c->eps_high, &dterm, &cl);
      out->n_clipped += cl;
      double g = 0.0;
      if (w != 0) { /* w = 0 (IcePop's mask): L_t = 0 whatever the ratio, even an overflowed one */
        if (!isfinite(term)) return loss_nonfinite(e, "the policy ratio exp(logp_new - logp_old)", s, t, t0, rho);
        sum_pol += w * term;
        g = w * dterm;
      }
      if (c->kl_beta != 0) {
        double d = (double)mb->logp_ref[t] - lp;
        double kl = rl_k3(d);
        if (!isfinite(kl)) return loss_nonfinite(e, "the k3 KL to the reference", s, t, t0, kl);
        sum_kl += kl;
        g += c->kl_beta * -expm1(d); /* d kl / d logp_new = 1 − exp(d) */
      }
      if (c->entropy_coef != 0) {
        double h = mb->entropy[t];
        if (!isfinite(h)) return loss_nonfinite(e, "entropy", s, t, t0, h);
        sum_ent += h;
        if (grad_entropy) grad_entropy[t] = (float)(-c->entropy_coef * wagg);
      }
      grad_logp[t] = (float)(g * wagg);
    }
    out->policy += sum_pol * wagg;
    out->kl += sum_kl * wagg;
    out->entropy += sum_ent * wagg;
  }
  out->loss = sft ? out->policy : out->policy + c->kl_beta * out->kl - c->entropy_coef * out->entropy;
  if (!isfinite(out->loss))
    return rl_errf(e, RL_EXIT_FAIL, "loss: the microbatch loss is %g; the step is stopped before any "
                   "weight changes", out->loss);
  return 0;
}

void rl_loss_out_add(rl_loss_out *acc, const rl_loss_out *o) {
  acc->loss += o->loss;
  acc->policy += o->policy;
  acc->kl += o->kl;
  acc->entropy += o->entropy;
  acc->n_tokens += o->n_tokens;
  acc->n_clipped += o->n_clipped;
  acc->n_tis_clipped += o->n_tis_clipped;
  acc->tis_weight_sum += o->tis_weight_sum;
}
