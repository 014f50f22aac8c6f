/* kvcache.h — the key/value cache of the rollout engine: per layer, per
 * slot, the keys and values of every position a sequence has seen, and the
 * attention of a new query row over them (the CPU reference of the decode
 * attention).
 *
 *   kvcache c;
 *   kvcache_init(&c, L, slots, max_len, n_kv_heads, head_dim, KVCACHE_BF16, KV_K_RAW, &e);
 *   kvcache_write(&c, l, slot, pos, k_row, v_row);     // [n_kv_heads · head_dim] each
 *   const float *keys = kvcache_keys(&c, l, slot, n, qk_norm_rope, ctx);  // FP32 attention keys
 *   kvcache_attend(&c, l, slot, n, keys, q_row, n_q_heads, out, out_bf16, scratch);
 *   kvcache_free(&c);
 *
 * Layout: K and V are [L][slots][max_len][n_kv_heads][head_dim], BF16 (RNE)
 * or FP32. A slot is one sequence; positions are 0-based inside it.
 *
 * Which keys are stored (kv_kmode):
 *   KV_K_RAW   the k_proj output BEFORE QK-norm and RoPE. In the POLICY mode
 *              that output is a BF16 GEMM result, so a BF16 cache holds it
 *              exactly (and V likewise); the reader re-applies QK-norm + RoPE
 *              with the very function the full forward uses, which makes the
 *              decode logits equal the full forward's bit for bit with half
 *              the memory of an FP32 cache. The default.
 *   KV_K_ROPED the attention keys (after QK-norm + RoPE), as most engines
 *              cache them; in BF16 they carry one extra rounding, so decode
 *              logits drift from the full forward (kept to measure that).
 *
 * Numerics of kvcache_attend: exactly those of ops_attention_forward_cpu for
 * one query row (FP64 dot products in head_dim order, max-subtracted FP64
 * softmax, positions 0..n−1 in order). */
#ifndef RLRUN_KVCACHE_H
#define RLRUN_KVCACHE_H

#include <stdint.h>

#include "kernels/common.h"

typedef enum kvcache_dtype { KVCACHE_BF16 = 0, KVCACHE_F32 = 1 } kvcache_dtype;
typedef enum kv_kmode { KV_K_RAW = 0, KV_K_ROPED = 1 } kv_kmode;

typedef struct kvcache {
  int L, slots, nkv, hd;
  int64_t max_len;
  kvcache_dtype dtype;
  kv_kmode kmode;
  void *k, *v; /* [L][slots][max_len][nkv][hd] of uint16_t (BF16) or float */
  /* The attention keys in FP32 derived from the stored ones (BF16 caches
   * only): kf [L][slots][max_len][nkv][hd], valid for positions below
   * kf_valid[l·slots + slot]. A CPU-side memo so that QK-norm + RoPE run once
   * per cached key; a write below the valid mark lowers it. */
  float *kf;
  int64_t *kf_valid;
} kvcache;

/* Allocate (zeroed) a cache; RL_EXIT_USAGE for bad sizes, RL_EXIT_FAIL when
 * the allocation fails (the message says how many bytes). */
int kvcache_init(kvcache *c, int L, int slots, int64_t max_len, int nkv, int hd, kvcache_dtype dt,
                 kv_kmode km, rl_err *e);
void kvcache_free(kvcache *c);
/* Bytes of K and V together. */
int64_t kvcache_bytes(const kvcache *c);

/* Store the key and value rows ([nkv·hd] FP32) of position pos of slot in
 * layer l (rounded to BF16 in a BF16 cache). */
void kvcache_write(kvcache *c, int l, int slot, int64_t pos, const float *k_row, const float *v_row);
/* The stored keys of positions [from, n) of slot in layer l as FP32
 * [n − from][nkv][hd]. */
void kvcache_read_k(const kvcache *c, int l, int slot, int64_t from, int64_t n, float *out);
/* The attention keys of positions [0, n) of slot in layer l, FP32
 * [n][nkv][hd]: the stored keys themselves (FP32 cache), or the derived
 * memo brought up to n by calling make(raw, from, n − from, ctx) on the
 * stored keys of the missing positions [from, n) (FP32, in place: it turns
 * raw keys into attention keys; NULL = keep them as they are). */
const float *kvcache_keys(kvcache *c, int l, int slot, int64_t n,
                          void (*make)(float *k, int64_t from, int64_t cnt, void *ctx), void *ctx);
/* Copy positions [0, n) of every layer from slot src to slot dst (prefix
 * sharing: the G samples of one prompt share its prefill). */
void kvcache_copy_prefix(kvcache *c, int dst, int src, int64_t n);

/* Causal GQA of one query row q [nq][hd] over positions [0, n) of slot in
 * layer l, with the attention keys `keys` [≥ n][nkv][hd] (FP32: from
 * kvcache_read_k, QK-normed and rotated by the caller when KV_K_RAW) and the
 * cached values: out [nq][hd] FP32 and/or out_bf16 (either may be NULL).
 * scratch holds kvcache_scratch_len doubles. */
void kvcache_attend(const kvcache *c, int l, int slot, int64_t n, const float *keys, const float *q,
                    int nq, float *out, uint16_t *out_bf16, double *scratch);
int64_t kvcache_scratch_len(const kvcache *c);

#endif
