/* model_gpu_test.c — the CUDA model (model/model_cuda.h) against the CPU
 * model and the transformers fixtures; run on the GPU machine from the repo
 * root (reads tests/fixtures/model/).
 *
 *   build/gpu/model_gpu_test      one line per check, exit 1 on any FAIL
 *
 * Error measure (as tests/test_model.c): rel = max|ours − ref| / max|ref| per
 * tensor; log-probs max abs. Both paths round every linear input and output
 * to BF16; the CUDA ops reduce in FP32 where the CPU uses FP64, so a BF16
 * rounding of a linear output can flip by one ulp (2^-8 relative) and carry
 * on. Tolerances:
 *   CUDA vs CPU, BF16 policy:      logits rel ≤ 2e-2, log-probs abs ≤ 4e-2,
 *                                  every gradient rel ≤ 4e-2, loss abs ≤ 2e-3
 *   mxfp8 / nvfp4 (emulated on Hopper: the same quantized bytes, then the
 *     same BF16 GEMM as the CPU's): CUDA vs CPU logits rel ≤ 2e-2
 *   fp8-block: cuBLASLt's native block-scaled FP8 MMA accumulates differently
 *     from the CPU's FP32 sums, and each BF16 flip can move an E4M3 rounding
 *     of the next layer's input, so CUDA and CPU are each compared with the
 *     FP32 oracle: rel(CUDA) ≤ 1.5·rel(CPU) + 1e-2 (measured CUDA vs CPU:
 *     dense 5e-2, MoE 2e-1 where a routing choice flips)
 *   CUDA vs transformers (the CPU test's bounds): FP32 oracle logits rel
 *     ≤ 3e-2, log-probs ≤ 8e-2, loss ≤ 2e-3, gradients ≤ 8e-2; transformers
 *     BF16 logits ≤ 5e-2, log-probs ≤ 1.5e-1; MoE top-k ids equal.
 *   Bitwise: two CUDA runs (logits, log-probs, every gradient); R3 replay of
 *   the routed ids gives the top-k logits and router gradient bit for bit.
 * A random model with head_dim 128 (the attention kernel without padding)
 * runs the same CUDA-vs-CPU comparison. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "state/safetensors.h"

#define FX_ROOT "tests/fixtures/model"

static struct {
  int pass, fail;
} g;

/* Record one check: a line PASS/FAIL with the message. */
static int check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "PASS" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  ok ? g.pass++ : g.fail++;
  return ok;
}

/* Stop on a failed call that the rest depends on. */
#define MUST(call)                                                        \
  do {                                                                    \
    rl_err e_ = {0};                                                      \
    rl_err *e = &e_;                                                      \
    if ((call) != 0) {                                                    \
      printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, e_.msg);  \
      exit(1);                                                            \
    }                                                                     \
    (void)e;                                                              \
  } while (0)

/* max|a−b| / max|b|. */
static double rel_err(const float *a, const float *b, size_t n) {
  double dm = 0, bm = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= dm)) dm = d;
    bm = fmax(bm, fabs((double)b[i]));
  }
  return bm > 0 ? dm / bm : dm;
}

/* max|a−b| over the tokens with a target. */
static double lp_err(const float *a, const float *b, const int32_t *tg, int T) {
  double dm = 0;
  for (int t = 0; t < T; t++)
    if (tg[t] >= 0 && !(fabs((double)a[t] - b[t]) <= dm)) dm = fabs((double)a[t] - b[t]);
  return dm;
}

/* A fixture tensor as FP32 (F32, or I32 converted) / as I32; NULL when absent. */
static void *fx_read(st_file *f, const char *name, size_t *n, int want_i32) {
  const st_tensor *t = st_file_find(f, name);
  rl_err e = {0};
  if (!t || (want_i32 && t->dtype != ST_I32)) return NULL;
  void *raw = rl_xmalloc(t->nbytes + 4);
  if (st_file_read(f, t, raw, &e)) {
    free(raw);
    return NULL;
  }
  if (n) *n = t->numel;
  if (!want_i32 && t->dtype == ST_I32)
    for (size_t i = 0; i < t->numel; i++) ((float *)raw)[i] = (float)((int32_t *)raw)[i];
  return raw;
}

