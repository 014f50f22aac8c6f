/* convert_exec.c — one converter item at a time: read the input in row chunks
 * (pread), quantize / dequantize / cast on the CPU reference or the CUDA
 * twins (identical bytes by contract), write each chunk at its place in the
 * output shard. BF16 weights are quantized by the BF16 quantizers (CPU or
 * GPU); F32 and F16 weights from their own values, widened exactly to FP32,
 * by the FP32-input CPU quantizers (FORMATS.md: x is the tensor's values, not
 * their BF16 rounding). Also the progress display. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/formats.h"
#include "kernels/qtensor.h"
#include "stages/convert_internal.h"

#if RLRUN_CUDA
#include <cuda_runtime.h>
#endif

#define CHUNK_BYTES ((size_t)32 << 20) /* target input bytes per chunk */

/* ------------------------------------------------------------------ shapes */

/* Bytes of the data and the scale tensor an item writes (QUANT) or the BF16 it
 * writes (DEQUANT/CAST). */
static uint64_t q_data_bytes(qformat f, int64_t N, int64_t K) {
  return f == QFMT_NVFP4 ? (uint64_t)N * (uint64_t)quant_cdiv(K, 2) : (uint64_t)N * (uint64_t)K;
}
static uint64_t q_scale_count(qformat f, int64_t N, int64_t K) {
  switch (f) {
    case QFMT_FP8_BLOCK: return (uint64_t)quant_cdiv(N, 128) * (uint64_t)quant_cdiv(K, 128);
    case QFMT_MXFP8: return (uint64_t)N * (uint64_t)quant_cdiv(K, 32);
    case QFMT_NVFP4: return (uint64_t)N * (uint64_t)quant_cdiv(K, 16);
    default: return 0;
  }
}

/* Output tensor name: base + suffix. */
static void out_name(char *buf, size_t n, const char *base, const char *suffix) {
  snprintf(buf, n, "%s%s", base, suffix);
}

void convert_item_sizes(convert_item *it) {
  const st_tensor *t = it->t;
  it->in_bytes = t->nbytes;
  switch (it->act) {
    case ITEM_COPY: it->out_bytes = t->nbytes; break;
    case ITEM_CAST_BF16: it->out_bytes = t->numel * 2; break;
    case ITEM_DEQUANT:
      it->in_bytes += it->ts->nbytes;
      it->out_bytes = (uint64_t)it->N * (uint64_t)it->K * 2;
      break;
    case ITEM_QUANT:
      it->out_bytes = q_data_bytes(it->fmt, it->N, it->K) +
                      q_scale_count(it->fmt, it->N, it->K) * (it->fmt == QFMT_FP8_BLOCK ? 4 : 1) +
                      (it->fmt == QFMT_NVFP4 ? 8 : 0);
      break;
  }
}

int convert_item_declare(const convert_item *it, st_writer *w, rl_err *e) {
  const st_tensor *t = it->t;
  char nm[1024];
  int64_t sh[2] = {it->N, it->K};
  switch (it->act) {
    case ITEM_COPY: return st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, e);
    case ITEM_CAST_BF16: return st_writer_add(w, t->name, ST_BF16, t->ndim, t->shape, e);
    case ITEM_DEQUANT: return st_writer_add(w, t->name, ST_BF16, 2, sh, e);
    case ITEM_QUANT: break;
  }
  int rc;
  if (it->fmt == QFMT_FP8_BLOCK || it->fmt == QFMT_MXFP8) {
    int64_t ss[2] = {it->fmt == QFMT_MXFP8 ? it->N : quant_cdiv(it->N, 128),
                     it->fmt == QFMT_MXFP8 ? it->K / 32 : quant_cdiv(it->K, 128)};
    if ((rc = st_writer_add(w, t->name, ST_F8_E4M3, 2, sh, e))) return rc;
    out_name(nm, sizeof nm, it->base, ".weight_scale_inv");
    return st_writer_add(w, nm, it->fmt == QFMT_MXFP8 ? ST_U8 : ST_F32, 2, ss, e);
  }
  int64_t qs[2] = {it->N, it->K / 2}, ss[2] = {it->N, it->K / 16};
  if ((rc = st_writer_add(w, t->name, ST_U8, 2, qs, e))) return rc;
  out_name(nm, sizeof nm, it->base, ".weight_scale");
  if ((rc = st_writer_add(w, nm, ST_F8_E4M3, 2, ss, e))) return rc;
  out_name(nm, sizeof nm, it->base, ".weight_scale_2");
  if ((rc = st_writer_add(w, nm, ST_F32, 0, NULL, e))) return rc;
  out_name(nm, sizeof nm, it->base, ".input_scale");
  return st_writer_add(w, nm, ST_F32, 0, NULL, e);
}

