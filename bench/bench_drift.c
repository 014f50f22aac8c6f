/* bench_drift.c — rollout/train drift for every supported (rollout, train)
 * precision pair (issue #12): one model, one fixed set of sequences sampled
 * once in BF16, and per pair the mismatch metrics of RL.md between the
 * rollout log-probs (the model quantized for the rollout precision) and the
 * trainer log-probs (quantized for the train precision), on the MoE model
 * with and without R3 (stages/drift.h has the exact contract).
 *
 * Pairs: the supported rows of runner/matrix.c's precision_matrix[] (bf16 x
 * bf16 baseline, fp8-block rollout x bf16 train, unified fp8-block, unified
 * mxfp8, unified nvfp4 experts), then two contrast pairs that are not rlrun
 * modes but typical pipelines (mxfp8 rollout x bf16 train, nvfp4 experts
 * rollout x bf16 train). Policies are the runner's (loop_policy): router and
 * lm_head stay BF16; nvfp4 quantizes the routed experts only (so nvfp4 pairs
 * are skipped on dense models). On Hopper mxfp8/nvfp4 run as the exact
 * emulation (labelled). Each row also gives its logp_abs_diff as a ratio to
 * the fp8-block rollout x bf16 train row measured in the same run.
 *
 *   bench_drift                       CPU: the tiny fixture models (dense + MoE)
 *   bench_drift --device cuda         GPU: a Qwen3-0.6B-shaped dense model and a
 *                                     Qwen3-30B-A3B-per-layer MoE (--moe-layers, 4)
 *   options: --model fixture-dense|fixture-moe|qwen3-0.6b|qwen3-30b-a3b|HF_DIR (repeatable)
 *            --seqs N --prompt P --gen G (default 64 x (16 + 256) on the qwen3-* shapes,
 *            16 x (8 + 48) otherwise) --seed S (1) --moe-layers L
 *            --save-tokens PREFIX / --load-tokens PREFIX (PREFIX.<model>.tok, drift.h format)
 *   bench_drift --device cuda --engine   the rollout side is the CUDA rollout engine (decode,
 *                                     stages/rollout_cuda.h): per pair, the engine samples the
 *                                     set's prompts in the pair's rollout precision and its own
 *                                     log-probs are compared with the trainer's (drift.h, engine
 *                                     mode): the token set differs per pair; no token files
 *
 * Synthetic models (random weights, NOT trained: the numbers measure the
 * numerics on these weight statistics, not a trained model's): every matrix
 * W[out][in] ~ N(0, 1/in) (embedding and lm_head included: std 1/sqrt(hidden)),
 * every norm weight 1, drawn by Box-Muller from a counter-based hash of
 * (seed, tensor, element), then rounded to BF16. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "kernels/formats.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "runner/loop_int.h"
#include "runner/matrix.h"
#include "stages/drift.h"

#define MAX_MODELS 8
#define MAX_PAIRS 16

/* The command line. */
static struct {
  drift_device dev;
  const char *models[MAX_MODELS];
  int n_models;
  drift_sample_opts so; /* n_seq, n_prompt, n_gen: 0 = the model's default */
  int moe_layers;
  int engine;      /* --engine: the CUDA rollout engine is the rollout side */
  int exact;       /* --exact: both sides pinned, the engine in its exact mode (precision.exact_logprobs) */
  const char *save, *load;
  int emulated;    /* mxfp8 / nvfp4 run as the emulation (GPU without native support) */
  char where[512]; /* the device, for the headers */
} g;

/* One pair to measure. */
typedef struct bench_pair {
  prec_format ro, tr;
  const char *kind; /* matrix mode, or why it is a contrast pair */
  int contrast;
} bench_pair;

