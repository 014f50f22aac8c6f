/* train.c — the train stage: advantages, the old-logprob pass with mismatch
 * metrics, microbatched PPO/SFT updates with gradient accumulation and AdamW
 * (the contract is at the top of train.h). */
#include "stages/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stages/train_int.h"

void train_opts_default(train_opts *o) {
  memset(o, 0, sizeof *o);
  o->algorithm = TRAIN_ALGO_GRPO;
  rl_loss_cfg_default(&o->loss);
  optim_cfg_default(&o->optim);
  quant_policy_init(&o->policy, QFMT_BF16, QFMT_BF16);
  o->temperature = 1.0;
  o->microbatch = 4;
  o->ppo_epochs = 1;
  o->minibatches = 1;
}

int train_opts_check(const train_opts *o, rl_err *e) {
  const char *bad = NULL;
  double v = 0;
  if ((unsigned)o->algorithm > TRAIN_ALGO_SFT) bad = "algorithm", v = o->algorithm;
  else if (o->microbatch < 1) bad = "microbatch (sequences per forward/backward, >= 1)", v = (double)o->microbatch;
  else if (o->ppo_epochs < 1) bad = "ppo_epochs (>= 1)", v = o->ppo_epochs;
  else if (o->minibatches < 1) bad = "minibatches (optimizer steps per epoch, >= 1)", v = o->minibatches;
  else if (o->dp_ranks < 0 || o->dp_ranks > TRAIN_DP_MAX) bad = "dp_ranks (0 ... 16)", v = o->dp_ranks;
  else if (!(o->temperature >= 0 && isfinite(o->temperature))) bad = "temperature", v = o->temperature;
  else if (!(o->loss.eps_low >= 0 && o->loss.eps_low < 1)) bad = "clip_low", v = o->loss.eps_low;
  else if (!(o->loss.eps_high >= 0)) bad = "clip_high", v = o->loss.eps_high;
  else if ((unsigned)o->loss.tis_mode > RL_TIS_MASK) bad = "tis.mode", v = o->loss.tis_mode;
  else if (o->loss.tis_mode == RL_TIS_TRUNCATE && !(o->loss.tis_clip > 0)) bad = "tis.clip", v = o->loss.tis_clip;
  else if (o->loss.tis_mode == RL_TIS_MASK && !(o->loss.tis_low > 0 && o->loss.tis_low <= o->loss.tis_high))
    bad = "tis.low (0 < low <= high)", v = o->loss.tis_low;
  else if (!(o->loss.kl_beta >= 0 && isfinite(o->loss.kl_beta))) bad = "kl_coef", v = o->loss.kl_beta;
  else if (!(o->loss.entropy_coef >= 0 && isfinite(o->loss.entropy_coef)))
    bad = "entropy_coef", v = o->loss.entropy_coef;
  else if ((unsigned)o->loss.agg > RL_AGG_SEQ_MEAN_TOKEN_MEAN) bad = "loss_agg", v = o->loss.agg;
  if (bad) return rl_errf(e, RL_EXIT_USAGE, "train options: bad %s (%g)", bad, v);
  int rc = optim_cfg_check(&o->optim, 1, e);
  if (!rc) rc = quant_policy_check(&o->policy, e);
  return rc ? rl_err_prefix(e, "train options: ") : 0;
}

/* ---------------------------------------------------------------- life cycle */

/* A copy of m's weights as a separate model (the KL reference policy). */
static int ref_clone(model *m, int f32, model **out, rl_err *e) {
  model_load_opts lo = {f32};
  int rc = model_create(&m->cfg, &lo, out, e);
  if (rc) return rl_err_prefix(e, "train: the KL reference model: ");
  model_keep_bf16_copy(*out, m); /* the same BF16-kept linears as the policy */
  for (int i = 0; i < m->n_params; i++) {
    model_param *s = &m->params[i], *d = &(*out)->params[i];
    size_t n = (size_t)(s->rows * s->cols);
    memcpy(d->w, s->w, n * sizeof(uint16_t));
    if (f32) memcpy(d->w32, s->w32, n * sizeof(float));
  }
  return 0;
}

