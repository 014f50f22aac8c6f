/* train_state.c — the trainer's checkpoint state: optimizer step, moments,
 * FP32 main parameters and the KL reference weights as named tensors (names
 * and layout at the bottom of train.h), and a safetensors file of them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stages/train_int.h"

#define TRAIN_STATE_FORMAT "rlrun-train-state"
#define TRAIN_STATE_VERSION "1"

/* Fill one entry: name prefix + parameter name, the parameter's shape. */
static void entry_set(train_state_tensor *x, const char *prefix, const model_param *p,
                      st_dtype dt, void *data) {
  snprintf(x->name, sizeof x->name, "%s%s", prefix, p->name);
  x->dtype = dt;
  x->ndim = p->cols == 1 ? 1 : 2;
  x->shape[0] = p->rows;
  x->shape[1] = p->cols == 1 ? 0 : p->cols;
  x->data = data;
  x->nbytes = (uint64_t)(p->rows * p->cols) * st_dtype_size(dt);
}

int trainer_state_list(trainer *t, train_state_tensor **out, int *n, rl_err *e) {
  model *m = t->m;
  /* device trainer: its optimizer state into the host buffers listed here (the masters
   * are the caller's: trainer_sync_host before saving them) */
  int rc = t->cuda ? trd_state_pull(t, e) : 0;
  if (rc) return rc;
  int per = 2 + (t->ot[0].main != NULL);
  int cap = 1 + m->n_params * per + (t->ref ? m->n_params : 0), k = 0;
  train_state_tensor *v = rl_xcalloc((size_t)cap, sizeof *v);
  snprintf(v[0].name, sizeof v[0].name, "optim.step");
  v[0].dtype = ST_I64, v[0].ndim = 1, v[0].shape[0] = 1;
  v[0].data = &t->step, v[0].nbytes = sizeof(int64_t);
  k = 1;
  for (int i = 0; i < m->n_params; i++) {
    const model_param *p = &m->params[i];
    optim_tensor *x = &t->ot[i];
    entry_set(&v[k++], "optim.m.", p, ST_F32, x->m);
    entry_set(&v[k++], "optim.v.", p, ST_F32, x->v);
    if (x->main) entry_set(&v[k++], "optim.main.", p, ST_F32, x->main);
  }
  if (t->ref)
    for (int i = 0; i < m->n_params; i++) {
      model_param *p = &t->ref->params[i];
      if (t->o.f32) entry_set(&v[k++], "train.ref.", p, ST_F32, p->w32);
      else entry_set(&v[k++], "train.ref.", p, ST_BF16, p->w);
    }
  (void)e;
  *out = v;
  *n = k;
  return 0;
}

/* First non-finite value of n floats, or -1. */
static int64_t first_nonfinite(const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return i;
  return -1;
}

int trainer_state_apply(trainer *t, rl_err *e) {
  model *m = t->m;
  if (t->step < 0)
    return rl_errf(e, RL_EXIT_STATE, "train state: optim.step is %lld (must be >= 0)",
                   (long long)t->step);
  for (int i = 0; i < m->n_params; i++) {
    optim_tensor *x = &t->ot[i];
    const float *bufs[3] = {x->m, x->v, x->main};
    const char *what[3] = {"optim.m.", "optim.v.", "optim.main."};
    for (int j = 0; j < 3; j++) {
      if (!bufs[j]) continue;
      int64_t bad = first_nonfinite(bufs[j], x->n);
      if (bad >= 0)
        return rl_errf(e, RL_EXIT_STATE,
                       "train state: %s%s[%lld] is %g: the checkpoint's optimizer state is corrupt "
                       "(resume from an earlier checkpoint)",
                       what[j], x->name, (long long)bad, bufs[j][bad]);
    }
  }
  if (t->ref) {
    for (int i = 0; i < m->n_params; i++) {
      model_param *p = &t->ref->params[i];
      if (t->o.f32) ops_bf16_from_f32_cpu(p->w, p->w32, (size_t)(p->rows * p->cols));
    }
    t->ref->quantized = 0;
  }
  return tr_weights_refresh(t, 1, e);
}

int trainer_state_save(trainer *t, const char *path, rl_err *e) {
  train_state_tensor *v;
  int n, rc = trainer_state_list(t, &v, &n, e);
  if (rc) return rc;
  st_writer *w = st_writer_new(path);
  rc = st_writer_meta(w, "format", TRAIN_STATE_FORMAT, e);
  if (!rc) rc = st_writer_meta(w, "version", TRAIN_STATE_VERSION, e);
  for (int i = 0; !rc && i < n; i++) rc = st_writer_add(w, v[i].name, v[i].dtype, v[i].ndim, v[i].shape, e);
  if (!rc) rc = st_writer_begin(w, e);
  for (int i = 0; !rc && i < n; i++) rc = st_writer_write(w, v[i].name, v[i].data, v[i].nbytes, e);
  if (rc) st_writer_abort(w);
  else rc = st_writer_finish(w, e);
  free(v);
  return rc ? rl_err_prefix(e, "writing the train state %s: ", path) : 0;
}

