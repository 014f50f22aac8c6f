/* test_ops.c — hand-computed cases for the non-GEMM operators (kernels/ops.h):
 * exact expected values, error messages, and thread-count determinism.
 * Gradient checks and the attention oracle are in test_ops_grad.c. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "harness.h"
#include "kernels/formats.h"
#include "kernels/ops.h"

/* ---------------------------------------------------------------- embedding */

TEST(ops_embedding_lookup_and_scatter_add) {
  const float table[3 * 2] = {1, 2, 3, 4, 5, 6};
  const int32_t tok[3] = {2, 0, 2};
  float out[6];
  rl_err e = {0};
  REQUIRE(ops_embedding_forward_cpu(out, table, tok, 3, 3, 2, &e) == 0);
  const float want[6] = {5, 6, 1, 2, 5, 6};
  for (int i = 0; i < 6; i++) CHECK_EQ_I64(out[i], want[i]);

  float dtab[6] = {0.5f, 0, 0, 0, 0, 0}; /* accumulates onto what is there */
  const float dout[6] = {1, 2, 10, 20, 100, 200};
  REQUIRE(ops_embedding_backward_cpu(dtab, dout, tok, 3, 3, 2, &e) == 0);
  const float wantd[6] = {10.5f, 20, 0, 0, 101, 202};
  for (int i = 0; i < 6; i++) CHECK_NEAR(dtab[i], wantd[i], 0);

  /* BF16 table: 1.5 = 0x3FC0, -2 = 0xC000, 0.1 → RNE bits 0x3DCD. */
  const uint16_t tb[2 * 2] = {0x3FC0, 0xC000, 0x3DCD, 0x0000};
  const int32_t t1[2] = {1, 0};
  REQUIRE(ops_embedding_forward_bf16_cpu(out, tb, t1, 2, 2, 2, &e) == 0);
  CHECK_EQ_U64(fmt_bf16_from_f32(out[0]), 0x3DCD);
  CHECK_NEAR(out[0], 0.10009765625, 0);
  CHECK_NEAR(out[2], 1.5, 0);
  CHECK_NEAR(out[3], -2.0, 0);
}

