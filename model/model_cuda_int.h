/* model_cuda_int.h — what the CUDA model's files share (model_cuda.c,
 * model_cuda_fwd.c, model_cuda_bwd.c, model_cuda_kern.cu): the device state
 * behind m->cu and the activations, the linear-layer helpers, and the model's
 * own small kernels. Not an API for other modules. */
#ifndef RLRUN_MODEL_CUDA_INT_H
#define RLRUN_MODEL_CUDA_INT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- kernels (model_cuda_kern.cu)
 * Device pointers, the default stream; each returns 0 or RL_EXIT_HARDWARE
 * when the launch fails. Element-wise FP32 arithmetic is written with _rn
 * intrinsics (no FMA contraction) so that it reproduces the CPU's bits. */

/* out[i] = a[i] + b[i] (out may alias a or b). */
int mck_add_f32(float *out, const float *a, const float *b, int64_t n, rl_err *e);
/* out[i] = a[i] + FP32(b[i]) — mck_add_f32 on b's FP32 copy, bitwise. */
int mck_add_bf16(float *out, const float *a, const uint16_t *b, int64_t n, rl_err *e);
/* dx[i] = (add ? dx[i] : 0) + FP32(xb[i]). */
int mck_acc_bf16(float *dx, const uint16_t *xb, int64_t n, int add, rl_err *e);
/* xg[r, :] = x[slot_of_row[r] / k, :] for r < R (BF16 rows of H). */
int mck_moe_gather(uint16_t *xg, const uint16_t *x, const int32_t *slot_of_row, int64_t R, int k,
                   int H, rl_err *e);
/* out[t, i] = Σ_{j<k} rw[t·k+j] · eout[row_of_slot[t·k+j], i], j in order. */
int mck_moe_combine(float *out, const float *eout, const float *rw, const int32_t *row_of_slot,
                    int T, int k, int H, rl_err *e);
/* Backward of the combine: dw[s] = Σ_i dy[t,i]·eout[r,i] (FP32, fixed order),
 * deout[r, i] = rw[s]·dy[t, i], for slot s = t·k+j, r = row_of_slot[s]. */
int mck_moe_combine_bwd(float *dw, float *deout, const float *dy, const float *eout, const float *rw,
                        const int32_t *row_of_slot, int T, int k, int H, rl_err *e);
/* dx[t, i] = Σ_{j<k} dxg[row_of_slot[t·k+j], i], j in order. */
int mck_moe_sum_rows(float *dx, const float *dxg, const int32_t *row_of_slot, int T, int k, int H,
                     rl_err *e);
/* Zero-pad heads: dst[r, :dp] = (src[r, :d]·scale, 0…) for rows r < rows. */
int mck_pad_heads(float *dst, const float *src, int64_t rows, int d, int dp, float scale,
                  rl_err *e);
/* The inverse: dst[r, :d] = src[r, :d]·scale. */
int mck_unpad_heads(float *dst, const float *src, int64_t rows, int d, int dp, float scale,
                    rl_err *e);
/* out[0] = max(a[0], b[0]) (device scalars; NVFP4 gate/up shared amax). */
int mck_fmax2(float *out, const float *a, const float *b, rl_err *e);
/* One BF16 → FP32 conversion of a packed list (device pointers). */
typedef struct mck_cvt {
  float *dst;
  const uint16_t *src;
  int64_t n;
} mck_cvt;
/* dst[i] = FP32(src[i]) for every entry of the DEVICE list l[0..n), one
 * launch (one CTA per entry): the norm weights' refresh. */
int mck_f32_from_bf16_list(const mck_cvt *l, int n, rl_err *e);

#ifdef __cplusplus
}
#endif

/* ---------------------------------------------------------------- host state (C only) */
#if !defined(__CUDACC__)
#include "kernels/devprof.h"
#include "kernels/ops.h" /* ops_fp8_act */
#include "kernels/qtensor.h"
#include "model/model.h"
#include "model/model_cuda.h"

