/* model.c — the model's weights: creation from a config, loading from a
 * Hugging Face directory (any of F32/BF16/F16 and the three quantized
 * checkpoint formats, dequantized to the BF16 master), the per-policy
 * quantized views, and the gradient buffers. */
#include "model/model.h"

#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/formats.h"
#include "kernels/quant.h"
#include "model/model_cuda.h"
#include "model/model_int.h"
#include "state/safetensors.h"

/* ---------------------------------------------------------------- config */

/* config.json of an HF directory (model/config.c reads both the transformers 4
 * and 5 spellings). */
int model_config_load_hf(const char *dir, model_config *c, rl_err *e) {
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  return model_config_load(path, c, e);
}

/* ---------------------------------------------------------------- creation */

/* A parameter shaped as spec s, zeroed. */
static model_param *add_param(model *m, int keep_f32, const model_tensor_spec *s) {
  model_param *p = &m->params[m->n_params++];
  snprintf(p->name, sizeof p->name, "%s", s->name);
  p->rows = s->rows, p->cols = s->cols;
  p->w = rl_xcalloc((size_t)(p->rows * p->cols), sizeof(uint16_t));
  if (keep_f32) p->w32 = rl_xcalloc((size_t)(p->rows * p->cols), sizeof(float));
  return p;
}

/* Append spec [rows][cols] named printf-style. */
static void add_spec(model_tensor_spec *v, int *n, int64_t rows, int64_t cols, const char *dims, const char *fmt,
                     ...) __attribute__((format(printf, 6, 7)));
static void add_spec(model_tensor_spec *v, int *n, int64_t rows, int64_t cols, const char *dims, const char *fmt,
                     ...) {
  model_tensor_spec *s = &v[(*n)++];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->name, sizeof s->name, fmt, ap);
  va_end(ap);
  s->rows = rows, s->cols = cols, s->dims = dims;
  s->vec = cols == 1 && strstr(s->name, "norm") != NULL;
}

int model_tensor_specs(const model_config *c, model_tensor_spec **out) {
  int64_t H = c->hidden_size, L = c->num_hidden_layers, E = c->num_experts;
  int64_t qd = c->num_attention_heads * c->head_dim, kd = c->num_key_value_heads * c->head_dim;
  int64_t cap = 3 + 11 * L;
  for (int64_t l = 0; l < L; l++)
    if (model_config_layer_is_moe(c, l)) cap += 3 * E;
  model_tensor_spec *v = rl_xcalloc((size_t)cap, sizeof *v);
  int n = 0;
  const char *pre = "model.layers", *ex = "mlp.experts";
  const char *hq = "[num_attention_heads × head_dim, hidden_size]", *hkv = "[num_key_value_heads × head_dim, hidden_size]";
  add_spec(v, &n, c->vocab_size, H, "[vocab_size, hidden_size]", "model.embed_tokens.weight");
  for (int l = 0; l < (int)L; l++) { /* model_create wires the layers in this order */
    add_spec(v, &n, H, 1, "[hidden_size]", "%s.%d.input_layernorm.weight", pre, l);
    add_spec(v, &n, qd, H, hq, "%s.%d.self_attn.q_proj.weight", pre, l);
    add_spec(v, &n, kd, H, hkv, "%s.%d.self_attn.k_proj.weight", pre, l);
    add_spec(v, &n, kd, H, hkv, "%s.%d.self_attn.v_proj.weight", pre, l);
    add_spec(v, &n, H, qd, "[hidden_size, num_attention_heads × head_dim]", "%s.%d.self_attn.o_proj.weight", pre, l);
    add_spec(v, &n, c->head_dim, 1, "[head_dim]", "%s.%d.self_attn.q_norm.weight", pre, l);
    add_spec(v, &n, c->head_dim, 1, "[head_dim]", "%s.%d.self_attn.k_norm.weight", pre, l);
    add_spec(v, &n, H, 1, "[hidden_size]", "%s.%d.post_attention_layernorm.weight", pre, l);
    if (!model_config_layer_is_moe(c, l)) {
      int64_t I = c->intermediate_size;
      add_spec(v, &n, I, H, "[intermediate_size, hidden_size]", "%s.%d.mlp.gate_proj.weight", pre, l);
      add_spec(v, &n, I, H, "[intermediate_size, hidden_size]", "%s.%d.mlp.up_proj.weight", pre, l);
      add_spec(v, &n, H, I, "[hidden_size, intermediate_size]", "%s.%d.mlp.down_proj.weight", pre, l);
      continue;
    }
    int64_t Im = c->moe_intermediate_size;
    add_spec(v, &n, E, H, "[num_experts, hidden_size]", "%s.%d.mlp.gate.weight", pre, l);
    for (int x = 0; x < (int)E; x++) {
      add_spec(v, &n, Im, H, "[moe_intermediate_size, hidden_size]", "%s.%d.%s.%d.gate_proj.weight", pre, l, ex, x);
      add_spec(v, &n, Im, H, "[moe_intermediate_size, hidden_size]", "%s.%d.%s.%d.up_proj.weight", pre, l, ex, x);
      add_spec(v, &n, H, Im, "[hidden_size, moe_intermediate_size]", "%s.%d.%s.%d.down_proj.weight", pre, l, ex, x);
    }
  }
  add_spec(v, &n, H, 1, "[hidden_size]", "model.norm.weight");
  if (!c->tie_word_embeddings) add_spec(v, &n, c->vocab_size, H, "[vocab_size, hidden_size]", "lm_head.weight");
  *out = v;
  return n;
}

