/* rollout_cuda.c — the CUDA rollout engine (stages/rollout_cuda.h): slot
 * bookkeeping on the host, prefill through model_cuda_forward, decode steps
 * through the model's per-layer CUDA ops with the engine's KV cache and
 * decode attention (rollout_cuda_kern.cu), sampling with sampler_cuda. */
#include "stages/rollout_cuda.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "model/model_cuda_int.h"
#include "stages/rollout_cuda_kern.h"
#include "stages/sampler.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#define RC(call, what) \
  if ((rc = mc_ok((int)(call), what, e))) return rc

/* A captured decode step of `rows` rows, valid while the device buffers it
 * points into are (epoch == device_buffers_epoch()). */
typedef struct rc_graph {
  int rows, cfg; /* cfg: rc_cfg() when captured */
  unsigned long epoch;
  cudaGraphExec_t exec;
} rc_graph;
#define RC_MAX_GRAPHS 48

struct rollout_cuda_engine {
  model *m;
  quant_policy pol;
  int has_pol, slots, kvd, n_split;
  int rows_cap;  /* decode rows: the bucket of `slots` (rows past the active ones are padding) */
  int64_t max_len;
  uint16_t *kc, *vc; /* [L][slots + 1][nkv][max_len][hd] attention keys (after QK-norm + RoPE) and V, BF16;
                        slot `slots` is the padding rows' scratch */
  model_cuda_acts *pa, *da; /* prefill / decode activations */
  int32_t *d_step;                   /* a decode step's inputs: tokens, positions, slots, lengths, token map [5][rows_cap] */
  int32_t *d_tok, *d_pos, *d_slot, *d_len, *d_map; /* its five rows (map: rck_step_tokens) */
  int32_t *d_pslot;                  /* [slots·max_len] */
  int32_t *h_step;                   /* pinned host twins of d_step [2]: one upload a step, two steps in flight */
  float *pacc, *pml, *rows;          /* attention partials; gathered logits rows [rows_cap][V] */
  /* a decode step's logits as the BF16 they are (rollout_cuda_logits_b): lm_head
   * writes them here [rows_cap][V] (exact mode: da->logits_b) and the sampler reads
   * them; samp_b: the BF16 rows the next sampling reads (NULL: rows, the prefill's) */
  uint16_t *rows16;
  const uint16_t *samp_b;
  /* the BF16 hand-off (rc_handoff): the linears' BF16 results read as they are,
   * [rows_cap] rows each of q, k, v, the o / dense-MLP output y and gate, up;
   * mlp_b: the layer before left its MLP output in hy (1) or in res (0) */
  uint16_t *hb, *hq, *hk, *hv, *hy, *hg, *hu;
  int mlp_b;
  /* the fp8-block activation the norms and the SwiGLU write (rc_q8): E4M3 codes
   * [rows_cap rounded up to 8][H or I] and their scales [ceil(width/128)][same
   * rows], read by q/k/v, gate/up or down; aq2/as2 a second one of the same size,
   * written by the gate/up pair (mc_lin_fwd_swiglu_q8) while it reads aq */
  uint8_t *aq, *aq2;
  float *as, *as2;
  float *rope_cs, *rope_sn;          /* the step's RoPE table [rows_cap][head_dim/2] */
  sampler_key *d_keys, *h_keys; /* [slots]; h_: pinned host twins (async copies), [2][slots] */
  sampler_out *d_out, *h_out;
  cudaEvent_t ev[2];             /* a step's samples are on the host (h_out half b) */
  const tokenizer *tok; /* optional: stop rules of stages/stop.h and the completion text */
  int graphs;       /* 1: decode steps run as CUDA graphs per row bucket; 0: eagerly */
  int n_graphs;
  rc_graph graph[RC_MAX_GRAPHS];
  long long graph_launches, eager_steps, captures;
  long long handoffs; /* linear groups whose BF16 results were handed off, in steps run eagerly or captured */
  long long q8s;      /* of them, those whose fp8 activation came from the norm (rc_q8) */
  /* exact mode (the policy's pin_algo: precision.exact_logprobs): decode steps
   * run the forward's own kernels (model_cuda_decode_forward, the decode
   * attention of ops_attention_decode_tc_cuda) and every sampled token's
   * log-prob is the trainer's (ops_logprob_forward_bx_cuda) on the BF16 logits
   * rows lb (the prefill's gathered into rows_b, the step's da->logits_b) */
  int exact;
  uint16_t *rows_b;
  const uint16_t *lb;
  float *xlp, *xlse;
  int32_t *xtgt;
};

/* One sequence of a generate call. */
typedef struct rc_seq {
  int32_t *ids;   /* prompt ++ completion */
  float *logp;
  int32_t *routed; /* [(n_prompt + max_new)][L·k] or NULL */
  int64_t n_prompt, n_comp;
  finish_reason fin;
  stop_seq stop; /* with a tokenizer: the stop rules' state and the completion text */
} rc_seq;

/* Layer-major cache offset of layer l (elements). */
static int64_t rc_loff(const rollout_cuda_engine *g, int l) {
  return (int64_t)l * (g->slots + 1) * g->max_len * g->kvd;
}

/* Decode rows for n active sequences: 1, 2, 4, 8, then multiples of 16 (one
 * CUDA graph per bucket; the rows past n are padding). */
static int rc_bucket(int n) {
  if (n <= 8) {
    int b = 1;
    while (b < n) b <<= 1;
    return b;
  }
  return (n + 15) / 16 * 16;
}

static void rc_graphs_drop(rollout_cuda_engine *g) {
  for (int i = 0; i < g->n_graphs; i++) cudaGraphExecDestroy(g->graph[i].exec);
  g->n_graphs = 0;
}

static void rp_report(void);
void rollout_cuda_engine_free(rollout_cuda_engine *g) {
  if (!g) return;
  rp_report();
  if (g->graphs && rl_env_bool("RLRUN_ROLLOUT_PROFILE", 0))
    fprintf(stderr, "rollout (CUDA): %lld decode steps as graphs (%lld captures), %lld eager\n", g->graph_launches,
            g->captures, g->eager_steps);
  rc_graphs_drop(g);
  cudaFreeHost(g->h_step), cudaFreeHost(g->h_keys), cudaFreeHost(g->h_out);
  for (int b = 0; b < 2; b++)
    if (g->ev[b]) cudaEventDestroy(g->ev[b]);
  void *p[] = {g->kc, g->vc, g->d_step, g->d_pslot, g->pacc, g->pml, g->rows, g->d_keys, g->d_out, g->rope_cs, g->hb,
               g->aq, g->rows_b, g->xlp, g->rows16};
  for (size_t i = 0; i < sizeof p / sizeof *p; i++) cudaFree(p[i]); /* teardown: nothing to undo */
  model_cuda_acts_free(g->pa), model_cuda_acts_free(g->da);
  free(g);
}

void rollout_cuda_engine_set_tokenizer(rollout_cuda_engine *g, const tokenizer *t) { g->tok = t; }

long long rollout_cuda_handoffs(const rollout_cuda_engine *g) { return g->handoffs; }
long long rollout_cuda_norm_q8s(const rollout_cuda_engine *g) { return g->q8s; }

int64_t rollout_cuda_cache_bytes(const rollout_cuda_engine *g) {
  return (int64_t)g->m->L * (g->slots + 1) * g->max_len * g->kvd * (2 + 2);
}

/* The fp8 activation buffer (g->aq, g->as) of the norms, the SwiGLU and the
 * attention (o's input) for R rows of width max(H, I, nq·hd): codes, rounded up
 * to 16 bytes, then the scales. */
static size_t rc_q8_w(const model *m) {
  size_t w = (size_t)(m->H > m->I ? m->H : m->I), o = (size_t)m->nq * (size_t)m->hd; /* o's input */
  return w > o ? w : o;
}
static size_t rc_q8_codes(const model *m, size_t R) { return ((R + 7) / 8 * 8 * rc_q8_w(m) + 15) / 16 * 16; }
static size_t rc_q8_bytes(const model *m, size_t R) {
  return (rc_q8_codes(m, R) + (rc_q8_w(m) + 127) / 128 * ((R + 7) / 8 * 8) * 4 + 255) / 256 * 256;
}

/* Make the device views current for the engine's policy. */
static int rc_views(rollout_cuda_engine *g, rl_err *e) {
  if (!g->has_pol) return g->m->cu->quantized ? 0 : rl_errf(e, RL_EXIT_USAGE, "rollout (CUDA): the device weights are stale; call model_cuda_quantize");
  if (g->m->cu->quantized && !memcmp(&g->m->cu->policy, &g->pol, sizeof g->pol)) return 0;
  return model_cuda_quantize(g->m, &g->pol, e);
}

/* The exact mode's preconditions, once the decode acts exist: the forward's
 * BF16 flow (its logits BF16, the trainer's log-prob kernel reads them) and
 * the tensor-core attention (the decode kernel reproduces those kernels only). */
