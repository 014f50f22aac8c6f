/* sync_verify.c — `sync.verify: true` (sync.h): the rollout side's weights
 * compared byte for byte with an independent CPU re-quantization of the
 * trainer's BF16 master (the kernels/quant.h quantizers called directly). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/sync.h"
#include "stages/sync_int.h"

/* The reference quantization of one tensor: every part, host layouts. */
typedef struct sync_ref {
  int param, lm_head; /* which tensor it holds (param −1: none yet) */
  uint8_t *data, *scales;
  uint64_t data_bytes, scale_bytes;
  float s_dec;
} sync_ref;

/* The other projection (up for gate, gate for up) of an nvfp4 expert, whose
 * amax it shares (FORMATS.md; as model_quantize does), or NULL. */
static const model_param *sync_twin(const model *m, const model_param *p) {
  const char *gp = strstr(p->name, "gate_proj"), *up = strstr(p->name, "up_proj");
  if (!strstr(p->name, ".mlp.experts.") || (!gp && !up)) return NULL;
  char nm[MODEL_NAME_MAX];
  snprintf(nm, sizeof nm, "%.*s%s.weight", (int)((gp ? gp : up) - p->name), p->name, gp ? "up_proj" : "gate_proj");
  for (int i = 0; i < m->n_params; i++)
    if (!strcmp(m->params[i].name, nm)) return &m->params[i];
  return NULL;
}

/* Quantize the tensor of entry x from the master into r (reused buffers). */
static int sync_ref_make(const sync_manifest *mf, const sync_entry *x, const model *master, sync_ref *r, rl_err *e) {
  const model_param *p = &master->params[x->param];
  int64_t N = p->rows, K = p->cols;
  quant_opts qo = {0};
  qo.ue8m0 = mf->policy.ue8m0;
  quant_stats st = {0, -1};
  free(r->data), free(r->scales);
  r->data = r->scales = NULL;
  r->param = x->param, r->lm_head = x->lm_head, r->s_dec = 0;
  int qs = QUANT_OK;
  if (x->fmt == QFMT_FP8_BLOCK) {
    r->data_bytes = (uint64_t)(N * K);
    r->scale_bytes = (uint64_t)(quant_cdiv(N, 128) * quant_cdiv(K, 128)) * 4;
    r->data = rl_xmalloc(r->data_bytes + 1), r->scales = rl_xmalloc(r->scale_bytes + 1);
    qs = quant_fp8_block_weight_cpu(p->w, N, K, r->data, (float *)r->scales, &qo, &st);
  } else if (x->fmt == QFMT_MXFP8) {
    r->data_bytes = (uint64_t)(N * K);
    r->scale_bytes = (uint64_t)(N * quant_cdiv(K, 32));
    r->data = rl_xmalloc(r->data_bytes + 1), r->scales = rl_xmalloc(r->scale_bytes + 1);
    qs = quant_mxfp8_cpu(p->w, N, K, r->data, r->scales, &qo, &st);
  } else if (x->fmt == QFMT_NVFP4) {
    r->data_bytes = (uint64_t)(N * quant_cdiv(K, 2));
    r->scale_bytes = (uint64_t)(N * quant_cdiv(K, 16));
    r->data = rl_xmalloc(r->data_bytes + 1), r->scales = rl_xmalloc(r->scale_bytes + 1);
    const model_param *twin = x->lm_head ? NULL : sync_twin(master, p);
    if (twin) {
      quant_stats s2 = {0, -1};
      float a = quant_amax_bf16_cpu(p->w, N * K, &s2), b = quant_amax_bf16_cpu(twin->w, twin->rows * twin->cols, &s2);
      qs = quant_nvfp4_amax_cpu(p->w, N, K, a > b ? a : b, r->data, r->scales, &r->s_dec, &qo, &st);
    } else {
      qs = quant_nvfp4_cpu(p->w, N, K, r->data, r->scales, &r->s_dec, &qo, &st);
    }
  }
  if (qs != QUANT_OK) {
    r->param = -1;
    int rc = quant_status_err(qs, &st, p->name, K, e);
    return rc ? rc : rl_errf(e, RL_EXIT_FAIL, "sync.verify: quantizing %s: status %d", p->name, qs);
  }
  return 0;
}

