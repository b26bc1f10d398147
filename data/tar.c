// tar.c: the tar format (headers, long names, PAX records, numbers, checksums) and webdataset's grouping
// of members into samples. Every offset and size is checked against the file's size before use, so a
// damaged shard ends with a message in ->error instead of a crash, a hang or a read past the end.
#include "tar.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "../model/utils.h"

#define BLOCK 512
#define PAX_MAX (1 << 20)  // larger extended headers are treated as corrupt

__attribute__((format(printf, 2, 3))) static int tar_fail(TarReader *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->error, sizeof(t->error), fmt, ap);
    va_end(ap);
    return 0;
}

void tar_reader_init(TarReader *t, FILE *f, const char *label) {
    memset(t, 0, sizeof(*t));
    t->f = f, t->label = label;
    if (fseeko(f, 0, SEEK_END) != 0 || (t->file_size = ftello(f)) < 0) {
        t->file_size = 0;
        tar_fail(t, "cannot seek: %s", strerror(errno));
    }
}

int tar_read_span(FILE *f, TarSpan span, void *buf) {
    if (span.size < 0 || fseeko(f, span.offset, SEEK_SET) != 0) return -1;
    if (span.size > 0 && fread(buf, 1, (size_t)span.size, f) != (size_t)span.size) return -1;
    ((char *)buf)[span.size] = '\0';
    return 0;
}

// A numeric header field: octal text (NUL/space padded), or base-256 when the top bit of the first byte is
// set (GNU/star extension for sizes >= 8 GiB). Returns -1 if it is neither or does not fit in 63 bits.
static int64_t parse_number(const uint8_t *field, int len) {
    if (field[0] & 0x80) {
        if (field[0] != 0x80) return -1;  // 0xff marks a negative number: never valid here
        uint64_t v = 0;
        for (int i = 1; i < len; i++) {
            if (v >> 55) return -1;
            v = (v << 8) | field[i];
        }
        return (int64_t)v;
    }
    int end = 0;
    while (end < len && field[end]) end++;  // the text ends at the first NUL
    int i = 0;
    while (i < end && field[i] == ' ') i++;
    while (end > i && field[end - 1] == ' ') end--;
    int64_t v = 0;
    for (; i < end; i++) {
        if (field[i] < '0' || field[i] > '7' || (v >> 59)) return -1;
        v = v * 8 + (field[i] - '0');
    }
    return v;
}

// The checksum covers the header with its own field read as spaces; old writers summed signed chars.
static int checksum_ok(const uint8_t *h) {
    int64_t stored = parse_number(h + 148, 8);
    int64_t sum_unsigned = 0, sum_signed = 0;
    for (int i = 0; i < BLOCK; i++) {
        int in_field = i >= 148 && i < 156;
        sum_unsigned += in_field ? ' ' : h[i];
        sum_signed += in_field ? ' ' : (int8_t)h[i];
    }
    return stored == sum_unsigned || stored == sum_signed;
}

// Reads a member's data (long name or PAX records) into a NUL-terminated buffer of at most cap bytes.
static int read_small_data(TarReader *t, int64_t offset, int64_t size, char *buf, int64_t cap, const char *what) {
    if (size >= cap) return tar_fail(t, "%s of %lld bytes at offset %lld is too long", what, (long long)size, (long long)offset);
    if (offset + size > t->file_size) return tar_fail(t, "truncated: %s at offset %lld runs past the end", what, (long long)offset);
    if (tar_read_span(t->f, (TarSpan){offset, size}, buf) != 0) return tar_fail(t, "cannot read %s at offset %lld", what, (long long)offset);
    return 1;
}

// PAX records "LEN key=value\n": only path and size matter to us.
static int parse_pax(TarReader *t, const char *rec, int64_t len, char *path, int64_t *size) {
    int64_t p = 0;
    while (p < len) {
        int64_t n = 0, q = p;
        while (q < len && isdigit((unsigned char)rec[q]) && n < PAX_MAX) n = n * 10 + (rec[q++] - '0');
        if (q == p || q >= len || rec[q] != ' ' || n <= q - p + 1 || p + n > len || rec[p + n - 1] != '\n')
            return tar_fail(t, "corrupt PAX record at byte %lld of an extended header", (long long)p);
        const char *kv = rec + q + 1;
        int64_t kvlen = p + n - 1 - (q + 1);  // without the newline
        const char *eq = memchr(kv, '=', (size_t)kvlen);
        if (!eq) return tar_fail(t, "PAX record without '=' in an extended header");
        int64_t klen = eq - kv, vlen = kvlen - klen - 1;
        if (klen == 4 && memcmp(kv, "path", 4) == 0 && vlen > 0) {
            if (vlen >= TAR_NAME_MAX) return tar_fail(t, "PAX path of %lld bytes is too long", (long long)vlen);
            memcpy(path, eq + 1, (size_t)vlen);
            path[vlen] = '\0';
        } else if (klen == 4 && memcmp(kv, "size", 4) == 0) {
            int64_t v = 0;
            for (int64_t i = 0; i < vlen; i++) {
                if (!isdigit((unsigned char)eq[1 + i]) || v > (INT64_MAX - 9) / 10) return tar_fail(t, "bad PAX size");
                v = v * 10 + (eq[1 + i] - '0');
            }
            if (vlen == 0) return tar_fail(t, "bad PAX size");
            *size = v;
        }
        p += n;
    }
    return 1;
}

