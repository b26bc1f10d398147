// tensorboard.h: TensorBoard event files (config `tensorboard = true`), written without TensorFlow or
// protobuf. A file <run_dir>/events.out.tfevents.<unix time>.<host>.<pid>.<n> holds TFRecords (length, masked CRC-32C
// of the length, an Event protobuf, masked CRC-32C of the Event); the first Event is the file version, each
// later one carries a step's scalars as Summary values (tag, simple_value). TensorBoard shows a run_dir as
// one run and merges the files of resumed runs in it.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    const char *tag;  // e.g. "train/loss"
    float value;
} TbScalar;

typedef struct {
    FILE *f;
    uint8_t *buf;  // the Event being encoded
    size_t cap;
    int failed;    // a write failed: the file takes no more events (a record after a cut one would not be read)
} TbWriter;

// Creates the event file in dir (which exists) and writes the file-version record; stops on an error.
void tb_open(TbWriter *w, const char *dir);
// One Event at `step` with the n scalars, stamped with the current wall time; flushed to the file. A failed write
// warns once and ends the file's events, not the run.
void tb_scalars(TbWriter *w, long step, const TbScalar *s, int n);
void tb_close(TbWriter *w);

// CRC-32C (Castagnoli), as TFRecord framing uses it, and its masked form ((crc >> 15 | crc << 17) + 0xa282ead8).
uint32_t crc32c(const uint8_t *data, size_t n);
uint32_t crc32c_masked(const uint8_t *data, size_t n);
