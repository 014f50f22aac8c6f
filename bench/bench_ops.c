/* bench_ops.c — the CUDA non-GEMM operators at Qwen3-0.6B training shapes
 * (16 × 512 tokens, hidden 1024, 16 q / 8 kv heads, head_dim 128, FFN 3072,
 * vocab 151936; router at Qwen3-30B-A3B's 128 experts, top-8), next to a
 * device-to-device cudaMemcpy measured in the same run.
 *
 *   effective GB/s = bytes a perfect kernel moves (each input read once, each
 *                    output written once) / median time;  % of copy
 *   attention      = TFLOP/s of the causal FLOPs: forward 4·D·Σ L(L+1)/2 per
 *                    q head, backward 2.5× that (the usual convention; our
 *                    backward recomputes S twice, so it executes more);
 *                    rows "simt" = FP32 SIMT kernels, "tc" = BF16 tensor
 *                    cores (ops_attention_set_impl), each tc row followed
 *                    by its speed-up over simt and its % of the BF16 peak
 * Times are medians of NREP runs after NWARM warm-ups, with CUDA events.
 * `bench_ops --quick` times fewer repetitions. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/ops.h"

#if RLRUN_CUDA
#include <cuda_runtime.h>

#include "bench/bench_cuda.h"

enum { NSEQ = 16, SEQ = 512, T = NSEQ * SEQ, HID = 1024, HQ = 16, HKV = 8, HD = 128, FFN = 3072, VOCAB = 151936,
       NEXP = 128, TOPK = 8 };

/* The buffers and settings of the run. */
static struct {
  int nrep, nwarm;
  float *a, *b, *c, *d, *w, *rstd, *big, *big2, *lse, *lp, *ent, *probs, *rw;
  uint16_t *bf, *tab;
  int32_t *tok, *pos, *off, *ids, *off_long;
  float *q, *k, *v, *o, *dq, *dk, *dv, *alse;
  double copy_gbs;
} B;

/* One benchmarked operation. */
typedef struct {
  const char *name;
  double bytes; /* ideal bytes moved; 0: a FLOP-counted kernel */
  double flops;
  int id;
} bench_op;

enum { OP_COPY, OP_EMB_F, OP_EMB_B, OP_RESNORM_F, OP_NORM_B, OP_QK_F, OP_QK_B, OP_SWIGLU_F, OP_SWIGLU_B, OP_ROUTER_F,
       OP_ROUTER_B, OP_LSM_F, OP_LSM_B, OP_ATT_F, OP_ATT_B, OP_ATT_F_LONG, OP_ATT_B_LONG, OP_ATT_F_TC, OP_ATT_B_TC,
       OP_ATT_F_LONG_TC, OP_ATT_B_LONG_TC };

/* The H200's dense BF16 tensor-core peak (SXM, TFLOP/s): the limit of the tc rows. */
#define BF16_PEAK_TFLOPS 989.0

