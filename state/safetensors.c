/* safetensors.c — validating header parser, pread/mmap reader, atomic writer.
 * Sharded checkpoints (the index file) live in st_ckpt.c. */
#include "state/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Names and sizes of the element types, indexed by st_dtype. */
static const struct {
  const char *name;
  size_t size;
} st_dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1},
    [ST_F8_E8M0] = {"F8_E8M0", 1}, [ST_I16] = {"I16", 2}, [ST_U16] = {"U16", 2},
    [ST_F16] = {"F16", 2},         [ST_BF16] = {"BF16", 2}, [ST_I32] = {"I32", 4},
    [ST_U32] = {"U32", 4},         [ST_F32] = {"F32", 4}, [ST_F64] = {"F64", 8},
    [ST_I64] = {"I64", 8},         [ST_U64] = {"U64", 8}, [ST_C64] = {"C64", 8},
};

const char *st_dtype_name(st_dtype d) {
  return (unsigned)d < ST_DTYPE_COUNT ? st_dtypes[d].name : "?";
}

size_t st_dtype_size(st_dtype d) { return (unsigned)d < ST_DTYPE_COUNT ? st_dtypes[d].size : 0; }

int st_dtype_parse(const char *name, st_dtype *out) {
  for (int i = 0; i < ST_DTYPE_COUNT; i++)
    if (!strcmp(name, st_dtypes[i].name)) {
      *out = (st_dtype)i;
      return 0;
    }
  return -1;
}

/* ------------------------------------------------------------------ header */

void st_header_free(st_header *h) {
  if (!h) return;
  for (int i = 0; i < h->n_tensors; i++) free(h->tensors[i].name);
  for (int i = 0; i < h->n_meta; i++) free(h->meta_keys[i]), free(h->meta_vals[i]);
  free(h->tensors);
  free(h->meta_keys);
  free(h->meta_vals);
  memset(h, 0, sizeof *h);
}

const st_tensor *st_header_find(const st_header *h, const char *name) {
  for (int i = 0; i < h->n_tensors; i++)
    if (!strcmp(h->tensors[i].name, name)) return &h->tensors[i];
  return NULL;
}

/* A non-negative JSON integer as uint64, or -1 when it is anything else. */
static int json_u64(const json_t *v, uint64_t *out) {
  if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

/* Fill t from one header entry {"dtype", "shape", "data_offsets"}. */
static int parse_entry(const char *what, const char *name, json_t *v, uint64_t data_len,
                       st_tensor *t, rl_err *e) {
  if (!json_is_object(v))
    return rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%.200s': header entry is not an object", what,
                   name);
  json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape"),
         *off = json_object_get(v, "data_offsets");
  if (!json_is_string(dt))
    return rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%.200s': \"dtype\" missing or not a string",
                   what, name);
  if (st_dtype_parse(json_string_value(dt), &t->dtype))
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: tensor '%.200s': unknown dtype '%.40s' (known: BOOL U8 I8 F8_E5M2 F8_E4M3 "
                   "F8_E8M0 I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64 C64)",
                   what, name, json_string_value(dt));
  if (!json_is_array(sh))
    return rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%.200s': \"shape\" missing or not an array",
                   what, name);
  size_t nd = json_array_size(sh);
  if (nd > ST_MAX_DIMS)
    return rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%.200s': %zu dimensions (at most %d supported)",
                   what, name, nd, ST_MAX_DIMS);
  t->ndim = (int)nd;
  uint64_t numel = 1;
  int overflow = 0;
  for (size_t i = 0; i < nd; i++) {
    uint64_t d;
    if (json_u64(json_array_get(sh, i), &d))
      return rl_errf(e, RL_EXIT_USAGE,
                     "%s: tensor '%.200s': shape[%zu] is not a non-negative integer", what, name,
                     i);
    t->shape[i] = (int64_t)d;
    if (d && numel > UINT64_MAX / d) overflow = 1;
    else numel *= d;
  }
  uint64_t b, en, esz = st_dtype_size(t->dtype);
  if (!json_is_array(off) || json_array_size(off) != 2 || json_u64(json_array_get(off, 0), &b) ||
      json_u64(json_array_get(off, 1), &en))
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: tensor '%.200s': \"data_offsets\" must be [begin, end] of non-negative "
                   "integers",
                   what, name);
  if (en < b)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: tensor '%.200s': data_offsets [%llu, %llu] end before they begin", what,
                   name, (unsigned long long)b, (unsigned long long)en);
  if (overflow || (numel && numel > UINT64_MAX / esz) || numel * esz != en - b)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: tensor '%.200s': shape × %s (%llu bytes each) does not match "
                   "data_offsets [%llu, %llu] (%llu bytes): wrong dtype, shape or offsets",
                   what, name, st_dtype_name(t->dtype), (unsigned long long)esz,
                   (unsigned long long)b, (unsigned long long)en, (unsigned long long)(en - b));
  if (en > data_len)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: tensor '%.200s': data_offsets [%llu, %llu] run past the end of the data "
                   "(%llu bytes): the file is truncated or its header lies about offsets",
                   what, name, (unsigned long long)b, (unsigned long long)en,
                   (unsigned long long)data_len);
  t->begin = b;
  t->end = en;
  t->nbytes = en - b;
  t->numel = numel;
  return 0;
}

