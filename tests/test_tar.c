// test_tar.c: the tar reader and sample index against shards written by Python's tarfile (GNU, PAX, ustar),
// webdataset's TarWriter and damaged copies (tests/fixtures/shards, made by scripts/make_test_shards.py);
// the shard spec parser; the shard plan (rank split, epochs, resampling, shuffle-buffer order).
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "../data/shards.h"
#include "../model/rng.h"
#include "../data/tar.h"
#include "data_fixtures.h"
#include "test.h"

// Index the shard and check it against its manifest lines: keys in order, which members exist, captions.
static void check_shard(const char *shard, const ManifestLine *lines, int n_lines) {
    char path[256];
    snprintf(path, sizeof(path), SHARD_DIR "%s", shard);
    FILE *f = fopen(path, "rb");
    EXPECT(f != NULL, "cannot open %s", path);
    if (!f) return;
    ShardIndex idx = {0};
    tar_index_shard(f, path, &idx);
    int s = 0, checked = 0;
    for (int i = 0; i < n_lines; i++) {
        const ManifestLine *m = &lines[i];
        if (strcmp(m->shard, shard) != 0) continue;
        checked++;
        if (strcmp(m->status, "shard_error") == 0) {
            EXPECT((idx.error[0] != 0) == m->width, "%s: error '%s', expected %s", shard, idx.error, m->width ? "one" : "none");
            continue;
        }
        EXPECT(s < idx.n, "%s: %d samples, the manifest has more (%s)", shard, idx.n, m->key);
        if (s >= idx.n) break;
        const WdsSample *ws = &idx.samples[s];
        EXPECT(strcmp(shard_sample_key(&idx, s), m->key) == 0, "%s: sample %d key '%s', expected '%s'", shard, s, shard_sample_key(&idx, s), m->key);
        // a sample without a caption is reported as such whatever else it lacks
        int has_txt = strcmp(m->status, "missing_caption") != 0, has_image = strcmp(m->status, "missing_image") != 0;
        EXPECT((ws->txt.size >= 0) == has_txt, "%s/%s: txt member presence", shard, m->key);
        EXPECT(!has_txt || (ws->image.size >= 0) == has_image, "%s/%s: image member presence", shard, m->key);
        if (strcmp(m->status, "ok") == 0) {
            char *text = mallocCheck((size_t)ws->txt.size + 1);
            EXPECT(tar_read_span(f, ws->txt, text) == 0, "%s/%s: caption read", shard, m->key);
            EXPECT(strcmp(text, m->caption) == 0, "%s/%s: caption '%s', expected '%s'", shard, m->key, text, m->caption);
            free(text);
            uint8_t head[3];
            TarSpan first = {ws->image.offset, 2};
            EXPECT(tar_read_span(f, first, head) == 0 && ws->image.size > 2, "%s/%s: image read", shard, m->key);
        }
        s++;
    }
    EXPECT(checked > 0, "%s: not in the manifest", shard);
    EXPECT(s == idx.n, "%s: %d samples, the manifest has %d", shard, idx.n, s);
    shard_index_free(&idx);
    fclose(f);
}

static ManifestLine *manifest;
static int manifest_n;

static void test_formats_read_back(void) {
    const char *shards[] = {"gnu.tar", "pax.tar", "ustar.tar", "wds.tar", "base256.tar", "longlink.tar", "odd.tar", "bad.tar"};
    EXPECT(manifest_n > 0, "no manifest: run scripts/make_test_shards.py");
    for (int i = 0; i < (int)(sizeof(shards) / sizeof(shards[0])); i++) check_shard(shards[i], manifest, manifest_n);
}

static void test_damaged_shards_end_early(void) {
    check_shard("truncated.tar", manifest, manifest_n);
    check_shard("badchecksum.tar", manifest, manifest_n);
}

