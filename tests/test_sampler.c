/* test_sampler.c — the sampler's contract (stages/sampler.h): frequencies
 * against the softmax (chi-square), mask boundaries, log-probs under
 * temperature, greedy ties, batch/order invariance, errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/formats.h"
#include "stages/sampler.h"
#include "stages/sampler_math.h"

/* Chi-square critical values at the 0.999 quantile (dof 7, 9): a correct
 * sampler fails one such check in 1000 seeds; the seeds are fixed, so the
 * outcome is deterministic. */
#define CHI2_999_DOF7 24.322
#define CHI2_999_DOF9 27.877

/* log_softmax(l / T)[i] in long double with libm, independent of sampler_math.h. */
static double ref_logp(const float *l, int V, double T, int i) {
  long double m = -INFINITY, s = 0;
  for (int j = 0; j < V; j++) m = fmaxl(m, (long double)l[j] / T);
  for (int j = 0; j < V; j++) s += expl((long double)l[j] / T - m);
  return (double)((long double)l[i] / T - m - logl(s));
}

/* n rows of the same logits and keys (seed, 0, 0, 0, position = row). */
static int sample_many(const sampler_params *p, const float *l, int V, int n, uint64_t seed, int *counts) {
  float *rows = malloc(sizeof(float) * (size_t)V * (size_t)n);
  sampler_key *k = calloc((size_t)n, sizeof *k);
  sampler_out *o = calloc((size_t)n, sizeof *o);
  for (int r = 0; r < n; r++) {
    memcpy(rows + (size_t)r * V, l, sizeof(float) * (size_t)V);
    k[r] = (sampler_key){.seed = seed, .position = (uint32_t)r};
  }
  rl_err e;
  int rc = sampler_sample_rows(p, rows, n, V, V, k, o, &e);
  for (int r = 0; !rc && r < n; r++) counts[o[r].token]++;
  free(rows), free(k), free(o);
  return rc;
}

/* Pearson's statistic of counts against probabilities prob[] over bins. */
static double chi2(const int *counts, const double *prob, int bins, int n) {
  double x = 0;
  for (int b = 0; b < bins; b++) {
    double want = prob[b] * n;
    x += (counts[b] - want) * (counts[b] - want) / want;
  }
  return x;
}

TEST(sampler_chi_square_small_vocab) {
  const float l[8] = {1.0f, 0.5f, -0.25f, 2.0f, 0.0f, -1.0f, 1.5f, 0.75f};
  const double temps[2] = {1.0, 0.7};
  for (int ti = 0; ti < 2; ti++) {
    sampler_params p = sampler_default_params();
    p.temperature = temps[ti];
    int counts[8] = {0}, n = 20000;
    REQUIRE(sample_many(&p, l, 8, n, 1234 + (uint64_t)ti, counts) == 0);
    double prob[8], wrong[8];
    for (int i = 0; i < 8; i++) prob[i] = exp(ref_logp(l, 8, temps[ti], i));
    for (int i = 0; i < 8; i++) wrong[i] = exp(ref_logp(l, 8, temps[ti] * 1.1, i));
    double x = chi2(counts, prob, 8, n), xw = chi2(counts, wrong, 8, n);
    CHECK_MSG(x < CHI2_999_DOF7, "T=%g: chi2 %.2f >= %.3f (7 dof, p=0.001)", temps[ti], x, CHI2_999_DOF7);
    /* the same statistic rejects a slightly wrong temperature: the test has power */
    CHECK_MSG(xw > CHI2_999_DOF7, "T=%g: chi2 against T*1.1 only %.2f", temps[ti], xw);
  }
}

TEST(sampler_chi_square_masked_distribution) {
  /* top-k 4 of 8: frequencies follow the renormalised softmax of the 4 kept */
  const float l[8] = {1.0f, 0.5f, -0.25f, 2.0f, 0.0f, -1.0f, 1.5f, 0.75f};
  const int kept[4] = {3, 6, 0, 7};
  sampler_params p = sampler_default_params();
  p.top_k = 4;
  int counts[8] = {0}, n = 12000;
  REQUIRE(sample_many(&p, l, 8, n, 77, counts) == 0);
  double z = 0, prob[4];
  int c4[4];
  for (int i = 0; i < 4; i++) z += exp(l[kept[i]]);
  for (int i = 0; i < 4; i++) prob[i] = exp(l[kept[i]]) / z, c4[i] = counts[kept[i]];
  CHECK_EQ_I64(counts[1] + counts[2] + counts[4] + counts[5], 0);
  double x = chi2(c4, prob, 4, n);
  CHECK_MSG(x < 16.266 /* 0.999, 3 dof */, "top-k chi2 %.2f", x);
}

