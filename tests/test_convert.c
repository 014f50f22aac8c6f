/* test_convert.c — rlrun convert on checkpoints the pip safetensors library
 * wrote (tests/oracle/ci_safetensors.py): round trips bf16 → format → bf16
 * within each format's error bound, the exact scales of FORMATS.md, naming
 * and quantization_config, sharding, and the independent numpy check
 * (tests/oracle/check_st.py verify: scales and data bytes equal numpy's
 * quantizers', kept tensors BF16). F32/F16 sources (tiny_*_f32) are quantized
 * from their own values, not their BF16 rounding, and what they keep becomes
 * BF16. Rules, refusals and memory are in test_convert_rules.c.
 *
 * Error bounds asserted per element (x original, x^ the BF16 round trip):
 *   fp8-block, mxfp8: |x^ - x| <= 2^-4 |x| + 2^-10 s + 2^-8 |x^|   (s: the block's scale)
 *   nvfp4:            |x^ - x| <= 0.25 |x| + 0.25 d + 6·2^-10 S_dec + 2^-8 |x^|  (d = sb·S_dec)
 * (E4M3 keeps 3 mantissa bits: half a step is 2^-4 relative, subnormal step 2^-9 s;
 * E2M1 steps are 0.5 / 1 / 2; the last term is the BF16 rounding of the output.) */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/formats.h"
#include "state/safetensors.h"
#include "test_convert_util.h"

static char out[1 << 17];

/* Convert fixture `src` to `fmt` (and back to bf16), return the two directories. */
static int convert_pair(const char *src, const char *fmt, const char *extra, char *qdir,
                        char *rtdir, size_t n) {
  snprintf(qdir, n, "%s/q-%s%s", harness_tmpdir(), fmt, *extra ? "-x" : "");
  snprintf(rtdir, n, "%s/rt-%s%s", harness_tmpdir(), fmt, *extra ? "-x" : "");
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s --to %s %s", harness_bin(), src, qdir,
           fmt, extra);
  int rc = harness_run(cmd, out, sizeof out);
  CHECK_MSG(rc == 0, "%s failed (%d):\n%s", cmd, rc, out);
  if (rc) return rc;
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s --to bf16 --quiet", harness_bin(), qdir,
           rtdir);
  rc = harness_run(cmd, out, sizeof out);
  CHECK_MSG(rc == 0, "%s failed (%d):\n%s", cmd, rc, out);
  return rc;
}

/* The independent numpy oracle agrees (scales re-derived, bounds, bitwise dequant). */
static void python_verify(const char *src, const char *q, const char *fmt, const char *rt) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' tests/oracle/check_st.py verify %s %s %s %s", harness_python(), src, q, fmt, rt);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "ok ");
}

/* Worst err/bound over every quantized tensor of the round trip; also counts them. */
static double roundtrip_worst(st_ckpt *orig, st_ckpt *q, st_ckpt *rt, const char *fmt, int *nq) {
  double worst = 0;
  *nq = 0;
  for (int fi = 0; fi < st_ckpt_n_files(orig); fi++) {
    const st_header *h = st_file_header(st_ckpt_file(orig, fi));
    for (int i = 0; i < h->n_tensors; i++) {
      const st_tensor *t = &h->tensors[i], *tq;
      st_ckpt_find(q, t->name, &tq);
      REQUIRE_RET(tq != NULL, 99);
      if (tq->dtype != ST_F8_E4M3 && tq->dtype != ST_U8) continue; /* kept: checked elsewhere */
      (*nq)++;
      int64_t N, K;
      float *x = tc_load_f32(orig, t->name, &N, &K), *xr = tc_load_f32(rt, t->name, &N, &K);
      float *s = tc_block_scales(q, t->name, fmt, N, K);
      char base[512];
      snprintf(base, sizeof base, "%.*s", (int)(strlen(t->name) - 7), t->name);
      double sdec = !strcmp(fmt, "nvfp4") ? tc_nvfp4_sdec(q, base) : 0;
      for (int64_t r = 0; r < N; r++)
        for (int64_t c = 0; c < K; c++) {
          double a = x[r * K + c], b = xr[r * K + c], sc = s[r * K + c], bound;
          if (!strcmp(fmt, "nvfp4"))
            bound = 0.25 * fabs(a) + 0.25 * sc + 6 * ldexp(sdec, -10) +
                    ldexp(fabs(b), -8);
          else
            bound = ldexp(fabs(a), -4) + ldexp(sc, -10) + ldexp(fabs(b), -8);
          double ratio = fabs(a - b) / (bound + 1e-45);
          if (ratio > worst) worst = ratio;
        }
      free(x), free(xr), free(s);
    }
  }
  return worst;
}