// Every prefix of a good shard: never more samples than the whole, keys a prefix of the whole's, an
// error unless the cut is past the end-of-archive block, and every span inside the cut.
static void test_every_truncation(void) {
    size_t len;
    uint8_t *tar = read_whole_file(SHARD_DIR "pax.tar", &len);
    EXPECT(tar != NULL, "cannot read pax.tar");
    if (!tar) return;
    ShardIndex full = {0}, cut = {0};
    FILE *f = fmemopen(tar, len, "rb");
    tar_index_shard(f, "pax.tar", &full);
    fclose(f);
    int64_t end_of_data = 0;
    for (int s = 0; s < full.n; s++) {
        const WdsSample *w = &full.samples[s];
        int64_t e = w->image.offset + w->image.size > w->txt.offset + w->txt.size ? w->image.offset + w->image.size : w->txt.offset + w->txt.size;
        if (e > end_of_data) end_of_data = e;
    }
    for (size_t n = 1; n < len; n += 37) {
        f = fmemopen(tar, n, "rb");
        tar_index_shard(f, "cut", &cut);
        fclose(f);
        EXPECT(cut.n <= full.n, "cut at %zu: %d samples > %d", n, cut.n, full.n);
        EXPECT(cut.error[0] || (int64_t)n > end_of_data + 512, "cut at %zu inside the data reads as a clean end", n);
        for (int s = 0; s < cut.n; s++) {
            EXPECT(strcmp(shard_sample_key(&cut, s), shard_sample_key(&full, s)) == 0 || s == cut.n - 1, "cut at %zu: key %d differs", n, s);
            const WdsSample *w = &cut.samples[s];
            EXPECT(w->image.offset + w->image.size <= (int64_t)n && w->txt.offset + w->txt.size <= (int64_t)n, "cut at %zu: span past the end", n);
        }
    }
    shard_index_free(&full);
    shard_index_free(&cut);
    free(tar);
}

// Random byte damage must end the shard cleanly, never read out of bounds (ASan build) or hang.
static void test_random_damage(void) {
    size_t len;
    uint8_t *tar = read_whole_file(SHARD_DIR "gnu.tar", &len);
    EXPECT(tar != NULL, "cannot read gnu.tar");
    if (!tar) return;
    uint8_t *copy = mallocCheck(len);
    Rng r;
    rng_init(&r, (uint64_t)time(NULL), RNG_TEST, 0);
    ShardIndex idx = {0};
    for (int trial = 0; trial < 300; trial++) {
        memcpy(copy, tar, len);
        for (int k = 0; k < 1 + trial % 8; k++) copy[rng_below(&r, len)] = (uint8_t)rng_u64(&r);
        FILE *f = fmemopen(copy, len, "rb");
        tar_index_shard(f, "damaged", &idx);
        fclose(f);
        for (int s = 0; s < idx.n; s++) {
            const WdsSample *w = &idx.samples[s];
            EXPECT(w->txt.size < 0 || w->txt.offset + w->txt.size <= (int64_t)len, "trial %d: span past the end", trial);
            EXPECT(w->image.size < 0 || w->image.offset + w->image.size <= (int64_t)len, "trial %d: span past the end", trial);
        }
    }
    shard_index_free(&idx);
    free(copy);
    free(tar);
}

// A shard that is not a tar at all (compressed, or the Git LFS pointer a clone without git-lfs leaves) says
// what it is, instead of "corrupt header at offset 0 (bad checksum)" or "truncated".
static void test_not_a_tar(void) {
    size_t len;
    uint8_t *tar = read_whole_file(SHARD_DIR "gnu.tar", &len);
    EXPECT(tar != NULL, "cannot read gnu.tar");
    if (!tar) return;
    z_stream z = {0};  // gzip it, as `tar czf` or `gzip` would
    uLong cap = compressBound(len) + 64;
    uint8_t *gz = mallocCheck(cap);
    EXPECT(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK, "deflateInit2");
    z.next_in = tar, z.avail_in = (uInt)len, z.next_out = gz, z.avail_out = (uInt)cap;
    EXPECT(deflate(&z, Z_FINISH) == Z_STREAM_END, "deflate");
    deflateEnd(&z);
    uint8_t zstd[1024] = {0x28, 0xb5, 0x2f, 0xfd};
    const char lfs[] = "version https://git-lfs.github.com/spec/v1\n"
                       "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 1073741824\n";
    struct {
        void *data;
        size_t len;
        const char *want;
    } cases[] = {{gz, z.total_out, "gzip-compressed"}, {zstd, sizeof(zstd), "zstd-compressed"}, {(void *)lfs, sizeof(lfs) - 1, "Git LFS pointer"}};
    ShardIndex idx = {0};
    for (int i = 0; i < 3; i++) {
        FILE *f = fmemopen(cases[i].data, cases[i].len, "rb");
        tar_index_shard(f, "not-a-tar", &idx);
        fclose(f);
        EXPECT(idx.n == 0 && strstr(idx.error, "not a tar file") && strstr(idx.error, cases[i].want), "%s: %d samples, error '%s'", cases[i].want,
               idx.n, idx.error);
    }
    shard_index_free(&idx);
    free(gz);
    free(tar);
}

