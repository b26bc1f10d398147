// test_tokenizer.c: data/tokenizer.c against open_clip. The parity fixture (made by
// scripts/make_tokenizer_fixture.py with open_clip 3.3.0) holds captions with open_clip's ids; every
// one must match, from one thread and from several at once, with the word cache cold and warm. Also:
// truncation at other context lengths, and the error a missing vocabulary gives.
// Needs data/bpe_simple_vocab_16e6.txt.gz (scripts/get_vocab.sh); without it the tests fail.
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../data/text_clean.h"
#include "../data/tokenizer.h"
#include "../model/utils.h"
#include "test.h"

#define VOCAB "data/bpe_simple_vocab_16e6.txt.gz"
#define T 77

typedef struct {
    char *text;      // the caption, unescaped (NUL-terminated)
    int n;           // open_clip's ids up to EOT (0: the caption is not UTF-8)
    int32_t ids[T];
    int line;
} Case;

static Case *cases;
static int n_cases;
static Tokenizer *tok;

// Undoes the fixture's escapes (\\, \t, \n, \r, \xHH) in place.
static void unescape(char *s) {
    char *o = s;
    for (; *s; s++) {
        if (*s != '\\') {
            *o++ = *s;
            continue;
        }
        s++;
        if (*s == 't') *o++ = '\t';
        else if (*s == 'n') *o++ = '\n';
        else if (*s == 'r') *o++ = '\r';
        else if (*s == 'x' && s[1] && s[2]) {
            char hex[3] = {s[1], s[2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            s += 2;
        } else *o++ = *s;
    }
    *o = '\0';
}

static void load_fixture(const char *path) {
    FILE *f = fopenCheck(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int cap_cases = 0;
    for (int lineno = 1; (len = getline(&line, &cap, f)) >= 0; lineno++) {
        if (line[0] == '#') continue;
        if (len > 0 && line[len - 1] == '\n') line[len - 1] = '\0';
        char *tab = strrchr(line, '\t');
        if (!tab) fatal("%s:%d: no tab", path, lineno);
        *tab = '\0';
        if (n_cases == cap_cases) cases = reallocCheck(cases, (size_t)(cap_cases = 2 * cap_cases + 64) * sizeof(Case));
        Case *c = &cases[n_cases++];
        memset(c, 0, sizeof(*c));
        c->line = lineno;
        unescape(line);
        c->text = strdup(line);
        if (!c->text) fatal("strdup failed at %s:%d", __FILE__, __LINE__);
        for (char *p = tab + 1, *end; *p; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p) fatal("%s:%d: bad ids", path, lineno);
            if (v == -1) break;
            if (c->n == T) fatal("%s:%d: more than %d ids", path, lineno, T);
            c->ids[c->n++] = (int32_t)v;
        }
    }
    if (ferror(f)) fatal("getline(%s) failed at %s:%d", path, __FILE__, __LINE__);
    free(line);
    fcloseCheck(f);
}

// Whether tokenizer_encode's answer for c is right: open_clip's ids, except that a caption open_clip
// gives SOT EOT (empty after cleaning) or cannot decode is -1 with SOT EOT in ids.
static int check(const Case *c, int got, const int32_t *ids) {
    int skipped = c->n <= 2;
    int n = skipped ? 2 : c->n;
    if (got != (skipped ? -1 : c->n)) return 0;
    for (int i = 0; i < T; i++)
        if (ids[i] != (i == 0 ? TOKEN_SOT : i == 1 && skipped ? TOKEN_EOT : i < n ? c->ids[i] : 0)) return 0;
    return 1;
}

static void test_vocab_present(void) {
    EXPECT(tok != NULL, "%s is missing: run scripts/get_vocab.sh before make test", VOCAB);
}

static void test_parity(void) {
    if (!tok) SKIP("no vocabulary");
    int32_t ids[T];
    for (int pass = 0; pass < 2; pass++) {  // cold, then warm word cache
        int bad = 0;
        for (int i = 0; i < n_cases; i++) {
            const Case *c = &cases[i];
            int got = tokenizer_encode(tok, c->text, ids, T);
            if (check(c, got, ids)) continue;
            if (bad++ < 5) {
                printf("  mismatch at fixture line %d (returned %d):\n  want", c->line, got);
                for (int k = 0; k < c->n; k++) printf(" %d", c->ids[k]);
                printf("\n  got ");
                for (int k = 0; k < T && (k == 0 || ids[k - 1] != TOKEN_EOT); k++) printf(" %d", ids[k]);
                printf("\n");
            }
        }
        printf("  parity pass %d: %d of %d captions identical to open_clip\n", pass + 1, n_cases - bad, n_cases);
        EXPECT(bad == 0, "%d of %d captions differ from open_clip (pass %d)", bad, n_cases, pass + 1);
    }
}

typedef struct {
    int offset;  // where in the fixture this thread starts
    int bad;     // captions it got wrong
} Worker;

static void *encode_all(void *arg) {
    Worker *w = arg;
    int32_t ids[T];
    for (int r = 0; r < n_cases; r++) {
        const Case *c = &cases[(r + w->offset) % n_cases];
        if (!check(c, tokenizer_encode(tok, c->text, ids, T), ids)) w->bad++;
    }
    return NULL;
}

static void test_threads(void) {
    if (!tok) SKIP("no vocabulary");
    pthread_t th[4];
    Worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (Worker){i * n_cases / 4, 0};
        int rc = pthread_create(&th[i], NULL, encode_all, &w[i]);
        if (rc) fatal("pthread_create failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
    }
    for (int i = 0; i < 4; i++) {
        int rc = pthread_join(th[i], NULL);
        if (rc) fatal("pthread_join failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
        EXPECT(w[i].bad == 0, "thread %d: %d captions differ from open_clip", i, w[i].bad);
    }
}

// A caption cut at a shorter context keeps the same first ids and ends with EOT.
// basic_clean's html.unescape runs twice after ftfy, and ftfy unescapes only lines without '<' (checked
// with ftfy 6.3.1: html.unescape(html.unescape(ftfy.fix_text(a))) == b below).
static void test_clean_unescapes_as_open_clip(void) {
    const char *cases[][2] = {{"x <b> &amp;amp;amp; y", "x <b> &amp; y"}, {"x &amp;amp;amp; y", "x & y"}, {"<i> &amp;lt; </i>", "<i> < </i>"}};
    CleanScratch x = {0};
    Str32 out = {0};
    for (int k = 0; k < 3; k++) {
        char got[64] = {0};
        int rc = text_clean(cases[k][0], strlen(cases[k][0]), &x, &out), len = 0;
        for (int i = 0; rc == 0 && i < out.n && len < 56; i++) len += utf8_put(out.p[i], (uint8_t *)got + len);
        EXPECT(rc == 0 && strcmp(got, cases[k][1]) == 0, "'%s' cleaned to '%s', want '%s'", cases[k][0], got, cases[k][1]);
    }
    clean_scratch_free(&x), free(out.p);
}

static void test_truncation(void) {
    if (!tok) SKIP("no vocabulary");
    const char *text = "a photo of a cat sitting on a red sofa next to a window, with a dog asleep on the rug";
    int32_t full[T], ids[T];
    int n = tokenizer_encode(tok, text, full, T);
    EXPECT(n > 10 && full[n - 1] == TOKEN_EOT, "full encoding has %d ids", n);
    for (int ctx = 2; ctx < n; ctx++) {
        int got = tokenizer_encode(tok, text, ids, ctx);
        EXPECT(got == ctx && ids[ctx - 1] == TOKEN_EOT, "context %d: %d ids, last %d", ctx, got, ids[ctx - 1]);
        for (int i = 0; i < ctx - 1; i++) EXPECT(ids[i] == full[i], "context %d: id %d differs", ctx, i);
    }
}

// tokenizer_load on a missing file stops with a message that says how to get the vocabulary.
static void test_missing_vocab_message(void) {
    int fd[2];
    fflush(stdout);  // the child's exit() must not print what the parent has buffered
    if (pipe(fd) != 0) fatal("pipe failed at %s:%d: %s", __FILE__, __LINE__, strerror(errno));
    pid_t pid = fork();
    if (pid < 0) fatal("fork failed at %s:%d: %s", __FILE__, __LINE__, strerror(errno));
    if (pid == 0) {
        dup2(fd[1], 2);
        tokenizer_load("/nonexistent/bpe_simple_vocab_16e6.txt.gz");
        _exit(0);
    }
    close(fd[1]);
    char msg[1024] = {0};
    size_t got = 0;
    ssize_t r;
    while (got + 1 < sizeof(msg) && (r = read(fd[0], msg + got, sizeof(msg) - 1 - got)) > 0) got += (size_t)r;
    close(fd[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid) fatal("waitpid failed at %s:%d: %s", __FILE__, __LINE__, strerror(errno));
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 1, "tokenizer_load on a missing file did not exit(1)");
    EXPECT(strstr(msg, "scripts/get_vocab.sh") != NULL, "message lacks the hint: %s", msg);
}

// ./train_clip --tokenize on fixture captions (one per line) prints open_clip's 77 ids per line.
static void test_tokenize_cli(void) {
    if (!tok) SKIP("no vocabulary");
    FILE *in = fopenCheck(test_path("captions.txt"), "w");
    int used[64], n = 0;
    for (int i = 0; i < n_cases && n < 64; i++)
        if (cases[i].n > 0 && !strpbrk(cases[i].text, "\n\r") && cases[i].text[0]) fprintf(in, "%s\n", cases[i].text), used[n++] = i;
    fcloseCheck(in);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "./train_clip --tokenize < %s 2>/dev/null", test_path("captions.txt"));
    FILE *out = popen(cmd, "r");
    int line = 0;
    for (int k = 0; k < n; k++) {
        const Case *c = &cases[used[k]];
        for (int j = 0; j < T; j++) {
            int id = -1;
            if (fscanf(out, "%d", &id) != 1) break;
            int want = j < c->n ? c->ids[j] : 0;
            EXPECT(id == want, "line %d (fixture line %d): id %d is %d, open_clip %d", k + 1, c->line, j, id, want);
        }
        line++;
    }
    EXPECT(line == n && n > 40, "read %d of %d lines from ./train_clip --tokenize", line, n);
    EXPECT(pclose(out) == 0, "./train_clip --tokenize failed");
}

int main(void) {
#ifndef HAVE_UTF8PROC
    printf("skip test_tokenizer: built without utf8proc\n");
    return 0;
#endif
    const char *fixture = getenv("TRAIN_CLIP_TOKENIZER_FIXTURE");
    load_fixture(fixture && *fixture ? fixture : "tests/fixtures/tokenizer_parity.tsv");
    if (access(VOCAB, R_OK) == 0) tok = tokenizer_load(VOCAB);
    RUN(test_vocab_present);
    RUN(test_parity);
    RUN(test_threads);
    RUN(test_clean_unescapes_as_open_clip);
    RUN(test_truncation);
    RUN(test_missing_vocab_message);
    RUN(test_tokenize_cli);
    tokenizer_free(tok);
    for (int i = 0; i < n_cases; i++) free(cases[i].text);
    free(cases);
    TEST_EXIT();
}
