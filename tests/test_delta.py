import hashlib
import json
import os
import re
import subprocess
import sys
import types

import keras
import keras_hub
import numpy as np
import pytest
import safetensors
import safetensors.numpy

import beft_keras
from beft_keras import heads
from beft_keras.delta import DeltaError
from beft_keras.delta import DeltaSwitcher
from beft_keras.delta import load_delta
from beft_keras.delta import save_delta
from tests.conftest import HIDDEN_DIM
from tests.conftest import NUM_LAYERS
from tests.conftest import bert_inputs
from tests.conftest import minilm_preset_dir
from tests.conftest import next_backend
from tests.conftest import make_preset
from tests.conftest import snapshot
from tests.conftest import tiny_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 2
HEAD_PATHS = {"logits/kernel", "logits/bias"}

# Run under another backend: build the model from the preset, load the
# delta, and save the loaded variables and the predictions.
LOAD_SCRIPT = """
import sys

import keras
import safetensors.numpy

from beft_keras.delta import load_delta
from tests.conftest import tiny_classifier
from tests.test_delta import _predict

preset, delta, out = sys.argv[1:]
model = tiny_classifier(preset)
info = load_delta(model, delta)
weights = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
results = {path: weights[path] for path in info.paths}
results["predictions"] = _predict(model)
safetensors.numpy.save_file(results, out)
"""


def _predict(model):
    features, _ = bert_inputs()
    return keras.ops.convert_to_numpy(model(features, training=False))


def _max_diff(a, b):
    return float(np.max(np.abs(a - b)))


def _assert_bitwise_equal(weights, expected, paths=None):
    if paths is None:
        assert weights.keys() == expected.keys()
    for path in expected if paths is None else paths:
        assert weights[path].dtype == expected[path].dtype, path
        assert weights[path].shape == expected[path].shape, path
        assert weights[path].tobytes() == expected[path].tobytes(), path


def _perturb_trainable(model, seed):
    """Stand-in for fine-tuning: shift every trainable variable."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_weights:
        value = keras.ops.convert_to_numpy(variable)
        variable.assign(value + rng.normal(0.0, 0.5, value.shape))


def _description(path):
    """The JSON description in a delta file's metadata."""
    with safetensors.safe_open(path, framework="numpy") as file:
        return json.loads(file.metadata()["beft_keras"])


# The paths of the trained delta's variables by their version 3 tensor
# names, as versions 1 and 2 named the tensors.
V2_PATHS = {
    **{
        f"value/{i}": f"transformer_layer_{i}/self_attention_layer/value/bias"
        for i in range(NUM_LAYERS)
    },
    "head/0": "logits/kernel",
    "head/1": "logits/bias",
}


def _rewrite(source, target, edit=None, values=None):
    """Copy the delta `source` to `target` as a hand edit would: `edit`
    maps its description to a new one (a str is written as is), `values`
    replace its arrays. A description of version 1 or 2 gets its tensors
    named by their variables' paths, as those versions named them."""
    description = _description(source)
    if edit is not None:
        description = edit(description)
    values = values or safetensors.numpy.load_file(source)
    if isinstance(description, dict) and description.get(
        "format_version"
    ) in (1, 2):
        values = {V2_PATHS.get(name, name): v for name, v in values.items()}
    if not isinstance(description, str):
        description = json.dumps(description)
    safetensors.numpy.save_file(
        values, target, metadata={"beft_keras": description}
    )
    return target


def _set(key, value):
    return lambda description: {**description, key: value}


def _without(key):
    return lambda description: {
        k: v for k, v in description.items() if k != key
    }


# The trained delta's base fingerprint as format versions 1-3 computed it
# (`_path_fingerprint`), filled in by the `trained` fixture.
PATH_FINGERPRINT = {}


def _path_fingerprint(model, exclude):
    """The base fingerprint of format versions 1-3, by hand: SHA-256 over
    each weight outside `exclude` in path order, as the length-prefixed
    JSON `[path, shape, dtype]` and its little-endian bytes."""
    digest = hashlib.sha256()
    for variable in sorted(model.weights, key=lambda v: v.path):
        if variable.path in exclude:
            continue
        value = np.asarray(keras.ops.convert_to_numpy(variable), "<f4")
        header = json.dumps(
            [variable.path, list(value.shape), variable.dtype]
        ).encode()
        digest.update(len(header).to_bytes(8, "little") + header)
        digest.update(value.tobytes())
    return digest.hexdigest()


def _as_version_3(description):
    """A description as `FORMAT_VERSION = 3` wrote it: no model class, and
    the base fingerprinted with its weights' paths, in 256 bits."""
    description = _without("model_class")(description)
    fingerprint = PATH_FINGERPRINT["trained"]
    return {**description, "format_version": 3, "base_fingerprint": fingerprint}


