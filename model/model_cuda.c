/* model_cuda.c — the CUDA model (model_cuda.h): device weights and their
 * quantized views (the sync step), the device gradients and optimizer views,
 * and the linear layers over them (mc_lin_fwd* and mc_lin_bwd*, with the
 * decode step's small-M GEMM path); and, in a build without CUDA, the stubs of
 * every model_cuda.h entry point. The activations, the forward pass and the
 * log-probs are in model_cuda_fwd.c, the MoE block and the backward in
 * model_cuda_bwd.c, the small kernels in model_cuda_kern.cu. */
#include "model/model_cuda.h"

#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "kernels/devprof.h"
#include "kernels/linear.h"
#include "kernels/quant.h"
#include "model/model_cuda_int.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

int mc_ok(int status, const char *what, rl_err *e) {
  if (status == (int)cudaSuccess) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "model (CUDA): %s failed: %s", what,
                 cudaGetErrorString((cudaError_t)status));
}
#define MC(call, what) \
  if ((rc = mc_ok((int)(call), what, e))) return rc

/* ---------------------------------------------------------------- weights */

/* Apply fn to every device linear of m (same order as model.c). */
static int mc_each_lin(model *m, int (*fn)(model *, mc_lin *, void *), void *ctx) {
  int rc;
  for (int l = 0; l < m->L; l++) {
    mc_layer *y = &m->cu->layers[l];
    mc_lin *ls[] = {&y->q, &y->k, &y->v, &y->o, &y->gate, &y->up, &y->down, &y->router};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
      if (ls[i]->pi >= 0 && (rc = fn(m, ls[i], ctx))) return rc;
    if (m->layers[l].moe)
      for (int x = 0; x < m->E; x++)
        if ((rc = fn(m, &y->eg[x], ctx)) || (rc = fn(m, &y->eu[x], ctx)) || (rc = fn(m, &y->ed[x], ctx)))
          return rc;
  }
  return fn(m, &m->cu->lm_head, ctx);
}

/* A device linear over model linear L (BF16 view of the device master). */
static mc_lin mc_lin_of(const model *m, const model_linear *L) {
  mc_lin d = {0};
  d.pi = L->p ? mc_pidx(m, L->p) : -1;
  return d;
}

/* Free the owned quantized buffers of d and point it at the BF16 master. */
static int mc_lin_unquantize(model *m, mc_lin *d, void *ctx) {
  (void)ctx;
  if (d->qdata || d->qscales || d->sdec) /* teardown: nothing to undo */
    cudaFree(d->qdata), cudaFree(d->qscales), cudaFree(d->sdec);
  d->qdata = d->qscales = NULL, d->sdec = NULL;
  const model_param *p = &m->params[d->pi];
  d->q = qtensor_bf16(m->cu->p[d->pi].w, p->rows, p->cols, 1);
  return 0;
}

void model_cuda_free(model *m) {
  if (!m || !m->cu) return;
  model_cuda *c = m->cu;
  if (c->layers) mc_each_lin(m, mc_lin_unquantize, NULL);
  for (int i = 0; c->p && i < m->n_params; i++) cudaFree(c->p[i].w), cudaFree(c->p[i].g), cudaFree(c->p[i].wf);
  for (int l = 0; c->layers && l < m->L; l++) free(c->layers[l].eg), free(c->layers[l].eu), free(c->layers[l].ed);
  for (int s = 0; s < MC_SCR_COUNT; s++) cudaFree(c->scr[s]);
  cudaFree(c->qstats), cudaFree(c->qws), cudaFree(c->qamax), cudaFree(c->norms);
  free(c->p), free(c->layers), free(c);
  m->cu = NULL;
}

int model_cuda_init(model *m, rl_err *e) {
  int dev = 0, rc = gemm_cuda_device(&dev, e);
  if (rc) return rl_err_prefix(e, "model_cuda_init: ");
  if (m->cu) return model_cuda_upload(m, e);
  model_cuda *c = rl_xcalloc(1, sizeof *c);
  m->cu = c;
  c->dev = dev;
  c->p = rl_xcalloc((size_t)m->n_params, sizeof *c->p);
  c->layers = rl_xcalloc((size_t)m->L, sizeof *c->layers);
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    size_t n = (size_t)(p->rows * p->cols);
    if ((rc = mc_ok(cudaMalloc((void **)&c->p[i].w, n * 2 + 16), "cudaMalloc (weights)", e)) ||
        (p->cols == 1 && (rc = mc_ok(cudaMalloc((void **)&c->p[i].wf, n * 4 + 16), "cudaMalloc (norm weights)", e))))
      break;
  }
  for (int l = 0; !rc && l < m->L; l++) {
    model_layer *y = &m->layers[l];
    mc_layer *d = &c->layers[l];
    d->q = mc_lin_of(m, &y->q), d->k = mc_lin_of(m, &y->k), d->v = mc_lin_of(m, &y->v);
    d->o = mc_lin_of(m, &y->o), d->gate = mc_lin_of(m, &y->gate), d->up = mc_lin_of(m, &y->up);
    d->down = mc_lin_of(m, &y->down), d->router = mc_lin_of(m, &y->router);
    if (!y->moe) continue;
    d->eg = rl_xcalloc((size_t)m->E, sizeof(mc_lin));
    d->eu = rl_xcalloc((size_t)m->E, sizeof(mc_lin));
    d->ed = rl_xcalloc((size_t)m->E, sizeof(mc_lin));
    for (int x = 0; x < m->E; x++)
      d->eg[x] = mc_lin_of(m, &y->eg[x]), d->eu[x] = mc_lin_of(m, &y->eu[x]), d->ed[x] = mc_lin_of(m, &y->ed[x]);
  }
  c->lm_head = mc_lin_of(m, &m->lm_head);
  if (!rc) rc = model_cuda_upload(m, e);
  if (rc) {
    model_cuda_free(m);
    return rl_err_prefix(e, "model_cuda_init: ");
  }
  return 0;
}

model_cuda_param *model_cuda_param_at(model *m, int i) {
  return m && m->cu && i >= 0 && i < m->n_params ? &m->cu->p[i] : NULL;
}

int model_cuda_upload(model *m, rl_err *e) {
  int rc;
  if (!m->cu) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_upload: call model_cuda_init first");
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    MC(cudaMemcpy(m->cu->p[i].w, p->w, (size_t)(p->rows * p->cols) * 2, cudaMemcpyHostToDevice),
       "cudaMemcpy (upload weights)");
  }
  m->cu->quantized = 0;
  /* BF16 views read the master: valid at once when the policy is all BF16 */
  quant_policy pol = m->cu->policy;
  int all_bf16 = 1;
  for (int c = 0; c < LINEAR_CLASS_COUNT; c++) all_bf16 &= pol.fmt[c] == QFMT_BF16;
  return all_bf16 ? model_cuda_quantize(m, &pol, e) : 0;
}