// What a shard whose first header fails most likely is instead of a tar (from its first bytes), or NULL:
// "bad checksum at offset 0" would not tell a compressed shard or a Git LFS pointer from a damaged tar.
static const char *not_a_tar(TarReader *t) {
    uint8_t head[24] = {0};
    size_t n = t->file_size < (int64_t)sizeof(head) ? (size_t)t->file_size : sizeof(head);
    if (fseeko(t->f, 0, SEEK_SET) != 0 || fread(head, 1, n, t->f) != n) return NULL;
    if (n >= 2 && head[0] == 0x1f && head[1] == 0x8b) return "gzip-compressed (shards must be uncompressed tar files)";
    if (n >= 4 && memcmp(head, "\x28\xb5\x2f\xfd", 4) == 0) return "zstd-compressed (shards must be uncompressed tar files)";
    if (n >= 6 && memcmp(head, "\xfd" "7zXZ\0", 6) == 0) return "xz-compressed (shards must be uncompressed tar files)";
    if (n >= 3 && memcmp(head, "BZh", 3) == 0) return "bzip2-compressed (shards must be uncompressed tar files)";
    if (n >= 4 && memcmp(head, "PK\3\4", 4) == 0) return "a zip archive";
    if (n >= 23 && memcmp(head, "version https://git-lfs", 23) == 0) return "a Git LFS pointer (run git lfs pull)";
    return NULL;
}

int tar_next_member(TarReader *t, TarMember *m) {
    char long_name[TAR_NAME_MAX] = "", pax_path[TAR_NAME_MAX] = "";
    int64_t pax_size = -1;
    uint8_t h[BLOCK];
    while (!t->error[0]) {
        const char *other = NULL;
        if (t->pos + BLOCK > t->file_size) {
            if (t->pos == 0 && (other = not_a_tar(t))) return tar_fail(t, "not a tar file: %s", other);
            return tar_fail(t, "truncated: no end-of-archive block (file ends at %lld bytes)", (long long)t->file_size);
        }
        if (fseeko(t->f, t->pos, SEEK_SET) != 0 || fread(h, 1, BLOCK, t->f) != BLOCK)
            return tar_fail(t, "cannot read the header at offset %lld", (long long)t->pos);
        int zero = 1;
        for (int i = 0; i < BLOCK && zero; i++) zero = h[i] == 0;
        if (zero) return 0;  // end-of-archive
        if (!checksum_ok(h)) {
            if (t->pos == 0 && (other = not_a_tar(t))) return tar_fail(t, "not a tar file: %s", other);
            return tar_fail(t, "corrupt header at offset %lld (bad checksum)", (long long)t->pos);
        }
        int64_t size = parse_number(h + 124, 12);
        if (size < 0) return tar_fail(t, "corrupt header at offset %lld (bad size field)", (long long)t->pos);
        char type = (char)h[156];
        if (type >= '1' && type <= '6') size = 0;  // links, devices, directories, FIFOs: no data follows
        if (pax_size >= 0 && (type == '0' || type == '\0' || type == '7')) size = pax_size;
        int64_t data = t->pos + BLOCK;
        if (size > t->file_size - data)
            return tar_fail(t, "truncated: member at offset %lld needs %lld bytes, the file has %lld", (long long)t->pos,
                            (long long)size, (long long)(t->file_size - data));
        t->pos = data + (size + BLOCK - 1) / BLOCK * BLOCK;
        if (type == 'L') {  // GNU: the data is the next member's name
            if (!read_small_data(t, data, size, long_name, TAR_NAME_MAX, "GNU long name")) return 0;
            continue;
        }
        if (type == 'x') {  // PAX: records for the next member
            if (size >= PAX_MAX) return tar_fail(t, "PAX header of %lld bytes at offset %lld is too long", (long long)size, (long long)data);
            char *rec = mallocCheck((size_t)size + 1);
            int ok = read_small_data(t, data, size, rec, size + 1, "PAX header") && parse_pax(t, rec, size, pax_path, &pax_size);
            free(rec);
            if (!ok) return 0;
            continue;
        }
        if (type == 'K' || type == 'g') continue;  // long link names, global PAX records: unused, keep what is pending
        if (type != '0' && type != '\0' && type != '7') {  // links, directories, devices, vendor types: skipped
            long_name[0] = pax_path[0] = '\0', pax_size = -1;
            continue;
        }
        // the name: PAX path, else the GNU long name, else ustar prefix + "/" + name
        if (pax_path[0]) strcpy(m->name, pax_path);
        else if (long_name[0]) strcpy(m->name, long_name);
        else {
            char name[101], prefix[156];
            memcpy(name, h, 100), name[100] = '\0';
            memcpy(prefix, h + 345, 155), prefix[155] = '\0';
            int posix = memcmp(h + 257, "ustar\0", 6) == 0;  // GNU headers keep other fields at 345
            if (posix && prefix[0]) snprintf(m->name, TAR_NAME_MAX, "%s/%s", prefix, name);
            else strcpy(m->name, name);
        }
        size_t len = strlen(m->name);
        if (type == '\0' && len > 0 && m->name[len - 1] == '/') {  // V7 directory
            long_name[0] = pax_path[0] = '\0', pax_size = -1;
            continue;
        }
        m->offset = data, m->size = size;
        return 1;
    }
    return 0;
}

