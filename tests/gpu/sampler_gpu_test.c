/* sampler_gpu_test.c — the CUDA sampler (fused and plain kernels, every CTAs-a-row tuning) against the CPU
 * reference (stages/sampler.c): the same token, status, kept count and draw
 * for every row, log-probs and entropy within 1e-12; each case again as BF16
 * rows (sampler_sample_bf16_cuda) against FP32 rows of the same values, bit for
 * bit; then its speed at Qwen3's vocabulary next to a plain read of the logits.
 *
 *   build/gpu/sampler_gpu_test     one line per case, a timing table; exit 1 on any mismatch */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/formats.h"
#include "stages/sampler.h"

#if RLRUN_CUDA
#include <cuda_runtime.h>

#include "tests/cuda_check.h" /* CU */

/* Counts of the whole run. */
static struct {
  int pass, fail;
} g;

/* xorshift64 for test inputs. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return *s;
}

/* Logits of one case: kind 0 random normal-ish (scale 3), 1 many exact ties
 * (integers 0..3), 2 a third masked with -inf, 3 peaked (one logit +20),
 * 4 a NaN in the middle, 5 random with every fifth row all -inf. */
static void make_logits(float *l, int64_t rows, int64_t V, int kind, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (int64_t i = 0; i < rows * V; i++) {
    double u = (double)(rnd(&s) >> 11) * 0x1.0p-53, v = (double)(rnd(&s) >> 11) * 0x1.0p-53;
    double n = sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
    l[i] = kind == 1 ? (float)(rnd(&s) % 4) : (float)(3.0 * n);
    if (kind == 2 && rnd(&s) % 3 == 0) l[i] = -INFINITY;
  }
  for (int64_t r = 0; r < rows; r++) {
    if (kind == 3) l[r * V + (int64_t)(rnd(&s) % (uint64_t)V)] = 20.0f;
    if (kind == 4 && r % 2) l[r * V + V / 2] = NAN;
    if (kind == 5 && r % 5 == 0)
      for (int64_t i = 0; i < V; i++) l[r * V + i] = -INFINITY;
  }
}

/* The CUDA sampler's tunings every case runs under (sampler_cuda_tune: plain
 * kernel on/off, its CTAs a row): each must give the CPU's bytes. */
static const int tunings[][2] = {{1, 0}, {0, 0}, {1, 1}, {1, 2}, {1, 4}, {1, 8}};
#define N_TUNINGS (int)(sizeof tunings / sizeof tunings[0])

/* Two outputs, every field bit for bit. */
static int out_same(const sampler_out *a, const sampler_out *b) {
  return a->token == b->token && a->status == b->status && a->n_kept == b->n_kept && !memcmp(&a->u, &b->u, 8) &&
         !memcmp(&a->logp, &b->logp, 8) && !memcmp(&a->logp_kept, &b->logp_kept, 8) &&
         !memcmp(&a->entropy, &b->entropy, 8);
}

/* BF16 rows (sampler_sample_bf16_cuda) against FP32 rows of the same values
 * (sampler_sample_cuda), under every tuning: the case's logits rounded to BF16
 * (NaN, ±inf kept), and the row stride V + pad (pad 0, 1: the 8-byte loads
 * where V % 4 == 0, element loads otherwise). */
