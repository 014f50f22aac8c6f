/* bench_small_gemm.c — the decode step's GEMMs (issue #8): gemm_small_bf16_cuda
 * against a bare cuBLASLt BF16 call (the heuristic's first algorithm, BF16
 * output) and against the path mc_lin_fwd took before it (linear_forward, then
 * the BF16 → FP32 conversion), on the Qwen3-0.6B shapes at M = 1, 8, 64, 128.
 *
 * Each contender is captured into a CUDA graph of `calls` calls (the rollout
 * engine replays its decode step as a graph); the weights rotate over copies
 * of ≥ 256 MB together, so they stream from HBM as in a decode step, not from
 * the 50 MB L2. µs = median over REPEATS graph launches / calls, contenders
 * interleaved launch by launch. GB/s = weight bytes (N·K·2) per second; "%
 * copy" divides it by the device copy bandwidth measured in this run (bytes
 * read + written per second). Last, one decode step's 197 GEMMs (28 layers ×
 * q, k, v, o, gate, up, down + lm_head) summed per M, against the time their
 * weight bytes take at the copy bandwidth (the issue's goal: ≥ 40 %).
 *
 * Then the fused decode step: per layer one grouped launch for q, k, v
 * (gemm_small_bf16_group_cuda), o, one launch for gate + up + SwiGLU
 * (gemm_small_bf16_swiglu_cuda), down, plus lm_head — 113 launches instead of
 * 197 GEMMs + 28 SwiGLU kernels — on 28 layers of distinct weights (1.15 GB, so
 * every layer streams from HBM). Two measures: per launch kind with the method
 * above (graphs of 56 calls cycling over the 28 layers' weights, summed per step),
 * and whole steps captured as one graph each (fused vs unfused, interleaved),
 * which also counts the gaps between dependent launches. Last, the whole-step
 * graphs under knob settings (gemm_small_tune_set: RLRUN_SMALL_GEMM_BN, _REDUCE,
 * _CTAS, _MIN_STAGES), so that one run picks the defaults.
 *
 *   build/bench_small_gemm        markdown tables */
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

#if RLRUN_CUDA
#include <cublasLt.h>
#include <cuda_runtime_api.h>

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

enum { C_SMALL, C_LT, C_OLD, C_COUNT };

/* One (shape, M) of the benchmark: operands and the three contenders' state. */
typedef struct bench {
  int64_t M, N, K;
  int copies;
  uint16_t **w; /* [copies] device weights */
  uint16_t *x, *yb;
  float *y;
  cudaStream_t s;
  /* bare cuBLASLt */
  cublasLtHandle_t lt;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;
  void *ws;
  size_t ws_size;
  quant_policy pol;
} bench;

/* Random BF16 in [-1, 1) (xorshift; only finiteness matters for speed). */
static void fill_bf16(uint16_t *v, int64_t n, uint64_t seed) {
  uint64_t s = seed * 2654435761u + 88172645463325252ull;
  for (int64_t i = 0; i < n; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    v[i] = fmt_bf16_from_f32((float)((double)(s >> 11) * 0x1p-52 - 1.0));
  }
}

