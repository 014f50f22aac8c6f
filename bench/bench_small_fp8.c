/* bench_small_fp8.c — the decode step's fp8-block GEMMs: gemm_small_fp8_block_cuda
 * (one kernel: in-kernel activation quantization, FP8 tensor cores, FP32 out)
 * against what the engine runs for fp8-block layers today (mc_lin_fwd:
 * linear_forward = activation quantizer + cuBLASLt block-scaled FP8 GEMM, then the
 * BF16 → FP32 conversion), and, for scale, gemm_small_bf16_cuda on BF16 weights
 * (the BF16 decode path), on the Qwen3-0.6B shapes at M = 1, 8, 64.
 *
 * Method (bench_small_gemm.c's): each contender is captured into a CUDA graph of
 * `calls` calls; the weights rotate over copies of ≥ 256 MB together, so they stream
 * from HBM as in a decode step, not from L2. µs = median over REPEATS graph launches /
 * calls, contenders interleaved launch by launch. GB/s = fp8 weight bytes (N·K + the
 * scales) per second; "% copy" divides it by the device copy bandwidth measured in
 * this run (1 GiB device-to-device copy, bytes read + written per second). Then one
 * decode step (28 layers × q, k, v, o, gate, up, down + lm_head = 197 GEMMs) summed
 * per M, against the time its fp8 weight bytes take at the copy bandwidth; then the
 * whole step captured as one graph (28 layers of distinct weights, 575 MB: every layer
 * from HBM; the gaps between dependent launches counted, where PDL acts), fp8-small vs
 * the old path; then the whole-step graph under knob settings (gemm_small_fp8_tune_set),
 * at M = 1, 8, 32, 64.
 * lm_head is BF16 under the default policy (FORMATS.md); it is here as fp8 because a
 * policy may quantize it, and the step total is given with and without it.
 *
 *   build/bench_small_fp8        markdown tables */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/device.h"
#include "kernels/formats.h"
#include "kernels/gemm.h"
#include "kernels/linear.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#include "bench/bench_cuda.h" /* bench_copy_bw */