/* splitmix64. */
static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* Fill every parameter: matrices N(0, 1/cols), vectors 1 (see the header). */
static void init_random(model *m, uint64_t seed) {
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    int64_t n = p->rows * p->cols;
    double sd = 1.0 / sqrt((double)p->cols);
    uint64_t key = mix64(seed ^ mix64((uint64_t)i + 1));
    if (p->cols == 1) {
      for (int64_t j = 0; j < n; j++) p->w[j] = 0x3f80; /* 1.0 */
      continue;
    }
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; j += 2) {
      uint64_t h1 = mix64(key + (uint64_t)j), h2 = mix64(h1 ^ 0x5bd1e995ull);
      double u1 = ((double)(h1 >> 11) + 0.5) / 9007199254740992.0, u2 = (double)(h2 >> 11) / 9007199254740992.0;
      double r = sqrt(-2.0 * log(u1)) * sd;
      p->w[j] = fmt_bf16_from_f32((float)(r * cos(2 * M_PI * u2)));
      if (j + 1 < n) p->w[j + 1] = fmt_bf16_from_f32((float)(r * sin(2 * M_PI * u2)));
    }
  }
}

/* The config of a synthetic model: "qwen3-0.6b" or "qwen3-30b-a3b". */
static void synth_config(const char *name, model_config *c) {
  memset(c, 0, sizeof *c);
  int moe = !strcmp(name, "qwen3-30b-a3b");
  c->kind = moe ? MODEL_KIND_QWEN3_MOE : MODEL_KIND_QWEN3;
  snprintf(c->model_type, sizeof c->model_type, "%s", moe ? "qwen3_moe" : "qwen3");
  snprintf(c->rope_type, sizeof c->rope_type, "default");
  snprintf(c->hidden_act, sizeof c->hidden_act, "silu");
  c->vocab_size = 151936, c->head_dim = 128, c->max_position_embeddings = 40960;
  c->rms_norm_eps = 1e-6, c->rope_theta = 1e6, c->rope_factor = 1, c->bos_token_id = c->pad_token_id = -1;
  if (!moe) {
    c->hidden_size = 1024, c->intermediate_size = 3072, c->num_hidden_layers = 28;
    c->num_attention_heads = 16, c->num_key_value_heads = 8, c->tie_word_embeddings = 1;
  } else {
    c->hidden_size = 2048, c->intermediate_size = 6144, c->num_hidden_layers = g.moe_layers;
    c->num_attention_heads = 32, c->num_key_value_heads = 4, c->tie_word_embeddings = 0;
    c->num_experts = 128, c->num_experts_per_tok = 8, c->moe_intermediate_size = 768;
    c->decoder_sparse_step = 1, c->norm_topk_prob = 1;
    c->mlp_only_layers = NULL, c->n_mlp_only_layers = 0; /* every layer routes */
  }
}

/* Make or load the model `name`; *desc describes it for the table header. */
static model *open_model(const char *name, char *desc, size_t dn) {
  rl_err e = {0};
  model *m = NULL;
  if (!strcmp(name, "qwen3-0.6b") || !strcmp(name, "qwen3-30b-a3b")) {
    model_config c;
    synth_config(name, &c);
    if (model_create(&c, NULL, &m, &e)) {
      fprintf(stderr, "bench_drift: %s: %s\n", name, e.msg);
      exit(2);
    }
    double t0 = rl_now();
    init_random(m, g.so.seed);
    snprintf(desc, dn, "%s shape%s (random N(0, 1/fan_in) weights, init %.1f s)",
             !strcmp(name, "qwen3-0.6b") ? "Qwen3-0.6B" : "Qwen3-30B-A3B per-layer",
             !strcmp(name, "qwen3-0.6b") ? "" : ", fewer layers", rl_now() - t0);
  } else {
    const char *dir = !strcmp(name, "fixture-dense") ? "tests/fixtures/model/qwen3/hf"
                      : !strcmp(name, "fixture-moe") ? "tests/fixtures/model/qwen3_moe/hf"
                                                     : name;
    if (model_load(dir, NULL, &m, &e)) {
      fprintf(stderr, "bench_drift: %s\n", e.msg);
      exit(2);
    }
    snprintf(desc, dn, "%s (weights as saved there)", dir);
  }
  return m;
}

