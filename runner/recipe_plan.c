/* recipe_plan.c — `rlrun plan`'s view of a resolved recipe: the format of each
 * layer class in rollout and training, and the ordered stages the run will
 * execute (convert, then rollout → train → sync per iteration, checkpoints). */
#include <stdio.h>
#include <string.h>

#include "runner/recipe.h"

/* A format name, marked when this target only emulates it. */
static const char *fmt_label(prec_format f, hw_class cls, int emulated, char *buf, size_t n) {
  int emu = emulated && cls >= 0 && cls < HW_CLASS_COUNT && format_support[f][cls] == SUP_EMULATED;
  snprintf(buf, n, "%s%s", prec_names[f], emu ? " (emulated)" : "");
  return buf;
}

static void print_layers(FILE *f, const recipe *r, hw_class cls, int emulated) {
  prec_format ro = r->precision.rollout, tr = r->precision.train;
  /* nvfp4 covers MoE experts only; other linear layers stay BF16 */
  prec_format ro_lin = ro == PREC_NVFP4 ? PREC_BF16 : ro, tr_lin = tr == PREC_NVFP4 ? PREC_BF16 : tr;
  struct { const char *name; prec_format ro, tr; int show; } rows[] = {
      {"embeddings", PREC_BF16, PREC_BF16, 1},
      {"attention q/k/v/o", ro_lin, tr_lin, 1},
      {"dense mlp", ro_lin, tr_lin, r->model.is_moe != 1},
      {"moe experts", ro, tr, r->model.is_moe != 0},
      {"moe router", PREC_BF16, PREC_BF16, r->model.is_moe != 0},
      {"norms", PREC_BF16, PREC_BF16, 1},
      {"lm_head", PREC_BF16, PREC_BF16, 1},
  };
  char a[64], b[64];
  fprintf(f, "%-20s %-22s %-22s %s\n", "layer class", "rollout", "train forward", "train backward");
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    if (!rows[i].show) continue;
    fprintf(f, "%-20s %-22s %-22s bf16\n", rows[i].name, fmt_label(rows[i].ro, cls, emulated, a, sizeof a),
            fmt_label(rows[i].tr, cls, emulated, b, sizeof b));
  }
  if (r->model.is_moe < 0) fprintf(f, "(dense or MoE: read from the checkpoint when the run starts)\n");
  if (r->model.has_init && r->model.init.tie_embeddings) fprintf(f, "lm_head is tied to the embeddings\n");
  int64_t first = r->precision.bf16_first_layers, last = r->precision.bf16_last_layers, L = r->model.layers;
  if (first) fprintf(f, "layers 0..%lld stay bf16 (precision.bf16_first_layers)\n", (long long)first - 1);
  if (last && L) fprintf(f, "layers %lld..%lld stay bf16 (precision.bf16_last_layers)\n", (long long)(L - last), (long long)L - 1);
  else if (last) fprintf(f, "the last %lld layers stay bf16 (precision.bf16_last_layers)\n", (long long)last);
  for (int i = 0; i < r->precision.keep_bf16.n; i++)
    fprintf(f, "tensors matching '%s' stay bf16 (precision.keep_bf16)\n", r->precision.keep_bf16.items[i]);
  fprintf(f, "master weights bf16, optimizer state fp32, main params %s\n",
          r->train.optimizer.main_params == MAIN_PARAMS_FP32 ? "fp32" : "bf16");
  if (r->precision.exact_logprobs)
    fprintf(f, "exact log-probs: %s\n",
            cls == HW_CPU ? "the CPU's already are (no effect)"
                          : "every GEMM pinned, decode by the forward's kernels (precision.exact_logprobs)");
}

static const char *const algo_names[] = {"grpo", "dr_grpo", "rloo", "sft"};

/* The rollout is the trainer's GPU alone (gpus.rollout = [gpus.train[0]]):
 * nothing to send over NCCL. */
static int is_colocated(const recipe *r) {
  return r->gpus.rollout.n == 1 && r->gpus.train.n >= 1 && r->gpus.rollout.items[0] == r->gpus.train.items[0];
}

static int is_checkpoint(const recipe *r, int64_t it) {
  int64_t k = r->loop.checkpoint_interval;
  return it == r->loop.iterations || (k > 0 && it % k == 0);
}

