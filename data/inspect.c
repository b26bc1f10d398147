// inspect.c: --inspect-data. Shards in spec order, samples in shard order, each judged by sample_load as
// the loader judges it (decoded, caption tokenized); the decoding of a chunk of samples runs in parallel.
#include "inspect.h"

#include <stdio.h>
#include <string.h>

#include "../model/utils.h"
#include "sample.h"
#include "shards.h"

#define CHUNK 256  // samples decoded in parallel before their lines are printed

typedef struct {
    SampleResult result;
    char *caption;  // one line: tabs and newlines made spaces
} Line;

// Decode samples [first, first + n) of the shard into lines, one thread per sample (each with its own FILE).
static void judge_chunk(const char *path, const ShardIndex *idx, int first, int n, const SampleParams *p, Line *lines) {
#pragma omp parallel
    {
        FILE *f = fopen(path, "rb");
        SampleScratch scratch = {0};
        int32_t *tokens = mallocCheck((size_t)p->context_length * sizeof(int32_t));
#pragma omp for schedule(dynamic)
        for (int k = 0; k < n; k++) {
            Line *ln = &lines[k];
            if (!f) {
                ln->result = (SampleResult){SKIP_CORRUPT_IMAGE, 0, 0, -1, "cannot reopen the shard"};
                continue;
            }
            ln->result = sample_load(f, &idx->samples[first + k], p, NULL, &scratch, NULL, tokens);
            const char *text = scratch.caption && ln->result.status == SAMPLE_OK ? scratch.caption : "";
            ln->caption = strdup(text);
            if (!ln->caption) fatal("strdup failed: out of host memory");
            for (char *q = ln->caption; *q; q++)
                if (*q == '\t' || *q == '\n' || *q == '\r') *q = ' ';
        }
        if (f) fclose(f);
        sample_scratch_free(&scratch);
        free(tokens);
    }
}

int inspect_data_main(const Config *c, const char *spec, long limit) {
    ShardList shards;
    shards_parse(spec, &shards);
    Tokenizer *tok = tokenizer_load(NULL);
    SampleParams params = {tok, c->image_size, c->context_length, c->max_image_pixels, c->image_alpha, 0};
    ShardIndex idx = {0};
    Line *lines = callocCheck(CHUNK, sizeof(Line));
    long samples = 0, skipped = 0, bad_shards = 0, skips[SAMPLE_STATUSES] = {0};
    for (int s = 0; s < shards.n && (limit <= 0 || samples < limit); s++) {
        const char *path = shards.paths[s];
        FILE *f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "warning: shard %s: cannot open: %s\n", path, strerror(errno));
            bad_shards++;
            continue;
        }
        tar_index_shard(f, path, &idx);
        fclose(f);
        if (idx.error[0]) {
            fprintf(stderr, "warning: shard %s: %s; using the %d samples before it\n", path, idx.error, idx.n);
            bad_shards++;
        }
        for (int first = 0; first < idx.n && (limit <= 0 || samples < limit); first += CHUNK) {
            int n = idx.n - first < CHUNK ? idx.n - first : CHUNK;
            judge_chunk(path, &idx, first, n, &params, lines);
            for (int k = 0; k < n; k++) {
                Line *ln = &lines[k];
                const char *key = shard_sample_key(&idx, first + k);
                int shown = limit <= 0 || samples < limit;
                if (shown && ln->result.status == SAMPLE_OK) {
                    printf("%s\t%dx%d\t%s\n", key, ln->result.width, ln->result.height, ln->caption);
                    samples++;
                } else if (shown) {
                    fprintf(stderr, "skipped %s (%s): %s: %s\n", key, path, SAMPLE_STATUS_NAMES[ln->result.status], ln->result.why);
                    skipped++, skips[ln->result.status]++;
                }
                free(ln->caption);
                ln->caption = NULL;
            }
        }
    }
    printf("samples: %ld skipped: %ld", samples, skipped);
    for (int r = 1; r < SAMPLE_STATUSES; r++) printf(" %s: %ld", SAMPLE_STATUS_NAMES[r], skips[r]);
    printf(" bad_shards: %ld\n", bad_shards);
    free(lines);
    shard_index_free(&idx);
    tokenizer_free(tok);
    shards_free(&shards);
    return samples > 0 ? 0 : 1;
}