/* A linear layer over parameter p. */
static model_linear mk_linear(model_param *p, linear_class c) {
  model_linear l = {0};
  l.p = p, l.cls = c;
  l.q = qtensor_bf16(p->w, p->rows, p->cols, 0);
  return l;
}

int model_config_runnable(const model_config *c, rl_err *e) {
  if (strcmp(c->rope_type, "default"))
    return rl_errf(e, RL_EXIT_USAGE,
                   "model: rope scaling '%s' is not implemented yet (only the default RoPE); "
                   "remove rope_scaling from config.json or use a model without it",
                   c->rope_type);
  if (c->attention_bias)
    return rl_errf(e, RL_EXIT_USAGE, "model: attention_bias = true is not supported (Qwen3 has no biases)");
  if (c->use_sliding_window)
    return rl_errf(e, RL_EXIT_USAGE,
                   "model: use_sliding_window = true is not supported (full attention only)");
  if (c->head_dim % 2)
    return rl_errf(e, RL_EXIT_USAGE, "model: head_dim %lld is odd; RoPE needs an even head_dim",
                   (long long)c->head_dim);
  if (c->vocab_size > INT32_MAX / 2 || c->hidden_size > (1 << 20))
    return rl_errf(e, RL_EXIT_USAGE, "model: vocab or hidden size too large");
  return 0;
}

int model_create(const model_config *c, const model_load_opts *o, model **out, rl_err *e) {
  *out = NULL;
  int rc = model_config_runnable(c, e);
  if (rc) return rc;
  int f32 = o && o->keep_f32;
  model *m = rl_xcalloc(1, sizeof *m);
  m->cfg = *c;
  m->cfg.mlp_only_layers = NULL; /* the model owns its copy; never the caller's pointer */
  if (c->n_mlp_only_layers) {
    m->cfg.mlp_only_layers = rl_xmalloc((size_t)c->n_mlp_only_layers * sizeof(int64_t));
    memcpy(m->cfg.mlp_only_layers, c->mlp_only_layers, (size_t)c->n_mlp_only_layers * sizeof(int64_t));
  }
  m->H = (int)c->hidden_size, m->V = (int)c->vocab_size, m->L = (int)c->num_hidden_layers;
  m->nq = (int)c->num_attention_heads, m->nkv = (int)c->num_key_value_heads, m->hd = (int)c->head_dim;
  m->I = (int)c->intermediate_size, m->E = (int)c->num_experts, m->topk = (int)c->num_experts_per_tok;
  m->Im = (int)c->moe_intermediate_size;
  m->eps = (float)c->rms_norm_eps, m->theta = (float)c->rope_theta;
  m->has_f32 = f32;
  model_tensor_spec *sp;
  int n = model_tensor_specs(c, &sp), k = 0;
  m->params = rl_xcalloc((size_t)n, sizeof(model_param));
  m->layers = rl_xcalloc((size_t)m->L, sizeof(model_layer));
  /* in model_tensor_specs' order */
#define NEXT() add_param(m, f32, &sp[k++])
  m->embed = NEXT();
  for (int l = 0; l < m->L; l++) {
    model_layer *y = &m->layers[l];
    y->moe = model_config_layer_is_moe(c, l);
    y->ln1 = NEXT();
    y->q = mk_linear(NEXT(), LINEAR_ATTN);
    y->k = mk_linear(NEXT(), LINEAR_ATTN);
    y->v = mk_linear(NEXT(), LINEAR_ATTN);
    y->o = mk_linear(NEXT(), LINEAR_ATTN);
    y->q_norm = NEXT();
    y->k_norm = NEXT();
    y->ln2 = NEXT();
    if (!y->moe) {
      y->gate = mk_linear(NEXT(), LINEAR_MLP);
      y->up = mk_linear(NEXT(), LINEAR_MLP);
      y->down = mk_linear(NEXT(), LINEAR_MLP);
      continue;
    }
    y->router = mk_linear(NEXT(), LINEAR_ROUTER);
    y->eg = rl_xcalloc((size_t)m->E, sizeof(model_linear));
    y->eu = rl_xcalloc((size_t)m->E, sizeof(model_linear));
    y->ed = rl_xcalloc((size_t)m->E, sizeof(model_linear));
    for (int x = 0; x < m->E; x++) {
      y->eg[x] = mk_linear(NEXT(), LINEAR_EXPERT);
      y->eu[x] = mk_linear(NEXT(), LINEAR_EXPERT);
      y->ed[x] = mk_linear(NEXT(), LINEAR_EXPERT);
    }
  }
  m->final_norm = NEXT();
  if (c->tie_word_embeddings) m->lm_head = mk_linear(m->embed, LINEAR_LM_HEAD);
  else m->lm_head = mk_linear(NEXT(), LINEAR_LM_HEAD);
#undef NEXT
  free(sp);
  quant_policy_init(&m->policy, QFMT_BF16, QFMT_BF16);
  m->quantized = 1; /* the BF16 views point at the master */
  *out = m;
  return 0;
}

