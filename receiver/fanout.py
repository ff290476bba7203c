"""What both refreshers (one host's containers, a Swarm's services) do alike over runtimes:
check the names asked for, and refresh several side by side, one's failure never
stopping another."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from .errors import UnknownRuntime
from .result import RefreshResult

# Runtimes refreshed at once: each pulls from (or resolves through) the registry.
MAX_PARALLEL_RUNTIMES = 4


def check_runtimes(known: Collection[str], runtimes: Iterable[str] | None) -> list[str]:
    """The runtimes meant (all of `known` when None), each once, in order; raise
    UnknownRuntime (naming the first stranger) when one is not configured."""
    if runtimes is None:
        return list(known)
    names = list(dict.fromkeys(runtimes))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UnknownRuntime(f"unknown runtime(s): {', '.join(unknown)}", runtime=unknown[0])
    return names


def each_runtime(names: Sequence[str], refresh: Callable[[str], RefreshResult]) -> RefreshResult:
    """`refresh` of every runtime in `names`, side by side, merged into one result."""
    result = RefreshResult()
    if not names:
        return result
    workers = min(len(names), MAX_PARALLEL_RUNTIMES)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh") as pool:
        for outcome in pool.map(refresh, names):
            result.merge(outcome)
    return result
