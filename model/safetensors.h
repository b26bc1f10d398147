// safetensors.h: reading and writing .safetensors files (8-byte header length, JSON header, raw
// little-endian tensor data), the format open_clip and Hugging Face load. Writes are atomic: a
// temporary file is written, flushed to disk, then renamed over the target.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char name[160];
    char dtype[8];      // "F32", "F64", "BF16", "F16", "I32", "I64", ...
    int ndim;
    int64_t shape[8];
    size_t numel;
    size_t begin, end;  // byte range in the data section
} StTensor;

typedef struct {
    char path[1024];
    StTensor *tensors;
    int num_tensors;
    char **meta_keys, **meta_values;  // __metadata__ (string -> string)
    int num_meta;
    const uint8_t *data;  // the data section, inside the mapping
    size_t data_bytes;
    void *map;            // the whole file, mapped read-only
    size_t map_bytes;
} StFile;

// Load a file (mapped read-only; st_free unmaps it). Returns 0, or -1 with a reason in err (the file is named in it).
int st_load(StFile *f, const char *path, char *err, size_t errlen);
void st_free(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
const char *st_meta(const StFile *f, const char *key);  // NULL if absent
// Copy a tensor to float32 (from F32/F64/BF16/F16) or int32 (from I32/I64). Stops with an error
// naming the file and tensor if the dtype cannot be converted or the size differs from numel.
void st_read_f32(const StFile *f, const StTensor *t, float *out, size_t numel);
void st_read_i32(const StFile *f, const StTensor *t, int32_t *out, size_t numel);

// Writer: add tensors (pointers are kept, not copied, until st_write) and metadata, then write.
typedef struct StWriter StWriter;
StWriter *st_writer_new(void);
void st_writer_add(StWriter *w, const char *name, const char *dtype, int ndim, const int64_t *shape, const void *data);
void st_writer_meta(StWriter *w, const char *key, const char *value);
// Write atomically (path.tmp, fsync, rename, fsync of the directory). Returns 0, or -1 with errno set
// and the reason in err; on failure the previous file at path is untouched. Frees the writer.
int st_write(StWriter *w, const char *path, char *err, size_t errlen);
