/* ops_gpu_test.c — every CUDA operator of ops.h against its CPU reference
 * (ops_cpu.c), forward and backward, on random inputs; run on the GPU machine.
 *
 *   build/gpu/ops_gpu_test        one line per check, exit 1 on any FAIL
 *
 * Tolerances (the CUDA reductions are FP32, the reference's FP64; "rel" is
 * relative to the tensor's largest |value|, per element |gpu − cpu| ≤ tol·max):
 *   bitwise       BF16 conversions, embedding (+ scatter-add backward), RoPE
 *                 (the table too), residual sum h, router top-k ids (except at
 *                 near-ties, |Δp| < 1e-6), replayed-weights for equal probs
 *   rel 2e-6      RMSNorm / QK-norm y, rstd, SwiGLU, router probs and weights
 *   rel 2e-5      attention out and lse, log-softmax lse / log-prob, entropy
 *   rel 1e-4      all backward tensors (dx, dw, dq, dk, dv, dlogits, dgate)
 *   BF16 copies   within one BF16 ulp of the reference's copy
 * Attention runs twice, with each kernel set (ops_attention_set_impl): the FP32
 * SIMT kernels to the tolerances above, the BF16 tensor-core kernels (OPS_ATTN_TC:
 * BF16 q, k, v, dout, P, dS operands, FP32 accumulation) to BF16-operand ones:
 *   rel 2e-2      TC out, dq, dk, dv;   rel 5e-3  TC lse
 * (a numpy emulation of those roundings on these inputs gives out 5.5e-3, lse
 * 1.1e-3, dq 5.0e-3, dk 4.9e-3, dv 2.6e-3 at worst; an indexing error is O(1)).
 * plus: two runs bitwise equal (determinism), a sequence alone == the same
 * sequence inside a packed batch (bitwise), and the grid hint max_len = 1 ==
 * the real one (bitwise). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/formats.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

#if RLRUN_CUDA
#include <cuda_runtime.h>

#include "tests/cuda_check.h" /* CU */

/* Counts of the whole run. */
static struct {
  int pass, fail;
  uint64_t rng;
} g = {0, 0, 88172645463325252ull};

/* An ops call that must succeed. */
#define OK(call)                                                                   \
  do {                                                                             \
    rl_err e_ = {0};                                                               \
    rl_err *e = &e_;                                                               \
    if ((call) != 0) {                                                             \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, e_.msg); \
      exit(3);                                                                     \
    }                                                                              \
    (void)e;                                                                       \
  } while (0)

