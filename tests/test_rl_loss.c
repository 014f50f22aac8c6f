/* test_rl_loss.c — advantages, PPO-clip with TIS/IcePop, k3 KL, entropy bonus,
 * SFT cross-entropy and the mismatch metrics (stages/rl_loss.h,
 * stages/rl_metrics.h) against values computed by hand (the arithmetic is in
 * the comments), plus central finite differences of every loss gradient. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "stages/rl_loss.h"
#include "stages/rl_metrics.h"
#include "state/store.h"

/* ---------------------------------------------------------------- advantages */

TEST(rl_adv_grpo_sample_std_and_degenerate) {
  /* RL.md's std(r) read as torch's r.std() (Bessel, G − 1). Values from
   * tests/oracle/rl_ref.py (numpy, (r − mean)/(r.std(ddof=1) + 1e-6)):
   * group 0 {1,0,0,0}: std 0.5 (population std 0.4330 gave 1.7320468); group 1
   * all 0.5 → degenerate; group 2 {0,1}; group 3 {0.3, −1.2, 2.5}. */
  double r[8] = {1, 0, 0, 0, 0.5, 0.5, 0.5, 0.5}, a[8];
  uint8_t keep[8];
  int64_t deg = -1;
  rl_err e = {0};
  REQUIRE(rl_advantages(RL_ADV_GRPO, r, 2, 4, a, keep, &deg, &e) == 0);
  CHECK_NEAR(a[0], 1.4999970000059999, 1e-14);
  CHECK_NEAR(a[1], -0.49999900000199998, 1e-14);
  CHECK_NEAR(a[3], -0.49999900000199998, 1e-14);
  for (int i = 4; i < 8; i++) CHECK(a[i] == 0.0 && keep[i] == 0);
  for (int i = 0; i < 4; i++) CHECK_EQ_I64(keep[i], 1);
  CHECK_EQ_I64(deg, 1);
  double r2[2] = {0, 1}, r3[3] = {0.3, -1.2, 2.5};
  REQUIRE(rl_advantages(RL_ADV_GRPO, r2, 1, 2, a, NULL, NULL, &e) == 0);
  CHECK_NEAR(a[0], -0.70710578118796164, 1e-14);
  CHECK_NEAR(a[1], 0.70710578118796164, 1e-14);
  REQUIRE(rl_advantages(RL_ADV_GRPO, r3, 1, 3, a, NULL, NULL, &e) == 0);
  CHECK_NEAR(a[0], -0.12538032911836153, 1e-14);
  CHECK_NEAR(a[1], -0.93139673059354278, 1e-14);
  CHECK_NEAR(a[2], 1.0567770597119044, 1e-14);
}

TEST(rl_adv_dr_grpo_and_rloo) {
  double r[7] = {1, 0, 0, 0, 3, 1, 2}, a[4], b[3];
  rl_err e = {0};
  /* dr_grpo: r − mean = {.75, −.25, −.25, −.25} */
  REQUIRE(rl_advantages(RL_ADV_DR_GRPO, r, 1, 4, a, NULL, NULL, &e) == 0);
  CHECK_NEAR(a[0], 0.75, 1e-15);
  CHECK_NEAR(a[2], -0.25, 1e-15);
  /* rloo: r_i − mean(others): {1 − 0, 0 − 1/3, …} */
  REQUIRE(rl_advantages(RL_ADV_RLOO, r, 1, 4, a, NULL, NULL, &e) == 0);
  CHECK_NEAR(a[0], 1.0, 1e-15);
  CHECK_NEAR(a[1], -1.0 / 3, 1e-15);
  /* {3,1,2}: 3 − 1.5, 1 − 2.5, 2 − 2 */
  REQUIRE(rl_advantages(RL_ADV_RLOO, r + 4, 1, 3, b, NULL, NULL, &e) == 0);
  CHECK_NEAR(b[0], 1.5, 1e-15);
  CHECK_NEAR(b[1], -1.5, 1e-15);
  CHECK_NEAR(b[2], 0.0, 1e-15);
  /* equal rewards whose mean does not round back exactly still give exact zeros */
  double r3[3] = {0.1, 0.1, 0.1}, c[3];
  int64_t deg = 0;
  REQUIRE(rl_advantages(RL_ADV_RLOO, r3, 1, 3, c, NULL, &deg, &e) == 0);
  CHECK(c[0] == 0 && c[1] == 0 && c[2] == 0);
  CHECK_EQ_I64(deg, 1);
}