/* Free the owned buffers of one linear's quantized view (back to BF16). */
static void linear_unquantize(model_linear *l) {
  free(l->qdata), free(l->qscales);
  l->qdata = l->qscales = NULL;
  l->q = qtensor_bf16(l->p->w, l->p->rows, l->p->cols, 0);
}

/* Apply fn to every linear layer of m. */
static int for_each_linear(model *m, int (*fn)(model *, model_linear *, void *), void *ctx) {
  int rc;
  for (int l = 0; l < m->L; l++) {
    model_layer *y = &m->layers[l];
    model_linear *ls[] = {&y->q, &y->k, &y->v, &y->o, &y->gate, &y->up, &y->down, &y->router};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
      if (ls[i]->p && (rc = fn(m, ls[i], ctx))) return rc;
    if (y->moe)
      for (int x = 0; x < m->E; x++)
        if ((rc = fn(m, &y->eg[x], ctx)) || (rc = fn(m, &y->eu[x], ctx)) || (rc = fn(m, &y->ed[x], ctx)))
          return rc;
  }
  return fn(m, &m->lm_head, ctx);
}

static int unquantize_cb(model *m, model_linear *l, void *ctx) {
  linear_unquantize(l);
  return 0;
}

void model_free(model *m) {
  if (!m) return;
  model_cuda_free(m); /* device copies, if any (model_cuda.c) */
  for_each_linear(m, unquantize_cb, NULL);
  for (int i = 0; i < m->n_params; i++) free(m->params[i].w), free(m->params[i].w32), free(m->params[i].g);
  for (int l = 0; l < m->L; l++) free(m->layers[l].eg), free(m->layers[l].eu), free(m->layers[l].ed);
  free(m->layers);
  free(m->params);
  model_config_free(&m->cfg);
  free(m);
}

model_param *model_find_param(model *m, const char *name) {
  for (int i = 0; i < m->n_params; i++)
    if (!strcmp(m->params[i].name, name)) return &m->params[i];
  return NULL;
}

void model_sync_bf16_from_f32(model *m) {
  for (int i = 0; i < m->n_params; i++)
    if (m->params[i].w32)
      ops_bf16_from_f32_cpu(m->params[i].w, m->params[i].w32, (size_t)(m->params[i].rows * m->params[i].cols));
  int all_bf16 = 1; /* BF16 views read the master itself: still valid */
  for (int c = 0; c < LINEAR_CLASS_COUNT; c++) all_bf16 &= m->policy.fmt[c] == QFMT_BF16;
  m->quantized = all_bf16;
}

int64_t model_layer_of_name(const char *name) {
  for (const char *p = strstr(name, "layers."); p; p = strstr(p + 1, "layers.")) {
    if (p != name && p[-1] != '.') continue;
    const char *d = p + 7;
    if (*d < '0' || *d > '9') continue;
    int64_t v = 0;
    while (*d >= '0' && *d <= '9' && v < (1 << 30)) v = v * 10 + (*d++ - '0');
    if (*d == '.') return v;
  }
  return -1;
}

int model_keep_bf16_rule(const char *name, const char *const *patterns, int n_patterns, int64_t first, int64_t last,
                         int64_t L) {
  size_t n = strlen(name);
  char module[1024]; /* checkpoint names of any length (convert reads foreign ones) */
  snprintf(module, sizeof module, "%.*s", (int)(n >= 7 && !strcmp(name + n - 7, ".weight") ? n - 7 : n), name);
  for (int i = 0; i < n_patterns; i++)
    if (!fnmatch(patterns[i], name, 0) || !fnmatch(patterns[i], module, 0)) return MODEL_KEEP_PATTERN;
  int64_t l = model_layer_of_name(name);
  if (l >= 0 && l < first) return MODEL_KEEP_FIRST;
  if (l >= 0 && last > 0 && l >= L - last) return MODEL_KEEP_LAST;
  return MODEL_KEEP_NONE;
}