/* What one run produced (host copies). */
typedef struct snap {
  int T, V, np;
  float *logits, *logp;
  float **grads;
  double loss;
} snap;

static void snap_free(snap *s) {
  free(s->logits), free(s->logp);
  for (int i = 0; s->grads && i < s->np; i++) free(s->grads[i]);
  free(s->grads);
  memset(s, 0, sizeof *s);
}

/* Copy m's host gradients into s. */
static void snap_grads(snap *s, model *m) {
  s->np = m->n_params;
  s->grads = rl_xcalloc((size_t)m->n_params, sizeof(float *));
  for (int i = 0; i < m->n_params; i++) {
    size_t n = (size_t)(m->params[i].rows * m->params[i].cols);
    s->grads[i] = rl_xmalloc(n * 4);
    memcpy(s->grads[i], m->params[i].g, n * 4);
  }
}

/* One forward + log-probs + CE backward on the CPU (POLICY mode, policy p). */
static void run_cpu(model *m, const quant_policy *p, const model_batch *b, const int32_t *tg, snap *s) {
  memset(s, 0, sizeof *s);
  s->T = b->T, s->V = m->V;
  MUST(model_quantize(m, p, e));
  model_acts *a = model_acts_new();
  MUST(model_forward(m, b, NULL, a, e));
  s->logits = rl_xmalloc((size_t)b->T * m->V * 4);
  memcpy(s->logits, a->logits, (size_t)b->T * m->V * 4);
  s->logp = rl_xmalloc((size_t)b->T * 4);
  float *dlogp = rl_xmalloc((size_t)b->T * 4);
  MUST(model_logprob_forward(a, tg, 1.0f, s->logp, NULL, e));
  s->loss = model_loss_ce(s->logp, tg, b->T, dlogp);
  model_grads_init(m);
  MUST(model_backward_logprob(m, a, dlogp, NULL, e));
  snap_grads(s, m);
  free(dlogp);
  model_acts_free(a);
}

/* run_gpu's forward is a no_grad one (model_fwd_opts.no_grad) when set. */
static int g_no_grad, g_recompute; /* run_gpu: the forward's no_grad and recompute options */

/* The same on the GPU; ids[l] receives the routed ids of MoE layers (may be NULL). */
static void run_gpu(model *m, const quant_policy *p, const model_batch *b, const int32_t *tg,
                    const int32_t *const *replay, int with_bwd, snap *s, int32_t **ids) {
  memset(s, 0, sizeof *s);
  s->T = b->T, s->V = m->V;
  MUST(model_cuda_init(m, e));
  MUST(model_cuda_quantize(m, p, e));
  model_cuda_acts *a = model_cuda_acts_new();
  model_fwd_opts fo = {.replay_ids = replay, .no_grad = g_no_grad, .recompute = g_recompute};
  MUST(model_cuda_forward(m, b, &fo, a, e));
  s->logits = rl_xmalloc((size_t)b->T * m->V * 4);
  MUST(model_cuda_logits_to_host(a, s->logits, e));
  s->logp = rl_xmalloc((size_t)b->T * 4);
  float *dlogp = rl_xmalloc((size_t)b->T * 4);
  MUST(model_cuda_logprob_forward(m, a, tg, 1.0f, s->logp, NULL, e));
  s->loss = model_loss_ce(s->logp, tg, b->T, dlogp);
  for (int l = 0; ids && l < m->L; l++) {
    const int32_t *r = model_cuda_routed_ids(a, l);
    ids[l] = NULL;
    if (m->layers[l].moe && r) {
      ids[l] = rl_xmalloc((size_t)b->T * m->topk * 4);
      memcpy(ids[l], r, (size_t)b->T * m->topk * 4);
    }
  }
  if (g_no_grad) { /* one layer's activations were kept: the backward must refuse, naming why */
    MUST(model_cuda_grads_zero(m, e));
    rl_err e2 = {0};
    int rc = model_cuda_backward_logprob(m, a, dlogp, NULL, &e2);
    check(rc == RL_EXIT_USAGE && strstr(e2.msg, "no_grad"), "backward after a no_grad forward refused (rc %d: %s)", rc,
          e2.msg);
  }
  if (with_bwd && !g_no_grad) {
    MUST(model_cuda_grads_zero(m, e));
    MUST(model_cuda_backward_logprob(m, a, dlogp, NULL, e));
    MUST(model_cuda_sync(e));
    MUST(model_cuda_grads_to_host(m, e));
    snap_grads(s, m);
  }
  free(dlogp);
  model_cuda_acts_free(a);
}

