/* config.c — reading and checking a qwen3 / qwen3_moe config.json. */
#include "model/config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* What a parse needs to report errors: the file name and the error value. */
typedef struct cfg_ctx {
  const char *what;
  json_t *root;
  rl_err *e;
} cfg_ctx;

/* Integer key: required (def ignored) or defaulted; must lie in [lo, hi]. */
static int get_int(cfg_ctx *x, const char *key, int required, int64_t def, int64_t lo, int64_t hi,
                   int64_t *out) {
  json_t *v = json_object_get(x->root, key);
  if (!v || json_is_null(v)) {
    if (required)
      return rl_errf(x->e, RL_EXIT_USAGE, "%s: key '%s' is missing (the model needs it)", x->what,
                     key);
    *out = def;
    return 0;
  }
  if (!json_is_integer(v))
    return rl_errf(x->e, RL_EXIT_USAGE, "%s: '%s' must be an integer", x->what, key);
  int64_t n = (int64_t)json_integer_value(v);
  if (n < lo || n > hi)
    return rl_errf(x->e, RL_EXIT_USAGE, "%s: '%s' is %lld, outside [%lld, %lld]", x->what, key,
                   (long long)n, (long long)lo, (long long)hi);
  *out = n;
  return 0;
}

/* Number key (integer or real), defaulted, must be > 0. */
static int get_pos_num(cfg_ctx *x, json_t *obj, const char *key, double def, double *out) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_number(v) || !(json_number_value(v) > 0))
    return rl_errf(x->e, RL_EXIT_USAGE, "%s: '%s' must be a positive number", x->what, key);
  *out = json_number_value(v);
  return 0;
}

/* Boolean key, defaulted. */
static int get_bool(cfg_ctx *x, const char *key, int def, int *out) {
  json_t *v = json_object_get(x->root, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_boolean(v))
    return rl_errf(x->e, RL_EXIT_USAGE, "%s: '%s' must be true or false", x->what, key);
  *out = json_is_true(v);
  return 0;
}

/* String key copied into buf (defaulted). */
static int get_str(cfg_ctx *x, json_t *obj, const char *key, const char *def, char *buf,
                   size_t n) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    snprintf(buf, n, "%s", def);
    return 0;
  }
  if (!json_is_string(v) || strlen(json_string_value(v)) >= n)
    return rl_errf(x->e, RL_EXIT_USAGE, "%s: '%s' must be a string (under %zu characters)",
                   x->what, key, n);
  snprintf(buf, n, "%s", json_string_value(v));
  return 0;
}

/* Token ids: bos/pad may be null (-1); eos an integer or a list of them. */
static int get_tokens(cfg_ctx *x, model_config *c) {
  int rc;
  if ((rc = get_int(x, "bos_token_id", 0, -1, -1, c->vocab_size - 1, &c->bos_token_id))) return rc;
  if ((rc = get_int(x, "pad_token_id", 0, -1, -1, c->vocab_size - 1, &c->pad_token_id))) return rc;
  json_t *v = json_object_get(x->root, "eos_token_id");
  if (!v || json_is_null(v)) return 0;
  json_t *one = v;
  size_t n = json_is_array(v) ? json_array_size(v) : 1;
  if (n > MODEL_CONFIG_MAX_EOS)
    return rl_errf(x->e, RL_EXIT_USAGE, "%s: more than %d eos_token_id values", x->what,
                   MODEL_CONFIG_MAX_EOS);
  for (size_t i = 0; i < n; i++) {
    if (json_is_array(v)) one = json_array_get(v, i);
    if (!json_is_integer(one) || json_integer_value(one) < 0 ||
        json_integer_value(one) >= c->vocab_size)
      return rl_errf(x->e, RL_EXIT_USAGE,
                     "%s: eos_token_id must be a token id in [0, vocab_size) or a list of them",
                     x->what);
    c->eos_token_ids[c->n_eos++] = (int64_t)json_integer_value(one);
  }
  return 0;
}

/* RoPE: transformers 5.x rope_parameters, or 4.x rope_theta + rope_scaling. */
static int get_rope(cfg_ctx *x, model_config *c) {
  json_t *rp = json_object_get(x->root, "rope_parameters");
  json_t *rs = json_object_get(x->root, "rope_scaling");
  json_t *scal = NULL;
  int rc;
  if (rp && !json_is_null(rp)) {
    if (!json_is_object(rp))
      return rl_errf(x->e, RL_EXIT_USAGE, "%s: 'rope_parameters' must be an object", x->what);
    if ((rc = get_pos_num(x, rp, "rope_theta", 1e6, &c->rope_theta))) return rc;
    scal = rp;
  } else {
    if ((rc = get_pos_num(x, x->root, "rope_theta", 10000.0, &c->rope_theta))) return rc;
    if (rs && !json_is_null(rs)) {
      if (!json_is_object(rs))
        return rl_errf(x->e, RL_EXIT_USAGE, "%s: 'rope_scaling' must be an object or null",
                       x->what);
      scal = rs;
    }
  }
  snprintf(c->rope_type, sizeof c->rope_type, "default");
  c->rope_factor = 1.0;
  if (!scal) return 0;
  const char *tkey = json_object_get(scal, "rope_type") ? "rope_type" : "type";
  if ((rc = get_str(x, scal, tkey, "default", c->rope_type, sizeof c->rope_type))) return rc;
  static const char *known[] = {"default", "linear", "dynamic", "yarn", "llama3", "longrope"};
  int ok = 0;
  for (size_t i = 0; i < sizeof known / sizeof *known; i++) ok |= !strcmp(c->rope_type, known[i]);
  if (!ok)
    return rl_errf(x->e, RL_EXIT_USAGE,
                   "%s: rope type '%s' is unknown (known: default linear dynamic yarn llama3 "
                   "longrope)",
                   x->what, c->rope_type);
  if ((rc = get_pos_num(x, scal, "factor", 1.0, &c->rope_factor))) return rc;
  json_t *om = json_object_get(scal, "original_max_position_embeddings");
  if (json_is_integer(om) && json_integer_value(om) > 0)
    c->rope_original_max_position_embeddings = (int64_t)json_integer_value(om);
  return 0;
}