int trainer_new(model *m, const train_opts *o, trainer **out, rl_err *e) {
  *out = NULL;
  int rc = train_opts_check(o, e);
  if (rc) return rc;
  if (o->f32 && !m->has_f32)
    return rl_errf(e, RL_EXIT_USAGE, "train: the FP32-exact mode needs the model's FP32 weights "
                   "(load or create it with keep_f32)");
  if (o->device == TRAIN_DEVICE_CUDA) {
    const char *no = o->f32 ? "the FP32-exact mode (train f32)"
                     : o->loss.kl_beta > 0 && o->algorithm != TRAIN_ALGO_SFT ? "a KL reference policy (kl_coef > 0)"
                     : o->grad_hook ? "a gradient hook" : NULL;
    if (no)
      return rl_errf(e, RL_EXIT_USAGE, "train: %s is not supported on the CUDA trainer yet "
                     "(set device: cpu, or drop it from the recipe)", no);
  } else if (o->device != TRAIN_DEVICE_CPU) {
    return rl_errf(e, RL_EXIT_USAGE, "train options: bad device (%d)", o->device);
  }
  if (o->dp_ranks > 1 && o->device != TRAIN_DEVICE_CUDA)
    return rl_errf(e, RL_EXIT_USAGE, "train: data parallelism over %d GPUs needs the CUDA trainer (device: cuda)",
                   o->dp_ranks);
  trainer *t = rl_xcalloc(1, sizeof *t);
  t->m = m;
  t->dp = 1;
  t->o = *o;
  t->o.loss.kind = o->algorithm == TRAIN_ALGO_SFT ? RL_LOSS_SFT : RL_LOSS_PPO;
  for (int l = 0; l < m->L; l++) t->r3 |= o->r3 && m->layers[l].moe;
  t->cuda = o->device == TRAIN_DEVICE_CUDA;
  if (!t->cuda) model_grads_init(m); /* the device path keeps its gradients on the GPU */
  t->ot = rl_xcalloc((size_t)m->n_params, sizeof *t->ot);
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    optim_tensor *x = &t->ot[i];
    x->name = p->name;
    x->n = p->rows * p->cols;
    x->w = p->w;
    x->grad = p->g;
    x->no_decay = p->cols == 1; /* norm weights: no decay (as Megatron) */
    optim_tensor_alloc_cpu(x, o->optim.main_params);
    if (o->f32 && x->main) memcpy(x->main, p->w32, (size_t)x->n * sizeof(float));
  }
  t->a = model_acts_new();
  if (t->cuda && (rc = trd_init(t, e))) {
    trainer_free(t);
    return rc;
  }
  if (o->loss.kl_beta > 0 && o->algorithm != TRAIN_ALGO_SFT) {
    if ((rc = ref_clone(m, o->f32, &t->ref, e))) {
      trainer_free(t);
      return rc;
    }
    t->ra = model_acts_new();
  }
  *out = t;
  return 0;
}

void trainer_free(trainer *t) {
  if (!t) return;
  if (t->ot)
    for (int i = 0; i < t->m->n_params; i++) optim_tensor_free_cpu(&t->ot[i]);
  free(t->ot);
  if (t->ref) model_free(t->ref);
  if (t->cuda) trd_free(t);
  model_acts_free(t->a);
  if (t->ra) model_acts_free(t->ra);
  tr_pack_free(&t->pk);
  free(t->cpl_off), free(t->lp_old), free(t->lp_ref);
  free(t);
}

int64_t trainer_step_count(const trainer *t) { return t->step; }

void train_result_free(train_result *r) { rl_metric_list_free(&r->metrics); }

