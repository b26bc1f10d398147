// data_fixtures.h: helpers shared by the data tests and bench_data: whole-file reads, the fixture manifests written
// by scripts/make_test_shards.py (tests/fixtures/shards/manifest.tsv, tests/fixtures/images/expect.tsv), and
// writers of PNG files and ustar members for inputs made in code.
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../model/utils.h"

#define SHARD_DIR "tests/fixtures/shards/"
#define IMAGE_DIR "tests/fixtures/images/"

// The whole file (NUL-terminated); *len its size. NULL if it cannot be read.
static inline uint8_t *read_whole_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = mallocCheck((size_t)n + 1);
    size_t got = fread(d, 1, (size_t)n, f);
    fclose(f);
    if (got != (size_t)n) return free(d), NULL;
    d[n] = 0;
    *len = (size_t)n;
    return d;
}

// A growing byte buffer.
typedef struct {
    uint8_t *data;
    size_t len, cap;
} Bytes;

static inline void append(Bytes *b, const void *data, size_t size) {
    if (b->len + size > b->cap) b->data = reallocCheck(b->data, b->cap = 2 * (b->len + size));
    memcpy(b->data + b->len, data, size);
    b->len += size;
}

static inline void png_chunk(Bytes *b, const char *kind, const uint8_t *data, uint32_t len) {
    uint8_t be[4] = {len >> 24, len >> 16, len >> 8, len};
    append(b, be, 4);
    append(b, kind, 4);
    append(b, data, len);
    uint32_t crc = (uint32_t)crc32(crc32(0, (const Bytef *)kind, 4), data, len);
    uint8_t c[4] = {crc >> 24, crc >> 16, crc >> 8, crc};
    append(b, c, 4);
}

// An 8-bit PNG of `channels` interleaved channels (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA; Sub filter on every
// row, zlib level 6), like a web PNG of photo-like content.
static inline Bytes encode_png(const uint8_t *pixels, int w, int h, int channels) {
    static const uint8_t color_type[5] = {0, 0, 4, 2, 6};
    size_t row_len = (size_t)w * channels, raw_len = (size_t)h * (1 + row_len);
    uint8_t *raw = mallocCheck(raw_len);
    for (int y = 0; y < h; y++) {
        uint8_t *row = raw + (size_t)y * (1 + row_len);
        const uint8_t *px = pixels + (size_t)y * row_len;
        row[0] = 1;  // Sub: each byte minus the same channel of the pixel to its left
        for (size_t i = 0; i < row_len; i++) row[1 + i] = (uint8_t)(px[i] - (i >= (size_t)channels ? px[i - channels] : 0));
    }
    uLongf z_len = compressBound(raw_len);
    uint8_t *z = mallocCheck(z_len);
    if (compress2(z, &z_len, raw, raw_len, 6) != Z_OK) fatal("zlib compress2 failed");
    Bytes b = {0};
    append(&b, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {w >> 24, w >> 16, w >> 8, w, h >> 24, h >> 16, h >> 8, h, 8, color_type[channels], 0, 0, 0};
    png_chunk(&b, "IHDR", ihdr, 13);
    png_chunk(&b, "IDAT", z, (uint32_t)z_len);
    png_chunk(&b, "IEND", NULL, 0);
    free(raw);
    free(z);
    return b;
}

// A ustar header for a member of `size` bytes.
static inline void tar_header(FILE *f, const char *name, size_t size) {
    char h[512] = {0};
    snprintf(h, 100, "%s", name);
    snprintf(h + 100, 8, "%07o", 0644);
    snprintf(h + 124, 12, "%011zo", size);
    snprintf(h + 136, 12, "%011o", 0);
    memcpy(h + 148, "        ", 8);
    h[156] = '0';
    memcpy(h + 257, "ustar\0" "00", 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += (uint8_t)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    fwriteCheck(h, 1, 512, f);
}

static inline void tar_member(FILE *f, const char *name, const void *data, size_t size) {
    static const char zeros[512];
    tar_header(f, name, size);
    fwriteCheck(data, 1, size, f);
    if (size % 512) fwriteCheck(zeros, 1, 512 - size % 512, f);
}

// One line of manifest.tsv: a sample (status = ok or a skip reason name, its `cls` label) or, with key
// "-", the shard's error flag (status "shard_error", width = 0/1).
typedef struct {
    char shard[64], key[256], status[32];
    int width, height;
    char caption[512];  // decoded from hex; "" for skipped samples
    int label;          // the `cls` member, -1 if none
} ManifestLine;

// Reads the manifest; returns the number of lines (fills *out, malloc'ed).
static inline int read_manifest(ManifestLine **out) {
    FILE *f = fopen(SHARD_DIR "manifest.tsv", "r");
    if (!f) return 0;
    int n = 0, cap = 0;
    ManifestLine *lines = NULL;
    char buf[2048], hex[1100], w[16], h[16], label[16];
    while (fgets(buf, sizeof(buf), f)) {
        if (n == cap) lines = reallocCheck(lines, (size_t)(cap = cap ? 2 * cap : 64) * sizeof(ManifestLine));
        ManifestLine *m = &lines[n];
        memset(m, 0, sizeof(*m));
        if (sscanf(buf, "%63[^\t]\t%255[^\t]\t%31[^\t]\t%15[^\t]\t%15[^\t]\t%1099[^\t]\t%15[^\t\n]", m->shard, m->key, m->status, w, h, hex,
                   label) != 7)
            continue;
        m->width = atoi(w), m->height = atoi(h), m->label = atoi(label);
        if (strcmp(hex, "-") != 0)
            for (size_t i = 0; 2 * i + 1 < strlen(hex) && i + 1 < sizeof(m->caption); i++) {
                unsigned v;
                sscanf(hex + 2 * i, "%2x", &v);
                m->caption[i] = (char)v;
            }
        n++;
    }
    fclose(f);
    *out = lines;
    return n;
}