/* The MoE fields of qwen3_moe. */
static int get_moe(cfg_ctx *x, model_config *c) {
  int rc;
  const int64_t BIG = (int64_t)1 << 30;
  /* transformers 4.x writes num_experts; 5.x writes num_local_experts. */
  const char *ne = json_object_get(x->root, "num_experts") ? "num_experts" : "num_local_experts";
  if ((rc = get_int(x, ne, 1, 0, 1, 1 << 16, &c->num_experts)) ||
      (rc = get_int(x, "num_experts_per_tok", 1, 0, 1, c->num_experts, &c->num_experts_per_tok)) ||
      (rc = get_int(x, "moe_intermediate_size", 1, 0, 1, BIG, &c->moe_intermediate_size)) ||
      (rc = get_int(x, "decoder_sparse_step", 0, 1, 1, c->num_hidden_layers, &c->decoder_sparse_step)) ||
      (rc = get_bool(x, "norm_topk_prob", 0, &c->norm_topk_prob)))
    return rc;
  json_t *v = json_object_get(x->root, "router_aux_loss_coef");
  c->router_aux_loss_coef = json_is_number(v) ? json_number_value(v) : 0.001;
  json_t *ml = json_object_get(x->root, "mlp_only_layers");
  if (ml && !json_is_null(ml)) {
    if (!json_is_array(ml))
      return rl_errf(x->e, RL_EXIT_USAGE, "%s: 'mlp_only_layers' must be a list of layer indices",
                     x->what);
    size_t n = json_array_size(ml);
    c->mlp_only_layers = rl_xcalloc(n ? n : 1, sizeof(int64_t));
    for (size_t i = 0; i < n; i++) {
      json_t *l = json_array_get(ml, i);
      if (!json_is_integer(l) || json_integer_value(l) < 0 ||
          json_integer_value(l) >= c->num_hidden_layers)
        return rl_errf(x->e, RL_EXIT_USAGE,
                       "%s: mlp_only_layers[%zu] is not a layer index in [0, %lld)", x->what, i,
                       (long long)c->num_hidden_layers);
      c->mlp_only_layers[c->n_mlp_only_layers++] = (int64_t)json_integer_value(l);
    }
  }
  return 0;
}

/* Which architecture: model_type first, architectures[0] must agree. */
static int get_kind(cfg_ctx *x, model_config *c) {
  int rc = get_str(x, x->root, "model_type", "", c->model_type, sizeof c->model_type);
  if (rc) return rc;
  json_t *arch = json_object_get(x->root, "architectures");
  const char *a0 = json_string_value(json_array_get(arch, 0));
  snprintf(c->architecture, sizeof c->architecture, "%s", a0 ? a0 : "");
  const char *want;
  if (!strcmp(c->model_type, "qwen3")) c->kind = MODEL_KIND_QWEN3, want = "Qwen3ForCausalLM";
  else if (!strcmp(c->model_type, "qwen3_moe"))
    c->kind = MODEL_KIND_QWEN3_MOE, want = "Qwen3MoeForCausalLM";
  else
    return rl_errf(x->e, RL_EXIT_USAGE,
                   "%s: model_type '%s'%s%s%s is not supported: rlrun runs qwen3 "
                   "(Qwen3ForCausalLM) and qwen3_moe (Qwen3MoeForCausalLM)",
                   x->what, c->model_type[0] ? c->model_type : "(missing)", a0 ? " (" : "",
                   a0 ? a0 : "", a0 ? ")" : "");
  if (a0 && strcmp(a0, want))
    return rl_errf(x->e, RL_EXIT_USAGE,
                   "%s: architectures[0] is '%s' but model_type '%s' runs as %s: rlrun runs the "
                   "causal LM only",
                   x->what, a0, c->model_type, want);
  return 0;
}

