"""Resolving a request's `steering` into a compiled row plan: names from --kits DIR or --store, limits, hashes.

Addresses: `NAME` is NAME.safetensors in the kits folder (or, as a whole kit, NAME.json / NAME.toml);
`KIT:AXIS` is one entry of a kit (AXIS = the entry's name or its 0-based index); `ns/name[@version]` is a store ref.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.kit import Kit, KitCard, KitEntry
from steerlab.models import LoadedModel
from steerlab.plan import RowPlan, compile_row
from steerlab.serve.errors import ApiError
from steerlab.serve.protocol import Steering, SteeringItem
from steerlab.vector import Vector

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
    kit: Kit
    axes: list[str]  # entry names, in entry order


class Registry:
    """Thread-safe: requests resolve concurrently; loaded files are cached by modification time."""

    def __init__(
        self,
        model: LoadedModel,
        kits_dir: str | Path | None = None,
        store: str | None = None,
        default: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.model = model
        self.kits_dir = Path(kits_dir).expanduser() if kits_dir is not None else None
        if self.kits_dir is not None and not self.kits_dir.is_dir():
            raise SteerlabError(
                f"--kits {self.kits_dir} is not a folder; give the folder holding vector and kit files."
            )
        self.store = _open_store(store) if store else None
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._files: dict[Path, tuple[int, Any]] = {}
        self._remote: dict[str, tuple[float, Vector]] = {}
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
            return self._store_vector(name)
        path = self._find(name, (".safetensors",))
        if path is None:
            raise ApiError(
                f"unknown vector {name!r}: no {name}.safetensors in the kits folder"
                f"{self._known(self.vector_names())}. Use 'KIT:AXIS' for a kit's entry or 'ns/name' for a store ref.",
                status=404,
                code="unknown_vector",
                param="steering",
            )
        return self._cached(path, self._load_vector_file)

    def kit(self, name: str) -> _LoadedKit:
        path = self._find(name, KIT_SUFFIXES)
        if path is None:
            raise ApiError(
                f"unknown kit {name!r}: no {name}.json, {name}.toml or {name}.safetensors in the kits folder"
                f"{self._known(self.kit_names() + self.vector_names())}.",
                status=404,
                code="unknown_kit",
                param="steering",
            )
        return self._cached(path, self._load_kit_file)

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

    def _cached(self, path: Path, load: Any) -> Any:
        mtime = path.stat().st_mtime_ns
        with self._lock:
            hit = self._files.get(path)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            value = load(path)
        except SteerlabError as exc:
            raise ApiError(
                f"{path.name} cannot be loaded: {exc}", code="unloadable_steering", param="steering"
            ) from exc
        with self._lock:
            self._files[path] = (mtime, value)
        return value

    def _store_vector(self, ref: str) -> Vector:
        if self.store is None:
            raise ApiError(
                f"{ref!r} is a store ref, but this server has no store: start it with --store PATH_OR_URL.",
                status=404,
                code="unknown_vector",
                param="steering",
            )
        with self._lock:
            hit = self._remote.get(ref)
        if hit is not None and time.monotonic() - hit[0] < STORE_TTL_S:
            return hit[1]
        try:
            info, data = self.store.get_bytes(ref)  # checked against its hash (and signature) by the store
            if info.kind != "vector":
                raise SteerlabError(f"it is a {info.kind}, not a vector")
            vector = self._remember(Vector._from_parts(*_parse_safetensors(data), f"store:{info.ref}"), info.sha256)
        except SteerlabError as exc:
            raise ApiError(f"store ref {ref!r}: {exc}", status=404, code="unknown_vector", param="steering") from exc
        with self._lock:
            self._remote[ref] = (time.monotonic(), vector)
        return vector

    # ----- resolving a request -----
    def resolve(self, spec: Steering) -> Resolved:
        if spec is None:
            spec = self.default
        if spec is None or spec == [] or spec == "none":
            return Resolved(kit=None, label=None, row=compile_row(self.model, None))
        if isinstance(spec, str):
            if self._find(spec, KIT_SUFFIXES) is None and ("/" in spec or self._find(spec, (".safetensors",))):
                return self._lone_vector(spec)
            loaded = self.kit(spec)
            return self._finish(loaded.kit, spec, [f"{spec}:{axis}" for axis in loaded.axes])
        entries, names = [], []
        for index, item in enumerate(spec):
            entry, name = self._entry(item, f"steering[{index}]")
            entries.append(entry)
            names.append(name)
        return self._finish(Kit(entries, KitCard(name="custom")), None, names)

    def _lone_vector(self, name: str) -> Resolved:
        """A vector named where a kit is expected is a one-axis kit at its card's recommended scale and layers."""
        vector = self.vector(name)
        entry = KitEntry(vector, vector.card.recommended_scale, vector.card.recommended_layers or None)
        return self._finish(Kit([entry], KitCard(name=name)), name, [name])

    def _entry(self, item: SteeringItem, where: str) -> tuple[KitEntry, str]:
        kit_name, sep, axis = item.vector.partition(":")
        try:
            if sep:
                base = self._kit_entry(kit_name, axis)
                layers = item.layers if item.layers is not None else base.layers
                return KitEntry(base.vector, item.scale, layers, base.positions, base.mode), item.vector
            vector = self.vector(item.vector)
            self._check_compatible(vector, where)  # before layers: "made for another model" says more
            layers = item.layers if item.layers is not None else (vector.card.recommended_layers or None)
            return KitEntry(vector, item.scale, layers), item.vector
        except ApiError as exc:
            exc.param = where
            raise
        except SteerlabError as exc:
            raise ApiError(f"{where}: {exc}", code="invalid_layers", param=where) from exc

    def _kit_entry(self, kit_name: str, axis: str) -> KitEntry:
        loaded = self.kit(kit_name)
        if axis in loaded.axes:
            return loaded.kit.entries[loaded.axes.index(axis)]
        if axis.isdigit() and int(axis) < len(loaded.kit.entries):
            return loaded.kit.entries[int(axis)]
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

    def _load_vector_file(self, path: Path) -> Vector:
        data = path.read_bytes()
        vector = Vector._from_parts(*_parse_safetensors(data, str(path)), str(path))
        return self._remember(vector, hashlib.sha256(data).hexdigest())

    def _load_kit_file(self, path: Path) -> _LoadedKit:
        from steerlab import kitfile

        kit, infos = kitfile.load_kit_with_info(path)  # refuses entries whose file no longer matches its sha256
        for entry, info in zip(kit.entries, infos, strict=True):
            self._remember(entry.vector, info.sha256)
        return _LoadedKit(kit, [info.name for info in infos])

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
            items.append(self._describe(name, "vector", lambda n=name: [self._axis(n, n, self.vector(n), None, None)]))
        return {"object": "list", "default": self.default, "data": items}

    def _describe(self, name: str, kind: str, axes: Any) -> dict[str, Any]:
        try:
            return {"id": name, "kind": kind, "axes": axes()}
        except SteerlabError as exc:
            return {"id": name, "kind": kind, "axes": [], "error": str(exc)}

    def _kit_axes(self, name: str) -> list[dict[str, Any]]:
        loaded = self.kit(name)
        return [
            self._axis(f"{name}:{axis}", axis, e.vector, e.scale, e.layers)
            for axis, e in zip(loaded.axes, loaded.kit.entries, strict=True)
        ]

    def _axis(
        self, ref: str, name: str, vector: Vector, scale: float | None, layers: list[int] | None
    ) -> dict[str, Any]:
        card = vector.card
        return {
            "ref": ref,
            "name": name,
            "scale": card.recommended_scale if scale is None else scale,
            "layers": layers if layers is not None else (card.recommended_layers or vector.layers),
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


def _parse_safetensors(data: bytes, origin: str = "store") -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and header metadata from safetensors bytes, read once (so the hash and the vector agree)."""
    from safetensors.torch import load

    try:
        length = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + length]).get("__metadata__") or {}
        return load(data), meta
    except Exception as exc:  # safetensors raises several unrelated types for corrupt data
        raise SteerlabError(f"{origin} is not a readable safetensors vector: {exc}") from exc


def _open_store(location: str) -> Any:
    try:
        from steerlab.hub import open_store
    except ImportError as exc:  # the hub is an optional part of the install
        raise SteerlabError(f"--store needs steerlab.hub, which failed to import: {exc}") from exc
    return open_store(location)
