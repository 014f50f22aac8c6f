/* gemm_gpu_test.c — the CUDA GEMMs and linear layers against the CPU
 * reference and FP64, on the GPU machine (own main; built by `make gpu-tests`,
 * run by tests/gpu/run.sh). Prints one line per case and a summary; exit 1 on
 * any failure. Past 800 lines on purpose: the small-M GEMM's cases (plain,
 * grouped, SwiGLU pair) sit here so that run.sh's one gemm_gpu_test run covers
 * them; split them into their own program when run.sh learns to run it.
 *
 * Tolerances. With S* = Σ x̂·ŵ in FP64 over the dequantized operands (the same
 * bytes on both sides) and A = Σ|x̂·ŵ|:
 *   CPU reference   |y_cpu − S*| ≤ (K+2)·u·A            (test_gemm.c)
 *   cuBLASLt BF16/FP32/emulated: FP32 accumulation in another order, same bound,
 *                   so |y_gpu − S*| ≤ 2(K+2)·u·A is asked.
 *   fp8-block native on Hopper: the FP8 tensor-core MMA accumulates with fewer
 *                   bits than FP32 inside each K block (DeepSeek-V3 reports ~14
 *                   bits on H800); cuBLASLt promotes to FP32 at every 128-wide
 *                   scale block (4 MMA k-steps of 32, each truncating to ~14 bits:
 *                   ≤ ~4·2^-13 of the block's Σ|x̂ŵ|), so |y_gpu − S*| ≤ 2^-10·A is
 *                   asked (still 64× below the fp8 quantization error 2^-4); the run
 *                   prints the measured worst ratio so the bound can be tightened.
 * plus the output rounding r·|S*| (r = 2^-8 for BF16 outputs, 2^-24 for FP32).
 * Usage: gemm_gpu_test [--quick] (fewer shapes). */
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

#define U24 0x1p-24

static int g_fail, g_pass;

#define CK(x)                                                                                \
  do {                                                                                       \
    cudaError_t st_ = (x);                                                                   \
    if (st_ != cudaSuccess) {                                                                \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(st_));  \
      exit(2);                                                                               \
    }                                                                                        \
  } while (0)

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

/* Bytes of one row of data / scales of an activation-like operand (block_rows = 1). */
static size_t row_bytes(qformat f, int64_t K) {
  return f == QFMT_BF16 ? (size_t)K * 2 : f == QFMT_NVFP4 ? (size_t)quant_cdiv(K, 2) : (size_t)K;
}
static size_t row_scale_bytes(qformat f, int64_t K) {
  switch (f) {
    case QFMT_FP8_BLOCK: return (size_t)quant_cdiv(K, 128) * 4;
    case QFMT_MXFP8: return (size_t)quant_cdiv(K, 32);
    case QFMT_NVFP4: return (size_t)quant_cdiv(K, 16);
    default: return 0;
  }
}

/* A host operand quantized by the CPU quantizers (ROWMAJOR scales) and its
 * device twin. */
typedef struct op {
  qtensor h, d;
  float *deq; /* dequantized values (NVFP4: including S_dec) */
} op;

static op op_make(const uint16_t *x, int64_t rows, int64_t K, qformat f, int is_weight) {
  op o;
  memset(&o, 0, sizeof o);
  o.h = qtensor_bf16(x, rows, K, 0);
  o.h.fmt = f;
  size_t db = row_bytes(f, K) * (size_t)rows, sb = 0;
  o.deq = rl_xmalloc((size_t)(rows * K) * 4 + 4);
  if (f == QFMT_BF16) {
    for (int64_t i = 0; i < rows * K; i++) o.deq[i] = fmt_bf16_to_f32(x[i]);
  } else {
    o.h.data = rl_xmalloc(db + 1);
    if (f == QFMT_FP8_BLOCK) {
      o.h.block_rows = is_weight ? 128 : 1;
      sb = (size_t)((is_weight ? quant_cdiv(rows, 128) : rows) * quant_cdiv(K, 128)) * 4;
      o.h.scales = rl_xmalloc(sb + 4);
      if (is_weight) {
        quant_fp8_block_weight_cpu(x, rows, K, o.h.data, o.h.scales, NULL, NULL);
        dequant_fp8_block_weight_cpu(o.h.data, o.h.scales, rows, K, o.deq, NULL);
      } else {
        quant_fp8_block_act_cpu(x, rows, K, o.h.data, o.h.scales, NULL, NULL);
        dequant_fp8_block_act_cpu(o.h.data, o.h.scales, rows, K, o.deq, NULL);
      }
    } else if (f == QFMT_MXFP8) {
      sb = row_scale_bytes(f, K) * (size_t)rows;
      o.h.scales = rl_xmalloc(sb + 1);
      quant_mxfp8_cpu(x, rows, K, o.h.data, o.h.scales, NULL, NULL);
      dequant_mxfp8_cpu(o.h.data, o.h.scales, rows, K, o.deq, NULL);
    } else {
      sb = row_scale_bytes(f, K) * (size_t)rows;
      o.h.scales = rl_xmalloc(sb + 1);
      quant_nvfp4_cpu(x, rows, K, o.h.data, o.h.scales, &o.h.s_dec, NULL, NULL);
      dequant_nvfp4_cpu(o.h.data, o.h.scales, o.h.s_dec, rows, K, o.deq, NULL);
    }
  }
  o.d = o.h;
  o.d.on_device = 1;
  o.d.data = dev_copy(o.h.data, db);
  o.d.scales = sb ? dev_copy(o.h.scales, sb) : NULL;
  if (f == QFMT_NVFP4) o.d.d_s_dec = dev_copy(&o.h.s_dec, 4);
  return o;
}

static void op_free(op *o) {
  if (o->h.fmt != QFMT_BF16) free(o->h.data), free(o->h.scales);
  cudaFree(o->d.data);
  if (o->d.scales) cudaFree(o->d.scales);
  if (o->d.d_s_dec) cudaFree((void *)o->d.d_s_dec);
  free(o->deq);
}

/* The rows of an activation operand checked against the CPU: all when M ≤ 512,
 * else 48 (first, middle, last 16). */
static int pick_rows(int64_t M, int64_t *rows) {
  if (M <= 512) {
    for (int64_t i = 0; i < M; i++) rows[i] = i;
    return (int)M;
  }
  int n = 0;
  for (int i = 0; i < 16; i++) rows[n++] = i, rows[n++] = M / 2 + i, rows[n++] = M - 16 + i;
  return n;
}

/* Host qtensor of the selected rows of activation a (ROWMAJOR). */
static qtensor op_rows(const qtensor *a, const int64_t *rows, int nr, void **buf_d, void **buf_s) {
  qtensor t = *a;
  size_t rb = row_bytes(a->fmt, a->cols), sb = row_scale_bytes(a->fmt, a->cols);
  *buf_d = rl_xmalloc(rb * (size_t)nr + 1);
  *buf_s = rl_xmalloc(sb * (size_t)nr + 1);
  for (int i = 0; i < nr; i++) {
    memcpy((char *)*buf_d + rb * (size_t)i, (const char *)a->data + rb * (size_t)rows[i], rb);
    if (sb) memcpy((char *)*buf_s + sb * (size_t)i, (const char *)a->scales + sb * (size_t)rows[i], sb);
  }
  t.rows = nr;
  t.data = *buf_d;
  t.scales = sb ? *buf_s : NULL;
  return t;
}

/* Worst ratios of |y_gpu − S*| / (tol·A + r|S*|) and |y_gpu − y_cpu| / ((tol + (K+2)u)·A + 2r|S*|)
 * over the selected rows; yg is the full GPU output [M][N], yc [nr][N]. */
typedef struct ratios { double gpu, diff; } ratios;
static ratios compare(const float *yg, const float *yc, const int64_t *rows, int nr, int64_t N,
                      int64_t K, const float *xd, const float *wd, double tol, double r) {
  double *m1 = rl_xcalloc((size_t)nr + 1, 8), *m2 = rl_xcalloc((size_t)nr + 1, 8);
#pragma omp parallel for schedule(dynamic)
  for (int i = 0; i < nr; i++)
    for (int64_t j = 0; j < N; j++) {
      const float *a = xd + rows[i] * K, *b = wd + j * K;
      double s = 0, mag = 0;
      for (int64_t k = 0; k < K; k++) s += (double)a[k] * b[k], mag += fabs((double)a[k] * b[k]);
      double g = yg[rows[i] * N + j], c = yc[(int64_t)i * N + j];
      double r1 = fabs(g - s) / (tol * mag + r * fabs(s) + 1e-30);
      double r2 = fabs(g - c) / ((tol + (K + 2) * U24) * mag + 2 * r * fabs(s) + 1e-30);
      if (!(r1 <= m1[i])) m1[i] = isnan(r1) ? INFINITY : r1;
      if (!(r2 <= m2[i])) m2[i] = isnan(r2) ? INFINITY : r2;
    }
  ratios out = {0, 0};
  for (int i = 0; i < nr; i++) {
    if (m1[i] > out.gpu) out.gpu = m1[i];
    if (m2[i] > out.diff) out.diff = m2[i];
  }
  free(m1), free(m2);
  return out;
}