/* Order tensors by where their data lies. */
static int cmp_offsets(const void *a, const void *b) {
  const st_tensor *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

int st_header_parse(const char *what, const char *json, size_t len, uint64_t data_len,
                    st_header *h, rl_err *e) {
  memset(h, 0, sizeof *h);
  if (len == 0 || json[0] != '{')
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: the header does not start with '{': not a safetensors file", what);
  json_error_t jerr;
  json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return rl_errf(e, RL_EXIT_USAGE, "%s: header is not valid JSON (byte %d): %s", what,
                   jerr.position, jerr.text);
  if (!json_is_object(root)) {
    json_decref(root);
    return rl_errf(e, RL_EXIT_USAGE, "%s: header is not a JSON object", what);
  }
  size_t n = json_object_size(root);
  h->tensors = rl_xcalloc(n ? n : 1, sizeof *h->tensors);
  h->data_len = data_len;
  const char *key;
  json_t *v;
  int rc = 0;
  json_object_foreach(root, key, v) {
    if (!strcmp(key, "__metadata__")) {
      if (!json_is_object(v)) {
        rc = rl_errf(e, RL_EXIT_USAGE, "%s: __metadata__ is not an object of strings", what);
        break;
      }
      size_t m = json_object_size(v);
      h->meta_keys = rl_xcalloc(m ? m : 1, sizeof(char *));
      h->meta_vals = rl_xcalloc(m ? m : 1, sizeof(char *));
      const char *mk;
      json_t *mv;
      json_object_foreach(v, mk, mv) {
        if (!json_is_string(mv)) {
          rc = rl_errf(e, RL_EXIT_USAGE, "%s: __metadata__ value of '%.200s' is not a string",
                       what, mk);
          break;
        }
        h->meta_keys[h->n_meta] = rl_xstrdup(mk);
        h->meta_vals[h->n_meta++] = rl_xstrdup(json_string_value(mv));
      }
      if (rc) break;
      continue;
    }
    st_tensor *t = &h->tensors[h->n_tensors];
    if ((rc = parse_entry(what, key, v, data_len, t, e))) break;
    t->name = rl_xstrdup(key);
    h->n_tensors++;
  }
  json_decref(root);
  if (rc) {
    st_header_free(h);
    return rc;
  }
  /* The tensors must tile the data region: sorted by offset, each begins where
   * the previous one ended, the last ends at the end of the data. */
  qsort(h->tensors, (size_t)h->n_tensors, sizeof *h->tensors, cmp_offsets);
  uint64_t pos = 0;
  for (int i = 0; i < h->n_tensors; i++) {
    const st_tensor *t = &h->tensors[i];
    if (t->begin < pos) {
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "%s: tensors '%.200s' [%llu, %llu] and '%.200s' [%llu, %llu] overlap", what,
                   h->tensors[i - 1].name, (unsigned long long)h->tensors[i - 1].begin,
                   (unsigned long long)h->tensors[i - 1].end, t->name,
                   (unsigned long long)t->begin, (unsigned long long)t->end);
      break;
    }
    if (t->begin > pos) {
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "%s: data bytes [%llu, %llu) before tensor '%.200s' belong to no tensor "
                   "(safetensors forbids holes): offsets are wrong",
                   what, (unsigned long long)pos, (unsigned long long)t->begin, t->name);
      break;
    }
    pos = t->end;
  }
  if (!rc && pos != data_len)
    rc = rl_errf(e, RL_EXIT_USAGE,
                 "%s: the data region has %llu bytes but the tensors cover %llu: trailing bytes "
                 "after tensor '%.200s'",
                 what, (unsigned long long)data_len, (unsigned long long)pos,
                 h->n_tensors ? h->tensors[h->n_tensors - 1].name : "(none)");
  if (rc) st_header_free(h);
  return rc;
}

