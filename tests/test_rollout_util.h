/* test_rollout_util.h — micro models and full-forward helpers shared by the
 * rollout tests (test_rollout.c, test_rollout_logp.c). */
#ifndef RLRUN_TEST_ROLLOUT_UTIL_H
#define RLRUN_TEST_ROLLOUT_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"

#define RO_UNUSED __attribute__((unused))

/* A deterministic 32-bit LCG step. */
static RO_UNUSED uint32_t ro_rand(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return *s >> 8;
}

/* A micro model (dense qwen3, or qwen3_moe with layer 0 dense), vocab V,
 * seeded weights: matrices U(±sqrt(3/fan_in)), norm weights U(0.5, 1.5); FP32
 * copies kept; quantized for the BF16 policy. */
static RO_UNUSED model *ro_model_v(int moe, uint32_t seed, int64_t V) {
  static int64_t mlp_only[1] = {0};
  model_config c;
  memset(&c, 0, sizeof c);
  c.kind = moe ? MODEL_KIND_QWEN3_MOE : MODEL_KIND_QWEN3;
  snprintf(c.model_type, sizeof c.model_type, "%s", moe ? "qwen3_moe" : "qwen3");
  snprintf(c.rope_type, sizeof c.rope_type, "default");
  snprintf(c.hidden_act, sizeof c.hidden_act, "silu");
  c.vocab_size = V, c.hidden_size = 32, c.intermediate_size = 48, c.num_hidden_layers = 2;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 8;
  c.max_position_embeddings = 64, c.rms_norm_eps = 1e-6, c.rope_theta = 10000.0;
  c.rope_factor = 1.0, c.tie_word_embeddings = !moe;
  if (moe) {
    c.num_experts = 4, c.num_experts_per_tok = 2, c.moe_intermediate_size = 16;
    c.decoder_sparse_step = 1, c.norm_topk_prob = 1;
    c.mlp_only_layers = mlp_only, c.n_mlp_only_layers = 1;
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
    for (int64_t j = 0; j < p->rows * p->cols; j++) {
      float u = (float)(ro_rand(&seed) * (1.0 / 16777216.0));
      p->w32[j] = p->cols == 1 ? 0.5f + u : -a + 2 * a * u;
    }
  }
  model_sync_bf16_from_f32(m);
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  if (model_quantize(m, &pol, &e)) {
    harness_fail(__FILE__, __LINE__, "model_quantize: %s", e.msg);
    model_free(m);
    return NULL;
  }
  return m;
}

static RO_UNUSED model *ro_model(int moe, uint32_t seed, int unused_keep) {
  (void)unused_keep;
  return ro_model_v(moe, seed, 40);
}

/* Logits [T, V] (malloc'd) of model_forward over one sequence; NULL on error. */
static RO_UNUSED float *ro_full_logits(model *m, const int32_t *seq, int T, int f32, rl_err *e) {
  int32_t off[2] = {0, T};
  model_batch b = {T, seq, {1, off}};
  model_fwd_opts fo = {.f32 = f32};
  model_acts *a = model_acts_new();
  float *out = NULL;
  if (model_forward(m, &b, &fo, a, e)) harness_fail(__FILE__, __LINE__, "model_forward: %s", e->msg);
  else {
    out = malloc((size_t)T * m->V * sizeof(float));
    memcpy(out, a->logits, (size_t)T * m->V * sizeof(float));
  }
  model_acts_free(a);
  return out;
}

#endif
