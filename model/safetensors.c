// safetensors.c: .safetensors reader (the file mapped into memory, a small JSON parser for the header) and
// atomic writer. Format: u64 little-endian header length N, N bytes of JSON, then the tensor data.
#include "safetensors.h"

#include <ctype.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utils.h"

// ---------------------------------------------------------------- JSON header parsing

typedef struct {
    const char *begin, *p, *end;
    char *err;
    size_t errlen;
    const char *path;
} Json;

static int jfail(Json *j, const char *what) {
    snprintf(j->err, j->errlen, "%s: bad safetensors header: %s at byte %ld", j->path, what, (long)(j->p - j->begin));
    return -1;
}

static void jspace(Json *j) {
    while (j->p < j->end && isspace((unsigned char)*j->p)) j->p++;
}

// 1 (and c consumed) when c comes next: a list's separator, or the end of an empty one.
static int jaccept(Json *j, char c) {
    jspace(j);
    if (j->p >= j->end || *j->p != c) return 0;
    j->p++;
    return 1;
}

static int jexpect(Json *j, char c) {
    if (jaccept(j, c)) return 0;
    char what[32];
    snprintf(what, sizeof(what), "expected '%c'", c);
    return jfail(j, what);
}

static void put_utf8(char **o, unsigned cp) {
    if (cp < 0x80) *(*o)++ = (char)cp;
    else if (cp < 0x800) *(*o)++ = (char)(0xC0 | cp >> 6), *(*o)++ = (char)(0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
        *(*o)++ = (char)(0xE0 | cp >> 12), *(*o)++ = (char)(0x80 | ((cp >> 6) & 0x3F)), *(*o)++ = (char)(0x80 | (cp & 0x3F));
    else
        *(*o)++ = (char)(0xF0 | cp >> 18), *(*o)++ = (char)(0x80 | ((cp >> 12) & 0x3F)),
        *(*o)++ = (char)(0x80 | ((cp >> 6) & 0x3F)), *(*o)++ = (char)(0x80 | (cp & 0x3F));
}

static int hex4(const char *s, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int c = s[i], d = isdigit(c) ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v * 16 + (unsigned)d;
    }
    return 0;
}

// Parse a JSON string into a new heap buffer (*out).
static int jstring(Json *j, char **out) {
    jspace(j);
    if (j->p >= j->end || *j->p != '"') return jfail(j, "expected a string");
    j->p++;
    char *buf = mallocCheck((size_t)(j->end - j->p) + 1), *o = buf;
    while (j->p < j->end && *j->p != '"') {
        char c = *j->p++;
        if (c != '\\') {
            *o++ = c;
            continue;
        }
        if (j->p >= j->end) break;
        c = *j->p++;
        switch (c) {
            case 'n': *o++ = '\n'; break;
            case 't': *o++ = '\t'; break;
            case 'r': *o++ = '\r'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'u': {
                unsigned cp, lo;
                if (j->end - j->p < 4 || hex4(j->p, &cp)) return free(buf), jfail(j, "bad \\u escape");
                j->p += 4;
                if (cp == 0) return free(buf), jfail(j, "\\u0000 (NUL) in a string");
                if (cp >= 0xD800 && cp < 0xDC00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
                    !hex4(j->p + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    j->p += 6;
                }
                put_utf8(&o, cp);
                break;
            }
            default: *o++ = c;  // \" \\ \/
        }
    }
    if (j->p >= j->end) return free(buf), jfail(j, "unterminated string");
    j->p++;
    *o = '\0';
    *out = buf;
    return 0;
}

static int jint(Json *j, int64_t *v) {
    jspace(j);
    char *e;
    errno = 0;
    long long x = strtoll(j->p, &e, 10);
    if (e == j->p || e > j->end) return jfail(j, "expected an integer");
    if (errno == ERANGE) return jfail(j, "integer out of range");
    j->p = e;
    *v = x;
    return 0;
}

// [int, int, ...] into v (at most cap values); *n receives the count.
static int jint_array(Json *j, int64_t *v, int cap, int *n) {
    if (jexpect(j, '[')) return -1;
    *n = 0;
    if (jaccept(j, ']')) return 0;
    for (;;) {
        if (*n == cap) return jfail(j, "array too long");
        if (jint(j, &v[(*n)++])) return -1;
        if (jaccept(j, ',')) continue;
        return jexpect(j, ']');
    }
}

static int parse_tensor(Json *j, StTensor *t) {
    if (jexpect(j, '{')) return -1;
    int have = 0;
    for (;;) {
        char *key;
        if (jstring(j, &key)) return -1;
        if (jexpect(j, ':')) return free(key), -1;
        if (!strcmp(key, "dtype")) {
            char *d;
            if (jstring(j, &d)) return free(key), -1;
            snprintf(t->dtype, sizeof(t->dtype), "%s", d);
            free(d);
            have |= 1;
        } else if (!strcmp(key, "shape")) {
            if (jint_array(j, t->shape, 8, &t->ndim)) return free(key), -1;
            have |= 2;
        } else if (!strcmp(key, "data_offsets")) {
            int64_t off[2];
            int n;
            if (jint_array(j, off, 2, &n)) return free(key), -1;
            if (n != 2 || off[0] < 0 || off[1] < off[0]) return free(key), jfail(j, "bad data_offsets");
            t->begin = (size_t)off[0], t->end = (size_t)off[1];
            have |= 4;
        } else {
            free(key);
            return jfail(j, "unknown tensor field");
        }
        free(key);
        if (jaccept(j, ',')) continue;
        if (jexpect(j, '}')) return -1;
        break;
    }
    if (have != 7) return jfail(j, "tensor entry lacks dtype, shape or data_offsets");
    t->numel = 1;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] < 0 || __builtin_mul_overflow(t->numel, (size_t)t->shape[i], &t->numel)) return jfail(j, "shape has a negative or too large dimension");
    return 0;
}