TEST(sampler_chi_square_large_vocab_bins) {
  /* 2500 tokens (3 tiles, the last partial): ten bins of 250 ids */
  enum { V = 2500, N = 5000 };
  static float l[V];
  uint64_t s = 99;
  for (int i = 0; i < V; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    l[i] = (float)((double)(s >> 11) * 0x1.0p-53 * 6.0 - 3.0) + (float)(i / 250) * 0.2f;
  }
  sampler_params p = sampler_default_params();
  int *counts = calloc(V, sizeof(int)), bins[10] = {0};
  REQUIRE(sample_many(&p, l, V, N, 5, counts) == 0);
  double prob[10] = {0};
  for (int i = 0; i < V; i++) prob[i / 250] += exp(ref_logp(l, V, 1.0, i)), bins[i / 250] += counts[i];
  double x = chi2(bins, prob, 10, N);
  CHECK_MSG(x < CHI2_999_DOF9, "binned chi2 %.2f >= %.3f", x, CHI2_999_DOF9);
  free(counts);
}

/* One draw with key position = pos. */
static sampler_out one(const sampler_params *p, const float *l, int V, uint32_t pos) {
  sampler_key k = {.seed = 42, .iteration = 3, .prompt = 1, .sample = 2, .position = pos};
  sampler_out o;
  rl_err e;
  memset(&o, 0, sizeof o);
  if (sampler_sample(p, l, V, &k, &o, &e)) o.token = -100;
  return o;
}

TEST(sampler_top_k_boundaries) {
  const float l[5] = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
  sampler_params p = sampler_default_params();
  p.top_k = 1; /* argmax, ties to the lowest id */
  for (uint32_t i = 0; i < 50; i++) CHECK_EQ_I64(one(&p, l, 5, i).token, 1);
  CHECK_EQ_I64(one(&p, l, 5, 0).n_kept, 1);
  p.top_k = 2; /* the two lowest ids of the tied maximum */
  int seen[5] = {0};
  for (uint32_t i = 0; i < 200; i++) seen[one(&p, l, 5, i).token]++;
  CHECK(seen[1] > 50 && seen[2] > 50);
  CHECK_EQ_I64(seen[0] + seen[3] + seen[4], 0);
  CHECK_EQ_I64(one(&p, l, 5, 0).n_kept, 2);
  p.top_k = 4;
  CHECK_EQ_I64(one(&p, l, 5, 0).n_kept, 4);
  /* k = vocab and k > vocab are the same as no mask, draw for draw */
  sampler_params off = sampler_default_params();
  for (int64_t k = 5; k <= 6; k++) {
    p.top_k = k;
    for (uint32_t i = 0; i < 100; i++) {
      sampler_out a = one(&p, l, 5, i), b = one(&off, l, 5, i);
      CHECK_EQ_I64(a.token, b.token);
      CHECK_EQ_I64(a.n_kept, 5);
    }
  }
}

TEST(sampler_top_p_boundaries_exact) {
  /* four equal logits: cumulative sums 0.25, 0.5, 0.75, 1 are exact */
  const float l[4] = {0, 0, 0, 0};
  sampler_params p = sampler_default_params();
  const double ps[6] = {0.25, 0.25 + 1e-12, 0.5, 0.5 + 1e-12, 0.75, 0.999};
  const int want[6] = {1, 2, 2, 3, 3, 4};
  for (int c = 0; c < 6; c++) {
    p.top_p = ps[c];
    int seen[4] = {0};
    for (uint32_t i = 0; i < 100; i++) seen[one(&p, l, 4, i).token]++;
    CHECK_EQ_I64(one(&p, l, 4, 0).n_kept, want[c]);
    for (int t = 0; t < 4; t++) CHECK_MSG(t < want[c] ? seen[t] > 0 : seen[t] == 0, "p=%.13g token %d seen %d", ps[c], t, seen[t]);
  }
  /* top-k then top-p over the k survivors: of 4 kept equal tokens, p = 0.5 keeps 2 */
  const float l6[6] = {0, 0, 0, 0, 0, 0};
  p.top_k = 4, p.top_p = 0.5;
  CHECK_EQ_I64(one(&p, l6, 6, 0).n_kept, 2);
}

