/* pattern.h — Lua 5.4 string patterns for the sandbox, with their work
 * counted: string.find, string.match, string.gmatch and string.gsub.
 *
 * Why not the stock ones: they run in C, where the count hook never fires,
 * so a backtracking pattern ("a*a*a*a*a*b" on 30 000 a's) ran past every
 * budget and deadline. These follow the reference manual (§6.4, §6.4.1) —
 * same results, same error messages — and charge their work to the call's
 * instruction budget:
 *   one step = one attempt to match (the rest of) a pattern at a subject
 *              position, or one subject byte that a repetition (* + -), a
 *              %b scan or a back-reference reads;
 *   every PAT_CHARGE_EVERY steps the steps count as that many instructions
 *   and the budget and the deadline are checked, as the count hook checks
 *   them; the remainder is charged when the function returns.
 * A plain search (find's 4th argument, or a pattern without any of
 * ^$*+?.([%-) is linear (memmem) and not counted.
 *
 * A pattern is read into a list of items first (sets and classes become
 * 256-bit masks, so each byte costs one bit test); a part that cannot be
 * read (a missing ']', a '%' at the end, …) becomes an item that raises
 * Lua's error when matching reaches it, so a malformed pattern fails exactly
 * where the stock matcher fails. */
#ifndef RLRUN_LUA_PATTERN_H
#define RLRUN_LUA_PATTERN_H

#include <lua.h>

/* Steps between two checks of the budget and the deadline (microseconds apart). */
#define PAT_CHARGE_EVERY 4096

/* Replace find, match, gmatch and gsub in the table at the top of the stack
 * (the sandbox's string table, which is also the strings' __index). The
 * state must belong to a luahost: the work is charged to its limits. */
void lh_pattern_open(lua_State *L);

#endif
