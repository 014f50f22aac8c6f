/* sync_cuda.c — the device side of the sync stage (sync.h): device views of
 * a CUDA model, and the separate-GPU sync: re-quantize on the train GPU,
 * broadcast the rollout view in buckets over an NCCL communicator of the
 * train GPU (rank 0) and the rollout GPUs (ranks 1 … n−1), unpack on each
 * rollout GPU.
 *
 * Pipeline of one sync (slots k = b % 2, two bucket buffers per GPU):
 *   train GPU    copy stream:  wait free_[0][k] (sent) → pack(b) into buf[0][k] → done[0][k] (packed)
 *                NCCL stream:  wait packed → broadcast root → free_[0][k] (sent)
 *   rollout GPU r NCCL stream: wait free_[r][k] (unpacked) → broadcast recv into buf[r][k] → done[r][k]
 *                copy stream:  wait done[r][k] (received) → unpack(b) from buf[r][k] → free_[r][k]
 * so packing bucket b+1 and unpacking bucket b−1 overlap the broadcast of b;
 * with RLRUN_SYNC_OVERLAP (default) the copy stream also re-quantizes bucket
 * b+1's linears before its pack, overlapping the broadcast of b.
 * Pack and unpack are one launch each of a batched copy kernel (sync_kern.cu)
 * over pieces of at most SYNC_SEG_CHUNK bytes, whatever the tensor count
 * (a 128-expert MoE has tens of thousands of tensors: a cudaMemcpy each would
 * cost more than the transfer). The broadcasts of one bucket (one a rank) are
 * issued inside ncclGroupStart/End: one thread drives every rank. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_cuda.h"
#include "stages/sync.h"
#include "stages/sync_int.h"
#include "state/fault.h"

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

/* rank 0 = the trainer's GPU (sender), ranks 1 … n−1 = the rollout GPUs */
struct sync_nccl {
  int n;                                       /* ranks */
  int dev[SYNC_NCCL_MAX_RANKS];
  ncclComm_t comm[SYNC_NCCL_MAX_RANKS];
  cudaStream_t cs[SYNC_NCCL_MAX_RANKS], ns[SYNC_NCCL_MAX_RANKS]; /* copy stream, NCCL stream per GPU */
  cudaEvent_t done[SYNC_NCCL_MAX_RANKS][2];    /* per slot: rank 0 packed, the others received */
  cudaEvent_t free_[SYNC_NCCL_MAX_RANKS][2];   /* per slot: rank 0 sent, the others unpacked */
  cudaEvent_t ready[SYNC_NCCL_MAX_RANKS];      /* the default stream of the sync thread on that GPU */
  uint64_t bucket, cap;                        /* bucket bytes; bytes of each bucket buffer */
  uint8_t *buf[SYNC_NCCL_MAX_RANKS][2];        /* bucket buffers: rank 0 sends, the others receive */
  sync_seg *dseg[SYNC_NCCL_MAX_RANKS];         /* segment tables on each GPU */
  size_t dseg_cap[SYNC_NCCL_MAX_RANKS];
  int broken; /* a transfer failed part way: a rank's collective may wait for the others for good */
};

/* Release everything of s (teardown is best effort: nothing left to undo).
 * After a failed transfer the communicators are aborted first, on every GPU,
 * before anything that waits for the device (cudaFree): a broadcast launched
 * on some ranks only would otherwise never finish, and neither would the
 * teardown (ncclCommDestroy flushes outstanding work). */
