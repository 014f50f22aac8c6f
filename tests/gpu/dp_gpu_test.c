/* dp_gpu_test.c — data parallelism's collectives on GPUs (stages/sync.h,
 * "Data-parallel training"); run on the GPU machine from the repo root
 * (the multi-GPU part needs nvidia-h200-x2; with one GPU it says SKIP).
 *
 *   NCCL_NVLS_ENABLE=0 build/gpu/dp_gpu_test     one line per check, exit 1 on any FAIL
 *
 * Checks:
 *   the ordered-sum kernel (GPU 0): sync_dp_sum_cuda == sync_dp_sum_fixed
 *     bit for bit, 1 … 8 ranks, n 1 … 2^20+3, values whose sum depends on
 *     the order (1e8 + 1 − 1e8), signed zeros, subnormals, in place too;
 *   the all-reduce (2 … min(4, GPUs) ranks): random FP32 tensors of odd sizes
 *     (1, 3, 1000, 65537, 2^20+5 floats) on every GPU, buckets of 1000 bytes
 *     (rounded to 992), 64 KiB and the 512 MiB default: afterwards every
 *     rank's every tensor == sync_dp_sum_fixed of the inputs on the host,
 *     bitwise; a second call on the same inputs gives the same bits;
 *   the broadcast: rank 0's bytes (odd sizes) on every other rank, bitwise;
 *   the model wrappers: two random dense Qwen3 replicas, device gradients
 *     set from the host, sync_dp_reduce_grads == the host sum; masters of
 *     rank 1 overwritten by sync_dp_broadcast_masters == rank 0's, and both
 *     replicas then give bitwise-equal logits. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "stages/sync.h"
#include "stages/sync_int.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

static struct {
  int pass, fail;
  uint32_t seed;
} g = {0, 0, 12345u};

/* Record one check: a line PASS/FAIL with the message. */
static int check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int check(int ok, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", ok ? "PASS" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
  ok ? g.pass++ : g.fail++;
  return ok;
}

/* Stop on a failed call that the rest depends on. */
#define MUST(call)                                                       \
  do {                                                                   \
    if ((call) != 0) {                                                   \
      printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, e.msg); \
      exit(1);                                                           \
    }                                                                    \
  } while (0)
