// test_image.c: image decoding and the train/eval transforms against what PIL and torchvision make of
// the same files (tests/fixtures/images, made by scripts/make_test_shards.py with Pillow 13 / torchvision
// 0.29): decodes of every format, RandomResizedCrop's crop+resize and the eval Resize+CenterCrop. The
// resampling is exact (max abs difference 0 on every fixture); decoders may differ from Pillow's bundled
// libjpeg/libwebp by at most DECODE_TOLERANCE. Also DCT-domain scaling, the crop parameters, the pixel
// limit and damaged data.
#include "../data/image.h"
#include <stb/stb_image.h>
#include "../data/transform.h"
#include "data_fixtures.h"
#include "test.h"

#define DECODE_TOLERANCE 1  // measured 0 here (libjpeg-turbo 2.1.5, libwebp 1.2.4, stb_image 2.27)

static int max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
        if (d > m) m = d;
    }
    return m;
}

// (3, S, S) planar -> (S, S, 3) interleaved, the layout of the PIL reference files.
static void planar_to_interleaved(const uint8_t *in, int S, uint8_t *out) {
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < S * S; p++) out[p * 3 + c] = in[c * S * S + p];
}

static ImageStatus decode_file_alpha(const char *name, long max_pixels, int keep_side, int alpha_on_white, Image *img) {
    char path[256], why[256];
    snprintf(path, sizeof(path), IMAGE_DIR "%s", name);
    size_t len;
    uint8_t *data = read_whole_file(path, &len);
    if (!data) return IMAGE_CORRUPT;
    ImageStatus s = image_decode(data, len, max_pixels, keep_side, alpha_on_white, img, why, sizeof(why));
    free(data);
    return s;
}

static ImageStatus decode_file(const char *name, long max_pixels, int keep_side, Image *img) {
    return decode_file_alpha(name, max_pixels, keep_side, 0, img);
}

// image_alpha = white: opaque pixels as decoded without alpha, transparent ones white, the rest between
// (against the PIL-exact alpha-dropped decode of the same files and their alpha from the PNG itself).
static void test_alpha_on_white(void) {
    const char *files[] = {"rgba.png", "la.png"};
    for (int f = 0; f < 2; f++) {
        Image drop, white;
        EXPECT(decode_file_alpha(files[f], 100000000, 0, 0, &drop) == IMAGE_OK, "%s", files[f]);
        EXPECT(decode_file_alpha(files[f], 100000000, 0, 1, &white) == IMAGE_OK, "%s (white)", files[f]);
        char path[256];
        snprintf(path, sizeof(path), IMAGE_DIR "%s", files[f]);
        size_t len;
        uint8_t *data = read_whole_file(path, &len);
        int w, h, comp;
        uint8_t *rgba = data ? stbi_load_from_memory(data, (int)len, &w, &h, &comp, 4) : NULL;
        EXPECT(rgba && w == drop.w && h == drop.h && w == white.w, "%s: reference decode", files[f]);
        int opaque = 0, clear = 0, partial = 0;
        for (long i = 0; rgba && i < (long)w * h; i++) {
            unsigned a = rgba[4 * i + 3];
            for (int ch = 0; ch < 3; ch++) {
                unsigned d = drop.rgb[3 * i + ch], v = white.rgb[3 * i + ch];
                unsigned want = (d * a + 255 * (255 - a) + 127) / 255;  // stb's RGB equals the dropped decode
                EXPECT(v == want, "%s pixel %ld ch %d: %u, want %u (alpha %u)", files[f], i, ch, v, want, a);
            }
            opaque += a == 255, clear += a == 0, partial += a > 0 && a < 255;
        }
        if (f == 0) EXPECT(clear > 0 && partial > 0, "%s has no transparent or partial pixels: the test would prove nothing", files[f]);
        free(rgba), free(data);
        image_free(&drop), image_free(&white);
    }
}

