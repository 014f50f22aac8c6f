/* loop_batch.c — a rollout batch as rows of the samples table and back, so a
 * resumed run reads committed rollouts instead of regenerating them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/loop_int.h"

store_sample *loop_batch_to_rows(const rollout_batch *b, int64_t batch_size) {
  store_sample *v = rl_xcalloc((size_t)(b->n ? b->n : 1), sizeof *v);
  for (int64_t i = 0; i < b->n; i++) {
    const rollout_sample *s = &b->s[i];
    store_sample *o = &v[i];
    o->iteration = b->iteration;
    o->prompt_index = (b->iteration - 1) * batch_size + s->prompt_index;
    o->sample_index = (int32_t)s->sample_index;
    o->prompt = s->prompt_text ? s->prompt_text : "";
    o->completion = s->completion_text ? s->completion_text : "";
    o->prompt_tokens = s->prompt_ids;
    o->n_prompt_tokens = (int32_t)s->n_prompt;
    o->tokens = s->completion_ids;
    o->n_tokens = (int32_t)s->n_completion;
    o->logprobs = s->logp_rollout;
    o->n_logprobs = (int32_t)s->n_completion;
    o->reward = s->reward;
    o->extra_json = s->extra_json;
    o->finish_reason = finish_reason_name(s->finish);
    if (s->routed && b->route_layers > 0) {
      o->routed_experts = s->routed;
      o->routed_experts_bytes =
          (size_t)(s->n_prompt + s->n_completion) * (size_t)b->route_layers * (size_t)b->route_topk * sizeof(int32_t);
    }
  }
  return v;
}

/* The finish_reason of a stored name (FINISH_NONE when unknown). */
static finish_reason loop_finish_parse(const char *name) {
  for (int f = FINISH_EOS; f <= FINISH_LENGTH; f++)
    if (name && !strcmp(name, finish_reason_name((finish_reason)f))) return (finish_reason)f;
  return FINISH_NONE;
}

/* A malloc'd copy of n elements of size sz (NULL when n is 0). */
static void *loop_dup(const void *p, size_t n, size_t sz) {
  if (!n || !p) return NULL;
  void *q = rl_xmalloc(n * sz);
  memcpy(q, p, n * sz);
  return q;
}

int loop_batch_from_store(store *s, int64_t iteration, int64_t B, int64_t G, int route_layers, int route_topk,
                          rollout_batch *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  store_sample_list l = {0};
  if (store_samples_get(s, iteration, &l, e)) return e->code;
  int rc = 0;
  if (l.n != B * G)
    rc = rl_errf(e, RL_EXIT_STATE,
                 "iteration %lld: the store holds %d samples, the recipe makes %lld (%lld prompts x %lld); "
                 "the run's recipe changed or state.db was edited",
                 (long long)iteration, l.n, (long long)(B * G), (long long)B, (long long)G);
  out->iteration = iteration;
  out->n_prompts = B;
  out->group = G;
  out->n = rc ? 0 : B * G;
  out->s = rl_xcalloc((size_t)(out->n ? out->n : 1), sizeof *out->s);
  for (int64_t i = 0; i < out->n && !rc; i++) {
    const store_sample *r = &l.v[i];
    rollout_sample *o = &out->s[i];
    int64_t p = r->prompt_index - (iteration - 1) * B, g = r->sample_index;
    if (p != i / G || g != i % G) {
      rc = rl_errf(e, RL_EXIT_STATE,
                   "iteration %lld: stored sample %lld has prompt %lld, sample %lld; expected prompt %lld, "
                   "sample %lld (state.db does not match the recipe's batch)",
                   (long long)iteration, (long long)i, (long long)r->prompt_index, (long long)g,
                   (long long)((iteration - 1) * B + i / G), (long long)(i % G));
      break;
    }
    o->prompt_index = p;
    o->sample_index = g;
    o->data_index = -1;
    o->prompt_text = rl_xstrdup(r->prompt ? r->prompt : "");
    o->extra_json = rl_xstrdup(r->extra_json ? r->extra_json : "{}");
    o->prompt_ids = loop_dup(r->prompt_tokens, (size_t)r->n_prompt_tokens, sizeof(int32_t));
    o->n_prompt = r->n_prompt_tokens;
    o->completion_ids = loop_dup(r->tokens, (size_t)r->n_tokens, sizeof(int32_t));
    o->n_completion = r->n_tokens;
    o->completion_text = rl_xstrdup(r->completion ? r->completion : "");
    o->logp_rollout = loop_dup(r->logprobs, (size_t)r->n_logprobs, sizeof(float));
    o->finish = loop_finish_parse(r->finish_reason);
    o->stop_index = -1;
    o->reward = r->reward;
    out->n_generated += r->n_tokens;
    size_t want = (size_t)(r->n_prompt_tokens + r->n_tokens) * (size_t)route_layers * (size_t)route_topk * 4;
    if (route_layers > 0 && r->routed_experts_bytes == want)
      o->routed = loop_dup(r->routed_experts, want / 4, sizeof(int32_t));
    if (r->n_logprobs != r->n_tokens || isnan(r->reward))
      rc = rl_errf(e, RL_EXIT_STATE,
                   "iteration %lld, prompt %lld, sample %lld: the stored sample is incomplete (%d tokens, %d "
                   "log-probs, reward %g)",
                   (long long)iteration, (long long)r->prompt_index, (long long)g, r->n_tokens, r->n_logprobs,
                   r->reward);
  }
  if (route_layers > 0) out->route_layers = route_layers, out->route_topk = route_topk;
  store_sample_list_free(&l);
  if (rc) rollout_batch_free(out);
  return rc;
}
