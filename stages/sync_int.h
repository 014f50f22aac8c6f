/* sync_int.h — what the sync stage's files share (sync.c, sync_verify.c,
 * sync_cuda.c, sync_kern.cu); not an API for other modules. */
#ifndef RLRUN_SYNC_INT_H
#define RLRUN_SYNC_INT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/common.h"

/* One piece of a batched copy: n bytes from src to dst (device pointers). */
typedef struct sync_seg {
  const uint8_t *src;
  uint8_t *dst;
  uint64_t n;
} sync_seg;

/* Largest piece one block of the batched copy kernel takes (bytes). */
#define SYNC_SEG_CHUNK (64u << 10)

/* Launch the batched copy of the n pieces segs (a DEVICE array) on stream
 * (cudaStream_t as void *, NULL = default) of the current device. */
int sync_copy_segs_cuda(const sync_seg *segs, int n, void *stream, rl_err *e);

/* Most ranks of a data-parallel group (= DEVICE_MAX_GPUS). */
#define SYNC_DP_MAX_RANKS 16

/* The device twin of sync_dp_sum_fixed: out[j] = ((g[0][j] + g[1][j]) + …)
 * in rank order, one FP32 round-to-nearest add per rank (no FMA), for j < n;
 * g is a HOST array of n_ranks device pointers of the current device, out
 * may alias any of them. Launched on stream (NULL = default). */
int sync_dp_sum_cuda(const float *const *g, int n_ranks, int64_t n, float *out, void *stream, rl_err *e);

/* Device ↔ host copies of the current device (synchronous) and a device-wide
 * wait; RL_EXIT_HARDWARE in a build without CUDA. */
int sync_dev_fetch(void *host, const void *dev, uint64_t n, rl_err *e);
int sync_dev_store(void *dev, const void *host, uint64_t n, rl_err *e);
int sync_dev_wait(rl_err *e);

#if !defined(__CUDACC__)
#include "stages/sync.h"
/* Fault points sync.corrupt / sync.corrupt_scale (tests): flip one byte of
 * the first quantized data / scales entry of view v (host or device). */
int sync_fault_corrupt(const sync_manifest *mf, const sync_view *v, rl_err *e);
#endif

#ifdef __cplusplus
}
#endif

#endif
