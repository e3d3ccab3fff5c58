"""Incremental detokenisation with stop sequences: text deltas that never show a stop string or half a character."""

from __future__ import annotations

from typing import Any


class TextStream:
    def __init__(self, tokenizer: Any, stops: list[str] | None = None) -> None:
        self.tokenizer = tokenizer
        self.stops = list(stops or [])
        self.tokens: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; returns the text that is now safe to show. Sets `stopped` when a stop string appeared."""
        self.tokens.append(token)
        self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = self._first_stop()
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            return self._emit(len(self.text))
        return self._emit(self._safe_end())

    def flush(self) -> str:
        """Whatever was held back, once generation has ended for another reason than a stop string."""
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted : end], end
        return delta

    def _first_stop(self) -> int | None:
        # A stop string can only begin in the part not yet shown (or overlap its end by len(stop) - 1).
        hits = [self.text.find(s, max(0, self.emitted - len(s) + 1)) for s in self.stops]
        found = [h for h in hits if h >= 0]
        return min(found) if found else None

    def _safe_end(self) -> int:
        end = len(self.text.rstrip("\ufffd"))  # an incomplete UTF-8 sequence decodes as U+FFFD for now
        hold = max((self._prefix_tail(stop, end) for stop in self.stops), default=0)
        return max(end - hold, self.emitted)

    def _prefix_tail(self, stop: str, end: int) -> int:
        """Length of the longest tail of text[:end] that could still grow into `stop`: it is held back."""
        for k in range(min(len(stop) - 1, end), 0, -1):
            if stop.startswith(self.text[end - k : end]):
                return k
        return 0
