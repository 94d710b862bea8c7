"""`VerbalizerClassifier`: classification by a causal LM's next-token
scores of verbaliser words."""

import keras

from beft_keras.prompting.packing import PromptError


@keras.saving.register_keras_serializable(package="beft_keras")
class VerbalizerClassifier(keras.Model):
    """Classify prompts by a causal LM's next-token scores of verbaliser words.

    The logit of class `c` is the language model's logit, at the last token
    of the prompt, of the token of verbaliser word `c`: the score the LM's
    own head gives that word as the next token. Trained with sparse
    categorical cross-entropy over these logits, as MeZO and the BEFT paper
    train OPT on classification tasks. The model holds nothing but the
    backbone (the LM head is the backbone's tied or reverse embedding), so
    `BiasOnlyTrainable("value")` trains the value biases alone and a delta
    saved from it loads onto the causal LM of the same backbone.

    Args:
        backbone: a keras-hub decoder backbone with a `token_embedding`
            that maps hidden states back to the vocabulary, as the causal
            LM's head does: `OPTBackbone`, `GPT2Backbone`, `QwenBackbone`,
            `LlamaBackbone`, ... (`causal_lm.backbone`, not the causal LM
            itself).
        verbalizer_token_ids: list of int. The token of each class's word,
            e.g. from `Verbalizer.token_ids(tokenizer)`.

    Example:
    ```python
    causal_lm = keras_hub.models.OPTCausalLM.from_preset("opt_125m_en")
    tokenizer = causal_lm.preprocessor.tokenizer
    classifier = beft_keras.VerbalizerClassifier(
        causal_lm.backbone, beft_keras.SST2_VERBALIZER.token_ids(tokenizer)
    )
    prompts = [beft_keras.SST2_TEMPLATE.format(sentence=s) for s in sentences]
    x, y = beft_keras.classification_inputs(prompts, labels, tokenizer)
    beft_keras.BiasOnlyTrainable("value").apply(classifier)
    classifier.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"],
    )
    classifier.fit(x, y, batch_size=8, epochs=5)
    ```
    """

    def __init__(self, backbone, verbalizer_token_ids, **kwargs):
        if getattr(backbone, "token_embedding", None) is None:
            raise TypeError(
                "`backbone` must be a keras-hub decoder backbone with a "
                "`token_embedding`; for a causal LM, pass "
                "`causal_lm.backbone`. Received: backbone of type "
                f"{type(backbone).__name__}"
            )
        token_ids = [int(i) for i in verbalizer_token_ids]
        if len(set(token_ids)) < 2:
            raise PromptError(
                "`verbalizer_token_ids` must hold at least two different "
                f"tokens. Received: {token_ids}"
            )
        vocabulary_size = backbone.token_embedding.input_dim
        # Out of range, an id would read another token's logit (a negative
        # one counts from the end) or NaN (JAX), or fail only when called.
        if not all(0 <= i < vocabulary_size for i in token_ids):
            raise PromptError(
                "`verbalizer_token_ids` must be ids of the backbone's "
                f"vocabulary, from 0 to {vocabulary_size - 1}. "
                f"Received: {token_ids}"
            )
        # Functional, as keras-hub tasks are: built as soon as it exists.
        inputs = backbone.input
        hidden = backbone(inputs)
        # Prompts are right-padded: the last real token predicts the word.
        lengths = keras.ops.sum(
            keras.ops.cast(inputs["padding_mask"], "int32"), axis=1
        )
        last = keras.ops.maximum(lengths - 1, 0)
        hidden = keras.ops.take_along_axis(
            hidden, last[:, None, None], axis=1
        )[:, 0]
        logits = backbone.token_embedding(hidden, reverse=True)
        logits = keras.ops.take(logits, token_ids, axis=-1)
        logits = keras.ops.cast(logits, "float32")
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = backbone
        self.verbalizer_token_ids = token_ids

    def get_config(self):
        # Not the functional config: the constructor's arguments.
        return {
            "backbone": keras.layers.serialize(self.backbone),
            "verbalizer_token_ids": self.verbalizer_token_ids,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)
