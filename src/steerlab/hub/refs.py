"""Entry references `namespace/name@version`: parsing, safe names, semantic versions and their order."""

from __future__ import annotations

import re
from dataclasses import dataclass

from steerlab.errors import SteerlabError

# Lower case only: two names that differ by case would collide on case-insensitive file systems and confuse people.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
SEMVER_RE = re.compile(r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(?:-([0-9a-z][0-9a-z.-]{0,31}))?$")
NAME_RULE = "1-64 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit, no '..'"


def check_name(value: str, what: str = "name") -> str:
    """Refuse anything that could walk out of a folder or look like another entry ('..', '/', '\\', NUL, ...)."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or ".." in value:
        raise SteerlabError(f"invalid {what} {value!r}: use {NAME_RULE}.")
    return value


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        match = SEMVER_RE.fullmatch(text or "")
        if not match:
            raise SteerlabError(
                f"invalid version {text!r}: use a semantic version MAJOR.MINOR.PATCH such as 1.0.0 (or 1.0.0-rc.1)."
            )
        major, minor, patch, pre = match.groups()
        return cls(int(major), int(minor), int(patch), pre or "")

    def sort_key(self) -> tuple[int, int, int, int, str]:
        # A release sorts after its pre-releases (1.0.0-rc.1 < 1.0.0).
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, self.pre)

    def next_patch(self) -> Version:
        return Version(self.major, self.minor, self.patch + 1)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + (f"-{self.pre}" if self.pre else "")


@dataclass(frozen=True)
class Ref:
    namespace: str
    name: str
    version: str | None = None

    @property
    def base(self) -> str:
        return f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return self.base + (f"@{self.version}" if self.version else "")


def parse_ref(text: str) -> Ref:
    """'ns/name' or 'ns/name@1.2.3' -> Ref, refusing unsafe names and malformed versions."""
    body, sep, version = text.partition("@") if isinstance(text, str) else ("", "", "")
    if body.count("/") != 1:
        raise SteerlabError(f"invalid reference {text!r}: write NAMESPACE/NAME or NAMESPACE/NAME@VERSION.")
    namespace, _, name = body.partition("/")
    check_name(namespace, "namespace")
    check_name(name, "name")
    if sep:
        version = str(Version.parse(version))
    return Ref(namespace, name, version or None)
