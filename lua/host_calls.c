/* host_calls.c — the calls rlrun makes into scripts: reward(sample),
 * reward_batch(samples), prompts(n, rng); sample tables from C data and JSON,
 * results checked and turned back into C (and JSON for prompt fields). */
#include "lua/host_int.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ JSON → Lua */

/* Push a JSON value (null → nil). Raises on nesting past LUAHOST_MAX_JSON_DEPTH
 * or out of memory; the JSON stays owned by the caller, so nothing leaks. */
static void lh_push_json(lua_State *L, json_t *j, int depth) {
  luaL_checkstack(L, 4, "JSON nesting");
  if (depth > LUAHOST_MAX_JSON_DEPTH) luaL_error(L, "extra JSON nested deeper than %d levels", LUAHOST_MAX_JSON_DEPTH);
  switch (json_typeof(j)) {
  case JSON_OBJECT: {
    lua_createtable(L, 0, (int)json_object_size(j));
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
      lh_push_json(L, v, depth + 1);
      lua_setfield(L, -2, k);
    }
    break;
  }
  case JSON_ARRAY: {
    size_t n = json_array_size(j);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
      lh_push_json(L, json_array_get(j, i), depth + 1);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  }
  case JSON_STRING: lua_pushlstring(L, json_string_value(j), json_string_length(j)); break;
  case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(j)); break;
  case JSON_REAL: lua_pushnumber(L, json_real_value(j)); break;
  case JSON_TRUE: lua_pushboolean(L, 1); break;
  case JSON_FALSE: lua_pushboolean(L, 0); break;
  default: lua_pushnil(L); break;
  }
}

/* ------------------------------------------------------------------ text */

/* The length (1..4) of the valid UTF-8 character at s (n bytes left), its code
 * point in *cp; 0 when the bytes there are not one. */
static int lh_utf8_char(const unsigned char *s, size_t n, unsigned *cp) {
  unsigned c = s[0];
  int k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
  if (k == 0 || (size_t)k > n || (k == 2 && c < 0xc2) || (k == 4 && c > 0xf4)) return 0;
  unsigned v = k == 1 ? c : k == 2 ? (c & 0x1f) : k == 3 ? (c & 0x0f) : (c & 0x07);
  for (int i = 1; i < k; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    v = v << 6 | (s[i] & 0x3f);
  }
  if ((k == 3 && (v < 0x800 || (v >= 0xd800 && v <= 0xdfff))) || (k == 4 && (v < 0x10000 || v > 0x10ffff))) return 0;
  *cp = v;
  return k;
}

/* s[0..n) for a message, on one line and unambiguous: \\ \' \n \t \r escaped,
 * other control characters, NUL and bytes that are not UTF-8 as \xNN; at most
 * max bytes of s (cut between characters), then "…". */
static const char *lh_escape(const char *s, size_t n, size_t max, char *out, size_t outsz) {
  const unsigned char *p = (const unsigned char *)s;
  size_t at = 0, o = 0;
  out[0] = 0;
  while (at < n && o + 8 < outsz) {
    unsigned cp = 0;
    int k = lh_utf8_char(p + at, n - at, &cp);
    if (at + (size_t)(k ? k : 1) > max) break;
    char tmp[8];
    if (!k || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) {
      const char *named = !k ? NULL : cp == '\n' ? "\\n" : cp == '\t' ? "\\t" : cp == '\r' ? "\\r" : NULL;
      if (named) snprintf(tmp, sizeof tmp, "%s", named);
      else if (k == 2) snprintf(tmp, sizeof tmp, "\\u%04X", cp); /* a C1 control */
      else snprintf(tmp, sizeof tmp, "\\x%02X", p[at]);
    } else if (cp == '\\' || cp == '\'') {
      snprintf(tmp, sizeof tmp, "\\%c", (char)cp);
    } else {
      memcpy(tmp, p + at, (size_t)k);
      tmp[k] = 0;
    }
    size_t t = strlen(tmp);
    if (o + t + 4 >= outsz) break;
    memcpy(out + o, tmp, t + 1);
    o += t;
    at += k ? (size_t)k : 1;
  }
  if (at < n && o + 4 < outsz) memcpy(out + o, "\xe2\x80\xa6", 4); /* "…" */
  return out;
}