static int parse_metadata(Json *j, StFile *f) {
    if (jexpect(j, '{')) return -1;
    if (jaccept(j, '}')) return 0;
    for (;;) {
        char *k, *v;
        if (jstring(j, &k)) return -1;
        if (jexpect(j, ':')) return free(k), -1;
        if (jstring(j, &v)) return free(k), -1;
        f->meta_keys = reallocCheck(f->meta_keys, (size_t)(f->num_meta + 1) * sizeof(char *));
        f->meta_values = reallocCheck(f->meta_values, (size_t)(f->num_meta + 1) * sizeof(char *));
        f->meta_keys[f->num_meta] = k, f->meta_values[f->num_meta++] = v;
        if (jaccept(j, ',')) continue;
        return jexpect(j, '}');
    }
}

static int parse_header(Json *j, StFile *f) {
    if (jexpect(j, '{')) return -1;
    if (jaccept(j, '}')) return 0;
    for (int have_meta = 0;;) {
        char *name;
        if (jstring(j, &name)) return -1;
        if (jexpect(j, ':')) return free(name), -1;
        if (!strcmp(name, "__metadata__")) {
            free(name);
            if (have_meta++) return jfail(j, "duplicate __metadata__");
            if (parse_metadata(j, f)) return -1;
        } else {
            f->tensors = reallocCheck(f->tensors, (size_t)(f->num_tensors + 1) * sizeof(StTensor));
            StTensor *t = &f->tensors[f->num_tensors++];
            memset(t, 0, sizeof(*t));
            if (strlen(name) >= sizeof(t->name)) return free(name), jfail(j, "tensor name too long");
            strcpy(t->name, name);
            free(name);
            if (parse_tensor(j, t)) return -1;
        }
        if (jaccept(j, ',')) continue;
        return jexpect(j, '}');
    }
}

static int by_name(const void *a, const void *b) { return strcmp((*(const StTensor *const *)a)->name, (*(const StTensor *const *)b)->name); }
static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }
static int by_offsets(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return x->begin != y->begin ? (x->begin < y->begin ? -1 : 1) : x->end != y->end ? (x->end < y->end ? -1 : 1) : 0;
}

