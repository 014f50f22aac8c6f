/* test_quant_layout.c — scale layout conversions for cuBLASLt: Hopper's
 * M-contiguous 1×128 activation scales and K-padded 128×128 weight scales, and
 * Blackwell's swizzled 128×4 tiles (checked against torchao's to_blocked,
 * re-derived here as index arithmetic). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/formats.h"
#include "kernels/quant.h"

TEST(quant_layout_hopper_act_scales) {
  int64_t M = 5, kb = 3, ld = 8;
  float src[15], dst[24], back[15];
  for (int i = 0; i < 15; i++) src[i] = (float)(i + 1);
  quant_layout_fp8_act_scales_to_cublaslt(src, M, kb, ld, dst);
  CHECK_NEAR(dst[0 * ld + 0], 1, 0);  /* (m0, k0) */
  CHECK_NEAR(dst[0 * ld + 1], 4, 0);  /* (m1, k0) = src[1*3+0] */
  CHECK_NEAR(dst[2 * ld + 4], 15, 0); /* (m4, k2) */
  CHECK_NEAR(dst[1 * ld + 6], 1, 0);  /* padding column is 1.0 */
  quant_layout_fp8_act_scales_from_cublaslt(dst, M, kb, ld, back);
  CHECK(memcmp(src, back, sizeof src) == 0);
}

TEST(quant_layout_hopper_act_fused_equals_converted) {
  /* the quantizer writing cuBLASLt's layout directly = row-major + conversion */
  int64_t M = 9, K = 300, kb = 3, ld = 16;
  uint16_t x[9 * 300];
  for (int i = 0; i < M * K; i++) x[i] = fmt_bf16_from_f32((float)((i * 37) % 101) - 50.0f);
  uint8_t q1[2700], q2[2700];
  float s_row[27], s_conv[48], s_fused[48];
  CHECK_EQ_I64(quant_fp8_block_act_cpu(x, M, K, q1, s_row, NULL, NULL), QUANT_OK);
  quant_layout_fp8_act_scales_to_cublaslt(s_row, M, kb, ld, s_conv);
  quant_opts o = {.scale_layout = QLAYOUT_HOPPER_ACT, .scale_ld = ld};
  for (int i = 0; i < 48; i++) s_fused[i] = 1.0f; /* padding is the caller's */
  CHECK_EQ_I64(quant_fp8_block_act_cpu(x, M, K, q2, s_fused, &o, NULL), QUANT_OK);
  CHECK(memcmp(q1, q2, sizeof q1) == 0);
  CHECK(memcmp(s_conv, s_fused, sizeof s_fused) == 0);
  o.scale_ld = 4; /* ld < M is refused */
  CHECK_EQ_I64(quant_fp8_block_act_cpu(x, M, K, q2, s_fused, &o, NULL), QUANT_BAD_ARGS);
}

TEST(quant_layout_hopper_weight_scales) {
  int64_t nb = 2, kb = 5, kp = 8;
  float src[10], dst[16], back[10];
  for (int i = 0; i < 10; i++) src[i] = (float)i + 0.5f;
  quant_layout_fp8_weight_scales_to_cublaslt(src, nb, kb, dst);
  CHECK_NEAR(dst[1 * kp + 4], 9.5, 0);
  CHECK_NEAR(dst[0 * kp + 5], 1.0, 0);
  CHECK_NEAR(dst[1 * kp + 7], 1.0, 0);
  quant_layout_fp8_weight_scales_from_cublaslt(dst, nb, kb, back);
  CHECK(memcmp(src, back, sizeof src) == 0);
}

/* torchao's to_blocked: pad to (128·nrb, 4·ncb), view (nrb,128,ncb,4),
 * permute (0,2,1,3), reshape (-1,4,32,4), transpose(1,2), flatten. The flat
 * index of element (r, c) in that sequence, computed step by step. */
static size_t to_blocked_index(int64_t r, int64_t c, int64_t cols) {
  int64_t ncb = (cols + 3) / 4;
  int64_t rb = r / 128, ri = r % 128, cb = c / 4, ci = c % 4;
  int64_t tile = rb * ncb + cb;           /* after permute: [nrb][ncb][128][4] */
  int64_t i4 = ri / 32, i32 = ri % 32;    /* reshape 128 → (4, 32) */
  return (size_t)(tile * 512 + i32 * 16 + i4 * 4 + ci); /* transpose → [32][4][4] */
}

TEST(quant_layout_blackwell_swizzle) {
  int64_t rows = 300, cols = 9; /* pads to 384 × 12 */
  CHECK_EQ_U64(quant_layout_swizzle_bytes(rows, cols), 384 * 12);
  uint8_t *src = rl_xmalloc(300 * 9), *dst = rl_xmalloc(384 * 12), *back = rl_xmalloc(300 * 9);
  for (int i = 0; i < rows * cols; i++) src[i] = (uint8_t)(i * 7 + 1);
  quant_layout_scales_to_swizzled(src, rows, cols, dst);
  int bad = 0, nonzero = 0;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) {
      bad += dst[to_blocked_index(r, c, cols)] != src[r * cols + c];
      bad += quant_layout_swizzle_offset(r, c, cols) != to_blocked_index(r, c, cols);
    }
  CHECK_EQ_I64(bad, 0);
  for (size_t i = 0; i < 384 * 12; i++) nonzero += dst[i] != 0;
  CHECK(nonzero <= 300 * 9);
  CHECK_EQ_U64(dst[to_blocked_index(299, 11, cols)], 0); /* padding column is zero */
  /* hand-checked offsets: row 33 col 1 → 1·16 + 1·4 + 1; row 128 → tile ncb */
  CHECK_EQ_U64(quant_layout_swizzle_offset(33, 1, cols), 21);
  CHECK_EQ_U64(quant_layout_swizzle_offset(128, 0, cols), 3 * 512);
  CHECK_EQ_U64(quant_layout_swizzle_offset(0, 4, cols), 512);
  quant_layout_scales_from_swizzled(dst, rows, cols, back);
  CHECK(memcmp(src, back, 300 * 9) == 0);
  free(src), free(dst), free(back);
}

TEST(quant_layout_hopper_weight_fused_equals_converted) {
  int64_t N = 130, K = 200, nb = 2, kb = 2;
  uint16_t *x = rl_xmalloc((size_t)(N * K) * 2);
  for (int64_t i = 0; i < N * K; i++) x[i] = fmt_bf16_from_f32((float)((i * 53) % 97) * 0.01f);
  uint8_t *q = rl_xmalloc((size_t)(N * K));
  float s_row[4], s_conv[8], s_fused[8];
  CHECK_EQ_I64(quant_fp8_block_weight_cpu(x, N, K, q, s_row, NULL, NULL), QUANT_OK);
  quant_layout_fp8_weight_scales_to_cublaslt(s_row, nb, kb, s_conv);
  for (int i = 0; i < 8; i++) s_fused[i] = 1.0f;
  quant_opts o = {.scale_layout = QLAYOUT_HOPPER_WEIGHT};
  CHECK_EQ_I64(quant_fp8_block_weight_cpu(x, N, K, q, s_fused, &o, NULL), QUANT_OK);
  CHECK(memcmp(s_conv, s_fused, sizeof s_fused) == 0);
  CHECK(s_fused[4] != 1.0f && s_fused[2] == 1.0f);
  free(x), free(q);
}