/* NULL when the n bytes at s may be a metric name (README, "Metrics"; docs/recipes.md):
 * non-empty UTF-8 text without control characters, whitespace, quotes, backslashes
 * or commas, so that the name prints as it is in the table, CSV and JSON of
 * `rlrun metrics`; else what is wrong with it. */
/* A returned number as a message shows it: %g, but a NaN as "nan" whatever
 * its sign bit (Lua's 0/0 prints as "-nan" through glibc's %g). */
static const char *lh_num(double v, char *out, size_t n) {
  if (isnan(v)) snprintf(out, n, "nan");
  else snprintf(out, n, "%g", v);
  return out;
}

static const char *lh_metric_name_problem(const char *s, size_t n) {
  if (n == 0) return "is empty";
  const unsigned char *p = (const unsigned char *)s;
  for (size_t at = 0; at < n;) {
    unsigned cp = 0;
    int k = lh_utf8_char(p + at, n - at, &cp);
    if (!k) return "is not valid UTF-8";
    if (cp == 0) return "holds a NUL byte";
    if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) return "holds a control character";
    if (cp == ' ' || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
        cp == 0x202f || cp == 0x205f || cp == 0x3000 || cp == 0xfeff)
      return "holds whitespace";
    if (cp == '"' || cp == '\'') return "holds a quote";
    if (cp == '\\') return "holds a backslash";
    if (cp == ',') return "holds a comma";
    at += (size_t)k;
  }
  return NULL;
}

/* ------------------------------------------------------------------ Lua → JSON */

/* What lh_to_json's messages are about: "item 3", or "field 'answer' of item 3"
 * (path: the raw keys "meta.tags[2]" from the item down, escaped here). */
static const char *lh_subject(const char *item, const char *path, char *buf, size_t n) {
  if (!path[0]) {
    snprintf(buf, n, "%s", item);
  } else {
    char esc[200];
    snprintf(buf, n, "field '%s' of %s", lh_escape(path, strlen(path), 120, esc, sizeof esc), item);
  }
  return buf;
}

/* Convert the value at idx (absolute) to JSON without raising Lua errors:
 * returns NULL with a message in err that names the field (path, pathsz: the
 * keys down to this value, at: its length). Tables whose keys are exactly 1..n
 * become arrays, others objects with string keys. Strings (values and keys)
 * must be UTF-8 without NUL bytes: they are text, and a NUL would cut them
 * where rlrun uses them as C strings. */
