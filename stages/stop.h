/* stop.h — when a generated sequence ends, and why.
 *
 *   stop_rule rule = {.eos = tok->eos, .stop = recipe.rollout.stop.items,
 *                     .n_stop = recipe.rollout.stop.n, .max_new_tokens = 256};
 *   stop_seq s;  stop_seq_init(&s);
 *   for each sampled token:  if (stop_seq_push(&s, &rule, tok, token, &e) < 0) error;
 *                            if (s.reason != FINISH_NONE) the sequence is done
 *   s.text (the completion text), s.n_tokens;  stop_seq_free(&s);
 *
 * Rules, checked after each token, first match wins:
 *   1. "eos": the token is the EOS id, or one of eos_more (a model with two
 *      ends, as Qwen3's <|im_end|> and <|endoftext|>). It counts as a
 *      generated token (it has a log-prob and is trained on) but adds no text.
 *   2. "stop": one of the stop strings occurs in the completion text decoded
 *      so far (byte match on the concatenated token bytes; specials add no
 *      text). The stop string is INCLUDED in the text, which ends right after
 *      its first occurrence (exclude_stop = 1: the text ends right before
 *      it). Every generated token is kept, so when the last token carries
 *      bytes past the stop string, the text is shorter than the tokens'
 *      decoding. Only text that the newest token completed is searched, so
 *      a stop string is found at its earliest end.
 *   3. "length": max_new_tokens tokens have been generated.
 * The prompt's text is never searched. */
#ifndef RLRUN_STOP_H
#define RLRUN_STOP_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/common.h"
#include "stages/tokenizer.h"

typedef enum finish_reason {
  FINISH_NONE = 0, /* still running */
  FINISH_EOS,
  FINISH_STOP,
  FINISH_LENGTH
} finish_reason;

/* "eos", "stop", "length" (NULL for FINISH_NONE): the names stored and shown to reward hooks. */
const char *finish_reason_name(finish_reason r);

typedef struct stop_rule {
  int32_t eos;                /* EOS id; -1 = none */
  char *const *stop;          /* stop strings (non-empty) */
  int n_stop;
  int64_t max_new_tokens;     /* >= 1 */
  int exclude_stop;           /* 1: cut the text before the stop string */
  const int32_t *eos_more;    /* more ids that end a sequence as EOS does (rollout.stop_tokens) */
  int n_eos_more;
} stop_rule;

/* One sequence's completion so far. */
typedef struct stop_seq {
  char *text;        /* NUL-terminated completion text */
  size_t len, cap;
  int64_t n_tokens;  /* generated tokens, EOS included */
  finish_reason reason;
  int32_t stop_index; /* which stop string matched, else -1 */
} stop_seq;

void stop_seq_init(stop_seq *s);
void stop_seq_free(stop_seq *s);
/* Add one generated token; returns the (possibly new) finish reason, or -1
 * with e set (an id outside the vocabulary; pushing to a finished sequence). */
int stop_seq_push(stop_seq *s, const stop_rule *r, const tokenizer *t, int32_t token, rl_err *e);

#endif
