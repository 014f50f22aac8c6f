/* test_lua_pattern.c — the sandbox's string.find/match/gmatch/gsub
 * (lua/pattern.c): the same results and error messages as the stock Lua
 * library (the oracle: a plain luaL_newstate with luaL_openlibs) on a corpus
 * of every pattern feature and on random patterns, and pattern matching that
 * the deadline and the instruction budget stop. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "lua/host.h"

/* Helpers both states share: ser() turns results into text (type, escaped
 * bytes), F/M/G/S call find, match, gmatch (every iteration) and gsub, and
 * run(i) runs case i under pcall. Errors come back as "E:<message>"; their
 * positions name lines of this text, the same in both states. */
static const char *const prelude =
    "local function ser(...)\n"
    "  local n, out = select('#', ...), {}\n"
    "  for i = 1, n do\n"
    "    local v = select(i, ...)\n"
    "    if type(v) == 'string' then\n"
    "      local t = {}\n"
    "      for k = 1, #v do\n"
    "        local b = v:byte(k)\n"
    "        t[k] = (b >= 32 and b < 127 and b ~= 92) and string.char(b) or ('\\\\' .. b .. ';')\n"
    "      end\n"
    "      out[i] = '\"' .. table.concat(t) .. '\"'\n"
    "    else\n"
    "      out[i] = (math.type(v) or type(v)) .. ':' .. tostring(v)\n"
    "    end\n"
    "  end\n"
    "  return n .. '(' .. table.concat(out, ',') .. ')'\n"
    "end\n"
    "function F(...) return ser(string.find(...)) end\n"
    "function M(...) return ser(string.match(...)) end\n"
    "function S(...) return ser(string.gsub(...)) end\n"
    "function G(...)\n"
    "  local it, out = string.gmatch(...), {}\n"
    "  while #out < 200 do\n"
    "    local r = table.pack(it())\n"
    "    if r[1] == nil then break end\n"
    "    out[#out + 1] = ser(table.unpack(r, 1, r.n))\n"
    "  end\n"
    "  return #out .. ':' .. table.concat(out, '|')\n"
    "end\n"
    "function run(i)\n"
    "  local ok, r = pcall(C[i])\n"
    "  if ok then return r end\n"
    "  return 'E:' .. tostring(r)\n"
    "end\n"
    "function reward(s) print(run(s.index)) return 0 end\n";