static int rc_exact_ok(const rollout_cuda_engine *g, rl_err *e) {
  ops_attn_impl impl;
  if (ops_attention_choose(g->m->hd, &impl, e)) return e->code;
  if (impl != OPS_ATTN_TC)
    return rl_errf(e, RL_EXIT_USAGE,
                   "precision.exact_logprobs: the exact decode reproduces the tensor-core attention; unset "
                   "RLRUN_ATTN (it asks for the SIMT kernels)");
  if (!g->da->logits_b)
    return rl_errf(e, RL_EXIT_USAGE,
                   "precision.exact_logprobs: the model's widths (hidden %d, intermediate %d, heads x head_dim %d / "
                   "%d) must be multiples of 8 and RLRUN_MODEL_FP32_FLOW unset (the forward's BF16 flow)",
                   g->m->H, g->m->I, g->m->nq * g->m->hd, g->m->nkv * g->m->hd);
  return 0;
}

/* Layer l's attention in an exact decode step (mc_dec_attn_fn): the step's K/V
 * rows into the cache — the BF16 operands the forward's attention would take —
 * then each row against its slot's cache with the forward's arithmetic. */
static int rc_exact_attn(void *ctx, int l, model_cuda_acts *a, mc_layer_acts *x, rl_err *e) {
  rollout_cuda_engine *g = ctx;
  model *m = g->m;
  const int R = a->T, hd = m->hd, dp = a->dp;
  uint16_t *kc = g->kc + rc_loff(g, l), *vc = g->vc + rc_loff(g, l);
  int rc = x->k_b ? rck_kv_write_b(kc, vc, x->k_b, x->v_b, g->d_slot, g->d_pos, R, g->max_len, m->nkv, hd, NULL, e)
                  : rck_kv_write(kc, vc, x->k, x->v, g->d_slot, g->d_pos, R, g->max_len, m->nkv, hd, NULL, e);
  if (rc) return rc;
  const float qscale = dp == hd ? 1.0f : (float)sqrt((double)dp / hd); /* mc_attention_fwd's padding */
  return ops_attention_decode_tc_cuda(x->att, x->att_b, x->k_b ? NULL : x->q, x->k_b ? x->q_b : NULL, qscale, kc, vc,
                                      g->d_slot, g->d_len, R, m->nq, m->nkv, hd, dp, g->max_len, NULL, e);
}

int rollout_cuda_engine_new(model *m, const quant_policy *policy, int slots, int64_t max_len,
                            rollout_cuda_engine **out, rl_err *e) {
  *out = NULL;
  if (!m || !m->cu) return rl_errf(e, RL_EXIT_USAGE, "rollout_cuda_engine_new: call model_cuda_init on the model first");
  if (slots < 1 || max_len < 2 || (int64_t)slots * max_len > INT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "rollout_cuda_engine_new: slots %d and max_len %lld must be >= 1 and >= 2", slots,
                   (long long)max_len);
  rollout_cuda_engine *g = rl_xcalloc(1, sizeof *g);
  g->m = m, g->slots = slots, g->max_len = max_len, g->kvd = m->nkv * m->hd, g->n_split = rck_n_split(max_len, m->nq / m->nkv);
  g->rows_cap = rc_bucket(slots);
  g->graphs = rl_env_bool("RLRUN_ROLLOUT_GRAPHS", 1) && !m->E; /* MoE layers copy routing to the host mid-step: eager */
  if (policy) g->pol = *policy, g->has_pol = 1;
  g->exact = policy && policy->pin_algo;
  size_t cache = (size_t)m->L * (slots + 1) * max_len * g->kvd, R = (size_t)g->rows_cap;
  int rc = 0;
  if ((rc = mc_ok(cudaMalloc((void **)&g->kc, cache * 2), "cudaMalloc (KV cache K)", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->vc, cache * 2), "cudaMalloc (KV cache V)", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->d_step, 5 * R * 4), "cudaMalloc (step inputs)", e)) ||
      (rc = mc_ok(cudaMallocHost((void **)&g->h_step, 2 * 5 * R * 4), "cudaMallocHost (step inputs)", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->d_pslot, (size_t)slots * max_len * 4), "cudaMalloc", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->pacc, R * m->nq * g->n_split * m->hd * 4), "cudaMalloc", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->pml, R * m->nq * g->n_split * 8), "cudaMalloc", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->rows, R * m->V * 4), "cudaMalloc (logits rows)", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->rope_cs, R * m->hd * 4), "cudaMalloc (RoPE table)", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->hb, R * ((size_t)m->nq * m->hd + 2 * (size_t)g->kvd + m->H + 2 * (size_t)m->I) * 2),
                  "cudaMalloc (BF16 hand-off rows)", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->aq, 2 * rc_q8_bytes(m, R)), "cudaMalloc (fp8 activation rows)", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->d_keys, (size_t)slots * sizeof(sampler_key)), "cudaMalloc", e)) ||
      (rc = mc_ok(cudaMalloc((void **)&g->d_out, (size_t)slots * sizeof(sampler_out)), "cudaMalloc", e)) ||
      (rc = mc_ok(cudaMallocHost((void **)&g->h_keys, 2 * (size_t)slots * sizeof(sampler_key)), "cudaMallocHost", e)) ||
      (rc = mc_ok(cudaMallocHost((void **)&g->h_out, 2 * (size_t)slots * sizeof(sampler_out)), "cudaMallocHost", e)) ||
      (rc = mc_ok(cudaEventCreateWithFlags(&g->ev[0], cudaEventDisableTiming), "cudaEventCreate", e)) ||
      (rc = mc_ok(cudaEventCreateWithFlags(&g->ev[1], cudaEventDisableTiming), "cudaEventCreate", e)) ||
      (g->exact && (rc = mc_ok(cudaMalloc((void **)&g->rows_b, R * m->V * 2), "cudaMalloc (BF16 logits rows)", e))) ||
      (!g->exact && (rc = mc_ok(cudaMalloc((void **)&g->rows16, R * m->V * 2), "cudaMalloc (BF16 step logits)", e))) ||
      (g->exact && (rc = mc_ok(cudaMalloc((void **)&g->xlp, 3 * R * 4), "cudaMalloc (log-prob rows)", e)))) {
    rollout_cuda_engine_free(g);
    return rl_err_prefix(e, "rollout_cuda_engine_new (KV cache %.1f MiB): ", (double)cache * 4 / (1 << 20));
  }
  g->rope_sn = g->rope_cs + R * m->hd / 2;
  g->d_tok = g->d_step, g->d_pos = g->d_tok + R, g->d_slot = g->d_pos + R, g->d_len = g->d_slot + R;
  g->d_map = g->d_len + R;
  g->hq = g->hb, g->hk = g->hq + R * m->nq * m->hd, g->hv = g->hk + R * g->kvd, g->hy = g->hv + R * g->kvd;
  g->hg = g->hy + R * m->H, g->hu = g->hg + R * m->I;
  g->as = (float *)(g->aq + rc_q8_codes(m, R));
  g->aq2 = g->aq + rc_q8_bytes(m, R), g->as2 = (float *)(g->aq2 + rc_q8_codes(m, R));
  if (g->exact) g->xlse = g->xlp + R, g->xtgt = (int32_t *)(g->xlse + R);
  g->pa = model_cuda_acts_new(), g->da = model_cuda_acts_new();
  /* the decode step reads qr/kr/v/gate/up as FP32 (rollout_cuda_kern); the exact
   * step is the forward's BF16 flow */
  g->da->fp32_flow = !g->exact;
  if ((rc = rc_views(g, e))) {
    rollout_cuda_engine_free(g);
    return rl_err_prefix(e, "rollout_cuda_engine_new: ");
  }
  /* size the decode activations for rows_cap rows: a forward of rows_cap one-token sequences */
  int32_t *tok = rl_xcalloc(R, 4), *off = rl_xmalloc((R + 1) * 4);
  for (size_t i = 0; i <= R; i++) off[i] = (int32_t)i;
  model_batch b = {0};
  b.T = (int)R, b.tokens = tok, b.seqs.n_seq = (int)R, b.seqs.off = off;
  model_fwd_opts fo = {0};
  fo.no_grad = g->exact; /* the exact step's set: forward-only (model_cuda_decode_forward) */
  rc = model_cuda_forward(m, &b, &fo, g->da, e);
  free(tok), free(off);
  if (!rc && g->exact) rc = rc_exact_ok(g, e);
  if (rc) {
    rollout_cuda_engine_free(g);
    return rl_err_prefix(e, "rollout_cuda_engine_new: ");
  }
  *out = g;
  return 0;
}

