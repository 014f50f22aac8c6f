/* moe.c — the sparse MLP of Qwen3-MoE, forward and backward: router linear →
 * softmax → top-k (or R3 replay of given ids) → renormalise → SwiGLU experts
 * on the rows routed to each → weighted sum. Deterministic: rows are grouped
 * by expert in index order (tokens ascending inside an expert), each expert
 * runs as one linear call, and a token's output sums its k choices in choice
 * order j = 0..k−1; the backward gathers per-row input gradients and sums
 * them per token in the same order. */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/model_int.h"

int moe_forward(model *m, int l, const int32_t *replay, model_acts *a, float *out, rl_err *e) {
  model_layer *y = &m->layers[l];
  model_layer_acts *x = &a->la[l];
  int T = a->T, H = m->H, E = m->E, k = m->topk, Im = m->Im, f32 = a->f32, rc;
  int64_t R = (int64_t)T * k;
  if ((rc = mlin_forward(m, &y->router, f32, x->xn2, x->xn2_b, T, x->rlogits, e))) return rc;
  if (replay) memcpy(x->ids, replay, (size_t)R * sizeof(int32_t));
  rc = ops_router_forward_cpu(x->ids, x->rw, x->probs, x->rlogits, T, E, k, m->cfg.norm_topk_prob,
                              replay ? OPS_ROUTE_REPLAY : OPS_ROUTE_TOPK, e);
  if (rc) return rl_err_prefix(e, "router%s: ", replay ? " (R3 replay)" : "");
  /* group the rows by expert */
  memset(x->e_cnt, 0, (size_t)E * sizeof(int32_t));
  for (int64_t s = 0; s < R; s++) x->e_cnt[x->ids[s]]++;
  for (int ex = 0, acc = 0; ex < E; ex++) x->e_start[ex] = acc, acc += x->e_cnt[ex];
  int32_t *fill = rl_xmalloc((size_t)E * sizeof(int32_t));
  memcpy(fill, x->e_start, (size_t)E * sizeof(int32_t));
  for (int64_t s = 0; s < R; s++) {
    int32_t r = fill[x->ids[s]]++;
    x->slot_of_row[r] = (int32_t)s, x->row_of_slot[s] = r;
  }
  free(fill);
  for (int64_t r = 0; r < R; r++) {
    int64_t t = x->slot_of_row[r] / k;
    memcpy(x->xg + r * H, x->xn2 + t * H, (size_t)H * sizeof(float));
    memcpy(x->xg_b + r * H, x->xn2_b + t * H, (size_t)H * sizeof(uint16_t));
  }
  for (int ex = 0; ex < E && !rc; ex++) {
    int64_t n = x->e_cnt[ex], r0 = x->e_start[ex];
    if (!n) continue;
    float *g = x->eg + r0 * Im, *u = x->eu + r0 * Im, *act = x->eact + r0 * Im;
    if ((rc = mlin_forward(m, &y->eg[ex], f32, x->xg + r0 * H, x->xg_b + r0 * H, n, g, e)) ||
        (rc = mlin_forward(m, &y->eu[ex], f32, x->xg + r0 * H, x->xg_b + r0 * H, n, u, e)))
      break;
    ops_swiglu_forward_cpu(act, x->eact_b + r0 * Im, g, u, (int)n, Im, Im);
    rc = mlin_forward(m, &y->ed[ex], f32, act, x->eact_b + r0 * Im, n, x->eout + r0 * H, e);
  }
  if (rc) return rc;
#pragma omp parallel for schedule(static) if ((int64_t)T * H * k > MODEL_OMP_MIN)
  for (int t = 0; t < T; t++)
    for (int i = 0; i < H; i++) {
      float s = 0.0f;
      for (int j = 0; j < k; j++) {
        int64_t r = x->row_of_slot[(int64_t)t * k + j];
        s += x->rw[(int64_t)t * k + j] * x->eout[r * H + i];
      }
      out[(int64_t)t * H + i] = s;
    }
  return 0;
}

int moe_backward(model *m, int l, model_acts *a, const float *dy, float *dxn2, rl_err *e) {
  model_layer *y = &m->layers[l];
  model_layer_acts *x = &a->la[l];
  int T = a->T, H = m->H, E = m->E, k = m->topk, Im = m->Im, f32 = a->f32, rc = 0;
  int64_t R = (int64_t)T * k;
  float *dw = rl_xmalloc((size_t)(R + 1) * sizeof(float));
  float *deout = rl_xmalloc((size_t)(R * H + 1) * sizeof(float));
  float *dact = rl_xmalloc((size_t)(R * Im + 1) * sizeof(float));
  float *dg = rl_xmalloc((size_t)(R * Im + 1) * sizeof(float));
  float *du = rl_xmalloc((size_t)(R * Im + 1) * sizeof(float));
  float *dxg = rl_xmalloc((size_t)(R * H + 1) * sizeof(float));
  float *dlog = rl_xmalloc((size_t)((int64_t)T * E + 1) * sizeof(float));
  /* d weight of choice (t, j) = dy[t] · expert output; d expert output = w · dy[t] */
#pragma omp parallel for schedule(static) if (R * H > MODEL_OMP_MIN)
  for (int64_t s = 0; s < R; s++) {
    int64_t t = s / k, r = x->row_of_slot[s];
    double acc = 0;
    for (int i = 0; i < H; i++) {
      acc += (double)dy[t * H + i] * x->eout[r * H + i];
      deout[r * H + i] = x->rw[s] * dy[t * H + i];
    }
    dw[s] = (float)acc;
  }
  for (int ex = 0; ex < E && !rc; ex++) {
    int64_t n = x->e_cnt[ex], r0 = x->e_start[ex];
    if (!n) continue;
    const float *xg = x->xg + r0 * H;
    const uint16_t *xgb = x->xg_b + r0 * H;
    if ((rc = mlin_backward(m, &y->ed[ex], f32, deout + r0 * H, n, x->eact + r0 * Im,
                            x->eact_b + r0 * Im, dact + r0 * Im, 0, e)))
      break;
    ops_swiglu_backward_cpu(dg + r0 * Im, du + r0 * Im, dact + r0 * Im, x->eg + r0 * Im,
                            x->eu + r0 * Im, (int)n, Im, Im);
    if ((rc = mlin_backward(m, &y->eg[ex], f32, dg + r0 * Im, n, xg, xgb, dxg + r0 * H, 0, e)) ||
        (rc = mlin_backward(m, &y->eu[ex], f32, du + r0 * Im, n, xg, xgb, dxg + r0 * H, 1, e)))
      break;
  }
  if (!rc) {
#pragma omp parallel for schedule(static) if ((int64_t)T * H * k > MODEL_OMP_MIN)
    for (int t = 0; t < T; t++)
      for (int i = 0; i < H; i++) {
        float s = 0.0f;
        for (int j = 0; j < k; j++) s += dxg[(int64_t)x->row_of_slot[(int64_t)t * k + j] * H + i];
        dxn2[(int64_t)t * H + i] = s;
      }
    ops_router_backward_cpu(dlog, dw, x->probs, x->ids, T, E, k, m->cfg.norm_topk_prob);
    rc = mlin_backward(m, &y->router, f32, dlog, T, x->xn2, x->xn2_b, dxn2, 1, e);
  }
  free(dw), free(deout), free(dact), free(dg), free(du), free(dxg), free(dlog);
  return rc;
}
