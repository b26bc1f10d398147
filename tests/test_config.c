// test_config.c: config files and the parameter table: open_clip's parameter counts for all five model
// configs, --set overrides, includes, and that every kind of bad config stops ./train_clip before any
// work with `file:line: key: reason` and exit code 2.
#include <sys/wait.h>
#include <time.h>

#include "../model/clip.h"
#include "../model/config.h"
#include "../model/rng.h"
#include "../model/utils.h"
#include "test.h"

// open_clip's counts (DESIGN.md): total = image + text + 1 (logit_scale)
static void test_param_counts_equal_open_clip(void) {
    struct {
        const char *path;
        size_t image, text;
    } want[] = {{"configs/vit_b_32.conf", 87849216, 63428096},   {"configs/vit_b_16.conf", 86192640, 63428096},
                {"configs/vit_l_14.conf", 303966208, 123650304}, {"configs/vit_h_14.conf", 632076800, 354032640},
                {"configs/vit_g_14.conf", 1012645632, 354032640}};
    for (int i = 0; i < 5; i++) {
        Config c;
        ClipLayout L;
        config_load(&c, want[i].path);
        clip_layout_build(&L, &c);
        EXPECT(L.num_image_params == want[i].image, "%s: image params %zu, open_clip %zu", want[i].path, L.num_image_params, want[i].image);
        EXPECT(L.num_text_params == want[i].text, "%s: text params %zu, open_clip %zu", want[i].path, L.num_text_params, want[i].text);
        EXPECT(L.num_params == want[i].image + want[i].text + 1, "%s: total %zu", want[i].path, L.num_params);
        clip_layout_free(&L);
    }
}

static void test_layer_scale_adds_gamma_tensors(void) {
    Config c;
    config_defaults(&c);
    config_load_file(&c, "configs/vit_b_32.conf");
    config_set(&c, "layer_scale_init=0", 1);
    config_finalize(&c);
    ClipLayout L;
    clip_layout_build(&L, &c);
    // 2 gamma vectors per block: 12 vision blocks of 768, 12 text blocks of 512
    EXPECT(L.num_params == 151277313 + 12 * 2 * 768 + 12 * 2 * 512, "layer-scale param count %zu", L.num_params);
    int i = clip_layout_find(&L, "visual.transformer.resblocks.3.ls_2.gamma");
    EXPECT(i >= 0 && L.tensors[i].init == INIT_CONST && L.tensors[i].init_value == 0.0f && !L.tensors[i].decay,
           "ls_2.gamma missing or not zero-init / no-decay");
    clip_layout_free(&L);
}

static void test_set_overrides_and_include(void) {
    mkdir_p(test_path("sub"));
    FILE *f = fopenCheck(test_path("sub/child.conf"), "w");
    fprintf(f, "include = ../../..%s/configs/tiny.conf  # relative to this file\nlr = 5e-4\n", getenv("PWD"));
    fcloseCheck(f);
    Config c;
    config_defaults(&c);
    config_load_file(&c, test_path("sub/child.conf"));
    config_set(&c, "wd = 0.05", 1);
    config_set(&c, "optimizer=adamw", 2);
    config_set(&c, "layer_scale_init=none", 3);
    config_finalize(&c);
    EXPECT(c.vision_width == 64 && c.embed_dim == 64, "include did not load tiny.conf");
    EXPECT(c.lr == 5e-4f, "lr %g", c.lr);
    EXPECT(c.wd == 0.05f, "wd %g", c.wd);
    EXPECT(c.optimizer == OPTIMIZER_ADAMW, "optimizer %d", c.optimizer);
    EXPECT(!config_has_layer_scale(&c), "layer-scale should be off");
    EXPECT(c.switchback_mask == 15 && c.switchback_variant == SB_VARIANT_STANDARD, "switchback defaults: mask %d variant %d",
           c.switchback_mask, c.switchback_variant);
    config_set(&c, "switchback_layers= c_proj, qkv", 4);
    config_set(&c, "switchback_variant=memory_efficient", 5);
    config_finalize(&c);
    EXPECT(c.switchback_mask == (1 << SB_LINEAR_QKV | 1 << SB_LINEAR_C_PROJ) && c.switchback_variant == SB_VARIANT_MEMORY_EFFICIENT,
           "switchback_layers 'c_proj, qkv': mask %d variant %d", c.switchback_mask, c.switchback_variant);
    config_set(&c, "switchback_layers=none", 6);
    config_finalize(&c);
    EXPECT(c.switchback_mask == 0, "switchback_layers none: mask %d", c.switchback_mask);
}

