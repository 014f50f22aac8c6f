/* main.c — rlrun's entry point: subcommand dispatch. Every command runs
 * through run_command(), the one place where errors reach the user. */
#include <stdio.h>
#include <string.h>

#include "kernels/common.h"
#include "cli.h"

/* Commands, in the order `rlrun --help` lists them. Add one line per command. */
const cli_command cli_commands[] = {
    {"version", "print versions, build flags and the GPUs found", cmd_version},
    {"validate", "check a recipe: schema, precision matrix, hardware (exit 0/2/3)", cmd_validate},
    {"plan", "print a recipe fully resolved, its layer precisions and stage plan", cmd_plan},
    {"matrix", "print the precision compatibility matrix and what this machine runs", cmd_matrix},
    {"convert", "convert a HF model directory to fp8-block/mxfp8/nvfp4 or back to bf16", cmd_convert},
    {"tokenize", "how a recipe's tokenizer splits a text: ids and token texts (--decode: ids to text)", cmd_tokenize},
    {"init", "write the fresh model of a recipe's model.init as a model directory (iteration 1's weights)", cmd_init},
    {"score", "per-token log-probs of token sequences under a model (JSONL in, JSONL out)", cmd_score},
    {"run", "start a run from a recipe: rollout -> reward -> train -> sync, checkpoints, SQLite state", cmd_run},
    {"resume", "continue a stopped run exactly where it stopped (refuses changed recipe/inputs)", cmd_resume},
    {"status", "state, progress, latest metrics, checkpoints and errors of a run", cmd_status},
    {"ls", "list the runs of a runs directory", cmd_ls},
    {"metrics", "every metric of a run per iteration (table, --csv or --json)", cmd_metrics},
    {"samples", "committed samples of a run (--iter K, --top N by reward)", cmd_samples},
    {"export", "a run's resolved recipe + sha256 of every input: a reproducible experiment", cmd_export},
};
const int cli_n_commands = (int)(sizeof cli_commands / sizeof cli_commands[0]);

static void usage(FILE *f) {
  fprintf(f,
          "rlrun " RLRUN_VERSION " — RL post-training of transformer LMs from YAML recipes\n\n"
          "usage: rlrun COMMAND [ARGS...]\n"
          "       rlrun COMMAND --help\n\ncommands:\n");
  for (int i = 0; i < cli_n_commands; i++)
    fprintf(f, "  %-10s %s\n", cli_commands[i].name, cli_commands[i].summary);
  fprintf(f,
          "\nexit codes:\n"
          "  0    success\n"
          "  1    runtime failure (a stage or I/O failed; a run stays resumable)\n"
          "  2    usage error or invalid input (command line, recipe, checkpoint, data)\n"
          "  3    valid, but not runnable on this hardware or with this build\n"
          "  4    run state refused (corrupt store, changed inputs, newer schema)\n"
          "  130  interrupted by SIGINT/SIGTERM (resumable)\n");
}

int cli_wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--")) break;
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
  }
  return 0;
}

int cli_take_set(const char *cmd, int argc, char **argv, int *i, const char **sets, int *n, int max) {
  const char *a = argv[*i];
  const int spaced = !strcmp(a, "--set");
  if (!spaced && strncmp(a, "--set=", 6)) return 0;
  if (spaced && *i + 1 >= argc) {
    fprintf(stderr, "rlrun %s: --set needs a value; see `rlrun %s --help`\n", cmd, cmd);
    return -1;
  }
  if (*n == max) {
    fprintf(stderr, "rlrun %s: more than %d --set overrides\n", cmd, max);
    return -1;
  }
  sets[(*n)++] = spaced ? argv[++*i] : a + 6;
  return 1;
}

/* Suggest the closest command name (edit distance ≤ 2) for a typo. */
static const char *closest_command(const char *s) {
  const char *best = NULL;
  int best_d = 3;
  for (int i = 0; i < cli_n_commands; i++) {
    const char *t = cli_commands[i].name;
    int n = (int)strlen(s), m = (int)strlen(t);
    if (n > 32 || m > 32) continue;
    int d[33][33];
    for (int a = 0; a <= n; a++) d[a][0] = a;
    for (int b = 0; b <= m; b++) d[0][b] = b;
    for (int a = 1; a <= n; a++)
      for (int b = 1; b <= m; b++) {
        int c = d[a - 1][b - 1] + (s[a - 1] != t[b - 1]);
        if (d[a - 1][b] + 1 < c) c = d[a - 1][b] + 1;
        if (d[a][b - 1] + 1 < c) c = d[a][b - 1] + 1;
        d[a][b] = c;
      }
    if (d[n][m] < best_d) best_d = d[n][m], best = t;
  }
  return best;
}

static int run_command(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return RL_EXIT_USAGE;
  }
  const char *name = argv[1];
  if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
    if (argc > 2 && strcmp(name, "help") == 0) {
      for (int i = 0; i < cli_n_commands; i++)
        if (!strcmp(cli_commands[i].name, argv[2])) {
          char *hargv[] = {argv[2], "--help", NULL};
          return cli_commands[i].fn(2, hargv);
        }
    }
    usage(stdout);
    return RL_EXIT_OK;
  }
  if (!strcmp(name, "--version")) name = "version";
  for (int i = 0; i < cli_n_commands; i++)
    if (!strcmp(cli_commands[i].name, name)) return cli_commands[i].fn(argc - 1, argv + 1);
  const char *hint = closest_command(name);
  fprintf(stderr, "rlrun: unknown command '%s'%s%s%s; `rlrun --help` lists the commands\n", name,
          hint ? " (did you mean '" : "", hint ? hint : "", hint ? "'?)" : "");
  return RL_EXIT_USAGE;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int rc = run_command(argc, argv);
  fflush(stdout);
  return rc;
}
