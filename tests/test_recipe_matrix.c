/* test_recipe_matrix.c — the precision matrix: all 16 rollout × train pairs
 * on each hardware class through the real loader, against a table written
 * here from the rules (not from runner/matrix.c); and the README's
 * copy of `rlrun matrix`. */
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "runner/recipe.h"

/* A MoE model (nvfp4 needs one) with experimental on; rollout and train are set per pair. */
static const char *MOE_RECIPE =
    "model:\n  init: {arch: qwen3_moe, experts: 4, top_k: 2}\n"
    "tokenizer: {type: chars, chars: \"0123456789\"}\n"
    "data: {prompts: p.jsonl}\nreward: {script: r.lua}\n"
    "precision: {experimental: true}\ntrain: {tis: {mode: truncate}, r3: true}\n";

/* Rollout-major over bf16, fp8-block, mxfp8, nvfp4 (row = rollout, column = train):
 *   o runs, e runs only with precision.emulate: true (exit 3 without),
 *   h valid but not on this hardware (exit 3), x refused pair (exit 2).
 * Rules: bf16×bf16 everywhere; fp8-block rollout × bf16/fp8-block train on
 * Hopper+Blackwell; mxfp8×mxfp8 Blackwell (Hopper emulated); nvfp4×nvfp4
 * Blackwell (Hopper emulated); A100/AMD BF16 only; CPU runs everything valid. */
static const struct { const char *target; const char *want; } expected[] = {
    {"cpu",       "oxxx" "ooxx" "xxox" "xxxo"},
    {"a100",      "oxxx" "hhxx" "xxhx" "xxxh"},
    {"h100",      "oxxx" "ooxx" "xxex" "xxxe"},
    {"h200",      "oxxx" "ooxx" "xxex" "xxxe"},
    {"b200",      "oxxx" "ooxx" "xxox" "xxxo"},
    {"gb300",     "oxxx" "ooxx" "xxox" "xxxo"},
    {"mi300x",    "oxxx" "hhxx" "xxhx" "xxxh"},
    {"mi355x",    "oxxx" "hhxx" "xxhx" "xxxh"},
};
static const char *const fmts[4] = {"bf16", "fp8-block", "mxfp8", "nvfp4"};

TEST(matrix_all_pairs_every_hardware_class) {
  int n = 0;
  for (size_t k = 0; k < sizeof expected / sizeof expected[0]; k++) {
    hw_target t;
    rl_err e;
    REQUIRE(hw_target_named(expected[k].target, &t, &e) == 0);
    for (int ro = 0; ro < 4; ro++)
      for (int tr = 0; tr < 4; tr++) {
        char w = expected[k].want[ro * 4 + tr];
        for (int emulate = 0; emulate < 2; emulate++) {
          char s1[64], s2[64], s3[64];
          snprintf(s1, sizeof s1, "precision.rollout=%s", fmts[ro]);
          snprintf(s2, sizeof s2, "precision.train=%s", fmts[tr]);
          snprintf(s3, sizeof s3, "precision.emulate=%s", emulate ? "true" : "false");
          const char *sets[] = {s1, s2, s3};
          recipe r;
          int rc = recipe_load_string(MOE_RECIPE, strlen(MOE_RECIPE), "m.yaml", sets, 3, RECIPE_NO_FS, &r, &e);
          int emu = 0;
          if (rc == 0) {
            rc = recipe_check_hardware(&r, &t, &emu, &e);
            recipe_free(&r);
          }
          int want_rc = w == 'x' ? 2 : w == 'h' ? 3 : (w == 'e' && !emulate) ? 3 : 0;
          int want_emu = w == 'e' && emulate;
          CHECK_MSG(rc == want_rc && emu == want_emu,
                    "%s: rollout %s x train %s, emulate %d: exit %d emulated %d, want exit %d emulated %d (%s)",
                    expected[k].target, fmts[ro], fmts[tr], emulate, rc, emu, want_rc, want_emu, e.msg);
          n++;
        }
      }
  }
  CHECK_EQ_I64(n, 8 * 16 * 2);
}

