/* cmd_tokenize.c — `rlrun tokenize`: how a recipe's tokenizer (or a
 * tokenizer.json) splits a text — the ids and each token's text — or, with
 * --prompt, the ids a run gives the model for a prompt (data.prompt_template
 * and BOS as the run applies them); --decode turns ids back into text. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/cli.h"
#include "runner/inputs.h"
#include "runner/recipe.h"
#include "stages/prompts.h"
#include "stages/tokenizer.h"

#define TOK_MAX_SETS 64

static void usage_line(FILE *f) {
  fprintf(f, "usage: rlrun tokenize (RECIPE [--set KEY=VALUE]... | --tokenizer FILE) [--prompt] [--ids] [--decode] "
             "[TEXT]\n");
}

/* Ids written as "1 2 3", "1,2,3" or "[1, 2, 3]" → *ids (malloc'd). */
static int parse_ids(const char *s, int32_t **ids, int64_t *n, rl_err *e) {
  int64_t cap = 16, k = 0;
  int32_t *v = rl_xmalloc((size_t)cap * sizeof *v);
  const char *p = s;
  while (*p) {
    if (strchr(" \t\r\n,[]", *p)) {
      p++;
      continue;
    }
    char *end;
    errno = 0;
    long long x = strtoll(p, &end, 10);
    if (end == p || errno || x < 0 || x > INT32_MAX || (*end && !strchr(" \t\r\n,[]", *end))) {
      free(v);
      int l = 0;
      while (p[l] && !strchr(" \t\r\n,[]", p[l]) && l < 24) l++;
      return rl_errf(e, RL_EXIT_USAGE, "--decode: '%.*s' is not a token id (ids are whole numbers from 0, separated "
                     "by spaces or commas)", l, p);
    }
    if (k == cap) v = rl_xrealloc(v, (size_t)(cap *= 2) * sizeof *v);
    v[k++] = (int32_t)x;
    p = end;
  }
  *ids = v, *n = k;
  return 0;
}

/* All of standard input (malloc'd, NUL-terminated). */
static char *read_stdin(size_t *len) {
  size_t cap = 4096, n = 0;
  char *b = rl_xmalloc(cap);
  for (size_t got; (got = fread(b + n, 1, cap - n - 1, stdin)) > 0;) {
    n += got;
    if (cap - n < 2) b = rl_xrealloc(b, cap *= 2);
  }
  b[n] = 0;
  *len = n;
  return b;
}

