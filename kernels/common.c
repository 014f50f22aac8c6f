/* common.c — error values, checked allocation, small file helpers. */
#include "common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static void oom(size_t n) {
  fprintf(stderr, "rlrun: out of memory allocating %zu bytes\n", n);
  abort();
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

int rl_read_file(const char *path, char **out, size_t *len, rl_err *e) {
  *out = NULL;
  if (len) *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return rl_errf(e, RL_EXIT_USAGE, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *buf = rl_xmalloc(cap);
  for (;;) {
    if (n + 1 >= cap) buf = rl_xrealloc(buf, cap *= 2);
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return rl_errf(e, RL_EXIT_FAIL, "%s: read error", path);
  }
  buf[n] = 0;
  *out = buf;
  if (len) *len = n;
  return 0;
}

double rl_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
