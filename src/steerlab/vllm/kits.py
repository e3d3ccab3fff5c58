"""A request's `steering` (from `SamplingParams.extra_args`) to a Kit and its hash, through steerlab's front door.

Accepted forms: an address (`"happy.safetensors:0.8@8-18"`, `"kit.json"`, `"ns/name@1.0.0:0.5"`), a list of them,
or a list mixing addresses and objects `{"address": ..., "positions": "prompt"|"generated"|"all",
"mode": "add"|"ablate"|"add_keep_norm", "when": CONDITION_FILE}`. A server-wide default kit (settings.default) goes
first and composes additively. The hash covers every entry's vector bytes, scale, layers, positions, mode and
conditions: two requests share a slot and a prefix-cache salt exactly when they steer alike.

Conditional entries (`when`, from the item or from a kit file) steer generated tokens only on this engine: the
condition is decided once the whole prompt has been read (steerlab.vllm.gating), which is before the first generated
token is computed, so the result equals the transformers engine's for those positions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

from steerlab.address import VECTOR_SUFFIX, parse_address
from steerlab.condition import Condition
from steerlab.errors import SteerlabError
from steerlab.frontdoor import resolve
from steerlab.kit import Kit, KitCard, KitEntry
from steerlab.kitschema import SUFFIXES, check_mode, check_positions
from steerlab.vllm.settings import Settings

EXTRA_KEY = "steering"
CACHE = 256


@dataclasses.dataclass(frozen=True)
class Steering:
    kit: Kit
    digest: str

    @property
    def conditional(self) -> bool:
        return bool(self.kit.conditions)


class KitResolver:
    """Resolves specs against one model, with a small cache by the spec's canonical JSON."""

    def __init__(self, settings: Settings, target: Any) -> None:
        self.settings = settings
        self.target = target
        self._cache: OrderedDict[str, Steering | None] = OrderedDict()
        self._default = self._resolve_items(_items(settings.default)) if settings.default else []

    def for_request(self, extra_args: dict[str, Any] | None) -> Steering | None:
        """The steering of one request (None: unsteered and no server default). Bad specs raise SteerlabError."""
        spec = (extra_args or {}).get(EXTRA_KEY)
        key = json.dumps(spec, sort_keys=True, default=str)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        entries = self._default + (self._resolve_items(_items(spec)) if spec is not None else [])
        found = Steering(Kit(entries, KitCard(name="request")), kit_digest(entries)) if entries else None
        self._cache[key] = found
        if len(self._cache) > CACHE:
            self._cache.popitem(last=False)
        return found

    def _resolve_items(self, items: list[dict[str, Any]]) -> list[KitEntry]:
        entries: list[KitEntry] = []
        for item in items:
            kit = resolve(self._confined(item["address"]), store=self.settings.store, model=self.target)
            if any(entry.vector.card.site == "router" for entry in kit.entries):
                raise SteerlabError(
                    f"{item['address']!r} holds an expert vector (router-logit offsets); the vLLM engine steers "
                    "residual directions only. Serve it with `steerlab serve`."
                )
            when = self._condition(item["when"]) if "when" in item else None
            for entry in kit.standalone_entries():
                changed: dict[str, Any] = {k: item[k] for k in ("positions", "mode") if k in item}
                if when is not None:
                    changed["when"] = _one_condition(entry.when, when, item["address"])
                entries.append(dataclasses.replace(entry, **changed))
        self._check_limits(entries)
        self._check_conditional(entries)
        return entries

    def _condition(self, address: Any) -> Condition:
        if not isinstance(address, str):
            raise SteerlabError(f"'when' names a condition file (a string), got {address!r}.")
        condition = Condition.load(self._confined(address))
        condition.check_compatible(self.target)
        return condition

    def _check_conditional(self, entries: list[KitEntry]) -> None:
        found = Kit(entries)
        if len(found.conditions) > self.settings.max_conditions:
            raise SteerlabError(
                f"{len(found.conditions)} distinct conditions in one request; this server reads at most "
                f"{self.settings.max_conditions} per request."
            )
        reason = prompt_gated(found)
        if reason is not None:
            raise SteerlabError(f"{reason}: give it positions 'generated'.")

    def _confined(self, address: str) -> str:
        """With a kits folder set (a server's clients are not trusted with the file system), a file address is
        read relative to it and must lie inside it; store refs pass as they are."""
        if self.settings.kits is None or not _is_file_address(address):
            return address
        root = Path(self.settings.kits).resolve()
        joined = address if Path(address).is_absolute() else str(root / address)
        # Checked before the file system is asked (no telling which outside files exist), and again on the file
        # found (a link inside the folder may point out of it). A :SCALE@LAYERS tail never holds a '/'.
        _check_inside(Path(joined), root, address)
        _check_inside(Path(parse_address(joined).target), root, address)
        return joined

    def _check_limits(self, entries: list[KitEntry]) -> None:
        limit = self.settings.max_scale
        for entry in entries:
            if abs(entry.scale) > limit:
                raise SteerlabError(
                    f"scale {entry.scale:g} for {entry.vector.card.name or 'a vector'} exceeds this server's limit "
                    f"of {limit:g}: ask for a smaller scale."
                )
        if len(entries) > self.settings.max_vectors:
            raise SteerlabError(
                f"{len(entries)} vectors in one request; this server allows {self.settings.max_vectors}."
            )


