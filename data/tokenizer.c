// tokenizer.c: CLIP's byte-level BPE tokenizer as open_clip's SimpleTokenizer (clean='lower'): loading
// bpe_simple_vocab_16e6.txt.gz, the pre-token split, BPE merges, a per-thread cache of encoded words,
// SOT/EOT, truncation and padding, and ./train_clip --tokenize. The caption clean-up (ftfy, html,
// whitespace, lower-case) is data/text_clean.c.
#include "tokenizer.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "../model/utils.h"
#include "text_clean.h"

#ifdef HAVE_UTF8PROC
#include <utf8proc.h>
#endif

static void thread_state_free(void *p);

#define DEFAULT_BPE_PATH "data/bpe_simple_vocab_16e6.txt.gz"
#define N_MERGES 48894  // open_clip reads lines 1 .. 49152-256-2 of the file
#define N_VOCAB 49408   // 256 bytes, 256 bytes + "</w>", the merges, SOT, EOT
#define MAX_SYMBOL_BYTES 128  // the longest symbol is 32 characters of up to 2 UTF-8 bytes, + "</w>"

// Per-thread word cache: words up to CACHE_MAX_WORD bytes; emptied when any part is full.
#define CACHE_SLOTS (1 << 15)
#define CACHE_MAX_WORD 64
#define CACHE_KEY_BYTES (1 << 20)
#define CACHE_IDS (1 << 18)

typedef struct {
    uint32_t key;    // left id << 16 | right id
    int32_t rank;    // line of the merge in the file (-1: empty slot)
    int32_t merged;  // id of the merged symbol
} Pair;

typedef struct {
    uint32_t hash, key_off, ids_off;
    uint16_t key_len, n_ids;  // key_len 0: empty slot
} CacheSlot;

typedef struct ThreadState {
    struct Tokenizer *owner;
    struct ThreadState *prev, *next;  // in owner's list of states
    CleanScratch scratch;
    Str32 text;      // the cleaned caption
    uint8_t *word;   // UTF-8 of the current pre-token
    int word_cap;
    int32_t *sym, *nxt, *prv, *out;  // BPE work: symbols as a linked list over the word's bytes
    uint64_t *heap;                  // (rank << 32 | position) of candidate pairs
    int work_cap;
    CacheSlot *slots;
    uint8_t *keys;
    int32_t *ids;
    int used, keys_used, ids_used;
} ThreadState;

struct Tokenizer {
    int32_t byte_id[256];  // a byte's symbol id (its place in open_clip's bytes_to_unicode order)
    Pair *pairs;
    uint32_t pair_mask;
    pthread_key_t key;     // this thread's ThreadState
    pthread_mutex_t lock;  // guards states
    ThreadState *states;
};

static uint32_t fnv1a(const void *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ ((const uint8_t *)p)[i]) * 16777619u;
    return h;
}

static uint32_t mix32(uint32_t x) {
    x ^= x >> 16, x *= 0x7feb352dU, x ^= x >> 15, x *= 0x846ca68bU, x ^= x >> 16;
    return x;
}

static const Pair *pair_find(const Tokenizer *t, int32_t left, int32_t right) {
    uint32_t key = (uint32_t)left << 16 | (uint32_t)right;
    for (uint32_t h = mix32(key) & t->pair_mask;; h = (h + 1) & t->pair_mask) {
        if (t->pairs[h].rank < 0) return NULL;
        if (t->pairs[h].key == key) return &t->pairs[h];
    }
}

// ---------------------------------------------------------------- loading
// The whole decompressed file, NUL-terminated.
static char *read_gz(const char *path) {
    gzFile f = gzopen(path, "rb");
    if (!f) fatal("gzopen(\"%s\") failed at %s:%d: %s", path, __FILE__, __LINE__, errno ? strerror(errno) : "out of memory");
    size_t cap = 1 << 22, n = 0;
    char *buf = mallocCheck(cap);
    for (;;) {
        if (n + (1 << 16) + 1 > cap) buf = reallocCheck(buf, cap *= 2);
        int got = gzread(f, buf + n, 1 << 16);
        if (got < 0) {
            int err;
            fatal("gzread(\"%s\") failed at %s:%d: %s", path, __FILE__, __LINE__, gzerror(f, &err));
        }
        if (got == 0) break;
        n += (size_t)got;
    }
    int rc = gzclose(f);
    if (rc != Z_OK)
        fatal("gzclose(\"%s\") failed at %s:%d: %s", path, __FILE__, __LINE__,
              rc == Z_BUF_ERROR ? "the file ends early (a cut-off download?)" : zError(rc));
    buf[n] = '\0';
    return buf;
}

