/* test_model.c — the Qwen3 / Qwen3-MoE model on the CPU against the fixtures
 * transformers wrote (tests/oracle/make_model_fixtures.py: tiny seeded models,
 * two packed sequences of 16 and 11 tokens, FP32 oracle on the CPU).
 *
 * Error measure of a tensor (llm.c style; every one printed, the five worst
 * gradients named): rel = max_i |ours − ref| / max_i |ref|. Tolerances, with
 * the worst measured on this machine in brackets (bounds ≈ 2× that):
 *   F32 mode (FP32 weights, FP64 sums): logits and activations rel ≤ 2e-5
 *     [1e-6]; log-probs abs ≤ 2e-5 [1.4e-6]; loss abs ≤ 1e-5 [5e-7]; every
 *     gradient rel ≤ 1e-4 [2e-6].
 *   POLICY BF16 (BF16 master = RNE of the FP32 checkpoint, BF16 at every
 *     linear input and output — lm_head included, so logits are BF16 values —
 *     BF16 backward GEMMs with FP32 accumulation). Against the FP32 oracle:
 *     logits rel ≤ 3e-2 [1.4e-2], log-probs abs ≤ 8e-2 [4.3e-2], loss abs
 *     ≤ 2e-3 [8e-4], gradients rel ≤ 8e-2 per tensor [4.2e-2: MoE expert
 *     down_proj; dense 2.9e-2]. Against transformers run in BF16 on the CPU
 *     (which also rounds norms, residuals and attention to BF16): logits rel
 *     ≤ 5e-2 [1.9e-2], log-probs abs ≤ 1.5e-1 [8.2e-2]. One BF16 rounding is
 *     ≤ 2^-9 ≈ 2e-3 relative. For scale: transformers' own BF16 run differs
 *     from its FP32 run by logits rel 1.44e-2 and log-probs 5.6e-2 on the
 *     same inputs — the BF16 weights dominate (FP32 logits out of lm_head
 *     would only take our 4.3e-2 to 3.9e-2).
 *   MoE: top-k ids equal the fixture's in both modes (its margin is ≥ 4.8e-3
 *     in probability); R3 replay of those ids reproduces the top-k logits bit
 *     for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "model/model.h"
#include "state/safetensors.h"

#define FX_ROOT "tests/fixtures/model"

/* A fixture tensor as FP32 (F32 or I32 converted), NULL when absent. */
static float *fx_f32(st_file *f, const char *name, size_t *n) {
  const st_tensor *t = st_file_find(f, name);
  if (!t) return NULL;
  rl_err e = {0};
  void *raw = malloc(t->nbytes + 4);
  if (st_file_read(f, t, raw, &e)) {
    free(raw);
    return NULL;
  }
  if (n) *n = t->numel;
  if (t->dtype == ST_I32) {
    float *x = malloc(t->numel * sizeof(float) + 4);
    for (size_t i = 0; i < t->numel; i++) x[i] = (float)((int32_t *)raw)[i];
    free(raw);
    return x;
  }
  return raw;
}

/* A fixture I32 tensor. */
static int32_t *fx_i32(st_file *f, const char *name, size_t *n) {
  const st_tensor *t = st_file_find(f, name);
  if (!t || t->dtype != ST_I32) return NULL;
  rl_err e = {0};
  int32_t *x = malloc(t->nbytes + 4);
  if (st_file_read(f, t, x, &e)) {
    free(x);
    return NULL;
  }
  if (n) *n = t->numel;
  return x;
}

/* max|a−b| / max|b| (b the reference). */
static double rel_err(const float *a, const float *b, size_t n, size_t *worst_i) {
  double dm = 0, bm = 0;
  size_t wi = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= dm)) dm = d, wi = i;
    bm = fmax(bm, fabs((double)b[i]));
  }
  if (worst_i) *worst_i = wi;
  return bm > 0 ? dm / bm : dm;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
  double dm = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= dm)) dm = d;
  }
  return dm;
}

/* One fixture run: the fixture, the model, one forward + CE backward. */
typedef struct fx_run {
  st_file *f;
  model *m;
  model_acts *a;
  int T;
  int32_t *tokens, *off, *targets;
  float *logp;
  double loss;
} fx_run;

