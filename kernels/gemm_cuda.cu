/* gemm_cuda.cu — the CUDA side of gemm.h: cuBLASLt with one cached plan per
 * (device, kind, M, N, K, transposes, output type, flags): matmul descriptor,
 * layouts, chosen algorithm and workspace size are made once and reused.
 * This file holds the device context, the plan cache, the non-pinned kernels and
 * the BF16/FP8/MX GEMM paths; choosing pinned algorithms is in gemm_pin_cuda.cu.
 *
 * Row-major C[m][n] = op(A)[m][k]·op(B)[k][n] is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ,
 * so cuBLASLt's "A" is our B and its "B" is our A; Y = X·Wᵀ is the TN case
 * (cuBLASLt A = W, op T; B = X, op N) that block-scaled FP8 requires.
 *
 * Block-scaled FP8 (and the Blackwell MX kinds): cuBLASLt refuses the
 * descriptor (CUBLAS_STATUS_INVALID_VALUE from the heuristic) while the A/B
 * scale pointers are unset, so every plan's descriptor gets a valid dummy
 * device pointer at creation; the real pointers are set at each call.
 *
 * Threads: every table is per device (the plans, the pinned families, the
 * handles and scratch), so host threads that each drive a device of their own
 * (the rollout split over GPUs) may call in at once; two threads on one
 * device may not. */
#include <pthread.h>

#include "kernels/gemm_cuda_int.h"

/* All of the GEMM state (shared with gemm_pin_cuda.cu through gemm_cuda_int.h). */
gemm_state gemm_G;

/* ---------------------------------------------------------------- errors */

/* Check a CUDA runtime status; the message names the call. */
int cu_ok(cudaError_t st, const char *what, rl_err *e) {
  if (st == cudaSuccess) return 0;
  cudaGetLastError();
  return rl_errf(e, RL_EXIT_FAIL, "gemm: %s failed: %s", what, cudaGetErrorString(st));
}

/* Check a cuBLASLt status; the message names the call and the status. */
int lt_ok(cublasStatus_t st, const char *what, rl_err *e) {
  if (st == CUBLAS_STATUS_SUCCESS) return 0;
  return rl_errf(e, RL_EXIT_FAIL, "gemm: cuBLASLt %s failed: %s (%s)", what,
                 cublasLtGetStatusName(st), cublasLtGetStatusString(st));
}

/* Check the last kernel launch. */
int launch_ok(const char *kernel, rl_err *e) { return cu_ok(cudaGetLastError(), kernel, e); }

/* ---------------------------------------------------------------- device context */

/* The current device, its cuBLASLt handle, workspace and constants (made on
 * first use). RL_EXIT_HARDWARE when there is no usable GPU. */
static cudaError_t gemm_count_st; /* what cudaGetDeviceCount said (gemm_count, once) */
static pthread_once_t gemm_count_once = PTHREAD_ONCE_INIT;
static void gemm_count(void) {
  int n = 0;
  gemm_count_st = cudaGetDeviceCount(&n);
  if (gemm_count_st != cudaSuccess) cudaGetLastError(), n = 0;
  gemm_G.n_devices = n, gemm_G.asked = 1;
}

static int gemm_dev(int *dev, rl_err *e) {
  pthread_once(&gemm_count_once, gemm_count); /* threads driving other devices may ask at once */
  if (gemm_count_st != cudaSuccess)
    return rl_errf(e, RL_EXIT_HARDWARE, "gemm: no CUDA device (%s); use device: cpu",
                   cudaGetErrorString(gemm_count_st));
  if (gemm_G.n_devices == 0)
    return rl_errf(e, RL_EXIT_HARDWARE, "gemm: no CUDA device (the driver reports none); use device: cpu");
  int d = 0;
  if (cu_ok(cudaGetDevice(&d), "cudaGetDevice", e)) return RL_EXIT_FAIL;
  if (d < 0 || d >= DEVICE_MAX_GPUS)
    return rl_errf(e, RL_EXIT_HARDWARE, "gemm: device %d beyond the %d supported", d, DEVICE_MAX_GPUS);
  *dev = d;
  if (gemm_G.lt[d]) return 0;
  if (cu_ok(cudaDeviceGetAttribute(&gemm_G.cc_major[d], cudaDevAttrComputeCapabilityMajor, d),
            "cudaDeviceGetAttribute", e) ||
      cu_ok(cudaDeviceGetAttribute(&gemm_G.cc_minor[d], cudaDevAttrComputeCapabilityMinor, d),
            "cudaDeviceGetAttribute", e) ||
      (!gemm_G.ws[d] && cu_ok(cudaMalloc(&gemm_G.ws[d], GEMM_WS_BYTES), "cudaMalloc of the cuBLASLt workspace", e)) ||
      (!gemm_G.consts[d] && cu_ok(cudaMalloc((void **)&gemm_G.consts[d], 4 * sizeof(float)), "cudaMalloc of constants", e)))
    return RL_EXIT_FAIL;
  const float c[4] = {1.0f, 0.0f, 1.0f, 0.0f};
  if (cu_ok(cudaMemcpy(gemm_G.consts[d], c, sizeof c, cudaMemcpyHostToDevice), "cudaMemcpy of constants", e))
    return RL_EXIT_FAIL;
  return lt_ok(cublasLtCreate(&gemm_G.lt[d]), "cublasLtCreate", e);
}

