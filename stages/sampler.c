/* sampler.c — the CPU reference of the sampler (contract in sampler.h). It is
 * written for clarity, not speed: the CUDA kernel is the fast path and must
 * return the same tokens, so every sum here follows the kernel's order. */
#include "stages/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/sampler_math.h"

/* One row's working set: its logits, their keys and exps, and scratch. */
typedef struct smp_row {
  const float *logit;
  int64_t V;
  double t_eff, m; /* temperature used for z, max z */
  uint32_t *key;
  double *e, *x;
  unsigned char *keep;
} smp_row;

sampler_params sampler_default_params(void) {
  sampler_params p = {.temperature = 1.0, .greedy = 0, .top_k = 0, .top_p = 1.0, .min_p = 0.0};
  return p;
}

int sampler_check_params(const sampler_params *p, rl_err *e) {
  if (!(p->temperature >= 0.0 && p->temperature <= 1e6))
    return rl_errf(e, RL_EXIT_USAGE, "sampler: temperature %g is out of range: use 0 (greedy) or a value > 0",
                   p->temperature);
  if (p->top_k < 0) return rl_errf(e, RL_EXIT_USAGE, "sampler: top_k %lld is negative: use 0 (off) or k >= 1", (long long)p->top_k);
  if (!(p->top_p > 0.0 && p->top_p <= 1.0))
    return rl_errf(e, RL_EXIT_USAGE, "sampler: top_p %g is outside (0, 1]: use 1 to switch it off", p->top_p);
  if (!(p->min_p >= 0.0 && p->min_p <= 1.0))
    return rl_errf(e, RL_EXIT_USAGE, "sampler: min_p %g is outside [0, 1]: use 0 to switch it off", p->min_p);
  return 0;
}

double sampler_uniform(const sampler_key *k) {
  return smp_uniform(k->seed, k->iteration, k->prompt, k->sample, k->position);
}

/* The sum of one 32-token segment (tile k, slot s) of x, in tree order. */
static double smp_seg_sum(const double *x, int64_t V, int64_t k, int s) {
  double v[SMP_LANES];
  int64_t base = k * SMP_TILE + (int64_t)s * SMP_LANES;
  for (int l = 0; l < SMP_LANES; l++) v[l] = base + l < V ? x[base + l] : 0.0;
  return smp_tree32(v);
}

/* Σ x in the contract's order; W receives the 32 slot accumulators. */
static double smp_row_sum(const double *x, int64_t V, double W[SMP_SEGS]) {
  int64_t tiles = (V + SMP_TILE - 1) / SMP_TILE;
  for (int s = 0; s < SMP_SEGS; s++) W[s] = 0.0;
  for (int64_t k = 0; k < tiles; k++)
    for (int s = 0; s < SMP_SEGS; s++) W[s] = smp_add(W[s], smp_seg_sum(x, V, k, s));
  double w[SMP_SEGS];
  memcpy(w, W, sizeof w);
  return smp_tree32(w);
}

/* Scaled logit z_i = logit_i / T in FP64. */
static double smp_z(const smp_row *r, int64_t i) { return smp_div((double)r->logit[i], r->t_eff); }

/* Σ over kept tokens whose key is >= kmin (kmin = 0: every kept token). */
static double smp_mass_from(smp_row *r, uint32_t kmin) {
  double W[SMP_SEGS];
  for (int64_t i = 0; i < r->V; i++) r->x[i] = r->keep[i] && r->key[i] >= kmin ? r->e[i] : 0.0;
  return smp_row_sum(r->x, r->V, W);
}

/* Tokens whose key is >= kmin. */
static int64_t smp_count_from(const smp_row *r, uint32_t kmin) {
  int64_t n = 0;
  for (int64_t i = 0; i < r->V; i++) n += r->key[i] >= kmin;
  return n;
}

/* top-k: keep the first k tokens in (logit desc, id asc) order. */
static void smp_mask_top_k(smp_row *r, int64_t k) {
  uint32_t lo = 0, hi = 0xffffffffu; /* the largest key K with count(key >= K) >= k */
  while (lo < hi) {
    uint32_t mid = lo + (uint32_t)((hi - lo) / 2 + (hi - lo) % 2);
    if (smp_count_from(r, mid) >= k) lo = mid;
    else hi = mid - 1;
  }
  int64_t need = k - (lo == 0xffffffffu ? 0 : smp_count_from(r, lo + 1)), tied = 0;
  for (int64_t i = 0; i < r->V; i++)
    if (r->key[i] < lo || (r->key[i] == lo && tied++ >= need)) r->keep[i] = 0;
}

