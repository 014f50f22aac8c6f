/* cmd_init.c — `rlrun init RECIPE --out DIR`: the fresh model a recipe's
 * model.init starts a run from (the weights a run's iteration 1 rolls out
 * and trains, and the KL reference of `train.kl_coef`), written as a Hugging
 * Face model directory: config.json and BF16 model.safetensors, with an hf
 * tokenizer's files as a checkpoint carries them. So `rlrun score --model
 * DIR` gives iteration 1's log-probs, and DIR can be `model.path` of another
 * recipe. The weights are loop_model_build's, byte for byte. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runner/cli.h"
#include "runner/inputs.h"
#include "runner/loop_int.h"
#include "runner/recipe.h"
#include "state/ckpt.h"
#include "state/safetensors.h"
#include "stages/tokenizer.h"

#define INIT_MAX_SETS 64

static const char init_usage[] =
    "usage: rlrun init RECIPE --out DIR [--set KEY=VALUE]...\n"
    "\n"
    "Write the fresh model RECIPE's model.init starts a run from, as a Hugging Face model\n"
    "directory DIR: config.json and model.safetensors (BF16), plus the hf tokenizer's files as\n"
    "a checkpoint carries them. The weights are exactly those of a run of RECIPE before its\n"
    "first update (they depend on model.init, seed and the tokenizer's size alone): what\n"
    "iteration 1 rolls out and trains, and the reference of train.kl_coef. `rlrun score\n"
    "--model DIR` then gives iteration 1's log-probs; DIR can be another recipe's model.path.\n"
    "DIR must not exist; it is written under a temporary name and renamed when complete.\n"
    "\n"
    "exit codes: 0 written, 1 I/O failure, 2 bad usage or recipe (one without model.init:\n"
    "            its model.path or model.checkpoint is a model directory already; a DIR that\n"
    "            exists or whose parent does not), 130 interrupted (nothing left at DIR).\n";

/* Copy file src to dst (whole, atomically). */
static int init_copy(const char *src, const char *dst, rl_err *e) {
  char *data = NULL;
  size_t n = 0;
  int rc = rl_read_file(src, &data, &n, e);
  if (!rc) rc = st_write_atomic(dst, data, n, e);
  free(data);
  return rc;
}

/* The model directory into tmp (made here); 0 or an error. */
static int init_write(const recipe *r, const char *tmp, rl_err *e) {
  tokenizer *tok = NULL;
  model *m = NULL;
  char *cfg = NULL, path[4608];
  int rc = recipe_tokenizer(r, &tok, e);
  if (!rc) rc = loop_model_build(r, tok, NULL, &m, &cfg, e);
  if (!rc && mkdir(tmp, 0755) != 0) rc = rl_errf(e, RL_EXIT_FAIL, "cannot make %s: %s", tmp, strerror(errno));
  if (!rc) {
    snprintf(path, sizeof path, "%s/" CKPT_CONFIG, tmp);
    rc = st_write_atomic(path, cfg, strlen(cfg), e);
  }
  if (!rc) {
    int n = 0;
    ckpt_tensor *t = loop_model_tensors(m, &n);
    snprintf(path, sizeof path, "%s/" CKPT_WEIGHTS, tmp);
    rc = ckpt_write_weights_file(path, t, n, e);
    free(t);
  }
  if (!rc && r->tokenizer.type == TOKENIZER_HF) { /* tokenizer.json & co., as a checkpoint carries them */
    recipe_copies cp;
    if (!(rc = recipe_checkpoint_copies(r, &cp, e))) {
      for (int i = 0; i < cp.n && !rc; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp, cp.c[i].name);
        rc = init_copy(cp.c[i].src, path, e);
      }
      recipe_copies_free(&cp);
    }
  }
  model_free(m);
  free(cfg);
  tokenizer_free(tok);
  return rc;
}

/* Remove the files of a partly written tmp and the directory. */
static void init_remove(const char *tmp) {
  static const char *const names[] = {CKPT_CONFIG, CKPT_WEIGHTS, "tokenizer.json", "tokenizer_config.json",
                                      "special_tokens_map.json", "chat_template.jinja", "generation_config.json"};
  char p[4608];
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    snprintf(p, sizeof p, "%s/%s", tmp, names[i]);
    unlink(p);
  }
  rmdir(tmp);
}

