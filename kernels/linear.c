/* linear.c — linear_forward / linear_backward (linear.h): quantize the
 * activation in the weight's format, then the GEMM of gemm.h. The CPU and the
 * CUDA paths make the same calls (quant_* then gemm_q_*); the CUDA one keeps
 * its quantized activations in per-device scratch buffers. */
#include "kernels/linear.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>
#endif

/* Counts the quantizations into the device scratch (linear_act_prepare and
 * every device linear_forward): a prepared activation is valid while it is
 * the latest. One thread a device uses this module (as its scratch). */
static _Thread_local unsigned long linear_act_epoch;

/* The activation qtensor for x [m][K] in format f, buffers not yet set. */
static qtensor linear_act_qtensor(qformat f, int64_t m, int64_t K, int on_device) {
  qtensor t = qtensor_bf16(NULL, m, K, on_device);
  t.fmt = f;
  return t;
}

/* Options of the activation quantizer that policy p implies. */
static quant_opts linear_quant_opts(const quant_policy *p) {
  quant_opts qo = {0};
  qo.ue8m0 = p->ue8m0;
  return qo;
}

/* CPU: quantize x into host buffers, then the reference GEMM. */
static int linear_forward_cpu(uint16_t *out, const uint16_t *x, int64_t m, const qtensor *w,
                              const quant_policy *p, gemm_info *info, rl_err *e) {
  int64_t K = w->cols;
  qtensor xq = linear_act_qtensor(w->fmt, m, K, 0);
  quant_opts qo = linear_quant_opts(p);
  quant_stats st = {0, -1};
  gemm_opts go = {p->emulate, p->pin_algo, 0, NULL};
  int qs = QUANT_OK;
  void *q = NULL, *s = NULL;
  switch (w->fmt) {
    case QFMT_BF16: xq.data = (void *)x; break;
    case QFMT_FP8_BLOCK:
      q = rl_xmalloc((size_t)(m * K) + 1);
      s = rl_xmalloc((size_t)(m * quant_cdiv(K, 128)) * sizeof(float) + 4);
      qs = quant_fp8_block_act_cpu(x, m, K, q, s, &qo, &st);
      break;
    case QFMT_MXFP8:
      q = rl_xmalloc((size_t)(m * K) + 1);
      s = rl_xmalloc((size_t)(m * quant_cdiv(K, 32)) + 1);
      qs = quant_mxfp8_cpu(x, m, K, q, s, &qo, &st);
      break;
    case QFMT_NVFP4:
      q = rl_xmalloc((size_t)(m * quant_cdiv(K, 2)) + 1);
      s = rl_xmalloc((size_t)(m * quant_cdiv(K, 16)) + 1);
      qs = quant_nvfp4_cpu(x, m, K, q, s, &xq.s_dec, &qo, &st);
      break;
  }
  int rc = 0;
  if (qs != QUANT_OK) {
    rc = quant_status_err(qs, &st, "linear_forward activation", K, e);
    if (!rc) rc = rl_errf(e, RL_EXIT_FAIL, "linear_forward: quantizer status %d", qs);
  } else {
    if (w->fmt != QFMT_BF16) xq.data = q, xq.scales = s;
    rc = gemm_q_cpu(out, &xq, w, &go, info, e);
  }
  free(q);
  free(s);
  return rc;
}

#if RLRUN_CUDA
/* Scratch buffers per device, grown on demand and reused (stream-ordered). */
enum { LIN_SCR_Q, LIN_SCR_S, LIN_SCR_Y, LIN_SCR_SDEC, LIN_SCR_COUNT };
static struct {
  void *buf[DEVICE_MAX_GPUS][LIN_SCR_COUNT];
  size_t cap[DEVICE_MAX_GPUS][LIN_SCR_COUNT];
} L;

/* Check a CUDA runtime status; records what failed. */
static int linear_cuda_ok(cudaError_t st, const char *what, rl_err *e) {
  if (st == cudaSuccess) return 0;
  return rl_errf(e, RL_EXIT_FAIL, "linear_forward: %s failed: %s", what, cudaGetErrorString(st));
}