/* The corpus: one Lua expression per case. */
static const char *const corpus[] = {
    /* plain text, init, plain flag */
    "F('hello world', 'o w')", "F('hello world', 'o', 6)", "F('hello', 'xyz')", "F('a.b', '.', 1, true)",
    "F('a.b', '%.')", "F('a+b', '+', 1, true)", "F('a+b', 'a+b')", "F('a*b', 'a*', 1, 1)", "F('aab', 'a+', 1, false)",
    "F('', '')", "F('abc', '', 10)", "F('abc', '', 4)", "F('abc', '', -1)", "F('abc', 'b', -10)", "F('abc', 'b', 0)",
    "F('abc', 'c', -1)", "F('abc', 'a', -1)", "F('abc', 'a', math.maxinteger)", "F('abc', 'a', math.mininteger)",
    "F('abc)', 'c)')", "F('a]b', ']')", "F('x^y', '^')", "F('x^y', 'x^')", "F(12345, 34)", "F('abc', 'b', nil, true)",
    /* anchors */
    "F('abc', '^b', 2)", "F('abc', '^a', 2)", "F('xy$', 'y$')", "F('xy$', 'y%$')", "F('xy', 'y$')",
    "F('xy', '^xy$')", "F('xy', '^$')", "F('', '^$')", "F('abc', '$')", "M('a$b', 'a$b')", "M('ab$', 'b$$')",
    "M('x$y', '$y')", "M('^a', '^^a')", "M('abc', '^abc$')", "M('abc', '^b')", "M('abc', 'b$')",
    /* classes and their complements */
    "M('Hello World 123', '%a+')", "M('Hello World 123', '%A+')", "M('Hello World 123', '%d+')",
    "M('Hello World 123', '%D+')", "M('Hello World 123', '%s+')", "M(' \\t\\nx', '%S+')", "M('abcDEF', '%l+')",
    "M('abcDEF', '%L+')", "M('abcDEF', '%u+')", "M('abcDEF', '%U+')", "M('a_1 b', '%w+')", "M('a_1 b', '%W+')",
    "M('0x1fg', '%x+')", "M('0x1fg', '%X+')", "M('a,.;b', '%p+')", "M('a,.;b', '%P+')", "M('a\\t\\1\\127b', '%c+')",
    "M('a\\t\\1\\127b', '%C+')", "M(' a~ ', '%g+')", "M(' a~ ', '%G+')", "M('a\\0b', 'a%zb')", "M('a\\0b', '%Z+')",
    "M('a\\0b\\0c', '[^%z]+')", "M('\\200\\255x', '[\\128-\\255]+')", "M('q', '%q')", "M('Q', '%Q')",
    /* escapes */
    "M('a.b*c', '%.')", "M('a%b', '%%')", "M('(x)', '%((.-)%)')", "M('a-b', '%-')", "M('a]', '%]')",
    "M('a\\0b', '%\\0')", "M('x', '%')", "M('x', 'x%')",
    /* sets */
    "M('hello', '[aeiou]+')", "M('hello', '[^aeiou]+')", "M('a-z', '[a-]+')", "M('z-a', '[-a]+')", "M(']]a', '[]]+')",
    "M('^^a', '[%^]+')", "M('^^a', '[^^]+')", "M('abc123', '[%d]+')", "M('abc123', '[%a%d]+')",
    "M('a_b-c', '[%w_]+')", "M('A1b2', '[A-Z0-9]+')", "M('abc', '[c-a]')", "M('b]', '[%]]')", "M('a%]', '[a-%%]+')",
    "M('x-y', '[%a-z]+')", "M(']', '[]')", "M('a', '[^]')", "M('a', '[a')", "M('a', '[%')", "M('a', '[a%]')",
    "M('a', '[^]]')", "F('aXb', '[%u]')", "M('a]b', '[^]]+')", "M('+-', '[+--]+')", "M('a', '[]-a]')",
    /* repetitions */
    "M('aaa', 'a*')", "M('aaa', 'a+')", "M('aaa', 'a-')", "M('aaa', 'a?')", "M('aaab', 'a-b')", "M('aaab', 'a*b')",
    "M('b', 'a+b')", "M('ab', 'a?b')", "M('b', 'a?b')", "M('aab', 'a?ab')", "M('xaaay', 'xa-y')", "M('xy', 'x.-y')",
    "M('<a><b>', '<(.-)>')", "M('<a><b>', '<(.*)>')", "M('**', '**')", "M('+', '+')", "M('a?', '?')", "M('a-', '-')",
    "M('-', '--')", "M('a', '.-$')", "M('aaa', 'a-$')", "F('hello', 'l*')", "F('hello', 'l-o')", "F('aaa', 'a-', 2)",
    "M('abc', '[ab]*c')", "M('aaa', '.*a')",
    /* captures and position captures */
    "M('hello world', '(%a+) (%a+)')", "M('key=val', '(%w+)=(%w+)')", "M('abc', '()b()')", "M('abc', '(a)(b)(c)')",
    "M('abc', '((a)(b))')", "M('abc', '(a(b(c)))')", "M('abc', '()')", "M('', '()')", "M('abc', 'a()')",
    "F('abc', '(b)')", "F('abc', '()c')", "M('abc', '(a')", "F('abc', '(a')", "M('abc', 'a)')", "M('abc', '(a))')",
    "M('abc', ')')", "M('abc', '(()')", "M(string.rep('a', 40), string.rep('(a)', 32))",
    "M(string.rep('a', 40), string.rep('(a)', 33))", "M('aaa', string.rep('(', 33))",
    /* back-references */
    "M('abc', '(a)%1')", "M('aa', '(a)%1')", "M('abab', '(ab)%1')", "M('abcabc', '(a(b)c)%1')",
    "M('abcb', '(a(b)c)%2')", "M('xx', '(x)%2')", "M('xx', '%1(x)')", "M('xx', '(x%1)')", "M('xx', '()%1')",
    "M('xx', '(x)%0')", "M([['hi' \"there\"]], [[([\"'])(.-)%1]])", "M('aaaa', '(a*)%1')", "M('abab', '(ab)%1*')",
    /* %b */
    "M('f(a(b)c) d', '%b()')", "M('((', '%b()')", "M('(x)x', '%b()x')", "M('[a[b]]', '%b[]')", "M('abc', '%b')",
    "M('abc', '%ba')", "M('\"q\" r', '%b\"\"')", "M('x(a)y', 'x%b()y')", "M('(a)*', '%b()*')", "M('aXbXc', '%bXX')",
    "S('f(1) g(2,3)', '%b()', '[]')",
    /* %f */
    "M('THE (quick) fox', '%f[%a]%a+')", "G('THE (quick) fox', '%f[%a]%a+')", "S('hello world', '%f[%w]%w+', 'W')",
    "M('abc', '%f[%l]')", "F('abc', '%f[%z]')", "F('abc', '%f[^%z]')", "F('abc', '%f[%a]', 2)", "M('a', '%f')",
    "M('a', '%fa')", "M('a', '%f[a')", "F('aaa', '%f[a]a+%f[^a]')", "G('the cat the', '%f[%a]the%f[%A]')",
    /* gmatch, incl. empty matches and init */
    "G('one two  three', '%a+')", "G('a,b,,c', '([^,]*)')", "G('abc', '')", "G('abc', 'a*')", "G('baaac', 'a*')",
    "G('k1=v1, k2=v2', '(%w+)=(%w+)')", "G('abc', '()')", "G('hello', 'l', 4)", "G('hello', 'l', -2)",
    "G('hello', 'l', 10)", "G('hello', '', 10)", "G('hello', '', 6)", "G('^a^a', '^a')", "G('abc', '.', 0)",
    "G('abc', '(')", "G('abc', '[a')", "G('aaa', 'a-')", "G('aba', 'a?')", "G('', '')", "G('', 'x*')",
    "G('abc', 'a', math.mininteger)", "G('abc', '.', math.maxinteger)", "G('xax', 'a*$')",
    /* gsub: strings, n, anchors, empty matches */
    "S('hello world', 'o', '0')", "S('hello world', 'o', '0', 1)", "S('hello world', 'o', '0', 0)",
    "S('hello world', 'o', '0', -1)", "S('hello', '', '-')", "S('abc', '%w', '%0%0')", "S('abc', '%w', '%%')",
    "S('hello world', '(%w+)', '<%1>')", "S('hello world', '(%w+) (%w+)', '%2 %1')", "S('abc', 'b', '%1')",
    "S('abc', 'b', '%2')", "S('abc', '(b)', '%2')", "S('abc', 'b', '%x')", "S('abc', 'b', 'x%')", "S('abc', '()b', '%1')",
    "S('abc', 'b', 5)", "S('abc', 'b', 1.5)", "S('abc', '^a', 'X')", "S('aaa', '^a', 'X')", "S('abc', '^', '>')",
    "S('abc', '$', '<')", "S('abc', 'x*', '-')", "S('abc', '.-', '-')", "S('a b c', ' ', '', 1)", "S('abc', '', 'x', 2)",
    "S('abc', 'b*', '-')", "S('x = 1, y = 2', '(%w+) = (%w+)', '%2 = %1')", "S(123, 2, 5)", "S('a.b.c', '%.', '/')",
    "S('a.b.c', '.', '/', 2)", "S('abc', 'b', '%0%0%0')", "S('abc', '[^b]', 'x')", "S('\\0a\\0', '%z', 'Z')",
    "S('\\0a\\0', '\\0', 'Z')", "S('a\\0b', '.', '-')", "S('abc', '(', 'x')", "S('abc', '(', '%1')",
    "S('hello', 'l', '%0', 1.0)", "S('hello', 'l', '%0', 1.5)",
    /* gsub: tables and functions */
    "S('abc', '%w', {a = 'A', b = false})", "S('abc', '(%w)', {a = 1, c = 2.5})", "S('abc', '%w', {a = {}})",
    "S('abc', '%w', function(c) return c:upper() end)",
    "S('abc', '%w', function(c) if c == 'b' then return nil end return c .. c end)",
    "S('abc', '(%w)()', function(c, p) return c .. p end)", "S('abc', '%w', function() return false end)",
    "S('abc', '%w', function() return {} end)", "S('abc', '%w', function() return true end)",
    "S('hello world', 'l+', function(m) return #m end)", "S('abc', '(', {})", "S('abc', '()', {[1] = 'one', [3] = 3})",
    "S('abc', '', function() return 'x' end)", "S('a1b2', '%d', {['1'] = 'one'})",
    /* argument errors */
    "S('abc', '%w')", "S('abc', '%w', nil)", "S('abc', '%w', true)", "F(nil, 'a')", "F('a', nil)", "F('a', 'a', 'x')",
    "F('a', 'a', 1.5)", "M('ab', 'b', '2')", "G(nil, 'a')", "S('a', 'a', 'b', 'x')", "S('a', 'a', 'b', 1.5)",
    "F({}, 'a')", "M(3.5, '%.')",
    /* depth, long patterns (not on the C stack) */
    "M(string.rep('a', 300), string.rep('a?', 300))", "M('', string.rep('a?', 300))",
    "M(string.rep('a', 199), string.rep('a?', 199))", "M(string.rep('a', 200), string.rep('a?', 200))",
    "M(string.rep('a', 250), string.rep('(a?)', 30) .. string.rep('a?', 150))", "M('abc', string.rep('%f[a]', 300))",
    "M(string.rep('x', 1000), string.rep('x', 1000))", "F(string.rep('ab', 500) .. 'c', string.rep('ab', 20) .. 'c')",
    "F(string.rep('ab', 500) .. 'c', '(' .. string.rep('ab', 30) .. ')c')", "M('abc', string.rep('[abc]', 30))",
    "M('abc', string.rep('[xyz]?', 60) .. 'abc')", "G(string.rep('ab,', 40), string.rep('[ab]', 20) .. '(,)')",
    "S(string.rep('xy', 30), string.rep('[xy]', 60) .. '$', '%0!')", "M('a', string.rep('[', 100))",
    /* the same functions through the string metatable */
    "(function() return tostring(('hello'):find('l')) end)()",
    "(function() return select(2, ('a,b'):gsub(',', ';')) end)()",
    "(function() return table.concat({('k=v'):match('(%w)=(%w)')}, '|') end)()",
    "(function() local t = {} for w in ('a b c'):gmatch('%a') do t[#t + 1] = w end return table.concat(t) end)()",
};

