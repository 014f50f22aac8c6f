/* loop_model.c — the run's model: built from the recipe (HF directory,
 * checkpoint, or a fresh seeded init), mapped onto checkpoint tensors, and
 * loaded back from a checkpoint. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/formats.h"
#include "runner/loop_int.h"

char *loop_model_init_config(const recipe *r, const tokenizer *tok) {
  int moe = r->model.init.arch == ARCH_QWEN3_MOE;
  int64_t vocab = r->model.init.vocab ? r->model.init.vocab : tokenizer_vocab_size(tok);
  json_t *c = json_pack("{s:[s],s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:s,s:b,s:b,s:b,s:s}",
                        "architectures", moe ? "Qwen3MoeForCausalLM" : "Qwen3ForCausalLM",
                        "model_type", moe ? "qwen3_moe" : "qwen3", "vocab_size", (json_int_t)vocab,
                        "hidden_size", (json_int_t)r->model.init.hidden, "intermediate_size",
                        (json_int_t)r->model.init.ffn, "num_hidden_layers", (json_int_t)r->model.init.layers,
                        "num_attention_heads", (json_int_t)r->model.init.heads, "num_key_value_heads",
                        (json_int_t)r->model.init.kv_heads, "head_dim", (json_int_t)r->model.init.head_dim,
                        "max_position_embeddings", (json_int_t)r->model.init.max_seq_len, "rms_norm_eps",
                        r->model.init.rms_eps, "rope_theta", r->model.init.rope_theta, "hidden_act", "silu",
                        "tie_word_embeddings", r->model.init.tie_embeddings, "attention_bias", 0,
                        "use_sliding_window", 0, "torch_dtype", "bfloat16");
  if (tok->bos >= 0) json_object_set_new(c, "bos_token_id", json_integer(tok->bos));
  if (tok->eos >= 0) json_object_set_new(c, "eos_token_id", json_integer(tok->eos));
  if (tok->pad >= 0) json_object_set_new(c, "pad_token_id", json_integer(tok->pad));
  if (moe) {
    json_object_set_new(c, "num_experts", json_integer(r->model.init.experts));
    json_object_set_new(c, "num_experts_per_tok", json_integer(r->model.init.top_k));
    json_object_set_new(c, "moe_intermediate_size", json_integer(r->model.init.moe_ffn));
    json_object_set_new(c, "norm_topk_prob", json_boolean(r->model.init.norm_topk_prob));
    json_object_set_new(c, "decoder_sparse_step", json_integer(1));
  }
  /* the reals at the fewest digits that give them back (1e-6, not jansson's 17-digit
   * 9.9999999999999995e-07): 15 when both round-trip so, else 17 */
  char buf[64];
  int prec = 15;
  const double reals[2] = {r->model.init.rms_eps, r->model.init.rope_theta};
  for (int i = 0; i < 2; i++) {
    snprintf(buf, sizeof buf, "%.15g", reals[i]);
    if (strtod(buf, NULL) != reals[i]) prec = 17;
  }
  char *text = json_dumps(c, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(prec));
  json_decref(c);
  return text;
}

/* Fill every parameter of a fresh model: norms 1, matrices N(0, 0.02²) from
 * Philox4x32-10 keyed by (seed, "init"), counter (element, tensor): the same
 * weights whatever the thread count. */
static void loop_model_init_weights(model *m, uint64_t seed) {
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32) ^ 0x696e6974u};
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    int64_t n = p->rows * p->cols;
    if (p->cols == 1) {
      for (int64_t j = 0; j < n; j++) p->w[j] = fmt_bf16_from_f32(1.0f);
      continue;
    }
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; j += 2) {
      uint32_t ctr[4] = {(uint32_t)j, (uint32_t)((uint64_t)j >> 32), (uint32_t)i, 0}, x[4];
      qf_philox4x32(ctr, key, x);
      double u1 = ((double)(((uint64_t)x[0] << 21) ^ (x[1] >> 11)) + 1.0) / 9007199254740993.0;
      double u2 = (double)(((uint64_t)x[2] << 21) ^ (x[3] >> 11)) / 9007199254740992.0;
      double rad = sqrt(-2.0 * log(u1)) * 0.02;
      p->w[j] = fmt_bf16_from_f32((float)(rad * cos(2.0 * M_PI * u2)));
      if (j + 1 < n) p->w[j + 1] = fmt_bf16_from_f32((float)(rad * sin(2.0 * M_PI * u2)));
    }
  }
}

