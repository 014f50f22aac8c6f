/* bench_model.c — the CUDA model on a Qwen3-0.6B-shaped model (hidden 1024,
 * 28 layers, 16 heads, 8 KV heads, head_dim 128, FFN 3072, vocab 151936,
 * tied embeddings, random weights):
 *
 *   train    16 × 512 tokens: forward + log-probs + backward + AdamW (FP32
 *            main params) + re-quantization of the weights (the sync of a
 *            quantized policy; nothing for BF16), tokens/s and MFU
 *   prefill  64 × 320 tokens: forward + per-token log-probs, tokens/s
 *
 * in BF16 and in unified fp8-block (every linear layer but the router and
 * lm_head, FORMATS.md). Times are wall-clock medians of 5 after 2 warm-ups,
 * the device synchronised at the end of each iteration.
 *
 * MFU = FLOPs / time / 989e12 (H200 dense BF16 peak, also for fp8-block: the
 * same work measured against the BF16 peak), with
 *   FLOPs(train)   = 6·N·tokens + 6·L·n_heads·head_dim·Σ_seq S²   (attention
 *                    QKᵀ and PV, causal half: 2·2·S²/2·d per head forward,
 *                    ×3 with the backward)
 *   FLOPs(prefill) = 2·N·tokens + 2·L·n_heads·head_dim·Σ_seq S²
 *   N = parameters of every linear layer, lm_head included (596 M here; the
 *       tied embedding is counted once, as the lm_head GEMM).
 *
 *   bench_model [--peer-train TOK/S] [--peer-prefill TOK/S] [--steps N]
 * The peer (HF transformers + PyTorch bf16, tests/oracle/bench_peer.py) is
 * given on the command line when measured in the same call; otherwise the
 * numbers measured earlier on this H200 (GPU.md: 45k and 147k tok/s) are used
 * and marked "earlier". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/device.h"
#include "kernels/devprof.h"
#include "kernels/formats.h"
#include "kernels/linear.h"
#include "kernels/optim.h"
#include "model/model.h"
#include "model/model_cuda.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#define H200_BF16_PEAK 989e12

/* Fail the benchmark with the message of a failed call. */
#define MUST(call)                                                     \
  do {                                                                 \
    rl_err e_ = {0};                                                   \
    rl_err *e = &e_;                                                   \
    if ((call) != 0) {                                                 \
      fprintf(stderr, "bench_model: %s failed: %s\n", #call, e_.msg);  \
      exit(1);                                                         \
    }                                                                  \
    (void)e;                                                           \
  } while (0)

/* The Qwen3-0.6B shape. */
static void bench_config(model_config *c) {
  memset(c, 0, sizeof *c);
  c->kind = MODEL_KIND_QWEN3;
  snprintf(c->model_type, sizeof c->model_type, "qwen3");
  snprintf(c->rope_type, sizeof c->rope_type, "default");
  snprintf(c->hidden_act, sizeof c->hidden_act, "silu");
  c->vocab_size = 151936, c->hidden_size = 1024, c->intermediate_size = 3072, c->num_hidden_layers = 28;
  c->num_attention_heads = 16, c->num_key_value_heads = 8, c->head_dim = 128;
  c->max_position_embeddings = 40960, c->rms_norm_eps = 1e-6, c->rope_theta = 1e6, c->rope_factor = 1;
  c->tie_word_embeddings = 1;
}

/* BF16 bits of U(−a, a) (a = 0: U(0.5, 1.5) for norm weights), xorshift. */
static uint16_t rand_bf16(uint64_t *s, float a) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  float u = (float)((double)(*s >> 40) / 16777216.0);
  float v = a > 0 ? (2 * u - 1) * a : 0.5f + u;
  return fmt_bf16_from_f32(v);
}

static int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Linear-layer parameters (lm_head counted once when tied). */
static double linear_params(const model *m) {
  double n = 0;
  for (int i = 0; i < m->n_params; i++)
    if (m->params[i].cols > 1) n += (double)m->params[i].rows * m->params[i].cols;
  return n;
}

