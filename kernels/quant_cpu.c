/* quant_cpu.c — the CPU reference of every quantizer in quant.h. This file
 * defines the numerics; quant_cuda.cu must produce the same bytes. The
 * per-element and per-block arithmetic comes from formats.h (shared with the
 * GPU); this file only walks blocks (OpenMP over rows or block rows). Each
 * walk reads its input through a loader (qin): BF16 bit patterns, or FP32
 * values (the _f32 variants, for converting F32/F16 checkpoints). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kernels/formats.h"
#include "kernels/quant.h"

#define QUANT_NAN_F32 0x7fc00000u /* the scale of a poisoned fp8-block block */

/* Non-finite bookkeeping over a walk: a count and the smallest flat index. */
typedef struct nf_acc {
  int64_t n;
  int64_t first; /* INT64_MAX when none */
} nf_acc;

/* Fold the accumulated non-finite count into *st and return the status. */
static int quant_finish(int64_t n, int64_t first, quant_stats *st) {
  if (st) {
    st->n_nonfinite = n;
    st->first_index = n ? first : -1;
  }
  return n ? QUANT_NONFINITE : QUANT_OK;
}

const char *quant_status_str(int status) {
  switch (status) {
    case QUANT_OK: return "ok";
    case QUANT_NONFINITE: return "non-finite input (Inf or NaN)";
    case QUANT_BAD_ARGS: return "invalid shape or option";
    case QUANT_CUDA_ERROR: return "CUDA error";
    case QUANT_NO_CUDA: return "this build has no CUDA support";
  }
  return "unknown quantizer status";
}

int quant_status_err(int status, const quant_stats *st, const char *what, int64_t K, rl_err *e) {
  if (status == QUANT_OK) return RL_EXIT_OK;
  if (status == QUANT_NONFINITE && st && st->first_index >= 0 && K > 0)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: %lld non-finite value(s) (Inf/NaN), first at row %lld, column %lld; "
                   "refusing to quantize it (an Inf or NaN has no code in a low-precision format; fix where it comes from)",
                   what, (long long)st->n_nonfinite, (long long)(st->first_index / K),
                   (long long)(st->first_index % K));
  if (status == QUANT_NONFINITE)
    return rl_errf(e, RL_EXIT_USAGE, "%s: non-finite value(s) (Inf/NaN) in the input", what);
  if (status == QUANT_NO_CUDA)
    return rl_errf(e, RL_EXIT_HARDWARE, "%s: %s; use the CPU path or a CUDA build", what,
                   quant_status_str(status));
  return rl_errf(e, RL_EXIT_FAIL, "%s: quantizer failed: %s", what, quant_status_str(status));
}

/* Where a quantizer reads its input: BF16 bit patterns (b) or FP32 values
 * (f), exactly one of them set. Every rule below sees FP32 values; BF16 is
 * widened exactly, so a BF16 input and its FP32 widening give the same bytes. */
typedef struct qin {
  const uint16_t *b;
  const float *f;
} qin;

static inline qin qin_bf16(const uint16_t *x) { return (qin){x, NULL}; }
static inline qin qin_f32(const float *x) { return (qin){NULL, x}; }
/* Element i of the input as FP32. */
static inline float qin_at(qin x, int64_t i) { return x.b ? fmt_bf16_to_f32(x.b[i]) : x.f[i]; }

/* Default options when the caller passes NULL. */
static const quant_opts *opts_or_default(const quant_opts *opt) {
  static const quant_opts zero;
  return opt ? opt : &zero;
}

/* amax over the finite values among elements base+i0 .. base+i1-1 of x (one
 * row segment); counts the non-finite ones. */
static float seg_amax(qin x, int64_t base, int64_t i0, int64_t i1, nf_acc *nf) {
  float m = 0.0f;
  for (int64_t i = i0; i < i1; i++) {
    float v = qin_at(x, base + i);
    if (!qf_isfinite(v)) {
      nf->n++;
      if (base + i < nf->first) nf->first = base + i;
      continue;
    }
    m = qf_fmax_pos(m, qf_fabs(v));
  }
  return m;
}