/* Kept tensors are BF16 in q and rt (the original's bytes, or their RNE
 * rounding for F32/F16); every tensor is BF16 in rt; extras are copied. */
static void check_kept_and_extras(const char *src, const char *qdir, const char *rtdir) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd,
           "cmp %s/tokenizer.json %s/tokenizer.json && cmp %s/generation_config.json "
           "%s/generation_config.json && cmp %s/tokenizer.json %s/tokenizer.json",
           src, qdir, src, qdir, src, rtdir);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  st_ckpt *o = tc_open(src), *q = tc_open(qdir), *rt = tc_open(rtdir);
  if (!o || !q || !rt) return;
  CHECK_EQ_I64(st_ckpt_n_tensors(rt), st_ckpt_n_tensors(o));
  for (int fi = 0; fi < st_ckpt_n_files(o); fi++) {
    const st_header *h = st_file_header(st_ckpt_file(o, fi));
    for (int i = 0; i < h->n_tensors; i++) {
      const st_tensor *t = &h->tensors[i], *a, *b;
      st_ckpt_find(q, t->name, &a);
      st_ckpt_find(rt, t->name, &b);
      CHECK_MSG(a && b && b->dtype == ST_BF16 && b->nbytes == t->numel * 2, "%s", t->name);
      if (a && a->dtype != ST_F8_E4M3 && a->dtype != ST_U8) {
        CHECK_MSG(tc_kept_bf16_bad(o, q, t->name) == 0, "kept %s is not its BF16 rounding", t->name);
        CHECK_MSG(tc_same_bytes(q, rt, t->name), "round trip changed kept %s", t->name);
        if (t->dtype == ST_BF16) CHECK_MSG(tc_same_bytes(o, q, t->name), "kept %s changed", t->name);
      }
    }
  }
  st_ckpt_close(o), st_ckpt_close(q), st_ckpt_close(rt);
}

TEST(convert_fp8_block_roundtrip_scales_and_config) {
  const char *src = tc_fixture("tiny_qwen3");
  char qd[1024], rd[1024];
  REQUIRE(convert_pair(src, "fp8-block", "", qd, rd, sizeof qd) == 0);
  st_ckpt *o = tc_open(src), *q = tc_open(qd), *rt = tc_open(rd);
  REQUIRE(o && q && rt);
  /* Naming and layout: E4M3 [256, 320] + FP32 scale_inv [2, 3] (partial blocks). */
  const char *w = "model.layers.0.self_attn.q_proj.weight";
  const st_tensor *t;
  st_file *f = st_ckpt_find(q, w, &t);
  REQUIRE(f != NULL);
  CHECK_EQ_I64(t->dtype, ST_F8_E4M3);
  CHECK_EQ_I64(t->shape[0], 256);
  CHECK_EQ_I64(t->shape[1], 320);
  float sc[6];
  REQUIRE(tc_read(q, "model.layers.0.self_attn.q_proj.weight_scale_inv", ST_F32, sc, sizeof sc) == 0);
  CHECK_EQ_U64(qf_f32_bits(sc[0]), qf_f32_bits(1.0f)); /* the all-zero block: scale 1, not NaN */
  CHECK_EQ_U64(qf_f32_bits(sc[5]), qf_f32_bits(30.0f / 448.0f)); /* the outlier's block */
  uint8_t *qd8 = rl_xmalloc(t->nbytes);
  rl_err e;
  REQUIRE(st_file_read(f, t, qd8, &e) == 0);
  int nz = 0;
  for (int r = 0; r < 128; r++)
    for (int c = 0; c < 128; c++) nz += qd8[r * 320 + c] != 0;
  CHECK_EQ_I64(nz, 0);
  CHECK_EQ_U64(qd8[200 * 320 + 300], 0x7E); /* the block max encodes as 448 */
  CHECK_EQ_U64(qd8[5 * 320 + 130], 0x00);   /* 1e-30 flushes to zero */
  free(qd8);
  /* Round trip within the bound on every quantized tensor. */
  int nq;
  double worst = roundtrip_worst(o, q, rt, "fp8-block", &nq);
  CHECK_EQ_I64(nq, 21); /* 3 layers × (4 attention + 3 MLP) */
  CHECK_MSG(worst <= 1.0 && worst > 0.3, "worst err/bound %.3f", worst);
  float *x = tc_load_f32(rt, w, NULL, NULL);
  CHECK_NEAR(x[200 * 320 + 300], 30.0, 0);
  free(x);
  st_ckpt_close(o), st_ckpt_close(q), st_ckpt_close(rt);
  /* config.json: FORMATS.md's quantization_config, removed again by --to bf16. */
  json_t *qc = tc_quant_config(qd);
  REQUIRE(qc != NULL);
  CHECK_STREQ(json_string_value(json_object_get(qc, "quant_method")), "fp8");
  CHECK_STREQ(json_string_value(json_object_get(qc, "fmt")), "e4m3");
  CHECK_STREQ(json_string_value(json_object_get(qc, "activation_scheme")), "dynamic");
  CHECK_EQ_I64(json_integer_value(json_array_get(json_object_get(qc, "weight_block_size"), 1)), 128);
  CHECK(json_object_get(qc, "scale_fmt") == NULL);
  char *mods = json_dumps(json_object_get(qc, "modules_to_not_convert"), JSON_COMPACT);
  CHECK_STREQ(mods, "[\"lm_head\"]");
  free(mods);
  json_decref(qc);
  CHECK(tc_quant_config(rd) == NULL);
  check_kept_and_extras(src, qd, rd);
  python_verify(src, qd, "fp8-block", rd);
}