/* The script with case i as C[i] (cases are Lua expressions). */
static char *oracle_script(const char *const *cases, int n) {
  size_t cap = 1 << 16, len = 0;
  char *s = malloc(cap);
  len += (size_t)snprintf(s, cap, "C = {\n");
  for (int i = 0; i < n; i++) {
    size_t need = strlen(cases[i]) + 64;
    if (len + need >= cap) s = realloc(s, cap = 2 * cap + need);
    len += (size_t)snprintf(s + len, cap - len, "function() return %s end,\n", cases[i]);
  }
  size_t need = strlen(prelude) + 8;
  if (len + need >= cap) s = realloc(s, cap = cap + need);
  snprintf(s + len, cap - len, "}\n%s", prelude);
  return s;
}

typedef struct oracle {
  lua_State *stock; /* luaL_newstate + luaL_openlibs: the reference */
  luahost *h;       /* the sandbox, with lua/pattern.c */
  char line[1 << 16];
} oracle;

static void oracle_log(void *ud, const char *script, const char *line) {
  snprintf(((oracle *)ud)->line, sizeof ((oracle *)ud)->line, "%s", line);
}

/* Load the same text, under the same chunk name, in both states. */
static int oracle_open(oracle *o, const char *text) {
  rl_err e;
  o->h = luahost_open_string("oracle.lua", text, strlen(text), NULL, &e);
  if (!o->h) {
    harness_fail(__FILE__, __LINE__, "sandbox: %s", e.msg);
    return -1;
  }
  luahost_set_log(o->h, oracle_log, o);
  o->stock = luaL_newstate();
  luaL_openlibs(o->stock);
  if (luaL_loadbuffer(o->stock, text, strlen(text), "@oracle.lua") || lua_pcall(o->stock, 0, 0, 0)) {
    harness_fail(__FILE__, __LINE__, "stock: %s", lua_tostring(o->stock, -1));
    return -1;
  }
  return 0;
}

