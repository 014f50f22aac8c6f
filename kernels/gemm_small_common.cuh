/* gemm_small_common.cuh — what the two small-M decode GEMMs of gemm.h
 * (gemm_small_cuda.cu: BF16; gemm_small_fp8_cuda.cu: fp8-block) share, word for
 * word:
 *
 *   Device    the PTX wrappers of the cluster reduction (distributed shared
 *             memory; the cp.async ring, MMA, prefetch and PDL ones come from
 *             ptx_util.cuh), the in-order float4 add of the slice sum and the
 *             BF16 rounding of the stores.
 *   Host      the per-device state (split-K workspace and tile counters, the
 *             kernel attributes raised and the cluster sizes asked once per
 *             device) and what works on it: the CUDA-status check, the workspace
 *             grower, the current-device query, the cluster launch configuration
 *             and its occupancy question, the release.
 *
 * The error messages name the caller: `who` is its prefix ("gemm_small" or
 * "gemm_small_fp8"), so a message reads as it did when each file had its own
 * copy. Included by .cu files only; everything sits in an anonymous namespace
 * (each translation unit its own copy: no symbol shared, no ODR question). */
#ifndef RLRUN_GEMM_SMALL_COMMON_CUH
#define RLRUN_GEMM_SMALL_COMMON_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "kernels/common.h" /* C linkage for rl_errf (common.h has no extern "C") */
#include "kernels/device.h"
}
#include "kernels/formats.h"
#include "kernels/ptx_util.cuh"