// image_alpha = white on PNGs made here with real transparency, grey + alpha and RGBA (the fixture la.png is opaque):
// c' = (c a + 255 (255 - a) + 127) / 255, grey replicated; without it the alpha is dropped.
static void test_alpha_on_white_made_pngs(void) {
    enum { W = 16, H = 5 };
    for (int channels = 2; channels <= 4; channels += 2) {
        uint8_t px[W * H * 4];
        for (int i = 0; i < W * H; i++)
            for (int ch = 0; ch < channels; ch++)  // alpha (the last channel) 0, 255 and values between
                px[i * channels + ch] = ch == channels - 1 ? (uint8_t)(i % 4 == 0 ? 0 : i % 4 == 1 ? 255 : 37 * i) : (uint8_t)(11 * i + 40 * ch);
        Bytes png = encode_png(px, W, H, channels);
        Image drop, white;
        char why[256];
        EXPECT(image_decode(png.data, png.len, 1000, 0, 0, &drop, why, sizeof(why)) == IMAGE_OK, "%d channels: %s", channels, why);
        EXPECT(image_decode(png.data, png.len, 1000, 0, 1, &white, why, sizeof(why)) == IMAGE_OK, "%d channels (white): %s", channels, why);
        for (int i = 0; i < W * H && drop.rgb && white.rgb; i++) {
            unsigned a = px[i * channels + channels - 1];
            for (int ch = 0; ch < 3; ch++) {
                unsigned c = px[i * channels + (channels == 2 ? 0 : ch)], want = (c * a + 255 * (255 - a) + 127) / 255;
                EXPECT(drop.rgb[3 * i + ch] == c, "%d channels, pixel %d ch %d dropped: %u, want %u", channels, i, ch, drop.rgb[3 * i + ch], c);
                EXPECT(white.rgb[3 * i + ch] == want, "%d channels, pixel %d ch %d on white: %u, want %u (alpha %u)", channels, i, ch,
                       white.rgb[3 * i + ch], want, a);
            }
        }
        image_free(&drop), image_free(&white), free(png.data);
    }
}

static void test_against_pil(void) {
    FILE *f = fopen(IMAGE_DIR "expect.tsv", "r");
    EXPECT(f != NULL, "no %sexpect.tsv: run scripts/make_test_shards.py", IMAGE_DIR);
    if (!f) return;
    char line[512], kind[16], file[64], raw_name[64];
    int lines = 0, worst_resize = 0, worst_decode = 0;
    while (fgets(line, sizeof(line), f)) {
        int a[5] = {0};
        if (sscanf(line, "%15s %63s", kind, file) != 2) continue;
        int S = 0, w = 0, h = 0;
        if (!strcmp(kind, "decode")) sscanf(line, "%*s %*s %d %d %63s", &w, &h, raw_name);
        else if (!strcmp(kind, "crop")) sscanf(line, "%*s %*s %d %d %d %d %d %63s", &a[0], &a[1], &a[2], &a[3], &S, raw_name);
        else sscanf(line, "%*s %*s %d %63s", &S, raw_name);
        char path[256];
        snprintf(path, sizeof(path), IMAGE_DIR "%s", raw_name);
        size_t ref_len = 0;  // set when ref is read
        uint8_t *ref = read_whole_file(path, &ref_len);
        Image img;
        ImageStatus st = decode_file(file, 100000000, 0, &img);
        EXPECT(st == IMAGE_OK && ref, "%s: status %d", file, st);
        if (st == IMAGE_OK && ref) {
            if (!strcmp(kind, "decode")) {
                EXPECT(img.w == w && img.h == h && ref_len == (size_t)w * h * 3, "%s: %dx%d, PIL %dx%d", file, img.w, img.h, w, h);
                if (img.w == w && img.h == h) {
                    int d = max_abs_diff(img.rgb, ref, ref_len);
                    EXPECT(d <= DECODE_TOLERANCE, "%s: decode differs from PIL by %d", file, d);
                    if (d > worst_decode) worst_decode = d;
                }
            } else {
                uint8_t *planar = mallocCheck((size_t)3 * S * S), *out = mallocCheck((size_t)3 * S * S);
                if (!strcmp(kind, "crop")) {
                    float box[4] = {0, 0, (float)a[2], (float)a[3]};
                    resize_bicubic(img.rgb + ((size_t)a[1] * img.w + a[0]) * 3, a[2], a[3], (size_t)img.w * 3, box, S, S, 0, 0, S, S, planar);
                } else {
                    transform_eval(&img, S, planar);
                }
                planar_to_interleaved(planar, S, out);
                int d = ref_len == (size_t)3 * S * S ? max_abs_diff(out, ref, ref_len) : 256;
                EXPECT(d == 0, "%s of %s at %d px differs from PIL by %d", kind, file, S, d);
                if (d > worst_resize) worst_resize = d;
                free(planar);
                free(out);
            }
        }
        image_free(&img);
        free(ref);
        lines++;
    }
    fclose(f);
    EXPECT(lines >= 20, "only %d reference lines", lines);
    printf("# against PIL: max abs difference %d (decode), %d (resize) over %d references\n", worst_decode, worst_resize, lines);
}

