/* optim_cuda.cu — the CUDA twin of optim_cpu.c: the same global norm (FP64,
 * the fixed lane/block order of optim.h, so the same bits) and the same
 * element update (optim_adamw_elem with _rn intrinsics: no FMA contraction),
 * hence bit-identical weights, main params and moments.
 *
 * Norm: one CTA of OPTIM_NORM_LANES threads per OPTIM_NORM_BLOCK elements
 * writes one FP64 partial; one thread per tensor then adds its partials in
 * block order; the host adds the tensors' sums in list order. The per-tensor
 * sums come back to the host (one stream synchronization per step), which also
 * names the tensor when a gradient is not finite. */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernels/formats.h"
#include "kernels/optim.h"

/* Device scratch reused from step to step (grown on demand). */
static struct {
  int dev;            /* device the buffers live on (-1: none) */
  double *part;       /* block partials of every tensor */
  int64_t part_cap;
  double *tsum;       /* per-tensor sums of squares */
  int64_t *toff;      /* per-tensor offsets into part (nt + 1) */
  int t_cap;
  unsigned long long *bad; /* [0] first bad index, [1] count */
} g_opt = {-1, NULL, 0, NULL, NULL, 0, NULL};

#define OCHECK(call)                                                                     \
  do {                                                                                   \
    cudaError_t err_ = (call);                                                           \
    if (err_ != cudaSuccess)                                                             \
      return rl_errf(e, RL_EXIT_HARDWARE, "%s:%d: %s: %s", __FILE__, __LINE__, #call,    \
                     cudaGetErrorString(err_));                                          \
  } while (0)

/* One block's ‖g‖² partial in the fixed lane order (OPTIM_NORM_LANES threads). */
__global__ void k_norm_blocks(const float *g, int64_t n, double *part) {
  __shared__ double s[OPTIM_NORM_LANES];
  int j = threadIdx.x;
  int64_t i0 = (int64_t)blockIdx.x * OPTIM_NORM_BLOCK;
  int64_t len = n - i0 < OPTIM_NORM_BLOCK ? n - i0 : OPTIM_NORM_BLOCK;
  double a = 0;
  for (int64_t i = j; i < len; i += OPTIM_NORM_LANES) {
    double x = (double)g[i0 + i];
    a = __dadd_rn(a, __dmul_rn(x, x));
  }
  s[j] = a;
  __syncthreads();
  for (int h = OPTIM_NORM_LANES / 2; h > 0; h >>= 1) {
    if (j < h) s[j] = __dadd_rn(s[j], s[j + h]);
    __syncthreads();
  }
  if (j == 0) part[blockIdx.x] = s[0];
}

/* Each tensor's partials added in block order (one thread per tensor). */
__global__ void k_norm_tensors(const double *part, const int64_t *toff, int nt, double *tsum) {
  int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= nt) return;
  double s = 0;
  for (int64_t b = toff[k]; b < toff[k + 1]; b++) s = __dadd_rn(s, part[b]);
  tsum[k] = s;
}

/* First index and count of non-finite values of g. */
__global__ void k_find_bad(const float *g, int64_t n, unsigned long long *bad) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    if (!qf_isfinite(g[i])) {
      atomicMin(&bad[0], (unsigned long long)i);
      atomicAdd(&bad[1], 1ull);
    }
}

/* The AdamW update of one tensor (grid-stride over its elements). */
__global__ void k_adamw(optim_scalars s, const float *g, float *mainp, uint16_t *w, float *m, float *v,
                        int64_t n, int fp32_main, int no_decay) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    float p = fp32_main ? mainp[i] : fmt_bf16_to_f32(w[i]);
    float mm = m[i], vv = v[i];
    optim_adamw_elem(&s, g[i], &p, &mm, &vv, no_decay);
    m[i] = mm;
    v[i] = vv;
    if (fp32_main) mainp[i] = p;
    w[i] = fmt_bf16_from_f32(p);
  }
}

/* The same, four elements a thread (n4 groups of 4; 16-byte aligned FP32 arrays,
 * 8-byte aligned BF16): the same element update, wider memory transactions. */