/* RLRUN_ROLLOUT_PROFILE=1: where a decode step's device time goes. Every
 * phase ends with a timing event recorded on the stream (inside the captured
 * graph too: cudaEventRecordExternal makes it a graph node), so the phases are
 * timed as the step really runs — graphs, launch gaps and all — without
 * synchronising anything; the elapsed times are read once the step's samples
 * are back on the host. The phase sequence of a step is the same for every row
 * count, so the kinds recorded by the eager run (or capture) serve the replays.
 * The per-step means go to stderr when the engine is freed. Off, it costs a
 * branch per phase. The state is per host thread: in a rollout split over
 * GPUs (one thread a GPU) each thread times its own engine's steps, and what
 * is reported is the part of the thread that frees the engines (part 0). */
enum { RP_UPLOAD, RP_EMBED, RP_NORM1, RP_QKV, RP_QKNORM, RP_ATTN, RP_OPROJ, RP_NORM2, RP_GATEUP, RP_DOWN, RP_MOE,
       RP_FINAL, RP_LMHEAD, RP_SAMPLE, RP_N };
static const char *const rp_name[RP_N] = {"upload",          "embedding+rope",  "residual+norm 1", "q/k/v proj",
                                          "qk-norm+rope+kv", "attention",       "o proj",          "residual+norm 2",
                                          "gate/up+swiglu",  "down proj",       "moe",             "residual+final",
                                          "lm_head",         "sample+download"};
#define RP_MAX_EV 4096
static _Thread_local struct {
  int on;        /* -1: not asked yet */
  int cur, end;  /* next event of the step; the events a step records (start … last device phase) */
  int armed;     /* a decode step's events are pending */
  int n_made;    /* events created */
  int warned;
  cudaEvent_t ev[RP_MAX_EV];
  signed char kind[RP_MAX_EV];
  double t[RP_N], wall, t_wall0;
  int64_t steps;
} rp = {.on = -1};
void rollout_cuda_profile_thread_off(void) { rp.on = 0; }
static int rp_enabled(void) {
  if (rp.on < 0) {
    rp.on = rl_env_bool("RLRUN_ROLLOUT_PROFILE", 0);
  }
  return rp.on;
}
/* Record event i (ending phase k, or -1 for the step's start). */
static void rp_mark_at(int i, int k) {
  if (!rp_enabled() || i >= RP_MAX_EV) return;
  while (rp.n_made <= i)
    if (cudaEventCreate(&rp.ev[rp.n_made++]) != cudaSuccess) {
      cudaGetLastError(), rp.on = 0, rp.n_made--;
      fprintf(stderr, "rollout (CUDA): RLRUN_ROLLOUT_PROFILE: cudaEventCreate failed; profile off\n");
      return;
    }
  rp.kind[i] = (signed char)k;
  enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  cudaError_t st = cudaStreamIsCapturing(cudaStreamPerThread, &cs);
  if (st == cudaSuccess) /* captured: an event-record node of the graph; else an ordinary record */
    st = cs == cudaStreamCaptureStatusActive
             ? cudaEventRecordWithFlags(rp.ev[i], cudaStreamPerThread, cudaEventRecordExternal)
             : cudaEventRecord(rp.ev[i], cudaStreamPerThread);
  if (st != cudaSuccess) {
    cudaGetLastError(), rp.on = 0;
    fprintf(stderr, "rollout (CUDA): RLRUN_ROLLOUT_PROFILE: recording event %d failed (%s); profile off\n", i,
            cudaGetErrorString(st));
  }
}
static void rp_mark(int k) {
  if (rp_enabled()) rp_mark_at(rp.cur++, k);
}
/* Once the step's samples are on the host: add its phases' elapsed times. */
static void rp_collect(void) {
  if (!rp.on || !rp.armed) return;
  rp.armed = 0;
  cudaError_t st = rp.cur > 0 && rp.cur <= RP_MAX_EV ? cudaEventSynchronize(rp.ev[rp.cur - 1]) : cudaSuccess;
  if (st != cudaSuccess) {
    cudaGetLastError(), rp.on = 0;
    fprintf(stderr, "rollout (CUDA): RLRUN_ROLLOUT_PROFILE: %s; profile off\n", cudaGetErrorString(st));
    return;
  }
  for (int i = 1; i < rp.cur && i < RP_MAX_EV; i++) {
    float ms = 0;
    if (rp.kind[i] < 0) continue;
    if ((st = cudaEventElapsedTime(&ms, rp.ev[i - 1], rp.ev[i])) != cudaSuccess) {
      cudaGetLastError();
      if (!rp.warned++)
        fprintf(stderr, "rollout (CUDA): RLRUN_ROLLOUT_PROFILE: event %d: %s (phase not timed)\n", i,
                cudaGetErrorString(st));
      continue;
    }
    rp.t[(int)rp.kind[i]] += 1e-3 * ms;
  }
  rp.wall += rl_now() - rp.t_wall0;
  rp.steps++;
}
static void rp_report(void) {
  if (rp.on <= 0 || !rp.steps) return;
  double tot = 0;
  for (int k = 0; k < RP_N; k++) tot += rp.t[k];
  fprintf(stderr, "rollout profile (device events, %lld decode steps): ms per step\n", (long long)rp.steps);
  for (int k = 0; k < RP_N; k++)
    if (rp.t[k] > 0) fprintf(stderr, "  %-18s %8.4f  %5.1f%%\n", rp_name[k], 1e3 * rp.t[k] / rp.steps, 100 * rp.t[k] / tot);
  fprintf(stderr, "  %-18s %8.4f  (host wall per step %.4f)\n", "total", 1e3 * tot / rp.steps, 1e3 * rp.wall / rp.steps);
  memset(rp.t, 0, sizeof rp.t), rp.steps = 0, rp.wall = 0;
}
/* RLRUN_ROLLOUT_SKIP=attn,qknorm,… (keys below): a diagnostic only — decode
 * steps leave those phases out, so their samples are wrong — that shows what
 * a phase really costs a step (bench_rollout's tok/s with and without it; the
 * profile's events inflate small phases). */
static const char *const rp_key[RP_N] = {"upload", "embed", "norm1", "qkv",  "qknorm", "attn",   "oproj",
                                         "norm2",  "gateup", "down", "moe", "final",  "lmhead", "sample"};
static unsigned rp_skip_mask;
static void rp_skip_read(void) {
  const char *v = getenv("RLRUN_ROLLOUT_SKIP");
  for (int k = 0; v && k < RP_N; k++) {
    const size_t kl = strlen(rp_key[k]);
    for (const char *p = strstr(v, rp_key[k]); p; p = strstr(p + 1, rp_key[k]))
      if ((p == v || p[-1] == ',') && (p[kl] == ',' || !p[kl])) rp_skip_mask |= 1u << k;
  }
  if (rp_skip_mask)
    fprintf(stderr, "rollout (CUDA): RLRUN_ROLLOUT_SKIP=%s: decode phases left out, samples are WRONG\n", v);
}
static unsigned rp_skip(void) { /* read once (engines of a split rollout run on threads of their own) */
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, rp_skip_read);
  return rp_skip_mask;
}
/* Run call as phase k when nothing failed yet (and k is not skipped). */
#define RP(k, call)                        \
  do {                                     \
    if (!rc && !(rp_skip() >> (k) & 1u)) { \
      rc = (call);                         \
      rp_mark(k);                          \
    }                                      \
  } while (0)

/* RLRUN_DECODE_BF16_HANDOFF=0: the decode step converts every cuBLASLt
 * linear's BF16 result to FP32 before its reader (the same bits; a diagnostic
 * of what the hand-off saves). */
int rollout_cuda_bf16_handoff(int set) {
  static int on = -1;
  return rl_env_switch(&on, "RLRUN_DECODE_BF16_HANDOFF", set);
}
static int rc_handoff_env(void) { return rollout_cuda_bf16_handoff(-1); }

/* RLRUN_DECODE_ATTN_Q8=0: o's fp8 activation by the quantizer, not the attention. */
int rollout_cuda_attn_q8(int set) {
  static int on = -1;
  return rl_env_switch(&on, "RLRUN_DECODE_ATTN_Q8", set);
}

/* RLRUN_DECODE_LOGITS_BF16=0: a decode step's logits go to the sampler as FP32
 * rows (lm_head's FP32 output; in exact mode a conversion of its BF16 one)
 * instead of as the BF16 they are. The same tokens and log-probs either way
 * (sampler_sample_bf16_cuda widens exactly); on, lm_head writes 2 bytes a logit
 * instead of 4 and the sampler reads half the bytes. */
int rollout_cuda_logits_b(int set) {
  static int on = -1;
  return rl_env_switch(&on, "RLRUN_DECODE_LOGITS_BF16", set);
}

/* 1 when the linears L[0..n) of a decode step of n rows all run linear_forward
 * (cuBLASLt: fp8-block at any M, BF16 above 64 rows) or, fp8-block at ≤ 64 rows
 * with model_cuda_small_q8, the small-M fp8 GEMM (BF16 output too), so that
 * their BF16 results go to the readers as they are — the norms, SwiGLU and the
 * fused QK attention read BF16 with the bits of its exact FP32 copy — instead of
 * through an FP32 conversion pass each (7 launches a dense layer). */