/* Quantize the training views of m when they are stale or in another policy. */
static int views_ready(trainer *t, model *mdl, rl_err *e) {
  if (t->cuda && mdl == t->m) return trd_weights_refresh(t, 0, e); /* device views (a sync may have changed them) */
  if (mdl->quantized && memcmp(&mdl->policy, &t->o.policy, sizeof mdl->policy) == 0) return 0;
  int rc = model_quantize(mdl, &t->o.policy, e);
  return rc ? rl_err_prefix(e, "train: training precision views: ") : 0;
}

int tr_weights_refresh(trainer *t, int rewrite_bf16, rl_err *e) {
  model *m = t->m;
  if (t->cuda) return trd_weights_refresh(t, rewrite_bf16, e);
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    const optim_tensor *x = &t->ot[i];
    if (x->main) {
      if (rewrite_bf16) ops_bf16_from_f32_cpu(p->w, x->main, (size_t)x->n);
      if (p->w32) memcpy(p->w32, x->main, (size_t)x->n * sizeof(float));
    } else if (p->w32) {
      ops_f32_from_bf16_cpu(p->w32, p->w, (size_t)x->n);
    }
  }
  m->quantized = 0;
  return views_ready(t, m, e);
}

/* ---------------------------------------------------------------- the batch plan */

/* Per-sample storage of the batch: cpl_off and zeroed logp_old / logp_ref. */
static void batch_storage(trainer *t, const rollout_batch *b) {
  if (b->n + 1 > t->cap_n) {
    t->cap_n = b->n + 1;
    t->cpl_off = rl_xrealloc(t->cpl_off, (size_t)t->cap_n * sizeof(int64_t));
  }
  t->cpl_off[0] = 0;
  for (int64_t i = 0; i < b->n; i++) t->cpl_off[i + 1] = t->cpl_off[i] + b->s[i].n_completion;
  int64_t nc = t->cpl_off[b->n];
  if (nc + 1 > t->cap_cpl) {
    t->cap_cpl = nc + 1;
    t->lp_old = rl_xrealloc(t->lp_old, (size_t)t->cap_cpl * sizeof(float));
    t->lp_ref = rl_xrealloc(t->lp_ref, (size_t)t->cap_cpl * sizeof(float));
  }
  memset(t->lp_old, 0, (size_t)(nc + 1) * sizeof(float));
  memset(t->lp_ref, 0, (size_t)(nc + 1) * sizeof(float));
}

/* The microbatch plan: the kept samples in index order cut into `slices`
 * contiguous slices (one optimizer step each), each cut into microbatches of
 * mb sequences; then the other samples (old-logprob pass only). order[] holds
 * the sample indices; mb_start[j] the first order position of microbatch j
 * (mb_start[n_mb] = n); slice_mb[s] the first microbatch of slice s
 * (slice_mb[slices] = microbatches of the kept samples). */
typedef struct tr_plan {
  int64_t *order;
  int64_t *mb_start;
  int64_t *slice_mb;
  int64_t n_mb, n_kept;
} tr_plan;

static void plan_make(tr_plan *pl, const uint8_t *keep, int64_t n, int64_t mb, int slices) {
  pl->order = rl_xmalloc((size_t)(n + 1) * sizeof(int64_t));
  pl->mb_start = rl_xmalloc((size_t)(n + slices + 2) * sizeof(int64_t));
  pl->slice_mb = rl_xmalloc((size_t)(slices + 1) * sizeof(int64_t));
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++)
    if (keep[i]) pl->order[k++] = i;
  pl->n_kept = k;
  for (int64_t i = 0; i < n; i++)
    if (!keep[i]) pl->order[k++] = i;
  int64_t j = 0;
  for (int s = 0; s < slices; s++) {
    int64_t a = pl->n_kept * s / slices, z = pl->n_kept * (s + 1) / slices;
    pl->slice_mb[s] = j;
    for (int64_t q = a; q < z; q += mb) pl->mb_start[j++] = q;
  }
  pl->slice_mb[slices] = j;
  for (int64_t q = pl->n_kept; q < n; q += mb) pl->mb_start[j++] = q;
  pl->n_mb = j;
  pl->mb_start[j] = n;
}