/* Uniform in [-1, 1). */
static float urand(void) {
  g.rng ^= g.rng << 13, g.rng ^= g.rng >> 7, g.rng ^= g.rng << 17;
  return (float)((double)(g.rng >> 11) / 4503599627370496.0 - 1.0);
}
static float *randv(size_t n, float scale) {
  float *p = rl_xmalloc(n * sizeof(float) + 4);
  for (size_t i = 0; i < n; i++) p[i] = urand() * scale;
  return p;
}
static void *dup_dev(const void *h, size_t bytes) {
  void *d = NULL;
  CU(cudaMalloc(&d, bytes ? bytes : 4));
  if (bytes && h) CU(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  else if (bytes) CU(cudaMemset(d, 0, bytes)); /* an output buffer: no host copy */
  return d;
}
static void *get(const void *d, size_t bytes) {
  void *h = rl_xmalloc(bytes ? bytes : 4);
  CU(cudaDeviceSynchronize());
  if (bytes) CU(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
  return h;
}

static void verdict(int ok, const char *what, const char *detail) {
  printf("%s %-44s %s\n", ok ? "PASS" : "FAIL", what, detail);
  if (ok) g.pass++;
  else g.fail++;
}

/* |got − want| ≤ tol·max|want| element-wise (NaN must meet NaN). */
static void cmp(const char *what, const float *got, const float *want, size_t n, double tol) {
  double mx = 0, worst = 0;
  size_t wi = 0, bad = 0;
  for (size_t i = 0; i < n; i++)
    if (isfinite(want[i]) && fabs(want[i]) > mx) mx = fabs(want[i]);
  for (size_t i = 0; i < n; i++) {
    double d = isnan(want[i]) ? (isnan(got[i]) ? 0 : INFINITY) : fabs((double)got[i] - want[i]);
    if (!(d <= tol * mx)) bad++;
    if (!(d <= worst)) worst = d, wi = i;
  }
  char buf[200];
  snprintf(buf, sizeof buf, "n=%zu max|ref|=%.3g worst %.2e (rel %.2e, tol %.0e) at %zu: %.8g vs %.8g", n, mx,
           worst, mx > 0 ? worst / mx : worst, tol, wi, n ? (double)got[wi] : 0.0, n ? (double)want[wi] : 0.0);
  verdict(bad == 0, what, buf);
}

/* Byte-for-byte equality. */
static void same(const char *what, const void *a, const void *b, size_t bytes) {
  const uint8_t *x = a, *y = b;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < bytes; i++)
    if (x[i] != y[i] && !bad++) first = i;
  char buf[120];
  snprintf(buf, sizeof buf, "%zu bytes, %zu differ (first at byte %zu)", bytes, bad, first);
  verdict(bad == 0, what, buf);
}

/* BF16 copies: within one BF16 ulp of each other. */
static void cmp_bf16(const char *what, const uint16_t *got, const uint16_t *want, size_t n) {
  size_t bad = 0, exact = 0;
  for (size_t i = 0; i < n; i++) {
    int d = (int)got[i] - (int)want[i];
    exact += d == 0;
    bad += d < -1 || d > 1;
  }
  char buf[120];
  snprintf(buf, sizeof buf, "n=%zu identical %zu, off by 1 ulp %zu, worse %zu", n, exact, n - exact - bad, bad);
  verdict(bad == 0, what, buf);
}

/* ---------------------------------------------------------------- element-wise, embedding */

static void test_bf16_and_embedding(void) {
  size_t n = 100003;
  float *x = randv(n, 1e3f);
  x[0] = INFINITY, x[1] = -INFINITY, x[2] = NAN, x[3] = 1e-40f, x[4] = 3.3895314e38f;
  float *dx = dup_dev(x, n * 4);
  uint16_t *db = dup_dev(NULL, n * 2), *hb = rl_xmalloc(n * 2);
  OK(ops_bf16_from_f32_cuda(db, dx, n, NULL, e));
  ops_bf16_from_f32_cpu(hb, x, n);
  uint16_t *gb = get(db, n * 2);
  same("bf16_from_f32 (incl. Inf/NaN/subnormal)", gb, hb, n * 2);
  float *hf = rl_xmalloc(n * 4);
  OK(ops_f32_from_bf16_cuda(dx, db, n, NULL, e));
  ops_f32_from_bf16_cpu(hf, hb, n);
  float *gf = get(dx, n * 4);
  same("f32_from_bf16", gf, hf, n * 4);
  free(gf), free(gb), free(hf), free(hb), free(x);
  CU(cudaFree(dx)); CU(cudaFree(db));

  int T = 1000, V = 500, H = 1024;
  int32_t *tok = rl_xmalloc(T * 4);
  for (int t = 0; t < T; t++) tok[t] = (int32_t)((urand() + 1) * 0.5f * (t % 3 ? 40 : V)) % V; /* many repeats */
  float *tab = randv((size_t)V * H, 1), *dout = randv((size_t)T * H, 1), *dtab = randv((size_t)V * H, 1);
  uint16_t *tb = rl_xmalloc((size_t)V * H * 2);
  ops_bf16_from_f32_cpu(tb, tab, (size_t)V * H);
  int32_t *dtok = dup_dev(tok, T * 4);
  float *dtabd = dup_dev(tab, (size_t)V * H * 4), *dout_d = dup_dev(dout, (size_t)T * H * 4);
  float *dtab_d = dup_dev(dtab, (size_t)V * H * 4), *out_d = dup_dev(NULL, (size_t)T * H * 4);
  uint16_t *tb_d = dup_dev(tb, (size_t)V * H * 2);
  float *ref = rl_xmalloc((size_t)T * H * 4);
  rl_err e0;
  OK(ops_embedding_forward_cuda(out_d, dtabd, dtok, T, V, H, NULL, e));
  ops_embedding_forward_cpu(ref, tab, tok, T, V, H, &e0);
  float *got = get(out_d, (size_t)T * H * 4);
  same("embedding forward (FP32 table)", got, ref, (size_t)T * H * 4);
  free(got);
  OK(ops_embedding_forward_bf16_cuda(out_d, tb_d, dtok, T, V, H, NULL, e));
  ops_embedding_forward_bf16_cpu(ref, tb, tok, T, V, H, &e0);
  got = get(out_d, (size_t)T * H * 4);
  same("embedding forward (BF16 table)", got, ref, (size_t)T * H * 4);
  free(got);
  OK(ops_embedding_backward_cuda(dtab_d, dout_d, dtok, T, V, H, NULL, e));
  ops_embedding_backward_cpu(dtab, dout, tok, T, V, H, &e0);
  got = get(dtab_d, (size_t)V * H * 4);
  same("embedding backward (token-order scatter-add)", got, dtab, (size_t)V * H * 4);
  free(got);
  /* A bad id: NaN row, and the checker names it. */
  tok[17] = V + 3;
  CU(cudaMemcpy(dtok, tok, T * 4, cudaMemcpyHostToDevice));
  rl_err e1 = {0};
  int rc = ops_ids_check_cuda(dtok, T, 0, V, "embedding", NULL, &e1);
  OK(ops_embedding_forward_cuda(out_d, dtabd, dtok, T, V, H, NULL, e));
  got = get(out_d, (size_t)T * H * 4);
  char buf[2200];
  snprintf(buf, sizeof buf, "rc %d: %s; row 17 %g", rc, e1.msg, (double)got[17 * H]);
  verdict(rc == RL_EXIT_USAGE && strstr(e1.msg, "id 503 at position 17") && isnan(got[17 * H]) &&
              got[16 * H] == tab[(size_t)tok[16] * H],
          "bad token id: checker error + NaN row", buf);
  free(got), free(tok), free(tab), free(dout), free(dtab), free(tb), free(ref);
  CU(cudaFree(dtok)); CU(cudaFree(dtabd)); CU(cudaFree(dout_d)); CU(cudaFree(dtab_d)); CU(cudaFree(out_d));
  CU(cudaFree(tb_d));
}

/* ---------------------------------------------------------------- RMSNorm */

static void test_rmsnorm(int rows, int dim) {
  char name[96];
  size_t n = (size_t)rows * dim;
  float *x = randv(n, 2), *r = randv(n, 2), *w = randv(dim, 1.5f), *dy = randv(n, 1), *dw0 = randv(dim, 1);
  float *dx_ = dup_dev(x, n * 4), *dr = dup_dev(r, n * 4), *dw_ = dup_dev(w, dim * 4), *ddy = dup_dev(dy, n * 4);
  float *dy_out = dup_dev(NULL, n * 4), *dh = dup_dev(NULL, n * 4), *drs = dup_dev(NULL, rows * 4);
  float *ddw = dup_dev(dw0, dim * 4), *ddx = dup_dev(NULL, n * 4);
  uint16_t *dyb = dup_dev(NULL, n * 2);
  float *y = rl_xmalloc(n * 4), *h = rl_xmalloc(n * 4), *rs = rl_xmalloc(rows * 4), *dx = rl_xmalloc(n * 4);
  float *dw = rl_xmalloc(dim * 4);
  uint16_t *yb = rl_xmalloc(n * 2);
  memcpy(dw, dw0, dim * 4);

  OK(ops_rmsnorm_forward_cuda(dy_out, dyb, drs, dx_, dw_, rows, dim, 1e-6f, NULL, e));
  ops_rmsnorm_forward_cpu(y, yb, rs, x, w, rows, dim, 1e-6f);
  float *gy = get(dy_out, n * 4), *grs = get(drs, rows * 4);
  uint16_t *gyb = get(dyb, n * 2);
  snprintf(name, sizeof name, "rmsnorm fwd y %dx%d", rows, dim);
  cmp(name, gy, y, n, 2e-6);
  snprintf(name, sizeof name, "rmsnorm fwd rstd %dx%d", rows, dim);
  cmp(name, grs, rs, rows, 2e-6);
  snprintf(name, sizeof name, "rmsnorm fwd y_bf16 %dx%d", rows, dim);
  cmp_bf16(name, gyb, yb, n);
  free(gy), free(grs), free(gyb);

  OK(ops_rmsnorm_backward_cuda(ddx, ddw, ddy, dx_, dw_, drs, rows, dim, NULL, e));
  ops_rmsnorm_backward_cpu(dx, dw, dy, x, w, rs, rows, dim);
  float *gdx = get(ddx, n * 4), *gdw = get(ddw, dim * 4);
  snprintf(name, sizeof name, "rmsnorm bwd dx %dx%d", rows, dim);
  cmp(name, gdx, dx, n, 1e-4);
  snprintf(name, sizeof name, "rmsnorm bwd dw (accumulated) %dx%d", rows, dim);
  cmp(name, gdw, dw, dim, 1e-4);
  /* determinism: the same dw increment again */
  CU(cudaMemcpy(ddw, dw0, dim * 4, cudaMemcpyHostToDevice));
  OK(ops_rmsnorm_backward_cuda(ddx, ddw, ddy, dx_, dw_, drs, rows, dim, NULL, e));
  float *gdw2 = get(ddw, dim * 4);
  snprintf(name, sizeof name, "rmsnorm bwd dw two runs bitwise %dx%d", rows, dim);
  same(name, gdw2, gdw, dim * 4);
  free(gdx), free(gdw), free(gdw2);

  /* fused residual: h = r + x (bitwise), y, and dresid += */
  OK(ops_residual_rmsnorm_forward_cuda(dh, dy_out, dyb, drs, dr, dx_, dw_, rows, dim, 1e-6f, NULL, e));
  ops_residual_rmsnorm_forward_cpu(h, y, yb, rs, r, x, w, rows, dim, 1e-6f);
  float *gh = get(dh, n * 4);
  gy = get(dy_out, n * 4);
  snprintf(name, sizeof name, "residual+rmsnorm h %dx%d", rows, dim);
  same(name, gh, h, n * 4);
  snprintf(name, sizeof name, "residual+rmsnorm y %dx%d", rows, dim);
  cmp(name, gy, y, n, 2e-6);
  CU(cudaMemcpy(ddx, r, n * 4, cudaMemcpyHostToDevice)); /* dresid starts as r */
  memcpy(dx, r, n * 4);
  OK(ops_residual_rmsnorm_backward_cuda(ddx, NULL, ddy, dh, dw_, drs, rows, dim, NULL, e));
  ops_residual_rmsnorm_backward_cpu(dx, NULL, dy, h, w, rs, rows, dim);
  gdx = get(ddx, n * 4);
  snprintf(name, sizeof name, "residual+rmsnorm bwd dresid += %dx%d", rows, dim);
  cmp(name, gdx, dx, n, 1e-4);
  free(gdx), free(gh), free(gy);
  free(x), free(r), free(w), free(dy), free(dw0), free(y), free(h), free(rs), free(dx), free(dw), free(yb);
  CU(cudaFree(dx_)); CU(cudaFree(dr)); CU(cudaFree(dw_)); CU(cudaFree(ddy)); CU(cudaFree(dy_out));
  CU(cudaFree(dh)); CU(cudaFree(drs)); CU(cudaFree(ddw)); CU(cudaFree(ddx)); CU(cudaFree(dyb));
}

/* The RMSNorm forwards with an fp8-block output (ops_rmsnorm_forward_q8_cuda)
 * against the plain forward then quant_fp8_block_act_cuda into cuBLASLt's layout
 * (what linear_forward does, pad rows zeroed): h, rstd, y_bf16 and the codes and
 * scales byte for byte, pad rows included (the buffers start as garbage). mode 0:
 * plain norm of FP32 x; 1: residual + norm, FP32 x; 2: residual, BF16 x. Under
 * both E4M3 codecs and both scale forms. special: row 1 all zero (scale 1), the
 * second 128-block's weights ~1e-38 (the 2^-149 scale floor), row 2 with an Inf
 * in x (a NaN row: every block's scale NaN, codes 0), w[5] = Inf (block 0 NaN or Inf). */
static void test_rmsnorm_q8(int rows, int dim, int mode, int special) {
  char name[160];
  const size_t n = (size_t)rows * dim;
  const int pad = (rows + 7) / 8 * 8, nb = (dim + 127) / 128;
  float *x = randv(n, 2), *r = randv(n, 2), *w = randv(dim, 1.5f);
  if (special) {
    if (rows > 1) memset(x + dim, 0, (size_t)dim * 4), memset(r + dim, 0, (size_t)dim * 4);
    for (int i = 128; i < 256 && i < dim; i++) w[i] *= 1e-38f;
    if (rows > 2) x[2 * (size_t)dim + 7] = INFINITY;
    if (dim > 5) w[5] = INFINITY;
  }
  uint16_t *xb = rl_xmalloc(n * 2);
  for (size_t i = 0; i < n; i++) xb[i] = fmt_bf16_from_f32(x[i]);
  float *dxf = dup_dev(x, n * 4), *dr = dup_dev(r, n * 4), *dw = dup_dev(w, (size_t)dim * 4);
  uint16_t *dxb = dup_dev(xb, n * 2);
  float *dh0 = dup_dev(NULL, n * 4), *dh1 = dup_dev(NULL, n * 4), *drs0 = dup_dev(NULL, rows * 4),
        *drs1 = dup_dev(NULL, rows * 4), *ds0 = dup_dev(NULL, (size_t)nb * pad * 4), *ds1 = dup_dev(NULL, (size_t)nb * pad * 4);
  uint16_t *dyb0 = dup_dev(NULL, n * 2), *dyb1 = dup_dev(NULL, n * 2);
  uint8_t *dq0 = dup_dev(NULL, (size_t)pad * dim), *dq1 = dup_dev(NULL, (size_t)pad * dim);
  static const char *const mname[3] = {"plain, FP32 x", "residual, FP32 x", "residual, BF16 x"};
  for (int v = 0; v < 4; v++) {
    const int ue8m0 = v & 1, soft = v >> 1;
    quant_cuda_set_hw_cvt(!soft);
    /* the reference: the norm, then linear_forward's quantization of its BF16 output */
    CU(cudaMemset(dq0, 0, (size_t)pad * dim));
    CU(cudaMemset(ds0, 0, (size_t)nb * pad * 4));
    if (mode == 0) OK(ops_rmsnorm_forward_cuda(NULL, dyb0, drs0, dxf, dw, rows, dim, 1e-6f, NULL, e));
    else if (mode == 1) OK(ops_residual_rmsnorm_forward_cuda(dh0, NULL, dyb0, drs0, dr, dxf, dw, rows, dim, 1e-6f, NULL, e));
    else OK(ops_residual_rmsnorm_forward_bx_cuda(dh0, NULL, dyb0, drs0, dr, dxb, dw, rows, dim, 1e-6f, NULL, e));
    quant_opts qo = {0};
    qo.ue8m0 = ue8m0, qo.scale_layout = QLAYOUT_HOPPER_ACT, qo.scale_ld = pad;
    OK(quant_fp8_block_act_cuda(dyb0, rows, dim, dq0, ds0, &qo, NULL, NULL, e));
    /* the fused forward over garbage */
    CU(cudaMemset(dq1, 0xA7, (size_t)pad * dim));
    CU(cudaMemset(ds1, 0x5B, (size_t)nb * pad * 4));
    CU(cudaMemset(dyb1, 0x33, n * 2));
    const ops_fp8_act qa = {dq1, ds1, pad, pad, ue8m0};
    OK(ops_rmsnorm_forward_q8_cuda(mode ? dh1 : NULL, dyb1, drs1, mode ? dr : NULL, mode == 2 ? NULL : dxf,
                                   mode == 2 ? dxb : NULL, dw, rows, dim, 1e-6f, &qa, NULL, e));
    uint8_t *q0 = get(dq0, (size_t)pad * dim), *q1 = get(dq1, (size_t)pad * dim);
    float *s0 = get(ds0, (size_t)nb * pad * 4), *s1 = get(ds1, (size_t)nb * pad * 4);
    uint16_t *y0 = get(dyb0, n * 2), *y1 = get(dyb1, n * 2);
    float *r0 = get(drs0, rows * 4), *r1 = get(drs1, rows * 4);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)pad * dim; i++) bad += q0[i] != q1[i];
    bad += memcmp(s0, s1, (size_t)nb * pad * 4) != 0;
    bad += memcmp(y0, y1, n * 2) != 0;
    bad += memcmp(r0, r1, rows * 4) != 0;
    if (mode) {
      float *h0 = get(dh0, n * 4), *h1 = get(dh1, n * 4);
      bad += memcmp(h0, h1, n * 4) != 0;
      free(h0), free(h1);
    }
    size_t nan_s = 0, floor_s = 0;
    for (size_t i = 0; i < (size_t)nb * pad; i++) nan_s += isnan(s0[i]), floor_s += s0[i] == 0x1p-149f;
    snprintf(name, sizeof name, "rmsnorm fp8 out %dx%d %s%s, %s, %s codec: == norm + quantizer (codes, scales, y, "
             "rstd, h) [NaN scales %zu, 2^-149 %zu]", rows, dim, mname[mode], special ? " (special rows)" : "",
             ue8m0 ? "ue8m0" : "fp32 scales", soft ? "software" : "hardware", nan_s, floor_s);
    char det[64];
    snprintf(det, sizeof det, "%zu differing", bad);
    verdict(bad == 0, name, det);
    free(q0), free(q1), free(s0), free(s1), free(y0), free(y1), free(r0), free(r1);
  }
  quant_cuda_set_hw_cvt(1);
  free(x), free(r), free(w), free(xb);
  CU(cudaFree(dxf)); CU(cudaFree(dr)); CU(cudaFree(dw)); CU(cudaFree(dxb)); CU(cudaFree(dh0)); CU(cudaFree(dh1));
  CU(cudaFree(drs0)); CU(cudaFree(drs1)); CU(cudaFree(ds0)); CU(cudaFree(ds1)); CU(cudaFree(dyb0)); CU(cudaFree(dyb1));
  CU(cudaFree(dq0)); CU(cudaFree(dq1));
}

