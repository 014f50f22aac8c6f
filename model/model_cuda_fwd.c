/* model_cuda_fwd.c — the CUDA model's forward pass (model_cuda.h): the device
 * activations (model_cuda_acts: the buffers of one layout, kept while the
 * shapes fit), the decoder layer in the FP32 and the BF16 flow,
 * model_cuda_forward, and what reads its result: the logits, the routed
 * expert ids and the log-probs. Mirrors model/forward.c op for op (POLICY
 * mode). The linear layers run through model_cuda.c's mc_lin_fwd*, the MoE
 * block is in model_cuda_bwd.c; a build without CUDA gets model_cuda.c's stubs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "kernels/devprof.h"
#include "model/model_cuda.h"
#include "model/model_cuda_int.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#define MC(call, what) \
  if ((rc = mc_ok((int)(call), what, e))) return rc

/* ---------------------------------------------------------------- activations */

model_cuda_acts *model_cuda_acts_new(void) { return rl_xcalloc(1, sizeof(model_cuda_acts)); }

/* Free every device buffer of a and its host arrays (keeps the struct and the
 * owner's fp32_flow setting). */
static void mc_acts_release(model_cuda_acts *a) {
  int fp32_flow = a->fp32_flow, nl = a->key[12] ? 1 : a->key[0];
  for (int i = 0; i < a->n_allocs; i++) cudaFree(a->allocs[i]);
  free(a->allocs);
  for (int l = 0; a->la && l < a->key[0]; l++) {
    mc_layer_acts *x = &a->la[l];
    free(x->ids_h); /* per layer in either set; the rest layer 0's in every layer of a shared set */
    if (l < nl) free(x->sor_h), free(x->ros_h), free(x->e_start), free(x->e_cnt);
  }
  free(a->la);
  memset(a, 0, sizeof *a);
  a->fp32_flow = fp32_flow;
}

void model_cuda_acts_free(model_cuda_acts *a) {
  if (!a) return;
  mc_acts_release(a);
  free(a);
}

/* A device buffer of n elements of size sz owned by a (NULL on failure, e set). */
static void *mc_dalloc(model_cuda_acts *a, int64_t n, size_t sz, rl_err *e) {
  void *p = NULL;
  size_t bytes = (size_t)(n > 0 ? n : 1) * sz;
  bytes = (bytes + 255) & ~(size_t)255;
  device_buffers_changed();
  if (mc_ok(cudaMalloc(&p, bytes), "cudaMalloc (activations)", e)) return NULL;
  a->bytes += bytes;
  if (a->n_allocs == a->cap_allocs)
    a->allocs = rl_xrealloc(a->allocs, (size_t)(a->cap_allocs = a->cap_allocs ? 2 * a->cap_allocs : 64) * sizeof(void *));
  a->allocs[a->n_allocs++] = p;
  return p;
}

/* The BF16 flow (model_cuda_acts.bx) for acts a of model m: not for the owner's
 * FP32-flow acts, RLRUN_MODEL_FP32_FLOW=1 (an A/B switch: model_gpu_test holds
 * the two flows bitwise equal), or widths the 4-wide kernels do not take. */
static int mc_bx_flow(const model *m, const model_cuda_acts *a) {
  if (a->fp32_flow || rl_env_bool("RLRUN_MODEL_FP32_FLOW", 0)) return 0;
  return m->H % 8 == 0 && m->I % 8 == 0 && (m->nq * m->hd) % 8 == 0 && (m->nkv * m->hd) % 8 == 0;
}

/* Make a hold every buffer of a forward (and, unless NO_GRAD, a backward) of T
 * tokens through m in layout mode (MC_ACTS_*; the two shared ones: one layer's
 * buffers for all). */