/* RLRUN_MODEL_PROFILE (kernels/devprof.h): `expr` (an op returning 0 or an
 * error code) timed as phase k — what ran before it since the last mark counts
 * as DP_OTHER. Off, two branches. */
#define MC_DP(k, expr) mc_dp_end((devprof_mark(DP_OTHER), (expr)), (k))
static inline int mc_dp_end(int rc, int k) {
  devprof_mark((devprof_phase)k);
  return rc;
}

/* The layouts of model_cuda_acts (key[12]). */
enum { MC_ACTS_FULL = 0, MC_ACTS_NO_GRAD = 1, MC_ACTS_RECOMPUTE = 2 };

/* Decoder layer l forward (model_cuda_fwd.c), in the acts' flow: res[l] → res[l+1]
 * (the backward's recomputation calls it again). */
int mc_layer_forward_any(model *m, int l, model_cuda_acts *a, const int32_t *replay, rl_err *e);

/* Device view of one linear layer. */
typedef struct mc_lin {
  qtensor q;             /* device qtensor: the master itself (BF16) or owned buffers */
  void *qdata, *qscales; /* owned when q.fmt != BF16 */
  float *sdec;           /* NVFP4 S_dec (device scalar) */
  int pi;                /* index of its parameter in m->params */
} mc_lin;

typedef struct mc_layer {
  mc_lin q, k, v, o, gate, up, down, router;
  mc_lin *eg, *eu, *ed; /* [E] */
} mc_layer;

/* Scratch slots of the linear helpers (BF16 output, BF16 dY, BF16 dX, a norm's
 * fp8-block output: mc_q8_act). */
enum { MC_SCR_Y, MC_SCR_DY, MC_SCR_DX, MC_SCR_Q8, MC_SCR_COUNT };

/* Everything m->cu holds. */
typedef struct model_cuda model_cuda;
struct model_cuda {
  int dev;
  model_cuda_param *p; /* [m->n_params] */
  mc_layer *layers;    /* [m->L] */
  mc_lin lm_head;
  quant_policy policy;
  int quantized;
  int row_inv; /* set for one model_cuda_forward with o->row_invariant: linears pinned, no small-M kernels */
  void *scr[MC_SCR_COUNT];
  size_t cap[MC_SCR_COUNT];
  /* model_cuda_quantize's own device buffers, allocated by its first call:
   * stats of every linear (mc_each_lin order), the multi-quantizer
   * workspace, the NVFP4 shared amax, the norm weights' conversion list */
  quant_stats *qstats;
  int n_lin;
  void *qws;
  size_t qws_bytes;
  float *qamax; /* [2] */
  mck_cvt *norms;
  int n_norms;
};

/* Device activations of one layer (see model_layer_acts; BF16 copies only
 * where a linear layer reads, FP32 where the backward reads). */
typedef struct mc_layer_acts {
  float *rstd1, *qr, *kr, *v, *q, *k, *rstd_q, *rstd_k, *att, *lse, *h, *rstd2;
  float *qp, *kp, *vp, *attp; /* padded attention operands (= q, k, v, att when not padded) */
  uint16_t *xn1_b, *att_b, *xn2_b;
  float *gate, *up;
  uint16_t *act_b;
  /* the BF16 flow's GEMM outputs (key[11]; qr, kr, gate, up are then NULL) and its
   * attention operands where the tensor-core kernels take them (key[13]; q, k, v NULL) */
  uint16_t *qr_b, *kr_b, *gate_b, *up_b, *q_b, *k_b, *v_b;
  /* MoE */
  float *rlogits, *probs, *rw, *eg, *eu, *eout;
  int32_t *ids, *sor, *ros;                    /* device */
  int32_t *ids_h, *e_start, *e_cnt, *sor_h, *ros_h; /* host */
  uint16_t *xg_b, *eact_b;
} mc_layer_acts;

/* The attention of layer l in model_cuda_decode_forward: the rollout engine's
 * KV cache instead of the packed sequences (x: layer l's acts, q/k/v ready). */
