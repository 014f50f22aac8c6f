/* rollout_gpu_test.c — the CUDA rollout engine (stages/rollout_cuda.h) on the
 * tiny fixture models (tests/fixtures/model/{qwen3,qwen3_moe}/hf), BF16 policy:
 *   1. greedy tokens == the CPU engine's greedy tokens (required) and ==
 *      transformers' greedy (greedy.json; required, a divergence prints the
 *      fixture's FP32 margin at that step);
 *   2. rollout log-probs vs model_cuda_forward + model_cuda_logprob_forward
 *      over the same tokens: max |Δ| ≤ 2e-2 (decode attention FP32 SIMT vs
 *      the full forward's BF16 tensor-core attention; reported for fp8-block);
 *   3. batch-size invariance: T = 1 sampling, 3 prompts × 4 samples with 1, 7
 *      and 64 slots give identical tokens and log-prob bits;
 *   4. stop rules with a tokenizer (a character vocabulary covering the model's
 *      ids: U+0100 … as 2-byte UTF-8 characters): greedy,
 *      EOS = the id the CPU's greedy run emits at its 5th step, and a stop
 *      string cut from the CPU's completion text — the GPU engine's finish
 *      reasons, stop indices, completion texts and ids equal the CPU engine's;
 *   5. the decode attention kernels alone (two-phase and staged): head_dim
 *      32/64/128, 1/2/4/8 query heads per KV head, lengths 1 … max_len over
 *      split boundaries, scattered slots: vs an FP64 softmax attention within
 *      2^-8·max|v| (P is rounded to BF16), each row bitwise the same alone as
 *      in the batch; then 1–4 again with the kernel that is not the default.
 *
 *   build/gpu/rollout_gpu_test      one line per check; exit 1 on any failure */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"
#include "kernels/formats.h"
#include "kernels/gemm.h"
#include "kernels/qtensor.h"
#include "kernels/quant.h"
#include "model/model.h"
#include "model/model_cuda.h"
#include "stages/rollout.h"
#include "stages/rollout_cuda.h"
#include "stages/rollout_cuda_kern.h"
#include "stages/tokenizer.h"

static int g_fail, g_pass;
static int g_attn_mode0; /* the default decode attention mode (the exact checks run under it only) */

/* Record one check. */
static void check(int ok, const char *what, const char *fmt, double v) {
  printf("%-4s %-48s ", ok ? "ok" : "FAIL", what);
  printf(fmt, v);
  printf("\n");
  ok ? g_pass++ : g_fail++;
}

#if RLRUN_CUDA
#include <cuda_runtime_api.h>
#define MAXP 8
#define MAXN 64
typedef struct fix {
  int np, nt;
  int32_t prompt[MAXP][MAXN], greedy[MAXP][MAXN];
  int64_t n_prompt[MAXP];
  double margin[MAXP][MAXN];
} fix;

/* Read greedy.json into f; 0 or -1. */
static int fix_load(const char *path, fix *f) {
  json_error_t je;
  json_t *r = json_load_file(path, 0, &je);
  if (!r) return -1;
  json_t *P = json_object_get(r, "prompts"), *G = json_object_get(r, "greedy"), *M = json_object_get(r, "margins");
  f->nt = (int)json_integer_value(json_object_get(r, "new_tokens"));
  f->np = (int)json_array_size(P);
  if (f->np > MAXP || f->nt > MAXN) f->np = 0;
  for (int p = 0; p < f->np; p++) {
    json_t *a = json_array_get(P, p);
    f->n_prompt[p] = (int64_t)json_array_size(a);
    for (size_t j = 0; j < json_array_size(a) && j < MAXN; j++) f->prompt[p][j] = (int32_t)json_integer_value(json_array_get(a, j));
    for (int j = 0; j < f->nt; j++) {
      f->greedy[p][j] = (int32_t)json_integer_value(json_array_get(json_array_get(G, p), j));
      f->margin[p][j] = json_number_value(json_array_get(json_array_get(M, p), j));
    }
  }
  json_decref(r);
  return f->np > 0 ? 0 : -1;
}

/* Max |rollout logp − full-forward logp| over every sample of b. */
static double logp_gap(model *m, const rollout_batch *b, rl_err *e) {
  model_cuda_acts *a = model_cuda_acts_new();
  double worst = 0;
  for (int64_t i = 0; i < b->n; i++) {
    const rollout_sample *s = &b->s[i];
    int T = (int)(s->n_prompt + s->n_completion);
    int32_t *tok = malloc((size_t)T * 4), *tgt = malloc((size_t)T * 4), off[2] = {0, T};
    float *lp = malloc((size_t)T * 4);
    memcpy(tok, s->prompt_ids, (size_t)s->n_prompt * 4);
    memcpy(tok + s->n_prompt, s->completion_ids, (size_t)s->n_completion * 4);
    for (int t = 0; t < T; t++) tgt[t] = t + 1 < T ? tok[t + 1] : -1;
    model_batch mb = {0};
    mb.T = T, mb.tokens = tok, mb.seqs.n_seq = 1, mb.seqs.off = off;
    if (model_cuda_forward(m, &mb, NULL, a, e) || model_cuda_logprob_forward(m, a, tgt, 1.0f, lp, NULL, e)) {
      fprintf(stderr, "full forward: %s\n", e->msg);
      worst = INFINITY;
    } else {
      for (int64_t j = 0; j < s->n_completion; j++) {
        double d = fabs((double)s->logp_rollout[j] - lp[s->n_prompt - 1 + j]);
        if (!(d <= worst)) worst = d;
      }
    }
    free(tok), free(tgt), free(lp);
  }
  model_cuda_acts_free(a);
  return worst;
}

/* Every check on fixture model `name`. */
/* Check 4: the stop rules on the GPU == on the CPU (greedy, same tokens). */
static void stop_rules_check(const char *name, model *m, const quant_policy *pol, const int32_t *const *ids,
                             const int64_t *n_ids, int np, int nt) {
  char what[128], *chars = malloc((size_t)2 * m->V + 1);
  int nc = m->V - 3; /* ids 3 … V−1: one character each, U+0100 + i (2 bytes in UTF-8) */
  for (int i = 0; i < nc; i++) {
    int cp = 0x100 + i;
    chars[2 * i] = (char)(0xC0 | (cp >> 6)), chars[2 * i + 1] = (char)(0x80 | (cp & 0x3F));
  }
  chars[2 * nc] = 0;
  rl_err e = {0};
  tokenizer *tok = NULL;
  rollout_engine *ce = NULL;
  rollout_cuda_engine *ge = NULL;
  rollout_batch c0, cb, gb;
  rollout_opts o;
  rollout_opts_default(&o);
  o.greedy = 1, o.temperature = 0, o.max_new_tokens = nt, o.add_bos = 0, o.eos_id = -1;
  int trc = tokenizer_chars_new(chars, &tok, &e);
  free(chars);
  if (trc || rollout_engine_new(m, pol, tok, NULL, &ce, &e) ||
      rollout_generate_ids(ce, ids, n_ids, np, 1, 0, &o, &c0, &e)) {
    snprintf(what, sizeof what, "%s stop rules: CPU (%.60s)", name, e.msg);
    check(0, what, "%g", 0);
    return;
  }
  /* a stop string: 2 characters from the middle of prompt 0's completion; EOS: the 5th token of prompt 1 */
  char stop[8] = "";
  size_t L = strlen(c0.s[0].completion_text);
  if (L >= 8) memcpy(stop, c0.s[0].completion_text + (L / 2 & ~(size_t)1), 4), stop[4] = 0;
  char *stops[1] = {stop};
  o.eos_id = np > 1 && c0.s[1].n_completion > 4 ? c0.s[1].completion_ids[4] : -1;
  o.stop = stop[0] ? stops : NULL, o.n_stop = stop[0] ? 1 : 0;
  printf("     stop rules: stop string \"%s\", eos id %d\n", stop, o.eos_id);
  if (rollout_generate_ids(ce, ids, n_ids, np, 1, 0, &o, &cb, &e) || rollout_cuda_engine_new(m, pol, 8, 256, &ge, &e)) {
    snprintf(what, sizeof what, "%s stop rules: (%.60s)", name, e.msg);
    check(0, what, "%g", 0);
    return;
  }
  rollout_cuda_engine_set_tokenizer(ge, tok);
  int bad = 0, reasons[4] = {0};
  if (rollout_cuda_generate_ids(ge, ids, n_ids, np, 1, 0, &o, &gb, &e)) {
    snprintf(what, sizeof what, "%s stop rules: GPU (%.60s)", name, e.msg);
    check(0, what, "%g", 0);
    return;
  }
  for (int p = 0; p < np; p++) {
    const rollout_sample *a = &cb.s[p], *b = &gb.s[p];
    reasons[a->finish & 3]++;
    if (a->finish != b->finish || a->stop_index != b->stop_index || a->n_completion != b->n_completion ||
        strcmp(a->completion_text, b->completion_text) ||
        memcmp(a->completion_ids, b->completion_ids, (size_t)a->n_completion * 4)) {
      bad++;
      printf("     p%d: CPU %s %lld \"%s\" vs GPU %s %lld \"%s\"\n", p, finish_reason_name(a->finish),
             (long long)a->n_completion, a->completion_text, finish_reason_name(b->finish), (long long)b->n_completion,
             b->completion_text);
    }
  }
  printf("     stop rules: CPU finish reasons eos %d, stop %d, length %d\n", reasons[FINISH_EOS], reasons[FINISH_STOP],
         reasons[FINISH_LENGTH]);
  snprintf(what, sizeof what, "%s stop rules GPU == CPU (samples differing)", name);
  check(!bad && (reasons[FINISH_STOP] || reasons[FINISH_EOS]), what, "%.0f", bad);
  rollout_batch_free(&c0), rollout_batch_free(&cb), rollout_batch_free(&gb);
  rollout_cuda_engine_free(ge), rollout_engine_free(ce), tokenizer_free(tok);
}