static int mc_acts_prepare(model *m, model_cuda_acts *a, int T, int n_seq, int mode, rl_err *e) {
  const int shared = mode != MC_ACTS_FULL;
  int hd = m->hd, dp = hd == 64 || hd == 128 ? hd : hd < 64 ? 64 : 128;
  if (hd > 128)
    return rl_errf(e, RL_EXIT_HARDWARE, "head_dim %d: the CUDA attention runs head_dim ≤ 128; use device: cpu", hd);
  int bx = mc_bx_flow(m, a), bxa = 0;
  if (bx && dp == hd) { /* BF16 attention operands when the tensor-core kernels run (an error: decided by the call) */
    ops_attn_impl impl;
    rl_err ignore = {0};
    bxa = ops_attention_choose(hd, &impl, &ignore) == 0 && impl == OPS_ATTN_TC;
  }
  int key[14] = {m->L, m->H, m->V, m->nq, m->nkv, m->hd, m->I, m->E, m->topk, m->Im, dp, bx, mode, bxa};
  /* a set is kept for its own layout; a recompute set serves a forward-only call too */
  if (a->la && a->cap_T >= T && a->cap_seq >= n_seq && !memcmp(key, a->key, 12 * sizeof(int)) && a->key[13] == bxa &&
      (a->key[12] == mode || (a->key[12] == MC_ACTS_RECOMPUTE && mode == MC_ACTS_NO_GRAD)))
    return 0;
  mc_acts_release(a);
  memcpy(a->key, key, sizeof key);
  int64_t C = T > 0 ? T : 1, H = m->H, qd = (int64_t)m->nq * hd, kd = (int64_t)m->nkv * hd;
  int64_t qp = (int64_t)m->nq * dp, kp = (int64_t)m->nkv * dp, big = qd > H ? qd : H;
  a->cap_T = (int)C, a->cap_seq = n_seq, a->dp = dp;
  a->la = rl_xcalloc((size_t)m->L, sizeof(mc_layer_acts));
  int ok = 1, moe_done = 0;
#define DF(ptr, n) ((ptr) = mc_dalloc(a, (n), sizeof(float), e), ok &= (ptr) != NULL)
#define DB(ptr, n) ((ptr) = mc_dalloc(a, (n), sizeof(uint16_t), e), ok &= (ptr) != NULL)
#define DI(ptr, n) ((ptr) = mc_dalloc(a, (n), sizeof(int32_t), e), ok &= (ptr) != NULL)
  DI(a->tokens, C), DI(a->pos, C), DI(a->off, n_seq + 1), DI(a->targets, C);
  DF(a->res, (m->L + 1) * C * H), DF(a->rstdf, C), DB(a->xf_b, C * H);
  if (bx) DB(a->logits_b, C * m->V);
  else DF(a->logits, C * m->V);
  DF(a->lse, C), DF(a->logp, C), DF(a->ent, C), DF(a->dlogp, C), DF(a->dent, C);
  if (bx) DB(a->o_b, C * H);
  for (int l = 0; ok && l < m->L; l++) {
    mc_layer_acts *x = &a->la[l];
    if (!m->layers[l].moe && m->I > big) big = m->I;
    if (shared && l > 0) { /* layer 0's buffers (dense and MoE alike), own routed ids */
      *x = a->la[0];
      if (m->layers[l].moe) {
        int64_t R = C * m->topk;
        if (!moe_done) { /* layer 0 dense: the first MoE layer's buffers serve every MoE layer */
          DF(x->rlogits, C * m->E), DF(x->probs, C * m->E), DF(x->rw, R), DI(x->sor, R), DI(x->ros, R);
          DB(x->xg_b, R * H), DF(x->eg, R * m->Im), DF(x->eu, R * m->Im), DB(x->eact_b, R * m->Im), DF(x->eout, R * H);
          x->sor_h = rl_xcalloc((size_t)R, 4), x->ros_h = rl_xcalloc((size_t)R, 4);
          x->e_start = rl_xcalloc((size_t)m->E, 4), x->e_cnt = rl_xcalloc((size_t)m->E, 4);
          a->la[0].rlogits = x->rlogits, a->la[0].probs = x->probs, a->la[0].rw = x->rw, a->la[0].sor = x->sor;
          a->la[0].ros = x->ros, a->la[0].xg_b = x->xg_b, a->la[0].eg = x->eg, a->la[0].eu = x->eu;
          a->la[0].eact_b = x->eact_b, a->la[0].eout = x->eout, a->la[0].sor_h = x->sor_h, a->la[0].ros_h = x->ros_h;
          a->la[0].e_start = x->e_start, a->la[0].e_cnt = x->e_cnt, moe_done = 1;
        }
        DI(x->ids, R);
        x->ids_h = rl_xcalloc((size_t)R, 4);
      } else {
        x->ids = NULL, x->ids_h = NULL;
      }
      continue;
    }
    DF(x->rstd1, C), DB(x->xn1_b, C * H);
    if (bx) DB(x->qr_b, C * qd), DB(x->kr_b, C * kd);
    else DF(x->qr, C * qd), DF(x->kr, C * kd);
    if (bxa) DB(x->q_b, C * qd), DB(x->k_b, C * kd), DB(x->v_b, C * kd);
    else DF(x->q, C * qd), DF(x->k, C * kd), DF(x->v, C * kd);
    DF(x->rstd_q, C * m->nq), DF(x->rstd_k, C * m->nkv);
    DF(x->att, C * qd), DF(x->lse, C * m->nq), DB(x->att_b, C * qd);
    DF(x->h, C * H), DF(x->rstd2, C), DB(x->xn2_b, C * H);
    if (dp != hd) DF(x->qp, C * qp), DF(x->kp, C * kp), DF(x->vp, C * kp), DF(x->attp, C * qp);
    else x->qp = x->q, x->kp = x->k, x->vp = x->v, x->attp = x->att;
    if (!m->layers[l].moe || (shared && m->E > 0 && m->I > 0)) { /* a shared layer 0 serves dense layers too */
      if (bx) DB(x->gate_b, C * m->I), DB(x->up_b, C * m->I);
      else DF(x->gate, C * m->I), DF(x->up, C * m->I);
      DB(x->act_b, C * m->I);
    }
    if (!m->layers[l].moe) continue;
    int64_t R = C * m->topk;
    DF(x->rlogits, C * m->E), DF(x->probs, C * m->E), DF(x->rw, R), DI(x->ids, R), DI(x->sor, R), DI(x->ros, R);
    DB(x->xg_b, R * H), DF(x->eg, R * m->Im), DF(x->eu, R * m->Im), DB(x->eact_b, R * m->Im), DF(x->eout, R * H);
    x->ids_h = rl_xcalloc((size_t)R, 4), x->sor_h = rl_xcalloc((size_t)R, 4), x->ros_h = rl_xcalloc((size_t)R, 4);
    x->e_start = rl_xcalloc((size_t)m->E, 4), x->e_cnt = rl_xcalloc((size_t)m->E, 4);
    moe_done = 1;
  }
  if (mode != MC_ACTS_NO_GRAD) { /* backward scratch */
    DF(a->dres, C * H), DF(a->dxn, C * H), DF(a->t1, C * big), DF(a->t2, C * big), DF(a->t3, C * big);
    DF(a->t4, C * big);
    if (bx) DB(a->dlogits_b, C * m->V);
    else DF(a->dlogits, C * m->V);
    if (dp != hd) DF(a->pad_do, C * qp), DF(a->pad_dq, C * qp), DF(a->pad_dk, C * kp), DF(a->pad_dv, C * kp);
    if (m->E > 0) {
      int64_t R = C * m->topk;
      DF(a->m_dw, R), DF(a->m_deout, R * H), DF(a->m_dact, R * m->Im), DF(a->m_dg, R * m->Im);
      DF(a->m_du, R * m->Im), DF(a->m_dxg, R * H), DF(a->m_dlog, C * m->E);
    }
    if (bx) {
      int64_t wide = qd > H ? qd : H;
      DB(a->dres_b, C * H), DB(a->dq_b, C * qd), DB(a->dk_b, C * kd), DB(a->dv_b, C * kd);
      if (m->I > 0) DB(a->dact_b, C * m->I), DB(a->dg_b, C * m->I), DB(a->du_b, C * m->I);
      for (int i = 0; i < 3; i++) DB(a->px[i], C * wide);
    }
  }
#undef DF
#undef DB
#undef DI
  if (!ok) {
    mc_acts_release(a);
    return e->code ? e->code : RL_EXIT_HARDWARE;
  }
  return 0;
}

