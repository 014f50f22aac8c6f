/* prompts.c — prompt sources (JSONL, Lua task) and the deterministic data
 * cursor (contract in prompts.h). */
#include "stages/prompts.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/formats.h"
#include "lua/host.h"
#include "stages/tokenizer.h"

#define PROMPTS_KEY_TAG 0x64617461u /* "data": the cursor's own Philox stream */
#define PROMPTS_ROUNDS 6

struct prompt_source {
  int is_task;
  int shuffle;
  char *tmpl; /* data.prompt_template or NULL */
  /* JSONL */
  char *path;
  int64_t n;
  char **text, **extra;
  int64_t *line; /* the 1-based line of each prompt */
  /* task */
  luahost *lua;
};

/* One Feistel round function value: h bits from (seed, epoch, round, half). */
static uint32_t prompts_round(uint64_t seed, uint64_t epoch, uint32_t round, uint32_t half, uint32_t mask) {
  const uint32_t ctr[4] = {half, round, (uint32_t)epoch, (uint32_t)(epoch >> 32)};
  const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32) ^ PROMPTS_KEY_TAG};
  uint32_t x[4];
  qf_philox4x32(ctr, key, x);
  return x[0] & mask;
}

/* perm(seed, epoch) on [0, n): a Feistel bijection on [0, 4^h) ⊇ [0, n),
 * walked until it lands inside [0, n) (a bijection again). */
static int64_t prompts_permute(uint64_t seed, uint64_t epoch, int64_t n, int64_t o) {
  int h = 1;
  while (h < 31 && ((int64_t)1 << (2 * h)) < n) h++;
  uint32_t mask = (uint32_t)(((uint64_t)1 << h) - 1);
  uint64_t x = (uint64_t)o;
  do {
    uint32_t l = (uint32_t)(x >> h), r = (uint32_t)x & mask;
    for (uint32_t k = 0; k < PROMPTS_ROUNDS; k++) {
      uint32_t nl = r;
      r = l ^ prompts_round(seed, epoch, k, r, mask);
      l = nl;
    }
    x = (uint64_t)l << h | r;
  } while (x >= (uint64_t)n);
  return (int64_t)x;
}

int64_t prompts_cursor_index(uint64_t seed, int shuffle, int64_t n, int64_t g) {
  int64_t epoch = g / n, o = g % n;
  return shuffle ? prompts_permute(seed, (uint64_t)epoch, n, o) : o;
}

/* ---------------------------------------------------------------- JSONL */

/* Prefix e's message with `what`, dropping the tokenizer's own "tokenizer: ". */
static void tok_err(rl_err *e, const char *what) {
  const char *t = "tokenizer: ";
  if (!strncmp(e->msg, t, strlen(t))) memmove(e->msg, e->msg + strlen(t), strlen(e->msg + strlen(t)) + 1);
  rl_err_prefix(e, "%s", what);
}

/* The lines of a JSONL file, streamed: a UTF-8 BOM at the start is skipped
 * (as in a YAML recipe), blank lines (spaces, tabs, CR) are skipped but
 * counted, so line numbers are the editor's. */
typedef struct jsonl_reader {
  FILE *f;
  char *line;
  size_t cap;
  int64_t lineno;
  int err; /* errno of a read error */
} jsonl_reader;

static int jsonl_open(jsonl_reader *rd, const char *path, rl_err *e) {
  memset(rd, 0, sizeof *rd);
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO is refused, not waited on */
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    return rl_errf(e, RL_EXIT_USAGE, "data.prompts: %s: cannot open: %s", path, strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return rl_errf(e, RL_EXIT_USAGE, "data.prompts: %s: is not a regular file (%s): give a JSONL file", path,
                   rl_file_kind(st.st_mode));
  }
  rd->f = fdopen(fd, "rb");
  if (!rd->f) {
    int err = errno;
    close(fd);
    return rl_errf(e, RL_EXIT_USAGE, "data.prompts: %s: cannot open: %s", path, strerror(err));
  }
  return 0;
}

