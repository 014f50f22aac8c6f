/* tokenizer.h — text ↔ token ids, behind one interface (a vtable), so the
 * rollout and the trainer never care which tokenizer a recipe declared.
 *
 *   tokenizer *t;
 *   if (tokenizer_chars_new("0123456789+=", &t, &e)) ...   // or recipe_tokenizer (runner/inputs.h)
 *   int32_t *ids; int64_t n;
 *   tokenizer_encode(t, "12+30=", 6, &ids, &n, &e);   // no specials added
 *   char *text = tokenizer_decode(t, ids, n, TOKENIZER_SKIP_SPECIAL, &e);
 *   tokenizer_free(t);
 *
 * The character tokenizer (tokenizer.type: chars, tokenizer.chars: "…"):
 *   id 0 = <pad>, 1 = <bos>, 2 = <eos>, then one id per UTF-8 character of
 *   tokenizer.chars in the declared order (id 3 = the first character), so
 *   the vocabulary has 3 + (number of characters) ids. encode maps each
 *   character to its id; a character outside the vocabulary is an error
 *   naming the character (U+XXXX), its character index and byte offset.
 *   Special-token names in the text ("<eos>") are ordinary characters.
 *
 * The byte-level BPE tokenizer (tokenizer.type: hf, tokenizer_hf.c) reads a
 * Hugging Face tokenizer.json of the GPT-2 / Qwen2 / Qwen3 / Llama-3 kind and
 * encodes as the `tokenizers` library does (added tokens, NFC, the
 * pre-tokenizer's regex, BPE merges); ids are the file's. BOS, EOS and PAD
 * come from tokenizer_config.json beside it (bos_token, eos_token, pad_token;
 * -1 when absent or null, and BOS -1 when add_bos_token is false).
 *
 * Each tokenizer implements the tokenizer_ops below: encode, and the raw bytes
 * of one token (decode is the concatenation of token bytes, so byte-level BPE
 * pieces that split a UTF-8 character decode correctly once joined; a text
 * that ends inside a character, or holds bytes no character makes, gets
 * U+FFFD for them: tokenizer_fix_utf8). */
#ifndef RLRUN_TOKENIZER_H
#define RLRUN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/common.h"

typedef struct tokenizer tokenizer;

typedef struct tokenizer_ops {
  const char *kind; /* "chars", "hf" */
  /* text[len] → *ids (malloc'd, *n of them); no specials added. */
  int (*encode)(const tokenizer *t, const char *text, size_t len, int32_t **ids, int64_t *n, rl_err *e);
  /* The bytes of token id (0 <= id < vocab); *special = 1 for BOS/EOS/PAD and
   * other control tokens (their bytes are their name, e.g. "<eos>"). */
  void (*token_bytes)(const tokenizer *t, int32_t id, const char **bytes, size_t *len, int *special);
  void (*destroy)(tokenizer *t);
} tokenizer_ops;

/* The handle every tokenizer starts with (implementations embed it first). */
struct tokenizer {
  const tokenizer_ops *ops;
  int64_t vocab;          /* ids are 0 .. vocab-1 */
  int32_t bos, eos, pad;  /* -1 when the tokenizer has none */
};

enum {
  TOKENIZER_SKIP_SPECIAL = 1 /* decode: leave BOS/EOS/PAD out of the text */
};

/* The character tokenizer over the UTF-8 characters of chars (each once, at
 * least one). Errors (RL_EXIT_USAGE) name the character and its position. */
int tokenizer_chars_new(const char *chars, tokenizer **out, rl_err *e);
/* The byte-level BPE tokenizer of a tokenizer.json (path; tokenizer_config.json
 * is looked for in the same directory). Errors (RL_EXIT_USAGE) name the file
 * and what in it rlrun does not read. */
int tokenizer_hf_new(const char *path, tokenizer **out, rl_err *e);
/* The same from a tokenizer.json's text[0..len) in memory; path names it in
 * messages and, with with_config, locates tokenizer_config.json. */
int tokenizer_hf_new_mem(const char *text, size_t len, const char *path, int with_config, tokenizer **out,
                         rl_err *e);
/* An hf tokenizer's tokenizer_config.json naming a bos (which 0), eos (1) or
 * pad (2) token that is no token of it: the message (that id is -1); NULL when
 * none, or for another tokenizer. The recipe decides whether it matters
 * (tokenizer.bos / tokenizer.eos may name the token instead). */
const char *tokenizer_hf_config_problem(const tokenizer *t, int which);
void tokenizer_free(tokenizer *t);

int64_t tokenizer_vocab_size(const tokenizer *t);
/* Text → ids (malloc'd). Returns 0 or RL_EXIT_USAGE (unknown character,
 * invalid UTF-8) with e set. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int32_t **ids, int64_t *n,
                     rl_err *e);
/* Ids → NUL-terminated text (malloc'd); NULL with e set (RL_EXIT_USAGE)
 * when an id is outside [0, vocab), naming its position. */
char *tokenizer_decode(const tokenizer *t, const int32_t *ids, int64_t n, int flags, rl_err *e);
/* The id of the token whose text is exactly `text` (an added or special
 * token's content, or a vocabulary entry's bytes); -1 when none. */
int32_t tokenizer_find(const tokenizer *t, const char *text);
/* Make *text (malloc'd, NUL-terminated) valid UTF-8: each maximal piece of an
 * ill-formed sequence (a lead byte and the continuation bytes that fit it, or
 * one stray byte) becomes one U+FFFD, as `tokenizers`' decode does (Rust's
 * from_utf8_lossy): a sampled completion may end inside a character. Returns
 * how many replacements were made (0: *text untouched). */
int64_t tokenizer_fix_utf8(char **text);
/* The bytes of one token (see tokenizer_ops.token_bytes); 0 or RL_EXIT_USAGE. */
int tokenizer_token_bytes(const tokenizer *t, int32_t id, const char **bytes, size_t *len, int *special,
                          rl_err *e);

#endif
