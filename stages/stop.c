/* stop.c — per-sequence stop conditions (contract in stop.h). */
#include "stages/stop.h"

#include <stdlib.h>
#include <string.h>

const char *finish_reason_name(finish_reason r) {
  switch (r) {
  case FINISH_EOS: return "eos";
  case FINISH_STOP: return "stop";
  case FINISH_LENGTH: return "length";
  default: return NULL;
  }
}

void stop_seq_init(stop_seq *s) {
  memset(s, 0, sizeof *s);
  s->cap = 64;
  s->text = rl_xmalloc(s->cap);
  s->text[0] = 0;
  s->stop_index = -1;
}

void stop_seq_free(stop_seq *s) {
  free(s->text);
  memset(s, 0, sizeof *s);
}

/* The earliest-ending occurrence of a stop string that ends after byte
 * `from` (the text before it was already searched); sets *end, *which. */
static int stop_find(const stop_seq *s, const stop_rule *r, size_t from, size_t *end, int *which) {
  int found = 0;
  for (int i = 0; i < r->n_stop; i++) {
    size_t l = strlen(r->stop[i]);
    if (!l || l > s->len) continue;
    size_t start = from >= l - 1 ? from - (l - 1) : 0; /* an occurrence must end past `from` */
    const char *p = memmem(s->text + start, s->len - start, r->stop[i], l);
    if (p && (!found || (size_t)(p - s->text) + l < *end)) *end = (size_t)(p - s->text) + l, *which = i, found = 1;
  }
  return found;
}

int stop_seq_push(stop_seq *s, const stop_rule *r, const tokenizer *t, int32_t token, rl_err *e) {
  if (s->reason != FINISH_NONE) {
    rl_errf(e, RL_EXIT_FAIL, "stop: token pushed to a sequence already finished (%s)", finish_reason_name(s->reason));
    return -1;
  }
  const char *b;
  size_t l;
  int special;
  if (tokenizer_token_bytes(t, token, &b, &l, &special, e)) {
    rl_err_prefix(e, "generated token %lld: ", (long long)s->n_tokens);
    return -1;
  }
  s->n_tokens++;
  if (r->eos >= 0 && token == r->eos) return s->reason = FINISH_EOS;
  for (int k = 0; k < r->n_eos_more; k++)
    if (token == r->eos_more[k]) return s->reason = FINISH_EOS;
  if (!special && l) {
    size_t from = s->len;
    if (s->len + l + 1 > s->cap) {
      while (s->len + l + 1 > s->cap) s->cap *= 2;
      s->text = rl_xrealloc(s->text, s->cap);
    }
    memcpy(s->text + s->len, b, l);
    s->len += l;
    s->text[s->len] = 0;
    size_t end = 0;
    int which = 0;
    if (stop_find(s, r, from, &end, &which)) {
      s->len = r->exclude_stop ? end - strlen(r->stop[which]) : end;
      s->text[s->len] = 0;
      s->stop_index = which;
      return s->reason = FINISH_STOP;
    }
  }
  if (s->n_tokens >= r->max_new_tokens) return s->reason = FINISH_LENGTH;
  return FINISH_NONE;
}
