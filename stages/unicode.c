/* unicode.c — lookups over the generated tables (stages/unicode_data.c), UTF-8,
 * and NFC per UAX #15: canonical decomposition, canonical ordering, canonical
 * composition, with Hangul done by arithmetic (contract in unicode.h). */
#define UNI_TABLES
#include "stages/unicode.h"

#include <stdlib.h>
#include <string.h>

#include "kernels/common.h"

/* Hangul syllable arithmetic (Unicode §3.12). */
enum {
  HANGUL_S = 0xAC00, HANGUL_L = 0x1100, HANGUL_V = 0x1161, HANGUL_T = 0x11A7,
  HANGUL_LN = 19, HANGUL_VN = 21, HANGUL_TN = 28,
  HANGUL_NN = HANGUL_VN * HANGUL_TN, HANGUL_SN = HANGUL_LN * HANGUL_NN
};

/* Two letters per category, in enum uni_gc order. */
static const char uni_gc_names[UNI_GC_COUNT][3] = {
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};

const char *uni_unicode_version(void) { return uni_tab_version; }

/* Index of the run holding cp in a table of runs packed as start << shift | value
 * (the first run starts at 0). */
static size_t run_find(const uint32_t *tab, size_t n, uint32_t cp, int shift) {
  size_t lo = 0, hi = n; /* invariant: tab[lo] starts at or before cp, tab[hi] after */
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if ((tab[mid] >> shift) <= cp) lo = mid;
    else hi = mid;
  }
  return lo;
}

int uni_gc(uint32_t cp) {
  if (cp > 0x10FFFF) return UNI_CN;
  return (int)(uni_gc_tab[run_find(uni_gc_tab, uni_gc_tab_n, cp, 5)] & 31);
}

const char *uni_gc_name(int gc) { return gc >= 0 && gc < UNI_GC_COUNT ? uni_gc_names[gc] : NULL; }

int uni_gc_in(uint32_t cp, char major, char minor) {
  const char *n = uni_gc_names[uni_gc(cp)];
  return n[0] == major && (minor == 0 || n[1] == minor);
}

/* Property names with case, '_', '-' and ' ' removed → (major, minor). */
static const struct {
  const char *name;
  char major, minor;
} uni_gc_props[] = {
    {"letter", 'L', 0}, {"mark", 'M', 0}, {"number", 'N', 0}, {"punctuation", 'P', 0},
    {"symbol", 'S', 0}, {"separator", 'Z', 0}, {"other", 'C', 0},
    {"uppercaseletter", 'L', 'u'}, {"lowercaseletter", 'L', 'l'}, {"titlecaseletter", 'L', 't'},
    {"modifierletter", 'L', 'm'}, {"otherletter", 'L', 'o'}, {"nonspacingmark", 'M', 'n'},
    {"spacingmark", 'M', 'c'}, {"enclosingmark", 'M', 'e'}, {"decimalnumber", 'N', 'd'},
    {"letternumber", 'N', 'l'}, {"othernumber", 'N', 'o'}, {"connectorpunctuation", 'P', 'c'},
    {"dashpunctuation", 'P', 'd'}, {"openpunctuation", 'P', 's'}, {"closepunctuation", 'P', 'e'},
    {"initialpunctuation", 'P', 'i'}, {"finalpunctuation", 'P', 'f'}, {"otherpunctuation", 'P', 'o'},
    {"mathsymbol", 'S', 'm'}, {"currencysymbol", 'S', 'c'}, {"modifiersymbol", 'S', 'k'},
    {"othersymbol", 'S', 'o'}, {"spaceseparator", 'Z', 's'}, {"lineseparator", 'Z', 'l'},
    {"paragraphseparator", 'Z', 'p'}, {"control", 'C', 'c'}, {"format", 'C', 'f'},
    {"surrogate", 'C', 's'}, {"privateuse", 'C', 'o'}, {"unassigned", 'C', 'n'},
};

int uni_gc_parse(const char *name, size_t len, char *major, char *minor) {
  char k[32];
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (c == '_' || c == '-' || c == ' ') continue;
    if (n + 1 >= sizeof k) return -1;
    k[n++] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
  }
  k[n] = 0;
  if (n == 1 || n == 2) { /* a short name: one of the classes or categories */
    for (int g = 0; g < UNI_GC_COUNT; g++) {
      const char *gn = uni_gc_names[g];
      if (k[0] != gn[0] - 'A' + 'a' || (n == 2 && k[1] != gn[1])) continue;
      *major = gn[0];
      *minor = n == 2 ? gn[1] : 0;
      return 0;
    }
    return -1;
  }
  for (size_t i = 0; i < sizeof uni_gc_props / sizeof uni_gc_props[0]; i++)
    if (!strcmp(k, uni_gc_props[i].name)) {
      *major = uni_gc_props[i].major;
      *minor = uni_gc_props[i].minor;
      return 0;
    }
  return -1;
}

int uni_is_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x9 && cp <= 0xD);
  if (cp < 0x85) return 0;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