typedef int (*mc_dec_attn_fn)(void *ctx, int l, model_cuda_acts *a, mc_layer_acts *x, rl_err *e);

struct model_cuda_acts {
  int T, cap_T, n_seq, cap_seq, max_len, dp;
  mc_dec_attn_fn dec_attn; /* during model_cuda_decode_forward, else NULL */
  void *dec_ctx;
  int32_t *const *own_ids; /* during model_cuda_forward: model_fwd_opts.own_ids (R3 diagnostics), else NULL */
  /* key: the shapes the buffers were made for, then [11] bx, [12] the layout
   * (MC_ACTS_FULL / _NO_GRAD / _RECOMPUTE), [13] bxa (BF16 q, k, v for the
   * tensor-core attention: the BF16 flow with those kernels in force, head_dim 64/128).
   * bx: the BF16 flow — q/k/o/gate/up/down GEMM outputs stay BF16 and the
   * element-wise ops read them (kernels/ops.h "_bx"), the backward's linear
   * layers take and give BF16 (bitwise the FP32 flow's results, fewer passes).
   * NO_GRAD (model_fwd_opts.no_grad): every layer uses layer 0's buffers, no
   * backward scratch; model_cuda_backward refuses it. RECOMPUTE: the same
   * shared layer buffers with the backward scratch; the backward re-runs each
   * layer's forward first. */
  int key[14];
  size_t bytes; /* device memory of the buffers */
  /* set by the owner before the first forward: 1 keeps the FP32 flow (the
   * rollout engine's decode acts, whose step reads qr/kr/v/gate/up as FP32) */
  int fp32_flow;
  void **allocs; /* every device buffer below, for release */
  int n_allocs, cap_allocs;
  int32_t *tokens, *pos, *off, *targets; /* device */
  float *res, *rstdf, *logits, *lse, *logp, *ent, *dlogp, *dent;
  /* the BF16 flow's logits and their gradient (logits, dlogits are then NULL) */
  uint16_t *logits_b, *dlogits_b;
  uint16_t *xf_b;
  float temp;
  int have_lp;
  mc_layer_acts *la;
  /* backward scratch */
  float *dres, *dxn, *t1, *t2, *t3, *t4, *dlogits, *pad_do, *pad_dq, *pad_dk, *pad_dv;
  float *m_dw, *m_deout, *m_dact, *m_dg, *m_du, *m_dxg, *m_dlog;
  /* BF16 flow: o/down output, the residual gradient's BF16 copy, the MLP and
   * QK gradients, the dX of up to three linear layers that share an input */
  uint16_t *o_b, *dres_b, *dact_b, *dg_b, *du_b, *dq_b, *dk_b, *dv_b, *px[3];
};

/* A decode step with the forward's own kernels (the rollout engine's exact
 * mode, precision.exact_logprobs): R rows, row i token tok[i] at position
 * pos[i] (device arrays), through every layer as model_cuda_forward runs it
 * (mc_layer_forward_any, pinned linears), the attention by attn (the engine's
 * cache write + ops_attention_decode_tc_cuda), then the final norm and
 * lm_head into a->logits_b [R][V]. a: a BF16-flow forward-only set (a
 * model_cuda_forward with no_grad over >= R rows made it). Its buffers exist
 * already (stream-ordered workspaces aside), so the step can be captured in a
 * CUDA graph once it has run eagerly. */
int model_cuda_decode_forward(model *m, model_cuda_acts *a, int R, const int32_t *tok, const int32_t *pos,
                              mc_dec_attn_fn attn, void *ctx, rl_err *e);
/* Device scratch slot of at least bytes (grown, reused; NULL with e set). */
void *mc_scratch(model *m, int slot, size_t bytes, rl_err *e);
/* out FP32 [M, N] = xb [M, K] (BF16) · Wᵀ through linear_forward, or for BF16
 * weights and M ≤ 64 through gemm_small_bf16_cuda (RLRUN_SMALL_GEMM=0: never). */
