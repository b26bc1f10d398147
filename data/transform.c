// transform.c: RandomResizedCrop / Resize + CenterCrop as torchvision on PIL images, and PIL's bicubic
// resampling (Pillow's libImaging/Resample.c algorithm, reimplemented) that both use.
#include "transform.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "../model/utils.h"

#define PRECISION_BITS (32 - 8 - 2)  // PIL's fixed point for 8-bit images: 22 fraction bits

// Keys' cubic convolution with a = -0.5 (PIL's BICUBIC), support 2.
static double bicubic(double x) {
    const double a = -0.5;
    if (x < 0) x = -x;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

// The taps of one axis for output indices [first, first + count): for each, the first input index, the
// number of taps and ksize fixed-point weights (PIL's precompute_coeffs + normalize_coeffs_8bpc).
typedef struct {
    int ksize;
    int *start, *len;  // (count)
    int32_t *k;        // (count, ksize)
} Taps;

static void taps_init(Taps *t, int in_size, float in0, float in1, int out_size, int first, int count) {
    double scale = (double)(in1 - in0) / out_size;  // in1 - in0 in float, as PIL
    double filterscale = scale < 1 ? 1 : scale;
    double support = 2.0 * filterscale;
    t->ksize = (int)ceil(support) * 2 + 1;
    t->start = mallocCheck((size_t)count * sizeof(int));
    t->len = mallocCheck((size_t)count * sizeof(int));
    t->k = mallocCheck((size_t)count * t->ksize * sizeof(int32_t));
    double ss = 1.0 / filterscale;
    double *w = mallocCheck((size_t)t->ksize * sizeof(double));
    for (int i = 0; i < count; i++) {
        double center = in0 + (first + i + 0.5) * scale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        int n = xmax - xmin;
        double ww = 0;
        for (int x = 0; x < n; x++) ww += w[x] = bicubic((x + xmin - center + 0.5) * ss);
        int32_t *k = t->k + (size_t)i * t->ksize;
        for (int x = 0; x < t->ksize; x++) {
            double v = x < n ? (ww != 0 ? w[x] / ww : w[x]) : 0;
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
        }
        t->start[i] = xmin, t->len[i] = n > 0 ? n : 0;
    }
    free(w);
}

static void taps_free(Taps *t) {
    free(t->start);
    free(t->len);
    free(t->k);
}

static inline uint8_t clip8(int32_t v) {
    v >>= PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

// One separable pass over interleaved RGB input. Horizontal: each of `lines` rows (in_line bytes apart)
// is filtered along x; vertical: each output row y gathers rows start[y].. of `lines` columns. The output
// element (line or y, x or column, channel) goes to out[a * out_a + b * out_b + ch * out_ch], which writes
// either interleaved intermediate rows or the final planar image.
static void pass_horizontal(const uint8_t *in, size_t in_line, int lines, const Taps *t, int n_out, int shift, uint8_t *out,
                            size_t out_a, size_t out_b, size_t out_ch) {
    for (int r = 0; r < lines; r++)
        for (int x = 0; x < n_out; x++) {
            const int32_t *k = t->k + (size_t)x * t->ksize;
            const uint8_t *p = in + (size_t)r * in_line + (size_t)(t->start[x] - shift) * 3;
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int i = 0; i < t->len[x]; i++) s0 += p[3 * i] * k[i], s1 += p[3 * i + 1] * k[i], s2 += p[3 * i + 2] * k[i];
            uint8_t *o = out + r * out_a + x * out_b;
            o[0] = clip8(s0), o[out_ch] = clip8(s1), o[2 * out_ch] = clip8(s2);
        }
}

static void pass_vertical(const uint8_t *in, size_t in_line, int lines, const Taps *t, int n_out, int shift, uint8_t *out,
                          size_t out_a, size_t out_b, size_t out_ch) {
    for (int y = 0; y < n_out; y++) {
        const int32_t *k = t->k + (size_t)y * t->ksize;
        const uint8_t *row = in + (size_t)(t->start[y] - shift) * in_line;
        for (int c = 0; c < lines; c++) {
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int i = 0; i < t->len[y]; i++) {
                const uint8_t *p = row + (size_t)i * in_line + (size_t)c * 3;
                s0 += p[0] * k[i], s1 += p[1] * k[i], s2 += p[2] * k[i];
            }
            uint8_t *o = out + y * out_a + c * out_b;
            o[0] = clip8(s0), o[out_ch] = clip8(s1), o[2 * out_ch] = clip8(s2);
        }
    }
}

