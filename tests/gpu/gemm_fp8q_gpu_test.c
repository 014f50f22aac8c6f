/* gemm_fp8q_gpu_test.c — gemm_fp8q_cuda (the fp8-block GEMM that quantizes its BF16
 * activation inside, kernels/gemm_fp8q_cuda.cu) on the GPU machine (own main; built
 * by `make gpu-tests`). One PASS/FAIL line per case, a final "N passed, M failed"
 * line; exit 1 on any failure. Usage: gemm_fp8q_gpu_test [--quick].
 *
 * What is asserted, per (M, N, K) with random x rows scaled 2^-4 … 2^4 plus a zero
 * block, a block of tiny values (scale < 2^-90: the quantizer's __fdiv_rn path) and
 * a block of huge values (scale ~2^104), and a weight from the project's quantizer:
 *   fp64      |y − S*| ≤ 2^-10·A + 2^-8·|S*| for the checked rows (all rows where the
 *             FP64 reference is cheap, else 64 sampled, the last one included), S* =
 *             Σ_k x̂_k·ŵ_k in FP64 over the dequantized operands (the CPU quantizer's
 *             bytes of x — which the kernel must reproduce — and the weight's) and
 *             A = Σ_k |x̂_k·ŵ_k|: the bound gemm_small_fp8_gpu_test derives for the FP8
 *             tensor cores' in-block accumulation (2^-11·A) with 2× margin, plus the
 *             BF16 rounding of y (2^-8). A wrong code, scale, block or K permutation
 *             gives errors of order A. Every output finite.
 *   cublaslt  against linear_forward with the fused path off (quant_fp8_block_act_cuda
 *             + cuBLASLt on the same x, w): |y − y_lf| ≤ 2^-9·A + 2^-7·|S*| on the
 *             checked rows; the share of bitwise-equal outputs over all rows is printed.
 *   switch    linear_forward with linear_fp8q(1) == gemm_fp8q_cuda bitwise, its info
 *             path GEMM_PATH_FP8_BLOCK_FUSED; pinned (pin_algo) it stays on cuBLASLt.
 *   rows      rows 0, 5 and M−1 alone (M = 1) and the first 7 rows (M = 7) == the
 *             same rows of the whole run, bitwise (no K split: a row's bits do not
 *             depend on M or its neighbours).
 *   cluster   the run with each other cluster size (gemm_fp8q_cluster 1, 2, 4: CTAs
 *             sharing the quantization of a row block; the run above: the automatic
 *             size unless RLRUN_FP8Q_CLUSTER fixes one) == the run above, bitwise.
 * Exact case: x and w built so that every quantity is exact (x blocks hold ±448·2^i and
 * integers·2^i with |integer| ≤ 4, weight codes integers in [-4, 4], power-of-two
 * scales): y == bf16_rne(S*) bitwise, and == linear_forward bitwise.
 * Non-finite: a row with +Inf and a row with NaN give all-NaN rows (as linear_forward's);
 * the other rows == the finite run's, bitwise. Graph: 2 captured calls replayed twice
 * == eager, bitwise. Refusals: K % 16, a BF16 or host weight, misaligned x. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "tests/test_gemm_util.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#include "tests/gpu/fp8_gpu_util.h"

static int g_fail, g_pass;
#define TOL 0x1p-10 /* × A, see the top */

static void tally(int ok) { ok ? g_pass++ : g_fail++; }

/* ---------------------------------------------------------------- operands */

/* Random x [M][K] with the special blocks of the top (where M and K allow). */
static uint16_t *x_make(int64_t M, int64_t K, uint64_t seed) {
  uint16_t *x = tg_rand_bf16(M, K, seed);
  int64_t kb = quant_cdiv(K, 128);
  if (M > 3)
    for (int64_t k = 0; k < K && k < 128; k++) x[3 * K + k] = 0;
  if (M > 5)
    for (int64_t k = 128 * (kb - 1); k < K; k++) x[5 * K + k] = fmt_bf16_from_f32(1e-30f * (float)((k % 7) - 3));
  if (M > 6)
    for (int64_t k = 0; k < K && k < 128; k++) x[6 * K + k] = fmt_bf16_from_f32(1e34f * (float)((k % 5) - 2) / 2.0f);
  return x;
}


