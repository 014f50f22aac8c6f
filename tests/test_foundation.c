/* test_foundation.c — the CLI skeleton, error values and the harness helpers. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "kernels/common.h"
#include "kernels/device.h"

static char out[65536];

TEST(err_format_and_prefix) {
  rl_err e;
  rl_err_clear(&e);
  CHECK_EQ_I64(rl_errf(&e, RL_EXIT_USAGE, "%s:%d:%d: bad key '%s'", "r.yaml", 3, 5, "lr"), 2);
  CHECK_STREQ(e.msg, "r.yaml:3:5: bad key 'lr'");
  CHECK_EQ_I64(rl_err_prefix(&e, "recipe %s: ", "demo"), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "recipe demo: r.yaml:3:5: bad key 'lr'");
  CHECK_EQ_I64(rl_errf(NULL, 7, "ignored"), 7);
}

/* rl_env_switch: read once ("0" off, "1" on, unset or anything else: the default), then fixed; set ≥ 0 overrides. */
TEST(env_switch_reads_once_and_overrides) {
  int a = -1, b = -1, c = -1;
  setenv("RLRUN_TEST_SWITCH_OFF", "0", 1);
  setenv("RLRUN_TEST_SWITCH_ON", "no", 1);
  unsetenv("RLRUN_TEST_SWITCH_UNSET");
  CHECK_EQ_I64(rl_env_switch(&a, "RLRUN_TEST_SWITCH_OFF", -1), 0);
  CHECK_EQ_I64(rl_env_switch(&b, "RLRUN_TEST_SWITCH_ON", -1), 1);
  CHECK_EQ_I64(rl_env_switch(&c, "RLRUN_TEST_SWITCH_UNSET", -1), 1);
  setenv("RLRUN_TEST_SWITCH_OFF", "1", 1); /* read once: the change is not seen */
  CHECK_EQ_I64(rl_env_switch(&a, "RLRUN_TEST_SWITCH_OFF", -1), 0);
  CHECK_EQ_I64(rl_env_switch(&a, "RLRUN_TEST_SWITCH_OFF", 1), 1); /* an override sticks */
  CHECK_EQ_I64(rl_env_switch(&a, "RLRUN_TEST_SWITCH_OFF", -1), 1);
  CHECK_EQ_I64(rl_env_switch(&c, "RLRUN_TEST_SWITCH_UNSET", 0), 0);
  CHECK_EQ_I64(c, 0);
  /* default off (an opt-in switch): only "1" turns it on */
  int d = -1, f = -1, g = -1;
  setenv("RLRUN_TEST_SWITCH_ON", "no", 1);
  setenv("RLRUN_TEST_SWITCH_ONE", "1", 1);
  CHECK_EQ_I64(rl_env_switch_def(&d, "RLRUN_TEST_SWITCH_ON", 0, -1), 0);
  CHECK_EQ_I64(rl_env_switch_def(&f, "RLRUN_TEST_SWITCH_ONE", 0, -1), 1);
  CHECK_EQ_I64(rl_env_switch_def(&g, "RLRUN_TEST_SWITCH_UNSET", 0, -1), 0);
  CHECK_EQ_I64(rl_env_switch_def(&g, "RLRUN_TEST_SWITCH_UNSET", 0, 1), 1);
  unsetenv("RLRUN_TEST_SWITCH_OFF"), unsetenv("RLRUN_TEST_SWITCH_ON"), unsetenv("RLRUN_TEST_SWITCH_ONE");
}

/* The knobs: unset or empty → the default; a value the knob takes → it; any
 * other → the default and one warning a variable (counted, not repeated). */
