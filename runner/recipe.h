/* recipe.h — the resolved recipe: what every later stage reads.
 *
 *   recipe r;
 *   rl_err e;
 *   if (recipe_load("recipes/demo-cpu.yaml", sets, n_sets, &r, &e)) { print e.msg; exit e.code; }
 *   ... r.train.lr, r.precision.rollout ...
 *   recipe_free(&r);
 *
 * recipe_load reads the YAML file (and its `base:` chain), applies `--set`
 * overrides, checks every key against the schema (runner/recipe_schema.c),
 * fills in every default, and checks the cross-field rules and the precision
 * matrix (runner/recipe_check.c). Errors are "FILE:LINE:COL: message" (1-based)
 * or "--set K=V: message", exit code RL_EXIT_USAGE. Hardware is checked
 * separately (recipe_check_hardware), so one recipe can be validated for
 * several targets. The reference of every key is docs/recipes.md. */
#ifndef RLRUN_RECIPE_H
#define RLRUN_RECIPE_H

#include <stdint.h>
#include <stdio.h>

#include "kernels/common.h"
#include "runner/matrix.h"

typedef enum recipe_device { DEVICE_AUTO, DEVICE_CPU, DEVICE_CUDA } recipe_device;
typedef enum model_arch { ARCH_QWEN3, ARCH_QWEN3_MOE } model_arch;
typedef enum tokenizer_type { TOKENIZER_CHARS, TOKENIZER_HF } tokenizer_type;
typedef enum scale_fmt { SCALE_FMT_FP32, SCALE_FMT_UE8M0 } scale_fmt;
typedef enum train_algo { ALGO_GRPO, ALGO_DR_GRPO, ALGO_RLOO, ALGO_SFT } train_algo;
typedef enum loss_agg { LOSS_AGG_TOKEN_MEAN, LOSS_AGG_SEQ_MEAN_TOKEN_MEAN } loss_agg;
typedef enum tis_mode { TIS_OFF, TIS_TRUNCATE, TIS_MASK } tis_mode;
typedef enum optim_name { OPTIM_ADAMW } optim_name;
typedef enum main_params { MAIN_PARAMS_FP32, MAIN_PARAMS_BF16 } main_params;
typedef enum sync_transport { SYNC_AUTO, SYNC_DEVICE, SYNC_NCCL } sync_transport;

typedef struct recipe_strlist { char **items; int n; } recipe_strlist;
typedef struct recipe_intlist { int64_t *items; int n; } recipe_intlist;

/* Where a value was written: file and 1-based line:col, or (line == 0) the
 * `--set K=V` override named in file. */
typedef struct recipe_loc {
  const char *file;
  int line, col;
} recipe_loc;

/* Upper bound on the schema's key count (recipe_schema.c asserts it). */
#define RECIPE_MAX_KEYS 128

typedef struct recipe {
  char *name;           /* run name; default: the recipe file's name without .yaml */
  char *description;
  int64_t seed;
  recipe_device device;

  struct {
    recipe_strlist require; /* hardware names or classes; empty = any */
    int64_t min_gpus;
    double min_gpu_memory_gb;
  } hardware;

  struct {
    char *path;       /* HF model directory (resolved path) or NULL */
    char *checkpoint; /* a previous run's checkpoint directory or NULL */
    int has_init;     /* 1 when model.init was given: a fresh model */
    struct {
      model_arch arch;
      int64_t hidden, layers, heads, kv_heads, head_dim, ffn, vocab;
      int64_t experts, top_k, moe_ffn, max_seq_len;
      int tie_embeddings, norm_topk_prob;
      double rope_theta, rms_eps;
    } init;
    int is_moe;       /* derived: 1 MoE, 0 dense, -1 unknown (a checkpoint without config.json) */
    int64_t layers;   /* derived: layer count when known, else 0 */
    int64_t positions, vocab; /* derived from model.path's / the checkpoint's config.json: its
                                 max_position_embeddings and vocab_size, else 0 */
    char quant_method[32];    /* derived: its quantization_config's quant_method ("fp8", ...), else "" */
  } model;

  struct {
    tokenizer_type type;
    char *chars; /* the character vocabulary (type chars) */
    char *path;  /* tokenizer.json (type hf); NULL = the model directory's */
    char *bos, *eos; /* type hf: the BOS / EOS token's text; NULL = tokenizer_config.json's */
  } tokenizer;

  struct {
    prec_format rollout, train;
    recipe_strlist keep_bf16; /* tensor-name patterns (fnmatch) kept in BF16 */
    int64_t bf16_first_layers, bf16_last_layers;
    int emulate, experimental;
    scale_fmt scale_fmt;
    int exact_logprobs; /* CUDA: rollout log-probs = the trainer's, bit for bit (pinned GEMMs, the forward's decode) */
  } precision;

  struct {
    char *prompts;    /* JSONL file (resolved path) or NULL */
    char *task;       /* Lua task script or NULL */
    char *prompt_key; /* JSONL field holding the prompt */
    char *answer_key; /* JSONL field handed to the reward as sample.answer */
    char *prompt_template; /* text around each prompt, "{prompt}" where it goes; NULL = the prompt as is */
    int shuffle;
  } data;

  struct {
    int64_t batch, samples_per_prompt, max_new_tokens, max_prompt_tokens;
    double temperature, top_p;
    int64_t top_k;
    recipe_strlist stop;
    recipe_strlist stop_tokens; /* texts of tokens that end a completion as EOS does */
    int generation_config_eos;  /* the model's generation_config.json eos_token_id end completions too (hf) */
  } rollout;

  struct {
    char *script;   /* Lua reward script (resolved path) */
    char *function; /* the function the script defines */
    struct {
      int64_t instructions, memory_mb, timeout_ms;
    } limits;
  } reward;

  struct {
    train_algo algorithm;
    double lr;
    int64_t warmup_steps;
    double clip_low, clip_high, grad_clip, kl_coef, entropy_coef;
    loss_agg loss_agg;
    struct {
      tis_mode mode;
      double clip, low, high;
    } tis;
    int r3;
    int recompute;
    int64_t microbatch;
    int64_t ppo_epochs, minibatches; /* optimizer steps per iteration = ppo_epochs x minibatches */
    struct {
      optim_name name;
      double beta1, beta2, eps, weight_decay;
      main_params main_params;
    } optimizer;
  } train;

  struct {
    sync_transport transport;
    int64_t bucket_mb;
    int verify;
  } sync;

  struct {
    int64_t iterations, checkpoint_interval, keep_checkpoints;
    int64_t keep_every; /* also keep every checkpoint whose iteration is a multiple; 0 = none */
  } loop;

  struct {
    recipe_intlist rollout, train;
  } gpus;

  /* Provenance: the recipe file, and for every schema key (recipe_schema.c
   * order) whether it was written and where. */
  char *file;
  char *override_dir; /* relative paths of --set values resolve against it (NULL: the working directory) */
  unsigned char key_set[RECIPE_MAX_KEYS];
  recipe_loc key_loc[RECIPE_MAX_KEYS];
  char **strs; /* strings the locations point into (file names, overrides) */
  int n_strs;
  char *warnings; /* newline-separated warnings from validation, or NULL */
} recipe;

