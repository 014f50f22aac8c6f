/* train_int.h — what the train stage's own files (train.c, train_pack.c,
 * train_state.c) share; not an API for other modules. */
#ifndef RLRUN_TRAIN_INT_H
#define RLRUN_TRAIN_INT_H

#include "model/model.h"
#include "stages/train.h"

/* One packed microbatch: its samples laid end to end as prompt ++ completion
 * sequences, with what the forward, the loss and the backward read. Buffers
 * are grown and reused from one microbatch to the next. */
typedef struct tr_pack {
  int n_seq, T;
  int64_t cap_seq, cap_T;
  int64_t *idx;             /* [n_seq] sample index of each sequence */
  int32_t *tokens, *off32, *targets; /* [T], [n_seq+1], [T] */
  int64_t *off64;           /* [n_seq+1] (rl_seqs) */
  uint8_t *mask;            /* [T] 1 = the target at t is a completion token */
  uint8_t *keep;            /* [n_seq] */
  double *adv;              /* [n_seq] */
  float *logp, *ent, *dlogp, *dent;   /* [T] */
  float *lp_old, *lp_roll, *lp_ref;   /* [T], aligned with the mask */
  int32_t **replay;         /* [L] replay tables [T, k] (MoE layers with R3), else NULL */
  int32_t *replay_buf;      /* [L·T·k] */
  int64_t cap_replay;
  /* the CUDA trainer's R3 diagnostics: own[l] = [T, k] the router's own top-k
   * where layer l replays (model_fwd_opts.own_ids), written by the forward when
   * own_on; NULL entries elsewhere */
  int32_t **own;
  int32_t *own_buf;
  int64_t cap_own;
  int own_on;
} tr_pack;

/* The trainer (see train.h). All of its private state, in one place. */
struct trainer {
  model *m;
  train_opts o;
  int r3;                   /* R3 on and the model has MoE layers */
  optim_tensor *ot;         /* [m->n_params] */
  int64_t step;             /* optimizer updates done */
  model *ref;               /* reference policy (kl_beta > 0) or NULL */
  model_acts *a, *ra;       /* activations of the policy / reference forward */
  tr_pack pk;
  /* per-sample storage of the current batch: logp_old / logp_ref of sample i
   * at cpl[cpl_off[i] .. cpl_off[i+1]) */
  int64_t *cpl_off;
  float *lp_old, *lp_ref;
  int64_t cap_n, cap_cpl;
  /* the device path (o.device == TRAIN_DEVICE_CUDA; train_cuda.c) */
  int cuda;
  optim_tensor *dot;        /* [m->n_params] device pointers: w, grad of m->cu; m, v, main */
  struct model_cuda_acts *ca;
  /* data parallelism (train.h; train_cuda.c): dp ranks, rank r = dpm[r] on
   * GPU dpdev[r] with activations dpa[r] (dpm[0] = m, dpa[0] = ca); `rank`
   * is the one trd_forward / trd_backward use; dp_stale: rank 0's masters
   * changed since the replicas last received them */
  int dp, rank, dp_stale;
  int dpdev[TRAIN_DP_MAX];
  model *dpm[TRAIN_DP_MAX];
  struct model_cuda_acts *dpa[TRAIN_DP_MAX];
  struct sync_dp *dpc;
};

/* Pack samples idx[0..n) of b into t->pk (tokens, offsets, targets, mask,
 * per-token copies of logp_old/logp_rollout/logp_ref where present, R3
 * replay tables). keep/adv may be NULL (all kept, advantage 0). */
int tr_pack_build(trainer *t, const rollout_batch *b, const int64_t *idx, int n,
                  const uint8_t *keep, const double *adv, rl_err *e);
/* Forward of model mdl (the policy or the reference) over t->pk with
 * activations a: per-token log-probs into logp (and entropy into ent when
 * not NULL). */
int tr_pack_forward(trainer *t, model *mdl, model_acts *a, float *logp, float *ent, rl_err *e);
/* Matches and total of the R3 overlap over the MoE layers of the last forward
 * (the CPU forward's router probabilities in a; on the CUDA trainer the own
 * choices the forward wrote into t->pk.own, when t->pk.own_on). */
void tr_pack_r3_overlap(trainer *t, model_acts *a, int64_t *match, int64_t *total);
void tr_pack_free(tr_pack *p);
/* Checks the batch against the model and the options (shapes, routing tables). */
int tr_batch_check(const trainer *t, const rollout_batch *b, rl_err *e);

/* Bring the model's weights in line with the optimizer's main copy after a
 * step or a load: BF16 = RNE(main) when rewrite_bf16 (a load; the optimizer
 * writes them itself), w32 = main in f32 mode; then re-quantize the training
 * views. */
int tr_weights_refresh(trainer *t, int rewrite_bf16, rl_err *e);

/* The device path (train_cuda.c; RL_EXIT_HARDWARE in a build without CUDA).
 * trd_init: upload the masters when m->cu is unset, device gradients,
 * moments (zero) and FP32 main (= t->ot's host main); trd_forward /
 * trd_backward: model_cuda twins of tr_pack_forward's calls over t->pk
 * (log-probs and their gradients in host memory); trd_optim_step: AdamW CUDA
 * on t->dot; trd_weights_refresh: (from_host: host state and BF16 = RNE(main)
 * uploaded first) re-quantize the device training views; trd_sync_host:
 * device masters and optimizer state → host. */
int trd_init(trainer *t, rl_err *e);
void trd_free(trainer *t);
int trd_grads_zero(trainer *t, rl_err *e);
int trd_forward(trainer *t, const model_batch *mb, const model_fwd_opts *fo, float temp, float *logp,
                float *ent, rl_err *e);
int trd_backward(trainer *t, const float *dlogp, const float *dent, rl_err *e);
int trd_optim_step(trainer *t, int64_t step, optim_info *info, rl_err *e);
int trd_weights_refresh(trainer *t, int from_host, rl_err *e);
int trd_sync_host(trainer *t, rl_err *e);
/* Data parallelism: make rank r current (its GPU the current device; the
 * rank trd_forward / trd_backward run on); trd_dp_reduce: the fixed-order
 * all-reduce of every rank's gradients (sync_dp_reduce_grads). With one
 * rank both are no-ops. trd_weights_refresh also sends rank 0's masters to
 * the replicas and re-quantizes theirs when they changed (optimizer step, load). */
int trd_rank_set(trainer *t, int r, rl_err *e);
int trd_dp_reduce(trainer *t, rl_err *e);

/* The device optimizer state (m, v, main) alone → t->ot's host buffers (not
 * the masters: a load fills the host masters before trainer_state_load). */
int trd_state_pull(trainer *t, rl_err *e);

#endif
