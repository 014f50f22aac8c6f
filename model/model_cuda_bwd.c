/* model_cuda_bwd.c — the CUDA model's MoE block (forward and backward) and
 * its backward pass: from dlogits down to every device gradient, layer by
 * layer in reverse, as model/backward.c and moe.c do on the CPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/devprof.h"
#include "kernels/linear.h"
#include "model/model_cuda.h"
#include "model/model_cuda_int.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#define MC(call, what) \
  if ((rc = mc_ok((int)(call), what, e))) return rc

/* ---------------------------------------------------------------- MoE */

/* Group the rows of layer acts x by expert on the host (the CPU's order:
 * experts ascending, tokens ascending inside an expert) and upload the maps. */
static int mc_moe_group(const model *m, mc_layer_acts *x, int T, rl_err *e) {
  int E = m->E, k = m->topk, rc;
  int64_t R = (int64_t)T * k;
  memset(x->e_cnt, 0, (size_t)E * sizeof(int32_t));
  for (int64_t s = 0; s < R; s++) {
    if (x->ids_h[s] < 0 || x->ids_h[s] >= E)
      return rl_errf(e, RL_EXIT_FAIL, "MoE: the router chose expert %d (token %lld) outside [0, %d): non-finite router logits?",
                     x->ids_h[s], (long long)(s / k), E);
    x->e_cnt[x->ids_h[s]]++;
  }
  int32_t *fill = rl_xmalloc((size_t)E * sizeof(int32_t));
  for (int ex = 0, acc = 0; ex < E; ex++) x->e_start[ex] = fill[ex] = acc, acc += x->e_cnt[ex];
  for (int64_t s = 0; s < R; s++) {
    int32_t r = fill[x->ids_h[s]]++;
    x->sor_h[r] = (int32_t)s, x->ros_h[s] = r;
  }
  free(fill);
  MC(cudaMemcpy(x->sor, x->sor_h, (size_t)R * 4, cudaMemcpyHostToDevice), "cudaMemcpy (MoE rows)");
  MC(cudaMemcpy(x->ros, x->ros_h, (size_t)R * 4, cudaMemcpyHostToDevice), "cudaMemcpy (MoE slots)");
  return 0;
}

/* Check replayed ids on the host (range, distinct in a token), as the CPU router does. */
static int mc_replay_check(const int32_t *ids, int T, int E, int k, rl_err *e) {
  for (int t = 0; t < T; t++)
    for (int j = 0; j < k; j++) {
      int32_t v = ids[(int64_t)t * k + j];
      if (v < 0 || v >= E)
        return rl_errf(e, RL_EXIT_USAGE, "R3 replay: token %d slot %d names expert %d, outside [0, %d)", t, j, v, E);
      for (int i = 0; i < j; i++)
        if (ids[(int64_t)t * k + i] == v)
          return rl_errf(e, RL_EXIT_USAGE, "R3 replay: token %d names expert %d twice (slots %d and %d)", t, v, i, j);
    }
  return 0;
}

