/* test_gemm_util.h — helpers shared by the GEMM/linear tests (CPU tests and
 * tests/gpu/gemm_gpu_test.c): deterministic random BF16 data, fp8-block
 * operands made with the project's quantizers plus their per-element error
 * bounds, and the FP64 check with the bound derived in test_gemm.c. */
#ifndef RLRUN_TEST_GEMM_UTIL_H
#define RLRUN_TEST_GEMM_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/formats.h"
#include "kernels/qtensor.h"
#include "kernels/quant.h"

/* splitmix64: the next 64 random bits of *s. */
static inline uint64_t tg_next(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double tg_unif(uint64_t *s) { return (double)(tg_next(s) >> 11) * 0x1p-53; }

/* rows×cols BF16: roughly Gaussian (sum of four uniforms), each row scaled by
 * 2^j, j uniform in [-4, 4], so blocks see different amax. */
static inline uint16_t *tg_rand_bf16(int64_t rows, int64_t cols, uint64_t seed) {
  uint16_t *v = (uint16_t *)rl_xmalloc((size_t)(rows * cols > 0 ? rows * cols : 1) * 2);
  uint64_t s = seed * 0x2545F4914F6CDD1Dull + 1;
  for (int64_t r = 0; r < rows; r++) {
    double sc = ldexp(1.0, (int)(tg_next(&s) % 9) - 4);
    for (int64_t c = 0; c < cols; c++) {
      double g = tg_unif(&s) + tg_unif(&s) + tg_unif(&s) + tg_unif(&s) - 2.0;
      v[r * cols + c] = fmt_bf16_from_f32((float)(g * sc));
    }
  }
  return v;
}

static inline double *tg_bf16_to_f64(const uint16_t *v, int64_t n) {
  double *d = (double *)rl_xmalloc((size_t)(n > 0 ? n : 1) * 8);
  for (int64_t i = 0; i < n; i++) d[i] = fmt_bf16_to_f32(v[i]);
  return d;
}
static inline float *tg_bf16_to_f32(const uint16_t *v, int64_t n) {
  float *d = (float *)rl_xmalloc((size_t)(n > 0 ? n : 1) * 4);
  for (int64_t i = 0; i < n; i++) d[i] = fmt_bf16_to_f32(v[i]);
  return d;
}
static inline double *tg_f32_to_f64(const float *v, int64_t n) {
  double *d = (double *)rl_xmalloc((size_t)(n > 0 ? n : 1) * 8);
  for (int64_t i = 0; i < n; i++) d[i] = v[i];
  return d;
}

/* Outcome of tg_check: the worst error/bound ratio (≤ 1 passes), where, and
 * the relative Frobenius error ‖y − y*‖/‖y*‖. */
typedef struct tg_result {
  double worst;
  int64_t worst_at;
  double rel_fro;
} tg_result;

/* Check y[M][N] against y* = base + Σ_k xr·wr (FP64; base may be NULL) with the
 * bound of test_gemm.c: |y − y*| ≤ (1+r)(Q + (K+2)·u·1.001·Σ|x̂ŵ|) + r|y*|, where
 * x̂, ŵ (xh, wh) are what the GEMM multiplied, Q = Σ ex|wr| + |xr|ew + ex·ew
 * (ex, ew NULL: exact operands) and r the output rounding (2^-8 BF16, 2^-24 FP32). */
static inline tg_result tg_check_base(const float *y, const float *base, int64_t M, int64_t N,
                                      int64_t K, const double *xr, const double *wr,
                                      const double *xh, const double *wh, const double *ex,
                                      const double *ew, double r) {
  tg_result res = {0, -1, 0};
  double num = 0, den = 0, u = 0x1p-24;
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      const double *a = xr + i * K, *b = wr + j * K, *ah = xh + i * K, *bh = wh + j * K;
      double ref = base ? base[i * N + j] : 0.0, mag = 0, q = 0;
      for (int64_t k = 0; k < K; k++) {
        ref += a[k] * b[k];
        mag += fabs(ah[k] * bh[k]);
      }
      if (ex)
        for (int64_t k = 0; k < K; k++) {
          double e1 = ex[i * K + k], e2 = ew[j * K + k];
          q += e1 * fabs(b[k]) + fabs(a[k]) * e2 + e1 * e2;
        }
      double bound = (1 + r) * (q + (double)(K + 2) * u * 1.001 * mag) + r * fabs(ref) + 1e-35;
      double err = fabs((double)y[i * N + j] - ref);
      double ratio = err / bound;
      if (isnan(ratio)) ratio = INFINITY;
      if (res.worst_at < 0 || ratio > res.worst) res.worst = ratio, res.worst_at = i * N + j;
      num += (y[i * N + j] - ref) * (y[i * N + j] - ref);
      den += ref * ref;
    }
  res.rel_fro = den > 0 ? sqrt(num / den) : sqrt(num);
  if (getenv("TG_VERBOSE")) /* how tight the bound is, for whoever tunes it */
    fprintf(stderr, "  tg_check M=%lld N=%lld K=%lld: worst error/bound %.3f, rel Frobenius %.3g\n",
            (long long)M, (long long)N, (long long)K, res.worst, res.rel_fro);
  return res;
}