/* Load fixture `name` (model from subdir hf_sub), quantize per fmt (or F32
 * mode), run forward + loss + backward; replay = per-layer ids or NULL. */
static int fx_start(fx_run *r, const char *name, const char *hf_sub, int f32, qformat fmt,
                    const int32_t *const *replay) {
  memset(r, 0, sizeof *r);
  char path[512];
  rl_err e = {0};
  snprintf(path, sizeof path, FX_ROOT "/%s/fixtures.safetensors", name);
  if (st_file_open(path, &r->f, &e)) {
    harness_fail(__FILE__, __LINE__, "%s", e.msg);
    return 1;
  }
  snprintf(path, sizeof path, FX_ROOT "/%s/%s", name, hf_sub);
  model_load_opts lo = {f32};
  if (model_load(path, &lo, &r->m, &e)) {
    harness_fail(__FILE__, __LINE__, "model_load: %s", e.msg);
    return 1;
  }
  quant_policy p;
  quant_policy_init(&p, fmt, fmt);
  if (!f32 && model_quantize(r->m, &p, &e)) {
    harness_fail(__FILE__, __LINE__, "model_quantize: %s", e.msg);
    return 1;
  }
  size_t nt = 0, no = 0;
  r->tokens = fx_i32(r->f, "tokens", &nt);
  r->off = fx_i32(r->f, "seq_off", &no);
  r->targets = fx_i32(r->f, "targets", NULL);
  if (!r->tokens || !r->off || !r->targets) {
    harness_fail(__FILE__, __LINE__, "fixture %s lacks tokens/seq_off/targets", name);
    return 1;
  }
  r->T = (int)nt;
  r->a = model_acts_new();
  model_batch b = {r->T, r->tokens, {(int)no - 1, r->off}};
  model_fwd_opts fo = {.f32 = f32, .replay_ids = replay};
  if (model_forward(r->m, &b, &fo, r->a, &e)) {
    harness_fail(__FILE__, __LINE__, "model_forward: %s", e.msg);
    return 1;
  }
  r->logp = malloc((size_t)r->T * sizeof(float));
  float *dlogp = malloc((size_t)r->T * sizeof(float));
  int rc = model_logprob_forward(r->a, r->targets, 1.0f, r->logp, NULL, &e);
  r->loss = model_loss_ce(r->logp, r->targets, r->T, dlogp);
  model_grads_init(r->m);
  if (!rc) rc = model_backward_logprob(r->m, r->a, dlogp, NULL, &e);
  free(dlogp);
  if (rc) harness_fail(__FILE__, __LINE__, "backward: %s", e.msg);
  return rc;
}

static void fx_end(fx_run *r) {
  if (r->f) st_file_close(r->f);
  model_free(r->m);
  model_acts_free(r->a);
  free(r->tokens), free(r->off), free(r->targets), free(r->logp);
}

/* Compare a->logits, the activations and log-probs with the fixture. */
static void fx_check_forward(fx_run *r, const char *label, const char *logits_name,
                             const char *logp_name, double tol_rel, double tol_lp) {
  size_t n = 0;
  float *ref = fx_f32(r->f, logits_name, &n);
  REQUIRE(ref && n == (size_t)r->T * r->m->V);
  double le = rel_err(r->a->logits, ref, n, NULL);
  float *lref = fx_f32(r->f, logp_name, NULL);
  REQUIRE(lref);
  for (int t = 0; t < r->T; t++)
    if (r->targets[t] < 0) lref[t] = 0, r->logp[t] = 0;
  double lpe = max_abs_diff(r->logp, lref, (size_t)r->T);
  printf("  %s: logits rel %.2e (tol %.0e), log-probs max abs %.2e (tol %.0e)\n", label, le,
         tol_rel, lpe, tol_lp);
  CHECK(le <= tol_rel);
  CHECK(lpe <= tol_lp);
  char nm[64];
  for (int l = -1; l <= r->m->L; l++) {
    const float *ours = l < 0 ? r->a->res : l < r->m->L ? r->a->res + (size_t)(l + 1) * r->T * r->m->H : r->a->xf;
    if (l < 0) snprintf(nm, sizeof nm, "act.embed");
    else if (l < r->m->L) snprintf(nm, sizeof nm, "act.layer.%d", l);
    else snprintf(nm, sizeof nm, "act.final_norm");
    float *ar = fx_f32(r->f, nm, &n);
    if (!ar) continue;
    double ae = rel_err(ours, ar, n, NULL);
    printf("    %-16s rel %.2e\n", nm, ae);
    CHECK_MSG(ae <= tol_rel, "%s: %s rel err %.3g > %.3g", label, nm, ae, tol_rel);
    free(ar);
  }
  free(ref), free(lref);
}