// A JPEG much larger than needed is decoded at 1/2, 1/4 or 1/8 scale; the transforms then see the same
// picture as from a full decode, up to the small differences of the scaled IDCT.
static void test_dct_scaling(void) {
    Image full, half;
    EXPECT(decode_file("big.jpg", 100000000, 0, &full) == IMAGE_OK, "big.jpg full decode");
    EXPECT(decode_file("big.jpg", 100000000, 64, &half) == IMAGE_OK, "big.jpg scaled decode");
    EXPECT(full.w == 640 && full.h == 480 && full.full_w == 640, "full decode %dx%d", full.w, full.h);
    // shorter side 480: 1/2 keeps 240 >= 2 * 64, 1/4 would give 120 < 128
    EXPECT(half.w == 320 && half.h == 240 && half.full_w == 640 && half.full_h == 480, "scaled decode %dx%d of %dx%d", half.w, half.h,
           half.full_w, half.full_h);
    Image eighth;
    EXPECT(decode_file("big.jpg", 100000000, 16, &eighth) == IMAGE_OK && eighth.w == 80, "1/8 scale: %d wide", eighth.w);
    enum { S = 64 };
    uint8_t a[3 * S * S], b[3 * S * S];
    transform_eval(&full, S, a);
    transform_eval(&half, S, b);
    double mean = 0;
    for (int i = 0; i < 3 * S * S; i++) mean += abs(a[i] - b[i]);
    mean /= 3 * S * S;
    EXPECT(mean < 4, "eval transform: scaled decode differs by %.2f on average", mean);
    Rng r1, r2;
    rng_init(&r1, 1, RNG_TEST, 1), rng_init(&r2, 1, RNG_TEST, 1);
    transform_train(&full, S, &r1, a);
    transform_train(&half, S, &r2, b);
    mean = 0;
    for (int i = 0; i < 3 * S * S; i++) mean += abs(a[i] - b[i]);
    mean /= 3 * S * S;
    EXPECT(mean < 4, "train transform: scaled decode differs by %.2f on average", mean);
    image_free(&full), image_free(&half), image_free(&eighth);
}

static void test_random_crop_params(void) {
    Rng r;
    rng_init(&r, 42, RNG_TEST, 0);
    const int sizes[][2] = {{640, 480}, {480, 640}, {100, 100}, {37, 1}, {3000, 20}, {1, 1}, {224, 224}};
    for (int k = 0; k < 7; k++) {
        int W = sizes[k][0], H = sizes[k][1];
        for (int t = 0; t < 200; t++) {
            CropBox c = transform_random_crop(W, H, &r);
            EXPECT(c.x >= 0 && c.y >= 0 && c.w >= 1 && c.h >= 1 && c.x + c.w <= W && c.y + c.h <= H, "%dx%d: crop %d,%d %dx%d outside", W, H, c.x,
                   c.y, c.w, c.h);
            double area = (double)c.w * c.h / ((double)W * H), ratio = (double)c.w / c.h;
            if (W >= 100 && H >= 100) {  // no rounding-dominated sizes: the sampled ranges hold
                EXPECT(area > 0.88 && area <= 1.0 && ratio > 0.74 && ratio < 1.36, "%dx%d: area %.3f ratio %.3f", W, H, area, ratio);
            }
        }
    }
    // every offset 0..W-w is drawn: over 200 crops of 100x100 (w 95..100), narrower ones touch each edge
    int left = 0, right = 0, top = 0, bottom = 0;
    for (int t = 0; t < 200; t++) {
        CropBox e = transform_random_crop(100, 100, &r);
        if (e.w < 100) left |= e.x == 0, right |= e.x + e.w == 100;  // a full-width crop touches both sides anyway
        if (e.h < 100) top |= e.y == 0, bottom |= e.y + e.h == 100;
    }
    EXPECT(left && right && top && bottom, "200 crops of 100x100 touch the edges: left %d right %d top %d bottom %d", left, right, top,
           bottom);
    // the fallback for a very wide image: full height, width = round(h * 4/3), centred
    CropBox c = transform_random_crop(3000, 20, &r);
    EXPECT(c.h == 20 && c.w == 27 && c.x == (3000 - 27) / 2 && c.y == 0, "fallback crop %d,%d %dx%d", c.x, c.y, c.w, c.h);
    Rng a, b;
    rng_init(&a, 5, RNG_AUGMENT, 9), rng_init(&b, 5, RNG_AUGMENT, 9);
    CropBox ca = transform_random_crop(500, 400, &a), cb = transform_random_crop(500, 400, &b);
    EXPECT(!memcmp(&ca, &cb, sizeof(ca)), "same stream, different crops");
}

