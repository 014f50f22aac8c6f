/* backward.c — the model's backward pass: from dlogits of the last forward
 * down to every parameter gradient (accumulated into p->g, FP32), layer by
 * layer in reverse, carrying the gradient of the residual stream. */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/model_int.h"

/* Decoder layer l backward: dres holds d loss / d res[l+1] on entry and
 * d loss / d res[l] on return. */
static int layer_backward(model *m, int l, model_acts *a, float *dres, rl_err *e) {
  model_layer *y = &m->layers[l];
  model_layer_acts *x = &a->la[l];
  int T = a->T, H = m->H, f32 = a->f32, rc;
  int64_t qd = (int64_t)m->nq * m->hd;
  int64_t big = qd > H ? qd : H;
  if (!y->moe && m->I > big) big = m->I;
  float *nb = rl_xmalloc((size_t)(H > m->hd ? H : m->hd) * sizeof(float));
  float *dxn = rl_xmalloc((size_t)(T * H + 1) * sizeof(float));
  float *t1 = rl_xmalloc((size_t)(T * big + 1) * sizeof(float));
  float *t2 = rl_xmalloc((size_t)(T * big + 1) * sizeof(float));
  float *t3 = rl_xmalloc((size_t)(T * big + 1) * sizeof(float));
  float *t4 = rl_xmalloc((size_t)(T * big + 1) * sizeof(float));
  /* MLP */
  if (y->moe) {
    rc = moe_backward(m, l, a, dres, dxn, e);
  } else if (!(rc = mlin_backward(m, &y->down, f32, dres, T, x->act, x->act_b, t1, 0, e))) {
    ops_swiglu_backward_cpu(t2, t3, t1, x->gate, x->up, T, m->I, m->I);
    if (!(rc = mlin_backward(m, &y->gate, f32, t2, T, x->xn2, x->xn2_b, dxn, 0, e)))
      rc = mlin_backward(m, &y->up, f32, t3, T, x->xn2, x->xn2_b, dxn, 1, e);
  }
  if (rc) goto out;
  ops_residual_rmsnorm_backward_cpu(dres, y->ln2->g, dxn, x->h, model_norm_w(y->ln2, f32, nb),
                                    x->rstd2, T, H);
  /* attention: t1 = d att, t2/t3/t4 = dq/dk/dv, then dqr/dkr reuse t1/t... */
  if ((rc = mlin_backward(m, &y->o, f32, dres, T, x->att, x->att_b, t1, 0, e))) goto out;
  ops_attn_shape sh = {T, m->nq, m->nkv, m->hd};
  if ((rc = ops_attention_backward_cpu(t2, t3, t4, t1, x->att, x->lse, x->q, x->k, x->v, &a->seqs,
                                       sh, e)))
    goto out;
  ops_qk_norm_rope_backward_cpu(t1, y->q_norm->g, t2, x->qr, model_norm_w(y->q_norm, f32, nb),
                                x->rstd_q, a->pos, T, m->nq, m->hd, m->theta);
  ops_qk_norm_rope_backward_cpu(t2, y->k_norm->g, t3, x->kr, model_norm_w(y->k_norm, f32, nb),
                                x->rstd_k, a->pos, T, m->nkv, m->hd, m->theta);
  if ((rc = mlin_backward(m, &y->q, f32, t1, T, x->xn1, x->xn1_b, dxn, 0, e)) ||
      (rc = mlin_backward(m, &y->k, f32, t2, T, x->xn1, x->xn1_b, dxn, 1, e)) ||
      (rc = mlin_backward(m, &y->v, f32, t4, T, x->xn1, x->xn1_b, dxn, 1, e)))
    goto out;
  ops_residual_rmsnorm_backward_cpu(dres, y->ln1->g, dxn, a->res + (size_t)l * T * H,
                                    model_norm_w(y->ln1, f32, nb), x->rstd1, T, H);
out:
  free(nb), free(dxn), free(t1), free(t2), free(t3), free(t4);
  if (rc) rl_err_prefix(e, "layer %d backward: ", l);
  return rc;
}

int model_backward(model *m, model_acts *a, const float *dlogits, rl_err *e) {
  int T = a->T, H = m->H, f32 = a->f32, rc;
  if (!a->la || a->L != m->L || a->V != m->V)
    return rl_errf(e, RL_EXIT_USAGE, "model_backward: no forward of this model to differentiate");
  if (!m->embed->g)
    return rl_errf(e, RL_EXIT_USAGE, "model_backward: no gradient buffers (call model_grads_init)");
  float *dxf = rl_xmalloc((size_t)(T * H + 1) * sizeof(float));
  float *dres = rl_xcalloc((size_t)(T * H + 1), sizeof(float));
  float *nb = rl_xmalloc((size_t)H * sizeof(float));
  rc = mlin_backward(m, &m->lm_head, f32, dlogits, T, a->xf, a->xf_b, dxf, 0, e);
  if (!rc) {
    ops_residual_rmsnorm_backward_cpu(dres, m->final_norm->g, dxf, a->res + (size_t)m->L * T * H,
                                      model_norm_w(m->final_norm, f32, nb), a->rstdf, T, H);
    for (int l = m->L - 1; l >= 0 && !rc; l--) rc = layer_backward(m, l, a, dres, e);
  }
  if (!rc) rc = ops_embedding_backward_cpu(m->embed->g, dres, a->tokens, T, m->V, H, e);
  free(dxf), free(dres), free(nb);
  return rc ? rl_err_prefix(e, "model_backward: ") : 0;
}