/* A packed batch of n_seq sequences of len random tokens. */
static model_batch make_batch(int n_seq, int len, int V, uint64_t *s, int32_t **tok, int32_t **off, int32_t **tg) {
  int T = n_seq * len;
  *tok = rl_xmalloc((size_t)T * 4), *off = rl_xmalloc((size_t)(n_seq + 1) * 4), *tg = rl_xmalloc((size_t)T * 4);
  for (int t = 0; t < T; t++) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    (*tok)[t] = (int32_t)((*s >> 20) % (uint64_t)V);
  }
  for (int i = 0; i <= n_seq; i++) (*off)[i] = i * len;
  model_batch b = {T, *tok, {n_seq, *off}};
  model_targets_next(*tok, &b.seqs, T, *tg);
  return b;
}

/* Device bytes of the last bench_mode's activations. */
static size_t g_acts_bytes;

/* Median seconds of `steps` iterations of one mode after 2 warm-ups; train = 1
 * runs the whole training step (2: with activation recomputation). Fills
 * parts[0..3] = forward, backward, optim, quantize medians for train. */
static double bench_mode(model *m, const quant_policy *p, int train, int n_seq, int len, int steps,
                         optim_tensor *ot, double parts[4]) {
  uint64_t s = 12345;
  int32_t *tok, *off, *tg;
  model_batch b = make_batch(n_seq, len, m->V, &s, &tok, &off, &tg);
  float *logp = rl_xmalloc((size_t)b.T * 4), *dlogp = rl_xmalloc((size_t)b.T * 4);
  model_cuda_acts *a = model_cuda_acts_new();
  optim_cfg oc;
  optim_cfg_default(&oc);
  oc.lr = 1e-5;
  double *t = rl_xcalloc((size_t)steps, sizeof(double)), *tp[4];
  for (int k = 0; k < 4; k++) tp[k] = rl_xcalloc((size_t)steps, sizeof(double));
  MUST(model_cuda_quantize(m, p, e));
  for (int it = -2; it < steps; it++) {
    double t0 = rl_now(), t1, t2, t3;
    model_fwd_opts fo = {.no_grad = !train, .recompute = train == 2}; /* prefill: forward only (one layer's activations) */
    MUST(model_cuda_forward(m, &b, &fo, a, e));
    MUST(model_cuda_logprob_forward(m, a, tg, 1.0f, logp, NULL, e));
    MUST(model_cuda_sync(e));
    t1 = rl_now();
    t2 = t3 = t1;
    if (train) {
      model_loss_ce(logp, tg, b.T, dlogp);
      MUST(model_cuda_grads_zero(m, e));
      MUST(model_cuda_backward_logprob(m, a, dlogp, NULL, e));
      MUST(model_cuda_sync(e));
      t2 = rl_now();
      optim_info info;
      MUST(optim_step_cuda(&oc, ot, m->n_params, it + 3, &info, NULL, e));
      MUST(model_cuda_sync(e));
      t3 = rl_now();
      MUST(model_cuda_quantize(m, p, e));
      MUST(model_cuda_sync(e));
    }
    double t4 = rl_now();
    if (it >= 0) t[it] = t4 - t0, tp[0][it] = t1 - t0, tp[1][it] = t2 - t1, tp[2][it] = t3 - t2, tp[3][it] = t4 - t3;
    devprof_step(); /* RLRUN_MODEL_PROFILE=1: forward + backward by phase (AdamW and quantization unmarked) */
    if (it < 0) devprof_reset();
  }
  if (devprof_on()) {
    printf("%s %s:\n", train ? "train step" : "prefill", qtensor_format_name(p->fmt[LINEAR_ATTN]));
    devprof_report(stdout);
  }
  qsort(t, (size_t)steps, sizeof(double), cmp_dbl);
  for (int k = 0; k < 4; k++) {
    qsort(tp[k], (size_t)steps, sizeof(double), cmp_dbl);
    parts[k] = tp[k][steps / 2];
    free(tp[k]);
  }
  double med = t[steps / 2];
  g_acts_bytes = model_cuda_acts_bytes(a);
  free(t), free(logp), free(dlogp), free(tok), free(off), free(tg);
  model_cuda_acts_free(a);
  return med;
}

