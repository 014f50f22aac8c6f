/* test_quant.c — every CPU quantizer against the numpy reference
 * (tests/oracle/ci_quant.py), byte for byte, on shapes 1×1 … 4096×4096 with
 * zero blocks, subnormals, values at/above the max and ±Inf/NaN. The FP32-input
 * variants (_f32) run on every BF16 case widened to FP32 (same bytes as the
 * BF16 functions) and on FP32 cases whose values are not BF16 (f32_*). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/formats.h"
#include "kernels/quant.h"
#include "test_quant_fixtures.h"

/* One oracle case: the input and its expected statistics. */
typedef struct qcase {
  char name[64];
  int64_t rows, K, n_nonfinite, first_index;
  float amax_ext;
  uint16_t *x; /* BF16 input (NULL for an FP32 case) */
  float *xf;   /* FP32 input: x.f32, or x widened */
} qcase;

/* Load case `name` (meta.txt + x.bf16 or x.f32); 0 on success. */
static int qcase_load(const char *name, qcase *c) {
  char rel[256];
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "%s", name);
  snprintf(rel, sizeof rel, "quant/%s/meta.txt", name);
  char *meta = fixture_load(rel, NULL);
  if (!meta) return -1;
  long long r, k, n, f;
  char amax[64];
  int ok = sscanf(meta, "%lld %lld %lld %lld %63s", &r, &k, &n, &f, amax) == 5;
  free(meta);
  if (!ok) return -1;
  c->rows = r, c->K = k, c->n_nonfinite = n, c->first_index = f;
  c->amax_ext = strtof(amax, NULL);
  size_t len = 0;
  if (!strncmp(name, "f32_", 4)) {
    snprintf(rel, sizeof rel, "quant/%s/x.f32", name);
    c->xf = fixture_load(rel, &len);
    return c->xf && len == (size_t)(r * k * 4) ? 0 : -1;
  }
  snprintf(rel, sizeof rel, "quant/%s/x.bf16", name);
  c->x = fixture_load(rel, &len);
  if (!c->x || len != (size_t)(r * k * 2)) return -1;
  c->xf = rl_xmalloc((size_t)(r * k) * 4 + 4);
  for (int64_t i = 0; i < r * k; i++) c->xf[i] = fmt_bf16_to_f32(c->x[i]);
  return 0;
}

/* Which functions a failure message is about (check_variants sets it). */
static const char *g_via = "BF16 input";

/* Compare n bytes against fixture quant/<case>/<file>; reports the first
 * mismatches. Returns 1 when missing (variant not written for this case). */
static int expect_bytes(const qcase *c, const char *file, const void *got, size_t n) {
  char rel[256];
  snprintf(rel, sizeof rel, "quant/%s/%s", c->name, file);
  size_t len = 0;
  /* the 4096×4096 case carries only the main variants (fp8w fp8a mx nv) */
  int optional = !strncmp(c->name, "4096x", 5) &&
                 (strstr(file, "u.") || !strncmp(file, "nv2d", 4) || !strncmp(file, "nvsr", 4) ||
                  !strncmp(file, "nvx", 3));
  uint8_t *want = fixture_load_q(rel, &len, optional);
  if (!want) {
    CHECK_MSG(optional, "%s: fixture missing", rel);
    return 1;
  }
  CHECK_MSG(len == n, "%s: size %zu, want %zu", rel, n, len);
  const uint8_t *g = got;
  int bad = 0;
  for (size_t i = 0; i < n && i < len; i++)
    if (g[i] != want[i] && bad++ < 4)
      CHECK_MSG(0, "%s (%s): byte %zu: got 0x%02x want 0x%02x", rel, g_via, i, g[i], want[i]);
  if (bad) CHECK_MSG(0, "%s (%s): %d bytes differ", rel, g_via, bad);
  free(want);
  return 0;
}

