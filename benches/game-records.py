#!/usr/bin/env python3
"""Assets like a game's for the Wine benches: COUNT files of KIB KiB of text-like records with
numbers (GDeflate packs them to about 42%), named OUT/assetNNNNN.bin, each ending in a non-zero
byte (the Windows program checks that it landed). Seeded: the same files every run.
Usage: benches/game-records.py OUT COUNT KIB"""
import random
import sys

out, count, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
words = [b"vertex", b"normal", b"texcoord", b"material", b"bone", b"weight", b"index", b"mip", b"lod"]
for i in range(count):
    parts, size = [], 0
    while size < kib * 1024:
        part = b"%s %d %d %d\n" % (rng.choice(words), rng.randrange(1 << 20), rng.randrange(1 << 16), rng.randrange(997))
        parts.append(part)
        size += len(part)
    data = b"".join(parts)[: kib * 1024 - 1] + b"\n"
    with open(f"{out}/asset{i:05}.bin", "wb") as f:
        f.write(data)
