/* bench_rollout.c — the CUDA rollout engine on a Qwen3-0.6B-shaped model
 * (random weights): 64-token prompts, 256 new tokens (EOS ignored), batch 64
 * and 256, BF16 and fp8-block. Reports tokens/s and the share of the
 * memory-bandwidth bound: per decode step the weights (the engine's linear
 * views in the bytes of the format each view has under the policy, codes and
 * scales: lm_head — the tied embedding, read once — stays BF16 under every
 * policy, FORMATS.md "What is never quantized"; embedding row reads ignored)
 * and the KV cache read (K and V in BF16 over the mean context), divided by
 * the device copy bandwidth measured in this run (bytes
 * read + written per second: a step's reads stream at that rate). The peer
 * (transformers generate, tests/oracle/bench_hf_generate.py) is measured by
 * the run.sh section just before and passed in with --peer TOK_S.
 *
 *   build/bench_rollout [--new N] [--peer TOK_S] [--batch 64|256] [--policy bf16|fp8-block] [--pin 0|1]
 *                                                     a markdown table; --pin 1: the exact mode (precision.exact_logprobs:
 *                                                     pinned GEMMs, decode by the forward's kernels) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/device.h"
#include "kernels/formats.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "stages/rollout_cuda.h"
#include "stages/sync.h" /* sync_part_bytes */

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#include "bench/attn_trace.h" /* -DRCK_TRACE builds: the last step's attention timeline */
#include "bench/bench_cuda.h"

/* Bytes a decode step reads of weight view q (on the device): its codes and
 * scales, as the sync's manifest counts them. */
static double view_bytes(const qtensor *q) {
  if (q->fmt == QFMT_BF16) return (double)sync_part_bytes(QFMT_BF16, SYNC_PART_BF16, q->rows, q->cols, 1);
  double b = (double)sync_part_bytes(q->fmt, SYNC_PART_DATA, q->rows, q->cols, 1) +
             (double)sync_part_bytes(q->fmt, SYNC_PART_SCALES, q->rows, q->cols, 1);
  return q->fmt == QFMT_NVFP4 ? b + (double)sync_part_bytes(q->fmt, SYNC_PART_SDEC, q->rows, q->cols, 1) : b;
}

/* BF16 bits of U(−a, a) (a = 0: U(0.5, 1.5) for norm weights), xorshift. */
static uint16_t rand_bf16(uint64_t *s, float a) {
  *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
  float u = (float)((double)(*s >> 40) / 16777216.0);
  float v = a > 0 ? (2 * u - 1) * a : 0.5f + u;
  return fmt_bf16_from_f32(v);
}

#define MUST(x)                                              \
  do {                                                       \
    if (x) {                                                 \
      fprintf(stderr, "bench_rollout: %s\n", e.msg);         \
      return 1;                                              \
    }                                                        \
  } while (0)