/* The RMSNorm forwards at few rows run rmsnorm_fwd_wide_kernel (4 warps a row, or
 * 8 at dim ≥ 1024): every output of every form, on 4 and on 8 warps a row,
 * against the one-warp kernel (ops_norm_wide(0)),
 * byte for byte — plain FP32 x, residual FP32 x, residual BF16 x, each with
 * y, y_bf16 and rstd, and the _q8 forward's codes and scales (pad rows over
 * garbage, fp32 and ue8m0 scales, both E4M3 codecs). special: a zero row, an
 * Inf in x (a NaN row), tiny and Inf weights. */
static void test_rmsnorm_wide(int rows, int dim, int special) {
  char name[200];
  const size_t n = (size_t)rows * dim;
  const int pad = (rows + 7) / 8 * 8, nb = dim / 128;
  float *x = randv(n, 2), *r = randv(n, 2), *w = randv(dim, 1.5f);
  if (special) {
    if (rows > 1) memset(x + dim, 0, (size_t)dim * 4), memset(r + dim, 0, (size_t)dim * 4);
    for (int i = 128; i < 256 && i < dim; i++) w[i] *= 1e-38f;
    if (rows > 2) x[2 * (size_t)dim + 7] = INFINITY;
    w[5] = INFINITY;
  }
  uint16_t *xb = rl_xmalloc(n * 2);
  for (size_t i = 0; i < n; i++) xb[i] = fmt_bf16_from_f32(x[i]);
  float *dx = dup_dev(x, n * 4), *dr = dup_dev(r, n * 4), *dw = dup_dev(w, (size_t)dim * 4);
  uint16_t *dxb = dup_dev(xb, n * 2);
  float *dh[3], *dy[3], *drs[3], *ds[3];
  uint16_t *dyb[3];
  uint8_t *dq[3];
  for (int k = 0; k < 3; k++) {
    dh[k] = dup_dev(NULL, n * 4), dy[k] = dup_dev(NULL, n * 4), drs[k] = dup_dev(NULL, rows * 4);
    ds[k] = dup_dev(NULL, (size_t)nb * pad * 4), dyb[k] = dup_dev(NULL, n * 2), dq[k] = dup_dev(NULL, (size_t)pad * dim);
  }
  static const char *const form[6] = {"plain FP32 x", "residual FP32 x", "residual BF16 x", "q8 plain FP32 x",
                                      "q8 residual FP32 x", "q8 residual BF16 x"};
  const int was = ops_norm_wide(-1), was_nw = ops_norm_wide_warps(-1);
  for (int f = 0; f < 6; f++)
    for (int v = 0; v < (f < 3 ? 1 : 4); v++) {
      const int ue8m0 = v & 1, soft = v >> 1, mode = f % 3;
      quant_cuda_set_hw_cvt(!soft);
      size_t bad = 0;
      void *out[3][6];
      for (int k = 0; k < 3; k++) { /* k = 0: the one-warp kernel, 1: the wide one on 4 warps, 2: on 8 (at dim ≥
                                     * 1024; else 4 again); outputs over garbage */
        ops_norm_wide(k > 0);
        ops_norm_wide_warps(k == 2 ? 8 : 4);
        CU(cudaMemcpy(dh[k], r, n * 4, cudaMemcpyHostToDevice)); /* h = resid + x in place of resid */
        CU(cudaMemset(dy[k], 0x3c, n * 4));
        CU(cudaMemset(dyb[k], 0x33, n * 2));
        CU(cudaMemset(drs[k], 0x47, rows * 4));
        CU(cudaMemset(dq[k], 0xA7, (size_t)pad * dim));
        CU(cudaMemset(ds[k], 0x5B, (size_t)nb * pad * 4));
        const ops_fp8_act qa = {dq[k], ds[k], pad, pad, ue8m0};
        if (f == 0) OK(ops_rmsnorm_forward_cuda(dy[k], dyb[k], drs[k], dx, dw, rows, dim, 1e-6f, NULL, e));
        else if (f == 1)
          OK(ops_residual_rmsnorm_forward_cuda(dh[k], dy[k], dyb[k], drs[k], dh[k], dx, dw, rows, dim, 1e-6f, NULL, e));
        else if (f == 2)
          OK(ops_residual_rmsnorm_forward_bx_cuda(dh[k], dy[k], dyb[k], drs[k], dh[k], dxb, dw, rows, dim, 1e-6f, NULL, e));
        else
          OK(ops_rmsnorm_forward_q8_cuda(mode ? dh[k] : NULL, dyb[k], drs[k], mode ? dh[k] : NULL,
                                         mode == 2 ? NULL : dx, mode == 2 ? dxb : NULL, dw, rows, dim, 1e-6f, &qa,
                                         NULL, e));
        out[k][0] = get(dh[k], n * 4), out[k][1] = get(dy[k], n * 4), out[k][2] = get(dyb[k], n * 2);
        out[k][3] = get(drs[k], rows * 4), out[k][4] = get(dq[k], (size_t)pad * dim);
        out[k][5] = get(ds[k], (size_t)nb * pad * 4);
      }
      const size_t bytes[6] = {n * 4, n * 4, n * 2, (size_t)rows * 4, (size_t)pad * dim, (size_t)nb * pad * 4};
      for (int o = 0; o < 6; o++) {
        bad += (memcmp(out[0][o], out[1][o], bytes[o]) != 0) + (memcmp(out[0][o], out[2][o], bytes[o]) != 0);
        free(out[0][o]), free(out[1][o]), free(out[2][o]);
      }
      snprintf(name, sizeof name, "rmsnorm wide %dx%d %s%s%s%s: 4 and 8 warps a row == one warp a row (h, y, y_bf16, "
               "rstd, codes, scales)",
               rows, dim, form[f], special ? " (special rows)" : "", f < 3 ? "" : ue8m0 ? ", ue8m0" : ", fp32 scales",
               f < 3 ? "" : soft ? ", software codec" : ", hardware codec");
      char det[64];
      snprintf(det, sizeof det, "%zu of 12 output comparisons differ", bad);
      verdict(bad == 0, name, det);
    }
  ops_norm_wide(was);
  ops_norm_wide_warps(was_nw);
  quant_cuda_set_hw_cvt(1);
  free(x), free(r), free(w), free(xb);
  CU(cudaFree(dx)); CU(cudaFree(dr)); CU(cudaFree(dw)); CU(cudaFree(dxb));
  for (int k = 0; k < 3; k++) {
    CU(cudaFree(dh[k])); CU(cudaFree(dy[k])); CU(cudaFree(drs[k])); CU(cudaFree(ds[k])); CU(cudaFree(dyb[k]));
    CU(cudaFree(dq[k]));
  }
}

