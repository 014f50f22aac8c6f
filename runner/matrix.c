/* matrix.c — the precision compatibility matrix, format support per hardware
 * class, hardware names, and the tables `rlrun matrix` prints. Change a rule
 * here and the validator, `rlrun matrix` and (via its test) the README follow. */
#include "matrix.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/device.h"

const char *const prec_names[PREC_COUNT + 1] = {"bf16", "fp8-block", "mxfp8", "nvfp4", NULL};
const char *const hw_class_names[HW_CLASS_COUNT + 1] = {"cpu", "ampere", "hopper", "blackwell", "amd",
                                                        NULL};

#define B PREC_BF16
#define F PREC_FP8_BLOCK
#define M PREC_MXFP8
#define N PREC_NVFP4
/* THE matrix: every rollout × train pair, supported or refused with its rule. */
const precision_pair precision_matrix[PREC_COUNT * PREC_COUNT] = {
    {B, B, 1, 0, 0, "baseline"},
    {B, F, 0, 0, 0, "FP8 training with BF16 rollout is not a supported mode"},
    {B, M, 0, 0, 0, "MXFP8 training requires MXFP8 rollout"},
    {B, N, 0, 0, 0, "NVFP4 training requires NVFP4 rollout (unified nvfp4 x nvfp4)"},
    {F, B, 1, 0, 1, "BF16 train + FP8 inference (drift expected: use TIS, R3 on MoE)"},
    {F, F, 1, 0, 0, "unified block-wise FP8"},
    {F, M, 0, 0, 0, "MXFP8 training requires MXFP8 rollout (no MXFP8 train + FP8 rollout)"},
    {F, N, 0, 0, 0, "NVFP4 training requires NVFP4 rollout (unified nvfp4 x nvfp4)"},
    {M, B, 0, 0, 0, "MXFP8 rollout runs only with MXFP8 training (unified MXFP8)"},
    {M, F, 0, 0, 0, "rollout fp8-block and mxfp8 are mutually exclusive; FP8 training needs fp8-block rollout"},
    {M, M, 1, 0, 0, "unified MXFP8"},
    {M, N, 0, 0, 0, "NVFP4 training requires NVFP4 rollout (unified nvfp4 x nvfp4)"},
    {N, B, 0, 0, 0, "NVFP4 rollout runs only with NVFP4 training (unified nvfp4 x nvfp4)"},
    {N, F, 0, 0, 0, "NVFP4 rollout runs only with NVFP4 training (unified nvfp4 x nvfp4)"},
    {N, M, 0, 0, 0, "NVFP4 rollout runs only with NVFP4 training (unified nvfp4 x nvfp4)"},
    {N, N, 1, 1, 0, "unified NVFP4 MoE experts, rest BF16 (experimental)"},
};
#undef B
#undef F
#undef M
#undef N

/* Which format runs where: columns cpu, ampere, hopper, blackwell, amd. */
const fmt_support format_support[PREC_COUNT][HW_CLASS_COUNT] = {
    [PREC_BF16] = {SUP_REFERENCE, SUP_NATIVE, SUP_NATIVE, SUP_NATIVE, SUP_NATIVE},
    [PREC_FP8_BLOCK] = {SUP_REFERENCE, SUP_NO, SUP_NATIVE, SUP_NATIVE, SUP_NO},
    [PREC_MXFP8] = {SUP_REFERENCE, SUP_NO, SUP_EMULATED, SUP_NATIVE, SUP_NO},
    [PREC_NVFP4] = {SUP_REFERENCE, SUP_NO, SUP_EMULATED, SUP_NATIVE, SUP_NO},
};

/* Named hardware: class and memory per GPU (GB, as sold). */
static const struct hw_name {
  const char *name;
  hw_class cls;
  double mem_gb;
  const char *arch;
} hw_table[] = {
    {"cpu", HW_CPU, 0, "host CPU"},
    {"a100", HW_AMPERE, 80, "sm_80"},
    {"h100", HW_HOPPER, 80, "sm_90"},
    {"h200", HW_HOPPER, 141, "sm_90"},
    {"b200", HW_BLACKWELL, 180, "sm_100"},
    {"b300", HW_BLACKWELL, 288, "sm_103"},
    {"gb200", HW_BLACKWELL, 186, "sm_100"},
    {"gb300", HW_BLACKWELL, 288, "sm_103"},
    {"mi300x", HW_AMD, 192, "gfx942"},
    {"mi325x", HW_AMD, 256, "gfx942"},
    {"mi350x", HW_AMD, 288, "gfx950"},
    {"mi355x", HW_AMD, 288, "gfx950"},
};
#define N_HW ((int)(sizeof hw_table / sizeof hw_table[0]))
/* GPUs assumed for a named target without ":COUNT" (one typical node). */
#define HW_DEFAULT_COUNT 8