TEST(sampler_top_p_boundaries_distinct) {
  const float l[5] = {-1.0f, 2.0f, 0.0f, 1.0f, -0.5f}; /* ranks: 1, 3, 2, 4, 0 */
  const int rank[5] = {1, 3, 2, 4, 0};
  double cum = 0;
  sampler_params p = sampler_default_params();
  for (int r = 0; r < 4; r++) {
    cum += exp(ref_logp(l, 5, 1.0, rank[r]));
    p.top_p = cum - 1e-9;
    CHECK_EQ_I64(one(&p, l, 5, 0).n_kept, r + 1);
    p.top_p = cum + 1e-9;
    CHECK_EQ_I64(one(&p, l, 5, 0).n_kept, r + 2);
  }
  /* the kept set is the top ranks: with p just past the first two, only 1 and 3 come out */
  p.top_p = exp(ref_logp(l, 5, 1.0, 1)) + exp(ref_logp(l, 5, 1.0, 3)) - 1e-9;
  int seen[5] = {0};
  for (uint32_t i = 0; i < 300; i++) seen[one(&p, l, 5, i).token]++;
  CHECK(seen[1] > 0 && seen[3] > 0);
  CHECK_EQ_I64(seen[0] + seen[2] + seen[4], 0);
}

TEST(sampler_min_p) {
  const float l[4] = {0.0f, -0.5f, -1.0f, -2.0f};
  sampler_params p = sampler_default_params();
  p.min_p = exp(-1.0) + 1e-9;
  CHECK_EQ_I64(one(&p, l, 4, 0).n_kept, 2);
  p.min_p = exp(-1.0) - 1e-9;
  CHECK_EQ_I64(one(&p, l, 4, 0).n_kept, 3);
  p.min_p = 1.0;
  CHECK_EQ_I64(one(&p, l, 4, 7).token, 0);
}

TEST(sampler_temperature_logp_and_entropy) {
  enum { V = 50 };
  float l[V];
  for (int i = 0; i < V; i++) l[i] = (float)sin(i * 1.7) * 4.0f;
  const double temps[3] = {1.0, 0.7, 2.5};
  for (int t = 0; t < 3; t++) {
    sampler_params p = sampler_default_params();
    p.temperature = temps[t];
    for (uint32_t i = 0; i < 20; i++) {
      sampler_out o = one(&p, l, V, i);
      REQUIRE(o.token >= 0);
      CHECK_NEAR(o.logp, ref_logp(l, V, temps[t], o.token), 1e-12);
      CHECK_NEAR(o.logp_kept, o.logp, 1e-12); /* nothing masked */
    }
    double h = 0;
    for (int i = 0; i < V; i++) h -= exp(ref_logp(l, V, temps[t], i)) * ref_logp(l, V, temps[t], i);
    CHECK_NEAR(one(&p, l, V, 0).entropy, h, 1e-12);
  }
  /* with top-k: logp stays the full distribution's, logp_kept the renormalised one's */
  sampler_params p = sampler_default_params();
  p.temperature = 0.7, p.top_k = 3;
  sampler_out o = one(&p, l, V, 1);
  CHECK_NEAR(o.logp, ref_logp(l, V, 0.7, o.token), 1e-12);
  CHECK(o.logp_kept > o.logp + 1e-3);
  CHECK(o.logp_kept <= 0);
}

TEST(sampler_greedy_ties_and_logp) {
  const float l[4] = {1.0f, 5.0f, 5.0f, 2.0f};
  sampler_params p = sampler_default_params();
  p.temperature = 0; /* greedy: argmax, lowest id, logp at T = 1 */
  sampler_out o = one(&p, l, 4, 0);
  CHECK_EQ_I64(o.token, 1);
  CHECK_EQ_I64(o.n_kept, 1);
  CHECK_NEAR(o.logp, ref_logp(l, 4, 1.0, 1), 1e-14);
  CHECK_NEAR(o.u, 0.0, 0);
  p.temperature = 0.5, p.greedy = 1; /* greedy flag: logp at the given T */
  o = one(&p, l, 4, 9);
  CHECK_EQ_I64(o.token, 1);
  CHECK_NEAR(o.logp, ref_logp(l, 4, 0.5, 1), 1e-14);
  /* -0 and +0 are one logit: the lower id wins */
  const float z[3] = {-0.0f, 0.0f, -1.0f};
  p.temperature = 0;
  CHECK_EQ_I64(one(&p, z, 3, 0).token, 0);
}

/* Logits of row r of a batch (V = 300). */
static void batch_logits(float *l, int r) {
  for (int i = 0; i < 300; i++) l[i] = (float)(sin(r * 13.1 + i * 0.37) * 3.0 + cos(i * r * 0.01));
}

