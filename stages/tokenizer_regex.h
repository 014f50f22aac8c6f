/* tokenizer_regex.h — the regexes of a tokenizer.json's pre-tokenizer, as
 * Oniguruma (what Hugging Face `tokenizers` uses) runs them, over code points.
 *
 *   const char *why; size_t at;
 *   rx_prog *g = rx_compile_pattern("\\p{N}{1,3}|\\s+(?!\\S)", &why, &at);
 *   long budget = 100000; size_t end;
 *   if (rx_match_at(g, cps, n, pos, &end, &budget) == 1) ...   // a match [pos, end)
 *   rx_prog_free(g);
 *
 * The subset tokenizer patterns are written in: alternation, groups ((?:…),
 * (?i:…), capturing ones as plain groups), lookahead (?=…) / (?!…), classes
 * with ranges and negation, \p{…} / \P{…} over general categories (L, Lu,
 * Letter, …), \s \S (White_Space) \d \D (Nd) \w \W (letters, marks, Nd, Pc),
 * escapes \n \r \t \f \v \a \e \0 \xHH \x{H…} \uHHHH and escaped punctuation,
 * `.` (anything but \n), quantifiers ? * + {n} {n,} {n,m} {,m} (greedy, or lazy
 * with a trailing ?); a '{' that starts no counted repeat is a literal, as in
 * Oniguruma. Case-insensitive parts compare simple case foldings
 * (stages/unicode.h: 'ſ' matches (?i:s)). The search is depth-first with
 * leftmost-first alternation — Oniguruma's (and Perl's) semantics, not POSIX
 * leftmost-longest. Refused at compile time, with *why naming the construct
 * and *at its character index: lookbehind, anchors, backreferences, \b,
 * possessive quantifiers, inline flags, nested classes, class intersection,
 * a repeat of something that can match the empty string (its loop would not
 * advance), counts past 1000. */
#ifndef RLRUN_TOKENIZER_REGEX_H
#define RLRUN_TOKENIZER_REGEX_H

#include <stddef.h>
#include <stdint.h>

typedef struct rx_prog rx_prog;

/* Compile pattern (UTF-8); NULL with *why (static text) and *at set when it
 * uses a construct the matcher does not run. */
rx_prog *rx_compile_pattern(const char *pattern, const char **why, size_t *at);
void rx_prog_free(rx_prog *g);
/* 1 when the pattern can match the empty string somewhere (x?, \s*, a|, a
 * lookahead alone): Oniguruma's searches return such matches and `tokenizers`
 * splits at each; the tokenizer refuses these patterns instead. */
int rx_can_match_empty(const rx_prog *g);

/* Match at code point pos of s[0..n) (anchored there): 1 and *end when it
 * matches (the first match the depth-first search finds, which may be empty),
 * 0 when it does not, −1 when *budget (steps, decremented) ran out. */
int rx_match_at(const rx_prog *g, const uint32_t *s, size_t n, size_t pos, size_t *end, long *budget);

#endif
