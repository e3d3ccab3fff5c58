"""The configurations of a measurement (which axes are steered together) and what each one measured, cached."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from steerlab.bootstrap import nanmean
from steerlab.interference.readout import Row, Scored, Unit, generate_rows, score_rows
from steerlab.kit import Kit, KitEntry
from steerlab.models import LoadedModel

__all__ = ["Config", "Measured", "Run"]

Config = tuple[int, ...]  # indices of the axes steered together; () is the unsteered model


@dataclass
class Measured:
    """One steering configuration: each axis's measure (mean projection) and the fluency of its generations."""

    measures: list[float]
    fluency: float
    n_tokens: int
    samples: list[str] = field(default_factory=list)


@dataclass
class Run:
    """Everything the search needs: the model, the axes, the prompts, and the configurations measured so far."""

    model: LoadedModel
    entries: list[KitEntry]
    prompts: list[str]
    units: list[Unit]  # None for an expert axis: its own projection is not defined (NaN)
    max_new_tokens: int
    batch_size: int
    results: dict[Config, Measured] = field(default_factory=dict)

    def measure(self, configs: Sequence[Config]) -> None:
        """Measure every configuration not measured yet; rows of different configurations share batches."""
        todo = [c for c in dict.fromkeys(configs) if c not in self.results]
        rows = [(c, p) for c in todo for p in self.prompts]
        outputs: list[Row] = []
        scores: list[Scored] = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            steering = [Kit([self.entries[i] for i in c]) if c else None for c, _ in chunk]
            generated = generate_rows(self.model, [p for _, p in chunk], steering, self.max_new_tokens)
            outputs += generated
            scores += score_rows(self.model, generated, self.units)
        decode = self.model.tokenizer.decode
        for c in todo:
            mine = [k for k, (cfg, _) in enumerate(rows) if cfg == c]
            measures = [nanmean([scores[k][0][j] for k in mine]) for j in range(len(self.units))]
            self.results[c] = Measured(
                measures=measures,
                fluency=nanmean([scores[k][1] for k in mine]),
                n_tokens=sum(scores[k][2] for k in mine),
                samples=[decode(outputs[k][1], skip_special_tokens=True) for k in mine],
            )

    def shift(self, config: Config, axis: int) -> float:
        """How far `config` moves axis `axis`'s measure from the unsteered one (both must be measured)."""
        return self.results[config].measures[axis] - self.results[()].measures[axis]
