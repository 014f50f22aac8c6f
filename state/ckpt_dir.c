/* ckpt_dir.c — copying, removing and publishing model directories. */
#include "state/ckpt_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/ckpt.h"

/* 1 when name ends with suffix. */
static int ends_with(const char *name, const char *suffix) {
  size_t n = strlen(name), s = strlen(suffix);
  return n >= s && !strcmp(name + n - s, suffix);
}

int ckpt_dir_is_weight_file(const char *name) {
  return ends_with(name, ".safetensors") || !strcmp(name, "model.safetensors.index.json") ||
         !strcmp(name, "config.json") || !strcmp(name, "hf_quant_config.json") ||
         ends_with(name, ".bin") || ends_with(name, ".pt") || ends_with(name, ".pth") ||
         !strcmp(name, "pytorch_model.bin.index.json");
}

int ckpt_dir_copy_file(const char *src, const char *dst, rl_err *e) {
  int in = open(src, O_RDONLY | O_CLOEXEC);
  if (in < 0) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot open: %s", src, strerror(errno));
  int out = open(dst, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (out < 0) {
    close(in);
    return rl_errf(e, RL_EXIT_FAIL, "%s: cannot create: %s", dst, strerror(errno));
  }
  char *buf = rl_xmalloc(1 << 20);
  int rc = 0;
  for (;;) {
    ssize_t got = read(in, buf, 1 << 20);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      rc = rl_errf(e, RL_EXIT_FAIL, "%s: read error: %s", src, strerror(errno));
      break;
    }
    if (got == 0) break;
    for (ssize_t off = 0; off < got && !rc;) {
      ssize_t put = write(out, buf + off, (size_t)(got - off));
      if (put < 0 && errno == EINTR) continue;
      if (put <= 0) rc = rl_errf(e, RL_EXIT_FAIL, "%s: write error: %s", dst, strerror(errno));
      else off += put;
    }
    if (rc) break;
  }
  free(buf);
  if (!rc && fsync(out)) rc = rl_errf(e, RL_EXIT_FAIL, "%s: fsync failed: %s", dst, strerror(errno));
  close(in);
  if (close(out) && !rc) rc = rl_errf(e, RL_EXIT_FAIL, "%s: close failed: %s", dst, strerror(errno));
  return rc;
}

int ckpt_dir_copy_extras(const char *in, const char *out, int *n_copied, rl_err *e) {
  if (n_copied) *n_copied = 0;
  DIR *d = opendir(in);
  if (!d) return rl_errf(e, RL_EXIT_USAGE, "%s: cannot open directory: %s", in, strerror(errno));
  struct dirent *de;
  int rc = 0;
  /* an rlrun checkpoint's manifest.json lists its own files and hashes: not the output's */
  ckpt_info ci;
  rl_err me;
  int is_ckpt = ckpt_read_manifest(in, &ci, &me) == 0;
  if (is_ckpt) ckpt_info_free(&ci);
  while (!rc && (de = readdir(d))) {
    if (de->d_name[0] == '.' || ckpt_dir_is_weight_file(de->d_name)) continue;
    if (is_ckpt && !strcmp(de->d_name, CKPT_MANIFEST)) continue;
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/%s", in, de->d_name);
    snprintf(dst, sizeof dst, "%s/%s", out, de->d_name);
    struct stat st;
    if (stat(src, &st) || !S_ISREG(st.st_mode)) continue;
    rc = ckpt_dir_copy_file(src, dst, e);
    if (!rc && n_copied) (*n_copied)++;
  }
  closedir(d);
  return rc;
}

