/* test_unicode.c — stages/unicode.h: categories, White_Space, case folding,
 * UTF-8 and NFC on hand-picked cases (expected strings from Python's
 * unicodedata.normalize), then every code point and 5000 random strings
 * against the tables tests/oracle/ci_unicode.py writes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "stages/unicode.h"
#include "test_quant_fixtures.h"

#define N_CP 0x110000u

/* NFC of s as a new string ("<invalid>" when refused); free it. */
static char *nfc(const char *s) {
  char *o;
  size_t n;
  if (uni_nfc(s, strlen(s), &o, &n)) return strdup("<invalid>");
  if (strlen(o) != n) {
    free(o);
    return strdup("<bad length>");
  }
  return o;
}

#define CHECK_NFC(in, want)                                                                                          \
  do {                                                                                                               \
    char *g_ = nfc(in);                                                                                              \
    CHECK_STREQ(g_, want);                                                                                           \
    free(g_);                                                                                                        \
  } while (0)

/* Fixture $RLRUN_FIXTURES/unicode/name, or NULL with a failure that says how to make it. */
static char *unicode_fixture(const char *name, size_t *n) {
  char rel[128];
  snprintf(rel, sizeof rel, "unicode/%s", name);
  char *b = fixture_load_q(rel, n, 1);
  CHECK_MSG(b != NULL, "fixture %s missing under $RLRUN_FIXTURES (make fixtures, or tests/oracle/ci_unicode.py "
            "--out DIR)", rel);
  return b;
}

/* 1 when the oracle's Unicode version is the tables' one; when not, the
 * exhaustive tests skip code points either side leaves unassigned. */
static int same_version(void) {
  size_t n;
  char *v = unicode_fixture("version.txt", &n);
  if (!v) return 1;
  v[strcspn(v, "\n")] = 0;
  int same = !strcmp(v, uni_unicode_version());
  if (!same) fprintf(stderr, "note: oracle Unicode %s, tables %s: comparing code points both assign\n", v,
                     uni_unicode_version());
  free(v);
  return same;
}

