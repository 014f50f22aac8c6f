/* cmd_runs.c — the read-only run commands: `rlrun status`, `rlrun ls`,
 * `rlrun metrics`, `rlrun samples`, `rlrun export`. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runner/cli.h"
#include "runner/loop.h"
#include "runner/runs.h"
#include "stages/tokenizer.h"
#include "state/ckpt.h"
#include "state/rundir.h"

/* Parse "RUNDIR" plus flags shared by the commands; NULL after printing an error.
 * Options may come before RUNDIR, as for run and resume ("missing RUNDIR" was
 * said when they did): RUNDIR, the first argument that is neither an option nor
 * the value of one in valued (NULL-terminated), is moved to argv[*i] and the
 * options after it, where the command's own loop reads them from *i on. */
static const char *one_dir(const char *cmd, int argc, char **argv, int *i, const char *const *valued) {
  int at = 0;
  for (int k = *i; k < argc && !at; k++) {
    if (argv[k][0] != '-') at = k;
    else
      for (const char *const *v = valued; v && *v; v++)
        if (!strcmp(argv[k], *v)) {
          k++;
          break;
        }
  }
  if (!at) {
    fprintf(stderr, "rlrun %s: missing RUNDIR; see `rlrun %s --help`\n", cmd, cmd);
    return NULL;
  }
  char *dir = argv[at];
  memmove(&argv[*i + 1], &argv[*i], (size_t)(at - *i) * sizeof *argv);
  argv[(*i)++] = dir;
  if (*i < argc && argv[*i][0] != '-') {
    fprintf(stderr, "rlrun %s: unexpected argument '%s'\n", cmd, argv[*i]);
    return NULL;
  }
  return dir;
}

/* The store and run row of a directory, or an exit code after printing why. */
static int open_run(const char *cmd, const char *dir, store **s, store_run *run) {
  rl_err e;
  memset(run, 0, sizeof *run);
  *s = runs_open_store_read(dir, &e);
  if (*s && store_run_get(*s, run, &e)) {
    store_close(*s);
    *s = NULL;
  }
  if (!*s) {
    fprintf(stderr, "rlrun %s: %s\n", cmd, e.msg);
    return e.code;
  }
  return 0;
}

/* 1 when a stored resolved recipe trains with sft (no rollout, no reward). */
static int stored_is_sft(const char *resolved) {
  const char *p = resolved ? strstr(resolved, "\ntrain:") : NULL;
  const char *a = p ? strstr(p, "\n  algorithm: ") : NULL;
  return a && !strncmp(a + 14, "sft", 3) && (a[17] == '\n' || a[17] == ' ' || !a[17]);
}

/* A one-word state: complete, running, failed, interrupted, new. */
static const char *run_state(const char *dir, store *s, const store_summary *sum, int64_t iters) {
  if (iters > 0 && loop_is_complete(s, iters)) return "complete";
  if (runs_is_locked(dir)) return "running";
  if (sum->steps_failed > 0) return "failed";
  return sum->steps_done > 0 ? "stopped" : "new";
}

/* Print one event (status: the recent errors). */
static int print_event(void *ud, const store_event_row *ev) {
  int *left = ud;
  if (*left <= 0) return 0;
  (*left)--;
  char where[64] = "";
  if (ev->iteration >= 0) snprintf(where, sizeof where, " iteration %lld", (long long)ev->iteration);
  printf("  [%s]%s%s%s: %s\n", store_level_name(ev->level), where, ev->stage ? " " : "", ev->stage ? ev->stage : "",
         ev->message);
  return 0;
}