uint32_t uni_fold(uint32_t cp) {
  if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp; /* the common case, no search */
  if (cp > 0x10FFFF) return cp;
  size_t lo = 0, hi = uni_fold_tab_n;
  while (lo < hi) { /* first run that ends at or after cp */
    size_t mid = lo + (hi - lo) / 2;
    if ((uni_fold_tab[mid].last & 0x7FFFFFFFu) < cp) lo = mid + 1;
    else hi = mid;
  }
  if (lo == uni_fold_tab_n) return cp;
  const uni_fold_run *r = &uni_fold_tab[lo];
  if (cp < r->first) return cp;
  if ((r->last >> 31) && ((cp - r->first) & 1)) return cp; /* the uncased half of an alternating run */
  return (uint32_t)((int64_t)cp + r->delta);
}

/* The packed ccc table entry of cp: (NFC_QC != Yes) << 8 | ccc. */
static uint32_t ccc_qc(uint32_t cp) {
  if (cp < 0x300) return 0; /* below the first combining mark nothing combines or changes */
  if (cp > 0x10FFFF) return 0;
  return uni_ccc_tab[run_find(uni_ccc_tab, uni_ccc_tab_n, cp, 9)] & 0x1FF;
}

int uni_ccc(uint32_t cp) { return (int)(ccc_qc(cp) & 0xFF); }