int model_cuda_download(model *m, rl_err *e) {
  int rc;
  if (!m->cu) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_download: call model_cuda_init first");
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    MC(cudaMemcpy(p->w, m->cu->p[i].w, (size_t)(p->rows * p->cols) * 2, cudaMemcpyDeviceToHost),
       "cudaMemcpy (download weights)");
  }
  m->quantized = 0; /* the host views are stale now */
  return 0;
}

/* What one quantize pass collects: the fp8-block and MXFP8 linears for one
 * multi-tensor launch each (host arrays of n_lin), how many linears were
 * quantized, the index of the next linear (its stats slot), the host copy of
 * the stats (the check), and the error. */
typedef struct mc_qctx {
  quant_item *fp8, *mx;
  int *fp8_pi, *mx_pi; /* each item's parameter index (−1: the lm_head view) */
  int n_fp8, n_mx, n_quant, i;
  const quant_stats *hs;
  rl_err *e;
} mc_qctx;

/* The class of device linear d (from the model linear it mirrors). */
static linear_class mc_lin_class(const model *m, const mc_lin *d) {
  if (d == &m->cu->lm_head) return LINEAR_LM_HEAD;
  const char *nm = m->params[d->pi].name;
  if (strstr(nm, ".self_attn.")) return LINEAR_ATTN;
  if (strstr(nm, ".mlp.experts.")) return LINEAR_EXPERT;
  if (strstr(nm, ".mlp.gate.weight")) return LINEAR_ROUTER;
  return LINEAR_MLP;
}

/* Make the view of one device linear in the policy's format: fresh buffers
 * first when the format changed; fp8-block and MXFP8 linears are collected
 * for the multi-tensor launches, NVFP4 ones quantized here (per tensor: the
 * gate/up shared amax), BF16 ones read the master. */
static int mc_quantize_one(model *m, mc_lin *d, void *ctx) {
  mc_qctx *qc = ctx;
  rl_err *e = qc->e;
  int rc = 0;
  const model_param *p = &m->params[d->pi];
  const quant_policy *pol = &m->cu->policy;
  const int keep = d == &m->cu->lm_head ? m->lm_head_keep_bf16 : p->keep_bf16; /* model_keep_bf16 */
  qformat f = keep ? QFMT_BF16 : pol->fmt[mc_lin_class(m, d)];
  int64_t N = p->rows, K = p->cols;
  const uint16_t *w = m->cu->p[d->pi].w;
  quant_stats *st = m->cu->qstats + qc->i++;
  if (f == QFMT_BF16 || (f == QFMT_MXFP8 && K % 32)) {
    if (d->qdata) device_buffers_changed(); /* its quantized buffers go */
    return mc_lin_unquantize(m, d, NULL);
  }
  /* the buffers of the last sync are reused when the format is the same */
  int fresh = d->q.fmt != f || !d->qdata;
  if (fresh) mc_lin_unquantize(m, d, NULL), device_buffers_changed();
  quant_opts qo = {0};
  qo.ue8m0 = pol->ue8m0;
  qtensor q = qtensor_bf16(NULL, N, K, 1);
  q.fmt = f;
  int qs = QUANT_OK;
  if (f == QFMT_FP8_BLOCK) {
    int64_t nb = quant_cdiv(N, 128), kb4 = quant_roundup(quant_cdiv(K, 128), 4);
    if (fresh) {
      MC(cudaMalloc(&d->qdata, (size_t)(N * K) + 16), "cudaMalloc (fp8 weight)");
      MC(cudaMalloc(&d->qscales, (size_t)(nb * kb4) * 4 + 16), "cudaMalloc (fp8 scales)");
      MC(cudaMemset(d->qscales, 0, (size_t)(nb * kb4) * 4), "cudaMemset (fp8 scales)");
    }
    q.block_rows = 128, q.layout = QLAYOUT_HOPPER_WEIGHT;
    qc->fp8_pi[qc->n_fp8] = d == &m->cu->lm_head ? -1 : d->pi;
    qc->fp8[qc->n_fp8++] = (quant_item){w, N, K, d->qdata, d->qscales, st};
  } else if (f == QFMT_MXFP8) {
    if (fresh) {
      MC(cudaMalloc(&d->qdata, (size_t)(N * K) + 16), "cudaMalloc (mxfp8 weight)");
      MC(cudaMalloc(&d->qscales, (size_t)(N * quant_cdiv(K, 32)) + 16), "cudaMalloc (mxfp8 scales)");
    }
    qc->mx_pi[qc->n_mx] = d == &m->cu->lm_head ? -1 : d->pi;
    qc->mx[qc->n_mx++] = (quant_item){w, N, K, d->qdata, d->qscales, st};
  } else {
    if (fresh) {
      MC(cudaMalloc(&d->qdata, (size_t)(N * quant_cdiv(K, 2)) + 16), "cudaMalloc (nvfp4 weight)");
      MC(cudaMalloc(&d->qscales, (size_t)(N * quant_cdiv(K, 16)) + 16), "cudaMalloc (nvfp4 scales)");
      MC(cudaMalloc((void **)&d->sdec, 16), "cudaMalloc (nvfp4 S_dec)");
    }
    /* gate and up of one expert share the tensor amax (FORMATS.md, as model.c) */
    const char *nm = p->name, *gp = strstr(nm, "gate_proj"), *up = strstr(nm, "up_proj");
    const model_param *twin = NULL;
    float *amax = m->cu->qamax;
    if (mc_lin_class(m, d) == LINEAR_EXPERT && (gp || up)) {
      char tn[MODEL_NAME_MAX];
      snprintf(tn, sizeof tn, "%.*s%s.weight", (int)((gp ? gp : up) - nm), nm, gp ? "up_proj" : "gate_proj");
      twin = model_find_param(m, tn);
    }
    if (twin) {
      const uint16_t *tw = m->cu->p[mc_pidx(m, twin)].w;
      qs = quant_amax_bf16_cuda(w, N * K, amax, NULL, NULL, e);
      if (qs == QUANT_OK) qs = quant_amax_bf16_cuda(tw, twin->rows * twin->cols, amax + 1, NULL, NULL, e);
      if (qs == QUANT_OK && (rc = mck_fmax2(amax, amax, amax + 1, e))) return rc;
      if (qs == QUANT_OK) qs = quant_nvfp4_amax_cuda(w, N, K, amax, d->qdata, d->qscales, d->sdec, &qo, st, NULL, e);
    } else {
      qs = quant_nvfp4_cuda(w, N, K, d->qdata, d->qscales, d->sdec, &qo, st, NULL, e);
    }
    q.d_s_dec = d->sdec;
  }
  if (qs != QUANT_OK)
    return e->code ? rl_err_prefix(e, "%s: ", p->name) : rl_errf(e, RL_EXIT_FAIL, "quantizing %s: status %d", p->name, qs);
  q.data = d->qdata, q.scales = d->qscales;
  d->q = q;
  qc->n_quant++;
  return 0;
}

/* Count the linears (for the stats array). */
static int mc_count_cb(model *m, mc_lin *d, void *ctx) {
  (void)m, (void)d;
  ++*(int *)ctx;
  return 0;
}

