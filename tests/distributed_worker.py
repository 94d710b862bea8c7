"""Distributed BEFT scenarios, run in a fresh process by
`tests/test_distribution.py`.

A backend's devices can only be simulated before it starts: JAX reads
`XLA_FLAGS` when it first lists its devices, TensorFlow configures logical
devices only before it initialises. So the tests start this script with
`KERAS_BACKEND` set; it splits the CPU into 4 devices
(`beft_keras.distribution.simulate_devices`), runs every scenario of its
backend once distributed and once on one device, and writes what it
measured (differences, flags, shardings) as JSON for the tests to assert
on. A scenario that raises records its traceback instead.

    KERAS_BACKEND=jax python tests/distributed_worker.py \
        --bert-preset DIR --llama-preset DIR --output report.json
"""

import argparse
import contextlib
import json
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NUM_DEVICES = 4
# Devices each Llama kernel is split over in the model-parallel scenario;
# the other factor of NUM_DEVICES is the mesh's data-parallel axis.
MODEL_DEVICES = 2
GLOBAL_BATCH = 8
NUM_EXAMPLES = 16
LEARNING_RATE = 1e-2
# b_k gets no gradient in softmax attention, so the probe selects b_v,
# which then trains: the method's outcome, without a second recompile.
CANDIDATES = ("key", "value")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bert-preset", required=True)
    parser.add_argument("--llama-preset", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    from beft_keras import distribution

    # Before anything starts the backend.
    devices = distribution.simulate_devices(NUM_DEVICES)
    import keras

    keras.config.disable_interactive_logging()
    backend = keras.backend.backend()
    report = {"backend": backend, "devices": devices}
    scenarios = {
        "data_parallel": lambda: data_parallel_scenario(args.bert_preset),
        "added_biases": lambda: added_biases_scenario(args.llama_preset),
    }
    for name, scenario in scenarios.items():
        start = time.perf_counter()
        try:
            report[name] = scenario()
        except Exception:
            report[name] = {"error": traceback.format_exc()}
        report[name]["seconds"] = round(time.perf_counter() - start, 1)
    with open(args.output, "w") as file:
        json.dump(report, file, indent=2, default=float)


# -- Helpers -----------------------------------------------------------------


def snapshot(model):
    import keras

    return {
        v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights
    }


def scope(distribution):
    return contextlib.nullcontext() if distribution is None else (
        distribution.scope()
    )


def call(model, x):
    """The model's outputs on `x`, called eagerly in inference mode."""
    import keras

    return keras.ops.convert_to_numpy(model(x, training=False))


def max_difference(a, b, paths):
    import numpy as np

    return max(
        float(np.max(np.abs(a[p].astype("float64") - b[p]))) for p in paths
    )


def frozen_unchanged(before, after, trained):
    """Whether every weight outside `trained` is bitwise what it was."""
    import numpy as np

    return {
        path: bool(np.array_equal(before[path], after[path]))
        for path in before
        if path not in trained
    }


def replica_copies(variable):
    """Every device's copy of a replicated variable, as numpy."""
    import keras
    import numpy as np

    value = variable.value
    if keras.backend.backend() == "tensorflow":
        strategy = getattr(value, "distribute_strategy", None)
        if strategy is None:
            return [np.asarray(value)]
        return [np.asarray(v) for v in strategy.experimental_local_results(
            value
        )]
    if not getattr(value.sharding, "is_fully_replicated", True):
        return None
    return [np.asarray(shard.data) for shard in value.addressable_shards]


def placement(variable):
    """How a variable is laid out: its device count and, on JAX, how its
    first dimension is split and its partition spec."""
    import keras

    value = variable.value
    if keras.backend.backend() == "tensorflow":
        strategy = getattr(value, "distribute_strategy", None)
        return {
            "mirrored": strategy is not None,
            "devices": 1 if strategy is None else len(
                strategy.experimental_local_results(value)
            ),
        }
    sharding = value.sharding
    shard_shape = value.addressable_shards[0].data.shape
    return {
        "devices": len(sharding.device_set),
        "replicated": bool(sharding.is_fully_replicated),
        "spec": [str(axis) for axis in getattr(sharding, "spec", ())],
        "shape": list(value.shape),
        "shard_shape": list(shard_shape),
    }


def probe_all_biases(model, x, y, epochs):
    """Fit every bias of `model` while a `BeftProbe` scores them."""
    import keras

    import beft_keras

    beft_keras.BiasOnlyTrainable("all").apply(model)
    model.compile(
        optimizer=keras.optimizers.AdamW(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    probe = beft_keras.BeftProbe(
        data=(x, y), candidates=CANDIDATES, batch_size=GLOBAL_BATCH,
        max_batches=2, verbose=0,
    )
    model.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=epochs, shuffle=False,
        callbacks=[probe], verbose=0,
    )
    return probe


def compared(single, parallel, parallel_distribution):
    """What both checks compare between the one-device and the distributed
    run: scores, selection, trained and frozen weights, predictions."""
    import numpy as np

    from beft_keras import distribution

    return {
        "replicas": distribution.num_replicas(parallel_distribution),
        "batch_multiple": distribution.batch_multiple(parallel_distribution),
        "trained": sorted(parallel["trained"]),
        "score_rel_diff": score_differences(
            single["probe"].results, parallel["probe"].results
        ),
        "selected": [
            single["probe"].selected, parallel["probe"].selected
        ],
        "inert": [
            list(single["probe"].results.inert),
            list(parallel["probe"].results.inert),
        ],
        "trained_max_diff": max_difference(
            single["final"], parallel["final"], parallel["trained"]
        ),
        "trained_moved": bool(
            max_difference(
                parallel["initial"], parallel["final"], parallel["trained"]
            ) > 1e-4
        ),
        "frozen_unchanged": frozen_unchanged(
            parallel["initial"], parallel["final"], parallel["trained"]
        ),
        "frozen_unchanged_single": frozen_unchanged(
            single["initial"], single["final"], single["trained"]
        ),
        "prediction_max_diff": float(
            np.max(np.abs(single["predictions"] - parallel["predictions"]))
        ),
    }


def score_differences(reference, other):
    """Largest relative difference of the per-layer scores of two probes,
    every method, over the terms that move (inert terms move by rounding
    only, and are compared as inert)."""
    import numpy as np

    worst = {}
    for method, table in reference.layer_scores.items():
        rows = [
            i for i, term in enumerate(reference.terms)
            if term not in reference.inert
        ]
        a = np.asarray(table)[rows]
        b = np.asarray(other.layer_scores[method])[rows]
        mask = ~np.isnan(a)
        worst[method] = float(
            np.max(np.abs(a[mask] - b[mask]) / np.maximum(np.abs(a[mask]),
                                                          1e-30))
        )
    return worst


# -- Data parallel: the BEFT method on a tiny BERT classifier ------------------


def bert_classifier(preset):
    import keras_hub
    import numpy as np

    import beft_keras

    classifier = keras_hub.models.BertTextClassifier(
        backbone=keras_hub.models.BertBackbone.from_preset(preset),
        num_classes=2,
        preprocessor=None,
        dropout=0.0,
    )
    # From numpy: each placement has its own random initialisation.
    rng = np.random.default_rng(0)
    for variable in beft_keras.head_variables(classifier):
        variable.assign(rng.normal(0.0, 0.1, variable.shape))
    return classifier


def bert_data():
    from beft_keras import distribution
    from tests.conftest import bert_inputs

    x, y = bert_inputs(NUM_EXAMPLES)
    # TensorFlow's MirroredStrategy cannot build on boolean padding masks.
    return distribution.boolean_inputs_as_int(x), y


def beft_method(preset, distribution):
    """The probe (all biases, three scores), the selection, then b_v and
    the head, as the paper runs it; under `distribution` if given."""
    import keras

    x, y = bert_data()
    with scope(distribution):
        model = bert_classifier(preset)
        initial = snapshot(model)
        probe = probe_all_biases(model, x, y, epochs=2)
        probed = snapshot(model)
        probe_trained = {v.path for v in model.trainable_variables}
        # Resets the probe's weights, recompiles: b_v and the head train.
        probe.apply_selection()
        trained = {v.path for v in model.trainable_variables}
        model.fit(
            x, y, batch_size=GLOBAL_BATCH, epochs=2, shuffle=False, verbose=0
        )
        predictions = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
        called = call(model, x)
    return {
        "model": model,
        "probe": probe,
        "initial": initial,
        "probed": probed,
        "final": snapshot(model),
        "probe_trained": probe_trained,
        "trained": trained,
        "predictions": predictions,
        "called": called,
        "x": x,
    }


def data_parallel_scenario(preset):
    import numpy as np

    import beft_keras
    from beft_keras import distribution

    single = beft_method(preset, None)
    parallel_distribution = distribution.data_parallel()
    parallel = beft_method(preset, parallel_distribution)
    value_paths = sorted(
        b.path for b in beft_keras.bias_terms(parallel["model"])
        if b.term == "value"
    )
    results = {
        **compared(single, parallel, parallel_distribution),
        "same_start": all(
            np.array_equal(single["initial"][p], parallel["initial"][p])
            for p in single["initial"]
        ),
        "value_paths": value_paths,
        "probe_bias_max_diff": max_difference(
            single["probed"], parallel["probed"], parallel["probe_trained"]
        ),
        "frozen_unchanged_probe": frozen_unchanged(
            parallel["initial"], parallel["probed"], parallel["probe_trained"]
        ),
        "replicas_agree": all(
            all(np.array_equal(c, copies[0]) for c in copies)
            for copies in (
                replica_copies(v) for v in parallel["model"].weights
                if v.path in parallel["trained"]
            )
            if copies is not None
        ),
        "placement": placement(
            next(v for v in parallel["model"].weights
                 if v.path == value_paths[0])
        ),
    }
    results["delta"] = delta_round_trip(
        lambda: bert_classifier(preset),
        single,
        parallel,
        parallel_distribution,
    )
    return results


def delta_round_trip(make_model, single, parallel, parallel_distribution,
                     prepare=None):
    """A delta saved distributed loads on one device, and the reverse: the
    loaded values are bitwise the saved ones, the outputs those of the
    model that saved it, on the same inputs."""
    import tempfile

    import numpy as np

    import beft_keras

    folder = tempfile.mkdtemp()
    results = {}
    for name, source, target_distribution in [
        ("distributed_to_single", parallel, None),
        ("single_to_distributed", single, parallel_distribution),
    ]:
        path = os.path.join(folder, f"{name}.safetensors")
        beft_keras.save_delta(source["model"], path, base="tiny", task="t")
        with scope(target_distribution):
            model = make_model()
            if prepare is not None:
                prepare(model)
            info = beft_keras.load_delta(model, path, task="t")
            loaded = snapshot(model)
            # Called directly, as the source was: `predict` would trace a
            # function per model, the slowest part of this test.
            predictions = call(model, source["x"])
        results[name] = {
            "paths": list(info.paths),
            "values_bitwise": all(
                np.array_equal(loaded[p], source["final"][p])
                for p in info.paths
            ),
            "prediction_max_diff": float(
                np.max(np.abs(predictions - source["called"]))
            ),
            "predictions_bitwise": bool(
                np.array_equal(predictions, source["called"])
            ),
        }
    return results


# -- Added biases: a bias-free Llama, sharded (JAX) or mirrored (TF) ----------


def llama_data():
    import numpy as np

    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 30, (NUM_EXAMPLES, 12)).astype("int32")
    x = {
        "token_ids": token_ids,
        "padding_mask": np.ones_like(token_ids, dtype="int32"),
    }
    y = np.roll(token_ids, -1, axis=1)
    return x, y


def llama_model(preset):
    import keras_hub

    return keras_hub.models.CausalLM.from_preset(preset, preprocessor=None)


def added_biases_method(preset, distribution, add_inside_scope):
    """Zero b_q, b_k, b_v added to a bias-free Llama; the probe; then only
    b_v trains."""
    import keras

    import beft_keras

    x, y = llama_data()
    with scope(distribution):
        model = llama_model(preset)
    base = snapshot(model)
    with scope(distribution if add_inside_scope else None):
        added = beft_keras.add_biases(model, ["query", "key", "value"])
    added_zero = all(
        not keras.ops.convert_to_numpy(v).any() for v in added
    )
    initial = snapshot(model)
    with scope(distribution):
        probe = probe_all_biases(model, x, y, epochs=1)
        # Every added bias scores 1 by BEFT (zero before, not after), and
        # with rotary embeddings b_k is not inert: the paper trains b_v.
        probe.apply_selection()  # back to zero biases
        beft_keras.BiasOnlyTrainable("value").apply(model)
        trained = {v.path for v in model.trainable_variables}
        model.fit(
            x, y, batch_size=GLOBAL_BATCH, epochs=2, shuffle=False, verbose=0
        )
        # `predict` runs distributed in the data-parallel scenario.
        predictions = called = call(model, x)
    return {
        "model": model,
        "probe": probe,
        "added": added,
        "added_zero": added_zero,
        "base": base,
        "initial": initial,
        "final": snapshot(model),
        "trained": trained,
        "predictions": predictions,
        "called": called,
        "x": x,
    }


def added_biases_scenario(preset):
    import keras
    import numpy as np

    import beft_keras
    from beft_keras import distribution

    if keras.backend.backend() == "jax":
        parallel_distribution = distribution.model_parallel(
            preset, model_devices=MODEL_DEVICES
        )
    else:
        parallel_distribution = distribution.data_parallel()
    single = added_biases_method(preset, None, True)
    parallel = added_biases_method(preset, parallel_distribution, True)
    model = parallel["model"]
    weights = {v.path: v for v in model.weights}
    kernels = {
        p: placement(v) for p, v in weights.items()
        if p.endswith("kernel") or p.endswith("embeddings")
    }
    # Biases added after the model left the scope: placed as its kernels.
    with scope(parallel_distribution):
        outside = llama_model(preset)
    added_outside = beft_keras.add_biases(outside, "value")
    results = {
        **compared(single, parallel, parallel_distribution),
        "added_zero": parallel["added_zero"] and single["added_zero"],
        "added_paths": sorted(v.path for v in parallel["added"]),
        "same_base": all(
            np.array_equal(single["base"][p], parallel["base"][p])
            for p in single["base"]
        ),
        "bias_placement": {
            v.path: placement(v) for v in parallel["added"]
        },
        "kernel_placement": kernels,
        "added_outside_scope": {
            v.path: placement(v) for v in added_outside
        },
        "replicas_agree": all(
            all(np.array_equal(c, copies[0]) for c in copies)
            for copies in (replica_copies(v) for v in parallel["added"])
            if copies is not None
        ),
    }

    def prepare(target):
        beft_keras.add_biases(target, ["query", "key", "value"])

    results["delta"] = delta_round_trip(
        lambda: llama_model(preset), single, parallel, parallel_distribution,
        prepare=prepare,
    )
    return results


if __name__ == "__main__":
    main()