/* The pairs: supported ones of the matrix, then the contrast pairs. */
static int list_pairs(bench_pair *p) {
  int n = 0;
  for (int i = 0; i < PREC_COUNT * PREC_COUNT; i++) {
    const precision_pair *q = &precision_matrix[i];
    if (q->supported) p[n++] = (bench_pair){q->rollout, q->train, q->mode, 0};
  }
  p[n++] = (bench_pair){PREC_MXFP8, PREC_BF16, "contrast, not an rlrun mode: MXFP8 inference + BF16 train", 1};
  p[n++] = (bench_pair){PREC_NVFP4, PREC_BF16, "contrast, not an rlrun mode: NVFP4-expert inference + BF16 train", 1};
  return n;
}

/* A metric cell: "0" when exactly zero, else %.3e. */
static const char *cell(char *buf, double v) {
  if (v == 0) snprintf(buf, 32, "0");
  else snprintf(buf, 32, "%.3e", v);
  return buf;
}

/* The ESS cell: "1" when exactly one. */
static const char *cell_ess(char *buf, double v) {
  if (v == 1) snprintf(buf, 32, "1");
  else snprintf(buf, 32, "%.6f", v);
  return buf;
}

/* One markdown row. */
static void print_row(const bench_pair *p, int r3, const rl_mismatch *x, double overlap, double ref,
                      double entropy) {
  char a[32], b[32], c[32], d[32], ratio[32], ov[32];
  int emu = g.emulated && (p->ro >= PREC_MXFP8 || p->tr >= PREC_MXFP8);
  if (isnan(overlap)) snprintf(ov, sizeof ov, "-");
  else snprintf(ov, sizeof ov, "%.4f", overlap);
  if (x->logp_abs_diff == 0) snprintf(ratio, sizeof ratio, "0");
  else if (ref > 0) snprintf(ratio, sizeof ratio, "%.3g", x->logp_abs_diff / ref);
  else snprintf(ratio, sizeof ratio, "-");
  printf("| %s × %s | %s%s | %s | %s | %s | %s | %s | %s | %s | %.3f |\n", prec_names[p->ro], prec_names[p->tr],
         p->kind, emu ? "; emulated" : "", r3 < 0 ? "-" : r3 ? "on" : "off",
         cell(a, x->logp_abs_diff), cell(b, x->kl_k3), cell_ess(c, x->ess), cell(d, x->max_abs_diff), ov, ratio,
         entropy);
}

/* Engine mode: per rollout precision (its first pair; pairs with the same
 * rollout policy sample the same set), the engine's log-probs vs a full
 * forward of the same tokens in that precision, and the sampling time. */
static void print_engine_check(const bench_pair *pairs, const drift_result *res, const int *ok, const double *sample_s,
                               int np) {
  char a[32], b[32];
  printf("\nengine check: the CUDA engine's own log-probs vs a full forward (model_cuda_forward) of the same tokens "
         "in the rollout precision (decode vs prefill numerics; the rows above add the trainer's precision):\n\n");
  printf("| rollout (engine) | logp_abs_diff | max_abs_diff | sampling (s) | pair measured in (s) |\n|---|---|---|---|---|\n");
  for (int i = 0; i < np; i++) {
    int first = ok[i];
    for (int j = 0; j < i && first; j++) first = !(ok[j] && pairs[j].ro == pairs[i].ro);
    if (!first || !res[i].has_engine) continue;
    printf("| %s | %s | %s | %.2f | %.2f |\n", prec_names[pairs[i].ro], cell(a, res[i].engine.logp_abs_diff),
           cell(b, res[i].engine.max_abs_diff), sample_s[i], res[i].wall_s);
  }
}

