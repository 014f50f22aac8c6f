/* test_safetensors.c — the safetensors reader and writer against files the
 * pip `safetensors` library writes (tests/oracle/ci_safetensors.py) and reads
 * (tests/oracle/check_st.py), and the catalogue of corrupt files. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "state/safetensors.h"
#include "state/sha256.h"

static char out[1 << 16];

/* Path of a fixture under $RLRUN_FIXTURES/safetensors. */
static const char *fixture(const char *name) {
  static char p[4][1024];
  static int k;
  const char *d = getenv("RLRUN_FIXTURES");
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/safetensors/%s", d && *d ? d : "build/fixtures", name);
  return p[k];
}

/* Hex sha256 of n bytes. */
static void hexsha(const void *d, size_t n, char hex[65]) {
  uint8_t dg[32];
  sha256_buf(d, n, dg);
  sha256_hex(dg, hex);
}

/* Every tensor of a manifest (name -> dtype, shape, sha256) as c holds it,
 * read both with pread and through the mapping. */
static void check_manifest(st_ckpt *c, const char *manifest) {
  json_error_t je;
  json_t *m = json_load_file(manifest, 0, &je);
  CHECK_MSG(m != NULL, "cannot load %s: %s", manifest, je.text);
  if (!m) return;
  CHECK_EQ_I64(st_ckpt_n_tensors(c), json_object_size(m));
  const char *name;
  json_t *v;
  json_object_foreach(m, name, v) {
    const st_tensor *t;
    st_file *f = st_ckpt_find(c, name, &t);
    CHECK_MSG(f != NULL, "tensor '%s' not found", name);
    if (!f) continue;
    CHECK_STREQ(st_dtype_name(t->dtype), json_string_value(json_object_get(v, "dtype")));
    json_t *sh = json_object_get(v, "shape");
    CHECK_EQ_I64(t->ndim, json_array_size(sh));
    for (int d = 0; d < t->ndim; d++) CHECK_EQ_I64(t->shape[d], json_integer_value(json_array_get(sh, d)));
    void *buf = rl_xmalloc(t->nbytes + 1);
    rl_err e;
    CHECK_EQ_I64(st_file_read(f, t, buf, &e), 0);
    char hex[65];
    hexsha(buf, t->nbytes, hex);
    CHECK_STREQ(hex, json_string_value(json_object_get(v, "sha256")));
    const void *mp = st_file_data(f, t, &e);
    CHECK(mp != NULL && memcmp(mp, buf, t->nbytes) == 0);
    st_file_release(f, t);
    free(buf);
  }
  json_decref(m);
}

