/* decode.c — the incremental forward against a KV cache (see decode.h). The
 * layer code mirrors forward.c's layer_forward op for op; keep them in step. */
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "model/decode.h"
#include "model/model_int.h"

/* Steps with fewer multiply-adds run single-threaded (see model_decode_step). */
#define DECODE_PAR_MIN ((int64_t)1 << 24)

/* Scratch buffers of a step, grown to the largest n seen. */
struct model_decode_ws {
  int cap;       /* rows the buffers hold */
  int key[6];    /* model sizes they were made for */
  float *res, *next, *xn, *qr, *kr, *v, *q, *k, *rstd, *att, *o, *h, *xn2;
  uint16_t *xn_b, *att_b, *xn2_b;
  float *gate, *up, *act;
  uint16_t *act_b;
  float *xf, *xw, *logits;
  uint16_t *xf_b, *xw_b;
  double *scratch; /* per thread: kvcache_scratch_len */
  int64_t scratch_len, kv_len;
  int n_threads;
  float *nb, *wk;  /* norm weights in FP32 */
  /* attention: rows grouped by slot; per-thread key buffers of max_len rows */
  int *gstart, *gslot, *gcnt, *gnpos, *goff, *grows, slots_cap;
  int32_t *iota;
  float *krstd;
  int par;         /* this step is big enough for OpenMP */
  model_acts moe;  /* moe_forward's view: T, f32 and la[l] point at the buffers below */
  model_layer_acts mx;
};

model_decode_ws *model_decode_ws_new(void) { return rl_xcalloc(1, sizeof(model_decode_ws)); }

/* Free every buffer of ws (keeps the struct zeroed). */
static void ws_release(model_decode_ws *w) {
  void *b[] = {w->res, w->next, w->xn, w->qr, w->kr, w->v, w->q, w->k, w->rstd, w->att, w->o,
               w->h, w->xn2, w->xn_b, w->att_b, w->xn2_b, w->gate, w->up, w->act, w->act_b,
               w->xf, w->xw, w->logits, w->xf_b, w->xw_b, w->scratch, w->nb, w->wk, w->moe.la,
               w->gstart, w->gslot, w->gcnt, w->gnpos, w->goff, w->grows, w->iota, w->krstd,
               w->mx.rlogits, w->mx.probs, w->mx.rw, w->mx.ids, w->mx.e_start, w->mx.e_cnt,
               w->mx.slot_of_row, w->mx.row_of_slot, w->mx.xg, w->mx.xg_b, w->mx.eg, w->mx.eu,
               w->mx.eact, w->mx.eact_b, w->mx.eout};
  for (size_t i = 0; i < sizeof b / sizeof *b; i++) free(b[i]);
  memset(w, 0, sizeof *w);
}

void model_decode_ws_free(model_decode_ws *ws) {
  if (!ws) return;
  ws_release(ws);
  free(ws);
}

#define WF(n) rl_xcalloc((size_t)(n) > 0 ? (size_t)(n) : 1, sizeof(float))
#define WB(n) rl_xcalloc((size_t)(n) > 0 ? (size_t)(n) : 1, sizeof(uint16_t))
#define WI(n) rl_xcalloc((size_t)(n) > 0 ? (size_t)(n) : 1, sizeof(int32_t))