#define CK(x)                                                                                \
  do {                                                                                       \
    int st_ = (int)(x);                                                                      \
    if (st_ != 0) {                                                                          \
      fprintf(stderr, "%s:%d: %s failed (%d)\n", __FILE__, __LINE__, #x, st_);               \
      exit(1);                                                                               \
    }                                                                                        \
  } while (0)

#define REPEATS 15
#define ROTATE_BYTES ((size_t)256 << 20)
#define MAXC 8

enum { C_FP8, C_OLD, C_BF16, C_COUNT };
static const char *const CNAME[C_COUNT] = {"fp8-small", "old", "bf16-small"};

/* An fp8-block weight on the device as sync makes it (HOPPER_WEIGHT scales). */
static qtensor wq_make(const uint16_t *wb_dev, int64_t N, int64_t K) {
  qtensor q = qtensor_bf16(NULL, N, K, 1);
  int64_t nb = quant_cdiv(N, 128), kb4 = quant_roundup(quant_cdiv(K, 128), 4);
  q.fmt = QFMT_FP8_BLOCK, q.block_rows = 128, q.layout = QLAYOUT_HOPPER_WEIGHT;
  CK(cudaMalloc(&q.data, (size_t)(N * K)));
  CK(cudaMalloc(&q.scales, (size_t)(nb * kb4) * 4));
  CK(cudaMemset(q.scales, 0, (size_t)(nb * kb4) * 4));
  quant_opts o = {0};
  o.scale_layout = QLAYOUT_HOPPER_WEIGHT;
  rl_err e;
  if (quant_fp8_block_weight_cuda(wb_dev, N, K, q.data, q.scales, &o, NULL, NULL, &e)) {
    fprintf(stderr, "bench_small_fp8: weight quantizer: %s\n", e.msg);
    exit(1);
  }
  return q;
}

static void wq_free(qtensor *q) { cudaFree(q->data), cudaFree(q->scales); }

/* Bytes of an fp8-block weight (data + HOPPER scales). */
static double wq_bytes(int64_t N, int64_t K) {
  return (double)(N * K) + 4.0 * (double)(quant_cdiv(N, 128) * quant_roundup(quant_cdiv(K, 128), 4));
}

/* Random BF16 in [-1, 1) (xorshift; only finiteness matters for speed). */
static void fill_bf16(uint16_t *v, int64_t n, uint64_t seed) {
  uint64_t s = seed * 2654435761u + 88172645463325252ull;
  for (int64_t i = 0; i < n; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    v[i] = fmt_bf16_from_f32((float)((double)(s >> 11) * 0x1p-52 - 1.0));
  }
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* One GEMM of contender c: y [M][N] = x · wᵀ (yb: the old path's BF16 output). */
static int gemm_one(int c, float *y, uint16_t *yb, const uint16_t *x, const qtensor *wq, const uint16_t *wb,
                    int64_t M, const quant_policy *pol, cudaStream_t s) {
  rl_err e;
  int rc = 0;
  const int64_t N = wq ? wq->rows : 0, K = wq ? wq->cols : 0;
  if (c == C_FP8) {
    rc = gemm_small_fp8_block_cuda(y, x, wq, M, pol, s, &e);
  } else if (c == C_OLD) {
    linear_opts lo = {s, NULL};
    rc = linear_forward_ex(yb, x, M, wq, pol, &lo, &e);
    if (!rc) rc = ops_f32_from_bf16_cuda(y, yb, (size_t)(M * N), s, &e);
  } else {
    rc = gemm_small_bf16_cuda(y, x, wb, M, N, K, s, &e);
  }
  if (rc) fprintf(stderr, "bench_small_fp8 (%s): %s\n", CNAME[c], e.msg);
  return rc;
}

/* Median ms of each of n graphs over REPEATS launches, interleaved; the graphs are destroyed. */
static void time_graphs(cudaStream_t s, cudaGraphExec_t *ge, int n, double *ms) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  float t[MAXC][REPEATS];
  for (int r = 0; r < REPEATS; r++)
    for (int c = 0; c < n; c++) {
      CK(cudaEventRecord(e0, s));
      CK(cudaGraphLaunch(ge[c], s));
      CK(cudaEventRecord(e1, s));
      CK(cudaEventSynchronize(e1));
      CK(cudaEventElapsedTime(&t[c][r], e0, e1));
    }
  for (int c = 0; c < n; c++) {
    qsort(t[c], REPEATS, sizeof t[c][0], cmp_float);
    ms[c] = t[c][REPEATS / 2];
    cudaGraphExecDestroy(ge[c]);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
}

/* ---------------------------------------------------------------- per shape */

/* One (shape, M): weight copies (fp8 and BF16) and the operands. */
typedef struct bench {
  int64_t M, N, K;
  int copies, copies_bf16;
  qtensor *wq;
  uint16_t **wb;
  uint16_t *x, *yb;
  float *y;
  cudaStream_t s;
  quant_policy pol;
} bench;

static int bench_issue(bench *b, int c, int calls) {
  for (int i = 0; i < calls; i++)
    if (gemm_one(c, b->y, b->yb, b->x, &b->wq[i % b->copies], b->wb[i % b->copies_bf16], b->M, &b->pol, b->s))
      return 1;
  return 0;
}

/* The graph of `calls` calls of contender c, after eager calls (plans, workspaces). */
static cudaGraphExec_t graph_of(bench *b, int c, int calls) {
  CK(bench_issue(b, c, 4));
  CK(cudaStreamSynchronize(b->s));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(b->s, cudaStreamCaptureModeThreadLocal));
  CK(bench_issue(b, c, calls));
  CK(cudaStreamEndCapture(b->s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  cudaGraphDestroy(g);
  CK(cudaGraphLaunch(ge, b->s)); /* warm-up */
  return ge;
}

/* Elements where fp8-small and the old path differ by more than one BF16 step (a
 * sanity check that the timed kernels compute the same product; the test holds the
 * real checks). */
static int64_t far_apart(bench *b) {
  int64_t n = b->M * b->N, far = 0;
  float *y1 = malloc((size_t)n * 4), *y2 = malloc((size_t)n * 4);
  CK(gemm_one(C_FP8, b->y, b->yb, b->x, &b->wq[0], b->wb[0], b->M, &b->pol, b->s));
  CK(cudaStreamSynchronize(b->s));
  CK(cudaMemcpy(y1, b->y, (size_t)n * 4, cudaMemcpyDeviceToHost));
  CK(gemm_one(C_OLD, b->y, b->yb, b->x, &b->wq[0], b->wb[0], b->M, &b->pol, b->s));
  CK(cudaStreamSynchronize(b->s));
  CK(cudaMemcpy(y2, b->y, (size_t)n * 4, cudaMemcpyDeviceToHost));
  for (int64_t i = 0; i < n; i++) {
    uint16_t h1 = fmt_bf16_from_f32(y1[i]), h2 = fmt_bf16_from_f32(y2[i]);
    int32_t o1 = (h1 & 0x8000) ? -(int32_t)(h1 & 0x7fff) : (int32_t)h1;
    int32_t o2 = (h2 & 0x8000) ? -(int32_t)(h2 & 0x7fff) : (int32_t)h2;
    far += abs(o1 - o2) > 1;
  }
  free(y1), free(y2);
  return far;
}

/* ---------------------------------------------------------------- the whole step */

enum { NL = 28, HID = 1024, QN = 2048, KVN = 1024, FFN = 3072, VOCAB = 151936, SMAX_M = 64 };
enum { L_Q, L_K, L_V, L_O, L_GATE, L_UP, L_DOWN, L_COUNT };
static const int64_t LN[L_COUNT] = {QN, KVN, KVN, HID, FFN, FFN, HID}, LK[L_COUNT] = {HID, HID, HID, QN, HID, HID, FFN};

typedef struct dstep {
  int64_t M;
  qtensor w[NL][L_COUNT], lm;
  uint16_t *x, *yb; /* x [M][3072] (every layer reads its first K columns), yb: old path scratch */
  float *y;         /* [M][VOCAB] */
  int with_lm;
  cudaStream_t s;
  quant_policy pol;
} dstep;

static int dstep_issue(dstep *d, int c) {
  for (int l = 0; l < NL; l++)
    for (int j = 0; j < L_COUNT; j++)
      if (gemm_one(c, d->y, d->yb, d->x, &d->w[l][j], NULL, d->M, &d->pol, d->s)) return 1;
  return d->with_lm ? gemm_one(c, d->y, d->yb, d->x, &d->lm, NULL, d->M, &d->pol, d->s) : 0;
}

static cudaGraphExec_t dstep_graph(dstep *d, int c) {
  CK(dstep_issue(d, c));
  CK(cudaStreamSynchronize(d->s));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(d->s, cudaStreamCaptureModeThreadLocal));
  CK(dstep_issue(d, c));
  CK(cudaStreamEndCapture(d->s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  cudaGraphDestroy(g);
  CK(cudaGraphLaunch(ge, d->s)); /* warm-up */
  return ge;
}

/* Whole-step graphs: fp8-small vs old per M (with and without lm_head), then knobs. */
static void whole_step(cudaStream_t s, double bw, const int64_t *Ms, int nm) {
  dstep d;
  memset(&d, 0, sizeof d);
  d.s = s;
  quant_policy_init(&d.pol, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  uint16_t *wb;
  const size_t most = (size_t)VOCAB * HID;
  CK(cudaMalloc((void **)&wb, most * 2));
  uint16_t *h = malloc(most * 2);
  fill_bf16(h, (int64_t)most, 11);
  CK(cudaMemcpy(wb, h, most * 2, cudaMemcpyHostToDevice));
  double step_bytes = 0;
  for (int l = 0; l < NL; l++)
    for (int j = 0; j < L_COUNT; j++) d.w[l][j] = wq_make(wb, LN[j], LK[j]), step_bytes += wq_bytes(LN[j], LK[j]);
  d.lm = wq_make(wb, VOCAB, HID);
  const double lm_bytes = wq_bytes(VOCAB, HID);
  fill_bf16(h, (int64_t)SMAX_M * FFN, 12);
  CK(cudaMalloc((void **)&d.x, (size_t)SMAX_M * FFN * 2));
  CK(cudaMemcpy(d.x, h, (size_t)SMAX_M * FFN * 2, cudaMemcpyHostToDevice));
  free(h);
  cudaFree(wb);
  CK(cudaMalloc((void **)&d.yb, (size_t)SMAX_M * VOCAB * 2));
  CK(cudaMalloc((void **)&d.y, (size_t)SMAX_M * VOCAB * 4));
  printf("\none decode step captured as one graph (28 layers of distinct weights; %.0f MB of fp8 weights without\n"
         "lm_head = %.0f µs at the copy bandwidth, %.0f MB with it = %.0f µs):\n\n",
         step_bytes * 1e-6, step_bytes / bw * 1e6, (step_bytes + lm_bytes) * 1e-6, (step_bytes + lm_bytes) / bw * 1e6);
  printf("| lm_head |   M | fp8-small µs | old µs | old/fp8-small | fp8-small %% of bound | old %% of bound |\n");
  printf("|---------|-----|--------------|--------|---------------|----------------------|----------------|\n");
  for (int lm = 0; lm < 2; lm++)
    for (int mi = 0; mi < nm; mi++) {
      d.M = Ms[mi], d.with_lm = lm;
      cudaGraphExec_t ge[2] = {dstep_graph(&d, C_FP8), dstep_graph(&d, C_OLD)};
      double ms[2];
      time_graphs(s, ge, 2, ms);
      double bound = (step_bytes + (lm ? lm_bytes : 0)) / bw * 1e6;
      printf("| %-7s | %3lld | %12.0f | %6.0f | %12.2f× | %19.1f%% | %13.1f%% |\n", lm ? "yes" : "no", (long long)d.M,
             ms[0] * 1e3, ms[1] * 1e3, ms[1] / ms[0], 100 * bound / (ms[0] * 1e3), 100 * bound / (ms[1] * 1e3));
    }
  /* knobs on the whole-step graph (with lm_head) */
  static const int sweep[][5] = {/* ctas, min_stages, bn, reduce, pdl (-1: keep) */
                                 {-1, -1, -1, -1, -1}, {-1, -1, -1, -1, 0}, {-1, -1, 32, -1, -1},
                                 {-1, -1, 64, -1, -1}, {-1, -1, -1, GEMM_SMALL_FP8_REDUCE_GLOBAL, -1},
                                 {132, -1, -1, -1, -1}, {528, -1, -1, -1, -1}, {-1, 1, -1, -1, -1},
                                 {-1, 4, -1, -1, -1}, {528, 1, -1, -1, -1}};
  const int nsw = (int)(sizeof sweep / sizeof sweep[0]);
  gemm_small_fp8_tune t0 = gemm_small_fp8_tune_get();
  char tb[128];
  printf("\nwhole-step graphs with lm_head, fp8-small, µs by knobs (ctas and min_stages change the K split, so the\n"
         "sums; bn, reduce and pdl do not):\n\n");
  static const int64_t SMs[] = {1, 8, 32, 64}; /* + M = 32: the 16 < M ≤ 32 CTA shape */
  const int nsm = 4;
  printf("| knobs                                            |");
  for (int mi = 0; mi < nsm; mi++) printf(" M=%-3lld µs |", (long long)SMs[mi]);
  printf("\n|--------------------------------------------------|");
  for (int mi = 0; mi < nsm; mi++) printf("----------|");
  printf("\n");
  d.with_lm = 1;
  for (int k = 0; k < nsw; k++) {
    gemm_small_fp8_tune t = t0;
    if (sweep[k][0] >= 0) t.ctas = sweep[k][0];
    if (sweep[k][1] >= 0) t.min_stages = sweep[k][1];
    if (sweep[k][2] >= 0) t.bn = sweep[k][2];
    if (sweep[k][3] >= 0) t.reduce = sweep[k][3];
    if (sweep[k][4] >= 0) t.pdl = sweep[k][4];
    gemm_small_fp8_tune_set(&t);
    t = gemm_small_fp8_tune_get();
    printf("| %-48s |", gemm_small_fp8_tune_str(&t, tb, sizeof tb));
    for (int mi = 0; mi < nsm; mi++) {
      d.M = SMs[mi];
      cudaGraphExec_t ge = dstep_graph(&d, C_FP8);
      double ms;
      time_graphs(s, &ge, 1, &ms);
      printf(" %8.0f |", ms * 1e3);
    }
    printf("\n");
  }
  gemm_small_fp8_tune_set(NULL);
  for (int l = 0; l < NL; l++)
    for (int j = 0; j < L_COUNT; j++) wq_free(&d.w[l][j]);
  wq_free(&d.lm);
  cudaFree(d.x), cudaFree(d.yb), cudaFree(d.y);
}

int main(void) {
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    printf("bench_small_fp8: skipped: %s\n", di.status);
    return 0;
  }
  static const struct {
    const char *name;
    int64_t N, K;
    int per_step; /* GEMMs of this shape in one decode step of Qwen3-0.6B */
  } shapes[] = {{"q", 2048, 1024, 28},       {"k, v", 1024, 1024, 56}, {"o", 1024, 2048, 28},
                {"gate, up", 3072, 1024, 56}, {"down", 1024, 3072, 28}, {"lm_head", 151936, 1024, 1}};
  enum { NS = 6, NM = 3 };
  static const int64_t Ms[NM] = {1, 8, 64};
  bench b;
  memset(&b, 0, sizeof b);
  CK(cudaStreamCreate(&b.s));
  quant_policy_init(&b.pol, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  double bw = bench_copy_bw();
  char tb[128];
  gemm_small_fp8_tune t0 = gemm_small_fp8_tune_get();
  printf("bench_small_fp8 on %s (sm_%d%d); device copy %.0f GB/s (read + write); knobs %s\n\n", di.gpus[0].name,
         di.gpus[0].cc_major, di.gpus[0].cc_minor, bw * 1e-9, gemm_small_fp8_tune_str(&t0, tb, sizeof tb));
  printf("fp8-small = gemm_small_fp8_block_cuda (activation quantized in the kernel, FP32 out); old = linear_forward\n"
         "(quantizer + cuBLASLt fp8-block, BF16 out) + BF16→FP32 conversion; bf16-small = gemm_small_bf16_cuda on BF16\n"
         "weights. µs per call in CUDA graphs, weights from HBM; GB/s of fp8 weights (data + scales); far = elements\n"
         "where fp8-small and old differ by > 1 BF16 step (expect 0 or a few near-zero sums).\n\n");
  printf("| layer    | K→N          |   M | fp8-small µs | old µs | bf16-small µs | old/fp8-small | bf16/fp8-small | "
         "fp8-small GB/s | %% copy | slices | far |\n");
  printf("|----------|--------------|-----|--------------|--------|---------------|---------------|----------------|"
         "----------------|--------|--------|-----|\n");
  double step[NM][C_COUNT] = {{0}}, lm_us[NM][C_COUNT] = {{0}}, step_bytes = 0, lm_bytes = 0;
  for (int si = 0; si < NS; si++) {
    const int64_t N = shapes[si].N, K = shapes[si].K;
    const double wbytes = wq_bytes(N, K);
    if (si == NS - 1) lm_bytes = wbytes;
    else step_bytes += wbytes * shapes[si].per_step;
    b.N = N, b.K = K;
    b.copies = (int)((ROTATE_BYTES + (size_t)wbytes - 1) / (size_t)wbytes);
    b.copies_bf16 = (int)((ROTATE_BYTES + (size_t)(N * K) * 2 - 1) / ((size_t)(N * K) * 2));
    b.wq = calloc((size_t)b.copies, sizeof *b.wq);
    b.wb = calloc((size_t)b.copies_bf16, sizeof *b.wb);
    uint16_t *wh = malloc((size_t)(N * K) * 2);
    fill_bf16(wh, N * K, (uint64_t)(N + K));
    for (int i = 0; i < b.copies_bf16; i++) {
      CK(cudaMalloc((void **)&b.wb[i], (size_t)(N * K) * 2));
      CK(cudaMemcpy(b.wb[i], wh, (size_t)(N * K) * 2, cudaMemcpyHostToDevice));
    }
    free(wh);
    for (int i = 0; i < b.copies; i++) b.wq[i] = wq_make(b.wb[0], N, K);
    int slices;
    int64_t slice_k;
    gemm_small_fp8_plan(N, K, &slices, &slice_k);
    for (int mi = 0; mi < NM; mi++) {
      const int64_t M = Ms[mi];
      b.M = M;
      uint16_t *xh = malloc((size_t)(M * K) * 2);
      fill_bf16(xh, M * K, (uint64_t)(M * 7 + K));
      CK(cudaMalloc((void **)&b.x, (size_t)(M * K) * 2));
      CK(cudaMemcpy(b.x, xh, (size_t)(M * K) * 2, cudaMemcpyHostToDevice));
      free(xh);
      CK(cudaMalloc((void **)&b.y, (size_t)(M * N) * 4));
      CK(cudaMalloc((void **)&b.yb, (size_t)(M * N) * 2));
      const int rot = b.copies > b.copies_bf16 ? b.copies : b.copies_bf16;
      const int calls = 2 * rot < 20 ? 20 : 2 * rot > 400 ? 400 : 2 * rot;
      cudaGraphExec_t ge[C_COUNT];
      for (int c = 0; c < C_COUNT; c++) ge[c] = graph_of(&b, c, calls);
      double ms[C_COUNT], us[C_COUNT];
      time_graphs(b.s, ge, C_COUNT, ms);
      for (int c = 0; c < C_COUNT; c++) us[c] = ms[c] * 1e3 / calls;
      const int64_t far = far_apart(&b);
      const double gs = wbytes / (us[C_FP8] * 1e-6);
      printf("| %-8s | %5lld→%-6lld | %3lld | %12.2f | %6.2f | %13.2f | %12.2f× | %13.2f× | %14.0f | %5.1f%% | %6d | "
             "%3lld |\n",
             shapes[si].name, (long long)K, (long long)N, (long long)M, us[C_FP8], us[C_OLD], us[C_BF16],
             us[C_OLD] / us[C_FP8], us[C_BF16] / us[C_FP8], gs * 1e-9, 100 * gs / bw, slices, (long long)far);
      for (int c = 0; c < C_COUNT; c++) {
        if (si == NS - 1) lm_us[mi][c] = us[c];
        else step[mi][c] += us[c] * shapes[si].per_step;
      }
      cudaFree(b.x), cudaFree(b.y), cudaFree(b.yb);
    }
    for (int i = 0; i < b.copies; i++) wq_free(&b.wq[i]);
    for (int i = 0; i < b.copies_bf16; i++) cudaFree(b.wb[i]);
    free(b.wq), free(b.wb);
  }
  printf("\none decode step's GEMMs summed from the table (196 layer GEMMs, %.0f MB of fp8 weights = %.0f µs at the\n"
         "copy bandwidth; + lm_head: 197 GEMMs, %.0f MB = %.0f µs):\n\n",
         step_bytes * 1e-6, step_bytes / bw * 1e6, (step_bytes + lm_bytes) * 1e-6, (step_bytes + lm_bytes) / bw * 1e6);
  printf("| lm_head |   M | fp8-small µs | old µs | bf16-small µs | old/fp8-small | bf16/fp8-small | fp8-small %% of "
         "bound | old %% of bound |\n");
  printf("|---------|-----|--------------|--------|---------------|---------------|----------------|------------------"
         "----|----------------|\n");
  for (int lm = 0; lm < 2; lm++)
    for (int mi = 0; mi < NM; mi++) {
      double u[C_COUNT];
      for (int c = 0; c < C_COUNT; c++) u[c] = step[mi][c] + (lm ? lm_us[mi][c] : 0);
      const double bound = (step_bytes + (lm ? lm_bytes : 0)) / bw * 1e6;
      printf("| %-7s | %3lld | %12.0f | %6.0f | %13.0f | %12.2f× | %13.2f× | %19.1f%% | %13.1f%% |\n", lm ? "yes" : "no",
             (long long)Ms[mi], u[C_FP8], u[C_OLD], u[C_BF16], u[C_OLD] / u[C_FP8], u[C_BF16] / u[C_FP8],
             100 * bound / u[C_FP8], 100 * bound / u[C_OLD]);
    }
  whole_step(b.s, bw, Ms, NM);
  cudaStreamDestroy(b.s);
  gemm_small_fp8_release();
  linear_release();
  return 0;
}
#else
int main(void) {
  printf("bench_small_fp8: skipped: built without CUDA\n");
  return 0;
}
#endif
