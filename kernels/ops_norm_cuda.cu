/* ops_norm_cuda.cu — the CUDA twins of ops_cpu.c's normalizations and
 * rotations: RMSNorm forward (plain and with the residual add; FP32 or BF16 x)
 * and backward (dx, and dw from fixed row-block partials), RoPE forward and
 * backward with its table, and the per-head QK-norm + RoPE forward and
 * backward; and ops_pdl, the switch under which the RMSNorm forwards launch as
 * programmatic dependents. One warp per row (a (token, head) row for the QK
 * path; the forwards at few rows optionally four, rmsnorm_fwd_wide_kernel, the
 * same sums); the fused backwards (RMSNorm at dim = 128·k ≤ 1024, QK at head_dim 64,
 * 128, 256) write dx and the block's dw partial in one read of dy and x, with
 * every operation rounded explicitly (no FMA contraction), so each
 * instantiation (FP32 or BF16 operands, dy FP32 or its BF16 parts) gives the
 * same bits; the partials (32 or 128 rows a block) are summed in a fixed order by
 * rmsnorm_dw_sum_kernel — no float atomics. The rest of the operators:
 * ops_cuda.cu (its header says how their work is shaped). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops_cuda_util.cuh"
#include "kernels/ptx_util.cuh" /* pdl_launch_dependents, pdl_wait, pdl_launch_cfg */
#include "kernels/quant_cuda_dev.cuh" /* the fp8-block quantizer's device arithmetic (the _q8 forwards) */

/* ---------------------------------------------------------------- RMSNorm */


/* Forward, one warp per row; RES: h = resid + x first (h may alias either).
 * VEC: float4 access (dim % 4 == 0, 16-byte aligned rows), RMS_CH float4 a lane
 * in flight. TX: x in FP32 or BF16 (the same bits on the same values). */
#define RMS_CH 8
/* The fp8-block output of the _q8 forwards (Q8 = true): ops_fp8_act's buffers,
 * and the E4M3 codec in force (quant_cuda_soft_cvt). */
struct rms_q8 {
  uint8_t *q;
  float *s;
  int64_t ld;
  int rows_pad, ue8m0, soft;
};
#define RMS_QNAN 0x7fc00000u /* the scale of a block with Inf/NaN (quant_cuda.cu's QNAN_F32) */

