/* gemm_cuda_int.h — private to gemm_cuda.cu and gemm_pin_cuda.cu: what both share
 * (constants, the plan cache and pin structs, the per-device state gemm_G, and the
 * helpers one file defines and the other calls). Not for other files. */
#ifndef RLRUN_KERNELS_GEMM_CUDA_INT_H
#define RLRUN_KERNELS_GEMM_CUDA_INT_H

extern "C" {
#include "kernels/common.h"
#include "kernels/device.h"
}
#include <cuda_runtime.h>

/* The stream of a call: NULL is the per-thread default stream, which must be
 * named explicitly to cuBLASLt (a library compiled for the legacy stream). */
static inline cudaStream_t gemm_stream(void *s) { return s ? (cudaStream_t)s : cudaStreamPerThread; }
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <math.h>
#include <string.h>

#include "kernels/formats.h"
#include "kernels/gemm.h"

#define GEMM_WS_BYTES ((size_t)32 << 20) /* cuBLASLt workspace per device (Hopper: 32 MiB advised) */
#define GEMM_PLAN_SLOTS 1024             /* open-addressing table; flushed when 3/4 full */
#define GEMM_PIN_SLOTS 256
#define GEMM_PIN_CANDIDATES 32
#define GEMM_PIN_BUCKETS 8   /* M ≤ 64, ≤ 128, … ≤ 4096, larger (the reference, chosen at GEMM_PIN_M) */
#define GEMM_PIN_VERIFY_M 1024
#define GEMM_PIN_VERIFY_N 2048
#define GEMM_PIN_TRIES 16    /* no-split-K candidates verified and timed per bucket */

/* What a plan multiplies. */
enum gemm_kind { GK_BF16, GK_FP8_BLOCK, GK_F32, GK_MXFP8, GK_NVFP4 };

/* Everything that makes two plans differ (zero-initialised, compared bytewise). */
struct gemm_key {
  int dev, kind, ta, tb, out_f32, accumulate, alpha_dev, pin;
  int64_t m, n, k;
};

struct gemm_plan {
  int used;
  gemm_key key;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, lc; /* cuBLASLt A (= our B), B (= our A), C = D */
  cublasLtMatmulAlgo_t algo;
  size_t ws;
  int algo_id, splitk, pinned;
};

struct gemm_pin {
  int used;
  gemm_key key;                                /* m = 0 */
  cublasLtMatmulAlgo_t algo;                   /* the reference, chosen at GEMM_PIN_M */
  cublasLtMatmulAlgo_t bucket[GEMM_PIN_BUCKETS];
  int chosen[GEMM_PIN_BUCKETS];                /* 0: not yet, 1: own algorithm, 2: the reference */
};

/* Scratch buffers per device (padding, layout conversion, dequantized operands;
 * GS_V*: the synthetic operands and outputs of the pin verification). */
enum { GS_XQ, GS_XS, GS_WS, GS_Y, GS_XD, GS_WD, GS_VX, GS_VW, GS_VS, GS_VY, GS_COUNT };

/* All of the GEMM files' state (defined in gemm_cuda.cu). */
struct gemm_state {
  int asked, n_devices; /* asked: cudaGetDeviceCount was called */
  cublasLtHandle_t lt[DEVICE_MAX_GPUS];
  void *ws[DEVICE_MAX_GPUS];
  float *consts[DEVICE_MAX_GPUS]; /* device: [0] = 1, [1] = 0, [2] = alpha of the last NVFP4 call */
  int cc_major[DEVICE_MAX_GPUS], cc_minor[DEVICE_MAX_GPUS];
  void *scr[DEVICE_MAX_GPUS][GS_COUNT];
  size_t scr_cap[DEVICE_MAX_GPUS][GS_COUNT];
  /* per device, so that host threads driving different devices (a rollout
   * split over GPUs) never touch the same table */
  gemm_plan plans[DEVICE_MAX_GPUS][GEMM_PLAN_SLOTS];
  int n_plans[DEVICE_MAX_GPUS];
  gemm_pin pins[DEVICE_MAX_GPUS][GEMM_PIN_SLOTS];
  int n_pins[DEVICE_MAX_GPUS];
};
extern gemm_state gemm_G;

/* defined in gemm_cuda.cu */
int cu_ok(cudaError_t st, const char *what, rl_err *e);
int lt_ok(cublasStatus_t st, const char *what, rl_err *e);
int launch_ok(const char *kernel, rl_err *e);
void *gemm_scratch(int dev, int slot, size_t bytes, rl_err *e);
unsigned gemm_grid(int64_t n);
int plan_layouts(const gemm_key *k, int64_t m, cublasLtMatrixLayout_t *la,
                 cublasLtMatrixLayout_t *lb, cublasLtMatrixLayout_t *lc, rl_err *e);
int plan_heuristic(int dev, const gemm_key *k, cublasLtMatmulDesc_t desc,
                   cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                   cublasLtMatrixLayout_t lc, int no_splitk, int nth, int64_t m,
                   cublasLtMatmulAlgo_t *algo, size_t *ws, rl_err *e);

/* defined in gemm_pin_cuda.cu */
int plan_pinned_algo(const gemm_key *k, cublasLtMatmulDesc_t desc, cublasLtMatmulAlgo_t *algo,
                     cublasLtMatmulAlgo_t *ref, rl_err *e);

#endif
