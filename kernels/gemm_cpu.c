/* gemm_cpu.c — the CPU reference of every GEMM in rlrun, and so the definition
 * of its numerics: dequantize the operands to FP32 (exact for BF16, MXFP8 and
 * the E2M1 × E4M3 part of NVFP4; one FP32 rounding of q × scale for fp8-block),
 * then one FP32 GEMM with a fixed summation order (8 lanes along K, combined
 * pairwise), blocked over output tiles and parallel over tiles with OpenMP.
 * Every output element is summed by one thread in one order, so the result
 * does not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/formats.h"
#include "kernels/gemm.h"

#define GEMM_CPU_TILE 32 /* output tile edge: 32 rows of A and B (K ≤ 2k: ≤ 256 KiB each) stay in L2 */

/* One dot product of two K-contiguous FP32 rows in the reference order:
 * lane l sums elements l, l+8, l+16, …; the lanes are combined pairwise;
 * the tail (K mod 8) is added last, in order. */
static float gemm_dot_f32(const float *a, const float *b, int64_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k8 = k & ~(int64_t)7;
  for (int64_t i = 0; i < k8; i += 8)
    for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (int64_t i = k8; i < k; i++) s += a[i] * b[i];
  return s;
}

/* The FP32 core: C[i][j] = alpha·Σ_k A[i][k]·B[j][k] (+ beta·C[i][j] when c_f32 and
 * beta != 0), A [m][k] and B [n][k] both K-contiguous; C row-major [m][ldc],
 * FP32 or BF16 (RNE). */
static void gemm_core_f32(void *c, int c_f32, int64_t ldc, float alpha, float beta, const float *a,
                          const float *b, int64_t m, int64_t n, int64_t k) {
  int64_t tm = (m + GEMM_CPU_TILE - 1) / GEMM_CPU_TILE, tn = (n + GEMM_CPU_TILE - 1) / GEMM_CPU_TILE;
  int64_t nt = tm * tn;
#pragma omp parallel for schedule(dynamic, 1) if (m * n * k > (int64_t)1 << 18)
  for (int64_t t = 0; t < nt; t++) {
    int64_t i0 = (t / tn) * GEMM_CPU_TILE, j0 = (t % tn) * GEMM_CPU_TILE;
    int64_t i1 = i0 + GEMM_CPU_TILE < m ? i0 + GEMM_CPU_TILE : m;
    int64_t j1 = j0 + GEMM_CPU_TILE < n ? j0 + GEMM_CPU_TILE : n;
    for (int64_t i = i0; i < i1; i++)
      for (int64_t j = j0; j < j1; j++) {
        float s = gemm_dot_f32(a + i * k, b + j * k, k);
        if (alpha != 1.0f) s *= alpha;
        if (c_f32) {
          float *cp = (float *)c + i * ldc + j;
          *cp = beta != 0.0f ? s + beta * *cp : s;
        } else {
          ((uint16_t *)c)[i * ldc + j] = fmt_bf16_from_f32(s);
        }
      }
  }
}

/* A BF16 matrix as FP32, reduction dimension contiguous: rows×k out of a
 * row-major source that is [rows][k] (trans = 0) or [k][rows] (trans = 1). */
static float *gemm_bf16_to_f32_kmajor(const uint16_t *src, int64_t rows, int64_t k, int trans) {
  float *dst = rl_xmalloc((size_t)(rows * k > 0 ? rows * k : 1) * sizeof(float));
#pragma omp parallel for if (rows * k > (int64_t)1 << 16)
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < k; i++)
      dst[r * k + i] = fmt_bf16_to_f32(trans ? src[i * rows + r] : src[r * k + i]);
  return dst;
}

/* The BF16 product (any transposes) on the CPU: operands to FP32, then the core. */
int gemm_bf16_cpu(const gemm_bf16_args *g, rl_err *e) {
  int rc = gemm_bf16_check(g, e);
  if (rc) return rc;
  if (g->m == 0 || g->n == 0) return 0;
  /* C[m][n] = op(A)[m][k] · op(B)[k][n]: the core wants A as [m][k] and B as
   * [n][k], K-contiguous; op(B) = B[k][n] is such a B only when trans_b. */
  float *a = gemm_bf16_to_f32_kmajor(g->a, g->m, g->k, g->trans_a);
  float *b = gemm_bf16_to_f32_kmajor(g->b, g->n, g->k, !g->trans_b);
  gemm_core_f32(g->c, g->c_f32, g->n, 1.0f, g->beta, a, b, g->m, g->n, g->k);
  free(a);
  free(b);
  return 0;
}

