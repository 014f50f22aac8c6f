/* gemm_small_fp8_gpu_test.c — gemm_small_fp8_block_cuda (the decode step's small-M
 * fp8-block GEMM, kernels/gemm_small_fp8_cuda.cu) on the GPU machine (own main;
 * built by `make gpu-tests`). One PASS/FAIL line per case, a final "N passed, M
 * failed" line; exit 1 on any failure. Usage: gemm_small_fp8_gpu_test [--quick].
 *
 * What is asserted, per (N, K) with x [64][K] (random rows scaled 2^-4 … 2^4, plus
 * a zero block, a block of tiny values (scale < 2^-90: the quantizer's __fdiv_rn
 * path) and a block of huge values, scale ~2^104):
 *   quant     the activation as the kernel quantized and multiplied it (probe entry
 *             point) == quant_fp8_block_act_cuda's bytes (what linear_forward
 *             multiplies) == quant_fp8_block_act_cpu's, data and scales, bitwise.
 *   fp64      |y − S*| ≤ 2^-10·A + 2^-8·|S*| for every checked element, where S* =
 *             Σ_k x̂_k·ŵ_k in FP64 over the dequantized operands (qx·sx, qw·sw: the
 *             exact bytes of the quantizers) and A = Σ_k |x̂_k·ŵ_k|. Derivation: inside
 *             a 128-K block the FP8 MMAs accumulate on the tensor core with fewer bits
 *             than FP32 (Hopper: ~14 bits, DeepSeek-V3; each k32 MMA ≤ ~2^-13 of the
 *             block's Σ|qx·qw|, four of them ≤ 2^-11·A_block once scaled); the FP32 steps
 *             after that (one FMA per block, the slice sums: ≤ (K/128 + 32)·2^-24·A) are
 *             far below; the BF16 rounding of the output adds 2^-8·|y| ≤ 2^-8(|S*| + err).
 *             So 2^-10·A holds with 2× margin — the bound gemm_gpu_test asks of cuBLASLt's
 *             fp8-block GEMM on the same tensor cores, still 64× below the quantization
 *             error (2^-4). The worst measured ratio is printed. A wrong scale, block or
 *             K permutation gives errors of order A: far beyond.
 *   cublaslt  against linear_forward (activation quantizer + cuBLASLt block-scaled FP8,
 *             BF16 output, then FP32) on the same x and w: both are within the bound
 *             above of S*, so |y − y_lf| ≤ 2^-9·A + 2^-7·|S*| is asked; the count of
 *             elements more than one BF16 step apart is printed.
 *   invariance rows of M = 1 (rows 0, 5, 63 alone), 7 and 33 == the same rows of
 *             M = 64, bitwise; and the knobs that must not change a sum (BN 32/64,
 *             reduce cluster/global, PDL on/off) give M = 64's bits.
 * Exact case: x and w built so that every quantity is exact (x blocks hold ±448·2^i
 * and integers·2^i with |integer| ≤ 4, so sx = 2^i and qx = the integers; weight codes
 * integers in [-4, 4] with power-of-two scales: block sums < 2^12, totals multiples of
 * 2^-2 below 2^20): y == bf16_rne(S*) bitwise, and linear_forward == y bitwise.
 * Non-finite: a row with +Inf and a row with NaN give all-NaN rows (as linear_forward's),
 * the kernel's qx/sx == the quantizer's poisoned bytes (scale NaN, data 0), the other
 * rows == a finite run's, bitwise. Graph: 3 captured calls replayed 3 times == eager,
 * bitwise (PDL on and off). Refusals: M > 64, K % 16, a BF16 or host weight. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "tests/test_gemm_util.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#include "tests/gpu/fp8_gpu_util.h"

static int g_fail, g_pass;
#define MMAX 64
#define TOL 0x1p-10 /* × A, see the top */

static void tally(int ok) { ok ? g_pass++ : g_fail++; }

/* ---------------------------------------------------------------- operands */

/* Random x [MMAX][K] with the special blocks of the top (where K allows). */
static uint16_t *x_make(int64_t K, uint64_t seed) {
  uint16_t *x = tg_rand_bf16(MMAX, K, seed);
  int64_t kb = quant_cdiv(K, 128);
  for (int64_t k = 0; k < K && k < 128; k++) x[3 * K + k] = 0;                         /* row 3, block 0: zeros */
  for (int64_t k = 128 * (kb - 1); k < K; k++) x[5 * K + k] = fmt_bf16_from_f32(1e-30f * (float)((k % 7) - 3)); /* tiny */
  for (int64_t k = 0; k < K && k < 128; k++) x[6 * K + k] = fmt_bf16_from_f32(1e34f * (float)((k % 5) - 2) / 2.0f); /* huge (finite sums) */
  return x;
}


/* ---------------------------------------------------------------- cases */

/* One call; returns 0 or prints the error. */
static int run(float *y, const uint16_t *x, const wop *w, int64_t M, const quant_policy *p, void *s) {
  rl_err e;
  int rc = gemm_small_fp8_block_cuda(y, x, &w->d, M, p, s, &e);
  if (rc) printf("  gemm_small_fp8_block_cuda M=%lld: %s\n", (long long)M, e.msg);
  return rc;
}

/* linear_forward on M rows, as FP32 (host). NULL on error. */
static float *lf_run(const uint16_t *xd, const wop *w, int64_t M, const quant_policy *p) {
  uint16_t *yb;
  CK(cudaMalloc((void **)&yb, (size_t)(M * w->N) * 2));
  rl_err e;
  float *out = NULL;
  if (linear_forward(yb, xd, M, &w->d, p, &e)) {
    printf("  linear_forward: %s\n", e.msg);
  } else {
    uint16_t *h = host_copy(yb, (size_t)(M * w->N) * 2);
    out = tg_bf16_to_f32(h, M * w->N);
    free(h);
  }
  cudaFree(yb);
  return out;
}

