/* ops_cuda.cu — the CUDA twins of ops_cpu.c: checks, BF16, embedding, SwiGLU
 * (RMSNorm, RoPE and QK-norm: ops_norm_cuda.cu; attention: ops_attn_cuda.cu;
 * router and log-softmax: ops_router_cuda.cu).
 *
 * Shapes of the work: row operators (RMSNorm, QK-norm+RoPE, router) run one
 * warp per row, lanes striding the row (float4 when the row allows it); the
 * log-softmax runs one 512-thread block per vocabulary row; element-wise ops
 * (SwiGLU, BF16 copies, embedding) stride the tensor. Every reduction has a
 * fixed order given by the shapes alone (lane partials, then a xor butterfly,
 * whose two partners add the same two numbers, so all lanes agree); weight
 * gradients summed over tokens go through fixed row-block partials (32 or 128
 * rows) reduced in a fixed order by a second kernel — no float atomics anywhere.
 * The fused RMSNorm / QK-norm backwards and the SwiGLU backward round every
 * operation explicitly (no FMA contraction), so each of their instantiations
 * (FP32 or BF16 operands, scalar or 4-wide) gives the same bits. */
#include <stdlib.h>

#include "kernels/ops_cuda_util.cuh"
#include "kernels/ptx_util.cuh"     /* pdl_launch_dependents, pdl_wait, pdl_launch_cfg (swiglu q8) */
#include "kernels/quant_cuda_dev.cuh" /* the fp8-block quantizer's device arithmetic (swiglu q8) */

/* ---------------------------------------------------------------- checks */

/* Smallest flat index of an id outside [lo, hi) (UINT64_MAX when none). */
__global__ void ids_check_kernel(const int32_t *ids, int64_t n, int32_t lo, int32_t hi,
                                 unsigned long long *first) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    if (ids[i] < lo || ids[i] >= hi) atomicMin(first, (unsigned long long)i);
}

extern "C" int ops_ids_check_cuda(const int32_t *ids, int64_t n, int32_t lo, int32_t hi,
                                  const char *what, void *stream, rl_err *e) {
  if (n <= 0) return 0;
  cudaStream_t st = (cudaStream_t)stream;
  unsigned long long *d = NULL, h = ~0ull;
  int32_t bad = 0;
  OCHECK(cudaMallocAsync((void **)&d, sizeof *d, st));
  OCHECK(cudaMemcpyAsync(d, &h, sizeof h, cudaMemcpyHostToDevice, st));
  ids_check_kernel<<<grid_for(n, 256), 256, 0, st>>>(ids, n, lo, hi, d);
  OLAUNCH();
  OCHECK(cudaMemcpyAsync(&h, d, sizeof h, cudaMemcpyDeviceToHost, st));
  OCHECK(cudaFreeAsync(d, st));
  OCHECK(cudaStreamSynchronize(st));
  if (h == ~0ull) return 0;
  OCHECK(cudaMemcpy(&bad, ids + h, sizeof bad, cudaMemcpyDeviceToHost));
  return rl_errf(e, RL_EXIT_USAGE,
                 "%s: id %d at position %lld is outside [%d, %d); check that the ids come from this "
                 "model (its vocabulary / expert count)",
                 what, (int)bad, (long long)h, (int)lo, (int)hi);
}

extern "C" int ops_seqs_check_cuda(const ops_seqs *seqs, int T, void *stream, rl_err *e) {
  if (!seqs || seqs->n_seq <= 0 || !seqs->off) return ops_seqs_check(seqs, T, e);
  int32_t *h = (int32_t *)rl_xmalloc((size_t)(seqs->n_seq + 1) * sizeof(int32_t));
  cudaError_t r = cudaMemcpyAsync(h, seqs->off, (size_t)(seqs->n_seq + 1) * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, (cudaStream_t)stream);
  if (r == cudaSuccess) r = cudaStreamSynchronize((cudaStream_t)stream);
  int rc;
  if (r != cudaSuccess)
    rc = rl_errf(e, RL_EXIT_HARDWARE, "packed batch: reading the offsets from the GPU failed: %s",
                 cudaGetErrorString(r));
  else {
    ops_seqs hs = {seqs->n_seq, h};
    rc = ops_seqs_check(&hs, T, e);
  }
  free(h);
  return rc;
}