#define CU(call)                                                                               \
  do {                                                                                         \
    cudaError_t st_ = (call);                                                                  \
    if (st_ != cudaSuccess) {                                                                  \
      printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(st_));     \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

static uint32_t rnd(void) {
  g.seed ^= g.seed << 13, g.seed ^= g.seed >> 17, g.seed ^= g.seed << 5;
  return g.seed;
}

/* A float that makes the summation order visible: mostly N(0,1)-ish values
 * of mixed magnitude, with ±1e8, ±0, subnormals and exact cancellations mixed in. */
static float rnd_float(int rank, int64_t j) {
  uint32_t u = rnd();
  switch (u % 16) {
    case 0: return rank == 0 ? 1e8f : rank == 2 ? -1e8f : 1.0f;
    case 1: return (u & 32) ? 0.0f : -0.0f;
    case 2: { uint32_t b = (u >> 8) & 0x007FFFFF; b |= (u & 64) ? 0x80000000u : 0; float f; memcpy(&f, &b, 4); return f; }
    case 3: return (float)(j % 7) * ((u & 128) ? 1.0f : -1.0f);
    default: {
      float m = (float)((int32_t)(u >> 4) - (1 << 27)) / (float)(1 << 27);
      int ex = (int)((u >> 1) % 40) - 20;
      return ldexpf(m, ex);
    }
  }
}

static int bits_equal(const float *a, const float *b, int64_t n, int64_t *at) {
  for (int64_t j = 0; j < n; j++) {
    uint32_t x, y;
    memcpy(&x, &a[j], 4), memcpy(&y, &b[j], 4);
    if (x != y) {
      *at = j;
      return 0;
    }
  }
  return 1;
}

/* The ordered-sum kernel against the CPU reference on GPU 0. */
static void test_sum_kernel(void) {
  rl_err e = {0};
  static const int64_t sizes[] = {1, 5, 256, 1000, (1 << 20) + 3};
  CU(cudaSetDevice(0));
  for (int R = 1; R <= 8; R++)
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
      int64_t n = sizes[k];
      float *h[8], *d[8], *want = rl_xmalloc((size_t)n * 4), *got = rl_xmalloc((size_t)n * 4);
      for (int r = 0; r < R; r++) {
        h[r] = rl_xmalloc((size_t)n * 4);
        for (int64_t j = 0; j < n; j++) h[r][j] = rnd_float(r, j);
        CU(cudaMalloc((void **)&d[r], (size_t)n * 4));
        CU(cudaMemcpy(d[r], h[r], (size_t)n * 4, cudaMemcpyHostToDevice));
      }
      sync_dp_sum_fixed((const float *const *)h, R, n, want);
      float *out = NULL;
      CU(cudaMalloc((void **)&out, (size_t)n * 4));
      MUST(sync_dp_sum_cuda((const float *const *)d, R, n, out, NULL, &e));
      CU(cudaMemcpy(got, out, (size_t)n * 4, cudaMemcpyDeviceToHost));
      int64_t at = -1;
      int ok = bits_equal(want, got, n, &at);
      /* in place: the result written over rank R-1's input */
      MUST(sync_dp_sum_cuda((const float *const *)d, R, n, d[R - 1], NULL, &e));
      CU(cudaMemcpy(got, d[R - 1], (size_t)n * 4, cudaMemcpyDeviceToHost));
      int64_t at2 = -1;
      int ok2 = bits_equal(want, got, n, &at2);
      if (!ok || !ok2 || n == sizes[4])
        check(ok && ok2, "sum kernel %d ranks, n %lld: == sync_dp_sum_fixed bitwise (in place too)%s", R, (long long)n,
              ok && ok2 ? "" : " — first difference");
      if (!ok) printf("     at %lld: cpu %a gpu %a\n", (long long)at, want[at], got[at]);
      for (int r = 0; r < R; r++) cudaFree(d[r]), free(h[r]);
      cudaFree(out);
      free(want), free(got);
    }
  /* the order is visible: rank order gives 0 for 1e8 + 1 − 1e8 */
  float a = 1e8f, b = 1.0f, c = -1e8f, *d[3], got = -1;
  const float *hp[3] = {&a, &b, &c};
  for (int r = 0; r < 3; r++) {
    CU(cudaMalloc((void **)&d[r], 4));
    CU(cudaMemcpy(d[r], hp[r], 4, cudaMemcpyHostToDevice));
  }
  MUST(sync_dp_sum_cuda((const float *const *)d, 3, 1, d[0], NULL, &e));
  CU(cudaMemcpy(&got, d[0], 4, cudaMemcpyDeviceToHost));
  check(got == 0.0f, "sum kernel: (1e8 + 1) + -1e8 == 0 in rank order (got %g)", got);
  for (int r = 0; r < 3; r++) cudaFree(d[r]);
}

