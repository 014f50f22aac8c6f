/* rollout_cuda.h — the CUDA rollout engine: the device twin of the CPU engine
 * (stages/rollout.h), as a separate engine so that stages/rollout.c and the
 * run loop stay untouched (the loop picks this engine for a GPU recipe).
 *
 *   model_cuda_init(m, &e);                          device weights (model_cuda.h)
 *   rollout_cuda_engine *eng;
 *   rollout_cuda_engine_new(m, &policy, 64, 1024, &eng, &e);   64 slots, 1024 positions each
 *   rollout_opts o; rollout_opts_default(&o); o.eos_id = 2; ...
 *   rollout_batch b;
 *   rollout_cuda_generate_ids(eng, ids, n_ids, n_prompts, G, iteration, &o, &b, &e);
 *   ... b.s[i] exactly as the CPU engine fills it (rollout.h) ...
 *   rollout_batch_free(&b); rollout_cuda_engine_free(eng);
 *
 * Device state: a BF16 KV cache [L][slots + 1][max_len][n_kv][head_dim] of
 * the attention keys (after QK-norm + RoPE, made by the full forward's own
 * ops_qk_norm_rope kernel, per row) and the values; slot `slots` is scratch for
 * padding rows. The decode attention reads each cached row once per step.
 *
 * A generate call: sequences (prompt p, sample g; p-major) take free slots in
 * ascending order; newly admitted ones are prefilled together through
 * model_cuda_forward (packed, tensor-core attention), their K/V copied into
 * the cache, the first token sampled from each prompt's last logits row; then
 * decode steps: one row per active slot (slot order) through the same
 * per-layer ops as model_cuda_forward (rmsnorm, linear_forward in the
 * policy's formats, QK-norm + RoPE with the step's RoPE table made once, the
 * decode attention kernel, o_proj, residual + norm, MLP or MoE), the final
 * norm and lm_head, and the fused sampling kernel (sampler_cuda.cu, key (seed,
 * iteration, p, g, position)). Finishing (EOS, max_new_tokens) is decided on
 * the host after each step; a finished sequence frees its slot at once for
 * the next waiting one.
 *
 * CUDA graphs: a dense model's decode step (embedding → lm_head) is captured
 * once per row bucket (1, 2, 4, 8, then multiples of 16; rows past the active
 * ones are padding that writes only the scratch slot) and replayed; a graph is
 * dropped and captured again when a device buffer it points into moved
 * (device_buffers_epoch). MoE layers copy routing to the host mid-step, so MoE
 * models decode eagerly. RLRUN_ROLLOUT_GRAPHS=0 turns graphs off;
 * RLRUN_ROLLOUT_PROFILE=1 times every phase with device events recorded in
 * the stream (graph nodes when captured: the step runs as it would, nothing is
 * synchronised) and prints the per-step means when the engine is freed.
 *
 * Fusion in the decode step (against the full forward's sequence of ops): the
 * residual add that ends a layer is done by the next layer's norm 1 (or the
 * final norm), QK-norm + RoPE of q and k and the K/V cache write are one
 * kernel, and with the small-M GEMM (BF16, M ≤ 64) q/k/v are one grouped
 * launch and gate/up/SwiGLU one launch. The norms, QK path and SwiGLU use
 * the unfused ops' device code; the grouped GEMMs split K by the group's
 * shape (kernels/gemm.h), so their sums are ordered as the group's, not as
 * three separate calls' would be. In fp8-block, the linears at M ≤ 64 run
 * gemm_small_fp8_group_cuda on the activation the q8 norms and SwiGLU wrote
 * (q/k/v one launch, gate/up one; o on linear_forward's quantizer) unless
 * RLRUN_SMALL_GEMM_Q8=0 (cuBLASLt; model_cuda_small_q8). RLRUN_SMALL_GEMM_FP8=1
 * sends fp8-block linears at M ≤ 64 through the older gemm_small_fp8_block_cuda
 * instead, which quantizes for itself (model/model_cuda.c).
 *
 * Numerics: every op but attention is the full forward's kernel on the same
 * row; the decode attention follows the tensor-core attention's numerics (q,
 * K, V and P in BF16, scores/softmax FP32, split over 128 positions, fixed-
 * order combine), so rollout log-probs differ from model_cuda_forward +
 * logprob by summation order (tests/gpu/rollout_gpu_test.c states the bound
 * it checks). Batch-size independence holds for the engine's own kernels
 * (per-row work, fixed orders); a GEMM library may pick a different algorithm
 * for a different row count, which the GPU test checks (1, 7, 64 slots).
 *
 * Not (yet) here: prefix sharing of the G samples (each is prefilled). MoE: routed ids of every fed token are captured (the host copy
 * model_cuda's MoE layer makes); the last generated token is never fed, its
 * rows hold −1. */