const precision_pair *matrix_pair(prec_format rollout, prec_format train) {
  if ((unsigned)rollout >= PREC_COUNT || (unsigned)train >= PREC_COUNT) return NULL;
  return &precision_matrix[rollout * PREC_COUNT + train];
}

hw_class hw_class_from_cc(int major, int minor) {
  (void)minor;
  if (major == 8) return HW_AMPERE;
  if (major == 9) return HW_HOPPER;
  if (major >= 10) return HW_BLACKWELL;
  return HW_UNSUPPORTED;
}

hw_class hw_class_of_name(const char *name) {
  for (int i = 0; i < N_HW; i++)
    if (!strcmp(hw_table[i].name, name)) return hw_table[i].cls;
  for (int c = 0; c < HW_CLASS_COUNT; c++)
    if (!strcmp(hw_class_names[c], name)) return (hw_class)c;
  return HW_CLASS_COUNT;
}

const char *hw_names_list(void) {
  static char buf[512];
  if (buf[0]) return buf;
  size_t n = 0;
  for (int i = 0; i < N_HW; i++)
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? ", " : "", hw_table[i].name);
  for (int c = 0; c < HW_CLASS_COUNT; c++)
    if (c != HW_CPU) n += (size_t)snprintf(buf + n, sizeof buf - n, ", %s", hw_class_names[c]);
  return buf;
}

int hw_target_named(const char *spec, hw_target *t, rl_err *e) {
  memset(t, 0, sizeof *t);
  char name[64];
  const char *colon = strchr(spec, ':');
  size_t len = colon ? (size_t)(colon - spec) : strlen(spec);
  if (len == 0 || len >= sizeof name)
    return rl_errf(e, RL_EXIT_USAGE, "--hardware '%s': expected NAME[:COUNT], NAME one of %s", spec,
                   hw_names_list());
  memcpy(name, spec, len);
  name[len] = 0;
  hw_class cls = hw_class_of_name(name);
  if (cls == HW_CLASS_COUNT)
    return rl_errf(e, RL_EXIT_USAGE, "--hardware '%s': unknown hardware; valid: %s", name, hw_names_list());
  t->cls = cls;
  snprintf(t->name, sizeof t->name, "%s", name);
  t->n_gpus = cls == HW_CPU ? 0 : HW_DEFAULT_COUNT;
  for (int i = 0; i < N_HW; i++)
    if (!strcmp(hw_table[i].name, name)) t->mem_gb = hw_table[i].mem_gb;
  if (t->mem_gb == 0 && cls != HW_CPU) { /* a class name: the smallest member's memory */
    for (int i = 0; i < N_HW; i++)
      if (hw_table[i].cls == cls && (t->mem_gb == 0 || hw_table[i].mem_gb < t->mem_gb))
        t->mem_gb = hw_table[i].mem_gb;
  }
  if (colon) {
    char *end = NULL;
    long n = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || n < 1 || n > 1024 || cls == HW_CPU)
      return rl_errf(e, RL_EXIT_USAGE, "--hardware '%s': COUNT must be a GPU count in [1, 1024]%s", spec,
                     cls == HW_CPU ? " (and cpu takes none)" : "");
    t->n_gpus = (int)n;
  }
  return RL_EXIT_OK;
}

