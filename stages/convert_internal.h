/* convert_internal.h — what convert.c (planning, the driver) and
 * convert_exec.c (reading, quantizing, writing one tensor; progress; the CPU
 * and CUDA backends) share. Not for other modules. */
#ifndef RLRUN_STAGES_CONVERT_INTERNAL_H
#define RLRUN_STAGES_CONVERT_INTERNAL_H

#include "stages/convert.h"
#include "state/safetensors.h"

/* What the converter does with one input tensor (and its companions). */
typedef enum item_act {
  ITEM_COPY,      /* bytes as they are */
  ITEM_CAST_BF16, /* F32/F16 → BF16 (RNE) */
  ITEM_QUANT,     /* BF16/F16/F32 weight → fmt */
  ITEM_DEQUANT    /* fmt weight + scales → BF16 */
} item_act;

typedef struct convert_item {
  item_act act;
  qformat fmt;            /* QUANT: the target; DEQUANT: the source format */
  st_file *f;             /* the input tensor: the weight */
  const st_tensor *t;
  st_file *fs;            /* DEQUANT: the block-scale tensor */
  const st_tensor *ts;
  float s_dec;            /* DEQUANT nvfp4: weight_scale_2 */
  int64_t N, K;           /* QUANT/DEQUANT: rows and the (unpacked) reduction dimension */
  char *base;             /* the name without ".weight" */
  const char *why;        /* why it stays as it is (COPY/CAST of a .weight), or NULL */
  int partner;            /* NVFP4: item of the expert's other projection (gate↔up), -1 */
  float amax;             /* NVFP4: this tensor's amax over finite values, when have_amax */
  int have_amax;
  int shard;
  uint64_t out_bytes;     /* tensor data this item writes */
  uint64_t in_bytes;      /* tensor data this item reads */
} convert_item;

/* Progress on the log: a bar on a terminal, else one line per tensor. */
typedef struct convert_progress {
  FILE *log;
  int bar, quiet;
  int n_items, done_items;
  uint64_t total_bytes, done_bytes;
  double t0, last_draw;
} convert_progress;

typedef struct convert_ctx {
  const convert_opts *o;
  convert_item *items;
  int n_items;
  int use_gpu;
  void *gpu; /* CUDA backend state (convert_exec.c) */
  convert_progress prog;
  convert_stats *stats;
} convert_ctx;

/* Fill it->in_bytes and it->out_bytes from its action and shapes. */
void convert_item_sizes(convert_item *it);
/* Declare the output tensors of one item in a shard writer. */
int convert_item_declare(const convert_item *it, st_writer *w, rl_err *e);
/* Read, convert and write one item (all of its output tensors). */
int convert_item_run(convert_ctx *x, convert_item *it, st_writer *w, rl_err *e);
/* The CUDA backend: set up (0, or RL_EXIT_HARDWARE when not available), free. */
int convert_gpu_init(convert_ctx *x, rl_err *e);
void convert_gpu_free(convert_ctx *x);

void convert_progress_begin(convert_progress *p, const convert_opts *o, int n_items,
                            uint64_t total_bytes);
void convert_progress_item(convert_progress *p, const convert_item *it);
void convert_progress_bytes(convert_progress *p, uint64_t n);
void convert_progress_end(convert_progress *p);

#endif