/* The random-data case of one (N, K): quant, fp64, cublaslt, invariance (see the top). */
static void case_shape(int64_t N, int64_t K, int hopper, int ue8m0, uint64_t seed) {
  const int64_t kb = quant_cdiv(K, 128);
  uint16_t *x = x_make(K, seed), *wb = tg_rand_bf16(N, K, seed + 1);
  wop w = w_make(wb, N, K, hopper);
  free(wb);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  p.ue8m0 = ue8m0;
  char tag[96];
  snprintf(tag, sizeof tag, "N=%-6lld K=%-5lld %s%s", (long long)N, (long long)K, hopper ? "hopper" : "rowmajor",
           ue8m0 ? " ue8m0" : "");
  uint16_t *xd = dev_copy(x, (size_t)(MMAX * K) * 2);
  float *yd, *sxd, *sxq;
  uint8_t *qxd, *qxq;
  CK(cudaMalloc((void **)&yd, (size_t)(MMAX * N) * 4));
  CK(cudaMalloc((void **)&qxd, (size_t)(MMAX * K)));
  CK(cudaMalloc((void **)&sxd, (size_t)(MMAX * kb) * 4));
  CK(cudaMalloc((void **)&qxq, (size_t)(MMAX * K)));
  CK(cudaMalloc((void **)&sxq, (size_t)(MMAX * kb) * 4));
  CK(cudaMemset(yd, 0xff, (size_t)(MMAX * N) * 4)); /* NaN: a missed element shows */
  CK(cudaMemset(qxd, 0x55, (size_t)(MMAX * K)));
  CK(cudaMemset(sxd, 0x55, (size_t)(MMAX * kb) * 4));
  rl_err e;
  int rc = gemm_small_fp8_block_probe_cuda(yd, qxd, sxd, xd, &w.d, MMAX, &p, NULL, &e);
  if (rc) {
    printf("FAIL   fp8-small %s: probe call: %s\n", tag, e.msg);
    g_fail++;
    goto out;
  }
  /* quant: the kernel's activation bytes == the CUDA quantizer's == the CPU quantizer's */
  {
    quant_opts qo = {0};
    qo.ue8m0 = ue8m0;
    int qs = quant_fp8_block_act_cuda(xd, MMAX, K, qxq, sxq, &qo, NULL, NULL, &e);
    uint8_t *qk = host_copy(qxd, (size_t)(MMAX * K)), *qc = host_copy(qxq, (size_t)(MMAX * K));
    float *sk = host_copy(sxd, (size_t)(MMAX * kb) * 4), *sc = host_copy(sxq, (size_t)(MMAX * kb) * 4);
    uint8_t *qh = rl_xmalloc((size_t)(MMAX * K));
    float *sh = rl_xmalloc((size_t)(MMAX * kb) * 4);
    int qh_st = quant_fp8_block_act_cpu(x, MMAX, K, qh, sh, &qo, NULL);
    int64_t dq_cuda = 0, ds_cuda = 0, dq_cpu = 0, ds_cpu = 0;
    for (int64_t i = 0; i < MMAX * K; i++) dq_cuda += qk[i] != qc[i], dq_cpu += qk[i] != qh[i];
    for (int64_t i = 0; i < MMAX * kb; i++)
      ds_cuda += memcmp(&sk[i], &sc[i], 4) != 0, ds_cpu += memcmp(&sk[i], &sh[i], 4) != 0;
    int ok = qs == QUANT_OK && qh_st == QUANT_OK && !dq_cuda && !ds_cuda && !dq_cpu && !ds_cpu;
    printf("%-6s fp8-small quant      %s: kernel's qx/sx vs quant_fp8_block_act_cuda: %lld/%lld bytes/scales "
           "differ; vs _cpu: %lld/%lld\n",
           ok ? "PASS" : "FAIL", tag, (long long)dq_cuda, (long long)ds_cuda, (long long)dq_cpu, (long long)ds_cpu);
    tally(ok);
    /* fp64: against S* from the CPU quantizer's bytes (== the kernel's when quant passed) */
    int64_t rows[MMAX];
    int nr = 0;
    if ((double)MMAX * N * K <= 1.5e9)
      for (int i = 0; i < MMAX; i++) rows[nr++] = i;
    else {
      static const int64_t sample[] = {0, 3, 5, 6, 31, 63};
      for (int i = 0; i < 6; i++) rows[nr++] = sample[i];
    }
    double *ref = rl_xmalloc((size_t)nr * (size_t)N * 8), *mag = rl_xmalloc((size_t)nr * (size_t)N * 8);
    ref_rows(qh, sh, rows, nr, &w, ref, &mag[0]);
    float *y = host_copy(yd, (size_t)(MMAX * N) * 4);
    double worst = 0;
    int64_t bad = 0, far = 0, nonfin = 0;
    for (int64_t i = 0; i < MMAX * N; i++) nonfin += !isfinite(y[i]);
    for (int i = 0; i < nr; i++)
      for (int64_t n = 0; n < N; n++) {
        double r = ref[(int64_t)i * N + n], a = mag[(int64_t)i * N + n], v = y[rows[i] * N + n];
        double ratio = fabs(v - r) / (TOL * a + 0x1p-8 * fabs(r) + 1e-38);
        if (!(ratio <= 1)) bad++;
        if (!(ratio <= worst)) worst = isnan(ratio) ? INFINITY : ratio;
        far += abs(ord((float)v) - ord((float)r)) > 1;
      }
    ok = !bad && !nonfin;
    printf("%-6s fp8-small fp64       %s: %d rows × N checked, beyond bound %lld, worst err/bound %.4f, "
           ">1 BF16 step from S* %lld, non-finite outputs %lld\n",
           ok ? "PASS" : "FAIL", tag, nr, (long long)bad, worst, (long long)far, (long long)nonfin);
    tally(ok);
    /* cublaslt: linear_forward on the same x, w */
    float *yl = lf_run(xd, &w, MMAX, &p);
    if (!yl) {
      printf("FAIL   fp8-small cublaslt   %s: linear_forward failed\n", tag);
      g_fail++;
    } else {
      int64_t lbad = 0, lfar = 0, same = 0;
      double lworst = 0;
      for (int i = 0; i < nr; i++)
        for (int64_t n = 0; n < N; n++) {
          int64_t o = rows[i] * N + n;
          double r = ref[(int64_t)i * N + n], a = mag[(int64_t)i * N + n];
          double ratio = fabs((double)y[o] - yl[o]) / (2 * TOL * a + 0x1p-7 * fabs(r) + 1e-38);
          if (!(ratio <= 1)) lbad++;
          if (!(ratio <= lworst)) lworst = isnan(ratio) ? INFINITY : ratio;
        }
      for (int64_t i = 0; i < MMAX * N; i++) {
        same += memcmp(&y[i], &yl[i], 4) == 0;
        lfar += abs(ord(y[i]) - ord(yl[i])) > 1;
      }
      ok = !lbad;
      printf("%-6s fp8-small cublaslt   %s: vs linear_forward beyond bound %lld (worst %.4f); all rows: %.2f%% "
             "bitwise equal, %lld elements >1 BF16 step apart\n",
             ok ? "PASS" : "FAIL", tag, (long long)lbad, lworst, 100.0 * (double)same / (double)(MMAX * N),
             (long long)lfar);
      tally(ok);
      free(yl);
    }
    /* invariance: rows of M = 1, 7, 33 and the bit-neutral knobs == M = 64's */
    {
      int64_t diff = 0, checks = 0;
      static const int64_t Ms[] = {7, 33};
      for (int mi = 0; mi < 2; mi++) {
        CK(cudaMemset(yd, 0xff, (size_t)(MMAX * N) * 4));
        if (run(yd, xd, &w, Ms[mi], &p, NULL)) {
          diff++;
          continue;
        }
        float *ym = host_copy(yd, (size_t)(Ms[mi] * N) * 4);
        for (int64_t r = 0; r < Ms[mi]; r++) diff += memcmp(ym + r * N, y + r * N, (size_t)N * 4) != 0, checks++;
        free(ym);
      }
      static const int64_t alone[] = {0, 5, 63};
      for (int i = 0; i < 3; i++) {
        if (run(yd, xd + alone[i] * K, &w, 1, &p, NULL)) {
          diff++;
          continue;
        }
        float *y1 = host_copy(yd, (size_t)N * 4);
        diff += memcmp(y1, y + alone[i] * N, (size_t)N * 4) != 0, checks++;
        free(y1);
      }
      gemm_small_fp8_tune t0 = gemm_small_fp8_tune_get();
      static const int knob[][3] = {{32, -1, -1}, {64, -1, -1}, {-1, GEMM_SMALL_FP8_REDUCE_GLOBAL, -1},
                                    {-1, GEMM_SMALL_FP8_REDUCE_CLUSTER, -1}, {-1, -1, 0}, {-1, -1, 1}};
      for (int k = 0; k < 6; k++) {
        gemm_small_fp8_tune t = t0;
        if (knob[k][0] >= 0) t.bn = knob[k][0];
        if (knob[k][1] >= 0) t.reduce = knob[k][1];
        if (knob[k][2] >= 0) t.pdl = knob[k][2];
        gemm_small_fp8_tune_set(&t);
        CK(cudaMemset(yd, 0xff, (size_t)(MMAX * N) * 4));
        if (run(yd, xd, &w, MMAX, &p, NULL)) diff++;
        else {
          float *yk = host_copy(yd, (size_t)(MMAX * N) * 4);
          for (int64_t r = 0; r < MMAX; r++) diff += memcmp(yk + r * N, y + r * N, (size_t)N * 4) != 0;
          checks += MMAX;
          free(yk);
        }
      }
      gemm_small_fp8_tune_set(NULL);
      int slices;
      int64_t sk;
      gemm_small_fp8_plan(N, K, &slices, &sk);
      printf("%-6s fp8-small invariance %s: slices=%d; rows of M=7, 33, rows 0/5/63 alone, M=64 under bn 32/64, "
             "reduce global/cluster, pdl 0/1 vs M=64: %lld of %lld rows differ\n",
             diff ? "FAIL" : "PASS", tag, slices, (long long)diff, (long long)checks);
      tally(!diff);
    }
    free(qk), free(qc), free(sk), free(sc), free(qh), free(sh), free(ref), free(mag), free(y);
  }
out:
  cudaFree(xd), cudaFree(yd), cudaFree(qxd), cudaFree(sxd), cudaFree(qxq), cudaFree(sxq);
  w_free(&w);
  free(x);
}

