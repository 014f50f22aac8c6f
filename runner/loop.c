/* loop.c — the run loop (loop.h): convert, then rollout → reward → commit →
 * train → sync → checkpoint per iteration, each step through the store so
 * that a run killed anywhere resumes to bit-identical weights. */
#include "runner/loop.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lua/host.h"
#include "runner/inputs.h"
#include "runner/loop_int.h"
#include "stages/prompts.h"
#include "stages/sync.h"
#include "state/fault.h"
#include "state/sha256.h"

/* First signal: ask the loop to stop at the next boundary, said at once (the
 * step under way may take a while); second: leave now (an open SQLite
 * transaction is rolled back by the journal on next open). */
void loop_install_signals(void) {
  rl_interrupt_install("rlrun: interrupt: stopping at the next step boundary (interrupt again to stop now; the run "
                       "stays resumable)",
                       "rlrun: second interrupt: stopping now (the run stays resumable)");
}

int loop_stop_requested(void) { return rl_interrupted(); }

/* Everything one run of the loop holds. */
typedef struct loop_ctx {
  const char *dir;
  store *s;
  const recipe *r;
  const char *model_from; /* the run's own resume checkpoint (loop_model_build's from) or NULL */
  /* the recipe the tokenizer, its end ids and the checkpoint copies come from:
   * *r, or (loop_inputs_from_own) *r re-pointed at the run's own newest
   * checkpoint, whose copies stand in for a model source that is gone */
  recipe in;
  char in_ckpt[4200];
  FILE *log, *logfile;
  int progress, quiet, changed;
  tokenizer *tok;
  prompt_source *src;
  luahost *lua;
  model *m;
  char *config_json;
  rollout_engine *eng;
  int gpu;      /* the run class is a GPU: CUDA model, rollout engine and trainer */
  loop_gpu geng;
  trainer *tr;
  quant_policy ro_pol, tr_pol;
  rollout_opts ro;
  int32_t *stop_ids; /* ids that end a completion besides the EOS (recipe_end_ids) */
  int64_t B, G, N;
  double t0;
  int64_t first_iter, done_iters;
  double last_reward, last_mismatch, last_loss;
  const char *stage;
  int64_t iter;
} loop_ctx;

