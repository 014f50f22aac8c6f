/* ptx_util.cuh — the inline-PTX wrappers the hand-written tensor-core and
 * streaming kernels share (kernels/ops_attn_tc_cuda.cu, the small-M GEMMs of
 * gemm_small_common.cuh, stages/rollout_cuda_kern.cu): shared-memory
 * addresses, the cp.async ring, the BF16 m16n8k16 MMA, Hopper's warpgroup MMA
 * (wgmma), the L2 prefetch and programmatic dependent launch. Included by .cu
 * files only; everything sits in an anonymous namespace (each translation unit
 * its own copy). */
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
/* An mbarrier in shared memory (8 bytes, 8-aligned) expecting `count` arrivals
 * a phase; then made visible to the async proxy (the bulk copies). */
__device__ __forceinline__ void mbar_init(uint64_t *bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
/* This thread's arrival, announcing `bytes` more to land by complete_tx. */
__device__ __forceinline__ void mbar_arrive_tx(uint64_t *bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
/* Until the phase of parity `parity` has completed. */
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
  uint32_t done;
  do
    asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(smem_u32(bar)), "r"(parity)
                 : "memory");
  while (!done);
}
/* Whether the phase of parity `parity` has completed, without waiting. */
__device__ __forceinline__ bool mbar_test(uint64_t *bar, uint32_t parity) {
  uint32_t done;
  asm volatile("{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
               : "=r"(done)
               : "r"(smem_u32(bar)), "r"(parity)
               : "memory");
  return done != 0;
}
/* `bytes` (a multiple of 16, both ends 16-aligned) global → shared by the bulk
 * copy engine, completing on bar's transaction count. */
__device__ __forceinline__ void bulk_g2s(void *dst, const void *src, uint32_t bytes, uint64_t *bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_u32(dst)),
               "l"(src), "r"(bytes), "r"(smem_u32(bar))
               : "memory");
}

/* The same with an L2 cache policy (l2_policy_evict_first). */
__device__ __forceinline__ void bulk_g2s_hint(void *dst, const void *src, uint32_t bytes, uint64_t *bar, uint64_t pol) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;\n" ::"r"(
          smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar)), "l"(pol)
      : "memory");
}
/* An L2 policy: lines loaded under it are the first evicted. */
__device__ __forceinline__ uint64_t l2_policy_evict_first() {
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
  return pol;
}

/* Every thread of the cluster arrives (its shared-memory writes released) and
 * waits for all the others (their writes acquired). Not .aligned: the threads
 * may come from loops of different trip counts. */
__device__ __forceinline__ void cluster_sync() {
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
}

/* The same barrier without the release: for the end of a kernel whose CTAs only
 * wait for each other's reads of their shared memory to be done (a read's value is
 * in a register, used, before the arrive is issued), with nothing to publish. */
__device__ __forceinline__ void cluster_sync_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed;\nbarrier.cluster.wait;\n" ::: "memory");
}

