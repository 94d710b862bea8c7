"""BEFT on the distribution engines Keras ships, on simulated devices.

JAX and TensorFlow fix their devices when they start, so every distributed
scenario runs in one fresh process per test session
(`tests/distributed_worker.py`, 4 CPU devices: `XLA_FLAGS` on JAX, logical
devices on TensorFlow); the tests below assert on what it measured. The
engines: `keras.distribution.DataParallel` and `ModelParallel` on JAX,
`tf.distribute.MirroredStrategy` on TensorFlow. torch has none in Keras 3:
there, and for model parallel on TensorFlow, the tests check the one-line
error instead.
"""

import json
import os
import re
import subprocess
import sys

import keras
import keras_hub
import numpy as np
import pytest

import beft_keras
from beft_keras import distribution

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_DEVICES = 4

needs_engine = pytest.mark.skipif(
    BACKEND == "torch",
    reason="Keras 3 has no distribution engine on torch (keras.distribution "
    "is JAX-only, fit runs on one device): the error is tested instead",
)
needs_jax = pytest.mark.skipif(
    BACKEND != "jax",
    reason="keras.distribution.ModelParallel is implemented for JAX only: "
    "the error is tested instead",
)

# The worker behind `report` takes over a minute and runs once in every
# pytest-xdist worker that takes one of these tests: keep them on one
# (`--dist=loadgroup`, pyproject.toml).
pytestmark = pytest.mark.xdist_group("distribution")

# Scores of terms that train agree to float32 rounding of a 4-way sum.
SCORE_RTOL = 1e-3
WEIGHT_ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny_llama_preset(tmp_path_factory):
    """A tiny bias-free Llama 3 causal LM preset (no tokenizer) whose
    vocabulary, 40, divides over the mesh: keras-hub's Llama layout shards
    the embedding's vocabulary axis (the `llama_preset` fixture's 103 does
    not divide)."""
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=40, num_layers=2, num_query_heads=2,
        num_key_value_heads=2, hidden_dim=8, intermediate_dim=16,
    )
    directory = str(tmp_path_factory.mktemp("tiny_llama_preset"))
    keras_hub.models.Llama3CausalLM(
        backbone, preprocessor=None
    ).save_to_preset(directory)
    return directory


@pytest.fixture(scope="module")
def report(bert_preset, tiny_llama_preset, tmp_path_factory):
    """Every scenario, run once in a process with 4 simulated devices."""
    if BACKEND == "torch":
        pytest.skip("Keras 3 has no distribution engine on torch")
    output = str(tmp_path_factory.mktemp("distributed") / "report.json")
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    if BACKEND == "jax":
        # Set before JAX starts; `simulate_devices` checks it took.
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
        ).strip()
    command = [
        sys.executable, os.path.join(ROOT, "tests", "distributed_worker.py"),
        "--bert-preset", bert_preset, "--llama-preset", tiny_llama_preset,
        "--output", output,
    ]
    completed = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=900,
    )
    if completed.returncode != 0:
        pytest.fail(
            f"The worker failed ({completed.returncode}):\n"
            + completed.stderr[-4000:]
        )
    with open(output) as file:
        return json.load(file)


def scenario(report, name):
    result = report[name]
    if "error" in result:
        pytest.fail(f"Scenario '{name}' raised:\n{result['error']}")
    return result


def assert_scores_match(result):
    for method, difference in result["score_rel_diff"].items():
        assert difference < SCORE_RTOL, (method, difference)
    single, parallel = result["inert"]
    assert single == parallel
    assert result["selected"][0] == result["selected"][1]


def assert_frozen(result, *keys):
    for key in keys:
        changed = [path for path, same in result[key].items() if not same]
        assert result[key] and not changed, (key, changed)