/* Name the first quantized linear whose stats say non-finite; 0 when none. */
static int mc_check_cb(model *m, mc_lin *d, void *ctx) {
  mc_qctx *qc = ctx;
  const quant_stats *hs = &qc->hs[qc->i++];
  const model_param *p = &m->params[d->pi];
  if (d->q.fmt == QFMT_BF16) return 0; /* its slot was not written by this pass */
  if (hs->n_nonfinite) return quant_status_err(QUANT_NONFINITE, hs, p->name, p->cols, qc->e);
  return 0;
}

/* Linears per multi-tensor launch (a 48-layer, 128-expert MoE has ~18k). */
enum { MC_MULTI_CAP = 4096 };

/* model_cuda_quantize's own device buffers, made by its first call (the
 * linears never change) and reused: no allocation (a cudaFree synchronises)
 * on the sync path. Private to the quantizer, so no device_buffers_changed. */
static int mc_quant_buffers(model *m, rl_err *e) {
  model_cuda *c = m->cu;
  int rc;
  if (!c->n_lin) mc_each_lin(m, mc_count_cb, &c->n_lin);
  int per = c->n_lin < MC_MULTI_CAP ? c->n_lin : MC_MULTI_CAP;
  if (!c->qstats) {
    MC(cudaMalloc((void **)&c->qstats, (size_t)c->n_lin * sizeof(quant_stats) + 16), "cudaMalloc (quant stats)");
    MC(cudaMemset(c->qstats, 0, (size_t)c->n_lin * sizeof(quant_stats)), "cudaMemset (quant stats)");
  }
  if (!c->qws) {
    MC(cudaMalloc(&c->qws, quant_multi_ws_bytes(per > 0 ? per : 1)), "cudaMalloc (quantizer workspace)");
    c->qws_bytes = quant_multi_ws_bytes(per > 0 ? per : 1);
  }
  if (!c->qamax) MC(cudaMalloc((void **)&c->qamax, 16), "cudaMalloc (amax)");
  return 0;
}

/* The device list of the norm weights' conversions, made once (the device
 * pointers never change after model_cuda_init). */
static int mc_norm_list(model *m, rl_err *e) {
  model_cuda *c = m->cu;
  if (c->norms) return 0;
  mck_cvt *h = rl_xcalloc((size_t)m->n_params + 1, sizeof *h);
  int n = 0;
  for (int i = 0; i < m->n_params; i++)
    if (c->p[i].wf) h[n++] = (mck_cvt){c->p[i].wf, c->p[i].w, m->params[i].rows};
  int rc = mc_ok(cudaMalloc((void **)&c->norms, (size_t)(n + 1) * sizeof *h), "cudaMalloc (norm list)", e);
  if (!rc && n)
    rc = mc_ok(cudaMemcpy(c->norms, h, (size_t)n * sizeof *h, cudaMemcpyHostToDevice), "cudaMemcpy (norm list)", e);
  free(h);
  if (rc) {
    cudaFree(c->norms);
    c->norms = NULL;
    return rc;
  }
  c->n_norms = n;
  return 0;
}

/* FP32 norm weights from the BF16 masters: one launch. */
static int mc_refresh_norms(model *m, rl_err *e) {
  int rc = mc_norm_list(m, e);
  return rc ? rc : mck_f32_from_bf16_list(m->cu->norms, m->cu->n_norms, e);
}

int model_cuda_refresh_norms(model *m, rl_err *e) {
  if (!m->cu) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_refresh_norms: call model_cuda_init first");
  return mc_refresh_norms(m, e) ? rl_err_prefix(e, "model_cuda_refresh_norms: ") : 0;
}

/* A multi-tensor quantizer's status as an error naming what it quantized. */
static int mc_multi_status(int qs, int n, const char *fmt, rl_err *e) {
  if (qs == QUANT_OK) return 0;
  return e->code ? rl_err_prefix(e, "%d %s linears: ", n, fmt)
                 : rl_errf(e, RL_EXIT_FAIL, "quantizing %d %s linears: status %d", n, fmt, qs);
}

/* A quantize pass split in three (model_cuda.h: model_cuda_quantize_begin). */
struct model_cuda_qplan {
  mc_qctx qc;
  uint8_t *fp8_done, *mx_done; /* launched already */
  quant_item *sel;             /* a launch's subset */
};

void model_cuda_qplan_free(model_cuda_qplan *q) {
  if (!q) return;
  free(q->qc.fp8), free(q->qc.mx), free(q->qc.fp8_pi), free(q->qc.mx_pi);
  free(q->fp8_done), free(q->mx_done), free(q->sel);
  free(q);
}

int model_cuda_quantize_begin(model *m, const quant_policy *p, model_cuda_qplan **out, rl_err *e) {
  *out = NULL;
  int rc = quant_policy_check(p, e);
  if (rc) return rc;
  if (!m->cu) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_quantize: call model_cuda_init first");
  model_cuda *c = m->cu;
  c->policy = *p;
  c->quantized = 0;
  if ((rc = mc_quant_buffers(m, e))) return rl_err_prefix(e, "model_cuda_quantize: ");
  model_cuda_qplan *q = rl_xcalloc(1, sizeof *q);
  size_t n = (size_t)c->n_lin + 1;
  q->qc.fp8 = rl_xmalloc(n * sizeof *q->qc.fp8), q->qc.mx = rl_xmalloc(n * sizeof *q->qc.mx);
  q->qc.fp8_pi = rl_xmalloc(n * sizeof(int)), q->qc.mx_pi = rl_xmalloc(n * sizeof(int));
  q->fp8_done = rl_xcalloc(n, 1), q->mx_done = rl_xcalloc(n, 1), q->sel = rl_xmalloc(n * sizeof *q->sel);
  q->qc.e = e;
  /* views (fresh buffers first), NVFP4 experts quantized per tensor */
  rc = mc_each_lin(m, mc_quantize_one, &q->qc);
  if (rc) {
    model_cuda_qplan_free(q);
    return rl_err_prefix(e, "model_cuda_quantize: ");
  }
  *out = q;
  return 0;
}

int model_cuda_quantize_launch(model *m, model_cuda_qplan *q, int (*want)(void *ctx, int pi), void *ctx,
                               void *stream, rl_err *e) {
  model_cuda *c = m->cu;
  int rc = 0;
  for (int f = 0; f < 2 && !rc; f++) { /* every chosen fp8-block linear in one launch, every MXFP8 one in another */
    const quant_item *it = f ? q->qc.mx : q->qc.fp8;
    const int *pi = f ? q->qc.mx_pi : q->qc.fp8_pi;
    uint8_t *done = f ? q->mx_done : q->fp8_done;
    int n = f ? q->qc.n_mx : q->qc.n_fp8, k = 0;
    for (int i = 0; i < n; i++)
      if (!done[i] && (!want || want(ctx, pi[i]))) q->sel[k++] = it[i], done[i] = 1;
    if (!k) continue;
    quant_opts qo = {0};
    qo.ue8m0 = c->policy.ue8m0, qo.scale_layout = f ? QLAYOUT_ROWMAJOR : QLAYOUT_HOPPER_WEIGHT;
    rc = f ? mc_multi_status(quant_mxfp8_multi_cuda(q->sel, k, &qo, c->qws, c->qws_bytes, stream, e), k, "mxfp8", e)
           : mc_multi_status(quant_fp8_block_weight_multi_cuda(q->sel, k, &qo, c->qws, c->qws_bytes, stream, e), k,
                             "fp8-block", e);
  }
  return rc;
}

