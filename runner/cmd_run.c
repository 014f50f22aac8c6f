/* cmd_run.c — `rlrun run` (a new run directory from a recipe) and `rlrun
 * resume` (continue a run exactly where it stopped). The loop itself is
 * runner/loop.c; the run directory helpers are runner/runs.c. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runner/cli.h"
#include "runner/loop.h"
#include "runner/runs.h"
#include "state/ckpt.h"
#include "state/ckpt_dir.h"
#include "state/rundir.h"

#define RUN_MAX_SETS 64

/* Refuse what this machine or build cannot run: a GPU recipe needs a GPU
 * and a CUDA build (the run loop then uses the CUDA backends, runner/loop_gpu.c). */
static int run_check_hardware(recipe *r, rl_err *e) {
  hw_target t;
  int emulated = 0;
  hw_target_detect(&t);
  if (r->device == DEVICE_CUDA && t.cls == HW_CPU)
    return rl_errf(e, RL_EXIT_HARDWARE, "%s: no GPU found (%s), but the recipe says device: cuda; "
                   "set `device: cpu` (or --set device=cpu) to run the CPU reference",
                   r->file ? r->file : "recipe", t.note[0] ? t.note : "this machine has none");
  int rc = recipe_check_hardware(r, &t, &emulated, e);
  if (rc) return rc;
  if (recipe_run_class(r, &t) != HW_CPU && !RLRUN_CUDA)
    return rl_errf(e, RL_EXIT_HARDWARE,
                   "%s: this recipe would run on the GPU (%s), but this binary was built without CUDA; "
                   "rebuild with nvcc available, or set `device: cpu` (or --set device=cpu) to run the CPU reference",
                   r->file ? r->file : "recipe", t.name);
  return 0;
}

/* The recipe file's absolute path for run.json: its directory made absolute
 * (realpath), its own name kept. Not realpath of the file: a recipe reached
 * through a symbolic link resolves its relative paths and base: against the
 * link's directory (where it was loaded from), and resume must load it the
 * same way from any working directory. malloc'd; NULL when the directory does
 * not resolve. */
static char *run_recipe_abs(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? rl_xstrdup(path) : rl_xstrdup(".");
  if (slash) dir[slash == path ? 1 : slash - path] = 0;
  char *real = realpath(dir, NULL);
  free(dir);
  if (!real) return NULL;
  const char *base = slash ? slash + 1 : path;
  char *out = rl_xmalloc(strlen(real) + strlen(base) + 2);
  sprintf(out, "%s%s%s", real, strcmp(real, "/") ? "/" : "", base);
  free(real);
  return out;
}

/* Progress display: a status line on a terminal, plain lines otherwise (RLRUN_PROGRESS=0|1 overrides). */
static loop_opts run_loop_opts(int quiet) {
  loop_opts o = {.progress = rl_env_bool("RLRUN_PROGRESS", isatty(2)), .log = stderr, .quiet = quiet};
  return o;
}

/* Run the loop under the signal handlers and report the outcome. */
static int run_loop(const char *dir, store *s, const recipe *r, int quiet, const loop_resume *rp, int changed) {
  rl_err e;
  loop_opts o = run_loop_opts(quiet);
  o.resume = rp, o.changed = changed;
  int rc = loop_run(dir, s, r, &o, &e);
  if (rc) {
    /* what comes next depends on the failure: a runtime failure (1) resumes as
     * it is; bad input (2: data, a task's output, the recipe) fails the same
     * way again until it is fixed, and a fixed input is a change resume
     * refuses without --allow-changed */
    char hint[4400] = "";
    if (rc == RL_EXIT_FAIL)
      snprintf(hint, sizeof hint, "the run stays resumable: rlrun resume %s (where a reward or task script "
               "raised the error, fix it first: resume then sees the changed script and needs --allow-changed)", dir);
    else if (rc == RL_EXIT_USAGE)
      snprintf(hint, sizeof hint, "the run stopped on bad input, and a resume as it is fails the same way: fix the "
               "input (or the recipe), then `rlrun resume %s --allow-changed` continues from what is committed", dir);
    else if (rc == RL_EXIT_HARDWARE)
      snprintf(hint, sizeof hint, "the run stays resumable on a machine that can run it: rlrun resume %s", dir);
    fprintf(stderr, "rlrun: %s\n", e.msg);
    loop_log_append(dir, "rlrun: %s", e.msg);
    if (hint[0]) {
      fprintf(stderr, "rlrun: %s\n", hint);
      loop_log_append(dir, "rlrun: %s", hint);
    }
    return rc;
  }
  printf("run complete: %s (%lld iteration%s)\n", dir, (long long)r->loop.iterations, r->loop.iterations == 1 ? "" : "s");
  loop_log_append(dir, "run complete: %s (%lld iteration%s)", dir, (long long)r->loop.iterations,
                  r->loop.iterations == 1 ? "" : "s");
  return 0;
}

/* Write recipe.yaml, recipe.resolved.yaml and run.json into a new run directory.
 * run.json keeps the working directory too: overrides with relative paths
 * (--set reward.script=lua/x.lua) name files relative to it, and resume
 * resolves them there whatever its own working directory. */
