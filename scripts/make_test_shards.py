#!/usr/bin/env python3
"""make_test_shards.py: writes the small committed fixtures of the data tests.

  tests/fixtures/shards/   tar shards written by Python's tarfile (GNU, PAX, ustar formats), by the
                           webdataset library's TarWriter, hand-damaged copies (truncated, bad checksum,
                           base-256 sizes), odd entries (directories, links, FIFOs, metadata, PAX global
                           headers), one sample per skip reason, and four small training shards.
                           manifest.tsv lists what the C reader must find in each:
                           shard  key  status  width  height  caption (hex of the UTF-8 bytes)  label (cls or -1)
                           and shard-level lines: shard  -  shard_error  0|1  -  -  -
  tests/fixtures/images/   source images and what PIL (the open_clip reference) makes of them:
                           expect.tsv lines
                             decode  FILE  W  H  RAW            RAW = PIL's Image.open(FILE).convert("RGB")
                             crop    FILE  x y w h S  RAW       RAW = .crop((x, y, x+w, y+h)).resize((S, S), BICUBIC)
                             eval    FILE  S  RAW               RAW = torchvision Resize(S, BICUBIC) + CenterCrop(S)
                           RAW files are raw RGB bytes, (H, W, 3). big.jpg (640x480) has no RAW.

Needs PIL, numpy, torchvision and webdataset: run it with /opt/refenv/bin/python (or any env with them):
  /opt/refenv/bin/python scripts/make_test_shards.py
"""
import io
import os
import struct
import tarfile
import zlib

import numpy as np
import torchvision.transforms as T
import webdataset as wds
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARDS = os.path.join(ROOT, "tests", "fixtures", "shards")
IMAGES = os.path.join(ROOT, "tests", "fixtures", "images")
rng = np.random.default_rng(1234)


def picture(w, h):
    """A smooth coloured pattern with some noise, like a small photo."""
    y, x = np.mgrid[0:h, 0:w]
    fx, fy = rng.uniform(3, 9, 2)
    a = np.stack([128 + 100 * np.sin(x / fx + y / fy), 128 + 90 * np.cos(x / fy - y / fx), (x * 5 + y * 3) % 256], -1)
    return np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)


