/* test_model_grad.c — the whole model's backward against central finite
 * differences on micro models (hidden 16, 2 layers; dense Qwen3 and
 * Qwen3-MoE with a dense layer 0 and 4 experts top-2), in the F32 mode
 * (FP32 weights, FP64 sums), plus determinism and accumulation checks.
 *
 * Loss: L = Σ_t c_t·logp_t + Σ_t d_t·entropy_t (c, d fixed pseudo-random),
 * so both upstream paths of the RL loss are exercised. For each parameter
 * tensor, the 3 elements with the largest |gradient| and 3 pseudo-random
 * ones are checked: fd = (L(w+h) − L(w−h)) / (2h), h = 1e-2·max(|w|, 0.1)
 * (the step actually representable in FP32), accepted when
 * |fd − g| ≤ 2e-3·max_tensor|g| + 2e-2·|g| + 1e-5. Perturbations that
 * change a routing decision are skipped (and counted; none may be most). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"

/* Deterministic pseudo-random floats in [lo, hi). */
static float frand(uint32_t *s, float lo, float hi) {
  *s = *s * 1664525u + 1013904223u;
  return lo + (hi - lo) * (float)((*s >> 8) * (1.0 / 16777216.0));
}

/* A micro config: dense qwen3 or qwen3_moe (layer 0 dense). */
static void micro_config(model_config *c, int moe, int64_t *mlp_only) {
  memset(c, 0, sizeof *c);
  c->kind = moe ? MODEL_KIND_QWEN3_MOE : MODEL_KIND_QWEN3;
  snprintf(c->model_type, sizeof c->model_type, "%s", moe ? "qwen3_moe" : "qwen3");
  snprintf(c->rope_type, sizeof c->rope_type, "default");
  snprintf(c->hidden_act, sizeof c->hidden_act, "silu");
  c->vocab_size = 32, c->hidden_size = 16, c->intermediate_size = 24, c->num_hidden_layers = 2;
  c->num_attention_heads = 4, c->num_key_value_heads = 2, c->head_dim = 8;
  c->max_position_embeddings = 64, c->rms_norm_eps = 1e-6, c->rope_theta = 10000.0;
  c->rope_factor = 1.0, c->tie_word_embeddings = !moe;
  if (moe) {
    c->num_experts = 4, c->num_experts_per_tok = 2, c->moe_intermediate_size = 8;
    c->decoder_sparse_step = 1, c->norm_topk_prob = 1;
    mlp_only[0] = 0;
    c->mlp_only_layers = mlp_only, c->n_mlp_only_layers = 1;
  }
}

/* A micro model with seeded weights: matrices U(±sqrt(3/fan_in)) (unit
 * variance outputs), norm weights U(0.5, 1.5). */
static model *micro_model(int moe, uint32_t seed) {
  model_config c;
  int64_t mo[1];
  micro_config(&c, moe, mo);
  model_load_opts lo = {1};
  model *m = NULL;
  rl_err e = {0};
  if (model_create(&c, &lo, &m, &e)) {
    harness_fail(__FILE__, __LINE__, "model_create: %s", e.msg);
    return NULL;
  }
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    float a = p->cols == 1 ? 0 : sqrtf(3.0f / (float)p->cols);
    for (int64_t j = 0; j < p->rows * p->cols; j++)
      p->w32[j] = p->cols == 1 ? frand(&seed, 0.5f, 1.5f) : frand(&seed, -a, a);
  }
  model_sync_bf16_from_f32(m);
  return m;
}

/* The micro batch: two sequences of 5 and 4 tokens. */
static const int32_t MB_TOK[9] = {3, 17, 9, 30, 1, 22, 5, 5, 12};
static const int32_t MB_OFF[3] = {0, 5, 9};

typedef struct fd_ctx {
  model *m;
  model_acts *a;
  int32_t targets[9];
  float c[9], d[9];
  int32_t ids[9 * 2];
  int moe_layer;
} fd_ctx;

