#!/usr/bin/env python3
"""rl_ref.py - docs RL.md's formulas in plain numpy, written from the doc alone
(not from stages/rl_loss.c), printing the constants that tests/test_rl_loss.c
asserts. numpy only; run: python3 tests/oracle/rl_ref.py
"""
import numpy as np

F32 = np.float32  # the trainer's log-probs are FP32: round inputs the same way


def f32(x):
    return np.asarray(x, F32).astype(np.float64)


def ppo_terms(lnew, lold, A, w, eps_low=0.2, eps_high=0.2):
    """L_t = -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) w_t and dL_t/dlogp_new,
    with 0 * x = 0 for w_t = 0 or A = 0 (the formula's value, whatever rho)."""
    with np.errstate(over="ignore"):
        rho = np.exp(lnew - lold)
    L, g = [], []
    for t in range(len(rho)):
        if w[t] == 0 or A[t] == 0:
            L.append(0.0), g.append(0.0)
            continue
        unc, clp = rho[t] * A[t], np.clip(rho[t], 1 - eps_low, 1 + eps_high) * A[t]
        L.append(-min(unc, clp) * w[t])
        g.append(0.0 if clp < unc else -A[t] * rho[t] * w[t])
    return np.array(L), np.array(g)


def icepop(lold, lroll, low=0.5, high=2.0):
    x = np.exp(lold - lroll)
    return ((x >= low) & (x <= high)).astype(np.float64)


def advantages(kind, r):
    """One group's advantages (RL.md): grpo (r - mean) / (std + 1e-6), std as
    torch's r.std() (Bessel's G - 1, as verl, slime, TRL and OpenRLHF compute it);
    dr_grpo r - mean; rloo r_i - mean of the other G - 1. All-equal: zeros."""
    r = np.asarray(r, np.float64)
    if np.all(r == r[0]):
        return np.zeros_like(r)
    if kind == "grpo":
        return (r - r.mean()) / (r.std(ddof=1) + 1e-6)
    if kind == "dr_grpo":
        return r - r.mean()
    return np.array([r[i] - np.delete(r, i).mean() for i in range(len(r))])


def case_grpo_std():
    """rl_adv_grpo_sample_std_and_degenerate."""
    for r in ([1, 0, 0, 0], [0, 1], [0.3, -1.2, 2.5]):
        print("grpo %s: %s" % (r, " ".join("%.17g" % a for a in advantages("grpo", r))))


def case_zero_weight_or_advantage():
    """rl_loss_zero_weight_or_advantage_ignores_ratio_overflow: two sequences,
    A = {0, -1.5}, IcePop, token-mean over N = 4 tokens."""
    lnew = f32([0, -0.9, -1, -1.9])
    lold = f32([-1000, -1, -1000, -2])
    lroll = f32([-1000, -1, -2, -2.25])
    A = [0, 0, -1.5, -1.5]
    L, g = ppo_terms(lnew, lold, A, icepop(lold, lroll))
    print("zero_weight_or_advantage: loss %.17g grad %s" % (L.sum() / 4, ["%.9g" % v for v in g / 4]))


def case_seq_mean_empty_and_kl():
    """rl_loss_seq_mean_skips_empty_sequences_kl_unweighted: seq_mean_token_mean
    over the sequences that have tokens in the loss (an empty and a fully masked
    one have no token mean: left out of S), TIS truncate C = 2 on the policy term
    only, k3 KL to the reference (d = logp_ref - logp_new) with beta = 0.1."""
    seqs = [  # (A, lnew, lold, lroll, lref, mask)
        (1.0, [-1.0, -2.5, -0.25], [-1.25, -2.0, -0.25], [-2.0, -2.0, 0.0], [-1.0, -2.0, -0.5], [1, 1, 1]),
        (-0.5, [], [], [], [], []),
        (0.8, [-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0], [0, 0]),
        (-1.2, [-3.0, -0.5], [-2.5, -0.75], [-3.5, -0.75], [-2.75, -0.5], [1, 1]),
    ]
    beta, C = 0.1, 2.0
    kept = [q for q in seqs if sum(q[5])]
    S = len(kept)
    loss, pol, kl, grads, cut = 0.0, 0.0, 0.0, [], 0
    for A, lnew, lold, lroll, lref, mask in seqs:
        lnew, lold, lroll, lref, m = map(f32, (lnew, lold, lroll, lref, mask))
        n = m.sum()
        if n == 0:
            grads += [0.0] * len(m)
            continue
        w = np.minimum(np.exp(lold - lroll), C)
        cut += int(((np.exp(lold - lroll) > C) * m).sum())
        L, g = ppo_terms(lnew, lold, [A] * len(m), w)
        d = lref - lnew
        k3 = np.exp(d) - 1 - d
        pol += (L * m).sum() / (S * n)
        kl += (k3 * m).sum() / (S * n)
        grads += list((g + beta * (1 - np.exp(d))) * m / (S * n))
    print("seq_mean_empty_and_kl: loss %.17g policy %.17g kl %.17g, %d TIS weights cut"
          % (pol + beta * kl, pol, kl, cut))
    print("  grad %s" % " ".join("%.9g" % v for v in grads))


def case_trainer_mismatch_all_tokens():
    """train_mismatch_over_every_generated_token (test_train.c): 3 groups of 3,
    group 1 degenerate; completion lengths below; delta_t = logp_old - logp_rollout
    = -a[t % 5] over the flat tokens in sample order; IcePop [0.5, 2]; one
    optimizer step, so rho = 1 on every token."""
    rewards = [[1, 0, 0.5], [0.5, 0.5, 0.5], [0, 0, 1]]
    lens = [[3, 1, 4], [2, 3, 1], [4, 2, 2]]
    a = [0, 0.125, 0.5, 1, 1.5]
    n = sum(map(sum, lens))
    d = -np.array([a[t % 5] for t in range(n)], np.float64)
    w = np.exp(d)
    mask_w = ((w >= 0.5) & (w <= 2.0)).astype(np.float64)
    print("mismatch over all %d tokens: logp_abs_diff %.17g kl_k3 %.17g ess %.17g max_abs_diff %.17g"
          % (n, np.abs(d).mean(), np.mean(np.exp(d) - 1 - d), w.sum() ** 2 / (n * (w ** 2).sum()), np.abs(d).max()))
    print("  tis/clipfrac %.17g tis/mean %.17g" % (np.mean(mask_w == 0), mask_w.mean()))
    num, N, t = 0.0, 0, 0
    for g in range(3):
        A = advantages("grpo", rewards[g])
        for i in range(3):
            ts = slice(t, t + lens[g][i])
            t += lens[g][i]
            if np.all(np.asarray(rewards[g]) == rewards[g][0]):
                continue  # degenerate: left out of the loss and of its denominator
            L, _ = ppo_terms(np.zeros(lens[g][i]), np.zeros(lens[g][i]), [A[i]] * lens[g][i], mask_w[ts])
            num += L.sum()
            N += lens[g][i]
    print("  loss/policy %.17g over %d kept tokens" % (num / N, N))


if __name__ == "__main__":
    case_seq_mean_empty_and_kl()
    case_trainer_mismatch_all_tokens()
    case_grpo_std()
    case_zero_weight_or_advantage()
