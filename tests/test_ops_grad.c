/* test_ops_grad.c — every backward of kernels/ops.h against central finite
 * differences of its FP32 forward, and attention (forward and backward)
 * against a naive full-matrix implementation written here in FP64.
 *
 * Gradient check: L = Σ c·y (c random, L in FP64); the analytic gradient is the
 * backward with upstream c; the numeric one is (L(x+h) − L(x−h)) / (2h) with
 * the perturbation actually representable in FP32, h = 1e-3 (RoPE/embedding
 * are linear: any h). Bound, stated per op below: max_i |numeric − analytic|
 * ≤ tol · max_i |analytic| (tol 1e-3 unless noted); the worst is printed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "kernels/ops.h"

/* Deterministic pseudo-random floats in [lo, hi) (a small LCG). */
static void fill_range(float *x, size_t n, uint32_t seed, float lo, float hi) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    x[i] = lo + (hi - lo) * (float)((seed >> 8) * (1.0 / 16777216.0));
  }
}

static float *randf(size_t n, uint32_t seed, float lo, float hi) {
  float *x = malloc((n ? n : 1) * sizeof(float));
  fill_range(x, n, seed, lo, hi);
  return x;
}

typedef double (*loss_fn)(void *ctx);

/* Σ c_i y_i in FP64. */
static double dotc(const float *c, const float *y, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)c[i] * y[i];
  return s;
}

/* Central differences of f over every element of x against g (analytic);
 * returns max |fd − g| / max |g| and prints the worst element. */
static double fd_check(const char *name, loss_fn f, void *ctx, float *x, size_t n, const float *g,
                       double h) {
  double gmax = 0, worst = 0;
  size_t wi = 0;
  double wfd = 0;
  for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(g[i]));
  for (size_t i = 0; i < n; i++) {
    float x0 = x[i], xp = (float)(x0 + h), xm = (float)(x0 - h);
    x[i] = xp;
    double lp = f(ctx);
    x[i] = xm;
    double lm = f(ctx);
    x[i] = x0;
    double fd = (lp - lm) / ((double)xp - (double)xm);
    double d = fabs(fd - g[i]);
    if (d > worst) worst = d, wi = i, wfd = fd;
  }
  double rel = gmax > 0 ? worst / gmax : worst;
  printf("  %-28s n=%-5zu max|g|=%.3g worst rel err %.2e (elem %zu: fd %.7g vs %.7g)\n", name, n,
         gmax, rel, wi, wfd, (double)g[wi]);
  return rel;
}

/* ---------------------------------------------------------------- RMSNorm */

typedef struct {
  float *x, *w, *resid, *c, *y, *h, *rstd;
  int rows, dim, fused;
} norm_ctx;

static double norm_loss(void *p) {
  norm_ctx *k = p;
  if (k->fused)
    ops_residual_rmsnorm_forward_cpu(k->h, k->y, NULL, k->rstd, k->resid, k->x, k->w, k->rows,
                                     k->dim, 1e-6f);
  else
    ops_rmsnorm_forward_cpu(k->y, NULL, k->rstd, k->x, k->w, k->rows, k->dim, 1e-6f);
  return dotc(k->c, k->y, (size_t)k->rows * k->dim);
}

TEST(ops_grad_rmsnorm) {
  enum { R = 5, D = 24 };
  norm_ctx k = {randf(R * D, 11, -2, 2), randf(D, 12, 0.5f, 1.5f), NULL, randf(R * D, 13, -1, 1),
                malloc(4 * R * D), NULL, malloc(4 * R), R, D, 0};
  norm_loss(&k);
  float dx[R * D], dw[D] = {0};
  ops_rmsnorm_backward_cpu(dx, dw, k.c, k.x, k.w, k.rstd, R, D);
  CHECK(fd_check("rmsnorm dx", norm_loss, &k, k.x, R * D, dx, 1e-3) < 1e-3);
  CHECK(fd_check("rmsnorm dw", norm_loss, &k, k.w, D, dw, 1e-3) < 1e-3);
  /* dw accumulates: a second backward doubles it. */
  float dw1 = dw[3];
  ops_rmsnorm_backward_cpu(dx, dw, k.c, k.x, k.w, k.rstd, R, D);
  CHECK_NEAR(dw[3], 2 * dw1, 1e-6 * fabs(dw1));
  free(k.x), free(k.w), free(k.c), free(k.y), free(k.rstd);
}