// CenterCrop's offset is Python's round((new - S) / 2), half to even: 1.5 -> 2, 2.5 -> 2, 0.5 -> 0. The eval
// transform equals that window of the whole resized image (19, 21 and 17 px wide at S = 16).
static void test_center_crop_offset_rounds_half_to_even(void) {
    enum { S = 16, H = 16 };
    const int widths[3] = {19, 21, 17}, want_left[3] = {2, 2, 0};
    for (int k = 0; k < 3; k++) {
        int W = widths[k];
        Image img = {mallocCheck((size_t)W * H * 3), W, H, W, H};
        for (int i = 0; i < W * H * 3; i++) img.rgb[i] = (uint8_t)(i * 37 % 251);
        uint8_t *got = mallocCheck((size_t)3 * S * S), *whole = mallocCheck((size_t)3 * W * H);
        transform_eval(&img, S, got);
        float box[4] = {0, 0, (float)W, (float)H};
        resize_bicubic(img.rgb, W, H, (size_t)W * 3, box, W, H, 0, 0, W, H, whole);
        int bad = 0;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) bad += got[((size_t)c * S + y) * S + x] != whole[((size_t)c * H + y) * W + x + want_left[k]];
        EXPECT(bad == 0, "%dx%d at %d px: %d values differ from the window at x = %d", W, H, S, bad, want_left[k]);
        free(img.rgb), free(got), free(whole);
    }
}

static void test_pixel_limit(void) {
    Image img;
    EXPECT(decode_file("photo.png", 67 * 43, 0, &img) == IMAGE_OK, "at the limit");
    image_free(&img);
    const char *files[] = {"photo.png", "photo.jpg", "lossy.webp", "photo.gif"};
    for (int i = 0; i < 4; i++) {
        EXPECT(decode_file(files[i], 67 * 43 - 1, 0, &img) == IMAGE_TOO_LARGE && img.rgb == NULL, "%s over the limit", files[i]);
        image_free(&img);
    }
}

// Damaged images: every truncation and random byte damage give a status, never a crash (the ASan build
// checks the reads); truncated JPEG/PNG/WebP are refused as PIL refuses them.
static void test_damaged_images(void) {
    const char *files[] = {"photo.jpg", "progressive.jpg", "photo.png", "lossy.webp", "lossless.webp", "photo.gif", "photo.bmp", "cmyk.jpg"};
    Rng r;
    rng_init(&r, (uint64_t)time(NULL), RNG_TEST, 1);
    char why[256];
    for (int i = 0; i < 8; i++) {
        char path[256];
        snprintf(path, sizeof(path), IMAGE_DIR "%s", files[i]);
        size_t len;
        uint8_t *data = read_whole_file(path, &len);
        EXPECT(data != NULL, "cannot read %s", path);
        if (!data) continue;
        for (size_t cut = 0; cut < len; cut += 1 + len / 40) {
            Image img;
            ImageStatus s = image_decode(data, cut, 100000000, 0, 0, &img, why, sizeof(why));
            if (i < 5) EXPECT(s != IMAGE_OK, "%s cut at %zu of %zu decodes", files[i], cut, len);
            image_free(&img);
        }
        uint8_t *copy = mallocCheck(len);
        for (int t = 0; t < 50; t++) {
            memcpy(copy, data, len);
            for (int k = 0; k < 4; k++) copy[8 + rng_below(&r, len - 8)] = (uint8_t)rng_u64(&r);
            Image img;
            ImageStatus s = image_decode(copy, len, 100000000, 0, 0, &img, why, sizeof(why));
            EXPECT(s != IMAGE_OK || (img.rgb && img.w == img.full_w), "%s: damaged decode reports OK without pixels", files[i]);
            image_free(&img);
        }
        free(copy);
        free(data);
    }
    Image img;
    EXPECT(image_decode((const uint8_t *)"II*\0abcdefgh", 12, 100, 0, 0, &img, why, sizeof(why)) == IMAGE_UNSUPPORTED, "TIFF is unsupported");
    EXPECT(image_decode((const uint8_t *)"\xff\xd8", 2, 100, 0, 0, &img, why, sizeof(why)) == IMAGE_UNSUPPORTED, "2 bytes are no JPEG");
}

// A PNG cut after its image data (no IEND chunk): stb_image refuses it with the name of the chunk it reads
// past the end, which is empty; the skip must still say why.
static void test_png_without_iend(void) {
    size_t len;
    uint8_t *data = read_whole_file(IMAGE_DIR "photo.png", &len);
    EXPECT(data && len > 12 && memcmp(data + len - 8, "IEND", 4) == 0, "photo.png does not end with IEND");
    if (!data) return;
    Image img;
    char why[256];
    ImageStatus s = image_decode(data, len - 12, 100000000, 0, 0, &img, why, sizeof(why));
    EXPECT(s == IMAGE_CORRUPT && strlen(why) > strlen("stb_image: "), "status %d, reason '%s'", s, why);
    image_free(&img);
    free(data);
}

int main(void) {
    RUN(test_against_pil);
    RUN(test_dct_scaling);
    RUN(test_random_crop_params);
    RUN(test_center_crop_offset_rounds_half_to_even);
    RUN(test_pixel_limit);
    RUN(test_damaged_images);
    RUN(test_alpha_on_white);
    RUN(test_alpha_on_white_made_pngs);
    RUN(test_png_without_iend);
    TEST_EXIT();
}
