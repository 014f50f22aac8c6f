/* loop_gpu.c — the run loop's GPU backends (a recipe whose run class is a
 * GPU): which class the run takes, and text prompts → the CUDA rollout engine
 * (stages/rollout_cuda.h works on token ids; this file tokenizes the prompts
 * as rollout_generate does, hands the engine the tokenizer for the stop rules
 * and the completion text, and fills the sample fields the reward and the
 * store read). The trainer and the sync pick the
 * device themselves (train_opts.device, m->cu). */
#include <stdlib.h>
#include <string.h>

#include "model/model_cuda.h"
#include "runner/loop_int.h"
#include "runner/matrix.h"

int loop_gpu_wanted(const recipe *r) {
  hw_target t;
  hw_target_detect(&t);
  return recipe_run_class(r, &t) != HW_CPU;
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
      rl_err_prefix(e, "rollout: prompt %lld: ", (long long)p);
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
                   (long long)p, (long long)n_ids[p], (long long)o->max_prompt_tokens);
  }
  rollout_opts go = *o; /* eos_id −2: the tokenizer's EOS (the engine applies the stop rules with tok) */
  int slots = go.max_slots > 0 ? go.max_slots : 64;
  if ((int64_t)slots > n_prompts * G && n_prompts * G > 0) slots = (int)(n_prompts * G);
  if (!rc) rc = gpu_engine_fit(g, m, pol, slots, longest + go.max_new_tokens + 1, e);
  if (!rc) {
    rollout_cuda_engine_set_tokenizer(g->eng, tok);
    rc = rollout_cuda_generate_ids(g->eng, (const int32_t *const *)ids, n_ids, n_prompts, G, iteration, &go, out, e);
  }
  for (int64_t p = 0; p < n_prompts; p++) free(ids[p]);
  free(ids), free(n_ids);
  for (int64_t i = 0; !rc && i < out->n; i++) {
    rollout_sample *s = &out->s[i];
    const prompt_item *it = &prompts[s->prompt_index];
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
  rollout_cuda_engine_free(g->eng);
  memset(g, 0, sizeof *g);
}