TEST(env_knobs_take_their_values_and_warn_once_on_others) {
  const long w0 = rl_env_warnings();
  unsetenv("RLRUN_TEST_KNOB");
  CHECK_EQ_I64(rl_env_bool("RLRUN_TEST_KNOB", 1), 1);
  CHECK_EQ_I64(rl_env_int("RLRUN_TEST_KNOB", 1, 16, 7), 7);
  setenv("RLRUN_TEST_KNOB", "", 1);
  CHECK_EQ_I64(rl_env_bool("RLRUN_TEST_KNOB", 0), 0);
  CHECK_EQ_I64(rl_env_warnings(), w0);
  setenv("RLRUN_TEST_KNOB", "0", 1);
  CHECK_EQ_I64(rl_env_bool("RLRUN_TEST_KNOB", 1), 0);
  setenv("RLRUN_TEST_KNOB", "1", 1);
  CHECK_EQ_I64(rl_env_bool("RLRUN_TEST_KNOB", 0), 1);
  CHECK_EQ_I64(rl_env_int("RLRUN_TEST_KNOB", 1, 16, 7), 1); /* the range's ends are in it */
  setenv("RLRUN_TEST_KNOB", "16", 1);
  CHECK_EQ_I64(rl_env_int("RLRUN_TEST_KNOB", 1, 16, 7), 16);
  setenv("RLRUN_TEST_KNOB", "-3", 1);
  CHECK_EQ_I64(rl_env_int("RLRUN_TEST_KNOB", -4, 0, 0), -3);
  static const int ok[4] = {0, 32, 64, 128};
  setenv("RLRUN_TEST_KNOB", "64", 1);
  CHECK_EQ_I64(rl_env_int_of("RLRUN_TEST_KNOB", ok, 4, 0), 64);
  static const char *const words[2] = {"cluster", "global"};
  setenv("RLRUN_TEST_KNOB", "global", 1);
  CHECK_EQ_I64(rl_env_word("RLRUN_TEST_KNOB", words, 2, 0), 1);
  CHECK_EQ_I64(rl_env_warnings(), w0);
  /* values not taken: the default, one warning for the variable however often asked */
  setenv("RLRUN_TEST_KNOB", "yes", 1);
  CHECK_EQ_I64(rl_env_bool("RLRUN_TEST_KNOB", 1), 1);
  CHECK_EQ_I64(rl_env_warnings(), w0 + 1);
  CHECK_EQ_I64(rl_env_bool("RLRUN_TEST_KNOB", 0), 0);
  CHECK_EQ_I64(rl_env_warnings(), w0 + 1);
  const char *bad_int[] = {"17", "0", "8x", "x8", " ", "4.5", "99999999999999999999"};
  for (size_t i = 0; i < sizeof bad_int / sizeof *bad_int; i++) {
    setenv("RLRUN_TEST_KNOB_INT", bad_int[i], 1);
    CHECK_EQ_I64(rl_env_int("RLRUN_TEST_KNOB_INT", 1, 16, 7), 7);
  }
  setenv("RLRUN_TEST_KNOB_OF", "48", 1);
  CHECK_EQ_I64(rl_env_int_of("RLRUN_TEST_KNOB_OF", ok, 4, 32), 32);
  setenv("RLRUN_TEST_KNOB_WORD", "Global", 1); /* words are exact */
  CHECK_EQ_I64(rl_env_word("RLRUN_TEST_KNOB_WORD", words, 2, 0), 0);
  CHECK_EQ_I64(rl_env_warnings(), w0 + 4);
  /* rl_env_switch_def reads through rl_env_bool: "no" is its default, with the warning */
  int sw = -1;
  setenv("RLRUN_TEST_KNOB_SW", "no", 1);
  CHECK_EQ_I64(rl_env_switch_def(&sw, "RLRUN_TEST_KNOB_SW", 0, -1), 0);
  CHECK_EQ_I64(rl_env_warnings(), w0 + 5);
  unsetenv("RLRUN_TEST_KNOB"), unsetenv("RLRUN_TEST_KNOB_INT"), unsetenv("RLRUN_TEST_KNOB_OF");
  unsetenv("RLRUN_TEST_KNOB_WORD"), unsetenv("RLRUN_TEST_KNOB_SW");
}