static int rc_handoff(const rollout_cuda_engine *g, const mc_lin *const *L, int k, const uint16_t *xb, int n) {
  if (!rc_handoff_env()) return 0;
  for (int i = 0; i < k; i++)
    if (!mc_lin_native_b(g->m, L[i], xb, n)) return 0;
  return 1;
}

/* 1 when the norm before the linears L[0..k) (handed off in BF16) writes their
 * fp8-block activation itself (ops_rmsnorm_forward_q8_cuda; model_cuda_norm_q8
 * on): one quantizer launch fewer, the same bytes. */
static int rc_q8(const rollout_cuda_engine *g, const mc_lin *const *L, int k, const uint16_t *xb, int n) {
  return g->m->H % 4 == 0 && mc_lin_q8_ok(g->m, L, k, xb, n);
}

/* The switches that change what a decode step launches (a graph captured under
 * others is captured again): the fused QK path, the BF16 hand-off, the
 * norms' fp8 output, the small-M fp8 GEMM, the attention's fp8 output, the
 * fp8 gate/up pair with its SwiGLU, the wide RMSNorm forwards (and their warps
 * a row), the q8 SwiGLU's PDL launch and values a thread, the attention's
 * o encode from shared memory, and the BF16 logits. */
static int rc_cfg(const rollout_cuda_engine *g) {
  return rck_decode_qk_fused(g->m->nq / g->m->nkv, -1) | rc_handoff_env() << 1 | model_cuda_norm_q8(-1) << 2 |
         model_cuda_small_q8(-1) << 3 | rollout_cuda_attn_q8(-1) << 4 | model_cuda_small_q8_swiglu(-1) << 5 |
         ops_norm_wide(-1) << 6 | ops_swiglu_q8_pdl(-1) << 7 | (ops_norm_wide_warps(-1) == 8) << 8 |
         ops_swiglu_q8_lane4(-1) << 9 | rck_attn_q8_lane4(-1) << 10 | rollout_cuda_logits_b(-1) << 11;
}

/* Layer l of a decode step of n rows on the decode activations. On entry
 * res[l] holds layer l−1's MLP output (or hy does, BF16, when g->mlp_b) and
 * la[l−1].h its attention residual (for l = 0: the embeddings); the residual
 * add is fused with norm 1 here (res[l] = h + mlp, then its RMSNorm), and layer
 * l leaves its own MLP output in res[l+1] or hy for the next layer (or the
 * final norm) to add. The sums are the full forward's (same kernels, same order
 * of operations); only the launches are fewer. */
static int rc_layer(rollout_cuda_engine *g, int l, int n, rl_err *e) {
  model *m = g->m;
  model_cuda_acts *a = g->da;
  mc_layer *y = &m->cu->layers[l];
  model_layer *my = &m->layers[l];
  mc_layer_acts *x = &a->la[l];
  model_cuda_param *P = m->cu->p;
  int H = m->H, rc = 0;
#define PW(p) P[(int)((p) - m->params)].wf
  float *in = a->res + (size_t)l * n * H, *next = a->res + (size_t)(l + 1) * n * H;
  const mc_lin *qkv[3] = {&y->q, &y->k, &y->v};
  const int fuse_qk = rck_decode_qk_fused(m->nq / m->nkv, -1);
  const int hand_qkv = fuse_qk && rc_handoff(g, qkv, 3, x->xn1_b, n), q8_qkv = hand_qkv && rc_q8(g, qkv, 3, x->xn1_b, n);
  const int n8 = (n + 7) / 8 * 8;
  const ops_fp8_act qa = {g->aq, g->as, n8, n8, m->cu->policy.ue8m0};
  if (q8_qkv) /* the norm writes q/k/v's fp8-block activation (xn1_b is not written) */
    RP(RP_NORM1, ops_rmsnorm_forward_q8_cuda(l ? in : NULL, NULL, NULL, l ? a->la[l - 1].h : NULL,
                                             l && g->mlp_b ? NULL : in, l && g->mlp_b ? g->hy : NULL, PW(my->ln1), n,
                                             H, m->eps, &qa, NULL, e));
  else if (l == 0)
    RP(RP_NORM1, ops_rmsnorm_forward_cuda(NULL, x->xn1_b, NULL, in, PW(my->ln1), n, H, m->eps, NULL, e));
  else if (g->mlp_b)
    RP(RP_NORM1, ops_residual_rmsnorm_forward_bx_cuda(in, NULL, x->xn1_b, NULL, a->la[l - 1].h, g->hy, PW(my->ln1), n,
                                                      H, m->eps, NULL, e));
  else
    RP(RP_NORM1, ops_residual_rmsnorm_forward_cuda(in, NULL, x->xn1_b, NULL, a->la[l - 1].h, in, PW(my->ln1), n, H,
                                                   m->eps, NULL, e));
  const mc_lin *o1[1] = {&y->o};
  const int hand_o = rc_handoff(g, o1, 1, x->att_b, n);
  /* the attention writes o's fp8-block activation (head_dim 128, o through the
   * small-M fp8 GEMM, which reads the real rows only): one quantizer launch fewer */
  const int q8_o = hand_qkv && hand_o && m->hd == 128 &&
                   mc_lin_small_q8_ok(m, o1, 1, g->aq, g->as, n, &g->hy) && model_cuda_norm_q8(-1) &&
                   rollout_cuda_attn_q8(-1);
  if (hand_qkv) { /* q, k, v stay BF16 into the attention */
    uint16_t *const qkv_b[3] = {g->hq, g->hk, g->hv};
    if (q8_qkv) {
      RP(RP_QKV, mc_lin_fwd_b_q8(m, qkv, 3, g->aq, g->as, n, qkv_b, e));
      g->q8s++;
    } else {
      RP(RP_QKV, mc_lin_fwd_b_group(m, qkv, 3, x->xn1_b, n, qkv_b, e));
    }
    g->handoffs++;
    const rck_qk_in qk = {NULL, NULL, NULL, PW(my->q_norm), PW(my->k_norm), g->rope_cs, g->rope_sn,
                          g->kc + rc_loff(g, l), g->vc + rc_loff(g, l), m->eps, g->hq, g->hk, g->hv,
                          q8_o ? g->aq : NULL, g->as, n8, m->cu->policy.ue8m0, quant_cuda_soft_cvt(), 0};
    RP(RP_ATTN, rck_decode_attention_qk(x->att, x->att_b, &qk, g->d_slot, g->d_len, n, m->nq, m->nkv, m->hd,
                                        g->max_len, g->n_split, g->pacc, g->pml, NULL, e));
  } else {
    float *const qkv_out[3] = {x->qr, x->kr, x->v};
    RP(RP_QKV, mc_lin_fwd_group(m, qkv, 3, x->xn1_b, n, qkv_out, e));
    if (fuse_qk) { /* QK-norm, RoPE and the cache write inside the attention */
      const rck_qk_in qk = {x->qr, x->kr, x->v, PW(my->q_norm), PW(my->k_norm), g->rope_cs, g->rope_sn,
                            g->kc + rc_loff(g, l), g->vc + rc_loff(g, l), m->eps, NULL, NULL, NULL,
                            NULL, NULL, 0, 0, 0, 0};
      RP(RP_ATTN, rck_decode_attention_qk(x->att, x->att_b, &qk, g->d_slot, g->d_len, n, m->nq, m->nkv, m->hd,
                                          g->max_len, g->n_split, g->pacc, g->pml, NULL, e));
    } else {
      RP(RP_QKNORM, rck_qkv_post(x->q, x->k, g->kc + rc_loff(g, l), g->vc + rc_loff(g, l), x->qr, x->kr, x->v,
                                 PW(my->q_norm), PW(my->k_norm), g->rope_cs, g->rope_sn, g->d_slot, g->d_pos, n, m->nq,
                                 m->nkv, m->hd, g->max_len, m->eps, NULL, e));
      RP(RP_ATTN, rck_decode_attention(x->att, x->att_b, x->q, g->kc + rc_loff(g, l), g->vc + rc_loff(g, l),
                                       g->d_slot, g->d_len, n, m->nq, m->nkv, m->hd, g->max_len, g->n_split, g->pacc,
                                       g->pml, NULL, e));
    }
  }
  const mc_lin *gu[2] = {&y->gate, &y->up};
  const int hand_mlp = !my->moe && rc_handoff(g, gu, 2, x->xn2_b, n) &&
                       rc_handoff(g, (const mc_lin *const[1]){&y->down}, 1, x->act_b, n);
  const int q8_gu = hand_mlp && rc_q8(g, gu, 2, x->xn2_b, n);
  if (q8_o) { /* from the attention's fp8 output */
    RP(RP_OPROJ, mc_lin_fwd_b_q8(m, o1, 1, g->aq, g->as, n, &g->hy, e));
    g->handoffs++, g->q8s++;
  } else if (hand_o) { /* o stays BF16 into the residual add of norm 2 */
    RP(RP_OPROJ, mc_lin_fwd_b(m, &y->o, x->att_b, n, g->hy, e));
    g->handoffs++;
  } else {
    RP(RP_OPROJ, mc_lin_fwd(m, &y->o, x->att_b, n, next, e));
  }
  if (q8_gu) { /* the norm writes gate/up's fp8-block activation (xn2_b is not written) */
    RP(RP_NORM2, ops_rmsnorm_forward_q8_cuda(x->h, NULL, NULL, in, hand_o ? NULL : next, hand_o ? g->hy : NULL,
                                             PW(my->ln2), n, H, m->eps, &qa, NULL, e));
    g->q8s++;
  } else if (hand_o) {
    RP(RP_NORM2, ops_residual_rmsnorm_forward_bx_cuda(x->h, NULL, x->xn2_b, NULL, in, g->hy, PW(my->ln2), n, H, m->eps,
                                                      NULL, e));
  } else {
    RP(RP_NORM2, ops_residual_rmsnorm_forward_cuda(x->h, NULL, x->xn2_b, NULL, in, next, PW(my->ln2), n, H, m->eps,
                                                   NULL, e));
  }
  g->mlp_b = 0;
  if (my->moe) {
    RP(RP_MOE, mc_moe_forward(m, l, NULL, a, next, e));
  } else if (hand_mlp) {
    uint16_t *const gu_b[2] = {g->hg, g->hu}; /* gate, up and down stay BF16: SwiGLU and the next norm read them */
    const mc_lin *dn[1] = {&y->down};
    const int q8_dn = m->I % 16 == 0 && rc_q8(g, dn, 1, x->act_b, n);
    const ops_fp8_act qd2 = {g->aq2, g->as2, n8, n8, m->cu->policy.ue8m0};
    if (q8_gu && q8_dn && mc_lin_swiglu_q8_ok(m, &y->gate, &y->up, g->aq, g->as, n, x->act_b, &qd2)) {
      /* one launch for gate/up, their SwiGLU and down's fp8-block activation (the
       * bytes of the two launches below; aq2: the pair reads aq meanwhile) */
      RP(RP_GATEUP, mc_lin_fwd_swiglu_q8(m, &y->gate, &y->up, g->aq, g->as, n, x->act_b, &qd2, e));
      RP(RP_DOWN, mc_lin_fwd_b_q8(m, dn, 1, g->aq2, g->as2, n, &g->hy, e));
      g->q8s++;
    } else {
      if (q8_gu) RP(RP_GATEUP, mc_lin_fwd_b_q8(m, gu, 2, g->aq, g->as, n, gu_b, e));
      else RP(RP_GATEUP, mc_lin_fwd_b_group(m, gu, 2, x->xn2_b, n, gu_b, e));
      if (q8_dn) { /* the SwiGLU writes down's fp8-block activation */
        const ops_fp8_act qd = {g->aq, g->as, n8, n8, m->cu->policy.ue8m0};
        RP(RP_GATEUP, ops_swiglu_forward_q8_bx_cuda(x->act_b, g->hg, g->hu, n, m->I, m->I, &qd, NULL, e));
        RP(RP_DOWN, mc_lin_fwd_b_q8(m, dn, 1, g->aq, g->as, n, &g->hy, e));
        g->q8s++;
      } else {
        RP(RP_GATEUP, ops_swiglu_forward_bx_cuda(NULL, x->act_b, g->hg, g->hu, n, m->I, m->I, NULL, e));
        RP(RP_DOWN, mc_lin_fwd_b(m, &y->down, x->act_b, n, g->hy, e));
      }
    }
    g->mlp_b = 1, g->handoffs += 2;
  } else {
    RP(RP_GATEUP, mc_lin_fwd_swiglu(m, &y->gate, &y->up, x->xn2_b, n, x->gate, x->up, x->act_b, e));
    RP(RP_DOWN, mc_lin_fwd(m, &y->down, x->act_b, n, next, e));
  }
#undef PW
  return rc ? rl_err_prefix(e, "layer %d: ", l) : 0;
}