static void plan_free(tr_plan *pl) {
  free(pl->order), free(pl->mb_start), free(pl->slice_mb);
}

/* Copy the masked per-token values of the pack into per-sample storage dst. */
static void pack_scatter(trainer *t, const rollout_batch *b, const float *src, float *dst) {
  tr_pack *p = &t->pk;
  for (int i = 0; i < p->n_seq; i++) {
    const rollout_sample *s = &b->s[p->idx[i]];
    int64_t base = p->off64[i] + s->n_prompt - 1;
    memcpy(dst + t->cpl_off[p->idx[i]], src + base, (size_t)s->n_completion * sizeof(float));
  }
}

/* ---------------------------------------------------------------- passes */

/* The old-logprob pass over every microbatch of the plan: logp_old (and the
 * reference's logp_ref when the KL term is on), R3 overlap counts. */
static int pass_old(trainer *t, const rollout_batch *b, const tr_plan *pl, int with_ref,
                    int64_t *r3_match, int64_t *r3_total, int64_t *fwd_tokens, rl_err *e) {
  int rc;
  for (int64_t j = 0; j < pl->n_mb; j++) {
    int n = (int)(pl->mb_start[j + 1] - pl->mb_start[j]);
    if ((rc = tr_pack_build(t, b, pl->order + pl->mb_start[j], n, NULL, NULL, e))) return rc;
    t->pk.own_on = t->r3 && r3_match && t->cuda; /* the CUDA forward writes the router's own choices */
    rc = tr_pack_forward(t, t->m, t->a, t->pk.logp, NULL, e);
    t->pk.own_on = 0;
    if (rc) return rc;
    *fwd_tokens += t->pk.T;
    if (t->r3 && r3_match) tr_pack_r3_overlap(t, t->a, r3_match, r3_total);
    pack_scatter(t, b, t->pk.logp, t->lp_old);
    if (with_ref && j < pl->slice_mb[t->o.minibatches]) { /* kept samples only */
      if ((rc = tr_pack_forward(t, t->ref, t->ra, t->pk.logp, NULL, e))) return rc;
      *fwd_tokens += t->pk.T;
      pack_scatter(t, b, t->pk.logp, t->lp_ref);
    }
  }
  return 0;
}

/* What the update steps of one call add up. */
typedef struct tr_acc {
  rl_loss_out last;  /* the last step's loss */
  double loss_sum, grad_norm_sum;
  int64_t n_clipped, n_tokens, steps, fwd_tokens;
  optim_info info;
  int first_done;
  double first_dev;
} tr_acc;

/* The rank of microbatch q of a slice's n with `ranks` data-parallel ranks:
 * contiguous runs, rank r taking [ceil(n·r/N), ceil(n·(r+1)/N)) (train.h). */
static int slice_rank(int64_t q, int64_t n, int ranks) {
  int r = 0;
  while (r + 1 < ranks && q >= (n * (r + 1) + ranks - 1) / ranks) r++;
  return r;
}

/* One optimizer step over the microbatches [j0, j1) of the plan (with data
 * parallelism: dealt to the ranks, run round-robin, gradients all-reduced). */