int main(int argc, char **argv) {
  int new_tokens = 256, plen = 64, only_batch = 0, pin = 0;
  const char *only_pol = NULL;
  double peer = 0;
  for (int i = 1; i + 1 < argc; i += 2)
    if (!strcmp(argv[i], "--new")) new_tokens = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--peer")) peer = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch")) only_batch = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--policy")) only_pol = argv[i + 1];
    else if (!strcmp(argv[i], "--pin")) pin = atoi(argv[i + 1]);
    else {
      fprintf(stderr,
              "bench_rollout: unknown option %s (use --new N, --peer TOK_S, --batch 64|256, --policy bf16|fp8-block, "
              "--pin 0|1)\n",
              argv[i]);
      return 2;
    }
  if (new_tokens < 1 || (only_batch && only_batch != 64 && only_batch != 256) ||
      (only_pol && strcmp(only_pol, "bf16") && strcmp(only_pol, "fp8-block"))) {
    fprintf(stderr, "bench_rollout: --new must be >= 1, --batch 64 or 256, --policy bf16 or fp8-block\n");
    return 2;
  }
  rl_err e = {0};
  device_info di;
  device_query(&di);
  if (di.n_gpus == 0) {
    printf("bench_rollout: skipped: %s\n", di.status);
    return 0;
  }
  model_config c;
  memset(&c, 0, sizeof c);
  c.kind = MODEL_KIND_QWEN3;
  snprintf(c.model_type, sizeof c.model_type, "qwen3");
  snprintf(c.rope_type, sizeof c.rope_type, "default");
  snprintf(c.hidden_act, sizeof c.hidden_act, "silu");
  c.vocab_size = 151936, c.hidden_size = 1024, c.intermediate_size = 3072, c.num_hidden_layers = 28;
  c.num_attention_heads = 16, c.num_key_value_heads = 8, c.head_dim = 128;
  c.max_position_embeddings = 40960, c.rms_norm_eps = 1e-6, c.rope_theta = 1e6, c.rope_factor = 1;
  c.tie_word_embeddings = 1;
  model *m = NULL;
  MUST(model_create(&c, NULL, &m, &e));
  uint64_t s = 0x2545F4914F6CDD1Dull;
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    float a = p->cols == 1 ? 0 : sqrtf(3.0f / (float)p->cols);
    for (int64_t j = 0; j < p->rows * p->cols; j++) p->w[j] = rand_bf16(&s, a);
  }
  MUST(model_cuda_init(m, &e));
  double bw = bench_copy_bw();
  printf("bench_rollout: Qwen3-0.6B shape (random), prompt %d, new %d, copy bandwidth %.0f GB/s%s\n", plen, new_tokens,
         bw / 1e9, pin ? ", exact mode (pin_algo: pinned GEMMs, the forward's kernels)" : "");
  if (peer > 0) printf("bench_rollout: peer (transformers generate, batch 64) %.0f tok/s\n", peer);
  printf("| policy | batch | tokens/s | step ms | bytes/step (MB) | of which lm_head | bound tok/s | %% of bound | x peer |\n"
         "|---|---|---|---|---|---|---|---|---|\n");
  int batches[2] = {64, 256};
  qformat fm[2] = {QFMT_BF16, QFMT_FP8_BLOCK};
  for (int f = 0; f < 2; f++)
    for (int bi = 0; bi < 2; bi++) {
      int B = batches[bi];
      if ((only_batch && B != only_batch) || (only_pol && strcmp(only_pol, fm[f] == QFMT_BF16 ? "bf16" : "fp8-block")))
        continue;
      quant_policy pol;
      quant_policy_init(&pol, fm[f], fm[f]);
      pol.pin_algo = pin; /* 1: the exact mode (rows == the trainer's, bit for bit) */
      rollout_cuda_engine *g = NULL;
      MUST(rollout_cuda_engine_new(m, &pol, B, plen + new_tokens, &g, &e));
      /* the weight bytes of a step: every view as the engine holds it now */
      const qtensor **views = calloc((size_t)m->n_params, sizeof *views), *head = NULL;
      MUST(views ? model_cuda_linear_views(m, views, &head, &e) : rl_errf(&e, RL_EXIT_FAIL, "out of memory"));
      MUST(head ? 0 : rl_errf(&e, RL_EXIT_FAIL, "the engine's model has no lm_head view"));
      double wbytes = view_bytes(head), wb_head = wbytes;
      for (int i = 0; i < m->n_params; i++)
        if (views[i]) wbytes += view_bytes(views[i]);
      free(views);
      int32_t **ids = malloc((size_t)B * sizeof *ids);
      int64_t *n = malloc((size_t)B * 8);
      for (int p = 0; p < B; p++) {
        ids[p] = malloc((size_t)plen * 4), n[p] = plen;
        for (int t = 0; t < plen; t++) ids[p][t] = (int32_t)((p * 7919 + t * 104729) % c.vocab_size);
      }
      rollout_opts o;
      rollout_opts_default(&o);
      o.temperature = 1.0, o.seed = 1, o.max_new_tokens = new_tokens, o.ignore_eos = 1, o.eos_id = -1, o.max_slots = B;
      rollout_batch b;
      MUST(rollout_cuda_generate_ids(g, (const int32_t *const *)ids, n, B, 1, 0, &o, &b, &e)); /* warm-up */
      rollout_batch_free(&b);
#ifdef RCK_TRACE
      MUST(rck_trace_clear() ? rl_errf(&e, RL_EXIT_FAIL, "bench_rollout: clearing the attention trace") : 0);
#endif
      MUST(rollout_cuda_generate_ids(g, (const int32_t *const *)ids, n, B, 1, 1, &o, &b, &e));
      double tps = (double)b.n_generated / b.wall_s, step = b.wall_s / new_tokens;
      double kv = (double)B * m->L * m->nkv * m->hd * (2 + 2) * (plen + new_tokens / 2.0);
      double bound_step = (wbytes + kv) / bw;
      char px[32] = "-";
      if (peer > 0) snprintf(px, sizeof px, "%.1f", tps / peer);
      printf("| %s | %d | %.0f | %.2f | %.0f | %.0f (%s) | %.0f | %.1f | %s |\n", fm[f] == QFMT_BF16 ? "bf16" : "fp8-block",
             B, tps, step * 1e3, (wbytes + kv) / 1e6, wb_head / 1e6, qtensor_format_name(head->fmt), B / bound_step,
             100.0 * bound_step / step, px);
#ifdef RCK_TRACE /* the decode attention of the last layer of the last step */
      attn_trace_report(fm[f] == QFMT_BF16 ? "bf16, the last step's last layer" : "fp8-block, the last step's last layer",
                        (size_t)B * m->nkv * 8);
#endif
      rollout_batch_free(&b);
      for (int p = 0; p < B; p++) free(ids[p]);
      free(ids), free(n);
      rollout_cuda_engine_free(g);
    }
  model_free(m);
  return 0;
}
#else
int main(void) {
  printf("bench_rollout: skipped (built without CUDA)\n");
  return 0;
}
#endif