// Names and metadata keys unique, data ranges disjoint (sorted, so that a ViT-H header of ~900 tensors, or a
// hostile one of millions, is not quadratic). Returns 0, or -1 with the reason in err.
static int check_unique(StFile *f, char *err, size_t errlen) {
    int rc = 0;
    const StTensor **t = mallocCheck((size_t)f->num_tensors * sizeof(*t));
    for (int i = 0; i < f->num_tensors; i++) t[i] = &f->tensors[i];
    qsort(t, (size_t)f->num_tensors, sizeof(*t), by_name);
    for (int i = 1; i < f->num_tensors && !rc; i++)
        if (!strcmp(t[i - 1]->name, t[i]->name)) rc = -1, snprintf(err, errlen, "%s: tensor %s appears twice in the header (duplicate name)", f->path, t[i]->name);
    qsort(t, (size_t)f->num_tensors, sizeof(*t), by_offsets);
    for (int i = 1; i < f->num_tensors && !rc; i++)
        if (t[i]->begin < t[i - 1]->end)
            rc = -1, snprintf(err, errlen, "%s: tensors %s [%zu, %zu) and %s [%zu, %zu) overlap in the data section", f->path, t[i - 1]->name,
                              t[i - 1]->begin, t[i - 1]->end, t[i]->name, t[i]->begin, t[i]->end);
    free(t);
    char **k = mallocCheck((size_t)f->num_meta * sizeof(*k));
    for (int i = 0; i < f->num_meta; i++) k[i] = f->meta_keys[i];
    qsort(k, (size_t)f->num_meta, sizeof(*k), by_string);
    for (int i = 1; i < f->num_meta && !rc; i++)
        if (!strcmp(k[i - 1], k[i])) rc = -1, snprintf(err, errlen, "%s: __metadata__ key %s appears twice in the header (duplicate)", f->path, k[i]);
    free(k);
    return rc;
}

static size_t dtype_size(const char *d) {
    if (!strcmp(d, "F64") || !strcmp(d, "I64") || !strcmp(d, "U64")) return 8;
    if (!strcmp(d, "F32") || !strcmp(d, "I32") || !strcmp(d, "U32")) return 4;
    if (!strcmp(d, "BF16") || !strcmp(d, "F16") || !strcmp(d, "I16") || !strcmp(d, "U16")) return 2;
    if (!strcmp(d, "I8") || !strcmp(d, "U8") || !strcmp(d, "BOOL")) return 1;
    return 0;
}

int st_load(StFile *f, const char *path, char *err, size_t errlen) {
    memset(f, 0, sizeof(*f));
    snprintf(f->path, sizeof(f->path), "%s", path);
    // O_NONBLOCK: a FIFO given as a checkpoint is refused below instead of blocking the open (no effect on files)
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno)), -1;
    uint8_t lenbuf[8];
    struct stat st;
    ssize_t got;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return snprintf(err, errlen, "%s: not a regular file", path), -1;
    }
    if ((got = pread(fd, lenbuf, 8, 0)) != 8) {
        snprintf(err, errlen, "%s: %s", path, got < 0 ? strerror(errno) : "too short to be a safetensors file");
        close(fd);
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenbuf[i];
    if (hlen > (uint64_t)st.st_size - 8 || hlen > (100u << 20)) {
        close(fd);
        return snprintf(err, errlen, "%s: header length %llu does not fit the file (%lld bytes): truncated or not safetensors", path,
                        (unsigned long long)hlen, (long long)st.st_size), -1;
    }
    // Mapped, not read into a buffer: ranks of one machine resuming from the same checkpoint share its pages, and
    // no copy of a ViT-H state file (8 GB) is made per rank. Files are replaced by rename, never rewritten in place.
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) return snprintf(err, errlen, "%s: cannot map: %s", path, strerror(map_errno)), -1;
    f->map = map, f->map_bytes = (size_t)st.st_size;
    f->data = (const uint8_t *)map + 8 + hlen;
    f->data_bytes = (size_t)st.st_size - 8 - hlen;
    char *header = mallocCheck(hlen + 1);  // NUL-terminated for the parser's strtoll
    memcpy(header, (const uint8_t *)map + 8, hlen);
    header[hlen] = '\0';
    Json j = {header, header, header + hlen, err, errlen, path};
    int rc = parse_header(&j, f);
    if (rc == 0 && (jspace(&j), j.p != j.end)) rc = jfail(&j, "unexpected text after the header");
    free(header);
    for (int i = 0; i < f->num_tensors && rc == 0; i++) {
        const StTensor *t = &f->tensors[i];
        size_t es = dtype_size(t->dtype);
        size_t bytes;
        if (t->end > f->data_bytes || (es && (__builtin_mul_overflow(t->numel, es, &bytes) || t->end - t->begin != bytes))) {
            snprintf(err, errlen, "%s: tensor %s: data range [%zu, %zu) does not match its shape/dtype or the file size (truncated?)",
                     path, t->name, t->begin, t->end);
            rc = -1;
        }
    }
    if (rc == 0) rc = check_unique(f, err, errlen);
    if (rc) st_free(f);  // nothing of a bad file is kept
    return rc;
}

