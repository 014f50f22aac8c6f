/* rollout.c — the rollout engine on the CPU: a slot scheduler over the KV
 * cache (model/kvcache.h), the incremental forward (model/decode.h), the
 * sampler (stages/sampler.h) and the stop rules (stages/stop.h).
 *
 * One call of rollout_generate runs steps until every sequence has finished.
 * A step: free slots take the next waiting sequences (in sample order); each
 * occupied slot contributes its rows — a newly admitted sequence its prompt
 * (prefill), a running one its last sampled token (decode), and on MoE models
 * a finished one its last token once more, so that the routing of every token
 * of the sequence is recorded (flush) — then one model_decode_step runs them
 * all, the wanted rows are sampled, and sequences that finished free their
 * slots. Siblings (the G samples of one prompt) share the prompt's prefill:
 * a sibling admitted in the same step as the one prefilling its prompt takes
 * the prefill's last logits row and copies its KV prefix afterwards; one
 * admitted later copies the prefix and re-runs only the last prompt token.
 * None of this changes a result: every row is computed independently of the
 * others (decode.h), so the batch is the same for any slot count. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "model/decode.h"
#include "model/kvcache.h"
#include "model/model.h"
#include "stages/rollout.h"
#include "stages/sampler.h"

struct rollout_engine {
  model *m;
  const tokenizer *tok;
  quant_policy policy;
  int has_policy;
  rollout_engine_opts eo;
  kvcache kv; /* grown on demand (kv.k == NULL: none yet) */
  model_decode_ws *ws;
};

/* Where a slot's sequence is. */
typedef enum slot_phase {
  SLOT_FREE = 0,
  SLOT_PREFILL, /* admitted: its prompt rows run this step */
  SLOT_SHARE,   /* admitted: a sibling prefills its prompt this step */
  SLOT_DECODE,  /* running: its last token runs this step */
  SLOT_FLUSH    /* finished (MoE): its last token runs once more for its routing */
} slot_phase;

/* One sequence being generated (becomes a rollout_sample). */
typedef struct gen_seq {
  int64_t p, g;
  const int32_t *prompt; /* not owned */
  int64_t n_prompt;
  int32_t *ids;   /* [max_new] */
  float *logp;    /* [max_new] */
  int32_t *routed; /* [(n_prompt + max_new) · L · k] or NULL */
  int64_t n;      /* generated tokens */
  finish_reason reason;
  int32_t stop_index;
  stop_seq stop;  /* with a tokenizer */
  int slot;       /* current slot or -1 */
} gen_seq;

/* The state of one rollout_generate call. */
typedef struct gen_run {
  rollout_engine *eng;
  const rollout_opts *o;
  sampler_params sp;
  stop_rule rule;
  int32_t eos;
  int64_t iteration;
  gen_seq *seq;
  int64_t n_seq, next; /* sequences, the next one to admit */
  int S;               /* slots */
  int *slot_seq;       /* [S] sequence index or -1 */
  slot_phase *phase;   /* [S] */
  int *share_src;      /* [S] SLOT_SHARE: the slot prefilling the prompt */
  int rk;              /* routed row width L·k (0: dense) */
} gen_run;

stop_rule rollout_stop_rule(const rollout_opts *o, const tokenizer *tok) {
  int32_t eos = o->ignore_eos ? -1 : o->eos_id == -2 ? (tok ? tok->eos : -1) : o->eos_id;
  return (stop_rule){eos, o->stop, o->n_stop, o->max_new_tokens, o->exclude_stop,
                     o->ignore_eos ? NULL : o->stop_ids, o->ignore_eos ? 0 : o->n_stop_ids};
}

void rollout_opts_default(rollout_opts *o) {
  memset(o, 0, sizeof *o);
  o->temperature = 1.0, o->top_p = 1.0, o->max_new_tokens = 256, o->add_bos = 1, o->max_slots = 64;
  o->eos_id = -2;
}

int rollout_engine_new(model *m, const quant_policy *policy, const tokenizer *t,
                       const rollout_engine_opts *eo, rollout_engine **out, rl_err *e) {
  *out = NULL;
  if (!m) return rl_errf(e, RL_EXIT_USAGE, "rollout: no model");
  rollout_engine_opts d = {0};
  if (eo) d = *eo;
  if (d.f32 && !m->has_f32)
    return rl_errf(e, RL_EXIT_USAGE, "rollout: the FP32 mode needs FP32 weights (load the model with keep_f32)");
  if (policy) {
    int rc = quant_policy_check(policy, e);
    if (rc) return rl_err_prefix(e, "rollout precision: ");
  }
  if (t && t->vocab > m->V)
    return rl_errf(e, RL_EXIT_USAGE,
                   "rollout: the tokenizer has %lld ids but the model's vocabulary is %d; declare a "
                   "model with a vocabulary at least as large",
                   (long long)t->vocab, m->V);
  rollout_engine *r = rl_xcalloc(1, sizeof *r);
  r->m = m, r->tok = t, r->eo = d, r->ws = model_decode_ws_new();
  if (policy) r->policy = *policy, r->has_policy = 1;
  *out = r;
  return 0;
}

