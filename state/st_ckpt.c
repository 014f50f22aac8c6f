/* st_ckpt.c — the weights of a model directory as one set of tensors:
 * model.safetensors.index.json + shards, a single model.safetensors, or every
 * *.safetensors file; and writing the index of a sharded checkpoint. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "state/safetensors.h"

/* A tensor's home: file and index in that file's header. */
typedef struct ckpt_slot {
  const char *name; /* owned by the file's header */
  int file, idx;
} ckpt_slot;

struct st_ckpt {
  char *dir;
  st_file **files;
  int n_files;
  ckpt_slot *slots; /* open-addressing hash table by name */
  size_t cap;
  int n_tensors;
  uint64_t data_bytes;
};

/* FNV-1a of a name, for the table. */
static uint64_t name_hash(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static ckpt_slot *slot_lookup(const st_ckpt *c, const char *name) {
  size_t i = (size_t)name_hash(name) & (c->cap - 1);
  while (c->slots[i].name && strcmp(c->slots[i].name, name)) i = (i + 1) & (c->cap - 1);
  return &c->slots[i];
}

static char *path_join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = rl_xmalloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* Put every tensor of every file into the table; refuse a name held twice. */
static int ckpt_build_table(st_ckpt *c, rl_err *e) {
  size_t total = 0;
  for (int f = 0; f < c->n_files; f++) total += (size_t)st_file_header(c->files[f])->n_tensors;
  c->cap = 16;
  while (c->cap < 2 * total + 2) c->cap *= 2;
  c->slots = rl_xcalloc(c->cap, sizeof *c->slots);
  for (int f = 0; f < c->n_files; f++) {
    const st_header *h = st_file_header(c->files[f]);
    for (int i = 0; i < h->n_tensors; i++) {
      ckpt_slot *s = slot_lookup(c, h->tensors[i].name);
      if (s->name)
        return rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%s' is in both %s and %s", c->dir,
                       s->name, st_file_path(c->files[s->file]), st_file_path(c->files[f]));
      s->name = h->tensors[i].name, s->file = f, s->idx = i;
      c->n_tensors++;
      c->data_bytes += h->tensors[i].nbytes;
    }
  }
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Open the shards an index names and check index and shards agree. */
static int ckpt_open_index(st_ckpt *c, const char *ipath, rl_err *e) {
  json_error_t jerr;
  json_t *root = json_load_file(ipath, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return rl_errf(e, RL_EXIT_USAGE, "%s:%d:%d: not valid JSON: %s", ipath, jerr.line,
                   jerr.column, jerr.text);
  json_t *wm = json_object_get(root, "weight_map"), *md = json_object_get(root, "metadata");
  int rc = 0;
  if (!json_is_object(wm))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s: \"weight_map\" missing or not an object", ipath);
  else if (md && !json_is_object(md))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s: \"metadata\" is not an object", ipath);
  const char *name;
  json_t *v;
  /* Distinct shard names, sorted. */
  char **shards = rl_xcalloc(json_object_size(wm ? wm : root) + 1, sizeof(char *));
  int ns = 0;
  if (!rc) json_object_foreach(wm, name, v) {
      const char *s = json_string_value(v);
      if (!s || !*s || strchr(s, '/') || !strcmp(s, "..") || !strcmp(s, ".")) {
        rc = rl_errf(e, RL_EXIT_USAGE,
                     "%s: weight_map entry of tensor '%s' is not a file name in this directory",
                     ipath, name);
        break;
      }
      int seen = 0;
      for (int i = 0; i < ns && !seen; i++) seen = !strcmp(shards[i], s);
      if (!seen) shards[ns++] = (char *)s;
    }
  if (!rc && ns == 0) rc = rl_errf(e, RL_EXIT_USAGE, "%s: weight_map is empty", ipath);
  if (!rc) {
    qsort(shards, (size_t)ns, sizeof *shards, cmp_str);
    c->files = rl_xcalloc((size_t)ns, sizeof *c->files);
    for (int i = 0; i < ns && !rc; i++) {
      char *p = path_join(c->dir, shards[i]);
      struct stat st;
      if (stat(p, &st) != 0) {
        const char *first = "?";
        int count = 0;
        json_object_foreach(wm, name, v) if (!strcmp(json_string_value(v), shards[i])) {
          if (!count++) first = name;
        }
        rc = rl_errf(e, RL_EXIT_USAGE,
                     "%s: shard '%s' (holding tensor '%s' and %d others) is missing: the "
                     "checkpoint is incomplete; download or copy the missing file",
                     ipath, shards[i], first, count - 1);
      } else {
        rc = st_file_open(p, &c->files[i], e);
        if (!rc) c->n_files++;
      }
      free(p);
    }
  }
  if (!rc) rc = ckpt_build_table(c, e);
  if (!rc) json_object_foreach(wm, name, v) {
      ckpt_slot *s = slot_lookup(c, name);
      const char *want = json_string_value(v);
      if (!s->name) {
        rc = rl_errf(e, RL_EXIT_USAGE,
                     "%s: tensor '%s' is listed in shard '%s' but no shard holds it", ipath, name,
                     want);
        break;
      }
      const char *p = st_file_path(c->files[s->file]);
      const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
      if (strcmp(base, want)) {
        rc = rl_errf(e, RL_EXIT_USAGE, "%s: tensor '%s' is listed in '%s' but found in '%s'",
                     ipath, name, want, base);
        break;
      }
    }
  if (!rc && (size_t)c->n_tensors != json_object_size(wm)) {
    /* Some shard holds a tensor the index does not list: name it. */
    for (int f = 0; f < c->n_files && !rc; f++) {
      const st_header *h = st_file_header(c->files[f]);
      for (int i = 0; i < h->n_tensors && !rc; i++)
        if (!json_object_get(wm, h->tensors[i].name))
          rc = rl_errf(e, RL_EXIT_USAGE, "%s: holds tensor '%s' which %s does not list",
                       st_file_path(c->files[f]), h->tensors[i].name, ipath);
    }
  }
  json_t *ts = md ? json_object_get(md, "total_size") : NULL;
  if (!rc && ts && !json_is_integer(ts) && !json_is_real(ts))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s: metadata.total_size is not a number", ipath);
  free(shards);
  json_decref(root);
  return rc;
}