/* Samples of a and b[0 … n) that differ (ids, log-probs, finish, prompt/sample index). */
static int64_t batch_diffs(const rollout_sample *a, const rollout_sample *b, int64_t n) {
  int64_t d = 0;
  for (int64_t i = 0; i < n; i++)
    d += a[i].n_completion != b[i].n_completion || a[i].finish != b[i].finish ||
         a[i].prompt_index != b[i].prompt_index || a[i].sample_index != b[i].sample_index ||
         memcmp(a[i].completion_ids, b[i].completion_ids, (size_t)a[i].n_completion * 4) ||
         memcmp(a[i].logp_rollout, b[i].logp_rollout, (size_t)a[i].n_completion * 4);
  return d;
}

/* The trainer's log-probs of batch b's completions (every sample packed into one
 * forward, as a training microbatch packs them; temperature temp) against the
 * rollout's: tokens whose log-prob bits differ, of *ntok, and the largest |Δ|. */
static int64_t logp_bits_differ(model *m, const rollout_batch *b, float temp, int64_t *ntok, double *worst, rl_err *e) {
  int64_t T = 0, d = 0;
  for (int64_t i = 0; i < b->n; i++) T += b->s[i].n_prompt + b->s[i].n_completion;
  int32_t *tok = malloc((size_t)T * 4), *tgt = malloc((size_t)T * 4), *off = malloc((size_t)(b->n + 1) * 4);
  float *lp = malloc((size_t)T * 4);
  off[0] = 0;
  for (int64_t i = 0; i < b->n; i++) {
    const rollout_sample *s = &b->s[i];
    int32_t *t = tok + off[i];
    memcpy(t, s->prompt_ids, (size_t)s->n_prompt * 4);
    memcpy(t + s->n_prompt, s->completion_ids, (size_t)s->n_completion * 4);
    off[i + 1] = off[i] + (int32_t)(s->n_prompt + s->n_completion);
    for (int32_t j = off[i]; j < off[i + 1]; j++) tgt[j] = j + 1 < off[i + 1] ? tok[j + 1] : -1;
  }
  model_batch mb = {0};
  mb.T = (int)T, mb.tokens = tok, mb.seqs.n_seq = (int)b->n, mb.seqs.off = off;
  model_cuda_acts *a = model_cuda_acts_new();
  *ntok = 0, *worst = 0;
  if (model_cuda_forward(m, &mb, NULL, a, e) || model_cuda_logprob_forward(m, a, tgt, temp, lp, NULL, e)) {
    d = -1;
  } else {
    for (int64_t i = 0; i < b->n; i++) {
      const rollout_sample *s = &b->s[i];
      for (int64_t j = 0; j < s->n_completion; j++) {
        const float x = s->logp_rollout[j], y = lp[off[i] + s->n_prompt - 1 + j];
        const double ad = fabs((double)x - y);
        d += memcmp(&x, &y, 4) != 0, ++*ntok;
        if (!(ad <= *worst)) *worst = ad;
      }
    }
  }
  model_cuda_acts_free(a);
  free(tok), free(tgt), free(off), free(lp);
  return d;
}

/* precision.exact_logprobs (the policy's pin_algo): the engine's sampled
 * log-probs are the trainer's bit for bit — a packed, pinned full forward of
 * the same sequences — sampling at T = 0.8 over max_new tokens (long enough to
 * cross the attention's 64-key tiles), the same bits with 64, 1 and 7 slots;
 * and, printed, what the default engine shows on the same model. */
static int64_t gen_on_off_diffs(rollout_cuda_engine *g, const int32_t *const *ids, const int64_t *n, int np,
                                rollout_opts *o, int (*sw)(int), long long (*count)(const rollout_cuda_engine *),
                                long long cnt[2], int *was, const char *label, rl_err *e);
static long long cnt_none(const rollout_cuda_engine *g);

/* The step's logits to the sampler as BF16 rows (rollout_cuda_logits_b, the
 * default) == as FP32 rows, on engine g: unmasked sampling at T = 0.8 (the plain
 * kernel) and top-p 0.9 (the fused kernel), 40 tokens a sequence. */
static void logits_b_check(const char *label, rollout_cuda_engine *g, const int32_t *const *ids, const int64_t *n,
                           int np, const rollout_opts *base) {
  static const double top_p[2] = {1.0, 0.9};
  for (int k = 0; k < 2; k++) {
    rollout_opts o = *base;
    o.greedy = 0, o.temperature = 0.8, o.top_p = top_p[k];
    long long c[2];
    int was;
    rl_err e = {0};
    char what[240];
    const int64_t d = gen_on_off_diffs(g, ids, n, np, &o, rollout_cuda_logits_b, cnt_none, c, &was, label, &e);
    snprintf(what, sizeof what, "%s, T 0.8%s: the step's logits to the sampler as BF16 rows (RLRUN_DECODE_LOGITS_BF16, "
             "default %s) == as FP32 rows (samples differing)", label, k ? ", top-p 0.9" : "", was ? "on" : "OFF");
    check(d == 0 && was, what, "%.0f", (double)d);
  }
}

static void exact_check(const char *name, model *m, qformat fmt, const int32_t *const *ids, const int64_t *n_ids, int np,
                        int G, int max_new, int64_t max_len) {
  char what[200];
  const char *fn = fmt == QFMT_FP8_BLOCK ? "fp8-block" : "bf16";
  rl_err e = {0};
  quant_policy px;
  quant_policy_init(&px, fmt, fmt);
  px.pin_algo = 1;
  rollout_opts o;
  rollout_opts_default(&o);
  o.temperature = 0.8, o.seed = 4321, o.max_new_tokens = max_new, o.ignore_eos = 1, o.eos_id = -1, o.add_bos = 0;
  rollout_cuda_engine *g = NULL;
  rollout_batch b[3];
  const int slots[3] = {64, 1, 7};
  int got = 0;
  if (!model_cuda_quantize(m, &px, &e) && !rollout_cuda_engine_new(m, &px, 64, max_len, &g, &e))
    for (; got < 3; got++) {
      o.max_slots = slots[got];
      if (rollout_cuda_generate_ids(g, ids, n_ids, np, G, 2, &o, &b[got], &e)) break;
    }
  if (got < 3) {
    snprintf(what, sizeof what, "%s %s exact log-probs (%.90s)", name, fn, e.msg);
    check(0, what, "%g", 0);
  } else {
    int64_t ntok = 0;
    double worst = 0;
    const int64_t d = logp_bits_differ(m, &b[0], 0.8f, &ntok, &worst, &e);
    snprintf(what, sizeof what, "%s %s exact: rollout log-probs == the trainer's, bit for bit (of %lld tokens; "
             "max |d| %.3g)", name, fn, (long long)ntok, worst);
    check(d == 0 && ntok > 0, what, "%.0f", (double)d);
    int64_t bd = 0;
    for (int k = 1; k < 3; k++) bd += b[k].n == b[0].n ? batch_diffs(b[0].s, b[k].s, b[0].n) : b[0].n;
    snprintf(what, sizeof what, "%s %s exact: slots 64 / 1 / 7 identical (samples differing)", name, fn);
    check(bd == 0, what, "%.0f", (double)bd);
    /* greedy (T = 0: log-probs at T = 1, the sampler's contract) and top-p 0.9 at T = 0.8 (log-probs
     * of the full distribution): still the trainer's bits */
    const struct { int greedy; double t, top_p; float lt; const char *what; } v[2] = {
        {1, 0.0, 1.0, 1.0f, "greedy"}, {0, 0.8, 0.9, 0.8f, "top-p 0.9"}};
    for (int k = 0; k < 2; k++) {
      rollout_batch c;
      o.max_slots = 64, o.greedy = v[k].greedy, o.temperature = v[k].t, o.top_p = v[k].top_p;
      int64_t dk = -1, nt = 0;
      double wk = 0;
      if (!rollout_cuda_generate_ids(g, ids, n_ids, np, G, 2, &o, &c, &e)) {
        dk = logp_bits_differ(m, &c, v[k].lt, &nt, &wk, &e);
        rollout_batch_free(&c);
      }
      snprintf(what, sizeof what, "%s %s exact, %s: rollout log-probs == the trainer's (of %lld tokens)", name, fn,
               v[k].what, (long long)nt);
      check(dk == 0 && nt > 0, what, "%.0f", (double)dk);
    }
    o.greedy = 0, o.temperature = 0.8, o.top_p = 1.0;
    snprintf(what, sizeof what, "%s %s exact engine", name, fn);
    o.max_slots = 64;
    logits_b_check(what, g, ids, n_ids, np, &o);
  }
  for (int k = 0; k < got; k++) rollout_batch_free(&b[k]);
  rollout_cuda_engine_free(g);
  /* the control: the default engine (decode kernels of its own) against the default trainer */
  quant_policy pd;
  quant_policy_init(&pd, fmt, fmt);
  rollout_batch c;
  o.max_slots = 64;
  if (!model_cuda_quantize(m, &pd, &e) && !rollout_cuda_engine_new(m, &pd, 64, max_len, &g, &e) &&
      !rollout_cuda_generate_ids(g, ids, n_ids, np, G, 2, &o, &c, &e)) {
    int64_t ntok = 0;
    double worst = 0;
    const int64_t d = logp_bits_differ(m, &c, 0.8f, &ntok, &worst, &e);
    printf("INFO %s %s default engine: %lld of %lld rollout log-probs differ from the trainer's, max |d| %.3g\n", name,
           fn, (long long)d, (long long)ntok, worst);
    rollout_batch_free(&c);
  } else {
    printf("INFO %s %s default engine: %s\n", name, fn, e.msg);
  }
  rollout_cuda_engine_free(g);
}

