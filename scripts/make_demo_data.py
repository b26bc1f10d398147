#!/usr/bin/env python3
"""make_demo_data.py: builds the demo dataset datasets/demo/ from Debian's openclipart-png package.

    apt-get install openclipart-png        # 8,121 clip-art PNGs under /usr/share/openclipart/png/
    python3 scripts/make_demo_data.py      # about 20 s; writes datasets/demo/ (git-ignored)

Each PNG (but 19 print-size ones over 4096 x 4096 pixels) becomes a sample whose caption is its category path and title, e.g.
animals/bugs/flying_wasp_gerald_g._02.png -> "animals bugs flying wasp" (the author signature and the
number are dropped, see caption_of). The zero-shot classes are the sub-categories (the top two folders) with
at least MIN_CLASS_IMAGES pictures, named in caption form ("animals bugs", "shapes stars", "signs and symbols
flags"): concrete kinds of picture, named as the captions the text tower learnt from begin. Deterministically,
about 5% of the images (by a hash of their path) are held out for evaluation, and at least MIN_CLASS_HELD_OUT
of each class:

    datasets/demo/train/00000.tar ...   training shards of 512 samples
    datasets/demo/val/00000.tar ...     held-out shards; their samples of a class in classnames.txt also
                                        have a `cls` member (the class index, as text)
    datasets/demo/classnames.txt        one class per line (not the catch-alls "unsorted" and "special",
                                        nor pictures directly in a top-level folder)

Without the package (or with --synthetic) it writes a captioned-shapes dataset of the same layout instead:
coloured discs, squares and triangles drawn into PNGs with the standard library (zlib), captioned like
"a red disc and a blue square", with classnames = the shape of the largest object. Python standard library
only; docs/data.md describes both.
"""
import argparse
import hashlib
import os
import random
import re
import struct
import sys
import tempfile
import zlib
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_shards import write_shards  # noqa: E402

OPENCLIPART = "/usr/share/openclipart/png"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PER_SHARD = 512
HELD_OUT_PERCENT = 5
MIN_CLASS_IMAGES = 50
MIN_CLASS_HELD_OUT = 10  # per class, so that no class's accuracy rests on one or two images
NOT_CLASSES = {"unsorted", "special"}  # catch-all folders, not kinds of picture
AUTHOR_MIN_TITLES = 3
MAX_PIXELS = 4096 * 4096  # 19 print-size posters and flags (up to 21k x 30k px) are left out


def path_hash(relative_path):
    return int(hashlib.sha1(relative_path.encode()).hexdigest()[:8], 16)


def held_out_sources(samples, classes):
    """The pictures whose path hash mod 100 is below HELD_OUT_PERCENT, and for each class the MIN_CLASS_HELD_OUT
    of lowest hash mod 100 (5% of a class of 50 would be 2 or 3 pictures, too few to measure its accuracy)."""
    held = {s["source"] for s in samples if path_hash(s["source"]) % 100 < HELD_OUT_PERCENT}
    for c in classes:
        of_class = sorted((s["source"] for s in samples if s["category"] == c), key=lambda source: path_hash(source) % 100)
        held.update(of_class[:MIN_CLASS_HELD_OUT])
    return held


def title_words(stem):
    """File name -> words, without the trailing picture number (flying_wasp_gerald_g._02 -> flying wasp gerald g.)."""
    words = [w for w in re.split(r"[_\s]+", stem) if w and w != "-"]
    while words and re.fullmatch(r"\d+", words[-1]):
        words.pop()
    return words


def signed(stem):
    """Openclipart names files title_author_NN; a cut-off author name ends in a bare underscore."""
    return re.search(r"_\d*$", stem) is not None


def find_authors(stems):
    """An author signature is a one- or two-word name that ends the signed names of at least
    AUTHOR_MIN_TITLES different titles. A single word also used in titles (a first word, or any word of an
    unsigned name: "black", "red") is never taken for one."""
    stems = list(stems)
    title_vocabulary = set()
    for stem in stems:
        words = title_words(stem)
        title_vocabulary.update(words[:1] if signed(stem) else words)
    titles_of = {}
    for stem in filter(signed, stems):
        words = title_words(stem)
        for n in (1, 2):
            if len(words) > n and (n == 2 or words[-1] not in title_vocabulary):
                titles_of.setdefault(tuple(words[-n:]), set()).add(tuple(words[:-n]))
    return {author for author, titles in titles_of.items() if len(titles) >= AUTHOR_MIN_TITLES}


def caption_of(relative_path, authors):
    folders, name = os.path.split(relative_path)
    stem = os.path.splitext(name)[0]
    words = title_words(stem)
    if signed(stem):
        for n in (2, 1):  # the longer signature first: "gerald g." before "g."
            if len(words) > n and tuple(words[-n:]) in authors:
                words = words[:-n]
                break
    words = [w.replace("-", " ").strip(".") for w in words]
    caption = " ".join(folders.replace("_", " ").split("/") + words)
    return re.sub(r"\s+", " ", caption).strip().lower()


