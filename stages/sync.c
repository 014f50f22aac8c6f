/* sync.c — the sync stage (sync.h): the manifest of the rollout view, host
 * views, bucket pack/unpack, the host transport, the colocated sync with its
 * timing, and the metrics. Verification is in sync_verify.c, the CUDA + NCCL
 * path in sync_cuda.c / sync_kern.cu. */
#include "stages/sync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_cuda.h"
#include "stages/sync_int.h"
#include "state/fault.h"

/* ---------------------------------------------------------------- manifest */

/* The format a linear of class cls with K columns has in policy p (MXFP8
 * keeps K % 32 ≠ 0 in BF16, as model_quantize and the converter do; a linear
 * marked by model_keep_bf16 stays BF16). */
static qformat sync_eff_fmt(const quant_policy *p, linear_class cls, int64_t K, int keep) {
  qformat f = keep ? QFMT_BF16 : p->fmt[cls];
  return f == QFMT_MXFP8 && K % 32 ? QFMT_BF16 : f;
}

uint64_t sync_part_bytes(qformat f, sync_part part, int64_t N, int64_t K, int on_device) {
  switch (part) {
  case SYNC_PART_BF16: return (uint64_t)(N * K) * 2;
  case SYNC_PART_SDEC: return 4;
  case SYNC_PART_DATA: return f == QFMT_NVFP4 ? (uint64_t)(N * quant_cdiv(K, 2)) : (uint64_t)(N * K);
  case SYNC_PART_SCALES:
    if (f == QFMT_FP8_BLOCK) {
      int64_t kb = quant_cdiv(K, 128);
      return (uint64_t)(quant_cdiv(N, 128) * (on_device ? quant_roundup(kb, 4) : kb)) * 4;
    }
    return (uint64_t)(N * quant_cdiv(K, f == QFMT_NVFP4 ? 16 : 32));
  }
  return 0;
}