TEST(convert_fp8_block_ue8m0_scales_are_powers_of_two) {
  const char *src = tc_fixture("tiny_qwen3");
  char qd[1024], rd[1024];
  REQUIRE(convert_pair(src, "fp8-block", "--scale-fmt ue8m0", qd, rd, sizeof qd) == 0);
  float sc[6];
  st_ckpt *q = tc_open(qd);
  REQUIRE(q != NULL);
  REQUIRE(tc_read(q, "model.layers.0.self_attn.q_proj.weight_scale_inv", ST_F32, sc, sizeof sc) == 0);
  CHECK_EQ_U64(qf_f32_bits(sc[0]), qf_f32_bits(1.0f));
  CHECK_EQ_U64(qf_f32_bits(sc[5]), qf_f32_bits(0.125f)); /* 2^ceil(log2(30/448)) */
  for (int i = 0; i < 6; i++) CHECK_EQ_U64(qf_f32_bits(sc[i]) & 0x7fffffu, 0);
  st_ckpt_close(q);
  json_t *qc = tc_quant_config(qd);
  REQUIRE(qc != NULL);
  CHECK_STREQ(json_string_value(json_object_get(qc, "scale_fmt")), "ue8m0");
  json_decref(qc);
  python_verify(src, qd, "fp8-block", rd);
}

