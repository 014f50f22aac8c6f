/* recipe_schema.c — the recipe schema: one table of every key (type, default,
 * range, valid values, where it lands in struct recipe). The loader checks a
 * merged tree against it, converts values, fills defaults; `rlrun plan` prints
 * from it; docs/recipes.md documents it (a test checks every key is there). */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <libgen.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runner/recipe_tree.h"

typedef enum ktype { KT_SECTION, KT_STR, KT_PATH, KT_INT, KT_FLOAT, KT_BOOL, KT_ENUM, KT_STRLIST, KT_INTLIST } ktype;

enum {
  KF_LO_OPEN = 1, /* the range excludes lo */
  KF_HI_OPEN = 2, /* the range excludes hi */
};

typedef struct rkey {
  const char *path;
  ktype type;
  size_t off;       /* into struct recipe; sections: their presence flag or NOFF */
  const char *def;  /* default as YAML text; NULL = unset (null) */
  double lo, hi;    /* numeric range (lists of ints: per item) */
  int flags;
  const char *const *enums;
  const char *doc;  /* one line for docs and --help */
} rkey;

#define NOFF ((size_t)-1)
#define INF HUGE_VAL
#define OFF(f) offsetof(recipe, f)

static const char *const e_device[] = {"auto", "cpu", "cuda", NULL};
static const char *const e_arch[] = {"qwen3", "qwen3_moe", NULL};
static const char *const e_tok[] = {"chars", "hf", NULL};
static const char *const e_scale[] = {"fp32", "ue8m0", NULL};
static const char *const e_algo[] = {"grpo", "dr_grpo", "rloo", "sft", NULL};
static const char *const e_agg[] = {"token_mean", "seq_mean_token_mean", NULL};
static const char *const e_tis[] = {"off", "truncate", "mask", NULL};
static const char *const e_optim[] = {"adamw", NULL};
static const char *const e_main[] = {"fp32", "bf16", NULL};
static const char *const e_sync[] = {"auto", "device", "nccl", NULL};

