/* test_gemm.c — the CPU reference GEMM (kernels/gemm.h) against an FP64
 * reference on random data, with per-element error bounds derived here.
 *
 * Notation: x, w the BF16 operand values (what the model holds), x̂, ŵ the
 * dequantized values the GEMM multiplies, y* = Σ_k x_k·w_k in FP64, ŷ the
 * returned value; u = 2^-24 (FP32 unit roundoff), r = 2^-8 (BF16 output RNE:
 * 8 significant bits).
 *
 * (1) FP32 accumulation. The reference sums K products in 8 lanes combined
 *     pairwise; each product of two dequantized FP32 values is rounded once
 *     (BF16×BF16 and E4M3-derived products are exact), and alpha (NVFP4's
 *     S_dec_x·S_dec_w) multiplies once. Standard forward-error analysis gives
 *     |fl(S) − S| ≤ (K+2)·u·(1+o(u))·Σ|x̂_k ŵ_k|, with S = Σ x̂_k ŵ_k.
 * (2) Output rounding: BF16 RNE adds r·|fl(S)| (FP32 output: u·|fl(S)|).
 * (3) Quantization (fp8-block, MXFP8): an element q = E4M3_RNE(x/s) with
 *     |x/s| ≤ 448 has |q − x/s| ≤ 2^-4·|x/s| (normal range, 3 mantissa bits)
 *     or ≤ 2^-10 (subnormal spacing 2^-9); the FP32 division x/s and the
 *     dequantization q·s are rounded once each (fp8-block; exact for the
 *     power-of-two scales of MXFP8), so e_k := |x̂_k − x_k| ≤ (2^-4 + 4u)|x_k| +
 *     2^-10·s_k, s_k the scale of x_k's block. Then
 *     |Σ x̂ŵ − Σ xw| ≤ Q := Σ_k (e^x_k |w_k| + |x_k| e^w_k + e^x_k e^w_k).
 * Bound:  |ŷ − y*| ≤ (1 + r)·(Q + (K+2)·u·1.001·Σ|x̂ŵ|) + r·|y*|.
 * For BF16 operands Q = 0 (x̂ = x). Aggregate: the relative Frobenius error
 * ‖ŷ − y*‖/‖y*‖ is ≤ 2^-8 for BF16 (output rounding, r/√3 expected) and,
 * for fp8-block on these (Gaussian-like, row-wise rescaled) data, between
 * 2^-9 (it did quantize) and 2^-4 (the per-element relative bound). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/device.h"
#include "kernels/formats.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "test_gemm_util.h"

/* Shapes of the model family, scaled down for CI: M from decode to prefill,
 * K/N including values that are not multiples of 128 (or of 16/8). */
static const int64_t SHAPES[][3] = {
    /* M, N, K */
    {1, 200, 136},  {3, 96, 320},   {8, 256, 384}, {64, 72, 1000},
    {129, 160, 264}, {512, 256, 384}, {8, 24, 40},
};
#define N_SHAPES (int)(sizeof SHAPES / sizeof SHAPES[0])

TEST(gemm_bf16_cpu_vs_fp64) {
  for (int s = 0; s < N_SHAPES; s++) {
    int64_t M = SHAPES[s][0], N = SHAPES[s][1], K = SHAPES[s][2];
    uint16_t *x = tg_rand_bf16(M, K, 11 + s), *w = tg_rand_bf16(N, K, 101 + s);
    uint16_t *y = malloc((size_t)(M * N) * 2);
    float *y32 = malloc((size_t)(M * N) * 4);
    qtensor xq = qtensor_bf16(x, M, K, 0), wq = qtensor_bf16(w, N, K, 0);
    gemm_info info;
    rl_err e;
    REQUIRE(gemm_q_cpu(y, &xq, &wq, NULL, &info, &e) == 0);
    CHECK_EQ_I64(info.path, GEMM_PATH_CPU);
    gemm_opts of = {0, 0, 1, NULL};
    REQUIRE(gemm_q_cpu(y32, &xq, &wq, &of, NULL, &e) == 0);
    double *xd = tg_bf16_to_f64(x, M * K), *wd = tg_bf16_to_f64(w, N * K);
    float *yf = tg_bf16_to_f32(y, M * N);
    tg_result r = tg_check(yf, M, N, K, xd, wd, xd, wd, NULL, NULL, 0x1p-8);
    tg_result r32 = tg_check(y32, M, N, K, xd, wd, xd, wd, NULL, NULL, 0x1p-24);
    CHECK_MSG(r.worst <= 1.0, "M=%lld N=%lld K=%lld: error/bound %.3f at %lld", (long long)M,
              (long long)N, (long long)K, r.worst, (long long)r.worst_at);
    CHECK_MSG(r32.worst <= 1.0, "FP32 out M=%lld N=%lld K=%lld: error/bound %.3f", (long long)M,
              (long long)N, (long long)K, r32.worst);
    CHECK_MSG(r.rel_fro <= 0x1p-8, "BF16 relative Frobenius error %.3g > 2^-8", r.rel_fro);
    CHECK_MSG(r32.rel_fro <= 1e-6, "FP32-out relative Frobenius error %.3g > 1e-6", r32.rel_fro);
    free(x), free(w), free(y), free(y32), free(xd), free(wd), free(yf);
  }
}

/* fp8-block operands from the project's quantizers, checked against FP64 of
 * the BF16 values they came from, with bound (3) computed element by element. */