void hw_target_detect(hw_target *t) {
  memset(t, 0, sizeof *t);
  device_info d;
  device_query(&d);
  t->detected = 1;
  if (d.n_gpus == 0) {
    t->cls = HW_CPU;
    snprintf(t->name, sizeof t->name, "cpu");
    snprintf(t->note, sizeof t->note, "%s", d.status);
    return;
  }
  /* GPU 0 decides the class; the memory is the smallest of all GPUs. */
  t->cc_major = d.gpus[0].cc_major;
  t->cc_minor = d.gpus[0].cc_minor;
  t->cls = hw_class_from_cc(t->cc_major, t->cc_minor);
  snprintf(t->name, sizeof t->name, "%s", d.gpus[0].name);
  t->n_gpus = d.n_gpus;
  t->mem_gb = 0;
  for (int i = 0; i < d.n_gpus; i++) {
    double g = (double)d.gpus[i].mem_bytes / 1e9;
    if (i == 0 || g < t->mem_gb) t->mem_gb = g;
  }
}

/* The classes a format runs on natively, e.g. "hopper, blackwell". */
static void classes_of(prec_format f, fmt_support want, char *buf, size_t n) {
  size_t k = 0;
  buf[0] = 0;
  for (int c = HW_AMPERE; c < HW_CLASS_COUNT; c++)
    if (format_support[f][c] == want)
      k += (size_t)snprintf(buf + k, n > k ? n - k : 0, "%s%s", k ? ", " : "", hw_class_names[c]);
  if (!buf[0]) snprintf(buf, n, "none");
}

int matrix_check(prec_format rollout, prec_format train, hw_class cls, int emulate,
                 int experimental, int *emulated, char *why, size_t whysz) {
  *emulated = 0;
  why[0] = 0;
  const precision_pair *p = matrix_pair(rollout, train);
  if (!p) {
    snprintf(why, whysz, "unknown precision");
    return RL_EXIT_USAGE;
  }
  if (!p->supported) {
    snprintf(why, whysz, "rollout %s x train %s is refused: %s", prec_names[rollout], prec_names[train],
             p->mode);
    return RL_EXIT_USAGE;
  }
  if (p->experimental && !experimental) {
    snprintf(why, whysz,
             "rollout %s x train %s is experimental: set precision.experimental: true to use it",
             prec_names[rollout], prec_names[train]);
    return RL_EXIT_USAGE;
  }
  if (cls == HW_UNSUPPORTED) {
    snprintf(why, whysz, "GPUs older than sm_80 (Ampere) are not supported; use device: cpu");
    return RL_EXIT_HARDWARE;
  }
  prec_format fmts[2] = {rollout, train};
  for (int i = 0; i < 2; i++) {
    prec_format f = fmts[i];
    fmt_support s = format_support[f][cls];
    char nat[128];
    classes_of(f, SUP_NATIVE, nat, sizeof nat);
    if (s == SUP_NO) {
      char emu[128], also[192] = "";
      classes_of(f, SUP_EMULATED, emu, sizeof emu);
      if (strcmp(emu, "none")) snprintf(also, sizeof also, ", or %s with precision.emulate: true", emu);
      snprintf(why, whysz, "%s (%s) does not run on %s: it needs %s%s%s", prec_names[f],
               i ? "train" : "rollout", hw_class_names[cls], nat, also,
               (cls == HW_AMPERE || cls == HW_AMD) ? " (A100 and AMD GPUs run BF16 only)" : "");
      return RL_EXIT_HARDWARE;
    }
    if (s == SUP_EMULATED && !emulate) {
      snprintf(why, whysz,
               "%s (%s) is not native on %s (it needs %s): set precision.emulate: true to run it as an "
               "exact emulation (results labelled \"emulated\")",
               prec_names[f], i ? "train" : "rollout", hw_class_names[cls], nat);
      return RL_EXIT_HARDWARE;
    }
    if (s == SUP_EMULATED) {
      *emulated = 1;
      snprintf(why, whysz, "%s runs as an exact emulation on %s (quantize, dequantize to BF16, BF16 GEMM); "
               "results are labelled \"emulated\"", prec_names[f], hw_class_names[cls]);
    }
  }
  return RL_EXIT_OK;
}

static const char *support_cell(fmt_support s) {
  switch (s) {
  case SUP_NATIVE: return "native";
  case SUP_EMULATED: return "emul";
  case SUP_REFERENCE: return "ref";
  default: return "-";
  }
}