/* ------------------------------------------------------------------ element casts */

/* IEEE half → FP32 (exact). */
static float f16_to_f32(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return qf_f32_from_bits(s | 0x7f800000u | (m << 13));
  if (e == 0) {
    float v = (float)m * 5.9604644775390625e-08f; /* m × 2^-24, exact */
    return s ? -v : v;
  }
  return qf_f32_from_bits(s | ((e + 112u) << 23) | (m << 13));
}

/* n elements of dtype dt (F16 or F32) → FP32 (exact). */
static void to_f32(st_dtype dt, const void *src, float *dst, size_t n) {
  if (dt == ST_F32) {
    if ((const void *)dst != src) memcpy(dst, src, n * 4);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, (const char *)src + 2 * i, 2);
    dst[i] = f16_to_f32(h);
  }
}

/* n elements of dtype dt (BF16, F16 or F32) → BF16 bit patterns (RNE). */
static void to_bf16(st_dtype dt, const void *src, uint16_t *dst, size_t n) {
  if (dt == ST_BF16) {
    if ((const void *)dst != src) memcpy(dst, src, n * 2);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    float v;
    if (dt == ST_F32) memcpy(&v, (const char *)src + 4 * i, 4);
    else {
      uint16_t h;
      memcpy(&h, (const char *)src + 2 * i, 2);
      v = f16_to_f32(h);
    }
    dst[i] = fmt_bf16_from_f32(v);
  }
}

/* ------------------------------------------------------------------ CUDA backend */

#if RLRUN_CUDA
/* Device buffers of the backend, grown on demand. */
typedef struct gpu_state {
  void *x, *q, *s; /* input chunk, data out, scales out */
  size_t cap_x, cap_q, cap_s;
  float *amax, *sdec;
  quant_stats *stats;
} gpu_state;

static int cu_ok(cudaError_t st, const char *what, rl_err *e) {
  if (st == cudaSuccess) return 0;
  return rl_errf(e, RL_EXIT_FAIL, "%s failed: %s", what, cudaGetErrorString(st));
}

/* Make *p hold at least n bytes of device memory. */
static int cu_grow(void **p, size_t *cap, size_t n, rl_err *e) {
  if (*cap >= n) return 0;
  if (*p) cudaFree(*p);
  *p = NULL, *cap = 0;
  if (cu_ok(cudaMalloc(p, n ? n : 16), "cudaMalloc", e)) return RL_EXIT_FAIL;
  *cap = n;
  return 0;
}

int convert_gpu_init(convert_ctx *x, rl_err *e) {
  gpu_state *g = rl_xcalloc(1, sizeof *g);
  x->gpu = g;
  if (cu_ok(cudaMalloc((void **)&g->amax, sizeof(float)), "cudaMalloc", e) ||
      cu_ok(cudaMalloc((void **)&g->sdec, sizeof(float)), "cudaMalloc", e) ||
      cu_ok(cudaMalloc((void **)&g->stats, sizeof(quant_stats)), "cudaMalloc", e))
    return RL_EXIT_HARDWARE;
  return 0;
}

void convert_gpu_free(convert_ctx *x) {
  gpu_state *g = x->gpu;
  if (!g) return;
  cudaFree(g->x), cudaFree(g->q), cudaFree(g->s);
  cudaFree(g->amax), cudaFree(g->sdec), cudaFree(g->stats);
  free(g);
  x->gpu = NULL;
}

