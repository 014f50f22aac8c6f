/* bench_sync.c — time of one weight sync (stages/sync.h) for a Qwen3-0.6B-
 * shaped model and a Qwen3-30B-A3B-shaped model with fewer layers (the same
 * per-layer shapes: hidden 2048, 32 heads / 4 KV heads of 128, 128 experts of
 * FFN 768, top-8, vocab 151936, untied), fp8-block and BF16, next to two
 * ceilings measured in the same run:
 *   colocated (GPU 0): sync_colocated's timer = model_cuda_quantize (the
 *     multi-tensor re-quantization + the norm refresh + its one stats copy)
 *     and a device synchronize, nothing else (the manifest and the views are
 *     built after it), effective GB/s = (BF16 bytes read of the quantized
 *     weights + bytes written) / time, against a cudaMemcpy D2D (read +
 *     write) of 1 GiB;
 *   separate (GPU 0 → GPU 1, needs 2 GPUs): sync_nccl_run, payload GB/s =
 *     bytes broadcast / time, against a plain ncclBroadcast of one 1 GiB buffer.
 * Goal (issue #11): ≥ 80% of the measured bandwidth in both cases. Medians of
 * 5 syncs after one warm-up. Options: --moe-layers N (default 4), --bucket-mb
 * N (default 512). Prints one table; rows start with '|'. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "stages/sync.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

enum { NREP = 5 };

#define MUST(call)                                                               \
  do {                                                                           \
    if ((call) != 0) {                                                           \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, e.msg);     \
      exit(3);                                                                   \
    }                                                                            \
  } while (0)

/* A model of the given shape with small random BF16 weights. */
static model *make_model(int moe, int layers, uint32_t seed) {
  model_config c;
  memset(&c, 0, sizeof c);
  c.kind = moe ? MODEL_KIND_QWEN3_MOE : MODEL_KIND_QWEN3;
  snprintf(c.model_type, sizeof c.model_type, "%s", moe ? "qwen3_moe" : "qwen3");
  snprintf(c.rope_type, sizeof c.rope_type, "default");
  snprintf(c.hidden_act, sizeof c.hidden_act, "silu");
  c.vocab_size = 151936, c.num_hidden_layers = layers, c.head_dim = 128;
  c.max_position_embeddings = 4096, c.rms_norm_eps = 1e-6, c.rope_theta = 1e6, c.rope_factor = 1.0;
  c.bos_token_id = -1, c.pad_token_id = -1;
  if (moe) {
    c.hidden_size = 2048, c.intermediate_size = 6144, c.num_attention_heads = 32, c.num_key_value_heads = 4;
    c.num_experts = 128, c.num_experts_per_tok = 8, c.moe_intermediate_size = 768, c.decoder_sparse_step = 1;
    c.norm_topk_prob = 1, c.tie_word_embeddings = 0;
  } else {
    c.hidden_size = 1024, c.intermediate_size = 3072, c.num_attention_heads = 16, c.num_key_value_heads = 8;
    c.tie_word_embeddings = 1;
  }
  model *m = NULL;
  rl_err e = {0};
  MUST(model_create(&c, NULL, &m, &e));
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    int64_t n = p->rows * p->cols;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; j++) {
      uint32_t s = (uint32_t)j * 2654435761u ^ (seed + (uint32_t)i * 97u);
      s ^= s >> 15, s *= 2246822519u, s ^= s >> 13;
      /* BF16 in about ±0.03 (exponent 121..122), random mantissa and sign */
      p->w[j] = p->cols == 1 ? 0x3F80 : (uint16_t)(((s >> 31) << 15) | ((121u + (s & 1)) << 7) | ((s >> 1) & 0x7F));
    }
  }
  return m;
}

/* Median of n values (sorted in place). */
static double median(double *v, int n) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
      double x = v[j];
      v[j] = v[j - 1], v[j - 1] = x;
    }
  return v[n / 2];
}

/* D2D copy bandwidth (read + write, GB/s) of 1 GiB on the current GPU. */
static double copy_gbps(void) {
  size_t n = (size_t)1 << 30;
  void *a = NULL, *b = NULL;
  if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess) return 0;
  cudaMemset(a, 1, n);
  double t[NREP];
  for (int r = -1; r < NREP; r++) {
    cudaDeviceSynchronize();
    double t0 = rl_now();
    cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
    cudaDeviceSynchronize();
    if (r >= 0) t[r] = rl_now() - t0;
  }
  cudaFree(a), cudaFree(b);
  return 2.0 * (double)n / median(t, NREP) / 1e9;
}

/* BF16 bytes the re-quantization reads: the master of every quantized entry's tensor. */
static double quant_read_bytes(const sync_manifest *mf) {
  double r = 0;
  for (int i = 0; i < mf->n; i++)
    if (mf->v[i].part == SYNC_PART_DATA) r += (double)(mf->v[i].rows * mf->v[i].cols) * 2;
  return r;
}