static json_t *lh_to_json(lua_State *L, int idx, int depth, const char *item, char *path, size_t pathsz,
                          size_t at, size_t *left, char *err, size_t errsz) {
  char subj[400];
  path[at < pathsz ? at : pathsz - 1] = 0;
  /* What the JSON costs in C memory, against the script's memory cap: a table
   * referenced many times is one table in Lua but a copy per reference here
   * (items sharing a 3 MB table wrote 1.8 GB of samples in two iterations; a
   * table holding one 2000 times ran the host out of memory). */
  size_t cost = 64 + (lua_type(L, idx) == LUA_TSTRING ? lua_rawlen(L, idx) : 0);
  if (cost > *left) {
    snprintf(err, errsz, "%s takes the fields of the prompts past %zu MiB as JSON, the script's memory cap (a "
             "table shared by many fields or items is copied into each)",
             lh_subject(item, path, subj, sizeof subj), lh_host(L)->lim.memory_bytes >> 20);
    return NULL;
  }
  *left -= cost;
  switch (lua_type(L, idx)) {
  case LUA_TBOOLEAN: return json_boolean(lua_toboolean(L, idx));
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) return json_integer((json_int_t)lua_tointeger(L, idx));
    if (!isfinite(lua_tonumber(L, idx))) {
      snprintf(err, errsz, "%s is not a finite number", lh_subject(item, path, subj, sizeof subj));
      return NULL;
    }
    return json_real(lua_tonumber(L, idx));
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    const char *nul = memchr(s, 0, n);
    if (nul) {
      snprintf(err, errsz, "%s holds a NUL byte (byte %zu): text must not contain NUL",
               lh_subject(item, path, subj, sizeof subj), (size_t)(nul - s) + 1);
      return NULL;
    }
    json_t *j = json_stringn(s, n);
    if (!j) snprintf(err, errsz, "%s is not valid UTF-8 text", lh_subject(item, path, subj, sizeof subj));
    return j;
  }
  case LUA_TTABLE: break;
  default:
    snprintf(err, errsz, "%s is a %s: only strings, numbers, booleans and tables can travel with a prompt",
             lh_subject(item, path, subj, sizeof subj), lua_typename(L, lua_type(L, idx)));
    return NULL;
  }
  /* the item is level 1, as a JSONL line's own object is (stages/prompts.c): a
   * prompt can nest as deep from a task script as from a file */
  if (depth >= LUAHOST_MAX_JSON_DEPTH || !lua_checkstack(L, 4)) {
    snprintf(err, errsz, "%s is nested deeper than %d levels, the item counted (a cycle?)",
             lh_subject(item, path, subj, sizeof subj), LUAHOST_MAX_JSON_DEPTH);
    return NULL;
  }
  lua_Unsigned n = lua_rawlen(L, idx), count = 0;
  int all_int = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    count++;
    if (!lua_isinteger(L, -2)) all_int = 0;
    lua_pop(L, 1);
  }
  int is_array = count > 0 && count == n && all_int;
  json_t *out = is_array ? json_array() : json_object();
  if (is_array) {
    for (lua_Unsigned i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, (lua_Integer)i);
      snprintf(path + at, at < pathsz ? pathsz - at : 0, "[%llu]", (unsigned long long)i);
      json_t *v = lh_to_json(L, lua_gettop(L), depth + 1, item, path, pathsz, strlen(path), left, err, errsz);
      path[at] = 0;
      lua_pop(L, 1);
      if (!v) return json_decref(out), NULL;
      json_array_append_new(out, v);
    }
    return out;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      snprintf(err, errsz, "%s has a key that is not a string (mixed array and fields?)",
               lh_subject(item, path, subj, sizeof subj));
      lua_pop(L, 2);
      return json_decref(out), NULL;
    }
    size_t kn;
    const char *k = lua_tolstring(L, -2, &kn);
    if (memchr(k, 0, kn)) {
      char esc[200];
      snprintf(err, errsz, "%s has a key with a NUL byte ('%s'): keys are text without NUL",
               lh_subject(item, path, subj, sizeof subj), lh_escape(k, kn, 120, esc, sizeof esc));
      lua_pop(L, 2);
      return json_decref(out), NULL;
    }
    snprintf(path + at, at < pathsz ? pathsz - at : 0, "%s%s", at ? "." : "", k);
    json_t *v = lh_to_json(L, lua_gettop(L), depth + 1, item, path, pathsz, strlen(path), left, err, errsz);
    if (v && json_object_set_new(out, k, v)) {
      v = NULL; /* set_new took it and freed it */
      snprintf(err, errsz, "%s: the key is not valid UTF-8", lh_subject(item, path, subj, sizeof subj));
    }
    path[at] = 0;
    if (!v) {
      lua_pop(L, 2);
      return json_decref(out), NULL;
    }
    lua_pop(L, 1);
  }
  return out;
}

/* ------------------------------------------------------------------ reward */

struct lh_reward_args {
  luahost *h;
  const luahost_sample *s;
  json_t **extra; /* parsed extra_json per sample (owned by the caller) */
  int n;
  int batch;      /* call reward_batch(samples) instead of reward(sample) */
  luahost_reward *out;
};

