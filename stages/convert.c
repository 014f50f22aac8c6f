/* convert.c — the convert stage: which tensors become what (the plan), the
 * output shards, config.json with its quantization_config, the files copied
 * through, and publishing the finished directory. The per-tensor work is in
 * convert_exec.c. */
#include "stages/convert.h"

#include <errno.h>
#include <limits.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/device.h"
#include "model/model.h"
#include "state/ckpt_dir.h"
#include "stages/convert_internal.h"

void convert_opts_init(convert_opts *o) {
  memset(o, 0, sizeof *o);
  o->to = QFMT_FP8_BLOCK;
  o->shard_size = CONVERT_DEFAULT_SHARD_SIZE;
  o->progress = -1;
  o->device = CONVERT_DEVICE_AUTO;
}

int convert_parse_size(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  /* digits first: strtod also takes " 5", "+5", "0x10" and "inf" */
  if (!((*s >= '0' && *s <= '9') || *s == '.') || strpbrk(s, "xX")) return -1;
  double v = strtod(s, &end);
  if (end == s || errno || !(v > 0)) return -1;
  static const struct {
    const char *unit;
    double mult;
  } units[] = {{"", 1},       {"B", 1},       {"KB", 1e3},         {"MB", 1e6},
               {"GB", 1e9},   {"TB", 1e12},   {"KiB", 1024.0},     {"MiB", 1048576.0},
               {"GiB", 1073741824.0}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}};
  for (size_t i = 0; i < sizeof units / sizeof *units; i++)
    if (!strcasecmp(end, units[i].unit)) {
      double b = v * units[i].mult;
      if (b < 1 || b > 1e18) return -1;
      *out = (uint64_t)b;
      return 0;
    }
  return -1;
}

/* A copy of the first n bytes of s. */
static char *xstrndup(const char *s, size_t n) {
  char *p = rl_xmalloc(n + 1);
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

/* ------------------------------------------------------------------ the rules */

/* 1 gate_proj, 2 up_proj, 3 down_proj of a routed expert
 * ("...mlp.experts.E.gate_proj.weight"); 0 otherwise. */
static int expert_proj(const char *name) {
  const char *p = strstr(name, ".experts.");
  if (!p) return 0;
  p += 9;
  if (*p < '0' || *p > '9') return 0;
  while (*p >= '0' && *p <= '9') p++;
  if (!strcmp(p, ".gate_proj.weight")) return 1;
  if (!strcmp(p, ".up_proj.weight")) return 2;
  if (!strcmp(p, ".down_proj.weight")) return 3;
  return 0;
}

qformat convert_decide(const convert_opts *o, const model_config *c, const char *name, int ndim,
                       const int64_t *shape, int dtype_ok, const char **why) {
  *why = NULL;
  size_t n = strlen(name);
  if (o->to == QFMT_BF16) return QFMT_BF16;
  if (n < 7 || strcmp(name + n - 7, ".weight")) return *why = "not a weight", QFMT_BF16;
  if (!dtype_ok) return *why = "not BF16/F16/F32", QFMT_BF16;
  if (ndim != 2) return *why = "not 2-D", QFMT_BF16;
  if (shape[0] == 0 || shape[1] == 0) return *why = "empty", QFMT_BF16;
  if (strstr(name, "embed")) return *why = "embedding", QFMT_BF16;
  if (strstr(name, "norm")) return *why = "norm", QFMT_BF16;
  if (strstr(name, "mlp.gate.") || strstr(name, "shared_expert_gate."))
    return *why = "router", QFMT_BF16;
  if (strstr(name, "lm_head")) return *why = "lm_head", QFMT_BF16;
  /* the same rules as a run's precision.keep_bf16 / bf16_first/last_layers (model_keep_bf16) */
  switch (model_keep_bf16_rule(name, o->keep_bf16, o->n_keep_bf16, o->bf16_first_layers, o->bf16_last_layers,
                               c ? c->num_hidden_layers : 0)) {
    case MODEL_KEEP_PATTERN: return *why = "--keep-bf16", QFMT_BF16;
    case MODEL_KEEP_FIRST: return *why = "--bf16-first-layers", QFMT_BF16;
    case MODEL_KEEP_LAST: return *why = "--bf16-last-layers", QFMT_BF16;
    default: break;
  }
  int64_t K = shape[1];
  switch (o->to) {
    case QFMT_MXFP8:
      if (K % 32) return *why = "K % 32 != 0", QFMT_BF16;
      return QFMT_MXFP8;
    case QFMT_NVFP4:
      if (!expert_proj(name)) return *why = "not a routed expert", QFMT_BF16;
      if (K % 16) return *why = "K % 16 != 0", QFMT_BF16;
      return QFMT_NVFP4;
    default: return QFMT_FP8_BLOCK;
  }
}

/* ------------------------------------------------------------------ the plan */

/* The converter's state between planning and writing. */
typedef struct plan {
  const convert_opts *o;
  model_config cfg;
  json_t *cfg_json;
  qformat src_fmt; /* the input's format (QFMT_BF16 = not quantized) */
  st_ckpt *ck;
  int **slot; /* per file, per tensor: item index, -1 none yet, -2 consumed companion */
  convert_item *items;
  int n_items, cap_items;
} plan;

static const char *qfmt_name(qformat f) {
  return f == QFMT_FP8_BLOCK ? "fp8-block" : f == QFMT_MXFP8 ? "mxfp8" : f == QFMT_NVFP4 ? "nvfp4" : "bf16";
}

/* File index of f in the checkpoint. */
static int file_index(const plan *p, const st_file *f) {
  for (int i = 0; i < st_ckpt_n_files(p->ck); i++)
    if (st_ckpt_file(p->ck, i) == f) return i;
  return -1;
}

static int *slot_of(plan *p, const st_file *f, const st_tensor *t) {
  return &p->slot[file_index(p, f)][t - st_file_header(f)->tensors];
}

/* The input format from config.json's quantization_config. */
static int plan_source_format(plan *p, rl_err *e) {
  json_t *q = json_object_get(p->cfg_json, "quantization_config");
  const char *m = p->cfg.quant_method, *what = p->o->in_dir;
  p->src_fmt = QFMT_BF16;
  if (!m[0]) return 0;
  if (!strcmp(m, "fp8")) {
    json_t *bs = json_object_get(q, "weight_block_size");
    if (!json_is_array(bs) || json_array_size(bs) != 2 ||
        json_integer_value(json_array_get(bs, 0)) != 128 ||
        json_integer_value(json_array_get(bs, 1)) != 128)
      return rl_errf(e, RL_EXIT_USAGE,
                     "%s/config.json: quantization_config fp8 without weight_block_size [128, 128] "
                     "(per-tensor or other block sizes are not supported)",
                     what);
    p->src_fmt = QFMT_FP8_BLOCK;
  } else if (!strcmp(m, "mxfp8")) {
    p->src_fmt = QFMT_MXFP8;
  } else if (!strcmp(m, "modelopt")) {
    const char *algo = json_string_value(json_object_get(q, "quant_algo"));
    if (!algo || strcmp(algo, "NVFP4"))
      return rl_errf(e, RL_EXIT_USAGE,
                     "%s/config.json: modelopt quant_algo '%s' is not supported (NVFP4 is)", what,
                     algo ? algo : "(missing)");
    p->src_fmt = QFMT_NVFP4;
  } else {
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s/config.json: quant_method '%s' is not one rlrun reads (fp8, mxfp8, "
                   "modelopt NVFP4)",
                   what, m);
  }
  if (p->o->to != QFMT_BF16)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s is already quantized (%s); convert it --to bf16 first, then to %s", what,
                   qfmt_name(p->src_fmt), qfmt_name(p->o->to));
  return 0;
}