static void run_case_bf16(const char *name, const sampler_params *p, int64_t rows, int64_t V, const float *l,
                          const sampler_key *dk, int pad) {
  const int64_t ld = V + pad;
  uint16_t *hb = rl_xcalloc((size_t)(rows * ld), 2);
  float *hw = rl_xcalloc((size_t)(rows * ld), 4);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < V; i++) hb[r * ld + i] = fmt_bf16_from_f32(l[r * V + i]), hw[r * ld + i] = fmt_bf16_to_f32(hb[r * ld + i]);
  uint16_t *db;
  float *dw;
  sampler_out *d1, *d2;
  CU(cudaMalloc((void **)&db, (size_t)(rows * ld) * 2));
  CU(cudaMalloc((void **)&dw, (size_t)(rows * ld) * 4));
  CU(cudaMalloc((void **)&d1, sizeof *d1 * (size_t)rows));
  CU(cudaMalloc((void **)&d2, sizeof *d2 * (size_t)rows));
  CU(cudaMemcpy(db, hb, (size_t)(rows * ld) * 2, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(dw, hw, (size_t)(rows * ld) * 4, cudaMemcpyHostToDevice));
  sampler_out *o1 = rl_xcalloc((size_t)rows, sizeof *o1), *o2 = rl_xcalloc((size_t)rows, sizeof *o2);
  rl_err e;
  int64_t differ = 0, ok_rows = 0;
  int failed = 0;
  for (int tu = 0; tu < N_TUNINGS && !failed; tu++) {
    sampler_cuda_tune(tunings[tu][0], tunings[tu][1]);
    CU(cudaMemset(d1, 0xab, sizeof *d1 * (size_t)rows));
    CU(cudaMemset(d2, 0xcd, sizeof *d2 * (size_t)rows));
    if (sampler_sample_cuda(p, dw, rows, V, ld, dk, d1, NULL, &e) ||
        sampler_sample_bf16_cuda(p, db, rows, V, ld, dk, d2, NULL, &e)) {
      printf("FAIL %-28s BF16 rows (ld V+%d): %s\n", name, pad, e.msg);
      failed = 1;
      break;
    }
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(o1, d1, sizeof *o1 * (size_t)rows, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(o2, d2, sizeof *o2 * (size_t)rows, cudaMemcpyDeviceToHost));
    for (int64_t r = 0; r < rows; r++) differ += !out_same(&o1[r], &o2[r]), ok_rows += o1[r].status == SAMPLER_OK;
  }
  sampler_cuda_tune(1, 0);
  const int ok = !failed && differ == 0 && ok_rows > 0;
  printf("%s %-28s BF16 rows (ld V+%d) == FP32 rows of their values, %d tunings: rows differing %lld (OK rows %lld)\n",
         ok ? "PASS" : "FAIL", name, pad, N_TUNINGS, (long long)differ, (long long)ok_rows);
  ok ? g.pass++ : g.fail++;
  CU(cudaFree(db));
  CU(cudaFree(dw));
  CU(cudaFree(d1));
  CU(cudaFree(d2));
  free(hb), free(hw), free(o1), free(o2);
}

/* Run one case on both backends (the GPU under every tuning) and compare. */
static void run_case(const char *name, const sampler_params *p, int64_t rows, int64_t V, int kind) {
  float *l = rl_xmalloc(sizeof(float) * (size_t)(rows * V));
  sampler_key *k = rl_xmalloc(sizeof *k * (size_t)rows);
  sampler_out *co = rl_xcalloc((size_t)rows, sizeof *co), *go = rl_xcalloc((size_t)rows, sizeof *go),
              *g0 = rl_xcalloc((size_t)rows, sizeof *g0);
  make_logits(l, rows, V, kind, (uint64_t)V * 31 + (uint64_t)rows);
  for (int64_t r = 0; r < rows; r++)
    k[r] = (sampler_key){.seed = 1234, .iteration = 3, .prompt = (uint32_t)(r / 8), .sample = (uint32_t)(r % 8),
                         .position = (uint32_t)(r * 7)};
  rl_err e;
  double t0 = rl_now();
  sampler_sample_rows(p, l, rows, V, V, k, co, &e); /* per-row statuses compared below */
  double tcpu = rl_now() - t0;
  float *dl;
  sampler_key *dk;
  sampler_out *dout;
  CU(cudaMalloc((void **)&dl, sizeof(float) * (size_t)(rows * V)));
  CU(cudaMalloc((void **)&dk, sizeof *dk * (size_t)rows));
  CU(cudaMalloc((void **)&dout, sizeof *dout * (size_t)rows));
  CU(cudaMemcpy(dl, l, sizeof(float) * (size_t)(rows * V), cudaMemcpyHostToDevice));
  CU(cudaMemcpy(dk, k, sizeof *dk * (size_t)rows, cudaMemcpyHostToDevice));
  for (int tu = 0; tu < N_TUNINGS; tu++) {
    sampler_cuda_tune(tunings[tu][0], tunings[tu][1]);
    memset(go, 0xab, sizeof *go * (size_t)rows);
    CU(cudaMemcpy(dout, go, sizeof *go * (size_t)rows, cudaMemcpyHostToDevice)); /* no stale result passes */
    if (sampler_sample_cuda(p, dl, rows, V, V, dk, dout, NULL, &e)) {
      printf("FAIL %-28s plain=%d cl=%d: %s\n", name, tunings[tu][0], tunings[tu][1], e.msg);
      g.fail++;
      if (tu == 0) break; /* no reference for the other tunings' bitwise check */
      continue;
    }
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(go, dout, sizeof *go * (size_t)rows, cudaMemcpyDeviceToHost));
    int64_t mism = 0, first = -1, differ = 0; /* differ: rows not bitwise the first tuning's */
    double dlp = 0, dent = 0;
    for (int64_t r = 0; r < rows; r++) {
      int same = co[r].token == go[r].token && co[r].status == go[r].status && co[r].n_kept == go[r].n_kept &&
                 co[r].u == go[r].u;
      if (tu == 0) g0[r] = go[r];
      differ += !out_same(&g0[r], &go[r]);
      if (!same && first < 0) first = r;
      mism += !same;
      if (co[r].status == SAMPLER_OK) {
        dlp = fmax(dlp, fmax(fabs(co[r].logp - go[r].logp), fabs(co[r].logp_kept - go[r].logp_kept)));
        dent = fmax(dent, fabs(co[r].entropy - go[r].entropy));
      }
    }
    int ok = mism == 0 && differ == 0 && dlp <= 1e-12 && dent <= 1e-12;
    printf("%s %-28s plain=%d cl=%d rows %5lld V %6lld  token mismatches %lld  not bitwise tuning 0 %lld  max|dlogp| %.2e"
           "  max|dH| %.2e  cpu %.1f ms\n",
           ok ? "PASS" : "FAIL", name, tunings[tu][0], tunings[tu][1], (long long)rows, (long long)V, (long long)mism,
           (long long)differ, dlp, dent, tcpu * 1e3);
    if (first >= 0)
      printf("     first mismatch row %lld: cpu token %d status %d kept %d u %.17g | gpu token %d status %d kept %d u %.17g\n",
             (long long)first, co[first].token, co[first].status, co[first].n_kept, co[first].u, go[first].token,
             go[first].status, go[first].n_kept, go[first].u);
    ok ? g.pass++ : g.fail++;
  }
  sampler_cuda_tune(1, 0);
  for (int pad = 0; pad < 2; pad++) run_case_bf16(name, p, rows, V, l, dk, pad);
  CU(cudaFree(dl));
  CU(cudaFree(dk));
  CU(cudaFree(dout));
  free(l), free(k), free(co), free(go), free(g0);
}