def encode(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(w, h):
    """A PNG whose header says w x h (the pixel data is a single row): for the pixel limit."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + png_chunk(b"IDAT", zlib.compress(b"\0" * 4)) + png_chunk(b"IEND", b"")


def size_of(data):
    im = Image.open(io.BytesIO(data))
    return im.size


# ---------------------------------------------------------------- the samples of the format tests

jpg0 = encode(Image.fromarray(picture(48, 32)), "JPEG", quality=85)
png1 = encode(Image.fromarray(np.dstack([picture(20, 30), rng.integers(0, 256, (30, 20), dtype=np.uint8)]), "RGBA"), "PNG")
gray2 = encode(Image.fromarray(picture(16, 16)[:, :, 0], "L"), "JPEG", quality=90)
webp3 = encode(Image.fromarray(picture(10, 10)), "WEBP", lossless=True)
pal4 = encode(Image.fromarray(picture(12, 9)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")
png5 = encode(Image.fromarray(picture(8, 8)), "PNG")
jpg5 = encode(Image.fromarray(picture(24, 16)), "JPEG")
LONG_DIR = "d" * 60 + "/" + "e" * 60  # > 100 bytes with the file name: GNU long name / PAX path / ustar prefix

# (key, [(extension, bytes)], status, image bytes that count, caption)
FORMAT_SAMPLES = [
    ("000000000", [("jpg", jpg0), ("json", b'{"w": 48}'), ("txt", "a red square on a blue background".encode())], jpg0),
    ("000000001", [("png", png1), ("txt", "café naïve — 東京 🚀".encode())], png1),
    ("images/sub.dir/000000002", [("cls", b"3"), ("jpeg", gray2), ("txt", b"grayscale")], gray2),
    (LONG_DIR + "/000000003", [("txt", b"webp sample"), ("webp", webp3)], webp3),
    ("000000004", [("PNG", pal4), ("TXT", b"upper case extensions\n")], pal4),
    ("000000005", [("png", png5), ("jpg", jpg5), ("meta.json", b"{}"), ("txt", b"prefers jpg")], jpg5),
]


def caption_of(members):
    for ext, data in members:
        if ext.lower() == "txt":
            return data
    return b""


def add(tf, name, data, **kw):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mtime = 1700000000
    for k, v in kw.items():
        setattr(ti, k, v)
    tf.addfile(ti, io.BytesIO(data))


def write_tar(path, samples, fmt, **kw):
    with tarfile.open(path, "w", format=fmt, **kw) as tf:
        for key, members, _ in samples:
            for ext, data in members:
                add(tf, f"{key}.{ext}", data)


manifest = []


def expect(shard, key, status, image=None, caption=b"", label=-1):
    w, h = size_of(image) if image is not None and status == "ok" else (0, 0)
    manifest.append(f"{shard}\t{key}\t{status}\t{w}\t{h}\t{caption.hex() if status == 'ok' else '-'}\t{label}")


def expect_error(shard, error):
    manifest.append(f"{shard}\t-\tshard_error\t{int(error)}\t-\t-\t-")


def label_of(members):
    return next((int(data) for ext, data in members if ext == "cls"), -1)


def expect_formats(shard, samples, error=False):
    for key, members, image in samples:
        expect(shard, key, "ok", image, caption_of(members), label_of(members))
    expect_error(shard, error)


def patch_header(buf, offset, field_offset, field):
    """Replace a header field and recompute the header's checksum."""
    h = bytearray(buf[offset:offset + 512])
    h[field_offset:field_offset + len(field)] = field
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    buf[offset:offset + 512] = h


def wds_key(name):
    """webdataset's key: the path up to the first dot of the basename."""
    d, _, base = name.rpartition("/")
    return (d + "/" if d else "") + base.split(".")[0]


def member_offsets(path):
    with tarfile.open(path) as tf:
        return [(m.name, m.offset, m.offset_data, m.size) for m in tf.getmembers()]


def main():
    os.makedirs(SHARDS, exist_ok=True)
    os.makedirs(IMAGES, exist_ok=True)
    for name, fmt in [("gnu.tar", tarfile.GNU_FORMAT), ("pax.tar", tarfile.PAX_FORMAT), ("ustar.tar", tarfile.USTAR_FORMAT)]:
        write_tar(os.path.join(SHARDS, name), FORMAT_SAMPLES, fmt)
        expect_formats(name, FORMAT_SAMPLES)

    # the webdataset library's own writer (keys without dots: it writes key + "." + extension)
    wds_samples = [(k.replace(".", "_"), m, img) for k, m, img in FORMAT_SAMPLES if k != "000000004"]
    with wds.TarWriter(os.path.join(SHARDS, "wds.tar"), mtime=1700000000) as tw:
        for key, members, _ in wds_samples:
            tw.write({"__key__": key, **{ext: data for ext, data in members}})
    expect_formats("wds.tar", [(k, sorted(m), img) for k, m, img in wds_samples])

    # base-256 sizes (GNU's encoding for members >= 8 GiB), written into every header
    path = os.path.join(SHARDS, "base256.tar")
    write_tar(path, FORMAT_SAMPLES[:2], tarfile.GNU_FORMAT)
    buf = bytearray(open(path, "rb").read())
    for name, offset, _, size in member_offsets(path):
        patch_header(buf, offset, 124, b"\x80" + size.to_bytes(11, "big"))
    open(path, "wb").write(buf)
    expect_formats("base256.tar", FORMAT_SAMPLES[:2])

    # GNU long link names ('K', written before the 'L' long name) on regular members
    path = os.path.join(SHARDS, "longlink.tar")
    key = "k" * 120 + "/000000000"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        add(tf, key + ".jpg", jpg0, linkname="l" * 120)
        add(tf, key + ".txt", b"long link names", linkname="m" * 120)
    expect("longlink.tar", key, "ok", jpg0, b"long link names")
    expect_error("longlink.tar", False)

    # truncated inside the first member of sample 3; bad checksum in the first header of sample 2
    gnu = open(os.path.join(SHARDS, "gnu.tar"), "rb").read()
    first_member = {}  # key -> (header offset, data offset) of its first member
    for name, offset, data_offset, _ in member_offsets(os.path.join(SHARDS, "gnu.tar")):
        first_member.setdefault(wds_key(name), (offset, data_offset))
    cut = first_member[FORMAT_SAMPLES[3][0]][1] + 10
    open(os.path.join(SHARDS, "truncated.tar"), "wb").write(gnu[:cut])
    expect_formats("truncated.tar", FORMAT_SAMPLES[:3], error=True)
    bad = bytearray(gnu)
    bad[first_member[FORMAT_SAMPLES[2][0]][0] + 10] ^= 0x55  # a name byte: the checksum no longer matches
    open(os.path.join(SHARDS, "badchecksum.tar"), "wb").write(bad)
    expect_formats("badchecksum.tar", FORMAT_SAMPLES[:2], error=True)

    # entries that are not samples: directories, links, a FIFO, metadata, hidden and extension-less files,
    # a PAX global header; and a member with no image or caption
    path = os.path.join(SHARDS, "odd.tar")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global header"}) as tf:
        add(tf, "dir", b"", type=tarfile.DIRTYPE)
        add(tf, "__meta__/info.txt", b"skipped metadata")
        add(tf, "000000000.jpg", jpg0)
        add(tf, "000000000.txt", b"first")
        add(tf, "link.jpg", b"", type=tarfile.SYMTYPE, linkname="000000000.jpg")
        add(tf, "hard.txt", b"", type=tarfile.LNKTYPE, linkname="000000000.txt")
        add(tf, "fifo.jpg", b"", type=tarfile.FIFOTYPE)
        add(tf, "noextension", b"x")
        add(tf, ".hidden.txt", b"hidden")
        add(tf, "000000001.png", png5)
        add(tf, "000000001.txt", b"second")
        add(tf, "notes.json", b"{}")
    expect("odd.tar", "000000000", "ok", jpg0, b"first")
    expect("odd.tar", "000000001", "ok", png5, b"second")
    expect("odd.tar", "notes", "missing_caption")
    expect_error("odd.tar", False)

    # one sample per skip reason, between good ones
    good = encode(Image.fromarray(picture(20, 20)), "JPEG")
    pngs = encode(Image.fromarray(picture(30, 20)), "PNG")
    bad_samples = [
        ("good_0", [("jpg", good), ("txt", b"good zero")], "ok"),
        ("truncated_jpeg", [("jpg", jpg0[: len(jpg0) * 2 // 3]), ("txt", b"cut jpeg")], "corrupt_image"),
        ("garbage_jpeg", [("jpg", b"\xff\xd8\xff" + bytes(rng.integers(0, 256, 300, dtype=np.uint8))), ("txt", b"garbage")], "corrupt_image"),
        ("truncated_png", [("png", pngs[: len(pngs) // 2]), ("txt", b"cut png")], "corrupt_image"),
        ("zero_byte", [("jpg", b""), ("txt", b"zero bytes")], "empty_member"),
        ("zero_caption", [("jpg", good), ("txt", b"")], "empty_member"),
        ("missing_caption", [("png", pngs)], "missing_caption"),
        ("missing_image", [("txt", b"no image")], "missing_image"),
        ("non_utf8", [("jpg", good), ("txt", b"\xff\xfe not utf-8 \xc3\x28")], "bad_caption"),
        ("blank_caption", [("jpg", good), ("txt", b"  \n\t ")], "bad_caption"),
        ("nul_caption", [("jpg", good), ("txt", b"abc\x00def")], "bad_caption"),
        ("oversized", [("png", png_claiming(20000, 20000)), ("txt", b"huge")], "too_large"),
        ("unsupported", [("jpg", b"II*\x00" + bytes(60)), ("txt", b"a tiff")], "unsupported"),
        ("good_1", [("png", pngs), ("txt", b"good one")], "ok"),
    ]
    write_tar(os.path.join(SHARDS, "bad.tar"), bad_samples, tarfile.GNU_FORMAT)
    for key, members, status in bad_samples:
        image = next((d for e, d in members if e in ("jpg", "png")), None)
        expect("bad.tar", key, status, image, caption_of(members))
    expect_error("bad.tar", False)

    # four training shards of 12 samples (one zero-byte image in shard 2) for the loader tests
    for s in range(4):
        samples = []
        for i in range(12):
            key = f"{s:05d}{i:04d}"
            w, h = [int(v) for v in rng.integers(12, 33, 2)]
            im = Image.fromarray(picture(w, h))
            data = encode(im, "JPEG", quality=90) if i % 2 == 0 else encode(im, "PNG")
            ext = "jpg" if i % 2 == 0 else "png"
            if s == 2 and i == 5:
                data = b""
            samples.append((key, [(ext, data), ("txt", f"training sample {s} {i}".encode())], data))
        name = f"train-{s}.tar"
        write_tar(os.path.join(SHARDS, name), samples, tarfile.GNU_FORMAT)
        for key, members, data in samples:
            expect(name, key, "ok" if data else "empty_member", data or None, caption_of(members))
        expect_error(name, False)

    with open(os.path.join(SHARDS, "manifest.tsv"), "w") as f:
        f.write("\n".join(manifest) + "\n")
    write_images()


def write_images():
    lines = []

    def raw(name, im):
        a = np.asarray(im.convert("RGB"), dtype=np.uint8)
        a.tofile(os.path.join(IMAGES, name))
        return a.shape[1], a.shape[0]

    def source(name, data):
        open(os.path.join(IMAGES, name), "wb").write(data)
        w, h = raw(name + ".rgb", Image.open(io.BytesIO(data)))
        lines.append(f"decode\t{name}\t{w}\t{h}\t{name}.rgb")

    photo = Image.fromarray(picture(67, 43))
    source("photo.png", encode(photo, "PNG"))
    source("photo.jpg", encode(photo, "JPEG", quality=90))
    source("progressive.jpg", encode(photo, "JPEG", quality=80, progressive=True))
    source("gray.jpg", encode(photo.convert("L"), "JPEG"))
    source("cmyk.jpg", encode(photo.convert("CMYK"), "JPEG"))
    source("rgba.png", encode(Image.fromarray(np.dstack([picture(33, 21), rng.integers(0, 256, (21, 33), dtype=np.uint8)]), "RGBA"), "PNG"))
    source("la.png", encode(Image.fromarray(picture(15, 17)[:, :, 0]).convert("LA"), "PNG"))
    source("palette.png", encode(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=32), "PNG", transparency=3))
    source("photo.gif", encode(photo.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"))
    source("photo.bmp", encode(photo, "BMP"))
    source("lossless.webp", encode(photo, "WEBP", lossless=True))
    source("lossy.webp", encode(photo, "WEBP", quality=80))
    # 16-bit RGB PNG (stdlib writer): PIL keeps the high byte of each sample, as stb_image does
    a16 = (picture(9, 7).astype(np.uint16) * 257 + rng.integers(0, 256, (7, 9, 3))).astype(">u2")
    rows = b"".join(b"\0" + a16[y].tobytes() for y in range(7))
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 9, 7, 16, 2, 0, 0, 0))
    data += png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b"")
    source("rgb16.png", data)

    # a larger JPEG for DCT-domain scaling (no PIL reference: the test compares scaled and full decodes)
    open(os.path.join(IMAGES, "big.jpg"), "wb").write(encode(Image.fromarray(picture(640, 480)), "JPEG", quality=60))

    # crops and resizes of the PNG photo (lossless, so only the resampling is compared)
    for k, (x, y, w, h, S) in enumerate([(0, 0, 67, 43, 32), (5, 3, 60, 38, 32), (10, 2, 30, 40, 24), (0, 0, 67, 43, 96),
                                         (40, 1, 27, 42, 17), (3, 7, 20, 9, 40), (1, 1, 65, 20, 32), (2, 2, 12, 40, 16)]):
        name = f"crop{k}.rgb"
        raw(name, photo.crop((x, y, x + w, y + h)).resize((S, S), Image.BICUBIC))
        lines.append(f"crop\tphoto.png\t{x}\t{y}\t{w}\t{h}\t{S}\t{name}")
    tall = Image.fromarray(picture(31, 70))
    open(os.path.join(IMAGES, "tall.png"), "wb").write(encode(tall, "PNG"))
    for src, im in [("photo.png", photo), ("tall.png", tall)]:
        for S in (16, 32, 80):
            name = f"eval_{src.split('.')[0]}_{S}.rgb"
            raw(name, T.Compose([T.Resize(S, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(S)])(im))
            lines.append(f"eval\t{src}\t{S}\t{name}")
    with open(os.path.join(IMAGES, "expect.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
