/* loop_gpu.c — the run loop's GPU backends (a recipe whose run class is a
 * GPU): which class the run takes, where the trainer and the rollout engine
 * live (gpus.train / gpus.rollout: one GPU, or two with a rollout replica and
 * an NCCL sync; gpus.train may list several GPUs: data-parallel training,
 * rank 0 = gpus.train[0], the replicas made by the trainer), and text prompts → the CUDA rollout engine
 * (stages/rollout_cuda.h works on token ids; this file tokenizes the prompts
 * as rollout_generate does, hands the engine the tokenizer for the stop rules
 * and the completion text, and fills the sample fields the reward and the
 * store read). The trainer works on the current device (train_opts.device,
 * m->cu): the train GPU, made current by loop_gpu_open.
 *
 * Two GPUs: every CUDA call of this (single) thread runs on its current
 * device, and the kernels' per-device state (cuBLASLt handles, plans and
 * scratch in kernels/gemm_cuda.cu and linear.c) is indexed by it, so the
 * rollout phase runs with the rollout GPU current and everything else with
 * the train GPU current; sync_nccl_run switches for itself and restores. */
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "model/model_cuda.h"
#include "runner/loop_int.h"
#include "runner/matrix.h"

int loop_gpu_wanted(const recipe *r) {
  hw_target t;
  hw_target_detect(&t);
  return recipe_run_class(r, &t) != HW_CPU;
}

int loop_gpu_place(const recipe *r, int n_gpus, loop_place *out, rl_err *e) {
  const recipe_intlist *ls[2] = {&r->gpus.train, &r->gpus.rollout};
  const char *names[2] = {"gpus.train", "gpus.rollout"}, *f = r->file ? r->file : "recipe";
  memset(out, 0, sizeof *out);
  for (int k = 0; k < 2; k++) {
    if (ls[k]->n < 1) return rl_errf(e, RL_EXIT_USAGE, "%s: %s is empty: name one GPU index", f, names[k]);
    if (k == 1 && ls[k]->n > 1)
      return rl_errf(e, RL_EXIT_HARDWARE,
                     "%s: gpus.rollout lists %d GPUs, but splitting the rollout over several GPUs is not implemented "
                     "yet: name one rollout GPU (gpus.train may list several: data-parallel training)", f, ls[k]->n);
    if (ls[k]->n > TRAIN_DP_MAX)
      return rl_errf(e, RL_EXIT_USAGE, "%s: %s lists %d GPUs, at most %d", f, names[k], ls[k]->n, TRAIN_DP_MAX);
    for (int i = 0; i < ls[k]->n; i++) {
      int64_t g = ls[k]->items[i];
      if (g < 0 || g >= n_gpus)
        return rl_errf(e, RL_EXIT_HARDWARE, "%s: %s uses GPU %lld, but this machine has %d GPU%s; name a GPU it has",
                       f, names[k], (long long)g, n_gpus, n_gpus == 1 ? "" : "s");
    }
  }
  out->train_gpu = (int)r->gpus.train.items[0], out->rollout_gpu = (int)r->gpus.rollout.items[0];
  out->dp = ls[0]->n;
  for (int i = 0; i < out->dp; i++) {
    out->train_gpus[i] = (int)ls[0]->items[i];
    for (int j = 0; j < i; j++)
      if (out->train_gpus[j] == out->train_gpus[i])
        return rl_errf(e, RL_EXIT_USAGE, "%s: gpus.train lists GPU %d twice; list each GPU once", f, out->train_gpus[i]);
    if (i > 0 && out->train_gpus[i] == out->rollout_gpu)
      return rl_errf(e, RL_EXIT_USAGE,
                     "%s: the rollout GPU %d is data-parallel rank %d of gpus.train; put the rollout on gpus.train[0] "
                     "(%d, colocated with rank 0) or on a GPU outside gpus.train", f, out->rollout_gpu, i,
                     out->train_gpus[0]);
  }
  int same = out->train_gpu == out->rollout_gpu;
  if (r->sync.transport == SYNC_NCCL && same)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: sync.transport nccl needs rollout and training on different GPUs (both are on GPU %d); "
                   "use transport auto or device, or name another GPU in gpus.rollout", f, out->train_gpu);
  if (r->sync.transport == SYNC_DEVICE && !same)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: sync.transport device needs rollout and training on the same GPU (rollout %d, train %d); "
                   "use transport auto or nccl, or the same GPU in both lists", f, out->rollout_gpu, out->train_gpu);
  out->nccl = !same;
  return 0;
}

int loop_gpu_open(loop_gpu *g, const recipe *r, model *m, const quant_policy *pol, rl_err *e) {
  device_info d;
  device_query(&d);
  int rc = loop_gpu_place(r, d.n_gpus, &g->place, e);
  if (!rc) rc = device_set_current(g->place.train_gpu, e);
  if (!rc) rc = model_cuda_init(m, e); /* sync, rollout (colocated) and train then use m->cu */
  if (rc || !g->place.nccl) return rc;
  int tg = g->place.train_gpu, rg = g->place.rollout_gpu;
  if ((rc = device_set_current(rg, e))) return rc;
  rc = model_create(&m->cfg, NULL, &g->replica, e);
  if (!rc) model_keep_bf16_copy(g->replica, m); /* the same views as the trainer's: the sync's manifests agree */
  if (!rc) rc = model_cuda_init(g->replica, e);
  if (!rc) rc = model_cuda_quantize(g->replica, pol, e); /* its views exist; the sync writes them */
  if (rc) rl_err_prefix(e, "the rollout replica on GPU %d: ", rg);
  rl_err ignore;
  int back = device_set_current(tg, rc ? &ignore : e); /* the train GPU current again, failed or not */
  if (!rc) rc = back;
  if (!rc) rc = sync_nccl_open(tg, rg, (uint64_t)r->sync.bucket_mb << 20, &g->nccl, e);
  return rc;
}