// Grouping as open_clip's group_by_keys_nothrow: a repeated extension under the same key starts a new sample;
// "__x.txt" is a sample's member, not metadata (that is "__name__" only). And a header whose checksum was
// summed over signed bytes (old tar writers; Python's tarfile accepts both) is read: its name holds UTF-8.
static void test_grouping_and_signed_checksum(void) {
    FILE *f = fopen(test_path("grouping.tar"), "wb");
    EXPECT(f != NULL, "cannot write grouping.tar");
    if (!f) return;
    tar_member(f, "a.jpg", "J", 1), tar_member(f, "a.txt", "one", 3), tar_member(f, "a.txt", "two", 3);
    tar_member(f, "__x.txt", "meta?", 5);
    char h[512] = {0};  // "\xc3\xa9.txt" (é.txt), checksum over signed bytes
    snprintf(h, 100, "\xc3\xa9.txt"), snprintf(h + 100, 8, "%07o", 0644), snprintf(h + 124, 12, "%011o", 1);
    snprintf(h + 136, 12, "%011o", 0), memcpy(h + 148, "        ", 8), h[156] = '0', memcpy(h + 257, "ustar\0" "00", 8);
    int sum = 0;
    for (int i = 0; i < 512; i++) sum += (int8_t)h[i];
    snprintf(h + 148, 8, "%06o", sum);
    char data[512] = "e", end[1024] = {0};
    fwrite(h, 1, 512, f), fwrite(data, 1, 512, f), fwrite(end, 1, sizeof(end), f);
    fclose(f);
    f = fopen(test_path("grouping.tar"), "rb");
    ShardIndex idx = {0};
    tar_index_shard(f, "grouping.tar", &idx);
    const char *keys[4] = {"a", "a", "__x", "\xc3\xa9"};
    EXPECT(idx.n == 4 && !idx.error[0], "%d samples (want 4), error '%s'", idx.n, idx.error);
    for (int i = 0; i < idx.n && i < 4; i++) EXPECT(strcmp(shard_sample_key(&idx, i), keys[i]) == 0, "sample %d key '%s', want '%s'", i, shard_sample_key(&idx, i), keys[i]);
    if (idx.n == 4) {
        char text[8] = "";
        EXPECT(idx.samples[0].image.size == 1 && idx.samples[1].image.size < 0, "image spans %lld %lld", (long long)idx.samples[0].image.size,
               (long long)idx.samples[1].image.size);
        EXPECT(tar_read_span(f, idx.samples[1].txt, text) == 0 && strcmp(text, "two") == 0, "second sample's caption '%s'", text);
    }
    shard_index_free(&idx);
    fclose(f);
}