// --set wins over the files for steps and samples too: `--set steps=100` on a ViT config (which sets samples) runs
// 100 steps, `--set samples=` on one that sets steps derives steps; both in the files is still an error.
static void test_set_steps_or_samples_over_files(void) {
    Config c;
    config_defaults(&c);
    config_load_file(&c, "configs/vit_b_16.conf");
    config_set(&c, "steps=100", 1);
    config_finalize(&c);
    EXPECT(c.steps == 100 && c.samples == 0, "vit_b_16 + --set steps=100: steps %ld samples %ld", c.steps, c.samples);
    config_defaults(&c);
    config_load_file(&c, "configs/tiny.conf");
    config_set(&c, "samples=6401", 1);
    config_finalize(&c);
    EXPECT(c.steps == 101 && c.samples == 6401, "tiny (batch 64) + --set samples=6401: steps %ld (want ceil: 101) samples %ld", c.steps, c.samples);
    FILE *f = fopenCheck(test_path("both.conf"), "w");
    fprintf(f, "include = %s/configs/tiny.conf\nsamples = 640\n", getenv("PWD"));
    fcloseCheck(f);
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof(cmd), "./train_clip -c %s --dry-run 2>&1", test_path("both.conf"));
    int rc = run_command(cmd, out, sizeof(out));
    EXPECT(rc == 2 && strstr(out, "both.conf:2: samples: set steps or samples, not both"),
           "steps and samples both from files: exit %d, output:\n%s", rc, out);
}

// A string value as long as the parser allows (CONFIG_STR - 1 characters) is kept whole and touches no other key;
// one character more is refused. `model` once had 64 bytes and a long name overwrote the model's sizes.
static void test_long_string_values(void) {
    const char *keys[] = {"model", "run_dir", "data", "watch_rms"};
    for (int k = 0; k < 4; k++) {
        Config c;
        config_load(&c, "configs/tiny.conf");
        char set[CONFIG_STR + 64];
        int n = snprintf(set, sizeof(set), "%s=", keys[k]);
        memset(set + n, 'x', CONFIG_STR - 1);
        set[n + CONFIG_STR - 1] = '\0';
        config_set(&c, set, 1);
        EXPECT(c.embed_dim == 64 && c.image_size == 32 && c.patch_size == 8 && c.vision_width == 64 && c.vision_layers == 2,
               "%s of %d characters changed the model: embed %d image %d patch %d width %d layers %d", keys[k], CONFIG_STR - 1,
               c.embed_dim, c.image_size, c.patch_size, c.vision_width, c.vision_layers);
        const char *field = k == 0 ? c.model : k == 1 ? c.run_dir : k == 2 ? c.data : c.watch_rms;
        EXPECT(strlen(field) == CONFIG_STR - 1 && strspn(field, "x") == CONFIG_STR - 1, "%s: %zu characters kept", keys[k], strlen(field));
    }
}

// Run ./train_clip --dry-run on a config text; returns the exit code and the stderr text.
static int run_config(const char *text, const char *extra, char *err, size_t cap) {
    FILE *f = fopenCheck(test_path("bad.conf"), "w");
    fputs(text, f);
    fcloseCheck(f);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "./train_clip -c %s %s --dry-run 2>&1 >/dev/null", test_path("bad.conf"), extra);
    return run_command(cmd, err, cap);
}

