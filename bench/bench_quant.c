/* bench_quant.c — effective bandwidth of every CUDA quantizer on an
 * 8192×8192 BF16 matrix, next to a device-to-device copy of the same input
 * measured in the same run (the ceiling of a memory-bound kernel).
 *
 *   effective GB/s = (bytes read + bytes written) / median time
 *   read = 2 B per element (NVFP4 with its amax pass: 4 B — x is read twice)
 *   written = data (1 B or 0.5 B per element) + scales
 * Times are medians of 25 runs after 5 warm-ups, with CUDA events. Goals
 * (issue #4): >= 85% of copy for fp8-block 1×128 and MXFP8, >= 70% for
 * fp8-block 128×128 and NVFP4. `bench_quant N K` picks another shape. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/common.h"
#include "kernels/formats.h"
#include "kernels/quant.h"

#if RLRUN_CUDA
#include <cuda_runtime.h>

#include "bench/bench_cuda.h"

enum { NREP = 25, NWARM = 5 };

/* The buffers of one run. */
static struct {
  int64_t R, K;
  uint16_t *x;
  uint8_t *q, *s8;
  float *s32, *sdec, *amax;
  void *copy;
  quant_stats *st;
} B;

/* Which quantizer to time. */
enum { Q_COPY, Q_FP8A, Q_FP8A_HOP, Q_FP8W, Q_MX, Q_NVX, Q_NV, Q_NV2D, Q_NVSR, Q_COUNT };
static const char *qname[Q_COUNT] = {"cudaMemcpy D2D",          "fp8-block 1x128 act",  "fp8-block 1x128 -> cuBLASLt",
                                     "fp8-block 128x128 weight", "mxfp8 1x32",           "nvfp4 1x16 (amax given)",
                                     "nvfp4 1x16 (+amax pass)",  "nvfp4 16x16 (amax given)", "nvfp4 1x16 SR (amax given)"};

/* Enqueue one run of quantizer k. */
static void run_one(int k) {
  rl_err e;
  int64_t R = B.R, K = B.K, rc = 0;
  quant_opts o = {0};
  switch (k) {
    case Q_COPY: CU(cudaMemcpyAsync(B.copy, B.x, (size_t)(R * K) * 2, cudaMemcpyDeviceToDevice, 0)); return;
    case Q_FP8A: rc = quant_fp8_block_act_cuda(B.x, R, K, B.q, B.s32, NULL, B.st, NULL, &e); break;
    case Q_FP8A_HOP:
      o.scale_layout = QLAYOUT_HOPPER_ACT, o.scale_ld = R;
      rc = quant_fp8_block_act_cuda(B.x, R, K, B.q, B.s32, &o, B.st, NULL, &e);
      break;
    case Q_FP8W: rc = quant_fp8_block_weight_cuda(B.x, R, K, B.q, B.s32, NULL, B.st, NULL, &e); break;
    case Q_MX: rc = quant_mxfp8_cuda(B.x, R, K, B.q, B.s8, NULL, B.st, NULL, &e); break;
    case Q_NVX: rc = quant_nvfp4_amax_cuda(B.x, R, K, B.amax, B.q, B.s8, B.sdec, NULL, B.st, NULL, &e); break;
    case Q_NV: rc = quant_nvfp4_cuda(B.x, R, K, B.q, B.s8, B.sdec, NULL, B.st, NULL, &e); break;
    case Q_NV2D:
      o.nvfp4_2d = 1;
      rc = quant_nvfp4_amax_cuda(B.x, R, K, B.amax, B.q, B.s8, B.sdec, &o, B.st, NULL, &e);
      break;
    case Q_NVSR:
      o.stochastic = 1, o.sr_seed = 1, o.sr_offset = 2;
      rc = quant_nvfp4_amax_cuda(B.x, R, K, B.amax, B.q, B.s8, B.sdec, &o, B.st, NULL, &e);
      break;
  }
  if (rc) {
    fprintf(stderr, "%s: status %lld: %s\n", qname[k], (long long)rc, e.msg);
    exit(1);
  }
}

/* Bytes read + written by quantizer k. */
static double bytes_of(int k) {
  double n = (double)B.R * (double)B.K, in = 2 * n;
  switch (k) {
    case Q_COPY: return 2 * in;
    case Q_FP8A: case Q_FP8A_HOP: return in + n + (double)B.R * (double)quant_cdiv(B.K, 128) * 4;
    case Q_FP8W: return in + n + (double)quant_cdiv(B.R, 128) * (double)quant_cdiv(B.K, 128) * 4;
    case Q_MX: return in + n + (double)B.R * (double)quant_cdiv(B.K, 32);
    case Q_NV: return 2 * in + n / 2 + (double)B.R * (double)quant_cdiv(B.K, 16);
    default: return in + n / 2 + (double)B.R * (double)quant_cdiv(B.K, 16);
  }
}

