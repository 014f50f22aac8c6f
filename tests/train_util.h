/* train_util.h — helpers of the train stage tests (test_train*.c): micro
 * models with seeded weights and hand-made rollout batches. */
#ifndef RLRUN_TESTS_TRAIN_UTIL_H
#define RLRUN_TESTS_TRAIN_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"
#include "stages/rollout.h"

/* Deterministic pseudo-random floats in [lo, hi). */
static inline float tu_frand(uint32_t *s, float lo, float hi) {
  *s = *s * 1664525u + 1013904223u;
  return lo + (hi - lo) * (float)((*s >> 8) * (1.0 / 16777216.0));
}

/* A micro Qwen3 (dense) or Qwen3-MoE (layer 0 dense, 4 experts top-2):
 * vocab 32, 2 layers, 4 heads of 8 (2 KV heads), hidden `hidden`. Weights
 * U(±sqrt(3/fan_in)), norm weights U(0.5, 1.5); keep_f32 keeps FP32 copies. */
static inline model *tu_micro_model(int moe, int keep_f32, int hidden, uint32_t seed) {
  model_config c;
  int64_t mo[1] = {0};
  memset(&c, 0, sizeof c);
  c.kind = moe ? MODEL_KIND_QWEN3_MOE : MODEL_KIND_QWEN3;
  snprintf(c.model_type, sizeof c.model_type, "%s", moe ? "qwen3_moe" : "qwen3");
  snprintf(c.rope_type, sizeof c.rope_type, "default");
  snprintf(c.hidden_act, sizeof c.hidden_act, "silu");
  c.vocab_size = 32, c.hidden_size = hidden, c.intermediate_size = 24, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 8;
  c.max_position_embeddings = 64, c.rms_norm_eps = 1e-6, c.rope_theta = 10000.0;
  c.rope_factor = 1.0, c.tie_word_embeddings = !moe;
  c.bos_token_id = -1, c.pad_token_id = -1;
  if (moe) {
    c.num_experts = 4, c.num_experts_per_tok = 2, c.moe_intermediate_size = 8;
    c.decoder_sparse_step = 1, c.norm_topk_prob = 1;
    c.mlp_only_layers = mo, c.n_mlp_only_layers = 1;
  }
  model_load_opts lo = {1};
  model *m = NULL;
  rl_err e = {0};
  if (model_create(&c, &lo, &m, &e)) {
    harness_fail(__FILE__, __LINE__, "model_create: %s", e.msg);
    return NULL;
  }
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    float a = p->cols == 1 ? 0 : sqrtf(3.0f / (float)p->cols);
    for (int64_t j = 0; j < p->rows * p->cols; j++)
      p->w32[j] = p->cols == 1 ? tu_frand(&seed, 0.5f, 1.5f) : tu_frand(&seed, -a, a);
  }
  model_sync_bf16_from_f32(m);
  if (!keep_f32) {
    for (int i = 0; i < m->n_params; i++) free(m->params[i].w32), m->params[i].w32 = NULL;
    m->has_f32 = 0;
  }
  return m;
}

/* A bit-exact copy of m's weights into a new model of the same config. */
static inline model *tu_model_copy(model *m) {
  model_load_opts lo = {m->has_f32};
  model *c = NULL;
  rl_err e = {0};
  if (model_create(&m->cfg, &lo, &c, &e)) {
    harness_fail(__FILE__, __LINE__, "model_create: %s", e.msg);
    return NULL;
  }
  for (int i = 0; i < m->n_params; i++) {
    size_t n = (size_t)(m->params[i].rows * m->params[i].cols);
    memcpy(c->params[i].w, m->params[i].w, n * 2);
    if (m->has_f32) memcpy(c->params[i].w32, m->params[i].w32, n * 4);
  }
  return c;
}

/* Free a batch made by the helpers below. */
static inline void tu_batch_free(rollout_batch *b) {
  for (int64_t i = 0; i < b->n; i++) {
    rollout_sample *s = &b->s[i];
    free(s->prompt_ids), free(s->completion_ids), free(s->logp_rollout), free(s->routed);
  }
  free(b->s);
  memset(b, 0, sizeof *b);
}

