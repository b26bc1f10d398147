// text_clean.h: open_clip's caption clean-up for SimpleTokenizer(clean='lower'), i.e.
// whitespace_clean(basic_clean(text)).lower(): ftfy.fix_text (ftfy 6.3.1 defaults), html.unescape
// applied twice, strip, runs of whitespace to one space, Python's str.lower(). Works on code points.
// Needs utf8proc (HAVE_UTF8PROC) for Unicode properties and normalisation.
#pragma once
#include <stddef.h>
#include <stdint.h>

// A growable string of Unicode code points.
typedef struct {
    uint32_t *p;
    int n, cap;
} Str32;

// Buffers reused from one call to the next (one per thread; zero-initialise before first use).
typedef struct {
    Str32 s[5];
} CleanScratch;

// Decodes the UTF-8 text[0..len) and cleans it into out. Returns 0, or -1 when text is not valid UTF-8
// as Python's strict decoder sees it (overlong forms, surrogates, > U+10FFFF, truncated sequences) or
// is longer than TEXT_CLEAN_MAX_BYTES: far beyond any real caption, and a bound on the time that
// crafted text can take (ftfy repeats its fixes until nothing changes, so a caption made of nested
// entities, "&amp;amp;amp;...", takes time quadratic in its length). Thread-safe given distinct x, out.
#define TEXT_CLEAN_MAX_BYTES (64 << 10)
int text_clean(const char *text, size_t len, CleanScratch *x, Str32 *out);
void clean_scratch_free(CleanScratch *x);

void str32_reserve(Str32 *s, int n);
// Writes the UTF-8 of code point c (<= U+10FFFF) to out[0..4); returns its length.
int utf8_put(uint32_t c, uint8_t *out);