def test_module_stays_on_one_xdist_worker(request):
    """Under pytest-xdist (the README's `-n auto`), `--dist=loadgroup`
    tags this module's tests with their group, which keeps them on one
    worker: the scenarios' worker then runs once, not once per xdist
    worker (pytest 9 drops the tag; pyproject.toml pins pytest below 9)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        assert request.node.nodeid.endswith("@distribution")


# -- Distributed scenarios (JAX and TensorFlow) -------------------------------


@needs_engine
def test_worker_ran_on_simulated_devices(report):
    assert report["backend"] == BACKEND
    assert len(report["devices"]) == NUM_DEVICES


@needs_engine
def test_data_parallel_probe_scores_match_one_device(report):
    """BEFT, magnitude and Fisher (per-batch gradients) scores, every layer
    and term, under DataParallel / MirroredStrategy on a global batch of 8
    equal those of one device on the same batches."""
    result = scenario(report, "data_parallel")
    assert result["replicas"] == NUM_DEVICES
    # JAX shards every batch evenly; TensorFlow splits uneven ones itself.
    assert result["batch_multiple"] == (
        NUM_DEVICES if BACKEND == "jax" else 1
    )
    assert result["same_start"]
    assert_scores_match(result)
    assert set(result["score_rel_diff"]) == {"beft", "magnitude", "fisher"}
    assert result["selected"] == ["value", "value"]
    assert result["inert"][0] == ["key"]
    assert result["probe_bias_max_diff"] < WEIGHT_ATOL


@needs_engine
def test_data_parallel_trains_the_same_value_biases(report):
    result = scenario(report, "data_parallel")
    value_paths = result["value_paths"]
    assert set(value_paths) < set(result["trained"])
    assert set(result["trained"]) - set(value_paths) == {
        "logits/kernel", "logits/bias"
    }
    assert result["trained_moved"]
    assert result["trained_max_diff"] < WEIGHT_ATOL
    assert result["prediction_max_diff"] < WEIGHT_ATOL
    # Every device holds the same trained values.
    assert result["replicas_agree"]
    assert result["placement"]["devices"] == NUM_DEVICES


@needs_engine
def test_data_parallel_leaves_frozen_weights_bitwise_unchanged(report):
    result = scenario(report, "data_parallel")
    assert_frozen(
        result, "frozen_unchanged_probe", "frozen_unchanged",
        "frozen_unchanged_single",
    )


@needs_engine
def test_data_parallel_delta_round_trip(report):
    """A delta saved from the distributed model loads on one device, and
    the reverse, with the saved values bitwise and the same outputs."""
    delta = scenario(report, "data_parallel")["delta"]
    for direction in ("distributed_to_single", "single_to_distributed"):
        assert delta[direction]["values_bitwise"], direction
        assert delta[direction]["prediction_max_diff"] < 1e-6, direction
    if BACKEND == "tensorflow":
        assert delta["distributed_to_single"]["predictions_bitwise"]


@needs_engine
def test_added_value_biases_train_alone_distributed(report):
    """Zero b_q, b_k, b_v added to a bias-free Llama (ModelParallel on JAX,
    MirroredStrategy on TensorFlow); the probe scores them; only b_v then
    trains, as on one device."""
    result = scenario(report, "added_biases")
    assert result["added_zero"]
    assert result["same_base"]
    value_paths = [p for p in result["added_paths"] if "/value/" in p]
    assert len(value_paths) == 2
    assert result["trained"] == value_paths
    assert_scores_match(result)
    assert result["trained_moved"]
    assert result["trained_max_diff"] < WEIGHT_ATOL
    assert result["prediction_max_diff"] < WEIGHT_ATOL
    assert result["replicas_agree"]
    assert_frozen(result, "frozen_unchanged", "frozen_unchanged_single")


@needs_engine
def test_added_biases_are_placed_with_the_model(report):
    """Added biases are replicated on every device, added inside the
    distribution's scope or after the model left it."""
    result = scenario(report, "added_biases")
    placements = {
        **result["bias_placement"], **result["added_outside_scope"]
    }
    assert len(placements) == 6
    for path, placement in placements.items():
        assert placement["devices"] == NUM_DEVICES, path
        if BACKEND == "jax":
            assert placement["replicated"], path
        else:
            assert placement["mirrored"], path


@needs_jax
def test_model_parallel_shards_kernels_over_two_devices(report):
    result = scenario(report, "added_biases")
    assert result["replicas"] == NUM_DEVICES // 2  # the mesh's batch axis
    assert result["batch_multiple"] == NUM_DEVICES // 2
    kernels = result["kernel_placement"]
    for path in (
        "transformer_layer_0/self_attention/value/kernel",
        "transformer_layer_1/feedforward_output_dense/kernel",
    ):
        placement = kernels[path]
        assert not placement["replicated"], path
        assert placement["spec"][0] == distribution.MODEL_AXIS, path
        # keras-hub's Llama layout: the first axis over the 2 model
        # devices.
        assert placement["shard_shape"][0] * 2 == placement["shape"][0]
    for placement in result["bias_placement"].values():
        assert placement["spec"] == []  # the explicit `.*bias` entry