/* The fixed-order all-reduce over R GPUs with buckets of `bucket` bytes. */
static void test_allreduce(int R, uint64_t bucket) {
  rl_err e = {0};
  static const int64_t sizes[] = {1, 3, 1000, 65537, (1 << 20) + 5};
  enum { NT = sizeof sizes / sizeof *sizes };
  int devs[SYNC_DP_MAX_RANKS] = {0};
  for (int r = 0; r < R; r++) devs[r] = r;
  sync_dp *d = NULL;
  MUST(sync_dp_open(devs, R, bucket, &d, &e));
  float *host[SYNC_DP_MAX_RANKS][NT], *dev[SYNC_DP_MAX_RANKS][NT];
  float *const *rows[SYNC_DP_MAX_RANKS];
  for (int r = 0; r < R; r++) {
    CU(cudaSetDevice(r));
    for (int i = 0; i < NT; i++) {
      host[r][i] = rl_xmalloc((size_t)sizes[i] * 4);
      for (int64_t j = 0; j < sizes[i]; j++) host[r][i][j] = rnd_float(r, j);
      CU(cudaMalloc((void **)&dev[r][i], (size_t)sizes[i] * 4));
      CU(cudaMemcpy(dev[r][i], host[r][i], (size_t)sizes[i] * 4, cudaMemcpyHostToDevice));
    }
    rows[r] = dev[r];
  }
  CU(cudaSetDevice(0));
  double t0 = rl_now();
  int rc = sync_dp_allreduce(d, (float *const *const *)rows, sizes, NT, &e);
  double ms = (rl_now() - t0) * 1e3;
  check(rc == 0, "allreduce %d ranks, bucket %llu: ran (%.2f ms)%s%s", R, (unsigned long long)bucket, ms, rc ? ": " : "",
        rc ? e.msg : "");
  int bad_r = -1, bad_i = -1;
  int64_t at = -1;
  for (int i = 0; i < NT && bad_r < 0; i++) {
    float *want = rl_xmalloc((size_t)sizes[i] * 4), *got = rl_xmalloc((size_t)sizes[i] * 4);
    const float *in[SYNC_DP_MAX_RANKS];
    for (int r = 0; r < R; r++) in[r] = host[r][i];
    sync_dp_sum_fixed(in, R, sizes[i], want);
    for (int r = 0; r < R && bad_r < 0; r++) {
      CU(cudaSetDevice(r));
      CU(cudaMemcpy(got, dev[r][i], (size_t)sizes[i] * 4, cudaMemcpyDeviceToHost));
      if (!bits_equal(want, got, sizes[i], &at)) bad_r = r, bad_i = i;
    }
    free(want), free(got);
  }
  check(bad_r < 0, "allreduce %d ranks, bucket %llu: every rank's %d tensors == sync_dp_sum_fixed bitwise%s", R,
        (unsigned long long)bucket, NT, bad_r >= 0 ? " — FIRST DIFFERENCE below" : "");
  if (bad_r >= 0) printf("     rank %d tensor %d (%lld floats) element %lld\n", bad_r, bad_i, (long long)sizes[bad_i], (long long)at);
  /* run again from the same inputs: the same bits */
  float *first = rl_xmalloc((size_t)sizes[NT - 1] * 4), *again = rl_xmalloc((size_t)sizes[NT - 1] * 4);
  CU(cudaSetDevice(R - 1));
  CU(cudaMemcpy(first, dev[R - 1][NT - 1], (size_t)sizes[NT - 1] * 4, cudaMemcpyDeviceToHost));
  for (int r = 0; r < R; r++) {
    CU(cudaSetDevice(r));
    for (int i = 0; i < NT; i++) CU(cudaMemcpy(dev[r][i], host[r][i], (size_t)sizes[i] * 4, cudaMemcpyHostToDevice));
  }
  MUST(sync_dp_allreduce(d, (float *const *const *)rows, sizes, NT, &e));
  CU(cudaSetDevice(R - 1));
  CU(cudaMemcpy(again, dev[R - 1][NT - 1], (size_t)sizes[NT - 1] * 4, cudaMemcpyDeviceToHost));
  check(!memcmp(first, again, (size_t)sizes[NT - 1] * 4), "allreduce %d ranks, bucket %llu: a second run gives the same bits",
        R, (unsigned long long)bucket);
  free(first), free(again);
  /* the broadcast: rank 0's bytes everywhere (odd byte counts) */
  uint64_t bytes[NT];
  void *const *brows[SYNC_DP_MAX_RANKS];
  for (int i = 0; i < NT; i++) bytes[i] = (uint64_t)sizes[i] * 4 - (i % 3);
  for (int r = 0; r < R; r++) brows[r] = (void *const *)dev[r];
  MUST(sync_dp_broadcast(d, brows, bytes, NT, &e));
  int bbad = -1;
  for (int i = 0; i < NT && bbad < 0; i++) {
    uint8_t *a = rl_xmalloc(bytes[i] + 1), *b = rl_xmalloc(bytes[i] + 1);
    CU(cudaSetDevice(0));
    CU(cudaMemcpy(a, dev[0][i], bytes[i], cudaMemcpyDeviceToHost));
    for (int r = 1; r < R && bbad < 0; r++) {
      CU(cudaSetDevice(r));
      CU(cudaMemcpy(b, dev[r][i], bytes[i], cudaMemcpyDeviceToHost));
      if (memcmp(a, b, bytes[i])) bbad = i;
    }
    free(a), free(b);
  }
  check(bbad < 0, "broadcast %d ranks, bucket %llu: rank 0's bytes on every rank", R, (unsigned long long)bucket);
  for (int r = 0; r < R; r++) {
    CU(cudaSetDevice(r));
    for (int i = 0; i < NT; i++) cudaFree(dev[r][i]), free(host[r][i]);
  }
  CU(cudaSetDevice(0));
  sync_dp_close(d);
}

