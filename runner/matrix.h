/* matrix.h — the precision compatibility matrix (rollout × train), the format
 * support per hardware class, and the hardware targets (detected or named).
 * One table each, in matrix.c: `rlrun validate`, `rlrun matrix` and the README
 * all read them. */
#ifndef RLRUN_MATRIX_H
#define RLRUN_MATRIX_H

#include <stdio.h>

#include "kernels/common.h"

/* The numeric formats a recipe can name for rollout and training. */
typedef enum prec_format {
  PREC_BF16,
  PREC_FP8_BLOCK,
  PREC_MXFP8,
  PREC_NVFP4, /* MoE expert GEMMs only; every other linear layer stays BF16 */
  PREC_COUNT
} prec_format;

/* Recipe spellings, NULL-terminated: "bf16", "fp8-block", "mxfp8", "nvfp4". */
extern const char *const prec_names[PREC_COUNT + 1];

/* Hardware classes: what decides which formats run. */
typedef enum hw_class {
  HW_CPU,       /* the CPU reference: every format, exact numerics */
  HW_AMPERE,    /* sm_80 (A100) */
  HW_HOPPER,    /* sm_90 (H100, H200) */
  HW_BLACKWELL, /* sm_100/103 (B200, B300, GB200, GB300) */
  HW_AMD,       /* MI300X, MI325X, MI350X, MI355X */
  HW_CLASS_COUNT,
  HW_UNSUPPORTED /* a GPU older than sm_80: nothing runs */
} hw_class;

extern const char *const hw_class_names[HW_CLASS_COUNT + 1];

/* How a format runs on a hardware class. */
typedef enum fmt_support {
  SUP_NO,        /* refused */
  SUP_NATIVE,    /* native GEMMs */
  SUP_EMULATED,  /* exact emulation; only with precision.emulate: true */
  SUP_REFERENCE  /* the CPU reference numerics */
} fmt_support;

extern const fmt_support format_support[PREC_COUNT][HW_CLASS_COUNT];

/* One rollout × train pair of the matrix. */
typedef struct precision_pair {
  prec_format rollout, train;
  int supported;      /* 0: refused on every hardware */
  int experimental;   /* needs precision.experimental: true */
  int drift;          /* rollout and train numerics differ: recommend TIS (+ R3 on MoE) */
  const char *mode;   /* supported: the mode's name; refused: the rule that refuses it */
} precision_pair;

/* All 16 pairs, rollout-major (index = rollout * PREC_COUNT + train). */
extern const precision_pair precision_matrix[PREC_COUNT * PREC_COUNT];

/* The pair (rollout, train). */
const precision_pair *matrix_pair(prec_format rollout, prec_format train);

/* A machine to validate for: detected, or named with --hardware. */
typedef struct hw_target {
  char name[256];    /* "h100", "cpu", or the detected GPU's name */
  hw_class cls;
  int n_gpus;        /* GPUs available (0 for cpu) */
  double mem_gb;     /* memory per GPU, GB (10^9 bytes) */
  int detected;      /* 1: found by device_query, 0: named */
  int cc_major, cc_minor;
  char note[256];    /* why there is no GPU, when detected and none (the reason alone) */
} hw_target;

/* Resolve "--hardware NAME[:COUNT]" (a name like h200 or a class like hopper). */
int hw_target_named(const char *spec, hw_target *t, rl_err *e);
/* Detect this machine's GPUs with device_query(). */
void hw_target_detect(hw_target *t);
/* Compute capability → class (sm_80 Ampere, sm_90 Hopper, sm_100+ Blackwell). */
hw_class hw_class_from_cc(int major, int minor);
/* The class a hardware name or class name belongs to; HW_CLASS_COUNT if unknown. */
hw_class hw_class_of_name(const char *name);
/* Every accepted hardware name, comma-separated (for messages and --help). */
const char *hw_names_list(void);

/* Can (rollout, train) run on class cls? Returns RL_EXIT_OK, RL_EXIT_USAGE (the
 * pair is refused, or experimental without the flag) or RL_EXIT_HARDWARE (not on
 * this class); *emulated is set when it runs only as an exact emulation.
 * why gets the reason (or the emulation note). */
int matrix_check(prec_format rollout, prec_format train, hw_class cls, int emulate,
                 int experimental, int *emulated, char *why, size_t whysz);

/* The machine-independent tables (the README block between the matrix markers). */
void matrix_print_tables(FILE *f);
/* What target t can run, pair by pair (the tail of `rlrun matrix`). */
void matrix_print_target(FILE *f, const hw_target *t);

#endif