#ifndef RLRUN_ROLLOUT_CUDA_H
#define RLRUN_ROLLOUT_CUDA_H

#include <stdint.h>

#include "kernels/common.h"
#include "kernels/qtensor.h"
#include "stages/rollout.h"

struct model;
typedef struct rollout_cuda_engine rollout_cuda_engine;

/* An engine over model m (model_cuda_init done; not owned) with `slots`
 * sequences of at most max_len positions (prompt + completion) in its device
 * cache. policy: the rollout precision (model_cuda_quantize runs when the
 * device views are stale or in another policy; NULL: use them as they are).
 * RL_EXIT_HARDWARE without CUDA or when the device allocation fails (the
 * message says how many bytes); RL_EXIT_USAGE for bad sizes. */
int rollout_cuda_engine_new(struct model *m, const quant_policy *policy, int slots, int64_t max_len,
                            rollout_cuda_engine **out, rl_err *e);
void rollout_cuda_engine_free(rollout_cuda_engine *eng);
/* With a tokenizer (not owned; NULL: none) the engine applies the stop rules
 * of stages/stop.h after every token, as the CPU engine does: EOS (eos_id −2
 * = the tokenizer's), stop strings (opts.stop, exclude_stop), length; it
 * fills completion_text and stop_index. Without one, completion_text is ""
 * and stop strings are refused. */
void rollout_cuda_engine_set_tokenizer(rollout_cuda_engine *eng, const tokenizer *t);
/* No RLRUN_ROLLOUT_PROFILE on the calling thread from now on (the profile state
 * is per host thread; a rollout split's worker threads live for one generate
 * call, so they record no timing events: none to leak, none left in graphs). */
void rollout_cuda_profile_thread_off(void);
/* Device bytes of the KV cache (raw K + V in BF16, attention keys in FP32). */
int64_t rollout_cuda_cache_bytes(const rollout_cuda_engine *eng);
/* The decode step's BF16 hand-off (on unless RLRUN_DECODE_BF16_HANDOFF=0): the
 * results of linears that run cuBLASLt go to their readers in BF16 instead of
 * through an FP32 conversion each — the same bits. set ≥ 0 overrides (tests);
 * −1 only asks. Engines recapture their step graphs when it changes. */
int rollout_cuda_bf16_handoff(int set);
/* fp8-block decode at head_dim 128, o through the small-M fp8 GEMM: the
 * attention's combine writes o's fp8-block activation itself (on unless
 * RLRUN_DECODE_ATTN_Q8=0 or RLRUN_NORM_Q8=0) — the bytes of the quantizer pass
 * it replaces. set ≥ 0 overrides (tests); −1 only asks. */
int rollout_cuda_attn_q8(int set);
/* A decode step's logits handed to the sampler as the BF16 they are (on unless
 * RLRUN_DECODE_LOGITS_BF16=0): lm_head writes BF16 rows, sampler_sample_bf16_cuda
 * reads them — the same tokens and log-probs as through FP32 rows, half the
 * bytes. set ≥ 0 overrides (tests); −1 only asks. Engines recapture their step
 * graphs when it changes. */
int rollout_cuda_logits_b(int set);
/* Linear groups (q/k/v, o, gate/up + down) whose results the engine handed off
 * in BF16, over the decode steps it ran eagerly or captured as graphs. */
long long rollout_cuda_handoffs(const rollout_cuda_engine *eng);
/* Linear groups whose fp8-block activation the decode step's norm wrote
 * (model_cuda_norm_q8), counted as rollout_cuda_handoffs; engines recapture
 * their graphs when model_cuda_norm_q8 changes. */
long long rollout_cuda_norm_q8s(const rollout_cuda_engine *eng);

/* G completions of each prompt ids[p][0 .. n_ids[p]−1] (used as is), as
 * rollout_generate_ids (rollout.h) with opts o: seed, temperature, greedy,
 * top_p, top_k, min_p, max_new_tokens, ignore_eos, eos_id (−2: the
 * tokenizer's EOS, none without a tokenizer), max_slots (≤ the engine's
 * slots; 0 = all), stop / n_stop / exclude_stop (with a tokenizer only). */
int rollout_cuda_generate_ids(rollout_cuda_engine *eng, const int32_t *const *ids, const int64_t *n_ids,
                              int64_t n_prompts, int G, int64_t iteration, const rollout_opts *o,
                              rollout_batch *out, rl_err *e);

#endif
