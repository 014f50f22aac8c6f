/* sync_cuda.c — the device side of the sync stage (sync.h): device views of
 * a CUDA model, and the separate-GPU sync: re-quantize on the train GPU,
 * broadcast the rollout view in buckets over a 2-rank NCCL communicator,
 * unpack on the rollout GPU.
 *
 * Pipeline of one sync (slots k = b % 2, two bucket buffers per GPU):
 *   train GPU   copy stream:  wait sent[k] → pack(b) into sbuf[k] → packed[k]
 *               NCCL stream:  wait packed[k] → broadcast root → sent[k]
 *   rollout GPU NCCL stream:  wait unpacked[k] → broadcast recv into rbuf[k] → recvd[k]
 *               copy stream:  wait recvd[k] → unpack(b) from rbuf[k] → unpacked[k]
 * so packing bucket b+1 and unpacking bucket b−1 overlap the broadcast of b.
 * Pack and unpack are one launch each of a batched copy kernel (sync_kern.cu)
 * over pieces of at most SYNC_SEG_CHUNK bytes, whatever the tensor count
 * (a 128-expert MoE has tens of thousands of tensors: a cudaMemcpy each would
 * cost more than the transfer). The two broadcasts of one bucket are issued
 * inside ncclGroupStart/End: one thread drives both ranks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_cuda.h"
#include "stages/sync.h"
#include "stages/sync_int.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>

/* A CUDA runtime status as an error. */
static int sc_ok(cudaError_t st, const char *what, rl_err *e) {
  if (st == cudaSuccess) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "sync (CUDA): %s failed: %s", what, cudaGetErrorString(st));
}
/* An NCCL status as an error. */
static int sc_nccl(ncclResult_t st, const char *what, rl_err *e) {
  if (st == ncclSuccess) return 0;
  return rl_errf(e, RL_EXIT_HARDWARE, "sync (NCCL): %s failed: %s (NCCL_DEBUG=WARN says more)", what,
                 ncclGetErrorString(st));
}
#define SC(call, what) \
  if ((rc = sc_ok((call), what, e))) goto done
#define SN(call, what) \
  if ((rc = sc_nccl((call), what, e))) goto done

int sync_dev_fetch(void *host, const void *dev, uint64_t n, rl_err *e) {
  return sc_ok(cudaMemcpy(host, dev, n, cudaMemcpyDeviceToHost), "cudaMemcpy (fetch rollout view)", e);
}
int sync_dev_store(void *dev, const void *host, uint64_t n, rl_err *e) {
  return sc_ok(cudaMemcpy(dev, host, n, cudaMemcpyHostToDevice), "cudaMemcpy (store)", e);
}
int sync_dev_wait(rl_err *e) { return sc_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize", e); }

int sync_view_device(const sync_manifest *mf, model *m, sync_view *v, rl_err *e) {
  memset(v, 0, sizeof *v);
  const qtensor **views = rl_xcalloc((size_t)m->n_params + 1, sizeof *views), *head = NULL;
  int rc = model_cuda_linear_views(m, views, &head, e);
  if (rc) {
    free(views);
    return rl_err_prefix(e, "sync: ");
  }
  v->ptr = rl_xcalloc((size_t)mf->n + 1, sizeof *v->ptr);
  v->n = mf->n, v->on_device = 1;
  for (int i = 0; i < mf->n && !rc; i++) {
    const sync_entry *x = &mf->v[i];
    if (x->param >= m->n_params || m->params[x->param].rows != x->rows || m->params[x->param].cols != x->cols) {
      rc = rl_errf(e, RL_EXIT_USAGE, "sync: tensor %s of the manifest does not exist with shape [%lld, %lld] in this model",
                   x->name, (long long)x->rows, (long long)x->cols);
      break;
    }
    if (x->part == SYNC_PART_BF16) {
      v->ptr[i] = model_cuda_param_at(m, x->param)->w;
      continue;
    }
    const qtensor *q = x->lm_head ? head : views[x->param];
    if (!q || q->fmt != x->fmt || !q->on_device || !q->data || !q->scales || (x->fmt == QFMT_NVFP4 && !q->d_s_dec)) {
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "sync: the device view of %s is not quantized as %s (call model_cuda_quantize with the rollout "
                   "policy first)", x->name, qtensor_format_name(x->fmt));
      break;
    }
    v->ptr[i] = x->part == SYNC_PART_DATA ? q->data : x->part == SYNC_PART_SCALES ? q->scales : (void *)q->d_s_dec;
  }
  free(views);
  if (rc) sync_view_free(v);
  return rc;
}

