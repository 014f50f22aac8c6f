/* test_install.c — the README's fresh-machine path: `make run` installs before it builds,
 * other goals stop with a clear message when the static libraries are missing, and
 * scripts/install-deps.sh's Python-oracle modes.
 *
 * The Makefile is driven with `make -n` (recipes printed, $(MAKE) lines still run) and a
 * fake compiler whose -print-file-name does not find the four static archives until
 * FAKEDIR/present exists: the state of a machine before scripts/install-deps.sh. */
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"

static char out[1 << 18];

/* A fake `gcc` in a fresh directory; libraries "installed" iff `present`. */
static const char *fake_cc(int present) {
  const char *d = harness_tmpdir();
  char path[1024], script[2048];
  snprintf(script, sizeof script,
           "#!/bin/sh\n"
           "case \"$1\" in -print-file-name=libyaml.a|-print-file-name=libsqlite3.a|"
           "-print-file-name=liblua5.4.a|-print-file-name=libjansson.a)\n"
           "  [ -f '%s/present' ] || { echo \"${1#-print-file-name=}\"; exit 0; } ;;\n"
           "esac\n"
           "exec gcc \"$@\"\n",
           d);
  snprintf(path, sizeof path, "%s/gcc", d);
  if (harness_write_file(path, script) != 0) return NULL;
  if (present) {
    snprintf(path, sizeof path, "%s/present", d);
    if (harness_write_file(path, "") != 0) return NULL;
  }
  snprintf(path, sizeof path, "chmod +x '%s/gcc'", d);
  return harness_run(path, NULL, 0) == 0 ? d : NULL;
}

/* `make -n GOAL` with the fake compiler, a private build dir and none of the outer make's state. */
static int make_n(const char *dir, const char *goal) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES make -n %s SAN=0 FUZZ=0 CUDA=0 "
           "CC='%s/gcc' BUILD='%s/build'",
           goal, dir, dir);
  return harness_run(cmd, out, sizeof out);
}

static long pos(const char *needle) {
  const char *p = strstr(out, needle);
  return p ? (long)(p - out) : -1;
}

TEST(install_make_run_installs_before_the_missing_library_check) {
  const char *d = fake_cc(0);
  REQUIRE(d != NULL);
  int rc = make_n(d, "run");
  /* Dry run: the install line is only printed, so the build's make still finds no libraries. */
  CHECK_MSG(rc != 0, "make -n run without libraries passed:\n%s", out);
  long install = pos("scripts/install-deps.sh --check >/dev/null 2>&1 || scripts/install-deps.sh");
  long stop = pos("*** missing static libraries");
  CHECK_MSG(install >= 0, "no install step in make -n run:\n%s", out);
  CHECK_MSG(stop > install, "the library check fired before the install step:\n%s", out);
  CHECK_CONTAINS(out, "installing them first");
  char want[1200];
  snprintf(want, sizeof want, "(needed by `make %s/build/rlrun`)", d);
  CHECK_CONTAINS(out, want);
}

TEST(install_make_run_installs_then_builds_then_runs) {
  const char *d = fake_cc(1);
  REQUIRE(d != NULL);
  CHECK_EQ_I64(make_n(d, "run"), 0);
  char link[1200], job[1200];
  snprintf(link, sizeof link, "-o %s/build/rlrun ", d);
  snprintf(job, sizeof job, "%s/build/rlrun run recipes/demo-cpu.yaml", d);
  long install = pos("scripts/install-deps.sh --check"), built = pos(link), ran = pos(job);
  CHECK_MSG(install >= 0 && built > install && ran > built,
            "want install (%ld) < link (%ld) < run (%ld):\n%s", install, built, ran, out);
  CHECK(pos("✓ static libyaml") >= 0);
}

TEST(install_make_test_and_all_stop_clearly_without_libraries) {
  const char *d = fake_cc(0);
  REQUIRE(d != NULL);
  const char *goals[] = {"test", "all", "bench"};
  for (int i = 0; i < 3; i++) {
    CHECK_MSG(make_n(d, goals[i]) == 2, "make -n %s without libraries did not stop:\n%s", goals[i], out);
    char want[256];
    snprintf(want, sizeof want,
             "*** missing static libraries libyaml.a libsqlite3.a liblua5.4.a libjansson.a "
             "(needed by `make %s`); run scripts/install-deps.sh",
             goals[i]);
    CHECK_CONTAINS(out, want);
    CHECK_MSG(pos(" -c ") < 0 && pos("install-deps.sh --") < 0, "make -n %s did work before stopping:\n%s",
              goals[i], out);
  }
  CHECK_EQ_I64(make_n(d, "clean"), 0);
  CHECK_CONTAINS(out, "rm -rf build build-san build-fuzz");
}

TEST(install_deps_oracle_python_is_the_venv_once_it_exists) {
  const char *d = harness_tmpdir();
  char cmd[2048], want[1100];
  snprintf(cmd, sizeof cmd, "RLRUN_ORACLE_VENV='%s/venv' PYTHON=/bin/sh scripts/install-deps.sh --python", d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_STREQ(out, "/bin/sh\n");
  snprintf(want, sizeof want, "mkdir -p '%s/venv/bin' && cp /bin/true '%s/venv/bin/python3'", d, d);
  REQUIRE(harness_run(want, NULL, 0) == 0);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  snprintf(want, sizeof want, "%s/venv/bin/python3\n", d);
  CHECK_STREQ(out, want);
  CHECK_EQ_I64(harness_run("scripts/install-deps.sh --bogus", out, sizeof out), 2);
  CHECK_CONTAINS(out, "unknown option '--bogus'");
}

/* A base Python that can make no venv and has no oracles: --check and --oracles say so and fail,
 * without touching apt (it claims ensurepip, so python3-venv is not asked for). */
TEST(install_deps_oracles_fail_clearly) {
  const char *d = harness_tmpdir();
  char path[1024], cmd[2048];
  snprintf(path, sizeof path, "%s/python3", d);
  REQUIRE(harness_write_file(path, "#!/bin/sh\n[ \"$1 $2\" = \"-c import ensurepip, venv\" ] && exit 0\n"
                                   "echo \"fake python: $*\" >&2; exit 1\n") == 0);
  snprintf(cmd, sizeof cmd, "chmod +x '%s'", path);
  REQUIRE(harness_run(cmd, NULL, 0) == 0);
  snprintf(cmd, sizeof cmd, "RLRUN_ORACLE_VENV='%s/venv' PYTHON='%s' scripts/install-deps.sh --check", d, path);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 1);
  CHECK_CONTAINS(out, "numpy ml_dtypes safetensors");
  snprintf(cmd, sizeof cmd, "RLRUN_ORACLE_VENV='%s/venv' PYTHON='%s' scripts/install-deps.sh --oracles", d, path);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 1);
  CHECK_CONTAINS(out, "could not install the Python test oracles");
  CHECK_CONTAINS(out, "-m venv");
  CHECK_CONTAINS(out, "`make test` does");
  snprintf(cmd, sizeof cmd, "test ! -e '%s/venv'", d);
  CHECK_EQ_I64(harness_run(cmd, NULL, 0), 0);
}
