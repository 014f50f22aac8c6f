/* forward.c — the model's forward pass over a packed batch, the linear-layer
 * helpers both directions use, and the log-prob / loss helpers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/linear.h"
#include "model/model.h"
#include "model/model_int.h"

/* ---------------------------------------------------------------- linear layers */

int mlin_forward(const model *m, const model_linear *L, int f32, const float *x32,
                 const uint16_t *xb, int64_t M, float *out, rl_err *e) {
  int64_t N = L->p->rows, K = L->p->cols;
  if (M == 0) return 0;
  if (f32) {
    const float *w = L->p->w32;
#pragma omp parallel for collapse(2) schedule(static) if (M * N * K > MODEL_OMP_MIN)
    for (int64_t i = 0; i < M; i++)
      for (int64_t n = 0; n < N; n++) {
        const float *xr = x32 + i * K, *wr = w + n * K;
        double s = 0;
        for (int64_t k = 0; k < K; k++) s += (double)xr[k] * wr[k];
        out[i * N + n] = (float)s;
      }
    return 0;
  }
  uint16_t *y = rl_xmalloc((size_t)(M * N) * sizeof(uint16_t));
  int rc = linear_forward(y, xb, M, &L->q, &m->policy, e);
  if (rc) rl_err_prefix(e, "%s: ", L->p->name);
  else ops_f32_from_bf16_cpu(out, y, (size_t)(M * N));
  free(y);
  return rc;
}

int mlin_backward(model *m, const model_linear *L, int f32, const float *dy, int64_t M,
                  const float *x32, const uint16_t *xb, float *dx, int add, rl_err *e) {
  int64_t N = L->p->rows, K = L->p->cols;
  float *g = L->p->g;
  if (!g) return rl_errf(e, RL_EXIT_USAGE, "model_backward: no gradient buffers (call model_grads_init)");
  if (M == 0) return 0;
  if (f32) {
    const float *w = L->p->w32;
    if (dx) {
#pragma omp parallel for collapse(2) schedule(static) if (M * N * K > MODEL_OMP_MIN)
      for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < K; k++) {
          double s = 0;
          for (int64_t n = 0; n < N; n++) s += (double)dy[i * N + n] * w[n * K + k];
          dx[i * K + k] = add ? dx[i * K + k] + (float)s : (float)s;
        }
    }
#pragma omp parallel for collapse(2) schedule(static) if (M * N * K > MODEL_OMP_MIN)
    for (int64_t n = 0; n < N; n++)
      for (int64_t k = 0; k < K; k++) {
        double s = 0;
        for (int64_t i = 0; i < M; i++) s += (double)dy[i * N + n] * x32[i * K + k];
        g[n * K + k] += (float)s;
      }
    return 0;
  }
  uint16_t *dyb = rl_xmalloc((size_t)(M * N) * 2), *dxb = dx ? rl_xmalloc((size_t)(M * K) * 2) : NULL;
  ops_bf16_from_f32_cpu(dyb, dy, (size_t)(M * N));
  linear_bwd b = {M, N, K, dyb, xb, L->p->w, dxb, NULL, g, 0, NULL};
  int rc = linear_backward(&b, e);
  if (rc) rl_err_prefix(e, "%s: ", L->p->name);
  else if (dx)
    for (int64_t i = 0; i < M * K; i++) {
      float v;
      ops_f32_from_bf16_cpu(&v, &dxb[i], 1);
      dx[i] = add ? dx[i] + v : v;
    }
  free(dyb), free(dxb);
  return rc;
}

const float *model_norm_w(const model_param *p, int f32, float *buf) {
  if (f32) return p->w32;
  ops_f32_from_bf16_cpu(buf, p->w, (size_t)p->rows);
  return buf;
}

/* ---------------------------------------------------------------- activations */

model_acts *model_acts_new(void) { return rl_xcalloc(1, sizeof(model_acts)); }