/* ---------------------------------------------------------------- the NCCL transport */

enum { SN_TRAIN, SN_ROLL }; /* rank 0 = trainer GPU, rank 1 = rollout GPU */

struct sync_nccl {
  int dev[2];
  ncclComm_t comm[2];
  cudaStream_t cs[2], ns[2];                      /* copy stream, NCCL stream per GPU */
  cudaEvent_t packed[2], sent[2];                 /* train GPU, per slot */
  cudaEvent_t recvd[2], unpacked[2], ready;       /* rollout GPU, per slot; ready: its engine idle */
  uint64_t bucket, cap;                           /* bucket bytes; bytes of each bucket buffer */
  uint8_t *sbuf[2], *rbuf[2];                     /* bucket buffers: train GPU, rollout GPU */
  sync_seg *dseg[2];                              /* segment tables on each GPU */
  size_t dseg_cap[2];
};

/* Release everything of s (teardown is best effort: nothing left to undo). */
void sync_nccl_close(sync_nccl *s) {
  if (!s) return;
  for (int r = 0; r < 2; r++) {
    if (cudaSetDevice(s->dev[r]) != cudaSuccess) continue;
    if (s->comm[r]) ncclCommDestroy(s->comm[r]);
    cudaEvent_t ev[5] = {s->packed[0], s->packed[1], s->sent[0], s->sent[1], NULL};
    if (r == SN_ROLL)
      ev[0] = s->recvd[0], ev[1] = s->recvd[1], ev[2] = s->unpacked[0], ev[3] = s->unpacked[1], ev[4] = s->ready;
    for (int j = 0; j < 5; j++)
      if (ev[j]) cudaEventDestroy(ev[j]);
    for (int k = 0; k < 2; k++) cudaFree(r == SN_TRAIN ? s->sbuf[k] : s->rbuf[k]);
    cudaFree(s->dseg[r]);
    if (s->cs[r]) cudaStreamDestroy(s->cs[r]);
    if (s->ns[r]) cudaStreamDestroy(s->ns[r]);
  }
  cudaSetDevice(s->dev[SN_TRAIN]);
  free(s);
}

int sync_nccl_open(int train_dev, int rollout_dev, uint64_t bucket_bytes, sync_nccl **out, rl_err *e) {
  *out = NULL;
  int n = 0, rc = 0;
  if ((rc = sc_ok(cudaGetDeviceCount(&n), "cudaGetDeviceCount", e))) return rc;
  if (train_dev == rollout_dev || train_dev < 0 || rollout_dev < 0 || train_dev >= n || rollout_dev >= n)
    return rl_errf(e, RL_EXIT_HARDWARE,
                   "sync: NCCL sync needs two different GPUs (train %d, rollout %d; this machine has %d); colocated "
                   "runs sync on the device", train_dev, rollout_dev, n);
  setenv("NCCL_NVLS_ENABLE", "0", 0); /* GPU.md: NVLink SHARP multicast stays off */
  sync_nccl *s = rl_xcalloc(1, sizeof *s);
  s->dev[SN_TRAIN] = train_dev, s->dev[SN_ROLL] = rollout_dev;
  s->bucket = bucket_bytes ? bucket_bytes : SYNC_DEFAULT_BUCKET;
  SN(ncclCommInitAll(s->comm, 2, s->dev), "ncclCommInitAll (2 ranks: train GPU, rollout GPU)");
  for (int r = 0; r < 2; r++) {
    SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
    SC(cudaStreamCreateWithFlags(&s->cs[r], cudaStreamNonBlocking), "cudaStreamCreate (copy)");
    SC(cudaStreamCreateWithFlags(&s->ns[r], cudaStreamNonBlocking), "cudaStreamCreate (nccl)");
    for (int k = 0; k < 2; k++) {
      cudaEvent_t *a = r == SN_TRAIN ? &s->packed[k] : &s->recvd[k], *b = r == SN_TRAIN ? &s->sent[k] : &s->unpacked[k];
      SC(cudaEventCreateWithFlags(a, cudaEventDisableTiming), "cudaEventCreate");
      SC(cudaEventCreateWithFlags(b, cudaEventDisableTiming), "cudaEventCreate");
    }
  }
  SC(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming), "cudaEventCreate");
