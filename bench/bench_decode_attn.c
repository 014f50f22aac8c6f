/* bench_decode_attn.c — the rollout engine's decode attention
 * (rck_decode_attention) at Qwen3-0.6B's shape: 16 query / 8 KV heads,
 * head_dim 128, a 320-position cache (64-token prompts + 256 new tokens, the
 * bench_rollout setting), every row at the same length, 28 layers (each its
 * own cache, so nothing stays in L2) replayed as one CUDA graph. Reports µs a
 * layer and the K/V bytes read per second against the device copy bandwidth
 * measured in this run (bytes read + written per second: the rate a kernel
 * that only reads can at best stream at), for each kernel / tuning:
 *
 *   two-phase       rck_attn_split_kernel (RLRUN_DECODE_ATTN=split)
 *   staged p/r      the staged kernel, p splits a CTA (auto: as many as one
 *                   wave allows; a CTA with all of a row's splits also
 *                   combines), r ring slots; "p 1 r 2" is the one-split-a-CTA
 *                   kernel of before 2026-12-05's fifth session (but on the
 *                   head-major cache); "pdl": each layer's kernel a
 *                   programmatic dependent of the one before (its older cache
 *                   rows copied before griddepcontrol.wait); "tma": the ring
 *                   filled by bulk copies (one a slot). The defaults: p auto
 *                   r 2 pdl tma
 *
 *   build/bench_decode_attn [--quick]   a markdown table
 *   build/bench_decode_attn --one BATCH CONTEXT
 *                                       that case alone, the default tuning (the
 *                                       environment's knobs), 3 replays: for a
 *                                       profiler; built with -DRCK_TRACE, also the
 *                                       kernel's per-CTA timeline (attn_trace.h) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "stages/rollout_cuda_kern.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#include "bench/attn_trace.h" /* -DRCK_TRACE builds: --one reports the last launch's per-CTA timeline */
#include "bench/bench_cuda.h"


enum { NQ = 16, NKV = 8, HD = 128, MAXLEN = 320, LAYERS = 28, KVD = NKV * HD };