/* Every *.safetensors file of dir, sorted (a directory without an index). */
static int ckpt_open_glob(st_ckpt *c, rl_err *e) {
  DIR *d = opendir(c->dir);
  if (!d) return rl_errf(e, RL_EXIT_USAGE, "%s: cannot open directory: %s", c->dir, strerror(errno));
  char **names = NULL;
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    size_t l = strlen(de->d_name);
    if (l > 12 && !strcmp(de->d_name + l - 12, ".safetensors")) {
      names = rl_xrealloc(names, sizeof(char *) * (size_t)(n + 1));
      names[n++] = rl_xstrdup(de->d_name);
    }
  }
  closedir(d);
  int rc = 0;
  if (n == 0)
    rc = rl_errf(e, RL_EXIT_USAGE,
                 "%s: no *.safetensors weights (rlrun reads safetensors only; save the model "
                 "with save_pretrained(..., safe_serialization=True))",
                 c->dir);
  if (n) qsort(names, (size_t)n, sizeof *names, cmp_str);
  c->files = rl_xcalloc((size_t)(n ? n : 1), sizeof *c->files);
  for (int i = 0; i < n && !rc; i++) {
    char *p = path_join(c->dir, names[i]);
    rc = st_file_open(p, &c->files[i], e);
    if (!rc) c->n_files++;
    free(p);
  }
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
  return rc ? rc : ckpt_build_table(c, e);
}

int st_ckpt_open(const char *dir, st_ckpt **out, rl_err *e) {
  *out = NULL;
  st_ckpt *c = rl_xcalloc(1, sizeof *c);
  c->dir = rl_xstrdup(dir);
  char *ipath = path_join(dir, ST_INDEX_NAME), *spath = path_join(dir, ST_SINGLE_NAME);
  struct stat st;
  int rc;
  if (stat(ipath, &st) == 0) {
    if (!S_ISREG(st.st_mode)) /* json_load_file read a directory as empty text: "'[' or '{' expected" */
      rc = rl_errf(e, RL_EXIT_USAGE, "%s is %s, not the index file of a sharded checkpoint; replace it with the file "
                   "or remove it", ipath, rl_file_kind(st.st_mode));
    else rc = ckpt_open_index(c, ipath, e);
  } else if (stat(spath, &st) == 0) {
    c->files = rl_xcalloc(1, sizeof *c->files);
    rc = st_file_open(spath, &c->files[0], e);
    if (!rc) c->n_files = 1, rc = ckpt_build_table(c, e);
  } else {
    rc = ckpt_open_glob(c, e);
  }
  free(ipath);
  free(spath);
  if (rc) {
    st_ckpt_close(c);
    return rc;
  }
  *out = c;
  return 0;
}

void st_ckpt_close(st_ckpt *c) {
  if (!c) return;
  for (int i = 0; i < c->n_files; i++) st_file_close(c->files[i]);
  free(c->files);
  free(c->slots);
  free(c->dir);
  free(c);
}

int st_ckpt_n_files(const st_ckpt *c) { return c->n_files; }
st_file *st_ckpt_file(const st_ckpt *c, int i) { return c->files[i]; }
int st_ckpt_n_tensors(const st_ckpt *c) { return c->n_tensors; }
uint64_t st_ckpt_data_bytes(const st_ckpt *c) { return c->data_bytes; }

st_file *st_ckpt_find(const st_ckpt *c, const char *name, const st_tensor **t) {
  ckpt_slot *s = slot_lookup(c, name);
  if (!s->name) {
    if (t) *t = NULL;
    return NULL;
  }
  if (t) *t = &st_file_header(c->files[s->file])->tensors[s->idx];
  return c->files[s->file];
}

int st_index_write(const char *dir, int n, const char *const *names, const char *const *files,
                   uint64_t total_size, rl_err *e) {
  json_t *root = json_object(), *md = json_object(), *wm = json_object();
  json_object_set_new(md, "total_size", json_integer((json_int_t)total_size));
  json_object_set_new(root, "metadata", md);
  for (int i = 0; i < n; i++) json_object_set_new(wm, names[i], json_string(files[i]));
  json_object_set_new(root, "weight_map", wm);
  char *txt = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(root);
  if (!txt) return rl_errf(e, RL_EXIT_FAIL, "%s: cannot encode the index", dir);
  size_t l = strlen(txt);
  txt = rl_xrealloc(txt, l + 2);
  txt[l] = '\n', txt[l + 1] = 0;
  char *p = path_join(dir, ST_INDEX_NAME);
  int rc = st_write_atomic(p, txt, l + 1, e);
  free(p);
  free(txt);
  return rc;
}