/* ---------------------------------------------------------------- forward */

/* Causal GQA of layer acts x (padded to a->dp when head_dim is not 64/128). */
static int mc_attention_fwd(model *m, int l, model_cuda_acts *a, mc_layer_acts *x, rl_err *e) {
  int T = a->T, hd = m->hd, dp = a->dp, rc = 0;
  if (a->dec_attn) return a->dec_attn(a->dec_ctx, l, a, x, e); /* model_cuda_decode_forward: the engine's cache */
  ops_seqs sq = {a->n_seq, a->off};
  ops_attn_shape sh = {T, m->nq, m->nkv, dp};
  if (a->key[13])
    return ops_attention_forward_bx_cuda(x->att, x->att_b, x->lse, x->q_b, x->k_b, x->v_b, &sq, a->max_len, sh, NULL, e);
  if (dp == hd) return ops_attention_forward_cuda(x->att, x->att_b, x->lse, x->q, x->k, x->v, &sq, a->max_len, sh, NULL, e);
  float c = (float)sqrt((double)dp / hd);
  if ((rc = mck_pad_heads(x->qp, x->q, (int64_t)T * m->nq, hd, dp, c, e)) ||
      (rc = mck_pad_heads(x->kp, x->k, (int64_t)T * m->nkv, hd, dp, 1.0f, e)) ||
      (rc = mck_pad_heads(x->vp, x->v, (int64_t)T * m->nkv, hd, dp, 1.0f, e)) ||
      (rc = ops_attention_forward_cuda(x->attp, NULL, x->lse, x->qp, x->kp, x->vp, &sq, a->max_len, sh, NULL, e)) ||
      (rc = mck_unpad_heads(x->att, x->attp, (int64_t)T * m->nq, hd, dp, 1.0f, e)))
    return rc;
  return ops_bf16_from_f32_cuda(x->att_b, x->att, (size_t)T * m->nq * hd, NULL, e);
}