int cmd_status(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun status RUNDIR\n\n"
           "What a run is doing or did: its state (complete, running, stopped, failed, or new: no\n"
           "step finished yet), the last committed step, iterations done of the plan, samples, the\n"
           "latest reward, loss and mismatch, the checkpoints, recent warnings and errors, and for a\n"
           "run that is not going on and not complete, the command that continues it.\n"
           "Read-only.\n");
    return RL_EXIT_OK;
  }
  int i = 1;
  const char *dir = one_dir("status", argc, argv, &i, NULL);
  if (!dir) return RL_EXIT_USAGE;
  if (i < argc) { /* one_dir stops at an option: status takes none (it used to be ignored) */
    fprintf(stderr, "rlrun status: unknown option '%s': status takes RUNDIR alone; see `rlrun status --help`\n",
            argv[i]);
    return RL_EXIT_USAGE;
  }
  store *s;
  store_run run;
  int rc = open_run("status", dir, &s, &run);
  if (rc) return rc;
  rl_err e;
  store_summary sum;
  if ((rc = store_summary_get(s, &sum, &e))) {
    fprintf(stderr, "rlrun status: %s\n", e.msg);
  } else {
    int64_t iters = runs_stored_iterations(run.recipe_resolved);
    int64_t train_done = 0;
    for (int64_t k = iters; k >= 1; k--) {
      int st = STORE_STEP_NONE;
      if (!store_step_status(s, k, "train", &st, &e) && st == STORE_STEP_DONE) {
        train_done = k;
        break;
      }
    }
    printf("run        %s\nname       %s\ncreated    %s (rlrun %s)\n", run.id, run.name, run.created,
           run.rlrun_version);
    const char *state = run_state(dir, s, &sum, iters);
    printf("state      %s\n", state);
    printf("progress   %lld of %lld iteration%s trained; %lld step%s done, %lld failed\n", (long long)train_done,
           (long long)iters, iters == 1 ? "" : "s", (long long)sum.steps_done, sum.steps_done == 1 ? "" : "s",
           (long long)sum.steps_failed);
    if (sum.last_done_iteration >= 0)
      printf("last step  %s of iteration %lld\n", sum.last_done_stage, (long long)sum.last_done_iteration);
    printf("samples    %lld\n", (long long)sum.samples);
    const char *names[] = {"reward/mean", "loss", "mismatch/kl_k3", "mismatch/logp_abs_diff"};
    int sft = stored_is_sft(run.recipe_resolved); /* no reward (older sft runs stored a 0) */
    int shown = 0; /* one line: the names are longer than the labels' column */
    for (size_t j = sft ? 1 : 0; j < sizeof names / sizeof *names && sum.latest_metric_iteration >= 0; j++) {
      double v;
      int found = 0;
      for (int64_t k = sum.latest_metric_iteration; k >= 1 && !found; k--) store_metric_get(s, k, names[j], &v, &found, &e);
      if (found) printf("%s%s %.6g", shown++ ? ", " : "latest     ", names[j], v);
    }
    if (shown) printf("\n");
    int64_t *ck = NULL;
    int nck = 0;
    if (!ckpt_list(s, &ck, &nck, &e)) {
      printf("checkpoints");
      for (int j = 0; j < nck; j++) printf(" step-%06lld", (long long)ck[j]);
      printf("%s\n", nck ? "" : " none");
      free(ck);
    }
    printf("events     %lld warning%s, %lld error%s\n", (long long)sum.warnings, sum.warnings == 1 ? "" : "s",
           (long long)sum.errors, sum.errors == 1 ? "" : "s");
    int left = 5;
    store_events_each(s, STORE_WARN, print_event, &left, &e);
    /* a run that is not going on and not done: how it goes on (a kill, a crash, Ctrl-C and a failed stage
     * all leave it so; everything committed is kept) */
    if (!strcmp(state, "stopped") || !strcmp(state, "failed") || !strcmp(state, "new")) {
      /* the directory as a shell word: quoted when it holds anything but [A-Za-z0-9_./:@%+=,-] */
      int plain = *dir != 0;
      for (const char *c = dir; *c && plain; c++) plain = isalnum((unsigned char)*c) || strchr("_./:@%+=,-", *c);
      printf(strcmp(state, "failed") ? "next       rlrun resume " : "next       fix what the error above names, then rlrun resume ");
      if (plain) fputs(dir, stdout);
      else {
        putchar('\'');
        for (const char *c = dir; *c; c++) *c == '\'' ? fputs("'\\''", stdout) : putchar(*c);
        putchar('\'');
      }
      printf(strcmp(state, "failed") ? "   (continues from the last committed step)\n"
                                     : " (--allow-changed when the fix changed an input or the recipe)\n");
    }
  }
  store_run_free(&run);
  store_close(s);
  return rc;
}