__global__ void k_adamw4(optim_scalars s, const float4 *g, float4 *mainp, uint2 *w, float4 *m, float4 *v, int64_t n4,
                         int fp32_main, int no_decay) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4;
       i += (int64_t)gridDim.x * blockDim.x) {
    const float4 gg = g[i];
    float4 mm = m[i], vv = v[i], pp;
    if (fp32_main) {
      pp = mainp[i];
    } else {
      const uint2 u = w[i];
      pp = make_float4(fmt_bf16_to_f32((uint16_t)(u.x & 0xffff)), fmt_bf16_to_f32((uint16_t)(u.x >> 16)),
                       fmt_bf16_to_f32((uint16_t)(u.y & 0xffff)), fmt_bf16_to_f32((uint16_t)(u.y >> 16)));
    }
    optim_adamw_elem(&s, gg.x, &pp.x, &mm.x, &vv.x, no_decay);
    optim_adamw_elem(&s, gg.y, &pp.y, &mm.y, &vv.y, no_decay);
    optim_adamw_elem(&s, gg.z, &pp.z, &mm.z, &vv.z, no_decay);
    optim_adamw_elem(&s, gg.w, &pp.w, &mm.w, &vv.w, no_decay);
    m[i] = mm, v[i] = vv;
    if (fp32_main) mainp[i] = pp;
    w[i] = make_uint2((uint32_t)fmt_bf16_from_f32(pp.x) | ((uint32_t)fmt_bf16_from_f32(pp.y) << 16),
                      (uint32_t)fmt_bf16_from_f32(pp.z) | ((uint32_t)fmt_bf16_from_f32(pp.w) << 16));
  }
}

/* 1 when p is aligned to a bytes (NULL passes). */
static int al(const void *p, unsigned a) { return (uintptr_t)p % a == 0; }

/* Grid of a grid-stride kernel over n elements. */
static unsigned grid_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : b > 65535 * 8 ? 65535 * 8 : b);
}

extern "C" void optim_cuda_release(void) {
  cudaFree(g_opt.part), cudaFree(g_opt.tsum), cudaFree(g_opt.toff), cudaFree(g_opt.bad);
  g_opt.part = NULL, g_opt.tsum = NULL, g_opt.toff = NULL, g_opt.bad = NULL;
  g_opt.part_cap = 0, g_opt.t_cap = 0, g_opt.dev = -1;
}

/* Scratch for nt tensors holding nb block partials in all, on the current device. */
static int scratch_reserve(int64_t nb, int nt, rl_err *e) {
  int dev = 0;
  OCHECK(cudaGetDevice(&dev));
  if (dev != g_opt.dev) optim_cuda_release();
  g_opt.dev = dev;
  if (nb > g_opt.part_cap) {
    cudaFree(g_opt.part);
    g_opt.part = NULL, g_opt.part_cap = 0;
    OCHECK(cudaMalloc((void **)&g_opt.part, (size_t)nb * sizeof(double)));
    g_opt.part_cap = nb;
  }
  if (nt > g_opt.t_cap) {
    cudaFree(g_opt.tsum), cudaFree(g_opt.toff);
    g_opt.tsum = NULL, g_opt.toff = NULL, g_opt.t_cap = 0;
    OCHECK(cudaMalloc((void **)&g_opt.tsum, (size_t)nt * sizeof(double)));
    OCHECK(cudaMalloc((void **)&g_opt.toff, (size_t)(nt + 1) * sizeof(int64_t)));
    g_opt.t_cap = nt;
  }
  if (!g_opt.bad) OCHECK(cudaMalloc((void **)&g_opt.bad, 2 * sizeof(unsigned long long)));
  return 0;
}

/* The error for tensor t whose gradient is not finite (same text as the CPU's). */
static int grad_nonfinite_cuda(const optim_tensor *t, cudaStream_t st, rl_err *e) {
  unsigned long long init[2] = {~0ull, 0}, bad[2];
  OCHECK(cudaMemcpyAsync(g_opt.bad, init, sizeof init, cudaMemcpyHostToDevice, st));
  k_find_bad<<<grid_for(t->n, 256), 256, 0, st>>>(t->grad, t->n, g_opt.bad);
  OCHECK(cudaGetLastError());
  OCHECK(cudaMemcpyAsync(bad, g_opt.bad, sizeof bad, cudaMemcpyDeviceToHost, st));
  float first = 0;
  OCHECK(cudaStreamSynchronize(st));
  if (bad[1]) OCHECK(cudaMemcpy(&first, t->grad + bad[0], sizeof first, cudaMemcpyDeviceToHost));
  return rl_errf(e, RL_EXIT_FAIL,
                 "optimizer: the gradient of tensor '%s' holds %lld non-finite value(s) (first: %g at "
                 "index %lld of %lld); the step was stopped before any weight, moment or step count "
                 "changed: check the loss for overflow or lower train.lr",
                 t->name ? t->name : "?", (long long)bad[1], (double)first,
                 bad[1] ? (long long)bad[0] : -1LL, (long long)t->n);
}