/* One block per sequence writes the positions of its tokens. */
__global__ void positions_kernel(const int32_t *off, int32_t *pos) {
  int s = blockIdx.x, a = off[s], b = off[s + 1];
  for (int t = a + threadIdx.x; t < b; t += blockDim.x) pos[t] = t - a;
}

extern "C" int ops_seqs_positions_cuda(const ops_seqs *seqs, int T, int32_t *pos, void *stream,
                                       rl_err *e) {
  if (!seqs || seqs->n_seq <= 0 || T <= 0) return 0;
  positions_kernel<<<seqs->n_seq, 256, 0, (cudaStream_t)stream>>>(seqs->off, pos);
  OLAUNCH();
  return 0;
}

/* ---------------------------------------------------------------- BF16 */

__global__ void bf16_from_f32_kernel(uint16_t *dst, const float *src, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dst[i] = fmt_bf16_from_f32(src[i]);
}
__global__ void f32_from_bf16_kernel(float *dst, const uint16_t *src, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    dst[i] = bf(src[i]);
}
__global__ void bf16_round_kernel(float *x, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] = bf(fmt_bf16_from_f32(x[i]));
}

extern "C" int ops_bf16_from_f32_cuda(uint16_t *dst, const float *src, size_t n, void *stream, rl_err *e) {
  if (!n) return 0;
  bf16_from_f32_kernel<<<grid_for((int64_t)n, 1024), 256, 0, (cudaStream_t)stream>>>(dst, src, n);
  OLAUNCH();
  return 0;
}
extern "C" int ops_f32_from_bf16_cuda(float *dst, const uint16_t *src, size_t n, void *stream, rl_err *e) {
  if (!n) return 0;
  f32_from_bf16_kernel<<<grid_for((int64_t)n, 1024), 256, 0, (cudaStream_t)stream>>>(dst, src, n);
  OLAUNCH();
  return 0;
}
extern "C" int ops_bf16_round_cuda(float *x, size_t n, void *stream, rl_err *e) {
  if (!n) return 0;
  bf16_round_kernel<<<grid_for((int64_t)n, 1024), 256, 0, (cudaStream_t)stream>>>(x, n);
  OLAUNCH();
  return 0;
}

/* ---------------------------------------------------------------- embedding */

/* One block per token: out[t, :] = table[tokens[t], :] (FP32 or BF16 table);
 * a token outside [0, V) gives a NaN row. */
template <typename TT>
__global__ void embedding_fwd_kernel(float *out, const TT *table, const int32_t *tokens, int V, int H) {
  int t = blockIdx.x, id = tokens[t];
  float *o = out + (size_t)t * H;
  for (int c = threadIdx.x; c < H; c += blockDim.x) {
    float v;
    if (id < 0 || id >= V) v = __int_as_float(0x7fc00000);
    else if (sizeof(TT) == 2) v = bf((uint16_t)table[(size_t)id * H + c]);
    else v = (float)table[(size_t)id * H + c];
    o[c] = v;
  }
}

/* One block per token t that is the FIRST occurrence of its id: it owns row
 * tokens[t] of dtable and adds dout of every later token with the same id, in
 * token order, in FP32 (as the CPU does: the same bits). Candidates are
 * scanned EMB_CHUNK at a time and the matches compacted in order (ballots). */
enum { EMB_THREADS = 256, EMB_SCAN = 8 * EMB_THREADS };
__global__ void __launch_bounds__(EMB_THREADS) embedding_bwd_kernel(float *dtable, const float *dout,
                                                                    const int32_t *tokens, int T, int V, int H) {
  __shared__ int list[EMB_THREADS];
  __shared__ int wcount[EMB_THREADS / 32];
  int t = blockIdx.x, id = tokens[t], lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
  if (id < 0 || id >= V) return;
  /* Is there an earlier occurrence? Then that block owns the row. */
  for (int c0 = 0; c0 < t; c0 += EMB_SCAN) {
    int hit = 0;
    for (int j = c0 + threadIdx.x; j < c0 + EMB_SCAN && j < t; j += EMB_THREADS) hit |= tokens[j] == id;
    if (__syncthreads_or(hit)) return;
  }
  float *row = dtable + (size_t)id * H;
  for (int c0 = t; c0 < T; c0 += EMB_THREADS) {
    if ((c0 - t) % EMB_SCAN == 0) { /* skip whole EMB_SCAN ranges without a match */
      int any = 0;
      for (int j = c0 + threadIdx.x; j < c0 + EMB_SCAN && j < T; j += EMB_THREADS) any |= tokens[j] == id;
      if (!__syncthreads_or(any)) {
        c0 += EMB_SCAN - EMB_THREADS;
        continue;
      }
    }
    int j = c0 + threadIdx.x, f = j < T && tokens[j] == id;
    unsigned b = __ballot_sync(FULL, f);
    if (lane == 0) wcount[wp] = __popc(b);
    __syncthreads();
    int base = 0, n = 0;
    for (int w = 0; w < EMB_THREADS / 32; w++) {
      if (w < wp) base += wcount[w];
      n += wcount[w];
    }
    if (f) list[base + __popc(b & ((1u << lane) - 1u))] = j;
    __syncthreads();
    if (n)
      for (int c = threadIdx.x; c < H; c += EMB_THREADS) {
        float a = row[c];
        for (int i = 0; i < n; i++) a = __fadd_rn(a, dout[(size_t)list[i] * H + c]);
        row[c] = a;
      }
    __syncthreads(); /* list and wcount are rewritten next chunk */
  }
}

