/* test_convert_util.h — helpers the converter tests share: fixtures, reading
 * tensors as FP32, per-element block scales, config.json's quantization_config,
 * and building small checkpoints with the writer. */
#ifndef RLRUN_TEST_CONVERT_UTIL_H
#define RLRUN_TEST_CONVERT_UTIL_H

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/formats.h"
#include "state/safetensors.h"

/* Like REQUIRE, for helpers that return a value. */
#define REQUIRE_RET(cond, ret)                                                 \
  do {                                                                         \
    if (!(cond)) {                                                             \
      harness_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);                  \
      return ret;                                                              \
    }                                                                          \
  } while (0)

/* $RLRUN_FIXTURES/safetensors/NAME (rotating static buffers). */
static inline const char *tc_fixture(const char *name) {
  static char p[4][1024];
  static int k;
  const char *d = getenv("RLRUN_FIXTURES");
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/safetensors/%s", d && *d ? d : "build/fixtures", name);
  return p[k];
}

/* Open a checkpoint directory; a failure is a test failure (NULL). */
static inline st_ckpt *tc_open(const char *dir) {
  st_ckpt *c = NULL;
  rl_err e;
  if (st_ckpt_open(dir, &c, &e)) harness_fail(__FILE__, __LINE__, "open %s: %s", dir, e.msg);
  return c;
}

/* Read tensor `name` (must be dtype dt and n bytes) into dst; 0 on success. */
static inline int tc_read(st_ckpt *c, const char *name, st_dtype dt, void *dst, size_t n) {
  const st_tensor *t;
  st_file *f = st_ckpt_find(c, name, &t);
  rl_err e;
  if (!f || t->dtype != dt || t->nbytes != n) {
    harness_fail(__FILE__, __LINE__, "tensor %s: missing or not %s of %zu bytes", name,
                 st_dtype_name(dt), n);
    return -1;
  }
  return st_file_read(f, t, dst, &e);
}

/* IEEE half → FP32 (exact), written here independently of the converter's. */
static inline float tc_f16_to_f32(uint16_t h) {
  int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float v = e == 31 ? (m ? NAN : INFINITY) : e ? ldexpf((float)(m | 0x400), e - 25) : ldexpf((float)m, -24);
  return (h & 0x8000) ? -v : v;
}

/* A BF16/F16/F32 tensor as FP32 (malloc'd); N, K get a 2-D shape (1-D: N = 1). */
static inline float *tc_load_f32(st_ckpt *c, const char *name, int64_t *N, int64_t *K) {
  const st_tensor *t;
  st_file *f = st_ckpt_find(c, name, &t);
  rl_err e;
  if (!f) {
    harness_fail(__FILE__, __LINE__, "tensor %s missing", name);
    if (N) *N = 1;
    if (K) *K = 1;
    return rl_xcalloc(1, 4);
  }
  void *raw = rl_xmalloc(t->nbytes + 1);
  float *x = rl_xmalloc(sizeof(float) * (t->numel + 1));
  if (st_file_read(f, t, raw, &e)) harness_fail(__FILE__, __LINE__, "%s", e.msg);
  for (uint64_t i = 0; i < t->numel; i++)
    x[i] = t->dtype == ST_BF16  ? fmt_bf16_to_f32(((uint16_t *)raw)[i])
           : t->dtype == ST_F16 ? tc_f16_to_f32(((uint16_t *)raw)[i])
                                : ((float *)raw)[i];
  if (N) *N = t->ndim == 2 ? t->shape[0] : 1;
  if (K) *K = t->ndim == 2 ? t->shape[1] : (int64_t)t->numel;
  free(raw);
  return x;
}