/* Milliseconds per call of the kernel on rows × V random logits, next to a
 * device-to-device copy of the same bytes (the floor of any one-pass kernel). */
static void bench_as(const char *name, const sampler_params *p, int64_t rows, int64_t V, int bf16) {
  size_t bytes = (bf16 ? 2 : sizeof(float)) * (size_t)(rows * V);
  float *l = rl_xmalloc(sizeof(float) * (size_t)(rows * V)), *dl, *dc;
  make_logits(l, rows, V, 0, 7);
  if (bf16) /* the BF16 bit patterns, packed in place (they take the first half of l) */
    for (int64_t i = 0; i < rows * V; i++) ((uint16_t *)l)[i] = fmt_bf16_from_f32(l[i]);
  sampler_key *k = rl_xcalloc((size_t)rows, sizeof *k), *dk;
  for (int64_t r = 0; r < rows; r++) k[r].seed = 1, k[r].sample = (uint32_t)r;
  sampler_out *dout;
  CU(cudaMalloc((void **)&dl, bytes));
  CU(cudaMalloc((void **)&dc, bytes));
  CU(cudaMalloc((void **)&dk, sizeof *dk * (size_t)rows));
  CU(cudaMalloc((void **)&dout, sizeof *dout * (size_t)rows));
  CU(cudaMemcpy(dl, l, bytes, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(dk, k, sizeof *dk * (size_t)rows, cudaMemcpyHostToDevice));
  cudaEvent_t a, b;
  CU(cudaEventCreate(&a));
  CU(cudaEventCreate(&b));
  rl_err e;
  int reps = 20;
  float ms = 0, mc = 0;
#define SAMPLE() \
  (bf16 ? sampler_sample_bf16_cuda(p, (const uint16_t *)dl, rows, V, V, dk, dout, NULL, &e) \
        : sampler_sample_cuda(p, dl, rows, V, V, dk, dout, NULL, &e))
  if (SAMPLE()) { printf("FAIL bench %s: %s\n", name, e.msg); g.fail++; return; }
  CU(cudaEventRecord(a, 0));
  for (int i = 0; i < reps; i++) SAMPLE();
#undef SAMPLE
  CU(cudaEventRecord(b, 0));
  CU(cudaEventSynchronize(b));
  CU(cudaEventElapsedTime(&ms, a, b));
  CU(cudaEventRecord(a, 0));
  for (int i = 0; i < reps; i++) CU(cudaMemcpyAsync(dc, dl, bytes, cudaMemcpyDeviceToDevice, 0));
  CU(cudaEventRecord(b, 0));
  CU(cudaEventSynchronize(b));
  CU(cudaEventElapsedTime(&mc, a, b));
  CU(cudaEventDestroy(a));
  CU(cudaEventDestroy(b));
  ms /= reps, mc /= reps;
  printf("| %-22s | %5lld | %6lld | %8.3f ms | copy %7.3f ms | %6.1fx copy | %9.0f rows/s |\n", name, (long long)rows,
         (long long)V, ms, mc, ms / mc, rows / (ms * 1e-3));
  /* (the copy is of this run's logits: FP32 or BF16 bytes) */
  CU(cudaFree(dl));
  CU(cudaFree(dc));
  CU(cudaFree(dk));
  CU(cudaFree(dout));
  free(l), free(k);
}
static void bench(const char *name, const sampler_params *p, int64_t rows, int64_t V) { bench_as(name, p, rows, V, 0); }

int main(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    printf("no CUDA device\n");
    return 3;
  }
  sampler_params d = sampler_default_params(), t = d, gr = d, k1 = d, k50 = d, p9 = d, kp = d, mp = d, all = d;
  t.temperature = 0.7;
  gr.temperature = 0;
  k1.top_k = 1;
  k50.top_k = 50;
  p9.top_p = 0.9;
  kp.top_k = 100, kp.top_p = 0.5, kp.temperature = 1.3;
  mp.min_p = 0.05;
  all.top_k = 2000, all.top_p = 0.95, all.min_p = 0.01, all.temperature = 0.8;
  const int64_t vs[6] = {8, 1000, 1024, 1025, 5000, 151936};
  for (int i = 0; i < 6; i++) {
    int64_t rows = vs[i] >= 100000 ? 64 : 256;
    char nm[64];
    snprintf(nm, sizeof nm, "default/V%lld", (long long)vs[i]);
    run_case(nm, &d, rows, vs[i], 0);
    snprintf(nm, sizeof nm, "T0.7/V%lld", (long long)vs[i]);
    run_case(nm, &t, rows, vs[i], 0);
    snprintf(nm, sizeof nm, "top_p0.9/V%lld", (long long)vs[i]);
    run_case(nm, &p9, rows, vs[i], 0);
    snprintf(nm, sizeof nm, "all-masks/V%lld", (long long)vs[i]);
    run_case(nm, &all, rows, vs[i], 0);
  }
  run_case("greedy/ties", &gr, 256, 3000, 1);
  run_case("top_k1/ties", &k1, 256, 3000, 1);
  run_case("top_k50/ties", &k50, 256, 3000, 1);
  run_case("top_p0.9/ties", &p9, 256, 3000, 1);
  run_case("top_k100+top_p0.5/ties", &kp, 256, 3000, 1);
  run_case("min_p0.05/ties", &mp, 256, 3000, 1);
  run_case("default/-inf masked", &d, 256, 3000, 2);
  run_case("top_p0.9/-inf masked", &p9, 256, 3000, 2);
  run_case("default/peaked", &d, 256, 32000, 3);
  run_case("top_p0.9/peaked", &p9, 256, 32000, 3);
  run_case("default/NaN rows", &d, 64, 3000, 4);
  run_case("default/all -inf rows", &d, 64, 3000, 5);
  run_case("greedy/all -inf rows", &gr, 16, 32000, 5); /* 16 rows: auto picks 8 CTAs a row */
  run_case("default/many rows", &d, 4096, 32000, 0); /* how often do FP64 sums flip a token: expect never */
  printf("\n| case                   |  rows |      V |   kernel    | logits D2D copy | ratio       | throughput      |\n");
  bench("default", &d, 64, 151936);
  bench_as("default, BF16 logits", &d, 64, 151936, 1);
  bench("default", &d, 256, 151936);
  bench_as("default, BF16 logits", &d, 256, 151936, 1);
  bench("greedy", &gr, 256, 151936);
  const int bt[][2] = {{0, 0}, {1, 1}, {1, 2}, {1, 4}};
  const char *btn[] = {"default fused kernel", "default plain cl=1", "default plain cl=2", "default plain cl=4"};
  for (int i = 0; i < 4; i++) {
    sampler_cuda_tune(bt[i][0], bt[i][1]);
    bench(btn[i], &d, 64, 151936);
    if (i < 3) bench(btn[i], &d, 256, 151936);
  }
  sampler_cuda_tune(1, 0);
  bench("top_k50", &k50, 64, 151936);
  bench("top_p0.9", &p9, 64, 151936);
  bench("top_p0.9", &p9, 256, 151936);
  printf("\nsampler_gpu_test: %d passed, %d failed\n", g.pass, g.fail);
  return g.fail ? 1 : 0;
}

#else
int main(void) {
  printf("sampler_gpu_test: built without CUDA\n");
  return 3;
}
#endif