int mc_lin_fwd(model *m, const mc_lin *L, const uint16_t *xb, int64_t M, float *out, rl_err *e);
/* Linear layers that share their input, as one launch where the small-M
 * kernel takes them all (gemm_small_bf16_group_cuda: decode's q/k/v), else
 * one mc_lin_fwd each: out[i] = x·W_iᵀ (FP32 of the BF16-rounded sums). */
int mc_lin_fwd_group(model *m, const mc_lin *const *L, int n, const uint16_t *xb, int64_t M, float *const *out,
                     rl_err *e);
/* act_b = BF16 of silu(x·Wgᵀ) ⊙ (x·Wuᵀ): one launch where the small-M kernel
 * takes both (gemm_small_bf16_swiglu_cuda; gate and up are then not stored),
 * else mc_lin_fwd into gate and up and ops_swiglu_forward_cuda. */
int mc_lin_fwd_swiglu(model *m, const mc_lin *gate, const mc_lin *up, const uint16_t *xb, int64_t M, float *g_out,
                      float *u_out, uint16_t *act_b, rl_err *e);
/* mc_lin_fwd with a BF16 result: out_b [M, N] = BF16 of x·Wᵀ — the same bits as
 * mc_lin_fwd's FP32 (which holds BF16 values), linear_forward writing out_b itself.
 * Except fp8-block weights at M ≤ 64 with model_cuda_small_q8 on (not pinned, not
 * row-invariant): linear_forward's activation quantizer, then
 * gemm_small_fp8_group_cuda — its own summation order (bitwise cuBLASLt's on
 * 99.99–100 % of the outputs in gemm_small_fp8_gpu_test). */
int mc_lin_fwd_b(model *m, const mc_lin *L, const uint16_t *xb, int64_t M, uint16_t *out_b, rl_err *e);
/* 1 when mc_lin_fwd of L over M rows of xb would run linear_forward (cuBLASLt)
 * and convert its BF16 result to FP32 (no small-M kernel takes it): a caller
 * that can read BF16 then takes mc_lin_fwd_b's result itself, the same bits
 * without the conversion pass (the rollout engine's decode step). */
int mc_lin_native_b(const model *m, const mc_lin *L, const uint16_t *xb, int64_t M);
/* 1 when the n linears L (reading one activation of M rows) are fp8-block
 * weights through cuBLASLt with one K (mc_lin_native_b each, activation sharing
 * on): their activation can come quantized from its producer
 * (ops_rmsnorm_forward_q8_cuda) and mc_lin_fwd_b_q8 runs the GEMMs. */
int mc_lin_q8_ok(const model *m, const mc_lin *const *L, int n, const uint16_t *xb, int64_t M);
/* The fp8-block activation buffer of M rows of width K in the scratch (codes
 * then scales, ops_fp8_act of rows_pad = M rounded up to 8), for a norm to
 * write and mc_lin_fwd_b_q8 to read; NULL with *e set on failure. */
int mc_q8_act(model *m, int64_t M, int64_t K, ops_fp8_act *qa, rl_err *e);
/* out_b[i] = the BF16 of L[i] applied to the activation its producer quantized:
 * codes q [M_pad][K] and scales (ops_fp8_act, M_pad = M rounded up to 8) — the
 * bits of mc_lin_fwd_b on that BF16 activation; with model_cuda_small_q8 at
 * M ≤ 64 instead one gemm_small_fp8_group_cuda launch for all n (K split by the
 * group's rows: then not mc_lin_fwd_b's bits, which splits by each weight's). */
int mc_lin_fwd_b_q8(model *m, const mc_lin *const *L, int n, const uint8_t *q, const float *scales, int64_t M,
                    uint16_t *const *out_b, rl_err *e);
/* 1 when mc_lin_fwd_b_q8 of these operands runs gemm_small_fp8_group_cuda (not
 * cuBLASLt, which also reads the pad rows up to M_pad): a producer that writes
 * only the M real rows may then feed it (the decode attention for o). */