/* The shared::cluster address of shared-memory address a in CTA `rank` of the cluster. */
__device__ __forceinline__ uint32_t cluster_map(uint32_t a, int rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(rank));
  return r;
}
/* This CTA's rank in its cluster. */
__device__ __forceinline__ int cluster_rank() {
  uint32_t r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return (int)r;
}
/* Loads and stores at shared::cluster addresses (cluster_map). */
__device__ __forceinline__ uint32_t cluster_ld_u32(uint32_t a) {
  uint32_t v;
  asm volatile("ld.shared::cluster.u32 %0, [%1];\n" : "=r"(v) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ void cluster_st_f64(uint32_t a, double v) {
  asm volatile("st.shared::cluster.f64 [%0], %1;\n" ::"r"(a), "d"(v) : "memory");
}

/* Programmatic dependent launch: let the next grid of the stream launch … */
__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory"); }
/* … and wait until the previous grid has completed and its writes are visible
 * (returns at once when this grid was not launched as a dependent). */
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }
/* Host: the configuration of a launch of grid × block threads with `smem`
 * dynamic shared bytes on stream st, as a programmatic dependent of the grid
 * before it when pdl (at: room for the attribute, alive until the launch). */
inline cudaLaunchConfig_t pdl_launch_cfg(cudaLaunchAttribute at[1], dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                         int pdl) {
  cudaLaunchConfig_t cfg = {};
  at[0] = cudaLaunchAttribute{};
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
  cfg.attrs = pdl ? at : NULL, cfg.numAttrs = pdl ? 1 : 0;
  return cfg;
}

/* ---------------------------------------------------------------- wgmma (sm_90a)
 * Hopper's warpgroup MMA: the 4 warps of a warpgroup compute D (64 × N FP32)
 * += A (64 × 16 BF16) · B (16 × N BF16), both operands read by the tensor cores
 * from shared memory through 64-bit descriptors, both K-major (rows of K). D's
 * layout per warp w, lane (g = lane / 4, t = lane % 4): d[4j + h + 2v] is row
 * 16w + g + 8v, column 8j + 2t + h — per 64 × 8 block the m16n8 layout of
 * mma16816. Only where the compile target has the sm_90a features
 * (RLRUN_HAVE_WGMMA); other targets use mma16816. */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RLRUN_HAVE_WGMMA 1
#else
#define RLRUN_HAVE_WGMMA 0
#endif

/* The descriptor of a K-major operand tile in the 128-byte swizzle: rows of 64
 * BF16 (128 B), 8-row groups 1024 B apart (the stride byte offset), 16-byte chunk
 * c of row r stored at chunk c ^ (r & 7) of the row, the group base 1024-byte
 * aligned; `saddr` is the shared address of the first row's K position (a
 * group base plus 32 B per 16 K). The leading byte offset is unused here. */
__device__ __forceinline__ uint64_t wgmma_desc_sw128(uint32_t saddr) {
  return (uint64_t)((saddr & 0x3FFFF) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}
/* wgmma_desc_sw128(saddr + bytes) from d = wgmma_desc_sw128(saddr): the start
 * address field (bits 0–13, address / 16) plus bytes / 16 — the same bits while
 * saddr + bytes stays below 256 KB, which every shared-memory address does (at
 * most 228 KB a CTA). bytes a multiple of 16. One add in place of the mask,
 * shift and or of a fresh descriptor. */
__device__ __forceinline__ uint64_t wgmma_desc_add(uint64_t d, uint32_t bytes) { return d + (bytes >> 4); }
/* Before the first wgmma of a batch: the accumulator registers and the shared
 * operands as the thread last wrote them. */
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
/* Until at most N committed wgmma groups are in flight (N = 0: all done). */
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Shared memory written through the generic proxy (stores, cp.async) made
 * visible to the async proxy (wgmma operand reads): each writer, before the barrier. */
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

/* d (64 × N FP32, N/2 registers a thread) += A · B, N = 8, 16, 32, 64. */
template <int N>
__device__ __forceinline__ void wgmma_bf16(float *d, uint64_t da, uint64_t db);

template <>
__device__ __forceinline__ void wgmma_bf16<8>(float *d, uint64_t da, uint64_t db) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0,%1,%2,%3}, %4, %5, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "l"(da), "l"(db), "r"(1));
#else
  (void)d, (void)da, (void)db;
#endif
}

template <>
__device__ __forceinline__ void wgmma_bf16<16>(float *d, uint64_t da, uint64_t db) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "l"(da), "l"(db), "r"(1));
#else
  (void)d, (void)da, (void)db;
#endif
}

template <>
__device__ __forceinline__ void wgmma_bf16<32>(float *d, uint64_t da, uint64_t db) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(da), "l"(db), "r"(1));
#else
  (void)d, (void)da, (void)db;
#endif
}

template <>
__device__ __forceinline__ void wgmma_bf16<64>(float *d, uint64_t da, uint64_t db) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(1));
#else
  (void)d, (void)da, (void)db;
#endif
}

/* d (64 × N FP32) += A (64 × 32 E4M3) · B (32 × N E4M3), both K-major from shared
 * memory (the only FP8 layout wgmma takes), N = 8, 16, 32, 64; the same
 * descriptors and D layout as wgmma_bf16 (a 32-byte step of a 128-byte row is
 * 32 K here, 16 there). Accumulation inside the instruction is the tensor core's
 * FP8 path (fewer bits than FP32: callers keep each call's sum short). */
template <int N>
__device__ __forceinline__ void wgmma_e4m3(float *d, uint64_t da, uint64_t db);

template <>
__device__ __forceinline__ void wgmma_e4m3<8>(float *d, uint64_t da, uint64_t db) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 {%0,%1,%2,%3}, %4, %5, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "l"(da), "l"(db), "r"(1));
#else
  (void)d, (void)da, (void)db;
#endif
}

template <>
__device__ __forceinline__ void wgmma_e4m3<16>(float *d, uint64_t da, uint64_t db) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "l"(da), "l"(db), "r"(1));
#else
  (void)d, (void)da, (void)db;
#endif
}

template <>
__device__ __forceinline__ void wgmma_e4m3<32>(float *d, uint64_t da, uint64_t db) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, %16, %17, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(da), "l"(db), "r"(1));
#else
  (void)d, (void)da, (void)db;
#endif
}

template <>
__device__ __forceinline__ void wgmma_e4m3<64>(float *d, uint64_t da, uint64_t db) {
#if RLRUN_HAVE_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(1));
#else
  (void)d, (void)da, (void)db;
#endif
}

} /* namespace */

#endif