TEST(unicode_general_category) {
  /* the hand-picked expectations of this file were computed with Unicode 14.0.0:
   * tables regenerated from another version need them rechecked */
  CHECK_STREQ(uni_unicode_version(), "14.0.0");
  const struct {
    uint32_t cp;
    int gc;
  } cases[] = {
      {'A', UNI_LU},     {'z', UNI_LL},     {'0', UNI_ND},      {'9', UNI_ND},      {'!', UNI_PO},
      {'(', UNI_PS},     {')', UNI_PE},     {'$', UNI_SC},      {'+', UNI_SM},      {'^', UNI_SK},
      {'_', UNI_PC},     {'-', UNI_PD},     {' ', UNI_ZS},      {'\n', UNI_CC},     {0xE9, UNI_LL},   /* é */
      {0x6771, UNI_LO},  /* 東 */          {0x663, UNI_ND},    /* ٣ */             {0x216B, UNI_NL}, /* Ⅻ */
      {0xBD, UNI_NO},    /* ½ */           {0x301, UNI_MN},    {0xA0, UNI_ZS},     {0x2028, UNI_ZL},
      {0x2029, UNI_ZP},  {0x378, UNI_CN},  {0xE000, UNI_CO},   {0xD800, UNI_CS},   {0xDFFF, UNI_CS},
      {0x1C5, UNI_LT},   /* ǅ */           {0x2B0, UNI_LM},    {0x903, UNI_MC},    {0x20DD, UNI_ME},
      {0xAB, UNI_PI},    {0xBB, UNI_PF},   {0xAD, UNI_CF},     {0x20000, UNI_LO},  {0xF0000, UNI_CO},
      {0x10FFFF, UNI_CN}, {0x110000, UNI_CN}, {0xFFFFFFFFu, UNI_CN}, {0x1F600, UNI_SO}, /* 😀 */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    CHECK_MSG(uni_gc(cases[i].cp) == cases[i].gc, "U+%04X: category %s, want %s", cases[i].cp,
              uni_gc_name(uni_gc(cases[i].cp)), uni_gc_name(cases[i].gc));
  CHECK_STREQ(uni_gc_name(UNI_PI), "Pi");
  CHECK_STREQ(uni_gc_name(UNI_CN), "Cn");
  CHECK(uni_gc_name(UNI_GC_COUNT) == NULL);
}

TEST(unicode_gc_in_and_parse) {
  CHECK_EQ_I64(uni_gc_in(0xE9, 'L', 0), 1);
  CHECK_EQ_I64(uni_gc_in(0xE9, 'L', 'l'), 1);
  CHECK_EQ_I64(uni_gc_in(0xE9, 'L', 'u'), 0);
  CHECK_EQ_I64(uni_gc_in(0x663, 'N', 0), 1);
  CHECK_EQ_I64(uni_gc_in(0x663, 'L', 0), 0);
  CHECK_EQ_I64(uni_gc_in(0x301, 'M', 0), 1);
  CHECK_EQ_I64(uni_gc_in('!', 'P', 0), 1);
  CHECK_EQ_I64(uni_gc_in(0x378, 'C', 0), 1);
  CHECK_EQ_I64(uni_gc_in(0x378, 'C', 'n'), 1);
  CHECK_EQ_I64(uni_gc_in(0x2028, 'Z', 0), 1);
  CHECK_EQ_I64(uni_gc_in(0xAB, 'P', 'i'), 1); /* « */
  CHECK_EQ_I64(uni_gc_in(0xAB, 'P', 'f'), 0);
  const struct {
    const char *name;
    char major, minor;
  } ok[] = {{"L", 'L', 0},           {"M", 'M', 0},         {"N", 'N', 0},        {"P", 'P', 0},
            {"S", 'S', 0},           {"Z", 'Z', 0},         {"C", 'C', 0},        {"Lu", 'L', 'u'},
            {"Nd", 'N', 'd'},        {"Pi", 'P', 'i'},      {"Zs", 'Z', 's'},     {"Co", 'C', 'o'},
            {"Letter", 'L', 0},      {"Mark", 'M', 0},      {"Number", 'N', 0},   {"Punctuation", 'P', 0},
            {"Symbol", 'S', 0},      {"Separator", 'Z', 0}, {"Other", 'C', 0},    {"lu", 'L', 'u'},
            {"Uppercase_Letter", 'L', 'u'}, {"decimal number", 'N', 'd'}, {"Private-Use", 'C', 'o'}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    char ma = '?', mi = '?';
    CHECK_MSG(uni_gc_parse(ok[i].name, strlen(ok[i].name), &ma, &mi) == 0, "%s refused", ok[i].name);
    CHECK_MSG(ma == ok[i].major && mi == ok[i].minor, "%s → (%c, %d)", ok[i].name, ma, mi);
  }
  const char *bad[] = {"", "Q", "Lx", "Xx", "Letters", "Lettre", "LC", "Nd1", "Uppercase_Letter_Letter_Letter_Letter"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char ma, mi;
    CHECK_MSG(uni_gc_parse(bad[i], strlen(bad[i]), &ma, &mi) == -1, "'%s' accepted", bad[i]);
  }
  char ma, mi;
  CHECK_EQ_I64(uni_gc_parse("Lux", 2, &ma, &mi), 0); /* the name is name[0..len), not a C string */
  CHECK(ma == 'L' && mi == 'u');
}

TEST(unicode_white_space) {
  const uint32_t ws[] = {0x9,    0xA,    0xB,    0xC,    0xD,    0x20,   0x85,   0xA0,   0x1680,
                         0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008,
                         0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000};
  for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) CHECK_MSG(uni_is_space(ws[i]), "U+%04X not space", ws[i]);
  /* str.isspace() also says yes to U+001C..001F; White_Space does not */
  const uint32_t not_ws[] = {0x0, 0x8, 0xE, 0x1C, 0x1F, 'a', 0x84, 0x86, 0x180E, 0x200B, 0x2060, 0xFEFF, 0x110000};
  for (size_t i = 0; i < sizeof not_ws / sizeof not_ws[0]; i++)
    CHECK_MSG(!uni_is_space(not_ws[i]), "U+%04X is space", not_ws[i]);
  int n = 0;
  for (uint32_t cp = 0; cp < N_CP; cp++) n += uni_is_space(cp);
  CHECK_EQ_I64(n, 25);
}