/* Push the sample table of s (extra fields first: the named fields win). */
static void lh_push_sample(lua_State *L, const luahost_sample *s, json_t *extra) {
  luaL_checkstack(L, 8, "sample");
  if (extra) lh_push_json(L, extra, 0);
  else lua_createtable(L, 0, 8);
  lua_pushstring(L, s->prompt ? s->prompt : "");
  lua_setfield(L, -2, "prompt");
  lua_pushstring(L, s->completion ? s->completion : "");
  lua_setfield(L, -2, "completion");
  lua_createtable(L, s->n_tokens, 0);
  for (int i = 0; i < s->n_tokens; i++) {
    lua_pushinteger(L, s->tokens[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "tokens");
  if (s->finish_reason) lua_pushstring(L, s->finish_reason);
  else lua_pushnil(L);
  lua_setfield(L, -2, "finish_reason");
  lua_pushinteger(L, s->index);
  lua_setfield(L, -2, "index");
  lua_pushinteger(L, s->group);
  lua_setfield(L, -2, "group");
  lua_pushinteger(L, s->iteration);
  lua_setfield(L, -2, "iteration");
}

/* A metric name of a reward result: the key's bytes (Lua strings may hold NULs). */
typedef struct lh_name {
  const char *s;
  size_t n;
} lh_name;

/* qsort of names: bytewise, a prefix first. */
static int lh_cmp_name(const void *a, const void *b) {
  const lh_name *x = a, *y = b;
  int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
  return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* 1 when the n bytes at s are the key "reward". */
static int lh_is_reward_key(const char *s, size_t n) { return n == 6 && !memcmp(s, "reward", 6); }

/* Check one result at idx and store it; on error formats the message into err
 * ("<script>:<line>: <fn> returned …") and returns -1. */
static int lh_parse_reward(lua_State *L, int idx, luahost_reward *out, const char *where,
                           const char *fn, char *err, size_t errsz) {
  memset(out, 0, sizeof *out);
  int t = lua_type(L, idx);
  if (t == LUA_TNUMBER) {
    out->reward = lua_tonumber(L, idx);
  } else if (t == LUA_TTABLE) {
    lua_pushliteral(L, "reward");
    if (lua_rawget(L, idx) != LUA_TNUMBER) {
      snprintf(err, errsz, "%s: %s returned a table whose field 'reward' is %s; it must be a "
                           "number", where, fn, luaL_typename(L, -1));
      return -1;
    }
    out->reward = lua_tonumber(L, -1);
    lua_pop(L, 1);
    /* The metric names, sorted: which one a message names, and the order of
     * the metrics, must not depend on pairs() (its order varies per state). */
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      if (lua_type(L, -2) != LUA_TSTRING) {
        snprintf(err, errsz, "%s: %s returned a table with a key that is not a string; use "
                             "{reward = …, name = number}", where, fn);
        return -1;
      }
      size_t kn;
      const char *k = lua_tolstring(L, -2, &kn);
      n += !lh_is_reward_key(k, kn);
      lua_pop(L, 1);
    }
    lh_name *names = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *names, 0);
    int k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) { /* the keys live in the table, which is on the stack */
      size_t kn;
      const char *key = lua_tolstring(L, -2, &kn);
      if (!lh_is_reward_key(key, kn) && k < n) names[k++] = (lh_name){key, kn};
      lua_pop(L, 1);
    }
    qsort(names, (size_t)k, sizeof *names, lh_cmp_name);
    char esc[200];
    if (k > LUAHOST_MAX_METRICS) {
      int at = snprintf(err, errsz, "%s: %s returned %d metrics besides reward, more than %d: ", where, fn, k,
                        LUAHOST_MAX_METRICS);
      for (int i = 0; i < k && at > 0 && (size_t)at < errsz; i++) {
        lh_escape(names[i].s, names[i].n, 64, esc, sizeof esc);
        if ((size_t)at + strlen(esc) + 24 >= errsz) {
          snprintf(err + at, errsz - (size_t)at, ", … (%d more)", k - i);
          break;
        }
        at += snprintf(err + at, errsz - (size_t)at, "%s%s", i ? ", " : "", esc);
      }
      return -1;
    }
    for (int i = 0; i < k; i++) {
      const char *key = names[i].s;
      size_t kn = names[i].n;
      const char *bad = lh_metric_name_problem(key, kn);
      if (bad) {
        snprintf(err, errsz, "%s: %s returned metric name '%s', which %s: a metric name is UTF-8 text without "
                             "control characters, whitespace, quotes, backslashes or commas (e.g. format_ok, "
                             "digits/exact)", where, fn, lh_escape(key, kn, 64, esc, sizeof esc), bad);
        return -1;
      }
      if ((kn == 4 && !memcmp(key, "mean", 4)) || (kn == 3 && !memcmp(key, "std", 3))) {
        /* They would be the metrics reward/mean and reward/std, which the run records itself (the
         * mean and spread of the rewards): the script's value was dropped without a word. */
        snprintf(err, errsz, "%s: %s returned metric '%s': reward/mean and reward/std are rlrun's own (the "
                             "rewards' mean and standard deviation); give it another name (e.g. %s_len)", where,
                 fn, key, key);
        return -1;
      }
      if (kn >= sizeof out->names[0]) {
        snprintf(err, errsz, "%s: %s returned metric '%s' (%zu bytes): metric names must be under "
                             "%zu bytes (UTF-8)", where, fn, lh_escape(key, kn, 40, esc, sizeof esc), kn,
                 sizeof out->names[0]);
        return -1;
      }
      lua_pushlstring(L, key, kn);
      int vt = lua_rawget(L, idx);
      double v;
      if (vt == LUA_TNUMBER) v = lua_tonumber(L, -1);
      else if (vt == LUA_TBOOLEAN) v = lua_toboolean(L, -1);
      else {
        snprintf(err, errsz, "%s: %s returned field '%s' = %s; extra fields are metrics and "
                             "must be numbers or booleans", where, fn, key, luaL_typename(L, -1));
        return -1;
      }
      if (!(fabs(v) <= LUAHOST_MAX_REWARD)) {
        char vs[32];
        snprintf(err, errsz, "%s: %s returned metric '%s' = %s; metrics must be finite numbers of magnitude at "
                             "most %g (their means must not overflow)", where, fn, key, lh_num(v, vs, sizeof vs),
                 LUAHOST_MAX_REWARD);
        return -1;
      }
      memcpy(out->names[out->n_metrics], key, kn);
      out->names[out->n_metrics][kn] = 0;
      out->values[out->n_metrics++] = v;
      lua_pop(L, 1);
    }
    lua_pop(L, 1); /* names */
  } else {
    snprintf(err, errsz, "%s: %s returned %s; return a number or a table {reward = number, …}",
             where, fn, luaL_typename(L, idx));
    return -1;
  }
  if (!(fabs(out->reward) <= LUAHOST_MAX_REWARD)) { /* NaN fails this too */
    char v[32];
    snprintf(err, errsz, "%s: %s returned reward %s; rewards must be finite numbers of magnitude at most %g "
                         "(beyond that a group's spread or the gradient overflows and the step learns nothing "
                         "or fails): scale them down", where, fn, lh_num(out->reward, v, sizeof v), LUAHOST_MAX_REWARD);
    return -1;
  }
  return 0;
}

