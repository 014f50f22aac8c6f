/* host.c — the Lua host: state creation, the sandbox, the limits (allocator
 * cap, count hook for the instruction budget and the deadline, the same
 * checks for work charged by C library code: lua/pattern.c), protected
 * calls with messages that name script and line, and the task rng. */
#include "lua/host_int.h"
#include "lua/pattern.h"
#include "kernels/formats.h"

#include <ctype.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

luahost_limits luahost_default_limits(void) {
  luahost_limits l = {.instructions = 100000000, .memory_bytes = 64u << 20, .seconds = 10.0};
  return l;
}

luahost *lh_host(lua_State *L) {
  void *ud = NULL;
  lua_getallocf(L, &ud);
  return ud;
}

int lh_raise(lua_State *L, const char *msg) {
  lua_pushstring(L, msg);
  return lua_error(L);
}

int lh_raise_output(lua_State *L, const char *msg) {
  lh_host(L)->bad_output = 1;
  return lh_raise(L, msg);
}

/* The innermost line of the script on the call stack (0 when none). Reads
 * only (lua_getstack/lua_getinfo "l" allocate nothing), so the allocator may
 * call it. */
static int lh_current_line(lua_State *L) {
  lua_Debug ar;
  for (int level = 0; level < 200 && lua_getstack(L, level, &ar); level++) {
    if (lua_getinfo(L, "l", &ar) && ar.currentline > 0) return ar.currentline;
  }
  return 0;
}

/* lua_Alloc with a cap on the state's total heap. A refused request records
 * where the script was, for the message (Lua raises "not enough memory"
 * without calling the message handler, so nothing else knows the line). */
static void *lh_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  luahost *h = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    h->mem_used -= old;
    return NULL;
  }
  if (nsize > old && h->mem_used - old + nsize > h->lim.memory_bytes) {
    /* Lua retries once after an emergency collection, so a refusal is only a
     * failure if the call then ends with LUA_ERRMEM; remember where it was. */
    if (h->in_call) {
      h->mem_refused = 1;
      h->mem_line = h->L ? lh_current_line(h->L) : 0;
    }
    return NULL;
  }
  void *q = realloc(ptr, nsize);
  if (!q) return NULL;
  h->mem_used = h->mem_used - old + nsize;
  return q;
}

static void lh_hook(lua_State *L, lua_Debug *ar);
#define LH_HOOK_MASK (LUA_MASKCOUNT | LUA_MASKCALL)

/* The limit this call has run into: the first one recorded, else the budget,
 * else the deadline (LH_LIMIT_NONE while within both). */
static int lh_limit_reached(const luahost *h) {
  if (h->limit_hit) return h->limit_hit;
  if (h->executed > h->budget) return LH_LIMIT_INSTR;
  if (rl_now() > h->deadline) return LH_LIMIT_TIME;
  return LH_LIMIT_NONE;
}

/* Record the first limit hit in this call and where (`line`, or the innermost
 * script line when 0), then raise. The hook then fires on every instruction,
 * so a script that catches the error with pcall cannot run on; lh_call turns
 * limit_hit into the message. */
static void lh_limit_raise(lua_State *L, luahost *h, int hit, int line) {
  if (!h->limit_hit) {
    h->limit_hit = hit;
    h->limit_line = line > 0 ? line : lh_current_line(L);
  }
  h->hook_every = 1;
  lua_sethook(L, lh_hook, LH_HOOK_MASK, 1);
  lua_pushliteral(L, "rlrun sandbox limit exceeded");
  lua_error(L);
}

/* The hook: every hook_every VM instructions (count event), and at every
 * function call (call events), C functions included — a C library loop that
 * calls a C function per element (table.sort or table.concat of a table whose
 * __index is rawlen, collectgarbage() in a loop) executes no VM instruction,
 * so the count alone never stopped it. A call counts as one instruction; both
 * events check the budget and the deadline. */
static void lh_hook(lua_State *L, lua_Debug *ar) {
  luahost *h = lh_host(L);
  const int count = ar->event == LUA_HOOKCOUNT;
  h->executed += count ? h->hook_every : 1;
  int hit = lh_limit_reached(h);
  if (!hit) return;
  lh_limit_raise(L, h, hit, !h->limit_hit && count && lua_getinfo(L, "l", ar) ? ar->currentline : 0);
}