/* ---------------------------------------------------------------- calls */

static int run(uint16_t *y, const uint16_t *x, const wop *w, int64_t M, const quant_policy *p, void *s) {
  rl_err e;
  int rc = gemm_fp8q_cuda(y, x, &w->d, M, p, s, &e);
  if (rc) printf("  gemm_fp8q_cuda M=%lld: %s\n", (long long)M, e.msg);
  return rc;
}

/* y [M][N] BF16 on the device → FP32 on the host. */
static float *y_host(const uint16_t *yd, int64_t n) {
  uint16_t *h = host_copy(yd, (size_t)n * 2);
  float *f = tg_bf16_to_f32(h, n);
  free(h);
  return f;
}

/* linear_forward on M rows with the fused path `fused` (0/1), as FP32 (host); info out. NULL on error. */
static float *lf_run(const uint16_t *xd, const wop *w, int64_t M, const quant_policy *p, int fused, gemm_info *gi) {
  uint16_t *yb;
  CK(cudaMalloc((void **)&yb, (size_t)(M * w->N) * 2));
  rl_err e;
  float *out = NULL;
  gemm_info scratch;
  linear_opts o = {NULL, gi ? gi : &scratch};
  int was = linear_fp8q(-1);
  linear_fp8q(fused);
  if (linear_forward_ex(yb, xd, M, &w->d, p, &o, &e)) printf("  linear_forward: %s\n", e.msg);
  else out = y_host(yb, M * w->N);
  linear_fp8q(was);
  cudaFree(yb);
  return out;
}

/* ---------------------------------------------------------------- cases */