int loop_gpu_sync(loop_gpu *g, model *m, const quant_policy *p, const sync_opts *o, sync_stats *st, rl_err *e) {
  if (!g->place.nccl) return sync_colocated(m, p, o, st, e);
  return sync_nccl_run(g->nccl, m, g->replica, p, o, st, e);
}

/* The engine with room for sequences of max_len positions (re-made larger when needed). */
static int gpu_engine_fit(loop_gpu *g, model *m, const quant_policy *pol, int slots, int64_t max_len, rl_err *e) {
  if (g->eng && g->max_len >= max_len && g->slots >= slots) return 0;
  rollout_cuda_engine_free(g->eng);
  g->eng = NULL;
  if (max_len < g->max_len) max_len = g->max_len;
  int rc = rollout_cuda_engine_new(m, pol, slots, max_len, &g->eng, e);
  if (rc) return rl_err_prefix(e, "rollout (cuda, %d slots x %lld positions): ", slots, (long long)max_len);
  g->max_len = max_len, g->slots = slots;
  return 0;
}

int loop_gpu_generate(loop_gpu *g, model *m, const quant_policy *pol, const tokenizer *tok,
                      const prompt_item *prompts, int64_t n_prompts, int G, int64_t iteration,
                      const rollout_opts *o, rollout_batch *out, rl_err *e) {
  double t0 = rl_now();
  memset(out, 0, sizeof *out);
  int32_t **ids = rl_xcalloc((size_t)(n_prompts + 1), sizeof(int32_t *));
  int64_t *n_ids = rl_xcalloc((size_t)(n_prompts + 1), sizeof(int64_t)), longest = 0;
  int bos = o->add_bos && tok->bos >= 0, rc = 0;
  for (int64_t p = 0; p < n_prompts && !rc; p++) {
    int32_t *t = NULL;
    int64_t n = 0;
    const char *text = prompts[p].text ? prompts[p].text : "";
    if ((rc = tokenizer_encode(tok, text, strlen(text), &t, &n, e))) {
      rl_err_prefix(e, "rollout: prompt %lld: ", (long long)(o->prompt_base + p));
      break;
    }
    ids[p] = rl_xmalloc((size_t)(n + bos + 1) * sizeof(int32_t));
    if (bos) ids[p][0] = tok->bos;
    memcpy(ids[p] + bos, t, (size_t)n * sizeof(int32_t));
    free(t);
    n_ids[p] = n + bos;
    if (n_ids[p] > longest) longest = n_ids[p];
    if (o->max_prompt_tokens > 0 && n_ids[p] > o->max_prompt_tokens)
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "rollout: prompt %lld has %lld tokens, more than max_prompt_tokens %lld; "
                   "raise rollout.max_prompt_tokens or shorten the prompt",
                   (long long)(o->prompt_base + p), (long long)n_ids[p], (long long)o->max_prompt_tokens);
  }
  rollout_opts go = *o; /* eos_id −2: the tokenizer's EOS (the engine applies the stop rules with tok) */
  int slots = go.max_slots > 0 ? go.max_slots : 64;
  if ((int64_t)slots > n_prompts * G && n_prompts * G > 0) slots = (int)(n_prompts * G);
  /* separate GPUs: the engine runs over the replica with the rollout GPU current */
  int other = !rc && g->place.nccl;
  if (other) rc = device_set_current(g->place.rollout_gpu, e);
  if (!rc) rc = gpu_engine_fit(g, g->replica ? g->replica : m, pol, slots, longest + go.max_new_tokens + 1, e);
  if (!rc) {
    rollout_cuda_engine_set_tokenizer(g->eng, tok);
    rc = rollout_cuda_generate_ids(g->eng, (const int32_t *const *)ids, n_ids, n_prompts, G, iteration, &go, out, e);
  }
  if (other) {
    rl_err ignore;
    int back = device_set_current(g->place.train_gpu, rc ? &ignore : e);
    if (!rc) rc = back;
  }
  for (int64_t p = 0; p < n_prompts; p++) free(ids[p]);
  free(ids), free(n_ids);
  for (int64_t i = 0; !rc && i < out->n; i++) {
    rollout_sample *s = &out->s[i];
    const prompt_item *it = &prompts[s->prompt_index - o->prompt_base];
    free(s->prompt_text), free(s->extra_json);
    s->prompt_text = strdup(it->text ? it->text : "");
    s->extra_json = strdup(it->extra_json ? it->extra_json : "{}");
    s->data_index = it->index, s->data_epoch = it->epoch; /* completion_text: the engine's stop-rule text */
  }
  if (rc) {
    rollout_batch_free(out);
    return rc;
  }
  out->wall_s = rl_now() - t0;
  return 0;
}

void loop_gpu_free(loop_gpu *g) {
  rl_err ignore;
  int other = g->place.nccl; /* the engine and the replica live on the rollout GPU */
  if (other) device_set_current(g->place.rollout_gpu, &ignore);
  rollout_cuda_engine_free(g->eng);
  model_free(g->replica);
  sync_nccl_close(g->nccl);
  if (other) device_set_current(g->place.train_gpu, &ignore);
  memset(g, 0, sizeof *g);
}
