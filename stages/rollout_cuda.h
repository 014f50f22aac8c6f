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
 * Device state: a BF16 KV cache [L][slots][max_len][n_kv][head_dim] of the
 * RAW keys (k_proj output before QK-norm/RoPE, as on the CPU: BF16 GEMM
 * outputs, stored exactly) and values, plus the attention keys in FP32
 * [L][slots][max_len][n_kv][head_dim] made by the full forward's own
 * ops_qk_norm_rope_forward_cuda when a row is written (that kernel is per
 * row, so this equals re-applying it to the cached raw keys on every read,
 * bit for bit, without re-running it each step). The decode attention reads
 * those FP32 keys and the BF16 values once per step.
 *
 * A generate call: sequences (prompt p, sample g; p-major) take free slots in
 * ascending order; newly admitted ones are prefilled together through
 * model_cuda_forward (packed, tensor-core attention), their raw K/V and keys
 * copied into the cache, the first token sampled from each prompt's last
 * logits row; then decode steps: one row per active slot (slot order) through
 * the same per-layer ops as model_cuda_forward (rmsnorm, linear_forward in
 * the policy's formats, QK-norm + RoPE, the decode attention kernel, o_proj,
 * residual + norm, MLP or MoE), the final norm and lm_head, and the fused
 * sampling kernel (sampler_cuda.cu, key (seed, iteration, p, g, position)).
 * Finishing (EOS, max_new_tokens) is decided on the host after each step; a
 * finished sequence frees its slot at once for the next waiting one.
 *
 * Numerics: every op but attention is the full forward's kernel on the same
 * row; decode attention is FP32 SIMT (split over 256 positions, fixed-order
 * combine) where the full forward uses tensor-core BF16 attention, so the
 * rollout log-probs differ from model_cuda_forward + logprob by attention
 * rounding (tests/gpu/rollout_gpu_test.c states the bound it checks).
 * Batch-size independence holds for the engine's own kernels (per-row
 * work, fixed orders); a GEMM library may pick a different algorithm for a
 * different row count, which the GPU test checks (1, 7, 64 slots).
 *
 * Not (yet) here: text prompts / stop strings (use rollout_generate_ids-style
 * ids; completion_text is ""), prefix sharing of the G samples (each is
 * prefilled), CUDA graphs of the decode step. MoE: routed ids of every fed
 * token are captured (the host copy model_cuda's MoE layer makes); the last
 * generated token is never fed, its rows hold −1. */
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
/* Device bytes of the KV cache (raw K + V in BF16, attention keys in FP32). */
int64_t rollout_cuda_cache_bytes(const rollout_cuda_engine *eng);

/* G completions of each prompt ids[p][0 .. n_ids[p]−1] (used as is), as
 * rollout_generate_ids (rollout.h) with opts o: seed, temperature, greedy,
 * top_p, top_k, min_p, max_new_tokens, ignore_eos, eos_id (−2 means none
 * here: there is no tokenizer), max_slots (≤ the engine's slots; 0 = all).
 * Stop strings are refused (RL_EXIT_USAGE). */
int rollout_cuda_generate_ids(rollout_cuda_engine *eng, const int32_t *const *ids, const int64_t *n_ids,
                              int64_t n_prompts, int G, int64_t iteration, const rollout_opts *o,
                              rollout_batch *out, rl_err *e);

#endif