int mc_moe_forward(model *m, int l, const int32_t *replay, model_cuda_acts *a, float *out, rl_err *e) {
  mc_layer *y = &m->cu->layers[l];
  mc_layer_acts *x = &a->la[l];
  int T = a->T, H = m->H, E = m->E, k = m->topk, Im = m->Im, rc;
  int64_t R = (int64_t)T * k;
  if ((rc = mc_lin_fwd(m, &y->router, x->xn2_b, T, x->rlogits, e))) return rc;
  if (replay) {
    if ((rc = mc_replay_check(replay, T, E, k, e))) return rc;
    MC(cudaMemcpy(x->ids, replay, (size_t)R * 4, cudaMemcpyHostToDevice), "cudaMemcpy (replayed ids)");
  }
  if ((rc = ops_router_forward_cuda(x->ids, x->rw, x->probs, x->rlogits, T, E, k, (int)m->cfg.norm_topk_prob,
                                    replay ? OPS_ROUTE_REPLAY : OPS_ROUTE_TOPK, NULL, e)))
    return rl_err_prefix(e, "router%s: ", replay ? " (R3 replay)" : "");
  MC(cudaMemcpy(x->ids_h, x->ids, (size_t)R * 4, cudaMemcpyDeviceToHost), "cudaMemcpy (routed ids)");
  if (replay && a->own_ids && a->own_ids[l] && T > 0) { /* R3 diagnostics: what the router would choose itself */
    size_t ib = ((size_t)R * 4 + 255) & ~(size_t)255, pb = (size_t)T * E * 4; /* each part 256-byte aligned */
    uint8_t *s = mc_scratch(m, MC_SCR_DY, 2 * ib + pb, e); /* ids, weights, probs; free again after the copy */
    if (!s) return e->code;
    if ((rc = ops_router_forward_cuda((int32_t *)s, (float *)(s + ib), (float *)(s + 2 * ib), x->rlogits, T, E, k,
                                      (int)m->cfg.norm_topk_prob, OPS_ROUTE_TOPK, NULL, e)))
      return rl_err_prefix(e, "router (R3 overlap): ");
    MC(cudaMemcpy(a->own_ids[l], s, ib, cudaMemcpyDeviceToHost), "cudaMemcpy (own routed ids)");
  }
  if ((rc = mc_moe_group(m, x, T, e)) || (rc = mck_moe_gather(x->xg_b, x->xn2_b, x->sor, R, k, H, e))) return rc;
  for (int ex = 0; ex < E && !rc; ex++) {
    int64_t n = x->e_cnt[ex], r0 = x->e_start[ex];
    if (!n) continue;
    float *g = x->eg + r0 * Im, *u = x->eu + r0 * Im;
    if ((rc = mc_lin_fwd(m, &y->eg[ex], x->xg_b + r0 * H, n, g, e)) ||
        (rc = mc_lin_fwd(m, &y->eu[ex], x->xg_b + r0 * H, n, u, e)) ||
        (rc = ops_swiglu_forward_cuda(NULL, x->eact_b + r0 * Im, g, u, (int)n, Im, Im, NULL, e)))
      break;
    rc = mc_lin_fwd(m, &y->ed[ex], x->eact_b + r0 * Im, n, x->eout + r0 * H, e);
  }
  if (rc) return rc;
  return mck_moe_combine(out, x->eout, x->rw, x->ros, T, k, H, e);
}

int mc_moe_backward(model *m, int l, model_cuda_acts *a, const float *dy, float *dxn2, rl_err *e) {
  mc_layer *y = &m->cu->layers[l];
  mc_layer_acts *x = &a->la[l];
  int T = a->T, H = m->H, E = m->E, k = m->topk, Im = m->Im, rc;
  if ((rc = mck_moe_combine_bwd(a->m_dw, a->m_deout, dy, x->eout, x->rw, x->ros, T, k, H, e))) return rc;
  for (int ex = 0; ex < E; ex++) {
    int64_t n = x->e_cnt[ex], r0 = x->e_start[ex];
    if (!n) continue;
    const uint16_t *xgb = x->xg_b + r0 * H;
    float *dact = a->m_dact + r0 * Im, *dg = a->m_dg + r0 * Im, *du = a->m_du + r0 * Im;
    if ((rc = mc_lin_bwd(m, &y->ed[ex], a->m_deout + r0 * H, n, x->eact_b + r0 * Im, dact, 0, e)) ||
        (rc = ops_swiglu_backward_cuda(dg, du, dact, x->eg + r0 * Im, x->eu + r0 * Im, (int)n, Im, Im, NULL, e)) ||
        (rc = mc_lin_bwd(m, &y->eg[ex], dg, n, xgb, a->m_dxg + r0 * H, 0, e)) ||
        (rc = mc_lin_bwd(m, &y->eu[ex], du, n, xgb, a->m_dxg + r0 * H, 1, e)))
      return rc;
  }
  if ((rc = mck_moe_sum_rows(dxn2, a->m_dxg, x->ros, T, k, H, e)) ||
      (rc = ops_router_backward_cuda(a->m_dlog, a->m_dw, x->probs, x->ids, T, E, k, (int)m->cfg.norm_topk_prob, NULL, e)))
    return rc;
  return mc_lin_bwd(m, &y->router, a->m_dlog, T, x->xn2_b, dxn2, 1, e);
}

