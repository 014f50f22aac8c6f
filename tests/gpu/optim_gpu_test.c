/* optim_gpu_test.c — the CUDA AdamW against the CPU reference, bit for bit
 * (BF16 weights, FP32 main params, moments, and the FP64 gradient norm), on
 * the GPU machine; then the step's effective bandwidth next to a D2D copy.
 *
 *   build/gpu/optim_gpu_test          one line per check, exit 1 on any FAIL
 *
 * Tensors of 1, 7, 255, 4096, 4097 and 3·2^20+5 elements (partial norm blocks,
 * partial lanes), gradients over 2^-30 … 2^10, random moments; 3 steps with
 * global-norm clipping active, warm-up on, one tensor without weight decay;
 * both main_params modes. Then a NaN in one gradient: the step must fail naming
 * the tensor and leave every device buffer unchanged. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/formats.h"
#include "kernels/optim.h"

#if RLRUN_CUDA
#include <cuda_runtime.h>

#include "tests/cuda_check.h" /* CU */

/* Counts of the whole run. */
static struct {
  int pass, fail;
} g;

static void report(int ok, const char *fmt, const char *what, long long detail) {
  printf("%s ", ok ? "PASS" : "FAIL");
  printf(fmt, what, detail);
  printf("\n");
  ok ? g.pass++ : g.fail++;
}

/* xorshift64 for test inputs. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  return *s;
}
static float rndf(uint64_t *s) { return (float)((double)(rnd(s) >> 11) / 9007199254740992.0) * 2.0f - 1.0f; }

#define NT 7 /* sizes: the 4-wide AdamW kernel (n % 4 == 0) and the scalar one */
static const int64_t sizes[NT] = {1, 7, 255, 4096, 4097, 3 * (1 << 20) + 5, 2 * (1 << 20) + 4};

/* Host and device copies of the optimizer state of NT tensors. */
typedef struct set {
  optim_tensor h[NT], d[NT];
  float *hgrad[NT];
} set;

