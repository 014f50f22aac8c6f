/* gemm_fp8_probe.c — which block-scaled FP8 cuBLASLt configurations this GPU
 * and cuBLASLt accept (own main; run by tests/gpu/run.sh). One line per
 * variant: heuristic status, candidates, and the status of one cublasLtMatmul
 * with the first candidate. Written to bisect "cuBLASLt has no algorithm" for
 * fp8-block (issue #5): variant "blk/vec ptrs" is what gemm_cuda.cu does now;
 * "blk/vec noptr" is what it did before (scale pointers unset at the query).
 * Information only: exit 0 unless CUDA itself fails. */
#include <stdio.h>
#include <string.h>

#include "kernels/device.h"

#if RLRUN_CUDA
#include <cublasLt.h>
#include <cuda_runtime_api.h>

typedef struct variant {
  const char *name;
  int mode_a, mode_b; /* cuBLASLt A = weight [N][K], B = activation [M][K] */
  int ptrs;           /* scale pointers set before the heuristic query */
  cudaDataType_t d;   /* output type */
  int64_t m;
} variant;

/* Query the heuristic for one variant and run its first candidate. */
static void probe(cublasLtHandle_t lt, const variant *v, int64_t N, int64_t K, void *a, void *b, void *d,
                  void *sa, void *sb, void *ws, size_t wsz) {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN);
  int32_t ma = v->mode_a, mb = v->mode_b;
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &ma, sizeof ma);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mb, sizeof mb);
  if (v->ptrs) {
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb);
  }
  cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, (uint64_t)K, (uint64_t)N, K);
  cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, (uint64_t)K, (uint64_t)v->m, K);
  cublasLtMatrixLayoutCreate(&lc, v->d, (uint64_t)N, (uint64_t)v->m, N);
  cublasLtMatmulPreference_t pref;
  cublasLtMatmulPreferenceCreate(&pref);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz, sizeof wsz);
  cublasLtMatmulHeuristicResult_t res[8];
  int got = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 8, res, &got);
  const char *run = "-";
  if (st == CUBLAS_STATUS_SUCCESS && got > 0) {
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb);
    float one = 1, zero = 0;
    cublasStatus_t rs = cublasLtMatmul(lt, desc, &one, a, la, b, lb, &zero, d, lc, d, lc, &res[0].algo, ws,
                                       res[0].workspaceSize, 0);
    cudaError_t ce = cudaDeviceSynchronize();
    run = rs != CUBLAS_STATUS_SUCCESS ? cublasLtGetStatusName(rs) : ce != cudaSuccess ? cudaGetErrorString(ce) : "ran";
  }
  printf("%-22s m=%-5lld n=%-5lld k=%-5lld heuristic=%-28s candidates=%d matmul=%s\n", v->name,
         (long long)v->m, (long long)N, (long long)K, cublasLtGetStatusName(st), got, run);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(desc);
}

int main(void) {
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    printf("gemm_fp8_probe: skipped: %s\n", di.status);
    return 0;
  }
  printf("gemm_fp8_probe on %s (sm_%d%d), cuBLASLt %zu\n", di.gpus[0].name, di.gpus[0].cc_major,
         di.gpus[0].cc_minor, di.cublaslt);
  const int64_t M = 512, N = 3072, K = 1024;
  const int BLK = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, VEC = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  const variant vs[] = {
      {"blk/vec noptr", BLK, VEC, 0, CUDA_R_16BF, M},  {"blk/vec ptrs", BLK, VEC, 1, CUDA_R_16BF, M},
      {"blk/vec ptrs f32", BLK, VEC, 1, CUDA_R_32F, M}, {"vec/blk ptrs", VEC, BLK, 1, CUDA_R_16BF, M},
      {"vec/vec ptrs", VEC, VEC, 1, CUDA_R_16BF, M},    {"vec/vec noptr", VEC, VEC, 0, CUDA_R_16BF, M},
      {"blk/vec ptrs m=8", BLK, VEC, 1, CUDA_R_16BF, 8}, {"blk/vec ptrs m=7", BLK, VEC, 1, CUDA_R_16BF, 7},
  };
  size_t wsz = (size_t)32 << 20;
  void *a, *b, *d, *sa, *sb, *ws;
  if (cudaMalloc(&a, (size_t)(N * K)) || cudaMalloc(&b, (size_t)(M * K)) || cudaMalloc(&d, (size_t)(M * N) * 4) ||
      cudaMalloc(&sa, (size_t)(N * K)) || cudaMalloc(&sb, (size_t)(M * K)) || cudaMalloc(&ws, wsz)) {
    printf("gemm_fp8_probe: cudaMalloc failed\n");
    return 1;
  }
  cudaMemset(a, 0, (size_t)(N * K)), cudaMemset(b, 0, (size_t)(M * K));
  cudaMemset(sa, 0, (size_t)(N * K)), cudaMemset(sb, 0, (size_t)(M * K));
  cublasLtHandle_t lt;
  if (cublasLtCreate(&lt)) return 1;
  for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) probe(lt, &vs[i], N, K, a, b, d, sa, sb, ws, wsz);
  cublasLtDestroy(lt);
  cudaFree(a), cudaFree(b), cudaFree(d), cudaFree(sa), cudaFree(sb), cudaFree(ws);
  printf("gemm_fp8_probe: done\n");
  return 0;
}
#else
int main(void) {
  printf("gemm_fp8_probe: skipped: built without CUDA\n");
  return 0;
}
#endif