/* Quantize one chunk on the GPU: a quant status, or -1 for a CUDA failure (e set). */
static int quant_chunk_gpu(convert_ctx *x, qformat f, const uint16_t *xb, int64_t rows, int64_t K,
                           float amax, uint8_t *q, void *s, float *s_dec, quant_stats *st,
                           rl_err *e) {
  gpu_state *g = x->gpu;
  size_t nx = (size_t)rows * (size_t)K * 2, nq = (size_t)q_data_bytes(f, rows, K);
  size_t ns = (size_t)q_scale_count(f, rows, K) * (f == QFMT_FP8_BLOCK ? 4 : 1);
  quant_opts qo = {0};
  qo.ue8m0 = x->o->ue8m0;
  int qs;
  if (cu_grow(&g->x, &g->cap_x, nx, e) || cu_grow(&g->q, &g->cap_q, nq, e) ||
      cu_grow(&g->s, &g->cap_s, ns, e) ||
      cu_ok(cudaMemcpy(g->x, xb, nx, cudaMemcpyHostToDevice), "cudaMemcpy", e))
    return -1;
  if (f == QFMT_FP8_BLOCK)
    qs = quant_fp8_block_weight_cuda(g->x, rows, K, g->q, g->s, &qo, g->stats, NULL, e);
  else if (f == QFMT_MXFP8)
    qs = quant_mxfp8_cuda(g->x, rows, K, g->q, g->s, &qo, g->stats, NULL, e);
  else {
    if (cu_ok(cudaMemcpy(g->amax, &amax, 4, cudaMemcpyHostToDevice), "cudaMemcpy", e))
      return -1;
    qs = quant_nvfp4_amax_cuda(g->x, rows, K, g->amax, g->q, g->s, g->sdec, &qo, g->stats, NULL, e);
  }
  if (qs == QUANT_CUDA_ERROR) return -1;
  if (qs) return qs;
  if (quant_stats_fetch_cuda(g->stats, st, NULL, e) ||
      cu_ok(cudaMemcpy(q, g->q, nq, cudaMemcpyDeviceToHost), "cudaMemcpy", e) ||
      cu_ok(cudaMemcpy(s, g->s, ns, cudaMemcpyDeviceToHost), "cudaMemcpy", e))
    return -1;
  if (f == QFMT_NVFP4 && cu_ok(cudaMemcpy(s_dec, g->sdec, 4, cudaMemcpyDeviceToHost), "cudaMemcpy", e))
    return -1;
  return st->n_nonfinite ? QUANT_NONFINITE : 0;
}

/* Dequantize one chunk on the GPU into BF16. */
static int dequant_chunk_gpu(convert_ctx *x, qformat f, const uint8_t *q, const void *s,
                             float s_dec, int64_t rows, int64_t K, uint16_t *out, rl_err *e) {
  gpu_state *g = x->gpu;
  size_t nq = (size_t)q_data_bytes(f, rows, K), nx = (size_t)rows * (size_t)K * 2;
  size_t ns = (size_t)q_scale_count(f, rows, K) * (f == QFMT_FP8_BLOCK ? 4 : 1);
  if (cu_grow(&g->x, &g->cap_x, nx, e) || cu_grow(&g->q, &g->cap_q, nq, e) ||
      cu_grow(&g->s, &g->cap_s, ns, e) ||
      cu_ok(cudaMemcpy(g->q, q, nq, cudaMemcpyHostToDevice), "cudaMemcpy", e) ||
      cu_ok(cudaMemcpy(g->s, s, ns, cudaMemcpyHostToDevice), "cudaMemcpy", e))
    return RL_EXIT_FAIL;
  int rc;
  if (f == QFMT_FP8_BLOCK)
    rc = dequant_fp8_block_weight_cuda(g->q, g->s, rows, K, NULL, g->x, NULL, e);
  else if (f == QFMT_MXFP8)
    rc = dequant_mxfp8_cuda(g->q, g->s, rows, K, NULL, g->x, NULL, e);
  else {
    if (cu_ok(cudaMemcpy(g->sdec, &s_dec, 4, cudaMemcpyHostToDevice), "cudaMemcpy", e))
      return RL_EXIT_FAIL;
    rc = dequant_nvfp4_cuda(g->q, g->s, g->sdec, rows, K, NULL, g->x, NULL, e);
  }
  if (rc) return RL_EXIT_FAIL;
  return cu_ok(cudaMemcpy(out, g->x, nx, cudaMemcpyDeviceToHost), "cudaMemcpy", e) ? RL_EXIT_FAIL : 0;
}
#else
int convert_gpu_init(convert_ctx *x, rl_err *e) {
  (void)x;
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "--device cuda: this rlrun was built without CUDA; rebuild with nvcc or "
                 "use --device cpu");
}
void convert_gpu_free(convert_ctx *x) { (void)x; }
#endif

