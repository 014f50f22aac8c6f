/* runs.h — what the run commands (cmd_run.c, cmd_runs.c) share: the run
 * directory's files, canonical recipes, input hashes, change reports, the
 * export format, and the run lock.
 *
 * A run directory runs/<name>-<id>/ holds state.db, recipe.yaml (the recipe
 * file as given), recipe.resolved.yaml (every key, paths absolute: what the
 * run executes), run.json ({"recipe_path", "overrides", "cwd"}: how and where
 * it was started, so resume can tell from any working directory whether the
 * recipe file was edited since: recipe_path is absolute with the file's own
 * name kept, relative override paths resolve against cwd), logs/run.log,
 * checkpoints/, and the lock file `lock` (held while a process works on it).
 *
 * Export (rlrun export): the resolved recipe preceded by comment lines
 *   # rlrun-export: rlrun VERSION, run ID
 *   # rlrun-input: sha256 HEX PATH
 * one per input file (model files, data, Lua scripts). `rlrun run` of a
 * recipe with such lines checks every listed file's sha256 first. */
#ifndef RLRUN_RUNS_H
#define RLRUN_RUNS_H

#include <stdio.h>

#include "kernels/common.h"
#include "runner/recipe.h"
#include "state/store.h"

#define RUNS_RECIPE "recipe.yaml"
#define RUNS_RESOLVED "recipe.resolved.yaml"
#define RUNS_INFO "run.json"
#define RUNS_DB "state.db"
#define RUNS_LOCK "lock"

/* Make every path of the recipe absolute (realpath). */
int runs_canonical_recipe(recipe *r, rl_err *e);
/* The resolved recipe as text (recipe_print of a canonical recipe; malloc'd). */
char *runs_resolved_text(const recipe *r);
/* {"path": "sha256", …} of every input file of the recipe (malloc'd JSON). */
int runs_input_hashes(const recipe *r, char **json, rl_err *e);
/* The same, with present_only: inputs that no longer exist are left out (what
 * `resume --allow-changed` records when it continues without them, e.g. a
 * chain's start checkpoint moved away after the run wrote checkpoints of its own). */
int runs_input_hashes_present(const recipe *r, int present_only, char **json, rl_err *e);
/* Compare stored input hashes with the files now: one line per changed or
 * missing file appended to *report (malloc'd, grown); returns the count. */
int runs_inputs_changed(const char *stored_json, char **report);
/* The same; missing_only: only the inputs that are gone are counted and listed. */
int runs_inputs_check(const char *stored_json, int missing_only, char **report);
/* The entries of old_json (a run's recorded input hashes) for files of
 * recipe r's inputs that are gone now, added to *new_json (replaced, malloc'd)
 * where it has none: what --allow-changed records keeps a missing input's
 * sha256, so the file is checked when it comes back (a dropped record let
 * another file at that path in without a word). but_model: not the model
 * source's files (a run resumed from a checkpoint of its own no longer reads
 * them). Returns how many. */
int runs_hashes_keep_missing(const recipe *r, const char *old_json, int but_model, char **new_json);
/* Files of r's model source (model.path, model.checkpoint) recorded in
 * hashes_json that are gone: one line each appended to *report; the count. */
int runs_model_source_missing(const recipe *r, const char *hashes_json, char **report);
/* Compare two recipes' inputs by role, not path: each input is named by the
 * key that names it ("data.prompts", "model.path/config.json",
 * "tokenizer:tokenizer_config.json"), so inputs moved elsewhere with the same
 * contents are no difference, while a swap of two files' contents is. One line
 * per difference appended to *report (malloc'd, grown); returns the count. */
int runs_inputs_compare(const recipe *old_r, const char *old_hashes, const recipe *new_r, const char *new_hashes,
                        char **report);
/* Lines that differ between two resolved recipes, appended to *report. */
int runs_recipe_changed(const char *old_text, const char *new_text, char **report);
/* The same; *n_values (may be NULL) gets how many changed keys are not path
 * keys (a value changed, not only where an input is). */
int runs_recipe_changed_ex(const char *old_text, const char *new_text, char **report, int *n_values);

/* The resolved text with the lines the loader refuses (keys another setting
 * makes meaningless, printed as defaults) commented out: text that
 * recipe_load_string accepts and that resolves to the same recipe (malloc'd). */
char *runs_loadable_text(const char *resolved, const char *name);
/* Load a run's recipe from its stored resolved text (runs_compat_stored applied). */
int runs_load_stored_recipe(const char *run_dir, const char *resolved, recipe *r, rl_err *e);
/* The same with --set values and recipe_load_string's flags (RECIPE_NO_FS:
 * the recipe's shape, its inputs wherever they are), errors as the loader
 * says them. */
int runs_load_stored(const char *run_dir, const char *resolved, const char *const *sets, int n_sets, int flags,
                     recipe *r, rl_err *e);
/* Keys a newer rlrun added with a default that changes what a run does, set
 * in r as the run that stored `stored` (its resolved text) ran, unless r sets
 * them: rollout.generation_config_eos false for a run stored without it. */
void runs_compat_stored(recipe *r, const char *stored);
/* Check the "# rlrun-input:" lines of an exported recipe's text. */
int runs_check_export(const char *what, const char *text, rl_err *e);
/* The same by contents, for a recipe r loaded with --set values (inputs
 * moved): its inputs (hashes: runs_input_hashes of r) must be those of the
 * "# rlrun-input:" lines role by role (runs_inputs_compare), wherever they are. */
int runs_check_export_content(const char *what, const char *text, const recipe *r, const char *hashes, rl_err *e);
/* Write the export of a run: header, input lines, resolved recipe. */
int runs_export(FILE *f, const store_run *run, rl_err *e);

/* Take the run's lock (non-blocking): a flock on the run directory (the `lock`
 * file only names the holder's pid); returns the fd (keep it open) or -1 with
 * e set when another process holds it. */
int runs_lock(const char *run_dir, rl_err *e);
/* 1 when some process holds the run's lock now. */
int runs_is_locked(const char *run_dir);
/* loop.iterations of a run's stored resolved recipe (0 when not found). */
int64_t runs_stored_iterations(const char *resolved);
/* 1 when the run in run_dir is complete (*iters: its loop.iterations), 0
 * when it is not (stopped, failed or running), -1 when run_dir holds no
 * readable run. Read-only. */
int runs_is_complete(const char *run_dir, int64_t *iters);
/* Open the store of a run directory (create 0), saying clearly what is wrong. */
store *runs_open_store(const char *run_dir, rl_err *e);
/* The same for the read commands: read-only where this user cannot write the
 * run directory (store_open_readonly), as store_open elsewhere. */
store *runs_open_store_read(const char *run_dir, rl_err *e);
/* 1 when this user can write the run directory and its store files; 0 with
 * why ("PATH: reason") set otherwise. */
int runs_writable(const char *run_dir, char *why, size_t n);

#endif