int model_keep_bf16_pattern_check(const char *pat, rl_err *e) {
  static const char *const classes[] = {"alnum", "alpha", "blank", "cntrl", "digit", "graph",
                                        "lower", "print", "punct", "space", "upper", "xdigit"};
  if (!*pat) return rl_errf(e, RL_EXIT_USAGE, "the pattern is empty; give a glob such as '*.o_proj'");
  for (size_t i = 0; pat[i];) {
    if (pat[i] == '\\') {
      if (!pat[i + 1])
        return rl_errf(e, RL_EXIT_USAGE, "pattern '%s' ends in a lone '\\' (an escape with nothing to escape); "
                       "remove it", pat);
      i += 2;
      continue;
    }
    if (pat[i] != '[') {
      i++;
      continue;
    }
    size_t j = i + 1;
    if (pat[j] == '!' || pat[j] == '^') j++;
    if (pat[j] == ']') j++; /* a ']' first is a member */
    while (pat[j] && pat[j] != ']') {
      if (pat[j] == '[' && (pat[j + 1] == ':' || pat[j + 1] == '=' || pat[j + 1] == '.')) {
        char d = pat[j + 1];
        const char *end = pat + j + 2;
        while (*end && !(end[0] == d && end[1] == ']')) end++;
        if (!*end)
          return rl_errf(e, RL_EXIT_USAGE, "pattern '%s': '[%c' at position %zu is not closed by '%c]'", pat, d,
                         j + 1, d);
        if (d == ':') {
          size_t len = (size_t)(end - (pat + j + 2)), k = 0;
          while (k < sizeof classes / sizeof *classes &&
                 !(strlen(classes[k]) == len && !strncmp(classes[k], pat + j + 2, len)))
            k++;
          if (k == sizeof classes / sizeof *classes)
            return rl_errf(e, RL_EXIT_USAGE,
                           "pattern '%s': [:%.*s:] at position %zu is not a character class (alnum, alpha, digit, "
                           "lower, upper, ...)",
                           pat, (int)len, pat + j + 2, j + 1);
        }
        j = (size_t)(end - pat) + 2;
        continue;
      }
      if (pat[j] == '\\' && pat[j + 1]) j++;
      j++;
    }
    if (!pat[j])
      return rl_errf(e, RL_EXIT_USAGE,
                     "pattern '%s': the '[' at position %zu opens a bracket expression that no ']' closes (tensor "
                     "names hold no '['); close it, e.g. 'model.layers.[0-3].*'",
                     pat, i + 1);
    i = j + 1;
  }
  return 0;
}

void model_keep_bf16(model *m, const char *const *patterns, int n_patterns, int64_t first, int64_t last) {
  for (int i = 0; i < m->n_params; i++)
    m->params[i].keep_bf16 = model_keep_bf16_rule(m->params[i].name, patterns, n_patterns, first, last, m->L) != 0;
  m->lm_head_keep_bf16 = model_keep_bf16_rule("lm_head.weight", patterns, n_patterns, first, last, m->L) != 0;
  m->quantized = 0; /* the views follow the marks at the next model_quantize */
}

void model_keep_bf16_copy(model *dst, const model *src) {
  for (int i = 0; i < dst->n_params && i < src->n_params; i++) dst->params[i].keep_bf16 = src->params[i].keep_bf16;
  dst->lm_head_keep_bf16 = src->lm_head_keep_bf16;
  dst->quantized = 0;
}

/* ---------------------------------------------------------------- loading */