/* The next non-blank line (*len bytes, CR/LF cut); 0 at the end, -1 on a read error. */
static int jsonl_next(jsonl_reader *rd, const char **text, size_t *len) {
  for (;;) {
    errno = 0;
    ssize_t n = getline(&rd->line, &rd->cap, rd->f);
    if (n < 0 && ferror(rd->f)) rd->err = errno ? errno : EIO;
    if (n < 0) return ferror(rd->f) ? -1 : 0;
    char *p = rd->line;
    if (++rd->lineno == 1 && n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3, n -= 3;
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r')) n--;
    ssize_t k = 0;
    while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
    if (k == n) continue;
    *text = p;
    *len = (size_t)n;
    return 1;
  }
}

static void jsonl_close(jsonl_reader *rd) {
  if (rd->f) fclose(rd->f);
  free(rd->line);
  memset(rd, 0, sizeof *rd);
}

/* How many objects and arrays hold the deepest value of j (j itself: 0), or
 * any number over limit once one is found deeper than that. */
static int json_depth(json_t *j, int limit) {
  int d = 0;
  size_t i;
  const char *k;
  json_t *v;
  if (json_is_object(j)) {
    json_object_foreach(j, k, v) {
      int c = 1 + json_depth(v, limit - 1);
      if (c > d) d = c;
      if (d > limit) break;
    }
  } else if (json_is_array(j)) {
    json_array_foreach(j, i, v) {
      int c = 1 + json_depth(v, limit - 1);
      if (c > d) d = c;
      if (d > limit) break;
    }
  }
  return d;
}

/* Parse one line into *obj (a JSON object with the string field pkey);
 * errors "FILE:LINE[:COL]: what" (RL_EXIT_USAGE). */
static int jsonl_parse(const char *path, const char *line, size_t len, int64_t lineno, const char *pkey,
                       json_t **obj, rl_err *e) {
  *obj = NULL;
  const char *nul = memchr(line, 0, len);
  if (nul) { /* jansson would stop there and call the rest "end of file expected" */
    int col = 1;
    for (const char *q = line; q < nul; q++) col += ((unsigned char)*q & 0xC0) != 0x80;
    return rl_errf(e, RL_EXIT_USAGE, "%s:%lld:%d: NUL byte: a JSONL file is UTF-8 text, one JSON object per line "
                   "(remove the NUL bytes)", path, (long long)lineno, col);
  }
  json_error_t je;
  json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
  if (!j && strstr(je.text, "JSON_ALLOW_NUL")) /* jansson refuses "\u0000"; say it in the user's words */
    return rl_errf(e, RL_EXIT_USAGE, "%s:%lld:%d: a string holds \\u0000 (a NUL character): prompts and their "
                   "fields are text without NUL", path, (long long)lineno, je.column > 0 ? je.column : 1);
  if (!j)
    return rl_errf(e, RL_EXIT_USAGE, "%s:%lld:%d: not valid JSON: %s (one JSON object per line)", path,
                   (long long)lineno, je.column > 0 ? je.column : 1, je.text);
  int rc = 0;
  json_t *p = json_object_get(j, pkey);
  if (!json_is_object(j))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%lld: expected a JSON object {\"%s\": \"...\", ...}, got %s", path,
                 (long long)lineno, pkey, json_is_array(j) ? "an array" : "a scalar");
  else if (!p)
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%lld: no field \"%s\": each line needs the prompt there (data.prompt_key)",
                 path, (long long)lineno, pkey);
  else if (!json_is_string(p))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%lld: field \"%s\" must be a string (the prompt text)", path,
                 (long long)lineno, pkey);
  else if (json_string_length(p) == 0) /* the model would start from BOS alone, or (no BOS) from nothing */
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%lld: field \"%s\" is empty: a prompt is the text the model continues; "
                 "fill it in or remove the line", path, (long long)lineno, pkey);
  else if (json_depth(j, LUAHOST_MAX_JSON_DEPTH) > LUAHOST_MAX_JSON_DEPTH)
    /* Found here, not when the reward stage builds the sample (exit 1 blaming the script, every resume) */
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%lld: nested too deep: a value sits inside more than %d objects and arrays "
                 "(the line's own counted), more than a Lua hook's sample can hold: flatten the line", path,
                 (long long)lineno, LUAHOST_MAX_JSON_DEPTH);
  if (rc) return json_decref(j), rc;
  *obj = j;
  return 0;
}

