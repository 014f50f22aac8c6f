/* train_pack.c — the trainer's microbatches: samples packed as prompt ++
 * completion sequences, the loss mask over completion tokens, the R3 replay
 * tables, and the forward that turns a pack into per-token log-probs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "stages/train_int.h"

/* Grow *p (elements of size sz) to at least n; contents kept. */
static void grow(void **p, int64_t *cap, int64_t n, size_t sz) {
  if (n <= *cap) return;
  int64_t c = *cap ? *cap : 64;
  while (c < n) c *= 2;
  *p = rl_xrealloc(*p, (size_t)c * sz);
  *cap = c;
}

/* Make room for n sequences and T tokens in the pack. */
static void pack_reserve(tr_pack *p, int n, int64_t T, int L, int k) {
  if (n + 1 > p->cap_seq) {
    int64_t c = p->cap_seq, c0 = c;
    grow((void **)&p->idx, &c, n + 1, sizeof(int64_t));
    c = c0, grow((void **)&p->off32, &c, n + 1, sizeof(int32_t));
    c = c0, grow((void **)&p->off64, &c, n + 1, sizeof(int64_t));
    c = c0, grow((void **)&p->keep, &c, n + 1, 1);
    c = c0, grow((void **)&p->adv, &c, n + 1, sizeof(double));
    p->cap_seq = c;
  }
  if (T > p->cap_T) {
    int64_t c0 = p->cap_T, c = c0;
    grow((void **)&p->tokens, &c, T, sizeof(int32_t));
    c = c0, grow((void **)&p->targets, &c, T, sizeof(int32_t));
    c = c0, grow((void **)&p->mask, &c, T, 1);
    float **fs[7] = {&p->logp, &p->ent, &p->dlogp, &p->dent, &p->lp_old, &p->lp_roll, &p->lp_ref};
    for (int i = 0; i < 7; i++) c = c0, grow((void **)fs[i], &c, T, sizeof(float));
    p->cap_T = c;
  }
  if (L > 0 && k > 0) grow((void **)&p->replay_buf, &p->cap_replay, (int64_t)L * T * k, sizeof(int32_t));
  if (!p->replay && L > 0) p->replay = rl_xcalloc((size_t)L, sizeof(int32_t *));
}

/* The own-choice tables of the CUDA trainer's R3 overlap (tr_pack own). */
static void pack_reserve_own(tr_pack *p, int64_t T, int L, int k) {
  if (L > 0 && k > 0) grow((void **)&p->own_buf, &p->cap_own, (int64_t)L * T * k, sizeof(int32_t));
  if (!p->own && L > 0) p->own = rl_xcalloc((size_t)L, sizeof(int32_t *));
}

void tr_pack_free(tr_pack *p) {
  free(p->idx), free(p->off32), free(p->off64), free(p->keep), free(p->adv);
  free(p->tokens), free(p->targets), free(p->mask);
  free(p->logp), free(p->ent), free(p->dlogp), free(p->dent);
  free(p->lp_old), free(p->lp_roll), free(p->lp_ref);
  free(p->replay), free(p->replay_buf), free(p->own), free(p->own_buf);
  memset(p, 0, sizeof *p);
}