static void case_shape(int64_t M, int64_t N, int64_t K, int hopper, int ue8m0, uint64_t seed) {
  const int64_t kb = quant_cdiv(K, 128);
  uint16_t *x = x_make(M, K, seed), *wb = tg_rand_bf16(N, K, seed + 1);
  wop w = w_make(wb, N, K, hopper);
  free(wb);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  p.ue8m0 = ue8m0;
  char tag[96];
  snprintf(tag, sizeof tag, "M=%-5lld N=%-6lld K=%-5lld %s%s", (long long)M, (long long)N, (long long)K,
           hopper ? "hopper" : "rowmajor", ue8m0 ? " ue8m0" : "");
  uint16_t *xd = dev_copy(x, (size_t)(M * K) * 2), *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(M * N) * 2));
  CK(cudaMemset(yd, 0xff, (size_t)(M * N) * 2)); /* NaN: a missed element shows */
  if (run(yd, xd, &w, M, &p, NULL)) {
    printf("FAIL   fp8q %s: the call failed\n", tag);
    g_fail++;
    goto out;
  }
  {
    float *y = y_host(yd, M * N);
    quant_opts qo = {0};
    qo.ue8m0 = ue8m0;
    uint8_t *qh = rl_xmalloc((size_t)(M * K));
    float *sh = rl_xmalloc((size_t)(M * kb) * 4);
    quant_fp8_block_act_cpu(x, M, K, qh, sh, &qo, NULL);
    int64_t rows[64];
    int nr = 0;
    if ((double)M * N * K <= 1.5e9 && M <= 64)
      for (int64_t i = 0; i < M; i++) rows[nr++] = i;
    else {
      uint64_t s = seed * 77 + 1;
      rows[nr++] = 0, rows[nr++] = M - 1;
      for (int64_t i = 3; i < 7 && i < M; i++) rows[nr++] = i;
      while (nr < 64) rows[nr++] = (int64_t)(tg_next(&s) % (uint64_t)M);
    }
    double *ref = rl_xmalloc((size_t)nr * (size_t)N * 8), *mag = rl_xmalloc((size_t)nr * (size_t)N * 8);
    ref_rows(qh, sh, rows, nr, &w, ref, mag);
    double worst = 0;
    int64_t bad = 0, far = 0, nonfin = 0;
    for (int64_t i = 0; i < M * N; i++) nonfin += !isfinite(y[i]);
    for (int i = 0; i < nr; i++)
      for (int64_t n = 0; n < N; n++) {
        double r = ref[(int64_t)i * N + n], a = mag[(int64_t)i * N + n], v = y[rows[i] * N + n];
        double ratio = fabs(v - r) / (TOL * a + 0x1p-8 * fabs(r) + 1e-38);
        if (!(ratio <= 1)) bad++;
        if (!(ratio <= worst)) worst = isnan(ratio) ? INFINITY : ratio;
        far += abs(ord((float)v) - ord((float)r)) > 1;
      }
    int ok = !bad && !nonfin;
    printf("%-6s fp8q fp64       %s: %d rows × N checked, beyond bound %lld, worst err/bound %.4f, "
           ">1 BF16 step from S* %lld, non-finite outputs %lld\n",
           ok ? "PASS" : "FAIL", tag, nr, (long long)bad, worst, (long long)far, (long long)nonfin);
    tally(ok);
    /* cublaslt */
    float *yl = lf_run(xd, &w, M, &p, 0, NULL);
    if (!yl) {
      printf("FAIL   fp8q cublaslt   %s: linear_forward failed\n", tag);
      g_fail++;
    } else {
      int64_t lbad = 0, same = 0, lfar = 0;
      double lworst = 0;
      for (int i = 0; i < nr; i++)
        for (int64_t n = 0; n < N; n++) {
          int64_t o = rows[i] * N + n;
          double r = ref[(int64_t)i * N + n], a = mag[(int64_t)i * N + n];
          double ratio = fabs((double)y[o] - yl[o]) / (2 * TOL * a + 0x1p-7 * fabs(r) + 1e-38);
          if (!(ratio <= 1)) lbad++;
          if (!(ratio <= lworst)) lworst = isnan(ratio) ? INFINITY : ratio;
        }
      for (int64_t i = 0; i < M * N; i++) same += memcmp(&y[i], &yl[i], 4) == 0, lfar += abs(ord(y[i]) - ord(yl[i])) > 1;
      ok = !lbad;
      printf("%-6s fp8q cublaslt   %s: vs linear_forward beyond bound %lld (worst %.4f); all rows: %.2f%% "
             "bitwise equal, %lld elements >1 BF16 step apart\n",
             ok ? "PASS" : "FAIL", tag, (long long)lbad, lworst, 100.0 * (double)same / (double)(M * N),
             (long long)lfar);
      tally(ok);
      free(yl);
    }
    /* switch: linear_forward with the fused path on == this kernel; pinned stays on cuBLASLt */
    {
      gemm_info gi, gp;
      float *ys = lf_run(xd, &w, M, &p, 1, &gi);
      quant_policy pp = p;
      pp.pin_algo = 1;
      float *yp = lf_run(xd, &w, M, &pp, 1, &gp);
      const int64_t diff = ys ? n_bits_differ(ys, y, M * N) : -1;
      ok = diff == 0 && gi.path == GEMM_PATH_FP8_BLOCK_FUSED && yp && gp.path == GEMM_PATH_FP8_BLOCK;
      printf("%-6s fp8q switch     %s: linear_forward fused vs kernel: %lld differ, path %s; pinned: path %s\n",
             ok ? "PASS" : "FAIL", tag, (long long)diff, gemm_path_name(gi.path), gemm_path_name(gp.path));
      tally(ok);
      free(ys), free(yp);
    }
    /* rows: alone and in a smaller batch == the whole run's */
    {
      int64_t diff = 0, checks = 0;
      const int64_t alone[] = {0, M > 5 ? 5 : 0, M - 1};
      for (int i = 0; i < 3; i++) {
        CK(cudaMemset(yd, 0xff, (size_t)N * 2));
        if (run(yd, xd + alone[i] * K, &w, 1, &p, NULL)) {
          diff++;
          continue;
        }
        float *y1 = y_host(yd, N);
        diff += memcmp(y1, y + alone[i] * N, (size_t)N * 4) != 0, checks++;
        free(y1);
      }
      if (M > 7) {
        CK(cudaMemset(yd, 0xff, (size_t)(7 * N) * 2));
        if (run(yd, xd, &w, 7, &p, NULL)) diff++;
        else {
          float *y7 = y_host(yd, 7 * N);
          for (int64_t r = 0; r < 7; r++) diff += memcmp(y7 + r * N, y + r * N, (size_t)N * 4) != 0, checks++;
          free(y7);
        }
      }
      printf("%-6s fp8q rows       %s: rows alone (0, 5, M-1) and the first 7 as M=7 vs the whole run: %lld of "
             "%lld rows differ\n",
             diff ? "FAIL" : "PASS", tag, (long long)diff, (long long)checks);
      tally(!diff);
    }
    /* the other cluster sizes (RLRUN_FP8Q_CLUSTER 1, 2, 4: how many CTAs share the
     * quantization of a row block) against the size the run above used: the same bits */
    {
      const int cl = gemm_fp8q_cluster(-1);
      int64_t diff = 0;
      for (int o = 1; o <= 4 && diff >= 0; o *= 2) {
        if (o == cl) continue;
        gemm_fp8q_cluster(o);
        CK(cudaMemset(yd, 0xff, (size_t)(M * N) * 2));
        if (run(yd, xd, &w, M, &p, NULL)) diff = -1;
        else {
          float *y1 = y_host(yd, M * N);
          diff += n_bits_differ(y1, y, M * N);
          free(y1);
        }
      }
      gemm_fp8q_cluster(cl);
      printf("%-6s fp8q cluster    %s: the sizes 1, 2, 4 vs the run's (%d; 0: automatic): %lld outputs differ\n",
             diff ? "FAIL" : "PASS", tag, cl, (long long)diff);
      tally(!diff);
    }
    free(y), free(qh), free(sh), free(ref), free(mag);
  }
