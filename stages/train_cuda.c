/* train_cuda.c — the trainer's device path (train_opts.device =
 * TRAIN_DEVICE_CUDA): forward/backward on model_cuda, AdamW CUDA on device
 * FP32 main parameters and moments, the BF16 masters updated on the device
 * and the training views re-quantized there (model_cuda_quantize). The RL
 * loss stays on the host: log-probs come to the host, d loss/d logp goes
 * back. The host optimizer buffers (t->ot) are staging copies for
 * checkpoints (trainer_sync_host / trainer_state_apply). */
#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"
#include "kernels/ops.h"
#include "model/model_cuda.h"
#include "stages/sync.h"
#include "stages/train_int.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

/* A CUDA status as an rl_err naming what failed. */
static int trd_ok(int status, const char *what, rl_err *e) {
  if (status == 0) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "train (cuda): %s failed: %s", what,
                 cudaGetErrorString((cudaError_t)status));
}

/* Copy the host optimizer state (m, v, main) of every tensor to the device
 * (dir 1) or back (dir 0). */
static int trd_state_copy(trainer *t, int to_device, rl_err *e) {
  int rc = 0;
  for (int i = 0; !rc && i < t->m->n_params; i++) {
    optim_tensor *h = &t->ot[i], *d = &t->dot[i];
    float *hb[3] = {h->m, h->v, h->main}, *db[3] = {d->m, d->v, d->main};
    size_t bytes = (size_t)h->n * sizeof(float);
    for (int j = 0; !rc && j < 3; j++) {
      if (!hb[j] || !db[j]) continue;
      rc = to_device ? trd_ok(cudaMemcpy(db[j], hb[j], bytes, cudaMemcpyHostToDevice), "cudaMemcpy (optimizer state to the device)", e)
                     : trd_ok(cudaMemcpy(hb[j], db[j], bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (optimizer state to the host)", e);
    }
  }
  return rc;
}

/* ---------------------------------------------------------------- data parallelism */

int trd_rank_set(trainer *t, int r, rl_err *e) {
  if (t->dp <= 1) return 0;
  t->rank = r;
  return device_set_current(t->dpdev[r], e);
}

/* Free the replicas and the collectives (rank 0 is the trainer's model). */
static void trd_dp_free(trainer *t) {
  if (t->dp <= 1) return;
  rl_err ignore;
  sync_dp_close(t->dpc); /* first: after a failed collective it aborts what could keep the frees waiting */
  t->dpc = NULL;
  for (int r = 1; r < t->dp; r++) {
    if (trd_rank_set(t, r, &ignore)) continue;
    model_cuda_acts_free(t->dpa[r]);
    model_free(t->dpm[r]);
    t->dpa[r] = NULL, t->dpm[r] = NULL;
  }
  trd_rank_set(t, 0, &ignore);
  t->dp = 1;
}

/* The replicas: rank r ≥ 1 gets m's config on GPU dp_gpus[r] (device masters
 * filled by the first refresh, from rank 0), gradients and activations; then
 * the N-rank communicator. m->cu must be on dp_gpus[0], the current device. */
static int trd_dp_init(trainer *t, rl_err *e) {
  const train_opts *o = &t->o;
  int n = o->dp_ranks, rc = 0;
  if (n > TRAIN_DP_MAX)
    return rl_errf(e, RL_EXIT_USAGE, "train: %d data-parallel ranks, at most %d", n, TRAIN_DP_MAX);
  if (device_current() != o->dp_gpus[0])
    return rl_errf(e, RL_EXIT_USAGE, "train: data parallelism: rank 0 is GPU %d, but the model lives on GPU %d "
                   "(the current device); make GPU %d current before trainer_new", o->dp_gpus[0], device_current(),
                   o->dp_gpus[0]);
  t->dp = n;
  memcpy(t->dpdev, o->dp_gpus, (size_t)n * sizeof *t->dpdev);
  for (int r = 1; r < n && !rc; r++) {
    if ((rc = trd_rank_set(t, r, e))) break;
    rc = model_create(&t->m->cfg, NULL, &t->dpm[r], e);
    if (!rc) model_keep_bf16_copy(t->dpm[r], t->m); /* its training views as rank 0's */
    if (!rc) rc = model_cuda_init(t->dpm[r], e);
    if (!rc) rc = model_cuda_grads_zero(t->dpm[r], e);
    if (!rc) t->dpa[r] = model_cuda_acts_new();
    if (rc) rl_err_prefix(e, "train (cuda): the data-parallel replica of rank %d on GPU %d: ", r, t->dpdev[r]);
  }
  rl_err ignore;
  int back = trd_rank_set(t, 0, rc ? &ignore : e);
  if (!rc) rc = back;
  if (!rc) rc = sync_dp_open(t->dpdev, n, o->dp_bucket_bytes, &t->dpc, e);
  t->dp_stale = 1; /* the replicas' masters are zeros until the first refresh */
  return rc;
}

/* Rank 0's masters → every replica (bytes), then their training views. */
static int trd_dp_refresh(trainer *t, rl_err *e) {
  int rc = sync_dp_broadcast_masters(t->dpc, t->dpm, e);
  for (int r = 1; r < t->dp && !rc; r++) {
    if ((rc = trd_rank_set(t, r, e))) break;
    rc = model_cuda_quantize(t->dpm[r], &t->o.policy, e);
    if (rc) rl_err_prefix(e, "training precision views of rank %d (GPU %d): ", r, t->dpdev[r]);
  }
  rl_err ignore;
  int back = trd_rank_set(t, 0, rc ? &ignore : e);
  if (!rc) rc = back;
  if (rc) return rl_err_prefix(e, "train (cuda): ");
  t->dp_stale = 0;
  return 0;
}

int trd_dp_reduce(trainer *t, rl_err *e) {
  if (t->dp <= 1) return 0;
  int rc = sync_dp_reduce_grads(t->dpc, t->dpm, e);
  return rc ? rl_err_prefix(e, "train (cuda): ") : 0;
}

int trd_init(trainer *t, rl_err *e) {
  model *m = t->m;
  int rc = 0;
  if (!m->cu && (rc = model_cuda_init(m, e))) return rl_err_prefix(e, "train (cuda): ");
  if ((rc = model_cuda_grads_zero(m, e))) return rl_err_prefix(e, "train (cuda): ");
  t->dot = rl_xcalloc((size_t)m->n_params, sizeof *t->dot);
  if ((rc = model_cuda_optim_views(m, t->dot, e))) return rl_err_prefix(e, "train (cuda): ");
  int fp32 = t->o.optim.main_params == OPTIM_MAIN_FP32;
  for (int i = 0; !rc && i < m->n_params; i++) {
    optim_tensor *d = &t->dot[i];
    size_t bytes = (size_t)d->n * sizeof(float) + 16;
    rc = trd_ok(cudaMalloc((void **)&d->m, bytes), "cudaMalloc (AdamW first moment)", e);
    if (!rc) rc = trd_ok(cudaMalloc((void **)&d->v, bytes), "cudaMalloc (AdamW second moment)", e);
    if (!rc && fp32) rc = trd_ok(cudaMalloc((void **)&d->main, bytes), "cudaMalloc (FP32 main parameters)", e);
  }
  if (!rc) rc = trd_state_copy(t, 1, e); /* moments zero, main = FP32 of the masters */
  if (!rc) t->ca = model_cuda_acts_new();
  t->dp = 1, t->rank = 0, t->dpm[0] = m, t->dpa[0] = t->ca;
  if (!rc && t->o.dp_ranks > 1) rc = trd_dp_init(t, e);
  return rc;
}

void trd_free(trainer *t) {
  trd_dp_free(t);
  if (t->dot)
    for (int i = 0; i < t->m->n_params; i++) {
      cudaFree(t->dot[i].m), cudaFree(t->dot[i].v), cudaFree(t->dot[i].main);
    }
  free(t->dot);
  t->dot = NULL;
  model_cuda_acts_free(t->ca);
  t->ca = NULL;
}

int trd_grads_zero(trainer *t, rl_err *e) {
  int rc = 0;
  for (int r = 0; r < t->dp && !rc; r++) {
    if ((rc = trd_rank_set(t, r, e))) break;
    rc = model_cuda_grads_zero(t->dpm[r], e);
    if (rc && t->dp > 1) rl_err_prefix(e, "rank %d (GPU %d): ", r, t->dpdev[r]);
  }
  if (t->dp > 1) {
    rl_err ignore;
    int back = trd_rank_set(t, 0, rc ? &ignore : e);
    if (!rc) rc = back;
  }
  return rc ? rl_err_prefix(e, "train (cuda): ") : 0;
}

int trd_forward(trainer *t, const model_batch *mb, const model_fwd_opts *fo, float temp, float *logp,
                float *ent, rl_err *e) {
  model *m = t->dpm[t->rank];
  model_cuda_acts *a = t->dpa[t->rank];
  int rc = model_cuda_forward(m, mb, fo, a, e);
  if (!rc) rc = model_cuda_logprob_forward(m, a, t->pk.targets, temp, logp, ent, e);
  if (rc && t->dp > 1) rl_err_prefix(e, "rank %d (GPU %d): ", t->rank, t->dpdev[t->rank]);
  return rc;
}

int trd_backward(trainer *t, const float *dlogp, const float *dent, rl_err *e) {
  int rc = model_cuda_backward_logprob(t->dpm[t->rank], t->dpa[t->rank], dlogp, dent, e);
  if (rc && t->dp > 1) rl_err_prefix(e, "rank %d (GPU %d): ", t->rank, t->dpdev[t->rank]);
  return rc;
}

int trd_optim_step(trainer *t, int64_t step, optim_info *info, rl_err *e) {
  int rc = optim_step_cuda(&t->o.optim, t->dot, t->m->n_params, step, info, NULL, e);
  if (!rc) t->dp_stale = 1; /* rank 0's masters changed: the replicas get them at the refresh */
  return rc;
}

int trd_weights_refresh(trainer *t, int from_host, rl_err *e) {
  model *m = t->m;
  int rc = 0;
  if (from_host) { /* a load: host state → device, BF16 = RNE(main) */
    for (int i = 0; i < m->n_params; i++)
      if (t->ot[i].main) ops_bf16_from_f32_cpu(m->params[i].w, t->ot[i].main, (size_t)t->ot[i].n);
    if ((rc = trd_state_copy(t, 1, e))) return rc;
    if ((rc = model_cuda_upload(m, e))) return rl_err_prefix(e, "train (cuda): ");
  }
  rc = model_cuda_quantize(m, &t->o.policy, e);
  if (rc) return rl_err_prefix(e, "train (cuda): training precision views: ");
  if (t->dp > 1 && (from_host || t->dp_stale)) return trd_dp_refresh(t, e);
  return 0;
}

int trd_sync_host(trainer *t, rl_err *e) {
  int rc = model_cuda_download(t->m, e);
  if (rc) return rl_err_prefix(e, "train (cuda): ");
  return trd_state_copy(t, 0, e);
}

int trd_state_pull(trainer *t, rl_err *e) { return trd_state_copy(t, 0, e); }

#else /* ---------------------------------------------------------------- no CUDA */

/* The one error of the device path in a build without CUDA. */
static int trd_nocuda(rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "train: this binary was built without CUDA; rebuild with nvcc available or use device: cpu");
}
int trd_init(trainer *t, rl_err *e) { (void)t; return trd_nocuda(e); }
void trd_free(trainer *t) { (void)t; }
int trd_grads_zero(trainer *t, rl_err *e) { (void)t; return trd_nocuda(e); }
int trd_forward(trainer *t, const model_batch *mb, const model_fwd_opts *fo, float temp, float *logp,
                float *ent, rl_err *e) {
  (void)t, (void)mb, (void)fo, (void)temp, (void)logp, (void)ent;
  return trd_nocuda(e);
}
int trd_backward(trainer *t, const float *dlogp, const float *dent, rl_err *e) {
  (void)t, (void)dlogp, (void)dent;
  return trd_nocuda(e);
}
int trd_optim_step(trainer *t, int64_t step, optim_info *info, rl_err *e) {
  (void)t, (void)step, (void)info;
  return trd_nocuda(e);
}
int trd_weights_refresh(trainer *t, int from_host, rl_err *e) { (void)t, (void)from_host; return trd_nocuda(e); }
int trd_sync_host(trainer *t, rl_err *e) { (void)t; return trd_nocuda(e); }
int trd_state_pull(trainer *t, rl_err *e) { (void)t; return trd_nocuda(e); }
int trd_rank_set(trainer *t, int r, rl_err *e) { (void)t, (void)r, (void)e; return 0; }
int trd_dp_reduce(trainer *t, rl_err *e) { (void)t, (void)e; return 0; }
#endif

int trainer_sync_host(trainer *t, rl_err *e) { return t->cuda ? trd_sync_host(t, e) : 0; }
