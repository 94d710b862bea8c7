import json
import os
import re
import subprocess
import sys
import warnings

import keras
import keras_hub
import numpy as np
import pytest

import beft_keras
from beft_keras import gradients
from tests.conftest import NUM_LAYERS
from tests.conftest import VOCABULARY_SIZE
from tests.conftest import bert_inputs
from tests.conftest import next_backend
from tests.conftest import randomize_biases
from tests.conftest import snapshot
from tests.conftest import tiny_classifier
from tests.conftest import token_batch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _probe_model(bert_preset):
    """A tiny BERT classifier with every bias trainable, its head set from
    numpy so that it is the same on every backend."""
    model = tiny_classifier(bert_preset)
    rng = np.random.default_rng(3)
    for variable in beft_keras.head_variables(model):
        variable.assign(rng.normal(0.0, 0.3, variable.shape))
    beft_keras.BiasOnlyTrainable("all").apply(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _run_probe(bert_preset, verbose=0):
    model = _probe_model(bert_preset)
    x, y = bert_inputs(32)
    probe = beft_keras.BeftProbe(data=(x, y), verbose=verbose)
    before = snapshot(model)
    model.fit(
        x, y, batch_size=16, epochs=3, shuffle=False, verbose=0,
        callbacks=[probe],
    )
    return model, probe, before


def test_scores_match_numpy_on_recorded_biases(bert_preset):
    model, probe, before = _run_probe(bert_preset)
    after = snapshot(model)
    results = probe.results
    assert results.terms == beft_keras.TERMS[:-1]
    assert results.num_layers == NUM_LAYERS
    expected = {"beft": {}, "magnitude": {}}
    for bias in beft_keras.bias_terms(model):
        if bias.term == "other":
            continue
        pre = before[bias.path].astype("float64").ravel()
        post = after[bias.path].astype("float64").ravel()
        row = results.terms.index(bias.term)
        expected_beft = 1 - pre @ post / max(pre @ pre, post @ post)
        expected_magnitude = np.mean(np.abs(post - pre))
        assert results.layer_scores["beft"][row, bias.layer_index] == (
            pytest.approx(expected_beft, rel=1e-12, abs=1e-15)
        )
        assert results.layer_scores["magnitude"][row, bias.layer_index] == (
            pytest.approx(expected_magnitude, rel=1e-12, abs=1e-15)
        )
        expected["beft"].setdefault(bias.term, []).append(expected_beft)
        expected["magnitude"].setdefault(bias.term, []).append(
            expected_magnitude
        )
    # Averages over layers and the selection, from the numpy values alone.
    for method, by_term in expected.items():
        for term, values in by_term.items():
            assert len(values) == NUM_LAYERS
            assert results.averages[method][term] == pytest.approx(
                np.mean(values), rel=1e-12
            )
    # The selection leaves out the inert b_k.
    assert results.inert == ("key",)
    best = max(["query", "value"], key=lambda t: np.mean(expected["beft"][t]))
    assert probe.selected == best


def test_key_bias_is_measured_inert(bert_preset):
    model, probe, _ = _run_probe(bert_preset)
    rms = probe.results.gradient_rms
    assert probe.results.inert == ("key",)
    assert rms["key"] < 1e-5 * rms["value"]
    # A b_k-only fine-tune is then a no-op, and BiasOnlyTrainable says so.
    inert = probe.results.inert
    with pytest.warns(UserWarning, match="zero gradient for \\['key'\\]"):
        beft_keras.BiasOnlyTrainable("key", inert_terms=inert).apply(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        beft_keras.BiasOnlyTrainable(
            ["key", "value"], inert_terms=inert
        ).apply(model)


class TinyAttention(keras.layers.Layer):
    """Single-head softmax attention, simple enough to write again in numpy
    below. Its sub-layer names make the bias-term map read it as an
    attention layer."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self._query_dense = keras.layers.Dense(units, name="query")
        self._key_dense = keras.layers.Dense(units, name="key")
        self._value_dense = keras.layers.Dense(units, name="value")
        self._output_dense = keras.layers.Dense(units, name="output")

    def call(self, x):
        q, k, v = self._query_dense(x), self._key_dense(x), self._value_dense(x)
        logits = keras.ops.matmul(q, keras.ops.swapaxes(k, 1, 2))
        weights = keras.ops.softmax(logits / self.units**0.5, axis=-1)
        return self._output_dense(keras.ops.matmul(weights, v))


def _tiny_attention_model():
    inputs = keras.Input((4, 3))
    x = keras.layers.Dense(6, name="embed")(inputs)
    x = TinyAttention(6, name="attention")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.7, variable.shape))
    beft_keras.BiasOnlyTrainable("all").apply(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _numpy_loss(weights, x, y):
    """The loss of `_tiny_attention_model` in numpy float64."""
    w = weights

    def dense(name, inputs):
        return inputs @ w[f"{name}/kernel"] + w[f"{name}/bias"]

    h = dense("embed", x)
    q = dense("attention/query", h)
    k = dense("attention/key", h)
    v = dense("attention/value", h)
    logits = q @ np.swapaxes(k, 1, 2) / np.sqrt(6.0)
    attention = np.exp(logits - logits.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    logits = dense("head", dense("attention/output", attention @ v).mean(1))
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -np.mean(log_probs[np.arange(len(y)), y])


def test_fisher_equals_finite_difference_gradients():
    """The probe's Fisher against central differences of the same loss
    computed in numpy float64 (exact to ~1e-9), to 1e-5 relative."""
    model = _tiny_attention_model()
    rng = np.random.default_rng(1)
    batches = [
        (
            rng.normal(size=(5, 4, 3)).astype("float32"),
            rng.integers(0, 2, 5).astype("int32"),
        )
        for _ in range(2)
    ]
    weights = {p: v.astype("float64") for p, v in snapshot(model).items()}
    x, y = batches[0]
    keras_loss = model.compute_loss(x, y, model(x), training=False)
    assert float(keras.ops.convert_to_numpy(keras_loss)) == pytest.approx(
        _numpy_loss(weights, x.astype("float64"), y), rel=1e-6
    )
    # The Fisher is measured at these weights, before the one step.
    probe = beft_keras.BeftProbe(data=batches, verbose=0)
    model.fit(x, y, batch_size=5, verbose=0, callbacks=[probe])
    epsilon = 1e-6
    for bias in beft_keras.bias_terms(model):
        if bias.term == "other":
            continue
        base = weights[bias.path]
        squared = []
        for x, y in batches:
            grad = np.zeros(base.size)
            for i in range(base.size):
                step = np.zeros(base.size)
                step[i] = epsilon
                plus = {**weights, bias.path: base + step.reshape(base.shape)}
                minus = {**weights, bias.path: base - step.reshape(base.shape)}
                x64 = x.astype("float64")
                grad[i] = (
                    _numpy_loss(plus, x64, y) - _numpy_loss(minus, x64, y)
                ) / (2 * epsilon)
            squared.append(grad**2)
        expected = np.mean(squared)
        row = probe.results.terms.index(bias.term)
        measured = probe.results.layer_scores["fisher"][row, 0]
        assert measured == pytest.approx(expected, rel=1e-5), bias.path


def test_same_ranking_on_another_backend(bert_preset, tmp_path):
    """Run the same probe under another backend in a subprocess."""
    _, probe, _ = _run_probe(bert_preset)
    here = probe.results
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.test_probe import _run_probe;"
        "_, probe, _ = _run_probe(sys.argv[2]);"
        "json.dump(probe.results.to_dict(), open(sys.argv[3], 'w'))"
    )
    backend = next_backend()
    output = tmp_path / f"{backend}.json"
    subprocess.run(
        [sys.executable, "-c", script, REPO, bert_preset, str(output)],
        env={**os.environ, "KERAS_BACKEND": backend},
        check=True,
        capture_output=True,
    )
    there = json.loads(output.read_text())
    assert there["rankings"] == here.rankings, backend
    assert there["selected"]["beft"] == here.selected
    for method in here.methods:
        for term in here.terms:
            assert there["averages"][method][term] == pytest.approx(
                here.averages[method][term], rel=2e-3, abs=1e-9
            ), (backend, method, term)


def test_apply_selection_restarts_and_trains_only_the_selection(bert_preset):
    model, probe, before = _run_probe(bert_preset)
    summary = probe.apply_selection()
    assert summary.terms == ("value",)
    after_reset = snapshot(model)
    for path, value in before.items():
        np.testing.assert_array_equal(after_reset[path], value)
    x, y = bert_inputs(16, seed=1)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    changed = {
        p for p, v in snapshot(model).items() if not np.array_equal(v, before[p])
    }
    values = {
        b.path for b in beft_keras.bias_terms(model) if b.term == "value"
    }
    assert changed == values | {"logits/kernel", "logits/bias"}


def test_summary_is_printed_at_the_end_of_fit(bert_preset, capsys):
    _, probe, _ = _run_probe(bert_preset, verbose=1)
    printed = capsys.readouterr().out
    assert "BEFT probe: scores averaged over 2 layers" in printed
    assert f"Selected:          {probe.selected}" in printed
    assert "Inert:             key" in printed


def test_without_data_there_is_no_fisher(bert_preset):
    model = _probe_model(bert_preset)
    x, y = bert_inputs(16)
    probe = beft_keras.BeftProbe(verbose=0)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[probe])
    assert probe.results.methods == ("beft", "magnitude")
    assert probe.results.gradient_rms is None
    assert probe.results.inert == ()
    assert "No gradients measured" in probe.results.summary()


def test_errors(bert_preset):
    with pytest.raises(ValueError, match="at least two different terms"):
        beft_keras.BeftProbe(candidates=["value"])
    with pytest.raises(ValueError, match="at least two different terms"):
        beft_keras.BeftProbe(candidates=["value", "pooler"])

    model = _probe_model(bert_preset)
    x, y = bert_inputs(16)
    beft_keras.BiasOnlyTrainable("value").apply(model)
    with pytest.raises(ValueError, match="BiasOnlyTrainable\\('all'\\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[beft_keras.BeftProbe()])

    model = _probe_model(bert_preset)
    value = model.backbone.get_layer("transformer_layer_1")._self_attention_layer
    value._value_dense.bias.assign(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="layer_1/self_attention_layer/value"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[beft_keras.BeftProbe()])

    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="fewer than two of the candidate"):
        plain.fit(
            np.zeros((4, 3)), np.zeros((4, 2)), verbose=0,
            callbacks=[beft_keras.BeftProbe()],
        )

    probe = beft_keras.BeftProbe()
    with pytest.raises(ValueError, match="needs a finished probe"):
        probe.apply_selection()


def test_a_probe_of_more_than_biases_is_refused(bert_preset):
    # The scores are of a bias-only fit; a full fit's embeddings would
    # also give TensorFlow's sparse gradients to the Fisher measure.
    model = tiny_classifier(bert_preset)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = bert_inputs(4)
    before = snapshot(model)
    with pytest.raises(ValueError, match=(
        r"BeftProbe scores the biases of a fit of all biases \(and the "
        r"head\) alone, but \d+ other variable\(s\) train too, e.g. "
        r"'.*embeddings.*'\. Make exactly the biases trainable first"
    )):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[beft_keras.BeftProbe(data=(x, y), verbose=0)])
    changed = [
        p for p, v in snapshot(model).items()
        if not np.array_equal(v, before[p])
    ]
    assert changed == []


def test_candidates_take_one_term_as_a_str():
    # One str is one candidate, as `terms` of BiasOnlyTrainable.
    with pytest.raises(
        ValueError, match=re.escape("Received: candidates=['value']")
    ):
        beft_keras.BeftProbe(candidates="value")
    with pytest.raises(
        TypeError, match="`candidates` must be a str or a list of str"
    ):
        beft_keras.BeftProbe(candidates=None)


def test_counts_must_be_positive_ints():
    for name, value in [
        ("max_batches", 2.5), ("max_batches", "3"), ("max_batches", True),
        ("max_batches", 0), ("batch_size", 0), ("batch_size", -1),
        ("batch_size", None), ("batch_size", 8.0),
    ]:
        with pytest.raises(
            ValueError,
            match=re.escape("must be a positive int") + ".*"
            + re.escape(f"Received: {name}={value!r}"),
        ):
            beft_keras.BeftProbe(**{name: value})


def test_data_arrays_must_be_a_tuple():
    x, y = bert_inputs(16)
    with pytest.raises(
        ValueError,
        match=re.escape("give arrays as a tuple, not a list. Received: "
                        "data=a list of ['dict', 'ndarray']"),
    ):
        beft_keras.BeftProbe(data=[x, y])


def test_a_list_of_arrays_is_a_models_several_inputs():
    """`data=([x1, x2], y)` as `fit([x1, x2], y)` reads it: tf.data would
    have stacked the two arrays into one input."""
    keras.utils.set_random_seed(0)
    query, context = keras.Input((5, 4)), keras.Input((3, 4))
    x = keras.layers.MultiHeadAttention(2, 3, name="attention")(
        query, context
    )
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model([query, context], keras.layers.Dense(2)(x))
    for bias in beft_keras.bias_terms(model):
        bias.variable.assign(np.full(bias.variable.shape, 0.5, "float32"))
    beft_keras.BiasOnlyTrainable("all").apply(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(8, 5, 4)).astype("float32"),
              rng.normal(size=(8, 3, 4)).astype("float32")]
    y = rng.integers(0, 2, 8)
    fishers = []
    for data in ((inputs, y), (tuple(inputs), y)):
        probe = beft_keras.BeftProbe(data=data, batch_size=4, verbose=0)
        weights = model.get_weights()
        model.fit(inputs, y, batch_size=4, shuffle=False, verbose=0,
                  callbacks=[probe])
        model.set_weights(weights)
        fishers.append(probe.results.averages["fisher"])
    assert fishers[0] == fishers[1]
    assert fishers[0]["value"] > 0


def test_numpy_integer_counts(bert_preset):
    model = _probe_model(bert_preset)
    x, y = bert_inputs(16)
    probe = beft_keras.BeftProbe(
        data=(x, y), max_batches=np.int64(1), batch_size=np.int32(8),
        verbose=0,
    )
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[probe])
    assert probe.results.methods == ("beft", "magnitude", "fisher")


def test_a_fit_without_a_step_selects_nothing(bert_preset):
    model = _probe_model(bert_preset)
    x, y = bert_inputs(16)
    probe = beft_keras.BeftProbe(verbose=0)
    with pytest.raises(ValueError, match="trained no step"):
        model.fit(x, y, epochs=0, verbose=0, callbacks=[probe])
    assert probe.results is None and probe.selected is None


def test_json_and_csv_hold_the_scores(tmp_path):
    """The files a probe writes, read back: every per-layer score and
    average, exactly, from hand-made tables."""
    tables = {
        "beft": np.array([[0.1, 0.3], [0.0, 0.02], [0.5, 0.7]]),
        "magnitude": np.array([[0.2, 0.2], [0.01, 0.03], [0.4, np.nan]]),
    }
    results = beft_keras.BeftResults(
        terms=("query", "key", "value"),
        num_layers=2,
        layer_scores=tables,
        candidates=("query", "key", "value"),
        gradient_rms=None,
    )
    results.to_json(tmp_path / "scores.json")
    results.to_csv(tmp_path / "scores.csv")
    written = json.loads((tmp_path / "scores.json").read_text())
    assert written["layer_scores"]["magnitude"][2] == [0.4, None]
    assert written["averages"]["beft"] == {
        "query": pytest.approx(0.2), "key": pytest.approx(0.01),
        "value": pytest.approx(0.6),
    }
    # NaN (a layer without the bias) is left out of the average.
    assert written["averages"]["magnitude"]["value"] == pytest.approx(0.4)
    assert written["selected"] == {"beft": "value", "magnitude": "value"}
    assert written["rankings"]["beft"] == ["value", "query", "key"]
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows[0] == "method,term,symbol,layer_0,layer_1,average"
    assert rows[1] == "beft,query,b_q,0.1,0.3,0.2"
    assert rows[6] == "magnitude,value,b_v,0.4,,0.4"
    assert len(rows) == 7


def _results(beft, gradient_rms=None):
    """Hand-made results of one layer, with these BEFT scores."""
    terms = tuple(beft)
    return beft_keras.BeftResults(
        terms=terms,
        num_layers=1,
        layer_scores={"beft": np.array([[beft[t]] for t in terms])},
        candidates=terms,
        gradient_rms=gradient_rms,
    )


def test_an_inert_term_is_not_selected_however_it_scores():
    # Adam moves a bias of zero gradient by steps of the learning rate, so
    # an inert b_k can score highest (a second fit of one probe did).
    rms = {"query": 2e-3, "key": 1e-12, "value": 3e-3}
    results = _results({"query": 0.4, "key": 0.9, "value": 0.5}, rms)
    assert results.inert == ("key",)
    assert results.selected == "value"
    assert results.rankings["beft"] == ["key", "value", "query"]
    assert results.to_dict()["selected"] == {"beft": "value"}
    # Unmeasured gradients (no `data`): nothing is known to be inert.
    assert _results({"query": 0.4, "key": 0.9, "value": 0.5}).selected == (
        "key"
    )


def test_a_method_not_measured_is_named():
    results = _results({"query": 0.4, "value": 0.5})
    with pytest.raises(ValueError, match=(
        r"No 'fisher' scores in these results: they hold \['beft'\] "
        r"\(the Fisher score needs the probe's `data`\)"
    )):
        results.selected_by("fisher")


def test_ties_with_the_selected_term():
    results = _results({"query": 1.0, "key": 1.0, "value": 1.0})
    assert results.selected == "query"
    assert results.tied_with_selected() == ("key", "value")
    inert_key = {"query": 1e-3, "key": 0.0, "value": 1e-3}
    assert _results(
        {"query": 1.0, "key": 1.0, "value": 1.0}, inert_key
    ).tied_with_selected() == ("value",)
    untied = _results({"query": 0.3, "key": 0.3, "value": 0.5})
    assert untied.tied_with_selected() == ()


def test_zero_starting_biases_tie_and_are_warned_of(bert_preset):
    # keras-hub initialises biases to zero: on such a model every BEFT
    # score is 1 and the selection is only the candidates' order.
    model = _probe_model(bert_preset)
    for bias in beft_keras.bias_terms(model):
        bias.variable.assign(np.zeros(bias.variable.shape))
    x, y = bert_inputs(16)
    probe = beft_keras.BeftProbe(verbose=0)
    with pytest.warns(UserWarning) as record:
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[probe])
    averages = probe.results.averages["beft"]
    assert [averages[t] for t in ("query", "key", "value")] == [1.0] * 3
    messages = [str(w.message) for w in record]
    tie = [m for m in messages if "tie at 1" in m]
    assert len(tie) == 1
    assert tie[0].startswith(
        "The BEFT scores of ['query', 'key', 'value'] tie at 1, so 'query' "
        f"is selected only as the first candidate. {3 * NUM_LAYERS} of "
        "their biases, e.g. "
    )
    assert "were all zero when the probe began" in tie[0]
    # Pretrained (non-zero) biases: no such warning.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _run_probe(bert_preset)
    assert not [w for w in record if "tie at" in str(w.message)]


def test_two_biases_of_a_term_in_a_layer_are_scored_as_one():
    # A gated feed-forward (Llama) has two `ffn_intermediate` projections a
    # layer, gate and up, both given biases by `add_biases`: each layer's
    # score is of the two as one vector (the last one alone was scored).
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=VOCABULARY_SIZE, num_layers=2, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=8, intermediate_dim=16,
    )
    beft_keras.add_biases(backbone, ["value", "ffn_intermediate"])
    randomize_biases(backbone)
    model = keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)
    beft_keras.BiasOnlyTrainable("all").apply(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    token_ids, padding_mask, _ = token_batch(8)
    x = {"token_ids": token_ids[:, :-1], "padding_mask": padding_mask[:, :-1]}
    y = token_ids[:, 1:]
    biases = [
        b for b in beft_keras.bias_terms(model) if b.term == "ffn_intermediate"
    ]
    assert [b.layer_index for b in biases] == [0, 0, 1, 1]
    positions = [
        [id(v) for v in model.trainable_variables].index(id(b.variable))
        for b in biases
    ]
    grads = gradients.loss_gradient_function(model)(x, y)
    before = snapshot(model)
    probe = beft_keras.BeftProbe(
        data=[(x, y)], candidates=["value", "ffn_intermediate"], verbose=0
    )
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[probe])
    after = snapshot(model)
    row = probe.results.terms.index("ffn_intermediate")
    for layer in (0, 1):
        cell = [b for b in biases if b.layer_index == layer]
        pre = np.concatenate([before[b.path].astype("float64") for b in cell])
        post = np.concatenate([after[b.path].astype("float64") for b in cell])
        grad = np.concatenate(
            [grads[p] for b, p in zip(biases, positions) if b in cell]
        )
        expected = {
            "beft": 1 - pre @ post / max(pre @ pre, post @ post),
            "magnitude": np.mean(np.abs(post - pre)),
            "fisher": np.mean(grad**2),
        }
        for method, value in expected.items():
            assert probe.results.layer_scores[method][row, layer] == (
                pytest.approx(value, rel=1e-12)
            ), (method, layer)


def _mha_model(dtype=None):
    """Keras' own MultiHeadAttention under a dense head, non-zero biases,
    every bias trainable."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    x = keras.layers.MultiHeadAttention(2, 4, dtype=dtype, name="attention")(
        inputs, inputs
    )
    x = keras.layers.GlobalAveragePooling1D(dtype=dtype)(x)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype=dtype)(x))
    rng = np.random.default_rng(0)
    for bias in beft_keras.bias_terms(model):
        bias.variable.assign(rng.normal(0.0, 0.5, bias.shape))
    beft_keras.BiasOnlyTrainable("all").apply(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 5, 8)).astype("float32")
    return model, x, rng.integers(0, 2, 16).astype("int32")