out:
  cudaFree(xd), cudaFree(yd);
  w_free(&w);
  free(x);
}

/* Exact arithmetic: y == bf16(S*) and == linear_forward, bitwise. */
static void case_exact(int64_t M, int64_t N, int64_t K, uint64_t seed) {
  const int64_t kb = quant_cdiv(K, 128);
  wop w;
  uint16_t *x = exact_operands(M, N, K, seed, &w);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  uint8_t *qh = rl_xmalloc((size_t)(M * K));
  float *sh = rl_xmalloc((size_t)(M * kb) * 4);
  quant_fp8_block_act_cpu(x, M, K, qh, sh, NULL, NULL);
  int64_t *rows = rl_xmalloc((size_t)M * 8);
  for (int64_t i = 0; i < M; i++) rows[i] = i;
  double *ref = rl_xmalloc((size_t)(M * N) * 8), *mag = rl_xmalloc((size_t)(M * N) * 8);
  ref_rows(qh, sh, rows, (int)M, &w, ref, mag);
  int64_t inexact = 0;
  for (int64_t i = 0; i < M * N; i++) inexact += (double)(float)ref[i] != ref[i];
  uint16_t *xd = dev_copy(x, (size_t)(M * K) * 2), *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(M * N) * 2));
  CK(cudaMemset(yd, 0xff, (size_t)(M * N) * 2));
  int64_t ne = -1, nl = -1;
  if (!run(yd, xd, &w, M, &p, NULL)) {
    float *y = y_host(yd, M * N), *yl = lf_run(xd, &w, M, &p, 0, NULL);
    ne = n_not_bf16_of(y, ref, M * N);
    if (yl) nl = n_bits_differ(y, yl, M * N);
    free(y), free(yl);
  }
  int ok = inexact == 0 && ne == 0 && nl == 0;
  printf("%-6s fp8q exact      M=%-5lld N=%-6lld K=%-5lld: elements ≠ bf16(S*) %lld, ≠ linear_forward %lld "
         "(S* not an FP32 value: %lld)\n",
         ok ? "PASS" : "FAIL", (long long)M, (long long)N, (long long)K, (long long)ne, (long long)nl,
         (long long)inexact);
  tally(ok);
  cudaFree(xd), cudaFree(yd);
  w_free(&w);
  free(x), free(qh), free(sh), free(ref), free(mag), free(rows);
}