/* THE schema, in the order `rlrun plan` prints it. A section precedes its keys. */
static const rkey keys[] = {
    {"name", KT_STR, OFF(name), NULL, 0, 0, 0, NULL, "run name ([A-Za-z0-9._-], at most 64, starting with a letter or digit); default: the file name without .yaml"},
    {"description", KT_STR, OFF(description), NULL, 0, 0, 0, NULL, "free text shown by plan"},
    {"seed", KT_INT, OFF(seed), "0", 0, 9223372036854775807.0, 0, NULL, "key of the counter-based RNG (sampling, data order, init)"},
    {"device", KT_ENUM, OFF(device), "auto", 0, 0, 0, e_device, "auto: the GPU when there is one, else the CPU reference"},
    {"hardware", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "assertions about the machine"},
    {"hardware.require", KT_STRLIST, OFF(hardware.require), "[]", 0, 0, 0, NULL, "hardware names or classes the run may use; empty = any"},
    {"hardware.min_gpus", KT_INT, OFF(hardware.min_gpus), "0", 0, 1024, 0, NULL, "fewest GPUs the machine must have"},
    {"hardware.min_gpu_memory_gb", KT_FLOAT, OFF(hardware.min_gpu_memory_gb), "0", 0, 100000, 0, NULL, "least memory per GPU, GB"},
    {"model", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "exactly one of path, checkpoint, init"},
    {"model.path", KT_PATH, OFF(model.path), NULL, 0, 0, 0, NULL, "Hugging Face model directory (config.json, *.safetensors)"},
    {"model.checkpoint", KT_PATH, OFF(model.checkpoint), NULL, 0, 0, 0, NULL, "a previous run's checkpoint directory"},
    {"model.init", KT_SECTION, OFF(model.has_init), NULL, 0, 0, 0, NULL, "a fresh, randomly initialised small model"},
    {"model.init.arch", KT_ENUM, OFF(model.init.arch), "qwen3", 0, 0, 0, e_arch, "dense (qwen3) or mixture of experts (qwen3_moe)"},
    {"model.init.hidden", KT_INT, OFF(model.init.hidden), "64", 8, 65536, 0, NULL, "hidden size"},
    {"model.init.layers", KT_INT, OFF(model.init.layers), "2", 1, 1024, 0, NULL, "transformer layers"},
    {"model.init.heads", KT_INT, OFF(model.init.heads), "4", 1, 1024, 0, NULL, "attention heads"},
    {"model.init.kv_heads", KT_INT, OFF(model.init.kv_heads), "2", 1, 1024, 0, NULL, "key/value heads (divides heads)"},
    {"model.init.head_dim", KT_INT, OFF(model.init.head_dim), "16", 2, 1024, 0, NULL, "per-head dimension (even, for RoPE)"},
    {"model.init.ffn", KT_INT, OFF(model.init.ffn), "128", 1, 1048576, 0, NULL, "dense MLP intermediate size"},
    {"model.init.vocab", KT_INT, OFF(model.init.vocab), "0", 0, 1048576, 0, NULL, "vocabulary size; 0 = the tokenizer's"},
    {"model.init.experts", KT_INT, OFF(model.init.experts), "8", 2, 1024, 0, NULL, "experts per MoE layer (qwen3_moe only)"},
    {"model.init.top_k", KT_INT, OFF(model.init.top_k), "2", 1, 64, 0, NULL, "experts per token (qwen3_moe only; at most experts)"},
    {"model.init.moe_ffn", KT_INT, OFF(model.init.moe_ffn), "64", 1, 1048576, 0, NULL, "expert intermediate size (qwen3_moe only)"},
    {"model.init.norm_topk_prob", KT_BOOL, OFF(model.init.norm_topk_prob), "true", 0, 0, 0, NULL, "renormalise the top-k routing weights (qwen3_moe only)"},
    {"model.init.tie_embeddings", KT_BOOL, OFF(model.init.tie_embeddings), "true", 0, 0, 0, NULL, "lm_head shares the embedding matrix"},
    {"model.init.rope_theta", KT_FLOAT, OFF(model.init.rope_theta), "1000000", 0, 1e12, KF_LO_OPEN, NULL, "RoPE base"},
    {"model.init.rms_eps", KT_FLOAT, OFF(model.init.rms_eps), "1e-6", 0, 1, KF_LO_OPEN, NULL, "RMSNorm epsilon"},
    {"model.init.max_seq_len", KT_INT, OFF(model.init.max_seq_len), "512", 8, 1048576, 0, NULL, "longest sequence (prompt + completion)"},
    {"tokenizer", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "how text becomes tokens"},
    {"tokenizer.type", KT_ENUM, OFF(tokenizer.type), "hf", 0, 0, 0, e_tok, "chars: one token per character of tokenizer.chars; hf: a byte-level BPE tokenizer.json (GPT-2, Qwen, Llama 3)"},
    {"tokenizer.chars", KT_STR, OFF(tokenizer.chars), NULL, 0, 0, 0, NULL, "the character vocabulary (type chars), each character once"},
    {"tokenizer.bos", KT_STR, OFF(tokenizer.bos), NULL, 0, 0, 0, NULL, "the BOS token's text (type hf), put before every prompt; default: tokenizer_config.json's bos_token"},
    {"tokenizer.eos", KT_STR, OFF(tokenizer.eos), NULL, 0, 0, 0, NULL, "the EOS token's text (type hf), which ends a completion; default: tokenizer_config.json's eos_token"},
    {"tokenizer.path", KT_PATH, OFF(tokenizer.path), NULL, 0, 0, 0, NULL, "tokenizer.json (type hf); default: model.path's, else the one model.checkpoint was trained with"},
    {"precision", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "number formats; see `rlrun matrix`"},
    {"precision.rollout", KT_ENUM, OFF(precision.rollout), "bf16", 0, 0, 0, prec_names, "format of the rollout forward"},
    {"precision.train", KT_ENUM, OFF(precision.train), "bf16", 0, 0, 0, prec_names, "format of the training forward (backward is BF16)"},
    {"precision.keep_bf16", KT_STRLIST, OFF(precision.keep_bf16), "[]", 0, 0, 0, NULL, "extra tensor-name patterns (fnmatch) kept in BF16"},
    {"precision.bf16_first_layers", KT_INT, OFF(precision.bf16_first_layers), "0", 0, 1024, 0, NULL, "keep the first N layers in BF16"},
    {"precision.bf16_last_layers", KT_INT, OFF(precision.bf16_last_layers), "0", 0, 1024, 0, NULL, "keep the last N layers in BF16"},
    {"precision.emulate", KT_BOOL, OFF(precision.emulate), "false", 0, 0, 0, NULL, "allow exact emulation of MXFP8/NVFP4 where not native (Hopper)"},
    {"precision.experimental", KT_BOOL, OFF(precision.experimental), "false", 0, 0, 0, NULL, "allow experimental modes (nvfp4)"},
    {"precision.scale_fmt", KT_ENUM, OFF(precision.scale_fmt), "fp32", 0, 0, 0, e_scale, "fp8-block scales: fp32, or ue8m0 (powers of two)"},
    {"precision.exact_logprobs", KT_BOOL, OFF(precision.exact_logprobs), "false", 0, 0, 0, NULL, "CUDA: rollout log-probs bit-identical to the trainer's (pinned GEMMs; decode by the forward's kernels; slower rollout)"},
    {"data", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "prompts: exactly one of prompts, task"},
    {"data.prompts", KT_PATH, OFF(data.prompts), NULL, 0, 0, 0, NULL, "JSONL file, one prompt object per line"},
    {"data.task", KT_PATH, OFF(data.task), NULL, 0, 0, 0, NULL, "Lua script defining prompts(n, rng)"},
    {"data.prompt_key", KT_STR, OFF(data.prompt_key), "prompt", 0, 0, 0, NULL, "JSONL field with the prompt text"},
    {"data.answer_key", KT_STR, OFF(data.answer_key), "answer", 0, 0, 0, NULL, "JSONL field passed to the reward as sample.answer"},
    {"data.prompt_template", KT_STR, OFF(data.prompt_template), NULL, 0, 0, 0, NULL, "text each prompt is put into, {prompt} marking where (a chat template: \"<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n\"); default: the prompt as it is"},
    {"data.shuffle", KT_BOOL, OFF(data.shuffle), "true", 0, 0, 0, NULL, "shuffle prompts (by seed) each epoch"},
    {"rollout", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "sampling"},
    {"rollout.batch", KT_INT, OFF(rollout.batch), "8", 1, 65536, 0, NULL, "prompts per iteration"},
    {"rollout.samples_per_prompt", KT_INT, OFF(rollout.samples_per_prompt), "4", 1, 1024, 0, NULL, "completions per prompt (the group size G)"},
    {"rollout.max_new_tokens", KT_INT, OFF(rollout.max_new_tokens), "256", 1, 1048576, 0, NULL, "longest completion"},
    {"rollout.max_prompt_tokens", KT_INT, OFF(rollout.max_prompt_tokens), "256", 1, 1048576, 0, NULL, "longer prompts are refused"},
    {"rollout.temperature", KT_FLOAT, OFF(rollout.temperature), "1.0", 0, 10, KF_LO_OPEN, NULL, "sampling temperature T (log-probs use logits / T)"},
    {"rollout.top_p", KT_FLOAT, OFF(rollout.top_p), "1.0", 0, 1, KF_LO_OPEN, NULL, "nucleus sampling; 1 = off"},
    {"rollout.top_k", KT_INT, OFF(rollout.top_k), "0", 0, 1048576, 0, NULL, "top-k sampling; 0 = off"},
    {"rollout.stop", KT_STRLIST, OFF(rollout.stop), "[]", 0, 0, 0, NULL, "stop strings (besides end-of-sequence)"},
    {"rollout.stop_tokens", KT_STRLIST, OFF(rollout.stop_tokens), "[]", 0, 0, 0, NULL, "tokens (their exact text) that end a completion as the tokenizer's EOS does"},
    {"rollout.generation_config_eos", KT_BOOL, OFF(rollout.generation_config_eos), "true", 0, 0, 0, NULL, "the ids of eos_token_id in the model's generation_config.json (model.path's or model.checkpoint's) end a completion too, as in transformers' generate (tokenizer.type hf)"},
    {"reward", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "the Lua reward hook"},
    {"reward.script", KT_PATH, OFF(reward.script), NULL, 0, 0, 0, NULL, "Lua script (required)"},
    {"reward.function", KT_STR, OFF(reward.function), "reward", 0, 0, 0, NULL, "function the script defines: f(sample) -> number; f_batch(samples), when defined, scores a whole batch"},
    {"reward.limits", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "sandbox limits per call"},
    {"reward.limits.instructions", KT_INT, OFF(reward.limits.instructions), "100000000", 1000, 1e12, 0, NULL, "Lua VM instruction budget"},
    {"reward.limits.memory_mb", KT_INT, OFF(reward.limits.memory_mb), "64", 1, 4096, 0, NULL, "Lua heap cap, MiB"},
    {"reward.limits.timeout_ms", KT_INT, OFF(reward.limits.timeout_ms), "1000", 1, 600000, 0, NULL, "wall-clock deadline, ms"},
    {"train", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "the policy update"},
    {"train.algorithm", KT_ENUM, OFF(train.algorithm), "grpo", 0, 0, 0, e_algo, "advantage estimator (RL.md), or sft"},
    {"train.lr", KT_FLOAT, OFF(train.lr), "1e-6", 0, 1, KF_LO_OPEN, NULL, "learning rate (after warm-up)"},
    {"train.warmup_steps", KT_INT, OFF(train.warmup_steps), "0", 0, 1000000000, 0, NULL, "linear warm-up steps"},
    {"train.clip_low", KT_FLOAT, OFF(train.clip_low), "0.2", 0, 1, KF_HI_OPEN, NULL, "PPO clip epsilon below 1"},
    {"train.clip_high", KT_FLOAT, OFF(train.clip_high), "0.2", 0, 10, 0, NULL, "PPO clip epsilon above 1"},
    {"train.grad_clip", KT_FLOAT, OFF(train.grad_clip), "1.0", 0, 1e6, 0, NULL, "global gradient-norm clip; 0 = off"},
    {"train.kl_coef", KT_FLOAT, OFF(train.kl_coef), "0", 0, 100, 0, NULL, "KL-to-reference coefficient (k3); 0 = off"},
    {"train.entropy_coef", KT_FLOAT, OFF(train.entropy_coef), "0", 0, 100, 0, NULL, "entropy bonus; 0 = off"},
    {"train.loss_agg", KT_ENUM, OFF(train.loss_agg), "token_mean", 0, 0, 0, e_agg, "loss aggregation"},
    {"train.tis", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "truncated importance sampling against rollout/train drift"},
    {"train.tis.mode", KT_ENUM, OFF(train.tis.mode), "off", 0, 0, 0, e_tis, "truncate: w = min(ratio, clip) (TIS); mask: IcePop"},
    {"train.tis.clip", KT_FLOAT, OFF(train.tis.clip), "2.0", 1, 1e6, 0, NULL, "TIS cap C (mode truncate)"},
    {"train.tis.low", KT_FLOAT, OFF(train.tis.low), "0.5", 0, 1, KF_LO_OPEN, NULL, "IcePop lower bound (mode mask)"},
    {"train.tis.high", KT_FLOAT, OFF(train.tis.high), "2.0", 1, 1e6, 0, NULL, "IcePop upper bound (mode mask)"},
    {"train.r3", KT_BOOL, OFF(train.r3), "false", 0, 0, 0, NULL, "rollout routing replay (MoE only)"},
    {"train.recompute", KT_BOOL, OFF(train.recompute), "false", 0, 0, 0, NULL,
     "activation recomputation: keep each layer's input, re-run its forward in the backward (CUDA trainer; same results, less memory)"},
    {"train.microbatch", KT_INT, OFF(train.microbatch), "4", 1, 65536, 0, NULL, "sequences per forward/backward (by default at most an iteration's batch x samples_per_prompt)"},
    {"train.ppo_epochs", KT_INT, OFF(train.ppo_epochs), "1", 1, 64, 0, NULL,
     "passes over each batch (optimizer steps per iteration: at most ppo_epochs x minibatches)"},
    {"train.minibatches", KT_INT, OFF(train.minibatches), "1", 1, 1024, 0, NULL,
     "optimizer steps per pass: the batch's kept samples cut in this many contiguous parts (an empty part takes no step)"},
    {"train.optimizer", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "AdamW"},
    {"train.optimizer.name", KT_ENUM, OFF(train.optimizer.name), "adamw", 0, 0, 0, e_optim, "the optimizer"},
    {"train.optimizer.beta1", KT_FLOAT, OFF(train.optimizer.beta1), "0.9", 0, 1, KF_HI_OPEN, NULL, "first-moment decay"},
    {"train.optimizer.beta2", KT_FLOAT, OFF(train.optimizer.beta2), "0.999", 0, 1, KF_HI_OPEN, NULL, "second-moment decay"},
    {"train.optimizer.eps", KT_FLOAT, OFF(train.optimizer.eps), "1e-8", 0, 1, KF_LO_OPEN, NULL, "denominator epsilon"},
    {"train.optimizer.weight_decay", KT_FLOAT, OFF(train.optimizer.weight_decay), "0.01", 0, 10, 0, NULL, "decoupled weight decay"},
    {"train.optimizer.main_params", KT_ENUM, OFF(train.optimizer.main_params), "fp32", 0, 0, 0, e_main, "precision of the optimizer's parameter copy"},
    {"sync", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "trainer -> rollout weight sync"},
    {"sync.transport", KT_ENUM, OFF(sync.transport), "auto", 0, 0, 0, e_sync, "device (colocated), nccl (separate GPUs), auto: by gpus"},
    {"sync.bucket_mb", KT_INT, OFF(sync.bucket_mb), "512", 1, 65536, 0, NULL, "NCCL broadcast bucket, MiB"},
    {"sync.verify", KT_BOOL, OFF(sync.verify), "false", 0, 0, 0, NULL, "compare the rollout weights byte for byte with an independent re-quantization of the master after each sync"},
    {"loop", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "iterations and checkpoints"},
    {"loop.iterations", KT_INT, OFF(loop.iterations), "10", 1, 1000000000, 0, NULL, "rollout -> train -> sync iterations"},
    {"loop.checkpoint_interval", KT_INT, OFF(loop.checkpoint_interval), "10", 0, 1000000000, 0, NULL, "checkpoint every N iterations (and after the last); 0 = only after the last"},
    {"loop.keep_checkpoints", KT_INT, OFF(loop.keep_checkpoints), "3", 0, 1000000, 0, NULL, "newest checkpoints kept; 0 = all"},
    {"loop.keep_every", KT_INT, OFF(loop.keep_every), "0", 0, 1000000000, 0, NULL, "also keep every checkpoint whose iteration is a multiple of this; 0 = none"},
    {"gpus", KT_SECTION, NOFF, NULL, 0, 0, 0, NULL, "GPU indices; the train GPU in both = colocated"},
    {"gpus.rollout", KT_INTLIST, OFF(gpus.rollout), "[0]", 0, 1023, 0, NULL, "GPUs of the rollout (a share of the prompts each)"},
    {"gpus.train", KT_INTLIST, OFF(gpus.train), "[0]", 0, 1023, 0, NULL, "GPUs of the trainer (data parallel)"},
};
#define N_KEYS ((int)(sizeof keys / sizeof keys[0]))
_Static_assert(sizeof keys / sizeof keys[0] <= RECIPE_MAX_KEYS, "raise RECIPE_MAX_KEYS");

