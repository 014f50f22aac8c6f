/* fp8_gpu_util.h — what the fp8-block GEMM tests on the GPU machine share
 * (gemm_small_fp8_gpu_test.c, gemm_fp8q_gpu_test.c): device/host copies, an
 * fp8-block weight made by the project's quantizer and uploaded with
 * HOPPER_WEIGHT or ROWMAJOR scales, and the FP64 reference S* (with A = Σ|x̂·ŵ|,
 * the magnitude the error bounds scale with) of chosen rows. Header-only, static
 * functions; include after <stdio.h>, <stdlib.h>, <string.h>, <math.h>. */
#ifndef RLRUN_TESTS_GPU_FP8_GPU_UTIL_H
#define RLRUN_TESTS_GPU_FP8_GPU_UTIL_H
#include <stdint.h>

#include "kernels/common.h"
#include "kernels/formats.h"
#include "kernels/quant.h"
#include "kernels/qtensor.h"
#include "tests/cuda_check.h"

#define CK(x) CU(x)

static void *dev_copy(const void *h, size_t n) {
  void *d = NULL;
  CK(cudaMalloc(&d, n ? n : 16));
  if (n) CK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
  return d;
}

static void *host_copy(const void *d, size_t n) {
  void *h = rl_xmalloc(n ? n : 16);
  CK(cudaDeviceSynchronize());
  if (n) CK(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
  return h;
}

/* An fp8-block weight: host codes and ROWMAJOR scales, and the device qtensor
 * (HOPPER_WEIGHT scales, as sync makes them, or ROWMAJOR). */
typedef struct wop {
  int64_t N, K;
  uint8_t *q;
  float *s; /* [ceil(N/128)][ceil(K/128)] */
  qtensor d;
} wop;

static wop w_upload(uint8_t *q, float *s, int64_t N, int64_t K, int hopper) {
  wop w;
  memset(&w, 0, sizeof w);
  w.N = N, w.K = K, w.q = q, w.s = s;
  int64_t nb = quant_cdiv(N, 128), kb = quant_cdiv(K, 128), kb4 = quant_roundup(kb, 4);
  w.d = qtensor_bf16(NULL, N, K, 1);
  w.d.fmt = QFMT_FP8_BLOCK, w.d.block_rows = 128;
  w.d.data = dev_copy(q, (size_t)(N * K));
  if (hopper) {
    float *h = rl_xmalloc((size_t)(nb * kb4) * 4 + 4);
    quant_layout_fp8_weight_scales_to_cublaslt(s, nb, kb, h);
    w.d.scales = dev_copy(h, (size_t)(nb * kb4) * 4);
    w.d.layout = QLAYOUT_HOPPER_WEIGHT;
    free(h);
  } else {
    w.d.scales = dev_copy(s, (size_t)(nb * kb) * 4);
    w.d.layout = QLAYOUT_ROWMAJOR;
  }
  return w;
}

/* The project's weight quantizer on BF16 w. */
static wop w_make(const uint16_t *wb, int64_t N, int64_t K, int hopper) {
  uint8_t *q = rl_xmalloc((size_t)(N * K) + 1);
  float *s = rl_xmalloc((size_t)(quant_cdiv(N, 128) * quant_cdiv(K, 128)) * 4 + 4);
  quant_fp8_block_weight_cpu(wb, N, K, q, s, NULL, NULL);
  return w_upload(q, s, N, K, hopper);
}

static void w_free(wop *w) {
  cudaFree(w->d.data), cudaFree(w->d.scales);
  free(w->q), free(w->s);
}

static double g_e4m3[256]; /* E4M3 code → value: fp8_util_init() */
static void fp8_util_init(void) {
  for (int c = 0; c < 256; c++) g_e4m3[c] = fmt_e4m3_to_f32((uint8_t)c);
}

/* S* and A of x rows `rows` (codes qx [.][K], scales sx [.][kb] ROWMAJOR) against w:
 * block sums of codes exact in FP64, then × (sx·sw) (exact in FP64) and summed. */
static void ref_rows(const uint8_t *qx, const float *sx, const int64_t *rows, int nr, const wop *w, double *ref,
                     double *mag) {
  const int64_t N = w->N, K = w->K, kb = quant_cdiv(K, 128);
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t n = 0; n < N; n++)
    for (int i = 0; i < nr; i++) {
      const uint8_t *a = qx + rows[i] * K, *b = w->q + n * K;
      double s = 0, g = 0;
      for (int64_t j = 0; j < kb; j++) {
        double ps = 0, pg = 0;
        for (int64_t k = 128 * j; k < K && k < 128 * (j + 1); k++) {
          double p = g_e4m3[a[k]] * g_e4m3[b[k]];
          ps += p, pg += fabs(p);
        }
        double sc = (double)sx[rows[i] * kb + j] * (double)w->s[(n / 128) * kb + j];
        s += ps * sc, g += pg * fabs(sc);
      }
      ref[(int64_t)i * N + n] = s, mag[(int64_t)i * N + n] = g;
    }
}