static convert_item *plan_push(plan *p) {
  if (p->n_items == p->cap_items) {
    p->cap_items = p->cap_items ? 2 * p->cap_items : 256;
    p->items = rl_xrealloc(p->items, sizeof *p->items * (size_t)p->cap_items);
  }
  convert_item *it = &p->items[p->n_items++];
  memset(it, 0, sizeof *it);
  it->partner = -1;
  return it;
}

/* Find base+suffix in the checkpoint; error naming the weight when absent. */
static int need_companion(plan *p, const char *base, const char *suffix, const st_tensor *w,
                          st_file **f, const st_tensor **t, rl_err *e) {
  char nm[1024];
  snprintf(nm, sizeof nm, "%s%s", base, suffix);
  *f = st_ckpt_find(p->ck, nm, t);
  if (!*f)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: tensor '%s' is %s (%s checkpoint) but '%s' is missing: the checkpoint is "
                   "incomplete",
                   p->o->in_dir, w->name, st_dtype_name(w->dtype), qfmt_name(p->src_fmt), nm);
  return 0;
}

/* A quantized weight of the input → a DEQUANT item (scales checked). */
static int plan_dequant(plan *p, st_file *f, const st_tensor *t, convert_item *it, rl_err *e) {
  size_t n = strlen(t->name);
  it->base = xstrndup(t->name, n - 7);
  it->act = ITEM_DEQUANT, it->fmt = p->src_fmt, it->f = f, it->t = t;
  it->N = t->shape[0];
  it->K = p->src_fmt == QFMT_NVFP4 ? 2 * t->shape[1] : t->shape[1];
  int64_t want[2] = {it->N, 0};
  st_dtype wd1 = ST_F32, wd2 = ST_F32;
  const char *suffix;
  if (p->src_fmt == QFMT_FP8_BLOCK) {
    suffix = ".weight_scale_inv", want[0] = quant_cdiv(it->N, 128), want[1] = quant_cdiv(it->K, 128);
    wd2 = ST_BF16; /* some FP8 exports store the scales in BF16 */
  } else if (p->src_fmt == QFMT_MXFP8) {
    suffix = ".weight_scale_inv", want[1] = quant_cdiv(it->K, 32), wd1 = ST_U8, wd2 = ST_F8_E8M0;
  } else {
    suffix = ".weight_scale", want[1] = quant_cdiv(it->K, 16), wd1 = wd2 = ST_F8_E4M3;
  }
  int rc = need_companion(p, it->base, suffix, t, &it->fs, &it->ts, e);
  if (rc) return rc;
  const st_tensor *s = it->ts;
  if ((s->dtype != wd1 && s->dtype != wd2) || s->ndim != 2 || s->shape[0] != want[0] ||
      s->shape[1] != want[1])
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: tensor '%s' should be %s [%lld, %lld] for %s weight '%s' [%lld, %lld]",
                   st_file_path(it->fs), s->name, st_dtype_name(wd1), (long long)want[0],
                   (long long)want[1], qfmt_name(p->src_fmt), t->name, (long long)t->shape[0],
                   (long long)t->shape[1]);
  *slot_of(p, it->fs, s) = -2;
  if (p->src_fmt != QFMT_NVFP4) return 0;
  st_file *f2;
  const st_tensor *t2;
  if ((rc = need_companion(p, it->base, ".weight_scale_2", t, &f2, &t2, e))) return rc;
  if (t2->dtype != ST_F32 || t2->numel != 1)
    return rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%s' should be one F32 value (S_dec)",
                   st_file_path(f2), t2->name);
  if ((rc = st_file_read(f2, t2, &it->s_dec, e))) return rc;
  if (!(it->s_dec > 0) || it->s_dec > 3.4e38f)
    return rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%s' holds %g, not a positive finite S_dec",
                   st_file_path(f2), t2->name, (double)it->s_dec);
  *slot_of(p, f2, t2) = -2;
  char nm[1024];
  snprintf(nm, sizeof nm, "%s.input_scale", it->base);
  const st_tensor *t3;
  st_file *f3 = st_ckpt_find(p->ck, nm, &t3);
  if (f3) *slot_of(p, f3, t3) = -2;
  return 0;
}