TEST(sampler_batch_size_and_order_invariance) {
  enum { N = 64, V = 300 };
  float *l = malloc(sizeof(float) * N * V);
  sampler_key k[N];
  sampler_out ref[N], o[N];
  sampler_params p = sampler_default_params();
  p.temperature = 0.9, p.top_p = 0.95, p.top_k = 100;
  for (int r = 0; r < N; r++) { /* 8 prompts × 8 samples, all at position 5 of iteration 2 */
    batch_logits(l + r * V, r);
    k[r] = (sampler_key){.seed = 7, .iteration = 2, .prompt = (uint32_t)(r / 8), .sample = (uint32_t)(r % 8), .position = 5};
  }
  rl_err e;
  /* batch size 1, in reverse order */
  for (int r = N - 1; r >= 0; r--) REQUIRE(sampler_sample_rows(&p, l + r * V, 1, V, V, &k[r], &ref[r], &e) == 0);
  /* batch size 64 */
  REQUIRE(sampler_sample_rows(&p, l, N, V, V, k, o, &e) == 0);
  CHECK(memcmp(o, ref, sizeof o) == 0);
  /* batches of 7 over a permutation (r * 29 mod 64), with a padded stride */
  float *perm = malloc(sizeof(float) * 7 * (V + 3));
  sampler_key pk[7];
  sampler_out po[7];
  int mismatch = 0, distinct = 0;
  for (int b = 0; b < N; b += 7) {
    int n = N - b < 7 ? N - b : 7;
    for (int j = 0; j < n; j++) {
      int r = ((b + j) * 29) % N;
      memcpy(perm + j * (V + 3), l + r * V, sizeof(float) * V);
      pk[j] = k[r];
    }
    REQUIRE(sampler_sample_rows(&p, perm, n, V, V + 3, pk, po, &e) == 0);
    for (int j = 0; j < n; j++) mismatch += memcmp(&po[j], &ref[((b + j) * 29) % N], sizeof po[j]) != 0;
  }
  for (int r = 1; r < N; r++) distinct += ref[r].token != ref[0].token;
  CHECK_EQ_I64(mismatch, 0);
  CHECK(distinct > 10); /* the rows really differ */
  free(l), free(perm);
}

TEST(sampler_key_fields_all_matter) {
  sampler_key base = {.seed = 1, .iteration = 2, .prompt = 3, .sample = 4, .position = 5};
  double u0 = sampler_uniform(&base);
  CHECK(u0 >= 0 && u0 < 1);
  sampler_key v[5] = {base, base, base, base, base};
  v[0].seed ^= 1ull << 40, v[1].iteration++, v[2].prompt++, v[3].sample++, v[4].position++;
  for (int i = 0; i < 5; i++) CHECK(sampler_uniform(&v[i]) != u0);
  /* the documented formula */
  uint32_t ctr[4] = {5, 4, 3, 2}, key[2] = {1, 0 ^ SMP_KEY_TAG}, x[4];
  qf_philox4x32(ctr, key, x);
  CHECK_EQ_U64((uint64_t)(u0 * 0x1.0p53), (((uint64_t)x[0] | (uint64_t)x[1] << 32) >> 11));
  /* the mean of many draws is 1/2 within 5 sigma */
  double m = 0;
  for (uint32_t i = 0; i < 10000; i++) base.position = i, m += sampler_uniform(&base);
  CHECK_NEAR(m / 10000, 0.5, 5 * 0.2887 / 100);
}

TEST(sampler_exp_matches_libm) {
  CHECK(smp_exp(0.0) == 1.0);
  CHECK(smp_exp(-INFINITY) == 0.0);
  CHECK(smp_exp(-800.0) == 0.0);
  double worst = 0;
  for (int i = 1; i <= 200000; i++) {
    double x = -745.0 * i / 200000.0, a = smp_exp(x), b = exp(x);
    if (b > 1e-300) worst = fmax(worst, fabs(a - b) / b);
  }
  CHECK_MSG(worst < 8e-16, "worst relative error %.3g", worst);
  CHECK(smp_exp(-745.0) > 0 && smp_exp(-745.0) < 1e-320); /* subnormal */
}

/* smp_exp as it was written before it went branch-free (libm floor, an int
 * cast, early returns): the branch-free form must give its bits everywhere. */
static double exp_branching(double x) {
  if (x != x) return x;
  if (x < -746.0) return 0.0;
  if (x >= 0.0) return x == 0.0 ? 1.0 : HUGE_VAL;
  double kd = floor(x * 1.44269504088896338700e+00 + 0.5);
  double r = (x - kd * 6.93147180369123816490e-01) - kd * 1.90821492927058770002e-10;
  const double c[13] = {1.6059043836821614599e-10, 2.0876756987868098979e-09, 2.5052108385441718775e-08,
                        2.7557319223985890653e-07, 2.7557319223985890653e-06, 2.4801587301587301566e-05,
                        1.9841269841269841253e-04, 1.3888888888888888889e-03, 8.3333333333333333333e-03,
                        4.1666666666666666667e-02, 1.6666666666666666667e-01, 5.0000000000000000000e-01,
                        1.0};
  double p = c[0];
  for (int i = 1; i < 13; i++) p = p * r + c[i];
  p = p * r + 1.0;
  int k = (int)kd, k1 = k / 2, k2 = k - k1;
  return p * ldexp(1.0, k1) * ldexp(1.0, k2);
}

