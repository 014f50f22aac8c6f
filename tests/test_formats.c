/* test_formats.c — the element codecs of kernels/formats.h against the
 * ml_dtypes oracle tables (tests/oracle/ci_formats.py) and hand-checked values. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/formats.h"
#include "test_quant_fixtures.h"

/* FP32 bit patterns compare equal, or both are NaN. */
static int same_f32(float a, float b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  return qf_f32_bits(a) == qf_f32_bits(b);
}

TEST(formats_e4m3_encode_every_bf16) {
  size_t n = 0;
  uint8_t *want = fixture_load("formats/bf16_e4m3.u8", &n);
  REQUIRE(want && n == 65536);
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    uint8_t got = fmt_e4m3_from_f32(fmt_bf16_to_f32((uint16_t)h));
    if (got != want[h] && bad++ < 5)
      CHECK_MSG(0, "bf16 0x%04x (%g): e4m3 got 0x%02x want 0x%02x", h,
                fmt_bf16_to_f32((uint16_t)h), got, want[h]);
  }
  CHECK_EQ_I64(bad, 0);
  free(want);
}

TEST(formats_e2m1_encode_every_bf16) {
  size_t n = 0;
  uint8_t *want = fixture_load("formats/bf16_e2m1.u8", &n);
  REQUIRE(want && n == 65536);
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    uint8_t got = fmt_e2m1_from_f32(fmt_bf16_to_f32((uint16_t)h));
    if (got != want[h] && bad++ < 5)
      CHECK_MSG(0, "bf16 0x%04x (%g): e2m1 got 0x%x want 0x%x", h, fmt_bf16_to_f32((uint16_t)h),
                got, want[h]);
  }
  CHECK_EQ_I64(bad, 0);
  free(want);
}

TEST(formats_decode_all_codes) {
  size_t n4 = 0, n2 = 0, n8 = 0;
  float *w4 = fixture_load("formats/e4m3_decode.f32", &n4);
  float *w2 = fixture_load("formats/e2m1_decode.f32", &n2);
  float *w8 = fixture_load("formats/e8m0_decode.f32", &n8);
  REQUIRE(w4 && w2 && w8 && n4 == 1024 && n2 == 64 && n8 == 1024);
  for (int c = 0; c < 256; c++) {
    CHECK_MSG(same_f32(fmt_e4m3_to_f32((uint8_t)c), w4[c]), "e4m3 0x%02x: got %g want %g", c,
              fmt_e4m3_to_f32((uint8_t)c), w4[c]);
    CHECK_MSG(same_f32(fmt_e8m0_to_f32((uint8_t)c), w8[c]), "e8m0 0x%02x: got %g want %g", c,
              fmt_e8m0_to_f32((uint8_t)c), w8[c]);
    /* every finite code survives encode(decode(c)) */
    if (!isnan(w4[c])) CHECK_EQ_U64(fmt_e4m3_from_f32(fmt_e4m3_to_f32((uint8_t)c)), c);
  }
  for (int c = 0; c < 16; c++) {
    CHECK_MSG(same_f32(fmt_e2m1_to_f32((uint8_t)c), w2[c]), "e2m1 0x%x: got %g want %g", c,
              fmt_e2m1_to_f32((uint8_t)c), w2[c]);
    CHECK_EQ_U64(fmt_e2m1_from_f32(fmt_e2m1_to_f32((uint8_t)c)), c);
  }
  free(w4), free(w2), free(w8);
}