static float amax_walk(qin x, int64_t n, quant_stats *st) {
  float m = 0.0f;
  int64_t cnt = 0, first = INT64_MAX;
#pragma omp parallel for reduction(max : m) reduction(+ : cnt) reduction(min : first) schedule(static)
  for (int64_t c = 0; c < (n + 4095) / 4096; c++) {
    nf_acc nf = {0, INT64_MAX};
    int64_t i1 = (c + 1) * 4096 < n ? (c + 1) * 4096 : n;
    float v = seg_amax(x, 0, c * 4096, i1, &nf);
    if (v > m) m = v;
    cnt += nf.n;
    if (nf.first < first) first = nf.first;
  }
  quant_finish(cnt, first, st);
  return m;
}

float quant_amax_bf16_cpu(const uint16_t *x, int64_t n, quant_stats *st) {
  return amax_walk(qin_bf16(x), n, st);
}

float quant_amax_f32_cpu(const float *x, int64_t n, quant_stats *st) {
  return amax_walk(qin_f32(x), n, st);
}

/* ---------------------------------------------------------------- fp8-block */

/* Quantize a [r0,r1)×[c0,c1) block of x (row stride K) with fp8-block scale
 * rules; returns the scale (NaN bits when the block holds a non-finite value). */
static float fp8_block_encode(qin x, uint8_t *q, int64_t K, int64_t r0, int64_t r1,
                              int64_t c0, int64_t c1, int ue8m0, nf_acc *nf) {
  float amax = 0.0f;
  int64_t n0 = nf->n;
  for (int64_t r = r0; r < r1; r++) amax = qf_fmax_pos(amax, seg_amax(x, r * K, c0, c1, nf));
  if (nf->n != n0) { /* poisoned block */
    for (int64_t r = r0; r < r1; r++) memset(q + r * K + c0, 0, (size_t)(c1 - c0));
    return qf_f32_from_bits(QUANT_NAN_F32);
  }
  float s = fmt_fp8_block_scale(amax, ue8m0);
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++)
      q[r * K + c] = fmt_e4m3_from_f32(qf_div(qin_at(x, r * K + c), s));
  return s;
}

static int fp8_block_weight_walk(qin x, int64_t rows, int64_t K, uint8_t *q, float *scales,
                                 const quant_opts *opt, quant_stats *st) {
  opt = opts_or_default(opt);
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  int hopper = opt->scale_layout == QLAYOUT_HOPPER_WEIGHT;
  if (!hopper && opt->scale_layout != QLAYOUT_ROWMAJOR) return QUANT_BAD_ARGS;
  int64_t nb = quant_cdiv(rows, 128), kb = quant_cdiv(K, 128), cnt = 0, first = INT64_MAX;
  int64_t sld = hopper ? quant_roundup(kb, 4) : kb;
#pragma omp parallel for reduction(+ : cnt) reduction(min : first) schedule(dynamic, 1)
  for (int64_t b = 0; b < nb; b++) {
    nf_acc nf = {0, INT64_MAX};
    int64_t r0 = b * 128, r1 = r0 + 128 < rows ? r0 + 128 : rows;
    for (int64_t j = 0; j < kb; j++) {
      int64_t c0 = j * 128, c1 = c0 + 128 < K ? c0 + 128 : K;
      scales[b * sld + j] = fp8_block_encode(x, q, K, r0, r1, c0, c1, opt->ue8m0, &nf);
    }
    cnt += nf.n;
    if (nf.first < first) first = nf.first;
  }
  return quant_finish(cnt, first, st);
}

