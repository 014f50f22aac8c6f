/* fuzz_recipe.c — libFuzzer target for the recipe loader: YAML parsing, the
 * schema, defaults, the rules, --set overrides, the hardware check and the
 * printers, all from memory (RECIPE_NO_FS: no file is opened, base: refused).
 * Lines "#set K=V" in the input (YAML comments) become --set overrides.
 *   make fuzz && build-fuzz/fuzz_recipe -max_len=4096 tests/fuzz/corpus_recipe */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner/recipe.h"

#define MAX_SETS 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *sink;
  if (!sink) sink = fopen("/dev/null", "w");
  char *sets[MAX_SETS];
  int n_sets = 0;
  for (size_t i = 0; i + 5 < size && n_sets < MAX_SETS; i++) {
    if ((i == 0 || data[i - 1] == '\n') && !memcmp(data + i, "#set ", 5)) {
      size_t j = i + 5;
      while (j < size && data[j] != '\n' && data[j] != 0) j++;
      sets[n_sets] = malloc(j - i - 4);
      memcpy(sets[n_sets], data + i + 5, j - i - 5);
      sets[n_sets][j - i - 5] = 0;
      n_sets++;
    }
  }
  recipe r;
  rl_err e;
  if (recipe_load_string((const char *)data, size, "fuzz.yaml", (const char *const *)sets, n_sets, RECIPE_NO_FS,
                         &r, &e) == 0) {
    static const char *const targets[] = {"cpu", "a100", "h200:2", "b200"};
    for (int k = 0; k < 4; k++) {
      hw_target t;
      int emu = 0;
      if (hw_target_named(targets[k], &t, &e)) abort();
      recipe_check_hardware(&r, &t, &emu, &e);
      if (sink && k == 2) {
        recipe_print(sink, &r);
        recipe_print_plan(sink, &r, &t, emu);
      }
    }
    recipe_free(&r);
  } else if (!e.msg[0] || (e.code != RL_EXIT_USAGE)) {
    abort(); /* a failed load always says why, as an input error */
  }
  for (int i = 0; i < n_sets; i++) free(sets[i]);
  return 0;
}
