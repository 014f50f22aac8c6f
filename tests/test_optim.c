/* test_optim.c — AdamW (kernels/optim.h) on the CPU: a two-step trajectory
 * against the same formula evaluated in FP64 (tolerance: 2 FP32 ulps of the
 * parameter, 1e-6 relative for the moments), hand values of the first step,
 * decoupled weight decay, bias correction, warm-up, global-norm clipping, the
 * fixed-order norm, the BF16 main-params variant losing sub-ulp updates, and
 * NaN/Inf gradients stopping the step with nothing changed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "harness.h"
#include "kernels/formats.h"
#include "kernels/optim.h"

/* A host tensor with BF16 weights w0 and its optimizer state. */
static optim_tensor tensor_make(const char *name, const float *w0, int64_t n, float *grad, int main_params) {
  optim_tensor t = {.name = name, .n = n, .grad = grad};
  t.w = malloc((size_t)(n ? n : 1) * sizeof(uint16_t));
  for (int64_t i = 0; i < n; i++) t.w[i] = fmt_bf16_from_f32(w0[i]);
  optim_tensor_alloc_cpu(&t, main_params);
  return t;
}

static void tensor_free(optim_tensor *t) {
  free(t->w);
  optim_tensor_free_cpu(t);
}

/* One AdamW step of RL.md in FP64 (the reference of the trajectory test). */
static void ref_step(double *p, double *m, double *v, double g, double lr, double wd, int t) {
  *p *= 1 - lr * wd;
  *m = 0.9 * *m + 0.1 * g;
  *v = 0.999 * *v + 0.001 * g * g;
  *p -= lr / (1 - pow(0.9, t)) * *m / (sqrt(*v) / sqrt(1 - pow(0.999, t)) + 1e-8);
}

/* Distance in FP32 ulps of x (at the reference's magnitude). */
static double ulps(float x, double ref) {
  double u = nextafterf((float)fabs(ref), INFINITY) - (float)fabs(ref);
  return fabs((double)x - ref) / u;
}

TEST(optim_adamw_two_step_trajectory) {
  float w0[4] = {1.0f, -0.5f, 0.25f, 3.0f};
  float g1[4] = {0.1f, -0.2f, 0.05f, 0}, g2[4] = {0.3f, 0.1f, -0.4f, 0}, grad[4];
  optim_cfg c;
  optim_cfg_default(&c);
  c.lr = 1e-3, c.grad_clip = 0;
  optim_tensor t = tensor_make("w", w0, 4, grad, OPTIM_MAIN_FP32);
  double p[4], m[4] = {0}, v[4] = {0};
  for (int i = 0; i < 4; i++) p[i] = w0[i];
  rl_err e = {0};
  optim_info info;
  for (int step = 1; step <= 2; step++) {
    memcpy(grad, step == 1 ? g1 : g2, sizeof grad);
    REQUIRE(optim_step_cpu(&c, &t, 1, step, &info, &e) == 0);
    CHECK_NEAR(info.lr, 1e-3, 0);
    CHECK_NEAR(info.clip_coef, 1.0, 0);
    for (int i = 0; i < 4; i++) {
      ref_step(&p[i], &m[i], &v[i], grad[i], 1e-3, 0.01, step);
      CHECK_MSG(ulps(t.main[i], p[i]) <= 2, "step %d elem %d: main %.9g vs %.9g (%.2f ulp)", step, i,
                (double)t.main[i], p[i], ulps(t.main[i], p[i]));
      CHECK_NEAR(t.m[i], m[i], 1e-6 * fabs(m[i]));
      CHECK_NEAR(t.v[i], v[i], 1e-6 * fabs(v[i]));
      CHECK_EQ_U64(t.w[i], fmt_bf16_from_f32(t.main[i]));
    }
    if (step == 1) {
      /* by hand: m̂ = g, sqrt(v̂) = |g| → p = p0(1 − 1e-5) − 1e-3·g/(|g| + 1e-8) */
      CHECK_NEAR(t.main[0], 0.99899000010, 1.2e-7);
      CHECK_NEAR(t.main[1], -0.5 * (1 - 1e-5) + 1e-3 * (0.2 / (0.2 + 1e-8)), 6e-8);
      CHECK_NEAR(t.main[3], 3.0f * (float)(1 - 1e-5), 0); /* g = 0: decay only */
    }
  }
  tensor_free(&t);
}