TEST(formats_e8m0_rceil_boundaries_and_random) {
  size_t ni = 0, no = 0;
  float *in = fixture_load("formats/rceil_in.f32", &ni);
  uint8_t *want = fixture_load("formats/rceil_out.u8", &no);
  REQUIRE(in && want && ni / 4 == no && no > 1000000);
  int bad = 0;
  for (size_t i = 0; i < no; i++) {
    uint8_t got = fmt_e8m0_rceil(in[i]);
    if (got != want[i] && bad++ < 5)
      CHECK_MSG(0, "rceil(%a): got %u want %u", in[i], got, want[i]);
  }
  CHECK_EQ_I64(bad, 0);
  /* hand-checked: exact powers stay, one ulp above rounds up, zero/NaN/Inf */
  CHECK_EQ_U64(fmt_e8m0_rceil(1.0f), 127);
  CHECK_EQ_U64(fmt_e8m0_rceil(nextafterf(1.0f, 2.0f)), 128);
  CHECK_EQ_U64(fmt_e8m0_rceil(nextafterf(1.0f, 0.0f)), 127);
  CHECK_EQ_U64(fmt_e8m0_rceil(0.0f), 0);
  CHECK_EQ_U64(fmt_e8m0_rceil(NAN), 0xFF);
  CHECK_EQ_U64(fmt_e8m0_rceil(INFINITY), 254);
  CHECK_EQ_U64(fmt_e8m0_rceil(3.0e38f), 254);
  free(in), free(want);
}

TEST(formats_bf16_rne) {
  size_t ni = 0, no = 0;
  float *in = fixture_load("formats/bf16_in.f32", &ni);
  uint16_t *want = fixture_load("formats/bf16_out.u16", &no);
  REQUIRE(in && want && ni / 4 == no / 2);
  int bad = 0;
  for (size_t i = 0; i < no / 2; i++) {
    uint16_t got = fmt_bf16_from_f32(in[i]);
    int ok = isnan(in[i]) ? isnan(fmt_bf16_to_f32(got)) && (got >> 15) == (want[i] >> 15)
                          : got == want[i];
    if (!ok && bad++ < 5) CHECK_MSG(0, "bf16(%a): got 0x%04x want 0x%04x", in[i], got, want[i]);
  }
  CHECK_EQ_I64(bad, 0);
  free(in), free(want);
  /* beyond the largest BF16 rounds to Inf (no saturation); Inf stays Inf; NaN stays a quiet NaN */
  CHECK_EQ_U64(fmt_bf16_from_f32(FLT_MAX), 0x7f80);
  CHECK_EQ_U64(fmt_bf16_from_f32(-FLT_MAX), 0xff80);
  CHECK_EQ_U64(fmt_bf16_from_f32(0x1.fefffep127f), 0x7f7f); /* below the midpoint to Inf: the largest BF16 */
  CHECK_EQ_U64(fmt_bf16_from_f32(INFINITY), 0x7f80);
  CHECK_EQ_U64(fmt_bf16_from_f32(qf_f32_from_bits(0x7f800001u)) & 0x7fc0, 0x7fc0);
}