/* What a call returned where an array was due: "table of length N", or the
 * type alone ("number", "nil"): a length is a table's only. */
static void lh_describe_result(lua_State *L, int idx, char *buf, size_t n) {
  if (lua_type(L, idx) == LUA_TTABLE) snprintf(buf, n, "table of length %lld", (long long)lua_rawlen(L, idx));
  else if (lua_isnil(L, idx)) snprintf(buf, n, "nil, not a table,");
  else snprintf(buf, n, "a %s, not a table,", luaL_typename(L, idx));
}

/* Protected body of a reward call: look up the function, build the sample(s),
 * call, check the result(s). */
static int lh_reward_k(lua_State *L) {
  struct lh_reward_args *a = lua_touserdata(L, 1);
  luahost *h = a->h;
  const char *fname = a->batch ? h->reward_batch_fn : h->reward_fn;
  char msg[2048], where[600], fn[96];
  lua_pushglobaltable(L);
  if (lua_getfield(L, -1, fname) != LUA_TFUNCTION || lua_iscfunction(L, -1)) { /* the script's own: not print */
    if (strcmp(h->reward_fn, "reward"))
      snprintf(msg, sizeof msg, "%s: defines no function %s(%s), the function the recipe's reward.function "
                                "names", h->name, fname, a->batch ? "samples" : "sample");
    else
      snprintf(msg, sizeof msg, "%s: defines no function %s(%s); a reward script defines reward(sample)",
               h->name, fname, a->batch ? "samples" : "sample");
    return lh_raise(L, msg);
  }
  lua_Debug ar;
  lua_pushvalue(L, -1);
  lua_getinfo(L, ">S", &ar);
  snprintf(where, sizeof where, "%s:%d", h->name, ar.linedefined);
  snprintf(fn, sizeof fn, "%s(%s)", fname, a->batch ? "samples" : "sample");
  if (a->batch) {
    lua_createtable(L, a->n, 0);
    for (int i = 0; i < a->n; i++) {
      lh_push_sample(L, &a->s[i], a->extra[i]);
      lua_rawseti(L, -2, i + 1);
    }
  } else {
    lh_push_sample(L, a->s, a->extra[0]);
  }
  lua_call(L, 1, 1);
  int res = lua_gettop(L);
  if (!a->batch) {
    if (lh_parse_reward(L, res, a->out, where, fn, msg, sizeof msg)) return lh_raise(L, msg);
    return 0;
  }
  if (lua_type(L, res) != LUA_TTABLE || lua_rawlen(L, res) != (lua_Unsigned)a->n) {
    char got[64];
    lh_describe_result(L, res, got, sizeof got);
    snprintf(msg, sizeof msg, "%s: %s returned %s for %d samples; return one result per sample, in order", where,
             fn, got, a->n);
    return lh_raise(L, msg);
  }
  for (int i = 0; i < a->n; i++) {
    lua_rawgeti(L, res, i + 1);
    char fi[160];
    snprintf(fi, sizeof fi, "%s (result %d, sample %lld)", fn, i + 1, (long long)a->s[i].index);
    if (lh_parse_reward(L, lua_gettop(L), &a->out[i], where, fi, msg, sizeof msg))
      return lh_raise(L, msg);
    lua_pop(L, 1);
  }
  return 0;
}