/* qsort of names. */
static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int cmd_ls(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun ls [RUNS_DIR]\n\n"
           "List the runs in RUNS_DIR (default: runs): name-id, state, iterations trained of the\n"
           "plan, latest reward, created. A directory without runs prints \"no runs in RUNS_DIR\"\n"
           "(exit 0). Read-only.\n");
    return RL_EXIT_OK;
  }
  if (argc > 2) {
    fprintf(stderr, "rlrun ls: unexpected argument '%s'; usage: rlrun ls [RUNS_DIR]\n", argv[2]);
    return RL_EXIT_USAGE;
  }
  const char *root = argc > 1 ? argv[1] : "runs";
  if (root[0] == '-' && root[1]) { /* an option, not a directory named "--bogus" */
    fprintf(stderr, "rlrun ls: unknown option '%s'; usage: rlrun ls [RUNS_DIR]\n", root);
    return RL_EXIT_USAGE;
  }
  if (!*root) {
    fprintf(stderr, "rlrun ls: RUNS_DIR is empty: give a directory of runs (default: runs)\n");
    return RL_EXIT_USAGE;
  }
  DIR *d = opendir(root);
  if (!d) {
    if (errno == ENOENT)
      fprintf(stderr, "rlrun ls: %s: no such directory (start a run with `rlrun run RECIPE`)\n", root);
    else
      fprintf(stderr, "rlrun ls: %s: cannot open as a directory: %s (give the directory that holds the runs)\n",
              root, strerror(errno));
    return RL_EXIT_USAGE;
  }
  char **names = NULL;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    char db[4400];
    struct stat st;
    snprintf(db, sizeof db, "%s/%s/" RUNS_DB, root, de->d_name);
    if (de->d_name[0] == '.' || stat(db, &st) != 0) continue;
    names = rl_xrealloc(names, (size_t)(n + 1) * sizeof *names);
    names[n++] = rl_xstrdup(de->d_name);
  }
  closedir(d);
  if (n == 0) { /* qsort(NULL, 0, …) is undefined */
    printf("no runs in %s (start one with `rlrun run RECIPE --runs-dir %s`)\n", root, root);
    return RL_EXIT_OK;
  }
  qsort(names, (size_t)n, sizeof *names, cmp_name);
  printf("%-44s %-9s %-11s %-10s %s\n", "RUN", "STATE", "ITERATIONS", "REWARD", "CREATED");
  for (int i = 0; i < n; i++) {
    char dir[4400];
    snprintf(dir, sizeof dir, "%s/%s", root, names[i]);
    rl_err e;
    store *s = runs_open_store_read(dir, &e);
    store_run run;
    memset(&run, 0, sizeof run);
    store_summary sum;
    if (!s || store_run_get(s, &run, &e) || store_summary_get(s, &sum, &e)) {
      printf("%-44s %-9s %s\n", names[i], "damaged", e.msg);
    } else {
      int64_t iters = runs_stored_iterations(run.recipe_resolved), done = 0;
      for (int64_t k = iters; k >= 1 && !done; k--) {
        int st = STORE_STEP_NONE;
        if (!store_step_status(s, k, "train", &st, &e) && st == STORE_STEP_DONE) done = k;
      }
      char it[32], rw[32];
      snprintf(it, sizeof it, "%lld/%lld", (long long)done, (long long)iters);
      /* "-": no reward yet, or none at all (sft: older runs stored a 0) */
      if (isnan(sum.latest_reward_mean) || stored_is_sft(run.recipe_resolved)) snprintf(rw, sizeof rw, "-");
      else snprintf(rw, sizeof rw, "%.4f", sum.latest_reward_mean);
      printf("%-44s %-9s %-11s %-10s %s\n", names[i], run_state(dir, s, &sum, iters), it, rw, run.created);
    }
    store_run_free(&run);
    if (s) store_close(s);
    free(names[i]);
  }
  free(names);
  return RL_EXIT_OK;
}

/* Metrics pivoted to one row per iteration. */
#define METRIC_COL 12 /* the widest %.6g value: -1.23457e-05 */
typedef struct metric_table {
  char **names;
  int n_names;
  int64_t *iters;
  double *vals; /* [n_iters][n_names] */
  char *have;   /* [n_iters][n_names]: 1 when recorded (a NaN is recorded as NaN) */
  int n_iters;
} metric_table;

static int metric_collect(void *ud, int64_t iteration, const char *name, double value) {
  metric_table *t = ud;
  if (!t->n_iters || t->iters[t->n_iters - 1] != iteration) {
    t->iters = rl_xrealloc(t->iters, (size_t)(t->n_iters + 1) * sizeof *t->iters);
    t->vals = rl_xrealloc(t->vals, (size_t)(t->n_iters + 1) * (size_t)t->n_names * sizeof *t->vals);
    t->have = rl_xrealloc(t->have, (size_t)(t->n_iters + 1) * (size_t)t->n_names + 1);
    for (int j = 0; j < t->n_names; j++) {
      t->vals[(size_t)t->n_iters * t->n_names + j] = NAN;
      t->have[(size_t)t->n_iters * t->n_names + j] = 0;
    }
    t->iters[t->n_iters++] = iteration;
  }
  for (int j = 0; j < t->n_names; j++)
    if (!strcmp(t->names[j], name)) {
      t->vals[(size_t)(t->n_iters - 1) * t->n_names + j] = value;
      t->have[(size_t)(t->n_iters - 1) * t->n_names + j] = 1;
    }
  return 0;
}