/* Free every buffer of a (keeps the struct). */
static void acts_release(model_acts *a) {
  free(a->tokens), free(a->pos), free(a->off), free(a->res), free(a->xf), free(a->rstdf);
  free(a->xf_b), free(a->logits), free(a->lp_lse), free(a->lp_targets);
  for (int l = 0; a->la && l < a->L; l++) {
    model_layer_acts *x = &a->la[l];
    void *bufs[] = {x->xn1, x->rstd1, x->xn1_b, x->qr, x->kr, x->v, x->q, x->k, x->rstd_q,
                    x->rstd_k, x->att, x->lse, x->att_b, x->h, x->xn2, x->rstd2, x->xn2_b,
                    x->gate, x->up, x->act, x->act_b, x->rlogits, x->probs, x->rw, x->ids,
                    x->e_start, x->e_cnt, x->slot_of_row, x->row_of_slot, x->xg, x->xg_b,
                    x->eg, x->eu, x->eact, x->eout, x->eact_b};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
  }
  free(a->la);
  int keep[10];
  memcpy(keep, a->shape_key, sizeof keep);
  memset(a, 0, sizeof *a);
  memcpy(a->shape_key, keep, sizeof keep);
}

void model_acts_free(model_acts *a) {
  if (!a) return;
  acts_release(a);
  free(a);
}

/* Zeroed array of n elements of size sz (at least one element). */
static void *zalloc(int64_t n, size_t sz) { return rl_xcalloc(n > 0 ? (size_t)n : 1, sz); }
#define FA(n) zalloc((n), sizeof(float))
#define BA(n) zalloc((n), sizeof(uint16_t))
#define IA(n) zalloc((n), sizeof(int32_t))

/* Make a hold every buffer of a forward of T tokens through m. */
static void acts_prepare(const model *m, model_acts *a, int T, int n_seq) {
  int key[10] = {m->L, m->H, m->V, m->nq, m->nkv, m->hd, m->I, m->E, m->topk, m->Im};
  if (a->la && a->cap_T >= T && !memcmp(key, a->shape_key, sizeof key)) {
    free(a->off);
    a->off = IA(n_seq + 1);
    return;
  }
  acts_release(a);
  memcpy(a->shape_key, key, sizeof key);
  int64_t C = T > 0 ? T : 1, H = m->H, qd = (int64_t)m->nq * m->hd, kd = (int64_t)m->nkv * m->hd;
  a->cap_T = (int)C, a->L = m->L, a->H = m->H, a->V = m->V;
  a->tokens = IA(C), a->pos = IA(C), a->off = IA(n_seq + 1);
  a->res = FA((m->L + 1) * C * H), a->xf = FA(C * H), a->rstdf = FA(C), a->xf_b = BA(C * H);
  a->logits = FA(C * m->V), a->lp_lse = FA(C), a->lp_targets = IA(C);
  a->la = rl_xcalloc((size_t)m->L, sizeof(model_layer_acts));
  for (int l = 0; l < m->L; l++) {
    model_layer_acts *x = &a->la[l];
    x->xn1 = FA(C * H), x->rstd1 = FA(C), x->xn1_b = BA(C * H);
    x->qr = FA(C * qd), x->kr = FA(C * kd), x->v = FA(C * kd), x->q = FA(C * qd), x->k = FA(C * kd);
    x->rstd_q = FA(C * m->nq), x->rstd_k = FA(C * m->nkv);
    x->att = FA(C * qd), x->lse = FA(C * m->nq), x->att_b = BA(C * qd);
    x->h = FA(C * H), x->xn2 = FA(C * H), x->rstd2 = FA(C), x->xn2_b = BA(C * H);
    if (!m->layers[l].moe) {
      x->gate = FA(C * m->I), x->up = FA(C * m->I), x->act = FA(C * m->I), x->act_b = BA(C * m->I);
      continue;
    }
    int64_t R = C * m->topk;
    x->rlogits = FA(C * m->E), x->probs = FA(C * m->E), x->rw = FA(R), x->ids = IA(R);
    x->e_start = IA(m->E), x->e_cnt = IA(m->E), x->slot_of_row = IA(R), x->row_of_slot = IA(R);
    x->xg = FA(R * H), x->xg_b = BA(R * H);
    x->eg = FA(R * m->Im), x->eu = FA(R * m->Im), x->eact = FA(R * m->Im), x->eact_b = BA(R * m->Im);
    x->eout = FA(R * H);
  }
}