static int step_slice(trainer *t, const rollout_batch *b, const tr_plan *pl, int64_t j0,
                      int64_t j1, const uint8_t *keep, const double *adv, tr_acc *acc,
                      rl_err *e) {
  model *m = t->m;
  const rl_loss_cfg *c = &t->o.loss;
  int ppo = c->kind == RL_LOSS_PPO, want_ent = ppo && c->entropy_coef != 0, rc = 0;
  /* The slice's denominators first (token-mean over the whole slice). */
  rl_norm norm = {0, 0};
  for (int64_t j = j0; j < j1; j++)
    for (int64_t q = pl->mb_start[j]; q < pl->mb_start[j + 1]; q++) {
      const rollout_sample *s = &b->s[pl->order[q]];
      if (keep && !keep[pl->order[q]]) continue;
      norm.n_tokens += s->n_completion;
      norm.n_seqs += s->n_completion > 0;
    }
  if (norm.n_tokens == 0) return 0; /* nothing to learn from: no step (weights unchanged) */
  if (t->cuda) {
    if ((rc = trd_grads_zero(t, e))) return rc;
  } else {
    model_grads_zero(m);
  }
  /* execution order: microbatch j0 + q, rank rk[q]; round-robin over the ranks'
   * runs (one rank: j0, j0+1, … in order) */
  int64_t n_mb = j1 - j0, *exec = rl_xmalloc((size_t)(n_mb + 1) * sizeof *exec), ne = 0;
  int *rk = rl_xmalloc((size_t)(n_mb + 1) * sizeof *rk);
  rl_loss_out *outs = rl_xcalloc((size_t)(n_mb + 1), sizeof *outs);
  for (int64_t q = 0; q < n_mb; q++) rk[q] = slice_rank(q, n_mb, t->dp);
  for (int64_t k = 0; ne < n_mb; k++)
    for (int r = 0; r < t->dp; r++) {
      int64_t first = (n_mb * r + t->dp - 1) / t->dp; /* the first q of rank r: ceil(n·r/N) */
      if (first + k < n_mb && rk[first + k] == r) exec[ne++] = first + k;
    }
  for (int64_t x = 0; x < n_mb && !rc; x++) {
    int64_t q = exec[x], j = j0 + q;
    int n = (int)(pl->mb_start[j + 1] - pl->mb_start[j]);
    if ((rc = trd_rank_set(t, rk[q], e))) break;
    if ((rc = tr_pack_build(t, b, pl->order + pl->mb_start[j], n, keep, adv, e))) break;
    tr_pack *p = &t->pk;
    if ((rc = tr_pack_forward(t, m, t->a, p->logp, want_ent ? p->ent : NULL, e))) break;
    acc->fwd_tokens += p->T;
    if (ppo && !acc->first_done) {
      double dev = 0;
      for (int i = 0; i < p->T; i++)
        if (p->mask[i]) dev = fmax(dev, fabs((double)p->logp[i] - (double)p->lp_old[i]));
      acc->first_dev = dev;
    }
    acc->first_done = 1;
    rl_seqs sq = {p->n_seq, p->off64, p->mask, p->keep, p->adv, p->logp, p->lp_old,
                  c->tis_mode != RL_TIS_OFF ? p->lp_roll : NULL, c->kl_beta > 0 ? p->lp_ref : NULL,
                  want_ent ? p->ent : NULL};
    rc = rl_loss_compute(c, &sq, &norm, &outs[q], p->dlogp, want_ent ? p->dent : NULL, e);
    if (rc) {
      rl_err_prefix(e, "train step %lld, sample %lld..: ", (long long)(t->step + 1), (long long)p->idx[0]);
      break;
    }
    rc = t->cuda ? trd_backward(t, p->dlogp, want_ent ? p->dent : NULL, e)
                 : model_backward_logprob(m, t->a, p->dlogp, want_ent ? p->dent : NULL, e);
    if (rc) rl_err_prefix(e, "train backward (step %lld): ", (long long)(t->step + 1));
  }
  if (t->dp > 1) { /* rank 0's GPU current again, failed or not */
    rl_err ignore;
    int back = trd_rank_set(t, 0, rc ? &ignore : e);
    if (!rc) rc = back;
  }
  if (!rc && t->dp > 1 && (rc = trd_dp_reduce(t, e)))
    rl_err_prefix(e, "train step %lld (weights unchanged): ", (long long)(t->step + 1));
  rl_loss_out sum; /* in microbatch order, whatever ran first */
  memset(&sum, 0, sizeof sum);
  for (int64_t q = 0; q < n_mb; q++) rl_loss_out_add(&sum, &outs[q]);
  free(exec), free(rk), free(outs);
  if (rc) return rc;
  if (t->o.grad_hook && (rc = t->o.grad_hook(t->o.grad_hook_ud, m, t->step + 1)))
    return rl_errf(e, rc, "train step %lld: stopped by the gradient hook", (long long)(t->step + 1));
  optim_info info;
  rc = t->cuda ? trd_optim_step(t, t->step + 1, &info, e)
              : optim_step_cpu(&t->o.optim, t->ot, m->n_params, t->step + 1, &info, e);
  if (rc) return rl_err_prefix(e, "train step %lld (iteration %lld; weights unchanged): ",
                               (long long)(t->step + 1), (long long)b->iteration);
  t->step++;
  acc->steps++;
  acc->last = sum;
  acc->info = info;
  acc->loss_sum += sum.loss;
  acc->grad_norm_sum += info.grad_norm;
  acc->n_clipped += sum.n_clipped;
  acc->n_tokens += sum.n_tokens;
  return tr_weights_refresh(t, 0, e); /* the optimizer wrote the BF16 weights */
}

