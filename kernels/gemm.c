/* gemm.c — what both GEMM backends share: argument checks, the CPU/CUDA
 * dispatch, path names, and the stand-ins of the CUDA entry points in a
 * build without CUDA. */
#include "kernels/gemm.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Names of the paths, as reports print them. */
const char *gemm_path_name(gemm_path p) {
  switch (p) {
    case GEMM_PATH_NONE: return "none";
    case GEMM_PATH_CPU: return "cpu";
    case GEMM_PATH_BF16: return "bf16";
    case GEMM_PATH_FP8_BLOCK: return "fp8-block";
    case GEMM_PATH_FP8_DEQUANT_F32: return "fp8-block→f32-dequant";
    case GEMM_PATH_EMULATED: return "emulated-bf16";
    case GEMM_PATH_MXFP8: return "mxfp8";
    case GEMM_PATH_NVFP4: return "nvfp4";
    case GEMM_PATH_FP8_BLOCK_FUSED: return "fp8-block-fused";
  }
  return "unknown";
}

/* Check one operand of a quantized product; `what` is "x" or "w". */
static int gemm_check_operand(const qtensor *t, const char *what, int is_weight, rl_err *e) {
  const char *fn = qtensor_format_name(t->fmt);
  if ((unsigned)t->fmt > QFMT_NVFP4)
    return rl_errf(e, RL_EXIT_USAGE, "gemm: %s has unknown format %d", what, (int)t->fmt);
  if (t->rows < 0 || t->cols < 0)
    return rl_errf(e, RL_EXIT_USAGE, "gemm: %s has negative shape [%lld][%lld]", what,
                   (long long)t->rows, (long long)t->cols);
  if (t->rows > INT32_MAX || t->cols > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "gemm: %s shape [%lld][%lld] exceeds 2^31-1 per dimension",
                   what, (long long)t->rows, (long long)t->cols);
  int empty = t->rows == 0 || t->cols == 0;
  if (!empty && !t->data) return rl_errf(e, RL_EXIT_USAGE, "gemm: %s (%s) has no data", what, fn);
  if (t->fmt == QFMT_BF16) return 0;
  if (!empty && !t->scales)
    return rl_errf(e, RL_EXIT_USAGE, "gemm: %s (%s) has no scales", what, fn);
  switch (t->fmt) {
    case QFMT_FP8_BLOCK:
      if (t->block_rows != (is_weight ? 128 : 1))
        return rl_errf(e, RL_EXIT_USAGE,
                       "gemm: fp8-block %s must have %s blocks (block_rows %d), got block_rows %d",
                       what, is_weight ? "128×128" : "1×128", is_weight ? 128 : 1, t->block_rows);
      if (t->layout != QLAYOUT_ROWMAJOR &&
          t->layout != (is_weight ? QLAYOUT_HOPPER_WEIGHT : QLAYOUT_HOPPER_ACT))
        return rl_errf(e, RL_EXIT_USAGE, "gemm: fp8-block %s has scale layout %d; use ROWMAJOR or %s",
                       what, (int)t->layout, is_weight ? "HOPPER_WEIGHT" : "HOPPER_ACT");
      if (t->layout == QLAYOUT_HOPPER_ACT && t->scale_ld < t->rows)
        return rl_errf(e, RL_EXIT_USAGE, "gemm: %s scale_ld %lld < rows %lld (HOPPER_ACT layout)",
                       what, (long long)t->scale_ld, (long long)t->rows);
      return 0;
    case QFMT_MXFP8:
    case QFMT_NVFP4:
      if (t->layout != QLAYOUT_ROWMAJOR && t->layout != QLAYOUT_BLACKWELL_128x4)
        return rl_errf(e, RL_EXIT_USAGE, "gemm: %s %s has scale layout %d; use ROWMAJOR or BLACKWELL_128x4",
                       fn, what, (int)t->layout);
      if (t->fmt == QFMT_NVFP4 && !t->on_device && !isfinite(t->s_dec))
        return rl_errf(e, RL_EXIT_USAGE, "gemm: nvfp4 %s has a non-finite S_dec", what);
      if (t->fmt == QFMT_NVFP4 && t->on_device && !t->d_s_dec && !empty)
        return rl_errf(e, RL_EXIT_USAGE, "gemm: nvfp4 %s on the device has no d_s_dec", what);
      return 0;
    default: return 0;
  }
}