/* Every gradient against grad.NAME; prints the five worst tensors. */
static void fx_check_grads(fx_run *r, const char *label, double tol) {
  int np = r->m->n_params, checked = 0;
  double *errs = calloc((size_t)np, sizeof(double));
  for (int i = 0; i < np; i++) {
    model_param *p = &r->m->params[i];
    char nm[160];
    snprintf(nm, sizeof nm, "grad.%s", p->name);
    size_t n = 0;
    float *g = fx_f32(r->f, nm, &n);
    CHECK_MSG(g && n == (size_t)(p->rows * p->cols), "%s: fixture has no %s of %lld elements",
              label, nm, (long long)(p->rows * p->cols));
    if (!g) continue;
    errs[i] = rel_err(p->g, g, n, NULL);
    checked++;
    CHECK_MSG(errs[i] <= tol, "%s: %s rel err %.3g > %.3g", label, p->name, errs[i], tol);
    free(g);
  }
  printf("  %s: %d gradients, worst:", label, checked);
  for (int w = 0; w < 5; w++) {
    int bi = -1;
    for (int i = 0; i < np; i++)
      if (errs[i] >= 0 && (bi < 0 || errs[i] > errs[bi])) bi = i;
    if (bi < 0) break;
    printf("%s %s %.2e", w ? "," : "", r->m->params[bi].name + (strncmp(r->m->params[bi].name, "model.", 6) ? 0 : 6), errs[bi]);
    errs[bi] = -1;
  }
  printf(" (tol %.0e)\n", tol);
  CHECK_EQ_I64(checked, np);
  free(errs);
}

/* The fixture's loss vs ours. */
static void fx_check_loss(fx_run *r, double tol) {
  float *lo = fx_f32(r->f, "loss", NULL);
  REQUIRE(lo);
  printf("  loss %.7f vs transformers %.7f\n", r->loss, lo[0]);
  CHECK_NEAR(r->loss, lo[0], tol);
  free(lo);
}

TEST(model_qwen3_f32_matches_transformers) {
  fx_run r;
  if (fx_start(&r, "qwen3", "hf", 1, QFMT_BF16, NULL) == 0) {
    CHECK(r.m->cfg.tie_word_embeddings && r.m->lm_head.p == r.m->embed);
    fx_check_forward(&r, "qwen3 f32", "logits", "logprobs", 2e-5, 2e-5);
    fx_check_loss(&r, 1e-5);
    fx_check_grads(&r, "qwen3 f32 grads", 1e-4);
  }
  fx_end(&r);
}

TEST(model_qwen3_bf16_policy_within_bf16_tolerance) {
  fx_run r;
  if (fx_start(&r, "qwen3", "hf", 0, QFMT_BF16, NULL) == 0) {
    fx_check_forward(&r, "qwen3 bf16 vs fp32 oracle", "logits", "logprobs", 3e-2, 8e-2);
    fx_check_forward(&r, "qwen3 bf16 vs transformers bf16", "logits_bf16", "logprobs_bf16", 5e-2, 1.5e-1);
    fx_check_loss(&r, 2e-3);
    fx_check_grads(&r, "qwen3 bf16 grads", 8e-2);
  }
  fx_end(&r);
}