int model_config_parse(const char *what, const char *text, size_t len, model_config *c,
                       rl_err *e) {
  memset(c, 0, sizeof *c);
  json_error_t jerr;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return rl_errf(e, RL_EXIT_USAGE, "%s:%d:%d: not valid JSON: %s", what, jerr.line, jerr.column,
                   jerr.text);
  cfg_ctx x = {what, root, e};
  const int64_t BIG = (int64_t)1 << 30;
  int rc = 0;
  if (!json_is_object(root)) rc = rl_errf(e, RL_EXIT_USAGE, "%s: not a JSON object", what);
  if (!rc) rc = get_kind(&x, c);
  int moe = c->kind == MODEL_KIND_QWEN3_MOE;
  if (!rc)
    (void)((rc = get_int(&x, "vocab_size", 1, 0, 1, BIG, &c->vocab_size)) ||
           (rc = get_int(&x, "hidden_size", 1, 0, 1, BIG, &c->hidden_size)) ||
           (rc = get_int(&x, "intermediate_size", !moe, 0, 1, BIG, &c->intermediate_size)) ||
           (rc = get_int(&x, "num_hidden_layers", 1, 0, 1, 1 << 16, &c->num_hidden_layers)) ||
           (rc = get_int(&x, "num_attention_heads", 1, 0, 1, 1 << 16, &c->num_attention_heads)) ||
           (rc = get_int(&x, "num_key_value_heads", 0, c->num_attention_heads, 1,
                         c->num_attention_heads, &c->num_key_value_heads)) ||
           /* Qwen3Config defaults head_dim to 128; Qwen3-MoE falls back to hidden / heads. */
           (rc = get_int(&x, "head_dim", 0,
                         moe ? c->hidden_size / c->num_attention_heads : 128, 1, 1 << 16,
                         &c->head_dim)) ||
           (rc = get_int(&x, "max_position_embeddings", 0, 32768, 1, BIG,
                         &c->max_position_embeddings)) ||
           (rc = get_pos_num(&x, root, "rms_norm_eps", 1e-6, &c->rms_norm_eps)) ||
           (rc = get_rope(&x, c)) ||
           (rc = get_str(&x, root, "hidden_act", "silu", c->hidden_act, sizeof c->hidden_act)) ||
           (rc = get_bool(&x, "tie_word_embeddings", 0, &c->tie_word_embeddings)) ||
           (rc = get_bool(&x, "attention_bias", 0, &c->attention_bias)) ||
           (rc = get_bool(&x, "use_sliding_window", 0, &c->use_sliding_window)) ||
           (rc = get_int(&x, "sliding_window", 0, 4096, 0, BIG, &c->sliding_window)) ||
           (rc = get_int(&x, "max_window_layers", 0, c->num_hidden_layers, 0, 1 << 16,
                         &c->max_window_layers)) ||
           (rc = get_tokens(&x, c)));
  if (!rc) {
    json_t *d = json_object_get(root, "dtype");
    if (!d || json_is_null(d)) d = json_object_get(root, "torch_dtype");
    if (json_is_string(d)) snprintf(c->dtype, sizeof c->dtype, "%s", json_string_value(d));
  }
  if (!rc && c->num_attention_heads % c->num_key_value_heads)
    rc = rl_errf(e, RL_EXIT_USAGE,
                 "%s: num_attention_heads (%lld) is not a multiple of num_key_value_heads (%lld)",
                 what, (long long)c->num_attention_heads, (long long)c->num_key_value_heads);
  if (!rc && strcmp(c->hidden_act, "silu"))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s: hidden_act '%s' is not supported (Qwen3 uses silu)",
                 what, c->hidden_act);
  if (!rc && moe) rc = get_moe(&x, c);
  if (!rc) {
    json_t *q = json_object_get(root, "quantization_config");
    if (q && !json_is_null(q)) {
      const char *m = json_string_value(json_object_get(q, "quant_method"));
      if (!json_is_object(q) || !m)
        rc = rl_errf(e, RL_EXIT_USAGE, "%s: quantization_config has no quant_method", what);
      else snprintf(c->quant_method, sizeof c->quant_method, "%s", m);
    }
  }
  json_decref(root);
  if (rc) model_config_free(c);
  return rc;
}

int model_config_load(const char *path, model_config *c, rl_err *e) {
  memset(c, 0, sizeof *c);
  struct stat st;
  char file[4096];
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(file, sizeof file, "%s/config.json", path);
  else snprintf(file, sizeof file, "%s", path);
  char *text;
  size_t len;
  int rc = rl_read_file(file, &text, &len, e);
  if (rc) return rc;
  rc = model_config_parse(file, text, len, c, e);
  free(text);
  return rc;
}

void model_config_free(model_config *c) {
  free(c->mlp_only_layers);
  c->mlp_only_layers = NULL;
  c->n_mlp_only_layers = 0;
}

int model_config_layer_is_moe(const model_config *c, int64_t l) {
  if (c->kind != MODEL_KIND_QWEN3_MOE || c->num_experts <= 0 || l < 0 || l >= c->num_hidden_layers)
    return 0;
  for (int i = 0; i < c->n_mlp_only_layers; i++)
    if (c->mlp_only_layers[i] == l) return 0;
  return (l + 1) % c->decoder_sparse_step == 0;
}