void rollout_engine_free(rollout_engine *eng) {
  if (!eng) return;
  kvcache_free(&eng->kv);
  model_decode_ws_free(eng->ws);
  free(eng);
}

/* Make the engine's cache hold S slots of max_len positions. */
static int eng_kv_ensure(rollout_engine *r, int S, int64_t max_len, rl_err *e) {
  kvcache_dtype dt = r->eo.f32 || r->eo.kv_f32 ? KVCACHE_F32 : KVCACHE_BF16;
  kv_kmode km = dt == KVCACHE_BF16 && !r->eo.kv_post_rope ? KV_K_RAW : KV_K_ROPED;
  if (r->eo.max_len > max_len) max_len = r->eo.max_len;
  if (r->kv.k && r->kv.slots >= S && r->kv.max_len >= max_len && r->kv.dtype == dt && r->kv.kmode == km)
    return 0;
  if (r->kv.k) {
    if (r->kv.slots > S) S = r->kv.slots;
    if (r->kv.max_len > max_len) max_len = r->kv.max_len;
  }
  kvcache_free(&r->kv);
  return kvcache_init(&r->kv, r->m->L, S, max_len, r->m->nkv, r->m->hd, dt, km, e);
}

/* Refuse options that cannot run. */
static int opts_check(const rollout_engine *r, const rollout_opts *o, int G, int64_t n_prompts, rl_err *e) {
  if (o->max_new_tokens < 1)
    return rl_errf(e, RL_EXIT_USAGE, "rollout: max_new_tokens is %lld; it must be at least 1",
                   (long long)o->max_new_tokens);
  if (G < 1) return rl_errf(e, RL_EXIT_USAGE, "rollout: samples_per_prompt is %d; it must be at least 1", G);
  if (n_prompts < 0) return rl_errf(e, RL_EXIT_USAGE, "rollout: negative prompt count");
  if (o->prompt_base < 0 || o->prompt_base + n_prompts > UINT32_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "rollout: prompt_base %lld with %lld prompts is outside [0, 2^32)",
                   (long long)o->prompt_base, (long long)n_prompts);
  if (o->max_slots < 0) return rl_errf(e, RL_EXIT_USAGE, "rollout: max_slots is %d; 0 means 64", o->max_slots);
  if (o->n_stop > 0 && !r->tok)
    return rl_errf(e, RL_EXIT_USAGE, "rollout: stop strings need a tokenizer (the engine has none)");
  for (int i = 0; i < o->n_stop; i++)
    if (!o->stop[i] || !o->stop[i][0])
      return rl_errf(e, RL_EXIT_USAGE, "rollout: stop string %d is empty", i);
  if (o->eos_id >= r->m->V)
    return rl_errf(e, RL_EXIT_USAGE, "rollout: eos_id %d is outside the vocabulary (%d)", o->eos_id, r->m->V);
  sampler_params sp = {o->temperature, o->greedy, o->top_k, o->top_p, o->min_p};
  if (sampler_check_params(&sp, e)) return rl_err_prefix(e, "rollout: ");
  return 0;
}

/* Free what the sequences of a run own (after their data moved to the batch). */
static void run_free(gen_run *g) {
  for (int64_t i = 0; g->seq && i < g->n_seq; i++) {
    free(g->seq[i].ids), free(g->seq[i].logp), free(g->seq[i].routed);
    stop_seq_free(&g->seq[i].stop);
  }
  free(g->seq), free(g->slot_seq), free(g->phase), free(g->share_src);
}

/* Admit waiting sequences into free slots (slot order), marking siblings of
 * a prompt prefilled in this step as SLOT_SHARE. */
