/* kvcache.c — the rollout KV cache and its CPU decode attention (see kvcache.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/formats.h"
#include "model/kvcache.h"

/* Bytes of one element of the cache. */
static size_t kv_elem(const kvcache *c) { return c->dtype == KVCACHE_F32 ? sizeof(float) : sizeof(uint16_t); }

/* Element offset of (layer, slot, pos) — the start of its [nkv][hd] row. */
static size_t kv_off(const kvcache *c, int l, int slot, int64_t pos) {
  return (((size_t)l * c->slots + slot) * (size_t)c->max_len + (size_t)pos) * (size_t)c->nkv * c->hd;
}

int kvcache_init(kvcache *c, int L, int slots, int64_t max_len, int nkv, int hd, kvcache_dtype dt,
                 kv_kmode km, rl_err *e) {
  memset(c, 0, sizeof *c);
  if (L < 1 || slots < 1 || max_len < 1 || nkv < 1 || hd < 1)
    return rl_errf(e, RL_EXIT_USAGE,
                   "kvcache: bad sizes (layers %d, slots %d, max_len %lld, kv heads %d, head_dim %d)",
                   L, slots, (long long)max_len, nkv, hd);
  c->L = L, c->slots = slots, c->max_len = max_len, c->nkv = nkv, c->hd = hd, c->dtype = dt;
  c->kmode = km;
  size_t n = (size_t)L * slots * (size_t)max_len * (size_t)nkv * hd;
  c->k = calloc(n, kv_elem(c));
  c->v = calloc(n, kv_elem(c));
  if (dt == KVCACHE_BF16) {
    c->kf = calloc(n, sizeof(float));
    c->kf_valid = calloc((size_t)L * slots, sizeof(int64_t));
  }
  if (!c->k || !c->v || (dt == KVCACHE_BF16 && (!c->kf || !c->kf_valid))) {
    kvcache_free(c);
    return rl_errf(e, RL_EXIT_FAIL,
                   "kvcache: cannot allocate 2 × %zu bytes (+ %zu for the FP32 keys; %d slots × %lld "
                   "positions); lower rollout max_slots or the sequence length",
                   n * (dt == KVCACHE_F32 ? 4 : 2), dt == KVCACHE_F32 ? (size_t)0 : n * 4, slots,
                   (long long)max_len);
  }
  return 0;
}

void kvcache_free(kvcache *c) {
  if (!c) return;
  free(c->k), free(c->v), free(c->kf), free(c->kf_valid);
  c->k = c->v = NULL, c->kf = NULL, c->kf_valid = NULL;
}

int64_t kvcache_bytes(const kvcache *c) {
  return 2 * (int64_t)c->L * c->slots * c->max_len * c->nkv * c->hd * (int64_t)kv_elem(c);
}

void kvcache_write(kvcache *c, int l, int slot, int64_t pos, const float *k_row, const float *v_row) {
  size_t o = kv_off(c, l, slot, pos), n = (size_t)c->nkv * c->hd;
  if (c->dtype == KVCACHE_F32) {
    memcpy((float *)c->k + o, k_row, n * sizeof(float));
    memcpy((float *)c->v + o, v_row, n * sizeof(float));
    return;
  }
  uint16_t *k = (uint16_t *)c->k + o, *v = (uint16_t *)c->v + o;
  for (size_t i = 0; i < n; i++) k[i] = fmt_bf16_from_f32(k_row[i]), v[i] = fmt_bf16_from_f32(v_row[i]);
  int64_t *kv = &c->kf_valid[(size_t)l * c->slots + slot];
  if (*kv > pos) *kv = pos;
}

void kvcache_read_k(const kvcache *c, int l, int slot, int64_t from, int64_t n, float *out) {
  size_t o = kv_off(c, l, slot, from), cnt = (size_t)(n - from) * c->nkv * c->hd;
  if (n <= from) return;
  if (c->dtype == KVCACHE_F32) {
    memcpy(out, (const float *)c->k + o, cnt * sizeof(float));
    return;
  }
  const uint16_t *k = (const uint16_t *)c->k + o;
  for (size_t i = 0; i < cnt; i++) out[i] = fmt_bf16_to_f32(k[i]);
}

const float *kvcache_keys(kvcache *c, int l, int slot, int64_t n,
                          void (*make)(float *k, int64_t from, int64_t cnt, void *ctx), void *ctx) {
  size_t o = kv_off(c, l, slot, 0);
  if (c->dtype == KVCACHE_F32) return (const float *)c->k + o;
  int64_t *valid = &c->kf_valid[(size_t)l * c->slots + slot];
  if (*valid < n) {
    float *dst = c->kf + o + (size_t)*valid * c->nkv * c->hd;
    kvcache_read_k(c, l, slot, *valid, n, dst);
    if (make) make(dst, *valid, n - *valid, ctx);
    *valid = n;
  }
  return c->kf + o;
}

void kvcache_copy_prefix(kvcache *c, int dst, int src, int64_t n) {
  if (n <= 0 || dst == src) return;
  size_t bytes = (size_t)n * c->nkv * c->hd * kv_elem(c);
  for (int l = 0; l < c->L; l++) {
    size_t od = kv_off(c, l, dst, 0) * kv_elem(c), os = kv_off(c, l, src, 0) * kv_elem(c);
    memcpy((char *)c->k + od, (char *)c->k + os, bytes);
    memcpy((char *)c->v + od, (char *)c->v + os, bytes);
    if (c->kf_valid) c->kf_valid[(size_t)l * c->slots + dst] = 0;
  }
}

int64_t kvcache_scratch_len(const kvcache *c) { return c->max_len + (int64_t)c->hd; }

/* q·k in FP64 over hd elements (the order of ops_cpu.c's dot_d). */
static double kv_dot(const float *q, const float *k, int hd) {
  double s = 0;
  for (int i = 0; i < hd; i++) s += (double)q[i] * k[i];
  return s;
}

void kvcache_attend(const kvcache *c, int l, int slot, int64_t n, const float *keys, const float *q,
                    int nq, float *out, uint16_t *out_bf16, double *scratch) {
  int D = c->hd, rep = nq / c->nkv;
  double scale = 1.0 / sqrt((double)D), *sc = scratch, *acc = scratch + c->max_len;
  size_t base = kv_off(c, l, slot, 0), stride = (size_t)c->nkv * D;
  for (int h = 0; h < nq; h++) {
    int g = h / rep;
    const float *qi = q + (size_t)h * D;
    double m = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n; j++) {
      sc[j] = kv_dot(qi, keys + j * stride + (size_t)g * D, D) * scale;
      m = sc[j] > m ? sc[j] : m;
    }
    for (int d = 0; d < D; d++) acc[d] = 0;
    for (int64_t j = 0; j < n; j++) {
      double p = exp(sc[j] - m);
      size_t o = base + j * stride + (size_t)g * D;
      sum += p;
      if (c->dtype == KVCACHE_F32) {
        const float *vj = (const float *)c->v + o;
        for (int d = 0; d < D; d++) acc[d] += p * vj[d];
      } else {
        const uint16_t *vj = (const uint16_t *)c->v + o;
        for (int d = 0; d < D; d++) acc[d] += p * fmt_bf16_to_f32(vj[d]);
      }
    }
    for (int d = 0; d < D; d++) {
      float x = (float)(acc[d] / sum);
      if (out) out[(size_t)h * D + d] = x;
      if (out_bf16) out_bf16[(size_t)h * D + d] = fmt_bf16_from_f32(x);
    }
  }
}
