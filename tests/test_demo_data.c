// test_demo_data.c: scripts/make_demo_data.py. Its class rule on openclipart paths (category_of), and the
// layout it writes, on its synthetic captioned-shapes set (the openclipart path shares the split and the
// labelling): classnames.txt, every sample in exactly one split, class labels only on held-out samples,
// and at least MIN_CLASS_HELD_OUT (10) held-out samples per class although 5% of 80 would be about 4.
#include <glob.h>
#include <sys/wait.h>

#include "../data/tar.h"
#include "test.h"

static int have_python(void) { return system("command -v python3 > /dev/null 2>&1") == 0; }

static void test_category_of(void) {
    if (!have_python()) SKIP("python3 not found");
    FILE *p = popen("python3 -c \"import sys; sys.path.insert(0, 'scripts'); from make_demo_data import category_of as c; "
                    "print(c('animals/birds/penguin/tux_01.png'), c('signs_and_symbols/flags/europe/x.png'), c('animals/cat.png'), "
                    "c('special/gradients/g.png'), c('unsorted/duplicates/d.png'), sep='|')\"", "r");
    char out[512] = "";
    if (p) {
        if (!fgets(out, sizeof(out), p)) out[0] = '\0';
        pclose(p);
    }
    EXPECT(strcmp(out, "animals birds|signs and symbols flags|None|None|None\n") == 0, "category_of gave '%s'", out);
}

// samples in the shards matching pattern; per class (0..2) counts of labelled samples into cls_count
static int count_samples(const char *pattern, long *cls_count, int *bad_label) {
    glob_t g;
    int n = 0;
    if (glob(pattern, 0, NULL, &g) != 0) return -1;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        FILE *f = fopen(g.gl_pathv[i], "rb");
        if (!f) continue;
        ShardIndex idx = {0};
        tar_index_shard(f, g.gl_pathv[i], &idx);
        for (int s = 0; s < idx.n; s++, n++) {
            if (idx.samples[s].cls.size < 0) continue;
            char text[32];
            int label = idx.samples[s].cls.size < (int64_t)sizeof(text) && tar_read_span(f, idx.samples[s].cls, text) == 0 ? atoi(text) : -1;
            if (label >= 0 && label < 3) cls_count[label]++;
            else *bad_label = 1;
        }
        shard_index_free(&idx);
        fclose(f);
    }
    globfree(&g);
    return n;
}

static void test_synthetic_layout(void) {
    if (!have_python()) SKIP("python3 not found");
    char cmd[1024], pattern[600];
    snprintf(cmd, sizeof(cmd), "python3 scripts/make_demo_data.py --synthetic --synthetic-size 240 --out %s > /dev/null", test_path("demo"));
    int status = system(cmd);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "make_demo_data.py failed");

    FILE *f = fopen(test_path("demo/classnames.txt"), "r");
    char names[3][32] = {"", "", ""}, extra[32];
    for (int i = 0; f && i < 3; i++)
        if (fscanf(f, "%31s", names[i]) != 1) break;
    int more = f && fscanf(f, "%31s", extra) == 1;
    if (f) fclose(f);
    EXPECT(!strcmp(names[0], "disc") && !strcmp(names[1], "square") && !strcmp(names[2], "triangle") && !more,
           "classnames: '%s' '%s' '%s'%s", names[0], names[1], names[2], more ? " and more" : "");

    long train_cls[3] = {0}, val_cls[3] = {0};
    int bad = 0;
    snprintf(pattern, sizeof(pattern), "%s/*.tar", test_path("demo/train"));
    int n_train = count_samples(pattern, train_cls, &bad);
    snprintf(pattern, sizeof(pattern), "%s/*.tar", test_path("demo/val"));
    int n_val = count_samples(pattern, val_cls, &bad);
    EXPECT(n_train + n_val == 240, "%d training + %d held-out samples, want 240", n_train, n_val);
    EXPECT(train_cls[0] + train_cls[1] + train_cls[2] == 0 && !bad, "training samples carry labels, or a label is out of range");
    for (int c = 0; c < 3; c++) EXPECT(val_cls[c] >= 10, "class %d has %ld held-out samples, want at least 10", c, val_cls[c]);
    EXPECT(val_cls[0] + val_cls[1] + val_cls[2] == n_val, "%d held-out samples, %ld labelled: every shape is a class", n_val,
           val_cls[0] + val_cls[1] + val_cls[2]);
    EXPECT(n_val < 240 / 4, "%d of 240 held out: the top-up should add at most 10 per class to about 5%%", n_val);
}

int main(void) {
    RUN(test_category_of);
    RUN(test_synthetic_layout);
    TEST_EXIT();
}