TEST(convert_mxfp8_roundtrip_and_k_not_multiple_of_32_stays_bf16) {
  const char *src = tc_fixture("tiny_qwen3");
  char qd[1024], rd[1024];
  REQUIRE(convert_pair(src, "mxfp8", "", qd, rd, sizeof qd) == 0);
  st_ckpt *o = tc_open(src), *q = tc_open(qd), *rt = tc_open(rd);
  REQUIRE(o && q && rt);
  const st_tensor *t;
  REQUIRE(st_ckpt_find(q, "model.layers.1.mlp.down_proj.weight", &t) != NULL); /* K = 200 */
  CHECK_EQ_I64(t->dtype, ST_BF16);
  CHECK(st_ckpt_find(q, "model.layers.1.mlp.down_proj.weight_scale_inv", NULL) == NULL);
  REQUIRE(st_ckpt_find(q, "model.layers.1.mlp.up_proj.weight_scale_inv", &t) != NULL);
  CHECK_EQ_I64(t->dtype, ST_U8);
  CHECK_EQ_I64(t->shape[0], 200);
  CHECK_EQ_I64(t->shape[1], 10);
  uint8_t e8[256 * 10];
  REQUIRE(tc_read(q, "model.layers.0.self_attn.q_proj.weight_scale_inv", ST_U8, e8, sizeof e8) == 0);
  CHECK_EQ_U64(e8[0], 0); /* amax 0 → e = 0 (FORMATS.md) */
  int nq;
  double worst = roundtrip_worst(o, q, rt, "mxfp8", &nq);
  CHECK_EQ_I64(nq, 18); /* 3 layers × (4 attention + gate + up); down_proj K = 200 */
  CHECK_MSG(worst <= 1.0 && worst > 0.3, "worst err/bound %.3f", worst);
  st_ckpt_close(o), st_ckpt_close(q), st_ckpt_close(rt);
  json_t *qc = tc_quant_config(qd);
  REQUIRE(qc != NULL);
  CHECK_STREQ(json_string_value(json_object_get(qc, "quant_method")), "mxfp8");
  CHECK_STREQ(json_string_value(json_object_get(qc, "scale_fmt")), "ue8m0");
  CHECK_EQ_I64(json_integer_value(json_array_get(json_object_get(qc, "weight_block_size"), 1)), 32);
  char *mods = json_dumps(json_object_get(qc, "modules_to_not_convert"), JSON_COMPACT);
  CHECK_CONTAINS(mods, "\"model.layers.2.mlp.down_proj\"");
  free(mods);
  json_decref(qc);
  check_kept_and_extras(src, qd, rd);
  python_verify(src, qd, "mxfp8", rd);
}

TEST(convert_nvfp4_experts_only_gate_up_share_amax) {
  const char *src = tc_fixture("tiny_qwen3_moe");
  char qd[1024], rd[1024];
  REQUIRE(convert_pair(src, "nvfp4", "", qd, rd, sizeof qd) == 0);
  st_ckpt *o = tc_open(src), *q = tc_open(qd), *rt = tc_open(rd);
  REQUIRE(o && q && rt);
  const st_tensor *t;
  const char *g = "model.layers.1.mlp.experts.2.gate_proj", *u = "model.layers.1.mlp.experts.2.up_proj";
  char nm[256];
  snprintf(nm, sizeof nm, "%s.weight", g);
  REQUIRE(st_ckpt_find(q, nm, &t) != NULL);
  CHECK_EQ_I64(t->dtype, ST_U8);
  CHECK_EQ_I64(t->shape[0], 64);
  CHECK_EQ_I64(t->shape[1], 64); /* K/2 packed */
  snprintf(nm, sizeof nm, "%s.weight_scale", g);
  REQUIRE(st_ckpt_find(q, nm, &t) != NULL);
  CHECK_EQ_I64(t->dtype, ST_F8_E4M3);
  CHECK_EQ_I64(t->shape[1], 8);
  snprintf(nm, sizeof nm, "%s.weight_scale_2", g);
  REQUIRE(st_ckpt_find(q, nm, &t) != NULL);
  CHECK_EQ_I64(t->ndim, 0);
  float sg = tc_nvfp4_sdec(q, g), su = tc_nvfp4_sdec(q, u), in = 0;
  snprintf(nm, sizeof nm, "%s.weight", g);
  float ag = tc_amax(o, nm);
  snprintf(nm, sizeof nm, "%s.weight", u);
  float au = tc_amax(o, nm);
  CHECK(au > 2 * ag); /* the fixture makes up_proj's amax larger */
  CHECK_EQ_U64(qf_f32_bits(sg), qf_f32_bits(su));
  CHECK_EQ_U64(qf_f32_bits(sg), qf_f32_bits(fmt_nvfp4_sdec(au)));
  snprintf(nm, sizeof nm, "%s.input_scale", g);
  REQUIRE(tc_read(q, nm, ST_F32, &in, 4) == 0);
  CHECK_NEAR(in, 1.0, 0);
  /* down_proj has its own amax; attention, router, norms stay BF16. */
  snprintf(nm, sizeof nm, "model.layers.1.mlp.experts.2.down_proj.weight");
  CHECK_EQ_U64(qf_f32_bits(tc_nvfp4_sdec(q, "model.layers.1.mlp.experts.2.down_proj")),
               qf_f32_bits(fmt_nvfp4_sdec(tc_amax(o, nm))));
  REQUIRE(st_ckpt_find(q, "model.layers.0.self_attn.q_proj.weight", &t) != NULL);
  CHECK_EQ_I64(t->dtype, ST_BF16);
  REQUIRE(st_ckpt_find(q, "model.layers.0.mlp.gate.weight", &t) != NULL);
  CHECK_EQ_I64(t->dtype, ST_BF16);
  int nq;
  double worst = roundtrip_worst(o, q, rt, "nvfp4", &nq);
  CHECK_EQ_I64(nq, 24); /* 2 layers × 4 experts × 3 projections */
  CHECK_MSG(worst <= 1.0 && worst > 0.3, "worst err/bound %.3f", worst);
  st_ckpt_close(o), st_ckpt_close(q), st_ckpt_close(rt);
  json_t *qc = tc_quant_config(qd);
  REQUIRE(qc != NULL);
  CHECK_STREQ(json_string_value(json_object_get(qc, "quant_method")), "modelopt");
  CHECK_STREQ(json_string_value(json_object_get(qc, "quant_algo")), "NVFP4");
  CHECK_EQ_I64(json_integer_value(json_object_get(qc, "group_size")), 16);
  CHECK_EQ_I64(json_array_size(json_object_get(qc, "exclude_modules")), 10);
  json_decref(qc);
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "grep -c NVFP4 %s/hf_quant_config.json", qd);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  check_kept_and_extras(src, qd, rd);
  python_verify(src, qd, "nvfp4", rd);
}