int tr_batch_check(const trainer *t, const rollout_batch *b, rl_err *e) {
  const model *m = t->m;
  if (b->n < 0 || b->n != b->n_prompts * b->group || (b->n > 0 && !b->s))
    return rl_errf(e, RL_EXIT_USAGE,
                   "train: batch of iteration %lld has %lld samples for %lld prompts x %lld "
                   "(expected n = prompts x group, samples present)",
                   (long long)b->iteration, (long long)b->n, (long long)b->n_prompts,
                   (long long)b->group);
  int sft = t->o.algorithm == TRAIN_ALGO_SFT;
  for (int64_t i = 0; i < b->n; i++) {
    const rollout_sample *s = &b->s[i];
    int64_t len = s->n_prompt + s->n_completion;
    if (s->n_prompt < 1 || s->n_completion < 0 || (s->n_completion > 0 && !s->completion_ids) ||
        !s->prompt_ids)
      return rl_errf(e, RL_EXIT_USAGE,
                     "train: sample %lld (prompt %lld, sample %lld) of iteration %lld has %lld "
                     "prompt and %lld completion tokens: the trainer needs at least one prompt "
                     "token (the context of the first completion token)",
                     (long long)i, (long long)s->prompt_index, (long long)s->sample_index,
                     (long long)b->iteration, (long long)s->n_prompt, (long long)s->n_completion);
    if (m->cfg.max_position_embeddings > 0 && len > m->cfg.max_position_embeddings)
      return rl_errf(e, RL_EXIT_USAGE,
                     "train: sample %lld of iteration %lld is %lld tokens long, more than the "
                     "model's max_position_embeddings %lld: lower rollout.max_new_tokens or "
                     "rollout.max_prompt_tokens",
                     (long long)i, (long long)b->iteration, (long long)len,
                     (long long)m->cfg.max_position_embeddings);
    if (!sft && s->n_completion > 0 && !s->logp_rollout && t->o.loss.tis_mode != RL_TIS_OFF)
      return rl_errf(e, RL_EXIT_USAGE,
                     "train: sample %lld of iteration %lld has no logp_rollout but train.tis.mode "
                     "needs the rollout's log-probs",
                     (long long)i, (long long)b->iteration);
    if (t->r3 && !s->routed)
      return rl_errf(e, RL_EXIT_USAGE,
                     "train: train.r3 is on but sample %lld of iteration %lld has no routed "
                     "experts (the rollout engine records them for MoE models)",
                     (long long)i, (long long)b->iteration);
  }
  if (t->r3 && b->n > 0 && (b->route_layers != m->L || b->route_topk != m->topk))
    return rl_errf(e, RL_EXIT_USAGE,
                   "train: the batch's routing table is [tokens][%d][%d] but the model has %d "
                   "layers and top-k %d: the rollout ran another model?",
                   b->route_layers, b->route_topk, m->L, m->topk);
  return 0;
}

int tr_pack_build(trainer *t, const rollout_batch *b, const int64_t *idx, int n,
                  const uint8_t *keep, const double *adv, rl_err *e) {
  tr_pack *p = &t->pk;
  const model *m = t->m;
  int64_t T = 0;
  for (int i = 0; i < n; i++) T += b->s[idx[i]].n_prompt + b->s[idx[i]].n_completion;
  if (T > INT32_MAX / 2)
    return rl_errf(e, RL_EXIT_USAGE, "train: a microbatch of %d sequences holds %lld tokens: lower "
                   "train.microbatch", n, (long long)T);
  int L = t->r3 ? m->L : 0, k = m->topk;
  pack_reserve(p, n, T, L, k);
  p->n_seq = n;
  p->T = (int)T;
  int64_t pos = 0;
  p->off32[0] = 0, p->off64[0] = 0;
  for (int i = 0; i < n; i++) {
    const rollout_sample *s = &b->s[idx[i]];
    int64_t np = s->n_prompt, nc = s->n_completion, len = np + nc;
    p->idx[i] = idx[i];
    p->keep[i] = keep ? keep[idx[i]] : 1;
    p->adv[i] = adv ? adv[idx[i]] : 0.0;
    memcpy(p->tokens + pos, s->prompt_ids, (size_t)np * sizeof(int32_t));
    if (nc) memcpy(p->tokens + pos + np, s->completion_ids, (size_t)nc * sizeof(int32_t));
    /* The log-prob of completion token j sits at position np − 1 + j (its context's end). */
    memset(p->mask + pos, 0, (size_t)len);
    for (int64_t j = 0; j < nc; j++) {
      int64_t q = pos + np - 1 + j;
      p->mask[q] = 1;
      p->lp_roll[q] = s->logp_rollout ? s->logp_rollout[j] : 0.0f;
      p->lp_old[q] = t->lp_old ? t->lp_old[t->cpl_off[idx[i]] + j] : 0.0f;
      p->lp_ref[q] = t->lp_ref ? t->lp_ref[t->cpl_off[idx[i]] + j] : 0.0f;
    }
    for (int64_t q = pos; q < pos + len; q++)
      if (!p->mask[q]) p->lp_roll[q] = p->lp_old[q] = p->lp_ref[q] = 0.0f;
    pos += len;
    p->off32[i + 1] = (int32_t)pos;
    p->off64[i + 1] = pos;
  }
  ops_seqs sq = {n, p->off32};
  model_targets_next(p->tokens, &sq, p->T, p->targets);
  if (L > 0) {
    int Lb = b->route_layers;
    if (t->cuda) pack_reserve_own(p, T, L, k);
    for (int l = 0; l < L; l++) {
      p->replay[l] = NULL;
      if (t->cuda) p->own[l] = m->layers[l].moe ? p->own_buf + (int64_t)l * T * k : NULL;
      if (!m->layers[l].moe) continue;
      int32_t *dst = p->replay_buf + (int64_t)l * T * k;
      int64_t q = 0;
      for (int i = 0; i < n; i++) {
        const rollout_sample *s = &b->s[idx[i]];
        int64_t len = s->n_prompt + s->n_completion;
        for (int64_t r = 0; r < len; r++, q++) {
          memcpy(dst + q * k, s->routed + (r * Lb + l) * k, (size_t)k * sizeof(int32_t));
          /* the last token was never fed to the rollout model (its routing rows are −1); its
           * output predicts nothing, so any valid ids do: experts 0 … k−1 */
          if (r == len - 1 && dst[q * k] < 0)
            for (int j = 0; j < k; j++) dst[q * k + j] = j;
        }
      }
      p->replay[l] = dst;
    }
  }
  return 0;
}

