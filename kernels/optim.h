/* optim.h — AdamW for the trainer: one API, a CPU reference (optim_cpu.c) and
 * a CUDA twin (optim_cuda.cu) that writes the same bits.
 *
 * State per tensor: BF16 weights `w` (what every forward quantizes), FP32
 * moments m and v, and the main copy of the parameters — FP32 `main` by
 * default (OPTIM_MAIN_FP32), or the BF16 weights themselves (OPTIM_MAIN_BF16:
 * `main` unused, an update smaller than half a BF16 ulp of the weight is lost,
 * which is why FP32 is the default, as in Megatron's mixed precision).
 * Gradients are FP32 (accumulated over microbatches) and only read.
 *
 * One step (step = 1, 2, … counts the updates; the caller keeps it):
 *   1. Every gradient is checked finite FIRST: a NaN/Inf fails the step with an
 *      error naming the tensor, the index and the step, and changes nothing.
 *   2. Global gradient norm ‖g‖ in FP64 in a fixed order (below); with
 *      grad_clip > 0, coef = min(1, grad_clip / (‖g‖ + 1e-6)) (torch's rule).
 *   3. lr_t = lr · min(1, step / warmup_steps) (linear warm-up, then constant;
 *      warmup_steps 0 = constant from step 1).
 *   4. Per element, in FP32, each operation rounded (no FMA contraction:
 *      optim_adamw_elem below is the one definition, shared with the GPU):
 *        g = g·coef;  p = p·(1 − lr_t·wd)   (decoupled decay; skipped for no_decay)
 *        m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g·g
 *        p = p − (lr_t / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + ε)
 *      The per-step scalars are computed once in FP64 and rounded to FP32
 *      (optim_scalars_make); the BF16 weight is RNE(p) (fmt_bf16_from_f32).
 *
 * The norm's order: each tensor is cut in blocks of OPTIM_NORM_BLOCK elements;
 * in a block, lane j (of OPTIM_NORM_LANES) sums g[j], g[j+L], g[j+2L], … in
 * order (FP64, squares exact), then lanes are folded as a tree (s[j] += s[j+h]
 * for h = L/2 … 1); a tensor's sum is its blocks' partials added in block
 * order, the global sum the tensors' sums in list order. The CUDA kernels run
 * exactly this order, so ‖g‖ — and hence the whole step — is bit-identical on
 * CPU and GPU and independent of thread counts.
 *
 * CUDA twins take device pointers in optim_tensor (name stays a host string)
 * and a cudaStream_t as `void *`; they synchronize the stream once per step
 * (the norm comes back to the host). Without CUDA they fail with
 * RL_EXIT_HARDWARE. */
#ifndef RLRUN_OPTIM_H
#define RLRUN_OPTIM_H

#include <math.h>
#include <stdint.h>

#include "kernels/formats.h"

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/common.h" /* no extern "C" of its own */

#define OPTIM_NORM_BLOCK 4096
#define OPTIM_NORM_LANES 256
#define OPTIM_CLIP_EPS 1e-6

/* Where the main copy of the parameters lives (recipe optimizer.main_params). */
typedef enum optim_main { OPTIM_MAIN_FP32, OPTIM_MAIN_BF16 } optim_main;

/* Hyper-parameters; optim_cfg_default gives RL.md's. */
typedef struct optim_cfg {
  double lr;             /* after warm-up (1e-6) */
  int64_t warmup_steps;  /* linear warm-up length (0) */
  double beta1, beta2;   /* 0.9, 0.999 */
  double eps;            /* 1e-8 */
  double weight_decay;   /* decoupled, 0.01 */
  double grad_clip;      /* global norm clip, 1.0; 0 = off */
  int main_params;       /* optim_main (FP32) */
} optim_cfg;

void optim_cfg_default(optim_cfg *c);

/* One parameter tensor and its optimizer state (host or device pointers). */
typedef struct optim_tensor {
  const char *name;  /* for messages (host string) */
  int64_t n;         /* elements */
  uint16_t *w;       /* [n] BF16 weights, rewritten every step */
  float *main;       /* [n] FP32 main copy (OPTIM_MAIN_FP32); NULL with OPTIM_MAIN_BF16 */
  float *m, *v;      /* [n] FP32 moments */
  const float *grad; /* [n] FP32 gradient */
  int no_decay;      /* 1: no weight decay (e.g. norms), 0: decay */
} optim_tensor;

/* The FP32 scalars of one step, shared by every element (CPU and GPU). */
typedef struct optim_scalars {
  float gscale;    /* clip coefficient (1 when not clipping) */
  float decay;     /* 1 − lr_t·wd */
  float b1, omb1;  /* β1, 1 − β1 */
  float b2, omb2;  /* β2, 1 − β2 */
  float step_size; /* lr_t / (1 − β1^t) */
  float sqrt_bc2;  /* sqrt(1 − β2^t) */
  float eps;
} optim_scalars;