TEST(formats_hand_values) {
  /* E4M3: RNE at the top, satfinite, subnormals, NaN keeps its sign */
  CHECK_EQ_U64(fmt_e4m3_from_f32(448.0f), 0x7E);
  CHECK_EQ_U64(fmt_e4m3_from_f32(463.9f), 0x7E);
  CHECK_EQ_U64(fmt_e4m3_from_f32(464.0f), 0x7E); /* tie would go to 480: saturates */
  CHECK_EQ_U64(fmt_e4m3_from_f32(1e30f), 0x7E);
  CHECK_EQ_U64(fmt_e4m3_from_f32(-INFINITY), 0xFE);
  CHECK_EQ_U64(fmt_e4m3_from_f32(NAN), 0x7F);
  CHECK_EQ_U64(fmt_e4m3_from_f32(-NAN), 0xFF);
  CHECK_EQ_U64(fmt_e4m3_from_f32(0x1p-9f), 0x01);  /* smallest subnormal */
  CHECK_EQ_U64(fmt_e4m3_from_f32(0x1p-10f), 0x00); /* tie → even (0) */
  CHECK_EQ_U64(fmt_e4m3_from_f32(0x1.8p-10f), 0x01);
  CHECK_EQ_U64(fmt_e4m3_from_f32(0x1.ep-7f), 0x08); /* 15/16·2^-6 rounds up to min normal */
  CHECK_EQ_U64(fmt_e4m3_from_f32(-0.0f), 0x80);
  CHECK_NEAR(fmt_e4m3_to_f32(0x7E), 448.0, 0);
  CHECK_NEAR(fmt_e4m3_to_f32(0x01), 0x1p-9, 0);
  /* E2M1: {0, .5, 1, 1.5, 2, 3, 4, 6}, ties to even, saturating */
  CHECK_EQ_U64(fmt_e2m1_from_f32(0.25f), 0x0);
  CHECK_EQ_U64(fmt_e2m1_from_f32(0.75f), 0x2);
  CHECK_EQ_U64(fmt_e2m1_from_f32(2.5f), 0x4);
  CHECK_EQ_U64(fmt_e2m1_from_f32(3.5f), 0x6);
  CHECK_EQ_U64(fmt_e2m1_from_f32(5.0f), 0x6);
  CHECK_EQ_U64(fmt_e2m1_from_f32(5.01f), 0x7);
  CHECK_EQ_U64(fmt_e2m1_from_f32(-100.0f), 0xF);
  CHECK_EQ_U64(fmt_e2m1_from_f32(NAN), 0x0);
  /* BF16: ties to even, NaN stays NaN */
  CHECK_EQ_U64(fmt_bf16_from_f32(1.0f), 0x3F80);
  CHECK_EQ_U64(fmt_bf16_from_f32(qf_f32_from_bits(0x3F808000u)), 0x3F80);
  CHECK_EQ_U64(fmt_bf16_from_f32(qf_f32_from_bits(0x3F818000u)), 0x3F82);
  CHECK(isnan(fmt_bf16_to_f32(fmt_bf16_from_f32(NAN))));
  /* E8M0 */
  CHECK_NEAR(fmt_e8m0_to_f32(127), 1.0, 0);
  CHECK_NEAR(fmt_e8m0_inv_f32(0), 0x1p127, 0);
  CHECK_NEAR(fmt_e8m0_inv_f32(254), 0x1p-127, 0);
  /* power-of-two ceiling (fp8-block ue8m0), subnormals included */
  CHECK_NEAR(fmt_pow2_ceil_f32(3.0f), 4.0, 0);
  CHECK_NEAR(fmt_pow2_ceil_f32(0.25f), 0.25, 0);
  CHECK_NEAR(fmt_pow2_ceil_f32(0x1.8p-140f), 0x1p-139, 0);
  CHECK_NEAR(fmt_pow2_ceil_f32(0x1.fp-127f), 0x1p-126, 0);
}