TEST(unicode_fold) {
  CHECK_EQ_U64(uni_fold('S'), 's');
  CHECK_EQ_U64(uni_fold('s'), 's');
  CHECK_EQ_U64(uni_fold(0x17F), 's');    /* ſ LONG S */
  CHECK_EQ_U64(uni_fold(0x212A), 'k');   /* KELVIN SIGN */
  CHECK_EQ_U64(uni_fold('K'), 'k');
  CHECK_EQ_U64(uni_fold('1'), '1');
  CHECK_EQ_U64(uni_fold(0xC9), 0xE9);    /* É */
  CHECK_EQ_U64(uni_fold(0x3A3), 0x3C3);  /* Σ */
  CHECK_EQ_U64(uni_fold(0x3C2), 0x3C3);  /* ς final sigma */
  CHECK_EQ_U64(uni_fold(0x212B), 0xE5);  /* Å ANGSTROM SIGN */
  CHECK_EQ_U64(uni_fold(0xAB70), 0x13A0); /* Cherokee folds to its capitals */
  CHECK_EQ_U64(uni_fold(0x10400), 0x10428); /* Deseret */
  CHECK_EQ_U64(uni_fold(0x1C5), 0x1C6);  /* ǅ titlecase */
  CHECK_EQ_U64(uni_fold(0x345), 0x3B9);  /* combining ypogegrammeni */
  /* full folding is several code points: the simple folding stays */
  CHECK_EQ_U64(uni_fold(0xDF), 0xDF);    /* ß ("ss") */
  CHECK_EQ_U64(uni_fold(0x1E9E), 0xDF);  /* ẞ */
  CHECK_EQ_U64(uni_fold(0x130), 0x130);  /* İ ("i̇") */
  CHECK_EQ_U64(uni_fold(0x131), 0x131);  /* ı: Turkic folding not used */
  CHECK_EQ_U64(uni_fold(0x1F88), 0x1F80); /* ᾈ → ᾀ ("ἀι" in full) */
  CHECK_EQ_U64(uni_fold(0x110000), 0x110000);
  /* alternating runs: Ā ā Ă ă */
  CHECK_EQ_U64(uni_fold(0x100), 0x101);
  CHECK_EQ_U64(uni_fold(0x101), 0x101);
  CHECK_EQ_U64(uni_fold(0x102), 0x103);
}

TEST(unicode_utf8) {
  const char *s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"; /* aé€😀 */
  size_t i = 0, len = strlen(s);
  uint32_t cp;
  const uint32_t want[] = {'a', 0xE9, 0x20AC, 0x1F600};
  const size_t at[] = {1, 3, 6, 10};
  for (int k = 0; k < 4; k++) {
    CHECK_EQ_I64(uni_utf8_next(s, len, &i, &cp), 0);
    CHECK_EQ_U64(cp, want[k]);
    CHECK_EQ_I64(i, at[k]);
  }
  CHECK_EQ_I64(uni_utf8_next(s, len, &i, &cp), -1); /* at the end */
  const char *bad[] = {"\x80", "\xBF", "\xC0\x80", "\xC1\xBF", "\xE0\x80\x80", "\xE0\x9F\xBF", "\xED\xA0\x80",
                       "\xED\xBF\xBF", "\xF0\x80\x80\x80", "\xF0\x8F\xBF\xBF", "\xF4\x90\x80\x80", "\xF5\x80\x80\x80",
                       "\xFF", "\xC3", "\xE2\x82", "\xF0\x9F\x98", "\xC3\x41", "\xE2\x41\xAC"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    i = 0;
    CHECK_MSG(uni_utf8_next(bad[k], strlen(bad[k]), &i, &cp) == -1 && i == 0, "bad[%zu] accepted", k);
  }
  /* the boundaries of each length */
  const char *edge[] = {"\x7F", "\xC2\x80", "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80",
                        "\xEF\xBF\xBF", "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF"};
  const uint32_t ecp[] = {0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF};
  for (size_t k = 0; k < sizeof edge / sizeof edge[0]; k++) {
    i = 0;
    CHECK_EQ_I64(uni_utf8_next(edge[k], strlen(edge[k]), &i, &cp), 0);
    CHECK_EQ_U64(cp, ecp[k]);
    CHECK_EQ_I64(i, strlen(edge[k]));
  }
  /* a sequence cut short by len, not by its bytes */
  i = 0;
  CHECK_EQ_I64(uni_utf8_next("\xE2\x82\xAC", 2, &i, &cp), -1);
  /* every scalar value round-trips; the rest become U+FFFD */
  int bad_rt = 0;
  for (uint32_t c = 0; c < N_CP; c++) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    char b[4];
    size_t n = uni_utf8_put(b, c), j = 0;
    uint32_t d = 0;
    size_t wantn = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    if ((n != wantn || uni_utf8_next(b, n, &j, &d) || d != c || j != n) && bad_rt++ < 5)
      CHECK_MSG(0, "U+%04X: put %zu bytes, read back U+%04X", c, n, d);
  }
  CHECK_EQ_I64(bad_rt, 0);
  char b[4];
  CHECK_EQ_I64(uni_utf8_put(b, 0xD800), 3);
  CHECK(!memcmp(b, "\xEF\xBF\xBD", 3));
  CHECK_EQ_I64(uni_utf8_put(b, 0x110000), 3);
  CHECK(!memcmp(b, "\xEF\xBF\xBD", 3));
}

