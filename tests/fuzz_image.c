// fuzz_image.c: libFuzzer target for image decoding (JPEG, PNG, GIF, BMP, PNM, WebP) and both transforms
// (make fuzz; tests/run_fuzz.sh). The input's length picks the DCT-scaling hint (the bytes stay a valid
// image file for the seeds); the pixel limit keeps each run small. A decode that reports success must give pixels of the size it reports.
#include <stdlib.h>

#include "../data/image.h"
#include "../data/transform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int keep_side = size & 1 ? 8 : 0;
    Image img;
    char why[256];
    ImageStatus s = image_decode(data, size, 1 << 20, keep_side, size & 1, &img, why, sizeof(why));
    if (s == IMAGE_OK) {
        if (!img.rgb || img.w < 1 || img.h < 1 || img.w > img.full_w || img.h > img.full_h) abort();
        enum { S = 24 };
        uint8_t out[3 * S * S];
        Rng r;
        rng_init(&r, size, RNG_TEST, 0);
        transform_train(&img, S, &r, out);
        transform_eval(&img, S, out);
    }
    image_free(&img);
    return 0;
}
