/* drift.c — sampled sequence sets and the rollout/train mismatch of a
 * (rollout, train) policy pair (contract in drift.h). */
#include "stages/drift.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/model_cuda.h"
#include "stages/rollout.h"
#include "stages/rollout_cuda.h"
#include "stages/sampler.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#include "model/model_cuda_int.h"
#endif

#define DRIFT_MAGIC "RLDRIFT1"
#define DRIFT_VERSION 1u

/* splitmix64: the counter-based hash behind the prompt tokens. */
static uint64_t drift_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Prompt token j of sequence i: uniform in [0, V), a function of (seed, i, j). */
static int32_t drift_prompt_token(uint64_t seed, int i, int j, int64_t V) {
  uint64_t h = drift_mix(drift_mix(seed ^ 0x64726966747070ull) ^ ((uint64_t)i << 32 | (uint32_t)j));
  return (int32_t)(h % (uint64_t)V);
}

/* Check the sampling options against the model (sizes, positions). */
static int drift_check_opts(const model *m, const drift_sample_opts *o, rl_err *e) {
  if (o->n_seq < 1 || o->n_prompt < 1 || o->n_gen < 1)
    return rl_errf(e, RL_EXIT_USAGE, "drift: n_seq (%d), n_prompt (%d) and n_gen (%d) must be >= 1",
                   o->n_seq, o->n_prompt, o->n_gen);
  int64_t len = (int64_t)o->n_prompt + o->n_gen;
  if (len > m->cfg.max_position_embeddings)
    return rl_errf(e, RL_EXIT_USAGE,
                   "drift: sequences of %lld tokens exceed the model's max_position_embeddings %lld; "
                   "use fewer prompt or generated tokens",
                   (long long)len, (long long)m->cfg.max_position_embeddings);
  if ((int64_t)o->n_seq * len > INT32_MAX / 2)
    return rl_errf(e, RL_EXIT_USAGE, "drift: %d sequences of %lld tokens are too many for one batch",
                   o->n_seq, (long long)len);
  return 0;
}

/* Allocate an empty set with the prompts filled in. */
static void drift_seqs_alloc(const model *m, const drift_sample_opts *o, drift_seqs *s) {
  memset(s, 0, sizeof *s);
  s->n_seq = o->n_seq, s->n_prompt = o->n_prompt, s->n_gen = o->n_gen;
  int len = o->n_prompt + o->n_gen;
  s->tokens = rl_xcalloc((size_t)o->n_seq * (size_t)len, sizeof(int32_t));
  for (int i = 0; i < o->n_seq; i++)
    for (int j = 0; j < o->n_prompt; j++) s->tokens[(size_t)i * len + j] = drift_prompt_token(o->seed, i, j, m->V);
}

void drift_seqs_free(drift_seqs *s) {
  free(s->tokens);
  free(s->logp_engine);
  memset(s, 0, sizeof *s);
}