TEST(st_reads_python_single_file) {
  st_ckpt *c = NULL;
  rl_err e;
  /* A lone file: open it as a one-file checkpoint through a directory of its own. */
  char dir[700], cmd[2048];
  snprintf(dir, sizeof dir, "%s/one", harness_tmpdir());
  snprintf(cmd, sizeof cmd, "mkdir -p %s && cp %s %s/model.safetensors", dir,
           fixture("single.safetensors"), dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  REQUIRE(st_ckpt_open(dir, &c, &e) == 0);
  check_manifest(c, fixture("single.manifest.json"));
  st_file *f = st_ckpt_file(c, 0);
  CHECK_STREQ(st_file_meta(f, "format"), "pt");
  CHECK_STREQ(st_file_meta(f, "note"), "x");
  CHECK(st_file_meta(f, "absent") == NULL);
  const st_tensor *t = st_file_find(f, "f32");
  REQUIRE(t != NULL);
  float v[24];
  CHECK_EQ_I64(st_file_read(f, t, v, &e), 0);
  CHECK_NEAR(v[5], -0.5, 0);
  CHECK_NEAR(v[23], 8.5, 0);
  t = st_file_find(f, "scalar");
  REQUIRE(t != NULL);
  CHECK_EQ_I64(t->ndim, 0);
  CHECK_EQ_I64(t->numel, 1);
  t = st_file_find(f, "empty");
  REQUIRE(t != NULL);
  CHECK_EQ_I64(t->numel, 0);
  CHECK_EQ_I64(t->nbytes, 0);
  CHECK(st_file_find(f, "weird name/with \"quotes\" and ünïcode") != NULL);
  st_ckpt_close(c);
}

TEST(st_reads_python_sharded_checkpoint) {
  st_ckpt *c = NULL;
  rl_err e;
  REQUIRE(st_ckpt_open(fixture("tiny_qwen3"), &c, &e) == 0);
  CHECK_EQ_I64(st_ckpt_n_files(c), 2);
  check_manifest(c, fixture("tiny_qwen3.manifest.json"));
  /* total_size of the library-written index = the bytes of all tensors. */
  char ip[1024];
  snprintf(ip, sizeof ip, "%s/" ST_INDEX_NAME, fixture("tiny_qwen3"));
  json_t *idx = json_load_file(ip, 0, NULL);
  REQUIRE(idx != NULL);
  CHECK_EQ_U64(st_ckpt_data_bytes(c),
               json_integer_value(json_object_get(json_object_get(idx, "metadata"), "total_size")));
  json_decref(idx);
  st_ckpt_close(c);
  REQUIRE(st_ckpt_open(fixture("tiny_qwen3_moe"), &c, &e) == 0);
  CHECK_EQ_I64(st_ckpt_n_files(c), 1);
  check_manifest(c, fixture("tiny_qwen3_moe.manifest.json"));
  st_ckpt_close(c);
}

/* Write a small file with mixed element sizes, declared smallest first. */
static int write_mixed(const char *path, rl_err *e) {
  st_writer *w = st_writer_new(path);
  int64_t s3[1] = {3}, s23[2] = {2, 3}, s0[1] = {0};
  uint8_t u8[3] = {1, 2, 3};
  uint16_t bf[6] = {0x3f80, 0xbf80, 0x4000, 0, 0x7f80, 0x0001};
  double f64[3] = {1.5, -2.0, 1e-300};
  int64_t i64[3] = {-1, 0, 1LL << 40};
  int rc = st_writer_meta(w, "format", "pt", e);
  if (!rc) rc = st_writer_add(w, "a.u8", ST_U8, 1, s3, e);
  if (!rc) rc = st_writer_add(w, "b.bf16", ST_BF16, 2, s23, e);
  if (!rc) rc = st_writer_add(w, "c.f64", ST_F64, 1, s3, e);
  if (!rc) rc = st_writer_add(w, "d.i64", ST_I64, 1, s3, e);
  if (!rc) rc = st_writer_add(w, "e.empty", ST_F32, 1, s0, e);
  if (!rc) rc = st_writer_begin(w, e);
  if (!rc) rc = st_writer_write(w, "d.i64", i64, sizeof i64, e);
  if (!rc) rc = st_writer_write(w, "a.u8", u8, 3, e);
  if (!rc) rc = st_writer_write_part(w, st_writer_find(w, "b.bf16"), 6, bf + 3, 6, e);
  if (!rc) rc = st_writer_write_part(w, st_writer_find(w, "b.bf16"), 0, bf, 6, e);
  if (!rc) rc = st_writer_write(w, "c.f64", f64, sizeof f64, e);
  if (!rc) rc = st_writer_write(w, "e.empty", NULL, 0, e);
  if (rc) {
    st_writer_abort(w);
    return rc;
  }
  return st_writer_finish(w, e);
}

TEST(st_writer_aligned_atomic_and_python_reads_it) {
  char path[700], cmd[1600];
  snprintf(path, sizeof path, "%s/mixed.safetensors", harness_tmpdir());
  rl_err e;
  REQUIRE(write_mixed(path, &e) == 0);
  /* No temporary file left behind. */
  snprintf(cmd, sizeof cmd, "ls %s", harness_tmpdir());
  harness_run(cmd, out, sizeof out);
  CHECK_STREQ(out, "mixed.safetensors\n");
  st_file *f;
  REQUIRE(st_file_open(path, &f, &e) == 0);
  const st_header *h = st_file_header(f);
  CHECK_EQ_I64(h->data_start % 8, 0);
  CHECK_EQ_I64(h->n_tensors, 5);
  for (int i = 0; i < h->n_tensors; i++)
    CHECK_MSG((h->data_start + h->tensors[i].begin) % st_dtype_size(h->tensors[i].dtype) == 0,
              "tensor %s misaligned", h->tensors[i].name);
  const st_tensor *t = st_file_find(f, "b.bf16");
  uint16_t bf[6];
  REQUIRE(t != NULL);
  CHECK_EQ_I64(st_file_read(f, t, bf, &e), 0);
  CHECK_EQ_U64(bf[4], 0x7f80);
  CHECK_EQ_U64(bf[5], 0x0001);
  st_file_close(f);
  /* The pip library opens it and reads the same bytes. */
  snprintf(cmd, sizeof cmd, "'%s' tests/oracle/check_st.py dump %s", harness_python(), path);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), 0);
  uint8_t u8[3] = {1, 2, 3};
  uint16_t bfw[6] = {0x3f80, 0xbf80, 0x4000, 0, 0x7f80, 0x0001};
  char hex[65], line[256];
  hexsha(u8, 3, hex);
  snprintf(line, sizeof line, "a.u8|U8|3|%s\n", hex);
  CHECK_CONTAINS(out, line);
  hexsha(bfw, 12, hex);
  snprintf(line, sizeof line, "b.bf16|BF16|2,3|%s\n", hex);
  CHECK_CONTAINS(out, line);
  hexsha("", 0, hex);
  snprintf(line, sizeof line, "e.empty|F32|0|%s\n", hex);
  CHECK_CONTAINS(out, line);
  CHECK_CONTAINS(out, "meta format=pt");
}

