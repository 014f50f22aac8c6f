/* model_cuda.c — the CUDA model (model_cuda.h): device weights and their
 * quantized views (the sync step), device activations, the forward pass and
 * the log-probs. The backward is in model_cuda_bwd.c, the small kernels in
 * model_cuda_kern.cu. Mirrors model/forward.c op for op (POLICY mode). */
#include "model/model_cuda.h"

#include <math.h>
#include <stdio.h>
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

/* Index of parameter p in m->params. */
static int mc_pidx(const model *m, const model_param *p) { return (int)(p - m->params); }

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
  if (L->q.fmt != QFMT_BF16 || M < 1 || M > 64 || m->cu->policy.pin_algo) return 0;
  if (L->q.cols % 8 || (uintptr_t)xb % 16 || (uintptr_t)L->q.data % 16) return 0;
  const char *env = getenv("RLRUN_SMALL_GEMM");
  return !env || strcmp(env, "0") != 0;
}

/* fp8-block weights at decode M (≤ 64) through gemm_small_fp8_block_cuda (one
 * kernel: activation quantization bit-identical to linear_forward's, E4M3 MMAs,
 * its own batch-invariant order) when RLRUN_SMALL_GEMM_FP8=1 and the kernel takes
 * the operands. Opt-in: cuBLASLt's block-scaled FP8 rows equal the trainer's
 * bitwise at every M measured (the unified fp8-block mode's rollout/trainer
 * mismatch ~2e-7), while this kernel's order is its own (a mismatch of the
 * order of BF16 × BF16's through gemm_small); see docs/gpu-results.md. */
static int mc_small_fp8(const model *m, const mc_lin *L, const uint16_t *xb, int64_t M, float *out) {
  if (L->q.fmt != QFMT_FP8_BLOCK || M < 1 || M > 64 || m->cu->policy.pin_algo) return 0;
  const char *env = getenv("RLRUN_SMALL_GEMM_FP8");
  if (!env || strcmp(env, "1")) return 0;
  rl_err e = {0};
  return gemm_small_fp8_check(out, xb, &L->q, M, &m->cu->policy, &e) == 0;
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
  int rc = MC_DP(DP_FWD_GEMM, linear_forward(y, xb, M, &L->q, &m->cu->policy, e));
  if (!rc) rc = mc_dp_end(ops_f32_from_bf16_cuda(out, y, (size_t)(M * N), NULL, e), DP_FWD_CONV);
  return rc ? rl_err_prefix(e, "%s: ", m->params[L->pi].name) : 0;
}

int mc_lin_fwd_b(model *m, const mc_lin *L, const uint16_t *xb, int64_t M, uint16_t *out_b, rl_err *e) {
  int64_t N = L->q.rows;
  if (M == 0) return 0;
  if (M <= 64) { /* the small-M kernels write FP32 (of BF16-rounded sums): their bits, then the exact BF16 */
    float *y = mc_scratch(m, MC_SCR_DX, (size_t)(M * N) * 4, e);
    if (!y) return e->code;
    if (mc_small_fp8(m, L, xb, M, y) || mc_small_gemm(m, L, xb, M)) {
      int rc = mc_lin_fwd(m, L, xb, M, y, e);
      if (!rc) rc = mc_dp_end(ops_bf16_from_f32_cuda(out_b, y, (size_t)(M * N), NULL, e), DP_FWD_CONV);
      return rc;
    }
  }
  int rc = MC_DP(DP_FWD_GEMM, linear_forward(out_b, xb, M, &L->q, &m->cu->policy, e));
  return rc ? rl_err_prefix(e, "%s: ", m->params[L->pi].name) : 0;
}

