/* cmd_recipe.c — `rlrun validate`, `rlrun plan` and `rlrun matrix`: check a
 * recipe (exit 0 valid, 2 invalid, 3 valid but not runnable on the hardware),
 * print it fully resolved with its plan, print the precision matrix. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/cli.h"
#include "runner/inputs.h"
#include "runner/recipe.h"

#define MAX_SETS 64

/* Arguments shared by validate and plan. */
typedef struct recipe_args {
  const char *path;
  const char *hardware;
  const char *sets[MAX_SETS];
  int n_sets;
  int keys; /* validate --keys */
} recipe_args;

/* Parse RECIPE [--hardware NAME[:COUNT]] [--set K=V]...; prints the error and returns 2 on misuse. */
static int parse_args(const char *cmd, int argc, char **argv, int want_recipe, recipe_args *a) {
  memset(a, 0, sizeof *a);
  for (int i = 1; i < argc; i++) {
    const int set = cli_take_set(cmd, argc, argv, &i, a->sets, &a->n_sets, MAX_SETS);
    if (set < 0) return RL_EXIT_USAGE;
    if (set) continue;
    const char *s = argv[i];
    if (!strcmp(s, "--hardware")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "rlrun %s: --hardware needs a value\n", cmd);
        return RL_EXIT_USAGE;
      }
      a->hardware = argv[++i];
      continue;
    } else if (!strncmp(s, "--hardware=", 11)) {
      a->hardware = s + 11;
      continue;
    } else if (!strcmp(s, "--keys") && !strcmp(cmd, "validate")) {
      a->keys = 1;
      continue;
    } else if (s[0] == '-' && s[1]) {
      fprintf(stderr, "rlrun %s: unknown option '%s'; `rlrun %s --help` lists them\n", cmd, s, cmd);
      return RL_EXIT_USAGE;
    } else if (want_recipe && !a->path) {
      a->path = s;
      continue;
    } else {
      fprintf(stderr, "rlrun %s: unexpected argument '%s'\n", cmd, s);
      return RL_EXIT_USAGE;
    }
  }
  if (a->keys && (a->path || a->hardware || a->n_sets)) {
    if (a->path)
      fprintf(stderr, "rlrun %s: --keys lists every recipe key and reads no recipe, so '%s' would be ignored: "
              "run `rlrun %s --keys` alone, or `rlrun %s %s` to check the recipe\n", cmd, a->path, cmd, cmd, a->path);
    else
      fprintf(stderr, "rlrun %s: --keys lists every recipe key and takes no other option: run `rlrun %s --keys` "
              "alone\n", cmd, cmd);
    return RL_EXIT_USAGE;
  }
  if (want_recipe && !a->path && !a->keys) {
    fprintf(stderr, "rlrun %s: missing RECIPE (a .yaml file); usage: rlrun %s RECIPE [--hardware NAME[:COUNT]] [--set K=V]...\n",
            cmd, cmd);
    return RL_EXIT_USAGE;
  }
  return RL_EXIT_OK;
}

/* The target: --hardware NAME, else this machine. */
static int get_target(const char *cmd, const char *name, hw_target *t) {
  if (!name) {
    hw_target_detect(t);
    return RL_EXIT_OK;
  }
  rl_err e;
  if (hw_target_named(name, t, &e)) {
    fprintf(stderr, "rlrun %s: %s\n", cmd, e.msg);
    return RL_EXIT_USAGE;
  }
  return RL_EXIT_OK;
}

static void print_warnings(const recipe *r) {
  if (!r->warnings) return;
  for (const char *p = r->warnings; *p;) {
    const char *nl = strchr(p, '\n');
    int n = nl ? (int)(nl - p) : (int)strlen(p);
    fprintf(stderr, "%s: %.*s\n", r->file, n, p);
    p += n + (nl ? 1 : 0);
  }
}