static int run_write_files(const char *dir, const char *text, const char *resolved, const char *recipe_path,
                           const char *const *sets, int n_sets, rl_err *e) {
  char path[4200];
  snprintf(path, sizeof path, "%s/" RUNS_RECIPE, dir);
  if (rundir_write_atomic(path, text, strlen(text), e)) return e->code;
  snprintf(path, sizeof path, "%s/" RUNS_RESOLVED, dir);
  if (rundir_write_atomic(path, resolved, strlen(resolved), e)) return e->code;
  json_t *o = json_pack("{s:s,s:[]}", "recipe_path", recipe_path, "overrides");
  char *cwd = getcwd(NULL, 0);
  if (cwd) json_object_set_new(o, "cwd", json_string(cwd));
  free(cwd);
  for (int i = 0; i < n_sets; i++) json_array_append_new(json_object_get(o, "overrides"), json_string(sets[i]));
  char *js = json_dumps(o, JSON_INDENT(2));
  json_decref(o);
  snprintf(path, sizeof path, "%s/" RUNS_INFO, dir);
  int rc = rundir_write_atomic(path, js, strlen(js), e);
  free(js);
  return rc;
}

/* 1 when schema key k is a path key that the --set `set` names, itself or as
 * a section holding it (data={prompts: …} names data.prompts). */
static int set_names_path_key(const char *set, int k) {
  size_t kl = strcspn(set, "=");
  const char *kp = recipe_schema_path(k);
  return recipe_key_is_path(k) && !strncmp(kp, set, kl) && (!kp[kl] || kp[kl] == '.');
}

/* 1 when a --set names a path key, or a section holding one. */
static int sets_name_paths(const char *const *sets, int n) {
  for (int i = 0; i < n; i++)
    for (int k = 0; k < recipe_schema_count(); k++)
      if (set_names_path_key(sets[i], k)) return 1;
  return 0;
}