/* IEEE half → FP32 (exact). */
static float f16_to_f32(uint16_t h) {
  uint32_t s = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
  if (ex == 0x1f) u = s | 0x7f800000u | (mant << 13);
  else if (ex) u = s | ((ex + 112) << 23) | (mant << 13);
  else if (!mant) u = s;
  else {
    float f = ldexpf((float)mant, -24);
    memcpy(&u, &f, 4);
    u |= s;
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Read a whole tensor into a fresh buffer. */
static void *read_tensor(st_file *f, const st_tensor *t, rl_err *e) {
  void *buf = rl_xmalloc(t->nbytes ? t->nbytes : 1);
  if (st_file_read(f, t, buf, e)) {
    free(buf);
    return NULL;
  }
  return buf;
}

static const char *shape_str(char *buf, size_t n, int ndim, const int64_t *shape);

/* Companion tensor base+suffix of a quantized weight (with dtype/shape checks). */
static int companion(st_ckpt *ck, const model_param *p, const char *suffix, int ndim, int64_t d0,
                     int64_t d1, st_dtype dt1, st_dtype dt2, st_file **f, const st_tensor **t,
                     rl_err *e) {
  char nm[MODEL_NAME_MAX + 32];
  snprintf(nm, sizeof nm, "%.*s%s", (int)strlen(p->name) - 7, p->name, suffix);
  *f = st_ckpt_find(ck, nm, t);
  if (!*f) return rl_errf(e, RL_EXIT_USAGE, "tensor '%s' is quantized but '%s' is missing", p->name, nm);
  const st_tensor *s = *t;
  int shape_ok = ndim == 0 ? s->numel == 1 : (s->ndim == 2 && s->shape[0] == d0 && s->shape[1] == d1);
  if ((s->dtype != dt1 && s->dtype != dt2) || !shape_ok) {
    char got[160];
    return rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%s' is %s %s; want %s [%lld, %lld]", st_file_path(*f), nm,
                   st_dtype_name(s->dtype), shape_str(got, sizeof got, s->ndim, s->shape), st_dtype_name(dt1),
                   (long long)d0, (long long)d1);
  }
  return 0;
}

/* Dequantize an fp8-block / mxfp8 / nvfp4 weight t of p into f32 (FP32 [rows][cols]). */
static int load_quantized(st_ckpt *ck, st_file *f, const st_tensor *t, model_param *p,
                          float *f32, rl_err *e) {
  int64_t N = p->rows, K = p->cols;
  st_file *fs;
  const st_tensor *ts;
  int rc = 0;
  uint8_t *q = read_tensor(f, t, e);
  void *s = NULL;
  if (!q) return e->code;
  if (t->dtype == ST_F8_E4M3) {
    if (t->ndim != 2 || t->shape[0] != N || t->shape[1] != K)
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%s' has the wrong shape for [%lld, %lld]",
                   st_file_path(f), p->name, (long long)N, (long long)K);
    char nm[MODEL_NAME_MAX + 32];
    snprintf(nm, sizeof nm, "%.*s.weight_scale_inv", (int)strlen(p->name) - 7, p->name);
    const st_tensor *probe = NULL;
    /* E8M0 scales (U8 / F8_E8M0) are mxfp8; anything else is checked as fp8-block's F32 */
    int mx = st_ckpt_find(ck, nm, &probe) && (probe->dtype == ST_U8 || probe->dtype == ST_F8_E8M0);
    if (!rc && !mx &&
        !(rc = companion(ck, p, ".weight_scale_inv", 2, quant_cdiv(N, 128), quant_cdiv(K, 128),
                         ST_F32, ST_F32, &fs, &ts, e)) &&
        (s = read_tensor(fs, ts, e)))
      dequant_fp8_block_weight_cpu(q, s, N, K, f32, NULL);
    else if (!rc && mx &&
             !(rc = companion(ck, p, ".weight_scale_inv", 2, N, quant_cdiv(K, 32), ST_U8,
                              ST_F8_E8M0, &fs, &ts, e)) &&
             (s = read_tensor(fs, ts, e)))
      dequant_mxfp8_cpu(q, s, N, K, f32, NULL);
  } else { /* U8: NVFP4 packed */
    float sdec = 0;
    if (t->ndim != 2 || t->shape[0] != N || t->shape[1] != quant_cdiv(K, 2))
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: nvfp4 tensor '%s' should be U8 [%lld, %lld]",
                   st_file_path(f), p->name, (long long)N, (long long)quant_cdiv(K, 2));
    if (!rc && !(rc = companion(ck, p, ".weight_scale_2", 0, 1, 1, ST_F32, ST_F32, &fs, &ts, e)))
      rc = st_file_read(fs, ts, &sdec, e);
    if (!rc && !(sdec > 0 && isfinite(sdec)))
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: '%s' weight_scale_2 is %g, not a positive S_dec",
                   st_file_path(fs), p->name, (double)sdec);
    if (!rc && !(rc = companion(ck, p, ".weight_scale", 2, N, quant_cdiv(K, 16), ST_F8_E4M3,
                                ST_U8, &fs, &ts, e)) &&
        (s = read_tensor(fs, ts, e)))
      dequant_nvfp4_cpu(q, s, sdec, N, K, f32, NULL);
  }
  if (!rc && !s) rc = e->code ? e->code : rl_errf(e, RL_EXIT_FAIL, "%s: cannot read scales", p->name);
  free(q), free(s);
  return rc;
}

/* "[a, b]" of a tensor's shape (or of rows, cols: ndim 2, or rows only: 1) into buf. */
static const char *shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
  size_t l = (size_t)snprintf(buf, n, "[");
  for (int d = 0; d < ndim && l < n; d++) l += (size_t)snprintf(buf + l, n - l, "%s%lld", d ? ", " : "", (long long)shape[d]);
  if (l < n) snprintf(buf + l, n - l, "]");
  return buf;
}

/* The file name of a checkpoint file (its path without the directory). */
static const char *file_base(const st_file *f) {
  const char *p = st_file_path(f), *b = strrchr(p, '/');
  return b ? b + 1 : p;
}

/* Which model.layers.N a name is in (N of a "model.layers.N." prefix), or -1. */
static int64_t ckpt_layer(const char *name) {
  if (strncmp(name, "model.layers.", 13)) return -1;
  return model_layer_of_name(name);
}

/* The routed expert X of a ".mlp.experts.X." name, or -1. */
static int64_t ckpt_expert(const char *name) {
  const char *p = strstr(name, ".mlp.experts.");
  if (!p || ckpt_layer(name) < 0) return -1;
  p += 13;
  int64_t v = 0;
  if (*p < '0' || *p > '9') return -1;
  while (*p >= '0' && *p <= '9' && v < (1 << 30)) v = v * 10 + (*p++ - '0');
  return *p == '.' ? v : -1;
}

static int spec_cmp(const void *a, const void *b) {
  return strcmp(((const model_tensor_spec *)a)->name, ((const model_tensor_spec *)b)->name);
}