/* The stages of iteration it, numbered from *step. */
static void print_iteration(FILE *f, const recipe *r, int64_t it, int64_t *step, hw_class cls) {
  const char *tis = r->train.tis.mode == TIS_OFF ? "no TIS" : r->train.tis.mode == TIS_TRUNCATE ? "TIS truncate" : "IcePop mask";
  /* sft has no rollout and no reward stage (the loop records train and sync
   * only), and one sequence per example whatever samples_per_prompt says */
  int sft = r->train.algorithm == ALGO_SFT;
  int64_t seqs = sft ? r->rollout.batch : r->rollout.batch * r->rollout.samples_per_prompt;
  const char *script = r->reward.script ? strrchr(r->reward.script, '/') : NULL;
  script = script ? script + 1 : r->reward.script ? r->reward.script : "(none)";
  if (!sft) {
    fprintf(f, "%5lld  rollout#%-6lld %lld prompts x %lld samples, <= %lld new tokens, %s\n", (long long)(*step)++,
            (long long)it, (long long)r->rollout.batch, (long long)r->rollout.samples_per_prompt,
            (long long)r->rollout.max_new_tokens, prec_names[r->precision.rollout]);
    if (cls != HW_CPU && r->gpus.rollout.n > 1)
      fprintf(f, "       %-14s split over %d GPUs, a contiguous share of the prompts each (one engine's samples)\n", "",
              r->gpus.rollout.n);
    fprintf(f, "%5lld  reward#%-7lld %s:%s() on every sample (Lua sandbox)\n", (long long)(*step)++, (long long)it,
            script, r->reward.function);
  }
  char steps[96] = "";
  if (r->train.ppo_epochs * r->train.minibatches > 1)
    snprintf(steps, sizeof steps, ", %lld optimizer steps (%lld epochs x %lld minibatches)",
             (long long)(r->train.ppo_epochs * r->train.minibatches), (long long)r->train.ppo_epochs,
             (long long)r->train.minibatches);
  char dp[96] = "";
  if (cls != HW_CPU && r->gpus.train.n > 1)
    snprintf(dp, sizeof dp, ", data-parallel on %d GPUs (fixed-order gradient all-reduce)", r->gpus.train.n);
  const char *rcmp = !r->train.recompute ? ""
                     : cls != HW_CPU  ? ", activation recomputation"
                                      : ", activation recomputation (ignored: CPU trainer)";
  fprintf(f, "%5lld  train#%-8lld %s on %lld sequences in microbatches of %lld, forward %s, backward bf16, %s%s%s%s%s\n",
          (long long)(*step)++, (long long)it, algo_names[r->train.algorithm], (long long)seqs,
          (long long)r->train.microbatch, prec_names[r->precision.train], tis, r->train.r3 ? ", R3" : "", rcmp, steps,
          dp);
  int coloc = is_colocated(r);
  int nccl = cls != HW_CPU && (r->sync.transport == SYNC_NCCL || (r->sync.transport == SYNC_AUTO && !coloc));
  fprintf(f, "%5lld  sync#%-9lld re-quantize bf16 master -> %s rollout weights, %s%s\n", (long long)(*step)++,
          (long long)it, prec_names[r->precision.rollout],
          nccl ? (r->gpus.rollout.n > 1 ? "NCCL broadcast in buckets to every rollout GPU apart"
                                        : "NCCL broadcast in buckets")
               : (cls == HW_CPU ? "host copy" : "device copy (colocated)"),
          r->sync.verify ? ", verified" : "");
  if (is_checkpoint(r, it))
    fprintf(f, "%5lld  checkpoint#%-3lld master + optimizer state -> checkpoints/step-%06lld/%s\n",
            (long long)(*step)++, (long long)it, (long long)it,
            r->loop.keep_checkpoints ? "" : " (all kept)");
}

void recipe_print_plan(FILE *f, const recipe *r, const hw_target *t, int emulated) {
  hw_class cls = recipe_run_class(r, t);
  fprintf(f, "== precision by layer class ==\n");
  print_layers(f, r, cls, emulated);
  fprintf(f, "\n== stages (%lld iteration%s) ==\n", (long long)r->loop.iterations, r->loop.iterations == 1 ? "" : "s");
  int64_t step = 1;
  const char *src = r->model.path ? "load the Hugging Face model" : r->model.checkpoint ? "load the checkpoint" : "initialise a fresh model (seed)";
  char deq[96] = ""; /* a quantized checkpoint's weights become the BF16 masters */
  if (!r->model.has_init && r->model.quant_method[0])
    snprintf(deq, sizeof deq, " (%s weights, dequantized)", r->model.quant_method);
  fprintf(f, "%5lld  convert        %s%s, bf16 master -> %s rollout weights\n", (long long)step++, src, deq,
          prec_names[r->precision.rollout]);
  int64_t n = r->loop.iterations;
  int sft = r->train.algorithm == ALGO_SFT, per = sft ? 2 : 4; /* steps of an iteration, as print_iteration */
  for (int64_t it = 1; it <= n; it++) {
    if (n > 4 && it == 3) { /* elide the middle, keep the numbering right */
      int64_t ck = 0;
      for (int64_t j = 3; j < n; j++) ck += is_checkpoint(r, j);
      fprintf(f, "   ...  iterations 3..%lld: the same %s%s (%lld steps)\n", (long long)(n - 1),
              sft ? "train, sync" : "rollout, reward, train, sync", ck ? ", with checkpoints" : "",
              (long long)(per * (n - 3) + ck));
      step += per * (n - 3) + ck;
      it = n - 1;
      continue;
    }
    print_iteration(f, r, it, &step, cls);
  }
  if (r->loop.keep_checkpoints)
    fprintf(f, "%lld steps; keep the newest %lld checkpoint%s\n", (long long)(step - 1),
            (long long)r->loop.keep_checkpoints, r->loop.keep_checkpoints == 1 ? "" : "s");
  else
    fprintf(f, "%lld steps; keep every checkpoint\n", (long long)(step - 1));
}