/* ---------------------------------------------------------------- backward */

/* Attention backward of layer acts x: datt → dq, dk, dv (unpadded, written);
 * with BF16 attention operands (a->key[13]) the BF16 datt_b instead. */
static int mc_attention_bwd(model *m, model_cuda_acts *a, mc_layer_acts *x, const float *datt, const uint16_t *datt_b,
                            float *dq, float *dk, float *dv, rl_err *e) {
  int T = a->T, hd = m->hd, dp = a->dp, rc;
  ops_seqs sq = {a->n_seq, a->off};
  ops_attn_shape sh = {T, m->nq, m->nkv, dp};
  if (a->key[13])
    return ops_attention_backward_bx_cuda(dq, dk, dv, datt_b, x->att, x->lse, x->q_b, x->k_b, x->v_b, &sq, a->max_len,
                                          sh, NULL, e);
  if (dp == hd)
    return ops_attention_backward_cuda(dq, dk, dv, datt, x->att, x->lse, x->q, x->k, x->v, &sq, a->max_len, sh, NULL, e);
  float c = (float)sqrt((double)dp / hd);
  if ((rc = mck_pad_heads(a->pad_do, datt, (int64_t)T * m->nq, hd, dp, 1.0f, e)) ||
      (rc = ops_attention_backward_cuda(a->pad_dq, a->pad_dk, a->pad_dv, a->pad_do, x->attp, x->lse, x->qp, x->kp, x->vp,
                                        &sq, a->max_len, sh, NULL, e)) ||
      (rc = mck_unpad_heads(dq, a->pad_dq, (int64_t)T * m->nq, hd, dp, c, e)) ||
      (rc = mck_unpad_heads(dk, a->pad_dk, (int64_t)T * m->nkv, hd, dp, 1.0f, e)))
    return rc;
  return mck_unpad_heads(dv, a->pad_dv, (int64_t)T * m->nkv, hd, dp, 1.0f, e);
}

/* Decoder layer l backward: a->dres holds d loss / d res[l+1] on entry and
 * d loss / d res[l] on return. */
static int mc_layer_backward(model *m, int l, model_cuda_acts *a, rl_err *e) {
  mc_layer *y = &m->cu->layers[l];
  model_layer *my = &m->layers[l];
  mc_layer_acts *x = &a->la[l];
  model_cuda_param *P = m->cu->p;
  int T = a->T, H = m->H, rc;
  float *dres = a->dres, *dxn = a->dxn, *t1 = a->t1, *t2 = a->t2, *t3 = a->t3, *t4 = a->t4;
  model_cuda_param *ln1 = &P[mc_pidx(m, my->ln1)], *ln2 = &P[mc_pidx(m, my->ln2)];
  model_cuda_param *qn = &P[mc_pidx(m, my->q_norm)], *kn = &P[mc_pidx(m, my->k_norm)];
  /* MLP */
  if (my->moe) rc = mc_moe_backward(m, l, a, dres, dxn, e);
  else if (!(rc = mc_lin_bwd(m, &y->down, dres, T, x->act_b, t1, 0, e)) &&
           !(rc = MC_DP(DP_BWD_ACT, ops_swiglu_backward_cuda(t2, t3, t1, x->gate, x->up, T, m->I, m->I, NULL, e))) &&
           !(rc = mc_lin_bwd(m, &y->gate, t2, T, x->xn2_b, dxn, 0, e)))
    rc = mc_lin_bwd(m, &y->up, t3, T, x->xn2_b, dxn, 1, e);
  if (rc) goto out;
  if ((rc = MC_DP(DP_BWD_NORM,
                  ops_residual_rmsnorm_backward_cuda(dres, ln2->g, dxn, x->h, ln2->wf, x->rstd2, T, H, NULL, e))))
    goto out;
  /* attention: t1 = d att, t2/t3/t4 = dq/dk/dv, then dqr → t1, dkr → t2 */
  if ((rc = mc_lin_bwd(m, &y->o, dres, T, x->att_b, t1, 0, e)) ||
      (rc = MC_DP(DP_BWD_ATTN, mc_attention_bwd(m, a, x, t1, NULL, t2, t3, t4, e))))
    goto out;
  if ((rc = MC_DP(DP_BWD_NORM, ops_qk_norm_rope_backward_cuda(t1, qn->g, t2, x->qr, qn->wf, x->rstd_q, a->pos, T, m->nq,
                                                              m->hd, m->theta, NULL, e))) ||
      (rc = MC_DP(DP_BWD_NORM, ops_qk_norm_rope_backward_cuda(t2, kn->g, t3, x->kr, kn->wf, x->rstd_k, a->pos, T, m->nkv,
                                                              m->hd, m->theta, NULL, e))))
    goto out;
  if ((rc = mc_lin_bwd(m, &y->q, t1, T, x->xn1_b, dxn, 0, e)) || (rc = mc_lin_bwd(m, &y->k, t2, T, x->xn1_b, dxn, 1, e)) ||
      (rc = mc_lin_bwd(m, &y->v, t4, T, x->xn1_b, dxn, 1, e)))
    goto out;
  rc = MC_DP(DP_BWD_NORM, ops_residual_rmsnorm_backward_cuda(dres, ln1->g, dxn, a->res + (size_t)l * T * H, ln1->wf,
                                                             x->rstd1, T, H, NULL, e));
out:
  if (rc) rl_err_prefix(e, "layer %d backward: ", l);
  return rc;
}

