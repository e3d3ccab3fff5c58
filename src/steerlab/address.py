"""Addresses: the grammar `steerlab.resolve` reads (steerlab.frontdoor), without torch, so the CLI can parse early.

Grammar (no spaces):

    address   := vector | kit-file | store-ref
    vector    := PATH ".safetensors" [":" SCALE] ["@" LAYERS]
    kit-file  := PATH (".json" | ".toml")
    store-ref := NAMESPACE "/" NAME ["@" VERSION] [":" SCALE] ["@" LAYERS]     (a vector or a kit in the store)
    SCALE     := a decimal number: 0.8, -0.3, 2, 1e-1
    LAYERS    := RANGE ("," RANGE)*  with  RANGE := INT ["-" INT]              (8-18, 4,6,8, 8-12,20)
    VERSION   := MAJOR.MINOR.PATCH[-PRE]                                       (it has dots; LAYERS never do)

Read in this order:
1. An address that names an existing file (or, without a suffix, ADDRESS.json / ADDRESS.toml) is that file,
   whatever else it looks like: a path that exists wins.
2. A trailing "@LAYERS", then ":SCALE", is split off when it parses as one ("a:b" keeps its colon).
3. The rest ending in .safetensors, .json or .toml is a file path: missing, it is "no such file".
4. The rest shaped NAMESPACE/NAME[@VERSION] (store names: lower case, digits, '-', '_', '.') is a store ref.
5. Anything else containing '/' or starting with '.' or '~' is a path: "no such file"; the rest is unreadable.

Kits take no :SCALE or @LAYERS: each entry records its own. What a vector's address leaves out comes from its card
(`KitEntry.from_card`). A store kit's entries are found by sha256 in the same store.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from steerlab.errors import SteerlabError
from steerlab.kitschema import SUFFIXES

VECTOR_SUFFIX = ".safetensors"
_LAYERS = r"\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*"
_SCALE = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TAIL = re.compile(rf"^(?P<body>.+?)(?::(?P<scale>{_SCALE}))?(?:@(?P<layers>{_LAYERS}))?$")
_BAD_TAIL = re.compile(r"\.(?:safetensors|json|toml)[:@]")  # a file name followed by a tail that did not parse
_REF = re.compile(r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*(?:@[0-9][0-9a-z.-]*)?$")
HELP = "FILE.safetensors[:SCALE][@LAYERS], KIT.json/.toml, or NAMESPACE/NAME[@VERSION][:SCALE][@LAYERS] from a store"


@dataclass(frozen=True)
class Address:
    """A parsed address: what it names (`kind`: vector-file, kit-file or store), and the scale/layers it gives."""

    kind: str
    target: str
    scale: float | None = None
    layers: list[int] | None = None


def parse_layers(text: str | None) -> list[int] | None:
    """'8-20', '3,5,7' or '8-12,20' -> sorted block indices; None (or blank) stays None."""
    if text is None or not text.strip():
        return None
    layers: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            if int(hi or lo) < int(lo):
                raise ValueError(f"{part} runs backwards")
            layers.update(range(int(lo), int(hi or lo) + 1))
    except ValueError as exc:
        raise SteerlabError(f"cannot read layers {text!r}: write a range like 8-20 or a list like 3,5,7.") from exc
    return sorted(layers)


def parse_address(address: str) -> Address:
    """Which thing `address` names, by the grammar above (rule 1 looks at the file system)."""
    if not isinstance(address, str) or not address.strip():
        raise SteerlabError(f"an empty address: give {HELP}.")
    existing = _existing_file(address)
    if existing is not None:
        return Address(_file_kind(existing), str(existing))
    match = _TAIL.fullmatch(address)
    assert match is not None  # the body takes anything the optional tail does not
    body, scale_text, layer_text = match["body"], match["scale"], match["layers"]
    scale = float(scale_text) if scale_text is not None else None
    layers = parse_layers(layer_text)
    suffix = Path(body).suffix
    if suffix == VECTOR_SUFFIX or suffix in SUFFIXES:
        if not Path(body).expanduser().is_file():
            raise SteerlabError(f"no such file: {body} (from address {address!r}).")
        found = Address(_file_kind(Path(body).expanduser()), body, scale, layers)
        if found.kind == "kit-file":
            check_no_tail(found, address)
        return found
    if _REF.fullmatch(body):
        return Address("store", body, scale, layers)
    bad_tail = _BAD_TAIL.search(body)
    if bad_tail:
        raise SteerlabError(
            f"cannot read {body[bad_tail.end() - 1 :]!r} in address {address!r}: write :SCALE as a number (0.8, -0.3) "
            "and @LAYERS as a range or list (8-18, 4,6,8)."
        )
    if "/" in body or os.sep in body or body.startswith((".", "~")):
        ref_like = body.count("/") == 1 and not suffix
        hint = " (nor a store ref: store names are lower case a-z, 0-9, '-', '_', '.')" if ref_like else ""
        raise SteerlabError(f"no such file: {body}{hint} (from address {address!r}).")
    raise SteerlabError(f"cannot read address {address!r}: give {HELP}.")


def _existing_file(address: str) -> Path | None:
    path = Path(address).expanduser()
    if path.is_file():
        return path
    if path.suffix not in SUFFIXES:
        for suffix in SUFFIXES:
            named = path.with_name(path.name + suffix)
            if named.is_file():
                return named
    return None


def _file_kind(path: Path) -> str:
    if path.suffix == VECTOR_SUFFIX:
        return "vector-file"
    if path.suffix in SUFFIXES:
        return "kit-file"
    raise SteerlabError(f"{path} is neither a vector ({VECTOR_SUFFIX}) nor a kit file (.json, .toml).")


def check_no_tail(found: Address, address: str) -> None:
    """A kit's entries record their own scales and layers: an address that adds them to a kit is refused."""
    if found.scale is not None or found.layers is not None:
        raise SteerlabError(f"{address!r}: a kit takes no :SCALE or @LAYERS; each of its entries records its own.")