void lh_charge(lua_State *L, int64_t work, int check) {
  luahost *h = lh_host(L);
  if (!h->in_call) return;
  h->executed += work;
  int hit = check ? lh_limit_reached(h) : LH_LIMIT_NONE;
  if (hit) lh_limit_raise(L, h, hit, 0);
}

/* How a byte of a script's text shows in a message or a log line: NULL for
 * itself, else its escape — NUL as \0, newline and CR as \n and \r, another
 * control character but tab (C0, DEL) as \xNN. Messages and log lines are C
 * strings that end up on a terminal: a NUL would cut them, a newline would
 * start a line that looks like rlrun's own, ESC [ … would run an escape
 * sequence. */
static const char *lh_ctl_escape(unsigned char c, char buf[8]) {
  if (c == 0) return "\\0";
  if (c == '\n') return "\\n";
  if (c == '\r') return "\\r";
  if ((c < 0x20 && c != '\t') || c == 0x7f) {
    snprintf(buf, 8, "\\x%02X", c);
    return buf;
  }
  return NULL;
}

/* Replace the string at the top of the stack by a copy with lh_ctl_escape's
 * escapes (the string itself when it needs none). */
static void lh_escape_controls(lua_State *L) {
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  char tmp[8];
  size_t i = 0;
  while (i < n && !lh_ctl_escape((unsigned char)s[i], tmp)) i++;
  if (i == n) return;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    const char *esc = lh_ctl_escape((unsigned char)s[i], tmp);
    if (esc) luaL_addstring(&b, esc);
    else luaL_addchar(&b, s[i]);
  }
  luaL_pushresult(&b);
  lua_remove(L, -2);
}

/* One scalar of an error table, shown into out (a string quoted and cut at
 * 40 bytes); returns out. */
static const char *lh_scalar_text(lua_State *L, int idx, int quote, char *out, size_t n) {
  if (lua_type(L, idx) == LUA_TSTRING) {
    size_t len;
    const char *v = lua_tolstring(L, idx, &len);
    snprintf(out, n, "%s%.*s%s%s", quote ? "\"" : "", (int)(len > 40 ? 40 : len), v, len > 40 ? "…" : "",
             quote ? "\"" : "");
  } else if (lua_type(L, idx) == LUA_TNUMBER && lua_isinteger(L, idx)) {
    snprintf(out, n, "%lld", (long long)lua_tointeger(L, idx));
  } else if (lua_type(L, idx) == LUA_TNUMBER) {
    snprintf(out, n, "%.14g", (double)lua_tonumber(L, idx));
  } else if (lua_type(L, idx) == LUA_TBOOLEAN) {
    snprintf(out, n, "%s", lua_toboolean(L, idx) ? "true" : "false");
  } else {
    snprintf(out, n, "%s", luaL_typename(L, idx));
  }
  return out;
}

/* error({code = 42}): the table's first entries (raw: no metamethod runs in
 * the handler), e.g. "(error object is a table: {code = 42})". Built in a C
 * buffer (a Lua buffer may not stay open across lua_next) and pushed once. */
static const char *lh_describe_error_table(lua_State *L, int idx) {
  char text[512], k[64], v[64];
  size_t at = (size_t)snprintf(text, sizeof text, "(error object is a table: {");
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) { /* stack: ... key value */
    if (n < 4 && at < sizeof text) {
      int sk = lua_type(L, -2) == LUA_TSTRING;
      lh_scalar_text(L, -2, 0, k, sizeof k);
      lh_scalar_text(L, -1, 1, v, sizeof v);
      at += (size_t)snprintf(text + at, sizeof text - at, "%s%s%s%s = %s", n ? ", " : "", sk ? "" : "[", k,
                             sk ? "" : "]", v);
    }
    n++;
    lua_pop(L, 1);
  }
  if (at < sizeof text) snprintf(text + at, sizeof text - at, "%s})", n > 4 ? ", …" : "");
  lua_pushstring(L, text);
  lh_escape_controls(L);
  return lua_tostring(L, -1);
}

