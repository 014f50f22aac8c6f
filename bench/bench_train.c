/* bench_train.c — the CPU train stage: one trainer_step (old-logprob pass +
 * forward/backward + AdamW) against the forward alone over the same batch,
 * measured in the same run.
 *
 *   ratio = step time / forward time. Napkin: a step is the old-logprob
 *           forward + the forward under gradient + the backward (≈ 2
 *           forwards: dX and dW GEMMs) + AdamW (O(params)) ≈ 4 forwards.
 * Times are medians of NREP runs after one warm-up (the weights move each
 * step; the cost does not depend on their values). `bench_train --quick`
 * runs fewer repetitions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "stages/train.h"

/* A Qwen3 of the given sizes with seeded weights (BF16 master). */
static model *bench_model(int V, int H, int L, int I, uint32_t seed) {
  model_config c;
  memset(&c, 0, sizeof c);
  c.kind = MODEL_KIND_QWEN3;
  snprintf(c.model_type, sizeof c.model_type, "qwen3");
  snprintf(c.rope_type, sizeof c.rope_type, "default");
  snprintf(c.hidden_act, sizeof c.hidden_act, "silu");
  c.vocab_size = V, c.hidden_size = H, c.intermediate_size = I, c.num_hidden_layers = L;
  c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = H / 4;
  c.max_position_embeddings = 512, c.rms_norm_eps = 1e-6, c.rope_theta = 10000.0;
  c.rope_factor = 1.0, c.tie_word_embeddings = 1, c.bos_token_id = c.pad_token_id = -1;
  model *m = NULL;
  rl_err e = {0};
  if (model_create(&c, NULL, &m, &e)) {
    fprintf(stderr, "bench_train: %s\n", e.msg);
    exit(1);
  }
  for (int i = 0; i < m->n_params; i++) {
    model_param *p = &m->params[i];
    float a = p->cols == 1 ? 0 : sqrtf(3.0f / (float)p->cols);
    int64_t n = p->rows * p->cols;
    float *w = malloc((size_t)n * sizeof(float));
    for (int64_t j = 0; j < n; j++) {
      seed = seed * 1664525u + 1013904223u;
      float u = (float)((seed >> 8) * (1.0 / 16777216.0));
      w[j] = p->cols == 1 ? 0.5f + u : a * (2 * u - 1);
    }
    ops_bf16_from_f32_cpu(p->w, w, (size_t)n);
    free(w);
  }
  return m;
}

/* P prompts x G samples of plen + clen random tokens, rewards varying in a group. */
static void bench_batch(rollout_batch *b, int V, int P, int G, int plen, int clen) {
  memset(b, 0, sizeof *b);
  b->iteration = 1, b->n_prompts = P, b->group = G, b->n = (int64_t)P * G;
  b->s = calloc((size_t)b->n, sizeof *b->s);
  uint32_t s = 12345;
  for (int64_t i = 0; i < b->n; i++) {
    rollout_sample *x = &b->s[i];
    x->prompt_index = i / G, x->sample_index = i % G;
    x->n_prompt = plen, x->n_completion = clen;
    x->prompt_ids = malloc((size_t)plen * sizeof(int32_t));
    x->completion_ids = malloc((size_t)clen * sizeof(int32_t));
    x->logp_rollout = malloc((size_t)clen * sizeof(float));
    for (int j = 0; j < plen; j++) x->prompt_ids[j] = (int32_t)((i / G * 7 + j * 3) % V);
    for (int j = 0; j < clen; j++) {
      s = s * 1664525u + 1013904223u;
      x->completion_ids[j] = (int32_t)((s >> 8) % (uint32_t)V);
      x->logp_rollout[j] = -logf((float)V);
    }
    x->reward = (double)(i % 2);
  }
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median of n timings. */
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return v[n / 2];
}

int main(int argc, char **argv) {
  int nrep = argc > 1 && strcmp(argv[1], "--quick") == 0 ? 3 : 7;
  struct {
    const char *name;
    int V, H, L, I, P, G, plen, clen;
  } cfg[2] = {{"demo-cpu (h64 L2 V16)", 16, 64, 2, 128, 16, 4, 6, 4},
              {"small (h256 L4 V1024)", 1024, 256, 4, 768, 8, 4, 32, 32}};
  printf("%-24s %7s %12s %12s %8s %8s\n", "model", "tokens", "fwd tok/s", "step tok/s", "ratio",
         "napkin");
  for (int k = 0; k < 2; k++) {
    model *m = bench_model(cfg[k].V, cfg[k].H, cfg[k].L, cfg[k].I, 99u + (uint32_t)k);
    rollout_batch b;
    bench_batch(&b, cfg[k].V, cfg[k].P, cfg[k].G, cfg[k].plen, cfg[k].clen);
    train_opts o;
    train_opts_default(&o);
    o.microbatch = 16;
    o.optim.lr = 1e-4;
    trainer *t;
    rl_err e = {0};
    if (trainer_new(m, &o, &t, &e)) {
      fprintf(stderr, "bench_train: %s\n", e.msg);
      return 1;
    }
    float **lp = malloc((size_t)b.n * sizeof(float *));
    for (int64_t i = 0; i < b.n; i++) lp[i] = malloc((size_t)cfg[k].clen * sizeof(float));
    double tf[16], ts[16];
    for (int r = -1; r < nrep; r++) {
      double t0 = rl_now();
      if (trainer_logprobs(t, &b, lp, &e)) break;
      double t1 = rl_now();
      train_result res;
      if (trainer_step(t, &b, &res, &e)) break;
      double t2 = rl_now();
      train_result_free(&res);
      if (r >= 0) tf[r] = t1 - t0, ts[r] = t2 - t1;
    }
    if (e.code) {
      fprintf(stderr, "bench_train: %s\n", e.msg);
      return 1;
    }
    double ntok = (double)b.n * (cfg[k].plen + cfg[k].clen);
    double f = median(tf, nrep), s = median(ts, nrep);
    printf("%-24s %7.0f %12.0f %12.0f %8.2f %8.2f\n", cfg[k].name, ntok, ntok / f, ntok / s, s / f,
           4.0);
    for (int64_t i = 0; i < b.n; i++) free(lp[i]);
    free(lp);
    trainer_free(t);
    rollout_batch_free(&b);
    model_free(m);
  }
  return 0;
}