/* Make ws hold a step of n rows through m with cache kv. */
static void ws_prepare(model_decode_ws *w, const model *m, const kvcache *kv, int n) {
  int key[6] = {m->H, m->nq * m->hd, m->nkv * m->hd, m->I, m->V, m->E};
  int nt = 1;
#ifdef _OPENMP
  nt = omp_get_max_threads();
#endif
  int64_t sl = kvcache_scratch_len(kv);
  if (w->cap >= n && !memcmp(key, w->key, sizeof key) && w->scratch_len >= sl && w->n_threads >= nt &&
      w->slots_cap >= kv->slots && w->kv_len >= kv->max_len)
    return;
  ws_release(w);
  int64_t C = n > 0 ? n : 1, H = m->H, qd = (int64_t)m->nq * m->hd, kd = (int64_t)m->nkv * m->hd;
  memcpy(w->key, key, sizeof key);
  w->cap = (int)C, w->n_threads = nt, w->scratch_len = sl;
  w->res = WF(C * H), w->next = WF(C * H), w->xn = WF(C * H), w->xn_b = WB(C * H);
  w->qr = WF(C * qd), w->kr = WF(C * kd), w->v = WF(C * kd), w->q = WF(C * qd), w->k = WF(C * kd);
  w->rstd = WF(C * (m->nq > m->nkv ? m->nq : m->nkv));
  w->att = WF(C * qd), w->att_b = WB(C * qd), w->o = WF(C * H), w->h = WF(C * H);
  w->xn2 = WF(C * H), w->xn2_b = WB(C * H);
  w->gate = WF(C * m->I), w->up = WF(C * m->I), w->act = WF(C * m->I), w->act_b = WB(C * m->I);
  w->xf = WF(C * H), w->xf_b = WB(C * H), w->xw = WF(C * H), w->xw_b = WB(C * H);
  w->logits = WF(C * m->V);
  w->scratch = rl_xmalloc((size_t)(sl * nt) * sizeof(double));
  w->nb = WF(H > m->hd ? H : m->hd), w->wk = WF(m->hd);
  int64_t S = kv->slots, ml = kv->max_len;
  w->slots_cap = (int)S, w->kv_len = ml;
  w->gstart = WI(S), w->gslot = WI(S), w->gcnt = WI(S), w->gnpos = WI(S), w->goff = WI(S), w->grows = WI(C);
  w->iota = WI(ml);
  for (int64_t i = 0; i < ml; i++) w->iota[i] = (int32_t)i;
  w->krstd = WF(nt * ml * m->nkv);
  w->moe.la = rl_xcalloc((size_t)m->L, sizeof(model_layer_acts));
  if (m->E > 0) {
    int64_t R = C * m->topk;
    model_layer_acts *x = &w->mx;
    x->rlogits = WF(C * m->E), x->probs = WF(C * m->E), x->rw = WF(R), x->ids = WI(R);
    x->e_start = WI(m->E), x->e_cnt = WI(m->E), x->slot_of_row = WI(R), x->row_of_slot = WI(R);
    x->xg = WF(R * H), x->xg_b = WB(R * H), x->eg = WF(R * m->Im), x->eu = WF(R * m->Im);
    x->eact = WF(R * m->Im), x->eact_b = WB(R * m->Im), x->eout = WF(R * H);
  }
}

/* The MoE block of layer l on ws->xn2 → ws->next; ids [n][k] into ids. */
static int step_moe(model *m, int l, int n, int f32, model_decode_ws *w, int32_t *ids, rl_err *e) {
  model_layer_acts *x = &w->moe.la[l];
  int k = m->topk, H = m->H, rc = 0;
  *x = w->mx;
  w->moe.T = n, w->moe.f32 = f32, w->moe.L = m->L, w->moe.H = H;
  x->xn2 = w->xn2, x->xn2_b = w->xn2_b, x->ids = ids;
  if (f32 || m->policy.fmt[LINEAR_EXPERT] != QFMT_NVFP4) return moe_forward(m, l, NULL, &w->moe, w->next, e);
  /* NVFP4 experts: one row at a time (per-tensor activation scale, see decode.h) */
  w->moe.T = 1;
  for (int t = 0; t < n && !rc; t++) {
    x->xn2 = w->xn2 + (size_t)t * H, x->xn2_b = w->xn2_b + (size_t)t * H, x->ids = ids + (size_t)t * k;
    rc = moe_forward(m, l, NULL, &w->moe, w->next + (size_t)t * H, e);
  }
  return rc;
}

/* What key_make needs: the layer's k_norm weight, the model sizes, a
 * per-thread rstd buffer and the positions 0..max_len−1. */
typedef struct key_ctx {
  const model *m;
  const float *w;
  float *rstd;
  const int32_t *iota;
} key_ctx;

/* Raw keys → attention keys in place: ops_qk_norm_rope_forward_cpu, the
 * function the full forward applies (through a copy: it must not alias). */
static void key_make(float *k, int64_t from, int64_t cnt, void *ctx) {
  key_ctx *c = ctx;
  size_t n = (size_t)cnt * c->m->nkv * c->m->hd;
  float *raw = rl_xmalloc(n * sizeof(float) + 1);
  memcpy(raw, k, n * sizeof(float));
  ops_qk_norm_rope_forward_cpu(k, c->rstd, raw, c->w, c->iota + from, (int)cnt, c->m->nkv, c->m->hd,
                               c->m->eps, c->m->theta);
  free(raw);
}

/* Attention of every row of s in layer l. Rows are grouped by slot; each
 * slot's attention keys come from kvcache_keys (for a KV_K_RAW cache the
 * new positions are QK-normed and rotated by key_make, so the keys are the
 * full forward's). */