@needs_engine
def test_added_biases_delta_round_trip(report):
    delta = scenario(report, "added_biases")["delta"]
    for direction in ("distributed_to_single", "single_to_distributed"):
        assert delta[direction]["values_bitwise"], direction
        assert delta[direction]["prediction_max_diff"] < 1e-6, direction
        assert all("/value/bias" in p for p in delta[direction]["paths"])


# -- In process, every backend -------------------------------------------------


@pytest.mark.parametrize(
    "kind, backend, error",
    [
        ("data", "jax", None),
        ("model", "jax", None),
        ("data", "tensorflow", None),
        ("model", "tensorflow", "needs KERAS_BACKEND=jax"),
        ("data", "torch", "no distribution API for the torch backend"),
        ("model", "torch", "no distribution API for the torch backend"),
    ],
)
def test_check_supported_says_which_backend_to_use(kind, backend, error):
    if error is None:
        distribution.check_supported(kind, backend)
        return
    with pytest.raises(ValueError, match=error) as raised:
        distribution.check_supported(kind, backend)
    message = str(raised.value)
    assert "\n" not in message
    assert "KERAS_BACKEND=jax" in message


def test_check_supported_refuses_unknown_kind_and_backend():
    with pytest.raises(ValueError, match="`kind` must be one of"):
        distribution.check_supported("pipeline", "jax")
    with pytest.raises(ValueError, match="Received: backend='numpy'"):
        distribution.check_supported("data", "numpy")


@pytest.mark.skipif(BACKEND == "jax", reason="JAX supports both")
def test_unsupported_distribution_is_a_one_line_error(tiny_llama_preset):
    kinds = ["model"] if BACKEND == "tensorflow" else ["data", "model"]
    for kind in kinds:
        with pytest.raises(ValueError, match="KERAS_BACKEND=jax") as raised:
            distribution.get_distribution(kind, model=tiny_llama_preset)
        assert "\n" not in str(raised.value)
    if BACKEND == "torch":
        with pytest.raises(ValueError, match="torch"):
            distribution.data_parallel()
        with pytest.raises(ValueError, match="torch"):
            distribution.simulate_devices(2)
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        distribution.model_parallel(keras_hub.models.LlamaBackbone)


@needs_jax
def test_model_parallel_layout_map_replicates_biases():
    # One device here (the main process): a (1, 1) mesh.
    model_parallel = distribution.model_parallel(
        keras_hub.models.Llama3Backbone, model_devices=1
    )
    assert isinstance(model_parallel, keras.distribution.ModelParallel)
    bias = model_parallel.get_tensor_layout(
        "transformer_layer_0/self_attention/value/bias"
    )
    assert bias.axes == ()
    kernel = model_parallel.get_tensor_layout(
        "transformer_layer_0/self_attention/value/kernel"
    )
    assert kernel.axes[0] == distribution.MODEL_AXIS


@needs_jax
def test_model_parallel_refuses_a_backbone_without_layout_map(bert_preset):
    with pytest.raises(ValueError, match="ships no layout map for Bert"):
        distribution.model_parallel(bert_preset)
    with pytest.raises(ValueError, match="positive int dividing"):
        distribution.model_parallel(
            keras_hub.models.LlamaBackbone, model_devices=3
        )


def test_backbone_class_of_reads_no_weights(tiny_llama_preset, bert_preset):
    assert distribution.backbone_class_of(tiny_llama_preset) is (
        keras_hub.models.Llama3Backbone
    )
    assert distribution.backbone_class_of(bert_preset) is (
        keras_hub.models.BertBackbone
    )
    # A built-in preset name: the most derived class, nothing downloaded.
    assert distribution.backbone_class_of("llama3_8b_en") is (
        keras_hub.models.Llama3Backbone
    )
    assert distribution.backbone_class_of(
        keras_hub.models.GemmaBackbone
    ) is keras_hub.models.GemmaBackbone
    with pytest.raises(ValueError, match="neither a local preset folder"):
        distribution.backbone_class_of("no_such_preset")
    assert "LlamaBackbone" in distribution.layout_map_backbones()


def test_boolean_inputs_as_int():
    import tensorflow as tf

    x = {"token_ids": np.ones((2, 3), "int32"),
         "padding_mask": np.ones((2, 3), bool)}
    cast = distribution.boolean_inputs_as_int(x)
    dataset = distribution.boolean_inputs_as_int(
        tf.data.Dataset.from_tensor_slices((x, np.zeros(2))).batch(2)
    )
    batch_x, _ = next(iter(dataset))
    if BACKEND == "tensorflow":
        assert cast["padding_mask"].dtype == np.int32
        assert batch_x["padding_mask"].dtype == tf.int32
    else:
        assert cast["padding_mask"].dtype == bool
        assert batch_x["padding_mask"].dtype == tf.bool
    assert cast["token_ids"].dtype == np.int32


