/* model_cuda_kern.cu — the CUDA model's own small kernels (model_cuda_int.h):
 * residual adds, BF16 accumulation, the MoE gather / combine and their
 * backward, head padding for the attention kernel, the norm weights'
 * BF16 → FP32 refresh (one launch over a list). Deterministic: every sum
 * has one owner and a fixed order, no atomics. */
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "kernels/common.h"
}
#include "model/model_cuda_int.h"

#define MCK_LAUNCHED()                                                                       \
  do {                                                                                       \
    cudaError_t err_ = cudaGetLastError();                                                   \
    if (err_ != cudaSuccess)                                                                 \
      return rl_errf(e, RL_EXIT_HARDWARE, "%s: kernel launch failed: %s", __func__,          \
                     cudaGetErrorString(err_));                                              \
  } while (0)

namespace {

constexpr int NT = 256;

/* Blocks for n threads' worth of work (grid-stride loops beyond the cap). */
unsigned blocks_for(int64_t n) {
  int64_t b = (n + NT - 1) / NT;
  if (b < 1) b = 1;
  return (unsigned)(b > (1 << 20) ? (1 << 20) : b);
}

__device__ __forceinline__ float bf(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

__global__ void add_kernel(float *out, const float *a, const float *b, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n; i += (int64_t)gridDim.x * NT)
    out[i] = __fadd_rn(a[i], b[i]);
}

/* out = a + FP32(b), four elements a thread (n % 4 == 0, 16/8-byte aligned). */
__global__ void add_bf16_kernel(float *out, const float *a, const uint16_t *b, int64_t n4) {
  for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n4; i += (int64_t)gridDim.x * NT) {
    const float4 x = reinterpret_cast<const float4 *>(a)[i];
    const uint2 y = reinterpret_cast<const uint2 *>(b)[i];
    reinterpret_cast<float4 *>(out)[i] =
        make_float4(__fadd_rn(x.x, __uint_as_float(y.x << 16)), __fadd_rn(x.y, __uint_as_float(y.x & 0xffff0000u)),
                    __fadd_rn(x.z, __uint_as_float(y.y << 16)), __fadd_rn(x.w, __uint_as_float(y.y & 0xffff0000u)));
  }
}

__global__ void acc_bf16_kernel(float *dx, const uint16_t *xb, int64_t n, int add) {
  for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n; i += (int64_t)gridDim.x * NT)
    dx[i] = add ? __fadd_rn(dx[i], bf(xb[i])) : bf(xb[i]);
}

__global__ void gather_kernel(uint16_t *xg, const uint16_t *x, const int32_t *sor, int64_t R, int k,
                              int H) {
  int64_t n = R * H;
  for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n; i += (int64_t)gridDim.x * NT) {
    int64_t r = i / H, c = i % H, t = sor[r] / k;
    xg[i] = x[t * H + c];
  }
}

__global__ void combine_kernel(float *out, const float *eout, const float *rw, const int32_t *ros, int T,
                               int k, int H) {
  int64_t n = (int64_t)T * H;
  for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n; i += (int64_t)gridDim.x * NT) {
    int64_t t = i / H, c = i % H;
    float s = 0.0f;
    for (int j = 0; j < k; j++) {
      int64_t sl = t * k + j;
      s = __fadd_rn(s, __fmul_rn(rw[sl], eout[(int64_t)ros[sl] * H + c]));
    }
    out[i] = s;
  }
}

/* One warp per slot: lane-strided partial sums, then a fixed xor tree. */
__global__ void combine_bwd_kernel(float *dw, float *deout, const float *dy, const float *eout,
                                   const float *rw, const int32_t *ros, int64_t R, int k, int H) {
  int lane = threadIdx.x & 31;
  for (int64_t s = ((int64_t)blockIdx.x * NT + threadIdx.x) >> 5; s < R; s += ((int64_t)gridDim.x * NT) >> 5) {
    int64_t t = s / k, r = ros[s];
    float w = rw[s], acc = 0.0f;
    for (int i = lane; i < H; i += 32) {
      float g = dy[t * H + i];
      acc = __fadd_rn(acc, __fmul_rn(g, eout[r * H + i]));
      deout[r * H + i] = __fmul_rn(w, g);
    }
    for (int o = 16; o > 0; o >>= 1) acc = __fadd_rn(acc, __shfl_xor_sync(0xffffffffu, acc, o));
    if (lane == 0) dw[s] = acc;
  }
}

__global__ void sum_rows_kernel(float *dx, const float *dxg, const int32_t *ros, int T, int k, int H) {
  int64_t n = (int64_t)T * H;
  for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n; i += (int64_t)gridDim.x * NT) {
    int64_t t = i / H, c = i % H;
    float s = 0.0f;
    for (int j = 0; j < k; j++) s = __fadd_rn(s, dxg[(int64_t)ros[t * k + j] * H + c]);
    dx[i] = s;
  }
}

__global__ void pad_kernel(float *dst, const float *src, int64_t rows, int d, int dp, float scale) {
  int64_t n = rows * dp;
  for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n; i += (int64_t)gridDim.x * NT) {
    int64_t r = i / dp;
    int c = (int)(i % dp);
    dst[i] = c < d ? __fmul_rn(src[r * d + c], scale) : 0.0f;
  }
}