// Load-time map from a vocabulary string (as the file writes it) to its id; a later insert wins, as in
// open_clip's dict(zip(vocab, range(len(vocab)))).
typedef struct {
    const char **key;
    int32_t *id;
    uint32_t mask;
} StrMap;

static void strmap_put(StrMap *m, const char *key, int32_t id) {
    uint32_t h = fnv1a(key, strlen(key)) & m->mask;
    while (m->key[h] && strcmp(m->key[h], key) != 0) h = (h + 1) & m->mask;
    m->key[h] = key, m->id[h] = id;
}

static int32_t strmap_get(const StrMap *m, const char *key) {
    uint32_t h = fnv1a(key, strlen(key)) & m->mask;
    while (m->key[h] && strcmp(m->key[h], key) != 0) h = (h + 1) & m->mask;
    return m->key[h] ? m->id[h] : -1;
}

Tokenizer *tokenizer_load(const char *path) {
#ifndef HAVE_UTF8PROC
    fatal("the tokenizer needs utf8proc, and train_clip was built without it "
          "(Debian: apt-get install libutf8proc-dev, or scripts/vendor_deps.sh; then make clean && make)");
#endif
    if (!path) {
        const char *env = getenv("TRAIN_CLIP_BPE");
        path = env && *env ? env : DEFAULT_BPE_PATH;
    }
    if (access(path, R_OK) != 0)
        fatal("cannot read the BPE vocabulary %s (%s): run scripts/get_vocab.sh to fetch it into %s, or set "
              "TRAIN_CLIP_BPE to a copy of open_clip's bpe_simple_vocab_16e6.txt.gz",
              path, strerror(errno), DEFAULT_BPE_PATH);
    char *data = read_gz(path);

    // Lines 1..N_MERGES are "left right" merges, in rank order (line 0 is a version header).
    char *(*merge)[2] = mallocCheck(N_MERGES * sizeof(*merge));
    char *line = data;
    for (int l = 0; l <= N_MERGES; l++) {
        char *end = strchr(line, '\n');
        if (!end) fatal("%s: %d lines, expected at least %d: not open_clip's BPE vocabulary", path, l, N_MERGES + 1);
        *end = '\0';
        if (l > 0) {
            char *space = strchr(line, ' ');
            if (!space || space == line || !space[1] || strchr(space + 1, ' '))
                fatal("%s:%d: expected two symbols separated by one space", path, l + 1);
            *space = '\0';
            merge[l - 1][0] = line, merge[l - 1][1] = space + 1;
        }
        line = end + 1;
    }

    // Vocabulary strings: the bytes in bytes_to_unicode order (printable Latin-1 bytes stand for
    // themselves, the others for U+0100 onwards), the same with "</w>", then each merge's concatenation.
    Tokenizer *t = callocCheck(1, sizeof(Tokenizer));
    char *text = callocCheck(N_VOCAB, MAX_SYMBOL_BYTES);  // the string of each id, as the file writes it
#define TEXT(id) (text + (size_t)(id) * MAX_SYMBOL_BYTES)
    for (int pass = 0, id = 0, n_extra = 0; pass < 2; pass++) {
        for (int b = 0; b < 256; b++) {
            int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            if (printable != (pass == 0)) continue;
            t->byte_id[b] = id;
            int len = utf8_put(printable ? (uint32_t)b : 256u + n_extra++, (uint8_t *)TEXT(id));
            memcpy(TEXT(id + 256), TEXT(id), (size_t)len);
            memcpy(TEXT(id + 256) + len, "</w>", 4);
            id++;
        }
    }
    StrMap map = {callocCheck(1 << 17, sizeof(char *)), callocCheck(1 << 17, sizeof(int32_t)), (1 << 17) - 1};
    for (int id = 0; id < 512; id++) strmap_put(&map, TEXT(id), id);
    for (int k = 0; k < N_MERGES; k++) {
        size_t l0 = strlen(merge[k][0]), l1 = strlen(merge[k][1]);
        if (l0 + l1 >= MAX_SYMBOL_BYTES) fatal("%s:%d: merge longer than expected", path, k + 2);
        memcpy(TEXT(512 + k), merge[k][0], l0);
        memcpy(TEXT(512 + k) + l0, merge[k][1], l1);
        strmap_put(&map, TEXT(512 + k), 512 + k);
    }

    // Merge table. The heap-based BPE below needs each merge's parts to exist before the merge.
    t->pair_mask = (1 << 17) - 1;
    t->pairs = mallocCheck((size_t)(t->pair_mask + 1) * sizeof(Pair));
    for (uint32_t i = 0; i <= t->pair_mask; i++) t->pairs[i].rank = -1;
    for (int k = 0; k < N_MERGES; k++) {
        int32_t left = strmap_get(&map, merge[k][0]), right = strmap_get(&map, merge[k][1]);
        if (left < 0 || right < 0 || left >= 512 + k || right >= 512 + k)
            fatal("%s:%d: merge of symbols not defined by earlier lines", path, k + 2);
        uint32_t key = (uint32_t)left << 16 | (uint32_t)right, h = mix32(key) & t->pair_mask;
        while (t->pairs[h].rank >= 0 && t->pairs[h].key != key) h = (h + 1) & t->pair_mask;
        t->pairs[h] = (Pair){key, k, strmap_get(&map, TEXT(512 + k))};
    }
#undef TEXT
    free(map.key);
    free(map.id);
    free(text);
    free(merge);
    free(data);

    int rc = pthread_key_create(&t->key, thread_state_free);
    if (rc) fatal("pthread_key_create failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
    rc = pthread_mutex_init(&t->lock, NULL);
    if (rc) fatal("pthread_mutex_init failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
    return t;
}

// ---------------------------------------------------------------- per-thread state
static void thread_state_free(void *p) {
    ThreadState *ts = p;
    Tokenizer *t = ts->owner;
    pthread_mutex_lock(&t->lock);
    if (ts->prev) ts->prev->next = ts->next;
    else t->states = ts->next;
    if (ts->next) ts->next->prev = ts->prev;
    pthread_mutex_unlock(&t->lock);
    clean_scratch_free(&ts->scratch);
    free(ts->text.p), free(ts->word);
    free(ts->sym), free(ts->nxt), free(ts->prv), free(ts->out), free(ts->heap);
    free(ts->slots), free(ts->keys), free(ts->ids);
    free(ts);
}

static ThreadState *thread_state(const Tokenizer *tc) {
    Tokenizer *t = (Tokenizer *)tc;  // the list of states is the only part that changes after loading
    ThreadState *ts = pthread_getspecific(t->key);
    if (ts) return ts;
    ts = callocCheck(1, sizeof(ThreadState));
    ts->owner = t;
    ts->slots = callocCheck(CACHE_SLOTS, sizeof(CacheSlot));
    ts->keys = mallocCheck(CACHE_KEY_BYTES);
    ts->ids = mallocCheck(CACHE_IDS * sizeof(int32_t));
    pthread_mutex_lock(&t->lock);
    ts->next = t->states;
    if (t->states) t->states->prev = ts;
    t->states = ts;
    pthread_mutex_unlock(&t->lock);
    int rc = pthread_setspecific(t->key, ts);
    if (rc) fatal("pthread_setspecific failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
    return ts;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    pthread_key_delete(t->key);  // threads still alive no longer run the destructor on exit
    while (t->states) thread_state_free(t->states);
    pthread_mutex_destroy(&t->lock);
    free(t->pairs);
    free(t);
}

// ---------------------------------------------------------------- BPE
static void heap_push(uint64_t *h, int *n, uint64_t v) {
    int i = (*n)++;
    for (; i > 0 && h[(i - 1) / 2] > v; i = (i - 1) / 2) h[i] = h[(i - 1) / 2];
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, int *n) {
    uint64_t top = h[0], last = h[--*n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= last) break;
        h[i] = h[c], i = c;
    }
    h[i] = last;
    return top;
}

static void push_pair(const Tokenizer *t, ThreadState *ts, int *heap_n, int i) {
    const Pair *p = pair_find(t, ts->sym[i], ts->sym[ts->nxt[i]]);
    if (p) heap_push(ts->heap, heap_n, (uint64_t)p->rank << 32 | (uint32_t)i);
}

// open_clip's SimpleTokenizer.bpe on the bytes w[0..n) of one pre-token, ids into ts->out; returns
// their count. open_clip repeatedly merges every occurrence (left to right) of the adjacent pair with
// the lowest rank. A heap of (rank, position) does the same in O(n log n): merging a pair only makes
// pairs of higher rank (a merge's parts come before it in the file, checked at load), and equal
// ranks pop left to right. Entries whose pair has changed since they were pushed are skipped.
static int bpe(const Tokenizer *t, ThreadState *ts, const uint8_t *w, int n) {
    if (n > ts->work_cap) {
        ts->work_cap = n + 64;
        ts->sym = reallocCheck(ts->sym, (size_t)ts->work_cap * sizeof(int32_t));
        ts->nxt = reallocCheck(ts->nxt, (size_t)ts->work_cap * sizeof(int32_t));
        ts->prv = reallocCheck(ts->prv, (size_t)ts->work_cap * sizeof(int32_t));
        ts->out = reallocCheck(ts->out, (size_t)ts->work_cap * sizeof(int32_t));
        ts->heap = reallocCheck(ts->heap, 3 * (size_t)ts->work_cap * sizeof(uint64_t));  // n-1 + 2 per merge
    }
    int32_t *sym = ts->sym, *nxt = ts->nxt, *prv = ts->prv;
    for (int i = 0; i < n; i++) sym[i] = t->byte_id[w[i]], nxt[i] = i + 1, prv[i] = i - 1;
    sym[n - 1] += 256;  // the last symbol carries the end-of-word mark "</w>"
    int heap_n = 0;
    for (int i = 0; i + 1 < n; i++) push_pair(t, ts, &heap_n, i);
    while (heap_n) {
        uint64_t top = heap_pop(ts->heap, &heap_n);
        int i = (int)(uint32_t)top, j = nxt[i];
        if (sym[i] < 0 || j >= n) continue;
        const Pair *p = pair_find(t, sym[i], sym[j]);
        if (!p || p->rank != (int32_t)(top >> 32)) continue;
        sym[i] = p->merged, sym[j] = -1;
        nxt[i] = nxt[j];
        if (nxt[j] < n) prv[nxt[j]] = i;
        if (prv[i] >= 0) push_pair(t, ts, &heap_n, prv[i]);
        if (nxt[i] < n) push_pair(t, ts, &heap_n, i);
    }
    int m = 0;
    for (int i = 0; i < n; i = nxt[i]) ts->out[m++] = sym[i];
    return m;
}

// The ids of one pre-token, from this thread's cache or from bpe(); *count gets their number.
static const int32_t *word_ids(const Tokenizer *t, ThreadState *ts, const uint8_t *w, int n, int *count) {
    if (n > CACHE_MAX_WORD) return *count = bpe(t, ts, w, n), ts->out;
    uint32_t h = fnv1a(w, (size_t)n), i = h & (CACHE_SLOTS - 1);
    for (; ts->slots[i].key_len; i = (i + 1) & (CACHE_SLOTS - 1)) {
        const CacheSlot *s = &ts->slots[i];
        if (s->hash == h && s->key_len == n && memcmp(ts->keys + s->key_off, w, (size_t)n) == 0)
            return *count = s->n_ids, ts->ids + s->ids_off;
    }
    int m = bpe(t, ts, w, n);
    if (ts->used + 1 > CACHE_SLOTS / 4 * 3 || ts->keys_used + n > CACHE_KEY_BYTES || ts->ids_used + m > CACHE_IDS) {
        memset(ts->slots, 0, CACHE_SLOTS * sizeof(CacheSlot));
        ts->used = ts->keys_used = ts->ids_used = 0;
        i = h & (CACHE_SLOTS - 1);
    }
    ts->slots[i] = (CacheSlot){h, (uint32_t)ts->keys_used, (uint32_t)ts->ids_used, (uint16_t)n, (uint16_t)m};
    memcpy(ts->keys + ts->keys_used, w, (size_t)n);
    memcpy(ts->ids + ts->ids_used, ts->out, (size_t)m * sizeof(int32_t));
    ts->used++, ts->keys_used += n, ts->ids_used += m;
    return *count = m, ts->out;
}

// ---------------------------------------------------------------- the split
#ifdef HAVE_UTF8PROC
static int is_letter(uint32_t c) {
    if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
}

static int is_number(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO;
}
#endif

// Length of the literal lit at s[i] under the regex's IGNORECASE (the text is lower-case already, but
// IGNORECASE also lets U+017F LONG S match 's'), or 0.
static int literal_at(const Str32 *s, int i, const char *lit) {
    int k = 0;
    for (; lit[k]; k++) {
        uint32_t c = i + k < s->n ? s->p[i + k] : 0;
        if (c == 0x17F) c = 's';
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c != (uint8_t)lit[k]) return 0;
    }
    return k;
}

// Characters no alternative of the pattern matches: the space (the only white space left after
// cleaning) and U+0345, which the regex module under IGNORECASE puts in none of the classes (it
// case-folds to a Greek letter, so it is neither in [\p{L}] nor in [^\s\p{L}\p{N}]).
static int is_gap(uint32_t c) { return c == ' ' || c == 0x345; }

// The end of the pre-token at s[i] under open_clip's pattern, tried in this order at each position:
//   <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// or i at a gap. *special gets SOT/EOT when the text is exactly a special token's name (open_clip's
// bpe cache maps those to themselves), else 0.
static int pretoken_end(const Str32 *s, int i, int32_t *special) {
    static const char *literals[] = {"<start_of_text>", "<end_of_text>", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    *special = 0;
    for (int k = 0; k < 9; k++) {
        int len = literal_at(s, i, literals[k]);
        if (!len) continue;
        if (k < 2) {
            int exact = 1;
            for (int q = 0; q < len; q++) exact &= s->p[i + q] == (uint8_t)literals[k][q];
            *special = exact ? (k == 0 ? TOKEN_SOT : TOKEN_EOT) : 0;
        }
        return i + len;
    }
#ifdef HAVE_UTF8PROC
    int j = i;
    if (is_gap(s->p[i])) {
        return i;
    } else if (is_letter(s->p[i])) {
        while (j < s->n && is_letter(s->p[j])) j++;
    } else if (is_number(s->p[i])) {
        j++;
    } else {
        while (j < s->n && !is_gap(s->p[j]) && !is_letter(s->p[j]) && !is_number(s->p[j])) j++;
    }
    return j;
#else
    return i;
#endif
}

// ---------------------------------------------------------------- encode
int tokenizer_encode(const Tokenizer *t, const char *text, int32_t *ids, int context_length) {
    if (context_length < 2) fatal("tokenizer_encode: context_length %d, needs at least 2 (SOT and EOT)", context_length);
    ThreadState *ts = thread_state(t);
    int n = 0;
    ids[n++] = TOKEN_SOT;
    int ok = text_clean(text, strlen(text), &ts->scratch, &ts->text) == 0 && ts->text.n > 0;
    // Up to context_length-1 text ids: one more than fits tells that the caption is truncated.
    const Str32 *s = &ts->text;
    for (int i = 0; ok && i < s->n && n < context_length;) {
        int32_t special;
        int end = pretoken_end(s, i, &special);
        if (end == i) {
            i++;
            continue;
        }
        if (special) {
            ids[n++] = special;
        } else {
            if (4 * (end - i) > ts->word_cap) {
                ts->word_cap = 4 * (end - i) + 64;
                ts->word = reallocCheck(ts->word, (size_t)ts->word_cap);
            }
            int len = 0;
            for (int q = i; q < end; q++) len += utf8_put(s->p[q], ts->word + len);
            int count;
            const int32_t *w = word_ids(t, ts, ts->word, len, &count);
            for (int q = 0; q < count && n < context_length; q++) ids[n++] = w[q];
        }
        i = end;
    }
    if (n == context_length) n--;  // truncated: open_clip keeps the first context_length and puts EOT last
    ids[n++] = TOKEN_EOT;
    for (int i = n; i < context_length; i++) ids[i] = 0;
    return ok ? n : -1;
}

// ---------------------------------------------------------------- ./train_clip --tokenize
int tokenize_main(const Config *c) {
    Tokenizer *t = tokenizer_load(NULL);
    int32_t *ids = mallocCheck((size_t)c->context_length * sizeof(int32_t));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    for (long lineno = 1; (len = getline(&line, &cap, stdin)) >= 0; lineno++) {
        if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
        if ((ssize_t)strlen(line) < len) fprintf(stderr, "warning: line %ld holds a NUL byte: encoded up to it\n", lineno);
        if (tokenizer_encode(t, line, ids, c->context_length) < 0)
            fprintf(stderr, "warning: line %ld is empty after cleaning or not valid UTF-8 (the loader skips it)\n", lineno);
        for (int i = 0; i < c->context_length; i++) printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
    }
    if (ferror(stdin)) fatal("getline(stdin) failed at %s:%d: %s", __FILE__, __LINE__, strerror(errno));
    if (fflush(stdout) != 0) fatal("writing stdout failed at %s:%d: %s", __FILE__, __LINE__, strerror(errno));
    free(line);
    free(ids);
    tokenizer_free(t);
    return 0;
}
