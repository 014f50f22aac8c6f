/* decode.h — the model's incremental forward for the rollout engine: new
 * tokens of many sequences (prefill chunks and single decode tokens, mixed)
 * run against a KV cache (model/kvcache.h), each sequence in its own slot.
 *
 *   model_decode_ws *ws = model_decode_ws_new();
 *   model_step s = {.n = n, .tokens = tok, .slot = slot, .pos = pos, .want = want};
 *   float *logits;   // [n_want, V], valid until the next call
 *   model_decode_step(m, &kv, &s, ws, &logits, routed, &e);
 *   model_decode_ws_free(ws);
 *
 * Every row goes through exactly the operations of model_forward's layer
 * (forward.c), in the same order and precision: rmsnorm → q/k/v via
 * mlin_forward (linear_forward with the model's quant_policy, or the F32
 * mode) → QK-norm + RoPE at the row's position → the row's K/V stored in the
 * cache → attention over positions 0..pos of its slot (kvcache_attend, keys
 * read once per slot and step) →
 * o_proj → residual + rmsnorm → dense MLP or moe_forward → residual; then the
 * final norm and lm_head for the rows that want logits. All of these are
 * row-independent on the CPU (GEMM rows are separate dot products, norms and
 * attention are per row), so a row's result does not depend on which other
 * rows share the step: the source of batch-size independence. One exception
 * is documented: NVFP4 expert GEMMs take a per-tensor activation scale from
 * all their rows, so under an NVFP4 expert policy the MoE block runs one row
 * at a time (row-independent again, at some speed cost).
 *
 * The logits of a row equal those of the same token in model_forward over
 * the whole sequence bit for bit with an FP32 cache, and with a BF16 cache of
 * raw keys (KV_K_RAW) in the POLICY mode (k_proj and v_proj outputs are BF16
 * values, stored exactly; QK-norm + RoPE re-applied on read by the same
 * function). A BF16 cache of rotated keys (KV_K_ROPED) adds one rounding. The
 * F32 mode needs an FP32 cache. */
#ifndef RLRUN_MODEL_DECODE_H
#define RLRUN_MODEL_DECODE_H

#include <stdint.h>

#include "model/kvcache.h"
#include "model/model.h"

typedef struct model_decode_ws model_decode_ws;

/* One step: n rows, row i is token tokens[i] of the sequence in slot[i] at
 * position pos[i] (0-based). Rows of one slot must have distinct positions;
 * a row may attend to positions written by earlier steps or by rows of this
 * step (every row's K/V is stored before any row attends). */
typedef struct model_step {
  int n;
  const int32_t *tokens, *slot, *pos;
  const uint8_t *want; /* [n] 1: compute this row's logits; NULL = every row */
  int f32;             /* the FP32-exact mode (needs the model's w32) */
} model_step;

model_decode_ws *model_decode_ws_new(void);
void model_decode_ws_free(model_decode_ws *ws);

/* Run step s through m with cache kv (same layers and heads as m; FP32 cache
 * required in F32 mode). *logits = [n_want][V] FP32 (the wanted rows in row
 * order; BF16-valued in POLICY mode), owned by ws. routed (may be NULL;
 * ignored for dense models) receives [n][L][k] expert ids, −1 in dense
 * layers. Errors: bad token ids, slots or positions (RL_EXIT_USAGE), stale
 * quantized views, linear failures (named by layer). */
int model_decode_step(model *m, kvcache *kv, const model_step *s, model_decode_ws *ws,
                      float **logits, int32_t *routed, rl_err *e);

#endif