/* Device scratch slot `slot` of at least `bytes` (grown on demand, reused). */
void *gemm_scratch(int dev, int slot, size_t bytes, rl_err *e) {
  if (bytes == 0) bytes = 16;
  if (gemm_G.scr_cap[dev][slot] >= bytes) return gemm_G.scr[dev][slot];
  if (gemm_G.scr[dev][slot] && cu_ok(cudaFree(gemm_G.scr[dev][slot]), "cudaFree of scratch", e)) return NULL;
  gemm_G.scr[dev][slot] = NULL, gemm_G.scr_cap[dev][slot] = 0;
  size_t cap = bytes + bytes / 4;
  device_buffers_changed();
  if (cu_ok(cudaMalloc(&gemm_G.scr[dev][slot], cap), "cudaMalloc of GEMM scratch", e)) return NULL;
  gemm_G.scr_cap[dev][slot] = cap;
  return gemm_G.scr[dev][slot];
}

/* ---------------------------------------------------------------- kernels */

/* fp8-block operand → FP32, scales read in any of the three fp8 layouts;
 * value = qf_mul(E4M3(q), scale), the same bytes as dequant_fp8_block_*_cpu. */
__global__ void gemm_dequant_fp8_kernel(const uint8_t *q, const float *s, int64_t rows, int64_t K,
                                        int block_rows, int layout, int64_t sld, float *out) {
  int64_t n = rows * K, kb = (K + 127) / 128;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i / K, c = i % K;
    float sc;
    if (layout == QLAYOUT_HOPPER_ACT) sc = s[(c / 128) * sld + r];
    else if (layout == QLAYOUT_HOPPER_WEIGHT) sc = s[(r / 128) * ((kb + 3) / 4 * 4) + c / 128];
    else sc = s[(block_rows == 128 ? r / 128 : r) * kb + c / 128];
    out[i] = qf_mul(fmt_e4m3_to_f32(q[i]), sc);
  }
}

/* FP32 → BF16 (RNE), n elements. */
__global__ void gemm_f32_to_bf16_kernel(const float *in, uint16_t *out, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    out[i] = fmt_bf16_from_f32(in[i]);
}

/* *out = *a × *b (NVFP4: alpha = S_dec(x) · S_dec(w), read where the quantizer wrote it). */
__global__ void gemm_alpha_kernel(const float *a, const float *b, float *out) { *out = qf_mul(*a, *b); }


/* Grid for an elementwise kernel over n elements. */
unsigned gemm_grid(int64_t n) {
  int64_t b = (n + 255) / 256;
  return (unsigned)(b < 1 ? 1 : b > 65535 ? 65535 : b);
}

/* ---------------------------------------------------------------- plans */