int model_cuda_quantize_end(model *m, model_cuda_qplan *q, void *stream, rl_err *e) {
  model_cuda *c = m->cu;
  int rc = model_cuda_quantize_launch(m, q, NULL, NULL, stream, e); /* whatever is left */
  if (!rc && stream) rc = mc_ok((int)cudaStreamSynchronize((cudaStream_t)stream), "the re-quantization's stream", e);
  if (!rc) rc = mc_refresh_norms(m, e);
  /* one copy of every linear's stats, then the first non-finite one named */
  if (!rc && q->qc.n_quant) {
    quant_stats *hs = rl_xmalloc((size_t)c->n_lin * sizeof *hs);
    if (quant_stats_fetch_n_cuda(c->qstats, hs, c->n_lin, NULL, e)) rc = e->code ? e->code : RL_EXIT_HARDWARE;
    q->qc.hs = hs, q->qc.i = 0;
    if (!rc) rc = mc_each_lin(m, mc_check_cb, &q->qc);
    free(hs);
  }
  model_cuda_qplan_free(q);
  if (rc) return rl_err_prefix(e, "model_cuda_quantize: ");
  c->quantized = 1;
  return 0;
}

int model_cuda_quantize(model *m, const quant_policy *p, rl_err *e) {
  model_cuda_qplan *q = NULL;
  int rc = model_cuda_quantize_begin(m, p, &q, e);
  return rc ? rc : model_cuda_quantize_end(m, q, NULL, e);
}

int model_cuda_grads_zero(model *m, rl_err *e) {
  int rc;
  if (!m->cu) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_grads_zero: call model_cuda_init first");
  for (int i = 0; i < m->n_params; i++) {
    size_t n = (size_t)(m->params[i].rows * m->params[i].cols);
    if (!m->cu->p[i].g) MC(cudaMalloc((void **)&m->cu->p[i].g, n * 4 + 16), "cudaMalloc (gradients)");
    MC(cudaMemsetAsync(m->cu->p[i].g, 0, n * 4, NULL), "cudaMemsetAsync (gradients)");
  }
  return 0;
}

int model_cuda_grads_to_host(model *m, rl_err *e) {
  int rc;
  if (!m->cu || !m->cu->p[0].g) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_grads_to_host: no device gradients");
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    size_t n = (size_t)(p->rows * p->cols);
    if (!p->g) p->g = rl_xcalloc(n, sizeof(float));
    MC(cudaMemcpy(p->g, m->cu->p[i].g, n * 4, cudaMemcpyDeviceToHost), "cudaMemcpy (gradients)");
  }
  return 0;
}

int model_cuda_optim_views(model *m, optim_tensor *t, rl_err *e) {
  if (!m->cu || !m->cu->p[0].g)
    return rl_errf(e, RL_EXIT_USAGE, "model_cuda_optim_views: call model_cuda_init and model_cuda_grads_zero first");
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    t[i] = (optim_tensor){0};
    t[i].name = p->name, t[i].n = p->rows * p->cols;
    t[i].w = m->cu->p[i].w, t[i].grad = m->cu->p[i].g;
    t[i].no_decay = p->cols == 1;
  }
  return 0;
}

int model_cuda_sync(rl_err *e) {
  int rc;
  MC(cudaDeviceSynchronize(), "a kernel of the model");
  return 0;
}

/* Store d's view in the table of model_cuda_linear_views. */
static int mc_view_cb(model *m, mc_lin *d, void *ctx) {
  if (d != &m->cu->lm_head) ((const qtensor **)ctx)[d->pi] = &d->q;
  return 0;
}

int model_cuda_linear_views(model *m, const qtensor **views, const qtensor **lm_head, rl_err *e) {
  if (!m->cu) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_linear_views: call model_cuda_init first");
  for (int i = 0; i < m->n_params; i++) views[i] = NULL;
  mc_each_lin(m, mc_view_cb, views);
  *lm_head = m->cu->lm_head.pi >= 0 ? &m->cu->lm_head.q : NULL;
  return 0;
}

/* ---------------------------------------------------------------- linear helpers */

void *mc_scratch(model *m, int slot, size_t bytes, rl_err *e) {
  model_cuda *c = m->cu;
  if (bytes < 16) bytes = 16;
  if (c->cap[slot] >= bytes) return c->scr[slot];
  cudaFree(c->scr[slot]);
  c->scr[slot] = NULL, c->cap[slot] = 0;
  device_buffers_changed();
  if (mc_ok(cudaMalloc(&c->scr[slot], bytes), "cudaMalloc (linear scratch)", e)) return NULL;
  c->cap[slot] = bytes;
  return c->scr[slot];
}

/* 1 when a BF16 linear of M rows runs gemm_small_bf16_cuda (the decode step's
 * GEMM: BF16 result straight into FP32, one kernel) instead of cuBLASLt plus a
 * conversion: M ≤ 64, so that a decode row's bits do not depend on how many
 * rows the step has (gemm_small's order is a function of (N, K) alone; mixing it
 * with cuBLASLt by M broke the 1/7/64-slot invariance of rollout_gpu_test).
 * The price, bench_small_gemm on the H200 (2026-12-05, q/k/v grouped and
 * gate/up/SwiGLU fused, mc_lin_fwd_group / mc_lin_fwd_swiglu): over a decode
 * step's GEMMs it takes 0.50× the time of cuBLASLt + conversion at M = 1,
 * 0.67× at M = 8, 1.11× at M = 64. No pinned algorithms (the pinned cuBLASLt order is what
 * makes rollout and training rows bitwise equal; gemm_small has its own),
 * operands as the kernel loads them, and RLRUN_SMALL_GEMM not "0". */
static int mc_small_gemm(const model *m, const mc_lin *L, const uint16_t *xb, int64_t M) {
  if (L->q.fmt != QFMT_BF16 || M < 1 || M > 64 || m->cu->policy.pin_algo || m->cu->row_inv) return 0;
  if (L->q.cols % 8 || (uintptr_t)xb % 16 || (uintptr_t)L->q.data % 16) return 0;
  return rl_env_bool("RLRUN_SMALL_GEMM", 1);
}

/* fp8-block weights at decode M (≤ 64) through gemm_small_fp8_block_cuda (one
 * kernel: activation quantization bit-identical to linear_forward's, E4M3 MMAs,
 * its own batch-invariant order) when RLRUN_SMALL_GEMM_FP8=1 and the kernel takes
 * the operands. Opt-in: cuBLASLt's block-scaled FP8 rows equal the trainer's
 * bitwise at every M measured (the unified fp8-block mode's rollout/trainer
 * mismatch ~2e-7), while this kernel's order is its own (a mismatch of the
 * order of BF16 × BF16's through gemm_small); see docs/gpu-results.md. */