/* top-p over the kept tokens (contract step 5). */
static void smp_mask_top_p(smp_row *r, double p) {
  double ps = smp_mul(p, smp_mass_from(r, 0));
  uint32_t lo = 0, hi = 0xffffffffu; /* the largest key K with mass(key >= K) >= pS */
  while (lo < hi) {
    uint32_t mid = lo + (uint32_t)((hi - lo) / 2 + (hi - lo) % 2);
    if (smp_mass_from(r, mid) >= ps) lo = mid;
    else hi = mid - 1;
  }
  double a = lo == 0xffffffffu ? 0.0 : smp_mass_from(r, lo + 1), estar = 0.0;
  int64_t j = 0;
  for (int64_t i = 0; i < r->V; i++)
    if (r->keep[i] && r->key[i] == lo) { estar = r->e[i]; break; }
  for (int64_t i = 0; i < r->V; i++) {
    if (!r->keep[i] || r->key[i] > lo) continue;
    if (r->key[i] < lo) r->keep[i] = 0;
    else r->keep[i] = smp_add(a, smp_mul((double)j++, estar)) < ps;
  }
}

/* Pick the entry at cumulative position t among n values read by get(i):
 * the first whose running sum (from *c) exceeds t, else the last non-zero
 * one; *c is left at the running sum before the chosen entry. */
#define SMP_WALK(n, get, t, c, chosen)                                 \
  do {                                                                 \
    int64_t last_ = -1;                                                \
    double clast_ = *(c);                                              \
    (chosen) = -1;                                                     \
    for (int64_t i_ = 0; i_ < (n); i_++) {                             \
      double v_ = (get);                                               \
      if (v_ == 0.0) continue;                                         \
      double nx_ = smp_add(*(c), v_);                                  \
      if (nx_ > (t)) { (chosen) = i_; break; }                         \
      last_ = i_, clast_ = *(c), *(c) = nx_;                           \
    }                                                                  \
    if ((chosen) < 0) (chosen) = last_, *(c) = clast_;                 \
  } while (0)

/* The inverse-CDF draw over x (contract step 6); returns the token id. */
static int64_t smp_draw(const double *x, int64_t V, const double W[SMP_SEGS], double t) {
  double c = 0.0;
  int64_t w, k, l, tiles = (V + SMP_TILE - 1) / SMP_TILE;
  SMP_WALK(SMP_SEGS, W[i_], t, &c, w);
  SMP_WALK(tiles, smp_seg_sum(x, V, i_, (int)w), t, &c, k);
  int64_t base = k * SMP_TILE + w * SMP_LANES;
  SMP_WALK(SMP_LANES, base + i_ < V ? x[base + i_] : 0.0, t, &c, l);
  return base + l;
}