/* FNV-1a over the key's bytes. */
static uint64_t key_hash(const gemm_key *k) {
  const unsigned char *p = (const unsigned char *)k;
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

/* Free a plan's descriptors and mark its slot empty. */
static void plan_destroy(gemm_plan *p) {
  if (!p->used) return;
  cublasLtMatrixLayoutDestroy(p->la);
  cublasLtMatrixLayoutDestroy(p->lb);
  cublasLtMatrixLayoutDestroy(p->lc);
  cublasLtMatmulDescDestroy(p->desc);
  memset(p, 0, sizeof *p);
}

/* Element types of a kind: operands and output. */
static cudaDataType_t kind_ab_type(int kind) {
  switch (kind) {
    case GK_FP8_BLOCK:
    case GK_MXFP8: return CUDA_R_8F_E4M3;
    case GK_NVFP4: return CUDA_R_4F_E2M1;
    case GK_F32: return CUDA_R_32F;
    default: return CUDA_R_16BF;
  }
}

/* Name of a kind, for messages. */
static const char *kind_name(int kind) {
  static const char *n[] = {"bf16", "fp8-block", "f32", "mxfp8", "nvfp4"};
  return n[kind];
}

/* The three layouts of key k with m rows of our A (la: our B; lb: our A; lc: C/D). */
int plan_layouts(const gemm_key *k, int64_t m, cublasLtMatrixLayout_t *la,
                 cublasLtMatrixLayout_t *lb, cublasLtMatrixLayout_t *lc, rl_err *e) {
  cudaDataType_t ab = kind_ab_type(k->kind);
  cudaDataType_t cd = (k->out_f32 || k->accumulate || k->kind == GK_F32) ? CUDA_R_32F : CUDA_R_16BF;
  uint64_t ar = k->tb ? k->k : k->n, ac = k->tb ? k->n : k->k;
  uint64_t br = k->ta ? m : k->k, bc = k->ta ? k->k : m;
  if (lt_ok(cublasLtMatrixLayoutCreate(la, ab, ar, ac, (int64_t)ar), "MatrixLayoutCreate(A)", e))
    return RL_EXIT_FAIL;
  if (lt_ok(cublasLtMatrixLayoutCreate(lb, ab, br, bc, (int64_t)br), "MatrixLayoutCreate(B)", e)) {
    cublasLtMatrixLayoutDestroy(*la);
    return RL_EXIT_FAIL;
  }
  if (lt_ok(cublasLtMatrixLayoutCreate(lc, cd, k->n, m, k->n), "MatrixLayoutCreate(C)", e)) {
    cublasLtMatrixLayoutDestroy(*la);
    cublasLtMatrixLayoutDestroy(*lb);
    return RL_EXIT_FAIL;
  }
  return 0;
}

/* The matmul descriptor of key k: FP32 compute, transposes, scale modes, pointer mode. */
static int plan_desc(const gemm_key *k, cublasLtMatmulDesc_t *d, rl_err *e) {
  if (lt_ok(cublasLtMatmulDescCreate(d, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate", e))
    return RL_EXIT_FAIL;
  cublasOperation_t opa = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  int rc = lt_ok(cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa), "set TRANSA", e);
  if (!rc) rc = lt_ok(cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb), "set TRANSB", e);
  int32_t ma = -1, mb = -1;
  if (k->kind == GK_FP8_BLOCK)
    ma = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, mb = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  else if (k->kind == GK_MXFP8)
    ma = mb = CUBLASLT_MATMUL_MATRIX_SCALE_VEC32_UE8M0;
  else if (k->kind == GK_NVFP4)
    ma = mb = CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3;
  if (!rc && ma >= 0)
    rc = lt_ok(cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &ma, sizeof ma), "set A_SCALE_MODE", e);
  if (!rc && mb >= 0)
    rc = lt_ok(cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mb, sizeof mb), "set B_SCALE_MODE", e);
  if (!rc && ma >= 0) { /* block scaling: no algorithm at all while the scale pointers are NULL */
    const void *dummy = gemm_G.consts[k->dev]; /* 16-byte aligned; replaced at every call (plan_run) */
    rc = lt_ok(cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof dummy), "set A_SCALE_POINTER", e);
    if (!rc)
      rc = lt_ok(cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof dummy), "set B_SCALE_POINTER", e);
  }
  if (!rc && k->alpha_dev) {
    int32_t pm = CUBLASLT_POINTER_MODE_DEVICE;
    rc = lt_ok(cublasLtMatmulDescSetAttribute(*d, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof pm), "set POINTER_MODE", e);
  }
  if (rc) cublasLtMatmulDescDestroy(*d);
  return rc;
}

/* Heuristic choice for (desc, layouts): the nth (0-based) candidate that fits
 * the workspace (and, when no_splitk, has SPLITK_NUM = 1). */
int plan_heuristic(int dev, const gemm_key *k, cublasLtMatmulDesc_t desc,
                   cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb,
                   cublasLtMatrixLayout_t lc, int no_splitk, int nth, int64_t m,
                   cublasLtMatmulAlgo_t *algo, size_t *ws, rl_err *e) {
  cublasLtMatmulPreference_t pref;
  if (lt_ok(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate", e)) return RL_EXIT_FAIL;
  size_t wsmax = GEMM_WS_BYTES;
  uint32_t red = CUBLASLT_REDUCTION_SCHEME_NONE;
  int rc = lt_ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsmax, sizeof wsmax), "set MAX_WORKSPACE", e);
  if (!rc && no_splitk)
    rc = lt_ok(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof red), "set REDUCTION_SCHEME_MASK", e);
  cublasLtMatmulHeuristicResult_t res[GEMM_PIN_CANDIDATES];
  int got = 0;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  if (!rc) /* one candidate unless filtering: exactly what a bare cuBLASLt caller gets */
    st = cublasLtMatmulAlgoGetHeuristic(gemm_G.lt[dev], desc, la, lb, lc, lc, pref,
                                        no_splitk || nth ? GEMM_PIN_CANDIDATES : 1, res, &got);
  cublasLtMatmulPreferenceDestroy(pref);
  if (rc) return rc;
  for (int i = 0; i < got && st == CUBLAS_STATUS_SUCCESS; i++) {
    if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > GEMM_WS_BYTES) continue;
    int32_t splitk = 1;
    size_t wr = 0;
    cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &wr);
    if (no_splitk && splitk > 1) continue;
    if (nth-- > 0) continue;
    *algo = res[i].algo;
    *ws = res[i].workspaceSize;
    return 0;
  }
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "gemm: cuBLASLt has no %s algorithm for m=%lld n=%lld k=%lld (ta=%d tb=%d%s) on "
                 "sm_%d%d (%s)",
                 kind_name(k->kind), (long long)m, (long long)k->n, (long long)k->k, k->ta, k->tb,
                 no_splitk ? ", no split-K" : "", gemm_G.cc_major[dev], gemm_G.cc_minor[dev],
                 st == CUBLAS_STATUS_SUCCESS ? "no candidate" : cublasLtGetStatusName(st));
}

