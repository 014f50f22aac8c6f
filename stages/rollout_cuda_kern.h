/* rollout_cuda_kern.h — the kernels of the CUDA rollout engine
 * (stages/rollout_cuda_kern.cu), for stages/rollout_cuda.c and the GPU tests.
 * All launch on stream st (NULL: the per-thread default stream) and return 0
 * or a filled rl_err. Caches are BF16 [slot][n_kv][max_len][head_dim]: head-major,
 * one KV head's positions of a sequence contiguous. */
#ifndef RLRUN_STAGES_ROLLOUT_CUDA_KERN_H
#define RLRUN_STAGES_ROLLOUT_CUDA_KERN_H
#include <stdint.h>

#include "kernels/common.h"

#if RLRUN_CUDA
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif
/* Row i of n: K and V of slot[i] at position pos[i] (rounded to BF16). */
int rck_kv_write(uint16_t *kc, uint16_t *vc, const float *k, const float *v, const int32_t *slot, const int32_t *pos,
                 int n, int64_t max_len, int nkv, int hd, cudaStream_t st, rl_err *e);
/* The same from BF16 k, v (the prefill's BF16 attention operands): a copy. */
int rck_kv_write_b(uint16_t *kc, uint16_t *vc, const uint16_t *k, const uint16_t *v, const int32_t *slot,
                   const int32_t *pos, int n, int64_t max_len, int nkv, int hd, cudaStream_t st, rl_err *e);
/* out[n][nq][hd] (FP32) and out_b (BF16, may be NULL): row i's query heads
 * against slot[i]'s first len[i] cached positions, split into n_split =
 * rck_n_split(max_len, nq / nkv) chunks (scratch pacc [n][nq][n_split][hd], pml
 * [n][nq][n_split][2]) combined in index order — by the staged kernel itself
 * when one CTA has all splits of a (row, KV head), else by a second launch (a
 * combine by the last split of each (row, KV head), through arrival counters,
 * gave the same bits and measured slower on the H100, 2026-12-05). */
int rck_decode_attention(float *out, uint16_t *out_b, const float *q, const uint16_t *kc, const uint16_t *vc,
                         const int32_t *slot, const int32_t *len, int n, int nq, int nkv, int hd, int64_t max_len,
                         int n_split, float *pacc, float *pml, cudaStream_t st, rl_err *e);
/* What the decode attention needs to do the step's QK path itself (rck_qkv_post's
 * work, fused): the q/k/v GEMM's FP32 rows qr [n][nq][hd], kr and v [n][nkv][hd],
 * the QK-norm weights, the step's RoPE table rows cs, sn [n][hd/2], eps, and the
 * cache to write row len − 1 of each (row, KV head) into. */
typedef struct rck_qk_in {
  const float *qr, *kr, *v, *wq, *wk, *cs, *sn;
  uint16_t *kc, *vc;
  float eps;
  /* the q/k/v rows in BF16 instead (the GEMMs' own output when they go through
   * cuBLASLt): used when qb is set, then qr, kr, v may be NULL; the same bits as
   * their exact FP32 copies */
  const uint16_t *qb, *kb, *vb;
  /* o's fp8-block activation (head_dim 128: one 128-K block a head), when q8 is
   * set: the combine also writes the E4M3 codes q8 [n][nq·128] and the scales
   * q8s[h·q8_ld + r] of out_b's values — the bytes quant_fp8_block_act_cuda
   * writes for out_b (ue8m0 scales when q8_ue8m0; q8_soft: the software codec,
   * quant_cuda_soft_cvt()). Needs out_b. */
  uint8_t *q8;
  float *q8s;
  int64_t q8_ld;
  int q8_ue8m0, q8_soft;
  /* set by rck_decode_attention_qk from rck_attn_q8_lane4 (callers leave it 0) */
  int q8_lane4;
} rck_qk_in;
/* rck_decode_attention with the QK path fused in (the staged kernel only): each
 * CTA norms and rotates its query heads from qr, and the CTA whose split holds
 * position len − 1 norms and rotates k, writes K and V of that position into the
 * cache and uses them — the same bits as rck_qkv_post then rck_decode_attention,
 * one launch fewer a layer. */
/* RLRUN_DECODE_ATTN_Q8_LANE4 (default on since session 26: fp8-block batch 64 +2.8 % on
 * the H100; =0 turns it off; read once, set ≥ 0 overrides, −1 asks): the fused
 * attention's o activation encoded from the BF16 outputs staged in shared memory,
 * a warp a head (4 values a
 * lane, qd_enc_fp8_div4), instead of re-read from global memory by 8 lanes a head
 * (16 values a lane) — the same bytes by construction (rollout_gpu_test: on == off). */
int rck_attn_q8_lane4(int set);
int rck_decode_attention_qk(float *out, uint16_t *out_b, const rck_qk_in *qk, const int32_t *slot,
                            const int32_t *len, int n, int nq, int nkv, int hd, int64_t max_len, int n_split,
                            float *pacc, float *pml, cudaStream_t st, rl_err *e);