/* Same, for FP32 arrays where NaN matches any NaN (dequantized values). */
static void expect_f32(const qcase *c, const char *file, const float *got, size_t n) {
  char rel[256];
  snprintf(rel, sizeof rel, "quant/%s/%s", c->name, file);
  size_t len = 0;
  /* the oracle writes the dequantized values of the small cases (R·K ≤ 200000, ci_quant.py) */
  const int small = c->rows * c->K <= 200000;
  float *want = fixture_load_q(rel, &len, !small);
  if (!want) {
    CHECK_MSG(!small, "%s: fixture missing", rel);
    return;
  }
  REQUIRE(len == n * 4);
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    int ok = isnan(want[i]) ? isnan(got[i]) : qf_f32_bits(got[i]) == qf_f32_bits(want[i]);
    if (!ok && bad++ < 4) CHECK_MSG(0, "%s[%zu] (%s): got %a want %a", rel, i, g_via, got[i], want[i]);
  }
  if (bad) CHECK_MSG(0, "%s (%s): %d values differ", rel, g_via, bad);
  free(want);
}

/* The status and statistics a quantizer must report for this case. */
static void expect_stats(const qcase *c, const char *what, int rc, const quant_stats *st) {
  CHECK_MSG(rc == (c->n_nonfinite ? QUANT_NONFINITE : QUANT_OK), "%s %s (%s): status %d", c->name,
            what, g_via, rc);
  CHECK_MSG(st->n_nonfinite == c->n_nonfinite && st->first_index == c->first_index,
            "%s %s (%s): stats (%lld, %lld), want (%lld, %lld)", c->name, what, g_via,
            (long long)st->n_nonfinite, (long long)st->first_index, (long long)c->n_nonfinite,
            (long long)c->first_index);
}

/* Run every variant of one loaded case and compare: the BF16 functions (f32
 * = 0) or the FP32-input ones (f32 = 1). */