/* Expected strings: Python 3.11's unicodedata.normalize("NFC", input). */
TEST(unicode_nfc_cases) {
  CHECK_NFC("", "");
  CHECK_NFC("plain ascii\n", "plain ascii\n");
  CHECK_NFC("e\xCC\x81", "\xC3\xA9");                           /* e + U+0301 → é */
  CHECK_NFC("\xC3\xA9", "\xC3\xA9");                            /* already NFC */
  CHECK_NFC("A\xCC\x8A", "\xC3\x85");                           /* A + ring → Å */
  CHECK_NFC("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8", "\xEA\xB0\x81"); /* U+1100 1161 11A8 → 각 U+AC01 */
  CHECK_NFC("\xE1\x84\x80\xE1\x85\xA1", "\xEA\xB0\x80");         /* L V → 가 U+AC00 */
  CHECK_NFC("\xEA\xB0\x80\xE1\x86\xA8", "\xEA\xB0\x81");         /* 가 + U+11A8 → 각 */
  CHECK_NFC("\xEA\xB0\x81\xE1\x86\xA8", "\xEA\xB0\x81\xE1\x86\xA8"); /* LVT + T: nothing to compose */
  CHECK_NFC("\xE1\x84\x80\xCC\x81\xE1\x85\xA1", "\xE1\x84\x80\xCC\x81\xE1\x85\xA1"); /* L U+0301 V: blocked */
  /* canonical reordering: U+0323 (class 220) before U+0302 (230), either way → ậ U+1EAD */
  CHECK_NFC("a\xCC\xA3\xCC\x82", "\xE1\xBA\xAD");
  CHECK_NFC("a\xCC\x82\xCC\xA3", "\xE1\xBA\xAD");
  CHECK_NFC("q\xCC\x87\xCC\xA3", "q\xCC\xA3\xCC\x87");          /* no composite: just reordered */
  CHECK_NFC("D\xCC\x87\xCC\xA3", "\xE1\xB8\x8C\xCC\x87");         /* Ḍ U+1E0C + U+0307 */
  CHECK_NFC("e\xCC\x81\xCC\xA7", "\xC8\xA9\xCC\x81");             /* ȩ U+0229 + U+0301 */
  CHECK_NFC("\xE0\xA5\x98", "\xE0\xA4\x95\xE0\xA4\xBC");          /* U+0958 excluded: U+0915 U+093C */
  CHECK_NFC("\xE0\xA4\x95\xE0\xA4\xBC", "\xE0\xA4\x95\xE0\xA4\xBC");
  CHECK_NFC("\xE2\x84\xAB", "\xC3\x85");                         /* U+212B ANGSTROM SIGN → Å U+00C5 */
  CHECK_NFC("\xE2\x84\xA6", "\xCE\xA9");                         /* U+2126 OHM SIGN → Ω U+03A9 */
  CHECK_NFC("\xEF\xA8\x90", "\xE5\xA1\x9A");                     /* U+FA10 → 塚 U+585A */
  CHECK_NFC("\xCD\x84", "\xCC\x88\xCC\x81");                     /* U+0344 non-starter decomposition */
  CHECK_NFC("\xE0\xBD\xB3", "\xE0\xBD\xB1\xE0\xBD\xB2");         /* U+0F73 excluded */
  CHECK_NFC("a\xCC\x81\xCC\x81", "\xC3\xA1\xCC\x81");             /* the second U+0301 is blocked by the first */
  CHECK_NFC("a\xCC\x85\xCC\x81", "a\xCC\x85\xCC\x81");            /* U+0305 (230) blocks U+0301 (230) */
  CHECK_NFC("ab\xCC\x81", "ab\xCC\x81");                          /* b + U+0301 has no composite */
  CHECK_NFC("\xCC\x81" "e", "\xCC\x81" "e");                      /* a leading mark stays */
  CHECK_NFC("\xE0\xAD\x87\xE0\xAC\xBE", "\xE0\xAD\x8B");          /* U+0B47 + U+0B3E (two starters) → U+0B4B */
  CHECK_NFC("\xE3\x81\x8B\xE3\x82\x99", "\xE3\x81\x8C");          /* か + voiced mark → が */
  CHECK_NFC("x\xC3\x85\xCC\x81y", "x\xC7\xBAy");                  /* Å + U+0301 → Ǻ U+01FA, in context */
  /* invalid UTF-8 is refused, also past the point where the slow path starts */
  const char *bad[] = {"\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "ab\xE2\x82", "\x80", "\xFF",
                       "e\xCC\x81\xFF", "e\xCC\x81\xED\xA0\x80", "\xC3\xA9\xC3"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *o = (char *)1;
    size_t n = 7;
    CHECK_MSG(uni_nfc(bad[i], strlen(bad[i]), &o, &n) == -1 && o == NULL && n == 0, "bad[%zu] accepted", i);
  }
  /* embedded NUL is a character like any other */
  char *o;
  size_t n;
  REQUIRE(uni_nfc("e\0e\xCC\x81", 5, &o, &n) == 0);
  CHECK_EQ_I64(n, 4);
  CHECK(!memcmp(o, "e\0\xC3\xA9", 5));
  free(o);
}