int drift_sample_cpu(model *m, const quant_policy *policy, const drift_sample_opts *o, drift_seqs *out,
                     rl_err *e) {
  memset(out, 0, sizeof *out);
  int rc = drift_check_opts(m, o, e);
  if (rc) return rc;
  double t0 = rl_now();
  drift_seqs s;
  drift_seqs_alloc(m, o, &s);
  int len = o->n_prompt + o->n_gen;
  const int32_t **ids = rl_xmalloc((size_t)o->n_seq * sizeof *ids);
  int64_t *n_ids = rl_xmalloc((size_t)o->n_seq * sizeof *n_ids);
  for (int i = 0; i < o->n_seq; i++) ids[i] = s.tokens + (size_t)i * len, n_ids[i] = o->n_prompt;
  rollout_engine *eng = NULL;
  rollout_batch b;
  memset(&b, 0, sizeof b);
  rollout_opts ro;
  rollout_opts_default(&ro);
  ro.seed = o->seed, ro.temperature = 1.0, ro.max_new_tokens = o->n_gen;
  ro.ignore_eos = 1, ro.eos_id = -1, ro.add_bos = 0;
  rc = rollout_engine_new(m, policy, NULL, NULL, &eng, e);
  if (!rc) rc = rollout_generate_ids(eng, (const int32_t *const *)ids, n_ids, o->n_seq, 1, 0, &ro, &b, e);
  if (!rc) {
    s.logp_engine = rl_xmalloc((size_t)o->n_seq * (size_t)o->n_gen * sizeof(float));
    for (int i = 0; i < o->n_seq && !rc; i++) {
      const rollout_sample *x = &b.s[i];
      if (x->n_completion != o->n_gen || x->n_prompt != o->n_prompt) {
        rc = rl_errf(e, RL_EXIT_FAIL, "drift: sequence %d came back with %lld + %lld tokens, not %d + %d", i,
                     (long long)x->n_prompt, (long long)x->n_completion, o->n_prompt, o->n_gen);
        break;
      }
      memcpy(s.tokens + (size_t)i * len + o->n_prompt, x->completion_ids, (size_t)o->n_gen * 4);
      memcpy(s.logp_engine + (size_t)i * o->n_gen, x->logp_rollout, (size_t)o->n_gen * 4);
    }
  }
  rollout_batch_free(&b);
  rollout_engine_free(eng);
  free(ids);
  free(n_ids);
  if (rc) {
    drift_seqs_free(&s);
    return rl_err_prefix(e, "drift: sampling %d sequences on the CPU: ", o->n_seq);
  }
  s.wall_s = rl_now() - t0;
  *out = s;
  return 0;
}

#if RLRUN_CUDA
/* Check a CUDA runtime status. */
static int drift_cuda_ok(cudaError_t st, const char *what, rl_err *e) {
  if (st == cudaSuccess) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "drift: %s failed: %s", what, cudaGetErrorString(st));
}