/* Message handler: make every error "<script>:<line>: message" (control
 * characters escaped: lh_ctl_escape). */
static int lh_msgh(lua_State *L) {
  luahost *h = lh_host(L);
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_pushvalue(L, 1);
    lh_escape_controls(L);
    lua_replace(L, 1);
  }
  const char *msg = lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER ? lua_tostring(L, 1)
                    : lua_type(L, 1) == LUA_TTABLE ? lh_describe_error_table(L, 1)
                                                    : lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  size_t nn = strlen(h->name), ns = strlen(h->short_src);
  if (!strncmp(msg, h->name, nn) && msg[nn] == ':') {
    lua_pushstring(L, msg);
  } else if (ns && strcmp(h->short_src, h->name) && !strncmp(msg, h->short_src, ns) &&
             msg[ns] == ':') {
    lua_pushfstring(L, "%s%s", h->name, msg + ns); /* Lua shortened a long path */
  } else {
    int line = lh_current_line(L);
    if (line > 0) lua_pushfstring(L, "%s:%d: %s", h->name, line, msg);
    else lua_pushfstring(L, "%s: %s", h->name, msg);
  }
  return 1;
}

int lh_call(luahost *h, lua_CFunction fn, void *arg, double scale, const char *context, int code,
            rl_err *e) {
  lua_State *L = h->L;
  double budget = (double)h->lim.instructions * (scale < 1 ? 1 : scale);
  h->budget = budget > 9e18 ? INT64_MAX : (int64_t)budget;
  h->executed = 0;
  h->deadline = rl_now() + h->lim.seconds * (scale < 1 ? 1 : scale);
  h->limit_hit = LH_LIMIT_NONE;
  h->limit_line = 0;
  h->mem_refused = 0;
  h->mem_line = 0;
  h->print_lines = 0;
  h->bad_output = 0;
  h->hook_every = h->budget < 1000 ? (int)(h->budget > 0 ? h->budget : 1) : 1000;
  h->in_call = 1;
  lua_settop(L, 0);
  lua_sethook(L, lh_hook, LH_HOOK_MASK, h->hook_every);
  lua_pushcfunction(L, lh_msgh);
  lua_pushcfunction(L, fn);
  lua_pushlightuserdata(L, arg);
  int st = lua_pcall(L, 1, 0, 1);
  lua_sethook(L, NULL, 0, 0);
  h->in_call = 0;
  if (st == LUA_OK && h->limit_hit == LH_LIMIT_NONE) {
    lua_settop(L, 0);
    return 0;
  }
  if (h->limit_hit == LH_LIMIT_NONE && h->mem_refused && (st == LUA_ERRMEM || st == LUA_ERRERR))
    h->limit_hit = LH_LIMIT_MEMORY, h->limit_line = h->mem_line;
  char where[600];
  if (h->limit_line > 0) snprintf(where, sizeof where, "%s:%d", h->name, h->limit_line);
  else snprintf(where, sizeof where, "%s", h->name);
  switch (h->limit_hit) {
  case LH_LIMIT_INSTR:
    rl_errf(e, code, "%s: instruction budget exceeded (%lld instructions per call, reward.limits.instructions; "
                     "an endless loop?) (%s)", where, (long long)h->budget, context);
    break;
  case LH_LIMIT_TIME:
    rl_errf(e, code, "%s: wall-clock deadline exceeded (%.3g s per call, reward.limits.timeout_ms) (%s)", where,
            h->lim.seconds * (scale < 1 ? 1 : scale), context);
    break;
  case LH_LIMIT_MEMORY:
    rl_errf(e, code, "%s: memory limit exceeded (%zu MiB for the script's state, reward.limits.memory_mb%s; a "
                     "string.rep or table bomb, or endless recursion?) (%s)", where, h->lim.memory_bytes >> 20,
            scale > 1 ? ", the whole batch's samples included" : "", context);
    break;
  default: {
    const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (st == LUA_ERRMEM) m = "not enough memory";
    if (h->bad_output && st == LUA_ERRRUN) code = RL_EXIT_USAGE;
    rl_errf(e, code, "%s (%s)", m ? m : "error while handling an error", context);
    if (m && strncmp(m, h->name, strlen(h->name)) != 0) rl_err_prefix(e, "%s: ", h->name);
  }
  }
  lua_settop(L, 0);
  lua_gc(L, LUA_GCCOLLECT);
  return code;
}

