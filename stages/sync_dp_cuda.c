/* sync_dp_cuda.c — data parallelism's collectives (sync.h, "Data-parallel
 * training"): the fixed-order all-reduce of FP32 gradients over N GPUs of
 * this process (pack → all-to-all → ordered sum → all-gather → unpack, per
 * bucket) and the broadcast of rank 0's BF16 masters to the other replicas.
 *
 * One thread drives every rank: each NCCL phase is one ncclGroupStart/End
 * holding the calls of all N ranks. Every rank works on its own non-blocking
 * stream; an event recorded on the rank's default stream orders the work
 * after whatever was queued there (the backward), and the call ends with
 * each stream synchronized, so the default streams may use the result at
 * once. Buckets run one after the other on the same stream (no pipelining:
 * the transfer of a step's gradients is small next to its backward). */
#include <stdlib.h>
#include <string.h>

#include "model/model_cuda.h"
#include "stages/sync.h"
#include "stages/sync_int.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>

/* A CUDA runtime status as an error. */
static int dp_ok(cudaError_t st, const char *what, rl_err *e) {
  if (st == cudaSuccess) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "data parallelism (CUDA): %s failed: %s", what, cudaGetErrorString(st));
}
/* An NCCL status as an error. */
static int dp_nccl(ncclResult_t st, const char *what, rl_err *e) {
  if (st == ncclSuccess) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "data parallelism (NCCL): %s failed: %s (NCCL_DEBUG=WARN says more)", what,
                 ncclGetErrorString(st));
}
#define DC(call, what) \
  if ((rc = dp_ok((call), what, e))) goto done
#define DN(call, what) \
  if ((rc = dp_nccl((call), what, e))) goto done

struct sync_dp {
  int n;                               /* ranks */
  int dev[SYNC_DP_MAX_RANKS];
  ncclComm_t comm[SYNC_DP_MAX_RANKS];
  cudaStream_t st[SYNC_DP_MAX_RANKS];
  cudaEvent_t ev[SYNC_DP_MAX_RANKS];   /* "the default stream got here" */
  uint64_t bucket;                     /* bucket bytes (a multiple of 16) */
  uint64_t cap;                        /* bytes of each buffer below */
  uint8_t *pk[SYNC_DP_MAX_RANKS];      /* the packed bucket (then the summed one) */
  uint8_t *rv[SYNC_DP_MAX_RANKS];      /* slices received from the other ranks */
  sync_seg *dseg[SYNC_DP_MAX_RANKS];   /* segment tables on each GPU */
  size_t dseg_cap[SYNC_DP_MAX_RANKS];
  int broken; /* a collective failed part way: close aborts the communicators first */
};

int sync_dp_ranks(const sync_dp *d) { return d ? d->n : 0; }

/* A failed collective aborts the communicators at once, on every GPU (one
 * launched on some ranks only would otherwise keep ncclCommDestroy and
 * cudaFree waiting for good); the object then refuses further collectives. */
static void dp_abort(sync_dp *d) {
  for (int r = 0; r < d->n; r++)
    if (d->comm[r] && cudaSetDevice(d->dev[r]) == cudaSuccess) ncclCommAbort(d->comm[r]), d->comm[r] = NULL;
}
void sync_dp_close(sync_dp *d) {
  if (!d) return;
  int cur = 0;
  cudaGetDevice(&cur);
  if (d->broken) dp_abort(d);
  for (int r = 0; r < d->n; r++) { /* teardown is best effort: nothing left to undo */
    if (cudaSetDevice(d->dev[r]) != cudaSuccess) continue;
    if (d->comm[r]) ncclCommDestroy(d->comm[r]);
    cudaFree(d->pk[r]), cudaFree(d->rv[r]), cudaFree(d->dseg[r]);
    if (d->ev[r]) cudaEventDestroy(d->ev[r]);
    if (d->st[r]) cudaStreamDestroy(d->st[r]);
  }
  cudaSetDevice(cur);
  free(d);
}