static void check_variants(const qcase *cp, int f32) {
  qcase c = *cp;
  g_via = f32 ? "FP32 input" : "BF16 input";
  int64_t R = c.rows, K = c.K, n = R * K;
  int64_t kb128 = quant_cdiv(K, 128), kb32 = quant_cdiv(K, 32), kb16 = quant_cdiv(K, 16);
  int64_t kp = quant_cdiv(K, 2);
  uint8_t *q = rl_xmalloc((size_t)n + 1), *s8 = rl_xmalloc((size_t)(R * kb32 + R * kb16 + 1));
  float *s32 = rl_xmalloc((size_t)(R * kb128 + 1) * 4);
  float *deq = rl_xmalloc((size_t)n * 4 + 4);
  quant_stats st;
  quant_opts o = {0};
  int small = n <= 200000;

  for (int ue = 0; ue < 2; ue++) {
    o = (quant_opts){.ue8m0 = ue};
    char fq[32], fs[32];
    int rc = f32 ? quant_fp8_block_weight_f32_cpu(c.xf, R, K, q, s32, &o, &st)
                 : quant_fp8_block_weight_cpu(c.x, R, K, q, s32, &o, &st);
    expect_stats(&c, "fp8w", rc, &st);
    snprintf(fq, sizeof fq, "fp8w%s.q", ue ? "u" : ""), snprintf(fs, sizeof fs, "fp8w%s.s", ue ? "u" : "");
    if (!expect_bytes(&c, fq, q, (size_t)n)) expect_bytes(&c, fs, s32, (size_t)(quant_cdiv(R, 128) * kb128 * 4));
    if (!ue && small) {
      dequant_fp8_block_weight_cpu(q, s32, R, K, deq, NULL);
      expect_f32(&c, "fp8w.deq", deq, (size_t)n);
    }
    rc = f32 ? quant_fp8_block_act_f32_cpu(c.xf, R, K, q, s32, &o, &st)
             : quant_fp8_block_act_cpu(c.x, R, K, q, s32, &o, &st);
    expect_stats(&c, "fp8a", rc, &st);
    snprintf(fq, sizeof fq, "fp8a%s.q", ue ? "u" : ""), snprintf(fs, sizeof fs, "fp8a%s.s", ue ? "u" : "");
    if (!expect_bytes(&c, fq, q, (size_t)n)) expect_bytes(&c, fs, s32, (size_t)(R * kb128 * 4));
    if (!ue && small) {
      dequant_fp8_block_act_cpu(q, s32, R, K, deq, NULL);
      expect_f32(&c, "fp8a.deq", deq, (size_t)n);
    }
  }

  int rc = f32 ? quant_mxfp8_f32_cpu(c.xf, R, K, q, s8, NULL, &st)
               : quant_mxfp8_cpu(c.x, R, K, q, s8, NULL, &st);
  expect_stats(&c, "mx", rc, &st);
  expect_bytes(&c, "mx.q", q, (size_t)n);
  expect_bytes(&c, "mx.s", s8, (size_t)(R * kb32));
  if (small) {
    dequant_mxfp8_cpu(q, s8, R, K, deq, NULL);
    expect_f32(&c, "mx.deq", deq, (size_t)n);
  }

  struct { const char *v; int d2, sr, ext; } nv[] = {
      {"nv", 0, 0, 0}, {"nv2d", 1, 0, 0}, {"nvsr", 0, 1, 0}, {"nvx", 0, 0, 1}};
  for (int i = 0; i < 4; i++) {
    char f[32];
    snprintf(f, sizeof f, "%s.q", nv[i].v);
    o = (quant_opts){.nvfp4_2d = nv[i].d2, .stochastic = nv[i].sr,
                     .sr_seed = 0x0123456789ABCDEFull, .sr_offset = 42};
    float sdec = -1;
    if (f32)
      rc = nv[i].ext ? quant_nvfp4_amax_f32_cpu(c.xf, R, K, c.amax_ext, q, s8, &sdec, &o, &st)
                     : quant_nvfp4_f32_cpu(c.xf, R, K, q, s8, &sdec, &o, &st);
    else
      rc = nv[i].ext ? quant_nvfp4_amax_cpu(c.x, R, K, c.amax_ext, q, s8, &sdec, &o, &st)
                     : quant_nvfp4_cpu(c.x, R, K, q, s8, &sdec, &o, &st);
    expect_stats(&c, nv[i].v, rc, &st);
    if (expect_bytes(&c, f, q, (size_t)(R * kp))) continue;
    snprintf(f, sizeof f, "%s.s", nv[i].v);
    expect_bytes(&c, f, s8, (size_t)(R * kb16));
    snprintf(f, sizeof f, "%s.sdec", nv[i].v);
    expect_bytes(&c, f, &sdec, 4);
    if (i == 0 && small) {
      dequant_nvfp4_cpu(q, s8, sdec, R, K, deq, NULL);
      expect_f32(&c, "nv.deq", deq, (size_t)n);
    }
  }
  free(q), free(s8), free(s32), free(deq);
}

/* Load one case and check it through the BF16 functions (BF16 cases) and the
 * FP32-input functions (every case). */
static void check_case(const char *name) {
  qcase c;
  if (qcase_load(name, &c) != 0) {
    CHECK_MSG(0, "case %s: fixture missing or malformed", name);
    free(c.x), free(c.xf);
    return;
  }
  if (c.x) check_variants(&c, 0);
  check_variants(&c, 1);
  free(c.x), free(c.xf);
}

TEST(quant_oracle_1x1) {
  const char *names[] = {"1x1_val", "1x1_zero", "1x1_sub", "1x1_max", "1x1_inf", "1x1_nan"};
  for (int i = 0; i < 6; i++) check_case(names[i]);
}
TEST(quant_oracle_7x33) { check_case("7x33"), check_case("7x33_nf"); }
TEST(quant_oracle_127x129) { check_case("127x129"), check_case("127x129_nf"); }
TEST(quant_oracle_300x4096) { check_case("300x4096"), check_case("300x4096_nf"); }
TEST(quant_oracle_4096x4096) { check_case("4096x4096_nf"); }
/* FP32 inputs that BF16 cannot hold: the rules apply to the FP32 values. */
TEST(quant_oracle_f32) {
  const char *names[] = {"f32_1x1_val", "f32_1x1_sub", "f32_1x1_max", "f32_1x1_nan",
                         "f32_7x33",    "f32_7x33_nf", "f32_127x129", "f32_127x129_nf",
                         "f32_300x4096", "f32_300x4096_nf"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) check_case(names[i]);
}

