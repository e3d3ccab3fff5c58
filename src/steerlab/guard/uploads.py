"""The store's side of the guard: each vector upload is screened against the protected directions before it is
stored (`steerlab hub serve --protect ADDRESS --safety-policy flag|refuse`).

An upload carries no request scale, so it is screened twice: as it would steer by default (its card's recommended
scale and layers), and at relative dose UPLOAD_DOSE on its recommended layers, whatever its norm (a direction that
cancels refusal at a normal dose is the risk, however small its stored magnitude). The second screen is the
measurement behind the default threshold (bench/protect_fpr.py), so on the starter pack it flags no benign vector.
A kit upload is screened as it steers: its entries' vectors are found by sha256 in the same store (as the front
door finds them when the kit is used), summed per layer at the kit's scales, and checked by the guard's one dose
check, so a kit of harmless-looking vectors that together cancel a protected direction is caught. A kit whose vectors
are not in the store yet cannot be screened, and is refused with a message saying to push its vectors first.
`flag` stores the entry with the FLAG_TAG tag and a warning at the head of its description (both shown by search
and show); `refuse` rejects it with a 400 and stores nothing. Servers screen kits again when they apply them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

from steerlab.errors import SteerlabError
from steerlab.frontdoor import store_kit
from steerlab.guard.protected import ProtectedDirection, load_protected
from steerlab.guard.screen import DEFAULT_THRESHOLD, Breach, Guard, ProtectedDirectionError
from steerlab.hub.blobs import sha256_hex
from steerlab.hub.entry import EntryInfo
from steerlab.hub.refs import parse_ref
from steerlab.hub.validate import check_upload
from steerlab.kit import Kit, KitEntry
from steerlab.vector import Vector

Policy = Literal["flag", "refuse"]
POLICIES = ("flag", "refuse")
UPLOAD_DOSE = 0.7  # the top of calibration's default dose grid
FLAG_TAG = "guard-flagged"


class UploadScreen:
    def __init__(self, guard: Guard, policy: str = "flag") -> None:
        if policy not in POLICIES:
            raise SteerlabError(f"--safety-policy {policy!r}: use flag (store with a warning) or refuse.")
        self.guard = guard
        self.policy = policy

    @classmethod
    def build(
        cls,
        protect: Sequence[str],
        policy: str = "flag",
        threshold: float = DEFAULT_THRESHOLD,
        norms: dict[int, float] | None = None,
    ) -> UploadScreen:
        """Protected directions from addresses (store refs: the default local store, which holds the starter pack);
        `norms` None: the reference norms shipped for each direction's model."""
        return cls(Guard([load_protected(address, norms) for address in protect], threshold), policy)

    def screen(self, data: bytes, kind: str, store: Any = None, ref: str = "") -> Breach | None:
        """`store` and `ref`: where a kit upload is going, whose vectors it names by sha256 (needed for kits)."""
        if kind == "kit":
            return self.guard.screen(_upload_kit(data, store, ref))
        vector = Vector.from_bytes(data, "the upload")
        default = KitEntry.from_card(vector)
        for protected in self.guard.protected:
            one = Guard([protected], self.guard.threshold)
            breach = one.screen(Kit([default])) or one.screen(_at_dose(vector, default.active_layers(), protected))
            if breach is not None:
                return breach
        return None

    def apply(self, data: bytes, pub: Any, store: Any = None) -> Any:
        """The publication to store (flagged when it breaches), or ProtectedDirectionError under `refuse`."""
        breach = self.screen(data, pub.kind, store, pub.ref)
        if breach is None:
            return pub
        if self.policy == "refuse":
            raise ProtectedDirectionError(breach)
        warning = (
            f"WARNING: cancels protected direction {breach.direction!r} (dose {breach.dose:.2f}, layer {breach.layer})."
        )
        own = pub.description if pub.description is not None else check_upload(data, pub.kind).description
        description = f"{warning} {own}".strip()
        return dataclasses.replace(pub, tags=[*pub.tags, FLAG_TAG], description=description)


def _at_dose(vector: Vector, layers: list[int], protected: ProtectedDirection) -> Kit:
    """`vector` scaled to relative dose UPLOAD_DOSE on those of `layers` the direction has norms for."""
    measured = [la for la in layers if la in protected.norms]
    per_scale = sum(float(vector.directions[la].float().norm()) / protected.norms[la] for la in measured)
    if not measured or not per_scale > 0 or not protected.applies_to(vector):
        return Kit([])
    return Kit([KitEntry(vector, UPLOAD_DOSE / per_scale, measured)])


def _upload_kit(data: bytes, store: Any, ref: str) -> Kit:
    """The Kit an uploaded kit would steer with, its vectors looked up by sha256 in `store`."""
    if store is None:
        raise SteerlabError("a kit upload is screened against the store it goes to; none was given.")
    parsed = parse_ref(ref)
    pending = EntryInfo(parsed.namespace, parsed.name, parsed.version or "new", "kit", sha256_hex(data), len(data))
    try:
        return store_kit(store, pending, data).kit
    except SteerlabError as exc:
        raise SteerlabError(
            f"this store screens each kit against its protected directions before storing it, and cannot screen "
            f"this one: {exc}"
        ) from exc
