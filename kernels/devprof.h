/* devprof.h — where a sequence of GPU work spends its device time, by phase,
 * without synchronising around each phase: CUDA events recorded on the calling
 * thread's per-thread default stream, read back once per step. For measuring
 * (bench_model, RLRUN_MODEL_PROFILE=1), not for runs: off, every call is a
 * branch.
 *
 *   devprof_mark(DP_OTHER);        … work …
 *   devprof_mark(DP_FWD_GEMM);     the time since the previous mark was a GEMM
 *   devprof_step();                once per step: wait for the last event, add up
 *   devprof_report(stderr);        ms per step by phase, share of the total
 *
 * One profile per process, single-threaded (the thread that launches the
 * work); eager launches only (not inside a CUDA graph capture). No-ops in a
 * build without CUDA. */
#ifndef RLRUN_DEVPROF_H
#define RLRUN_DEVPROF_H
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum devprof_phase {
  DP_OTHER,       /* whatever ran since the previous mark and has no phase of its own */
  DP_FWD_GEMM,    /* forward GEMMs (linear_forward, activation quantization included) */
  DP_FWD_CONV,    /* BF16 → FP32 of the forward GEMM outputs */
  DP_FWD_NORM,    /* RMSNorm, residual + RMSNorm, QK-norm + RoPE */
  DP_FWD_ATTN,    /* attention forward */
  DP_FWD_ACT,     /* SwiGLU, residual adds */
  DP_FWD_LOGPROB, /* log-softmax + gather + entropy over the vocabulary */
  DP_BWD_GEMM,    /* backward GEMMs (dX and dW) */
  DP_BWD_NORM,
  DP_BWD_ATTN,
  DP_BWD_ACT,
  DP_BWD_LOGPROB,
  DP_BWD_CONV, /* FP32 ↔ BF16 copies and sums around the backward GEMMs */
  DP_N
} devprof_phase;

/* 1 when RLRUN_MODEL_PROFILE is set (and not "0") in a CUDA build. */
int devprof_on(void);
/* The time since the previous mark (or the step's start) belongs to phase k. */
void devprof_mark(devprof_phase k);
/* End of a step: wait for its last event and add the phases up. */
void devprof_step(void);
/* Per-step means since the last report or reset (then reset); nothing when no
 * step was added. */
void devprof_report(FILE *f);
/* Forget the steps added so far (warm-ups). */
void devprof_reset(void);
/* No profile on the calling thread from now on, whatever RLRUN_MODEL_PROFILE
 * says (the state is per host thread; a rollout split's worker threads, which
 * live for one generate call, record nothing). */
void devprof_thread_off(void);

#ifdef __cplusplus
}
#endif
#endif