done:
  cudaSetDevice(train_dev);
  if (rc) {
    sync_nccl_close(s);
    return rl_err_prefix(e, "sync_nccl_open: ");
  }
  *out = s;
  return 0;
}

/* Bucket buffers of at least cap bytes on both GPUs (grown, never shrunk). */
static int sync_nccl_buffers(sync_nccl *s, uint64_t cap, rl_err *e) {
  int rc = 0;
  if (cap <= s->cap) return 0;
  for (int r = 0; r < 2; r++) {
    SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
    for (int k = 0; k < 2; k++) {
      uint8_t **b = r == SN_TRAIN ? &s->sbuf[k] : &s->rbuf[k];
      cudaFree(*b);
      *b = NULL;
      SC(cudaMalloc((void **)b, cap + 256), "cudaMalloc (sync bucket buffer)");
      SC(cudaMemset(*b, 0, cap + 256), "cudaMemset (sync bucket buffer)");
    }
  }
  s->cap = cap;
done:
  return rc;
}

/* Append the pieces of [a, z) of entry i (stream offsets) to segs, split into
 * chunks: src/dst = view bytes or bucket bytes depending on `pack`. */
static void sync_segs_add(sync_seg **segs, size_t *n, size_t *cap, uint8_t *view, uint8_t *bucket, int pack, uint64_t n_bytes) {
  for (uint64_t c = 0; c < n_bytes; c += SYNC_SEG_CHUNK) {
    if (*n == *cap) {
      *cap = *cap ? 2 * *cap : 1024;
      *segs = rl_xrealloc(*segs, *cap * sizeof **segs);
    }
    uint64_t len = n_bytes - c < SYNC_SEG_CHUNK ? n_bytes - c : SYNC_SEG_CHUNK;
    (*segs)[(*n)++] = pack ? (sync_seg){view + c, bucket + c, len} : (sync_seg){bucket + c, view + c, len};
  }
}

/* The pack (side 0) or unpack (side 1) pieces of every bucket: segs, and
 * first[b] … first[b+1] the pieces of bucket b. */
static void sync_segs_build(const sync_manifest *mf, const sync_view *v, uint8_t *const bufs[2], int pack,
                            sync_seg **segs, size_t *n, size_t **first) {
  size_t cap = 0;
  *segs = NULL, *n = 0;
  *first = rl_xcalloc((size_t)mf->n_buckets + 1, sizeof **first);
  int i0 = 0;
  for (int64_t b = 0; b < mf->n_buckets; b++) {
    uint64_t lo, hi;
    sync_bucket_range(mf, b, &lo, &hi);
    (*first)[b] = *n;
    while (i0 < mf->n && mf->v[i0].offset + mf->v[i0].bytes <= lo) i0++;
    for (int i = i0; i < mf->n && mf->v[i].offset < hi; i++) {
      const sync_entry *x = &mf->v[i];
      uint64_t a = x->offset > lo ? x->offset : lo, z = x->offset + x->bytes < hi ? x->offset + x->bytes : hi;
      if (z > a)
        sync_segs_add(segs, n, &cap, (uint8_t *)v->ptr[i] + (a - x->offset), bufs[b % 2] + (a - lo), pack, z - a);
    }
  }
  (*first)[mf->n_buckets] = *n;
}

/* Upload a segment table to GPU r (grown buffer). */
static int sync_segs_upload(sync_nccl *s, int r, const sync_seg *segs, size_t n, rl_err *e) {
  int rc = 0;
  SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
  if (n > s->dseg_cap[r]) {
    cudaFree(s->dseg[r]);
    s->dseg[r] = NULL, s->dseg_cap[r] = 0;
    SC(cudaMalloc((void **)&s->dseg[r], n * sizeof *segs), "cudaMalloc (sync segment table)");
    s->dseg_cap[r] = n;
  }
  if (n) SC(cudaMemcpy(s->dseg[r], segs, n * sizeof *segs, cudaMemcpyHostToDevice), "cudaMemcpy (segment table)");
done:
  return rc;
}