static void report(const char *what, const char *fmt, int64_t M, int64_t N, int64_t K,
                   const gemm_info *gi, ratios r, int ok) {
  printf("%-6s %-14s %-10s M=%-5lld N=%-5lld K=%-5lld path=%-22s pinned=%d err/tol gpu=%.3f diff=%.3f\n",
         ok ? "PASS" : "FAIL", what, fmt, (long long)M, (long long)N, (long long)K,
         gi ? gemm_path_name(gi->path) : "-", gi ? gi->pinned : 0, r.gpu, r.diff);
  if (ok) g_pass++;
  else g_fail++;
}

static float *f32_of_bf16_dev(const uint16_t *d, int64_t n) {
  uint16_t *h = host_copy(d, (size_t)n * 2);
  float *f = tg_bf16_to_f32(h, n);
  free(h);
  return f;
}

/* gemm_q_cuda vs gemm_q_cpu and vs FP64, one shape and format; BF16 outputs
 * (the production path; both sides round the FP32 sum once). */
static void case_gemm(int64_t M, int64_t N, int64_t K, qformat f, int pin, uint64_t seed) {
  uint16_t *x = tg_rand_bf16(M, K, seed), *w = tg_rand_bf16(N, K, seed + 1);
  op ox = op_make(x, M, K, f, 0), ow = op_make(w, N, K, f, 1);
  uint16_t *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(M * N) * 2));
  gemm_opts go = {1, pin, 0, NULL};
  gemm_info gi;
  rl_err e;
  int rc = gemm_q_cuda(yd, &ox.d, &ow.d, &go, &gi, &e);
  ratios r = {INFINITY, INFINITY};
  if (rc) {
    printf("  gemm_q_cuda: %s\n", e.msg);
  } else {
    float *yg = f32_of_bf16_dev(yd, M * N);
    int64_t *rows = rl_xmalloc((size_t)(M > 48 ? M : 48) * 8);
    int nr = pick_rows(M, rows);
    void *bd, *bs;
    qtensor xs = op_rows(&ox.h, rows, nr, &bd, &bs);
    uint16_t *yc16 = rl_xmalloc((size_t)nr * (size_t)N * 2);
    gemm_opts co = {1, 0, 0, NULL};
    if (gemm_q_cpu(yc16, &xs, &ow.h, &co, NULL, &e)) printf("  gemm_q_cpu: %s\n", e.msg);
    float *yc = tg_bf16_to_f32(yc16, (int64_t)nr * N);
    double tol = gi.path == GEMM_PATH_FP8_BLOCK ? 0x1p-10 : 2.0 * (K + 2) * U24;
    r = compare(yg, yc, rows, nr, N, K, ox.deq, ow.deq, tol, 0x1p-8);
    free(yg), free(rows), free(bd), free(bs), free(yc16), free(yc);
  }
  report(pin ? "gemm-pinned" : "gemm", qtensor_format_name(f), M, N, K, &gi, r,
         !rc && r.gpu <= 1 && r.diff <= 1);
  cudaFree(yd);
  op_free(&ox), op_free(&ow);
  free(x), free(w);
}

/* linear_forward on the device vs on the CPU (BF16 outputs): the device
 * quantizer must give the CPU's bytes, else the difference is ~2^-4, far
 * above the tolerance. */
static void case_linear(int64_t M, int64_t N, int64_t K, qformat f, uint64_t seed) {
  uint16_t *x = tg_rand_bf16(M, K, seed), *w = tg_rand_bf16(N, K, seed + 1);
  op ow = op_make(w, N, K, f, 1);
  quant_policy p;
  quant_policy_init(&p, f == QFMT_NVFP4 ? QFMT_BF16 : f, f);
  p.emulate = 1;
  uint16_t *xd = dev_copy(x, (size_t)(M * K) * 2), *od;
  CK(cudaMalloc((void **)&od, (size_t)(M * N) * 2));
  gemm_info gi;
  linear_opts lo = {NULL, &gi};
  rl_err e;
  int rc = linear_forward_ex(od, xd, M, &ow.d, &p, &lo, &e);
  ratios r = {INFINITY, INFINITY};
  if (rc) {
    printf("  linear_forward (cuda): %s\n", e.msg);
  } else {
    float *yg = f32_of_bf16_dev(od, M * N);
    int64_t *rows = rl_xmalloc((size_t)(M > 48 ? M : 48) * 8);
    int nr = pick_rows(M, rows);
    uint16_t *xs = rl_xmalloc((size_t)nr * (size_t)K * 2 + 2);
    for (int i = 0; i < nr; i++) memcpy(xs + (size_t)i * K, x + rows[i] * K, (size_t)K * 2);
    uint16_t *yc16 = rl_xmalloc((size_t)nr * (size_t)N * 2);
    if (linear_forward(yc16, xs, nr, &ow.h, &p, &e)) printf("  linear_forward (cpu): %s\n", e.msg);
    float *yc = tg_bf16_to_f32(yc16, (int64_t)nr * N);
    op ox = op_make(x, M, K, f, 0); /* the CPU-quantized activation, for S* */
    double tol = gi.path == GEMM_PATH_FP8_BLOCK ? 0x1p-10 : 2.0 * (K + 2) * U24;
    r = compare(yg, yc, rows, nr, N, K, ox.deq, ow.deq, tol, 0x1p-8);
    op_free(&ox);
    free(yg), free(rows), free(xs), free(yc16), free(yc);
  }
  report("linear", qtensor_format_name(f), M, N, K, &gi, r, !rc && r.gpu <= 1 && r.diff <= 1);
  cudaFree(xd), cudaFree(od);
  op_free(&ow);
  free(x), free(w);
}

/* An activation quantized once for two weights (linear_act_prepare +
 * linear_forward_prepared, the CUDA model's q/k/v and gate/up) == linear_forward
 * of each, bitwise; a prepared activation used after another linear_forward
 * (its scratch reused) or with a weight of another K is refused. */
static void case_prepared(int64_t M, int64_t N1, int64_t N2, int64_t K, qformat f, uint64_t seed) {
  uint16_t *x = tg_rand_bf16(M, K, seed), *w1 = tg_rand_bf16(N1, K, seed + 1), *w2 = tg_rand_bf16(N2, K, seed + 2);
  op o1 = op_make(w1, N1, K, f, 1), o2 = op_make(w2, N2, K, f, 1);
  quant_policy p;
  quant_policy_init(&p, f == QFMT_NVFP4 ? QFMT_BF16 : f, f);
  p.emulate = 1, p.pin_algo = 1;
  uint16_t *xd = dev_copy(x, (size_t)(M * K) * 2), *a1, *a2, *b1, *b2;
  CK(cudaMalloc((void **)&a1, (size_t)(M * N1) * 2));
  CK(cudaMalloc((void **)&b1, (size_t)(M * N1) * 2));
  CK(cudaMalloc((void **)&a2, (size_t)(M * N2) * 2));
  CK(cudaMalloc((void **)&b2, (size_t)(M * N2) * 2));
  rl_err e;
  linear_act a;
  int rc = linear_forward(a1, xd, M, &o1.d, &p, &e) || linear_forward(a2, xd, M, &o2.d, &p, &e) ||
           linear_act_prepare(&a, xd, M, K, f, &p, NULL, &e) || linear_forward_prepared(b1, &a, &o1.d, &p, NULL, &e) ||
           linear_forward_prepared(b2, &a, &o2.d, &p, NULL, &e);
  int same = 0, refused = 0;
  if (!rc) {
    uint16_t *h[4] = {host_copy(a1, (size_t)(M * N1) * 2), host_copy(b1, (size_t)(M * N1) * 2),
                      host_copy(a2, (size_t)(M * N2) * 2), host_copy(b2, (size_t)(M * N2) * 2)};
    same = !memcmp(h[0], h[1], (size_t)(M * N1) * 2) && !memcmp(h[2], h[3], (size_t)(M * N2) * 2);
    for (int i = 0; i < 4; i++) free(h[i]);
    /* stale after another linear_forward; another K */
    refused = linear_forward(a1, xd, M, &o1.d, &p, &e) == 0 &&
              linear_forward_prepared(b1, &a, &o1.d, &p, NULL, &e) == RL_EXIT_USAGE && strstr(e.msg, "prepare it again");
    qtensor wk = o1.d;
    wk.cols = K - 8;
    refused = refused && linear_act_prepare(&a, xd, M, K, f, &p, NULL, &e) == 0 &&
              linear_forward_prepared(b1, &a, &wk, &p, NULL, &e) == RL_EXIT_USAGE;
  } else {
    printf("  prepared %s: %s\n", qtensor_format_name(f), e.msg);
  }
  printf("%-6s prepared       %-10s M=%-5lld N=%lld,%lld K=%-5lld one quantization for two weights == linear_forward "
         "of each (bitwise); stale / other-K use refused\n",
         same && refused ? "PASS" : "FAIL", qtensor_format_name(f), (long long)M, (long long)N1, (long long)N2,
         (long long)K);
  same && refused ? g_pass++ : g_fail++;
  cudaFree(xd), cudaFree(a1), cudaFree(a2), cudaFree(b1), cudaFree(b2);
  op_free(&o1), op_free(&o2);
  free(x), free(w1), free(w2);
}

/* Batch invariance: rows computed with M rows in the batch equal (bitwise)
 * the same rows computed with M = 8192, when the algorithm is pinned. Also
 * counts how many rows differ without pinning (information, not a failure). */
