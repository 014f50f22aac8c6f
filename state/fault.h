/* fault.h — injectable failure points, so tests can prove that a failure or a
 * kill at a given moment leaves a run valid and resumable.
 *
 * The environment variable RLRUN_FAULT holds a comma-separated list of
 * "POINT[@N][:ACTION]": the N-th time (1-based, default 1) the process passes
 * POINT, ACTION happens: "fail" (default: fault_hit returns 1 and the caller
 * fails the way a full disk would, ENOSPC), "kill" (SIGKILL now), "every"
 * (fail every time from the N-th on). Points are named "module.what", e.g.
 * ckpt.write_weights, ckpt.before_publish, ckpt.before_record, loop.rollout,
 * loop.reward, loop.train, loop.sync, loop.commit_samples. Without RLRUN_FAULT
 * fault_hit costs one getenv and returns 0. */
#ifndef RLRUN_FAULT_H
#define RLRUN_FAULT_H

/* Pass failure point `point`: returns 1 when an injected failure must happen
 * here (the caller reports it as ENOSPC), 0 otherwise; may not return (kill). */
int fault_hit(const char *point);
/* Forget the hit counts (tests that reuse a process). */
void fault_reset(void);

#endif