static void test_bad_configs_name_file_line_key(void) {
    const char *base = "include = %s/configs/tiny.conf\n";
    char head[512];
    snprintf(head, sizeof(head), base, getenv("PWD"));
    struct {
        const char *line, *extra, *expect;
    } cases[] = {
        {"lrr = 0.1\n", "", "bad.conf:2: lrr: unknown key (did you mean lr?)"},
        {"LR = 0.1\n", "", "bad.conf:2: LR: unknown key (did you mean lr? keys are lower case)"},
        {"Batch_Size = 8\n", "", "bad.conf:2: Batch_Size: unknown key (did you mean batch_size? keys are lower case)"},
        {"lr = fast\n", "", "bad.conf:2: lr: expected a number, got 'fast'"},
        {"beta2 = 1.5\n", "", "bad.conf:2: beta2: 1.5 is out of range"},
        {"vision_layers = 2.5\n", "", "bad.conf:2: vision_layers: expected a whole number"},
        {"optimizer = sgd\n", "", "bad.conf:2: optimizer: expected one of adamw|stable_adamw, got 'sgd'"},
        {"optimizer = adamwx\n", "", "bad.conf:2: optimizer: expected one of adamw|stable_adamw, got 'adamwx'"},  // not a prefix match
        {"seed = -1\n", "", "bad.conf:2: seed: expected a whole number >= 0, got '-1'"},  // strtoull takes it as 2^64 - 1
        {"zeroshot_data = synthetic\n", "", "bad.conf:2: zeroshot_data: needs zeroshot_classnames"},
        {"quick_gelu = maybe\n", "", "bad.conf:2: quick_gelu: expected true or false"},
        {"just some words\n", "", "bad.conf:2: just some words: expected `key = value`"},
        {"vision_heads = 5\n", "", "bad.conf:2: vision_heads: vision_heads 5 does not divide vision_width 64 (vision_width from "},
        // a check between two keys reports at the one set last, naming where the other came from
        {"image_size = 30\n", "", "bad.conf:2: image_size: patch_size 8 does not divide image_size 30 (patch_size from "},
        {"text_width = 66\n", "", "bad.conf:2: text_width: text_heads 4 does not divide text_width 66 (text_heads from "},
        {"vision_mlp_ratio = 0.01\n", "", "bad.conf:2: vision_mlp_ratio: vision_width 64 x vision_mlp_ratio 0.01 gives an MLP width of 0"},
        {"micro_batch_size = 32\n", "--set batch_size=16",
         "--set:4: batch_size: micro_batch_size 32 is larger than the per-rank batch 16 (batch_size 16 / 1 ranks) (micro_batch_size from "},
        {"", "--set nope=1", "--set:4: nope: unknown key (./train_clip --help-config"},
        {"", "--set steps=-4", "--set:4: steps: -4 is out of range"},
        {"switchback_layers = qkv,fc1\n", "", "bad.conf:2: switchback_layers: 'fc1' is not one of qkv, out_proj, c_fc, c_proj"},
        {"run_dir = runs/a#1\n", "", "bad.conf:2: run_dir: '#' inside a value: write the value in double quotes"},
        {"lr = 1e-3#fast\n", "", "bad.conf:2: lr: '#' inside a value"},
        {"lr = 0.1\nwd = 0\nlr = 0.2\n", "", "bad.conf:4: lr: set twice in this file (first at line 2)"},
        {"grad_clip = 1e-50\n", "", "bad.conf:2: grad_clip: 1e-50 is too small for a float (it would be 0)"},
        {"run_dir =   # comment\n", "", "bad.conf:2: run_dir: empty value"},
        {"watch_rms = \"\"\n", "", "bad.conf:2: watch_rms: empty value"},
        {"", "--set data=", "--set:4: data: empty value"},
        {"vocab_size = 1000\n", "--set data=/data/shards", "--set:4: data: vocab_size 1000 cannot hold the CLIP tokenizer's ids (up to 49407)"},
        {"vocab_size = 49407\nval_data = /data/val\n", "", "bad.conf:3: val_data: vocab_size 49407 cannot hold the CLIP tokenizer's ids"},
        {"zeroshot_data = synthetic\nzeroshot_classnames = c.txt\nvocab_size = 500\n", "", "bad.conf:4: vocab_size: vocab_size 500 cannot"},
    };
    char err[4096], text[1024];
    int rc;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "%s%s", head, cases[i].line);
        rc = run_config(text, cases[i].extra, err, sizeof(err));
        EXPECT(rc == 2, "case %zu: exit code %d, want 2 (%s)", i, rc, err);
        EXPECT(strstr(err, cases[i].expect) != NULL, "case %zu: stderr '%s' lacks '%s'", i, err, cases[i].expect);
    }
    // warmup longer than the run: it starts (short test runs do this on purpose), with a warning that says so
    snprintf(text, sizeof(text), "%ssteps = 10\nwarmup = 20\n", head);
    rc = run_config(text, "", err, sizeof(err));
    EXPECT(rc == 0 && strstr(err, "warning: warmup 20 is longer than the run's 10 steps"), "warmup > steps: rc %d, '%s'", rc, err);
    snprintf(text, sizeof(text), "%ssteps = 20\nwarmup = 20\n", head);
    rc = run_config(text, "", err, sizeof(err));
    EXPECT(rc == 0 && !strstr(err, "warmup"), "warmup = steps: rc %d, '%s'", rc, err);
    // a required model key missing altogether
    rc = run_config("embed_dim = 8\nvision_width = 8\nvision_layers = 1\nvision_heads = 1\npatch_size = 4\nsteps = 1\n", "", err, sizeof(err));
    EXPECT(rc == 2 && strstr(err, "text_width: missing required key"), "missing key: rc %d, '%s'", rc, err);
}