extern "C" int ops_embedding_forward_cuda(float *out, const float *table, const int32_t *tokens, int T,
                                          int V, int H, void *stream, rl_err *e) {
  if (T <= 0 || H <= 0) return 0;
  embedding_fwd_kernel<float><<<T, 256, 0, (cudaStream_t)stream>>>(out, table, tokens, V, H);
  OLAUNCH();
  return 0;
}

extern "C" int ops_embedding_forward_bf16_cuda(float *out, const uint16_t *table, const int32_t *tokens,
                                               int T, int V, int H, void *stream, rl_err *e) {
  if (T <= 0 || H <= 0) return 0;
  embedding_fwd_kernel<uint16_t><<<T, 256, 0, (cudaStream_t)stream>>>(out, table, tokens, V, H);
  OLAUNCH();
  return 0;
}

extern "C" int ops_embedding_backward_cuda(float *dtable, const float *dout, const int32_t *tokens, int T,
                                           int V, int H, void *stream, rl_err *e) {
  if (T <= 0 || H <= 0) return 0;
  embedding_bwd_kernel<<<T, EMB_THREADS, 0, (cudaStream_t)stream>>>(dtable, dout, tokens, T, V, H);
  OLAUNCH();
  return 0;
}

/* ---------------------------------------------------------------- SwiGLU */

template <typename TI>
__global__ void swiglu_fwd_kernel(float *out, uint16_t *ob, const TI *gate, const TI *up, int T, int I, int ld) {
  int64_t n = (int64_t)T * I;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = k / I, i = k % I;
    size_t o = (size_t)t * ld + i;
    float v = __fmul_rn(silu(ldf(gate, o)), ldf(up, o));
    if (out) out[k] = v;
    if (ob) ob[k] = fmt_bf16_from_f32(v);
  }
}

/* The same with float4 (I % 4 == 0, ld % 4 == 0, aligned). */
template <typename TI>
__global__ void swiglu_fwd4_kernel(float *out, uint16_t *ob, const TI *gate, const TI *up, int T, int I, int ld) {
  int64_t n = (int64_t)T * I / 4;
  int I4 = I / 4;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = k / I4, i = (k % I4) * 4;
    size_t o = (size_t)t * ld + i;
    float4 g = ldf4(gate, o), u = ldf4(up, o);
    float4 v = swiglu4(g, u);
    if (out) *reinterpret_cast<float4 *>(out + k * 4) = v;
    if (ob) stf4(ob, (size_t)k * 4, v);
  }
}

/* The SwiGLU backward of one element, every operation rounded (no contraction):
 * each kernel below, FP32 or BF16 operands, scalar or 4-wide, gives the same bits. */
__device__ __forceinline__ void swiglu_bwd_elem(float g, float u, float d, float *vg, float *vu) {
  const float s = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-g))), sl = __fmul_rn(g, s);
  const float ds = __fmul_rn(s, __fadd_rn(1.0f, __fmul_rn(g, __fsub_rn(1.0f, s))));
  *vg = __fmul_rn(__fmul_rn(d, u), ds);
  *vu = __fmul_rn(d, sl);
}

template <typename TI, typename TO>
__global__ void swiglu_bwd_kernel(TO *dgate, TO *dup, const TI *dout, const TI *gate, const TI *up, int T, int I,
                                  int ld) {
  int64_t n = (int64_t)T * I;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = k / I, i = k % I;
    size_t o = (size_t)t * ld + i;
    float vg, vu;
    swiglu_bwd_elem(ldf(gate, o), ldf(up, o), ldf(dout, k), &vg, &vu);
    stf(dgate, o, vg);
    stf(dup, o, vu);
  }
}