/* A table cell: the value (%.6g), "nan" / "inf" / "-inf" without a sign
 * that depends on how the NaN was made, "-" when not recorded. */
static void metric_cell(char *out, size_t n, double v, int have) {
  if (!have) snprintf(out, n, "-");
  else if (isnan(v)) snprintf(out, n, "nan");
  else if (isinf(v)) snprintf(out, n, v > 0 ? "inf" : "-inf");
  else snprintf(out, n, "%.6g", v);
}

static int utf8_len(const unsigned char *s);

/* A metric name as a JSON string: valid JSON whatever the store holds (names
 * from older runs were not checked): \" \\ and control characters escaped,
 * bytes that are not UTF-8 as U+FFFD. */
static void print_json_name(const char *name) {
  const unsigned char *p = (const unsigned char *)name;
  putchar('"');
  while (*p) {
    int n = utf8_len(p);
    if (n == 0) fputs("\\ufffd", stdout), n = 1;
    else if (*p == '"' || *p == '\\') printf("\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f) printf("\\u%04x", *p);
    else fwrite(p, 1, (size_t)n, stdout);
    p += n;
  }
  putchar('"');
}

/* A metric name as a CSV field (RFC 4180): quoted, with "" for ", when it holds
 * a comma, a quote or a line break. */
static void print_csv_name(const char *name) {
  if (!strpbrk(name, ",\"\r\n")) {
    fputs(name, stdout);
    return;
  }
  putchar('"');
  for (const char *p = name; *p; p++) {
    if (*p == '"') putchar('"');
    putchar(*p);
  }
  putchar('"');
}

/* A metric name for the table, on one line: control characters and bytes that
 * are not UTF-8 as \xNN, a space as \x20 (columns are space-separated). */
static const char *table_name(const char *name, char *buf, size_t n) {
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)name; *p && o + 5 < n;) {
    int k = utf8_len(p);
    if (k == 0 || *p <= 0x20 || *p == 0x7f || *p == '\\') {
      o += (size_t)snprintf(buf + o, n - o, *p == '\\' ? "\\\\" : "\\x%02X", *p);
      p++;
    } else {
      if (o + (size_t)k + 1 > n) break;
      memcpy(buf + o, p, (size_t)k);
      o += (size_t)k, p += k;
    }
  }
  buf[o] = 0;
  return buf;
}

/* Terminal columns a code point takes: 2 for East Asian wide and fullwidth
 * characters (CJK, Hangul, fullwidth forms, most emoji), 0 for combining marks
 * and zero-width characters, 1 otherwise (an approximation of wcwidth that
 * needs no locale). */
static int cp_columns(unsigned cp) {
  if ((cp >= 0x300 && cp <= 0x36F) || (cp >= 0x200B && cp <= 0x200F) || (cp >= 0xFE00 && cp <= 0xFE0F) ||
      cp == 0xFEFF || (cp >= 0x1AB0 && cp <= 0x1AFF) || (cp >= 0x20D0 && cp <= 0x20FF))
    return 0;
  if ((cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0x303E) || (cp >= 0x3041 && cp <= 0x33FF) ||
      (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xA000 && cp <= 0xA4CF) ||
      (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFE30 && cp <= 0xFE4F) ||
      (cp >= 0xFF00 && cp <= 0xFF60) || (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1F64F) ||
      (cp >= 0x1F900 && cp <= 0x1F9FF) || (cp >= 0x20000 && cp <= 0x3FFFD))
    return 2;
  return 1;
}

/* Terminal columns of a valid UTF-8 text (table_name's output). */
static int text_columns(const char *s) {
  int cols = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    int k = utf8_len(p);
    if (k <= 0) k = 1; /* not reached: table_name escapes what is not UTF-8 */
    unsigned cp = k == 1 ? *p : (unsigned)(*p & (0x7F >> k));
    for (int i = 1; i < k; i++) cp = (cp << 6) | (p[i] & 0x3F);
    cols += cp_columns(cp);
    p += k;
  }
  return cols;
}

/* "  " and text right-aligned in a column `width` terminal columns wide
 * (printf's %*s pads by bytes, which a multi-byte name would misalign). */
static void print_cell(const char *text, int width) {
  printf("  %*s%s", width > text_columns(text) ? width - text_columns(text) : 0, "", text);
}

