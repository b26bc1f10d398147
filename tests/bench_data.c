// bench_data.c: data loader throughput (make bench-data). Decode + RandomResizedCrop + bicubic to 224 px
// per image, for JPEG (quality 90) and PNG inputs of web size (sides 256-512 px, photo-like content made
// here), on 1, 2, 4, ... threads up to the core count (at most 16); then the whole loader (tar shard,
// tokenizer, batches of 64) with as many decode threads. Prints a table; the numbers go to
// docs/benchmarks.md ("Data loader").
#include <pthread.h>
#include <unistd.h>

#include "../data/image.h"
#include "../data/loader.h"
#include "../data/transform.h"
#include "../model/rng.h"
#include "../model/utils.h"
#include "data_fixtures.h"

#ifdef HAVE_JPEG
#include <jpeglib.h>
#endif

enum { N_IMAGES = 48, S = 224, MAX_THREADS = 16 };


// Smooth colour gradients with texture and noise: compresses like a photo, not like a flat test card.
static uint8_t *photo(int w, int h, Rng *r) {
    uint8_t *p = mallocCheck((size_t)w * h * 3);
    double fx = 20 + 60 * rng_uniform(r), fy = 20 + 60 * rng_uniform(r);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                double v = 128 + 90 * sin(x / fx + c + y / (fy * (c + 1))) + 40 * sin(x * 0.7 + y * 0.3 * c) + (rng_uniform(r) - 0.5) * 30;
                p[((size_t)y * w + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    return p;
}

#ifdef HAVE_JPEG
static Bytes encode_jpeg(const uint8_t *rgb, int w, int h) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &out, &len);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h, c.input_components = 3, c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    Bytes b = {mallocCheck(len), len, len};
    memcpy(b.data, out, len);
    free(out);
    return b;
}
#endif

static Bytes images[2][N_IMAGES];  // [0] JPEG, [1] PNG
static const char *FORMATS[2] = {"jpeg", "png"};

typedef struct {
    int format, thread, threads;
    double seconds, cpu_seconds;
    long done;
} Job;

// CPU time of the calling thread: images per CPU-second do not depend on what else the machine runs.
static double thread_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Each thread decodes and transforms its share of the images, round after round, for `seconds`.
static void *decode_loop(void *arg) {
    Job *j = arg;
    uint8_t *out = mallocCheck((size_t)3 * S * S);
    char why[256];
    Rng r;
    rng_init(&r, 1, RNG_AUGMENT, (uint64_t)j->thread);
    double t0 = now_seconds(), c0 = thread_cpu_seconds();
    for (long k = j->thread; now_seconds() - t0 < j->seconds; k += j->threads) {
        const Bytes *b = &images[j->format][k % N_IMAGES];
        Image img;
        if (image_decode(b->data, b->len, 100000000, S, 0, &img, why, sizeof(why)) != IMAGE_OK) fatal("bench image: %s", why);
        transform_train(&img, S, &r, out);
        image_free(&img);
        j->done++;
    }
    j->cpu_seconds = thread_cpu_seconds() - c0;
    free(out);
    return NULL;
}

// Images per second (wall clock) of `threads` threads together; *per_cpu_second: per CPU-second of a thread.
static double decode_rate(int format, int threads, double seconds, double *per_cpu_second) {
    pthread_t t[MAX_THREADS];
    Job jobs[MAX_THREADS];
    double t0 = now_seconds();
    for (int i = 0; i < threads; i++) {
        jobs[i] = (Job){format, i, threads, seconds, 0, 0};
        if (pthread_create(&t[i], NULL, decode_loop, &jobs[i])) fatal("pthread_create");
    }
    long done = 0;
    double cpu = 0;
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL), done += jobs[i].done, cpu += jobs[i].cpu_seconds;
    *per_cpu_second = done / cpu;
    return done / (now_seconds() - t0);
}

// CPU time of the whole process (all threads).
static double process_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// The whole loader on one shard of the bench images (both formats), 4 rounds of them: images per second,
// and *per_cpu_second per CPU-second of all its threads (assembler, decoders, tokenizer).
static double loader_rate(const char *shard, int workers, double seconds, double *per_cpu_second) {
    Config c;
    config_defaults(&c);
    c.image_size = S, c.context_length = 77, c.data_workers = workers, c.shuffle_buffer = 100;
    Loader *l = loader_open(&c, shard, 1, 64, 0, 1);
    Batch b;
    loader_next(l, &b);  // warm-up: threads started, first batch in flight
    long n = 0;
    double t0 = now_seconds(), c0 = process_cpu_seconds();
    while (now_seconds() - t0 < seconds) n += loader_next(l, &b);
    double rate = n / (now_seconds() - t0);
    *per_cpu_second = n / (process_cpu_seconds() - c0);
    loader_close(l);
    return rate;
}