/* Device scratch slot `slot` with at least `bytes` bytes. */
static void *linear_scratch(int dev, int slot, size_t bytes, rl_err *e) {
  if (bytes == 0) bytes = 16;
  if (L.cap[dev][slot] >= bytes) return L.buf[dev][slot];
  if (L.buf[dev][slot] && linear_cuda_ok(cudaFree(L.buf[dev][slot]), "cudaFree", e)) return NULL;
  L.buf[dev][slot] = NULL, L.cap[dev][slot] = 0;
  size_t cap = bytes + bytes / 4; /* headroom for slowly growing M */
  device_buffers_changed();
  if (linear_cuda_ok(cudaMalloc(&L.buf[dev][slot], cap), "cudaMalloc of activation scratch", e))
    return NULL;
  L.cap[dev][slot] = cap;
  return L.buf[dev][slot];
}

/* CUDA: quantize x [m][K] for weights of format fmt into this device's scratch
 * (fp8-block straight into cuBLASLt's scale layout, token dimension padded to a
 * multiple of 8); *xq describes it (BF16: x itself). */
static int linear_act_cuda(qtensor *xq_out, const uint16_t *x, int64_t m, int64_t K, qformat fmt,
                           const quant_policy *p, const linear_opts *o, rl_err *e) {
  int dev = 0, rc = gemm_cuda_device(&dev, e);
  if (rc) return rc;
  void *stream = o ? o->stream : NULL;
  cudaStream_t cs = (cudaStream_t)stream;
  qtensor xq = linear_act_qtensor(fmt, m, K, 1);
  quant_opts qo = linear_quant_opts(p);
  void *q = NULL, *s = NULL;
  int qs = QUANT_OK;
  rl_err_clear(e); /* so that a quantizer failure without a message is told apart below */
  switch (fmt) {
    case QFMT_BF16: *xq_out = qtensor_bf16(x, m, K, 1); return 0;
    case QFMT_FP8_BLOCK: {
      int64_t mp = quant_roundup(m, 8), kb = quant_cdiv(K, 128);
      if (!(q = linear_scratch(dev, LIN_SCR_Q, (size_t)(mp * K), e))) return RL_EXIT_FAIL;
      if (!(s = linear_scratch(dev, LIN_SCR_S, (size_t)(kb * mp) * sizeof(float), e)))
        return RL_EXIT_FAIL;
      if (mp > m) { /* zero pad rows: data 0, scale 0 (their outputs are dropped) */
        if (linear_cuda_ok(cudaMemsetAsync((uint8_t *)q + m * K, 0, (size_t)((mp - m) * K), cs),
                           "cudaMemsetAsync (pad rows)", e) ||
            linear_cuda_ok(cudaMemset2DAsync((float *)s + m, (size_t)mp * sizeof(float), 0,
                                             (size_t)(mp - m) * sizeof(float), (size_t)kb, cs),
                           "cudaMemset2DAsync (pad scales)", e))
          return RL_EXIT_FAIL;
      }
      qo.scale_layout = QLAYOUT_HOPPER_ACT;
      qo.scale_ld = mp;
      qs = quant_fp8_block_act_cuda(x, m, K, q, s, &qo, NULL, stream, e);
      xq.rows = mp, xq.layout = QLAYOUT_HOPPER_ACT, xq.scale_ld = mp;
      break;
    }
    case QFMT_MXFP8:
      if (!(q = linear_scratch(dev, LIN_SCR_Q, (size_t)(m * K), e))) return RL_EXIT_FAIL;
      if (!(s = linear_scratch(dev, LIN_SCR_S, (size_t)(m * quant_cdiv(K, 32)), e)))
        return RL_EXIT_FAIL;
      qs = quant_mxfp8_cuda(x, m, K, q, s, &qo, NULL, stream, e);
      break;
    case QFMT_NVFP4: {
      float *sd;
      if (!(q = linear_scratch(dev, LIN_SCR_Q, (size_t)(m * quant_cdiv(K, 2)), e)) ||
          !(s = linear_scratch(dev, LIN_SCR_S, (size_t)(m * quant_cdiv(K, 16)), e)) ||
          !(sd = linear_scratch(dev, LIN_SCR_SDEC, sizeof(float), e)))
        return RL_EXIT_FAIL;
      qs = quant_nvfp4_cuda(x, m, K, q, s, sd, &qo, NULL, stream, e);
      xq.d_s_dec = sd;
      break;
    }
  }
  if (qs != QUANT_OK) {
    if (e && e->code) return rl_err_prefix(e, "linear_forward activation: ");
    return quant_status_err(qs, NULL, "linear_forward activation (device)", K, e);
  }
  xq.data = q, xq.scales = s;
  *xq_out = xq;
  return 0;
}