/* Exact arithmetic (see the top): y == bf16(S*) and == linear_forward, bitwise. */
static void case_exact(int64_t N, int64_t K, uint64_t seed) {
  const int64_t kb = quant_cdiv(K, 128);
  wop w;
  uint16_t *x = exact_operands(MMAX, N, K, seed, &w);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  uint8_t *qh = rl_xmalloc((size_t)(MMAX * K));
  float *sh = rl_xmalloc((size_t)(MMAX * kb) * 4);
  quant_fp8_block_act_cpu(x, MMAX, K, qh, sh, NULL, NULL);
  int64_t rows[MMAX];
  for (int i = 0; i < MMAX; i++) rows[i] = i;
  double *ref = rl_xmalloc((size_t)(MMAX * N) * 8), *mag = rl_xmalloc((size_t)(MMAX * N) * 8);
  ref_rows(qh, sh, rows, MMAX, &w, ref, mag);
  int64_t inexact = 0; /* the construction's promise: S* is an FP32 value */
  for (int64_t i = 0; i < MMAX * N; i++) inexact += (double)(float)ref[i] != ref[i];
  uint16_t *xd = dev_copy(x, (size_t)(MMAX * K) * 2);
  float *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(MMAX * N) * 4));
  CK(cudaMemset(yd, 0xff, (size_t)(MMAX * N) * 4));
  int64_t ne = -1, nl = -1;
  if (!run(yd, xd, &w, MMAX, &p, NULL)) {
    float *y = host_copy(yd, (size_t)(MMAX * N) * 4), *yl = lf_run(xd, &w, MMAX, &p);
    ne = n_not_bf16_of(y, ref, MMAX * N);
    if (yl) nl = n_bits_differ(y, yl, MMAX * N);
    free(y), free(yl);
  }
  int ok = inexact == 0 && ne == 0 && nl == 0;
  printf("%-6s fp8-small exact      N=%-6lld K=%-5lld M=64: elements ≠ bf16(S*) %lld, ≠ linear_forward %lld "
         "(S* not an FP32 value: %lld)\n",
         ok ? "PASS" : "FAIL", (long long)N, (long long)K, (long long)ne, (long long)nl, (long long)inexact);
  tally(ok);
  cudaFree(xd), cudaFree(yd);
  w_free(&w);
  free(x), free(qh), free(sh), free(ref), free(mag);
}

/* Non-finite activations: rows 2 (+Inf) and 4 (NaN) all NaN, as linear_forward's; the
 * kernel's qx/sx == the quantizer's poisoned bytes; other rows == the finite run's. */
static void case_nonfinite(int64_t N, int64_t K) {
  const int64_t kb = quant_cdiv(K, 128);
  uint16_t *x = tg_rand_bf16(MMAX, K, 31), *xb = rl_xmalloc((size_t)(MMAX * K) * 2);
  memcpy(xb, x, (size_t)(MMAX * K) * 2);
  xb[2 * K + 5] = 0x7f80;                 /* +Inf in row 2, block 0 */
  xb[4 * K + (K > 128 ? 130 : 7)] = 0x7fc1; /* NaN in row 4 */
  uint16_t *wb = tg_rand_bf16(N, K, 32);
  wop w = w_make(wb, N, K, 1);
  free(wb);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  uint16_t *xd = dev_copy(x, (size_t)(MMAX * K) * 2), *xbd = dev_copy(xb, (size_t)(MMAX * K) * 2);
  float *yd, *ybd, *sxd, *sxq;
  uint8_t *qxd, *qxq;
  CK(cudaMalloc((void **)&yd, (size_t)(MMAX * N) * 4));
  CK(cudaMalloc((void **)&ybd, (size_t)(MMAX * N) * 4));
  CK(cudaMalloc((void **)&qxd, (size_t)(MMAX * K)));
  CK(cudaMalloc((void **)&sxd, (size_t)(MMAX * kb) * 4));
  CK(cudaMalloc((void **)&qxq, (size_t)(MMAX * K)));
  CK(cudaMalloc((void **)&sxq, (size_t)(MMAX * kb) * 4));
  rl_err e;
  int ok = 0;
  int64_t nan_rows = 0, other = 0, lf_nan = 0, qdiff = 0;
  if (!run(yd, xd, &w, MMAX, &p, NULL) &&
      !gemm_small_fp8_block_probe_cuda(ybd, qxd, sxd, xbd, &w.d, MMAX, &p, NULL, &e) &&
      quant_fp8_block_act_cuda(xbd, MMAX, K, qxq, sxq, NULL, NULL, NULL, &e) == QUANT_OK) {
    float *y = host_copy(yd, (size_t)(MMAX * N) * 4), *yb = host_copy(ybd, (size_t)(MMAX * N) * 4);
    for (int64_t r = 0; r < MMAX; r++) {
      if (r == 2 || r == 4) {
        int64_t n_nan = 0;
        for (int64_t n = 0; n < N; n++) n_nan += isnan(yb[r * N + n]);
        nan_rows += n_nan == N;
      } else {
        other += memcmp(yb + r * N, y + r * N, (size_t)N * 4) != 0;
      }
    }
    float *yl = lf_run(xbd, &w, MMAX, &p);
    if (yl) {
      for (int64_t n = 0; n < N; n++) lf_nan += isnan(yl[2 * N + n]) && isnan(yl[4 * N + n]);
      free(yl);
    }
    uint8_t *qk = host_copy(qxd, (size_t)(MMAX * K)), *qc = host_copy(qxq, (size_t)(MMAX * K));
    float *sk = host_copy(sxd, (size_t)(MMAX * kb) * 4), *sc = host_copy(sxq, (size_t)(MMAX * kb) * 4);
    qdiff = (memcmp(qk, qc, (size_t)(MMAX * K)) != 0) + (memcmp(sk, sc, (size_t)(MMAX * kb) * 4) != 0);
    free(qk), free(qc), free(sk), free(sc), free(y), free(yb);
    ok = nan_rows == 2 && other == 0 && lf_nan == N && qdiff == 0;
  } else {
    printf("  %s\n", e.msg);
  }
  printf("%-6s fp8-small nonfinite  N=%-6lld K=%-5lld: all-NaN rows %lld of 2 (linear_forward: %lld of %lld "
         "columns NaN in both), other rows ≠ finite run %lld, qx/sx ≠ quantizer's %lld\n",
         ok ? "PASS" : "FAIL", (long long)N, (long long)K, (long long)nan_rows, (long long)lf_nan, (long long)N,
         (long long)other, (long long)qdiff);
  tally(ok);
  cudaFree(xd), cudaFree(xbd), cudaFree(yd), cudaFree(ybd), cudaFree(qxd), cudaFree(sxd), cudaFree(qxq),
      cudaFree(sxq);
  w_free(&w);
  free(x), free(xb);
}