TEST(read_file_roundtrip_and_missing) {
  char path[700];
  snprintf(path, sizeof path, "%s/f.txt", harness_tmpdir());
  REQUIRE(harness_write_file(path, "hello\nworld") == 0);
  char *buf = NULL;
  size_t n = 0;
  rl_err e;
  CHECK_EQ_I64(rl_read_file(path, &buf, &n, &e), 0);
  CHECK_EQ_I64(n, 11);
  CHECK_STREQ(buf, "hello\nworld");
  free(buf);
  snprintf(path, sizeof path, "%s/missing.txt", harness_tmpdir());
  CHECK_EQ_I64(rl_read_file(path, &buf, &n, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "missing.txt: cannot open: No such file");
  CHECK(buf == NULL);
}

/* rl_read_file reads regular files of at most RL_READ_FILE_MAX bytes: a
 * directory, a device (/dev/zero grew memory without end), a FIFO (would wait
 * for a writer) and a file over the limit are refused at once, saying so; a read
 * error says why (strerror). */
TEST(read_file_refuses_special_and_huge_files) {
  char *buf = NULL, path[700], want[1000];
  size_t n = 0;
  rl_err e;
  CHECK_EQ_I64(rl_read_file(harness_tmpdir(), &buf, &n, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "%s: is not a regular file (a directory): give the path of a file", harness_tmpdir());
  CHECK_STREQ(e.msg, want);
  CHECK_EQ_I64(rl_read_file("/dev/zero", &buf, &n, &e), RL_EXIT_USAGE);
  CHECK_STREQ(e.msg, "/dev/zero: is not a regular file (a character device): give the path of a file");
  snprintf(path, sizeof path, "%s/fifo", harness_tmpdir());
  REQUIRE(mkfifo(path, 0600) == 0);
  CHECK_EQ_I64(rl_read_file(path, &buf, &n, &e), RL_EXIT_USAGE); /* returns: no writer is waited for */
  snprintf(want, sizeof want, "%s: is not a regular file (a FIFO): give the path of a file", path);
  CHECK_STREQ(e.msg, want);
  snprintf(path, sizeof path, "%s/big.yaml", harness_tmpdir());
  FILE *f = fopen(path, "wb");
  REQUIRE(f);
  fclose(f);
  REQUIRE(truncate(path, (off_t)RL_READ_FILE_MAX + 1) == 0); /* sparse: no disk used */
  CHECK_EQ_I64(rl_read_file(path, &buf, &n, &e), RL_EXIT_USAGE);
  snprintf(want, sizeof want, "%s: is 67108865 bytes, more than the 64 MiB rlrun reads from such a file: is it the right "
           "file?", path);
  CHECK_STREQ(e.msg, want);
  REQUIRE(truncate(path, (off_t)RL_READ_FILE_MAX) == 0); /* exactly the limit is read */
  CHECK_EQ_I64(rl_read_file(path, &buf, &n, &e), 0);
  CHECK_EQ_I64(n, RL_READ_FILE_MAX);
  free(buf);
  CHECK_EQ_I64(rl_read_file_max(path, 1000, &buf, &n, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "big.yaml: is 64 MiB, more than the 1000 bytes rlrun reads from such a file");
  unlink(path);
  /* reading /proc/self/mem from offset 0 fails with EIO: the reason is part of the message */
  CHECK_EQ_I64(rl_read_file("/proc/self/mem", &buf, &n, &e), RL_EXIT_FAIL);
  CHECK_STREQ(e.msg, "/proc/self/mem: read error after 0 bytes: Input/output error");
  CHECK(buf == NULL);
}

TEST(cli_version_prints_every_library) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "%s version", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "rlrun " RLRUN_VERSION);
  CHECK_CONTAINS(out, "lua            Lua 5.4");
  CHECK_CONTAINS(out, "sqlite         3.");
  CHECK_CONTAINS(out, "libyaml        0.2");
  CHECK_CONTAINS(out, "jansson        2.");
  CHECK_CONTAINS(out, "cublasLt");
  CHECK_CONTAINS(out, "nccl");
  /* CI and dev machines have no GPU: it must say so plainly. */
  device_info d;
  device_query(&d);
  if (d.n_gpus == 0) CHECK_CONTAINS(out, "gpus           no GPU (");
  else CHECK_CONTAINS(out, "compute capability");
  CHECK(strstr(out, "no GPU (no GPU") == NULL); /* device_info.status is the reason alone */
  /* the SM count kept per device: the driver's for the current GPU, 0 with none (twice: the kept value) */
  for (int i = 0; i < 2; i++)
    CHECK_EQ_I64(device_sm_count(), d.n_gpus ? d.gpus[device_current()].sm_count : 0);
#if !RLRUN_CUDA
  CHECK_CONTAINS(out, "gpus           no GPU (this binary was built without CUDA)\n");
  CHECK_STREQ(d.status, "this binary was built without CUDA");
#endif
}

TEST(cli_unknown_command_suggests_and_exits_2) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "%s verison", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "unknown command 'verison' (did you mean 'version'?)");
  snprintf(cmd, sizeof cmd, "%s", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "usage: rlrun COMMAND");
  snprintf(cmd, sizeof cmd, "%s version extra", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "unexpected argument 'extra'");
}

/* Every listed command answers --help with a usage line and exit 0. */
TEST(cli_every_command_has_help) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "%s --help", harness_bin());
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  CHECK_CONTAINS(out, "exit codes:");
  char list[65536];
  snprintf(list, sizeof list, "%s", out);
  char *p = strstr(list, "commands:\n");
  REQUIRE(p);
  p += strlen("commands:\n");
  int n = 0;
  while (p && *p == ' ') {
    char name[64];
    if (sscanf(p, " %63s", name) != 1) break;
    char c2[800], o2[16384];
    snprintf(c2, sizeof c2, "%s %s --help", harness_bin(), name);
    int rc = harness_run(c2, o2, sizeof o2);
    CHECK_MSG(rc == 0, "`rlrun %s --help` exited %d", name, rc);
    CHECK_MSG(strstr(o2, "usage: rlrun") != NULL, "`rlrun %s --help` printed no usage line:\n%s", name, o2);
    n++;
    p = strchr(p, '\n');
    if (p) p++;
  }
  CHECK(n >= 1);
}