/* Decoder layer l backward in the BF16 flow (a->key[11]): a->dres and its BF16
 * copy a->dres_b hold d loss / d res[l+1] on entry and d loss / d res[l] on
 * return. The linear layers take BF16 dY and give BF16 dX (a->px), which the
 * next op reads; dxn sums the dX of the layers sharing an input in the FP32
 * flow's order. The same bits as mc_layer_backward. */
static int mc_layer_backward_bx(model *m, int l, model_cuda_acts *a, rl_err *e) {
  mc_layer *y = &m->cu->layers[l];
  model_layer *my = &m->layers[l];
  mc_layer_acts *x = &a->la[l];
  model_cuda_param *P = m->cu->p;
  int T = a->T, H = m->H, rc;
  int64_t qd = (int64_t)m->nq * m->hd, kd = (int64_t)m->nkv * m->hd;
  float *dres = a->dres, *dxn = a->dxn, *t1 = a->t1, *t2 = a->t2, *t3 = a->t3, *t4 = a->t4;
  uint16_t *p0 = a->px[0], *p1 = a->px[1], *p2 = a->px[2];
  model_cuda_param *ln1 = &P[mc_pidx(m, my->ln1)], *ln2 = &P[mc_pidx(m, my->ln2)];
  model_cuda_param *qn = &P[mc_pidx(m, my->q_norm)], *kn = &P[mc_pidx(m, my->k_norm)];
  /* MLP: dY of down = dres_b; dact, dgate, dup in BF16; the norm's dy = dX(gate) + dX(up), read as
   * those two BF16 parts (a MoE block gives it in FP32) */
  const uint16_t *mlp_parts[2] = {p0, p1};
  if (my->moe) rc = mc_moe_backward(m, l, a, dres, dxn, e);
  else if (!(rc = mc_lin_bwd_b(m, &y->down, a->dres_b, T, x->act_b, a->dact_b, e)) &&
           !(rc = MC_DP(DP_BWD_ACT, ops_swiglu_backward_bx_cuda(a->dg_b, a->du_b, a->dact_b, x->gate_b, x->up_b, T, m->I,
                                                               m->I, NULL, e))) &&
           !(rc = mc_lin_bwd_b(m, &y->gate, a->dg_b, T, x->xn2_b, p0, e)))
    rc = mc_lin_bwd_b(m, &y->up, a->du_b, T, x->xn2_b, p1, e);
  if (rc) goto out;
  if ((rc = MC_DP(DP_BWD_NORM, ops_residual_rmsnorm_backward_bx_cuda(dres, a->dres_b, ln2->g, my->moe ? dxn : NULL,
                                                                    mlp_parts, my->moe ? 0 : 2, x->h, ln2->wf,
                                                                    x->rstd2, T, H, NULL, e))))
    goto out;
  /* attention: d att = p0 (BF16; FP32 in t1 where the attention backward reads FP32), t2/t3/t4 = dq/dk/dv */
  if ((rc = mc_lin_bwd_b(m, &y->o, a->dres_b, T, x->att_b, p0, e)) ||
      (!a->key[13] && (rc = MC_DP(DP_BWD_CONV, mck_acc_bf16(t1, p0, (int64_t)T * qd, 0, e)))) ||
      (rc = MC_DP(DP_BWD_ATTN, mc_attention_bwd(m, a, x, t1, p0, t2, t3, t4, e))))
    goto out;
  if ((rc = MC_DP(DP_BWD_NORM, ops_qk_norm_rope_backward_bx_cuda(a->dq_b, qn->g, t2, x->qr_b, qn->wf, x->rstd_q, a->pos,
                                                                 T, m->nq, m->hd, m->theta, NULL, e))) ||
      (rc = MC_DP(DP_BWD_NORM, ops_qk_norm_rope_backward_bx_cuda(a->dk_b, kn->g, t3, x->kr_b, kn->wf, x->rstd_k, a->pos,
                                                                 T, m->nkv, m->hd, m->theta, NULL, e))) ||
      (rc = MC_DP(DP_BWD_CONV, ops_bf16_from_f32_cuda(a->dv_b, t4, (size_t)T * kd, NULL, e))))
    goto out;
  if ((rc = mc_lin_bwd_b(m, &y->q, a->dq_b, T, x->xn1_b, p0, e)) ||
      (rc = mc_lin_bwd_b(m, &y->k, a->dk_b, T, x->xn1_b, p1, e)) ||
      (rc = mc_lin_bwd_b(m, &y->v, a->dv_b, T, x->xn1_b, p2, e)))
    goto out;
  const uint16_t *qkv_parts[3] = {p0, p1, p2}; /* dy of the input norm = dX(q) + dX(k) + dX(v) */
  rc = MC_DP(DP_BWD_NORM, ops_residual_rmsnorm_backward_bx_cuda(dres, a->dres_b, ln1->g, NULL, qkv_parts, 3,
                                                                a->res + (size_t)l * T * H, ln1->wf, x->rstd1, T, H,
                                                                NULL, e));
out:
  if (rc) rl_err_prefix(e, "layer %d backward: ", l);
  return rc;
}