/* nvfp4 without precision.experimental is refused (exit 2) even on Blackwell. */
TEST(matrix_nvfp4_needs_experimental) {
  const char *sets[] = {"precision.rollout=nvfp4", "precision.train=nvfp4", "precision.experimental=false"};
  recipe r;
  rl_err e;
  CHECK_EQ_I64(recipe_load_string(MOE_RECIPE, strlen(MOE_RECIPE), "m.yaml", sets, 3, RECIPE_NO_FS, &r, &e), 2);
  CHECK_CONTAINS(e.msg, "is experimental: set precision.experimental: true");
}

/* A format a class cannot run names where it runs natively and, when some
 * class emulates it, that too. */
TEST(matrix_refusal_names_native_and_emulated) {
  char why[600];
  int emu = 0;
  CHECK_EQ_I64(matrix_check(PREC_NVFP4, PREC_NVFP4, HW_AMPERE, 0, 1, &emu, why, sizeof why), RL_EXIT_HARDWARE);
  CHECK_STREQ(why, "nvfp4 (rollout) does not run on ampere: it needs blackwell, or hopper with precision.emulate: "
                   "true (A100 and AMD GPUs run BF16 only)");
  CHECK_EQ_I64(matrix_check(PREC_FP8_BLOCK, PREC_FP8_BLOCK, HW_AMPERE, 0, 0, &emu, why, sizeof why), RL_EXIT_HARDWARE);
  CHECK_STREQ(why, "fp8-block (rollout) does not run on ampere: it needs hopper, blackwell (A100 and AMD GPUs run BF16 "
                   "only)");
}

/* The compute-capability classes of detected GPUs. */
TEST(matrix_cc_classes) {
  CHECK_EQ_I64(hw_class_from_cc(8, 0), HW_AMPERE);
  CHECK_EQ_I64(hw_class_from_cc(9, 0), HW_HOPPER);
  CHECK_EQ_I64(hw_class_from_cc(10, 0), HW_BLACKWELL);
  CHECK_EQ_I64(hw_class_from_cc(10, 3), HW_BLACKWELL);
  CHECK_EQ_I64(hw_class_from_cc(7, 5), HW_UNSUPPORTED);
  hw_target t;
  rl_err e;
  CHECK_EQ_I64(hw_target_named("gb200:4", &t, &e), 0);
  CHECK_EQ_I64(t.cls, HW_BLACKWELL);
  CHECK_EQ_I64(t.n_gpus, 4);
  CHECK_EQ_I64(hw_target_named("h200", &t, &e), 0);
  CHECK_EQ_I64(t.n_gpus, 8);
  CHECK_NEAR(t.mem_gb, 141, 0);
  CHECK_EQ_I64(hw_target_named("cpu:2", &t, &e), RL_EXIT_USAGE);
  CHECK_EQ_I64(hw_target_named("v100", &t, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "unknown hardware; valid: cpu, a100, h100, h200, b200, b300, gb200, gb300, mi300x, mi325x, mi350x, mi355x");
}

/* README.md's matrix block is exactly the tables `rlrun matrix` prints. */
TEST(matrix_readme_matches_command) {
  char *readme = NULL;
  size_t n = 0;
  rl_err e;
  REQUIRE(rl_read_file("README.md", &readme, &n, &e) == 0);
  char *b = strstr(readme, "<!-- matrix:begin -->");
  char *end = b ? strstr(b, "<!-- matrix:end -->") : NULL;
  REQUIRE(b && end);
  *end = 0;
  /* the block is a fenced code block: take what lies between the fences */
  char *open = strstr(b, "```\n");
  REQUIRE(open);
  open += 4;
  char *close = strstr(open, "```\n");
  REQUIRE(close);
  *close = 0;
  char *tables = NULL;
  size_t tn = 0;
  FILE *f = open_memstream(&tables, &tn);
  matrix_print_tables(f);
  fclose(f);
  CHECK_MSG(!strcmp(open, tables), "README.md's matrix differs from `rlrun matrix`; paste:\n%s", tables);
  char cmd[600];
  static char out[1 << 16];
  snprintf(cmd, sizeof cmd, "%s matrix --hardware h200", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK(!strncmp(out, tables, strlen(tables)));
  CHECK_CONTAINS(out, "this machine: h200 (hopper, 8 GPUs, 141 GB each, named with --hardware)");
  CHECK_CONTAINS(out, "  [e] mxfp8     x mxfp8 ");
  CHECK_CONTAINS(out, "  [x] fp8-block x fp8-block  unified block-wise FP8");
  free(tables);
  free(readme);
}
