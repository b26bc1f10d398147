// rng.h: the one random number generator of train_clip (xoshiro256** seeded through splitmix64).
// Its whole state is four words, so checkpoints save it and a resumed run draws the same numbers.
// Streams are derived from (seed, purpose, index) so results never depend on thread counts.
#pragma once
#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} Rng;

static inline uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

// A generator for one independent stream: e.g. rng_init(seed, RNG_INIT, tensor_index).
static inline void rng_init(Rng *r, uint64_t seed, uint64_t purpose, uint64_t index) {
    uint64_t x = seed ^ (purpose * 0xd1342543de82ef95ULL) ^ (index * 0x2545f4914f6cdd1dULL);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rng_u64(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

// Uniform in [0, 1) with 53 bits.
static inline double rng_uniform(Rng *r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

// Uniform integer in [0, n).
static inline uint64_t rng_below(Rng *r, uint64_t n) { return n ? (uint64_t)(rng_uniform(r) * (double)n) % n : 0; }

// Standard normal (Box-Muller, one value per call; simple and reproducible).
static inline double rng_normal(Rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// Purposes, so that streams for different jobs never coincide.
enum { RNG_INIT = 1, RNG_SYNTHETIC = 2, RNG_DATA = 3, RNG_AUGMENT = 4, RNG_TEST = 5 };