def test_bfloat16_gradients_are_measured():
    # PyTorch's `Tensor.numpy()` has no bfloat16 ("Got unsupported
    # ScalarType BFloat16").
    model, x, y = _mha_model(dtype="bfloat16")
    probe = beft_keras.BeftProbe(data=(x, y), verbose=0)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[probe])
    fisher = probe.results.averages["fisher"]
    assert all(np.isfinite(list(fisher.values())))
    assert fisher["value"] > 0.0


def test_data_that_repeats_forever_needs_max_batches():
    import tensorflow as tf

    model, x, y = _mha_model()
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    before = snapshot(model)
    probe = beft_keras.BeftProbe(data=data, max_batches=None, verbose=0)
    with pytest.raises(ValueError, match=re.escape(
        "`data` repeats forever and `max_batches=None` measures all of it"
    )):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[probe])
    after = snapshot(model)
    assert all(np.array_equal(after[p], v) for p, v in before.items())
    # A bound on it measures that many batches.
    probe = beft_keras.BeftProbe(data=data, max_batches=3, verbose=0)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[probe])
    assert probe._squared_gradients[0].shape[0] == 3


def test_a_non_finite_gradient_names_the_batch_not_the_fit():
    # Measured before any step: the probe fit cannot have diverged.
    model, x, y = _mha_model()
    x_nan = x.copy()
    x_nan[9, 0, 0] = np.nan
    probe = beft_keras.BeftProbe(data=(x_nan, y), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match=re.escape(
        "The gradient of bias 'attention/query/bias' on batch 1 of `data` "
        "holds NaN values at the starting weights, before any training"
    )):
        model.fit(x, y, batch_size=8, verbose=0, callbacks=[probe])


def test_progress_of_fewer_batches_than_max_batches_ends_its_line(capsys):
    # A generator's length is unknown: the bar's target is `max_batches`,
    # which it never reached, and the table was printed on its line.
    model, x, y = _mha_model()
    data = ((x[i:i + 8], y[i:i + 8]) for i in (0, 8))
    probe = beft_keras.BeftProbe(data=data, verbose=1)
    model.fit(x, y, batch_size=8, verbose=0, callbacks=[probe])
    assert "\nBEFT probe: scores averaged over 1 layers" in (
        capsys.readouterr().out
    )


def test_ties_of_a_method_not_measured_are_refused_by_name():
    with pytest.raises(ValueError, match="No 'fisher' scores in these"):
        _results({"query": 0.4, "value": 0.5}).tied_with_selected("fisher")