static void case_invariance(int64_t N, int64_t K, qformat f) {
  const int64_t MB = GEMM_PIN_M;
  static const int64_t Ms[] = {1, 3, 8, 64, 129, 512, 1000, 2048}; /* every pin bucket up to 2048 */
  const int nms = (int)(sizeof Ms / sizeof Ms[0]);
  uint16_t *x = tg_rand_bf16(MB, K, 4242), *w = tg_rand_bf16(N, K, 4243);
  op ow = op_make(w, N, K, f, 1);
  quant_policy p;
  quant_policy_init(&p, f, f);
  uint16_t *xd = dev_copy(x, (size_t)(MB * K) * 2), *big, *small;
  CK(cudaMalloc((void **)&big, (size_t)(MB * N) * 2));
  CK(cudaMalloc((void **)&small, (size_t)(2048 * N) * 2));
  rl_err e;
  for (int pin = 1; pin >= 0; pin--) {
    p.pin_algo = pin;
    if (linear_forward(big, xd, MB, &ow.d, &p, &e)) {
      printf("  invariance M=%lld: %s\n", (long long)MB, e.msg);
      g_fail++;
      continue;
    }
    uint16_t *hb = host_copy(big, (size_t)(2048 * N) * 2);
    char line[512];
    int n = snprintf(line, sizeof line, "%-6s %-14s %-10s N=%-5lld K=%-5lld rows differing from M=8192:",
                     "", pin ? "invariance-pin" : "invariance-heur", qtensor_format_name(f), (long long)N, (long long)K);
    int bad = 0;
    for (int i = 0; i < nms; i++) {
      int64_t M = Ms[i];
      gemm_info gi;
      linear_opts lo = {NULL, &gi};
      if (linear_forward_ex(small, xd, M, &ow.d, &p, &lo, &e)) {
        n += snprintf(line + n, sizeof line - (size_t)n, " M=%lld:error", (long long)M);
        printf("  %s\n", e.msg);
        bad = 1;
        continue;
      }
      uint16_t *hs = host_copy(small, (size_t)(M * N) * 2);
      int diff = 0;
      for (int64_t r = 0; r < M; r++) diff += memcmp(hs + r * N, hb + r * N, (size_t)N * 2) != 0;
      n += snprintf(line + n, sizeof line - (size_t)n, " M=%lld:%d", (long long)M, diff);
      if (pin && diff) bad = 1;
      free(hs);
    }
    if (pin) memcpy(line, bad ? "FAIL" : "PASS", 4), bad ? g_fail++ : g_pass++;
    printf("%s\n", line);
    free(hb);
  }
  cudaFree(xd), cudaFree(big), cudaFree(small);
  op_free(&ow);
  free(x), free(w);
}

/* The rollout's prefill packs the prompts admitted together into one forward:
 * a group of ≤ 64 tokens ran the small-M kernel, a bigger one cuBLASLt's
 * heuristic (main until 2026-12-06), the pinned prefill cuBLASLt's pinned
 * algorithm at every size. Here, at one linear (BF16 x, BF16 W, BF16-rounded
 * outputs), the first 13 rows computed as a group of 13 and inside a group of
 * 456: how many outputs each pair of orders gives differently. Asserted: the
 * pinned algorithm's rows do not depend on the group (the prefill's promise);
 * the rest is printed (`info`), the measure of what a prefill check on the
 * rollout can see. */
static void case_prefill_orders(int64_t N, int64_t K) {
  enum { MS = 13, MB = 456 };
  uint16_t *x = tg_rand_bf16(MB, K, 4711 + (uint64_t)K), *w = tg_rand_bf16(N, K, 4712 + (uint64_t)N);
  uint16_t *xd = dev_copy(x, (size_t)(MB * K) * 2), *wd = dev_copy(w, (size_t)(N * K) * 2), *yb;
  float *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(MB * N) * 4));
  CK(cudaMalloc((void **)&yb, (size_t)(MB * N) * 2));
  qtensor wq = qtensor_bf16(wd, N, K, 1);
  rl_err e;
  enum { SMALL, SMALL_SPLIT, HEUR_S, HEUR_B, PIN_S, PIN_B, NV };
  static const char *nm[NV] = {"small", "small(ctas 528)", "heur@13", "heur@456", "pin@13", "pin@456"};
  float *v[NV] = {0};
  for (int k = 0; k < NV; k++) {
    int rc;
    if (k <= SMALL_SPLIT) {
      gemm_small_tune t = gemm_small_tune_get();
      if (k == SMALL_SPLIT) t.ctas = 528, t.min_stages = 1;
      gemm_small_tune_set(k == SMALL_SPLIT ? &t : NULL);
      rc = gemm_small_bf16_cuda(yd, xd, wd, MS, N, K, NULL, &e);
      gemm_small_tune_set(NULL);
      if (!rc) v[k] = host_copy(yd, (size_t)(MS * N) * 4);
    } else {
      quant_policy p;
      quant_policy_init(&p, QFMT_BF16, QFMT_BF16);
      p.pin_algo = k >= PIN_S;
      rc = linear_forward(yb, xd, (k == HEUR_S || k == PIN_S) ? MS : MB, &wq, &p, &e);
      if (!rc) v[k] = f32_of_bf16_dev(yb, MS * N);
    }
    if (rc) {
      printf("FAIL   prefill-orders N=%-5lld K=%-5lld %s: %s\n", (long long)N, (long long)K, nm[k], e.msg);
      g_fail++;
    }
  }
  char line[600];
  int n = snprintf(line, sizeof line, "prefill-orders N=%-5lld K=%-5lld outputs differing of %lld:", (long long)N,
                   (long long)K, (long long)(MS * N));
  static const int pairs[][2] = {{SMALL, SMALL_SPLIT}, {SMALL, HEUR_B}, {SMALL, PIN_B}, {HEUR_S, HEUR_B}, {PIN_S, PIN_B}};
  int64_t dpin = -1;
  for (int i = 0; i < 5; i++) {
    const float *a = v[pairs[i][0]], *b = v[pairs[i][1]];
    if (!a || !b) continue;
    int64_t d = 0;
    for (int64_t j = 0; j < MS * N; j++) d += memcmp(&a[j], &b[j], 4) != 0;
    if (pairs[i][0] == PIN_S) dpin = d;
    n += snprintf(line + n, sizeof line - (size_t)n, " %s vs %s %lld;", nm[pairs[i][0]], nm[pairs[i][1]], (long long)d);
  }
  printf("info   %s\n", line);
  printf("%-6s prefill-orders N=%-5lld K=%-5lld pinned rows of a group of 13 == the same rows in a group of 456\n",
         dpin == 0 ? "PASS" : "FAIL", (long long)N, (long long)K);
  dpin == 0 ? g_pass++ : g_fail++;
  for (int k = 0; k < NV; k++) free(v[k]);
  cudaFree(xd), cudaFree(wd), cudaFree(yd), cudaFree(yb);
  free(x), free(w);
}

/* linear_backward on the device vs the CPU (dX, dW in BF16; dW accumulated in FP32). */
static void case_backward(int64_t m, int64_t n, int64_t k) {
  uint16_t *dy = tg_rand_bf16(m, n, 1), *x = tg_rand_bf16(m, k, 2), *w = tg_rand_bf16(n, k, 3);
  linear_bwd hb = {m, n, k, dy, x, w, rl_xmalloc((size_t)(m * k) * 2), rl_xmalloc((size_t)(n * k) * 2),
                   calloc((size_t)(n * k), 4), 0, NULL};
  linear_bwd db = {m, n, k, dev_copy(dy, (size_t)(m * n) * 2), dev_copy(x, (size_t)(m * k) * 2),
                   dev_copy(w, (size_t)(n * k) * 2), NULL, NULL, NULL, 1, NULL};
  CK(cudaMalloc((void **)&db.dx, (size_t)(m * k) * 2));
  CK(cudaMalloc((void **)&db.dw, (size_t)(n * k) * 2));
  CK(cudaMalloc((void **)&db.dw_acc, (size_t)(n * k) * 4));
  CK(cudaMemset(db.dw_acc, 0, (size_t)(n * k) * 4));
  rl_err e;
  int rc = linear_backward(&hb, &e);
  if (!rc) rc = linear_backward(&db, &e);
  if (rc) printf("  linear_backward: %s\n", e.msg);
  /* operands as [rows][K'] float for compare(): dX = dY·W → rows of dY, columns of W */
  float *dyf = tg_bf16_to_f32(dy, m * n), *wt = rl_xmalloc((size_t)(n * k) * 4);
  float *dyt = rl_xmalloc((size_t)(m * n) * 4), *xt = rl_xmalloc((size_t)(m * k) * 4);
  for (int64_t t = 0; t < n; t++)
    for (int64_t j = 0; j < k; j++) wt[j * n + t] = fmt_bf16_to_f32(w[t * k + j]);
  for (int64_t t = 0; t < m; t++) {
    for (int64_t i = 0; i < n; i++) dyt[i * m + t] = fmt_bf16_to_f32(dy[t * n + i]);
    for (int64_t j = 0; j < k; j++) xt[j * m + t] = fmt_bf16_to_f32(x[t * k + j]);
  }
  int64_t *rows = rl_xmalloc((size_t)(m > n ? m : n) * 8);
  for (int64_t i = 0; i < (m > n ? m : n); i++) rows[i] = i;
  ratios r1 = {INFINITY, INFINITY}, r2 = r1, r3 = r1;
  if (!rc) {
    float *g1 = f32_of_bf16_dev(db.dx, m * k), *c1 = tg_bf16_to_f32(hb.dx, m * k);
    float *g2 = f32_of_bf16_dev(db.dw, n * k), *c2 = tg_bf16_to_f32(hb.dw, n * k);
    float *g3 = host_copy(db.dw_acc, (size_t)(n * k) * 4);
    r1 = compare(g1, c1, rows, (int)m, k, n, dyf, wt, 2.0 * (n + 2) * U24, 0x1p-8);
    r2 = compare(g2, c2, rows, (int)n, k, m, dyt, xt, 2.0 * (m + 2) * U24, 0x1p-8);
    r3 = compare(g3, hb.dw_acc, rows, (int)n, k, m, dyt, xt, 2.0 * (m + 2) * U24, U24);
    free(g1), free(c1), free(g2), free(c2), free(g3);
  }
  report("backward-dX", "bf16", m, k, n, NULL, r1, !rc && r1.gpu <= 1 && r1.diff <= 1);
  report("backward-dW", "bf16", n, k, m, NULL, r2, !rc && r2.gpu <= 1 && r2.diff <= 1);
  report("backward-dWacc", "f32", n, k, m, NULL, r3, !rc && r3.gpu <= 1 && r3.diff <= 1);
  cudaFree((void *)db.dy), cudaFree((void *)db.x), cudaFree((void *)db.w);
  cudaFree(db.dx), cudaFree(db.dw), cudaFree(db.dw_acc);
  free(hb.dx), free(hb.dw), free(hb.dw_acc), free(dy), free(x), free(w);
  free(dyf), free(wt), free(dyt), free(xt), free(rows);
}