/* Device-to-device copy bandwidth (bytes/s: read + write counted) of 1 GiB. */
static double copy_bw(cudaStream_t s) {
  size_t n = (size_t)1 << 30;
  void *a = NULL, *b = NULL;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
  CK(cudaEventRecord(e0, s));
  for (int i = 0; i < 10; i++) CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
  CK(cudaEventRecord(e1, s));
  CK(cudaEventSynchronize(e1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  cudaFree(a), cudaFree(b);
  return 10.0 * 2 * (double)n / (ms * 1e-3);
}

/* The bare peer's plan for M rows (TN: cuBLASLt A = W [K×N col-major], B = X). */
static int lt_plan(bench *b) {
  CK(cublasLtMatmulDescCreate(&b->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
  CK(cublasLtMatmulDescSetAttribute(b->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT));
  CK(cublasLtMatmulDescSetAttribute(b->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN));
  CK(cublasLtMatrixLayoutCreate(&b->la, CUDA_R_16BF, (uint64_t)b->K, (uint64_t)b->N, b->K));
  CK(cublasLtMatrixLayoutCreate(&b->lb, CUDA_R_16BF, (uint64_t)b->K, (uint64_t)b->M, b->K));
  CK(cublasLtMatrixLayoutCreate(&b->lc, CUDA_R_16BF, (uint64_t)b->N, (uint64_t)b->M, b->N));
  cublasLtMatmulPreference_t pref;
  CK(cublasLtMatmulPreferenceCreate(&pref));
  size_t wsmax = (size_t)32 << 20;
  CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsmax, sizeof wsmax));
  cublasLtMatmulHeuristicResult_t res;
  int got = 0;
  int st = cublasLtMatmulAlgoGetHeuristic(b->lt, b->desc, b->la, b->lb, b->lc, b->lc, pref, 1, &res, &got);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st || got == 0) return 1;
  b->algo = res.algo, b->ws_size = res.workspaceSize;
  return 0;
}

static void lt_unplan(bench *b) {
  cublasLtMatrixLayoutDestroy(b->la);
  cublasLtMatrixLayoutDestroy(b->lb);
  cublasLtMatrixLayoutDestroy(b->lc);
  cublasLtMatmulDescDestroy(b->desc);
}

/* One call of contender c on weight copy i. */
static int run_one(bench *b, int c, int i) {
  rl_err e;
  int rc = 0;
  const uint16_t *w = b->w[i % b->copies];
  if (c == C_SMALL) {
    rc = gemm_small_bf16_cuda(b->y, b->x, w, b->M, b->N, b->K, b->s, &e);
  } else if (c == C_LT) {
    const float one = 1.0f, zero = 0.0f;
    return (int)cublasLtMatmul(b->lt, b->desc, &one, w, b->la, b->x, b->lb, &zero, b->yb, b->lc, b->yb, b->lc,
                               &b->algo, b->ws, b->ws_size, b->s);
  } else {
    qtensor wq = qtensor_bf16(w, b->N, b->K, 1);
    linear_opts lo = {b->s, NULL};
    rc = linear_forward_ex(b->yb, b->x, b->M, &wq, &b->pol, &lo, &e);
    if (!rc) rc = ops_f32_from_bf16_cuda(b->y, b->yb, (size_t)(b->M * b->N), b->s, &e);
  }
  if (rc) fprintf(stderr, "bench_small_gemm: %s\n", e.msg);
  return rc;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* µs per call of each contender: graphs of `calls` calls, median of REPEATS
 * launches, contenders interleaved. */
static void time_all(bench *b, int calls, double us[C_COUNT]) {
  cudaGraphExec_t ge[C_COUNT];
  for (int c = 0; c < C_COUNT; c++) {
    for (int i = 0; i < b->copies && i < 4; i++) CK(run_one(b, c, i)); /* plans, workspaces */
    CK(cudaStreamSynchronize(b->s));
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(b->s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < calls; i++) CK(run_one(b, c, i));
    CK(cudaStreamEndCapture(b->s, &g));
    CK(cudaGraphInstantiate(&ge[c], g, 0));
    cudaGraphDestroy(g);
    CK(cudaGraphLaunch(ge[c], b->s)); /* warm-up */
  }
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  float t[C_COUNT][REPEATS];
  for (int r = 0; r < REPEATS; r++)
    for (int c = 0; c < C_COUNT; c++) {
      CK(cudaEventRecord(e0, b->s));
      CK(cudaGraphLaunch(ge[c], b->s));
      CK(cudaEventRecord(e1, b->s));
      CK(cudaEventSynchronize(e1));
      CK(cudaEventElapsedTime(&t[c][r], e0, e1));
    }
  for (int c = 0; c < C_COUNT; c++) {
    qsort(t[c], REPEATS, sizeof t[c][0], cmp_float);
    us[c] = t[c][REPEATS / 2] * 1e3 / calls;
    cudaGraphExecDestroy(ge[c]);
  }
  cudaEventDestroy(e0), cudaEventDestroy(e1);
}

/* Elements where gemm_small's FP32 output and cuBLASLt's BF16 output differ by
 * more than one BF16 step (a sanity check that the timed kernels compute the
 * same product; gemm_gpu_test holds the real checks). */
static int64_t far_apart(bench *b) {
  int64_t n = b->M * b->N, far = 0;
  CK(run_one(b, C_SMALL, 0));
  CK(run_one(b, C_LT, 0));
  CK(cudaStreamSynchronize(b->s));
  float *y = malloc((size_t)n * 4);
  uint16_t *yb = malloc((size_t)n * 2);
  CK(cudaMemcpy(y, b->y, (size_t)n * 4, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(yb, b->yb, (size_t)n * 2, cudaMemcpyDeviceToHost));
  for (int64_t i = 0; i < n; i++) {
    uint16_t h = fmt_bf16_from_f32(y[i]);
    int32_t o1 = (h & 0x8000) ? -(int32_t)(h & 0x7fff) : (int32_t)h;
    int32_t o2 = (yb[i] & 0x8000) ? -(int32_t)(yb[i] & 0x7fff) : (int32_t)yb[i];
    far += abs(o1 - o2) > 1;
  }
  free(y), free(yb);
  return far;
}

/* ---------------------------------------------------------------- the fused decode step */

enum { NL = 28, HID = 1024, QN = 2048, KVN = 1024, FFN = 3072, VOCAB = 151936, FMAX_M = 128 };
enum { P_QKV, P_O, P_SWIGLU, P_DOWN, P_LM, P_COUNT };

/* One Qwen3-0.6B-shaped decode step's weights and activations (M rows). */
typedef struct dstep {
  int64_t M;
  uint16_t *wqkv[NL], *wo[NL], *wgu[NL], *wd[NL], *wlm; /* [4096][1024], [1024][2048], [2·3072][1024], [1024][3072] */
  uint16_t *x, *act;                                   /* [M][3072] BF16 */
  float *yq, *yk, *yv, *yo, *g, *u, *ydn, *logits;
  cudaStream_t s;
} dstep;

/* Launch kind `part` of layer l, fused (1) or as the unfused calls (0). */
static int dstep_part(dstep *d, int part, int l, int fused) {
  rl_err e;
  int rc = 0;
  const int64_t M = d->M;
  switch (part) {
    case P_QKV:
      if (fused) {
        gemm_small_seg seg[3] = {{d->yq, d->wqkv[l], QN},
                                 {d->yk, d->wqkv[l] + (size_t)QN * HID, KVN},
                                 {d->yv, d->wqkv[l] + (size_t)(QN + KVN) * HID, KVN}};
        rc = gemm_small_bf16_group_cuda(seg, 3, d->x, M, HID, d->s, &e);
      } else {
        rc = gemm_small_bf16_cuda(d->yq, d->x, d->wqkv[l], M, QN, HID, d->s, &e);
        if (!rc) rc = gemm_small_bf16_cuda(d->yk, d->x, d->wqkv[l] + (size_t)QN * HID, M, KVN, HID, d->s, &e);
        if (!rc) rc = gemm_small_bf16_cuda(d->yv, d->x, d->wqkv[l] + (size_t)(QN + KVN) * HID, M, KVN, HID, d->s, &e);
      }
      break;
    case P_O: rc = gemm_small_bf16_cuda(d->yo, d->x, d->wo[l], M, HID, QN, d->s, &e); break;
    case P_SWIGLU:
      if (fused) {
        rc = gemm_small_bf16_swiglu_cuda(d->act, d->x, d->wgu[l], d->wgu[l] + (size_t)FFN * HID, M, FFN, HID, d->s, &e);
      } else {
        rc = gemm_small_bf16_cuda(d->g, d->x, d->wgu[l], M, FFN, HID, d->s, &e);
        if (!rc) rc = gemm_small_bf16_cuda(d->u, d->x, d->wgu[l] + (size_t)FFN * HID, M, FFN, HID, d->s, &e);
        if (!rc) rc = ops_swiglu_forward_cuda(NULL, d->act, d->g, d->u, (int)M, FFN, FFN, d->s, &e);
      }
      break;
    case P_DOWN: rc = gemm_small_bf16_cuda(d->ydn, d->act, d->wd[l], M, HID, FFN, d->s, &e); break;
    default: rc = gemm_small_bf16_cuda(d->logits, d->x, d->wlm, M, VOCAB, HID, d->s, &e); break;
  }
  if (rc) fprintf(stderr, "bench_small_gemm (fused step): %s\n", e.msg);
  return rc;
}

/* What one graph holds: a whole step (part < 0) or `calls` launches of one kind
 * cycling over the layers. */
static int dstep_issue(dstep *d, int part, int fused, int calls) {
  if (part < 0) {
    for (int l = 0; l < NL; l++)
      for (int p = P_QKV; p <= P_DOWN; p++)
        if (dstep_part(d, p, l, fused)) return 1;
    return dstep_part(d, P_LM, 0, fused);
  }
  for (int i = 0; i < calls; i++)
    if (dstep_part(d, part, i % NL, fused)) return 1;
  return 0;
}

/* The graph of dstep_issue, after one eager run (workspaces, kernel attributes). */
static cudaGraphExec_t dstep_graph(dstep *d, int part, int fused, int calls) {
  CK(dstep_issue(d, part, fused, calls));
  CK(cudaStreamSynchronize(d->s));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(d->s, cudaStreamCaptureModeThreadLocal));
  CK(dstep_issue(d, part, fused, calls));
  CK(cudaStreamEndCapture(d->s, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  cudaGraphDestroy(g);
  CK(cudaGraphLaunch(ge, d->s)); /* warm-up */
  return ge;
}

/* Median ms of each of n graphs over REPEATS launches, interleaved; the graphs are destroyed. */
static void time_graphs(cudaStream_t s, cudaGraphExec_t *ge, int n, double *ms) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  float t[4][REPEATS];
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

/* Whole-step µs, fused and unfused, at the knobs in force. */
static void dstep_time(dstep *d, double us[2]) {
  cudaGraphExec_t ge[2] = {dstep_graph(d, -1, 1, 0), dstep_graph(d, -1, 0, 0)};
  double ms[2];
  time_graphs(d->s, ge, 2, ms);
  us[0] = ms[0] * 1e3, us[1] = ms[1] * 1e3;
}

/* The fused-step tables (see the top of the file); unfused per-shape µs from the
 * first table: small_us[shape][M], step_small = step[M][C_SMALL]. */
static void fused_step(cudaStream_t s, double bw, double step_bytes, const int64_t *Ms, double small_us[][4],
                       double step[][C_COUNT]) {
  enum { NM = 4 };
  dstep d;
  memset(&d, 0, sizeof d);
  d.s = s;
  const size_t lw = (size_t)FFN * HID * 2; /* the largest layer matrix (elements), gate + up */
  uint16_t *wh = malloc(lw * 2);
  fill_bf16(wh, (int64_t)lw, 7);
  for (int l = 0; l < NL; l++) { /* the same values in every layer: only the bytes' addresses matter here */
    CK(cudaMalloc((void **)&d.wqkv[l], (size_t)(QN + 2 * KVN) * HID * 2));
    CK(cudaMalloc((void **)&d.wo[l], (size_t)HID * QN * 2));
    CK(cudaMalloc((void **)&d.wgu[l], lw * 2));
    CK(cudaMalloc((void **)&d.wd[l], (size_t)HID * FFN * 2));
    CK(cudaMemcpy(d.wqkv[l], wh, (size_t)(QN + 2 * KVN) * HID * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.wo[l], wh, (size_t)HID * QN * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.wgu[l], wh, lw * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(d.wd[l], wh, (size_t)HID * FFN * 2, cudaMemcpyHostToDevice));
  }
  CK(cudaMalloc((void **)&d.wlm, (size_t)VOCAB * HID * 2));
  for (size_t o = 0; o < (size_t)VOCAB * HID; o += lw) {
    size_t n = (size_t)VOCAB * HID - o < lw ? (size_t)VOCAB * HID - o : lw;
    CK(cudaMemcpy(d.wlm + o, wh, n * 2, cudaMemcpyHostToDevice));
  }
  fill_bf16(wh, (int64_t)FMAX_M * FFN, 8);
  CK(cudaMalloc((void **)&d.x, (size_t)FMAX_M * FFN * 2));
  CK(cudaMalloc((void **)&d.act, (size_t)FMAX_M * FFN * 2));
  CK(cudaMemcpy(d.x, wh, (size_t)FMAX_M * FFN * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d.act, wh, (size_t)FMAX_M * FFN * 2, cudaMemcpyHostToDevice));
  free(wh);
  float **ys[] = {&d.yq, &d.yk, &d.yv, &d.yo, &d.g, &d.u, &d.ydn};
  for (int i = 0; i < 7; i++) CK(cudaMalloc((void **)ys[i], (size_t)FMAX_M * FFN * 4));
  CK(cudaMalloc((void **)&d.logits, (size_t)FMAX_M * VOCAB * 4));

  static const struct {
    const char *name, *shape;
    double bytes; /* weight bytes of one launch */
    int per_step;
  } kinds[P_COUNT] = {{"qkv", "1024→2048+1024+1024", (double)(QN + 2 * KVN) * HID * 2, NL},
                      {"o", "2048→1024", (double)HID * QN * 2, NL},
                      {"gate+up+swiglu", "1024→2×3072", (double)2 * FFN * HID * 2, NL},
                      {"down", "3072→1024", (double)HID * FFN * 2, NL},
                      {"lm_head", "1024→151936", (double)VOCAB * HID * 2, 1}};
  char tb[128];
  gemm_small_tune t0 = gemm_small_tune_get();
  printf("\nfused decode step: one launch for q, k, v (gemm_small_bf16_group_cuda), one for gate + up + SwiGLU\n"
         "(gemm_small_bf16_swiglu_cuda): 113 launches a step against 197 GEMMs + 28 SwiGLU kernels; knobs %s.\n"
         "fused µs per launch (graphs of 56 calls over 28 layers' weights; lm_head 4 calls); unfused µs = the sum of\n"
         "its parts from the first table (the SwiGLU kernel not included there).\n\n",
         gemm_small_tune_str(&t0, tb, sizeof tb));
  printf("| launch         | K→N                 |   M | fused µs | unfused µs | unfused/fused | fused GB/s | fused %% copy | "
         "slices |\n");
  printf("|----------------|---------------------|-----|----------|------------|---------------|------------|-------------|"
         "--------|\n");
  double fsum[NM] = {0};
  for (int p = 0; p < P_COUNT; p++)
    for (int mi = 0; mi < NM; mi++) {
      d.M = Ms[mi];
      int calls = p == P_LM ? 4 : 2 * NL;
      cudaGraphExec_t ge = dstep_graph(&d, p, 1, calls);
      double ms;
      time_graphs(s, &ge, 1, &ms);
      double us = ms * 1e3 / calls, parts = p == P_QKV      ? small_us[0][mi] + 2 * small_us[1][mi]
                                            : p == P_O      ? small_us[2][mi]
                                            : p == P_SWIGLU ? 2 * small_us[3][mi]
                                            : p == P_DOWN   ? small_us[4][mi]
                                                            : small_us[5][mi];
      int64_t rows = p == P_QKV ? QN + 2 * KVN : p == P_O ? HID : p == P_SWIGLU ? 2 * FFN : p == P_DOWN ? HID : VOCAB;
      int64_t K = p == P_O ? QN : p == P_DOWN ? FFN : HID;
      int slices;
      int64_t sk;
      gemm_small_plan(rows, K, &slices, &sk);
      double gbs = kinds[p].bytes / (us * 1e-6);
      printf("| %-14s | %-19s | %3lld | %8.2f | %10.2f | %12.2f× | %10.0f | %10.1f%% | %6d |\n", kinds[p].name,
             kinds[p].shape, (long long)d.M, us, parts, parts / us, gbs * 1e-9, 100 * gbs / bw, slices);
      fsum[mi] += us * kinds[p].per_step;
    }
  double bound_us = step_bytes / bw * 1e6;
  printf("\none decode step, fused (113 launches) against unfused (197 GEMMs; whole-step graphs: + 28 SwiGLU kernels),\n"
         "bound = %.0f MB of weights at the copy bandwidth = %.0f µs:\n\n", step_bytes * 1e-6, bound_us);
  printf("|   M | fused sum µs | unfused sum µs | speed-up | fused %% of bound | fused step-graph µs | unfused step-graph µs "
         "| speed-up | fused graph %% of bound |\n");
  printf("|-----|--------------|----------------|----------|------------------|---------------------|-----------------------"
         "|----------|------------------------|\n");
  for (int mi = 0; mi < NM; mi++) {
    d.M = Ms[mi];
    double g[2];
    dstep_time(&d, g);
    printf("| %3lld | %12.0f | %14.0f | %7.2f× | %15.1f%% | %19.0f | %21.0f | %7.2f× | %21.1f%% |\n", (long long)d.M,
           fsum[mi], step[mi][C_SMALL], step[mi][C_SMALL] / fsum[mi], 100 * bound_us / fsum[mi], g[0], g[1],
           g[1] / g[0], 100 * bound_us / g[0]);
  }
  /* knob sweep on the whole-step graphs */
  static const int sweep[][5] = {/* ctas, min_stages, bn, reduce, pdl (-1: keep the environment's) */
                                 {-1, -1, -1, -1, -1}, {-1, -1, 32, -1, -1}, {-1, -1, 64, -1, -1},
                                 {-1, -1, -1, GEMM_SMALL_REDUCE_GLOBAL, -1}, {132, -1, -1, -1, -1}, {198, -1, -1, -1, -1},
                                 {264, -1, -1, -1, -1}, {528, -1, -1, -1, -1},
                                 {-1, 1, -1, -1, -1}, {528, 1, -1, -1, -1}, {-1, 3, -1, -1, -1}, {-1, -1, -1, -1, 1},
                                 {132, -1, -1, -1, 1}, {132, -1, 64, -1, 1}, {-1, -1, -1, -1, 0}};
  const int nsw = (int)(sizeof sweep / sizeof sweep[0]);
  printf("\nwhole-step graphs (µs) by knobs (ctas and min_stages change the K split, so the sums; bn, reduce and pdl do not):\n\n");
  printf("| knobs                                      | fused M=1 | fused M=8 | fused M=64 | fused M=128 | unfused M=64 |\n");
  printf("|--------------------------------------------|-----------|-----------|------------|-------------|--------------|\n");
  for (int k = 0; k < nsw; k++) {
    gemm_small_tune t = t0;
    if (sweep[k][0] >= 0) t.ctas = sweep[k][0];
    if (sweep[k][1] >= 0) t.min_stages = sweep[k][1];
    if (sweep[k][2] >= 0) t.bn = sweep[k][2];
    if (sweep[k][3] >= 0) t.reduce = sweep[k][3];
    if (sweep[k][4] >= 0) t.pdl = sweep[k][4];
    gemm_small_tune_set(&t);
    t = gemm_small_tune_get();
    double f[NM], u64 = 0;
    for (int mi = 0; mi < NM; mi++) {
      d.M = Ms[mi];
      double g[2];
      dstep_time(&d, g);
      f[mi] = g[0];
      if (Ms[mi] == 64) u64 = g[1];
    }
    printf("| %-42s | %9.0f | %9.0f | %10.0f | %11.0f | %12.0f |\n", gemm_small_tune_str(&t, tb, sizeof tb), f[0], f[1],
           f[2], f[3], u64);
  }
  gemm_small_tune_set(NULL);
  for (int l = 0; l < NL; l++) cudaFree(d.wqkv[l]), cudaFree(d.wo[l]), cudaFree(d.wgu[l]), cudaFree(d.wd[l]);
  cudaFree(d.wlm), cudaFree(d.x), cudaFree(d.act), cudaFree(d.logits);
  for (int i = 0; i < 7; i++) cudaFree(*ys[i]);
}

int main(void) {
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    printf("bench_small_gemm: skipped: %s\n", di.status);
    return 0;
  }
  static const struct {
    const char *name;
    int64_t N, K;
    int per_step; /* GEMMs of this shape in one decode step of Qwen3-0.6B */
  } shapes[] = {{"q", 2048, 1024, 28},     {"k, v", 1024, 1024, 56}, {"o", 1024, 2048, 28},
                {"gate, up", 3072, 1024, 56}, {"down", 1024, 3072, 28}, {"lm_head", 151936, 1024, 1}};
  enum { NS = 6, NM = 4 };
  static const int64_t Ms[NM] = {1, 8, 64, 128};
  bench b;
  memset(&b, 0, sizeof b);
  CK(cudaStreamCreate(&b.s));
  CK(cublasLtCreate(&b.lt));
  CK(cudaMalloc(&b.ws, (size_t)32 << 20));
  quant_policy_init(&b.pol, QFMT_BF16, QFMT_BF16);
  double bw = copy_bw(b.s);
  printf("bench_small_gemm on %s (sm_%d%d), cuBLASLt %zu; device copy %.0f GB/s (read + write)\n\n", di.gpus[0].name,
         di.gpus[0].cc_major, di.gpus[0].cc_minor, di.cublaslt, bw * 1e-9);
  printf("small = gemm_small_bf16_cuda (FP32 out); cuBLASLt = bare BF16 call (BF16 out); old = linear_forward +\n"
         "BF16→FP32 conversion (mc_lin_fwd before); µs per call in CUDA graphs, weights from HBM; GB/s of weights;\n"
         "far = elements where small and cuBLASLt differ by > 1 BF16 step (expect 0 or a few near-zero sums).\n\n");
  printf("| layer    | K→N          |   M | small µs | cuBLASLt µs | old µs | small GB/s | cuBLASLt GB/s | small %% copy | "
         "small/cuBLASLt | slices | far |\n");
  printf("|----------|--------------|-----|----------|-------------|--------|------------|---------------|-------------|"
         "----------------|--------|-----|\n");
  double step[NM][C_COUNT] = {{0}}, step_bytes = 0, small_us[NS][NM] = {{0}};
  for (int si = 0; si < NS; si++) {
    int64_t N = shapes[si].N, K = shapes[si].K;
    size_t wb = (size_t)(N * K) * 2;
    step_bytes += (double)wb * shapes[si].per_step;
    b.N = N, b.K = K;
    b.copies = (int)((ROTATE_BYTES + wb - 1) / wb);
    b.w = calloc((size_t)b.copies, sizeof *b.w);
    uint16_t *wh = malloc(wb);
    fill_bf16(wh, N * K, (uint64_t)(N + K));
    for (int i = 0; i < b.copies; i++) {
      CK(cudaMalloc((void **)&b.w[i], wb));
      CK(cudaMemcpy(b.w[i], wh, wb, cudaMemcpyHostToDevice));
    }
    free(wh);
    int slices;
    int64_t slice_k;
    gemm_small_plan(N, K, &slices, &slice_k);
    for (int mi = 0; mi < NM; mi++) {
      int64_t M = Ms[mi];
      b.M = M;
      uint16_t *xh = malloc((size_t)(M * K) * 2);
      fill_bf16(xh, M * K, (uint64_t)(M * 7 + K));
      CK(cudaMalloc((void **)&b.x, (size_t)(M * K) * 2));
      CK(cudaMemcpy(b.x, xh, (size_t)(M * K) * 2, cudaMemcpyHostToDevice));
      free(xh);
      CK(cudaMalloc((void **)&b.y, (size_t)(M * N) * 4));
      CK(cudaMalloc((void **)&b.yb, (size_t)(M * N) * 2));
      if (lt_plan(&b)) {
        printf("| %-8s | %5lld→%-6lld | %3lld | cuBLASLt has no algorithm |\n", shapes[si].name, (long long)K,
               (long long)N, (long long)M);
      } else {
        int calls = 2 * b.copies < 20 ? 20 : 2 * b.copies > 400 ? 400 : 2 * b.copies;
        double us[C_COUNT];
        time_all(&b, calls, us);
        int64_t far = far_apart(&b);
        double gs = (double)wb / (us[C_SMALL] * 1e-6), gl = (double)wb / (us[C_LT] * 1e-6);
        printf("| %-8s | %5lld→%-6lld | %3lld | %8.2f | %11.2f | %6.2f | %10.0f | %13.0f | %10.1f%% | %13.2f× | %6d | "
               "%3lld |\n",
               shapes[si].name, (long long)K, (long long)N, (long long)M, us[C_SMALL], us[C_LT], us[C_OLD], gs * 1e-9,
               gl * 1e-9, 100 * gs / bw, us[C_LT] / us[C_SMALL], slices, (long long)far);
        for (int c = 0; c < C_COUNT; c++) step[mi][c] += us[c] * shapes[si].per_step;
        small_us[si][mi] = us[C_SMALL];
        lt_unplan(&b);
      }
      cudaFree(b.x), cudaFree(b.y), cudaFree(b.yb);
    }
    for (int i = 0; i < b.copies; i++) cudaFree(b.w[i]);
    free(b.w);
  }
  double bound_us = step_bytes / bw * 1e6;
  printf("\none decode step's GEMMs (197 calls, %.0f MB of weights; at the copy bandwidth %.0f µs):\n\n",
         step_bytes * 1e-6, bound_us);
  printf("|   M | small µs | cuBLASLt µs | old µs | small %% of bound | cuBLASLt %% of bound | old %% of bound |\n");
  printf("|-----|----------|-------------|--------|------------------|---------------------|----------------|\n");
  for (int mi = 0; mi < NM; mi++)
    printf("| %3lld | %8.0f | %11.0f | %6.0f | %15.1f%% | %18.1f%% | %13.1f%% |\n", (long long)Ms[mi],
           step[mi][C_SMALL], step[mi][C_LT], step[mi][C_OLD], 100 * bound_us / step[mi][C_SMALL],
           100 * bound_us / step[mi][C_LT], 100 * bound_us / step[mi][C_OLD]);
  cudaFree(b.ws);
  cublasLtDestroy(b.lt);
  fused_step(b.s, bw, step_bytes, Ms, small_us, step);
  cudaStreamDestroy(b.s);
  linear_release();
  return 0;
}
#else
int main(void) {
  printf("bench_small_gemm: skipped: built without CUDA\n");
  return 0;
}
#endif