/* The same four elements a thread (I % 4 == 0, ld % 4 == 0, aligned); 32-bit row math. */
template <typename TI, typename TO>
__global__ void swiglu_bwd4_kernel(TO *dgate, TO *dup, const TI *dout, const TI *gate, const TI *up, int T, int I,
                                   int ld) {
  const int I4 = I / 4;
  const int64_t n4 = (int64_t)T * I4;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n4; k += (int64_t)gridDim.x * blockDim.x) {
    const int t = (int)(k / I4), i = (int)(k - (int64_t)t * I4) * 4;
    const size_t o = (size_t)t * ld + i;
    const float4 g = ldf4(gate, o), u = ldf4(up, o), d = ldf4(dout, (size_t)k * 4);
    float4 vg, vu;
    swiglu_bwd_elem(g.x, u.x, d.x, &vg.x, &vu.x);
    swiglu_bwd_elem(g.y, u.y, d.y, &vg.y, &vu.y);
    swiglu_bwd_elem(g.z, u.z, d.z, &vg.z, &vu.z);
    swiglu_bwd_elem(g.w, u.w, d.w, &vg.w, &vu.w);
    stf4(dgate, o, vg);
    stf4(dup, o, vu);
  }
}

template <typename TI, typename TO>
static int swiglu_bwd_run(TO *dgate, TO *dup, const TI *dout, const TI *gate, const TI *up, int T, int I, int ld,
                          cudaStream_t st, rl_err *e) {
  if (T <= 0 || I <= 0) return 0;
  const unsigned wi = 4 * sizeof(TI), wo = 4 * sizeof(TO);
  if (I % 4 == 0 && ld % 4 == 0 && aligned(dout, wi) && aligned(gate, wi) && aligned(up, wi) && aligned(dgate, wo) &&
      aligned(dup, wo))
    swiglu_bwd4_kernel<TI, TO><<<grid_for((int64_t)T * I / 4, 256), 256, 0, st>>>(dgate, dup, dout, gate, up, T, I, ld);
  else
    swiglu_bwd_kernel<TI, TO><<<grid_for((int64_t)T * I, 256), 256, 0, st>>>(dgate, dup, dout, gate, up, T, I, ld);
  OLAUNCH();
  return 0;
}

template <typename TI>
static int swiglu_fwd_run(float *out, uint16_t *out_bf16, const TI *gate, const TI *up, int T, int I, int ld,
                          void *stream, rl_err *e) {
  if (T <= 0 || I <= 0) return 0;
  cudaStream_t st = (cudaStream_t)stream;
  int64_t n = (int64_t)T * I;
  if (I % 4 == 0 && ld % 4 == 0 && aligned(gate, 4 * sizeof(TI)) && aligned(up, 4 * sizeof(TI)) &&
      (!out || aligned(out, 16)) && (!out_bf16 || aligned(out_bf16, 8)))
    swiglu_fwd4_kernel<TI><<<grid_for(n / 4, 256), 256, 0, st>>>(out, out_bf16, gate, up, T, I, ld);
  else
    swiglu_fwd_kernel<TI><<<grid_for(n, 256), 256, 0, st>>>(out, out_bf16, gate, up, T, I, ld);
  OLAUNCH();
  return 0;
}

extern "C" int ops_swiglu_forward_cuda(float *out, uint16_t *out_bf16, const float *gate, const float *up, int T,
                                       int I, int ld, void *stream, rl_err *e) {
  return swiglu_fwd_run(out, out_bf16, gate, up, T, I, ld, stream, e);
}

extern "C" int ops_swiglu_forward_bx_cuda(float *out, uint16_t *out_bf16, const uint16_t *gate, const uint16_t *up,
                                          int T, int I, int ld, void *stream, rl_err *e) {
  return swiglu_fwd_run(out, out_bf16, gate, up, T, I, ld, stream, e);
}

