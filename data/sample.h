// sample.h: one webdataset sample -> one training example (transformed image + caption tokens), or the
// reason it is skipped. Shared by the loader's decode threads and --inspect-data, so both judge samples
// the same way.
#pragma once
#include <stdint.h>
#include <stdio.h>

#include "../model/rng.h"
#include "tar.h"
#include "text_clean.h"
#include "tokenizer.h"

typedef enum {
    SAMPLE_OK,
    SKIP_CORRUPT_IMAGE,    // the decoder failed (truncated or damaged data)
    SKIP_BAD_CAPTION,      // empty, not UTF-8, a NUL byte, or over SAMPLE_MAX_CAPTION bytes
    SKIP_MISSING_IMAGE,    // no jpg/png/jpeg/webp member
    SKIP_MISSING_CAPTION,  // no txt member
    SKIP_TOO_LARGE,        // over max_image_pixels (from the header), a member over SAMPLE_MAX_IMAGE bytes, or (eval)
                           // a strip whose resized longer side would pass 2^31 px
    SKIP_EMPTY_MEMBER,     // a zero-byte image or caption
    SKIP_UNSUPPORTED,      // not an image format this build decodes
    SAMPLE_STATUSES
} SampleStatus;

#define SAMPLE_MAX_CAPTION TEXT_CLEAN_MAX_BYTES  // the tokenizer refuses longer text
#define SAMPLE_MAX_IMAGE (256L << 20)

// Short names for logs: "corrupt_image", "bad_caption", ...
extern const char *const SAMPLE_STATUS_NAMES[SAMPLE_STATUSES];

typedef struct {
    const Tokenizer *tok;
    int image_size, context_length;
    long max_image_pixels;
    int alpha_on_white;  // composite transparent pixels onto white (config image_alpha = white)
    int is_train;  // random crop from the sample's stream, else resize + centre crop
} SampleParams;

typedef struct {  // a thread's buffers, reused from sample to sample
    uint8_t *bytes;
    size_t bytes_cap;
    char *caption;  // the last caption read (NUL-terminated)
    size_t caption_cap;
} SampleScratch;

typedef struct {
    SampleStatus status;
    int width, height;  // the image as stored; 0 when it was not decoded
    int32_t label;      // the class index in the `cls` member (evaluation shards); -1 if none or not a number
    char why[256];      // what is wrong, for the warning
} SampleResult;

// Read the members of `s` from f (its shard), tokenize the caption into tokens (T) and decode the image,
// then transform it into image (3, S, S); image NULL only decodes (the caption stays in scratch->caption).
// rng: the sample's augmentation stream (used when p->is_train).
SampleResult sample_load(FILE *f, const WdsSample *s, const SampleParams *p, Rng *rng, SampleScratch *scratch, uint8_t *image,
                         int32_t *tokens);
void sample_scratch_free(SampleScratch *s);