TEST(optim_weight_decay_and_bias_correction) {
  float w0[2] = {2.0f, 2.0f}, grad[2] = {0, 0};
  optim_cfg c;
  optim_cfg_default(&c);
  c.lr = 0.1, c.weight_decay = 0.1, c.grad_clip = 0;
  optim_tensor t[2];
  t[0] = tensor_make("decayed", w0, 2, grad, OPTIM_MAIN_FP32);
  t[1] = tensor_make("norm", w0, 2, grad, OPTIM_MAIN_FP32);
  t[1].no_decay = 1;
  rl_err e = {0};
  REQUIRE(optim_step_cpu(&c, t, 2, 1, NULL, &e) == 0);
  CHECK(t[0].main[0] == 2.0f * (float)(1 - 0.1 * 0.1)); /* 2·0.99, decoupled from the gradient */
  CHECK(t[1].main[0] == 2.0f);
  tensor_free(&t[0]);
  tensor_free(&t[1]);
  /* Bias correction: the first step moves by lr whatever |g| (uncorrected, it
   * would be lr·0.1|g|/sqrt(0.001)|g| = 3.16·lr). */
  float w1[1] = {1.0f}, g[1] = {0.5f};
  c.lr = 1e-3, c.weight_decay = 0;
  optim_tensor u = tensor_make("u", w1, 1, g, OPTIM_MAIN_FP32);
  REQUIRE(optim_step_cpu(&c, &u, 1, 1, NULL, &e) == 0);
  CHECK_NEAR(u.main[0], 1.0 - 1e-3, 1.2e-7);
  tensor_free(&u);
  /* At step 3 from zero moments: m̂ = 0.1g/(1−0.9³), v̂ = 0.001g²/(1−0.999³) */
  u = tensor_make("u", w1, 1, g, OPTIM_MAIN_FP32);
  REQUIRE(optim_step_cpu(&c, &u, 1, 3, NULL, &e) == 0);
  double mh = 0.05 / (1 - 0.729), vh = 0.00025 / (1 - pow(0.999, 3));
  CHECK_NEAR(u.main[0], 1.0 - 1e-3 * mh / (sqrt(vh) + 1e-8), 1.2e-7);
  tensor_free(&u);
}

TEST(optim_warmup_schedule) {
  optim_cfg c;
  optim_cfg_default(&c);
  c.lr = 1e-3, c.warmup_steps = 4;
  CHECK_NEAR(optim_lr_at(&c, 1), 2.5e-4, 1e-18);
  CHECK_NEAR(optim_lr_at(&c, 2), 5e-4, 1e-18);
  CHECK_NEAR(optim_lr_at(&c, 3), 7.5e-4, 1e-18);
  CHECK_NEAR(optim_lr_at(&c, 4), 1e-3, 0);
  CHECK_NEAR(optim_lr_at(&c, 1000), 1e-3, 0);
  c.warmup_steps = 0;
  CHECK_NEAR(optim_lr_at(&c, 1), 1e-3, 0);
  /* the step uses it: step 1 of a 4-step warm-up moves by lr/4 */
  c.warmup_steps = 4, c.weight_decay = 0;
  float w1[1] = {1.0f}, g[1] = {0.5f};
  optim_tensor u = tensor_make("u", w1, 1, g, OPTIM_MAIN_FP32);
  optim_info info;
  rl_err e = {0};
  REQUIRE(optim_step_cpu(&c, &u, 1, 1, &info, &e) == 0);
  CHECK_NEAR(info.lr, 2.5e-4, 1e-18);
  CHECK_NEAR(u.main[0], 1.0 - 2.5e-4, 6e-8);
  tensor_free(&u);
  CHECK_EQ_I64(optim_step_cpu(&c, &u, 1, 0, &info, &e), RL_EXIT_USAGE); /* steps are 1-based */
  CHECK_CONTAINS(e.msg, "step");
}

