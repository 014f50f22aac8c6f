/* formats.c — array forms of the element codecs in formats.h (the codecs
 * themselves are inline there, shared with CUDA). */
#include "kernels/formats.h"

void fmt_bf16_from_f32_n(const float *x, uint16_t *out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) out[i] = fmt_bf16_from_f32(x[i]);
}

void fmt_bf16_to_f32_n(const uint16_t *x, float *out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) out[i] = fmt_bf16_to_f32(x[i]);
}

void fmt_e4m3_to_f32_n(const uint8_t *x, float *out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; i++) out[i] = fmt_e4m3_to_f32(x[i]);
}