/* A log line: to the log stream (unless a status line owns it) and logs/run.log. */
static void loop_say(loop_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void loop_say(loop_ctx *c, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (!c->quiet) { /* --quiet: the log file only (on a terminal the status line stays) */
    if (c->progress) fprintf(c->log, "\r\033[K%s\n", line);
    else fprintf(c->log, "%s\n", line);
  }
  fflush(c->log);
  if (c->logfile) {
    fprintf(c->logfile, "%s\n", line);
    fflush(c->logfile);
  }
}

/* "1:05:03" or "5:03" for a number of seconds. */
static void loop_fmt_time(double s, char *out, size_t n) {
  if (!isfinite(s) || s < 0) {
    snprintf(out, n, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(out, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else snprintf(out, n, "%ld:%02ld", t / 60, t % 60);
}

/* The terminal status line: stage, iteration, rate, ETA, latest reward and mismatch. */
static void loop_status(loop_ctx *c) {
  if (!c->progress) return;
  double el = rl_now() - c->t0, rate = c->done_iters > 0 ? c->done_iters / el : NAN;
  char eta[32], rt[32];
  loop_fmt_time(c->done_iters > 0 ? (double)(c->N - c->iter + 1) / rate : NAN, eta, sizeof eta);
  if (isfinite(rate)) snprintf(rt, sizeof rt, "%.3g it/s", rate);
  else snprintf(rt, sizeof rt, "? it/s");
  char rw[32] = "-", mm[32] = "-"; /* "-" until the first value */
  if (isfinite(c->last_reward)) snprintf(rw, sizeof rw, "%.4g", c->last_reward);
  if (isfinite(c->last_mismatch)) snprintf(mm, sizeof mm, "%.3g", c->last_mismatch);
  if (c->r->train.algorithm == ALGO_SFT) /* no reward, no rollout to mismatch */
    fprintf(c->log, "\r\033[K[%lld/%lld] %-10s %s  ETA %s", (long long)c->iter, (long long)c->N, c->stage, rt, eta);
  else
    fprintf(c->log, "\r\033[K[%lld/%lld] %-10s %s  ETA %s  reward %s  mismatch %s", (long long)c->iter,
            (long long)c->N, c->stage, rt, eta, rw, mm);
  fflush(c->log);
}

/* Enter a stage: status line, failure point, and a RUNNING mark unless the
 * step is already done (*done). */
static int loop_enter(loop_ctx *c, int64_t k, const char *stage, int *done, rl_err *e) {
  c->stage = stage;
  c->iter = k;
  loop_status(c);
  char point[64];
  snprintf(point, sizeof point, "loop.%s", stage);
  if (fault_hit(point))
    return rl_errf(e, RL_EXIT_FAIL, "iteration %lld, %s: failure injected by RLRUN_FAULT", (long long)k, stage);
  int st = STORE_STEP_NONE;
  if (store_step_status(c->s, k, stage, &st, e)) return e->code;
  *done = st == STORE_STEP_DONE;
  if (!*done && store_step_mark(c->s, k, stage, STORE_STEP_RUNNING, NULL, NULL, e)) return e->code;
  return 0;
}

/* Record a failed stage (step row + error event); returns e->code. */
static int loop_failed(loop_ctx *c, int64_t k, const char *stage, rl_err *e) {
  rl_err ignore;
  int st = STORE_STEP_NONE;
  store_rollback(c->s);
  if (!store_step_status(c->s, k, stage, &st, &ignore) && st != STORE_STEP_DONE)
    store_step_mark(c->s, k, stage, STORE_STEP_FAILED, e->msg, NULL, &ignore);
  store_event(c->s, STORE_ERROR, k, stage, &ignore, "%s", e->msg);
  return e->code;
}

/* Sync (stages/sync.h): the rollout view := re-quantization of the master in
 * the rollout precision, timed, verified when the recipe says sync.verify; a
 * GPU run with the rollout engine on its own GPU sends it there over NCCL. */
static int loop_sync_weights(loop_ctx *c, sync_stats *st, rl_err *e) {
  sync_opts so = {.verify = c->r->sync.verify, .bucket_bytes = (uint64_t)c->r->sync.bucket_mb << 20};
  if (c->gpu) return loop_gpu_sync(&c->geng, c->m, &c->ro_pol, &so, st, e);
  return sync_colocated(c->m, &c->ro_pol, &so, st, e);
}

/* A run resuming from its own checkpoint while its hf tokenizer's source is
 * gone (the start checkpoint of a chain moved away, resumed with
 * --allow-changed; a model.path or tokenizer.path that is gone stops the
 * stored recipe's validation first: resume --set points the run at it): the
 * tokenizer files and the generation config come from the checkpoint's
 * copies, byte for byte what the run started with (verified on resume), and
 * each later checkpoint takes over. */
static void loop_inputs_from_own(loop_ctx *c) {
  const recipe *r = c->r;
  c->in = *r; /* shallow: strings stay r's */
  if (!c->model_from || r->tokenizer.type != TOKENIZER_HF) return;
  struct stat st;
  const char *src = r->model.path ? r->model.path : r->model.checkpoint;
  int gone = (src && stat(src, &st) != 0) || (r->tokenizer.path && stat(r->tokenizer.path, &st) != 0);
  char own[4400];
  snprintf(own, sizeof own, "%s/tokenizer.json", c->model_from);
  if (!gone || stat(own, &st) != 0) return;
  snprintf(c->in_ckpt, sizeof c->in_ckpt, "%s", c->model_from);
  c->in.model.path = c->in.tokenizer.path = NULL;
  c->in.model.checkpoint = c->in_ckpt;
  loop_say(c, "the run's tokenizer files are gone from where it started; using its checkpoint's copies (%s)", c->in_ckpt);
}

/* Map the recipe onto the stage options and open every stage's resources. */
static int loop_open(loop_ctx *c, rl_err *e) {
  const recipe *r = c->r;
  loop_inputs_from_own(c);
  c->B = r->rollout.batch, c->G = r->rollout.samples_per_prompt, c->N = r->loop.iterations;
  loop_policy(r->precision.rollout, r->precision.emulate, r->precision.scale_fmt == SCALE_FMT_UE8M0, &c->ro_pol);
  loop_policy(r->precision.train, r->precision.emulate, r->precision.scale_fmt == SCALE_FMT_UE8M0, &c->tr_pol);
  /* exact log-probs: every GEMM of both sides through its pinned cuBLASLt algorithm (rows
   * independent of the batch), and the CUDA engine decodes with the forward's kernels */
  c->ro_pol.pin_algo = c->tr_pol.pin_algo = r->precision.exact_logprobs;
  if (recipe_tokenizer(&c->in, &c->tok, e) || recipe_prompts(r, &c->src, e)) return e->code;
  if (r->reward.script) {
    luahost_limits lim = recipe_lua_limits(r);
    if (!(c->lua = luahost_open(r->reward.script, &lim, e))) return e->code;
    if (luahost_set_reward_function(c->lua, r->reward.function, e)) return e->code;
    char batch[LUAHOST_MAX_FN + 8];
    snprintf(batch, sizeof batch, "%s_batch", r->reward.function);
    if (!luahost_has(c->lua, r->reward.function) && !luahost_has(c->lua, batch))
      return rl_errf(e, RL_EXIT_USAGE, "%s: the script defines no function %s(sample) (reward.function)",
                     r->reward.script, r->reward.function);
  } else if (r->train.algorithm != ALGO_SFT) {
    return rl_errf(e, RL_EXIT_USAGE, "reward.script is required for train.algorithm other than sft");
  }
  if (loop_model_build(r, c->tok, c->model_from, &c->m, &c->config_json, e)) return e->code;
  c->gpu = loop_gpu_wanted(r);
  if (c->gpu && loop_gpu_open(&c->geng, r, c->m, &c->ro_pol, e)) return e->code; /* m->cu on the train GPU */
  if (loop_sync_weights(c, NULL, e)) return e->code;
  if (!c->gpu && rollout_engine_new(c->m, &c->ro_pol, c->tok, NULL, &c->eng, e)) return e->code;
  rollout_opts_default(&c->ro);
  c->ro.seed = (uint64_t)r->seed;
  c->ro.temperature = r->rollout.temperature;
  c->ro.top_p = r->rollout.top_p;
  c->ro.top_k = r->rollout.top_k;
  c->ro.max_new_tokens = r->rollout.max_new_tokens;
  c->ro.max_prompt_tokens = r->rollout.max_prompt_tokens;
  c->ro.stop = r->rollout.stop.items;
  c->ro.n_stop = r->rollout.stop.n;
  /* rollout.stop_tokens and the model's generation_config.json eos ids (validate checked them) */
  const char *blame;
  if (recipe_end_ids(&c->in, c->tok, &c->stop_ids, &c->ro.n_stop_ids, NULL, &blame, e))
    return rl_err_prefix(e, "%s: ", blame ? blame : "rollout");
  c->ro.stop_ids = c->stop_ids;
  train_opts to;
  train_opts_default(&to);
  to.algorithm = (int)r->train.algorithm; /* same order as train_algo_kind */
  to.loss.agg = r->train.loss_agg == LOSS_AGG_TOKEN_MEAN ? RL_AGG_TOKEN_MEAN : RL_AGG_SEQ_MEAN_TOKEN_MEAN;
  to.loss.eps_low = r->train.clip_low;
  to.loss.eps_high = r->train.clip_high;
  to.loss.tis_mode = r->train.tis.mode == TIS_TRUNCATE ? RL_TIS_TRUNCATE : r->train.tis.mode == TIS_MASK ? RL_TIS_MASK : RL_TIS_OFF;
  to.loss.tis_clip = r->train.tis.clip;
  to.loss.tis_low = r->train.tis.low;
  to.loss.tis_high = r->train.tis.high;
  to.loss.kl_beta = r->train.kl_coef;
  to.loss.entropy_coef = r->train.entropy_coef;
  to.optim.lr = r->train.lr;
  to.optim.warmup_steps = r->train.warmup_steps;
  to.optim.beta1 = r->train.optimizer.beta1;
  to.optim.beta2 = r->train.optimizer.beta2;
  to.optim.eps = r->train.optimizer.eps;
  to.optim.weight_decay = r->train.optimizer.weight_decay;
  to.optim.grad_clip = r->train.grad_clip;
  to.optim.main_params = r->train.optimizer.main_params == MAIN_PARAMS_FP32 ? OPTIM_MAIN_FP32 : OPTIM_MAIN_BF16;
  to.policy = c->tr_pol;
  /* the trainer's log-probs use the sampling temperature (RL.md); SFT has no sampled
   * tokens: its loss is the plain cross-entropy (T = 1) */
  to.temperature = r->train.algorithm == ALGO_SFT ? 1.0 : r->rollout.temperature;
  to.r3 = r->train.algorithm == ALGO_SFT ? 0 : r->train.r3; /* sft: no rollout routing to replay */
  to.recompute = r->train.recompute;
  to.microbatch = r->train.microbatch;
  /* several optimizer steps per batch: the PPO ratio moves off 1 and clip_low/high act (RL.md) */
  to.ppo_epochs = (int)r->train.ppo_epochs, to.minibatches = (int)r->train.minibatches;
  to.device = c->gpu ? TRAIN_DEVICE_CUDA : TRAIN_DEVICE_CPU;
  if (c->gpu && c->geng.place.dp > 1) { /* data parallelism: rank 0 = the train GPU, current now */
    to.dp_ranks = c->geng.place.dp;
    memcpy(to.dp_gpus, c->geng.place.train_gpus, (size_t)to.dp_ranks * sizeof *to.dp_gpus);
    to.dp_bucket_bytes = (uint64_t)r->sync.bucket_mb << 20;
  }
  if (trainer_new(c->m, &to, &c->tr, e)) return e->code;
  return 0;
}

/* rl_on_oom's hook while a loop runs: how the run ended, in its log and on
 * stderr (the process exits with RL_EXIT_FAIL right after; the store keeps
 * every committed step). */
static void loop_oom(size_t n, void *arg) {
  loop_ctx *c = arg;
  char line[4400];
  snprintf(line, sizeof line,
           "stopped: out of memory at iteration %lld (%s), allocating %zu bytes; everything committed is kept: "
           "`rlrun resume %s` continues where there is the memory, or run a smaller model or batch",
           (long long)c->iter, c->stage ? c->stage : "start", n, c->dir);
  fprintf(c->log, "%s%s\n", c->progress ? "\r\033[K" : "", line);
  fflush(c->log);
  if (c->logfile) {
    fprintf(c->logfile, "%s\n", line);
    fflush(c->logfile);
  }
}

static void loop_close(loop_ctx *c) {
  rl_on_oom(NULL, NULL);
  if (c->tr) trainer_free(c->tr);
  if (c->eng) rollout_engine_free(c->eng);
  loop_gpu_free(&c->geng);
  if (c->m) model_free(c->m);
  if (c->lua) luahost_close(c->lua);
  if (c->src) prompts_close(c->src);
  if (c->tok) tokenizer_free(c->tok);
  free(c->stop_ids);
  free(c->config_json);
  if (c->logfile) fclose(c->logfile);
}

int loop_resume_find(const char *run_dir, store *s, const recipe *r, loop_resume *out, rl_err *e) {
  memset(out, 0, sizeof *out);
  if (ckpt_latest(run_dir, s, &out->info, &out->found, e)) return e->code;
  if (!out->found) return 0;
  const ckpt_info *info = &out->info;
  int64_t B = r->rollout.batch;
  if (info->data_cursor != info->iteration * B) {
    rl_errf(e, RL_EXIT_STATE, "%s: data cursor %lld does not match iteration %lld x batch %lld", info->dir,
            (long long)info->data_cursor, (long long)info->iteration, (long long)B);
    loop_resume_free(out);
    return e->code;
  }
  return 0;
}

void loop_resume_free(loop_resume *p) {
  if (!p) return;
  ckpt_info_free(&p->info);
  p->found = 0;
}

/* Restore weights and optimizer state from the checked resume point rp;
 * *start = the first iteration still to run. A failure writes nothing to the
 * store. On success, one transaction forgets the records of newer checkpoints
 * whose directories are gone (so they are written again, not verified) and
 * records the resume. */
static int loop_restore(loop_ctx *c, const loop_resume *rp, int64_t *start, rl_err *e) {
  *start = 1;
  int64_t from = rp->found ? rp->info.iteration : 0;
  if (rp->found) {
    char path[4400];
    snprintf(path, sizeof path, "%s/" CKPT_WEIGHTS, rp->info.dir);
    int rc = loop_model_load_weights(c->m, path, e);
    snprintf(path, sizeof path, "%s/" CKPT_OPTIM, rp->info.dir);
    if (!rc) rc = trainer_state_load(c->tr, path, e);
    if (!rc) rc = loop_sync_weights(c, NULL, e);
    if (rc) return rl_err_prefix(e, "restoring checkpoint %s (nothing was recorded): ", rp->info.dir);
  }
  int removed = 0, n_gone = 0;
  int64_t *gone = NULL;
  if (ckpt_clean_stale(c->dir, c->s, &removed, e)) return e->code;
  int rc = store_begin(c->s, e);
  if (!rc) rc = ckpt_forget_after(c->s, from, &gone, &n_gone, e);
  char list[512] = "";
  for (int i = 0, at = 0; i < n_gone && at < (int)sizeof list - 16; i++)
    at += snprintf(list + at, sizeof list - (size_t)at, "%sstep-%06lld", i ? " " : "", (long long)gone[i]);
  if (!rc && removed)
    rc = store_event(c->s, STORE_INFO, -1, NULL, e, "removed %d unfinished checkpoint director%s", removed,
                     removed == 1 ? "y" : "ies");
  char whence[64] = "the start";
  if (rp->found) snprintf(whence, sizeof whence, "checkpoint step-%06lld", (long long)from);
  if (!rc && n_gone)
    rc = store_event(c->s, STORE_WARN, from, CKPT_STAGE, e,
                     "checkpoint director%s %s removed: resumed from %s; %s written again when the run gets there",
                     n_gone == 1 ? "y" : "ies", list, whence, n_gone == 1 ? "it is" : "they are");
  if (!rc && rp->found)
    rc = store_event(c->s, STORE_INFO, from, CKPT_STAGE, e, "resumed from checkpoint step-%06lld", (long long)from);
  if (!rc) rc = store_commit(c->s, e);
  else store_rollback(c->s);
  free(gone);
  if (rc) return rc;
  *start = from + 1;
  if (n_gone)
    loop_say(c, "checkpoint%s %s removed from the run directory: resuming from %s, %s written again",
             n_gone == 1 ? "" : "s", list, whence, n_gone == 1 ? "it will be" : "they will be");
  if (rp->found)
    loop_say(c, "resuming after checkpoint step-%06lld (iteration %lld of %lld)", (long long)from, (long long)from,
             (long long)c->N);
  return 0;
}

/* Score the batch with the Lua reward; sets rewards and adds reward metrics. */
static int loop_reward(loop_ctx *c, rollout_batch *b, rl_metric_list *ml, rl_err *e) {
  int n = (int)b->n;
  if (!c->lua) { /* sft without a reward script */
    for (int i = 0; i < n; i++) b->s[i].reward = 0;
    rl_metric_set(ml, RL_M_REWARD_MEAN, 0);
    return 0;
  }
  luahost_sample *in = rl_xcalloc((size_t)n, sizeof *in);
  luahost_reward *out = rl_xcalloc((size_t)n, sizeof *out);
  for (int i = 0; i < n; i++) {
    rollout_sample *s = &b->s[i];
    in[i] = (luahost_sample){.prompt = s->prompt_text, .completion = s->completion_text,
                             .tokens = s->completion_ids, .n_tokens = (int)s->n_completion,
                             .finish_reason = finish_reason_name(s->finish), .index = i,
                             .group = s->prompt_index, .iteration = b->iteration, .extra_json = s->extra_json};
  }
  /* the script afresh for every iteration's rewards: what a global carries over stays inside
   * one reward stage, which a resume runs again whole — so a resumed run scores as an
   * uninterrupted one (a counter kept in a global gave other rewards after a resume) */
  int rc = luahost_reset(c->lua, e);
  if (rc) rl_err_prefix(e, "reward script %s, reloaded for iteration %lld: ", c->r->reward.script,
                        (long long)b->iteration);
  if (!rc) rc = luahost_reward_batch(c->lua, in, n, out, e);
  if (!rc) {
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++) b->s[i].reward = out[i].reward, sum += out[i].reward;
    double mean = sum / n;
    for (int i = 0; i < n; i++) sq += (out[i].reward - mean) * (out[i].reward - mean);
    rl_metric_set(ml, RL_M_REWARD_MEAN, mean);
    rl_metric_set(ml, RL_M_REWARD_STD, sqrt(sq / n));
    /* extra metrics: the mean over the samples that returned them */
    for (int i = 0; i < n; i++)
      for (int j = 0; j < out[i].n_metrics; j++) {
        char name[80];
        snprintf(name, sizeof name, "reward/%s", out[i].names[j]);
        int found = 0;
        rl_metric_get(ml, name, &found);
        if (found) continue;
        double s2 = 0;
        int cnt = 0;
        for (int a = 0; a < n; a++)
          for (int q = 0; q < out[a].n_metrics; q++)
            if (!strcmp(out[a].names[q], out[i].names[j])) s2 += out[a].values[q], cnt++;
        rl_metric_set(ml, name, s2 / cnt);
      }
  }
  free(in);
  free(out);
  return rc;
}

/* rollout → reward → commit of iteration k, or its committed samples read back. */
static int loop_rollout(loop_ctx *c, int64_t k, rollout_batch *b, rl_err *e) {
  int done = 0;
  if (loop_enter(c, k, "rollout", &done, e)) return loop_failed(c, k, "rollout", e);
  int L = 0, topk = 0;
  if (c->m->E > 0) L = c->m->L, topk = c->m->topk;
  if (done) {
    if (loop_batch_from_store(c->s, k, c->B, c->G, L, topk, b, e)) return loop_failed(c, k, "rollout", e);
    double v = NAN;
    int found = 0;
    store_metric_get(c->s, k, RL_M_REWARD_MEAN, &v, &found, e);
    if (found) c->last_reward = v;
    return 0;
  }
  prompt_item *items = NULL;
  int rc = prompts_batch(c->src, (uint64_t)c->r->seed, k, c->B, &items, e);
  if (!rc && c->gpu)
    rc = loop_gpu_generate(&c->geng, c->m, &c->ro_pol, c->tok, items, c->B, (int)c->G, k, &c->ro, b, e);
  else if (!rc)
    rc = rollout_generate(c->eng, items, c->B, (int)c->G, k, &c->ro, b, e);
  if (items) prompts_items_free(items, c->B);
  if (rc == RL_EXIT_USAGE && items) /* a prompt the tokenizer or the length refuses: where it came from */
    rl_err_prefix(e, "iteration %lld, the prompts of %s %s: ", (long long)k, c->r->data.task ? "data.task" : "data.prompts",
                  c->r->data.task ? c->r->data.task : c->r->data.prompts);
  if (rc) return loop_failed(c, k, "rollout", e);
  rl_metric_list ml = {0};
  if (loop_enter(c, k, "reward", &done, e) || loop_reward(c, b, &ml, e)) {
    rl_metric_list_free(&ml);
    rollout_batch_free(b);
    return loop_failed(c, k, "reward", e);
  }
  rl_metric_set(&ml, "rollout/tokens", (double)b->n_generated);
  rl_metric_set(&ml, "rollout/seconds", b->wall_s);
  c->last_reward = rl_metric_get(&ml, RL_M_REWARD_MEAN, NULL);
  store_sample *rows = loop_batch_to_rows(b, c->B);
  rc = fault_hit("loop.commit") ? rl_errf(e, RL_EXIT_FAIL, "iteration %lld, commit: failure injected by RLRUN_FAULT", (long long)k) : 0;
  if (!rc) rc = store_begin(c->s, e);
  if (!rc) rc = store_samples_put(c->s, rows, (int)b->n, e);
  if (!rc) rc = rl_metric_list_store(&ml, c->s, k, e);
  if (!rc) rc = store_step_mark(c->s, k, "rollout", STORE_STEP_DONE, NULL, NULL, e);
  if (!rc) rc = store_step_mark(c->s, k, "reward", STORE_STEP_DONE, NULL, NULL, e);
  if (!rc) rc = store_commit(c->s, e);
  free(rows);
  rl_metric_list_free(&ml);
  if (rc) {
    rollout_batch_free(b);
    return loop_failed(c, k, "reward", e);
  }
  return 0;
}

/* The first metric of l (wall-clock ones aside) whose value differs, bit for
 * bit, from what the store holds for iteration k (a missing one differs);
 * NULL when none does. *was / *now: its stored and new values. */
static const char *loop_metric_differs(store *s, int64_t k, const rl_metric_list *l, double *was, double *now,
                                       rl_err *e) {
  for (int i = 0; i < l->n; i++) {
    const char *name = l->v[i].name;
    if (!strcmp(name, TRAIN_M_SECONDS) || !strcmp(name, TRAIN_M_TOKENS_PER_S)) continue;
    int found = 0;
    *now = l->v[i].value;
    if (store_metric_get(s, k, name, was, &found, e)) return NULL;
    if (!found || (memcmp(was, now, sizeof *now) && !(isnan(*was) && isnan(*now)))) return name;
  }
  return NULL;
}

/* One update; metrics + done mark the first time. A re-run of a done update
 * (resume from an older checkpoint) must give the same metrics: when one
 * differs, they are replaced by the re-run's (they describe the weights the
 * run now has) and an event says why — the recipe changed (--allow-changed) or
 * the machine is not bit-reproducible. */
static int loop_train(loop_ctx *c, int64_t k, rollout_batch *b, rl_err *e) {
  int done = 0;
  if (loop_enter(c, k, "train", &done, e)) return loop_failed(c, k, "train", e);
  train_result res;
  memset(&res, 0, sizeof res);
  int rc = trainer_step(c->tr, b, &res, e);
  if (rc) return loop_failed(c, k, "train", e);
  c->last_loss = res.loss_mean;
  c->last_mismatch = rl_metric_get(&res.metrics, RL_M_KL_K3, NULL);
  if (!done) {
    rc = store_begin(c->s, e);
    if (!rc) rc = rl_metric_list_store(&res.metrics, c->s, k, e);
    if (!rc) rc = store_step_mark(c->s, k, "train", STORE_STEP_DONE, NULL, NULL, e);
    if (!rc) rc = store_commit(c->s, e);
  } else {
    double was = NAN, now = NAN;
    rl_err me = {0};
    const char *diff = loop_metric_differs(c->s, k, &res.metrics, &was, &now, &me);
    if (me.code) rc = rl_errf(e, me.code, "%s", me.msg);
    if (!rc && diff) {
      char name[64];
      snprintf(name, sizeof name, "%s", diff);
      rc = store_begin(c->s, e);
      if (!rc) rc = rl_metric_list_store(&res.metrics, c->s, k, e);
      if (!rc) rc = store_commit(c->s, e);
      if (!rc && c->changed)
        store_event(c->s, STORE_INFO, k, "train", e,
                    "iteration %lld re-run under the changed recipe (--allow-changed): %s %.17g (the first run "
                    "recorded %.17g); its train metrics are replaced", (long long)k, name, now, was);
      else if (!rc)
        store_event(c->s, STORE_WARN, k, "train", e,
                    "re-running the update of iteration %lld gave %s %.17g, the first run recorded %.17g: "
                    "the run is not bit-reproducible on this machine (its train metrics are replaced by the "
                    "re-run's)", (long long)k, name, now, was);
    }
  }
  train_result_free(&res);
  return rc ? loop_failed(c, k, "train", e) : 0;
}

/* The new weights into the rollout precision; sync metrics + done mark the first time. */
static int loop_sync(loop_ctx *c, int64_t k, rl_err *e) {
  int done = 0;
  sync_stats st;
  if (loop_enter(c, k, "sync", &done, e)) return loop_failed(c, k, "sync", e);
  if (loop_sync_weights(c, &st, e)) {
    rl_err_prefix(e, "iteration %lld, sync: ", (long long)k);
    return loop_failed(c, k, "sync", e);
  }
  if (done) return 0;
  rl_metric_list ml = {0};
  sync_stats_metrics(&st, &ml);
  int rc = store_begin(c->s, e);
  if (!rc) rc = rl_metric_list_store(&ml, c->s, k, e);
  if (!rc) rc = store_step_mark(c->s, k, "sync", STORE_STEP_DONE, NULL, NULL, e);
  if (!rc) rc = store_commit(c->s, e);
  rl_metric_list_free(&ml);
  return rc ? loop_failed(c, k, "sync", e) : 0;
}

/* Write the checkpoint of iteration k (when it is due), then apply retention. */
static int loop_checkpoint(loop_ctx *c, int64_t k, rl_err *e) {
  int64_t every = c->r->loop.checkpoint_interval;
  if (!(k == c->N || (every > 0 && k % every == 0))) return 0;
  int done = 0;
  if (loop_enter(c, k, CKPT_STAGE, &done, e)) return loop_failed(c, k, CKPT_STAGE, e);
  int nw = 0, no = 0;
  /* a GPU trainer copies its device masters and optimizer state to the host first */
  int rc = trainer_sync_host(c->tr, e);
  ckpt_tensor *w = loop_model_tensors(c->m, &nw), *opt = NULL;
  if (!rc) rc = loop_trainer_tensors(c->tr, &opt, &no, e);
  if (!rc) {
    /* the tokenizer goes with the weights: a run that starts from this
     * checkpoint (model.checkpoint) is refused another one at validation */
    json_t *x = json_pack("{s:I,s:I}", "optim_step", (json_int_t)trainer_step_count(c->tr), "run_iterations",
                          (json_int_t)c->N);
    if (c->r->tokenizer.type == TOKENIZER_CHARS && c->r->tokenizer.chars)
      json_object_set_new(x, "tokenizer", json_pack("{s:s,s:s}", "type", "chars", "chars", c->r->tokenizer.chars));
    /* hf: the tokenizer's files (and generation_config.json) are copied in,
     * and where the tokenizer.json came from and what it holds recorded */
    recipe_copies cp = {0};
    if (c->r->tokenizer.type == TOKENIZER_HF && !(rc = recipe_checkpoint_copies(&c->in, &cp, e))) {
      char hex[65];
      if (!(rc = sha256_file(cp.c[0].src, hex, NULL, e)))
        json_object_set_new(x, "tokenizer", json_pack("{s:s,s:s,s:s}", "type", "hf", "path", cp.c[0].src, "sha256", hex));
    }
    char *extra = json_dumps(x, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(x);
    ckpt_content cc = {.iteration = k, .data_cursor = k * c->B, .weights = w, .n_weights = nw, .optim = opt,
                       .n_optim = no, .config_json = c->config_json, .extra_json = extra, .copies = cp.c,
                       .n_copies = cp.n};
    if (!rc) rc = ckpt_write(c->dir, c->s, &cc, e);
    if (!rc && c->in_ckpt[0]) /* the copies come from the newest checkpoint (retention may prune the one before) */
      ckpt_file_path(c->dir, k, NULL, c->in_ckpt, sizeof c->in_ckpt);
    recipe_copies_free(&cp);
    free(extra);
  }
  free(w);
  free(opt);
  if (!rc && fault_hit("ckpt.before_retain"))
    rc = rl_errf(e, RL_EXIT_FAIL, "iteration %lld, retention: failure injected by RLRUN_FAULT", (long long)k);
  if (rc) return loop_failed(c, k, CKPT_STAGE, e);
  int removed = 0;
  if (ckpt_retain(c->dir, c->s, c->r->loop.keep_checkpoints, c->r->loop.keep_every, &removed, e)) return loop_failed(c, k, CKPT_STAGE, e);
  loop_say(c, "checkpoint step-%06lld written%s", (long long)k, removed ? " (older ones pruned)" : "");
  return 0;
}

/* logs/run.log opened for appending; logs/ made again when it was removed
 * (the run's log is kept whatever happened to the directory before). */
static FILE *loop_log_open(const char *run_dir) {
  char path[4200];
  snprintf(path, sizeof path, "%s/logs", run_dir);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) return NULL;
  snprintf(path, sizeof path, "%s/logs/run.log", run_dir);
  return fopen(path, "a");
}

void loop_log_append(const char *run_dir, const char *fmt, ...) {
  FILE *f = loop_log_open(run_dir);
  if (!f) return;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(f, fmt, ap);
  va_end(ap);
  fputc('\n', f);
  fclose(f);
}

int loop_is_complete(store *s, int64_t iterations) {
  int st = STORE_STEP_NONE;
  rl_err e;
  if (store_step_status(s, iterations, CKPT_STAGE, &st, &e)) return 0;
  return st == STORE_STEP_DONE;
}

/* A number of a log line with printf format fmt; a NaN is "nan" whatever its
 * sign bit (printf writes "-nan" for the NaN 0/0 makes). */
static const char *loop_num(char *out, size_t n, const char *fmt, double v) {
  if (isnan(v)) snprintf(out, n, "nan");
  else snprintf(out, n, fmt, v);
  return out;
}

/* One iteration's plain log line. */
static void loop_line(loop_ctx *c, int64_t k, double secs) {
  double el = rl_now() - c->t0, rate = c->done_iters / el;
  char eta[32], rw[32], ls[32], mm[32];
  loop_fmt_time((double)(c->N - k) / rate, eta, sizeof eta);
  loop_num(ls, sizeof ls, "%.4g", c->last_loss);
  if (c->r->train.algorithm == ALGO_SFT)
    loop_say(c, "iter %lld/%lld  sft loss %s  %.2f s/it  ETA %s", (long long)k, (long long)c->N, ls, secs, eta);
  else
    loop_say(c, "iter %lld/%lld  reward %s  loss %s  mismatch(kl_k3) %s  %.2f s/it  ETA %s", (long long)k,
             (long long)c->N, loop_num(rw, sizeof rw, "%.4f", c->last_reward), ls,
             loop_num(mm, sizeof mm, "%.3g", c->last_mismatch), secs, eta);
}

int loop_run(const char *run_dir, store *s, const recipe *r, const loop_opts *o, rl_err *e) {
  loop_ctx c;
  memset(&c, 0, sizeof c);
  c.dir = run_dir, c.s = s, c.r = r;
  c.log = o && o->log ? o->log : stderr;
  c.progress = o ? o->progress : 0;
  c.quiet = o ? o->quiet : 0;
  c.changed = o ? o->changed : 0;
  c.last_reward = c.last_mismatch = c.last_loss = NAN;
  c.stage = "convert", c.N = r->loop.iterations; /* the status line's [0/N] before the first iteration */
  /* the resume point first: a bad checkpoint stops the run before anything is written */
  loop_resume own;
  memset(&own, 0, sizeof own);
  const loop_resume *rp = o ? o->resume : NULL;
  if (!rp) {
    if (loop_resume_find(run_dir, s, r, &own, e)) return e->code;
    rp = &own;
  }
  c.model_from = rp->found ? rp->info.dir : NULL;
  c.logfile = loop_log_open(run_dir);
  rl_on_oom(loop_oom, &c);
  int done = 0, rc = loop_enter(&c, 0, "convert", &done, e);
  if (!rc) rc = loop_open(&c, e);
  if (!rc && !done) rc = store_step_mark(s, 0, "convert", STORE_STEP_DONE, NULL, NULL, e);
  if (rc) {
    loop_failed(&c, 0, "convert", e);
    loop_close(&c);
    loop_resume_free(&own);
    return rc;
  }
  int64_t start = 1;
  rc = loop_restore(&c, rp, &start, e);
  loop_resume_free(&own);
  if (rc) { /* nothing recorded: the store is as it was */
    loop_close(&c);
    return rc;
  }
  c.t0 = rl_now();
  c.first_iter = start;
  for (int64_t k = start; k <= c.N && !rc; k++) {
    double t = rl_now();
    rollout_batch b;
    memset(&b, 0, sizeof b);
    if (loop_stop_requested()) break;
    if (r->train.algorithm == ALGO_SFT) { /* no rollout or reward: the data stream is the batch */
      rc = loop_sft_batch(c.src, c.tok, (uint64_t)r->seed, k, c.B, c.m->cfg.max_position_embeddings, &b, e);
      if (rc) rc = loop_failed(&c, k, "train", e);
    } else {
      rc = loop_rollout(&c, k, &b, e);
    }
    if (rc) break;
    if (!loop_stop_requested()) rc = loop_train(&c, k, &b, e);
    rollout_batch_free(&b);
    if (rc || loop_stop_requested()) {
      /* a stop between train and checkpoint: what is committed stays; the weights are rebuilt on resume */
      break;
    }
    rc = loop_sync(&c, k, e);
    if (!rc) rc = loop_checkpoint(&c, k, e);
    if (rc) break;
    c.done_iters++;
    if (!c.quiet || c.logfile) loop_line(&c, k, rl_now() - t);
  }
  if (!rc && loop_stop_requested()) {
    rl_err ignore;
    store_event(s, STORE_WARN, c.iter, c.stage, &ignore, "interrupted by a signal; resume with `rlrun resume %s`", run_dir);
    rc = rl_errf(e, RL_EXIT_INTERRUPT, "interrupted at iteration %lld (%s); everything committed is kept: resume with `rlrun resume %s`",
                 (long long)c.iter, c.stage, run_dir);
  } else if (!rc) {
    rl_err ignore;
    store_event(s, STORE_INFO, c.N, NULL, &ignore, "run complete: %lld iteration%s", (long long)c.N,
                c.N == 1 ? "" : "s");
  }
  if (c.progress) fprintf(c.log, "\r\033[K");
  loop_close(&c);
  return rc;
}