/* Both operands valid and compatible (same format, K, memory). */
int gemm_q_check(const qtensor *x, const qtensor *w, rl_err *e) {
  if (!x || !w) return rl_errf(e, RL_EXIT_USAGE, "gemm: x or w is NULL");
  int rc = gemm_check_operand(x, "x", 0, e);
  if (!rc) rc = gemm_check_operand(w, "w", 1, e);
  if (rc) return rc;
  if (x->fmt != w->fmt)
    return rl_errf(e, RL_EXIT_USAGE, "gemm: x is %s but w is %s; quantize x in the weight's format",
                   qtensor_format_name(x->fmt), qtensor_format_name(w->fmt));
  if (x->cols != w->cols)
    return rl_errf(e, RL_EXIT_USAGE, "gemm: K mismatch: x is [%lld][%lld], w is [%lld][%lld]",
                   (long long)x->rows, (long long)x->cols, (long long)w->rows, (long long)w->cols);
  if (x->on_device != w->on_device)
    return rl_errf(e, RL_EXIT_USAGE, "gemm: x is in %s memory but w in %s memory",
                   x->on_device ? "device" : "host", w->on_device ? "device" : "host");
  return 0;
}

/* Shapes in range, pointers present, beta only with an FP32 C. */
int gemm_bf16_check(const gemm_bf16_args *g, rl_err *e) {
  if (!g) return rl_errf(e, RL_EXIT_USAGE, "gemm_bf16: no arguments");
  if (g->m < 0 || g->n < 0 || g->k < 0 || g->m > INT32_MAX || g->n > INT32_MAX || g->k > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "gemm_bf16: bad shape m=%lld n=%lld k=%lld (0 .. 2^31-1)",
                   (long long)g->m, (long long)g->n, (long long)g->k);
  if (g->m && g->n && !g->c) return rl_errf(e, RL_EXIT_USAGE, "gemm_bf16: C is NULL");
  if (g->m && g->n && g->k && (!g->a || !g->b))
    return rl_errf(e, RL_EXIT_USAGE, "gemm_bf16: A or B is NULL");
  if (g->beta != 0.0f && !g->c_f32)
    return rl_errf(e, RL_EXIT_USAGE,
                   "gemm_bf16: beta = %g needs an FP32 C (accumulate gradients in FP32)",
                   (double)g->beta);
  return 0;
}

/* The quantized product on the backend where the operands live. */
int gemm_q(void *y, const qtensor *x, const qtensor *w, const gemm_opts *o, gemm_info *info,
           rl_err *e) {
  if (x && x->on_device) return gemm_q_cuda(y, x, w, o, info, e);
  return gemm_q_cpu(y, x, w, o, info, e);
}

/* The BF16 product on the backend where the operands live. */
int gemm_bf16(const gemm_bf16_args *g, gemm_info *info, rl_err *e) {
  if (g && g->on_device) return gemm_bf16_cuda(g, info, e);
  if (info) *info = (gemm_info){GEMM_PATH_CPU, g ? (int)g->m : 0, 0, -1, 1};
  return gemm_bf16_cpu(g, e);
}

/* ---------------------------------------------------------------- small-M GEMM: knobs, plan, checks */

/* The knobs of the small-M GEMM: the environment's, read once, or the last
 * gemm_small_tune_set. */