// Thread counts 1, 2, 4, ... and the maximum itself.
static int next_count(int t, int max) { return t == max ? max + 1 : t * 2 <= max ? t * 2 : max; }

int main(void) {
    Rng r;
    rng_init(&r, 2024, RNG_TEST, 0);
    double sum_pixels = 0;
    for (int i = 0; i < N_IMAGES; i++) {
        int w = 256 + (int)rng_below(&r, 257), h = 256 + (int)rng_below(&r, 257);
        uint8_t *rgb = photo(w, h, &r);
#ifdef HAVE_JPEG
        images[0][i] = encode_jpeg(rgb, w, h);
#endif
        images[1][i] = encode_png(rgb, w, h, 3);
        sum_pixels += (double)w * h;
        free(rgb);
    }
    double kb[2] = {0, 0};
    for (int f = 0; f < 2; f++)
        for (int i = 0; i < N_IMAGES; i++) kb[f] += images[f][i].len / 1024.0 / N_IMAGES;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int max_threads = cores < MAX_THREADS ? (int)cores : MAX_THREADS;
    printf("data loader benchmark: %d images per format, sides 256-512 px (mean %.0f kpixel), train transform to %d px, %ld cores\n",
           N_IMAGES, sum_pixels / N_IMAGES / 1000, S, cores);
    printf("mean file size: jpeg q90 %.0f KB, png %.0f KB\n\n", kb[0], kb[1]);
    printf("%-8s %-8s %12s %14s %16s\n", "format", "threads", "images/s", "per thread", "per CPU-second");
    for (int f = 0; f < 2; f++) {
#ifndef HAVE_JPEG
        if (f == 0) {
            printf("jpeg     (no libjpeg in this build)\n");
            continue;
        }
#endif
        for (int t = 1; t <= max_threads; t = next_count(t, max_threads)) {
            double per_cpu, rate = decode_rate(f, t, 3.0, &per_cpu);
            printf("%-8s %-8d %12.0f %14.0f %16.0f\n", FORMATS[f], t, rate, rate / t, per_cpu);
        }
    }
    if (access("data/bpe_simple_vocab_16e6.txt.gz", R_OK) != 0 && !getenv("TRAIN_CLIP_BPE")) {
        printf("\nloader: skipped (no tokenizer vocabulary: scripts/get_vocab.sh)\n");
        return 0;
    }
    char shard[] = "/tmp/bench_data_XXXXXX.tar";
    int fd = mkstemps(shard, 4);
    if (fd < 0) fatal("mkstemps: %s", strerror(errno));
    FILE *tf = fdopen(fd, "wb");
    for (int round = 0; round < 4; round++)
        for (int i = 0; i < N_IMAGES; i++)
            for (int f = 0; f < 2; f++) {
                char name[64], caption[128];
                int k = (round * N_IMAGES + i) * 2 + f;
                snprintf(caption, sizeof(caption), "a photo of pattern number %d with smooth colour bands", k);
                snprintf(name, sizeof(name), "%09d.%s", k, f == 0 ? "jpg" : "png");
                tar_member(tf, name, images[f][i].data, images[f][i].len);
                snprintf(name, sizeof(name), "%09d.txt", k);
                tar_member(tf, name, caption, strlen(caption));
            }
    static const char end[1024];
    fwriteCheck(end, 1, sizeof(end), tf);
    fcloseCheck(tf);
    printf("\nwhole loader (jpeg and png alternating, tokenizer, shuffle buffer 100, batches of 64)\n");
    printf("%-8s %12s %16s\n", "workers", "images/s", "per CPU-second");
    for (int w = 1; w <= max_threads; w = next_count(w, max_threads)) {
        double per_cpu, rate = loader_rate(shard, w, 4.0, &per_cpu);
        printf("%-8d %12.0f %16.0f\n", w, rate, per_cpu);
    }
    unlink(shard);
    return 0;
}
