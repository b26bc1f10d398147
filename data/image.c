// image.c: image bytes -> RGB8, through libjpeg (HAVE_JPEG), stb_image (HAVE_STB) and libwebp (HAVE_WEBP).
// Every decoder reports failure instead of exiting: a bad image is a skipped sample, never a dead run.
#include "image.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../model/utils.h"

#ifdef HAVE_JPEG
#include <setjmp.h>
// clang-format off
#include <jpeglib.h>
#include <jerror.h>
// clang-format on
#endif
#ifdef HAVE_STB
// Only the formats PIL would open for a webdataset image and that have a recognisable signature.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#define STBI_NO_PSD
#define STBI_NO_PIC
#define STBI_NO_TGA
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#ifdef __clang__
// A PNG whose first IDAT chunk is empty makes stb_image copy 0 bytes to z->idata + 0 before anything is allocated
// (stbi__parse_png_file, stbi__getn): NULL + 0 and memcpy(NULL, p, 0), undefined in C, harmless, and what UBSan's
// pointer-overflow and nonnull-attribute checks report under the fuzzer. Those two checks are off for stb's functions.
#pragma clang attribute push(__attribute__((no_sanitize("pointer-overflow", "nonnull-attribute"))), apply_to = function)
#endif
#include <stb/stb_image.h>
#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC diagnostic pop
#endif
#ifdef HAVE_WEBP
#include <webp/decode.h>
#endif

typedef enum { FORMAT_UNKNOWN, FORMAT_JPEG, FORMAT_PNG, FORMAT_WEBP, FORMAT_GIF, FORMAT_BMP, FORMAT_PNM } Format;
static const char *FORMAT_NAMES[] = {"unknown", "JPEG", "PNG", "WebP", "GIF", "BMP", "PNM"};

static Format sniff_format(const uint8_t *d, size_t n) {
    if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return FORMAT_JPEG;
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return FORMAT_PNG;
    if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) return FORMAT_WEBP;
    if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) return FORMAT_GIF;
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return FORMAT_BMP;
    if (n >= 2 && d[0] == 'P' && (d[1] == '5' || d[1] == '6')) return FORMAT_PNM;
    return FORMAT_UNKNOWN;
}

__attribute__((format(printf, 4, 5))) static ImageStatus fail(ImageStatus s, char *why, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return s;
}

// The stored size against the limit, before any pixel is decoded.
static ImageStatus check_size(long w, long h, long max_pixels, char *why, size_t cap) {
    if (w <= 0 || h <= 0) return fail(IMAGE_CORRUPT, why, cap, "image size %ldx%ld", w, h);
    if ((double)w * (double)h > (double)max_pixels)
        return fail(IMAGE_TOO_LARGE, why, cap, "%ldx%ld is over max_image_pixels = %ld", w, h, max_pixels);
    return IMAGE_OK;
}

// Plain malloc: an absurd header must not be able to stop the run through a failed allocation.
static ImageStatus alloc_rgb(Image *img, char *why, size_t cap) {
    img->rgb = malloc((size_t)img->w * (size_t)img->h * 3);
    if (!img->rgb) return fail(IMAGE_TOO_LARGE, why, cap, "cannot allocate %dx%d pixels", img->w, img->h);
    return IMAGE_OK;
}

#ifdef HAVE_JPEG
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int truncated;
} JpegErrors;

static void jpeg_on_error(j_common_ptr cinfo) { longjmp(((JpegErrors *)cinfo->err)->jump, 1); }

// libjpeg only warns about a truncated file (and pads it with grey); PIL refuses such images, so do we.
// Other warnings (e.g. extraneous bytes before a marker) are accepted, as PIL accepts them.
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) ((JpegErrors *)cinfo->err)->truncated = 1;
}