int quant_fp8_block_weight_cpu(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q,
                               float *scales, const quant_opts *opt, quant_stats *st) {
  return fp8_block_weight_walk(qin_bf16(x), rows, K, q, scales, opt, st);
}

int quant_fp8_block_weight_f32_cpu(const float *x, int64_t rows, int64_t K, uint8_t *q,
                                   float *scales, const quant_opts *opt, quant_stats *st) {
  return fp8_block_weight_walk(qin_f32(x), rows, K, q, scales, opt, st);
}

static int fp8_block_act_walk(qin x, int64_t rows, int64_t K, uint8_t *q, float *scales,
                              const quant_opts *opt, quant_stats *st) {
  opt = opts_or_default(opt);
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  int hopper = opt->scale_layout == QLAYOUT_HOPPER_ACT;
  if (!hopper && opt->scale_layout != QLAYOUT_ROWMAJOR) return QUANT_BAD_ARGS;
  int64_t ld = opt->scale_ld ? opt->scale_ld : rows;
  if (hopper && ld < rows) return QUANT_BAD_ARGS;
  int64_t kb = quant_cdiv(K, 128), cnt = 0, first = INT64_MAX;
#pragma omp parallel for reduction(+ : cnt) reduction(min : first) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    nf_acc nf = {0, INT64_MAX};
    for (int64_t j = 0; j < kb; j++) {
      int64_t c0 = j * 128, c1 = c0 + 128 < K ? c0 + 128 : K;
      float s = fp8_block_encode(x, q, K, r, r + 1, c0, c1, opt->ue8m0, &nf);
      if (hopper) scales[j * ld + r] = s;
      else scales[r * kb + j] = s;
    }
    cnt += nf.n;
    if (nf.first < first) first = nf.first;
  }
  return quant_finish(cnt, first, st);
}

int quant_fp8_block_act_cpu(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q,
                            float *scales, const quant_opts *opt, quant_stats *st) {
  return fp8_block_act_walk(qin_bf16(x), rows, K, q, scales, opt, st);
}

int quant_fp8_block_act_f32_cpu(const float *x, int64_t rows, int64_t K, uint8_t *q,
                                float *scales, const quant_opts *opt, quant_stats *st) {
  return fp8_block_act_walk(qin_f32(x), rows, K, q, scales, opt, st);
}

/* ---------------------------------------------------------------- MXFP8 */

static int mxfp8_walk(qin x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                      quant_stats *st) {
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  int64_t kb = quant_cdiv(K, 32), cnt = 0, first = INT64_MAX;
#pragma omp parallel for reduction(+ : cnt) reduction(min : first) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    nf_acc nf = {0, INT64_MAX};
    uint8_t *qr = q + r * K;
    for (int64_t j = 0; j < kb; j++) {
      int64_t c0 = j * 32, c1 = c0 + 32 < K ? c0 + 32 : K, n0 = nf.n;
      float amax = seg_amax(x, r * K, c0, c1, &nf);
      if (nf.n != n0) {
        memset(qr + c0, 0, (size_t)(c1 - c0));
        scales[r * kb + j] = 0xFF;
        continue;
      }
      uint8_t e = fmt_mxfp8_scale(amax);
      float inv = fmt_e8m0_inv_f32(e);
      for (int64_t c = c0; c < c1; c++) qr[c] = fmt_e4m3_from_f32(qf_mul(qin_at(x, r * K + c), inv));
      scales[r * kb + j] = e;
    }
    cnt += nf.n;
    if (nf.first < first) first = nf.first;
  }
  return quant_finish(cnt, first, st);
}

int quant_mxfp8_cpu(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                    const quant_opts *opt, quant_stats *st) {
  return mxfp8_walk(qin_bf16(x), rows, K, q, scales, st);
}

int quant_mxfp8_f32_cpu(const float *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                        const quant_opts *opt, quant_stats *st) {
  return mxfp8_walk(qin_f32(x), rows, K, q, scales, st);
}