template <bool RES, bool VEC, typename TX, bool Q8 = false>
__global__ void rmsnorm_fwd_kernel(float *h, float *y, uint16_t *yb, float *rstd, const float *resid,
                                   const TX *x, const float *w, int rows, int dim, float eps, rms_q8 qo = {}) {
  /* a grid launched after this one as a programmatic dependent (the decode
   * step's small-M GEMMs) may start fetching its weights now: it waits for this
   * grid's end before it reads what this grid writes */
  pdl_launch_dependents();
  pdl_wait(); /* launched as a programmatic dependent (ops_pdl): nothing is touched before the grid before ends */
  int lane = threadIdx.x & 31;
  int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) {
    if (Q8 && r < qo.rows_pad) { /* the GEMM's pad rows: codes and scales 0 (linear_forward's padding) */
      for (int i = lane * 4; i < dim; i += 128) *reinterpret_cast<uint32_t *>(qo.q + r * dim + i) = 0;
      for (int b = lane; b < (dim + 127) / 128; b += 32) qo.s[(int64_t)b * qo.ld + r] = 0.0f;
    }
    return;
  }
  size_t o = (size_t)r * dim;
  float ss = 0;
  if (VEC) {
    /* chunks of RMS_CH float4 a lane: the chunk's loads are all issued before its
     * adds and stores (a decode step's rows are one chunk: one memory round trip,
     * not eight); element order and arithmetic as one float4 at a time */
    for (int i0 = lane * 4; i0 < dim; i0 += 128 * RMS_CH) {
      float4 xv[RMS_CH], av[RMS_CH];
#pragma unroll
      for (int c = 0; c < RMS_CH; c++) {
        const int i = i0 + 128 * c;
        if (i < dim) {
          xv[c] = ldf4(x, o + i);
          if (RES) av[c] = *reinterpret_cast<const float4 *>(resid + o + i);
        }
      }
#pragma unroll
      for (int c = 0; c < RMS_CH; c++) {
        const int i = i0 + 128 * c;
        if (i >= dim) break;
        float4 v = xv[c];
        if (RES) {
          const float4 a = av[c];
          v = make_float4(__fadd_rn(a.x, v.x), __fadd_rn(a.y, v.y), __fadd_rn(a.z, v.z), __fadd_rn(a.w, v.w));
          *reinterpret_cast<float4 *>(h + o + i) = v;
        }
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
    }
  } else {
    for (int i = lane; i < dim; i += 32) {
      float v = ldf(x, o + i);
      if (RES) {
        v = __fadd_rn(resid[o + i], v);
        h[o + i] = v;
      }
      ss += v * v;
    }
  }
  float s = rstd_of(warp_sum(ss), dim, eps);
  if (rstd && lane == 0) rstd[r] = s;
  /* Second pass re-reads this lane's own elements (written by it when RES). */
  if constexpr (Q8) { /* VEC only. Per 1024-element segment: the outputs as the
    * plain pass computes them (coalesced, the same arithmetic), their BF16 into
    * shared memory; then each lane quantizes 32 consecutive ones from there (4
    * lanes a 128-element block, as the quantizer's threads do: the block amax in
    * two shuffles, one scale division a lane) and stores 32 contiguous codes */
    __shared__ uint2 q8_sm[WARPS][256];
    uint2 *sm = q8_sm[threadIdx.x >> 5];
    for (int base = 0; base < dim; base += 1024) {
      const int i0 = base + lane * 4;
      float4 xv[RMS_CH], gv[RMS_CH];
#pragma unroll
      for (int c = 0; c < RMS_CH; c++) {
        const int i = i0 + 128 * c;
        if (i < dim) xv[c] = RES ? ldf4(h, o + i) : ldf4(x, o + i), gv[c] = *reinterpret_cast<const float4 *>(w + i);
      }
#pragma unroll
      for (int c = 0; c < RMS_CH; c++) {
        const int i = i0 + 128 * c;
        if (i >= dim) break;
        const float4 v = xv[c], g = gv[c];
        float4 q = make_float4(__fmul_rn(g.x, __fmul_rn(v.x, s)), __fmul_rn(g.y, __fmul_rn(v.y, s)),
                               __fmul_rn(g.z, __fmul_rn(v.z, s)), __fmul_rn(g.w, __fmul_rn(v.w, s)));
        if (y) *reinterpret_cast<float4 *>(y + o + i) = q;
        const uint2 hb = make_uint2((uint32_t)fmt_bf16_from_f32(q.x) | ((uint32_t)fmt_bf16_from_f32(q.y) << 16),
                                    (uint32_t)fmt_bf16_from_f32(q.z) | ((uint32_t)fmt_bf16_from_f32(q.w) << 16));
        if (yb) *reinterpret_cast<uint2 *>(yb + o + i) = hb; /* stf4's bits */
        sm[(i - base) >> 2] = hb;
      }
      __syncwarp();
      const int seg = base + lane * 32;
      uint4 a[4];
      uint32_t m = 0;
#pragma unroll
      for (int k = 0; k < 4; k++) { /* 8 elements a uint4; past dim: zeros */
        const int i = seg + 8 * k;
        const uint2 lo = i < dim ? sm[(i - base) >> 2] : make_uint2(0, 0);
        const uint2 hi = i + 4 < dim ? sm[((i - base) >> 2) + 1] : make_uint2(0, 0);
        a[k] = make_uint4(lo.x, lo.y, hi.x, hi.y);
      }
      __syncwarp(); /* the segment's shared copy is read before the next one overwrites it */
      m = max(qd_fold16(qd_amax_bits16(a[0], a[1])), qd_fold16(qd_amax_bits16(a[2], a[3])));
      m = max(m, __shfl_xor_sync(0xffffffffu, m, 1));
      m = max(m, __shfl_xor_sync(0xffffffffu, m, 2));
      if (seg >= dim) continue;
      const bool bad = m >= 0x7f80u;
      const float sc = bad ? __uint_as_float(RMS_QNAN) : fmt_fp8_block_scale(qd_bits_to_amax(m), qo.ue8m0);
      if ((lane & 3) == 0) qo.s[(int64_t)(seg / 128) * qo.ld + r] = sc;
      const uint4 c0 = bad ? make_uint4(0, 0, 0, 0) : qd_enc_fp8_div(a[0], a[1], sc, qo.soft);
      const uint4 c1 = bad ? make_uint4(0, 0, 0, 0) : qd_enc_fp8_div(a[2], a[3], sc, qo.soft);
      uint8_t *qr = qo.q + r * dim + seg;
      if (seg + 32 <= dim && (reinterpret_cast<uintptr_t>(qr) & 15) == 0) {
        reinterpret_cast<uint4 *>(qr)[0] = c0;
        reinterpret_cast<uint4 *>(qr)[1] = c1;
      } else {
        const uint32_t code[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
#pragma unroll
        for (int k = 0; k < 8; k++)
          if (seg + 4 * k < dim) reinterpret_cast<uint32_t *>(qr)[k] = code[k];
      }
    }
  } else if (VEC) {
    for (int i0 = lane * 4; i0 < dim; i0 += 128 * RMS_CH) {
      float4 xv[RMS_CH], gv[RMS_CH];
#pragma unroll
      for (int c = 0; c < RMS_CH; c++) {
        const int i = i0 + 128 * c;
        if (i < dim) xv[c] = RES ? ldf4(h, o + i) : ldf4(x, o + i), gv[c] = *reinterpret_cast<const float4 *>(w + i);
      }
#pragma unroll
      for (int c = 0; c < RMS_CH; c++) {
        const int i = i0 + 128 * c;
        if (i >= dim) break;
        const float4 v = xv[c], g = gv[c];
        float4 q = make_float4(__fmul_rn(g.x, __fmul_rn(v.x, s)), __fmul_rn(g.y, __fmul_rn(v.y, s)),
                               __fmul_rn(g.z, __fmul_rn(v.z, s)), __fmul_rn(g.w, __fmul_rn(v.w, s)));
        if (y) *reinterpret_cast<float4 *>(y + o + i) = q;
        if (yb) stf4(yb, o + i, q);
      }
    }
  } else {
    for (int i = lane; i < dim; i += 32) {
      float q = __fmul_rn(w[i], __fmul_rn(RES ? h[o + i] : ldf(x, o + i), s));
      if (y) y[o + i] = q;
      if (yb) yb[o + i] = fmt_bf16_from_f32(q);
    }
  }
}

/* The forwards at few rows (a decode step's: rows < 1024, dim = 128·j ≤ 4096,
 * VEC operands): a row is RW_NW warps instead of one (4; 8 at dim ≥ 1024 unless
 * RLRUN_NORM_WIDE_8=0: ops_norm_wide_warps), the same bits. One warp
 * per row left each lane a serial chain of 8 float4 (dim 1024) through two
 * passes and, for Q8, 32 encodes — 6.9 µs a launch on an H100 under ncu for a
 * 64-row decode norm, while its bytes take < 1 µs. Here warp w holds the
 * 128-column blocks j ≡ w (mod RW_NW), lane l the 4 columns 128·j + 4·l, as
 * the one-warp kernel's lane l did: each lane's square-sum term of block j
 * (the same expression) goes to shared memory, and every warp adds the terms
 * of its lane in block order 0, 1, … from 0 and reduces over the warp
 * (warp_sum) — the one-warp kernel's sum, operation for operation. The
 * outputs come from the registers of the first pass (no re-read of h), the
 * weights are asked for before the wait on the kernel before, and the Q8
 * output is a block a warp: the integer amax of the block's BF16 bits over the
 * warp, then each lane encodes its 4 values with the quantizer's division
 * (qd_enc_fp8_div4, qd_enc_fp8_div's arithmetic). */
constexpr int RW_MAXB = 32; /* 128-column blocks a row at most (dim ≤ 4096) */
template <int RW_NW, bool RES, typename TX, bool Q8>
__global__ void __launch_bounds__(32 * RW_NW) rmsnorm_fwd_wide_kernel(float *h, float *y, uint16_t *yb, float *rstd,
                                                                    const float *resid, const TX *x, const float *w,
                                                                    int rows, int dim, float eps, rms_q8 qo) {
  constexpr int RW_KM = RW_MAXB / RW_NW; /* blocks a warp at most */
  __shared__ float tsm[RW_MAXB][32];     /* [block][lane]: the lane's square-sum term */
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, nj = dim / 128;
  const int64_t r = blockIdx.x;
  float4 g[RW_KM];
#pragma unroll
  for (int k = 0; k < RW_KM; k++) /* the weights: constant while the kernel before runs */
    if (wp + RW_NW * k < nj) g[k] = *reinterpret_cast<const float4 *>(w + 128 * (wp + RW_NW * k) + 4 * lane);
  pdl_launch_dependents();
  pdl_wait();
  if (r >= rows) {
    if (Q8 && r < qo.rows_pad) { /* the GEMM's pad rows: codes and scales 0 */
      for (int i = threadIdx.x * 4; i < dim; i += 128 * RW_NW) *reinterpret_cast<uint32_t *>(qo.q + r * dim + i) = 0;
      for (int b = threadIdx.x; b < nj; b += 32 * RW_NW) qo.s[(int64_t)b * qo.ld + r] = 0.0f;
    }
    return;
  }
  const size_t o = (size_t)r * dim;
  float4 v[RW_KM], a[RW_KM];
#pragma unroll
  for (int k = 0; k < RW_KM; k++) {
    const int j = wp + RW_NW * k;
    if (j < nj) {
      v[k] = ldf4(x, o + 128 * j + 4 * lane);
      if (RES) a[k] = *reinterpret_cast<const float4 *>(resid + o + 128 * j + 4 * lane);
    }
  }
#pragma unroll
  for (int k = 0; k < RW_KM; k++) {
    const int j = wp + RW_NW * k;
    if (j >= nj) break;
    if (RES) {
      const float4 b = a[k], c = v[k];
      v[k] = make_float4(__fadd_rn(b.x, c.x), __fadd_rn(b.y, c.y), __fadd_rn(b.z, c.z), __fadd_rn(b.w, c.w));
      *reinterpret_cast<float4 *>(h + o + 128 * j + 4 * lane) = v[k];
    }
    const float4 c = v[k];
    tsm[j][lane] = c.x * c.x + c.y * c.y + c.z * c.z + c.w * c.w; /* the one-warp kernel's term */
  }
  __syncthreads();
  float ss = 0;
  for (int j = 0; j < nj; j++) ss += tsm[j][lane];
  const float s = rstd_of(warp_sum(ss), dim, eps);
  if (rstd && threadIdx.x == 0) rstd[r] = s;
#pragma unroll
  for (int k = 0; k < RW_KM; k++) {
    const int j = wp + RW_NW * k;
    if (j >= nj) break;
    const size_t i = o + 128 * j + 4 * lane;
    const float4 c = v[k], gw = g[k];
    const float4 q = make_float4(__fmul_rn(gw.x, __fmul_rn(c.x, s)), __fmul_rn(gw.y, __fmul_rn(c.y, s)),
                                 __fmul_rn(gw.z, __fmul_rn(c.z, s)), __fmul_rn(gw.w, __fmul_rn(c.w, s)));
    if (y) *reinterpret_cast<float4 *>(y + i) = q;
    const uint2 hb = make_uint2((uint32_t)fmt_bf16_from_f32(q.x) | ((uint32_t)fmt_bf16_from_f32(q.y) << 16),
                                (uint32_t)fmt_bf16_from_f32(q.z) | ((uint32_t)fmt_bf16_from_f32(q.w) << 16));
    if (yb) *reinterpret_cast<uint2 *>(yb + i) = hb; /* stf4's bits */
    if constexpr (Q8) {
      uint32_t m = qd_fold16(__vmaxu2(hb.x & 0x7fff7fffu, hb.y & 0x7fff7fffu));
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, d));
      const bool bad = m >= 0x7f80u;
      const float sc = bad ? __uint_as_float(RMS_QNAN) : fmt_fp8_block_scale(qd_bits_to_amax(m), qo.ue8m0);
      if (lane == 0) qo.s[(int64_t)j * qo.ld + r] = sc;
      *reinterpret_cast<uint32_t *>(qo.q + i) = bad ? 0u : qd_enc_fp8_div4(hb, sc, qo.soft);
    }
  }
}