int sync_dp_open(const int *devs, int n_ranks, uint64_t bucket_bytes, sync_dp **out, rl_err *e) {
  *out = NULL;
  int n_gpus = 0, rc = 0, cur = 0;
  if (n_ranks < 2 || n_ranks > SYNC_DP_MAX_RANKS)
    return rl_errf(e, RL_EXIT_USAGE, "data parallelism: %d ranks; name 2 … %d GPUs in gpus.train", n_ranks,
                   SYNC_DP_MAX_RANKS);
  if ((rc = dp_ok(cudaGetDeviceCount(&n_gpus), "cudaGetDeviceCount", e))) return rc;
  for (int r = 0; r < n_ranks; r++) {
    if (devs[r] < 0 || devs[r] >= n_gpus)
      return rl_errf(e, RL_EXIT_HARDWARE, "data parallelism: rank %d is GPU %d, but this machine has %d GPU%s", r,
                     devs[r], n_gpus, n_gpus == 1 ? "" : "s");
    for (int q = 0; q < r; q++)
      if (devs[q] == devs[r])
        return rl_errf(e, RL_EXIT_USAGE, "data parallelism: GPU %d is rank %d and rank %d; list each GPU once", devs[r],
                       q, r);
  }
  cudaGetDevice(&cur);
  setenv("NCCL_NVLS_ENABLE", "0", 0); /* GPU.md: NVLink SHARP multicast stays off */
  sync_dp *d = rl_xcalloc(1, sizeof *d);
  d->n = n_ranks;
  memcpy(d->dev, devs, (size_t)n_ranks * sizeof *devs);
  uint64_t b = bucket_bytes ? bucket_bytes : SYNC_DEFAULT_BUCKET;
  d->bucket = b < 16 * (uint64_t)n_ranks ? 16 * (uint64_t)n_ranks : b / 16 * 16;
  DN(ncclCommInitAll(d->comm, n_ranks, d->dev), "ncclCommInitAll (the train GPUs)");
  for (int r = 0; r < n_ranks; r++) {
    DC(cudaSetDevice(d->dev[r]), "cudaSetDevice");
    DC(cudaStreamCreateWithFlags(&d->st[r], cudaStreamNonBlocking), "cudaStreamCreate");
    DC(cudaEventCreateWithFlags(&d->ev[r], cudaEventDisableTiming), "cudaEventCreate");
  }
done:
  cudaSetDevice(cur);
  if (rc) {
    sync_dp_close(d);
    return rl_err_prefix(e, "sync_dp_open: ");
  }
  *out = d;
  return 0;
}

/* Bucket buffers of at least cap bytes on every GPU (grown, never shrunk).
 * The padding after a bucket's data in its last slice is summed along and
 * never unpacked: whatever it holds is harmless. */
static int dp_buffers(sync_dp *d, uint64_t cap, rl_err *e) {
  int rc = 0;
  if (cap <= d->cap) return 0;
  for (int r = 0; r < d->n; r++) {
    DC(cudaSetDevice(d->dev[r]), "cudaSetDevice");
    cudaFree(d->pk[r]), cudaFree(d->rv[r]);
    d->pk[r] = d->rv[r] = NULL;
    DC(cudaMalloc((void **)&d->pk[r], cap), "cudaMalloc (bucket buffer)");
    DC(cudaMalloc((void **)&d->rv[r], cap), "cudaMalloc (receive buffer)");
    DC(cudaMemset(d->pk[r], 0, cap), "cudaMemset");
    DC(cudaMemset(d->rv[r], 0, cap), "cudaMemset");
  }
  d->cap = cap;
done:
  return rc;
}

/* The flat stream of n tensors of bytes[i]: off[i] (16-aligned), total. */
static uint64_t dp_layout(const uint64_t *bytes, int n, uint64_t *off) {
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    off[i] = at;
    at += (bytes[i] + 15) / 16 * 16;
  }
  return at;
}

/* The copy pieces between the tensors ptr[0..n) (at off[i], bytes[i] each)
 * and a bucket buffer buf for every bucket: pack (tensor → buffer) or unpack;
 * first[b] … first[b+1] are the pieces of bucket b. */
