/* test_layout.c — the dependency rule of ARCHITECTURE.md, read from the
 * sources: runner → stages → model → kernels; state beside the chain (runner,
 * stages and model may use it; it uses kernels only); lua used by runner and
 * stages (it uses kernels only); kernels uses nothing of the others. Every
 * `#include "DIR/…"` of every source file in those folders is checked. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "kernels/common.h"

/* The folders a folder's sources may include from (besides itself). */
static const struct {
  const char *dir, *may;
} rules[] = {
    {"kernels", ""},
    {"state", " kernels "},
    {"lua", " kernels "},
    {"model", " kernels state "},
    {"stages", " kernels state model lua "},
    {"runner", " kernels state model lua stages "},
};
#define N_RULES (int)(sizeof rules / sizeof rules[0])

static int is_source(const char *n) {
  const char *x = strrchr(n, '.');
  return x && (!strcmp(x, ".c") || !strcmp(x, ".h") || !strcmp(x, ".cu") || !strcmp(x, ".cuh"));
}

/* Violations in one file (each a failed check when report); *n_inc counts the project includes seen. */
static int check_file(const char *dir, const char *may, const char *path, int report, int *n_inc) {
  char *text = NULL;
  size_t len = 0;
  rl_err e;
  if (rl_read_file(path, &text, &len, &e)) {
    CHECK_MSG(0, "%s", e.msg);
    return 1;
  }
  int bad = 0;
  for (const char *p = text; (p = strstr(p, "#include \"")) != NULL; p++) {
    const char *q = p + 10, *slash = strchr(q, '/'), *end = strchr(q, '"');
    if (!slash || !end || slash > end) continue; /* "harness.h" style: same folder */
    char to[32];
    size_t n = (size_t)(slash - q);
    if (n >= sizeof to - 2) continue;
    to[0] = ' ', memcpy(to + 1, q, n), to[n + 1] = ' ', to[n + 2] = 0;
    (*n_inc)++;
    if (!strncmp(q, dir, n) && strlen(dir) == n) continue;
    if (!strstr(may, to)) {
      int line = 1;
      for (const char *c = text; c < p; c++) line += *c == '\n';
      if (report)
          CHECK_MSG(0, "%s:%d includes %.*s: %s/ may include from [%s] only (ARCHITECTURE.md)", path, line,
                  (int)(end - q), q, dir, may);
      bad++;
    }
  }
  free(text);
  return bad;
}

TEST(layout_dependencies_point_one_way) {
  int bad = 0, files = 0, incs = 0;
  for (int i = 0; i < N_RULES; i++) {
    DIR *d = opendir(rules[i].dir);
    REQUIRE(d != NULL); /* tests run from the repository root */
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
      if (!is_source(de->d_name)) continue;
      char path[512];
      snprintf(path, sizeof path, "%s/%s", rules[i].dir, de->d_name);
      bad += check_file(rules[i].dir, rules[i].may, path, 1, &incs);
      files++;
    }
    closedir(d);
  }
  CHECK(files > 100 && incs > 300); /* the scan saw the tree */
  CHECK_EQ_I64(bad, 0);
}

TEST(layout_check_catches_a_wrong_way_include) {
  char path[512];
  snprintf(path, sizeof path, "%s/layout_probe.c", harness_tmpdir());
  FILE *f = fopen(path, "w");
  REQUIRE(f != NULL);
  fputs("#include \"kernels/common.h\"\n#include \"runner/recipe.h\"\n", f);
  fclose(f);
  int incs = 0;
  CHECK_EQ_I64(check_file("stages", " kernels state model lua ", path, 0, &incs), 1);
  CHECK_EQ_I64(incs, 2);
}