static struct {
  pthread_once_t once;
  gemm_small_tune env, cur;
  int set; /* 1: cur came from gemm_small_tune_set */
} SGT = {PTHREAD_ONCE_INIT, {0, 0, 0, 0, 0}, {0, 0, 0, 0, 0}, 0};

/* gemm_small_tune_set's values in range, or their defaults. */
static gemm_small_tune sgt_valid(gemm_small_tune t) {
  if (t.ctas < 1 || t.ctas > 65536) t.ctas = GEMM_SMALL_CTAS;
  if (t.min_stages < 1 || t.min_stages > 16) t.min_stages = 2;
  if (t.bn != 32 && t.bn != 64) t.bn = 0;
  if (t.reduce != GEMM_SMALL_REDUCE_GLOBAL) t.reduce = GEMM_SMALL_REDUCE_CLUSTER;
  if (t.pdl != 0) t.pdl = 1;
  return t;
}

static void sgt_read_env(void) {
  gemm_small_tune t;
  static const int bns[3] = {0, 32, 64};
  static const char *const reduce[2] = {"cluster", "global"};
  t.ctas = rl_env_int("RLRUN_SMALL_GEMM_CTAS", 1, 65536, GEMM_SMALL_CTAS);
  t.min_stages = rl_env_int("RLRUN_SMALL_GEMM_MIN_STAGES", 1, 16, 2);
  t.bn = rl_env_int_of("RLRUN_SMALL_GEMM_BN", bns, 3, 0);
  t.reduce = rl_env_word("RLRUN_SMALL_GEMM_REDUCE", reduce, 2, 0) ? GEMM_SMALL_REDUCE_GLOBAL : GEMM_SMALL_REDUCE_CLUSTER;
  t.pdl = rl_env_bool("RLRUN_SMALL_GEMM_PDL", 1);
  SGT.env = t; /* values the knobs take (rl_env_*), as sgt_valid would leave them */
}

gemm_small_tune gemm_small_tune_get(void) {
  pthread_once(&SGT.once, sgt_read_env);
  return SGT.set ? SGT.cur : SGT.env;
}

void gemm_small_tune_set(const gemm_small_tune *t) {
  pthread_once(&SGT.once, sgt_read_env);
  SGT.set = t != NULL;
  if (t) SGT.cur = sgt_valid(*t);
}

const char *gemm_small_tune_str(const gemm_small_tune *t, char *buf, size_t n) {

  char bn[8];
  snprintf(bn, sizeof bn, "%d", t->bn);
  snprintf(buf, n, "ctas=%d min_stages=%d bn=%s reduce=%s pdl=%d", t->ctas, t->min_stages, t->bn ? bn : "auto",
           t->reduce == GEMM_SMALL_REDUCE_GLOBAL ? "global" : "cluster", t->pdl);
  return buf;
}

int gemm_small_ctas(void) { return gemm_small_tune_get().ctas; }

void gemm_small_split(int64_t N, int64_t K, int64_t row_tile, int64_t bk, int ctas, int min_stages, int max_slices,
                      int *slices, int64_t *slice_k) {
  int64_t stages = (K + bk - 1) / bk, tiles = (N + row_tile - 1) / row_tile;
  if (tiles < 1) tiles = 1;
  int64_t want = (ctas + tiles - 1) / tiles, most = (stages + min_stages - 1) / min_stages;
  int64_t s = want < most ? want : most;
  if (s > max_slices) s = max_slices;
  if (s < 1) s = 1;
  int64_t per = stages > 0 ? (stages + s - 1) / s : 1; /* stages per slice */
  *slices = stages > 0 ? (int)((stages + per - 1) / per) : 1;
  *slice_k = per * bk;
}

/* The K split of the small-M GEMM: enough slices to fill the GPU, at most
 * ceil(stages / min_stages) of them (a function of N and K only). */
