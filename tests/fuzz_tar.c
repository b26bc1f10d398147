// fuzz_tar.c: libFuzzer target for the tar reader and the webdataset sample index (make fuzz;
// tests/run_fuzz.sh). Any input must index without crashing, hanging or reading out of bounds, and every
// span it reports must lie inside the input and be readable.
#include <stdio.h>
#include <stdlib.h>

#include "../data/tar.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;  // fmemopen refuses an empty buffer
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f) return 0;
    ShardIndex idx = {0};
    tar_index_shard(f, "fuzz", &idx);
    for (int s = 0; s < idx.n; s++) {
        const WdsSample *w = &idx.samples[s];
        const TarSpan spans[3] = {w->image, w->txt, w->cls};
        for (int k = 0; k < 3; k++) {
            if (spans[k].size < 0) continue;
            if (spans[k].offset < 0 || spans[k].offset + spans[k].size > (int64_t)size) abort();
            char *buf = malloc((size_t)spans[k].size + 1);
            if (tar_read_span(f, spans[k], buf) != 0) abort();
            free(buf);
        }
        (void)shard_sample_key(&idx, s);
    }
    shard_index_free(&idx);
    fclose(f);
    return 0;
}