/* CUDA graph: 3 captured calls, 3 replays == the eager call, bitwise (PDL off and on). */
static void case_graph(int64_t M, int64_t N, int64_t K, int pdl) {
  uint16_t *x = tg_rand_bf16(M, K, 77), *wb = tg_rand_bf16(N, K, 78);
  wop w = w_make(wb, N, K, 1);
  free(wb);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  gemm_small_fp8_tune t = gemm_small_fp8_tune_get();
  t.pdl = pdl;
  gemm_small_fp8_tune_set(&t);
  uint16_t *xd = dev_copy(x, (size_t)(M * K) * 2);
  float *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(M * N) * 4));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  int rc = run(yd, xd, &w, M, &p, s); /* eager: grows the workspace */
  CK(cudaStreamSynchronize(s));
  float *ye = rc ? NULL : host_copy(yd, (size_t)(M * N) * 4);
  cudaGraph_t g = NULL;
  cudaGraphExec_t ge = NULL;
  int same = 0;
  if (!rc) {
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < 3 && !rc; i++) rc = run(yd, xd, &w, M, &p, s);
    cudaError_t ce = cudaStreamEndCapture(s, &g);
    if (ce != cudaSuccess) printf("  cudaStreamEndCapture: %s\n", cudaGetErrorString(ce)), rc = 1;
  }
  if (!rc) {
    CK(cudaGraphInstantiate(&ge, g, 0));
    for (int rep = 0; rep < 3; rep++) {
      CK(cudaMemsetAsync(yd, 0xff, (size_t)(M * N) * 4, s));
      CK(cudaGraphLaunch(ge, s));
      CK(cudaStreamSynchronize(s));
      float *yg = host_copy(yd, (size_t)(M * N) * 4);
      same += memcmp(yg, ye, (size_t)(M * N) * 4) == 0;
      free(yg);
    }
  }
  gemm_small_fp8_tune_set(NULL);
  int slices;
  int64_t sk;
  gemm_small_fp8_plan(N, K, &slices, &sk);
  int ok = !rc && same == 3;
  printf("%-6s fp8-small graph      N=%-6lld K=%-5lld M=%-3lld slices=%d pdl=%d: 3 replays of 3 captured calls == "
         "eager: %d of 3\n",
         ok ? "PASS" : "FAIL", (long long)N, (long long)K, (long long)M, slices, pdl, same);
  tally(ok);
  if (ge) cudaGraphExecDestroy(ge);
  if (g) cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  cudaFree(xd), cudaFree(yd);
  w_free(&w);
  free(ye), free(x);
}

/* Refusals before any device access: each must be RL_EXIT_USAGE. */
static void case_refuse(void) {
  uint16_t *xb = tg_rand_bf16(MMAX, 256, 5), *wb = tg_rand_bf16(64, 256, 6);
  wop w = w_make(wb, 64, 256, 1), w2 = w_make(wb, 64, 240, 1);
  w2.d.cols = 248; /* K % 16 != 0 (data only read if accepted) */
  uint16_t *xd = dev_copy(xb, (size_t)(MMAX * 256) * 2);
  float *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(MMAX * 64) * 4 * 2));
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  rl_err e;
  qtensor wbf = qtensor_bf16(xd, 64, 256, 1), whost = w.d;
  whost.on_device = 0;
  int codes[5] = {gemm_small_fp8_block_cuda(yd, xd, &w.d, MMAX + 1, &p, NULL, &e),
                  gemm_small_fp8_block_cuda(yd, xd, &w2.d, 8, &p, NULL, &e),
                  gemm_small_fp8_block_cuda(yd, xd, &wbf, 8, &p, NULL, &e),
                  gemm_small_fp8_block_cuda(yd, xd, &whost, 8, &p, NULL, &e),
                  gemm_small_fp8_block_cuda(yd, xd + 1, &w.d, 8, &p, NULL, &e)};
  int ok = 1;
  for (int i = 0; i < 5; i++) ok &= codes[i] == RL_EXIT_USAGE;
  printf("%-6s fp8-small refuse     M=65, K=248, BF16 weight, host weight, misaligned x → codes %d %d %d %d %d "
         "(want %d)\n",
         ok ? "PASS" : "FAIL", codes[0], codes[1], codes[2], codes[3], codes[4], RL_EXIT_USAGE);
  tally(ok);
  cudaFree(xd), cudaFree(yd);
  w_free(&w), w_free(&w2);
  free(xb), free(wb);
}

/* ---------------------------------------------------------------- gemm_small_fp8_group_cuda
 * The small-M BF16 kernel's F8 form on an activation quantized beforehand (the
 * decode step's q8 norms). Per group of segments (N_i, K): against S* (the fp64
 * bound above, every segment), against linear_forward (the same bound as the
 * mma.sync kernel's), BF16 output == the FP32 output's BF16 bits, cuBLASLt's scale
 * layout (1, ld) == row-major (kb, 1), each segment alone == its part of the group,
 * rows of M = 1 (0, 5, 63 alone), 7 and 33, of M = 130 (three 64-row chunks; x's
 * rows repeated) and the bit-neutral knobs (bn 32/64, reduce global/cluster, pdl
 * 0/1) == M = 64's, a NaN scale poisons its row only. */
static int g8_run(void *const *y, const wop *w, int n, const uint8_t *xq, const float *xs, int64_t rs, int64_t ks,
                  int64_t M, int64_t K, int ob) {
  gemm_small_seg8 seg[GEMM_SMALL_MAX_SEGS];
  for (int i = 0; i < n; i++) seg[i] = (gemm_small_seg8){y[i], &w[i].d};
  rl_err e;
  int rc = gemm_small_fp8_group_cuda(seg, n, xq, xs, rs, ks, M, K, ob, NULL, &e);
  if (rc) printf("  gemm_small_fp8_group_cuda M=%lld: %s\n", (long long)M, e.msg);
  return rc;
}