/* The device work of a decode step over the R rows staged on the device
 * (embedding → layers → final norm → lm_head into g->rows16, or with
 * RLRUN_DECODE_LOGITS_BF16=0 g->rows): what a CUDA graph captures. */
static int rc_step(rollout_cuda_engine *g, int R, rl_err *e) {
  model *m = g->m;
  model_cuda_acts *a = g->da;
  int rc = 0, H = m->H;
  a->T = R, a->n_seq = R, a->max_len = 1;
  rp.cur = 2; /* after the step's start and upload events (rc_decode) */
  RP(RP_EMBED, rck_step_tokens(g->d_tok, g->d_map, (const int32_t *)g->d_out, (int)(sizeof(sampler_out) / 4), R, NULL, e));
  if (g->exact) { /* the forward's kernels; the sampler and the log-probs read its BF16 logits (the sampler FP32
                   * copies of them with RLRUN_DECODE_LOGITS_BF16=0) */
    RP(RP_LMHEAD, model_cuda_decode_forward(m, a, R, g->d_tok, g->d_pos, rc_exact_attn, g, e));
    if (!rollout_cuda_logits_b(-1)) RP(RP_LMHEAD, ops_f32_from_bf16_cuda(g->rows, a->logits_b, (size_t)R * m->V, NULL, e));
    rp.end = rp.cur;
    return rc;
  }
  RP(RP_EMBED, ops_embedding_forward_bf16_cuda(a->res, m->cu->p[(int)(m->embed - m->params)].w, g->d_tok, R, m->V, H,
                                               NULL, e));
  RP(RP_EMBED, ops_rope_table_cuda(g->rope_cs, g->rope_sn, g->d_pos, R, m->hd, m->theta, NULL, e));
  g->mlp_b = 0;
  for (int l = 0; l < m->L && !rc; l++) rc = rc_layer(g, l, R, e);
  float *last = a->res + (size_t)m->L * R * H; /* the last layer's MLP output (or hy's): its residual is added here */
  const float *wf = m->cu->p[(int)(m->final_norm - m->params)].wf;
  if (g->mlp_b)
    RP(RP_FINAL, ops_residual_rmsnorm_forward_bx_cuda(last, NULL, a->xf_b, NULL, a->la[m->L - 1].h, g->hy, wf, R, H,
                                                      m->eps, NULL, e));
  else
    RP(RP_FINAL, ops_residual_rmsnorm_forward_cuda(last, NULL, a->xf_b, NULL, a->la[m->L - 1].h, last, wf, R, H, m->eps,
                                                   NULL, e));
  if (rollout_cuda_logits_b(-1)) RP(RP_LMHEAD, mc_lin_fwd_b(m, &m->cu->lm_head, a->xf_b, R, g->rows16, e));
  else RP(RP_LMHEAD, mc_lin_fwd(m, &m->cu->lm_head, a->xf_b, R, g->rows, e));
  rp.end = rp.cur;
  return rc;
}

/* Capture rc_step over R rows as a graph (the step itself ran eagerly just
 * before, so every plan and scratch buffer exists). On any failure the engine
 * falls back to eager steps for good, saying why once on stderr. */
static void rc_capture(rollout_cuda_engine *g, int R) {
  rl_err ce = {0};
  unsigned long ep = device_buffers_epoch();
  cudaGraph_t graph = NULL;
  cudaGraphExec_t exec = NULL;
  cudaError_t st = cudaStreamBeginCapture(cudaStreamPerThread, cudaStreamCaptureModeThreadLocal);
  int rc = st != cudaSuccess;
  if (!rc) {
    rc = rc_step(g, R, &ce);
    st = cudaStreamEndCapture(cudaStreamPerThread, &graph);
    if (st != cudaSuccess) rc = 1;
  }
  if (!rc) rc = (st = cudaGraphInstantiate(&exec, graph, 0)) != cudaSuccess;
  if (graph) cudaGraphDestroy(graph);
  if (!rc && device_buffers_epoch() != ep) { /* a buffer of this device moved meanwhile: capture on a later step */
    if (exec) cudaGraphExecDestroy(exec);
    return;
  }
  if (rc) {
    if (exec) cudaGraphExecDestroy(exec);
    cudaGetLastError(); /* clear the capture's error state */
    fprintf(stderr, "rollout (CUDA): decode steps run without CUDA graphs: capturing %d rows failed (%s)\n", R,
            ce.msg[0] ? ce.msg : cudaGetErrorString(st));
    g->graphs = 0;
    return;
  }
  if (g->n_graphs == RC_MAX_GRAPHS) rc_graphs_drop(g);
  g->graph[g->n_graphs++] = (rc_graph){R, rc_cfg(g), ep, exec};
  g->captures++;
}