def _as_version_2(description):
    """A description as `FORMAT_VERSION = 2` wrote it: with `variables`,
    each variable's path and role."""
    variables = {path: name.split("/")[0] for name, path in V2_PATHS.items()}
    return {
        **_as_version_3(description), "format_version": 2,
        "variables": variables,
    }


def _v2(edit):
    """`edit` applied to the description of a version 2 delta."""
    return lambda description: edit(_as_version_2(description))


def _as_version_1(description):
    """A description as `FORMAT_VERSION = 1` wrote it."""
    description = _as_version_2(description)
    description = _without("task")(_without("head_shape")(description))
    return {**description, "format_version": 1}


@pytest.fixture(scope="module")
def trained(bert_preset, tmp_path_factory):
    """A value-bias delta saved after a short fit, with the trained model's
    weights and predictions."""
    model = tiny_classifier(bert_preset)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    features, labels = bert_inputs()
    model.fit(features, labels, batch_size=8, epochs=2, verbose=0)
    path = tmp_path_factory.mktemp("delta") / "task.safetensors"
    info = save_delta(model, path, base=bert_preset, task="sst2")
    PATH_FINGERPRINT["trained"] = _path_fingerprint(model, set(info.paths))
    return types.SimpleNamespace(
        path=str(path),
        info=info,
        weights=snapshot(model),
        predictions=_predict(model),
    )


@pytest.fixture(scope="module")
def other_bert_preset(tmp_path_factory):
    """The tiny BERT architecture with other weights."""
    return make_preset(tmp_path_factory, keras_hub.models.BertBackbone, 3)


def test_round_trip_after_fit(bert_preset, trained):
    info = trained.info
    value_paths = {
        f"transformer_layer_{i}/self_attention_layer/value/bias"
        for i in range(NUM_LAYERS)
    }
    assert set(info.paths) == value_paths | HEAD_PATHS
    assert info.terms == ("value",)
    assert info.num_params == (
        NUM_LAYERS * HIDDEN_DIM + HIDDEN_DIM * NUM_CLASSES + NUM_CLASSES
    )
    assert info.num_bytes == os.path.getsize(trained.path)
    assert info.task == "sst2"
    assert info.head_shape == (None, NUM_CLASSES)
    description = _description(trained.path)
    assert description["format_version"] == 5
    assert description["model_class"] == "keras_hub>BertTextClassifier"
    assert info.model_class == "keras_hub>BertTextClassifier"
    assert description["base"] == bert_preset
    assert description["task"] == "sst2"
    assert description["head_shape"] == [None, NUM_CLASSES]
    assert description["keras_version"] == keras.__version__
    assert description["beft_keras_version"] == beft_keras.__version__
    assert description["backend"] == keras.backend.backend()
    # Tensors are named by role and index, and no variable path is saved.
    values = safetensors.numpy.load_file(trained.path)
    assert sorted(values) == sorted(V2_PATHS)
    for name, variable_path in V2_PATHS.items():
        assert values[name].tobytes() == trained.weights[variable_path].tobytes()
    with open(trained.path, "rb") as file:
        header = file.read(8 + int.from_bytes(file.read(8), "little"))
    assert not any(p.encode() in header for p in info.paths)

    model = tiny_classifier(bert_preset)
    assert load_delta(model, trained.path) == info
    # The base is frozen, so every weight, not only the delta's, matches.
    _assert_bitwise_equal(snapshot(model), trained.weights)
    assert _max_diff(_predict(model), trained.predictions) == 0.0


def test_loads_under_another_backend(bert_preset, trained, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    backend = next_backend()
    out = tmp_path / f"{backend}.safetensors"
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, bert_preset, trained.path, out],
        env=dict(env, KERAS_BACKEND=backend),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = safetensors.numpy.load_file(out)
    _assert_bitwise_equal(loaded, trained.weights, trained.info.paths)
    # The variables are bitwise equal; the backends' kernels round the
    # forward pass differently, by a few float32 ulps.
    assert _max_diff(loaded["predictions"], trained.predictions) < 1e-5


@pytest.mark.parametrize(
    "damage, message",
    [
        ("random_bytes", "not a valid beft-keras delta file: Error while"),
        ("truncated", "not a valid beft-keras delta file: Error while"),
        ("no_metadata", "not a valid beft-keras delta file: it has no"),
    ],
)
def test_invalid_file_changes_nothing(
    bert_preset, trained, tmp_path, damage, message
):
    path = tmp_path / "damaged.safetensors"
    data = open(trained.path, "rb").read()
    if damage == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        safetensors.numpy.save_file(safetensors.numpy.load(data), path)
    model = tiny_classifier(bert_preset)
    before = snapshot(model)
    with pytest.raises(DeltaError, match=message):
        load_delta(model, path)
    _assert_bitwise_equal(snapshot(model), before)


def test_missing_file(bert_preset, tmp_path):
    model = tiny_classifier(bert_preset)
    with pytest.raises(FileNotFoundError, match="No delta file"):
        load_delta(model, tmp_path / "missing.safetensors")