/* The backward from dlogits [T, V]: FP32 (dlogits) or BF16 (dlogits_b, the
 * BF16 flow's: the bits dlogits would be converted to). */
static int mc_backward(model *m, model_cuda_acts *a, const float *dlogits, const uint16_t *dlogits_b, rl_err *e) {
  int T = a->T, H = m->H, rc;
  if (!m->cu || !a->la || a->key[0] != m->L || a->key[2] != m->V)
    return rl_errf(e, RL_EXIT_USAGE, "model_cuda_backward: no forward of this model to differentiate");
  if (a->key[12] == MC_ACTS_NO_GRAD)
    return rl_errf(e, RL_EXIT_USAGE,
                   "model_cuda_backward: the forward was run with no_grad (one layer's activations kept); "
                   "run it without no_grad to differentiate");
  if (!m->cu->p[0].g)
    return rl_errf(e, RL_EXIT_USAGE, "model_cuda_backward: no gradient buffers (call model_cuda_grads_zero)");
  if (T == 0) return 0;
  model_cuda_param *fn = &m->cu->p[mc_pidx(m, m->final_norm)];
  MC(cudaMemsetAsync(a->dres, 0, (size_t)T * H * 4, NULL), "cudaMemsetAsync (residual gradient)");
  const uint16_t *head_part[1] = {a->px[0]}; /* BF16 dlogits: the final norm's dy is the lm_head's BF16 dX */
  if (dlogits_b) rc = mc_lin_bwd_b(m, &m->cu->lm_head, dlogits_b, T, a->xf_b, a->px[0], e);
  else rc = mc_lin_bwd(m, &m->cu->lm_head, dlogits, T, a->xf_b, a->dxn, 0, e);
  if (!rc && a->key[11]) /* the BF16 flow: dres and its BF16 copy */
    rc = ops_residual_rmsnorm_backward_bx_cuda(a->dres, a->dres_b, fn->g, dlogits_b ? NULL : a->dxn, head_part,
                                               dlogits_b ? 1 : 0, a->res + (size_t)m->L * T * H, fn->wf, a->rstdf, T, H,
                                               NULL, e);
  else if (!rc)
    rc = ops_residual_rmsnorm_backward_cuda(a->dres, fn->g, a->dxn, a->res + (size_t)m->L * T * H, fn->wf, a->rstdf, T,
                                            H, NULL, e);
  for (int l = m->L - 1; l >= 0 && !rc; l--) {
    /* recomputation: layer l's activations again from res[l] (it rewrites res[l+1] with the same
     * bits; a MoE layer replays the ids its forward routed, which gives the top-k run's bits) */
    if (a->key[12] == MC_ACTS_RECOMPUTE &&
        (rc = mc_layer_forward_any(m, l, a, m->layers[l].moe ? a->la[l].ids_h : NULL, e)))
      break;
    rc = (a->key[11] ? mc_layer_backward_bx : mc_layer_backward)(m, l, a, e);
  }
  if (!rc)
    rc = ops_embedding_backward_cuda(m->cu->p[mc_pidx(m, m->embed)].g, a->dres, a->tokens, T, m->V, H, NULL, e);
  return rc ? rl_err_prefix(e, "model_cuda_backward: ") : 0;
}

