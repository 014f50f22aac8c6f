/* ckpt_dir.h — model directories on disk: copying the files a converter does
 * not rewrite (tokenizer, generation config, ...), removing a directory tree,
 * and publishing a directory built under a temporary name. */
#ifndef RLRUN_CKPT_DIR_H
#define RLRUN_CKPT_DIR_H

#include "kernels/common.h"

/* 1 for the names a checkpoint rewrites itself: *.safetensors,
 * model.safetensors.index.json, config.json, hf_quant_config.json, and
 * pytorch weight files (*.bin, *.pt, *.pth) that would shadow the new weights. */
int ckpt_dir_is_weight_file(const char *name);

/* Copy every regular file of `in` that is not a weight file into `out`
 * (fsynced); subdirectories and other entries are skipped, as is an rlrun
 * checkpoint's manifest.json (it lists the source's files). *n_copied gets the
 * count (may be NULL). */
int ckpt_dir_copy_extras(const char *in, const char *out, int *n_copied, rl_err *e);

/* Before anything is written: every file ckpt_dir_copy_extras would copy is a
 * file. An entry named like one (*.json, *.txt, *.model, *.jinja, *.tiktoken:
 * tokenizer.json, merges.txt, ...) that is a directory, another non-regular
 * file or a dangling symlink is exit 2 naming it (it was skipped: the output
 * lacked it, silently); other subdirectories stay skipped. */
int ckpt_dir_check_extras(const char *in, rl_err *e);

/* Copy one file (fsync). */
int ckpt_dir_copy_file(const char *src, const char *dst, rl_err *e);

/* Remove a file or a directory tree; 0 when gone (also when it never existed). */
int ckpt_dir_remove(const char *path, rl_err *e);

/* Make `tmp` (a complete directory) appear as `out`: fsync tmp, replace out if
 * `replace` (else out must not exist or be empty), rename, fsync the parent. */
int ckpt_dir_publish(const char *tmp, const char *out, int replace, rl_err *e);

/* 0 when `out` may be written: absent, an empty directory, or replace is set. */
int ckpt_dir_check_output(const char *out, int replace, rl_err *e);

#endif