static const char *const type_names[] = {"section", "string", "path", "integer", "number", "bool", "enum", "list of strings", "list of integers"};

int recipe_schema_count(void) { return N_KEYS; }
const char *recipe_schema_path(int i) { return i >= 0 && i < N_KEYS ? keys[i].path : NULL; }
const char *recipe_schema_type(int i) { return i >= 0 && i < N_KEYS ? type_names[keys[i].type] : NULL; }
const char *recipe_schema_default(int i) { return i >= 0 && i < N_KEYS && keys[i].def ? keys[i].def : ""; }

int recipe_key_is_path(int i) { return i >= 0 && i < N_KEYS && keys[i].type == KT_PATH; }

const char *recipe_path_value(const recipe *r, int i) {
  if (!recipe_key_is_path(i)) return NULL;
  return *(char *const *)((const char *)r + keys[i].off);
}

int recipe_key_index(const char *path) {
  for (int i = 0; i < N_KEYS; i++)
    if (!strcmp(keys[i].path, path)) return i;
  return -1;
}

/* The last segment of a dotted path. */
static const char *leaf(const char *path) {
  const char *d = strrchr(path, '.');
  return d ? d + 1 : path;
}

/* 1 when key i sits directly in the section named prefix ("" = top level). */
static int in_section(int i, const char *prefix) {
  size_t n = strlen(prefix);
  const char *p = keys[i].path;
  if (n == 0) return strchr(p, '.') == NULL;
  return !strncmp(p, prefix, n) && p[n] == '.' && !strchr(p + n + 1, '.');
}