/* Decoder layer l: res[l] → res[l+1]. */
static int mc_layer_forward(model *m, int l, model_cuda_acts *a, const int32_t *replay, rl_err *e) {
  mc_layer *y = &m->cu->layers[l];
  model_layer *my = &m->layers[l];
  mc_layer_acts *x = &a->la[l];
  model_cuda_param *P = m->cu->p;
  int T = a->T, H = m->H, rc;
  float *in = a->res + (size_t)l * T * H, *next = a->res + (size_t)(l + 1) * T * H;
  if ((rc = MC_DP(DP_FWD_NORM,
                  ops_rmsnorm_forward_cuda(NULL, x->xn1_b, x->rstd1, in, P[mc_pidx(m, my->ln1)].wf, T, H, m->eps, NULL, e))))
    goto out;
  if ((rc = mc_lin_fwd(m, &y->q, x->xn1_b, T, x->qr, e)) || (rc = mc_lin_fwd(m, &y->k, x->xn1_b, T, x->kr, e)) ||
      (rc = mc_lin_fwd(m, &y->v, x->xn1_b, T, x->v, e)))
    goto out;
  if ((rc = MC_DP(DP_FWD_NORM, ops_qk_norm_rope_forward_cuda(x->q, x->rstd_q, x->qr, P[mc_pidx(m, my->q_norm)].wf, a->pos,
                                                             T, m->nq, m->hd, m->eps, m->theta, NULL, e))) ||
      (rc = MC_DP(DP_FWD_NORM, ops_qk_norm_rope_forward_cuda(x->k, x->rstd_k, x->kr, P[mc_pidx(m, my->k_norm)].wf, a->pos,
                                                             T, m->nkv, m->hd, m->eps, m->theta, NULL, e))) ||
      (rc = MC_DP(DP_FWD_ATTN, mc_attention_fwd(m, l, a, x, e))))
    goto out;
  /* o_proj output goes to `next` for now; h = in + o, xn2 = norm(h) */
  if ((rc = mc_lin_fwd(m, &y->o, x->att_b, T, next, e)) ||
      (rc = MC_DP(DP_FWD_NORM, ops_residual_rmsnorm_forward_cuda(x->h, NULL, x->xn2_b, x->rstd2, in, next,
                                                                 P[mc_pidx(m, my->ln2)].wf, T, H, m->eps, NULL, e))))
    goto out;
  if (my->moe) {
    rc = mc_moe_forward(m, l, replay, a, next, e);
  } else if (!(rc = mc_lin_fwd(m, &y->gate, x->xn2_b, T, x->gate, e)) &&
             !(rc = mc_lin_fwd(m, &y->up, x->xn2_b, T, x->up, e)) &&
             !(rc = MC_DP(DP_FWD_ACT, ops_swiglu_forward_cuda(NULL, x->act_b, x->gate, x->up, T, m->I, m->I, NULL, e)))) {
    rc = mc_lin_fwd(m, &y->down, x->act_b, T, next, e);
  }
  if (!rc) rc = MC_DP(DP_FWD_ACT, mck_add_f32(next, x->h, next, (int64_t)T * H, e));
out:
  if (rc) rl_err_prefix(e, "layer %d: ", l);
  return rc;
}

