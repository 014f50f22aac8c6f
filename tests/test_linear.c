/* test_linear.c — linear_forward / linear_backward on the CPU: the forward is
 * exactly "quantize the activation with quant.h, then gemm_q_cpu" in every
 * format (so rollout and training, which both call it, share one path); the
 * backward products meet the FP64 bound of test_gemm.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "kernels/device.h"
#include "kernels/linear.h"
#include "test_gemm_util.h"

/* A weight [N][K] quantized in format f (ROWMAJOR scales), buffers malloc'd. */
static qtensor tl_weight(const uint16_t *w, int64_t N, int64_t K, qformat f, int ue8m0) {
  qtensor t = qtensor_bf16(w, N, K, 0);
  quant_opts o = {0};
  o.ue8m0 = ue8m0;
  t.fmt = f;
  switch (f) {
    case QFMT_BF16: break;
    case QFMT_FP8_BLOCK:
      t.block_rows = 128;
      t.data = malloc((size_t)(N * K));
      t.scales = malloc((size_t)(quant_cdiv(N, 128) * quant_cdiv(K, 128)) * 4);
      quant_fp8_block_weight_cpu(w, N, K, t.data, t.scales, &o, NULL);
      break;
    case QFMT_MXFP8:
      t.data = malloc((size_t)(N * K));
      t.scales = malloc((size_t)(N * quant_cdiv(K, 32)));
      quant_mxfp8_cpu(w, N, K, t.data, t.scales, &o, NULL);
      break;
    case QFMT_NVFP4:
      t.data = malloc((size_t)(N * quant_cdiv(K, 2)));
      t.scales = malloc((size_t)(N * quant_cdiv(K, 16)));
      quant_nvfp4_cpu(w, N, K, t.data, t.scales, &t.s_dec, &o, NULL);
      break;
  }
  return t;
}

static void tl_weight_free(qtensor *t) {
  if (t->fmt != QFMT_BF16) free(t->data), free(t->scales);
}

/* The activation quantized by hand, as linear_forward must do it. */
static qtensor tl_act(const uint16_t *x, int64_t M, int64_t K, qformat f, int ue8m0) {
  qtensor t = tl_weight(x, M, K, f, ue8m0);
  if (f == QFMT_FP8_BLOCK) { /* 1×128 tiles, not 128×128 blocks */
    free(t.scales);
    t.block_rows = 1;
    t.scales = malloc((size_t)(M * quant_cdiv(K, 128)) * 4);
    quant_opts o = {0};
    o.ue8m0 = ue8m0;
    quant_fp8_block_act_cpu(x, M, K, t.data, t.scales, &o, NULL);
  }
  return t;
}

TEST(linear_forward_is_quantize_then_gemm) {
  static const int64_t Ms[] = {1, 3, 129};
  static const qformat fmts[] = {QFMT_BF16, QFMT_FP8_BLOCK, QFMT_MXFP8, QFMT_NVFP4};
  int64_t N = 200, K = 264;
  uint16_t *w = tg_rand_bf16(N, K, 77);
  for (int fi = 0; fi < 4; fi++)
    for (int ue = 0; ue < (fmts[fi] == QFMT_FP8_BLOCK ? 2 : 1); ue++) {
      qformat f = fmts[fi];
      qtensor wq = tl_weight(w, N, K, f, ue);
      quant_policy p;
      quant_policy_init(&p, f == QFMT_NVFP4 ? QFMT_BF16 : f, f);
      p.ue8m0 = ue;
      for (int mi = 0; mi < 3; mi++) {
        int64_t M = Ms[mi];
        uint16_t *x = tg_rand_bf16(M, K, 300 + mi);
        uint16_t *out = malloc((size_t)(M * N) * 2), *ref = malloc((size_t)(M * N) * 2);
        rl_err e;
        gemm_info info;
        linear_opts lo = {NULL, &info};
        REQUIRE(linear_forward_ex(out, x, M, &wq, &p, &lo, &e) == 0);
        CHECK_EQ_I64(info.path, GEMM_PATH_CPU);
        qtensor xq = tl_act(x, M, K, f, ue);
        REQUIRE(gemm_q_cpu(ref, &xq, &wq, NULL, NULL, &e) == 0);
        CHECK_MSG(memcmp(out, ref, (size_t)(M * N) * 2) == 0, "%s%s M=%lld: differs from quantize+gemm",
                  qtensor_format_name(f), ue ? " ue8m0" : "", (long long)M);
        tl_weight_free(&xq);
        free(x), free(out), free(ref);
      }
      tl_weight_free(&wq);
    }
  free(w);
}