void matrix_print_tables(FILE *f) {
  fprintf(f, "precision pairs (rollout x train)\n");
  fprintf(f, "%-10s %-10s", "rollout", "train");
  for (int c = 0; c < HW_CLASS_COUNT; c++) fprintf(f, " %-9s", hw_class_names[c]);
  fprintf(f, " mode, or the rule that refuses it\n");
  for (int i = 0; i < PREC_COUNT * PREC_COUNT; i++) {
    const precision_pair *p = &precision_matrix[i];
    fprintf(f, "%-10s %-10s", prec_names[p->rollout], prec_names[p->train]);
    for (int c = 0; c < HW_CLASS_COUNT; c++) {
      int emu = 0, emu2 = 0;
      char why[512];
      const char *cell = "-";
      if (matrix_check(p->rollout, p->train, (hw_class)c, 0, 1, &emu, why, sizeof why) == RL_EXIT_OK)
        cell = c == HW_CPU ? "ref" : "yes";
      else if (matrix_check(p->rollout, p->train, (hw_class)c, 1, 1, &emu2, why, sizeof why) == RL_EXIT_OK)
        cell = "emul";
      fprintf(f, " %-9s", cell);
    }
    fprintf(f, " %s%s\n", p->supported ? "" : "refused: ", p->mode);
  }
  fprintf(f, "\nformats per hardware class\n");
  fprintf(f, "%-10s", "format");
  for (int c = 0; c < HW_CLASS_COUNT; c++) fprintf(f, " %-9s", hw_class_names[c]);
  fprintf(f, " notes\n");
  for (int p = 0; p < PREC_COUNT; p++) {
    fprintf(f, "%-10s", prec_names[p]);
    for (int c = 0; c < HW_CLASS_COUNT - 1; c++) fprintf(f, " %-9s", support_cell(format_support[p][c]));
    if (p == PREC_NVFP4)
      fprintf(f, " %-9s MoE experts only; experimental\n", support_cell(format_support[p][HW_CLASS_COUNT - 1]));
    else
      fprintf(f, " %s\n", support_cell(format_support[p][HW_CLASS_COUNT - 1]));
  }
  fprintf(f, "\nhardware classes\n");
  for (int c = 0; c < HW_CLASS_COUNT; c++) {
    fprintf(f, "%-10s", hw_class_names[c]);
    for (int i = 0, k = 0; i < N_HW; i++)
      if (hw_table[i].cls == (hw_class)c) fprintf(f, "%s%s (%s)", k++ ? ", " : " ", hw_table[i].name, hw_table[i].arch);
    fprintf(f, "\n");
  }
  fprintf(f, "\nyes/native: runs natively; ref: CPU reference numerics (exact, slow);\n"
             "emul: exact emulation, only with precision.emulate: true, labelled \"emulated\";\n"
             "-: refused (validate exits 2 for a refused pair, 3 for a pair this hardware cannot run)\n");
}

void matrix_print_target(FILE *f, const hw_target *t) {
  fprintf(f, "this machine: %s (%s", t->name, t->cls == HW_UNSUPPORTED ? "unsupported" : hw_class_names[t->cls]);
  if (t->cls == HW_CPU && t->note[0]) fprintf(f, "; no GPU: %s", t->note);
  else fprintf(f, ", %d GPU%s, %.0f GB each", t->n_gpus, t->n_gpus == 1 ? "" : "s", t->mem_gb);
  fprintf(f, "%s)\n", t->detected ? ", detected" : ", named with --hardware");
  for (int i = 0; i < PREC_COUNT * PREC_COUNT; i++) {
    const precision_pair *p = &precision_matrix[i];
    if (!p->supported) continue;
    int emu = 0;
    char why[512];
    const char *mark = "[ ]";
    if (matrix_check(p->rollout, p->train, t->cls, 0, 1, &emu, why, sizeof why) == RL_EXIT_OK)
      mark = "[x]";
    else if (matrix_check(p->rollout, p->train, t->cls, 1, 1, &emu, why, sizeof why) == RL_EXIT_OK)
      mark = "[e]";
    fprintf(f, "  %s %-9s x %-9s  %s\n", mark, prec_names[p->rollout], prec_names[p->train],
            !strcmp(mark, "[x]") ? p->mode : why);
  }
  fprintf(f, "  ([x] runs here, [e] runs here emulated with precision.emulate: true, [ ] does not run here)\n");
}