static void check_fp8_block_shape(int64_t M, int64_t N, int64_t K, int ue8m0, int seed) {
  uint16_t *x = tg_rand_bf16(M, K, seed), *w = tg_rand_bf16(N, K, seed + 1000);
  tg_fp8 fx, fw;
  tg_quant_fp8(&fx, x, M, K, 0, ue8m0);
  tg_quant_fp8(&fw, w, N, K, 1, ue8m0);
  float *y = malloc((size_t)(M * N) * 4);
  uint16_t *yb = malloc((size_t)(M * N) * 2);
  rl_err e;
  gemm_opts of = {0, 0, 1, NULL};
  REQUIRE(gemm_q_cpu(yb, &fx.t, &fw.t, NULL, NULL, &e) == 0);
  REQUIRE(gemm_q_cpu(y, &fx.t, &fw.t, &of, NULL, &e) == 0);
  double *xd = tg_bf16_to_f64(x, M * K), *wd = tg_bf16_to_f64(w, N * K);
  double *xh = tg_f32_to_f64(fx.deq, M * K), *wh = tg_f32_to_f64(fw.deq, N * K);
  float *ybf = tg_bf16_to_f32(yb, M * N);
  tg_result r = tg_check(ybf, M, N, K, xd, wd, xh, wh, fx.err, fw.err, 0x1p-8);
  tg_result r32 = tg_check(y, M, N, K, xd, wd, xh, wh, fx.err, fw.err, 0x1p-24);
  /* against the dequantized operands only the accumulation remains */
  tg_result rq = tg_check(y, M, N, K, xh, wh, xh, wh, NULL, NULL, 0x1p-24);
  CHECK_MSG(r.worst <= 1.0 && r32.worst <= 1.0 && rq.worst <= 1.0,
            "fp8-block%s M=%lld N=%lld K=%lld: error/bound bf16 %.3f f32 %.3f deq %.3f",
            ue8m0 ? " ue8m0" : "", (long long)M, (long long)N, (long long)K, r.worst, r32.worst,
            rq.worst);
  CHECK_MSG(r.rel_fro > 0x1p-9 && r.rel_fro <= 0x1p-4,
            "fp8-block M=%lld: relative Frobenius error %.4f outside (2^-9, 2^-4]", (long long)M,
            r.rel_fro);
  /* the cuBLASLt scale layouts give the same bytes on the CPU */
  tg_fp8_to_hopper(&fx);
  tg_fp8_to_hopper(&fw);
  uint16_t *yh = malloc((size_t)(M * N) * 2);
  REQUIRE(gemm_q_cpu(yh, &fx.t, &fw.t, NULL, NULL, &e) == 0);
  CHECK_MSG(memcmp(yh, yb, (size_t)(M * N) * 2) == 0, "HOPPER layouts change the result (M=%lld)",
            (long long)M);
  tg_fp8_free(&fx), tg_fp8_free(&fw);
  free(x), free(w), free(y), free(yb), free(yh), free(xd), free(wd), free(xh), free(wh), free(ybf);
}

TEST(gemm_fp8_block_cpu_vs_fp64) {
  for (int s = 0; s < N_SHAPES; s++) check_fp8_block_shape(SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], 0, 7 + s);
  check_fp8_block_shape(64, 200, 264, 1, 99); /* power-of-two (ue8m0) scales */
}

/* MXFP8 against FP64 of the BF16 values (bound (3) with exact power-of-two
 * scales), NVFP4 against FP64 of its exact dequantized operands (S_dec as alpha). */
