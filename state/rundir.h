/* rundir.h — the run directory: runs/<name>-<id>/ with state.db, the recipe as
 * given (recipe.yaml), the resolved recipe (recipe.resolved.yaml),
 * checkpoints/ and logs/; and atomic writes of single files into it.
 * (Whole directories, e.g. checkpoints, are published with ckpt_dir_publish.) */
#ifndef RLRUN_RUNDIR_H
#define RLRUN_RUNDIR_H

#include <stddef.h>

#include "kernels/common.h"

/* A run id: "<name>-<UTC YYYYMMDDTHHMMSSZ>-<4 hex random>", e.g.
 * "gsm8k-20260301T101500Z-3fa9". The name must be 1..64 characters of
 * [A-Za-z0-9._-], the first a letter or digit, as a recipe's `name`
 * (rundir_check_name says what is wrong). */
int rundir_check_name(const char *name, rl_err *e);
void rundir_make_id(const char *name, char *out, size_t outsz);

/* Create runs_dir (and parents) if missing, then a fresh run directory in it
 * with checkpoints/ and logs/; its path goes to out. A name clash (same
 * second, same random) is retried with a new random part. */
int rundir_create(const char *runs_dir, const char *name, char *out, size_t outsz, rl_err *e);

/* Write a whole file atomically: a temporary name in the same directory,
 * fsync, rename over path, fsync the directory. A reader sees the old content
 * or the new, never a mix; a crash leaves at worst a stray "*.tmp-PID" file.
 * A path that is a device or a FIFO (/dev/null) is written in place instead
 * (rl_path_is_special). */
int rundir_write_atomic(const char *path, const void *data, size_t len, rl_err *e);

/* fsync a directory (after a rename or create inside it). */
int rundir_fsync_dir(const char *dir, rl_err *e);

#endif
