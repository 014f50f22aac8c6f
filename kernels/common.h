/* common.h — what every module of rlrun shares: error values, exit codes,
 * small helpers. Depends on nothing else in the tree. */
#ifndef RLRUN_COMMON_H
#define RLRUN_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define RLRUN_VERSION "0.1.0"

/* Process exit codes (documented in README.md and `rlrun --help`). */
enum rl_exit {
  RL_EXIT_OK = 0,        /* success */
  RL_EXIT_FAIL = 1,      /* a runtime failure (stage error, I/O); a run stays resumable */
  RL_EXIT_USAGE = 2,     /* bad command line or invalid input (recipe, checkpoint, data) */
  RL_EXIT_HARDWARE = 3,  /* valid, but not runnable on this hardware / this build */
  RL_EXIT_STATE = 4,     /* run state refused: corrupt store, changed inputs, wrong version */
  RL_EXIT_INTERRUPT = 130 /* stopped by SIGINT/SIGTERM; resumable */
};

/* An error value: a code (one of rl_exit) and a message built once, at the
 * place that knows the context (file:line:col, tensor name, step). */
typedef struct rl_err {
  int code;
  char msg[2048];
} rl_err;

/* Record an error (printf-style) and return its code. e may be NULL. */
int rl_errf(rl_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepend context ("while loading X: ") to an existing message; returns e->code. */
int rl_err_prefix(rl_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rl_err_clear(rl_err *e);

/* Allocation that never returns NULL: on out-of-memory it says so on stderr,
 * calls the hook of rl_on_oom (if any) and exits with RL_EXIT_FAIL. */
void *rl_xmalloc(size_t n);
void *rl_xcalloc(size_t n, size_t sz);
void *rl_xrealloc(void *p, size_t n);
char *rl_xstrdup(const char *s);
/* SIGINT/SIGTERM, one mechanism for every command: the first signal writes
 * `first` on stderr and sets the flag rl_interrupted reads, which the command
 * polls between units of work (the run loop at step boundaries, convert
 * between tensors, score between lines) to stop cleanly; a second one writes
 * `second` and exits with RL_EXIT_INTERRUPT at once. The texts are copied. */
void rl_interrupt_install(const char *first, const char *second);
int rl_interrupted(void);
/* The hook a failed rl_x* allocation calls before the process exits (the run
 * loop: a line in the run's log); NULL: none. */
void rl_on_oom(void (*fn)(size_t n, void *arg), void *arg);

/* The most rl_read_file reads: its callers read text inputs (recipes, config.json,
 * Lua scripts, run logs), none of which comes near it. */
#define RL_READ_FILE_MAX ((size_t)64 << 20)

/* Read a whole regular file into a NUL-terminated buffer; returns 0 or an error:
 * RL_EXIT_USAGE when it cannot be opened, is not a regular file (a directory,
 * /dev/zero, a FIFO: "is not a regular file") or holds more than
 * RL_READ_FILE_MAX bytes (the message says the limit); RL_EXIT_FAIL for a read
 * error (with strerror). */
int rl_read_file(const char *path, char **out, size_t *len, rl_err *e);
/* The same with another size limit (binary inputs such as drift token files). */
int rl_read_file_max(const char *path, size_t max, char **out, size_t *len, rl_err *e);
/* What a path is, for messages, from its st_mode: "a file" (regular), "a
 * directory", "a character device", "a block device", "a FIFO", "a socket". */
const char *rl_file_kind(unsigned mode);
/* 1 when path exists and is neither a regular file nor a directory (a
 * character device such as /dev/null, a FIFO, a socket): an output there is
 * written in place, never through a temporary renamed over it (which, run as
 * root, would replace /dev/null by a regular file). */
int rl_path_is_special(const char *path);

/* A file a command is to write, named by option opt ("--out"), checked before
 * any work: 0, or RL_EXIT_USAGE in e when path is empty, names a directory,
 * or its directory does not exist. A device or FIFO (/dev/null) passes: the
 * writers write it in place (rl_path_is_special). */
int rl_check_out_file(const char *opt, const char *path, rl_err *e);

/* Monotonic time in seconds. */
double rl_now(void);

/* v in the shortest %g form, from 6 significant digits up to 17, that strtod
 * reads back as v (0.001, 20, 1.5e-07; 0.30000000000000004 keeps 17); inf and
 * nan as %g prints them. Into buf (n >= 32); returns buf. */
const char *rl_fmt_double(double v, char *buf, size_t n);

/* The RLRUN_* knobs of the environment (tuning and diagnostic switches; the
 * README lists them). Each reads variable `name` now: unset or empty → dflt; a
 * value the knob takes → that; any other value → dflt, and one line on stderr
 * (the first time for each variable) naming the variable, the value, what it
 * takes and the default used. Thread-safe; `name` must outlive the process (a
 * string literal: the warned names are kept by pointer).
 *   rl_env_bool: "0" or "1".
 *   rl_env_int: a decimal integer in [lo, hi].
 *   rl_env_int_of: one of the n integers ok[].
 *   rl_env_word: one of the n words; returns its index. */
int rl_env_bool(const char *name, int dflt);
int rl_env_int(const char *name, int lo, int hi, int dflt);
int rl_env_int_of(const char *name, const int *ok, int n, int dflt);
int rl_env_word(const char *name, const char *const *words, int n, int dflt);
/* Warnings the knobs above have printed so far (tests). */
long rl_env_warnings(void);

/* An on/off switch from the environment variable `name` (rl_env_bool, default
 * on), read once into *cache (−1 until then; a static int of the caller);
 * set ≥ 0 overrides it from then on (tests), −1 only asks. Atomic: engines of a
 * split rollout ask from threads of their own. */
int rl_env_switch(int *cache, const char *name, int set);
/* The same with default `def` (rl_env_switch is def = 1; an opt-in switch such
 * as RLRUN_LINEAR_FP8Q is def = 0). */
int rl_env_switch_def(int *cache, const char *name, int def, int set);

#endif
