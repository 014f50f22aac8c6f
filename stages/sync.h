/* sync.h — the sync stage: after every train update, the rollout engine's
 * weights := the re-quantization of the BF16 master into the ROLLOUT
 * precision policy (FORMATS.md: "weights are re-quantized at every sync").
 * One implementation, timed and optionally verified, for three placements:
 *
 *   colocated, CPU   model_quantize into m's own views        (sync_colocated)
 *   colocated, CUDA  model_cuda_quantize on the device, no host round trip
 *                    (sync_colocated, when m->cu is set)
 *   separate GPUs    the trainer re-quantizes on its GPU, broadcasts the bytes
 *                    of the rollout view with NCCL in buckets, the rollout
 *                    side unpacks them into its own views   (sync_nccl_*, CUDA)
 *
 *   sync_opts o = {.verify = 1};
 *   sync_stats st;
 *   sync_colocated(m, &rollout_policy, &o, &st, &e);      after trainer_step
 *   sync_stats_metrics(&st, &metrics);                    sync/bytes, sync/ms, sync/gbps …
 *
 * The rollout view and its serialisation (the manifest). Every byte the
 * rollout engine reads, in a fixed order that both sides compute from the
 * model config and the policy alone (sync_manifest_build):
 *   for each parameter i of m->params, in order:
 *     - its BF16 master (name = checkpoint name) when the rollout engine reads
 *       it: every non-linear tensor (embeddings, norms), and every linear
 *       weight whose format in the policy is BF16 (or MXFP8 with K % 32 ≠ 0,
 *       which stays BF16 as model_quantize does);
 *     - else the quantized view: data (name), scales (name + "_scale_inv" for
 *       fp8-block and mxfp8, "_scale" for nvfp4), nvfp4 S_dec (name + "_scale_2",
 *       4 bytes) — the checkpoint conventions of FORMATS.md;
 *   then, when the lm_head class is quantized, the lm_head view
 *   ("lm_head.weight" …; with tied embeddings it is a view of embed_tokens,
 *   whose BF16 master is sent as well).
 * Each entry starts at a SYNC_ALIGN-aligned offset of one flat byte stream
 * (gaps are zero on the host path); the stream is cut into buckets of
 * bucket_bytes (the last one shorter): bucket b = [b·B, min((b+1)·B, total)).
 * A tensor may span buckets. Scales are in the layout the engine uses: host
 * views ROWMAJOR (the checkpoint layout), device views as model_cuda_quantize
 * writes them (fp8-block: cuBLASLt's [ceil(N/128)][roundup(ceil(K/128),4)]).
 * The digest (FNV-1a over every entry) lets two sides check they agree.
 *
 * Transfer = per bucket: pack (copy the bucket's pieces of each entry from the
 * sender's views into a contiguous buffer) → transport → unpack (into the
 * receiver's views). The host transport (memcpy) is what the tests and a
 * CPU-only build use; the NCCL transport (sync_cuda.c + sync_kern.cu; CUDA builds) packs
 * and unpacks with one batched copy kernel per bucket and side, double-buffers
 * the buckets and broadcasts them on a communicator of the trainer's GPU (rank
 * 0) and the rollout GPUs (ranks 1 …) driven by this one process
 * (ARCHITECTURE.md "Scale").
 *
 * Verification (`sync.verify: true`): every entry of the rollout side's view
 * is compared byte for byte with an independent re-quantization of the master
 * on the CPU (the quantizers of kernels/quant.h called directly, not through
 * model_quantize's buffers; fp8-block device scales compared after conversion
 * from cuBLASLt's layout, padding excluded). A mismatch is RL_EXIT_FAIL naming
 * the tensor, the part and the first differing byte; the run stays resumable.
 *
 * Timing (sync_stats → metrics): sync/bytes = bytes of the rollout view the
 * sync wrote (colocated: the quantized data + scales, BF16 tensors being the
 * master itself; separate GPUs: every byte broadcast), sync/ms = wall time of
 * re-quantization + transfer (verification excluded: sync/verify_ms),
 * sync/gbps = bytes / time (GB/s, 1e9), sync/buckets.
 *
 * Data-parallel training (sync_dp_*, stages/sync_dp_cuda.c): gradients are
 * reduced in a fixed order so that the result does not depend on the topology
 * or on NCCL's algorithm choice (ncclAllReduce's ring/tree order is not
 * bitwise stable across topologies). One process, one thread, N GPUs: an
 * N-rank communicator (ncclCommInitAll), every collective of the N ranks
 * issued inside one ncclGroupStart/End. The tensors (FP32 gradients of
 * m->params in order) form one flat stream, each starting at a 16-byte
 * aligned offset, cut into buckets of bucket_bytes (sync.bucket_mb). Per
 * bucket of n floats, in slices of S = roundup(ceil(n/N), 4) floats:
 *   pack     rank r copies its pieces of the bucket into a contiguous buffer
 *   exchange grouped ncclSend/ncclRecv (an all-to-all): rank r receives
 *            slice r of every other rank q
 *   sum      rank r: slice r := ((s_0 + s_1) + s_2) + … in rank order
 *            (sync_dp_sum_cuda: one FP32 add per rank, no FMA — the device
 *            twin of sync_dp_sum_fixed, the CPU reference)
 *   gather   ncclAllGather (in place) returns every summed slice to every rank
 *   unpack   rank r copies the bucket back into its tensors
 * The traffic of a ring all-reduce (2(N−1)/N of the bucket per rank); every
 * rank ends with exactly sync_dp_sum_fixed of the N inputs, bitwise, on every
 * run (each slice is summed once, on its owner, then copied). The same
 * communicator broadcasts rank 0's BF16 masters to the other ranks after the
 * optimizer step (sync_dp_broadcast: bytes, buckets, no arithmetic), which is
 * how every replica's weights stay bit-identical to rank 0's. The trainer
 * side (which samples each rank trains on, what equals a single-GPU run) is
 * described in train.h. Rollout stays on one GPU (gpus.rollout[0]); a split by
 * prompt ranges would not change the samples (sampling is keyed by (seed,
 * iteration, prompt, sample)) but is not implemented. */