int drift_sample_cuda(model *m, const quant_policy *policy, const drift_sample_opts *o, drift_seqs *out,
                      rl_err *e) {
  memset(out, 0, sizeof *out);
  int rc = drift_check_opts(m, o, e);
  if (rc) return rc;
  if (!m->cu && (rc = model_cuda_init(m, e))) return rc;
  if ((rc = model_cuda_quantize(m, policy, e))) return rc;
  double t0 = rl_now();
  drift_seqs s;
  drift_seqs_alloc(m, o, &s);
  int n = o->n_seq, len = o->n_prompt + o->n_gen;
  int32_t *tok = rl_xmalloc((size_t)n * len * 4), *off = rl_xmalloc((size_t)(n + 1) * 4);
  sampler_key *keys = rl_xmalloc((size_t)n * sizeof *keys);
  sampler_out *res = rl_xmalloc((size_t)n * sizeof *res);
  sampler_key *d_keys = NULL;
  sampler_out *d_out = NULL;
  model_cuda_acts *a = model_cuda_acts_new();
  a->fp32_flow = 1; /* FP32 logits: the sampler reads every L-th row of them in place */
  sampler_params sp = sampler_default_params();
  rc = drift_cuda_ok(cudaMalloc((void **)&d_keys, (size_t)n * sizeof *d_keys), "cudaMalloc (sampler keys)", e);
  if (!rc) rc = drift_cuda_ok(cudaMalloc((void **)&d_out, (size_t)n * sizeof *d_out), "cudaMalloc (sampler out)", e);
  for (int j = 0; j < o->n_gen && !rc; j++) {
    int L = o->n_prompt + j; /* current length of every sequence */
    for (int i = 0; i < n; i++) memcpy(tok + (size_t)i * L, s.tokens + (size_t)i * len, (size_t)L * 4);
    for (int i = 0; i <= n; i++) off[i] = i * L;
    model_batch mb = {n * L, tok, {n, off}};
    if ((rc = model_cuda_forward(m, &mb, NULL, a, e))) break;
    for (int i = 0; i < n; i++) keys[i] = (sampler_key){o->seed, 0, (uint32_t)i, 0, (uint32_t)j};
    if ((rc = drift_cuda_ok(cudaMemcpy(d_keys, keys, (size_t)n * sizeof *keys, cudaMemcpyHostToDevice),
                            "cudaMemcpy (sampler keys)", e)))
      break;
    /* the last row of sequence i is row i·L + L − 1 */
    const float *last = model_cuda_logits(a) + (size_t)(L - 1) * (size_t)m->V;
    if ((rc = sampler_sample_cuda(&sp, last, n, m->V, (int64_t)L * m->V, d_keys, d_out, NULL, e))) break;
    if ((rc = drift_cuda_ok(cudaMemcpy(res, d_out, (size_t)n * sizeof *res, cudaMemcpyDeviceToHost),
                            "cudaMemcpy (sampled tokens)", e)))
      break;
    for (int i = 0; i < n && !rc; i++) {
      if (res[i].status != SAMPLER_OK)
        rc = rl_errf(e, RL_EXIT_FAIL, "drift: sampling sequence %d position %d: %s logits", i, j,
                     res[i].status == SAMPLER_NONFINITE ? "non-finite" : "all -inf");
      s.tokens[(size_t)i * len + L] = res[i].token;
    }
    if (o->progress && (j % 32 == 31 || j == o->n_gen - 1))
      fprintf(stderr, "drift: sampled %d of %d positions of %d sequences in %.1f s\n", j + 1, o->n_gen, n,
              rl_now() - t0);
  }
  model_cuda_acts_free(a);
  if (d_keys) cudaFree(d_keys);
  if (d_out) cudaFree(d_out);
  free(tok), free(off), free(keys), free(res);
  if (rc) {
    drift_seqs_free(&s);
    return rl_err_prefix(e, "drift: sampling %d sequences on the GPU: ", n);
  }
  s.wall_s = rl_now() - t0;
  *out = s;
  return 0;
}
#else
int drift_sample_cuda(model *m, const quant_policy *policy, const drift_sample_opts *o, drift_seqs *out,
                      rl_err *e) {
  (void)m, (void)policy, (void)o;
  memset(out, 0, sizeof *out);
  return rl_errf(e, RL_EXIT_HARDWARE, "drift: this rlrun was built without CUDA; sample on the CPU");
}
#endif

/* ---------------------------------------------------------------- token files */

/* Little-endian u32 at p. */
static uint32_t drift_get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void drift_put_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8), p[2] = (unsigned char)(v >> 16),
  p[3] = (unsigned char)(v >> 24);
}

int drift_seqs_save(const drift_seqs *s, const char *path, rl_err *e) {
  size_t nt = (size_t)s->n_seq * (size_t)(s->n_prompt + s->n_gen);
  size_t sz = 8 + 16 + 4 * nt;
  unsigned char *buf = rl_xmalloc(sz);
  memcpy(buf, DRIFT_MAGIC, 8);
  drift_put_u32(buf + 8, DRIFT_VERSION);
  drift_put_u32(buf + 12, (uint32_t)s->n_seq);
  drift_put_u32(buf + 16, (uint32_t)s->n_prompt);
  drift_put_u32(buf + 20, (uint32_t)s->n_gen);
  for (size_t i = 0; i < nt; i++) drift_put_u32(buf + 24 + 4 * i, (uint32_t)s->tokens[i]);
  FILE *f = fopen(path, "wb");
  int ok = f && fwrite(buf, 1, sz, f) == sz;
  if (f && fclose(f) != 0) ok = 0;
  free(buf);
  if (!ok) return rl_errf(e, RL_EXIT_FAIL, "drift: cannot write token file %s; check the directory", path);
  return 0;
}

