"""Per-site, per-client-IP token buckets (``sites[].rate_limit`` in the rules file).

Bounded memory: the least recently seen clients are forgotten first (a forgotten client starts
again with a full bucket, which only ever errs on the side of accepting).
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimiter:
    """Token buckets keyed by ``(site_id, ip)``.

    Example::

        limiter = RateLimiter()
        limiter.allow(("acme", "203.0.113.9"), per_second=50, burst=200, now=monotonic())
    """

    def __init__(self, max_clients: int = 100_000) -> None:
        self.max_clients = max_clients
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def allow(
        self, key: tuple[str, str], *, per_second: float, burst: int, now: float, cost: float = 1
    ) -> bool:
        tokens, last = self._buckets.pop(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * per_second)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