/* A small input with a known answer, checked by hand (independent of the oracle). */
TEST(quant_fp8_block_act_hand_values) {
  uint16_t x[130];
  for (int i = 0; i < 130; i++) x[i] = fmt_bf16_from_f32((float)(i - 64) / 8.0f);
  uint8_t q[130];
  float s[2];
  quant_stats st;
  CHECK_EQ_I64(quant_fp8_block_act_cpu(x, 1, 130, q, s, NULL, &st), QUANT_OK);
  CHECK_EQ_I64(st.n_nonfinite, 0);
  CHECK_EQ_I64(st.first_index, -1);
  CHECK_EQ_U64(qf_f32_bits(s[0]), qf_f32_bits(8.0f / 448.0f)); /* amax of block 0 = 64/8 */
  CHECK_EQ_U64(q[0], 0xFE);                                    /* -8 → -448 */
  CHECK_EQ_U64(q[64], 0x00);
  CHECK_EQ_U64(qf_f32_bits(s[1]), qf_f32_bits(8.125f / 448.0f)); /* block 1: 64/8, 65/8 */
  /* ue8m0: 8/448 → 2^-5 (0.03125 >= 0.017857) */
  quant_opts o = {.ue8m0 = 1};
  CHECK_EQ_I64(quant_fp8_block_act_cpu(x, 1, 130, q, s, &o, &st), QUANT_OK);
  CHECK_NEAR(s[0], 0x1p-5, 0);
  CHECK_EQ_U64(q[0], fmt_e4m3_from_f32(-256.0f));
}

TEST(quant_nonfinite_is_reported_and_poisoned) {
  uint16_t x[64];
  for (int i = 0; i < 64; i++) x[i] = fmt_bf16_from_f32(1.0f + (float)i);
  x[40] = 0x7FC0; /* NaN in the second 1×32 block */
  x[50] = 0xFF80; /* -Inf */
  uint8_t q[64], s[4];
  quant_stats st;
  CHECK_EQ_I64(quant_mxfp8_cpu(x, 1, 64, q, s, NULL, &st), QUANT_NONFINITE);
  CHECK_EQ_I64(st.n_nonfinite, 2);
  CHECK_EQ_I64(st.first_index, 40);
  CHECK_EQ_U64(s[1], 0xFF);
  CHECK_EQ_U64(q[33], 0);
  CHECK(s[0] != 0xFF && q[1] != 0);
  rl_err e;
  CHECK_EQ_I64(quant_status_err(QUANT_NONFINITE, &st, "model.layers.0.mlp.up_proj.weight", 64, &e),
               RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "model.layers.0.mlp.up_proj.weight: 2 non-finite value(s)");
  CHECK_CONTAINS(e.msg, "row 0, column 40");
  float amax = quant_amax_bf16_cpu(x, 64, &st);
  CHECK_NEAR(amax, 64.0, 0);
  CHECK_EQ_I64(st.n_nonfinite, 2);
}