int drift_seqs_load(const char *path, int64_t vocab, drift_seqs *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  char *buf = NULL;
  size_t len = 0;
  int rc = rl_read_file_max(path, (size_t)4 << 30, &buf, &len, e); /* binary: 4 GiB, not the text limit */
  if (rc) return rc;
  const unsigned char *p = (const unsigned char *)buf;
  if (len < 24 || memcmp(p, DRIFT_MAGIC, 8) != 0) {
    free(buf);
    return rl_errf(e, RL_EXIT_USAGE, "%s: not a drift token file (magic %s expected)", path, DRIFT_MAGIC);
  }
  uint32_t ver = drift_get_u32(p + 8), n = drift_get_u32(p + 12), np = drift_get_u32(p + 16),
           ng = drift_get_u32(p + 20);
  uint64_t nt = (uint64_t)n * ((uint64_t)np + ng);
  if (ver != DRIFT_VERSION || n < 1 || np < 1 || ng < 1 || n > (1u << 20) || np + (uint64_t)ng > (1u << 20) ||
      len != 24 + 4 * nt) {
    free(buf);
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: version %u, %u sequences of %u + %u tokens in %zu bytes: not a valid version-%u "
                   "drift token file",
                   path, ver, n, np, ng, len, DRIFT_VERSION);
  }
  drift_seqs s = {.n_seq = (int)n, .n_prompt = (int)np, .n_gen = (int)ng};
  s.tokens = rl_xmalloc(nt * 4);
  for (uint64_t i = 0; i < nt; i++) {
    s.tokens[i] = (int32_t)drift_get_u32(p + 24 + 4 * i);
    if (s.tokens[i] < 0 || (vocab > 0 && s.tokens[i] >= vocab)) {
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: token %llu of sequence %llu is %d, outside the vocabulary [0, %lld)",
                   path, (unsigned long long)(i % (np + ng)), (unsigned long long)(i / (np + ng)), s.tokens[i],
                   (long long)vocab);
      break;
    }
  }
  free(buf);
  if (rc) {
    drift_seqs_free(&s);
    return rc;
  }
  *out = s;
  return 0;
}

/* ---------------------------------------------------------------- measuring */

/* What one forward side needs: the packed batch and its targets. */
typedef struct drift_pack {
  int T;
  int32_t *off, *targets;
  model_batch mb;
  model_acts *ca;       /* CPU activations */
  model_cuda_acts *ga;  /* GPU activations */
} drift_pack;

/* Router hits of layer l's ids in its own top-k over rows [r0, r0 + n) of the
 * last forward, added to *match / *total (slots). */
static int drift_overlap_rows(model *m, drift_pack *k, drift_device dev, int l, int r0, int n, int64_t *match,
                              int64_t *total, rl_err *e) {
  double ov = 0;
  if (n <= 0) return 0;
  if (dev == DRIFT_CPU) {
    ov = ops_router_overlap_cpu(k->ca->la[l].probs + (size_t)r0 * m->E, k->ca->la[l].ids + (size_t)r0 * m->topk, n,
                                m->E, m->topk);
  } else {
#if RLRUN_CUDA
    /* The router's probabilities live in the CUDA model's activations (model_cuda_int.h). */
    int rc = ops_router_overlap_cuda(&ov, k->ga->la[l].probs + (size_t)r0 * m->E,
                                     k->ga->la[l].ids + (size_t)r0 * m->topk, n, m->E, m->topk, NULL, e);
    if (rc) return rc;
#else
    (void)e;
#endif
  }
  *match += llround(ov * (double)n * m->topk);
  *total += (int64_t)n * m->topk;
  return 0;
}

/* One forward of the whole set under policy p: logp and entropy [T] (entropy
 * may be NULL); routed (non-NULL) receives a copy of each MoE layer's ids
 * [T, k] (NULL entries for dense layers); replay (non-NULL) replays ids;
 * *overlap (non-NULL) gets the r3/overlap of this forward, over the rows
 * with fed[l][t] != 0 (fed NULL: every row). */
