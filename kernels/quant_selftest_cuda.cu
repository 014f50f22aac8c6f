/* quant_selftest_cuda.cu — the device diagnostics of quant.h for tests/gpu
 * (quant_cuda_selftest_e4m3, quant_cuda_selftest_fast): the fast device forms
 * of formats.h's rules that the quantizers of quant_cuda.cu use
 * (quant_cuda_dev.cuh), checked on the device against formats.h and
 * __fdiv_rn over every input pattern where that is cheap. */
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/formats.h"
#include "kernels/quant.h"
#include "kernels/quant_cuda_dev.cuh"

#define QCHECK(call)                                                                     \
  do {                                                                                   \
    cudaError_t err_ = (call);                                                           \
    if (err_ != cudaSuccess) {                                                           \
      rl_errf(e, RL_EXIT_HARDWARE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,           \
              cudaGetErrorString(err_));                                                 \
      return QUANT_CUDA_ERROR;                                                           \
    }                                                                                    \
  } while (0)
#define QLAUNCH() QCHECK(cudaGetLastError())

/* Every FP32 pattern hi·2^24 + [0, 2^24): hardware vs software E4M3 codes. */
__global__ void k_selftest_e4m3(uint32_t hi, unsigned long long *count, unsigned long long *first) {
  const uint32_t u = (hi << 24) | (blockIdx.x * blockDim.x + threadIdx.x);
  const float f = __uint_as_float(u);
  const uint8_t hw = (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3), sw = fmt_e4m3_from_f32(f);
  /* NaN: both must give a NaN code (the sign of a NaN is not part of the contract) */
  const bool same = hw == sw || ((hw & 0x7F) == 0x7F && (sw & 0x7F) == 0x7F);
  if (!same) {
    atomicAdd(count, 1ull);
    atomicMin(first, (unsigned long long)u);
  }
}

/* Every non-negative FP32 pattern hi·2^24 + [0, 2^24) (NaN skipped): the
 * fast E2M1 encoders against formats.h (RNE; SR with a hash of the pattern as
 * the random draw). */
__global__ void k_selftest_e2m1(uint32_t hi, unsigned long long *count) {
  const uint32_t u = (hi << 24) | (blockIdx.x * blockDim.x + threadIdx.x);
  if (u > 0x7f800000u) return;
  const float y = __uint_as_float(u);
  const uint32_t r = (u * 0x9E3779B9u) ^ (u >> 13) ^ 0x5bd1e995u;
  if (qd_e2m1_mag_biased(y) - QD_E2M1_BIAS != fmt_e2m1_from_f32(y)) atomicAdd(count, 1ull);
  if (qd_e2m1_sr_mag(y, r) != fmt_e2m1_from_f32_sr(y, r)) atomicAdd(count + 1, 1ull);
}

/* Markstein division against __fdiv_rn, bit for bit, over every pair (BF16
 * significand of x in [1, 2), either sign) × (FP32 significand of s in [1, 2)):
 * every quotient significand the quantizer can meet. */
__global__ void k_selftest_mdiv_grid(unsigned long long *count) {
  const float s = __uint_as_float(0x3f800000u | (blockIdx.x * blockDim.x + threadIdx.x));
  const float r = __frcp_rn(s);
  unsigned long long bad = 0;
  for (uint32_t m = 0; m < 256; m++) {
    const float x = __uint_as_float(((m & 128u) << 24) | 0x3f800000u | ((m & 127u) << 16));
    bad += __float_as_uint(qd_mdiv(x, s, r)) != __float_as_uint(__fdiv_rn(x, s));
  }
  if (bad) atomicAdd(count, bad);
}

/* E4M3 codes of x/s, Markstein vs __fdiv_rn, for every finite BF16 x with
 * |x/s| <= 2^10 (the quantizer's |x/s| <= 448) and s = 2^E·(1 + frac): E in
 * [-90, 125] (blockIdx.y), 16 significands (blockIdx.z) from a hash. */
__global__ void k_selftest_mdiv_exp(unsigned long long *count) {
  const uint32_t h = (blockIdx.y * 16 + blockIdx.z) * 0x9E3779B9u;
  const float s = __uint_as_float(((uint32_t)(blockIdx.y + 127 - 90) << 23) | ((h ^ (h >> 9)) & 0x7fffffu));
  const uint32_t xb = blockIdx.x * blockDim.x + threadIdx.x;
  const float x = __uint_as_float(xb << 16);
  if (!qd_mdiv_ok(s) || !qf_isfinite(x)) return;
  const float ref = __fdiv_rn(x, s);
  if (!(fabsf(ref) <= 1024.0f)) return;
  const uint8_t a = (uint8_t)__nv_cvt_float_to_fp8(qd_mdiv(x, s, __frcp_rn(s)), __NV_SATFINITE, __NV_E4M3);
  const uint8_t b = (uint8_t)__nv_cvt_float_to_fp8(ref, __NV_SATFINITE, __NV_E4M3);
  if (a != b) atomicAdd(count, 1ull);
}

/* ---------------------------------------------------------------- host side */

extern "C" int quant_cuda_selftest_e4m3(int64_t *mismatch, int64_t *first, rl_err *e) {
  unsigned long long *d = NULL, h[2] = {0, ~0ull};
  QCHECK(cudaMalloc((void **)&d, 2 * sizeof *d));
  QCHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice));
  for (uint32_t hi = 0; hi < 256; hi++) {
    k_selftest_e4m3<<<(1u << 24) / 256, 256>>>(hi, d, d + 1);
    QLAUNCH();
  }
  QCHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  QCHECK(cudaFree(d));
  *mismatch = (int64_t)h[0];
  *first = h[0] ? (int64_t)h[1] : -1;
  return 0;
}

extern "C" int quant_cuda_selftest_fast(int64_t mismatch[4], rl_err *e) {
  unsigned long long *d = NULL, h[4] = {0, 0, 0, 0};
  QCHECK(cudaMalloc((void **)&d, sizeof h));
  QCHECK(cudaMemset(d, 0, sizeof h));
  for (uint32_t hi = 0; hi < 128; hi++) {
    k_selftest_e2m1<<<(1u << 24) / 256, 256>>>(hi, d);
    QLAUNCH();
  }
  k_selftest_mdiv_grid<<<(1u << 23) / 256, 256>>>(d + 2);
  QLAUNCH();
  k_selftest_mdiv_exp<<<dim3(65536 / 256, 216, 16), 256>>>(d + 3);
  QLAUNCH();
  QCHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
  QCHECK(cudaFree(d));
  for (int i = 0; i < 4; i++) mismatch[i] = (int64_t)h[i];
  return 0;
}