int mc_lin_small_q8_ok(const model *m, const mc_lin *const *L, int n, const uint8_t *q, const float *scales, int64_t M,
                       uint16_t *const *out_b);
/* 1 when gate and up (fp8-block, M ≤ 64, model_cuda_small_q8 and
 * model_cuda_small_q8_swiglu on, not pinned or row-invariant, sm_90) may run as
 * mc_lin_fwd_swiglu_q8 on the activation q/scales (mc_q8_act's layout): the pair's
 * SwiGLU in the GEMM's epilogue and its fp8-block quantization into *qo. */
int mc_lin_swiglu_q8_ok(const model *m, const mc_lin *gate, const mc_lin *up, const uint8_t *q, const float *scales,
                        int64_t M, const uint16_t *act_b, const ops_fp8_act *qo);
/* act_b = bf16(silu(g)·u) with g, u the bits mc_lin_fwd_b_q8 of {gate, up} writes,
 * and *qo = its fp8-block quantization, the bytes ops_swiglu_forward_q8_bx_cuda
 * writes for that act_b: one gemm_small_fp8_swiglu_cuda launch where those took
 * two. qo must not overlap q/scales. */
int mc_lin_fwd_swiglu_q8(model *m, const mc_lin *gate, const mc_lin *up, const uint8_t *q, const float *scales,
                         int64_t M, uint16_t *act_b, const ops_fp8_act *qo, rl_err *e);
/* act_b [M][I] = SwiGLU of the BF16 gate_b, up_b (rows of I), then out_b = the
 * BF16 of down over act_b: the SwiGLU writing down's fp8-block activation
 * itself when down takes it (mc_lin_q8_ok, I % 16 == 0, aligned operands), else
 * ops_swiglu_forward_bx_cuda + mc_lin_fwd_b — the same bits. */
int mc_swiglu_down_b(model *m, const mc_lin *down, const uint16_t *gate_b, const uint16_t *up_b, uint16_t *act_b,
                     int64_t M, uint16_t *out_b, rl_err *e);
/* n linears reading the same xb into BF16 outputs: one activation quantization
 * for all (linear_act_prepare) when they share a quantized format and K and run
 * cuBLASLt, else mc_lin_fwd_b each; the same bits either way. */
int mc_lin_fwd_b_group(model *m, const mc_lin *const *L, int n, const uint16_t *xb, int64_t M, uint16_t *const *out_b,
                       rl_err *e);
/* mc_lin_bwd on BF16: dy_b [M, N] BF16; dx_b [M, K] written as BF16 (NULL to
 * skip) — what mc_lin_bwd converts dy to and adds dX from, without the passes. */
int mc_lin_bwd_b(model *m, const mc_lin *L, const uint16_t *dy_b, int64_t M, const uint16_t *xb, uint16_t *dx_b,
                 rl_err *e);
/* linear_backward of L for FP32 dy [M, N]: dW accumulated into the device g;
 * dx [M, K] FP32 written (add 0) or added to (add 1), NULL to skip. */
int mc_lin_bwd(model *m, const mc_lin *L, const float *dy, int64_t M, const uint16_t *xb, float *dx,
               int add, rl_err *e);
/* The MoE block of layer l on xn2_b: writes out [T, H]. */
int mc_moe_forward(model *m, int l, const int32_t *replay, model_cuda_acts *a, float *out, rl_err *e);
/* Its backward for dy [T, H]: gradients accumulated, dxn2 [T, H] written. */
int mc_moe_backward(model *m, int l, model_cuda_acts *a, const float *dy, float *dxn2, rl_err *e);
/* Check a CUDA runtime status (RL_EXIT_HARDWARE naming what failed). */
int mc_ok(int status, const char *what, rl_err *e);
/* Index of parameter p in m->params. */
static inline int mc_pidx(const model *m, const model_param *p) { return (int)(p - m->params); }
#endif

#endif