/* A batch split over engines on GPUs (rollout_split_generate's part): part k
 * on engine eng[k] with GPU dev[k] current; prompt_item.index = the prompt's row. */
typedef struct split_ctx {
  rollout_cuda_engine *eng[2];
  int dev[2];
  const int32_t *const *ids;
  const int64_t *n_ids;
} split_ctx;
static int split_part(void *ctx, int k, const prompt_item *pr, int64_t n, int G, int64_t it, const rollout_opts *o,
                      rollout_batch *out, rl_err *e) {
  split_ctx *c = ctx;
  if (cudaSetDevice(c->dev[k]) != cudaSuccess) return rl_errf(e, RL_EXIT_HARDWARE, "cudaSetDevice(%d)", c->dev[k]);
  const int32_t *ids[MAXP];
  int64_t nn[MAXP];
  for (int64_t p = 0; p < n; p++) ids[p] = c->ids[pr[p].index], nn[p] = c->n_ids[pr[p].index];
  return rollout_cuda_generate_ids(c->eng[k], ids, nn, n, G, it, o, out, e);
}

/* The split rollout (issue #11): a part alone with prompt_base == that part
 * of the whole batch (one GPU); with two GPUs, the batch split over an engine
 * on GPU 0 (model m) and one on GPU 1 (the same checkpoint loaded there), the
 * two decoding at once on two threads == the one-engine batch `whole` (64
 * slots, G = 4, iteration 3), bit for bit. */
static void split_check(const char *name, const char *dir, model *m, rollout_cuda_engine *ge, const fix *f,
                        const int32_t *const *ids, rollout_opts o, const rollout_batch *whole) {
  char what[160];
  rl_err e = {0};
  const int h = f->np / 2;
  rollout_batch tb;
  o.max_slots = 64, o.prompt_base = h;
  if (rollout_cuda_generate_ids(ge, ids + h, f->n_prompt + h, f->np - h, 4, 3, &o, &tb, &e)) {
    snprintf(what, sizeof what, "%s prompt_base (%.60s)", name, e.msg);
    check(0, what, "%g", 0);
    return;
  }
  snprintf(what, sizeof what, "%s prompts %d.. alone (prompt_base %d) == that part of the batch (samples differing)",
           name, h, h);
  check(tb.n == whole->n - 4 * h && !batch_diffs(tb.s, whole->s + 4 * h, tb.n), what, "%.0f",
        (double)(tb.n == whole->n - 4 * h ? batch_diffs(tb.s, whole->s + 4 * h, tb.n) : -1));
  rollout_batch_free(&tb);
  o.prompt_base = 0;
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 2) {
    printf("INFO %s split over two GPUs: skipped (%d GPU)\n", name, n_dev);
    return;
  }
  model *m1 = NULL;
  rollout_cuda_engine *g1 = NULL;
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  cudaSetDevice(1);
  int rc = model_load(dir, NULL, &m1, &e);
  if (!rc) rc = model_cuda_init(m1, &e);
  if (!rc) rc = rollout_cuda_engine_new(m1, &pol, 64, 256, &g1, &e);
  cudaSetDevice(0);
  rollout_batch sb;
  if (!rc) {
    prompt_item it[MAXP];
    for (int p = 0; p < f->np; p++) it[p] = (prompt_item){.text = "", .extra_json = "{}", .index = p};
    split_ctx c = {{ge, g1}, {0, 1}, ids, f->n_prompt};
    rc = rollout_split_generate(2, split_part, &c, it, f->np, 4, 3, &o, &sb, &e);
    cudaSetDevice(0);
  }
  if (rc) {
    snprintf(what, sizeof what, "%s split over GPUs 0+1 (%.80s)", name, e.msg);
    check(0, what, "%g", 0);
  } else {
    snprintf(what, sizeof what, "%s split over GPUs 0+1 at once == one engine (samples differing)", name);
    int64_t d = sb.n == whole->n ? batch_diffs(sb.s, whole->s, sb.n) : -1;
    check(d == 0, what, "%.0f", (double)d);
    rollout_batch_free(&sb);
  }
  cudaSetDevice(1);
  rollout_cuda_engine_free(g1);
  model_free(m1);
  cudaSetDevice(0);
}

/* Launch counters for gen_on_off (one signature for the engine's and the model's). */
static long long cnt_small_q8(const rollout_cuda_engine *g) { (void)g; return model_cuda_small_q8_calls(); }
static long long cnt_q8_swiglu(const rollout_cuda_engine *g) { (void)g; return model_cuda_small_q8_swiglu_calls(); }
static long long cnt_none(const rollout_cuda_engine *g) { (void)g; return 0; }
/* ops_norm_wide_warps as an on/off switch for gen_on_off: 1 = 8 warps a row, 0 = 4. */
static int norm_8_warps(int set) { return ops_norm_wide_warps(set < 0 ? -1 : set ? 8 : 4) == 8; }

/* The engine's samples with switch sw on (*on), then off (*off), 40 new tokens,
 * the switch restored after and its default in *was; cnt[0] / cnt[1]: what
 * count(g) advanced during each run. 0: both batches filled (the caller frees
 * them); else 1, e set and nothing to free. */
static int gen_on_off(rollout_cuda_engine *g, const int32_t *const *ids, const int64_t *n, int np, rollout_opts *o,
                      int (*sw)(int), long long (*count)(const rollout_cuda_engine *), rollout_batch *on,
                      rollout_batch *off, long long cnt[2], int *was, rl_err *e) {
  *was = sw(-1);
  const int keep = o->max_new_tokens;
  o->max_new_tokens = 40;
  const long long c0 = count(g);
  sw(1);
  int r = rollout_cuda_generate_ids(g, ids, n, np, 2, 5, o, on, e);
  const long long c1 = count(g);
  sw(0);
  if (!r && rollout_cuda_generate_ids(g, ids, n, np, 2, 5, o, off, e)) {
    rollout_batch_free(on);
    r = 1;
  }
  cnt[0] = c1 - c0, cnt[1] = count(g) - c1;
  sw(*was);
  o->max_new_tokens = keep;
  return r;
}

/* gen_on_off, then the samples differing between the two runs (−1 when a run
 * failed: its error printed under `label`). */
static int64_t gen_on_off_diffs(rollout_cuda_engine *g, const int32_t *const *ids, const int64_t *n, int np,
                                rollout_opts *o, int (*sw)(int), long long (*count)(const rollout_cuda_engine *),
                                long long cnt[2], int *was, const char *label, rl_err *e) {
  rollout_batch on, off;
  if (gen_on_off(g, ids, n, np, o, sw, count, &on, &off, cnt, was, e)) {
    printf("     %s check: %s\n", label, e->msg);
    return -1;
  }
  const int64_t d = on.n == off.n ? batch_diffs(on.s, off.s, on.n) : on.n + 1;
  rollout_batch_free(&on), rollout_batch_free(&off);
  return d;
}

