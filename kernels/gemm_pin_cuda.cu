/* gemm_pin_cuda.cu — the pinned-algorithm side of gemm_cuda.cu: this file holds
 * the M buckets, the checking and timing of candidate algorithms on synthetic
 * operands, and the fill/compare kernels they use.
 *
 * Pinned algorithms (gemm_opts.pin_algo): per (N, K, kind, …) family the
 * algorithm cuBLASLt picks for M = GEMM_PIN_M with split-K excluded is the
 * reference (measured bit-identical rows for every M on the H200, FORMATS.md).
 * Smaller batches fall in power-of-two M buckets (≤ 64, ≤ 128, … ≤ 4096); for
 * each, once, cuBLASLt's first no-split-K candidates for the bucket's M are run
 * on random synthetic operands (same K): those whose 1024-row output is bitwise
 * the reference's are timed at the bucket's M with the reference, and the
 * fastest is kept. A row's result thus still does not depend on the batch, while small
 * batches need not run a tile shape made for 8192 rows. Host side is single-threaded: one thread drives the GEMMs. */
#include "kernels/gemm_cuda_int.h"

/* ---------------------------------------------------------------- kernels */

/* Synthetic operands of the pin verification, element i of n: what = 0 BF16 in
 * [-1, 1), 1 finite E4M3 bytes (all magnitudes), 2 FP32 ones (scales). */
__global__ void gemm_fill_kernel(uint8_t *p, int64_t n, int what, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    uint32_t h = (uint32_t)i * 2654435761u ^ (uint32_t)(i >> 32) ^ seed * 0x9e3779b9u;
    h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
    if (what == 0) ((uint16_t *)p)[i] = fmt_bf16_from_f32((float)(h >> 8) * 0x1p-23f - 1.0f);
    else if (what == 1) p[i] = (uint8_t)((h >> 24 & 0x7F) == 0x7F ? (h >> 24) ^ 1 : h >> 24);
    else ((float *)p)[i] = 1.0f;
  }
}

/* *diff = 1 when the n words of a and b differ anywhere. */
__global__ void gemm_cmp_kernel(const uint32_t *a, const uint32_t *b, int64_t n, int *diff) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    if (a[i] != b[i]) *diff = 1;
}

/* Pin bucket of a batch of m rows; the last one runs the reference algorithm. */
static int pin_bucket(int64_t m) {
  int b = 0;
  while (b < GEMM_PIN_BUCKETS - 1 && m > ((int64_t)64 << b)) b++;
  return b;
}
static const int64_t pin_bucket_m[GEMM_PIN_BUCKETS] = {64, 128, 256, 512, 1024, 2048, 4096, GEMM_PIN_M};

/* Synthetic operands for choosing a bucket's algorithm (k's kind, same K):
 * x [mx][K], w [nt][K] random (mx ≥ every M run on them), FP32 ones as scales,
 * and an output area of ysz bytes followed by an int flag. Stream 0, synchronous. */
typedef struct pin_synth { uint8_t *x, *w, *y; float *sc; int *flag; int64_t nt, mx; } pin_synth;
static int pin_synth_make(const gemm_key *k, size_t ysz, pin_synth *ps, rl_err *e) {
  int dev = k->dev, fp8 = k->kind == GK_FP8_BLOCK;
  int64_t M = ps->mx, K = k->k, kb = quant_cdiv(K, 128), nt = ps->nt;
  size_t esz = fp8 ? 1 : 2;
  int64_t nsc = quant_cdiv(nt, 128) * quant_roundup(kb, 4);
  if (nsc < kb * M) nsc = kb * M;
  ps->x = (uint8_t *)gemm_scratch(dev, GS_VX, (size_t)(M * K) * esz, e);
  ps->w = ps->x ? (uint8_t *)gemm_scratch(dev, GS_VW, (size_t)(nt * K) * esz, e) : NULL;
  ps->sc = ps->w ? (float *)gemm_scratch(dev, GS_VS, (size_t)nsc * 4, e) : NULL;
  ps->y = ps->sc ? (uint8_t *)gemm_scratch(dev, GS_VY, ysz + 16, e) : NULL;
  if (!ps->y) return RL_EXIT_FAIL;
  ps->flag = (int *)(ps->y + ysz);
  gemm_fill_kernel<<<gemm_grid(M * K), 256>>>(ps->x, M * K, fp8, 1u);
  gemm_fill_kernel<<<gemm_grid(nt * K), 256>>>(ps->w, nt * K, fp8, 2u);
  gemm_fill_kernel<<<gemm_grid(nsc), 256>>>((uint8_t *)ps->sc, nsc, 2, 0u);
  if (launch_ok("gemm_fill_kernel", e)) return RL_EXIT_FAIL;
  return 0;
}

/* Run algo on the synthetic operands: m rows, n rows of w, output at y; the
 * scale pointers of desc are pointed at the ones. */