/* Parse the extra JSON of n samples; NULL entries where there is none. */
static int lh_parse_extras(luahost *h, const luahost_sample *s, int n, json_t **out, rl_err *e) {
  for (int i = 0; i < n; i++) {
    out[i] = NULL;
    if (!s[i].extra_json || !*s[i].extra_json) continue;
    json_error_t je;
    out[i] = json_loads(s[i].extra_json, JSON_REJECT_DUPLICATES, &je);
    if (!out[i] || !json_is_object(out[i])) {
      for (int k = 0; k <= i; k++) json_decref(out[k]);
      return rl_errf(e, RL_EXIT_FAIL, "%s: the extra fields of sample %lld of iteration %lld are "
                                      "not a JSON object (%s)", h->name, (long long)s[i].index,
                     (long long)s[i].iteration, out[i] ? "not an object" : je.text);
    }
  }
  return 0;
}

int luahost_reward_one(luahost *h, const luahost_sample *s, luahost_reward *out, rl_err *e) {
  json_t *extra;
  if (lh_parse_extras(h, s, 1, &extra, e)) return e->code;
  struct lh_reward_args a = {h, s, &extra, 1, 0, out};
  char ctx[96];
  snprintf(ctx, sizeof ctx, "sample %lld of iteration %lld", (long long)s->index,
           (long long)s->iteration);
  int rc = lh_call(h, lh_reward_k, &a, 1, ctx, RL_EXIT_FAIL, e);
  json_decref(extra);
  return rc;
}

