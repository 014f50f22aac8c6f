/* ops_cuda_util.cuh — what the CUDA files of the operators (ops_cuda.cu,
 * ops_router_cuda.cu) share: the checked-call macros, launch sizes, warp
 * reductions. Included by .cu files only. */
#ifndef RLRUN_OPS_CUDA_UTIL_CUH
#define RLRUN_OPS_CUDA_UTIL_CUH

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

extern "C" {
#include "kernels/common.h" /* C linkage for rl_errf & co. (common.h has no guards) */
}
#include "kernels/formats.h"
#include "kernels/ops.h"

#define OCHECK(call)                                                                      \
  do {                                                                                    \
    cudaError_t err_ = (call);                                                            \
    if (err_ != cudaSuccess)                                                              \
      return rl_errf(e, RL_EXIT_HARDWARE, "%s (%s:%d): %s: %s", __func__, __FILE__, __LINE__, \
                     #call, cudaGetErrorString(err_));                                    \
  } while (0)
#define OLAUNCH() OCHECK(cudaGetLastError())
#define FULL 0xffffffffu

enum { WARPS = 8, NTHR = WARPS * 32, LSM_THREADS = 512, DW_ROWS = 128, ROPE_MAX_HALF = 256 };

/* Blocks for n items at per items per block, capped for grid-stride loops. */
static inline unsigned grid_for(int64_t n, int per) {
  int64_t b = (n + per - 1) / per;
  if (b < 1) b = 1;
  return (unsigned)(b > (1 << 20) ? (1 << 20) : b);
}

/* 1 when p is aligned to a bytes. */
static inline int aligned(const void *p, unsigned a) { return ((uintptr_t)p % a) == 0; }

/* ---------------------------------------------------------------- device helpers */

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
  return v;
}

/* FP32 of BF16 bits. */
__device__ __forceinline__ float bf(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

#endif