static void run_admit(gen_run *g) {
  for (int s = 0; s < g->S && g->next < g->n_seq; s++) {
    if (g->phase[s] != SLOT_FREE) continue;
    int64_t i = g->next++;
    gen_seq *q = &g->seq[i];
    q->slot = s, g->slot_seq[s] = (int)i, g->phase[s] = SLOT_PREFILL, g->share_src[s] = -1;
    for (int t = 0; t < g->S; t++) {
      if (t == s || g->phase[t] != SLOT_PREFILL || g->share_src[t] >= 0) continue;
      if (g->seq[g->slot_seq[t]].p != q->p) continue;
      g->phase[s] = SLOT_SHARE, g->share_src[s] = t;
      break;
    }
    if (g->phase[s] != SLOT_PREFILL) continue;
    /* a sibling resident from an earlier step: copy its prefix, re-run the last prompt token */
    for (int t = 0; t < g->S; t++) {
      if (t == s || g->phase[t] == SLOT_FREE || g->phase[t] == SLOT_PREFILL || g->phase[t] == SLOT_SHARE)
        continue;
      const gen_seq *src = &g->seq[g->slot_seq[t]];
      if (src->p != q->p) continue;
      kvcache_copy_prefix(&g->eng->kv, s, t, q->n_prompt - 1);
      if (g->rk)
        memcpy(q->routed, src->routed, (size_t)(q->n_prompt - 1) * g->rk * sizeof(int32_t));
      g->share_src[s] = -2 - t; /* prefix copied: only the last prompt row runs */
      break;
    }
  }
}

/* Append one sampled token to sequence q; sets its finish reason. */
static int run_push(gen_run *g, gen_seq *q, const sampler_out *so, rl_err *e) {
  q->ids[q->n] = so->token, q->logp[q->n] = (float)so->logp;
  if (g->eng->tok && so->token >= g->eng->tok->vocab) {
    /* an id of the model's padded vocabulary that the tokenizer lacks: no text */
    q->stop.n_tokens++;
    if (q->stop.n_tokens >= g->o->max_new_tokens) q->stop.reason = FINISH_LENGTH;
    q->n = q->stop.n_tokens, q->reason = q->stop.reason;
    return 0;
  }
  if (g->eng->tok) {
    int r = stop_seq_push(&q->stop, &g->rule, g->eng->tok, so->token, e);
    if (r < 0) return rl_err_prefix(e, "rollout: prompt %lld sample %lld: ", (long long)q->p, (long long)q->g);
    q->n = q->stop.n_tokens, q->reason = q->stop.reason, q->stop_index = q->stop.stop_index;
    return 0;
  }
  q->n++;
  if (g->eos >= 0 && so->token == g->eos) q->reason = FINISH_EOS;
  else if (q->n >= g->o->max_new_tokens) q->reason = FINISH_LENGTH;
  return 0;
}

