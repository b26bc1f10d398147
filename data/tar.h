// tar.h: reading webdataset shards. A streaming tar reader (POSIX ustar with the prefix field, GNU long
// names, PAX extended headers, octal and base-256 sizes, checksums; no extraction, no temp files) and the
// index of a shard's samples: consecutive members sharing a key (the path up to the first dot of the
// basename) form a sample, whose `txt` is the caption and first of jpg|png|jpeg|webp the image.
#pragma once
#include <stdint.h>
#include <stdio.h>

#define TAR_NAME_MAX 4096  // longest member path accepted (GNU/PAX names can be longer: the shard ends)

typedef struct {
    FILE *f;
    const char *label;  // the shard's path, for messages
    int64_t file_size;
    int64_t pos;        // offset of the next header
    char error[256];    // why the archive ended before its end-of-archive block; "" = clean end
} TarReader;

typedef struct {
    char name[TAR_NAME_MAX];
    int64_t offset;  // of the data in the file
    int64_t size;
} TarMember;

// f must be seekable (a file, or fmemopen'ed memory); it is not closed by the reader.
void tar_reader_init(TarReader *t, FILE *f, const char *label);
// The next regular-file member. Returns 1, or 0 at the end of the archive, where t->error says why if
// the archive is truncated or corrupt (the data of every member returned is complete in the file).
int tar_next_member(TarReader *t, TarMember *m);

// A member's place in the file; size -1 = the sample has no such member.
typedef struct {
    int64_t offset, size;
} TarSpan;

typedef struct {
    int64_t key;     // offset of the NUL-terminated key in ShardIndex.keys
    TarSpan image;   // first of jpg, png, jpeg, webp, in open_clip's order
    TarSpan txt;     // the caption
    TarSpan cls;     // class index as text (evaluation shards)
} WdsSample;

typedef struct {
    WdsSample *samples;
    int n, cap;
    char *keys;
    int64_t keys_len, keys_cap;
    char error[256];  // why the shard ended early; "" = read to its end
} ShardIndex;

// Read every header of the tar in f and group its members into samples (an index of offsets, no data is
// read except long names and PAX records). A truncated or corrupt tar keeps the samples before the damage
// and sets idx->error. Reuses idx's memory; free with shard_index_free.
void tar_index_shard(FILE *f, const char *label, ShardIndex *idx);
void shard_index_free(ShardIndex *idx);
static inline const char *shard_sample_key(const ShardIndex *idx, int s) { return idx->keys + idx->samples[s].key; }

// Read `size` bytes at `offset` of f into buf (size + 1 bytes, NUL-terminated for text). 0 on success.
int tar_read_span(FILE *f, TarSpan span, void *buf);