static int drift_forward(model *m, drift_pack *k, const quant_policy *p, drift_device dev,
                         const int32_t *const *replay, float *logp, float *ent, int32_t **routed,
                         double *overlap, const uint8_t *const *fed, rl_err *e) {
  model_fwd_opts fo = {.replay_ids = replay};
  int rc, T = k->T;
  if (dev == DRIFT_CPU) {
    if ((rc = model_quantize(m, p, e)) || (rc = model_forward(m, &k->mb, &fo, k->ca, e)) ||
        (rc = model_logprob_forward(k->ca, k->targets, 1.0f, logp, ent, e)))
      return rc;
  } else {
    if ((rc = model_cuda_quantize(m, p, e)) || (rc = model_cuda_forward(m, &k->mb, &fo, k->ga, e)) ||
        (rc = model_cuda_logprob_forward(m, k->ga, k->targets, 1.0f, logp, ent, e)))
      return rc;
  }
  int64_t match = 0, total = 0;
  for (int l = 0; l < m->L; l++) {
    if (!m->layers[l].moe) continue;
    const int32_t *ids = dev == DRIFT_CPU ? model_routed_ids(k->ca, l) : model_cuda_routed_ids(k->ga, l);
    if (!ids) return rl_errf(e, RL_EXIT_FAIL, "drift: no routed ids for MoE layer %d after the forward", l);
    if (routed) {
      routed[l] = rl_xmalloc((size_t)T * m->topk * 4);
      memcpy(routed[l], ids, (size_t)T * m->topk * 4);
    }
    if (!overlap) continue;
    if (!fed) {
      if ((rc = drift_overlap_rows(m, k, dev, l, 0, T, &match, &total, e))) return rc;
      continue;
    }
    for (int t = 0; t < T;) { /* each run of fed rows */
      int t1 = t;
      while (t1 < T && fed[l][t1]) t1++;
      if ((rc = drift_overlap_rows(m, k, dev, l, t, t1 - t, &match, &total, e))) return rc;
      t = t1 + 1;
    }
  }
  if (overlap) *overlap = total ? (double)match / (double)total : NAN;
  return 0;
}

/* The mismatch of the measured tokens (the n_gen sampled ones of each sequence). */
static void drift_mismatch(const drift_seqs *s, const float *logp_train, const float *logp_roll, rl_mismatch *out) {
  int len = s->n_prompt + s->n_gen;
  rl_mismatch_acc acc;
  rl_mismatch_init(&acc);
  for (int i = 0; i < s->n_seq; i++) {
    size_t t0 = (size_t)i * len + s->n_prompt - 1; /* logp[t] scores token t + 1 */
    rl_mismatch_add(&acc, NULL, logp_train + t0, logp_roll + t0, NULL, s->n_gen);
  }
  rl_mismatch_finish(&acc, out);
}

/* The R3 table of batch b for MoE layer l, packed [T, k] (sequence i at row
 * i·len): the engine's ids, or for the rows it never fed (−1: the CUDA
 * engine's last generated token) the trainer's own choice `own`; fed[t]
 * records which, for r3/overlap. */
static void drift_engine_replay(const model *m, const rollout_batch *b, int len, int l, const int32_t *own,
                                int32_t *dst, uint8_t *fed) {
  int k = m->topk, L = b->route_layers;
  for (int64_t i = 0; i < b->n; i++)
    for (int r = 0; r < len; r++) {
      size_t t = (size_t)i * len + r;
      const int32_t *src = b->s[i].routed + ((size_t)r * L + l) * k;
      int ok = 1;
      for (int j = 0; j < k; j++) ok &= src[j] >= 0;
      fed[t] = (uint8_t)ok;
      memcpy(dst + t * k, ok ? src : own + t * k, (size_t)k * sizeof(int32_t));
    }
}

/* Both modes. b NULL: the rollout side is the full forward in `rollout` (its
 * log-probs and routing). b non-NULL (s made from it): the rollout side is
 * the engine's log-probs and routing; the rollout-policy forward gives the
 * entropy and the engine check only. */