/* SwiGLU with an fp8-block output (ops_swiglu_forward_q8_bx_cuda) against
 * ops_swiglu_forward_bx_cuda then quant_fp8_block_act_cuda (pad rows zeroed):
 * act and the codes and scales byte for byte; both codecs, both scale forms.
 * special: gate/up of row 1 huge (Inf products: a NaN-scale row) and the second
 * block of row 0 tiny (the 2^-149 scale floor). */
static void test_swiglu_q8(int T, int I, int ld, int special) {
  char name[200];
  const size_t n = (size_t)T * ld;
  const int pad = (T + 7) / 8 * 8, nb = (I + 127) / 128;
  uint16_t *gb = rl_xmalloc(n * 2), *ub = rl_xmalloc(n * 2);
  for (size_t i = 0; i < n; i++) gb[i] = fmt_bf16_from_f32(4 * urand()), ub[i] = fmt_bf16_from_f32(3 * urand());
  if (special && T > 1)
    for (int i = 0; i < 16; i++) gb[(size_t)ld + i] = fmt_bf16_from_f32(3e38f), ub[(size_t)ld + i] = fmt_bf16_from_f32(3e38f);
  if (special)
    for (int i = 128; i < 256 && i < I; i++) ub[i] = fmt_bf16_from_f32(1e-30f * urand());
  uint16_t *dg = dup_dev(gb, n * 2), *du = dup_dev(ub, n * 2), *da0 = dup_dev(NULL, (size_t)T * I * 2 + 16),
           *da1 = dup_dev(NULL, (size_t)T * I * 2 + 16);
  uint8_t *dq0 = dup_dev(NULL, (size_t)pad * I), *dq1 = dup_dev(NULL, (size_t)pad * I);
  float *ds0 = dup_dev(NULL, (size_t)nb * pad * 4), *ds1 = dup_dev(NULL, (size_t)nb * pad * 4);
  for (int v = 0; v < 4; v++) {
    const int ue8m0 = v & 1, soft = v >> 1;
    quant_cuda_set_hw_cvt(!soft);
    CU(cudaMemset(dq0, 0, (size_t)pad * I));
    CU(cudaMemset(ds0, 0, (size_t)nb * pad * 4));
    OK(ops_swiglu_forward_bx_cuda(NULL, da0, dg, du, T, I, ld, NULL, e));
    quant_opts qo = {0};
    qo.ue8m0 = ue8m0, qo.scale_layout = QLAYOUT_HOPPER_ACT, qo.scale_ld = pad;
    OK(quant_fp8_block_act_cuda(da0, T, I, dq0, ds0, &qo, NULL, NULL, e));
    CU(cudaMemset(dq1, 0xA7, (size_t)pad * I));
    CU(cudaMemset(ds1, 0x5B, (size_t)nb * pad * 4));
    CU(cudaMemset(da1, 0x33, (size_t)T * I * 2));
    const ops_fp8_act qa = {dq1, ds1, pad, pad, ue8m0};
    OK(ops_swiglu_forward_q8_bx_cuda(da1, dg, du, T, I, ld, &qa, NULL, e));
    uint8_t *q0 = get(dq0, (size_t)pad * I), *q1 = get(dq1, (size_t)pad * I);
    float *s0 = get(ds0, (size_t)nb * pad * 4), *s1 = get(ds1, (size_t)nb * pad * 4);
    uint16_t *a0 = get(da0, (size_t)T * I * 2), *a1 = get(da1, (size_t)T * I * 2);
    size_t bad = 0, nan_s = 0, floor_s = 0;
    for (size_t i = 0; i < (size_t)pad * I; i++) bad += q0[i] != q1[i];
    bad += memcmp(s0, s1, (size_t)nb * pad * 4) != 0;
    bad += memcmp(a0, a1, (size_t)T * I * 2) != 0;
    for (size_t i = 0; i < (size_t)nb * pad; i++) nan_s += isnan(s0[i]), floor_s += s0[i] == 0x1p-149f;
    snprintf(name, sizeof name, "swiglu fp8 out %dx%d (ld %d)%s, %s, %s codec%s%s: == swiglu + quantizer (codes, "
             "scales, act) [NaN scales %zu, 2^-149 %zu]", T, I, ld, special ? " special" : "",
             ue8m0 ? "ue8m0" : "fp32 scales", soft ? "software" : "hardware",
             ops_swiglu_q8_pdl(-1) && ops_pdl() ? ", PDL launch" : "",
             ops_swiglu_q8_lane4(-1) && pad < 1024 ? ", 4 a thread" : "", nan_s, floor_s);
    char det[64];
    snprintf(det, sizeof det, "%zu differing", bad);
    verdict(bad == 0, name, det);
    free(q0), free(q1), free(s0), free(s1), free(a0), free(a1);
  }
  quant_cuda_set_hw_cvt(1);
  free(gb), free(ub);
  CU(cudaFree(dg)); CU(cudaFree(du)); CU(cudaFree(da0)); CU(cudaFree(da1)); CU(cudaFree(dq0)); CU(cudaFree(dq1));
  CU(cudaFree(ds0)); CU(cudaFree(ds1));
}

/* ---------------------------------------------------------------- RoPE, QK-norm */

static void test_rope_qk(int d) {
  char name[96];
  int32_t off[4] = {0, 5, 205, 1500};
  int T = off[3], nh = 16;
  ops_seqs hs = {3, off};
  int32_t *pos = rl_xmalloc(T * 4);
  ops_seqs_positions(&hs, pos);
  int32_t *doff = dup_dev(off, sizeof off), *dpos = dup_dev(NULL, T * 4);
  ops_seqs ds = {3, doff};
  OK(ops_seqs_positions_cuda(&ds, T, dpos, NULL, e));
  int32_t *gpos = get(dpos, T * 4);
  same("seqs positions", gpos, pos, T * 4);
  free(gpos);
  size_t n = (size_t)T * nh * d;
  float *x = randv(n, 3), *w = randv(d, 1.5f), *dy = randv(n, 1), *dw0 = randv(d, 1);
  float *dx_ = dup_dev(x, n * 4), *dw_ = dup_dev(w, d * 4), *ddy = dup_dev(dy, n * 4), *dy_ = dup_dev(NULL, n * 4);
  float *drs = dup_dev(NULL, (size_t)T * nh * 4), *ddx = dup_dev(NULL, n * 4), *ddw = dup_dev(dw0, d * 4);
  float *ref = rl_xmalloc(n * 4), *rs = rl_xmalloc((size_t)T * nh * 4), *dx = rl_xmalloc(n * 4);
  float *dw = rl_xmalloc(d * 4);
  memcpy(dw, dw0, d * 4);

  memcpy(ref, x, n * 4);
  ops_rope_forward_cpu(ref, pos, T, nh, d, 1e6f);
  CU(cudaMemcpy(dy_, x, n * 4, cudaMemcpyHostToDevice));
  OK(ops_rope_forward_cuda(dy_, dpos, T, nh, d, 1e6f, NULL, e));
  float *got = get(dy_, n * 4);
  snprintf(name, sizeof name, "rope forward d=%d", d);
  cmp(name, got, ref, n, 1e-7); /* the same table and FP32 ops: equal but for rare cos/sin roundings */
  free(got);
  memcpy(ref, dy, n * 4);
  ops_rope_backward_cpu(ref, pos, T, nh, d, 1e6f);
  CU(cudaMemcpy(dy_, dy, n * 4, cudaMemcpyHostToDevice));
  OK(ops_rope_backward_cuda(dy_, dpos, T, nh, d, 1e6f, NULL, e));
  got = get(dy_, n * 4);
  snprintf(name, sizeof name, "rope backward d=%d", d);
  cmp(name, got, ref, n, 1e-7);
  free(got);

  OK(ops_qk_norm_rope_forward_cuda(dy_, drs, dx_, dw_, dpos, T, nh, d, 1e-6f, 1e6f, NULL, e));
  ops_qk_norm_rope_forward_cpu(ref, rs, x, w, pos, T, nh, d, 1e-6f, 1e6f);
  got = get(dy_, n * 4);
  float *grs = get(drs, (size_t)T * nh * 4);
  snprintf(name, sizeof name, "qk-norm+rope forward y d=%d", d);
  cmp(name, got, ref, n, 2e-6);
  snprintf(name, sizeof name, "qk-norm+rope forward rstd d=%d", d);
  cmp(name, grs, rs, (size_t)T * nh, 2e-6);
  free(got), free(grs);
  OK(ops_qk_norm_rope_backward_cuda(ddx, ddw, ddy, dx_, dw_, drs, dpos, T, nh, d, 1e6f, NULL, e));
  ops_qk_norm_rope_backward_cpu(dx, dw, dy, x, w, rs, pos, T, nh, d, 1e6f);
  got = get(ddx, n * 4);
  float *gdw = get(ddw, d * 4);
  snprintf(name, sizeof name, "qk-norm+rope backward dx d=%d", d);
  cmp(name, got, dx, n, 1e-4);
  snprintf(name, sizeof name, "qk-norm+rope backward dw d=%d", d);
  cmp(name, gdw, dw, d, 1e-4);
  free(got), free(gdw), free(pos), free(x), free(w), free(dy), free(dw0), free(ref), free(rs), free(dx), free(dw);
  CU(cudaFree(doff)); CU(cudaFree(dpos)); CU(cudaFree(dx_)); CU(cudaFree(dw_)); CU(cudaFree(ddy));
  CU(cudaFree(dy_)); CU(cudaFree(drs)); CU(cudaFree(ddx)); CU(cudaFree(ddw));
}

/* ---------------------------------------------------------------- attention */

/* The device buffers of one attention problem. */
typedef struct {
  float *q, *k, *v, *o, *lse, *dout, *dq, *dk, *dv;
  uint16_t *ob;
  int32_t *off;
} attn_dev;