/* dx of RMSNorm (ADD: dx += instead of =), one warp per row; dxb (may be NULL):
 * the BF16 of the dx written, rounded as ops_bf16_from_f32_cuda rounds. */
template <bool ADD>
__global__ void rmsnorm_dx_kernel(float *dx, uint16_t *dxb, const float *dy, const float *x, const float *w,
                                  const float *rstd, int rows, int dim) {
  int lane = threadIdx.x & 31;
  int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
  if (r >= rows) return;
  size_t o = (size_t)r * dim;
  float a = 0;
  for (int i = lane; i < dim; i += 32) a += w[i] * dy[o + i] * x[o + i];
  a = warp_sum(a);
  float s = rstd[r], c = s * s * s * a / dim;
  for (int i = lane; i < dim; i += 32) {
    float g = s * w[i] * dy[o + i] - x[o + i] * c;
    const float v = ADD ? dx[o + i] + g : g;
    dx[o + i] = v;
    if (dxb) dxb[o + i] = fmt_bf16_from_f32(v);
  }
}

/* The RoPE table of rows [T, half] as the CPU builds it: angle = inv[i] ·
 * (float)pos (FP32 product), cos/sin in double, rounded once. */
struct rope_inv {
  float v[ROPE_MAX_HALF];
};
__global__ void rope_table_kernel(float *cs, float *sn, const int32_t *pos, int T, int half, rope_inv inv) {
  int64_t n = (int64_t)T * half;
  for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n; k += (int64_t)gridDim.x * blockDim.x) {
    int t = (int)(k / half), i = (int)(k % half);
    float ang = __fmul_rn(inv.v[i], (float)pos[t]);
    double sd, cd;
    sincos((double)ang, &sd, &cd);
    cs[k] = (float)cd;
    sn[k] = (float)sd;
  }
}

/* Partial weight gradients: block (x: 32 columns, y: DW_ROWS rows) writes
 * part[y][c] = Σ_{its rows in order} g[r,c]·x[r,c]·rstd[r]. For the QK-norm
 * (ROPE) g is the inverse-rotated dy of row r = t·n_heads + head. */
template <bool ROPE, typename TX>
__global__ void rmsnorm_dw_part_kernel(float *part, const float *dy, const TX *x, const float *rstd,
                                       int rows, int dim, const float *cs, const float *sn, int n_heads) {
  __shared__ float acc[WARPS][33];
  int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, c = blockIdx.x * 32 + lane, half = dim / 2;
  int64_t r0 = (int64_t)blockIdx.y * DW_ROWS;
  float a = 0;
  if (c < dim)
    for (int64_t r = r0 + wp; r < r0 + DW_ROWS && r < rows; r += WARPS) {
      size_t o = (size_t)r * dim;
      float g = dy[o + c];
      if (ROPE) {
        size_t tb = (size_t)(r / n_heads) * half;
        int i = c < half ? c : c - half;
        float cc = cs[tb + i], ss = sn[tb + i];
        g = c < half ? __fadd_rn(__fmul_rn(g, cc), __fmul_rn(dy[o + c + half], ss))
                     : __fsub_rn(__fmul_rn(g, cc), __fmul_rn(dy[o + c - half], ss));
      }
      a += g * ldf(x, o + c) * rstd[r];
    }
  acc[wp][lane] = a;
  __syncthreads();
  if (wp == 0 && c < dim) {
    float s = 0;
    for (int k = 0; k < WARPS; k++) s += acc[k][lane];
    part[(size_t)blockIdx.y * dim + c] = s;
  }
}

/* dw[c] += Σ_chunks part[chunk][c] in double, in a fixed order: warp wp of the
 * block (32 columns a block, a lane a column) sums chunks wp, wp + 8, … in
 * order, then the 8 warp sums are added in warp order. */
__global__ void rmsnorm_dw_sum_kernel(float *dw, const float *part, int nchunk, int dim) {
  __shared__ double red[WARPS][32];
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, c = blockIdx.x * 32 + lane;
  double s = 0;
  if (c < dim)
    for (int k = wp; k < nchunk; k += WARPS) s += part[(size_t)k * dim + c];
  red[wp][lane] = s;
  __syncthreads();
  if (wp || c >= dim) return;
  double t = red[0][lane];
  for (int k = 1; k < WARPS; k++) t += red[k][lane];
  dw[c] = (float)((double)dw[c] + t);
}

/* ---- fused backwards: dx and the block's dw partial in one read of dy and x */

enum { BWD_RPB = 32, QK_RPB = 128 }; /* rows a block of the fused RMSNorm / QK-norm backward */

/* Block-reduce the per-lane partials acc[0..n) of the 8 warps in warp order
 * into part[col(k)] (col: the lane's column of acc[k]). */
template <int N>
__device__ __forceinline__ void dw_block_store(float *part, const float (&acc)[N], const int (&col)[N]) {
  __shared__ float red[WARPS][32];
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < N; k++) {
    red[wp][lane] = acc[k];
    __syncthreads();
    if (wp == 0) {
      float t = red[0][lane];
      for (int q = 1; q < WARPS; q++) t += red[q][lane];
      part[col[k]] = t;
    }
    __syncthreads();
  }
}

/* (a·b)·c and s·w·dy − x·c, each operation rounded (no contraction). */
__device__ __forceinline__ float rb_prod(float a, float b, float c) { return __fmul_rn(__fmul_rn(a, b), c); }
__device__ __forceinline__ float rb_dx(float s, float w, float dy, float x, float c) {
  return __fsub_rn(__fmul_rn(__fmul_rn(s, w), dy), __fmul_rn(x, c));
}

/* RMSNorm backward for dim = 128·NV (NV ≤ 8), one warp per row (rows wp, wp + 8,
 * … of the block's BWD_RPB), lane holding columns lane·4 + 128·k: dx (ADD:
 * added to), its BF16 copy dxb (may be NULL), and part[blockIdx][dim] = the
 * block's Σ dy·x·rstd (rows of a warp in order, then warps in order). */
/* dy parts: NP = 0: dy FP32; NP = 1 … 3: dy = (FP32(p[0]) + FP32(p[1])) + FP32(p[2]),
 * the BF16 parts added in order (mck_sum_bf16's bits), read instead of dy. */
struct dy_parts {
  const uint16_t *p[3];
};