int cmd_run(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun run RECIPE [--set KEY=VALUE]... [--name NAME] [--runs-dir DIR] [--quiet]\n\n"
           "Start a run: validate the recipe (as `rlrun validate`), create RUNS_DIR/NAME-ID/ with\n"
           "state.db, the recipe as given and resolved, checkpoints/ and logs/, then execute the\n"
           "plan: convert, then rollout -> reward -> train -> sync per iteration, checkpoints every\n"
           "loop.checkpoint_interval iterations and after the last. Every finished step is committed\n"
           "to SQLite: kill it anywhere and `rlrun resume DIR` ends bit-identical.\n"
           "A recipe written by `rlrun export` has its inputs' sha256 checked first.\n\n"
           "  --set KEY=VALUE   override a recipe key (repeatable)\n"
           "  --name NAME       run name (default: the recipe's name)\n"
           "  --runs-dir DIR    where run directories go (default: runs)\n"
           "  --quiet           no per-iteration lines (logs/run.log still gets them)\n\n"
           "Progress: a status line on a terminal (stage, iteration, rate, ETA, reward, mismatch),\n"
           "plain lines otherwise; logs/run.log gets the plain lines and how the run ended.\n"
           "SIGINT/SIGTERM stop at the next step boundary: exit 130, resumable.\n"
           "exit codes: 0 complete, 1 a stage failed (resumable), 2 invalid recipe or data (found\n"
           "mid-run: fix it, then resume --allow-changed), 3 not runnable here, 4 exported inputs\n"
           "differ, 130 interrupted.\n");
    return RL_EXIT_OK;
  }
  /* From here on SIGINT/SIGTERM only ask the loop to stop at its next step boundary,
   * also while the run directory is being created (the default action would kill a
   * half-started run with 143 instead of 130). */
  loop_install_signals();
  const char *path = NULL, *name = NULL, *runs_dir = "runs";
  const char *sets[RUN_MAX_SETS];
  int n_sets = 0, quiet = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    /* said as validate says it: "unexpected argument '--set'" did not tell what was wrong */
    if ((!strcmp(a, "--name") || !strcmp(a, "--runs-dir")) && i + 1 >= argc) {
      fprintf(stderr, "rlrun run: %s needs a value; see `rlrun run --help`\n", a);
      return RL_EXIT_USAGE;
    }
    const int set = cli_take_set("run", argc, argv, &i, sets, &n_sets, RUN_MAX_SETS);
    if (set < 0) return RL_EXIT_USAGE;
    if (set) continue;
    if (!strcmp(a, "--name")) name = argv[++i];
    else if (!strcmp(a, "--runs-dir")) runs_dir = argv[++i];
    else if (!strcmp(a, "--quiet")) quiet = 1;
    else if (a[0] == '-' || path) {
      fprintf(stderr, "rlrun run: unexpected argument '%s'; see `rlrun run --help`\n", a);
      return RL_EXIT_USAGE;
    } else path = a;
  }
  if (!path) {
    fprintf(stderr, "rlrun run: missing RECIPE; usage: rlrun run RECIPE [--set K=V]... [--name N] [--runs-dir D] [--quiet]\n");
    return RL_EXIT_USAGE;
  }
  if (!*runs_dir) {
    fprintf(stderr, "rlrun run: --runs-dir is empty: give the directory for run directories (default: runs; "
            "'.' for the current directory)\n");
    return RL_EXIT_USAGE;
  }
  rl_err e;
  char *text = NULL, *resolved = NULL, *hashes = NULL, *abs = NULL;
  size_t len;
  recipe r;
  memset(&r, 0, sizeof r);
  store *s = NULL;
  int lock = -1, rc = rl_read_file(path, &text, &len, &e);
  /* an exported recipe: its inputs by path, or, with --set values that move inputs, by contents once loaded */
  int moves = sets_name_paths(sets, n_sets);
  if (!rc && !moves) rc = runs_check_export(path, text, &e);
  int export_moved = 0; /* an export with some inputs moved (--set): say how to point the others */
  if (!rc && (rc = recipe_load(path, sets, n_sets, &r, &e)) && moves)
    export_moved = strstr(text, "# rlrun-input: sha256 ") != NULL;
  if (!rc) rc = run_check_hardware(&r, &e);
  if (!rc) rc = runs_canonical_recipe(&r, &e);
  if (!rc) rc = runs_input_hashes(&r, &hashes, &e);
  if (!rc && moves) rc = runs_check_export_content(path, text, &r, hashes, &e);
  if (!rc && name) rc = rundir_check_name(name, &e);
  if (!rc && loop_stop_requested()) /* during the validation (a large data file): no run is made */
    rc = rl_errf(&e, RL_EXIT_INTERRUPT, "interrupted while the recipe was checked; no run directory was made");
  /* The run directory is built under RUNS_DIR/.init/ and renamed into place
   * once its store holds the run row: a kill during creation leaves no
   * half-made run behind (only a hidden leftover under .init/). */
  char dir[4096] = "", tmp[4096] = "", init[4096];
  snprintf(init, sizeof init, "%s/.init", runs_dir);
  struct stat rst;
  if (!rc && stat(runs_dir, &rst) == 0 && !S_ISDIR(rst.st_mode))
    rc = rl_errf(&e, RL_EXIT_USAGE, "--runs-dir %s is %s, not a directory; name a directory (one that does not "
                 "exist yet is created)", runs_dir, rl_file_kind(rst.st_mode));
  if (!rc) {
    resolved = runs_resolved_text(&r);
    abs = run_recipe_abs(path);
    rc = rundir_create(init, name ? name : r.name, tmp, sizeof tmp, &e);
  }
  if (!rc) rc = run_write_files(tmp, text, resolved, abs ? abs : path, sets, n_sets, &e);
  const char *id = strrchr(tmp, '/') ? strrchr(tmp, '/') + 1 : tmp;
  char db[4200];
  if (!rc) {
    snprintf(db, sizeof db, "%s/" RUNS_DB, tmp);
    s = store_open(db, 1, &e);
    if (!s) rc = e.code;
  }
  if (!rc) {
    store_run run = {.id = (char *)id, .name = name ? (char *)name : r.name, .recipe = text,
                     .recipe_resolved = resolved, .input_hashes = hashes};
    rc = store_run_init(s, &run, &e);
    store_close(s);
    s = NULL;
  }
  /* locked before it appears under its name: no resume can slip in between */
  if (!rc && (lock = runs_lock(tmp, &e)) < 0) rc = e.code;
  if (!rc) {
    snprintf(dir, sizeof dir, "%s/%s", runs_dir, id);
    if (rename(tmp, dir) != 0)
      rc = rl_errf(&e, RL_EXIT_FAIL, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
    else
      rc = rundir_fsync_dir(runs_dir, &e);
  }
  if (!rc) {
    snprintf(db, sizeof db, "%s/" RUNS_DB, dir);
    s = store_open(db, 0, &e);
    if (!s) rc = e.code;
  }
  if (rc && tmp[0] && !dir[0]) {
    rl_err ignore;
    ckpt_dir_remove(tmp, &ignore); /* the half-made directory never became a run */
  }
  if (rc) {
    fprintf(stderr, "rlrun run: %s\n", e.msg);
    if (export_moved)
      fprintf(stderr, "rlrun run: %s is an exported run: its inputs are named where they were; give each one that "
              "moved its new place with --set (model.path, tokenizer.path, data.prompts, data.task, reward.script)\n",
              path);
  } else {
    printf("run directory: %s\n", dir);
    fflush(stdout);
    loop_log_append(dir, "run directory: %s", dir);
    rc = run_loop(dir, s, &r, quiet, NULL, 0);
  }
  if (s) store_close(s);
  if (lock >= 0) close(lock);
  recipe_free(&r);
  free(text), free(resolved), free(hashes), free(abs);
  return rc;
}

/* What changed since the run started: the recipe file (re-resolved with the
 * same overrides) and the input files. *fresh gets the re-resolved recipe
 * when it loads. Returns the number of changes; *report lists them. */