static void oracle_close(oracle *o) {
  if (o->h) luahost_close(o->h);
  if (o->stock) lua_close(o->stock);
}

/* Run case i in both; 1 when the results are the same text. */
static int oracle_case(oracle *o, int i, const char **stock, const char **sandbox) {
  lua_settop(o->stock, 0);
  lua_getglobal(o->stock, "run");
  lua_pushinteger(o->stock, i);
  *stock = lua_pcall(o->stock, 1, 1, 0) == LUA_OK ? lua_tostring(o->stock, -1) : "(run failed)";
  if (!*stock) *stock = "(not a string)";
  luahost_sample s = {.prompt = "", .completion = "", .index = i};
  luahost_reward r;
  rl_err e;
  o->line[0] = 0;
  if (luahost_reward_one(o->h, &s, &r, &e)) snprintf(o->line, sizeof o->line, "(call failed: %s)", e.msg);
  *sandbox = o->line;
  return strcmp(*stock, *sandbox) == 0;
}

TEST(lua_pattern_corpus_matches_stock) {
  int n = (int)(sizeof corpus / sizeof *corpus);
  CHECK(n >= 150);
  char *text = oracle_script(corpus, n);
  oracle *o = calloc(1, sizeof *o);
  if (oracle_open(o, text) == 0) {
    int same = 0, errors = 0;
    const char *a, *b;
    for (int i = 1; i <= n; i++) {
      int ok = oracle_case(o, i, &a, &b);
      same += ok;
      errors += !strncmp(a, "E:", 2);
      CHECK_MSG(ok, "case %d %s:\n      stock:   %.300s\n      sandbox: %.300s", i, corpus[i - 1], a, b);
    }
    CHECK_EQ_I64(same, n);
    CHECK(errors >= 40); /* the error cases are errors, not silently something else */
    /* known answers, so that two states agreeing on a broken harness cannot pass */
    static const char *const known[][2] = {
        {"F('hello world', 'o w')", "2(integer:5,integer:7)"},
        {"M('hello', '[aeiou]+')", "1(\"e\")"},
        {"M('abc', '()b()')", "2(integer:2,integer:3)"},
        {"G('baaac', 'a*')", "3:1(\"\")|1(\"aaa\")|1(\"\")"}, /* no "" right after "aaa" */
        {"S('abc', '%w', {a = 'A', b = false})", "2(\"Abc\",integer:3)"},
        {"M('a', '[a')", ": malformed pattern (missing ']')"},
        {"M(string.rep('a', 300), string.rep('a?', 300))", ": pattern too complex"},
    };
    for (size_t k = 0; k < sizeof known / sizeof *known; k++) {
      int i = 0;
      while (i < n && strcmp(corpus[i], known[k][0])) i++;
      REQUIRE(i < n);
      oracle_case(o, i + 1, &a, &b);
      if (known[k][1][0] == ':') CHECK(!strncmp(b, "E:oracle.lua:", 13) && strstr(b, known[k][1]));
      else CHECK_STREQ(b, known[k][1]);
    }
  }
  oracle_close(o);
  free(o);
  free(text);
}