/* ------------------------------------------------------------------ CPU backend */

/* Quantize rows×K BF16 into q and s (checkpoint layouts); returns a quant
 * status, or -1 when the GPU failed (message in e). For NVFP4 the tensor
 * amax is given (shared by gate and up). */
static int quant_chunk(convert_ctx *x, qformat f, const uint16_t *xb, int64_t rows, int64_t K,
                       float amax, uint8_t *q, void *s, float *s_dec, quant_stats *st, rl_err *e) {
#if RLRUN_CUDA
  if (x->use_gpu) return quant_chunk_gpu(x, f, xb, rows, K, amax, q, s, s_dec, st, e);
#endif
  quant_opts qo = {0};
  qo.ue8m0 = x->o->ue8m0;
  if (f == QFMT_FP8_BLOCK) return quant_fp8_block_weight_cpu(xb, rows, K, q, s, &qo, st);
  if (f == QFMT_MXFP8) return quant_mxfp8_cpu(xb, rows, K, q, s, &qo, st);
  return quant_nvfp4_amax_cpu(xb, rows, K, amax, q, s, s_dec, &qo, st);
}

/* The same for FP32 input (F32 and F16 sources: FORMATS.md quantizes the
 * source values, not their BF16 rounding). Always the CPU reference: the CUDA
 * quantizers read BF16. */
static int quant_chunk_f32(convert_ctx *x, qformat f, const float *xf, int64_t rows, int64_t K,
                           float amax, uint8_t *q, void *s, float *s_dec, quant_stats *st) {
  quant_opts qo = {0};
  qo.ue8m0 = x->o->ue8m0;
  if (f == QFMT_FP8_BLOCK) return quant_fp8_block_weight_f32_cpu(xf, rows, K, q, s, &qo, st);
  if (f == QFMT_MXFP8) return quant_mxfp8_f32_cpu(xf, rows, K, q, s, &qo, st);
  return quant_nvfp4_amax_f32_cpu(xf, rows, K, amax, q, s, s_dec, &qo, st);
}

/* Dequantize rows×K into BF16 (out). */
static int dequant_chunk(convert_ctx *x, qformat f, const uint8_t *q, const void *s, float s_dec,
                         int64_t rows, int64_t K, uint16_t *out, rl_err *e) {
#if RLRUN_CUDA
  if (x->use_gpu) return dequant_chunk_gpu(x, f, q, s, s_dec, rows, K, out, e);
#endif
  (void)x, (void)e;
  if (f == QFMT_FP8_BLOCK) dequant_fp8_block_weight_cpu(q, s, rows, K, NULL, out);
  else if (f == QFMT_MXFP8) dequant_mxfp8_cpu(q, s, rows, K, NULL, out);
  else dequant_nvfp4_cpu(q, s, s_dec, rows, K, NULL, out);
  return 0;
}

/* ------------------------------------------------------------------ items */

/* Rows per chunk: about CHUNK_BYTES of input, a multiple of 128 for fp8-block. */
static int64_t chunk_rows(int64_t N, uint64_t row_bytes, int mult) {
  int64_t r = row_bytes ? (int64_t)(CHUNK_BYTES / row_bytes) : N;
  r = r / mult * mult;
  if (r < mult) r = mult;
  return r > N ? N : r;
}

/* The FP32 buffer a chunk of a non-BF16 input is quantized from: the raw
 * chunk itself for F32, a new buffer of n floats for F16; NULL for BF16. */
static float *f32_buf(st_dtype dt, void *raw, size_t n) {
  if (dt == ST_BF16) return NULL;
  return dt == ST_F32 ? raw : rl_xmalloc(n * 4);
}

/* amax of an item's input over finite values (of the source values: F32 as
 * is, F16/BF16 widened), read in chunks (cached). */