static int resume_changes(const char *dir, const store_run *run, recipe *fresh, int *have_fresh, char **fresh_text,
                          char **fresh_hashes, char **report) {
  int n = runs_inputs_changed(run->input_hashes, report);
  *have_fresh = 0;
  char path[4200];
  snprintf(path, sizeof path, "%s/" RUNS_INFO, dir);
  json_t *info = json_load_file(path, 0, NULL);
  const char *rp = json_string_value(json_object_get(info, "recipe_path"));
  /* relative override paths: against the directory the run was started in (runs
   * written before run.json kept it: the working directory now, as before) */
  const char *cwd = json_string_value(json_object_get(info, "cwd"));
  if (rp && access(rp, R_OK) == 0) {
    json_t *ov = json_object_get(info, "overrides");
    int n_sets = (int)json_array_size(ov);
    const char **sets = rl_xcalloc((size_t)n_sets + 1, sizeof *sets);
    for (int i = 0; i < n_sets; i++) sets[i] = json_string_value(json_array_get(ov, (size_t)i));
    rl_err e;
    /* model.checkpoint: RUNS/NAME (or a run directory) resolves to the checkpoint the run started from,
     * not to a newer run of that name made since (it was "recipe changed in model: checkpoint") */
    recipe stored;
    if (runs_load_stored(dir, run->recipe_resolved, NULL, 0, RECIPE_NO_FS, &stored, &e) == 0) {
      recipe_checkpoint_pin(stored.model.checkpoint);
      recipe_free(&stored);
    }
    int loaded = recipe_load_at(rp, sets, n_sets, cwd, fresh, &e) == 0;
    recipe_checkpoint_pin(NULL);
    if (loaded) runs_compat_stored(fresh, run->recipe_resolved);
    if (!loaded || runs_canonical_recipe(fresh, &e)) {
      size_t old = *report ? strlen(*report) : 0, add = strlen(rp) + strlen(e.msg) + 64;
      *report = rl_xrealloc(*report, old + add);
      snprintf(*report + old, add, "  recipe %s no longer loads: %s\n", rp, e.msg);
      recipe_free(fresh);
      n++;
    } else {
      *have_fresh = 1;
      *fresh_text = runs_resolved_text(fresh);
      n += runs_recipe_changed(run->recipe_resolved, *fresh_text, report);
      rl_err he;
      if (runs_input_hashes(fresh, fresh_hashes, &he)) *fresh_hashes = NULL;
    }
    free(sets);
  }
  json_decref(info);
  return n;
}

static int resume_complete(const char *dir, store *s, int64_t iterations);

/* The key of a "key=value" override (into buf). */
static const char *set_key(const char *set, char *buf, size_t n) {
  const char *eq = strchr(set, '=');
  size_t l = eq ? (size_t)(eq - set) : strlen(set);
  snprintf(buf, n, "%.*s", (int)(l < n ? l : n - 1), set);
  return buf;
}

/* run.json's overrides += sets, path values as r resolved them (absolute): the
 * recipe file the run started from, with them, gives the run's recipe again,
 * so a later resume compares like with like. */
static int resume_record_sets(const char *dir, const recipe *r, const char *const *sets, int n, rl_err *e) {
  char path[4200], key[256];
  snprintf(path, sizeof path, "%s/" RUNS_INFO, dir);
  json_t *info = json_load_file(path, 0, NULL);
  if (!json_is_object(info)) {
    json_decref(info);
    info = json_object();
  }
  json_t *ov = json_object_get(info, "overrides");
  if (!json_is_array(ov)) json_object_set_new(info, "overrides", ov = json_array());
  for (int i = 0; i < n; i++) {
    if (!recipe_path_value(r, recipe_key_index(set_key(sets[i], key, sizeof key))))
      json_array_append_new(ov, json_string(sets[i]));
    /* the path keys it set (itself, or those under a section it set: data={prompts: p.jsonl}) as r
     * resolved them, absolute, after it: relative ones would resolve against the run's first directory */
    for (int k = 0; k < recipe_schema_count(); k++) {
      const char *kp = recipe_schema_path(k), *v = recipe_path_value(r, k);
      if (!v || !set_names_path_key(sets[i], k)) continue;
      json_t *quoted = json_string(v); /* a path as a YAML (JSON) string: any character kept */
      char *q = quoted ? json_dumps(quoted, JSON_ENCODE_ANY) : NULL;
      if (q) {
        char *kv = rl_xmalloc(strlen(kp) + strlen(q) + 2);
        sprintf(kv, "%s=%s", kp, q);
        json_array_append_new(ov, json_string(kv));
        free(kv);
      }
      free(q);
      json_decref(quoted);
    }
  }
  char *js = json_dumps(info, JSON_INDENT(2));
  json_decref(info);
  int rc = rundir_write_atomic(path, js, strlen(js), e);
  free(js);
  return rc;
}

/* resume --set: the run's stored recipe with these keys set (relative paths
 * against the working directory), into *fresh (its resolved text and input
 * hashes too), and the differences into *report. Inputs pointed at where they
 * are now, with the same contents (sha256), is a move (*moved = 1, *report
 * what moved): no change to the run. Anything else returns the number of
 * changes, for --allow-changed to accept. */
