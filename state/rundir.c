/* rundir.c — run directory creation and atomic single-file writes. */
#include "state/rundir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int rundir_check_name(const char *name, rl_err *e) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0) return rl_errf(e, RL_EXIT_USAGE, "run name '' must be 1 to 64 characters");
  if (n > 64) { /* quote its start only, so the reason always shows */
    size_t cut = 40;
    while (cut > 0 && ((unsigned char)name[cut] & 0xC0) == 0x80) cut--; /* between UTF-8 characters */
    return rl_errf(e, RL_EXIT_USAGE, "run name '%.*s\xe2\x80\xa6' (%zu bytes) must be 1 to 64 characters", (int)cut,
                   name, n);
  }
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '.' || c == '_' || c == '-';
    if (!ok)
      return rl_errf(e, RL_EXIT_USAGE, "run name '%s': character %zu ('%c') is not one of "
                                       "A-Z a-z 0-9 . _ -", name, i + 1, c);
  }
  if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= '0' && name[0] <= '9')))
    /* as a recipe's name: (--name --quiet named a run "--quiet") */
    return rl_errf(e, RL_EXIT_USAGE, "run name '%s' must start with a letter or digit", name);
  return 0;
}

/* Four hex digits from the kernel's random source (time and pid as a fallback). */
static unsigned rundir_random16(void) {
  unsigned v = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, &v, sizeof v) != (ssize_t)sizeof v) v = 0;
    close(fd);
  }
  if (!v) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    v = (unsigned)ts.tv_nsec ^ ((unsigned)getpid() << 16);
  }
  return v & 0xffff;
}

void rundir_make_id(const char *name, char *out, size_t outsz) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  char ts[32];
  strftime(ts, sizeof ts, "%Y%m%dT%H%M%SZ", &tm);
  snprintf(out, outsz, "%s-%s-%04x", name, ts, rundir_random16());
}

/* mkdir -p for the runs directory. */
static int rundir_mkdirs(const char *path, rl_err *e) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
    return rl_errf(e, RL_EXIT_USAGE, "%s: path too long", path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == 0) {
      char c = *p;
      *p = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return rl_errf(e, RL_EXIT_FAIL, "%s: cannot create directory: %s", buf, strerror(errno));
      *p = c;
      if (!c) break;
    }
  }
  struct stat sb;
  if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return rl_errf(e, RL_EXIT_USAGE, "%s: exists and is not a directory", path);
  return 0;
}

int rundir_fsync_dir(const char *dir, rl_err *e) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot open directory: %s", dir, strerror(errno));
  int rc = fsync(fd);
  int err = errno;
  close(fd);
  if (rc != 0 && err != EINVAL) /* some file systems cannot sync directories */
    return rl_errf(e, RL_EXIT_FAIL, "%s: fsync of the directory failed: %s", dir, strerror(err));
  return 0;
}

int rundir_create(const char *runs_dir, const char *name, char *out, size_t outsz, rl_err *e) {
  if (rundir_check_name(name, e) || rundir_mkdirs(runs_dir, e)) return e ? e->code : RL_EXIT_FAIL;
  for (int attempt = 0; attempt < 16; attempt++) {
    char id[128];
    rundir_make_id(name, id, sizeof id);
    if (snprintf(out, outsz, "%s/%s", runs_dir, id) >= (int)outsz)
      return rl_errf(e, RL_EXIT_USAGE, "%s/%s: path too long", runs_dir, id);
    if (mkdir(out, 0755) != 0) {
      if (errno == EEXIST) continue;
      return rl_errf(e, RL_EXIT_FAIL, "%s: cannot create the run directory: %s", out,
                     strerror(errno));
    }
    const char *subs[] = {"checkpoints", "logs"};
    for (int i = 0; i < 2; i++) {
      char sub[4200];
      snprintf(sub, sizeof sub, "%s/%s", out, subs[i]);
      if (mkdir(sub, 0755) != 0)
        return rl_errf(e, RL_EXIT_FAIL, "%s: cannot create: %s", sub, strerror(errno));
    }
    if (rundir_fsync_dir(out, e) || rundir_fsync_dir(runs_dir, e)) return e->code;
    return 0;
  }
  return rl_errf(e, RL_EXIT_FAIL, "%s: could not find a free run directory name for '%s'", runs_dir,
                 name);
}

/* Write all len bytes of data to fd (EINTR retried); 0 or the errno. */
static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  for (size_t left = len; left > 0;) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? errno : EIO;
    p += w, left -= (size_t)w;
  }
  return 0;
}

int rundir_write_atomic(const char *path, const void *data, size_t len, rl_err *e) {
  if (rl_path_is_special(path)) { /* /dev/null, a FIFO: written in place (see rl_path_is_special) */
    int fd = open(path, O_WRONLY | O_CLOEXEC), err;
    if (fd < 0) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot open for writing: %s", path, strerror(errno));
    if ((err = write_all(fd, data, len))) {
      close(fd);
      return rl_errf(e, RL_EXIT_FAIL, "%s: write failed: %s", path, strerror(err));
    }
    if (close(fd) != 0) return rl_errf(e, RL_EXIT_FAIL, "%s: close failed: %s", path, strerror(errno));
    return 0;
  }
  char tmp[4200], dir[4200];
  if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp)
    return rl_errf(e, RL_EXIT_USAGE, "%s: path too long", path);
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) dir[1] = 0;
  else if (slash) *slash = 0;
  else snprintf(dir, sizeof dir, ".");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot create: %s", tmp, strerror(errno));
  int werr = write_all(fd, data, len);
  if (werr) {
    close(fd);
    unlink(tmp);
    return rl_errf(e, RL_EXIT_FAIL, "%s: write failed: %s%s", tmp, strerror(werr),
                   werr == ENOSPC ? " (free disk space, then resume)" : "");
  }
  if (fsync(fd) != 0) {
    int err = errno;
    close(fd);
    unlink(tmp);
    return rl_errf(e, RL_EXIT_FAIL, "%s: fsync failed: %s", tmp, strerror(err));
  }
  if (close(fd) != 0) {
    unlink(tmp);
    return rl_errf(e, RL_EXIT_FAIL, "%s: close failed: %s", tmp, strerror(errno));
  }
  if (rename(tmp, path) != 0) {
    int err = errno;
    unlink(tmp);
    return rl_errf(e, RL_EXIT_FAIL, "cannot rename %s to %s: %s", tmp, path, strerror(err));
  }
  return rundir_fsync_dir(dir, e);
}