/* Take the next prompt from a parsed line (consumes j). */
static void jsonl_add(prompt_source *s, json_t *j, int64_t lineno, const char *pkey, const char *akey,
                      int64_t *cap) {
  if (s->n == *cap) {
    *cap = *cap ? 2 * *cap : 256;
    s->text = rl_xrealloc(s->text, (size_t)*cap * sizeof *s->text);
    s->extra = rl_xrealloc(s->extra, (size_t)*cap * sizeof *s->extra);
    s->line = rl_xrealloc(s->line, (size_t)*cap * sizeof *s->line);
  }
  s->text[s->n] = rl_xstrdup(json_string_value(json_object_get(j, pkey)));
  /* data.prompt_key's field stays a field of its own (the prompt as written, before data.prompt_template),
   * as answer_key's does; "prompt" itself is the sample's prompt */
  if (!strcmp(pkey, "prompt")) json_object_del(j, pkey);
  json_t *a = json_object_get(j, akey);
  if (strcmp(akey, "answer") != 0) { /* sample.answer is data.answer_key's field, or nothing: never the line's own "answer" */
    if (a) json_object_set(j, "answer", a);
    else json_object_del(j, "answer");
  }
  char *dump = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  s->extra[s->n] = dump ? dump : rl_xstrdup("{}");
  s->line[s->n++] = lineno;
  json_decref(j);
}

int prompts_open_jsonl(const char *path, const char *prompt_key, const char *answer_key,
                       prompt_source **out, rl_err *e) {
  *out = NULL;
  jsonl_reader rd;
  if (jsonl_open(&rd, path, e)) return e->code;
  prompt_source *s = rl_xcalloc(1, sizeof *s);
  s->path = rl_xstrdup(path);
  s->shuffle = 1;
  const char *pkey = prompt_key ? prompt_key : "prompt", *akey = answer_key ? answer_key : "answer";
  int64_t cap = 0;
  int rc = 0, got;
  const char *line;
  size_t len;
  while (!rc && (got = jsonl_next(&rd, &line, &len)) > 0) {
    json_t *j;
    if (!(rc = jsonl_parse(path, line, len, rd.lineno, pkey, &j, e))) jsonl_add(s, j, rd.lineno, pkey, akey, &cap);
  }
  if (!rc && got < 0) rc = rl_errf(e, RL_EXIT_FAIL, "data.prompts: %s: read error after line %lld: %s", path,
                                       (long long)rd.lineno, strerror(rd.err));
  jsonl_close(&rd);
  if (!rc && s->n == 0)
    rc = rl_errf(e, RL_EXIT_USAGE, "%s: no prompts (the file has no JSON lines): add one object per line", path);
  if (rc) return prompts_close(s), rc;
  *out = s;
  return 0;
}