int loop_model_build(const recipe *r, const tokenizer *tok, const char *from, model **out, char **config_json,
                     rl_err *e) {
  *out = NULL;
  *config_json = NULL;
  const char *dir = r->model.path ? r->model.path : r->model.checkpoint;
  if (from && r->model.checkpoint) dir = from;
  if (dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len;
    if (rl_read_file(path, config_json, &len, e)) return e->code;
    if (model_load(dir, NULL, out, e)) {
      free(*config_json);
      *config_json = NULL;
      return rl_err_prefix(e, "loading the model %s: ", dir);
    }
  } else {
    *config_json = loop_model_init_config(r, tok);
    model_config c;
    memset(&c, 0, sizeof c);
    int rc = model_config_parse("model.init", *config_json, strlen(*config_json), &c, e);
    if (!rc) rc = model_create(&c, NULL, out, e);
    model_config_free(&c);
    if (rc) {
      free(*config_json);
      *config_json = NULL;
      return rc;
    }
    loop_model_init_weights(*out, (uint64_t)r->seed);
  }
  if ((*out)->V < tokenizer_vocab_size(tok)) {
    int64_t v = (*out)->V;
    model_free(*out);
    *out = NULL;
    free(*config_json);
    *config_json = NULL;
    return rl_errf(e, RL_EXIT_USAGE, "the model's vocabulary (%lld) is smaller than the tokenizer's (%lld)",
                   (long long)v, (long long)tokenizer_vocab_size(tok));
  }
  /* FORMATS.md: the recipe's keep_bf16 patterns and first/last layers stay BF16 in every policy */
  model_keep_bf16(*out, (const char *const *)r->precision.keep_bf16.items, r->precision.keep_bf16.n,
                  r->precision.bf16_first_layers, r->precision.bf16_last_layers);
  return 0;
}

ckpt_tensor *loop_model_tensors(model *m, int *n) {
  ckpt_tensor *t = rl_xcalloc((size_t)m->n_params, sizeof *t);
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    t[i].name = p->name;
    t[i].dtype = ST_BF16;
    t[i].ndim = p->cols == 1 ? 1 : 2;
    t[i].shape[0] = p->rows;
    t[i].shape[1] = p->cols;
    t[i].data = p->w;
  }
  *n = m->n_params;
  return t;
}

int loop_model_load_weights(model *m, const char *path, rl_err *e) {
  st_file *f;
  if (st_file_open(path, &f, e)) return e->code;
  int rc = 0;
  for (int i = 0; i < m->n_params && !rc; i++) {
    model_param *p = &m->params[i];
    const st_tensor *t = st_file_find(f, p->name);
    int64_t numel = p->rows * p->cols;
    if (!t)
      rc = rl_errf(e, RL_EXIT_STATE, "%s: tensor %s is missing", path, p->name);
    else if (t->dtype != ST_BF16 || (int64_t)t->numel != numel)
      rc = rl_errf(e, RL_EXIT_STATE, "%s: tensor %s is %s with %llu elements, the model wants BF16 with %lld",
                   path, p->name, st_dtype_name(t->dtype), (unsigned long long)t->numel, (long long)numel);
    else
      rc = st_file_read(f, t, p->w, e);
  }
  st_file_close(f);
  m->quantized = 0;
  return rc;
}

int loop_trainer_tensors(trainer *t, ckpt_tensor **out, int *n, rl_err *e) {
  train_state_tensor *st;
  int ns;
  if (trainer_state_list(t, &st, &ns, e)) return e->code;
  /* one block: the tensors, then their names (st is freed here); free(*out) frees both */
  size_t head = (size_t)ns * sizeof(ckpt_tensor);
  char *block = rl_xcalloc(1, head + (size_t)ns * TRAIN_STATE_NAME_MAX + 1);
  ckpt_tensor *c = (ckpt_tensor *)block;
  for (int i = 0; i < ns; i++) {
    char *name = block + head + (size_t)i * TRAIN_STATE_NAME_MAX;
    memcpy(name, st[i].name, TRAIN_STATE_NAME_MAX);
    c[i].name = name;
    c[i].dtype = st[i].dtype;
    c[i].ndim = st[i].ndim;
    c[i].shape[0] = st[i].shape[0];
    c[i].shape[1] = st[i].shape[1];
    c[i].data = st[i].data;
  }
  free(st);
  *out = c;
  *n = ns;
  return 0;
}

void loop_policy(prec_format f, int emulate, int ue8m0, quant_policy *p) {
  switch (f) {
  case PREC_FP8_BLOCK: quant_policy_init(p, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK); break;
  case PREC_MXFP8: quant_policy_init(p, QFMT_MXFP8, QFMT_MXFP8); break;
  case PREC_NVFP4: quant_policy_init(p, QFMT_BF16, QFMT_NVFP4); break;
  default: quant_policy_init(p, QFMT_BF16, QFMT_BF16); break;
  }
  p->emulate = emulate;
  p->ue8m0 = ue8m0;
}