void gemm_small_plan(int64_t N, int64_t K, int *slices, int64_t *slice_k) {
  gemm_small_tune t = gemm_small_tune_get();
  gemm_small_split(N, K, GEMM_SMALL_BN, GEMM_SMALL_BK, t.ctas, t.min_stages, GEMM_SMALL_MAX_SLICES, slices, slice_k);
}

/* Weight rows of a group as its K split counts them (whole 32-row tiles per segment). */
int64_t gemm_small_group_rows(const gemm_small_seg *seg, int n_seg) {
  int64_t rows = 0;
  for (int i = 0; seg && i < n_seg; i++)
    if (seg[i].N > 0) rows += (seg[i].N + GEMM_SMALL_BN - 1) / GEMM_SMALL_BN * GEMM_SMALL_BN;
  return rows;
}

/* The shape checks all three entry points share; fn names the entry point. */
static int sg_check_shape(const char *fn, int64_t M, int64_t N, int64_t K, rl_err *e) {
  if (M < 0 || N < 0 || K < 0 || N > INT32_MAX || K > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "%s: bad shape M=%lld N=%lld K=%lld (0 .. 2^31-1)", fn,
                   (long long)M, (long long)N, (long long)K);
  if (M > GEMM_SMALL_MAX_M)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: M=%lld rows exceeds the small-M kernel's %d; use linear_forward "
                   "(cuBLASLt) for larger batches",
                   fn, (long long)M, GEMM_SMALL_MAX_M);
  if (K % 8)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: K=%lld is not a multiple of 8 (rows must be whole 16-byte "
                   "vectors); use linear_forward for this layer",
                   fn, (long long)K);
  return 0;
}

/* x and w present (when K > 0) and 16-byte aligned, the output present and
 * aligned to out_align bytes. */
static int sg_check_ptrs(const char *fn, const void *out, unsigned out_align, const uint16_t *x,
                         const uint16_t *w, int64_t M, int64_t N, int64_t K, rl_err *e) {
  if (!out || (K > 0 && (!x || !w)))
    return rl_errf(e, RL_EXIT_USAGE, "%s: y, x or w is NULL (M=%lld N=%lld K=%lld)", fn,
                   (long long)M, (long long)N, (long long)K);
  if ((uintptr_t)x % 16 || (uintptr_t)w % 16 || (uintptr_t)out % out_align)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: x (%p) and w (%p) must be 16-byte aligned and y (%p) %u-byte "
                   "aligned; pass row-aligned views or use linear_forward",
                   fn, (const void *)x, (const void *)w, out, out_align);
  return 0;
}

/* Shapes in range, pointers present and aligned as the small-M kernel loads them. */
int gemm_small_check(const float *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                     int64_t K, rl_err *e) {
  int rc = sg_check_shape("gemm_small", M, N, K, e);
  if (rc || M == 0 || N == 0) return rc;
  return sg_check_ptrs("gemm_small", y, 4, x, w, M, N, K, e);
}

int gemm_small_b_check(const uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                       int64_t K, rl_err *e) {
  int rc = sg_check_shape("gemm_small_b", M, N, K, e);
  if (rc || M == 0 || N == 0) return rc;
  return sg_check_ptrs("gemm_small_b", y, 2, x, w, M, N, K, e);
}

/* 1 … GEMM_SMALL_MAX_SEGS segments, each valid as a gemm_small_bf16_cuda call. */
int gemm_small_group_check(const gemm_small_seg *seg, int n_seg, const uint16_t *x, int64_t M,
                           int64_t K, rl_err *e) {
  if (!seg || n_seg < 1 || n_seg > GEMM_SMALL_MAX_SEGS)
    return rl_errf(e, RL_EXIT_USAGE, "gemm_small_group: %d segments%s; pass 1 … %d", n_seg,
                   seg ? "" : " (NULL list)", GEMM_SMALL_MAX_SEGS);
  for (int i = 0; i < n_seg; i++) {
    int rc = sg_check_shape("gemm_small_group", M, seg[i].N, K, e);
    if (!rc && M > 0 && seg[i].N > 0) rc = sg_check_ptrs("gemm_small_group", seg[i].y, 4, x, seg[i].w, M, seg[i].N, K, e);
    if (rc) return rl_err_prefix(e, "segment %d of %d: ", i, n_seg);
  }
  return 0;
}