/* Decoder layer l in the BF16 flow (a->key[11]): the q/k/o/gate/up/down GEMMs
 * write BF16 and the element-wise ops read it (v stays FP32: the attention reads
 * FP32). The same bits as mc_layer_forward. */
static int mc_layer_forward_bx(model *m, int l, model_cuda_acts *a, const int32_t *replay, rl_err *e) {
  mc_layer *y = &m->cu->layers[l];
  model_layer *my = &m->layers[l];
  mc_layer_acts *x = &a->la[l];
  model_cuda_param *P = m->cu->p;
  int T = a->T, H = m->H, rc;
  float *in = a->res + (size_t)l * T * H, *next = a->res + (size_t)(l + 1) * T * H;
  const mc_lin *qkv[3] = {&y->q, &y->k, &y->v};
  const int nqkv = x->v_b ? 3 : 2;
  ops_fp8_act qa;
  /* q, k (and v when BF16) from one quantization of xn1: the norm's own when
   * they take it (mc_lin_q8_ok; the norm writes xn1_b too, the backward's input) */
  const int q8_qkv = mc_lin_q8_ok(m, qkv, nqkv, x->xn1_b, T);
  if (q8_qkv && (rc = mc_q8_act(m, T, H, &qa, e))) goto out;
  if (q8_qkv)
    rc = MC_DP(DP_FWD_NORM, ops_rmsnorm_forward_q8_cuda(NULL, x->xn1_b, x->rstd1, NULL, in, NULL,
                                                        P[mc_pidx(m, my->ln1)].wf, T, H, m->eps, &qa, NULL, e));
  else
    rc = MC_DP(DP_FWD_NORM, ops_rmsnorm_forward_cuda(NULL, x->xn1_b, x->rstd1, in, P[mc_pidx(m, my->ln1)].wf, T, H,
                                                     m->eps, NULL, e));
  if (rc) goto out;
  {
    uint16_t *const ob[3] = {x->qr_b, x->kr_b, x->v_b};
    if ((rc = q8_qkv ? mc_lin_fwd_b_q8(m, qkv, nqkv, qa.q, qa.scales, T, ob, e)
                     : mc_lin_fwd_b_group(m, qkv, nqkv, x->xn1_b, T, ob, e)) ||
        (!x->v_b && (rc = mc_lin_fwd(m, &y->v, x->xn1_b, T, x->v, e))))
      goto out;
  }
  /* q and k in one launch (ops_qk_norm_rope_forward2_bx_cuda: the two calls' bits) */
  if ((rc = MC_DP(DP_FWD_NORM, ops_qk_norm_rope_forward2_bx_cuda(
                                   x->q, x->q_b, x->rstd_q, x->qr_b, P[mc_pidx(m, my->q_norm)].wf, m->nq, x->k, x->k_b,
                                   x->rstd_k, x->kr_b, P[mc_pidx(m, my->k_norm)].wf, m->nkv, a->pos, T, m->hd, m->eps,
                                   m->theta, NULL, e))) ||
      (rc = MC_DP(DP_FWD_ATTN, mc_attention_fwd(m, l, a, x, e))))
    goto out;
  const mc_lin *gu[2] = {&y->gate, &y->up};
  const int q8_gu = !my->moe && mc_lin_q8_ok(m, gu, 2, x->xn2_b, T); /* gate/up from the norm's quantization */
  if ((rc = mc_lin_fwd_b(m, &y->o, x->att_b, T, a->o_b, e)) || (q8_gu && (rc = mc_q8_act(m, T, H, &qa, e))))
    goto out;
  if (q8_gu)
    rc = MC_DP(DP_FWD_NORM, ops_rmsnorm_forward_q8_cuda(x->h, x->xn2_b, x->rstd2, in, NULL, a->o_b,
                                                        P[mc_pidx(m, my->ln2)].wf, T, H, m->eps, &qa, NULL, e));
  else
    rc = MC_DP(DP_FWD_NORM, ops_residual_rmsnorm_forward_bx_cuda(x->h, NULL, x->xn2_b, x->rstd2, in, a->o_b,
                                                                 P[mc_pidx(m, my->ln2)].wf, T, H, m->eps, NULL, e));
  if (rc) goto out;
  if (my->moe) {
    if (!(rc = mc_moe_forward(m, l, replay, a, next, e))) rc = MC_DP(DP_FWD_ACT, mck_add_f32(next, x->h, next, (int64_t)T * H, e));
  } else if (!(rc = q8_gu ? mc_lin_fwd_b_q8(m, gu, 2, qa.q, qa.scales, T, (uint16_t *const[2]){x->gate_b, x->up_b}, e)
                          : mc_lin_fwd_b_group(m, gu, 2, x->xn2_b, T, (uint16_t *const[2]){x->gate_b, x->up_b}, e)) &&
             !(rc = mc_swiglu_down_b(m, &y->down, x->gate_b, x->up_b, x->act_b, T, a->o_b, e))) {
    rc = MC_DP(DP_FWD_ACT, mck_add_bf16(next, x->h, a->o_b, (int64_t)T * H, e));
  }
out:
  if (rc) rl_err_prefix(e, "layer %d: ", l);
  return rc;
}

