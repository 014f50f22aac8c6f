/* recipe_ckpt.c — what `model.checkpoint` names, resolved to one checkpoint
 * directory (config.json + model.safetensors), so that a run can start from
 * the output of an earlier one (SFT warm start → RL):
 *   1. a checkpoint directory                      runs/sft-1234/checkpoints/step-000040
 *   2. a run directory: its newest checkpoint      runs/sft-demo-cpu-20250101T000000Z-ab12
 *   3. RUNS/NAME that does not exist: the newest run directory RUNS/NAME-<id>
 *      (<id> exactly as rundir_make_id writes it, YYYYMMDDTHHMMSSZ-hhhh, so
 *      that runs of another name such as NAME-7b-<id> never match; ids start
 *      with the UTC start time, so the greatest id is the newest run) that
 *      holds a checkpoint                         runs/sft-demo-cpu
 * A checkpoint directory counts when its manifest, config and weights are all
 * there (ckpt_write renames the finished directory into place). */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runner/recipe.h"
#include "state/ckpt.h"

/* 1 when DIR/NAME exists. */
static int rc_has(const char *dir, const char *name) {
  char p[4400];
  struct stat st;
  if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p) return 0;
  return stat(p, &st) == 0;
}

/* 1 when dir is a complete checkpoint directory. */
static int rc_is_ckpt(const char *dir) {
  return rc_has(dir, CKPT_CONFIG) && rc_has(dir, CKPT_WEIGHTS) && rc_has(dir, CKPT_MANIFEST);
}

/* qsort: descending strings. */
static int rc_desc(const void *a, const void *b) { return strcmp(*(char *const *)b, *(char *const *)a); }

/* 1 when s is a run id's suffix as rundir_make_id writes it:
 * YYYYMMDDTHHMMSSZ-hhhh (lowercase hex), nothing after it. */
static int rc_is_run_id(const char *s) {
  static const char pat[] = "ddddddddTddddddZ-hhhh";
  for (int i = 0; pat[i]; i++) {
    char c = s[i];
    if (pat[i] == 'd' ? !(c >= '0' && c <= '9')
        : pat[i] == 'h' ? !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))
                        : c != pat[i])
      return 0;
  }
  return s[sizeof pat - 1] == 0;
}

/* The entries of dir whose name is prefix followed by a digit (checkpoints:
 * "step-" digits) or, with run_ids, by a run id (rc_is_run_id), newest
 * (greatest) first. */
static char **rc_list(const char *dir, const char *prefix, int run_ids, int *n) {
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) return NULL;
  char **v = NULL;
  int cap = 0;
  size_t lp = strlen(prefix);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (strncmp(de->d_name, prefix, lp) || de->d_name[lp] < '0' || de->d_name[lp] > '9') continue;
    if (run_ids && !rc_is_run_id(de->d_name + lp)) continue;
    if (*n == cap) v = rl_xrealloc(v, (size_t)(cap = cap ? 2 * cap : 8) * sizeof *v);
    v[(*n)++] = strdup(de->d_name);
  }
  closedir(d);
  if (*n) qsort(v, (size_t)*n, sizeof *v, rc_desc);
  return v;
}

static void rc_list_free(char **v, int n) {
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* The newest complete checkpoint of run directory run (malloc'd) or NULL. */
static char *rc_run_latest(const char *run) {
  char sub[4200];
  if (snprintf(sub, sizeof sub, "%s/" CKPT_SUBDIR, run) >= (int)sizeof sub) return NULL;
  int n = 0;
  char **v = rc_list(sub, "step-", 0, &n), *found = NULL;
  for (int i = 0; i < n && !found; i++) {
    char p[4400];
    if (snprintf(p, sizeof p, "%s/%s", sub, v[i]) < (int)sizeof p && rc_is_ckpt(p)) found = strdup(p);
  }
  rc_list_free(v, n);
  return found;
}

/* The checkpoint a run resolved at its start (recipe_checkpoint_pin), NULL when none. */
static _Thread_local char *rc_pin;

void recipe_checkpoint_pin(const char *exact) {
  free(rc_pin);
  rc_pin = exact ? strdup(exact) : NULL;
}

/* 1 when the pinned checkpoint is one `given` can name: a checkpoint of the
 * run directory given, or of a run given/NAME-<id> (RUNS/NAME); compared as
 * real paths. */
static int rc_pin_fits(const char *given) {
  char pin[PATH_MAX], base[PATH_MAX], parent[4200];
  if (!rc_pin || !realpath(rc_pin, pin) || !rc_is_ckpt(pin)) return 0;
  char *step = strstr(pin, "/" CKPT_SUBDIR "/step-");
  if (!step || strchr(step + strlen(CKPT_SUBDIR) + 2, '/')) return 0;
  *step = 0; /* pin: its run directory */
  if (realpath(given, base)) return !strcmp(base, pin); /* a run directory */
  const char *slash = strrchr(given, '/'); /* RUNS/NAME: pin is RUNS/NAME-<id> */
  snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash - given) : 1, slash ? given : ".");
  if (!realpath(parent[0] ? parent : "/", base)) return 0;
  const char *name = slash ? slash + 1 : given, *run = strrchr(pin, '/');
  size_t bl = strlen(base), nl = strlen(name);
  return run && (size_t)(run - pin) == bl && !strncmp(pin, base, bl) && !strncmp(run + 1, name, nl) &&
         run[1 + nl] == '-' && rc_is_run_id(run + 2 + nl);
}

char *recipe_resolve_checkpoint(const char *given) {
  struct stat st;
  if (rc_pin_fits(given)) return strdup(rc_pin); /* resume: the checkpoint the run started from, not a newer one */
  if (stat(given, &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return NULL;
    if (rc_has(given, CKPT_CONFIG)) return strdup(given);
    return rc_run_latest(given);
  }
  /* RUNS/NAME → the newest RUNS/NAME-<id> with a checkpoint */
  char parent[4200], prefix[512];
  const char *slash = strrchr(given, '/');
  if (slash) snprintf(parent, sizeof parent, "%.*s", (int)(slash - given), given);
  else snprintf(parent, sizeof parent, ".");
  if (!parent[0]) snprintf(parent, sizeof parent, "/");
  snprintf(prefix, sizeof prefix, "%s-", slash ? slash + 1 : given);
  int n = 0;
  char **v = rc_list(parent, prefix, 1, &n), *found = NULL;
  for (int i = 0; i < n && !found; i++) {
    char p[4400];
    if (snprintf(p, sizeof p, "%s/%s", parent, v[i]) < (int)sizeof p) found = rc_run_latest(p);
  }
  rc_list_free(v, n);
  return found;
}