/* Is `name` an expected tensor or one of its quantization companions? */
static int ckpt_used(const model_tensor_spec *sorted, int n, const char *name) {
  static const char *const sfx[] = {".weight_scale_inv", ".weight_scale_2", ".weight_scale", ".input_scale"};
  model_tensor_spec key;
  snprintf(key.name, sizeof key.name, "%s", name);
  if (strlen(name) < sizeof key.name && bsearch(&key, sorted, (size_t)n, sizeof key, spec_cmp)) return 1;
  size_t l = strlen(name);
  for (size_t i = 0; i < sizeof sfx / sizeof *sfx; i++) {
    size_t k = strlen(sfx[i]);
    if (l <= k || strcmp(name + l - k, sfx[i]) || l - k + 7 >= sizeof key.name) continue;
    snprintf(key.name, sizeof key.name, "%.*s.weight", (int)(l - k), name);
    if (bsearch(&key, sorted, (size_t)n, sizeof key, spec_cmp)) return 1;
  }
  return 0;
}

/* One expected tensor against the checkpoint: present, a dtype the model
 * reads, the shape the config implies. */
static int ckpt_check_spec(st_ckpt *ck, const model_tensor_spec *s, const model_ckpt_report *r, rl_err *e) {
  const st_tensor *t;
  st_file *f = st_ckpt_find(ck, s->name, &t);
  char want[64], got[96];
  int64_t wsh[2] = {s->rows, s->cols};
  shape_str(want, sizeof want, s->vec ? 1 : 2, wsh);
  if (!f) {
    char also[MODEL_NAME_MAX + 160] = "";
    if (r->n_unused)
      snprintf(also, sizeof also, "; it holds %d tensor%s this config does not use, %s'%s' (renamed?)",
               r->n_unused, r->n_unused == 1 ? "" : "s", r->n_unused == 1 ? "" : "the first ", r->first_unused);
    return rl_errf(e, RL_EXIT_USAGE,
                   "the checkpoint has no tensor '%s' (config.json implies %s = %s)%s: the config and the weights "
                   "disagree; use the config.json these weights came with, or re-export the checkpoint with "
                   "Hugging Face's tensor names",
                   s->name, want, s->dims, also);
  }
  shape_str(got, sizeof got, t->ndim, t->shape);
  int fl = t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16;
  int q = !s->vec && (t->dtype == ST_F8_E4M3 || t->dtype == ST_U8);
  if (!fl && !q)
    return rl_errf(e, RL_EXIT_USAGE,
                   "tensor '%s' (%s) has dtype %s; the model reads F32, BF16, F16 and the fp8-block, mxfp8 and "
                   "nvfp4 checkpoint formats%s",
                   s->name, file_base(f), st_dtype_name(t->dtype),
                   s->vec ? " (norm weights unquantized)" : "");
  int64_t K = t->dtype == ST_U8 ? quant_cdiv(s->cols, 2) : s->cols;
  int ok = s->vec ? t->ndim == 1 && t->shape[0] == s->rows : t->ndim == 2 && t->shape[0] == s->rows && t->shape[1] == K;
  if (ok) return 0;
  if (t->dtype == ST_U8) {
    int64_t qsh[2] = {s->rows, K};
    char packed[64];
    return rl_errf(e, RL_EXIT_USAGE,
                   "tensor '%s' (%s) is U8 %s, but config.json implies %s = %s, which nvfp4 stores as U8 %s (two "
                   "values a byte): the config and the weights disagree; use the config.json these weights came "
                   "with, or re-export the checkpoint",
                   s->name, file_base(f), got, want, s->dims, shape_str(packed, sizeof packed, 2, qsh));
  }
  const char *hint = !s->vec && t->ndim == 2 && t->shape[0] == s->cols && t->shape[1] == s->rows && s->rows != s->cols
                         ? " (transposed? checkpoints store a linear weight as [out features, in features])"
                         : "";
  return rl_errf(e, RL_EXIT_USAGE,
                 "tensor '%s' (%s) has shape %s, but config.json implies %s = %s%s: the config and the weights "
                 "disagree; use the config.json these weights came with, or re-export the checkpoint",
                 s->name, file_base(f), got, want, s->dims, hint);
}