static attn_dev attn_upload(const float *q, const float *k, const float *v, const float *dout, const int32_t *off,
                            int n_seq, ops_attn_shape sh) {
  size_t nq = (size_t)sh.T * sh.n_q_heads * sh.head_dim, nk = (size_t)sh.T * sh.n_kv_heads * sh.head_dim;
  attn_dev a = {dup_dev(q, nq * 4), dup_dev(k, nk * 4), dup_dev(v, nk * 4), dup_dev(NULL, nq * 4),
                dup_dev(NULL, (size_t)sh.T * sh.n_q_heads * 4), dup_dev(dout, nq * 4), dup_dev(NULL, nq * 4),
                dup_dev(NULL, nk * 4), dup_dev(NULL, nk * 4), dup_dev(NULL, nq * 2),
                dup_dev(off, (n_seq + 1) * 4)};
  return a;
}
static void attn_free(attn_dev *a) {
  void *p[] = {a->q, a->k, a->v, a->o, a->lse, a->dout, a->dq, a->dk, a->dv, a->ob, a->off};
  for (int i = 0; i < 11; i++) CU(cudaFree(p[i]));
}
static void attn_run(attn_dev *a, int n_seq, int max_len, ops_attn_shape sh) {
  ops_seqs s = {n_seq, a->off};
  OK(ops_attention_forward_cuda(a->o, a->ob, a->lse, a->q, a->k, a->v, &s, max_len, sh, NULL, e));
  OK(ops_attention_backward_cuda(a->dq, a->dk, a->dv, a->dout, a->o, a->lse, a->q, a->k, a->v, &s, max_len, sh, NULL,
                                 e));
  CU(cudaDeviceSynchronize());
}

static void test_attention(const int *lens, int n_seq, int Hq, int Hkv, int D, ops_attn_impl impl) {
  char name[128], tag[64];
  const int tc = impl == OPS_ATTN_TC;
  const double tol_o = tc ? 2e-2 : 2e-5, tol_lse = tc ? 5e-3 : 2e-5, tol_d = tc ? 2e-2 : 1e-4;
  ops_attention_set_impl(impl);
  int32_t *off = rl_xmalloc((n_seq + 1) * 4);
  off[0] = 0;
  int maxlen = 0;
  for (int s = 0; s < n_seq; s++) off[s + 1] = off[s] + lens[s], maxlen = lens[s] > maxlen ? lens[s] : maxlen;
  ops_attn_shape sh = {off[n_seq], Hq, Hkv, D};
  snprintf(tag, sizeof tag, "%s T=%d %d/%d d=%d", tc ? "tc" : "simt", sh.T, Hq, Hkv, D);
  size_t nq = (size_t)sh.T * Hq * D, nk = (size_t)sh.T * Hkv * D, nl = (size_t)sh.T * Hq;
  float *q = randv(nq, 2), *k = randv(nk, 2), *v = randv(nk, 1), *dout = randv(nq, 1);
  float *o = rl_xmalloc(nq * 4), *lse = rl_xmalloc(nl * 4), *dq = rl_xmalloc(nq * 4), *dk = rl_xmalloc(nk * 4);
  float *dv = rl_xmalloc(nk * 4);
  uint16_t *ob = rl_xmalloc(nq * 2);
  ops_seqs hs = {n_seq, off};
  rl_err e0;
  double t0 = rl_now();
  if (ops_attention_forward_cpu(o, ob, lse, q, k, v, &hs, sh, &e0) ||
      ops_attention_backward_cpu(dq, dk, dv, dout, o, lse, q, k, v, &hs, sh, &e0)) {
    verdict(0, "attention cpu reference", e0.msg);
    return;
  }
  double tcpu = rl_now() - t0;
  attn_dev a = attn_upload(q, k, v, dout, off, n_seq, sh);
  attn_run(&a, n_seq, maxlen, sh);
  float *go = get(a.o, nq * 4), *gl = get(a.lse, nl * 4), *gq = get(a.dq, nq * 4), *gk = get(a.dk, nk * 4);
  float *gv = get(a.dv, nk * 4);
  uint16_t *gob = get(a.ob, nq * 2);
  snprintf(name, sizeof name, "attention out %s", tag), cmp(name, go, o, nq, tol_o);
  /* The fused BF16 copy must be exactly the RNE rounding of the GPU's own FP32 output
   * (agreement with the CPU is the 2e-5 check above: near zero, a BF16 ulp is far
   * smaller than that tolerance, so comparing BF16 copies across devices is no test). */
  uint16_t *rob = rl_xmalloc(nq * 2);
  for (size_t i = 0; i < nq; i++) rob[i] = fmt_bf16_from_f32(go[i]);
  snprintf(name, sizeof name, "attention out_bf16 = bf16(out) %s", tag), same(name, gob, rob, nq * 2);
  free(rob);
  snprintf(name, sizeof name, "attention lse %s", tag), cmp(name, gl, lse, nl, tol_lse);
  snprintf(name, sizeof name, "attention dq %s", tag), cmp(name, gq, dq, nq, tol_d);
  snprintf(name, sizeof name, "attention dk %s", tag), cmp(name, gk, dk, nk, tol_d);
  snprintf(name, sizeof name, "attention dv %s", tag), cmp(name, gv, dv, nk, tol_d);
  printf("     (cpu reference %.2fs)\n", tcpu);

  /* determinism, and the grid hint: max_len = 1 loops inside the blocks */
  attn_run(&a, n_seq, 1, sh);
  float *go2 = get(a.o, nq * 4), *gq2 = get(a.dq, nq * 4), *gk2 = get(a.dk, nk * 4), *gv2 = get(a.dv, nk * 4);
  int ok = !memcmp(go2, go, nq * 4) && !memcmp(gq2, gq, nq * 4) && !memcmp(gk2, gk, nk * 4) && !memcmp(gv2, gv, nk * 4);
  snprintf(name, sizeof name, "attention rerun, max_len=1: bitwise %s", tag);
  verdict(ok, name, ok ? "out, dq, dk, dv identical" : "differ");
  free(go2), free(gq2), free(gk2), free(gv2);

  /* the longest sequence alone == its slice of the packed batch */
  int sl = 0;
  for (int s = 1; s < n_seq; s++)
    if (lens[s] > lens[sl]) sl = s;
  if (n_seq > 1) {
    int32_t off1[2] = {0, lens[sl]};
    ops_attn_shape s1 = {lens[sl], Hq, Hkv, D};
    size_t q0 = (size_t)off[sl] * Hq * D, k0 = (size_t)off[sl] * Hkv * D;
    attn_dev b = attn_upload(q + q0, k + k0, v + k0, dout + q0, off1, 1, s1);
    attn_run(&b, 1, lens[sl], s1);
    size_t bq = (size_t)lens[sl] * Hq * D, bk = (size_t)lens[sl] * Hkv * D;
    float *bo = get(b.o, bq * 4), *bdq = get(b.dq, bq * 4), *bdk = get(b.dk, bk * 4), *bdv = get(b.dv, bk * 4);
    ok = !memcmp(bo, go + q0, bq * 4) && !memcmp(bdq, gq + q0, bq * 4) && !memcmp(bdk, gk + k0, bk * 4) &&
         !memcmp(bdv, gv + k0, bk * 4);
    snprintf(name, sizeof name, "attention len %d alone == in batch %s", lens[sl], tag);
    verdict(ok, name, ok ? "bitwise" : "differ");
    free(bo), free(bdq), free(bdk), free(bdv);
    attn_free(&b);
  }
  free(go), free(gl), free(gq), free(gk), free(gv), free(gob);
  attn_free(&a);
  free(q), free(k), free(v), free(dout), free(o), free(lse), free(dq), free(dk), free(dv), free(ob), free(off);
  ops_attention_set_impl(OPS_ATTN_DEFAULT);
}

/* ---------------------------------------------------------------- SwiGLU */

static void test_swiglu(int T, int I, int fused) {
  char name[96];
  int ld = fused ? 2 * I : I;
  size_t ng = (size_t)T * ld + (fused ? 0 : (size_t)T * I), n = (size_t)T * I;
  float *buf = randv(ng, 6), *dout = randv(n, 1);
  const float *gate = buf, *up = fused ? buf + I : buf + (size_t)T * I;
  float *dbuf = dup_dev(buf, ng * 4), *ddo = dup_dev(dout, n * 4), *dout_ = dup_dev(NULL, n * 4);
  float *dg = dup_dev(NULL, ng * 4);
  uint16_t *dob = dup_dev(NULL, n * 2);
  float *ref = rl_xmalloc(n * 4), *rg = rl_xmalloc(ng * 4);
  uint16_t *rb = rl_xmalloc(n * 2);
  const float *dgate = dbuf, *dup = fused ? dbuf + I : dbuf + (size_t)T * I;
  OK(ops_swiglu_forward_cuda(dout_, dob, dgate, dup, T, I, ld, NULL, e));
  ops_swiglu_forward_cpu(ref, rb, gate, up, T, I, ld);
  float *got = get(dout_, n * 4);
  uint16_t *gb = get(dob, n * 2);
  snprintf(name, sizeof name, "swiglu forward %dx%d%s", T, I, fused ? " fused" : "");
  cmp(name, got, ref, n, 2e-6);
  snprintf(name, sizeof name, "swiglu forward bf16 %dx%d%s", T, I, fused ? " fused" : "");
  cmp_bf16(name, gb, rb, n);
  OK(ops_swiglu_backward_cuda(dg, fused ? dg + I : dg + (size_t)T * I, ddo, dgate, dup, T, I, ld, NULL, e));
  memset(rg, 0, ng * 4);
  ops_swiglu_backward_cpu(rg, fused ? rg + I : rg + (size_t)T * I, dout, gate, up, T, I, ld);
  free(got);
  got = get(dg, ng * 4);
  snprintf(name, sizeof name, "swiglu backward dgate|dup %dx%d%s", T, I, fused ? " fused" : "");
  cmp(name, got, rg, ng, 1e-5);
  free(got), free(gb), free(buf), free(dout), free(ref), free(rg), free(rb);
  CU(cudaFree(dbuf)); CU(cudaFree(ddo)); CU(cudaFree(dout_)); CU(cudaFree(dg)); CU(cudaFree(dob));
}