/* ---------------------------------------------------------------- NVFP4 */

/* Set the 4-bit code of element c in a packed row (element 2i low nibble). */
static void nib_set(uint8_t *row, int64_t c, uint8_t code) {
  uint8_t *b = row + c / 2;
  if (c & 1) *b = (uint8_t)((*b & 0x0Fu) | (code << 4));
  else *b = (uint8_t)((*b & 0xF0u) | (code & 0x0Fu));
}

/* Encode one NVFP4 block [r0,r1)×[c0,c1) (a 1×16 or 16×16 block): writes the
 * E2M1 nibbles and returns the block scale code (0x7F when poisoned). */
static uint8_t nvfp4_block_encode(qin x, uint8_t *q, int64_t K, int64_t r0, int64_t r1,
                                  int64_t c0, int64_t c1, float s_enc, float s_dec,
                                  const quant_opts *opt, nf_acc *nf) {
  int64_t kp = quant_cdiv(K, 2), n0 = nf->n;
  float amax = 0.0f;
  for (int64_t r = r0; r < r1; r++) amax = qf_fmax_pos(amax, seg_amax(x, r * K, c0, c1, nf));
  int poisoned = nf->n != n0;
  uint8_t sb = poisoned ? 0x7F : fmt_nvfp4_block_scale(amax, s_enc);
  float enc = poisoned ? 0.0f : fmt_nvfp4_enc(sb, s_dec);
  for (int64_t r = r0; r < r1; r++)
    for (int64_t c = c0; c < c1; c++) {
      uint8_t code = 0;
      if (enc != 0.0f) {
        float y = qf_mul(qin_at(x, r * K + c), enc);
        code = opt->stochastic
                   ? fmt_e2m1_from_f32_sr(y, qf_philox_u32(opt->sr_seed, (uint64_t)(r * K + c),
                                                           opt->sr_offset))
                   : fmt_e2m1_from_f32(y);
      }
      nib_set(q + r * kp, c, code);
    }
  return sb;
}

static int nvfp4_walk(qin x, int64_t rows, int64_t K, float amax, uint8_t *q, uint8_t *scales,
                      float *s_dec_out, const quant_opts *opt, quant_stats *st) {
  opt = opts_or_default(opt);
  if (rows < 0 || K < 0 || !(amax >= 0.0f) || !qf_isfinite(amax)) return QUANT_BAD_ARGS;
  float s_enc = fmt_nvfp4_senc(amax), s_dec = fmt_nvfp4_sdec(amax);
  *s_dec_out = s_dec;
  int64_t kb = quant_cdiv(K, 16), kp = quant_cdiv(K, 2), cnt = 0, first = INT64_MAX;
  int64_t rstep = opt->nvfp4_2d ? 16 : 1, nrb = quant_cdiv(rows, rstep);
#pragma omp parallel for reduction(+ : cnt) reduction(min : first) schedule(static)
  for (int64_t b = 0; b < nrb; b++) {
    nf_acc nf = {0, INT64_MAX};
    int64_t r0 = b * rstep, r1 = r0 + rstep < rows ? r0 + rstep : rows;
    if (K & 1) /* the padding nibble of an odd K */
      for (int64_t r = r0; r < r1; r++) q[r * kp + kp - 1] = 0;
    for (int64_t j = 0; j < kb; j++) {
      int64_t c0 = j * 16, c1 = c0 + 16 < K ? c0 + 16 : K;
      uint8_t sb = nvfp4_block_encode(x, q, K, r0, r1, c0, c1, s_enc, s_dec, opt, &nf);
      for (int64_t r = r0; r < r1; r++) scales[r * kb + j] = sb;
    }
    cnt += nf.n;
    if (nf.first < first) first = nf.first;
  }
  return quant_finish(cnt, first, st);
}