static int item_amax(convert_ctx *x, convert_item *it, rl_err *e) {
  if (it->have_amax) return 0;
  st_dtype dt = it->t->dtype;
  size_t esz = st_dtype_size(dt);
  int64_t R = chunk_rows(it->N, (uint64_t)it->K * (dt == ST_F16 ? 4 : esz), 1);
  void *raw = rl_xmalloc((size_t)R * (size_t)it->K * esz);
  float *xf = f32_buf(dt, raw, (size_t)R * (size_t)it->K);
  float m = 0;
  int rc = 0;
  for (int64_t r0 = 0; r0 < it->N && !rc; r0 += R) {
    int64_t rows = it->N - r0 < R ? it->N - r0 : R;
    size_t n = (size_t)rows * (size_t)it->K;
    rc = st_file_read_range(it->f, it->t, (uint64_t)r0 * (uint64_t)it->K * esz, raw, n * esz, e);
    if (rc) break;
    float a;
    if (xf) {
      to_f32(dt, raw, xf, n);
      a = quant_amax_f32_cpu(xf, (int64_t)n, NULL);
    } else {
      a = quant_amax_bf16_cpu(raw, (int64_t)n, NULL);
    }
    if (a > m) m = a;
  }
  if (xf && (void *)xf != raw) free(xf);
  free(raw);
  if (!rc) it->amax = m, it->have_amax = 1;
  return rc;
}

/* The first element of a quantized chunk (rows × K from row r0) whose codes ×
 * scale decode past BF16's range, as a loader decodes it: a refusal naming it,
 * else 0. Finite input can get there: a BF16 weight within a rounding of BF16's
 * maximum under a power-of-two (E8M0) scale rounds up to E4M3 256 × 2^120 =
 * 2^128, and an F32 / F16 weight past ±3.39e38 decodes to it (FORMATS.md's
 * steps, followed exactly). The loaders (score, a run, convert --to bf16)
 * refuse such a file, so convert refuses to write it. Only a chunk holding a
 * scale of 2^118 or more (the largest code, 448, is below 2^9) is decoded. */
static int quant_overflow_check(convert_ctx *x, const convert_item *it, qformat f, const uint8_t *q, const void *s,
                                float s_dec, float amax, int64_t r0, int64_t rows, int64_t K, rl_err *e) {
  const float big = 0x1p118f;
  size_t ns = (size_t)q_scale_count(f, rows, K);
  int large = 0;
  if (f == QFMT_FP8_BLOCK)
    for (size_t i = 0; i < ns && !large; i++) large = fabsf(((const float *)s)[i]) >= big;
  else if (f == QFMT_MXFP8)
    for (size_t i = 0; i < ns && !large; i++) large = ((const uint8_t *)s)[i] >= 127 + 118;
  else
    large = amax >= big;
  if (!large) return 0;
  size_t n = (size_t)rows * (size_t)K;
  uint16_t *out = rl_xmalloc(n * 2);
  int rc = dequant_chunk(x, f, q, s, s_dec, rows, K, out, e);
  for (size_t i = 0; i < n && !rc; i++)
    if ((out[i] & 0x7fffu) == 0x7f80u) /* ±Inf (the input was finite: quant_chunk refuses NaN) */
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "%s: tensor '%s' at row %lld, column %lld: the weight quantizes to %s codes x scale past "
                   "BF16's range (±3.39e38), which would decode to %cInf; keep the tensor in BF16 "
                   "(--keep-bf16 '%s') or scale the source down",
                   st_file_path(it->f), it->t->name, (long long)(r0 + (int64_t)(i / (size_t)K)),
                   (long long)(i % (size_t)K), qtensor_format_name(f), (out[i] & 0x8000u) ? '-' : '+', it->t->name);
  free(out);
  return rc;
}