/* The BF16 forward is the plain BF16 product (no quantization anywhere). */
TEST(linear_forward_bf16_equals_gemm_bf16) {
  int64_t M = 17, N = 40, K = 72;
  uint16_t *x = tg_rand_bf16(M, K, 1), *w = tg_rand_bf16(N, K, 2);
  uint16_t *a = malloc((size_t)(M * N) * 2), *b = malloc((size_t)(M * N) * 2);
  quant_policy p;
  quant_policy_init(&p, QFMT_BF16, QFMT_BF16);
  qtensor wq = qtensor_bf16(w, N, K, 0);
  rl_err e;
  REQUIRE(linear_forward(a, x, M, &wq, &p, &e) == 0);
  gemm_bf16_args g = {M, N, K, 0, 1, x, w, b, 0, 0.0f, 0, NULL};
  REQUIRE(gemm_bf16_cpu(&g, &e) == 0);
  CHECK(memcmp(a, b, (size_t)(M * N) * 2) == 0);
  /* and it is the FP64 product within the BF16 bound */
  double *xd = tg_bf16_to_f64(x, M * K), *wd = tg_bf16_to_f64(w, N * K);
  float *af = tg_bf16_to_f32(a, M * N);
  tg_result r = tg_check(af, M, N, K, xd, wd, xd, wd, NULL, NULL, 0x1p-8);
  CHECK_MSG(r.worst <= 1.0, "error/bound %.3f", r.worst);
  free(x), free(w), free(a), free(b), free(xd), free(wd), free(af);
}