/* A decode step: rows i < n feed tok[i] of the sequence in slot[i] at pos[i];
 * logits rows [n][V] land in g->samp_b (BF16) or g->rows. With graphs the step runs over the
 * bucket of n rows (padding rows feed token 0 at position 0 of the spare
 * slot); their logits are never read. */
static int rc_decode(rollout_cuda_engine *g, int n, const int32_t *tok, const int32_t *slot, const int32_t *pos,
                     const int32_t *map, int buf, rl_err *e) {
  int rc = 0, use = g->graphs, R = use ? rc_bucket(n) : n;
  if (R > g->rows_cap) R = g->rows_cap;
  int32_t *ht = g->h_step + (size_t)buf * 5 * g->rows_cap, *hp = ht + g->rows_cap, *hs = hp + g->rows_cap,
          *hl = hs + g->rows_cap, *hm = hl + g->rows_cap;
  for (int i = 0; i < R; i++) {
    int pad = i >= n;
    ht[i] = pad ? 0 : tok[i], hp[i] = pad ? 0 : pos[i], hs[i] = pad ? g->slots : slot[i], hl[i] = hp[i] + 1;
    hm[i] = pad ? -1 : map[i];
  }
  if (rp_enabled()) rp.t_wall0 = rl_now(), rp_mark_at(0, -1);
  /* rows past R are stale and unread */
  rc = mc_ok(cudaMemcpyAsync(g->d_step, ht, (size_t)5 * g->rows_cap * 4, cudaMemcpyHostToDevice, cudaStreamPerThread),
             "cudaMemcpy (step inputs)", e);
  if (rp_enabled()) rp_mark_at(1, RP_UPLOAD);
  if (rc) return rl_err_prefix(e, "decode step: ");
  rc_graph *gr = NULL;
  for (int i = 0; use && i < g->n_graphs && !gr; i++)
    if (g->graph[i].rows == R) gr = &g->graph[i];
  /* buffers moved, or a switch that shapes the step changed: capture again */
  if (gr && (gr->epoch != device_buffers_epoch() || gr->cfg != rc_cfg(g))) rc_graphs_drop(g), gr = NULL;
  if (gr) {
    rc = mc_ok(cudaGraphLaunch(gr->exec, cudaStreamPerThread), "cudaGraphLaunch (decode step)", e);
    g->graph_launches++;
  } else {
    rc = rc_step(g, R, e);
    g->eager_steps++;
    if (!rc && use) rc_capture(g, R);
  }
  if (rp_enabled() && !rc) rp.cur = rp.end, rp.armed = 1; /* the replay recorded the step's events */
  if (g->exact) g->lb = g->da->logits_b; /* the step's BF16 logits rows, for rc_exact_logp */
  g->samp_b = !rollout_cuda_logits_b(-1) ? NULL : g->exact ? g->da->logits_b : g->rows16;
  return rc ? rl_err_prefix(e, "decode step: ") : 0;
}

/* Prefill the n sequences sq[0..n) (in slots slot[]): one packed forward, the
 * cache written, each prompt's last logits row gathered into g->rows. */
static int rc_prefill(rollout_cuda_engine *g, rc_seq **sq, const int32_t *slot, int n, int rk, rl_err *e) {
  model *m = g->m;
  model_cuda_acts *a = g->pa;
  int64_t T = 0;
  for (int i = 0; i < n; i++) T += sq[i]->n_prompt;
  int32_t *tok = rl_xmalloc((size_t)T * 4), *off = rl_xmalloc((size_t)(n + 1) * 4), *ps = rl_xmalloc((size_t)T * 4);
  off[0] = 0;
  for (int i = 0; i < n; i++) {
    memcpy(tok + off[i], sq[i]->ids, (size_t)sq[i]->n_prompt * 4);
    for (int64_t t = 0; t < sq[i]->n_prompt; t++) ps[off[i] + t] = slot[i];
    off[i + 1] = off[i] + (int32_t)sq[i]->n_prompt;
  }
  model_batch b = {0};
  b.T = (int)T, b.tokens = tok, b.seqs.n_seq = n, b.seqs.off = off;
  /* pinned linears: a prompt's cache rows and first logits must not depend on
   * which prompts were admitted with it (how many slots were free then: the
   * other sequences' lengths, the slot count, a split's share) — at T ≤ 64 the
   * small-M kernels and above it cuBLASLt's heuristic sum in other orders */
  model_fwd_opts fo = {0};
  fo.row_invariant = 1;
  int rc = model_cuda_forward(m, &b, &fo, a, e);
  if (!rc) rc = mc_ok(cudaMemcpy(g->d_pslot, ps, (size_t)T * 4, cudaMemcpyHostToDevice), "cudaMemcpy (slots)", e);
  for (int l = 0; l < m->L && !rc; l++) {
    mc_layer_acts *x = &a->la[l];
    rc = x->k_b ? rck_kv_write_b(g->kc + rc_loff(g, l), g->vc + rc_loff(g, l), x->k_b, x->v_b, g->d_pslot, a->pos, (int)T,
                                 g->max_len, m->nkv, m->hd, NULL, e)
                : rck_kv_write(g->kc + rc_loff(g, l), g->vc + rc_loff(g, l), x->k, x->v, g->d_pslot, a->pos, (int)T,
                               g->max_len, m->nkv, m->hd, NULL, e);
    const int32_t *ids = m->layers[l].moe ? model_cuda_routed_ids(a, l) : NULL;
    for (int i = 0; !rc && rk && i < n; i++)
      for (int64_t t = 0; t < sq[i]->n_prompt; t++)
        for (int j = 0; j < m->topk; j++)
          sq[i]->routed[t * rk + (int64_t)l * m->topk + j] = ids ? ids[(off[i] + t) * m->topk + j] : -1;
  }
  for (int i = 0; i < n; i++) off[i] = off[i + 1] - 1; /* each prompt's last row */
  if (!rc) rc = model_cuda_logits_rows(a, off, n, g->rows, e);
  g->samp_b = NULL; /* the sampler reads these FP32 rows */
  for (int i = 0; !rc && g->exact && i < n; i++) /* the BF16 rows themselves, for the trainer's log-prob kernel */
    rc = !a->logits_b ? rl_errf(e, RL_EXIT_USAGE, "exact log-probs: the prefill's logits are not BF16")
                      : mc_ok(cudaMemcpyAsync(g->rows_b + (size_t)i * m->V, a->logits_b + (size_t)off[i] * m->V,
                                              (size_t)m->V * 2, cudaMemcpyDeviceToDevice, cudaStreamPerThread),
                              "cudaMemcpy (logits rows)", e);
  g->lb = g->rows_b;
  free(tok), free(off), free(ps);
  return rc ? rl_err_prefix(e, "prefill: ") : 0;
}

/* Exact mode: the log-prob of each sampled token of rows [0, n) recomputed by
 * the trainer's kernel on the same BF16 logits (ops_logprob_forward_bx_cuda at
 * temperature T, 1 for greedy T = 0, as the sampler's contract) and written
 * over the sampler's FP64 one: what the trainer computes, bit for bit. */
static int rc_exact_logp(rollout_cuda_engine *g, int n, double temperature, rl_err *e) {
  const float T = temperature > 0 ? (float)temperature : 1.0f;
  int rc;
  if ((rc = rck_sample_ids(g->xtgt, (const int32_t *)g->d_out, (int)(sizeof(sampler_out) / 4), n, NULL, e)) ||
      (rc = ops_logprob_forward_bx_cuda(g->xlp, NULL, g->xlse, g->lb, g->xtgt, n, g->m->V, T, NULL, e)) ||
      (rc = rck_sample_put_logp(&g->d_out[0].logp, (int)(sizeof(sampler_out) / sizeof(double)), g->xlp, n, NULL, e)))
    return rl_err_prefix(e, "rollout (CUDA, exact log-probs): ");
  return 0;
}

/* Queue the sampling of rows [0, n) of g->samp_b or g->rows, keyed by the sequences'
 * indices qi[] and completion positions cpos[], and the samples' download into
 * half `buf` of h_out (event ev[buf]); nothing waits. */
