/* qtensor.c — small helpers of the core numeric types (qtensor.h). */
#include "kernels/qtensor.h"

/* A BF16 matrix wrapped as a qtensor (no scales). */
qtensor qtensor_bf16(const uint16_t *data, int64_t rows, int64_t cols, int on_device) {
  qtensor t = {0};
  t.fmt = QFMT_BF16;
  t.layout = QLAYOUT_ROWMAJOR;
  t.on_device = on_device;
  t.rows = rows;
  t.cols = cols;
  t.block_rows = 1;
  t.data = (void *)data;
  t.s_dec = 1.0f;
  return t;
}

/* Recipe spelling of a format. */
const char *qtensor_format_name(qformat f) {
  switch (f) {
    case QFMT_BF16: return "bf16";
    case QFMT_FP8_BLOCK: return "fp8-block";
    case QFMT_MXFP8: return "mxfp8";
    case QFMT_NVFP4: return "nvfp4";
  }
  return "unknown-format";
}

/* Recipe spelling of a linear class. */
const char *linear_class_name(linear_class c) {
  static const char *names[LINEAR_CLASS_COUNT] = {"attention", "mlp", "experts", "router",
                                                  "lm_head"};
  return (unsigned)c < LINEAR_CLASS_COUNT ? names[c] : "unknown-class";
}

/* The default policy: fmt for attention and MLP, expert_fmt for experts, BF16 else. */
void quant_policy_init(quant_policy *p, qformat fmt, qformat expert_fmt) {
  *p = (quant_policy){0};
  p->fmt[LINEAR_ATTN] = fmt;
  p->fmt[LINEAR_MLP] = fmt;
  p->fmt[LINEAR_EXPERT] = expert_fmt;
  p->fmt[LINEAR_ROUTER] = QFMT_BF16;
  p->fmt[LINEAR_LM_HEAD] = QFMT_BF16;
}

/* Refuse NVFP4 outside the experts and unknown formats. */
int quant_policy_check(const quant_policy *p, rl_err *e) {
  for (int c = 0; c < LINEAR_CLASS_COUNT; c++) {
    qformat f = p->fmt[c];
    if ((unsigned)f > QFMT_NVFP4)
      return rl_errf(e, RL_EXIT_USAGE, "quant policy: class %s has unknown format %d",
                     linear_class_name((linear_class)c), (int)f);
    if (f == QFMT_NVFP4 && c != LINEAR_EXPERT)
      return rl_errf(e, RL_EXIT_USAGE,
                     "quant policy: nvfp4 is for MoE expert GEMMs only (FORMATS.md), but class %s "
                     "asks for it; use bf16, fp8-block or mxfp8 there",
                     linear_class_name((linear_class)c));
  }
  return 0;
}