static void step_attend(const model *m, int l, kvcache *kv, const model_step *s,
                        model_decode_ws *w, const float *knorm_w) {
  int n = s->n;
  int64_t qd = (int64_t)m->nq * m->hd, ml = kv->max_len;
  /* group rows by slot (counting sort; rows keep their order inside a slot) */
  int ng = 0;
  for (int i = 0; i < n; i++) w->gstart[s->slot[i]] = -1;
  for (int i = 0; i < n; i++) {
    int sl = s->slot[i];
    if (w->gstart[sl] < 0) w->gstart[sl] = ng, w->gslot[ng] = sl, w->gcnt[ng] = 0, w->gnpos[ng] = 0, ng++;
    int g = w->gstart[sl];
    w->gcnt[g]++;
    if (s->pos[i] + 1 > w->gnpos[g]) w->gnpos[g] = s->pos[i] + 1;
  }
  for (int g = 0, acc = 0; g < ng; g++) w->goff[g] = acc, acc += w->gcnt[g], w->gcnt[g] = 0;
  for (int i = 0; i < n; i++) {
    int g = w->gstart[s->slot[i]];
    w->grows[w->goff[g] + w->gcnt[g]++] = i;
  }
#pragma omp parallel for schedule(dynamic, 1) if (w->par)
  for (int g = 0; g < ng; g++) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    key_ctx kc = {m, knorm_w, w->krstd + (size_t)tid * ml * m->nkv, w->iota};
    const float *keys = kvcache_keys(kv, l, w->gslot[g], w->gnpos[g],
                                     kv->kmode == KV_K_RAW ? key_make : NULL, &kc);
    for (int r = 0; r < w->gcnt[g]; r++) {
      int i = w->grows[w->goff[g] + r];
      kvcache_attend(kv, l, s->slot[i], (int64_t)s->pos[i] + 1, keys, w->q + i * qd, m->nq,
                     w->att + i * qd, w->att_b + i * qd, w->scratch + (size_t)tid * w->scratch_len);
    }
  }
}

/* Decoder layer l for the n rows of s: ws->res → ws->res (in place). */
static int step_layer(model *m, int l, kvcache *kv, const model_step *s, model_decode_ws *w,
                      int32_t *ids, rl_err *e) {
  model_layer *y = &m->layers[l];
  int n = s->n, H = m->H, f32 = s->f32, rc;
  int64_t kd = (int64_t)m->nkv * m->hd;
  ops_rmsnorm_forward_cpu(w->xn, w->xn_b, w->rstd, w->res, model_norm_w(y->ln1, f32, w->nb), n, H, m->eps);
  if ((rc = mlin_forward(m, &y->q, f32, w->xn, w->xn_b, n, w->qr, e)) ||
      (rc = mlin_forward(m, &y->k, f32, w->xn, w->xn_b, n, w->kr, e)) ||
      (rc = mlin_forward(m, &y->v, f32, w->xn, w->xn_b, n, w->v, e)))
    return rc;
  ops_qk_norm_rope_forward_cpu(w->q, w->rstd, w->qr, model_norm_w(y->q_norm, f32, w->nb), s->pos, n,
                               m->nq, m->hd, m->eps, m->theta);
  ops_qk_norm_rope_forward_cpu(w->k, w->rstd, w->kr, model_norm_w(y->k_norm, f32, w->nb), s->pos, n,
                               m->nkv, m->hd, m->eps, m->theta);
  const float *kst = kv->kmode == KV_K_RAW ? w->kr : w->k;
  for (int i = 0; i < n; i++) kvcache_write(kv, l, s->slot[i], s->pos[i], kst + i * kd, w->v + i * kd);
  step_attend(m, l, kv, s, w, model_norm_w(y->k_norm, f32, w->wk));
  if ((rc = mlin_forward(m, &y->o, f32, w->att, w->att_b, n, w->next, e))) return rc;
  ops_residual_rmsnorm_forward_cpu(w->h, w->xn2, w->xn2_b, w->rstd, w->res, w->next,
                                   model_norm_w(y->ln2, f32, w->nb), n, H, m->eps);
  if (y->moe) {
    rc = step_moe(m, l, n, f32, w, ids, e);
  } else if (!(rc = mlin_forward(m, &y->gate, f32, w->xn2, w->xn2_b, n, w->gate, e)) &&
             !(rc = mlin_forward(m, &y->up, f32, w->xn2, w->xn2_b, n, w->up, e))) {
    ops_swiglu_forward_cpu(w->act, w->act_b, w->gate, w->up, n, m->I, m->I);
    rc = mlin_forward(m, &y->down, f32, w->act, w->act_b, n, w->next, e);
  }
  if (!rc)
    for (size_t i = 0; i < (size_t)n * H; i++) w->res[i] = w->h[i] + w->next[i];
  return rc;
}

