/* ops_cpu.c — the CPU reference of the non-GEMM operators (ops.h).
 *
 * Readable first: one function per operator and direction, rows in parallel
 * with OpenMP, every reduction in a fixed order (FP64 where it matters) so the
 * result does not depend on the number of threads. */
#include "kernels/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/formats.h"

/* ---------------------------------------------------------------- batches */

int ops_seqs_check(const ops_seqs *seqs, int T, rl_err *e) {
  if (!seqs || seqs->n_seq < 0 || (seqs->n_seq > 0 && !seqs->off))
    return rl_errf(e, RL_EXIT_USAGE, "packed batch: no sequence offsets given for %d tokens", T);
  if (seqs->n_seq == 0) {
    if (T == 0) return 0;
    return rl_errf(e, RL_EXIT_USAGE, "packed batch: 0 sequences but %d tokens", T);
  }
  if (seqs->off[0] != 0)
    return rl_errf(e, RL_EXIT_USAGE, "packed batch: off[0] is %d; the first sequence must start at 0",
                   (int)seqs->off[0]);
  for (int s = 0; s < seqs->n_seq; s++)
    if (seqs->off[s + 1] < seqs->off[s])
      return rl_errf(e, RL_EXIT_USAGE,
                     "packed batch: sequence %d ends before it starts (off[%d] = %d > off[%d] = %d)",
                     s, s, (int)seqs->off[s], s + 1, (int)seqs->off[s + 1]);
  if (seqs->off[seqs->n_seq] != T)
    return rl_errf(e, RL_EXIT_USAGE,
                   "packed batch: the %d sequences hold %d tokens but the tensors have %d rows",
                   seqs->n_seq, (int)seqs->off[seqs->n_seq], T);
  return 0;
}

void ops_seqs_positions(const ops_seqs *seqs, int32_t *pos) {
  for (int s = 0; s < seqs->n_seq; s++)
    for (int32_t t = seqs->off[s]; t < seqs->off[s + 1]; t++) pos[t] = t - seqs->off[s];
}

/* ---------------------------------------------------------------- BF16 */

void ops_bf16_from_f32_cpu(uint16_t *dst, const float *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = fmt_bf16_from_f32(src[i]);
}

void ops_f32_from_bf16_cpu(float *dst, const uint16_t *src, size_t n) {
  for (size_t i = 0; i < n; i++) dst[i] = fmt_bf16_to_f32(src[i]);
}

void ops_bf16_round_cpu(float *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = fmt_bf16_to_f32(fmt_bf16_from_f32(x[i]));
}

/* ---------------------------------------------------------------- embedding */

/* The first token outside [0, V), as an error; 0 when all are inside. */
static int check_tokens(const int32_t *tokens, int T, int V, const char *what, rl_err *e) {
  for (int t = 0; t < T; t++)
    if (tokens[t] < 0 || tokens[t] >= V)
      return rl_errf(e, RL_EXIT_USAGE,
                     "%s: token id %d at position %d is outside the vocabulary [0, %d); "
                     "check that the tokens come from this model's tokenizer (vocab_size in config.json)",
                     what, (int)tokens[t], t, V);
  return 0;
}

int ops_embedding_forward_cpu(float *out, const float *table, const int32_t *tokens, int T,
                              int V, int H, rl_err *e) {
  if (check_tokens(tokens, T, V, "embedding", e)) return e ? e->code : RL_EXIT_USAGE;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++)
    memcpy(out + (size_t)t * H, table + (size_t)tokens[t] * H, (size_t)H * sizeof(float));
  return 0;
}

int ops_embedding_forward_bf16_cpu(float *out, const uint16_t *table, const int32_t *tokens,
                                   int T, int V, int H, rl_err *e) {
  if (check_tokens(tokens, T, V, "embedding", e)) return e ? e->code : RL_EXIT_USAGE;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++)
    ops_f32_from_bf16_cpu(out + (size_t)t * H, table + (size_t)tokens[t] * H, (size_t)H);
  return 0;
}