/* Enqueue the pipelined transfer of every bucket (see the file comment). */
static int sync_nccl_pipeline(sync_nccl *s, const sync_manifest *mf, const size_t *pf, const size_t *uf, rl_err *e) {
  int rc = 0;
  /* the train GPU's copy and NCCL streams are non-blocking: the segment table's upload (a pageable
   * cudaMemcpy, whose DMA may still be in flight when it returns) and the bucket buffers' memset
   * went on this thread's default stream, so wait for them here */
  SC(cudaSetDevice(s->dev[SN_TRAIN]), "cudaSetDevice");
  SC(cudaStreamSynchronize(cudaStreamPerThread), "the segment table upload (train GPU)");
  SC(cudaSetDevice(s->dev[SN_ROLL]), "cudaSetDevice");
  SC(cudaEventRecord(s->ready, NULL), "cudaEventRecord (rollout engine idle)"); /* after its last generation */
  SC(cudaStreamWaitEvent(s->ns[SN_ROLL], s->ready, 0), "cudaStreamWaitEvent");
  SC(cudaStreamWaitEvent(s->cs[SN_ROLL], s->ready, 0), "cudaStreamWaitEvent");
  for (int64_t b = 0; b < mf->n_buckets; b++) {
    int k = (int)(b % 2);
    uint64_t lo, hi;
    sync_bucket_range(mf, b, &lo, &hi);
    SC(cudaSetDevice(s->dev[SN_TRAIN]), "cudaSetDevice");
    SC(cudaStreamWaitEvent(s->cs[SN_TRAIN], s->sent[k], 0), "cudaStreamWaitEvent (bucket buffer free)");
    if ((rc = sync_copy_segs_cuda(s->dseg[SN_TRAIN] + pf[b], (int)(pf[b + 1] - pf[b]), s->cs[SN_TRAIN], e))) goto done;
    SC(cudaEventRecord(s->packed[k], s->cs[SN_TRAIN]), "cudaEventRecord (packed)");
    SC(cudaStreamWaitEvent(s->ns[SN_TRAIN], s->packed[k], 0), "cudaStreamWaitEvent (packed)");
    SC(cudaSetDevice(s->dev[SN_ROLL]), "cudaSetDevice");
    SC(cudaStreamWaitEvent(s->ns[SN_ROLL], s->unpacked[k], 0), "cudaStreamWaitEvent (receive buffer free)");
    SN(ncclGroupStart(), "ncclGroupStart");
    ncclResult_t r0 = ncclBroadcast(s->sbuf[k], s->sbuf[k], hi - lo, ncclUint8, 0, s->comm[SN_TRAIN], s->ns[SN_TRAIN]);
    ncclResult_t r1 = ncclBroadcast(s->rbuf[k], s->rbuf[k], hi - lo, ncclUint8, 0, s->comm[SN_ROLL], s->ns[SN_ROLL]);
    ncclResult_t rg = ncclGroupEnd();
    SN(r0, "ncclBroadcast (train GPU, root)");
    SN(r1, "ncclBroadcast (rollout GPU)");
    SN(rg, "ncclGroupEnd");
    SC(cudaSetDevice(s->dev[SN_TRAIN]), "cudaSetDevice");
    SC(cudaEventRecord(s->sent[k], s->ns[SN_TRAIN]), "cudaEventRecord (sent)");
    SC(cudaSetDevice(s->dev[SN_ROLL]), "cudaSetDevice");
    SC(cudaEventRecord(s->recvd[k], s->ns[SN_ROLL]), "cudaEventRecord (received)");
    SC(cudaStreamWaitEvent(s->cs[SN_ROLL], s->recvd[k], 0), "cudaStreamWaitEvent (received)");
    if ((rc = sync_copy_segs_cuda(s->dseg[SN_ROLL] + uf[b], (int)(uf[b + 1] - uf[b]), s->cs[SN_ROLL], e))) goto done;
    SC(cudaEventRecord(s->unpacked[k], s->cs[SN_ROLL]), "cudaEventRecord (unpacked)");
  }
  SC(cudaStreamSynchronize(s->cs[SN_ROLL]), "the sync transfer (rollout GPU)");
  SC(cudaSetDevice(s->dev[SN_TRAIN]), "cudaSetDevice");
  SC(cudaStreamSynchronize(s->ns[SN_TRAIN]), "the sync transfer (train GPU)");
done:
  return rc;
}