/* Check the rows of s against m and kv. */
static int step_check(const model *m, const kvcache *kv, const model_step *s, rl_err *e) {
  if (s->f32 && !m->has_f32)
    return rl_errf(e, RL_EXIT_USAGE, "model_decode_step: the FP32 mode needs FP32 weights (load with keep_f32)");
  if (s->f32 && kv->dtype != KVCACHE_F32)
    return rl_errf(e, RL_EXIT_USAGE, "model_decode_step: the FP32 mode needs an FP32 KV cache");
  if (!s->f32 && !m->quantized)
    return rl_errf(e, RL_EXIT_USAGE,
                   "model_decode_step: the quantized weights are stale; call model_quantize after "
                   "changing the master weights");
  if (kv->L != m->L || kv->nkv != m->nkv || kv->hd != m->hd)
    return rl_errf(e, RL_EXIT_USAGE, "model_decode_step: the KV cache was made for another model shape");
  for (int i = 0; i < s->n; i++) {
    if (s->slot[i] < 0 || s->slot[i] >= kv->slots || s->pos[i] < 0 || s->pos[i] >= kv->max_len)
      return rl_errf(e, RL_EXIT_USAGE,
                     "model_decode_step: row %d: slot %d position %d is outside the cache (%d slots × "
                     "%lld positions)",
                     i, s->slot[i], s->pos[i], kv->slots, (long long)kv->max_len);
  }
  return 0;
}

/* The step itself (model_decode_step after the checks). */
static int step_run(model *m, kvcache *kv, const model_step *s, model_decode_ws *ws, int32_t *routed,
                    rl_err *e) {
  int n = s->n, H = m->H, f32 = s->f32, k = m->topk, rc;
  rc = f32 ? ops_embedding_forward_cpu(ws->res, m->embed->w32, s->tokens, n, m->V, H, e)
           : ops_embedding_forward_bf16_cpu(ws->res, m->embed->w, s->tokens, n, m->V, H, e);
  if (rc) return rl_err_prefix(e, "model_decode_step: ");
  int32_t *ids = m->E > 0 ? rl_xmalloc((size_t)n * k * sizeof(int32_t)) : NULL;
  for (int l = 0; l < m->L && !rc; l++) {
    if ((rc = step_layer(m, l, kv, s, ws, ids, e))) {
      rl_err_prefix(e, "model_decode_step: layer %d: ", l);
      break;
    }
    if (routed && m->E > 0)
      for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++)
          routed[((size_t)i * m->L + l) * k + j] = m->layers[l].moe ? ids[(size_t)i * k + j] : -1;
  }
  free(ids);
  if (rc) return rc;
  ops_rmsnorm_forward_cpu(ws->xf, ws->xf_b, ws->rstd, ws->res, model_norm_w(m->final_norm, f32, ws->nb),
                          n, H, m->eps);
  int nw = 0;
  for (int i = 0; i < n; i++) {
    if (s->want && !s->want[i]) continue;
    memcpy(ws->xw + (size_t)nw * H, ws->xf + (size_t)i * H, (size_t)H * sizeof(float));
    memcpy(ws->xw_b + (size_t)nw * H, ws->xf_b + (size_t)i * H, (size_t)H * sizeof(uint16_t));
    nw++;
  }
  rc = mlin_forward(m, &m->lm_head, f32, ws->xw, ws->xw_b, nw, ws->logits, e);
  return rc ? rl_err_prefix(e, "model_decode_step: lm_head: ") : 0;
}

int model_decode_step(model *m, kvcache *kv, const model_step *s, model_decode_ws *ws,
                      float **logits, int32_t *routed, rl_err *e) {
  int rc;
  if (s->n < 0) return rl_errf(e, RL_EXIT_USAGE, "model_decode_step: negative row count");
  if ((rc = step_check(m, kv, s, e))) return rc;
  ws_prepare(ws, m, kv, s->n);
  if (logits) *logits = ws->logits;
  if (s->n == 0) return 0;
  /* Multiply-adds of the step, roughly. A decode step is small and there are
   * many: below DECODE_PAR_MIN every op runs on this thread alone (inside a
   * one-thread team, nested regions do not fork), which is much faster than
   * waking a team per op, badly so on a loaded machine. Results are the same
   * either way (every op is deterministic whatever the thread count). */
  int64_t qd = (int64_t)m->nq * m->hd, kd = (int64_t)m->nkv * m->hd;
  int64_t mlp = m->E > 0 ? (int64_t)m->topk * m->Im + m->E : m->I;
  int64_t work = (int64_t)s->n * (m->L * ((int64_t)m->H * (2 * qd + 2 * kd) + 3 * (int64_t)m->H * mlp) +
                                  (int64_t)m->H * m->V);
  ws->par = work >= DECODE_PAR_MIN;
  if (ws->par) return step_run(m, kv, s, ws, routed, e);
#pragma omp parallel num_threads(1)
  {
#ifdef _OPENMP
    omp_set_num_threads(1); /* this region's nested regions: one thread */
#endif
    rc = step_run(m, kv, s, ws, routed, e);
  }
  return rc;
}