/* Sample (or load) the set, measure every pair, print the table. */
static int bench_model_pairs(const char *name) {
  char desc[400];
  model *m = open_model(name, desc, sizeof desc);
  int moe = m->E > 0;
  rl_err e = {0};
  quant_policy bf16;
  loop_policy(PREC_BF16, 0, 0, &bf16);
  /* defaults: 64 x (16 + 256) on the synthetic models, 16 x (8 + 48) on the small ones */
  int big = !strcmp(name, "qwen3-0.6b") || !strcmp(name, "qwen3-30b-a3b");
  drift_sample_opts so = g.so;
  if (!so.n_seq) so.n_seq = big ? 64 : 16;
  if (!so.n_prompt) so.n_prompt = big ? 16 : 8;
  if (!so.n_gen) so.n_gen = big ? 256 : 48;
  drift_seqs s;
  memset(&s, 0, sizeof s);
  char path[1200];
  int rc = 0;
  if (g.engine) {
    /* engine mode: each pair samples its own set (below) */
  } else if (g.load) {
    snprintf(path, sizeof path, "%s.%s.tok", g.load, name);
    rc = drift_seqs_load(path, m->V, &s, &e);
  } else if (g.dev == DRIFT_CUDA) {
    rc = drift_sample_cuda(m, &bf16, &so, &s, &e);
  } else {
    rc = drift_sample_cpu(m, &bf16, &so, &s, &e);
  }
  if (!rc && g.save) {
    snprintf(path, sizeof path, "%s.%s.tok", g.save, name);
    rc = drift_seqs_save(&s, path, &e);
  }
  if (rc) {
    fprintf(stderr, "bench_drift: %s: %s\n", name, e.msg);
    model_free(m);
    return rc;
  }
  int64_t nparam = 0;
  for (int i = 0; i < m->n_params; i++) nparam += m->params[i].rows * m->params[i].cols;
  printf("\n### %s: %s\n\n", name, desc);
  printf("%s, %d layers, hidden %d, vocab %d, %.3g B parameters", moe ? "qwen3_moe" : "qwen3", m->L, m->H, m->V,
         (double)nparam / 1e9);
  if (moe) printf(", %d experts top-%d", m->E, m->topk);
  printf("; %s.\n", g.where);
  if (g.engine) {
    printf("Rollout side: the CUDA rollout engine (decode). Sequences: %d × (%d prompt + %d sampled) tokens per pair, "
           "the same prompts, sampled at T = 1 by the engine in the pair's rollout precision (so the token set "
           "differs per pair); %d measured tokens; rollout log-probs = the engine's own.\n",
           so.n_seq, so.n_prompt, so.n_gen, so.n_seq * so.n_gen);
    printf("(seed %llu; engine check and sampling times below the table)%s\n\n", (unsigned long long)g.so.seed,
           g.exact ? "\nExact mode (--exact, precision.exact_logprobs): every GEMM pinned, the engine decoding with "
                     "the forward's kernels and the trainer's log-prob kernel." : "");
  } else {
    printf("Sequences: %d × (%d prompt + %d sampled) tokens, %s; %d measured tokens.\n\n", s.n_seq, s.n_prompt,
           s.n_gen,
           g.load ? "loaded from a token file"
           : g.dev == DRIFT_CUDA ? "sampled once in bf16 at T = 1 on the GPU (full forward per position)"
                                 : "sampled once in bf16 at T = 1 by the CPU rollout engine",
           s.n_seq * s.n_gen);
    if (!g.load) printf("(seed %llu, sampling took %.1f s)\n\n", (unsigned long long)g.so.seed, s.wall_s);
  }
  printf("| rollout × train | mode | R3 | logp_abs_diff | kl_k3 | ess | max_abs_diff | r3/overlap | abs_diff ÷ "
         "fp8×bf16 | entropy (nats) |\n");
  printf("|---|---|---|---|---|---|---|---|---|---|\n");
  bench_pair pairs[MAX_PAIRS];
  int np = list_pairs(pairs);
  drift_result res[MAX_PAIRS];
  double ref = NAN, engine = NAN, sample_s[MAX_PAIRS] = {0};
  int ok[MAX_PAIRS] = {0};
  /* measure everything first: the ratio column needs the fp8 x bf16 row */
  for (int i = 0; i < np && !rc; i++) {
    bench_pair *p = &pairs[i];
    if ((p->ro == PREC_NVFP4 || p->tr == PREC_NVFP4) && !moe) continue;
    quant_policy ro, tr;
    int emu = g.dev == DRIFT_CUDA && g.emulated;
    loop_policy(p->ro, emu, 0, &ro);
    loop_policy(p->tr, emu, 0, &tr);
    ro.pin_algo = tr.pin_algo = g.exact;
    if (g.engine) {
      drift_seqs set;
      rc = drift_measure_engine_cuda(m, &so, &ro, &tr, &res[i], &set, &e);
      sample_s[i] = set.wall_s;
      drift_seqs_free(&set);
    } else {
      rc = drift_measure(m, &s, &ro, &tr, g.dev, &res[i], &e);
    }
    if (rc) {
      fprintf(stderr, "bench_drift: %s, rollout %s x train %s: %s\n", name, prec_names[p->ro], prec_names[p->tr],
              e.msg);
      break;
    }
    ok[i] = 1;
    if (p->ro == PREC_FP8_BLOCK && p->tr == PREC_BF16) ref = res[i].plain.logp_abs_diff;
    if (p->ro == PREC_BF16 && res[i].has_engine && !g.engine) engine = res[i].engine.max_abs_diff;
    fprintf(stderr, "bench_drift: %s %s x %s measured in %.2f s\n", name, prec_names[p->ro], prec_names[p->tr],
            res[i].wall_s);
  }
  for (int i = 0; i < np; i++) {
    if (!ok[i]) continue;
    print_row(&pairs[i], moe ? 0 : -1, &res[i].plain, NAN, ref, res[i].entropy);
    if (moe) print_row(&pairs[i], 1, &res[i].r3, res[i].r3_overlap, ref, res[i].entropy);
  }
  if (!moe) printf("| nvfp4 pairs | n/a: nvfp4 quantizes routed experts only; this model has none | | | | | | | | |\n");
  printf("\nentropy: mean entropy of the rollout side's next-token distribution over the measured tokens "
         "(uniform would be log V = %.3f nats).\n",
         log((double)m->V));
  if (!isnan(engine))
    printf("engine check: the rollout engine's own log-probs vs the bf16 full forward: max |δ| = %.3g "
           "(rollout.h bounds it by the log-sum-exp order: <= 2e-6).\n",
           engine);
  if (g.engine) print_engine_check(pairs, res, ok, sample_s, np);
  fflush(stdout);
  drift_seqs_free(&s);
  model_free(m);
  return rc;
}

