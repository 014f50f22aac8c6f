/* attn_trace.h — the staged decode attention's per-CTA timeline (a build with
 * -DRCK_TRACE; stages/rollout_cuda_kern.h, RCK_TR_*), as a bench reports it:
 * the last launch's CTAs, each phase boundary's p10 / p50 / p90 / max in µs
 * since the CTA's start (SM clocks at the device's maximum clock, read here),
 * the start and end against the earliest start (global timer), and the end
 * times of the CTAs by how many CTAs shared their SM. */
#ifndef RLRUN_ATTN_TRACE_H
#define RLRUN_ATTN_TRACE_H
#ifdef RCK_TRACE
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "stages/rollout_cuda_kern.h"

static int attn_trace_cmp(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Sort v[0..n) and print its quantiles. */
static void attn_trace_q(const char *name, double *v, int n, const char *unit) {
  if (n < 1) return;
  qsort(v, (size_t)n, sizeof *v, attn_trace_cmp);
  printf("  %-18s n %5d  p10 %7.2f  p50 %7.2f  p90 %7.2f  max %7.2f µs %s\n", name, n, v[n / 10], v[n / 2],
         v[n * 9 / 10], v[n - 1], unit);
}

/* Report the last launch of up to `ctas` CTAs (slots zeroed by rck_trace_clear before it). */
static void attn_trace_report(const char *what, size_t ctas) {
  if (ctas > RCK_TR_CTAS) ctas = RCK_TR_CTAS;
  uint64_t *b = calloc(ctas * RCK_TR_N, 8);
  double *v = calloc(ctas, sizeof *v);
  int khz = 0, dev = 0;
  if (!b || !v || rck_trace_read(b, ctas) || cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev) != cudaSuccess || khz <= 0) {
    printf("attn trace %s: could not read the trace\n", what);
    free(b), free(v);
    return;
  }
  const double mhz = khz / 1e3;
  uint64_t g0 = UINT64_MAX;
  int n = 0;
  for (size_t c = 0; c < ctas; c++)
    if (b[c * RCK_TR_N + RCK_TR_GT1]) n++, g0 = b[c * RCK_TR_N] < g0 ? b[c * RCK_TR_N] : g0;
  printf("attn trace %s: %d CTAs (SM clock %.0f MHz)\n", what, n, mhz);
  static const char *const split_ev[5] = {"K landed", "scores", "V landed", "P·V", "partials"};
  for (int e = 0; e < RCK_TR_N; e++) {
    if (e == RCK_TR_CLK0 || e == RCK_TR_SM) continue;
    char name[32];
    if (e >= RCK_TR_SPLIT && e < RCK_TR_CMB_SYNC)
      snprintf(name, sizeof name, "split %d %s", (e - RCK_TR_SPLIT) / 5, split_ev[(e - RCK_TR_SPLIT) % 5]);
    else {
      static const char *const nm[RCK_TR_N] = {[RCK_TR_GT0] = "start", [RCK_TR_ISSUED] = "loads issued",
                                               [RCK_TR_QK] = "q ready", [RCK_TR_CMB_SYNC] = "combine barrier",
                                               [RCK_TR_CMB_Y] = "combine value 0", [RCK_TR_CMB_ST] = "its stores",
                                               [RCK_TR_COMBINE] = "combine done", [RCK_TR_LOOP] = "split loop done",
                                               [RCK_TR_END] = "end", [RCK_TR_GT1] = "end"};
      snprintf(name, sizeof name, "%s", nm[e]);
    }
    int k = 0;
    for (size_t c = 0; c < ctas; c++) {
      const uint64_t *r = b + c * RCK_TR_N;
      if (!r[RCK_TR_GT1] || !r[e]) continue;
      v[k++] = e == RCK_TR_GT0 || e == RCK_TR_GT1 ? (r[e] - g0) / 1e3 : (double)(int64_t)(r[e] - r[RCK_TR_CLK0]) / mhz;
    }
    attn_trace_q(name, v, k, e == RCK_TR_GT0 || e == RCK_TR_GT1 ? "(global)" : "(since the CTA's start)");
  }
  int *per_sm = calloc(4096, sizeof *per_sm);
  for (size_t c = 0; c < ctas && per_sm; c++)
    if (b[c * RCK_TR_N + RCK_TR_GT1]) per_sm[b[c * RCK_TR_N + RCK_TR_SM] & 4095]++;
  for (int m = 1; m <= 16 && per_sm; m++) {
    int k = 0, sms = 0;
    for (int i = 0; i < 4096; i++) sms += per_sm[i] == m;
    for (size_t c = 0; c < ctas; c++) {
      const uint64_t *r = b + c * RCK_TR_N;
      if (r[RCK_TR_GT1] && per_sm[r[RCK_TR_SM] & 4095] == m) v[k++] = (r[RCK_TR_GT1] - g0) / 1e3;
    }
    if (!k) continue;
    char name[32];
    snprintf(name, sizeof name, "end, %d a SM (%d)", m, sms);
    attn_trace_q(name, v, k, "(global)");
  }
  free(per_sm), free(b), free(v);
}
#endif
#endif