/* Enqueue one run of op id. */
static void run_one(int id) {
  rl_err e = {0};
  int rc = 0;
  ops_seqs s = {NSEQ, B.off}, sl = {2, B.off_long};
  ops_attn_shape sh = {T, HQ, HKV, HD};
  ops_attention_set_impl(id >= OP_ATT_F_TC ? OPS_ATTN_TC : OPS_ATTN_SIMT);
  if (id >= OP_ATT_F_TC) id -= OP_ATT_F_TC - OP_ATT_F; /* the same call, tensor-core kernels */
  switch (id) {
    case OP_COPY: CU(cudaMemcpyAsync(B.b, B.a, (size_t)T * FFN * 2 * 4, cudaMemcpyDeviceToDevice, 0)); return;
    case OP_EMB_F: rc = ops_embedding_forward_bf16_cuda(B.a, B.tab, B.tok, T, VOCAB, HID, NULL, &e); break;
    case OP_EMB_B: rc = ops_embedding_backward_cuda(B.big2, B.a, B.tok, T, VOCAB, HID, NULL, &e); break;
    case OP_RESNORM_F:
      rc = ops_residual_rmsnorm_forward_cuda(B.c, B.d, B.bf, B.rstd, B.a, B.b, B.w, T, HID, 1e-6f, NULL, &e);
      break;
    case OP_NORM_B: rc = ops_rmsnorm_backward_cuda(B.d, B.rw, B.a, B.b, B.w, B.rstd, T, HID, NULL, &e); break;
    case OP_QK_F: rc = ops_qk_norm_rope_forward_cuda(B.c, B.rstd, B.a, B.w, B.pos, T, HQ, HD, 1e-6f, 1e6f, NULL, &e); break;
    case OP_QK_B:
      rc = ops_qk_norm_rope_backward_cuda(B.d, B.rw, B.b, B.a, B.w, B.rstd, B.pos, T, HQ, HD, 1e6f, NULL, &e);
      break;
    case OP_SWIGLU_F: rc = ops_swiglu_forward_cuda(B.c, B.bf, B.a, B.a + FFN, T, FFN, 2 * FFN, NULL, &e); break;
    case OP_SWIGLU_B: rc = ops_swiglu_backward_cuda(B.d, B.d + FFN, B.b, B.a, B.a + FFN, T, FFN, 2 * FFN, NULL, &e); break;
    case OP_ROUTER_F:
      rc = ops_router_forward_cuda(B.ids, B.c, B.probs, B.a, T, NEXP, TOPK, 1, OPS_ROUTE_TOPK, NULL, &e);
      break;
    case OP_ROUTER_B: rc = ops_router_backward_cuda(B.d, B.b, B.probs, B.ids, T, NEXP, TOPK, 1, NULL, &e); break;
    case OP_LSM_F: rc = ops_logprob_forward_cuda(B.lp, B.ent, B.lse, B.big, B.tok, T, VOCAB, 1.0f, NULL, &e); break;
    case OP_LSM_B: rc = ops_logprob_backward_cuda(B.big2, B.lp, NULL, B.big, B.lse, B.tok, T, VOCAB, 1.0f, NULL, &e); break;
    case OP_ATT_F: rc = ops_attention_forward_cuda(B.o, NULL, B.alse, B.q, B.k, B.v, &s, SEQ, sh, NULL, &e); break;
    case OP_ATT_B:
      rc = ops_attention_backward_cuda(B.dq, B.dk, B.dv, B.o, B.o, B.alse, B.q, B.k, B.v, &s, SEQ, sh, NULL, &e);
      break;
    case OP_ATT_F_LONG: rc = ops_attention_forward_cuda(B.o, NULL, B.alse, B.q, B.k, B.v, &sl, T / 2, sh, NULL, &e); break;
    case OP_ATT_B_LONG:
      rc = ops_attention_backward_cuda(B.dq, B.dk, B.dv, B.o, B.o, B.alse, B.q, B.k, B.v, &sl, T / 2, sh, NULL, &e);
      break;
  }
  if (rc) {
    fprintf(stderr, "op %d: %s\n", id, e.msg);
    exit(1);
  }
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median seconds of op id. */
static double time_op(int id, int nrep) {
  cudaEvent_t e0, e1;
  CU(cudaEventCreate(&e0));
  CU(cudaEventCreate(&e1));
  for (int i = 0; i < B.nwarm; i++) run_one(id);
  double t[64];
  for (int i = 0; i < nrep; i++) {
    CU(cudaEventRecord(e0, 0));
    run_one(id);
    CU(cudaEventRecord(e1, 0));
    CU(cudaEventSynchronize(e1));
    float ms = 0;
    CU(cudaEventElapsedTime(&ms, e0, e1));
    t[i] = ms * 1e-3;
  }
  CU(cudaEventDestroy(e0));
  CU(cudaEventDestroy(e1));
  qsort(t, nrep, sizeof t[0], cmp_d);
  return t[nrep / 2];
}

static void *dalloc(size_t bytes) {
  void *p = NULL;
  CU(cudaMalloc(&p, bytes));
  return p;
}

/* Fill n floats on the device with values in [-amp, amp) (a 16 MiB random
 * block, repeated). */
static void dfill(float *d, size_t n, float amp) {
  size_t blk = (size_t)1 << 22, m = n < blk ? n : blk;
  float *h = rl_xmalloc(m * 4);
  uint64_t s = 0x9E3779B97F4A7C15ull ^ n;
  for (size_t i = 0; i < m; i++) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    h[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2 - 1) * amp;
  }
  for (size_t o = 0; o < n; o += m) CU(cudaMemcpy(d + o, h, (n - o < m ? n - o : m) * 4, cudaMemcpyHostToDevice));
  free(h);
}