/* MXFP8/NVFP4 without emulate on Hopper: refused with a clear error. */
static void case_refuse_mx(const device_info *di) {
  if (di->gpus[0].cc_major >= 10) return;
  uint16_t *x = tg_rand_bf16(8, 64, 1), *w = tg_rand_bf16(16, 64, 2);
  op ox = op_make(x, 8, 64, QFMT_MXFP8, 0), ow = op_make(w, 16, 64, QFMT_MXFP8, 1);
  void *y;
  CK(cudaMalloc(&y, 8 * 16 * 2));
  rl_err e;
  int rc = gemm_q_cuda(y, &ox.d, &ow.d, NULL, NULL, &e);
  int ok = rc == RL_EXIT_HARDWARE && strstr(e.msg, "emulate: true");
  printf("%-6s refuse-mxfp8-without-emulate: rc=%d \"%s\"\n", ok ? "PASS" : "FAIL", rc, e.msg);
  ok ? g_pass++ : g_fail++;
  cudaFree(y);
  op_free(&ox), op_free(&ow);
  free(x), free(w);
}

/* ---------------------------------------------------------------- small-M GEMM (issue #8)
 * gemm_small_bf16_cuda: y = f32(bf16_rne(Σ_k x·w)), FP32 accumulation.
 *
 * Bound. Let S* be the FP64 sum, A = Σ|x_k·w_k|, ref = bf16_rne(S*), and
 * dist(a, b) the number of BF16 steps between two BF16 values. The kernel's
 * FP32 sum (K/16 MMAs, then the slice partials) is within γ·A of S* with
 * γ = 4(K+2)·2^-24: an MMA adds its 16 exact products and the accumulator
 * aligned to the largest of them and truncated (no rounding) to FP32-like
 * precision, ≤ 17·2^-23 of that largest term, i.e. ≤ ~2.1·K·2^-24·A over K;
 * 4 leaves room. If γ·A is below 1 ulp of ref, y and ref (both RNE, which
 * is monotone) are at most one BF16 step apart: "within 1 BF16 ulp". That holds for every
 * element when no cancellation happens, e.g. on non-negative data (A = |S*|,
 * γ ≤ 2^-10.4 < 2^-9 for K ≤ 3072): the `nonneg` runs require dist ≤ 1 for
 * every element. On signed data an output near 0 (|S*| ≪ A) can be several
 * BF16 steps from ref within the FP32 error that any FP32 accumulation order
 * has; there an element passes when dist ≤ 1 or |y − S*| ≤ 2^-8·|S*| + 1.01·γ·A,
 * and the count of dist ≥ 2 is printed. The same rule, both sides' bounds
 * added, compares gemm_small with cuBLASLt (linear_forward, BF16 output). */

#define SG_MMAX 256
#define SG_GAMMA(K) (4.0 * (double)((K) + 2) * U24)

/* Ordinal of a BF16 value held in FP32: neighbours differ by 1, ±0 are 0. */
static int32_t sg_ord(float v) {
  uint16_t h = fmt_bf16_from_f32(v);
  return (h & 0x8000) ? -(int32_t)(h & 0x7fff) : (int32_t)h;
}

/* BF16 from an ordinal (inverse of sg_ord; 0 → +0). */
static float sg_from_ord(int32_t o) {
  return fmt_bf16_to_f32(o < 0 ? (uint16_t)(0x8000 | (uint16_t)(-o)) : (uint16_t)o);
}

/* d rounded to the nearest BF16, ties to even (exact: BF16 values are doubles). */
static float sg_bf16_of_f64(double d) {
  int32_t o = sg_ord((float)d), best = o;
  for (int32_t c = o - 1; c <= o + 1; c++) {
    double eb = fabs((double)sg_from_ord(best) - d), ec = fabs((double)sg_from_ord(c) - d);
    if (ec < eb || (ec == eb && !(fmt_bf16_from_f32(sg_from_ord(c)) & 1))) best = c;
  }
  return sg_from_ord(best);
}

/* Tally of one comparison against the FP64 reference. */
typedef struct sg_tally {
  int64_t n, diff, far, bad; /* checked, dist ≥ 1, dist ≥ 2, beyond the bound */
  int32_t maxd;
} sg_tally;

static void sg_count(sg_tally *t, float y, double ref, double mag, int64_t K) {
  int32_t d = abs(sg_ord(y) - sg_ord(sg_bf16_of_f64(ref)));
  t->n++;
  t->diff += d >= 1, t->far += d >= 2;
  if (d > t->maxd) t->maxd = d;
  double bound = 0x1p-8 * fabs(ref) + 1.01 * SG_GAMMA(K) * mag;
  if (!(d <= 1 || fabs((double)y - ref) <= bound)) t->bad++;
}

/* Rows of x the FP64 reference covers: all 256 when cheap, else a sample
 * across m-blocks and m-chunks (0, 1, 7, 8, 63, 64, 100, 255). */
static int sg_ref_rows(int64_t N, int64_t K, int64_t *rows) {
  static const int64_t sample[] = {0, 1, 7, 8, 63, 64, 100, 255};
  if ((double)SG_MMAX * N * K <= 1.2e9) {
    for (int i = 0; i < SG_MMAX; i++) rows[i] = i;
    return SG_MMAX;
  }
  memcpy(rows, sample, sizeof sample);
  return 8;
}

/* One (N, K): M = 1, 3, 8, 17, 64, 100, 256 vs FP64 (rows sg_ref_rows), every M's
 * rows bitwise equal to M = 256's, rows alone (M = 1 at x + r·K) equal to their
 * row in M = 64 and 256, and gemm_small vs cuBLASLt (linear_forward) on M = 256. */