void resize_bicubic(const uint8_t *src, int src_w, int src_h, size_t stride, const float box[4], int out_w, int out_h,
                    int win_x, int win_y, int win_w, int win_h, uint8_t *out) {
    Taps hx, vy;
    taps_init(&hx, src_w, box[0], box[2], out_w, win_x, win_w);
    taps_init(&vy, src_h, box[1], box[3], out_h, win_y, win_h);
    size_t plane = (size_t)win_w * win_h;
    // Pillow (checked against 13.0) runs the vertical pass first when the height shrinks more than twice
    // as much as the width; the uint8 rounding between passes makes the order visible in the result.
    if (src_h >= out_h && src_h - out_h > 2 * (src_w - out_w)) {
        int col0 = hx.start[0], col1 = hx.start[win_w - 1] + hx.len[win_w - 1], ncols = col1 > col0 ? col1 - col0 : 0;
        uint8_t *tmp = mallocCheck((size_t)win_h * ncols * 3);
        pass_vertical(src + (size_t)col0 * 3, stride, ncols, &vy, win_h, 0, tmp, (size_t)ncols * 3, 3, 1);
        pass_horizontal(tmp, (size_t)ncols * 3, win_h, &hx, win_w, col0, out, win_w, 1, plane);
        free(tmp);
    } else {
        int row0 = vy.start[0], row1 = vy.start[win_h - 1] + vy.len[win_h - 1], nrows = row1 > row0 ? row1 - row0 : 0;
        uint8_t *tmp = mallocCheck((size_t)nrows * win_w * 3);
        pass_horizontal(src + (size_t)row0 * stride, stride, nrows, &hx, win_w, 0, tmp, (size_t)win_w * 3, 3, 1);
        pass_vertical(tmp, (size_t)win_w * 3, win_w, &vy, win_h, row0, out, win_w, 1, plane);
        free(tmp);
    }
    taps_free(&hx);
    taps_free(&vy);
}

CropBox transform_random_crop(int width, int height, Rng *r) {
    const double ratio_lo = 3.0 / 4.0, ratio_hi = 4.0 / 3.0;
    double area = (double)width * height, log_lo = log(ratio_lo), log_hi = log(ratio_hi);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * (0.9 + 0.1 * rng_uniform(r));
        double aspect = exp(log_lo + (log_hi - log_lo) * rng_uniform(r));
        int w = (int)nearbyint(sqrt(target * aspect)), h = (int)nearbyint(sqrt(target / aspect));
        if (0 < w && w <= width && 0 < h && h <= height) {
            int y = (int)rng_below(r, (uint64_t)(height - h + 1));
            int x = (int)rng_below(r, (uint64_t)(width - w + 1));
            return (CropBox){x, y, w, h};
        }
    }
    int w = width, h = height;  // fallback: the largest centred crop within the ratio range
    double in_ratio = (double)width / height;
    if (in_ratio < ratio_lo) h = (int)nearbyint(w / ratio_lo);
    else if (in_ratio > ratio_hi) w = (int)nearbyint(h * ratio_hi);
    return (CropBox){(width - w) / 2, (height - h) / 2, w, h};
}

void transform_train(const Image *img, int S, Rng *r, uint8_t *out) {
    CropBox c = transform_random_crop(img->full_w, img->full_h, r);
    // the crop in decoded pixels (the same box when the image was decoded at full size)
    double sx = (double)img->w / img->full_w, sy = (double)img->h / img->full_h;
    double x0 = c.x * sx, x1 = (c.x + c.w) * sx, y0 = c.y * sy, y1 = (c.y + c.h) * sy;
    int rx0 = (int)floor(x0), ry0 = (int)floor(y0), rx1 = (int)ceil(x1), ry1 = (int)ceil(y1);
    if (rx1 > img->w) rx1 = img->w;
    if (ry1 > img->h) ry1 = img->h;
    float box[4] = {(float)(x0 - rx0), (float)(y0 - ry0), (float)(x1 - rx0), (float)(y1 - ry0)};
    const uint8_t *region = img->rgb + ((size_t)ry0 * img->w + rx0) * 3;
    resize_bicubic(region, rx1 - rx0, ry1 - ry0, (size_t)img->w * 3, box, S, S, 0, 0, S, S, out);
}

int transform_eval_size(int W, int H, int S, int *new_w, int *new_h) {
    double longer = (double)S * (W <= H ? H : W) / (W <= H ? W : H);
    if (longer > INT_MAX) return 0;
    *new_w = W <= H ? S : (int)longer, *new_h = W <= H ? (int)longer : S;
    return 1;
}

void transform_eval(const Image *img, int S, uint8_t *out) {
    int new_w, new_h;
    if (!transform_eval_size(img->full_w, img->full_h, S, &new_w, &new_h))
        fatal("transform_eval: %dx%d resized to %d px on its shorter side is over 2^31 px long", img->full_w, img->full_h, S);
    // CenterCrop(S): int(round((new - S) / 2)), Python's round
    int left = (int)nearbyint((new_w - S) / 2.0), top = (int)nearbyint((new_h - S) / 2.0);
    float box[4] = {0, 0, (float)img->w, (float)img->h};
    resize_bicubic(img->rgb, img->w, img->h, (size_t)img->w * 3, box, new_w, new_h, left, top, S, S, out);
}