#ifndef RLRUN_SYNC_H
#define RLRUN_SYNC_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/qtensor.h"
#include "model/model.h"
#include "stages/rl_metrics.h"

#define SYNC_NAME_MAX 112
#define SYNC_ALIGN 16
#define SYNC_DEFAULT_BUCKET (512ull << 20)

/* Metric names. */
#define SYNC_M_BYTES "sync/bytes"
#define SYNC_M_MS "sync/ms"
#define SYNC_M_GBPS "sync/gbps"
#define SYNC_M_BUCKETS "sync/buckets"
#define SYNC_M_VERIFY_MS "sync/verify_ms"

/* Which part of a tensor an entry holds (new values at the end). */
typedef enum sync_part {
  SYNC_PART_BF16,   /* the BF16 master [rows][cols] */
  SYNC_PART_DATA,   /* quantized elements */
  SYNC_PART_SCALES, /* block scales */
  SYNC_PART_SDEC    /* nvfp4 per-tensor S_dec (FP32 scalar) */
} sync_part;

/* Bytes of one part of an N×K tensor in format f (scales in the device layout
 * when on_device): what an entry of that part holds. */
uint64_t sync_part_bytes(qformat f, sync_part part, int64_t N, int64_t K, int on_device);

/* One entry of the manifest: a contiguous byte range of the rollout view. */
typedef struct sync_entry {
  char name[SYNC_NAME_MAX]; /* checkpoint-style name (see above) */
  int param;                /* index in m->params */
  int lm_head;              /* 1: a part of the lm_head view */
  sync_part part;
  qformat fmt;              /* format of the tensor (BF16 for SYNC_PART_BF16) */
  int64_t rows, cols;       /* shape of the parameter */
  uint64_t offset, bytes;   /* in the stream */
} sync_entry;

typedef struct sync_manifest {
  sync_entry *v;
  int n;
  int on_device;         /* scale layouts of device views */
  quant_policy policy;
  uint64_t total;        /* stream bytes (the end of the last entry) */
  uint64_t payload;      /* Σ bytes of the entries */
  uint64_t quantized;    /* Σ bytes of the non-BF16 entries */
  uint64_t bucket;       /* bucket bytes */
  int64_t n_buckets;
  uint64_t digest;
} sync_manifest;

/* Build the manifest of m's rollout view in policy p (checked) for host
 * (on_device 0) or device views; bucket_bytes 0 = SYNC_DEFAULT_BUCKET. */
int sync_manifest_build(const model *m, const quant_policy *p, int on_device, uint64_t bucket_bytes,
                        sync_manifest *out, rl_err *e);
void sync_manifest_free(sync_manifest *mf);
/* The stream range [*lo, *hi) of bucket b. */
void sync_bucket_range(const sync_manifest *mf, int64_t b, uint64_t *lo, uint64_t *hi);
/* Index of the entry named `name` (and part), or -1. */
int sync_manifest_find(const sync_manifest *mf, const char *name);