/* L in FP64 from a fresh F32 forward; *ids_changed when routing moved. */
static double fd_loss(fd_ctx *x, int *ids_changed) {
  rl_err e = {0};
  model_batch b = {9, MB_TOK, {2, MB_OFF}};
  model_fwd_opts o = {.f32 = 1};
  float lp[9], ent[9];
  if (model_forward(x->m, &b, &o, x->a, &e) ||
      model_logprob_forward(x->a, x->targets, 1.0f, lp, ent, &e)) {
    harness_fail(__FILE__, __LINE__, "%s", e.msg);
    return NAN;
  }
  if (ids_changed && x->moe_layer >= 0)
    *ids_changed = memcmp(model_routed_ids(x->a, x->moe_layer), x->ids, sizeof x->ids) != 0;
  double s = 0;
  for (int t = 0; t < 9; t++) s += (double)x->c[t] * lp[t] + (double)x->d[t] * ent[t];
  return s;
}

/* Run the check on one micro model; returns the number of elements checked. */
static int fd_model(int moe) {
  fd_ctx x = {0};
  x.m = micro_model(moe, moe ? 777u : 4242u);
  if (!x.m) return 0;
  x.a = model_acts_new();
  x.moe_layer = moe ? 1 : -1;
  ops_seqs sq = {2, MB_OFF};
  model_targets_next(MB_TOK, &sq, 9, x.targets);
  uint32_t s = 99;
  for (int t = 0; t < 9; t++) x.c[t] = frand(&s, -1, 1), x.d[t] = frand(&s, -0.5f, 0.5f);
  fd_loss(&x, NULL);
  if (moe) memcpy(x.ids, model_routed_ids(x.a, 1), sizeof x.ids);
  rl_err e = {0};
  model_grads_init(x.m);
  if (model_backward_logprob(x.m, x.a, x.c, x.d, &e)) {
    harness_fail(__FILE__, __LINE__, "backward: %s", e.msg);
    return 0;
  }
  int checked = 0, skipped = 0, bad = 0;
  double worst = 0;
  const char *worst_name = "";
  for (int i = 0; i < x.m->n_params; i++) {
    model_param *p = &x.m->params[i];
    int64_t n = p->rows * p->cols, pick[6];
    double gmax = 0;
    for (int64_t j = 0; j < n; j++) gmax = fmax(gmax, fabs(p->g[j]));
    for (int q = 0; q < 3; q++) { /* the 3 largest |g| */
      int64_t best = -1;
      for (int64_t j = 0; j < n; j++) {
        int used = 0;
        for (int u = 0; u < q; u++) used |= pick[u] == j;
        if (!used && (best < 0 || fabs(p->g[j]) > fabs(p->g[best]))) best = j;
      }
      pick[q] = best;
    }
    for (int q = 3; q < 6; q++) pick[q] = (int64_t)(frand(&s, 0, 1) * (float)n) % n;
    for (int q = 0; q < 6; q++) {
      int64_t j = pick[q];
      float w0 = p->w32[j], h = 1e-2f * fmaxf(fabsf(w0), 0.1f);
      float wp = w0 + h, wm = w0 - h;
      int ch1 = 0, ch2 = 0;
      p->w32[j] = wp;
      double lp = fd_loss(&x, &ch1);
      p->w32[j] = wm;
      double lm = fd_loss(&x, &ch2);
      p->w32[j] = w0;
      if (ch1 || ch2) {
        skipped++;
        continue;
      }
      double fd = (lp - lm) / ((double)wp - (double)wm), g = p->g[j];
      double tol = 2e-3 * gmax + 2e-2 * fabs(g) + 1e-5, err = fabs(fd - g);
      checked++;
      if (err / (tol + 1e-30) > worst) worst = err / tol, worst_name = p->name;
      if (err > tol) {
        bad++;
        printf("  FD mismatch %s[%lld]: fd %.7g vs analytic %.7g (tol %.2g)\n", p->name,
               (long long)j, fd, g, tol);
      }
    }
  }
  printf("  %s micro model: %d elements checked in %d tensors, %d skipped (routing moved), worst "
         "err/tol %.3f (%s)\n",
         moe ? "moe" : "dense", checked, x.m->n_params, skipped, worst, worst_name);
  CHECK_EQ_I64(bad, 0);
  CHECK(skipped * 4 < checked);
  model_acts_free(x.a);
  model_free(x.m);
  return checked;
}

