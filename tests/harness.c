/* harness.c — registry and runner for the TEST() functions of the tests/ files. */
#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HARNESS_MAX_TESTS 4096

/* All of the harness's private state. */
static struct {
  struct harness_test {
    const char *name, *file;
    harness_fn fn;
    int order; /* registration order, to keep a file's tests in definition order */
  } tests[HARNESS_MAX_TESTS];
  int n;
  int cur_failures;   /* failures recorded in the running test */
  const char *cur;    /* name of the running test */
  char tmproot[512];  /* per-run temporary root */
  int tmp_counter;
  char tmpdir[600];   /* the running test's directory ("" until asked for) */
} H;

void harness_register(const char *name, const char *file, harness_fn fn) {
  if (H.n >= HARNESS_MAX_TESTS) {
    fprintf(stderr, "harness: too many tests\n");
    exit(2);
  }
  H.tests[H.n].name = name;
  H.tests[H.n].file = file;
  H.tests[H.n].fn = fn;
  H.tests[H.n].order = H.n;
  H.n++;
}

void harness_fail(const char *file, int line, const char *fmt, ...) {
  if (H.cur_failures < 20) {
    fprintf(stdout, "    %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
  } else if (H.cur_failures == 20) {
    fprintf(stdout, "    ... further failures of %s not shown\n", H.cur);
  }
  H.cur_failures++;
}

int harness_failed(void) { return H.cur_failures > 0; }

int harness_run(const char *cmd, char *out, size_t outsz) {
  char full[8192];
  snprintf(full, sizeof full, "(%s) 2>&1", cmd);
  FILE *p = popen(full, "r");
  if (!p) return -1;
  size_t n = 0;
  if (out && outsz) out[0] = 0;
  char buf[4096];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, p)) > 0) {
    if (out && n + 1 < outsz) {
      size_t take = got < outsz - 1 - n ? got : outsz - 1 - n;
      memcpy(out + n, buf, take);
      n += take;
      out[n] = 0;
    }
  }
  int st = pclose(p);
  if (st == -1 || !WIFEXITED(st)) return -1;
  return WEXITSTATUS(st);
}

const char *harness_bin(void) {
  const char *b = getenv("RLRUN_BIN");
  return b && *b ? b : "build/rlrun";
}

const char *harness_python(void) {
  const char *p = getenv("RLRUN_PYTHON");
  if (p && *p) return p;
  return access(".venv-oracles/bin/python3", X_OK) == 0 ? ".venv-oracles/bin/python3" : "python3";
}

const char *harness_tmpdir(void) {
  if (H.tmpdir[0]) return H.tmpdir;
  if (!H.tmproot[0]) {
    const char *t = getenv("TMPDIR");
    snprintf(H.tmproot, sizeof H.tmproot, "%s/rlrun-tests.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(H.tmproot)) {
      perror("harness: mkdtemp");
      exit(2);
    }
  }
  snprintf(H.tmpdir, sizeof H.tmpdir, "%s/%03d-%s", H.tmproot, ++H.tmp_counter, H.cur ? H.cur : "x");
  if (mkdir(H.tmpdir, 0755) != 0) {
    perror("harness: mkdir");
    exit(2);
  }
  return H.tmpdir;
}

int harness_write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t n = strlen(text);
  int ok = fwrite(text, 1, n, f) == n;
  return (fclose(f) == 0 && ok) ? 0 : -1;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_tests(const void *a, const void *b) {
  const struct harness_test *x = a, *y = b;
  int c = strcmp(x->file, y->file);
  return c ? c : x->order - y->order;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  /* Group tests by file, keeping each file's order of definition. */
  qsort(H.tests, (size_t)H.n, sizeof H.tests[0], cmp_tests);
  int list = argc > 1 && !strcmp(argv[1], "--list");
  int passed = 0, failed = 0;
  double t_all = now_s();
  for (int i = 0; i < H.n; i++) {
    int want = argc <= 1 || list;
    for (int a = 1; a < argc && !want; a++) want = strstr(H.tests[i].name, argv[a]) != NULL;
    if (!want) continue;
    if (list) {
      printf("%s (%s)\n", H.tests[i].name, H.tests[i].file);
      continue;
    }
    H.cur = H.tests[i].name;
    H.cur_failures = 0;
    H.tmpdir[0] = 0;
    double t0 = now_s();
    H.tests[i].fn();
    double dt = now_s() - t0;
    if (H.cur_failures) {
      printf("FAIL %s (%s, %.2fs)\n", H.cur, H.tests[i].file, dt);
      failed++;
    } else {
      printf("PASS %s (%.2fs)\n", H.cur, dt);
      passed++;
    }
  }
  if (list) return 0;
  if (H.tmproot[0] && failed == 0) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", H.tmproot);
    if (system(cmd) != 0) fprintf(stderr, "harness: could not remove %s\n", H.tmproot);
  } else if (H.tmproot[0]) {
    printf("test files kept in %s\n", H.tmproot);
  }
  printf("(%.1fs)\n%d passed, %d failed\n", now_s() - t_all, passed, failed);
  return failed ? 1 : 0;
}