int main(int argc, char **argv) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("bench_ops: no GPU — skipped\n");
    return 0;
  }
  int quick = argc > 1 && !strcmp(argv[1], "--quick");
  B.nrep = quick ? 5 : 21, B.nwarm = quick ? 1 : 3;
  size_t act = (size_t)T * FFN * 2; /* the largest activation: gate_up [T, 2·FFN] */
  B.a = dalloc(act * 4), B.b = dalloc(act * 4), B.c = dalloc(act * 4), B.d = dalloc(act * 4);
  dfill(B.a, act, 3), dfill(B.b, act, 1);
  B.w = dalloc(HID * 4), B.rw = dalloc(HID * 4), B.rstd = dalloc((size_t)T * HQ * 4);
  dfill(B.w, HID, 1.5f);
  CU(cudaMemset(B.rw, 0, HID * 4));
  B.bf = dalloc(act * 2);
  size_t nv = (size_t)T * VOCAB;
  B.big = dalloc(nv * 4), B.big2 = dalloc(nv * 4);
  dfill(B.big, nv, 8);
  CU(cudaMemset(B.big2, 0, nv * 4));
  B.tab = dalloc((size_t)VOCAB * HID * 2);
  CU(cudaMemset(B.tab, 0x3f, (size_t)VOCAB * HID * 2));
  B.lse = dalloc(T * 4), B.lp = dalloc(T * 4), B.ent = dalloc(T * 4);
  B.probs = dalloc((size_t)T * NEXP * 4), B.ids = dalloc((size_t)T * TOPK * 4);
  int32_t *h = rl_xmalloc((size_t)T * 4), off[NSEQ + 1], offl[3] = {0, T / 2, T};
  for (int t = 0; t < T; t++) h[t] = (int32_t)(((uint64_t)t * 2654435761u) % VOCAB);
  B.tok = dalloc(T * 4), B.pos = dalloc(T * 4);
  CU(cudaMemcpy(B.tok, h, T * 4, cudaMemcpyHostToDevice));
  for (int t = 0; t < T; t++) h[t] = t % SEQ;
  CU(cudaMemcpy(B.pos, h, T * 4, cudaMemcpyHostToDevice));
  for (int s = 0; s <= NSEQ; s++) off[s] = s * SEQ;
  B.off = dalloc(sizeof off), B.off_long = dalloc(sizeof offl);
  CU(cudaMemcpy(B.off, off, sizeof off, cudaMemcpyHostToDevice));
  CU(cudaMemcpy(B.off_long, offl, sizeof offl, cudaMemcpyHostToDevice));
  size_t nq = (size_t)T * HQ * HD, nk = (size_t)T * HKV * HD;
  B.q = dalloc(nq * 4), B.k = dalloc(nk * 4), B.v = dalloc(nk * 4), B.o = dalloc(nq * 4), B.alse = dalloc(T * HQ * 4);
  B.dq = dalloc(nq * 4), B.dk = dalloc(nk * 4), B.dv = dalloc(nk * 4);
  dfill(B.q, nq, 2), dfill(B.k, nk, 2), dfill(B.v, nk, 1);
  free(h);

  const double th = (double)T * HID, tq = (double)T * HQ * HD, tf = (double)T * FFN, tv = (double)T * VOCAB;
  const double att_f = 4.0 * HD * HQ * NSEQ * ((double)SEQ * (SEQ + 1) / 2);
  const double att_fl = 4.0 * HD * HQ * 2 * ((double)(T / 2) * (T / 2 + 1) / 2);
  bench_op ops[] = {
      {"cudaMemcpy D2D (ceiling)", (double)act * 4 * 2, 0, OP_COPY},
      {"embedding fwd (BF16 table)", th * (2 + 4), 0, OP_EMB_F},
      {"embedding bwd (scatter-add)", th * (4 + 4 + 4), 0, OP_EMB_B},
      {"residual+rmsnorm fwd +bf16", th * (4 + 4 + 4 + 4 + 2), 0, OP_RESNORM_F},
      {"rmsnorm bwd (dx + dw)", th * (4 + 4 + 4), 0, OP_NORM_B},
      {"qk-norm+rope fwd (q)", tq * (4 + 4), 0, OP_QK_F},
      {"qk-norm+rope bwd (q, dx + dw)", tq * (4 + 4 + 4), 0, OP_QK_B},
      {"swiglu fwd +bf16 (fused gate_up)", tf * (4 + 4 + 4 + 2), 0, OP_SWIGLU_F},
      {"swiglu bwd", tf * (4 + 4 + 4 + 4 + 4), 0, OP_SWIGLU_B},
      {"router fwd top-8 of 128", (double)T * NEXP * 8 + T * TOPK * 8.0, 0, OP_ROUTER_F},
      {"router bwd", (double)T * NEXP * 12 + T * TOPK * 8.0, 0, OP_ROUTER_B},
      {"log-softmax+gather+entropy fwd", tv * 4, 0, OP_LSM_F},
      {"log-softmax bwd (dlogits)", tv * 8, 0, OP_LSM_B},
      {"attention fwd 16x512 simt", 0, att_f, OP_ATT_F},
      {"attention bwd 16x512 simt", 0, 2.5 * att_f, OP_ATT_B},
      {"attention fwd 2x4096 simt", 0, att_fl, OP_ATT_F_LONG},
      {"attention bwd 2x4096 simt", 0, 2.5 * att_fl, OP_ATT_B_LONG},
      {"attention fwd 16x512 tc", 0, att_f, OP_ATT_F_TC},
      {"attention bwd 16x512 tc", 0, 2.5 * att_f, OP_ATT_B_TC},
      {"attention fwd 2x4096 tc", 0, att_fl, OP_ATT_F_LONG_TC},
      {"attention bwd 2x4096 tc", 0, 2.5 * att_fl, OP_ATT_B_LONG_TC},
  };
  double att_t[4] = {0, 0, 0, 0}; /* simt times of OP_ATT_F .. OP_ATT_B_LONG */
  int n = (int)(sizeof ops / sizeof ops[0]);
  printf("bench_ops: Qwen3-0.6B training shapes, T = %d x %d tokens, median of %d\n", NSEQ, SEQ, B.nrep);
  printf("| %-34s | %10s | %10s | %9s | %8s |\n", "kernel", "time us", "GB/s", "% of copy", "TFLOP/s");
  printf("|%s|%s|%s|%s|%s|\n", "------------------------------------", "------------", "------------", "-----------",
         "----------");
  for (int i = 0; i < n; i++) {
    int nrep = ops[i].id == OP_LSM_F || ops[i].id == OP_LSM_B ? (B.nrep < 7 ? B.nrep : 7) : B.nrep;
    double t = time_op(ops[i].id, nrep);
    if (ops[i].bytes > 0) {
      double gbs = ops[i].bytes / t / 1e9;
      if (ops[i].id == OP_COPY) B.copy_gbs = gbs;
      printf("| %-34s | %10.1f | %10.0f | %8.0f%% | %8s |\n", ops[i].name, t * 1e6, gbs, 100 * gbs / B.copy_gbs, "");
    } else {
      printf("| %-34s | %10.1f | %10s | %9s | %8.1f |\n", ops[i].name, t * 1e6, "", "", ops[i].flops / t / 1e12);
      if (ops[i].id < OP_ATT_F_TC) att_t[ops[i].id - OP_ATT_F] = t;
      else
        printf("attention tc: %s %.2fx the simt kernels, %.1f%% of the BF16 peak (%.0f TFLOP/s)\n",
               ops[i].name + strlen("attention "), att_t[ops[i].id - OP_ATT_F_TC] / t,
               100 * ops[i].flops / t / 1e12 / BF16_PEAK_TFLOPS, BF16_PEAK_TFLOPS);
    }
    fflush(stdout);
  }
  ops_attention_set_impl(OPS_ATTN_DEFAULT);
  printf("attention: simt = FP32 SIMT kernels (FP32 FMA ceiling on an H200 ~67 TFLOP/s), tc = BF16 tensor cores "
         "(mma.sync; dense BF16 peak %.0f TFLOP/s)\n", BF16_PEAK_TFLOPS);
  return 0;
}
#else
int main(void) {
  printf("bench_ops: built without CUDA — skipped\n");
  return 0;
}
#endif
