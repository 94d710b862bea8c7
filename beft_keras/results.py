"""The results of a BEFT probe: tables, rankings, JSON, CSV and heatmap."""

import csv
import dataclasses
import io
import json
import math

import numpy as np

from beft_keras import scores as scores_lib
from beft_keras import terms as terms_lib
from beft_keras.files import atomic_write

_METHOD_TITLES = {
    scores_lib.BEFT: "BEFT",
    scores_lib.MAGNITUDE: "Magnitude",
    scores_lib.FISHER: "Fisher",
}


@dataclasses.dataclass(frozen=True)
class BeftResults:
    """Scores of every transformer bias term, per layer, by each method.

    Attributes:
        terms: tuple of str. The scored terms, in `beft_keras.TERMS` order.
        num_layers: int. Number of transformer layers.
        layer_scores: dict. Maps each method (`"beft"`, `"magnitude"` and,
            if measured, `"fisher"`) to a float64 array of shape
            `(len(terms), num_layers)`, NaN where a term has no bias.
        candidates: tuple of str. The terms the selection chooses among.
        gradient_rms: dict or None. Maps each term to the root mean square
            of its gradient at the starting weights; `None` if no gradient
            was measured.
    """

    terms: tuple
    num_layers: int
    layer_scores: dict
    candidates: tuple
    gradient_rms: dict | None = None

    @classmethod
    def from_biases(cls, biases, layer_scores, candidates):
        """Build results from a list of `BiasTerm` and, per method, a list of
        scores aligned with it."""
        terms = tuple(t for t in terms_lib.TERMS if t in {b.term for b in biases})
        num_layers = 1 + max(b.layer_index for b in biases)
        tables = {}
        for method, values in layer_scores.items():
            table = np.full((len(terms), num_layers), np.nan)
            for bias, value in zip(biases, values):
                table[terms.index(bias.term), bias.layer_index] = value
            tables[method] = table
        gradient_rms = None
        if scores_lib.FISHER in tables:
            fisher = _layer_mean(tables[scores_lib.FISHER])
            gradient_rms = {t: math.sqrt(f) for t, f in zip(terms, fisher)}
        candidates = tuple(t for t in candidates if t in terms)
        return cls(terms, num_layers, tables, candidates, gradient_rms)

    @property
    def methods(self):
        return tuple(self.layer_scores)

    @property
    def averages(self):
        """Maps each method to `{term: score averaged over layers}`: over
        the layers that hold the term's bias (the formula's `L`), a layer
        without it (NaN in `layer_scores`) left out."""
        return {
            method: dict(zip(self.terms, _layer_mean(table).tolist()))
            for method, table in self.layer_scores.items()
        }

    @property
    def rankings(self):
        """Maps each method to the candidate terms, most important first."""
        averages = self.averages
        return {
            method: scores_lib.rank(
                {t: averages[method][t] for t in self.candidates}
            )
            for method in self.methods
        }

    def selected_by(self, method):
        """The candidate term `method` selects: the highest-scoring one
        that is not inert."""
        if method not in self.layer_scores:
            raise ValueError(
                f"No '{method}' scores in these results: they hold "
                f"{list(self.methods)} (the Fisher score needs the probe's "
                f"`data`). Received: method={method!r}"
            )
        return scores_lib.select(
            self.averages[method], self.candidates, self.inert
        )

    @property
    def selected(self):
        """The term BEFT selects: the candidate with the highest score
        that is not inert."""
        return self.selected_by(scores_lib.BEFT)

    def tied_with_selected(self, method=scores_lib.BEFT):
        """The other candidates whose score equals the selected term's (to
        float64 rounding), which the selection picked among by their order
        in `candidates` alone; inert terms are left out."""
        selected = self.selected_by(method)  # names an unknown method
        averages = self.averages[method]
        return tuple(
            t for t in self.candidates
            if t != selected and t not in self.inert
            and math.isclose(averages[t], averages[selected], rel_tol=1e-12)
        )

    @property
    def inert(self):
        """Terms whose gradient is zero up to rounding (measured)."""
        if self.gradient_rms is None:
            return ()
        return tuple(scores_lib.inert_terms(self.gradient_rms))

    def to_dict(self):
        """A JSON-ready dict of everything above."""
        return {
            "terms": list(self.terms),
            "symbols": [terms_lib.PAPER_SYMBOLS[t] for t in self.terms],
            "num_layers": self.num_layers,
            "candidates": list(self.candidates),
            "layer_scores": {
                method: [
                    [None if np.isnan(x) else x for x in row]
                    for row in table.tolist()
                ]
                for method, table in self.layer_scores.items()
            },
            "averages": self.averages,
            "rankings": self.rankings,
            "selected": {m: self.selected_by(m) for m in self.methods},
            "gradient_rms": self.gradient_rms,
            "inert": list(self.inert),
        }

    def to_json(self, path):
        """Write `to_dict()` as JSON, atomically."""
        atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def to_csv(self, path):
        """Write one row per method and term: the per-layer scores and their
        average, atomically."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        layers = [f"layer_{i}" for i in range(self.num_layers)]
        writer.writerow(["method", "term", "symbol", *layers, "average"])
        averages = self.averages
        for method, table in self.layer_scores.items():
            for term, row in zip(self.terms, table):
                writer.writerow(
                    [method, term, terms_lib.PAPER_SYMBOLS[term]]
                    + ["" if np.isnan(x) else repr(float(x)) for x in row]
                    + [repr(averages[method][term])]
                )
        atomic_write(path, buffer.getvalue())

    def summary(self):
        """The scores as a text table, with rankings and the selection."""
        averages = self.averages
        header = ["Term", "Symbol"] + [_METHOD_TITLES[m] for m in self.methods]
        if self.gradient_rms is not None:
            header.append("Grad RMS")
        rows = []
        for term in self.terms:
            row = [term, terms_lib.PAPER_SYMBOLS[term]]
            row += [f"{averages[m][term]:.4g}" for m in self.methods]
            if self.gradient_rms is not None:
                rms = f"{self.gradient_rms[term]:.3g}"
                row.append(rms + (" (inert)" if term in self.inert else ""))
            if term in self.candidates:
                row[0] += " *"
            rows.append(row)
        widths = [
            max(len(str(r[i])) for r in [header] + rows)
            for i in range(len(header))
        ]

        def line(cells):
            return "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths))

        rule = "-" * len(line(header))
        lines = [
            f"BEFT probe: scores averaged over {self.num_layers} layers "
            "(* = candidate)",
            rule,
            line(header),
            rule,
            *[line(r) for r in rows],
            rule,
        ]
        for method, ranking in self.rankings.items():
            lines.append(
                f"{_METHOD_TITLES[method] + ' ranking:':<19}"
                + " > ".join(terms_lib.PAPER_SYMBOLS[t] for t in ranking)
            )
        lines.append(
            f"{'Selected:':<19}{self.selected} "
            f"({terms_lib.PAPER_SYMBOLS[self.selected]})"
        )
        if self.inert:
            lines.append(
                f"{'Inert:':<19}" + ", ".join(self.inert)
                + ": zero gradient, training them alone changes nothing."
            )
        elif self.gradient_rms is None:
            lines.append(
                "No gradients measured (pass `data=` to BeftProbe for the "
                "Fisher score and the inert-term check)."
            )
        return "\n".join(lines)

    def plot_heatmap(self, path, title=None):
        """Save a PNG heatmap like the paper's figure: terms by layers with
        an average column, one panel per method, each on its own scale.

        Args:
            path: str. Where to write the PNG.
            title: str or None. A title above the panels.
        """
        # A bare `Figure`, not pyplot: drawing must not switch the user's
        # matplotlib backend (a notebook's) or leave figures open.
        from matplotlib.figure import Figure

        averages = self.averages
        columns = [str(i) for i in range(self.num_layers)] + ["avg"]
        figure = Figure(
            figsize=(1.0 + 0.55 * len(columns) * len(self.methods) * 1.25, 4)
        )
        axes = figure.subplots(1, len(self.methods), squeeze=False)
        for axis, method in zip(axes[0], self.methods):
            table = np.column_stack(
                [
                    self.layer_scores[method],
                    [averages[method][t] for t in self.terms],
                ]
            )
            image = axis.imshow(table, cmap="viridis", aspect="auto")
            axis.set_title(_METHOD_TITLES[method])
            axis.set_xticks(range(len(columns)), columns)
            axis.set_yticks(
                range(len(self.terms)),
                [terms_lib.PAPER_SYMBOLS[t] for t in self.terms],
            )
            axis.set_xlabel("layer")
            axis.axvline(self.num_layers - 0.5, color="white", linewidth=2)
            figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        atomic_write(path, _png_bytes(figure))


def _png_bytes(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def _layer_mean(table):
    return np.nanmean(table, axis=1)