static int resume_with_sets(const char *dir, const store_run *run, const char *const *sets, int n_sets,
                            recipe *fresh, char **fresh_text, char **fresh_hashes, char **report, int *moved,
                            rl_err *e) {
  *moved = 0;
  if (runs_load_stored(dir, run->recipe_resolved, sets, n_sets, RECIPE_NO_DATA, fresh, e)) {
    rl_err_prefix(e, "the run's recipe with the --set values: ");
    return -1;
  }
  if (runs_canonical_recipe(fresh, e) || runs_input_hashes(fresh, fresh_hashes, e)) {
    recipe_free(fresh);
    return -1;
  }
  *fresh_text = runs_resolved_text(fresh);
  /* the run's recipe as stored (its inputs where they were), for the inputs' roles */
  recipe was;
  rl_err we;
  int have_was = runs_load_stored(dir, run->recipe_resolved, NULL, 0, RECIPE_NO_FS, &was, &we) == 0;
  char *keys = NULL;
  int values = 0, changed = runs_recipe_changed_ex(run->recipe_resolved, *fresh_text, &keys, &values);
  int inputs = have_was ? runs_inputs_compare(&was, run->input_hashes, fresh, *fresh_hashes, &keys) : 1;
  if (have_was) recipe_free(&was);
  *report = keys;
  if (!values && !inputs) { /* only where the inputs are changed */
    *moved = changed > 0;
    return 0;
  }
  return changed + inputs;
}

/* The stored recipe no longer validates (e is why): when inputs of it are
 * gone (a run directory copied to another machine, a model moved), a complete
 * run is said to be complete (exit 0) and any other is refused as changed
 * inputs are (exit 4), listing them; anything else keeps e. Nothing is
 * modified. */
static int resume_inputs_gone(const char *dir, store *s, const store_run *run, rl_err *e) {
  recipe shape;
  rl_err se;
  char *report = NULL;
  int ok = runs_load_stored(dir, run->recipe_resolved, NULL, 0, RECIPE_NO_FS, &shape, &se) == 0;
  /* only inputs that are gone (one changed in place that no longer validates keeps the validator's
   * FILE:LINE and exit 2: fix it, then --allow-changed) */
  int gone = ok ? runs_inputs_check(run->input_hashes, 1, &report) : 0;
  int64_t iterations = ok ? shape.loop.iterations : 0;
  if (ok) recipe_free(&shape);
  if (!gone) {
    free(report);
    return e->code;
  }
  if (resume_complete(dir, s, iterations)) {
    printf("%s: the run is already complete (%lld iteration%s, final checkpoint step-%06lld); nothing to do\n", dir,
           (long long)iterations, iterations == 1 ? "" : "s", (long long)iterations);
    fprintf(stderr, "rlrun resume: note: inputs of the run are gone since it started:\n%s", report);
    free(report);
    rl_err_clear(e);
    return 0;
  }
  rl_errf(e, RL_EXIT_STATE, "%s: inputs of the run are gone since it started:\n%snothing was done; "
          "put them back where the run's recipe names them (recipe.resolved.yaml), or point the run at where they "
          "are now: rlrun resume %s --set KEY=PATH (e.g. --set model.path=/new/place; the same contents continue "
          "the run as it is)", dir, report, dir);
  free(report);
  return RL_EXIT_STATE;
}

/* A run resume has nothing to do for: every step done and the final checkpoint's
 * directory still there (removed by hand, it is written again: resume falls back
 * to the checkpoint before it, as for any removed checkpoint). */
static int resume_complete(const char *dir, store *s, int64_t iterations) {
  if (!loop_is_complete(s, iterations)) return 0;
  char path[4400];
  struct stat st;
  ckpt_file_path(dir, iterations, NULL, path, sizeof path);
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The newest checkpoint of the run that is still there (recorded, its
 * directory present), 0 when none. */
static int64_t resume_newest_checkpoint(const char *dir, store *s) {
  int64_t *v = NULL, newest = 0;
  int n = 0;
  rl_err e;
  if (ckpt_list(s, &v, &n, &e)) return 0;
  for (int i = n - 1; i >= 0 && !newest; i--) {
    char path[4400];
    struct stat st;
    ckpt_file_path(dir, v[i], NULL, path, sizeof path);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) newest = v[i];
  }
  free(v);
  return newest;
}

