// synthetic.h: the built-in data source. Sample i of the pool (deterministic from seed and i) is a
// picture of 1-3 coloured shapes on a noisy background with the caption naming them ("red disc
// blue square"), so a model can learn it; used before real data exists and as the benchmark source.
#pragma once
#include <stdint.h>

// Writes image (3, S, S) uint8 and tokens (T): SOT, the words' ids, EOT, 0 padding.
void synthetic_sample(uint64_t seed, uint64_t index, int S, int T, int vocab_size, uint8_t *image, int32_t *tokens);
// The caption of sample i as text (for --inspect-data and debugging).
void synthetic_caption(uint64_t seed, uint64_t index, int S, char *buf, int cap);
