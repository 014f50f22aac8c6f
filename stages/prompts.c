/* prompts.c — prompt sources (JSONL, Lua task) and the deterministic data
 * cursor (contract in prompts.h). */
#include "stages/prompts.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/formats.h"
#include "lua/host.h"
#include "runner/recipe.h"

#define PROMPTS_KEY_TAG 0x64617461u /* "data": the cursor's own Philox stream */
#define PROMPTS_ROUNDS 6

struct prompt_source {
  int is_task;
  int shuffle;
  /* JSONL */
  char *path;
  int64_t n;
  char **text, **extra;
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

/* Parse one JSONL line (1-based lineno) into the next prompt. */
static int prompts_parse_line(prompt_source *s, const char *line, size_t len, int64_t lineno,
                              const char *pkey, const char *akey, rl_err *e) {
  json_error_t je;
  json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, &je);
  if (!j)
    return rl_errf(e, RL_EXIT_USAGE, "%s:%lld:%d: not valid JSON: %s (one JSON object per line)", s->path,
                   (long long)lineno, je.column > 0 ? je.column : 1, je.text);
  int rc = 0;
  json_t *p = json_object_get(j, pkey);
  if (!json_is_object(j))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%lld: expected a JSON object {\"%s\": \"...\", ...}, got %s", s->path,
                 (long long)lineno, pkey, json_is_array(j) ? "an array" : "a scalar");
  else if (!p)
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%lld: no field \"%s\": each line needs the prompt there (data.prompt_key)",
                 s->path, (long long)lineno, pkey);
  else if (!json_is_string(p))
    rc = rl_errf(e, RL_EXIT_USAGE, "%s:%lld: field \"%s\" must be a string (the prompt text)", s->path,
                 (long long)lineno, pkey);
  if (rc) return json_decref(j), rc;
  s->text[s->n] = rl_xstrdup(json_string_value(p));
  json_object_del(j, pkey);
  json_t *a = json_object_get(j, akey);
  if (a && strcmp(akey, "answer") != 0) json_object_set(j, "answer", a);
  char *dump = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  s->extra[s->n++] = dump ? dump : rl_xstrdup("{}");
  json_decref(j);
  return 0;
}

int prompts_open_jsonl(const char *path, const char *prompt_key, const char *answer_key,
                       prompt_source **out, rl_err *e) {
  *out = NULL;
  char *buf;
  size_t len;
  if (rl_read_file(path, &buf, &len, e)) return rl_err_prefix(e, "data.prompts: ");
  prompt_source *s = rl_xcalloc(1, sizeof *s);
  s->path = rl_xstrdup(path);
  s->shuffle = 1;
  int64_t lines = 1;
  for (size_t i = 0; i < len; i++) lines += buf[i] == '\n';
  s->text = rl_xmalloc((size_t)lines * sizeof *s->text);
  s->extra = rl_xmalloc((size_t)lines * sizeof *s->extra);
  const char *pkey = prompt_key ? prompt_key : "prompt", *akey = answer_key ? answer_key : "answer";
  int64_t lineno = 0;
  int rc = 0;
  for (size_t i = 0; i < len && !rc;) {
    size_t j = i;
    while (j < len && buf[j] != '\n') j++;
    lineno++;
    size_t k = i;
    while (k < j && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r')) k++;
    if (k < j) rc = prompts_parse_line(s, buf + i, j - i, lineno, pkey, akey, e);
    i = j + 1;
  }
  free(buf);
  if (!rc && s->n == 0)
    rc = rl_errf(e, RL_EXIT_USAGE, "%s: no prompts (the file has no JSON lines): add one object per line", path);
  if (rc) return prompts_close(s), rc;
  *out = s;
  return 0;
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

int prompts_open_recipe(const recipe *r, prompt_source **out, rl_err *e) {
  *out = NULL;
  if (r->data.prompts) {
    int rc = prompts_open_jsonl(r->data.prompts, r->data.prompt_key, r->data.answer_key, out, e);
    if (!rc) prompts_set_shuffle(*out, r->data.shuffle);
    return rc;
  }
  if (r->data.task) {
    /* the task script runs under the recipe's Lua limits (reward.limits) */
    luahost_limits lim = luahost_default_limits();
    if (r->reward.limits.instructions > 0) lim.instructions = r->reward.limits.instructions;
    if (r->reward.limits.memory_mb > 0) lim.memory_bytes = (size_t)r->reward.limits.memory_mb << 20;
    if (r->reward.limits.timeout_ms > 0) lim.seconds = (double)r->reward.limits.timeout_ms / 1000.0;
    return prompts_open_task(r->data.task, &lim, out, e);
  }
  return rl_errf(e, RL_EXIT_USAGE, "data: no prompt source: set data.prompts (JSONL) or data.task (Lua)");
}

void prompts_close(prompt_source *s) {
  if (!s) return;
  for (int64_t i = 0; i < s->n; i++) free(s->text[i]), free(s->extra[i]);
  free(s->text), free(s->extra), free(s->path);
  if (s->lua) luahost_close(s->lua);
  free(s);
}

int64_t prompts_count(const prompt_source *s) { return s->is_task ? -1 : s->n; }

void prompts_set_shuffle(prompt_source *s, int shuffle) { s->shuffle = shuffle != 0; }

int prompts_batch(prompt_source *s, uint64_t seed, int64_t iteration, int64_t batch, prompt_item **out,
                  rl_err *e) {
  *out = NULL;
  if (iteration < 1 || batch < 1 || batch > INT32_MAX || iteration > INT64_MAX / batch)
    return rl_errf(e, RL_EXIT_USAGE, "prompts: iteration %lld, batch %lld: iterations count from 1, batch >= 1",
                   (long long)iteration, (long long)batch);
  prompt_item *v = rl_xcalloc((size_t)batch, sizeof *v);
  if (s->is_task) {
    luahost_prompt *lp;
    if (luahost_prompts(s->lua, (int)batch, seed, iteration, &lp, e)) {
      free(v);
      return rl_err_prefix(e, "iteration %lld: ", (long long)iteration);
    }
    for (int64_t i = 0; i < batch; i++)
      v[i] = (prompt_item){.text = lp[i].prompt, .extra_json = lp[i].extra_json, .index = -1, .epoch = 0};
    free(lp); /* the strings now belong to v */
  } else {
    for (int64_t i = 0; i < batch; i++) {
      int64_t g = (iteration - 1) * batch + i, idx = prompts_cursor_index(seed, s->shuffle, s->n, g);
      v[i] = (prompt_item){.text = rl_xstrdup(s->text[idx]), .extra_json = rl_xstrdup(s->extra[idx]),
                           .index = idx, .epoch = g / s->n};
    }
  }
  *out = v;
  return 0;
}

void prompts_items_free(prompt_item *v, int64_t n) {
  for (int64_t i = 0; v && i < n; i++) free(v[i].text), free(v[i].extra_json);
  free(v);
}