int mc_layer_forward_any(model *m, int l, model_cuda_acts *a, const int32_t *replay, rl_err *e) {
  return (a->key[11] ? mc_layer_forward_bx : mc_layer_forward)(m, l, a, replay, e);
}

/* The layers over the T rows staged in a (res[0] holds the embeddings), then
 * the final norm and lm_head into a->logits_b (BF16 flow) or a->logits; the
 * linears pinned when row_inv. model_cuda_forward's and the exact decode's. */
static int mc_layers_logits(model *m, model_cuda_acts *a, int T, const int32_t *const *replay, int row_inv, rl_err *e) {
  int rc = 0, H = m->H;
  m->cu->row_inv = row_inv; /* read by the linears, for this forward only */
  for (int l = 0; l < m->L && !rc; l++) rc = mc_layer_forward_any(m, l, a, replay ? replay[l] : NULL, e);
  if (!rc)
    rc = MC_DP(DP_FWD_NORM, ops_rmsnorm_forward_cuda(NULL, a->xf_b, a->rstdf, a->res + (size_t)m->L * T * H,
                                                     m->cu->p[mc_pidx(m, m->final_norm)].wf, T, H, m->eps, NULL, e));
  if (!rc && a->key[11]) rc = mc_lin_fwd_b(m, &m->cu->lm_head, a->xf_b, T, a->logits_b, e);
  else if (!rc) rc = mc_lin_fwd(m, &m->cu->lm_head, a->xf_b, T, a->logits, e);
  m->cu->row_inv = 0;
  return rc;
}

