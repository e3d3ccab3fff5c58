"""Resolving a request's `steering` into a compiled row plan: names from --kits DIR or --store, limits, hashes.

Names: `NAME` is NAME.safetensors in the kits folder (or, as a whole kit, NAME.json / NAME.toml);
`KIT:AXIS` is one entry of a kit (AXIS = the entry's name or its 0-based index); `ns/name[@version]` is a store ref,
a vector or a kit. Files and store refs are read through `steerlab.resolve` (steerlab.frontdoor), so a vector named
without scale or layers gets its card's defaults (`KitEntry.from_card`) here as everywhere else.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.errors import SteerlabError
from steerlab.frontdoor import find
from steerlab.kit import Kit, KitCard, KitEntry
from steerlab.models import LoadedModel
from steerlab.plan import RowPlan, compile_row
from steerlab.serve.errors import ApiError
from steerlab.serve.protocol import Steering, SteeringItem
from steerlab.vector import Vector

if TYPE_CHECKING:
    from steerlab.hub.protocol import Store

KIT_SUFFIXES = (".json", ".toml")
STORE_TTL_S = 60.0  # a store ref without a version may move; look it up again after this long
PLAN_CACHE = 256


@dataclass(frozen=True)
class Limits:
    max_scale: float = 8.0
    max_vectors: int = 8


@dataclass
class Resolved:
    """A request's steering: the kit (None = unsteered), its compiled row plan, and what the audit log records."""

    kit: Kit | None
    label: str | None
    row: RowPlan
    entries: list[dict[str, Any]] = field(default_factory=list)
    steering_hash: str | None = None


@dataclass
class _LoadedKit:
    """A resolved name: a vector (one entry at its card's defaults) or a kit, with its entry names in order."""

    kit: Kit
    axes: list[str]
    is_kit: bool