int tr_pack_forward(trainer *t, model *mdl, model_acts *a, float *logp, float *ent, rl_err *e) {
  tr_pack *p = &t->pk;
  model_batch mb = {p->T, p->tokens, {p->n_seq, p->off32}};
  model_fwd_opts fo = {.f32 = t->o.f32,
                       .replay_ids = t->r3 ? (const int32_t *const *)p->replay : NULL,
                       .recompute = t->o.recompute,
                       .own_ids = t->r3 && t->cuda && p->own_on && mdl == t->m ? p->own : NULL};
  double temp = t->o.temperature > 0 ? t->o.temperature : 1.0;
  int rc;
  if (t->cuda && mdl == t->m) {
    rc = trd_forward(t, &mb, &fo, (float)temp, logp, ent, e);
  } else {
    rc = model_forward(mdl, &mb, &fo, a, e);
    if (!rc) rc = model_logprob_forward(a, p->targets, (float)temp, logp, ent, e);
  }
  if (rc) return rl_err_prefix(e, "train forward (%d sequences, %d tokens, first sample %lld): ",
                               p->n_seq, p->T, (long long)(p->n_seq ? p->idx[0] : -1));
  return 0;
}

void tr_pack_r3_overlap(trainer *t, model_acts *a, int64_t *match, int64_t *total) {
  const model *m = t->m;
  int k = m->topk;
  const int32_t *off = t->pk.off32;
  for (int l = 0; l < m->L; l++) {
    if (!m->layers[l].moe) continue;
    for (int i = 0; i < t->pk.n_seq; i++) { /* each sequence's last token: placeholder ids, left out */
      int r0 = off[i], n = off[i + 1] - off[i] - 1;
      if (n <= 0) continue;
      if (t->cuda) { /* the CUDA forward's own choices against the replayed ids */
        const int32_t *rp = t->pk.replay[l] + (size_t)r0 * k, *own = t->pk.own[l] + (size_t)r0 * k;
        for (int64_t q = 0; q < (int64_t)n * k; q += k)
          for (int j = 0; j < k; j++)
            for (int x = 0; x < k; x++) *match += rp[q + j] == own[q + x];
        *total += (int64_t)n * k;
        continue;
      }
      double ov = ops_router_overlap_cpu(a->la[l].probs + (size_t)r0 * m->E, a->la[l].ids + (size_t)r0 * k, n, m->E, k);
      *match += llround(ov * (double)n * k);
      *total += (int64_t)n * k;
    }
  }
}