/* The SwiGLU pair: both weights valid against x, act 2-byte aligned. */
int gemm_small_swiglu_check(const uint16_t *act, const uint16_t *x, const uint16_t *wg,
                            const uint16_t *wu, int64_t M, int64_t N, int64_t K, rl_err *e) {
  int rc = sg_check_shape("gemm_small_swiglu", M, N, K, e);
  if (rc || M == 0 || N == 0) return rc;
  rc = sg_check_ptrs("gemm_small_swiglu", act, 2, x, wg, M, N, K, e);
  if (!rc) rc = sg_check_ptrs("gemm_small_swiglu", act, 2, x, wu, M, N, K, e);
  return rc;
}

/* gemm_fp8q: an fp8-block 128×128 device weight, K % 16 == 0, aligned operands. */
int gemm_fp8q_check(const uint16_t *y, const uint16_t *x, const qtensor *w, int64_t M, rl_err *e) {
  const char *fn = "gemm_fp8q";
  if (!w) return rl_errf(e, RL_EXIT_USAGE, "%s: the weight is NULL", fn);
  if (w->fmt != QFMT_FP8_BLOCK || w->block_rows != 128)
    return rl_errf(e, RL_EXIT_USAGE, "%s: the weight is %s with block_rows %d; this kernel takes fp8-block 128×128 "
                   "weights (use linear_forward)", fn, qtensor_format_name(w->fmt), w->block_rows);
  if (!w->on_device) return rl_errf(e, RL_EXIT_USAGE, "%s: the weight is in host memory; pass the device qtensor", fn);
  if (w->layout != QLAYOUT_ROWMAJOR && w->layout != QLAYOUT_HOPPER_WEIGHT)
    return rl_errf(e, RL_EXIT_USAGE, "%s: weight scale layout %d; use ROWMAJOR or HOPPER_WEIGHT", fn, (int)w->layout);
  const int64_t N = w->rows, K = w->cols;
  if (M < 0 || N < 0 || K < 0 || M >= INT32_MAX || N >= INT32_MAX || K >= INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "%s: shape M=%lld N=%lld K=%lld out of range (0 … 2^31 − 1)", fn, (long long)M,
                   (long long)N, (long long)K);
  if (K % 16)
    return rl_errf(e, RL_EXIT_USAGE, "%s: K=%lld is not a multiple of 16 (the tensor map's rows must be whole "
                   "16-byte vectors); use linear_forward for this layer", fn, (long long)K);
  if (M == 0 || N == 0) return 0;
  if (!y || (K > 0 && (!x || !w->data || !w->scales)))
    return rl_errf(e, RL_EXIT_USAGE, "%s: y, x, or the weight's data or scales is NULL", fn);
  if ((uintptr_t)x % 16 || (uintptr_t)w->data % 16 || (uintptr_t)w->scales % 4 || (uintptr_t)y % 2)
    return rl_errf(e, RL_EXIT_USAGE, "%s: x (%p) and the weight's codes (%p) must be 16-byte aligned, the scales "
                   "4-byte, y (%p) 2-byte; pass row-aligned views or use linear_forward", fn, (const void *)x,
                   w->data, (void *)y);
  return 0;
}