/* One step: build the rows, run the model, sample, retire. */
static int run_step(gen_run *g, int32_t *tok, int32_t *slot, int32_t *pos, uint8_t *want,
                    int32_t *row_seq, int32_t *routed, sampler_key *keys, sampler_out *outs,
                    int32_t *want_seq, rl_err *e) {
  rollout_engine *r = g->eng;
  int n = 0, nw = 0, rc;
  for (int s = 0; s < g->S; s++) {
    if (g->phase[s] == SLOT_FREE || g->phase[s] == SLOT_SHARE) continue;
    gen_seq *q = &g->seq[g->slot_seq[s]];
    if (g->phase[s] == SLOT_PREFILL) {
      int64_t from = g->share_src[s] <= -2 ? q->n_prompt - 1 : 0;
      for (int64_t j = from; j < q->n_prompt; j++, n++) {
        tok[n] = q->prompt[j], slot[n] = s, pos[n] = (int32_t)j, row_seq[n] = g->slot_seq[s];
        want[n] = j == q->n_prompt - 1;
      }
    } else {
      tok[n] = q->ids[q->n - 1], slot[n] = s, pos[n] = (int32_t)(q->n_prompt + q->n - 1);
      row_seq[n] = g->slot_seq[s], want[n] = g->phase[s] == SLOT_DECODE;
      n++;
    }
  }
  float *logits = NULL;
  model_step st = {n, tok, slot, pos, want, r->eo.f32};
  if ((rc = model_decode_step(r->m, &r->kv, &st, r->ws, &logits, g->rk ? routed : NULL, e)))
    return rl_err_prefix(e, "rollout: ");
  /* routing of every row, at its position */
  for (int i = 0; g->rk && i < n; i++)
    memcpy(g->seq[row_seq[i]].routed + (size_t)pos[i] * g->rk, routed + (size_t)i * g->rk,
           (size_t)g->rk * sizeof(int32_t));
  /* sampling keys: each wanted row, then the SHARE siblings of prefill rows */
  int *lrow = rl_xmalloc((size_t)(g->S + n + 1) * sizeof(int));
  for (int i = 0, w = 0; i < n; i++) {
    if (!want[i]) continue;
    gen_seq *q = &g->seq[row_seq[i]];
    lrow[nw] = w, want_seq[nw] = row_seq[i];
    keys[nw++] = (sampler_key){(uint64_t)g->o->seed, (uint32_t)g->iteration, (uint32_t)q->p,
                               (uint32_t)q->g, (uint32_t)q->n};
    w++;
  }
  int n_own = nw;
  for (int s = 0; s < g->S; s++) {
    if (g->phase[s] != SLOT_SHARE) continue;
    int src = g->share_src[s], w = -1;
    for (int j = 0; j < n_own; j++)
      if (g->seq[want_seq[j]].slot == src) w = lrow[j];
    gen_seq *q = &g->seq[g->slot_seq[s]];
    lrow[nw] = w, want_seq[nw] = g->slot_seq[s];
    keys[nw++] = (sampler_key){(uint64_t)g->o->seed, (uint32_t)g->iteration, (uint32_t)q->p,
                               (uint32_t)q->g, 0};
    /* the prefix is in the source slot now: copy it (and its routing) */
    kvcache_copy_prefix(&r->kv, s, src, q->n_prompt);
    if (g->rk)
      memcpy(q->routed, g->seq[g->slot_seq[src]].routed, (size_t)q->n_prompt * g->rk * sizeof(int32_t));
  }
  /* rows are independent: sample them in parallel, then report the first failure in order */
  int64_t V = r->m->V;
  int *rcs = rl_xcalloc((size_t)nw + 1, sizeof(int));
#pragma omp parallel for schedule(dynamic, 1) if (nw > 1 && (int64_t)nw * V > (1 << 16))
  for (int j = 0; j < nw; j++)
    rcs[j] = sampler_sample(&g->sp, logits + (size_t)lrow[j] * V, V, &keys[j], &outs[j], NULL);
  rc = 0;
  for (int j = 0; j < nw && !rc; j++)
    if (rcs[j]) rc = sampler_sample(&g->sp, logits + (size_t)lrow[j] * V, V, &keys[j], &outs[j], e);
  free(rcs), free(lrow);
  if (rc) return rl_err_prefix(e, "rollout: ");
  /* retire flushed slots, advance the sampled ones */
  for (int s = 0; s < g->S; s++)
    if (g->phase[s] == SLOT_FLUSH) g->seq[g->slot_seq[s]].slot = -1, g->phase[s] = SLOT_FREE, g->slot_seq[s] = -1;
  for (int j = 0; j < nw && !rc; j++) {
    gen_seq *q = &g->seq[want_seq[j]];
    int s = q->slot;
    if ((rc = run_push(g, q, &outs[j], e))) break;
    if (q->reason == FINISH_NONE) g->phase[s] = SLOT_DECODE;
    else if (g->rk) g->phase[s] = SLOT_FLUSH;
    else q->slot = -1, g->phase[s] = SLOT_FREE, g->slot_seq[s] = -1;
  }
  return rc;
}

/* Move the sequences of a finished run into the batch. */
static void run_fill_batch(gen_run *g, rollout_batch *b) {
  for (int64_t i = 0; i < g->n_seq; i++) {
    gen_seq *q = &g->seq[i];
    rollout_sample *s = &b->s[i];
    s->prompt_index = q->p, s->sample_index = q->g;
    s->prompt_ids = rl_xmalloc((size_t)(q->n_prompt + 1) * sizeof(int32_t));
    memcpy(s->prompt_ids, q->prompt, (size_t)q->n_prompt * sizeof(int32_t));
    s->n_prompt = q->n_prompt;
    s->completion_ids = q->ids, s->logp_rollout = q->logp, s->n_completion = q->n;
    q->ids = NULL, q->logp = NULL;
    s->finish = q->reason, s->stop_index = q->reason == FINISH_STOP ? q->stop_index : -1;
    if (g->eng->tok) {
      s->completion_text = q->stop.text ? q->stop.text : strdup("");
      q->stop.text = NULL;
      tokenizer_fix_utf8(&s->completion_text); /* byte-level BPE may end inside a character */
    } else {
      s->completion_text = strdup("");
    }
    if (g->rk) s->routed = q->routed, q->routed = NULL;
    b->n_generated += q->n;
  }
}

