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
/* Matches and total of the R3 overlap over the MoE layers of the last forward. */
void tr_pack_r3_overlap(trainer *t, model_acts *a, int64_t *match, int64_t *total);
void tr_pack_free(tr_pack *p);
/* Checks the batch against the model and the options (shapes, routing tables). */
int tr_batch_check(const trainer *t, const rollout_batch *b, rl_err *e);

/* Bring the model's weights in line with the optimizer's main copy after a
 * step or a load: BF16 = RNE(main) when rewrite_bf16 (a load; the optimizer
 * writes them itself), w32 = main in f32 mode; then re-quantize the training
 * views. */
int tr_weights_refresh(trainer *t, int rewrite_bf16, rl_err *e);

#endif