TEST(ops_grad_residual_rmsnorm) {
  enum { R = 4, D = 16 };
  norm_ctx k = {randf(R * D, 21, -2, 2), randf(D, 22, 0.5f, 1.5f), randf(R * D, 23, -2, 2),
                randf(R * D, 24, -1, 1), malloc(4 * R * D), malloc(4 * R * D), malloc(4 * R), R, D, 1};
  norm_loss(&k);
  /* The gradient reaching both addends is what the residual add passes on (0
   * here: no upstream through h) plus the norm's backward. */
  float dr[R * D] = {0}, dw[D] = {0};
  ops_residual_rmsnorm_backward_cpu(dr, dw, k.c, k.h, k.w, k.rstd, R, D);
  CHECK(fd_check("residual+rmsnorm dx", norm_loss, &k, k.x, R * D, dr, 1e-3) < 1e-3);
  CHECK(fd_check("residual+rmsnorm dresid", norm_loss, &k, k.resid, R * D, dr, 1e-3) < 1e-3);
  CHECK(fd_check("residual+rmsnorm dw", norm_loss, &k, k.w, D, dw, 1e-3) < 1e-3);
  free(k.x), free(k.w), free(k.resid), free(k.c), free(k.y), free(k.h), free(k.rstd);
}

/* ---------------------------------------------------------------- QK-norm + RoPE */

typedef struct {
  float *x, *w, *c, *y, *rstd;
  int32_t *pos;
  int T, H, D;
} qk_ctx;

static double qk_loss(void *p) {
  qk_ctx *k = p;
  ops_qk_norm_rope_forward_cpu(k->y, k->rstd, k->x, k->w, k->pos, k->T, k->H, k->D, 1e-6f, 1e6f);
  return dotc(k->c, k->y, (size_t)k->T * k->H * k->D);
}

TEST(ops_grad_qk_norm_rope) {
  enum { T = 6, H = 3, D = 16 };
  int32_t pos[T] = {0, 1, 2, 9, 40, 1000};
  qk_ctx k = {randf(T * H * D, 31, -2, 2), randf(D, 32, 0.5f, 1.5f), randf(T * H * D, 33, -1, 1),
              malloc(4 * T * H * D), malloc(4 * T * H), pos, T, H, D};
  qk_loss(&k);
  float dx[T * H * D], dw[D] = {0};
  ops_qk_norm_rope_backward_cpu(dx, dw, k.c, k.x, k.w, k.rstd, pos, T, H, D, 1e6f);
  CHECK(fd_check("qk-norm+rope dx", qk_loss, &k, k.x, T * H * D, dx, 1e-3) < 1e-3);
  CHECK(fd_check("qk-norm+rope dw", qk_loss, &k, k.w, D, dw, 1e-3) < 1e-3);
  /* RoPE alone is a rotation: its backward is the transpose. Check ⟨R x, c⟩ = ⟨x, Rᵀ c⟩. */
  float x[T * H * D], c[T * H * D];
  memcpy(x, k.x, sizeof x), memcpy(c, k.c, sizeof c);
  ops_rope_forward_cpu(x, pos, T, H, D, 1e6f);
  ops_rope_backward_cpu(c, pos, T, H, D, 1e6f);
  CHECK_NEAR(dotc(k.c, x, T * H * D), dotc(c, k.x, T * H * D), 1e-5);
  free(k.x), free(k.w), free(k.c), free(k.y), free(k.rstd);
}

/* ---------------------------------------------------------------- SwiGLU */

typedef struct {
  float *gu, *c, *y;
  int T, I;
} sw_ctx;

static double sw_loss(void *p) {
  sw_ctx *k = p;
  ops_swiglu_forward_cpu(k->y, NULL, k->gu, k->gu + k->I, k->T, k->I, 2 * k->I);
  return dotc(k->c, k->y, (size_t)k->T * k->I);
}

TEST(ops_grad_swiglu) {
  enum { T = 5, I = 12 };
  sw_ctx k = {randf(T * 2 * I, 41, -4, 4), randf(T * I, 42, -1, 1), malloc(4 * T * I), T, I};
  float dgu[T * 2 * I];
  ops_swiglu_backward_cpu(dgu, dgu + I, k.c, k.gu, k.gu + I, T, I, 2 * I);
  CHECK(fd_check("swiglu d[gate|up]", sw_loss, &k, k.gu, T * 2 * I, dgu, 1e-3) < 1e-3);
  free(k.gu), free(k.c), free(k.y);
}

/* ---------------------------------------------------------------- embedding */

typedef struct {
  float *tab, *c, *y;
  int32_t *tok;
  int T, V, H;
} emb_ctx;