namespace {

__host__ __device__ constexpr int gs_clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---------------------------------------------------------------- PTX wrappers
 * (cp.async, MMA, L2 prefetch, PDL: kernels/ptx_util.cuh) */


__device__ __forceinline__ float4 cluster_ld4(uint32_t a) {
  float4 v;
  asm volatile("ld.shared::cluster.v4.f32 {%0,%1,%2,%3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(a)
               : "memory");
  return v;
}

__device__ __forceinline__ float4 add4(float4 a, float4 b) {
  return make_float4(__fadd_rn(a.x, b.x), __fadd_rn(a.y, b.y), __fadd_rn(a.z, b.z), __fadd_rn(a.w, b.w));
}

/* An int as a type, for a generic lambda's compile-time argument. */
template <int V>
struct sg_ic {
  static constexpr int value = V;
};

/* FP32 rounded to BF16 (RNE, the project's codec), as FP32. */
__device__ __forceinline__ float bf16_round(float v) { return fmt_bf16_to_f32(fmt_bf16_from_f32(v)); }

/* The fp8-block scale step both small-M fp8 GEMMs apply after a 128-K block's
 * MMAs: acc[i][h + 2v] += part[i][h + 2v] · (sx[rc + 8i + h] ·_rn sw), one fused
 * multiply-add (accumulator element (i, h, v) is x row rc + 8i + h of the tile). */
template <int MB, bool A8 = false> /* A8: sx + rc is 8-byte aligned (rc even): the pairs in one load */
__device__ __forceinline__ void gs_fp8_scale_acc(float (&acc)[MB][4], const float (&part)[MB][4], const float *sx,
                                                 float sw, int rc) {
#pragma unroll
  for (int i = 0; i < MB; i++) {
    float sp[2];
    if constexpr (A8) {
      const float2 v = *reinterpret_cast<const float2 *>(sx + rc + 8 * i);
      sp[0] = v.x, sp[1] = v.y;
    } else {
      sp[0] = sx[rc + 8 * i], sp[1] = sx[rc + 8 * i + 1];
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const float s = __fmul_rn(sp[h], sw);
      acc[i][h] = __fmaf_rn(part[i][h], s, acc[i][h]);
      acc[i][h + 2] = __fmaf_rn(part[i][h + 2], s, acc[i][h + 2]);
    }
  }
}

/* ---------------------------------------------------------------- host side */

/* The state per device of one GEMM, NK kernel instances: the workspace (grown on
 * demand; a captured graph holds its pointers, hence device_buffers_changed() on
 * every move) and what has been asked of each kernel instance once per device. */
template <int NK>
struct gs_state {
  void *ws[DEVICE_MAX_GPUS], *cnt[DEVICE_MAX_GPUS];
  size_t ws_cap[DEVICE_MAX_GPUS], cnt_cap[DEVICE_MAX_GPUS];
  unsigned attr[DEVICE_MAX_GPUS];          /* bit kid: the shared-memory limit is raised */
  unsigned clu_asked[DEVICE_MAX_GPUS][NK]; /* bit S: cluster size S asked of the occupancy API */
  unsigned clu_ok[DEVICE_MAX_GPUS][NK];    /* bit S: … and it can be scheduled */
  int n_devices;                           /* cudaGetDeviceCount, -1 until asked */
};
#define GS_STATE_INIT {{0}, {0}, {0}, {0}, {0}, {{0}}, {{0}}, -1}

/* Check a CUDA runtime status; the message names the call. */
inline int gs_ok(cudaError_t st, const char *who, const char *what, rl_err *e) {
  if (st == cudaSuccess) return 0;
  cudaGetLastError();
  return rl_errf(e, RL_EXIT_FAIL, "%s: %s failed: %s", who, what, cudaGetErrorString(st));
}

/* *buf with at least `bytes` (grown by 25 % headroom); zero: cleared on (re)allocation. */
inline void *gs_grow(void **buf, size_t *cap, size_t bytes, int zero, cudaStream_t s, const char *who,
                     const char *what, rl_err *e) {
  if (*cap >= bytes) return *buf;
  if (*buf && gs_ok(cudaFree(*buf), who, "cudaFree of the workspace", e)) return NULL;
  *buf = NULL, *cap = 0;
  size_t c = bytes + bytes / 4;
  device_buffers_changed();
  if (gs_ok(cudaMalloc(buf, c), who, what, e)) return NULL;
  if (zero && gs_ok(cudaMemsetAsync(*buf, 0, c, s), who, "cudaMemsetAsync of the tile counters", e)) return NULL;
  *cap = c;
  return *buf;
}

/* Device dev's split-K workspace, wsb bytes (*ws), and its tile counters, cb
 * bytes zeroed when allocated (*cnt); RL_EXIT_FAIL when either cannot be had. */
template <int NK>
int gs_workspace(gs_state<NK> &g, int dev, size_t wsb, size_t cb, cudaStream_t s, const char *who, float **ws,
                 unsigned **cnt, rl_err *e) {
  *ws = (float *)gs_grow(&g.ws[dev], &g.ws_cap[dev], wsb, 0, s, who, "cudaMalloc of the split-K workspace", e);
  *cnt = *ws ? (unsigned *)gs_grow(&g.cnt[dev], &g.cnt_cap[dev], cb, 1, s, who, "cudaMalloc of the tile counters", e)
             : NULL;
  return *cnt ? 0 : RL_EXIT_FAIL;
}

/* The current device, when there is a usable one. */
template <int NK>
int gs_device(gs_state<NK> &g, const char *who, int *dev, rl_err *e) {
  cudaError_t st = cudaSuccess;
  *dev = 0;
  int nd = __atomic_load_n(&g.n_devices, __ATOMIC_ACQUIRE);
  if (nd < 0) { /* asked once (threads of a split rollout may ask at the same time: the same answer) */
    st = cudaGetDeviceCount(&nd);
    if (st != cudaSuccess) cudaGetLastError(), nd = 0;
    __atomic_store_n(&g.n_devices, nd, __ATOMIC_RELEASE);
  }
  if (nd > 0) st = cudaGetDevice(dev);
  if (nd == 0 || st != cudaSuccess) {
    cudaGetLastError();
    return rl_errf(e, RL_EXIT_HARDWARE, "%s: no usable CUDA device (%s); use device: cpu", who,
                   st != cudaSuccess ? cudaGetErrorString(st) : "the driver reports none");
  }
  if (*dev < 0 || *dev >= DEVICE_MAX_GPUS)
    return rl_errf(e, RL_EXIT_HARDWARE, "%s: device %d beyond the %d supported", who, *dev, DEVICE_MAX_GPUS);
  return 0;
}

/* Raise kernel `kern`'s (instance kid) dynamic shared-memory limit to `bytes`, once per device. */
template <int NK, typename F>
int gs_smem_attr(gs_state<NK> &g, F kern, int kid, int dev, int bytes, const char *who, rl_err *e) {
  if (!(g.attr[dev] >> kid & 1)) {
    if (gs_ok(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), who,
              "cudaFuncSetAttribute (shared memory)", e))
      return RL_EXIT_FAIL;
    g.attr[dev] |= 1u << kid;
  }
  return 0;
}

