/* loop_sft.c — the batch of an SFT iteration: the data stream's examples as
 * (prompt, target) token sequences, in place of a rollout.
 *
 * Example i of iteration k is prompt item i of prompts_batch(seed, k, B) (the
 * same deterministic cursor as an RL run: position (k−1)·B + i), so a resumed
 * SFT run rebuilds any iteration's batch from (seed, k, B, file) alone. The
 * prompt ids are [BOS] ++ encode(prompt) — exactly what the rollout engine
 * feeds the model (rollout_opts.add_bos), so an RL run started from the SFT
 * checkpoint sees the context it was trained on — and the completion ids
 * (the targets) are encode(completion) ++ [EOS]: the model also learns to
 * stop. The completion is the JSONL field LOOP_SFT_FIELD of the example (a
 * Lua task may return it too). */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "runner/loop_int.h"

/* A malloc'd copy of ids[0..n) with `pre` before and `post` after (each when >= 0). */
static int32_t *sft_ids(const int32_t *ids, int64_t n, int32_t pre, int32_t post, int64_t *out_n) {
  int64_t m = n + (pre >= 0) + (post >= 0), j = 0;
  int32_t *v = rl_xmalloc((size_t)(m ? m : 1) * sizeof *v);
  if (pre >= 0) v[j++] = pre;
  if (n) memcpy(v + j, ids, (size_t)n * sizeof *v);
  j += n;
  if (post >= 0) v[j++] = post;
  *out_n = m;
  return v;
}

/* Fill sample s from one data item; errors name the example and what to fix. */
static int sft_sample(const char *path, const prompt_item *it, int64_t k, int64_t i, const tokenizer *tok,
                      int64_t max_len, rollout_sample *s, rl_err *e) {
  char where[4200];
  if (it->line > 0) snprintf(where, sizeof where, "%s:%lld: the example", path, (long long)it->line);
  else snprintf(where, sizeof where, "%s: prompts(n, rng) item %lld", path, (long long)i + 1);
  json_error_t je;
  json_t *o = json_loads(it->extra_json ? it->extra_json : "{}", 0, &je);
  const char *target = json_string_value(json_object_get(o, LOOP_SFT_FIELD));
  int rc = 0;
  if (!target)
    rc = rl_errf(e, RL_EXIT_USAGE,
                 "%s has no string field \"" LOOP_SFT_FIELD "\" (the target text; sft, iteration %lld): "
                 "train.algorithm sft needs lines like {\"prompt\": \"...\", \"" LOOP_SFT_FIELD "\": \"...\"}",
                 where, (long long)k);
  int32_t *p = NULL, *c = NULL;
  int64_t np = 0, nc = 0;
  if (!rc) rc = tokenizer_encode(tok, it->text, strlen(it->text), &p, &np, e);
  if (!rc) rc = tokenizer_encode(tok, target, strlen(target), &c, &nc, e);
  if (rc == RL_EXIT_USAGE && target) rl_err_prefix(e, "%s (sft, iteration %lld): ", where, (long long)k);
  if (!rc) {
    s->prompt_index = i, s->sample_index = 0, s->data_index = it->index, s->data_epoch = it->epoch;
    s->prompt_text = strdup(it->text);
    s->extra_json = strdup(it->extra_json ? it->extra_json : "{}");
    s->completion_text = strdup(target);
    s->prompt_ids = sft_ids(p, np, tok->bos, -1, &s->n_prompt);
    s->completion_ids = sft_ids(c, nc, -1, tok->eos, &s->n_completion);
    s->finish = tok->eos >= 0 ? FINISH_EOS : FINISH_LENGTH;
    s->stop_index = -1;
    if (max_len > 0 && s->n_prompt + s->n_completion > max_len)
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "%s is %lld + %lld tokens (prompt with BOS + target with EOS; sft, iteration %lld), more "
                   "than the model's %lld positions: shorten it or use a model with a longer max_seq_len",
                   where, (long long)s->n_prompt, (long long)s->n_completion, (long long)k, (long long)max_len);
  }
  free(p), free(c);
  json_decref(o);
  return rc;
}

int loop_sft_batch(prompt_source *src, const tokenizer *tok, uint64_t seed, int64_t k, int64_t B, int64_t max_len,
                   rollout_batch *out, rl_err *e) {
  double t0 = rl_now();
  memset(out, 0, sizeof *out);
  prompt_item *items = NULL;
  if (prompts_batch(src, seed, k, B, &items, e)) return e->code;
  out->iteration = k, out->n_prompts = B, out->group = 1, out->n = B;
  out->s = rl_xcalloc((size_t)(B ? B : 1), sizeof *out->s);
  int rc = 0;
  for (int64_t i = 0; i < B && !rc; i++) rc = sft_sample(prompts_path(src), &items[i], k, i, tok, max_len, &out->s[i], e);
  prompts_items_free(items, B);
  if (rc) {
    rollout_batch_free(out);
    return rc;
  }
  for (int64_t i = 0; i < B; i++) out->n_generated += out->s[i].n_completion;
  out->wall_s = rl_now() - t0;
  return 0;
}