/* Where each entry's bytes live on one side: ptr[i] for entry i (host or
 * device pointers; SDEC of a host view points at its qtensor's s_dec). */
typedef struct sync_view {
  void **ptr;
  int n;
  int on_device;
} sync_view;

/* Resolve the entries onto m's host views. m must be quantized in the
 * manifest's policy (model_quantize); a view that does not match the manifest
 * (format, missing buffer) is an error naming the tensor. */
int sync_view_host(const sync_manifest *mf, model *m, sync_view *v, rl_err *e);
void sync_view_free(sync_view *v);

/* Copy the part of bucket b held by view v into buf (gaps zeroed) / out of
 * buf into v (host memory). */
void sync_pack_host(const sync_manifest *mf, const sync_view *v, int64_t b, uint8_t *buf);
void sync_unpack_host(const sync_manifest *mf, const sync_view *v, int64_t b, const uint8_t *buf);

/* A transport link: moves n bytes from the sender's buffer to the receiver's. */
typedef struct sync_link {
  const char *name;
  int (*move)(void *ctx, const void *src, void *dst, uint64_t n, rl_err *e);
  void *ctx;
} sync_link;

/* The host transport (memcpy): the tests' and the CPU-only build's. */
sync_link sync_link_host(void);

/* What one sync did. */
typedef struct sync_stats {
  uint64_t bytes;        /* see sync/bytes above */
  double ms;             /* re-quantization + transfer */
  double quant_ms;       /* the re-quantization alone */
  double transfer_ms;    /* pack + move + unpack alone (separate engines) */
  double gbps;
  int64_t buckets;
  int verified;          /* 1 when verify ran and passed */
  double verify_ms;
} sync_stats;

/* Options (zero = defaults). */
typedef struct sync_opts {
  int verify;            /* compare the rollout view with an independent re-quantization */
  uint64_t bucket_bytes; /* 0 = SYNC_DEFAULT_BUCKET */
} sync_opts;

/* Move the rollout view of src to dst through transport t, bucket by bucket
 * (host views; the manifests of the two sides must have the same digest). */
int sync_transfer_host(const sync_manifest *src_mf, const sync_view *src, const sync_manifest *dst_mf,
                       const sync_view *dst, sync_link *t, sync_stats *st, rl_err *e);

/* Colocated sync: m's rollout view := re-quantization of its master in p —
 * model_cuda_quantize when m->cu is set (device views, no host round trip),
 * else model_quantize. Timed into *st (may be NULL); verified when o->verify.
 * Fault point "sync.corrupt" (tests, RLRUN_FAULT) flips one data byte of the
 * first quantized tensor after the re-quantization, "sync.corrupt_scale" one
 * byte of its scales: verify must catch both. */
int sync_colocated(model *m, const quant_policy *p, const sync_opts *o, sync_stats *st, rl_err *e);

/* Compare every entry of view v (host or device) with an independent CPU
 * re-quantization of `master`'s host BF16 weights (the trainer's). 0 when all
 * bytes agree; else RL_EXIT_FAIL naming the first tensor that differs. */
int sync_verify(const sync_manifest *mf, const model *master, const sync_view *v, rl_err *e);

/* The reference bytes of entry i from the host master (into out, ≥ bytes;
 * fp8-block scales ROWMAJOR: ceil(N/128)·ceil(K/128)·4 bytes, whatever the
 * manifest's layout). Returns the byte count written, or −1 with e set. */
int64_t sync_reference_entry(const sync_manifest *mf, int i, const model *master, uint8_t *out, rl_err *e);

/* The metrics of one sync (sync/bytes, /ms, /gbps, /buckets, /verify_ms when verified). */
void sync_stats_metrics(const sync_stats *st, rl_metric_list *ml);

/* Data parallelism: out[j] = ((g[0][j] + g[1][j]) + g[2][j]) + … in rank
 * order, FP32 adds (the reference of the fixed-order gradient reduction). */
void sync_dp_sum_fixed(const float *const *g, int n_ranks, int64_t n, float *out);

/* ---------------------------------------------------------------- data parallelism (CUDA + NCCL) */

/* N GPUs of one process: an N-rank NCCL communicator, a stream and bucket
 * buffers per GPU. */
typedef struct sync_dp sync_dp;