static void sync_nccl_abort(sync_nccl *s) {
  for (int r = 0; r < s->n; r++)
    if (s->comm[r] && cudaSetDevice(s->dev[r]) == cudaSuccess) ncclCommAbort(s->comm[r]), s->comm[r] = NULL;
}
void sync_nccl_close(sync_nccl *s) {
  if (!s) return;
  if (s->broken) sync_nccl_abort(s);
  for (int r = 0; r < s->n; r++) {
    if (cudaSetDevice(s->dev[r]) != cudaSuccess) continue;
    if (s->comm[r]) ncclCommDestroy(s->comm[r]);
    for (int k = 0; k < 2; k++) {
      if (s->done[r][k]) cudaEventDestroy(s->done[r][k]);
      if (s->free_[r][k]) cudaEventDestroy(s->free_[r][k]);
      cudaFree(s->buf[r][k]);
    }
    if (s->ready[r]) cudaEventDestroy(s->ready[r]);
    cudaFree(s->dseg[r]);
    if (s->cs[r]) cudaStreamDestroy(s->cs[r]);
    if (s->ns[r]) cudaStreamDestroy(s->ns[r]);
  }
  cudaSetDevice(s->dev[0]);
  free(s);
}

int sync_nccl_open(int train_dev, const int *rollout_devs, int n_rollout, uint64_t bucket_bytes, sync_nccl **out,
                   rl_err *e) {
  *out = NULL;
  int n = 0, rc = 0;
  if ((rc = sc_ok(cudaGetDeviceCount(&n), "cudaGetDeviceCount", e))) return rc;
  if (n_rollout < 1 || n_rollout > SYNC_NCCL_MAX_RANKS - 1)
    return rl_errf(e, RL_EXIT_USAGE, "sync: NCCL sync to %d rollout GPUs; 1 to %d", n_rollout, SYNC_NCCL_MAX_RANKS - 1);
  int devs[SYNC_NCCL_MAX_RANKS];
  devs[0] = train_dev;
  for (int r = 0; r < n_rollout; r++) devs[r + 1] = rollout_devs[r];
  for (int r = 0; r <= n_rollout; r++) {
    if (devs[r] < 0 || devs[r] >= n)
      return rl_errf(e, RL_EXIT_HARDWARE, "sync: NCCL sync on GPU %d, but this machine has %d GPU%s", devs[r], n,
                     n == 1 ? "" : "s");
    for (int q = 0; q < r; q++)
      if (devs[q] == devs[r])
        return rl_errf(e, RL_EXIT_HARDWARE,
                       "sync: NCCL sync needs different GPUs (train %d, rollout GPU %d twice or the train GPU); "
                       "colocated runs sync on the device", train_dev, devs[r]);
  }
  setenv("NCCL_NVLS_ENABLE", "0", 0); /* GPU.md: NVLink SHARP multicast stays off */
  sync_nccl *s = rl_xcalloc(1, sizeof *s);
  s->n = n_rollout + 1;
  memcpy(s->dev, devs, (size_t)s->n * sizeof *devs);
  s->bucket = bucket_bytes ? bucket_bytes : SYNC_DEFAULT_BUCKET;
  SN(ncclCommInitAll(s->comm, s->n, s->dev), "ncclCommInitAll (rank 0 the train GPU, then the rollout GPUs)");
  for (int r = 0; r < s->n; r++) {
    SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
    SC(cudaStreamCreateWithFlags(&s->cs[r], cudaStreamNonBlocking), "cudaStreamCreate (copy)");
    SC(cudaStreamCreateWithFlags(&s->ns[r], cudaStreamNonBlocking), "cudaStreamCreate (nccl)");
    for (int k = 0; k < 2; k++) {
      SC(cudaEventCreateWithFlags(&s->done[r][k], cudaEventDisableTiming), "cudaEventCreate");
      SC(cudaEventCreateWithFlags(&s->free_[r][k], cudaEventDisableTiming), "cudaEventCreate");
    }
    SC(cudaEventCreateWithFlags(&s->ready[r], cudaEventDisableTiming), "cudaEventCreate");
  }
done:
  cudaSetDevice(train_dev);
  if (rc) {
    sync_nccl_close(s);
    return rl_err_prefix(e, "sync_nccl_open: ");
  }
  *out = s;
  return 0;
}

int sync_nccl_receivers(const sync_nccl *s) { return s ? s->n - 1 : 0; }