/* The metrics of one call (RL.md's list plus the train/ ones). */
static void result_metrics(trainer *t, train_result *r, const tr_acc *acc) {
  rl_metric_list *l = &r->metrics;
  const rl_loss_cfg *c = &t->o.loss;
  int ppo = c->kind == RL_LOSS_PPO;
  if (ppo) { /* sft has no reward: no reward metrics (a 0 would read as a reward) */
    rl_metric_set(l, RL_M_REWARD_MEAN, r->reward_mean);
    rl_metric_set(l, RL_M_REWARD_STD, r->reward_std);
    rl_metric_set(l, RL_M_GROUPS_DEGENERATE, (double)r->n_degenerate);
  }
  /* loss: mean over the steps of this call; clip fraction over all of them;
   * loss/policy, /kl, /entropy: the last step's. */
  rl_loss_out avg = acc->last;
  if (acc->steps > 0) {
    avg.loss = acc->loss_sum / (double)acc->steps;
    avg.n_clipped = acc->n_clipped;
    avg.n_tokens = acc->n_tokens;
  }
  rl_metric_list_add_loss(l, c, &avg);
  if (ppo) rl_metric_list_add_mismatch(l, &r->mismatch, c->tis_mode);
  if (t->r3) rl_metric_set(l, RL_M_R3_OVERLAP, r->r3_overlap);
  rl_metric_set(l, RL_M_GRAD_NORM, r->grad_norm_mean);
  rl_metric_set(l, RL_M_LR, optim_lr_at(&t->o.optim, t->step > 0 ? t->step : 1));
  rl_metric_set(l, TRAIN_M_CLIP_COEF, r->optim.clip_coef);
  rl_metric_set(l, TRAIN_M_OPTIM_STEP, (double)t->step);
  rl_metric_set(l, TRAIN_M_TOKENS, (double)r->n_tokens);
  rl_metric_set(l, TRAIN_M_TOKENS_PER_S, r->tokens_per_s);
  rl_metric_set(l, TRAIN_M_SECONDS, r->seconds);
}