void st_free(StFile *f) {
    for (int i = 0; i < f->num_meta; i++) free(f->meta_keys[i]), free(f->meta_values[i]);
    free(f->meta_keys), free(f->meta_values), free(f->tensors);
    if (f->map) munmap(f->map, f->map_bytes);
    memset(f, 0, sizeof(*f));
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->num_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key) {
    for (int i = 0; i < f->num_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
    return NULL;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        float v = ldexpf((float)man, -24);  // subnormal (or zero)
        return sign ? -v : v;
    }
    bits = exp == 31 ? sign | 0x7F800000u | man << 13 : sign | (exp + 112) << 23 | man << 13;
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

// The tensor's data, once it is known to hold numel elements.
static const uint8_t *tensor_bytes(const StFile *f, const StTensor *t, size_t numel) {
    if (t->numel != numel) fatal("%s: tensor %s has %zu elements, expected %zu", f->path, t->name, t->numel, numel);
    return f->data + t->begin;
}

void st_read_f32(const StFile *f, const StTensor *t, float *out, size_t numel) {
    const uint8_t *src = tensor_bytes(f, t, numel);
    // one dtype test per tensor, not per element (a ViT-H resume reads ~3e9 values)
    if (!strcmp(t->dtype, "F32")) memcpy(out, src, numel * 4);
    else if (!strcmp(t->dtype, "F64"))
        for (size_t i = 0; i < numel; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
        }
    else if (!strcmp(t->dtype, "BF16"))
        for (size_t i = 0; i < numel; i++) {
            uint32_t bits = (uint32_t)(src[2 * i] | src[2 * i + 1] << 8) << 16;
            memcpy(&out[i], &bits, 4);
        }
    else if (!strcmp(t->dtype, "F16"))
        for (size_t i = 0; i < numel; i++) out[i] = half_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
    else fatal("%s: tensor %s has dtype %s, which cannot be read as float", f->path, t->name, t->dtype);
}

void st_read_i32(const StFile *f, const StTensor *t, int32_t *out, size_t numel) {
    const uint8_t *src = tensor_bytes(f, t, numel);
    for (size_t i = 0; i < numel; i++) {
        if (!strcmp(t->dtype, "I32")) memcpy(&out[i], src + 4 * i, 4);
        else if (!strcmp(t->dtype, "I64")) {
            int64_t v;
            memcpy(&v, src + 8 * i, 8);
            if (v < INT32_MIN || v > INT32_MAX) fatal("%s: tensor %s: value %lld does not fit int32", f->path, t->name, (long long)v);
            out[i] = (int32_t)v;
        } else fatal("%s: tensor %s has dtype %s, which cannot be read as int32", f->path, t->name, t->dtype);
    }
}

// ---------------------------------------------------------------- writer

typedef struct {
    char name[160];
    char dtype[8];
    int ndim;
    int64_t shape[8];
    const void *data;
    size_t bytes;
} WTensor;

struct StWriter {
    WTensor *t;
    int n;
    char **mk, **mv;
    int nm;
};

StWriter *st_writer_new(void) { return callocCheck(1, sizeof(StWriter)); }

void st_writer_add(StWriter *w, const char *name, const char *dtype, int ndim, const int64_t *shape, const void *data) {
    size_t es = dtype_size(dtype);
    if (!es || ndim > 8 || strlen(name) >= sizeof(w->t[0].name)) fatal("st_writer_add: bad tensor %s (%s, ndim %d)", name, dtype, ndim);
    w->t = reallocCheck(w->t, (size_t)(w->n + 1) * sizeof(WTensor));
    WTensor *t = &w->t[w->n++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->dtype, sizeof(t->dtype), "%s", dtype);
    t->ndim = ndim;
    t->bytes = es;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i], t->bytes *= (size_t)shape[i];
    t->data = data;
}

void st_writer_meta(StWriter *w, const char *key, const char *value) {
    w->mk = reallocCheck(w->mk, (size_t)(w->nm + 1) * sizeof(char *));
    w->mv = reallocCheck(w->mv, (size_t)(w->nm + 1) * sizeof(char *));
    w->mk[w->nm] = strdup(key), w->mv[w->nm] = strdup(value);
    if (!w->mk[w->nm] || !w->mv[w->nm]) fatal("st_writer_meta: out of memory");
    w->nm++;
}

// Bytes of the valid UTF-8 character at p (2-4), or 0 if p does not start one (ASCII is handled apart).
static int utf8_char_len(const unsigned char *p) {
    int n = p[0] >= 0xC2 && p[0] <= 0xDF ? 2 : p[0] >= 0xE0 && p[0] <= 0xEF ? 3 : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4 : 0;
    unsigned lo = p[0] == 0xE0 ? 0xA0 : p[0] == 0xF0 ? 0x90 : 0x80, hi = p[0] == 0xED ? 0x9F : p[0] == 0xF4 ? 0x8F : 0xBF;
    for (int i = 1; i < n; i++)  // no overlong forms, surrogates or code points past U+10FFFF; stops at the NUL
        if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xBF)) return 0;
    return n;
}