/* 1 when the engine fuses the QK path into the attention for query groups of grp
 * heads: the staged kernel in force and RLRUN_DECODE_QK_FUSED not "0"; set ≥ 0
 * overrides the environment (tests), −1 only asks. */
int rck_decode_qk_fused(int grp, int set);
/* Splits of a cache of max_len positions for query groups of grp heads (the
 * kernel in force decides the split length). */
int rck_n_split(int64_t max_len, int grp);
/* The decode attention kernel: mode 0 two-phase (splits of 128 positions), 1
 * staged (splits of 64 positions copied whole into shared memory; the default);
 * −1 only asks. RLRUN_DECODE_ATTN=split makes 0 the default. rck_n_split follows
 * the mode: set it before making an engine. */
int rck_decode_attn_mode(int mode);
/* The staged kernel's tuning (speed only; the output bits depend on none):
 * per = splits a CTA (0: as many as the GPU holds in one wave; a CTA with all
 * of a row's splits also combines them), ring = shared-memory slots of 64 K or
 * V rows (2 … 4; 0, the default: 3 for steps of ≤ 64 rows, 2 above), pdl = 1 (default): launched as a programmatic
 * dependent — it copies the cache rows before len − 1 before
 * griddepcontrol.wait and reads q and row len − 1 after it, so the kernel
 * before it in the stream may trigger its dependents early only if it writes
 * nothing else it reads (rck_qkv_post and, with the QK path fused, the q/k/v
 * GEMM do so), tma = 1 (default): the ring
 * filled by bulk copies completing on mbarriers, 0: cp.async, ef = 1 (default):
 * the bulk copies load the cache evict-first in L2. Overrides
 * RLRUN_DECODE_ATTN_PER / _RING / _PDL / _TMA / _EF. */
void rck_decode_attn_tune(int per, int ring, int pdl, int tma, int ef);

/* The staged attention's per-CTA timeline, only in a build with -DRCK_TRACE
 * (both compilers; off in every normal build — docs/gpu-results.md, session 26,
 * gives the command): thread 0 of each CTA writes RCK_TR_N 64-bit slots, CTA c
 * at [c·RCK_TR_N]: the global timer (ns) at its start and end, its SM id, and
 * the SM clock at each phase boundary. The buffer keeps the last launch's
 * values for up to RCK_TR_CTAS CTAs; bench/attn_trace.h reads and reports it. */
enum {
  RCK_TR_GT0,      /* %globaltimer at the start */
  RCK_TR_CLK0,     /* clock64 at the start: the slots below are clocks too */
  RCK_TR_ISSUED,   /* the first ring loads issued (and griddepcontrol.wait passed with the QK path fused) */
  RCK_TR_QK,       /* q (normed and rotated when fused) in shared memory, the barrier after it */
  RCK_TR_SPLIT,    /* split z < 4: 5 slots from RCK_TR_SPLIT + 5z: K landed, scores, V landed, P·V, partials */
  RCK_TR_CMB_SYNC = RCK_TR_SPLIT + 20, /* the fused combine: past its first barrier */
  RCK_TR_CMB_Y,    /* value 0's output computed */
  RCK_TR_CMB_ST,   /* and stored */
  RCK_TR_SM,       /* %smid (not a clock) */
  RCK_TR_COMBINE,  /* the combine done */
  RCK_TR_LOOP,     /* past the split loop */
  RCK_TR_END,      /* the last instruction (after o's encode) */
  RCK_TR_GT1,      /* %globaltimer at the end */
  RCK_TR_N
};
#define RCK_TR_CTAS 10240
#ifdef RCK_TRACE
int rck_trace_read(uint64_t *host, size_t ctas); /* the first `ctas` CTAs' slots; nonzero on a CUDA error */
int rck_trace_clear(void);
#endif
/* The tokens a pipelined decode step feeds: tok[i] = prev[map[i] · stride]
 * (the token field of the step before's samples, sampler_out rows of `stride`
 * int32) where map[i] >= 0; other rows keep the token uploaded with the step. */
int rck_step_tokens(int32_t *tok, const int32_t *map, const int32_t *prev, int stride, int n, cudaStream_t st,
                    rl_err *e);
/* tgt[i] = samples[i · stride] (the token of sampler_out row i); and
 * logp[i · lstride] = lp[i] (the double logp field of sampler_out row i). */
int rck_sample_ids(int32_t *tgt, const int32_t *samples, int stride, int n, cudaStream_t st, rl_err *e);
int rck_sample_put_logp(double *logp, int lstride, const float *lp, int n, cudaStream_t st, rl_err *e);
/* QK-norm + RoPE of the step's q and k rows, and the K/V cache write. */
int rck_qkv_post(float *q, float *k, uint16_t *kc, uint16_t *vc, const float *qr, const float *kr, const float *v,
                 const float *wq, const float *wk, const float *cs, const float *sn, const int32_t *slot,
                 const int32_t *pos, int n, int nq, int nkv, int hd, int64_t max_len, float eps, cudaStream_t st,
                 rl_err *e);
#ifdef __cplusplus
}
#endif
#endif
#endif