/* A random dense Qwen3 (hidden 256, 2 layers, tied embeddings). */
static model *rand_model(uint32_t seed) {
  model_config c;
  memset(&c, 0, sizeof c);
  c.kind = MODEL_KIND_QWEN3;
  snprintf(c.model_type, sizeof c.model_type, "qwen3");
  snprintf(c.rope_type, sizeof c.rope_type, "default");
  snprintf(c.hidden_act, sizeof c.hidden_act, "silu");
  c.vocab_size = 512, c.hidden_size = 256, c.intermediate_size = 512, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 64;
  c.max_position_embeddings = 256, c.rms_norm_eps = 1e-6, c.rope_theta = 10000.0, c.rope_factor = 1.0;
  c.tie_word_embeddings = 1, c.bos_token_id = -1, c.pad_token_id = -1;
  model *m = NULL;
  rl_err e = {0};
  MUST(model_create(&c, NULL, &m, &e));
  uint32_t s = seed;
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    for (int64_t j = 0; j < p->rows * p->cols; j++) {
      s = s * 1664525u + 1013904223u;
      float v = p->cols == 1 ? 0.5f + (float)(s >> 8) / 16777216.0f : ((float)(s >> 8) / 8388608.0f - 1.0f) * 0.05f;
      uint32_t b;
      memcpy(&b, &v, 4);
      p->w[j] = (uint16_t)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
    }
  }
  return m;
}

/* Logits of m on GPU dev for a fixed batch (host copy). */
static float *logits_of(model *m, int dev) {
  rl_err e = {0};
  static const int32_t tok[12] = {1, 5, 9, 200, 3, 77, 511, 0, 42, 42, 8, 300};
  int32_t off[3] = {0, 5, 12};
  model_batch b = {.T = 12, .tokens = tok, .seqs = {.n_seq = 2, .off = off}};
  CU(cudaSetDevice(dev));
  model_cuda_acts *a = model_cuda_acts_new();
  float *out = rl_xmalloc((size_t)12 * m->V * 4);
  MUST(model_cuda_forward(m, &b, NULL, a, &e));
  MUST(model_cuda_logits_to_host(a, out, &e));
  model_cuda_acts_free(a);
  return out;
}