/* amax of a BF16/F32 tensor. */
static inline float tc_amax(st_ckpt *c, const char *name) {
  int64_t N = 0, K = 0;
  float *x = tc_load_f32(c, name, &N, &K), m = 0;
  for (int64_t i = 0; i < N * K; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
  free(x);
  return m;
}

/* S_dec (weight_scale_2) of an NVFP4 module. */
static inline float tc_nvfp4_sdec(st_ckpt *q, const char *module) {
  char nm[600];
  float v = 0;
  snprintf(nm, sizeof nm, "%s.weight_scale_2", module);
  tc_read(q, nm, ST_F32, &v, 4);
  return v;
}

/* The dequant scale of every element [N][K] of quantized weight `wname`. */
static inline float *tc_block_scales(st_ckpt *q, const char *wname, const char *fmt, int64_t N,
                                     int64_t K) {
  char base[512], nm[600];
  snprintf(base, sizeof base, "%.*s", (int)(strlen(wname) - 7), wname);
  float *s = rl_xmalloc(sizeof(float) * (size_t)(N * K + 1));
  if (!strcmp(fmt, "fp8-block")) {
    int64_t kb = (K + 127) / 128, nb = (N + 127) / 128;
    float *b = rl_xmalloc(sizeof(float) * (size_t)(nb * kb));
    snprintf(nm, sizeof nm, "%s.weight_scale_inv", base);
    tc_read(q, nm, ST_F32, b, sizeof(float) * (size_t)(nb * kb));
    for (int64_t r = 0; r < N; r++)
      for (int64_t c = 0; c < K; c++) s[r * K + c] = b[(r / 128) * kb + c / 128];
    free(b);
  } else if (!strcmp(fmt, "mxfp8")) {
    uint8_t *b = rl_xmalloc((size_t)(N * (K / 32)));
    snprintf(nm, sizeof nm, "%s.weight_scale_inv", base);
    tc_read(q, nm, ST_U8, b, (size_t)(N * (K / 32)));
    for (int64_t r = 0; r < N; r++)
      for (int64_t c = 0; c < K; c++) s[r * K + c] = fmt_e8m0_to_f32(b[r * (K / 32) + c / 32]);
    free(b);
  } else {
    uint8_t *b = rl_xmalloc((size_t)(N * (K / 16)));
    snprintf(nm, sizeof nm, "%s.weight_scale", base);
    tc_read(q, nm, ST_F8_E4M3, b, (size_t)(N * (K / 16)));
    float sd = tc_nvfp4_sdec(q, base);
    for (int64_t r = 0; r < N; r++)
      for (int64_t c = 0; c < K; c++) s[r * K + c] = fmt_e4m3_to_f32(b[r * (K / 16) + c / 16]) * sd;
    free(b);
  }
  return s;
}

/* 1 when tensor `name` has the same dtype, shape and bytes in a and b. */
static inline int tc_same_bytes(st_ckpt *a, st_ckpt *b, const char *name) {
  const st_tensor *ta, *tb;
  st_file *fa = st_ckpt_find(a, name, &ta), *fb = st_ckpt_find(b, name, &tb);
  if (!fa || !fb || ta->dtype != tb->dtype || ta->nbytes != tb->nbytes) return 0;
  char *x = rl_xmalloc(ta->nbytes + 1), *y = rl_xmalloc(tb->nbytes + 1);
  rl_err e;
  int same = !st_file_read(fa, ta, x, &e) && !st_file_read(fb, tb, y, &e) &&
             !memcmp(x, y, ta->nbytes);
  free(x), free(y);
  return same;
}

/* For a tensor convert keeps unquantized: -1 unless `name` is BF16 in q with
 * o's shape, else how many elements differ from the BF16 (RNE) rounding of
 * o's values (o's own bytes when o is BF16). */
static inline int64_t tc_kept_bf16_bad(st_ckpt *o, st_ckpt *q, const char *name) {
  const st_tensor *to, *tq;
  st_file *fo = st_ckpt_find(o, name, &to), *fq = st_ckpt_find(q, name, &tq);
  if (!fo || !fq || tq->dtype != ST_BF16 || tq->ndim != to->ndim || tq->numel != to->numel) return -1;
  for (int d = 0; d < to->ndim; d++)
    if (tq->shape[d] != to->shape[d]) return -1;
  float *x = tc_load_f32(o, name, NULL, NULL);
  uint16_t *y = rl_xmalloc(tq->nbytes + 2);
  rl_err e;
  int64_t bad = 0;
  if (st_file_read(fq, tq, y, &e)) bad = -1;
  for (uint64_t i = 0; bad >= 0 && i < to->numel; i++) bad += y[i] != fmt_bf16_from_f32(x[i]);
  free(x), free(y);
  return bad;
}

/* config.json's quantization_config of a directory (a new reference), or NULL. */
static inline json_t *tc_quant_config(const char *dir) {
  char p[1100];
  snprintf(p, sizeof p, "%s/config.json", dir);
  json_t *c = json_load_file(p, 0, NULL);
  if (!c) {
    harness_fail(__FILE__, __LINE__, "cannot read %s", p);
    return NULL;
  }
  json_t *q = json_object_get(c, "quantization_config");
  if (q) json_incref(q);
  json_decref(c);
  return q;
}

#endif