static void case_small(int64_t N, int64_t K, int nonneg, uint64_t seed) {
  static const int64_t Ms[] = {256, 1, 3, 8, 17, 64, 100};
  const int nms = (int)(sizeof Ms / sizeof Ms[0]);
  uint16_t *x = tg_rand_bf16(SG_MMAX, K, seed), *w = tg_rand_bf16(N, K, seed + 1);
  if (nonneg) {
    for (int64_t i = 0; i < SG_MMAX * K; i++) x[i] &= 0x7fff;
    for (int64_t i = 0; i < N * K; i++) w[i] &= 0x7fff;
  }
  int slices;
  int64_t slice_k;
  gemm_small_plan(N, K, &slices, &slice_k);
  /* FP64 reference on the sampled rows */
  int64_t rows[SG_MMAX];
  int nr = sg_ref_rows(N, K, rows);
  double *ref = rl_xmalloc((size_t)nr * (size_t)N * 8), *mag = rl_xmalloc((size_t)nr * (size_t)N * 8);
  float *wf = tg_bf16_to_f32(w, N * K), *xf = tg_bf16_to_f32(x, SG_MMAX * K);
#pragma omp parallel for schedule(dynamic)
  for (int64_t j = 0; j < N; j++)
    for (int i = 0; i < nr; i++) {
      const float *a = xf + rows[i] * K, *b = wf + j * K;
      double sacc = 0, g = 0;
      for (int64_t k = 0; k < K; k++) {
        double p = (double)a[k] * b[k];
        sacc += p, g += fabs(p);
      }
      ref[(int64_t)i * N + j] = sacc, mag[(int64_t)i * N + j] = g;
    }
  uint16_t *xd = dev_copy(x, (size_t)(SG_MMAX * K) * 2), *wd = dev_copy(w, (size_t)(N * K) * 2);
  float *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(SG_MMAX * N) * 4));
  uint16_t *ybd; /* gemm_small_bf16_b_cuda's output (+ 1 element: a 2-byte-aligned start on odd M) */
  CK(cudaMalloc((void **)&ybd, (size_t)(SG_MMAX * N + 1) * 2));
  float *y256 = NULL, *y64 = NULL;
  const char *kind = nonneg ? "small-nonneg" : "small";
  rl_err e;
  int bad_inv = 0;
  for (int mi = 0; mi < nms; mi++) {
    int64_t M = Ms[mi];
    CK(cudaMemset(yd, 0xff, (size_t)(M * N) * 4)); /* NaN: a missed element shows */
    int rc = gemm_small_bf16_cuda(yd, xd, wd, M, N, K, NULL, &e);
    if (rc) {
      printf("FAIL   %-14s N=%-6lld K=%-5lld M=%-3lld gemm_small_bf16_cuda: %s\n", kind, (long long)N,
             (long long)K, (long long)M, e.msg);
      g_fail++;
      continue;
    }
    float *y = host_copy(yd, (size_t)(M * N) * 4);
    sg_tally t = {0};
    for (int i = 0; i < nr && rows[i] < M; i++)
      for (int64_t j = 0; j < N; j++)
        sg_count(&t, y[rows[i] * N + j], ref[(int64_t)i * N + j], mag[(int64_t)i * N + j], K);
    int64_t inv = 0, nonfin = 0; /* rows differing (bitwise) from M = 256; unwritten (NaN) elements */
    if (y256)
      for (int64_t r = 0; r < M; r++) inv += memcmp(y + r * N, y256 + r * N, (size_t)N * 4) != 0;
    for (int64_t i = 0; i < M * N; i++) nonfin += !isfinite(y[i]);
    /* the BF16-output form: the BF16 of each FP32 output, bit for bit */
    int64_t bdiff = -1;
    uint16_t *yb_at = ybd + (M & 1);
    CK(cudaMemset(ybd, 0xff, (size_t)(M * N + 1) * 2));
    if (gemm_small_bf16_b_cuda(yb_at, xd, wd, M, N, K, NULL, &e)) {
      printf("       gemm_small_bf16_b_cuda: %s\n", e.msg);
    } else {
      uint16_t *yb = host_copy(yb_at, (size_t)(M * N) * 2);
      bdiff = 0;
      for (int64_t i = 0; i < M * N; i++) bdiff += yb[i] != fmt_bf16_from_f32(y[i]);
      free(yb);
    }
    int ok = t.bad == 0 && inv == 0 && nonfin == 0 && (!nonneg || t.maxd <= 1) && bdiff == 0;
    printf("%-6s %-14s N=%-6lld K=%-5lld M=%-3lld slices=%-2d checked=%-8lld ≥1ulp=%-6lld ≥2ulp=%-4lld max=%d "
           "beyond-bound=%lld rows≠M256=%lld non-finite=%lld bf16-out≠=%lld\n",
           ok ? "PASS" : "FAIL", kind, (long long)N, (long long)K, (long long)M, slices, (long long)t.n,
           (long long)t.diff, (long long)t.far, t.maxd, (long long)t.bad, (long long)inv, (long long)nonfin,
           (long long)bdiff);
    ok ? g_pass++ : g_fail++;
    bad_inv |= inv != 0;
    if (M == 256) y256 = y;
    else if (M == 64) y64 = y;
    else free(y);
  }
  /* a row alone (M = 1) == the same row inside M = 64 and M = 256 */
  if (y256 && y64) {
    static const int64_t alone[] = {0, 5, 63, 200};
    int same = 0, want = 0;
    for (int i = 0; i < 4; i++) {
      int64_t r = alone[i];
      want += 1 + (r < 64);
      if (gemm_small_bf16_cuda(yd, xd + r * K, wd, 1, N, K, NULL, &e)) {
        printf("  gemm_small_bf16_cuda (row alone): %s\n", e.msg);
        continue;
      }
      float *y1 = host_copy(yd, (size_t)N * 4);
      same += memcmp(y1, y256 + r * N, (size_t)N * 4) == 0;
      if (r < 64) same += memcmp(y1, y64 + r * N, (size_t)N * 4) == 0;
      free(y1);
    }
    int ok = same == want && !bad_inv;
    printf("%-6s %-14s N=%-6lld K=%-5lld rows 0,5,63,200 alone == in M=64/M=256: %d of %d bitwise\n",
           ok ? "PASS" : "FAIL", kind, (long long)N, (long long)K, same, want);
    ok ? g_pass++ : g_fail++;
  }
  /* vs cuBLASLt: linear_forward (BF16 out) of all 256 rows, judged on the reference rows */
  if (y256) {
    quant_policy p;
    quant_policy_init(&p, QFMT_BF16, QFMT_BF16);
    qtensor wq = qtensor_bf16(wd, N, K, 1);
    uint16_t *yb;
    CK(cudaMalloc((void **)&yb, (size_t)(SG_MMAX * N) * 2));
    if (linear_forward(yb, xd, SG_MMAX, &wq, &p, &e)) {
      printf("FAIL   %-14s N=%-6lld K=%-5lld linear_forward: %s\n", kind, (long long)N, (long long)K, e.msg);
      g_fail++;
    } else {
      float *yc = f32_of_bf16_dev(yb, SG_MMAX * N);
      int64_t diff_all = 0;
      for (int64_t i = 0; i < SG_MMAX * N; i++) diff_all += sg_ord(yc[i]) != sg_ord(y256[i]);
      sg_tally t = {0}; /* cuBLASLt's output against the reference and against gemm_small */
      int64_t far = 0, bad = 0;
      for (int i = 0; i < nr; i++)
        for (int64_t j = 0; j < N; j++) {
          int64_t o = rows[i] * N + j;
          double r = ref[(int64_t)i * N + j], g = mag[(int64_t)i * N + j];
          sg_count(&t, yc[o], r, g, K);
          int32_t d = abs(sg_ord(yc[o]) - sg_ord(y256[o]));
          far += d >= 2;
          if (!(d <= 1 || fabs((double)yc[o] - y256[o]) <= 0x1p-7 * fabs(r) + 2.02 * SG_GAMMA(K) * g))
            bad++;
        }
      int ok = bad == 0 && t.bad == 0;
      printf("%-6s %-14s N=%-6lld K=%-5lld M=256 vs cuBLASLt: %lld of %lld elements differ (%.3f%%), on the %d "
             "reference rows ≥2ulp apart %lld, beyond bound %lld (cuBLASLt vs FP64 beyond bound %lld)\n",
             ok ? "PASS" : "FAIL", kind, (long long)N, (long long)K, (long long)diff_all, (long long)(SG_MMAX * N),
             100.0 * (double)diff_all / (double)(SG_MMAX * N), nr, (long long)far, (long long)bad, (long long)t.bad);
      ok ? g_pass++ : g_fail++;
      free(yc);
    }
    cudaFree(yb);
  }
  free(y256), free(y64);
  cudaFree(xd), cudaFree(wd), cudaFree(yd), cudaFree(ybd);
  free(ref), free(mag), free(wf), free(xf), free(x), free(w);
}

/* gemm_small inside a CUDA graph (the decode step's use): replays give the
 * eager call's bits, so the split-K counters are back to 0 after each call. */
static void case_small_graph(int64_t M, int64_t N, int64_t K) {
  uint16_t *x = tg_rand_bf16(M, K, 77), *w = tg_rand_bf16(N, K, 78);
  uint16_t *xd = dev_copy(x, (size_t)(M * K) * 2), *wd = dev_copy(w, (size_t)(N * K) * 2);
  float *yd;
  CK(cudaMalloc((void **)&yd, (size_t)(M * N) * 4));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  rl_err e;
  int slices;
  int64_t sk;
  gemm_small_plan(N, K, &slices, &sk);
  int rc = gemm_small_bf16_cuda(yd, xd, wd, M, N, K, s, &e); /* eager: grows the workspace */
  CK(cudaStreamSynchronize(s));
  float *ye = rc ? NULL : host_copy(yd, (size_t)(M * N) * 4);
  cudaGraph_t g = NULL;
  cudaGraphExec_t ge = NULL;
  int same = 0;
  if (!rc) {
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < 3 && !rc; i++) rc = gemm_small_bf16_cuda(yd, xd, wd, M, N, K, s, &e);
    CK(cudaStreamEndCapture(s, &g));
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
  } else {
    printf("  gemm_small_bf16_cuda: %s\n", e.msg);
  }
  int ok = !rc && same == 3;
  printf("%-6s small-graph    N=%-6lld K=%-5lld M=%-3lld slices=%d: 3 replays of 3 captured calls == eager: %d of 3\n",
         ok ? "PASS" : "FAIL", (long long)N, (long long)K, (long long)M, slices, same);
  ok ? g_pass++ : g_fail++;
  if (ge) cudaGraphExecDestroy(ge);
  if (g) cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  cudaFree(xd), cudaFree(wd), cudaFree(yd);
  free(ye), free(x), free(w);
}

/* ---------------------------------------------------------------- grouped and SwiGLU launches
 * gemm_small_bf16_group_cuda (q, k, v in one launch) and gemm_small_bf16_swiglu_cuda
 * (gate, up and the activation in one launch). The group's outputs are held to the
 * small-M bound above per element; the SwiGLU's act = bf16(silu(g̃)·ũ) (g̃, ũ the
 * BF16-rounded FP32 sums) to its propagation: with e = 2^-8(|S*| + γA) + γA the
 * error of g̃ (or ũ) against the FP64 sum S*, silu Lipschitz with 1.1, and the FP32
 * silu and product within 2^-21 relative,
 *   |act − silu(G*)U*| ≤ (1 + 2^-8)(1.1 e_g (|U*| + e_u) + |silu(G*)| e_u
 *                                   + 2^-21 (|silu(G*)| + 1.1 e_g)(|U*| + e_u)) + 2^-8 |act*|,
 * or act within one BF16 step of bf16(act*). Exact claims (bitwise): rows do not
 * depend on M; the knobs documented as not changing a sum (RLRUN_SMALL_GEMM_BN,
 * RLRUN_SMALL_GEMM_REDUCE) do not; a one-segment group == gemm_small_bf16_cuda; the
 * SwiGLU == ops_swiglu_forward_cuda of the group {wg, wu}'s outputs. Against a host
 * composition (glibc expf, ≤ 1 ulp, vs CUDA's ≤ 2 ulp expf) the SwiGLU must be within
 * one BF16 step; the count of differing elements is printed. */

