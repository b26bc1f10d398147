// test_parity.c: the fp32 CPU model against open_clip. Each fixture (scripts/make_reference.py) holds an
// open_clip model's weights, a batch, and open_clip's loss, both embeddings and every parameter gradient
// computed in float64. Bounds (relative L2 error, ||ours - ref|| / ||ref||): loss, embeddings and every
// gradient tensor 1e-5 (fp32 arithmetic over these sizes lands near 1e-7..1e-6).
#include "../model/checkpoint.h"
#include "../model/clip_cpu.h"
#include "../model/ops_cpu.h"
#include "../model/safetensors.h"
#include "../model/utils.h"
#include "test.h"

#define BOUND 1e-5

// Build a Config from the fixture's metadata lines `key = value`.
static void config_from_fixture(Config *c, const StFile *f) {
    config_defaults(c);
    const char *text = st_meta(f, "config");
    char line[512];
    int n = 0;
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        snprintf(line, sizeof(line), "%.*s", (int)len, p);
        if (len) config_set(c, line, ++n);
        p += len + (nl ? 1 : 0);
    }
    config_finalize(c);
}

static double compare(const StFile *f, const char *name, const float *ours, size_t n) {
    const StTensor *t = st_find(f, name);
    EXPECT(t != NULL, "fixture lacks %s", name);
    if (!t) return INFINITY;
    float *ref = mallocCheck(n * sizeof(float));
    st_read_f32(f, t, ref, n);
    double e = rel_err(ours, ref, n);
    free(ref);
    return e;
}

static void check_fixture(const char *path) {
    StFile f;
    char err[1024];
    int rc = st_load(&f, path, err, sizeof(err));
    EXPECT(rc == 0, "%s", err);
    if (rc) return;
    Config c;
    config_from_fixture(&c, &f);
    int B = (int)c.batch_size, S = c.image_size, T = c.context_length;
    ClipCPU m;
    clip_cpu_init(&m, &c, B);
    rc = load_weights_by_name(&m.layout, m.params, &f, "", err, sizeof(err));
    EXPECT(rc == 0, "%s", err);
    // and nothing in the fixture's state_dict is unknown to our layout
    for (int i = 0; i < f.num_tensors; i++) {
        const char *n = f.tensors[i].name;
        if (strncmp(n, "input.", 6) && strncmp(n, "output.", 7) && strncmp(n, "grad.", 5))
            EXPECT(clip_layout_find(&m.layout, n) >= 0, "fixture tensor %s is not in our layout", n);
    }
    float *images = mallocCheck((size_t)B * 3 * S * S * sizeof(float));
    int32_t *tokens = mallocCheck((size_t)B * T * sizeof(int32_t));
    st_read_f32(&f, st_find(&f, "input.images"), images, (size_t)B * 3 * S * S);
    st_read_i32(&f, st_find(&f, "input.tokens"), tokens, (size_t)B * T);

    float loss = clip_cpu_forward(&m, images, tokens, B);
    double e_loss = compare(&f, "output.loss", &loss, 1);
    double e_img = compare(&f, "output.image_features", m.acts.image_features, (size_t)B * c.embed_dim);
    double e_txt = compare(&f, "output.text_features", m.acts.text_features, (size_t)B * c.embed_dim);
    EXPECT(e_loss < BOUND, "%s: loss rel err %.2e", path, e_loss);
    EXPECT(e_img < BOUND, "%s: image features rel err %.2e", path, e_img);
    EXPECT(e_txt < BOUND, "%s: text features rel err %.2e", path, e_txt);

    clip_cpu_backward(&m);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.layout.num_tensors; i++) {
        const ParamTensor *t = &m.layout.tensors[i];
        char name[200];
        snprintf(name, sizeof(name), "grad.%s", t->name);
        double e = compare(&f, name, m.grads + t->offset, t->numel);
        EXPECT(e < BOUND, "%s: %s rel err %.2e", path, name, e);
        if (e > worst) worst = e, worst_name = t->name;
    }
    printf("  %s: loss %.6f, rel err loss %.1e image %.1e text %.1e, worst gradient %.1e (%s)\n", path, loss, e_loss, e_img,
           e_txt, worst, worst_name);
    free(images), free(tokens);
    clip_cpu_free(&m);
    st_free(&f);
}

static void test_parity_gelu(void) { check_fixture("tests/fixtures/ref_gelu.safetensors"); }
static void test_parity_quickgelu_layer_scale(void) { check_fixture("tests/fixtures/ref_quickgelu_ls.safetensors"); }

// Pooling takes open_clip's text.argmax(dim=-1): the first largest id. A caption whose text holds
// "<end_of_text>" tokenizes to a second EOT (open_clip does the same) before the last one; the first is pooled.
static void test_eot_is_first_largest_id(void) {
    enum { B = 3, T = 6 };
    int32_t ids[B * T] = {49406, 5, 49407, 7, 49407, 0, 49406, 3, 49407, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    int index[B];
    eot_positions(index, ids, B, T);
    EXPECT(index[0] == 2 && index[1] == 2 && index[2] == 0, "EOT positions %d %d %d, want 2 2 0", index[0], index[1], index[2]);
}

// With a path argument: check that fixture alone (tests/interop_open_clip.sh makes one from a trained
// train_clip checkpoint that went through open_clip).
static const char *fixture_arg;
static void test_parity_given_fixture(void) { check_fixture(fixture_arg); }

int main(int argc, char **argv) {
    if (argc > 1) {
        fixture_arg = argv[1];
        RUN(test_parity_given_fixture);
        TEST_EXIT();
    }
    RUN(test_parity_gelu);
    RUN(test_parity_quickgelu_layer_scale);
    RUN(test_eot_is_first_largest_id);
    TEST_EXIT();
}