template <bool ADD, int NV, int NP>
__global__ void __launch_bounds__(NTHR) rmsnorm_bwd_fused_kernel(float *dx, uint16_t *dxb, float *part, const float *dy,
                                                                 dy_parts dp, const float *x, const float *w,
                                                                 const float *rstd, int rows, int dim) {
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
  float4 wv[NV];
  float acc[4 * NV];
#pragma unroll
  for (int k = 0; k < NV; k++) wv[k] = *reinterpret_cast<const float4 *>(w + lane * 4 + 128 * k);
#pragma unroll
  for (int k = 0; k < 4 * NV; k++) acc[k] = 0;
  const int64_t r0 = (int64_t)blockIdx.x * BWD_RPB;
  for (int j = 0; j < BWD_RPB / WARPS; j++) {
    const int64_t r = r0 + wp + (int64_t)WARPS * j;
    if (r >= rows) break;
    const size_t o = (size_t)r * dim + lane * 4;
    float4 dv[NV], xv[NV];
#pragma unroll
    for (int k = 0; k < NV; k++) {
      xv[k] = *reinterpret_cast<const float4 *>(x + o + 128 * k);
      if (NP == 0) {
        dv[k] = *reinterpret_cast<const float4 *>(dy + o + 128 * k);
      } else {
        dv[k] = ldf4(dp.p[0], o + 128 * k);
#pragma unroll
        for (int q = 1; q < NP; q++) {
          const float4 b = ldf4(dp.p[q], o + 128 * k);
          dv[k] = make_float4(__fadd_rn(dv[k].x, b.x), __fadd_rn(dv[k].y, b.y), __fadd_rn(dv[k].z, b.z),
                              __fadd_rn(dv[k].w, b.w));
        }
      }
    }
    /* explicit roundings (no FMA contraction): every instantiation (dy FP32 or BF16 parts) gives the
     * same bits on the same values, which the BF16 flow relies on */
    float a = 0;
#pragma unroll
    for (int k = 0; k < NV; k++)
      a = __fadd_rn(a, __fadd_rn(__fadd_rn(rb_prod(wv[k].x, dv[k].x, xv[k].x), rb_prod(wv[k].y, dv[k].y, xv[k].y)),
                                 __fadd_rn(rb_prod(wv[k].z, dv[k].z, xv[k].z), rb_prod(wv[k].w, dv[k].w, xv[k].w))));
    a = warp_sum(a);
    const float s = rstd[r], c = __fdiv_rn(__fmul_rn(__fmul_rn(__fmul_rn(s, s), s), a), (float)dim);
#pragma unroll
    for (int k = 0; k < NV; k++) {
      float4 g = make_float4(rb_dx(s, wv[k].x, dv[k].x, xv[k].x, c), rb_dx(s, wv[k].y, dv[k].y, xv[k].y, c),
                             rb_dx(s, wv[k].z, dv[k].z, xv[k].z, c), rb_dx(s, wv[k].w, dv[k].w, xv[k].w, c));
      float4 *dp = reinterpret_cast<float4 *>(dx + o + 128 * k);
      if (ADD) {
        const float4 p = *dp;
        g = make_float4(__fadd_rn(p.x, g.x), __fadd_rn(p.y, g.y), __fadd_rn(p.z, g.z), __fadd_rn(p.w, g.w));
      }
      *dp = g;
      if (dxb) stf4(dxb, o + 128 * k, g);
      acc[4 * k] = __fadd_rn(acc[4 * k], rb_prod(dv[k].x, xv[k].x, s));
      acc[4 * k + 1] = __fadd_rn(acc[4 * k + 1], rb_prod(dv[k].y, xv[k].y, s));
      acc[4 * k + 2] = __fadd_rn(acc[4 * k + 2], rb_prod(dv[k].z, xv[k].z, s));
      acc[4 * k + 3] = __fadd_rn(acc[4 * k + 3], rb_prod(dv[k].w, xv[k].w, s));
    }
  }
  if (!part) return;
  int col[4 * NV];
#pragma unroll
  for (int k = 0; k < 4 * NV; k++) col[k] = lane * 4 + 128 * (k / 4) + k % 4;
  dw_block_store(part + (size_t)blockIdx.x * dim, acc, col);
}

/* QK-norm + RoPE backward for head_dim d = 32·VPL (VPL 2, 4 or 8), one warp per
 * (token, head) row (rows wp, wp + 8, … of the block's QK_RPB), lane holding
 * columns lane·VPL + j (lanes 0–15 the first half, the partner of a column is
 * the same j of lane ^ 16): g = ropeᵀ(dy), dx = the RMSNorm dx of g (TD: FP32
 * or BF16), part[blockIdx][d] = the block's Σ g·x·rstd. TX: x FP32 or BF16. */
template <int VPL, typename TX, typename TD>
__global__ void __launch_bounds__(NTHR) qk_bwd_fused_kernel(TD *dx, float *part, const float *dy, const TX *x,
                                                            const float *w, const float *rstd, const float *cs,
                                                            const float *sn, int rows, int n_heads) {
  constexpr int d = 32 * VPL, half = d / 2;
  const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, c0 = lane * VPL, hi = lane >= 16;
  float wv[VPL], acc[VPL];
#pragma unroll
  for (int j = 0; j < VPL; j++) wv[j] = w[c0 + j], acc[j] = 0;
  const int64_t r0 = (int64_t)blockIdx.x * QK_RPB;
  for (int i = 0; i < QK_RPB / WARPS; i++) {
    const int64_t r = r0 + wp + (int64_t)WARPS * i;
    if (r >= rows) break;
    const size_t o = (size_t)r * d + c0, tb = (size_t)(r / n_heads) * half + (c0 & (half - 1));
    float dv[VPL], xv[VPL], cv[VPL], sv[VPL], g[VPL];
#pragma unroll
    for (int j = 0; j < VPL; j += 2) {
      const float2 a = *reinterpret_cast<const float2 *>(dy + o + j);
      const float2 cc = *reinterpret_cast<const float2 *>(cs + tb + j), ss = *reinterpret_cast<const float2 *>(sn + tb + j);
      dv[j] = a.x, dv[j + 1] = a.y, cv[j] = cc.x, cv[j + 1] = cc.y, sv[j] = ss.x, sv[j + 1] = ss.y;
      xv[j] = ldf(x, o + j), xv[j + 1] = ldf(x, o + j + 1);
    }
    float a = 0;
#pragma unroll
    for (int j = 0; j < VPL; j++) {
      const float q = __shfl_xor_sync(FULL, dv[j], 16); /* the partner column's dy */
      g[j] = hi ? __fsub_rn(__fmul_rn(dv[j], cv[j]), __fmul_rn(q, sv[j]))
                : __fadd_rn(__fmul_rn(dv[j], cv[j]), __fmul_rn(q, sv[j]));
      a = __fadd_rn(a, rb_prod(wv[j], g[j], xv[j])); /* explicit roundings, as rmsnorm_bwd_fused_kernel */
    }
    a = warp_sum(a);
    const float s0 = rstd[r], cc = __fdiv_rn(__fmul_rn(__fmul_rn(__fmul_rn(s0, s0), s0), a), (float)d);
#pragma unroll
    for (int j = 0; j < VPL; j++) {
      stf(dx, o + j, rb_dx(s0, wv[j], g[j], xv[j], cc));
      acc[j] = __fadd_rn(acc[j], rb_prod(g[j], xv[j], s0));
    }
  }
  if (!part) return;
  int col[VPL];
#pragma unroll
  for (int j = 0; j < VPL; j++) col[j] = c0 + j;
  dw_block_store(part + (size_t)blockIdx.x * d, acc, col);
}

/* Launch the two dw kernels (workspace from the stream-ordered allocator). */
template <typename TX>
static int rmsnorm_dw_launch(float *dw, const float *dy, const TX *x, const float *rstd, int rows,
                             int dim, const float *cs, const float *sn, int n_heads, cudaStream_t st,
                             rl_err *e) {
  int nchunk = (rows + DW_ROWS - 1) / DW_ROWS;
  float *part = NULL;
  OCHECK(cudaMallocAsync((void **)&part, (size_t)nchunk * dim * sizeof(float), st));
  dim3 g((dim + 31) / 32, nchunk);
  if (nchunk > 65535) {
    cudaFreeAsync(part, st);
    return rl_errf(e, RL_EXIT_USAGE, "rmsnorm backward: %d rows is more than this kernel takes (%d)", rows,
                   65535 * DW_ROWS);
  }
  if (cs) rmsnorm_dw_part_kernel<true, TX><<<g, NTHR, 0, st>>>(part, dy, x, rstd, rows, dim, cs, sn, n_heads);
  else rmsnorm_dw_part_kernel<false, TX><<<g, NTHR, 0, st>>>(part, dy, x, rstd, rows, dim, NULL, NULL, 1);
  OLAUNCH();
  rmsnorm_dw_sum_kernel<<<(dim + 31) / 32, NTHR, 0, st>>>(dw, part, nchunk, dim);
  OLAUNCH();
  OCHECK(cudaFreeAsync(part, st));
  return 0;
}

