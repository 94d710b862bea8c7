"""The stack-parity benchmark's Keras half, on a tiny BERT preset and the
inputs its Hugging Face half would leave (that half needs the authors'
transformers, which this environment does not have)."""

import json
import os

import keras
import keras_hub
import numpy as np

from benchmarks import authors_code
from benchmarks import stack_parity
from tests.conftest import TINY_CONFIG
from tests.conftest import VOCABULARY
from tests.conftest import randomize_biases


def test_batch_trims_to_the_bucket_of_the_longest_row():
    mask = np.zeros((3, 128), bool)
    for row, length in enumerate([5, 17, 40]):
        mask[row, :length] = True
    x = {"padding_mask": mask, "token_ids": np.arange(3 * 128).reshape(3, 128)}
    assert stack_parity._batch(x, np.array([0]))["token_ids"].shape == (1, 16)
    batch = stack_parity._batch(x, np.array([1, 0]))
    assert batch["padding_mask"].shape == (2, 32)
    np.testing.assert_array_equal(batch["token_ids"][0], np.arange(128, 160))
    assert stack_parity._batch(x, np.array([2]))["token_ids"].shape == (1, 64)
    assert [len(b) for b in stack_parity._train_batches(np.arange(35))] == [
        16, 16, 3]


def test_keras_half_trains_the_same_batches_and_writes_results_and_docs(
        tmp_path):
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCABULARY)
    backbone = keras_hub.models.BertBackbone(**{
        **TINY_CONFIG, "vocabulary_size": len(VOCABULARY),
        "max_sequence_length": 128})
    randomize_biases(backbone)
    preset = str(tmp_path / "preset")
    keras_hub.models.BertTextClassifier(
        backbone, num_classes=2,
        preprocessor=keras_hub.models.BertTextClassifierPreprocessor(
            tokenizer),
    ).save_to_preset(preset)

    texts = ["the film was good", "the film was awful", "good great fine",
             "bad", "the film was poor", "fine"]
    labels = np.array([1, 0, 1, 0, 0, 1])
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
        preset, sequence_length=128)
    x = {k: keras.ops.convert_to_numpy(v)
         for k, v in preprocessor(texts).items()}
    epochs, size = 2, len(texts)
    kernel = np.random.default_rng(0).normal(0, 0.02, (2, 8)).astype("float32")
    # The model before training, built apart, gives the "hf" logits of
    # epoch 0; epoch 1's are the labels one-hot, epoch 2's all class 0.
    untrained = keras_hub.models.BertTextClassifier(
        keras_hub.models.BertBackbone.from_preset(preset), num_classes=2,
        preprocessor=None)
    untrained.output_dense.kernel.assign(kernel.T)
    untrained.output_dense.bias.assign(np.zeros(2))
    before = keras.ops.convert_to_numpy(untrained.predict_on_batch(
        {k: v[:, :16] for k, v in x.items()}))
    hf_logits = np.stack([before, np.eye(2)[labels],
                          np.tile([1.0, 0.0], (size, 1))])
    work = tmp_path / "work"
    os.makedirs(work)
    np.savez(
        work / f"cola_all_0_{epochs}.npz", buckets=np.array(
            stack_parity.BUCKETS),
        orders=np.stack([np.arange(size), np.arange(size)[::-1]]),
        kernel=kernel, y_train=labels, y_dev=labels,
        losses=np.zeros(epochs), logits=hf_logits, trainable=0,
        wall_time_s=1.0, versions=np.array(["torch test"]),
        train_text_0=np.array(texts),
        **{f"train_{k}": v for k, v in x.items()},
        **{f"dev_{k}": v for k, v in x.items()},
    )
    docs = tmp_path / "stack_parity.md"
    assert stack_parity.main([
        "keras", "--task", "cola", "--epochs", str(epochs), "--model",
        preset, "--work", str(work), "--results", str(tmp_path),
        "--docs", str(docs)]) == 0

    row, = json.load(open(tmp_path / "stack_parity.json"))["rows"]
    assert row["tokenizer_mismatches"] == 0
    # Every bias (a layer norm's is its beta) and the head's kernel.
    biases = sum(int(np.prod(v.shape)) for v in untrained.weights
                 if v.path.endswith(("bias", "beta")))
    assert row["trainable_params"]["keras"] == biases + kernel.size
    assert row["learning_rate"] == authors_code.LEARNING_RATES["cola"]
    assert (row["gelu"], row["epsilon"]) == ("tanh", 1e-7)
    # One 16-example batch an epoch: the same model as the preset's before
    # training, to float rounding.
    assert row["dev_logit_gap_max"][0] < 1e-6
    assert row["curve"]["hf"] == [1.0, 0.0]
    assert len(row["curve"]["keras"]) == epochs
    text = docs.read_text()
    assert "| cola | all | 0 | 2 | tanh, 1e-07 | 0 / " in text
    assert "| 1 | 1.0000 | " in text