/* Lowercase, '-' → '_' (so "Max-New-Tokens" matches max_new_tokens). */
static void normalize(const char *s, char *out, size_t n) {
  size_t i = 0;
  for (; s[i] && i + 1 < n; i++) out[i] = s[i] == '-' ? '_' : (char)tolower((unsigned char)s[i]);
  out[i] = 0;
}

static void unknown_key(const char *prefix, const rentry *ent, rl_err *e) {
  if (!*prefix && !strcmp(ent->key, "base")) { /* a file's base: is read before the schema: this came from --set */
    recipe_errf(e, &ent->loc, "base: is read from a recipe file only, before any --set value applies; write "
                "`base: FILE` at the top of a recipe file that extends FILE");
    return;
  }
  const char *best = NULL;
  int best_d = 99;
  char nk[128], nc[128], shown[4 * RECIPE_CLIP + 8];
  normalize(ent->key, nk, sizeof nk);
  int klen = (int)strlen(ent->key);
  for (int i = 0; i < N_KEYS; i++) {
    if (!in_section(i, prefix)) continue;
    normalize(leaf(keys[i].path), nc, sizeof nc);
    int d = !strcmp(nk, nc) ? 0 : recipe_edit_distance(ent->key, leaf(keys[i].path));
    if (d < best_d) best_d = d, best = leaf(keys[i].path);
  }
  int limit = klen <= 3 ? 1 : 2;
  if (best && best_d <= limit) {
    recipe_errf(e, &ent->loc, "unknown key '%s' (did you mean '%s'?)", recipe_clip(ent->key, shown, sizeof shown), best);
    return;
  }
  for (int i = 0; i < N_KEYS; i++) /* the right key in the wrong section? */
    if (keys[i].type != KT_SECTION && !strcmp(leaf(keys[i].path), ent->key)) {
      recipe_errf(e, &ent->loc, "unknown key '%s'%s%s (did you mean '%s'?)", ent->key, *prefix ? " in " : "",
                  prefix, keys[i].path);
      return;
    }
  char list[1024];
  size_t k = 0;
  list[0] = 0;
  for (int i = 0; i < N_KEYS; i++)
    if (in_section(i, prefix))
      k += (size_t)snprintf(list + k, k < sizeof list ? sizeof list - k : 0, "%s%s", k ? ", " : "",
                            leaf(keys[i].path));
  recipe_errf(e, &ent->loc, "unknown key '%s'%s%s; valid keys: %s", recipe_clip(ent->key, shown, sizeof shown),
              *prefix ? " in " : "", prefix, list);
}

