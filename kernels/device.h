/* device.h — what compute this process can use: the build's capabilities and
 * the GPUs the CUDA driver reports. Works (and says "no GPU") in CPU-only
 * builds and on machines without a driver. */
#ifndef RLRUN_DEVICE_H
#define RLRUN_DEVICE_H

#include <stddef.h>

#include "kernels/common.h"

#define DEVICE_MAX_GPUS 16

typedef struct device_gpu {
  int index;
  char name[256];
  int cc_major, cc_minor; /* compute capability */
  size_t mem_bytes;       /* total global memory */
  int sm_count;
} device_gpu;

typedef struct device_info {
  int built_with_cuda;  /* 1 when this binary contains CUDA code */
  int cuda_runtime;     /* cudaRuntimeGetVersion, e.g. 13000; 0 when absent */
  int cuda_driver;      /* cudaDriverGetVersion; 0 when no driver */
  size_t cublaslt;      /* cublasLtGetVersion, e.g. 130100; 0 when absent */
  int nccl;             /* ncclGetVersion, e.g. 22805; 0 when absent */
  int n_gpus;
  device_gpu gpus[DEVICE_MAX_GPUS];
  char status[256];     /* why no GPU is usable, when n_gpus == 0: the reason alone
                         * ("no NVIDIA driver found"), for callers to wrap */
} device_info;

/* Fill *info; never fails (a missing driver is reported in info->status). */
void device_query(device_info *info);

/* Make GPU `gpu` the calling thread's current CUDA device: every later CUDA
 * call of the thread (allocations, launches, the per-thread default stream)
 * goes there. A run with the trainer and the rollout engine on different
 * GPUs switches around each phase (runner/loop_gpu.c). RL_EXIT_HARDWARE
 * naming the GPU when it does not exist or the build has no CUDA. */
int device_set_current(int gpu, rl_err *e);
/* The calling thread's current CUDA device (0 without CUDA). */
int device_current(void);
/* The SM count of the calling thread's current device, asked of the driver
 * once per device and kept (grid sizes by the wave); 0 without CUDA or when
 * the driver cannot say (the error is cleared). */
int device_sm_count(void);

/* A counter bumped whenever a reused device buffer (a scratch or workspace
 * grown on demand, activation buffers, weight views) is freed or allocated: a
 * captured CUDA graph holds raw pointers, and stays valid only while this
 * counter is unchanged (stages/rollout_cuda.c re-captures otherwise).
 * The counter is per device (the calling thread's current one);
 * device_buffers_changed_all bumps every device's (buffers of all devices freed). */
unsigned long device_buffers_epoch(void);
void device_buffers_changed(void);
void device_buffers_changed_all(void);

#endif
