// sync_kern.cu — the batched copy kernel of the sync stage (sync_int.h): one
// launch packs (or unpacks) every piece of a bucket, one block per piece of
// at most SYNC_SEG_CHUNK bytes, 16-byte vector copies when both ends are
// 16-byte aligned (the manifest aligns every entry to SYNC_ALIGN = 16, and
// cudaMalloc'd views and bucket buffers are 256-aligned), bytes otherwise.
#include <cuda_runtime.h>
#include <stdint.h>

#include "stages/sync_int.h"

// Copy piece blockIdx.x of segs.
__global__ void sync_copy_segs_kernel(const sync_seg *segs) {
  const sync_seg s = segs[blockIdx.x];
  uint64_t head = 0;
  if ((((uintptr_t)s.src | (uintptr_t)s.dst) & 15) == 0) {
    const uint64_t nv = s.n / 16;
    const uint4 *a = reinterpret_cast<const uint4 *>(s.src);
    uint4 *b = reinterpret_cast<uint4 *>(s.dst);
    for (uint64_t j = threadIdx.x; j < nv; j += blockDim.x) b[j] = a[j];
    head = nv * 16;
  }
  for (uint64_t j = head + threadIdx.x; j < s.n; j += blockDim.x) s.dst[j] = s.src[j];
}

extern "C" int sync_copy_segs_cuda(const sync_seg *segs, int n, void *stream, rl_err *e) {
  if (n <= 0) return 0;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  // at most 2^31 − 1 blocks in x: a bucket of 64 KiB pieces never comes near
  sync_copy_segs_kernel<<<n, 256, 0, st>>>(segs);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return rl_errf(e, RL_EXIT_HARDWARE, "sync (CUDA): the batched copy kernel (%d pieces) failed to launch: %s", n,
                   cudaGetErrorString(err));
  return 0;
}