/* A tiny deterministic generator (xorshift64*): the fuzz is the same every run. */
static uint64_t fz_state = 0x9e3779b97f4a7c15ull;
static uint32_t fz_next(void) {
  fz_state ^= fz_state >> 12, fz_state ^= fz_state << 25, fz_state ^= fz_state >> 27;
  return (uint32_t)((fz_state * 0x2545f4914f6cdd1dull) >> 32);
}
static int fz_pick(int n) { return (int)(fz_next() % (uint32_t)n); }

/* Append s as a Lua string literal (every byte a decimal escape: NULs too). */
static void fz_lit(char *out, size_t cap, size_t *len, const char *s, size_t n) {
  *len += (size_t)snprintf(out + *len, cap - *len, "'");
  for (size_t i = 0; i < n; i++) *len += (size_t)snprintf(out + *len, cap - *len, "\\%d", (unsigned char)s[i]);
  *len += (size_t)snprintf(out + *len, cap - *len, "'");
}

TEST(lua_pattern_fuzz_matches_stock) {
  static const char *const atoms[] = {
      "a", "b", ".", "%a", "%d", "%s", "%w", "%W", "%p", "%x", "%u", "%l", "%c", "%z", "[ab]", "[^a]", "[a-c]",
      "[%a_]", "[]a]", "[^]b]", "[a-]", "[%]]", "%%", "%.", "%(", "*", "+", "-", "?", "(", ")", "()", "%1", "%2",
      "%b()", "%bab", "%f[%w]", "%f[%W]", "%f[a]", "^", "$", "%", "[", "]", "x", "1", " ", "%q", "a*", "b+", ".-",
      "a?", "%0", "%f", "%b(", "[a", "[%"};
  static const char alphabet[] = "aaabbb()[]%-.^$x1 2\tA\0_,";
  enum { N = 4000 };
  fz_state = 0x9e3779b97f4a7c15ull;
  size_t cap = (size_t)N * 400, len = 0;
  char *text = malloc(cap);
  len += (size_t)snprintf(text, cap, "Z = {\n");
  for (int i = 0; i < N; i++) {
    char subj[16], pat[128] = "";
    int ns = fz_pick(13), na = 1 + fz_pick(6);
    for (int k = 0; k < ns; k++) subj[k] = alphabet[fz_pick((int)sizeof alphabet - 1)];
    for (int k = 0; k < na; k++) strcat(pat, atoms[fz_pick((int)(sizeof atoms / sizeof *atoms))]);
    len += (size_t)snprintf(text + len, cap - len, "{");
    fz_lit(text, cap, &len, subj, (size_t)ns);
    len += (size_t)snprintf(text + len, cap - len, ",");
    fz_lit(text, cap, &len, pat, strlen(pat));
    int init = fz_pick(2) ? fz_pick(31) - 15 : 99; /* 99: no init argument */
    len += (size_t)snprintf(text + len, cap - len, ",%d,%d,%d,%d},\n", init, fz_pick(5), fz_pick(9),
                            fz_pick(3) ? -99 : fz_pick(4) - 1);
  }
  len += (size_t)snprintf(text + len, cap - len, "}\n"
                          "R = {'<%%0>', '[%%1]', '%%2%%1', '%%%%', 'x%%', '%%z', 7,\n"
                          "     {a = 'A', b = false, [''] = 'E', ['1'] = 'one', [2] = 'two'},\n"
                          "     function(a, ...) if a == 'a' then return nil end\n"
                          "       return select('#', ...) .. '<' .. tostring(a) .. '>' end}\n"
                          "function fz(i)\n"
                          "  local s, p, init, mode, r, n = table.unpack(Z[i])\n"
                          "  if init == 99 then init = nil end\n"
                          "  if n == -99 then n = nil end\n"
                          "  if mode == 0 then return F(s, p, init) end\n"
                          "  if mode == 1 then return F(s, p, init, true) end\n"
                          "  if mode == 2 then return M(s, p, init) end\n"
                          "  if mode == 3 then return G(s, p, init) end\n"
                          "  return S(s, p, R[r + 1], n)\n"
                          "end\n");
  /* run(i) calls C[i]: one case per fuzz entry */
  len += (size_t)snprintf(text + len, cap - len, "C = setmetatable({}, {__index = function(t, i) "
                                                 "return function() return fz(i) end end})\n");
  REQUIRE(len + strlen(prelude) + 1 < cap);
  strcat(text, prelude);
  oracle *o = calloc(1, sizeof *o);
  if (oracle_open(o, text) == 0) {
    int same = 0, errors = 0, matched = 0;
    for (int i = 1; i <= N; i++) {
      const char *a, *b;
      int ok = oracle_case(o, i, &a, &b);
      same += ok;
      errors += !strncmp(a, "E:", 2);
      matched += strncmp(a, "E:", 2) && strncmp(a, "1(nil:nil)", 10) && strncmp(a, "0:", 2);
      if (!ok) {
        lua_getglobal(o->stock, "Z");
        lua_rawgeti(o->stock, -1, i);
        lua_rawgeti(o->stock, -1, 2);
        CHECK_MSG(0, "fuzz case %d (pattern %s):\n      stock:   %.300s\n      sandbox: %.300s", i,
                  lua_tostring(o->stock, -1), a, b);
        lua_settop(o->stock, 0);
      }
    }
    CHECK_EQ_I64(same, N);
    /* the generator reaches errors and matches alike */
    CHECK_MSG(errors > N / 20 && matched > N / 5, "%d errors, %d matches of %d", errors, matched, N);
  }
  oracle_close(o);
  free(o);
  free(text);
}