/* SwiGLU of BF16 gate/up with the fp8-block quantization of its BF16 result: a
 * thread a 16-element chunk (two 16-byte loads of each operand), 8 lanes a
 * 128-element block (chunks per row cpr rounded up to 8 so blocks are
 * lane-aligned, as quant_cuda.cu's launch_rows does), the block amax in three
 * shuffles; the element arithmetic swiglu_fwd4_kernel's, the block's
 * quant_fp8_block_act_cuda's. Rows [T, rows_pad): zero codes and scales.
 * Launched as a programmatic dependent under ops_swiglu_q8_pdl() (and ops_pdl())
 * as the RMSNorm forwards are: it waits for the grid before (the gate/up GEMM) at
 * its start and lets the next one (the decode step's down GEMM) launch and ask
 * for its weights meanwhile. */
__global__ void __launch_bounds__(256) swiglu_q8_kernel(uint16_t *ob, const uint16_t *gate, const uint16_t *up, int T,
                                                        int I, int ld, int cpr, uint8_t *q, float *qs, int64_t qld,
                                                        int rows_pad, int ue8m0, int soft, int pdl) {
  if (pdl) pdl_launch_dependents(); /* else the grid after launches at this one's end, as before */
  pdl_wait(); /* nothing is touched before the grid before ends (at once when not a dependent) */
  const int64_t gidx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t t = gidx / cpr;
  const int c = (int)(gidx % cpr), nch = I / 16;
  if (t >= rows_pad) return; /* whole warps: rows_pad · cpr is a multiple of 8, the grid of 256 */
  const bool in = c < nch, real = t < T;
  uint4 a = make_uint4(0, 0, 0, 0), b = a;
  if (in && real) {
    const size_t o = (size_t)t * ld + (size_t)c * 16;
    uint16_t v[16];
#pragma unroll
    for (int k = 0; k < 16; k += 4) {
      const float4 g = ldf4(gate, o + k), u = ldf4(up, o + k);
      const float4 y = make_float4(__fmul_rn(silu(g.x), u.x), __fmul_rn(silu(g.y), u.y), __fmul_rn(silu(g.z), u.z),
                                   __fmul_rn(silu(g.w), u.w));
      v[k] = fmt_bf16_from_f32(y.x), v[k + 1] = fmt_bf16_from_f32(y.y), v[k + 2] = fmt_bf16_from_f32(y.z),
      v[k + 3] = fmt_bf16_from_f32(y.w);
    }
    a = make_uint4(v[0] | (uint32_t)v[1] << 16, v[2] | (uint32_t)v[3] << 16, v[4] | (uint32_t)v[5] << 16,
                   v[6] | (uint32_t)v[7] << 16);
    b = make_uint4(v[8] | (uint32_t)v[9] << 16, v[10] | (uint32_t)v[11] << 16, v[12] | (uint32_t)v[13] << 16,
                   v[14] | (uint32_t)v[15] << 16);
    uint4 *dst = reinterpret_cast<uint4 *>(ob + (size_t)t * I + (size_t)c * 16); /* stf4's bits */
    dst[0] = a, dst[1] = b;
  }
  uint32_t m = qd_fold16(qd_amax_bits16(a, b));
#pragma unroll
  for (int s = 1; s < 8; s <<= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, s));
  if (!in) return;
  const bool bad = m >= 0x7f80u;
  const float sc = !real ? 0.0f : bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(qd_bits_to_amax(m), ue8m0);
  *reinterpret_cast<uint4 *>(q + (size_t)t * I + (size_t)c * 16) =
      (bad || !real) ? make_uint4(0, 0, 0, 0) : qd_enc_fp8_div(a, b, sc, soft);
  if (c % 8 == 0) qs[(int64_t)(c / 8) * qld + t] = sc;
}

/* The same on 4 elements a thread, a warp a 128-element block (chunks of 4 per
 * row cpr rounded up to 32): four times the threads of swiglu_q8_kernel for a
 * decode step's few rows, so a thread's chain of SiLUs and encodes is a quarter
 * as long; the block amax in five shuffles. Each element's arithmetic and the
 * block's scale and codes are swiglu_q8_kernel's (qd_enc_fp8_div4 is
 * qd_enc_fp8_div on 4 values), so the bytes are the same. */
