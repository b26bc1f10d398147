// transform.h: open_clip's image transforms on a decoded RGB image, written as (3, S, S) uint8.
// Train: torchvision's RandomResizedCrop(S, scale=(0.9, 1.0), ratio=(3/4, 4/3), BICUBIC); eval: Resize(S)
// of the shorter side + CenterCrop(S). The resampling is PIL's Image.resize(size, BICUBIC): a = -0.5,
// support widened by the downscale factor (antialiased), fixed-point coefficients, a horizontal pass
// rounded to uint8 then a vertical pass, so a full-size decode gives PIL's pixels exactly.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "../model/rng.h"
#include "image.h"

typedef struct {
    int x, y, w, h;
} CropBox;

// RandomResizedCrop.get_params on a w x h image: 10 tries of (area 0.9-1.0, log-uniform ratio 3/4-4/3),
// then the centre-crop fallback. Python's round (half to even) where torchvision rounds.
CropBox transform_random_crop(int w, int h, Rng *r);
// out: (3, S, S). The crop is drawn on the stored size (img->full_w/h) and mapped onto the decoded pixels.
void transform_train(const Image *img, int S, Rng *r, uint8_t *out);
void transform_eval(const Image *img, int S, uint8_t *out);
// The size transform_eval resizes a W x H image to (torchvision's Resize(S): the shorter side S, the longer
// int(S * long / short)). Returns 0 when the longer side would not fit in an int (a strip millions of pixels by
// one; PIL cannot make such an image either): such an image cannot be transformed.
int transform_eval_size(int W, int H, int S, int *new_w, int *new_h);

// PIL's resize of an RGB region (src_w x src_h pixels, rows `stride` bytes apart) to out_w x out_h with
// box = (x0, y0, x1, y1) in region coordinates; the filter never reads outside the region. Only the
// window [win_x, win_x + win_w) x [win_y, win_y + win_h) of the output is made, written planar
// (3, win_h, win_w) into out.
void resize_bicubic(const uint8_t *src, int src_w, int src_h, size_t stride, const float box[4], int out_w, int out_h,
                    int win_x, int win_y, int win_w, int win_h, uint8_t *out);