int model_cuda_forward(model *m, const model_batch *b, const model_fwd_opts *o, model_cuda_acts *a,
                       rl_err *e) {
  int T = b->T, H = m->H, rc;
  if (!m->cu) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_forward: call model_cuda_init first");
  if (o && o->f32)
    return rl_errf(e, RL_EXIT_USAGE, "model_cuda_forward: the FP32-exact mode runs on the CPU only; use model_forward");
  if (!m->cu->quantized)
    return rl_errf(e, RL_EXIT_USAGE,
                   "model_cuda_forward: the device quantized weights are stale; call model_cuda_quantize "
                   "after changing the master weights");
  if (T < 0 || (T > 0 && !b->tokens)) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_forward: no tokens");
  if ((rc = ops_seqs_check(&b->seqs, T, e))) return rl_err_prefix(e, "model_cuda_forward: ");
  for (int t = 0; t < T; t++)
    if (b->tokens[t] < 0 || b->tokens[t] >= m->V)
      return rl_errf(e, RL_EXIT_USAGE, "model_cuda_forward: token %d at position %d is outside the vocabulary [0, %d)",
                     b->tokens[t], t, m->V);
  int mode = o && o->no_grad ? MC_ACTS_NO_GRAD : o && o->recompute ? MC_ACTS_RECOMPUTE : MC_ACTS_FULL;
  if ((rc = mc_acts_prepare(m, a, T, b->seqs.n_seq, mode, e))) return rl_err_prefix(e, "model_cuda_forward: ");
  a->T = T, a->n_seq = b->seqs.n_seq, a->have_lp = 0, a->max_len = 1;
  for (int s = 0; s < a->n_seq; s++)
    if (b->seqs.off[s + 1] - b->seqs.off[s] > a->max_len) a->max_len = b->seqs.off[s + 1] - b->seqs.off[s];
  if (T == 0) return 0;
  MC(cudaMemcpy(a->tokens, b->tokens, (size_t)T * 4, cudaMemcpyHostToDevice), "cudaMemcpy (tokens)");
  MC(cudaMemcpy(a->off, b->seqs.off, (size_t)(a->n_seq + 1) * 4, cudaMemcpyHostToDevice), "cudaMemcpy (offsets)");
  ops_seqs sq = {a->n_seq, a->off};
  if ((rc = ops_seqs_positions_cuda(&sq, T, a->pos, NULL, e)) ||
      (rc = ops_embedding_forward_bf16_cuda(a->res, m->cu->p[mc_pidx(m, m->embed)].w, a->tokens, T, m->V, H, NULL, e)))
    return rl_err_prefix(e, "model_cuda_forward: ");
  a->own_ids = o ? o->own_ids : NULL; /* read by mc_moe_forward, for this forward only */
  rc = mc_layers_logits(m, a, T, o ? o->replay_ids : NULL, o && o->row_invariant, e);
  a->own_ids = NULL;
  return rc ? rl_err_prefix(e, "model_cuda_forward: ") : 0;
}

int model_cuda_decode_forward(model *m, model_cuda_acts *a, int R, const int32_t *tok, const int32_t *pos,
                              mc_dec_attn_fn attn, void *ctx, rl_err *e) {
  int H = m->H, rc = 0;
  if (!a->la || a->cap_T < R || a->cap_seq < R || a->key[12] != MC_ACTS_NO_GRAD || !a->key[11] || R < 1)
    return rl_errf(e, RL_EXIT_USAGE,
                   "model_cuda_decode_forward: the acts are not a BF16-flow forward-only set of >= %d rows", R);
  a->T = R, a->n_seq = R, a->have_lp = 0, a->max_len = 1;
  if ((rc = mc_ok(cudaMemcpyAsync(a->pos, pos, (size_t)R * 4, cudaMemcpyDeviceToDevice, cudaStreamPerThread),
                  "cudaMemcpy (positions)", e)) ||
      (rc = ops_embedding_forward_bf16_cuda(a->res, m->cu->p[mc_pidx(m, m->embed)].w, tok, R, m->V, H, NULL, e)))
    return rl_err_prefix(e, "model_cuda_decode_forward: ");
  a->dec_attn = attn, a->dec_ctx = ctx, a->own_ids = NULL;
  /* pinned: the prefill's and (pin_algo) the trainer's algorithms; BF16 logits (the acts are bx) */
  rc = mc_layers_logits(m, a, R, NULL, 1, e);
  a->dec_attn = NULL, a->dec_ctx = NULL;
  return rc ? rl_err_prefix(e, "model_cuda_decode_forward: ") : 0;
}

