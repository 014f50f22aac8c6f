/* test_quant_doc.c — the CPU quantizers on adversarial inputs against bytes that
 * a second, independent reading of FORMATS.md produced (numpy + ml_dtypes,
 * tests/oracle/doc_quant_cases.py, written from the doc's words only; its
 * output is tests/test_quant_doc_cases.h). Cases: E4M3 and E2M1 ties after
 * scaling, amax exactly 448·2^k and one BF16 step above it, the largest BF16 as
 * a lone outlier, BF16 subnormals, zero blocks of negative zeros, partial
 * blocks (N or K = 1, 17, 129, 200), ue8m0 scales. The FP32-input variants must
 * give the same bytes on the widened input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/formats.h"
#include "kernels/quant.h"
#include "test_quant_doc_cases.h"

/* n bytes equal; reports the first few differences (index, got, want). */
static void check_bytes(const char *what, const void *got, const void *want, size_t n, size_t elem) {
  const uint8_t *g = got, *w = want;
  int bad = 0;
  for (size_t i = 0; i < n; i += elem)
    if (memcmp(g + i, w + i, elem) && bad++ < 4) {
      uint32_t gv = 0, wv = 0;
      memcpy(&gv, g + i, elem), memcpy(&wv, w + i, elem);
      CHECK_MSG(0, "%s: element %zu: got 0x%0*x want 0x%0*x", what, i / elem, (int)(2 * elem), gv,
                (int)(2 * elem), wv);
    }
  CHECK_MSG(bad == 0, "%s: %d of %zu elements differ", what, bad, n / elem);
}

/* The input widened to FP32 (for the _f32 variants). */
static float *widen(const uint16_t *x, int64_t n) {
  float *f = rl_xmalloc((size_t)n * 4 + 4);
  fmt_bf16_to_f32_n(x, f, n);
  return f;
}

/* fp8-block (weight 128×128 when weight, else act 1×128), FP32 and ue8m0 scales. */
static void check_fp8(const char *name, int weight, const uint16_t *x, int64_t N, int64_t K,
                      const uint8_t *q, const uint32_t *s, const uint8_t *q_ue, const uint32_t *s_ue) {
  int64_t ns = (weight ? quant_cdiv(N, 128) : N) * quant_cdiv(K, 128);
  uint8_t *gq = rl_xmalloc((size_t)(N * K));
  float *gs = rl_xmalloc((size_t)ns * 4), *xf = widen(x, N * K);
  char what[128];
  for (int ue = 0; ue < 2; ue++)
    for (int f32 = 0; f32 < 2; f32++) {
      quant_opts o = {.ue8m0 = ue};
      quant_stats st;
      int rc = weight ? (f32 ? quant_fp8_block_weight_f32_cpu(xf, N, K, gq, gs, &o, &st)
                             : quant_fp8_block_weight_cpu(x, N, K, gq, gs, &o, &st))
                      : (f32 ? quant_fp8_block_act_f32_cpu(xf, N, K, gq, gs, &o, &st)
                             : quant_fp8_block_act_cpu(x, N, K, gq, gs, &o, &st));
      CHECK_EQ_I64(rc, QUANT_OK);
      snprintf(what, sizeof what, "%s%s%s data", name, ue ? " ue8m0" : "", f32 ? " (f32 input)" : "");
      check_bytes(what, gq, ue ? q_ue : q, (size_t)(N * K), 1);
      snprintf(what, sizeof what, "%s%s%s scales", name, ue ? " ue8m0" : "", f32 ? " (f32 input)" : "");
      check_bytes(what, gs, ue ? s_ue : s, (size_t)ns * 4, 4);
    }
  free(gq), free(gs), free(xf);
}

TEST(quant_doc_fp8_block_act_ties_outlier_zeros) {
  check_fp8("act_3x129", 0, act_3x129_x, 3, 129, act_3x129_q, act_3x129_s, act_3x129_q_ue, act_3x129_s_ue);
}

TEST(quant_doc_fp8_block_weight_partial_blocks) {
  check_fp8("w_129x1", 1, w_129x1_x, 129, 1, w_129x1_q, w_129x1_s, w_129x1_q_ue, w_129x1_s_ue);
  check_fp8("w_1x200", 1, w_1x200_x, 1, 200, w_1x200_q, w_1x200_s, w_1x200_q_ue, w_1x200_s_ue);
}