// A config or an include that cannot be read (a directory, a missing file, an include loop) is an error naming it and
// the include line, exit code 2; a directory once read as an empty file. A UTF-8 byte order mark and CRLF line ends
// (Windows editors) load.
static void test_unreadable_includes_bom_crlf(void) {
    char err[4096], text[1024], cmd[1024];
    snprintf(cmd, sizeof(cmd), "./train_clip -c %s/configs --dry-run 2>&1", getenv("PWD"));
    int rc = run_command(cmd, err, sizeof(err));
    EXPECT(rc == 2 && strstr(err, "/configs: cannot read config file: Is a directory"), "-c DIR: rc %d, '%s'", rc, err);
    snprintf(text, sizeof(text), "include = %s/configs/tiny.conf\ninclude = %s/configs\n", getenv("PWD"), getenv("PWD"));
    rc = run_config(text, "", err, sizeof(err));
    EXPECT(rc == 2 && strstr(err, "bad.conf:2: include: ") && strstr(err, "/configs: cannot read config file: Is a directory"),
           "include = DIR: rc %d, '%s'", rc, err);
    rc = run_config("include = nowhere.conf\n", "", err, sizeof(err));
    EXPECT(rc == 2 && strstr(err, "bad.conf:1: include: ") && strstr(err, "nowhere.conf: cannot open config file: No such file"),
           "include of a missing file: rc %d, '%s'", rc, err);
    rc = run_config("include = bad.conf\n", "", err, sizeof(err));
    EXPECT(rc == 2 && strstr(err, "bad.conf:1: include: nested more than 8 deep"), "include loop: rc %d, '%s'", rc, err);
    snprintf(text, sizeof(text), "\xef\xbb\xbfinclude = %s/configs/tiny.conf\r\nmodel = windows\r\nlr = 5e-4 # c\r\n", getenv("PWD"));
    rc = run_config(text, "", err, sizeof(err));
    EXPECT(rc == 0, "a config with a BOM and CRLF line ends: rc %d, '%s'", rc, err);
}