/* Little-endian u64 from 8 bytes. */
static uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Check the 8-byte length prefix against the file size. */
static int check_header_len(const char *what, uint64_t hlen, uint64_t size, rl_err *e) {
  if (hlen > ST_MAX_HEADER_BYTES)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: header length %llu exceeds the limit of %llu bytes: corrupt or not a "
                   "safetensors file",
                   what, (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER_BYTES);
  if (hlen > size - 8)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: header length %llu but only %llu bytes follow the length prefix: the file "
                   "is truncated",
                   what, (unsigned long long)hlen, (unsigned long long)(size - 8));
  return 0;
}

int st_buffer_parse(const char *what, const uint8_t *buf, size_t len, st_header *h, rl_err *e) {
  memset(h, 0, sizeof *h);
  if (len < 8)
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: %zu bytes, shorter than the 8-byte header length: truncated", what, len);
  uint64_t hlen = le64(buf);
  int rc = check_header_len(what, hlen, len, e);
  if (rc) return rc;
  rc = st_header_parse(what, (const char *)buf + 8, (size_t)hlen, len - 8 - hlen, h, e);
  h->header_len = hlen;
  h->data_start = 8 + hlen;
  return rc;
}

/* ------------------------------------------------------------------ reading */

struct st_file {
  char *path;
  int fd;
  uint64_t size;
  st_header h;
  void *map; /* whole file, read-only, mapped on first st_file_data() */
};

/* pread all n bytes at off; 0 or -1 (errno set, or EIO at end of file). */
static int pread_full(int fd, void *dst, size_t n, uint64_t off) {
  char *p = dst;
  while (n) {
    ssize_t got = pread(fd, p, n, (off_t)off);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (got == 0) errno = EIO;
      return -1;
    }
    p += got, n -= (size_t)got, off += (uint64_t)got;
  }
  return 0;
}

int st_file_open(const char *path, st_file **out, rl_err *e) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return rl_errf(e, errno == ENOENT ? RL_EXIT_USAGE : RL_EXIT_FAIL, "%s: cannot open: %s", path,
                   strerror(errno));
  struct stat st;
  if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
    close(fd);
    return rl_errf(e, RL_EXIT_USAGE, "%s: not a regular file", path);
  }
  uint64_t size = (uint64_t)st.st_size;
  uint8_t pre[8];
  if (size < 8) {
    close(fd);
    return rl_errf(e, RL_EXIT_USAGE,
                   "%s: %llu bytes, shorter than the 8-byte header length: truncated", path,
                   (unsigned long long)size);
  }
  if (pread_full(fd, pre, 8, 0)) {
    close(fd);
    return rl_errf(e, RL_EXIT_FAIL, "%s: read error: %s", path, strerror(errno));
  }
  uint64_t hlen = le64(pre);
  int rc = check_header_len(path, hlen, size, e);
  if (rc) {
    close(fd);
    return rc;
  }
  char *json = rl_xmalloc((size_t)hlen + 1);
  if (pread_full(fd, json, (size_t)hlen, 8)) {
    free(json);
    close(fd);
    return rl_errf(e, RL_EXIT_FAIL, "%s: read error in the header: %s", path, strerror(errno));
  }
  st_file *f = rl_xcalloc(1, sizeof *f);
  rc = st_header_parse(path, json, (size_t)hlen, size - 8 - hlen, &f->h, e);
  free(json);
  if (rc) {
    close(fd);
    free(f);
    return rc;
  }
  f->h.header_len = hlen;
  f->h.data_start = 8 + hlen;
  f->path = rl_xstrdup(path);
  f->fd = fd;
  f->size = size;
  *out = f;
  return 0;
}

void st_file_close(st_file *f) {
  if (!f) return;
  if (f->map) munmap(f->map, (size_t)f->size);
  close(f->fd);
  st_header_free(&f->h);
  free(f->path);
  free(f);
}