def test_wrong_base_changes_nothing(bert_preset, other_bert_preset, trained):
    model = tiny_classifier(other_bert_preset)
    before = snapshot(model)
    expected = trained.info.base_fingerprint[:12]
    with pytest.raises(
        DeltaError,
        match=f"another base: base '{bert_preset}' with weights fingerprint "
        f"{expected}, but model '.*' has fingerprint [0-9a-f]{{12}}",
    ):
        load_delta(model, trained.path)
    _assert_bitwise_equal(snapshot(model), before)

    load_delta(model, trained.path, allow_base_mismatch=True)
    _assert_bitwise_equal(snapshot(model), trained.weights, trained.info.paths)


def test_version_3_delta_loads_as_saved(bert_preset, trained, tmp_path):
    """Version 3 fingerprinted the base with its weights' paths: such a
    delta still loads, and a wrong base is still refused."""
    path = _rewrite(trained.path, tmp_path / "v3.safetensors", _as_version_3)
    model = tiny_classifier(bert_preset)
    info = load_delta(model, path, task="sst2")
    assert info.base_fingerprint == PATH_FINGERPRINT["trained"]
    assert info.model_class is None
    _assert_bitwise_equal(snapshot(model), trained.weights)

    edited = _rewrite(
        trained.path, tmp_path / "v3-other.safetensors",
        lambda d: {**_as_version_3(d), "base_fingerprint": "0" * 64},
    )
    with pytest.raises(DeltaError, match="was made for another base"):
        load_delta(tiny_classifier(bert_preset), edited)


def test_fingerprint_by_hand(bert_preset, trained):
    """The first 128 bits of SHA-256 over each base weight in the model's
    order, as the length-prefixed JSON `[shape, dtype]` and its
    little-endian bytes: no path."""
    model = tiny_classifier(bert_preset)
    digest = hashlib.sha256()
    for variable in model.weights:
        if variable.path in trained.info.paths:
            continue
        value = np.asarray(keras.ops.convert_to_numpy(variable), "<f4")
        header = json.dumps([list(value.shape), variable.dtype]).encode()
        digest.update(len(header).to_bytes(8, "little") + header)
        digest.update(value.tobytes())
    assert trained.info.base_fingerprint == digest.hexdigest()[:32]


def _attention_model():
    """A functional model whose layers Keras names: `dense`, then
    `dense_1` when built again in the same session."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, HIDDEN_DIM))
    hidden = keras.layers.MultiHeadAttention(2, 4)(inputs, inputs)
    hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(hidden))


def test_a_base_built_again_loads_its_delta(tmp_path):
    """The same model built twice in one session: Keras numbers its layers
    anew, its weights are the same, and so is its base."""
    first, second = _attention_model(), _attention_model()
    assert {v.path for v in first.weights}.isdisjoint(
        v.path for v in second.weights
    )
    beft_keras.BiasOnlyTrainable("value", verbose=False).apply(first)
    _perturb_trainable(first, seed=1)
    path = tmp_path / "functional.safetensors"
    saved = save_delta(first, path)
    assert saved.model_class == "Functional"
    info = load_delta(second, path)
    trained = [keras.ops.convert_to_numpy(v) for v in first.weights]
    loaded = [keras.ops.convert_to_numpy(v) for v in second.weights]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(trained, loaded))
    assert info.base_fingerprint == saved.base_fingerprint


def test_delta_of_another_head_changes_nothing(bert_preset, trained):
    """A mean-pooling head on the same backbone has variables of the same
    roles and shapes as the `[CLS]` classifier's, and reads them
    differently: refused by the model's class."""
    model = heads.load_encoder_classifier(
        bert_preset, NUM_CLASSES, "mean"
    )
    before = snapshot(model)
    with pytest.raises(
        DeltaError,
        match="saved from a model of class 'keras_hub>BertTextClassifier', "
        "not 'beft_keras>PooledClassifier'",
    ):
        load_delta(model, trained.path, allow_base_mismatch=True)
    _assert_bitwise_equal(snapshot(model), before)


def test_model_without_a_variable_changes_nothing(bert_preset, trained):
    # A bare backbone has no head for the classifier's.
    backbone = keras_hub.models.BertBackbone.from_preset(bert_preset)
    before = snapshot(backbone)
    with pytest.raises(
        DeltaError,
        match=r"has no variable for its tensor\(s\) \['head/0', 'head/1'\]"
        r".*it has 0 head\)",
    ):
        load_delta(backbone, trained.path)
    _assert_bitwise_equal(snapshot(backbone), before)

    # A model with fewer variables of a role than the delta holds.
    head = keras.Sequential([keras.Input((HIDDEN_DIM,)), keras.layers.Dense(2)])
    before = snapshot(head)
    with pytest.raises(
        DeltaError,
        match=r"has no variable for its tensor\(s\) \['value/0', 'value/1'"
        r".*it has 0 value\)",
    ):
        load_delta(head, trained.path, allow_base_mismatch=True)
    _assert_bitwise_equal(snapshot(head), before)