int prompts_check_item(const prompts_limits *l, const char *text, const char *extra_json, rl_err *e) {
  const char *target = NULL;
  json_t *o = NULL;
  int rc = 0;
  if (l->target_field) {
    json_error_t je;
    o = json_loads(extra_json ? extra_json : "{}", 0, &je);
    target = json_string_value(json_object_get(o, l->target_field));
    if (!target)
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "no string field \"%s\" (the target text): train.algorithm sft needs {\"prompt\": \"...\", "
                   "\"%s\": \"...\"}", l->target_field, l->target_field);
  }
  const tokenizer *tok = l->tok;
  int32_t *ids = NULL;
  int64_t np = 0, nt = 0;
  if (!rc && tok) {
    char *full = prompts_apply_template(l->tmpl, text); /* as the model will see it */
    rc = tokenizer_encode(tok, full, strlen(full), &ids, &np, e);
    free(ids), free(full);
    ids = NULL;
    if (rc) tok_err(e, l->tmpl ? "the prompt in data.prompt_template: " : "the prompt: ");
  }
  if (!rc && tok && target) {
    rc = tokenizer_encode(tok, target, strlen(target), &ids, &nt, e);
    free(ids);
    if (rc) {
      char what[96];
      snprintf(what, sizeof what, "field \"%s\": ", l->target_field);
      tok_err(e, what);
    }
  }
  if (!rc && tok) {
    int64_t bos = tok->bos >= 0, eos = tok->eos >= 0;
    if (l->max_prompt_tokens > 0 && np + bos > l->max_prompt_tokens)
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "the prompt%s is %lld tokens%s, more than rollout.max_prompt_tokens (%lld): shorten it "
                   "or raise rollout.max_prompt_tokens", l->tmpl ? " in data.prompt_template" : "", (long long)(np + bos),
                   bos ? " (with BOS)" : "", (long long)l->max_prompt_tokens);
    else if (l->max_seq_tokens > 0 && target && np + bos + nt + eos > l->max_seq_tokens)
      rc = rl_errf(e, RL_EXIT_USAGE,
                   "prompt + %s are %lld + %lld tokens (%s), more than the model's "
                   "%lld positions: shorten them or raise model.init.max_seq_len", l->target_field,
                   (long long)(np + bos), (long long)(nt + eos),
                   bos && eos ? "prompt with BOS, target with EOS" : bos ? "prompt with BOS" : eos ? "target with EOS" : "no BOS, no EOS",
                   (long long)l->max_seq_tokens);
  }
  json_decref(o);
  return rc;
}

int64_t prompts_check_jsonl(const char *path, const char *prompt_key, const prompts_limits *l,
                            void (*bad)(void *ud, const char *msg), void *ud, int64_t *n_prompts) {
  if (n_prompts) *n_prompts = 0;
  rl_err e;
  jsonl_reader rd;
  if (jsonl_open(&rd, path, &e)) {
    bad(ud, e.msg + strlen("data.prompts: "));
    return 1;
  }
  const char *pkey = prompt_key ? prompt_key : "prompt";
  int64_t n = 0, n_bad = 0;
  int got;
  const char *line;
  size_t len;
  while ((got = jsonl_next(&rd, &line, &len)) > 0) {
    json_t *j;
    int rc = jsonl_parse(path, line, len, rd.lineno, pkey, &j, &e);
    if (!rc) {
      n++;
      json_t *p = json_object_get(j, pkey);
      char *extra = l && l->target_field ? json_dumps(j, JSON_COMPACT) : NULL;
      if (l && (rc = prompts_check_item(l, json_string_value(p), extra, &e)))
        rl_err_prefix(&e, "%s:%lld: ", path, (long long)rd.lineno);
      free(extra);
      json_decref(j);
    }
    if (rc) n_bad++, bad(ud, e.msg);
  }
  if (got < 0) {
    snprintf(e.msg, sizeof e.msg, "%s: read error after line %lld: %s", path, (long long)rd.lineno,
             strerror(rd.err));
    bad(ud, e.msg), n_bad++;
  } else if (n == 0 && n_bad == 0) {
    snprintf(e.msg, sizeof e.msg, "%s: no prompts (the file has no JSON lines): add one object per line", path);
    bad(ud, e.msg), n_bad++;
  }
  jsonl_close(&rd);
  if (n_prompts) *n_prompts = n;
  return n_bad;
}