/* The fused RMSNorm backward (dim = 128·NV, NV ≤ 8; with np > 0 BF16 dy parts,
 * dim 128, 256, 512 or 1024) and its dw sum. */
template <bool ADD>
static int rmsnorm_bwd_fused(float *dx, uint16_t *dxb, float *dw, const float *dy, dy_parts dp, int np, const float *x,
                             const float *w, const float *rstd, int rows, int dim, cudaStream_t st, rl_err *e) {
  const int nb = (rows + BWD_RPB - 1) / BWD_RPB;
  float *part = NULL;
  if (dw) OCHECK(cudaMallocAsync((void **)&part, (size_t)nb * dim * sizeof(float), st));
#define RB_K(NV, NP) rmsnorm_bwd_fused_kernel<ADD, NV, NP><<<nb, NTHR, 0, st>>>(dx, dxb, part, dy, dp, x, w, rstd, rows, dim)
#define RB_CASE(NV) \
  case NV: RB_K(NV, 0); break;
#define RB_CASEP(NV) \
  case NV:                   \
    if (np == 1) RB_K(NV, 1); \
    else if (np == 2) RB_K(NV, 2); \
    else RB_K(NV, 3);        \
    break;
  if (np == 0) {
    switch (dim / 128) { RB_CASE(1) RB_CASE(2) RB_CASE(3) RB_CASE(4) RB_CASE(5) RB_CASE(6) RB_CASE(7) RB_CASE(8) }
  } else if (ADD) {
    switch (dim / 128) { RB_CASEP(1) RB_CASEP(2) RB_CASEP(4) RB_CASEP(8) }
  }
#undef RB_CASE
#undef RB_CASEP
#undef RB_K
  OLAUNCH();
  if (!dw) return 0;
  rmsnorm_dw_sum_kernel<<<(dim + 31) / 32, NTHR, 0, st>>>(dw, part, nb, dim);
  OLAUNCH();
  OCHECK(cudaFreeAsync(part, st));
  return 0;
}

/* 1: the RMSNorm forwards launch as programmatic dependents of the kernel
 * before them (default; RLRUN_OPS_PDL=0 turns it off, read once; see ops.h). */
static int ops_pdl_on;
static void ops_pdl_read(void) { ops_pdl_on = rl_env_bool("RLRUN_OPS_PDL", 1); }
extern "C" int ops_pdl(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT; /* one thread a GPU may ask first at once */
  pthread_once(&once, ops_pdl_read);
  return ops_pdl_on;
}

/* 1 unless RLRUN_NORM_WIDE=0 (read once; set ≥ 0 overrides, tests): the RMSNorm
 * forwards at rows < 1024 run rmsnorm_fwd_wide_kernel (see ops.h). */
extern "C" int ops_norm_wide(int set) {
  static int cache = -1;
  return rl_env_switch_def(&cache, "RLRUN_NORM_WIDE", 1, set);
}

extern "C" int ops_norm_wide_warps(int set) {
  static int cache = -1; /* the switch: 1 = 8 warps */
  return rl_env_switch_def(&cache, "RLRUN_NORM_WIDE_8", 1, set < 0 ? -1 : set == 8) ? 8 : 4;
}

/* Launch kern<<<blocks, thr, 0, st>>>(args…), as a programmatic dependent when pdl. */
template <typename... KA, typename... A>
static cudaError_t launch_pdl(void (*kern)(KA...), unsigned blocks, unsigned thr, cudaStream_t st, int pdl, A... args) {
  cudaLaunchAttribute at[1];
  const cudaLaunchConfig_t cfg = pdl_launch_cfg(at, dim3(blocks), dim3(thr), 0, st, pdl);
  return cudaLaunchKernelEx(&cfg, kern, ((KA)args)...);
}

/* The RMSNorm forward kernels by their runtime choices (the residual add when h
 * is given: h and resid are both NULL otherwise), launched as programmatic
 * dependents when pdl: the wide kernel on 4 or 8 warps a row (nw8) … */
template <bool Q8, typename TX>
static cudaError_t rms_launch_wide(bool nw8, unsigned blocks, cudaStream_t st, int pdl, float *h, float *y, uint16_t *yb,
                                   float *rstd, const float *resid, const TX *x, const float *w, int rows, int dim,
                                   float eps, rms_q8 qo) {
  auto go = [&](auto kern, unsigned thr) {
    return launch_pdl(kern, blocks, thr, st, pdl, h, y, yb, rstd, resid, x, w, rows, dim, eps, qo);
  };
  if (h) return nw8 ? go(rmsnorm_fwd_wide_kernel<8, true, TX, Q8>, 32 * 8) : go(rmsnorm_fwd_wide_kernel<4, true, TX, Q8>, 32 * 4);
  return nw8 ? go(rmsnorm_fwd_wide_kernel<8, false, TX, Q8>, 32 * 8) : go(rmsnorm_fwd_wide_kernel<4, false, TX, Q8>, 32 * 4);
}
/* … and the one-warp kernel, 4-wide loads when vec (always, with the fp8 output). */
template <bool Q8, typename TX>
static cudaError_t rms_launch_warp(bool vec, unsigned blocks, unsigned thr, cudaStream_t st, int pdl, float *h, float *y,
                                   uint16_t *yb, float *rstd, const float *resid, const TX *x, const float *w, int rows,
                                   int dim, float eps, rms_q8 qo) {
  auto go = [&](auto kern) { return launch_pdl(kern, blocks, thr, st, pdl, h, y, yb, rstd, resid, x, w, rows, dim, eps, qo); };
  if constexpr (Q8) return h ? go(rmsnorm_fwd_kernel<true, true, TX, true>) : go(rmsnorm_fwd_kernel<false, true, TX, true>);
  else if (h) return vec ? go(rmsnorm_fwd_kernel<true, true, TX>) : go(rmsnorm_fwd_kernel<true, false, TX>);
  else return vec ? go(rmsnorm_fwd_kernel<false, true, TX>) : go(rmsnorm_fwd_kernel<false, false, TX>);
}

