/* config.h — a Hugging Face config.json for the architectures rlrun runs:
 * qwen3 (Qwen3ForCausalLM) and qwen3_moe (Qwen3MoeForCausalLM).
 *
 * Every field the model needs is read and checked (positive sizes, heads a
 * multiple of KV heads, top-k within the expert count, ...). Keys HF always
 * writes are required; the rest take Qwen3Config's defaults. Both the
 * transformers 4.x spelling (rope_theta, rope_scaling, torch_dtype) and the
 * 5.x one (rope_parameters, dtype) are read. Other architectures are refused
 * with a message naming what was found. */
#ifndef RLRUN_MODEL_CONFIG_H
#define RLRUN_MODEL_CONFIG_H

#include <stdint.h>

#include "kernels/common.h"

typedef enum model_kind { MODEL_KIND_QWEN3, MODEL_KIND_QWEN3_MOE } model_kind;

#define MODEL_CONFIG_MAX_EOS 8

typedef struct model_config {
  model_kind kind;
  char model_type[32];   /* "qwen3" | "qwen3_moe" */
  char architecture[64]; /* architectures[0], or "" when absent */
  char dtype[16];        /* "bfloat16", ... ("" when absent) */
  int64_t vocab_size, hidden_size, intermediate_size, num_hidden_layers;
  int64_t num_attention_heads, num_key_value_heads, head_dim, max_position_embeddings;
  double rms_norm_eps;
  /* RoPE: theta and scaling (rope_type "default" when none). */
  double rope_theta, rope_factor;
  char rope_type[32];
  int64_t rope_original_max_position_embeddings; /* 0 when not given */
  char hidden_act[16];
  int tie_word_embeddings, attention_bias;
  int use_sliding_window;
  int64_t sliding_window, max_window_layers;
  int64_t bos_token_id, pad_token_id; /* -1 when null/absent */
  int64_t eos_token_ids[MODEL_CONFIG_MAX_EOS];
  int n_eos;
  /* qwen3_moe (zero for qwen3). */
  int64_t num_experts, num_experts_per_tok, moe_intermediate_size, decoder_sparse_step;
  int norm_topk_prob;
  double router_aux_loss_coef;
  int64_t *mlp_only_layers; /* layers with a dense MLP instead of experts */
  int n_mlp_only_layers;
  /* quantization_config.quant_method ("" when the checkpoint is not quantized). */
  char quant_method[32];
} model_config;

/* Parse config.json text; `what` names the file in messages. */
int model_config_parse(const char *what, const char *text, size_t len, model_config *c,
                       rl_err *e);
/* Read and parse a config.json (path to the file, or to a model directory). */
int model_config_load(const char *path, model_config *c, rl_err *e);
void model_config_free(model_config *c);
/* 1 when layer l holds routed experts (qwen3_moe, not in mlp_only_layers, on
 * the decoder_sparse_step grid). */
int model_config_layer_is_moe(const model_config *c, int64_t l);

#endif