int gemm_fp8q_cluster(int set) {
  static int cache = -1; /* -1: not read yet */
  if (set >= 0) __atomic_store_n(&cache, set == 1 || set == 2 || set == 4 ? set : 0, __ATOMIC_SEQ_CST);
  int cl = __atomic_load_n(&cache, __ATOMIC_SEQ_CST);
  if (cl < 0) {
    static const int cls[4] = {0, 1, 2, 4};
    int want = rl_env_int_of("RLRUN_FP8Q_CLUSTER", cls, 4, 0), unset = -1;
    __atomic_compare_exchange_n(&cache, &unset, want, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    cl = __atomic_load_n(&cache, __ATOMIC_SEQ_CST);
  }
  return cl;
}

int gemm_fp8q_cluster_pick(int cl, int64_t mtiles, int64_t ntn, int n_sm) {
  if (cl != 1 && cl != 2 && cl != 4) cl = mtiles * ntn <= (int64_t)(n_sm > 0 ? n_sm : 0) ? 4 : 2;
  while (cl > 1 && cl > ntn) cl /= 2;
  return cl;
}

#if !RLRUN_CUDA
int gemm_fp8q_supported(void) { return 0; }
int gemm_fp8q_cuda(uint16_t *y, const uint16_t *x, const qtensor *w, int64_t M, const quant_policy *pol,
                   void *stream, rl_err *e) {
  (void)pol, (void)stream;
  int rc = gemm_fp8q_check(y, x, w, M, e);
  return rc ? rc
            : rl_errf(e, RL_EXIT_HARDWARE, "gemm_fp8q: this binary was built without CUDA; rebuild with nvcc "
                      "available or use device: cpu");
}
#endif

/* The fp8-block group: every weight an fp8-block 128×128 device qtensor of K columns. */
int gemm_small_fp8_group_check(const gemm_small_seg8 *seg, int n_seg, const uint8_t *xq, const float *xs,
                               int64_t M, int64_t K, int out_bf16, rl_err *e) {
  const char *fn = "gemm_small_fp8_group";
  if (!seg || n_seg < 1 || n_seg > GEMM_SMALL_MAX_SEGS)
    return rl_errf(e, RL_EXIT_USAGE, "%s: %d segments%s; pass 1 … %d", fn, n_seg, seg ? "" : " (NULL list)",
                   GEMM_SMALL_MAX_SEGS);
  for (int i = 0; i < n_seg; i++) {
    const qtensor *w = seg[i].w;
    int rc = 0;
    if (!w) rc = rl_errf(e, RL_EXIT_USAGE, "%s: the weight is NULL", fn);
    else if (w->fmt != QFMT_FP8_BLOCK || w->block_rows != 128)
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: the weight is %s with block_rows %d; this kernel takes fp8-block 128×128 "
                   "weights (use linear_forward)", fn, qtensor_format_name(w->fmt), w->block_rows);
    else if (!w->on_device)
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: the weight is in host memory; pass the device qtensor", fn);
    else if (w->layout != QLAYOUT_ROWMAJOR && w->layout != QLAYOUT_HOPPER_WEIGHT)
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: weight scale layout %d; use ROWMAJOR or HOPPER_WEIGHT", fn, (int)w->layout);
    else if (w->cols != K)
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: the weight has %lld columns, x has K=%lld", fn, (long long)w->cols,
                   (long long)K);
    if (!rc) rc = sg_check_shape(fn, M, w->rows, K, e);
    if (!rc && K % 16)
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: K=%lld is not a multiple of 16 (E4M3 rows must be whole 16-byte vectors); "
                   "use linear_forward for this layer", fn, (long long)K);
    if (!rc && M > 0 && w->rows > 0) {
      if (!seg[i].y || (K > 0 && (!xq || !xs || !w->data || !w->scales)))
        rc = rl_errf(e, RL_EXIT_USAGE, "%s: y, x's codes or scales, or the weight's data or scales is NULL", fn);
      else if ((uintptr_t)xq % 16 || (uintptr_t)w->data % 16 || (uintptr_t)xs % 4 || (uintptr_t)w->scales % 4 ||
               (uintptr_t)seg[i].y % (out_bf16 ? 2 : 4))
        rc = rl_errf(e, RL_EXIT_USAGE, "%s: x's codes (%p) and the weight's (%p) must be 16-byte aligned, the scales "
                     "4-byte, y (%p) %d-byte; pass row-aligned views or use linear_forward", fn, (const void *)xq,
                     w->data, seg[i].y, out_bf16 ? 2 : 4);
    }
    if (rc) return rl_err_prefix(e, "segment %d of %d: ", i, n_seg);
  }
  return 0;
}

