import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

import beft_keras
from beft_keras import models
from beft_keras.prompting import SST2_TEMPLATE
from beft_keras.prompting import SST2_VERBALIZER
from beft_keras.prompting import TASK_PROMPTS
from beft_keras.prompting import PromptError
from beft_keras.prompting import PromptTemplate
from beft_keras.prompting import VerbalizerClassifier
from beft_keras.prompting import Verbalizer
from beft_keras.prompting import classification_inputs
from beft_keras.prompting import generation_inputs
from tests.conftest import SEQUENCE_LENGTH
from tests.conftest import VOCABULARY_SIZE
from tests.conftest import WORDS
from tests.conftest import bpe_tokenizer
from tests.conftest import bpe_vocabulary
from tests.conftest import snapshot

# The toy task's tokens: `<s> w1 w2 It was`, where one of w1, w2 is a
# positive or a negative word and the rest are filler; the class is the
# next token, " terrible" or " great".
START = 2
FILLER = (5, 30)
POSITIVE, NEGATIVE, IT, WAS, TERRIBLE, GREAT = 30, 31, 32, 33, 34, 35
SENTENCE_LENGTH = 2

SMALL_CONFIG = dict(
    vocabulary_size=VOCABULARY_SIZE,
    num_layers=2,
    hidden_dim=8,
    intermediate_dim=16,
)


@pytest.fixture(scope="module")
def prompt_preset(tmp_path_factory):
    """A tiny OPT whose weights (but its norms' scales, ones) are drawn from
    numpy, the same on every backend, at scales where its prompt logits are
    not all alike."""
    backbone = keras_hub.models.OPTBackbone(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=SEQUENCE_LENGTH,
        dropout=0.0,
    )
    rng = np.random.default_rng(2)
    for variable in backbone.weights:
        if variable.path.endswith(("bias", "beta")):
            variable.assign(rng.normal(0.0, 0.5, variable.shape))
        elif variable.path.endswith("kernel"):
            fan_in = variable.shape[0]
            variable.assign(rng.normal(0.0, fan_in**-0.5, variable.shape))
        elif "embedding" in variable.path:
            variable.assign(rng.normal(0.0, 1.0, variable.shape))
    folder = tmp_path_factory.mktemp("prompt_opt_preset")
    backbone.save_to_preset(str(folder))
    return str(folder)