// Append s as a JSON string to the growing buffer. Bytes that are not UTF-8 become U+FFFD: JSON text is UTF-8,
// and Python's safetensors rejects a header that is not.
static void json_put(char **buf, size_t *len, size_t *cap, const char *s, int quote) {
    size_t need = *len + 6 * strlen(s) + 3;
    if (need > *cap) *cap = 2 * need, *buf = reallocCheck(*buf, *cap);
    char *o = *buf + *len;
    if (quote) *o++ = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (!quote) *o++ = (char)*p;
        else if (*p == '"' || *p == '\\') *o++ = '\\', *o++ = (char)*p;
        else if (*p == '\n') *o++ = '\\', *o++ = 'n';
        else if (*p == '\t') *o++ = '\\', *o++ = 't';
        else if (*p < 0x20) o += sprintf(o, "\\u%04x", *p);
        else if (*p < 0x80) *o++ = (char)*p;
        else {
            int n = utf8_char_len(p);
            if (n == 0) o += sprintf(o, "\\ufffd");
            for (int i = 0; i < n; i++) *o++ = (char)p[i];
            if (n > 1) p += n - 1;
        }
    }
    if (quote) *o++ = '"';
    *len = (size_t)(o - *buf);
}

static int write_all(int fd, const void *data, size_t n) {
    const uint8_t *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k, n -= (size_t)k;
    }
    return 0;
}

static void writer_free(StWriter *w) {
    for (int i = 0; i < w->nm; i++) free(w->mk[i]), free(w->mv[i]);
    free(w->mk), free(w->mv), free(w->t), free(w);
}

int st_write(StWriter *w, const char *path, char *err, size_t errlen) {
    char *h = NULL, num[64];
    size_t len = 0, cap = 0, offset = 0;
    json_put(&h, &len, &cap, "{", 0);
    if (w->nm) {
        json_put(&h, &len, &cap, "\"__metadata__\":{", 0);
        for (int i = 0; i < w->nm; i++) {
            json_put(&h, &len, &cap, i ? "," : "", 0);
            json_put(&h, &len, &cap, w->mk[i], 1), json_put(&h, &len, &cap, ":", 0), json_put(&h, &len, &cap, w->mv[i], 1);
        }
        json_put(&h, &len, &cap, "}", 0);
    }
    for (int i = 0; i < w->n; i++) {
        const WTensor *t = &w->t[i];
        json_put(&h, &len, &cap, (i || w->nm) ? "," : "", 0);
        json_put(&h, &len, &cap, t->name, 1);
        json_put(&h, &len, &cap, ":{\"dtype\":", 0), json_put(&h, &len, &cap, t->dtype, 1);
        json_put(&h, &len, &cap, ",\"shape\":[", 0);
        for (int d = 0; d < t->ndim; d++) snprintf(num, sizeof(num), "%s%lld", d ? "," : "", (long long)t->shape[d]), json_put(&h, &len, &cap, num, 0);
        snprintf(num, sizeof(num), "],\"data_offsets\":[%zu,%zu]}", offset, offset + t->bytes);
        json_put(&h, &len, &cap, num, 0);
        offset += t->bytes;
    }
    json_put(&h, &len, &cap, "}", 0);
    while (len % 8) json_put(&h, &len, &cap, " ", 0);  // data section 8-byte aligned, as the format asks

    char tmp[1100];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = -1, saved = 0;
    if (fd < 0) {
        saved = errno;
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        goto done;
    }
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)len >> (8 * i));
    int bad = write_all(fd, lenbuf, 8) || write_all(fd, h, len);
    for (int i = 0; i < w->n && !bad; i++) bad = write_all(fd, w->t[i].data, w->t[i].bytes);
    if (bad || fsync(fd) != 0) {
        saved = errno;
        snprintf(err, errlen, "writing %s failed: %s", tmp, strerror(errno));
        close(fd), unlink(tmp);
        goto done;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        saved = errno;
        snprintf(err, errlen, "finishing %s failed: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    // make the rename itself durable
    char dir[1100];
    snprintf(dir, sizeof(dir), "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) fsync(dfd), close(dfd);
    rc = 0;
done:
    free(h);
    writer_free(w);
    errno = saved;
    return rc;
}