static void run_model(const char *name) {
  char dir[256], js[256], what[128];
  rl_err e = {0};
  snprintf(dir, sizeof dir, "tests/fixtures/model/%s/hf", name);
  snprintf(js, sizeof js, "tests/fixtures/model/%s/greedy.json", name);
  fix f;
  model *m = NULL;
  if (fix_load(js, &f) || model_load(dir, NULL, &m, &e) || model_cuda_init(m, &e)) {
    snprintf(what, sizeof what, "%s: load (%.60s)", name, e.msg);
    check(0, what, "%g", 0);
    return;
  }
  quant_policy pol;
  quant_policy_init(&pol, QFMT_BF16, QFMT_BF16);
  const int32_t *ids[MAXP];
  for (int p = 0; p < f.np; p++) ids[p] = f.prompt[p];
  rollout_opts o;
  rollout_opts_default(&o);
  o.greedy = 1, o.temperature = 0, o.max_new_tokens = f.nt, o.ignore_eos = 1, o.eos_id = -1, o.add_bos = 0;
  rollout_engine *ce = NULL;
  rollout_cuda_engine *ge = NULL;
  rollout_batch cb, gb;
  if (rollout_engine_new(m, &pol, NULL, NULL, &ce, &e) || rollout_generate_ids(ce, ids, f.n_prompt, f.np, 1, 0, &o, &cb, &e) ||
      rollout_cuda_engine_new(m, &pol, 64, 256, &ge, &e) || rollout_cuda_generate_ids(ge, ids, f.n_prompt, f.np, 1, 0, &o, &gb, &e)) {
    snprintf(what, sizeof what, "%s: generate (%.60s)", name, e.msg);
    check(0, what, "%g", 0);
    return;
  }
  for (int p = 0; p < f.np; p++) {
    int dc = -1, dh = -1;
    for (int j = f.nt - 1; j >= 0; j--) {
      if (gb.s[p].completion_ids[j] != cb.s[p].completion_ids[j]) dc = j;
      if (gb.s[p].completion_ids[j] != f.greedy[p][j]) dh = j;
    }
    snprintf(what, sizeof what, "%s p%d greedy GPU == CPU (first diff)", name, p);
    check(dc < 0, what, "%.0f", dc);
    snprintf(what, sizeof what, "%s p%d greedy GPU == transformers (first diff)", name, p);
    check(dh < 0, what, dh < 0 ? "%.0f" : "%.0f (FP32 margin there: see fixture)", dh);
    if (dh >= 0) printf("     margin at step %d: %.4g\n", dh, f.margin[p][dh]);
  }
  stop_rules_check(name, m, &pol, ids, f.n_prompt, f.np, f.nt);
  double gap = logp_gap(m, &gb, &e);
  snprintf(what, sizeof what, "%s bf16 |logp rollout - forward| <= 2e-2", name);
  check(gap <= 2e-2, what, "max %.3g", gap);
  rollout_batch_free(&gb);
  /* fp8-block: reported */
  quant_policy p8;
  quant_policy_init(&p8, QFMT_FP8_BLOCK, QFMT_FP8_BLOCK);
  rollout_cuda_engine *g8 = NULL;
  if (!rollout_cuda_engine_new(m, &p8, 64, 256, &g8, &e) && !rollout_cuda_generate_ids(g8, ids, f.n_prompt, f.np, 1, 0, &o, &gb, &e)) {
    printf("INFO %s fp8-block |logp rollout - forward| max %.3g\n", name, logp_gap(m, &gb, &e));
    rollout_batch_free(&gb);
  } else {
    printf("INFO %s fp8-block: %s\n", name, e.msg);
  }
  rollout_cuda_engine_free(g8);
  model_cuda_quantize(m, &pol, &e);
  /* batch-size invariance with sampling */
  o.greedy = 0, o.temperature = 1.0, o.seed = 1234, o.max_new_tokens = 24;
  rollout_batch bb[3];
  int slots[3] = {1, 7, 64}, ok = 1;
  for (int k = 0; k < 3; k++) {
    o.max_slots = slots[k];
    if (rollout_cuda_generate_ids(ge, ids, f.n_prompt, f.np, 4, 3, &o, &bb[k], &e)) {
      snprintf(what, sizeof what, "%s batch invariance (%.60s)", name, e.msg);
      check(0, what, "%g", 0);
      return;
    }
  }
  int64_t diffs = 0;
  for (int k = 1; k < 3; k++)
    for (int64_t i = 0; i < bb[0].n; i++) {
      const rollout_sample *a = &bb[0].s[i], *b = &bb[k].s[i];
      if (a->n_completion != b->n_completion || memcmp(a->completion_ids, b->completion_ids, (size_t)a->n_completion * 4) ||
          memcmp(a->logp_rollout, b->logp_rollout, (size_t)a->n_completion * 4))
        diffs++, ok = 0;
    }
  snprintf(what, sizeof what, "%s slots 1/7/64 identical (samples differing)", name);
  check(ok, what, "%.0f", (double)diffs);
  split_check(name, dir, m, ge, &f, ids, o, &bb[2]);
  /* pipelined decode (default) == unpipelined (RLRUN_ROLLOUT_PIPE=0) while sampling with an EOS
   * that occurs: rows finishing by EOS run once more when pipelined and are dropped */
  {
    rollout_batch pa, pb;
    o.max_slots = 64, o.ignore_eos = 0;
    o.eos_id = bb[0].s[0].n_completion > 3 ? bb[0].s[0].completion_ids[3] : -1;
    int ga = rollout_cuda_generate_ids(ge, ids, f.n_prompt, f.np, 4, 3, &o, &pa, &e);
    setenv("RLRUN_ROLLOUT_PIPE", "0", 1);
    int gbr = ga ? 1 : rollout_cuda_generate_ids(ge, ids, f.n_prompt, f.np, 4, 3, &o, &pb, &e);
    unsetenv("RLRUN_ROLLOUT_PIPE");
    if (ga || gbr) {
      snprintf(what, sizeof what, "%s pipelined vs not (%.60s)", name, e.msg);
      check(0, what, "%g", 0);
    } else {
      int64_t pd = 0, neos = 0;
      for (int64_t i = 0; i < pa.n; i++) {
        const rollout_sample *a = &pa.s[i], *b = &pb.s[i];
        neos += a->finish == FINISH_EOS;
        pd += a->finish != b->finish || a->n_completion != b->n_completion ||
              memcmp(a->completion_ids, b->completion_ids, (size_t)a->n_completion * 4) ||
              memcmp(a->logp_rollout, b->logp_rollout, (size_t)a->n_completion * 4);
      }
      printf("     pipelined vs not: eos id %d, %lld of %lld samples end by EOS\n", o.eos_id, (long long)neos,
             (long long)pa.n);
      snprintf(what, sizeof what, "%s sampling + EOS: pipelined == RLRUN_ROLLOUT_PIPE=0 (differing)", name);
      check(pd == 0 && neos > 0, what, "%.0f", (double)pd);
      rollout_batch_free(&pa), rollout_batch_free(&pb);
    }
    o.ignore_eos = 1, o.eos_id = -1;
  }
  for (int k = 0; k < 3; k++) rollout_batch_free(&bb[k]);
  rollout_batch_free(&cb);
  rollout_cuda_engine_free(ge);
  rollout_engine_free(ce);
  if (rck_decode_attn_mode(-1) == g_attn_mode0) { /* once per model (the exact path has no decode attention modes) */
    exact_check(name, m, QFMT_BF16, ids, f.n_prompt, f.np, 4, 90, 128);
    exact_check(name, m, QFMT_FP8_BLOCK, ids, f.n_prompt, f.np, 4, 90, 128);
  }
  model_free(m);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float urand(void) { /* uniform in [-1, 1) */
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

/* 5.: rck_decode_attention in mode `mode` for n rows (lengths len[], slots
 * slot[]) against FP64; returns the worst |out − ref| / max|v| (−1: a CUDA
 * failure) and checks each row alone == in the batch. */
static double attn_case(int mode, int hd, int nq, int nkv, int *row_diff) {
  enum { N = 7, SLOTS = 9, MAXLEN = 320 };
  const int len[N] = {1, 3, 128, 129, 250, 256, 320}, slot[N] = {4, 0, 8, 2, 7, 1, 5};
  rck_decode_attn_mode(mode); /* before rck_n_split: the split follows the kernel */
  const int kvd = nkv * hd, grp = nq / nkv, ns = rck_n_split(MAXLEN, grp);
  const size_t ncache = (size_t)SLOTS * MAXLEN * kvd, nqv = (size_t)N * nq * hd;
  uint16_t *hk = malloc(ncache * 2), *hv = malloc(ncache * 2);
  float *hq = malloc(nqv * 4), *out = malloc(nqv * 4), *one = malloc((size_t)nq * hd * 4);
  for (size_t i = 0; i < ncache; i++) hk[i] = fmt_bf16_from_f32(urand()), hv[i] = fmt_bf16_from_f32(urand());
  for (size_t i = 0; i < nqv; i++) hq[i] = 3.0f * urand(); /* scores of a few units: a peaked softmax */
  uint16_t *dk = NULL, *dv = NULL;
  float *dq = NULL, *dout = NULL, *pacc = NULL, *pml = NULL;
  int32_t *dslot = NULL, *dlen = NULL;
  rl_err e = {0};
  double worst = -1;
  int rc = cudaMalloc((void **)&dk, ncache * 2) || cudaMalloc((void **)&dv, ncache * 2) ||
           cudaMalloc((void **)&dq, nqv * 4) || cudaMalloc((void **)&dout, nqv * 4) ||
           cudaMalloc((void **)&pacc, (size_t)N * nq * ns * hd * 4) || cudaMalloc((void **)&pml, (size_t)N * nq * ns * 8) ||
           cudaMalloc((void **)&dslot, N * 4) || cudaMalloc((void **)&dlen, N * 4);
  rc = rc || cudaMemcpy(dk, hk, ncache * 2, cudaMemcpyHostToDevice) || cudaMemcpy(dv, hv, ncache * 2, cudaMemcpyHostToDevice) ||
       cudaMemcpy(dq, hq, nqv * 4, cudaMemcpyHostToDevice) || cudaMemcpy(dslot, slot, N * 4, cudaMemcpyHostToDevice) ||
       cudaMemcpy(dlen, len, N * 4, cudaMemcpyHostToDevice);
  rc = rc || rck_decode_attention(dout, NULL, dq, dk, dv, dslot, dlen, N, nq, nkv, hd, MAXLEN, ns, pacc, pml, NULL, &e) ||
       cudaMemcpy(out, dout, nqv * 4, cudaMemcpyDeviceToHost);
  *row_diff = 0;
  if (mode == 1 && !rc) { /* the staged kernel's tuning (splits a CTA, ring slots) never changes a bit, BF16 copy included */
    /* splits a CTA (0 auto, 100: all, the CTA combines), ring slots, PDL, bulk copies, evict-first */
    const int tune[][5] = {{1, 2, 0, 0, 0},   {1, 3, 1, 1, 1}, {2, 3, 1, 0, 1}, {3, 4, 0, 1, 0}, {100, 2, 1, 1, 1},
                           {100, 3, 0, 0, 0}, {100, 4, 1, 0, 0}, {0, 3, 1, 1, 0}, {0, 3, 0, 1, 1}, {1, 2, 1, 1, 0},
                           {0, 2, 0, 0, 0},   {0, 2, 1, 1, 1}, {0, 2, 1, 1, 0}};
    uint16_t *db = NULL, *b0 = malloc(nqv * 2), *b1 = malloc(nqv * 2);
    rc = cudaMalloc((void **)&db, nqv * 2) != cudaSuccess;
    for (size_t t = 0; t < sizeof tune / sizeof *tune && !rc; t++) {
      rck_decode_attn_tune(tune[t][0], tune[t][1], tune[t][2], tune[t][3], tune[t][4]);
      rc = cudaMemset(dout, 0xff, nqv * 4) ||
           rck_decode_attention(dout, db, dq, dk, dv, dslot, dlen, N, nq, nkv, hd, MAXLEN, ns, pacc, pml, NULL, &e) ||
           cudaMemcpy(t ? b1 : b0, db, nqv * 2, cudaMemcpyDeviceToHost);
      float *o2 = malloc(nqv * 4);
      rc = rc || cudaMemcpy(o2, dout, nqv * 4, cudaMemcpyDeviceToHost);
      if (!rc && (memcmp(o2, out, nqv * 4) || (t && memcmp(b0, b1, nqv * 2)))) (*row_diff)++;
      free(o2);
    }
    rck_decode_attn_tune(0, 0, 1, 1, 1); /* the defaults */
    cudaFree(db), free(b0), free(b1);
  }
  for (int r = 0; r < N && !rc; r++) { /* row r alone: same bits */
    rc = rck_decode_attention(dout, NULL, dq + (size_t)r * nq * hd, dk, dv, dslot + r, dlen + r, 1, nq, nkv, hd, MAXLEN, ns,
                              pacc, pml, NULL, &e) ||
         cudaMemcpy(one, dout, (size_t)nq * hd * 4, cudaMemcpyDeviceToHost);
    if (!rc && memcmp(one, out + (size_t)r * nq * hd, (size_t)nq * hd * 4)) (*row_diff)++;
  }
  if (rc) printf("     attention %d/%d/%d mode %d: %s\n", hd, nq, nkv, mode, e.msg[0] ? e.msg : "CUDA call failed");
  for (int r = 0; r < N && !rc; r++)
    for (int h = 0; h < nq; h++) {
      const int kh = h / grp;
      double sc[MAXLEN], mx = -INFINITY, sum = 0;
      const float *qh = hq + ((size_t)r * nq + h) * hd;
      for (int j = 0; j < len[r]; j++) {
        const uint16_t *kj = hk + (((size_t)slot[r] * nkv + kh) * MAXLEN + j) * hd; /* [slot][kv head][pos][hd] */
        double d = 0;
        for (int i = 0; i < hd; i++) d += (double)fmt_bf16_to_f32(fmt_bf16_from_f32(qh[i])) * fmt_bf16_to_f32(kj[i]);
        sc[j] = d / sqrt((double)hd), mx = fmax(mx, sc[j]);
      }
      for (int j = 0; j < len[r]; j++) sc[j] = exp(sc[j] - mx), sum += sc[j];
      for (int i = 0; i < hd; i++) {
        double a = 0;
        for (int j = 0; j < len[r]; j++)
          a += sc[j] * fmt_bf16_to_f32(hv[(((size_t)slot[r] * nkv + kh) * MAXLEN + j) * hd + i]);
        worst = fmax(worst, fabs(a / sum - out[((size_t)r * nq + h) * hd + i])); /* max|v| = 1 */
      }
    }
  cudaFree(dk), cudaFree(dv), cudaFree(dq), cudaFree(dout), cudaFree(pacc), cudaFree(pml), cudaFree(dslot), cudaFree(dlen);
  free(hk), free(hv), free(hq), free(out), free(one);
  return rc ? -1 : worst;
}

static void attn_check(void) {
  const int shapes[][3] = {{128, 16, 8}, {128, 8, 8}, {128, 32, 8}, {128, 32, 4}, {32, 4, 2}, {64, 6, 3}, {256, 8, 2}};
  const int saved = rck_decode_attn_mode(-1);
  for (int mode = 0; mode < 2; mode++)
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
      char what[128];
      int rd = 0;
      double w = attn_case(mode, shapes[k][0], shapes[k][1], shapes[k][2], &rd);
      snprintf(what, sizeof what, "attention %s hd %d q/kv %d/%d vs FP64 <= 2^-8", mode ? "staged" : "two-phase",
               shapes[k][0], shapes[k][1], shapes[k][2]);
      check(w >= 0 && w <= 1.0 / 256, what, "max %.3g", w);
      snprintf(what, sizeof what, "attention %s hd %d q/kv %d/%d rows alone == batch%s", mode ? "staged" : "two-phase",
               shapes[k][0], shapes[k][1], shapes[k][2], mode ? " == every (splits a CTA, ring, PDL, bulk copy) tuning" : "");
      check(w >= 0 && rd == 0, what, "%.0f differ", rd);
    }
  rck_decode_attn_mode(saved);
}

/* The QK path fused into the staged attention (rck_decode_attention_qk) ==
 * rck_qkv_post then rck_decode_attention, bit for bit: the attention output
 * (FP32 and BF16) and the whole cache after the step (row len − 1 written by
 * the CTA that holds it), for rows whose len − 1 sits at the start, middle and
 * end of a 64-position chunk and past the ring's first loads, under every
 * tuning of the staged kernel (splits a CTA, ring, PDL, bulk copies, evict-first).
 * At head_dim 128, from BF16 rows, the attention also writes o's fp8-block
 * activation (rck_qk_in.q8): its codes and scales == quant_fp8_block_act_cuda of
 * the reference's BF16 output, bytewise, under every tuning (the fused combine and
 * the separate combine kernel). */
static int qk_fused_case(int hd, int nq, int nkv) {
  enum { N = 9, SLOTS = 10, MAXLEN = 320 };
  const int len[N] = {1, 2, 64, 65, 66, 128, 129, 250, 320}, slot[N] = {4, 0, 8, 2, 7, 1, 5, 9, 3};
  const int kvd = nkv * hd, grp = nq / nkv, ns = rck_n_split(MAXLEN, grp), half = hd / 2;
  const size_t ncache = (size_t)SLOTS * MAXLEN * kvd, nqv = (size_t)N * nq * hd, nkvv = (size_t)N * kvd;
  uint16_t *hk = malloc(ncache * 2), *hv = malloc(ncache * 2), *ck[2], *cv[2], *ob[2];
  float *hqr = malloc(nqv * 4), *hkr = malloc(nkvv * 4), *hvv = malloc(nkvv * 4), *hw = malloc((size_t)2 * hd * 4);
  float *hcs = malloc((size_t)N * half * 4), *hsn = malloc((size_t)N * half * 4), *of[2];
  int32_t hpos[N];
  for (size_t i = 0; i < ncache; i++) hk[i] = fmt_bf16_from_f32(urand()), hv[i] = fmt_bf16_from_f32(urand());
  /* BF16 values, as the q/k/v GEMMs give them: the FP32 rows and their BF16
   * copies (the hand-off input) must give the same bits */
  uint16_t *hqb = malloc(nqv * 2), *hkb = malloc(nkvv * 2), *hvb = malloc(nkvv * 2);
  for (size_t i = 0; i < nqv; i++) hqb[i] = fmt_bf16_from_f32(2.0f * urand()), hqr[i] = fmt_bf16_to_f32(hqb[i]);
  for (size_t i = 0; i < nkvv; i++) {
    hkb[i] = fmt_bf16_from_f32(2.0f * urand()), hkr[i] = fmt_bf16_to_f32(hkb[i]);
    hvb[i] = fmt_bf16_from_f32(urand()), hvv[i] = fmt_bf16_to_f32(hvb[i]);
  }
  for (int i = 0; i < 2 * hd; i++) hw[i] = 1.0f + 0.1f * urand();
  for (int r = 0; r < N; r++) {
    hpos[r] = len[r] - 1;
    for (int i = 0; i < half; i++) {
      const double a = (double)hpos[r] * pow(1e6, -2.0 * i / hd);
      hcs[r * half + i] = (float)cos(a), hsn[r * half + i] = (float)sin(a);
    }
  }
  for (int k = 0; k < 2; k++)
    ck[k] = malloc(ncache * 2), cv[k] = malloc(ncache * 2), ob[k] = malloc(nqv * 2), of[k] = malloc(nqv * 4);
  uint16_t *dk = NULL, *dv = NULL, *dob = NULL, *dqb = NULL, *dkb = NULL, *dvb = NULL;
  float *dqr = NULL, *dkr = NULL, *dvv = NULL, *dw = NULL, *dcs = NULL, *dsn = NULL, *dq = NULL, *dkn = NULL, *dout = NULL,
        *pacc = NULL, *pml = NULL;
  int32_t *dslot = NULL, *dlen = NULL, *dpos = NULL;
  uint8_t *dq8 = NULL, *rq8 = NULL, *hq8[2] = {malloc(nqv), malloc(nqv)};
  float *dq8s = NULL, *rq8s = NULL, *hq8s[2] = {malloc((size_t)nq * N * 4), malloc((size_t)nq * N * 4)};
  rl_err e = {0};
  int rc = cudaMalloc((void **)&dk, ncache * 2) || cudaMalloc((void **)&dv, ncache * 2) ||
           cudaMalloc((void **)&dob, nqv * 2) || cudaMalloc((void **)&dqr, nqv * 4) || cudaMalloc((void **)&dq, nqv * 4) ||
           cudaMalloc((void **)&dout, nqv * 4) || cudaMalloc((void **)&dkr, nkvv * 4) ||
           cudaMalloc((void **)&dkn, nkvv * 4) || cudaMalloc((void **)&dvv, nkvv * 4) ||
           cudaMalloc((void **)&dw, (size_t)2 * hd * 4) || cudaMalloc((void **)&dcs, (size_t)N * half * 4) ||
           cudaMalloc((void **)&dsn, (size_t)N * half * 4) || cudaMalloc((void **)&pacc, (size_t)N * nq * ns * hd * 4) ||
           cudaMalloc((void **)&pml, (size_t)N * nq * ns * 8) || cudaMalloc((void **)&dslot, N * 4) ||
           cudaMalloc((void **)&dlen, N * 4) || cudaMalloc((void **)&dpos, N * 4) || cudaMalloc((void **)&dqb, nqv * 2) ||
           cudaMalloc((void **)&dkb, nkvv * 2) || cudaMalloc((void **)&dvb, nkvv * 2) ||
           cudaMalloc((void **)&dq8, nqv) || cudaMalloc((void **)&rq8, nqv) ||
           cudaMalloc((void **)&dq8s, (size_t)nq * N * 4) || cudaMalloc((void **)&rq8s, (size_t)nq * N * 4);
  rc = rc || cudaMemcpy(dqb, hqb, nqv * 2, cudaMemcpyHostToDevice) || cudaMemcpy(dkb, hkb, nkvv * 2, cudaMemcpyHostToDevice) ||
       cudaMemcpy(dvb, hvb, nkvv * 2, cudaMemcpyHostToDevice);
  rc = rc || cudaMemcpy(dqr, hqr, nqv * 4, cudaMemcpyHostToDevice) || cudaMemcpy(dkr, hkr, nkvv * 4, cudaMemcpyHostToDevice) ||
       cudaMemcpy(dvv, hvv, nkvv * 4, cudaMemcpyHostToDevice) || cudaMemcpy(dw, hw, (size_t)2 * hd * 4, cudaMemcpyHostToDevice) ||
       cudaMemcpy(dcs, hcs, (size_t)N * half * 4, cudaMemcpyHostToDevice) ||
       cudaMemcpy(dsn, hsn, (size_t)N * half * 4, cudaMemcpyHostToDevice) || cudaMemcpy(dslot, slot, N * 4, cudaMemcpyHostToDevice) ||
       cudaMemcpy(dlen, len, N * 4, cudaMemcpyHostToDevice) || cudaMemcpy(dpos, hpos, N * 4, cudaMemcpyHostToDevice);
  /* the reference: the two launches, default tuning */
  rck_decode_attn_tune(0, 0, 1, 1, 1);
  rc = rc || cudaMemcpy(dk, hk, ncache * 2, cudaMemcpyHostToDevice) || cudaMemcpy(dv, hv, ncache * 2, cudaMemcpyHostToDevice) ||
       rck_qkv_post(dq, dkn, dk, dv, dqr, dkr, dvv, dw, dw + hd, dcs, dsn, dslot, dpos, N, nq, nkv, hd, MAXLEN, 1e-6f, NULL, &e) ||
       rck_decode_attention(dout, dob, dq, dk, dv, dslot, dlen, N, nq, nkv, hd, MAXLEN, ns, pacc, pml, NULL, &e) ||
       cudaMemcpy(of[0], dout, nqv * 4, cudaMemcpyDeviceToHost) || cudaMemcpy(ob[0], dob, nqv * 2, cudaMemcpyDeviceToHost) ||
       cudaMemcpy(ck[0], dk, ncache * 2, cudaMemcpyDeviceToHost) || cudaMemcpy(cv[0], dv, ncache * 2, cudaMemcpyDeviceToHost);
  if (!rc && hd == 128) { /* o's fp8 activation as the quantizer writes it, cuBLASLt's scale layout */
    quant_opts qo = {0};
    qo.scale_layout = QLAYOUT_HOPPER_ACT, qo.scale_ld = N;
    rc = quant_fp8_block_act_cuda(dob, N, (int64_t)nq * hd, rq8, rq8s, &qo, NULL, NULL, &e) != QUANT_OK ||
         cudaMemcpy(hq8[0], rq8, nqv, cudaMemcpyDeviceToHost) ||
         cudaMemcpy(hq8s[0], rq8s, (size_t)nq * N * 4, cudaMemcpyDeviceToHost);
  }
  const int tune[][5] = {{0, 0, 1, 1, 1}, {1, 2, 0, 0, 0}, {1, 3, 1, 1, 1}, {2, 3, 1, 0, 1}, {3, 4, 0, 1, 0},
                         {100, 2, 1, 1, 1}, {100, 4, 1, 0, 0}, {0, 2, 0, 1, 1}, {0, 3, 1, 1, 0}};
  int bad = 0;
  const int was_l4 = rck_attn_q8_lane4(-1);
  /* FP32 rows, then BF16 rows, then BF16 rows with o's encode from shared memory (rck_attn_q8_lane4) */
  for (size_t t = 0; t < 3 * (sizeof tune / sizeof *tune) && !rc; t++) {
    const size_t tt = t % (sizeof tune / sizeof *tune);
    const int b16 = t >= sizeof tune / sizeof *tune;
    rck_attn_q8_lane4(t >= 2 * (sizeof tune / sizeof *tune));
    rck_decode_attn_tune(tune[tt][0], tune[tt][1], tune[tt][2], tune[tt][3], tune[tt][4]);
    const int q8 = b16 && hd == 128;
    const rck_qk_in qk = b16 ? (rck_qk_in){NULL, NULL, NULL, dw, dw + hd, dcs, dsn, dk, dv, 1e-6f, dqb, dkb, dvb,
                                           q8 ? dq8 : NULL, dq8s, N, 0, quant_cuda_soft_cvt(), 0}
                             : (rck_qk_in){dqr, dkr, dvv, dw, dw + hd, dcs, dsn, dk, dv, 1e-6f, NULL, NULL, NULL,
                                           NULL, NULL, 0, 0, 0, 0};
    rc = cudaMemcpy(dk, hk, ncache * 2, cudaMemcpyHostToDevice) || cudaMemcpy(dv, hv, ncache * 2, cudaMemcpyHostToDevice) ||
         cudaMemset(dout, 0xff, nqv * 4) || cudaMemset(dq8, 0x55, nqv) || cudaMemset(dq8s, 0x55, (size_t)nq * N * 4) ||
         rck_decode_attention_qk(dout, dob, &qk, dslot, dlen, N, nq, nkv, hd, MAXLEN, ns, pacc, pml, NULL, &e) ||
         cudaMemcpy(of[1], dout, nqv * 4, cudaMemcpyDeviceToHost) || cudaMemcpy(ob[1], dob, nqv * 2, cudaMemcpyDeviceToHost) ||
         cudaMemcpy(ck[1], dk, ncache * 2, cudaMemcpyDeviceToHost) || cudaMemcpy(cv[1], dv, ncache * 2, cudaMemcpyDeviceToHost);
    if (!rc && (memcmp(of[0], of[1], nqv * 4) || memcmp(ob[0], ob[1], nqv * 2) || memcmp(ck[0], ck[1], ncache * 2) ||
                memcmp(cv[0], cv[1], ncache * 2)))
      bad++;
    if (!rc && q8) {
      rc = cudaMemcpy(hq8[1], dq8, nqv, cudaMemcpyDeviceToHost) ||
           cudaMemcpy(hq8s[1], dq8s, (size_t)nq * N * 4, cudaMemcpyDeviceToHost);
      if (!rc && (memcmp(hq8[0], hq8[1], nqv) || memcmp(hq8s[0], hq8s[1], (size_t)nq * N * 4))) bad++;
    }
  }
  rck_decode_attn_tune(0, 0, 1, 1, 1); /* the defaults */
  rck_attn_q8_lane4(was_l4);
  if (rc) printf("     fused QK %d/%d/%d: %s\n", hd, nq, nkv, e.msg[0] ? e.msg : "CUDA call failed"), bad = -1;
  cudaFree(dk), cudaFree(dv), cudaFree(dob), cudaFree(dqr), cudaFree(dq), cudaFree(dout), cudaFree(dkr), cudaFree(dkn);
  cudaFree(dvv), cudaFree(dw), cudaFree(dcs), cudaFree(dsn), cudaFree(pacc), cudaFree(pml), cudaFree(dslot), cudaFree(dlen);
  cudaFree(dpos), cudaFree(dqb), cudaFree(dkb), cudaFree(dvb);
  cudaFree(dq8), cudaFree(rq8), cudaFree(dq8s), cudaFree(rq8s);
  free(hqb), free(hkb), free(hvb), free(hq8[0]), free(hq8[1]), free(hq8s[0]), free(hq8s[1]);
  for (int k = 0; k < 2; k++) free(ck[k]), free(cv[k]), free(ob[k]), free(of[k]);
  free(hk), free(hv), free(hqr), free(hkr), free(hvv), free(hw), free(hcs), free(hsn);
  return bad;
}

static void qk_fused_check(void) {
  const int shapes[][3] = {{128, 16, 8}, {128, 32, 4}, {64, 6, 3}, {256, 8, 2}, {32, 4, 2}, {128, 8, 8}};
  const int saved = rck_decode_attn_mode(-1);
  rck_decode_attn_mode(1);
  for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
    char what[256];
    const int bad = qk_fused_case(shapes[k][0], shapes[k][1], shapes[k][2]);
    snprintf(what, sizeof what, "fused QK path hd %d q/kv %d/%d, from FP32 and from BF16 rows, == rck_qkv_post + "
             "attention (output, BF16, cache%s) under 9 tunings (runs differing)", shapes[k][0], shapes[k][1],
             shapes[k][2], shapes[k][0] == 128 ? ", o's fp8 activation == the quantizer's, also encoded from "
             "shared memory" : "");
    check(bad == 0, what, "%.0f", (double)bad);
  }
  rck_decode_attn_mode(saved);
}