int model_ckpt_check(const model_config *c, st_ckpt *ck, model_ckpt_report *r, rl_err *e) {
  model_ckpt_report local;
  if (!r) r = &local;
  memset(r, 0, sizeof *r);
  model_tensor_spec *sp;
  int n = model_tensor_specs(c, &sp), rc = 0;
  model_tensor_spec *sorted = rl_xmalloc(sizeof *sorted * (size_t)(n + 1));
  memcpy(sorted, sp, sizeof *sorted * (size_t)n);
  qsort(sorted, (size_t)n, sizeof *sorted, spec_cmp);
  /* the layers and experts the weights hold, against the config's counts */
  int64_t top_l = -1, top_x = -1;
  const char *top_x_name = NULL;
  for (int fi = 0; fi < st_ckpt_n_files(ck); fi++) {
    const st_header *h = st_file_header(st_ckpt_file(ck, fi));
    for (int i = 0; i < h->n_tensors; i++) {
      const char *nm = h->tensors[i].name;
      int64_t l = ckpt_layer(nm), x = ckpt_expert(nm);
      if (l > top_l) top_l = l;
      if (x > top_x) top_x = x, top_x_name = nm;
      if (!ckpt_used(sorted, n, nm) && !r->n_unused++) snprintf(r->first_unused, sizeof r->first_unused, "%s", nm);
    }
  }
  if (top_l < 0)
    rc = rl_errf(e, RL_EXIT_USAGE,
                 "config.json says num_hidden_layers = %lld, but the checkpoint holds no model.layers.N tensor: the "
                 "config and the weights disagree; use the config.json these weights came with",
                 (long long)c->num_hidden_layers);
  else if (top_l + 1 != c->num_hidden_layers)
    rc = rl_errf(e, RL_EXIT_USAGE,
                 "config.json says num_hidden_layers = %lld, but the checkpoint's tensors are for %lld layers "
                 "(model.layers.0 to model.layers.%lld): the config and the weights disagree; fix "
                 "num_hidden_layers or use the config.json these weights came with",
                 (long long)c->num_hidden_layers, (long long)(top_l + 1), (long long)top_l);
  else if (top_x >= c->num_experts && c->kind != MODEL_KIND_QWEN3_MOE)
    rc = rl_errf(e, RL_EXIT_USAGE,
                 "tensor '%s' is for routed expert %lld, but config.json's model_type qwen3 is dense (no experts): "
                 "the config and the weights disagree; use the config.json these weights came with (qwen3_moe?)",
                 top_x_name, (long long)top_x);
  else if (top_x >= c->num_experts)
    rc = rl_errf(e, RL_EXIT_USAGE,
                 "tensor '%s' is for routed expert %lld, but config.json has num_experts = %lld (experts 0 to %lld): "
                 "the config and the weights disagree; fix num_experts or use the config.json these weights came with",
                 top_x_name, (long long)top_x, (long long)c->num_experts, (long long)(c->num_experts - 1));
  for (int i = 0; i < n && !rc; i++) rc = ckpt_check_spec(ck, &sp[i], r, e);
  free(sp), free(sorted);
  return rc;
}

/* Load parameter p (checked by model_ckpt_check) from the checkpoint into w (and w32). */
static int load_param(st_ckpt *ck, model_param *p, rl_err *e) {
  const st_tensor *t;
  st_file *f = st_ckpt_find(ck, p->name, &t);
  size_t n = (size_t)(p->rows * p->cols);
  if (!f) return rl_errf(e, RL_EXIT_FAIL, "tensor '%s' vanished from the checkpoint", p->name);
  if (t->dtype == ST_F32 || t->dtype == ST_BF16 || t->dtype == ST_F16) {
    void *buf = read_tensor(f, t, e);
    if (!buf) return e->code;
    if (t->dtype == ST_BF16) {
      memcpy(p->w, buf, n * 2);
      if (p->w32) ops_f32_from_bf16_cpu(p->w32, p->w, n);
    } else {
      float *x = p->w32 ? p->w32 : rl_xmalloc(n * sizeof(float));
      if (t->dtype == ST_F32) memcpy(x, buf, n * 4);
      else
        for (size_t i = 0; i < n; i++) x[i] = f16_to_f32(((const uint16_t *)buf)[i]);
      ops_bf16_from_f32_cpu(p->w, x, n);
      if (x != p->w32) free(x);
    }
    free(buf);
    return 0;
  }
  float *x = p->w32 ? p->w32 : rl_xmalloc(n * sizeof(float));
  int rc = load_quantized(ck, f, t, p, x, e);
  if (!rc) ops_bf16_from_f32_cpu(p->w, x, n);
  if (x != p->w32) free(x);
  return rc;
}

int model_load(const char *dir, const model_load_opts *o, model **out, rl_err *e) {
  *out = NULL;
  model_config c;
  int rc = model_config_load_hf(dir, &c, e);
  if (rc) return rc;
  model *m = NULL;
  rc = model_create(&c, o, &m, e);
  model_config_free(&c);
  if (rc) return rl_err_prefix(e, "%s: ", dir);
  st_ckpt *ck = NULL;
  if ((rc = st_ckpt_open(dir, &ck, e))) {
    model_free(m);
    return rc;
  }
  /* every tensor there with its shape before anything is read */
  rc = model_ckpt_check(&m->cfg, ck, NULL, e);
  for (int i = 0; i < m->n_params && !rc; i++) rc = load_param(ck, &m->params[i], e);
  st_ckpt_close(ck);
  if (rc) {
    model_free(m);
    return rl_err_prefix(e, "loading model %s: ", dir);
  }
  *out = m;
  return 0;
}

/* ---------------------------------------------------------------- quantized views */