/* sync_dp_reduce_grads / sync_dp_broadcast_masters on two model replicas. */
static void test_models(void) {
  rl_err e = {0};
  model *ms[2] = {rand_model(1), rand_model(2)};
  quant_policy p;
  quant_policy_init(&p, QFMT_BF16, QFMT_BF16);
  float **hg[2];
  for (int r = 0; r < 2; r++) {
    CU(cudaSetDevice(r));
    MUST(model_cuda_init(ms[r], &e));
    MUST(model_cuda_quantize(ms[r], &p, &e));
    MUST(model_cuda_grads_zero(ms[r], &e));
    hg[r] = rl_xcalloc((size_t)ms[r]->n_params, sizeof *hg[r]);
    for (int i = 0; i < ms[r]->n_params; i++) {
      int64_t n = ms[r]->params[i].rows * ms[r]->params[i].cols;
      hg[r][i] = rl_xmalloc((size_t)n * 4);
      for (int64_t j = 0; j < n; j++) hg[r][i][j] = rnd_float(r, j);
      CU(cudaMemcpy(model_cuda_param_at(ms[r], i)->g, hg[r][i], (size_t)n * 4, cudaMemcpyHostToDevice));
    }
  }
  int devs[2] = {0, 1};
  sync_dp *d = NULL;
  CU(cudaSetDevice(0));
  MUST(sync_dp_open(devs, 2, 1u << 20, &d, &e));
  int rc = sync_dp_reduce_grads(d, ms, &e);
  check(rc == 0, "models: sync_dp_reduce_grads over %d tensors%s%s", ms[0]->n_params, rc ? ": " : "", rc ? e.msg : "");
  int bad = -1, bad_r = -1;
  for (int i = 0; i < ms[0]->n_params && bad < 0; i++) {
    int64_t n = ms[0]->params[i].rows * ms[0]->params[i].cols, at;
    float *want = rl_xmalloc((size_t)n * 4), *got = rl_xmalloc((size_t)n * 4);
    const float *in[2] = {hg[0][i], hg[1][i]};
    sync_dp_sum_fixed(in, 2, n, want);
    for (int r = 0; r < 2 && bad < 0; r++) {
      CU(cudaSetDevice(r));
      CU(cudaMemcpy(got, model_cuda_param_at(ms[r], i)->g, (size_t)n * 4, cudaMemcpyDeviceToHost));
      if (!bits_equal(want, got, n, &at)) bad = i, bad_r = r;
    }
    free(want), free(got);
  }
  check(bad < 0, "models: every gradient on both GPUs == sync_dp_sum_fixed bitwise%s%s (rank %d)",
        bad >= 0 ? ", first difference: " : "", bad >= 0 ? ms[0]->params[bad].name : "", bad_r);
  float *l0 = logits_of(ms[0], 0), *l1 = logits_of(ms[1], 1);
  check(memcmp(l0, l1, (size_t)12 * ms[0]->V * 4) != 0, "models: different masters give different logits (the check can fail)");
  free(l1);
  CU(cudaSetDevice(0));
  rc = sync_dp_broadcast_masters(d, ms, &e);
  int wbad = -1;
  for (int i = 0; i < ms[0]->n_params && wbad < 0 && !rc; i++) {
    int64_t n = ms[0]->params[i].rows * ms[0]->params[i].cols;
    uint16_t *a = rl_xmalloc((size_t)n * 2), *b = rl_xmalloc((size_t)n * 2);
    CU(cudaSetDevice(0));
    CU(cudaMemcpy(a, model_cuda_param_at(ms[0], i)->w, (size_t)n * 2, cudaMemcpyDeviceToHost));
    CU(cudaSetDevice(1));
    CU(cudaMemcpy(b, model_cuda_param_at(ms[1], i)->w, (size_t)n * 2, cudaMemcpyDeviceToHost));
    if (memcmp(a, b, (size_t)n * 2) || memcmp(a, ms[0]->params[i].w, (size_t)n * 2)) wbad = i;
    free(a), free(b);
  }
  check(rc == 0 && wbad < 0, "models: broadcast masters: rank 1's BF16 masters == rank 0's%s%s", rc ? e.msg : "",
        wbad >= 0 ? ms[0]->params[wbad].name : "");
  CU(cudaSetDevice(1));
  MUST(model_cuda_quantize(ms[1], &p, &e)); /* views and FP32 norms from the new masters */
  l1 = logits_of(ms[1], 1);
  check(!memcmp(l0, l1, (size_t)12 * ms[0]->V * 4), "models: after the broadcast, rank 1's logits == rank 0's bitwise");
  free(l0), free(l1);
  CU(cudaSetDevice(0));
  sync_dp_close(d);
  for (int r = 0; r < 2; r++) {
    for (int i = 0; i < ms[r]->n_params; i++) free(hg[r][i]);
    free(hg[r]);
    CU(cudaSetDevice(r));
    model_free(ms[r]);
  }
  CU(cudaSetDevice(0));
}

int main(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
    printf("SKIP no GPU\n");
    return 0;
  }
  test_sum_kernel();
  if (n < 2) {
    printf("SKIP all-reduce: %d GPU (needs nvidia-h200-x2)\n", n);
  } else {
    for (int R = 2; R <= (n < 4 ? n : 4); R++) {
      test_allreduce(R, 1000);
      test_allreduce(R, 64u << 10);
      if (R == 2) test_allreduce(R, 0);
    }
    test_models();
  }
  printf("dp_gpu_test: %d passed, %d failed\n", g.pass, g.fail);
  return g.fail ? 1 : 0;
}

#else
int main(void) {
  printf("SKIP dp_gpu_test: built without CUDA\n");
  return 0;
}
#endif
