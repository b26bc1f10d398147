// tokenizer.h: CLIP's byte-level BPE tokenizer, identical to open_clip's SimpleTokenizer: text clean-up
// (ftfy-style fixes, html unescape, whitespace, lower-case), the Unicode-aware split, 48,894 BPE merges,
// SOT 49406 / EOT 49407, 0 padding, truncation that keeps EOT last.
//
// Where we differ from open_clip on purpose: open_clip turns a caption that is empty after cleaning
// (e.g. "", "   ", "&nbsp;") into SOT EOT and trains on it; tokenizer_encode returns -1 for it, for
// text that is not valid UTF-8 (which open_clip never sees: webdataset's decode fails first) and for
// text over 64 KiB, so that the loader skips such samples by policy. What the clean-up covers, and
// where it can still differ from open_clip, is in docs/tokenizer.md.
#pragma once
#include <stdint.h>

#include "../model/config.h"

#define TOKEN_SOT 49406
#define TOKEN_EOT 49407

typedef struct Tokenizer Tokenizer;

// Load bpe_simple_vocab_16e6.txt.gz. path NULL searches $TRAIN_CLIP_BPE, then
// data/bpe_simple_vocab_16e6.txt.gz; a missing file stops with a message saying how to fetch it
// (scripts/get_vocab.sh). Stops with a message when train_clip was built without utf8proc.
Tokenizer *tokenizer_load(const char *path);
// Encode one caption (NUL-terminated UTF-8) into exactly context_length (>= 2) ids: SOT, tokens, EOT,
// zeros. Safe to call from several threads at once (each thread keeps its own cache of encoded words).
// Returns the number of ids before padding, or -1 if the text is not valid UTF-8, is empty after
// cleaning, or is longer than 64 KiB (TEXT_CLEAN_MAX_BYTES); the caller skips such samples. ids then
// hold SOT EOT and zeros, open_clip's ids for "".
int tokenizer_encode(const Tokenizer *t, const char *text, int32_t *ids, int context_length);
// No thread may be inside tokenizer_encode, or exiting after having used t, while t is freed.
void tokenizer_free(Tokenizer *t);

// ./train_clip --tokenize: captions on stdin, one per line; prints c->context_length ids per line
// (a line the loader would skip prints SOT EOT and zeros, with a warning on stderr). Returns 0.
int tokenize_main(const Config *c);