TEST(convert_moe_fp8_and_mxfp8_roundtrip) {
  const char *src = tc_fixture("tiny_qwen3_moe");
  const char *fmts[2] = {"fp8-block", "mxfp8"};
  for (int i = 0; i < 2; i++) {
    char qd[1024], rd[1024];
    REQUIRE(convert_pair(src, fmts[i], "", qd, rd, sizeof qd) == 0);
    st_ckpt *q = tc_open(qd);
    REQUIRE(q != NULL);
    const st_tensor *t;
    REQUIRE(st_ckpt_find(q, "model.layers.1.mlp.gate.weight", &t) != NULL); /* router */
    CHECK_EQ_I64(t->dtype, ST_BF16);
    REQUIRE(st_ckpt_find(q, "model.layers.1.mlp.experts.3.gate_proj.weight", &t) != NULL);
    CHECK_EQ_I64(t->dtype, ST_F8_E4M3);
    st_ckpt_close(q);
    python_verify(src, qd, fmts[i], rd);
  }
}

TEST(convert_shards_output_with_correct_index) {
  const char *src = tc_fixture("tiny_qwen3");
  char qd[1024], cmd[4096];
  snprintf(qd, sizeof qd, "%s/sharded", harness_tmpdir());
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s --to fp8-block --shard-size 1MB --quiet",
           harness_bin(), src, qd);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  CHECK_CONTAINS(out, "3 shard(s)");
  st_ckpt *q = tc_open(qd);
  REQUIRE(q != NULL);
  CHECK_EQ_I64(st_ckpt_n_files(q), 3);
  CHECK_EQ_I64(st_ckpt_n_tensors(q), 57);
  char ip[1100];
  snprintf(ip, sizeof ip, "%s/" ST_INDEX_NAME, qd);
  json_t *idx = json_load_file(ip, 0, NULL);
  REQUIRE(idx != NULL);
  CHECK_EQ_U64(json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")),
               st_ckpt_data_bytes(q));
  CHECK_EQ_I64(json_object_size(json_object_get(idx, "weight_map")), 57);
  CHECK_STREQ(json_string_value(json_object_get(json_object_get(idx, "weight_map"), "lm_head.weight")),
              "model-00002-of-00003.safetensors");
  json_decref(idx);
  /* Each shard's tensor data stays within 1 MB (no single item is larger). */
  for (int i = 0; i < st_ckpt_n_files(q); i++) {
    const st_header *h = st_file_header(st_ckpt_file(q, i));
    CHECK_MSG(h->data_len <= 1000000, "shard %d holds %llu bytes", i, (unsigned long long)h->data_len);
  }
  st_ckpt_close(q);
  snprintf(cmd, sizeof cmd, "'%s' tests/oracle/check_st.py dump %s | wc -l", harness_python(), qd);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_STREQ(out, "57\n");
  char rd[1024];
  snprintf(rd, sizeof rd, "%s/rt", harness_tmpdir());
  snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=passive %s convert --in %s --out %s --to bf16 --quiet", harness_bin(), qd, rd);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  python_verify(src, qd, "fp8-block", rd);
}