/* 1 when t is a quantized weight of the input's format. */
static int is_quantized_weight(const plan *p, const st_tensor *t) {
  size_t n = strlen(t->name);
  if (n < 7 || strcmp(t->name + n - 7, ".weight") || t->ndim != 2) return 0;
  if (p->src_fmt == QFMT_FP8_BLOCK || p->src_fmt == QFMT_MXFP8) return t->dtype == ST_F8_E4M3;
  if (p->src_fmt == QFMT_NVFP4) return t->dtype == ST_U8;
  return 0;
}

/* Every input tensor → an item (companions folded into their weight's item). */
static int plan_build(plan *p, rl_err *e) {
  int nf = st_ckpt_n_files(p->ck), rc = 0;
  p->slot = rl_xcalloc((size_t)nf, sizeof *p->slot);
  for (int i = 0; i < nf; i++) {
    const st_header *h = st_file_header(st_ckpt_file(p->ck, i));
    p->slot[i] = rl_xmalloc(sizeof(int) * (size_t)(h->n_tensors ? h->n_tensors : 1));
    for (int j = 0; j < h->n_tensors; j++) p->slot[i][j] = -1;
  }
  /* Pass 1: quantized weights of the input claim their scales. */
  for (int i = 0; i < nf && !rc; i++) {
    st_file *f = st_ckpt_file(p->ck, i);
    const st_header *h = st_file_header(f);
    for (int j = 0; j < h->n_tensors && !rc; j++)
      if (is_quantized_weight(p, &h->tensors[j])) {
        convert_item *it = plan_push(p);
        rc = plan_dequant(p, f, &h->tensors[j], it, e);
        p->slot[i][j] = p->n_items - 1;
      }
  }
  if (rc) return rc;
  /* Pass 2: everything else, in file and data order; dequant items move to
   * their weight's place so the output follows the input's order. */
  convert_item *deq = p->items;
  p->items = NULL, p->n_items = p->cap_items = 0;
  for (int i = 0; i < nf; i++) {
    st_file *f = st_ckpt_file(p->ck, i);
    const st_header *h = st_file_header(f);
    for (int j = 0; j < h->n_tensors; j++) {
      const st_tensor *t = &h->tensors[j];
      int s = p->slot[i][j];
      if (s == -2) continue;
      convert_item *it = plan_push(p);
      if (s >= 0) {
        *it = deq[s];
        p->slot[i][j] = p->n_items - 1;
        continue;
      }
      p->slot[i][j] = p->n_items - 1;
      it->f = f, it->t = t;
      int fl = t->dtype == ST_BF16 || t->dtype == ST_F16 || t->dtype == ST_F32;
      it->fmt = convert_decide(p->o, &p->cfg, t->name, t->ndim, t->shape, fl, &it->why);
      if (it->fmt != QFMT_BF16) {
        it->act = ITEM_QUANT;
        it->N = t->shape[0], it->K = t->shape[1];
        it->base = xstrndup(t->name, strlen(t->name) - 7);
      } else {
        /* Unquantized floating-point tensors are BF16 in every output format
         * (FORMATS.md): F32/F16 ones are cast (RNE), BF16 ones copied. */
        it->act = fl && t->dtype != ST_BF16 ? ITEM_CAST_BF16 : ITEM_COPY;
      }
    }
  }
  free(deq);
  /* NVFP4 partners: gate_proj ↔ up_proj of one expert share one amax. */
  for (int k = 0; k < p->n_items; k++) {
    convert_item *it = &p->items[k];
    if (it->act != ITEM_QUANT || it->fmt != QFMT_NVFP4 || expert_proj(it->t->name) == 3) continue;
    char nm[1024];
    int gate = expert_proj(it->t->name) == 1;
    snprintf(nm, sizeof nm, "%.*s%s", (int)(strlen(it->base) - (gate ? 9 : 7)), it->base,
             gate ? "up_proj.weight" : "gate_proj.weight");
    const st_tensor *pt;
    st_file *pf = st_ckpt_find(p->ck, nm, &pt);
    if (!pf) continue;
    int pi = *slot_of(p, pf, pt);
    if (pi >= 0 && p->items[pi].act == ITEM_QUANT && p->items[pi].fmt == QFMT_NVFP4)
      it->partner = pi;
  }
  return 0;
}