/* Bucket buffers of at least cap bytes on every GPU (grown, never shrunk). */
static int sync_nccl_buffers(sync_nccl *s, uint64_t cap, rl_err *e) {
  int rc = 0;
  if (cap <= s->cap) return 0;
  for (int r = 0; r < s->n; r++) {
    SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
    for (int k = 0; k < 2; k++) {
      cudaFree(s->buf[r][k]);
      s->buf[r][k] = NULL;
      SC(cudaMalloc((void **)&s->buf[r][k], cap + 256), "cudaMalloc (sync bucket buffer)");
      SC(cudaMemset(s->buf[r][k], 0, cap + 256), "cudaMemset (sync bucket buffer)");
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

/* Re-quantization overlapped with the transfer (RLRUN_SYNC_OVERLAP, default
 * 1; 0: the whole model first, then the transfer): each bucket's linears are
 * launched on the copy stream right before its pack, so the quantization of
 * bucket b+1 runs while bucket b is broadcast. A linear is launched with the
 * first bucket any of its bytes lie in. */
static int sync_overlap_on(void) {
  return rl_env_bool("RLRUN_SYNC_OVERLAP", 1);
}
typedef struct sync_qwant {
  const uint64_t *first_off; /* [n_params] the first stream offset of each parameter's entries (UINT64_MAX: none) */
  uint64_t lm_first;         /* the same for the lm_head view */
  uint64_t hi;               /* the current bucket's end */
} sync_qwant;
static int sync_qwant_fn(void *ctx, int pi) {
  const sync_qwant *w = ctx;
  return (pi < 0 ? w->lm_first : w->first_off[pi]) < w->hi;
}

/* Enqueue the pipelined transfer of every bucket (see the file comment):
 * first[r][b] … first[r][b+1] are rank r's pieces of bucket b (rank 0 packs,
 * the others unpack). With qp, each bucket's linears are quantized on the copy
 * stream before its pack (sync_overlap_on). */
static int sync_nccl_pipeline(sync_nccl *s, const sync_manifest *mf, size_t *const *first, model *mt,
                              model_cuda_qplan *qp, sync_qwant *qw, rl_err *e) {
  int rc = 0;
  /* every rank's copy and NCCL streams (non-blocking) wait for this thread's default stream on that
   * GPU: a receiver's engine idle after its last generation; on every rank, the segment table's
   * upload (a pageable cudaMemcpy, whose DMA may be in flight when it returns) and the bucket
   * buffers' memset */
  for (int r = 0; r < s->n; r++) {
    SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
    SC(cudaEventRecord(s->ready[r], NULL), "cudaEventRecord (default stream)");
    SC(cudaStreamWaitEvent(s->ns[r], s->ready[r], 0), "cudaStreamWaitEvent");
    SC(cudaStreamWaitEvent(s->cs[r], s->ready[r], 0), "cudaStreamWaitEvent");
  }
  for (int64_t b = 0; b < mf->n_buckets; b++) {
    int k = (int)(b % 2);
    uint64_t lo, hi;
    sync_bucket_range(mf, b, &lo, &hi);
    const size_t *f = first[0];
    SC(cudaSetDevice(s->dev[0]), "cudaSetDevice");
    if (qp) { /* this bucket's linears, not yet quantized, before the pack that reads them (and before the
                 wait for a free bucket buffer: they need none) */
      qw->hi = hi;
      if ((rc = model_cuda_quantize_launch(mt, qp, sync_qwant_fn, qw, s->cs[0], e))) goto done;
    }
    SC(cudaStreamWaitEvent(s->cs[0], s->free_[0][k], 0), "cudaStreamWaitEvent (bucket buffer free)");
    if ((rc = sync_copy_segs_cuda(s->dseg[0] + f[b], (int)(f[b + 1] - f[b]), s->cs[0], e))) goto done;
    SC(cudaEventRecord(s->done[0][k], s->cs[0]), "cudaEventRecord (packed)");
    SC(cudaStreamWaitEvent(s->ns[0], s->done[0][k], 0), "cudaStreamWaitEvent (packed)");
    for (int r = 1; r < s->n; r++) {
      SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
      SC(cudaStreamWaitEvent(s->ns[r], s->free_[r][k], 0), "cudaStreamWaitEvent (receive buffer free)");
    }
    ncclResult_t rr[SYNC_NCCL_MAX_RANKS];
    /* fault "sync.partial" (tests): the first bucket's broadcast is launched by the train GPU
     * alone, then the transfer fails: the root waits for receivers that never come */
    const int partial = b == 0 && fault_hit("sync.partial");
    SN(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < (partial ? 1 : s->n); r++)
      rr[r] = ncclBroadcast(s->buf[r][k], s->buf[r][k], hi - lo, ncclUint8, 0, s->comm[r], s->ns[r]);
    ncclResult_t rg = ncclGroupEnd();
    if (partial) {
      rc = rl_errf(e, RL_EXIT_FAIL, "sync: injected fault sync.partial (bucket 0 launched on the train GPU only)");
      goto done;
    }
    for (int r = 0; r < s->n; r++) SN(rr[r], r ? "ncclBroadcast (rollout GPU)" : "ncclBroadcast (train GPU, root)");
    SN(rg, "ncclGroupEnd");
    SC(cudaSetDevice(s->dev[0]), "cudaSetDevice");
    SC(cudaEventRecord(s->free_[0][k], s->ns[0]), "cudaEventRecord (sent)");
    for (int r = 1; r < s->n; r++) {
      const size_t *u = first[r];
      SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
      SC(cudaEventRecord(s->done[r][k], s->ns[r]), "cudaEventRecord (received)");
      SC(cudaStreamWaitEvent(s->cs[r], s->done[r][k], 0), "cudaStreamWaitEvent (received)");
      if ((rc = sync_copy_segs_cuda(s->dseg[r] + u[b], (int)(u[b + 1] - u[b]), s->cs[r], e))) goto done;
      SC(cudaEventRecord(s->free_[r][k], s->cs[r]), "cudaEventRecord (unpacked)");
    }
  }
  for (int r = 1; r < s->n; r++) {
    SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
    SC(cudaStreamSynchronize(s->cs[r]), "the sync transfer (rollout GPU)");
  }
  SC(cudaSetDevice(s->dev[0]), "cudaSetDevice");
  SC(cudaStreamSynchronize(s->ns[0]), "the sync transfer (train GPU)");
done:
  if (rc) s->broken = 1, sync_nccl_abort(s); /* now: the frees after this would wait for a broadcast that cannot end */
  return rc;
}

int sync_nccl_run(sync_nccl *s, model *mt, model *const *mr, const quant_policy *p, const sync_opts *o,
                  sync_stats *st, rl_err *e) {
  sync_opts none = {0};
  if (!o) o = &none;
  if (s->broken)
    return rl_errf(e, RL_EXIT_FAIL, "sync: the NCCL communicators were aborted after a failed transfer; "
                   "resume the run (rlrun resume) to start them afresh");
  int rc = 0, cur = 0, n = s->n;
  cudaGetDevice(&cur);
  sync_manifest mf[SYNC_NCCL_MAX_RANKS];
  sync_view v[SYNC_NCCL_MAX_RANKS];
  sync_seg *segs[SYNC_NCCL_MAX_RANKS];
  size_t nseg[SYNC_NCCL_MAX_RANKS], *first[SYNC_NCCL_MAX_RANKS];
  memset(mf, 0, sizeof mf), memset(v, 0, sizeof v), memset(segs, 0, sizeof segs), memset(first, 0, sizeof first);
  sync_stats out;
  memset(&out, 0, sizeof out);
  model_cuda_qplan *qp = NULL;
  uint64_t *qfirst = NULL;
  sync_qwant qw = {0};
  for (int r = 0; r < n; r++) {
    model *m = r ? mr[r - 1] : mt;
    if (!m || !m->cu) {
      rc = rl_errf(e, RL_EXIT_USAGE, "sync_nccl_run: the model of GPU %d (%s) needs model_cuda_init", s->dev[r],
                   r ? "rollout" : "trainer");
      goto done;
    }
    if ((rc = sync_manifest_build(m, p, 1, s->bucket, &mf[r], e))) goto done;
    if (mf[r].digest != mf[0].digest) {
      rc = rl_errf(e, RL_EXIT_USAGE, "sync: the trainer's and the rollout engine's (GPU %d) manifests differ (%d vs %d "
                   "tensors): both sides need the same model config and policy", s->dev[r], mf[0].n, mf[r].n);
      goto done;
    }
  }
  double t0 = rl_now();
  SC(cudaSetDevice(s->dev[0]), "cudaSetDevice");
  if (sync_overlap_on()) { /* views and buffers now, the quantization bucket by bucket in the pipeline */
    if ((rc = model_cuda_quantize_begin(mt, p, &qp, e))) goto done;
    qfirst = rl_xmalloc((size_t)(mt->n_params + 1) * sizeof *qfirst);
    for (int i = 0; i <= mt->n_params; i++) qfirst[i] = UINT64_MAX;
    qw.first_off = qfirst, qw.lm_first = UINT64_MAX;
    for (int i = mf[0].n - 1; i >= 0; i--) { /* entries in stream order: the lowest offset wins */
      const sync_entry *x = &mf[0].v[i];
      if (x->lm_head) qw.lm_first = x->offset;
      else qfirst[x->param] = x->offset;
    }
  } else if ((rc = model_cuda_quantize(mt, p, e))) {
    goto done;
  }
  SC(cudaDeviceSynchronize(), "the re-quantization (train GPU)"); /* and the weights' last update before it */
  double t1 = rl_now();
  for (int r = 0; r < n; r++) {
    SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
    if ((rc = sync_view_device(&mf[r], r ? mr[r - 1] : mt, &v[r], e))) goto done;
  }
  uint64_t cap = mf[0].bucket < mf[0].total ? mf[0].bucket : mf[0].total;
  if ((rc = sync_nccl_buffers(s, quant_roundup((int64_t)cap, 256), e))) goto done;
  for (int r = 0; r < n; r++) {
    sync_segs_build(&mf[r], &v[r], s->buf[r], r == 0, &segs[r], &nseg[r], &first[r]);
    if ((rc = sync_segs_upload(s, r, segs[r], nseg[r], e))) goto done;
  }
  if ((rc = sync_nccl_pipeline(s, &mf[0], first, mt, qp, &qw, e))) goto done;
  if (qp) { /* anything no bucket needed, the stream synchronized, norms and non-finite statistics */
    SC(cudaSetDevice(s->dev[0]), "cudaSetDevice");
    rc = model_cuda_quantize_end(mt, qp, s->cs[0], e);
    qp = NULL;
    if (rc) goto done;
  }
  /* each rollout engine's FP32 norm weights follow its new BF16 ones (one launch) */
  for (int r = 1; r < n; r++) {
    SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
    if ((rc = model_cuda_refresh_norms(mr[r - 1], e))) goto done;
    SC(cudaDeviceSynchronize(), "refreshing the rollout norm weights");
  }
  double t2 = rl_now();
  out.bytes = mf[0].payload;
  out.quant_ms = (t1 - t0) * 1e3, out.transfer_ms = (t2 - t1) * 1e3, out.ms = (t2 - t0) * 1e3;
  out.gbps = out.ms > 0 ? (double)out.bytes / (out.ms * 1e6) : 0;
  out.buckets = mf[0].n_buckets;
  SC(cudaSetDevice(s->dev[1]), "cudaSetDevice");
  if ((rc = sync_fault_corrupt(&mf[1], &v[1], e))) goto done; /* the tests' fault: on the first rollout GPU */
  if (o->verify) {
    SC(cudaSetDevice(s->dev[0]), "cudaSetDevice");
    if ((rc = model_cuda_download(mt, e))) goto done;
    for (int r = 1; r < n; r++) { /* every receiver, against the trainer's masters */
      SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
      if ((rc = sync_verify(&mf[r], mt, &v[r], e))) {
        if (n > 2) rl_err_prefix(e, "rollout GPU %d: ", s->dev[r]);
        goto done;
      }
    }
    out.verified = 1;
    out.verify_ms = (rl_now() - t2) * 1e3;
  }
done:
  model_cuda_qplan_free(qp); /* an error before _end */
  free(qfirst);
  for (int r = 0; r < n; r++) {
    free(segs[r]), free(first[r]);
    sync_view_free(&v[r]);
    sync_manifest_free(&mf[r]);
  }
  cudaSetDevice(cur);
  if (st && !rc) *st = out;
  return rc;
}

int sync_nccl_bench_broadcast(sync_nccl *s, uint64_t n, int reps, double *ms, rl_err *e) {
  int rc = 0;
  uint8_t *a[SYNC_NCCL_MAX_RANKS] = {0};
  double *t = rl_xcalloc((size_t)(reps > 0 ? reps : 1), sizeof *t);
  for (int r = 0; r < s->n; r++) {
    SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
    SC(cudaMalloc((void **)&a[r], n), r ? "cudaMalloc (bench receive)" : "cudaMalloc (bench send)");
    if (!r) SC(cudaMemset(a[r], 1, n), "cudaMemset");
  }
  for (int i = -2; i < reps; i++) { /* two warm-up rounds */
    double t0 = rl_now();
    ncclResult_t rr[SYNC_NCCL_MAX_RANKS];
    SN(ncclGroupStart(), "ncclGroupStart");
    for (int r = 0; r < s->n; r++) rr[r] = ncclBroadcast(a[r], a[r], n, ncclUint8, 0, s->comm[r], s->ns[r]);
    ncclResult_t rg = ncclGroupEnd();
    for (int r = 0; r < s->n; r++) SN(rr[r], "ncclBroadcast");
    SN(rg, "ncclGroupEnd");
    for (int r = s->n - 1; r >= 0; r--) {
      SC(cudaSetDevice(s->dev[r]), "cudaSetDevice");
      SC(cudaStreamSynchronize(s->ns[r]), r ? "ncclBroadcast (rollout GPU)" : "ncclBroadcast (train GPU)");
    }
    if (i >= 0) t[i] = (rl_now() - t0) * 1e3;
  }
  for (int i = 1; i < reps; i++) /* insertion sort for the median */
    for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
      double x = t[j];
      t[j] = t[j - 1], t[j - 1] = x;
    }
  *ms = reps > 0 ? t[reps / 2] : 0;
done:
  if (rc) s->broken = 1, sync_nccl_abort(s); /* before cudaFree waits for a broadcast that cannot end */
  for (int r = s->n - 1; r >= 0; r--) {
    cudaSetDevice(s->dev[r]);
    cudaFree(a[r]);
  }
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
int sync_nccl_open(int train_dev, const int *rollout_devs, int n_rollout, uint64_t bucket_bytes, sync_nccl **out,
                   rl_err *e) {
  *out = NULL;
  return sc_nocuda("sync_nccl_open", e);
}
void sync_nccl_close(sync_nccl *s) { (void)s; }
int sync_nccl_receivers(const sync_nccl *s) { return 0; }
int sync_nccl_run(sync_nccl *s, model *mt, model *const *mr, const quant_policy *p, const sync_opts *o,
                  sync_stats *st, rl_err *e) {
  return sc_nocuda("sync_nccl_run", e);
}
int sync_nccl_bench_broadcast(sync_nccl *s, uint64_t n, int reps, double *ms, rl_err *e) {
  return sc_nocuda("sync_nccl_bench_broadcast", e);
}
#endif
