/* bench_cuda.h — what the CUDA benchmarks share: CU (tests/cuda_check.h: a
 * CUDA runtime call that must succeed, else exit 3 naming the call) and the
 * device copy bandwidth every "% of copy" / bound is measured against.
 * For C files built with RLRUN_CUDA (include after <stdio.h> / <stdlib.h>). */
#ifndef RLRUN_BENCH_CUDA_H
#define RLRUN_BENCH_CUDA_H
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#include "tests/cuda_check.h" /* CU */

/* Device-to-device copy bandwidth of 1 GiB (bytes/s, read + written counted:
 * the rate a kernel that only reads can at best stream at): 10 copies after
 * one warm-up, timed with events. */
static inline double bench_copy_bw(void) {
  const size_t n = (size_t)1 << 30;
  void *a, *b;
  cudaEvent_t e0, e1;
  float ms;
  CU(cudaMalloc(&a, n));
  CU(cudaMalloc(&b, n));
  CU(cudaEventCreate(&e0));
  CU(cudaEventCreate(&e1));
  CU(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  CU(cudaEventRecord(e0, 0));
  for (int i = 0; i < 10; i++) CU(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  CU(cudaEventRecord(e1, 0));
  CU(cudaEventSynchronize(e1));
  CU(cudaEventElapsedTime(&ms, e0, e1));
  CU(cudaFree(a));
  CU(cudaFree(b));
  cudaEventDestroy(e0), cudaEventDestroy(e1);
  return 2.0 * (double)n * 10 / (ms * 1e-3);
}
#endif
