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

    @property
    def is_streamfer(self) -> bool:
        return self.module == "bench.systems.streamfer_worker"

    def patched(self, label: str, path: str) -> SystemDef:
        """This streamfer system with a private patch applied, named `<name>[<label>]`."""
        return replace(self, name=f"{self.name}[{label}]", patch=path)


SYSTEMS: dict[str, SystemDef] = {
    s.name: s
    for s in (
        SystemDef("passthrough", "bench.systems.passthrough"),
        SystemDef("streamfer-1w", "bench.systems.streamfer_worker", workers=1),
        SystemDef("streamfer-2w", "bench.systems.streamfer_worker", workers=2),
        SystemDef("quix", "bench.systems.quix_app", venv="quix", peer=True),
        SystemDef("faust", "bench.systems.faust_app", peer=True),
    )
}