TEST(formats_nvfp4_scale_rules) {
  /* amax = 2688 → S_enc = 1, S_dec = 1; block amax 6 → sb = 1.0 (0x38) */
  CHECK_NEAR(fmt_nvfp4_senc(2688.0f), 1.0, 0);
  CHECK_NEAR(fmt_nvfp4_sdec(0.0f), 1.0, 0);
  CHECK_EQ_U64(fmt_nvfp4_block_scale(6.0f, 1.0f), 0x38);
  CHECK_NEAR(fmt_nvfp4_enc(0x38, 1.0f), 1.0, 0);
  CHECK_NEAR(fmt_nvfp4_enc(0x00, 1.0f), 0.0, 0);
  /* a tiny tensor does not produce Inf */
  CHECK(qf_isfinite(fmt_nvfp4_senc(1e-40f)));
  CHECK(qf_isfinite(fmt_nvfp4_enc(0x01, fmt_nvfp4_sdec(1e-40f))));
  /* fp8-block: zero block → 1, correctly rounded quotient otherwise */
  CHECK_NEAR(fmt_fp8_block_scale(0.0f, 0), 1.0, 0);
  CHECK_NEAR(fmt_fp8_block_scale(0.0f, 1), 1.0, 0);
  CHECK_EQ_U64(qf_f32_bits(fmt_fp8_block_scale(1.0f, 0)), qf_f32_bits(1.0f / 448.0f));
  CHECK_NEAR(fmt_fp8_block_scale(448.0f, 1), 1.0, 0);
  CHECK_NEAR(fmt_fp8_block_scale(449.0f, 1), 2.0, 0);
  /* the edge cases docs/recipes.md states: S_enc capped at FLT_MAX (not Inf) below amax ≈ 7.9e-36;
   * a ue8m0 quotient in the subnormal range → its power of two; one that underflows to 0 → 2^-149 */
  CHECK_EQ_U64(qf_f32_bits(fmt_nvfp4_senc(1e-37f)), qf_f32_bits(FLT_MAX));
  CHECK(fmt_nvfp4_senc(1e-35f) < FLT_MAX);
  CHECK_NEAR(fmt_fp8_block_scale(448.0f * 0x1.8p-140f, 1), 0x1p-139, 0);
  CHECK_NEAR(fmt_fp8_block_scale(0x1p-149f, 1), 0x1p-149, 0); /* 2^-149 / 448 rounds to 0 in FP32 */
  CHECK_NEAR(fmt_fp8_block_scale(0x1p-149f, 0), 0x1p-149, 0); /* FP32 scales too: never 0 (x/0) */
}

TEST(formats_e2m1_stochastic_rounding_is_unbiased) {
  /* 1.25 lies between 1 and 1.5: P(up) = 0.5; 2.25 between 2 and 3: P(up) = 0.25 */
  int up1 = 0, up2 = 0, n = 20000;
  for (int i = 0; i < n; i++) {
    up1 += fmt_e2m1_from_f32_sr(1.25f, qf_philox_u32(7, (uint64_t)i, 0)) == 0x3;
    up2 += fmt_e2m1_from_f32_sr(-2.25f, qf_philox_u32(7, (uint64_t)i, 1)) == 0xD;
  }
  CHECK_NEAR((double)up1 / n, 0.5, 0.02);
  CHECK_NEAR((double)up2 / n, 0.25, 0.02);
  /* representable values never move; the generator is a pure function */
  CHECK_EQ_U64(fmt_e2m1_from_f32_sr(3.0f, 0xFFFFFFFFu), 0x5);
  CHECK_EQ_U64(fmt_e2m1_from_f32_sr(7.0f, 0), 0x7);
  CHECK_EQ_U64(qf_philox_u32(1, 2, 3), qf_philox_u32(1, 2, 3));
  CHECK(qf_philox_u32(1, 2, 3) != qf_philox_u32(1, 3, 3));
}

TEST(formats_philox_known_answers) {
  /* Random123 known-answer vectors for Philox4x32-10 (word 0) */
  CHECK_EQ_U64(qf_philox_u32(0, 0, 0), 0x6627e8d5u);
  CHECK_EQ_U64(qf_philox_u32(~0ull, ~0ull, ~0ull), 0x408f276du);
}

TEST(formats_e2m1_midpoints_equal_generic_rounding) {
  /* the comparison form of E2M1 equals generic RNE on the FP32 bits, off the BF16 grid too */
  uint64_t s = 88172645463325252ull;
  int bad = 0;
  for (int i = 0; i < 1000000; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    uint32_t u = (uint32_t)s & 0x80ffffffu;
    u |= (uint32_t)(0x7c + (s >> 40) % 8) << 23; /* |x| in [2^-3, 2^4) */
    float x = qf_f32_from_bits(u);
    uint32_t c = qf_small_float_code(u & 0x7fffffffu, 1, 1);
    uint8_t want = (uint8_t)(((u >> 28) & 8u) | (c > 7 ? 7 : c));
    bad += fmt_e2m1_from_f32(x) != want;
  }
  CHECK_EQ_I64(bad, 0);
}
