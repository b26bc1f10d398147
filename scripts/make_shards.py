#!/usr/bin/env python3
"""make_shards.py: turns captioned images into webdataset shards that train_clip reads.

    python3 scripts/make_shards.py INPUT OUT_DIR [--per-shard N] [--shuffle SEED]

INPUT is either
  - a folder of images, each with a sidecar caption file of the same stem (cat.jpg + cat.txt), searched
    recursively, or
  - a CSV or TSV file whose rows are `path,caption` (a header row naming `path` and `caption` columns is
    recognised; relative paths are relative to the file's folder).

OUT_DIR receives shards of N samples (default 10000) with img2dataset-style names: 00000.tar, 00001.tar, ...;
sample keys are the shard number and the index in the shard (000000000, 000000001, ..., 000010000, ...).
Each sample has the image bytes as they are (`.jpg` for JPEG files, `.png`, `.webp`), `.txt` (the caption)
and `.json` (key, caption, source path). Images in other formats and images without a caption are left
out and counted. Shards are written to a temporary name and renamed, with fixed metadata (mtime 0), so the
same input always gives the same bytes. Python standard library only.
"""
import argparse
import csv
import io
import json
import os
import random
import sys
import tarfile

IMAGE_EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def add_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shards(samples, out_dir, per_shard, first_shard=0):
    """samples: dicts with "image" (a path), "caption" (str) and optionally "cls" (int) and "source".
    Writes OUT_DIR/00000.tar, ... and returns the shard paths."""
    os.makedirs(out_dir, exist_ok=True)
    n_shards = (len(samples) + per_shard - 1) // per_shard
    shard_digits = max(5, len(str(first_shard + n_shards - 1)))
    sample_digits = max(4, len(str(per_shard - 1)))
    paths = []
    for s in range(n_shards):
        shard = first_shard + s
        path = os.path.join(out_dir, f"{shard:0{shard_digits}d}.tar")
        with tarfile.open(path + ".tmp", "w", format=tarfile.PAX_FORMAT) as tar:
            for i, sample in enumerate(samples[s * per_shard:(s + 1) * per_shard]):
                key = f"{shard:0{shard_digits}d}{i:0{sample_digits}d}"
                ext = IMAGE_EXTENSIONS[os.path.splitext(sample["image"])[1].lower()]
                with open(sample["image"], "rb") as f:
                    add_member(tar, f"{key}.{ext}", f.read())
                add_member(tar, f"{key}.txt", sample["caption"].encode("utf-8"))
                if "cls" in sample:
                    add_member(tar, f"{key}.cls", str(sample["cls"]).encode())
                meta = {"key": key, "caption": sample["caption"], "source": sample.get("source", sample["image"])}
                add_member(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths


def from_folder(folder, skipped):
    samples = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() == ".txt":
                continue
            path = os.path.join(root, name)
            if ext.lower() not in IMAGE_EXTENSIONS:
                skipped["not a jpg/jpeg/png/webp file"] = skipped.get("not a jpg/jpeg/png/webp file", 0) + 1
                continue
            caption_path = os.path.join(root, stem + ".txt")
            if not os.path.exists(caption_path):
                skipped["no caption file"] = skipped.get("no caption file", 0) + 1
                continue
            with open(caption_path, encoding="utf-8") as f:
                samples.append({"image": path, "caption": f.read().strip()})
    return samples


def from_table(table, skipped):
    base = os.path.dirname(os.path.abspath(table))
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t" if table.lower().endswith(".tsv") else ","))
    path_col, caption_col, first_line = 0, 1, 1
    if rows and "path" in rows[0] and "caption" in rows[0]:
        path_col, caption_col, first_line = rows[0].index("path"), rows[0].index("caption"), 2
        rows = rows[1:]
    samples = []
    for line, row in enumerate(rows, first_line):
        if len(row) <= max(path_col, caption_col):
            sys.exit(f"error: {table}:{line}: expected path and caption columns, got {row}")
        path = row[path_col] if os.path.isabs(row[path_col]) else os.path.join(base, row[path_col])
        if os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
            skipped["not a jpg/jpeg/png/webp file"] = skipped.get("not a jpg/jpeg/png/webp file", 0) + 1
        elif not os.path.exists(path):
            skipped["image file missing"] = skipped.get("image file missing", 0) + 1
        else:
            samples.append({"image": path, "caption": row[caption_col].strip()})
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="folder of images with sidecar .txt captions, or a .csv/.tsv of path,caption")
    ap.add_argument("out_dir")
    ap.add_argument("--per-shard", type=int, default=10000, help="samples per shard (default 10000)")
    ap.add_argument("--shuffle", type=int, metavar="SEED", help="shuffle the samples with this seed before sharding")
    args = ap.parse_args()
    if args.per_shard < 1:
        sys.exit("error: --per-shard must be at least 1")
    skipped = {}
    if os.path.isdir(args.input):
        samples = from_folder(args.input, skipped)
    elif os.path.isfile(args.input):
        samples = from_table(args.input, skipped)
    else:
        sys.exit(f"error: {args.input} is neither a folder nor a file")
    if not samples:
        sys.exit(f"error: no captioned jpg/jpeg/png/webp images found in {args.input}")
    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(samples)
    paths = write_shards(samples, args.out_dir, args.per_shard)
    print(f"wrote {len(samples)} samples in {len(paths)} shards to {args.out_dir}")
    for reason, n in sorted(skipped.items()):
        print(f"left out {n}: {reason}")
    print(f"config: data = {args.out_dir}")


if __name__ == "__main__":
    main()
