#!/usr/bin/env python3
"""Draws resources/icon.png (a gate in a rounded square) with the standard library only."""
import struct, zlib, math, pathlib

SIZE = 128
def pixel(x, y):
    cx, cy, r = SIZE / 2, SIZE / 2, 26
    # rounded square background
    dx, dy = max(abs(x + 0.5 - cx) - (SIZE / 2 - r - 4), 0), max(abs(y + 0.5 - cy) - (SIZE / 2 - r - 4), 0)
    if math.hypot(dx, dy) > r:
        return (0, 0, 0, 0)
    bg = (0x1f, 0x5f, 0xa8, 255)
    # the gate: two posts and an arch, in white
    u, v = x + 0.5, y + 0.5
    posts = (30 <= u <= 44 or 84 <= u <= 98) and 48 <= v <= 104
    arch = 48 <= v <= 62 and 30 <= u <= 98
    top = math.hypot(u - 64, v - 48) <= 34 and math.hypot(u - 64, v - 48) >= 22 and v <= 48
    bars = 50 <= u <= 78 and 70 <= v <= 104 and int(u - 50) % 10 < 4
    return (255, 255, 255, 255) if posts or arch or top or bars else bg

rows = b"".join(b"\x00" + bytes(c for x in range(SIZE) for c in pixel(x, y)) for y in range(SIZE))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
pathlib.Path(__file__).with_name("icon.png").write_bytes(png)
