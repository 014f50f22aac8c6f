/* common.c — error values, checked allocation, small file helpers, the environment's knobs. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int rl_errf(rl_err *e, int code, const char *fmt, ...) {
  if (!e) return code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  e->code = code;
  return code;
}

int rl_err_prefix(rl_err *e, const char *fmt, ...) {
  if (!e) return RL_EXIT_FAIL;
  char head[512], old[sizeof e->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(head, sizeof head, fmt, ap);
  va_end(ap);
  memcpy(old, e->msg, sizeof old);
  size_t h = strlen(head), o = strnlen(old, sizeof old - 1);
  if (h > sizeof e->msg - 1) h = sizeof e->msg - 1;
  if (o > sizeof e->msg - 1 - h) o = sizeof e->msg - 1 - h;
  memcpy(e->msg, head, h);
  memcpy(e->msg + h, old, o);
  e->msg[h + o] = 0;
  return e->code;
}

void rl_err_clear(rl_err *e) {
  if (!e) return;
  e->code = 0;
  e->msg[0] = 0;
}

/* ------------------------------------------------ SIGINT / SIGTERM */
static volatile sig_atomic_t rl_sigs;
static char rl_sig_msg[2][320]; /* what the first and the second signal say, each between newlines */
static size_t rl_sig_len[2];

static void rl_on_signal(int sig) {
  (void)sig;
  const int second = ++rl_sigs > 1;
  ssize_t w = write(2, rl_sig_msg[second], rl_sig_len[second]); /* write is async-signal-safe */
  (void)w;
  if (second) _exit(RL_EXIT_INTERRUPT);
}

void rl_interrupt_install(const char *first, const char *second) {
  const char *m[2] = {first, second};
  for (int i = 0; i < 2; i++) {
    snprintf(rl_sig_msg[i], sizeof rl_sig_msg[i], "\n%s\n", m[i]);
    rl_sig_len[i] = strlen(rl_sig_msg[i]);
  }
  rl_sigs = 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = rl_on_signal;
  sigemptyset(&sa.sa_mask); /* no SA_RESTART: a blocking read returns, and its caller looks at the flag */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

int rl_interrupted(void) { return rl_sigs > 0; }

static void (*oom_hook)(size_t n, void *arg);
static void *oom_arg;

void rl_on_oom(void (*fn)(size_t n, void *arg), void *arg) {
  oom_hook = fn;
  oom_arg = arg;
}

/* A failed allocation ends the process with RL_EXIT_FAIL, not an abort: what
 * is committed is kept (a run resumes), and the message says what to do.
 * _exit, not exit: other threads (OpenMP, a GPU's) may be running, and the
 * libraries' exit-time destructors would run under them. */
static void oom(size_t n) {
  fprintf(stderr,
          "rlrun: out of memory allocating %zu bytes (%.2f GiB): this machine cannot give that much; make the model or "
          "the batch smaller, or free memory\n",
          n, (double)n / (1u << 30));
  if (oom_hook) oom_hook(n, oom_arg);
  _exit(RL_EXIT_FAIL);
}

void *rl_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}

void *rl_xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (!p) oom(n * sz);
  return p;
}

void *rl_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) oom(n);
  return q;
}

char *rl_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = rl_xmalloc(n);
  memcpy(p, s, n);
  return p;
}

const char *rl_file_kind(unsigned mode) {
  const mode_t m = (mode_t)mode;
  if (S_ISREG(m)) return "a file";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  return "not a plain file";
}

int rl_path_is_special(const char *path) {
  struct stat st;
  return path && stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode);
}

int rl_check_out_file(const char *opt, const char *path, rl_err *e) {
  struct stat st;
  if (!*path) return rl_errf(e, RL_EXIT_USAGE, "%s is empty: give the path of the file to write", opt);
  if (stat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode))
      return rl_errf(e, RL_EXIT_USAGE, "%s %s is a directory: give the path of a file to write (in it, or elsewhere)",
                     opt, path);
    return 0; /* a file, or a device / FIFO written in place (rl_path_is_special) */
  }
  const char *slash = strrchr(path, '/');
  if (!slash) return 0; /* the working directory */
  size_t n = slash == path ? 1 : (size_t)(slash - path);
  char *dir = rl_xmalloc(n + 1);
  memcpy(dir, path, n);
  dir[n] = 0;
  int rc = 0;
  if (stat(dir, &st) != 0)
    rc = rl_errf(e, RL_EXIT_USAGE, "%s %s: directory %s: %s (create it first)", opt, path, dir, strerror(errno));
  else if (!S_ISDIR(st.st_mode))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s %s: %s is %s, not a directory", opt, path, dir, rl_file_kind(st.st_mode));
  free(dir);
  return rc;
}