int quant_nvfp4_amax_cpu(const uint16_t *x, int64_t rows, int64_t K, float amax, uint8_t *q,
                         uint8_t *scales, float *s_dec, const quant_opts *opt, quant_stats *st) {
  return nvfp4_walk(qin_bf16(x), rows, K, amax, q, scales, s_dec, opt, st);
}

int quant_nvfp4_amax_f32_cpu(const float *x, int64_t rows, int64_t K, float amax, uint8_t *q,
                             uint8_t *scales, float *s_dec, const quant_opts *opt,
                             quant_stats *st) {
  return nvfp4_walk(qin_f32(x), rows, K, amax, q, scales, s_dec, opt, st);
}

int quant_nvfp4_cpu(const uint16_t *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                    float *s_dec, const quant_opts *opt, quant_stats *st) {
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  float amax = quant_amax_bf16_cpu(x, rows * K, NULL);
  return quant_nvfp4_amax_cpu(x, rows, K, amax, q, scales, s_dec, opt, st);
}

int quant_nvfp4_f32_cpu(const float *x, int64_t rows, int64_t K, uint8_t *q, uint8_t *scales,
                        float *s_dec, const quant_opts *opt, quant_stats *st) {
  if (rows < 0 || K < 0) return QUANT_BAD_ARGS;
  float amax = quant_amax_f32_cpu(x, rows * K, NULL);
  return quant_nvfp4_amax_f32_cpu(x, rows, K, amax, q, scales, s_dec, opt, st);
}

/* ---------------------------------------------------------------- dequantizers */

/* Store one dequantized value into the requested outputs. */
static inline void deq_store(float v, int64_t i, float *out_f32, uint16_t *out_bf16) {
  v = qf_canon_nan(v);
  if (out_f32) out_f32[i] = v;
  if (out_bf16) out_bf16[i] = fmt_bf16_from_f32(v);
}

void dequant_fp8_block_weight_cpu(const uint8_t *q, const float *scales, int64_t rows, int64_t K,
                                  float *out_f32, uint16_t *out_bf16) {
  int64_t kb = quant_cdiv(K, 128);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < K; c++)
      deq_store(qf_mul(fmt_e4m3_to_f32(q[r * K + c]), scales[(r / 128) * kb + c / 128]), r * K + c,
                out_f32, out_bf16);
}

void dequant_fp8_block_act_cpu(const uint8_t *q, const float *scales, int64_t rows, int64_t K,
                               float *out_f32, uint16_t *out_bf16) {
  int64_t kb = quant_cdiv(K, 128);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < K; c++)
      deq_store(qf_mul(fmt_e4m3_to_f32(q[r * K + c]), scales[r * kb + c / 128]), r * K + c, out_f32,
                out_bf16);
}

void dequant_mxfp8_cpu(const uint8_t *q, const uint8_t *scales, int64_t rows, int64_t K,
                       float *out_f32, uint16_t *out_bf16) {
  int64_t kb = quant_cdiv(K, 32);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < K; c++)
      deq_store(qf_mul(fmt_e4m3_to_f32(q[r * K + c]), fmt_e8m0_to_f32(scales[r * kb + c / 32])),
                r * K + c, out_f32, out_bf16);
}

void dequant_nvfp4_cpu(const uint8_t *q, const uint8_t *scales, float s_dec, int64_t rows,
                       int64_t K, float *out_f32, uint16_t *out_bf16) {
  int64_t kb = quant_cdiv(K, 16), kp = quant_cdiv(K, 2);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < K; c++) {
      uint8_t byte = q[r * kp + c / 2], code = (uint8_t)((c & 1) ? byte >> 4 : byte & 0x0F);
      float v = qf_mul(qf_mul(fmt_e2m1_to_f32(code), fmt_e4m3_to_f32(scales[r * kb + c / 16])), s_dec);
      deq_store(v, r * K + c, out_f32, out_bf16);
    }
}