TEST(linear_forward_refuses_nonfinite_activation) {
  int64_t M = 4, N = 16, K = 256;
  uint16_t *x = tg_rand_bf16(M, K, 3), *w = tg_rand_bf16(N, K, 4);
  x[2 * K + 130] = 0x7fc0; /* NaN at row 2, column 130 */
  qtensor wq = tl_weight(w, N, K, QFMT_FP8_BLOCK, 0);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  uint16_t out[64];
  rl_err e;
  CHECK_EQ_I64(linear_forward(out, x, M, &wq, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "linear_forward activation");
  CHECK_CONTAINS(e.msg, "row 2, column 130");
  tl_weight_free(&wq);
  free(x), free(w);
}

TEST(linear_forward_argument_errors) {
  uint16_t x[16] = {0}, w[16] = {0}, out[16];
  quant_policy p;
  quant_policy_init(&p, QFMT_BF16, QFMT_BF16);
  qtensor wq = qtensor_bf16(w, 2, 8, 0);
  rl_err e;
  CHECK_EQ_I64(linear_forward(out, x, 2, &wq, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "policy is NULL");
  CHECK_EQ_I64(linear_forward(NULL, x, 2, &wq, &p, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(linear_forward(out, x, 0, &wq, &p, &e), 0); /* no tokens: nothing to do */
  wq.block_rows = 1;
  wq.fmt = QFMT_FP8_BLOCK;
  float s[1] = {1};
  wq.scales = s;
  CHECK_EQ_I64(linear_forward(out, x, 2, &wq, &p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "128×128 blocks");
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) { /* a device weight where no GPU is: a clear refusal */
    qtensor wd = qtensor_bf16(w, 2, 8, 1);
    CHECK_EQ_I64(linear_forward(out, x, 2, &wd, &p, &e), RL_EXIT_HARDWARE);
  }
}

TEST(quant_policy_defaults_and_check) {
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_NVFP4);
  CHECK_EQ_I64(p.fmt[LINEAR_ATTN], QFMT_FP8_BLOCK);
  CHECK_EQ_I64(p.fmt[LINEAR_EXPERT], QFMT_NVFP4);
  CHECK_EQ_I64(p.fmt[LINEAR_ROUTER], QFMT_BF16);
  CHECK_EQ_I64(p.fmt[LINEAR_LM_HEAD], QFMT_BF16);
  rl_err e;
  CHECK_EQ_I64(quant_policy_check(&p, &e), 0);
  p.fmt[LINEAR_ATTN] = QFMT_NVFP4;
  CHECK_EQ_I64(quant_policy_check(&p, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "class attention asks for it");
  CHECK_STREQ(qtensor_format_name(QFMT_FP8_BLOCK), "fp8-block");
  CHECK_STREQ(linear_class_name(LINEAR_LM_HEAD), "lm_head");
}

/* dX = dY·W, dW = dYᵀ·X against FP64; dW as BF16 is the RNE of the FP32 sum;
 * the FP32 accumulator adds up over micro-batches. */
TEST(linear_backward_vs_fp64_and_accumulation) {
  int64_t m = 45, n = 72, k = 136;
  uint16_t *dy = tg_rand_bf16(m, n, 21), *x = tg_rand_bf16(m, k, 22), *w = tg_rand_bf16(n, k, 23);
  uint16_t *dx = malloc((size_t)(m * k) * 2), *dw = malloc((size_t)(n * k) * 2);
  float *acc = calloc((size_t)(n * k), 4), *acc1 = malloc((size_t)(n * k) * 4);
  linear_bwd b = {m, n, k, dy, x, w, dx, dw, acc, 0, NULL};
  rl_err e;
  REQUIRE(linear_backward(&b, &e) == 0);
  memcpy(acc1, acc, (size_t)(n * k) * 4);
  /* dX[i][j] = Σ_t dY[i][t]·W[t][j]: rows of dY against columns of W */
  double *dyd = tg_bf16_to_f64(dy, m * n), *wt = malloc((size_t)(n * k) * 8);
  for (int64_t t = 0; t < n; t++)
    for (int64_t j = 0; j < k; j++) wt[j * n + t] = fmt_bf16_to_f32(w[t * k + j]);
  float *dxf = tg_bf16_to_f32(dx, m * k);
  tg_result r = tg_check(dxf, m, k, n, dyd, wt, dyd, wt, NULL, NULL, 0x1p-8);
  CHECK_MSG(r.worst <= 1.0, "dX: error/bound %.3f", r.worst);
  /* dW[i][j] = Σ_t dY[t][i]·X[t][j] */
  double *dyt = malloc((size_t)(m * n) * 8), *xt = malloc((size_t)(m * k) * 8);
  for (int64_t t = 0; t < m; t++) {
    for (int64_t i = 0; i < n; i++) dyt[i * m + t] = fmt_bf16_to_f32(dy[t * n + i]);
    for (int64_t j = 0; j < k; j++) xt[j * m + t] = fmt_bf16_to_f32(x[t * k + j]);
  }
  float *dwf = tg_bf16_to_f32(dw, n * k);
  r = tg_check(dwf, n, k, m, dyt, xt, dyt, xt, NULL, NULL, 0x1p-8);
  CHECK_MSG(r.worst <= 1.0, "dW: error/bound %.3f", r.worst);
  r = tg_check(acc, n, k, m, dyt, xt, dyt, xt, NULL, NULL, 0x1p-24);
  CHECK_MSG(r.worst <= 1.0, "dW FP32: error/bound %.3f", r.worst);
  int same = 1;
  for (int64_t i = 0; i < n * k; i++) same &= dw[i] == fmt_bf16_from_f32(acc1[i]);
  CHECK_MSG(same, "BF16 dW is not the RNE of the FP32 dW");
  /* a second micro-batch with the same data doubles the accumulator exactly */
  linear_bwd b2 = {m, n, k, dy, x, w, NULL, NULL, acc, 0, NULL};
  REQUIRE(linear_backward(&b2, &e) == 0);
  int doubled = 1;
  for (int64_t i = 0; i < n * k; i++) doubled &= acc[i] == 2.0f * acc1[i];
  CHECK_MSG(doubled, "dw_acc after two identical micro-batches is not exactly twice one");
  free(dy), free(x), free(w), free(dx), free(dw), free(acc), free(acc1), free(dyd), free(wt);
  free(dxf), free(dyt), free(xt), free(dwf);
}
