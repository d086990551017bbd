#!/usr/bin/env python3
"""Generates the tray and app icons of the AMC Sync tray app (standard library only).

Writes RGBA PNGs next to this script:
  tray-<state>-32.png, tray-<state>-64.png  for state in ok, working, attention, paused
  icon.png (256x256, the app/window icon; Tauri embeds it)

Each icon is a filled disc in the state's colour with a white glyph:
ok = check mark (green), working = open ring (blue), attention = "!" (amber),
paused = two bars (grey). Shapes are drawn with 4x4 supersampling.

Run: python3 src-tauri/icons/gen_icons.py   (deterministic output; commit the PNGs)
"""

import math
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

COLORS = {
    "ok": (46, 160, 67),
    "working": (31, 111, 235),
    "attention": (227, 160, 8),
    "paused": (128, 128, 128),
}
WHITE = (255, 255, 255)


def png_bytes(width, height, rgba_rows):
    """Encodes rows of (r, g, b, a) tuples as an 8-bit RGBA PNG."""

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = bytearray()
    for row in rgba_rows:
        raw.append(0)  # filter: none
        for px in row:
            raw.extend(px)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )


# Shapes in unit coordinates (0..1, y down). Each returns True when (x, y) is inside.
def disc(cx, cy, r):
    return lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def capsule(ax, ay, bx, by, r):
    def inside(x, y):
        dx, dy = bx - ax, by - ay
        t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)))
        px, py = ax + t * dx, ay + t * dy
        return (x - px) ** 2 + (y - py) ** 2 <= r * r

    return inside


def rect(x0, y0, x1, y1):
    return lambda x, y: x0 <= x <= x1 and y0 <= y <= y1


def arc(cx, cy, r_in, r_out, gap_from_deg, gap_to_deg):
    def inside(x, y):
        d2 = (x - cx) ** 2 + (y - cy) ** 2
        if not r_in * r_in <= d2 <= r_out * r_out:
            return False
        ang = math.degrees(math.atan2(y - cy, x - cx)) % 360
        return not gap_from_deg <= ang <= gap_to_deg

    return inside


GLYPHS = {
    "ok": [capsule(0.30, 0.52, 0.44, 0.66, 0.06), capsule(0.44, 0.66, 0.71, 0.36, 0.06)],
    "working": [arc(0.5, 0.5, 0.17, 0.28, 300, 360), disc(0.5 + 0.225, 0.5, 0.085)],
    "attention": [capsule(0.5, 0.27, 0.5, 0.56, 0.065), disc(0.5, 0.72, 0.07)],
    "paused": [rect(0.36, 0.30, 0.45, 0.70), rect(0.55, 0.30, 0.64, 0.70)],
}


def render(size, color, glyph, ss=4):
    body = disc(0.5, 0.5, 0.47)
    rows = []
    for py in range(size):
        row = []
        for px in range(size):
            cover = 0
            white = 0
            for sy in range(ss):
                for sx in range(ss):
                    x = (px + (sx + 0.5) / ss) / size
                    y = (py + (sy + 0.5) / ss) / size
                    if body(x, y):
                        cover += 1
                        if any(g(x, y) for g in glyph):
                            white += 1
            n = ss * ss
            if cover == 0:
                row.append((0, 0, 0, 0))
                continue
            # Colour: mix of disc colour and white by glyph coverage within the disc.
            w = white / cover
            rgb = tuple(round(c * (1 - w) + 255 * w) for c in color)
            row.append(rgb + (round(255 * cover / n),))
        rows.append(row)
    return png_bytes(size, size, rows)


def main():
    for state, color in COLORS.items():
        for size in (32, 64):
            path = os.path.join(HERE, f"tray-{state}-{size}.png")
            with open(path, "wb") as f:
                f.write(render(size, color, GLYPHS[state]))
    with open(os.path.join(HERE, "icon.png"), "wb") as f:
        f.write(render(256, COLORS["working"], GLYPHS["working"], ss=2))
    print("wrote", sorted(n for n in os.listdir(HERE) if n.endswith(".png")))


if __name__ == "__main__":
    main()
