"""Argument parsing shared by the command groups: layer ranges, and addresses resolved through `steerlab.resolve`.

Torch-free at import: commands import the front door (and with it torch) only when they run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab.address import HELP, parse_address, parse_layers

if TYPE_CHECKING:
    from steerlab.kit import EntrySource, Kit

__all__ = ["STORE_HELP", "VECTOR_HELP", "check_addresses", "kit_from_addresses", "parse_layers", "store_location"]

VECTOR_HELP = f"{HELP}; repeatable. What a vector leaves out comes from its card (calibrated scale, recommended layers)"
STORE_HELP = "store (folder or URL) for NAMESPACE/NAME addresses (default: the local store)"


def store_location(given: str | None) -> str | Path:
    """Where NAMESPACE/NAME addresses are looked up; the store is only opened when an address needs it."""
    if given:
        return given
    from steerlab.hub import default_root

    return default_root()


def check_addresses(addresses: list[str]) -> None:
    """Refuse unreadable addresses and missing files before anything slow (a model load) starts."""
    for address in addresses:
        parse_address(address)


def kit_from_addresses(
    addresses: list[str], store: str | Path | None = None, model: Any = None
) -> tuple[Kit, list[EntrySource]]:
    """Every address's entries, in order, as one kit (one address keeps its own card)."""
    from steerlab.frontdoor import find
    from steerlab.kit import Kit, KitCard

    entries, sources, kits = [], [], []
    for address in addresses:
        found = find(address, store, model)
        entries += found.kit.standalone_entries()  # a kit's condition travels with its entries
        sources += found.sources
        kits.append(found.kit)
    card = kits[0].card if len(kits) == 1 else KitCard(name="+".join(s.name for s in sources))
    return Kit(entries, card), sources