/* Build plan p for key k. */
static int plan_build(gemm_plan *p, const gemm_key *k, rl_err *e) {
  memset(p, 0, sizeof *p);
  p->key = *k;
  if (plan_desc(k, &p->desc, e)) return RL_EXIT_FAIL;
  if (plan_layouts(k, k->m, &p->la, &p->lb, &p->lc, e)) {
    cublasLtMatmulDescDestroy(p->desc);
    return RL_EXIT_FAIL;
  }
  p->used = 1;
  int rc;
  if (k->pin) {
    cublasLtMatmulAlgo_t ref;
    rc = plan_pinned_algo(k, p->desc, &p->algo, &ref, e);
    if (!rc) {
      cublasLtMatmulHeuristicResult_t res;
      memset(&res, 0, sizeof res);
      cublasStatus_t st = cublasLtMatmulAlgoCheck(gemm_G.lt[k->dev], p->desc, p->la, p->lb, p->lc, p->lc, &p->algo, &res);
      if ((st != CUBLAS_STATUS_SUCCESS || res.workspaceSize > GEMM_WS_BYTES) && memcmp(&ref, &p->algo, sizeof ref)) {
        p->algo = ref; /* the bucket's algorithm does not run at this M: the reference (same bits) */
        memset(&res, 0, sizeof res);
        st = cublasLtMatmulAlgoCheck(gemm_G.lt[k->dev], p->desc, p->la, p->lb, p->lc, p->lc, &p->algo, &res);
      }
      if (st != CUBLAS_STATUS_SUCCESS || res.workspaceSize > GEMM_WS_BYTES)
        rc = rl_errf(e, RL_EXIT_HARDWARE,
                     "gemm: the pinned %s algorithm of n=%lld k=%lld (chosen at M=%d) does not run "
                     "at M=%lld (%s); turn pin_algo off for this shape",
                     kind_name(k->kind), (long long)k->n, (long long)k->k, GEMM_PIN_M,
                     (long long)k->m, cublasLtGetStatusName(st));
      p->ws = res.workspaceSize;
      p->pinned = 1;
    }
  } else {
    rc = plan_heuristic(k->dev, k, p->desc, p->la, p->lb, p->lc, 0, 0, k->m, &p->algo, &p->ws, e);
  }
  if (rc) {
    plan_destroy(p);
    return rc;
  }
  int32_t id = -1, splitk = 1;
  size_t wr = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&p->algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &wr);
  cublasLtMatmulAlgoConfigGetAttribute(&p->algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &wr);
  p->algo_id = id, p->splitk = splitk;
  return 0;
}

/* The cached plan for key k (built on first use). */
static int plan_get(const gemm_key *k, gemm_plan **out, rl_err *e) {
  uint64_t h = key_hash(k);
  gemm_plan *tab = gemm_G.plans[k->dev]; /* the key's device's table (gemm_dev checked the index) */
  for (int probe = 0; probe < GEMM_PLAN_SLOTS; probe++) {
    gemm_plan *p = &tab[(h + (uint64_t)probe) & (GEMM_PLAN_SLOTS - 1)];
    if (!p->used) break;
    if (!memcmp(&p->key, k, sizeof *k)) return *out = p, 0;
  }
  if (gemm_G.n_plans[k->dev] >= GEMM_PLAN_SLOTS * 3 / 4) { /* many shapes: start over (pins are kept) */
    for (int i = 0; i < GEMM_PLAN_SLOTS; i++) plan_destroy(&tab[i]);
    gemm_G.n_plans[k->dev] = 0;
  }
  gemm_plan *p = &tab[h & (GEMM_PLAN_SLOTS - 1)];
  for (int probe = 1; p->used; probe++) p = &tab[(h + (uint64_t)probe) & (GEMM_PLAN_SLOTS - 1)];
  int rc = plan_build(p, k, e);
  if (rc) return rc;
  gemm_G.n_plans[k->dev]++;
  return *out = p, 0;
}

/* Run plan p: C = alpha·op(A)op(B) + beta·C with our operands a, b (scales sa, sb). */
static int plan_run(gemm_plan *p, const void *alpha, const void *beta, const void *a, const void *b,
                    void *c, const void *sa, const void *sb, cudaStream_t s, rl_err *e) {
  int dev = p->key.dev;
  /* cuBLASLt A is our B (the weight), B is our A (the activation) */
  if (sb && lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sb, sizeof sb), "set A_SCALE_POINTER", e))
    return RL_EXIT_FAIL;
  if (sa && lt_ok(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sa, sizeof sa), "set B_SCALE_POINTER", e))
    return RL_EXIT_FAIL;
  cublasStatus_t st = cublasLtMatmul(gemm_G.lt[dev], p->desc, alpha, b, p->la, a, p->lb, beta, c, p->lc,
                                     c, p->lc, &p->algo, gemm_G.ws[dev], p->ws, s);
  if (st != CUBLAS_STATUS_SUCCESS)
    return rl_errf(e, RL_EXIT_FAIL, "gemm: cublasLtMatmul (%s, m=%lld n=%lld k=%lld) failed: %s",
                   kind_name(p->key.kind), (long long)p->key.m, (long long)p->key.n,
                   (long long)p->key.k, cublasLtGetStatusName(st));
  return 0;
}

