"""The one error type users catch: every message names the problem and what to do about it."""


class SteerlabError(ValueError):
    """Bad input or an incompatible combination (vector vs model, kit vs store)."""