/* ---------------------------------------------------------------- forward */

/* Decoder layer l: res[l] → res[l+1]. */
static int layer_forward(model *m, int l, model_acts *a, int f32, const int32_t *replay,
                         rl_err *e) {
  model_layer *y = &m->layers[l];
  model_layer_acts *x = &a->la[l];
  int T = a->T, H = m->H;
  float *in = a->res + (size_t)l * T * H, *next = a->res + (size_t)(l + 1) * T * H;
  float *nb = rl_xmalloc((size_t)(H > m->hd ? H : m->hd) * sizeof(float));
  int rc;
  ops_rmsnorm_forward_cpu(x->xn1, x->xn1_b, x->rstd1, in, model_norm_w(y->ln1, f32, nb), T, H, m->eps);
  if ((rc = mlin_forward(m, &y->q, f32, x->xn1, x->xn1_b, T, x->qr, e)) ||
      (rc = mlin_forward(m, &y->k, f32, x->xn1, x->xn1_b, T, x->kr, e)) ||
      (rc = mlin_forward(m, &y->v, f32, x->xn1, x->xn1_b, T, x->v, e)))
    goto out;
  ops_qk_norm_rope_forward_cpu(x->q, x->rstd_q, x->qr, model_norm_w(y->q_norm, f32, nb), a->pos, T,
                               m->nq, m->hd, m->eps, m->theta);
  ops_qk_norm_rope_forward_cpu(x->k, x->rstd_k, x->kr, model_norm_w(y->k_norm, f32, nb), a->pos, T,
                               m->nkv, m->hd, m->eps, m->theta);
  ops_attn_shape sh = {T, m->nq, m->nkv, m->hd};
  if ((rc = ops_attention_forward_cpu(x->att, x->att_b, x->lse, x->q, x->k, x->v, &a->seqs, sh, e)))
    goto out;
  /* o_proj output goes to `next` for now; h = in + o, xn2 = norm(h) */
  if ((rc = mlin_forward(m, &y->o, f32, x->att, x->att_b, T, next, e))) goto out;
  ops_residual_rmsnorm_forward_cpu(x->h, x->xn2, x->xn2_b, x->rstd2, in, next,
                                   model_norm_w(y->ln2, f32, nb), T, H, m->eps);
  if (y->moe) {
    rc = moe_forward(m, l, replay, a, next, e);
  } else if (!(rc = mlin_forward(m, &y->gate, f32, x->xn2, x->xn2_b, T, x->gate, e)) &&
             !(rc = mlin_forward(m, &y->up, f32, x->xn2, x->xn2_b, T, x->up, e))) {
    ops_swiglu_forward_cpu(x->act, x->act_b, x->gate, x->up, T, m->I, m->I);
    rc = mlin_forward(m, &y->down, f32, x->act, x->act_b, T, next, e);
  }
  if (!rc)
    for (size_t i = 0; i < (size_t)T * H; i++) next[i] = x->h[i] + next[i];
out:
  free(nb);
  if (rc) rl_err_prefix(e, "layer %d: ", l);
  return rc;
}