int gemm_small_fp8_swiglu_check(const uint16_t *act, const gemm_small_q8out *qo, const qtensor *wg,
                                const qtensor *wu, const uint8_t *xq, const float *xs, int64_t M, int64_t K,
                                rl_err *e) {
  const char *fn = "gemm_small_fp8_swiglu";
  const gemm_small_seg8 seg[2] = {{(void *)act, wg}, {(void *)act, wu}};
  int rc = gemm_small_fp8_group_check(seg, 2, xq, xs, M, K, 1, e);
  if (rc) return rl_err_prefix(e, "%s: ", fn);
  const int64_t N = wg->rows, mp = (M + 7) / 8 * 8;
  if (wu->rows != N)
    return rl_errf(e, RL_EXIT_USAGE, "%s: gate has %lld rows, up %lld; the pair must have the same shape", fn,
                   (long long)N, (long long)wu->rows);
  if (K < 16 || N % 16)
    return rl_errf(e, RL_EXIT_USAGE, "%s: K=%lld (at least 16 needed) or N=%lld (a multiple of 16 needed: whole "
                   "16-element quantizer lanes); run the group and ops_swiglu_forward_q8_bx_cuda", fn, (long long)K,
                   (long long)N);
  if (!qo || !qo->q || !qo->scales || !act)
    return rl_errf(e, RL_EXIT_USAGE, "%s: act, the fp8 output or its codes or scales is NULL", fn);
  if (qo->rows_pad < M || qo->rows_pad > mp || qo->scale_ld < qo->rows_pad)
    return rl_errf(e, RL_EXIT_USAGE, "%s: pad rows %d for M=%lld (M … %lld allowed), scale ld %lld (≥ pad rows "
                   "needed)", fn, qo->rows_pad, (long long)M, (long long)mp, (long long)qo->scale_ld);
  if ((uintptr_t)act % 16 || (uintptr_t)qo->q % 16 || (uintptr_t)qo->scales % 4)
    return rl_errf(e, RL_EXIT_USAGE, "%s: act (%p) and the codes (%p) must be 16-byte aligned, the scales (%p) "
                   "4-byte", fn, (const void *)act, (const void *)qo->q, (const void *)qo->scales);
  return 0;
}

#if !RLRUN_CUDA
int gemm_small_fp8_swiglu_cuda(uint16_t *act, const gemm_small_q8out *qo, const qtensor *wg, const qtensor *wu,
                               const uint8_t *xq, const float *xs, int64_t xs_rs, int64_t xs_ks, int64_t M,
                               int64_t K, void *stream, rl_err *e) {
  (void)xs_rs, (void)xs_ks, (void)stream;
  int rc = gemm_small_fp8_swiglu_check(act, qo, wg, wu, xq, xs, M, K, e);
  return rc ? rc
            : rl_errf(e, RL_EXIT_HARDWARE, "gemm_small_fp8_swiglu: this binary was built without CUDA; rebuild with "
                      "nvcc available or use device: cpu");
}
int gemm_small_fp8_group_supported(void) { return 0; }
int gemm_small_fp8_group_cuda(const gemm_small_seg8 *seg, int n_seg, const uint8_t *xq, const float *xs,
                              int64_t xs_rs, int64_t xs_ks, int64_t M, int64_t K, int out_bf16, void *stream,
                              rl_err *e) {
  (void)xs_rs, (void)xs_ks, (void)stream;
  int rc = gemm_small_fp8_group_check(seg, n_seg, xq, xs, M, K, out_bf16, e);
  return rc ? rc
            : rl_errf(e, RL_EXIT_HARDWARE, "gemm_small_fp8_group: this binary was built without CUDA; rebuild with "
                      "nvcc available or use device: cpu");
}
#endif