TEST(st_writer_refuses_incomplete_and_abort_leaves_nothing) {
  char path[700], cmd[800];
  snprintf(path, sizeof path, "%s/x.safetensors", harness_tmpdir());
  rl_err e;
  st_writer *w = st_writer_new(path);
  int64_t s[1] = {4};
  REQUIRE(st_writer_add(w, "t", ST_F32, 1, s, &e) == 0);
  CHECK_EQ_I64(st_writer_add(w, "t", ST_F32, 1, s, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "'t' used twice");
  REQUIRE(st_writer_begin(w, &e) == 0);
  float v[2] = {1, 2};
  REQUIRE(st_writer_write_part(w, 0, 0, v, 8, &e) == 0);
  CHECK_EQ_I64(st_writer_write_part(w, 0, 12, v, 8, &e), RL_EXIT_FAIL);
  CHECK_EQ_I64(st_writer_finish(w, &e), RL_EXIT_FAIL);
  CHECK_CONTAINS(e.msg, "tensor 't': 8 of 16 bytes written");
  snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", harness_tmpdir());
  harness_run(cmd, out, sizeof out);
  CHECK_STREQ(out, "0\n");
  w = st_writer_new(path);
  REQUIRE(st_writer_add(w, "t", ST_F32, 1, s, &e) == 0);
  REQUIRE(st_writer_begin(w, &e) == 0);
  st_writer_abort(w);
  harness_run(cmd, out, sizeof out);
  CHECK_STREQ(out, "0\n");
}

/* ------------------------------------------------------------------ the corrupt catalogue */

/* A file: 8-byte length (hlen, or strlen(json) when hlen is 0), the JSON, data_len zero bytes. */
static void write_raw(const char *path, const char *json, uint64_t hlen, size_t data_len) {
  FILE *f = fopen(path, "wb");
  if (!f) return;
  uint64_t n = hlen ? hlen : strlen(json);
  uint8_t pre[8];
  for (int i = 0; i < 8; i++) pre[i] = (uint8_t)(n >> (8 * i));
  fwrite(pre, 1, 8, f);
  fwrite(json, 1, strlen(json), f);
  for (size_t i = 0; i < data_len; i++) fputc(0, f);
  fclose(f);
}

/* Open path; it must fail with RL_EXIT_USAGE, naming the file and containing each needle. */
static void expect_refused(const char *path, const char *n1, const char *n2) {
  st_file *f = NULL;
  rl_err e;
  rl_err_clear(&e);
  int rc = st_file_open(path, &f, &e);
  CHECK_MSG(rc == RL_EXIT_USAGE, "%s: expected refusal, got %d", path, rc);
  if (f) st_file_close(f);
  CHECK_CONTAINS(e.msg, path);
  if (n1) CHECK_CONTAINS(e.msg, n1);
  if (n2) CHECK_CONTAINS(e.msg, n2);
}

TEST(st_corrupt_catalogue_refused_with_clear_errors) {
  char p[800];
  const char *d = harness_tmpdir();
  rl_err e;
  /* truncated: a valid file cut short names its last tensor. */
  snprintf(p, sizeof p, "%s/truncated.safetensors", d);
  REQUIRE(write_mixed(p, &e) == 0);
  struct stat st;
  REQUIRE(stat(p, &st) == 0);
  REQUIRE(truncate(p, st.st_size - 2) == 0);
  expect_refused(p, "tensor 'a.u8'", "truncated");
  snprintf(p, sizeof p, "%s/tiny.safetensors", d);
  write_raw(p, "", 0, 0);
  REQUIRE(truncate(p, 5) == 0);
  expect_refused(p, "shorter than the 8-byte header length", NULL);
  /* header lies about offsets: the tensor runs past the data. */
  snprintf(p, sizeof p, "%s/lies.safetensors", d);
  write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", 0, 16);
  expect_refused(p, "tensor 'w'", "run past the end of the data (16 bytes)");
  /* overlapping tensors. */
  snprintf(p, sizeof p, "%s/overlap.safetensors", d);
  write_raw(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 0, 24);
  expect_refused(p, "tensors 'a' [0, 16] and 'b' [8, 24] overlap", NULL);
  /* a hole between tensors, and trailing bytes. */
  snprintf(p, sizeof p, "%s/hole.safetensors", d);
  write_raw(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}", 0, 12);
  expect_refused(p, "[4, 8) before tensor 'b' belong to no tensor", NULL);
  snprintf(p, sizeof p, "%s/trailing.safetensors", d);
  write_raw(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 0, 9);
  expect_refused(p, "trailing bytes after tensor 'a'", NULL);
  /* huge header length, and one longer than the file. */
  snprintf(p, sizeof p, "%s/huge.safetensors", d);
  write_raw(p, "{}", 0xFFFFFFFFFFFFFFF0ull, 0);
  expect_refused(p, "header length 18446744073709551600 exceeds the limit", NULL);
  snprintf(p, sizeof p, "%s/longhdr.safetensors", d);
  write_raw(p, "{}", 1000, 0);
  expect_refused(p, "header length 1000 but only 2 bytes follow", "truncated");
  /* wrong dtype size: F32 [3] needs 12 bytes, the offsets hold 6 (as if BF16). */
  snprintf(p, sizeof p, "%s/dtype.safetensors", d);
  write_raw(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,6]}}", 0, 6);
  expect_refused(p, "tensor 'w'", "does not match data_offsets [0, 6] (6 bytes)");
  /* unknown dtype, bad JSON, duplicate names, not an object, bad shapes. */
  snprintf(p, sizeof p, "%s/unk.safetensors", d);
  write_raw(p, "{\"w\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1);
  expect_refused(p, "tensor 'w': unknown dtype 'F7'", NULL);
  snprintf(p, sizeof p, "%s/json.safetensors", d);
  write_raw(p, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],}}", 0, 1);
  expect_refused(p, "header is not valid JSON", NULL);
  snprintf(p, sizeof p, "%s/dup.safetensors", d);
  write_raw(p, "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
               "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1);
  expect_refused(p, "duplicate", NULL);
  snprintf(p, sizeof p, "%s/notobj.safetensors", d);
  write_raw(p, "[1, 2]", 0, 0);
  expect_refused(p, "does not start with '{'", NULL);
  snprintf(p, sizeof p, "%s/neg.safetensors", d);
  write_raw(p, "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 0, 1);
  expect_refused(p, "tensor 'w': shape[0] is not a non-negative integer", NULL);
  snprintf(p, sizeof p, "%s/overflow.safetensors", d);
  write_raw(p, "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 0, 8);
  expect_refused(p, "tensor 'w': shape × F64", NULL);
  snprintf(p, sizeof p, "%s/meta.safetensors", d);
  write_raw(p, "{\"__metadata__\":{\"k\":1}}", 0, 0);
  expect_refused(p, "__metadata__ value of 'k' is not a string", NULL);
}

TEST(st_corrupt_checkpoints_missing_shard_and_index_mismatch) {
  const char *d = harness_tmpdir();
  char cmd[4096], dir[800];
  snprintf(dir, sizeof dir, "%s/ck", d);
  snprintf(cmd, sizeof cmd, "cp -r %s %s && rm %s/model-00002-of-00002.safetensors",
           fixture("tiny_qwen3"), dir, dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  st_ckpt *c = NULL;
  rl_err e;
  CHECK_EQ_I64(st_ckpt_open(dir, &c, &e), RL_EXIT_USAGE);
  CHECK(c == NULL);
  CHECK_CONTAINS(e.msg, "model.safetensors.index.json: shard 'model-00002-of-00002.safetensors' "
                        "(holding tensor 'lm_head.weight' and 23 others) is missing");
  /* The command says the same and exits 2. */
  snprintf(cmd, sizeof cmd, "%s convert --in %s --out %s/o --to fp8-block", harness_bin(), dir, d);
  CHECK_EQ_I64(harness_run(cmd, out, sizeof out), RL_EXIT_USAGE);
  CHECK_CONTAINS(out, "is missing: the checkpoint is incomplete");
  /* The index names a tensor no shard holds / a shard holds one the index lacks. */
  snprintf(cmd, sizeof cmd,
           "rm -r %s && cp -r %s %s && sed -i 's/\"lm_head.weight\"/\"lm_head.weigh\"/' "
           "%s/model.safetensors.index.json",
           dir, fixture("tiny_qwen3"), dir, dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  CHECK_EQ_I64(st_ckpt_open(dir, &c, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "tensor 'lm_head.weigh' is listed in shard 'model-00002-of-00002.safetensors' "
                        "but no shard holds it");
  /* A corrupt shard: the error names that file. */
  snprintf(cmd, sizeof cmd, "rm -r %s && cp -r %s %s && truncate -s -1 %s/model-00001-of-00002.safetensors",
           dir, fixture("tiny_qwen3"), dir, dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  CHECK_EQ_I64(st_ckpt_open(dir, &c, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "model-00001-of-00002.safetensors: tensor '");
  CHECK_CONTAINS(e.msg, "truncated");
  /* No weights at all. */
  snprintf(cmd, sizeof cmd, "rm -r %s && mkdir %s", dir, dir);
  REQUIRE(harness_run(cmd, out, sizeof out) == 0);
  CHECK_EQ_I64(st_ckpt_open(dir, &c, &e), RL_EXIT_USAGE);
  CHECK_CONTAINS(e.msg, "no *.safetensors weights");
}