TEST(rl_adv_group_of_one_and_bad_reward) {
  double r[3] = {1, 0, 5}, a[3];
  uint8_t keep[3];
  int64_t deg = 0;
  rl_err e = {0};
  for (int k = RL_ADV_GRPO; k <= RL_ADV_RLOO; k++) {
    REQUIRE(rl_advantages((rl_adv_kind)k, r, 3, 1, a, keep, &deg, &e) == 0);
    CHECK(a[0] == 0 && a[1] == 0 && a[2] == 0 && keep[0] == 0 && keep[2] == 0);
    CHECK_EQ_I64(deg, 3);
  }
  double bad[6] = {1, 0, 1, 0, 1, NAN};
  CHECK_EQ_I64(rl_advantages(RL_ADV_GRPO, bad, 2, 3, a, NULL, NULL, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "group 1 sample 2");
  CHECK_EQ_I64(rl_advantages(RL_ADV_GRPO, r, 1, 0, a, NULL, NULL, &e), RL_EXIT_USAGE);
}

/* ---------------------------------------------------------------- per-token terms */

TEST(rl_ppo_clip_boundaries) {
  double d;
  int cl;
  const double el = 0.2, eh = 0.2;
  /* A > 0: ρ = 1 + ε exactly is not clipped; one ulp above is. */
  CHECK_NEAR(rl_ppo_term(1.0 + eh, 1.0, el, eh, &d, &cl), -1.2, 1e-15);
  CHECK_EQ_I64(cl, 0);
  CHECK_NEAR(d, -1.2, 1e-15);
  double above = nextafter(1.0 + eh, 2.0), below = nextafter(1.0 + eh, 0.0);
  CHECK_NEAR(rl_ppo_term(above, 1.0, el, eh, &d, &cl), -1.2, 1e-15);
  CHECK_EQ_I64(cl, 1);
  CHECK(d == 0.0);
  rl_ppo_term(below, 1.0, el, eh, &d, &cl);
  CHECK_EQ_I64(cl, 0);
  CHECK_NEAR(d, -below, 0);
  /* A > 0, ρ small: unclipped (min picks ρA): term −0.5·2, d = −1 */
  CHECK_NEAR(rl_ppo_term(0.5, 2.0, el, eh, &d, &cl), -1.0, 1e-15);
  CHECK(cl == 0 && d == -1.0);
  /* A < 0: ρ = 1 − ε exactly not clipped; below it clipped at 0.8·|A|; large ρ unclipped */
  CHECK_NEAR(rl_ppo_term(1.0 - el, -1.0, el, eh, &d, &cl), 0.8, 1e-15);
  CHECK(cl == 0);
  CHECK_NEAR(d, 0.8, 1e-15);
  CHECK_NEAR(rl_ppo_term(nextafter(1.0 - el, 0.0), -1.0, el, eh, &d, &cl), 0.8, 1e-15);
  CHECK(cl == 1 && d == 0.0);
  CHECK_NEAR(rl_ppo_term(0.7, -3.0, el, eh, &d, &cl), 2.4, 1e-15);
  CHECK(cl == 1 && d == 0.0);
  CHECK_NEAR(rl_ppo_term(1.5, -1.0, el, eh, &d, &cl), 1.5, 1e-15);
  CHECK(cl == 0 && d == 1.5);
  /* asymmetric (clip-higher) ε_high = 0.28: ρ = 1.25 with A > 0 passes */
  rl_ppo_term(1.25, 1.0, 0.2, 0.28, &d, &cl);
  CHECK(cl == 0 && d == -1.25);
  /* A = 0: nothing, never clipped */
  CHECK_NEAR(rl_ppo_term(3.0, 0.0, el, eh, &d, &cl), 0.0, 0);
  CHECK(cl == 0 && d == 0.0);
}

TEST(rl_tis_and_icepop_weights_and_k3) {
  rl_loss_cfg c;
  rl_loss_cfg_default(&c);
  int cl;
  CHECK_NEAR(rl_tis_weight(&c, 5.0, &cl), 1.0, 0); /* off: 1 */
  CHECK_EQ_I64(cl, 0);
  c.tis_mode = RL_TIS_TRUNCATE; /* C = 2 */
  CHECK_NEAR(rl_tis_weight(&c, log(3.0), &cl), 2.0, 0);
  CHECK_EQ_I64(cl, 1);
  CHECK_NEAR(rl_tis_weight(&c, log(1.5), &cl), 1.5, 1e-15);
  CHECK_EQ_I64(cl, 0);
  CHECK_NEAR(rl_tis_weight(&c, log(0.1), &cl), 0.1, 1e-15);
  CHECK_EQ_I64(cl, 0);
  c.tis_mode = RL_TIS_MASK; /* [0.5, 2] */
  CHECK_NEAR(rl_tis_weight(&c, 0.0, &cl), 1.0, 0);
  CHECK_NEAR(rl_tis_weight(&c, log(0.6), &cl), 1.0, 0);
  CHECK_NEAR(rl_tis_weight(&c, log(1.9), &cl), 1.0, 0);
  CHECK_EQ_I64(cl, 0);
  CHECK_NEAR(rl_tis_weight(&c, log(2.5), &cl), 0.0, 0);
  CHECK_EQ_I64(cl, 1);
  CHECK_NEAR(rl_tis_weight(&c, log(0.4), &cl), 0.0, 0);
  CHECK_EQ_I64(cl, 1);
  /* k3(d) = e^d − 1 − d */
  CHECK(rl_k3(0.0) == 0.0);
  CHECK_NEAR(rl_k3(0.5), 0.1487212707001282, 1e-15);
  CHECK_NEAR(rl_k3(-1.0), 0.36787944117144233, 1e-15);
  CHECK(rl_k3(1e-9) >= 0 && rl_k3(-1e-9) >= 0);
}

/* ---------------------------------------------------------------- the batch */

/* Two sequences: seq 0 (A = +2) tokens ρ = 1, ρ = e (clipped: −1.2·2 = −2.4);
 * seq 1 (A = −1) tokens ρ = 1 (+1), ρ = 1/e (< 0.8, clipped: 0.8), ρ = 1 (+1),
 * and a masked token. Per-token terms −2, −2.4 | 1, 0.8, 1. */
typedef struct fixture {
  int64_t off[3];
  uint8_t mask[6];
  double adv[2];
  float lnew[6], lold[6], lroll[6], lref[6], ent[6];
  float g[6], ge[6];
  rl_seqs mb;
} fixture;

static void fixture_init(fixture *f) {
  memset(f, 0, sizeof *f);
  int64_t off[3] = {0, 2, 6};
  uint8_t mask[6] = {1, 1, 1, 1, 1, 0};
  float lold[6] = {-1, -2, -1, -1, -3, -1}, dnew[6] = {0, 1, 0, -1, 0, 0.5f};
  memcpy(f->off, off, sizeof off);
  memcpy(f->mask, mask, sizeof mask);
  f->adv[0] = 2, f->adv[1] = -1;
  for (int i = 0; i < 6; i++) {
    f->lold[i] = lold[i];
    f->lnew[i] = lold[i] + dnew[i];
    f->lroll[i] = lold[i];
    f->lref[i] = f->lnew[i];
    f->ent[i] = 0.5f * (float)i;
  }
  f->mb = (rl_seqs){.n_seq = 2, .off = f->off, .mask = f->mask, .adv = f->adv, .logp_new = f->lnew,
                    .logp_old = f->lold, .logp_rollout = f->lroll, .logp_ref = f->lref,
                    .entropy = f->ent};
}

TEST(rl_loss_token_mean_and_seq_mean) {
  fixture f;
  fixture_init(&f);
  rl_loss_cfg c;
  rl_loss_cfg_default(&c);
  rl_loss_out o;
  rl_err e = {0};
  REQUIRE(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e) == 0);
  /* token mean: (−2 − 2.4 + 1 + 0.8 + 1)/5 = −0.32; grads −Aρ/5 on unclipped tokens */
  CHECK_NEAR(o.loss, -0.32, 1e-12);
  CHECK_EQ_I64(o.n_tokens, 5);
  CHECK_EQ_I64(o.n_clipped, 2);
  CHECK_NEAR(f.g[0], -0.4, 1e-7);
  CHECK(f.g[1] == 0 && f.g[3] == 0 && f.g[5] == 0);
  CHECK_NEAR(f.g[2], 0.2, 1e-7);
  CHECK_NEAR(f.g[4], 0.2, 1e-7);
  /* seq mean of token means: (−4.4/2 + 2.8/3)/2 = −0.6333…; grads −Aρ/(2·n_s) */
  c.agg = RL_AGG_SEQ_MEAN_TOKEN_MEAN;
  REQUIRE(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e) == 0);
  CHECK_NEAR(o.loss, (-2.2 + 2.8 / 3) / 2, 1e-12);
  CHECK_NEAR(f.g[0], -0.5, 1e-7);
  CHECK_NEAR(f.g[2], 1.0 / 6, 1e-7);
  /* a dropped (degenerate) sequence contributes nothing: token mean of seq 0 alone */
  uint8_t keep[2] = {1, 0};
  f.mb.seq_keep = keep;
  c.agg = RL_AGG_TOKEN_MEAN;
  REQUIRE(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e) == 0);
  CHECK_NEAR(o.loss, -2.2, 1e-12);
  CHECK_EQ_I64(o.n_tokens, 2);
  CHECK(f.g[2] == 0 && f.g[4] == 0);
  CHECK_NEAR(f.g[0], -1.0, 1e-7);
}