static int drift_measure_core(model *m, const drift_seqs *s, const quant_policy *rollout, const quant_policy *train,
                              drift_device dev, const rollout_batch *b, drift_result *out, rl_err *e) {
  int rc = 0;
  double t0 = rl_now();
  int len = s->n_prompt + s->n_gen, moe = m->E > 0 && m->topk > 0;
  drift_pack k = {.T = s->n_seq * len};
  k.off = rl_xmalloc((size_t)(s->n_seq + 1) * 4);
  k.targets = rl_xmalloc((size_t)k.T * 4);
  for (int i = 0; i <= s->n_seq; i++) k.off[i] = i * len;
  k.mb = (model_batch){k.T, s->tokens, {s->n_seq, k.off}};
  model_targets_next(s->tokens, &k.mb.seqs, k.T, k.targets);
  if (dev == DRIFT_CPU) k.ca = model_acts_new();
  else k.ga = model_cuda_acts_new();
  float *lr = rl_xmalloc((size_t)k.T * 4), *lt = rl_xmalloc((size_t)k.T * 4), *ent = rl_xmalloc((size_t)k.T * 4);
  float *le = NULL; /* engine mode: the engine's log-probs at their packed positions */
  if (b) {
    le = rl_xcalloc((size_t)k.T, 4);
    for (int i = 0; i < s->n_seq; i++)
      memcpy(le + (size_t)i * len + s->n_prompt - 1, s->logp_engine + (size_t)i * s->n_gen, (size_t)s->n_gen * 4);
  }
  const float *lroll = b ? le : lr; /* the rollout log-probs every δ is taken against */
  /* routing: the rollout forward's (full-forward mode) or the trainer's own (engine mode, fills unfed rows) */
  int32_t **routed = rl_xcalloc((size_t)m->L, sizeof *routed), **replay = NULL;
  uint8_t **fed = NULL;
  rc = drift_forward(m, &k, rollout, dev, NULL, lr, ent, moe && !b ? routed : NULL, NULL, NULL, e);
  if (rc) rl_err_prefix(e, "drift: rollout-side forward (%s experts %s): ", qtensor_format_name(rollout->fmt[LINEAR_ATTN]),
                        qtensor_format_name(rollout->fmt[LINEAR_EXPERT]));
  if (!rc) {
    double se = 0;
    for (int i = 0; i < s->n_seq; i++)
      for (int j = 0; j < s->n_gen; j++) se += ent[(size_t)i * len + s->n_prompt - 1 + j];
    out->entropy = se / ((double)s->n_seq * s->n_gen);
    if (s->logp_engine) {
      rl_mismatch_acc acc;
      rl_mismatch_init(&acc);
      for (int i = 0; i < s->n_seq; i++)
        rl_mismatch_add(&acc, NULL, lr + (size_t)i * len + s->n_prompt - 1, s->logp_engine + (size_t)i * s->n_gen,
                        NULL, s->n_gen);
      rl_mismatch_finish(&acc, &out->engine);
      out->has_engine = 1;
    }
    rc = drift_forward(m, &k, train, dev, NULL, lt, NULL, moe && b ? routed : NULL, NULL, NULL, e);
    if (rc) rl_err_prefix(e, "drift: train-side forward: ");
  }
  if (!rc) drift_mismatch(s, lt, lroll, &out->plain);
  out->r3 = out->plain;
  if (!rc && moe) {
    out->moe = 1;
    if (b) {
      replay = rl_xcalloc((size_t)m->L, sizeof *replay);
      fed = rl_xcalloc((size_t)m->L, sizeof *fed);
      for (int l = 0; l < m->L; l++) {
        if (!m->layers[l].moe) continue;
        replay[l] = rl_xmalloc((size_t)k.T * m->topk * 4);
        fed[l] = rl_xmalloc((size_t)k.T);
        drift_engine_replay(m, b, len, l, routed[l], replay[l], fed[l]);
      }
    }
    rc = drift_forward(m, &k, train, dev, (const int32_t *const *)(b ? replay : routed), lt, NULL, NULL,
                       &out->r3_overlap, (const uint8_t *const *)fed, e);
    if (rc) rl_err_prefix(e, "drift: train-side forward with R3%s: ", b ? " (the engine's routing)" : "");
    else drift_mismatch(s, lt, lroll, &out->r3);
  }
  for (int l = 0; l < m->L; l++) {
    free(routed[l]);
    if (replay) free(replay[l]);
    if (fed) free(fed[l]);
  }
  free(routed), free(replay), free(fed), free(lr), free(lt), free(le), free(ent), free(k.off), free(k.targets);
  if (k.ca) model_acts_free(k.ca);
  if (k.ga) model_cuda_acts_free(k.ga);
  out->wall_s = rl_now() - t0;
  return rc;
}