static double emb_loss(void *p) {
  emb_ctx *k = p;
  ops_embedding_forward_cpu(k->y, k->tab, k->tok, k->T, k->V, k->H, NULL);
  return dotc(k->c, k->y, (size_t)k->T * k->H);
}

TEST(ops_grad_embedding) {
  enum { T = 7, V = 5, H = 6 };
  int32_t tok[T] = {4, 0, 4, 2, 4, 0, 1}; /* repeats: the scatter must add */
  emb_ctx k = {randf(V * H, 51, -1, 1), randf(T * H, 52, -1, 1), malloc(4 * T * H), tok, T, V, H};
  float dt[V * H] = {0};
  REQUIRE(ops_embedding_backward_cpu(dt, k.c, tok, T, V, H, NULL) == 0);
  CHECK(fd_check("embedding dtable", emb_loss, &k, k.tab, V * H, dt, 1e-2) < 1e-5);
  for (int i = 0; i < H; i++) CHECK_NEAR(dt[3 * H + i], 0, 0); /* token 3 never appears */
  free(k.tab), free(k.c), free(k.y);
}

/* ---------------------------------------------------------------- router */

typedef struct {
  float *lg, *c, *w, *p;
  int32_t *ids;
  int T, E, K, norm;
  ops_route_mode mode;
} rt_ctx;

static double rt_loss(void *v) {
  rt_ctx *k = v;
  ops_router_forward_cpu(k->ids, k->w, k->p, k->lg, k->T, k->E, k->K, k->norm, k->mode, NULL);
  return dotc(k->c, k->w, (size_t)k->T * k->K);
}

/* Router logits with gaps of 0.25 between experts, so that a 1e-3 step never
 * changes the top-k. */
static void spaced_logits(float *lg, int T, int E, uint32_t seed) {
  for (int t = 0; t < T; t++)
    for (int x = 0; x < E; x++) lg[t * E + x] = 0.25f * (float)((x * 5 + t * 3 + (int)seed) % E) - 1.0f;
}

TEST(ops_grad_router_topk_and_replay) {
  enum { T = 4, E = 8, K = 3 };
  float lg[T * E], c[T * K], w[T * K], p[T * E], dl[T * E];
  int32_t ids[T * K];
  fill_range(c, T * K, 61, -1, 1);
  for (int norm = 0; norm <= 1; norm++) {
    spaced_logits(lg, T, E, 7);
    rt_ctx k = {lg, c, w, p, ids, T, E, K, norm, OPS_ROUTE_TOPK};
    rt_loss(&k);
    ops_router_backward_cpu(dl, c, p, ids, T, E, K, norm);
    CHECK(fd_check(norm ? "router top-k (norm) dlogits" : "router top-k dlogits", rt_loss, &k, lg,
                   T * E, dl, 1e-3) < 1e-3);
    /* R3 replay with ids the router would not choose (the 3 lowest-ranked):
     * the gradient still flows through the gathered probabilities. */
    for (int t = 0; t < T; t++)
      for (int j = 0; j < K; j++) {
        int best = -1;
        for (int x = 0; x < E; x++) {
          int taken = 0;
          for (int m = 0; m < j; m++) taken |= ids[t * K + m] == x;
          if (!taken && (best < 0 || lg[t * E + x] < lg[t * E + best])) best = x;
        }
        ids[t * K + j] = best;
      }
    rt_ctx r = {lg, c, w, p, ids, T, E, K, norm, OPS_ROUTE_REPLAY};
    rt_loss(&r);
    CHECK_NEAR(ops_router_overlap_cpu(p, ids, T, E, K), 0.0, 0);
    ops_router_backward_cpu(dl, c, p, ids, T, E, K, norm);
    double nz = 0;
    for (int i = 0; i < T * E; i++) nz += fabs(dl[i]);
    CHECK(nz > 1e-3);
    CHECK(fd_check(norm ? "router R3 replay (norm)" : "router R3 replay", rt_loss, &r, lg, T * E,
                   dl, 1e-3) < 1e-3);
  }
}

/* ---------------------------------------------------------------- log-probs */

typedef struct {
  float *lg, *a, *b, *lp, *ent, *lse;
  int32_t *tg;
  int T, V;
  float temp;
} lp_ctx;

static double lp_loss(void *v) {
  lp_ctx *k = v;
  ops_logprob_forward_cpu(k->lp, k->ent, k->lse, k->lg, k->tg, k->T, k->V, k->temp, NULL);
  return dotc(k->a, k->lp, k->T) + dotc(k->b, k->ent, k->T);
}