int sync_nccl_run(sync_nccl *s, model *mt, model *mr, const quant_policy *p, const sync_opts *o, sync_stats *st,
                  rl_err *e) {
  sync_opts none = {0};
  if (!o) o = &none;
  int rc = 0, cur = 0;
  cudaGetDevice(&cur);
  sync_manifest mft = {0}, mfr = {0};
  sync_view vt = {0}, vr = {0};
  sync_seg *ps = NULL, *us = NULL;
  size_t np = 0, nu = 0, *pf = NULL, *uf = NULL;
  sync_stats out;
  memset(&out, 0, sizeof out);
  if (!mt->cu || !mr->cu) {
    rc = rl_errf(e, RL_EXIT_USAGE, "sync_nccl_run: both models need model_cuda_init (trainer on GPU %d, rollout on GPU %d)",
                 s->dev[SN_TRAIN], s->dev[SN_ROLL]);
    goto done;
  }
  if ((rc = sync_manifest_build(mt, p, 1, s->bucket, &mft, e)) || (rc = sync_manifest_build(mr, p, 1, s->bucket, &mfr, e)))
    goto done;
  if (mft.digest != mfr.digest) {
    rc = rl_errf(e, RL_EXIT_USAGE, "sync: the trainer's and the rollout engine's manifests differ (%d vs %d tensors): "
                 "both sides need the same model config and policy", mft.n, mfr.n);
    goto done;
  }
  double t0 = rl_now();
  SC(cudaSetDevice(s->dev[SN_TRAIN]), "cudaSetDevice");
  if ((rc = model_cuda_quantize(mt, p, e))) goto done;
  SC(cudaDeviceSynchronize(), "the re-quantization (train GPU)");
  double t1 = rl_now();
  SC(cudaSetDevice(s->dev[SN_ROLL]), "cudaSetDevice");
  if ((rc = sync_view_device(&mfr, mr, &vr, e))) goto done;
  SC(cudaSetDevice(s->dev[SN_TRAIN]), "cudaSetDevice");
  if ((rc = sync_view_device(&mft, mt, &vt, e))) goto done;
  uint64_t cap = mft.bucket < mft.total ? mft.bucket : mft.total;
  if ((rc = sync_nccl_buffers(s, quant_roundup((int64_t)cap, 256), e))) goto done;
  sync_segs_build(&mft, &vt, s->sbuf, 1, &ps, &np, &pf);
  sync_segs_build(&mfr, &vr, s->rbuf, 0, &us, &nu, &uf);
  if ((rc = sync_segs_upload(s, SN_TRAIN, ps, np, e)) || (rc = sync_segs_upload(s, SN_ROLL, us, nu, e))) goto done;
  if ((rc = sync_nccl_pipeline(s, &mft, pf, uf, e))) goto done;
  /* the rollout engine's FP32 norm weights follow its new BF16 ones (one launch) */
  SC(cudaSetDevice(s->dev[SN_ROLL]), "cudaSetDevice");
  if ((rc = model_cuda_refresh_norms(mr, e))) goto done;
  SC(cudaDeviceSynchronize(), "refreshing the rollout norm weights");
  double t2 = rl_now();
  out.bytes = mft.payload;
  out.quant_ms = (t1 - t0) * 1e3, out.transfer_ms = (t2 - t1) * 1e3, out.ms = (t2 - t0) * 1e3;
  out.gbps = out.ms > 0 ? (double)out.bytes / (out.ms * 1e6) : 0;
  out.buckets = mft.n_buckets;
  if ((rc = sync_fault_corrupt(&mfr, &vr, e))) goto done;
  if (o->verify) {
    SC(cudaSetDevice(s->dev[SN_TRAIN]), "cudaSetDevice");
    if ((rc = model_cuda_download(mt, e))) goto done;
    SC(cudaSetDevice(s->dev[SN_ROLL]), "cudaSetDevice");
    if ((rc = sync_verify(&mfr, mt, &vr, e))) goto done;
    out.verified = 1;
    out.verify_ms = (rl_now() - t2) * 1e3;
  }
done:
  free(ps), free(us), free(pf), free(uf);
  sync_view_free(&vt), sync_view_free(&vr);
  sync_manifest_free(&mft), sync_manifest_free(&mfr);
  cudaSetDevice(cur);
  if (st && !rc) *st = out;
  return rc;
}