static void dp_segs(const uint64_t *off, const uint64_t *bytes, int n, uint64_t total, uint64_t bucket,
                    uint8_t *const *ptr, uint8_t *buf, int pack, sync_seg **segs, size_t *ns, size_t **first) {
  int64_t nb = (int64_t)((total + bucket - 1) / bucket);
  size_t cap = 0;
  *segs = NULL, *ns = 0;
  *first = rl_xcalloc((size_t)nb + 1, sizeof **first);
  int i0 = 0;
  for (int64_t b = 0; b < nb; b++) {
    uint64_t lo = (uint64_t)b * bucket, hi = lo + bucket < total ? lo + bucket : total;
    (*first)[b] = *ns;
    while (i0 < n && off[i0] + bytes[i0] <= lo) i0++;
    for (int i = i0; i < n && off[i] < hi; i++) {
      uint64_t a = off[i] > lo ? off[i] : lo, z = off[i] + bytes[i] < hi ? off[i] + bytes[i] : hi;
      for (uint64_t c = a; c < z; c += SYNC_SEG_CHUNK) {
        if (*ns == cap) {
          cap = cap ? 2 * cap : 1024;
          *segs = rl_xrealloc(*segs, cap * sizeof **segs);
        }
        uint64_t len = z - c < SYNC_SEG_CHUNK ? z - c : SYNC_SEG_CHUNK;
        uint8_t *t = ptr[i] + (c - off[i]), *bb = buf + (c - lo);
        (*segs)[(*ns)++] = pack ? (sync_seg){t, bb, len} : (sync_seg){bb, t, len};
      }
    }
  }
  (*first)[nb] = *ns;
}

/* Upload a segment table to rank r's GPU (grown buffer; synchronous). */
static int dp_segs_upload(sync_dp *d, int r, const sync_seg *segs, size_t n, size_t at, rl_err *e) {
  int rc = 0;
  if (at + n > d->dseg_cap[r]) {
    sync_seg *old = d->dseg[r], *nw = NULL;
    DC(cudaMalloc((void **)&nw, (at + n) * sizeof *segs), "cudaMalloc (segment table)");
    if (at) DC(cudaMemcpy(nw, old, at * sizeof *segs, cudaMemcpyDeviceToDevice), "cudaMemcpy (segment table)");
    cudaFree(old);
    d->dseg[r] = nw, d->dseg_cap[r] = at + n;
  }
  if (n) DC(cudaMemcpy(d->dseg[r] + at, segs, n * sizeof *segs, cudaMemcpyHostToDevice), "cudaMemcpy (segment table)");
done:
  return rc;
}

/* Make every rank's stream wait for the work queued on its default stream. */
static int dp_begin(sync_dp *d, rl_err *e) {
  int rc = 0;
  for (int r = 0; r < d->n; r++) {
    DC(cudaSetDevice(d->dev[r]), "cudaSetDevice");
    DC(cudaEventRecord(d->ev[r], NULL), "cudaEventRecord (default stream)");
    DC(cudaStreamWaitEvent(d->st[r], d->ev[r], 0), "cudaStreamWaitEvent");
  }
done:
  return rc;
}

/* Wait for every rank's stream. */
static int dp_end(sync_dp *d, rl_err *e) {
  int rc = 0;
  for (int r = 0; r < d->n; r++) {
    DC(cudaSetDevice(d->dev[r]), "cudaSetDevice");
    DC(cudaStreamSynchronize(d->st[r]), "the data-parallel collective");
  }
done:
  return rc;
}

/* The tables of one call: per rank, the pack pieces then the unpack pieces
 * (uploaded one after the other into dseg[r]); pf/uf index them per bucket. */
typedef struct dp_tables {
  size_t *pf[SYNC_DP_MAX_RANKS], *uf[SYNC_DP_MAX_RANKS];
  size_t np[SYNC_DP_MAX_RANKS];
} dp_tables;

static void dp_tables_free(dp_tables *t, int n) {
  for (int r = 0; r < n; r++) free(t->pf[r]), free(t->uf[r]);
}

/* Build and upload the tables: ranks r < pack_upto pack into pk[r], ranks
 * r ≥ unpack_from unpack from it. */