static const int64_t SGF_MS[] = {64, 1, 7, 33, 100, 256}; /* M = 64 first: the rows the others must match */
#define SGF_NM ((int)(sizeof SGF_MS / sizeof SGF_MS[0]))

/* FP64 sums S* and magnitudes A of x rows `rows` against w [N][K] (host FP32 copies). */
static void sgf_ref(const float *xf, const int64_t *rows, int nr, const float *wf, int64_t N, int64_t K,
                    double *ref, double *mag) {
#pragma omp parallel for schedule(dynamic)
  for (int64_t j = 0; j < N; j++)
    for (int i = 0; i < nr; i++) {
      const float *a = xf + rows[i] * K, *b = wf + j * K;
      double sacc = 0, g = 0;
      for (int64_t k = 0; k < K; k++) {
        double p = (double)a[k] * b[k];
        sacc += p, g += fabs(p);
      }
      ref[(int64_t)i * N + j] = sacc, mag[(int64_t)i * N + j] = g;
    }
}

/* Rows [0, rows) of a [M][N] and b [·][N] that differ (bytes per element: es). */
static int64_t sgf_rows_differ(const void *a, const void *b, int64_t rows, int64_t N, size_t es) {
  int64_t d = 0;
  for (int64_t r = 0; r < rows; r++)
    d += memcmp((const char *)a + (size_t)(r * N) * es, (const char *)b + (size_t)(r * N) * es, (size_t)N * es) != 0;
  return d;
}

/* The environment's knobs with the tile width, reduction path and PDL replaced (−1: keep). */
static void sgf_tune(int bn, int reduce, int pdl) {
  gemm_small_tune_set(NULL);
  gemm_small_tune t = gemm_small_tune_get();
  if (bn >= 0) t.bn = bn;
  if (reduce >= 0) t.reduce = reduce;
  if (pdl >= 0) t.pdl = pdl;
  gemm_small_tune_set(&t);
}

/* One group of n_seg segments (rows Ns[i], any may be 0) over x [256][K]: every M of
 * SGF_MS vs FP64 and bitwise vs M = 64; at M = 64 and 7 the bit-neutral knobs; a
 * one-segment group vs gemm_small_bf16_cuda. */
static void case_group(const int64_t *Ns, int n_seg, int64_t K, uint64_t seed) {
  gemm_small_seg seg[GEMM_SMALL_MAX_SEGS];
  uint16_t *w[GEMM_SMALL_MAX_SEGS], *wd[GEMM_SMALL_MAX_SEGS];
  float *wf[GEMM_SMALL_MAX_SEGS], *yd[GEMM_SMALL_MAX_SEGS], *y64[GEMM_SMALL_MAX_SEGS];
  double *ref[GEMM_SMALL_MAX_SEGS], *mag[GEMM_SMALL_MAX_SEGS];
  char shape[96];
  int n = 0;
  int64_t Nt = 0;
  for (int i = 0; i < n_seg; i++) {
    n += snprintf(shape + n, sizeof shape - (size_t)n, "%s%lld", i ? "+" : "", (long long)Ns[i]);
    Nt += Ns[i];
  }
  uint16_t *x = tg_rand_bf16(SG_MMAX, K, seed), *xd = dev_copy(x, (size_t)(SG_MMAX * K) * 2);
  float *xf = tg_bf16_to_f32(x, SG_MMAX * K);
  int64_t rows[SG_MMAX];
  int nr = sg_ref_rows(Nt, K, rows);
  for (int i = 0; i < n_seg; i++) {
    w[i] = tg_rand_bf16(Ns[i], K, seed + 1 + (uint64_t)i);
    wd[i] = dev_copy(w[i], (size_t)(Ns[i] * K) * 2);
    wf[i] = tg_bf16_to_f32(w[i], Ns[i] * K);
    CK(cudaMalloc((void **)&yd[i], (size_t)(SG_MMAX * Ns[i]) * 4 + 4));
    seg[i] = (gemm_small_seg){yd[i], wd[i], Ns[i]};
    ref[i] = rl_xmalloc((size_t)nr * (size_t)Ns[i] * 8 + 8), mag[i] = rl_xmalloc((size_t)nr * (size_t)Ns[i] * 8 + 8);
    sgf_ref(xf, rows, nr, wf[i], Ns[i], K, ref[i], mag[i]);
    y64[i] = NULL;
  }
  int slices;
  int64_t slice_k;
  gemm_small_plan(gemm_small_group_rows(seg, n_seg), K, &slices, &slice_k);
  rl_err e;
  for (int mi = 0; mi < SGF_NM; mi++) {
    int64_t M = SGF_MS[mi], inv = 0, nonfin = 0;
    for (int i = 0; i < n_seg; i++) CK(cudaMemset(yd[i], 0xff, (size_t)(M * Ns[i]) * 4 + 4));
    int rc = gemm_small_bf16_group_cuda(seg, n_seg, xd, M, K, NULL, &e);
    sg_tally t = {0};
    for (int i = 0; i < n_seg && !rc; i++) {
      float *y = host_copy(yd[i], (size_t)(M * Ns[i]) * 4);
      for (int r = 0; r < nr && rows[r] < M; r++)
        for (int64_t j = 0; j < Ns[i]; j++)
          sg_count(&t, y[rows[r] * Ns[i] + j], ref[i][(int64_t)r * Ns[i] + j], mag[i][(int64_t)r * Ns[i] + j], K);
      for (int64_t j = 0; j < M * Ns[i]; j++) nonfin += !isfinite(y[j]);
      if (M == 64) y64[i] = y;
      else inv += sgf_rows_differ(y, y64[i], M < 64 ? M : 64, Ns[i], 4), free(y);
    }
    int ok = !rc && t.bad == 0 && inv == 0 && nonfin == 0;
    printf("%-6s %-14s N=%-14s K=%-5lld M=%-3lld slices=%-2d checked=%-8lld ≥1ulp=%-6lld ≥2ulp=%-4lld max=%d "
           "beyond-bound=%lld rows≠M64=%lld non-finite=%lld%s%s\n",
           ok ? "PASS" : "FAIL", "small-group", shape, (long long)K, (long long)M, slices, (long long)t.n,
           (long long)t.diff, (long long)t.far, t.maxd, (long long)t.bad, (long long)inv, (long long)nonfin,
           rc ? " error: " : "", rc ? e.msg : "");
    ok ? g_pass++ : g_fail++;
    if (rc && M == 64) break;
  }
  /* the knobs that must not change a bit, and the one-segment group == the plain call */
  if (y64[n_seg - 1]) {
    static const int knobs[][4] = {{64, 32, -1, -1}, {64, 64, -1, -1}, {64, -1, GEMM_SMALL_REDUCE_GLOBAL, -1},
                                   {64, 64, GEMM_SMALL_REDUCE_GLOBAL, -1}, {7, -1, GEMM_SMALL_REDUCE_GLOBAL, -1},
                                   {64, -1, -1, 1}, {7, -1, GEMM_SMALL_REDUCE_GLOBAL, 1}, {64, -1, -1, 0}};
    const int nk = (int)(sizeof knobs / sizeof *knobs);
    char line[512];
    int len = snprintf(line, sizeof line, "small-group    N=%-14s K=%-5lld rows≠default, by knob:", shape, (long long)K);
    int bad = 0;
    for (int c = 0; c < nk; c++) {
      int64_t M = knobs[c][0], d = 0;
      sgf_tune(knobs[c][1], knobs[c][2], knobs[c][3]);
      int rc = gemm_small_bf16_group_cuda(seg, n_seg, xd, M, K, NULL, &e);
      for (int i = 0; i < n_seg && !rc; i++) {
        if (!Ns[i]) continue;
        float *y = host_copy(yd[i], (size_t)(M * Ns[i]) * 4);
        d += sgf_rows_differ(y, y64[i], M, Ns[i], 4);
        free(y);
      }
      len += snprintf(line + len, sizeof line - (size_t)len, " M=%lld%s%s%s%s:%lld", (long long)M,
                      knobs[c][1] == 32 ? ",bn=32" : knobs[c][1] == 64 ? ",bn=64" : "",
                      knobs[c][2] == GEMM_SMALL_REDUCE_GLOBAL ? ",global" : "",
                      knobs[c][3] == 1 ? ",pdl" : knobs[c][3] == 0 ? ",no-pdl" : "", rc ? "(error)" : "", (long long)d);
      bad |= rc || d;
    }
    gemm_small_tune_set(NULL);
    if (n_seg == 1 && Ns[0] > 0) {
      int64_t d = -1;
      if (!gemm_small_bf16_cuda(yd[0], xd, wd[0], 64, Ns[0], K, NULL, &e)) {
        float *y = host_copy(yd[0], (size_t)(64 * Ns[0]) * 4);
        d = sgf_rows_differ(y, y64[0], 64, Ns[0], 4);
        free(y);
      }
      len += snprintf(line + len, sizeof line - (size_t)len, "; gemm_small_bf16_cuda M=64:%lld", (long long)d);
      bad |= d != 0;
    }
    printf("%-6s %s\n", bad ? "FAIL" : "PASS", line);
    bad ? g_fail++ : g_pass++;
  }
  for (int i = 0; i < n_seg; i++) {
    cudaFree(wd[i]), cudaFree(yd[i]);
    free(w[i]), free(wf[i]), free(ref[i]), free(mag[i]), free(y64[i]);
  }
  cudaFree(xd);
  free(x), free(xf);
}