static void test_spec_expansion(void) {
    char dir[256], path[1024];
    snprintf(dir, sizeof(dir), "%s", test_path("specs"));
    EXPECT(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    const char *names[] = {"shard-00008.tar", "shard-00009.tar", "shard-00010.tar", "a1.tar", "a2.tar", "b1.tar", "b2.tar", "x9.tar", "x10.tar"};
    for (int i = 0; i < 9; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        fclose(fopenCheck(path, "wb"));
    }
    ShardList l;
    snprintf(path, sizeof(path), "%s/shard-{00008..00010}.tar", dir);
    shards_parse(path, &l);
    EXPECT(l.n == 3 && strstr(l.paths[0], "shard-00008.tar") && strstr(l.paths[2], "shard-00010.tar"), "zero-padded range: %d", l.n);
    shards_free(&l);
    snprintf(path, sizeof(path), "%s/{a,b}{1..2}.tar::%s/x{10..9}.tar", dir, dir);
    shards_parse(path, &l);
    const char *want[] = {"a1.tar", "a2.tar", "b1.tar", "b2.tar", "x10.tar", "x9.tar"};
    EXPECT(l.n == 6, "lists, ranges and :: give %d shards", l.n);
    for (int i = 0; i < l.n && i < 6; i++) EXPECT(strcmp(strrchr(l.paths[i], '/') + 1, want[i]) == 0, "shard %d is %s, expected %s", i, l.paths[i], want[i]);
    shards_free(&l);
    // zero padding as bash: set by either bound with a leading zero, to the wider bound's width; a lone "0" pads nothing
    // (names checked against `bash -c 'echo {8..010} {08..10} {0..10}'`), and nested groups expand inside the outer list
    const struct {
        const char *spec, *first, *last;
        int n;
    } ranges[] = {{"pad-{8..010}.tar", "pad-008.tar", "pad-010.tar", 3},
                  {"pad-{08..10}.tar", "pad-08.tar", "pad-10.tar", 3},
                  {"pad-{0..10}.tar", "pad-0.tar", "pad-10.tar", 11},
                  {"pad-{08,{09,1{0..0}}}.tar", "pad-08.tar", "pad-10.tar", 3}};
    const char *pads[] = {"pad-008.tar", "pad-009.tar", "pad-010.tar", "pad-08.tar", "pad-09.tar", "pad-10.tar", "pad-0.tar", "pad-1.tar",
                          "pad-2.tar", "pad-3.tar", "pad-4.tar", "pad-5.tar", "pad-6.tar", "pad-7.tar", "pad-8.tar", "pad-9.tar"};
    char pad_dir[300];
    snprintf(pad_dir, sizeof(pad_dir), "%s", test_path("pads"));
    EXPECT(mkdir(pad_dir, 0755) == 0, "mkdir %s", pad_dir);
    for (int i = 0; i < 16; i++) {
        snprintf(path, sizeof(path), "%s/%s", pad_dir, pads[i]);
        fclose(fopenCheck(path, "wb"));
    }
    for (int k = 0; k < 4; k++) {
        snprintf(path, sizeof(path), "%s/%s", pad_dir, ranges[k].spec);
        shards_parse(path, &l);
        EXPECT(l.n == ranges[k].n && !strcmp(strrchr(l.paths[0], '/') + 1, ranges[k].first) && !strcmp(strrchr(l.paths[l.n - 1], '/') + 1, ranges[k].last),
               "%s: %d shards, %s .. %s", ranges[k].spec, l.n, l.paths[0], l.paths[l.n - 1]);
        shards_free(&l);
    }
    // a directory takes its *.tar files only
    snprintf(path, sizeof(path), "%s/notes.txt", dir), fclose(fopenCheck(path, "wb"));
    snprintf(path, sizeof(path), "%s/old.tar.gz", dir), fclose(fopenCheck(path, "wb"));
    shards_parse(dir, &l);
    EXPECT(l.n == 9 && strcmp(strrchr(l.paths[0], '/') + 1, "a1.tar") == 0, "directory: %d shards, sorted", l.n);
    for (int i = 1; i < l.n; i++) EXPECT(strcmp(l.paths[i - 1], l.paths[i]) < 0, "directory listing not sorted");
    shards_free(&l);
}

// A missing shard stops the program with a message naming it (run in a child process).
static void parse_missing(void *arg) {
    ShardList l;
    shards_parse(SHARD_DIR "train-{0..5}.tar", &l);
}

static void test_missing_shard_is_an_error(void) {
    char msg[1024];
    int rc = test_in_child(parse_missing, NULL, msg, sizeof(msg));
    EXPECT(rc > 0, "a missing shard did not stop the program (exit %d)", rc);
    EXPECT(strstr(msg, "train-4.tar") != NULL, "the error does not name the missing shard: '%s'", msg);
}

static void test_plan_splits_and_epochs(void) {
    const int N = 10, world = 3;
    for (int epoch = 0; epoch < 3; epoch++) {
        int seen[10] = {0};
        for (int rank = 0; rank < world; rank++) {
            ShardPlan p;
            shard_plan_init(&p, N, 7, rank, world, PLAN_TRAIN);
            for (long v = epoch * p.per_epoch; v < (epoch + 1) * p.per_epoch; v++) {
                long s = shard_plan_visit(&p, (uint64_t)v);
                EXPECT(s >= 0 && s < N, "shard %ld out of range", s);
                if (s >= 0 && s < N) seen[s]++;
            }
            shard_plan_free(&p);
        }
        for (int s = 0; s < N; s++) EXPECT(seen[s] == 1, "epoch %d: shard %d read %d times by all ranks", epoch, s, seen[s]);
    }
    ShardPlan a, b;
    shard_plan_init(&a, N, 7, 0, 1, PLAN_TRAIN);
    int same = 1;
    for (long v = 0; v < N; v++) same &= shard_plan_visit(&a, (uint64_t)v) == shard_plan_visit(&a, (uint64_t)(v + N));
    EXPECT(!same, "epochs 0 and 1 read the shards in the same order");
    shard_plan_free(&a);
    shard_plan_init(&a, N, 7, 1, world, PLAN_EVAL);
    EXPECT(a.per_epoch == 3 && shard_plan_visit(&a, 0) == 1 && shard_plan_visit(&a, 2) == 7 && shard_plan_visit(&a, 3) == -1, "eval split of rank 1");
    shard_plan_free(&a);
    shard_plan_init(&a, N, 7, 0, 2, PLAN_RESAMPLED);
    shard_plan_init(&b, N, 7, 1, 2, PLAN_RESAMPLED);
    int differ = 0, hist[10] = {0};
    for (long v = 0; v < 2000; v++) {
        long s = shard_plan_visit(&a, (uint64_t)v);
        EXPECT(s >= 0 && s < N, "resampled shard %ld", s);
        if (s >= 0 && s < N) hist[s]++;
        differ += s != shard_plan_visit(&b, (uint64_t)v);
    }
    for (int s = 0; s < N; s++) EXPECT(hist[s] > 120 && hist[s] < 280, "resampled shard %d drawn %d of 2000 times", s, hist[s]);
    EXPECT(differ > 1000, "ranks draw the same shards");
    shard_plan_free(&a);
    shard_plan_free(&b);
}

static void test_shuffle_buffer_order(void) {
    ShardPlan p;
    shard_plan_init(&p, 4, 3, 0, 1, PLAN_TRAIN);
    enum { N = 500 };
    int order[N], seen[N];
    for (long buffer = 0; buffer <= 1000; buffer = buffer ? buffer * 10 : 1) {
        shard_plan_order(&p, 5, N, buffer, order);
        memset(seen, 0, sizeof(seen));
        int moved = 0, max_early = 0;
        for (int i = 0; i < N; i++) {
            EXPECT(order[i] >= 0 && order[i] < N && !seen[order[i]], "buffer %ld: not a permutation", buffer);
            if (order[i] >= 0 && order[i] < N) seen[order[i]] = 1;
            moved += order[i] != i;
            // a sample cannot come out before it is read: at output i at most i + buffer samples were read
            if (order[i] - i > max_early) max_early = order[i] - i;
        }
        if (buffer <= 1) EXPECT(moved == 0, "buffer %ld reorders", buffer);
        else EXPECT(moved > N / 2 && max_early < buffer, "buffer %ld: %d moved, reach %d", buffer, moved, max_early);
    }
    int again[N];
    shard_plan_order(&p, 5, N, 100, order);
    shard_plan_order(&p, 5, N, 100, again);
    EXPECT(memcmp(order, again, sizeof(order)) == 0, "same visit, different order");
    shard_plan_order(&p, 6, N, 100, again);
    EXPECT(memcmp(order, again, sizeof(order)) != 0, "different visits, same order");
    shard_plan_free(&p);
}

int main(void) {
    manifest_n = read_manifest(&manifest);
    RUN(test_formats_read_back);
    RUN(test_damaged_shards_end_early);
    RUN(test_every_truncation);
    RUN(test_random_damage);
    RUN(test_not_a_tar);
    RUN(test_grouping_and_signed_checksum);
    RUN(test_spec_expansion);
    RUN(test_missing_shard_is_an_error);
    RUN(test_plan_splits_and_epochs);
    RUN(test_shuffle_buffer_order);
    free(manifest);
    TEST_EXIT();
}