TEST(optim_global_norm_clipping) {
  float wa[2] = {1, 1}, ga[2] = {3, 0}, gb[1] = {4};
  optim_cfg c;
  optim_cfg_default(&c); /* grad_clip 1.0 */
  c.lr = 1e-3;
  optim_tensor t[2];
  t[0] = tensor_make("a", wa, 2, ga, OPTIM_MAIN_FP32);
  t[1] = tensor_make("b", wa, 1, gb, OPTIM_MAIN_FP32);
  optim_info info;
  rl_err e = {0};
  REQUIRE(optim_step_cpu(&c, t, 2, 1, &info, &e) == 0);
  CHECK(info.grad_norm == 5.0); /* sqrt(9 + 16) across both tensors */
  CHECK_NEAR(info.clip_coef, 1.0 / (5.0 + 1e-6), 1e-15);
  CHECK_NEAR(t[0].m[0], 0.1 * 3 / 5.000001, 1e-8); /* moments see the clipped gradient */
  CHECK_NEAR(t[1].m[0], 0.1 * 4 / 5.000001, 1e-8);
  CHECK(ga[0] == 3 && gb[0] == 4); /* the gradients are only read */
  c.grad_clip = 10; /* not exceeded: coefficient exactly 1 */
  REQUIRE(optim_step_cpu(&c, t, 2, 2, &info, &e) == 0);
  CHECK(info.clip_coef == 1.0);
  tensor_free(&t[0]);
  tensor_free(&t[1]);
}

/* The bits of a double. */
static uint64_t d_bits(double d) {
  uint64_t u;
  memcpy(&u, &d, 8);
  return u;
}

TEST(optim_norm_fixed_order_deterministic) {
  enum { N = 3 * OPTIM_NORM_BLOCK + 1234 };
  float *g = malloc(N * sizeof(float));
  uint32_t s = 7;
  double naive = 0;
  for (int i = 0; i < N; i++) {
    s = s * 1664525u + 1013904223u;
    g[i] = ldexpf((float)((int32_t)s >> 8), -20 + (int)(s % 17)); /* wide magnitudes */
    naive += (double)g[i] * g[i];
  }
  optim_tensor t = {.name = "g", .n = N, .grad = g};
  double n1 = 0, n2 = 0, byblock = 0;
  rl_err e = {0};
#ifdef _OPENMP
  int th = omp_get_max_threads();
  omp_set_num_threads(1);
#endif
  REQUIRE(optim_grad_norm_cpu(&t, 1, &n1, &e) == 0);
#ifdef _OPENMP
  omp_set_num_threads(3);
#endif
  REQUIRE(optim_grad_norm_cpu(&t, 1, &n2, &e) == 0);
#ifdef _OPENMP
  omp_set_num_threads(th);
#endif
  for (int b = 0; b * OPTIM_NORM_BLOCK < N; b++) {
    int len = N - b * OPTIM_NORM_BLOCK < OPTIM_NORM_BLOCK ? N - b * OPTIM_NORM_BLOCK : OPTIM_NORM_BLOCK;
    byblock += optim_norm_block_sq(g + b * OPTIM_NORM_BLOCK, len);
  }
  CHECK_EQ_U64(d_bits(n1), d_bits(n2)); /* bit-identical whatever the threads */
  CHECK_EQ_U64(d_bits(n1), d_bits(sqrt(byblock)));
  CHECK_NEAR(n1, sqrt(naive), 1e-13 * sqrt(naive));
  /* lanes: one block of 4096 ones → exactly 4096 */
  for (int i = 0; i < OPTIM_NORM_BLOCK; i++) g[i] = 1;
  CHECK(optim_norm_block_sq(g, OPTIM_NORM_BLOCK) == 4096.0);
  free(g);
}