def test_num_replicas_of_no_distribution_is_one():
    assert distribution.num_replicas(None) == 1
    assert distribution.batch_multiple(None) == 1


@needs_jax
def test_batch_multiple_is_the_data_axis():
    # The main process has one device: a (1, 1) mesh, a 1-device replica.
    data_parallel = distribution.data_parallel()
    assert distribution.batch_multiple(data_parallel) == len(
        keras.distribution.list_devices()
    )
    model_parallel = distribution.model_parallel(
        keras_hub.models.LlamaBackbone, model_devices=1
    )
    assert distribution.batch_multiple(model_parallel) == 1


def test_single_device_paths_are_unchanged(bert_preset):
    """Without a distribution, `placement_scope` and `model_scope` do
    nothing, and the probe's gradients are those of the loss."""
    from tests.conftest import bert_inputs
    from tests.conftest import tiny_classifier

    classifier = tiny_classifier(bert_preset)
    bias = beft_keras.bias_terms(classifier)[0].variable
    with distribution.placement_scope(bias), distribution.model_scope(
        classifier
    ):
        pass
    beft_keras.BiasOnlyTrainable("value").apply(classifier)
    classifier.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    from beft_keras import gradients

    x, y = bert_inputs(4)
    grads = gradients.loss_gradient_function(classifier)(x, y)
    assert len(grads) == len(classifier.trainable_variables)
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert any(np.any(g != 0) for g in grads)


@needs_engine
@pytest.mark.parametrize("devices", ["cpu:0", [], (), 3])
def test_data_parallel_refuses_devices_that_are_not_a_list(devices):
    # A str would be read as one device per character.
    with pytest.raises(ValueError, match=(
        r"^`devices` must be None \(every device\) or a non-empty list of "
        rf"devices\. Received: devices={re.escape(repr(devices))}$"
    )):
        distribution.data_parallel(devices=devices)


@needs_engine
@pytest.mark.parametrize("bad", ["duplicate", "unknown"])
def test_data_parallel_refuses_duplicate_and_unknown_devices(bad):
    # The engines would fail only later: JAX at the first variable, with a
    # bare `AssertionError`; TensorFlow keeps an unknown GPU.
    device = keras.distribution.list_devices()[0] if BACKEND == "jax" else (
        "/cpu:0"
    )
    if bad == "duplicate":
        devices = [device, device]
        error = r"`devices` names a device more than once\. "
    else:
        devices = [device, "gpu:99"]
        error = r"Unknown device 'gpu:99'; this process has \[.*\]\. "
    error += rf"Received: devices={re.escape(repr(devices))}$"
    with pytest.raises(ValueError, match="^" + error):
        distribution.data_parallel(devices=devices)


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="MirroredStrategy: TensorFlow only"
)
def test_data_parallel_is_one_strategy_whatever_the_device_spelling():
    # Two strategies on the same devices break each other's all-reduces.
    strategy = distribution.data_parallel()
    assert distribution.data_parallel(["/cpu:0"]) is strategy
    assert distribution.data_parallel(["CPU:0"]) is strategy


@needs_jax
def test_model_parallel_names_a_bad_model_devices_as_given():
    with pytest.raises(ValueError, match=(
        r"positive int dividing the number of devices, 1\. "
        r"Received: model_devices='1'$"
    )):
        distribution.model_parallel(
            keras_hub.models.LlamaBackbone, model_devices="1"
        )
    with pytest.raises(ValueError, match="names a device more than once"):
        distribution.model_parallel(
            keras_hub.models.LlamaBackbone, devices=["cpu:0", "cpu:0"]
        )


def test_check_supported_refuses_an_empty_backend():
    # Not the default: only None is.
    with pytest.raises(ValueError, match="Received: backend=''$"):
        distribution.check_supported("data", "")


@pytest.mark.parametrize("function", ["num_replicas", "batch_multiple"])
def test_replica_counts_refuse_what_is_not_a_distribution(function):
    with pytest.raises(TypeError, match=(
        r"^Expected a distribution from `data_parallel` or `model_parallel` "
        r".*, or None\. Received: 'data'$"
    )):
        getattr(distribution, function)("data")