def test_head_shape_mismatch_changes_nothing(bert_preset, trained):
    model = tiny_classifier(bert_preset, num_classes=3)
    before = snapshot(model)
    with pytest.raises(
        DeltaError,
        match=r"its task head has output shape \(None, 2\), the model's "
        r"\(None, 3\)\. .*`num_classes=2`",
    ):
        load_delta(model, trained.path)
    _assert_bitwise_equal(snapshot(model), before)


def _bytes(model):
    """Every weight's bytes, in the model's order (paths may repeat)."""
    return [keras.ops.convert_to_numpy(v).tobytes() for v in model.weights]


def _sequential(batch_size):
    """Dense layers built by a call on a batch of `batch_size`, which Keras
    keeps as the batch size of the model's output shape."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.layers.Dense(HIDDEN_DIM), keras.layers.Dense(NUM_CLASSES)]
    )
    model(np.ones((batch_size, HIDDEN_DIM)))
    return model


def test_head_shape_leaves_out_the_batch_size(tmp_path):
    model = _sequential(batch_size=1)
    assert tuple(model.outputs[0].shape) == (1, NUM_CLASSES)
    beft_keras.BiasOnlyTrainable("other", verbose=False).apply(model)
    _perturb_trainable(model, seed=1)
    info = save_delta(model, tmp_path / "sequential.safetensors")
    assert info.head_shape == (None, NUM_CLASSES)
    assert _description(info.path)["head_shape"] == [None, NUM_CLASSES]
    other = _sequential(batch_size=4)
    load_delta(other, info.path)
    assert _bytes(other) == _bytes(model)
    # A delta that recorded a batch size loads too.
    path = _rewrite(
        info.path, tmp_path / "batch.safetensors",
        _set("head_shape", [1, NUM_CLASSES]),
    )
    load_delta(_sequential(batch_size=4), path)
    path = _rewrite(
        info.path, tmp_path / "three.safetensors", _set("head_shape", [1, 3])
    )
    with pytest.raises(
        DeltaError, match=r"output shape \(1, 3\), the model's \(None, 2\)"
    ):
        load_delta(_sequential(batch_size=4), path)


class _TwoLayersOneName(keras.Model):
    """Two dense layers named alike: their variables share paths."""

    def __init__(self):
        super().__init__(name="twins")
        self.first = keras.layers.Dense(HIDDEN_DIM, name="dense")
        self.second = keras.layers.Dense(HIDDEN_DIM, name="dense")
        self.head = keras.layers.Dense(NUM_CLASSES, name="head")

    def call(self, inputs):
        return self.head(self.second(self.first(inputs)))


def test_a_model_with_two_variables_at_one_path_is_named(trained):
    model = _TwoLayersOneName()
    model(np.ones((1, HIDDEN_DIM)))
    before = _bytes(model)
    message = "has two variables at path 'twins/dense/kernel'"
    with pytest.raises(ValueError, match=message) as error:
        load_delta(model, trained.path, allow_base_mismatch=True)
    assert not isinstance(error.value, DeltaError)
    with pytest.raises(ValueError, match=message):
        DeltaSwitcher(model).apply(trained.path, allow_base_mismatch=True)
    assert _bytes(model) == before


def test_a_safetensors_file_not_a_delta_is_refused_unread(
    bert_preset, tmp_path
):
    """A model's safetensors file, here of FP8 weights, which numpy cannot
    hold: refused by its metadata, before any tensor is read."""
    header = json.dumps(
        {"w": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    model = tiny_classifier(bert_preset)
    before = snapshot(model)
    with pytest.raises(
        DeltaError,
        match=re.escape(
            f"'{path}' is not a valid beft-keras delta file: it has no "
            "beft-keras metadata."
        ),
    ):
        load_delta(model, path)
    _assert_bitwise_equal(snapshot(model), before)


def test_save_to_a_directory_names_it(bert_preset, tmp_path, monkeypatch):
    model = tiny_classifier(bert_preset)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for path in (folder, f"{tmp_path / 'new'}{os.sep}", ""):
        with pytest.raises(
            IsADirectoryError,
            match=re.escape(f"Cannot write '{path}': it names a directory"),
        ):
            save_delta(model, path)
    assert os.listdir(tmp_path) == ["runs"]
    assert os.listdir(folder) == []


def test_text_is_written_as_utf8_in_any_locale(tmp_path):
    """`beft predict` writes its input's rows back with `atomic_write`: in
    an ASCII locale too, as the UTF-8 they were read as."""
    path = tmp_path / "predictions.tsv"
    script = (
        "import locale, sys\n"
        "from beft_keras.files import atomic_write\n"
        "print(locale.getpreferredencoding(False))\n"
        "text = 'sentence\\tprediction\\ncaf\\u00e9 \\u2615\\t1\\n'\n"
        "atomic_write(sys.argv[1], text)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        env=dict(
            os.environ, PYTHONPATH=REPO, LC_ALL="C", PYTHONUTF8="0",
            PYTHONCOERCECLOCALE="0",
        ),
        capture_output=True,
        text=True,
    )
    if "utf" in result.stdout.lower().replace("-", ""):
        pytest.skip("The C locale encodes UTF-8 here.")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = "sentence\tprediction\ncafé ☕\t1\n".encode("utf-8")
    assert path.read_bytes() == expected


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_leaves_no_file(
    bert_preset, tmp_path, monkeypatch, failing
):
    model = tiny_classifier(bert_preset)
    beft_keras.BiasOnlyTrainable("value").apply(model)

    def fail(*args):
        raise OSError("disk full")

    # Fails with the temporary file written but not synced, or after it.
    monkeypatch.setattr(os, failing, fail)
    target = tmp_path / "task.safetensors"
    with pytest.raises(OSError, match="disk full"):
        save_delta(model, target)
    assert os.listdir(tmp_path) == []

    target.write_bytes(b"an older delta")
    with pytest.raises(OSError, match="disk full"):
        save_delta(model, target)
    assert os.listdir(tmp_path) == ["task.safetensors"]
    assert target.read_bytes() == b"an older delta"


def test_nothing_to_save(bert_preset, tmp_path):
    model = tiny_classifier(bert_preset)
    model.trainable = False
    with pytest.raises(ValueError, match="no trainable bias or head"):
        save_delta(model, tmp_path / "task.safetensors")
    unbuilt = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")
    with pytest.raises(ValueError, match=(
        r"^Model 'unbuilt' has no weights yet: it is not built\."
    )):
        save_delta(unbuilt, tmp_path / "task.safetensors")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("flag", ["allow_task_mismatch", "allow_base_mismatch"])
def test_mismatch_flags_must_be_bools(bert_preset, trained, flag):
    # "no" is truthy: it would have skipped the check.
    model = tiny_classifier(bert_preset)
    before = snapshot(model)
    with pytest.raises(TypeError, match=(
        rf"^`{flag}` must be a bool\. Received: {flag}='no'$"
    )):
        load_delta(model, trained.path, task="cola", **{flag: "no"})
    with pytest.raises(TypeError, match=f"`{flag}` must be a bool"):
        DeltaSwitcher(model).apply(trained.path, **{flag: 1})
    _assert_bitwise_equal(snapshot(model), before)


def test_biases_alone_load_onto_any_head_of_their_backbone(
    bert_preset, tmp_path
):
    # Trained b_v without the head: the base is the backbone alone.
    model = tiny_classifier(bert_preset)
    beft_keras.BiasOnlyTrainable("value", head=False).apply(model)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    features, labels = bert_inputs()
    model.fit(features, labels, batch_size=8, epochs=1, verbose=0)
    info = save_delta(model, tmp_path / "value.safetensors")
    assert info.head_shape is None and info.model_class is None
    tuned = {p: v for p, v in snapshot(model.backbone).items()}
    for other in (
        tiny_classifier(bert_preset, num_classes=3),  # another head
        keras_hub.models.BertBackbone.from_preset(bert_preset),  # none
    ):
        load_delta(other, info.path)
        backbone = getattr(other, "backbone", other)
        _assert_bitwise_equal(snapshot(backbone), tuned)
    # Format 4 fingerprinted the head too: such a delta loads onto the
    # model it was saved from, not under another head.
    weights = {v.path: v for v in model.weights}
    fingerprint = beft_keras.delta._fingerprint(
        weights, exclude=set(info.paths), version=4
    )
    version_4 = _rewrite(info.path, tmp_path / "v4.safetensors", _set(
        "format_version", 4
    ))
    version_4 = _rewrite(version_4, version_4, _set(
        "base_fingerprint", fingerprint
    ))
    load_delta(model, version_4)
    with pytest.raises(DeltaError, match="was made for another base"):
        load_delta(tiny_classifier(bert_preset, num_classes=3), version_4)
    # Another backbone is still refused.
    changed = keras_hub.models.BertBackbone.from_preset(bert_preset)
    changed.get_layer("embeddings_layer_norm").gamma.assign(
        np.full((HIDDEN_DIM,), 2.0)
    )
    with pytest.raises(DeltaError, match="was made for another base"):
        load_delta(changed, info.path)


def test_trained_weights_beyond_biases_are_not_dropped(bert_preset, tmp_path):
    # A full fine-tune's kernels have no place in a delta: refused, not lost.
    model = tiny_classifier(bert_preset)
    target = tmp_path / "task.safetensors"
    with pytest.raises(
        ValueError,
        match=r"trains \d+ variable\(s\) that are neither biases nor its "
        r"head, e\.g\. '.*'.*model\.save_weights",
    ):
        save_delta(model, target)
    assert not target.exists()
    beft_keras.BiasOnlyTrainable("value").apply(model)
    assert save_delta(model, target).path == str(target)


def test_switch_tasks_without_reloading(bert_preset, tmp_path):
    # Task B trains the query biases too, which task A's base includes.
    tasks = {}
    for name, terms, seed in (("a", "value", 1), ("b", ["query", "value"], 2)):
        model = tiny_classifier(bert_preset)
        beft_keras.BiasOnlyTrainable(terms).apply(model)
        _perturb_trainable(model, seed)
        path = tmp_path / f"{name}.safetensors"
        save_delta(model, path, base=bert_preset)
        tasks[name] = (path, _predict(model))
    (a, a_predictions), (b, b_predictions) = tasks["a"], tasks["b"]

    model = tiny_classifier(bert_preset)
    base_weights, base_predictions = snapshot(model), _predict(model)
    # `load_delta` onto a model carrying a delta: the base check passes
    # when the new delta covers the old one's variables, not otherwise.
    load_delta(model, a)
    load_delta(model, b)
    assert _max_diff(_predict(model), b_predictions) == 0.0
    with pytest.raises(DeltaError, match="another base"):
        load_delta(model, a)

    model = tiny_classifier(bert_preset)
    switcher = DeltaSwitcher(model)
    switcher.apply(a)
    assert _max_diff(_predict(model), a_predictions) == 0.0
    switcher.apply(b)
    assert switcher.active == str(b)
    assert _max_diff(_predict(model), b_predictions) == 0.0
    switcher.apply(a)
    assert _max_diff(_predict(model), a_predictions) == 0.0
    switcher.restore()
    assert switcher.active is None
    assert _max_diff(_predict(model), base_predictions) == 0.0
    _assert_bitwise_equal(snapshot(model), base_weights)


@pytest.mark.parametrize(
    "variable, value",
    [
        ("transformer_layer_1/self_attention_layer/value/bias", np.nan),
        ("logits/kernel", np.inf),
        ("logits/bias", -np.inf),
    ],
)
def test_save_refuses_non_finite_values(
    bert_preset, tmp_path, variable, value
):
    model = tiny_classifier(bert_preset)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    weights = {v.path: v for v in model.weights}
    array = keras.ops.convert_to_numpy(weights[variable]).copy()
    array.flat[1] = value
    weights[variable].assign(array)
    target = tmp_path / "task.safetensors"
    with pytest.raises(
        DeltaError,
        match=rf"variable\(s\) \['{variable}'\] hold NaN or infinite values.*"
        rf"Nothing was written to '{re.escape(str(target))}'",
    ):
        save_delta(model, target, task="sst2")
    assert os.listdir(tmp_path) == []

    target.write_bytes(b"an older delta")
    with pytest.raises(DeltaError, match="NaN or infinite"):
        save_delta(model, target)
    assert os.listdir(tmp_path) == ["task.safetensors"]
    assert target.read_bytes() == b"an older delta"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_load_refuses_non_finite_values(bert_preset, trained, tmp_path, value):
    values = safetensors.numpy.load_file(trained.path)
    values["head/1"][0] = value
    path = _rewrite(trained.path, tmp_path / "nan.safetensors", values=values)
    model = tiny_classifier(bert_preset)
    before = snapshot(model)
    message = (
        r"holds NaN or infinite values in tensor\(s\) \['head/1'\].*"
        "Nothing was loaded"
    )
    with pytest.raises(DeltaError, match=message):
        load_delta(model, path)
    with pytest.raises(DeltaError, match=message):
        DeltaSwitcher(model).apply(path)
    _assert_bitwise_equal(snapshot(model), before)


def test_task_mismatch_changes_nothing(bert_preset, trained):
    model = tiny_classifier(bert_preset)
    before = snapshot(model)
    message = (
        r"was made for task 'sst2', not 'cola'\. Load it for task 'sst2', "
        r"or pass `allow_task_mismatch=True`"
    )
    with pytest.raises(DeltaError, match=message):
        load_delta(model, trained.path, task="cola")
    _assert_bitwise_equal(snapshot(model), before)

    assert load_delta(model, trained.path, task="sst2").task == "sst2"
    _assert_bitwise_equal(snapshot(model), trained.weights)
    # Task names ignore case, as `beft_keras.data.get_task` does.
    model = tiny_classifier(bert_preset)
    assert load_delta(model, trained.path, task="SST2").task == "sst2"
    _assert_bitwise_equal(snapshot(model), trained.weights)
    model = tiny_classifier(bert_preset)
    load_delta(model, trained.path, task="cola", allow_task_mismatch=True)
    _assert_bitwise_equal(snapshot(model), trained.weights)


def test_switcher_checks_the_task(bert_preset, trained, tmp_path):
    model = tiny_classifier(bert_preset)
    beft_keras.BiasOnlyTrainable("query").apply(model)
    _perturb_trainable(model, seed=4)
    cola = tmp_path / "cola.safetensors"
    save_delta(model, cola, base=bert_preset, task="cola")

    model = tiny_classifier(bert_preset)
    switcher = DeltaSwitcher(model)
    switcher.apply(trained.path, task="sst2")
    before = snapshot(model)
    with pytest.raises(DeltaError, match="made for task 'cola', not 'sst2'"):
        switcher.apply(cola, task="sst2")
    # The refused delta leaves the active one in place.
    assert switcher.active == trained.path
    _assert_bitwise_equal(snapshot(model), before)
    info = switcher.apply(cola, task="sst2", allow_task_mismatch=True)
    assert info.task == "cola"
    assert switcher.active == str(cola)


def test_delta_without_task_loads_for_any_task(bert_preset, tmp_path):
    model = tiny_classifier(bert_preset)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    _perturb_trainable(model, seed=5)
    info = save_delta(model, tmp_path / "task.safetensors")
    assert info.task is None
    assert _description(info.path)["task"] is None
    loaded = load_delta(tiny_classifier(bert_preset), info.path, task="cola")
    assert loaded == info


@pytest.mark.parametrize("task", [3, "", ["sst2"]])
def test_task_argument_must_be_a_name(bert_preset, trained, tmp_path, task):
    model = tiny_classifier(bert_preset)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    message = r"`task` must be a non-empty str or None\. Received: task="
    with pytest.raises(ValueError, match=message):
        save_delta(model, tmp_path / "task.safetensors", task=task)
    assert os.listdir(tmp_path) == []
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        load_delta(model, trained.path, task=task)
    _assert_bitwise_equal(snapshot(model), before)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: json.dumps(d)[:-1], "its beft-keras metadata is not JSON"),
        (lambda d: [d], "its metadata does not describe a beft-keras-delta"),
        (_set("format", "other"), "does not describe a beft-keras-delta"),
        (_without("format"), "does not describe a beft-keras-delta"),
        (_without("format_version"), "format version None is not one"),
        (
            _set("format_version", "2"),
            r"format version '2' is not one this beft-keras reads "
            r"\(1, 2, 3, 4, 5\)\.",
        ),
        (_set("format_version", True), "format version True is not one"),
        (_set("format_version", 0), "format version 0 is not one"),
        (_set("format_version", 6), "version 6 .*; upgrade beft-keras"),
        (_without("task"), "its metadata lacks the field 'task'"),
        (_without("head_shape"), "lacks the field 'head_shape'"),
        (_without("base_fingerprint"), "lacks the field 'base_fingerprint'"),
        (_without("backend"), "lacks the field 'backend'"),
        (
            _set("base", 5),
            "field 'base' must be a non-empty string or null; found 5",
        ),
        (_set("base_fingerprint", "abc"), "'base_fingerprint' must be a SHA"),
        (_set("base_fingerprint", None), "'base_fingerprint' must be a SHA"),
        (_set("terms", "value"), "'terms' must be a list of bias terms"),
        (_set("terms", ["value", "bias"]), "'terms' must be a list of bias"),
        (
            _set("terms", ["query"]),
            r"'terms', \['query'\], does not list the bias terms of its "
            r"variables, \['value'\]",
        ),
        (_set("task", 7), "'task' must be a non-empty string or null; found 7"),
        (_set("task", ""), "'task' must be a non-empty string or null"),
        (_set("head_shape", [None, -2]), "'head_shape' must be null or a list"),
        (_set("head_shape", [None, 0]), "'head_shape' must be null or a list"),
        (_set("head_shape", [None, 2.0]), "'head_shape' must be null or a"),
        (_set("head_shape", [None, True]), "'head_shape' must be null or a"),
        (_set("head_shape", "2"), "'head_shape' must be null or a list"),
        (_set("head_shape", []), "'head_shape' must be null or a list"),
        (_set("model_class", ""), "'model_class' must be a non-empty string"),
        (_without("model_class"), "lacks the field 'model_class'"),
        (_set("keras_version", None), "'keras_version' must be a non-empty"),
        (_set("beft_keras_version", 1), "'beft_keras_version' must be a non"),
        # Version 2 named each variable in the metadata too.
        (_v2(_without("variables")), "lacks the field 'variables'"),
        (_v2(_set("variables", [])), "'variables' must be an object mapping"),
        (_v2(_set("variables", {})), "'variables' must be an object mapping"),
        (
            _v2(lambda d: {**d, "variables": {**d["variables"], "x/bias": 1}}),
            "'variables' must be an object mapping",
        ),
        (
            _v2(lambda d: {
                **d, "variables": {**d["variables"], "x/bias": "value"}
            }),
            "its metadata lists other variables than it holds",
        ),
        (
            _v2(lambda d: {
                **d, "variables": {**d["variables"], "logits/bias": "query"}
            }),
            r"'terms', \['value'\], does not list the bias terms of its "
            r"variables, \['query', 'value'\]",
        ),
    ],
)
def test_hand_edited_metadata_changes_nothing(
    bert_preset, trained, tmp_path, edit, message
):
    path = _rewrite(trained.path, tmp_path / "edited.safetensors", edit)
    model = tiny_classifier(bert_preset)
    before = snapshot(model)
    with pytest.raises(DeltaError, match=message) as error:
        load_delta(model, path, task="sst2")
    assert f"'{path}' is not a valid beft-keras delta file" in str(error.value)
    with pytest.raises(DeltaError, match=message):
        DeltaSwitcher(model).apply(path)
    _assert_bitwise_equal(snapshot(model), before)


def test_version_2_delta_loads_as_saved(bert_preset, trained, tmp_path):
    path = _rewrite(trained.path, tmp_path / "v2.safetensors", _as_version_2)
    model = tiny_classifier(bert_preset)
    info = load_delta(model, path, task="sst2")
    assert (info.task, info.head_shape) == ("sst2", (None, NUM_CLASSES))
    assert info.paths == trained.info.paths
    _assert_bitwise_equal(snapshot(model), trained.weights)


@pytest.mark.parametrize(
    "name, message",
    [
        (V2_PATHS["value/0"], "are not named '<role>/<index>'"),
        ("value/01", "are not named '<role>/<index>'"),
        ("value/-1", "are not named '<role>/<index>'"),
        ("bias/0", "are not named '<role>/<index>'"),
        (
            "query/0",
            r"'terms', \['value'\], does not list the bias terms of its "
            r"variables, \['query', 'value'\]",
        ),
        (
            f"value/{NUM_LAYERS}",
            rf"has no variable for its tensor\(s\) \['value/{NUM_LAYERS}'\]",
        ),
    ],
)
def test_hand_renamed_tensor_changes_nothing(
    bert_preset, trained, tmp_path, name, message
):
    values = safetensors.numpy.load_file(trained.path)
    values[name] = values.pop("value/0")
    path = _rewrite(trained.path, tmp_path / "renamed.safetensors",
                    values=values)
    model = tiny_classifier(bert_preset)
    before = snapshot(model)
    with pytest.raises(DeltaError, match=message):
        load_delta(model, path)
    _assert_bitwise_equal(snapshot(model), before)


def test_a_variable_outside_biases_and_head_is_refused(
    bert_preset, trained, tmp_path
):
    """Version 2 named tensors by path, and roles are read off the model: a
    delta holding a kernel of the body is not a bias delta for it, whatever
    its metadata says."""
    kernel = "transformer_layer_0/self_attention_layer/query/kernel"
    model = tiny_classifier(bert_preset)
    values = safetensors.numpy.load_file(trained.path)
    values[kernel] = snapshot(model)[kernel]
    path = _rewrite(
        trained.path,
        tmp_path / "kernel.safetensors",
        _v2(lambda d: {**d, "variables": {**d["variables"], kernel: "value"}}),
        values=values,
    )
    before = snapshot(model)
    with pytest.raises(
        DeltaError,
        match=re.escape(f"its variable(s) ['{kernel}'] are neither biases nor "
                        "the task head"),
    ):
        load_delta(model, path, allow_base_mismatch=True)
    _assert_bitwise_equal(snapshot(model), before)


def test_version_1_delta_loads_as_made_for_an_unknown_task(
    bert_preset, trained, tmp_path
):
    path = _rewrite(trained.path, tmp_path / "v1.safetensors", _as_version_1)
    model = tiny_classifier(bert_preset)
    info = load_delta(model, path, task="cola")
    assert (info.task, info.head_shape) == (None, None)
    assert info.paths == trained.info.paths
    _assert_bitwise_equal(snapshot(model), trained.weights)

    # Without a recorded head shape, the variables' shapes are checked.
    model = tiny_classifier(bert_preset, num_classes=3)
    before = snapshot(model)
    with pytest.raises(
        DeltaError,
        match=r"'logits/bias' has shape \(2,\) in the delta and \(3,\)",
    ):
        load_delta(model, path)
    _assert_bitwise_equal(snapshot(model), before)


def test_minilm_delta_is_small(tmp_path):
    classifier = keras_hub.models.BertTextClassifier.from_preset(
        minilm_preset_dir(), num_classes=2
    )
    beft_keras.BiasOnlyTrainable("value").apply(classifier)
    _perturb_trainable(classifier, seed=0)
    trained = snapshot(classifier)
    info = save_delta(
        classifier, tmp_path / "minilm.safetensors", base="all-MiniLM-L6-v2"
    )
    print(f"MiniLM value-bias delta: {info.num_bytes:,} bytes")
    assert info.num_params == 2304 + 384 * 2 + 2
    assert info.num_bytes < 64 * 1024

    for variable in classifier.trainable_weights:
        variable.assign(np.zeros(variable.shape))
    load_delta(classifier, info.path)
    _assert_bitwise_equal(snapshot(classifier), trained)
