#!/usr/bin/env python3
"""Arrival files of other day shapes for the autoscale_day bench (`--arrivals FILE`), to check
that the adaptive warm pool is not tuned to the generator's own shape (BENCHMARKS.md,
"Autoscaling"). Same CSV format (`arrival_s,duration_s`); same daily curve as
testkit::arrivals (night, ramps 06-09 and 17-21, lunch dip) at other levels, with bursts of
other sizes and spreads, and optionally sudden steps of the rate. Seeded: the same shape gives
the same file.

    scripts/autoscale-shapes.py busy > busy.csv   # busy | instant | quiet | steps
"""
import math
import random
import sys


def level(h):
    if h < 6:
        return 0
    if h < 9:
        return (h - 6) / 3
    if 12 <= h < 13:
        return 0.85
    if h < 17:
        return 1
    if h < 21:
        return (21 - h) / 4
    return 0


def gen(seed, night, peak, bursts, bsize, bspan, median=240, sigma=0.8, steps=False):
    r = random.Random(seed)

    def rate(t):
        h = t / 3600
        lv = level(h)
        # A sudden doubling 10:00-10:30 and 15:00-15:20: a step of the rate, not a burst.
        if steps and (10 <= h < 10.5 or 15 <= h < 15.33):
            lv *= 2
        return (night + (peak - night) * lv) / 3600

    def duration():
        return min(max(median * math.exp(sigma * r.gauss(0, 1)), 1), 10800)

    mx = max(night, peak) * 2 / 3600
    out = []
    t = 0
    while True:
        t += -math.log(max(r.random(), 1e-300)) / mx
        if t >= 86400:
            break
        if r.random() * mx <= rate(t):
            out.append((t, duration()))
    for _ in range(bursts):
        while True:
            s = r.random() * 86400
            if r.random() * mx <= rate(s):
                break
        s = min(s, 86400 - bspan)
        for _ in range(bsize):
            out.append((s + r.random() * bspan, duration()))
    out.sort()
    print("arrival_s,duration_s")
    for a, d in out:
        print(f"{a:.3f},{d:.1f}")


SHAPES = {
    # Twice the load, twelve bursts of 80 in a minute.
    "busy": lambda: gen(11, 200, 2000, 12, 80, 60),
    # The default day's levels, but each burst of 50 comes within 2 s (a pipeline's stage).
    "instant": lambda: gen(12, 108, 1080, 8, 50, 2),
    # A small fleet: 40-400 jobs/h, four bursts of 30, longer jobs (median 10 min).
    "quiet": lambda: gen(13, 40, 400, 4, 30, 60, median=600, sigma=1.0),
    # Steps of the rate, and sixteen bursts of 40 within 30 s.
    "steps": lambda: gen(14, 108, 1080, 16, 40, 30, steps=True),
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in SHAPES:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(SHAPES)}")
    SHAPES[sys.argv[1]]()