static void case_group8(const int64_t *Ns, int n, int64_t K, int hopper, uint64_t seed) {
  const int64_t kb = quant_cdiv(K, 128);
  uint16_t *x = x_make(K, seed);
  wop w[GEMM_SMALL_MAX_SEGS];
  for (int i = 0; i < n; i++) {
    uint16_t *wb = tg_rand_bf16(Ns[i], K, seed + 11 + (uint64_t)i);
    w[i] = w_make(wb, Ns[i], K, hopper);
    free(wb);
  }
  char tag[96];
  int at = snprintf(tag, sizeof tag, "N=");
  for (int i = 0; i < n; i++) at += snprintf(tag + at, sizeof tag - (size_t)at, "%s%lld", i ? "+" : "", (long long)Ns[i]);
  snprintf(tag + at, sizeof tag - (size_t)at, " K=%lld %s", (long long)K, hopper ? "hopper" : "rowmajor");
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  uint8_t *qh = rl_xmalloc((size_t)(MMAX * K));
  float *sh = rl_xmalloc((size_t)(MMAX * kb) * 4), *st = rl_xmalloc((size_t)(MMAX * kb) * 4);
  quant_fp8_block_act_cpu(x, MMAX, K, qh, sh, NULL, NULL);
  for (int64_t r = 0; r < MMAX; r++)
    for (int64_t j = 0; j < kb; j++) st[j * MMAX + r] = sh[r * kb + j];
  uint8_t *qd = dev_copy(qh, (size_t)(MMAX * K));
  float *sd = dev_copy(sh, (size_t)(MMAX * kb) * 4), *std_ = dev_copy(st, (size_t)(MMAX * kb) * 4);
  uint16_t *xd = dev_copy(x, (size_t)(MMAX * K) * 2);
  void *yd[GEMM_SMALL_MAX_SEGS], *yb[GEMM_SMALL_MAX_SEGS];
  float *y[GEMM_SMALL_MAX_SEGS] = {0};
  for (int i = 0; i < n; i++) {
    CK(cudaMalloc(&yd[i], (size_t)(MMAX * Ns[i]) * 4));
    CK(cudaMalloc(&yb[i], (size_t)(MMAX * Ns[i]) * 2));
    CK(cudaMemset(yd[i], 0xff, (size_t)(MMAX * Ns[i]) * 4));
  }
  int fails = 0;
  if (g8_run(yd, w, n, qd, sd, kb, 1, MMAX, K, 0)) {
    printf("FAIL   fp8-group %s: the call failed\n", tag);
    g_fail++;
    goto out;
  }
  for (int i = 0; i < n; i++) y[i] = host_copy(yd[i], (size_t)(MMAX * Ns[i]) * 4);
  /* fp64 and cublaslt, every segment */
  {
    int64_t bad = 0, lbad = 0, same_lf = 0, same_mma = 0, tot = 0, nonfin = 0, far = 0;
    double worst = 0, lworst = 0;
    int64_t rows[MMAX];
    for (int r = 0; r < MMAX; r++) rows[r] = r;
    float *ym;
    CK(cudaMalloc((void **)&ym, (size_t)(MMAX * 151936) * 4));
    for (int i = 0; i < n; i++) {
      const int64_t N = Ns[i];
      double *ref = rl_xmalloc((size_t)(MMAX * N) * 8), *mag = rl_xmalloc((size_t)(MMAX * N) * 8);
      ref_rows(qh, sh, rows, MMAX, &w[i], ref, mag);
      float *yl = lf_run(xd, &w[i], MMAX, &p);
      float *yk = NULL;
      if (!run(ym, xd, &w[i], MMAX, &p, NULL)) yk = host_copy(ym, (size_t)(MMAX * N) * 4);
      for (int64_t o = 0; o < MMAX * N; o++) {
        double r = ref[o], a = mag[o], v = y[i][o];
        nonfin += !isfinite(v);
        double ratio = fabs(v - r) / (TOL * a + 0x1p-8 * fabs(r) + 1e-38);
        if (!(ratio <= 1)) bad++;
        if (!(ratio <= worst)) worst = isnan(ratio) ? INFINITY : ratio;
        far += abs(ord((float)v) - ord((float)r)) > 1;
        if (yl) {
          double lr = fabs(v - yl[o]) / (2 * TOL * a + 0x1p-7 * fabs(r) + 1e-38);
          if (!(lr <= 1)) lbad++;
          if (!(lr <= lworst)) lworst = isnan(lr) ? INFINITY : lr;
          same_lf += memcmp(&y[i][o], &yl[o], 4) == 0;
        } else {
          lbad++;
        }
        if (yk) same_mma += memcmp(&y[i][o], &yk[o], 4) == 0;
        tot++;
      }
      free(ref), free(mag), free(yl), free(yk);
    }
    cudaFree(ym);
    int ok = !bad && !nonfin;
    printf("%-6s fp8-group fp64       %s: beyond bound %lld, worst err/bound %.4f, >1 BF16 step from S* %lld, "
           "non-finite %lld\n", ok ? "PASS" : "FAIL", tag, (long long)bad, worst, (long long)far, (long long)nonfin);
    tally(ok);
    fails += !ok;
    printf("%-6s fp8-group cublaslt   %s: vs linear_forward beyond bound %lld (worst %.4f); %.2f%% bitwise equal "
           "(the mma.sync kernel's: %.2f%%)\n", !lbad ? "PASS" : "FAIL", tag, (long long)lbad, lworst,
           100.0 * (double)same_lf / (double)tot, 100.0 * (double)same_mma / (double)tot);
    tally(!lbad);
  }
  /* forms: BF16 output with cuBLASLt's scale layout; each segment alone */
  {
    int64_t diff = 0;
    if (g8_run(yb, w, n, qd, std_, 1, MMAX, MMAX, K, 1)) diff++;
    else
      for (int i = 0; i < n; i++) {
        uint16_t *hb = host_copy(yb[i], (size_t)(MMAX * Ns[i]) * 2);
        for (int64_t o = 0; o < MMAX * Ns[i]; o++) diff += hb[o] != fmt_bf16_from_f32(y[i][o]);
        free(hb);
      }
    if (n > 1) { /* the group in reverse order: the same plan (its rows), each segment's bits */
      void *yr[GEMM_SMALL_MAX_SEGS];
      wop wr[GEMM_SMALL_MAX_SEGS];
      for (int i = 0; i < n; i++) {
        yr[i] = yd[n - 1 - i], wr[i] = w[n - 1 - i];
        CK(cudaMemset(yd[i], 0xff, (size_t)(MMAX * Ns[i]) * 4));
      }
      if (g8_run(yr, wr, n, qd, sd, kb, 1, MMAX, K, 0)) diff++;
      else
        for (int i = 0; i < n; i++) {
          float *ys = host_copy(yd[i], (size_t)(MMAX * Ns[i]) * 4);
          diff += memcmp(ys, y[i], (size_t)(MMAX * Ns[i]) * 4) != 0;
          free(ys);
        }
    }
    printf("%-6s fp8-group forms      %s: BF16 out + scales (1, ld) vs FP32 out + (kb, 1), the group reversed vs "
           "the group: %lld differ\n", diff ? "FAIL" : "PASS", tag, (long long)diff);
    tally(!diff);
    fails += diff != 0;
  }
  /* invariance */
  {
    int64_t diff = 0, checks = 0;
    static const int64_t Ms[] = {7, 33};
    for (int mi = 0; mi < 2; mi++) {
      if (g8_run(yd, w, n, qd, sd, kb, 1, Ms[mi], K, 0)) {
        diff++;
        continue;
      }
      for (int i = 0; i < n; i++) {
        float *h = host_copy(yd[i], (size_t)(Ms[mi] * Ns[i]) * 4);
        diff += memcmp(h, y[i], (size_t)(Ms[mi] * Ns[i]) * 4) != 0, checks++;
        free(h);
      }
    }
    static const int64_t alone[] = {0, 5, 63};
    for (int j = 0; j < 3; j++) {
      if (g8_run(yd, w, n, qd + alone[j] * K, sd + alone[j] * kb, kb, 1, 1, K, 0)) {
        diff++;
        continue;
      }
      for (int i = 0; i < n; i++) {
        float *h = host_copy(yd[i], (size_t)Ns[i] * 4);
        diff += memcmp(h, y[i] + alone[j] * Ns[i], (size_t)Ns[i] * 4) != 0, checks++;
        free(h);
      }
    }
    gemm_small_tune t0 = gemm_small_tune_get();
    static const int knob[][3] = {{32, -1, -1}, {64, -1, -1}, {-1, GEMM_SMALL_REDUCE_GLOBAL, -1},
                                  {-1, GEMM_SMALL_REDUCE_CLUSTER, -1}, {-1, -1, 0}, {-1, -1, 1}};
    for (int k = 0; k < 6; k++) {
      gemm_small_tune t = t0;
      if (knob[k][0] >= 0) t.bn = knob[k][0];
      if (knob[k][1] >= 0) t.reduce = knob[k][1];
      if (knob[k][2] >= 0) t.pdl = knob[k][2];
      gemm_small_tune_set(&t);
      if (g8_run(yd, w, n, qd, sd, kb, 1, MMAX, K, 0)) {
        diff++;
        continue;
      }
      for (int i = 0; i < n; i++) {
        float *h = host_copy(yd[i], (size_t)(MMAX * Ns[i]) * 4);
        diff += memcmp(h, y[i], (size_t)(MMAX * Ns[i]) * 4) != 0, checks++;
        free(h);
      }
    }
    gemm_small_tune_set(NULL);
    { /* M = 130 (three 64-row chunks of x): row r is row r % 64 of x, so its outputs are M = 64's row r % 64 */
      enum { MB3 = 130 };
      uint8_t *q3 = rl_xmalloc((size_t)(MB3 * K));
      float *s3 = rl_xmalloc((size_t)(MB3 * kb) * 4);
      for (int r = 0; r < MB3; r++) {
        memcpy(q3 + (int64_t)r * K, qh + (int64_t)(r % MMAX) * K, (size_t)K);
        memcpy(s3 + (int64_t)r * kb, sh + (int64_t)(r % MMAX) * kb, (size_t)kb * 4);
      }
      uint8_t *q3d = dev_copy(q3, (size_t)(MB3 * K));
      float *s3d = dev_copy(s3, (size_t)(MB3 * kb) * 4);
      void *y3[GEMM_SMALL_MAX_SEGS];
      for (int i = 0; i < n; i++) CK(cudaMalloc(&y3[i], (size_t)(MB3 * Ns[i]) * 4));
      if (g8_run(y3, w, n, q3d, s3d, kb, 1, MB3, K, 0)) diff++;
      else
        for (int i = 0; i < n; i++) {
          float *h = host_copy(y3[i], (size_t)(MB3 * Ns[i]) * 4);
          for (int r = 0; r < MB3; r++) diff += memcmp(h + r * Ns[i], y[i] + (r % MMAX) * Ns[i], (size_t)Ns[i] * 4) != 0;
          checks += MB3;
          free(h);
        }
      for (int i = 0; i < n; i++) cudaFree(y3[i]);
      cudaFree(q3d), cudaFree(s3d);
      free(q3), free(s3);
    }
    int slices;
    int64_t sk, rows = 0;
    for (int i = 0; i < n; i++) rows += (Ns[i] + GEMM_SMALL_BN - 1) / GEMM_SMALL_BN * GEMM_SMALL_BN;
    gemm_small_plan(rows, K, &slices, &sk);
    printf("%-6s fp8-group invariance %s: slices=%d; M=7, 33, rows 0/5/63 alone, 6 knob settings, M=130 (rows "
           "repeated) vs M=64: %lld of %lld segment outputs / rows differ\n", diff ? "FAIL" : "PASS", tag, slices, (long long)diff, (long long)checks);
    tally(!diff);
  }
  /* a NaN scale (row 2, block 0) poisons row 2 only */
  {
    float nan = NAN;
    CK(cudaMemcpy(sd + 2 * kb, &nan, 4, cudaMemcpyHostToDevice));
    int64_t bad = 0;
    if (g8_run(yd, w, n, qd, sd, kb, 1, MMAX, K, 0)) bad++;
    else
      for (int i = 0; i < n; i++) {
        float *h = host_copy(yd[i], (size_t)(MMAX * Ns[i]) * 4);
        for (int64_t r = 0; r < MMAX; r++)
          for (int64_t c = 0; c < Ns[i]; c++) {
            float v = h[r * Ns[i] + c];
            bad += r == 2 ? !isnan(v) : memcmp(&v, &y[i][r * Ns[i] + c], 4) != 0;
          }
        free(h);
      }
    printf("%-6s fp8-group nan-scale  %s: row 2 all NaN, other rows unchanged: %lld elements wrong\n",
           bad ? "FAIL" : "PASS", tag, (long long)bad);
    tally(!bad);
  }
out:
  for (int i = 0; i < n; i++) cudaFree(yd[i]), cudaFree(yb[i]), free(y[i]), w_free(&w[i]);
  cudaFree(qd), cudaFree(sd), cudaFree(std_), cudaFree(xd);
  free(x), free(qh), free(sh), free(st);
  (void)fails;
}

