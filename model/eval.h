// eval.h: evaluation of a CLIP model (CPU or GPU, through clip_model.h): zero-shot classification
// (class names x prompt templates -> averaged, normalised class embeddings; top-1/top-5 on a labelled set)
// and retrieval on validation pairs (image->text and text->image R@1/5/10, and the contrastive loss).
#pragma once
#include <stdint.h>

#include "../data/loader.h"
#include "../data/tokenizer.h"
#include "clip_model.h"

typedef struct {
    double top1, top5;  // accuracies in [0, 1]
    double per_class;   // mean over classes of each class's top-1 accuracy (balanced; chance = 1/classes)
    double majority;    // share of the most frequent class: the accuracy of always guessing it
    long n;             // labelled images evaluated
    long unlabelled;    // images not evaluated: no `cls` member, or one that is not a class index (negative, not a number)
} ZeroShotResult;

typedef struct {
    double image_to_text[3], text_to_image[3];  // recall at 1, 5, 10
    double loss;                                 // each batch's contrastive loss, averaged over pairs
    long n;                                      // pairs evaluated
} RetrievalResult;

// Read a text file of one entry per line (class names, or templates with "{}" for the class name).
// Blank (or whitespace-only) lines and lines starting with '#' are skipped. Stops with file:line on an error.
char **read_lines(const char *path, int *count);
// The same for class names, numbered by their order: a blank line between two names is an error (file:line).
char **read_classnames(const char *path, int *count);
void free_lines(char **lines, int count);
// Class embeddings (C, E), each the normalised mean of its normalised prompt embeddings: every template
// filled with every alternative name of the class (a class line may list several, "cat|kitten|tabby").
// A template without "{}" gets the class name appended after a space.
float *zeroshot_classifier(ClipModel *m, const Tokenizer *tok, char **classnames, int C, char **templates, int T);
// The metrics on given normalised features: zero-shot counts are ADDED to r (top1/top5 as hit counts, n as
// images, unlabelled counting labels < 0) and, per class, to seen[C] and hit[C] (top-1 hits); eval_zeroshot turns
// them into rates.
// Retrieval recall fills r's recalls and n.
void zeroshot_accuracy(ZeroShotResult *r, long *seen, long *hit, const float *img_n, const int32_t *labels, int n,
                       const float *classifier, int C, int E);
void retrieval_recall(RetrievalResult *r, const float *img_n, const float *txt_n, long n, int E);
// Top-1/top-5 over the labelled images of an eval loader (labels < 0 are skipped; labels >= C are errors).
ZeroShotResult eval_zeroshot(ClipModel *m, const float *classifier, int C, Loader *loader);
// Retrieval and loss over up to max_pairs pairs of an eval loader (0 = all).
RetrievalResult eval_retrieval(ClipModel *m, Loader *loader, long max_pairs);