// The command line: what it cannot take as meant is an error (exit 2) naming the argument, not a value quietly used or
// dropped: -c twice (the first was ignored), --limit junk or negative (read as 0 = no limit), --limit without
// --inspect-data, two of --dry-run, --eval-only, --inspect-data, --tokenize (one ran as if the other were not there),
// --set without a key, and --set with --tokenize but no -c (the overrides were skipped).
static void test_command_line_errors(void) {
    struct {
        const char *args, *expect;
    } cases[] = {
        {"-c configs/tiny.conf -c configs/vit_b_32.conf --dry-run", "error: -c given twice"},
        {"--inspect-data nowhere --limit abc", "error: --limit: expected a whole number >= 0, got 'abc'"},
        {"--inspect-data nowhere --limit -3", "error: --limit: expected a whole number >= 0, got '-3'"},
        {"--inspect-data nowhere --limit 2x", "error: --limit: expected a whole number >= 0, got '2x'"},
        {"-c configs/tiny.conf --limit 5 --dry-run", "error: --limit goes with --inspect-data"},
        {"--dry-run --inspect-data nowhere", "error: --dry-run does not go with --inspect-data"},
        {"-c configs/tiny.conf --tokenize --dry-run < /dev/null", "error: --dry-run does not go with --tokenize"},
        {"-c configs/tiny.conf --eval-only --dry-run", "error: --dry-run does not go with --eval-only"},
        {"--eval-only --inspect-data nowhere", "error: --eval-only does not go with --inspect-data"},
        {"-c configs/tiny.conf --tokenize --eval-only < /dev/null", "error: --eval-only does not go with --tokenize"},
        {"-c configs/tiny.conf --set =1 --dry-run", "--set:4: (argument): missing key before '='"},
    };
    char out[4096], cmd[1024];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(cmd, sizeof(cmd), "./train_clip %s 2>&1 >/dev/null", cases[i].args);
        int rc = run_command(cmd, out, sizeof(out));
        EXPECT(rc == 2 && strstr(out, cases[i].expect), "'%s': rc %d, stderr '%s' (want '%s')", cases[i].args, rc, out, cases[i].expect);
    }
    int rc = run_command("echo 'a photo of a cat' | ./train_clip --tokenize --set context_length=8 2>&1", out, sizeof(out));
    if (rc == 0) EXPECT(!strcmp(out, "49406 320 1125 539 320 2368 49407 0\n"), "--tokenize --set context_length=8: '%s'", out);
    else EXPECT(strstr(out, "vocab") || strstr(out, "tokenizer"), "--tokenize: rc %d '%s'", rc, out);  // no vocabulary here: test_tokenizer says so
}

static void test_dry_run_prints_params_line(void) {
    FILE *p = popen("./train_clip -c configs/vit_h_14.conf --dry-run 2>&1", "r");
    char line[512];
    int found = 0;
    while (fgets(line, sizeof(line), p))
        if (!strcmp(line, "params: total 986109441 image 632076800 text 354032640\n")) found = 1;
    int status = pclose(p);
    EXPECT(found, "no exact params line for ViT-H-14");
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "dry run failed");
}

// The README's config reference is the generated table, so docs and code cannot drift apart.
static void test_readme_config_reference_is_current(void) {
    char *ref = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&ref, &len);
    config_print_reference(m);
    fclose(m);
    FILE *f = fopenCheck("README.md", "r");
    char *readme = mallocCheck(1 << 20);
    size_t n = fread(readme, 1, (1 << 20) - 1, f);
    readme[n] = '\0';
    fcloseCheck(f);
    EXPECT(strstr(readme, ref) != NULL, "README.md's config reference differs from ./train_clip --help-config; paste it again");
    free(ref), free(readme);
}

// Each "key = value" line of a config printout, without its "# source" comment, one per line.
static void strip_sources(const char *text, char *out, size_t cap) {
    size_t n = 0;
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n'), *value = strstr(line, "= "), *hash;
        if (value && value < end && value[2] == '"') hash = strstr(strchr(value + 3, '"') ? strchr(value + 3, '"') : value, " # ");  // after a quoted value
        else hash = strstr(line, " # ");
        if (!end) end = line + strlen(line);
        if (!hash || hash > end) hash = end;
        while (hash > line && hash[-1] == ' ') hash--;
        n += snprintf(out + n, n < cap ? cap - n : 0, "%.*s\n", (int)(hash - line), line);
        line = *end ? end + 1 : end;
    }
}