TEST(model_qwen3_bf16_checkpoint_loads_same_master) {
  /* hf-bf16 holds the RNE of the FP32 weights: the BF16 masters must be equal */
  rl_err e = {0};
  model *a = NULL, *b = NULL;
  REQUIRE(model_load(FX_ROOT "/qwen3/hf", NULL, &a, &e) == 0);
  REQUIRE(model_load(FX_ROOT "/qwen3/hf-bf16", NULL, &b, &e) == 0);
  int diff = 0;
  for (int i = 0; i < a->n_params; i++)
    diff += memcmp(a->params[i].w, b->params[i].w, (size_t)(a->params[i].rows * a->params[i].cols) * 2) != 0;
  CHECK_EQ_I64(diff, 0);
  CHECK_EQ_I64(a->n_params, 24);
  model_free(a), model_free(b);
}

/* Top-k ids of the sparse layers equal the fixture's. */
static void fx_check_topk(fx_run *r, const char *label) {
  for (int l = 0; l < r->m->L; l++) {
    if (!r->m->layers[l].moe) continue;
    char nm[64];
    snprintf(nm, sizeof nm, "topk_ids.layer.%d", l);
    size_t n = 0;
    int32_t *ids = fx_i32(r->f, nm, &n);
    REQUIRE(ids && n == (size_t)r->T * r->m->topk);
    const int32_t *ours = model_routed_ids(r->a, l);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += ours[i] != ids[i];
    printf("  %s: layer %d top-%d ids: %d of %zu differ\n", label, l, r->m->topk, bad, n);
    CHECK_EQ_I64(bad, 0);
    snprintf(nm, sizeof nm, "router_logits.layer.%d", l);
    float *rl = fx_f32(r->f, nm, &n);
    REQUIRE(rl);
    double re = rel_err(r->a->la[l].rlogits, rl, n, NULL);
    printf("  %s: router logits rel %.2e\n", label, re);
    CHECK(re <= (r->a->f32 ? 2e-5 : 3e-2));
    snprintf(nm, sizeof nm, "topk_weights.layer.%d", l);
    float *tw = fx_f32(r->f, nm, &n);
    REQUIRE(tw);
    CHECK(max_abs_diff(r->a->la[l].rw, tw, n) <= (r->a->f32 ? 1e-5 : 3e-2));
    free(ids), free(rl), free(tw);
  }
}

TEST(model_qwen3_moe_f32_matches_transformers) {
  fx_run r;
  if (fx_start(&r, "qwen3_moe", "hf", 1, QFMT_BF16, NULL) == 0) {
    CHECK(r.m->layers[1].moe && !r.m->layers[0].moe && r.m->lm_head.p != r.m->embed);
    fx_check_topk(&r, "moe f32");
    fx_check_forward(&r, "moe f32", "logits", "logprobs", 2e-5, 2e-5);
    fx_check_loss(&r, 1e-5);
    fx_check_grads(&r, "moe f32 grads", 1e-4);
  }
  fx_end(&r);
}

TEST(model_qwen3_moe_bf16_policy_and_r3_replay) {
  fx_run r, rp = {0};
  if (fx_start(&r, "qwen3_moe", "hf", 0, QFMT_BF16, NULL) == 0) {
    fx_check_topk(&r, "moe bf16");
    fx_check_forward(&r, "moe bf16", "logits", "logprobs", 3e-2, 8e-2);
    fx_check_loss(&r, 2e-3);
    fx_check_grads(&r, "moe bf16 grads", 8e-2);
    /* R3: replaying the fixture's ids gives the same logits, bit for bit */
    int32_t *ids = fx_i32(r.f, "topk_ids.layer.1", NULL);
    const int32_t *replay[2] = {NULL, ids};
    if (ids && fx_start(&rp, "qwen3_moe", "hf", 0, QFMT_BF16, replay) == 0) {
      size_t n = (size_t)r.T * r.m->V;
      CHECK_EQ_I64(memcmp(rp.a->logits, r.a->logits, n * sizeof(float)), 0);
      /* and the router receives the same gradient through the gathered probabilities */
      model_param *gr = model_find_param(rp.m, "model.layers.1.mlp.gate.weight");
      model_param *g0 = model_find_param(r.m, "model.layers.1.mlp.gate.weight");
      REQUIRE(gr && g0);
      CHECK_EQ_I64(memcmp(gr->g, g0->g, (size_t)(gr->rows * gr->cols) * 4), 0);
    }
    fx_end(&rp);
    free(ids);
  }
  fx_end(&r);
}