TEST(rl_loss_tis_icepop_kl_entropy) {
  fixture f;
  fixture_init(&f);
  rl_loss_cfg c;
  rl_loss_cfg_default(&c);
  rl_loss_out o;
  rl_err e = {0};
  /* rollout 3× less likely on token 0: exp(δ) = 3 → TIS w = 2: (−4 − 2.4 + 2.8)/5 = −0.72 */
  f.lroll[0] = f.lold[0] - (float)log(3.0);
  c.tis_mode = RL_TIS_TRUNCATE;
  REQUIRE(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e) == 0);
  CHECK_NEAR(o.loss, -0.72, 1e-12);
  CHECK_NEAR(f.g[0], -0.8, 1e-7);
  CHECK_EQ_I64(o.n_tis_clipped, 1);
  CHECK_NEAR(o.tis_weight_sum, 6.0, 0);
  /* IcePop [0.5, 2]: ratio 3 is masked, w = 0, the token stays in the denominator: 0.4/5 */
  c.tis_mode = RL_TIS_MASK;
  REQUIRE(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e) == 0);
  CHECK_NEAR(o.loss, 0.08, 1e-12);
  CHECK(f.g[0] == 0);
  CHECK_NEAR(f.g[2], 0.2, 1e-7);
  /* KL (β = 0.1): ref − new = 0.5 on token 2 → k3 = e^.5 − 1.5; grad += β(1 − e^.5)/5 */
  c.tis_mode = RL_TIS_OFF;
  c.kl_beta = 0.1;
  f.lref[2] = f.lnew[2] + 0.5f;
  REQUIRE(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e) == 0);
  CHECK_NEAR(o.kl, 0.1487212707001282 / 5, 1e-12);
  CHECK_NEAR(o.loss, -0.32 + 0.1 * 0.1487212707001282 / 5, 1e-12);
  CHECK_NEAR(f.g[2], 0.2 + 0.1 * (1 - exp(0.5)) / 5, 1e-7);
  /* entropy bonus c = 0.01: H = {0, .5, 1, 1.5, 2} → mean 1; loss −= 0.01; dL/dH = −0.01/5 */
  c.kl_beta = 0;
  c.entropy_coef = 0.01;
  CHECK_EQ_I64(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "grad_entropy");
  REQUIRE(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, f.ge, &e) == 0);
  CHECK_NEAR(o.entropy, 1.0, 1e-12);
  CHECK_NEAR(o.loss, -0.32 - 0.01, 1e-12);
  CHECK_NEAR(f.ge[3], -0.002, 1e-9);
  CHECK(f.ge[5] == 0);
}