/* CUDA: out[m][N] = the prepared activation xq (m real rows of xq->rows) · wᵀ. */
static int linear_gemm_cuda(uint16_t *out, const qtensor *xq_in, int64_t m, const qtensor *w,
                            const quant_policy *p, const linear_opts *o, gemm_info *info, rl_err *e) {
  int dev = 0, rc = gemm_cuda_device(&dev, e);
  if (rc) return rc;
  void *stream = o ? o->stream : NULL;
  cudaStream_t cs = (cudaStream_t)stream;
  const int64_t N = w->rows;
  qtensor xq = *xq_in;
  gemm_opts go = {p->emulate, p->pin_algo, 0, stream};
  if (xq.rows == m) return gemm_q_cuda(out, &xq, w, &go, info, e);
  /* padded token dimension: the GEMM writes mp rows into scratch, we keep m */
  void *y = linear_scratch(dev, LIN_SCR_Y, (size_t)(xq.rows * N) * 2, e);
  if (!y) return RL_EXIT_FAIL;
  rc = gemm_q_cuda(y, &xq, w, &go, info, e);
  if (rc) return rc;
  if (m * N > 0 &&
      linear_cuda_ok(cudaMemcpyAsync(out, y, (size_t)(m * N) * 2, cudaMemcpyDeviceToDevice, cs),
                     "cudaMemcpyAsync (unpad output)", e))
    return RL_EXIT_FAIL;
  return 0;
}

/* Whether this fp8-block product runs as gemm_fp8q_cuda (the switch on, not pinned,
 * a Hopper GPU, operands the kernel takes). */
static int linear_fp8q_wanted(const uint16_t *out, const uint16_t *x, int64_t m, const qtensor *w,
                              const quant_policy *p) {
  if (w->fmt != QFMT_FP8_BLOCK || p->pin_algo || !linear_fp8q(-1) || !gemm_fp8q_supported()) return 0;
  rl_err scratch = {0};
  return gemm_fp8q_check(out, x, w, m, &scratch) == 0;
}

static int linear_forward_cuda(uint16_t *out, const uint16_t *x, int64_t m, const qtensor *w,
                               const quant_policy *p, const linear_opts *o, gemm_info *info,
                               rl_err *e) {
  if (linear_fp8q_wanted(out, x, m, w, p)) {
    int rc = gemm_fp8q_cuda(out, x, w, m, p, o ? o->stream : NULL, e);
    if (!rc) *info = (gemm_info){GEMM_PATH_FP8_BLOCK_FUSED, (int)m, 0, -1, 1};
    return rc;
  }
  qtensor xq;
  int rc = linear_act_cuda(&xq, x, m, w->cols, w->fmt, p, o, e);
  return rc ? rc : linear_gemm_cuda(out, &xq, m, w, p, o, info, e);
}
#endif

/* RLRUN_LINEAR_FP8Q: off unless the variable is "1"; set ≥ 0 overrides (tests, benchmarks). */
int linear_fp8q(int set) {
  static int cache = -1;
  return rl_env_switch_def(&cache, "RLRUN_LINEAR_FP8Q", 0, set);
}