/* One row with scratch already allocated. */
static int smp_sample_row(const sampler_params *p, smp_row *r, const sampler_key *k, sampler_out *out,
                          rl_err *e) {
  memset(out, 0, sizeof *out);
  int64_t V = r->V, arg = -1;
  uint32_t kmax = 0;
  for (int64_t i = 0; i < V; i++) {
    if (!smp_logit_ok(r->logit[i])) {
      out->status = SAMPLER_NONFINITE, out->token = (int32_t)i;
      return rl_errf(e, RL_EXIT_FAIL,
                     "sampler: logit %lld is %g (prompt %u, sample %u, position %u): the model produced "
                     "a non-finite value; check the weights and the precision",
                     (long long)i, (double)r->logit[i], k->prompt, k->sample, k->position);
    }
    r->key[i] = smp_key(r->logit[i]);
    if (arg < 0 || r->key[i] > kmax) kmax = r->key[i], arg = i;
  }
  if (r->logit[arg] == -INFINITY) {
    out->status = SAMPLER_ALL_MASKED, out->token = -1;
    return rl_errf(e, RL_EXIT_FAIL, "sampler: every logit is -inf (prompt %u, sample %u, position %u)",
                   k->prompt, k->sample, k->position);
  }
  r->t_eff = p->temperature > 0.0 ? p->temperature : 1.0;
  r->m = smp_z(r, arg);
  for (int64_t i = 0; i < V; i++) r->e[i] = smp_exp(smp_sub(smp_z(r, i), r->m));
  double W[SMP_SEGS], s = smp_row_sum(r->e, V, W);
  for (int64_t i = 0; i < V; i++) r->x[i] = r->e[i] > 0.0 ? smp_mul(r->e[i], smp_sub(smp_z(r, i), r->m)) : 0.0;
  double h = smp_row_sum(r->x, V, W), logs = log(s);
  out->entropy = logs - h / s;

  int64_t tok = arg;
  double s_kept = 1.0;
  if (p->greedy || p->temperature == 0.0) {
    out->n_kept = 1;
  } else {
    memset(r->keep, 1, (size_t)V);
    if (p->top_k > 0 && p->top_k < V) smp_mask_top_k(r, p->top_k);
    if (p->top_p < 1.0) smp_mask_top_p(r, p->top_p);
    int64_t n = 0;
    for (int64_t i = 0; i < V; i++) {
      if (p->min_p > 0.0 && r->e[i] < p->min_p) r->keep[i] = 0;
      r->x[i] = r->keep[i] ? r->e[i] : 0.0;
      n += r->keep[i];
    }
    out->n_kept = (int32_t)n;
    s_kept = smp_row_sum(r->x, V, W);
    out->u = sampler_uniform(k);
    tok = smp_draw(r->x, V, W, smp_mul(out->u, s_kept));
  }
  double zt = smp_sub(smp_z(r, tok), r->m);
  out->token = (int32_t)tok;
  out->logp = zt - logs;
  out->logp_kept = zt - log(s_kept);
  return 0;
}

/* Scratch for one row of V tokens. */
static void smp_row_init(smp_row *r, int64_t V) {
  memset(r, 0, sizeof *r);
  r->V = V;
  r->key = rl_xmalloc((size_t)V * sizeof *r->key);
  r->e = rl_xmalloc((size_t)V * sizeof *r->e);
  r->x = rl_xmalloc((size_t)V * sizeof *r->x);
  r->keep = rl_xmalloc((size_t)V);
}

static void smp_row_free(smp_row *r) { free(r->key), free(r->e), free(r->x), free(r->keep); }

int sampler_sample(const sampler_params *p, const float *logits, int64_t vocab, const sampler_key *k,
                   sampler_out *out, rl_err *e) {
  return sampler_sample_rows(p, logits, 1, vocab, vocab, k, out, e);
}

int sampler_sample_rows(const sampler_params *p, const float *logits, int64_t rows, int64_t vocab,
                        int64_t ld, const sampler_key *keys, sampler_out *out, rl_err *e) {
  if (sampler_check_params(p, e)) return RL_EXIT_USAGE;
  if (vocab < 1 || vocab > INT32_MAX || ld < vocab || rows < 0)
    return rl_errf(e, RL_EXIT_USAGE, "sampler: bad shape: %lld rows of %lld logits (stride %lld)",
                   (long long)rows, (long long)vocab, (long long)ld);
  int rc = 0;
  int64_t first_bad = rows;
#pragma omp parallel if (rows > 1)
  {
    smp_row r;
    smp_row_init(&r, vocab);
    rl_err le;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < rows; i++) {
      r.logit = logits + i * ld;
      if (smp_sample_row(p, &r, &keys[i], &out[i], &le)) {
#pragma omp critical(sampler_err)
        if (i < first_bad) {
          first_bad = i, rc = le.code;
          if (e) *e = le;
        }
      }
    }
    smp_row_free(&r);
  }
  return rc;
}

#if !RLRUN_CUDA
int sampler_sample_cuda(const sampler_params *p, const float *d_logits, int64_t rows, int64_t vocab,
                        int64_t ld, const sampler_key *d_keys, sampler_out *d_out, void *stream,
                        rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE, "sampler: this rlrun was built without CUDA: rebuild with nvcc, or use device: cpu");
}
int sampler_sample_bf16_cuda(const sampler_params *p, const uint16_t *d_logits, int64_t rows, int64_t vocab,
                             int64_t ld, const sampler_key *d_keys, sampler_out *d_out, void *stream,
                             rl_err *e) {
  return sampler_sample_cuda(p, NULL, rows, vocab, ld, d_keys, d_out, stream, e);
}
void sampler_cuda_tune(int plain, int cl) {}
#endif