/* Prefill groups: the prompts admitted together are prefilled in one packed
 * forward, whose linears run the small-M GEMM at ≤ 64 tokens (its own K split)
 * and cuBLASLt's heuristic above (an algorithm by M): a prompt's first logits
 * and cache rows could then depend on which prompts came with it, i.e. on the
 * slot count and on a split's shares. A random model with a Qwen3-0.6B layer's
 * widths (K = 1024, 2048, 3072: the small kernel splits K), 24 prompts of 6 … 13
 * tokens, 2 samples each, decoded with 64 slots (the 48 sequences prefilled at
 * once, ~460 tokens) and with 1, 3, 5, 7, 11, 16, 24, 32 (groups of those sizes
 * as slots free up: ~9 to ~300 tokens). Every sample must be the same bits
 * (tokens and log-probs; the first token's log-prob is the prefill's logits).
 * BF16 and fp8-block. Its power is limited: see the printed control below. */
static void prefill_groups_check(void) {
  char what[200];
  rl_err e = {0};
  model_config c;
  memset(&c, 0, sizeof c);
  c.kind = MODEL_KIND_QWEN3;
  snprintf(c.model_type, sizeof c.model_type, "qwen3");
  snprintf(c.rope_type, sizeof c.rope_type, "default");
  snprintf(c.hidden_act, sizeof c.hidden_act, "silu");
  /* a Qwen3-0.6B layer's widths (K = 1024, 2048, 3072: the small-M kernel splits K) */
  c.vocab_size = 256, c.hidden_size = 1024, c.intermediate_size = 3072, c.num_hidden_layers = 2;
  c.num_attention_heads = 16, c.num_key_value_heads = 8, c.head_dim = 128;
  c.max_position_embeddings = 4096, c.rms_norm_eps = 1e-6, c.rope_theta = 1e6, c.rope_factor = 1;
  model *m = NULL;
  if (model_create(&c, NULL, &m, &e)) {
    check(0, "prefill groups: model_create", "%g", 0);
    return;
  }
  uint64_t st = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    const float a = p->cols == 1 ? 1.0f : sqrtf(3.0f / (float)p->cols);
    for (int64_t j = 0; j < p->rows * p->cols; j++) {
      st ^= st << 13, st ^= st >> 7, st ^= st << 17;
      const float u = (float)((double)(st >> 11) * 0x1p-53) * 2.0f - 1.0f;
      p->w[j] = p->cols == 1 ? 1.0f + 0.1f * u : a * u;
    }
  }
  enum { NP = 24 };
  int32_t tk[NP][16];
  const int32_t *ids[NP];
  int64_t n[NP];
  for (int p = 0; p < NP; p++) {
    n[p] = 6 + p % 8;
    for (int t = 0; t < n[p]; t++) tk[p][t] = (int32_t)((p * 31 + t * 17 + 3) % 256);
    ids[p] = tk[p];
  }
  if (model_cuda_init(m, &e)) {
    check(0, "prefill groups: model_cuda_init", "%g", 0);
    model_free(m);
    return;
  }
  for (int f = 0; f < 2; f++) {
    quant_policy pol;
    quant_policy_init(&pol, f ? QFMT_FP8_BLOCK : QFMT_BF16, f ? QFMT_FP8_BLOCK : QFMT_BF16);
    rollout_cuda_engine *g = NULL;
    rollout_opts o;
    rollout_opts_default(&o);
    o.temperature = 1.0, o.seed = 77, o.max_new_tokens = 8, o.ignore_eos = 1, o.eos_id = -1, o.add_bos = 0;
    enum { NS = 9 };
    rollout_batch bb[NS];
    const int slots[NS] = {64, 1, 3, 5, 7, 11, 16, 24, 32};
    int got = 0;
    if (!model_cuda_quantize(m, &pol, &e) && !rollout_cuda_engine_new(m, &pol, 64, 64, &g, &e))
      for (; got < NS; got++) {
        o.max_slots = slots[got];
        if (rollout_cuda_generate_ids(g, ids, n, NP, 2, 5, &o, &bb[got], &e)) break;
      }
    if (got < NS) {
      snprintf(what, sizeof what, "prefill groups %s (%.80s)", f ? "fp8-block" : "bf16", e.msg);
      check(0, what, "%g", 0);
    } else {
      int64_t d = 0;
      for (int k = 1; k < NS; k++) d += bb[k].n == bb[0].n ? batch_diffs(bb[0].s, bb[k].s, bb[0].n) : bb[0].n;
      snprintf(what, sizeof what, "%s prefill in groups of 48 / 1 / 3 / 5 / 7 / 11 / 16 / 24 / 32 sequences: same bits "
               "(samples differing)",
               f ? "fp8-block" : "bf16");
      check(d == 0, what, "%.0f", (double)d);
      if (!f) { /* how much the check sees: the same with the small kernel's K split changed (ctas 528,
                 * min_stages 1) and 1 slot (each prefill ≤ 13 tokens). Measured 0 sequences
                 * differing in their first token's log-prob (H100, 2026-12-06): a summation order
                 * the check above does not see either (why — the outputs' BF16 rounding, or a path
                 * that avoids the kernel — is not settled), so it is printed, not asserted, and the
                 * check above says less than it seems (docs/recipes.md `gpus`). */
        gemm_small_tune t1 = gemm_small_tune_get();
        t1.ctas = 528, t1.min_stages = 1;
        gemm_small_tune_set(&t1);
        rollout_batch cb;
        o.max_slots = 1;
        int64_t dc = -1;
        if (!rollout_cuda_generate_ids(g, ids, n, NP, 2, 5, &o, &cb, &e)) {
          dc = 0;
          for (int64_t i = 0; i < cb.n && i < bb[0].n; i++)
            dc += memcmp(cb.s[i].logp_rollout, bb[0].s[i].logp_rollout, 4) != 0;
          rollout_batch_free(&cb);
        }
        gemm_small_tune_set(NULL);
        printf("info prefill with another small-M K split (ctas 528, min_stages 1), 1 slot: first-token log-probs "
               "differing %lld of %lld sequences\n", (long long)dc, (long long)bb[0].n);
      }
    }
    if (got == NS) { /* the engine with the QK path fused (the default) == the two launches, 100 new tokens:
                      * positions past the first 64-position chunks and the ring's first loads */
      rollout_batch fa, fb;
      rollout_cuda_engine *gl = NULL; /* room for 13 + 100 positions (g has 64) */
      o.max_slots = 64, o.max_new_tokens = 100;
      const int was = rck_decode_qk_fused(2, -1);
      int ra = rollout_cuda_engine_new(m, &pol, 64, 128, &gl, &e) || rollout_cuda_generate_ids(gl, ids, n, NP, 2, 5, &o, &fa, &e);
      rck_decode_qk_fused(2, 0);
      int rb = ra ? 1 : rollout_cuda_generate_ids(gl, ids, n, NP, 2, 5, &o, &fb, &e);
      rck_decode_qk_fused(2, 1);
      o.max_new_tokens = 8;
      int64_t d = -1;
      if (!ra && !rb) d = fa.n == fb.n ? batch_diffs(fa.s, fb.s, fa.n) : fa.n;
      else printf("     fused QK engine check: %s\n", e.msg);
      snprintf(what, sizeof what, "%s engine, 100 new tokens: QK path fused (%s) == separate launch (samples differing)",
               f ? "fp8-block" : "bf16", was ? "on" : "OFF");
      check(d == 0 && was, what, "%.0f", (double)d);
      if (!ra) rollout_batch_free(&fa);
      if (!ra && !rb) rollout_batch_free(&fb);
      rollout_cuda_engine_free(gl);
    }
    if (got == NS) { /* the BF16 hand-off (the default) == the FP32 conversions it replaces, 96 sequences
                      * (BF16 runs cuBLASLt above 64 rows; fp8-block at every M with the small-M fp8
                      * GEMM off, as here) */
      rollout_batch ha, hq, hc;
      rollout_cuda_engine *gh = NULL;
      o.max_slots = 96, o.max_new_tokens = 40;
      const int was = rollout_cuda_bf16_handoff(-1), was_q8 = model_cuda_norm_q8(-1), was_sq8 = model_cuda_small_q8(-1);
      model_cuda_small_q8(0); /* cuBLASLt's rows on both sides (the small-M fp8 kernel has its own: checked below) */
      int ra = rollout_cuda_engine_new(m, &pol, 96, 64, &gh, &e) || rollout_cuda_generate_ids(gh, ids, n, NP, 4, 5, &o, &ha, &e);
      const long long used = ra ? 0 : rollout_cuda_handoffs(gh), q8 = ra ? 0 : rollout_cuda_norm_q8s(gh);
      model_cuda_norm_q8(0); /* the hand-off with the linears quantizing for themselves */
      int rq = ra ? 1 : rollout_cuda_generate_ids(gh, ids, n, NP, 4, 5, &o, &hq, &e);
      const long long q8_off = ra ? 0 : rollout_cuda_norm_q8s(gh) - q8, used_q = ra ? 0 : rollout_cuda_handoffs(gh);
      rollout_cuda_bf16_handoff(0);
      int rb = ra ? 1 : rollout_cuda_generate_ids(gh, ids, n, NP, 4, 5, &o, &hc, &e);
      const long long used_off = ra ? 0 : rollout_cuda_handoffs(gh) - used_q;
      rollout_cuda_bf16_handoff(was), model_cuda_norm_q8(was_q8), model_cuda_small_q8(was_sq8);
      o.max_slots = 64, o.max_new_tokens = 8;
      int64_t d = -1, dq = -1;
      if (!ra && !rb) d = ha.n == hc.n && ha.n == 4 * NP ? batch_diffs(ha.s, hc.s, ha.n) : ha.n + 1;
      if (!ra && !rq) dq = ha.n == hq.n ? batch_diffs(ha.s, hq.s, ha.n) : ha.n + 1;
      if (ra || rb || rq) printf("     BF16 hand-off engine check: %s\n", e.msg);
      snprintf(what, sizeof what, "%s engine, 96 sequences: BF16 hand-off (%s, %lld linear groups, %lld with it off) == "
               "FP32 conversions (samples differing)", f ? "fp8-block" : "bf16", was ? "on" : "OFF", used, used_off);
      check(d == 0 && was && used > 0 && used_off == 0, what, "%.0f", (double)d);
      snprintf(what, sizeof what, "%s engine, 96 sequences: norms writing the fp8 activation (%s, %lld groups; %lld "
               "with it off) == the linears quantizing (samples differing)", f ? "fp8-block" : "bf16",
               was_q8 ? "on" : "OFF", q8, q8_off);
      check(dq == 0 && was_q8 && (f ? q8 > 0 : q8 == 0) && q8_off == 0, what, "%.0f", (double)dq);
      if (!ra) rollout_batch_free(&ha);
      if (!ra && !rq) rollout_batch_free(&hq);
      if (!ra && !rb) rollout_batch_free(&hc);
      rollout_cuda_engine_free(gh);
    }
    if (got == NS) {
      o.max_slots = 64;
      logits_b_check(f ? "fp8-block engine, 48 sequences × 40 tokens" : "bf16 engine, 48 sequences × 40 tokens", g, ids,
                     n, NP, &o);
    }
    if (got == NS && f) { /* the small-M fp8 GEMM (default on) against cuBLASLt's rows: 48 sequences, 40 new
                           * tokens; the kernel itself: gemm_small_fp8_gpu_test */
      rollout_batch sa, sb;
      long long c[2];
      int was;
      o.max_slots = 64;
      if (gen_on_off(g, ids, n, NP, &o, model_cuda_small_q8, cnt_small_q8, &sa, &sb, c, &was, &e)) {
        snprintf(what, sizeof what, "fp8-block small-M GEMM engine check (%.80s)", e.msg);
        check(0, what, "%g", 0);
      } else {
        const double ga = logp_gap(m, &sa, &e), gb = logp_gap(m, &sb, &e);
        int64_t same = 0;
        for (int64_t i = 0; i < sa.n && i < sb.n; i++)
          same += sa.s[i].n_completion == sb.s[i].n_completion &&
                  !memcmp(sa.s[i].completion_ids, sb.s[i].completion_ids, (size_t)sa.s[i].n_completion * 4);
        printf("info fp8-block engine, 48 sequences × 40 tokens: small-M fp8 GEMM on / off: %lld of %lld "
               "completions identical; |logp rollout - forward| max %.3g / %.3g\n", (long long)same, (long long)sa.n,
               ga, gb);
        snprintf(what, sizeof what, "fp8-block engine with the small-M fp8 GEMM (%s by default; %lld launches on, "
                 "%lld off): |logp rollout - forward| %.3g <= 2 x cuBLASLt's %.3g + 0.01", was ? "on" : "OFF",
                 c[0], c[1], ga, gb);
        check(was && c[0] > 0 && c[1] == 0 && ga <= 2 * gb + 0.01, what, "%.3g", ga);
        rollout_batch_free(&sa), rollout_batch_free(&sb);
      }
      /* the attention writing o's fp8 activation (head_dim 128) == the quantizer pass, bit for bit */
      int64_t d = gen_on_off_diffs(g, ids, n, NP, &o, rollout_cuda_attn_q8, rollout_cuda_norm_q8s, c, &was,
                                   "attention fp8 output", &e);
      snprintf(what, sizeof what, "fp8-block engine, 48 sequences × 40 tokens: the attention writing o's fp8 "
               "activation (%s; %lld fp8 producer launches on, %lld off) == the quantizer (samples differing)",
               was ? "on" : "OFF", c[0], c[1]);
      check(d == 0 && was && c[0] > c[1], what, "%.0f", (double)d);
      /* the gate/up pair with its SwiGLU and down's fp8 activation in one launch == the two launches */
      d = gen_on_off_diffs(g, ids, n, NP, &o, model_cuda_small_q8_swiglu, cnt_q8_swiglu, c, &was, "fp8 SwiGLU pair",
                           &e);
      snprintf(what, sizeof what, "fp8-block engine, 48 sequences × 40 tokens: the gate/up pair writing down's fp8 "
               "activation (default %s; %lld launches on, %lld off) == group GEMM + q8 SwiGLU (samples differing)",
               was ? "on" : "off", c[0], c[1]);
      check(d == 0 && c[0] > 0 && c[1] == 0, what, "%.0f", (double)d);
      /* bit-neutral launch forms (on by default since session 23): the RMSNorm forwards on 4
       * warps a row, the q8 SwiGLU as a programmatic dependent */
      int (*const sws[5])(int) = {ops_norm_wide, ops_swiglu_q8_pdl, norm_8_warps, ops_swiglu_q8_lane4,
                                  rck_attn_q8_lane4};
      static const char *const swn[5] = {"the RMSNorm forwards on 4 or 8 warps a row (RLRUN_NORM_WIDE)",
                                         "the q8 SwiGLU launched as a programmatic dependent (RLRUN_SWIGLU_Q8_PDL)",
                                         "the wide RMSNorm on 8 warps a row instead of 4 (RLRUN_NORM_WIDE_8)",
                                         "the q8 SwiGLU on 4 values a thread instead of 16 (RLRUN_SWIGLU_Q8_LANE4)",
                                         "the attention's o encode from shared memory, a warp a head "
                                         "(RLRUN_DECODE_ATTN_Q8_LANE4)"};
      for (int k = 0; k < 5; k++) {
        d = gen_on_off_diffs(g, ids, n, NP, &o, sws[k], cnt_none, c, &was, swn[k], &e);
        snprintf(what, sizeof what, "fp8-block engine, 48 sequences × 40 tokens: %s on == off (default %s; samples "
                 "differing)", swn[k], was ? "on" : "off");
        check(d == 0, what, "%.0f", (double)d);
      }
    }
    for (int k = 0; k < got; k++) rollout_batch_free(&bb[k]);
    rollout_cuda_engine_free(g);
    /* exact log-probs at Qwen3-0.6B widths (head_dim 128: the BF16 attention operands), 100 new tokens */
    exact_check("qwen3-0.6b widths", m, f ? QFMT_FP8_BLOCK : QFMT_BF16, ids, n, NP, 2, 100, 128);
  }
  model_free(m);
}

int main(void) {
  g_attn_mode0 = rck_decode_attn_mode(-1);
  attn_check();
  qk_fused_check();
  prefill_groups_check();
  run_model("qwen3");
  run_model("qwen3_moe");
  { /* the engine again with the other decode attention kernel */
    const int mode = rck_decode_attn_mode(-1);
    rck_decode_attn_mode(!mode);
    printf("-- again with the %s decode attention\n", mode ? "two-phase" : "staged");
    run_model("qwen3");
    run_model("qwen3_moe");
    rck_decode_attn_mode(mode);
  }
  printf("rollout_gpu_test: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
#else
int main(void) {
  check(1, "rollout_gpu_test: built without CUDA", "%g", 0);
  printf("rollout_gpu_test: skipped (no CUDA in this build)\n");
  return 0;
}
#endif