/* Checks, then the CPU or CUDA forward by where the weight lives. */
int linear_forward_ex(uint16_t *out, const uint16_t *x, int64_t m, const qtensor *w,
                      const quant_policy *p, const linear_opts *o, rl_err *e) {
  gemm_info scratch_info, *info = o && o->info ? o->info : &scratch_info;
  *info = (gemm_info){GEMM_PATH_NONE, 0, 0, -1, 1};
  if (!w || !p) return rl_errf(e, RL_EXIT_USAGE, "linear_forward: weight or policy is NULL");
  if (m < 0 || m > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "linear_forward: bad token count %lld", (long long)m);
  if ((unsigned)w->fmt > QFMT_NVFP4)
    return rl_errf(e, RL_EXIT_USAGE, "linear_forward: weight has unknown format %d", (int)w->fmt);
  if (m > 0 && w->rows > 0 && (!out || (w->cols > 0 && !x)))
    return rl_errf(e, RL_EXIT_USAGE, "linear_forward: out or x is NULL");
  if (m == 0 || w->rows == 0) return 0;
  if (!w->on_device) return linear_forward_cpu(out, x, m, w, p, info, e);
  linear_act_epoch++; /* the scratch a prepared activation lives in is overwritten */
#if RLRUN_CUDA
  return linear_forward_cuda(out, x, m, w, p, o, info, e);
#else
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "linear_forward: the weight is in device memory but this binary was built "
                 "without CUDA; rebuild with nvcc available or use device: cpu");
#endif
}

/* linear_forward_ex with default options. */
int linear_forward(uint16_t *out, const uint16_t *x, int64_t m, const qtensor *w,
                   const quant_policy *p, rl_err *e) {
  return linear_forward_ex(out, x, m, w, p, NULL, e);
}

int linear_act_prepare(linear_act *a, const uint16_t *x, int64_t m, int64_t k, qformat fmt, const quant_policy *p,
                       const linear_opts *o, rl_err *e) {
  if (!a || !p) return rl_errf(e, RL_EXIT_USAGE, "linear_act_prepare: activation or policy is NULL");
  memset(a, 0, sizeof *a);
  if (m < 0 || m > INT32_MAX || k < 0 || (unsigned)fmt > QFMT_NVFP4 || (m > 0 && k > 0 && !x))
    return rl_errf(e, RL_EXIT_USAGE, "linear_act_prepare: bad activation (%lld x %lld, format %d)", (long long)m,
                   (long long)k, (int)fmt);
  a->m = m, a->k = k, a->fmt = fmt, a->ue8m0 = p->ue8m0, a->epoch = ++linear_act_epoch;
  if (m == 0) return 0;
#if RLRUN_CUDA
  return linear_act_cuda(&a->xq, x, m, k, fmt, p, o, e);
#else
  return rl_errf(e, RL_EXIT_HARDWARE, "linear_act_prepare: this binary was built without CUDA");
#endif
}

int linear_act_wrap_fp8(linear_act *a, const uint8_t *q, const float *scales, int64_t m, int64_t m_pad, int64_t k,
                        const quant_policy *p, rl_err *e) {
  if (!a || !p) return rl_errf(e, RL_EXIT_USAGE, "linear_act_wrap_fp8: activation or policy is NULL");
  memset(a, 0, sizeof *a);
  if (m < 0 || m > INT32_MAX || k < 0 || m_pad != quant_roundup(m, 8) || (m > 0 && k > 0 && (!q || !scales)))
    return rl_errf(e, RL_EXIT_USAGE, "linear_act_wrap_fp8: bad activation (%lld x %lld, %lld rows padded: a multiple "
                   "of 8 from %lld needed)", (long long)m, (long long)k, (long long)m_pad, (long long)m);
  a->m = m, a->k = k, a->fmt = QFMT_FP8_BLOCK, a->ue8m0 = p->ue8m0, a->external = 1;
  a->xq = linear_act_qtensor(QFMT_FP8_BLOCK, m_pad, k, 1);
  a->xq.data = (void *)q, a->xq.scales = (void *)scales;
  a->xq.layout = QLAYOUT_HOPPER_ACT, a->xq.scale_ld = m_pad;
  return 0;
}