static int mc_small_fp8_wanted(const model *m, const mc_lin *L, int64_t M) {
  if (L->q.fmt != QFMT_FP8_BLOCK || M < 1 || M > 64 || m->cu->policy.pin_algo || m->cu->row_inv) return 0;
  return rl_env_bool("RLRUN_SMALL_GEMM_FP8", 0);
}
static int mc_small_fp8(const model *m, const mc_lin *L, const uint16_t *xb, int64_t M, float *out) {
  rl_err e = {0};
  return mc_small_fp8_wanted(m, L, M) && gemm_small_fp8_check(out, xb, &L->q, M, &m->cu->policy, &e) == 0;
}

/* The policy a forward linear runs under: the model's, pinned while row_inv. */
static const quant_policy *mc_fwd_policy(const model *m, quant_policy *tmp) {
  if (!m->cu->row_inv) return &m->cu->policy;
  *tmp = m->cu->policy;
  tmp->pin_algo = 1;
  return tmp;
}

int mc_lin_fwd(model *m, const mc_lin *L, const uint16_t *xb, int64_t M, float *out, rl_err *e) {
  int64_t N = L->q.rows;
  if (M == 0) return 0;
  if (mc_small_fp8(m, L, xb, M, out)) {
    int rc = MC_DP(DP_FWD_GEMM, gemm_small_fp8_block_cuda(out, xb, &L->q, M, &m->cu->policy, NULL, e));
    return rc ? rl_err_prefix(e, "%s: ", m->params[L->pi].name) : 0;
  }
  if (mc_small_gemm(m, L, xb, M)) {
    int rc = MC_DP(DP_FWD_GEMM, gemm_small_bf16_cuda(out, xb, (const uint16_t *)L->q.data, M, N, L->q.cols, NULL, e));
    return rc ? rl_err_prefix(e, "%s: ", m->params[L->pi].name) : 0;
  }
  uint16_t *y = mc_scratch(m, MC_SCR_Y, (size_t)(M * N) * 2, e);
  if (!y) return e->code;
  quant_policy tmp;
  int rc = MC_DP(DP_FWD_GEMM, linear_forward(y, xb, M, &L->q, mc_fwd_policy(m, &tmp), e));
  if (!rc) rc = mc_dp_end(ops_f32_from_bf16_cuda(out, y, (size_t)(M * N), NULL, e), DP_FWD_CONV);
  return rc ? rl_err_prefix(e, "%s: ", m->params[L->pi].name) : 0;
}

int mc_lin_native_b(const model *m, const mc_lin *L, const uint16_t *xb, int64_t M) {
  return M > 0 && !mc_small_fp8_wanted(m, L, M) && !mc_small_gemm(m, L, xb, M);
}

static int mc_small_q8_wanted(const model *m, const mc_lin *const *L, int n, int64_t M);
static int mc_small_q8_takes(const mc_lin *const *L, int n, const uint8_t *q, const float *scales, int64_t M,
                             uint16_t *const *out_b);
static int mc_small_q8_run(model *m, const mc_lin *const *L, int n, const uint8_t *q, const float *scales, int64_t rs,
                           int64_t ks, int64_t M, uint16_t *const *out_b, rl_err *e);

int mc_lin_fwd_b(model *m, const mc_lin *L, const uint16_t *xb, int64_t M, uint16_t *out_b, rl_err *e) {
  int64_t N = L->q.rows;
  if (M == 0) return 0;
  if (mc_small_q8_wanted(m, &L, 1, M)) { /* fp8-block at decode M: linear_forward's quantizer (its bytes; row-major
                                           * scales, no pad rows), then the small-M GEMM */
    const int64_t K = L->q.cols;
    ops_fp8_act qa;
    int rc = mc_q8_act(m, M, K, &qa, e);
    if (rc) return rc;
    if (mc_small_q8_takes(&L, 1, qa.q, qa.scales, M, &out_b)) {
      quant_opts qo = {0};
      qo.ue8m0 = m->cu->policy.ue8m0;
      rl_err_clear(e); /* a quantizer failure without a message is told apart below */
      int qs = MC_DP(DP_FWD_GEMM, quant_fp8_block_act_cuda(xb, M, K, qa.q, qa.scales, &qo, NULL, NULL, e));
      if (qs != QUANT_OK) {
        if (!e->code) quant_status_err(qs, NULL, "fp8-block activation (device)", K, e);
        return rl_err_prefix(e, "%s: ", m->params[L->pi].name);
      }
      return mc_small_q8_run(m, &L, 1, qa.q, qa.scales, quant_cdiv(K, 128), 1, M, &out_b, e);
    }
  }
  if (mc_small_gemm(m, L, xb, M)) { /* BF16 views at decode M: the small-M kernel stores its BF16-rounded sums as BF16 */
    int rc = MC_DP(DP_FWD_GEMM, gemm_small_bf16_b_cuda(out_b, xb, (const uint16_t *)L->q.data, M, N, L->q.cols, NULL, e));
    return rc ? rl_err_prefix(e, "%s: ", m->params[L->pi].name) : 0;
  }
  if (M <= 64) { /* the opt-in mma.sync fp8 kernel writes FP32 (of BF16-rounded sums): its bits, then the exact BF16 */
    float *y = mc_scratch(m, MC_SCR_DX, (size_t)(M * N) * 4, e);
    if (!y) return e->code;
    if (mc_small_fp8(m, L, xb, M, y)) {
      int rc = mc_lin_fwd(m, L, xb, M, y, e);
      if (!rc) rc = mc_dp_end(ops_bf16_from_f32_cuda(out_b, y, (size_t)(M * N), NULL, e), DP_FWD_CONV);
      return rc;
    }
  }
  quant_policy tmp;
  int rc = MC_DP(DP_FWD_GEMM, linear_forward(out_b, xb, M, &L->q, mc_fwd_policy(m, &tmp), e));
  return rc ? rl_err_prefix(e, "%s: ", m->params[L->pi].name) : 0;
}

/* RLRUN_LINEAR_SHARED_ACT=0: every linear quantizes its activation itself (the
 * same bits; a diagnostic of what sharing saves). */
static int mc_shared_act(void) {
  static int on = -1;
  return rl_env_switch(&on, "RLRUN_LINEAR_SHARED_ACT", -1);
}

/* 1 when n ≥ 2 linears reading the same xb share one activation quantization:
 * one quantized format and K, all through cuBLASLt (the opt-in small fp8
 * kernel quantizes for itself), sharing not turned off. */
static int mc_can_share(const model *m, const mc_lin *const *L, int n, int64_t M) {
  if (n < 2 || M == 0 || L[0]->q.fmt == QFMT_BF16 || !mc_shared_act()) return 0;
  for (int i = 0; i < n; i++)
    if (L[i]->q.fmt != L[0]->q.fmt || L[i]->q.cols != L[0]->q.cols || mc_small_fp8_wanted(m, L[i], M)) return 0;
  return 1;
}

