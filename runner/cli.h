/* cli.h — the subcommands of rlrun. Each takes the arguments after its own
 * name (argv[0] is the command name), prints its own --help, and returns a
 * process exit code (enum rl_exit in kernels/common.h). */
#ifndef RLRUN_CLI_H
#define RLRUN_CLI_H

#include <stddef.h>

typedef struct cli_command {
  const char *name;
  const char *summary; /* one line for `rlrun --help` */
  int (*fn)(int argc, char **argv);
} cli_command;

/* 1 when argv holds -h or --help. */
int cli_wants_help(int argc, char **argv);
/* argv[*i] when it is a recipe override: "--set KEY=VALUE" (the value taken,
 * *i advanced past it) or "--set=KEY=VALUE", appended to sets[*n] (at most
 * max). 1: it was one; 0: it is not a --set; -1: its value is missing or
 * there are more than max (said on stderr as `rlrun CMD: ...`: exit 2). */
int cli_take_set(const char *cmd, int argc, char **argv, int *i, const char **sets, int *n, int max);
/* len bytes of text on one line of stdout, unambiguously (README: `rlrun
 * samples`): in double quotes, with \\ \" \n \t \r escaped, other control
 * characters and bytes that are not UTF-8 as \xNN, C1 controls as \u00NN. At
 * most max bytes are shown, cut between characters; a cut text is followed by
 * "…(+N bytes)", N the bytes left out. */
void cli_print_quoted(const char *s, size_t len, size_t max);

int cmd_version(int argc, char **argv);
int cmd_validate(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_matrix(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_samples(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_init(int argc, char **argv);

/* The table of commands, in the order `rlrun --help` lists them. */
extern const cli_command cli_commands[];
extern const int cli_n_commands;

#endif