/* Start a measurement: clear *out, check the device, initialise m->cu. */
static int drift_begin(model *m, drift_device dev, drift_result *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  out->r3_overlap = NAN;
  if (dev != DRIFT_CUDA) return 0;
#if !RLRUN_CUDA
  (void)m;
  return rl_errf(e, RL_EXIT_HARDWARE, "drift: this rlrun was built without CUDA; measure on the CPU");
#else
  return !m->cu ? model_cuda_init(m, e) : 0;
#endif
}

int drift_measure(model *m, const drift_seqs *s, const quant_policy *rollout, const quant_policy *train,
                  drift_device dev, drift_result *out, rl_err *e) {
  int rc = drift_begin(m, dev, out, e);
  return rc ? rc : drift_measure_core(m, s, rollout, train, dev, NULL, out, e);
}

/* ---------------------------------------------------------------- engine mode */

/* The set of batch b: tokens and the engine's log-probs; every sample the
 * same lengths, MoE routing present. */
static int drift_seqs_from_batch(const model *m, const rollout_batch *b, drift_seqs *s, rl_err *e) {
  memset(s, 0, sizeof *s);
  int moe = m->E > 0 && m->topk > 0;
  if (b->n < 1 || !b->s) return rl_errf(e, RL_EXIT_USAGE, "drift: the rollout batch is empty; generate first");
  int64_t np = b->s[0].n_prompt, ng = b->s[0].n_completion;
  if (np < 1 || ng < 1 || b->n > INT32_MAX / 2 || (np + ng) * b->n > INT32_MAX / 2)
    return rl_errf(e, RL_EXIT_USAGE, "drift: %lld samples of %lld + %lld tokens cannot be measured as one batch",
                   (long long)b->n, (long long)np, (long long)ng);
  if (moe && (b->route_layers != m->L || b->route_topk != m->topk))
    return rl_errf(e, RL_EXIT_USAGE,
                   "drift: the rollout batch has routing for %d layers top-%d, the model has %d layers top-%d; "
                   "R3 needs the engine's routing of every layer",
                   b->route_layers, b->route_topk, m->L, m->topk);
  for (int64_t i = 0; i < b->n; i++) {
    const rollout_sample *x = &b->s[i];
    if (x->n_prompt != np || x->n_completion != ng || !x->logp_rollout || (moe && !x->routed))
      return rl_errf(e, RL_EXIT_USAGE,
                     "drift: sample %lld has %lld + %lld tokens%s%s (sample 0: %lld + %lld); every sample needs the "
                     "same lengths (generate with ignore_eos), its log-probs and on a MoE model its routing",
                     (long long)i, (long long)x->n_prompt, (long long)x->n_completion,
                     x->logp_rollout ? "" : ", no log-probs", moe && !x->routed ? ", no routing" : "", (long long)np,
                     (long long)ng);
  }
  s->n_seq = (int)b->n, s->n_prompt = (int)np, s->n_gen = (int)ng;
  size_t len = (size_t)(np + ng);
  s->tokens = rl_xmalloc((size_t)b->n * len * 4);
  s->logp_engine = rl_xmalloc((size_t)b->n * (size_t)ng * 4);
  for (int64_t i = 0; i < b->n; i++) {
    const rollout_sample *x = &b->s[i];
    memcpy(s->tokens + (size_t)i * len, x->prompt_ids, (size_t)np * 4);
    memcpy(s->tokens + (size_t)i * len + np, x->completion_ids, (size_t)ng * 4);
    memcpy(s->logp_engine + (size_t)i * ng, x->logp_rollout, (size_t)ng * 4);
  }
  s->wall_s = b->wall_s;
  return 0;
}