TEST(ops_embedding_rejects_bad_token) {
  const float table[4] = {0};
  const int32_t tok[3] = {0, 7, 1};
  float out[6];
  rl_err e = {0};
  CHECK_EQ_I64(ops_embedding_forward_cpu(out, table, tok, 3, 2, 2, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "token id 7 at position 1");
  CHECK_CONTAINS(e.msg, "[0, 2)");
  const int32_t neg[1] = {-1};
  CHECK_EQ_I64(ops_embedding_backward_cpu(out, table, neg, 1, 2, 2, &e), RL_EXIT_USAGE);
}

/* ---------------------------------------------------------------- RMSNorm */

TEST(ops_rmsnorm_exact_values) {
  /* x = 2 everywhere: mean x² = 4, rstd = 1/2, y = w exactly (eps 0). */
  const float x[2 * 4] = {2, 2, 2, 2, 1, 1, 1, 1};
  const float w[4] = {1, 2, 3, 4};
  float y[8], rstd[2];
  uint16_t yb[8];
  ops_rmsnorm_forward_cpu(y, yb, rstd, x, w, 2, 4, 0.0f);
  CHECK_NEAR(rstd[0], 0.5, 0);
  CHECK_NEAR(rstd[1], 1.0, 0);
  for (int i = 0; i < 4; i++) {
    CHECK_NEAR(y[i], w[i], 0);
    CHECK_NEAR(y[4 + i], w[i], 0);
    CHECK_EQ_U64(yb[i], fmt_bf16_from_f32(w[i]));
  }
  /* eps from the config enters under the root: x = 1, eps = 3 → rstd = 1/2. */
  ops_rmsnorm_forward_cpu(y, NULL, rstd, x + 4, w, 1, 4, 3.0f);
  CHECK_NEAR(rstd[0], 0.5, 0);
  CHECK_NEAR(y[3], 2.0, 0);
  /* x = (3, 4): mean x² = 12.5 → y = w·x/sqrt(12.5). */
  const float x2[2] = {3, 4}, w2[2] = {1, -2};
  ops_rmsnorm_forward_cpu(y, NULL, rstd, x2, w2, 1, 2, 0.0f);
  CHECK_NEAR(y[0], 3 / sqrt(12.5), 1e-6);
  CHECK_NEAR(y[1], -8 / sqrt(12.5), 1e-6);
}

TEST(ops_residual_rmsnorm_adds_then_normalises) {
  float resid[4] = {1, 1, 1, 1};
  const float x[4] = {1, 1, 1, 1}, w[4] = {1, 2, 3, 4};
  float y[4], rstd[1];
  ops_residual_rmsnorm_forward_cpu(resid, y, NULL, rstd, resid, x, w, 1, 4, 0.0f); /* h aliases resid */
  for (int i = 0; i < 4; i++) CHECK_NEAR(resid[i], 2, 0);
  CHECK_NEAR(rstd[0], 0.5, 0);
  for (int i = 0; i < 4; i++) CHECK_NEAR(y[i], w[i], 0);
  /* Backward adds into the residual gradient: with dy = 0 it is left as is. */
  float dres[4] = {7, 7, 7, 7}, dw[4] = {0};
  const float dy0[4] = {0};
  ops_residual_rmsnorm_backward_cpu(dres, dw, dy0, resid, w, rstd, 1, 4);
  for (int i = 0; i < 4; i++) CHECK_NEAR(dres[i], 7, 0);
  /* dy = e0 at h = 2·1: a = w0·2 = 2, dx_i = r·w_i·δ_i0 − h_i·r³·a/4 = 0.5δ_i0 − 2·0.125·2/4. */
  const float dy1[4] = {1, 0, 0, 0};
  ops_residual_rmsnorm_backward_cpu(dres, dw, dy1, resid, w, rstd, 1, 4);
  CHECK_NEAR(dres[0], 7 + 0.5 - 0.125, 1e-7);
  CHECK_NEAR(dres[1], 7 - 0.125, 1e-7);
  CHECK_NEAR(dw[0], 1.0, 0); /* dy·h·rstd = 1·2·0.5 */
  CHECK_NEAR(dw[1], 0.0, 0);
}

/* ---------------------------------------------------------------- RoPE */

TEST(ops_rope_rotate_half_pairs) {
  float inv[2];
  ops_rope_inv_freq(inv, 4, 10000.0f);
  CHECK_NEAR(inv[0], 1.0, 0);
  CHECK_NEAR(inv[1], 0.01, 1e-9); /* 10000^(-2/4) */
  /* x = e0 at position 1 rotates within the pair (0, 2) by 1 rad; x = e1 within
   * (1, 3) by 0.01 rad — the HF rotate_half layout, not interleaved pairs. */
  float x[2 * 4] = {1, 0, 0, 0, 0, 1, 0, 0};
  const int32_t pos[2] = {1, 1};
  ops_rope_forward_cpu(x, pos, 1, 2, 4, 10000.0f);
  CHECK_NEAR(x[0], cos(1.0), 1e-7);
  CHECK_NEAR(x[1], 0, 0);
  CHECK_NEAR(x[2], sin(1.0), 1e-7);
  CHECK_NEAR(x[3], 0, 0);
  CHECK_NEAR(x[5], cos(0.01), 1e-7);
  CHECK_NEAR(x[7], sin(0.01), 1e-7);
  CHECK_NEAR(x[4], 0, 0);
  /* Position 0 is the identity; the backward undoes the forward. */
  float y[4] = {0.3f, -1.5f, 2.0f, 0.25f}, y0[4];
  memcpy(y0, y, sizeof y);
  const int32_t p0[1] = {0}, p7[1] = {7};
  ops_rope_forward_cpu(y, p0, 1, 1, 4, 1e6f);
  for (int i = 0; i < 4; i++) CHECK_NEAR(y[i], y0[i], 0);
  ops_rope_forward_cpu(y, p7, 1, 1, 4, 1e6f);
  CHECK(fabs(y[0] - y0[0]) > 0.1);
  ops_rope_backward_cpu(y, p7, 1, 1, 4, 1e6f);
  for (int i = 0; i < 4; i++) CHECK_NEAR(y[i], y0[i], 1e-6);
}

TEST(ops_rope_angle_is_fp32_product) {
  /* transformers forms the angle as the FP32 product inv_freq·pos; at large
   * positions that differs from the exact product, and the table must follow. */
  float inv[64], c[64], s[64];
  ops_rope_inv_freq(inv, 128, 1e6f);
  const int32_t pos[1] = {32771};
  ops_rope_table_cpu(c, s, pos, 1, 128, 1e6f);
  for (int i = 0; i < 64; i += 9) {
    float ang = inv[i] * 32771.0f;
    CHECK_NEAR(c[i], (float)cos((double)ang), 0);
    CHECK_NEAR(s[i], (float)sin((double)ang), 0);
  }
  CHECK_NEAR(inv[63], 1.0 / pow(1e6, 126.0 / 128.0), 1e-12);
}

/* ---------------------------------------------------------------- attention */

TEST(ops_attention_hand_cases) {
  rl_err e = {0};
  /* q = 0: uniform weights over the causal prefix → o0 = v0, o1 = (v0+v1)/2. */
  const float q[2] = {0, 0}, k[2] = {1, -3}, v[2] = {2, 6};
  float o[2], lse[2];
  const int32_t off1[2] = {0, 2};
  ops_seqs one = {1, off1};
  ops_attn_shape sh = {2, 1, 1, 1};
  REQUIRE(ops_attention_forward_cpu(o, NULL, lse, q, k, v, &one, sh, &e) == 0);
  CHECK_NEAR(o[0], 2, 0);
  CHECK_NEAR(o[1], 4, 0);
  CHECK_NEAR(lse[0], 0, 0);
  CHECK_NEAR(lse[1], log(2.0), 1e-7);
  /* Two packed sequences of one token: each token sees only itself. */
  const int32_t off2[3] = {0, 1, 2};
  ops_seqs two = {2, off2};
  const float q2[2] = {5, 5};
  REQUIRE(ops_attention_forward_cpu(o, NULL, lse, q2, k, v, &two, sh, &e) == 0);
  CHECK_NEAR(o[0], 2, 0);
  CHECK_NEAR(o[1], 6, 0);
  /* GQA mapping: 4 query heads over 2 kv heads, one token: q head h reads kv
   * head h / 2. */
  const float q4[4] = {1, 2, 3, 4}, k2[2] = {1, 1}, v2[2] = {10, -20};
  const int32_t offt[2] = {0, 1};
  ops_seqs t1 = {1, offt};
  ops_attn_shape g = {1, 4, 2, 1};
  float o4[4];
  uint16_t ob[4];
  REQUIRE(ops_attention_forward_cpu(o4, ob, NULL, q4, k2, v2, &t1, g, &e) == 0);
  CHECK_NEAR(o4[0], 10, 0);
  CHECK_NEAR(o4[1], 10, 0);
  CHECK_NEAR(o4[2], -20, 0);
  CHECK_NEAR(o4[3], -20, 0);
  CHECK_EQ_U64(ob[2], fmt_bf16_from_f32(-20.0f));
  /* Bad shapes and offsets are errors. */
  ops_attn_shape bad = {1, 3, 2, 1};
  CHECK_EQ_I64(ops_attention_forward_cpu(o4, NULL, NULL, q4, k2, v2, &t1, bad, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "3 query heads");
  const int32_t offbad[3] = {0, 2, 1};
  ops_seqs sb = {2, offbad};
  CHECK_EQ_I64(ops_attention_forward_cpu(o, NULL, NULL, q, k, v, &sb, sh, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "sequence 1 ends before it starts");
  const int32_t offshort[2] = {0, 1};
  ops_seqs ss = {1, offshort};
  CHECK_EQ_I64(ops_attention_forward_cpu(o, NULL, NULL, q, k, v, &ss, sh, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "hold 1 tokens but the tensors have 2 rows");
}

/* ---------------------------------------------------------------- SwiGLU */

TEST(ops_swiglu_values_and_fused_layout) {
  /* g = 0: silu = 0, silu' = 1/2. g = ln 3: sigmoid = 3/4, silu = 0.75·ln 3. */
  const float gate[2] = {0, (float)log(3.0)}, up[2] = {4, 2};
  float out[2];
  ops_swiglu_forward_cpu(out, NULL, gate, up, 1, 2, 2);
  CHECK_NEAR(out[0], 0, 0);
  CHECK_NEAR(out[1], 2 * 0.75 * log(3.0), 1e-6);
  float dg[2], du[2];
  const float dout[2] = {1, 1};
  ops_swiglu_backward_cpu(dg, du, dout, gate, up, 1, 2, 2);
  CHECK_NEAR(dg[0], 2.0, 0); /* 1 · 4 · 1/2 */
  CHECK_NEAR(du[0], 0.0, 0);
  CHECK_NEAR(dg[1], 2 * 0.75 * (1 + log(3.0) * 0.25), 1e-6);
  CHECK_NEAR(du[1], 0.75 * log(3.0), 1e-6);
  /* Fused [gate | up] rows (ld = 2I) give the same as separate tensors. */
  const float gu[2 * 4] = {0, (float)log(3.0), 4, 2, -1, 3, 0.5f, -2};
  const float g2[4] = {0, (float)log(3.0), -1, 3}, u2[4] = {4, 2, 0.5f, -2};
  float of[4], os[4];
  uint16_t ob[4];
  ops_swiglu_forward_cpu(of, ob, gu, gu + 2, 2, 2, 4);
  ops_swiglu_forward_cpu(os, NULL, g2, u2, 2, 2, 2);
  for (int i = 0; i < 4; i++) {
    CHECK_NEAR(of[i], os[i], 0);
    CHECK_EQ_U64(ob[i], fmt_bf16_from_f32(os[i]));
  }
  /* Large |g| stays finite: silu(-100) = −100·e^−100 ≈ 0, silu(100) = 100. */
  const float gl[2] = {-100, 100}, ul[2] = {1, 1};
  ops_swiglu_forward_cpu(out, NULL, gl, ul, 1, 2, 2);
  CHECK_NEAR(out[0], 0, 1e-30);
  CHECK_NEAR(out[1], 100, 0);
}

/* ---------------------------------------------------------------- router */

TEST(ops_router_topk_and_renormalise) {
  rl_err e = {0};
  /* probs = (0.1, 0.2, 0.3, 0.4) */
  const float lg[4] = {0, (float)log(2.0), (float)log(3.0), (float)log(4.0)};
  float p[4], w[2];
  int32_t id[2];
  REQUIRE(ops_router_forward_cpu(id, w, p, lg, 1, 4, 2, 0, OPS_ROUTE_TOPK, &e) == 0);
  for (int x = 0; x < 4; x++) CHECK_NEAR(p[x], 0.1 * (x + 1), 1e-7);
  CHECK_EQ_I64(id[0], 3);
  CHECK_EQ_I64(id[1], 2);
  CHECK_NEAR(w[0], 0.4, 1e-7);
  CHECK_NEAR(w[1], 0.3, 1e-7);
  REQUIRE(ops_router_forward_cpu(id, w, p, lg, 1, 4, 2, 1, OPS_ROUTE_TOPK, &e) == 0);
  CHECK_NEAR(w[0], 4.0 / 7, 1e-7);
  CHECK_NEAR(w[1], 3.0 / 7, 1e-7);
}

TEST(ops_router_ties_go_to_lower_index) {
  rl_err e = {0};
  const float lg[2 * 4] = {0, 0, 0, 0, 1, 2, 2, 0};
  float p[8], w[4];
  int32_t id[4];
  REQUIRE(ops_router_forward_cpu(id, w, p, lg, 2, 4, 2, 1, OPS_ROUTE_TOPK, &e) == 0);
  CHECK_EQ_I64(id[0], 0);
  CHECK_EQ_I64(id[1], 1);
  CHECK_NEAR(w[0], 0.5, 0);
  CHECK_NEAR(w[1], 0.5, 0);
  CHECK_EQ_I64(id[2], 1);
  CHECK_EQ_I64(id[3], 2);
}

TEST(ops_router_replay_r3) {
  rl_err e = {0};
  const float lg[4] = {0, (float)log(2.0), (float)log(3.0), (float)log(4.0)};
  float p[4], w[2];
  int32_t id[2] = {0, 1}; /* not what top-k would choose (3, 2) */
  REQUIRE(ops_router_forward_cpu(id, w, p, lg, 1, 4, 2, 1, OPS_ROUTE_REPLAY, &e) == 0);
  CHECK_EQ_I64(id[0], 0); /* read, not overwritten */
  CHECK_NEAR(w[0], 1.0 / 3, 1e-7);
  CHECK_NEAR(w[1], 2.0 / 3, 1e-7);
  REQUIRE(ops_router_forward_cpu(id, w, p, lg, 1, 4, 2, 0, OPS_ROUTE_REPLAY, &e) == 0);
  CHECK_NEAR(w[0], 0.1, 1e-7);
  CHECK_NEAR(w[1], 0.2, 1e-7);
  const int32_t mixed[2] = {0, 3};
  CHECK_NEAR(ops_router_overlap_cpu(p, mixed, 1, 4, 2), 0.5, 0);
  const int32_t same[2] = {2, 3};
  CHECK_NEAR(ops_router_overlap_cpu(p, same, 1, 4, 2), 1.0, 0);
  int32_t bad[2] = {0, 4};
  CHECK_EQ_I64(ops_router_forward_cpu(bad, w, p, lg, 1, 4, 2, 1, OPS_ROUTE_REPLAY, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "expert id 4 at token 0, slot 1");
  int32_t dup[2] = {2, 2};
  CHECK_EQ_I64(ops_router_forward_cpu(dup, w, p, lg, 1, 4, 2, 1, OPS_ROUTE_REPLAY, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "appears twice");
  const float nan_lg[4] = {0, NAN, 0, 0};
  CHECK_EQ_I64(ops_router_forward_cpu(id, w, p, nan_lg, 1, 4, 2, 1, OPS_ROUTE_TOPK, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "expert 1 at token 0");
}

/* ---------------------------------------------------------------- log-probs */

TEST(ops_logprob_values) {
  rl_err e = {0};
  /* Row 0: zeros over V = 4 → lse = ln 4, logp = −ln 4, entropy = ln 4.
   * Row 1: logits (0, 2 ln 2, −inf-ish) at T = 2 → z = (0, ln 2, ·). */
  const float lg[2 * 4] = {0, 0, 0, 0, 0, (float)(2 * log(2.0)), -1e4f, -1e4f};
  const int32_t tg[2] = {3, 1};
  float lp[2], ent[2], lse[2];
  REQUIRE(ops_logprob_forward_cpu(lp, ent, lse, lg, tg, 2, 4, 2.0f, &e) == 0);
  /* temperature 2 also halves row 0's zeros: still uniform */
  CHECK_NEAR(lse[0], log(4.0), 1e-7);
  CHECK_NEAR(lp[0], -log(4.0), 1e-7);
  CHECK_NEAR(ent[0], log(4.0), 1e-7);
  CHECK_NEAR(lp[1], log(2.0 / 3), 1e-7);
  CHECK_NEAR(ent[1], -(1.0 / 3 * log(1.0 / 3) + 2.0 / 3 * log(2.0 / 3)), 1e-6);
  /* Backward, dlogp = 1 on row 1: (onehot − p)/T = (−1/6, 1/6, 0, 0). */
  float d[8];
  const float one[2] = {0, 1};
  REQUIRE(ops_logprob_backward_cpu(d, one, NULL, lg, lse, tg, 2, 4, 2.0f, &e) == 0);
  for (int v = 0; v < 4; v++) CHECK_NEAR(d[v], 0, 0); /* upstream 0 on row 0 */
  CHECK_NEAR(d[4], -1.0 / 6, 1e-7);
  CHECK_NEAR(d[5], 1.0 / 6, 1e-7);
  CHECK_NEAR(d[6], 0, 1e-7);
  /* In place (dlogits aliases logits) gives the same. */
  float lg2[8];
  memcpy(lg2, lg, sizeof lg);
  REQUIRE(ops_logprob_backward_cpu(lg2, one, NULL, lg2, lse, tg, 2, 4, 2.0f, &e) == 0);
  for (int v = 0; v < 8; v++) CHECK_NEAR(lg2[v], d[v], 0);
  /* No target (−1): logp 0 and no gradient from it. */
  const int32_t none[2] = {-1, -1};
  REQUIRE(ops_logprob_forward_cpu(lp, NULL, lse, lg, none, 2, 4, 1.0f, &e) == 0);
  CHECK_NEAR(lp[0], 0, 0);
  const float ones[2] = {1, 1};
  REQUIRE(ops_logprob_backward_cpu(d, ones, NULL, lg, lse, none, 2, 4, 1.0f, &e) == 0);
  for (int v = 0; v < 8; v++) CHECK_NEAR(d[v], 0, 0);
  /* Errors: a target outside the vocabulary, a temperature ≤ 0, non-finite logits. */
  const int32_t big[2] = {0, 4};
  CHECK_EQ_I64(ops_logprob_forward_cpu(lp, NULL, lse, lg, big, 2, 4, 1.0f, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "target token 4 at position 1");
  CHECK_EQ_I64(ops_logprob_forward_cpu(lp, NULL, lse, lg, tg, 2, 4, 0.0f, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "temperature");
  const float inf_lg[4] = {0, INFINITY, 0, 0};
  CHECK_EQ_I64(ops_logprob_forward_cpu(lp, NULL, lse, inf_lg, tg, 1, 4, 1.0f, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "token 0 are not finite");
}

TEST(ops_logprob_large_logits_stable) {
  /* Max subtraction: logits around 1e4 must not overflow. */
  const float lg[3] = {10000, 10000, 9999};
  const int32_t tg[1] = {2};
  float lp[1], lse[1];
  rl_err e = {0};
  REQUIRE(ops_logprob_forward_cpu(lp, NULL, lse, lg, tg, 1, 3, 1.0f, &e) == 0);
  CHECK_NEAR(lp[0], -1 - log(2 + exp(-1.0)), 1e-6);
}

/* ---------------------------------------------------------------- determinism */

/* Deterministic pseudo-random floats in [-1, 1) (a small LCG). */
static void fill(float *x, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    x[i] = (float)((seed >> 8) * (1.0 / 8388608.0) - 1.0);
  }
}

TEST(ops_reductions_independent_of_thread_count) {
  enum { T = 37, H = 70, V = 5, HQ = 4, HKV = 2, D = 8 };
  int32_t tok[T];
  for (int t = 0; t < T; t++) tok[t] = (t * 7) % V; /* many repeats */
  float *dout = malloc(sizeof(float) * T * H), *x = malloc(sizeof(float) * T * H);
  float w[H], rstd[T];
  fill(dout, (size_t)T * H, 1);
  fill(x, (size_t)T * H, 2);
  fill(w, H, 3);
  const int32_t off[4] = {0, 11, 30, 37};
  ops_seqs sq = {3, off};
  ops_attn_shape sh = {T, HQ, HKV, D};
  size_t nq = (size_t)T * HQ * D, nk = (size_t)T * HKV * D;
  float *q = malloc(4 * nq), *k = malloc(4 * nk), *v = malloc(4 * nk), *o = malloc(4 * nq);
  float *lse = malloc(4 * (size_t)T * HQ), *dO = malloc(4 * nq);
  fill(q, nq, 4), fill(k, nk, 5), fill(v, nk, 6), fill(dO, nq, 7);
  rl_err e = {0};
  ops_rmsnorm_forward_cpu(NULL, NULL, rstd, x, w, T, H, 1e-6f);
  REQUIRE(ops_attention_forward_cpu(o, NULL, lse, q, k, v, &sq, sh, &e) == 0);

  float *res[2][6];
  int threads[2] = {1, 3}, saved_threads = omp_get_max_threads();
  for (int r = 0; r < 2; r++) {
    omp_set_num_threads(threads[r]);
    float *dt = calloc((size_t)V * H, 4), *dw = calloc(H, 4);
    float *dq = malloc(4 * nq), *dk = malloc(4 * nk), *dv = malloc(4 * nk);
    REQUIRE(ops_embedding_backward_cpu(dt, dout, tok, T, V, H, &e) == 0);
    float *dx = malloc(sizeof(float) * T * H);
    ops_rmsnorm_backward_cpu(dx, dw, dout, x, w, rstd, T, H);
    REQUIRE(ops_attention_backward_cpu(dq, dk, dv, dO, o, lse, q, k, v, &sq, sh, &e) == 0);
    res[r][0] = dt, res[r][1] = dw, res[r][2] = dq, res[r][3] = dk, res[r][4] = dv, res[r][5] = dx;
  }
  omp_set_num_threads(saved_threads);
  /* The sums are right: row 0 of dtable adds the tokens with id 0, in order. */
  float s = 0;
  for (int t = 0; t < T; t++)
    if (tok[t] == 0) s += dout[(size_t)t * H + 5];
  CHECK_NEAR(res[0][0][5], s, 0);
  size_t n[6] = {(size_t)V * H, H, nq, nk, nk, (size_t)T * H};
  for (int j = 0; j < 6; j++) {
    CHECK_MSG(memcmp(res[0][j], res[1][j], n[j] * 4) == 0, "buffer %d differs between 1 and 3 threads", j);
    free(res[0][j]), free(res[1][j]);
  }
  free(dout), free(x), free(q), free(k), free(v), free(o), free(lse), free(dO);
}