TEST(ops_grad_logprob_and_entropy) {
  enum { T = 4, V = 11 };
  int32_t tg[T] = {3, -1, 10, 0};
  float lp[T], ent[T], lse[T];
  lp_ctx k = {randf(T * V, 71, -3, 3), randf(T, 72, -1, 1), randf(T, 73, -1, 1), lp, ent, lse, tg,
              T, V, 0.7f};
  lp_loss(&k);
  float d[T * V];
  rl_err e = {0};
  REQUIRE(ops_logprob_backward_cpu(d, k.a, k.b, k.lg, lse, tg, T, V, 0.7f, &e) == 0);
  CHECK(fd_check("logprob+entropy dlogits", lp_loss, &k, k.lg, T * V, d, 1e-3) < 1e-3);
  free(k.lg), free(k.a), free(k.b);
}

/* ---------------------------------------------------------------- attention */

/* Naive causal GQA over a packed batch in FP64: the full masked score matrix
 * per query head, explicit repeat of kv heads. o [T,Hq,D]; P [Hq,T,T] kept. */
static void naive_attention(double *o, double *P, const float *q, const float *k, const float *v,
                            const int32_t *seq_id, int T, int Hq, int Hkv, int D) {
  int rep = Hq / Hkv;
  double sc = 1 / sqrt((double)D);
  for (int h = 0; h < Hq; h++)
    for (int i = 0; i < T; i++) {
      double *row = P + ((size_t)h * T + i) * T, m = -INFINITY, s = 0;
      for (int j = 0; j < T; j++) {
        int allowed = j <= i && seq_id[j] == seq_id[i];
        double x = 0;
        for (int d = 0; d < D; d++) x += (double)q[(i * Hq + h) * D + d] * k[(j * Hkv + h / rep) * D + d];
        row[j] = allowed ? x * sc : -INFINITY;
        m = fmax(m, row[j]);
      }
      for (int j = 0; j < T; j++) s += row[j] = exp(row[j] - m);
      for (int j = 0; j < T; j++) row[j] /= s;
      for (int d = 0; d < D; d++) {
        double acc = 0;
        for (int j = 0; j < T; j++) acc += row[j] * v[(j * Hkv + h / rep) * D + d];
        o[(i * Hq + h) * D + d] = acc;
      }
    }
}

/* Its backward from the full matrices: dP = dO·Vᵀ, dS = P∘(dP − rowsum(P∘dP)). */
static void naive_attention_backward(double *dq, double *dk, double *dv, const double *P,
                                     const float *dout, const float *q, const float *k,
                                     const float *v, int T, int Hq, int Hkv, int D) {
  int rep = Hq / Hkv;
  double sc = 1 / sqrt((double)D);
  memset(dq, 0, sizeof(double) * T * Hq * D);
  memset(dk, 0, sizeof(double) * T * Hkv * D);
  memset(dv, 0, sizeof(double) * T * Hkv * D);
  double *dP = malloc(sizeof(double) * T);
  for (int h = 0; h < Hq; h++)
    for (int i = 0; i < T; i++) {
      const double *row = P + ((size_t)h * T + i) * T;
      double rs = 0;
      for (int j = 0; j < T; j++) {
        dP[j] = 0;
        for (int d = 0; d < D; d++) dP[j] += (double)dout[(i * Hq + h) * D + d] * v[(j * Hkv + h / rep) * D + d];
        rs += row[j] * dP[j];
      }
      for (int j = 0; j < T; j++) {
        double ds = row[j] * (dP[j] - rs);
        for (int d = 0; d < D; d++) {
          dq[(i * Hq + h) * D + d] += ds * sc * k[(j * Hkv + h / rep) * D + d];
          dk[(j * Hkv + h / rep) * D + d] += ds * sc * q[(i * Hq + h) * D + d];
          dv[(j * Hkv + h / rep) * D + d] += row[j] * dout[(i * Hq + h) * D + d];
        }
      }
    }
  free(dP);
}

/* max |a − b| over n, relative to max |b|. */
static double rel_diff(const float *a, const double *b, size_t n) {
  double m = 0, d = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(b[i])), d = fmax(d, fabs(a[i] - b[i]));
  return m > 0 ? d / m : d;
}

typedef struct {
  float *q, *k, *v, *c, *o, *lse;
  ops_seqs *sq;
  ops_attn_shape sh;
} at_ctx;

static double at_loss(void *p) {
  at_ctx *a = p;
  ops_attention_forward_cpu(a->o, NULL, a->lse, a->q, a->k, a->v, a->sq, a->sh, NULL);
  return dotc(a->c, a->o, (size_t)a->sh.T * a->sh.n_q_heads * a->sh.head_dim);
}

