/* test_recipe.c — the recipe loader: the bad-recipe catalogue
 * (every tests/recipes/bad/NAME.yaml, each stating its error), the example recipes,
 * defaults, base: merging, --set overrides, and the commands' exit codes. */
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "runner/recipe.h"

static char out[1 << 16];

/* A minimal valid recipe (no files touched with RECIPE_NO_FS). */
static const char *MINIMAL =
    "model:\n  init: {arch: qwen3}\n"
    "tokenizer: {type: chars, chars: \"0123456789+= \"}\n"
    "data: {prompts: p.jsonl}\n"
    "reward: {script: r.lua}\n";

/* The value of header "# KEY: value" in text, or "" (into buf). */
static const char *header(const char *text, const char *key, char *buf, size_t n) {
  char pat[64];
  snprintf(pat, sizeof pat, "# %s: ", key);
  buf[0] = 0;
  const char *p = strstr(text, pat);
  if (!p) return buf;
  p += strlen(pat);
  size_t k = 0;
  while (p[k] && p[k] != '\n' && k + 1 < n) buf[k] = p[k], k++;
  buf[k] = 0;
  return buf;
}

/* Each bad recipe fails with its stated exit code, at its stated line:col,
 * with its stated message. */
TEST(recipe_bad_catalogue) {
  glob_t g;
  REQUIRE(glob("tests/recipes/bad/*.yaml", 0, NULL, &g) == 0);
  CHECK_MSG(g.gl_pathc >= 40, "only %zu bad recipes", g.gl_pathc);
  int checked = 0;
  for (size_t i = 0; i < g.gl_pathc; i++) {
    const char *path = g.gl_pathv[i];
    char *text = NULL;
    size_t len = 0;
    rl_err e;
    REQUIRE(rl_read_file(path, &text, &len, &e) == 0);
    char expect[512], set[256], hw[64], ex[16];
    header(text, "expect", expect, sizeof expect);
    header(text, "set", set, sizeof set);
    header(text, "hardware", hw, sizeof hw);
    header(text, "exit", ex, sizeof ex);
    free(text);
    CHECK_MSG(expect[0], "%s has no '# expect:' line", path);
    int want = ex[0] ? atoi(ex) : RL_EXIT_USAGE;
    const char *sets[1] = {set};
    recipe r;
    int rc = recipe_load(path, sets, set[0] ? 1 : 0, &r, &e);
    if (rc == 0) {
      hw_target t;
      rl_err he;
      REQUIRE(hw_target_named(hw[0] ? hw : "cpu", &t, &he) == 0);
      int emu = 0;
      rc = recipe_check_hardware(&r, &t, &emu, &e);
      recipe_free(&r);
    }
    CHECK_MSG(rc == want, "%s: exit %d, want %d; message:\n%s", path, rc, want, e.msg);
    /* "L:C: text": a line of the message starts with PATH:L:C: and contains text */
    int line = 0, col = 0, used = 0;
    if (sscanf(expect, "%d:%d: %n", &line, &col, &used) == 2 && used > 0) {
      char prefix[700];
      snprintf(prefix, sizeof prefix, "%s:%d:%d: ", path, line, col);
      int found = 0;
      for (char *l = e.msg; l && *l;) {
        char *nl = strchr(l, '\n');
        if (nl) *nl = 0;
        if (!strncmp(l, prefix, strlen(prefix)) && strstr(l, expect + used)) found = 1;
        if (nl) *nl = '\n';
        l = nl ? nl + 1 : NULL;
      }
      CHECK_MSG(found, "%s: no line '%s...%s' in:\n%s", path, prefix, expect + used, e.msg);
    } else {
      CHECK_MSG(strstr(e.msg, expect) != NULL, "%s: want '%s' in:\n%s", path, expect, e.msg);
    }
    checked++;
  }
  globfree(&g);
  CHECK(checked >= 40);
}

/* Every example recipe validates here (CPU), and per named target as stated. */
TEST(recipe_examples_validate) {
  static const struct { const char *file; int cpu, a100, h200, b200, mi300x; } want[] = {
      {"recipes/demo-cpu.yaml", 0, 0, 0, 0, 0}, /* device: cpu runs anywhere */
      {"recipes/bf16-baseline.yaml", 0, 0, 0, 0, 0},
      {"recipes/bf16-baseline-2gpu.yaml", 3, 0, 0, 0, 0}, /* device: cuda, GPUs 0 and 1 (h200:1 is 3: test_loop_gpu.c) */
      {"recipes/bf16-baseline-dp2.yaml", 3, 0, 0, 0, 0}, /* data-parallel on GPUs 0 and 1 (h200:1 is 3: test_loop_gpu.c) */
      {"recipes/bf16-baseline-rollout2.yaml", 3, 0, 0, 0, 0}, /* rollout split over GPUs 0 and 1 (test_loop_gpu.c) */
      {"recipes/fp8-rollout-bf16-train.yaml", 0, 3, 0, 0, 3},
      {"recipes/fp8-unified.yaml", 0, 3, 0, 0, 3},
      {"recipes/fp8-unified-exact.yaml", 0, 3, 0, 0, 3}, /* precision.exact_logprobs */
      {"recipes/mxfp8-unified-emulate.yaml", 0, 3, 0, 0, 3},
      {"recipes/nvfp4-experts.yaml", 0, 3, 3, 0, 3},
      {"recipes/fp8-rollout-bf16-train-dense.yaml", 0, 3, 0, 0, 3},
      {"recipes/sft-demo-cpu.yaml", 0, 0, 0, 0, 0},
      {"recipes/rl-from-sft-cpu.yaml", 0, 0, 0, 0, 0}, /* its checkpoint may not exist yet: a note */
      {"recipes/sft-warmstart.yaml", 0, 0, 0, 0, 0},
      {"recipes/rl-from-sft.yaml", 0, 3, 0, 0, 3},
      /* the learning runs: device: cuda (exit 3 on the CPU target); fp8/mxfp8/nvfp4 need Hopper+ */
      {"recipes/learn-base.yaml", 3, 0, 0, 0, 0},
      {"recipes/learn-dense-bf16.yaml", 3, 0, 0, 0, 0},
      {"recipes/learn-dense-fp8-rollout.yaml", 3, 3, 0, 0, 3},
      {"recipes/learn-dense-fp8-unified.yaml", 3, 3, 0, 0, 3},
      {"recipes/learn-dense-mxfp8-unified.yaml", 3, 3, 0, 0, 3}, /* emulated on the h200 */
      {"recipes/learn-moe-bf16.yaml", 3, 0, 0, 0, 0},
      {"recipes/learn-moe-fp8-rollout.yaml", 3, 3, 0, 0, 3},
      {"recipes/learn-moe-nvfp4.yaml", 3, 3, 0, 0, 3}, /* experimental, emulated on the h200 */
  };
  glob_t g;
  REQUIRE(glob("recipes/*.yaml", 0, NULL, &g) == 0);
  CHECK_EQ_I64(g.gl_pathc, sizeof want / sizeof want[0]);
  globfree(&g);
  const char *targets[] = {"cpu", "a100", "h200", "b200", "mi300x"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    recipe r;
    rl_err e;
    int rc = recipe_load(want[i].file, NULL, 0, &r, &e);
    CHECK_MSG(rc == 0, "%s: %s", want[i].file, e.msg);
    if (rc) continue;
    const int *w = &want[i].cpu;
    for (int k = 0; k < 5; k++) {
      hw_target t;
      REQUIRE(hw_target_named(targets[k], &t, &e) == 0);
      int emu = 0;
      rc = recipe_check_hardware(&r, &t, &emu, &e);
      CHECK_MSG(rc == w[k], "%s on %s: exit %d, want %d: %s", want[i].file, targets[k], rc, w[k], e.msg);
    }
    recipe_free(&r);
  }
}

TEST(recipe_defaults_filled) {
  recipe r;
  rl_err e;
  REQUIRE(recipe_load_string(MINIMAL, strlen(MINIMAL), "dir/mini.yaml", NULL, 0, RECIPE_NO_FS, &r, &e) == 0);
  CHECK_STREQ(r.name, "mini");
  CHECK_EQ_I64(r.seed, 0);
  CHECK_EQ_I64(r.device, DEVICE_AUTO);
  CHECK_EQ_I64(r.precision.rollout, PREC_BF16);
  CHECK_EQ_I64(r.precision.train, PREC_BF16);
  CHECK_NEAR(r.train.lr, 1e-6, 0);
  CHECK_NEAR(r.train.clip_low, 0.2, 0);
  CHECK_NEAR(r.train.clip_high, 0.2, 0);
  CHECK_NEAR(r.train.grad_clip, 1.0, 0);
  CHECK_EQ_I64(r.train.tis.mode, TIS_OFF);
  CHECK_NEAR(r.train.tis.clip, 2.0, 0);
  CHECK_NEAR(r.train.tis.low, 0.5, 0);
  CHECK_NEAR(r.train.optimizer.beta2, 0.999, 0);
  CHECK_NEAR(r.train.optimizer.eps, 1e-8, 0);
  CHECK_NEAR(r.train.optimizer.weight_decay, 0.01, 0);
  CHECK_EQ_I64(r.train.optimizer.main_params, MAIN_PARAMS_FP32);
  CHECK_EQ_I64(r.rollout.batch, 8);
  CHECK_EQ_I64(r.rollout.samples_per_prompt, 4);
  CHECK_EQ_I64(r.reward.limits.memory_mb, 64);
  CHECK_STREQ(r.reward.function, "reward");
  CHECK_STREQ(r.data.prompts, "dir/p.jsonl"); /* relative to the recipe's directory */
  CHECK_EQ_I64(r.gpus.train.n, 1);
  CHECK_EQ_I64(r.gpus.train.items[0], 0);
  CHECK_EQ_I64(r.model.has_init, 1);
  CHECK_EQ_I64(r.model.init.hidden, 64);
  CHECK_EQ_I64(r.model.is_moe, 0);
  CHECK_EQ_I64(r.loop.iterations, 10);
  CHECK(r.warnings == NULL);
  int i = recipe_key_index("train.lr");
  REQUIRE(i >= 0);
  CHECK_EQ_I64(r.key_set[i], 0);
  i = recipe_key_index("reward.script");
  CHECK_EQ_I64(r.key_set[i], 1);
  CHECK_EQ_I64(r.key_loc[i].line, 5);
  CHECK_EQ_I64(r.key_loc[i].col, 18);
  CHECK_EQ_I64(r.train.microbatch, 4);
  recipe_free(&r);
  /* train.microbatch's default is at most an iteration's sequences; a value set above it is an error */
  const char *sets[] = {"rollout.batch=1", "rollout.samples_per_prompt=2", "train.microbatch=4"};
  REQUIRE(recipe_load_string(MINIMAL, strlen(MINIMAL), "dir/mini.yaml", sets, 2, RECIPE_NO_FS, &r, &e) == 0);
  CHECK_EQ_I64(r.train.microbatch, 2);
  recipe_free(&r);
  CHECK(recipe_load_string(MINIMAL, strlen(MINIMAL), "dir/mini.yaml", sets, 3, RECIPE_NO_FS, &r, &e) != 0);
  CHECK_CONTAINS(e.msg, "train.microbatch=4: 4 is more than the 2 sequences of one iteration");
}

