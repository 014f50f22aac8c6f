/* host_lib.c — library functions of the sandbox replaced so that the limits
 * hold in them (lua/host.h, "Library calls"). Each runs a C loop, or runs
 * script code, where neither the count hook nor the memory cap would stop it:
 *   xpcall        the script's message handler is skipped for a limit error
 *                 (Lua calls it with hooks off there);
 *   string.rep    of an empty string with an empty separator is "" at once;
 *   table.insert, table.remove   charge each element they move;
 *   table.move    charges its range before it runs.
 * Everything else about them (results, error messages) is the stock
 * functions'. The pattern functions are lua/pattern.c's. */
#include "lua/host_int.h"

/* table.move(a1, f, e, t [, a2]) charged e − f + 1 instructions before Lua's
 * own runs: its loop is C, where the count hook does not fire, and moving nils
 * allocates nothing, so neither the budget nor the memory cap stopped
 * table.move({}, 1, 1e11, 2). A range over the budget fails at once with the
 * budget's message; any other argument error is the stock function's. */
static int lh_table_move(lua_State *L) {
  int fi = 0, ei = 0; /* integers, or floats with an integral value (1e11), as the stock move takes them */
  const lua_Integer f = lua_tointegerx(L, 2, &fi), e = lua_tointegerx(L, 3, &ei);
  if (fi && ei) {
    if (e >= f) {
      const uint64_t n = (uint64_t)e - (uint64_t)f + 1u; /* no signed overflow */
      lh_charge(L, n > ((uint64_t)1 << 62) ? (int64_t)1 << 62 : (int64_t)n, 1);
    }
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* xpcall's message handler runs where the error is raised, before the stack
 * unwinds; for a limit error raised by the hook, Lua has switched hooks off
 * there (they come back only at the enclosing pcall), so a script's handler
 * ran with no budget and no deadline: xpcall(loop, loop) never ended. This
 * handler hands a limit error on untouched; any other error goes to the
 * script's handler (its upvalue) as with the stock xpcall. */
static int lh_xpcall_handler(lua_State *L) {
  if (lh_host(L)->limit_hit) return 1;
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* xpcall(f, msgh, ...) with msgh behind lh_xpcall_handler; results as the stock one's. */
static int lh_xpcall(lua_State *L) {
  const int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, lh_xpcall_handler, 1);
  lua_replace(L, 2);
  lua_pushboolean(L, 1);
  lua_pushvalue(L, 1);
  lua_rotate(L, 3, 2); /* true, f below f's arguments */
  if (lua_pcall(L, n - 2, LUA_MULTRET, 2) != LUA_OK) {
    lua_pushboolean(L, 0);
    lua_pushvalue(L, -2);
    return 2;
  }
  return lua_gettop(L) - 2;
}

/* string.rep(s, n [, sep]) with s and sep empty is "" at once: the stock loop
 * made n empty copies, a C loop of up to 2^63 turns that allocates nothing
 * (string.rep('', math.maxinteger) never returned). Else the stock rep (its
 * upvalue), whose work the memory cap bounds. */
static int lh_string_rep(lua_State *L) {
  size_t l, lsep;
  luaL_checklstring(L, 1, &l);
  luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (l == 0 && lsep == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* table.insert and table.remove, after the reference manual (§6.6), with each
 * element moved charged as one instruction (the budget and the deadline
 * checked every 4096): the stock loops run to #t, which a __len metamethod
 * makes anything, and moving nils allocates nothing, so
 * table.insert(setmetatable({}, {__len = …2^62…}), 1, x) ran forever. */
static lua_Integer lh_table_len(lua_State *L) {
  if (lua_type(L, 1) != LUA_TTABLE) { /* a table-like object, as the stock functions accept */
    int ok = lua_getmetatable(L, 1);
    if (ok) {
      static const char *const need[] = {"__index", "__newindex", "__len"};
      for (int i = 0; i < 3 && ok; i++) {
        lua_pushstring(L, need[i]);
        ok = lua_rawget(L, -2) != LUA_TNIL;
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
    if (!ok) luaL_checktype(L, 1, LUA_TTABLE); /* raises the stock message */
  }
  return luaL_len(L, 1);
}

static void lh_table_moved(lua_State *L, uint64_t *moved) {
  if ((++*moved & 4095u) == 0) lh_charge(L, 4096, 1);
}

static int lh_table_insert(lua_State *L) {
  const lua_Integer size = lh_table_len(L);
  const lua_Integer e = (lua_Integer)((lua_Unsigned)size + 1u); /* the first empty slot */
  lua_Integer pos = e;
  uint64_t moved = 0;
  switch (lua_gettop(L)) {
  case 2: break;
  case 3:
    pos = luaL_checkinteger(L, 2);
    luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
    for (lua_Integer i = e; i > pos; i--) {
      lua_geti(L, 1, i - 1);
      lua_seti(L, 1, i);
      lh_table_moved(L, &moved);
    }
    break;
  default: return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lh_charge(L, (int64_t)(moved & 4095u), 0);
  lua_seti(L, 1, pos); /* the value, still on top */
  return 0;
}

static int lh_table_remove(lua_State *L) {
  const lua_Integer size = lh_table_len(L);
  lua_Integer pos = luaL_optinteger(L, 2, size);
  uint64_t moved = 0;
  if (pos != size)
    luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1, "position out of bounds"); /* #1, as the stock remove says */
  lua_geti(L, 1, pos); /* the result */
  for (; pos < size; pos++) {
    lua_geti(L, 1, pos + 1);
    lua_seti(L, 1, pos);
    lh_table_moved(L, &moved);
  }
  lh_charge(L, (int64_t)(moved & 4095u), 0);
  lua_pushnil(L);
  lua_seti(L, 1, pos);
  return 1;
}

/* Install the replacements into the global table at the top of the stack. */
void lh_lib_open(lua_State *L) {
  lua_pushcfunction(L, lh_xpcall);
  lua_setfield(L, -2, "xpcall");
  lua_getfield(L, -1, "string");
  lua_getfield(L, -1, "rep");
  lua_pushcclosure(L, lh_string_rep, 1); /* the stock rep as its upvalue */
  lua_setfield(L, -2, "rep");
  lua_pop(L, 1);
  lua_getfield(L, -1, "table");
  lua_getfield(L, -1, "move");
  lua_pushcclosure(L, lh_table_move, 1); /* the stock move as its upvalue */
  lua_setfield(L, -2, "move");
  lua_pushcfunction(L, lh_table_insert);
  lua_setfield(L, -2, "insert");
  lua_pushcfunction(L, lh_table_remove);
  lua_setfield(L, -2, "remove");
  lua_pop(L, 1);
}