int cmd_metrics(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun metrics RUNDIR [--csv|--json]\n\n"
           "Every metric of every iteration (reward/mean, loss, mismatch/*, optim/*, …; README's\n"
           "\"Metrics\" lists them all): an aligned table by default (columns as wide as their\n"
           "names; \"-\" where an iteration did not record the metric, \"nan\" where it recorded a\n"
           "NaN), CSV (iteration,NAME,…) with --csv, or a JSON array of {\"iteration\": K, NAME:\n"
           "value, …} with --json (both: empty / null for either); --csv and --json exclude each\n"
           "other.\n");
    return RL_EXIT_OK;
  }
  int i = 1, csv = 0, json = 0;
  const char *dir = one_dir("metrics", argc, argv, &i, NULL);
  if (!dir) return RL_EXIT_USAGE;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "--csv")) csv = 1;
    else if (!strcmp(argv[i], "--json")) json = 1;
    else {
      fprintf(stderr, "rlrun metrics: unknown option '%s' (--csv or --json)\n", argv[i]);
      return RL_EXIT_USAGE;
    }
  }
  if (csv && json) {
    fprintf(stderr, "rlrun metrics: --csv and --json exclude each other: pass one (no option: a table)\n");
    return RL_EXIT_USAGE;
  }
  store *s;
  store_run run;
  int rc = open_run("metrics", dir, &s, &run);
  if (rc) return rc;
  rl_err e;
  metric_table t = {0};
  rc = store_metric_names(s, &t.names, &t.n_names, &e);
  if (!rc) rc = store_metrics_each(s, NULL, metric_collect, &t, &e);
  if (rc) fprintf(stderr, "rlrun metrics: %s\n", e.msg);
  for (int r = 0; !rc && r <= t.n_iters; r++) {
    if (json) {
      if (r == t.n_iters) { printf("%s]\n", t.n_iters ? "\n" : "["); break; }
      printf("%s{\"iteration\": %lld", r ? ",\n " : "[", (long long)t.iters[r]);
      for (int j = 0; j < t.n_names; j++) {
        double v = t.vals[(size_t)r * t.n_names + j];
        fputs(", ", stdout);
        print_json_name(t.names[j]);
        char num[40];
        if (isfinite(v)) printf(": %s", rl_fmt_double(v, num, sizeof num));
        else printf(": null");
      }
      printf("}");
      continue;
    }
    /* table columns as wide as their names (at least METRIC_COL, what %.6g needs) */
    if (r == 0) { /* header */
      printf(csv ? "iteration" : "%9s", "iteration");
      for (int j = 0; j < t.n_names; j++) {
        char shown[512];
        int w = text_columns(table_name(t.names[j], shown, sizeof shown));
        if (csv) {
          putchar(',');
          print_csv_name(t.names[j]);
        } else print_cell(shown, w > METRIC_COL ? w : METRIC_COL);
      }
      printf("\n");
    }
    if (r == t.n_iters) break;
    printf(csv ? "%lld" : "%9lld", (long long)t.iters[r]);
    for (int j = 0; j < t.n_names; j++) {
      double v = t.vals[(size_t)r * t.n_names + j];
      if (csv) {
        char num[40];
        isnan(v) ? printf(",") : printf(",%s", rl_fmt_double(v, num, sizeof num));
        continue;
      }
      char cell[64], shown[512];
      int w = text_columns(table_name(t.names[j], shown, sizeof shown));
      metric_cell(cell, sizeof cell, v, t.have[(size_t)r * t.n_names + j]);
      print_cell(cell, w > METRIC_COL ? w : METRIC_COL);
    }
    printf("\n");
  }
  store_strings_free(t.names, t.n_names);
  free(t.iters), free(t.vals), free(t.have);
  store_run_free(&run);
  store_close(s);
  return rc;
}

/* The length of the valid UTF-8 character at s (1..4), or 0 when the bytes
 * there are not one (a stray or truncated sequence). */
static int utf8_len(const unsigned char *s) {
  unsigned c = s[0];
  int n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
  if (n == 0 || (n == 2 && c < 0xc2) || (n == 4 && c > 0xf4)) return 0;
  for (int i = 1; i < n; i++)
    if ((s[i] & 0xc0) != 0x80) return 0;
  unsigned cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
  for (int i = 1; i < n; i++) cp = cp << 6 | (s[i] & 0x3f);
  if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return n;
}