TEST(recipe_set_overrides) {
  const char *sets[] = {"train.lr=3e-5", "precision.keep_bf16=[\"*.o_proj.*\", lm_head]", "rollout.stop=[\"\\n\"]",
                        "loop.iterations=1e3", "gpus.train=[1, 2]", "gpus.rollout=[3]", "reward.function=score"};
  recipe r;
  rl_err e;
  REQUIRE(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", sets, 7, RECIPE_NO_FS, &r, &e) == 0);
  CHECK_NEAR(r.train.lr, 3e-5, 0);
  REQUIRE(r.precision.keep_bf16.n == 2);
  CHECK_STREQ(r.precision.keep_bf16.items[0], "*.o_proj.*");
  CHECK_STREQ(r.precision.keep_bf16.items[1], "lm_head");
  REQUIRE(r.rollout.stop.n == 1);
  CHECK_STREQ(r.rollout.stop.items[0], "\n");
  CHECK_EQ_I64(r.loop.iterations, 1000);
  CHECK_EQ_I64(r.gpus.train.n, 2);
  CHECK_STREQ(r.reward.function, "score");
  int i = recipe_key_index("train.lr");
  CHECK_STREQ(r.key_loc[i].file, "--set train.lr=3e-5");
  recipe_free(&r);
  /* errors name the override */
  const char *bad[] = {"rollout.batch=0"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", bad, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "--set rollout.batch=0: 0 is out of range: must be in [1, 65536]");
  const char *bad2[] = {"model.init.arch.x=1"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", bad2, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "--set model.init.arch.x=1: 'arch' is a value (written at m.yaml:2:16), not a section");
  const char *bad3[] = {"precision.rollout=mxfp8"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", bad3, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "--set precision.rollout=mxfp8: rollout mxfp8 x train bf16 is refused: MXFP8 rollout runs only with MXFP8 training");
  /* a --set of a section names no key inside it: the message names the key
   * (it said only "--set rollout={batch: 0}: 0 is out of range") */
  const char *bad4[] = {"rollout={batch: 0}"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", bad4, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "--set rollout={batch: 0}: rollout.batch: 0 is out of range: must be in [1, 65536]");
  const char *bad5[] = {"train.tis={mode: mask, clip: 2.0}"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", bad5, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "--set train.tis={mode: mask, clip: 2.0}: train.tis.clip: applies to train.tis.mode: truncate "
                     "(mode is mask)");
  /* RL.md's IcePop interval [low, high] is closed: low == high == 1 (only ratios
   * of exactly 1 kept, e.g. under precision.exact_logprobs) is a valid recipe */
  const char *eq[] = {"train.tis={mode: mask, low: 1, high: 1}"};
  REQUIRE(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", eq, 1, RECIPE_NO_FS, &r, &e) == 0);
  CHECK_NEAR(r.train.tis.low, 1.0, 0);
  CHECK_NEAR(r.train.tis.high, 1.0, 0);
  recipe_free(&r);
}

/* base: deep merge — maps merge, values replace, null removes; errors point
 * into the file that holds the value; paths are relative to that file. */
TEST(recipe_base_merge) {
  char dir[600], sub[700], path[800];
  snprintf(dir, sizeof dir, "%s", harness_tmpdir());
  snprintf(sub, sizeof sub, "%s/common", dir);
  snprintf(path, sizeof path, "mkdir -p %s", sub);
  REQUIRE(harness_run(path, out, sizeof out) == 0);
  snprintf(path, sizeof path, "%s/common/base.yaml", dir);
  REQUIRE(harness_write_file(path, "model:\n  init: {arch: qwen3_moe, experts: 4}\n"
                                   "tokenizer: {type: chars, chars: abc}\n"
                                   "data: {prompts: p.jsonl}\nreward: {script: r.lua, function: score}\n"
                                   "train:\n  lr: 0.001\n  tis: {mode: truncate, clip: 3}\n  r3: true\n") == 0);
  snprintf(path, sizeof path, "%s/common/p.jsonl", dir);
  REQUIRE(harness_write_file(path, "{\"prompt\": \"ab\"}\n") == 0);
  snprintf(path, sizeof path, "%s/common/r.lua", dir);
  REQUIRE(harness_write_file(path, "function score() return 1 end\n") == 0);
  snprintf(path, sizeof path, "%s/child.yaml", dir);
  REQUIRE(harness_write_file(path, "base: common/base.yaml\nname: child\ntrain:\n  lr: 0.01\n  tis: {clip: null}\n"
                                   "model:\n  init: {top_k: 3}\n") == 0);
  recipe r;
  rl_err e;
  int rc = recipe_load(path, NULL, 0, &r, &e);
  REQUIRE(rc == 0 || !fprintf(stderr, "%s\n", e.msg));
  CHECK_STREQ(r.name, "child");
  CHECK_NEAR(r.train.lr, 0.01, 0);            /* the child wins */
  CHECK_EQ_I64(r.train.tis.mode, TIS_TRUNCATE); /* kept from the base (deep merge) */
  CHECK_NEAR(r.train.tis.clip, 2.0, 0);        /* null: back to the default */
  CHECK_EQ_I64(r.train.r3, 1);
  CHECK_EQ_I64(r.model.init.experts, 4);
  CHECK_EQ_I64(r.model.init.top_k, 3);
  CHECK_STREQ(r.reward.function, "score");
  char want[1000];
  snprintf(want, sizeof want, "%s/common/p.jsonl", dir);
  CHECK_STREQ(r.data.prompts, want); /* relative to the base file */
  int i = recipe_key_index("train.r3");
  CHECK_CONTAINS(r.key_loc[i].file, "common/base.yaml");
  CHECK_EQ_I64(r.key_loc[i].line, 9);
  recipe_free(&r);
  /* an error in the child's override of a base value points into the child */
  REQUIRE(harness_write_file(path, "base: common/base.yaml\ntrain:\n  lr: 2\n") == 0);
  CHECK_EQ_I64(recipe_load(path, NULL, 0, &r, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "%s:3:7: train.lr: 2 is out of range: must be in (0, 1]", path);
  CHECK_CONTAINS(e.msg, want);
  /* exclusive keys from two files: both places named, and how to drop the inherited one */
  snprintf(want, sizeof want, "%s/common/t.lua", dir);
  REQUIRE(harness_write_file(want, "function prompts(n) local t = {} for i = 1, n do t[i] = 'ab' end return t end\n") == 0);
  REQUIRE(harness_write_file(path, "base: common/base.yaml\ndata:\n  task: common/t.lua\n") == 0);
  CHECK_EQ_I64(recipe_load(path, NULL, 0, &r, &e), RL_EXIT_USAGE);
  char ex[3000];
  snprintf(ex, sizeof ex, "data.prompts and data.task are mutually exclusive: keep one (data.prompts is set at "
           "%s/common/base.yaml:4:17, data.task at %s:3:9; `prompts: null` in %s removes the inherited one)", dir, path,
           path);
  CHECK_CONTAINS(e.msg, ex);
  REQUIRE(harness_write_file(path, "base: common/base.yaml\ndata:\n  task: common/t.lua\n  prompts: null\n") == 0);
  rc = recipe_load(path, NULL, 0, &r, &e);
  CHECK(rc == 0 || !fprintf(stderr, "%s\n", e.msg));
  if (!rc) recipe_free(&r);
  /* a recipe that is its own base */
  REQUIRE(harness_write_file(path, "base: child.yaml\n") == 0);
  CHECK_EQ_I64(recipe_load(path, NULL, 0, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "child.yaml:1:7: base: cycle child.yaml -> child.yaml");
  /* base: from memory is refused */
  const char *mem = "base: x.yaml\n";
  CHECK_EQ_I64(recipe_load_string(mem, strlen(mem), "mem.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "mem.yaml:1:7: base: is not available when a recipe is loaded from memory");
  /* base: from --set: said to be a file's key (it was "unknown key 'base' (did you mean 'name'?)") */
  const char *bset[1] = {"base=common/base.yaml"};
  REQUIRE(harness_write_file(path, "base: common/base.yaml\n") == 0);
  CHECK_EQ_I64(recipe_load(path, bset, 1, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "--set base=common/base.yaml: base: is read from a recipe file only, before any --set value "
                        "applies; write `base: FILE` at the top of a recipe file that extends FILE");
}

/* Remove every "  # default" mark in place. */
static void strip_default_marks(char *s) {
  const char *mark = "  # default";
  size_t m = strlen(mark);
  char *w = s;
  for (const char *p = s; *p;) {
    if (!strncmp(p, mark, m)) p += m;
    else *w++ = *p++;
  }
  *w = 0;
}

/* recipe_print writes YAML that loads back to the same recipe. */
TEST(recipe_print_roundtrip) {
  const char *sets[] = {"precision.rollout=fp8-block", "precision.train=fp8-block", "train.tis.mode=mask",
                        "rollout.stop=[\"\\n\", \"</answer>\"]", "tokenizer.chars=\"ab\\\"\\\\\\tc\"", "seed=123456789012"};
  recipe a, b;
  rl_err e;
  REQUIRE(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", sets, 6, RECIPE_NO_FS, &a, &e) == 0);
  char *t1 = NULL, *t2 = NULL;
  size_t n1 = 0, n2 = 0;
  FILE *f = open_memstream(&t1, &n1);
  recipe_print(f, &a);
  fclose(f);
  int rc = recipe_load_string(t1, n1, "m.yaml", NULL, 0, RECIPE_NO_FS, &b, &e);
  CHECK_MSG(rc == 0, "%s\n%s", e.msg, t1);
  if (rc == 0) {
    f = open_memstream(&t2, &n2);
    recipe_print(f, &b);
    fclose(f);
    /* identical but for the "# default" marks (everything is written now) */
    CHECK_EQ_I64(b.seed, 123456789012LL);
    CHECK_STREQ(b.tokenizer.chars, "ab\"\\\tc");
    CHECK_EQ_I64(b.rollout.stop.n, 2);
    CHECK_NEAR(b.train.optimizer.eps, 1e-8, 0);
    /* only null (unset) values are still defaults */
    CHECK(strstr(t2, "0.2  # default") == NULL);
    CHECK_CONTAINS(t2, "description: null  # default\n");
    strip_default_marks(t1);
    strip_default_marks(t2);
    CHECK_STREQ(t1, t2);
    recipe_free(&b);
  }
  CHECK_CONTAINS(t1, "  lr: 1e-06\n");
  CHECK_CONTAINS(t1, "  stop: [\"\\n\", \"</answer>\"]\n");
  CHECK_CONTAINS(t1, "    # clip: 2.0  (tis.mode truncate only)\n");
  free(t1);
  free(t2);
  recipe_free(&a);
}

/* Every schema key is documented in docs/recipes.md, and the reference table
 * there is the one `rlrun validate --keys` prints. */
TEST(recipe_docs_cover_schema) {
  char *doc = NULL;
  size_t n = 0;
  rl_err e;
  REQUIRE(rl_read_file("docs/recipes.md", &doc, &n, &e) == 0);
  CHECK(recipe_schema_count() >= 80);
  for (int i = 0; i < recipe_schema_count(); i++) {
    char pat[200];
    snprintf(pat, sizeof pat, "`%s`", recipe_schema_path(i));
    CHECK_MSG(strstr(doc, pat) != NULL, "docs/recipes.md does not document %s", recipe_schema_path(i));
  }
  char *ref = NULL;
  size_t rn = 0;
  FILE *f = open_memstream(&ref, &rn);
  recipe_schema_print_reference(f);
  fclose(f);
  CHECK_MSG(strstr(doc, ref) != NULL, "docs/recipes.md's key table differs from `rlrun validate --keys`");
  free(ref);
  free(doc);
}

/* One --set on MINIMAL: 1 when the loader's message calls the value out of its
 * range or type (the key's own complaint), 0 when it took it (another rule may
 * still refuse the recipe). The message is left in msg. */
static int set_refused(const char *key, const char *value, char *msg, size_t n) {
  char set[300];
  snprintf(set, sizeof set, "%s=%s", key, value);
  const char *sets[] = {set};
  recipe r;
  rl_err e;
  msg[0] = 0;
  if (!recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", sets, 1, RECIPE_NO_FS, &r, &e)) {
    recipe_free(&r);
    return 0;
  }
  snprintf(msg, n, "%s", e.msg);
  char mine[400];
  snprintf(mine, sizeof mine, "--set %s: ", set);
  return strstr(e.msg, mine) && (strstr(e.msg, "out of range") || strstr(e.msg, ": expected "));
}

/* The key table (docs/recipes.md, `rlrun validate --keys`) states what the
 * loader enforces: every documented bound of an integer or number is taken
 * and the next value past it refused with the documented range in the
 * message; every listed enum value is taken and a wrong one refused with
 * exactly that list; bools take true/false only. */
TEST(recipe_documented_ranges_are_enforced) {
  char *ref = NULL, msg[2100];
  size_t rn = 0;
  FILE *f = open_memstream(&ref, &rn);
  recipe_schema_print_reference(f);
  fclose(f);
  int checked = 0;
  char *lsave = NULL;
  for (char *line = strtok_r(ref, "\n", &lsave); line; line = strtok_r(NULL, "\n", &lsave)) {
    char key[128], type[64], def[64], range[256];
    int got = sscanf(line, "| `%127[^`]` | %63[^|]| %63[^|]| %255[^|]|", key, type, def, range);
    if (got < 3) continue;
    if (got == 3) range[0] = 0; /* none: strings, bools, lists */
    for (char *t = type + strlen(type); t > type && t[-1] == ' '; *--t = 0) {}
    for (char *t = range + strlen(range); t > range && t[-1] == ' '; *--t = 0) {}
    int is_int = !strcmp(type, "integer"), is_num = !strcmp(type, "number");
    if (is_int || is_num) {
      char open, close, lo[64], hi[64], want[400];
      double a, b;
      if (sscanf(range, "%c%63[^,], %63[^])]%c", &open, lo, hi, &close) == 4 && (open == '[' || open == '(')) {
        a = atof(lo), b = atof(hi);
        snprintf(want, sizeof want, "must be in %s", range);
      } else if (sscanf(range, ">= %63s", lo) == 1) {
        open = '[', close = 0, a = atof(lo), b = 0;
        snprintf(want, sizeof want, "must be >= %s", lo);
      } else {
        CHECK_MSG(0, "%s: no range documented for a %s", key, type);
        continue;
      }
      double vals[4];
      int in[4], nc = 0;
      double step = is_int ? 1 : (fabs(a) > 1 ? fabs(a) : 1) * 1e-6;
      vals[nc] = a, in[nc++] = open == '[';
      vals[nc] = a - step, in[nc++] = 0;
      if (close) {
        vals[nc] = b, in[nc++] = close == ']';
        vals[nc] = b + (is_int ? 1 : (fabs(b) > 1 ? fabs(b) : 1) * 1e-6), in[nc++] = 0;
      }
      for (int k = 0; k < nc; k++) {
        char v[64];
        snprintf(v, sizeof v, is_int ? "%.0f" : "%.17g", vals[k]);
        int refused = set_refused(key, v, msg, sizeof msg);
        CHECK_MSG(refused == !in[k], "%s=%s: documented %s %s, the loader %s it (%s)", key, v,
                  in[k] ? "inside" : "outside", range, refused ? "refused" : "took", msg);
        if (refused && !in[k]) CHECK_MSG(strstr(msg, want) != NULL, "%s=%s: message lacks '%s': %s", key, v, want, msg);
      }
      checked++;
    } else if (!strcmp(type, "enum")) {
      char list[300];
      snprintf(list, sizeof list, "%s", range);
      for (char *save = NULL, *v = strtok_r(list, ", ", &save); v; v = strtok_r(NULL, ", ", &save))
        CHECK_MSG(!set_refused(key, v, msg, sizeof msg), "%s=%s: a documented value, refused: %s", key, v, msg);
      char want[400];
      snprintf(want, sizeof want, "expected one of %s; got 'zz'", range);
      CHECK_MSG(set_refused(key, "zz", msg, sizeof msg) && strstr(msg, want), "%s=zz: want '%s', got %s", key, want, msg);
      checked++;
    } else if (!strcmp(type, "bool")) {
      CHECK_MSG(!set_refused(key, "true", msg, sizeof msg) && !set_refused(key, "false", msg, sizeof msg),
                "%s: true/false refused: %s", key, msg);
      CHECK_MSG(set_refused(key, "yes", msg, sizeof msg), "%s=yes taken", key);
      checked++;
    }
  }
  CHECK(checked >= 70);
  free(ref);
}

TEST(recipe_yaml_rejections) {
  static const struct { const char *text, *want; } cases[] = {
      {"model: {init: {}}\nmodel: {}\n", "x.yaml:2:1: duplicate key 'model' (first written at x.yaml:1:1)"},
      {"seed: &a 1\n", "x.yaml:1:7: anchors (&a)"},
      {"seed: 1\n---\nseed: 2\n", "x.yaml:2:1: a second YAML document"},
      {"train:\n  lr: 1\n\t\n  r3: x\n", "tab character in indentation"},
      {"\xef\xbb\xbfseed: \xc3\x28\n", "x.yaml:1:7: invalid UTF-8 (byte 0xc3)"},
      {"[1, 2]\n", "x.yaml:1:1: a recipe is a mapping of keys"},
      {"train:\n  algorithm: GRPO\n", "x.yaml:2:14: train.algorithm: expected one of grpo, dr_grpo, rloo, sft; got 'GRPO' (did you mean 'grpo'?)"},
      {"train:\n  Lr: 0.1\n", "x.yaml:2:3: unknown key 'Lr' (did you mean 'lr'?)"},
      {"rollout:\n  max-new-tokens: 3\n", "unknown key 'max-new-tokens' (did you mean 'max_new_tokens'?)"},
      {"", "model: missing"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    recipe r;
    rl_err e;
    int rc = recipe_load_string(cases[i].text, strlen(cases[i].text), "x.yaml", NULL, 0, RECIPE_NO_FS, &r, &e);
    CHECK_EQ_I64(rc, RL_EXIT_USAGE);
    CHECK_CONTAINS(e.msg, cases[i].want);
  }
}

/* docs/recipes.md: "a BOM is allowed". With the encoding forced to UTF-8,
 * libyaml's scanner took the BOM for a character of line 1, so a recipe whose
 * first line is a key (no comment above it) failed on its second key with
 * "did not find expected <document start>". */
TEST(recipe_bom_before_the_first_key) {
  recipe r;
  rl_err e;
  char text[512];
  snprintf(text, sizeof text, "\xef\xbb\xbfseed: 7\n%s", MINIMAL);
  REQUIRE(recipe_load_string(text, strlen(text), "b.yaml", NULL, 0, RECIPE_NO_FS, &r, &e) == 0);
  CHECK_EQ_I64(r.seed, 7);
  recipe_free(&r);
  /* a position on line 1 counts no column for the BOM */
  snprintf(text, sizeof text, "\xef\xbb\xbfseed: x\n%s", MINIMAL);
  CHECK_EQ_I64(recipe_load_string(text, strlen(text), "b.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "b.yaml:1:7: seed: expected an integer, got 'x'");
}

TEST(cli_validate_plan_exit_codes) {
  char cmd[800];
  snprintf(cmd, sizeof cmd, "%s validate recipes/demo-cpu.yaml", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "recipes/demo-cpu.yaml: valid: rollout bf16 x train bf16 (baseline) on cpu");
  CHECK(!strstr(out, "note: --hardware"));
  /* device: cpu decides the target: a --hardware is said not to apply (it was silently ignored) */
  snprintf(cmd, sizeof cmd, "%s validate recipes/demo-cpu.yaml --hardware a100", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "note: --hardware a100 does not apply: the recipe says device: cpu (set device: auto or cuda "
                      "to validate it for a100)");
  /* a GPU recipe set to the CPU: its GPU lists and sync.transport are ignored there, as with device: auto on a
   * machine without a GPU (sync.transport: nccl was an error with device: cpu only) */
  snprintf(cmd, sizeof cmd, "%s validate recipes/fp8-rollout-bf16-train.yaml --set device=cpu", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "on cpu (cpu, CPU reference numerics)");
  snprintf(cmd, sizeof cmd, "%s validate tests/recipes/bad/unknown_key_typo.yaml", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  CHECK_CONTAINS(out, "tests/recipes/bad/unknown_key_typo.yaml:14:3: unknown key 'lrr' (did you mean 'lr'?)");
  snprintf(cmd, sizeof cmd, "%s validate recipes/fp8-unified.yaml --hardware a100", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 3);
  CHECK_CONTAINS(out, "valid, but not runnable on a100 (ampere)");
  snprintf(cmd, sizeof cmd, "%s validate recipes/mxfp8-unified-emulate.yaml --hardware h100", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "emulated: mxfp8 runs as an exact emulation on hopper");
  CHECK_CONTAINS(out, "on h100 (hopper), emulated");
  snprintf(cmd, sizeof cmd, "%s validate recipes/bf16-baseline.yaml --set train.lr=abc", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  CHECK_CONTAINS(out, "--set train.lr=abc: expected a number, got 'abc'");
  CHECK(strstr(out, "finite") == NULL);
  /* YAML's infinities and NaN, and a number past a double's range, are numbers a recipe refuses: said so */
  const char *nonfinite[3] = {".inf", "-.NaN", "1e999"};
  for (int i = 0; i < 3; i++) {
    snprintf(cmd, sizeof cmd, "%s validate recipes/bf16-baseline.yaml --set train.lr=%s", harness_bin(), nonfinite[i]);
    CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
    CHECK_CONTAINS(out, "' (a recipe's numbers are finite)");
  }
  snprintf(cmd, sizeof cmd, "%s validate recipes/bf16-baseline.yaml --hardware h900", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  CHECK_CONTAINS(out, "--hardware 'h900': unknown hardware; valid: cpu, a100, h100, h200");
  snprintf(cmd, sizeof cmd, "%s validate recipes/fp8-rollout-bf16-train.yaml --set train.tis.mode=off "
           "--set train.tis.clip=null --set train.r3=false", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "precision drift between rollout and training log-probs is expected; recommended: "
                      "train.tis.mode: truncate (TIS) and train.r3: true");
  snprintf(cmd, sizeof cmd, "%s validate", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  snprintf(cmd, sizeof cmd, "%s plan recipes/fp8-unified.yaml --hardware h200", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "  clip_low: 0.2  # default\n");
  CHECK_CONTAINS(out, "  bf16_first_layers: 1\n");
  CHECK_CONTAINS(out, "attention q/k/v/o    fp8-block              fp8-block              bf16\n");
  CHECK_CONTAINS(out, "layers 3..3 stay bf16 (precision.bf16_last_layers)");
  CHECK_CONTAINS(out, "    1  convert ");
  CHECK_CONTAINS(out, "    2  rollout#1 ");
  CHECK_CONTAINS(out, "    3  reward#1 ");
  CHECK_CONTAINS(out, "    5  sync#1 ");
  CHECK_CONTAINS(out, "  805  checkpoint#200 ");
  CHECK_CONTAINS(out, "805 steps; keep the newest 2 checkpoints");
  snprintf(cmd, sizeof cmd, "%s plan recipes/nvfp4-experts.yaml --hardware h200 --set precision.emulate=true", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "moe experts          nvfp4 (emulated)       nvfp4 (emulated)       bf16\n");
  CHECK_CONTAINS(out, "attention q/k/v/o    bf16                   bf16 ");
  /* train.recompute: said on the train steps — on for a GPU target, ignored by the CPU trainer */
  snprintf(cmd, sizeof cmd, "%s plan recipes/fp8-unified.yaml --hardware h200 --set train.recompute=true", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "backward bf16, TIS truncate, activation recomputation\n");
  snprintf(cmd, sizeof cmd, "%s plan recipes/demo-cpu.yaml --set train.recompute=true", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "activation recomputation (ignored: CPU trainer)");
  snprintf(cmd, sizeof cmd, "%s plan recipes/demo-cpu.yaml --set train.recompute=yes", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  /* precision.exact_logprobs: said in the plan; a note where it changes nothing (the CPU) or cannot
   * make the two sides equal (a mixed pair) */
  snprintf(cmd, sizeof cmd, "%s plan recipes/fp8-unified.yaml --hardware h200 --set precision.exact_logprobs=true",
           harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "exact log-probs: every GEMM pinned, decode by the forward's kernels (precision.exact_logprobs)\n");
  CHECK_CONTAINS(out, "  exact_logprobs: true\n");
  snprintf(cmd, sizeof cmd, "%s plan recipes/fp8-unified.yaml --hardware h200", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK(!strstr(out, "exact log-probs:"));
  CHECK_CONTAINS(out, "  exact_logprobs: false  # default\n");
  snprintf(cmd, sizeof cmd, "%s validate recipes/demo-cpu.yaml --set precision.exact_logprobs=true", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "note: precision.exact_logprobs has no effect on the CPU");
  snprintf(cmd, sizeof cmd, "%s validate recipes/fp8-rollout-bf16-train.yaml --hardware h200 "
           "--set precision.exact_logprobs=true", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "rollout fp8-block and train bf16 still differ by their formats");
  snprintf(cmd, sizeof cmd, "%s validate recipes/fp8-unified.yaml --hardware h200 --set precision.exact_logprobs=true",
           harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK(!strstr(out, "exact_logprobs"));
  snprintf(cmd, sizeof cmd, "%s validate recipes/fp8-unified.yaml --set precision.exact_logprobs=1", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  snprintf(cmd, sizeof cmd, "%s validate --keys", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "| `train.lr` | number | `1e-6` | (0, 1] |");
}

/* A child recipe drops a section it inherits through base: by setting it to null
 * (model.init → model.path); without the null, the two are mutually exclusive. */
TEST(recipe_base_null_unsets_inherited_section) {
  char cwd[1024], p[1400], text[4096], cmd[4096];
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  const char *d = harness_tmpdir();
  snprintf(text, sizeof text,
           "name: b\nmodel:\n  init:\n    arch: qwen3\ntokenizer:\n  type: chars\n  chars: \"0123456789+= \"\n"
           "data:\n  prompts: %s/tests/recipes/bad/inc/prompts.jsonl\n"
           "reward:\n  script: %s/tests/recipes/bad/inc/reward.lua\n", cwd, cwd);
  snprintf(p, sizeof p, "%s/base.yaml", d);
  REQUIRE(harness_write_file(p, text) == 0);
  snprintf(text, sizeof text, "base: base.yaml\nmodel:\n  init: null\n  path: %s/tests/recipes/bad/inc/model\n", cwd);
  snprintf(p, sizeof p, "%s/child.yaml", d);
  REQUIRE(harness_write_file(p, text) == 0);
  snprintf(cmd, sizeof cmd, "%s validate %s --hardware cpu", harness_bin(), p);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "valid");
  snprintf(text, sizeof text, "base: base.yaml\nmodel:\n  path: %s/tests/recipes/bad/inc/model\n", cwd);
  snprintf(p, sizeof p, "%s/child2.yaml", d);
  REQUIRE(harness_write_file(p, text) == 0);
  snprintf(cmd, sizeof cmd, "%s validate %s --hardware cpu", harness_bin(), p);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 2);
  CHECK_CONTAINS(out, "mutually exclusive");
}

/* recipe_load_at: an override's relative path resolves against the given
 * directory (where `rlrun run` was started), not the working directory; the
 * recipe file's own relative paths stay relative to the file. */
TEST(recipe_override_paths_resolve_against_a_given_directory) {
  char dir[800], path[2000], want[1100];
  snprintf(dir, sizeof dir, "%s/od", harness_tmpdir());
  snprintf(path, sizeof path, "mkdir -p %s/lua && echo 'function reward(s) return 0 end' > %s/lua/r.lua", dir, dir);
  REQUIRE(harness_run(path, NULL, 0) == 0);
  const char *sets[] = {"reward.script=lua/r.lua"};
  recipe r;
  rl_err e;
  int rc = recipe_load_at("recipes/demo-cpu.yaml", sets, 1, dir, &r, &e);
  REQUIRE(rc == 0 || !fprintf(stderr, "%s\n", e.msg));
  snprintf(want, sizeof want, "%s/lua/r.lua", dir);
  CHECK_STREQ(r.reward.script, want);
  CHECK_STREQ(r.data.task, "recipes/../lua/scripts/task_add_digits.lua"); /* the file's own: unchanged */
  recipe_free(&r);
  /* no directory: the working directory, where lua/r.lua does not exist */
  CHECK_EQ_I64(recipe_load_at("recipes/demo-cpu.yaml", sets, 1, NULL, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "lua/r.lua");
  /* an absolute override path is taken as it is */
  char abs_set[1200];
  snprintf(abs_set, sizeof abs_set, "reward.script=%s", want);
  const char *sets2[] = {abs_set};
  REQUIRE(recipe_load_at("recipes/demo-cpu.yaml", sets2, 1, "/nonexistent", &r, &e) == 0);
  CHECK_STREQ(r.reward.script, want);
  recipe_free(&r);
}

/* The rlrun binary as an absolute path (for commands run in another directory). */
static const char *abs_bin(void) {
  static char p[PATH_MAX];
  if (!p[0] && !realpath(harness_bin(), p)) snprintf(p, sizeof p, "%s", harness_bin());
  return p;
}

/* A directory with t.yaml (reward.function FN, reward.script SCRIPT) and the Lua
 * files it may name: r.lua (reward), bad.lua (a syntax error on line 3), task.lua. */
static void lua_recipe_dir(const char *dir, const char *script, const char *fn) {
  char p[1200], text[2048];
  snprintf(p, sizeof p, "mkdir -p %s", dir);
  REQUIRE(harness_run(p, NULL, 0) == 0);
  snprintf(p, sizeof p, "%s/r.lua", dir);
  REQUIRE(harness_write_file(p, "function reward(s) return 1 end\nfunction score(s) return 0.5 end\n") == 0);
  snprintf(p, sizeof p, "%s/bad.lua", dir);
  REQUIRE(harness_write_file(p, "-- a reward with a typo\nfunction reward(s)\n  return = 1\nend\n") == 0);
  snprintf(p, sizeof p, "%s/task.lua", dir);
  REQUIRE(harness_write_file(p, "function prompts(n, rng)\n  local v = {}\n  for i = 1, n do v[i] = "
                                "{prompt = '1+1=', answer = '2'} end\n  return v\nend\n") == 0);
  snprintf(text, sizeof text,
           "name: t\ndevice: cpu\n"
           "model:\n  init: {arch: qwen3, hidden: 16, layers: 1, heads: 2, kv_heads: 1, head_dim: 8, ffn: 32, max_seq_len: 12}\n"
           "tokenizer: {type: chars, chars: \"0123456789+=\"}\n"
           "data:\n  task: task.lua\n"
           "rollout: {batch: 2, samples_per_prompt: 2, max_prompt_tokens: 6, max_new_tokens: 2}\n"
           "reward:\n  script: %s\n  function: %s\n"
           "train: {lr: 1.0e-2, microbatch: 4}\n"
           "loop: {iterations: 1}\n", script, fn);
  snprintf(p, sizeof p, "%s/t.yaml", dir);
  REQUIRE(harness_write_file(p, text) == 0);
}

/* reward.function and the Lua scripts are checked by validate, and by run
 * before it creates a run directory: a missing function, a syntax error, a
 * task script without prompts() — each named with FILE:LINE, exit 2. Any
 * function name works when the script defines it. */
TEST(recipe_lua_scripts_are_checked_before_a_run) {
  char dir[1024], cmd[4096];
  snprintf(dir, sizeof dir, "%s/luachk", harness_tmpdir());
  lua_recipe_dir(dir, "r.lua", "rewrd");
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml", dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "t.yaml:11:13: reward.function: r.lua defines no function rewrd(sample) (did you mean "
                   "'reward'?); the functions it defines: reward, score\n");
  snprintf(cmd, sizeof cmd, "cd %s && %s run t.yaml --runs-dir runs --quiet; rc=$?; ls runs 2>/dev/null; exit $rc",
           dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "rlrun run: t.yaml:11:13: reward.function: r.lua defines no function rewrd(sample) (did you "
                   "mean 'reward'?); the functions it defines: reward, score\n"); /* and no run directory */
  /* a syntax error: the script's FILE:LINE, before any run directory */
  lua_recipe_dir(dir, "bad.lua", "reward");
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml", dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "t.yaml:10:11: reward.script: bad.lua:3: unexpected symbol near '=' (while loading the script)\n");
  snprintf(cmd, sizeof cmd, "cd %s && %s run t.yaml --runs-dir runs --quiet; rc=$?; ls runs 2>/dev/null; exit $rc",
           dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "rlrun run: t.yaml:10:11: reward.script: bad.lua:3: unexpected symbol near '=' (while "
                   "loading the script)\n");
  /* the default name, and a script without it: the functions it has are listed */
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml --set reward.script=task.lua --set reward.function=null",
           dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "--set reward.script=task.lua: task.lua defines no function reward(sample); the functions it "
                   "defines: prompts (set reward.function to call another)\n");
  /* a task script is loaded too */
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml --set reward.script=r.lua --set data.task=r.lua", dir,
           abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "--set data.task=r.lua: r.lua defines no function prompts(n, rng); the functions it defines: "
                   "reward, score\n");
  /* not a Lua name */
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml --set reward.script=r.lua --set reward.function=my-score",
           dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "--set reward.function=my-score: 'my-score' is not a Lua function name (letters, digits and "
                   "'_', not starting with a digit, at most 48 characters)\n");
  /* any name the script defines: validate passes and the run scores with it */
  lua_recipe_dir(dir, "r.lua", "score");
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml", dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  snprintf(cmd, sizeof cmd, "cd %s && %s run t.yaml --runs-dir runs --quiet >/dev/null && %s metrics runs/t-* --csv",
           dir, abs_bin(), abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  /* reward/mean then reward/std: score() returns 0.5 for every sample */
  CHECK_CONTAINS(out, ",0.5,0,");
}

/* A backtracking pattern in a script's top level (it runs inside the string
 * library's C code, where no count hook fires): validate stops it at
 * reward.limits.timeout_ms and names the line, instead of hanging. */
TEST(recipe_lua_pattern_deadline_stops_validate) {
  char dir[1024], cmd[4096], p[1200];
  snprintf(dir, sizeof dir, "%s/luaslow", harness_tmpdir());
  lua_recipe_dir(dir, "slow.lua", "reward");
  snprintf(p, sizeof p, "%s/slow.lua", dir);
  REQUIRE(harness_write_file(p, "local x = string.rep('a', 30000)\n"
                                "local bad = x:find('a*a*a*a*a*b')\n"
                                "function reward(s) return 1 end\n") == 0);
  /* the largest budget: the clock, not the step count, has to stop it */
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml --set reward.limits.timeout_ms=200 "
           "--set reward.limits.instructions=1000000000000", dir, abs_bin());
  double t0 = rl_now();
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  double dt = rl_now() - t0;
  CHECK_MSG(dt < 2.0, "validate took %.2f s", dt);
  CHECK_STREQ(out, "t.yaml:10:11: reward.script: slow.lua:2: wall-clock deadline exceeded (0.2 s per call, reward.limits.timeout_ms) "
                   "(while loading the script)\n");
  /* the default budget (1e8) and the longest deadline: the step count stops it */
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml --set reward.limits.timeout_ms=600000", dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "t.yaml:10:11: reward.script: slow.lua:2: instruction budget exceeded (100000000 instructions "
                   "per call, reward.limits.instructions; an endless loop?) (while loading the script)\n");
}

/* Wording of common validate errors: ranges without an upper bound, words
 * for a value (gpu), where a relative path is resolved from, more than 8
 * errors, and --keys with a recipe. */
TEST(recipe_error_wording) {
  recipe r;
  rl_err e;
  const char *neg[] = {"seed=-1"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", neg, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "--set seed=-1: -1 is out of range: must be >= 0");
  const char *gpu[] = {"device=gpu"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", gpu, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "--set device=gpu: expected one of auto, cpu, cuda; got 'gpu' (did you mean 'cuda'?)");
  const char *many =
      "model:\n  init: {arch: qwen3, hidden: 1, layers: 0, heads: 0, kv_heads: 0, head_dim: 0, ffn: 0,\n"
      "         vocab: -1, experts: 0, top_k: 0, moe_ffn: 0}\n"
      "tokenizer: {type: chars, chars: \"0123\"}\ndata: {prompts: p.jsonl}\nreward: {script: r.lua}\n";
  CHECK_EQ_I64(recipe_load_string(many, strlen(many), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  int lines = 1;
  for (const char *p = e.msg; *p; p++) lines += *p == '\n';
  CHECK_EQ_I64(lines, 9); /* 8 errors, then the count of the others */
  CHECK_CONTAINS(e.msg, "m.yaml:3:30: model.init.experts: 0 is out of range: must be in [2, 1024]\n"
                        "\xe2\x80\xa6 and 2 more errors (fix these and validate again)");
  CHECK(e.msg[strlen(e.msg) - 1] == ')');
  /* hf (the default) with its tokenizer.json unread (RECIPE_NO_FS): accepted,
   * from tokenizer.path or model.path (validate reads the file:
   * test_tokenizer_hf.c); a fresh model with neither is pointed at them */
  const char *hf[] = {"tokenizer={type: hf, path: t.json}"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", hf, 1, RECIPE_NO_FS, &r, &e), 0);
  recipe_free(&r);
  const char *dflt = "model: {path: m}\ndata: {prompts: p.jsonl}\nreward: {script: r.lua}\n";
  CHECK_EQ_I64(recipe_load_string(dflt, strlen(dflt), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), 0);
  CHECK_EQ_I64(r.tokenizer.type, TOKENIZER_HF);
  recipe_free(&r);
  const char *fresh = "model: {init: {arch: qwen3}}\ndata: {prompts: p.jsonl}\nreward: {script: r.lua}\n";
  CHECK_EQ_I64(recipe_load_string(fresh, strlen(fresh), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "m.yaml:1:9: model.init: a fresh model needs a tokenizer: set tokenizer.path to a tokenizer.json "
                     "(type hf, the default), or tokenizer.type: chars with tokenizer.chars");
  /* a relative path: from the current directory for --set, from the file that writes it otherwise */
  char dir[1024], cmd[4096];
  snprintf(dir, sizeof dir, "%s/paths", harness_tmpdir());
  lua_recipe_dir(dir, "r.lua", "reward");
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml --set reward.script=nope.lua", dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "--set reward.script=nope.lua: 'nope.lua': No such file or directory (a --set path is "
                   "relative to the current directory)\n");
  snprintf(cmd, sizeof cmd, "cd %s && %s validate t.yaml --set reward.script=/dev/null", dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE); /* not a file: says what it is */
  CHECK_STREQ(out, "--set reward.script=/dev/null: '/dev/null': not a regular file (a character device), expected a "
                   "file (a --set path is relative to the current directory)\n");
  lua_recipe_dir(dir, "nope.lua", "reward");
  snprintf(cmd, sizeof cmd, "cd %s/.. && %s validate paths/t.yaml", dir, abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "paths/t.yaml:10:11: reward.script: 'paths/nope.lua': No such file or directory (a path in a "
                   "recipe is relative to the directory of the file that writes it)\n");
  /* --keys reads no recipe: one given is refused, not ignored */
  snprintf(cmd, sizeof cmd, "%s validate --keys recipes/demo-cpu.yaml", abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "rlrun validate: --keys lists every recipe key and reads no recipe, so 'recipes/demo-cpu.yaml' "
                   "would be ignored: run `rlrun validate --keys` alone, or `rlrun validate recipes/demo-cpu.yaml` "
                   "to check the recipe\n");
  snprintf(cmd, sizeof cmd, "%s validate --keys --set seed=1", abs_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "rlrun validate: --keys lists every recipe key and takes no other option: run `rlrun validate "
                   "--keys` alone\n");
}

/* A recipe without name: takes its file's name; when that is no run name the
 * message says so (it read "name: 'my recipe' is not a run name" about a key
 * the user never wrote). */
TEST(recipe_default_name_from_a_file_name_that_is_no_run_name) {
  recipe r;
  rl_err e;
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "d/my recipe.yaml", NULL, 0, RECIPE_NO_FS, &r, &e),
               RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "d/my recipe.yaml: name: the run name defaults to the file name, 'my recipe', which is not a run "
                     "name (letters, digits, '.', '_', '-', at most 64, starting with a letter or digit): set name: in "
                     "the recipe (or --set name=NAME), or rename the file");
  const char *set[] = {"name=_x"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", set, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "--set name=_x: '_x' is not a run name: use letters, digits, '.', '_', '-' (at most 64, starting "
                     "with a letter or digit)");
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "d/ok-1.yml", NULL, 0, RECIPE_NO_FS, &r, &e), 0);
  CHECK_STREQ(r.name, "ok-1");
  recipe_free(&r);
}

/* Errors are listed as a reader meets them, by line and column: the schema and
 * the rules find them in their own order (a base file's key order, rule by
 * rule), and with more than 8 the first 8 lines are the ones shown. */
TEST(recipe_errors_listed_in_line_order) {
  recipe r;
  rl_err e;
  /* rule errors: found model, tokenizer, ..., train; written tokenizer, model, train */
  const char *rules = "tokenizer: {type: chars, chars: \"0123456789+==\"}\n"
                      "data: {prompts: p.jsonl}\nreward: {script: r.lua}\n"
                      "model:\n  init: {arch: qwen3, heads: 4, kv_heads: 3, head_dim: 15}\n"
                      "train:\n  tis: {mode: off, clip: 3}\n";
  CHECK_EQ_I64(recipe_load_string(rules, strlen(rules), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "m.yaml:1:33: tokenizer.chars: character '=' appears twice: list each character once\n"
                     "m.yaml:5:43: model.init.kv_heads: 3 does not divide heads (4)\n"
                     "m.yaml:5:56: model.init.head_dim: 15 is odd: RoPE needs an even head_dim\n"
                     "m.yaml:7:26: train.tis.clip: applies to train.tis.mode: truncate (mode is off)");
  /* schema errors through base: the merged tree has the base's key order (the reverse of
   * the child's here); the child's lines come first, then the base's, then --set */
  char dir[600], base[800], child[800];
  snprintf(dir, sizeof dir, "%s/errorder", harness_tmpdir());
  mkdir(dir, 0755);
  snprintf(base, sizeof base, "%s/base.yaml", dir);
  snprintf(child, sizeof child, "%s/child.yaml", dir);
  REQUIRE(harness_write_file(base, "seed: 1\n"
                                   "rollout: {batch: 1, samples_per_prompt: 2, max_new_tokens: 3, max_prompt_tokens: 4}\n"
                                   "loop: {iterations: 1, checkpoint_interval: 1, keep_checkpoints: 1, keep_every: 1}\n"
                                   "train: {microbatch: 1, ppo_epochs: 1}\n") == 0);
  REQUIRE(harness_write_file(child, "base: base.yaml\n"
                                    "train:\n  ppo_epochs: a\n  microbatch: b\n"
                                    "loop:\n  keep_every: c\n  keep_checkpoints: d\n  checkpoint_interval: e\n  iterations: f\n"
                                    "rollout:\n  max_prompt_tokens: g\n  max_new_tokens: h\n  samples_per_prompt: i\n  batch: j\n"
                                    "seed: k\n") == 0);
  CHECK_EQ_I64(recipe_load(child, NULL, 0, &r, &e), RL_EXIT_USAGE);
  char want[8000];
  snprintf(want, sizeof want,
           "%s:3:15: train.ppo_epochs: expected an integer, got 'a'\n"
           "%s:4:15: train.microbatch: expected an integer, got 'b'\n"
           "%s:6:15: loop.keep_every: expected an integer, got 'c'\n"
           "%s:7:21: loop.keep_checkpoints: expected an integer, got 'd'\n"
           "%s:8:24: loop.checkpoint_interval: expected an integer, got 'e'\n"
           "%s:9:15: loop.iterations: expected an integer, got 'f'\n"
           "%s:11:22: rollout.max_prompt_tokens: expected an integer, got 'g'\n"
           "%s:12:19: rollout.max_new_tokens: expected an integer, got 'h'\n"
           "\xe2\x80\xa6 and 3 more errors (fix these and validate again)",
           child, child, child, child, child, child, child, child);
  CHECK_STREQ(e.msg, want);
  REQUIRE(harness_write_file(base, "seed: -1\nrollout: {batch: 1}\n") == 0);
  REQUIRE(harness_write_file(child, "base: base.yaml\nrollout:\n  top_k: x\ndevice: gpu\n") == 0);
  const char *sets[] = {"train.lr=2", "loop.iterations=0"};
  CHECK_EQ_I64(recipe_load(child, sets, 2, &r, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want,
           "%s:3:10: rollout.top_k: expected an integer, got 'x'\n"
           "%s:4:9: device: expected one of auto, cpu, cuda; got 'gpu' (did you mean 'cuda'?)\n"
           "%s:1:7: seed: -1 is out of range: must be >= 0\n"
           "--set train.lr=2: 2 is out of range: must be in (0, 1]\n"
           "--set loop.iterations=0: 0 is out of range: must be in [1, 1000000000]",
           child, child, base);
  CHECK_STREQ(e.msg, want);
}

/* precision.keep_bf16 patterns are checked at validation (fnmatch would take a
 * malformed one silently and match no tensor). */
TEST(recipe_keep_bf16_patterns_checked) {
  recipe r;
  rl_err e;
  const char *bad[] = {"precision.keep_bf16=[\"*.o_proj\", \"model.layers.[0-3\"]"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", bad, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "precision.keep_bf16");
  CHECK_CONTAINS(e.msg, "pattern 'model.layers.[0-3': the '[' at position 14 opens a bracket expression that no ']' "
                        "closes");
  const char *good[] = {"precision.keep_bf16=[\"*.o_proj\", \"model.layers.[0-3].*\"]"};
  REQUIRE(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", good, 1, RECIPE_NO_FS, &r, &e) == 0);
  CHECK_EQ_I64(r.precision.keep_bf16.n, 2);
  recipe_free(&r);
}

/* Absurd maps are refused early, not after a duplicate-key check that is
 * quadratic in the keys (100,000 top-level keys took minutes): more than 4096
 * keys in one mapping, or more than 100,000 values in one recipe, is an error at
 * the key or value past the limit. Duplicate keys are reported as before. */
TEST(recipe_absurd_maps_are_refused_early) {
  size_t cap = 4 << 20, len = strlen(MINIMAL);
  char *text = malloc(cap);
  REQUIRE(text);
  memcpy(text, MINIMAL, len);
  for (int i = 1; i <= 100000; i++) len += (size_t)snprintf(text + len, cap - len, "u%d: 1\n", i);
  recipe r;
  rl_err e;
  double t0 = rl_now();
  CHECK_EQ_I64(recipe_load_string(text, len, "x.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  double dt = rl_now() - t0;
  CHECK_STREQ(e.msg, "x.yaml:4098:1: more than 4096 keys in one mapping (the one at x.yaml:1:1): no recipe needs "
                     "that many (the whole schema has a few hundred); is this the right file?");
  CHECK_MSG(dt < 5 * HARNESS_SLOWDOWN, "refusing 100,000 keys took %.1f s", dt);
  /* many mappings under the per-map limit: the whole document's limit */
  len = strlen(MINIMAL);
  memcpy(text, MINIMAL, len);
  for (int j = 0; j < 30; j++) {
    len += (size_t)snprintf(text + len, cap - len, "x%d:\n", j);
    for (int i = 0; i < 4000; i++) len += (size_t)snprintf(text + len, cap - len, "  u%d: 1\n", i);
  }
  t0 = rl_now();
  CHECK_EQ_I64(recipe_load_string(text, len, "x.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  dt = rl_now() - t0;
  CHECK_STREQ(e.msg, "x.yaml:99995:10: more than 100000 values in one recipe: no recipe needs that many; is this "
                     "the right file?");
  CHECK_MSG(dt < 5 * HARNESS_SLOWDOWN, "refusing 120,000 values took %.1f s", dt);
  free(text);
  const char *dup = "model: {init: {arch: qwen3}}\nseed: 1\nseed: 2\n";
  CHECK_EQ_I64(recipe_load_string(dup, strlen(dup), "x.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "x.yaml:3:1: duplicate key 'seed' (first written at x.yaml:2:1): keep one");
}

/* A long value quoted in a message is cut (40 characters, "…") so that the
 * reason after it always shows (a 2000-character name filled the message);
 * text libyaml refuses (a control character, U+FFFF) is named at its
 * FILE:LINE:COL. */
TEST(recipe_messages_clip_values_and_place_reader_errors) {
  char name[2100], text[2400], want[600], forty[41];
  memset(name, 'a', 2000);
  snprintf(name + 2000, sizeof name - 2000, "!");
  snprintf(text, sizeof text, "%sname: %s\n", MINIMAL, name);
  memset(forty, 'a', 40), forty[40] = 0;
  recipe r;
  rl_err e;
  CHECK_EQ_I64(recipe_load_string(text, strlen(text), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "m.yaml:6:7: name: '%s\xe2\x80\xa6' is not a run name: use letters, digits, '.', '_', "
           "'-' (at most 64, starting with a letter or digit)", forty);
  CHECK_STREQ(e.msg, want);
  /* cut between UTF-8 characters: 40 × é then more */
  char eacute[200] = "device: ";
  for (int i = 0; i < 45; i++) strcat(eacute, "\xc3\xa9");
  strcat(eacute, "\n");
  snprintf(text, sizeof text, "%s%s", MINIMAL, eacute);
  CHECK_EQ_I64(recipe_load_string(text, strlen(text), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  char e40[100] = "";
  for (int i = 0; i < 40; i++) strcat(e40, "\xc3\xa9");
  snprintf(want, sizeof want, "m.yaml:6:9: device: expected one of auto, cpu, cuda; got '%s\xe2\x80\xa6'", e40);
  CHECK_STREQ(e.msg, want);
  static const struct { const char *text, *want; } reader[] = {
      {"seed: 1\nname: \"a\x01" "b\"\n", "x.yaml:2:9: cannot read as YAML text: control characters are not allowed "
                                          "(U+0001): remove it, or write it as an escape (\\x01, \\uFFFF) inside a "
                                          "double-quoted string"},
      {"seed: 1\n# \xc3\xa9\xc3\xa9\nname: a\xef\xbf\xbf\n", "x.yaml:3:8: cannot read as YAML text: control "
                                          "characters are not allowed (U+FFFF): remove it, or write it as an escape "
                                          "(\\x01, \\uFFFF) inside a double-quoted string"},
      {"\xef\xbb\xbfseed: \x7f\n", "x.yaml:1:7: cannot read as YAML text: control characters are not allowed "
                                   "(U+007F): remove it, or write it as an escape (\\x01, \\uFFFF) inside a "
                                   "double-quoted string"},
  };
  for (size_t i = 0; i < sizeof reader / sizeof *reader; i++) {
    CHECK_EQ_I64(recipe_load_string(reader[i].text, strlen(reader[i].text), "x.yaml", NULL, 0, RECIPE_NO_FS, &r, &e),
                 RL_EXIT_USAGE);
    CHECK_STREQ(e.msg, reader[i].want);
  }
}

/* `rlrun validate` on a directory, a device or a file that is far too large:
 * refused at once (exit 2) with what the path is; /dev/zero used to grow
 * memory without end, a directory said only "read error". */
TEST(cli_validate_refuses_what_is_not_a_recipe_file) {
  char cmd[2400];
  snprintf(cmd, sizeof cmd, "%s validate /tmp", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "/tmp: is not a regular file (a directory): give the path of a file\n");
  snprintf(cmd, sizeof cmd, "timeout 20 %s validate /dev/zero", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_STREQ(out, "/dev/zero: is not a regular file (a character device): give the path of a file\n");
  char big[800];
  snprintf(big, sizeof big, "%s/huge.yaml", harness_tmpdir());
  snprintf(cmd, sizeof cmd, "truncate -s 100M %s && %s validate %s", big, harness_bin(), big);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  char want[1200];
  snprintf(want, sizeof want, "%s: is 100 MiB, more than the 64 MiB rlrun reads from such a file: is it the right "
           "file?\n", big);
  CHECK_STREQ(out, want);
  unlink(big);
}

/* recipe_print and recipe_free formed (char *)r + NOFF for sections, an
 * out-of-bounds pointer (UB) that clang's -fsanitize=pointer-overflow reports
 * on every recipe (GCC's UBSan does not see it). Run by `make fuzz`'s
 * build-fuzz/fuzz_recipe over the example recipes, when that build exists. */
TEST(recipe_fuzz_target_runs_examples_clean) {
  struct stat bin, src;
  if (stat("build-fuzz/fuzz_recipe", &bin) != 0 || stat("runner/recipe_schema.c", &src) != 0 ||
      bin.st_mtime < src.st_mtime) {
    printf("  (no up-to-date build-fuzz/fuzz_recipe: `make fuzz` builds it, then this test runs it)\n");
    return;
  }
  CHECK_EQ_I64(harness_run("build-fuzz/fuzz_recipe recipes/*.yaml tests/recipes/bad/*.yaml 2>&1 | "
                           "grep -E 'runtime error|ERROR: ' | head -5", out, sizeof out), 0);
  CHECK_STREQ(out, "");
}

/* Integers as a careless user writes them. strtoll's base 0 read "+010" as
 * octal 8 (and "-010" as -8) while "010" was refused; an integer beyond int64
 * (or an integral 1e19) was "expected an integer" instead of out of range;
 * 2.0 got no hint. */
TEST(recipe_integer_spellings) {
  static const struct { const char *set, *want; } cases[] = {
      {"rollout.batch=+010", "--set rollout.batch=+010: expected an integer, got '+010' (a leading 0 is ambiguous, "
                             "octal in YAML 1.1: write the number without it)"},
      {"rollout.batch=-010", "--set rollout.batch=-010: expected an integer, got '-010' (a leading 0 is ambiguous, "
                             "octal in YAML 1.1: write the number without it)"},
      {"rollout.batch=99999999999999999999", "--set rollout.batch=99999999999999999999: 99999999999999999999 is out "
                                             "of range: must be in [1, 65536]"},
      {"seed=9.3e18", "--set seed=9.3e18: 9.3e18 is out of range: must be >= 0 and at most 9223372036854775807 (64 "
                      "bits)"},
      {"seed=0xFFFFFFFFFFFFFFFF", "--set seed=0xFFFFFFFFFFFFFFFF: 0xFFFFFFFFFFFFFFFF is out of range: must be >= 0 and "
                                  "at most 9223372036854775807 (64 bits)"},
      {"rollout.batch=1e400", "--set rollout.batch=1e400: 1e400 is out of range: must be in [1, 65536]"},
      {"rollout.batch=2.0", "--set rollout.batch=2.0: expected an integer, got '2.0' (write 2: an integer has no "
                            "decimal point)"},
      {"rollout.batch=2.5", "--set rollout.batch=2.5: expected an integer, got '2.5' (a whole number)"},
      {"rollout.batch=1e-400", "--set rollout.batch=1e-400: expected an integer, got '1e-400' (a whole number)"},
      {"rollout.batch=1_000", "--set rollout.batch=1_000: expected an integer, got '1_000' (write the digits without "
                              "'_')"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    recipe r;
    rl_err e;
    const char *sets[] = {cases[i].set};
    CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", sets, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
    CHECK_STREQ(e.msg, cases[i].want);
  }
  recipe r;
  rl_err e;
  const char *ok[] = {"rollout.batch=+0x10", "seed=1.5e3", "loop.iterations=-0e0"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", ok, 2, RECIPE_NO_FS, &r, &e), 0);
  CHECK_EQ_I64(r.rollout.batch, 16);
  CHECK_EQ_I64(r.seed, 1500);
  recipe_free(&r);
}

/* A number the run's FP32 arithmetic makes 0 passed validation: temperature
 * 1e-300 is in (0, 10], the rollout ran (in double) and the first training
 * step stopped the run with "model_logprob_forward: temperature must be > 0";
 * rope_theta 1e-300 gave a NaN logit in the rollout. */
TEST(recipe_numbers_that_underflow_fp32_are_refused) {
  recipe r;
  rl_err e;
  const char *t[] = {"rollout.temperature=1e-300"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", t, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "--set rollout.temperature=1e-300: 1e-300 is too small: must be in (0, 10] and at least 1.2e-38 "
                     "(FP32's smallest normal number; the run computes in FP32, where a smaller value is 0)");
  const char *text = "model:\n  init: {arch: qwen3, rope_theta: 1e-40}\n"
                     "tokenizer: {type: chars, chars: \"0123456789+= \"}\n"
                     "data: {prompts: p.jsonl}\nreward: {script: r.lua}\n";
  CHECK_EQ_I64(recipe_load_string(text, strlen(text), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "m.yaml:2:35: model.init.rope_theta: 1e-40 is too small: must be in (0, 1000000000000]");
  const char *ok[] = {"rollout.temperature=1.2e-38", "train.lr=1e-30", "train.clip_low=0"};
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", ok, 3, RECIPE_NO_FS, &r, &e), 0);
  recipe_free(&r);
}

/* A key or value with a newline (a quoted "see\nd") was quoted raw: the
 * message went on over two lines, the second without FILE:LINE:COL. An enum
 * given a list or mapping said "expected one of the values listed below", and
 * nothing was listed. A tag showed as libyaml resolved it
 * (tag:yaml.org,2002:int), not as written (!!int). */
TEST(recipe_messages_escape_control_characters_and_list_enum_values) {
  const char *text = "seed: \"1\\n2\"\n\"see\\td\": 1\ndevice: [cpu]\ntrain: {tis: {mode: {a: 1}}}\n";
  recipe r;
  rl_err e;
  CHECK_EQ_I64(recipe_load_string(text, strlen(text), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "m.yaml:1:7: seed: expected an integer, got the quoted string '1\\n2' (remove the quotes)\n"
                     "m.yaml:2:1: unknown key 'see\\td' (did you mean 'seed'?)\n"
                     "m.yaml:3:9: device: expected one of auto, cpu, cuda; got a list\n"
                     "m.yaml:4:21: train.tis.mode: expected one of off, truncate, mask; got a mapping");
  const char *nm = "name: \"a\\x01b\"\n";
  char t2[512];
  snprintf(t2, sizeof t2, "%s%s", MINIMAL, nm);
  CHECK_EQ_I64(recipe_load_string(t2, strlen(t2), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "m.yaml:6:7: name: 'a\\x01b' is not a run name: use letters, digits, '.', '_', '-' (at most 64, "
                     "starting with a letter or digit)");
  const char *tag = "seed: !!int 5\n";
  CHECK_EQ_I64(recipe_load_string(tag, strlen(tag), "m.yaml", NULL, 0, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "m.yaml:1:7: tags (!!int) are not supported in recipes: remove the tag (quote a value to make "
                     "it a string)");
}

/* model.path's config.json was read for model_type alone: a config without
 * vocab_size, a max_position_embeddings below max_prompt_tokens +
 * max_new_tokens, or a vocab_size below the chars tokenizer's ids validated,
 * and `rlrun run` created its run directory, then stopped on the first load
 * or rollout. */
TEST(recipe_model_path_config_checked_as_the_run_reads_it) {
  char cwd[1024], dir[1400], p[1600], text[6000];
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(dir, sizeof dir, "%s/cfgmodel", harness_tmpdir());
  REQUIRE(mkdir(dir, 0755) == 0 || errno == EEXIST);
  snprintf(p, sizeof p, "%s/config.json", dir);
  REQUIRE(harness_write_file(p, "{\"model_type\": \"qwen3\", \"num_hidden_layers\": 2}\n") == 0);
  snprintf(text, sizeof text, "model: {path: %s}\ntokenizer: {type: chars, chars: \"0123456789+= \"}\n"
           "data: {prompts: %s/tests/recipes/bad/inc/prompts.jsonl}\nreward: {script: %s/tests/recipes/bad/inc/reward.lua}\n"
           "rollout: {max_prompt_tokens: 8}\n", dir, cwd, cwd);
  char rp[1600];
  snprintf(rp, sizeof rp, "%s/cfg.yaml", harness_tmpdir());
  REQUIRE(harness_write_file(rp, text) == 0);
  recipe r;
  rl_err e;
  char want[8000];
  CHECK_EQ_I64(recipe_load(rp, NULL, 0, &r, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "%s:1:15: model.path: %s/config.json: key 'vocab_size' is missing (the model needs it)", rp, dir);
  CHECK_STREQ(e.msg, want);
  REQUIRE(harness_write_file(p, "{\"model_type\": \"qwen3\", \"vocab_size\": 12, \"hidden_size\": 64, "
                                "\"intermediate_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, "
                                "\"num_key_value_heads\": 2, \"head_dim\": 16, \"max_position_embeddings\": 64, "
                                "\"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": true}\n") == 0);
  CHECK_EQ_I64(recipe_load(rp, NULL, 0, &r, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "%s:1:15: model.path: prompt + completion (8 + 256 tokens) exceed the model's "
           "max_position_embeddings (64, %s/config.json): lower rollout.max_prompt_tokens or rollout.max_new_tokens\n"
           "%s:2:33: tokenizer.chars: the tokenizer needs 16 ids (<pad>, <bos>, <eos> and 13 characters), more than "
           "the model's vocabulary (vocab_size 12 in model.path's config.json)", rp, dir, rp);
  CHECK_STREQ(e.msg, want);
  const char *fits[] = {"rollout.max_new_tokens=56", "tokenizer.chars=0123456789"};
  CHECK_EQ_I64(recipe_load(rp, fits, 1, &r, &e), RL_EXIT_USAGE); /* the chars still do not fit */
  CHECK_CONTAINS(e.msg, "the tokenizer needs 16 ids");
  CHECK(strstr(e.msg, "max_position_embeddings") == NULL);
  /* one token past the positions */
  const char *big[] = {"rollout.max_new_tokens=57"};
  CHECK_EQ_I64(recipe_load(rp, big, 1, &r, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "--set rollout.max_new_tokens=57: prompt + completion (8 + 57 tokens) exceed the model's "
                        "max_position_embeddings (64, ");
}

/* A --set's text is how messages name it: a value of thousands of characters
 * pushed the reason off, and a newline in it broke the line. */
TEST(recipe_set_named_with_its_value_clipped) {
  char set[2100] = "tokenizer.chars=", want[1000] = "--set tokenizer.chars=";
  for (int i = 0; i < 160; i++) strcat(set, "ab");
  for (int i = 0; i < 100; i++) strcat(want, "ab");
  strcat(want, "\xe2\x80\xa6: character 'a' appears twice: list each character once");
  const char *sets[] = {set, "seed=1\n2"};
  recipe r;
  rl_err e;
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", sets, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, want);
  CHECK_EQ_I64(recipe_load_string(MINIMAL, strlen(MINIMAL), "m.yaml", sets + 1, 1, RECIPE_NO_FS, &r, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "--set seed=1\\n2: expected an integer, got '1 2'");
}

/* The resolved recipe (plan, a run's recipe.resolved.yaml, export) wrote a
 * string's C1 controls, NEL, LS and PS raw: read back, a stop string
 * "a\x85b" became "a b" (NEL folds as a line break in a quoted scalar), and
 * "\x80" made the exported recipe unreadable ("control characters are not
 * allowed"). Each string must read back to its own bytes. */
TEST(recipe_print_escapes_what_yaml_would_fold_or_refuse) {
  char text[1024];
  snprintf(text, sizeof text, "%srollout: {stop: [\"a\\x85b\", \"\\x80\\x9f\", \"\\u2028\\u2029\", \"\\ufeff\\ufffe\\uffff\", "
           "\"\\u00a0\\u00e9\"]}\nprecision: {rollout: fp8-block, train: fp8-block}\n", MINIMAL);
  recipe a, b;
  rl_err e;
  REQUIRE(recipe_load_string(text, strlen(text), "m.yaml", NULL, 0, RECIPE_NO_FS, &a, &e) == 0);
  char *t1 = NULL;
  size_t n1 = 0;
  FILE *f = open_memstream(&t1, &n1);
  recipe_print(f, &a);
  fclose(f);
  CHECK_CONTAINS(t1, "  stop: [\"a\\x85b\", \"\\x80\\x9f\", \"\\u2028\\u2029\", \"\\ufeff\\ufffe\\uffff\", "
                     "\"\xc2\xa0\xc3\xa9\"]\n");
  int rc = recipe_load_string(t1, strlen(t1), "m.yaml", NULL, 0, RECIPE_NO_FS, &b, &e);
  CHECK_MSG(rc == 0, "%s", e.msg);
  if (!rc) {
    REQUIRE(b.rollout.stop.n == 5);
    for (int i = 0; i < 5; i++) CHECK_STREQ(b.rollout.stop.items[i], a.rollout.stop.items[i]);
    recipe_free(&b);
  }
  free(t1);
  recipe_free(&a);
}