int ckpt_dir_check_extras(const char *in, rl_err *e) {
  static const char *const file_like[] = {".json", ".txt", ".model", ".jinja", ".tiktoken"};
  DIR *d = opendir(in);
  if (!d) return rl_errf(e, RL_EXIT_USAGE, "%s: cannot open directory: %s", in, strerror(errno));
  struct dirent *de;
  int rc = 0;
  while (!rc && (de = readdir(d))) {
    if (de->d_name[0] == '.' || ckpt_dir_is_weight_file(de->d_name)) continue;
    int named_file = 0;
    for (size_t i = 0; i < sizeof file_like / sizeof *file_like; i++) named_file |= ends_with(de->d_name, file_like[i]);
    if (!named_file) continue;
    char src[4096];
    snprintf(src, sizeof src, "%s/%s", in, de->d_name);
    struct stat st;
    if (stat(src, &st) != 0)
      rc = rl_errf(e, RL_EXIT_USAGE, "%s: cannot read it (%s; a dangling symlink?): the model's files are copied to "
                   "the output; restore the file or remove the entry", src, strerror(errno));
    else if (!S_ISREG(st.st_mode))
      rc = rl_errf(e, RL_EXIT_USAGE, "%s is %s, not a file: the model's files are copied to the output; replace it "
                   "with the file or remove it", src, rl_file_kind(st.st_mode));
  }
  closedir(d);
  return rc;
}

/* nftw callback: remove one entry (children come first with FTW_DEPTH). */
static int remove_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)ftw;
  return flag == FTW_DP ? rmdir(p) : unlink(p);
}

int ckpt_dir_remove(const char *path, rl_err *e) {
  struct stat st;
  if (lstat(path, &st) != 0) return 0;
  if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    return rl_errf(e, RL_EXIT_FAIL, "%s: cannot remove: %s", path, strerror(errno));
  return 0;
}

/* 1 when dir has no entries besides . and .. */
static int dir_is_empty(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *de;
  int empty = 1;
  while (empty && (de = readdir(d)))
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
  closedir(d);
  return empty;
}

int ckpt_dir_check_output(const char *out, int replace, rl_err *e) {
  struct stat st;
  if (stat(out, &st) != 0) return 0;
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) /* never moved aside, --force or not (/dev/null as root) */
    return rl_errf(e, RL_EXIT_USAGE, "%s: is %s, not a directory; --out names the checkpoint directory to write",
                   out, rl_file_kind(st.st_mode));
  if (replace) return 0;
  if (S_ISDIR(st.st_mode) && dir_is_empty(out)) return 0;
  if (S_ISREG(st.st_mode))
    return rl_errf(e, RL_EXIT_USAGE, "%s: is a file, not a directory (--out names the checkpoint directory to "
                   "write); choose another --out, or pass --force to replace the file by the directory", out);
  return rl_errf(e, RL_EXIT_USAGE,
                 "%s: already exists and is not empty; choose another --out or pass --force to "
                 "replace it",
                 out);
}

/* fsync a directory (so renames inside it are durable). */
static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int ckpt_dir_publish(const char *tmp, const char *out, int replace, rl_err *e) {
  int rc = ckpt_dir_check_output(out, replace, e);
  if (rc) return rc;
  if (fsync_dir(tmp))
    return rl_errf(e, RL_EXIT_FAIL, "%s: cannot fsync: %s", tmp, strerror(errno));
  char old[4096] = "";
  struct stat st;
  if (stat(out, &st) == 0) {
    if (S_ISDIR(st.st_mode) && dir_is_empty(out)) {
      if (rmdir(out)) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot remove: %s", out, strerror(errno));
    } else {
      snprintf(old, sizeof old, "%s.old.%ld", out, (long)getpid());
      if (rename(out, old))
        return rl_errf(e, RL_EXIT_FAIL, "%s: cannot move aside: %s", out, strerror(errno));
    }
  }
  if (rename(tmp, out))
    return rl_errf(e, RL_EXIT_FAIL, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
  char *copy = rl_xstrdup(out);
  int bad = fsync_dir(dirname(copy));
  free(copy);
  if (bad) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot fsync its directory: %s", out, strerror(errno));
  if (old[0]) return ckpt_dir_remove(old, e);
  return 0;
}