TEST(rl_loss_sft_and_microbatches) {
  fixture f;
  fixture_init(&f);
  rl_loss_cfg c;
  rl_loss_cfg_default(&c);
  rl_loss_out o, o1, o2;
  rl_err e = {0};
  /* SFT: −mean logp_new over kept tokens: −(−1 − 1 − 1 − 2 − 3)/5 = 1.6, grad −1/5 */
  c.kind = RL_LOSS_SFT;
  REQUIRE(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e) == 0);
  CHECK_NEAR(o.loss, 1.6, 1e-12);
  CHECK_NEAR(f.g[1], -0.2, 1e-8);
  CHECK(f.g[5] == 0);
  /* PPO split into two microbatches with the batch's totals: losses and grads add up */
  c.kind = RL_LOSS_PPO;
  c.agg = RL_AGG_SEQ_MEAN_TOKEN_MEAN;
  REQUIRE(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e) == 0);
  rl_norm n = {0, 0};
  rl_seqs a = f.mb, b = f.mb;
  a.n_seq = 1;
  b.n_seq = 1, b.off = f.off + 1, b.adv = f.adv + 1;
  rl_norm_add(&n, &a);
  rl_norm_add(&n, &b);
  CHECK_EQ_I64(n.n_tokens, 5);
  CHECK_EQ_I64(n.n_seqs, 2);
  float g2[6];
  REQUIRE(rl_loss_compute(&c, &a, &n, &o1, g2, NULL, &e) == 0);
  REQUIRE(rl_loss_compute(&c, &b, &n, &o2, g2, NULL, &e) == 0);
  CHECK_NEAR(o1.loss + o2.loss, o.loss, 1e-15);
  for (int i = 0; i < 6; i++) CHECK(g2[i] == f.g[i]);
  rl_loss_out sum = {0};
  rl_loss_out_add(&sum, &o1);
  rl_loss_out_add(&sum, &o2);
  CHECK_EQ_I64(sum.n_tokens, 5);
  CHECK_EQ_I64(sum.n_clipped, 2);
  rl_metric_list l = {0};
  rl_metric_list_add_loss(&l, &c, &sum);
  int found;
  CHECK_NEAR(rl_metric_get(&l, RL_M_POLICY_CLIPFRAC, &found), 0.4, 1e-15);
  CHECK_NEAR(rl_metric_get(&l, RL_M_LOSS, &found), o.loss, 1e-15);
  rl_metric_get(&l, RL_M_LOSS_KL, &found);
  CHECK(!found); /* KL off: not logged */
  rl_metric_list_free(&l);
  /* a NaN log-prob stops the step, naming where */
  f.lnew[3] = NAN;
  CHECK_EQ_I64(rl_loss_compute(&c, &f.mb, NULL, &o, f.g, NULL, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "sequence 1 token 1");
}