int ops_embedding_backward_cpu(float *dtable, const float *dout, const int32_t *tokens, int T,
                               int V, int H, rl_err *e) {
  if (check_tokens(tokens, T, V, "embedding backward", e)) return e ? e->code : RL_EXIT_USAGE;
  /* Columns are split between threads; each thread adds the tokens in order,
   * so a row that appears twice gets the same sum for any thread count. */
  enum { CB = 64 };
  int nb = (H + CB - 1) / CB;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < nb; b++) {
    int c0 = b * CB, c1 = c0 + CB < H ? c0 + CB : H;
    for (int t = 0; t < T; t++) {
      float *dst = dtable + (size_t)tokens[t] * H;
      const float *src = dout + (size_t)t * H;
      for (int c = c0; c < c1; c++) dst[c] += src[c];
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- RMSNorm */

/* One row of RMSNorm: returns rstd, writes y / y_bf16 when given. */
static float rmsnorm_row(float *y, uint16_t *y_bf16, const float *x, const float *w, int dim,
                         float eps) {
  double ss = 0;
  for (int i = 0; i < dim; i++) ss += (double)x[i] * x[i];
  float rstd = (float)(1.0 / sqrt(ss / dim + (double)eps));
  for (int i = 0; i < dim; i++) {
    float v = w[i] * (x[i] * rstd); /* transformers: weight * (x * rsqrt(var + eps)) */
    if (y) y[i] = v;
    if (y_bf16) y_bf16[i] = fmt_bf16_from_f32(v);
  }
  return rstd;
}

void ops_rmsnorm_forward_cpu(float *y, uint16_t *y_bf16, float *rstd, const float *x,
                             const float *w, int rows, int dim, float eps) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; r++) {
    size_t o = (size_t)r * dim;
    float s = rmsnorm_row(y ? y + o : NULL, y_bf16 ? y_bf16 + o : NULL, x + o, w, dim, eps);
    if (rstd) rstd[r] = s;
  }
}

void ops_residual_rmsnorm_forward_cpu(float *h, float *y, uint16_t *y_bf16, float *rstd,
                                      const float *resid, const float *x, const float *w, int rows,
                                      int dim, float eps) {
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; r++) {
    size_t o = (size_t)r * dim;
    for (int i = 0; i < dim; i++) h[o + i] = resid[o + i] + x[o + i];
    float s = rmsnorm_row(y ? y + o : NULL, y_bf16 ? y_bf16 + o : NULL, h + o, w, dim, eps);
    if (rstd) rstd[r] = s;
  }
}

/* dw[i] += Σ_r dy[r,i]·x[r,i]·rstd[r]: columns split between threads, rows
 * summed in order in FP64 (deterministic). */
static void rmsnorm_dw(float *dw, const float *dy, const float *x, const float *rstd, int rows,
                       int dim) {
  enum { CB = 64 };
  int nb = (dim + CB - 1) / CB;
#pragma omp parallel for schedule(static)
  for (int b = 0; b < nb; b++) {
    int c0 = b * CB, c1 = c0 + CB < dim ? c0 + CB : dim;
    double acc[CB] = {0};
    for (int r = 0; r < rows; r++) {
      const float *dyr = dy + (size_t)r * dim, *xr = x + (size_t)r * dim;
      double s = rstd[r];
      for (int c = c0; c < c1; c++) acc[c - c0] += (double)dyr[c] * xr[c] * s;
    }
    for (int c = c0; c < c1; c++) dw[c] += (float)acc[c - c0];
  }
}

/* dx of one row (written, or added when add != 0). */
static void rmsnorm_dx_row(float *dx, const float *dy, const float *x, const float *w, float rstd,
                           int dim, int add) {
  double a = 0;
  for (int i = 0; i < dim; i++) a += (double)w[i] * dy[i] * x[i];
  double r = rstd, c = r * r * r * a / dim;
  for (int i = 0; i < dim; i++) {
    double g = r * w[i] * dy[i] - x[i] * c;
    dx[i] = add ? (float)(dx[i] + g) : (float)g;
  }
}

void ops_rmsnorm_backward_cpu(float *dx, float *dw, const float *dy, const float *x, const float *w,
                              const float *rstd, int rows, int dim) {
  if (dw) rmsnorm_dw(dw, dy, x, rstd, rows, dim);
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; r++) {
    size_t o = (size_t)r * dim;
    rmsnorm_dx_row(dx + o, dy + o, x + o, w, rstd[r], dim, 0);
  }
}