TEST(ops_attention_matches_naive_and_fd) {
  enum { T = 13, HQ = 4, HKV = 2, D = 8 };
  const int32_t off[4] = {0, 5, 6, 13}; /* lengths 5, 1, 7 */
  int32_t seq_id[T];
  for (int s = 0; s < 3; s++)
    for (int t = off[s]; t < off[s + 1]; t++) seq_id[t] = s;
  ops_seqs sq = {3, off};
  ops_attn_shape sh = {T, HQ, HKV, D};
  size_t nq = (size_t)T * HQ * D, nk = (size_t)T * HKV * D;
  at_ctx a = {randf(nq, 81, -1.5f, 1.5f), randf(nk, 82, -1.5f, 1.5f), randf(nk, 83, -1, 1),
              randf(nq, 84, -1, 1), malloc(4 * nq), malloc(4 * (size_t)T * HQ), &sq, sh};
  rl_err e = {0};
  REQUIRE(ops_attention_forward_cpu(a.o, NULL, a.lse, a.q, a.k, a.v, &sq, sh, &e) == 0);
  double *o = malloc(sizeof(double) * nq), *P = malloc(sizeof(double) * HQ * T * T);
  naive_attention(o, P, a.q, a.k, a.v, seq_id, T, HQ, HKV, D);
  double r = rel_diff(a.o, o, nq);
  printf("  attention forward vs naive: rel %.2e\n", r);
  CHECK(r < 1e-6);

  float *dq = malloc(4 * nq), *dk = malloc(4 * nk), *dv = malloc(4 * nk);
  REQUIRE(ops_attention_backward_cpu(dq, dk, dv, a.c, a.o, a.lse, a.q, a.k, a.v, &sq, sh, &e) == 0);
  double *nq_ = malloc(sizeof(double) * nq), *nk_ = malloc(sizeof(double) * nk), *nv_ = malloc(sizeof(double) * nk);
  naive_attention_backward(nq_, nk_, nv_, P, a.c, a.q, a.k, a.v, T, HQ, HKV, D);
  double rq = rel_diff(dq, nq_, nq), rk = rel_diff(dk, nk_, nk), rv = rel_diff(dv, nv_, nk);
  printf("  attention backward vs naive: dq %.2e dk %.2e dv %.2e\n", rq, rk, rv);
  CHECK(rq < 1e-5);
  CHECK(rk < 1e-5);
  CHECK(rv < 1e-5);

  CHECK(fd_check("attention dq", at_loss, &a, a.q, nq, dq, 1e-3) < 1e-3);
  CHECK(fd_check("attention dk", at_loss, &a, a.k, nk, dk, 1e-3) < 1e-3);
  CHECK(fd_check("attention dv", at_loss, &a, a.v, nk, dv, 1e-3) < 1e-3);
  /* The single-token sequence (token 5) attends to itself only: dv of its two
   * kv heads is the sum of its query heads' upstream gradients. */
  for (int d = 0; d < D; d++)
    CHECK_NEAR(dv[(5 * HKV + 1) * D + d], a.c[(5 * HQ + 2) * D + d] + a.c[(5 * HQ + 3) * D + d], 1e-6);
  free(a.q), free(a.k), free(a.v), free(a.c), free(a.o), free(a.lse), free(o), free(P);
  free(dq), free(dk), free(dv), free(nq_), free(nk_), free(nv_);
}

TEST(ops_attention_long_sequence_stable) {
  /* Large scores (|q·k|/sqrt(D) ~ 200) must not overflow: the max is subtracted. */
  enum { T = 64, D = 4 };
  float q[T * D], k[T * D], v[T * D], o[T * D], lse[T];
  for (int i = 0; i < T * D; i++) q[i] = 20, k[i] = (float)(i / D % 3) * 5, v[i] = (float)(i / D);
  const int32_t off[2] = {0, T};
  ops_seqs sq = {1, off};
  ops_attn_shape sh = {T, 1, 1, D};
  rl_err e = {0};
  REQUIRE(ops_attention_forward_cpu(o, NULL, lse, q, k, v, &sq, sh, &e) == 0);
  for (int i = 0; i < T * D; i++) CHECK(isfinite(o[i]));
  /* Row 5: keys with the top score (k = 10) are j = 2 and 5 → o = (2 + 5)/2 (others e^-200). */
  CHECK_NEAR(o[5 * D], 3.5, 1e-6);
}
