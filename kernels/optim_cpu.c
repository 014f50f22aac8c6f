/* optim_cpu.c — the CPU reference of AdamW (definition in optim.h). Compiled
 * with -ffp-contract=off (Makefile) so that no FMA changes a bit of the
 * element update. */
#include "kernels/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void optim_cfg_default(optim_cfg *c) {
  memset(c, 0, sizeof *c);
  c->lr = 1e-6;
  c->warmup_steps = 0;
  c->beta1 = 0.9;
  c->beta2 = 0.999;
  c->eps = 1e-8;
  c->weight_decay = 0.01;
  c->grad_clip = 1.0;
  c->main_params = OPTIM_MAIN_FP32;
}

double optim_lr_at(const optim_cfg *c, int64_t step) {
  if (c->warmup_steps > 0 && step < c->warmup_steps)
    return c->lr * (double)step / (double)c->warmup_steps;
  return c->lr;
}

double optim_clip_coef(const optim_cfg *c, double grad_norm) {
  if (!(c->grad_clip > 0)) return 1.0;
  double coef = c->grad_clip / (grad_norm + OPTIM_CLIP_EPS);
  return coef < 1.0 ? coef : 1.0;
}

void optim_scalars_make(const optim_cfg *c, int64_t step, double coef, optim_scalars *s) {
  double lr = optim_lr_at(c, step);
  double bc1 = 1.0 - pow(c->beta1, (double)step), bc2 = 1.0 - pow(c->beta2, (double)step);
  s->gscale = (float)coef;
  s->decay = (float)(1.0 - lr * c->weight_decay);
  s->b1 = (float)c->beta1;
  s->omb1 = (float)(1.0 - c->beta1);
  s->b2 = (float)c->beta2;
  s->omb2 = (float)(1.0 - c->beta2);
  s->step_size = (float)(lr / bc1);
  s->sqrt_bc2 = (float)sqrt(bc2);
  s->eps = (float)c->eps;
}

int optim_cfg_check(const optim_cfg *c, int64_t step, rl_err *e) {
  const char *bad = NULL;
  double v = 0;
  if (!(c->lr >= 0 && isfinite(c->lr))) bad = "lr", v = c->lr;
  else if (!(c->beta1 >= 0 && c->beta1 < 1)) bad = "beta1", v = c->beta1;
  else if (!(c->beta2 >= 0 && c->beta2 < 1)) bad = "beta2", v = c->beta2;
  else if (!(c->eps > 0 && isfinite(c->eps))) bad = "eps", v = c->eps;
  else if (!(c->weight_decay >= 0 && isfinite(c->weight_decay))) bad = "weight_decay", v = c->weight_decay;
  else if (!(c->grad_clip >= 0)) bad = "grad_clip", v = c->grad_clip;
  else if (c->warmup_steps < 0) bad = "warmup_steps", v = (double)c->warmup_steps;
  else if (step < 1) bad = "step (1-based update count)", v = (double)step;
  else if (c->main_params != OPTIM_MAIN_FP32 && c->main_params != OPTIM_MAIN_BF16)
    bad = "main_params", v = c->main_params;
  if (bad) return rl_errf(e, RL_EXIT_USAGE, "optimizer: %s = %g is out of range", bad, v);
  return 0;
}

void optim_tensor_alloc_cpu(optim_tensor *t, int main_params) {
  size_t n = (size_t)(t->n > 0 ? t->n : 1);
  t->m = rl_xcalloc(n, sizeof(float));
  t->v = rl_xcalloc(n, sizeof(float));
  t->main = NULL;
  if (main_params == OPTIM_MAIN_FP32) {
    t->main = rl_xmalloc(n * sizeof(float));
    for (int64_t i = 0; i < t->n; i++) t->main[i] = fmt_bf16_to_f32(t->w[i]);
  }
}

void optim_tensor_free_cpu(optim_tensor *t) {
  free(t->m), free(t->v), free(t->main);
  t->m = t->v = t->main = NULL;
}

double optim_norm_block_sq(const float *g, int64_t n) {
  double s[OPTIM_NORM_LANES];
  for (int j = 0; j < OPTIM_NORM_LANES; j++) {
    double a = 0;
    for (int64_t i = j; i < n; i += OPTIM_NORM_LANES) a += (double)g[i] * (double)g[i];
    s[j] = a;
  }
  for (int h = OPTIM_NORM_LANES / 2; h > 0; h >>= 1)
    for (int j = 0; j < h; j++) s[j] += s[j + h];
  return s[0];
}