static int rc_sample_launch(rollout_cuda_engine *g, const int64_t *qi, const int64_t *cpos, int n, int G, int64_t it,
                            const rollout_opts *o, int buf, rl_err *e) {
  int rc;
  sampler_params sp = sampler_default_params();
  sp.temperature = o->temperature, sp.greedy = o->greedy, sp.top_k = o->top_k, sp.top_p = o->top_p, sp.min_p = o->min_p;
  sampler_key *hk = g->h_keys + (size_t)buf * g->slots; /* the other half may still be uploading */
  for (int i = 0; i < n; i++)
    hk[i] = (sampler_key){o->seed, (uint32_t)it, (uint32_t)(o->prompt_base + qi[i] / G), (uint32_t)(qi[i] % G),
                        (uint32_t)cpos[i]};
  RC(cudaMemcpyAsync(g->d_keys, hk, (size_t)n * sizeof *hk, cudaMemcpyHostToDevice, cudaStreamPerThread),
     "cudaMemcpy (keys)");
  if (rp_skip() >> RP_SAMPLE & 1u) { /* the diagnostic: token 0, status OK, instead of the sampler */
    RC(cudaMemsetAsync(g->d_out, 0, (size_t)n * sizeof *g->d_out, cudaStreamPerThread), "cudaMemset (samples)");
  } else if ((rc = g->samp_b ? sampler_sample_bf16_cuda(&sp, g->samp_b, n, g->m->V, g->m->V, g->d_keys, g->d_out, NULL, e)
                             : sampler_sample_cuda(&sp, g->rows, n, g->m->V, g->m->V, g->d_keys, g->d_out, NULL, e))) {
    return rc;
  } else if (g->exact && (rc = rc_exact_logp(g, n, o->temperature, e))) {
    return rc;
  }
  RC(cudaMemcpyAsync(g->h_out + (size_t)buf * g->slots, g->d_out, (size_t)n * sizeof *g->d_out, cudaMemcpyDeviceToHost,
                     cudaStreamPerThread),
     "cudaMemcpy (samples)");
  if (rp.armed) rp_mark(RP_SAMPLE);
  RC(cudaEventRecord(g->ev[buf], cudaStreamPerThread), "cudaEventRecord (samples)");
  return 0;
}

/* Wait for the samples of half `buf` (rc_sample_launch of rows [0, n) for
 * sequences sq[]); append each token and log-prob and decide finishing.
 * Rows of sequences that finished already (a pipelined step queued before
 * their last sample was read) are dropped. */
static int rc_sample_take(rollout_cuda_engine *g, rc_seq **sq, const int64_t *qi, int n, int G, const rollout_opts *o,
                          int buf, rl_err *e) {
  int rc;
  RC(cudaEventSynchronize(g->ev[buf]), "the decode step");
  const sampler_out *so = g->h_out + (size_t)buf * g->slots;
  rp_collect();
  stop_rule rule = rollout_stop_rule(o, g->tok);
  int32_t eos = rule.eos;
  for (int i = 0; i < n; i++) {
    rc_seq *q = sq[i];
    if (q->fin) continue;
    if (so[i].status != SAMPLER_OK)
      return rl_errf(e, RL_EXIT_FAIL, "rollout (CUDA): prompt %lld sample %lld position %lld: %s logits",
                     (long long)(o->prompt_base + qi[i] / G), (long long)(qi[i] % G), (long long)q->n_comp,
                     so[i].status == SAMPLER_NONFINITE ? "non-finite" : "all -inf");
    q->ids[q->n_prompt + q->n_comp] = so[i].token;
    q->logp[q->n_comp++] = (float)so[i].logp;
    if (g->tok && so[i].token < g->tok->vocab) { /* the stop rules, as the CPU engine applies them */
      if (stop_seq_push(&q->stop, &rule, g->tok, so[i].token, e) < 0)
        return rl_err_prefix(e, "rollout (CUDA): prompt %lld sample %lld: ",
                             (long long)(o->prompt_base + qi[i] / G), (long long)(qi[i] % G));
      q->fin = q->stop.reason;
    } else if (g->tok) { /* an id of the padded model vocabulary the tokenizer lacks: no text */
      q->stop.n_tokens++;
      if (q->stop.n_tokens >= o->max_new_tokens) q->stop.reason = FINISH_LENGTH;
      q->fin = q->stop.reason;
    } else if (eos >= 0 && so[i].token == eos) {
      q->fin = FINISH_EOS;
    } else if (q->n_comp >= o->max_new_tokens) {
      q->fin = FINISH_LENGTH;
    }
  }
  return 0;
}

/* A decode step queued and not yet read: its rows (sequence, index, slot). */
typedef struct rc_flight {
  int n, buf;
  rc_seq **sq;
  int64_t *qi;
  int32_t *slot;
} rc_flight;

/* Read the step in flight (if any), free the slots of the sequences it
 * finished. */
static int rc_land(rollout_cuda_engine *g, rc_flight *f, int64_t *slot_seq, int G, const rollout_opts *o, rl_err *e) {
  if (!f->n) return 0;
  int rc = rc_sample_take(g, f->sq, f->qi, f->n, G, o, f->buf, e);
  for (int i = 0; i < f->n && !rc; i++)
    if (f->sq[i]->fin && slot_seq[f->slot[i]] == f->qi[i]) slot_seq[f->slot[i]] = -1;
  f->n = 0;
  return rc;
}

/* The slot loop of one generate call over N sequences. Decode steps are
 * pipelined (models without MoE layers, no RLRUN_ROLLOUT_PROFILE, not
 * RLRUN_ROLLOUT_PIPE=0): step t+1
 * is queued — its tokens gathered on the device from step t's samples
 * (rck_step_tokens) — before the host reads step t's samples, so the host's
 * part of a step (the stop rules, the next step's inputs, the launches)
 * overlaps the device's step instead of leaving the GPU idle (bf16 batch 64:
 * 0.08 ms of a 2.2 ms step, H100). A sequence that step t finishes by EOS or a
 * stop string is computed once more at t+1 and that row dropped; one that
 * reaches max_new_tokens at t is left out of t+1. Rows are batch-invariant, so
 * every sample is the one the unpipelined loop draws. Slots free up one step
 * later; admitting new sequences (a prefill) first lands the step in flight. */
static int rc_run(rollout_cuda_engine *g, rc_seq *seq, int64_t N, int G, int64_t it, const rollout_opts *o, int rk,
                  rl_err *e) {
  model *m = g->m;
  int S = o->max_slots > 0 && o->max_slots < g->slots ? o->max_slots : g->slots, rc = 0, n, buf = 0;
  const int pipe = !rk && !m->E && !rp_enabled() && rl_env_bool("RLRUN_ROLLOUT_PIPE", 1);
  int64_t *slot_seq = rl_xmalloc((size_t)S * 8), next = 0, *qi = rl_xmalloc((size_t)S * 8),
          *cpos = rl_xmalloc((size_t)S * 8);
  rc_seq **sq = rl_xmalloc((size_t)S * sizeof *sq);
  int32_t *tok = rl_xmalloc((size_t)S * 4), *slot = rl_xmalloc((size_t)S * 4), *pos = rl_xmalloc((size_t)S * 4),
          *map = rl_xmalloc((size_t)S * 4), *fin_row = rl_xmalloc((size_t)S * 4);
  rc_flight fl = {0, 0, rl_xmalloc((size_t)S * sizeof(rc_seq *)), rl_xmalloc((size_t)S * 8), rl_xmalloc((size_t)S * 4)};
  for (int s = 0; s < S; s++) slot_seq[s] = -1, fin_row[s] = -1;
  for (;;) {
    if (rollout_cancelled(o)) {
      rc = rl_errf(e, RL_EXIT_FAIL, "rollout cancelled");
      break;
    }
    int admit = 0;
    for (int s = 0; s < S && next < N && !admit; s++) admit = slot_seq[s] < 0;
    if (admit && fl.n && (rc = rc_land(g, &fl, slot_seq, G, o, e))) break;
    n = 0; /* admit waiting sequences into free slots, lowest slot first */
    for (int s = 0; s < S && next < N; s++)
      if (slot_seq[s] < 0) slot_seq[s] = next, qi[n] = next, sq[n] = &seq[next], cpos[n] = 0, slot[n++] = s, next++;
    if (n && !(rc = rc_prefill(g, sq, slot, n, rk, e)) && !(rc = rc_sample_launch(g, qi, cpos, n, G, it, o, buf, e)))
      rc = rc_sample_take(g, sq, qi, n, G, o, buf, e);
    for (int i = 0; i < n && !rc; i++)
      if (sq[i]->fin) slot_seq[slot[i]] = -1;
    if (rc) break;
    /* one decode row per active slot, slot order; fin_row: its row in the step in flight */
    for (int i = 0; i < fl.n; i++) fin_row[fl.slot[i]] = fl.sq[i]->fin ? -1 : i;
    n = 0;
    for (int s = 0; s < S; s++) {
      if (slot_seq[s] < 0) continue;
      rc_seq *q = &seq[slot_seq[s]];
      const int in_flight = fl.n && fin_row[s] >= 0 && fl.qi[fin_row[s]] == slot_seq[s];
      const int64_t c = q->n_comp + in_flight; /* completion tokens once the step in flight is read */
      if (q->fin || c >= o->max_new_tokens) continue; /* finishes by length at the step in flight */
      qi[n] = slot_seq[s], sq[n] = q, slot[n] = s, cpos[n] = c, pos[n] = (int32_t)(q->n_prompt + c - 1);
      map[n] = in_flight ? fin_row[s] : -1;
      tok[n++] = in_flight ? 0 : q->ids[q->n_prompt + q->n_comp - 1];
    }
    for (int i = 0; i < fl.n; i++) fin_row[fl.slot[i]] = -1;
    if (!n) {
      if (fl.n) {
        if ((rc = rc_land(g, &fl, slot_seq, G, o, e))) break;
        continue;
      }
      if (next >= N) break;
      continue;
    }
    if ((rc = rc_decode(g, n, tok, slot, pos, map, buf, e))) break;
    for (int l = 0; rk && l < m->L; l++) {
      const int32_t *ids = m->layers[l].moe ? model_cuda_routed_ids(g->da, l) : NULL;
      for (int i = 0; i < n; i++)
        for (int j = 0; j < m->topk; j++)
          sq[i]->routed[(int64_t)pos[i] * rk + (int64_t)l * m->topk + j] = ids ? ids[i * m->topk + j] : -1;
    }
    if ((rc = rc_sample_launch(g, qi, cpos, n, G, it, o, buf, e))) break;
    if (fl.n && (rc = rc_land(g, &fl, slot_seq, G, o, e))) break; /* the step before, while this one runs */
    fl.n = n, fl.buf = buf;
    memcpy(fl.sq, sq, (size_t)n * sizeof *sq), memcpy(fl.qi, qi, (size_t)n * 8), memcpy(fl.slot, slot, (size_t)n * 4);
    buf ^= 1;
    if (!pipe && (rc = rc_land(g, &fl, slot_seq, G, o, e))) break;
  }
  if (rc) cudaStreamSynchronize(cudaStreamPerThread); /* no copy still writes the host halves */
  free(slot_seq), free(qi), free(cpos), free(sq), free(tok), free(slot), free(pos), free(map), free(fin_row);
  free(fl.sq), free(fl.qi), free(fl.slot);
  return rc;
}

