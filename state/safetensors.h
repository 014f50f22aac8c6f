/* safetensors.h — the safetensors file format: a validating reader and an
 * atomic writer, plus sharded checkpoints (model.safetensors.index.json).
 *
 * File layout (https://github.com/huggingface/safetensors): 8-byte little-endian
 * header length L, L bytes of UTF-8 JSON {"name": {"dtype", "shape",
 * "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}, then the
 * data region. Offsets are relative to the data region, which the tensors must
 * tile exactly (no holes, no overlaps), as the reference implementation requires.
 *
 * Reading never trusts the header: every violation is an error value naming the
 * file and the tensor. Data is read with pread (st_file_read*) so that streaming
 * a large checkpoint keeps little resident; st_file_data() maps the file for
 * zero-copy access and st_file_release() drops a tensor's mapped pages again. */
#ifndef RLRUN_SAFETENSORS_H
#define RLRUN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/common.h"

/* Largest header accepted: the reference implementation's limit (100 MB). */
#define ST_MAX_HEADER_BYTES 100000000ull
#define ST_MAX_DIMS 8

/* Element types. New values go at the end. */
typedef enum st_dtype {
  ST_BOOL,
  ST_U8,
  ST_I8,
  ST_F8_E5M2,
  ST_F8_E4M3,
  ST_F8_E8M0,
  ST_I16,
  ST_U16,
  ST_F16,
  ST_BF16,
  ST_I32,
  ST_U32,
  ST_F32,
  ST_F64,
  ST_I64,
  ST_U64,
  ST_C64,
  ST_DTYPE_COUNT
} st_dtype;

/* "BF16", "F8_E4M3", ... (the names the format uses). */
const char *st_dtype_name(st_dtype d);
/* Bytes per element. */
size_t st_dtype_size(st_dtype d);
/* Look a dtype up by its format name; returns 0 or -1 when unknown. */
int st_dtype_parse(const char *name, st_dtype *out);

/* One tensor of a file, as its header describes it (validated). */
typedef struct st_tensor {
  char *name;
  st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  uint64_t begin, end; /* byte offsets in the data region */
  uint64_t nbytes;     /* end - begin = product(shape) * dtype size */
  uint64_t numel;
} st_tensor;

/* A parsed and validated header. Tensors are in data order (by offset). */
typedef struct st_header {
  st_tensor *tensors;
  int n_tensors;
  char **meta_keys, **meta_vals; /* __metadata__, in file order */
  int n_meta;
  uint64_t header_len; /* L */
  uint64_t data_start; /* 8 + L */
  uint64_t data_len;   /* bytes of the data region */
} st_header;

/* Validate a header's JSON (json, len bytes) against a data region of data_len
 * bytes and fill *h. `what` names the file in messages. */
int st_header_parse(const char *what, const char *json, size_t len, uint64_t data_len,
                    st_header *h, rl_err *e);
/* Validate a whole file held in memory (length prefix, header, data). */
int st_buffer_parse(const char *what, const uint8_t *buf, size_t len, st_header *h, rl_err *e);
void st_header_free(st_header *h);
/* The tensor called name, or NULL (binary search over a sorted name index is
 * not kept: headers are small; this is linear). */
const st_tensor *st_header_find(const st_header *h, const char *name);

/* ------------------------------------------------------------------ reading */
typedef struct st_file st_file;

/* Open and validate a file (header read with pread; data not touched). */
int st_file_open(const char *path, st_file **out, rl_err *e);
void st_file_close(st_file *f);
const char *st_file_path(const st_file *f);
const st_header *st_file_header(const st_file *f);
const st_tensor *st_file_find(const st_file *f, const char *name);
/* Value of a __metadata__ key, or NULL. */
const char *st_file_meta(const st_file *f, const char *key);
/* Copy n bytes of tensor t starting at byte off of the tensor into dst (pread). */
int st_file_read_range(st_file *f, const st_tensor *t, uint64_t off, void *dst, size_t n, rl_err *e);
/* Copy the whole tensor into dst (t->nbytes bytes). */
int st_file_read(st_file *f, const st_tensor *t, void *dst, rl_err *e);
/* Zero-copy pointer to the tensor's bytes (the file is mapped read-only on
 * first use); NULL with e set on failure. */
const void *st_file_data(st_file *f, const st_tensor *t, rl_err *e);
/* Drop the mapped pages of t from this process (they count in RSS). */
void st_file_release(st_file *f, const st_tensor *t);

/* ------------------------------------------------------------------ writing */
typedef struct st_writer st_writer;

/* Start a file at path: tensors are declared first (st_writer_add), then the
 * header is laid out and written (st_writer_begin), then data is written in
 * any order (st_writer_write*), then st_writer_finish() fsyncs the temporary
 * file and renames it to path. Data is laid out by element size, largest
 * first, behind a header padded to 8 bytes, so every tensor is aligned to its
 * element size and the tensors tile the data region (no holes). */
st_writer *st_writer_new(const char *path);
int st_writer_meta(st_writer *w, const char *key, const char *val, rl_err *e);
int st_writer_add(st_writer *w, const char *name, st_dtype dt, int ndim, const int64_t *shape,
                  rl_err *e);
int st_writer_begin(st_writer *w, rl_err *e);
/* Index of a declared tensor, or -1. */
int st_writer_find(const st_writer *w, const char *name);
/* Write bytes [off, off+n) of declared tensor idx. */
int st_writer_write_part(st_writer *w, int idx, uint64_t off, const void *src, size_t n, rl_err *e);
/* Write the whole of tensor `name` (n must equal its byte size). */
int st_writer_write(st_writer *w, const char *name, const void *src, size_t n, rl_err *e);
/* Check every tensor was written in full, fsync, rename into place, fsync the
 * directory. Frees w (also on error, removing the temporary file). */
int st_writer_finish(st_writer *w, rl_err *e);
/* Give up: remove the temporary file, free w. */
void st_writer_abort(st_writer *w);
/* Bytes of tensor data declared so far (what an index's total_size counts). */
uint64_t st_writer_data_bytes(const st_writer *w);

/* Write path atomically (temporary name, fsync, rename, fsync directory). */
int st_write_atomic(const char *path, const void *data, size_t n, rl_err *e);

/* ------------------------------------------------------- sharded checkpoints */
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

typedef struct st_ckpt st_ckpt;

/* Open the weights of a directory: model.safetensors.index.json and its
 * shards when the index exists, else model.safetensors, else every
 * *.safetensors file (sorted). Validates every shard header, that the index
 * names existing shards, and that index and shards agree tensor by tensor. */
int st_ckpt_open(const char *dir, st_ckpt **out, rl_err *e);
void st_ckpt_close(st_ckpt *c);
int st_ckpt_n_files(const st_ckpt *c);
st_file *st_ckpt_file(const st_ckpt *c, int i);
/* Total tensors across files, and the file holding `name` (NULL if none). */
int st_ckpt_n_tensors(const st_ckpt *c);
st_file *st_ckpt_find(const st_ckpt *c, const char *name, const st_tensor **t);
/* Bytes of all tensor data (the index's total_size). */
uint64_t st_ckpt_data_bytes(const st_ckpt *c);

/* Write model.safetensors.index.json into dir: names[i] lives in files[i];
 * total_size is the sum of tensor data bytes. */
int st_index_write(const char *dir, int n, const char *const *names, const char *const *files,
                   uint64_t total_size, rl_err *e);

#endif