/* The error for a tensor whose gradient holds non-finite values. */
static int grad_nonfinite(const optim_tensor *t, rl_err *e) {
  int64_t first = -1, count = 0;
  for (int64_t i = 0; i < t->n; i++)
    if (!isfinite(t->grad[i]))
      if (count++ == 0) first = i;
  return rl_errf(e, RL_EXIT_FAIL,
                 "optimizer: the gradient of tensor '%s' holds %lld non-finite value(s) (first: %g at "
                 "index %lld of %lld); the step was stopped before any weight, moment or step count "
                 "changed: check the loss for overflow or lower train.lr",
                 t->name ? t->name : "?", (long long)count, first >= 0 ? t->grad[first] : 0.0,
                 (long long)first, (long long)t->n);
}

/* ‖g‖² of one tensor in the fixed order; non-finite when any element is. */
static double tensor_norm_sq(const optim_tensor *t) {
  int64_t nb = (t->n + OPTIM_NORM_BLOCK - 1) / OPTIM_NORM_BLOCK;
  if (nb <= 1) return t->n > 0 ? optim_norm_block_sq(t->grad, t->n) : 0.0;
  double *part = rl_xmalloc((size_t)nb * sizeof(double));
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; b++) {
    int64_t i0 = b * OPTIM_NORM_BLOCK, len = t->n - i0 < OPTIM_NORM_BLOCK ? t->n - i0 : OPTIM_NORM_BLOCK;
    part[b] = optim_norm_block_sq(t->grad + i0, len);
  }
  double s = 0;
  for (int64_t b = 0; b < nb; b++) s += part[b];
  free(part);
  return s;
}

int optim_grad_norm_cpu(const optim_tensor *t, int nt, double *norm, rl_err *e) {
  double total = 0;
  for (int k = 0; k < nt; k++) {
    double s = tensor_norm_sq(&t[k]);
    /* Squares of finite FP32 values cannot overflow FP64 sums: non-finite means a bad input. */
    if (!isfinite(s)) return grad_nonfinite(&t[k], e);
    total += s;
  }
  *norm = sqrt(total);
  return 0;
}

void optim_adamw_apply_cpu(const optim_scalars *s, const optim_tensor *t, int nt, int main_params) {
  for (int k = 0; k < nt; k++) {
    const optim_tensor *x = &t[k];
    int nd = x->no_decay;
#pragma omp parallel for schedule(static) if (x->n > 65536)
    for (int64_t i = 0; i < x->n; i++) {
      float p = main_params == OPTIM_MAIN_FP32 ? x->main[i] : fmt_bf16_to_f32(x->w[i]);
      optim_adamw_elem(s, x->grad[i], &p, &x->m[i], &x->v[i], nd);
      if (main_params == OPTIM_MAIN_FP32) x->main[i] = p;
      x->w[i] = fmt_bf16_from_f32(p);
    }
  }
}

int optim_tensors_check(const optim_tensor *t, int nt, int main_params, rl_err *e) {
  for (int k = 0; k < nt; k++) {
    const optim_tensor *x = &t[k];
    if (x->n < 0 || (x->n > 0 && (!x->w || !x->m || !x->v || !x->grad ||
                                  (main_params == OPTIM_MAIN_FP32 && !x->main))))
      return rl_errf(e, RL_EXIT_USAGE,
                     "optimizer: tensor %d ('%s') lacks a buffer (w, m, v, grad%s) or has n = %lld", k,
                     x->name ? x->name : "?", main_params == OPTIM_MAIN_FP32 ? ", main" : "",
                     (long long)x->n);
  }
  return 0;
}

int optim_step_cpu(const optim_cfg *c, const optim_tensor *t, int nt, int64_t step, optim_info *info,
                   rl_err *e) {
  int rc = optim_cfg_check(c, step, e);
  if (!rc) rc = optim_tensors_check(t, nt, c->main_params, e);
  double norm = 0;
  if (!rc) rc = optim_grad_norm_cpu(t, nt, &norm, e);
  if (rc) return rl_err_prefix(e, "step %lld: ", (long long)step);
  double coef = optim_clip_coef(c, norm);
  optim_scalars s;
  optim_scalars_make(c, step, coef, &s);
  optim_adamw_apply_cpu(&s, t, nt, c->main_params);
  if (info) info->grad_norm = norm, info->clip_coef = coef, info->lr = optim_lr_at(c, step);
  return 0;
}

#if !RLRUN_CUDA
/* A build without CUDA: the twins say so. */
static int optim_no_cuda(rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "optimizer: this rlrun was built without CUDA; use device: cpu or rebuild with nvcc");
}
int optim_grad_norm_cuda(const optim_tensor *t, int nt, double *norm, void *stream, rl_err *e) {
  return optim_no_cuda(e);
}
int optim_adamw_apply_cuda(const optim_scalars *s, const optim_tensor *t, int nt, int main_params,
                           void *stream, rl_err *e) {
  return optim_no_cuda(e);
}
int optim_step_cuda(const optim_cfg *c, const optim_tensor *t, int nt, int64_t step,
                    optim_info *info, void *stream, rl_err *e) {
  return optim_no_cuda(e);
}
void optim_cuda_release(void) {}
#endif