__global__ void __launch_bounds__(256) swiglu_q8_lane4_kernel(uint16_t *ob, const uint16_t *gate, const uint16_t *up,
                                                              int T, int I, int ld, int cpr, uint8_t *q, float *qs,
                                                              int64_t qld, int rows_pad, int ue8m0, int soft, int pdl) {
  if (pdl) pdl_launch_dependents();
  pdl_wait();
  const int64_t gidx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t t = gidx / cpr;
  const int c = (int)(gidx % cpr), nch = I / 4;
  if (t >= rows_pad) return; /* whole warps: cpr is a multiple of 32 */
  const bool in = c < nch, real = t < T;
  uint2 h = make_uint2(0, 0);
  if (in && real) {
    const size_t o = (size_t)t * ld + (size_t)c * 4;
    h = bf16x4(swiglu4(ldf4(gate, o), ldf4(up, o)));
    *reinterpret_cast<uint2 *>(ob + (size_t)t * I + (size_t)c * 4) = h; /* stf4's bits */
  }
  uint32_t m = qd_amax_bits4(h);
#pragma unroll
  for (int s = 1; s < 32; s <<= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, s));
  if (!in) return;
  const bool bad = m >= 0x7f80u;
  const float sc = !real ? 0.0f : bad ? __uint_as_float(0x7fc00000u) : fmt_fp8_block_scale(qd_bits_to_amax(m), ue8m0);
  *reinterpret_cast<uint32_t *>(q + (size_t)t * I + (size_t)c * 4) = (bad || !real) ? 0u : qd_enc_fp8_div4(h, sc, soft);
  if (c % 32 == 0) qs[(int64_t)(c / 32) * qld + t] = sc;
}

extern "C" int ops_swiglu_q8_lane4(int set) {
  static int cache = -1;
  return rl_env_switch_def(&cache, "RLRUN_SWIGLU_Q8_LANE4", 1, set);
}

extern "C" int ops_swiglu_q8_pdl(int set) {
  static int cache = -1;
  return rl_env_switch_def(&cache, "RLRUN_SWIGLU_Q8_PDL", 1, set);
}

extern "C" int ops_swiglu_forward_q8_bx_cuda(uint16_t *out_bf16, const uint16_t *gate, const uint16_t *up, int T, int I,
                                             int ld, const ops_fp8_act *qa, void *stream, rl_err *e) {
  if (!qa || !qa->q || !qa->scales || !out_bf16 || I <= 0 || T < 0 || I % 16 || ld % 8 || ld < I ||
      qa->rows_pad < T || qa->scale_ld < qa->rows_pad || !aligned(gate, 16) || !aligned(up, 16) ||
      !aligned(out_bf16, 16) || !aligned(qa->q, 16))
    return rl_errf(e, RL_EXIT_USAGE, "ops_swiglu_forward_q8_bx_cuda: width %d (a multiple of 16 needed), ld %d, pad "
                   "rows %d for %d rows, or unaligned operands", I, ld, qa ? qa->rows_pad : -1, T);
  if (qa->rows_pad == 0) return 0;
  /* 4 values a thread (a warp a block) at few rows, where the launch is a chain
   * per thread rather than bandwidth; 16 a thread (8 lanes a block) else */
  const int lane4 = qa->rows_pad < 1024 && ops_swiglu_q8_lane4(-1);
  const int cpr = lane4 ? (I / 4 + 31) / 32 * 32 : (I / 16 + 7) / 8 * 8;
  const int64_t threads = (int64_t)qa->rows_pad * cpr;
  cudaLaunchAttribute at[1];
  const int pdl = ops_pdl() && ops_swiglu_q8_pdl(-1);
  const cudaLaunchConfig_t cfg = pdl_launch_cfg(at, dim3((unsigned)((threads + 255) / 256)), dim3(256), 0,
                                                (cudaStream_t)stream, pdl);
  OCHECK(cudaLaunchKernelEx(&cfg, lane4 ? swiglu_q8_lane4_kernel : swiglu_q8_kernel, out_bf16, gate, up, T, I, ld, cpr,
                            qa->q, qa->scales, (int64_t)qa->scale_ld, qa->rows_pad, qa->ue8m0, quant_cuda_soft_cvt(),
                            pdl));
  OLAUNCH();
  return 0;
}

extern "C" int ops_swiglu_backward_cuda(float *dgate, float *dup, const float *dout, const float *gate,
                                        const float *up, int T, int I, int ld, void *stream, rl_err *e) {
  return swiglu_bwd_run(dgate, dup, dout, gate, up, T, I, ld, (cudaStream_t)stream, e);
}

extern "C" int ops_swiglu_backward_bx_cuda(uint16_t *dgate, uint16_t *dup, const uint16_t *dout,
                                           const uint16_t *gate, const uint16_t *up, int T, int I, int ld,
                                           void *stream, rl_err *e) {
  return swiglu_bwd_run(dgate, dup, dout, gate, up, T, I, ld, (cudaStream_t)stream, e);
}
