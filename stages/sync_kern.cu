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

// The fixed-order gradient sum of data parallelism (sync.h, sync_dp_sum_fixed
// is the CPU reference): out[j] = ((g0[j] + g1[j]) + g2[j]) + … in rank order,
// one round-to-nearest FP32 add per rank (__fadd_rn: never contracted into an
// FMA), so the bits equal the CPU function's. out may alias any g[r].
struct sync_dp_ptrs {
  const float *g[SYNC_DP_MAX_RANKS];
};
__global__ void sync_dp_sum_kernel(sync_dp_ptrs p, int n_ranks, int64_t n, float *out) {
  for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (int64_t)gridDim.x * blockDim.x) {
    float acc = p.g[0][j];
    for (int r = 1; r < n_ranks; r++) acc = __fadd_rn(acc, p.g[r][j]);
    out[j] = acc;
  }
}

extern "C" int sync_dp_sum_cuda(const float *const *g, int n_ranks, int64_t n, float *out, void *stream, rl_err *e) {
  if (n_ranks < 1 || n_ranks > SYNC_DP_MAX_RANKS)
    return rl_errf(e, RL_EXIT_USAGE, "sync_dp_sum_cuda: %d ranks (1 … %d)", n_ranks, SYNC_DP_MAX_RANKS);
  if (n <= 0) return 0;
  sync_dp_ptrs p = {};
  for (int r = 0; r < n_ranks; r++) p.g[r] = g[r];
  int64_t blocks = (n + 255) / 256;
  if (blocks > 4096) blocks = 4096; // grid-stride beyond: a few waves of 132 SMs
  sync_dp_sum_kernel<<<(unsigned)blocks, 256, 0, static_cast<cudaStream_t>(stream)>>>(p, n_ranks, n, out);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return rl_errf(e, RL_EXIT_HARDWARE, "sync (CUDA): the fixed-order sum kernel (%d ranks, %lld floats) failed to "
                   "launch: %s", n_ranks, (long long)n, cudaGetErrorString(err));
  return 0;
}
