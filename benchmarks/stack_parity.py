"""Whether the library's `--pooling cls` trains what the BEFT authors'
stack trains, once the random draws are taken out (issue #16).

Run side by side (`benchmarks/authors_code.py`), the two stacks differ by
their random draws (training order, dropout masks, the classifier's
initial weights) as well as by anything systematic, and one seed's last
epoch on a small task moves with those draws. Here every draw is made
once and shared, and dropout, the one draw two frameworks cannot share, is
off, so what is left is the model, the optimizer and the arithmetic. Two
halves, in two environments, on the same inputs:

    # The authors' stack: transformers 4.41 (their AdamW) and torch, in the
    # environment of benchmarks/authors_code.py.
    /tmp/authors_venv/bin/python -m benchmarks.stack_parity hf \\
        --task cola --terms all
    # The library's: keras-hub's BertTextClassifier, `BiasOnlyTrainable`,
    # `compile_model`; keras-hub's tanh GELU and Keras' AdamW epsilon, or
    # Hugging Face's exact GELU and transformers' epsilon (1e-6).
    KERAS_BACKEND=tensorflow python -m benchmarks.stack_parity keras \\
        --task cola --terms all [--exact-gelu --epsilon 1e-6]

The `hf` half draws the training subset as the authors' code does (their
`np.random.permutation`), every epoch's batch order and the classifier's
initial weights (normal, std 0.02, as transformers initialises it),
tokenizes with the Hugging Face tokenizer, pads each batch to the
library's length bucket, and trains as `GLUEvaluator._train` does
(cross-entropy, gradient norm clipped at 1.0, transformers' `AdamW`,
weight decay 0, a constant rate) with the model in eval mode, i.e. without
dropout. It saves the inputs, its per-step losses and its dev logits after
every epoch to `--work`. The `keras` half checks that keras-hub's tokenizer
gives the same ids, trains the library's model on the same batches in the
same order from the same weights, and writes both curves and the gaps
between them to `benchmarks/results/stack_parity.json` and
`docs/stack_parity.md`.

`--terms all` trains every bias and the classifier in both (26,882 weights
on all-MiniLM-L6-v2); `--terms value` trains b_v and the classifier, the
library's b_v (the authors' code also trains the pooler bias, measured
apart in docs/head_sweep.md).
"""

import argparse
import os
import sys
import time

import numpy as np

from benchmarks import authors_code
from benchmarks import common

NAME = "stack_parity"
DOCS = os.path.join(common.ROOT, "docs", NAME + ".md")
TASKS = ("cola", "mrpc", "rte", "sst2")
TEXT_COLUMNS = {"cola": ["sentence"], "sst2": ["sentence"],
                "rte": ["sentence1", "sentence2"],
                "mrpc": ["sentence1", "sentence2"]}