/* ------------------------------------------------------------ F32/F16 sources */

/* fp8-block scale of block (bi, bj) of an [N, K] tensor, from FP32 values x. */
static float fp8_scale_of(const float *x, int64_t N, int64_t K, int64_t bi, int64_t bj, int ue8m0) {
  float m = 0;
  for (int64_t r = bi * 128; r < N && r < bi * 128 + 128; r++)
    for (int64_t c = bj * 128; c < K && c < bj * 128 + 128; c++) m = fmaxf(m, fabsf(x[r * K + c]));
  if (m == 0) return 1.0f;
  float s = m / 448.0f;
  int ex;
  float f = frexpf(s, &ex); /* s = f × 2^ex, f in [0.5, 1) */
  return ue8m0 ? ldexpf(1.0f, f == 0.5f ? ex - 1 : ex) : s;
}

/* An F32 (and F16) source to fp8-block/mxfp8: every quantized tensor's bytes
 * equal numpy's quantizers applied to the source values (check_st.py), the
 * scales are those of the F32 values (not of their BF16 rounding), and every
 * kept tensor is BF16. */
static void f32_source_case(const char *fmt, const char *extra) {
  const char *src = tc_fixture("tiny_qwen3_f32");
  char qd[1024], rd[1024];
  REQUIRE(convert_pair(src, fmt, extra, qd, rd, sizeof qd) == 0);
  st_ckpt *o = tc_open(src), *q = tc_open(qd), *rt = tc_open(rd);
  REQUIRE(o && q && rt);
  int ue = strstr(extra, "ue8m0") != NULL, mx = !strcmp(fmt, "mxfp8");
  /* Kept: embeddings, norms (F32 and F16), lm_head, mxfp8's K = 200 down_proj. */
  const char *kept[] = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                        "model.layers.0.input_layernorm.weight",
                        "model.layers.2.input_layernorm.weight" /* F16 */,
                        "model.layers.1.mlp.down_proj.weight" /* mxfp8 only */};
  for (int i = 0; i < 6; i++) {
    if (i == 5 && !mx) continue;
    CHECK_MSG(tc_kept_bf16_bad(o, q, kept[i]) == 0, "%s %s: kept %s is not BF16 (RNE) of the source",
              fmt, extra, kept[i]);
  }
  /* Quantized from the F32 values: k_proj's scales (the audit's tensor) and
   * the F16 v_proj's, derived here from the source values. */
  const char *w[2] = {"model.layers.0.self_attn.k_proj.weight", "model.layers.2.self_attn.v_proj.weight"};
  for (int i = 0; i < 2; i++) {
    int64_t N, K;
    float *x = tc_load_f32(o, w[i], &N, &K);
    char nm[256];
    snprintf(nm, sizeof nm, "%.*s.weight_scale_inv", (int)strlen(w[i]) - 7, w[i]);
    if (!mx) {
      float s[3], want = fp8_scale_of(x, N, K, 0, 2, ue);
      REQUIRE(tc_read(q, nm, ST_F32, s, sizeof s) == 0);
      CHECK_MSG(qf_f32_bits(s[2]) == qf_f32_bits(want), "%s %s: %s scale[0,2] %a, want %a", fmt, extra,
                w[i], s[2], want);
      if (!ue) { /* the fixture makes the difference visible: BF16 rounding changes this scale */
        for (int64_t j = 0; j < N * K; j++) x[j] = fmt_bf16_to_f32(fmt_bf16_from_f32(x[j]));
        CHECK(qf_f32_bits(fp8_scale_of(x, N, K, 0, 2, 0)) != qf_f32_bits(want));
      }
    } else {
      uint8_t *e8 = rl_xmalloc((size_t)(N * K / 32));
      REQUIRE(tc_read(q, nm, ST_U8, e8, (size_t)(N * K / 32)) == 0);
      int bad = 0;
      for (int64_t b = 0; b < N * K / 32; b++) {
        float m = 0;
        for (int64_t c = 0; c < 32; c++) m = fmaxf(m, fabsf(x[b * 32 + c]));
        bad += e8[b] != fmt_e8m0_rceil(m / 448.0f);
      }
      CHECK_MSG(bad == 0, "mxfp8: %s: %d E8M0 scales differ from the F32 values' RCEIL", w[i], bad);
      free(e8);
    }
    free(x);
  }
  const st_tensor *t;
  REQUIRE(st_ckpt_find(q, "model.layers.2.self_attn.v_proj.weight", &t) != NULL);
  CHECK_EQ_I64(t->dtype, ST_F8_E4M3);
  int nq;
  double worst = roundtrip_worst(o, q, rt, mx ? "mxfp8" : "fp8-block", &nq);
  CHECK_EQ_I64(nq, mx ? 18 : 21);
  CHECK_MSG(worst <= 1.0 && worst > 0.3, "worst err/bound %.3f", worst);
  st_ckpt_close(o), st_ckpt_close(q), st_ckpt_close(rt);
  check_kept_and_extras(src, qd, rd);
  python_verify(src, qd, fmt, rd);
}

