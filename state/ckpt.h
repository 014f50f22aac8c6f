/* ckpt.h — run checkpoints: checkpoints/step-NNNNNN/ inside a run directory.
 *
 * A checkpoint directory holds
 *   model.safetensors      the master weights (BF16, Hugging Face names)
 *   config.json            the model's config, so the directory loads as a model
 *   optimizer.safetensors  the optimizer state (FP32: optim.m.<param>,
 *                          optim.v.<param>, optim.main.<param>, optim.step)
 *   tokenizer.json, ...    copies of ckpt_content.copies (the run's tokenizer
 *                          files and generation_config.json), when there are any
 *   manifest.json          {"format": "rlrun-checkpoint", "version": 1,
 *                           "iteration", "data_cursor", "rlrun_version",
 *                           "created", "files": {name: {size, sha256}}, "extra"}
 *
 * Writing (ckpt_write): every file goes into checkpoints/.tmp-step-NNNNNN-PID/,
 * each file is fsynced, the directory is fsynced and renamed to step-NNNNNN
 * (the parent fsynced), and only then ONE SQLite transaction records every
 * file in the artifacts table (kind "checkpoint", size, sha256) and marks the
 * step (iteration, "checkpoint") done. A checkpoint exists only once that
 * transaction committed: a failure or a kill at any point before it leaves at
 * worst a stray directory (removed by ckpt_clean_stale) and the previous
 * checkpoint valid. Failure points (state/fault.h): ckpt.write_weights,
 * ckpt.write_optim, ckpt.before_publish, ckpt.before_record.
 *
 * Reading: ckpt_latest finds the newest recorded checkpoint whose directory
 * exists (one removed by hand is skipped: the one before it is used) and
 * verifies the size and sha256 of every recorded file (ckpt_verify); a
 * mismatch is an error (RL_EXIT_STATE) naming the file, both hashes and what
 * to do (restore it, or remove the directory). ckpt_latest only reads. The
 * caller then opens the files (ckpt_file_path) with the safetensors reader,
 * and a resume forgets the records of the skipped newer checkpoints
 * (ckpt_forget_after) so that they are written again.
 *
 * This module knows tensors by name only: the runner maps its model and
 * optimizer onto ckpt_tensor lists (state/ uses nothing of model/). */
#ifndef RLRUN_CKPT_H
#define RLRUN_CKPT_H

#include <stdint.h>

#include "kernels/common.h"
#include "state/safetensors.h"
#include "state/store.h"

#define CKPT_FORMAT "rlrun-checkpoint"
#define CKPT_FORMAT_VERSION 1
#define CKPT_SUBDIR "checkpoints"
#define CKPT_WEIGHTS "model.safetensors"
#define CKPT_OPTIM "optimizer.safetensors"
#define CKPT_CONFIG "config.json"
#define CKPT_MANIFEST "manifest.json"
#define CKPT_KIND "checkpoint"
#define CKPT_STAGE "checkpoint" /* the step a written checkpoint marks done */
#define CKPT_MAX_COPIES 8

/* One tensor to write: data holds numel × dtype-size bytes. */
typedef struct ckpt_tensor {
  const char *name;
  st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  const void *data;
} ckpt_tensor;

/* A file copied into a checkpoint: src's bytes under the name `name`. */
typedef struct ckpt_copy {
  const char *src, *name;
} ckpt_copy;

/* What a checkpoint holds. */
typedef struct ckpt_content {
  int64_t iteration;   /* the last iteration whose update the weights include */
  int64_t data_cursor; /* prompts consumed so far (position of the next one in the data stream) */
  const ckpt_tensor *weights;
  int n_weights;
  const ckpt_tensor *optim; /* may be empty (n_optim 0): no optimizer.safetensors */
  int n_optim;
  const char *config_json; /* config.json text, or NULL */
  const char *extra_json;  /* a JSON object kept as manifest "extra", or NULL */
  /* files copied in byte for byte under their own names (the tokenizer's,
   * generation_config.json: what makes the directory a model another run or
   * tool loads alone); recorded and verified like the others */
  const ckpt_copy *copies;
  int n_copies;
} ckpt_content;

/* What a checkpoint's manifest says. */
typedef struct ckpt_info {
  int64_t iteration, data_cursor;
  char dir[4096];          /* the checkpoint directory (run_dir/checkpoints/step-NNNNNN) */
  char rlrun_version[32];
  char *extra_json;        /* malloc'd ("{}" when none); free with ckpt_info_free */
} ckpt_info;
void ckpt_info_free(ckpt_info *i);

/* "checkpoints/step-NNNNNN" (relative to the run directory). */
void ckpt_rel_dir(int64_t iteration, char *out, size_t outsz);
/* run_dir/checkpoints/step-NNNNNN/name (name NULL: the directory). */
void ckpt_file_path(const char *run_dir, int64_t iteration, const char *name, char *out, size_t outsz);

/* Write, publish and record the checkpoint of c->iteration (replacing an
 * unrecorded directory of the same name). s NULL: write and publish only. */
int ckpt_write(const char *run_dir, store *s, const ckpt_content *c, rl_err *e);
/* One safetensors file of tensors t[0..n) at path (metadata format "pt"),
 * written as a checkpoint's model.safetensors is: temporary name, fsync,
 * rename (rlrun init's model directory). */
int ckpt_write_weights_file(const char *path, const ckpt_tensor *t, int n, rl_err *e);

/* Iterations of the recorded checkpoints, ascending (malloc'd; *n may be 0). */
int ckpt_list(store *s, int64_t **iters, int *n, rl_err *e);
/* Check every recorded file of a checkpoint: present, same size, same sha256. */
int ckpt_verify(const char *run_dir, store *s, int64_t iteration, rl_err *e);
/* Read and check a checkpoint directory's manifest.json. */
int ckpt_read_manifest(const char *dir, ckpt_info *out, rl_err *e);
/* The newest recorded checkpoint whose directory exists, verified (read-only);
 * *found = 0 when there is none. */
int ckpt_latest(const char *run_dir, store *s, ckpt_info *out, int *found, rl_err *e);

/* Forget the records (artifact rows: files, sizes, sha256) of every recorded
 * checkpoint after `iteration`, all or nothing: what a resume does when it
 * falls back past checkpoints whose directories were removed, so that the
 * loop writes them anew when it gets there instead of verifying files that
 * are gone. Step rows, samples and metrics are kept. Joins the caller's
 * transaction, or commits its own. *iters (malloc'd, ascending, may be NULL)
 * and *n get the iterations forgotten. */
int ckpt_forget_after(store *s, int64_t iteration, int64_t **iters, int *n, rl_err *e);

/* Retention: keep the newest keep_last recorded checkpoints (0 = all) and
 * every one whose iteration is a multiple of keep_every (0 = none); forget
 * the others (one transaction) and then remove their directories. */
int ckpt_retain(const char *run_dir, store *s, int64_t keep_last, int64_t keep_every, int *n_removed,
                rl_err *e);
/* Remove what an interrupted write or removal left: checkpoints/.tmp-* and
 * step-* directories the store does not record. */
int ckpt_clean_stale(const char *run_dir, store *s, int *n_removed, rl_err *e);

#endif