int sync_nccl_bench_broadcast(sync_nccl *s, uint64_t n, int reps, double *ms, rl_err *e) {
  int rc = 0;
  uint8_t *a = NULL, *b = NULL;
  double *t = rl_xcalloc((size_t)(reps > 0 ? reps : 1), sizeof *t);
  SC(cudaSetDevice(s->dev[SN_TRAIN]), "cudaSetDevice");
  SC(cudaMalloc((void **)&a, n), "cudaMalloc (bench send)");
  SC(cudaMemset(a, 1, n), "cudaMemset");
  SC(cudaSetDevice(s->dev[SN_ROLL]), "cudaSetDevice");
  SC(cudaMalloc((void **)&b, n), "cudaMalloc (bench receive)");
  for (int r = -2; r < reps; r++) { /* two warm-up rounds */
    double t0 = rl_now();
    SN(ncclGroupStart(), "ncclGroupStart");
    ncclResult_t r0 = ncclBroadcast(a, a, n, ncclUint8, 0, s->comm[SN_TRAIN], s->ns[SN_TRAIN]);
    ncclResult_t r1 = ncclBroadcast(b, b, n, ncclUint8, 0, s->comm[SN_ROLL], s->ns[SN_ROLL]);
    ncclResult_t rg = ncclGroupEnd();
    SN(r0, "ncclBroadcast");
    SN(r1, "ncclBroadcast");
    SN(rg, "ncclGroupEnd");
    SC(cudaStreamSynchronize(s->ns[SN_ROLL]), "ncclBroadcast (rollout GPU)");
    SC(cudaStreamSynchronize(s->ns[SN_TRAIN]), "ncclBroadcast (train GPU)");
    if (r >= 0) t[r] = (rl_now() - t0) * 1e3;
  }
  for (int i = 1; i < reps; i++) /* insertion sort for the median */
    for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
      double x = t[j];
      t[j] = t[j - 1], t[j - 1] = x;
    }
  *ms = reps > 0 ? t[reps / 2] : 0;
done:
  cudaSetDevice(s->dev[SN_ROLL]);
  cudaFree(b);
  cudaSetDevice(s->dev[SN_TRAIN]);
  cudaFree(a);
  free(t);
  return rc;
}

#else /* ---------------------------------------------------------------- no CUDA */

/* The one error of every device entry point in a build without CUDA. */
static int sc_nocuda(const char *fn, rl_err *e) {
  return rl_errf(e, RL_EXIT_HARDWARE,
                 "%s: this binary was built without CUDA/NCCL; rebuild with nvcc and NCCL available, or sync on "
                 "the CPU (device: cpu)", fn);
}
int sync_dev_fetch(void *host, const void *dev, uint64_t n, rl_err *e) { return sc_nocuda("sync (device fetch)", e); }
int sync_dev_store(void *dev, const void *host, uint64_t n, rl_err *e) { return sc_nocuda("sync (device store)", e); }
int sync_dev_wait(rl_err *e) { return sc_nocuda("sync (device wait)", e); }
int sync_view_device(const sync_manifest *mf, model *m, sync_view *v, rl_err *e) {
  memset(v, 0, sizeof *v);
  return sc_nocuda("sync_view_device", e);
}
int sync_nccl_open(int train_dev, int rollout_dev, uint64_t bucket_bytes, sync_nccl **out, rl_err *e) {
  *out = NULL;
  return sc_nocuda("sync_nccl_open", e);
}
void sync_nccl_close(sync_nccl *s) { (void)s; }
int sync_nccl_run(sync_nccl *s, model *mt, model *mr, const quant_policy *p, const sync_opts *o, sync_stats *st,
                  rl_err *e) {
  return sc_nocuda("sync_nccl_run", e);
}
int sync_nccl_bench_broadcast(sync_nccl *s, uint64_t n, int reps, double *ms, rl_err *e) {
  return sc_nocuda("sync_nccl_bench_broadcast", e);
}
#endif