/* Scales of t in the checkpoint (ROWMAJOR) layout: t->scales itself, or a
 * converted copy in *owned (freed by the caller). */
static const void *gemm_rowmajor_scales(const qtensor *t, void **owned) {
  *owned = NULL;
  if (t->layout == QLAYOUT_ROWMAJOR) return t->scales;
  int64_t K = t->cols;
  if (t->fmt == QFMT_FP8_BLOCK) {
    int64_t kb = quant_cdiv(K, 128), nb = t->block_rows == 128 ? quant_cdiv(t->rows, 128) : t->rows;
    float *s = rl_xmalloc((size_t)(nb * kb > 0 ? nb * kb : 1) * sizeof(float));
    if (t->layout == QLAYOUT_HOPPER_ACT)
      quant_layout_fp8_act_scales_from_cublaslt(t->scales, t->rows, kb, t->scale_ld, s);
    else
      quant_layout_fp8_weight_scales_from_cublaslt(t->scales, nb, kb, s);
    *owned = s;
    return s;
  }
  int64_t cols = quant_cdiv(K, t->fmt == QFMT_MXFP8 ? 32 : 16); /* BLACKWELL_128x4 */
  uint8_t *s = rl_xmalloc((size_t)(t->rows * cols > 0 ? t->rows * cols : 1));
  quant_layout_scales_from_swizzled(t->scales, t->rows, cols, s);
  *owned = s;
  return s;
}

/* Operand t dequantized to FP32 [rows][cols]; *gscale gets the per-tensor
 * factor left out of it (NVFP4's S_dec, folded into alpha as cuBLASLt does;
 * 1 otherwise), so that every returned value is exact for BF16/MXFP8/NVFP4. */
static float *gemm_dequant_f32(const qtensor *t, float *gscale) {
  int64_t R = t->rows, K = t->cols;
  float *out = rl_xmalloc((size_t)(R * K > 0 ? R * K : 1) * sizeof(float));
  *gscale = 1.0f;
  if (t->fmt == QFMT_BF16) {
    const uint16_t *d = t->data;
#pragma omp parallel for if (R * K > (int64_t)1 << 16)
    for (int64_t i = 0; i < R * K; i++) out[i] = fmt_bf16_to_f32(d[i]);
    return out;
  }
  void *owned;
  const void *sc = gemm_rowmajor_scales(t, &owned);
  switch (t->fmt) {
    case QFMT_FP8_BLOCK:
      if (t->block_rows == 128) dequant_fp8_block_weight_cpu(t->data, sc, R, K, out, NULL);
      else dequant_fp8_block_act_cpu(t->data, sc, R, K, out, NULL);
      break;
    case QFMT_MXFP8: dequant_mxfp8_cpu(t->data, sc, R, K, out, NULL); break;
    case QFMT_NVFP4:
      dequant_nvfp4_cpu(t->data, sc, 1.0f, R, K, out, NULL);
      *gscale = t->s_dec;
      break;
    default: break;
  }
  free(owned);
  return out;
}

/* The quantized product on the CPU: dequantize both operands, then the core. */
int gemm_q_cpu(void *y, const qtensor *x, const qtensor *w, const gemm_opts *o, gemm_info *info,
               rl_err *e) {
  if (info) *info = (gemm_info){GEMM_PATH_NONE, 0, 0, -1, 1};
  int rc = gemm_q_check(x, w, e);
  if (rc) return rc;
  if (x->on_device)
    return rl_errf(e, RL_EXIT_USAGE, "gemm_q_cpu: operands are in device memory; use gemm_q_cuda");
  int64_t M = x->rows, N = w->rows, K = x->cols;
  if (M && N && !y) return rl_errf(e, RL_EXIT_USAGE, "gemm_q_cpu: y is NULL");
  if (info) *info = (gemm_info){GEMM_PATH_CPU, (int)M, 0, -1, 1};
  if (M == 0 || N == 0) return 0;
  float gx, gw;
  float *a = gemm_dequant_f32(x, &gx), *b = gemm_dequant_f32(w, &gw);
  gemm_core_f32(y, o && o->out_f32, N, qf_mul(gx, gw), 0.0f, a, b, M, N, K);
  free(a);
  free(b);
  return 0;
}