TEST(gemm_mxfp8_nvfp4_cpu_vs_fp64) {
  int64_t M = 33, N = 48, K = 160;
  uint16_t *x = tg_rand_bf16(M, K, 5), *w = tg_rand_bf16(N, K, 6);
  rl_err e;
  /* MXFP8 */
  int64_t kb = quant_cdiv(K, 32);
  uint8_t *qx = malloc((size_t)(M * K)), *qw = malloc((size_t)(N * K));
  uint8_t *sx = malloc((size_t)(M * kb)), *sw = malloc((size_t)(N * kb));
  REQUIRE(quant_mxfp8_cpu(x, M, K, qx, sx, NULL, NULL) == 0);
  REQUIRE(quant_mxfp8_cpu(w, N, K, qw, sw, NULL, NULL) == 0);
  qtensor tx = qtensor_bf16(NULL, M, K, 0), tw = qtensor_bf16(NULL, N, K, 0);
  tx.fmt = tw.fmt = QFMT_MXFP8;
  tx.data = qx, tx.scales = sx, tw.data = qw, tw.scales = sw;
  float *y = malloc((size_t)(M * N) * 4);
  gemm_opts of = {0, 0, 1, NULL};
  REQUIRE(gemm_q_cpu(y, &tx, &tw, &of, NULL, &e) == 0);
  float *dx = malloc((size_t)(M * K) * 4), *dw = malloc((size_t)(N * K) * 4);
  dequant_mxfp8_cpu(qx, sx, M, K, dx, NULL);
  dequant_mxfp8_cpu(qw, sw, N, K, dw, NULL);
  double *xd = tg_bf16_to_f64(x, M * K), *wd = tg_bf16_to_f64(w, N * K);
  double *xh = tg_f32_to_f64(dx, M * K), *wh = tg_f32_to_f64(dw, N * K);
  double *ex = malloc((size_t)(M * K) * 8), *ew = malloc((size_t)(N * K) * 8);
  for (int64_t i = 0; i < M * K; i++)
    ex[i] = 0x1p-4 * fabs(xd[i]) + 0x1p-10 * fmt_e8m0_to_f32(sx[(i / K) * kb + (i % K) / 32]);
  for (int64_t i = 0; i < N * K; i++)
    ew[i] = 0x1p-4 * fabs(wd[i]) + 0x1p-10 * fmt_e8m0_to_f32(sw[(i / K) * kb + (i % K) / 32]);
  tg_result r = tg_check(y, M, N, K, xd, wd, xh, wh, ex, ew, 0x1p-24);
  CHECK_MSG(r.worst <= 1.0, "mxfp8: error/bound %.3f", r.worst);
  CHECK_MSG(r.rel_fro > 0x1p-9 && r.rel_fro <= 0x1p-4, "mxfp8: rel Frobenius %.4f", r.rel_fro);
  /* swizzled (Blackwell) scales give the same bytes */
  uint8_t *swz = calloc(quant_layout_swizzle_bytes(N, kb), 1);
  quant_layout_scales_to_swizzled(sw, N, kb, swz);
  tw.scales = swz, tw.layout = QLAYOUT_BLACKWELL_128x4;
  float *y2 = malloc((size_t)(M * N) * 4);
  REQUIRE(gemm_q_cpu(y2, &tx, &tw, &of, NULL, &e) == 0);
  CHECK(memcmp(y, y2, (size_t)(M * N) * 4) == 0);
  /* NVFP4 */
  int64_t kp = quant_cdiv(K, 2), k16 = quant_cdiv(K, 16);
  uint8_t *px = malloc((size_t)(M * kp)), *pw = malloc((size_t)(N * kp));
  uint8_t *bx = malloc((size_t)(M * k16)), *bw = malloc((size_t)(N * k16));
  float sdx, sdw;
  REQUIRE(quant_nvfp4_cpu(x, M, K, px, bx, &sdx, NULL, NULL) == 0);
  REQUIRE(quant_nvfp4_cpu(w, N, K, pw, bw, &sdw, NULL, NULL) == 0);
  qtensor nx = tx, nw = tw;
  nx.fmt = nw.fmt = QFMT_NVFP4;
  nw.layout = QLAYOUT_ROWMAJOR;
  nx.data = px, nx.scales = bx, nx.s_dec = sdx, nw.data = pw, nw.scales = bw, nw.s_dec = sdw;
  REQUIRE(gemm_q_cpu(y, &nx, &nw, &of, NULL, &e) == 0);
  dequant_nvfp4_cpu(px, bx, 1.0f, M, K, dx, NULL);
  dequant_nvfp4_cpu(pw, bw, 1.0f, N, K, dw, NULL);
  for (int64_t i = 0; i < M * K; i++) xh[i] = (double)dx[i] * sdx;
  for (int64_t i = 0; i < N * K; i++) wh[i] = (double)dw[i] * sdw;
  r = tg_check(y, M, N, K, xh, wh, xh, wh, NULL, NULL, 0x1p-24);
  CHECK_MSG(r.worst <= 1.0, "nvfp4: error/bound %.3f vs its dequantized operands", r.worst);
  /* and against the BF16 product, each operand element within E2M1's half gap
   * of the exact one: with u = float(sb)·S_dec the block's unit, the gap is
   * 0.5u below 2u, u below 4u, 2u up to 6u (a block whose E4M3 scale rounded
   * down clips by less), so |x − x̂| ≤ |x|/4 + u/4 */
  for (int64_t i = 0; i < M * K; i++)
    ex[i] = 0.25 * fabs(xd[i]) + 0.25 * fmt_e4m3_to_f32(bx[(i / K) * k16 + (i % K) / 16]) * sdx;
  for (int64_t i = 0; i < N * K; i++)
    ew[i] = 0.25 * fabs(wd[i]) + 0.25 * fmt_e4m3_to_f32(bw[(i / K) * k16 + (i % K) / 16]) * sdw;
  tg_result rt = tg_check(y, M, N, K, xd, wd, xh, wh, ex, ew, 0x1p-24);
  CHECK_MSG(rt.worst <= 1.0, "nvfp4 vs BF16 product: error/bound %.3f", rt.worst);
  CHECK_MSG(rt.rel_fro > 0x1p-6 && rt.rel_fro < 0.2, "nvfp4 vs BF16 product: rel Frobenius %.4f",
            rt.rel_fro);
  free(x), free(w), free(qx), free(qw), free(sx), free(sw), free(y), free(y2), free(dx), free(dw);
  free(xd), free(wd), free(xh), free(wh), free(ex), free(ew), free(swz), free(px), free(pw), free(bx);
  free(bw);
}

