// sample.c: the checks, reads, decode, transform and tokenization of one sample, in the order that finds
// a bad sample cheapest (member sizes, then the caption, then the image).
#include "sample.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../model/utils.h"
#include "image.h"
#include "transform.h"

const char *const SAMPLE_STATUS_NAMES[SAMPLE_STATUSES] = {
    "ok", "corrupt_image", "bad_caption", "missing_image", "missing_caption", "too_large", "empty_member", "unsupported",
};

__attribute__((format(printf, 3, 4))) static SampleResult skip(SampleResult r, SampleStatus status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.why, sizeof(r.why), fmt, ap);
    va_end(ap);
    r.status = status;
    return r;
}

static void reserve(void **buf, size_t *cap, size_t need) {
    if (*cap >= need) return;
    *cap = need + need / 2;
    *buf = reallocCheck(*buf, *cap);
}

// The `cls` member: a decimal class index; anything else (absent, empty, not a number, negative) is -1.
static int32_t read_label(FILE *f, TarSpan cls) {
    char text[24];
    if (cls.size <= 0 || cls.size >= (int64_t)sizeof(text) || tar_read_span(f, cls, text) != 0) return -1;
    char *end;
    long v = strtol(text, &end, 10);
    if (end == text) return -1;  // no digits: empty or white space only (skipping the white space below would hide that)
    while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t') end++;
    return *end == '\0' && v >= 0 && v <= INT32_MAX ? (int32_t)v : -1;
}

SampleResult sample_load(FILE *f, const WdsSample *s, const SampleParams *p, Rng *rng, SampleScratch *scratch, uint8_t *image,
                         int32_t *tokens) {
    SampleResult r = {SAMPLE_OK, 0, 0, -1, ""};
    if (s->txt.size < 0) return skip(r, SKIP_MISSING_CAPTION, "no .txt member");
    if (s->image.size < 0) return skip(r, SKIP_MISSING_IMAGE, "no .jpg/.png/.jpeg/.webp member");
    if (s->txt.size == 0) return skip(r, SKIP_EMPTY_MEMBER, "zero-byte caption");
    if (s->image.size == 0) return skip(r, SKIP_EMPTY_MEMBER, "zero-byte image");
    if (s->txt.size > SAMPLE_MAX_CAPTION)
        return skip(r, SKIP_BAD_CAPTION, "caption of %lld bytes (over %d)", (long long)s->txt.size, SAMPLE_MAX_CAPTION);
    if (s->image.size > SAMPLE_MAX_IMAGE) return skip(r, SKIP_TOO_LARGE, "image member of %lld bytes", (long long)s->image.size);

    reserve((void **)&scratch->caption, &scratch->caption_cap, (size_t)s->txt.size + 1);
    if (tar_read_span(f, s->txt, scratch->caption) != 0) return skip(r, SKIP_BAD_CAPTION, "cannot read the caption");
    if (strlen(scratch->caption) != (size_t)s->txt.size) return skip(r, SKIP_BAD_CAPTION, "caption contains a NUL byte");
    if (tokenizer_encode(p->tok, scratch->caption, tokens, p->context_length) < 0)
        return skip(r, SKIP_BAD_CAPTION, "caption is empty or not valid UTF-8");

    reserve((void **)&scratch->bytes, &scratch->bytes_cap, (size_t)s->image.size + 1);
    if (tar_read_span(f, s->image, scratch->bytes) != 0) return skip(r, SKIP_CORRUPT_IMAGE, "cannot read the image");
    Image img;
    ImageStatus st = image_decode(scratch->bytes, (size_t)s->image.size, p->max_image_pixels, p->image_size, p->alpha_on_white, &img, r.why,
                                  sizeof(r.why));
    r.width = img.full_w, r.height = img.full_h, r.label = read_label(f, s->cls);
    int new_w, new_h;  // the eval Resize of a long enough strip would not fit in an int
    if (st == IMAGE_OK && !p->is_train && !transform_eval_size(img.full_w, img.full_h, p->image_size, &new_w, &new_h)) {
        st = IMAGE_TOO_LARGE;
        snprintf(r.why, sizeof(r.why), "%dx%d: resized to %d px on its shorter side it would be over 2^31 px long", img.full_w, img.full_h,
                 p->image_size);
    }
    static const SampleStatus BY_IMAGE_STATUS[] = {SAMPLE_OK, SKIP_CORRUPT_IMAGE, SKIP_TOO_LARGE, SKIP_UNSUPPORTED};
    r.status = BY_IMAGE_STATUS[st];
    if (st == IMAGE_OK && image) {
        if (p->is_train) transform_train(&img, p->image_size, rng, image);
        else transform_eval(&img, p->image_size, image);
    }
    image_free(&img);
    return r;
}

void sample_scratch_free(SampleScratch *s) {
    free(s->bytes);
    free(s->caption);
    memset(s, 0, sizeof(*s));
}