/* How many of the n floats of a differ from b's, bit for bit. */
static int64_t n_bits_differ(const float *a, const float *b, int64_t n) {
  int64_t d = 0;
  for (int64_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], 4) != 0;
  return d;
}

/* How many of the n floats of y are not bf16(ref) bit for bit (the exact cases' S*). */
static int64_t n_not_bf16_of(const float *y, const double *ref, int64_t n) {
  int64_t d = 0;
  for (int64_t i = 0; i < n; i++) {
    const float want = fmt_bf16_to_f32(fmt_bf16_from_f32((float)ref[i]));
    d += memcmp(&y[i], &want, 4) != 0;
  }
  return d;
}

/* Ordinal of a BF16 value held in FP32: neighbours differ by 1, ±0 are 0. */
static int32_t ord(float v) {
  uint16_t h = fmt_bf16_from_f32(v);
  return (h & 0x8000) ? -(int32_t)(h & 0x7fff) : (int32_t)h;
}

/* The operands of the exact-arithmetic cases: x [M][K] BF16 (blocks of ±448·2^i and
 * integers·2^i, |integer| ≤ 4: sx = 2^i, qx = the integers) and an fp8-block weight
 * (integer codes in [-4, 4], power-of-two scales, HOPPER_WEIGHT layout) whose every
 * product and sum is exact. Needs tests/test_gemm_util.h (tg_next). */
static uint16_t *exact_operands(int64_t M, int64_t N, int64_t K, uint64_t seed, wop *w_out) {
  const int64_t kb = quant_cdiv(K, 128), nb = quant_cdiv(N, 128);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 7;
  uint16_t *x = rl_xmalloc((size_t)(M * K) * 2);
  for (int64_t r = 0; r < M; r++)
    for (int64_t j = 0; j < kb; j++) {
      int64_t k0 = 128 * j, k1 = k0 + 128 < K ? k0 + 128 : K;
      double sc = ldexp(1.0, (int)(tg_next(&s) % 3) - 1);
      for (int64_t k = k0; k < k1; k++) x[r * K + k] = fmt_bf16_from_f32((float)(((int)(tg_next(&s) % 9) - 4) * sc));
      int64_t at = k0 + (int64_t)(tg_next(&s) % (uint64_t)(k1 - k0));
      x[r * K + at] = fmt_bf16_from_f32((float)((tg_next(&s) & 1 ? 448.0 : -448.0) * sc));
    }
  uint8_t *q = rl_xmalloc((size_t)(N * K) + 1);
  float *sw = rl_xmalloc((size_t)(nb * kb) * 4 + 4);
  for (int64_t i = 0; i < N * K; i++) q[i] = fmt_e4m3_from_f32((float)((int)(tg_next(&s) % 9) - 4));
  for (int64_t i = 0; i < nb * kb; i++) sw[i] = (float)ldexp(1.0, (int)(tg_next(&s) % 3) - 1);
  *w_out = w_upload(q, sw, N, K, 1);
  return x;
}

#endif