/* GPU snapshot x against reference r: logits, log-probs, loss, each gradient. */
static void cmp_snap(const char *label, model *m, const snap *x, const snap *r, const int32_t *tg, double tl,
                     double tlp, double tg_rel, double tloss) {
  size_t n = (size_t)x->T * x->V;
  double le = rel_err(x->logits, r->logits, n), lpe = lp_err(x->logp, r->logp, tg, x->T);
  check(le <= tl, "%s: logits rel %.2e (tol %.0e)", label, le, tl);
  check(lpe <= tlp, "%s: log-probs max abs %.2e (tol %.0e)", label, lpe, tlp);
  check(fabs(x->loss - r->loss) <= tloss, "%s: loss %.7f vs %.7f (tol %.0e)", label, x->loss, r->loss, tloss);
  if (!x->grads || !r->grads) return;
  double worst = 0;
  int wi = 0, bad = 0;
  for (int i = 0; i < m->n_params; i++) {
    double ge = rel_err(x->grads[i], r->grads[i], (size_t)(m->params[i].rows * m->params[i].cols));
    if (ge > tg_rel) bad++, printf("     %s rel %.2e\n", m->params[i].name, ge);
    if (ge > worst) worst = ge, wi = i;
  }
  check(bad == 0, "%s: %d gradients, worst %s rel %.2e (tol %.0e)", label, m->n_params, m->params[wi].name, worst,
        tg_rel);
}

/* Bitwise equality of two snapshots. */
static void cmp_bitwise(const char *label, const model *m, const snap *a, const snap *b) {
  int same = !memcmp(a->logits, b->logits, (size_t)a->T * a->V * 4) && !memcmp(a->logp, b->logp, (size_t)a->T * 4);
  int gdiff = 0;
  for (int i = 0; a->grads && b->grads && i < a->np; i++) {
    size_t n = (size_t)(m->params[i].rows * m->params[i].cols), nd = 0, first = 0;
    for (size_t j = 0; j < n; j++)
      if (memcmp(&a->grads[i][j], &b->grads[i][j], 4) && !nd++) first = j;
    if (nd) /* name what differs */
      printf("     %s: %zu of %zu differ, first at %zu: %.9g vs %.9g\n", m->params[i].name, nd, n, first,
             (double)a->grads[i][first], (double)b->grads[i][first]);
    gdiff += nd != 0;
  }
  check(same && gdiff == 0, "%s: two CUDA runs bitwise equal (logits, log-probs, %d gradients; %d differ)", label, a->np,
        gdiff);
}