/* What a step did. */
typedef struct optim_info {
  double grad_norm; /* global norm before clipping */
  double clip_coef; /* the factor applied to the gradients (1: none) */
  double lr;        /* lr_t of this step */
} optim_info;

/* Learning rate of update number step (1-based). */
double optim_lr_at(const optim_cfg *c, int64_t step);
/* The clip coefficient for a global norm (1 when grad_clip is 0 or not exceeded). */
double optim_clip_coef(const optim_cfg *c, double grad_norm);
/* The scalars of update number step with clip coefficient coef. */
void optim_scalars_make(const optim_cfg *c, int64_t step, double coef, optim_scalars *s);
/* Checks a configuration and step (RL_EXIT_USAGE naming the bad value). */
int optim_cfg_check(const optim_cfg *c, int64_t step, rl_err *e);

/* Checks that every tensor has the buffers a step needs (RL_EXIT_USAGE naming it). */
int optim_tensors_check(const optim_tensor *t, int nt, int main_params, rl_err *e);

/* Host-side state for CPU training: m, v zeroed, main = the BF16 weights in
 * FP32 (OPTIM_MAIN_FP32). w, n and name must be set; grad is the caller's. */
void optim_tensor_alloc_cpu(optim_tensor *t, int main_params);
void optim_tensor_free_cpu(optim_tensor *t);

/* ‖g‖² partial of one block (≤ OPTIM_NORM_BLOCK elements) in the fixed order. */
double optim_norm_block_sq(const float *g, int64_t n);
/* Global gradient norm (FP64, fixed order). A non-finite gradient fails with
 * RL_EXIT_FAIL naming the tensor, its first bad index and the count. */
int optim_grad_norm_cpu(const optim_tensor *t, int nt, double *norm, rl_err *e);
/* The elementwise AdamW update of every tensor with scalars s (no checks). */
void optim_adamw_apply_cpu(const optim_scalars *s, const optim_tensor *t, int nt, int main_params);
/* One whole step: check, norm, clip, update (see the top of this file). */
int optim_step_cpu(const optim_cfg *c, const optim_tensor *t, int nt, int64_t step, optim_info *info,
                   rl_err *e);

/* CUDA twins (device pointers in t; stream = cudaStream_t or NULL). */
int optim_grad_norm_cuda(const optim_tensor *t, int nt, double *norm, void *stream, rl_err *e);
int optim_adamw_apply_cuda(const optim_scalars *s, const optim_tensor *t, int nt, int main_params,
                           void *stream, rl_err *e);
int optim_step_cuda(const optim_cfg *c, const optim_tensor *t, int nt, int64_t step,
                    optim_info *info, void *stream, rl_err *e);
/* Free the CUDA scratch buffers of this module. */
void optim_cuda_release(void);

/* ---------------------------------------------------------------- the element update */
#if defined(__CUDA_ARCH__)
#define OPT_FADD(a, b) __fadd_rn(a, b)
#define OPT_FSUB(a, b) __fsub_rn(a, b)
#define OPT_FMUL(a, b) __fmul_rn(a, b)
#define OPT_FDIV(a, b) __fdiv_rn(a, b)
#define OPT_FSQRT(a) __fsqrt_rn(a)
#else
#define OPT_FADD(a, b) ((a) + (b))
#define OPT_FSUB(a, b) ((a) - (b))
#define OPT_FMUL(a, b) ((a) * (b))
#define OPT_FDIV(a, b) ((a) / (b))
#define OPT_FSQRT(a) sqrtf(a)
#endif

/* AdamW on one element: p (main parameter), m, v updated in place from
 * gradient g. Every operation is one correctly rounded FP32 operation in this
 * order, on the CPU (compiled with -ffp-contract=off) and on the GPU (_rn
 * intrinsics). */
QF_HOSTDEV void optim_adamw_elem(const optim_scalars *s, float g, float *p, float *m, float *v,
                                 int no_decay) {
  g = OPT_FMUL(g, s->gscale);
  float pp = no_decay ? *p : OPT_FMUL(*p, s->decay);
  float mm = OPT_FADD(OPT_FMUL(s->b1, *m), OPT_FMUL(s->omb1, g));
  float vv = OPT_FADD(OPT_FMUL(s->b2, *v), OPT_FMUL(s->omb2, OPT_FMUL(g, g)));
  float denom = OPT_FADD(OPT_FDIV(OPT_FSQRT(vv), s->sqrt_bc2), s->eps);
  *p = OPT_FSUB(pp, OPT_FMUL(s->step_size, OPT_FDIV(mm, denom)));
  *m = mm;
  *v = vv;
}

#ifdef __cplusplus
}
#endif

#endif