/* Exact arithmetic through the group: y == bf16(S*) bitwise (case_exact's construction). */
static void case_group8_exact(int64_t N, int64_t K, uint64_t seed) {
  const int64_t kb = quant_cdiv(K, 128);
  wop w;
  uint16_t *x = exact_operands(MMAX, N, K, seed, &w);
  uint8_t *qh = rl_xmalloc((size_t)(MMAX * K));
  float *sh = rl_xmalloc((size_t)(MMAX * kb) * 4);
  quant_fp8_block_act_cpu(x, MMAX, K, qh, sh, NULL, NULL);
  int64_t rows[MMAX];
  for (int i = 0; i < MMAX; i++) rows[i] = i;
  double *ref = rl_xmalloc((size_t)(MMAX * N) * 8), *mag = rl_xmalloc((size_t)(MMAX * N) * 8);
  ref_rows(qh, sh, rows, MMAX, &w, ref, mag);
  uint8_t *qd = dev_copy(qh, (size_t)(MMAX * K));
  float *sd = dev_copy(sh, (size_t)(MMAX * kb) * 4);
  void *yd;
  CK(cudaMalloc(&yd, (size_t)(MMAX * N) * 4));
  int64_t ne = -1;
  if (!g8_run(&yd, &w, 1, qd, sd, kb, 1, MMAX, K, 0)) {
    float *y = host_copy(yd, (size_t)(MMAX * N) * 4);
    ne = n_not_bf16_of(y, ref, MMAX * N);
    free(y);
  }
  printf("%-6s fp8-group exact      N=%-6lld K=%-5lld M=64: elements ≠ bf16(S*) %lld\n", ne == 0 ? "PASS" : "FAIL",
         (long long)N, (long long)K, (long long)ne);
  tally(ne == 0);
  cudaFree(yd), cudaFree(qd), cudaFree(sd);
  w_free(&w);
  free(x), free(qh), free(sh), free(ref), free(mag);
}

/* Refusals: K % 16, a BF16 weight, columns ≠ K, M > GEMM_SMALL_MAX_M, unaligned codes: RL_EXIT_USAGE. */
static void case_group8_refuse(void) {
  uint16_t *wb = tg_rand_bf16(64, 1024, 5);
  wop w = w_make(wb, 64, 1024, 1), w2 = w_make(wb, 32, 1024, 1);
  qtensor wbf = w.d;
  wbf.fmt = QFMT_BF16;
  uint8_t *qd;
  float *sd;
  void *yd;
  CK(cudaMalloc((void **)&qd, 300 * 1024 + 16));
  CK(cudaMalloc((void **)&sd, 300 * 8 * 4));
  CK(cudaMalloc(&yd, 300 * 64 * 4));
  gemm_small_seg8 ok = {yd, &w.d}, bf = {yd, &wbf};
  rl_err e;
  int codes[5] = {gemm_small_fp8_group_cuda(&ok, 1, qd, sd, 8, 1, 8, 1008, 0, NULL, &e),
                  gemm_small_fp8_group_cuda(&bf, 1, qd, sd, 8, 1, 8, 1024, 0, NULL, &e),
                  gemm_small_fp8_group_cuda(&ok, 1, qd, sd, 8, 1, GEMM_SMALL_MAX_M + 1, 1024, 0, NULL, &e),
                  gemm_small_fp8_group_cuda(&ok, 1, qd + 8, sd, 8, 1, 8, 1024, 0, NULL, &e),
                  gemm_small_fp8_group_cuda(&ok, 0, qd, sd, 8, 1, 8, 1024, 0, NULL, &e)};
  int good = 1;
  for (int i = 0; i < 5; i++) good &= codes[i] == RL_EXIT_USAGE;
  (void)w2;
  printf("%-6s fp8-group refuse: K %% 16 (cols ≠ K), BF16 weight, M > %d, unaligned codes, 0 segments: exit codes "
         "%d %d %d %d %d\n", good ? "PASS" : "FAIL", GEMM_SMALL_MAX_M, codes[0], codes[1], codes[2], codes[3], codes[4]);
  tally(good);
  cudaFree(qd), cudaFree(sd), cudaFree(yd);
  w_free(&w), w_free(&w2);
  free(wb);
}

/* ---------------------------------------------------------------- gemm_small_fp8_swiglu_cuda
 * The F8 pair with its SwiGLU and the fp8-block quantization of act in the epilogue,
 * against the two launches it replaces (gemm_small_fp8_group_cuda of {gate, up} with
 * BF16 outputs, then ops_swiglu_forward_q8_bx_cuda): act, codes (pad rows included)
 * and scales bitwise, and the codes/scales == quant_fp8_block_act_cpu of the act it
 * wrote. x: MXS random rows (row 2's block-0 scale NaN: its act NaN, its blocks
 * poisoned), at M = 64, 1, 7, 33, 130 (three row chunks), under reduce cluster /
 * global, PDL 0/1 and two CTA targets (new plans: the reference is run again under
 * each), and 3 replays of a captured graph of 2 calls (the block counters reset). */
#define MXS 136
static int sw8_run(uint16_t *act, uint8_t *q, float *qs, int64_t pad, const wop *wg, const wop *wu, const uint8_t *xq,
                   const float *xs, int64_t M, int64_t K, int ue8m0, void *stream) {
  const gemm_small_q8out qo = {q, qs, pad, (int)pad, ue8m0};
  rl_err e;
  int rc = gemm_small_fp8_swiglu_cuda(act, &qo, &wg->d, &wu->d, xq, xs, 1, MXS, M, K, stream, &e);
  if (rc) printf("  gemm_small_fp8_swiglu_cuda M=%lld: %s\n", (long long)M, e.msg);
  return rc;
}