int mc_lin_fwd_group(model *m, const mc_lin *const *L, int n, const uint16_t *xb, int64_t M, float *const *out,
                     rl_err *e) {
  int small = n >= 1 && n <= GEMM_SMALL_MAX_SEGS;
  for (int i = 0; i < n && small; i++) small = mc_small_gemm(m, L[i], xb, M) && L[i]->q.cols == L[0]->q.cols;
  if (!small) {
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
  if (mc_lin_fwd(m, gate, xb, M, g_out, e) || mc_lin_fwd(m, up, xb, M, u_out, e)) return e->code;
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
  const char *env = getenv("RLRUN_MODEL_FP32_FLOW");
  if (a->fp32_flow || (env && !strcmp(env, "1"))) return 0;
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
static int mc_attention_fwd(model *m, model_cuda_acts *a, mc_layer_acts *x, rl_err *e) {
  int T = a->T, hd = m->hd, dp = a->dp, rc = 0;
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
      (rc = MC_DP(DP_FWD_ATTN, mc_attention_fwd(m, a, x, e))))
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
  if ((rc = MC_DP(DP_FWD_NORM,
                  ops_rmsnorm_forward_cuda(NULL, x->xn1_b, x->rstd1, in, P[mc_pidx(m, my->ln1)].wf, T, H, m->eps, NULL, e))))
    goto out;
  if ((rc = mc_lin_fwd_b(m, &y->q, x->xn1_b, T, x->qr_b, e)) || (rc = mc_lin_fwd_b(m, &y->k, x->xn1_b, T, x->kr_b, e)) ||
      (rc = x->v_b ? mc_lin_fwd_b(m, &y->v, x->xn1_b, T, x->v_b, e) : mc_lin_fwd(m, &y->v, x->xn1_b, T, x->v, e)))
    goto out;
  if ((rc = MC_DP(DP_FWD_NORM, ops_qk_norm_rope_forward_bx_cuda(x->q, x->q_b, x->rstd_q, x->qr_b, P[mc_pidx(m, my->q_norm)].wf,
                                                                a->pos, T, m->nq, m->hd, m->eps, m->theta, NULL, e))) ||
      (rc = MC_DP(DP_FWD_NORM, ops_qk_norm_rope_forward_bx_cuda(x->k, x->k_b, x->rstd_k, x->kr_b, P[mc_pidx(m, my->k_norm)].wf,
                                                                a->pos, T, m->nkv, m->hd, m->eps, m->theta, NULL, e))) ||
      (rc = MC_DP(DP_FWD_ATTN, mc_attention_fwd(m, a, x, e))))
    goto out;
  if ((rc = mc_lin_fwd_b(m, &y->o, x->att_b, T, a->o_b, e)) ||
      (rc = MC_DP(DP_FWD_NORM, ops_residual_rmsnorm_forward_bx_cuda(x->h, NULL, x->xn2_b, x->rstd2, in, a->o_b,
                                                                    P[mc_pidx(m, my->ln2)].wf, T, H, m->eps, NULL, e))))
    goto out;
  if (my->moe) {
    if (!(rc = mc_moe_forward(m, l, replay, a, next, e))) rc = MC_DP(DP_FWD_ACT, mck_add_f32(next, x->h, next, (int64_t)T * H, e));
  } else if (!(rc = mc_lin_fwd_b(m, &y->gate, x->xn2_b, T, x->gate_b, e)) &&
             !(rc = mc_lin_fwd_b(m, &y->up, x->xn2_b, T, x->up_b, e)) &&
             !(rc = MC_DP(DP_FWD_ACT, ops_swiglu_forward_bx_cuda(NULL, x->act_b, x->gate_b, x->up_b, T, m->I, m->I, NULL, e))) &&
             !(rc = mc_lin_fwd_b(m, &y->down, x->act_b, T, a->o_b, e))) {
    rc = MC_DP(DP_FWD_ACT, mck_add_bf16(next, x->h, a->o_b, (int64_t)T * H, e));
  }
out:
  if (rc) rl_err_prefix(e, "layer %d: ", l);
  return rc;
}

int mc_layer_forward_any(model *m, int l, model_cuda_acts *a, const int32_t *replay, rl_err *e) {
  return (a->key[11] ? mc_layer_forward_bx : mc_layer_forward)(m, l, a, replay, e);
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
  for (int l = 0; l < m->L && !rc; l++) rc = mc_layer_forward_any(m, l, a, o && o->replay_ids ? o->replay_ids[l] : NULL, e);
  a->own_ids = NULL;
  if (!rc)
    rc = MC_DP(DP_FWD_NORM, ops_rmsnorm_forward_cuda(NULL, a->xf_b, a->rstdf, a->res + (size_t)m->L * T * H,
                                                     m->cu->p[mc_pidx(m, m->final_norm)].wf, T, H, m->eps, NULL, e));
  if (!rc && a->key[11]) rc = mc_lin_fwd_b(m, &m->cu->lm_head, a->xf_b, T, a->logits_b, e);
  else if (!rc) rc = mc_lin_fwd(m, &m->cu->lm_head, a->xf_b, T, a->logits, e);
  return rc ? rl_err_prefix(e, "model_cuda_forward: ") : 0;
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
