// synthetic.c: the built-in synthetic source: coloured shapes on noise, captioned with their names.
#include "synthetic.h"

#include <stdio.h>
#include <string.h>

#include "../model/rng.h"

static const char *COLOR_NAMES[] = {"red", "green", "blue", "yellow", "white", "black", "orange", "purple"};
static const uint8_t COLORS[][3] = {{220, 30, 30},   {30, 180, 40},   {30, 60, 220}, {230, 220, 40},
                                    {245, 245, 245}, {15, 15, 15},    {240, 140, 20}, {140, 40, 180}};
static const char *SHAPE_NAMES[] = {"square", "disc", "bar", "triangle"};
enum { NCOLORS = 8, NSHAPES = 4, MAX_OBJECTS = 3 };

typedef struct {
    int color, shape, cx, cy, r;  // centre and half-size in pixels
} Object;

static int make_objects(uint64_t seed, uint64_t index, int S, Object *obj) {
    Rng r;
    rng_init(&r, seed, RNG_SYNTHETIC, index);
    int n = 1 + (int)rng_below(&r, MAX_OBJECTS);
    for (int k = 0; k < n; k++) {
        obj[k].color = (int)rng_below(&r, NCOLORS);
        obj[k].shape = (int)rng_below(&r, NSHAPES);
        obj[k].r = S / 10 + (int)rng_below(&r, (uint64_t)(S / 8 + 1));
        if (obj[k].r < 1) obj[k].r = 1;
        obj[k].cx = obj[k].r + (int)rng_below(&r, (uint64_t)(S - 2 * obj[k].r > 0 ? S - 2 * obj[k].r : 1));
        obj[k].cy = obj[k].r + (int)rng_below(&r, (uint64_t)(S - 2 * obj[k].r > 0 ? S - 2 * obj[k].r : 1));
    }
    // name them left to right, so the caption order is a property of the picture
    for (int a = 1; a < n; a++)
        for (int b = a; b > 0 && obj[b].cx < obj[b - 1].cx; b--) {
            Object t = obj[b];
            obj[b] = obj[b - 1], obj[b - 1] = t;
        }
    return n;
}

static int inside(const Object *o, int x, int y) {
    int dx = x - o->cx, dy = y - o->cy, r = o->r;
    switch (o->shape) {
        case 0: return dx >= -r && dx <= r && dy >= -r && dy <= r;
        case 1: return dx * dx + dy * dy <= r * r;
        case 2: return dx >= -r && dx <= r && dy >= -r / 2 && dy <= r / 2;
        default: return dy >= -r && dy <= r && 2 * (dx < 0 ? -dx : dx) <= dy + r;  // apex up
    }
}

void synthetic_sample(uint64_t seed, uint64_t index, int S, int T, int vocab_size, uint8_t *image, int32_t *tokens) {
    Object obj[MAX_OBJECTS];
    int n = make_objects(seed, index, S, obj);
    Rng r;
    rng_init(&r, seed, RNG_SYNTHETIC, index ^ 0x5bd1e995ULL);
    int gray = 60 + (int)rng_below(&r, 120);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            int noise = (int)rng_below(&r, 41) - 20;
            uint8_t px[3] = {0, 0, 0};
            int v = gray + noise;
            px[0] = px[1] = px[2] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            for (int k = 0; k < n; k++)
                if (inside(&obj[k], x, y)) memcpy(px, COLORS[obj[k].color], 3);
            for (int ch = 0; ch < 3; ch++) image[((size_t)ch * S + y) * S + x] = px[ch];
        }
    // ids: colours 1..8, shapes 9..12 (no BPE needed); SOT/EOT are the vocabulary's last two ids as in CLIP
    int32_t words[2 * MAX_OBJECTS];
    int nw = 0;
    for (int k = 0; k < n; k++) words[nw++] = 1 + obj[k].color, words[nw++] = 1 + NCOLORS + obj[k].shape;
    memset(tokens, 0, (size_t)T * sizeof(int32_t));
    int keep = nw < T - 2 ? nw : T - 2;  // truncation keeps EOT last
    tokens[0] = vocab_size - 2;
    for (int i = 0; i < keep; i++) tokens[1 + i] = words[i] % (vocab_size - 2);
    tokens[1 + keep] = vocab_size - 1;
}

void synthetic_caption(uint64_t seed, uint64_t index, int S, char *buf, int cap) {
    Object obj[MAX_OBJECTS];
    int n = make_objects(seed, index, S, obj);
    int len = 0;
    buf[0] = '\0';
    for (int k = 0; k < n && len < cap; k++)
        len += snprintf(buf + len, (size_t)(cap - len), "%s%s %s", k ? " " : "", COLOR_NAMES[obj[k].color], SHAPE_NAMES[obj[k].shape]);
}