/* Report what ran (gemm_info) from the plan used. */
static void info_from_plan(gemm_info *info, const gemm_plan *p, gemm_path path) {
  if (!info) return;
  info->path = path;
  info->padded_m = (int)p->key.m;
  info->pinned = p->pinned;
  info->algo_id = p->algo_id;
  info->splitk = p->splitk;
}

/* A zero-padded key (compared bytewise). */
static gemm_key key_make(int dev, int kind, int64_t m, int64_t n, int64_t k, int ta, int tb) {
  gemm_key key;
  memset(&key, 0, sizeof key);
  key.dev = dev, key.kind = kind, key.m = m, key.n = n, key.k = k, key.ta = ta, key.tb = tb;
  return key;
}

/* ---------------------------------------------------------------- BF16 (backward) */

extern "C" int gemm_bf16_cuda(const gemm_bf16_args *g, gemm_info *info, rl_err *e) {
  if (info) *info = gemm_info{GEMM_PATH_NONE, 0, 0, -1, 1};
  int rc = gemm_bf16_check(g, e);
  if (rc) return rc;
  if (g->m == 0 || g->n == 0) return 0;
  int dev;
  if ((rc = gemm_dev(&dev, e))) return rc;
  cudaStream_t s = gemm_stream(g->stream);
  if (g->k == 0) { /* an empty sum: C = beta·C */
    if (g->beta == 1.0f) return 0;
    if (g->beta != 0.0f)
      return rl_errf(e, RL_EXIT_USAGE, "gemm_bf16: k = 0 with beta = %g is not supported", (double)g->beta);
    return cu_ok(cudaMemsetAsync(g->c, 0, (size_t)(g->m * g->n) * (g->c_f32 ? 4 : 2), s),
                 "cudaMemsetAsync", e) ? RL_EXIT_FAIL : 0;
  }
  gemm_key key = key_make(dev, GK_BF16, g->m, g->n, g->k, g->trans_a, g->trans_b);
  key.out_f32 = g->c_f32;
  key.accumulate = g->beta != 0.0f;
  gemm_plan *p;
  if ((rc = plan_get(&key, &p, e))) return rc;
  const float one = 1.0f, beta = g->beta;
  if ((rc = plan_run(p, &one, &beta, g->a, g->b, g->c, NULL, NULL, s, e))) return rc;
  info_from_plan(info, p, GEMM_PATH_BF16);
  return 0;
}

/* ---------------------------------------------------------------- quantized forward */

/* fp8-block shape cuBLASLt refuses (K % 16 or N % 8): both operands
 * dequantized to FP32 (the reference's values), FP32 GEMM, then BF16. */
static int gemm_fp8_dequant_f32(int dev, void *y, const qtensor *x, const qtensor *w, const gemm_opts *o,
                                gemm_info *info, rl_err *e) {
  int64_t M = x->rows, N = w->rows, K = x->cols;
  cudaStream_t s = gemm_stream(o->stream);
  float *xd = (float *)gemm_scratch(dev, GS_XD, (size_t)(M * K) * 4, e);
  float *wd = xd ? (float *)gemm_scratch(dev, GS_WD, (size_t)(N * K) * 4, e) : NULL;
  float *yd = o->out_f32 ? (float *)y : wd ? (float *)gemm_scratch(dev, GS_Y, (size_t)(M * N) * 4, e) : NULL;
  if (!yd) return RL_EXIT_FAIL;
  gemm_dequant_fp8_kernel<<<gemm_grid(M * K), 256, 0, s>>>((const uint8_t *)x->data, (const float *)x->scales,
                                                          M, K, 1, x->layout, x->scale_ld, xd);
  if (launch_ok("gemm_dequant_fp8_kernel (x)", e)) return RL_EXIT_FAIL;
  gemm_dequant_fp8_kernel<<<gemm_grid(N * K), 256, 0, s>>>((const uint8_t *)w->data, (const float *)w->scales,
                                                          N, K, 128, w->layout, 0, wd);
  if (launch_ok("gemm_dequant_fp8_kernel (w)", e)) return RL_EXIT_FAIL;
  gemm_key key = key_make(dev, GK_F32, M, N, K, 0, 1);
  key.out_f32 = 1;
  key.pin = o->pin_algo;
  gemm_plan *p;
  int rc = plan_get(&key, &p, e);
  const float one = 1.0f, zero = 0.0f;
  if (!rc) rc = plan_run(p, &one, &zero, xd, wd, yd, NULL, NULL, s, e);
  if (rc) return rc;
  if (!o->out_f32) {
    gemm_f32_to_bf16_kernel<<<gemm_grid(M * N), 256, 0, s>>>(yd, (uint16_t *)y, M * N);
    if (launch_ok("gemm_f32_to_bf16_kernel", e)) return RL_EXIT_FAIL;
  }
  info_from_plan(info, p, GEMM_PATH_FP8_DEQUANT_F32);
  return 0;
}