/* silu as the host computes it (glibc expf). */
static float sgf_silu_host(float g) { return g / (1.0f + expf(-g)); }

/* The SwiGLU pair over x [256][K], wg, wu [N][K]: every M of SGF_MS bitwise vs
 * ops_swiglu_forward_cuda of the group {wg, wu} at M = 256 (so also vs each other),
 * vs FP64 (bound above) and vs the host composition (≤ 1 BF16 step); the
 * bit-neutral knobs at M = 64. */
static void case_swiglu(int64_t N, int64_t K, uint64_t seed) {
  uint16_t *x = tg_rand_bf16(SG_MMAX, K, seed), *wg = tg_rand_bf16(N, K, seed + 1), *wu = tg_rand_bf16(N, K, seed + 2);
  uint16_t *xd = dev_copy(x, (size_t)(SG_MMAX * K) * 2), *wgd = dev_copy(wg, (size_t)(N * K) * 2);
  uint16_t *wud = dev_copy(wu, (size_t)(N * K) * 2), *actd, *compd;
  float *gd, *ud;
  CK(cudaMalloc((void **)&actd, (size_t)(SG_MMAX * N) * 2 + 4));
  CK(cudaMalloc((void **)&compd, (size_t)(SG_MMAX * N) * 2 + 4));
  CK(cudaMalloc((void **)&gd, (size_t)(SG_MMAX * N) * 4));
  CK(cudaMalloc((void **)&ud, (size_t)(SG_MMAX * N) * 4));
  int64_t rows[SG_MMAX];
  int nr = sg_ref_rows(2 * N, K, rows);
  float *xf = tg_bf16_to_f32(x, SG_MMAX * K), *wgf = tg_bf16_to_f32(wg, N * K), *wuf = tg_bf16_to_f32(wu, N * K);
  size_t rn = (size_t)nr * (size_t)N;
  double *G = rl_xmalloc(rn * 8), *Ag = rl_xmalloc(rn * 8), *U = rl_xmalloc(rn * 8), *Au = rl_xmalloc(rn * 8);
  sgf_ref(xf, rows, nr, wgf, N, K, G, Ag);
  sgf_ref(xf, rows, nr, wuf, N, K, U, Au);
  int slices;
  int64_t slice_k;
  gemm_small_plan(2 * ((N + GEMM_SMALL_BN - 1) / GEMM_SMALL_BN * GEMM_SMALL_BN), K, &slices, &slice_k);
  rl_err e;
  /* the composition: group {wg, wu} at M = 256, then ops_swiglu_forward_cuda */
  gemm_small_seg seg[2] = {{gd, wgd, N}, {ud, wud, N}};
  int rc = gemm_small_bf16_group_cuda(seg, 2, xd, SG_MMAX, K, NULL, &e);
  if (!rc) rc = ops_swiglu_forward_cuda(NULL, compd, gd, ud, SG_MMAX, (int)N, (int)N, NULL, &e);
  uint16_t *comp = rc ? NULL : host_copy(compd, (size_t)(SG_MMAX * N) * 2), *a64 = NULL;
  float *gh = rc ? NULL : host_copy(gd, (size_t)(SG_MMAX * N) * 4), *uh = rc ? NULL : host_copy(ud, (size_t)(SG_MMAX * N) * 4);
  if (rc) printf("FAIL   small-swiglu   N=%-6lld K=%-5lld composition: %s\n", (long long)N, (long long)K, e.msg), g_fail++;
  for (int mi = 0; mi < SGF_NM && comp; mi++) {
    int64_t M = SGF_MS[mi], inv = 0, vs_comp = 0, host_diff = 0, host_far = 0;
    CK(cudaMemset(actd, 0xff, (size_t)(M * N) * 2)); /* NaN: a missed element shows */
    if (gemm_small_bf16_swiglu_cuda(actd, xd, wgd, wud, M, N, K, NULL, &e)) {
      printf("FAIL   small-swiglu   N=%-6lld K=%-5lld M=%-3lld: %s\n", (long long)N, (long long)K, (long long)M, e.msg);
      g_fail++;
      continue;
    }
    uint16_t *act = host_copy(actd, (size_t)(M * N) * 2);
    vs_comp = sgf_rows_differ(act, comp, M, N, 2);
    if (M == 64) a64 = act;
    else inv = sgf_rows_differ(act, a64, M < 64 ? M : 64, N, 2);
    for (int64_t i = 0; i < M * N; i++) { /* host: bf16(silu(g̃)·ũ) in FP32 */
      float v = sgf_silu_host(gh[i]) * uh[i];
      int32_t d = abs(sg_ord(fmt_bf16_to_f32(act[i])) - sg_ord(fmt_bf16_to_f32(fmt_bf16_from_f32(v))));
      host_diff += d != 0, host_far += d > 1 || isnan(fmt_bf16_to_f32(act[i]));
    }
    sg_tally t = {0};
    const double gam = 1.01 * SG_GAMMA(K);
    for (int r = 0; r < nr && rows[r] < M; r++)
      for (int64_t j = 0; j < N; j++) {
        size_t o = (size_t)r * (size_t)N + (size_t)j;
        double g = G[o], u = U[o], eg = 0x1p-8 * (fabs(g) + gam * Ag[o]) + gam * Ag[o];
        double eu = 0x1p-8 * (fabs(u) + gam * Au[o]) + gam * Au[o], sg = g / (1.0 + exp(-g)), want = sg * u;
        double bound = (1 + 0x1p-8) * (1.1 * eg * (fabs(u) + eu) + fabs(sg) * eu +
                                       0x1p-21 * (fabs(sg) + 1.1 * eg) * (fabs(u) + eu)) + 0x1p-8 * fabs(want);
        float y = fmt_bf16_to_f32(act[rows[r] * N + j]);
        int32_t d = abs(sg_ord(y) - sg_ord(sg_bf16_of_f64(want)));
        t.n++, t.diff += d >= 1, t.far += d >= 2;
        if (d > t.maxd) t.maxd = d;
        if (!(d <= 1 || fabs((double)y - want) <= bound)) t.bad++;
      }
    int ok = t.bad == 0 && inv == 0 && vs_comp == 0 && host_far == 0;
    printf("%-6s %-14s N=%-6lld K=%-5lld M=%-3lld slices=%-2d checked=%-8lld ≥1ulp=%-6lld ≥2ulp=%-4lld max=%d "
           "beyond-bound=%lld rows≠M64=%lld rows≠group+ops_swiglu=%lld vs host: %lld differ, %lld by >1ulp\n",
           ok ? "PASS" : "FAIL", "small-swiglu", (long long)N, (long long)K, (long long)M, slices, (long long)t.n,
           (long long)t.diff, (long long)t.far, t.maxd, (long long)t.bad, (long long)inv, (long long)vs_comp,
           (long long)host_diff, (long long)host_far);
    ok ? g_pass++ : g_fail++;
    if (act != a64) free(act);
  }
  if (a64) { /* the bit-neutral knobs (the pair has one tile width: only the reduction path moves) */
    for (int pdl = 0; pdl < 2; pdl++) {
      int64_t d = -1;
      sgf_tune(-1, GEMM_SMALL_REDUCE_GLOBAL, pdl);
      if (!gemm_small_bf16_swiglu_cuda(actd, xd, wgd, wud, 64, N, K, NULL, &e)) {
        uint16_t *act = host_copy(actd, (size_t)(64 * N) * 2);
        d = sgf_rows_differ(act, a64, 64, N, 2);
        free(act);
      }
      gemm_small_tune_set(NULL);
      printf("%-6s small-swiglu   N=%-6lld K=%-5lld M=64 reduce=global pdl=%d: rows≠default %lld\n", d ? "FAIL" : "PASS",
             (long long)N, (long long)K, pdl, (long long)d);
      d ? g_fail++ : g_pass++;
    }
  }
  cudaFree(xd), cudaFree(wgd), cudaFree(wud), cudaFree(actd), cudaFree(compd), cudaFree(gd), cudaFree(ud);
  free(x), free(wg), free(wu), free(xf), free(wgf), free(wuf), free(G), free(Ag), free(U), free(Au);
  free(comp), free(gh), free(uh), free(a64);
}

/* The group (kind 0: segments N, N/2 + 8, 40) or the SwiGLU pair (kind 1) inside a
 * CUDA graph: 3 replays of 3 captured calls == the eager call, bitwise, with the
 * cluster reduction and with the workspace (whose counters must be back at 0). */