int drift_measure_batch(model *m, const rollout_batch *b, const quant_policy *rollout, const quant_policy *train,
                        drift_device dev, drift_result *out, drift_seqs *set, rl_err *e) {
  if (set) memset(set, 0, sizeof *set);
  int rc = drift_begin(m, dev, out, e);
  if (rc) return rc;
  drift_seqs s;
  if ((rc = drift_seqs_from_batch(m, b, &s, e))) return rc;
  rc = drift_measure_core(m, &s, rollout, train, dev, b, out, e);
  if (!rc && set) *set = s;
  else drift_seqs_free(&s);
  return rc;
}

#if RLRUN_CUDA
int drift_measure_engine_cuda(model *m, const drift_sample_opts *o, const quant_policy *rollout,
                              const quant_policy *train, drift_result *out, drift_seqs *set, rl_err *e) {
  if (set) memset(set, 0, sizeof *set);
  memset(out, 0, sizeof *out);
  out->r3_overlap = NAN;
  int rc = drift_check_opts(m, o, e);
  if (rc) return rc;
  if (!m->cu && (rc = model_cuda_init(m, e))) return rc;
  double t0 = rl_now();
  drift_seqs p; /* the fixed set's prompts (completions unused) */
  drift_seqs_alloc(m, o, &p);
  int len = o->n_prompt + o->n_gen;
  const int32_t **ids = rl_xmalloc((size_t)o->n_seq * sizeof *ids);
  int64_t *n_ids = rl_xmalloc((size_t)o->n_seq * sizeof *n_ids);
  for (int i = 0; i < o->n_seq; i++) ids[i] = p.tokens + (size_t)i * len, n_ids[i] = o->n_prompt;
  rollout_opts ro;
  rollout_opts_default(&ro);
  ro.seed = o->seed, ro.temperature = 1.0, ro.max_new_tokens = o->n_gen, ro.max_slots = o->n_seq;
  ro.ignore_eos = 1, ro.eos_id = -1, ro.add_bos = 0;
  rollout_cuda_engine *eng = NULL;
  rollout_batch b;
  memset(&b, 0, sizeof b);
  rc = rollout_cuda_engine_new(m, rollout, o->n_seq, len, &eng, e);
  if (!rc) rc = rollout_cuda_generate_ids(eng, (const int32_t *const *)ids, n_ids, o->n_seq, 1, 0, &ro, &b, e);
  rollout_cuda_engine_free(eng); /* its KV cache and graphs go before the trainer's forwards */
  free(ids), free(n_ids);
  drift_seqs_free(&p);
  if (rc) {
    rollout_batch_free(&b);
    return rl_err_prefix(e, "drift: the CUDA rollout engine (%s experts %s, %d sequences): ",
                         qtensor_format_name(rollout->fmt[LINEAR_ATTN]),
                         qtensor_format_name(rollout->fmt[LINEAR_EXPERT]), o->n_seq);
  }
  rc = drift_measure_batch(m, &b, rollout, train, DRIFT_CUDA, out, set, e);
  rollout_batch_free(&b);
  if (!rc) out->wall_s = rl_now() - t0;
  return rc;
}
#else
int drift_measure_engine_cuda(model *m, const drift_sample_opts *o, const quant_policy *rollout,
                              const quant_policy *train, drift_result *out, drift_seqs *set, rl_err *e) {
  (void)m, (void)o, (void)rollout, (void)train;
  if (set) memset(set, 0, sizeof *set);
  memset(out, 0, sizeof *out);
  out->r3_overlap = NAN;
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "drift: the engine mode needs the CUDA rollout engine, and this rlrun was built without CUDA; "
                 "measure the full-forward mode on the CPU");
}
#endif
