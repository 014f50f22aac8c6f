/* model_int.h — what the model's own files (model.c, forward.c, backward.c,
 * moe.c) share; not an API for other modules. */
#ifndef RLRUN_MODEL_INT_H
#define RLRUN_MODEL_INT_H

#include "model/model.h"

/* Below this much work (multiply-adds) a loop runs on one thread: tiny
 * OpenMP regions cost more than they save, badly so on a loaded machine. */
#define MODEL_OMP_MIN (1 << 18)

/* out[M][N] = x[M][K] · Wᵀ of linear L: FP32 (x32, w32, FP64 sums) when f32,
 * else linear_forward on xb with the quantized view (BF16 output → FP32). */
int mlin_forward(const model *m, const model_linear *L, int f32, const float *x32,
                 const uint16_t *xb, int64_t M, float *out, rl_err *e);
/* Backward of linear L for upstream dy [M][N]: dW accumulated into L->p->g;
 * dx [M][K] written (add = 0) or added to (add = 1), NULL to skip. POLICY
 * mode: linear_backward on BF16 operands (dy rounded to BF16, saved BF16 x,
 * BF16 master), FP32 accumulation. */
int mlin_backward(model *m, const model_linear *L, int f32, const float *dy, int64_t M,
                  const float *x32, const uint16_t *xb, float *dx, int add, rl_err *e);
/* The FP32 values of a norm weight: w32 in F32 mode, else the BF16 master
 * converted into buf (p->rows floats). */
const float *model_norm_w(const model_param *p, int f32, float *buf);

/* MoE block of layer l on xn2 (in a->la[l]): router, top-k or replay,
 * experts; writes out [T,H]. */
int moe_forward(model *m, int l, const int32_t *replay, model_acts *a, float *out, rl_err *e);
/* Its backward for upstream dy [T,H]: parameter gradients accumulated,
 * dxn2 [T,H] written. */
int moe_backward(model *m, int l, model_acts *a, const float *dy, float *dxn2, rl_err *e);

/* Grow *p to hold n elements of size sz (contents not kept). */
void model_grow(void **p, size_t n, size_t sz);

#endif