static void case_fused_graph(int kind, int64_t M, int64_t N, int64_t K) {
  const int64_t Ns[3] = {N, N / 2 + 8, 40};
  const int nseg = kind ? 2 : 3;
  uint16_t *x = tg_rand_bf16(M, K, 91), *xd = dev_copy(x, (size_t)(M * K) * 2);
  gemm_small_seg seg[3];
  uint16_t *w[3], *actd = NULL;
  size_t yb = 0;
  for (int i = 0; i < nseg; i++) {
    int64_t n = kind ? N : Ns[i];
    w[i] = tg_rand_bf16(n, K, 92 + (uint64_t)i);
    seg[i].w = dev_copy(w[i], (size_t)(n * K) * 2), seg[i].N = n;
    CK(cudaMalloc((void **)&seg[i].y, (size_t)(M * n) * 4));
  }
  if (kind) CK(cudaMalloc((void **)&actd, (size_t)(M * N) * 2));
  cudaStream_t s;
  CK(cudaStreamCreate(&s));
  rl_err e;
  for (int rp = 0; rp < 4; rp++) {
    const int red = rp & 1, pdl = rp >> 1;
    sgf_tune(-1, red ? GEMM_SMALL_REDUCE_GLOBAL : GEMM_SMALL_REDUCE_CLUSTER, pdl);
#define SGF_CALL()                                                                                           \
  (kind ? gemm_small_bf16_swiglu_cuda(actd, xd, seg[0].w, seg[1].w, M, N, K, s, &e)                        \
        : gemm_small_bf16_group_cuda(seg, nseg, xd, M, K, s, &e))
    int rc = SGF_CALL(); /* eager: grows the workspace */
    CK(cudaStreamSynchronize(s));
    char *ye = NULL;
    if (!rc) { /* the outputs, concatenated */
      yb = kind ? (size_t)(M * N) * 2 : 0;
      for (int i = 0; !kind && i < nseg; i++) yb += (size_t)(M * seg[i].N) * 4;
      ye = rl_xmalloc(yb);
      size_t o = 0;
      for (int i = 0; i < (kind ? 1 : nseg); i++) {
        size_t b = kind ? yb : (size_t)(M * seg[i].N) * 4;
        void *h = host_copy(kind ? (void *)actd : (void *)seg[i].y, b);
        memcpy(ye + o, h, b), o += b;
        free(h);
      }
    }
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    int same = 0;
    if (!rc) {
      CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < 3 && !rc; i++) rc = SGF_CALL();
      CK(cudaStreamEndCapture(s, &g));
    }
#undef SGF_CALL
    if (!rc) {
      CK(cudaGraphInstantiate(&ge, g, 0));
      for (int rep = 0; rep < 3; rep++) {
        for (int i = 0; i < (kind ? 1 : nseg); i++)
          CK(cudaMemsetAsync(kind ? (void *)actd : (void *)seg[i].y, 0xff, kind ? yb : (size_t)(M * seg[i].N) * 4, s));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaStreamSynchronize(s));
        size_t o = 0;
        int eq = 1;
        for (int i = 0; i < (kind ? 1 : nseg); i++) {
          size_t b = kind ? yb : (size_t)(M * seg[i].N) * 4;
          void *h = host_copy(kind ? (void *)actd : (void *)seg[i].y, b);
          eq &= memcmp(ye + o, h, b) == 0, o += b;
          free(h);
        }
        same += eq;
      }
    } else {
      printf("  %s: %s\n", kind ? "gemm_small_bf16_swiglu_cuda" : "gemm_small_bf16_group_cuda", e.msg);
    }
    int ok = !rc && same == 3;
    printf("%-6s %-14s N=%-6lld K=%-5lld M=%-3lld reduce=%s pdl=%d: 3 replays of 3 captured calls == eager: %d of 3\n",
           ok ? "PASS" : "FAIL", kind ? "swiglu-graph" : "group-graph", (long long)N, (long long)K, (long long)M,
           red ? "global" : "cluster", pdl, same);
    ok ? g_pass++ : g_fail++;
    if (ge) cudaGraphExecDestroy(ge);
    if (g) cudaGraphDestroy(g);
    free(ye);
  }
  gemm_small_tune_set(NULL);
  cudaStreamDestroy(s);
  for (int i = 0; i < nseg; i++) cudaFree((void *)seg[i].w), cudaFree(seg[i].y), free(w[i]);
  if (actd) cudaFree(actd);
  cudaFree(xd);
  free(x);
}

int main(int argc, char **argv) {
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    printf("gemm_gpu_test: skipped: %s\n", di.status);
    return 0;
  }
  printf("gemm_gpu_test on %s (sm_%d%d), cuBLASLt %zu\n", di.gpus[0].name, di.gpus[0].cc_major,
         di.gpus[0].cc_minor, di.cublaslt);
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  static const int64_t Ms[] = {1, 3, 8, 64, 129, 512, 8192};
  static const int64_t NK[][2] = {{3072, 1024}, {1024, 3072}, {2048, 1024}, {1024, 2048},
                                  {768, 2048},  {2048, 768}};
  int nm = quick ? 4 : 7, nnk = quick ? 2 : 6;
  for (int s = 0; s < nnk; s++)
    for (int i = 0; i < nm; i++)
      for (int f = 0; f < 2; f++)
        case_gemm(Ms[i], NK[s][0], NK[s][1], f ? QFMT_FP8_BLOCK : QFMT_BF16, 0, 100 + s * 10 + i);
  /* shapes that are not multiples of 128: native fp8 (K % 16 = 0, N % 8 = 0), then
   * ones cuBLASLt's block-scaled fp8 refuses (the FP32 dequant fallback runs) */
  static const int64_t odd[][3] = {{129, 200, 144}, {8, 136, 272},  {129, 200, 136},
                                   {64, 72, 1000},  {3, 203, 256},  {512, 256, 1000}};
  for (int s = 0; s < 6; s++)
    for (int f = 0; f < 2; f++)
      case_gemm(odd[s][0], odd[s][1], odd[s][2], f ? QFMT_FP8_BLOCK : QFMT_BF16, 0, 900 + s);
  for (int f = 0; f < 2; f++) case_gemm(129, 3072, 1024, f ? QFMT_FP8_BLOCK : QFMT_BF16, 1, 7);
  /* the linear layer, activation quantized on the device, every format */
  for (int f = 0; f < 4; f++) {
    case_linear(129, 3072, 1024, (qformat)f, 50 + f);
    /* NVFP4's S_dec comes from the whole tensor: the CPU side must see every row */
    case_linear(f == QFMT_NVFP4 ? 512 : 8192, 768, 2048, (qformat)f, 60 + f);
  }
  case_refuse_mx(&di);
  /* one activation quantization for two weights (q/k/v, gate/up of the CUDA model) */
  for (int f = 1; f < 4; f++) {
    case_prepared(64, 2048, 1024, 1024, (qformat)f, 70 + f); /* a decode step's q and k */
    case_prepared(13, 3072, 3072, 1024, (qformat)f, 75 + f); /* rows padded to 16 for fp8-block */
  }
  for (int f = 0; f < 2; f++) {
    case_invariance(3072, 1024, f ? QFMT_FP8_BLOCK : QFMT_BF16);
    case_invariance(1024, 3072, f ? QFMT_FP8_BLOCK : QFMT_BF16);
    if (!quick) case_invariance(768, 2048, f ? QFMT_FP8_BLOCK : QFMT_BF16);
  }
  /* the prefill's orders at a Qwen3-0.6B layer's linears (q, o, gate, down) */
  static const int64_t pnk[][2] = {{2048, 1024}, {1024, 2048}, {3072, 1024}, {1024, 3072}};
  for (int i = 0; i < 4; i++) case_prefill_orders(pnk[i][0], pnk[i][1]);
  case_backward(512, 1024, 3072);
  case_backward(129, 768, 2048);
  /* the small-M GEMM of the decode step (gemm_small_bf16_cuda) */
  static const int64_t snk[][2] = {{3072, 1024}, {1024, 3072}, {2048, 1024}, {1024, 2048},
                                   {151936, 1024}, {96, 40}, {200, 264}, {520, 1000}};
  for (int i = 0; i < 8; i++) case_small(snk[i][0], snk[i][1], 0, 500 + (uint64_t)i);
  case_small(1024, 3072, 1, 600);
  case_small(200, 264, 1, 601);
  case_small_graph(64, 1024, 1024);
  case_small_graph(5, 200, 264);
  /* grouped and SwiGLU launches: the decode shapes, N not a multiple of 32, K not a
   * multiple of 128, four segments, an empty one, one segment (== the plain call),
   * more than 8 slices (the workspace reduction whatever the knob says) */
  static const int64_t gs[][6] = {/* K, n_seg, N… */
                                  {1024, 3, 2048, 1024, 1024, 0}, {264, 3, 200, 72, 40, 0}, {1000, 4, 96, 520, 8, 40},
                                  {136, 3, 72, 0, 40, 0},         {3072, 1, 1024, 0, 0, 0}, {4096, 2, 40, 8, 0, 0}};
  for (int i = 0; i < 6; i++) case_group(&gs[i][2], (int)gs[i][1], gs[i][0], 700 + (uint64_t)i);
  static const int64_t sw[][2] = {{3072, 1024}, {200, 264}, {40, 1000}, {520, 2048}, {96, 4096}};
  for (int i = 0; i < 5; i++) case_swiglu(sw[i][0], sw[i][1], 800 + (uint64_t)i);
  case_fused_graph(0, 64, 2048, 1024);
  case_fused_graph(0, 7, 200, 264);
  case_fused_graph(1, 64, 3072, 1024);
  case_fused_graph(1, 5, 200, 1000);
  printf("gemm_gpu_test: %d passed, %d failed (plans cached: %d)\n", g_pass, g_fail,
         gemm_cuda_plan_count());
  linear_release();
  return g_fail ? 1 : 0;
}
#else
int main(void) {
  printf("gemm_gpu_test: skipped: built without CUDA\n");
  return 0;
}
#endif
