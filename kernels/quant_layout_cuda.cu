/* quant_layout_cuda.cu — the scale layout conversions of quant_layout.c on
 * the device (same layouts, same padding values). Scales are small (1/16 to
 * 1/16384 of the data), so these are plain one-thread-per-output kernels. */
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/quant.h"

#define LCHECK(call)                                                                     \
  do {                                                                                   \
    cudaError_t err_ = (call);                                                           \
    if (err_ != cudaSuccess) {                                                           \
      rl_errf(e, RL_EXIT_HARDWARE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,           \
              cudaGetErrorString(err_));                                                 \
      return QUANT_CUDA_ERROR;                                                           \
    }                                                                                    \
  } while (0)

/* [M][kb] → [kb][ld], padding columns 1.0. */
__global__ void k_act_to_cublaslt(const float *src, int64_t M, int64_t kb, int64_t ld, float *dst) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= kb * ld) return;
  const int64_t j = i / ld, m = i % ld;
  dst[i] = m < M ? src[m * kb + j] : 1.0f;
}

/* [nb][kb] → [nb][roundup(kb,4)], padding 1.0. */
__global__ void k_weight_to_cublaslt(const float *src, int64_t nb, int64_t kb, float *dst) {
  const int64_t kp = (kb + 3) / 4 * 4, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= nb * kp) return;
  const int64_t n = i / kp, j = i % kp;
  dst[i] = j < kb ? src[n * kb + j] : 1.0f;
}

/* Row-major byte scales → swizzled 128×4 tiles; one thread per output byte. */
__global__ void k_to_swizzled(const uint8_t *src, int64_t rows, int64_t cols, uint8_t *dst) {
  const int64_t ncb = (cols + 3) / 4, total = (rows + 127) / 128 * 128 * ncb * 4;
  const int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= total) return;
  const int64_t tile = o / 512, w = o % 512;
  const int64_t r = (tile / ncb) * 128 + ((w / 4) % 4) * 32 + w / 16, c = (tile % ncb) * 4 + w % 4;
  dst[o] = (r < rows && c < cols) ? src[r * cols + c] : 0;
}

extern "C" int quant_layout_fp8_act_scales_to_cublaslt_cuda(const float *src, int64_t M, int64_t kb,
                                                            int64_t ld, float *dst, void *stream, rl_err *e) {
  if (kb * ld == 0) return 0;
  k_act_to_cublaslt<<<(unsigned)((kb * ld + 255) / 256), 256, 0, (cudaStream_t)stream>>>(src, M, kb, ld, dst);
  LCHECK(cudaGetLastError());
  return 0;
}

extern "C" int quant_layout_fp8_weight_scales_to_cublaslt_cuda(const float *src, int64_t nb, int64_t kb,
                                                               float *dst, void *stream, rl_err *e) {
  int64_t n = nb * ((kb + 3) / 4 * 4);
  if (n == 0) return 0;
  k_weight_to_cublaslt<<<(unsigned)((n + 255) / 256), 256, 0, (cudaStream_t)stream>>>(src, nb, kb, dst);
  LCHECK(cudaGetLastError());
  return 0;
}

extern "C" int quant_layout_scales_to_swizzled_cuda(const uint8_t *src, int64_t rows, int64_t cols,
                                                    uint8_t *dst, void *stream, rl_err *e) {
  int64_t n = (int64_t)quant_layout_swizzle_bytes(rows, cols);
  if (n == 0) return 0;
  k_to_swizzled<<<(unsigned)((n + 255) / 256), 256, 0, (cudaStream_t)stream>>>(src, rows, cols, dst);
  LCHECK(cudaGetLastError());
  return 0;
}