/* The core of both entry points: prompts[p] (n_ids[p] ids) → *b (samples, texts aside). */
static int run_generate(rollout_engine *r, const int32_t *const *ids, const int64_t *n_ids,
                        int64_t n_prompts, int G, int64_t iteration, const rollout_opts *o,
                        rollout_batch *b, rl_err *e) {
  model *m = r->m;
  int rc;
  if ((rc = opts_check(r, o, G, n_prompts, e))) return rc;
  if (!r->eo.f32 && r->has_policy &&
      (!m->quantized || memcmp(&m->policy, &r->policy, sizeof r->policy))) {
    if ((rc = model_quantize(m, &r->policy, e))) return rl_err_prefix(e, "rollout: ");
  }
  int64_t maxp = 0;
  for (int64_t p = 0; p < n_prompts; p++) {
    if (n_ids[p] < 1)
      return rl_errf(e, RL_EXIT_USAGE, "rollout: prompt %lld has no tokens (an empty prompt needs add_bos)",
                     (long long)(o->prompt_base + p));
    for (int64_t j = 0; j < n_ids[p]; j++)
      if (ids[p][j] < 0 || ids[p][j] >= m->V)
        return rl_errf(e, RL_EXIT_USAGE, "rollout: prompt %lld token %lld is id %d, outside the vocabulary (%d)",
                       (long long)(o->prompt_base + p), (long long)j, ids[p][j], m->V);
    if (n_ids[p] > maxp) maxp = n_ids[p];
  }
  int64_t max_len = maxp + o->max_new_tokens;
  if (max_len > m->cfg.max_position_embeddings)
    return rl_errf(e, RL_EXIT_USAGE,
                   "rollout: prompts of up to %lld tokens + max_new_tokens %lld exceed the model's "
                   "max_position_embeddings (%lld); shorten the prompts or max_new_tokens",
                   (long long)maxp, (long long)o->max_new_tokens, (long long)m->cfg.max_position_embeddings);
  gen_run g = {0};
  g.eng = r, g.o = o, g.iteration = iteration;
  g.sp = (sampler_params){o->temperature, o->greedy, o->top_k, o->top_p, o->min_p};
  g.rule = rollout_stop_rule(o, r->tok);
  g.eos = g.rule.eos;
  g.n_seq = n_prompts * G;
  g.rk = m->E > 0 ? m->L * m->topk : 0;
  int64_t want_slots = o->max_slots ? o->max_slots : 64;
  g.S = (int)(g.n_seq < want_slots ? (g.n_seq > 0 ? g.n_seq : 1) : want_slots);
  g.seq = rl_xcalloc((size_t)(g.n_seq > 0 ? g.n_seq : 1), sizeof(gen_seq));
  for (int64_t i = 0; i < g.n_seq; i++) {
    gen_seq *q = &g.seq[i];
    q->p = o->prompt_base + i / G, q->g = i % G, q->prompt = ids[i / G], q->n_prompt = n_ids[i / G], q->slot = -1;
    q->ids = rl_xmalloc((size_t)o->max_new_tokens * sizeof(int32_t));
    q->logp = rl_xmalloc((size_t)o->max_new_tokens * sizeof(float));
    if (g.rk) { /* −1 until a row is fed (the last generated token never is) */
      q->routed = rl_xmalloc((size_t)(q->n_prompt + o->max_new_tokens) * g.rk * sizeof(int32_t));
      memset(q->routed, 0xff, (size_t)(q->n_prompt + o->max_new_tokens) * g.rk * sizeof(int32_t));
    }
    q->stop_index = -1;
    stop_seq_init(&q->stop);
  }
  g.slot_seq = rl_xmalloc((size_t)g.S * sizeof(int)), g.phase = rl_xcalloc((size_t)g.S, sizeof(slot_phase));
  g.share_src = rl_xmalloc((size_t)g.S * sizeof(int));
  for (int s = 0; s < g.S; s++) g.slot_seq[s] = -1, g.share_src[s] = -1;
  if ((rc = eng_kv_ensure(r, g.S, max_len, e))) {
    run_free(&g);
    return rl_err_prefix(e, "rollout: ");
  }
  /* row buffers for the largest step: every slot prefilling a longest prompt */
  int64_t rows = (int64_t)g.S * maxp + 1;
  int32_t *tok = rl_xmalloc((size_t)rows * sizeof(int32_t)), *slot = rl_xmalloc((size_t)rows * sizeof(int32_t));
  int32_t *pos = rl_xmalloc((size_t)rows * sizeof(int32_t)), *row_seq = rl_xmalloc((size_t)rows * sizeof(int32_t));
  int32_t *want_seq = rl_xmalloc((size_t)(rows + g.S) * sizeof(int32_t));
  uint8_t *want = rl_xmalloc((size_t)rows);
  int32_t *routed = g.rk ? rl_xmalloc((size_t)rows * g.rk * sizeof(int32_t)) : NULL;
  sampler_key *keys = rl_xmalloc((size_t)(rows + g.S) * sizeof(sampler_key));
  sampler_out *outs = rl_xmalloc((size_t)(rows + g.S) * sizeof(sampler_out));
  for (;;) {
    if (rollout_cancelled(o)) {
      rc = rl_errf(e, RL_EXIT_FAIL, "rollout cancelled");
      break;
    }
    run_admit(&g);
    int busy = 0;
    for (int s = 0; s < g.S; s++) busy |= g.phase[s] != SLOT_FREE;
    if (!busy) break;
    if ((rc = run_step(&g, tok, slot, pos, want, row_seq, routed, keys, outs, want_seq, e))) break;
  }
  free(tok), free(slot), free(pos), free(row_seq), free(want_seq), free(want), free(routed), free(keys), free(outs);
  if (!rc) {
    b->n = g.n_seq, b->n_prompts = n_prompts, b->group = G, b->iteration = iteration;
    b->s = rl_xcalloc((size_t)(g.n_seq > 0 ? g.n_seq : 1), sizeof(rollout_sample));
    b->route_layers = g.rk ? m->L : 0, b->route_topk = g.rk ? m->topk : 0;
    run_fill_batch(&g, b);
  }
  run_free(&g);
  return rc;
}