def prompt_gated(kit: Kit) -> str | None:
    """Why the vLLM engine cannot run a kit's conditional entry on prompt positions (None: every conditional entry
    steers generated tokens only)."""
    for entry in kit.entries:
        if kit.conditions_of(entry) and entry.positions != "generated":
            return (
                f"a conditional entry ({entry.vector.card.name or 'a vector'}, 'when') steers positions "
                f"{entry.positions!r}; on the vLLM engine a condition is decided after the whole prompt is read, so "
                "conditional entries steer generated tokens only"
            )
    return None


def _one_condition(own: Condition | None, given: Condition, address: str) -> Condition:
    if own is not None and own.key != given.key:
        raise SteerlabError(
            f"{address!r} already has its own condition ({own.name}); give 'when' only for an unconditional address."
        )
    return given


def _check_inside(path: Path, root: Path, address: str) -> None:
    if not path.resolve().is_relative_to(root):
        raise SteerlabError(f"{address!r} is outside this server's kits folder: name a file inside it.")


def _is_file_address(address: str) -> bool:
    return address.startswith(("/", ".", "~")) or any(suffix in address for suffix in (VECTOR_SUFFIX, *SUFFIXES))


def _items(spec: Any) -> list[dict[str, Any]]:
    raw = spec if isinstance(spec, list) else [spec]
    if not raw:
        raise SteerlabError("'steering' is an empty list: give an address, a list of them, or leave it out.")
    items = []
    for item in raw:
        if isinstance(item, str):
            items.append({"address": item})
            continue
        if not isinstance(item, dict) or not isinstance(item.get("address"), str):
            raise SteerlabError(
                "each 'steering' item is an address string or an object with an 'address' string "
                f"(and optional 'positions', 'mode', 'when'); got {item!r}."
            )
        unknown = set(item) - {"address", "positions", "mode", "when"}
        if unknown:
            raise SteerlabError(
                f"unknown keys {sorted(unknown)} in a 'steering' item: use address, positions, mode, when."
            )
        if "positions" in item:
            check_positions(item["positions"])
        if "mode" in item:
            check_mode(item["mode"])
        items.append(item)
    return items


def kit_digest(entries: list[KitEntry]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        layers = entry.active_layers()
        record = [entry.vector.content_hash(), repr(float(entry.scale)), layers, entry.positions, entry.mode]
        if entry.when is not None:
            record.append(entry.when.key)
        digest.update(json.dumps(record).encode())
    return digest.hexdigest()[:32]