int linear_forward_prepared(uint16_t *out, const linear_act *a, const qtensor *w, const quant_policy *p,
                            const linear_opts *o, rl_err *e) {
  gemm_info scratch_info, *info = o && o->info ? o->info : &scratch_info;
  *info = (gemm_info){GEMM_PATH_NONE, 0, 0, -1, 1};
  if (!a || !w || !p) return rl_errf(e, RL_EXIT_USAGE, "linear_forward_prepared: activation, weight or policy is NULL");
  if (!a->external && a->epoch != linear_act_epoch)
    return rl_errf(e, RL_EXIT_USAGE, "linear_forward_prepared: the activation was prepared before another linear "
                   "call reused its scratch; prepare it again");
  if (w->fmt != a->fmt || w->cols != a->k || !w->on_device || p->ue8m0 != a->ue8m0)
    return rl_errf(e, RL_EXIT_USAGE, "linear_forward_prepared: weight %lld x %lld (format %d, %s) does not take the "
                   "activation prepared for K = %lld, format %d%s", (long long)w->rows, (long long)w->cols,
                   (int)w->fmt, w->on_device ? "device" : "host", (long long)a->k, (int)a->fmt,
                   p->ue8m0 != a->ue8m0 ? " (another scale format)" : "");
  if (a->m == 0 || w->rows == 0) return 0;
  if (!out) return rl_errf(e, RL_EXIT_USAGE, "linear_forward_prepared: out is NULL");
#if RLRUN_CUDA
  return linear_gemm_cuda(out, &a->xq, a->m, w, p, o, info, e);
#else
  return rl_errf(e, RL_EXIT_HARDWARE, "linear_forward_prepared: this binary was built without CUDA");
#endif
}

/* dX, dW and the FP32 dW accumulation as three BF16 GEMMs (FP32 accumulation). */
int linear_backward(const linear_bwd *b, rl_err *e) {
  if (!b) return rl_errf(e, RL_EXIT_USAGE, "linear_backward: no arguments");
  int rc = 0;
  if (b->dx) { /* dX[m][k] = dY[m][n] · W[n][k] */
    gemm_bf16_args g = {b->m, b->k, b->n, 0, 0, b->dy, b->w, b->dx, 0, 0.0f, b->on_device, b->stream};
    if ((rc = gemm_bf16(&g, NULL, e))) return rl_err_prefix(e, "linear_backward dX: ");
  }
  if (b->dw) { /* dW[n][k] = dY[m][n]ᵀ · X[m][k] */
    gemm_bf16_args g = {b->n, b->k, b->m, 1, 0, b->dy, b->x, b->dw, 0, 0.0f, b->on_device, b->stream};
    if ((rc = gemm_bf16(&g, NULL, e))) return rl_err_prefix(e, "linear_backward dW: ");
  }
  if (b->dw_acc) { /* dW_acc += dYᵀ · X, in FP32 */
    gemm_bf16_args g = {b->n, b->k, b->m, 1, 0, b->dy, b->x, b->dw_acc, 1, 1.0f, b->on_device,
                        b->stream};
    if ((rc = gemm_bf16(&g, NULL, e))) return rl_err_prefix(e, "linear_backward dW (FP32 accumulate): ");
  }
  return 0;
}

/* Free the scratch buffers and the GEMM plans (teardown, between tests). */
void linear_release(void) {
#if RLRUN_CUDA
  for (int d = 0; d < DEVICE_MAX_GPUS; d++)
    for (int s = 0; s < LIN_SCR_COUNT; s++)
      if (L.buf[d][s]) {
        int cur = 0;
        cudaGetDevice(&cur);
        cudaSetDevice(d);
        cudaFree(L.buf[d][s]); /* best effort at teardown: a failure leaves nothing to undo */
        cudaSetDevice(cur);
        L.buf[d][s] = NULL, L.cap[d][s] = 0;
      }
#endif
  gemm_cuda_release();
}