/* ------------------------------------------------------------------ sandbox */

/* One line of print() output to the log: at most LUAHOST_PRINT_LINE_BYTES bytes
 * of it (cut between UTF-8 characters), then "… (N more bytes)"; control
 * characters escaped (lh_ctl_escape). */
static void lh_print_line(luahost *h, const char *s, size_t n) {
  char out[LUAHOST_PRINT_LINE_BYTES * 4 + 64];
  size_t o = 0, keep = n;
  if (keep > LUAHOST_PRINT_LINE_BYTES) {
    keep = LUAHOST_PRINT_LINE_BYTES;
    while (keep > 0 && ((unsigned char)s[keep] & 0xc0) == 0x80) keep--; /* s[keep] continues a character */
  }
  for (size_t i = 0; i < keep; i++) {
    char tmp[8];
    const char *esc = lh_ctl_escape((unsigned char)s[i], tmp);
    if (esc) o += (size_t)snprintf(out + o, sizeof out - o, "%s", esc);
    else out[o++] = s[i];
  }
  out[o] = 0;
  if (keep < n) snprintf(out + o, sizeof out - o, "\xe2\x80\xa6 (%zu more bytes)", n - keep);
  h->log(h->log_ud, h->name, out);
}

/* print(...) → the host's log, tab-separated like Lua's. Each line of the text
 * is a log line of its own ("[script] text": a script cannot write a line
 * that looks like rlrun's) and counts against LUAHOST_PRINT_LINES per call. */
static int lh_print(lua_State *L) {
  luahost *h = lh_host(L);
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  for (size_t at = 0; h->print_lines <= LUAHOST_PRINT_LINES;) {
    const char *nl = memchr(s + at, '\n', len - at);
    const size_t end = nl ? (size_t)(nl - s) : len;
    if (h->print_lines < LUAHOST_PRINT_LINES) lh_print_line(h, s + at, end - at);
    else h->log(h->log_ud, h->name, "(further print output of this call dropped)");
    h->print_lines++;
    if (!nl) break;
    at = end + 1;
  }
  return 0;
}

/* collectgarbage with only the options that cannot change the collector's setup. */
static int lh_collectgarbage(lua_State *L) {
  const char *opt = luaL_optstring(L, 1, "collect");
  if (!strcmp(opt, "collect")) {
    lua_gc(L, LUA_GCCOLLECT);
    lua_pushinteger(L, 0);
  } else if (!strcmp(opt, "count")) {
    lua_pushnumber(L, lua_gc(L, LUA_GCCOUNT) + lua_gc(L, LUA_GCCOUNTB) / 1024.0);
  } else if (!strcmp(opt, "step")) {
    lua_pushboolean(L, lua_gc(L, LUA_GCSTEP, 0));
  } else if (!strcmp(opt, "isrunning")) {
    lua_pushboolean(L, lua_gc(L, LUA_GCISRUNNING));
  } else {
    return luaL_error(L, "collectgarbage(\"%s\") is not allowed in the rlrun sandbox", opt);
  }
  return 1;
}

/* setmetatable without finalizers: a __gc would run at lua_close or in a
 * collection outside any call, where no budget or deadline applies. */
static int lh_setmetatable(lua_State *L) {
  int t = lua_type(L, 2);
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
  if (t == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL)
      return luaL_error(L, "setmetatable: __gc metamethods are not allowed in the rlrun sandbox");
    lua_pop(L, 1);
  }
  if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
    return luaL_error(L, "cannot change a protected metatable");
  lua_settop(L, 2);
  lua_setmetatable(L, 1);
  return 1;
}

static int lh_no_random(lua_State *L) {
  return luaL_error(L, "math.random is disabled in the rlrun sandbox (results must be "
                       "reproducible); use the rng argument of prompts(n, rng)");
}

