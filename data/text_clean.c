// text_clean.c: open_clip's caption clean-up for clean='lower' (see text_clean.h), reproduced on
// code points step by step. Each function names the Python function it mirrors:
//   ftfy.fix_text: per line, repeat until nothing changes: unescape_html, fix_encoding (mojibake
//     repair: re-encode in one of ten single-byte encodings and decode as UTF-8), fix_c1_controls,
//     fix_latin_ligatures, fix_character_width, uncurl_quotes, fix_line_breaks,
//     remove_terminal_escapes, remove_control_chars, NFC.
//   html.unescape (CPython 3.11) twice, str.strip, " ".join(str.split()), str.lower.
// ftfy's fix_surrogates is left out: text decoded from valid UTF-8 holds no surrogates.
// Data (ftfy's encodings, character classes, ligatures, HTML5 entities) is generated into
// text_tables.h by scripts/gen_text_tables.py; Unicode properties and NFC/NFKC come from utf8proc.
#include "text_clean.h"

#include <string.h>
#include <uchar.h>

#include "../model/utils.h"

void str32_reserve(Str32 *s, int n) {
    if (n <= s->cap) return;
    int cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    s->p = reallocCheck(s->p, (size_t)cap * sizeof(uint32_t));
    s->cap = cap;
}

int utf8_put(uint32_t c, uint8_t *out) {
    if (c < 0x80) return out[0] = (uint8_t)c, 1;
    if (c < 0x800) return out[0] = (uint8_t)(0xC0 | c >> 6), out[1] = (uint8_t)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000)
        return out[0] = (uint8_t)(0xE0 | c >> 12), out[1] = (uint8_t)(0x80 | (c >> 6 & 0x3F)),
               out[2] = (uint8_t)(0x80 | (c & 0x3F)), 3;
    out[0] = (uint8_t)(0xF0 | c >> 18), out[1] = (uint8_t)(0x80 | (c >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (c >> 6 & 0x3F)), out[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

void clean_scratch_free(CleanScratch *x) {
    for (int i = 0; i < (int)(sizeof(x->s) / sizeof(x->s[0])); i++) free(x->s[i].p);
    memset(x, 0, sizeof(*x));
}

#ifdef HAVE_UTF8PROC
#include <utf8proc.h>

#include "text_tables.h"

// ---------------------------------------------------------------- strings of code points and bytes
static inline void push(Str32 *s, uint32_t c) {
    if (s->n == s->cap) str32_reserve(s, s->n + 1);
    s->p[s->n++] = c;
}

static void append(Str32 *s, const uint32_t *p, int n) {
    if (n == 0) return;  // p may be NULL then
    str32_reserve(s, s->n + n);
    memcpy(s->p + s->n, p, (size_t)n * sizeof(uint32_t));
    s->n += n;
}

static void copy(Str32 *dst, const Str32 *src) {
    dst->n = 0;
    append(dst, src->p, src->n);
}

static int equal(const Str32 *a, const Str32 *b) {
    return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, (size_t)a->n * sizeof(uint32_t)) == 0);
}

static void swap(Str32 *a, Str32 *b) {
    Str32 t = *a;
    *a = *b;
    *b = t;
}

static int contains(const Str32 *s, uint32_t c) {
    for (int i = 0; i < s->n; i++)
        if (s->p[i] == c) return 1;
    return 0;
}

typedef struct {
    uint8_t *p;
    int n, cap;
} Bytes;

static void bytes_reserve(Bytes *b, int n) {
    if (n <= b->cap) return;
    int cap = b->cap ? b->cap : 256;
    while (cap < n) cap *= 2;
    b->p = reallocCheck(b->p, (size_t)cap);
    b->cap = cap;
}

static inline void bytes_push(Bytes *b, uint8_t c) {
    if (b->n == b->cap) bytes_reserve(b, b->n + 1);
    b->p[b->n++] = c;
}

// Decodes UTF-8 as Python's strict codec does: no overlong forms, surrogates or code points past
// U+10FFFF. variants adds what ftfy's "utf-8-variants" codec accepts: C0 80 is U+0000 and a CESU-8
// surrogate pair (ED A0-AF 80-BF ED B0-BF 80-BF) is one supplementary character. -1 if invalid.
static int decode_utf8(const uint8_t *b, size_t n, int variants, Str32 *out) {
    out->n = 0;
    str32_reserve(out, (int)n);
    for (size_t i = 0; i < n;) {
        uint32_t c = b[i];
        if (c < 0x80) {
            out->p[out->n++] = c, i++;
            continue;
        }
        if (variants && c == 0xC0 && i + 1 < n && b[i + 1] == 0x80) {
            out->p[out->n++] = 0, i += 2;
            continue;
        }
        if (variants && c == 0xED && i + 6 <= n && (b[i + 1] & 0xF0) == 0xA0 && (b[i + 2] & 0xC0) == 0x80 &&
            b[i + 3] == 0xED && (b[i + 4] & 0xF0) == 0xB0 && (b[i + 5] & 0xC0) == 0x80) {
            out->p[out->n++] = 0x10000 + ((b[i + 1] & 0x0Fu) << 16) + ((b[i + 2] & 0x3Fu) << 10) +
                               ((b[i + 4] & 0x0Fu) << 6) + (b[i + 5] & 0x3Fu);
            i += 6;
            continue;
        }
        size_t len;
        uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) len = 2, c &= 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF, c &= 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF, c &= 0x07;
        else return -1;
        if (i + len > n || b[i + 1] < lo || b[i + 1] > hi) return -1;
        for (size_t k = 1; k < len; k++) {
            if ((b[i + k] & 0xC0) != 0x80) return -1;
            c = (c << 6) | (b[i + k] & 0x3F);
        }
        out->p[out->n++] = c;
        i += len;
    }
    return 0;
}