extern "C" int optim_grad_norm_cuda(const optim_tensor *t, int nt, double *norm, void *stream,
                                    rl_err *e) {
  cudaStream_t st = (cudaStream_t)stream;
  if (nt <= 0) return *norm = 0, 0;
  int64_t *toff = (int64_t *)rl_xmalloc((size_t)(nt + 1) * sizeof(int64_t));
  double *tsum = (double *)rl_xmalloc((size_t)nt * sizeof(double));
  toff[0] = 0;
  for (int k = 0; k < nt; k++) toff[k + 1] = toff[k] + (t[k].n + OPTIM_NORM_BLOCK - 1) / OPTIM_NORM_BLOCK;
  int rc = scratch_reserve(toff[nt] > 0 ? toff[nt] : 1, nt, e);
  for (int k = 0; !rc && k < nt; k++) {
    int64_t nb = toff[k + 1] - toff[k];
    if (nb == 0) continue;
    k_norm_blocks<<<(unsigned)nb, OPTIM_NORM_LANES, 0, st>>>(t[k].grad, t[k].n, g_opt.part + toff[k]);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
      rc = rl_errf(e, RL_EXIT_HARDWARE, "optimizer: norm kernel of tensor '%s': %s",
                   t[k].name ? t[k].name : "?", cudaGetErrorString(err));
  }
  cudaError_t err = cudaSuccess;
  if (!rc) err = cudaMemcpyAsync(g_opt.toff, toff, (size_t)(nt + 1) * sizeof(int64_t),
                                 cudaMemcpyHostToDevice, st);
  if (!rc && err == cudaSuccess) {
    k_norm_tensors<<<(unsigned)((nt + 127) / 128), 128, 0, st>>>(g_opt.part, g_opt.toff, nt, g_opt.tsum);
    err = cudaGetLastError();
  }
  if (!rc && err == cudaSuccess)
    err = cudaMemcpyAsync(tsum, g_opt.tsum, (size_t)nt * sizeof(double), cudaMemcpyDeviceToHost, st);
  if (!rc && err == cudaSuccess) err = cudaStreamSynchronize(st);
  if (!rc && err != cudaSuccess)
    rc = rl_errf(e, RL_EXIT_HARDWARE, "optimizer: gradient norm on the GPU: %s", cudaGetErrorString(err));
  double total = 0;
  for (int k = 0; !rc && k < nt; k++) {
    if (!isfinite(tsum[k])) rc = grad_nonfinite_cuda(&t[k], st, e);
    total += tsum[k];
  }
  free(toff);
  free(tsum);
  if (!rc) *norm = sqrt(total);
  return rc;
}

extern "C" int optim_adamw_apply_cuda(const optim_scalars *s, const optim_tensor *t, int nt,
                                      int main_params, void *stream, rl_err *e) {
  cudaStream_t st = (cudaStream_t)stream;
  for (int k = 0; k < nt; k++) {
    if (t[k].n <= 0) continue;
    const int f32 = main_params == OPTIM_MAIN_FP32;
    if (t[k].n % 4 == 0 && al(t[k].grad, 16) && al(t[k].m, 16) && al(t[k].v, 16) && al(t[k].w, 8) &&
        (!f32 || al(t[k].main, 16)))
      k_adamw4<<<grid_for(t[k].n / 4, 256), 256, 0, st>>>(*s, (const float4 *)t[k].grad, (float4 *)t[k].main,
                                                           (uint2 *)t[k].w, (float4 *)t[k].m, (float4 *)t[k].v,
                                                           t[k].n / 4, f32, t[k].no_decay);
    else
      k_adamw<<<grid_for(t[k].n, 256), 256, 0, st>>>(*s, t[k].grad, t[k].main, t[k].w, t[k].m, t[k].v, t[k].n, f32,
                                                     t[k].no_decay);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
      return rl_errf(e, RL_EXIT_HARDWARE, "optimizer: AdamW kernel of tensor '%s': %s",
                     t[k].name ? t[k].name : "?", cudaGetErrorString(err));
  }
  return 0;
}

extern "C" int optim_step_cuda(const optim_cfg *c, const optim_tensor *t, int nt, int64_t step,
                               optim_info *info, void *stream, rl_err *e) {
  int rc = optim_cfg_check(c, step, e);
  if (!rc) rc = optim_tensors_check(t, nt, c->main_params, e);
  double norm = 0;
  if (!rc) rc = optim_grad_norm_cuda(t, nt, &norm, stream, e);
  if (rc) return rl_err_prefix(e, "step %lld: ", (long long)step);
  double coef = optim_clip_coef(c, norm);
  optim_scalars s;
  optim_scalars_make(c, step, coef, &s);
  rc = optim_adamw_apply_cuda(&s, t, nt, c->main_params, stream, e);
  if (rc) return rc;
  if (info) info->grad_norm = norm, info->clip_coef = coef, info->lr = optim_lr_at(c, step);
  return 0;
}