static ImageStatus decode_jpeg(const uint8_t *data, size_t len, long max_pixels, int keep_side, Image *img, char *why,
                               size_t cap) {
    struct jpeg_decompress_struct cinfo;
    JpegErrors err;
    uint8_t *volatile row = NULL;  // CMYK scanline; volatile: freed after a longjmp
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = jpeg_on_error;
    err.pub.emit_message = jpeg_on_message;
    err.truncated = 0;
    if (setjmp(err.jump)) {
        char msg[JMSG_LENGTH_MAX];
        err.pub.format_message((j_common_ptr)&cinfo, msg);
        jpeg_destroy_decompress(&cinfo);
        free(row);
        return fail(IMAGE_CORRUPT, why, cap, "libjpeg: %s", msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    img->full_w = (int)cinfo.image_width, img->full_h = (int)cinfo.image_height;
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    int short_side = img->full_w < img->full_h ? img->full_w : img->full_h;
    cinfo.scale_num = 1, cinfo.scale_denom = 1;
    while (keep_side > 0 && cinfo.scale_denom < 8 && short_side / (int)(2 * cinfo.scale_denom) >= 2 * keep_side)
        cinfo.scale_denom *= 2;
    ImageStatus s = check_size(img->full_w, img->full_h, max_pixels, why, cap);
    if (s != IMAGE_OK) {
        jpeg_destroy_decompress(&cinfo);
        return s;
    }
    jpeg_start_decompress(&cinfo);
    img->w = (int)cinfo.output_width, img->h = (int)cinfo.output_height;
    if ((s = alloc_rgb(img, why, cap)) != IMAGE_OK) {
        jpeg_destroy_decompress(&cinfo);
        return s;
    }
    if (cmyk) row = malloc((size_t)img->w * 4);
    if (cmyk && !row) longjmp(err.jump, 1);
    while (cinfo.output_scanline < cinfo.output_height) {
        uint8_t *dst = img->rgb + (size_t)cinfo.output_scanline * img->w * 3;
        JSAMPROW rows[1] = {cmyk ? row : dst};
        jpeg_read_scanlines(&cinfo, rows, 1);
        // PIL assumes Adobe polarity (inverted CMYK) and converts with
        // R = (255 - K') - (255 - C') * (255 - K') / 255, K' = 255 - stored K, C' = 255 - stored C
        for (int x = 0; cmyk && x < img->w; x++) {
            int nk = row[4 * x + 3];
            for (int ch = 0; ch < 3; ch++) {
                int t = (255 - row[4 * x + ch]) * nk + 128;
                int v = nk - (((t >> 8) + t) >> 8);
                dst[3 * x + ch] = (uint8_t)(v < 0 ? 0 : v);
            }
        }
    }
    if (err.truncated) longjmp(err.jump, 1);  // reported with libjpeg's "Premature end of JPEG file"
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    return IMAGE_OK;
}
#endif

#ifdef HAVE_STB
// RGBA (n pixels) onto white, in place into the first 3n bytes: c' = (c a + 255 (255 - a) + 127) / 255.
static void composite_on_white(uint8_t *px, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned a = px[4 * i + 3];
        for (int ch = 0; ch < 3; ch++) px[3 * i + ch] = (uint8_t)((px[4 * i + ch] * a + 255u * (255u - a) + 127u) / 255u);
    }
}

// stb_image's reason for the last failure. Its message for an unknown PNG chunk is the chunk's type, which is
// empty for the zero bytes it reads past the end of a PNG cut after its image data (no IEND).
static const char *stb_reason(void) {
    const char *reason = stbi_failure_reason();
    return reason && reason[0] ? reason : "unreadable data (a PNG cut short or with a damaged chunk)";
}

static ImageStatus decode_stb(const uint8_t *data, size_t len, long max_pixels, int alpha_on_white, Image *img, char *why, size_t cap) {
    int w, h, comp;
    // stb_image will not even read the header of a PNG over 2^30 bytes, so the limit reads it itself
    if (sniff_format(data, len) == FORMAT_PNG && len >= 24 && memcmp(data + 12, "IHDR", 4) == 0) {
        long pw = (long)data[16] << 24 | data[17] << 16 | data[18] << 8 | data[19];
        long ph = (long)data[20] << 24 | data[21] << 16 | data[22] << 8 | data[23];
        ImageStatus s = check_size(pw, ph, max_pixels, why, cap);
        if (s != IMAGE_OK) return s;
    }
    if (len > 0x7fffffff || !stbi_info_from_memory(data, (int)len, &w, &h, &comp))
        return fail(IMAGE_CORRUPT, why, cap, "stb_image: %s", stb_reason());
    img->full_w = w, img->full_h = h;
    ImageStatus s = check_size(w, h, max_pixels, why, cap);
    if (s != IMAGE_OK) return s;
    // 3 channels requested: grey replicated, alpha dropped, palette expanded, 16-bit reduced to the high byte;
    // 4 when the alpha is to be composited (grey+alpha and palette transparency come as RGBA too)
    int with_alpha = alpha_on_white && (comp == 2 || comp == 4);
    uint8_t *pixels = stbi_load_from_memory(data, (int)len, &w, &h, &comp, with_alpha ? 4 : 3);
    if (!pixels) return fail(IMAGE_CORRUPT, why, cap, "stb_image: %s", stb_reason());
    if (with_alpha) composite_on_white(pixels, (size_t)w * h);
    img->rgb = pixels, img->w = w, img->h = h;  // stb allocates with malloc (STBI_MALLOC default)
    return IMAGE_OK;
}
#endif

#ifdef HAVE_WEBP
static ImageStatus decode_webp(const uint8_t *data, size_t len, long max_pixels, int alpha_on_white, Image *img, char *why, size_t cap) {
    WebPBitstreamFeatures f;
    if (WebPGetFeatures(data, len, &f) != VP8_STATUS_OK) return fail(IMAGE_CORRUPT, why, cap, "libwebp: bad header");
    if (f.has_animation) return fail(IMAGE_UNSUPPORTED, why, cap, "animated WebP");
    img->full_w = img->w = f.width, img->full_h = img->h = f.height;
    ImageStatus s = check_size(f.width, f.height, max_pixels, why, cap);
    if (s != IMAGE_OK || (s = alloc_rgb(img, why, cap)) != IMAGE_OK) return s;
    if (alpha_on_white && f.has_alpha) {
        size_t n = (size_t)img->w * img->h;
        uint8_t *rgba = reallocCheck(img->rgb, 4 * n);
        img->rgb = rgba;
        if (!WebPDecodeRGBAInto(data, len, rgba, 4 * n, img->w * 4)) return fail(IMAGE_CORRUPT, why, cap, "libwebp: cannot decode");
        composite_on_white(rgba, n);
        return IMAGE_OK;
    }
    size_t stride = (size_t)img->w * 3;
    if (!WebPDecodeRGBInto(data, len, img->rgb, stride * img->h, (int)stride))
        return fail(IMAGE_CORRUPT, why, cap, "libwebp: cannot decode");
    return IMAGE_OK;
}
#endif

ImageStatus image_decode(const uint8_t *data, size_t len, long max_pixels, int keep_side, int alpha_on_white, Image *img,
                         char *why, size_t why_cap) {
    memset(img, 0, sizeof(*img));
    why[0] = '\0';
    Format fmt = sniff_format(data, len);
    switch (fmt) {
#ifdef HAVE_JPEG
        case FORMAT_JPEG: return decode_jpeg(data, len, max_pixels, keep_side, img, why, why_cap);
#endif
#ifdef HAVE_WEBP
        case FORMAT_WEBP: return decode_webp(data, len, max_pixels, alpha_on_white, img, why, why_cap);
#endif
#ifdef HAVE_STB
        case FORMAT_PNG:
        case FORMAT_GIF:
        case FORMAT_BMP:
        case FORMAT_PNM:
#ifndef HAVE_JPEG
        case FORMAT_JPEG:  // stb_image's own JPEG decoder when libjpeg is missing
#endif
            return decode_stb(data, len, max_pixels, alpha_on_white, img, why, why_cap);
#endif
        case FORMAT_UNKNOWN: return fail(IMAGE_UNSUPPORTED, why, why_cap, "not a JPEG, PNG, WebP, GIF, BMP or PNM file");
        default: return fail(IMAGE_UNSUPPORTED, why, why_cap, "%s images: this build has no decoder for them", FORMAT_NAMES[fmt]);
    }
}

void image_free(Image *img) {
    free(img->rgb);
    img->rgb = NULL;
}