// ---------------------------------------------------------------- webdataset samples

// Member extensions a sample uses; the image is chosen in open_clip's order (jpg;png;jpeg;webp).
enum { EXT_JPG, EXT_PNG, EXT_JPEG, EXT_WEBP, EXT_TXT, EXT_CLS, NEXT };
static const char *EXTS[NEXT] = {"jpg", "png", "jpeg", "webp", "txt", "cls"};

// webdataset's key rule (its base_plus_ext regex): key = directory + basename up to the basename's first
// dot, extension = the rest, lower-cased. A basename starting with a dot or without one has no key.
// Returns the key's length, or -1.
static int split_key(const char *name, const char **ext) {
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strchr(base, '.');
    if (!dot || dot == base) return -1;
    *ext = dot + 1;
    return (int)(dot - name);
}

// webdataset skips metadata members named __something__ at the top level.
static int is_meta(const char *name) {
    if (strncmp(name, "__", 2) != 0) return 0;
    const char *end = strchr(name, '/');
    size_t len = end ? (size_t)(end - name) : strlen(name);
    return len >= 4 && name[len - 1] == '_' && name[len - 2] == '_';
}

static void close_sample(ShardIndex *idx, TarSpan *spans) {
    WdsSample *s = &idx->samples[idx->n - 1];
    s->image = (TarSpan){0, -1};
    for (int e = EXT_JPG; e <= EXT_WEBP; e++)
        if (spans[e].size >= 0) {
            s->image = spans[e];
            break;
        }
    s->txt = spans[EXT_TXT], s->cls = spans[EXT_CLS];
}

void tar_index_shard(FILE *f, const char *label, ShardIndex *idx) {
    idx->n = 0, idx->keys_len = 0, idx->error[0] = '\0';
    TarReader t;
    tar_reader_init(&t, f, label);
    TarMember *m = mallocCheck(sizeof(TarMember));
    TarSpan spans[NEXT];
    int open_sample = 0;
    while (tar_next_member(&t, m)) {
        const char *ext;
        int klen = split_key(m->name, &ext);
        if (klen < 0 || is_meta(m->name)) continue;
        int e = 0;
        while (e < NEXT && strcasecmp(ext, EXTS[e]) != 0) e++;
        const char *cur = open_sample ? idx->keys + idx->samples[idx->n - 1].key : NULL;
        // a new key starts a sample; so does a repeated extension (open_clip's group_by_keys_nothrow)
        int same = cur && (int)strlen(cur) == klen && memcmp(cur, m->name, (size_t)klen) == 0 && !(e < NEXT && spans[e].size >= 0);
        if (!same) {
            if (open_sample) close_sample(idx, spans);
            if (idx->n == idx->cap) {
                idx->cap = idx->cap ? 2 * idx->cap : 256;
                idx->samples = reallocCheck(idx->samples, (size_t)idx->cap * sizeof(WdsSample));
            }
            if (idx->keys_len + klen + 1 > idx->keys_cap) {
                idx->keys_cap = 2 * (idx->keys_len + klen + 1) + 4096;
                idx->keys = reallocCheck(idx->keys, (size_t)idx->keys_cap);
            }
            idx->samples[idx->n++].key = idx->keys_len;
            memcpy(idx->keys + idx->keys_len, m->name, (size_t)klen);
            idx->keys[idx->keys_len + klen] = '\0';
            idx->keys_len += klen + 1;
            for (int i = 0; i < NEXT; i++) spans[i] = (TarSpan){0, -1};
            open_sample = 1;
        }
        if (e < NEXT) spans[e] = (TarSpan){m->offset, m->size};
    }
    if (open_sample) close_sample(idx, spans);
    free(m);
    if (t.error[0]) snprintf(idx->error, sizeof(idx->error), "%s", t.error);
}

void shard_index_free(ShardIndex *idx) {
    free(idx->samples);
    free(idx->keys);
    memset(idx, 0, sizeof(*idx));
}
