/* loop_gpu.c — the run loop's GPU backends (a recipe whose run class is a
 * GPU): which class the run takes, where the trainer and the rollout engines
 * live (gpus.train / gpus.rollout: the train GPU, rollout GPUs colocated with
 * it or apart with a replica each and an NCCL sync; gpus.train may list
 * several GPUs: data-parallel training, rank 0 = gpus.train[0], its replicas
 * made by the trainer), and text prompts → the CUDA rollout engines
 * (stages/rollout_cuda.h works on token ids; this file tokenizes the prompts
 * as rollout_generate does, hands each engine the tokenizer for the stop
 * rules and the completion text, and fills the sample fields the reward and
 * the store read). The trainer works on the current device
 * (train_opts.device, m->cu): the train GPU, made current by loop_gpu_open.
 *
 * Several GPUs: every CUDA call runs on its thread's current device, and the
 * kernels' per-device state (cuBLASLt handles, plans and scratch in
 * kernels/gemm_cuda.cu and linear.c, the small GEMMs' workspaces, the decode
 * attention's attributes) is indexed by it. The rollout of one batch runs
 * each rollout GPU's part on a thread of its own with that GPU current
 * (rollout_split_generate; part 0 on the calling thread), so the engines
 * decode at once; everything else runs on the calling thread with the train
 * GPU current; sync_nccl_run switches for itself and restores. */
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "kernels/devprof.h"
#include "model/model_cuda.h"
#include "runner/loop_int.h"
#include "runner/matrix.h"

_Static_assert(LOOP_ROLLOUT_MAX == SYNC_NCCL_MAX_RANKS - 1, "recipe_check.c checks gpus.rollout against this");

int loop_gpu_wanted(const recipe *r) {
  hw_target t;
  hw_target_detect(&t);
  return recipe_run_class(r, &t) != HW_CPU;
}

int loop_gpu_place(const recipe *r, int n_gpus, loop_place *out, rl_err *e) {
  const recipe_intlist *ls[2] = {&r->gpus.train, &r->gpus.rollout};
  const char *names[2] = {"gpus.train", "gpus.rollout"}, *f = r->file ? r->file : "recipe";
  const int most[2] = {TRAIN_DP_MAX, LOOP_ROLLOUT_MAX};
  memset(out, 0, sizeof *out);
  for (int k = 0; k < 2; k++) {
    if (ls[k]->n < 1) return rl_errf(e, RL_EXIT_USAGE, "%s: %s is empty: name one GPU index", f, names[k]);
    if (ls[k]->n > most[k])
      return rl_errf(e, RL_EXIT_USAGE, "%s: %s lists %d GPUs, at most %d", f, names[k], ls[k]->n, most[k]);
    for (int i = 0; i < ls[k]->n; i++) {
      int64_t g = ls[k]->items[i];
      if (g < 0 || g >= n_gpus)
        return rl_errf(e, RL_EXIT_HARDWARE, "%s: %s uses GPU %lld, but this machine has %d GPU%s; name a GPU it has",
                       f, names[k], (long long)g, n_gpus, n_gpus == 1 ? "" : "s");
      for (int j = 0; j < i; j++)
        if (ls[k]->items[j] == g)
          return rl_errf(e, RL_EXIT_USAGE, "%s: %s lists GPU %lld twice; list each GPU once", f, names[k], (long long)g);
    }
  }
  out->dp = ls[0]->n, out->n_rollout = ls[1]->n;
  for (int i = 0; i < out->dp; i++) out->train_gpus[i] = (int)ls[0]->items[i];
  for (int i = 0; i < out->n_rollout; i++) out->rollout_gpus[i] = (int)ls[1]->items[i];
  out->train_gpu = out->train_gpus[0], out->rollout_gpu = out->rollout_gpus[0];
  int apart = 0; /* rollout GPUs other than the train GPU: replicas fed over NCCL */
  for (int i = 0; i < out->n_rollout; i++) {
    int g = out->rollout_gpus[i];
    for (int j = 1; j < out->dp; j++)
      if (out->train_gpus[j] == g)
        return rl_errf(e, RL_EXIT_USAGE,
                       "%s: the rollout GPU %d is data-parallel rank %d of gpus.train; a rollout GPU is gpus.train[0] "
                       "(%d, colocated with rank 0) or a GPU outside gpus.train", f, g, j, out->train_gpus[0]);
    apart += g != out->train_gpu;
  }
  if (r->sync.transport == SYNC_NCCL && !apart)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: sync.transport nccl needs rollout and training on different GPUs (both are on GPU %d); "
                   "use transport auto or device, or name another GPU in gpus.rollout", f, out->train_gpu);
  if (r->sync.transport == SYNC_DEVICE && apart)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: sync.transport device needs rollout and training on the same GPU (rollout %d, train %d); "
                   "use transport auto or nccl, or the same GPU in both lists", f,
                   out->rollout_gpus[out->rollout_gpus[0] == out->train_gpu ? 1 : 0], out->train_gpu);
  out->nccl = apart > 0;
  return 0;
}