void cli_print_quoted(const char *s, size_t len, size_t max) {
  const unsigned char *p = (const unsigned char *)(s ? s : "");
  size_t at = 0;
  putchar('"');
  while (at < len) {
    int n = utf8_len(p + at);
    if (at + (size_t)(n ? n : 1) > max) break;
    unsigned c = p[at];
    if (n == 0) printf("\\x%02X", c);
    else if (c == '\\') fputs("\\\\", stdout);
    else if (c == '"') fputs("\\\"", stdout);
    else if (c == '\n') fputs("\\n", stdout);
    else if (c == '\t') fputs("\\t", stdout);
    else if (c == '\r') fputs("\\r", stdout);
    else if (c < 0x20 || c == 0x7f) printf("\\x%02X", c);
    else if (n == 2 && c == 0xc2 && p[at + 1] < 0xa0) printf("\\u00%02X", p[at + 1] & 0xff);
    else fwrite(p + at, 1, (size_t)n, stdout);
    at += n ? (size_t)n : 1;
  }
  putchar('"');
  if (at < len) printf("…(+%zu byte%s)", len - at, len - at == 1 ? "" : "s");
}

static void print_flat(const char *s, size_t max) { cli_print_quoted(s, s ? strlen(s) : 0, max); }

/* An array of n ids as JSON. */
static json_t *json_ints(const int32_t *v, int n) {
  json_t *a = json_array();
  for (int i = 0; v && i < n; i++) json_array_append_new(a, json_integer(v[i]));
  return a;
}

/* A text as a JSON string: bytes that are not UTF-8 (none should be stored:
 * completions are made valid) become U+FFFD rather than dropping the field. */
static json_t *json_text(const char *t) {
  json_t *j = json_string(t ? t : "");
  if (j) return j;
  char *fixed = rl_xstrdup(t);
  tokenizer_fix_utf8(&fixed);
  j = json_string(fixed);
  free(fixed);
  return j ? j : json_string("");
}

/* One sample as a JSON line (samples --json): numbers with 17 significant
 * digits (the stored double or FP32 value exactly); a non-finite one is null. */
static void print_sample_json(const store_sample *x) {
  json_t *o = json_object();
  json_object_set_new(o, "iteration", json_integer(x->iteration));
  json_object_set_new(o, "prompt_index", json_integer(x->prompt_index));
  json_object_set_new(o, "sample_index", json_integer(x->sample_index));
  json_object_set_new(o, "prompt", json_text(x->prompt));
  json_object_set_new(o, "completion", json_text(x->completion));
  json_object_set_new(o, "prompt_tokens", json_ints(x->prompt_tokens, x->n_prompt_tokens));
  json_object_set_new(o, "tokens", json_ints(x->tokens, x->n_tokens));
  json_t *lp = json_array();
  for (int i = 0; x->logprobs && i < x->n_logprobs; i++)
    json_array_append_new(lp, isfinite(x->logprobs[i]) ? json_real((double)x->logprobs[i]) : json_null());
  json_object_set_new(o, "logprobs", lp);
  json_object_set_new(o, "reward", isfinite(x->reward) ? json_real(x->reward) : json_null());
  json_object_set_new(o, "finish_reason", x->finish_reason ? json_string(x->finish_reason) : json_null());
  json_t *f = x->extra_json ? json_loads(x->extra_json, 0, NULL) : NULL;
  json_object_set_new(o, "fields", json_is_object(f) ? f : json_object());
  if (f && !json_is_object(f)) json_decref(f);
  /* MoE: the R3 record, one list a token (prompt, then completion) of its
   * route_layers x top-k expert ids, layer by layer in the router's order */
  const int64_t nt = (int64_t)x->n_prompt_tokens + x->n_tokens;
  const size_t n_ids = x->routed_experts_bytes / 4;
  if (x->routed_experts && nt > 0 && n_ids % (size_t)nt == 0 && n_ids) {
    const int32_t *ids = x->routed_experts;
    const int per = (int)(n_ids / (size_t)nt);
    json_t *re = json_array();
    for (int64_t t = 0; t < nt; t++) json_array_append_new(re, json_ints(ids + t * per, per));
    json_object_set_new(o, "routed_experts", re);
  }
  char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
  if (line) puts(line);
  free(line);
  json_decref(o);
}