int cmd_resume(int argc, char **argv) {
  if (cli_wants_help(argc, argv)) {
    printf("usage: rlrun resume RUNDIR [--set KEY=VALUE]... [--allow-changed] [--quiet]\n\n"
           "Continue a run where it stopped: load the newest complete checkpoint (sha256-verified),\n"
           "re-run the later steps, and read back rollouts already committed instead of\n"
           "regenerating them. The result is bit-identical to an uninterrupted run.\n"
           "Refuses (exit 4) when the recipe file or an input (model files, data, Lua scripts) changed\n"
           "since the run started, and prints what changed; --allow-changed continues with the changed\n"
           "ones (recorded as an event). A complete run says so and does nothing (exit 0), unless\n"
           "its final checkpoint directory was removed: that is written again.\n"
           "A checkpoint with a wrong hash stops it before anything is written (exit 4, the file\n"
           "named); remove that checkpoint's directory to resume from the one before: the removed\n"
           "checkpoints are written again. Works from any working directory.\n"
           "--set KEY=VALUE changes the run's recipe as stored (recipe.resolved.yaml; the recipe file\n"
           "the run started from is not read): a run directory copied to another machine, or inputs\n"
           "moved, is pointed at where its inputs are now (--set model.path=/new/place ...; relative\n"
           "paths against the working directory). Inputs with the same contents (sha256) are a move,\n"
           "recorded, and the run continues as it is; any other difference needs --allow-changed.\n"
           "exit codes: 0 complete, 1 a stage failed (resumable), 2 not a run directory, a bad --set,\n"
           "or bad input met again (a task's prompts: fix it, then --allow-changed), 3 not runnable\n"
           "here, 4 run state refused (corrupt state.db, changed inputs, bad checkpoint), 130\n"
           "interrupted.\n");
    return RL_EXIT_OK;
  }
  loop_install_signals(); /* as in cmd_run: a signal from now on stops at a step boundary */
  const char *dir = NULL;
  const char *sets[RUN_MAX_SETS];
  int allow = 0, quiet = 0, n_sets = 0;
  for (int i = 1; i < argc; i++) {
    const int set = cli_take_set("resume", argc, argv, &i, sets, &n_sets, RUN_MAX_SETS);
    if (set < 0) return RL_EXIT_USAGE;
    if (set) continue;
    if (!strcmp(argv[i], "--allow-changed")) allow = 1;
    else if (!strcmp(argv[i], "--quiet")) quiet = 1;
    else if (argv[i][0] == '-' || dir) {
      fprintf(stderr, "rlrun resume: unexpected argument '%s'; see `rlrun resume --help`\n", argv[i]);
      return RL_EXIT_USAGE;
    } else dir = argv[i];
  }
  if (!dir) {
    fprintf(stderr, "rlrun resume: missing RUNDIR; usage: rlrun resume RUNDIR [--set K=V]... [--allow-changed] [--quiet]\n");
    return RL_EXIT_USAGE;
  }
  rl_err e;
  /* a run directory this user cannot write (permissions, a read-only file
   * system) is read only: a complete run is said to be complete, anything
   * else is refused before the first write, naming what is not writable */
  char why[4400] = "";
  int writable = runs_writable(dir, why, sizeof why);
  store *s = writable ? runs_open_store(dir, &e) : runs_open_store_read(dir, &e);
  if (!s) {
    fprintf(stderr, "rlrun resume: cannot resume %s: %s\n", dir, e.msg);
    return e.code;
  }
  int lock = writable ? runs_lock(dir, &e) : -1;
  if (writable && lock < 0) {
    fprintf(stderr, "rlrun resume: %s\n", e.msg);
    store_close(s);
    return e.code;
  }
  store_run run;
  memset(&run, 0, sizeof run);
  recipe r, fresh;
  memset(&r, 0, sizeof r);
  memset(&fresh, 0, sizeof fresh);
  char *report = NULL, *fresh_text = NULL, *fresh_hashes = NULL;
  int have_fresh = 0, rc = store_run_get(s, &run, &e);
  int gone_complete = 0, changes = 0, moved = 0;
  if (!rc && n_sets) {
    /* --set: the stored recipe, changed there (the recipe file the run started from is not read) */
    changes = resume_with_sets(dir, &run, sets, n_sets, &fresh, &fresh_text, &fresh_hashes, &report, &moved, &e);
    if (changes < 0) {
      rc = e.code, changes = 0;
    } else if (runs_load_stored_recipe(dir, run.recipe_resolved, &r, &e)) {
      /* its inputs gone (what the --set values are for): the shape, for the iteration count */
      recipe_free(&r);
      memset(&r, 0, sizeof r);
      if ((rc = runs_load_stored(dir, run.recipe_resolved, NULL, 0, RECIPE_NO_FS, &r, &e))) recipe_free(&fresh);
    }
    if (!rc) have_fresh = 1;
    if (!rc && moved && !writable) {
      moved = 0; /* nothing is recorded: a complete run says so, another is refused as not writable, below */
    } else if (!rc && moved) {
      /* the same contents elsewhere: the run goes on as it is, under the recipe naming the new places
       * (recorded once every check before the first write has passed, below) */
      recipe_free(&r);
      r = fresh;
      have_fresh = 0;
    }
  } else if (!rc) {
    rc = runs_load_stored_recipe(dir, run.recipe_resolved, &r, &e);
    if (rc && rc != RL_EXIT_STATE && !(rc = resume_inputs_gone(dir, s, &run, &e))) gone_complete = 1;
    changes = rc || gone_complete ? 0 : resume_changes(dir, &run, &fresh, &have_fresh, &fresh_text, &fresh_hashes, &report);
  }
  loop_resume point;
  memset(&point, 0, sizeof point);
  int complete = 0;
  if (rc) {
    fprintf(stderr, "rlrun resume: %s\n", e.msg);
  } else if (gone_complete) {
    complete = 2; /* said so; the stored recipe did not load: nothing else to do */
  } else if (changes && !allow && resume_complete(dir, s, r.loop.iterations)) {
    /* complete as recorded: nothing to do, whatever changed since (exit 0) */
    printf("%s: the run is already complete (%lld iteration%s, final checkpoint step-%06lld); nothing to do\n", dir,
           (long long)r.loop.iterations, r.loop.iterations == 1 ? "" : "s", (long long)r.loop.iterations);
    fprintf(stderr, "rlrun resume: note: the recipe or its inputs changed since the run started:\n%s"
            "(to continue it with the changes, e.g. more iterations, pass --allow-changed)\n", report);
    changes = 0, complete = 2;
  } else if (changes && !allow && n_sets) {
    fprintf(stderr,
            "rlrun resume: %s: the --set values change the run (more than where its inputs are: a value, or "
            "inputs whose contents differ):\n%snothing was done; pass --allow-changed to continue with the "
            "changes (recorded in the run's events)\n", dir, report);
    rc = RL_EXIT_STATE;
  } else if (changes && !allow) {
    fprintf(stderr,
            "rlrun resume: %s: the recipe or its inputs changed since the run started:\n%s"
            "nothing was done; restore them, or pass --allow-changed to continue with the changes "
            "(recorded in the run's events)\n",
            dir, report);
    rc = RL_EXIT_STATE;
  } else {
    /* Every check before the first write: the recipe the run continues with, the
     * hardware, the checkpoint it resumes from (sha256 of every file). A failure
     * leaves state.db, the run files and the checkpoints as they were. */
    recipe *use = changes && have_fresh ? &fresh : &r;
    /* fewer iterations than the run has trained cannot be honoured: resume
     * starts after its newest checkpoint, past the new end (it said "run
     * complete (6 iterations)" over the weights of iteration 12) */
    int64_t newest = use->loop.iterations < r.loop.iterations ? resume_newest_checkpoint(dir, s) : 0;
    complete = resume_complete(dir, s, use->loop.iterations);
    if (newest > use->loop.iterations) {
      fprintf(stderr, "rlrun resume: cannot resume %s: loop.iterations %lld is below iteration %lld, which this run "
              "has already trained (checkpoint step-%06lld): a run is not shortened; set loop.iterations to %lld "
              "or more, or start a new run with `rlrun run`; nothing was modified\n", dir,
              (long long)use->loop.iterations, (long long)newest, (long long)newest, (long long)newest);
      rc = RL_EXIT_USAGE;
    } else if (!writable && (!complete || changes)) {
      fprintf(stderr, "rlrun resume: cannot resume %s: %s; resume writes state.db, checkpoints/ and logs/ "
              "there: make the run directory writable (chmod -R u+w %s), or copy it somewhere writable and "
              "resume the copy; nothing was modified\n", dir, why, dir);
      rc = RL_EXIT_FAIL;
    } else if (!complete && (rc = run_check_hardware(use, &e))) {
      fprintf(stderr, "rlrun resume: %s\n", e.msg);
    } else if (!complete && (rc = loop_resume_find(dir, s, use, &point, &e))) {
      fprintf(stderr, "rlrun resume: cannot resume %s: %s\nrlrun resume: nothing was modified\n", dir, e.msg);
    } else if (!complete && (!point.found || use->model.path)) {
      /* the model source must be there when the loop reads it: a run with no checkpoint of its own
       * yet starts again from it, and a model.path is loaded (then the run's own weights restored)
       * whatever the checkpoint; --allow-changed recorded the inputs first, then the loop failed */
      char *miss = NULL;
      const char *src = use->model.checkpoint ? use->model.checkpoint : use->model.path;
      const char *src_key = use->model.checkpoint ? "model.checkpoint" : "model.path";
      struct stat sst;
      const char *was = r.model.checkpoint ? r.model.checkpoint : r.model.path;
      int n_miss = runs_model_source_missing(use, moved || use == &fresh ? fresh_hashes : run.input_hashes, &miss);
      /* the same source as recorded: the record knows files that a hash of what is there now lacks */
      if (!n_miss && !moved && use == &fresh && src && was && !strcmp(src, was))
        n_miss = runs_model_source_missing(&r, run.input_hashes, &miss);
      if (!n_miss && src && stat(src, &sst) != 0) { /* not even recorded (a checkpoint still to come) */
        size_t l = strlen(src) + 64;
        miss = rl_xmalloc(l);
        snprintf(miss, l, "  %s: %s (no such directory)\n", src_key, src);
        n_miss = 1;
      }
      /* another model than the one the committed samples came from (a newer run of RUNS/NAME, an
       * edited path): those samples would train a model that did not make them */
      if (n_miss) {
        fprintf(stderr, "rlrun resume: cannot resume %s: the run %s from its model, and files of it are gone:\n"
                "%srestore them, or point --set %s=PATH at the same model where it is now; nothing was modified\n",
                dir, point.found ? "loads its model.path before its own checkpoint's weights, so it still reads it"
                                 : "has no checkpoint of its own yet, so it starts again",
                miss, src_key);
        rc = RL_EXIT_STATE;
      } else if (!point.found && use == &fresh && src && was && strcmp(src, was)) {
        fprintf(stderr, "rlrun resume: cannot resume %s: the run has no checkpoint of its own yet and its model "
                "would change (%s %s -> %s), while its committed samples came from the first; start a new run "
                "for the other model, or point --set %s=PATH at the first where it is now; nothing was modified\n",
                dir, src_key, was, src, src_key);
        rc = RL_EXIT_STATE;
      }
      free(miss);
    }
  }
  if (!rc && moved) { /* resume --set, the same contents elsewhere: the records name the new places */
    char path[4200];
    snprintf(path, sizeof path, "%s/" RUNS_RESOLVED, dir);
    rc = store_run_update(s, fresh_text, fresh_hashes, &e);
    if (!rc) rc = rundir_write_atomic(path, fresh_text, strlen(fresh_text), &e);
    if (!rc) rc = resume_record_sets(dir, &r, sets, n_sets, &e);
    if (!rc) store_event(s, STORE_INFO, -1, NULL, &e, "inputs moved (the same contents, sha256 checked):\n%s", report);
    if (!rc) fprintf(stderr, "rlrun resume: the run's inputs are where --set says, with the same contents (sha256 "
                     "checked):\n%s", report);
    else fprintf(stderr, "rlrun resume: %s\n", e.msg);
  }
  if (!rc && changes) {
    store_event(s, STORE_WARN, -1, NULL, &e, "resumed with --allow-changed:\n%s", report);
    fprintf(stderr, "rlrun resume: continuing with changes (--allow-changed):\n%s", report);
    if (have_fresh) {
      char path[4200];
      snprintf(path, sizeof path, "%s/" RUNS_RESOLVED, dir);
      if (fresh_hashes) runs_hashes_keep_missing(&fresh, run.input_hashes, point.found && !fresh.model.path, &fresh_hashes);
      rc = store_run_update(s, fresh_text, fresh_hashes ? fresh_hashes : run.input_hashes, &e);
      if (!rc) rc = rundir_write_atomic(path, fresh_text, strlen(fresh_text), &e);
      if (!rc && n_sets) rc = resume_record_sets(dir, &fresh, sets, n_sets, &e);
      recipe_free(&r);
      r = fresh;
      have_fresh = 0;
    } else if (!(rc = runs_input_hashes_present(&r, 1, &fresh_hashes, &e))) {
      /* a file that is gone keeps its recorded sha256 (checked when it comes back), but the model's when the
       * run continues from a checkpoint of its own (it no longer reads them) */
      runs_hashes_keep_missing(&r, run.input_hashes, point.found && !r.model.path, &fresh_hashes);
      rc = store_run_update(s, run.recipe_resolved, fresh_hashes, &e);
    }
    if (rc) fprintf(stderr, "rlrun resume: %s\n", e.msg);
  }
  if (!rc && complete && writable && !gone_complete) {
    /* a run stopped between its final checkpoint and the retention after it
     * (or in the middle of removing a pruned directory) is complete, but kept
     * checkpoint directories it no longer wants for good: remove them now, as
     * the uninterrupted run did */
    int pruned = 0, stale = 0;
    rl_err re;
    if (ckpt_retain(dir, s, r.loop.keep_checkpoints, r.loop.keep_every, &pruned, &re) ||
        ckpt_clean_stale(dir, s, &stale, &re))
      fprintf(stderr, "rlrun resume: warning: %s\n", re.msg);
    else if (pruned + stale) {
      fprintf(stderr, "rlrun resume: removed %d checkpoint director%s the run no longer keeps (it stopped before "
              "removing %s)\n", pruned + stale, pruned + stale == 1 ? "y" : "ies", pruned + stale == 1 ? "it" : "them");
      loop_log_append(dir, "resume: removed %d checkpoint director%s the run no longer keeps", pruned + stale,
                      pruned + stale == 1 ? "y" : "ies");
    }
  }
  if (!rc && complete != 2) {
    if (complete) {
      printf("%s: the run is already complete (%lld iteration%s, final checkpoint step-%06lld); nothing to do\n",
             dir, (long long)r.loop.iterations, r.loop.iterations == 1 ? "" : "s", (long long)r.loop.iterations);
    } else {
      printf("resuming %s\n", dir);
      fflush(stdout);
      loop_log_append(dir, "resuming %s", dir);
      rc = run_loop(dir, s, &r, quiet, &point, changes != 0);
    }
  }
  loop_resume_free(&point);
  if (have_fresh) recipe_free(&fresh);
  recipe_free(&r);
  store_run_free(&run);
  free(report), free(fresh_text), free(fresh_hashes);
  store_close(s);
  if (lock >= 0) close(lock);
  return rc;
}