/* The fixture test of one model directory: CUDA vs CPU, vs transformers, determinism. */
static void test_fixture(const char *name) {
  char path[512];
  st_file *f = NULL;
  snprintf(path, sizeof path, FX_ROOT "/%s/fixtures.safetensors", name);
  MUST(st_file_open(path, &f, e));
  snprintf(path, sizeof path, FX_ROOT "/%s/hf", name);
  model *m = NULL;
  MUST(model_load(path, NULL, &m, e));
  size_t nt = 0, no = 0;
  int32_t *tok = fx_read(f, "tokens", &nt, 1), *off = fx_read(f, "seq_off", &no, 1);
  int32_t *tg = fx_read(f, "targets", NULL, 1);
  if (!tok || !off || !tg) {
    check(0, "%s: fixture lacks tokens/seq_off/targets", name);
    exit(1);
  }
  model_batch b = {(int)nt, tok, {(int)no - 1, off}};
  quant_policy bf;
  quant_policy_init(&bf, QFMT_BF16, QFMT_BF16);
  snap c, x, x2;
  int32_t *ids[64] = {0};
  char lab[128];
  run_cpu(m, &bf, &b, tg, &c);
  run_gpu(m, &bf, &b, tg, NULL, 1, &x, ids);
  snprintf(lab, sizeof lab, "%s bf16 cuda vs cpu", name);
  cmp_snap(lab, m, &x, &c, tg, 2e-2, 4e-2, 4e-2, 2e-3);
  /* vs transformers */
  snap ref = {x.T, x.V, 0, NULL, NULL, NULL, 0};
  ref.logits = fx_read(f, "logits", NULL, 0), ref.logp = fx_read(f, "logprobs", NULL, 0);
  float *loss = fx_read(f, "loss", NULL, 0);
  ref.np = m->n_params, ref.grads = rl_xcalloc((size_t)m->n_params, sizeof(float *));
  int missing = !ref.logits || !ref.logp || !loss;
  for (int i = 0; i < m->n_params; i++) {
    char nm[160];
    snprintf(nm, sizeof nm, "grad.%s", m->params[i].name);
    missing += !(ref.grads[i] = fx_read(f, nm, NULL, 0));
  }
  if (!check(!missing, "%s: fixture has logits, log-probs, loss and %d gradients", name, m->n_params)) exit(1);
  ref.loss = loss[0];
  snprintf(lab, sizeof lab, "%s bf16 cuda vs transformers fp32", name);
  cmp_snap(lab, m, &x, &ref, tg, 3e-2, 8e-2, 8e-2, 2e-3);
  float *lb = fx_read(f, "logits_bf16", NULL, 0), *lpb = fx_read(f, "logprobs_bf16", NULL, 0);
  if (lb && lpb) {
    double le = rel_err(x.logits, lb, (size_t)x.T * x.V), lpe = lp_err(x.logp, lpb, tg, x.T);
    check(le <= 5e-2 && lpe <= 1.5e-1, "%s bf16 cuda vs transformers bf16: logits rel %.2e (tol 5e-2), log-probs %.2e (tol 1.5e-1)",
          name, le, lpe);
  }
  free(lb), free(lpb), free(loss);
  /* MoE: ids equal the fixture's; R3 replay is bitwise the top-k run */
  for (int l = 0; l < m->L; l++) {
    if (!m->layers[l].moe) continue;
    char nm[64];
    snprintf(nm, sizeof nm, "topk_ids.layer.%d", l);
    size_t n = 0;
    int32_t *fid = fx_read(f, nm, &n, 1);
    int bad = 0;
    for (size_t i = 0; fid && ids[l] && i < n; i++) bad += fid[i] != ids[l][i];
    check(fid && ids[l] && bad == 0, "%s layer %d: CUDA top-%d ids equal transformers' (%d of %zu differ)", name, l,
          m->topk, bad, n);
    free(fid);
  }
  if (m->E > 0) {
    snap r3;
    run_gpu(m, &bf, &b, tg, (const int32_t *const *)ids, 1, &r3, NULL);
    int rg = -1;
    for (int i = 0; i < m->n_params; i++)
      if (strstr(m->params[i].name, ".mlp.gate.weight")) rg = i;
    int same = !memcmp(r3.logits, x.logits, (size_t)x.T * x.V * 4) && rg >= 0 &&
               !memcmp(r3.grads[rg], x.grads[rg], (size_t)(m->params[rg].rows * m->params[rg].cols) * 4);
    check(same, "%s: R3 replay of the routed ids = top-k run bitwise (logits and router gradient %s)", name,
          rg >= 0 ? m->params[rg].name : "?");
    snap_free(&r3);
  }
  /* determinism */
  run_gpu(m, &bf, &b, tg, NULL, 1, &x2, NULL);
  snprintf(lab, sizeof lab, "%s bf16", name);
  cmp_bitwise(lab, m, &x, &x2);
  snap_free(&x2);
  /* the BF16 flow (default: GEMM outputs and backward dY/dX stay BF16) gives the FP32 flow's bits */
  setenv("RLRUN_MODEL_FP32_FLOW", "1", 1);
  run_gpu(m, &bf, &b, tg, NULL, 1, &x2, NULL);
  unsetenv("RLRUN_MODEL_FP32_FLOW");
  snprintf(lab, sizeof lab, "%s bf16 (FP32 flow vs BF16 flow)", name);
  cmp_bitwise(lab, m, &x, &x2);
  snap_free(&x2);
  /* a no_grad forward (one layer's activations for all) gives the same logits and log-probs */
  g_no_grad = 1;
  run_gpu(m, &bf, &b, tg, NULL, 0, &x2, NULL);
  g_no_grad = 0;
  snprintf(lab, sizeof lab, "%s bf16 (no_grad forward vs full)", name);
  cmp_bitwise(lab, m, &x, &x2);
  snap_free(&x2);
  /* activation recomputation: one layer's activations, each re-run in the backward — the same bits */
  g_recompute = 1;
  run_gpu(m, &bf, &b, tg, NULL, 1, &x2, NULL);
  snprintf(lab, sizeof lab, "%s bf16 (recompute vs keep all)", name);
  cmp_bitwise(lab, m, &x, &x2);
  snap_free(&x2);
  setenv("RLRUN_MODEL_FP32_FLOW", "1", 1);
  run_gpu(m, &bf, &b, tg, NULL, 1, &x2, NULL);
  unsetenv("RLRUN_MODEL_FP32_FLOW");
  g_recompute = 0;
  snprintf(lab, sizeof lab, "%s bf16 (recompute, FP32 flow vs keep all)", name);
  cmp_bitwise(lab, m, &x, &x2);
  snap_free(&x2);
  { /* native fp8-block forward and backward: the two flows bitwise too */
    quant_policy fq;
    quant_policy_init(&fq, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
    snap f1, f2;
    run_gpu(m, &fq, &b, tg, NULL, 1, &f1, NULL);
    setenv("RLRUN_MODEL_FP32_FLOW", "1", 1);
    run_gpu(m, &fq, &b, tg, NULL, 1, &f2, NULL);
    unsetenv("RLRUN_MODEL_FP32_FLOW");
    snprintf(lab, sizeof lab, "%s fp8-block (FP32 flow vs BF16 flow)", name);
    cmp_bitwise(lab, m, &f1, &f2);
    snap_free(&f1), snap_free(&f2);
  }
  /* quantized policies: forward only, CUDA vs CPU on the same quantized bytes */
  qformat fmts[3] = {QFMT_FP8_BLOCK, QFMT_MXFP8, QFMT_NVFP4};
  for (int i = 0; i < 3; i++) {
    if (fmts[i] == QFMT_NVFP4 && m->E == 0) continue;
    quant_policy qp;
    quant_policy_init(&qp, fmts[i] == QFMT_NVFP4 ? QFMT_BF16 : fmts[i], fmts[i]);
    qp.emulate = 1;
    snap cq, xq;
    run_cpu(m, &qp, &b, tg, &cq);
    run_gpu(m, &qp, &b, tg, NULL, 0, &xq, NULL);
    size_t n = (size_t)xq.T * xq.V;
    double le = rel_err(xq.logits, cq.logits, n), xe = rel_err(xq.logits, ref.logits, n);
    double ce = rel_err(cq.logits, ref.logits, n);
    if (fmts[i] == QFMT_FP8_BLOCK) /* native FP8 MMA vs the CPU's FP32 sums: compare each to the oracle */
      check(xe <= 1.5 * ce + 1e-2, "%s fp8-block: logits vs transformers fp32: CUDA rel %.2e, CPU rel %.2e (tol 1.5 x CPU + 1e-2); CUDA vs CPU %.2e",
            name, xe, ce, le);
    else /* emulated: the same BF16 GEMM on the same bytes */
      check(le <= 2e-2, "%s %s (emulated): CUDA vs CPU logits rel %.2e (tol 2e-2); vs transformers fp32 CUDA %.2e, CPU %.2e",
            name, qtensor_format_name(fmts[i]), le, xe, ce);
    snap_free(&cq), snap_free(&xq);
  }
  for (int l = 0; l < 64; l++) free(ids[l]);
  snap_free(&c), snap_free(&x), snap_free(&ref);
  free(tok), free(off), free(tg);
  model_free(m);
  st_file_close(f);
}

/* Uniform in [lo, hi) from a xorshift state. */
static float frand(uint64_t *s, float lo, float hi) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return lo + (hi - lo) * (float)((double)(*s >> 11) / 9007199254740992.0);
}