/* A byte count as "N KiB", "N MiB" or "N GiB" when exact, else "N bytes". */
static const char *size_str(uint64_t n, char *buf, size_t sz) {
  static const char *const units[] = {"bytes", "KiB", "MiB", "GiB"};
  int u = 0;
  uint64_t v = n;
  while (u < 3 && v >= 1024 && v % 1024 == 0) v /= 1024, u++;
  snprintf(buf, sz, "%llu %s", (unsigned long long)v, units[u]);
  return buf;
}

int rl_read_file_max(const char *path, size_t max, char **out, size_t *len, rl_err *e) {
  *out = NULL;
  if (len) *len = 0;
  /* O_NONBLOCK: opening a FIFO must not wait for a writer before it is refused below */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
  if (!f) {
    int err = errno;
    if (fd >= 0) close(fd);
    return rl_errf(e, RL_EXIT_USAGE, "%s: cannot open: %s", path, strerror(err));
  }
  struct stat st;
  char lim[32], got_s[32];
  if (fstat(fd, &st) != 0) {
    int err = errno;
    fclose(f);
    return rl_errf(e, RL_EXIT_FAIL, "%s: cannot stat: %s", path, strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    fclose(f);
    return rl_errf(e, RL_EXIT_USAGE, "%s: is not a regular file (%s): give the path of a file", path,
                   rl_file_kind(st.st_mode));
  }
  if ((uint64_t)st.st_size > max) {
    fclose(f);
    return rl_errf(e, RL_EXIT_USAGE, "%s: is %s, more than the %s rlrun reads from such a file: is it the right file?",
                   path, size_str((uint64_t)st.st_size, got_s, sizeof got_s), size_str(max, lim, sizeof lim));
  }
  /* room for the size and one byte more, so that EOF shows without a reallocation */
  size_t cap = (size_t)st.st_size + 2 > 4096 ? (size_t)st.st_size + 2 : 4096, n = 0;
  char *buf = rl_xmalloc(cap);
  int err = 0;
  for (;;) {
    if (n + 1 >= cap) {
      if (cap - 1 > max) { /* the file grew while it was read */
        free(buf);
        fclose(f);
        return rl_errf(e, RL_EXIT_USAGE, "%s: grew past the %s rlrun reads from such a file while it was read",
                       path, size_str(max, lim, sizeof lim));
      }
      buf = rl_xrealloc(buf, cap *= 2);
    }
    errno = 0;
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0) {
      err = ferror(f) ? (errno ? errno : EIO) : 0;
      break;
    }
  }
  fclose(f);
  if (err) {
    free(buf);
    return rl_errf(e, RL_EXIT_FAIL, "%s: read error after %zu bytes: %s", path, n, strerror(err));
  }
  if (n > max) {
    free(buf);
    return rl_errf(e, RL_EXIT_USAGE, "%s: grew past the %s rlrun reads from such a file while it was read", path,
                   size_str(max, lim, sizeof lim));
  }
  buf[n] = 0;
  *out = buf;
  if (len) *len = n;
  return 0;
}

int rl_read_file(const char *path, char **out, size_t *len, rl_err *e) {
  return rl_read_file_max(path, RL_READ_FILE_MAX, out, len, e);
}

const char *rl_fmt_double(double v, char *buf, size_t n) {
  for (int prec = 6; prec <= 17; prec++) {
    snprintf(buf, n, "%.*g", prec, v);
    if (v != v || strtod(buf, NULL) == v) break;
  }
  return buf;
}

double rl_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- the environment's knobs */

/* The variables already warned about (once each; past RL_ENV_WARN_MAX of them, every time). */
#define RL_ENV_WARN_MAX 64
static struct {
  pthread_mutex_t mu;
  const char *name[RL_ENV_WARN_MAX];
  int n;
  long warnings;
} rl_envw = {PTHREAD_MUTEX_INITIALIZER, {0}, 0, 0};

