// data_fixtures.h: helpers shared by the data tests: whole-file reads and the fixture manifests written
// by scripts/make_test_shards.py (tests/fixtures/shards/manifest.tsv, tests/fixtures/images/expect.tsv).
#pragma once
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
