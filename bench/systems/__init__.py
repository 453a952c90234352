"""The systems under test, each a runner module started as its own process(es)."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SystemDef:
    """One benchmarked system: which runner module, how many processes, which Python."""

    name: str
    module: str
    workers: int = 1
    venv: str = "main"  # "quix": the Quix Streams virtual environment (bench/peers.py)
    patch: str | None = None  # streamfer only: a patch file exec'd before the worker starts
    peer: bool = False  # a peer framework: may drain a prefix of the topic (--peer-events)
    cluster: bool = False  # against the bench's Redis Cluster instead of the single Redis

    @property
    def is_streamfer(self) -> bool:
        return self.module == _WORKER

    def patched(self, label: str, path: str) -> SystemDef:
        """This streamfer system with a private patch applied, named `<name>[<label>]`."""
        return replace(self, name=f"{self.name}[{label}]", patch=path)


_WORKER = "bench.systems.streamfer_worker"
CLUSTER_SUFFIX = "@cluster"

SYSTEMS: dict[str, SystemDef] = {
    s.name: s
    for s in (
        SystemDef("passthrough", "bench.systems.passthrough"),
        SystemDef("streamfer-1w", _WORKER, workers=1),
        SystemDef("streamfer-2w", _WORKER, workers=2),
        SystemDef("streamfer-1w@cluster", _WORKER, workers=1, cluster=True),
        SystemDef("streamfer-2w@cluster", _WORKER, workers=2, cluster=True),
        SystemDef("quix", "bench.systems.quix_app", venv="quix", peer=True),
        SystemDef("faust", "bench.systems.faust_app", peer=True),
    )
}


def with_cluster(names: tuple[str, ...]) -> tuple[str, ...]:
    """`names` plus, right after each single-Redis streamfer system, its `@cluster` twin
    (`--redis-cluster`): the twin runs in the same round, next to it."""
    out: list[str] = []
    for name in names:
        if name not in out:
            out.append(name)
        twin = name + CLUSTER_SUFFIX
        if twin in SYSTEMS and twin not in names and twin not in out:
            out.append(twin)
    return tuple(out)