/* ------------------------------------------------------------------ limits */

/* The catastrophic pattern of the bug report, in each function and under
 * pcall: the deadline stops it, at the script line that called it. */
static const char *const slow_script =
    "local x = string.rep('a', 30000)\n"
    "function reward(s)\n"
    "  if s.completion == 'find' then return x:find('a*a*a*a*a*b') or 0 end\n"
    "  if s.completion == 'match' then return x:match('(a*)(a*)(a*)(a*)b') or 0 end\n"
    "  if s.completion == 'gmatch' then for m in x:gmatch('a-a-a-a-b') do end return 0 end\n"
    "  if s.completion == 'gsub' then return select(2, x:gsub('a*a*a*a*b', '')) end\n"
    "  if s.completion == 'pcall' then\n"
    "    local ok = pcall(string.find, x, 'a*a*a*a*a*b')\n"
    "    return ok and 1 or 0\n"
    "  end\n"
    "  if s.completion == 'loop' then while true do pcall(string.match, x, 'a-a-a-a-b') end end\n"
    "  if s.completion == 'scan' then return x:rep(100):find('%d') or 0 end\n"
    "  return 1\n"
    "end\n";

TEST(lua_pattern_deadline_stops_backtracking) {
  rl_err e;
  luahost_limits lim = luahost_default_limits();
  lim.instructions = (int64_t)1e15; /* only the clock can stop it */
  lim.seconds = 0.2;
  luahost *h = luahost_open_string("slow.lua", slow_script, strlen(slow_script), &lim, &e);
  REQUIRE(h);
  static const struct { const char *how; int line; } cases[] = {
      {"find", 3}, {"match", 4}, {"gmatch", 5}, {"gsub", 6}, {"pcall", 8}, {"loop", 11}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    luahost_sample s = {.prompt = "q", .completion = cases[i].how, .index = 3, .iteration = 7};
    luahost_reward r;
    char want[300];
    snprintf(want, sizeof want, "slow.lua:%d: wall-clock deadline exceeded (0.2 s per call, reward.limits.timeout_ms) (sample 3 of iteration 7)",
             cases[i].line);
    double t0 = rl_now();
    CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
    double dt = rl_now() - t0;
    CHECK_MSG(dt >= 0.2 && dt < 2.0, "%s: stopped after %.3f s", cases[i].how, dt);
    CHECK_STREQ(e.msg, want);
  }
  /* the host goes on: a plain call scores */
  luahost_sample s = {.prompt = "q", .completion = "ok", .index = 3, .iteration = 7};
  luahost_reward r;
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), 0);
  CHECK_NEAR(r.reward, 1, 0);
  luahost_close(h);
  /* at the top level: the script does not load */
  const char *top = "local x = string.rep('a', 30000)\nlocal i = x:find('a*a*a*a*a*b')\n";
  double t0 = rl_now();
  h = luahost_open_string("top.lua", top, strlen(top), &lim, &e);
  CHECK(h == NULL);
  CHECK(rl_now() - t0 < 2.0);
  CHECK_STREQ(e.msg, "top.lua:2: wall-clock deadline exceeded (0.2 s per call, reward.limits.timeout_ms) (while loading the script)");
}