int cmd_init(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    fputs(init_usage, stdout);
    return RL_EXIT_OK;
  }
  const char *path = NULL, *out = NULL, *sets[INIT_MAX_SETS];
  int n_sets = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--out") && i + 1 >= argc) {
      fprintf(stderr, "rlrun init: --out needs a value; see `rlrun init --help`\n");
      return RL_EXIT_USAGE;
    }
    const int set = cli_take_set("init", argc, argv, &i, sets, &n_sets, INIT_MAX_SETS);
    if (set < 0) return RL_EXIT_USAGE;
    if (set) continue;
    if (!strcmp(a, "--out")) out = argv[++i];
    else if (!strncmp(a, "--out=", 6)) out = a + 6;
    else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "rlrun init: unknown option '%s'; see `rlrun init --help`\n", a);
      return RL_EXIT_USAGE;
    } else if (path) {
      fprintf(stderr, "rlrun init: unexpected argument '%s' (one RECIPE)\n", a);
      return RL_EXIT_USAGE;
    } else {
      path = a;
    }
  }
  if (!path || !out || !*out) {
    fprintf(stderr, "rlrun init: RECIPE and --out DIR are required; see `rlrun init --help`\n");
    return RL_EXIT_USAGE;
  }
  if (out[0] == '-') {
    fprintf(stderr, "rlrun init: --out '%s' looks like an option: give the directory to write (./%s for a name "
            "that starts with '-')\n", out, out);
    return RL_EXIT_USAGE;
  }
  /* DIR/ is DIR (the temporary goes beside it, not inside) */
  char outb[4096];
  if (snprintf(outb, sizeof outb, "%s", out) >= (int)sizeof outb) {
    fprintf(stderr, "rlrun init: --out is longer than %zu bytes\n", sizeof outb - 1);
    return RL_EXIT_USAGE;
  }
  for (size_t l = strlen(outb); l > 1 && outb[l - 1] == '/'; l--) outb[l - 1] = 0;
  out = outb;
  struct stat st;
  if (lstat(out, &st) == 0 || errno != ENOENT) { /* a dangling link too: rename would not replace it */
    fprintf(stderr, "rlrun init: --out %s %s: give a new directory\n", out,
            lstat(out, &st) == 0 ? "exists" : strerror(errno));
    return RL_EXIT_USAGE;
  }
  char parent[4096];
  snprintf(parent, sizeof parent, "%s", out);
  char *sl = strrchr(parent, '/');
  if (sl) *(sl == parent ? sl + 1 : sl) = 0;
  if (stat(sl ? parent : ".", &st) != 0 || !S_ISDIR(st.st_mode)) {
    fprintf(stderr, "rlrun init: --out %s: its parent %s is not a directory (%s): make it first\n", out,
            sl ? parent : ".", errno ? strerror(errno) : "not a directory");
    return RL_EXIT_USAGE;
  }
  rl_err e;
  recipe r;
  memset(&r, 0, sizeof r);
  char *text = NULL;
  size_t len = 0;
  int rc = rl_read_file(path, &text, &len, &e);
  if (!rc) rc = recipe_load_string(text, len, path, sets, n_sets, RECIPE_NO_DATA, &r, &e);
  free(text);
  if (rc) {
    fprintf(stderr, "rlrun init: %s\n", e.msg);
    return rc;
  }
  if (!r.model.has_init) {
    fprintf(stderr, "rlrun init: %s has no model.init: its model (%s %s) is a model directory already; init "
            "writes the fresh model of a model.init recipe\n", path, r.model.path ? "model.path" : "model.checkpoint",
            r.model.path ? r.model.path : r.model.checkpoint ? r.model.checkpoint : "?");
    recipe_free(&r);
    return RL_EXIT_USAGE;
  }
  char tmp[4400];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
  rl_interrupt_install("rlrun init: interrupt: stopping; the partial directory is removed (interrupt again to stop "
                       "now)",
                       "rlrun: second interrupt: stopping now (a temporary directory may be left beside --out)");
  rc = init_write(&r, tmp, &e);
  if (!rc && rl_interrupted()) rc = rl_errf(&e, RL_EXIT_INTERRUPT, "interrupted: %s is not written", out);
  if (!rc && rename(tmp, out) != 0)
    rc = rl_errf(&e, RL_EXIT_FAIL, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
  if (rc) {
    init_remove(tmp);
    fprintf(stderr, "rlrun init: %s\n", e.msg);
  } else {
    printf("wrote %s: the fresh model of %s (model.init, seed %lld)\n", out, path, (long long)r.seed);
  }
  recipe_free(&r);
  return rc;
}