def sst2_like(num_examples, seed):
    """Token-id prompts and labels of the toy task."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, num_examples)
    prompts = []
    for label in labels:
        sentence = list(rng.integers(*FILLER, SENTENCE_LENGTH))
        word = POSITIVE if label else NEGATIVE
        sentence[rng.integers(SENTENCE_LENGTH)] = word
        prompts.append([START, *sentence, IT, WAS])
    return prompts, labels


def tiny_tokenizer():
    return bpe_tokenizer(("It", "was", "great", "terrible", "good", "movie"))


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"],
    )


def _classifier(preset):
    backbone = keras_hub.models.OPTBackbone.from_preset(preset)
    token_ids = Verbalizer((TERRIBLE, GREAT)).token_ids()
    return VerbalizerClassifier(backbone, token_ids)


def _value_paths(model):
    return {b.path for b in beft_keras.bias_terms(model) if b.term == "value"}


def _next_token_logits(causal_lm, x, token_ids):
    logits = keras.ops.convert_to_numpy(causal_lm(x))
    last = x["padding_mask"].sum(axis=1) - 1
    return logits[np.arange(len(last)), last][:, token_ids]


def test_value_biases_learn_a_prompted_sst2_like_task(prompt_preset, tmp_path):
    # b_v adds a constant to each attention output, so it can only re-weigh
    # features the model already computes, as a pretrained LM does; this
    # random model (numpy seed 2) happens to compute one that reads the
    # sentiment word: 0.51 before, about 0.94 after, on every backend.
    classifier = _classifier(prompt_preset)
    x, y = classification_inputs(*sst2_like(256, seed=1), sequence_length=8)
    x_test, y_test = classification_inputs(
        *sst2_like(256, seed=2), sequence_length=8
    )
    beft_keras.BiasOnlyTrainable("value").apply(classifier)
    _compile(classifier, 0.1)
    _, chance = classifier.evaluate(x_test, y_test, verbose=0)
    before = snapshot(classifier)
    classifier.fit(x, y, batch_size=64, epochs=15, verbose=0)
    _, accuracy = classifier.evaluate(x_test, y_test, verbose=0)
    assert chance < 0.6
    assert accuracy > 0.75
    after = snapshot(classifier)
    changed = {p for p in after if not np.array_equal(before[p], after[p])}
    assert changed == _value_paths(classifier)

    path = tmp_path / "sst2.safetensors"
    beft_keras.save_delta(classifier, path)
    tuned = keras.ops.convert_to_numpy(classifier(x_test))
    fresh = _classifier(prompt_preset)
    beft_keras.load_delta(fresh, path)
    restored = keras.ops.convert_to_numpy(fresh(x_test))
    assert np.max(np.abs(restored - tuned)) == 0.0
    # The delta holds the backbone's value biases: it loads onto the causal
    # LM of the same base, which then scores the verbaliser words alike.
    causal_lm = keras_hub.models.OPTCausalLM(
        backbone=keras_hub.models.OPTBackbone.from_preset(prompt_preset),
        preprocessor=None,
    )
    beft_keras.load_delta(causal_lm, path)
    np.testing.assert_allclose(
        _next_token_logits(causal_lm, x_test, [TERRIBLE, GREAT]),
        tuned,
        rtol=1e-5,
        atol=1e-5,
    )


def test_beft_probe_scores_a_prompted_classifier(prompt_preset):
    classifier = _classifier(prompt_preset)
    x, y = classification_inputs(*sst2_like(64, seed=1), sequence_length=8)
    beft_keras.BiasOnlyTrainable("all").apply(classifier)
    _compile(classifier, 1e-2)
    probe = beft_keras.BeftProbe(data=(x, y), max_batches=2, verbose=0)
    classifier.fit(x, y, batch_size=32, epochs=1, callbacks=[probe], verbose=0)
    assert probe.selected in ("query", "key", "value")
    assert "key" in probe.results.inert
    summary = probe.apply_selection()
    assert summary.terms == (probe.selected,)


CAUSAL_LMS = {
    "opt": (
        keras_hub.models.OPTBackbone,
        keras_hub.models.OPTCausalLM,
        dict(num_heads=2, max_sequence_length=SEQUENCE_LENGTH),
    ),
    "gpt2": (
        keras_hub.models.GPT2Backbone,
        keras_hub.models.GPT2CausalLM,
        dict(num_heads=2, max_sequence_length=SEQUENCE_LENGTH),
    ),
    "qwen": (
        keras_hub.models.QwenBackbone,
        keras_hub.models.QwenCausalLM,
        dict(num_query_heads=2, num_key_value_heads=1),
    ),
}


@pytest.mark.parametrize("name", sorted(CAUSAL_LMS))
def test_class_logits_are_the_next_token_logits(name):
    backbone_class, causal_lm_class, extra = CAUSAL_LMS[name]
    keras.utils.set_random_seed(0)
    backbone = backbone_class(**SMALL_CONFIG, **extra)
    causal_lm = causal_lm_class(backbone=backbone, preprocessor=None)
    classifier = VerbalizerClassifier(backbone, [TERRIBLE, GREAT])
    # Prompts of different lengths: each is scored at its own last token.
    prompts = [[START] + list(range(5, 5 + n)) + [IT, WAS] for n in range(4)]
    x, _ = classification_inputs(prompts, [0, 1, 0, 1], sequence_length=8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(classifier(x)),
        _next_token_logits(causal_lm, x, [TERRIBLE, GREAT]),
        rtol=1e-5,
        atol=1e-6,
    )
    # Each of these models has value biases for BEFT to tune.
    summary = beft_keras.BiasOnlyTrainable("value").apply(classifier)
    assert summary.bias_params > 0 and summary.head_params == 0


def test_classifier_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.OPTBackbone(
        **SMALL_CONFIG, num_heads=2, max_sequence_length=SEQUENCE_LENGTH
    )
    classifier = VerbalizerClassifier(backbone, [TERRIBLE, GREAT])
    classifier.save(tmp_path / "classifier.keras")
    restored = keras.saving.load_model(tmp_path / "classifier.keras")
    assert isinstance(restored, VerbalizerClassifier)
    assert restored.verbalizer_token_ids == [TERRIBLE, GREAT]
    x, _ = classification_inputs(*sst2_like(4, seed=0), sequence_length=8)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x)),
        keras.ops.convert_to_numpy(classifier(x)),
    )


def test_classification_inputs_pad_and_truncate():
    x, y = classification_inputs(
        [[START, 5, 6, 7, 8, IT, WAS], [START, 9]], [1, 0], sequence_length=5
    )
    # Too long: words go from the start, after the start token.
    assert x["token_ids"].tolist() == [
        [START, 7, 8, IT, WAS],
        [START, 9, 0, 0, 0],
    ]
    assert x["padding_mask"].sum(axis=1).tolist() == [5, 2]
    assert y.tolist() == [1, 0] and y.dtype == "int32"
    with pytest.raises(PromptError, match="one class per prompt: 2"):
        classification_inputs([[START, 5], [START, 6]], [1], sequence_length=5)


def test_generation_inputs_weight_only_the_answers():
    x, y, weights = generation_inputs(
        [[START, 5, 6, 7, 8, 9], [START, 10]],
        [[20, 21], [22]],
        sequence_length=5,
    )
    # The first prompt loses 7 and 8 to fit; the answers stay whole.
    assert x["token_ids"].tolist() == [
        [START, 7, 8, 9, 20],
        [START, 10, 22, 0, 0],
    ]
    assert y.tolist() == [[7, 8, 9, 20, 21], [10, 22, 0, 0, 0]]
    assert weights.tolist() == [[0, 0, 0, 1, 1], [0, 1, 0, 0, 0]]
    with pytest.raises(PromptError, match="Example 0 does not fit.*4 tokens"):
        generation_inputs([[START, 5]], [[20, 21, 22, 23]], sequence_length=3)
    with pytest.raises(PromptError, match="one answer per prompt: 2"):
        generation_inputs([[START], [START]], [[20]], sequence_length=3)


def test_generation_trains_on_the_answer_loss_only(opt_preset):
    causal_lm = keras_hub.models.OPTCausalLM(
        backbone=keras_hub.models.OPTBackbone.from_preset(opt_preset),
        preprocessor=None,
    )
    beft_keras.BiasOnlyTrainable("value").apply(causal_lm)
    causal_lm.compile(
        optimizer=keras.optimizers.Adam(5e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[],
    )
    prompts = [[START, 5 + i, 6 + i, IT] for i in range(8)]
    answers = [[GREAT, WAS]] * 8
    x, y, weights = generation_inputs(prompts, answers, sequence_length=8)

    def loss(targets):
        return causal_lm.evaluate(x, targets, sample_weight=weights, verbose=0)

    before = loss(y)
    # Other targets at the prompt and padding positions: the same loss.
    assert loss(np.where(weights > 0, y, (y + 1) % VOCABULARY_SIZE)) == (
        pytest.approx(before, rel=1e-6)
    )
    causal_lm.fit(x, y, sample_weight=weights, epochs=5, verbose=0)
    assert loss(y) < before


def test_prompts_through_a_tokenizer():
    tokenizer = tiny_tokenizer()
    prompt = SST2_TEMPLATE.format(sentence=" good movie")
    assert prompt == " good movie It was"
    x, _ = classification_inputs([prompt], [1], tokenizer, sequence_length=8)
    words = tokenizer([" good", " movie", " It", " was"])
    assert x["token_ids"][0].tolist() == (
        [tokenizer.start_token_id]
        + [int(word[0]) for word in words]
        + [tokenizer.pad_token_id] * 3
    )
    terrible, great = SST2_VERBALIZER.token_ids(tokenizer)
    assert tokenizer.id_to_token(great) == "Ġgreat"
    assert tokenizer.id_to_token(terrible) == "Ġterrible"

    _, y, weights = generation_inputs([prompt], [" great"], tokenizer, 8)
    # The answer, then the end token that teaches the model to stop.
    assert y[0][weights[0] > 0].tolist() == [great, tokenizer.end_token_id]

    with pytest.raises(PromptError, match="'terrible' is 8 tokens"):
        Verbalizer(("terrible", "great")).token_ids(tokenizer)
    with pytest.raises(PromptError, match="share a token"):
        Verbalizer((" great", " great")).token_ids(tokenizer)
    with pytest.raises(PromptError, match="' terrible' needs a tokenizer"):
        SST2_VERBALIZER.token_ids()
    with pytest.raises(PromptError, match="field 'sentence'"):
        PromptTemplate("{sentence} It was").format(text="no sentence")


def test_prompt_preprocessor_matches_classification_inputs():
    tokenizer = tiny_tokenizer()
    # Slots out of the features' order, and a prompt too long to fit.
    template = PromptTemplate("{second} was{first} It was")
    assert template.fields == ("second", "first")
    first = [" good", " good movie movie good movie"]
    second = [" movie", " great"]
    preprocessor = beft_keras.PromptPreprocessor(
        tokenizer, template, features=("first", "second"), sequence_length=8
    )
    prompts = [template.format(first=a, second=b) for a, b in zip(first, second)]
    expected, _ = classification_inputs(prompts, [0, 1], tokenizer, 8)
    outputs = preprocessor((first, second))
    for name in ("token_ids", "padding_mask"):
        np.testing.assert_array_equal(outputs[name], expected[name])
    # The long prompt lost tokens from its start, after the start token.
    assert outputs["padding_mask"].sum(axis=1).tolist() == [6, 8]
    assert outputs["token_ids"][1, 0] == tokenizer.start_token_id

    # Inside tf.data, as `make_dataset` runs it.
    dataset = tf.data.Dataset.from_tensor_slices((first, second)).batch(2)
    batch = next(iter(dataset.map(lambda a, b: preprocessor(x=(a, b)))))
    np.testing.assert_array_equal(batch["token_ids"], expected["token_ids"])

    with pytest.raises(PromptError, match=r"needs the features \['second'\]"):
        beft_keras.PromptPreprocessor(tokenizer, template, ("first",))
    with pytest.raises(PromptError, match="one batch of texts per feature"):
        preprocessor(first)


def test_verbalizer_refuses_a_single_word():
    """A bare str was read as one class per character: six classes from
    `" great"`."""
    with pytest.raises(PromptError) as error:
        Verbalizer(" great")
    assert str(error.value) == (
        "`words` must be a tuple with one word per class, e.g. "
        "`(' great', ...)`, not a single str. Received: words=' great'"
    )
    assert Verbalizer([" terrible", " great"]).token_ids(tiny_tokenizer()) \
        == SST2_VERBALIZER.token_ids(tiny_tokenizer())


def test_prompt_preprocessor_takes_a_str_as_one_feature():
    """`features="sentence"` was read as the features 's', 'e', ..."""
    tokenizer = tiny_tokenizer()
    preprocessor = beft_keras.PromptPreprocessor(
        tokenizer, SST2_TEMPLATE, features="sentence", sequence_length=8
    )
    assert preprocessor.features == ("sentence",)
    sentences = [" good movie", " movie"]
    prompts = [SST2_TEMPLATE.format(sentence=s) for s in sentences]
    expected, _ = classification_inputs(prompts, [0, 1], tokenizer, 8)
    outputs = preprocessor(sentences)
    for name in ("token_ids", "padding_mask"):
        np.testing.assert_array_equal(outputs[name], expected[name])


def test_verbalizer_classifier_refuses_a_causal_lm(prompt_preset):
    """A causal LM failed with an AttributeError on `token_embedding`."""
    causal_lm = keras_hub.models.OPTCausalLM(
        backbone=keras_hub.models.OPTBackbone.from_preset(prompt_preset),
        preprocessor=None,
    )
    with pytest.raises(TypeError) as error:
        VerbalizerClassifier(causal_lm, [TERRIBLE, GREAT])
    assert str(error.value) == (
        "`backbone` must be a keras-hub decoder backbone with a "
        "`token_embedding`; for a causal LM, pass `causal_lm.backbone`. "
        "Received: backbone of type OPTCausalLM"
    )
    classifier = VerbalizerClassifier(causal_lm.backbone, [TERRIBLE, GREAT])
    assert classifier.backbone is causal_lm.backbone


@pytest.mark.parametrize("token_ids", [[TERRIBLE, -1], [TERRIBLE, 10**6]])
def test_verbalizer_classifier_refuses_ids_outside_the_vocabulary(
    token_ids, prompt_preset
):
    """-1 read the last token's logit; past the end, JAX gave NaN and
    TensorFlow and torch failed only when the model was called."""
    backbone = keras_hub.models.OPTBackbone.from_preset(prompt_preset)
    size = backbone.token_embedding.input_dim
    with pytest.raises(PromptError) as error:
        VerbalizerClassifier(backbone, token_ids)
    assert str(error.value) == (
        "`verbalizer_token_ids` must be ids of the backbone's vocabulary, "
        f"from 0 to {size - 1}. Received: {token_ids}"
    )


# The words of the tiny tasks and of the prompts answered "Yes", "No" or
# "Maybe" (rte, cb, and GLUE's cola, mrpc, qqp, qnli, mnli), as one
# byte-pair tokenizer knows them; the answers follow a newline, so they
# have no leading space.
PROMPT_WORDS = WORDS + [
    "Does", "this", "mean", "that", "is", "true", "the", "same", "as", "Is",
    "sentence", "grammatical", "these", "two", "questions", "ask", "thing",
    "answer", "question", "Suppose", "Can", "we", "infer", "Yes", "or", "No",
    "Maybe", "word", "have", "meaning", "in", "sentences", "sat", "by",
    "bank", '"', "?", ",", ".", "Ċ",
]
ANSWERS = ("Yes", "No", "Maybe")


def answering_tokenizer():
    """An OPT tokenizer that reads every prompt word, and each answer
    without a leading space, as one token."""
    vocabulary, merges = bpe_vocabulary(PROMPT_WORDS, ["<pad>", "</s>"])
    for word in ANSWERS:
        for end in range(2, len(word) + 1):
            vocabulary.setdefault(word[:end], len(vocabulary) + 1)
        merges += [f"{word[:i]} {word[i]}" for i in range(1, len(word))]
    return keras_hub.models.OPTTokenizer(vocabulary=vocabulary, merges=merges)


@pytest.fixture(scope="module")
def answering_preset(tmp_path_factory):
    keras.utils.set_random_seed(0)
    tokenizer = answering_tokenizer()
    backbone = keras_hub.models.OPTBackbone(
        **{**SMALL_CONFIG, "vocabulary_size": tokenizer.vocabulary_size() + 1,
           "num_heads": 2, "max_sequence_length": 64}
    )
    causal_lm = keras_hub.models.OPTCausalLM(
        backbone, keras_hub.models.OPTCausalLMPreprocessor(tokenizer)
    )
    folder = str(tmp_path_factory.mktemp("answering_opt_preset"))
    causal_lm.save_to_preset(folder)
    return folder


# GLUE and SuperGLUE label names in class order (TFDS), and the answer to
# each: a prompt whose words were in another order would train the model
# to answer the opposite.
LABEL_ANSWERS = {
    "rte": {"entailment": "Yes", "not_entailment": "No"},
    "cb": {"entailment": "Yes", "contradiction": "No", "neutral": "Maybe"},
    "cola": {"unacceptable": "No", "acceptable": "Yes"},
    "mrpc": {"not_equivalent": "No", "equivalent": "Yes"},
    "qqp": {"not_duplicate": "No", "duplicate": "Yes"},
    "qnli": {"entailment": "Yes", "not_entailment": "No"},
    "mnli": {"entailment": "Yes", "neutral": "Maybe", "contradiction": "No"},
    "wic": {"false": "No", "true": "Yes"},
}


def test_answer_words_follow_each_tasks_label_order():
    for task, answers in LABEL_ANSWERS.items():
        assert TASK_PROMPTS[task].verbalizer.words == tuple(answers.values())


def test_a_causal_lm_is_asked_the_tasks_prompt(answering_preset):
    """`load_classifier` puts a causal LM the task's prompt, filled with
    the features by name (QNLI's prompt reads them in the other order), and
    scores the answer of each class."""
    spec = beft_keras.get_task("qnli")
    preprocessor, classifier = models.load_classifier(
        answering_preset, spec, 64
    )
    tokenizer = answering_tokenizer()
    assert classifier.verbalizer_token_ids == [
        int(tokenizer(word)[0]) for word in ("Yes", "No")
    ]
    texts = {"question": "was the film good", "sentence": "the film was"}
    x = preprocessor(tuple([texts[name]] for name in spec.features))
    prompt = 'the film was\nDoes this answer the question "was the film ' \
        'good"? Yes or No?\n'
    expected, _ = classification_inputs([prompt], [0], tokenizer, 64)
    np.testing.assert_array_equal(x["token_ids"], expected["token_ids"])
    np.testing.assert_array_equal(x["padding_mask"], expected["padding_mask"])


def test_wic_asks_about_its_target_word(answering_preset):
    """WiC's prompt (MeZO's) names the word apart from the two sentences,
    which an encoder reads with the word written before the first."""
    spec = beft_keras.get_task("wic")
    preprocessor, classifier = models.load_classifier(
        answering_preset, spec, 64
    )
    examples = beft_keras.data.Examples(
        {"word": ["bank"], "sentence1": ["we sat by the bank."],
         "sentence2": ["the bank was good."]},
        [1], prefix_features=("word",),
    )
    x = beft_keras.data.tokenize(examples, preprocessor)
    prompt = 'Does the word "bank" have the same meaning in these two ' \
        "sentences? Yes, No?\nwe sat by the bank.\nthe bank was good.\n"
    tokenizer = answering_tokenizer()
    expected, _ = classification_inputs([prompt], [1], tokenizer, 64)
    np.testing.assert_array_equal(x["token_ids"], expected["token_ids"])
    assert classifier.verbalizer_token_ids == [
        int(tokenizer(word)[0]) for word in ("No", "Yes")
    ]


def test_task_prompts_fill_with_their_tasks_features():
    for name, prompt in beft_keras.TASK_PROMPTS.items():
        spec = beft_keras.get_task(name)
        assert set(prompt.template.fields) == set(spec.columns)
        if spec.is_generation:
            assert prompt.verbalizer is None
        else:
            assert len(prompt.verbalizer.words) == spec.num_classes


def test_generate_answers_is_greedy_decoding(prompt_preset):
    causal_lm = keras_hub.models.OPTCausalLM(
        backbone=keras_hub.models.OPTBackbone.from_preset(prompt_preset),
        preprocessor=None,
    )
    causal_lm.compile(sampler="greedy")
    prompts = [[START, 7, 8, IT, WAS], [START, 9]]
    answers = beft_keras.generate_answers(
        causal_lm, prompts, sequence_length=SEQUENCE_LENGTH,
        max_answer_length=4, batch_size=2,
    )
    for prompt, answer in zip(prompts, answers):
        # Greedy by hand: the argmax next token, one step at a time; a
        # prompt keeps its tokens and gets at most 4 new ones (no end
        # token without a tokenizer).
        tokens = list(prompt)
        for _ in range(4):
            x, _ = classification_inputs([tokens], [0], sequence_length=SEQUENCE_LENGTH)
            logits = keras.ops.convert_to_numpy(causal_lm(x))
            tokens.append(int(np.argmax(logits[0, len(tokens) - 1])))
        assert answer == tokens[len(prompt):]
    with pytest.raises(PromptError, match="max_answer_length"):
        beft_keras.generate_answers(causal_lm, prompts, sequence_length=8,
                                    max_answer_length=8)


def test_prompts_refuse_a_single_str_and_text_without_a_tokenizer():
    """A single str was one prompt per letter (`generate_answers` answered
    each letter); text without a tokenizer failed in `int()`."""
    tokenizer = tiny_tokenizer()
    with pytest.raises(PromptError) as error:
        classification_inputs(" good movie It was", [1], tokenizer)
    assert str(error.value) == (
        "Prompts and answers must be a list, not a single str. "
        "Received: ' good movie It was'"
    )
    with pytest.raises(PromptError, match="not a single str. Received: ' great'"):
        generation_inputs([" good It was"], " great", tokenizer)
    with pytest.raises(PromptError) as error:
        generation_inputs([[START, 5]], [" great"], sequence_length=8)
    assert str(error.value) == (
        "Without a tokenizer, prompts and answers must be lists of token "
        "ids; pass `tokenizer` for text. Received: ' great'"
    )


@pytest.mark.parametrize(
    "text, slot",
    [
        ("{} It was", "{}"),
        ("{0} It was", "{0}"),
        ("{sentence!r} It was", "{sentence!r}"),
        ("{sentence:>20} It was", "{sentence:>20}"),
        ("{sentence.lower} It was", "{sentence.lower}"),
    ],
)
def test_prompt_template_refuses_slots_it_cannot_fill(text, slot):
    """`{}` was no field and failed `format` with an IndexError, and
    `PromptPreprocessor` dropped it, conversions and format specs."""
    with pytest.raises(PromptError) as error:
        PromptTemplate(text)
    assert str(error.value) == (
        f"Template {text!r} has the slot {slot}; slots must be bare feature "
        "names, as `{sentence}`."
    )


def test_prompt_template_reads_braces_and_refuses_a_non_str():
    with pytest.raises(PromptError) as error:
        PromptTemplate("{sentence It was")
    assert str(error.value) == (
        "Template '{sentence It was' is not a format string (expected '}' "
        "before end of string); write a literal brace as `{{` or `}}`."
    )
    with pytest.raises(TypeError, match="Received: text of type int"):
        PromptTemplate(5)
    # Literal braces stay a template's text.
    template = PromptTemplate("{{x}}{sentence} It was")
    assert template.fields == ("sentence",)
    assert template.format(sentence=" good") == "{x} good It was"


def test_sequence_length_must_leave_room_for_a_prompt():
    """`sequence_length=0` gave empty inputs, `1` prompts of the start
    token alone, and `None` a TypeError on `<=`."""
    for length in (0, 1, None):
        with pytest.raises(PromptError) as error:
            classification_inputs([[START, 5, IT]], [1], sequence_length=length)
        assert str(error.value) == (
            "`sequence_length` must be an int above 1. Received: "
            f"sequence_length={length!r}"
        )
    with pytest.raises(PromptError, match="sequence_length=None"):
        generation_inputs([[START, 5]], [[20]], sequence_length=None)
    preprocessor = beft_keras.PromptPreprocessor(
        tiny_tokenizer(), SST2_TEMPLATE, "sentence", sequence_length=1
    )
    with pytest.raises(PromptError, match="above 1. Received: sequence_length=1"):
        preprocessor([" good movie"])


def test_prompt_preprocessor_refuses_one_text_for_a_batch():
    """One str failed in the graph, on a StridedSlice of rank 1."""
    preprocessor = beft_keras.PromptPreprocessor(
        tiny_tokenizer(), SST2_TEMPLATE, "sentence", sequence_length=8
    )
    with pytest.raises(PromptError) as error:
        preprocessor(" good movie")
    assert str(error.value) == (
        "Expected a batch of texts per feature, e.g. `[text]` for one "
        "text. Received: one text for 'sentence'"
    )
    assert preprocessor([" good movie"])["token_ids"].shape == (1, 8)


def test_generate_answers_refuses_bad_arguments(prompt_preset):
    """A causal LM with a preprocessor failed in its tokenizer,
    `batch_size=0` in `range`, and an answer length that left a prompt its
    start token alone answered it blind."""
    backbone = keras_hub.models.OPTBackbone.from_preset(prompt_preset)
    with_preprocessor = keras_hub.models.OPTCausalLM(
        backbone, keras_hub.models.OPTCausalLMPreprocessor(tiny_tokenizer())
    )
    with pytest.raises(PromptError) as error:
        beft_keras.generate_answers(with_preprocessor, [[START, 5]])
    assert str(error.value) == (
        "`causal_lm` must have no preprocessor: prompts are packed here. "
        "Build it with `preprocessor=None`. Received: a "
        "OPTCausalLMPreprocessor"
    )
    causal_lm = keras_hub.models.OPTCausalLM(backbone, preprocessor=None)
    with pytest.raises(PromptError) as error:
        beft_keras.generate_answers(causal_lm, [[START, 5]], batch_size=0)
    assert str(error.value) == (
        "`batch_size` must be an int above 0. Received: batch_size=0"
    )
    with pytest.raises(PromptError) as error:
        beft_keras.generate_answers(
            causal_lm, [[START, 5]], sequence_length=8, max_answer_length=7
        )
    assert str(error.value) == (
        "`max_answer_length` must leave room for a prompt in "
        "`sequence_length`=8. Received: max_answer_length=7"
    )