/* A random dense model with head_dim 128 against the CPU (no attention padding). */
static void test_hd128(void) {
  model_config c;
  memset(&c, 0, sizeof c);
  c.kind = MODEL_KIND_QWEN3;
  snprintf(c.model_type, sizeof c.model_type, "qwen3");
  snprintf(c.rope_type, sizeof c.rope_type, "default");
  snprintf(c.hidden_act, sizeof c.hidden_act, "silu");
  c.vocab_size = 1000, c.hidden_size = 256, c.intermediate_size = 512, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 128;
  c.max_position_embeddings = 4096, c.rms_norm_eps = 1e-6, c.rope_theta = 1e6, c.rope_factor = 1;
  c.tie_word_embeddings = 1;
  model *m = NULL;
  MUST(model_create(&c, NULL, &m, e));
  uint64_t s = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    float a = p->cols == 1 ? 0 : sqrtf(3.0f / (float)p->cols);
    float *w = rl_xmalloc((size_t)(p->rows * p->cols) * 4);
    for (int64_t j = 0; j < p->rows * p->cols; j++) w[j] = p->cols == 1 ? frand(&s, 0.5f, 1.5f) : frand(&s, -a, a);
    ops_bf16_from_f32_cpu(p->w, w, (size_t)(p->rows * p->cols));
    free(w);
  }
  int T = 300;
  int32_t *tok = rl_xmalloc((size_t)T * 4), *tg = rl_xmalloc((size_t)T * 4), off[4] = {0, 200, 237, 300};
  for (int t = 0; t < T; t++) tok[t] = (int32_t)(frand(&s, 0, 1) * 1000) % 1000;
  model_batch b = {T, tok, {3, off}};
  model_targets_next(tok, &b.seqs, T, tg);
  quant_policy bf;
  quant_policy_init(&bf, QFMT_BF16, QFMT_BF16);
  snap cs, xs, xs2;
  run_cpu(m, &bf, &b, tg, &cs);
  run_gpu(m, &bf, &b, tg, NULL, 1, &xs, NULL);
  cmp_snap("random hd128 bf16 cuda vs cpu", m, &xs, &cs, tg, 2e-2, 4e-2, 4e-2, 2e-3);
  run_gpu(m, &bf, &b, tg, NULL, 1, &xs2, NULL);
  cmp_bitwise("random hd128 bf16", m, &xs, &xs2);
  snap_free(&xs2);
  /* head_dim 128: the BF16 flow hands BF16 q, k, v to the tensor-core attention — still the FP32 flow's bits,
   * with and without recomputation */
  setenv("RLRUN_MODEL_FP32_FLOW", "1", 1);
  run_gpu(m, &bf, &b, tg, NULL, 1, &xs2, NULL);
  unsetenv("RLRUN_MODEL_FP32_FLOW");
  cmp_bitwise("random hd128 bf16 (FP32 flow vs BF16 flow)", m, &xs, &xs2);
  snap_free(&xs2);
  g_recompute = 1;
  run_gpu(m, &bf, &b, tg, NULL, 1, &xs2, NULL);
  g_recompute = 0;
  cmp_bitwise("random hd128 bf16 (recompute vs keep all)", m, &xs, &xs2);
  snap_free(&cs), snap_free(&xs), snap_free(&xs2);
  free(tok), free(tg);
  model_free(m);
}

int main(int argc, char **argv) {
  (void)argc, (void)argv;
#if !RLRUN_CUDA
  printf("SKIP model_gpu_test: this binary was built without CUDA\n");
  return 0;
#endif
  /* These tolerances assume the FP32 attention of the CPU model: pin the SIMT kernels unless
   * RLRUN_ATTN asks otherwise (the BF16 tensor-core default is checked in ops_gpu_test). */
  if (!getenv("RLRUN_ATTN")) ops_attention_set_impl(OPS_ATTN_SIMT);
  test_fixture("qwen3");
  test_fixture("qwen3_moe");
  test_hd128();
  linear_release();
  printf("model_gpu_test: %d passed, %d failed\n", g.pass, g.fail);
  return g.fail ? 1 : 0;
}