void ops_residual_rmsnorm_backward_cpu(float *dresid, float *dw, const float *dy, const float *h,
                                       const float *w, const float *rstd, int rows, int dim) {
  if (dw) rmsnorm_dw(dw, dy, h, rstd, rows, dim);
#pragma omp parallel for schedule(static)
  for (int r = 0; r < rows; r++) {
    size_t o = (size_t)r * dim;
    rmsnorm_dx_row(dresid + o, dy + o, h + o, w, rstd[r], dim, 1);
  }
}

/* ---------------------------------------------------------------- RoPE */

void ops_rope_inv_freq(float *inv, int head_dim, float theta) {
  for (int i = 0; i < head_dim / 2; i++) {
    float ex = (float)(2 * i) / (float)head_dim;       /* arange(0, d, 2).float() / d */
    float p = (float)pow((double)theta, (double)ex);    /* base ** ex, FP32 result */
    inv[i] = 1.0f / p;
  }
}

void ops_rope_table_cpu(float *cos_t, float *sin_t, const int32_t *pos, int T, int head_dim,
                        float theta) {
  int h = head_dim / 2;
  float *inv = rl_xmalloc((size_t)(h > 0 ? h : 1) * sizeof(float));
  ops_rope_inv_freq(inv, head_dim, theta);
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++)
    for (int i = 0; i < h; i++) {
      float ang = inv[i] * (float)pos[t]; /* FP32 product, as transformers forms it */
      cos_t[(size_t)t * h + i] = (float)cos((double)ang);
      sin_t[(size_t)t * h + i] = (float)sin((double)ang);
    }
  free(inv);
}

/* Rotate every head of x [T, n_heads, d] by the table; dir = +1 forward,
 * −1 the transpose (backward). */
static void rope_apply(float *x, const float *cos_t, const float *sin_t, int T, int n_heads, int d,
                       int dir) {
  int h = d / 2;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++)
    for (int hd = 0; hd < n_heads; hd++) {
      float *v = x + ((size_t)t * n_heads + hd) * d;
      const float *c = cos_t + (size_t)t * h, *s = sin_t + (size_t)t * h;
      for (int i = 0; i < h; i++) {
        float a = v[i], b = v[i + h], sn = dir > 0 ? s[i] : -s[i];
        v[i] = a * c[i] - b * sn;
        v[i + h] = b * c[i] + a * sn;
      }
    }
}

/* Shared driver of the RoPE forward and backward. */
static void rope_run(float *x, const int32_t *pos, int T, int n_heads, int d, float theta,
                     int dir) {
  size_t n = (size_t)T * (d / 2);
  float *c = rl_xmalloc((n ? n : 1) * sizeof(float)), *s = rl_xmalloc((n ? n : 1) * sizeof(float));
  ops_rope_table_cpu(c, s, pos, T, d, theta);
  rope_apply(x, c, s, T, n_heads, d, dir);
  free(c);
  free(s);
}

void ops_rope_forward_cpu(float *x, const int32_t *pos, int T, int n_heads, int head_dim,
                          float theta) {
  rope_run(x, pos, T, n_heads, head_dim, theta, +1);
}

void ops_rope_backward_cpu(float *dx, const int32_t *pos, int T, int n_heads, int head_dim,
                           float theta) {
  rope_run(dx, pos, T, n_heads, head_dim, theta, -1);
}

void ops_qk_norm_rope_forward_cpu(float *y, float *rstd, const float *x, const float *w,
                                  const int32_t *pos, int T, int n_heads, int head_dim, float eps,
                                  float theta) {
  ops_rmsnorm_forward_cpu(y, NULL, rstd, x, w, T * n_heads, head_dim, eps);
  ops_rope_forward_cpu(y, pos, T, n_heads, head_dim, theta);
}

void ops_qk_norm_rope_backward_cpu(float *dx, float *dw, const float *dy, const float *x,
                                   const float *w, const float *rstd, const int32_t *pos, int T,
                                   int n_heads, int head_dim, float theta) {
  size_t n = (size_t)T * n_heads * head_dim;
  float *g = rl_xmalloc((n ? n : 1) * sizeof(float));
  memcpy(g, dy, n * sizeof(float));
  ops_rope_backward_cpu(g, pos, T, n_heads, head_dim, theta);
  ops_rmsnorm_backward_cpu(dx, dw, g, x, w, rstd, T * n_heads, head_dim);
  free(g);
}