static void lh_default_log(void *ud, const char *script, const char *line) {
  (void)ud;
  fprintf(stderr, "[%s] %s\n", script, line);
}

/* Build the allow-listed environment in a fresh state (runs protected). */
static int lh_sandbox(lua_State *L) {
  static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
                                  {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
                                  {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
  for (const luaL_Reg *l = libs; l->name; l++) {
    luaL_requiref(L, l->name, l->func, 1);
    lua_pop(L, 1);
  }
  static const char *const keep[] = {
      "assert", "error",  "getmetatable", "ipairs", "next",     "pairs",    "pcall",
      "rawequal", "rawget", "rawlen",     "rawset", "select",   "setmetatable", "tonumber",
      "tostring", "type",   "xpcall",     "_G",     "_VERSION", "print",    "collectgarbage",
      "string",   "table",  "math",       "utf8",   NULL};
  lua_pushglobaltable(L);
  /* Collect the names to drop first: assigning nil during lua_next is allowed,
   * but a separate pass keeps it obvious. */
  lua_newtable(L);
  int ndrop = 0;
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; keep[i] && !ok; i++) ok = !strcmp(lua_tostring(L, -1), keep[i]);
    if (!ok) {
      lua_pushvalue(L, -1);
      lua_rawseti(L, -3, ++ndrop);
    }
  }
  for (int i = 1; i <= ndrop; i++) {
    lua_rawgeti(L, -1, i);
    lua_pushnil(L);
    lua_rawset(L, -4);
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, lh_print);
  lua_setfield(L, -2, "print");
  lua_pushcfunction(L, lh_collectgarbage);
  lua_setfield(L, -2, "collectgarbage");
  lua_pushcfunction(L, lh_setmetatable);
  lua_setfield(L, -2, "setmetatable");
  lua_getfield(L, -1, "string");
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  lh_pattern_open(L); /* find, match, gmatch, gsub that the limits can stop */
  lua_pop(L, 1);
  lh_lib_open(L); /* xpcall, string.rep, table.insert/remove/move that the limits can stop */
  lua_getfield(L, -1, "math");
  lua_pushcfunction(L, lh_no_random);
  lua_setfield(L, -2, "random");
  lua_pushcfunction(L, lh_no_random);
  lua_setfield(L, -2, "randomseed");
  lua_pop(L, 2);
  lh_rng_register(L);
  return 0;
}

/* Load the script text (source only) and run its top level (runs protected). */
static int lh_load(lua_State *L) {
  luahost *h = lua_touserdata(L, 1);
  char chunkname[520];
  snprintf(chunkname, sizeof chunkname, "@%s", h->name);
  /* As the lua command (luaL_loadfile) reads a file: a UTF-8 BOM and a first
   * line starting with '#' (#!/usr/bin/env lua) are skipped, the newline kept
   * so that line numbers stay the file's. */
  const char *text = h->src;
  size_t len = h->len;
  if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) text += 3, len -= 3;
  if (len > 0 && text[0] == '#') {
    const char *nl = memchr(text, '\n', len);
    const size_t skip = nl ? (size_t)(nl - text) : len;
    text += skip, len -= skip;
  }
  int st = luaL_loadbufferx(L, text, len, chunkname, "t");
  if (st != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    if (m && strstr(m, "binary chunk"))
      lua_pushfstring(L, "%s: %s; rlrun runs Lua source text only (no precompiled chunks)",
                      h->name, m);
    return lua_error(L);
  }
  lua_Debug ar;
  lua_pushvalue(L, -1);
  lua_getinfo(L, ">S", &ar);
  snprintf(h->short_src, sizeof h->short_src, "%s", ar.short_src);
  lua_call(L, 0, 0);
  return 0;
}

static int lh_panic(lua_State *L) {
  fprintf(stderr, "rlrun: unprotected Lua error: %s\n", lua_tostring(L, -1));
  abort();
}