static int pin_run(const gemm_key *k, cublasLtMatmulDesc_t desc, const cublasLtMatmulAlgo_t *algo, const pin_synth *ps,
                   int64_t m, int64_t n, void *y, int reps, rl_err *e) {
  gemm_key vk = *k;
  vk.n = n;
  cublasLtMatrixLayout_t la, lb, lc;
  if (plan_layouts(&vk, m, &la, &lb, &lc, e)) return RL_EXIT_FAIL;
  cublasLtMatmulHeuristicResult_t r;
  memset(&r, 0, sizeof r);
  int rc = 0, dev = k->dev;
  if (cublasLtMatmulAlgoCheck(gemm_G.lt[dev], desc, la, lb, lc, lc, algo, &r) != CUBLAS_STATUS_SUCCESS ||
      r.workspaceSize > GEMM_WS_BYTES)
    rc = -1; /* does not run at this shape */
  if (!rc && k->kind == GK_FP8_BLOCK &&
      (lt_ok(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &ps->sc, sizeof ps->sc), "set A_SCALE_POINTER", e) ||
       lt_ok(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &ps->sc, sizeof ps->sc), "set B_SCALE_POINTER", e)))
    rc = RL_EXIT_FAIL;
  const float one = 1.0f, zero = 0.0f;
  const void *al = k->alpha_dev ? (const void *)gemm_G.consts[dev] : &one, *be = k->alpha_dev ? (const void *)(gemm_G.consts[dev] + 1) : &zero;
  for (int i = 0; i < reps && !rc; i++)
    rc = lt_ok(cublasLtMatmul(gemm_G.lt[dev], desc, al, ps->w, la, ps->x, lb, be, y, lc, y, lc, algo, gemm_G.ws[dev],
                              r.workspaceSize, cudaStreamPerThread), "Matmul (pin choice)", e);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  return rc;
}

/* *same = 1 when cand gives bitwise ref's output on GEMM_PIN_VERIFY_M synthetic
 * rows (N capped at GEMM_PIN_VERIFY_N: the per-element order does not depend on N). */
static int pin_verify(const gemm_key *k, cublasLtMatmulDesc_t desc, const cublasLtMatmulAlgo_t *ref,
                      const cublasLtMatmulAlgo_t *cand, const pin_synth *ps, int *same, rl_err *e) {
  int64_t n = k->n < GEMM_PIN_VERIFY_N ? k->n : GEMM_PIN_VERIFY_N;
  size_t ysz = (size_t)(GEMM_PIN_VERIFY_M * n) * (k->out_f32 ? 4 : 2);
  int diff = 1;
  *same = 0;
  int rc = cu_ok(cudaMemset(ps->flag, 0, sizeof(int)), "cudaMemset (pin check)", e) ? RL_EXIT_FAIL : 0;
  if (!rc) rc = pin_run(k, desc, ref, ps, GEMM_PIN_VERIFY_M, n, ps->y, 1, e);
  if (!rc) rc = pin_run(k, desc, cand, ps, GEMM_PIN_VERIFY_M, n, ps->y + ysz, 1, e);
  if (rc < 0) return 0;
  if (rc) return rc;
  gemm_cmp_kernel<<<gemm_grid((int64_t)(ysz / 4)), 256>>>((const uint32_t *)ps->y, (const uint32_t *)(ps->y + ysz), (int64_t)(ysz / 4), ps->flag);
  if (launch_ok("gemm_cmp_kernel", e) || cu_ok(cudaMemcpy(&diff, ps->flag, sizeof diff, cudaMemcpyDeviceToHost), "cudaMemcpy (pin check)", e))
    return RL_EXIT_FAIL;
  *same = !diff;
  return 0;
}

/* Choose the algorithm of bucket b of family pin p: among the reference and
 * cuBLASLt's no-split-K candidates for the bucket's M that give bitwise the
 * reference's output (pin_verify), the fastest at that M: the contenders are
 * timed interleaved, 5 rounds of 20 calls each, best round kept. */