/* Say that name=v is not a value the knob takes (`takes`: what it does take) and
 * that dflt is used, unless that was said already. */
static void rl_env_bad(const char *name, const char *v, const char *takes, const char *dflt) {
  pthread_mutex_lock(&rl_envw.mu);
  int seen = 0;
  for (int i = 0; i < rl_envw.n && !seen; i++) seen = !strcmp(rl_envw.name[i], name);
  if (!seen) {
    if (rl_envw.n < RL_ENV_WARN_MAX) rl_envw.name[rl_envw.n++] = name;
    rl_envw.warnings++;
    fprintf(stderr, "rlrun: warning: %s=%s is not a value it takes (%s); using its default, %s\n", name, v, takes,
            dflt);
  }
  pthread_mutex_unlock(&rl_envw.mu);
}

long rl_env_warnings(void) {
  pthread_mutex_lock(&rl_envw.mu);
  long n = rl_envw.warnings;
  pthread_mutex_unlock(&rl_envw.mu);
  return n;
}

/* 1 with *out = v's value when v is a decimal integer (an optional sign, digits,
 * nothing after, within long's range); else 0. */
static int rl_env_parse(const char *v, long *out) {
  char *end = NULL;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (end == v || *end || errno) return 0;
  *out = x;
  return 1;
}

/* "one of A, B, …" into buf (n bytes): the n_ok integers ok, or the words when ok is NULL. */
static const char *rl_env_takes(char *buf, size_t n, const int *ok, const char *const *words, int n_ok) {
  size_t at = (size_t)snprintf(buf, n, "one of");
  for (int i = 0; i < n_ok && at < n; i++)
    at += ok ? (size_t)snprintf(buf + at, n - at, "%s %d", i ? "," : "", ok[i])
             : (size_t)snprintf(buf + at, n - at, "%s %s", i ? "," : "", words[i]);
  return buf;
}

int rl_env_bool(const char *name, int dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt != 0;
  if (!strcmp(v, "0") || !strcmp(v, "1")) return v[0] == '1';
  rl_env_bad(name, v, "0 or 1", dflt ? "1" : "0");
  return dflt != 0;
}

int rl_env_int(const char *name, int lo, int hi, int dflt) {
  const char *v = getenv(name);
  long x = 0;
  if (!v || !*v) return dflt;
  if (rl_env_parse(v, &x) && x >= lo && x <= hi) return (int)x;
  char takes[64], d[16];
  snprintf(takes, sizeof takes, "an integer from %d to %d", lo, hi);
  snprintf(d, sizeof d, "%d", dflt);
  rl_env_bad(name, v, takes, d);
  return dflt;
}

int rl_env_int_of(const char *name, const int *ok, int n, int dflt) {
  const char *v = getenv(name);
  long x = 0;
  if (!v || !*v) return dflt;
  if (rl_env_parse(v, &x))
    for (int i = 0; i < n; i++)
      if (x == ok[i]) return ok[i];
  char takes[128], d[16];
  snprintf(d, sizeof d, "%d", dflt);
  rl_env_bad(name, v, rl_env_takes(takes, sizeof takes, ok, NULL, n), d);
  return dflt;
}

int rl_env_word(const char *name, const char *const *words, int n, int dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  for (int i = 0; i < n; i++)
    if (!strcmp(v, words[i])) return i;
  char takes[128];
  rl_env_bad(name, v, rl_env_takes(takes, sizeof takes, NULL, words, n), dflt >= 0 && dflt < n ? words[dflt] : "none");
  return dflt;
}

int rl_env_switch_def(int *cache, const char *name, int def, int set) {
  if (set >= 0) __atomic_store_n(cache, set != 0, __ATOMIC_SEQ_CST);
  int on = __atomic_load_n(cache, __ATOMIC_SEQ_CST);
  if (on < 0) {
    int want = rl_env_bool(name, def), unset = -1;
    __atomic_compare_exchange_n(cache, &unset, want, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    on = __atomic_load_n(cache, __ATOMIC_SEQ_CST);
  }
  return on;
}

int rl_env_switch(int *cache, const char *name, int set) { return rl_env_switch_def(cache, name, 1, set); }