/* Load and check; returns the exit code, r loaded when it is 0 or 3. */
static int load_and_check(const recipe_args *a, const hw_target *t, recipe *r, int *emulated) {
  rl_err e;
  if (recipe_load(a->path, a->sets, a->n_sets, r, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return e.code ? e.code : RL_EXIT_USAGE;
  }
  int rc = recipe_check_hardware(r, t, emulated, &e);
  if (rc) {
    fprintf(stderr, "%s: valid, but not runnable on %s (%s):\n%s\n", a->path, t->name,
            recipe_run_class(r, t) == HW_UNSUPPORTED ? "unsupported" : hw_class_names[recipe_run_class(r, t)], e.msg);
  }
  return rc;
}

int cmd_validate(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun validate RECIPE [--hardware NAME[:COUNT]] [--set KEY=VALUE]...\n"
           "       rlrun validate --keys\n\n"
           "Check a recipe before anything runs: YAML syntax, every key against the schema\n"
           "(types, ranges, valid values, unknown keys), cross-key rules, referenced files,\n"
           "the precision matrix (`rlrun matrix`) and the hardware. Errors are printed as\n"
           "FILE:LINE:COL: message (or --set KEY=VALUE: message).\n\n"
           "  --hardware NAME[:COUNT]  validate for a named target instead of this machine:\n"
           "                           %s\n"
           "                           (COUNT GPUs, default 8)\n"
           "  --set KEY=VALUE          override a key (dotted path), VALUE read as YAML,\n"
           "                           checked like a value in the file; repeatable\n"
           "  --keys                   print every recipe key (type, default, range) and exit;\n"
           "                           alone (no RECIPE, no other option)\n\n"
           "exit codes: 0 valid and runnable, 2 invalid, 3 valid but not runnable on this\n"
           "hardware (the reason is printed). The key reference is docs/recipes.md.\n",
           hw_names_list());
    return RL_EXIT_OK;
  }
  recipe_args a;
  int rc = parse_args("validate", argc, argv, 1, &a);
  if (rc) return rc;
  if (a.keys) {
    recipe_schema_print_reference(stdout);
    return RL_EXIT_OK;
  }
  hw_target t;
  if ((rc = get_target("validate", a.hardware, &t))) return rc;
  recipe r;
  int emulated = 0;
  rc = load_and_check(&a, &t, &r, &emulated);
  if (rc == RL_EXIT_USAGE) return rc;
  print_warnings(&r);
  if (rc == RL_EXIT_OK) {
    hw_class cls = recipe_run_class(&r, &t);
    const precision_pair *p = matrix_pair(r.precision.rollout, r.precision.train);
    printf("%s: valid: rollout %s x train %s (%s) on %s (%s%s)%s\n", a.path, prec_names[r.precision.rollout],
           prec_names[r.precision.train], p->mode, cls == HW_CPU ? "cpu" : t.name, hw_class_names[cls],
           cls == HW_CPU ? ", CPU reference numerics" : "", emulated ? ", emulated" : "");
    if (r.device == DEVICE_CPU && a.hardware && t.cls != HW_CPU) /* the target was asked for but decides nothing */
      printf("note: --hardware %s does not apply: the recipe says device: cpu (set device: auto or cuda to "
             "validate it for %s)\n", a.hardware, t.name);
  }
  recipe_free(&r);
  return rc;
}

/* The tokenizer section of the plan: which file (hf), how many ids, and the
 * special tokens a run uses — BOS before every prompt, EOS that ends a
 * completion (a wrong one and rollouts never stop before max_new_tokens). */