/* ------------------------------------------------------------------ outputs */

/* Module names (weight name without ".weight") of the 2-D linear weights
 * left unquantized: HF's modules_to_not_convert / ModelOpt's exclude_modules. */
static json_t *plan_kept_modules(const plan *p) {
  json_t *a = json_array();
  for (int k = 0; k < p->n_items; k++) {
    const convert_item *it = &p->items[k];
    const char *n = it->t->name;
    size_t l = strlen(n);
    if (it->act == ITEM_QUANT || it->t->ndim != 2 || l < 7 || strcmp(n + l - 7, ".weight") ||
        strstr(n, "embed"))
      continue;
    char *m = xstrndup(n, l - 7);
    json_array_append_new(a, json_string(m));
    free(m);
  }
  return a;
}

/* quantization_config for the output format (FORMATS.md). */
static json_t *plan_quant_config(const plan *p) {
  const convert_opts *o = p->o;
  json_t *q = json_object();
  if (o->to == QFMT_FP8_BLOCK) {
    json_object_set_new(q, "quant_method", json_string("fp8"));
    json_object_set_new(q, "fmt", json_string("e4m3"));
    json_object_set_new(q, "activation_scheme", json_string("dynamic"));
    json_object_set_new(q, "weight_block_size", json_pack("[ii]", 128, 128));
    if (o->ue8m0) json_object_set_new(q, "scale_fmt", json_string("ue8m0"));
    json_object_set_new(q, "modules_to_not_convert", plan_kept_modules(p));
  } else if (o->to == QFMT_MXFP8) {
    json_object_set_new(q, "quant_method", json_string("mxfp8"));
    json_object_set_new(q, "fmt", json_string("e4m3"));
    json_object_set_new(q, "weight_block_size", json_pack("[ii]", 1, 32));
    json_object_set_new(q, "scale_fmt", json_string("ue8m0"));
    json_object_set_new(q, "activation_scheme", json_string("dynamic"));
    json_object_set_new(q, "modules_to_not_convert", plan_kept_modules(p));
  } else {
    json_object_set_new(q, "quant_method", json_string("modelopt"));
    json_object_set_new(q, "quant_algo", json_string("NVFP4"));
    json_object_set_new(q, "group_size", json_integer(16));
    json_object_set_new(q, "kv_cache_quant_algo", json_null());
    json_object_set_new(q, "exclude_modules", plan_kept_modules(p));
  }
  return q;
}

/* Write a JSON value as an indented file (atomically). */
static int write_json(const char *path, json_t *v, rl_err *e) {
  char *txt = json_dumps(v, JSON_INDENT(2));
  if (!txt) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot encode JSON", path);
  size_t l = strlen(txt);
  txt = rl_xrealloc(txt, l + 2);
  txt[l] = '\n', txt[l + 1] = 0;
  int rc = st_write_atomic(path, txt, l + 1, e);
  free(txt);
  return rc;
}