int prompts_open_task(const char *path, const luahost_limits *lim, prompt_source **out, rl_err *e) {
  *out = NULL;
  luahost *h = luahost_open(path, lim, e);
  if (!h) return rl_err_prefix(e, "data.task: ");
  if (!luahost_has(h, "prompts")) {
    luahost_close(h);
    return rl_errf(e, RL_EXIT_USAGE, "%s: the task script defines no function prompts(n, rng)", path);
  }
  prompt_source *s = rl_xcalloc(1, sizeof *s);
  s->is_task = 1;
  s->lua = h;
  s->path = rl_xstrdup(path);
  *out = s;
  return 0;
}

void prompts_close(prompt_source *s) {
  if (!s) return;
  for (int64_t i = 0; i < s->n; i++) free(s->text[i]), free(s->extra[i]);
  free(s->text), free(s->extra), free(s->line), free(s->path), free(s->tmpl);
  if (s->lua) luahost_close(s->lua);
  free(s);
}

int64_t prompts_count(const prompt_source *s) { return s->is_task ? -1 : s->n; }

const char *prompts_path(const prompt_source *s) { return s->path; }

void prompts_set_shuffle(prompt_source *s, int shuffle) { s->shuffle = shuffle != 0; }

void prompts_set_template(prompt_source *s, const char *tmpl) {
  free(s->tmpl);
  s->tmpl = tmpl ? rl_xstrdup(tmpl) : NULL;
}

char *prompts_apply_template(const char *tmpl, const char *prompt) {
  const char *at = tmpl ? strstr(tmpl, "{prompt}") : NULL;
  if (!at) return rl_xstrdup(prompt); /* no template (validate refuses one without {prompt}) */
  size_t a = (size_t)(at - tmpl), p = strlen(prompt), b = strlen(at + 8);
  char *out = rl_xmalloc(a + p + b + 1);
  memcpy(out, tmpl, a), memcpy(out + a, prompt, p), memcpy(out + a + p, at + 8, b + 1);
  return out;
}

int prompts_batch(prompt_source *s, uint64_t seed, int64_t iteration, int64_t batch, prompt_item **out,
                  rl_err *e) {
  *out = NULL;
  if (iteration < 1 || batch < 1 || batch > INT32_MAX || iteration > INT64_MAX / batch)
    return rl_errf(e, RL_EXIT_USAGE, "prompts: iteration %lld, batch %lld: iterations count from 1, batch >= 1",
                   (long long)iteration, (long long)batch);
  prompt_item *v = rl_xcalloc((size_t)batch, sizeof *v);
  if (s->is_task) {
    luahost_prompt *lp;
    /* the script afresh for every call: prompts() of an iteration cannot depend on what an
     * earlier call left in a global, so a resumed run draws what an uninterrupted one did */
    if (luahost_reset(s->lua, e)) {
      free(v);
      return rl_err_prefix(e, "iteration %lld: ", (long long)iteration);
    }
    int rc = luahost_prompts(s->lua, (int)batch, seed, iteration, &lp, e);
    if (rc) { /* its message names the iteration */
      free(v);
      return rc;
    }
    for (int64_t i = 0; i < batch; i++)
      v[i] = (prompt_item){.text = lp[i].prompt, .extra_json = lp[i].extra_json, .index = -1, .epoch = 0};
    free(lp); /* the strings now belong to v */
  } else {
    for (int64_t i = 0; i < batch; i++) {
      int64_t g = (iteration - 1) * batch + i, idx = prompts_cursor_index(seed, s->shuffle, s->n, g);
      v[i] = (prompt_item){.text = rl_xstrdup(s->text[idx]), .extra_json = rl_xstrdup(s->extra[idx]),
                           .index = idx, .epoch = g / s->n, .line = s->line[idx]};
    }
  }
  for (int64_t i = 0; s->tmpl && i < batch; i++) { /* the text the model sees (and the reward) */
    char *t = prompts_apply_template(s->tmpl, v[i].text);
    free(v[i].text);
    v[i].text = t;
  }
  *out = v;
  return 0;
}

void prompts_items_free(prompt_item *v, int64_t n) {
  for (int64_t i = 0; v && i < n; i++) free(v[i].text), free(v[i].extra_json);
  free(v);
}