int model_cuda_backward(model *m, model_cuda_acts *a, const float *dlogits, rl_err *e) {
  return mc_backward(m, a, dlogits, NULL, e);
}

int model_cuda_backward_logprob(model *m, model_cuda_acts *a, const float *dlogp, const float *dentropy,
                                rl_err *e) {
  int T = a->T, rc;
  if (!a->have_lp)
    return rl_errf(e, RL_EXIT_USAGE, "model_cuda_backward_logprob: call model_cuda_logprob_forward first");
  if (a->key[12] == MC_ACTS_NO_GRAD)
    return rl_errf(e, RL_EXIT_USAGE,
                   "model_cuda_backward_logprob: the forward was run with no_grad (one layer's activations kept); "
                   "run it without no_grad to differentiate");
  if (T == 0) return 0;
  if (dlogp) MC(cudaMemcpy(a->dlogp, dlogp, (size_t)T * 4, cudaMemcpyHostToDevice), "cudaMemcpy (dlogp)");
  if (dentropy) MC(cudaMemcpy(a->dent, dentropy, (size_t)T * 4, cudaMemcpyHostToDevice), "cudaMemcpy (dentropy)");
  const float *gl = dlogp ? a->dlogp : NULL, *ge = dentropy ? a->dent : NULL;
  if (a->logits_b) { /* the BF16 flow: BF16 logits in, BF16 dlogits out (what the lm_head backward reads) */
    if ((rc = MC_DP(DP_BWD_LOGPROB, ops_logprob_backward_bx_cuda(a->dlogits_b, gl, ge, a->logits_b, a->lse, a->targets,
                                                                 T, m->V, a->temp, NULL, e))))
      return rl_err_prefix(e, "model_cuda_backward_logprob: ");
    return mc_backward(m, a, NULL, a->dlogits_b, e);
  }
  if ((rc = MC_DP(DP_BWD_LOGPROB, ops_logprob_backward_cuda(a->dlogits, gl, ge, a->logits, a->lse, a->targets, T, m->V,
                                                            a->temp, NULL, e))))
    return rl_err_prefix(e, "model_cuda_backward_logprob: ");
  return mc_backward(m, a, a->dlogits, NULL, e);
}
#endif
