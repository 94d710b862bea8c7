"""Selection quality: does each score pick the term that trains best?

For every task and seed of `benchmarks/results/accuracy_<backend>.json`
that has a probe and the b_q, b_k (or head-only) and b_v rows, the term
chosen by BEFT, magnitude and Fisher (from that seed's probe) is compared
with the term among query, key and value whose fine-tuning scored best on
the dev set, head-only standing in for b_k where b_k did not run (the key
bias gets no gradient, so they train the same). Terms within `--tie` of the
best count as best too. No training happens here, so there is no worker
per backend and `--quick` only reads the quick accuracy results.

    python -m benchmarks.selection
"""

import sys

from benchmarks import common

NAME = "selection"
SCORES = ("beft", "magnitude", "fisher")
SYMBOL_OF = {"query": "b_q", "key": "b_k", "value": "b_v"}
TERM_OF = {v: k for k, v in SYMBOL_OF.items()}


def selection_quality(accuracy, tie=0.0):
    """Per task and seed: chosen terms, the best term(s), agreement; and
    each score's agreement rate."""
    scores = {}
    for row in accuracy["rows"]:
        # Head-only stands in for b_k where b_k did not run: the key bias
        # gets no gradient, so the two trainings are the same (the grid
        # runs b_k on one seed, and the report checks the equality there).
        is_head = row["method"] == "head"
        term = TERM_OF.get("b_k" if is_head else row["method"])
        key = (row["task"], row["seed"], term)
        if term and not (is_head and key in scores):
            scores[key] = row["score"]
    cases = []
    for probe in accuracy["probes"]:
        task, seed = probe["task"], probe["seed"]
        by_term = {t: scores.get((task, seed, t)) for t in SYMBOL_OF}
        if any(v is None for v in by_term.values()):
            continue
        top = max(by_term.values())
        best = sorted(t for t, v in by_term.items() if v >= top - tie)
        chosen = {m: probe["selected"].get(m) for m in SCORES}
        cases.append({
            "task": task, "seed": seed, "dev_score": by_term,
            "best": best, "chosen": chosen,
            "agrees": {m: chosen[m] in best for m in SCORES
                       if chosen[m] is not None},
            "averages": {m: probe["averages"].get(m) for m in SCORES},
        })
    rates = {}
    for m in SCORES:
        votes = [c["agrees"][m] for c in cases if m in c["agrees"]]
        rates[m] = {
            "agree": sum(votes), "cases": len(votes),
            "rate": sum(votes) / len(votes) if votes else None,
        }
    return {"tie": tie, "cases": cases, "agreement": rates}


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--tie", type=float, default=0.0)
    args = parser.parse_args(argv)
    for backend in args.backends:
        accuracy = common.load_accuracy(args.results, backend, args.quick)
        if accuracy is None:
            continue
        result = selection_quality(accuracy, args.tie)
        result["backend"] = backend
        result["sources"] = accuracy["shards"]
        path = common.result_path(args.results, NAME, backend, args.quick)
        common.write_json(path, result)
        print(f"[selection] {backend}: {result['agreement']} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