/* A short description of a node for "got ..." messages. */
static const char *describe(const rnode *n, char *buf, size_t sz) {
  if (n->kind == RN_MAP) return "a mapping";
  if (n->kind == RN_SEQ) return "a list";
  if (n->kind == RN_NULL) return "null";
  char clip[4 * RECIPE_CLIP + 8];
  snprintf(buf, sz, "%s'%s'", n->quoted ? "the quoted string " : "", recipe_clip(n->text, clip, sizeof clip));
  return buf;
}

/* Error about key k's value at node n: "LOC: path: message" (the path is left
 * out for a --set of that key, whose text already names it). */
static int verr(rl_err *e, const rkey *k, const rnode *n, const char *what) {
  if (recipe_loc_names_key(&n->loc, k->path)) return recipe_errf(e, &n->loc, "%s", what);
  return recipe_errf(e, &n->loc, "%s: %s", k->path, what);
}

static void fmt_num(double v, char *buf, size_t n) {
  if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, n, "%.0f", v);
  else snprintf(buf, n, "%g", v);
}

/* "[1, 65536]", "(0, 1]", ">= 0" */
static void range_text(const rkey *k, char *buf, size_t n) {
  char lo[64], hi[64];
  fmt_num(k->lo, lo, sizeof lo);
  fmt_num(k->hi, hi, sizeof hi);
  if (k->hi >= 1e18 && k->type == KT_INT) snprintf(buf, n, ">= %s", lo);
  else snprintf(buf, n, "%c%s, %s%c", k->flags & KF_LO_OPEN ? '(' : '[', lo, hi, k->flags & KF_HI_OPEN ? ')' : ']');
}

/* "must be in [a, b]", or "must be >= a" for an integer key without an upper bound. */
static void range_must(const rkey *k, char *buf, size_t n) {
  char rt[128];
  range_text(k, rt, sizeof rt);
  snprintf(buf, n, "must be %s%s", rt[0] == '>' ? "" : "in ", rt);
}

static int in_range(const rkey *k, double v) {
  if (v < k->lo || v > k->hi) return 0;
  if ((k->flags & KF_LO_OPEN) && v == k->lo) return 0;
  if ((k->flags & KF_HI_OPEN) && v == k->hi) return 0;
  return 1;
}

/* Parse a YAML integer (decimal, 0x hex, or an integral 1e6): 1 with *out set;
 * 2 for an integer beyond int64 (1e30, 99999999999999999999: out of any range);
 * 0 for anything else. A leading zero (010, +010) is refused: YAML 1.1 reads it
 * as octal and YAML 1.2 as decimal (strtoll's base 0 took "+010" for 8). */
static int parse_int(const char *s, int64_t *out) {
  char *end = NULL;
  if (!*s || isspace((unsigned char)*s)) return 0;
  const char *d = s + (*s == '+' || *s == '-');
  if (d[0] == '0' && d[1] >= '0' && d[1] <= '9') return 0;
  errno = 0;
  long long v = strtoll(s, &end, 0);
  if (end != s && *end == 0) {
    if (errno == ERANGE) return 2;
    *out = v;
    return 1;
  }
  errno = 0;
  double x = strtod(s, &end);
  if (end == s || *end || !strpbrk(s, "eE") || strpbrk(s, "xXnNiI")) return 0;
  if (errno == ERANGE && x == 0) return 0; /* 1e-400: not a whole number */
  if (!isfinite(x) || fabs(x) > 9.0e18) return 2;
  if (x != floor(x)) return 0;
  *out = (int64_t)x;
  return 1;
}

static int parse_float(const char *s, double *out) {
  char *end = NULL;
  if (!*s || isspace((unsigned char)*s)) return 0;
  if (strpbrk(s, "xXpP") || strpbrk(s, "nN") || strpbrk(s, "iI")) return 0; /* no hex floats, nan, inf */
  *out = strtod(s, &end);
  return *end == 0 && isfinite(*out);
}