int cmd_samples(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun samples RUNDIR [--iter K] [--top N] [--full | --json]\n\n"
           "The committed samples: iteration, prompt (its position in the data stream), sample,\n"
           "reward, finish reason, prompt and completion. --iter K: one iteration (default: the\n"
           "latest with samples); --top N: the N highest rewards (of iteration K, or of the whole\n"
           "run without --iter); K and N are 1 or more. An iteration without samples is an error\n"
           "(exit 2) that names the run's last iteration with samples.\n\n"
           "Texts are quoted on one line: \\\\ \\\" \\n \\t \\r escaped, other control characters and\n"
           "bytes that are not UTF-8 as \\xNN (C1 controls \\u00NN). At most 60 bytes of a prompt and\n"
           "120 of a completion are shown, cut between characters; a cut text is followed by\n"
           "\"…(+N bytes)\", N the bytes left out. --full: the whole texts.\n"
           "--json: one JSON object per sample and line (JSONL), everything stored: iteration,\n"
           "prompt_index, sample_index, prompt, completion, prompt_tokens, tokens, logprobs (the\n"
           "rollout's, one per completion token), reward (null: not scored), finish_reason,\n"
           "fields (the prompt's other fields, as the reward saw them), and for a MoE model\n"
           "routed_experts: a list per token (prompt, then completion) of the expert ids it was\n"
           "routed to, num_experts_per_tok of them for each MoE layer in layer order (R3's record).\n");
    return RL_EXIT_OK;
  }
  int i = 1;
  long long iter = -1, top = 0;
  const char *dir = one_dir("samples", argc, argv, &i, (const char *const[]){"--iter", "--top", NULL});
  if (!dir) return RL_EXIT_USAGE;
  size_t cut_prompt = 60, cut_completion = 120;
  int as_json = 0;
  for (; i < argc; i++) {
    const char *opt = argv[i];
    if (!strcmp(opt, "--full")) {
      cut_prompt = cut_completion = SIZE_MAX;
      continue;
    }
    if (!strcmp(opt, "--json")) {
      as_json = 1;
      continue;
    }
    int is_iter = !strcmp(opt, "--iter");
    if (!is_iter && strcmp(opt, "--top")) {
      fprintf(stderr, "rlrun samples: unknown option '%s' (--iter K, --top N, --full, --json)\n", opt);
      return RL_EXIT_USAGE;
    }
    const char *what = is_iter ? "K: an iteration, counted from 1" : "N: how many samples, 1 or more";
    if (i + 1 >= argc) {
      fprintf(stderr, "rlrun samples: %s needs a value (%s)\n", opt, what);
      return RL_EXIT_USAGE;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(argv[++i], &end, 10);
    if (end != argv[i] && !*end && errno == ERANGE) { /* whole, but past long long */
      if (!is_iter && v > 0) { /* --top more than there can be: every sample */
        top = INT_MAX;
        continue;
      }
      fprintf(stderr, "rlrun samples: %s '%s' is out of range (%s)\n", opt, argv[i], what);
      return RL_EXIT_USAGE;
    }
    if (end == argv[i] || *end || errno) {
      fprintf(stderr, "rlrun samples: %s '%s' is not a whole number (%s)\n", opt, argv[i], what);
      return RL_EXIT_USAGE;
    }
    if (v < 1) {
      if (is_iter)
        fprintf(stderr, "rlrun samples: --iter %lld: iterations count from 1; give K >= 1, or leave --iter out "
                "for the latest iteration with samples\n", v);
      else
        fprintf(stderr, "rlrun samples: --top %lld: N must be 1 or more (the N highest rewards); leave --top out "
                "for every sample of the iteration shown (--iter K, default the latest)\n", v);
      return RL_EXIT_USAGE;
    }
    if (is_iter) iter = v;
    else top = v > INT_MAX ? INT_MAX : v;
  }
  if (as_json && cut_prompt == SIZE_MAX) {
    fprintf(stderr, "rlrun samples: --full and --json exclude each other (--json holds the whole texts)\n");
    return RL_EXIT_USAGE;
  }
  store *s;
  store_run run;
  int rc = open_run("samples", dir, &s, &run);
  if (rc) return rc;
  rl_err e;
  if (iter >= 0 || !top) { /* the iterations with samples: the default (the latest), and --iter's range */
    store_sample_query q = {.iteration = -1, .order = STORE_ORDER_INDEX};
    store_sample_list l = {0};
    long long first = -1, last = -1;
    if ((rc = store_samples_query(s, &q, &l, &e))) {
      fprintf(stderr, "rlrun samples: %s\n", e.msg);
    } else if (l.n) {
      first = l.v[0].iteration, last = l.v[l.n - 1].iteration;
      for (int j = 0; j < l.n; j++) {
        if (l.v[j].iteration < first) first = l.v[j].iteration;
        if (l.v[j].iteration > last) last = l.v[j].iteration;
      }
    }
    int64_t in_iter = 0;
    if (!rc && iter >= 0 && (iter < first || iter > last || (!store_samples_count(s, iter, &in_iter, &e) && !in_iter))) {
      if (last < 0)
        fprintf(stderr, "rlrun samples: --iter %lld: run %s has no samples%s\n", iter, dir,
                stored_is_sft(run.recipe_resolved) ? " (an sft run trains on its data and samples nothing)" : " yet");
      else
        fprintf(stderr, "rlrun samples: --iter %lld: run %s has no samples in iteration %lld; its last iteration "
                "with samples is %lld (samples in iterations %lld..%lld)\n", iter, dir, iter, last, first, last);
      rc = RL_EXIT_USAGE;
    }
    if (iter < 0) iter = last;
    store_sample_list_free(&l);
    if (rc) {
      store_run_free(&run);
      store_close(s);
      return rc;
    }
  }
  store_sample_query q = {.iteration = iter, .order = top ? STORE_ORDER_REWARD_DESC : STORE_ORDER_INDEX,
                          .limit = (int)top, .with_blobs = as_json};
  store_sample_list l = {0};
  if ((rc = store_samples_query(s, &q, &l, &e))) {
    fprintf(stderr, "rlrun samples: %s\n", e.msg);
  } else if (as_json) {
    for (int j = 0; j < l.n; j++) print_sample_json(&l.v[j]);
  } else {
    printf("%5s %7s %6s %9s %-7s %s\n", "ITER", "PROMPT", "SAMPLE", "REWARD", "FINISH", "PROMPT -> COMPLETION");
    for (int j = 0; j < l.n; j++) {
      const store_sample *x = &l.v[j];
      /* 4 decimals where they tell; a reward too large for the column or too small for them in %g */
      double a = fabs(x->reward);
      const char *rf = a == 0 || (a >= 1e-3 && a < 1e4) || a != a ? "%5lld %7lld %6d %9.4f %-7s " : "%5lld %7lld %6d %9.3g %-7s ";
      printf(rf, (long long)x->iteration, (long long)x->prompt_index, x->sample_index, x->reward,
             x->finish_reason ? x->finish_reason : "-");
      print_flat(x->prompt, cut_prompt);
      printf(" -> ");
      print_flat(x->completion, cut_completion);
      printf("\n");
    }
    if (!l.n)
      printf("(no samples%s)\n", iter >= 0                              ? " in that iteration"
                                 : stored_is_sft(run.recipe_resolved) ? ": an sft run trains on its data and samples nothing"
                                                                      : " yet");
  }
  store_sample_list_free(&l);
  store_run_free(&run);
  store_close(s);
  return rc;
}