int trainer_step(trainer *t, const rollout_batch *b, train_result *res, rl_err *e) {
  double t0 = rl_now();
  memset(res, 0, sizeof *res);
  res->r3_overlap = NAN;
  res->optim.clip_coef = 1.0;
  const rl_loss_cfg *c = &t->o.loss;
  int ppo = c->kind == RL_LOSS_PPO, rc;
  if ((rc = tr_batch_check(t, b, e))) return rc;
  if ((rc = views_ready(t, t->m, e))) return rc;
  if (t->ref && (rc = views_ready(t, t->ref, e))) return rc;
  int64_t n = b->n;
  double *rw = rl_xmalloc((size_t)(n + 1) * sizeof(double));
  double *adv = rl_xcalloc((size_t)(n + 1), sizeof(double));
  uint8_t *keep = rl_xmalloc((size_t)(n + 1));
  for (int64_t i = 0; i < n; i++) rw[i] = b->s[i].reward, keep[i] = 1;
  tr_plan pl = {0};
  tr_acc acc;
  memset(&acc, 0, sizeof acc);
  if (ppo) {
    rc = rl_advantages((rl_adv_kind)t->o.algorithm, rw, b->n_prompts, (int)b->group, adv, keep,
                       &res->n_degenerate, e);
    if (rc) {
      rl_err_prefix(e, "train (iteration %lld; weights unchanged): ", (long long)b->iteration);
      goto out;
    }
  }
  rl_reward_stats(rw, n, &res->reward_mean, &res->reward_std);
  batch_storage(t, b);
  plan_make(&pl, keep, n, t->o.microbatch, t->o.minibatches);
  for (int64_t q = 0; q < pl.n_kept; q++) res->n_tokens += b->s[pl.order[q]].n_completion;
  if (ppo) {
    int64_t r3m = 0, r3t = 0;
    rc = pass_old(t, b, &pl, t->ref != NULL, &r3m, &r3t, &acc.fwd_tokens, e);
    if (rc) goto out;
    if (t->r3) res->r3_overlap = r3t ? (double)r3m / (double)r3t : NAN;
    rl_mismatch_acc ma;
    rl_mismatch_init(&ma);
    for (int64_t i = 0; i < n; i++)
      if (b->s[i].logp_rollout && b->s[i].n_completion > 0)
        rl_mismatch_add(&ma, c, t->lp_old + t->cpl_off[i], b->s[i].logp_rollout, NULL,
                        b->s[i].n_completion);
    rl_mismatch_finish(&ma, &res->mismatch);
  }
  for (int ep = 0; ep < t->o.ppo_epochs && !rc; ep++)
    for (int s = 0; s < t->o.minibatches && !rc; s++)
      rc = step_slice(t, b, &pl, pl.slice_mb[s], pl.slice_mb[s + 1], ppo ? keep : NULL, adv, &acc, e);
  if (rc) goto out;
  res->loss = acc.last;
  res->steps = acc.steps;
  res->optim = acc.info;
  if (!acc.steps) res->optim.clip_coef = 1.0, res->optim.lr = optim_lr_at(&t->o.optim, t->step + 1);
  res->loss_mean = acc.steps ? acc.loss_sum / (double)acc.steps : 0.0;
  res->clipfrac = acc.n_tokens ? (double)acc.n_clipped / (double)acc.n_tokens : 0.0;
  res->grad_norm_mean = acc.steps ? acc.grad_norm_sum / (double)acc.steps : 0.0;
  res->first_ratio_max_dev = acc.first_dev;
  res->n_forward_tokens = acc.fwd_tokens;
  res->seconds = rl_now() - t0;
  res->tokens_per_s = res->seconds > 0 ? (double)acc.fwd_tokens / res->seconds : 0.0;
  result_metrics(t, res, &acc);
out:
  plan_free(&pl);
  free(rw), free(adv), free(keep);
  return rc;
}

int trainer_logprobs(trainer *t, const rollout_batch *b, float *const *logp, rl_err *e) {
  int rc = tr_batch_check(t, b, e);
  if (!rc) rc = views_ready(t, t->m, e);
  if (rc) return rc;
  batch_storage(t, b);
  uint8_t *keep = rl_xmalloc((size_t)(b->n + 1));
  memset(keep, 1, (size_t)(b->n + 1));
  tr_plan pl = {0};
  plan_make(&pl, keep, b->n, t->o.microbatch, t->o.minibatches);
  int64_t fwd = 0;
  rc = pass_old(t, b, &pl, 0, NULL, NULL, &fwd, e);
  for (int64_t i = 0; !rc && i < b->n; i++)
    memcpy(logp[i], t->lp_old + t->cpl_off[i], (size_t)b->s[i].n_completion * sizeof(float));
  plan_free(&pl);
  free(keep);
  return rc;
}
