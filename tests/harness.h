/* harness.h — rlrun's C test harness.
 *
 * Each test is a function declared with TEST(name); it registers itself at
 * load time, so adding a tests/test_*.c file is all a new test needs. The
 * runner prints "PASS name" or "FAIL name" with the failing values, and closes
 * with "N passed, M failed" (exit 1 when M > 0).
 *
 *   TEST(fp8_zero_block) {
 *     CHECK_EQ_U64(scale_bits, 0x3f800000u);
 *     CHECK_NEAR(x, 1.5, 1e-6);
 *   }
 *
 * Run a subset: build/rlrun-tests SUBSTRING... ; list: --list. */
#ifndef RLRUN_HARNESS_H
#define RLRUN_HARNESS_H

#include <stddef.h>
#include <stdint.h>

typedef void (*harness_fn)(void);
void harness_register(const char *name, const char *file, harness_fn fn);

/* Record a failure of the running test (printf-style detail). */
void harness_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 1 when the running test has failed so far. */
int harness_failed(void);

/* How much slower the sanitized build (make test SAN=1) runs: a throughput guard
 * (a bound that catches quadratic work, not a timing of the code) multiplies its
 * limit by it — 5 s became 5.3 s under ASan on a busy 2-core CI machine. */
#if defined(__SANITIZE_ADDRESS__)
#define HARNESS_SLOWDOWN 4.0
#else
#define HARNESS_SLOWDOWN 1.0
#endif

#define TEST(name)                                                             \
  static void test_##name(void);                                               \
  __attribute__((constructor)) static void harness_reg_##name(void) {          \
    harness_register(#name, __FILE__, test_##name);                            \
  }                                                                            \
  static void test_##name(void)

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) harness_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);         \
  } while (0)

#define CHECK_MSG(cond, ...)                                                   \
  do {                                                                         \
    if (!(cond)) harness_fail(__FILE__, __LINE__, __VA_ARGS__);                \
  } while (0)

/* Like CHECK, but leaves the test at the first failure. */
#define REQUIRE(cond)                                                          \
  do {                                                                         \
    if (!(cond)) {                                                             \
      harness_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);                  \
      return;                                                                  \
    }                                                                          \
  } while (0)

#define CHECK_EQ_I64(a, b)                                                     \
  do {                                                                         \
    long long va_ = (long long)(a), vb_ = (long long)(b);                      \
    if (va_ != vb_)                                                            \
      harness_fail(__FILE__, __LINE__, "%s == %s: got %lld, want %lld", #a,    \
                   #b, va_, vb_);                                              \
  } while (0)

#define CHECK_EQ_U64(a, b)                                                     \
  do {                                                                         \
    unsigned long long va_ = (unsigned long long)(a),                          \
                       vb_ = (unsigned long long)(b);                          \
    if (va_ != vb_)                                                            \
      harness_fail(__FILE__, __LINE__, "%s == %s: got 0x%llx, want 0x%llx",    \
                   #a, #b, va_, vb_);                                          \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                  \
  do {                                                                         \
    double va_ = (double)(a), vb_ = (double)(b), vt_ = (double)(tol);          \
    if (!(va_ - vb_ <= vt_ && vb_ - va_ <= vt_))                               \
      harness_fail(__FILE__, __LINE__,                                         \
                   "%s ≈ %s: got %.9g, want %.9g (tol %.3g, diff %.3g)", #a,   \
                   #b, va_, vb_, vt_, va_ - vb_);                              \
  } while (0)

#define CHECK_STREQ(a, b)                                                      \
  do {                                                                         \
    const char *sa_ = (a), *sb_ = (b);                                         \
    if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0)                                 \
      harness_fail(__FILE__, __LINE__, "%s == %s: got \"%s\", want \"%s\"",    \
                   #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");        \
  } while (0)

/* Haystack contains needle. */
#define CHECK_CONTAINS(hay, needle)                                            \
  do {                                                                         \
    const char *sh_ = (hay), *sn_ = (needle);                                  \
    if (!sh_ || !sn_ || !strstr(sh_, sn_))                                     \
      harness_fail(__FILE__, __LINE__, "%s contains \"%s\"; got:\n%s", #hay,   \
                   sn_ ? sn_ : "(null)", sh_ ? sh_ : "(null)");                \
  } while (0)

/* Run a shell command, capture stdout+stderr (NUL-terminated, truncated to
 * outsz) and return its exit status (or -1 if it could not run / was killed). */
int harness_run(const char *cmd, char *out, size_t outsz);

/* Path of the rlrun binary under test ($RLRUN_BIN, default build/rlrun). */
const char *harness_bin(void);

/* The Python that runs the oracle scripts (numpy, ml_dtypes, safetensors):
 * $RLRUN_PYTHON (`make test` sets it from scripts/install-deps.sh --python),
 * else the project's .venv-oracles/bin/python3 when there is one, else python3. */
const char *harness_python(void);

/* A fresh empty directory for this test, removed at exit unless the run failed. */
const char *harness_tmpdir(void);

/* Write a whole file (creating it); returns 0 on success. */
int harness_write_file(const char *path, const char *text);

#include <string.h>

#endif