int luahost_reward_batch(luahost *h, const luahost_sample *s, int n, luahost_reward *out,
                         rl_err *e) {
  if (n <= 0) return 0;
  if (!luahost_has(h, h->reward_batch_fn)) {
    for (int i = 0; i < n; i++)
      if (luahost_reward_one(h, &s[i], &out[i], e)) return e->code;
    return 0;
  }
  json_t **extra = rl_xcalloc((size_t)n, sizeof *extra);
  if (lh_parse_extras(h, s, n, extra, e)) {
    free(extra);
    return e->code;
  }
  struct lh_reward_args a = {h, s, extra, n, 1, out};
  char ctx[128];
  snprintf(ctx, sizeof ctx, "reward_batch over samples %lld..%lld of iteration %lld",
           (long long)s[0].index, (long long)s[n - 1].index, (long long)s[0].iteration);
  int rc = lh_call(h, lh_reward_k, &a, n, ctx, RL_EXIT_FAIL, e);
  for (int i = 0; i < n; i++) json_decref(extra[i]);
  free(extra);
  return rc;
}

/* ------------------------------------------------------------------ prompts */

struct lh_prompts_args {
  luahost *h;
  int n;
  uint64_t seed;
  int64_t iteration;
  luahost_prompt *out; /* n entries, filled as they are checked */
};