int loop_gpu_open(loop_gpu *g, const recipe *r, model *m, const quant_policy *pol, rl_err *e) {
  device_info d;
  device_query(&d);
  int rc = loop_gpu_place(r, d.n_gpus, &g->place, e);
  if (!rc) rc = device_set_current(g->place.train_gpu, e);
  if (!rc) rc = model_cuda_init(m, e); /* sync, rollout (colocated) and train then use m->cu */
  if (rc) return rc;
  int tg = g->place.train_gpu, apart[LOOP_ROLLOUT_MAX], n_apart = 0;
  for (int i = 0; i < g->place.n_rollout; i++) g->roll[i].gpu = g->place.rollout_gpus[i];
  for (int i = 0; i < g->place.n_rollout && !rc; i++) {
    loop_roll *p = &g->roll[i];
    if (p->gpu == tg) continue; /* colocated: the engine reads m */
    apart[n_apart++] = p->gpu;
    if ((rc = device_set_current(p->gpu, e))) break;
    rc = model_create(&m->cfg, NULL, &p->replica, e);
    if (!rc) model_keep_bf16_copy(p->replica, m); /* the same views as the trainer's: the sync's manifests agree */
    if (!rc) rc = model_cuda_init(p->replica, e);
    if (!rc) rc = model_cuda_quantize(p->replica, pol, e); /* its views exist; the sync writes them */
    if (rc) rl_err_prefix(e, "the rollout replica on GPU %d: ", p->gpu);
  }
  rl_err ignore;
  int back = device_set_current(tg, rc ? &ignore : e); /* the train GPU current again, failed or not */
  if (!rc) rc = back;
  if (!rc && n_apart) rc = sync_nccl_open(tg, apart, n_apart, (uint64_t)r->sync.bucket_mb << 20, &g->nccl, e);
  return rc;
}

int loop_gpu_sync(loop_gpu *g, model *m, const quant_policy *p, const sync_opts *o, sync_stats *st, rl_err *e) {
  if (!g->place.nccl) return sync_colocated(m, p, o, st, e);
  model *reps[LOOP_ROLLOUT_MAX];
  int n = 0;
  for (int i = 0; i < g->place.n_rollout; i++)
    if (g->roll[i].replica) reps[n++] = g->roll[i].replica;
  return sync_nccl_run(g->nccl, m, reps, p, o, st, e);
}

/* Part p's engine with room for `slots` sequences of max_len positions (re-made larger when needed). */
static int gpu_engine_fit(loop_roll *p, model *m, const quant_policy *pol, int slots, int64_t max_len, rl_err *e) {
  if (p->eng && p->max_len >= max_len && p->slots >= slots) return 0;
  rollout_cuda_engine_free(p->eng);
  p->eng = NULL;
  if (max_len < p->max_len) max_len = p->max_len;
  if (slots < p->slots) slots = p->slots;
  int rc = rollout_cuda_engine_new(m, pol, slots, max_len, &p->eng, e);
  if (rc) return rl_err_prefix(e, "rollout (cuda, GPU %d, %d slots x %lld positions): ", p->gpu, slots, (long long)max_len);
  p->max_len = max_len, p->slots = slots;
  return 0;
}

/* What every part of a generate call shares (loop_gpu_generate → gpu_part). */
typedef struct gpu_split {
  loop_gpu *g;
  model *m;
  const quant_policy *pol;
  const tokenizer *tok;
  const prompt_item *prompts; /* the whole batch's: a part's prompts − this = its first prompt */
  int32_t **ids;
  int64_t *n_ids, longest;
} gpu_split;

/* Part k of the batch on rollout GPU k (rollout_part_fn): that GPU current on
 * this thread for the call, the engine over m or the GPU's replica. */
static int gpu_part(void *ctx, int k, const prompt_item *prompts, int64_t n_prompts, int G, int64_t iteration,
                    const rollout_opts *o, rollout_batch *out, rl_err *e) {
  gpu_split *c = ctx;
  loop_roll *p = &c->g->roll[k];
  const int64_t lo = prompts - c->prompts;
  /* on a worker thread (not the caller's: part 0, or a part whose thread could not be had) the
   * profiles are part 0's, and the thread ends with the part: no device to give back (setting
   * the caller's, GPU 0 on a fresh thread, would make a context on a GPU the run may not use) */
  const int worker = rollout_split_on_worker();
  if (worker) rollout_cuda_profile_thread_off(), devprof_thread_off();
  int cur = device_current(), rc = device_set_current(p->gpu, e);
  int slots = o->max_slots > 0 ? o->max_slots : 64;
  if ((int64_t)slots > n_prompts * G && n_prompts * G > 0) slots = (int)(n_prompts * G);
  if (!rc) rc = gpu_engine_fit(p, p->replica ? p->replica : c->m, c->pol, slots, c->longest + o->max_new_tokens + 1, e);
  if (!rc) {
    rollout_cuda_engine_set_tokenizer(p->eng, c->tok);
    rc = rollout_cuda_generate_ids(p->eng, (const int32_t *const *)c->ids + lo, c->n_ids + lo, n_prompts, G, iteration,
                                   o, out, e);
  }
  if (worker) return rc;
  rl_err ignore;
  int back = device_set_current(cur, rc ? &ignore : e); /* the calling thread's device again */
  return rc ? rc : back;
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
  /* eos_id −2: the tokenizer's EOS (each engine applies the stop rules with tok) */
  gpu_split c = {g, m, pol, tok, prompts, ids, n_ids, longest};
  if (!rc) rc = rollout_split_generate(g->place.n_rollout, gpu_part, &c, prompts, n_prompts, G, iteration, o, out, e);
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
  /* the sync first: after a failed transfer it aborts its communicators, which must
   * happen before any free below waits for a GPU whose broadcast cannot end */
  sync_nccl_close(g->nccl);
  for (int i = 0; i < g->place.n_rollout; i++) { /* each engine and replica on its own GPU */
    loop_roll *p = &g->roll[i];
    if (!p->eng && !p->replica) continue;
    device_set_current(p->gpu, &ignore);
    rollout_cuda_engine_free(p->eng);
    model_free(p->replica);
  }
  if (g->place.n_rollout) device_set_current(g->place.train_gpu, &ignore);
  memset(g, 0, sizeof *g);
}