int uni_utf8_next(const char *s, size_t len, size_t *i, uint32_t *cp) {
  const unsigned char *u = (const unsigned char *)s;
  size_t k = *i;
  if (k >= len) return -1;
  uint32_t c = u[k], min;
  size_t n;
  if (c < 0x80) {
    *cp = c;
    *i = k + 1;
    return 0;
  }
  if (c >= 0xC2 && c <= 0xDF) n = 1, c &= 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) n = 2, c &= 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) n = 3, c &= 0x07, min = 0x10000;
  else return -1; /* a continuation byte, C0/C1 (always overlong) or F5..FF */
  if (len - k - 1 < n) return -1;
  for (size_t j = 1; j <= n; j++) {
    uint32_t b = u[k + j];
    if ((b & 0xC0) != 0x80) return -1;
    c = c << 6 | (b & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return -1;
  *cp = c;
  *i = k + 1 + n;
  return 0;
}

size_t uni_utf8_put(char *dst, uint32_t cp) {
  unsigned char *d = (unsigned char *)dst;
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
  if (cp < 0x80) {
    d[0] = (unsigned char)cp;
    return 1;
  }
  if (cp < 0x800) {
    d[0] = (unsigned char)(0xC0 | cp >> 6);
    d[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    d[0] = (unsigned char)(0xE0 | cp >> 12);
    d[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    d[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  d[0] = (unsigned char)(0xF0 | cp >> 18);
  d[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
  d[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
  d[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

/* ---------------------------------------------------------------- NFC */

/* The decomposed text: each element is cp | ccc << 24, so ordering reads the
 * class without another lookup. */
typedef struct nfc_buf {
  uint32_t *v;
  size_t n, cap;
} nfc_buf;

static void nfc_push(nfc_buf *b, uint32_t cp) {
  if (b->n == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 64;
    b->v = rl_xrealloc(b->v, b->cap * sizeof *b->v);
  }
  b->v[b->n++] = cp | (ccc_qc(cp) & 0xFF) << 24;
}

/* The one-level canonical decomposition of cp, or NULL. */
static const uni_decomp *decomp_find(uint32_t cp) {
  if (cp < 0xC0) return NULL; /* À is the first code point that decomposes */
  size_t lo = 0, hi = uni_decomp_tab_n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (uni_decomp_tab[mid].cp < cp) lo = mid + 1;
    else hi = mid;
  }
  return lo < uni_decomp_tab_n && uni_decomp_tab[lo].cp == cp ? &uni_decomp_tab[lo] : NULL;
}

/* Append the full canonical decomposition of cp (recursive: a decomposes
 * further, b never does in a canonical mapping, but recursing costs nothing). */
static void nfc_decompose(nfc_buf *b, uint32_t cp) {
  if (cp - HANGUL_S < HANGUL_SN) {
    uint32_t si = cp - HANGUL_S, t = si % HANGUL_TN;
    nfc_push(b, HANGUL_L + si / HANGUL_NN);
    nfc_push(b, HANGUL_V + si % HANGUL_NN / HANGUL_TN);
    if (t) nfc_push(b, HANGUL_T + t);
    return;
  }
  const uni_decomp *d = decomp_find(cp);
  if (!d) {
    nfc_push(b, cp);
    return;
  }
  nfc_decompose(b, d->a);
  if (d->b) nfc_decompose(b, d->b);
}

/* Stable sort of v[0..n) by combining class (merge sort through tmp[n]);
 * insertion sort for the short runs real text has. */
static void nfc_sort(uint32_t *v, uint32_t *tmp, size_t n) {
  if (n <= 16) {
    for (size_t i = 1; i < n; i++) {
      uint32_t x = v[i];
      size_t j = i;
      for (; j > 0 && (v[j - 1] >> 24) > (x >> 24); j--) v[j] = v[j - 1];
      v[j] = x;
    }
    return;
  }
  size_t h = n / 2;
  nfc_sort(v, tmp, h);
  nfc_sort(v + h, tmp, n - h);
  size_t i = 0, j = h, k = 0;
  while (i < h && j < n) tmp[k++] = (v[j] >> 24) < (v[i] >> 24) ? v[j++] : v[i++];
  while (i < h) tmp[k++] = v[i++];
  memcpy(v, tmp, k * sizeof *v); /* what is left of the second half is in place */
}

/* Canonical ordering: every run of non-starters sorted by class. */
static void nfc_reorder(nfc_buf *b) {
  uint32_t *tmp = NULL;
  for (size_t i = 0; i < b->n;) {
    if (!(b->v[i] >> 24)) {
      i++;
      continue;
    }
    size_t j = i;
    while (j < b->n && (b->v[j] >> 24)) j++;
    if (j - i > 16 && !tmp) tmp = rl_xmalloc(b->n * sizeof *tmp);
    nfc_sort(b->v + i, tmp, j - i);
    i = j;
  }
  free(tmp);
}

/* The primary composite of a + b, or 0. */
static uint32_t nfc_compose_pair(uint32_t a, uint32_t b) {
  if (a - HANGUL_L < HANGUL_LN && b - HANGUL_V < HANGUL_VN)
    return HANGUL_S + ((a - HANGUL_L) * HANGUL_VN + (b - HANGUL_V)) * HANGUL_TN;
  if (a - HANGUL_S < HANGUL_SN && (a - HANGUL_S) % HANGUL_TN == 0 && b - HANGUL_T - 1 < HANGUL_TN - 1)
    return a + (b - HANGUL_T);
  size_t lo = 0, hi = uni_comp_tab_n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const uni_comp *c = &uni_comp_tab[mid];
    if (c->a < a || (c->a == a && c->b < b)) lo = mid + 1;
    else hi = mid;
  }
  return lo < uni_comp_tab_n && uni_comp_tab[lo].a == a && uni_comp_tab[lo].b == b ? uni_comp_tab[lo].c : 0;
}

/* Canonical composition in place: each character joins the last starter when
 * nothing between them blocks it (a class 0 in between, or one >= its own). */
static void nfc_compose(nfc_buf *b) {
  if (!b->n) return;
  size_t starter = 0, out = 1;
  /* the class of the last character kept; 256 when the text opens with a
   * non-starter, which nothing may compose with */
  uint32_t last = b->v[0] >> 24 ? 256 : 0;
  for (size_t i = 1; i < b->n; i++) {
    uint32_t x = b->v[i], cls = x >> 24;
    if (last == 0 || last < cls) {
      uint32_t c = last == 256 ? 0 : nfc_compose_pair(b->v[starter] & 0xFFFFFF, x & 0xFFFFFF);
      if (c) {
        b->v[starter] = c; /* a primary composite of a starter is a starter */
        continue;
      }
    }
    if (cls == 0) starter = out;
    last = cls;
    b->v[out++] = x;
  }
  b->n = out;
}

int uni_nfc(const char *s, size_t len, char **out, size_t *out_len) {
  *out = NULL;
  *out_len = 0;
  /* Quick check (UAX #15 §9): text whose characters are all NFC_QC=Yes with
   * combining classes in order is NFC already. Where it fails, everything
   * before the last QC=Yes starter is final too and is copied as is. */
  size_t i = 0, safe = 0;
  uint32_t last = 0, cp;
  int slow = 0;
  while (i < len) {
    if ((unsigned char)s[i] < 0x80) {
      safe = i++;
      last = 0;
      continue;
    }
    size_t at = i;
    if (uni_utf8_next(s, len, &i, &cp)) return -1;
    uint32_t v = ccc_qc(cp), cls = v & 0xFF;
    if ((v >> 8) || (cls && last > cls)) {
      slow = 1;
      break;
    }
    if (!cls) safe = at;
    last = cls;
  }
  if (!slow) {
    *out = rl_xmalloc(len + 1);
    memcpy(*out, s, len);
    (*out)[len] = 0;
    *out_len = len;
    return 0;
  }
  nfc_buf b = {0};
  for (i = safe; i < len;) {
    if (uni_utf8_next(s, len, &i, &cp)) {
      free(b.v);
      return -1;
    }
    nfc_decompose(&b, cp);
  }
  nfc_reorder(&b);
  nfc_compose(&b);
  char *o = rl_xmalloc(safe + 4 * b.n + 1);
  memcpy(o, s, safe);
  size_t n = safe;
  for (size_t k = 0; k < b.n; k++) n += uni_utf8_put(o + n, b.v[k] & 0xFFFFFF);
  o[n] = 0;
  free(b.v);
  *out = o;
  *out_len = n;
  return 0;
}