/* The launch configuration of a grid of CTAs, in clusters of the given shape where
 * it holds more than one CTA, with programmatic stream serialization where pdl
 * (at: room for both attributes). */
inline cudaLaunchConfig_t gs_launch_cfg(cudaLaunchAttribute at[2], dim3 cluster, int pdl, dim3 grid, int threads,
                                        int bytes, cudaStream_t s) {
  cudaLaunchConfig_t cfg = {};
  int n = 0;
  if (cluster.x * cluster.y * cluster.z > 1) {
    at[n] = cudaLaunchAttribute{};
    at[n].id = cudaLaunchAttributeClusterDimension;
    at[n].val.clusterDim.x = cluster.x, at[n].val.clusterDim.y = cluster.y, at[n].val.clusterDim.z = cluster.z;
    n++;
  }
  if (pdl) {
    at[n] = cudaLaunchAttribute{};
    at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[n].val.programmaticStreamSerializationAllowed = 1;
    n++;
  }
  cfg.gridDim = grid, cfg.blockDim = dim3((unsigned)threads), cfg.dynamicSmemBytes = (size_t)bytes;
  cfg.stream = s, cfg.attrs = n ? at : NULL, cfg.numAttrs = (unsigned)n;
  return cfg;
}

/* 1 when clusters of S CTAs of kernel `kern` can be scheduled on this device
 * (asked once per device, kernel and S; any error: no). */
template <int NK, typename F>
int gs_cluster_ok(gs_state<NK> &g, F kern, int kid, int dev, int S, int threads, int bytes) {
  if (!(g.clu_asked[dev][kid] >> S & 1)) {
    cudaLaunchAttribute at[2];
    cudaLaunchConfig_t cfg = gs_launch_cfg(at, dim3((unsigned)S), 0, dim3((unsigned)S), threads, bytes, NULL);
    int n = 0;
    cudaError_t st = cudaOccupancyMaxActiveClusters(&n, kern, &cfg);
    if (st != cudaSuccess) cudaGetLastError(), n = 0;
    g.clu_asked[dev][kid] |= 1u << S;
    if (n > 0) g.clu_ok[dev][kid] |= 1u << S;
  }
  return g.clu_ok[dev][kid] >> S & 1;
}

inline cudaStream_t gs_stream(void *stream) { return stream ? (cudaStream_t)stream : cudaStreamPerThread; }

/* Free every device's workspace and counters (best effort, as gemm_cuda_release). */
template <int NK>
void gs_release(gs_state<NK> &g) {
  int freed = 0;
  for (int d = 0; d < DEVICE_MAX_GPUS; d++) {
    if (g.ws[d]) cudaFree(g.ws[d]), freed = 1;
    if (g.cnt[d]) cudaFree(g.cnt[d]), freed = 1;
    g.ws[d] = g.cnt[d] = NULL, g.ws_cap[d] = g.cnt_cap[d] = 0;
  }
  if (freed) device_buffers_changed();
}

} /* namespace */

#endif