/* The share of the attention kernels in a training step: forward and backward
 * of one layer at the training shape (median of 5), times the layer count. */
static void bench_attention(const model *m, int n_seq, int len) {
  int T = n_seq * len;
  size_t qn = (size_t)T * m->nq * m->hd, kn = (size_t)T * m->nkv * m->hd;
  float *buf[9];
  int32_t *off = NULL, *hoff = rl_xmalloc((size_t)(n_seq + 1) * 4);
  size_t sz[9] = {qn, kn, kn, qn, (size_t)T * m->nq, qn, kn, kn, qn};
  for (int i = 0; i < 9; i++)
    if (cudaMalloc((void **)&buf[i], sz[i] * 4) || cudaMemset(buf[i], 0, sz[i] * 4)) return;
  for (int i = 0; i <= n_seq; i++) hoff[i] = i * len;
  if (cudaMalloc((void **)&off, (size_t)(n_seq + 1) * 4) ||
      cudaMemcpy(off, hoff, (size_t)(n_seq + 1) * 4, cudaMemcpyHostToDevice))
    return;
  ops_seqs sq = {n_seq, off};
  ops_attn_shape sh = {T, m->nq, m->nkv, m->hd};
  double tf[7], tb[7];
  for (int it = 0; it < 7; it++) {
    double t0 = rl_now();
    MUST(ops_attention_forward_cuda(buf[3], NULL, buf[4], buf[0], buf[1], buf[2], &sq, len, sh, NULL, e));
    MUST(model_cuda_sync(e));
    double t1 = rl_now();
    MUST(ops_attention_backward_cuda(buf[5], buf[6], buf[7], buf[8], buf[3], buf[4], buf[0], buf[1], buf[2], &sq, len,
                                     sh, NULL, e));
    MUST(model_cuda_sync(e));
    tf[it] = t1 - t0, tb[it] = rl_now() - t1;
  }
  qsort(tf + 2, 5, sizeof(double), cmp_dbl);
  qsort(tb + 2, 5, sizeof(double), cmp_dbl);
  double fl = 2.0 * m->nq * m->hd * n_seq * (double)len * len;
  printf("attention (ops_attention_*_cuda, %d x %d, %d layers): forward %.1f ms (%.1f TFLOP/s), backward %.1f ms "
         "(%.1f TFLOP/s) per step\n",
         n_seq, len, m->L, tf[4] * 1e3 * m->L, fl / tf[4] / 1e12, tb[4] * 1e3 * m->L, 2.5 * fl / tb[4] / 1e12);
  for (int i = 0; i < 9; i++) cudaFree(buf[i]);
  cudaFree(off);
  free(hoff);
}