/* One shape × format: the colocated and (with 2 GPUs) the NCCL rows. */
static void bench_case(const char *shape, int moe, int layers, qformat f, double copy, double p2p, int two,
                       uint64_t bucket) {
  rl_err e = {0};
  quant_policy p;
  quant_policy_init(&p, f, f);
  const char *fn = qtensor_format_name(f);
  model *mt = make_model(moe, layers, 1);
  cudaSetDevice(0);
  MUST(model_cuda_init(mt, &e));
  sync_manifest mf;
  MUST(sync_manifest_build(mt, &p, 1, bucket, &mf, &e));
  double t[NREP];
  sync_stats st;
  sync_opts o = {0};
  for (int r = -1; r < NREP; r++) {
    MUST(sync_colocated(mt, &p, &o, &st, &e));
    if (r >= 0) t[r] = st.quant_ms; /* = st.ms without verify: model_cuda_quantize + sync */
  }
  double ms = median(t, NREP), traffic = quant_read_bytes(&mf) + (double)mf.quantized;
  if (f == QFMT_BF16)
    printf("| %-22s | %-9s | colocated | %9.3f ms | %8.2f GB | views are the master: nothing to re-quantize |\n", shape,
           fn, ms, 0.0);
  else
    printf("| %-22s | %-9s | colocated | %9.3f ms | %8.2f GB | %7.0f GB/s r+w = %5.1f%% of D2D copy %.0f GB/s |\n",
           shape, fn, ms, traffic / 1e9, traffic / (ms * 1e6), 100.0 * traffic / (ms * 1e6) / copy, copy);
  if (two) {
    model *mr = make_model(moe, layers, 2);
    cudaSetDevice(1);
    MUST(model_cuda_init(mr, &e));
    MUST(model_cuda_quantize(mr, &p, &e));
    sync_nccl *s = NULL;
    const int rdev[1] = {1};
    MUST(sync_nccl_open(0, rdev, 1, bucket, &s, &e));
    double tt[NREP], tx[NREP];
    for (int r = -1; r < NREP; r++) {
      MUST(sync_nccl_run(s, mt, &mr, &p, &o, &st, &e));
      if (r >= 0) tt[r] = st.ms, tx[r] = st.transfer_ms;
    }
    double tot = median(tt, NREP), xfer = median(tx, NREP), gb = (double)st.bytes / 1e9;
    printf("| %-22s | %-9s | nccl      | %9.3f ms | %8.2f GB | %7.0f GB/s = %5.1f%% of ncclBroadcast %.0f GB/s "
           "(transfer alone %.3f ms: %5.1f%%; %lld buckets) |\n",
           shape, fn, tot, gb, gb * 1e3 / tot, 100.0 * gb * 1e3 / tot / p2p, p2p, xfer, 100.0 * gb * 1e3 / xfer / p2p,
           (long long)st.buckets);
    sync_nccl_close(s);
    cudaSetDevice(1);
    model_free(mr);
  }
  sync_manifest_free(&mf);
  cudaSetDevice(0);
  model_free(mt);
}

int main(int argc, char **argv) {
  int moe_layers = 4;
  uint64_t bucket = SYNC_DEFAULT_BUCKET;
  for (int i = 1; i + 1 < argc; i++) {
    if (!strcmp(argv[i], "--moe-layers")) moe_layers = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--bucket-mb")) bucket = (uint64_t)atoll(argv[++i]) << 20;
  }
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
    printf("bench_sync: no GPU, skipped\n");
    return 0;
  }
  cudaSetDevice(0);
  double copy = copy_gbps(), p2p = 0;
  int two = n >= 2;
  if (two) {
    rl_err e = {0};
    sync_nccl *s = NULL;
    const int rdev[1] = {1};
    MUST(sync_nccl_open(0, rdev, 1, bucket, &s, &e));
    double ms = 0;
    MUST(sync_nccl_bench_broadcast(s, (uint64_t)1 << 30, NREP, &ms, &e));
    p2p = (double)(1u << 30) / (ms * 1e6);
    sync_nccl_close(s);
  }
  printf("bench_sync: D2D copy %.0f GB/s (r+w); ncclBroadcast GPU0->GPU1 %s; bucket %llu MiB\n", copy,
         two ? "measured" : "skipped (1 GPU: needs nvidia-h200-x2)", (unsigned long long)(bucket >> 20));
  if (two) printf("bench_sync: ncclBroadcast 1 GiB: %.0f GB/s\n", p2p);
  char moe_name[64];
  snprintf(moe_name, sizeof moe_name, "qwen3-30b-a3b x%d layers", moe_layers);
  const qformat fmts[2] = {QFMT_FP8_BLOCK, QFMT_BF16};
  for (int k = 0; k < 2; k++) bench_case("qwen3-0.6b", 0, 28, fmts[k], copy, p2p, two, bucket);
  for (int k = 0; k < 2; k++) bench_case(moe_name, 1, moe_layers, fmts[k], copy, p2p, two, bucket);
  return 0;
}

#else
int main(void) {
  printf("bench_sync: built without CUDA, skipped\n");
  return 0;
}
#endif
