/* quant_layout.c — scale layouts: between the checkpoint layout (row-major,
 * one scale per block) and what cuBLASLt consumes: Hopper's VEC128 activation
 * scales (M contiguous) and BLK128x128 weight scales (K-blocks padded to 4),
 * and Blackwell's swizzled 128×4 tiles for MXFP8 (E8M0) / NVFP4 (E4M3) scales. */
#include <string.h>

#include "kernels/quant.h"

void quant_layout_fp8_act_scales_to_cublaslt(const float *src, int64_t M, int64_t kb, int64_t ld,
                                             float *dst) {
  for (int64_t j = 0; j < kb; j++) {
    for (int64_t m = 0; m < M; m++) dst[j * ld + m] = src[m * kb + j];
    for (int64_t m = M; m < ld; m++) dst[j * ld + m] = 1.0f;
  }
}

void quant_layout_fp8_act_scales_from_cublaslt(const float *src, int64_t M, int64_t kb, int64_t ld,
                                               float *dst) {
  for (int64_t m = 0; m < M; m++)
    for (int64_t j = 0; j < kb; j++) dst[m * kb + j] = src[j * ld + m];
}

void quant_layout_fp8_weight_scales_to_cublaslt(const float *src, int64_t nb, int64_t kb,
                                                float *dst) {
  int64_t kp = quant_roundup(kb, 4);
  for (int64_t n = 0; n < nb; n++)
    for (int64_t j = 0; j < kp; j++) dst[n * kp + j] = j < kb ? src[n * kb + j] : 1.0f;
}

void quant_layout_fp8_weight_scales_from_cublaslt(const float *src, int64_t nb, int64_t kb,
                                                  float *dst) {
  int64_t kp = quant_roundup(kb, 4);
  for (int64_t n = 0; n < nb; n++)
    for (int64_t j = 0; j < kb; j++) dst[n * kb + j] = src[n * kp + j];
}

size_t quant_layout_swizzle_bytes(int64_t rows, int64_t cols) {
  return (size_t)quant_roundup(rows, 128) * (size_t)quant_roundup(cols, 4);
}

size_t quant_layout_swizzle_offset(int64_t r, int64_t c, int64_t cols) {
  int64_t tile = (r / 128) * quant_cdiv(cols, 4) + c / 4;
  return (size_t)(tile * 512 + (r % 32) * 16 + ((r / 32) % 4) * 4 + c % 4);
}

void quant_layout_scales_to_swizzled(const uint8_t *src, int64_t rows, int64_t cols, uint8_t *dst) {
  memset(dst, 0, quant_layout_swizzle_bytes(rows, cols));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) dst[quant_layout_swizzle_offset(r, c, cols)] = src[r * cols + c];
}

void quant_layout_scales_from_swizzled(const uint8_t *src, int64_t rows, int64_t cols,
                                       uint8_t *dst) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) dst[r * cols + c] = src[quant_layout_swizzle_offset(r, c, cols)];
}