/* Flags for recipe_load_string. */
enum {
  RECIPE_NO_FS = 1,  /* touch no file: refuse base:, skip existence checks (fuzzing, tests) */
  RECIPE_NO_DATA = 2 /* files exist, but leave their content alone: no JSONL parse, no prompts() call
                        (a run's stored recipe: resume checks the inputs' sha256, the loop the data) */
};

/* Load, resolve and validate a recipe file; overrides are "a.b.c=value". */
int recipe_load(const char *path, const char *const *overrides, int n_overrides, recipe *out, rl_err *e);
/* The same with the relative paths of the overrides' values (--set
 * reward.script=lua/x.lua) resolved against override_dir instead of the
 * working directory (NULL: the working directory): how `rlrun resume` reloads
 * a run's recipe with the overrides given where the run was started. Paths
 * written in recipe files stay relative to their file. */
int recipe_load_at(const char *path, const char *const *overrides, int n_overrides, const char *override_dir,
                   recipe *out, rl_err *e);
/* The same from memory; name stands for the file in messages (and its
 * directory anchors relative paths unless RECIPE_NO_FS). */
int recipe_load_string(const char *text, size_t len, const char *name, const char *const *overrides,
                       int n_overrides, int flags, recipe *out, rl_err *e);
void recipe_free(recipe *r);

/* Can this valid recipe run on target t? RL_EXIT_OK or RL_EXIT_HARDWARE with
 * the reason; *emulated is set when MXFP8/NVFP4 run emulated. Adds warnings. */
int recipe_check_hardware(recipe *r, const hw_target *t, int *emulated, rl_err *e);

/* The class the recipe runs on for target t: cpu when device is cpu or t has no GPU. */
hw_class recipe_run_class(const recipe *r, const hw_target *t);

/* The checkpoint directory model.checkpoint names (runner/recipe_ckpt.c): a
 * checkpoint directory itself, a run directory's newest checkpoint, or for
 * RUNS/NAME that does not exist the newest run RUNS/NAME-<id>'s; malloc'd,
 * NULL when there is none (yet). */
char *recipe_resolve_checkpoint(const char *given);
/* Until called again with NULL (this thread): a model.checkpoint that names
 * the run of checkpoint `exact` (its run directory, or RUNS/NAME with the run
 * RUNS/NAME-<id>) resolves to exact while it exists, not to a newer
 * checkpoint or run. resume: a run keeps the checkpoint it started from when
 * another run of that name appears. */
void recipe_checkpoint_pin(const char *exact);

/* Print the fully resolved recipe (every key, defaults marked) as YAML. */
void recipe_print(FILE *f, const recipe *r);
/* Print the precision of each layer class and the ordered stage plan. */
void recipe_print_plan(FILE *f, const recipe *r, const hw_target *t, int emulated);

/* Schema access (docs, tests): key count, the dotted path of key i, its
 * type name and default text ("" when none). */
int recipe_schema_count(void);
const char *recipe_schema_path(int i);
const char *recipe_schema_type(int i);
const char *recipe_schema_default(int i);
/* The schema as a markdown table (docs/recipes.md holds a copy; `rlrun validate --keys`). */
void recipe_schema_print_reference(FILE *f);
/* Index of a dotted key path, or -1. */
int recipe_key_index(const char *path);
/* 1 when key i is a path key (model.path, data.prompts, ...). */
int recipe_key_is_path(int i);
/* The value of key i when it is a path key (model.path, data.prompts, ...: as
 * resolved, relative paths made absolute), NULL for another key or no value. */
const char *recipe_path_value(const recipe *r, int i);

#endif