TEST(quant_nvfp4_shared_amax_and_sr_reproducible) {
  int64_t R = 32, K = 64;
  uint16_t *x = rl_xmalloc((size_t)(R * K) * 2);
  for (int64_t i = 0; i < R * K; i++) x[i] = fmt_bf16_from_f32(sinf((float)i * 0.37f) * 3.0f);
  uint8_t q1[1024], q2[1024], s1[128], s2[128];
  float d1, d2;
  quant_stats st;
  /* the tensor-amax variant equals the external-amax one given the tensor's
   * amax, found here by a plain loop (not the quantizer's own amax) */
  CHECK_EQ_I64(quant_nvfp4_cpu(x, R, K, q1, s1, &d1, NULL, &st), QUANT_OK);
  float amax = 0;
  for (int64_t i = 0; i < R * K; i++) amax = fmaxf(amax, fabsf(fmt_bf16_to_f32(x[i])));
  CHECK(amax > 2.99f && amax <= 3.0f); /* 3·sin at some i·0.37 near a peak */
  CHECK_EQ_I64(quant_nvfp4_amax_cpu(x, R, K, amax, q2, s2, &d2, NULL, &st), QUANT_OK);
  CHECK(memcmp(q1, q2, (size_t)(R * K / 2)) == 0 && memcmp(s1, s2, (size_t)(R * K / 16)) == 0);
  /* S_dec = 1 / (448·6 / amax), both divisions FP32 (FORMATS.md) */
  CHECK_EQ_U64(qf_f32_bits(d1), qf_f32_bits(1.0f / (2688.0f / amax)));
  /* stochastic rounding: same key → same bytes; another offset → other bytes */
  quant_opts o = {.stochastic = 1, .sr_seed = 9, .sr_offset = 1};
  CHECK_EQ_I64(quant_nvfp4_cpu(x, R, K, q1, s1, &d1, &o, &st), QUANT_OK);
  CHECK_EQ_I64(quant_nvfp4_cpu(x, R, K, q2, s2, &d2, &o, &st), QUANT_OK);
  CHECK(memcmp(q1, q2, (size_t)(R * K / 2)) == 0);
  o.sr_offset = 2;
  CHECK_EQ_I64(quant_nvfp4_cpu(x, R, K, q2, s2, &d2, &o, &st), QUANT_OK);
  CHECK(memcmp(q1, q2, (size_t)(R * K / 2)) != 0);
  /* 16×16 blocks: the scale repeats over the 16 rows of a block */
  o = (quant_opts){.nvfp4_2d = 1};
  CHECK_EQ_I64(quant_nvfp4_cpu(x, R, K, q1, s1, &d1, &o, &st), QUANT_OK);
  for (int r = 1; r < 16; r++) CHECK_EQ_U64(s1[r * 4 + 2], s1[2]);
  free(x);
}

TEST(quant_dequant_error_bounds) {
  /* relative error of a round trip stays within half an ulp of the element type
   * (times the block's headroom): E4M3 2^-4, E2M1 ≤ 1/4 of the block amax */
  int64_t R = 16, K = 256;
  uint16_t *x = rl_xmalloc((size_t)(R * K) * 2);
  for (int64_t i = 0; i < R * K; i++) x[i] = fmt_bf16_from_f32(cosf((float)i) * (1.0f + (float)(i % 7)));
  uint8_t *q = rl_xmalloc((size_t)(R * K)), s8[512];
  float s32[64], *y = rl_xmalloc((size_t)(R * K) * 4), sdec;
  double worst8 = 0, worst4 = 0;
  quant_fp8_block_act_cpu(x, R, K, q, s32, NULL, NULL);
  dequant_fp8_block_act_cpu(q, s32, R, K, y, NULL);
  for (int64_t i = 0; i < R * K; i++) {
    double v = fmt_bf16_to_f32(x[i]), d = fabs(y[i] - v);
    if (fabs(v) > 0.1) worst8 = fmax(worst8, d / fabs(v));
  }
  CHECK(worst8 <= 0.0625);
  CHECK(worst8 > 0);
  quant_nvfp4_cpu(x, R, K, q, s8, &sdec, NULL, NULL);
  dequant_nvfp4_cpu(q, s8, sdec, R, K, y, NULL);
  for (int64_t i = 0; i < R * K; i++) worst4 = fmax(worst4, fabs(y[i] - fmt_bf16_to_f32(x[i])));
  /* block amax ≤ 7: half E2M1's top gap (1, between 4 and 6) in units of the
   * block scale, amax/6 ≤ 7/6, which E4M3 rounds up by at most 2^-4 (rounded
   * down, the top values clip to 6 by less than that gap's half) */
  CHECK(worst4 <= 7.0 / 6 * (1 + 1.0 / 16));
  CHECK(worst4 > 0);
  free(x), free(q), free(y);
}