/* Create the state, the sandbox, and load the script. */
static int lh_start(luahost *h, rl_err *e) {
  h->mem_used = 0;
  h->L = lua_newstate(lh_alloc, h);
  if (!h->L)
    return rl_errf(e, RL_EXIT_USAGE, "%s: cannot create a Lua state within the memory limit "
                                     "(%zu bytes)", h->name, h->lim.memory_bytes);
  lua_atpanic(h->L, lh_panic);
  if (lh_call(h, lh_sandbox, h, 1, "setting up the sandbox", RL_EXIT_FAIL, e)) return e->code;
  return lh_call(h, lh_load, h, 1, "while loading the script", RL_EXIT_USAGE, e);
}

luahost *luahost_open_string(const char *name, const char *src, size_t len,
                             const luahost_limits *lim, rl_err *e) {
  luahost *h = rl_xcalloc(1, sizeof *h);
  snprintf(h->name, sizeof h->name, "%s", name);
  h->src = rl_xmalloc(len + 1);
  memcpy(h->src, src, len);
  h->src[len] = 0;
  h->len = len;
  h->lim = lim ? *lim : luahost_default_limits();
  h->log = lh_default_log;
  snprintf(h->reward_fn, sizeof h->reward_fn, "reward");
  snprintf(h->reward_batch_fn, sizeof h->reward_batch_fn, "reward_batch");
  if (lh_start(h, e)) {
    luahost_close(h);
    return NULL;
  }
  return h;
}

luahost *luahost_open(const char *path, const luahost_limits *lim, rl_err *e) {
  char *src;
  size_t len;
  if (rl_read_file(path, &src, &len, e)) {
    rl_err_prefix(e, "reading Lua script: ");
    return NULL;
  }
  luahost *h = luahost_open_string(path, src, len, lim, e);
  free(src);
  return h;
}

void luahost_close(luahost *h) {
  if (!h) return;
  if (h->L) lua_close(h->L);
  free(h->src);
  free(h);
}

int luahost_reset(luahost *h, rl_err *e) {
  if (h->L) lua_close(h->L);
  h->L = NULL;
  return lh_start(h, e);
}

void luahost_set_log(luahost *h, luahost_log_fn fn, void *ud) {
  h->log = fn ? fn : lh_default_log;
  h->log_ud = ud;
}

struct lh_has_args {
  const char *fn;
  int found;
};

static int lh_has_k(lua_State *L) {
  struct lh_has_args *a = lua_touserdata(L, 1);
  lua_pushglobaltable(L);
  a->found = lua_getfield(L, -1, a->fn) == LUA_TFUNCTION && !lua_iscfunction(L, -1); /* the script's, not print */
  return 0;
}

int luahost_has(luahost *h, const char *fn) {
  struct lh_has_args a = {fn, 0};
  rl_err e;
  return lh_call(h, lh_has_k, &a, 1, "looking up a function", RL_EXIT_FAIL, &e) ? 0 : a.found;
}

struct lh_fns_args {
  char *buf;
  size_t n;
};

static int lh_cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Collect the global Lua (not C) functions, sort them, join them into buf. */
static int lh_fns_k(lua_State *L) {
  struct lh_fns_args *a = lua_touserdata(L, 1);
  const char *names[64];
  int k = 0;
  lua_pushglobaltable(L);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (k < 64 && lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TFUNCTION &&
        !lua_iscfunction(L, -1))
      names[k++] = lua_tostring(L, -2); /* the key stays referenced by the global table */
    lua_pop(L, 1);
  }
  qsort(names, (size_t)k, sizeof *names, lh_cmp_str);
  size_t used = 0;
  a->buf[0] = 0;
  for (int i = 0; i < k && used < a->n; i++)
    used += (size_t)snprintf(a->buf + used, a->n - used, "%s%s", i ? ", " : "", names[i]);
  return 0;
}

void luahost_functions(luahost *h, char *buf, size_t n) {
  if (!n) return;
  buf[0] = 0;
  struct lh_fns_args a = {buf, n};
  rl_err e;
  if (lh_call(h, lh_fns_k, &a, 1, "listing the functions", RL_EXIT_FAIL, &e)) buf[0] = 0;
}