static void append_utf8(Str32 *s, const char *text) {
    Str32 t = {0};
    if (decode_utf8((const uint8_t *)text, strlen(text), 0, &t) < 0) fatal("text_tables.h: invalid UTF-8 \"%s\"", text);
    append(s, t.p, t.n);
    free(t.p);
}

static void encode_utf8(const uint32_t *p, int n, Bytes *out) {
    out->n = 0;
    bytes_reserve(out, 4 * n);
    for (int i = 0; i < n; i++) out->n += utf8_put(p[i], out->p + out->n);
}

// ---------------------------------------------------------------- Unicode properties (utf8proc)
// Python's str.isspace (also what str.split, str.strip and re's \s use): bidi class WS, B or S, or Zs.
static int py_isspace(uint32_t c) {
    if (c < 0x80) return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
    if (c > 0x10FFFF) return 0;
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
    return p->category == UTF8PROC_CATEGORY_ZS || p->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
           p->bidi_class == UTF8PROC_BIDI_CLASS_B || p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

// re's \w on str patterns: letters, numbers, underscore.
static int py_isword(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c > 0x10FFFF) return 0;
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) || (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

static int is_nd(uint32_t c) { return utf8proc_category((utf8proc_int32_t)c) == UTF8PROC_CATEGORY_ND; }

// NFC (NFKC when compat) of p[0..n), appended to out.
static void normalize(const uint32_t *p, int n, int compat, Str32 *out) {
    Bytes b = {0};
    encode_utf8(p, n, &b);
    utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE | (compat ? UTF8PROC_COMPAT : 0);
    int need = n + 8;
    for (;;) {
        str32_reserve(out, out->n + need);
        utf8proc_ssize_t got = utf8proc_decompose(b.p, b.n, (utf8proc_int32_t *)out->p + out->n, need, opt);
        if (got < 0) fatal("utf8proc_decompose failed at %s:%d: %s", __FILE__, __LINE__, utf8proc_errmsg(got));
        if (got <= need) {
            got = utf8proc_normalize_utf32((utf8proc_int32_t *)out->p + out->n, got, opt);
            if (got < 0) fatal("utf8proc_normalize_utf32 failed at %s:%d: %s", __FILE__, __LINE__, utf8proc_errmsg(got));
            out->n += (int)got;
            break;
        }
        need = (int)got;
    }
    free(b.p);
}

// ---------------------------------------------------------------- ftfy's character classes
// TC_* bits of c (text_tables.h). Only the space has a class among ASCII characters.
static uint32_t char_class(uint32_t c) {
    if (c < 0x80) return c == ' ' ? TC_UTF8_CONTINUATION : 0;
    int lo = 0, hi = (int)(sizeof(TEXT_CLASSES) / sizeof(TEXT_CLASSES[0])) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (TEXT_CLASSES[mid].cp == c) return TEXT_CLASSES[mid].mask;
        if (TEXT_CLASSES[mid].cp < c) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

static int in(uint32_t c, const char32_t *set) {
    for (; *set; set++)
        if (*set == c) return 1;
    return 0;
}

static int is_ascii_letter(uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_lower_ascii(uint32_t c) { return c >= 'a' && c <= 'z'; }

// ftfy.badness.is_bad: does BADNESS_RE match anywhere in s[0..n)? Each line below is one alternative
// of the regular expression, in its order.
static int is_bad(const uint32_t *s, int n) {
    enum {
        ACC = TC_LOWER_ACCENTED | TC_UPPER_ACCENTED,
        PUNCT = TC_START_PUNCTUATION | TC_END_PUNCTUATION,
        AFTER_BAD = ACC | TC_BOX | PUNCT | TC_CURRENCY | TC_NUMERIC | TC_LAW,
        ARABIC = TC_COMMON | TC_CURRENCY | TC_BAD | TC_NUMERIC | TC_START_PUNCTUATION,
        CYR_GREEK = TC_C1 | TC_BAD | PUNCT | TC_CURRENCY,
    };
    const uint32_t NONE = 0x110000;  // past the end: no class, no character matches it
    uint32_t *c = mallocCheck((size_t)(n + 7) * sizeof(uint32_t));
    uint32_t *m = mallocCheck((size_t)(n + 7) * sizeof(uint32_t));
    for (int i = 0; i < n + 7; i++) c[i] = i < n ? s[i] : NONE, m[i] = i < n ? char_class(s[i]) : 0;
    int bad = 0;
    for (int i = 0; i < n && !bad; i++) {
        const uint32_t *C = c + i, *M = m + i;
        bad = (M[0] & TC_C1) ||
              ((M[0] & (TC_BAD | AFTER_BAD)) && (M[1] & TC_BAD)) ||
              (is_ascii_letter(C[0]) && (M[1] & (TC_LOWER_COMMON | TC_UPPER_COMMON)) && (M[2] & TC_BAD)) ||
              ((M[0] & TC_BAD) && (M[1] & AFTER_BAD)) ||
              ((M[0] & (TC_LOWER_ACCENTED | TC_LOWER_COMMON | TC_BOX | TC_END_PUNCTUATION | TC_CURRENCY | TC_NUMERIC)) &&
               (M[1] & TC_UPPER_ACCENTED)) ||
              ((M[0] & (TC_BOX | TC_END_PUNCTUATION | TC_CURRENCY | TC_NUMERIC)) && (M[1] & TC_LOWER_ACCENTED)) ||
              ((M[0] & (TC_LOWER_ACCENTED | TC_BOX | TC_END_PUNCTUATION)) && (M[1] & TC_CURRENCY)) ||
              (py_isspace(C[0]) && (M[1] & TC_UPPER_ACCENTED) && (M[2] & TC_CURRENCY)) ||
              ((M[0] & (TC_UPPER_ACCENTED | TC_BOX)) && (M[1] & (TC_NUMERIC | TC_LAW))) ||
              ((M[0] & (ACC | TC_BOX | TC_CURRENCY | TC_END_PUNCTUATION)) && (M[1] & TC_START_PUNCTUATION) && (M[2] & TC_NUMERIC)) ||
              ((M[0] & (ACC | TC_CURRENCY | TC_NUMERIC | TC_BOX | TC_LAW)) && (M[1] & TC_END_PUNCTUATION) &&
               (M[2] & TC_START_PUNCTUATION)) ||
              ((M[0] & (TC_CURRENCY | TC_NUMERIC | TC_BOX)) && (M[1] & TC_START_PUNCTUATION)) ||
              (is_lower_ascii(C[0]) && (M[1] & TC_UPPER_ACCENTED) && (M[2] & (TC_START_PUNCTUATION | TC_CURRENCY))) ||
              ((M[0] & TC_BOX) && (M[1] & TC_KAOMOJI)) ||
              ((M[0] & (ACC | TC_CURRENCY | TC_NUMERIC | PUNCT | TC_LAW)) && (M[1] & TC_BOX)) ||
              ((M[0] & TC_BOX) && (M[1] & TC_END_PUNCTUATION)) ||
              ((M[0] & ACC) && (M[1] & PUNCT) && py_isword(C[2])) ||
              (in(C[0], U"Œœ") && i + 1 < n && !is_ascii_letter(C[1])) ||
              ((M[0] & TC_UPPER_ACCENTED) && C[1] == U'°') ||
              (in(C[0], U"ÂÃÎÐ") && (in(C[1], U"€œŠš¢£Ÿž\u00a0\u00ad®©°·»–—´") || (M[1] & PUNCT))) ||
              (C[0] == U'×' && in(C[1], U"²³")) ||
              (in(C[0], U"ØÙ") && ((M[1] & ARABIC) || in(C[1], U"ŸŠ®°µ»")) && in(C[2], U"ØÙ") &&
               ((M[3] & ARABIC) || in(C[3], U"ŸŠ®°µ»"))) ||
              (C[0] == U'à' && in(C[1], U"²µ¹¼½¾")) ||
              (C[0] == U'√' && in(C[1], U"±∂†≠®™´≤≥¥µø")) ||
              (C[0] == U'≈' && in(C[1], U"°¢")) ||
              (C[0] == U'‚' && C[1] == U'Ä' && in(C[2], U"ìîïòôúùû†°¢π")) ||
              (C[0] == U'‚' && in(C[1], U"âó") && in(C[2], U"àä°ê")) ||
              (C[0] == U'в' && C[1] == U'Ђ') ||
              (in(C[0], U"ВГРС") && ((M[1] & CYR_GREEK) || in(C[1], U"°µ")) && in(C[2], U"ВГРС")) ||
              (C[0] == U'Г' && C[1] == U'ў' && C[2] == U'В' && C[3] == U'Ђ' && C[4] == U'В' && C[5] != '\n' &&
               (is_ascii_letter(C[6]) || C[6] == ' ')) ||
              (C[0] == U'Ã' && in(C[1], U"\u00a0¡")) ||
              (is_lower_ascii(C[0]) && ((in(C[1], U"ÃÂ") && C[2] == ' ') || (py_isspace(C[1]) && in(C[2], U"ÃÂ") && C[3] == ' '))) ||
              (i == 0 && in(C[0], U"ÃÂ") && C[1] == ' ') ||
              ((is_lower_ascii(C[0]) || in(C[0], U".,?!") || (M[0] & TC_END_PUNCTUATION)) && C[1] == U'Â' &&
               (C[2] == ' ' || (M[2] & PUNCT))) ||
              (C[0] == U'β' && C[1] == U'€' && in(C[2], U"™\u00a0Ά\u00ad®°")) ||
              (in(C[0], U"ΒΓΞΟ") && ((M[1] & CYR_GREEK) || C[1] == U'°') && in(C[2], U"ΒΓΞΟ")) ||
              (C[0] == U'ā' && C[1] == U'€');
    }
    free(c);
    free(m);
    return bad;
}

// ---------------------------------------------------------------- ftfy.fix_encoding
static const Charmap *charmap(const char *name) {
    for (int i = 0; i < N_CHARMAPS; i++)
        if (strcmp(CHARMAPS[i].name, name) == 0) return &CHARMAPS[i];
    fatal("text_tables.h: no charmap %s", name);
}

// text.encode(charmap); 0 if a character has no byte there (ftfy's possible_encoding is false).
static int charmap_encode(const Charmap *m, const Str32 *s, Bytes *out) {
    out->n = 0;
    bytes_reserve(out, s->n);
    for (int i = 0; i < s->n; i++) {
        uint32_t c = s->p[i];
        int b = -1;
        if (c < 0x80 && c != 0x1A) b = (int)c;
        else if (c == (m->sloppy ? 0xFFFD : 0x1A)) b = 0x1A;
        else
            for (int k = 0; k < 128 && b < 0; k++)
                if (m->high[k] == c) b = 0x80 + k;
        if (b < 0) return 0;
        out->p[out->n++] = (uint8_t)b;
    }
    return 1;
}

static int byte_at(const Bytes *b, int i) { return i < b->n ? b->p[i] : -1; }
static int is_cont(int x) { return x >= 0x80 && x <= 0xBF; }

// Length of a match of ftfy's ALTERED_UTF8_RE at b[i] (UTF-8 whose 0xA0 byte became a space), or 0.
static int altered_utf8_at(const Bytes *b, int i) {
    int b0 = byte_at(b, i), b1 = byte_at(b, i + 1), b2 = byte_at(b, i + 2), b3 = byte_at(b, i + 3);
#define CONT_NOT_85_A0(x) (is_cont(x) && (x) != 0x85 && (x) != 0xA0)
    if ((b0 == 0xC2 || b0 == 0xC3 || b0 == 0xC5 || b0 == 0xCE || b0 == 0xD0 || b0 == 0xD9) && b1 == ' ') return 2;
    if ((b0 == 0xE2 || b0 == 0xE3) && b1 == ' ' && CONT_NOT_85_A0(b2)) return 3;
    if (b0 >= 0xE0 && b0 <= 0xE3 && CONT_NOT_85_A0(b1) && b2 == ' ') return 3;
    if (b0 == 0xF0 && b1 == ' ' && is_cont(b2) && is_cont(b3)) return 4;
    if (b0 == 0xF0 && is_cont(b1) && b2 == ' ' && is_cont(b3)) return 4;
    if (b0 == 0xF0 && is_cont(b1) && is_cont(b2) && b3 == ' ') return 4;
#undef CONT_NOT_85_A0
    return 0;
}

// ftfy.fixes.restore_byte_a0: "Ã " as a word becomes "à " (A_GRAVE_WORD_RE), then each
// ALTERED_UTF8_RE match gets its spaces turned back into 0xA0.
static void restore_byte_a0(Bytes *b) {
    static const char *keep[] = {" ", "quele", "quela", "quilo", "s "};  // the regex's negative lookahead
    Bytes t = {0};
    for (int i = 0; i < b->n; i++) {
        bytes_push(&t, b->p[i]);
        if (b->p[i] != 0xC3 || byte_at(b, i + 1) != ' ') continue;
        int kept = 0;
        for (int k = 0; k < 5; k++) {
            int len = (int)strlen(keep[k]);
            kept |= i + 2 + len <= b->n && memcmp(b->p + i + 2, keep[k], (size_t)len) == 0;
        }
        if (!kept) bytes_push(&t, 0xA0), bytes_push(&t, ' '), i++;
    }
    b->n = 0;
    for (int i = 0; i < t.n;) {
        int len = altered_utf8_at(&t, i);
        if (!len) len = 1;
        for (int k = 0; k < len; k++) bytes_push(b, len > 1 && t.p[i + k] == ' ' ? 0xA0 : t.p[i + k]);
        i += len;
    }
    free(t.p);
}

// Length of a match of ftfy's LOSSY_UTF8_RE at b[i] (a UTF-8 sequence with bytes lost to 0x1A, the
// byte a sloppy codec gives U+FFFD, or to '?'), or 0.
static int lossy_utf8_at(const Bytes *b, int i) {
    int x[6];
    for (int k = 0; k < 6; k++) x[k] = byte_at(b, i + k);
#define Q(v) ((v) == 0x1A || (v) == '?')
#define SC(v) ((v) == 0x1A || is_cont(v))
#define QC(v) (Q(v) || is_cont(v))
    if (x[0] >= 0xC2 && x[0] <= 0xDF && x[1] == 0x1A) return 2;
    if ((x[0] == 0xC2 || x[0] == 0xC3) && x[1] == '?') return 2;
    if (x[0] == 0xED && x[1] >= 0xA0 && x[1] <= 0xAF && x[3] == 0xED && x[4] >= 0xB0 && x[4] <= 0xBF &&
        ((Q(x[2]) && QC(x[5])) || (QC(x[2]) && Q(x[5]))))
        return 6;
    if (x[0] >= 0xE0 && x[0] <= 0xEF && ((Q(x[1]) && SC(x[2])) || (SC(x[1]) && Q(x[2])))) return 3;
    if (x[0] >= 0xF0 && x[0] <= 0xF4 && SC(x[1]) && SC(x[2]) && SC(x[3]) && (Q(x[1]) || Q(x[2]) || Q(x[3]))) return 4;
    if (x[0] == 0x1A) return 1;
#undef Q
#undef SC
#undef QC
    return 0;
}

// ftfy.fixes.replace_lossy_sequences: each LOSSY_UTF8_RE match becomes the UTF-8 of U+FFFD.
static void replace_lossy_sequences(Bytes *b) {
    Bytes t = {0};
    for (int i = 0; i < b->n;) {
        int len = lossy_utf8_at(b, i);
        if (len) bytes_push(&t, 0xEF), bytes_push(&t, 0xBF), bytes_push(&t, 0xBD), i += len;
        else bytes_push(&t, b->p[i++]);
    }
    free(b->p);
    *b = t;
}

// ftfy.fixes.fix_c1_controls: U+0080-U+009F read as sloppy windows-1252.
static int fix_c1_controls(const Str32 *s, Str32 *out) {
    int i = 0;
    while (i < s->n && !(s->p[i] >= 0x80 && s->p[i] <= 0x9F)) i++;
    if (i == s->n) return 0;
    const Charmap *w = charmap("sloppy-windows-1252");
    out->n = 0;
    for (i = 0; i < s->n; i++) push(out, s->p[i] >= 0x80 && s->p[i] <= 0x9F ? w->high[s->p[i] - 0x80] : s->p[i]);
    return 1;
}

static int continuations(const Str32 *s, int i, int k) {
    for (; k > 0; k--, i++)
        if (i >= s->n || !(char_class(s->p[i]) & TC_UTF8_CONTINUATION)) return 0;
    return 1;
}

// End of a UTF8_DETECTOR_RE match starting at s[i] (runs of what looks like UTF-8 read as a single-byte
// encoding), or i when there is none. The caller checks the regex's look-behind.
static int utf8_run_end(const Str32 *s, int i) {
    for (;;) {
        uint32_t m = i < s->n ? char_class(s->p[i]) : 0;
        int len = (m & TC_UTF8_FIRST_OF_2) && continuations(s, i + 1, 1)   ? 2
                  : (m & TC_UTF8_FIRST_OF_3) && continuations(s, i + 1, 2) ? 3
                  : (m & TC_UTF8_FIRST_OF_4) && continuations(s, i + 1, 3) ? 4
                                                                           : 0;
        if (!len) return i;
        i += len;
    }
}

static void fix_encoding(Str32 *s);

// ftfy.fixes.decode_inconsistent_utf8: each detected run shorter than the text that looks bad is
// fixed on its own with fix_encoding.
static void decode_inconsistent_utf8(const Str32 *s, Str32 *out) {
    out->n = 0;
    for (int i = 0; i < s->n;) {
        int end = i == 0 || !(char_class(s->p[i - 1]) & TC_UTF8_CONTINUATION_STRICT) ? utf8_run_end(s, i) : i;
        if (end == i) {
            push(out, s->p[i++]);
            continue;
        }
        Str32 run = {0};
        append(&run, s->p + i, end - i);
        if (run.n < s->n && is_bad(run.p, run.n)) fix_encoding(&run);
        append(out, run.p, run.n);
        free(run.p);
        i = end;
    }
}

// ftfy's _fix_encoding_one_step_and_explain. Returns 1 with the result in out, or 0 if it leaves s as
// it is without writing out.
static int fix_encoding_step(const Str32 *s, Str32 *out) {
    int ascii = 1;
    for (int i = 0; i < s->n && ascii; i++) ascii = s->p[i] < 0x80;
    if (ascii || !is_bad(s->p, s->n)) return 0;
    // UTF-8 that was decoded as a single-byte encoding: encode it back and decode it as UTF-8.
    Bytes b = {0};
    int fixed = 0;
    for (int e = 0; e < N_CHARMAPS && !fixed; e++) {
        const Charmap *m = &CHARMAPS[e];
        if (!charmap_encode(m, s, &b)) continue;
        int altered = 0;
        for (int i = 0; i < b.n && !altered; i++) altered = altered_utf8_at(&b, i) > 0;
        if (altered && strcmp(m->name, "macroman") != 0) restore_byte_a0(&b);
        if (m->sloppy) replace_lossy_sequences(&b);
        int variants = b.n && (memchr(b.p, 0xED, (size_t)b.n) || memchr(b.p, 0xC0, (size_t)b.n));
        fixed = decode_utf8(b.p, (size_t)b.n, variants, out) == 0;
    }
    free(b.p);
    if (fixed) return 1;
    decode_inconsistent_utf8(s, out);
    if (!equal(s, out)) return 1;
    // What is left of ftfy's step comes to fix_c1_controls: its Latin-1 branch re-decodes as strict
    // windows-1252, which for a text it changes gives the same as the sloppy table (ftfy's check for
    // "windows-1252" among the possible encodings never holds: the list names the sloppy codec).
    return fix_c1_controls(s, out);
}

// ftfy.fix_encoding: one step at a time until the text stops changing.
static void fix_encoding(Str32 *s) {
    Str32 next = {0};
    while (fix_encoding_step(s, &next) && !equal(s, &next)) swap(s, &next);
    free(next.p);
}

// ---------------------------------------------------------------- html entities
static int is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static int is_hex(uint32_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static int is_alnum(uint32_t c) { return is_digit(c) || is_ascii_letter(c); }

// The replacement text of an entity name (with its ';' if it has one), or NULL.
static const char *entity_lookup(const char *name, int ftfy_upper) {
    int lo = 0, hi = (int)(sizeof(HTML5_ENTITIES) / sizeof(HTML5_ENTITIES[0])) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, cmp = strcmp(HTML5_ENTITIES[mid].name, name);
        if (cmp == 0) return HTML5_ENTITIES[mid].text;
        if (cmp < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    if (!ftfy_upper) return NULL;
    lo = 0, hi = (int)(sizeof(FTFY_UPPER_ENTITIES) / sizeof(FTFY_UPPER_ENTITIES[0])) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, cmp = strcmp(FTFY_UPPER_ENTITIES[mid].name, name);
        if (cmp == 0) return FTFY_UPPER_ENTITIES[mid].text;
        if (cmp < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

// A character reference's number as html.unescape replaces it (HTML5's rules for bad numbers).
static void append_charref(Str32 *out, uint32_t num) {
    if (num == 0) push(out, 0xFFFD);
    else if (num == 0x0D) push(out, 0x0D);
    else if (num >= 0x80 && num <= 0x9F) push(out, charmap("sloppy-windows-1252")->high[num - 0x80]);
    else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) push(out, 0xFFFD);
    else if ((num >= 0x01 && num <= 0x08) || num == 0x0B || (num >= 0x0E && num <= 0x1F) || num == 0x7F ||
             (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
        return;  // html's _invalid_codepoints are dropped
    else push(out, num);
}

// Python's html.unescape: the regex &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?), names
// from the full HTML5 table, and for a name not in it the longest prefix that is (legacy names
// such as "&copy" need no ';'). Returns 0 without writing out when s has no '&'.
static int html_unescape(const Str32 *s, Str32 *out) {
    if (!contains(s, '&')) return 0;
    out->n = 0;
    for (int i = 0; i < s->n;) {
        if (s->p[i] != '&') {
            push(out, s->p[i++]);
            continue;
        }
        int j = i + 1, n = s->n;
        if (j < n && s->p[j] == '#') {
            int k = j + 1, base = 10;
            if (k + 1 < n && (s->p[k] == 'x' || s->p[k] == 'X') && is_hex(s->p[k + 1])) base = 16, k++;
            else if (!(k < n && is_digit(s->p[k]))) {
                push(out, s->p[i++]);  // no reference here
                continue;
            }
            uint32_t num = 0;  // saturates past U+10FFFF, where every value gives U+FFFD
            for (; k < n && (base == 16 ? is_hex(s->p[k]) : is_digit(s->p[k])); k++) {
                uint32_t d = is_digit(s->p[k]) ? s->p[k] - '0' : (s->p[k] | 0x20) - 'a' + 10;
                num = num > 0x10FFFF ? num : num * base + d;
            }
            if (k < n && s->p[k] == ';') k++;
            append_charref(out, num);
            i = k;
            continue;
        }
        int k = j;
        while (k < n && k - j < 32 && !in(s->p[k], U"\t\n\f <&#;")) k++;
        if (k == j) {
            push(out, s->p[i++]);
            continue;
        }
        int end = k < n && s->p[k] == ';' ? k + 1 : k, x = end - j;
        char name[34];  // entity names are ASCII: other characters become \x01, which matches none
        for (int q = j; q < end; q++) name[q - j] = s->p[q] < 0x80 ? (char)s->p[q] : '\x01';
        name[x] = '\0';
        const char *text = entity_lookup(name, 0);
        while (!text && --x >= 2) name[x] = '\0', text = entity_lookup(name, 0);
        if (text) {
            append_utf8(out, text);
            append(out, s->p + j + x, end - j - x);
        } else {
            append(out, s->p + i, end - i);
        }
        i = end;
    }
    return 1;
}

// ftfy.fixes.unescape_html: &#?[0-9A-Za-z]{1,24}; replaced when it is an HTML5 name ending in ';', one
// of ftfy's upper-case names, or a numeric reference html.unescape decodes with its ';' consumed.
static int ftfy_unescape_html(const Str32 *s, Str32 *out) {
    if (!contains(s, '&')) return 0;
    out->n = 0;
    Str32 ref = {0}, dec = {0};
    for (int i = 0; i < s->n;) {
        int j = i + 1, k;
        if (s->p[i] == '&' && j < s->n && s->p[j] == '#') j++;
        for (k = j; s->p[i] == '&' && k < s->n && k - j < 25 && is_alnum(s->p[k]); k++) {}
        if (k == j || k - j > 24 || k >= s->n || s->p[k] != ';') {
            push(out, s->p[i++]);
            continue;
        }
        int end = k + 1;
        if (s->p[i + 1] == '#') {
            ref.n = 0;
            append(&ref, s->p + i, end - i);
            html_unescape(&ref, &dec);
            if (contains(&dec, ';')) append(out, ref.p, ref.n);
            else append(out, dec.p, dec.n);
        } else {
            char name[27];
            for (int q = i + 1; q < end; q++) name[q - i - 1] = (char)s->p[q];
            name[end - i - 1] = '\0';
            const char *text = entity_lookup(name, 1);
            if (text) append_utf8(out, text);
            else append(out, s->p + i, end - i);
        }
        i = end;
    }
    free(ref.p);
    free(dec.p);
    return 1;
}

// ---------------------------------------------------------------- the other ftfy fixers
static const char *ligature(uint32_t c) {
    for (int k = 0; k < (int)(sizeof(LIGATURES) / sizeof(LIGATURES[0])) && c >= LIGATURES[0].cp; k++)
        if (LIGATURES[k].cp == c) return LIGATURES[k].text;
    return NULL;
}

// ftfy.fixes.fix_latin_ligatures.
static int fix_latin_ligatures(const Str32 *s, Str32 *out) {
    int changed = 0;
    out->n = 0;
    for (int i = 0; i < s->n; i++) {
        const char *text = ligature(s->p[i]);
        if (text) append_utf8(out, text), changed = 1;
        else push(out, s->p[i]);
    }
    return changed;
}

// ftfy.fixes.fix_character_width: U+3000 to a space, U+FF01-U+FFEF to their NFKC forms.
static int fix_character_width(const Str32 *s, Str32 *out) {
    int changed = 0;
    out->n = 0;
    for (int i = 0; i < s->n; i++) {
        uint32_t c = s->p[i];
        if (c == 0x3000) push(out, ' '), changed = 1;
        else if (c >= 0xFF01 && c <= 0xFFEF) {
            int at = out->n;
            normalize(&c, 1, 1, out);
            changed |= out->n != at + 1 || out->p[at] != c;
        } else push(out, c);
    }
    return changed;
}

// ftfy.fixes.uncurl_quotes.
static int uncurl_quotes(const Str32 *s, Str32 *out) {
    int changed = 0;
    out->n = 0;
    for (int i = 0; i < s->n; i++) {
        uint32_t c = s->p[i];
        if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'', changed = 1;
        else if (c >= 0x201C && c <= 0x201F) c = '"', changed = 1;
        push(out, c);
    }
    return changed;
}

// ftfy.fixes.fix_line_breaks: CRLF, CR, U+2028, U+2029 and U+0085 to "\n".
static int fix_line_breaks(const Str32 *s, Str32 *out) {
    int changed = 0;
    out->n = 0;
    for (int i = 0; i < s->n; i++) {
        uint32_t c = s->p[i];
        if (c == '\r' && i + 1 < s->n && s->p[i + 1] == '\n') i++;
        if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n', changed = 1;
        push(out, c);
    }
    return changed;
}

// ftfy.fixes.remove_terminal_escapes: ESC [ (digits or ;)* letter.
static int remove_terminal_escapes(const Str32 *s, Str32 *out) {
    int changed = 0;
    out->n = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->p[i] == 0x1B && i + 1 < s->n && s->p[i + 1] == '[') {
            int k = i + 2;
            while (k < s->n && (s->p[k] == ';' || is_nd(s->p[k]))) k++;
            if (k < s->n && is_ascii_letter(s->p[k])) {
                i = k, changed = 1;
                continue;
            }
        }
        push(out, s->p[i]);
    }
    return changed;
}

// ftfy.fixes.remove_control_chars.
static int remove_control_chars(const Str32 *s, Str32 *out) {
    int changed = 0;
    out->n = 0;
    for (int i = 0; i < s->n; i++) {
        uint32_t c = s->p[i];
        if (c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
            c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC))
            changed = 1;
        else push(out, c);
    }
    return changed;
}

// unicodedata.normalize("NFC"). Nothing below U+0300 composes or decomposes, which skips most text.
static int nfc(const Str32 *s, Str32 *out) {
    int i = 0;
    while (i < s->n && s->p[i] < 0x300) i++;
    if (i == s->n) return 0;
    out->n = 0;
    normalize(s->p, s->n, 0, out);
    return 1;
}

// ---------------------------------------------------------------- ftfy.fix_text
typedef int (*Fixer)(const Str32 *in, Str32 *out);

// ftfy.fix_and_explain on one segment: the fixers in ftfy's order until a round changes nothing.
static void fix_segment(Str32 *s, Str32 *tmp, Str32 *orig, int unescape) {
    static const Fixer after_encoding[] = {fix_c1_controls, fix_latin_ligatures,     fix_character_width,
                                           uncurl_quotes,   fix_line_breaks,         remove_terminal_escapes,
                                           remove_control_chars, nfc};
    do {
        copy(orig, s);
        if (unescape && ftfy_unescape_html(s, tmp)) swap(s, tmp);
        fix_encoding(s);
        for (int k = 0; k < (int)(sizeof(after_encoding) / sizeof(after_encoding[0])); k++)
            if (after_encoding[k](s, tmp)) swap(s, tmp);
    } while (!equal(s, orig));
}

// ftfy.fix_text: each line (with its '\n') is fixed on its own; HTML unescaping stops for good at the
// first segment that holds a '<' (it looks like HTML). (ftfy also cuts lines longer than 1,000,000
// characters, which TEXT_CLEAN_MAX_BYTES rules out.)
static void ftfy_fix_text(const Str32 *in, Str32 *out, Str32 *seg, Str32 *tmp, Str32 *orig) {
    out->n = 0;
    int unescape = 1;
    for (int pos = 0, end; pos < in->n; pos = end) {
        for (end = pos; end < in->n && in->p[end] != '\n';) end++;
        if (end < in->n) end++;
        seg->n = 0;
        append(seg, in->p + pos, end - pos);
        if (unescape && contains(seg, '<')) unescape = 0;
        fix_segment(seg, tmp, orig, unescape);
        append(out, seg->p, seg->n);
    }
}

// ---------------------------------------------------------------- strip, whitespace, lower
// CPython's Cased / Case_Ignorable property of c (CASED, CASE_IGNORABLE or 0), from text_tables.h.
static int case_kind(uint32_t c) {
    int lo = 0, hi = (int)(sizeof(CASE_RANGES) / sizeof(CASE_RANGES[0])) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c < CASE_RANGES[mid].lo) hi = mid - 1;
        else if (c > CASE_RANGES[mid].hi) lo = mid + 1;
        else return CASE_RANGES[mid].kind;
    }
    return 0;
}

// Python's str.lower of s[i]: the simple lower-case mapping, except U+0130 (two characters) and a
// capital sigma at the end of a word (Unicode's Final_Sigma context), which becomes U+03C2.
static void append_lower(const Str32 *s, int i, Str32 *out) {
    uint32_t c = s->p[i];
    if (c < 0x80) {
        push(out, c >= 'A' && c <= 'Z' ? c + 32 : c);
    } else if (c == 0x130) {
        push(out, 'i'), push(out, 0x307);
    } else if (c == 0x3A3) {
        int j = i - 1, k = i + 1;
        while (j >= 0 && case_kind(s->p[j]) == CASE_IGNORABLE) j--;
        while (k < s->n && case_kind(s->p[k]) == CASE_IGNORABLE) k++;
        push(out, j >= 0 && case_kind(s->p[j]) == CASED && (k == s->n || case_kind(s->p[k]) != CASED) ? 0x3C2 : 0x3C3);
    } else {
        push(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)c));
    }
}

int text_clean(const char *text, size_t len, CleanScratch *x, Str32 *out) {
    Str32 *a = &x->s[0], *b = &x->s[1];
    if (len > TEXT_CLEAN_MAX_BYTES || decode_utf8((const uint8_t *)text, len, 0, a) < 0) return -1;
    ftfy_fix_text(a, b, &x->s[2], &x->s[3], &x->s[4]);
    for (int k = 0; k < 2; k++)
        if (html_unescape(b, a)) swap(a, b);
    // strip + " ".join(split()) + lower(): lower-casing never makes or removes whitespace, so one pass
    out->n = 0;
    int space = 0;
    for (int i = 0; i < b->n; i++) {
        if (py_isspace(b->p[i])) {
            space = out->n > 0;
            continue;
        }
        if (space) push(out, ' '), space = 0;
        append_lower(b, i, out);
    }
    return 0;
}

#else
int text_clean(const char *text, size_t len, CleanScratch *x, Str32 *out) {
    fatal("text_clean: train_clip was built without utf8proc (Debian: apt-get install libutf8proc-dev)");
}
#endif
