/* host_int.h — internals shared by lua/host.c (state, sandbox, limits) and
 * lua/host_calls.c (reward and prompts calls, JSON). Not for other modules. */
#ifndef RLRUN_LUA_HOST_INT_H
#define RLRUN_LUA_HOST_INT_H

#include <lauxlib.h>
#include <lua.h>

#include "lua/host.h"

enum luahost_limit { LH_LIMIT_NONE = 0, LH_LIMIT_INSTR, LH_LIMIT_TIME, LH_LIMIT_MEMORY };

struct luahost {
  lua_State *L;
  char name[512];      /* the script as messages name it */
  char short_src[128]; /* Lua's (possibly shortened) form of it, rewritten to `name` */
  char *src;           /* the text, kept for luahost_reset */
  char reward_fn[64];       /* the reward function's name (default "reward") */
  char reward_batch_fn[72]; /* its batch form: reward_fn + "_batch" */
  size_t len;
  luahost_limits lim;
  size_t mem_used;     /* bytes the allocator has handed out */
  /* Per call (lh_call): */
  int in_call;
  int64_t budget, executed; /* instructions allowed / counted */
  double deadline;          /* rl_now() seconds */
  int hook_every;           /* count-hook period */
  int limit_hit;            /* enum luahost_limit, first one hit in this call */
  int limit_line;           /* script line where it was hit (0: unknown) */
  int mem_refused;          /* the allocator refused a request in this call */
  int mem_line;             /* script line of the latest refusal */
  int print_lines;
  int bad_output;           /* the call returned a value of the wrong shape (lh_raise_output) */
  luahost_log_fn log;
  void *log_ud;
};

/* The host that owns a state (the allocator's user data). */
luahost *lh_host(lua_State *L);
/* Run fn(arg) inside lua_pcall under the per-call limits (scaled by `scale`).
 * On failure builds "<script>:<line>: what (context)" in e with `code`. */
int lh_call(luahost *h, lua_CFunction fn, void *arg, double scale, const char *context, int code,
            rl_err *e);
/* Charge `work` done inside a C library function (lua/pattern.c's matching
 * steps) to the call's instruction budget, one unit per instruction; with
 * `check`, also check the budget and the deadline as the count hook does and
 * raise the same limit error (and the same message from lh_call) on a hit.
 * Outside a call it does nothing. */
void lh_charge(lua_State *L, int64_t work, int check);
/* Raise a Lua error whose message is exactly `msg` (no position added). */
int lh_raise(lua_State *L, const char *msg);
/* The same for a result of the wrong shape: lh_call then fails with
 * RL_EXIT_USAGE (bad input), not its `code` (a failing script). */
int lh_raise_output(lua_State *L, const char *msg);
/* Install the sandbox's own xpcall, string.rep, table.insert, table.remove and
 * table.move (lua/host_lib.c) into the global table at the top of the stack. */
void lh_lib_open(lua_State *L);
/* Register the rng type (metatable "rlrun.rng") in a fresh state. */
void lh_rng_register(lua_State *L);
/* Push a new rng userdata for (seed, iteration). */
void lh_rng_push(lua_State *L, uint64_t seed, int64_t iteration);

#endif