static int dp_tables_make(sync_dp *d, const uint64_t *off, const uint64_t *bytes, int nt, uint64_t total,
                          uint8_t *const *const *ptr, int pack_upto, int unpack_from, dp_tables *t, rl_err *e) {
  int rc = 0;
  memset(t, 0, sizeof *t);
  for (int r = 0; r < d->n && !rc; r++) {
    sync_seg *ps = NULL, *us = NULL;
    size_t np = 0, nu = 0;
    if (r < pack_upto) dp_segs(off, bytes, nt, total, d->bucket, ptr[r], d->pk[r], 1, &ps, &np, &t->pf[r]);
    if (r >= unpack_from) dp_segs(off, bytes, nt, total, d->bucket, ptr[r], d->pk[r], 0, &us, &nu, &t->uf[r]);
    rc = dp_ok(cudaSetDevice(d->dev[r]), "cudaSetDevice", e);
    if (!rc) rc = dp_segs_upload(d, r, ps, np, 0, e);
    if (!rc) rc = dp_segs_upload(d, r, us, nu, np, e);
    t->np[r] = np;
    free(ps), free(us);
  }
  return rc;
}

int sync_dp_allreduce(sync_dp *d, float *const *const *bufs, const int64_t *count, int n_tensors, rl_err *e) {
  int rc = 0, n = d->n, cur = 0;
  if (d->broken)
    return rl_errf(e, RL_EXIT_FAIL, "data-parallel training: the NCCL communicators were aborted after a failed "
                   "collective; resume the run (rlrun resume) to start them afresh");
  cudaGetDevice(&cur);
  uint64_t *bytes = rl_xcalloc((size_t)n_tensors + 1, sizeof *bytes), *off = rl_xcalloc((size_t)n_tensors + 1, 8);
  for (int i = 0; i < n_tensors; i++) bytes[i] = (uint64_t)count[i] * 4;
  uint64_t total = dp_layout(bytes, n_tensors, off);
  int64_t nb = (int64_t)((total + d->bucket - 1) / d->bucket);
  /* a bucket of up to `bucket` bytes is N slices of S floats (S a multiple of 4: 16-byte slices) */
  uint64_t bf = (total < d->bucket ? total : d->bucket) / 4, smax = ((bf + n - 1) / n + 3) / 4 * 4;
  dp_tables t;
  memset(&t, 0, sizeof t);
  if (!total) goto done;
  if ((rc = dp_buffers(d, smax * 4 * (uint64_t)n, e))) goto done;
  if ((rc = dp_tables_make(d, off, bytes, n_tensors, total, (uint8_t *const *const *)bufs, n, 0, &t, e))) goto done;
  if ((rc = dp_begin(d, e))) goto done;
  for (int64_t b = 0; b < nb; b++) {
    uint64_t lo = (uint64_t)b * d->bucket, hi = lo + d->bucket < total ? lo + d->bucket : total;
    size_t S = (size_t)((((hi - lo) / 4 + n - 1) / n + 3) / 4 * 4);
    for (int r = 0; r < n; r++) { /* pack */
      DC(cudaSetDevice(d->dev[r]), "cudaSetDevice");
      if ((rc = sync_copy_segs_cuda(d->dseg[r] + t.pf[r][b], (int)(t.pf[r][b + 1] - t.pf[r][b]), d->st[r], e))) goto done;
    }
    DN(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < n && !rc; r++) /* all-to-all: rank r gets slice r of every rank q */
      for (int q = 0; q < n && !rc; q++) {
        if (q == r) continue;
        float *pk = (float *)d->pk[r], *rv = (float *)d->rv[r];
        rc = dp_nccl(ncclSend(pk + q * S, S, ncclFloat32, q, d->comm[r], d->st[r]), "ncclSend", e);
        if (!rc) rc = dp_nccl(ncclRecv(rv + q * S, S, ncclFloat32, q, d->comm[r], d->st[r]), "ncclRecv", e);
      }
    ncclResult_t ge = ncclGroupEnd();
    if (rc) goto done;
    DN(ge, "ncclGroupEnd (all-to-all)");
    for (int r = 0; r < n; r++) { /* rank r sums slice r in rank order, in place */
      const float *g[SYNC_DP_MAX_RANKS];
      for (int q = 0; q < n; q++) g[q] = (q == r ? (float *)d->pk[r] : (float *)d->rv[r]) + q * S;
      DC(cudaSetDevice(d->dev[r]), "cudaSetDevice");
      if ((rc = sync_dp_sum_cuda(g, n, (int64_t)S, (float *)d->pk[r] + r * S, d->st[r], e))) goto done;
    }
    DN(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < n && !rc; r++)
      rc = dp_nccl(ncclAllGather((float *)d->pk[r] + r * S, d->pk[r], S, ncclFloat32, d->comm[r], d->st[r]),
                   "ncclAllGather", e);
    ge = ncclGroupEnd();
    if (rc) goto done;
    DN(ge, "ncclGroupEnd (all-gather)");
    for (int r = 0; r < n; r++) { /* unpack */
      DC(cudaSetDevice(d->dev[r]), "cudaSetDevice");
      if ((rc = sync_copy_segs_cuda(d->dseg[r] + t.np[r] + t.uf[r][b], (int)(t.uf[r][b + 1] - t.uf[r][b]), d->st[r], e)))
        goto done;
    }
  }
  rc = dp_end(d, e);
done:
  dp_tables_free(&t, n);
  free(bytes), free(off);
  if (rc) d->broken = 1, dp_abort(d);
  cudaSetDevice(cur);
  return rc ? rl_err_prefix(e, "gradient all-reduce (%d ranks): ", n) : 0;
}

