/* ptx_util.cuh — the inline-PTX wrappers the hand-written tensor-core and
 * streaming kernels share (kernels/ops_attn_tc_cuda.cu, the small-M GEMMs of
 * gemm_small_common.cuh, stages/rollout_cuda_kern.cu): shared-memory
 * addresses, the cp.async ring, the BF16 m16n8k16 MMA, the L2 prefetch and
 * programmatic dependent launch. Included by .cu files only; everything sits
 * in an anonymous namespace (each translation unit its own copy). */
#ifndef RLRUN_PTX_UTIL_CUH
#define RLRUN_PTX_UTIL_CUH

#include <cuda_runtime.h>
#include <stdint.h>

namespace {

/* The shared-state-space address of generic pointer p (into shared memory). */
__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* 16 bytes global → shared (L2 only), asynchronously; bytes = 0 writes zeros. */
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
/* 16 bytes global → shared (L2 only), asynchronously, all of them. */
__device__ __forceinline__ void cp_async16_all(uint32_t dst, const void *src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/* Until at most N of this thread's committed groups are still in flight. */
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* c (16×8 FP32) += a (16×16 BF16, row) · b (16×8 BF16, col). */
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Ask L2 to fetch `bytes` (a multiple of 16) at 16-byte aligned p; nothing lands in the SM. */
__device__ __forceinline__ void l2_prefetch(const void *p, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes) : "memory");
}
/* Programmatic dependent launch: let the next grid of the stream launch … */
__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
/* … and wait until the previous grid has completed and its writes are visible
 * (returns at once when this grid was not launched as a dependent). */
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

} /* namespace */

#endif