/* Convert scalar n for key k. Returns 0 or RL_EXIT_USAGE (message added). */
static int convert_scalar(recipe *r, const rkey *k, const rnode *n, void *dst, rl_err *e) {
  char got[256], msg[1400];
  if (n->kind != RN_SCALAR) {
    snprintf(msg, sizeof msg, "expected %s%s, got %s", k->type == KT_INT ? "an " : "a ",
             k->type == KT_ENUM ? "value" : type_names[k->type], describe(n, got, sizeof got));
    if (k->type == KT_ENUM) { /* the values, as for a scalar that is none of them (nothing is "listed below") */
      char list[256];
      size_t L = 0;
      list[0] = 0;
      for (int i = 0; k->enums[i]; i++)
        L += (size_t)snprintf(list + L, L < sizeof list ? sizeof list - L : 0, "%s%s", i ? ", " : "", k->enums[i]);
      snprintf(msg, sizeof msg, "expected one of %s; got %s", list, describe(n, got, sizeof got));
    }
    return verr(e, k, n, msg);
  }
  const char *s = n->text;
  switch (k->type) {
  case KT_STR:
  case KT_PATH: {
    if (strlen(s) != n->len) return verr(e, k, n, "a NUL byte inside the string");
    if (!*s) return verr(e, k, n, "empty string (remove the key to use the default)");
    char *v;
    if (k->type == KT_PATH && s[0] != '/' && n->loc.line > 0) {
      char *fc = rl_xstrdup(n->loc.file);
      const char *d = dirname(fc);
      v = rl_xmalloc(strlen(d) + strlen(s) + 2);
      if (!strcmp(d, ".")) strcpy(v, s);
      else sprintf(v, "%s/%s", d, s);
      free(fc);
    } else if (k->type == KT_PATH && s[0] != '/' && n->loc.line == 0 && r->override_dir) {
      /* an override's relative path: relative to the directory it was given in */
      v = rl_xmalloc(strlen(r->override_dir) + strlen(s) + 2);
      sprintf(v, "%s/%s", r->override_dir, s);
    } else {
      v = rl_xstrdup(s);
    }
    free(*(char **)dst);
    *(char **)dst = v;
    return 0;
  }
  case KT_INT: {
    int64_t v = 0;
    char rt[160];
    int pi = n->quoted ? 0 : parse_int(s, &v);
    if (pi == 2) { /* an integer, but far out of any key's range */
      char clip[4 * RECIPE_CLIP + 8];
      range_must(k, rt, sizeof rt);
      snprintf(msg, sizeof msg, "%s is out of range: %s%s", recipe_clip(s, clip, sizeof clip), rt,
               rt[8] == '>' ? " and at most 9223372036854775807 (64 bits)" : ""); /* "must be >= 0" alone reads wrong */
      return verr(e, k, n, msg);
    }
    if (!pi) {
      double d;
      const char *hint = n->quoted ? " (remove the quotes)" : "";
      char whole[96];
      const char *digits = s + (s[0] == '+' || s[0] == '-');
      if (!n->quoted && digits[0] == '0' && strspn(digits, "0123456789") == strlen(digits)) {
        hint = " (a leading 0 is ambiguous, octal in YAML 1.1: write the number without it)";
      } else if (!n->quoted && parse_float(s, &d)) {
        if (d == floor(d) && fabs(d) < 1e15 && (d != 0 || !strpbrk(s, "eE")))
          snprintf(whole, sizeof whole, " (write %.0f: an integer has no decimal point)", d);
        else snprintf(whole, sizeof whole, " (a whole number)");
        hint = whole;
      } else if (!n->quoted && strchr(s, '_') && strspn(s, "0123456789_+-") == strlen(s)) {
        hint = " (write the digits without '_')";
      }
      snprintf(msg, sizeof msg, "expected an integer, got %s%s", describe(n, got, sizeof got), hint);
      return verr(e, k, n, msg);
    }
    if (!in_range(k, (double)v)) {
      range_must(k, rt, sizeof rt);
      snprintf(msg, sizeof msg, "%lld is out of range: %s", (long long)v, rt);
      return verr(e, k, n, msg);
    }
    *(int64_t *)dst = v;
    return 0;
  }
  case KT_FLOAT: {
    double v;
    char rt[160];
    if (n->quoted || !parse_float(s, &v)) {
      /* YAML's .inf / .nan (and inf, nan) are numbers to YAML, not to a recipe: say why */
      const char *t = s + (*s == '-' || *s == '+'), *u = t + (*t == '.');
      char *end;
      const double big = strtod(s, &end); /* 1e999: a number past a double's range */
      const int nonfinite = !n->quoted && (!strcasecmp(u, "inf") || !strcasecmp(u, "nan") ||
                                           !strcasecmp(u, "infinity") || (end != s && !*end && isinf(big)));
      snprintf(msg, sizeof msg, "expected a number, got %s%s", describe(n, got, sizeof got),
               n->quoted ? " (remove the quotes)" : nonfinite ? " (a recipe's numbers are finite)" : "");
      return verr(e, k, n, msg);
    }
    char clip[4 * RECIPE_CLIP + 8];
    if (!in_range(k, v)) {
      range_must(k, rt, sizeof rt);
      snprintf(msg, sizeof msg, "%s is out of range: %s", recipe_clip(s, clip, sizeof clip), rt);
      return verr(e, k, n, msg);
    }
    if ((k->flags & KF_LO_OPEN) && k->lo == 0 && v < FLT_MIN) {
      /* the run computes in FP32, where this is 0 (or subnormal): temperature 1e-300
       * passed here and stopped the first training step ("temperature must be > 0") */
      range_must(k, rt, sizeof rt);
      snprintf(msg, sizeof msg, "%s is too small: %s and at least 1.2e-38 (FP32's smallest normal number; "
               "the run computes in FP32, where a smaller value is 0)", recipe_clip(s, clip, sizeof clip), rt);
      return verr(e, k, n, msg);
    }
    *(double *)dst = v;
    return 0;
  }
  case KT_BOOL: {
    if (!n->quoted && (!strcmp(s, "true") || !strcmp(s, "false"))) {
      *(int *)dst = s[0] == 't';
      return 0;
    }
    static const char *const yes[] = {"yes", "Yes", "YES", "on", "On", "ON", "y", "Y", "True", "TRUE", NULL};
    static const char *const no[] = {"no", "No", "NO", "off", "Off", "OFF", "n", "N", "False", "FALSE", NULL};
    for (int i = 0; yes[i]; i++)
      if (!strcmp(s, yes[i]) || !strcmp(s, no[i])) {
        snprintf(msg, sizeof msg, "expected true or false, got '%s' (write %s: only lowercase true/false are booleans)",
                 s, !strcmp(s, yes[i]) ? "true" : "false");
        return verr(e, k, n, msg);
      }
    snprintf(msg, sizeof msg, "expected true or false, got %s", describe(n, got, sizeof got));
    return verr(e, k, n, msg);
  }
  case KT_ENUM: {
    char list[256];
    size_t L = 0;
    const char *sugg = NULL;
    int best = 99;
    for (int i = 0; k->enums[i]; i++) {
      if (!strcmp(s, k->enums[i]) && strlen(s) == n->len) {
        *(int *)dst = i;
        return 0;
      }
      L += (size_t)snprintf(list + L, L < sizeof list ? sizeof list - L : 0, "%s%s", i ? ", " : "", k->enums[i]);
      char a[64], b[64];
      normalize(s, a, sizeof a);
      normalize(k->enums[i], b, sizeof b);
      int d = !strcmp(a, b) ? 0 : recipe_edit_distance(s, k->enums[i]);
      if (!strncmp(k->enums[i], s, strlen(s)) && strlen(s) >= 3 && d > 1) d = 1;
      if (d < best) best = d, sugg = k->enums[i];
    }
    /* words people write for a value, which spelling distance alone would
     * map to the wrong one (gpu is one letter from cpu) */
    static const struct { const char *key, *word, *value; } synonyms[] = {
        {"device", "gpu", "cuda"}, {"device", "gpus", "cuda"}, {"device", "nvidia", "cuda"},
        {"device", "host", "cpu"}};
    char low[64];
    normalize(s, low, sizeof low);
    for (size_t j = 0; j < sizeof synonyms / sizeof *synonyms; j++)
      if (!strcmp(k->path, synonyms[j].key) && !strcmp(low, synonyms[j].word)) sugg = synonyms[j].value, best = 0;
    snprintf(msg, sizeof msg, "expected one of %s; got %s", list, describe(n, got, sizeof got));
    if (sugg && best <= 2) {
      size_t m = strlen(msg);
      snprintf(msg + m, sizeof msg - m, " (did you mean '%s'?)", sugg);
    }
    return verr(e, k, n, msg);
  }
  default:
    return verr(e, k, n, "internal: not a scalar key");
  }
  (void)r;
}