/* The linears of mc_can_share: the activation quantized once
 * (linear_act_prepare), then each GEMM into out_b[i] (BF16), or through the
 * scratch into out[i] as FP32 when out_b is NULL — the bits of one
 * mc_lin_fwd_b / mc_lin_fwd each, n − 1 quantizer launches fewer. */
static int mc_lin_fwd_shared(model *m, const mc_lin *const *L, int n, const uint16_t *xb, int64_t M,
                             float *const *out, uint16_t *const *out_b, rl_err *e) {
  quant_policy tmp;
  const quant_policy *pol = mc_fwd_policy(m, &tmp);
  linear_act a;
  int rc = MC_DP(DP_FWD_GEMM, linear_act_prepare(&a, xb, M, L[0]->q.cols, L[0]->q.fmt, pol, NULL, e));
  for (int i = 0; i < n && !rc; i++) {
    const int64_t N = L[i]->q.rows;
    uint16_t *y = out_b ? out_b[i] : mc_scratch(m, MC_SCR_Y, (size_t)(M * N) * 2, e);
    if (!y) return e->code;
    rc = MC_DP(DP_FWD_GEMM, linear_forward_prepared(y, &a, &L[i]->q, pol, NULL, e));
    if (!rc && !out_b) rc = mc_dp_end(ops_f32_from_bf16_cuda(out[i], y, (size_t)(M * N), NULL, e), DP_FWD_CONV);
    if (rc) rl_err_prefix(e, "%s: ", m->params[L[i]->pi].name);
  }
  return rc;
}

int mc_lin_q8_ok(const model *m, const mc_lin *const *L, int n, const uint16_t *xb, int64_t M) {
  if (n < 1 || M < 1 || M > INT32_MAX - 8 || !mc_shared_act() || !model_cuda_norm_q8(-1) || L[0]->q.cols % 4) return 0;
  for (int i = 0; i < n; i++)
    if (L[i]->q.fmt != QFMT_FP8_BLOCK || L[i]->q.cols != L[0]->q.cols || !mc_lin_native_b(m, L[i], xb, M)) return 0;
  return 1;
}

int mc_q8_act(model *m, int64_t M, int64_t K, ops_fp8_act *qa, rl_err *e) {
  const int64_t mp = quant_roundup(M, 8);
  const size_t codes = ((size_t)(mp * K) + 15) / 16 * 16, bytes = codes + (size_t)(quant_cdiv(K, 128) * mp) * 4;
  uint8_t *b = mc_scratch(m, MC_SCR_Q8, bytes, e);
  if (!b) return e->code;
  *qa = (ops_fp8_act){b, (float *)(b + codes), mp, (int)mp, m->cu->policy.ue8m0};
  return 0;
}

int model_cuda_norm_q8(int set) {
  static int on = -1;
  return rl_env_switch(&on, "RLRUN_NORM_Q8", set);
}

static atomic_llong mc_small_q8_n;
long long model_cuda_small_q8_calls(void) { return atomic_load(&mc_small_q8_n); }

int model_cuda_small_q8(int set) {
  static int on = -1;
  return rl_env_switch(&on, "RLRUN_SMALL_GEMM_Q8", set);
}

/* 1 when n fp8-block linears at M rows may run as one gemm_small_fp8_group_cuda
 * launch (model_cuda_small_q8): decode M, not pinned, not row-invariant, an
 * sm_90 GPU. */
/* The most rows the small-M fp8 GEMM takes in the model: 64 (as the BF16 one), or
 * RLRUN_SMALL_GEMM_Q8_MAX_M (1 … GEMM_SMALL_MAX_M; read once). Above 64 the fp8-block
 * linears keep the kernel's summation order in steps of up to that many rows (BF16
 * linears still switch to cuBLASLt above 64) but run slower: H100, bench_rollout fp8-block batch 256, 46.2k
 * tok/s at 256 against 48.5k at 64 (128: 48.7k, no gain). */
static int mc_small_q8_max_m(void) {
  static int v = 0;
  int got = __atomic_load_n(&v, __ATOMIC_ACQUIRE);
  if (!got) {
    got = rl_env_int("RLRUN_SMALL_GEMM_Q8_MAX_M", 1, GEMM_SMALL_MAX_M, 64);
    __atomic_store_n(&v, got, __ATOMIC_RELEASE);
  }
  return got;
}

static int mc_small_q8_wanted(const model *m, const mc_lin *const *L, int n, int64_t M) {
  if (M < 1 || M > mc_small_q8_max_m() || n < 1 || n > GEMM_SMALL_MAX_SEGS || m->cu->policy.pin_algo ||
      m->cu->row_inv)
    return 0;
  for (int i = 0; i < n; i++)
    if (L[i]->q.fmt != QFMT_FP8_BLOCK) return 0;
  return model_cuda_small_q8(-1) && gemm_small_fp8_group_supported();
}

/* … and the kernel takes these operands: the activation's codes q [M][K] with its
 * scales at scales[m·rs + kb·ks], BF16 outputs out_b[i]. */
static int mc_small_q8_takes(const mc_lin *const *L, int n, const uint8_t *q, const float *scales, int64_t M,
                             uint16_t *const *out_b) {
  gemm_small_seg8 seg[GEMM_SMALL_MAX_SEGS];
  for (int i = 0; i < n; i++) seg[i] = (gemm_small_seg8){out_b[i], &L[i]->q};
  rl_err e = {0};
  return gemm_small_fp8_group_check(seg, n, q, scales, M, L[0]->q.cols, 1, &e) == 0;
}

/* The launch of those two. */
static int mc_small_q8_run(model *m, const mc_lin *const *L, int n, const uint8_t *q, const float *scales, int64_t rs,
                           int64_t ks, int64_t M, uint16_t *const *out_b, rl_err *e) {
  gemm_small_seg8 seg[GEMM_SMALL_MAX_SEGS];
  for (int i = 0; i < n; i++) seg[i] = (gemm_small_seg8){out_b[i], &L[i]->q};
  int rc = MC_DP(DP_FWD_GEMM, gemm_small_fp8_group_cuda(seg, n, q, scales, rs, ks, M, L[0]->q.cols, 1, NULL, e));
  atomic_fetch_add(&mc_small_q8_n, 1);
  return rc ? rl_err_prefix(e, "%s%s: ", m->params[L[0]->pi].name, n > 1 ? " (and the linears after it)" : "") : 0;
}

int mc_lin_small_q8_ok(const model *m, const mc_lin *const *L, int n, const uint8_t *q, const float *scales, int64_t M,
                       uint16_t *const *out_b) {
  return mc_small_q8_wanted(m, L, n, M) && mc_small_q8_takes(L, n, q, scales, M, out_b);
}

