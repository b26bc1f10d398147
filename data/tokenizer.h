// tokenizer.h: CLIP's byte-level BPE tokenizer, identical to open_clip's SimpleTokenizer: text clean-up
// (ftfy-style fixes, html unescape, whitespace, lower-case), the Unicode-aware split, 48,894 BPE merges,
// SOT 49406 / EOT 49407, 0 padding, truncation that keeps EOT last.
#pragma once
#include <stdint.h>

#define TOKEN_SOT 49406
#define TOKEN_EOT 49407

typedef struct Tokenizer Tokenizer;

// Load bpe_simple_vocab_16e6.txt.gz. path NULL searches $TRAIN_CLIP_BPE, then
// data/bpe_simple_vocab_16e6.txt.gz; a missing file stops with a message saying how to fetch it.
Tokenizer *tokenizer_load(const char *path);
// Encode one caption into exactly context_length ids (SOT, tokens, EOT, zeros). Safe to call from
// several threads at once. Returns the number of ids before padding, or -1 if the text is not valid
// UTF-8 or has no visible characters (the caller skips such samples).
int tokenizer_encode(const Tokenizer *t, const char *text, int32_t *ids, int context_length);
void tokenizer_free(Tokenizer *t);
