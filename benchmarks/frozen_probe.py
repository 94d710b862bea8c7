"""What the untuned model's features already carry for a task: a linear
probe on frozen embeddings, per layer and pooling.

The task's low-regime training subset and its dev set are embedded once by
the untuned encoder (a sentence pair is read together), and at every
transformer layer two features are taken: the mean of the layer's token
outputs over the padding mask, and the `[CLS]` token's output. On each a
linear head (`keras.layers.Normalization` then one `Dense`, AdamW, full
batch) is fit, for a classification task with and without Keras'
`class_weight` balancing the classes, and scored on dev with the task's
main metric. BEFT moves 0.01% of the weights away from these features, so
the probe tells how much of the task a head finds in them unchanged: where
its best cell is low, a bias-only fine-tune starts from little.

    python -m benchmarks.frozen_probe --task cola     # writes JSON and docs
    python -m benchmarks.frozen_probe --quick          # smoke test
    python -m benchmarks.frozen_probe --render         # docs from the JSON

Results: `benchmarks/results/frozen_probe_<task>_<backend>.json`, and
`docs/frozen_probe.md` from every such file.
"""

import glob
import os
import sys

from benchmarks import common

NAME = "frozen_probe"
POOLINGS = ("mean", "cls")
PROBE_EPOCHS = 300
PROBE_LEARNING_RATE = 1e-2
L2 = 1e-3
DOCS = os.path.join(common.ROOT, "docs", "frozen_probe.md")


def main(argv=None):
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.set_defaults(backends=["tensorflow"])
    parser.add_argument("--task", default="cola")
    parser.add_argument("--seed", type=int, default=0)
    common.add_render_argument(parser)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    return common.run_then_render(
        "benchmarks.frozen_probe", argv, args, lambda: render(args.results, DOCS)
    )


def layer_features(backbone, inputs, batch_size=64):
    """{pooling: array (layers, examples, hidden)} of the frozen encoder."""
    import keras
    import numpy as np

    outputs = [layer.output for layer in backbone.transformer_layers]
    hidden = keras.Model(backbone.inputs, outputs).predict(
        {name: inputs[name] for name in backbone.input},
        batch_size=batch_size, verbose=0,
    )
    mask = inputs["padding_mask"].astype("float32")[..., None]
    return {
        "mean": np.stack([(h * mask).sum(1) / mask.sum(1) for h in hidden]),
        "cls": np.stack([h[:, 0] for h in hidden]),
    }


def fit_probe(spec, train_x, train_y, dev_x, dev_y, balanced, seed,
              epochs=PROBE_EPOCHS):
    """The dev metrics of a linear head fit on frozen features."""
    import keras
    import numpy as np
    import tensorflow as tf

    from beft_keras import metrics

    keras.utils.set_random_seed(seed)
    normalize = keras.layers.Normalization()
    normalize.adapt(train_x)
    regression = spec.is_regression
    head = keras.Sequential([
        keras.Input(train_x.shape[1:]),
        normalize,
        keras.layers.Dense(
            spec.num_classes,
            kernel_regularizer=keras.regularizers.L2(L2),
        ),
    ])
    head.compile(
        optimizer=keras.optimizers.AdamW(PROBE_LEARNING_RATE, weight_decay=0.0),
        loss=(
            keras.losses.MeanSquaredError() if regression else
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        ),
    )
    weights = np.ones(len(train_y), "float32")
    if balanced:
        # Keras's `class_weight`, as per-example weights.
        counts = np.bincount(train_y, minlength=spec.num_classes)
        weights = (len(train_y) / (spec.num_classes * counts))[train_y]
    # Full-batch steps, one per "epoch", as a single epoch of repeats: a
    # Keras epoch's start and end cost more than this step.
    steps = tf.data.Dataset.from_tensors(
        (train_x, train_y, weights.astype("float32"))
    ).repeat()
    head.fit(steps, steps_per_epoch=epochs, epochs=1, shuffle=False,
             verbose=0)
    logits = head.predict(dev_x, batch_size=len(dev_x), verbose=0)
    predictions = metrics.predictions_from_logits(spec, logits)
    return metrics.compute_metrics(spec, dev_y, predictions)


