/* sha256.h — SHA-256 (FIPS 180-4) for checkpoint files, exported inputs and
 * the input hashes a run records. Streaming (init/update/final) and one-shot. */
#ifndef RLRUN_SHA256_H
#define RLRUN_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/common.h"

typedef struct sha256_ctx {
  uint32_t h[8];      /* chaining state */
  uint64_t nbytes;    /* message length so far */
  uint8_t buf[64];    /* pending partial block */
  size_t nbuf;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
/* Finish and write the 32-byte digest; the context must be re-initialised to reuse. */
void sha256_final(sha256_ctx *c, uint8_t digest[32]);

/* Digest of one buffer. */
void sha256_buf(const void *data, size_t n, uint8_t digest[32]);
/* Lower-case hex of a digest (64 characters + NUL). */
void sha256_hex(const uint8_t digest[32], char hex[65]);
/* Hash a whole file (streamed); writes hex and, when size is not NULL, its byte count. */
int sha256_file(const char *path, char hex[65], uint64_t *size, rl_err *e);

#endif