/* ---------------------------------------------------------------- SwiGLU */

/* The logistic function, stable for both signs, in FP64. */
static double sigmoid(double g) {
  if (g >= 0) return 1.0 / (1.0 + exp(-g));
  double z = exp(g);
  return z / (1.0 + z);
}

void ops_swiglu_forward_cpu(float *out, uint16_t *out_bf16, const float *gate, const float *up,
                            int T, int I, int ld) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++)
    for (int i = 0; i < I; i++) {
      float g = gate[(size_t)t * ld + i], u = up[(size_t)t * ld + i];
      float a = (float)(g * sigmoid(g)); /* silu(gate) in FP32, then × up (as transformers) */
      float v = a * u;
      if (out) out[(size_t)t * I + i] = v;
      if (out_bf16) out_bf16[(size_t)t * I + i] = fmt_bf16_from_f32(v);
    }
}

void ops_swiglu_backward_cpu(float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, int T, int I, int ld) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++)
    for (int i = 0; i < I; i++) {
      size_t o = (size_t)t * ld + i;
      double g = gate[o], u = up[o], d = dout[(size_t)t * I + i];
      double s = sigmoid(g), silu = g * s, dsilu = s * (1.0 + g * (1.0 - s));
      dgate[o] = (float)(d * u * dsilu);
      dup[o] = (float)(d * silu);
    }
}

/* ---------------------------------------------------------------- MoE router */

/* The top-k of one row of probabilities, descending, ties to the lower index. */
static void topk_row(int32_t *ids, const float *p, int E, int k) {
  for (int j = 0; j < k; j++) {
    int best = -1;
    for (int x = 0; x < E; x++) {
      int taken = 0;
      for (int m = 0; m < j; m++) taken |= ids[m] == x;
      if (taken) continue;
      if (best < 0 || p[x] > p[best]) best = x; /* strict: the lower index keeps a tie */
    }
    ids[j] = best;
  }
}

int ops_router_forward_cpu(int32_t *ids, float *weights, float *probs, const float *logits, int T,
                           int E, int k, int norm_topk_prob, ops_route_mode mode, rl_err *e) {
  if (k < 1 || k > E)
    return rl_errf(e, RL_EXIT_USAGE, "router: top-k %d must be in [1, %d] (num_experts_per_tok ≤ num_experts)", k, E);
  for (int t = 0; t < T; t++)
    for (int x = 0; x < E; x++)
      if (!isfinite(logits[(size_t)t * E + x]))
        return rl_errf(e, RL_EXIT_FAIL,
                       "router: logit of expert %d at token %d is %g; the forward diverged "
                       "(lower the learning rate or check the weights)",
                       x, t, (double)logits[(size_t)t * E + x]);
  if (mode == OPS_ROUTE_REPLAY)
    for (int t = 0; t < T; t++)
      for (int j = 0; j < k; j++) {
        int32_t id = ids[(size_t)t * k + j];
        if (id < 0 || id >= E)
          return rl_errf(e, RL_EXIT_USAGE,
                         "router replay (R3): expert id %d at token %d, slot %d is outside [0, %d); "
                         "the recorded routing does not belong to this model",
                         (int)id, t, j, E);
        for (int m = 0; m < j; m++)
          if (ids[(size_t)t * k + m] == id)
            return rl_errf(e, RL_EXIT_USAGE,
                           "router replay (R3): expert %d appears twice at token %d (slots %d and %d); "
                           "replayed top-k ids must be distinct",
                           (int)id, t, m, j);
      }
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++) {
    const float *l = logits + (size_t)t * E;
    float *p = probs + (size_t)t * E;
    int32_t *id = ids + (size_t)t * k;
    double m = l[0], s = 0;
    for (int x = 1; x < E; x++) m = l[x] > m ? l[x] : m;
    for (int x = 0; x < E; x++) s += exp(l[x] - m);
    for (int x = 0; x < E; x++) p[x] = (float)(exp(l[x] - m) / s);
    if (mode == OPS_ROUTE_TOPK) topk_row(id, p, E, k);
    double sum = 0;
    for (int j = 0; j < k; j++) sum += p[id[j]];
    for (int j = 0; j < k; j++)
      weights[(size_t)t * k + j] = norm_topk_prob ? (float)(p[id[j]] / sum) : p[id[j]];
  }
  return 0;
}

