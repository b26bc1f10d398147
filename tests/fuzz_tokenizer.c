// fuzz_tokenizer.c: libFuzzer target: tokenizer_encode on arbitrary bytes must not crash, leak or trip
// a sanitizer, and its ids must have the documented shape (SOT, ids < 49408, EOT, zero padding; a
// shorter context gives the same first ids). From the repository root, after scripts/get_vocab.sh:
//   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DHAVE_UTF8PROC \
//       -o build/fuzz_tokenizer tests/fuzz_tokenizer.c data/tokenizer.c data/text_clean.c \
//       -lutf8proc -lz -lpthread
//   build/fuzz_tokenizer -max_total_time=60 -max_len=4096
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../data/tokenizer.h"

#define T 77

static void check(int ok) {
    if (!ok) abort();
}

// The shape of an encoding: n ids (2 when encode returned -1), SOT first, EOT last, zeros after.
static void check_shape(const int32_t *ids, int got, int ctx) {
    int n = got < 0 ? 2 : got;
    check(got == -1 || (got >= 2 && got <= ctx));
    check(ids[0] == TOKEN_SOT && ids[n - 1] == TOKEN_EOT);
    for (int i = 1; i < n - 1; i++) check(ids[i] >= 0 && ids[i] < 49408);
    for (int i = n; i < ctx; i++) check(ids[i] == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Tokenizer *tok;
    if (!tok) tok = tokenizer_load(NULL);
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    int32_t ids[T], short_ids[8];
    int got = tokenizer_encode(tok, text, ids, T);
    check_shape(ids, got, T);
    int got_short = tokenizer_encode(tok, text, short_ids, 8);
    check_shape(short_ids, got_short, 8);
    check((got < 0) == (got_short < 0));
    for (int i = 0; i < 7 && i < (got < 0 ? 2 : got) - 1; i++) check(short_ids[i] == ids[i]);
    free(text);
    return 0;
}