/* The reference bytes of entry x (from r, or the master for BF16) and their count. */
static const uint8_t *sync_ref_part(const sync_entry *x, const model *master, const sync_ref *r, uint64_t *n) {
  switch (x->part) {
  case SYNC_PART_BF16: *n = x->bytes; return (const uint8_t *)master->params[x->param].w;
  case SYNC_PART_DATA: *n = r->data_bytes; return r->data;
  case SYNC_PART_SCALES: *n = r->scale_bytes; return r->scales;
  case SYNC_PART_SDEC: *n = 4; return (const uint8_t *)&r->s_dec;
  }
  *n = 0;
  return NULL;
}

/* Fill r for entry i unless it already holds that tensor. */
static int sync_ref_for(const sync_manifest *mf, int i, const model *master, sync_ref *r, rl_err *e) {
  const sync_entry *x = &mf->v[i];
  if (x->part == SYNC_PART_BF16 || (r->param == x->param && r->lm_head == x->lm_head)) return 0;
  return sync_ref_make(mf, x, master, r, e);
}

int64_t sync_reference_entry(const sync_manifest *mf, int i, const model *master, uint8_t *out, rl_err *e) {
  sync_ref r = {-1, 0, NULL, NULL, 0, 0, 0};
  if (i < 0 || i >= mf->n) return rl_errf(e, RL_EXIT_USAGE, "sync_reference_entry: no entry %d", i), -1;
  if (sync_ref_for(mf, i, master, &r, e)) return -1;
  uint64_t n;
  const uint8_t *src = sync_ref_part(&mf->v[i], master, &r, &n);
  memcpy(out, src, n);
  free(r.data), free(r.scales);
  return (int64_t)n;
}

/* The bytes of entry x in view v as host memory in the reference layout
 * (device views fetched into *buf, fp8-block device scales converted). */
static const uint8_t *sync_view_bytes(const sync_entry *x, const sync_view *v, int i, uint8_t **buf, uint64_t *n,
                                      rl_err *e) {
  *n = x->bytes;
  if (!v->on_device) return v->ptr[i];
  free(*buf);
  *buf = rl_xmalloc(2 * x->bytes + 16);
  if (sync_dev_fetch(*buf, v->ptr[i], x->bytes, e)) return NULL;
  if (x->part == SYNC_PART_SCALES && x->fmt == QFMT_FP8_BLOCK) {
    int64_t nb = quant_cdiv(x->rows, 128), kb = quant_cdiv(x->cols, 128);
    float *rm = (float *)(*buf + quant_roundup((int64_t)x->bytes, 16));
    quant_layout_fp8_weight_scales_from_cublaslt((const float *)*buf, nb, kb, rm);
    *n = (uint64_t)(nb * kb) * 4;
    return (const uint8_t *)rm;
  }
  return *buf;
}

/* What an entry is, for messages ("scales of fp8-block tensor X"). */
static const char *sync_part_name(sync_part p) {
  static const char *const names[] = {"bf16 weight", "quantized data", "scales", "nvfp4 S_dec"};
  return (unsigned)p < 4 ? names[p] : "part";
}

int sync_verify(const sync_manifest *mf, const model *master, const sync_view *v, rl_err *e) {
  sync_ref r = {-1, 0, NULL, NULL, 0, 0, 0};
  uint8_t *buf = NULL;
  int rc = 0;
  for (int i = 0; i < mf->n && !rc; i++) {
    const sync_entry *x = &mf->v[i];
    if ((rc = sync_ref_for(mf, i, master, &r, e))) break;
    uint64_t nr, nv;
    const uint8_t *ref = sync_ref_part(x, master, &r, &nr);
    const uint8_t *got = sync_view_bytes(x, v, i, &buf, &nv, e);
    if (!got) {
      rc = rl_err_prefix(e, "sync.verify: reading %s of the rollout engine: ", x->name);
      break;
    }
    if (nr != nv || memcmp(ref, got, nr)) {
      uint64_t j = 0;
      while (j < nr && j < nv && ref[j] == got[j]) j++;
      rc = rl_errf(e, RL_EXIT_FAIL,
                   "sync.verify: tensor %s (%s, %s) of the rollout engine differs from the re-quantized trainer "
                   "master at byte %llu of %llu (rollout 0x%02x, master 0x%02x): the rollout weights are not the "
                   "trainer's; the run stopped before the next rollout and resumes from its last checkpoint",
                   x->name, sync_part_name(x->part), qtensor_format_name(x->fmt), (unsigned long long)j,
                   (unsigned long long)nr, j < nv ? got[j] : 0, j < nr ? ref[j] : 0);
    }
  }
  free(r.data), free(r.scales), free(buf);
  return rc;
}