/* Quantize one linear from its BF16 master in the policy's format. */
static int quantize_cb(model *m, model_linear *l, void *ctx) {
  rl_err *e = ctx;
  const quant_policy *p = &m->policy;
  linear_unquantize(l);
  qformat f = (l == &m->lm_head ? m->lm_head_keep_bf16 : l->p->keep_bf16) ? QFMT_BF16 : p->fmt[l->cls];
  int64_t N = l->p->rows, K = l->p->cols;
  if (f == QFMT_BF16 || (f == QFMT_MXFP8 && K % 32)) return 0;
  quant_opts qo = {0};
  qo.ue8m0 = p->ue8m0;
  quant_stats st = {0, -1};
  qtensor q = qtensor_bf16(NULL, N, K, 0);
  q.fmt = f;
  int qs;
  if (f == QFMT_FP8_BLOCK) {
    q.block_rows = 128;
    q.data = rl_xmalloc((size_t)(N * K) + 1);
    q.scales = rl_xmalloc((size_t)(quant_cdiv(N, 128) * quant_cdiv(K, 128)) * sizeof(float) + 4);
    qs = quant_fp8_block_weight_cpu(l->p->w, N, K, q.data, q.scales, &qo, &st);
  } else if (f == QFMT_MXFP8) {
    q.data = rl_xmalloc((size_t)(N * K) + 1);
    q.scales = rl_xmalloc((size_t)(N * quant_cdiv(K, 32)) + 1);
    qs = quant_mxfp8_cpu(l->p->w, N, K, q.data, q.scales, &qo, &st);
  } else {
    q.data = rl_xmalloc((size_t)(N * quant_cdiv(K, 2)) + 1);
    q.scales = rl_xmalloc((size_t)(N * quant_cdiv(K, 16)) + 1);
    /* gate and up of one expert share the tensor amax (FORMATS.md) */
    const model_param *twin = NULL;
    const char *gp = strstr(l->p->name, "gate_proj"), *up = strstr(l->p->name, "up_proj");
    if (l->cls == LINEAR_EXPERT && (gp || up)) {
      char nm[MODEL_NAME_MAX];
      size_t pre = (size_t)((gp ? gp : up) - l->p->name);
      snprintf(nm, sizeof nm, "%.*s%s.weight", (int)pre, l->p->name, gp ? "up_proj" : "gate_proj");
      twin = model_find_param(m, nm);
    }
    if (twin) {
      quant_stats s2 = {0, -1};
      float a = quant_amax_bf16_cpu(l->p->w, N * K, &s2);
      float b = quant_amax_bf16_cpu(twin->w, twin->rows * twin->cols, &s2);
      qs = quant_nvfp4_amax_cpu(l->p->w, N, K, a > b ? a : b, q.data, q.scales, &q.s_dec, &qo, &st);
    } else {
      qs = quant_nvfp4_cpu(l->p->w, N, K, q.data, q.scales, &q.s_dec, &qo, &st);
    }
  }
  l->qdata = q.data, l->qscales = q.scales;
  if (qs != QUANT_OK) {
    int rc = quant_status_err(qs, &st, l->p->name, K, e);
    return rc ? rc : rl_errf(e, RL_EXIT_FAIL, "quantizing %s: status %d", l->p->name, qs);
  }
  l->q = q;
  return 0;
}

int model_check_finite(const model *m, rl_err *e) {
  for (int i = 0; i < m->n_params; i++) {
    const model_param *p = &m->params[i];
    int64_t n = p->rows * p->cols, first = -1, bad = 0;
    float x = 0;
    for (int64_t j = 0; j < n; j++) {
      /* BF16: exponent bits all ones = Inf or NaN */
      int nonfinite = (p->w[j] & 0x7f80u) == 0x7f80u || (p->w32 && !isfinite(p->w32[j]));
      if (!nonfinite) continue;
      if (first < 0) first = j, x = p->w32 && !isfinite(p->w32[j]) ? p->w32[j] : fmt_bf16_to_f32(p->w[j]);
      bad++;
    }
    if (first >= 0)
      return rl_errf(e, RL_EXIT_USAGE,
                     "tensor '%s' [%lld x %lld] holds %lld non-finite value%s (%s first, at row %lld, column %lld): "
                     "the checkpoint is damaged; fix or re-export it", p->name, (long long)p->rows,
                     (long long)p->cols, (long long)bad, bad == 1 ? "" : "s", isnan(x) ? "NaN" : x > 0 ? "+Inf" : "-Inf",
                     (long long)(first / p->cols), (long long)(first % p->cols));
  }
  return 0;
}

int model_quantize(model *m, const quant_policy *p, rl_err *e) {
  int rc = quant_policy_check(p, e);
  if (rc) return rc;
  m->policy = *p;
  m->quantized = 0;
  rc = for_each_linear(m, quantize_cb, e);
  if (rc) return rl_err_prefix(e, "model_quantize: ");
  m->quantized = 1;
  return 0;
}

/* ---------------------------------------------------------------- gradients */

void model_grads_init(model *m) {
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    if (!p->g) p->g = rl_xcalloc((size_t)(p->rows * p->cols), sizeof(float));
    else memset(p->g, 0, (size_t)(p->rows * p->cols) * sizeof(float));
  }
}

void model_grads_zero(model *m) { model_grads_init(m); }

/* Grow *p to n elements of size sz. */
void model_grow(void **p, size_t n, size_t sz) {
  free(*p);
  *p = rl_xcalloc(n ? n : 1, sz);
}
