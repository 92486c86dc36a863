"""Timing rounds: every contender once per round, the order rotated, and the ratios
taken as medians over rounds (so a noisy neighbour on the machine moves a ratio less
than a best-of time)."""
from __future__ import annotations

import resource
import time
from typing import Callable


def rounds(contenders: dict[str, tuple[int, Callable]], repeat: int, self_timed=()):
    """Run every contender once per round, ``repeat`` rounds, the order rotated by
    one each round (so no contender always follows the same one); returns
    ({name: [seconds per round]}, {name: last result}).  ``contenders`` maps a name
    to (units of work, function); those named in ``self_timed`` return
    (seconds, result) themselves."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    out = {}
    names = list(contenders)
    for r in range(max(repeat, 1)):
        for k in names[r % len(names):] + names[:r % len(names)]:
            fn = contenders[k][1]
            if k in self_timed:
                dt, out[k] = fn()
            else:
                t0 = time.perf_counter()
                out[k] = fn()
                dt = time.perf_counter() - t0
            times[k].append(dt)
    return times, out


def median(xs):
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def rate(n, s):
    return n / s if s > 0 else float("inf")


def fmt_rate(r, unit):
    return f"{r / 1e6:10.1f} M {unit}/s"


def rss_gib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


class Timed:
    """The rounds of some contenders: their best rate, best time and median ratios."""

    def __init__(self, contenders: dict[str, tuple[int, Callable]], repeat: int, self_timed=()):
        self.units = {k: n for k, (n, _) in contenders.items()}
        self.times, self.out = rounds(contenders, repeat, self_timed)

    def rate(self, k: str) -> float:
        """Units per second in the best round."""
        return rate(self.units[k], min(self.times[k]))

    def ms(self, k: str) -> float:
        """The best round, in milliseconds."""
        return min(self.times[k]) * 1e3

    def ratio(self, a: str, b: str) -> float:
        """How many times faster ``a`` is than ``b`` per unit of work: the median over
        rounds of (b's time per unit) / (a's time per unit)."""
        pa = [x / self.units[a] for x in self.times[a]]
        pb = [x / self.units[b] for x in self.times[b]]
        return median([y / x for x, y in zip(pa, pb)])