# beft_keras.data.bucket_lengths(128); the `keras` half checks it.
BUCKETS = (16, 32, 64, 128)
EVAL_BATCH_SIZE = 64
STD = 0.02


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["hf", "keras"])
    parser.add_argument("--task", choices=TASKS, default="cola")
    parser.add_argument("--terms", choices=["all", "value"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: the paper's for the task")
    parser.add_argument("--exact-gelu", action="store_true",
                        help="keras: Hugging Face's erf GELU in place of "
                        "keras-hub's tanh approximation")
    parser.add_argument("--epsilon", type=float, default=None,
                        help="keras: AdamW's epsilon (default: Keras' 1e-7)")
    parser.add_argument("--data-dir", default=common.DEFAULT_DATA_DIR)
    parser.add_argument("--model", default=None,
                        help="a BERT folder with Hugging Face and keras-hub "
                        "files (default: the all-MiniLM-L6-v2 package's)")
    parser.add_argument("--work", default="/tmp/stack_parity",
                        help="where the hf half leaves the shared inputs")
    parser.add_argument("--results", default=common.RESULTS)
    parser.add_argument("--docs", default=DOCS)
    args = parser.parse_args(argv)
    args.model = os.path.abspath(args.model or authors_code._default_model())
    args.epochs = args.epochs or authors_code.EPOCHS[args.task]
    inputs = os.path.join(
        args.work, f"{args.task}_{args.terms}_{args.seed}_{args.epochs}.npz"
    )
    if args.side == "hf":
        _hf_half(args, inputs)
    else:
        _keras_half(args, inputs)
    return 0


def _hf_half(args, inputs):
    import torch
    import transformers
    from transformers.optimization import AdamW

    train = authors_code._read_tsv(
        os.path.join(args.data_dir, args.task, "train.tsv"))
    dev = authors_code._read_tsv(
        os.path.join(args.data_dir, args.task, "dev.tsv"))
    size = authors_code.TRAIN_SIZES[args.task]
    np.random.seed(args.seed)
    chosen = np.sort(np.random.permutation(len(train["label"]))[:size])
    train = {k: [v[i] for i in chosen] for k, v in train.items()}
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    x_train = _encode(tokenizer, train, args)
    x_dev = _encode(tokenizer, dev, args)
    y_train = np.array([int(v) for v in train["label"]])
    y_dev = np.array([int(v) for v in dev["label"]])
    rng = np.random.RandomState(args.seed)
    orders = np.stack([rng.permutation(size) for _ in range(args.epochs)])
    num_classes = int(y_dev.max()) + 1
    generator = torch.Generator().manual_seed(args.seed)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=num_classes)
    kernel = torch.normal(0.0, STD, model.classifier.weight.shape,
                          generator=generator)
    with torch.no_grad():
        model.classifier.weight.copy_(kernel)
        model.classifier.bias.zero_()
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("classifier") or (
            name.endswith("bias")
            and (args.terms == "all" or "attention.self.value" in name))
    # Their training_preparation and _train, less dropout: eval mode.
    optimizer = AdamW(model.parameters(), lr=authors_code.LEARNING_RATES[
        args.task], correct_bias=True)
    model.eval()

    def forward(x, indices):
        batch = {k: torch.from_numpy(v).long()
                 for k, v in _batch(x, indices).items()}
        return model(input_ids=batch["token_ids"],
                     token_type_ids=batch["segment_ids"],
                     attention_mask=batch["padding_mask"]).logits

    def dev_logits():
        with torch.no_grad():
            return np.concatenate([
                forward(x_dev, indices).numpy()
                for indices in _eval_batches(len(y_dev))])

    losses, logits = [], [dev_logits()]
    start = time.perf_counter()
    for epoch in range(args.epochs):
        batches = _train_batches(orders[epoch])
        for indices in batches:
            loss = torch.nn.functional.cross_entropy(
                forward(x_train, indices), torch.from_numpy(y_train[indices]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            model.zero_grad()
            losses.append(loss.item())
        logits.append(dev_logits())
        print(f"[stack_parity hf] epoch {epoch + 1}: loss "
              f"{np.mean(losses[-len(batches):]):.4f}", flush=True)
    os.makedirs(args.work, exist_ok=True)
    np.savez(
        inputs, buckets=np.array(BUCKETS), orders=orders, kernel=kernel.numpy(),
        y_train=y_train, y_dev=y_dev, losses=np.array(losses),
        logits=np.stack(logits),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        wall_time_s=time.perf_counter() - start,
        versions=np.array([f"torch {torch.__version__}",
                           f"transformers {transformers.__version__}"]),
        **{f"train_{k}": v for k, v in x_train.items()},
        **{f"dev_{k}": v for k, v in x_dev.items()},
        **{f"train_text_{i}": np.array(train[c])
           for i, c in enumerate(TEXT_COLUMNS[args.task])},
    )
    print(f"[stack_parity hf] wrote {inputs}", flush=True)


def _keras_half(args, inputs):
    import keras
    import keras_hub
    from keras_hub.src.models.bert import bert_backbone

    import beft_keras
    from beft_keras import models

    saved = dict(np.load(inputs))
    if tuple(saved["buckets"]) != beft_keras.data.bucket_lengths(128):
        raise SystemExit("The library's buckets changed: update BUCKETS.")
    x_train = {k[len("train_"):]: v for k, v in saved.items()
               if k.startswith("train_") and "text" not in k}
    x_dev = {k[len("dev_"):]: v for k, v in saved.items()
             if k.startswith("dev_")}
    # The library's tokenization, as its pipeline runs it.
    examples = beft_keras.data.Examples(
        {name: saved[f"train_text_{i}"].astype(object)
         for i, name in enumerate(TEXT_COLUMNS[args.task])},
        saved["y_train"])
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
        args.model)
    ids = beft_keras.data.tokenize(examples, preprocessor, 128)["token_ids"]
    mismatches = int((ids != x_train["token_ids"]).any(axis=1).sum())

    if args.exact_gelu:
        # keras-hub's BertBackbone builds its encoders with this module's
        # `gelu_approximate`; Hugging Face's BERT uses the erf GELU.
        bert_backbone.gelu_approximate = lambda x: keras.activations.gelu(
            x, approximate=False)
    backbone = keras_hub.models.BertBackbone.from_preset(args.model,
                                                         dropout=0.0)
    # What `load_classifier(..., pooling="cls")` loads for a BERT preset,
    # with dropout off.
    classifier = keras_hub.models.BertTextClassifier(
        backbone, num_classes=saved["kernel"].shape[0], preprocessor=None,
        dropout=0.0)
    classifier.output_dense.kernel.assign(saved["kernel"].T)
    classifier.output_dense.bias.assign(np.zeros(saved["kernel"].shape[0]))
    terms = "all" if args.terms == "all" else ["value"]
    trainable = beft_keras.BiasOnlyTrainable(terms).apply(
        classifier).trainable_params
    spec = beft_keras.get_task(args.task)
    learning_rate = authors_code.LEARNING_RATES[args.task]
    models.compile_model(classifier, spec, learning_rate)
    if args.epsilon is not None:
        # Read by every update step; nothing is built yet.
        classifier.optimizer.epsilon = args.epsilon

    def dev_logits():
        return np.concatenate([
            keras.ops.convert_to_numpy(
                classifier.predict_on_batch(_batch(x_dev, indices)))
            for indices in _eval_batches(len(saved["y_dev"]))])

    losses, logits = [], [dev_logits()]
    start = time.perf_counter()
    for epoch, order in enumerate(saved["orders"]):
        batches = _train_batches(order)
        for indices in batches:
            losses.append(float(classifier.train_on_batch(
                _batch(x_train, indices), saved["y_train"][indices])))
        logits.append(dev_logits())
        print(f"[stack_parity keras] epoch {epoch + 1}: loss "
              f"{np.mean(losses[-len(batches):]):.4f}", flush=True)
    wall_time = time.perf_counter() - start

    def curve(all_logits):
        return [beft_keras.compute_metrics(
            spec, saved["y_dev"],
            beft_keras.predictions_from_logits(spec, epoch_logits))[
                spec.metrics[0]] for epoch_logits in all_logits[1:]]

    hf_logits, keras_logits = saved["logits"], np.stack(logits)
    loss_gap = np.abs(saved["losses"] - np.array(losses))
    steps_per_epoch = len(losses) // args.epochs
    row = {
        "task": args.task, "terms": args.terms, "seed": args.seed,
        "epochs": args.epochs, "learning_rate": learning_rate,
        "gelu": "exact" if args.exact_gelu else "tanh",
        "epsilon": classifier.optimizer.epsilon,
        "trainable_params": {"hf": int(saved["trainable"]),
                             "keras": trainable},
        "tokenizer_mismatches": mismatches,
        "metric": spec.metrics[0],
        "curve": {"hf": curve(hf_logits), "keras": curve(keras_logits)},
        "loss_gap": {
            "first_epoch_max": float(loss_gap[:steps_per_epoch].max()),
            "max": float(loss_gap.max()), "mean": float(loss_gap.mean())},
        # Per epoch, 0 = before training.
        "dev_logit_gap_max": np.abs(hf_logits - keras_logits).max(
            axis=(1, 2)).tolist(),
        "dev_prediction_disagreements": (
            hf_logits.argmax(-1) != keras_logits.argmax(-1)).sum(1).tolist(),
        "wall_time_s": {"hf": float(saved["wall_time_s"]),
                        "keras": wall_time},
        "hf_versions": saved["versions"].tolist(),
    }
    path = os.path.join(args.results, NAME + ".json")
    payload = (common.read_json(path) if os.path.exists(path)
               else {"name": NAME, "rows": []})
    fields = ("task", "terms", "seed", "epochs", "gelu", "epsilon")

    def key(r):
        return tuple(r[k] for k in fields)

    payload["rows"] = [r for r in payload["rows"] if key(r) != key(row)]
    payload["rows"].append(row)
    payload["environment"] = common.environment()
    common.write_json(path, payload)
    render(payload, args.docs)
    for side in ("hf", "keras"):
        print(f"[stack_parity] {side:5s} {spec.metrics[0]} per epoch: "
              + " ".join(f"{v:.3f}" for v in row["curve"][side]))
    print(f"[stack_parity] loss gap {row['loss_gap']}; tokenizer "
          f"mismatches {mismatches}; wrote {path}")


def render(payload, output):
    """docs/stack_parity.md from the results."""
    rows = payload["rows"]
    environment = payload["environment"]
    lines = [
        "# The library's CLS head against the authors' stack, with the "
        "random draws shared",
        "",
        "Generated by `python -m benchmarks.stack_parity` (its docstring "
        "says what runs): the same training examples, batch order, "
        "classifier initialisation and padding in both, dropout off; "
        "*hf* is the authors' stack (transformers' `BertForSequence"
        "Classification` and `AdamW`, torch), *keras* the library's "
        "(keras-hub's `BertTextClassifier`, `BiasOnlyTrainable`, "
        "`compile_model`) with keras-hub's GELU and Keras' AdamW epsilon "
        "or with Hugging Face's and transformers' ones. Keras half last "
        f"run {environment['started']} on {environment['machine']['cpu_model']}"
        f" ({environment['machine']['usable_cpus']} CPUs), "
        f"{environment['backend']}.",
        "",
        "| task | terms | seed | epochs | GELU, epsilon (keras) "
        "| trainable hf / keras "
        "| tokenizer mismatches | loss gap: max first epoch / max / mean "
        "| dev logit gap: max before / after epoch 1 / last "
        "| dev predictions that differ, last epoch "
        "| metric, last epoch: hf / keras | best epoch: hf / keras |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap, logit = r["loss_gap"], r["dev_logit_gap_max"]
        hf, keras_curve = r["curve"]["hf"], r["curve"]["keras"]
        lines.append(
            f"| {r['task']} | {r['terms']} | {r['seed']} | {r['epochs']} "
            f"| {r['gelu']}, {r['epsilon']:g} "
            f"| {r['trainable_params']['hf']:,} / "
            f"{r['trainable_params']['keras']:,} "
            f"| {r['tokenizer_mismatches']} "
            f"| {gap['first_epoch_max']:.1e} / {gap['max']:.1e} / "
            f"{gap['mean']:.1e} "
            f"| {logit[0]:.1e} / {logit[1]:.1e} / {logit[-1]:.1e} "
            f"| {r['dev_prediction_disagreements'][-1]} "
            f"| {r['metric']} {hf[-1]:.4f} / {keras_curve[-1]:.4f} "
            f"| {max(hf):.4f} / {max(keras_curve):.4f} |")
    lines += ["", "Per epoch (dev metric):", ""]
    groups = {}
    for r in rows:
        groups.setdefault((r["task"], r["terms"], r["seed"], r["epochs"]),
                          []).append(r)
    for (task, terms, seed, epochs), group in groups.items():
        names = [f"keras ({r['gelu']}, {r['epsilon']:g})" for r in group]
        lines += [f"{task}, {terms}, seed {seed}, {epochs} epochs:", "",
                  "| epoch | hf | " + " | ".join(names) + " |",
                  "|---" * (len(group) + 2) + "|"]
        for epoch in range(epochs):
            lines.append(
                f"| {epoch + 1} | {group[0]['curve']['hf'][epoch]:.4f} | "
                + " | ".join(f"{r['curve']['keras'][epoch]:.4f}"
                             for r in group) + " |")
        lines.append("")
    with open(output, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")


def _encode(tokenizer, columns, args):
    """Token ids, segment ids and padding mask, padded to 128, truncated
    as the authors' code truncates (`longest_first`)."""
    texts = [columns[c] for c in TEXT_COLUMNS[args.task]]
    encoded = tokenizer(*texts, truncation="longest_first", max_length=128,
                        padding="max_length", return_tensors="np")
    return {"token_ids": encoded["input_ids"].astype("int32"),
            "segment_ids": encoded["token_type_ids"].astype("int32"),
            "padding_mask": encoded["attention_mask"].astype(bool)}


def _train_batches(order):
    batch_size = authors_code.BATCH_SIZE
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _eval_batches(size):
    return [np.arange(i, min(i + EVAL_BATCH_SIZE, size))
            for i in range(0, size, EVAL_BATCH_SIZE)]


def _batch(x, indices):
    """Rows `indices` of `x`, trimmed to the bucket of their longest."""
    longest = x["padding_mask"][indices].sum(axis=1).max()
    length = BUCKETS[int(np.searchsorted(BUCKETS, longest))]
    return {k: v[indices, :length] for k, v in x.items()}


if __name__ == "__main__":
    sys.exit(main())
