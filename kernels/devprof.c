/* devprof.c — see devprof.h. */
#include "kernels/devprof.h"

#include "kernels/common.h" /* rl_env_bool */

#include <stdlib.h>
#include <string.h>

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#define DP_MAX_EV 16384
static const char *const dp_name[DP_N] = {"other",        "fwd gemm",   "fwd bf16->f32", "fwd norms",
                                          "fwd attention", "fwd swiglu+adds", "fwd logprob", "bwd gemm",
                                          "bwd norms",    "bwd attention", "bwd swiglu+adds", "bwd logprob",
                                          "bwd f32<->bf16"};
static _Thread_local struct { /* per host thread: each drives its own device's stream */
  int on; /* -1: not asked yet */
  int cur, made, warned;
  cudaEvent_t ev[DP_MAX_EV];
  signed char kind[DP_MAX_EV];
  double t[DP_N];
  long long steps;
} dp = {.on = -1};

int devprof_on(void) {
  if (dp.on < 0) {
    dp.on = rl_env_bool("RLRUN_MODEL_PROFILE", 0);
  }
  return dp.on;
}

/* Record the next event; kind k (−1: the step's start). */
static void dp_record(int k) {
  if (dp.cur >= DP_MAX_EV) {
    if (!dp.warned++) fprintf(stderr, "devprof: more than %d marks in a step; the rest are not timed\n", DP_MAX_EV);
    return;
  }
  while (dp.made <= dp.cur)
    if (cudaEventCreate(&dp.ev[dp.made++]) != cudaSuccess) {
      cudaGetLastError(), dp.on = 0, dp.made--;
      fprintf(stderr, "devprof: cudaEventCreate failed; profile off\n");
      return;
    }
  dp.kind[dp.cur] = (signed char)k;
  if (cudaEventRecord(dp.ev[dp.cur], cudaStreamPerThread) != cudaSuccess) {
    cudaGetLastError(), dp.on = 0;
    fprintf(stderr, "devprof: cudaEventRecord failed; profile off\n");
    return;
  }
  dp.cur++;
}

void devprof_mark(devprof_phase k) {
  if (!devprof_on()) return;
  if (dp.cur == 0) dp_record(-1); /* the step's start */
  if (dp.on) dp_record((int)k);
}

void devprof_step(void) {
  if (!devprof_on() || dp.cur == 0) return;
  cudaError_t st = cudaEventSynchronize(dp.ev[dp.cur - 1]);
  for (int i = 1; st == cudaSuccess && i < dp.cur; i++) {
    float ms = 0;
    if ((st = cudaEventElapsedTime(&ms, dp.ev[i - 1], dp.ev[i])) == cudaSuccess && dp.kind[i] >= 0)
      dp.t[(int)dp.kind[i]] += ms;
  }
  if (st != cudaSuccess) {
    cudaGetLastError(), dp.on = 0;
    fprintf(stderr, "devprof: %s; profile off\n", cudaGetErrorString(st));
    return;
  }
  dp.cur = 0, dp.steps++;
}

void devprof_report(FILE *f) {
  if (dp.on <= 0 || !dp.steps) return;
  double tot = 0;
  for (int k = 0; k < DP_N; k++) tot += dp.t[k];
  fprintf(f, "device time by phase (%lld steps, device events): ms per step\n", dp.steps);
  for (int k = 0; k < DP_N; k++)
    if (dp.t[k] > 0) fprintf(f, "  %-16s %9.3f  %5.1f%%\n", dp_name[k], dp.t[k] / dp.steps, 100 * dp.t[k] / tot);
  fprintf(f, "  %-16s %9.3f\n", "total", tot / dp.steps);
  memset(dp.t, 0, sizeof dp.t), dp.steps = 0;
}

void devprof_reset(void) { memset(dp.t, 0, sizeof dp.t), dp.steps = 0; }
void devprof_thread_off(void) { dp.on = 0; }

#else
int devprof_on(void) { return 0; }
void devprof_reset(void) {}
void devprof_thread_off(void) {}
void devprof_mark(devprof_phase k) { (void)k; }
void devprof_step(void) {}
void devprof_report(FILE *f) { (void)f; }
#endif
