/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser:
 * any byte string is a candidate file (length prefix, JSON header, data).
 * The parser must return an error value or a header whose tensors tile the
 * data exactly; never crash, leak or read out of bounds.
 *
 *   make fuzz && build-fuzz/fuzz_safetensors -runs=1000000 -max_len=4096 CORPUS_DIR */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  st_header h;
  rl_err e;
  if (st_buffer_parse("fuzz.safetensors", data, size, &h, &e) == 0) {
    /* A header accepted must describe the buffer: check the invariants. */
    uint64_t pos = 0;
    for (int i = 0; i < h.n_tensors; i++) {
      const st_tensor *t = &h.tensors[i];
      if (t->begin != pos || t->end - t->begin != t->nbytes ||
          t->nbytes != t->numel * st_dtype_size(t->dtype))
        abort();
      pos = t->end;
      if (st_header_find(&h, t->name) == NULL) abort();
    }
    if (pos != h.data_len || h.data_start + h.data_len != size) abort();
    st_header_free(&h);
  } else if (e.msg[0] == 0 || !strstr(e.msg, "fuzz.safetensors")) {
    abort(); /* every error names the file */
  }
  return 0;
}