/* Rows 2 (+Inf) and 4 (NaN) all NaN, as linear_forward's; other rows == the finite run's. */
static void case_nonfinite(int64_t M, int64_t N, int64_t K) {
  uint16_t *x = x_make(M, K, 500), *wb = tg_rand_bf16(N, K, 501);
  wop w = w_make(wb, N, K, 1);
  free(wb);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  uint16_t *xd = dev_copy(x, (size_t)(M * K) * 2), *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(M * N) * 2));
  int ok = !run(yd, xd, &w, M, &p, NULL);
  float *y0 = ok ? y_host(yd, M * N) : NULL;
  x[2 * K + K / 2] = 0x7f80; /* +Inf */
  x[4 * K + 1] = 0x7fc1;     /* NaN */
  CK(cudaMemcpy(xd, x, (size_t)(M * K) * 2, cudaMemcpyHostToDevice));
  int64_t notnan = -1, changed = -1, lf_notnan = -1;
  if (ok && !run(yd, xd, &w, M, &p, NULL)) {
    float *y = y_host(yd, M * N), *yl = lf_run(xd, &w, M, &p, 0, NULL);
    notnan = changed = 0;
    for (int64_t r = 0; r < M; r++)
      for (int64_t n = 0; n < N; n++) {
        if (r == 2 || r == 4) notnan += !isnan(y[r * N + n]);
        else changed += memcmp(&y[r * N + n], &y0[r * N + n], 4) != 0;
      }
    if (yl) {
      lf_notnan = 0;
      for (int64_t n = 0; n < N; n++) lf_notnan += !isnan(yl[2 * N + n]) + !isnan(yl[4 * N + n]);
    }
    free(y), free(yl);
  }
  ok = ok && notnan == 0 && changed == 0 && lf_notnan == 0;
  printf("%-6s fp8q nonfinite  M=%-5lld N=%-6lld K=%-5lld: poisoned rows not NaN %lld (linear_forward %lld), other "
         "rows changed %lld\n",
         ok ? "PASS" : "FAIL", (long long)M, (long long)N, (long long)K, (long long)notnan, (long long)lf_notnan,
         (long long)changed);
  tally(ok);
  free(y0), free(x);
  cudaFree(xd), cudaFree(yd);
  w_free(&w);
}

/* Two calls captured in a graph, replayed twice == eager, bitwise. */
static void case_graph(int64_t M, int64_t N, int64_t K) {
  uint16_t *x = x_make(M, K, 600), *wb = tg_rand_bf16(N, K, 601);
  wop w = w_make(wb, N, K, 1);
  free(wb);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  uint16_t *xd = dev_copy(x, (size_t)(M * K) * 2), *ya, *yb;
  CK(cudaMalloc((void **)&ya, (size_t)(M * N) * 2));
  CK(cudaMalloc((void **)&yb, (size_t)(M * N) * 2));
  int ok = !run(ya, xd, &w, M, &p, NULL);
  float *ye = ok ? y_host(ya, M * N) : NULL;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t g = NULL;
  cudaGraphExec_t ge = NULL;
  int64_t diff = -1;
  if (ok) {
    CK(cudaMemset(ya, 0xff, (size_t)(M * N) * 2));
    CK(cudaMemset(yb, 0xff, (size_t)(M * N) * 2));
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    int rc = run(ya, xd, &w, M, &p, s) || run(yb, xd, &w, M, &p, s);
    CK(cudaStreamEndCapture(s, &g));
    if (!rc) {
      CK(cudaGraphInstantiate(&ge, g, 0));
      for (int r = 0; r < 2; r++) CK(cudaGraphLaunch(ge, s));
      CK(cudaStreamSynchronize(s));
      float *y1 = y_host(ya, M * N), *y2 = y_host(yb, M * N);
      diff = 0;
      for (int64_t i = 0; i < M * N; i++) diff += memcmp(&y1[i], &ye[i], 4) != 0 || memcmp(&y2[i], &ye[i], 4) != 0;
      free(y1), free(y2);
    }
  }
  ok = ok && diff == 0;
  printf("%-6s fp8q graph      M=%-5lld N=%-6lld K=%-5lld: replayed vs eager: %lld elements differ\n",
         ok ? "PASS" : "FAIL", (long long)M, (long long)N, (long long)K, (long long)diff);
  tally(ok);
  if (ge) cudaGraphExecDestroy(ge);
  if (g) cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  free(ye), free(x);
  cudaFree(xd), cudaFree(ya), cudaFree(yb);
  w_free(&w);
}