/* RL.md's L_t = −min(ρA, clip(ρ)A)·w_t is 0 when w_t = 0 (IcePop's mask) or A = 0,
 * whatever ρ: a ratio that overflows to Inf there must not stop the step (IEEE's
 * Inf·0 = NaN did). Expected values from tests/oracle/rl_ref.py (numpy, RL.md's
 * formula with 0·x = 0): ρ = {Inf, e^0.1, Inf, e^0.1}, w (IcePop [0.5, 2]) =
 * {1, 1, 0, 1}, A = {0, 0, −1.5, −1.5}: loss 0.41443910415936602, gradient
 * {0, 0, 0, 0.414439104}. */
TEST(rl_loss_zero_weight_or_advantage_ignores_ratio_overflow) {
  int64_t off[3] = {0, 2, 4};
  double adv[2] = {0.0, -1.5};
  float lnew[4] = {0, -0.9f, -1, -1.9f}, lold[4] = {-1000, -1, -1000, -2};
  float lroll[4] = {-1000, -1, -2, -2.25f}, g[4];
  rl_seqs mb = {.n_seq = 2, .off = off, .adv = adv, .logp_new = lnew, .logp_old = lold,
                .logp_rollout = lroll};
  rl_loss_cfg c;
  rl_loss_cfg_default(&c);
  c.tis_mode = RL_TIS_MASK;
  rl_loss_out o;
  rl_err e = {0};
  CHECK_EQ_I64(rl_loss_compute(&c, &mb, NULL, &o, g, NULL, &e), 0);
  CHECK_NEAR(o.loss, 0.41443910415936602, 1e-12);
  CHECK(g[0] == 0 && g[1] == 0 && g[2] == 0);
  CHECK_NEAR(g[3], 0.414439104, 1e-8);
  CHECK_EQ_I64(o.n_tis_clipped, 1);
  double d;
  int cl;
  CHECK(rl_ppo_term(INFINITY, 0.0, 0.2, 0.2, &d, &cl) == 0.0 && d == 0.0 && cl == 0);
  /* with w = 1 the same overflowed ratio is an infinite loss (A < 0): the step stops */
  c.tis_mode = RL_TIS_OFF;
  CHECK_EQ_I64(rl_loss_compute(&c, &mb, NULL, &o, g, NULL, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "sequence 1 token 0");
}

/* seq_mean_token_mean with an empty and a fully masked sequence (no token mean:
 * not counted in S, so S = 2), TIS truncate (C = 2, two weights cut) on the policy
 * term only, k3 KL (β = 0.1) unweighted. Expected values from
 * tests/oracle/rl_ref.py (case_seq_mean_empty_and_kl). */
TEST(rl_loss_seq_mean_skips_empty_sequences_kl_unweighted) {
  int64_t off[5] = {0, 3, 3, 5, 7};
  uint8_t mask[7] = {1, 1, 1, 0, 0, 1, 1};
  double adv[4] = {1.0, -0.5, 0.8, -1.2};
  float lnew[7] = {-1, -2.5f, -0.25f, -1, -1, -3, -0.5f};
  float lold[7] = {-1.25f, -2, -0.25f, -1, -1, -2.5f, -0.75f};
  float lroll[7] = {-2, -2, 0, -1, -1, -3.5f, -0.75f};
  float lref[7] = {-1, -2, -0.5f, -1, -1, -2.75f, -0.5f}, g[7];
  const double want_g[7] = {0, -0.111900464, -0.126113477, 0, 0, -0.00710063542, 0.385207625};
  rl_seqs mb = {.n_seq = 4, .off = off, .mask = mask, .adv = adv, .logp_new = lnew, .logp_old = lold,
                .logp_rollout = lroll, .logp_ref = lref};
  rl_loss_cfg c;
  rl_loss_cfg_default(&c);
  c.agg = RL_AGG_SEQ_MEAN_TOKEN_MEAN;
  c.tis_mode = RL_TIS_TRUNCATE;
  c.kl_beta = 0.1;
  rl_loss_out o;
  rl_err e = {0};
  REQUIRE(rl_loss_compute(&c, &mb, NULL, &o, g, NULL, &e) == 0);
  CHECK_NEAR(o.loss, 0.23812838752236831, 1e-12);
  CHECK_NEAR(o.policy, 0.23431905120898255, 1e-12);
  CHECK_NEAR(o.kl, 0.038093363133857527, 1e-12);
  for (int i = 0; i < 7; i++) CHECK_NEAR(g[i], want_g[i], 1e-8);
  CHECK_EQ_I64(o.n_tokens, 5);
  CHECK_EQ_I64(o.n_clipped, 2);
  CHECK_EQ_I64(o.n_tis_clipped, 2);
  rl_norm n = {0, 0};
  rl_norm_add(&n, &mb);
  CHECK_EQ_I64(n.n_seqs, 2);
}

/* Identical rollout, old and new log-probs: ρ = 1 exactly, mismatch 0, ESS 1. */
TEST(rl_identical_policies_exact) {
  enum { N = 97 };
  float lp[N];
  int64_t off[2] = {0, N};
  double adv = 0.75;
  for (int i = 0; i < N; i++) lp[i] = -0.01f * (float)(i % 13) - 1e-3f * (float)i;
  rl_seqs mb = {.n_seq = 1, .off = off, .adv = &adv, .logp_new = lp, .logp_old = lp, .logp_rollout = lp};
  rl_loss_cfg c;
  rl_loss_cfg_default(&c);
  c.tis_mode = RL_TIS_TRUNCATE;
  float g[N];
  rl_loss_out o;
  rl_err e = {0};
  REQUIRE(rl_loss_compute(&c, &mb, NULL, &o, g, NULL, &e) == 0);
  CHECK_NEAR(o.loss, -0.75, 1e-15); /* every ρ exactly 1: −A·1 averaged */
  CHECK_EQ_I64(o.n_clipped, 0);
  CHECK(rl_ppo_term(exp((double)lp[5] - (double)lp[5]), adv, 0.2, 0.2, NULL, NULL) == -0.75);
  for (int i = 0; i < N; i++) CHECK_NEAR(g[i], -0.75 / N, 1e-9);
  rl_mismatch_acc acc;
  rl_mismatch m;
  rl_mismatch_init(&acc);
  rl_mismatch_add(&acc, &c, lp, lp, NULL, N);
  rl_mismatch_finish(&acc, &m);
  CHECK(m.kl_k3 == 0.0 && m.ess == 1.0 && m.logp_abs_diff == 0.0 && m.max_abs_diff == 0.0);
  CHECK(m.tis_mean == 1.0 && m.tis_clipfrac == 0.0);
  CHECK_EQ_I64(m.n_tokens, N);
}

/* ---------------------------------------------------------------- finite differences */

/* Pseudo-random double in [0,1). */
static double frand(uint32_t *s) {
  *s = *s * 1664525u + 1013904223u;
  return (*s >> 8) * (1.0 / 16777216.0);
}

typedef struct fdcase {
  rl_loss_cfg c;
  rl_seqs mb;
  const rl_norm *norm;
} fdcase;

static double fd_loss(fdcase *k) {
  float g[64], ge[64];
  rl_loss_out o;
  rl_err e = {0};
  if (rl_loss_compute(&k->c, &k->mb, k->norm, &o, g, ge, &e)) return NAN;
  return o.loss;
}

/* Central differences of the loss over x[0..n) (h = 1e-3, perturbation exact in
 * FP32) against g: max |fd − g| ≤ 1e-6 + 1e-4·|g| per element. */
static void fd_check(const char *what, fdcase *k, float *x, const float *g, int n) {
  double worst = 0;
  for (int i = 0; i < n; i++) {
    float x0 = x[i], xp = x0 + 1e-3f, xm = x0 - 1e-3f;
    x[i] = xp;
    double lp = fd_loss(k);
    x[i] = xm;
    double lm = fd_loss(k);
    x[i] = x0;
    double fd = (lp - lm) / ((double)xp - (double)xm), err = fabs(fd - g[i]);
    if (err > worst) worst = err;
    CHECK_MSG(err <= 1e-6 + 1e-4 * fabs(g[i]), "%s: token %d: fd %.9g vs analytic %.9g", what, i, fd,
              (double)g[i]);
  }
  printf("  fd %-34s worst abs err %.2e\n", what, worst);
}

TEST(rl_loss_gradients_finite_differences) {
  enum { S = 5, T = 40 };
  int64_t off[S + 1] = {0, 6, 13, 20, 31, T};
  float lnew[T], lold[T], lroll[T], lref[T], ent[T], g[T], ge[T];
  uint8_t mask[T];
  double adv[S] = {1.3, -0.7, 0.4, -2.0, 0.9};
  uint32_t s = 12345;
  for (int i = 0; i < T; i++) {
    lold[i] = (float)(-0.1 - 3 * frand(&s));
    /* log-ratios spread over both clip regions, kept 0.02 away from the kinks */
    double lr;
    do lr = -0.6 + 1.2 * frand(&s);
    while (fabs(exp(lr) - 1.2) < 0.02 || fabs(exp(lr) - 0.8) < 0.02);
    lnew[i] = lold[i] + (float)lr;
    double dr;
    do dr = -1.2 + 2.4 * frand(&s); /* rollout drift, away from the TIS/IcePop edges */
    while (fabs(exp(dr) - 2) < 0.05 || fabs(exp(dr) - 0.5) < 0.05);
    lroll[i] = lold[i] - (float)dr;
    lref[i] = lnew[i] + (float)(-0.5 + frand(&s));
    ent[i] = (float)(2 * frand(&s));
    mask[i] = (uint8_t)(i % 7 != 3);
  }
  fdcase k;
  rl_loss_cfg_default(&k.c);
  k.mb = (rl_seqs){.n_seq = S, .off = off, .mask = mask, .adv = adv, .logp_new = lnew, .logp_old = lold,
                   .logp_rollout = lroll, .logp_ref = lref, .entropy = ent};
  k.norm = NULL;
  rl_err e = {0};
  rl_loss_out o;
  struct { int kind, agg, tis; double beta, ent; const char *name; } cases[] = {
      {RL_LOSS_PPO, RL_AGG_TOKEN_MEAN, RL_TIS_OFF, 0, 0, "ppo token_mean"},
      {RL_LOSS_PPO, RL_AGG_TOKEN_MEAN, RL_TIS_TRUNCATE, 0.2, 0.05, "ppo+tis+kl+entropy token_mean"},
      {RL_LOSS_PPO, RL_AGG_SEQ_MEAN_TOKEN_MEAN, RL_TIS_TRUNCATE, 0.2, 0.05, "ppo+tis+kl+entropy seq_mean"},
      {RL_LOSS_PPO, RL_AGG_SEQ_MEAN_TOKEN_MEAN, RL_TIS_MASK, 0.1, 0, "ppo+icepop+kl seq_mean"},
      {RL_LOSS_SFT, RL_AGG_TOKEN_MEAN, RL_TIS_OFF, 0, 0, "sft"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    k.c.kind = cases[i].kind, k.c.agg = cases[i].agg, k.c.tis_mode = cases[i].tis;
    k.c.kl_beta = cases[i].beta, k.c.entropy_coef = cases[i].ent;
    REQUIRE(rl_loss_compute(&k.c, &k.mb, NULL, &o, g, ge, &e) == 0);
    if (k.c.kind == RL_LOSS_PPO) CHECK(o.n_clipped > 3 && o.n_clipped < o.n_tokens - 3);
    fd_check(cases[i].name, &k, lnew, g, T);
    if (k.c.entropy_coef != 0) fd_check("  d/d entropy", &k, ent, ge, T);
  }
}

/* ---------------------------------------------------------------- metrics */

TEST(rl_mismatch_metrics_hand_values) {
  /* δ = old − rollout = {0, 1, −1}: |δ| mean 2/3; k3 mean (0 + e−2 + e^−1)/3;
   * w = {1, e, 1/e}: ESS = (Σw)²/(3Σw²) = 0.65290; TIS C=2: w = {1, 2, 1/e}. */
  float old[4] = {-1, -1, -2, -9}, roll[4] = {-1, -2, -1, 0};
  uint8_t mask[4] = {1, 1, 1, 0};
  rl_loss_cfg c;
  rl_loss_cfg_default(&c);
  c.tis_mode = RL_TIS_TRUNCATE;
  rl_mismatch_acc a;
  rl_mismatch m;
  rl_mismatch_init(&a);
  rl_mismatch_add(&a, &c, old, roll, mask, 2); /* two microbatches = one */
  rl_mismatch_add(&a, &c, old + 2, roll + 2, mask + 2, 2);
  rl_mismatch_finish(&a, &m);
  CHECK_EQ_I64(m.n_tokens, 3);
  CHECK_NEAR(m.logp_abs_diff, 2.0 / 3, 1e-15);
  CHECK_NEAR(m.kl_k3, 0.3620537565434958, 1e-14);
  CHECK_NEAR(m.ess, 0.6528995511381297, 1e-14);
  CHECK_NEAR(m.max_abs_diff, 1.0, 0);
  CHECK_NEAR(m.tis_mean, 1.1226264803904809, 1e-14);
  CHECK_NEAR(m.tis_clipfrac, 1.0 / 3, 1e-15);
  c.tis_mode = RL_TIS_MASK; /* [0.5, 2]: w = {1, 0, 0} */
  rl_mismatch_init(&a);
  rl_mismatch_add(&a, &c, old, roll, mask, 4);
  rl_mismatch_finish(&a, &m);
  CHECK_NEAR(m.tis_mean, 1.0 / 3, 1e-15);
  CHECK_NEAR(m.tis_clipfrac, 2.0 / 3, 1e-15);
  /* ESS with huge δ does not overflow: w = {1, e^1000} → 1/2; {e^800, e^800} → 1 */
  float o2[2] = {0, 0}, r2[2] = {0, -1000}, r3[2] = {-800, -800};
  rl_mismatch_init(&a);
  rl_mismatch_add(&a, NULL, o2, r2, NULL, 2);
  rl_mismatch_finish(&a, &m);
  CHECK_NEAR(m.ess, 0.5, 1e-15);
  rl_mismatch_init(&a);
  rl_mismatch_add(&a, NULL, o2, r3, NULL, 2);
  rl_mismatch_finish(&a, &m);
  CHECK(m.ess == 1.0);
  /* a non-finite log-prob poisons the metrics visibly */
  float r4[2] = {NAN, 0};
  rl_mismatch_init(&a);
  rl_mismatch_add(&a, NULL, o2, r4, NULL, 2);
  rl_mismatch_finish(&a, &m);
  CHECK(isnan(m.kl_k3) && isnan(m.ess));
  CHECK_EQ_I64(m.n_nonfinite, 1);
}

TEST(rl_metric_list_reward_stats_and_store) {
  double r[4] = {1, 0, 0, 1}, mean, sd;
  rl_reward_stats(r, 4, &mean, &sd);
  CHECK_NEAR(mean, 0.5, 0);
  CHECK_NEAR(sd, 0.5, 0); /* population std */
  rl_metric_list l = {0};
  rl_metric_set(&l, RL_M_REWARD_MEAN, mean);
  rl_metric_set(&l, RL_M_REWARD_STD, sd);
  for (int i = 0; i < 20; i++) rl_metric_set(&l, RL_M_GRAD_NORM, i); /* replaced, not appended */
  rl_mismatch m = {.n_tokens = 3, .logp_abs_diff = 0.25, .kl_k3 = 0.01, .ess = 0.9, .max_abs_diff = 2};
  rl_metric_list_add_mismatch(&l, &m, RL_TIS_OFF);
  CHECK_EQ_I64(l.n, 7);
  int found;
  CHECK_NEAR(rl_metric_get(&l, RL_M_GRAD_NORM, &found), 19, 0);
  CHECK(found);
  rl_metric_get(&l, RL_M_TIS_MEAN, &found);
  CHECK(!found);
  char path[1024];
  snprintf(path, sizeof path, "%s/state.db", harness_tmpdir());
  rl_err e = {0};
  store *s = store_open(path, 1, &e);
  REQUIRE(s);
  CHECK_EQ_I64(rl_metric_list_store(&l, s, 3, &e), 0);
  double v;
  CHECK_EQ_I64(store_metric_get(s, 3, "mismatch/ess", &v, &found, &e), 0);
  CHECK(found);
  CHECK_NEAR(v, 0.9, 0);
  CHECK_EQ_I64(store_metric_get(s, 3, "reward/mean", &v, &found, &e), 0);
  CHECK_NEAR(v, 0.5, 0);
  CHECK(!store_in_transaction(s));
  store_close(s);
  rl_metric_list_free(&l);
}