const char *st_file_path(const st_file *f) { return f->path; }
const st_header *st_file_header(const st_file *f) { return &f->h; }
const st_tensor *st_file_find(const st_file *f, const char *name) {
  return st_header_find(&f->h, name);
}

const char *st_file_meta(const st_file *f, const char *key) {
  for (int i = 0; i < f->h.n_meta; i++)
    if (!strcmp(f->h.meta_keys[i], key)) return f->h.meta_vals[i];
  return NULL;
}

int st_file_read_range(st_file *f, const st_tensor *t, uint64_t off, void *dst, size_t n,
                       rl_err *e) {
  if (off > t->nbytes || n > t->nbytes - off)
    return rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s': read of [%llu, +%zu) outside its %llu bytes",
                   f->path, t->name, (unsigned long long)off, n, (unsigned long long)t->nbytes);
  if (pread_full(f->fd, dst, n, f->h.data_start + t->begin + off))
    return rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s': read error: %s (file changed on disk?)",
                   f->path, t->name, strerror(errno));
  return 0;
}

int st_file_read(st_file *f, const st_tensor *t, void *dst, rl_err *e) {
  return st_file_read_range(f, t, 0, dst, (size_t)t->nbytes, e);
}

const void *st_file_data(st_file *f, const st_tensor *t, rl_err *e) {
  if (!f->map) {
    void *m = mmap(NULL, (size_t)f->size, PROT_READ, MAP_SHARED, f->fd, 0);
    if (m == MAP_FAILED) {
      rl_errf(e, RL_EXIT_FAIL, "%s: mmap failed: %s", f->path, strerror(errno));
      return NULL;
    }
    f->map = m;
  }
  return (const char *)f->map + f->h.data_start + t->begin;
}

void st_file_release(st_file *f, const st_tensor *t) {
  if (!f->map || !t->nbytes) return;
  long pg = sysconf(_SC_PAGESIZE);
  uint64_t a = (f->h.data_start + t->begin) / (uint64_t)pg * (uint64_t)pg;
  uint64_t b = f->h.data_start + t->end;
  madvise((char *)f->map + a, (size_t)(b - a), MADV_DONTNEED);
}

/* ------------------------------------------------------------------ writing */

typedef struct st_wtensor {
  char *name;
  st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  uint64_t nbytes, begin, written;
} st_wtensor;

struct st_writer {
  char *path, *tmp;
  int fd; /* -1 until begin */
  st_wtensor *t;
  int n, cap;
  int *order; /* layout order: indices into t */
  char **mk, **mv;
  int n_meta;
  uint64_t data_start, data_len;
};

st_writer *st_writer_new(const char *path) {
  st_writer *w = rl_xcalloc(1, sizeof *w);
  w->path = rl_xstrdup(path);
  size_t n = strlen(path) + 32;
  w->tmp = rl_xmalloc(n);
  snprintf(w->tmp, n, "%s.tmp.%ld", path, (long)getpid());
  w->fd = -1;
  return w;
}

int st_writer_meta(st_writer *w, const char *key, const char *val, rl_err *e) {
  if (w->fd >= 0) return rl_errf(e, RL_EXIT_FAIL, "%s: metadata after the header was written", w->path);
  for (int i = 0; i < w->n_meta; i++)
    if (!strcmp(w->mk[i], key)) {
      free(w->mv[i]);
      w->mv[i] = rl_xstrdup(val);
      return 0;
    }
  w->mk = rl_xrealloc(w->mk, sizeof(char *) * (size_t)(w->n_meta + 1));
  w->mv = rl_xrealloc(w->mv, sizeof(char *) * (size_t)(w->n_meta + 1));
  w->mk[w->n_meta] = rl_xstrdup(key);
  w->mv[w->n_meta++] = rl_xstrdup(val);
  return 0;
}

int st_writer_find(const st_writer *w, const char *name) {
  for (int i = 0; i < w->n; i++)
    if (!strcmp(w->t[i].name, name)) return i;
  return -1;
}