static void case_refuse(void) {
  uint16_t *wb = tg_rand_bf16(256, 256, 700);
  wop w = w_make(wb, 256, 256, 1);
  quant_policy p;
  quant_policy_init(&p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  uint16_t *xd, *yd;
  CK(cudaMalloc((void **)&xd, 256 * 256 * 2 + 64));
  CK(cudaMalloc((void **)&yd, 256 * 256 * 2));
  rl_err e;
  int bad = 0;
  qtensor wk = w.d; /* K % 16 */
  wk.cols = 248;
  bad += gemm_fp8q_cuda(yd, xd, &wk, 8, &p, NULL, &e) != RL_EXIT_USAGE || !strstr(e.msg, "multiple of 16");
  qtensor wbf = qtensor_bf16(xd, 256, 256, 1); /* a BF16 weight */
  bad += gemm_fp8q_cuda(yd, xd, &wbf, 8, &p, NULL, &e) != RL_EXIT_USAGE || !strstr(e.msg, "fp8-block");
  qtensor wh = w.d; /* a host weight */
  wh.on_device = 0;
  bad += gemm_fp8q_cuda(yd, xd, &wh, 8, &p, NULL, &e) != RL_EXIT_USAGE || !strstr(e.msg, "host memory");
  bad += gemm_fp8q_cuda(yd, xd + 1, &w.d, 8, &p, NULL, &e) != RL_EXIT_USAGE || !strstr(e.msg, "aligned");
  bad += gemm_fp8q_cuda(yd, xd, &w.d, 0, &p, NULL, &e) != 0; /* M = 0: nothing to do */
  printf("%-6s fp8q refuse     K%%16, BF16 weight, host weight, misaligned x refused with RL_EXIT_USAGE; M=0 is a "
         "no-op: %d wrong\n",
         bad ? "FAIL" : "PASS", bad);
  tally(!bad);
  cudaFree(xd), cudaFree(yd);
  w_free(&w);
  free(wb);
}

int main(int argc, char **argv) {
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    printf("gemm_fp8q_gpu_test: skipped: %s\n", di.status);
    return 0;
  }
  printf("gemm_fp8q_gpu_test on %s (sm_%d%d)\n", di.gpus[0].name, di.gpus[0].cc_major, di.gpus[0].cc_minor);
  if (!gemm_fp8q_supported()) {
    printf("gemm_fp8q_gpu_test: skipped: gemm_fp8q_supported() = 0 (not an sm_90 GPU)\n");
    return 0;
  }
  fp8_util_init();
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  /* Qwen3-0.6B and 30B-A3B-expert shapes at M 64 … 8192, then tails in every dimension */
  static const int64_t mnk[][3] = {{512, 3072, 1024}, {512, 1024, 3072}, {64, 2048, 1024}, {512, 768, 2048},
                                   {129, 2048, 768},  {1, 1024, 1024},   {3, 200, 272},    {130, 520, 1008},
                                   {8, 40, 144},      {300, 1000, 512},  {8192, 1024, 2048}, {8192, 3072, 1024}};
  const int n = quick ? 10 : 12;
  for (int i = 0; i < n; i++) case_shape(mnk[i][0], mnk[i][1], mnk[i][2], 1, 0, 100 + (uint64_t)i);
  case_shape(256, 1024, 1024, 0, 0, 200); /* ROWMAJOR weight scales */
  case_shape(256, 3072, 1024, 1, 1, 201); /* ue8m0 scales */
  case_exact(64, 2048, 1024, 300);
  case_exact(130, 200, 272, 301);
  case_nonfinite(64, 1024, 1024);
  case_nonfinite(9, 200, 272);
  case_graph(512, 1024, 1024);
  case_refuse();
  printf("gemm_fp8q_gpu_test: %d passed, %d failed\n", g_pass, g_fail);
  linear_release();
  return g_fail ? 1 : 0;
}
#else
int main(void) {
  printf("gemm_fp8q_gpu_test: skipped: built without CUDA\n");
  return 0;
}
#endif