static int cmp_f(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  const int quick = argc > 1 && !strcmp(argv[1], "--quick"), one = argc > 3 && !strcmp(argv[1], "--one");
  const int reps = one ? 3 : quick ? 5 : 20, one_b = one ? atoi(argv[2]) : 0, one_l = one ? atoi(argv[3]) : 0;
  if (one && (one_b < 1 || one_b > 256 || one_l < 1 || one_l > MAXLEN)) {
    fprintf(stderr, "bench_decode_attn: --one BATCH CONTEXT needs 1 <= BATCH <= 256, 1 <= CONTEXT <= %d\n", MAXLEN);
    return 2;
  }
  const double bw = bench_copy_bw();
  const int batches[] = {64, 256}, lens[] = {64, 192, 320};
  /* mode, per, ring, pdl, tma, ef */
  const int cfg[][6] = {{0, 0, 0, 0, 0, 0}, {1, 1, 2, 0, 0, 0}, {1, 0, 2, 0, 0, 0}, {1, 0, 3, 0, 0, 0},
                        {1, 0, 2, 1, 0, 0}, {1, 0, 2, 0, 1, 0}, {1, 0, 2, 1, 1, 0}, {1, 0, 3, 1, 1, 1},
                        {1, 0, 2, 1, 1, 1}};
  const int ncfg = sizeof cfg / sizeof *cfg;
  const size_t layer = (size_t)256 * MAXLEN * KVD; /* elements of one layer's K (or V) cache */
  uint16_t *kc, *vc;
  float *q, *out, *pacc, *pml;
  uint16_t *out_b;
  int32_t *slot, *len;
  CU(cudaMalloc((void **)&kc, layer * LAYERS * 2));
  CU(cudaMalloc((void **)&vc, layer * LAYERS * 2));
  CU(cudaMemset(kc, 0x3c, layer * LAYERS * 2)); /* BF16 ≈ 0.0115: finite scores */
  CU(cudaMemset(vc, 0x3c, layer * LAYERS * 2));
  CU(cudaMalloc((void **)&q, (size_t)256 * NQ * HD * 4));
  CU(cudaMemset(q, 0, (size_t)256 * NQ * HD * 4));
  CU(cudaMalloc((void **)&out, (size_t)256 * NQ * HD * 4));
  CU(cudaMalloc((void **)&out_b, (size_t)256 * NQ * HD * 2));
  CU(cudaMalloc((void **)&pacc, (size_t)256 * NQ * 8 * HD * 4)); /* n_split ≤ 320 / 64 = 5 (≤ 8) */
  CU(cudaMalloc((void **)&pml, (size_t)256 * NQ * 8 * 8));
  CU(cudaMalloc((void **)&slot, 256 * 4));
  CU(cudaMalloc((void **)&len, 256 * 4));
  int32_t hs[256];
  for (int i = 0; i < 256; i++) hs[i] = (i * 37) % 256; /* rows in shuffled slots */
  CU(cudaMemcpy(slot, hs, sizeof hs, cudaMemcpyHostToDevice));
  cudaStream_t st;
  CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CU(cudaEventCreate(&e0));
  CU(cudaEventCreate(&e1));
  printf("bench_decode_attn: Qwen3-0.6B attention (16 q / 8 kv heads, head_dim 128), cache %d, %d layers a graph, "
         "copy bandwidth %.0f GB/s\n\n",
         MAXLEN, LAYERS, bw / 1e9);
  printf("| batch | context | kernel | µs a layer | K/V GB/s | %% of copy |\n|---|---|---|---|---|---|\n");
  for (size_t bi = 0; bi < (one ? 1u : 2u); bi++)
    for (size_t li = 0; li < (one ? 1u : 3u); li++) {
      const int n = one ? one_b : batches[bi], L = one ? one_l : lens[li];
      int32_t hl[256];
      for (int i = 0; i < 256; i++) hl[i] = L;
      CU(cudaMemcpy(len, hl, sizeof hl, cudaMemcpyHostToDevice));
      for (int c = one ? ncfg - 1 : 0; c < ncfg; c++) { /* --one: the last row, knobs untouched */
        rck_decode_attn_mode(cfg[c][0]);
        if (cfg[c][0] && !one) rck_decode_attn_tune(cfg[c][1], cfg[c][2], cfg[c][3], cfg[c][4], cfg[c][5]);
        const int ns = rck_n_split(MAXLEN, NQ / NKV);
        rl_err e = {0};
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CU(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
        for (int l = 0; l < LAYERS; l++)
          if (rck_decode_attention(out, out_b, q, kc + l * layer, vc + l * layer, slot, len, n, NQ, NKV, HD, MAXLEN, ns,
                                   pacc, pml, st, &e)) {
            fprintf(stderr, "bench_decode_attn: %s\n", e.msg);
            return 1;
          }
        CU(cudaStreamEndCapture(st, &g));
        CU(cudaGraphInstantiate(&ge, g, 0));
        CU(cudaGraphLaunch(ge, st));
        CU(cudaStreamSynchronize(st));
        float t[20];
        for (int r = 0; r < reps; r++) {
          CU(cudaEventRecord(e0, st));
          CU(cudaGraphLaunch(ge, st));
          CU(cudaEventRecord(e1, st));
          CU(cudaEventSynchronize(e1));
          CU(cudaEventElapsedTime(&t[r], e0, e1));
        }
        qsort(t, reps, sizeof *t, cmp_f);
        const double us = t[reps / 2] * 1e3 / LAYERS, bytes = 2.0 * n * L * KVD * 2, gbs = bytes / (us * 1e-6);
        char name[48];
        if (one) snprintf(name, sizeof name, "staged (the environment's tuning)");
        else if (!cfg[c][0]) snprintf(name, sizeof name, "two-phase");
        else if (cfg[c][1]) snprintf(name, sizeof name, "staged p %d r %d", cfg[c][1], cfg[c][2]);
        else
          snprintf(name, sizeof name, "staged p auto r %d%s%s%s", cfg[c][2], cfg[c][3] ? " pdl" : "", cfg[c][4] ? " tma" : "",
                   cfg[c][5] ? " ef" : "");
        printf("| %d | %d | %s | %.2f | %.0f | %.1f %% |\n", n, L, name, us, gbs / 1e9, 100 * gbs / bw);
#ifdef RCK_TRACE
        if (one) { /* one more replay, its last layer's launch traced */
          CU(rck_trace_clear() ? cudaErrorUnknown : cudaSuccess);
          CU(cudaGraphLaunch(ge, st));
          CU(cudaStreamSynchronize(st));
          attn_trace_report("(the last layer of a replay)", (size_t)n * NKV * ns);
        }
#endif
        cudaGraphExecDestroy(ge), cudaGraphDestroy(g);
      }
    }
  return 0;
}
#else
int main(void) {
  printf("bench_decode_attn: built without CUDA\n");
  return 0;
}
#endif