/* QUANT: chunks of rows → data and scales at their offsets. */
static int run_quant(convert_ctx *x, convert_item *it, st_writer *w, rl_err *e) {
  qformat f = it->fmt;
  int64_t N = it->N, K = it->K;
  size_t esz = st_dtype_size(it->t->dtype);
  float amax = 0, s_dec = 1;
  int rc = 0;
  if (f == QFMT_NVFP4) {
    if ((rc = item_amax(x, it, e))) return rc;
    amax = it->amax;
    if (it->partner >= 0) {
      convert_item *p = &x->items[it->partner];
      if ((rc = item_amax(x, p, e))) return rc;
      if (p->amax > amax) amax = p->amax;
    }
  }
  /* (F16 is widened into an FP32 buffer: size the chunk by that one) */
  int64_t R = chunk_rows(N, (uint64_t)K * (it->t->dtype == ST_F16 ? 4 : esz),
                         f == QFMT_FP8_BLOCK ? 128 : 1);
  size_t ssz = f == QFMT_FP8_BLOCK ? 4 : 1;
  void *raw = rl_xmalloc((size_t)R * (size_t)K * esz);
  /* BF16 sources go to the BF16 quantizers (CPU or GPU); F32/F16 ones to the
   * FP32-input CPU quantizers, from the source values. */
  float *xf = f32_buf(it->t->dtype, raw, (size_t)R * (size_t)K);
  uint8_t *q = rl_xmalloc((size_t)q_data_bytes(f, R, K));
  void *s = rl_xmalloc((size_t)q_scale_count(f, R, K) * ssz);
  char nm[1024];
  out_name(nm, sizeof nm, it->base, f == QFMT_NVFP4 ? ".weight_scale" : ".weight_scale_inv");
  int wi = st_writer_find(w, it->t->name), si = st_writer_find(w, nm);
  for (int64_t r0 = 0; r0 < N && !rc; r0 += R) {
    int64_t rows = N - r0 < R ? N - r0 : R;
    size_t n = (size_t)rows * (size_t)K;
    rc = st_file_read_range(it->f, it->t, (uint64_t)r0 * (uint64_t)K * esz, raw, n * esz, e);
    if (rc) break;
    quant_stats qs = {0, -1};
    int st;
    if (xf) {
      to_f32(it->t->dtype, raw, xf, n);
      st = quant_chunk_f32(x, f, xf, rows, K, amax, q, s, &s_dec, &qs);
    } else {
      st = quant_chunk(x, f, raw, rows, K, amax, q, s, &s_dec, &qs, e);
    }
    if (st < 0) {
      rc = RL_EXIT_FAIL;
      break;
    }
    if (st) { /* non-finite input (or a shape the quantizer refuses) */
      if (qs.first_index >= 0) qs.first_index += r0 * K;
      rc = quant_status_err(st, &qs, it->t->name, K, e);
      rl_err_prefix(e, "%s: tensor ", st_file_path(it->f));
      break;
    }
    if ((rc = quant_overflow_check(x, it, f, q, s, s_dec, amax, r0, rows, K, e))) break;
    uint64_t soff = q_scale_count(f, r0, K) * ssz; /* r0 is a multiple of 128 for fp8-block */
    rc = st_writer_write_part(w, wi, q_data_bytes(f, r0, K), q, (size_t)q_data_bytes(f, rows, K), e);
    if (!rc) rc = st_writer_write_part(w, si, soff, s, (size_t)q_scale_count(f, rows, K) * ssz, e);
    convert_progress_bytes(&x->prog, n * esz);
  }
  if (!rc && f == QFMT_NVFP4) {
    /* S_dec depends on the amax only: recompute it for N = 0 chunks too. */
    float one = 1.0f;
    s_dec = fmt_nvfp4_sdec(amax);
    out_name(nm, sizeof nm, it->base, ".weight_scale_2");
    rc = st_writer_write(w, nm, &s_dec, 4, e);
    out_name(nm, sizeof nm, it->base, ".input_scale");
    if (!rc) rc = st_writer_write(w, nm, &one, 4, e);
  }
  if (xf && (void *)xf != raw) free(xf);
  free(raw), free(q), free(s);
  return rc;
}