/* ---------------------------------------------------------------- CPU-only build */
#if !RLRUN_CUDA
/* Every CUDA twin of a build without CUDA: says so. */
static int no_cuda(rl_err *e) {
  rl_errf(e, RL_EXIT_HARDWARE, "quantizer: this rlrun was built without CUDA (rebuild with nvcc)");
  return QUANT_NO_CUDA;
}
void quant_cuda_set_hw_cvt(int on) {}
int quant_cuda_soft_cvt(void) { return 0; }
int quant_cuda_selftest_e4m3(int64_t *mismatch, int64_t *first, rl_err *e) { return no_cuda(e); }
int quant_cuda_selftest_fast(int64_t mismatch[4], rl_err *e) { return no_cuda(e); }
int quant_stats_fetch_cuda(const quant_stats *d, quant_stats *h, void *s, rl_err *e) { return no_cuda(e); }
int quant_stats_fetch_n_cuda(const quant_stats *d, quant_stats *h, int64_t n, void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_amax_bf16_cuda(const uint16_t *x, int64_t n, float *a, quant_stats *d, void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_fp8_block_weight_cuda(const uint16_t *x, int64_t r, int64_t K, uint8_t *q, float *sc,
                                const quant_opts *o, quant_stats *d, void *s, rl_err *e) {
  return no_cuda(e);
}
size_t quant_multi_ws_bytes(int n) { return (size_t)(n > 0 ? n : 0) * 68 + 16; }
int quant_fp8_block_weight_multi_cuda(const quant_item *it, int n, const quant_opts *o, void *ws,
                                      size_t wb, void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_mxfp8_multi_cuda(const quant_item *it, int n, const quant_opts *o, void *ws, size_t wb,
                           void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_fp8_block_act_cuda(const uint16_t *x, int64_t r, int64_t K, uint8_t *q, float *sc,
                             const quant_opts *o, quant_stats *d, void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_mxfp8_cuda(const uint16_t *x, int64_t r, int64_t K, uint8_t *q, uint8_t *sc,
                     const quant_opts *o, quant_stats *d, void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_nvfp4_cuda(const uint16_t *x, int64_t r, int64_t K, uint8_t *q, uint8_t *sc, float *sd,
                     const quant_opts *o, quant_stats *d, void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_nvfp4_amax_cuda(const uint16_t *x, int64_t r, int64_t K, const float *a, uint8_t *q,
                          uint8_t *sc, float *sd, const quant_opts *o, quant_stats *d, void *s,
                          rl_err *e) {
  return no_cuda(e);
}
int dequant_fp8_block_weight_cuda(const uint8_t *q, const float *sc, int64_t r, int64_t K,
                                  float *f, uint16_t *b, void *s, rl_err *e) {
  return no_cuda(e);
}
int dequant_fp8_block_act_cuda(const uint8_t *q, const float *sc, int64_t r, int64_t K, float *f,
                               uint16_t *b, void *s, rl_err *e) {
  return no_cuda(e);
}
int dequant_mxfp8_cuda(const uint8_t *q, const uint8_t *sc, int64_t r, int64_t K, float *f,
                       uint16_t *b, void *s, rl_err *e) {
  return no_cuda(e);
}
int dequant_nvfp4_cuda(const uint8_t *q, const uint8_t *sc, const float *sd, int64_t r, int64_t K,
                       float *f, uint16_t *b, void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_layout_fp8_act_scales_to_cublaslt_cuda(const float *src, int64_t M, int64_t kb,
                                                 int64_t ld, float *dst, void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_layout_fp8_weight_scales_to_cublaslt_cuda(const float *src, int64_t nb, int64_t kb,
                                                    float *dst, void *s, rl_err *e) {
  return no_cuda(e);
}
int quant_layout_scales_to_swizzled_cuda(const uint8_t *src, int64_t rows, int64_t cols,
                                         uint8_t *dst, void *s, rl_err *e) {
  return no_cuda(e);
}
#endif