/* Parse an integer option value in [lo, hi]. */
static int int_arg(const char *opt, const char *v, int lo, int hi) {
  char *end = NULL;
  long x = v ? strtol(v, &end, 10) : 0;
  if (!v || *end || x < lo || x > hi) {
    fprintf(stderr, "bench_drift: %s needs an integer in [%d, %d]\n", opt, lo, hi);
    exit(2);
  }
  return (int)x;
}

int main(int argc, char **argv) {
  g.dev = DRIFT_CPU;
  g.moe_layers = 4;
  g.so.seed = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      printf("usage: bench_drift [--device cpu|cuda] [--model NAME|HF_DIR]... [--seqs N] [--prompt P] [--gen G]\n"
             "                   [--seed S] [--moe-layers L] [--save-tokens PREFIX] [--load-tokens PREFIX] [--engine]\n"
             "                   [--exact]\n"
             "models: fixture-dense fixture-moe (CPU default), qwen3-0.6b qwen3-30b-a3b (GPU default)\n"
             "--engine (with --device cuda): the rollout side is the CUDA rollout engine (decode), sampling\n"
             "         each pair's own set in its rollout precision; the default is the full-forward mode\n"
             "--exact: every GEMM of both sides pinned and the engine in its exact mode, as a run with\n"
             "         precision.exact_logprobs (with --engine: the engine's decode by the forward's kernels)\n");
      return 0;
    } else if (!strcmp(a, "--device") && v) {
      if (!strcmp(v, "cuda")) g.dev = DRIFT_CUDA;
      else if (!strcmp(v, "cpu")) g.dev = DRIFT_CPU;
      else {
        fprintf(stderr, "bench_drift: --device cpu|cuda, not '%s'\n", v);
        return 2;
      }
      i++;
    } else if (!strcmp(a, "--model") && v && g.n_models < MAX_MODELS) g.models[g.n_models++] = argv[++i];
    else if (!strcmp(a, "--seqs")) g.so.n_seq = int_arg(a, v, 1, 4096), i++;
    else if (!strcmp(a, "--prompt")) g.so.n_prompt = int_arg(a, v, 1, 4096), i++;
    else if (!strcmp(a, "--gen")) g.so.n_gen = int_arg(a, v, 1, 8192), i++;
    else if (!strcmp(a, "--seed")) g.so.seed = (uint64_t)int_arg(a, v, 0, 1 << 30), i++;
    else if (!strcmp(a, "--moe-layers")) g.moe_layers = int_arg(a, v, 1, 94), i++;
    else if (!strcmp(a, "--engine")) g.engine = 1;
    else if (!strcmp(a, "--exact")) g.exact = 1;
    else if (!strcmp(a, "--save-tokens") && v) g.save = argv[++i];
    else if (!strcmp(a, "--load-tokens") && v) g.load = argv[++i];
    else {
      fprintf(stderr, "bench_drift: unknown or incomplete option '%s' (see --help)\n", a);
      return 2;
    }
  }
  int gpu = g.dev == DRIFT_CUDA;
  if (g.engine && !gpu) {
    fprintf(stderr, "bench_drift: --engine measures the CUDA rollout engine and needs --device cuda (on the CPU the "
                    "engine's decode equals the full forward bit for bit, so the default mode already measures it)\n");
    return 2;
  }
  if (g.engine && (g.save || g.load)) {
    fprintf(stderr, "bench_drift: --engine samples a new set per pair (its rollout precision); it takes no "
                    "--save-tokens / --load-tokens\n");
    return 2;
  }
  g.so.progress = 1;
  if (!g.n_models) {
    g.models[g.n_models++] = gpu ? "qwen3-0.6b" : "fixture-dense";
    g.models[g.n_models++] = gpu ? "qwen3-30b-a3b" : "fixture-moe";
  }
  if (gpu) {
    device_info d;
    device_query(&d);
    if (!d.built_with_cuda || d.n_gpus == 0) {
      printf("bench_drift: no usable GPU (%s); skipped. Run without --device cuda for the CPU tables.\n",
             d.built_with_cuda ? d.status : "built without CUDA");
      return 0;
    }
    g.emulated = d.gpus[0].cc_major < 10;
    snprintf(g.where, sizeof g.where, "GPU %s (sm_%d%d)%s", d.gpus[0].name, d.gpus[0].cc_major, d.gpus[0].cc_minor,
             g.emulated ? ": mxfp8 and nvfp4 run as the exact emulation (quantize, dequantize, BF16 GEMM)" : "");
  } else {
    snprintf(g.where, sizeof g.where, "CPU reference numerics");
  }
  printf("## rollout/train drift (bench_drift)%s\n", g.engine ? " — rollout side: the CUDA rollout engine (decode)" : "");
  int rc = 0;
  for (int i = 0; i < g.n_models && !rc; i++) rc = bench_model_pairs(g.models[i]);
  return rc;
}