/* The backward products: any transposes, BF16 and FP32 outputs, FP32 accumulation. */
TEST(gemm_bf16_cpu_transposes_and_accumulate) {
  int64_t m = 37, n = 72, k = 129;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      uint16_t *a = tg_rand_bf16(m, k, 3 + ta), *b = tg_rand_bf16(n, k, 9 + tb);
      /* reference operands in the orientation the call describes */
      double *ad = malloc((size_t)(m * k) * 8), *bd = malloc((size_t)(n * k) * 8);
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < k; j++)
          ad[i * k + j] = fmt_bf16_to_f32(ta ? a[j * m + i] : a[i * k + j]);
      for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < k; j++)
          bd[i * k + j] = fmt_bf16_to_f32(tb ? b[i * k + j] : b[j * n + i]);
      float *c = malloc((size_t)(m * n) * 4);
      for (int64_t i = 0; i < m * n; i++) c[i] = 0.25f * (float)(i % 7);
      float *c0 = malloc((size_t)(m * n) * 4);
      memcpy(c0, c, (size_t)(m * n) * 4);
      gemm_bf16_args g = {m, n, k, ta, tb, a, b, c, 1, 1.0f, 0, NULL};
      rl_err e;
      REQUIRE(gemm_bf16_cpu(&g, &e) == 0);
      tg_result r = tg_check_base(c, c0, m, n, k, ad, bd, ad, bd, NULL, NULL, 0x1p-24);
      CHECK_MSG(r.worst <= 1.0, "ta=%d tb=%d accumulate: error/bound %.3f", ta, tb, r.worst);
      uint16_t *cb = malloc((size_t)(m * n) * 2);
      gemm_bf16_args gb = {m, n, k, ta, tb, a, b, cb, 0, 0.0f, 0, NULL};
      REQUIRE(gemm_bf16_cpu(&gb, &e) == 0);
      float *cf = tg_bf16_to_f32(cb, m * n);
      r = tg_check(cf, m, n, k, ad, bd, ad, bd, NULL, NULL, 0x1p-8);
      CHECK_MSG(r.worst <= 1.0, "ta=%d tb=%d bf16: error/bound %.3f", ta, tb, r.worst);
      free(a), free(b), free(ad), free(bd), free(c), free(c0), free(cb), free(cf);
    }
}

/* Every output is summed by one thread in one order: the thread count does not matter. */
TEST(gemm_cpu_thread_count_invariant) {
  int64_t M = 96, N = 80, K = 520;
  uint16_t *x = tg_rand_bf16(M, K, 1), *w = tg_rand_bf16(N, K, 2);
  tg_fp8 fx, fw;
  tg_quant_fp8(&fx, x, M, K, 0, 0);
  tg_quant_fp8(&fw, w, N, K, 1, 0);
  float *y1 = malloc((size_t)(M * N) * 4), *y2 = malloc((size_t)(M * N) * 4);
  gemm_opts of = {0, 0, 1, NULL};
  rl_err e;
  int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  REQUIRE(gemm_q_cpu(y1, &fx.t, &fw.t, &of, NULL, &e) == 0);
  omp_set_num_threads(3);
  REQUIRE(gemm_q_cpu(y2, &fx.t, &fw.t, &of, NULL, &e) == 0);
  omp_set_num_threads(saved);
  CHECK(memcmp(y1, y2, (size_t)(M * N) * 4) == 0);
  tg_fp8_free(&fx), tg_fp8_free(&fw);
  free(x), free(w), free(y1), free(y2);
}