static int convert_list(recipe *r, const rkey *k, const rnode *n, rl_err *e) {
  char got[256], msg[1400];
  if (n->kind != RN_SEQ) {
    snprintf(msg, sizeof msg, "expected a %s, e.g. [%s], got %s", type_names[k->type],
             k->type == KT_INTLIST ? "0, 1" : "\"a\", \"b\"", describe(n, got, sizeof got));
    return verr(e, k, n, msg);
  }
  if (n->n > 1024) return verr(e, k, n, "more than 1024 items");
  void *dst = (char *)r + k->off;
  int rc = 0;
  if (k->type == KT_STRLIST) {
    recipe_strlist *l = dst;
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    l->items = rl_xcalloc((size_t)n->n, sizeof *l->items);
    l->n = 0;
    for (int i = 0; i < n->n; i++) {
      const rnode *it = n->items[i];
      if (it->kind != RN_SCALAR || !*it->text || strlen(it->text) != it->len) {
        snprintf(msg, sizeof msg, "item %d: expected a non-empty string, got %s", i + 1, describe(it, got, sizeof got));
        rc = verr(e, k, it, msg);
        continue;
      }
      l->items[l->n++] = rl_xstrdup(it->text);
    }
  } else {
    recipe_intlist *l = dst;
    free(l->items);
    l->items = rl_xcalloc((size_t)n->n, sizeof *l->items);
    l->n = 0;
    rkey item = *k;
    item.type = KT_INT;
    for (int i = 0; i < n->n; i++) {
      int64_t v = 0;
      if (convert_scalar(r, &item, n->items[i], &v, e)) {
        rc = RL_EXIT_USAGE;
        continue;
      }
      l->items[l->n++] = v;
    }
  }
  return rc;
}

/* Convert the value n of key i into r, recording where it was written. */
static int convert_key(recipe *r, int i, const rnode *n, rl_err *e) {
  const rkey *k = &keys[i];
  int rc = (k->type == KT_STRLIST || k->type == KT_INTLIST) ? convert_list(r, k, n, e)
                                                           : convert_scalar(r, k, n, (char *)r + k->off, e);
  return rc;
}

static int fill_map(recipe *r, rnode *m, const char *prefix, int depth, rl_err *e) {
  int rc = 0;
  for (int j = 0; j < m->n; j++) {
    rentry *ent = &m->ents[j];
    char path[512];
    snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", ent->key);
    int i = strlen(ent->key) < 100 ? recipe_key_index(path) : -1;
    if (i < 0) {
      unknown_key(prefix, ent, e);
      rc = RL_EXIT_USAGE;
      continue;
    }
    const rkey *k = &keys[i];
    rnode *v = ent->val;
    if (k->type == KT_SECTION) {
      /* `section: null` unsets it, like any other key: how a recipe drops a section it
       * inherits through base: (e.g. model.init when it names model.path instead). */
      if (v->kind == RN_NULL) continue;
      if (v->kind == RN_SCALAR || v->kind == RN_SEQ) {
        char got[256], msg[600];
        snprintf(msg, sizeof msg, "expected a section (keys indented below '%s:'), got %s", ent->key,
                 describe(v, got, sizeof got));
        rc = verr(e, k, v, msg);
        continue;
      }
      r->key_set[i] = 1;
      r->key_loc[i] = ent->loc;
      if (k->off != NOFF) *(int *)((char *)r + k->off) = 1;
      if (v->kind == RN_MAP && fill_map(r, v, path, depth + 1, e)) rc = RL_EXIT_USAGE;
      continue;
    }
    if (v->kind == RN_NULL) continue; /* null: unset, the default applies */
    if (convert_key(r, i, v, e)) {
      rc = RL_EXIT_USAGE;
      continue;
    }
    r->key_set[i] = 1;
    r->key_loc[i] = v->loc;
  }
  return rc;
}

int recipe_schema_fill(recipe *r, rnode *root, rl_err *e) {
  int rc = fill_map(r, root, "", 0, e);
  if (rc) return rc;
  for (int i = 0; i < N_KEYS; i++) { /* defaults for everything not written */
    const rkey *k = &keys[i];
    if (r->key_set[i] || !k->def || k->type == KT_SECTION) continue;
    recipe_loc dl = {"default", 0, 0};
    if (k->type == KT_STRLIST || k->type == KT_INTLIST) {
      rnode *d = NULL;
      if (rtree_parse(r, k->def, strlen(k->def), "default", 1, &d, e)) return RL_EXIT_USAGE;
      rc = convert_list(r, k, d, e);
      rtree_free(d);
    } else {
      rnode d = {.kind = RN_SCALAR, .loc = dl, .text = (char *)k->def, .len = strlen(k->def)};
      rc = convert_key(r, i, &d, e);
    }
    if (rc) return rc;
  }
  if (!r->name) { /* the file name without its extension */
    char *fc = rl_xstrdup(r->file);
    const char *b = basename(fc);
    size_t n = strlen(b);
    if (n > 5 && !strcmp(b + n - 5, ".yaml")) n -= 5;
    else if (n > 4 && !strcmp(b + n - 4, ".yml")) n -= 4;
    r->name = rl_xmalloc(n + 1);
    memcpy(r->name, b, n);
    r->name[n] = 0;
    free(fc);
  }
  return 0;
}