int cmd_tokenize(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    usage_line(stdout);
    printf("\nHow a tokenizer splits TEXT (default: all of standard input): the token count, then a line\n"
           "per token — its id and its text, quoted as `rlrun samples` quotes (special tokens marked).\n"
           "The tokenizer is the one RECIPE's run uses (tokenizer.*, the model's tokenizer.json, BOS and\n"
           "EOS as the recipe sets them), or the tokenizer.json FILE (its tokenizer_config.json beside it).\n"
           "  --prompt   the ids a run gives the model for TEXT as a prompt: data.prompt_template\n"
           "             applied (RECIPE), then the BOS before it when the tokenizer has one\n"
           "  --ids      only the ids, as one JSON list\n"
           "  --decode   TEXT is ids (\"1 2 3\", \"1,2,3\" or \"[1, 2, 3]\"): print the text they stand for,\n"
           "             special tokens included\n"
           "exit codes: 0 done, 2 bad usage, recipe, tokenizer or text (not UTF-8, a character a chars\n"
           "tokenizer lacks, an id outside the vocabulary).\n");
    return RL_EXIT_OK;
  }
  const char *path = NULL, *tok_file = NULL, *text_arg = NULL, *sets[TOK_MAX_SETS], *pos[3];
  int n_sets = 0, n_pos = 0, as_prompt = 0, only_ids = 0, decode = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--tokenizer") && i + 1 >= argc) {
      fprintf(stderr, "rlrun tokenize: --tokenizer needs a value\n");
      return RL_EXIT_USAGE;
    }
    const int set = cli_take_set("tokenize", argc, argv, &i, sets, &n_sets, TOK_MAX_SETS);
    if (set < 0) return RL_EXIT_USAGE;
    if (set) continue;
    if (!strcmp(a, "--tokenizer")) tok_file = argv[++i];
    else if (!strncmp(a, "--tokenizer=", 12)) tok_file = a + 12;
    else if (!strcmp(a, "--prompt")) as_prompt = 1;
    else if (!strcmp(a, "--ids")) only_ids = 1;
    else if (!strcmp(a, "--decode")) decode = 1;
    else if (a[0] == '-' && a[1] && strcmp(a, "--")) {
      fprintf(stderr, "rlrun tokenize: unknown option '%s'; `rlrun tokenize --help` lists them\n", a);
      return RL_EXIT_USAGE;
    } else {
      if (!strcmp(a, "--")) { /* what follows is TEXT, whatever it starts with */
        if (++i >= argc) break;
        a = argv[i];
      }
      if (n_pos == 2) {
        fprintf(stderr, "rlrun tokenize: unexpected argument '%s' (one TEXT: quote it)\n", a);
        return RL_EXIT_USAGE;
      }
      pos[n_pos++] = a;
    }
  }
  /* RECIPE [TEXT], or with --tokenizer FILE just [TEXT] */
  if (tok_file) {
    if (n_pos > 1) {
      fprintf(stderr, "rlrun tokenize: give RECIPE or --tokenizer FILE, not both ('%s')\n", pos[0]);
      return RL_EXIT_USAGE;
    }
    text_arg = n_pos ? pos[0] : NULL;
  } else {
    path = n_pos ? pos[0] : NULL;
    text_arg = n_pos > 1 ? pos[1] : NULL;
  }
  if (!path && !tok_file) {
    usage_line(stderr);
    fprintf(stderr, "rlrun tokenize: which tokenizer? give a RECIPE or --tokenizer FILE\n");
    return RL_EXIT_USAGE;
  }
  if (tok_file && n_sets) {
    fprintf(stderr, "rlrun tokenize: --set applies to a RECIPE, not to --tokenizer\n");
    return RL_EXIT_USAGE;
  }
  if (decode && as_prompt) {
    fprintf(stderr, "rlrun tokenize: --decode and --prompt do not go together\n");
    return RL_EXIT_USAGE;
  }
  rl_err e;
  recipe r;
  memset(&r, 0, sizeof r);
  int have_recipe = 0, rc = 0;
  tokenizer *tok = NULL;
  if (path) {
    char *rtext = NULL;
    size_t rlen = 0;
    if (!(rc = rl_read_file(path, &rtext, &rlen, &e)) &&
        !(rc = recipe_load_string(rtext, rlen, path, sets, n_sets, RECIPE_NO_DATA, &r, &e)))
      have_recipe = 1;
    free(rtext);
    if (!rc) rc = recipe_tokenizer(&r, &tok, &e);
  } else {
    rc = tokenizer_hf_new(tok_file, &tok, &e);
    const char *bad = rc ? NULL : tokenizer_hf_config_problem(tok, 0);
    if (!bad && !rc) bad = tokenizer_hf_config_problem(tok, 1);
    if (bad) fprintf(stderr, "rlrun tokenize: note: %s\n", bad);
  }
  size_t len = 0;
  char *text = NULL;
  if (!rc) text = text_arg ? rl_xstrdup(text_arg) : read_stdin(&len);
  if (text && text_arg) len = strlen(text);
  const char *nul = text ? memchr(text, 0, len) : NULL;
  if (nul) /* text is a C string from here on: it would end there, silently */
    rc = rl_errf(&e, RL_EXIT_USAGE, "the text holds a NUL byte at byte %zu: a tokenizer reads text, and prompts "
                 "hold no NUL", (size_t)(nul - text));
  int32_t *ids = NULL;
  int64_t n = 0;
  if (!rc && decode) {
    char *out = NULL;
    if (!(rc = parse_ids(text, &ids, &n, &e)) && (out = tokenizer_decode(tok, ids, n, 0, &e))) {
      fputs(out, stdout);
      putchar('\n');
    } else if (!rc) {
      rc = e.code;
    }
    free(out);
  } else if (!rc) {
    char *in = as_prompt && have_recipe ? prompts_apply_template(r.data.prompt_template, text) : NULL;
    const char *src = in ? in : text;
    int32_t *t = NULL;
    int64_t nt = 0;
    if (!(rc = tokenizer_encode(tok, src, strlen(src), &t, &nt, &e))) {
      int bos = as_prompt && tok->bos >= 0;
      ids = rl_xmalloc((size_t)(nt + bos + 1) * sizeof *ids);
      if (bos) ids[0] = tok->bos;
      memcpy(ids + bos, t, (size_t)nt * sizeof *ids);
      n = nt + bos;
    }
    free(t);
    free(in);
    if (!rc && only_ids) {
      putchar('[');
      for (int64_t i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
      printf("]\n");
    } else if (!rc) {
      printf("%lld token%s\n", (long long)n, n == 1 ? "" : "s");
      for (int64_t i = 0; i < n; i++) {
        const char *b;
        size_t l;
        int special = 0;
        printf("%8d  ", ids[i]);
        if (!tokenizer_token_bytes(tok, ids[i], &b, &l, &special, &e)) cli_print_quoted(b, l, (size_t)-1);
        printf("%s\n", special ? "  special" : "");
      }
    }
  }
  if (rc) fprintf(stderr, "rlrun tokenize: %s\n", e.msg);
  free(ids);
  free(text);
  tokenizer_free(tok);
  if (have_recipe) recipe_free(&r);
  return rc;
}