static void case_swiglu8(int64_t I, int64_t K, int hopper, int ue8m0, uint64_t seed) {
  const int64_t kb = quant_cdiv(K, 128), ib = quant_cdiv(I, 128);
  uint16_t *x = tg_rand_bf16(MXS, K, seed);
  uint8_t *qh = rl_xmalloc((size_t)(MXS * K));
  float *sh = rl_xmalloc((size_t)(MXS * kb) * 4), *st = rl_xmalloc((size_t)(MXS * kb) * 4);
  quant_opts qo;
  memset(&qo, 0, sizeof qo);
  qo.ue8m0 = ue8m0;
  quant_fp8_block_act_cpu(x, MXS, K, qh, sh, &qo, NULL);
  sh[2 * kb] = NAN;
  for (int64_t r = 0; r < MXS; r++)
    for (int64_t j = 0; j < kb; j++) st[j * MXS + r] = sh[r * kb + j];
  uint16_t *wb = tg_rand_bf16(I, K, seed + 1), *ub = tg_rand_bf16(I, K, seed + 2);
  wop wg = w_make(wb, I, K, hopper), wu = w_make(ub, I, K, hopper);
  uint8_t *qd = dev_copy(qh, (size_t)(MXS * K));
  float *sd = dev_copy(st, (size_t)(MXS * kb) * 4);
  const size_t ab = (size_t)(MXS * I) * 2, cb = (size_t)(MXS * I), sb = (size_t)(ib * MXS) * 4;
  uint16_t *act, *act_r, *gb, *ubd;
  uint8_t *q, *q_r;
  float *qs, *qs_r;
  CK(cudaMalloc((void **)&act, ab)); CK(cudaMalloc((void **)&act_r, ab));
  CK(cudaMalloc((void **)&gb, ab)); CK(cudaMalloc((void **)&ubd, ab));
  CK(cudaMalloc((void **)&q, cb)); CK(cudaMalloc((void **)&q_r, cb));
  CK(cudaMalloc((void **)&qs, sb)); CK(cudaMalloc((void **)&qs_r, sb));
  char tag[80];
  snprintf(tag, sizeof tag, "I=%lld K=%lld %s%s", (long long)I, (long long)K, hopper ? "hopper" : "rowmajor",
           ue8m0 ? " ue8m0" : "");
  /* fused vs the two launches at M rows (pad = M rounded up to 8) */
  int64_t cpu_diff = 0, runs = 0, diff = 0;
  static const int64_t Ms[] = {64, 1, 7, 33, 130};
  gemm_small_tune t0 = gemm_small_tune_get();
  static const int knob[][3] = {{-1, -1, -1}, {-1, GEMM_SMALL_REDUCE_GLOBAL, -1}, {-1, -1, 0}, {132, -1, 1},
                                {264, -1, -1}};
  for (int k = 0; k < 5; k++) {
    gemm_small_tune t = t0;
    if (knob[k][0] >= 0) t.ctas = knob[k][0];
    if (knob[k][1] >= 0) t.reduce = knob[k][1];
    if (knob[k][2] >= 0) t.pdl = knob[k][2];
    gemm_small_tune_set(&t);
    for (int mi = 0; mi < 5; mi++) {
      const int64_t M = Ms[mi], pad = quant_roundup(M, 8);
      if (k > 0 && mi > 0 && mi < 4) continue; /* the knobs at M = 64 and 130 */
      CK(cudaMemset(act, 0xff, ab)); CK(cudaMemset(q, 0xff, cb)); CK(cudaMemset(qs, 0xff, sb));
      CK(cudaMemset(act_r, 0xee, ab)); CK(cudaMemset(q_r, 0xee, cb)); CK(cudaMemset(qs_r, 0xee, sb));
      void *y2[2] = {gb, ubd};
      wop w2[2] = {wg, wu};
      rl_err e;
      const ops_fp8_act qa = {q_r, qs_r, pad, (int)pad, ue8m0};
      int rr = g8_run(y2, w2, 2, qd, sd, 1, MXS, M, K, 1);
      if (!rr && ops_swiglu_forward_q8_bx_cuda(act_r, gb, ubd, (int)M, (int)I, (int)I, &qa, NULL, &e))
        printf("  ops_swiglu_forward_q8_bx_cuda: %s\n", e.msg), rr = 1;
      if (rr || sw8_run(act, q, qs, pad, &wg, &wu, qd, sd, M, K, ue8m0, NULL)) {
        diff++;
        continue;
      }
      uint16_t *ha = host_copy(act, ab), *hra = host_copy(act_r, ab);
      uint8_t *hq = host_copy(q, cb), *hrq = host_copy(q_r, cb);
      float *hs = host_copy(qs, sb), *hrs = host_copy(qs_r, sb);
      int64_t d = memcmp(ha, hra, (size_t)(M * I) * 2) != 0;
      d += memcmp(hq, hrq, (size_t)(pad * I)) != 0;
      for (int64_t j = 0; j < ib; j++) d += memcmp(hs + j * pad, hrs + j * pad, (size_t)pad * 4) != 0;
      if (k == 0) { /* the quantization itself: the CPU quantizer of the act the kernel wrote */
        uint8_t *cq = rl_xmalloc((size_t)(M * I));
        float *cs = rl_xmalloc((size_t)(M * ib) * 4);
        quant_fp8_block_act_cpu(ha, M, I, cq, cs, &qo, NULL);
        for (int64_t r = 0; r < M; r++) {
          cpu_diff += memcmp(cq + r * I, hq + r * I, (size_t)I) != 0;
          for (int64_t j = 0; j < ib; j++) cpu_diff += memcmp(&cs[r * ib + j], &hs[j * pad + r], 4) != 0;
        }
        for (int64_t j = 0; j < ib && M > 2; j++) cpu_diff += !isnan(hs[j * pad + 2]); /* row 2 poisoned */
        free(cq), free(cs);
      }
      runs++;
      if (d) printf("  M=%lld knob %d: act/codes/scales differ (%lld parts)\n", (long long)M, k, (long long)d);
      diff += d;
      free(ha), free(hra), free(hq), free(hrq), free(hs), free(hrs);
    }
  }
  gemm_small_tune_set(NULL);
  printf("%-6s fp8-swiglu two-launch %s: act, codes and scales vs group + ops_swiglu_forward_q8_bx_cuda, M = 64, 1, "
         "7, 33, 130 and 4 knob settings (%lld runs): %lld differ\n", diff ? "FAIL" : "PASS", tag, (long long)runs,
         (long long)diff);
  tally(!diff);
  printf("%-6s fp8-swiglu quantizer %s: codes and scales vs quant_fp8_block_act_cpu of the act written (row 2 NaN): "
         "%lld rows/blocks differ\n", cpu_diff ? "FAIL" : "PASS", tag, (long long)cpu_diff);
  tally(!cpu_diff);
  { /* a graph of 2 calls (M = 64, then 33) replayed 3 times == the eager M = 33 call */
    cudaStream_t s;
    cudaGraph_t gr;
    cudaGraphExec_t ge;
    int64_t gd = 0;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    int rc = sw8_run(act, q, qs, 64, &wg, &wu, qd, sd, 64, K, ue8m0, s) ||
             sw8_run(act, q, qs, 40, &wg, &wu, qd, sd, 33, K, ue8m0, s);
    CK(cudaStreamEndCapture(s, &gr));
    if (!rc) {
      CK(cudaGraphInstantiate(&ge, gr, 0));
      CK(cudaMemset(act_r, 0, ab)); CK(cudaMemset(q_r, 0, cb)); CK(cudaMemset(qs_r, 0, sb));
      if (sw8_run(act_r, q_r, qs_r, 40, &wg, &wu, qd, sd, 33, K, ue8m0, NULL)) gd++;
      for (int rep = 0; rep < 3 && !gd; rep++) {
        CK(cudaMemset(act, 0xff, ab)); CK(cudaMemset(q, 0xff, cb)); CK(cudaMemset(qs, 0xff, sb));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaStreamSynchronize(s));
        uint16_t *ha = host_copy(act, ab), *hra = host_copy(act_r, ab);
        uint8_t *hq = host_copy(q, cb), *hrq = host_copy(q_r, cb);
        float *hs = host_copy(qs, sb), *hrs = host_copy(qs_r, sb);
        gd += memcmp(ha, hra, (size_t)(33 * I) * 2) != 0;
        gd += memcmp(hq, hrq, (size_t)(40 * I)) != 0;
        for (int64_t j = 0; j < ib; j++) gd += memcmp(hs + j * 40, hrs + j * 40, 40 * 4) != 0;
        free(ha), free(hra), free(hq), free(hrq), free(hs), free(hrs);
      }
      CK(cudaGraphExecDestroy(ge));
    } else {
      gd++;
    }
    CK(cudaGraphDestroy(gr));
    CK(cudaStreamDestroy(s));
    printf("%-6s fp8-swiglu graph     %s: 3 replays of (M = 64, M = 33) vs eager M = 33: %lld differ\n",
           gd ? "FAIL" : "PASS", tag, (long long)gd);
    tally(!gd);
  }
  cudaFree(act), cudaFree(act_r), cudaFree(gb), cudaFree(ubd), cudaFree(q), cudaFree(q_r), cudaFree(qs), cudaFree(qs_r);
  cudaFree(qd), cudaFree(sd);
  w_free(&wg), w_free(&wu);
  free(x), free(qh), free(sh), free(st), free(wb), free(ub);
}