static int pin_choose(gemm_pin *p, const gemm_key *k, cublasLtMatmulDesc_t desc, int b, rl_err *e) {
  p->chosen[b] = 2;
  if (k->kind != GK_BF16 && k->kind != GK_FP8_BLOCK) return 0; /* others: the reference only */
  int64_t mb = pin_bucket_m[b];
  pin_synth ps;
  memset(&ps, 0, sizeof ps);
  ps.nt = k->n < 16384 ? k->n : 16384; /* timing N (lm_head-sized N: capped) */
  ps.mx = mb > GEMM_PIN_VERIFY_M ? mb : GEMM_PIN_VERIFY_M;
  int64_t nv = k->n < GEMM_PIN_VERIFY_N ? k->n : GEMM_PIN_VERIFY_N;
  size_t osz = k->out_f32 ? 4 : 2, ysz = (size_t)(2 * GEMM_PIN_VERIFY_M * nv) * osz;
  if ((size_t)(mb * ps.nt) * osz > ysz) ysz = (size_t)(mb * ps.nt) * osz;
  cublasLtMatmulAlgo_t al[GEMM_PIN_TRIES + 1];
  int n = 1;
  al[0] = p->algo;
  int rc = pin_synth_make(k, ysz, &ps, e);
  cublasLtMatrixLayout_t la, lb, lc;
  if (rc || plan_layouts(k, mb, &la, &lb, &lc, e)) return rc ? rc : RL_EXIT_FAIL;
  for (int i = 0; i < GEMM_PIN_TRIES && !rc; i++) {
    size_t ws;
    rl_err ignore;
    int same = 0;
    if (plan_heuristic(k->dev, k, desc, la, lb, lc, 1, i, mb, &al[n], &ws, &ignore)) break;
    if (!memcmp(&al[n], &p->algo, sizeof al[n])) continue;
    rc = pin_verify(k, desc, &p->algo, &al[n], &ps, &same, e);
    if (!rc && same) n++;
  }
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  if (rc || n == 1) return rc;
  float best[GEMM_PIN_TRIES + 1];
  cudaEvent_t ev[2] = {NULL, NULL};
  if (cu_ok(cudaEventCreate(&ev[0]), "cudaEventCreate", e) || cu_ok(cudaEventCreate(&ev[1]), "cudaEventCreate", e))
    rc = RL_EXIT_FAIL;
  for (int i = 0; i < n && !rc; i++) {
    best[i] = INFINITY;
    int r = pin_run(k, desc, &al[i], &ps, mb, ps.nt, ps.y, 3, e); /* warm-up; -1: does not run at mb */
    if (r > 0) rc = r;
    if (r < 0) best[i] = -1.0f;
  }
  for (int round = 0; round < 5 && !rc; round++)
    for (int i = 0; i < n && !rc; i++) {
      float ms = 0;
      if (best[i] < 0) continue;
      if (cu_ok(cudaEventRecord(ev[0], 0), "cudaEventRecord", e) || pin_run(k, desc, &al[i], &ps, mb, ps.nt, ps.y, 20, e) ||
          cu_ok(cudaEventRecord(ev[1], 0), "cudaEventRecord", e) || cu_ok(cudaEventSynchronize(ev[1]), "cudaEventSynchronize", e) ||
          cu_ok(cudaEventElapsedTime(&ms, ev[0], ev[1]), "cudaEventElapsedTime", e))
        rc = RL_EXIT_FAIL;
      else if (ms < best[i])
        best[i] = ms;
    }
  for (int i = 0; i < 2; i++)
    if (ev[i]) cudaEventDestroy(ev[i]);
  int win = 0;
  for (int i = 1; i < n; i++)
    if (best[i] >= 0 && (best[win] < 0 || best[i] < best[win])) win = i;
  if (!rc && win > 0) p->bucket[b] = al[win], p->chosen[b] = 1;
  return rc;
}

/* The pinned algorithm for k: its family's (k with m = 0) reference, chosen
 * once at GEMM_PIN_M without split-K (*ref), and the one of k->m's bucket (*algo). */
int plan_pinned_algo(const gemm_key *k, cublasLtMatmulDesc_t desc, cublasLtMatmulAlgo_t *algo,
                     cublasLtMatmulAlgo_t *ref, rl_err *e) {
  gemm_key fk = *k;
  fk.m = 0;
  gemm_pin *p = NULL;
  gemm_pin *tab = gemm_G.pins[k->dev]; /* the key's device's families */
  int *n_pins = &gemm_G.n_pins[k->dev];
  for (int i = 0; i < *n_pins && !p; i++)
    if (!memcmp(&tab[i].key, &fk, sizeof fk)) p = &tab[i];
  if (!p) {
    if (*n_pins == GEMM_PIN_SLOTS)
      return rl_errf(e, RL_EXIT_FAIL, "gemm: more than %d pinned GEMM families on a device", GEMM_PIN_SLOTS);
    cublasLtMatrixLayout_t la, lb, lc;
    if (plan_layouts(k, GEMM_PIN_M, &la, &lb, &lc, e)) return RL_EXIT_FAIL;
    size_t ws;
    int rc = plan_heuristic(k->dev, k, desc, la, lb, lc, 1, 0, GEMM_PIN_M, ref, &ws, e);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    if (rc) return rc;
    p = &tab[(*n_pins)++];
    memset(p, 0, sizeof *p);
    p->used = 1, p->key = fk, p->algo = *ref;
    p->chosen[GEMM_PIN_BUCKETS - 1] = 2;
  }
  *ref = p->algo;
  int b = pin_bucket(k->m);
  if (!p->chosen[b]) {
    int rc = pin_choose(p, k, desc, b, e);
    if (rc) return rc;
  }
  *algo = p->chosen[b] == 1 ? p->bucket[b] : p->algo;
  return 0;
}