// The effective config (printed by --dry-run, written to run_dir/config.conf) loads again as a config and gives
// the same values; floats print as the shortest decimal that reads back (lr = 2e-3 prints 0.002).
static void test_printed_config_reads_back(void) {
    Config a;
    config_load(&a, "configs/vit_h_14.conf");
    Rng r;
    rng_init(&r, (uint64_t)time(NULL), RNG_TEST, 1);
    char *want = mallocCheck(1 << 16), *got = mallocCheck(1 << 16), *out = mallocCheck(1 << 16);
    FILE *sp = fopenCheck(test_path("spaces.conf"), "w");
    fputs("model = \" spaced # name \"  # a comment\n", sp);
    fcloseCheck(sp);
    for (int i = 0; i < 10; i++) {
        char set[64];
        uint32_t bits = (uint32_t)rng_u64(&r);
        float lr = ldexpf((float)(bits >> 8) / 16777216.0f + 0.5f, -(int)(bits % 30));  // random mantissa, 2^-31..2^-1
        snprintf(set, sizeof(set), "lr=%.9g", lr);
        config_set(&a, set, 1);
        if (i == 0) {  // string values the file syntax must quote: a '#', a leading quote, surrounding spaces
            config_set(&a, "run_dir=runs/x#1", 2);
            config_set(&a, "data=\"q\"uoted", 3);
            config_load_file(&a, test_path("spaces.conf"));
        }
        char *text = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&text, &len);
        config_print(&a, m);
        fclose(m);
        FILE *f = fopenCheck(test_path("printed.conf"), "w");
        fputs(text, f);
        fcloseCheck(f);
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "./train_clip -c %s --dry-run 2>&1", test_path("printed.conf"));
        FILE *p = popen(cmd, "r");
        size_t n = fread(out, 1, (1 << 16) - 1, p);
        out[n] = '\0';
        int status = pclose(p);
        const char *printed = strstr(out, "# effective config\n");
        EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0 && printed, "the printed config does not load: %s", out);
        if (!printed) break;
        strip_sources(text, want, 1 << 16);
        strip_sources(printed + strlen("# effective config\n"), got, 1 << 16);
        EXPECT(!strcmp(want, got), "the printed config (lr %.9g) read back differently:\n%s\nagainst\n%s", lr, got, want);
        const char *lr_line = strstr(text, "\nlr ");  // and the value printed reads back as the same float
        float lr_back = lr_line ? (float)strtod(strchr(lr_line, '=') + 1, NULL) : 0;
        EXPECT(lr_back == a.lr, "lr %.9g printed as %.30s, which reads back as %.9g", a.lr, lr_line ? lr_line + 1 : "(none)", lr_back);
        if (i == 0)
            EXPECT(strstr(text, "\nwd                   = 0.2 ") && strstr(text, "\nbeta2                = 0.98 ") &&
                       strstr(text, "\neps                  = 1e-06 ") && strstr(text, "\nspike_factor         = 1.3 "),
                   "floats not printed in their shortest form:\n%s", text);
        if (i == 0)
            EXPECT(!strcmp(a.model, " spaced # name ") && !strcmp(a.run_dir, "runs/x#1"), "model '%s' run_dir '%s'", a.model, a.run_dir);
        free(text);
    }
    free(want), free(got), free(out);
}

int main(void) {
    RUN(test_param_counts_equal_open_clip);
    RUN(test_layer_scale_adds_gamma_tensors);
    RUN(test_set_overrides_and_include);
    RUN(test_set_steps_or_samples_over_files);
    RUN(test_long_string_values);
    RUN(test_bad_configs_name_file_line_key);
    RUN(test_unreadable_includes_bom_crlf);
    RUN(test_command_line_errors);
    RUN(test_dry_run_prints_params_line);
    RUN(test_readme_config_reference_is_current);
    RUN(test_printed_config_reads_back);
    TEST_EXIT();
}