void ops_router_backward_cpu(float *dlogits, const float *dweights, const float *probs,
                             const int32_t *ids, int T, int E, int k, int norm_topk_prob) {
#pragma omp parallel
  {
    double *dp = rl_xmalloc((size_t)E * sizeof(double));
#pragma omp for schedule(static)
    for (int t = 0; t < T; t++) {
      const float *p = probs + (size_t)t * E, *dw = dweights + (size_t)t * k;
      const int32_t *id = ids + (size_t)t * k;
      for (int x = 0; x < E; x++) dp[x] = 0;
      double S = 0, c = 0;
      for (int j = 0; j < k; j++) S += p[id[j]];
      if (norm_topk_prob)
        for (int j = 0; j < k; j++) c += dw[j] * (p[id[j]] / S);
      for (int j = 0; j < k; j++) dp[id[j]] += norm_topk_prob ? (dw[j] - c) / S : dw[j];
      double dot = 0;
      for (int x = 0; x < E; x++) dot += p[x] * dp[x];
      for (int x = 0; x < E; x++) dlogits[(size_t)t * E + x] = (float)(p[x] * (dp[x] - dot));
    }
    free(dp);
  }
}

double ops_router_overlap_cpu(const float *probs, const int32_t *ids, int T, int E, int k) {
  if (T <= 0 || k <= 0) return 1.0;
  long hit = 0;
#pragma omp parallel reduction(+ : hit)
  {
    int32_t *own = rl_xmalloc((size_t)k * sizeof(int32_t));
#pragma omp for schedule(static)
    for (int t = 0; t < T; t++) {
      topk_row(own, probs + (size_t)t * E, E, k);
      for (int j = 0; j < k; j++)
        for (int m = 0; m < k; m++) hit += ids[(size_t)t * k + j] == own[m];
    }
    free(own);
  }
  return (double)hit / ((double)T * k);
}

/* ---------------------------------------------------------------- log-probs */

int ops_logprob_forward_cpu(float *logp, float *entropy, float *lse, const float *logits,
                            const int32_t *targets, int T, int V, float temp, rl_err *e) {
  if (!(temp > 0) || !isfinite(temp))
    return rl_errf(e, RL_EXIT_USAGE, "log-probs: temperature %g must be a finite number > 0", (double)temp);
  if (targets)
    for (int t = 0; t < T; t++)
      if (targets[t] >= V)
        return rl_errf(e, RL_EXIT_USAGE,
                       "log-probs: target token %d at position %d is outside the vocabulary [0, %d)",
                       (int)targets[t], t, V);
  int bad = -1;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++) {
    const float *l = logits + (size_t)t * V;
    double m = -INFINITY;
    int finite = 1;
    for (int v = 0; v < V; v++) {
      float z = l[v] / temp; /* FP32 division, as logits / T in transformers */
      finite &= isfinite(z) != 0;
      m = z > m ? z : m;
    }
    if (!finite) {
#pragma omp critical
      if (bad < 0 || t < bad) bad = t;
      continue;
    }
    double s1 = 0, s2 = 0;
    for (int v = 0; v < V; v++) {
      double z = l[v] / temp, ex = exp(z - m);
      s1 += ex;
      s2 += ex * z;
    }
    double L = m + log(s1);
    lse[t] = (float)L;
    if (entropy) entropy[t] = (float)(L - s2 / s1);
    if (logp && targets) logp[t] = targets[t] < 0 ? 0.0f : (float)((double)(l[targets[t]] / temp) - L);
  }
  if (bad >= 0)
    return rl_errf(e, RL_EXIT_FAIL,
                   "log-probs: the logits of token %d are not finite; the forward diverged "
                   "(lower the learning rate or check the weights)",
                   bad);
  return 0;
}