TEST(convert_f32_source_fp8_block_quantizes_the_f32_values) { f32_source_case("fp8-block", ""); }
TEST(convert_f32_source_fp8_block_ue8m0_quantizes_the_f32_values) {
  f32_source_case("fp8-block", "--scale-fmt ue8m0");
}
TEST(convert_f32_source_mxfp8_quantizes_the_f32_values) { f32_source_case("mxfp8", ""); }

TEST(convert_f32_source_nvfp4_quantizes_the_f32_values) {
  const char *src = tc_fixture("tiny_qwen3_moe_f32");
  char qd[1024], rd[1024];
  REQUIRE(convert_pair(src, "nvfp4", "", qd, rd, sizeof qd) == 0);
  st_ckpt *o = tc_open(src), *q = tc_open(qd), *rt = tc_open(rd);
  REQUIRE(o && q && rt);
  /* gate and up share S_dec from the larger F32 amax; down_proj has its own. */
  const char *g = "model.layers.1.mlp.experts.2.gate_proj", *u = "model.layers.1.mlp.experts.2.up_proj";
  char nm[256];
  snprintf(nm, sizeof nm, "%s.weight", g);
  float ag = tc_amax(o, nm);
  snprintf(nm, sizeof nm, "%s.weight", u);
  float au = tc_amax(o, nm);
  CHECK(au > 2 * ag);
  CHECK(fmt_bf16_to_f32(fmt_bf16_from_f32(au)) != au); /* the F32 amax is not a BF16 value */
  CHECK_EQ_U64(qf_f32_bits(tc_nvfp4_sdec(q, g)), qf_f32_bits(fmt_nvfp4_sdec(au)));
  CHECK_EQ_U64(qf_f32_bits(tc_nvfp4_sdec(q, u)), qf_f32_bits(fmt_nvfp4_sdec(au)));
  CHECK_EQ_U64(qf_f32_bits(tc_nvfp4_sdec(q, "model.layers.1.mlp.experts.2.down_proj")),
               qf_f32_bits(fmt_nvfp4_sdec(tc_amax(o, "model.layers.1.mlp.experts.2.down_proj.weight"))));
  /* kept: attention, router, embeddings, norms: BF16 */
  const char *kept[] = {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.gate.weight",
                        "model.embed_tokens.weight", "model.norm.weight"};
  for (int i = 0; i < 4; i++)
    CHECK_MSG(tc_kept_bf16_bad(o, q, kept[i]) == 0, "kept %s is not BF16 (RNE) of the source", kept[i]);
  int nq;
  double worst = roundtrip_worst(o, q, rt, "nvfp4", &nq);
  CHECK_EQ_I64(nq, 24);
  CHECK_MSG(worst <= 1.0 && worst > 0.3, "worst err/bound %.3f", worst);
  st_ckpt_close(o), st_ckpt_close(q), st_ckpt_close(rt);
  check_kept_and_extras(src, qd, rd);
  python_verify(src, qd, "nvfp4", rd);
}
