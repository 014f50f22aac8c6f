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
  int rc = rl_read_file(path, &buf, &len, e);
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

/* One forward of the whole set under policy p: logp and entropy [T] (entropy
 * may be NULL); routed (non-NULL) receives a copy of each MoE layer's ids
 * [T, k] (NULL entries for dense layers); replay (non-NULL) replays ids;
 * *overlap (non-NULL) gets the r3/overlap of this forward. */
static int drift_forward(model *m, drift_pack *k, const quant_policy *p, drift_device dev,
                         const int32_t *const *replay, float *logp, float *ent, int32_t **routed,
                         double *overlap, rl_err *e) {
  model_fwd_opts fo = {0, replay};
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
    double ov = 0;
    if (dev == DRIFT_CPU) {
      ov = ops_router_overlap_cpu(k->ca->la[l].probs, k->ca->la[l].ids, T, m->E, m->topk);
    } else {
#if RLRUN_CUDA
      /* The router's probabilities live in the CUDA model's activations (model_cuda_int.h). */
      if ((rc = ops_router_overlap_cuda(&ov, k->ga->la[l].probs, k->ga->la[l].ids, T, m->E, m->topk, NULL, e)))
        return rc;
#endif
    }
    match += llround(ov * (double)T * m->topk);
    total += (int64_t)T * m->topk;
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

int drift_measure(model *m, const drift_seqs *s, const quant_policy *rollout, const quant_policy *train,
                  drift_device dev, drift_result *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  out->r3_overlap = NAN;
  int rc = 0;
  if (dev == DRIFT_CUDA) {
#if !RLRUN_CUDA
    return rl_errf(e, RL_EXIT_HARDWARE, "drift: this rlrun was built without CUDA; measure on the CPU");
#endif
    if (!m->cu && (rc = model_cuda_init(m, e))) return rc;
  }
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
  int32_t **routed = rl_xcalloc((size_t)m->L, sizeof *routed);
  rc = drift_forward(m, &k, rollout, dev, NULL, lr, ent, moe ? routed : NULL, NULL, e);
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
    rc = drift_forward(m, &k, train, dev, NULL, lt, NULL, NULL, NULL, e);
    if (rc) rl_err_prefix(e, "drift: train-side forward: ");
  }
  if (!rc) drift_mismatch(s, lt, lr, &out->plain);
  out->r3 = out->plain;
  if (!rc && moe) {
    out->moe = 1;
    rc = drift_forward(m, &k, train, dev, (const int32_t *const *)routed, lt, NULL, NULL, &out->r3_overlap, e);
    if (rc) rl_err_prefix(e, "drift: train-side forward with R3: ");
    else drift_mismatch(s, lt, lr, &out->r3);
  }
  for (int l = 0; l < m->L; l++) free(routed[l]);
  free(routed), free(lr), free(lt), free(ent), free(k.off), free(k.targets);
  if (k.ca) model_acts_free(k.ca);
  if (k.ga) model_cuda_acts_free(k.ga);
  out->wall_s = rl_now() - t0;
  return rc;
}