/* Open the group over devs[0..n_ranks) (rank r = devs[r]; 2 ≤ n_ranks ≤ 16,
 * distinct GPUs) with buckets of bucket_bytes (0 = SYNC_DEFAULT_BUCKET).
 * Sets NCCL_NVLS_ENABLE=0 unless the environment says otherwise. The current
 * device is left as it was. RL_EXIT_HARDWARE without CUDA/NCCL or GPUs. */
int sync_dp_open(const int *devs, int n_ranks, uint64_t bucket_bytes, sync_dp **out, rl_err *e);
void sync_dp_close(sync_dp *d);
int sync_dp_ranks(const sync_dp *d);
/* The fixed-order all-reduce of n_tensors FP32 tensors: bufs[r][i] is tensor
 * i (count[i] floats) on rank r's GPU, device memory; afterwards every
 * bufs[r][i][j] = ((bufs[0][i][j] + bufs[1][i][j]) + …) as sync_dp_sum_fixed
 * computes it. Ordered after the work already queued on each GPU's default
 * stream; returns when the result is in place on every GPU. */
int sync_dp_allreduce(sync_dp *d, float *const *const *bufs, const int64_t *count, int n_tensors, rl_err *e);
/* bufs[r][i] (bytes[i] bytes, device memory of rank r) := bufs[0][i] for
 * every rank r ≥ 1, in buckets; same ordering as sync_dp_allreduce. */
int sync_dp_broadcast(sync_dp *d, void *const *const *bufs, const uint64_t *bytes, int n_tensors, rl_err *e);
/* The gradients of the replicas ms[0..N) (each model_cuda_init'ed on its
 * rank's GPU, model_cuda_grads_zero done): sync_dp_allreduce over every
 * m->cu->p[i].g of m->params, in order. */
int sync_dp_reduce_grads(sync_dp *d, model *const *ms, rl_err *e);
/* The BF16 masters m->cu->p[i].w of ms[1..N) := those of ms[0]. */
int sync_dp_broadcast_masters(sync_dp *d, model *const *ms, rl_err *e);

/* ---------------------------------------------------------------- separate GPUs (CUDA + NCCL) */

/* The train GPU and n rollout GPUs of one process: an (n+1)-rank NCCL
 * communicator (rank 0 the train GPU, the sender), streams, events and
 * double-buffered bucket buffers on every device. */
typedef struct sync_nccl sync_nccl;
#define SYNC_NCCL_MAX_RANKS 16

/* Open the transport from train_dev (rank 0, sender) to rollout_devs[0 … n)
 * (ranks 1 … n; distinct GPUs, none the train GPU) with buckets of
 * bucket_bytes (0 = default). Sets NCCL_NVLS_ENABLE=0 unless the environment
 * says otherwise. RL_EXIT_HARDWARE without CUDA/NCCL or a GPU named twice or
 * missing; RL_EXIT_USAGE for n outside 1 … SYNC_NCCL_MAX_RANKS − 1. */
int sync_nccl_open(int train_dev, const int *rollout_devs, int n_rollout, uint64_t bucket_bytes, sync_nccl **out,
                   rl_err *e);
void sync_nccl_close(sync_nccl *s);
/* The rollout GPUs of s (0 for NULL). */
int sync_nccl_receivers(const sync_nccl *s);
/* One sync from a CUDA model to sync_nccl_receivers(s) CUDA models
 * (rollout_ms[r] model_cuda_init'ed on rollout GPU r and model_cuda_quantize'd
 * in p once, so that its views exist): re-quantize the trainer's device
 * masters in p (model_cuda_quantize on the train GPU), broadcast every entry
 * of the device manifest in buckets to every rollout GPU at once, unpack into
 * each rollout model's views and refresh its FP32 norm weights. Verified
 * (every rollout GPU) against the trainer's downloaded masters when
 * o->verify. The fault "sync.corrupt" hits the first rollout GPU. */
int sync_nccl_run(sync_nccl *s, model *trainer_m, model *const *rollout_ms, const quant_policy *p,
                  const sync_opts *o, sync_stats *st, rl_err *e);
/* A plain ncclBroadcast of n bytes from the train GPU to every rollout GPU,
 * timed (the benchmark's ceiling); *ms = median of reps. */
int sync_nccl_bench_broadcast(sync_nccl *s, uint64_t n, int reps, double *ms, rl_err *e);

/* Device views of a CUDA model (pointers into its device views; the model
 * must be model_cuda_quantize'd in the manifest's policy). CUDA builds only. */
int sync_view_device(const sync_manifest *mf, model *m, sync_view *v, rl_err *e);

#endif