TEST(lua_pattern_steps_count_against_the_budget) {
  rl_err e;
  luahost_limits lim = luahost_default_limits();
  lim.instructions = 2000000;
  lim.seconds = 60; /* only the budget can stop it */
  luahost *h = luahost_open_string("slow.lua", slow_script, strlen(slow_script), &lim, &e);
  REQUIRE(h);
  static const struct { const char *how; int line; } cases[] = {
      {"find", 3}, {"gsub", 6}, {"pcall", 8}, {"scan", 12}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    luahost_sample s = {.prompt = "q", .completion = cases[i].how, .index = 3, .iteration = 7};
    luahost_reward r;
    char want[300];
    snprintf(want, sizeof want, "slow.lua:%d: instruction budget exceeded (2000000 instructions per call, "
             "reward.limits.instructions; an endless loop?) (sample 3 of iteration 7)", cases[i].line);
    double t0 = rl_now();
    CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
    CHECK_MSG(rl_now() - t0 < 2.0, "%s: stopped after %.3f s", cases[i].how, rl_now() - t0);
    CHECK_STREQ(e.msg, want);
  }
  luahost_close(h);
  /* 'scan' reads 3 MB: about 3 M steps, within a budget of 5 M */
  lim.instructions = 5000000;
  h = luahost_open_string("slow.lua", slow_script, strlen(slow_script), &lim, &e);
  REQUIRE(h);
  luahost_sample s = {.prompt = "q", .completion = "scan"};
  luahost_reward r;
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), 0);
  CHECK_NEAR(r.reward, 0, 0);
  luahost_close(h);
}