int sync_dp_broadcast(sync_dp *d, void *const *const *bufs, const uint64_t *bytes, int n_tensors, rl_err *e) {
  int rc = 0, n = d->n, cur = 0;
  if (d->broken)
    return rl_errf(e, RL_EXIT_FAIL, "data-parallel training: the NCCL communicators were aborted after a failed "
                   "collective; resume the run (rlrun resume) to start them afresh");
  cudaGetDevice(&cur);
  uint64_t *off = rl_xcalloc((size_t)n_tensors + 1, 8);
  uint64_t total = dp_layout(bytes, n_tensors, off);
  int64_t nb = (int64_t)((total + d->bucket - 1) / d->bucket);
  dp_tables t;
  memset(&t, 0, sizeof t);
  if (!total) goto done;
  if ((rc = dp_buffers(d, total < d->bucket ? total : d->bucket, e))) goto done;
  /* rank 0 packs, the others unpack */
  if ((rc = dp_tables_make(d, off, bytes, n_tensors, total, (uint8_t *const *const *)bufs, 1, 1, &t, e))) goto done;
  if ((rc = dp_begin(d, e))) goto done;
  for (int64_t b = 0; b < nb; b++) {
    uint64_t lo = (uint64_t)b * d->bucket, hi = lo + d->bucket < total ? lo + d->bucket : total;
    DC(cudaSetDevice(d->dev[0]), "cudaSetDevice");
    if ((rc = sync_copy_segs_cuda(d->dseg[0] + t.pf[0][b], (int)(t.pf[0][b + 1] - t.pf[0][b]), d->st[0], e))) goto done;
    DN(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < n && !rc; r++)
      rc = dp_nccl(ncclBroadcast(d->pk[r], d->pk[r], hi - lo, ncclUint8, 0, d->comm[r], d->st[r]), "ncclBroadcast", e);
    ncclResult_t ge = ncclGroupEnd();
    if (rc) goto done;
    DN(ge, "ncclGroupEnd (broadcast)");
    for (int r = 1; r < n; r++) {
      DC(cudaSetDevice(d->dev[r]), "cudaSetDevice");
      if ((rc = sync_copy_segs_cuda(d->dseg[r] + t.uf[r][b], (int)(t.uf[r][b + 1] - t.uf[r][b]), d->st[r], e))) goto done;
    }
  }
  rc = dp_end(d, e);
done:
  dp_tables_free(&t, n);
  free(off);
  if (rc) d->broken = 1, dp_abort(d);
  cudaSetDevice(cur);
  return rc ? rl_err_prefix(e, "weight broadcast (%d ranks): ", n) : 0;
}

/* Pointer tables over the parameters of the replicas: grads (w = 0) or masters. */
static void **dp_param_ptrs(sync_dp *d, model *const *ms, int masters, void ***rows) {
  int np = ms[0]->n_params;
  void **all = rl_xcalloc((size_t)d->n * (size_t)np + 1, sizeof *all);
  for (int r = 0; r < d->n; r++) {
    rows[r] = all + (size_t)r * np;
    for (int i = 0; i < np; i++) {
      model_cuda_param *p = model_cuda_param_at(ms[r], i);
      rows[r][i] = masters ? (void *)p->w : (void *)p->g;
    }
  }
  return all;
}