/* A long run of marks (the merge sort path of canonical ordering) sorts by
 * class and keeps marks of one class in their order. */
TEST(unicode_nfc_long_mark_run) {
  char in[1024], want[1024];
  size_t n = 0, m = 0;
  in[n++] = 'q', want[m++] = 'q';
  /* 30 × (a class 230 mark, a class 220 mark), cycling through 6 of each */
  const uint32_t above[6] = {0x300, 0x301, 0x302, 0x303, 0x304, 0x306};
  const uint32_t below[6] = {0x316, 0x317, 0x318, 0x319, 0x31C, 0x31D};
  for (int k = 0; k < 30; k++) n += uni_utf8_put(in + n, above[k % 6]), n += uni_utf8_put(in + n, below[k % 6]);
  for (int k = 0; k < 30; k++) m += uni_utf8_put(want + m, below[k % 6]);
  for (int k = 0; k < 30; k++) m += uni_utf8_put(want + m, above[k % 6]);
  in[n] = want[m] = 0;
  CHECK_NFC(in, want);
}

TEST(unicode_gc_every_code_point) {
  size_t n = 0;
  uint8_t *want = (uint8_t *)unicode_fixture("gc.u8", &n);
  REQUIRE(want && n == N_CP);
  int same = same_version(), bad = 0;
  for (uint32_t cp = 0; cp < N_CP; cp++) {
    int got = uni_gc(cp);
    if (!same && (got == UNI_CN || want[cp] == UNI_CN)) continue;
    if (got != want[cp] && bad++ < 5)
      CHECK_MSG(0, "U+%04X: category %s, oracle %s", cp, uni_gc_name(got), uni_gc_name(want[cp]));
  }
  CHECK_EQ_I64(bad, 0);
  free(want);
}