/* Refusals of the pair: N % 16, pad rows beyond M rounded up to 8 or below M, gate ≠ up rows, K = 0, NULL
 * output: RL_EXIT_USAGE. */
static void case_swiglu8_refuse(void) {
  uint16_t *wb = tg_rand_bf16(80, 1024, 7);
  wop w80 = w_make(wb, 80, 1024, 1), w40 = w_make(wb, 40, 1024, 1), w64 = w_make(wb, 64, 1024, 1);
  uint8_t *qd, *q;
  float *sd, *qs;
  uint16_t *act;
  CK(cudaMalloc((void **)&qd, 64 * 1024)); CK(cudaMalloc((void **)&sd, 64 * 8 * 4));
  CK(cudaMalloc((void **)&q, 64 * 80)); CK(cudaMalloc((void **)&qs, 64 * 4));
  CK(cudaMalloc((void **)&act, 64 * 80 * 2));
  rl_err e;
  gemm_small_q8out ok = {q, qs, 8, 8, 0}, big = {q, qs, 16, 16, 0}, small = {q, qs, 8, 4, 0}, nul = {NULL, qs, 8, 8, 0};
  int codes[6] = {gemm_small_fp8_swiglu_cuda(act, &ok, &w40.d, &w40.d, qd, sd, 1, 8, 5, 1024, NULL, &e),
                  gemm_small_fp8_swiglu_cuda(act, &big, &w80.d, &w80.d, qd, sd, 1, 8, 5, 1024, NULL, &e),
                  gemm_small_fp8_swiglu_cuda(act, &small, &w80.d, &w80.d, qd, sd, 1, 8, 5, 1024, NULL, &e),
                  gemm_small_fp8_swiglu_cuda(act, &ok, &w80.d, &w64.d, qd, sd, 1, 8, 5, 1024, NULL, &e),
                  gemm_small_fp8_swiglu_cuda(act, &ok, &w80.d, &w80.d, qd, sd, 1, 8, 5, 1008, NULL, &e),
                  gemm_small_fp8_swiglu_cuda(act, &nul, &w80.d, &w80.d, qd, sd, 1, 8, 5, 1024, NULL, &e)};
  int good = 1;
  for (int i = 0; i < 6; i++) good &= codes[i] == RL_EXIT_USAGE;
  printf("%-6s fp8-swiglu refuse: N %% 16, pad 16 for 5 rows, pad 4 for 5 rows, gate 80 vs up 64 rows, K ≠ cols, "
         "NULL codes: exit codes %d %d %d %d %d %d\n", good ? "PASS" : "FAIL", codes[0], codes[1], codes[2], codes[3],
         codes[4], codes[5]);
  tally(good);
  cudaFree(qd), cudaFree(sd), cudaFree(q), cudaFree(qs), cudaFree(act);
  w_free(&w80), w_free(&w40), w_free(&w64);
  free(wb);
}

int main(int argc, char **argv) {
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    printf("gemm_small_fp8_gpu_test: skipped: %s\n", di.status);
    return 0;
  }
  char tb[128];
  gemm_small_fp8_tune t = gemm_small_fp8_tune_get();
  printf("gemm_small_fp8_gpu_test on %s (sm_%d%d), knobs %s\n", di.gpus[0].name, di.gpus[0].cc_major,
         di.gpus[0].cc_minor, gemm_small_fp8_tune_str(&t, tb, sizeof tb));
  if (di.gpus[0].cc_major < 9) {
    printf("gemm_small_fp8_gpu_test: skipped: the kernel is built for sm_90a/sm_100a\n");
    return 0;
  }
  fp8_util_init();
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  /* Qwen3-0.6B's decode shapes, then N not a multiple of 128 (nor 32), K not a multiple
   * of 128, more than 8 slices (the workspace reduction whatever the knob says) */
  static const int64_t nk[][2] = {{2048, 1024}, {1024, 1024}, {1024, 2048}, {3072, 1024}, {1024, 3072},
                                  {151936, 1024}, {200, 272},  {520, 1008},  {40, 144},    {72, 4096}};
  const int nnk = quick ? 6 : 10;
  for (int i = 0; i < nnk; i++) case_shape(nk[i][0], nk[i][1], 1, 0, 100 + (uint64_t)i);
  case_shape(1024, 1024, 0, 0, 200); /* ROWMAJOR weight scales */
  case_shape(3072, 1024, 1, 1, 201); /* ue8m0 scales */
  case_exact(2048, 1024, 300);
  case_exact(1024, 3072, 301);
  case_exact(200, 272, 302);
  case_nonfinite(1024, 1024);
  case_nonfinite(200, 272);
  for (int pdl = 0; pdl < 2; pdl++) {
    case_graph(64, 1024, 1024, pdl);
    case_graph(5, 200, 272, pdl);
    case_graph(64, 72, 4096, pdl);
  }
  case_refuse();
  if (gemm_small_fp8_group_supported()) {
    static const int64_t qkv[] = {2048, 1024, 1024}, gu[] = {3072, 3072}, dn[] = {1024}, odd[] = {200, 40, 520},
                         lm[] = {151936};
    case_group8(qkv, 3, 1024, 1, 400);
    case_group8(gu, 2, 1024, 1, 401);
    case_group8(dn, 1, 3072, 1, 402);
    case_group8(odd, 3, 272, 0, 403);
    case_group8(dn, 1, 4096, 1, 404); /* 32 stages: more slices */
    if (!quick) case_group8(lm, 1, 1024, 1, 405);
    case_group8_exact(2048, 1024, 410);
    case_group8_exact(200, 272, 411);
    case_group8_refuse();
    case_swiglu8(3072, 1024, 1, 0, 420); /* Qwen3-0.6B's gate/up */
    case_swiglu8(768, 2048, 1, 0, 421);  /* a Qwen3-30B-A3B expert's */
    case_swiglu8(80, 272, 0, 0, 422);    /* a partial block of 3 tiles, the last one partial */
    case_swiglu8(400, 144, 1, 1, 423);   /* a 16-wide last block, ue8m0 scales */
    case_swiglu8(80, 4096, 1, 0, 424);   /* 32 stages: more slices than a cluster */
    case_swiglu8_refuse();
  } else {
    printf("fp8-group: skipped: gemm_small_fp8_group_supported() = 0 (not an sm_90 GPU)\n");
  }
  printf("gemm_small_fp8_gpu_test: %d passed, %d failed\n", g_pass, g_fail);
  gemm_small_fp8_release();
  gemm_small_release();
  linear_release();
  return g_fail ? 1 : 0;
}
#else
int main(void) {
  printf("gemm_small_fp8_gpu_test: skipped: built without CUDA\n");
  return 0;
}
#endif