/* table.move's C loop is charged its range up front (it allocates nothing
 * moving nils, so the memory cap did not stop it either, and it ran past any
 * deadline); an ordinary move still moves. */
TEST(lua_table_move_is_charged_its_range) {
  static const char *const script =
      "function reward(s)\n"
      "  if s.completion == 'huge' then table.move({}, 1, 1e11, 2) return 0 end\n"
      "  if s.completion == 'caught' then local ok = pcall(table.move, {}, -2^62, 2^62, 1) return 0 end\n"
      "  local t = table.move({10, 20, 30}, 1, 3, 2)\n"
      "  local u = table.move({1, 2}, 1, 2, 1, {})\n"
      "  return t[1] + t[2] + t[3] + t[4] + #u + select('#', table.move({}, 3, 1, 1))\n"
      "end\n";
  rl_err e;
  luahost_limits lim = luahost_default_limits(); /* 1e8 instructions, 10 s */
  luahost *h = luahost_open_string("move.lua", script, strlen(script), &lim, &e);
  REQUIRE(h);
  luahost_sample s = {.prompt = "q", .completion = "ok", .index = 1, .iteration = 2};
  luahost_reward r;
  CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), 0);
  CHECK_NEAR(r.reward, 10 + 10 + 20 + 30 + 2 + 1, 0); /* {10, 10, 20, 30}, #u = 2, move returns a2 */
  static const struct { const char *how; int line; } cases[] = {{"huge", 2}, {"caught", 3}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    s.completion = cases[i].how;
    char want[300];
    snprintf(want, sizeof want, "move.lua:%d: instruction budget exceeded (100000000 instructions per call, "
             "reward.limits.instructions; an endless loop?) (sample 1 of iteration 2)", cases[i].line);
    double t0 = rl_now();
    CHECK_EQ_I64(luahost_reward_one(h, &s, &r, &e), RL_EXIT_FAIL);
    CHECK_MSG(rl_now() - t0 < 1.0, "%s: stopped after %.3f s", cases[i].how, rl_now() - t0);
    CHECK_STREQ(e.msg, want);
  }
  luahost_close(h);
}