static int cmp_f(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* Median milliseconds of NREP runs of quantizer k. */
static float time_ms(int k) {
  cudaEvent_t a, b;
  CU(cudaEventCreate(&a));
  CU(cudaEventCreate(&b));
  float t[NREP];
  for (int i = 0; i < NWARM; i++) run_one(k);
  for (int i = 0; i < NREP; i++) {
    CU(cudaEventRecord(a, 0));
    run_one(k);
    CU(cudaEventRecord(b, 0));
    CU(cudaEventSynchronize(b));
    CU(cudaEventElapsedTime(&t[i], a, b));
  }
  CU(cudaEventDestroy(a));
  CU(cudaEventDestroy(b));
  qsort(t, NREP, sizeof t[0], cmp_f);
  return t[NREP / 2];
}

int main(int argc, char **argv) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("bench_quant: no GPU — skipped (run tests/gpu/run.sh on the GPU machine)\n");
    return 0;
  }
  B.R = argc > 2 ? atoll(argv[1]) : 8192;
  B.K = argc > 2 ? atoll(argv[2]) : 8192;
  size_t n = (size_t)(B.R * B.K);
  uint16_t *h = rl_xmalloc(n * 2);
  uint64_t s = 12345;
  for (size_t i = 0; i < n; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    h[i] = fmt_bf16_from_f32((float)((int64_t)(s >> 40) - (1 << 23)) * 0x1p-20f);
  }
  CU(cudaMalloc((void **)&B.x, n * 2));
  CU(cudaMemcpy(B.x, h, n * 2, cudaMemcpyHostToDevice));
  free(h);
  CU(cudaMalloc((void **)&B.q, n));
  CU(cudaMalloc((void **)&B.copy, n * 2));
  CU(cudaMalloc((void **)&B.s8, n / 16 + 64));
  CU(cudaMalloc((void **)&B.s32, (n / 128 + 64) * 4));
  CU(cudaMalloc((void **)&B.sdec, 4));
  CU(cudaMalloc((void **)&B.amax, 4));
  CU(cudaMalloc((void **)&B.st, sizeof(quant_stats)));
  rl_err e;
  if (quant_amax_bf16_cuda(B.x, (int64_t)n, B.amax, NULL, NULL, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return 1;
  }
  CU(cudaDeviceSynchronize());
  struct cudaDeviceProp prop;
  CU(cudaGetDeviceProperties(&prop, 0));
  printf("bench_quant: %s, x = %lldx%lld BF16 (%.0f MiB), median of %d after %d warm-ups\n", prop.name,
         (long long)B.R, (long long)B.K, n * 2 / 1048576.0, NREP, NWARM);
  printf("%-30s %-4s %9s %10s %8s %6s\n", "kernel", "cvt", "time us", "eff GB/s", "of copy", "goal");
  double copy_bw = 0;
  for (int hw = 1; hw >= 0; hw--) {
    quant_cuda_set_hw_cvt(hw);
    for (int k = 0; k < Q_COUNT; k++) {
      if (k == Q_COPY && !hw) continue;
      float ms = time_ms(k);
      double bw = bytes_of(k) / (ms * 1e-3) / 1e9;
      if (k == Q_COPY) copy_bw = bw;
      const char *goal = k == Q_FP8A || k == Q_FP8A_HOP || k == Q_MX ? ">=85%"
                         : k == Q_FP8W || k == Q_NVX || k == Q_NV   ? ">=70%"
                                                                    : "";
      printf("%-30s %-4s %9.1f %10.0f %7.1f%% %6s\n", qname[k], k == Q_COPY ? "" : hw ? "hw" : "sw", ms * 1e3, bw,
             100.0 * bw / copy_bw, hw ? goal : "");
    }
  }
  quant_stats st;
  if (quant_stats_fetch_cuda(B.st, &st, NULL, &e) == 0 && st.n_nonfinite)
    printf("note: input reported %lld non-finite values\n", (long long)st.n_nonfinite);
  return 0;
}
#else
int main(void) {
  printf("bench_quant: built without CUDA — skipped\n");
  return 0;
}
#endif
