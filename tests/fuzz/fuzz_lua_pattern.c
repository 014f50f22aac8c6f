/* fuzz_lua_pattern.c — differential libFuzzer target for the sandbox's
 * string.find/match/gmatch/gsub (lua/pattern.c) against the stock Lua 5.4
 * library: an input is a pattern and a subject; both states run the same
 * script on them and must print the same results, or the same error message.
 * A difference aborts (the input is the reproducer).
 *
 * The stock matcher has no step limit, so inputs whose backtracking could run
 * for minutes there are skipped (more than 3 repetition items, a subject over
 * 64 bytes); the sandbox's own limits are tests/test_lua_pattern.c's business.
 * Neither string may hold a NUL (the sample fields are C strings).
 *
 *   make fuzz && build-fuzz/fuzz_lua_pattern -runs=500000 -max_len=128 -timeout=10 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/host.h"

/* ser() turns results into text (type and escaped bytes); both(subject,
 * pattern) runs every function under pcall and joins the results. */
static const char script[] =
    "local function ser(...)\n"
    "  local n, out = select('#', ...), {}\n"
    "  for i = 1, n do\n"
    "    local v = select(i, ...)\n"
    "    if type(v) == 'string' then out[i] = '\"' .. v:gsub('[^%w ]', function(c) return '\\\\' .. c:byte() .. ';' end) .. '\"'\n"
    "    else out[i] = (math.type(v) or type(v)) .. ':' .. tostring(v) end\n"
    "  end\n"
    "  return n .. '(' .. table.concat(out, ',') .. ')'\n"
    "end\n"
    "local function gm(s, p, init)\n"
    "  local out = {}\n"
    "  for a, b, c in string.gmatch(s, p, init) do\n"
    "    out[#out + 1] = ser(a, b, c)\n"
    "    if #out >= 50 then break end\n"
    "  end\n"
    "  return table.concat(out, '|')\n"
    "end\n"
    "local function try(f, ...)\n"
    "  local r = table.pack(pcall(f, ...))\n"
    "  if r[1] then return ser(table.unpack(r, 2, r.n)) end\n"
    "  return 'E:' .. tostring(r[2])\n"
    "end\n"
    "function both(s, p)\n"
    "  return table.concat({try(string.find, s, p), try(string.find, s, p, -3), try(string.find, s, p, 2, true),\n"
    "                       try(string.match, s, p), try(string.match, s, p, 4), try(gm, s, p), try(gm, s, p, 3),\n"
    "                       try(string.gsub, s, p, '<%0>'), try(string.gsub, s, p, '%%', 2),\n"
    "                       try(string.gsub, s, p, {a = 'A', [''] = 'E'}), try(string.gsub, s, p, string.upper)}, '\\n')\n"
    "end\n"
    "function reward(s) print(both(s.completion, s.prompt)) return 0 end\n";

static luahost *H;
static lua_State *S;
static char got[1 << 16];

static void keep(void *ud, const char *name, const char *line) {
  (void)ud, (void)name;
  snprintf(got, sizeof got, "%s", line);
}

static void setup(void) {
  rl_err e;
  H = luahost_open_string("fuzz.lua", script, strlen(script), NULL, &e);
  if (!H) {
    fprintf(stderr, "sandbox: %s\n", e.msg);
    abort();
  }
  luahost_set_log(H, keep, NULL);
  S = luaL_newstate();
  luaL_openlibs(S);
  if (luaL_loadbuffer(S, script, strlen(script), "@fuzz.lua") || lua_pcall(S, 0, 0, 0)) {
    fprintf(stderr, "stock: %s\n", lua_tostring(S, -1));
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!H) setup();
  if (size < 1) return 0;
  size_t lp = data[0] % 33; /* the pattern's length, then the subject */
  if (lp > size - 1 || size - 1 - lp > 64) return 0;
  char p[40], s[72];
  memcpy(p, data + 1, lp), p[lp] = 0;
  memcpy(s, data + 1 + lp, size - 1 - lp), s[size - 1 - lp] = 0;
  if (strlen(p) != lp || strlen(s) != size - 1 - lp) return 0; /* a NUL inside */
  int reps = 0;
  for (size_t i = 0; i < lp; i++) reps += p[i] == '*' || p[i] == '+' || p[i] == '-' || p[i] == '?';
  if (reps > 3) return 0;
  lua_settop(S, 0);
  lua_getglobal(S, "both");
  lua_pushstring(S, s);
  lua_pushstring(S, p);
  const char *want = lua_pcall(S, 2, 1, 0) == LUA_OK ? lua_tostring(S, -1) : NULL;
  luahost_sample smp = {.prompt = p, .completion = s};
  luahost_reward r;
  rl_err e;
  got[0] = 0;
  if (!want || luahost_reward_one(H, &smp, &r, &e) || strcmp(want, got)) {
    fprintf(stderr, "pattern '%s' subject '%s'\nstock:\n%s\nsandbox:\n%s\n", p, s, want ? want : "(failed)", got);
    abort();
  }
  return 0;
}