static uint64_t dbits(double d) {
  uint64_t u;
  memcpy(&u, &d, 8);
  return u;
}

TEST(sampler_exp_branch_free_same_bits) {
  /* the special inputs, the range ends, the points where floor's rounding flips
   * (x/ln2 + 1/2 near an integer: x near (k − 1/2)·ln2), ulp neighbours of each */
  double xs[4096];
  int n = 0;
  const double sp[] = {0.0, -0.0, 1e-300, 1.0, INFINITY, -INFINITY, NAN, -746.0, -745.9999999999999, -745.1332191019412,
                       -744.44007192138122, -708.39641853226408, -1e-300, -4.9e-324, -0.5, -1.0, -0.34657359027997264};
  for (size_t i = 0; i < sizeof sp / sizeof *sp; i++) xs[n++] = sp[i];
  for (int k = 0; k >= -1076 && n + 3 <= 4096; k -= 1) {
    double x = (k - 0.5) * 0.69314718055994530942;
    xs[n++] = x, xs[n++] = nextafter(x, 0.0), xs[n++] = nextafter(x, -1000.0);
  }
  int bad = 0;
  for (int i = 0; i < n; i++) {
    double a = smp_exp(xs[i]), b = exp_branching(xs[i]);
    if (dbits(a) != dbits(b) && !(a != a && b != b)) {
      if (bad++ < 3) fprintf(stderr, "  smp_exp(%.17g) = %a, branching form %a\n", xs[i], a, b);
    }
  }
  /* and 3 million pseudo-random points over [-760, 0], a third of them near 0 */
  uint64_t st = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 3000000; i++) {
    st ^= st << 13, st ^= st >> 7, st ^= st << 17;
    double u = (double)(st >> 11) * 0x1.0p-53, x = i % 3 ? -760.0 * u : -u * u * 4.0;
    double a = smp_exp(x), b = exp_branching(x);
    if (dbits(a) != dbits(b) && bad++ < 3) fprintf(stderr, "  smp_exp(%.17g) = %a, branching form %a\n", x, a, b);
  }
  CHECK_MSG(bad == 0, "%d inputs where the branch-free exp's bits differ", bad);
  CHECK(smp_exp(NAN) != smp_exp(NAN));
  CHECK(smp_exp(2.0) == HUGE_VAL && smp_exp(-0.0) == 1.0);
}

TEST(sampler_masked_and_errors) {
  const float l[4] = {-INFINITY, 0.0f, -INFINITY, 1.0f};
  sampler_params p = sampler_default_params();
  for (uint32_t i = 0; i < 100; i++) {
    int t = one(&p, l, 4, i).token;
    CHECK(t == 1 || t == 3);
  }
  rl_err e;
  sampler_out o;
  sampler_key k = {0};
  float bad[4] = {0, 1, 2, NAN};
  CHECK_EQ_I64(sampler_sample(&p, bad, 4, &k, &o, &e), RL_EXIT_FAIL);
  CHECK_EQ_I64(o.status, SAMPLER_NONFINITE);
  CHECK_EQ_I64(o.token, 3);
  CHECK_CONTAINS(e.msg, "logit 3 is nan");
  bad[3] = INFINITY;
  CHECK_EQ_I64(sampler_sample(&p, bad, 4, &k, &o, &e), RL_EXIT_FAIL);
  const float all[2] = {-INFINITY, -INFINITY};
  CHECK_EQ_I64(sampler_sample(&p, all, 2, &k, &o, &e), RL_EXIT_FAIL);
  CHECK_EQ_I64(o.status, SAMPLER_ALL_MASKED);
  p.top_p = 0;
  CHECK_EQ_I64(sampler_sample(&p, l, 4, &k, &o, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "top_p");
  p = sampler_default_params();
  p.temperature = -1;
  CHECK_EQ_I64(sampler_sample(&p, l, 4, &k, &o, &e), RL_EXIT_USAGE);
  p = sampler_default_params();
  CHECK_EQ_I64(sampler_sample(&p, l, 0, &k, &o, &e), RL_EXIT_USAGE);
}