/* Read optim.step from tensor st (I64/I32/F32/F64, scalar or [1]). */
static int read_step(st_file *f, const st_tensor *st, int64_t *step, rl_err *e) {
  if (st->numel != 1)
    return rl_errf(e, RL_EXIT_STATE, "%s: optim.step has %llu elements (expected 1)",
                   st_file_path(f), (unsigned long long)st->numel);
  unsigned char buf[8] = {0};
  if (st->dtype != ST_I64 && st->dtype != ST_I32 && st->dtype != ST_F32 && st->dtype != ST_F64)
    return rl_errf(e, RL_EXIT_STATE, "%s: optim.step has dtype %s (expected I64)", st_file_path(f),
                   st_dtype_name(st->dtype));
  int rc = st_file_read(f, st, buf, e);
  if (rc) return rc;
  double d = 0;
  if (st->dtype == ST_I64) memcpy(step, buf, 8);
  else if (st->dtype == ST_I32) { int32_t x; memcpy(&x, buf, 4); *step = x; }
  else if (st->dtype == ST_F32) { float x; memcpy(&x, buf, 4); d = x; }
  else memcpy(&d, buf, 8);
  if (st->dtype == ST_F32 || st->dtype == ST_F64) {
    if (!(d >= 0 && d == floor(d) && d < 9e15))
      return rl_errf(e, RL_EXIT_STATE, "%s: optim.step is %g (expected a whole number >= 0)",
                     st_file_path(f), d);
    *step = (int64_t)d;
  }
  return 0;
}

int trainer_state_load(trainer *t, const char *path, rl_err *e) {
  st_file *f;
  int rc = st_file_open(path, &f, e);
  if (rc) return rl_err_prefix(e, "reading the train state: ");
  train_state_tensor *v;
  int n;
  if ((rc = trainer_state_list(t, &v, &n, e))) {
    st_file_close(f);
    return rc;
  }
  /* Read everything into scratch copies first, so a bad file changes nothing. */
  void **tmp = rl_xcalloc((size_t)n, sizeof(void *));
  int64_t step = 0;
  for (int i = 0; !rc && i < n; i++) {
    const st_tensor *st = st_file_find(f, v[i].name);
    if (!st) {
      rc = rl_errf(e, RL_EXIT_STATE, "%s: tensor %s is missing (a checkpoint of another model or "
                   "optimizer configuration?)", path, v[i].name);
      break;
    }
    if (i == 0) {
      rc = read_step(f, st, &step, e);
      continue;
    }
    int shape_ok = st->ndim == v[i].ndim && st->shape[0] == v[i].shape[0] &&
                   (v[i].ndim == 1 || st->shape[1] == v[i].shape[1]);
    if (st->dtype != v[i].dtype || !shape_ok) {
      rc = rl_errf(e, RL_EXIT_STATE, "%s: tensor %s is %s with %d dims [%lld, ...], expected %s "
                   "[%lld, %lld]", path, v[i].name, st_dtype_name(st->dtype), st->ndim,
                   (long long)(st->ndim ? st->shape[0] : 0), st_dtype_name(v[i].dtype),
                   (long long)v[i].shape[0], (long long)v[i].shape[1]);
      break;
    }
    tmp[i] = rl_xmalloc(v[i].nbytes ? v[i].nbytes : 1);
    rc = st_file_read(f, st, tmp[i], e);
  }
  for (int i = 1; !rc && i < n; i++) {
    int64_t bad = v[i].dtype == ST_F32 ? first_nonfinite(tmp[i], (int64_t)(v[i].nbytes / 4)) : -1;
    if (bad >= 0)
      rc = rl_errf(e, RL_EXIT_STATE, "%s: %s[%lld] is not finite: the optimizer state is corrupt "
                   "(resume from an earlier checkpoint)", path, v[i].name, (long long)bad);
  }
  if (!rc && step < 0)
    rc = rl_errf(e, RL_EXIT_STATE, "%s: optim.step is %lld (must be >= 0)", path, (long long)step);
  if (!rc) {
    t->step = step;
    for (int i = 1; i < n; i++) memcpy(v[i].data, tmp[i], v[i].nbytes);
  }
  for (int i = 0; i < n; i++) free(tmp[i]);
  free(tmp);
  free(v);
  st_file_close(f);
  if (!rc) rc = trainer_state_apply(t, e);
  return rc ? rl_err_prefix(e, "loading the train state: ") : 0;
}