int main(int argc, char **argv) {
  double peer_train = 45000, peer_prefill = 147000;
  int same_call = 0, steps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--peer-train")) peer_train = atof(argv[i + 1]), same_call |= 1;
    else if (!strcmp(argv[i], "--peer-prefill")) peer_prefill = atof(argv[i + 1]), same_call |= 2;
    else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
  }
  if (steps < 1) steps = 1;
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    printf("bench_model: skipped: %s\n", di.status);
    return 0;
  }
  model_config c;
  bench_config(&c);
  model *m = NULL;
  MUST(model_create(&c, NULL, &m, e));
  uint64_t s = 0x2545F4914F6CDD1Dull;
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    float a = p->cols == 1 ? 0 : sqrtf(3.0f / (float)p->cols);
    for (int64_t j = 0; j < p->rows * p->cols; j++) p->w[j] = rand_bf16(&s, a);
  }
  MUST(model_cuda_init(m, e));
  MUST(model_cuda_grads_zero(m, e));
  /* AdamW state on the device: FP32 main = the BF16 weights, moments 0 */
  optim_tensor *ot = rl_xcalloc((size_t)m->n_params, sizeof(optim_tensor));
  MUST(model_cuda_optim_views(m, ot, e));
  for (int i = 0; i < m->n_params; i++) {
    size_t n = (size_t)ot[i].n;
    if (cudaMalloc((void **)&ot[i].main, n * 4) || cudaMalloc((void **)&ot[i].m, n * 4) ||
        cudaMalloc((void **)&ot[i].v, n * 4) || cudaMemset(ot[i].m, 0, n * 4) || cudaMemset(ot[i].v, 0, n * 4)) {
      fprintf(stderr, "bench_model: cudaMalloc of the optimizer state failed\n");
      return 1;
    }
    MUST(ops_f32_from_bf16_cuda(ot[i].main, ot[i].w, n, NULL, e));
  }
  double N = linear_params(m);
  int L = m->L, nh = m->nq, hd = m->hd;
  printf("bench_model: Qwen3-0.6B shape, N = %.1f M linear parameters, %d layers; peer %s\n", N / 1e6, L,
         same_call ? "measured in this call" : "measured earlier on this H200 (GPU.md)");
  printf("| mode | precision | tokens | ms | tok/s | MFU | peer tok/s | ratio | fwd / bwd / adamw / quant ms |\n");
  printf("|---|---|---|---|---|---|---|---|---|\n");
  qformat fm[2] = {QFMT_BF16, QFMT_FP8_BLOCK};
  double acts_gib[3] = {0, 0, 0};
  for (int mode = 0; mode < 3; mode++)
    for (int f = 0; f < (mode == 2 ? 1 : 2); f++) {
      /* mode 0: train step, 1: prefill, 2: train step with activation recomputation (bf16) */
      int train = mode == 0 ? 1 : mode == 2 ? 2 : 0, n_seq = train ? 16 : 64, len = train ? 512 : 320, T = n_seq * len;
      quant_policy p;
      quant_policy_init(&p, fm[f], fm[f]);
      double parts[4];
      double sec = bench_mode(m, &p, train, n_seq, len, steps, ot, parts);
      double att = (double)L * nh * hd * n_seq * (double)len * len;
      double flops = train ? 6 * N * T + 6 * att : 2 * N * T + 2 * att;
      double tps = T / sec, peer = train ? peer_train : peer_prefill;
      acts_gib[mode] = g_acts_bytes / 1073741824.0;
      printf("| %s | %s | %d | %.1f | %.0f | %.1f%% | %.0f%s | %.2fx | %.1f / %.1f / %.1f / %.1f |\n",
             train == 2 ? "train step (recompute)" : train ? "train step" : "prefill logp", qtensor_format_name(fm[f]), T,
             sec * 1e3, tps,
             100 * flops / sec / H200_BF16_PEAK, peer, same_call & (train ? 1 : 2) ? "" : " (earlier)", tps / peer,
             parts[0] * 1e3, parts[1] * 1e3, parts[2] * 1e3, parts[3] * 1e3);
      fflush(stdout);
    }
  printf("activations on the device: train step %.2f GiB, with recomputation %.2f GiB; prefill (no_grad) %.2f GiB\n",
         acts_gib[0], acts_gib[2], acts_gib[1]);
  bench_attention(m, 16, 512);
  for (int i = 0; i < m->n_params; i++) cudaFree(ot[i].main), cudaFree(ot[i].m), cudaFree(ot[i].v);
  free(ot);
  model_free(m);
  optim_cuda_release();
  linear_release();
  printf("bench_model: done\n");
  return 0;
}
#else
int main(void) {
  printf("bench_model: built without CUDA; skipped\n");
  return 0;
}
#endif