class Registry:
    """Thread-safe: requests resolve concurrently; loaded files are cached by modification time."""

    def __init__(
        self,
        model: LoadedModel,
        kits_dir: str | Path | None = None,
        store: str | None = None,
        default: str | None = None,
        limits: Limits | None = None,
        require_trusted: bool = False,
    ) -> None:
        """`require_trusted`: store refs must be signed by a key this machine trusts (steerlab.hub.trust)."""
        self.model = model
        self.kits_dir = Path(kits_dir).expanduser() if kits_dir is not None else None
        if self.kits_dir is not None and not self.kits_dir.is_dir():
            raise SteerlabError(
                f"--kits {self.kits_dir} is not a folder; give the folder holding vector and kit files."
            )
        self.store = _open_store(store, require_trusted) if store else None
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._files: dict[Path, tuple[int, Any]] = {}
        self._remote: dict[str, tuple[float, _LoadedKit]] = {}
        self._hashes: dict[int, tuple[Vector, str]] = {}
        self._plans: OrderedDict[str, RowPlan] = OrderedDict()
        self.default = default
        if default is not None:
            self.resolve(default)  # fail at start-up, not on the first request

    # ----- names -----
    def vector_names(self) -> list[str]:
        return sorted(p.stem for p in self._glob((".safetensors",)))

    def kit_names(self) -> list[str]:
        return sorted(p.stem for p in self._glob(KIT_SUFFIXES))

    def _glob(self, suffixes: tuple[str, ...]) -> list[Path]:
        if self.kits_dir is None:
            return []
        return [p for p in self.kits_dir.iterdir() if p.suffix in suffixes and not p.name.startswith(".")]

    def vector(self, name: str) -> Vector:
        if "/" in name:
            loaded = self._store_entry(name, "unknown_vector")
            if loaded.is_kit:
                raise ApiError(
                    f"{name!r} is a kit in the store, not a vector: steer with it as a whole ('steering': "
                    f"'{name}') or name one of its axes as '{name}:AXIS' ({', '.join(loaded.axes)}).",
                    code="unknown_vector",
                    param="steering",
                )
            return loaded.kit.entries[0].vector
        path = self._find(name, (".safetensors",))
        if path is None:
            raise ApiError(
                f"unknown vector {name!r}: no {name}.safetensors in the kits folder"
                f"{self._known(self.vector_names())}. Use 'KIT:AXIS' for a kit's entry or 'ns/name' for a store ref.",
                status=404,
                code="unknown_vector",
                param="steering",
            )
        return self._file(path).kit.entries[0].vector

    def kit(self, name: str) -> _LoadedKit:
        """A kit by name: NAME.json / NAME.toml in the kits folder, or a store ref (a store vector: a one-axis kit)."""
        if "/" in name:
            return self._store_entry(name, "unknown_kit")
        path = self._find(name, KIT_SUFFIXES)
        if path is None:
            raise ApiError(
                f"unknown kit {name!r}: no {name}.json, {name}.toml or {name}.safetensors in the kits folder"
                f"{self._known(self.kit_names() + self.vector_names())}.",
                status=404,
                code="unknown_kit",
                param="steering",
            )
        return self._file(path)

    def _find(self, name: str, suffixes: tuple[str, ...]) -> Path | None:
        if self.kits_dir is None or Path(name).name != name:
            return None
        for suffix in suffixes:
            path = self.kits_dir / f"{name}{suffix}"
            if path.is_file():
                return path
        return None

    @staticmethod
    def _known(names: list[str]) -> str:
        return f" (it has: {', '.join(names[:20])})" if names else " (it has none)"

    def _file(self, path: Path) -> _LoadedKit:
        """A vector or kit file, read once per modification time."""
        mtime = path.stat().st_mtime_ns
        with self._lock:
            hit = self._files.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]  # type: ignore[no-any-return]
        try:
            value = self._load(str(path), None)
        except SteerlabError as exc:
            raise ApiError(
                f"{path.name} cannot be loaded: {exc}", code="unloadable_steering", param="steering"
            ) from exc
        with self._lock:
            self._files[path] = (mtime, value)
        return value

    def _store_entry(self, ref: str, code: str) -> _LoadedKit:
        if self.store is None:
            raise ApiError(
                f"{ref!r} is a store ref, but this server has no store: start it with --store PATH_OR_URL.",
                status=404,
                code=code,
                param="steering",
            )
        with self._lock:
            hit = self._remote.get(ref)
        if hit is not None and time.monotonic() - hit[0] < STORE_TTL_S:
            return hit[1]
        try:
            loaded = self._load(ref, self.store)  # checked against its hash (and signature) by the store
        except SteerlabError as exc:
            # Content that exists but whose signer this server does not trust is a 403, not a missing name.
            status, code = (403, "untrusted_steering") if _untrusted(exc) else (404, code)
            raise ApiError(f"store ref {ref!r}: {exc}", status=status, code=code, param="steering") from exc
        with self._lock:
            self._remote[ref] = (time.monotonic(), loaded)
        return loaded

    def _load(self, address: str, store: Any) -> _LoadedKit:
        found = find(address, store)
        for entry, source in zip(found.kit.entries, found.sources, strict=True):
            self._remember(entry.vector, source.sha256)
        return _LoadedKit(found.kit, [source.name for source in found.sources], found.is_kit)

    # ----- resolving a request -----
    def resolve(self, spec: Steering) -> Resolved:
        if spec is None:
            spec = self.default
        if spec is None or spec == [] or spec == "none":
            return Resolved(kit=None, label=None, row=compile_row(self.model, None))
        if isinstance(spec, str):
            if "/" not in spec and self._find(spec, KIT_SUFFIXES) is None and self._find(spec, (".safetensors",)):
                path = self._find(spec, (".safetensors",))
                assert path is not None
                loaded = self._file(path)
            else:
                loaded = self.kit(spec)
            if not loaded.is_kit:  # a vector named where a kit is expected: one axis at its card's defaults
                return self._finish(Kit(loaded.kit.entries, KitCard(name=spec)), spec, [spec])
            return self._finish(loaded.kit, spec, [f"{spec}:{axis}" for axis in loaded.axes])
        entries, names = [], []
        for index, item in enumerate(spec):
            entry, name = self._entry(item, f"steering[{index}]")
            entries.append(entry)
            names.append(name)
        return self._finish(Kit(entries, KitCard(name="custom")), None, names)

    def _entry(self, item: SteeringItem, where: str) -> tuple[KitEntry, str]:
        kit_name, sep, axis = item.vector.partition(":")
        try:
            if sep:
                base = self._kit_entry(kit_name, axis)
                layers = item.layers if item.layers is not None else base.layers
                scale = item.scale if item.scale is not None else base.scale
                # replace, not a new KitEntry: the axis keeps its positions, mode and condition (`when`)
                return replace(base, scale=scale, layers=layers), item.vector
            vector = self.vector(item.vector)
            self._check_compatible(vector, where)  # before layers: "made for another model" says more
            return KitEntry.from_card(vector, item.scale, item.layers), item.vector
        except ApiError as exc:
            exc.param = where
            raise
        except SteerlabError as exc:
            raise ApiError(f"{where}: {exc}", code="invalid_layers", param=where) from exc

    def _kit_entry(self, kit_name: str, axis: str) -> KitEntry:
        loaded = self.kit(kit_name)
        # An axis taken out of a conditional kit carries the kit's condition with it: it must not steer every row.
        entries = loaded.kit.standalone_entries()
        if axis in loaded.axes:
            return entries[loaded.axes.index(axis)]
        if axis.isdigit() and int(axis) < len(entries):
            return entries[int(axis)]
        raise ApiError(
            f"kit {kit_name!r} has no axis {axis!r}; its axes are {', '.join(loaded.axes)} "
            f"(or 0..{len(loaded.axes) - 1}).",
            status=404,
            code="unknown_vector",
        )

    def _finish(self, kit: Kit, label: str | None, names: list[str]) -> Resolved:
        self._check_limits(kit)
        records = [self._record(entry, name) for entry, name in zip(kit.entries, names, strict=True)]
        digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
        return Resolved(kit=kit, label=label, row=self._plan(digest, kit), entries=records, steering_hash=digest)

    def _check_limits(self, kit: Kit) -> None:
        if len(kit.entries) > self.limits.max_vectors:
            raise ApiError(
                f"{len(kit.entries)} vectors were asked for; this server allows at most {self.limits.max_vectors} "
                "per request.",
                code="too_many_vectors",
                param="steering",
            )
        for index, entry in enumerate(kit.entries):
            if abs(entry.scale) > self.limits.max_scale:
                raise ApiError(
                    f"scale {entry.scale} of {entry.vector.card.name or f'vector {index}'} is above this server's cap "
                    f"of ±{self.limits.max_scale}; use a smaller scale (the vector's card recommends "
                    f"{entry.vector.card.recommended_scale}).",
                    code="scale_too_large",
                    param=f"steering[{index}].scale",
                )
            self._check_compatible(entry.vector, f"steering[{index}]")

    def _check_compatible(self, vector: Vector, where: str) -> None:
        try:
            vector.check_compatible(self.model)
        except SteerlabError as exc:
            raise ApiError(str(exc), code="incompatible_vector", param=where) from exc

    def _record(self, entry: KitEntry, name: str) -> dict[str, Any]:
        return {
            "vector": name,
            "sha256": self.content_hash(entry.vector),
            "scale": float(entry.scale),
            "layers": entry.active_layers(),
            "positions": entry.positions,
            "mode": entry.mode,
        }

    def content_hash(self, vector: Vector) -> str:
        """sha256 of the bytes the vector was read from (its file or store blob): what an auditor can check."""
        with self._lock:
            hit = self._hashes.get(id(vector))
        if hit is not None and hit[0] is vector:
            return hit[1]
        digest = vector.content_hash()  # made in memory (not read from bytes): hash its serialisation
        self._remember(vector, digest)
        return digest

    def _remember(self, vector: Vector, digest: str) -> Vector:
        with self._lock:
            self._hashes[id(vector)] = (vector, digest)  # holding the vector keeps its id from being reused
        return vector

    def _plan(self, digest: str, kit: Kit) -> RowPlan:
        with self._lock:
            plan = self._plans.get(digest)
            if plan is not None:
                self._plans.move_to_end(digest)
                return plan
        plan = compile_row(self.model, kit)
        with self._lock:
            self._plans[digest] = plan
            while len(self._plans) > PLAN_CACHE:
                self._plans.popitem(last=False)
        return plan

    # ----- what the page shows -----
    def catalogue(self) -> dict[str, Any]:
        items = []
        for name in self.kit_names():
            items.append(self._describe(name, "kit", lambda n=name: self._kit_axes(n)))
        for name in self.vector_names():
            items.append(self._describe(name, "vector", lambda n=name: [self._axis(n, n, self._lone(n))]))
        return {"object": "list", "default": self.default, "data": items}

    def _describe(self, name: str, kind: str, axes: Any) -> dict[str, Any]:
        try:
            return {"id": name, "kind": kind, "axes": axes()}
        except SteerlabError as exc:
            return {"id": name, "kind": kind, "axes": [], "error": str(exc)}

    def _kit_axes(self, name: str) -> list[dict[str, Any]]:
        loaded = self.kit(name)
        return [
            self._axis(f"{name}:{axis}", axis, entry)
            for axis, entry in zip(loaded.axes, loaded.kit.entries, strict=True)
        ]

    def _lone(self, name: str) -> KitEntry:
        """A vector in the kits folder as it steers when named alone: at its card's defaults."""
        path = self._find(name, (".safetensors",))
        if path is None:
            raise SteerlabError(f"{name}.safetensors has gone from the kits folder.")
        return self._file(path).kit.entries[0]

    def _axis(self, ref: str, name: str, entry: KitEntry) -> dict[str, Any]:
        vector, card = entry.vector, entry.vector.card
        return {
            "ref": ref,
            "name": name,
            "scale": entry.scale,
            "layers": entry.active_layers(),
            "card": {
                "name": card.name,
                "description": card.description,
                "base_model": card.base_model,
                "method": card.method,
                "position": card.position,
                "n_pairs": card.n_pairs,
                "recommended_scale": card.recommended_scale,
                "recommended_layers": card.recommended_layers,
                "author": card.author,
                "license": card.license,
                "created_at": card.created_at,
                "sha256": self.content_hash(vector),
            },
        }


def _untrusted(exc: SteerlabError) -> bool:
    from steerlab.hub.errors import Untrusted

    return isinstance(exc, Untrusted)


def _open_store(location: str, require_trusted: bool = False) -> Store:
    try:
        from steerlab.hub import open_store
    except ImportError as exc:  # the hub is an optional part of the install
        raise SteerlabError(f"--store needs steerlab.hub, which failed to import: {exc}") from exc
    return open_store(location, require_trusted=require_trusted)
