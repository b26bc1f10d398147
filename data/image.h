// image.h: decoding the image of a sample to RGB8, as open_clip's webdataset pipeline does with PIL
// (.convert("RGB")): alpha dropped, grey and palette expanded, CMYK converted, 16-bit reduced to 8.
// Optionally (alpha_on_white) transparent pixels are composited onto white instead: PIL's convert drops
// alpha, which turns black-on-transparent line art (common in clip art and icons) into black squares.
// JPEG through libjpeg(-turbo), PNG/GIF/BMP/PNM through stb_image, WebP through libwebp; a format whose
// library is not in the build is reported as unsupported. The format comes from the bytes, not the name.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *rgb;        // (h, w, 3)
    int w, h;            // as decoded
    int full_w, full_h;  // as stored; larger than w, h when a JPEG was decoded at 1/2, 1/4 or 1/8 scale
} Image;

typedef enum { IMAGE_OK, IMAGE_CORRUPT, IMAGE_TOO_LARGE, IMAGE_UNSUPPORTED } ImageStatus;

// Decode data[0..len) into img (img->rgb is malloc'ed; free with image_free, also after a failure).
// max_pixels: larger images are refused from their header, before any pixel is decoded.
// keep_side: a JPEG whose shorter side is at least 2 * keep_side is decoded in the DCT domain at the
// smallest scale 1/2^k (k <= 3) whose shorter side stays >= 2 * keep_side; 0 = always full size.
// alpha_on_white: 0 = drop alpha (PIL parity), 1 = composite onto white.
// On failure `why` says what went wrong (from the library where it has a message).
ImageStatus image_decode(const uint8_t *data, size_t len, long max_pixels, int keep_side, int alpha_on_white, Image *img,
                         char *why, size_t why_cap);
void image_free(Image *img);