int rollout_generate_ids(rollout_engine *eng, const int32_t *const *ids, const int64_t *n_ids,
                         int64_t n_prompts, int G, int64_t iteration, const rollout_opts *o,
                         rollout_batch *out, rl_err *e) {
  double t0 = rl_now();
  memset(out, 0, sizeof *out);
  int rc = run_generate(eng, ids, n_ids, n_prompts, G, iteration, o, out, e);
  if (rc) {
    rollout_batch_free(out);
    return rc;
  }
  for (int64_t i = 0; i < out->n; i++) {
    rollout_sample *s = &out->s[i];
    s->data_index = -1, s->extra_json = strdup("{}");
    s->prompt_text = eng->tok ? tokenizer_decode(eng->tok, s->prompt_ids, s->n_prompt, TOKENIZER_SKIP_SPECIAL, e)
                              : NULL;
    if (!s->prompt_text) s->prompt_text = strdup("");
  }
  out->wall_s = rl_now() - t0;
  return 0;
}

int rollout_generate(rollout_engine *eng, const prompt_item *prompts, int64_t n_prompts, int G,
                     int64_t iteration, const rollout_opts *o, rollout_batch *out, rl_err *e) {
  double t0 = rl_now();
  memset(out, 0, sizeof *out);
  if (!eng->tok) return rl_errf(e, RL_EXIT_USAGE, "rollout: text prompts need a tokenizer (the engine has none)");
  if (n_prompts < 0) return rl_errf(e, RL_EXIT_USAGE, "rollout: negative prompt count");
  int32_t **ids = rl_xcalloc((size_t)(n_prompts + 1), sizeof(int32_t *));
  int64_t *n_ids = rl_xcalloc((size_t)(n_prompts + 1), sizeof(int64_t));
  int bos = o->add_bos && eng->tok->bos >= 0, rc = 0;
  for (int64_t p = 0; p < n_prompts && !rc; p++) {
    int32_t *t = NULL;
    int64_t n = 0;
    const char *text = prompts[p].text ? prompts[p].text : "";
    if ((rc = tokenizer_encode(eng->tok, text, strlen(text), &t, &n, e))) {
      rl_err_prefix(e, "rollout: prompt %lld: ", (long long)(o->prompt_base + p));
      break;
    }
    ids[p] = rl_xmalloc((size_t)(n + bos + 1) * sizeof(int32_t));
    if (bos) ids[p][0] = eng->tok->bos;
    memcpy(ids[p] + bos, t, (size_t)n * sizeof(int32_t));
    free(t);
    n_ids[p] = n + bos;
    if (o->max_prompt_tokens > 0 && n_ids[p] > o->max_prompt_tokens)
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "rollout: prompt %lld (\"%.40s%s\") has %lld tokens, more than max_prompt_tokens %lld; "
                   "raise rollout.max_prompt_tokens or shorten the prompt",
                   (long long)(o->prompt_base + p), text, strlen(text) > 40 ? "…" : "", (long long)n_ids[p],
                   (long long)o->max_prompt_tokens);
  }
  if (!rc) rc = run_generate(eng, (const int32_t *const *)ids, n_ids, n_prompts, G, iteration, o, out, e);
  for (int64_t p = 0; p < n_prompts; p++) free(ids[p]);
  free(ids), free(n_ids);
  if (rc) {
    rollout_batch_free(out);
    return rc;
  }
  for (int64_t i = 0; i < out->n; i++) {
    rollout_sample *s = &out->s[i];
    const prompt_item *it = &prompts[s->prompt_index - o->prompt_base];
    s->prompt_text = strdup(it->text ? it->text : "");
    s->extra_json = strdup(it->extra_json ? it->extra_json : "{}");
    s->data_index = it->index, s->data_epoch = it->epoch;
  }
  out->wall_s = rl_now() - t0;
  return 0;
}