#if !RLRUN_CUDA
/* Stand-ins of the CUDA entry points: say that this build has no CUDA. */
static int sg_no_cuda(rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "gemm_small: operands are in device memory but this binary was built without "
                 "CUDA; rebuild with nvcc available or use device: cpu");
}

int gemm_small_bf16_cuda(float *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                         int64_t K, void *stream, rl_err *e) {
  (void)stream;
  int rc = gemm_small_check(y, x, w, M, N, K, e);
  return rc ? rc : sg_no_cuda(e);
}

int gemm_small_bf16_b_cuda(uint16_t *y, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N,
                           int64_t K, void *stream, rl_err *e) {
  (void)stream;
  int rc = gemm_small_b_check(y, x, w, M, N, K, e);
  return rc ? rc : sg_no_cuda(e);
}

int gemm_small_bf16_group_cuda(const gemm_small_seg *seg, int n_seg, const uint16_t *x, int64_t M,
                               int64_t K, void *stream, rl_err *e) {
  (void)stream;
  int rc = gemm_small_group_check(seg, n_seg, x, M, K, e);
  return rc ? rc : sg_no_cuda(e);
}

int gemm_small_bf16_swiglu_cuda(uint16_t *act, const uint16_t *x, const uint16_t *wg,
                                const uint16_t *wu, int64_t M, int64_t N, int64_t K, void *stream,
                                rl_err *e) {
  (void)stream;
  int rc = gemm_small_swiglu_check(act, x, wg, wu, M, N, K, e);
  return rc ? rc : sg_no_cuda(e);
}

void gemm_small_release(void) {}

int gemm_q_cuda(void *y, const qtensor *x, const qtensor *w, const gemm_opts *o, gemm_info *info,
                rl_err *e) {
  if (info) info->path = GEMM_PATH_NONE;
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "gemm: operands are in device memory but this binary was built without CUDA; "
                 "rebuild with nvcc available or use device: cpu");
}

int gemm_bf16_cuda(const gemm_bf16_args *g, gemm_info *info, rl_err *e) {
  if (info) info->path = GEMM_PATH_NONE;
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "gemm_bf16: operands are in device memory but this binary was built without "
                 "CUDA; rebuild with nvcc available or use device: cpu");
}

int gemm_cuda_device(int *dev, rl_err *e) {
  *dev = -1;
  return rl_errf(e, RL_EXIT_HARDWARE, "gemm: this binary was built without CUDA; use device: cpu");
}

int gemm_cuda_plan_count(void) { return 0; }
void gemm_cuda_release(void) {}
#endif

#if !RLRUN_CUDA
/* Stand-ins of the small-M fp8-block GEMM (kernels/gemm_small_fp8_cuda.cu): say that
 * this build has no CUDA. */
static int sgf8_no_cuda(rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "gemm_small_fp8_block: operands are in device memory but this binary was built "
                 "without CUDA; rebuild with nvcc available or use device: cpu");
}

int gemm_small_fp8_block_cuda(float *y, const uint16_t *x, const qtensor *w, int64_t M,
                              const quant_policy *pol, void *stream, rl_err *e) {
  (void)y, (void)x, (void)w, (void)M, (void)pol, (void)stream;
  return sgf8_no_cuda(e);
}

int gemm_small_fp8_block_probe_cuda(float *y, uint8_t *qx, float *sx, const uint16_t *x,
                                    const qtensor *w, int64_t M, const quant_policy *pol,
                                    void *stream, rl_err *e) {
  (void)y, (void)qx, (void)sx, (void)x, (void)w, (void)M, (void)pol, (void)stream;
  return sgf8_no_cuda(e);
}

void gemm_small_fp8_release(void) {}
#endif