def worker(args):
    import keras_hub
    import numpy as np

    from beft_keras import data
    from beft_keras import models

    env = common.environment()
    model = args.model or models.default_model()
    spec = data.get_task(args.task)
    train = data.training_subset(
        spec, data.load_split(spec, "train", args.data_dir), "low", args.seed
    )
    dev = data.load_split(spec, "dev", args.data_dir)
    if args.quick:
        train = data.subsample(train, 64, args.seed)
        dev = data.subsample(dev, 64, args.seed)
    backbone = keras_hub.models.Backbone.from_preset(model)
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
        model
    )
    features = {
        split: layer_features(
            backbone,
            data.tokenize(examples, preprocessor, args.sequence_length),
        )
        for split, examples in (("train", train), ("dev", dev))
    }
    label_dtype = "float32" if spec.is_regression else "int32"
    train_y = np.asarray(train.labels, label_dtype)
    dev_y = np.asarray(dev.labels, label_dtype)
    weightings = (False,) if spec.is_regression else (False, True)
    cells = []
    for pooling in POOLINGS:
        for layer in range(len(backbone.transformer_layers)):
            for balanced in weightings:
                scores = fit_probe(
                    spec, features["train"][pooling][layer], train_y,
                    features["dev"][pooling][layer], dev_y, balanced,
                    args.seed, epochs=5 if args.quick else PROBE_EPOCHS,
                )
                cells.append(dict(pooling=pooling, layer=layer + 1,
                                  balanced=balanced, metrics=scores))
                print(f"[frozen_probe] {pooling} layer {layer + 1}"
                      f"{' balanced' if balanced else ''}: "
                      f"{scores[spec.main_metric]:.4f}", flush=True)
    payload = {
        **env, "quick": args.quick, "model": model, "task": spec.name,
        "seed": args.seed, "train_examples": len(train),
        "dev_examples": len(dev), "sequence_length": args.sequence_length,
        "main_metric": spec.main_metric, "probe_epochs": PROBE_EPOCHS,
        "probe_learning_rate": PROBE_LEARNING_RATE, "l2": L2,
        "cells": cells,
    }
    path = common.result_path(args.results, f"{NAME}_{spec.name}",
                              env["backend"], args.quick)
    common.write_json(path, payload)
    print(f"[frozen_probe] wrote {path}", flush=True)
    return 0


def render(results, output):
    """Write `output` (docs/frozen_probe.md) from every full (not quick)
    result in `results`."""
    paths = sorted(
        p for p in glob.glob(os.path.join(results, f"{NAME}_*.json"))
        if not p.endswith("_quick.json")
    )
    lines = [
        "# What the untuned model's features carry: frozen linear probes",
        "",
        "Generated by `python -m benchmarks.frozen_probe` "
        "(its docstring says what runs); one table per task and backend. "
        "A cell is the dev metric of a linear head fit on the frozen "
        "features of one layer, mean-pooled or the `[CLS]` token; "
        "*balanced* weights the classes inversely to their counts "
        "(`class_weight`).",
    ]
    for path in paths:
        lines += ["", *_table(common.read_json(path))]
    with open(output, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"[frozen_probe] wrote {output}", flush=True)


def _table(payload):
    metric = payload["main_metric"]
    columns = sorted({(c["pooling"], c["balanced"]) for c in payload["cells"]},
                     key=lambda k: (POOLINGS.index(k[0]), k[1]))
    by_layer = {}
    for cell in payload["cells"]:
        by_layer.setdefault(cell["layer"], {})[
            (cell["pooling"], cell["balanced"])
        ] = cell["metrics"][metric]
    from beft_keras import models

    best = max(payload["cells"], key=lambda c: c["metrics"][metric])
    last = max(by_layer)
    names = [f"{p}{', balanced' if b else ''}" for p, b in columns]
    machine = payload["machine"]
    return [
        f"## {payload['task']}, {payload['backend']}",
        "",
        f"{models.model_name(payload['model'])}, "
        f"{payload['train_examples']} training examples (low regime, seed "
        f"{payload['seed']}), {payload['dev_examples']} dev examples, "
        f"dev {metric}; {payload['probe_epochs']} full-batch epochs of AdamW "
        f"at {payload['probe_learning_rate']}, L2 {payload['l2']}. "
        f"Ran {payload['started']} on {machine['cpu_model']} "
        f"({machine['usable_cpus']} CPUs): `{payload['command']}`.",
        "",
        "| layer | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
        *(
            f"| {layer} | "
            + " | ".join(f"{row[k]:.4f}" if k in row else "" for k in columns)
            + " |"
            for layer, row in sorted(by_layer.items())
        ),
        "",
        f"Best cell: {best['metrics'][metric]:.4f} ({best['pooling']}, layer "
        f"{best['layer']}{', balanced' if best['balanced'] else ''}). The "
        f"last layer's mean, what a mean-pooling head reads: "
        f"{by_layer[last][('mean', False)]:.4f}.",
    ]


if __name__ == "__main__":
    sys.exit(main())