/* FNV-1a over n bytes, continuing from h. */
static uint64_t sync_fnv(uint64_t h, const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

/* Append one entry at the next aligned offset. */
static void sync_add(sync_manifest *mf, int *cap, const model_param *p, int pi, int lm_head, sync_part part,
                     qformat f) {
  if (mf->n == *cap) {
    *cap = *cap ? 2 * *cap : 64;
    mf->v = rl_xrealloc(mf->v, (size_t)*cap * sizeof *mf->v);
  }
  sync_entry *x = &mf->v[mf->n++];
  memset(x, 0, sizeof *x);
  static const char *const suffix[4][4] = {
      /* part × fmt: BF16, FP8_BLOCK, MXFP8, NVFP4 */
      {"", "", "", ""},
      {"", "", "", ""},
      {"", "_scale_inv", "_scale_inv", "_scale"},
      {"", "", "", "_scale_2"}};
  snprintf(x->name, sizeof x->name, "%s%s", lm_head ? "lm_head.weight" : p->name, suffix[part][f]);
  x->param = pi, x->lm_head = lm_head, x->part = part, x->fmt = f;
  x->rows = p->rows, x->cols = p->cols;
  x->offset = quant_roundup((int64_t)mf->total, SYNC_ALIGN);
  x->bytes = sync_part_bytes(f, part, p->rows, p->cols, mf->on_device);
  mf->total = x->offset + x->bytes;
  mf->payload += x->bytes;
  if (part != SYNC_PART_BF16) mf->quantized += x->bytes;
}

/* Append the parts of a quantized linear view (format f). */
static void sync_add_view(sync_manifest *mf, int *cap, const model_param *p, int pi, int lm_head, qformat f) {
  sync_add(mf, cap, p, pi, lm_head, SYNC_PART_DATA, f);
  sync_add(mf, cap, p, pi, lm_head, SYNC_PART_SCALES, f);
  if (f == QFMT_NVFP4) sync_add(mf, cap, p, pi, lm_head, SYNC_PART_SDEC, f);
}

int sync_manifest_build(const model *m, const quant_policy *p, int on_device, uint64_t bucket_bytes,
                        sync_manifest *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  if (quant_policy_check(p, e)) return rl_err_prefix(e, "sync: ");
  out->on_device = on_device;
  out->policy = *p;
  out->bucket = bucket_bytes ? bucket_bytes : SYNC_DEFAULT_BUCKET;
  /* the linear (other than lm_head) whose weight each parameter is */
  const model_linear **lin = rl_xcalloc((size_t)m->n_params, sizeof *lin);
  for (int l = 0; l < m->L; l++) {
    const model_layer *y = &m->layers[l];
    const model_linear *ls[] = {&y->q, &y->k, &y->v, &y->o, &y->gate, &y->up, &y->down, &y->router};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
      if (ls[i]->p) lin[ls[i]->p - m->params] = ls[i];
    for (int x = 0; y->moe && x < m->E; x++) {
      const model_linear *ex[3] = {&y->eg[x], &y->eu[x], &y->ed[x]};
      for (int j = 0; j < 3; j++) lin[ex[j]->p - m->params] = ex[j];
    }
  }
  int cap = 0;
  for (int i = 0; i < m->n_params; i++) {
    const model_param *q = &m->params[i];
    qformat f = lin[i] ? sync_eff_fmt(p, lin[i]->cls, q->cols, q->keep_bf16) : QFMT_BF16;
    if (f == QFMT_BF16) sync_add(out, &cap, q, i, 0, SYNC_PART_BF16, QFMT_BF16);
    else sync_add_view(out, &cap, q, i, 0, f);
  }
  const model_param *hp = m->lm_head.p;
  qformat hf = hp ? sync_eff_fmt(p, LINEAR_LM_HEAD, hp->cols, m->lm_head_keep_bf16) : QFMT_BF16;
  if (hp && hf != QFMT_BF16) sync_add_view(out, &cap, hp, (int)(hp - m->params), 1, hf);
  free(lin);
  out->n_buckets = out->total ? (int64_t)quant_cdiv((int64_t)out->total, (int64_t)out->bucket) : 0;
  uint64_t h = 0xcbf29ce484222325ull;
  for (int i = 0; i < out->n; i++) {
    const sync_entry *x = &out->v[i];
    int64_t f[7] = {x->param, x->lm_head, x->part, x->fmt, x->rows, x->cols, (int64_t)x->offset};
    h = sync_fnv(h, x->name, strlen(x->name));
    h = sync_fnv(h, f, sizeof f);
    h = sync_fnv(h, &x->bytes, sizeof x->bytes);
  }
  h = sync_fnv(h, &out->on_device, sizeof out->on_device);
  out->digest = sync_fnv(h, &out->total, sizeof out->total);
  return 0;
}

void sync_manifest_free(sync_manifest *mf) {
  free(mf->v);
  memset(mf, 0, sizeof *mf);
}

void sync_bucket_range(const sync_manifest *mf, int64_t b, uint64_t *lo, uint64_t *hi) {
  *lo = (uint64_t)b * mf->bucket;
  *hi = *lo + mf->bucket < mf->total ? *lo + mf->bucket : mf->total;
}

int sync_manifest_find(const sync_manifest *mf, const char *name) {
  for (int i = 0; i < mf->n; i++)
    if (!strcmp(mf->v[i].name, name)) return i;
  return -1;
}

/* ---------------------------------------------------------------- host views */

/* The host linear view that entry x belongs to. */
static model_linear *sync_host_linear(model *m, const sync_entry *x) {
  if (x->lm_head) return &m->lm_head;
  for (int l = 0; l < m->L; l++) {
    model_layer *y = &m->layers[l];
    model_linear *ls[] = {&y->q, &y->k, &y->v, &y->o, &y->gate, &y->up, &y->down, &y->router};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
      if (ls[i]->p == &m->params[x->param]) return ls[i];
    for (int k = 0; y->moe && k < m->E; k++) {
      if (y->eg[k].p == &m->params[x->param]) return &y->eg[k];
      if (y->eu[k].p == &m->params[x->param]) return &y->eu[k];
      if (y->ed[k].p == &m->params[x->param]) return &y->ed[k];
    }
  }
  return NULL;
}

int sync_view_host(const sync_manifest *mf, model *m, sync_view *v, rl_err *e) {
  memset(v, 0, sizeof *v);
  v->ptr = rl_xcalloc((size_t)mf->n + 1, sizeof *v->ptr);
  v->n = mf->n;
  model_linear *l = NULL;
  for (int i = 0; i < mf->n; i++) {
    const sync_entry *x = &mf->v[i];
    if (x->param >= m->n_params || m->params[x->param].rows != x->rows || m->params[x->param].cols != x->cols) {
      sync_view_free(v);
      return rl_errf(e, RL_EXIT_USAGE, "sync: tensor %s of the manifest does not exist with shape [%lld, %lld] in this model",
                     x->name, (long long)x->rows, (long long)x->cols);
    }
    if (x->part == SYNC_PART_BF16) {
      v->ptr[i] = m->params[x->param].w;
      continue;
    }
    if (x->part == SYNC_PART_DATA) l = sync_host_linear(m, x);
    if (!l || !m->quantized || l->q.fmt != x->fmt || !l->q.data || !l->q.scales || l->q.on_device) {
      sync_view_free(v);
      return rl_errf(e, RL_EXIT_USAGE,
                     "sync: the host view of %s is not quantized as %s (call model_quantize with the rollout policy first)",
                     x->name, qtensor_format_name(x->fmt));
    }
    v->ptr[i] = x->part == SYNC_PART_DATA ? l->q.data : x->part == SYNC_PART_SCALES ? l->q.scales : (void *)&l->q.s_dec;
  }
  return 0;
}

void sync_view_free(sync_view *v) {
  free(v->ptr);
  memset(v, 0, sizeof *v);
}

/* Index of the first entry that ends after stream offset lo. */
static int sync_first_entry(const sync_manifest *mf, uint64_t lo) {
  int a = 0, b = mf->n;
  while (a < b) {
    int mid = a + (b - a) / 2;
    if (mf->v[mid].offset + mf->v[mid].bytes <= lo) a = mid + 1;
    else b = mid;
  }
  return a;
}

void sync_pack_host(const sync_manifest *mf, const sync_view *v, int64_t b, uint8_t *buf) {
  uint64_t lo, hi;
  sync_bucket_range(mf, b, &lo, &hi);
  memset(buf, 0, hi - lo);
  for (int i = sync_first_entry(mf, lo); i < mf->n && mf->v[i].offset < hi; i++) {
    const sync_entry *x = &mf->v[i];
    uint64_t a = x->offset > lo ? x->offset : lo, z = x->offset + x->bytes < hi ? x->offset + x->bytes : hi;
    if (z > a) memcpy(buf + (a - lo), (const uint8_t *)v->ptr[i] + (a - x->offset), z - a);
  }
}

void sync_unpack_host(const sync_manifest *mf, const sync_view *v, int64_t b, const uint8_t *buf) {
  uint64_t lo, hi;
  sync_bucket_range(mf, b, &lo, &hi);
  for (int i = sync_first_entry(mf, lo); i < mf->n && mf->v[i].offset < hi; i++) {
    const sync_entry *x = &mf->v[i];
    uint64_t a = x->offset > lo ? x->offset : lo, z = x->offset + x->bytes < hi ? x->offset + x->bytes : hi;
    if (z > a) memcpy((uint8_t *)v->ptr[i] + (a - x->offset), buf + (a - lo), z - a);
  }
}

/* ---------------------------------------------------------------- host transport */

/* memcpy from the sender's bucket to the receiver's. */
static int sync_host_move(void *ctx, const void *src, void *dst, uint64_t n, rl_err *e) {
  (void)ctx, (void)e;
  memcpy(dst, src, n);
  return 0;
}

sync_link sync_link_host(void) { return (sync_link){"host", sync_host_move, NULL}; }

int sync_transfer_host(const sync_manifest *src_mf, const sync_view *src, const sync_manifest *dst_mf,
                       const sync_view *dst, sync_link *t, sync_stats *st, rl_err *e) {
  if (src_mf->digest != dst_mf->digest || src_mf->bucket != dst_mf->bucket)
    return rl_errf(e, RL_EXIT_USAGE,
                   "sync: the trainer's and the rollout engine's manifests differ (digest %016llx vs %016llx, %d vs %d "
                   "tensors, buckets %llu vs %llu bytes): both sides need the same model config, policy and bucket size",
                   (unsigned long long)src_mf->digest, (unsigned long long)dst_mf->digest, src_mf->n, dst_mf->n,
                   (unsigned long long)src_mf->bucket, (unsigned long long)dst_mf->bucket);
  if (src->on_device || dst->on_device)
    return rl_errf(e, RL_EXIT_USAGE, "sync_transfer_host: takes host views (device views go through sync_nccl_run)");
  double t0 = rl_now();
  uint64_t cap = src_mf->bucket < src_mf->total ? src_mf->bucket : src_mf->total;
  uint8_t *sb = rl_xmalloc(cap + 1), *rb = rl_xmalloc(cap + 1);
  int rc = 0;
  for (int64_t b = 0; b < src_mf->n_buckets && !rc; b++) {
    uint64_t lo, hi;
    sync_bucket_range(src_mf, b, &lo, &hi);
    sync_pack_host(src_mf, src, b, sb);
    if ((rc = t->move(t->ctx, sb, rb, hi - lo, e))) rl_err_prefix(e, "sync (%s transport), bucket %lld: ", t->name, (long long)b);
    else sync_unpack_host(dst_mf, dst, b, rb);
  }
  free(sb), free(rb);
  if (st && !rc) {
    memset(st, 0, sizeof *st);
    st->bytes = src_mf->payload;
    st->transfer_ms = st->ms = (rl_now() - t0) * 1e3;
    st->gbps = st->ms > 0 ? (double)st->bytes / (st->ms * 1e6) : 0;
    st->buckets = src_mf->n_buckets;
  }
  return rc;
}

/* ---------------------------------------------------------------- colocated */

/* Fault injection for the tests: flip one byte of the first quantized entry's
 * data ("sync.corrupt") or scales ("sync.corrupt_scale") in view v. */
int sync_fault_corrupt(const sync_manifest *mf, const sync_view *v, rl_err *e) {
  int which[2] = {fault_hit("sync.corrupt"), fault_hit("sync.corrupt_scale")};
  for (int k = 0; k < 2; k++) {
    if (!which[k]) continue;
    sync_part want = k ? SYNC_PART_SCALES : SYNC_PART_DATA;
    for (int i = 0; i < mf->n; i++) {
      if (mf->v[i].part != want) continue;
      uint8_t *p = (uint8_t *)v->ptr[i] + mf->v[i].bytes / 2, b;
      if (v->on_device) {
        if (sync_dev_fetch(&b, p, 1, e)) return e->code;
        b ^= 0x01;
        if (sync_dev_store(p, &b, 1, e)) return e->code;
      } else {
        *p ^= 0x01;
      }
      break;
    }
  }
  return 0;
}

int sync_colocated(model *m, const quant_policy *p, const sync_opts *o, sync_stats *st, rl_err *e) {
  sync_opts none = {0};
  if (!o) o = &none;
  int dev = m->cu != NULL, rc;
  double t0 = rl_now();
  if (dev) {
    rc = model_cuda_quantize(m, p, e);
    if (!rc) rc = model_cuda_sync(e);
  } else {
    rc = model_quantize(m, p, e);
  }
  double t1 = rl_now();
  if (rc) return rl_err_prefix(e, "sync: ");
  sync_manifest mf;
  if (sync_manifest_build(m, p, dev, o->bucket_bytes, &mf, e)) return e->code;
  sync_stats s;
  memset(&s, 0, sizeof s);
  s.bytes = mf.quantized;
  s.quant_ms = s.ms = (t1 - t0) * 1e3;
  s.gbps = s.ms > 0 ? (double)s.bytes / (s.ms * 1e6) : 0;
  sync_view v = {0};
  rc = dev ? sync_view_device(&mf, m, &v, e) : sync_view_host(&mf, m, &v, e);
  if (!rc) rc = sync_fault_corrupt(&mf, &v, e);
  if (!rc && o->verify) {
    double t2 = rl_now();
    /* the device masters are the truth on the GPU: verify against them */
    if (dev) rc = model_cuda_download(m, e);
    if (!rc) rc = sync_verify(&mf, m, &v, e);
    s.verified = !rc;
    s.verify_ms = (rl_now() - t2) * 1e3;
  }
  sync_view_free(&v);
  sync_manifest_free(&mf);
  if (st) *st = s;
  return rc;
}

/* ---------------------------------------------------------------- metrics, data parallelism */

void sync_stats_metrics(const sync_stats *st, rl_metric_list *ml) {
  rl_metric_set(ml, SYNC_M_BYTES, (double)st->bytes);
  rl_metric_set(ml, SYNC_M_MS, st->ms);
  rl_metric_set(ml, SYNC_M_GBPS, st->gbps);
  rl_metric_set(ml, SYNC_M_BUCKETS, (double)st->buckets);
  if (st->verified) rl_metric_set(ml, SYNC_M_VERIFY_MS, st->verify_ms);
}

void sync_dp_sum_fixed(const float *const *g, int n_ranks, int64_t n, float *out) {
  for (int64_t j = 0; j < n; j++) {
    float acc = g[0][j]; /* one FP32 rounding per add, in rank order */
    for (int r = 1; r < n_ranks; r++) acc = acc + g[r][j];
    out[j] = acc;
  }
}