void rollout_batch_free(rollout_batch *b) {
  if (!b) return;
  for (int64_t i = 0; b->s && i < b->n; i++) {
    rollout_sample *s = &b->s[i];
    free(s->prompt_text), free(s->extra_json), free(s->prompt_ids), free(s->completion_ids);
    free(s->completion_text), free(s->logp_rollout), free(s->routed);
  }
  free(b->s);
  memset(b, 0, sizeof *b);
}

int rollout_routed_layer(const rollout_batch *b, const rollout_sample *s, int l, int32_t *dst) {
  if (!b->route_layers || !s->routed || l < 0 || l >= b->route_layers) return -1;
  int64_t T = s->n_prompt + s->n_completion;
  int L = b->route_layers, k = b->route_topk;
  for (int64_t t = 0; t < T; t++)
    memcpy(dst + t * k, s->routed + ((size_t)t * L + l) * k, (size_t)k * sizeof(int32_t));
  return 0;
}

/* ---------------------------------------------------------------- a batch split over engines */

void rollout_split_range(int64_t n_prompts, int parts, int k, int64_t *lo, int64_t *hi) {
  *lo = n_prompts * k / parts, *hi = n_prompts * (k + 1) / parts;
}

int rollout_batch_concat(rollout_batch *parts, int n, rollout_batch *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  if (n < 1) return rl_errf(e, RL_EXIT_FAIL, "rollout_batch_concat: no parts");
  const rollout_batch *shape = NULL; /* the first part with samples: its routing shape */
  int64_t total = 0, next = -1;
  for (int k = 0; k < n; k++) {
    const rollout_batch *b = &parts[k];
    if (b->iteration != parts[0].iteration || b->group != parts[0].group || b->n != b->n_prompts * b->group)
      return rl_errf(e, RL_EXIT_FAIL,
                     "rollout_batch_concat: part %d (iteration %lld, %lld prompts x %lld = %lld samples) does not fit "
                     "part 0 (iteration %lld, G = %lld)", k, (long long)b->iteration, (long long)b->n_prompts,
                     (long long)b->group, (long long)b->n, (long long)parts[0].iteration, (long long)parts[0].group);
    if (!b->n) continue;
    if (shape && (b->route_layers != shape->route_layers || b->route_topk != shape->route_topk))
      return rl_errf(e, RL_EXIT_FAIL, "rollout_batch_concat: part %d routes %d layers x top-%d, an earlier part %d x %d",
                     k, b->route_layers, b->route_topk, shape->route_layers, shape->route_topk);
    if (!shape) shape = b, next = b->s[0].prompt_index;
    for (int64_t i = 0; i < b->n; i++)
      if (b->s[i].prompt_index != next + i / b->group || b->s[i].sample_index != i % b->group)
        return rl_errf(e, RL_EXIT_FAIL,
                       "rollout_batch_concat: part %d sample %lld is (prompt %lld, sample %lld), expected (%lld, %lld): "
                       "the parts must be consecutive prompt runs", k, (long long)i, (long long)b->s[i].prompt_index,
                       (long long)b->s[i].sample_index, (long long)(next + i / b->group), (long long)(i % b->group));
    next += b->n_prompts, total += b->n;
  }
  out->iteration = parts[0].iteration, out->group = parts[0].group, out->n = total;
  out->route_layers = shape ? shape->route_layers : parts[0].route_layers;
  out->route_topk = shape ? shape->route_topk : parts[0].route_topk;
  out->s = rl_xcalloc((size_t)(total ? total : 1), sizeof *out->s);
  int64_t at = 0;
  for (int k = 0; k < n; k++) {
    rollout_batch *b = &parts[k];
    if (b->n) memcpy(out->s + at, b->s, (size_t)b->n * sizeof *b->s);
    at += b->n;
    out->n_prompts += b->n_prompts, out->n_generated += b->n_generated;
    if (b->wall_s > out->wall_s) out->wall_s = b->wall_s;
    free(b->s);
    memset(b, 0, sizeof *b);
  }
  return 0;
}