/* Hundreds of tiny forwards: one thread (OpenMP barriers on a loaded 2-core
 * machine cost more than the work). */
TEST(model_grad_fd_dense_micro) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1);
  CHECK(fd_model(0) >= 6 * 24);
  omp_set_num_threads(nt);
}

TEST(model_grad_fd_moe_micro) {
  int nt = omp_get_max_threads();
  omp_set_num_threads(1);
  CHECK(fd_model(1) >= 6 * 30);
  omp_set_num_threads(nt);
}

/* Flat copy of every gradient of m. */
static float *grads_flat(const model *m, size_t *n) {
  size_t tot = 0;
  for (int i = 0; i < m->n_params; i++) tot += (size_t)(m->params[i].rows * m->params[i].cols);
  float *g = malloc(tot * sizeof(float)), *o = g;
  for (int i = 0; i < m->n_params; i++) {
    size_t k = (size_t)(m->params[i].rows * m->params[i].cols);
    memcpy(o, m->params[i].g, k * sizeof(float));
    o += k;
  }
  *n = tot;
  return g;
}

/* POLICY mode: gradients accumulate over micro-batches (two backwards ≈ 2×
 * one: the FP32 accumulation rounds differently, so within 1e-6 relative)
 * and the result does not depend on the thread count (bitwise). */
TEST(model_grad_accumulates_and_is_thread_count_invariant) {
  for (int moe = 0; moe < 2; moe++) {
    float *one = NULL, *two[2] = {NULL, NULL};
    size_t n = 0;
    for (int run = 0; run < 2; run++) {
      model *m = micro_model(moe, 31u);
      REQUIRE(m);
      rl_err e = {0};
      quant_policy p;
      quant_policy_init(&p, QFMT_BF16, QFMT_BF16);
      REQUIRE(model_quantize(m, &p, &e) == 0);
      model_acts *a = model_acts_new();
      model_batch b = {9, MB_TOK, {2, MB_OFF}};
      int32_t tg[9];
      model_targets_next(MB_TOK, &b.seqs, 9, tg);
      float lp[9], dl[9];
      int nthr = omp_get_max_threads();
      omp_set_num_threads(run ? 1 : (nthr > 1 ? nthr : 2));
      model_grads_init(m);
      for (int rep = 0; rep < 2; rep++) {
        REQUIRE(model_forward(m, &b, NULL, a, &e) == 0);
        REQUIRE(model_logprob_forward(a, tg, 1.0f, lp, NULL, &e) == 0);
        model_loss_ce(lp, tg, 9, dl);
        REQUIRE(model_backward_logprob(m, a, dl, NULL, &e) == 0);
        if (rep == 0 && run == 0) one = grads_flat(m, &n);
      }
      omp_set_num_threads(nthr);
      two[run] = grads_flat(m, &n);
      model_acts_free(a);
      model_free(m);
    }
    int off2x = 0, thr = 0;
    double gsum = 0;
    for (size_t i = 0; i < n; i++) {
      off2x += fabs(two[0][i] - 2.0 * one[i]) > 1e-6 * fabs(two[0][i]) + 1e-9;
      thr += memcmp(&two[0][i], &two[1][i], 4) != 0;
      gsum += fabs(one[i]);
    }
    printf("  %s: %zu gradients, Σ|g| %.6g; %d not ≈ 2× after two backwards; %d differ between "
           "1 and all threads\n", moe ? "moe" : "dense", n, gsum, off2x, thr);
    CHECK_EQ_I64(off2x, 0);
    CHECK_EQ_I64(thr, 0);
    CHECK(gsum > 1);
    free(one), free(two[0]), free(two[1]);
  }
}