void recipe_schema_print_reference(FILE *f) {
  fprintf(f, "| key | type | default | range / values | meaning |\n|---|---|---|---|---|\n");
  for (int i = 0; i < N_KEYS; i++) {
    const rkey *k = &keys[i];
    char range[256] = "";
    if (k->type == KT_INT || k->type == KT_FLOAT || k->type == KT_INTLIST) range_text(k, range, sizeof range);
    if (k->type == KT_ENUM) {
      size_t L = 0;
      for (int j = 0; k->enums[j]; j++)
        L += (size_t)snprintf(range + L, L < sizeof range ? sizeof range - L : 0, "%s%s", j ? ", " : "", k->enums[j]);
    }
    fprintf(f, "| `%s` | %s | %s%s%s | %s | %s |\n", k->path, type_names[k->type], k->def ? "`" : "",
            k->def ? k->def : (k->type == KT_SECTION ? "" : "unset"), k->def ? "`" : "", range, k->doc);
  }
}

void recipe_free(recipe *r) {
  if (!r) return;
  for (int i = 0; i < N_KEYS; i++) {
    const rkey *k = &keys[i];
    if (k->type == KT_SECTION) continue; /* owns nothing; its off may be NOFF, not an offset */
    void *p = (char *)r + k->off;
    if (k->type == KT_STR || k->type == KT_PATH) free(*(char **)p);
    if (k->type == KT_STRLIST) {
      recipe_strlist *l = p;
      for (int j = 0; j < l->n; j++) free(l->items[j]);
      free(l->items);
    }
    if (k->type == KT_INTLIST) free(((recipe_intlist *)p)->items);
  }
  for (int i = 0; i < r->n_strs; i++) free(r->strs[i]);
  free(r->strs);
  free(r->file);
  free(r->override_dir);
  free(r->warnings);
  memset(r, 0, sizeof *r);
}

/* A string as a YAML double-quoted scalar that reads back to the same bytes.
 * Escaped besides C0 and DEL: the C1 controls (U+0080..U+009F: a YAML reader
 * refuses them raw), NEL, LS and PS (line breaks inside a quoted scalar, which
 * a reader folds: a stop string "a\x85b" came back from the resolved recipe as
 * "a b"), and U+FEFF, U+FFFE, U+FFFF. The string is UTF-8 (libyaml's output). */
static void print_quoted(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", f);
    else if (*p == '\t') fputs("\\t", f);
    else if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\x%02x", *p);
    else if (p[0] == 0xC2 && p[1] >= 0x80 && p[1] <= 0x9F) fprintf(f, "\\x%02x", p[1]), p++;
    else if (p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9)) fprintf(f, "\\u%04x", 0x2000 + (p[2] - 0x80)), p += 2;
    else if (p[0] == 0xEF && ((p[1] == 0xBB && p[2] == 0xBF) || (p[1] == 0xBF && (p[2] == 0xBE || p[2] == 0xBF))))
      fprintf(f, "\\u%04x", 0xF000 + ((p[1] & 0x3Fu) << 6) + (p[2] & 0x3Fu)), p += 2;
    else fputc(*p, f);
  }
  fputc('"', f);
}

/* The shortest %g form that reads back to the same double (a YAML float: ".0" on an integer). */
static void print_double(FILE *f, double v) {
  char buf[64];
  rl_fmt_double(v, buf, sizeof buf);
  if (!strpbrk(buf, ".eE")) strcat(buf, ".0");
  fputs(buf, f);
}

/* Why key i does not apply to r (printed as a comment), or NULL. */
static const char *not_applying(const recipe *r, int i) {
  const char *p = keys[i].path;
  if (!strncmp(p, "model.init.", 11) && r->model.init.arch != ARCH_QWEN3_MOE &&
      (!strcmp(p + 11, "experts") || !strcmp(p + 11, "top_k") || !strcmp(p + 11, "moe_ffn") ||
       !strcmp(p + 11, "norm_topk_prob")))
    return "qwen3_moe only";
  if (!strcmp(p, "train.tis.clip") && r->train.tis.mode != TIS_TRUNCATE) return "tis.mode truncate only";
  if ((!strcmp(p, "train.tis.low") || !strcmp(p, "train.tis.high")) && r->train.tis.mode != TIS_MASK)
    return "tis.mode mask only";
  return NULL;
}

void recipe_print(FILE *f, const recipe *r) {
  for (int i = 0; i < N_KEYS; i++) {
    const rkey *k = &keys[i];
    int depth = 0;
    for (const char *p = k->path; *p; p++) depth += *p == '.';
    if (!r->model.has_init && !strncmp(k->path, "model.init.", 11)) continue;
    const char *na = not_applying(r, i);
    fprintf(f, "%*s%s%s:", 2 * depth, "", na ? "# " : "", leaf(k->path));
    /* a section's off is its presence flag or NOFF: form the pointer only for a real offset */
    const void *p = k->off != NOFF ? (const char *)r + k->off : NULL;
    switch (k->type) {
    case KT_SECTION:
      if (p && !*(const int *)p) fputs(" null", f);
      break;
    case KT_STR:
    case KT_PATH:
      fputc(' ', f);
      if (*(char *const *)p) print_quoted(f, *(char *const *)p);
      else fputs("null", f);
      break;
    case KT_INT: fprintf(f, " %lld", (long long)*(const int64_t *)p); break;
    case KT_FLOAT: fputc(' ', f); print_double(f, *(const double *)p); break;
    case KT_BOOL: fputs(*(const int *)p ? " true" : " false", f); break;
    case KT_ENUM: fprintf(f, " %s", k->enums[*(const int *)p]); break;
    case KT_STRLIST: {
      const recipe_strlist *l = p;
      fputs(" [", f);
      for (int j = 0; j < l->n; j++) {
        if (j) fputs(", ", f);
        print_quoted(f, l->items[j]);
      }
      fputc(']', f);
      break;
    }
    case KT_INTLIST: {
      const recipe_intlist *l = p;
      fputs(" [", f);
      for (int j = 0; j < l->n; j++) fprintf(f, "%s%lld", j ? ", " : "", (long long)l->items[j]);
      fputc(']', f);
      break;
    }
    }
    if (na) fprintf(f, "  (%s)", na);
    else if (k->type != KT_SECTION && !r->key_set[i]) fputs("  # default", f);
    fputc('\n', f);
  }
}