/* Native block-scaled FP8 (Hopper): scales brought into cuBLASLt's layouts and
 * the token dimension padded to a multiple of 8 when the caller did not. */
static int gemm_fp8_native(int dev, void *y, const qtensor *x, const qtensor *w, const gemm_opts *o,
                           gemm_info *info, rl_err *e) {
  int64_t M = x->rows, N = w->rows, K = x->cols, kb = quant_cdiv(K, 128), nb = quant_cdiv(N, 128);
  int64_t mp = quant_roundup(M, 8);
  cudaStream_t s = gemm_stream(o->stream);
  size_t ysz = o->out_f32 ? 4 : 2;
  const void *ws = w->scales, *xs = x->scales, *xq = x->data;
  if (w->layout == QLAYOUT_ROWMAJOR) {
    float *d = (float *)gemm_scratch(dev, GS_WS, (size_t)(nb * quant_roundup(kb, 4)) * 4, e);
    if (!d || quant_layout_fp8_weight_scales_to_cublaslt_cuda((const float *)w->scales, nb, kb, d, o->stream, e))
      return RL_EXIT_FAIL;
    ws = d;
  }
  if (mp != M) { /* zero rows after the last token */
    uint8_t *d = (uint8_t *)gemm_scratch(dev, GS_XQ, (size_t)(mp * K), e);
    if (!d || cu_ok(cudaMemcpyAsync(d, x->data, (size_t)(M * K), cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync (pad x)", e) ||
        cu_ok(cudaMemsetAsync(d + M * K, 0, (size_t)((mp - M) * K), s), "cudaMemsetAsync (pad x)", e))
      return RL_EXIT_FAIL;
    xq = d;
  }
  if (x->layout == QLAYOUT_ROWMAJOR) {
    float *d = (float *)gemm_scratch(dev, GS_XS, (size_t)(kb * mp) * 4, e);
    if (!d || quant_layout_fp8_act_scales_to_cublaslt_cuda((const float *)x->scales, M, kb, mp, d, o->stream, e))
      return RL_EXIT_FAIL;
    xs = d;
  } else if (x->scale_ld != mp) { /* HOPPER_ACT with another leading dimension */
    float *d = (float *)gemm_scratch(dev, GS_XS, (size_t)(kb * mp) * 4, e);
    if (!d || cu_ok(cudaMemset2DAsync(d, (size_t)mp * 4, 0, (size_t)mp * 4, (size_t)kb, s), "cudaMemset2DAsync", e) ||
        cu_ok(cudaMemcpy2DAsync(d, (size_t)mp * 4, x->scales, (size_t)x->scale_ld * 4, (size_t)M * 4, (size_t)kb,
                                cudaMemcpyDeviceToDevice, s), "cudaMemcpy2DAsync (x scales)", e))
      return RL_EXIT_FAIL;
    xs = d;
  }
  void *yd = y;
  if (mp != M && !(yd = gemm_scratch(dev, GS_Y, (size_t)(mp * N) * ysz, e))) return RL_EXIT_FAIL;
  gemm_key key = key_make(dev, GK_FP8_BLOCK, mp, N, K, 0, 1);
  key.out_f32 = o->out_f32;
  key.pin = o->pin_algo;
  gemm_plan *p;
  int rc = plan_get(&key, &p, e);
  const float one = 1.0f, zero = 0.0f;
  if (!rc) rc = plan_run(p, &one, &zero, xq, w->data, yd, xs, ws, s, e);
  if (rc) return rc;
  if (yd != y && cu_ok(cudaMemcpyAsync(y, yd, (size_t)(M * N) * ysz, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync (unpad y)", e))
    return RL_EXIT_FAIL;
  info_from_plan(info, p, GEMM_PATH_FP8_BLOCK);
  return 0;
}

/* Hopper, policy emulate: MXFP8/NVFP4 operands dequantized to BF16 exactly
 * (NVFP4 without S_dec: E2M1 × E4M3 needs ≤ 6 significant bits), BF16 GEMM
 * with FP32 accumulation, NVFP4's S_dec(x)·S_dec(w) as a device-side alpha. */
static int gemm_emulated(int dev, void *y, const qtensor *x, const qtensor *w, const gemm_opts *o,
                         gemm_info *info, rl_err *e) {
  int64_t M = x->rows, N = w->rows, K = x->cols;
  if (x->layout != QLAYOUT_ROWMAJOR || w->layout != QLAYOUT_ROWMAJOR)
    return rl_errf(e, RL_EXIT_USAGE,
                   "gemm: the %s emulation reads ROWMAJOR scales, but %s has swizzled (Blackwell) "
                   "scales; quantize it with ROWMAJOR scales on Hopper",
                   qtensor_format_name(x->fmt), x->layout != QLAYOUT_ROWMAJOR ? "x" : "w");
  cudaStream_t s = gemm_stream(o->stream);
  uint16_t *xd = (uint16_t *)gemm_scratch(dev, GS_XD, (size_t)(M * K) * 2, e);
  uint16_t *wd = xd ? (uint16_t *)gemm_scratch(dev, GS_WD, (size_t)(N * K) * 2, e) : NULL;
  if (!wd) return RL_EXIT_FAIL;
  int is4 = x->fmt == QFMT_NVFP4;
  const float *one_dev = gemm_G.consts[dev];
  rl_err_clear(e);
  int qs = is4 ? dequant_nvfp4_cuda((const uint8_t *)x->data, (const uint8_t *)x->scales, one_dev, M, K, NULL, xd, o->stream, e)
               : dequant_mxfp8_cuda((const uint8_t *)x->data, (const uint8_t *)x->scales, M, K, NULL, xd, o->stream, e);
  if (!qs)
    qs = is4 ? dequant_nvfp4_cuda((const uint8_t *)w->data, (const uint8_t *)w->scales, one_dev, N, K, NULL, wd, o->stream, e)
             : dequant_mxfp8_cuda((const uint8_t *)w->data, (const uint8_t *)w->scales, N, K, NULL, wd, o->stream, e);
  if (qs) {
    if (e && e->code) return rl_err_prefix(e, "gemm (emulated %s): ", qtensor_format_name(x->fmt));
    return quant_status_err(qs, NULL, "gemm: dequantizing for the emulation", K, e);
  }
  gemm_key key = key_make(dev, GK_BF16, M, N, K, 0, 1);
  key.out_f32 = o->out_f32;
  key.pin = o->pin_algo;
  key.alpha_dev = is4;
  gemm_plan *p;
  int rc = plan_get(&key, &p, e);
  if (rc) return rc;
  const float one = 1.0f, zero = 0.0f;
  if (is4) {
    gemm_alpha_kernel<<<1, 1, 0, s>>>(x->d_s_dec, w->d_s_dec, gemm_G.consts[dev] + 2);
    if (launch_ok("gemm_alpha_kernel", e)) return RL_EXIT_FAIL;
    rc = plan_run(p, gemm_G.consts[dev] + 2, gemm_G.consts[dev] + 1, xd, wd, y, NULL, NULL, s, e);
  } else {
    rc = plan_run(p, &one, &zero, xd, wd, y, NULL, NULL, s, e);
  }
  if (rc) return rc;
  info_from_plan(info, p, GEMM_PATH_EMULATED);
  return 0;
}

/* Blackwell (sm_100+): native MXFP8 (VEC32_UE8M0) / NVFP4 (VEC16_UE4M3) with
 * scales in the swizzled 128×4 layout. Compiled, but never run on our Hopper
 * machine: untested. */
static int gemm_mx_native(int dev, void *y, const qtensor *x, const qtensor *w, const gemm_opts *o,
                          gemm_info *info, rl_err *e) {
  int64_t M = x->rows, N = w->rows, K = x->cols;
  int is4 = x->fmt == QFMT_NVFP4;
  int64_t sc = quant_cdiv(K, is4 ? 16 : 32);
  const void *xs = x->scales, *ws = w->scales;
  if (x->layout == QLAYOUT_ROWMAJOR) {
    uint8_t *d = (uint8_t *)gemm_scratch(dev, GS_XS, quant_layout_swizzle_bytes(M, sc), e);
    if (!d || quant_layout_scales_to_swizzled_cuda((const uint8_t *)x->scales, M, sc, d, o->stream, e)) return RL_EXIT_FAIL;
    xs = d;
  }
  if (w->layout == QLAYOUT_ROWMAJOR) {
    uint8_t *d = (uint8_t *)gemm_scratch(dev, GS_WS, quant_layout_swizzle_bytes(N, sc), e);
    if (!d || quant_layout_scales_to_swizzled_cuda((const uint8_t *)w->scales, N, sc, d, o->stream, e)) return RL_EXIT_FAIL;
    ws = d;
  }
  gemm_key key = key_make(dev, is4 ? GK_NVFP4 : GK_MXFP8, M, N, K, 0, 1);
  key.out_f32 = o->out_f32;
  key.pin = o->pin_algo;
  key.alpha_dev = is4;
  gemm_plan *p;
  int rc = plan_get(&key, &p, e);
  if (rc) return rc;
  cudaStream_t s = gemm_stream(o->stream);
  const float one = 1.0f, zero = 0.0f;
  if (is4) {
    gemm_alpha_kernel<<<1, 1, 0, s>>>(x->d_s_dec, w->d_s_dec, gemm_G.consts[dev] + 2);
    if (launch_ok("gemm_alpha_kernel", e)) return RL_EXIT_FAIL;
    rc = plan_run(p, gemm_G.consts[dev] + 2, gemm_G.consts[dev] + 1, x->data, w->data, y, xs, ws, s, e);
  } else {
    rc = plan_run(p, &one, &zero, x->data, w->data, y, xs, ws, s, e);
  }
  if (rc) return rc;
  info_from_plan(info, p, is4 ? GEMM_PATH_NVFP4 : GEMM_PATH_MXFP8);
  return 0;
}

extern "C" int gemm_q_cuda(void *y, const qtensor *x, const qtensor *w, const gemm_opts *opts,
                           gemm_info *info, rl_err *e) {
  if (info) *info = gemm_info{GEMM_PATH_NONE, 0, 0, -1, 1};
  int rc = gemm_q_check(x, w, e);
  if (rc) return rc;
  if (!x->on_device)
    return rl_errf(e, RL_EXIT_USAGE, "gemm_q_cuda: operands are in host memory; use gemm_q_cpu");
  gemm_opts o;
  memset(&o, 0, sizeof o);
  if (opts) o = *opts;
  int64_t M = x->rows, N = w->rows, K = x->cols;
  if (M && N && !y) return rl_errf(e, RL_EXIT_USAGE, "gemm_q_cuda: y is NULL");
  int dev;
  if ((rc = gemm_dev(&dev, e))) return rc;
  if (M == 0 || N == 0) return 0;
  cudaStream_t s = gemm_stream(o.stream);
  if (K == 0)
    return cu_ok(cudaMemsetAsync(y, 0, (size_t)(M * N) * (o.out_f32 ? 4 : 2), s), "cudaMemsetAsync", e) ? RL_EXIT_FAIL : 0;
  switch (x->fmt) {
    case QFMT_BF16: {
      gemm_key key = key_make(dev, GK_BF16, M, N, K, 0, 1);
      key.out_f32 = o.out_f32;
      key.pin = o.pin_algo;
      gemm_plan *p;
      const float one = 1.0f, zero = 0.0f;
      if ((rc = plan_get(&key, &p, e)) || (rc = plan_run(p, &one, &zero, x->data, w->data, y, NULL, NULL, s, e)))
        return rc;
      info_from_plan(info, p, GEMM_PATH_BF16);
      return 0;
    }
    case QFMT_FP8_BLOCK:
      if (gemm_G.cc_major[dev] < 9)
        return rl_errf(e, RL_EXIT_HARDWARE, "gemm: fp8-block GEMMs need Hopper or newer (sm_90+); this GPU is sm_%d%d",
                       gemm_G.cc_major[dev], gemm_G.cc_minor[dev]);
      if (K % 16 || N % 8) return gemm_fp8_dequant_f32(dev, y, x, w, &o, info, e);
      return gemm_fp8_native(dev, y, x, w, &o, info, e);
    case QFMT_MXFP8:
    case QFMT_NVFP4:
      if (gemm_G.cc_major[dev] >= 10) return gemm_mx_native(dev, y, x, w, &o, info, e);
      if (o.emulate) return gemm_emulated(dev, y, x, w, &o, info, e);
      return rl_errf(e, RL_EXIT_HARDWARE,
                     "gemm: %s GEMMs are native only on Blackwell (sm_100+); this GPU is sm_%d%d. "
                     "Set emulate: true in the precision section for the exact emulation "
                     "(quantize → dequantize to BF16 → BF16 GEMM; results are labelled emulated)",
                     qtensor_format_name(x->fmt), gemm_G.cc_major[dev], gemm_G.cc_minor[dev]);
  }
  return rl_errf(e, RL_EXIT_USAGE, "gemm: unknown format %d", (int)x->fmt);
}

/* ---------------------------------------------------------------- cache */

extern "C" int gemm_cuda_device(int *dev, rl_err *e) { return gemm_dev(dev, e); }

extern "C" int gemm_cuda_plan_count(void) {
  int n = 0;
  for (int d = 0; d < DEVICE_MAX_GPUS; d++) n += gemm_G.n_plans[d];
  return n;
}

extern "C" void gemm_cuda_release(void) {
  device_buffers_changed_all(); /* every device's scratch and workspace go */
  gemm_small_release();
  gemm_small_fp8_release();
  /* teardown is best effort: a failing free leaves nothing to undo */
  for (int d = 0; d < DEVICE_MAX_GPUS; d++) {
    for (int i = 0; gemm_G.n_plans[d] && i < GEMM_PLAN_SLOTS; i++) plan_destroy(&gemm_G.plans[d][i]);
    gemm_G.n_plans[d] = 0;
    if (gemm_G.n_pins[d]) memset(gemm_G.pins[d], 0, sizeof gemm_G.pins[d]);
    gemm_G.n_pins[d] = 0;
    for (int s = 0; s < GS_COUNT; s++)
      if (gemm_G.scr[d][s]) cudaFree(gemm_G.scr[d][s]), gemm_G.scr[d][s] = NULL, gemm_G.scr_cap[d][s] = 0;
    if (gemm_G.ws[d]) cudaFree(gemm_G.ws[d]), gemm_G.ws[d] = NULL;
    if (gemm_G.consts[d]) cudaFree(gemm_G.consts[d]), gemm_G.consts[d] = NULL;
    if (gemm_G.lt[d]) cublasLtDestroy(gemm_G.lt[d]), gemm_G.lt[d] = NULL;
  }
}