int luahost_set_reward_function(luahost *h, const char *name, rl_err *e) {
  size_t len = name ? strlen(name) : 0;
  int ok = len > 0 && len <= LUAHOST_MAX_FN && (isalpha((unsigned char)name[0]) || name[0] == '_');
  for (size_t i = 0; ok && i < len; i++) ok = isalnum((unsigned char)name[i]) || name[i] == '_';
  if (!ok)
    return rl_errf(e, RL_EXIT_USAGE, "%s: reward function '%s' is not a Lua function name (letters, digits and "
                                     "'_', not starting with a digit, at most %d characters)",
                   h->name, name ? name : "", LUAHOST_MAX_FN);
  snprintf(h->reward_fn, sizeof h->reward_fn, "%s", name);
  snprintf(h->reward_batch_fn, sizeof h->reward_batch_fn, "%s_batch", name);
  return 0;
}

const char *luahost_reward_function(const luahost *h) { return h->reward_fn; }

size_t luahost_memory(luahost *h) { return h->mem_used; }

/* ------------------------------------------------------------------ rng */

/* The block function lives in kernels/formats.h (one implementation for the
 * whole tree: stochastic rounding, this rng, the sampler). */
void luahost_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  qf_philox4x32(ctr, key, out);
}

void luahost_rng_init(luahost_rng *r, uint64_t seed, int64_t iteration) {
  r->seed = seed;
  r->iteration = iteration;
  r->counter = 0;
}

uint64_t luahost_rng_u64(luahost_rng *r) {
  uint64_t k = r->counter++, it = (uint64_t)r->iteration;
  uint32_t ctr[4] = {(uint32_t)k, (uint32_t)(k >> 32), (uint32_t)it, (uint32_t)(it >> 32)};
  uint32_t key[2] = {(uint32_t)r->seed, (uint32_t)(r->seed >> 32) ^ 0x7461736bu};
  uint32_t x[4];
  luahost_philox4x32(ctr, key, x);
  return (uint64_t)x[0] | (uint64_t)x[1] << 32;
}

double luahost_rng_float(luahost_rng *r) {
  return (double)(luahost_rng_u64(r) >> 11) * 0x1.0p-53;
}

int64_t luahost_rng_int(luahost_rng *r, int64_t a, int64_t b) {
  uint64_t range = (uint64_t)b - (uint64_t)a + 1; /* 0: the full 64-bit range */
  uint64_t u = luahost_rng_u64(r);
  if (range == 0) return (int64_t)u;
  uint64_t limit = UINT64_MAX - (UINT64_MAX % range + 1) % range; /* last unbiased value */
  while (u > limit) u = luahost_rng_u64(r);
  return (int64_t)((uint64_t)a + u % range);
}

static int lh_rng_int(lua_State *L) {
  luahost_rng *r = luaL_checkudata(L, 1, "rlrun.rng");
  lua_Integer a = 1, b;
  if (lua_gettop(L) >= 3) a = luaL_checkinteger(L, 2), b = luaL_checkinteger(L, 3);
  else b = luaL_checkinteger(L, 2);
  if (a > b) return luaL_error(L, "rng:int(a, b) needs a <= b (got %I, %I)", a, b);
  lua_pushinteger(L, luahost_rng_int(r, a, b));
  return 1;
}

static int lh_rng_float(lua_State *L) {
  luahost_rng *r = luaL_checkudata(L, 1, "rlrun.rng");
  lua_pushnumber(L, luahost_rng_float(r));
  return 1;
}

static int lh_rng_draws(lua_State *L) {
  luahost_rng *r = luaL_checkudata(L, 1, "rlrun.rng");
  lua_pushinteger(L, (lua_Integer)r->counter);
  return 1;
}

void lh_rng_register(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"int", lh_rng_int}, {"float", lh_rng_float}, {"draws", lh_rng_draws}, {NULL, NULL}};
  luaL_newmetatable(L, "rlrun.rng");
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable"); /* getmetatable(rng) → false: scripts cannot swap methods */
  lua_pop(L, 1);
}

void lh_rng_push(lua_State *L, uint64_t seed, int64_t iteration) {
  luahost_rng *r = lua_newuserdatauv(L, sizeof *r, 0);
  luahost_rng_init(r, seed, iteration);
  luaL_setmetatable(L, "rlrun.rng");
}