/* DEQUANT: data + scales chunk by chunk → BF16; non-finite results refused. */
static int run_dequant(convert_ctx *x, convert_item *it, st_writer *w, rl_err *e) {
  qformat f = it->fmt;
  int64_t N = it->N, K = it->K;
  uint64_t qrow = q_data_bytes(f, 1, K);
  int64_t R = chunk_rows(N, (uint64_t)K * 2, f == QFMT_FP8_BLOCK ? 128 : 1);
  size_t ssz = st_dtype_size(it->ts->dtype);
  uint8_t *q = rl_xmalloc((size_t)(qrow * (uint64_t)R));
  void *s = rl_xmalloc((size_t)q_scale_count(f, R, K) * ssz);
  /* fp8-block scales stored as BF16 (some exports do) are widened to FP32 here. */
  int wide = f == QFMT_FP8_BLOCK && it->ts->dtype == ST_BF16;
  float *sw = wide ? rl_xmalloc((size_t)q_scale_count(f, R, K) * 4) : NULL;
  uint16_t *out = rl_xmalloc((size_t)R * (size_t)K * 2);
  int wi = st_writer_find(w, it->t->name), rc = 0;
  for (int64_t r0 = 0; r0 < N && !rc; r0 += R) {
    int64_t rows = N - r0 < R ? N - r0 : R;
    uint64_t soff = q_scale_count(f, r0, K); /* r0 is a multiple of 128 for fp8-block */
    size_t sn = (size_t)q_scale_count(f, rows, K);
    rc = st_file_read_range(it->f, it->t, qrow * (uint64_t)r0, q, (size_t)(qrow * (uint64_t)rows), e);
    if (!rc) rc = st_file_read_range(it->fs, it->ts, soff * ssz, s, sn * ssz, e);
    if (!rc && wide)
      for (size_t i = 0; i < sn; i++) sw[i] = fmt_bf16_to_f32(((const uint16_t *)s)[i]);
    if (!rc) rc = dequant_chunk(x, f, q, wide ? (void *)sw : s, it->s_dec, rows, K, out, e);
    if (rc) break;
    size_t n = (size_t)rows * (size_t)K;
    for (size_t i = 0; i < n; i++)
      if ((out[i] & 0x7f80u) == 0x7f80u) {
        const int nan = (out[i] & 0x7fu) != 0;
        rc = rl_errf(e, RL_EXIT_USAGE,
                     "%s: tensor '%s' dequantizes to %s at row %lld, column %lld (%s)",
                     st_file_path(it->f), it->t->name, nan ? "NaN" : (out[i] & 0x8000u) ? "-Inf" : "+Inf",
                     (long long)(r0 + (int64_t)(i / (size_t)K)), (long long)(i % (size_t)K),
                     nan ? "NaN data or scale in the checkpoint"
                         : "its code x scale is past BF16's range, ±3.39e38: the checkpoint's values are too large");
        break;
      }
    if (!rc) rc = st_writer_write_part(w, wi, (uint64_t)r0 * (uint64_t)K * 2, out, n * 2, e);
    convert_progress_bytes(&x->prog, (size_t)(qrow * (uint64_t)rows) + sn * ssz);
  }
  free(q), free(s), free(sw), free(out);
  return rc;
}

/* A kept floating-point tensor's n BF16 values from element i0 on: the first
 * non-finite one (Inf/NaN, or an F32/F16 value past BF16's range, which
 * rounds to Inf) is refused, as the quantized tensors' are — a model that
 * holds one cannot be scored or trained (the loaders refuse it). */
static int kept_finite(const convert_item *it, const uint16_t *b, size_t n, uint64_t i0, rl_err *e) {
  for (size_t i = 0; i < n; i++)
    if ((b[i] & 0x7f80u) == 0x7f80u) {
      const st_tensor *t = it->t;
      const uint64_t at = i0 + i, cols = t->ndim >= 2 ? (uint64_t)t->shape[t->ndim - 1] : 0;
      char where[96];
      if (cols) snprintf(where, sizeof where, "row %llu, column %llu", (unsigned long long)(at / cols),
                         (unsigned long long)(at % cols));
      else snprintf(where, sizeof where, "element %llu", (unsigned long long)at);
      return rl_errf(e, RL_EXIT_USAGE,
                     "%s: tensor '%s' (kept in BF16) holds a non-finite value at %s (%s%s); fix the source "
                     "checkpoint", st_file_path(it->f), t->name, where,
                     (b[i] & 0x7fu) ? "NaN" : (b[i] & 0x8000u) ? "-Inf" : "+Inf",
                     (b[i] & 0x7fu) || t->dtype == ST_BF16 ? "" : ", or a value past BF16's range of ±3.39e38");
    }
  return 0;
}