/* A sequence's logits do not depend on what else is in the batch (BF16 and
 * fp8-block: row-wise activation quantization): each sequence alone gives
 * bitwise the rows of the packed run. Dense and MoE. */
TEST(model_logits_independent_of_batch_layout) {
  const char *names[2] = {"qwen3", "qwen3_moe"};
  qformat fmts[2] = {QFMT_BF16, QFMT_FP8_BLOCK};
  for (int mi = 0; mi < 2; mi++)
    for (int fi = 0; fi < 2; fi++) {
      fx_run r;
      if (fx_start(&r, names[mi], "hf", 0, fmts[fi], NULL)) {
        fx_end(&r);
        return;
      }
      int diff = 0;
      rl_err e = {0};
      model_acts *a = model_acts_new();
      for (int s = 0; s < 2; s++) {
        int n = r.off[s + 1] - r.off[s];
        int32_t off[2] = {0, n};
        model_batch b = {n, r.tokens + r.off[s], {1, off}};
        REQUIRE(model_forward(r.m, &b, NULL, a, &e) == 0);
        diff += memcmp(a->logits, r.a->logits + (size_t)r.off[s] * r.m->V,
                       (size_t)n * r.m->V * sizeof(float)) != 0;
      }
      printf("  %s %s: %d of 2 sequences differ alone vs packed\n", names[mi],
             qtensor_format_name(fmts[fi]), diff);
      CHECK_EQ_I64(diff, 0);
      model_acts_free(a);
      fx_end(&r);
    }
}

/* Loading errors name the tensor: a config that does not fit the weights. */
/* model_load checks the weights against config.json before reading them
 * (model_ckpt_check, which `rlrun convert` runs too): the layer count both
 * ways (it took 1 layer of a 2-layer checkpoint), a shape, named exactly. */