/* Shared driver of the RMSNorm forwards. */
template <typename TX>
static int rmsnorm_fwd_run(float *h, float *y, uint16_t *yb, float *rstd, const float *resid, const TX *x,
                           const float *w, int rows, int dim, float eps, cudaStream_t st, rl_err *e,
                           const ops_fp8_act *qa = NULL) {
  if (rows <= 0 || dim <= 0) return 0;
  int vec = dim % 4 == 0 && aligned(x, 4 * sizeof(TX)) && aligned(w, 16) && (!y || aligned(y, 16)) && (!yb || aligned(yb, 8)) &&
            (!h || (aligned(h, 16) && aligned(resid, 16)));
  /* a warp a row either way (the same sums); few rows (a decode step's): a warp a
   * block, so the rows spread over that many SMs instead of rows / WARPS */
  const int wpb = rows < 1024 ? 1 : WARPS;
  const int pdl = ops_pdl();
  if (!h) resid = NULL; /* the residual add is h's */
  /* few rows: 4 or 8 warps a row (rmsnorm_fwd_wide_kernel, the same bits) */
  const int wide = wpb == 1 && vec && dim % 128 == 0 && dim / 128 <= RW_MAXB && ops_norm_wide(-1);
  const bool nw8 = dim / 128 >= 8 && ops_norm_wide_warps(-1) == 8; /* 8 warps a row: a block a warp at dim 1024 */
  const int qa_ok = qa && vec && aligned(qa->q, 4) && qa->scales && qa->rows_pad >= rows && qa->scale_ld >= qa->rows_pad;
  if (qa && !qa_ok)
    return rl_errf(e, RL_EXIT_USAGE, "rmsnorm forward with fp8-block output: dim %d (a multiple of 4 needed), "
                   "pad rows %d, scale ld %lld for %d rows, or unaligned operands", dim, qa->rows_pad,
                   (long long)qa->scale_ld, rows);
  cudaError_t le;
  if (qa) { /* the fp8-block output; its pad rows too (codes and scales 0) */
    const rms_q8 qo = {qa->q, qa->scales, qa->scale_ld, qa->rows_pad, qa->ue8m0, quant_cuda_soft_cvt()};
    if (wide)
      le = rms_launch_wide<true>(nw8, (unsigned)qa->rows_pad, st, pdl, h, y, yb, rstd, resid, x, w, rows, dim, eps, qo);
    else
      le = rms_launch_warp<true>(true, (unsigned)((qa->rows_pad + wpb - 1) / wpb), (unsigned)(32 * wpb), st, pdl, h, y,
                                 yb, rstd, resid, x, w, rows, dim, eps, qo);
  } else if (wide) {
    le = rms_launch_wide<false>(nw8, (unsigned)rows, st, pdl, h, y, yb, rstd, resid, x, w, rows, dim, eps, rms_q8{});
  } else {
    le = rms_launch_warp<false>(vec, (unsigned)((rows + wpb - 1) / wpb), (unsigned)(32 * wpb), st, pdl, h, y, yb, rstd,
                                resid, x, w, rows, dim, eps, rms_q8{});
  }
  OCHECK(le);
  OLAUNCH();
  return 0;
}

extern "C" int ops_rmsnorm_forward_cuda(float *y, uint16_t *y_bf16, float *rstd, const float *x, const float *w,
                                        int rows, int dim, float eps, void *stream, rl_err *e) {
  return rmsnorm_fwd_run(NULL, y, y_bf16, rstd, NULL, x, w, rows, dim, eps, (cudaStream_t)stream, e);
}

extern "C" int ops_residual_rmsnorm_forward_cuda(float *h, float *y, uint16_t *y_bf16, float *rstd,
                                                 const float *resid, const float *x, const float *w, int rows,
                                                 int dim, float eps, void *stream, rl_err *e) {
  return rmsnorm_fwd_run(h, y, y_bf16, rstd, resid, x, w, rows, dim, eps, (cudaStream_t)stream, e);
}

extern "C" int ops_residual_rmsnorm_forward_bx_cuda(float *h, float *y, uint16_t *y_bf16, float *rstd,
                                                    const float *resid, const uint16_t *x, const float *w, int rows,
                                                    int dim, float eps, void *stream, rl_err *e) {
  return rmsnorm_fwd_run(h, y, y_bf16, rstd, resid, x, w, rows, dim, eps, (cudaStream_t)stream, e);
}

extern "C" int ops_rmsnorm_forward_q8_cuda(float *h, uint16_t *y_bf16, float *rstd, const float *resid,
                                           const float *x, const uint16_t *x_bf16, const float *w, int rows, int dim,
                                           float eps, const ops_fp8_act *qa, void *stream, rl_err *e) {
  if (!qa || !qa->q || (!x == !x_bf16) || (!h != !resid))
    return rl_errf(e, RL_EXIT_USAGE, "ops_rmsnorm_forward_q8_cuda: give the fp8 output, one of x and x_bf16, and h "
                   "with resid or neither");
  if (x) return rmsnorm_fwd_run(h, NULL, y_bf16, rstd, resid, x, w, rows, dim, eps, (cudaStream_t)stream, e, qa);
  return rmsnorm_fwd_run(h, NULL, y_bf16, rstd, resid, x_bf16, w, rows, dim, eps, (cudaStream_t)stream, e, qa);
}

/* dst = (FP32(p[0]) + FP32(p[1])) + FP32(p[2]) over n elements (np parts). */
__global__ void dy_parts_sum_kernel(float *dst, dy_parts dp, int np, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float v = bf(dp.p[0][i]);
    for (int q = 1; q < np; q++) v = __fadd_rn(v, bf(dp.p[q][i]));
    dst[i] = v;
  }
}

/* Shared driver of the RMSNorm backwards (dxb: BF16 copy of dx, may be NULL; np > 0:
 * dy is the sum of the BF16 parts dp, not read). */
static int rmsnorm_bwd_run(float *dx, uint16_t *dxb, int add, float *dw, const float *dy, dy_parts dp, int np,
                           const float *x, const float *w, const float *rstd, int rows, int dim, cudaStream_t st,
                           rl_err *e) {
  if (rows <= 0 || dim <= 0) return 0;
  int parts_ok = 1;
  for (int q = 0; q < np; q++) parts_ok &= aligned(dp.p[q], 8);
  if (dim % 128 == 0 && dim <= 1024 && aligned(dx, 16) && (np || aligned(dy, 16)) && aligned(x, 16) &&
      aligned(w, 16) && (!dxb || aligned(dxb, 8)) &&
      (np == 0 || (add && parts_ok && (dim == 128 || dim == 256 || dim == 512 || dim == 1024))))
    return add ? rmsnorm_bwd_fused<true>(dx, dxb, dw, dy, dp, np, x, w, rstd, rows, dim, st, e)
               : rmsnorm_bwd_fused<false>(dx, dxb, dw, dy, dp, np, x, w, rstd, rows, dim, st, e);
  if (np) { /* the parts summed into a workspace first, then the general path */
    float *tmp = NULL;
    const int64_t n = (int64_t)rows * dim;
    OCHECK(cudaMallocAsync((void **)&tmp, (size_t)n * sizeof(float), st));
    dy_parts_sum_kernel<<<grid_for(n, 256), 256, 0, st>>>(tmp, dp, np, n);
    OLAUNCH();
    int rc = rmsnorm_bwd_run(dx, dxb, add, dw, tmp, dp, 0, x, w, rstd, rows, dim, st, e);
    OCHECK(cudaFreeAsync(tmp, st));
    return rc;
  }
  if (dw && rmsnorm_dw_launch(dw, dy, x, rstd, rows, dim, NULL, NULL, 1, st, e)) return e ? e->code : RL_EXIT_HARDWARE;
  unsigned blocks = (unsigned)((rows + WARPS - 1) / WARPS);
  if (add) rmsnorm_dx_kernel<true><<<blocks, NTHR, 0, st>>>(dx, dxb, dy, x, w, rstd, rows, dim);
  else rmsnorm_dx_kernel<false><<<blocks, NTHR, 0, st>>>(dx, dxb, dy, x, w, rstd, rows, dim);
  OLAUNCH();
  return 0;
}

extern "C" int ops_rmsnorm_backward_cuda(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                         const float *rstd, int rows, int dim, void *stream, rl_err *e) {
  return rmsnorm_bwd_run(dx, NULL, 0, dw, dy, dy_parts{}, 0, x, w, rstd, rows, dim, (cudaStream_t)stream, e);
}

extern "C" int ops_residual_rmsnorm_backward_cuda(float *dresid, float *dw, const float *dy, const float *h,
                                                  const float *w, const float *rstd, int rows, int dim,
                                                  void *stream, rl_err *e) {
  return rmsnorm_bwd_run(dresid, NULL, 1, dw, dy, dy_parts{}, 0, h, w, rstd, rows, dim, (cudaStream_t)stream, e);
}