/* COPY / CAST: the bytes in chunks (cast F32/F16 → BF16 on the way). */
static int run_copy(convert_ctx *x, convert_item *it, st_writer *w, rl_err *e) {
  const st_tensor *t = it->t;
  size_t esz = st_dtype_size(t->dtype);
  size_t per = CHUNK_BYTES / esz * esz;
  void *buf = rl_xmalloc(per ? per : esz);
  uint16_t *bb = it->act == ITEM_CAST_BF16 ? rl_xmalloc(per / esz * 2) : NULL;
  int wi = st_writer_find(w, t->name), rc = 0;
  for (uint64_t off = 0; off < t->nbytes && !rc; off += per) {
    size_t n = t->nbytes - off < per ? (size_t)(t->nbytes - off) : per;
    rc = st_file_read_range(it->f, t, off, buf, n, e);
    if (rc) break;
    if (bb) {
      to_bf16(t->dtype, buf, bb, n / esz);
      rc = kept_finite(it, bb, n / esz, off / esz, e);
      if (!rc) rc = st_writer_write_part(w, wi, off / esz * 2, bb, n / esz * 2, e);
    } else {
      if (t->dtype == ST_BF16) rc = kept_finite(it, buf, n / 2, off / 2, e);
      if (!rc) rc = st_writer_write_part(w, wi, off, buf, n, e);
    }
    convert_progress_bytes(&x->prog, n);
  }
  free(buf);
  free(bb);
  return rc;
}

int convert_item_run(convert_ctx *x, convert_item *it, st_writer *w, rl_err *e) {
  convert_progress_item(&x->prog, it);
  switch (it->act) {
    case ITEM_QUANT: return run_quant(x, it, w, e);
    case ITEM_DEQUANT: return run_dequant(x, it, w, e);
    default: return run_copy(x, it, w, e);
  }
}

/* ------------------------------------------------------------------ progress */

void convert_progress_begin(convert_progress *p, const convert_opts *o, int n_items,
                            uint64_t total_bytes) {
  memset(p, 0, sizeof *p);
  p->log = o->log ? o->log : stderr;
  p->bar = o->progress < 0 ? isatty(fileno(p->log)) : o->progress;
  p->quiet = o->quiet;
  p->n_items = n_items;
  p->total_bytes = total_bytes;
  p->t0 = rl_now();
}

/* Redraw the bar: tensors, bytes, rate. */
static void progress_draw(convert_progress *p, int force) {
  double now = rl_now();
  if (!force && now - p->last_draw < 0.1) return;
  p->last_draw = now;
  double frac = p->total_bytes ? (double)p->done_bytes / (double)p->total_bytes : 1.0;
  int fill = (int)(frac * 30);
  char bar[31];
  for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
  bar[30] = 0;
  double dt = now - p->t0;
  fprintf(p->log, "\r[%s] %d/%d tensors  %.2f/%.2f GB  %.0f MB/s ", bar, p->done_items,
          p->n_items, (double)p->done_bytes / 1e9, (double)p->total_bytes / 1e9,
          dt > 0 ? (double)p->done_bytes / 1e6 / dt : 0.0);
  fflush(p->log);
}

static const char *fmt_label(qformat f) {
  return f == QFMT_FP8_BLOCK ? "fp8-block" : f == QFMT_MXFP8 ? "mxfp8" : f == QFMT_NVFP4 ? "nvfp4" : "bf16";
}

void convert_progress_item(convert_progress *p, const convert_item *it) {
  p->done_items++;
  if (p->quiet) return;
  if (p->bar) {
    progress_draw(p, 0);
    return;
  }
  const st_tensor *t = it->t;
  char shape[96] = "[";
  for (int d = 0; d < t->ndim; d++) {
    size_t l = strlen(shape);
    snprintf(shape + l, sizeof shape - l, "%s%lld", d ? "," : "", (long long)t->shape[d]);
  }
  strncat(shape, "]", sizeof shape - strlen(shape) - 1);
  const char *what = it->act == ITEM_QUANT     ? fmt_label(it->fmt)
                     : it->act == ITEM_DEQUANT ? "bf16 (dequantized)"
                     : it->act == ITEM_CAST_BF16 ? "bf16 (cast)"
                                                 : "copied";
  fprintf(p->log, "convert: [%d/%d] %s %s %s -> %s%s%s%s\n", p->done_items, p->n_items, t->name,
          st_dtype_name(t->dtype), shape, what, it->why ? " (" : "", it->why ? it->why : "",
          it->why ? ")" : "");
}

void convert_progress_bytes(convert_progress *p, uint64_t n) {
  p->done_bytes += n;
  if (p->bar && !p->quiet) progress_draw(p, 0);
}

void convert_progress_end(convert_progress *p) {
  if (p->bar && !p->quiet) {
    progress_draw(p, 1);
    fputc('\n', p->log);
  }
}