int rollout_cancelled(const rollout_opts *o) { return o->cancel && __atomic_load_n(o->cancel, __ATOMIC_ACQUIRE); }

/* One part of rollout_split_generate and what it returned. */
typedef struct split_job {
  rollout_part_fn fn;
  void *ctx;
  int part, G;
  const prompt_item *prompts;
  int64_t n_prompts, iteration;
  rollout_opts o;
  rollout_batch b;
  rl_err e;
  int rc;
  int *first; /* the first part to fail + 1 (0: none yet), shared by the parts */
  int *cancel; /* the parts' o.cancel, raised once *first is set */
} split_job;

static void *split_run(void *arg) {
  split_job *j = arg;
  memset(&j->b, 0, sizeof j->b);
  rl_err_clear(&j->e);
  j->rc = j->fn(j->ctx, j->part, j->prompts, j->n_prompts, j->G, j->iteration, &j->o, &j->b, &j->e);
  if (j->rc) { /* the first failure names the split's error, then the others stop */
    int none = 0;
    __atomic_compare_exchange_n(j->first, &none, j->part + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    __atomic_store_n(j->cancel, 1, __ATOMIC_RELEASE);
  }
  return NULL;
}

/* 1 on a thread rollout_split_generate started for a part (it ends with the part). */
static _Thread_local int split_worker;
int rollout_split_on_worker(void) { return split_worker; }
static void *split_thread(void *arg) {
  split_worker = 1;
  return split_run(arg);
}

int rollout_split_generate(int parts, rollout_part_fn fn, void *ctx, const prompt_item *prompts, int64_t n_prompts,
                           int G, int64_t iteration, const rollout_opts *o, rollout_batch *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  if (parts < 1 || parts > ROLLOUT_SPLIT_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "rollout: a batch split into %d parts; use 1 to %d", parts, ROLLOUT_SPLIT_MAX);
  if (n_prompts < 0) return rl_errf(e, RL_EXIT_USAGE, "rollout: negative prompt count");
  split_job *job = rl_xcalloc((size_t)parts, sizeof *job);
  pthread_t *th = rl_xcalloc((size_t)parts, sizeof *th);
  int *started = rl_xcalloc((size_t)parts, sizeof *started);
  int first = 0, cancel = 0;
  for (int k = 0; k < parts; k++) {
    int64_t lo, hi;
    rollout_split_range(n_prompts, parts, k, &lo, &hi);
    split_job *j = &job[k];
    j->fn = fn, j->ctx = ctx, j->part = k, j->G = G, j->prompts = prompts + lo, j->n_prompts = hi - lo;
    j->iteration = iteration, j->o = *o, j->o.prompt_base = o->prompt_base + lo;
    j->o.cancel = &cancel, j->first = &first, j->cancel = &cancel;
  }
  /* empty parts (more parts than prompts) call nothing: an empty batch of the iteration */
  for (int k = 1; k < parts; k++)
    if (job[k].n_prompts) started[k] = !pthread_create(&th[k], NULL, split_thread, &job[k]);
  if (job[0].n_prompts || parts == 1) split_run(&job[0]);
  for (int k = 1; k < parts; k++) {
    if (started[k]) pthread_join(th[k], NULL);
    else if (job[k].n_prompts) split_run(&job[k]); /* no thread to be had: run it here, after the others */
  }
  int rc = 0;
  if (first) { /* every thread is joined: first is settled */
    const int k = first - 1;
    rc = job[k].rc;
    if (e) {
      *e = job[k].e;
      if (parts > 1) rl_err_prefix(e, "rollout part %d of %d: ", k, parts);
    }
  }
  rollout_batch *b = rl_xcalloc((size_t)parts, sizeof *b);
  for (int k = 0; k < parts; k++) {
    b[k] = job[k].b;
    if (!job[k].n_prompts && !(k == 0 && parts == 1)) b[k].iteration = iteration, b[k].group = G;
  }
  if (!rc) rc = rollout_batch_concat(b, parts, out, e);
  for (int k = 0; k < parts; k++) rollout_batch_free(&b[k]);
  free(b), free(job), free(th), free(started);
  return rc;
}