TEST(optim_bf16_main_params_drop_sub_ulp_updates) {
  /* Adam moves each weight by ~lr = 1e-4 per step, far below half a BF16 ulp at
   * 1.0 (2^-9 ≈ 0.00195). With FP32 main params the updates accumulate (50 steps
   * ≈ 0.995 → BF16 0.99609375); a BF16 main copy rounds each back to 1.0. */
  float w0[1] = {1.0f}, g[1] = {1e-3f};
  optim_cfg c;
  optim_cfg_default(&c);
  c.lr = 1e-4, c.weight_decay = 0, c.grad_clip = 0;
  optim_tensor f = tensor_make("fp32", w0, 1, g, OPTIM_MAIN_FP32);
  optim_tensor b = tensor_make("bf16", w0, 1, g, OPTIM_MAIN_BF16);
  CHECK(b.main == NULL);
  rl_err e = {0};
  optim_cfg cb = c;
  cb.main_params = OPTIM_MAIN_BF16;
  for (int step = 1; step <= 50; step++) {
    REQUIRE(optim_step_cpu(&c, &f, 1, step, NULL, &e) == 0);
    REQUIRE(optim_step_cpu(&cb, &b, 1, step, NULL, &e) == 0);
  }
  CHECK_NEAR(f.main[0], 1.0 - 50 * 1e-4, 1e-5);
  CHECK_EQ_U64(f.w[0], 0x3F7F); /* 0.99609375 */
  CHECK_EQ_U64(b.w[0], 0x3F80); /* still 1.0: every update lost */
  CHECK(b.m[0] > 0 && b.v[0] > 0); /* though its moments did move */
  tensor_free(&f);
  tensor_free(&b);
}

TEST(optim_nonfinite_gradient_changes_nothing) {
  float w0[8] = {1, 2, 3, 4, 5, 6, 7, 8}, ga[8] = {1, 1, 1, 1, 1, 1, 1, 1}, gb[8] = {0};
  gb[2] = NAN, gb[5] = INFINITY;
  optim_cfg c;
  optim_cfg_default(&c);
  c.lr = 1e-2;
  optim_tensor t[2];
  t[0] = tensor_make("blk.0.w", w0, 8, ga, OPTIM_MAIN_FP32);
  t[1] = tensor_make("blk.1.w", w0, 8, gb, OPTIM_MAIN_FP32);
  /* snapshot every buffer of both tensors */
  uint16_t w_before[2][8];
  float main_before[2][8], m_before[2][8], v_before[2][8];
  for (int k = 0; k < 2; k++) {
    t[k].m[0] = 0.5f, t[k].v[0] = 0.25f; /* non-trivial moments */
    memcpy(w_before[k], t[k].w, sizeof w_before[k]);
    memcpy(main_before[k], t[k].main, sizeof main_before[k]);
    memcpy(m_before[k], t[k].m, sizeof m_before[k]);
    memcpy(v_before[k], t[k].v, sizeof v_before[k]);
  }
  rl_err e = {0};
  CHECK_EQ_I64(optim_step_cpu(&c, t, 2, 7, NULL, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "'blk.1.w'");
  CHECK_CONTAINS(e.msg, "2 non-finite");
  CHECK_CONTAINS(e.msg, "index 2");
  CHECK_CONTAINS(e.msg, "step 7");
  for (int k = 0; k < 2; k++) {
    CHECK(memcmp(w_before[k], t[k].w, sizeof w_before[k]) == 0);
    CHECK(memcmp(main_before[k], t[k].main, sizeof main_before[k]) == 0);
    CHECK(memcmp(m_before[k], t[k].m, sizeof m_before[k]) == 0);
    CHECK(memcmp(v_before[k], t[k].v, sizeof v_before[k]) == 0);
  }
  /* Inf alone is caught too; finite gradients then step normally */
  gb[2] = 0;
  CHECK_EQ_I64(optim_step_cpu(&c, t, 2, 7, NULL, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "1 non-finite value(s) (first: inf at index 5");
  gb[5] = 0;
  CHECK_EQ_I64(optim_step_cpu(&c, t, 2, 7, NULL, &e), 0);
  CHECK(t[0].main[0] != main_before[0][0]);
  tensor_free(&t[0]);
  tensor_free(&t[1]);
}

#if !RLRUN_CUDA
/* A CPU-only build says so (the CUDA twin is exercised by tests/gpu/optim_gpu_test.c). */
TEST(optim_cuda_twin_absent) {
  optim_cfg c;
  optim_cfg_default(&c);
  rl_err e = {0};
  CHECK_EQ_I64(optim_step_cuda(&c, NULL, 0, 1, NULL, NULL, &e), RL_EXIT_HARDWARE);
  CHECK_CONTAINS(e.msg, "without CUDA");
}
#endif
