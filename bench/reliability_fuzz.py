"""Seeded hostile uploads for the store: every case is invalid by the store's contract (hub/validate.py, hub/refs.py,
the upload route), so every one must be refused with a 4xx that says why, and nothing may be stored.

A case is built from a valid vector by one mutation of its bytes, its name, its query or its headers."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.reliability_store import payload

HEADER_LIMIT = 4 * 1024 * 1024  # hub/validate.py MAX_HEADER_BYTES
HIDDEN, LAYERS = 64, 8


@dataclass
class Case:
    category: str
    label: str
    body: bytes
    name: str = ""  # the URL path after /entries/ (already percent-encoded where it matters)
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def assemble(header: dict[str, Any] | bytes, data: bytes, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


class Fuzzer:
    def __init__(self, seed: int, max_bytes: int) -> None:
        self.rng = random.Random(seed)
        self.max_bytes = max_bytes
        self.base = payload(seed, hidden=HIDDEN, n_layers=LAYERS)
        self.header, self.data = split(self.base)
        self.card = json.loads(self.header["__metadata__"]["steerlab.card"])
        self.count = 0
        self.makers: list[tuple[float, Callable[[], Case]]] = [
            (1, self.truncated),
            (1, self.header_length),
            (1, self.header_garbage),
            (0.5, self.deep_nesting),
            (1, self.non_finite),
            (1, self.wrong_dtype),
            (1, self.wrong_shape),
            (1, self.tensor_names),
            (1, self.bad_card),
            (0.15, self.huge_card),
            (1, self.path_tricks),
            (1, self.wrong_content_type),
            (0.15, self.oversized),
            (0.6, self.bad_kit),
            (0.6, self.bad_query),
        ]

    def cases(self, n: int) -> list[Case]:
        weights = [w for w, _ in self.makers]
        return [self.rng.choices(self.makers, weights)[0][1]() for _ in range(n)]

    # ----- helpers -----
    def _name(self) -> str:
        self.count += 1
        return f"fz/c{self.count:05d}"

    def _case(self, category: str, label: str, body: bytes, **kw: Any) -> Case:
        return Case(category, label, body, kw.pop("name", None) or self._name(), **kw)

    def _with_header(self, mutate: Callable[[dict[str, Any]], None], data: bytes | None = None) -> bytes:
        header = json.loads(json.dumps(self.header))
        mutate(header)
        return assemble(header, self.data if data is None else data)

    def _with_card(self, mutate: Callable[[dict[str, Any]], Any]) -> bytes:
        card = json.loads(json.dumps(self.card))
        replaced = mutate(card)
        text = json.dumps(card if replaced is None else replaced, allow_nan=True)
        return self._with_header(lambda h: h["__metadata__"].__setitem__("steerlab.card", text))

    def _layer(self) -> str:
        return f"layer.{self.rng.randrange(LAYERS)}"

    # ----- the mutations -----
    def truncated(self) -> Case:
        cut = self.rng.randrange(0, len(self.base))
        return self._case("truncated", f"first {cut} of {len(self.base)} bytes", self.base[:cut])

    def header_length(self) -> Case:
        real = len(self.base) - 8 - len(self.data)
        choice = self.rng.choice(["huge", "past end", "short", "zero", "over limit"])
        length = {
            "huge": self.rng.randrange(2**40, 2**64),
            "past end": len(self.base) - 8 + self.rng.randrange(1, 4096),
            "short": self.rng.randrange(1, real),
            "zero": 0,
            "over limit": HEADER_LIMIT + self.rng.randrange(1, 2**20),
        }[choice]
        raw = json.dumps(self.header).encode()
        return self._case("header length", choice, assemble(raw, self.data, length))

    def header_garbage(self) -> Case:
        choice = self.rng.choice(["random bytes", "json list", "json string", "json number", "null", "bad utf-8"])
        raw = {
            "random bytes": self.rng.randbytes(self.rng.randrange(1, 512)),
            "json list": b"[1, 2, 3]",
            "json string": b'"layer.0"',
            "json number": b"12345",
            "null": b"null",
            "bad utf-8": b'{"\xff\xfe": 1}',
        }[choice]
        return self._case("header garbage", choice, assemble(raw, self.data))

    def deep_nesting(self) -> Case:
        depth = self.rng.choice([2_000, 20_000, 200_000])
        where = self.rng.choice(["header", "card", "metadata value"])
        nested = "[" * depth + "]" * depth
        if where == "header":
            return self._case("deep nesting", f"header {depth} deep", assemble(nested.encode(), self.data))
        if where == "card":
            text = json.dumps(self.card)[:-1] + ', "metadata": {"x": ' + nested + "}}"
            body = self._with_header(lambda h: h["__metadata__"].__setitem__("steerlab.card", text))
            return self._case("deep nesting", f"card.metadata {depth} deep", body)
        body = self._with_header(lambda h: h["__metadata__"].__setitem__("steerlab.card", nested))
        return self._case("deep nesting", f"card {depth} deep", body)

    def non_finite(self) -> Case:
        import numpy as np

        values = np.frombuffer(self.data, "<f4").copy()
        bad = self.rng.choice([float("nan"), float("inf"), float("-inf")])
        for _ in range(self.rng.randrange(1, 4)):
            values[self.rng.randrange(values.size)] = bad
        return self._case("NaN/Inf", f"{bad} in the tensors", assemble(self.header, values.tobytes()))

    def wrong_dtype(self) -> Case:
        dtype = self.rng.choice(["I8", "I16", "I32", "I64", "U8", "U16", "BOOL", "F8_E4M3", "f32", "", 32, None])
        key = self._layer()

        def mutate(h: dict[str, Any]) -> None:
            h[key]["dtype"] = dtype

        return self._case("wrong dtype", f"{key} dtype {dtype!r}", self._with_header(mutate))

    def wrong_shape(self) -> Case:
        key = self._layer()
        shape = self.rng.choice(
            [[HIDDEN + 1], [HIDDEN - 1], [HIDDEN, 1], [1, HIDDEN], [], [0], [-HIDDEN], ["64"], None, [HIDDEN * 2]]
        )
        offsets = self.rng.choice(["keep", "overlap", "past end", "reversed"])

        def mutate(h: dict[str, Any]) -> None:
            h[key]["shape"] = shape
            start, end = h[key]["data_offsets"]
            h[key]["data_offsets"] = {
                "keep": [start, end],
                "overlap": [max(0, start - 4), end - 4],
                "past end": [start, len(self.data) + 64],
                "reversed": [end, start],
            }[offsets]

        if shape == [HIDDEN] or (offsets == "keep" and shape is None):
            shape = [HIDDEN + 1]
        return self._case("wrong shape", f"{key} shape {shape}, offsets {offsets}", self._with_header(mutate))

    def tensor_names(self) -> Case:
        new = self.rng.choice(
            ["layer.\u00b2", "layer.x", "layer.-1", "layer.1e3", "weights", "layer.1.bias", "", "../0"]
        )
        new = self.rng.choice([new, f"layer.{LAYERS + self.rng.randrange(1, 10_000)}"])
        key = self._layer()

        def mutate(h: dict[str, Any]) -> None:
            h[new] = h.pop(key)

        return self._case("tensor names", f"{key} renamed {new!r}", self._with_header(mutate))

    def bad_card(self) -> Case:
        choices: dict[str, Callable[[dict[str, Any]], Any]] = {
            "not an object": lambda c: [c],
            "no hidden_size": lambda c: c.pop("hidden_size"),
            "hidden_size 0": lambda c: c.__setitem__("hidden_size", 0),
            "hidden_size string": lambda c: c.__setitem__("hidden_size", "64"),
            "hidden_size mismatch": lambda c: c.__setitem__("hidden_size", HIDDEN * 2),
            "n_layers too few": lambda c: c.__setitem__("n_layers", 2),
            "unknown field": lambda c: c.__setitem__("evil", True),
            "scale NaN": lambda c: c.__setitem__("recommended_scale", float("nan")),
            "scale Infinity": lambda c: c.__setitem__("recommended_scale", float("inf")),
            "future format": lambda c: c.__setitem__("format_version", 10**6),
            "layer convention": lambda c: c.__setitem__("layer_convention", "embedding=1"),
            "recommended layer missing": lambda c: c.__setitem__("recommended_layers", [LAYERS + 3]),
            "diagnostics key not a layer": lambda c: c.__setitem__("diagnostics", {"x": {"accuracy": 0.9}}),
            "diagnostics value not numbers": lambda c: c.__setitem__("diagnostics", {"1": {"accuracy": "high"}}),
            "norms not numbers": lambda c: c.__setitem__("norms", {"1": [1, 2]}),
            "name not a string": lambda c: c.__setitem__("name", {"$ne": 1}),
        }
        label = self.rng.choice(sorted(choices))
        return self._case("bad card", label, self._with_card(choices[label]))

    def huge_card(self) -> Case:
        size = HEADER_LIMIT + self.rng.randrange(1, 256 * 1024)
        field_name = self.rng.choice(["description", "name", "license"])
        body = self._with_card(lambda c: c.__setitem__(field_name, "x" * size))
        return self._case("huge card", f"card.{field_name} of {size} characters", body)

    def path_tricks(self) -> Case:
        namespace, name = self.rng.choice(
            [
                ("fz", "%2e%2e"),
                ("%2e%2e", "x"),
                ("fz", "a%2Fb"),
                ("fz", "a%5Cb"),
                ("fz", "a%00b"),
                ("fz", "%00"),
                ("fz", ".env"),
                ("fz", "-x"),
                ("fz", "a%20b"),
                ("fz", "%C3%A9t%C3%A9"),
                ("fz", "x" * 65),
                ("fz", "A"),
                ("fz", "a%0Ab"),
                ("fz", "..%2F..%2Fetc"),
                ("fz", "a..b"),
                ("FZ", "x"),
                ("fz", "x/y/z"),
                ("fz%2F..", "x"),
                ("fz", "%252e%252e"),
            ]
        )
        return self._case("path tricks", f"{namespace}/{name}", self.base, name=f"{namespace}/{name}")

    def wrong_content_type(self) -> Case:
        kind = self.rng.choice(
            [
                "text/html",
                "text/plain; charset=utf-8",
                "multipart/form-data; boundary=xyz",
                "application/x-www-form-urlencoded",
                "application/json",
                "image/png",
                "application/zip",
            ]
        )
        return self._case("wrong content-type", kind, self.base, headers={"content-type": kind})

    def oversized(self) -> Case:
        extra = self.rng.randrange(1, 512 * 1024)
        body = self.base + b"\0" * (self.max_bytes - len(self.base) + extra)
        return self._case("oversized", f"{len(body)} bytes (limit {self.max_bytes})", body)

    def bad_kit(self) -> Case:
        kits: dict[str, bytes] = {
            "not json": b"{entries: [",
            "NaN scale": b'{"entries": [{"vector": "a.safetensors", "scale": NaN}]}',
            "Infinity scale": b'{"entries": [{"vector": "a.safetensors", "scale": Infinity}]}',
            "no entries": b'{"entries": []}',
            "a list": b"[1, 2]",
            "absolute path": b'{"entries": [{"vector": "/etc/passwd", "scale": 1}]}',
            "parent path": b'{"entries": [{"vector": "../../secret.safetensors", "scale": 1}]}',
            "future version": b'{"version": 999, "entries": [{"vector": "a.safetensors"}]}',
            "deep": b'{"entries": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
            "vector bytes as a kit": self.base,
        }
        label = self.rng.choice(sorted(kits))
        return self._case("bad kit", label, kits[label], params={"kind": "kit"})

    def bad_query(self) -> Case:
        queries: dict[str, dict[str, Any]] = {
            "unknown kind": {"kind": "model"},
            "kind path": {"kind": "../vector"},
            "version path": {"version": "../../1.0.0"},
            "version garbage": {"version": "1.0.0; DROP TABLE entries"},
            "version huge": {"version": "9" * 5000 + ".0.0"},
            "too many tags": {"tag": [f"t{i}" for i in range(40)]},
            "visibility unknown": {"visibility": "everyone"},
        }
        label = self.rng.choice(sorted(queries))
        return self._case("bad query", label, self.base, params=queries[label])