int mc_lin_fwd_b_q8(model *m, const mc_lin *const *L, int n, const uint8_t *q, const float *scales, int64_t M,
                    uint16_t *const *out_b, rl_err *e) {
  if (mc_small_q8_wanted(m, L, n, M) && mc_small_q8_takes(L, n, q, scales, M, out_b))
    return mc_small_q8_run(m, L, n, q, scales, 1, quant_roundup(M, 8), M, out_b, e); /* mc_q8_act's layout */
  quant_policy tmp;
  const quant_policy *pol = mc_fwd_policy(m, &tmp);
  linear_act a;
  int rc = linear_act_wrap_fp8(&a, q, scales, M, quant_roundup(M, 8), L[0]->q.cols, pol, e);
  for (int i = 0; i < n && !rc; i++) {
    rc = MC_DP(DP_FWD_GEMM, linear_forward_prepared(out_b[i], &a, &L[i]->q, pol, NULL, e));
    if (rc) rl_err_prefix(e, "%s: ", m->params[L[i]->pi].name);
  }
  return rc;
}

/* Off by default: measured slower a decode step than the two launches — the
 * counter form 5.5 %, the cluster form 4.3 % (H100, docs/gpu-results.md,
 * sessions 21 and 22). */
int model_cuda_small_q8_swiglu(int set) {
  static int on = -1;
  return rl_env_switch_def(&on, "RLRUN_SMALL_FP8_SWIGLU", 0, set);
}

static atomic_llong mc_swiglu_q8_n;
long long model_cuda_small_q8_swiglu_calls(void) { return atomic_load(&mc_swiglu_q8_n); }

/* The pair's fp8 output in gemm.h's terms. */
static gemm_small_q8out mc_q8out(const ops_fp8_act *qo) {
  return (gemm_small_q8out){qo->q, qo->scales, qo->scale_ld, qo->rows_pad, qo->ue8m0};
}

int mc_lin_swiglu_q8_ok(const model *m, const mc_lin *gate, const mc_lin *up, const uint8_t *q, const float *scales,
                        int64_t M, const uint16_t *act_b, const ops_fp8_act *qo) {
  const mc_lin *gu[2] = {gate, up};
  if (!qo || !model_cuda_small_q8_swiglu(-1) || !mc_small_q8_wanted(m, gu, 2, M)) return 0;
  const gemm_small_q8out o = mc_q8out(qo);
  rl_err e = {0};
  return gemm_small_fp8_swiglu_check(act_b, &o, &gate->q, &up->q, q, scales, M, gate->q.cols, &e) == 0;
}

int mc_lin_fwd_swiglu_q8(model *m, const mc_lin *gate, const mc_lin *up, const uint8_t *q, const float *scales,
                         int64_t M, uint16_t *act_b, const ops_fp8_act *qo, rl_err *e) {
  const gemm_small_q8out o = mc_q8out(qo);
  int rc = MC_DP(DP_FWD_GEMM, gemm_small_fp8_swiglu_cuda(act_b, &o, &gate->q, &up->q, q, scales, 1,
                                                         quant_roundup(M, 8), M, gate->q.cols, NULL, e));
  atomic_fetch_add(&mc_swiglu_q8_n, 1);
  return rc ? rl_err_prefix(e, "%s (the SwiGLU pair with up): ", m->params[gate->pi].name) : 0;
}

int mc_swiglu_down_b(model *m, const mc_lin *down, const uint16_t *gate_b, const uint16_t *up_b, uint16_t *act_b,
                     int64_t M, uint16_t *out_b, rl_err *e) {
  const int64_t I = down->q.cols;
  int rc;
  if (I % 16 == 0 && ((uintptr_t)gate_b | (uintptr_t)up_b | (uintptr_t)act_b) % 16 == 0 &&
      mc_lin_q8_ok(m, &down, 1, act_b, M)) {
    ops_fp8_act qa;
    if ((rc = mc_q8_act(m, M, I, &qa, e)) ||
        (rc = MC_DP(DP_FWD_ACT, ops_swiglu_forward_q8_bx_cuda(act_b, gate_b, up_b, (int)M, (int)I, (int)I, &qa, NULL, e))))
      return rc;
    return mc_lin_fwd_b_q8(m, &down, 1, qa.q, qa.scales, M, &out_b, e);
  }
  if ((rc = MC_DP(DP_FWD_ACT, ops_swiglu_forward_bx_cuda(NULL, act_b, gate_b, up_b, (int)M, (int)I, (int)I, NULL, e))))
    return rc;
  return mc_lin_fwd_b(m, down, act_b, M, out_b, e);
}

int mc_lin_fwd_b_group(model *m, const mc_lin *const *L, int n, const uint16_t *xb, int64_t M, uint16_t *const *out_b,
                       rl_err *e) {
  if (mc_can_share(m, L, n, M)) return mc_lin_fwd_shared(m, L, n, xb, M, NULL, out_b, e);
  for (int i = 0; i < n; i++)
    if (mc_lin_fwd_b(m, L[i], xb, M, out_b[i], e)) return e->code;
  return 0;
}

int mc_lin_fwd_group(model *m, const mc_lin *const *L, int n, const uint16_t *xb, int64_t M, float *const *out,
                     rl_err *e) {
  int small = n >= 1 && n <= GEMM_SMALL_MAX_SEGS;
  for (int i = 0; i < n && small; i++) small = mc_small_gemm(m, L[i], xb, M) && L[i]->q.cols == L[0]->q.cols;
  if (!small) {
    if (mc_can_share(m, L, n, M)) return mc_lin_fwd_shared(m, L, n, xb, M, out, NULL, e);
    for (int i = 0; i < n; i++)
      if (mc_lin_fwd(m, L[i], xb, M, out[i], e)) return e->code;
    return 0;
  }
  gemm_small_seg seg[GEMM_SMALL_MAX_SEGS];
  for (int i = 0; i < n; i++) seg[i] = (gemm_small_seg){out[i], (const uint16_t *)L[i]->q.data, L[i]->q.rows};
  int rc = gemm_small_bf16_group_cuda(seg, n, xb, M, L[0]->q.cols, NULL, e);
  return rc ? rl_err_prefix(e, "%s (and %d more): ", m->params[L[0]->pi].name, n - 1) : 0;
}

int mc_lin_fwd_swiglu(model *m, const mc_lin *gate, const mc_lin *up, const uint16_t *xb, int64_t M, float *g_out,
                      float *u_out, uint16_t *act_b, rl_err *e) {
  const int64_t I = gate->q.rows;
  if (mc_small_gemm(m, gate, xb, M) && mc_small_gemm(m, up, xb, M) && up->q.rows == I && up->q.cols == gate->q.cols) {
    int rc = gemm_small_bf16_swiglu_cuda(act_b, xb, (const uint16_t *)gate->q.data, (const uint16_t *)up->q.data, M, I,
                                         gate->q.cols, NULL, e);
    return rc ? rl_err_prefix(e, "%s + %s: ", m->params[gate->pi].name, m->params[up->pi].name) : 0;
  }
  const mc_lin *pair[2] = {gate, up};
  float *const outs[2] = {g_out, u_out};
  if (mc_can_share(m, pair, 2, M)) {
    int rc = mc_lin_fwd_shared(m, pair, 2, xb, M, outs, NULL, e);
    if (rc) return rc;
  } else if (mc_lin_fwd(m, gate, xb, M, g_out, e) || mc_lin_fwd(m, up, xb, M, u_out, e)) {
    return e->code;
  }
  return ops_swiglu_forward_cuda(NULL, act_b, g_out, u_out, (int)M, (int)I, (int)I, NULL, e);
}