/* A hand-made batch: P prompts x G samples, prompts of plen random tokens
 * (shared by a group), completions of 1..cmax random tokens, logp_rollout
 * around −log(32) ± 0.3, rewards in {0, 0.5, 1} (group 0 forced to vary).
 * Token ids avoid 0..2 (pad/bos/eos of the chars tokenizer). */
static inline void tu_batch_random(rollout_batch *b, const model *m, int P, int G, int plen,
                                   int cmax, uint32_t seed) {
  memset(b, 0, sizeof *b);
  b->iteration = 1, b->n_prompts = P, b->group = G, b->n = (int64_t)P * G;
  b->s = calloc((size_t)b->n, sizeof *b->s);
  for (int p = 0; p < P; p++) {
    int32_t pr[64];
    for (int j = 0; j < plen; j++) pr[j] = 3 + (int32_t)(tu_frand(&seed, 0, 1) * (float)(m->V - 3));
    for (int g = 0; g < G; g++) {
      rollout_sample *s = &b->s[p * G + g];
      s->prompt_index = p, s->sample_index = g, s->stop_index = -1, s->finish = FINISH_LENGTH;
      s->n_prompt = plen;
      s->prompt_ids = malloc((size_t)plen * sizeof(int32_t));
      memcpy(s->prompt_ids, pr, (size_t)plen * sizeof(int32_t));
      s->n_completion = 1 + (int64_t)(tu_frand(&seed, 0, 1) * (float)cmax) % cmax;
      s->completion_ids = malloc((size_t)s->n_completion * sizeof(int32_t));
      s->logp_rollout = malloc((size_t)s->n_completion * sizeof(float));
      for (int64_t j = 0; j < s->n_completion; j++) {
        s->completion_ids[j] = 3 + (int32_t)(tu_frand(&seed, 0, 1) * (float)(m->V - 3));
        s->logp_rollout[j] = -logf(32.0f) + tu_frand(&seed, -0.3f, 0.3f);
      }
      s->reward = (double)(int)(tu_frand(&seed, 0, 3)) * 0.5;
      if (p == 0) s->reward = g % 2 ? 1.0 : 0.0;
      b->n_generated += s->n_completion;
    }
  }
}

/* Fill every sample's routed table with the model's own top-k of a forward
 * of the sample alone (what a rollout in the same precision records). */
static inline void tu_batch_route_own(rollout_batch *b, model *m, int f32) {
  rl_err e = {0};
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  if (!f32 && !m->quantized && model_quantize(m, &pol, &e))
    harness_fail(__FILE__, __LINE__, "%s", e.msg);
  model_acts *a = model_acts_new();
  int L = m->L, k = m->topk;
  b->route_layers = L, b->route_topk = k;
  for (int64_t i = 0; i < b->n; i++) {
    rollout_sample *s = &b->s[i];
    int T = (int)(s->n_prompt + s->n_completion);
    int32_t tok[128], off[2] = {0, T};
    memcpy(tok, s->prompt_ids, (size_t)s->n_prompt * 4);
    memcpy(tok + s->n_prompt, s->completion_ids, (size_t)s->n_completion * 4);
    model_batch mb = {T, tok, {1, off}};
    model_fwd_opts fo = {.f32 = f32};
    if (model_forward(m, &mb, &fo, a, &e)) harness_fail(__FILE__, __LINE__, "%s", e.msg);
    s->routed = malloc((size_t)T * L * k * sizeof(int32_t));
    for (int l = 0; l < L; l++) {
      const int32_t *ids = model_routed_ids(a, l);
      for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) s->routed[((int64_t)t * L + l) * k + j] = ids ? ids[t * k + j] : -1;
    }
  }
  model_acts_free(a);
}

/* 1 when every BF16 weight (and FP32 copy) of a and b is bitwise equal. */
static inline int tu_weights_equal(const model *a, const model *b) {
  for (int i = 0; i < a->n_params; i++) {
    size_t n = (size_t)(a->params[i].rows * a->params[i].cols);
    if (memcmp(a->params[i].w, b->params[i].w, n * 2)) return 0;
    if (a->params[i].w32 && b->params[i].w32 && memcmp(a->params[i].w32, b->params[i].w32, n * 4))
      return 0;
  }
  return 1;
}

#endif