TEST(unicode_fold_every_code_point) {
  size_t n = 0;
  char *txt = unicode_fixture("fold.txt", &n);
  REQUIRE(txt);
  int same = same_version();
  uint32_t *rep = malloc(N_CP * sizeof *rep), *claim = malloc(N_CP * sizeof *claim);
  REQUIRE(rep && claim);
  for (uint32_t cp = 0; cp < N_CP; cp++) rep[cp] = cp, claim[cp] = UINT32_MAX;
  int lines = 0;
  for (char *p = txt; *p;) {
    char *end;
    unsigned long a = strtoul(p, &end, 16), b = strtoul(end, &end, 16);
    if (a < N_CP && b < N_CP) rep[a] = (uint32_t)b, lines++;
    p = end + (*end == '\n');
    if (end == p && *p) break; /* not a "X Y" line */
  }
  CHECK_MSG(lines > 1000, "fold.txt: %d lines", lines);
  /* fold(a) == fold(b) exactly when a and b are in one class */
  int bad = 0;
  for (uint32_t cp = 0; cp < N_CP; cp++) {
    if (!same && uni_gc(cp) == UNI_CN) continue;
    uint32_t f = uni_fold(cp);
    if ((f >= N_CP || uni_fold(rep[cp]) != f || rep[f] != rep[cp]) && bad++ < 5)
      CHECK_MSG(0, "U+%04X folds to U+%04X, its class (smallest U+%04X) to U+%04X", cp, f, rep[cp],
                uni_fold(rep[cp]));
    if (rep[cp] == cp && f < N_CP) {
      if (claim[f] != UINT32_MAX && bad++ < 5)
        CHECK_MSG(0, "U+%04X and U+%04X are different classes, both fold to U+%04X", claim[f], cp, f);
      claim[f] = cp;
    }
  }
  CHECK_EQ_I64(bad, 0);
  free(rep), free(claim), free(txt);
}

/* Code points of the UTF-8 text s as "U+XXXX U+YYYY" (for messages). */
static const char *cps(const char *s, char *buf, size_t cap) {
  size_t i = 0, k = 0, len = strlen(s);
  uint32_t cp;
  buf[0] = 0;
  while (k + 10 < cap && uni_utf8_next(s, len, &i, &cp) == 0) k += (size_t)snprintf(buf + k, cap - k, "%04X ", cp);
  return buf;
}

TEST(unicode_nfc_every_code_point) {
  size_t n = 0;
  char *txt = unicode_fixture("nfc_cp.txt", &n);
  REQUIRE(txt);
  int same = same_version();
  /* "XXXX\tnfc\n" lines, in code point order */
  char *p = txt;
  int bad = 0, listed = 0;
  for (uint32_t cp = 0; cp < N_CP; cp++) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    char in[5], want[64], *o = NULL;
    size_t ilen = uni_utf8_put(in, cp), olen;
    in[ilen] = 0;
    memcpy(want, in, ilen + 1);
    size_t wlen = ilen; /* U+0000 is a byte too */
    if (*p && strtoul(p, NULL, 16) == cp) {
      char *tab = strchr(p, '\t'), *nl = tab ? strchr(tab, '\n') : NULL;
      REQUIRE(tab && nl && (size_t)(nl - tab - 1) < sizeof want);
      memcpy(want, tab + 1, (size_t)(nl - tab - 1));
      wlen = (size_t)(nl - tab - 1);
      want[wlen] = 0;
      p = nl + 1;
      listed++;
    }
    if (!same && uni_gc(cp) == UNI_CN) continue;
    int rc = uni_nfc(in, ilen, &o, &olen);
    if ((rc || olen != wlen || memcmp(o, want, wlen + 1)) && bad++ < 5) {
      char b1[128], b2[128];
      CHECK_MSG(0, "NFC(U+%04X) = %s, oracle %s", cp, o ? cps(o, b1, sizeof b1) : "(refused)",
                cps(want, b2, sizeof b2));
    }
    free(o);
  }
  CHECK_MSG(*p == 0, "nfc_cp.txt: lines left over at \"%.20s\"", p);
  CHECK_MSG(listed > 1000, "nfc_cp.txt: %d code points", listed);
  CHECK_EQ_I64(bad, 0);
  free(txt);
}