static inline tg_result tg_check(const float *y, int64_t M, int64_t N, int64_t K, const double *xr,
                                 const double *wr, const double *xh, const double *wh,
                                 const double *ex, const double *ew, double r) {
  return tg_check_base(y, NULL, M, N, K, xr, wr, xh, wh, ex, ew, r);
}

/* An fp8-block operand made by the project's quantizer: the qtensor, its
 * dequantized FP32 values and the per-element bound e_k of test_gemm.c (3). */
typedef struct tg_fp8 {
  qtensor t;
  uint8_t *q;
  float *s;     /* ROWMAJOR scales */
  float *hop;   /* HOPPER layout scales (after tg_fp8_to_hopper) */
  float *deq;
  double *err;
} tg_fp8;

static inline void tg_quant_fp8(tg_fp8 *f, const uint16_t *x, int64_t rows, int64_t K,
                                int is_weight, int ue8m0) {
  memset(f, 0, sizeof *f);
  int64_t kb = quant_cdiv(K, 128), sr = is_weight ? quant_cdiv(rows, 128) : rows;
  f->q = (uint8_t *)rl_xmalloc((size_t)(rows * K) + 1);
  f->s = (float *)rl_xmalloc((size_t)(sr * kb) * 4 + 4);
  f->deq = (float *)rl_xmalloc((size_t)(rows * K) * 4 + 4);
  f->err = (double *)rl_xmalloc((size_t)(rows * K) * 8 + 8);
  quant_opts o = {0};
  o.ue8m0 = ue8m0;
  if (is_weight) {
    quant_fp8_block_weight_cpu(x, rows, K, f->q, f->s, &o, NULL);
    dequant_fp8_block_weight_cpu(f->q, f->s, rows, K, f->deq, NULL);
  } else {
    quant_fp8_block_act_cpu(x, rows, K, f->q, f->s, &o, NULL);
    dequant_fp8_block_act_cpu(f->q, f->s, rows, K, f->deq, NULL);
  }
  for (int64_t r = 0; r < rows; r++)
    for (int64_t k = 0; k < K; k++) {
      double s = f->s[(is_weight ? r / 128 : r) * kb + k / 128];
      f->err[r * K + k] = (0x1p-4 + 4 * 0x1p-24) * fabs((double)fmt_bf16_to_f32(x[r * K + k])) +
                          0x1p-10 * s;
    }
  f->t = qtensor_bf16(NULL, rows, K, 0);
  f->t.fmt = QFMT_FP8_BLOCK;
  f->t.block_rows = is_weight ? 128 : 1;
  f->t.data = f->q;
  f->t.scales = f->s;
}

/* Switch f's scales to the cuBLASLt layout (activations: ld = rows rounded up to 8). */
static inline void tg_fp8_to_hopper(tg_fp8 *f) {
  int64_t rows = f->t.rows, kb = quant_cdiv(f->t.cols, 128);
  if (f->t.block_rows == 128) {
    int64_t nb = quant_cdiv(rows, 128);
    f->hop = (float *)rl_xmalloc((size_t)(nb * quant_roundup(kb, 4)) * 4 + 4);
    quant_layout_fp8_weight_scales_to_cublaslt(f->s, nb, kb, f->hop);
    f->t.layout = QLAYOUT_HOPPER_WEIGHT;
  } else {
    int64_t ld = quant_roundup(rows, 8);
    f->hop = (float *)rl_xmalloc((size_t)(kb * ld) * 4 + 4);
    quant_layout_fp8_act_scales_to_cublaslt(f->s, rows, kb, ld, f->hop);
    f->t.layout = QLAYOUT_HOPPER_ACT;
    f->t.scale_ld = ld;
  }
  f->t.scales = f->hop;
}

static inline void tg_fp8_free(tg_fp8 *f) {
  free(f->q), free(f->s), free(f->hop), free(f->deq), free(f->err);
  memset(f, 0, sizeof *f);
}

#endif