def category_of(relative_path):
    """The class of a picture: its top two folders in caption form (animals/birds/penguin/x.png -> "animals birds");
    None for a picture directly in a top-level folder or in a catch-all one."""
    folders = relative_path.split("/")[:-1]
    if len(folders) < 2 or folders[0] in NOT_CLASSES:
        return None
    return " ".join(folders[:2]).replace("_", " ").lower()


def openclipart_samples():
    paths = []
    for root, dirs, files in os.walk(OPENCLIPART):
        dirs.sort()
        paths += [os.path.join(root, f) for f in sorted(files) if f.endswith(".png")]
    authors = find_authors(os.path.splitext(os.path.basename(p))[0] for p in paths)
    samples = []
    for path in paths:
        with open(path, "rb") as f:
            width, height = struct.unpack(">II", f.read(24)[16:24])  # the PNG header
        if width * height > MAX_PIXELS:
            continue
        rel = os.path.relpath(path, OPENCLIPART)
        samples.append({"image": path, "caption": caption_of(rel, authors), "source": rel, "category": category_of(rel)})
    return samples


# ---------------------------------------------------------------- the synthetic fallback

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 220, 40), "black": (20, 20, 20),
           "orange": (240, 140, 20), "purple": (140, 40, 180)}
SHAPES = ["disc", "square", "triangle"]


def png_bytes(w, h, rgb_rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\0" + row for row in rgb_rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def shape_picture(rng, size=96):
    """1-3 objects on a light background; returns (png bytes, caption, shape of the largest object)."""
    objects = []
    for _ in range(rng.randint(1, 3)):
        r = rng.randint(size // 10, size // 4)
        objects.append((rng.choice(SHAPES), rng.choice(sorted(COLOURS)), rng.randint(r, size - r), rng.randint(r, size - r), r))
    bg = rng.randint(200, 250)
    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            px = (bg, bg, bg)
            for shape, colour, cx, cy, r in objects:
                dx, dy = x - cx, y - cy
                inside = (dx * dx + dy * dy <= r * r if shape == "disc" else abs(dx) <= r and abs(dy) <= r if shape == "square"
                          else -r <= dy <= r and 2 * abs(dx) <= dy + r)
                if inside:
                    px = COLOURS[colour]
            row += bytes(px)
        rows.append(bytes(row))
    objects.sort(key=lambda o: o[2])  # named left to right
    caption = "a " + " and a ".join(f"{c} {s}" for s, c, _, _, _ in objects)
    return png_bytes(size, size, rows), caption, max(objects, key=lambda o: o[4])[0]


def synthetic_samples(n, folder):
    rng = random.Random(0)
    samples = []
    for i in range(n):
        data, caption, shape = shape_picture(rng)
        path = os.path.join(folder, f"shape_{i:05d}.png")
        with open(path, "wb") as f:
            f.write(data)
        samples.append({"image": path, "caption": caption, "source": f"synthetic/{i:05d}", "category": shape})
    return samples


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "datasets", "demo"))
    ap.add_argument("--synthetic", action="store_true", help="the captioned-shapes dataset even if openclipart-png is installed")
    ap.add_argument("--synthetic-size", type=int, default=4000)
    args = ap.parse_args()
    tmp = None
    if os.path.isdir(OPENCLIPART) and not args.synthetic:
        samples = openclipart_samples()
        print(f"openclipart-png: {len(samples)} images")
    else:
        if not args.synthetic:
            print(f"{OPENCLIPART} not found (apt-get install openclipart-png): writing the synthetic captioned-shapes dataset")
        tmp = tempfile.TemporaryDirectory()
        samples = synthetic_samples(args.synthetic_size, tmp.name)
    counts = Counter(s["category"] for s in samples)
    classes = sorted(c for c, n in counts.items() if c and n >= MIN_CLASS_IMAGES)
    held = held_out_sources(samples, classes)
    train = [s for s in samples if s["source"] not in held]
    # every training shard mixes the categories, as shards of web data do: in directory order a shuffle
    # buffer would see one category at a time (and whole batches of black-on-transparent line art)
    random.Random(0).shuffle(train)
    val = [s for s in samples if s["source"] in held]
    for s in val:
        if s["category"] in classes:
            s["cls"] = classes.index(s["category"])
    for split in ("train", "val"):  # a rebuild must not leave shards of an earlier, larger build behind
        d = os.path.join(args.out, split)
        for f in os.listdir(d) if os.path.isdir(d) else []:
            if f.endswith(".tar"):
                os.remove(os.path.join(d, f))
    n_train = len(write_shards(train, os.path.join(args.out, "train"), PER_SHARD))
    n_val = len(write_shards(val, os.path.join(args.out, "val"), PER_SHARD))
    with open(os.path.join(args.out, "classnames.txt"), "w") as f:
        f.write("".join(c + "\n" for c in classes))
    if tmp:
        tmp.cleanup()
    print(f"wrote {len(train)} training samples in {n_train} shards to {args.out}/train, {len(val)} held out in {n_val} "
          f"shards to {args.out}/val ({sum('cls' in s for s in val)} with a class of the {len(classes)} in classnames.txt)")
    print(f"examples: " + " | ".join(s["caption"] for s in train[:: max(1, len(train) // 5)][:5]))


if __name__ == "__main__":
    main()