int st_writer_add(st_writer *w, const char *name, st_dtype dt, int ndim, const int64_t *shape,
                  rl_err *e) {
  if (w->fd >= 0) return rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s' declared after begin", w->path, name);
  if (!strcmp(name, "__metadata__") || st_writer_find(w, name) >= 0)
    return rl_errf(e, RL_EXIT_FAIL, "%s: tensor name '%s' used twice (or reserved)", w->path, name);
  if (ndim < 0 || ndim > ST_MAX_DIMS || (unsigned)dt >= ST_DTYPE_COUNT)
    return rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s': bad dtype or %d dimensions", w->path, name, ndim);
  uint64_t nb = st_dtype_size(dt);
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s': negative dimension", w->path, name);
    nb *= (uint64_t)shape[i];
  }
  if (w->n == w->cap) {
    w->cap = w->cap ? 2 * w->cap : 16;
    w->t = rl_xrealloc(w->t, sizeof *w->t * (size_t)w->cap);
  }
  st_wtensor *t = &w->t[w->n++];
  memset(t, 0, sizeof *t);
  t->name = rl_xstrdup(name);
  t->dtype = dt;
  t->ndim = ndim;
  if (ndim) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
  t->nbytes = nb;
  w->data_len += nb;
  return 0;
}

uint64_t st_writer_data_bytes(const st_writer *w) { return w->data_len; }

/* Free everything w holds (the file descriptor is closed by the caller). */
static void writer_free(st_writer *w) {
  for (int i = 0; i < w->n; i++) free(w->t[i].name);
  for (int i = 0; i < w->n_meta; i++) free(w->mk[i]), free(w->mv[i]);
  free(w->t), free(w->order), free(w->mk), free(w->mv), free(w->path), free(w->tmp);
  free(w);
}

int st_writer_begin(st_writer *w, rl_err *e) {
  /* Layout: element size descending, declaration order within one size. */
  w->order = rl_xmalloc(sizeof(int) * (size_t)(w->n ? w->n : 1));
  int k = 0;
  for (size_t sz = 8; sz >= 1; sz /= 2)
    for (int i = 0; i < w->n; i++)
      if (st_dtype_size(w->t[i].dtype) == sz) w->order[k++] = i;
  json_t *root = json_object();
  if (w->n_meta) {
    json_t *m = json_object();
    for (int i = 0; i < w->n_meta; i++) json_object_set_new(m, w->mk[i], json_string(w->mv[i]));
    json_object_set_new(root, "__metadata__", m);
  }
  uint64_t pos = 0;
  for (int j = 0; j < k; j++) {
    st_wtensor *t = &w->t[w->order[j]];
    t->begin = pos;
    pos += t->nbytes;
    json_t *o = json_object(), *sh = json_array();
    for (int d = 0; d < t->ndim; d++) json_array_append_new(sh, json_integer(t->shape[d]));
    json_object_set_new(o, "dtype", json_string(st_dtype_name(t->dtype)));
    json_object_set_new(o, "shape", sh);
    json_object_set_new(o, "data_offsets",
                        json_pack("[II]", (json_int_t)t->begin, (json_int_t)(t->begin + t->nbytes)));
    json_object_set_new(root, t->name, o);
  }
  char *hdr = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!hdr) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot encode the header (invalid UTF-8 in a name?)", w->path);
  size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
  char *buf = rl_xmalloc(8 + padded);
  for (int i = 0; i < 8; i++) buf[i] = (char)(((uint64_t)padded >> (8 * i)) & 0xff);
  memcpy(buf + 8, hdr, hl);
  memset(buf + 8 + hl, ' ', padded - hl);
  free(hdr);
  w->data_start = 8 + padded;
  w->fd = open(w->tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  int rc = 0;
  if (w->fd < 0)
    rc = rl_errf(e, RL_EXIT_FAIL, "%s: cannot create: %s", w->tmp, strerror(errno));
  else if (ftruncate(w->fd, (off_t)(w->data_start + w->data_len)) ||
           pwrite(w->fd, buf, 8 + padded, 0) != (ssize_t)(8 + padded))
    rc = rl_errf(e, RL_EXIT_FAIL, "%s: cannot write the header: %s", w->tmp, strerror(errno));
  free(buf);
  return rc;
}

