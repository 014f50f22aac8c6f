/* cuda_check.h — CU(call): a CUDA runtime call that must succeed; otherwise
 * the program stops with exit code 3, naming the call, file and line on
 * stderr. For the GPU tests (tests/gpu) and the benchmarks (bench/), which
 * have nothing to recover. Include after <stdio.h> and <stdlib.h>. */
#ifndef RLRUN_TESTS_CUDA_CHECK_H
#define RLRUN_TESTS_CUDA_CHECK_H
#include <cuda_runtime_api.h>

#define CU(call)                                                                              \
  do {                                                                                        \
    cudaError_t err_ = (call);                                                                \
    if (err_ != cudaSuccess) {                                                                \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      exit(3);                                                                                \
    }                                                                                         \
  } while (0)
#endif