/* config.json (quantization_config set or removed) and, for NVFP4,
 * hf_quant_config.json as ModelOpt exports it. */
static int write_configs(const plan *p, const char *dir, int n_quantized, rl_err *e) {
  json_t *cfg = json_deep_copy(p->cfg_json);
  json_object_del(cfg, "quantization_config");
  /* every floating-point tensor the output keeps is BF16 (F32/F16 ones cast):
   * the dtype the config names (transformers 4.x torch_dtype, 5.x dtype) says so */
  static const char *const dkeys[2] = {"torch_dtype", "dtype"};
  for (int i = 0; i < 2; i++)
    if (json_is_string(json_object_get(cfg, dkeys[i])))
      json_object_set_new(cfg, dkeys[i], json_string("bfloat16"));
  json_t *q = NULL;
  if (p->o->to != QFMT_BF16 && n_quantized > 0) {
    q = plan_quant_config(p);
    json_object_set(cfg, "quantization_config", q);
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  int rc = write_json(path, cfg, e);
  json_decref(cfg);
  if (!rc && q && p->o->to == QFMT_NVFP4) {
    json_t *h = json_pack("{s:{s:s,s:s},s:{s:s,s:i,s:n,s:O}}", "producer", "name", "rlrun",
                          "version", RLRUN_VERSION, "quantization", "quant_algo", "NVFP4",
                          "group_size", 16, "kv_cache_quant_algo", "exclude_modules",
                          json_object_get(q, "exclude_modules"));
    snprintf(path, sizeof path, "%s/hf_quant_config.json", dir);
    rc = write_json(path, h, e);
    json_decref(h);
  }
  json_decref(q);
  return rc;
}

/* How many tensors an item writes. */
static int item_n_outputs(const convert_item *it) {
  return it->act != ITEM_QUANT ? 1 : it->fmt == QFMT_NVFP4 ? 4 : 2;
}

/* Group items into shards of at most shard_size bytes (an item's tensors stay
 * together; an item larger than a shard gets one of its own). */
static int plan_shards(plan *p, uint64_t shard_size) {
  int s = 0;
  uint64_t cur = 0;
  int any = 0;
  for (int k = 0; k < p->n_items; k++) {
    convert_item *it = &p->items[k];
    if (any && cur + it->out_bytes > shard_size) s++, cur = 0, any = 0;
    it->shard = s;
    cur += it->out_bytes;
    any = 1;
  }
  return s + 1;
}

/* Declare, write and finish output shard `s` named `fname` in dir. */
static int write_shard(convert_ctx *x, const char *dir, const char *fname, int s, rl_err *e) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, fname);
  st_writer *w = st_writer_new(path);
  int rc = st_writer_meta(w, "format", "pt", e);
  for (int k = 0; k < x->n_items && !rc; k++)
    if (x->items[k].shard == s) rc = convert_item_declare(&x->items[k], w, e);
  if (!rc) rc = st_writer_begin(w, e);
  for (int k = 0; k < x->n_items && !rc; k++)
    if (x->items[k].shard != s) continue;
    else if (rl_interrupted()) rc = rl_errf(e, RL_EXIT_INTERRUPT, "interrupted: nothing was written to the output");
    else rc = convert_item_run(x, &x->items[k], w, e);
  if (rc) {
    st_writer_abort(w);
    return rc;
  }
  return st_writer_finish(w, e);
}