TEST(quant_doc_mxfp8_rceil_edges) {
  enum { N = 2, K = 96 };
  uint8_t q[N * K], s[N * K / 32];
  float *xf = widen(mx_2x96_x, N * K);
  for (int f32 = 0; f32 < 2; f32++) {
    quant_stats st;
    int rc = f32 ? quant_mxfp8_f32_cpu(xf, N, K, q, s, NULL, &st) : quant_mxfp8_cpu(mx_2x96_x, N, K, q, s, NULL, &st);
    CHECK_EQ_I64(rc, QUANT_OK);
    check_bytes(f32 ? "mx_2x96 data (f32 input)" : "mx_2x96 data", q, mx_2x96_q, sizeof q, 1);
    check_bytes(f32 ? "mx_2x96 scales (f32 input)" : "mx_2x96 scales", s, mx_2x96_s, sizeof s, 1);
  }
  free(xf);
}

/* NVFP4: packed data, E4M3 block scales and S_dec's bits. */
static void check_nv(const char *name, const uint16_t *x, int64_t N, int64_t K, const uint8_t *q,
                     const uint8_t *s, uint32_t sdec) {
  int64_t nq = N * quant_cdiv(K, 2), ns = N * quant_cdiv(K, 16);
  uint8_t *gq = rl_xmalloc((size_t)nq), *gs = rl_xmalloc((size_t)ns);
  float *xf = widen(x, N * K), d = 0;
  char what[128];
  for (int f32 = 0; f32 < 2; f32++) {
    quant_stats st;
    memset(gq, 0xAA, (size_t)nq); /* the padding nibble of an odd K must be written */
    int rc = f32 ? quant_nvfp4_f32_cpu(xf, N, K, gq, gs, &d, NULL, &st) : quant_nvfp4_cpu(x, N, K, gq, gs, &d, NULL, &st);
    CHECK_EQ_I64(rc, QUANT_OK);
    snprintf(what, sizeof what, "%s data%s", name, f32 ? " (f32 input)" : "");
    check_bytes(what, gq, q, (size_t)nq, 1);
    snprintf(what, sizeof what, "%s scales%s", name, f32 ? " (f32 input)" : "");
    check_bytes(what, gs, s, (size_t)ns, 1);
    CHECK_EQ_U64(qf_f32_bits(d), sdec);
  }
  free(gq), free(gs), free(xf);
}

TEST(quant_doc_nvfp4_ties_zero_blocks_odd_k) {
  check_nv("nv_2x48", nv_2x48_x, 2, 48, nv_2x48_q, nv_2x48_s, nv_2x48_sdec);
  check_nv("nv_1x17", nv_1x17_x, 1, 17, nv_1x17_q, nv_1x17_s, nv_1x17_sdec);
  check_nv("nv_2x16_order", nv_2x16_order_x, 2, 16, nv_2x16_order_q, nv_2x16_order_s, nv_2x16_order_sdec);
  check_nv("nv_1x32_enc", nv_1x32_enc_x, 1, 32, nv_1x32_enc_q, nv_1x32_enc_s, nv_1x32_enc_sdec);
  check_nv("nv_1x32_zero", nv_1x32_zero_x, 1, 32, nv_1x32_zero_q, nv_1x32_zero_s, nv_1x32_zero_sdec);
}

/* An FP32 block whose amax/448 underflows to 0 (amax < ~3.1e-43): the scale is
 * the smallest subnormal 2^-149 with FP32 scales as with ue8m0 (it was 0, and
 * the block's elements NaN (0/0) or ±448, status OK). 7·2^-149 / 2^-149 = 7 =
 * E4M3 0x4E; −3·2^-149 → −3 = 0xC4; zeros stay 0x00. */
TEST(quant_fp8_block_subnormal_block_scale_is_not_zero) {
  enum { K = 128 };
  float x[K] = {0};
  x[0] = 0x7p-149f, x[5] = -0x3p-149f;
  uint8_t q[K];
  float s[1];
  for (int ue = 0; ue < 2; ue++) {
    quant_opts o = {.ue8m0 = ue};
    quant_stats st;
    CHECK_EQ_I64(quant_fp8_block_act_f32_cpu(x, 1, K, q, s, &o, &st), QUANT_OK);
    CHECK(s[0] == 0x1p-149f);
    CHECK_EQ_I64(q[0], 0x4E);
    CHECK_EQ_I64(q[5], 0xC4);
    CHECK_EQ_I64(q[1], 0x00);
    CHECK_EQ_I64(q[127], 0x00);
  }
  CHECK(fmt_fp8_block_scale(0x7p-149f, 0) == 0x1p-149f);
  CHECK(fmt_fp8_block_scale(448.0f, 0) == 1.0f);
}