TEST(unicode_nfc_random_strings) {
  size_t n = 0;
  char *txt = unicode_fixture("nfc.txt", &n);
  REQUIRE(txt);
  int bad = 0, lines = 0, changed = 0;
  for (char *p = txt; *p;) {
    char *tab = strchr(p, '\t'), *nl = tab ? strchr(tab, '\n') : NULL;
    REQUIRE(tab && nl);
    *tab = *nl = 0;
    const char *in = p, *want = tab + 1;
    lines++;
    changed += strcmp(in, want) != 0;
    char *o = NULL, *o2 = NULL;
    size_t olen, o2len;
    int rc = uni_nfc(in, strlen(in), &o, &olen);
    if ((rc || strcmp(o, want) || olen != strlen(want)) && bad++ < 5) {
      char b0[512], b1[512], b2[512];
      CHECK_MSG(0, "line %d: NFC(%s) =\n  %s\n  oracle %s", lines, cps(in, b0, sizeof b0),
                o ? cps(o, b1, sizeof b1) : "(refused)", cps(want, b2, sizeof b2));
    }
    /* NFC of NFC is itself */
    if ((uni_nfc(want, strlen(want), &o2, &o2len) || strcmp(o2, want)) && bad++ < 5)
      CHECK_MSG(0, "line %d: NFC of the oracle's NFC changed it", lines);
    free(o), free(o2);
    p = nl + 1;
  }
  CHECK_EQ_I64(lines, 5000);
  CHECK_MSG(changed > 1000, "only %d of %d strings change under NFC", changed, lines);
  CHECK_EQ_I64(bad, 0);
  free(txt);
}

/* Random texts of characters that compose and reorder, with a stray byte now
 * and then: uni_nfc refuses exactly the texts uni_utf8_next cannot walk, and
 * what it returns is valid UTF-8 that NFC leaves as is. */
TEST(unicode_nfc_random_bytes) {
  static const char *const pieces[] = {"a", "e", "\xCC\x81", "\xCC\xA3", "\xCC\x82", "\xC3\xA9", "\xE1\x84\x80",
                                       "\xE1\x85\xA1", "\xE1\x86\xA8", "\xEA\xB0\x80", "\xF0\x9F\x98\x80",
                                       "\xE0\xA5\x98", "\xE2\x84\xAB", "\xE0\xAD\x87", "\xE0\xAC\xBE", " "};
  uint64_t x = 0x9E3779B97F4A7C15ull;
  int bad = 0, valid = 0;
  for (int t = 0; t < 20000; t++) {
    char s[64];
    size_t len = 0;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    for (int k = (int)(x % 12); k >= 0; k--) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      if (x % 12 == 0) s[len++] = (char)(x >> 32); /* any byte: often a broken sequence */
      else {
        const char *p = pieces[(x >> 8) % 16];
        memcpy(s + len, p, strlen(p));
        len += strlen(p);
      }
    }
    size_t i = 0;
    uint32_t cp;
    while (i < len && uni_utf8_next(s, len, &i, &cp) == 0) {}
    int ok = i == len;
    char *o = NULL, *o2 = NULL;
    size_t olen = 0, o2len = 0;
    int rc = uni_nfc(s, len, &o, &olen);
    if (rc != (ok ? 0 : -1) && bad++ < 5)
      CHECK_MSG(0, "case %d: uni_nfc returned %d, the text is %svalid", t, rc, ok ? "" : "in");
    if (rc == 0) {
      valid++;
      if ((uni_nfc(o, olen, &o2, &o2len) || o2len != olen || memcmp(o, o2, olen)) && bad++ < 5)
        CHECK_MSG(0, "case %d: NFC is not stable under a second NFC", t);
    }
    free(o), free(o2);
  }
  CHECK_EQ_I64(bad, 0);
  CHECK_MSG(valid > 2000 && valid < 18000, "%d of 20000 valid: the generator should make both kinds", valid);
}