/* Write every shard, the index when there are several; fills names. */
static int write_shards(convert_ctx *x, plan *p, const char *dir, int n_shards, rl_err *e) {
  char **fnames = rl_xcalloc((size_t)n_shards, sizeof(char *));
  int rc = 0;
  for (int s = 0; s < n_shards; s++) {
    fnames[s] = rl_xmalloc(64);
    if (n_shards == 1) snprintf(fnames[s], 64, "%s", ST_SINGLE_NAME);
    else snprintf(fnames[s], 64, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
  }
  for (int s = 0; s < n_shards && !rc; s++) rc = write_shard(x, dir, fnames[s], s, e);
  if (!rc && n_shards > 1) {
    /* weight_map: every output tensor → its shard file. */
    int cap = 0, n = 0;
    for (int k = 0; k < p->n_items; k++) cap += item_n_outputs(&p->items[k]);
    const char **names = rl_xmalloc(sizeof(char *) * (size_t)cap);
    const char **files = rl_xmalloc(sizeof(char *) * (size_t)cap);
    char **owned = rl_xmalloc(sizeof(char *) * (size_t)cap);
    int n_owned = 0;
    uint64_t total = 0;
    for (int k = 0; k < p->n_items; k++) {
      convert_item *it = &p->items[k];
      total += it->out_bytes;
      if (it->act != ITEM_QUANT) {
        names[n] = it->t->name, files[n++] = fnames[it->shard];
        continue;
      }
      const char *sfx[4] = {".weight", ".weight_scale_inv", ".weight_scale_2", ".input_scale"};
      if (it->fmt == QFMT_NVFP4) sfx[1] = ".weight_scale";
      for (int j = 0; j < item_n_outputs(it); j++) {
        size_t l = strlen(it->base) + strlen(sfx[j]) + 1;
        char *nm = rl_xmalloc(l);
        snprintf(nm, l, "%s%s", it->base, sfx[j]);
        owned[n_owned++] = nm;
        names[n] = nm, files[n++] = fnames[it->shard];
      }
    }
    rc = st_index_write(dir, n, names, files, total, e);
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(owned), free(names), free(files);
  }
  for (int s = 0; s < n_shards; s++) free(fnames[s]);
  free(fnames);
  return rc;
}

/* ------------------------------------------------------------------ the run */

/* The resolved path of out, which need not exist yet: realpath of out, or of
 * its parent directory with the last component appended. 0, or -1 when
 * neither resolves (the output's parent is missing: mkdir says so later). */
static int resolve_out(const char *out, char *buf, size_t n) {
  char tmp[4096], res[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s", out);
  for (size_t l = strlen(tmp); l > 1 && tmp[l - 1] == '/'; l--) tmp[l - 1] = 0;
  if (realpath(tmp, res)) return snprintf(buf, n, "%s", res), 0;
  char *slash = strrchr(tmp, '/');
  const char *base = slash ? slash + 1 : tmp;
  if (slash == tmp) snprintf(res, sizeof res, "/");
  else if (slash) {
    *slash = 0;
    if (!realpath(tmp, res)) return -1;
  } else if (!realpath(".", res)) return -1;
  snprintf(buf, n, "%s%s%s", res, strcmp(res, "/") ? "/" : "", base);
  return 0;
}

/* 1 when the resolved path a lies strictly inside the resolved directory d. */
static int path_inside(const char *a, const char *d) {
  size_t l = strlen(d);
  if (!strcmp(d, "/")) return strcmp(a, "/") != 0;
  return !strncmp(a, d, l) && a[l] == '/';
}

/* Check the options before anything is read. */
static int check_opts(const convert_opts *o, rl_err *e) {
  if (!o->in_dir || !*o->in_dir) return rl_errf(e, RL_EXIT_USAGE, "--in DIR is required");
  if (!o->out_dir || !*o->out_dir) return rl_errf(e, RL_EXIT_USAGE, "--out DIR is required");
  if (o->to != QFMT_BF16 && o->to != QFMT_FP8_BLOCK && o->to != QFMT_MXFP8 && o->to != QFMT_NVFP4)
    return rl_errf(e, RL_EXIT_USAGE, "unknown target format %d", (int)o->to);
  if (o->ue8m0 && o->to != QFMT_FP8_BLOCK && o->to != QFMT_MXFP8)
    return rl_errf(e, RL_EXIT_USAGE,
                   "--scale-fmt ue8m0 applies to fp8-block (mxfp8 scales are always "
                   "ue8m0), not to %s",
                   qfmt_name(o->to));
  if (o->bf16_first_layers < 0 || o->bf16_last_layers < 0)
    return rl_errf(e, RL_EXIT_USAGE, "--bf16-first-layers/--bf16-last-layers must be >= 0");
  if (o->shard_size == 0) return rl_errf(e, RL_EXIT_USAGE, "--shard-size must be > 0");
  for (int i = 0; i < o->n_keep_bf16; i++) /* fnmatch takes a broken glob silently (it matches nothing) */
    if (model_keep_bf16_pattern_check(o->keep_bf16[i], e)) return rl_err_prefix(e, "--keep-bf16: ");
  struct stat a, b;
  if (stat(o->in_dir, &a) || !S_ISDIR(a.st_mode))
    return rl_errf(e, RL_EXIT_USAGE, "--in %s is not a directory", o->in_dir);
  if (stat(o->out_dir, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
    return rl_errf(e, RL_EXIT_USAGE, "--out must differ from --in (%s)", o->in_dir);
  /* nested: publishing an --out that holds the input (--force) deleted it; an
   * --out inside the input became part of the model directory it reads */
  char rin[PATH_MAX], rout[PATH_MAX + 4100];
  if (realpath(o->in_dir, rin) && !resolve_out(o->out_dir, rout, sizeof rout)) {
    if (path_inside(rin, rout))
      return rl_errf(e, RL_EXIT_USAGE,
                     "--in %s lies inside --out %s: writing --out would replace the input it reads; choose an "
                     "--out outside the model directory",
                     o->in_dir, o->out_dir);
    if (path_inside(rout, rin))
      return rl_errf(e, RL_EXIT_USAGE,
                     "--out %s lies inside --in %s: the output would become part of the model directory it "
                     "converts; choose an --out outside it",
                     o->out_dir, o->in_dir);
  }
  int rc = ckpt_dir_check_output(o->out_dir, o->force, e);
  return rc ? rc : ckpt_dir_check_extras(o->in_dir, e);
}

/* The options against the model: requests that would silently do nothing are errors. */
static int check_opts_model(const convert_opts *o, const model_config *c, rl_err *e) {
  /* each alone first: their sum could overflow */
  if (o->bf16_first_layers > c->num_hidden_layers || o->bf16_last_layers > c->num_hidden_layers ||
      o->bf16_first_layers + o->bf16_last_layers > c->num_hidden_layers)
    return rl_errf(e, RL_EXIT_USAGE, "--bf16-first-layers %lld + --bf16-last-layers %lld exceed the model's %lld layers",
                   (long long)o->bf16_first_layers, (long long)o->bf16_last_layers, (long long)c->num_hidden_layers);
  return 0;
}

/* Read config.json twice: checked (model_config) and as JSON to rewrite. */
static int load_config(plan *p, rl_err *e) {
  char path[4096], *text;
  size_t len;
  snprintf(path, sizeof path, "%s/config.json", p->o->in_dir);
  int rc = rl_read_file(path, &text, &len, e);
  if (rc) return rl_err_prefix(e, "a model directory needs config.json: ");
  rc = model_config_parse(path, text, len, &p->cfg, e);
  if (!rc) p->cfg_json = json_loadb(text, len, 0, NULL);
  free(text);
  return rc;
}

/* Whether to use the GPU: --device, the build, and what device_query finds. */
static int pick_device(const convert_opts *o, int *use_gpu, rl_err *e) {
  *use_gpu = 0;
  if (o->device == CONVERT_DEVICE_CPU) return 0;
  device_info d;
  device_query(&d);
  if (d.built_with_cuda && d.n_gpus > 0) {
    *use_gpu = 1;
    return 0;
  }
  if (o->device == CONVERT_DEVICE_CUDA)
    return rl_errf(e, RL_EXIT_HARDWARE, "--device cuda: no usable GPU (%s); use --device cpu (or auto)", d.status);
  return 0;
}

static void plan_free(plan *p) {
  if (p->slot)
    for (int i = 0; i < st_ckpt_n_files(p->ck); i++) free(p->slot[i]);
  free(p->slot);
  for (int k = 0; k < p->n_items; k++) free(p->items[k].base);
  free(p->items);
  st_ckpt_close(p->ck);
  json_decref(p->cfg_json);
  model_config_free(&p->cfg);
}

int convert_run(const convert_opts *o, convert_stats *stats, rl_err *e) {
  convert_stats local;
  if (!stats) stats = &local;
  memset(stats, 0, sizeof *stats);
  double t0 = rl_now();
  plan p;
  memset(&p, 0, sizeof p);
  p.o = o;
  int rc = check_opts(o, e);
  if (!rc) rc = load_config(&p, e);
  if (!rc) rc = check_opts_model(o, &p.cfg, e);
  if (!rc) rc = plan_source_format(&p, e);
  if (!rc) rc = st_ckpt_open(o->in_dir, &p.ck, e);
  /* the weights against config.json as model_load checks them (names, shapes,
   * layer and expert counts), before anything is written */
  model_ckpt_report rep = {0};
  if (!rc && (rc = model_ckpt_check(&p.cfg, p.ck, &rep, e))) rl_err_prefix(e, "%s: ", o->in_dir);
  if (!rc) rc = plan_build(&p, e);
  if (rc) {
    plan_free(&p);
    return rc;
  }
  FILE *log = o->log ? o->log : stderr;
  for (int i = 0; i < o->n_keep_bf16 && !o->quiet; i++) { /* a pattern that keeps nothing: a typo? */
    int hit = 0;
    for (int k = 0; k < p.n_items && !hit; k++)
      hit = model_keep_bf16_rule(p.items[k].t->name, &o->keep_bf16[i], 1, 0, 0, 0) == MODEL_KEEP_PATTERN;
    if (!hit)
      fprintf(log, "convert: note: --keep-bf16 '%s' matches no tensor of %s (nor its module name, the tensor "
                   "name without .weight)\n", o->keep_bf16[i], o->in_dir);
  }
  rl_err why;
  if (!o->quiet && model_config_runnable(&p.cfg, &why)) /* converted all the same: for other engines */
    fprintf(log, "convert: note: rlrun itself cannot score or train this model (%s); the conversion is written all "
                 "the same, for engines that can\n",
            strncmp(why.msg, "model: ", 7) ? why.msg : why.msg + 7);
  if (rep.n_unused && !o->quiet) /* as model_load, which ignores them */
    fprintf(log, "convert: note: %d tensor%s of %s %s not used by the model (the first: '%s'); written to the "
                 "output all the same\n",
            rep.n_unused, rep.n_unused == 1 ? "" : "s", o->in_dir, rep.n_unused == 1 ? "is" : "are", rep.first_unused);
  uint64_t total_in = 0;
  for (int k = 0; k < p.n_items; k++) {
    convert_item *it = &p.items[k];
    convert_item_sizes(it);
    total_in += it->in_bytes;
    stats->quantized += it->act == ITEM_QUANT;
    stats->dequantized += it->act == ITEM_DEQUANT;
    stats->kept += it->act == ITEM_COPY || it->act == ITEM_CAST_BF16;
    stats->tensors_out += item_n_outputs(it);
    stats->bytes_out += it->out_bytes;
  }
  stats->tensors_in = st_ckpt_n_tensors(p.ck);
  stats->bytes_in = total_in;
  if (o->to == QFMT_NVFP4 && stats->quantized == 0) {
    /* refused when no tensor qualifies by itself (a dense model, experts whose K
     * is no multiple of 16); when --keep-bf16 or the BF16 layers kept them all,
     * the output is unquantized with a note, as for the other formats */
    convert_opts bare = *o;
    bare.n_keep_bf16 = 0, bare.bf16_first_layers = bare.bf16_last_layers = 0;
    int could = 0;
    for (int k = 0; k < p.n_items && !could; k++) {
      const st_tensor *t = p.items[k].t;
      const char *why;
      const int fl = t->dtype == ST_BF16 || t->dtype == ST_F16 || t->dtype == ST_F32;
      could = convert_decide(&bare, &p.cfg, t->name, t->ndim, t->shape, fl, &why) == QFMT_NVFP4;
    }
    if (!could) { /* a request that cannot do anything: refused */
      plan_free(&p);
      return rl_errf(e, RL_EXIT_USAGE,
                     "--to nvfp4 quantizes the routed MoE experts only (FORMATS.md), and no tensor of %s qualifies: "
                     "nothing would be quantized; use fp8-block or mxfp8", o->in_dir);
    }
  }
  if (o->to != QFMT_BF16 && stats->quantized == 0 && !o->quiet)
    fprintf(log, "convert: note: no tensor of %s is quantized to %s (none qualifies, or --keep-bf16 and the BF16 "
                 "layers keep every one that does); the output stays unquantized\n", o->in_dir, qfmt_name(o->to));
  int n_shards = plan_shards(&p, o->shard_size);
  stats->shards = n_shards;
  convert_ctx x;
  memset(&x, 0, sizeof x);
  x.o = o, x.items = p.items, x.n_items = p.n_items, x.stats = stats;
  rc = pick_device(o, &x.use_gpu, e);
  if (!rc && x.use_gpu) rc = convert_gpu_init(&x, e);
  if (!rc && x.use_gpu && !o->quiet) {
    int n_wide = 0;
    for (int k = 0; k < p.n_items; k++)
      n_wide += p.items[k].act == ITEM_QUANT && p.items[k].t->dtype != ST_BF16;
    if (n_wide)
      fprintf(log, "convert: note: %d F32/F16 weight(s) are quantized on the CPU from their own "
                   "values (the CUDA quantizers read BF16)\n",
              n_wide);
  }
  stats->used_gpu = x.use_gpu;
  /* Build the directory under a temporary name beside the output. */
  char out[3800], tmp[3900];
  snprintf(out, sizeof out, "%s", o->out_dir);
  for (size_t l = strlen(out); l > 1 && out[l - 1] == '/'; l--) out[l - 1] = 0;
  snprintf(tmp, sizeof tmp, "%s.partial.%ld", out, (long)getpid());
  if (!rc) rc = ckpt_dir_remove(tmp, e);
  if (!rc && mkdir(tmp, 0755))
    rc = rl_errf(e, RL_EXIT_FAIL, "cannot create %s: %s (does the parent directory exist?)",
                 tmp, strerror(errno));
  int made = !rc;
  if (!rc) {
    convert_progress_begin(&x.prog, o, p.n_items, total_in);
    rc = write_shards(&x, &p, tmp, n_shards, e);
    convert_progress_end(&x.prog);
  }
  if (!rc) rc = write_configs(&p, tmp, stats->quantized, e);
  if (!rc) rc = ckpt_dir_copy_extras(o->in_dir, tmp, &stats->files_copied, e);
  if (!rc) rc = ckpt_dir_publish(tmp, out, o->force, e);
  if (rc && made) {
    rl_err e2;
    ckpt_dir_remove(tmp, &e2);
  }
  convert_gpu_free(&x);
  plan_free(&p);
  stats->seconds = rl_now() - t0;
  return rc;
}