int ops_logprob_backward_cpu(float *dlogits, const float *dlogp, const float *dentropy,
                             const float *logits, const float *lse, const int32_t *targets, int T,
                             int V, float temp, rl_err *e) {
  if (!(temp > 0) || !isfinite(temp))
    return rl_errf(e, RL_EXIT_USAGE, "log-probs backward: temperature %g must be a finite number > 0", (double)temp);
  if (targets)
    for (int t = 0; t < T; t++)
      if (targets[t] >= V)
        return rl_errf(e, RL_EXIT_USAGE,
                       "log-probs backward: target token %d at position %d is outside [0, %d)",
                       (int)targets[t], t, V);
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; t++) {
    const float *l = logits + (size_t)t * V;
    float *d = dlogits + (size_t)t * V;
    double L = lse[t];
    double gl = (dlogp && targets && targets[t] >= 0) ? dlogp[t] : 0.0;
    double ge = dentropy ? dentropy[t] : 0.0;
    int tgt = targets ? targets[t] : -1;
    double H = 0;
    if (ge != 0) { /* the entropy again, from the row (it is cheap and keeps the API small) */
      double pz = 0;
      for (int v = 0; v < V; v++) {
        double z = l[v] / temp;
        pz += exp(z - L) * z;
      }
      H = L - pz;
    }
    for (int v = 0; v < V; v++) { /* reads l[v] before writing d[v]: d may alias l */
      double z = l[v] / temp, lp = z - L, p = exp(lp);
      double g = gl * ((v == tgt ? 1.0 : 0.0) - p) + ge * (-p * (lp + H));
      d[v] = (float)(g / temp);
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- attention */

/* Check a GQA call's shape and batch; fills seq_of[t] (the sequence of token t). */
static int attn_prepare(int32_t **seq_of, const ops_seqs *seqs, ops_attn_shape sh, const char *what,
                        rl_err *e) {
  if (sh.n_q_heads <= 0 || sh.n_kv_heads <= 0 || sh.head_dim <= 0 || sh.T < 0 ||
      sh.n_q_heads % sh.n_kv_heads)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: %d query heads cannot share %d key/value heads (head_dim %d); the query "
                   "head count must be a positive multiple of the key/value head count",
                   what, sh.n_q_heads, sh.n_kv_heads, sh.head_dim);
  if (ops_seqs_check(seqs, sh.T, e)) return rl_err_prefix(e, "%s: ", what);
  *seq_of = rl_xmalloc((size_t)(sh.T > 0 ? sh.T : 1) * sizeof(int32_t));
  for (int s = 0; s < seqs->n_seq; s++)
    for (int32_t t = seqs->off[s]; t < seqs->off[s + 1]; t++) (*seq_of)[t] = s;
  return 0;
}

/* q·k in FP64. */
static double dot_d(const float *a, const float *b, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

int ops_attention_forward_cpu(float *out, uint16_t *out_bf16, float *lse, const float *q,
                              const float *k, const float *v, const ops_seqs *seqs,
                              ops_attn_shape sh, rl_err *e) {
  int32_t *seq_of = NULL;
  if (attn_prepare(&seq_of, seqs, sh, "attention", e)) return e ? e->code : RL_EXIT_USAGE;
  int Hq = sh.n_q_heads, Hkv = sh.n_kv_heads, D = sh.head_dim, rep = Hq / Hkv;
  int maxlen = 0;
  for (int s = 0; s < seqs->n_seq; s++)
    if (seqs->off[s + 1] - seqs->off[s] > maxlen) maxlen = seqs->off[s + 1] - seqs->off[s];
  double scale = 1.0 / sqrt((double)D);
#pragma omp parallel
  {
    double *sc = rl_xmalloc((size_t)(maxlen > 0 ? maxlen : 1) * sizeof(double));
    double *acc = rl_xmalloc((size_t)D * sizeof(double));
#pragma omp for schedule(dynamic, 8)
    for (long r = 0; r < (long)sh.T * Hq; r++) {
      int i = (int)(r / Hq), h = (int)(r % Hq), g = h / rep, j0 = seqs->off[seq_of[i]];
      const float *qi = q + ((size_t)i * Hq + h) * D;
      double m = -INFINITY, sum = 0;
      for (int j = j0; j <= i; j++) {
        sc[j - j0] = dot_d(qi, k + ((size_t)j * Hkv + g) * D, D) * scale;
        m = sc[j - j0] > m ? sc[j - j0] : m;
      }
      for (int d = 0; d < D; d++) acc[d] = 0;
      for (int j = j0; j <= i; j++) {
        double p = exp(sc[j - j0] - m);
        const float *vj = v + ((size_t)j * Hkv + g) * D;
        sum += p;
        for (int d = 0; d < D; d++) acc[d] += p * vj[d];
      }
      size_t o = ((size_t)i * Hq + h) * D;
      for (int d = 0; d < D; d++) {
        float x = (float)(acc[d] / sum);
        if (out) out[o + d] = x;
        if (out_bf16) out_bf16[o + d] = fmt_bf16_from_f32(x);
      }
      if (lse) lse[(size_t)i * Hq + h] = (float)(m + log(sum));
    }
    free(sc);
    free(acc);
  }
  free(seq_of);
  return 0;
}

int ops_attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout,
                               const float *out, const float *lse, const float *q, const float *k,
                               const float *v, const ops_seqs *seqs, ops_attn_shape sh, rl_err *e) {
  int32_t *seq_of = NULL;
  if (attn_prepare(&seq_of, seqs, sh, "attention backward", e)) return e ? e->code : RL_EXIT_USAGE;
  int Hq = sh.n_q_heads, Hkv = sh.n_kv_heads, D = sh.head_dim, rep = Hq / Hkv;
  double scale = 1.0 / sqrt((double)D);
  long nq = (long)sh.T * Hq;
  /* delta[i,h] = dout·out: the softmax backward's row term Σ_j P_ij dP_ij. */
  double *delta = rl_xmalloc((size_t)(nq > 0 ? nq : 1) * sizeof(double));
#pragma omp parallel for schedule(static)
  for (long r = 0; r < nq; r++) delta[r] = dot_d(dout + (size_t)r * D, out + (size_t)r * D, D);

  /* dQ: one query row at a time (rows are independent). */
#pragma omp parallel
  {
    double *acc = rl_xmalloc((size_t)D * sizeof(double));
#pragma omp for schedule(dynamic, 8)
    for (long r = 0; r < nq; r++) {
      int i = (int)(r / Hq), h = (int)(r % Hq), g = h / rep, j0 = seqs->off[seq_of[i]];
      const float *qi = q + (size_t)r * D, *doi = dout + (size_t)r * D;
      for (int d = 0; d < D; d++) acc[d] = 0;
      for (int j = j0; j <= i; j++) {
        const float *kj = k + ((size_t)j * Hkv + g) * D, *vj = v + ((size_t)j * Hkv + g) * D;
        double p = exp(dot_d(qi, kj, D) * scale - lse[r]);
        double ds = p * (dot_d(doi, vj, D) - delta[r]);
        for (int d = 0; d < D; d++) acc[d] += ds * kj[d];
      }
      for (int d = 0; d < D; d++) dq[(size_t)r * D + d] = (float)(acc[d] * scale);
    }
    free(acc);
  }

  /* dK, dV: one key row of one kv head at a time, summing its query heads and
   * the queries i ≥ j of its sequence in a fixed order. */
#pragma omp parallel
  {
    double *ak = rl_xmalloc((size_t)D * sizeof(double)), *av = rl_xmalloc((size_t)D * sizeof(double));
#pragma omp for schedule(dynamic, 8)
    for (long r = 0; r < (long)sh.T * Hkv; r++) {
      int j = (int)(r / Hkv), g = (int)(r % Hkv), i1 = seqs->off[seq_of[j] + 1];
      const float *kj = k + (size_t)r * D, *vj = v + (size_t)r * D;
      for (int d = 0; d < D; d++) ak[d] = av[d] = 0;
      for (int h = g * rep; h < (g + 1) * rep; h++)
        for (int i = j; i < i1; i++) {
          size_t qr = (size_t)i * Hq + h;
          const float *qi = q + qr * D, *doi = dout + qr * D;
          double p = exp(dot_d(qi, kj, D) * scale - lse[qr]);
          double ds = p * (dot_d(doi, vj, D) - delta[qr]);
          for (int d = 0; d < D; d++) {
            av[d] += p * doi[d];
            ak[d] += ds * qi[d];
          }
        }
      for (int d = 0; d < D; d++) {
        dk[(size_t)r * D + d] = (float)(ak[d] * scale);
        dv[(size_t)r * D + d] = (float)av[d];
      }
    }
    free(ak);
    free(av);
  }
  free(delta);
  free(seq_of);
  return 0;
}