static void print_tokenizer(const recipe *r) {
  tokenizer *tok;
  rl_err e;
  printf("\n== tokenizer ==\n");
  if (recipe_tokenizer(r, &tok, &e)) {
    printf("not loaded: %s\n", e.msg);
    return;
  }
  const char *key;
  char *path = r->tokenizer.type == TOKENIZER_HF ? recipe_tokenizer_path(r, &key) : NULL;
  printf("%s%s%s: %lld ids\n", tok->ops->kind, path ? " " : "", path ? path : "", (long long)tokenizer_vocab_size(tok));
  free(path);
  const char *names[3] = {"bos", "eos", "pad"};
  const int32_t ids[3] = {tok->bos, tok->eos, tok->pad};
  for (int i = 0; i < 3; i++) {
    const char *b;
    size_t l;
    int special;
    if (ids[i] < 0 || tokenizer_token_bytes(tok, ids[i], &b, &l, &special, &e)) printf("%s: none\n", names[i]);
    else {
      printf("%s: %d ", names[i], ids[i]);
      cli_print_quoted(b, l, (size_t)-1); /* quoted as samples and tokenize quote: a leading space shows */
      putchar('\n');
    }
  }
  /* rollout.stop_tokens', then the generation config's (validate checked them) */
  int32_t *ends = NULL;
  int n_ends = 0, n_listed = 0;
  const char *blame;
  if (recipe_end_ids(r, tok, &ends, &n_ends, &n_listed, &blame, &e)) printf("end tokens not read: %s: %s\n", blame, e.msg);
  char *gp = recipe_generation_config_path(r);
  for (int i = 0; i < n_ends; i++) {
    const char *b;
    size_t l;
    int special;
    printf("ends a completion too: %d ", ends[i]);
    if (!tokenizer_token_bytes(tok, ends[i], &b, &l, &special, &e)) cli_print_quoted(b, l, (size_t)-1);
    if (i < n_listed) printf("  (rollout.stop_tokens)"); /* else (only) from the generation config */
    else if (gp) printf("  (eos_token_id of %s)", gp);
    putchar('\n');
  }
  free(gp);
  free(ends);
  tokenizer_free(tok);
}

int cmd_plan(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun plan RECIPE [--hardware NAME[:COUNT]] [--set KEY=VALUE]...\n\n"
           "Print the fully resolved recipe (every key, with defaults marked \"# default\"),\n"
           "the hardware verdict, the tokenizer (its file, number of ids, the BOS / EOS / PAD tokens\n"
           "a run uses and its other end tokens), the precision of each layer class in rollout and\n"
           "training, and the\n"
           "ordered stage plan: convert, then rollout -> train -> sync per iteration,\n"
           "with checkpoints. Exit codes as for `rlrun validate` (the plan is printed for a\n"
           "valid recipe even when this hardware cannot run it, exit 3).\n");
    return RL_EXIT_OK;
  }
  recipe_args a;
  int rc = parse_args("plan", argc, argv, 1, &a);
  if (rc) return rc;
  hw_target t;
  if ((rc = get_target("plan", a.hardware, &t))) return rc;
  recipe r;
  int emulated = 0;
  rc = load_and_check(&a, &t, &r, &emulated);
  if (rc == RL_EXIT_USAGE) return rc;
  print_warnings(&r);
  printf("== resolved recipe: %s (\"# default\": not written in the recipe) ==\n", a.path);
  recipe_print(stdout, &r);
  hw_class cls = recipe_run_class(&r, &t);
  printf("\n== hardware ==\n%s (%s)%s: %s\n", cls == HW_CPU ? "cpu" : t.name,
         cls == HW_UNSUPPORTED ? "unsupported" : hw_class_names[cls], t.detected ? ", detected" : ", named",
         rc ? "NOT runnable (see the errors above)" : emulated ? "runnable, emulated" : "runnable");
  print_tokenizer(&r);
  printf("\n");
  recipe_print_plan(stdout, &r, &t, emulated);
  recipe_free(&r);
  return rc;
}

int cmd_matrix(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun matrix [--hardware NAME[:COUNT]]\n\n"
           "Print the precision compatibility matrix (rollout x train, per hardware class),\n"
           "the formats each hardware class runs, and which pairs this machine (or the\n"
           "named target) can run. The same tables are in README.md.\n");
    return RL_EXIT_OK;
  }
  recipe_args a;
  int rc = parse_args("matrix", argc, argv, 0, &a);
  if (rc) return rc;
  hw_target t;
  if ((rc = get_target("matrix", a.hardware, &t))) return rc;
  matrix_print_tables(stdout);
  printf("\n");
  matrix_print_target(stdout, &t);
  return RL_EXIT_OK;
}