int cmd_export(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun export RUNDIR [--out FILE]\n\n"
           "A shareable, reproducible experiment: the run's resolved recipe preceded by the rlrun\n"
           "version and one '# rlrun-input: sha256 HEX PATH' line per input (model files, data,\n"
           "Lua scripts). `rlrun run FILE` checks those hashes before it starts. Written to stdout,\n"
           "or atomically to FILE.\n");
    return RL_EXIT_OK;
  }
  int i = 1;
  const char *dir = one_dir("export", argc, argv, &i, (const char *const[]){"--out", NULL}), *out = NULL;
  if (!dir) return RL_EXIT_USAGE;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "--out") && i + 1 >= argc) { /* not "unknown argument '--out'" */
      fprintf(stderr, "rlrun export: --out needs a value (FILE: where the export is written)\n");
      return RL_EXIT_USAGE;
    }
    if (!strcmp(argv[i], "--out")) out = argv[++i];
    else {
      fprintf(stderr, "rlrun export: unknown argument '%s'\n", argv[i]);
      return RL_EXIT_USAGE;
    }
  }
  rl_err e;
  if (out && rl_check_out_file("--out", out, &e)) { /* before the run is read: nothing to undo */
    fprintf(stderr, "rlrun export: %s\n", e.msg);
    return RL_EXIT_USAGE;
  }
  store *s;
  store_run run;
  int rc = open_run("export", dir, &s, &run);
  if (rc) return rc;
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  rc = runs_export(f, &run, &e);
  fclose(f);
  if (!rc && out) {
    rc = rundir_write_atomic(out, buf, len, &e);
    if (!rc) fprintf(stderr, "exported %s to %s\n", run.id, out);
  } else if (!rc) {
    fwrite(buf, 1, len, stdout);
  }
  if (rc) fprintf(stderr, "rlrun export: %s\n", e.msg);
  free(buf);
  store_run_free(&run);
  store_close(s);
  return rc;
}