int model_forward(model *m, const model_batch *b, const model_fwd_opts *o, model_acts *a,
                  rl_err *e) {
  int f32 = o && o->f32, T = b->T, H = m->H, rc;
  if (f32 && !m->has_f32)
    return rl_errf(e, RL_EXIT_USAGE, "model_forward: the FP32 mode needs FP32 weights (load with keep_f32)");
  if (!f32 && !m->quantized)
    return rl_errf(e, RL_EXIT_USAGE,
                   "model_forward: the quantized weights are stale; call model_quantize after "
                   "changing the master weights");
  if (T < 0 || (T > 0 && !b->tokens)) return rl_errf(e, RL_EXIT_USAGE, "model_forward: no tokens");
  if ((rc = ops_seqs_check(&b->seqs, T, e))) return rc;
  acts_prepare(m, a, T, b->seqs.n_seq);
  a->T = T, a->f32 = f32;
  memcpy(a->tokens, b->tokens, (size_t)T * sizeof(int32_t));
  memcpy(a->off, b->seqs.off, (size_t)(b->seqs.n_seq + 1) * sizeof(int32_t));
  a->seqs.n_seq = b->seqs.n_seq, a->seqs.off = a->off;
  ops_seqs_positions(&a->seqs, a->pos);
  rc = f32 ? ops_embedding_forward_cpu(a->res, m->embed->w32, a->tokens, T, m->V, H, e)
           : ops_embedding_forward_bf16_cpu(a->res, m->embed->w, a->tokens, T, m->V, H, e);
  if (rc) return rl_err_prefix(e, "model_forward: ");
  for (int l = 0; l < m->L && !rc; l++)
    rc = layer_forward(m, l, a, f32, o && o->replay_ids ? o->replay_ids[l] : NULL, e);
  if (rc) return rl_err_prefix(e, "model_forward: ");
  float *nb = rl_xmalloc((size_t)H * sizeof(float));
  ops_rmsnorm_forward_cpu(a->xf, a->xf_b, a->rstdf, a->res + (size_t)m->L * T * H,
                          model_norm_w(m->final_norm, f32, nb), T, H, m->eps);
  free(nb);
  rc = mlin_forward(m, &m->lm_head, f32, a->xf, a->xf_b, T, a->logits, e);
  return rc ? rl_err_prefix(e, "model_forward: lm_head: ") : 0;
}

const int32_t *model_routed_ids(const model_acts *a, int l) {
  if (!a || l < 0 || l >= a->L || !a->la) return NULL;
  return a->la[l].ids;
}

/* ---------------------------------------------------------------- log-probs and loss */

void model_targets_next(const int32_t *tokens, const ops_seqs *seqs, int T, int32_t *targets) {
  for (int s = 0; s < seqs->n_seq; s++)
    for (int t = seqs->off[s]; t < seqs->off[s + 1] && t < T; t++)
      targets[t] = t + 1 < seqs->off[s + 1] ? tokens[t + 1] : -1;
}

int model_logprob_forward(model_acts *a, const int32_t *targets, float temp, float *logp,
                          float *entropy, rl_err *e) {
  if (!(temp > 0)) return rl_errf(e, RL_EXIT_USAGE, "model_logprob_forward: temperature must be > 0");
  if (targets) memcpy(a->lp_targets, targets, (size_t)a->T * sizeof(int32_t));
  else
    for (int t = 0; t < a->T; t++) a->lp_targets[t] = -1;
  a->lp_temp = temp;
  return ops_logprob_forward_cpu(logp, entropy, a->lp_lse, a->logits, targets ? a->lp_targets : NULL,
                                 a->T, a->V, temp, e);
}

double model_loss_ce(const float *logp, const int32_t *targets, int T, float *dlogp) {
  int n = 0;
  double s = 0;
  for (int t = 0; t < T; t++)
    if (targets[t] >= 0) s += logp[t], n++;
  if (dlogp)
    for (int t = 0; t < T; t++) dlogp[t] = targets[t] >= 0 && n ? -1.0f / (float)n : 0.0f;
  return n ? -s / n : 0.0;
}

int model_backward_logprob(model *m, model_acts *a, const float *dlogp, const float *dentropy,
                           rl_err *e) {
  float *dl = rl_xmalloc((size_t)a->T * m->V * sizeof(float) + 4);
  int rc = ops_logprob_backward_cpu(dl, dlogp, dentropy, a->logits, a->lp_lse, a->lp_targets, a->T,
                                    m->V, a->lp_temp, e);
  if (!rc) rc = model_backward(m, a, dl, e);
  free(dl);
  return rc;
}