extern "C" int ops_residual_rmsnorm_backward_bx_cuda(float *dresid, uint16_t *dresid_bf16, float *dw, const float *dy,
                                                     const uint16_t *const *dy_bf16, int n_dy_bf16, const float *h,
                                                     const float *w, const float *rstd, int rows, int dim,
                                                     void *stream, rl_err *e) {
  if (!dy == !(n_dy_bf16 > 0) || n_dy_bf16 < 0 || n_dy_bf16 > 3)
    return rl_errf(e, RL_EXIT_USAGE, "residual+rmsnorm backward: give dy or 1 to 3 BF16 parts of it, not %s",
                   dy ? "both" : "neither");
  dy_parts dp = {};
  for (int q = 0; q < n_dy_bf16; q++)
    if (!(dp.p[q] = dy_bf16[q])) return rl_errf(e, RL_EXIT_USAGE, "residual+rmsnorm backward: BF16 part %d is NULL", q);
  return rmsnorm_bwd_run(dresid, dresid_bf16, 1, dw, dy, dp, n_dy_bf16, h, w, rstd, rows, dim, (cudaStream_t)stream,
                         e);
}

/* ---------------------------------------------------------------- RoPE and QK-norm */

/* Rotate in place, one warp per (token, head); DIR +1 forward, −1 transpose. */
template <int DIR>
__global__ void rope_kernel(float *x, const float *cs, const float *sn, int T, int n_heads, int d) {
  int lane = threadIdx.x & 31, half = d / 2;
  int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
  if (r >= (int64_t)T * n_heads) return;
  float *v = x + (size_t)r * d;
  size_t tb = (size_t)(r / n_heads) * half;
  for (int i = lane; i < half; i += 32) {
    float a = v[i], b = v[i + half], c = cs[tb + i], s = DIR > 0 ? sn[tb + i] : -sn[tb + i];
    v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

/* y = rope(rmsnorm_head(x)), one warp per (token, head), for q and k in one
 * launch (one RoPE table): warps [0, T·nq) take the query heads, the rest the
 * key heads (nk = 0: q alone — every single-tensor entry point). */
template <typename TX, typename TY>
__global__ void qk2_fwd_kernel(TY *yq, float *rq, const TX *xq, const float *wq, TY *yk, float *rk, const TX *xk,
                               const float *wk, const float *cs, const float *sn, int T, int nq, int nk, int d,
                               float eps) {
  int lane = threadIdx.x & 31, half = d / 2;
  int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
  const int64_t rq_n = (int64_t)T * nq;
  if (r >= (int64_t)T * (nq + nk)) return;
  const bool isq = r < rq_n;
  if (!isq) r -= rq_n;
  const int n_heads = isq ? nq : nk;
  size_t tb = (size_t)(r / n_heads) * half;
  float s = qk_norm_rope_head((isq ? yq : yk) + (size_t)r * d, (isq ? xq : xk) + (size_t)r * d, isq ? wq : wk, cs + tb,
                              sn + tb, d, eps, lane);
  float *rs = isq ? rq : rk;
  if (rs && lane == 0) rs[r] = s;
}

/* dx of the QK path, one warp per (token, head): g = rope^T(dy), then the
 * RMSNorm dx formula with g. */
template <typename TX, typename TD>
__global__ void qk_bwd_kernel(TD *dx, const float *dy, const TX *x, const float *w, const float *rstd,
                              const float *cs, const float *sn, int T, int n_heads, int d) {
  int lane = threadIdx.x & 31, half = d / 2;
  int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
  if (r >= (int64_t)T * n_heads) return;
  size_t o = (size_t)r * d, tb = (size_t)(r / n_heads) * half;
  float a = 0;
  for (int i = lane; i < half; i += 32) {
    float p = dy[o + i], q = dy[o + i + half], c = cs[tb + i], s = sn[tb + i];
    float g0 = __fadd_rn(__fmul_rn(p, c), __fmul_rn(q, s)), g1 = __fsub_rn(__fmul_rn(q, c), __fmul_rn(p, s));
    a += w[i] * g0 * ldf(x, o + i) + w[i + half] * g1 * ldf(x, o + i + half);
  }
  a = warp_sum(a);
  float s0 = rstd[r], cc = s0 * s0 * s0 * a / d;
  for (int i = lane; i < half; i += 32) {
    float p = dy[o + i], q = dy[o + i + half], c = cs[tb + i], s = sn[tb + i];
    float g0 = __fadd_rn(__fmul_rn(p, c), __fmul_rn(q, s)), g1 = __fsub_rn(__fmul_rn(q, c), __fmul_rn(p, s));
    const float d0 = s0 * w[i] * g0 - ldf(x, o + i) * cc, d1 = s0 * w[i + half] * g1 - ldf(x, o + i + half) * cc;
    stf(dx, o + i, d0);
    stf(dx, o + i + half, d1);
  }
}

/* Build the RoPE table of pos into a fresh workspace (*cs, *sn; free with cudaFreeAsync(*cs)). */
static int rope_table_make(float **cs, float **sn, const int32_t *pos, int T, int d, float theta, cudaStream_t st,
                           rl_err *e) {
  int half = d / 2;
  if (d <= 0 || d % 2 || half > ROPE_MAX_HALF)
    return rl_errf(e, RL_EXIT_USAGE, "rope: head_dim %d must be even and at most %d", d, 2 * ROPE_MAX_HALF);
  rope_inv inv;
  ops_rope_inv_freq(inv.v, d, theta);
  size_t n = (size_t)T * half;
  float *buf = NULL;
  OCHECK(cudaMallocAsync((void **)&buf, 2 * n * sizeof(float), st));
  *cs = buf;
  *sn = buf + n;
  rope_table_kernel<<<grid_for((int64_t)n, 256), 256, 0, st>>>(*cs, *sn, pos, T, half, inv);
  OLAUNCH();
  return 0;
}

/* Shared driver of RoPE forward and backward. */
static int rope_run(float *x, const int32_t *pos, int T, int n_heads, int d, float theta, int dir, cudaStream_t st,
                    rl_err *e) {
  if (T <= 0 || n_heads <= 0) return 0;
  float *cs, *sn;
  if (rope_table_make(&cs, &sn, pos, T, d, theta, st, e)) return e ? e->code : RL_EXIT_USAGE;
  unsigned blocks = (unsigned)(((int64_t)T * n_heads + WARPS - 1) / WARPS);
  if (dir > 0) rope_kernel<1><<<blocks, NTHR, 0, st>>>(x, cs, sn, T, n_heads, d);
  else rope_kernel<-1><<<blocks, NTHR, 0, st>>>(x, cs, sn, T, n_heads, d);
  OLAUNCH();
  OCHECK(cudaFreeAsync(cs, st));
  return 0;
}

extern "C" int ops_rope_forward_cuda(float *x, const int32_t *pos, int T, int n_heads, int head_dim, float theta,
                                     void *stream, rl_err *e) {
  return rope_run(x, pos, T, n_heads, head_dim, theta, +1, (cudaStream_t)stream, e);
}

extern "C" int ops_rope_backward_cuda(float *dx, const int32_t *pos, int T, int n_heads, int head_dim, float theta,
                                      void *stream, rl_err *e) {
  return rope_run(dx, pos, T, n_heads, head_dim, theta, -1, (cudaStream_t)stream, e);
}

/* qk2_fwd_kernel over a RoPE table of pos made for the call (q and k heads, or
 * q alone with nk = 0 and the k operands NULL). */
template <typename TX, typename TY>
static int qk2_fwd_run(TY *yq, float *rq, const TX *xq, const float *wq, TY *yk, float *rk, const TX *xk,
                       const float *wk, const int32_t *pos, int T, int nq, int nk, int head_dim, float eps, float theta,
                       void *stream, rl_err *e) {
  if (T <= 0 || nq + nk <= 0) return 0;
  cudaStream_t st = (cudaStream_t)stream;
  float *cs, *sn;
  if (rope_table_make(&cs, &sn, pos, T, head_dim, theta, st, e)) return e ? e->code : RL_EXIT_USAGE;
  unsigned blocks = (unsigned)(((int64_t)T * (nq + nk) + WARPS - 1) / WARPS);
  qk2_fwd_kernel<TX, TY><<<blocks, NTHR, 0, st>>>(yq, rq, xq, wq, yk, rk, xk, wk, cs, sn, T, nq, nk, head_dim, eps);
  OLAUNCH();
  OCHECK(cudaFreeAsync(cs, st));
  return 0;
}

template <typename TX, typename TY>
static int qk_fwd_run(TY *y, float *rstd, const TX *x, const float *w, const int32_t *pos, int T, int n_heads,
                      int head_dim, float eps, float theta, void *stream, rl_err *e) {
  return qk2_fwd_run<TX, TY>(y, rstd, x, w, NULL, NULL, NULL, NULL, pos, T, n_heads, 0, head_dim, eps, theta, stream, e);
}

extern "C" int ops_qk_norm_rope_forward_cuda(float *y, float *rstd, const float *x, const float *w,
                                             const int32_t *pos, int T, int n_heads, int head_dim, float eps,
                                             float theta, void *stream, rl_err *e) {
  return qk_fwd_run(y, rstd, x, w, pos, T, n_heads, head_dim, eps, theta, stream, e);
}

extern "C" int ops_qk_norm_rope_forward_bx_cuda(float *y, uint16_t *y_bf16, float *rstd, const uint16_t *x,
                                                const float *w, const int32_t *pos, int T, int n_heads, int head_dim,
                                                float eps, float theta, void *stream, rl_err *e) {
  if (!y == !y_bf16)
    return rl_errf(e, RL_EXIT_USAGE, "qk-norm+rope (BF16 operands): give exactly one of the FP32 and BF16 outputs");
  if (y_bf16) return qk_fwd_run(y_bf16, rstd, x, w, pos, T, n_heads, head_dim, eps, theta, stream, e);
  return qk_fwd_run(y, rstd, x, w, pos, T, n_heads, head_dim, eps, theta, stream, e);
}

extern "C" int ops_qk_norm_rope_forward2_bx_cuda(float *yq, uint16_t *yq_b, float *rq, const uint16_t *xq,
                                                 const float *wq, int nq, float *yk, uint16_t *yk_b, float *rk,
                                                 const uint16_t *xk, const float *wk, int nk, const int32_t *pos, int T,
                                                 int head_dim, float eps, float theta, void *stream, rl_err *e) {
  if (!yq == !yq_b || !yk == !yk_b || !yq_b != !yk_b)
    return rl_errf(e, RL_EXIT_USAGE,
                   "qk-norm+rope of q and k (BF16 operands): give one output each, both FP32 or both BF16");
  if (yq_b) return qk2_fwd_run(yq_b, rq, xq, wq, yk_b, rk, xk, wk, pos, T, nq, nk, head_dim, eps, theta, stream, e);
  return qk2_fwd_run(yq, rq, xq, wq, yk, rk, xk, wk, pos, T, nq, nk, head_dim, eps, theta, stream, e);
}

extern "C" int ops_rope_table_cuda(float *cs, float *sn, const int32_t *pos, int T, int head_dim, float theta,
                                   void *stream, rl_err *e) {
  int half = head_dim / 2;
  if (head_dim <= 0 || head_dim % 2 || half > ROPE_MAX_HALF)
    return rl_errf(e, RL_EXIT_USAGE, "rope: head_dim %d must be even and at most %d", head_dim, 2 * ROPE_MAX_HALF);
  if (T <= 0) return 0;
  rope_inv inv;
  ops_rope_inv_freq(inv.v, head_dim, theta);
  int64_t n = (int64_t)T * half;
  rope_table_kernel<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>(cs, sn, pos, T, half, inv);
  OLAUNCH();
  return 0;
}

extern "C" int ops_qk_norm_rope_forward_tab_cuda(float *y, float *rstd, const float *x, const float *w,
                                                 const float *cs, const float *sn, int T, int n_heads, int head_dim,
                                                 float eps, void *stream, rl_err *e) {
  if (T <= 0 || n_heads <= 0) return 0;
  unsigned blocks = (unsigned)(((int64_t)T * n_heads + WARPS - 1) / WARPS);
  qk2_fwd_kernel<float, float><<<blocks, NTHR, 0, (cudaStream_t)stream>>>(y, rstd, x, w, NULL, NULL, NULL, NULL, cs, sn,
                                                                          T, n_heads, 0, head_dim, eps);
  OLAUNCH();
  return 0;
}

template <typename TX, typename TD>
static int qk_bwd_run(TD *dx, float *dw, const float *dy, const TX *x, const float *w, const float *rstd,
                      const int32_t *pos, int T, int n_heads, int head_dim, float theta, void *stream, rl_err *e) {
  if (T <= 0 || n_heads <= 0) return 0;
  cudaStream_t st = (cudaStream_t)stream;
  float *cs, *sn;
  if (rope_table_make(&cs, &sn, pos, T, head_dim, theta, st, e)) return e ? e->code : RL_EXIT_USAGE;
  int rows = T * n_heads;
  if ((head_dim == 64 || head_dim == 128 || head_dim == 256) && aligned(dy, 8) && aligned(x, 2 * sizeof(TX))) {
    const int nb = (rows + QK_RPB - 1) / QK_RPB;
    float *part = NULL;
    if (dw) OCHECK(cudaMallocAsync((void **)&part, (size_t)nb * head_dim * sizeof(float), st));
    if (head_dim == 64)
      qk_bwd_fused_kernel<2, TX, TD><<<nb, NTHR, 0, st>>>(dx, part, dy, x, w, rstd, cs, sn, rows, n_heads);
    else if (head_dim == 128)
      qk_bwd_fused_kernel<4, TX, TD><<<nb, NTHR, 0, st>>>(dx, part, dy, x, w, rstd, cs, sn, rows, n_heads);
    else
      qk_bwd_fused_kernel<8, TX, TD><<<nb, NTHR, 0, st>>>(dx, part, dy, x, w, rstd, cs, sn, rows, n_heads);
    OLAUNCH();
    if (dw) {
      rmsnorm_dw_sum_kernel<<<(head_dim + 31) / 32, NTHR, 0, st>>>(dw, part, nb, head_dim);
      OLAUNCH();
      OCHECK(cudaFreeAsync(part, st));
    }
    OCHECK(cudaFreeAsync(cs, st));
    return 0;
  }
  if (dw && rmsnorm_dw_launch(dw, dy, x, rstd, rows, head_dim, cs, sn, n_heads, st, e)) {
    cudaFreeAsync(cs, st);
    return e ? e->code : RL_EXIT_HARDWARE;
  }
  qk_bwd_kernel<TX, TD><<<(unsigned)((rows + WARPS - 1) / WARPS), NTHR, 0, st>>>(dx, dy, x, w, rstd, cs, sn, T,
                                                                                  n_heads, head_dim);
  OLAUNCH();
  OCHECK(cudaFreeAsync(cs, st));
  return 0;
}

extern "C" int ops_qk_norm_rope_backward_cuda(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                              const float *rstd, const int32_t *pos, int T, int n_heads,
                                              int head_dim, float theta, void *stream, rl_err *e) {
  return qk_bwd_run(dx, dw, dy, x, w, rstd, pos, T, n_heads, head_dim, theta, stream, e);
}

extern "C" int ops_qk_norm_rope_backward_bx_cuda(uint16_t *dx, float *dw, const float *dy, const uint16_t *x,
                                                 const float *w, const float *rstd, const int32_t *pos, int T,
                                                 int n_heads, int head_dim, float theta, void *stream, rl_err *e) {
  return qk_bwd_run(dx, dw, dy, x, w, rstd, pos, T, n_heads, head_dim, theta, stream, e);
}