const float *model_cuda_logits(const model_cuda_acts *a) { return a ? a->logits : NULL; }

size_t model_cuda_acts_bytes(const model_cuda_acts *a) { return a ? a->bytes : 0; }

int model_cuda_logits_to_host(const model_cuda_acts *a, float *out, rl_err *e) {
  int rc;
  size_t n = (size_t)a->T * a->key[2];
  if (!n) return 0;
  if (!a->logits_b) {
    MC(cudaMemcpy(out, a->logits, n * 4, cudaMemcpyDeviceToHost), "cudaMemcpy (logits)");
    return 0;
  }
  /* BF16 on the device: into the upper half of out, widened in place from the front */
  uint16_t *hb = (uint16_t *)out + n;
  MC(cudaMemcpy(hb, a->logits_b, n * 2, cudaMemcpyDeviceToHost), "cudaMemcpy (logits)");
  for (size_t i = 0; i < n; i++) out[i] = fmt_bf16_to_f32(hb[i]);
  return 0;
}

int model_cuda_logits_rows(const model_cuda_acts *a, const int32_t *rows, int n, float *dst, rl_err *e) {
  int V = a->key[2], rc;
  for (int i = 0; i < n; i++) {
    if (rows[i] < 0 || rows[i] >= a->T)
      return rl_errf(e, RL_EXIT_USAGE, "model_cuda_logits_rows: row %d outside the last forward's %d", rows[i], a->T);
    if (a->logits_b)
      rc = ops_f32_from_bf16_cuda(dst + (size_t)i * V, a->logits_b + (size_t)rows[i] * V, (size_t)V, NULL, e);
    else
      rc = mc_ok(cudaMemcpy(dst + (size_t)i * V, a->logits + (size_t)rows[i] * V, (size_t)V * 4,
                            cudaMemcpyDeviceToDevice), "cudaMemcpy (logits rows)", e);
    if (rc) return rc;
  }
  return 0;
}

const int32_t *model_cuda_routed_ids(const model_cuda_acts *a, int l) {
  if (!a || !a->la || l < 0 || l >= a->key[0]) return NULL;
  return a->la[l].ids_h;
}

int model_cuda_logprob_forward(model *m, model_cuda_acts *a, const int32_t *targets, float temp,
                               float *logp, float *entropy, rl_err *e) {
  int T = a->T, rc;
  if (!(temp > 0)) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_logprob_forward: temperature must be > 0");
  if (!a->la) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_logprob_forward: no forward to read");
  a->temp = temp, a->have_lp = 1;
  if (T == 0) return 0;
  if (targets) {
    for (int t = 0; t < T; t++)
      if (targets[t] >= m->V)
        return rl_errf(e, RL_EXIT_USAGE, "model_cuda_logprob_forward: target %d at position %d is outside the vocabulary",
                       targets[t], t);
    MC(cudaMemcpy(a->targets, targets, (size_t)T * 4, cudaMemcpyHostToDevice), "cudaMemcpy (targets)");
  } else {
    MC(cudaMemset(a->targets, 0xff, (size_t)T * 4), "cudaMemset (targets)");
  }
  if ((rc = MC_DP(DP_FWD_LOGPROB,
                  a->logits_b ? ops_logprob_forward_bx_cuda(a->logp, a->ent, a->lse, a->logits_b, a->targets, T, m->V,
                                                            temp, NULL, e)
                              : ops_logprob_forward_cuda(a->logp, a->ent, a->lse, a->logits, a->targets, T, m->V, temp,
                                                         NULL, e))))
    return rl_err_prefix(e, "model_cuda_logprob_forward: ");
  if (logp) MC(cudaMemcpy(logp, a->logp, (size_t)T * 4, cudaMemcpyDeviceToHost), "cudaMemcpy (log-probs)");
  if (entropy) MC(cudaMemcpy(entropy, a->ent, (size_t)T * 4, cudaMemcpyDeviceToHost), "cudaMemcpy (entropies)");
  return 0;
}

#endif