TEST(gemm_rejects_bad_operands) {
  uint16_t a[64] = {0}, b[64] = {0}, y[64];
  rl_err e;
  qtensor x = qtensor_bf16(a, 2, 8, 0), w = qtensor_bf16(b, 4, 6, 0);
  CHECK_EQ_I64(gemm_q_cpu(y, &x, &w, NULL, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "K mismatch: x is [2][8], w is [4][6]");
  w.cols = 8;
  w.fmt = QFMT_FP8_BLOCK;
  CHECK_EQ_I64(gemm_q_cpu(y, &x, &w, NULL, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "w (fp8-block) has no scales");
  float s[4] = {1, 1, 1, 1};
  w.scales = s;
  CHECK_EQ_I64(gemm_q_cpu(y, &x, &w, NULL, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "fp8-block w must have 128×128 blocks");
  w.block_rows = 128;
  CHECK_EQ_I64(gemm_q_cpu(y, &x, &w, NULL, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "x is bf16 but w is fp8-block");
  float c[8];
  gemm_bf16_args g = {2, 4, 8, 0, 1, a, b, c, 0, 1.0f, 0, NULL};
  CHECK_EQ_I64(gemm_bf16_cpu(&g, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "needs an FP32 C");
  CHECK_STREQ(gemm_path_name(GEMM_PATH_FP8_DEQUANT_F32), "fp8-block→f32-dequant");
  CHECK_STREQ(gemm_path_name(GEMM_PATH_EMULATED), "emulated-bf16");
  CHECK_STREQ(gemm_path_name(GEMM_PATH_FP8_BLOCK_FUSED), "fp8-block-fused");
  /* device operands: a clear error where there is no GPU (never touches the pointers) */
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    x = qtensor_bf16(a, 2, 8, 1), w = qtensor_bf16(b, 4, 8, 1);
    int rc = gemm_q(y, &x, &w, NULL, NULL, &e);
    CHECK_EQ_I64(rc, RL_EXIT_HARDWARE);
    CHECK_CONTAINS(e.msg, di.built_with_cuda ? "no CUDA device" : "built without CUDA");
  }
}

/* The reference is batch invariant by construction: a row's output is the
 * same whether it is computed alone (decode) or among 129 rows (prefill). */
TEST(gemm_cpu_rows_do_not_depend_on_batch) {
  int64_t M = 129, N = 72, K = 264;
  uint16_t *x = tg_rand_bf16(M, K, 31), *w = tg_rand_bf16(N, K, 32);
  tg_fp8 fx, fw;
  tg_quant_fp8(&fx, x, M, K, 0, 0);
  tg_quant_fp8(&fw, w, N, K, 1, 0);
  uint16_t *all = malloc((size_t)(M * N) * 2), one[72];
  rl_err e;
  REQUIRE(gemm_q_cpu(all, &fx.t, &fw.t, NULL, NULL, &e) == 0);
  int64_t kb = quant_cdiv(K, 128), same = 0;
  for (int64_t r = 0; r < M; r += 16) {
    qtensor row = fx.t;
    row.rows = 1;
    row.data = fx.q + r * K;
    row.scales = fx.s + r * kb;
    REQUIRE(gemm_q_cpu(one, &row, &fw.t, NULL, NULL, &e) == 0);
    same += memcmp(one, all + r * N, (size_t)N * 2) == 0;
  }
  CHECK_EQ_I64(same, 9); /* rows 0, 16, …, 128 */
  tg_fp8_free(&fx), tg_fp8_free(&fw);
  free(x), free(w), free(all);
}

/* The small-M GEMM's K split: a function of (N, K) only, slices of whole
 * stages covering K exactly, ≥ 2 stages each where K has them, enough CTAs. */
TEST(gemm_small_plan_splits_k_by_shape) {
  static const int64_t nk[][4] = {
      /* N, K, slices, slice_k */
      /* (the default CTA target, 198: e.g. 2048 rows = 64 tiles want ⌈198 / 64⌉ = 4 slices) */
      {1024, 1024, 4, 256},  {2048, 1024, 4, 256}, {3072, 1024, 3, 384}, {1024, 2048, 6, 384},
      {1024, 3072, 6, 512},  {151936, 1024, 1, 1024}, {96, 40, 1, 128},   {200, 264, 2, 256},
      {40, 1 << 20, 32, 32768},
  };
  for (size_t i = 0; i < sizeof nk / sizeof nk[0]; i++) {
    int s = 0;
    int64_t sk = 0;
    gemm_small_plan(nk[i][0], nk[i][1], &s, &sk);
    CHECK_EQ_I64(s, nk[i][2]);
    CHECK_EQ_I64(sk, nk[i][3]);
    CHECK_EQ_I64(sk % GEMM_SMALL_BK, 0);
    CHECK((s - 1) * sk < nk[i][1] && s * sk >= nk[i][1]); /* no empty slice, K covered */
  }
  for (int64_t N = 1; N <= 4096; N += 37)
    for (int64_t K = 8; K <= 8192; K += 248) {
      int s;
      int64_t sk;
      gemm_small_plan(N, K, &s, &sk);
      int64_t tiles = (N + GEMM_SMALL_BN - 1) / GEMM_SMALL_BN, stages = (K + 127) / 128;
      CHECK_MSG(s >= 1 && s <= GEMM_SMALL_MAX_SLICES && (s - 1) * sk < K && s * sk >= K,
                "N=%lld K=%lld: %d slices of %lld", (long long)N, (long long)K, s, (long long)sk);
      /* ≥ 2 stages a slice, unless K has a single stage */
      CHECK_MSG(stages == 1 || sk >= 2 * GEMM_SMALL_BK, "N=%lld K=%lld: slice_k %lld", (long long)N,
                (long long)K, (long long)sk);
      /* no more slices than the CTA target needs */
      CHECK_MSG((s - 1) * tiles < GEMM_SMALL_CTAS || s == 1, "N=%lld K=%lld: %d slices × %lld tiles",
                (long long)N, (long long)K, s, (long long)tiles);
    }
}

/* gemm_small_bf16_cuda's refusals (checked before any device access) and its
 * answer where no GPU is usable. */
TEST(gemm_small_rejects_bad_arguments) {
  static uint16_t buf[64] __attribute__((aligned(16)));
  static float y[64];
  rl_err e;
  CHECK_EQ_I64(gemm_small_check(y, buf, buf, 257, 8, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "M=257 rows exceeds the small-M kernel's 256");
  CHECK_EQ_I64(gemm_small_check(y, buf, buf, 2, 8, 12, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "K=12 is not a multiple of 8");
  CHECK_EQ_I64(gemm_small_check(y, buf + 1, buf, 2, 8, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "must be 16-byte aligned");
  CHECK_EQ_I64(gemm_small_check(y, buf, buf + 4, 2, 8, 8, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(gemm_small_check(y, NULL, buf, 2, 8, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "is NULL");
  CHECK_EQ_I64(gemm_small_check(y, buf, buf, -1, 8, 8, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(gemm_small_check(y, buf, buf, 256, 8, 8, &e), 0);
  CHECK_EQ_I64(gemm_small_check(NULL, NULL, NULL, 0, 8, 8, &e), 0); /* nothing to do */
  CHECK_EQ_I64(gemm_small_bf16_cuda(y, buf, buf, 300, 8, 8, NULL, &e), RL_EXIT_USAGE);
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    CHECK_EQ_I64(gemm_small_bf16_cuda(y, buf, buf, 2, 8, 8, NULL, &e), RL_EXIT_HARDWARE);
    CHECK_CONTAINS(e.msg, di.built_with_cuda ? "no usable CUDA device" : "built without CUDA");
  }
}

/* The grouped and SwiGLU launches' K split (the plan of their weight rows, whole
 * 32-row tiles per segment: a one-segment group has the plain call's plan), the
 * knobs (validated, restorable), and the argument checks. */
TEST(gemm_small_group_swiglu_plan_knobs_checks) {
  const gemm_small_seg qkv[3] = {{NULL, NULL, 2048}, {NULL, NULL, 1024}, {NULL, NULL, 1024}};
  const gemm_small_seg odd[4] = {{NULL, NULL, 200}, {NULL, NULL, 0}, {NULL, NULL, 72}, {NULL, NULL, 40}};
  CHECK_EQ_I64(gemm_small_group_rows(qkv, 3), 4096);
  CHECK_EQ_I64(gemm_small_group_rows(odd, 4), 224 + 96 + 64);
  int s = 0;
  int64_t sk = 0;
  gemm_small_plan(gemm_small_group_rows(qkv, 3), 1024, &s, &sk); /* the decode qkv group: 2 slices */
  CHECK_EQ_I64(s, 2);
  CHECK_EQ_I64(sk, 512);
  gemm_small_plan(2 * 3072, 1024, &s, &sk); /* the decode gate/up pair: 192 tiles, 2 slices to reach 198 */
  CHECK_EQ_I64(s, 2);
  CHECK_EQ_I64(sk, 512);
  gemm_small_plan(2 * 3072 + 256, 1024, &s, &sk); /* 200 tiles fill the target alone */
  CHECK_EQ_I64(s, 1);
  CHECK_EQ_I64(sk, 1024);
  for (int64_t N = 1; N <= 3000; N += 29) {
    const gemm_small_seg one = {NULL, NULL, N};
    int s1, s2;
    int64_t k1, k2;
    gemm_small_plan(N, 1000, &s1, &k1);
    gemm_small_plan(gemm_small_group_rows(&one, 1), 1000, &s2, &k2);
    CHECK_MSG(s1 == s2 && k1 == k2, "N=%lld: plain %d×%lld, group %d×%lld", (long long)N, s1, (long long)k1, s2,
              (long long)k2);
  }
  /* knobs: set, read back, invalid values fall back, NULL restores the environment's */
  gemm_small_tune env = gemm_small_tune_get(), t = {132, 1, 64, GEMM_SMALL_REDUCE_GLOBAL, 0}, bad = {0, 99, 48, 7, 5};
  char buf[96];
  gemm_small_tune_set(&t);
  gemm_small_tune got = gemm_small_tune_get();
  CHECK(got.ctas == 132 && got.min_stages == 1 && got.bn == 64 && got.reduce == GEMM_SMALL_REDUCE_GLOBAL && got.pdl == 0);
  CHECK_EQ_I64(gemm_small_ctas(), 132);
  CHECK_STREQ(gemm_small_tune_str(&got, buf, sizeof buf), "ctas=132 min_stages=1 bn=64 reduce=global pdl=0");
  gemm_small_plan(1024, 1024, &s, &sk); /* 32 tiles: 5 slices wanted, of 2 stages → 4 of 256 */
  CHECK_EQ_I64(s, 4);
  CHECK_EQ_I64(sk, 256);
  gemm_small_plan(1024, 3072, &s, &sk); /* 5 wanted, 1-stage slices allowed → 5 of 640 */
  CHECK_EQ_I64(s, 5);
  CHECK_EQ_I64(sk, 640);
  gemm_small_tune_set(&bad);
  got = gemm_small_tune_get();
  CHECK(got.ctas == GEMM_SMALL_CTAS && got.min_stages == 2 && got.bn == 0 && got.reduce == GEMM_SMALL_REDUCE_CLUSTER &&
        got.pdl == 1);
  CHECK_STREQ(gemm_small_tune_str(&got, buf, sizeof buf), "ctas=198 min_stages=2 bn=auto reduce=cluster pdl=1");
  gemm_small_tune_set(NULL);
  got = gemm_small_tune_get();
  CHECK(got.ctas == env.ctas && got.min_stages == env.min_stages && got.bn == env.bn && got.reduce == env.reduce &&
        got.pdl == env.pdl);

  /* argument checks */
  static uint16_t buf16[64] __attribute__((aligned(16)));
  static float y[64] __attribute__((aligned(16)));
  rl_err e;
  gemm_small_seg seg[5] = {{y, buf16, 8}, {y, buf16 + 4, 8}, {NULL, NULL, 0}, {y, buf16, 8}, {y, buf16, 8}};
  CHECK_EQ_I64(gemm_small_group_check(seg, 0, buf16, 2, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "0 segments");
  CHECK_EQ_I64(gemm_small_group_check(seg, 5, buf16, 2, 8, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(gemm_small_group_check(NULL, 1, buf16, 2, 8, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(gemm_small_group_check(seg, 2, buf16, 2, 8, &e), RL_EXIT_USAGE); /* w of segment 1 misaligned */
  CHECK_CONTAINS(e.msg, "segment 1 of 2");
  CHECK_CONTAINS(e.msg, "16-byte aligned");
  seg[1].w = buf16;
  CHECK_EQ_I64(gemm_small_group_check(seg, 4, buf16, 2, 8, &e), 0); /* an empty segment needs no pointers */
  CHECK_EQ_I64(gemm_small_group_check(seg, 2, buf16, 2, 12, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "K=12 is not a multiple of 8");
  CHECK_EQ_I64(gemm_small_group_check(seg, 2, buf16, 257, 8, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(gemm_small_swiglu_check(buf16, buf16, buf16, buf16, 2, 8, 8, &e), 0);
  CHECK_EQ_I64(gemm_small_swiglu_check((uint16_t *)((char *)buf16 + 1), buf16, buf16, buf16, 2, 8, 8, &e),
               RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "2-byte aligned");
  CHECK_EQ_I64(gemm_small_swiglu_check(buf16, buf16, buf16, buf16 + 4, 2, 8, 8, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(gemm_small_swiglu_check(buf16, buf16, NULL, buf16, 2, 8, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "is NULL");
  CHECK_EQ_I64(gemm_small_swiglu_check(NULL, NULL, NULL, NULL, 0, 8, 8, &e), 0); /* nothing to do */
  CHECK_EQ_I64(gemm_small_bf16_swiglu_cuda(buf16, buf16, buf16, buf16, 300, 8, 8, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "M=300 rows exceeds");
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    CHECK_EQ_I64(gemm_small_bf16_group_cuda(seg, 2, buf16, 2, 8, NULL, &e), RL_EXIT_HARDWARE);
    CHECK_CONTAINS(e.msg, di.built_with_cuda ? "no usable CUDA device" : "built without CUDA");
    CHECK_EQ_I64(gemm_small_bf16_swiglu_cuda(buf16, buf16, buf16, buf16, 2, 8, 8, NULL, &e), RL_EXIT_HARDWARE);
    CHECK_CONTAINS(e.msg, di.built_with_cuda ? "no usable CUDA device" : "built without CUDA");
  }
}

/* gemm_small_fp8_group_cuda's argument checks (no device needed): fp8-block 128×128
 * device weights of K columns, K % 16, M ≤ 256, aligned codes/scales/outputs; and
 * without a GPU the call says why (and _supported() is 0). */
/* gemm_fp8q (the fp8-block GEMM that quantizes x inside): its refusals, and without
 * a GPU a clear hardware error; linear_fp8q is off unless asked. */
TEST(gemm_fp8q_checks) {
  static uint8_t q[4096] __attribute__((aligned(16)));
  static float sc[256] __attribute__((aligned(16)));
  static uint16_t xb[4096] __attribute__((aligned(16))), yb[4096] __attribute__((aligned(16)));
  qtensor w = qtensor_bf16(NULL, 64, 256, 1);
  w.fmt = QFMT_FP8_BLOCK, w.block_rows = 128, w.data = q, w.scales = sc, w.layout = QLAYOUT_HOPPER_WEIGHT;
  rl_err e;
  CHECK_EQ_I64(gemm_fp8q_check(yb, xb, &w, 8, &e), 0);
  CHECK_EQ_I64(gemm_fp8q_check(yb, xb, NULL, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "weight is NULL");
  CHECK_EQ_I64(gemm_fp8q_check(yb, xb + 1, &w, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "16-byte aligned");
  CHECK_EQ_I64(gemm_fp8q_check((uint16_t *)((char *)yb + 1), xb, &w, 8, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(gemm_fp8q_check(NULL, xb, &w, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "is NULL");
  CHECK_EQ_I64(gemm_fp8q_check(NULL, NULL, &w, 0, &e), 0); /* M = 0: nothing to do */
  CHECK_EQ_I64(gemm_fp8q_check(yb, xb, &w, -1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "out of range");
  qtensor w2 = w;
  w2.cols = 264;
  CHECK_EQ_I64(gemm_fp8q_check(yb, xb, &w2, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "K=264 is not a multiple of 16");
  w2 = w, w2.fmt = QFMT_MXFP8;
  CHECK_EQ_I64(gemm_fp8q_check(yb, xb, &w2, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "this kernel takes fp8-block 128×128");
  w2 = w, w2.on_device = 0;
  CHECK_EQ_I64(gemm_fp8q_check(yb, xb, &w2, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "host memory");
  w2 = w, w2.layout = QLAYOUT_HOPPER_ACT;
  CHECK_EQ_I64(gemm_fp8q_check(yb, xb, &w2, 8, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "scale layout");
  CHECK_EQ_I64(linear_fp8q(-1), getenv("RLRUN_LINEAR_FP8Q") && !strcmp(getenv("RLRUN_LINEAR_FP8Q"), "1"));
  /* the cluster size: RLRUN_FP8Q_CLUSTER "1", "2" or "4", else 0 (automatic); set
   * overrides (1, 2 and 4 as such, anything else 0), then restored */
  const int cl = gemm_fp8q_cluster(-1);
  const char *clv = getenv("RLRUN_FP8Q_CLUSTER");
  CHECK_EQ_I64(cl, !clv ? 0 : !strcmp(clv, "1") ? 1 : !strcmp(clv, "2") ? 2 : !strcmp(clv, "4") ? 4 : 0);
  CHECK_EQ_I64(gemm_fp8q_cluster(4), 4);
  CHECK_EQ_I64(gemm_fp8q_cluster(-1), 4);
  CHECK_EQ_I64(gemm_fp8q_cluster(1), 1);
  CHECK_EQ_I64(gemm_fp8q_cluster(3), 0);
  CHECK_EQ_I64(gemm_fp8q_cluster(-1), 0);
  CHECK_EQ_I64(gemm_fp8q_cluster(2), 2);
  CHECK_EQ_I64(gemm_fp8q_cluster(cl), cl);
  /* the automatic size: 4 while the tiles fit one wave, 2 beyond; never wider than
   * the column tiles; a fixed size only narrowed to them */
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(0, 4, 12, 132), 4);    /* 512 × 3072: 48 tiles */
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(0, 11, 12, 132), 4);   /* 132 tiles: one wave exactly */
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(0, 12, 12, 132), 2);   /* 144 */
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(0, 64, 32, 132), 2);   /* 8192³ */
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(0, 4, 3, 132), 2);     /* N = 768: 3 column tiles */
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(0, 1, 1, 132), 1);     /* N ≤ 256 */
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(7, 64, 32, 132), 2);   /* not a size: automatic */
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(0, 1, 8, 0), 2);       /* no SM count known: pairs */
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(1, 1, 8, 132), 1);
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(4, 64, 32, 132), 4);
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(4, 64, 2, 132), 2);
  CHECK_EQ_I64(gemm_fp8q_cluster_pick(2, 1, 1, 132), 1);
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    CHECK_EQ_I64(gemm_fp8q_supported(), 0);
    CHECK_EQ_I64(gemm_fp8q_cuda(yb, xb, &w, 8, NULL, NULL, &e), RL_EXIT_HARDWARE);
    CHECK_CONTAINS(e.msg, di.built_with_cuda ? "needs an sm_90 GPU" : "built without CUDA");
  }
}

TEST(gemm_small_fp8_group_checks) {
  static uint8_t q[4096] __attribute__((aligned(16)));
  static float sc[256] __attribute__((aligned(16)));
  static uint16_t yb[512] __attribute__((aligned(16)));
  qtensor w = qtensor_bf16(NULL, 64, 256, 1);
  w.fmt = QFMT_FP8_BLOCK, w.block_rows = 128, w.data = q, w.scales = sc, w.layout = QLAYOUT_HOPPER_WEIGHT;
  gemm_small_seg8 seg[5] = {{yb, &w}, {yb, &w}, {yb, &w}, {yb, &w}, {yb, &w}};
  rl_err e;
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 2, q, sc, 8, 256, 1, &e), 0);
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 0, q, sc, 8, 256, 1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "0 segments");
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 5, q, sc, 8, 256, 1, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 1, q, sc, 8, 240, 1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "has 256 columns, x has K=240");
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 1, q, sc, 257, 256, 1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "M=257 rows exceeds");
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 1, q + 8, sc, 8, 256, 1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "16-byte aligned");
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 1, q, NULL, 8, 256, 1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "is NULL");
  seg[1].y = (char *)yb + 1; /* a BF16 output 1 byte off; FP32 asks 4-byte alignment */
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 2, q, sc, 8, 256, 1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "segment 1 of 2");
  seg[1].y = (char *)yb + 2;
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 2, q, sc, 8, 256, 1, &e), 0);
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 2, q, sc, 8, 256, 0, &e), RL_EXIT_USAGE);
  seg[1].y = yb;
  qtensor w2 = w;
  w2.cols = 264, w2.data = q;
  gemm_small_seg8 s2 = {yb, &w2};
  CHECK_EQ_I64(gemm_small_fp8_group_check(&s2, 1, q, sc, 8, 264, 1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "K=264 is not a multiple of 16");
  w2 = w, w2.fmt = QFMT_BF16;
  CHECK_EQ_I64(gemm_small_fp8_group_check(&s2, 1, q, sc, 8, 256, 1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "this kernel takes fp8-block 128×128");
  w2 = w, w2.on_device = 0;
  CHECK_EQ_I64(gemm_small_fp8_group_check(&s2, 1, q, sc, 8, 256, 1, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "host memory");
  CHECK_EQ_I64(gemm_small_fp8_group_check(seg, 1, NULL, NULL, 0, 256, 1, &e), 0); /* M = 0: nothing to do */
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    CHECK_EQ_I64(gemm_small_fp8_group_supported(), 0);
    CHECK_EQ_I64(gemm_small_fp8_group_cuda(seg, 2, q, sc, 1, 8, 8, 256, 1, NULL, &e), RL_EXIT_HARDWARE);
    CHECK_CONTAINS(e.msg, di.built_with_cuda ? "no usable CUDA device" : "built without CUDA");
  }
}

/* gemm_small_fp8_swiglu_cuda's argument checks (no device needed): the group's checks
 * of both weights, the pair's shape, N % 16, K ≥ 16, the fp8 output's pad rows and
 * alignment. */
TEST(gemm_small_fp8_swiglu_checks) {
  static uint8_t q[4096] __attribute__((aligned(16))), qo_codes[2048] __attribute__((aligned(16)));
  static float sc[256] __attribute__((aligned(16))), qo_sc[64] __attribute__((aligned(16)));
  static uint16_t act[1024] __attribute__((aligned(16)));
  qtensor w = qtensor_bf16(NULL, 64, 256, 1);
  w.fmt = QFMT_FP8_BLOCK, w.block_rows = 128, w.data = q, w.scales = sc, w.layout = QLAYOUT_HOPPER_WEIGHT;
  qtensor u = w;
  gemm_small_q8out qo = {qo_codes, qo_sc, 8, 8, 0};
  rl_err e;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 256, &e), 0);
  qo.rows_pad = 5;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 256, &e), 0); /* M … M rounded up to 8 */
  qo.rows_pad = 4;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 256, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "pad rows 4 for M=5");
  qo.rows_pad = 16;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 256, &e), RL_EXIT_USAGE);
  qo.rows_pad = 8, qo.scale_ld = 7;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 256, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "scale ld 7");
  qo.scale_ld = 8;
  u.rows = 48;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 256, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "gate has 64 rows, up 48");
  u = w, u.rows = w.rows = 40;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 256, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "a multiple of 16 needed");
  u.rows = w.rows = 64;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 240, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "gemm_small_fp8_swiglu: segment 0 of 2");
  u.fmt = QFMT_BF16;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 256, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "segment 1 of 2");
  u = w;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act + 1, &qo, &w, &u, q, sc, 5, 256, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "16-byte aligned");
  qo.q = NULL;
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, &qo, &w, &u, q, sc, 5, 256, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "is NULL");
  CHECK_EQ_I64(gemm_small_fp8_swiglu_check(act, NULL, &w, &u, q, sc, 5, 256, &e), RL_EXIT_USAGE);
  qo.q = qo_codes;
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    CHECK_EQ_I64(gemm_small_fp8_swiglu_cuda(act, &qo, &w, &u, q, sc, 1, 8, 5, 256, NULL, &e), RL_EXIT_HARDWARE);
    CHECK_CONTAINS(e.msg, di.built_with_cuda ? "no usable CUDA device" : "built without CUDA");
  }
}
