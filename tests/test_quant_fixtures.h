/* test_quant_fixtures.h — loading the oracle fixtures that
 * tests/oracle/ci_formats.py and ci_quant.py write under $RLRUN_FIXTURES. */
#ifndef RLRUN_TEST_QUANT_FIXTURES_H
#define RLRUN_TEST_QUANT_FIXTURES_H

#include <stdio.h>
#include <stdlib.h>

#include "kernels/common.h"

/* Read fixture $RLRUN_FIXTURES/rel into a new buffer (*n bytes); NULL when
 * absent (said on stderr unless quiet). */
static inline void *fixture_load_q(const char *rel, size_t *n, int quiet) {
  const char *dir = getenv("RLRUN_FIXTURES");
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir ? dir : "build/fixtures", rel);
  char *buf = NULL;
  size_t len = 0;
  rl_err e;
  if (rl_read_file(path, &buf, &len, &e) != 0) {
    if (!quiet) fprintf(stderr, "fixture missing: %s (run: make fixtures, or tests/oracle/ci_formats.py / ci_quant.py --out DIR with the oracles' Python)\n", path);
    return NULL;
  }
  if (n) *n = len;
  return buf;
}

static inline void *fixture_load(const char *rel, size_t *n) { return fixture_load_q(rel, n, 0); }

#endif