int rollout_cuda_generate_ids(rollout_cuda_engine *g, const int32_t *const *ids, const int64_t *n_ids,
                              int64_t n_prompts, int G, int64_t iteration, const rollout_opts *o,
                              rollout_batch *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  model *m = g->m;
  if (n_prompts < 0 || G < 1 || o->max_new_tokens < 1 || o->prompt_base < 0 || o->prompt_base + n_prompts > UINT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "rollout_cuda_generate_ids: need n_prompts >= 0, G >= 1, max_new_tokens >= 1 and "
                   "prompt_base + n_prompts in [0, 2^32)");
  if (o->n_stop > 0 && !g->tok)
    return rl_errf(e, RL_EXIT_USAGE,
                   "rollout_cuda_generate_ids: stop strings need a tokenizer (rollout_cuda_engine_set_tokenizer)");
  for (int64_t p = 0; p < n_prompts; p++) {
    if (n_ids[p] < 1 || n_ids[p] + o->max_new_tokens > g->max_len)
      return rl_errf(e, RL_EXIT_USAGE,
                     "rollout_cuda_generate_ids: prompt %lld has %lld tokens; with max_new_tokens %lld it must fit the "
                     "engine's max_len %lld (make the engine longer)",
                     (long long)(o->prompt_base + p), (long long)n_ids[p], (long long)o->max_new_tokens,
                     (long long)g->max_len);
    for (int64_t t = 0; t < n_ids[p]; t++)
      if (ids[p][t] < 0 || ids[p][t] >= m->V)
        return rl_errf(e, RL_EXIT_USAGE, "rollout_cuda_generate_ids: prompt %lld token %lld = %d is outside [0, %d)",
                       (long long)(o->prompt_base + p), (long long)t, ids[p][t], m->V);
  }
  int rc = rc_views(g, e);
  if (rc) return rl_err_prefix(e, "rollout_cuda_generate_ids: ");
  double t0 = rl_now();
  int rk = m->E > 0 ? m->L * m->topk : 0;
  int64_t N = n_prompts * G;
  rc_seq *seq = rl_xcalloc((size_t)(N ? N : 1), sizeof *seq);
  for (int64_t i = 0; i < N; i++) {
    rc_seq *q = &seq[i];
    q->n_prompt = n_ids[i / G];
    q->ids = rl_xmalloc((size_t)(q->n_prompt + o->max_new_tokens) * 4);
    memcpy(q->ids, ids[i / G], (size_t)q->n_prompt * 4);
    q->logp = rl_xmalloc((size_t)o->max_new_tokens * 4);
    stop_seq_init(&q->stop);
    if (rk) {
      q->routed = rl_xmalloc((size_t)(q->n_prompt + o->max_new_tokens) * rk * 4);
      for (int64_t j = 0; j < (q->n_prompt + o->max_new_tokens) * rk; j++) q->routed[j] = -1;
    }
  }
  rc = N ? rc_run(g, seq, N, G, iteration, o, rk, e) : 0;
  if (!rc) rc = model_cuda_sync(e);
  if (rc) {
    for (int64_t i = 0; i < N; i++) free(seq[i].ids), free(seq[i].logp), free(seq[i].routed), stop_seq_free(&seq[i].stop);
    free(seq);
    return rl_err_prefix(e, "rollout_cuda_generate_ids: ");
  }
  out->iteration = iteration, out->n_prompts = n_prompts, out->group = G, out->n = N;
  out->route_layers = rk ? m->L : 0, out->route_topk = rk ? m->topk : 0;
  out->s = rl_xcalloc((size_t)(N ? N : 1), sizeof *out->s);
  for (int64_t i = 0; i < N; i++) {
    rc_seq *q = &seq[i];
    rollout_sample *s = &out->s[i];
    s->prompt_index = o->prompt_base + i / G, s->sample_index = i % G, s->data_index = -1;
    s->prompt_text = rl_xstrdup(""), s->extra_json = rl_xstrdup("{}");
    s->completion_text = q->stop.text ? q->stop.text : rl_xstrdup(""); /* taken over from the stop state */
    q->stop.text = NULL;
    tokenizer_fix_utf8(&s->completion_text); /* byte-level BPE may end inside a character */
    s->prompt_ids = rl_xmalloc((size_t)q->n_prompt * 4);
    memcpy(s->prompt_ids, q->ids, (size_t)q->n_prompt * 4);
    s->n_prompt = q->n_prompt, s->n_completion = q->n_comp;
    s->completion_ids = rl_xmalloc((size_t)(q->n_comp ? q->n_comp : 1) * 4);
    memcpy(s->completion_ids, q->ids + q->n_prompt, (size_t)q->n_comp * 4);
    s->logp_rollout = q->logp, s->routed = q->routed;
    s->finish = q->fin, s->stop_index = q->fin == FINISH_STOP ? q->stop.stop_index : -1;
    stop_seq_free(&q->stop);
    out->n_generated += q->n_comp;
    free(q->ids);
  }
  free(seq);
  out->wall_s = rl_now() - t0;
  return 0;
}

#else /* ---------------------------------------------------------------- no CUDA */

struct rollout_cuda_engine {
  int unused;
};

int rollout_cuda_engine_new(model *m, const quant_policy *policy, int slots, int64_t max_len,
                            rollout_cuda_engine **out, rl_err *e) {
  (void)m, (void)policy, (void)slots, (void)max_len;
  *out = NULL;
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "rollout_cuda_engine_new: this binary was built without CUDA; rebuild with nvcc available or use device: cpu");
}
void rollout_cuda_engine_free(rollout_cuda_engine *g) { free(g); }
void rollout_cuda_engine_set_tokenizer(rollout_cuda_engine *g, const tokenizer *t) { (void)g, (void)t; }
void rollout_cuda_profile_thread_off(void) {}
int64_t rollout_cuda_cache_bytes(const rollout_cuda_engine *g) { return g ? 0 : -1; }
int rollout_cuda_bf16_handoff(int set) {
  (void)set;
  return 0;
}
int rollout_cuda_attn_q8(int set) {
  (void)set;
  return 0;
}
int rollout_cuda_logits_b(int set) {
  (void)set;
  return 0;
}
long long rollout_cuda_handoffs(const rollout_cuda_engine *g) { return g ? 0 : -1; }
long long rollout_cuda_norm_q8s(const rollout_cuda_engine *g) { return g ? 0 : -1; }
int rollout_cuda_generate_ids(rollout_cuda_engine *g, const int32_t *const *ids, const int64_t *n_ids,
                              int64_t n_prompts, int G, int64_t iteration, const rollout_opts *o,
                              rollout_batch *out, rl_err *e) {
  (void)g, (void)ids, (void)n_ids, (void)n_prompts, (void)G, (void)iteration, (void)o;
  memset(out, 0, sizeof *out);
  return rl_errf(e, RL_EXIT_HARDWARE, "rollout_cuda_generate_ids: this binary was built without CUDA");
}
#endif