TEST(model_load_errors_name_the_tensor) {
  const char *dir = harness_tmpdir();
  char cmd[2048], text[2048];
  rl_err e = {0};
  model *m = NULL;
  snprintf(cmd, sizeof cmd,
           "mkdir -p %s/l3 %s/l1 %s/i64 && cp " FX_ROOT "/qwen3/hf/model.safetensors %s/l3/ && cp " FX_ROOT
           "/qwen3/hf/model.safetensors %s/l1/ && cp " FX_ROOT "/qwen3/hf/model.safetensors %s/i64/ && "
           "sed 's/\"num_hidden_layers\": 2/\"num_hidden_layers\": 3/' " FX_ROOT "/qwen3/hf/config.json > %s/l3/config.json && "
           "sed 's/\"num_hidden_layers\": 2/\"num_hidden_layers\": 1/' " FX_ROOT "/qwen3/hf/config.json > %s/l1/config.json && "
           "sed 's/\"intermediate_size\": 128/\"intermediate_size\": 64/' " FX_ROOT "/qwen3/hf/config.json > %s/i64/config.json",
           dir, dir, dir, dir, dir, dir, dir, dir, dir);
  REQUIRE(harness_run(cmd, text, sizeof text) == 0);
  char p[1024], want[2048];
  snprintf(p, sizeof p, "%s/l3", dir);
  CHECK_EQ_I64(model_load(p, NULL, &m, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "loading model %s: config.json says num_hidden_layers = 3, but the checkpoint's tensors "
           "are for 2 layers (model.layers.0 to model.layers.1): the config and the weights disagree; fix "
           "num_hidden_layers or use the config.json these weights came with", p);
  CHECK_STREQ(e.msg, want);
  CHECK(m == NULL);
  snprintf(p, sizeof p, "%s/l1", dir);
  CHECK_EQ_I64(model_load(p, NULL, &m, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "loading model %s: config.json says num_hidden_layers = 1, but the checkpoint's tensors "
           "are for 2 layers (model.layers.0 to model.layers.1): the config and the weights disagree; fix "
           "num_hidden_layers or use the config.json these weights came with", p);
  CHECK_STREQ(e.msg, want);
  CHECK(m == NULL);
  snprintf(p, sizeof p, "%s/i64", dir);
  CHECK_EQ_I64(model_load(p, NULL, &m, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "loading model %s: tensor 'model.layers.0.mlp.gate_proj.weight' (model.safetensors) "
           "has shape [128, 128], but config.json implies [64, 128] = [intermediate_size, hidden_size]: the config "
           "and the weights disagree; use the config.json these weights came with, or re-export the checkpoint", p);
  CHECK_STREQ(e.msg, want);
  snprintf(p, sizeof p, "%s/none", dir);
  CHECK(model_load(p, NULL, &m, &e) != 0);
}

/* model_tensor_specs lists what model_create allocates (names, shapes, order)
 * for both fixtures, and model_ckpt_check passes their checkpoints with no
 * tensor unused. */
TEST(model_tensor_specs_match_model_create_and_fixtures) {
  const char *names[2] = {"qwen3", "qwen3_moe"};
  for (int k = 0; k < 2; k++) {
    char dir[256];
    snprintf(dir, sizeof dir, FX_ROOT "/%s/hf", names[k]);
    model_config c;
    rl_err e = {0};
    REQUIRE(model_config_load_hf(dir, &c, &e) == 0);
    model_tensor_spec *sp = NULL;
    int n = model_tensor_specs(&c, &sp);
    model *m = NULL;
    REQUIRE(model_create(&c, NULL, &m, &e) == 0);
    CHECK_EQ_I64(n, m->n_params);
    for (int i = 0; i < n && i < m->n_params; i++) {
      CHECK_STREQ(sp[i].name, m->params[i].name);
      CHECK_EQ_I64(sp[i].rows, m->params[i].rows);
      CHECK_EQ_I64(sp[i].cols, m->params[i].cols);
      CHECK_EQ_I64(sp[i].vec, strstr(sp[i].name, "norm") != NULL);
    }
    st_ckpt *ck = NULL;
    REQUIRE(st_ckpt_open(dir, &ck, &e) == 0);
    model_ckpt_report r;
    CHECK_EQ_I64(model_ckpt_check(&c, ck, &r, &e), 0);
    CHECK_EQ_I64(r.n_unused, 0);
    CHECK_STREQ(r.first_unused, "");
    CHECK_EQ_I64(st_ckpt_n_tensors(ck), n);
    st_ckpt_close(ck);
    free(sp);
    model_free(m);
    model_config_free(&c);
  }
}

/* keep_bf16 globs: what fnmatch would silently take as matching nothing is refused. */
TEST(model_keep_bf16_pattern_check_refuses_broken_globs) {
  const char *good[] = {"*.o_proj", "model.layers.[0-3].*", "[!0-9]*", "*[]]*", "[[:digit:][:alpha:]]", "a\\[b",
                        "lm_head", "*.[[:alnum:]]_proj.weight", "[^a]"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    rl_err e = {0};
    CHECK_MSG(model_keep_bf16_pattern_check(good[i], &e) == 0, "'%s': %s", good[i], e.msg);
  }
  struct {
    const char *pat, *msg;
  } bad[] = {
      {"[", "pattern '[': the '[' at position 1 opens a bracket expression that no ']' closes (tensor names hold "
            "no '['); close it, e.g. 'model.layers.[0-3].*'"},
      {"[]", "pattern '[]': the '[' at position 1 opens"},
      {"*.[!]", "pattern '*.[!]': the '[' at position 3 opens"},
      {"a[b\\]", "pattern 'a[b\\]': the '[' at position 2 opens"},
      {"[[:alpha:]", "pattern '[[:alpha:]': the '[' at position 1 opens"},
      {"[[:alpha]]", "pattern '[[:alpha]]': '[:' at position 2 is not closed by ':]'"},
      {"[[:Digit:]]", "pattern '[[:Digit:]]': [:Digit:] at position 2 is not a character class"},
      {"x\\", "pattern 'x\\' ends in a lone '\\' (an escape with nothing to escape); remove it"},
      {"", "the pattern is empty; give a glob such as '*.o_proj'"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    rl_err e = {0};
    CHECK_EQ_I64(model_keep_bf16_pattern_check(bad[i].pat, &e), RL_EXIT_USAGE);
    CHECK_CONTAINS(e.msg, bad[i].msg);
  }
}
