/* device.c — device_query: versions of the CUDA libraries this binary links
 * and the GPUs the driver reports. Plain C against the CUDA runtime API. */
#include "device.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#if RLRUN_CUDA
#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

void device_query(device_info *info) {
  memset(info, 0, sizeof *info);
#if RLRUN_CUDA
  info->built_with_cuda = 1;
  cudaRuntimeGetVersion(&info->cuda_runtime);
  if (cudaDriverGetVersion(&info->cuda_driver) != cudaSuccess) info->cuda_driver = 0;
  info->cublaslt = cublasLtGetVersion();
  int v = 0;
  if (ncclGetVersion(&v) == ncclSuccess) info->nccl = v;
  int n = 0;
  cudaError_t st = cudaGetDeviceCount(&n);
  if (st != cudaSuccess) {
    if (info->cuda_driver == 0 || st == cudaErrorNoDevice)
      snprintf(info->status, sizeof info->status, "%s",
               info->cuda_driver == 0 ? "no NVIDIA driver found" : "the driver reports no device");
    else
      snprintf(info->status, sizeof info->status, "%s", cudaGetErrorString(st));
    cudaGetLastError(); /* clear the sticky-free error so later calls start clean */
    return;
  }
  if (n > DEVICE_MAX_GPUS) n = DEVICE_MAX_GPUS;
  for (int i = 0; i < n; i++) {
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    device_gpu *g = &info->gpus[info->n_gpus++];
    g->index = i;
    snprintf(g->name, sizeof g->name, "%s", p.name);
    g->cc_major = p.major;
    g->cc_minor = p.minor;
    g->mem_bytes = p.totalGlobalMem;
    g->sm_count = p.multiProcessorCount;
  }
  if (info->n_gpus == 0) snprintf(info->status, sizeof info->status, "the driver reports none");
#else
  snprintf(info->status, sizeof info->status, "this binary was built without CUDA");
#endif
}

/* One counter per device: a rollout split over GPUs (one thread a GPU) grows
 * one device's buffers without invalidating the graphs captured on another.
 * Atomic: the threads of different devices may read any counter. */
static _Atomic unsigned long device_epoch[DEVICE_MAX_GPUS];
static int epoch_slot(void) {
  int d = device_current();
  return d >= 0 && d < DEVICE_MAX_GPUS ? d : 0;
}
unsigned long device_buffers_epoch(void) { return atomic_load(&device_epoch[epoch_slot()]); }
void device_buffers_changed(void) { atomic_fetch_add(&device_epoch[epoch_slot()], 1); }
void device_buffers_changed_all(void) {
  for (int d = 0; d < DEVICE_MAX_GPUS; d++) atomic_fetch_add(&device_epoch[d], 1);
}

int device_set_current(int gpu, rl_err *e) {
#if RLRUN_CUDA
  int n = 0;
  cudaError_t st = cudaGetDeviceCount(&n);
  if (st != cudaSuccess) {
    cudaGetLastError();
    return rl_errf(e, RL_EXIT_HARDWARE, "GPU %d: no usable GPU (%s)", gpu, cudaGetErrorString(st));
  }
  if (gpu < 0 || gpu >= n)
    return rl_errf(e, RL_EXIT_HARDWARE,
                   "GPU %d does not exist: this machine has %d GPU%s (0..%d); name GPUs it has in gpus.rollout "
                   "and gpus.train", gpu, n, n == 1 ? "" : "s", n - 1);
  st = cudaSetDevice(gpu);
  if (st != cudaSuccess) return rl_errf(e, RL_EXIT_HARDWARE, "GPU %d: cudaSetDevice failed: %s", gpu, cudaGetErrorString(st));
  return 0;
#else
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "GPU %d: this binary was built without CUDA; rebuild with nvcc available or use device: cpu", gpu);
#endif
}

int device_current(void) {
  int d = 0;
#if RLRUN_CUDA
  if (cudaGetDevice(&d) != cudaSuccess) d = 0;
#endif
  return d;
}

int device_sm_count(void) {
#if RLRUN_CUDA
  static _Atomic int sms[DEVICE_MAX_GPUS]; /* 0: not asked yet (threads of one device may ask at once: same answer) */
  const int d = device_current();
  if (d >= 0 && d < DEVICE_MAX_GPUS && sms[d] > 0) return sms[d];
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, d) != cudaSuccess || n < 1) {
    cudaGetLastError();
    return 0;
  }
  if (d >= 0 && d < DEVICE_MAX_GPUS) sms[d] = n;
  return n;
#else
  return 0;
#endif
}