/* ---------------------------------------------------------------- BF16-operand twins */

/* Random BF16 values (scale · U[-1, 1)), on the device as BF16 (*b) and as their FP32 copies (*f). */
static void bf16_pair(size_t n, float scale, uint16_t **b, float **f) {
  float *h = randv(n, scale);
  uint16_t *hb = rl_xmalloc(n * 2 + 2);
  for (size_t i = 0; i < n; i++) hb[i] = fmt_bf16_from_f32(h[i]), h[i] = fmt_bf16_to_f32(hb[i]);
  *b = dup_dev(hb, n * 2), *f = dup_dev(h, n * 4);
  free(h), free(hb);
}

/* Device buffers a and b (bytes) byte for byte. */
static void same_dev(const char *what, const void *a, const void *b, size_t bytes) {
  void *x = get(a, bytes), *y = get(b, bytes);
  same(what, x, y, bytes);
  free(x), free(y);
}

/* Each "_bx" op on BF16 operands == its FP32 twin on their FP32 copies, with the
 * FP32 outputs the twin gives rounded by ops_bf16_from_f32_cuda: bitwise (the
 * training forward and backward's BF16 flow rests on it). T tokens, hidden H,
 * nh heads of d, FFN I. */
static void test_bx(int T, int H, int nh, int d, int I) {
  char name[96];
  size_t nH = (size_t)T * H, nq = (size_t)T * nh * d, nI = (size_t)T * I;
  float *hw = randv(H > d ? H : d, 1.5f), *hdw = randv(H > d ? H : d, 1);
  float *w = dup_dev(hw, (H > d ? H : d) * 4), *dw0 = dup_dev(hdw, (H > d ? H : d) * 4);
  /* residual + RMSNorm forward and backward */
  uint16_t *xb;
  float *xf, *r = dup_dev(NULL, nH * 4), *dy = dup_dev(NULL, nH * 4);
  bf16_pair(nH, 3, &xb, &xf);
  float *hr = randv(nH, 2), *hdy = randv(nH, 1);
  CU(cudaMemcpy(r, hr, nH * 4, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(dy, hdy, nH * 4, cudaMemcpyHostToDevice));
  float *h1 = dup_dev(NULL, nH * 4), *h2 = dup_dev(NULL, nH * 4), *rs1 = dup_dev(NULL, T * 4), *rs2 = dup_dev(NULL, T * 4);
  uint16_t *y1 = dup_dev(NULL, nH * 2), *y2 = dup_dev(NULL, nH * 2);
  OK(ops_residual_rmsnorm_forward_bx_cuda(h1, NULL, y1, rs1, r, xb, w, T, H, 1e-6f, NULL, e));
  OK(ops_residual_rmsnorm_forward_cuda(h2, NULL, y2, rs2, r, xf, w, T, H, 1e-6f, NULL, e));
  snprintf(name, sizeof name, "residual+rmsnorm fwd _bx == fp32 %dx%d", T, H);
  same_dev(name, h1, h2, nH * 4), same_dev(name, y1, y2, nH * 2), same_dev(name, rs1, rs2, T * 4);
  float *dr1 = dup_dev(hr, nH * 4), *dr2 = dup_dev(hr, nH * 4), *g1 = dup_dev(hdw, H * 4), *g2 = dup_dev(hdw, H * 4);
  uint16_t *drb1 = dup_dev(NULL, nH * 2), *drb2 = dup_dev(NULL, nH * 2);
  OK(ops_residual_rmsnorm_backward_bx_cuda(dr1, drb1, g1, dy, NULL, 0, h1, w, rs1, T, H, NULL, e));
  OK(ops_residual_rmsnorm_backward_cuda(dr2, g2, dy, h2, w, rs2, T, H, NULL, e));
  OK(ops_bf16_from_f32_cuda(drb2, dr2, nH, NULL, e));
  snprintf(name, sizeof name, "residual+rmsnorm bwd _bx == fp32 %dx%d", T, H);
  same_dev(name, dr1, dr2, nH * 4), same_dev(name, drb1, drb2, nH * 2), same_dev(name, g1, g2, H * 4);
  for (int np = 1; np <= 3; np++) { /* dy as np BF16 parts == the FP32 dy they sum to, in order */
    uint16_t *pb[3];
    float *pf[3], *sum = rl_xcalloc(nH, sizeof(float));
    for (int q = 0; q < np; q++) {
      bf16_pair(nH, 1, &pb[q], &pf[q]);
      float *hp = get(pf[q], nH * 4);
      for (size_t i = 0; i < nH; i++) sum[i] = q ? sum[i] + hp[i] : hp[i];
      free(hp);
    }
    float *dys = dup_dev(sum, nH * 4);
    CU(cudaMemcpy(dr1, hr, nH * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dr2, hr, nH * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(g1, hdw, H * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(g2, hdw, H * 4, cudaMemcpyHostToDevice));
    OK(ops_residual_rmsnorm_backward_bx_cuda(dr1, drb1, g1, NULL, (const uint16_t *const *)pb, np, h1, w, rs1, T, H,
                                             NULL, e));
    OK(ops_residual_rmsnorm_backward_cuda(dr2, g2, dys, h2, w, rs2, T, H, NULL, e));
    OK(ops_bf16_from_f32_cuda(drb2, dr2, nH, NULL, e));
    snprintf(name, sizeof name, "residual+rmsnorm bwd _bx, dy as %d BF16 parts %dx%d", np, T, H);
    same_dev(name, dr1, dr2, nH * 4), same_dev(name, drb1, drb2, nH * 2), same_dev(name, g1, g2, H * 4);
    for (int q = 0; q < np; q++) {
      CU(cudaFree(pb[q]));
      CU(cudaFree(pf[q]));
    }
    CU(cudaFree(dys));
    free(sum);
  }
  CU(cudaFree(xb)); CU(cudaFree(xf)); CU(cudaFree(r)); CU(cudaFree(dy)); CU(cudaFree(h1)); CU(cudaFree(h2));
  CU(cudaFree(rs1)); CU(cudaFree(rs2)); CU(cudaFree(y1)); CU(cudaFree(y2)); CU(cudaFree(dr1)); CU(cudaFree(dr2));
  CU(cudaFree(g1)); CU(cudaFree(g2)); CU(cudaFree(drb1)); CU(cudaFree(drb2));
  free(hr), free(hdy);

  /* QK-norm + RoPE forward and backward (two sequences) */
  int32_t off[3] = {0, T / 3, T}, *doff = dup_dev(off, sizeof off), *dpos = dup_dev(NULL, T * 4);
  ops_seqs ds = {2, doff};
  OK(ops_seqs_positions_cuda(&ds, T, dpos, NULL, e));
  uint16_t *qb;
  float *qf, *hq = randv(nq, 1), *qdy = dup_dev(NULL, nq * 4);
  bf16_pair(nq, 4, &qb, &qf);
  CU(cudaMemcpy(qdy, hq, nq * 4, cudaMemcpyHostToDevice));
  float *qy1 = dup_dev(NULL, nq * 4), *qy2 = dup_dev(NULL, nq * 4);
  float *qr1 = dup_dev(NULL, (size_t)T * nh * 4), *qr2 = dup_dev(NULL, (size_t)T * nh * 4);
  OK(ops_qk_norm_rope_forward_bx_cuda(qy1, NULL, qr1, qb, w, dpos, T, nh, d, 1e-6f, 1e6f, NULL, e));
  OK(ops_qk_norm_rope_forward_cuda(qy2, qr2, qf, w, dpos, T, nh, d, 1e-6f, 1e6f, NULL, e));
  snprintf(name, sizeof name, "qk-norm+rope fwd _bx == fp32 d=%d", d);
  same_dev(name, qy1, qy2, nq * 4), same_dev(name, qr1, qr2, (size_t)T * nh * 4);
  { /* the BF16 output: the RNE BF16 of the FP32 one */
    uint16_t *yb1 = dup_dev(NULL, nq * 2), *yb2 = dup_dev(NULL, nq * 2);
    OK(ops_qk_norm_rope_forward_bx_cuda(NULL, yb1, qr1, qb, w, dpos, T, nh, d, 1e-6f, 1e6f, NULL, e));
    OK(ops_bf16_from_f32_cuda(yb2, qy2, nq, NULL, e));
    snprintf(name, sizeof name, "qk-norm+rope fwd _bx BF16 out == bf16(fp32) d=%d", d);
    same_dev(name, yb1, yb2, nq * 2), same_dev(name, qr1, qr2, (size_t)T * nh * 4);
    CU(cudaFree(yb1)); CU(cudaFree(yb2));
  }
  uint16_t *qdx1 = dup_dev(NULL, nq * 2), *qdx2b = dup_dev(NULL, nq * 2);
  float *qdx2 = dup_dev(NULL, nq * 4), *qg1 = dup_dev(hdw, d * 4), *qg2 = dup_dev(hdw, d * 4);
  OK(ops_qk_norm_rope_backward_bx_cuda(qdx1, qg1, qdy, qb, w, qr1, dpos, T, nh, d, 1e6f, NULL, e));
  OK(ops_qk_norm_rope_backward_cuda(qdx2, qg2, qdy, qf, w, qr2, dpos, T, nh, d, 1e6f, NULL, e));
  OK(ops_bf16_from_f32_cuda(qdx2b, qdx2, nq, NULL, e));
  snprintf(name, sizeof name, "qk-norm+rope bwd _bx == fp32 d=%d", d);
  same_dev(name, qdx1, qdx2b, nq * 2), same_dev(name, qg1, qg2, d * 4);
  CU(cudaFree(doff)); CU(cudaFree(dpos)); CU(cudaFree(qb)); CU(cudaFree(qf)); CU(cudaFree(qdy)); CU(cudaFree(qy1));
  CU(cudaFree(qy2)); CU(cudaFree(qr1)); CU(cudaFree(qr2)); CU(cudaFree(qdx1)); CU(cudaFree(qdx2b)); CU(cudaFree(qdx2));
  CU(cudaFree(qg1)); CU(cudaFree(qg2));
  free(hq);

  /* SwiGLU forward and backward */
  uint16_t *gb, *ub, *db;
  float *gf, *uf, *df;
  bf16_pair(nI, 6, &gb, &gf), bf16_pair(nI, 6, &ub, &uf), bf16_pair(nI, 1, &db, &df);
  uint16_t *o1 = dup_dev(NULL, nI * 2), *o2 = dup_dev(NULL, nI * 2);
  float *of1 = dup_dev(NULL, nI * 4), *of2 = dup_dev(NULL, nI * 4);
  OK(ops_swiglu_forward_bx_cuda(of1, o1, gb, ub, T, I, I, NULL, e));
  OK(ops_swiglu_forward_cuda(of2, o2, gf, uf, T, I, I, NULL, e));
  snprintf(name, sizeof name, "swiglu fwd _bx == fp32 %dx%d", T, I);
  same_dev(name, o1, o2, nI * 2), same_dev(name, of1, of2, nI * 4);
  uint16_t *dg1 = dup_dev(NULL, nI * 2), *du1 = dup_dev(NULL, nI * 2), *dg2b = dup_dev(NULL, nI * 2);
  uint16_t *du2b = dup_dev(NULL, nI * 2);
  float *dg2 = dup_dev(NULL, nI * 4), *du2 = dup_dev(NULL, nI * 4);
  OK(ops_swiglu_backward_bx_cuda(dg1, du1, db, gb, ub, T, I, I, NULL, e));
  OK(ops_swiglu_backward_cuda(dg2, du2, df, gf, uf, T, I, I, NULL, e));
  OK(ops_bf16_from_f32_cuda(dg2b, dg2, nI, NULL, e));
  OK(ops_bf16_from_f32_cuda(du2b, du2, nI, NULL, e));
  snprintf(name, sizeof name, "swiglu bwd _bx == fp32 %dx%d", T, I);
  same_dev(name, dg1, dg2b, nI * 2), same_dev(name, du1, du2b, nI * 2);
  CU(cudaFree(gb)); CU(cudaFree(ub)); CU(cudaFree(db)); CU(cudaFree(gf)); CU(cudaFree(uf)); CU(cudaFree(df));
  CU(cudaFree(o1)); CU(cudaFree(o2)); CU(cudaFree(of1)); CU(cudaFree(of2)); CU(cudaFree(dg1)); CU(cudaFree(du1));
  CU(cudaFree(dg2b)); CU(cudaFree(du2b)); CU(cudaFree(dg2)); CU(cudaFree(du2));
  CU(cudaFree(w)); CU(cudaFree(dw0));
  free(hw), free(hdw);
}

/* The attention on BF16 q, k, v (tensor-core kernels) == on their FP32 copies, bitwise. */
static void test_attention_bx(int D) {
  char name[96];
  int32_t off[4] = {0, 70, 333, 520};
  const int n_seq = 3, T = off[3], Hq = 4, Hkv = 2;
  size_t nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
  uint16_t *qb, *kb, *vb, *db;
  float *qf, *kf, *vf, *df;
  bf16_pair(nq, 2, &qb, &qf), bf16_pair(nk, 2, &kb, &kf), bf16_pair(nk, 1, &vb, &vf), bf16_pair(nq, 1, &db, &df);
  int32_t *doff = dup_dev(off, sizeof off);
  ops_seqs sq = {n_seq, doff};
  ops_attn_shape sh = {T, Hq, Hkv, D};
  float *o1 = dup_dev(NULL, nq * 4), *o2 = dup_dev(NULL, nq * 4), *l1 = dup_dev(NULL, (size_t)T * Hq * 4);
  float *l2 = dup_dev(NULL, (size_t)T * Hq * 4);
  uint16_t *ob1 = dup_dev(NULL, nq * 2), *ob2 = dup_dev(NULL, nq * 2);
  ops_attention_set_impl(OPS_ATTN_TC);
  OK(ops_attention_forward_bx_cuda(o1, ob1, l1, qb, kb, vb, &sq, 263, sh, NULL, e));
  OK(ops_attention_forward_cuda(o2, ob2, l2, qf, kf, vf, &sq, 263, sh, NULL, e));
  snprintf(name, sizeof name, "attention fwd _bx == fp32 (tc) D=%d", D);
  same_dev(name, o1, o2, nq * 4), same_dev(name, ob1, ob2, nq * 2), same_dev(name, l1, l2, (size_t)T * Hq * 4);
  float *g[6];
  for (int i = 0; i < 6; i++) g[i] = dup_dev(NULL, (i % 3 ? nk : nq) * 4);
  OK(ops_attention_backward_bx_cuda(g[0], g[1], g[2], db, o1, l1, qb, kb, vb, &sq, 263, sh, NULL, e));
  OK(ops_attention_backward_cuda(g[3], g[4], g[5], df, o2, l2, qf, kf, vf, &sq, 263, sh, NULL, e));
  snprintf(name, sizeof name, "attention bwd _bx == fp32 (tc) D=%d", D);
  same_dev(name, g[0], g[3], nq * 4), same_dev(name, g[1], g[4], nk * 4), same_dev(name, g[2], g[5], nk * 4);
  /* the SIMT kernels take no BF16 operands: a usage error naming why */
  ops_attention_set_impl(OPS_ATTN_SIMT);
  rl_err e2 = {0};
  int rc = ops_attention_forward_bx_cuda(o1, NULL, l1, qb, kb, vb, &sq, 263, sh, NULL, &e2);
  snprintf(name, sizeof name, "attention _bx refused with simt kernels D=%d", D);
  verdict(rc == RL_EXIT_USAGE && strstr(e2.msg, "tensor-core"), name, e2.msg);
  ops_attention_set_impl(OPS_ATTN_DEFAULT);
  for (int i = 0; i < 6; i++) CU(cudaFree(g[i]));
  CU(cudaFree(qb)); CU(cudaFree(kb)); CU(cudaFree(vb)); CU(cudaFree(db)); CU(cudaFree(qf)); CU(cudaFree(kf));
  CU(cudaFree(vf)); CU(cudaFree(df)); CU(cudaFree(doff)); CU(cudaFree(o1)); CU(cudaFree(o2)); CU(cudaFree(l1));
  CU(cudaFree(l2)); CU(cudaFree(ob1)); CU(cudaFree(ob2));
}

/* ---------------------------------------------------------------- router */

static void test_router(int T, int E, int k, int norm) {
  char name[96], buf[200];
  float *logits = randv((size_t)T * E, 4), *dwt = randv((size_t)T * k, 1);
  float *dl = dup_dev(logits, (size_t)T * E * 4), *dp = dup_dev(NULL, (size_t)T * E * 4);
  float *dw = dup_dev(NULL, (size_t)T * k * 4), *ddwt = dup_dev(dwt, (size_t)T * k * 4);
  int32_t *did = dup_dev(NULL, (size_t)T * k * 4);
  float *p = rl_xmalloc((size_t)T * E * 4), *w = rl_xmalloc((size_t)T * k * 4), *dlg = rl_xmalloc((size_t)T * E * 4);
  int32_t *ids = rl_xmalloc((size_t)T * k * 4);
  rl_err e0;
  OK(ops_router_forward_cuda(did, dw, dp, dl, T, E, k, norm, OPS_ROUTE_TOPK, NULL, e));
  ops_router_forward_cpu(ids, w, p, logits, T, E, k, norm, OPS_ROUTE_TOPK, &e0);
  float *gp = get(dp, (size_t)T * E * 4), *gw = get(dw, (size_t)T * k * 4);
  int32_t *gid = get(did, (size_t)T * k * 4);
  int diff = 0, real = 0;
  for (int t = 0; t < T; t++)
    for (int j = 0; j < k; j++) {
      int a = gid[t * k + j], b = ids[t * k + j];
      if (a == b) continue;
      diff++;
      if (a < 0 || a >= E || fabsf(p[t * E + a] - p[t * E + b]) >= 1e-6f) real++;
    }
  snprintf(name, sizeof name, "router top-%d ids E=%d norm=%d", k, E, norm);
  snprintf(buf, sizeof buf, "%d of %d slots differ, %d not at a near-tie", diff, T * k, real);
  verdict(real == 0, name, buf);
  snprintf(name, sizeof name, "router probs E=%d", E), cmp(name, gp, p, (size_t)T * E, 2e-6);
  if (!diff) snprintf(name, sizeof name, "router weights norm=%d", norm), cmp(name, gw, w, (size_t)T * k, 2e-6);
  /* replay the CPU's ids: weights and gradient */
  CU(cudaMemcpy(did, ids, (size_t)T * k * 4, cudaMemcpyHostToDevice));
  OK(ops_router_forward_cuda(did, dw, dp, dl, T, E, k, norm, OPS_ROUTE_REPLAY, NULL, e));
  free(gw);
  gw = get(dw, (size_t)T * k * 4);
  snprintf(name, sizeof name, "router replay weights norm=%d", norm), cmp(name, gw, w, (size_t)T * k, 2e-6);
  float *dlg_d = dup_dev(NULL, (size_t)T * E * 4);
  OK(ops_router_backward_cuda(dlg_d, ddwt, dp, did, T, E, k, norm, NULL, e));
  ops_router_backward_cpu(dlg, dwt, p, ids, T, E, k, norm);
  float *gdl = get(dlg_d, (size_t)T * E * 4);
  snprintf(name, sizeof name, "router backward dlogits norm=%d", norm), cmp(name, gdl, dlg, (size_t)T * E, 1e-4);
  double ov = 0, ovc = ops_router_overlap_cpu(p, ids, T, E, k);
  OK(ops_router_overlap_cuda(&ov, dp, did, T, E, k, NULL, e));
  snprintf(buf, sizeof buf, "gpu %.6f cpu %.6f", ov, ovc);
  verdict(fabs(ov - ovc) <= (double)real / (T * k) + 1e-12, "router overlap", buf);
  /* replay checks */
  OK(ops_router_check_ids_cuda(did, T, E, k, NULL, e));
  ids[5 * k + 2] = ids[5 * k];
  CU(cudaMemcpy(did, ids, (size_t)T * k * 4, cudaMemcpyHostToDevice));
  rl_err e1 = {0};
  int rc = ops_router_check_ids_cuda(did, T, E, k, NULL, &e1);
  verdict(rc == RL_EXIT_USAGE && strstr(e1.msg, "twice at token 5 (slots 0 and 2)"), "router replay duplicate id",
          e1.msg);
  ids[5 * k + 2] = E;
  CU(cudaMemcpy(did, ids, (size_t)T * k * 4, cudaMemcpyHostToDevice));
  rc = ops_router_check_ids_cuda(did, T, E, k, NULL, &e1);
  verdict(rc == RL_EXIT_USAGE && strstr(e1.msg, "at token 5, slot 2 is outside"), "router replay id out of range",
          e1.msg);
  free(gp), free(gw), free(gid), free(gdl), free(logits), free(dwt), free(p), free(w), free(dlg), free(ids);
  CU(cudaFree(dl)); CU(cudaFree(dp)); CU(cudaFree(dw)); CU(cudaFree(ddwt)); CU(cudaFree(did)); CU(cudaFree(dlg_d));
}

/* ---------------------------------------------------------------- log-probs */

static void test_logprob(int T, int V, float temp) {
  char name[96];
  size_t n = (size_t)T * V;
  float *l = randv(n, 8), *dlp = randv(T, 1), *dent = randv(T, 1);
  int32_t *tg = rl_xmalloc(T * 4);
  for (int t = 0; t < T; t++) tg[t] = t == 1 ? -1 : (int32_t)(((urand() + 1) / 2) * (V - 1));
  for (int t = 0; t < T; t++) /* make the target likely in some rows */
    if (t % 3 == 0 && tg[t] >= 0) l[(size_t)t * V + tg[t]] = 30;
  float *dl = dup_dev(l, n * 4), *ddlp = dup_dev(dlp, T * 4), *ddent = dup_dev(dent, T * 4);
  float *dlogp = dup_dev(NULL, T * 4), *dH = dup_dev(NULL, T * 4), *dlse = dup_dev(NULL, T * 4);
  float *dd = dup_dev(NULL, n * 4);
  int32_t *dtg = dup_dev(tg, T * 4);
  float *lp = rl_xmalloc(T * 4), *H = rl_xmalloc(T * 4), *lse = rl_xmalloc(T * 4), *d = rl_xmalloc(n * 4);
  rl_err e0;
  OK(ops_logprob_forward_cuda(dlogp, dH, dlse, dl, dtg, T, V, temp, NULL, e));
  ops_logprob_forward_cpu(lp, H, lse, l, tg, T, V, temp, &e0);
  float *glp = get(dlogp, T * 4), *gH = get(dH, T * 4), *gl = get(dlse, T * 4);
  snprintf(name, sizeof name, "logprob lse V=%d temp=%g", V, temp), cmp(name, gl, lse, T, 2e-6);
  snprintf(name, sizeof name, "logprob logp V=%d temp=%g", V, temp), cmp(name, glp, lp, T, 2e-5);
  snprintf(name, sizeof name, "logprob entropy V=%d temp=%g", V, temp), cmp(name, gH, H, T, 2e-5);
  OK(ops_logprob_backward_cuda(dd, ddlp, ddent, dl, dlse, dtg, T, V, temp, NULL, e));
  ops_logprob_backward_cpu(d, dlp, dent, l, lse, tg, T, V, temp, &e0);
  float *gd = get(dd, n * 4);
  snprintf(name, sizeof name, "logprob backward dlogits V=%d temp=%g", V, temp), cmp(name, gd, d, n, 1e-4);
  /* in place (dlogits aliases logits) gives the same bits; two runs too */
  OK(ops_logprob_backward_cuda(dl, ddlp, ddent, dl, dlse, dtg, T, V, temp, NULL, e));
  float *gd2 = get(dl, n * 4);
  snprintf(name, sizeof name, "logprob backward in place == out of place V=%d", V), same(name, gd2, gd, n * 4);
  free(glp), free(gH), free(gl), free(gd), free(gd2), free(l), free(dlp), free(dent), free(tg), free(lp), free(H);
  free(lse), free(d);
  CU(cudaFree(dl)); CU(cudaFree(ddlp)); CU(cudaFree(ddent)); CU(cudaFree(dlogp)); CU(cudaFree(dH));
  CU(cudaFree(dlse)); CU(cudaFree(dd)); CU(cudaFree(dtg));
}

int main(void) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("ops_gpu_test: no GPU — skipped\n");
    return 0;
  }
  double t0 = rl_now();
  test_bf16_and_embedding();
  test_rmsnorm(4099, 1024);
  test_rmsnorm(300, 1000);
  test_rmsnorm(77, 2560);
  { /* the fp8-block output: decode and prefill rows, widths with partial blocks and chunks */
    const int q8[][2] = {{1, 1024}, {3, 1024}, {64, 1024}, {13, 2048}, {1100, 1024}, {9, 200}, {5, 4100}, {8, 96}};
    for (size_t k = 0; k < sizeof q8 / sizeof *q8; k++)
      for (int mode = 0; mode < 3; mode++) test_rmsnorm_q8(q8[k][0], q8[k][1], mode, k % 2);
    test_rmsnorm_q8(7, 1024, 1, 1);
    test_rmsnorm_q8(70, 3072, 2, 1);
    const int wd[][2] = {{64, 1024}, {1, 1024}, {7, 2048}, {33, 4096}, {5, 128}, {9, 3072}, {1023, 1024}};
    for (size_t k = 0; k < sizeof wd / sizeof *wd; k++) test_rmsnorm_wide(wd[k][0], wd[k][1], (int)(k % 2));
    const int sq[][3] = {{1, 3072, 3072}, {3, 3072, 3072}, {64, 3072, 3072}, {1100, 3072, 3072},
                         {5, 768, 768}, {9, 48, 48}, {13, 16, 16}, {6, 2000, 2008}, {17, 1536, 1552}};
    const int was_pdl = ops_swiglu_q8_pdl(-1), was_l4 = ops_swiglu_q8_lane4(-1);
    for (int v = 0; v < 4; v++) { /* launched plainly and as a programmatic dependent; 16 or 4 values a thread */
      ops_swiglu_q8_pdl(v & 1);
      ops_swiglu_q8_lane4(v >> 1);
      for (size_t k = 0; k < sizeof sq / sizeof *sq; k++) test_swiglu_q8(sq[k][0], sq[k][1], sq[k][2], k % 2);
    }
    ops_swiglu_q8_pdl(was_pdl);
    ops_swiglu_q8_lane4(was_l4);
    { /* widths the fused kernel does not take are refused, not mis-written */
      rl_err e2 = {0};
      const ops_fp8_act qa = {(uint8_t *)16, (float *)16, 8, 8, 0};
      verdict(ops_swiglu_forward_q8_bx_cuda((uint16_t *)16, (uint16_t *)16, (uint16_t *)16, 3, 40, 40, &qa, NULL, &e2) ==
                  RL_EXIT_USAGE, "swiglu fp8 out refuses I % 16 != 0", e2.msg);
    }
  }
  test_rope_qk(128);
  test_rope_qk(64);
  const int lens[] = {1, 7, 128, 300, 1024}, lens2[] = {3, 65, 200, 31}, lens3[] = {513};
  for (int tc = 0; tc < 2; tc++) {
    ops_attn_impl impl = tc ? OPS_ATTN_TC : OPS_ATTN_SIMT;
    test_attention(lens, 5, 16, 8, 128, impl);
    test_attention(lens2, 4, 4, 2, 64, impl);
    test_attention(lens3, 1, 8, 8, 128, impl);
  }
  test_swiglu(257, 3072, 1);
  test_swiglu(100, 1001, 0);
  test_bx(1000, 1024, 16, 128, 3072);
  test_attention_bx(128);
  test_attention_bx(64);
  test_bx(77, 130, 3, 64, 343); /* widths not multiples of 4: the scalar paths */
  test_router(1000, 128, 8, 1);
  test_router(333, 64, 4, 0);
  test_logprob(16, 151936, 1.0f);
  test_logprob(9, 1001, 0.7f);
  printf("ops_gpu_test: %d checks passed, %d failed (%.1fs)\n", g.pass, g.fail, rl_now() - t0);
  return g.fail ? 1 : 0;
}
#else
int main(void) {
  printf("ops_gpu_test: built without CUDA — skipped\n");
  return 0;
}
#endif