static int mc_lin_bwd_run(model *m, const mc_lin *L, const float *dy, int64_t M, const uint16_t *xb, float *dx,
                          int add, rl_err *e);
int mc_lin_bwd(model *m, const mc_lin *L, const float *dy, int64_t M, const uint16_t *xb, float *dx,
               int add, rl_err *e) {
  return mc_lin_bwd_run(m, L, dy, M, xb, dx, add, e);
}

int mc_lin_bwd_b(model *m, const mc_lin *L, const uint16_t *dy_b, int64_t M, const uint16_t *xb, uint16_t *dx_b,
                 rl_err *e) {
  const model_param *p = &m->params[L->pi];
  model_cuda_param *d = &m->cu->p[L->pi];
  if (!d->g) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_backward: no gradient buffers (call model_cuda_grads_zero)");
  if (M == 0) return 0;
  linear_bwd b = {M, p->rows, p->cols, dy_b, xb, d->w, dx_b, NULL, d->g, 1, NULL};
  int rc = MC_DP(DP_BWD_GEMM, linear_backward(&b, e));
  return rc ? rl_err_prefix(e, "%s: ", p->name) : 0;
}
static int mc_lin_bwd_run(model *m, const mc_lin *L, const float *dy, int64_t M, const uint16_t *xb, float *dx,
                          int add, rl_err *e) {
  const model_param *p = &m->params[L->pi];
  model_cuda_param *d = &m->cu->p[L->pi];
  int64_t N = p->rows, K = p->cols;
  if (!d->g) return rl_errf(e, RL_EXIT_USAGE, "model_cuda_backward: no gradient buffers (call model_cuda_grads_zero)");
  if (M == 0) return 0;
  uint16_t *dyb = mc_scratch(m, MC_SCR_DY, (size_t)(M * N) * 2, e), *dxb = NULL;
  if (!dyb || (dx && !(dxb = mc_scratch(m, MC_SCR_DX, (size_t)(M * K) * 2, e)))) return e->code;
  int rc = MC_DP(DP_BWD_CONV, ops_bf16_from_f32_cuda(dyb, dy, (size_t)(M * N), NULL, e));
  linear_bwd b = {M, N, K, dyb, xb, d->w, dxb, NULL, d->g, 1, NULL};
  if (!rc) rc = MC_DP(DP_BWD_GEMM, linear_backward(&b, e));
  if (!rc && dx) rc = MC_DP(DP_BWD_CONV, mck_acc_bf16(dx, dxb, M * K, add, e));
  return rc ? rl_err_prefix(e, "%s: ", p->name) : 0;
}

#else /* ---------------------------------------------------------------- no CUDA */

/* The one error of every entry point in a build without CUDA. */
static int mc_nocuda(const char *fn, rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "%s: this binary was built without CUDA; rebuild with nvcc available or use device: cpu", fn);
}
int model_cuda_init(model *m, rl_err *e) { return mc_nocuda("model_cuda_init", e); }
void model_cuda_free(model *m) { (void)m; }
model_cuda_param *model_cuda_param_at(model *m, int i) { return NULL; }
int model_cuda_upload(model *m, rl_err *e) { return mc_nocuda("model_cuda_upload", e); }
int model_cuda_download(model *m, rl_err *e) { return mc_nocuda("model_cuda_download", e); }
int model_cuda_quantize(model *m, const quant_policy *p, rl_err *e) { return mc_nocuda("model_cuda_quantize", e); }
int model_cuda_quantize_begin(model *m, const quant_policy *p, model_cuda_qplan **q, rl_err *e) {
  *q = NULL;
  return mc_nocuda("model_cuda_quantize_begin", e);
}
int model_cuda_quantize_launch(model *m, model_cuda_qplan *q, int (*want)(void *ctx, int pi), void *ctx,
                               void *stream, rl_err *e) {
  return mc_nocuda("model_cuda_quantize_launch", e);
}
int model_cuda_quantize_end(model *m, model_cuda_qplan *q, void *stream, rl_err *e) {
  return mc_nocuda("model_cuda_quantize_end", e);
}
void model_cuda_qplan_free(model_cuda_qplan *q) { (void)q; }
int model_cuda_refresh_norms(model *m, rl_err *e) { return mc_nocuda("model_cuda_refresh_norms", e); }
int model_cuda_grads_zero(model *m, rl_err *e) { return mc_nocuda("model_cuda_grads_zero", e); }
int model_cuda_grads_to_host(model *m, rl_err *e) { return mc_nocuda("model_cuda_grads_to_host", e); }
int model_cuda_optim_views(model *m, optim_tensor *t, rl_err *e) { return mc_nocuda("model_cuda_optim_views", e); }
model_cuda_acts *model_cuda_acts_new(void) { return NULL; }
void model_cuda_acts_free(model_cuda_acts *a) { (void)a; }
int model_cuda_forward(model *m, const model_batch *b, const model_fwd_opts *o, model_cuda_acts *a, rl_err *e) {
  return mc_nocuda("model_cuda_forward", e);
}
const float *model_cuda_logits(const model_cuda_acts *a) { return NULL; }
size_t model_cuda_acts_bytes(const model_cuda_acts *a) { return 0; }
int model_cuda_logits_to_host(const model_cuda_acts *a, float *out, rl_err *e) {
  return mc_nocuda("model_cuda_logits_to_host", e);
}
int model_cuda_logits_rows(const model_cuda_acts *a, const int32_t *rows, int n, float *dst, rl_err *e) {
  return mc_nocuda("model_cuda_logits_rows", e);
}
const int32_t *model_cuda_routed_ids(const model_cuda_acts *a, int l) { return NULL; }
int model_cuda_logprob_forward(model *m, model_cuda_acts *a, const int32_t *targets, float temp, float *logp,
                               float *entropy, rl_err *e) {
  return mc_nocuda("model_cuda_logprob_forward", e);
}
int model_cuda_backward_logprob(model *m, model_cuda_acts *a, const float *dlogp, const float *dentropy, rl_err *e) {
  return mc_nocuda("model_cuda_backward_logprob", e);
}
int model_cuda_backward(model *m, model_cuda_acts *a, const float *dlogits, rl_err *e) {
  return mc_nocuda("model_cuda_backward", e);
}
int model_cuda_sync(rl_err *e) { return mc_nocuda("model_cuda_sync", e); }
int model_cuda_linear_views(model *m, const qtensor **views, const qtensor **lm_head, rl_err *e) {
  return mc_nocuda("model_cuda_linear_views", e);
}
#endif