int st_writer_write_part(st_writer *w, int idx, uint64_t off, const void *src, size_t n, rl_err *e) {
  if (w->fd < 0 || idx < 0 || idx >= w->n)
    return rl_errf(e, RL_EXIT_FAIL, "%s: write before begin or to an undeclared tensor", w->path);
  st_wtensor *t = &w->t[idx];
  if (off > t->nbytes || n > t->nbytes - off)
    return rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s': write [%llu, +%zu) outside its %llu bytes",
                   w->path, t->name, (unsigned long long)off, n, (unsigned long long)t->nbytes);
  const char *p = src;
  uint64_t at = w->data_start + t->begin + off;
  size_t left = n;
  while (left) {
    ssize_t put = pwrite(w->fd, p, left, (off_t)at);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0)
      return rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s': write failed: %s (disk full?)", w->tmp,
                     t->name, put < 0 ? strerror(errno) : "short write");
    p += put, left -= (size_t)put, at += (uint64_t)put;
  }
  t->written += n;
  return 0;
}

int st_writer_write(st_writer *w, const char *name, const void *src, size_t n, rl_err *e) {
  int i = st_writer_find(w, name);
  if (i < 0) return rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s' was not declared", w->path, name);
  if (n != w->t[i].nbytes)
    return rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s': %zu bytes given, %llu declared", w->path,
                   name, n, (unsigned long long)w->t[i].nbytes);
  return st_writer_write_part(w, i, 0, src, n, e);
}

/* fsync the directory that holds path, so a rename survives a crash. */
static int fsync_parent(const char *path) {
  char *copy = rl_xstrdup(path);
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(copy);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int st_writer_finish(st_writer *w, rl_err *e) {
  int rc = 0;
  if (w->fd < 0) rc = st_writer_begin(w, e);
  for (int i = 0; !rc && i < w->n; i++)
    if (w->t[i].written != w->t[i].nbytes)
      rc = rl_errf(e, RL_EXIT_FAIL, "%s: tensor '%s': %llu of %llu bytes written", w->path,
                   w->t[i].name, (unsigned long long)w->t[i].written,
                   (unsigned long long)w->t[i].nbytes);
  if (!rc && fsync(w->fd))
    rc = rl_errf(e, RL_EXIT_FAIL, "%s: fsync failed: %s", w->tmp, strerror(errno));
  if (w->fd >= 0 && close(w->fd) && !rc)
    rc = rl_errf(e, RL_EXIT_FAIL, "%s: close failed: %s", w->tmp, strerror(errno));
  w->fd = -1;
  if (!rc && rename(w->tmp, w->path))
    rc = rl_errf(e, RL_EXIT_FAIL, "%s: cannot rename into place: %s", w->path, strerror(errno));
  if (!rc && fsync_parent(w->path))
    rc = rl_errf(e, RL_EXIT_FAIL, "%s: cannot fsync its directory: %s", w->path, strerror(errno));
  if (rc) unlink(w->tmp);
  writer_free(w);
  return rc;
}

void st_writer_abort(st_writer *w) {
  if (!w) return;
  if (w->fd >= 0) close(w->fd);
  unlink(w->tmp);
  writer_free(w);
}

int st_write_atomic(const char *path, const void *data, size_t n, rl_err *e) {
  size_t tl = strlen(path) + 32;
  char *tmp = rl_xmalloc(tl);
  snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
  int rc = 0, fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    rc = rl_errf(e, RL_EXIT_FAIL, "%s: cannot create: %s", tmp, strerror(errno));
    free(tmp);
    return rc;
  }
  const char *p = data;
  size_t left = n;
  while (left && !rc) {
    ssize_t put = write(fd, p, left);
    if (put < 0 && errno == EINTR) continue;
    if (put <= 0) rc = rl_errf(e, RL_EXIT_FAIL, "%s: write failed: %s", tmp, strerror(errno));
    else p += put, left -= (size_t)put;
  }
  if (!rc && fsync(fd)) rc = rl_errf(e, RL_EXIT_FAIL, "%s: fsync failed: %s", tmp, strerror(errno));
  if (close(fd) && !rc) rc = rl_errf(e, RL_EXIT_FAIL, "%s: close failed: %s", tmp, strerror(errno));
  if (!rc && rename(tmp, path))
    rc = rl_errf(e, RL_EXIT_FAIL, "%s: cannot rename into place: %s", path, strerror(errno));
  if (!rc && fsync_parent(path))
    rc = rl_errf(e, RL_EXIT_FAIL, "%s: cannot fsync its directory: %s", path, strerror(errno));
  if (rc) unlink(tmp);
  free(tmp);
  return rc;
}