__global__ void unpad_kernel(float *dst, const float *src, int64_t rows, int d, int dp, float scale) {
  int64_t n = rows * d;
  for (int64_t i = (int64_t)blockIdx.x * NT + threadIdx.x; i < n; i += (int64_t)gridDim.x * NT) {
    int64_t r = i / d;
    int c = (int)(i % d);
    dst[i] = __fmul_rn(src[r * dp + c], scale);
  }
}

__global__ void fmax2_kernel(float *out, const float *a, const float *b) { out[0] = fmaxf(a[0], b[0]); }

/* Entry blockIdx.x of the list: dst = FP32 of the BF16 src. */
__global__ void cvt_list_kernel(const mck_cvt *l) {
  const mck_cvt c = l[blockIdx.x];
  for (int64_t i = threadIdx.x; i < c.n; i += NT) c.dst[i] = bf(c.src[i]);
}

}  // namespace

extern "C" int mck_add_f32(float *out, const float *a, const float *b, int64_t n, rl_err *e) {
  if (n <= 0) return 0;
  add_kernel<<<blocks_for(n), NT>>>(out, a, b, n);
  MCK_LAUNCHED();
  return 0;
}

/* 1 when both pointers are aligned to a bytes (NULL passes). */
static int all_aligned(unsigned a, const void *p0, const void *p1) {
  return (uintptr_t)p0 % a == 0 && (uintptr_t)p1 % a == 0;
}

extern "C" int mck_add_bf16(float *out, const float *a, const uint16_t *b, int64_t n, rl_err *e) {
  if (n <= 0) return 0;
  if (n % 4 || !all_aligned(16, out, a) || !all_aligned(8, b, NULL))
    return rl_errf(e, RL_EXIT_USAGE, "mck_add_bf16: %lld elements or the pointers are not 4-aligned", (long long)n);
  add_bf16_kernel<<<blocks_for(n / 4), NT>>>(out, a, b, n / 4);
  MCK_LAUNCHED();
  return 0;
}

extern "C" int mck_acc_bf16(float *dx, const uint16_t *xb, int64_t n, int add, rl_err *e) {
  if (n <= 0) return 0;
  acc_bf16_kernel<<<blocks_for(n), NT>>>(dx, xb, n, add);
  MCK_LAUNCHED();
  return 0;
}

extern "C" int mck_moe_gather(uint16_t *xg, const uint16_t *x, const int32_t *slot_of_row, int64_t R, int k,
                              int H, rl_err *e) {
  if (R <= 0) return 0;
  gather_kernel<<<blocks_for(R * H), NT>>>(xg, x, slot_of_row, R, k, H);
  MCK_LAUNCHED();
  return 0;
}

extern "C" int mck_moe_combine(float *out, const float *eout, const float *rw, const int32_t *row_of_slot,
                               int T, int k, int H, rl_err *e) {
  if (T <= 0) return 0;
  combine_kernel<<<blocks_for((int64_t)T * H), NT>>>(out, eout, rw, row_of_slot, T, k, H);
  MCK_LAUNCHED();
  return 0;
}

extern "C" int mck_moe_combine_bwd(float *dw, float *deout, const float *dy, const float *eout,
                                   const float *rw, const int32_t *row_of_slot, int T, int k, int H,
                                   rl_err *e) {
  int64_t R = (int64_t)T * k;
  if (R <= 0) return 0;
  combine_bwd_kernel<<<blocks_for(R * 32), NT>>>(dw, deout, dy, eout, rw, row_of_slot, R, k, H);
  MCK_LAUNCHED();
  return 0;
}

extern "C" int mck_moe_sum_rows(float *dx, const float *dxg, const int32_t *row_of_slot, int T, int k, int H,
                                rl_err *e) {
  if (T <= 0) return 0;
  sum_rows_kernel<<<blocks_for((int64_t)T * H), NT>>>(dx, dxg, row_of_slot, T, k, H);
  MCK_LAUNCHED();
  return 0;
}

extern "C" int mck_pad_heads(float *dst, const float *src, int64_t rows, int d, int dp, float scale,
                             rl_err *e) {
  if (rows <= 0) return 0;
  pad_kernel<<<blocks_for(rows * dp), NT>>>(dst, src, rows, d, dp, scale);
  MCK_LAUNCHED();
  return 0;
}

extern "C" int mck_unpad_heads(float *dst, const float *src, int64_t rows, int d, int dp, float scale,
                               rl_err *e) {
  if (rows <= 0) return 0;
  unpad_kernel<<<blocks_for(rows * d), NT>>>(dst, src, rows, d, dp, scale);
  MCK_LAUNCHED();
  return 0;
}

extern "C" int mck_fmax2(float *out, const float *a, const float *b, rl_err *e) {
  fmax2_kernel<<<1, 1>>>(out, a, b);
  MCK_LAUNCHED();
  return 0;
}

extern "C" int mck_f32_from_bf16_list(const mck_cvt *l, int n, rl_err *e) {
  if (n <= 0) return 0;
  cvt_list_kernel<<<n, NT>>>(l);
  MCK_LAUNCHED();
  return 0;
}