/* The replicas all have device state and ms[0]'s parameter shapes. */
static int dp_models_check(sync_dp *d, model *const *ms, int grads, rl_err *e) {
  for (int r = 0; r < d->n; r++) {
    if (!ms[r]->cu || ms[r]->n_params != ms[0]->n_params || (grads && !model_cuda_param_at(ms[r], 0)->g))
      return rl_errf(e, RL_EXIT_USAGE, "data parallelism: replica %d (GPU %d) has no device %s with rank 0's shapes "
                     "(model_cuda_init%s first)", r, d->dev[r], grads ? "gradients" : "weights",
                     grads ? " and model_cuda_grads_zero" : "");
    for (int i = 0; i < ms[0]->n_params; i++)
      if (ms[r]->params[i].rows != ms[0]->params[i].rows || ms[r]->params[i].cols != ms[0]->params[i].cols)
        return rl_errf(e, RL_EXIT_USAGE, "data parallelism: replica %d's %s is not shaped as rank 0's", r,
                       ms[0]->params[i].name);
  }
  return 0;
}

int sync_dp_reduce_grads(sync_dp *d, model *const *ms, rl_err *e) {
  int rc = dp_models_check(d, ms, 1, e), np = ms[0]->n_params;
  if (rc) return rc;
  void **rows[SYNC_DP_MAX_RANKS];
  void **all = dp_param_ptrs(d, ms, 0, rows);
  int64_t *count = rl_xcalloc((size_t)np + 1, sizeof *count);
  for (int i = 0; i < np; i++) count[i] = ms[0]->params[i].rows * ms[0]->params[i].cols;
  rc = sync_dp_allreduce(d, (float *const *const *)rows, count, np, e);
  free(count), free(all);
  return rc;
}

int sync_dp_broadcast_masters(sync_dp *d, model *const *ms, rl_err *e) {
  int rc = dp_models_check(d, ms, 0, e), np = ms[0]->n_params;
  if (rc) return rc;
  void **rows[SYNC_DP_MAX_RANKS];
  void **all = dp_param_ptrs(d, ms, 1, rows);
  uint64_t *bytes = rl_xcalloc((size_t)np + 1, sizeof *bytes);
  for (int i = 0; i < np; i++) bytes[i] = (uint64_t)(ms[0]->params[i].rows * ms[0]->params[i].cols) * 2;
  rc = sync_dp_broadcast(d, (void *const *const *)rows, bytes, np, e);
  free(bytes), free(all);
  return rc;
}

#else /* ---------------------------------------------------------------- no CUDA */

/* The one error of every entry point in a build without CUDA. */
static int dp_nocuda(const char *fn, rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE, "%s: this binary was built without CUDA/NCCL; data parallelism needs GPUs "
                 "(rebuild with nvcc and NCCL available, or name one GPU in gpus.train)", fn);
}
int sync_dp_open(const int *devs, int n_ranks, uint64_t bucket_bytes, sync_dp **out, rl_err *e) {
  *out = NULL;
  return dp_nocuda("sync_dp_open", e);
}
void sync_dp_close(sync_dp *d) { (void)d; }
int sync_dp_ranks(const sync_dp *d) { (void)d; return 0; }
int sync_dp_allreduce(sync_dp *d, float *const *const *bufs, const int64_t *count, int n_tensors, rl_err *e) {
  return dp_nocuda("sync_dp_allreduce", e);
}
int sync_dp_broadcast(sync_dp *d, void *const *const *bufs, const uint64_t *bytes, int n_tensors, rl_err *e) {
  return dp_nocuda("sync_dp_broadcast", e);
}
int sync_dp_reduce_grads(sync_dp *d, model *const *ms, rl_err *e) { return dp_nocuda("sync_dp_reduce_grads", e); }
int sync_dp_broadcast_masters(sync_dp *d, model *const *ms, rl_err *e) {
  return dp_nocuda("sync_dp_broadcast_masters", e);
}
#endif