/* Protected body of prompts(n, rng). */
static int lh_prompts_k(lua_State *L) {
  struct lh_prompts_args *a = lua_touserdata(L, 1);
  luahost *h = a->h;
  char msg[2048], where[600];
  lua_pushglobaltable(L);
  if (lua_getfield(L, -1, "prompts") != LUA_TFUNCTION || lua_iscfunction(L, -1)) {
    snprintf(msg, sizeof msg, "%s: defines no function prompts(n, rng); a task script defines it",
             h->name);
    return lh_raise_output(L, msg);
  }
  lua_Debug ar;
  lua_pushvalue(L, -1);
  lua_getinfo(L, ">S", &ar);
  snprintf(where, sizeof where, "%s:%d", h->name, ar.linedefined);
  lua_pushinteger(L, a->n);
  lh_rng_push(L, a->seed, a->iteration);
  lua_call(L, 2, 1);
  int res = lua_gettop(L);
  if (lua_type(L, res) != LUA_TTABLE || lua_rawlen(L, res) != (lua_Unsigned)a->n) {
    char got[64];
    lh_describe_result(L, res, got, sizeof got);
    snprintf(msg, sizeof msg, "%s: prompts(n, rng) returned %s for n = %d; return an array of n prompts", where,
             got, a->n);
    return lh_raise_output(L, msg);
  }
  size_t json_left = h->lim.memory_bytes; /* the prompts and their fields in C, as lh_to_json charges them */
  for (int i = 0; i < a->n; i++) {
    lua_rawgeti(L, res, i + 1);
    int item = lua_gettop(L);
    if (lua_type(L, item) == LUA_TSTRING || lua_type(L, item) == LUA_TTABLE) {
      lua_pushliteral(L, "prompt");
      size_t plen = lua_type(L, item) == LUA_TSTRING ? lua_rawlen(L, item)
                    : lua_rawget(L, item) == LUA_TSTRING ? lua_rawlen(L, -1) : 0;
      lua_settop(L, item);
      if (plen + 64 > json_left) {
        snprintf(msg, sizeof msg, "%s: prompts(n, rng): the prompt of item %d takes the prompts past %zu MiB, the "
                                  "script's memory cap (one string returned for many items is copied into each)",
                 where, i + 1, h->lim.memory_bytes >> 20);
        return lh_raise_output(L, msg);
      }
      json_left -= plen + 64;
    }
    luahost_prompt *p = &a->out[i];
    size_t plen;
    const char *ptext, *nul;
    if (lua_type(L, item) == LUA_TSTRING) {
      ptext = lua_tolstring(L, item, &plen);
      if ((nul = memchr(ptext, 0, plen))) {
        snprintf(msg, sizeof msg, "%s: prompts(n, rng) item %d: the prompt holds a NUL byte (byte %zu): prompts are "
                                  "text without NUL", where, i + 1, (size_t)(nul - ptext) + 1);
        return lh_raise_output(L, msg);
      }
      if (plen == 0) {
        snprintf(msg, sizeof msg, "%s: prompts(n, rng) item %d: the prompt is empty: a prompt is the text the model "
                                  "continues", where, i + 1);
        return lh_raise_output(L, msg);
      }
      p->prompt = rl_xstrdup(ptext);
      p->extra_json = rl_xstrdup("{}");
    } else if (lua_type(L, item) == LUA_TTABLE) {
      lua_pushliteral(L, "prompt");
      if (lua_rawget(L, item) != LUA_TSTRING) {
        snprintf(msg, sizeof msg, "%s: prompts(n, rng) item %d has no string field 'prompt'",
                 where, i + 1);
        return lh_raise_output(L, msg);
      }
      ptext = lua_tolstring(L, -1, &plen);
      if ((nul = memchr(ptext, 0, plen))) {
        snprintf(msg, sizeof msg, "%s: prompts(n, rng): field 'prompt' of item %d holds a NUL byte (byte %zu): "
                                  "prompts are text without NUL", where, i + 1, (size_t)(nul - ptext) + 1);
        return lh_raise_output(L, msg);
      }
      if (plen == 0) {
        snprintf(msg, sizeof msg, "%s: prompts(n, rng): field 'prompt' of item %d is empty: a prompt is the text the "
                                  "model continues", where, i + 1);
        return lh_raise_output(L, msg);
      }
      char *prompt = rl_xstrdup(ptext);
      lua_pop(L, 1);
      char what[64], err[900], path[256] = "";
      snprintf(what, sizeof what, "item %d", i + 1);
      json_t *j = lh_to_json(L, item, 0, what, path, sizeof path, 0, &json_left, err, sizeof err);
      if (!j || !json_is_object(j)) {
        free(prompt);
        if (j) snprintf(err, sizeof err, "item %d is an array; give a table with a prompt field",
                        i + 1);
        json_decref(j);
        snprintf(msg, sizeof msg, "%s: prompts(n, rng): %s", where, err);
        return lh_raise_output(L, msg);
      }
      json_object_del(j, "prompt");
      char *dump = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
      json_decref(j);
      p->prompt = prompt;
      p->extra_json = dump ? dump : rl_xstrdup("{}");
    } else {
      snprintf(msg, sizeof msg, "%s: prompts(n, rng) item %d is %s; give a string or a table "
                                "{prompt = string, …}", where, i + 1, luaL_typename(L, item));
      return lh_raise_output(L, msg);
    }
    lua_pop(L, 1);
  }
  return 0;
}

int luahost_prompts(luahost *h, int n, uint64_t seed, int64_t iteration, luahost_prompt **out,
                    rl_err *e) {
  *out = NULL;
  if (n <= 0) return rl_errf(e, RL_EXIT_FAIL, "luahost_prompts: n must be positive (got %d)", n);
  struct lh_prompts_args a = {h, n, seed, iteration, rl_xcalloc((size_t)n, sizeof(luahost_prompt))};
  char ctx[96];
  snprintf(ctx, sizeof ctx, "prompts for iteration %lld", (long long)iteration);
  int rc = lh_call(h, lh_prompts_k, &a, 1, ctx, RL_EXIT_FAIL, e);
  if (rc) {
    luahost_prompts_free(a.out, n);
    return rc;
  }
  *out = a.out;
  return 0;
}

void luahost_prompts_free(luahost_prompt *v, int n) {
  for (int i = 0; v && i < n; i++) free(v[i].prompt), free(v[i].extra_json);
  free(v);
}
