/* loop.h — the run loop: a resolved recipe executed step by step in a run
 * directory, through ARCHITECTURE.md's stage contract, resumable anywhere.
 *
 *   convert (iteration 0): build the model (HF dir, checkpoint, or a fresh
 *     init from the seed), the tokenizer, prompts, the reward host, the
 *     rollout engine and the trainer; then load the newest complete checkpoint
 *     of the run, if any (sha256-verified; a checkpoint whose directory was
 *     removed is skipped, and its record forgotten, see loop_run).
 *   per iteration k = (checkpoint + 1) .. loop.iterations:
 *     rollout  prompts of k (a pure function of seed, k, batch) → samples;
 *              when (k, rollout) is already done, its samples are READ BACK
 *              from the store instead of regenerated
 *     reward   the Lua hook scores them (rewards + extra metrics)
 *     commit   samples + reward metrics + (k, rollout) and (k, reward) done:
 *              one transaction
 *     train    one update (always re-run after a checkpoint: the weights are
 *              rebuilt exactly); metrics + (k, train) done in one transaction
 *              the first time, compared with the recorded loss afterwards
 *     sync     model_quantize into the rollout precision; (k, sync) done
 *              (a GPU run with gpus.rollout ≠ gpus.train: re-quantized on the
 *              train GPU, broadcast over NCCL to the rollout GPU's replica)
 *     checkpoint every loop.checkpoint_interval iterations and after the
 *              last: state/ckpt.h, then retention
 *   SFT (train.algorithm sft): no rollout, reward or commit; train runs on
 *     loop_sft_batch (runner/loop_sft.c): the data stream's examples of k.
 *   A committed step is never redone; the final checkpoint step marks the run
 *   complete. SIGINT/SIGTERM stop at the next stage boundary (the current
 *   commit finishes or never happened) with RL_EXIT_INTERRUPT; a second
 *   signal exits at once (SQLite rolls the open transaction back).
 *
 * Failure points (state/fault.h): loop.convert, loop.rollout, loop.reward,
 * loop.commit, loop.train, loop.sync, loop.checkpoint (each passed once per
 * stage run; with ":kill" they kill the process there). */
#ifndef RLRUN_LOOP_H
#define RLRUN_LOOP_H

#include <stdio.h>

#include "kernels/common.h"
#include "runner/recipe.h"
#include "state/ckpt.h"
#include "state/store.h"

/* Where a run continues: the newest recorded checkpoint whose directory is
 * present, every file sha256-verified, its manifest read and its data cursor
 * checked against the recipe's batch. */
typedef struct loop_resume {
  int found;     /* 0: no checkpoint (the loop starts at iteration 1) */
  ckpt_info info; /* found 1: the checkpoint */
} loop_resume;
/* Find and check the resume point of the run in run_dir. Read-only: a
 * missing, changed or inconsistent checkpoint file is an error
 * (RL_EXIT_STATE, the file named, what to do) and nothing is modified. */
int loop_resume_find(const char *run_dir, store *s, const recipe *r, loop_resume *out, rl_err *e);
void loop_resume_free(loop_resume *p);

typedef struct loop_opts {
  int progress; /* 1: a redrawn status line (terminal), 0: plain log lines */
  FILE *log;    /* progress and notes (NULL = stderr) */
  int quiet;    /* no per-iteration lines */
  const loop_resume *resume; /* the checked resume point, or NULL: loop_run finds it first */
  int changed;  /* resumed with --allow-changed: a re-run of a step done before may differ from its
                   first run (its metrics are replaced and noted, not warned about as non-reproducible) */
} loop_opts;

/* Run (or continue) the run in run_dir with store s and recipe r. Returns 0
 * when the run is complete, RL_EXIT_INTERRUPT when stopped by a signal, or
 * the error of the failing stage (recorded in the store as a failed step and
 * an error event). The resume point is checked before anything is written:
 * when it fails, or restoring it fails, the store is left as it was. Resuming
 * from a checkpoint older than the newest recorded one (newer directories
 * removed by hand) forgets the newer checkpoints' records in the transaction
 * that records the resume, so the loop writes them again. */
int loop_run(const char *run_dir, store *s, const recipe *r, const loop_opts *o, rl_err *e);

/* Append one line to RUNDIR/logs/run.log (the outcome lines `rlrun run` and
 * `rlrun resume` print after loop_run, so that the log ends as the terminal
 * did); nothing when the log cannot be opened. */
void loop_log_append(const char *run_dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* 1 when the run recorded in s is complete for a run of `iterations`
 * iterations (its final checkpoint step is done). */
int loop_is_complete(store *s, int64_t iterations);

/* Install the SIGINT/SIGTERM handlers of the loop (first: stop at the next
 * boundary; second: exit 130 at once). */
void loop_install_signals(void);
/* 1 after a stop was requested. */
int loop_stop_requested(void);

#endif