static void set_make(set *x, int main_params, uint64_t seed) {
  uint64_t s = seed;
  static char names[NT][32];
  for (int k = 0; k < NT; k++) {
    int64_t n = sizes[k];
    snprintf(names[k], sizeof names[k], "layers.%d.w", k);
    optim_tensor *h = &x->h[k], *d = &x->d[k];
    *h = (optim_tensor){.name = names[k], .n = n, .no_decay = k == 2};
    h->w = rl_xmalloc((size_t)n * 2);
    h->m = rl_xmalloc((size_t)n * 4);
    h->v = rl_xmalloc((size_t)n * 4);
    h->main = main_params == OPTIM_MAIN_FP32 ? rl_xmalloc((size_t)n * 4) : NULL;
    x->hgrad[k] = rl_xmalloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
      float w = rndf(&s) * 2.0f;
      if (h->main) h->main[i] = w;
      h->w[i] = fmt_bf16_from_f32(w);
      h->m[i] = rndf(&s) * 1e-2f;
      h->v[i] = fabsf(rndf(&s)) * 1e-4f;
      x->hgrad[k][i] = ldexpf(rndf(&s), (int)(rnd(&s) % 41) - 30);
    }
    h->grad = x->hgrad[k];
    *d = *h;
    CU(cudaMalloc((void **)&d->w, (size_t)n * 2));
    CU(cudaMalloc((void **)&d->m, (size_t)n * 4));
    CU(cudaMalloc((void **)&d->v, (size_t)n * 4));
    float *dg;
    CU(cudaMalloc((void **)&dg, (size_t)n * 4));
    d->grad = dg;
    if (h->main) CU(cudaMalloc((void **)&d->main, (size_t)n * 4));
    CU(cudaMemcpy(d->w, h->w, (size_t)n * 2, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(d->m, h->m, (size_t)n * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(d->v, h->v, (size_t)n * 4, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(dg, h->grad, (size_t)n * 4, cudaMemcpyHostToDevice));
    if (h->main) CU(cudaMemcpy(d->main, h->main, (size_t)n * 4, cudaMemcpyHostToDevice));
  }
}

static void set_free(set *x) {
  for (int k = 0; k < NT; k++) {
    free(x->h[k].w), free(x->h[k].m), free(x->h[k].v), free(x->h[k].main), free(x->hgrad[k]);
    cudaFree(x->d[k].w), cudaFree(x->d[k].m), cudaFree(x->d[k].v), cudaFree(x->d[k].main);
    cudaFree((void *)x->d[k].grad);
  }
}

/* Number of differing bytes between a host buffer and a device buffer. */
static long long diff_bytes(const void *h, const void *d, size_t n) {
  if (!n) return 0;
  uint8_t *c = rl_xmalloc(n);
  CU(cudaMemcpy(c, d, n, cudaMemcpyDeviceToHost));
  long long bad = 0;
  for (size_t i = 0; i < n; i++) bad += c[i] != ((const uint8_t *)h)[i];
  free(c);
  return bad;
}

/* Compare every buffer of the set; returns the number of differing bytes. */
static long long set_compare(const set *x) {
  long long bad = 0;
  for (int k = 0; k < NT; k++) {
    size_t n = (size_t)x->h[k].n;
    bad += diff_bytes(x->h[k].w, x->d[k].w, n * 2);
    bad += diff_bytes(x->h[k].m, x->d[k].m, n * 4);
    bad += diff_bytes(x->h[k].v, x->d[k].v, n * 4);
    if (x->h[k].main) bad += diff_bytes(x->h[k].main, x->d[k].main, n * 4);
  }
  return bad;
}

/* Three steps on both sides, compared after each. */
static void check_steps(int main_params) {
  set x;
  set_make(&x, main_params, 0x9E3779B97F4A7C15ull + (uint64_t)main_params);
  optim_cfg c;
  optim_cfg_default(&c);
  c.lr = 1e-3, c.warmup_steps = 2, c.grad_clip = 1.0, c.main_params = main_params;
  const char *mode = main_params == OPTIM_MAIN_FP32 ? "fp32" : "bf16";
  for (int step = 1; step <= 3; step++) {
    optim_info ic, ig;
    rl_err e = {0};
    if (optim_step_cpu(&c, x.h, NT, step, &ic, &e)) { printf("FAIL cpu step: %s\n", e.msg); g.fail++; break; }
    if (optim_step_cuda(&c, x.d, NT, step, &ig, NULL, &e)) { printf("FAIL cuda step: %s\n", e.msg); g.fail++; break; }
    CU(cudaDeviceSynchronize());
    char what[96];
    snprintf(what, sizeof what, "main_params %s step %d", mode, step);
    uint64_t bc, bg;
    memcpy(&bc, &ic.grad_norm, 8), memcpy(&bg, &ig.grad_norm, 8);
    printf("  %s: grad norm cpu %.17g gpu %.17g, clip coef %.9g\n", what, ic.grad_norm, ig.grad_norm, ic.clip_coef);
    report(bc == bg, "%s: grad norm bit-identical (%lld)", what, (long long)(bc == bg));
    report(ic.clip_coef < 1, "%s: clipping active (%lld)", what, (long long)(ic.clip_coef < 1));
    long long bad = set_compare(&x);
    report(bad == 0, "%s: weights, main params, moments identical (%lld bytes differ)", what, bad);
  }
  /* a NaN in one gradient: the GPU step fails naming it, and nothing changes */
  float nan = NAN;
  CU(cudaMemcpy((float *)x.d[4].grad + 17, &nan, 4, cudaMemcpyHostToDevice));
  rl_err e = {0};
  int rc = optim_step_cuda(&c, x.d, NT, 4, NULL, NULL, &e);
  printf("  nan step: rc %d: %s\n", rc, e.msg);
  report(rc == RL_EXIT_FAIL && strstr(e.msg, "'layers.4.w'") && strstr(e.msg, "index 17"),
         "%s: NaN gradient refused, tensor named (%lld)", mode, (long long)rc);
  long long bad = set_compare(&x);
  report(bad == 0, "%s: NaN step left every buffer unchanged (%lld bytes differ)", mode, bad);
  set_free(&x);
  optim_cuda_release();
}

/* Step time on n elements (FP32 main) next to a D2D copy of the same bytes. */
static void bench(int64_t n) {
  optim_tensor d = {.name = "bench", .n = n};
  float *grad;
  CU(cudaMalloc((void **)&d.w, (size_t)n * 2));
  CU(cudaMalloc((void **)&d.main, (size_t)n * 4));
  CU(cudaMalloc((void **)&d.m, (size_t)n * 4));
  CU(cudaMalloc((void **)&d.v, (size_t)n * 4));
  CU(cudaMalloc((void **)&grad, (size_t)n * 4));
  CU(cudaMemset(d.w, 0, (size_t)n * 2));
  CU(cudaMemset(d.main, 0, (size_t)n * 4));
  CU(cudaMemset(d.m, 0, (size_t)n * 4));
  CU(cudaMemset(d.v, 0, (size_t)n * 4));
  CU(cudaMemset(grad, 0, (size_t)n * 4));
  d.grad = grad;
  optim_cfg c;
  optim_cfg_default(&c);
  cudaEvent_t a, b;
  CU(cudaEventCreate(&a));
  CU(cudaEventCreate(&b));
  rl_err e = {0};
  if (optim_step_cuda(&c, &d, 1, 1, NULL, NULL, &e)) { printf("FAIL bench: %s\n", e.msg); g.fail++; return; }
  const int reps = 10;
  CU(cudaEventRecord(a, 0));
  for (int i = 0; i < reps; i++) optim_step_cuda(&c, &d, 1, 2 + i, NULL, NULL, &e);
  CU(cudaEventRecord(b, 0));
  CU(cudaEventSynchronize(b));
  float ms_step;
  CU(cudaEventElapsedTime(&ms_step, a, b));
  ms_step /= reps;
  /* bytes a step must move: grad read twice (norm, update), main/m/v read+write, w written */
  double bytes = (double)n * (4 * 2 + 4 * 2 * 3 + 2);
  CU(cudaEventRecord(a, 0));
  for (int i = 0; i < reps; i++) CU(cudaMemcpyAsync(d.m, d.v, (size_t)n * 4, cudaMemcpyDeviceToDevice, 0));
  CU(cudaEventRecord(b, 0));
  CU(cudaEventSynchronize(b));
  float ms_copy;
  CU(cudaEventElapsedTime(&ms_copy, a, b));
  ms_copy /= reps;
  double bw_step = bytes / (ms_step * 1e-3) / 1e9, bw_copy = 2.0 * n * 4 / (ms_copy * 1e-3) / 1e9;
  printf("| adamw step  | %lld params | %.3f ms | %.0f GB/s | D2D copy %.0f GB/s | ratio %.2f |\n",
         (long long)n, ms_step, bw_step, bw_copy, bw_step / bw_copy);
  cudaFree(d.w), cudaFree(d.main), cudaFree(d.m), cudaFree(d.v), cudaFree(grad);
  cudaEventDestroy(a), cudaEventDestroy(b);
  optim_cuda_release();
}

int main(void) {
  check_steps(OPTIM_MAIN_FP32);
  check_steps(OPTIM_MAIN_BF16);
  bench((int64_t)1 << 28);
  printf("optim_gpu_test: %d passed, %d failed\n", g.pass, g.fail);
  return g.fail ? 1 : 0;
}

#else
int main(void) {
  printf("optim_gpu_test: built without CUDA, nothing to run\n");
  return 0;
}
#endif
