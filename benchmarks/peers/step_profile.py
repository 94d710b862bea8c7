"""What bounds beft-keras' speed against Hugging Face PEFT's BEFT tuner
(issue #15), profiled: the cost of one training step at identical batch
shapes, where a PyTorch step's CPU time goes in each stack, and how many
token positions an epoch pads to under each stack's batching.

`python -m benchmarks.peers` times each stack end to end with its own
batching; this gives every stack the same batches: 16 rows of random token
ids, every position real, at each length of `--lengths`, training b_v and
the classifier with AdamW at the task's paper rate and the gradient norm
clipped at 1.0 (beft-keras: keras-hub's [CLS] classifier, as `beft tune
--pooling cls` builds it; PEFT: `BeftConfig(task_type="SEQ_CLS")` on
`AutoModelForSequenceClassification`). A step is Keras' own
`train_on_batch` for beft-keras, and for PEFT what `Trainer` runs per step
(forward, backward, clipping, `torch.optim.AdamW`, `zero_grad`) without its
bookkeeping. Each stack runs in its own process, one at a time; the two
PyTorch stacks also run `torch.profiler` over a few steps at
`--profile-length`: each ATen op's self CPU time per step.

Token positions are counted on the task's seeded low-regime training
subset, over `--epochs` shuffled epochs: PEFT pads each batch of 16 to its
own longest example (`DataCollatorWithPadding`; lengths from its
tokenizer), beft-keras to its length bucket (the pipeline's own batches).

    python -m benchmarks.peers.step_profile            # ~4 min
    python -m benchmarks.peers.step_profile --render   # docs/peers_profile.md

Needs the `peers` extra (`pip install -e ".[peers]"`).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import common
from benchmarks.peers import constants

NAME = "peers_step_profile"
DEFAULT_REPORT = os.path.join(common.ROOT, "docs", "peers_profile.md")
STACKS = (constants.PEFT,) + common.BACKENDS
TORCH_STACKS = (constants.PEFT, "torch")
WARMUP_STEPS = 3
TOP_OPS = 12
# ATen's matrix products: what both stacks must compute.
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=constants.TASKS, default="sst2")
    parser.add_argument("--stacks", nargs="+", choices=STACKS,
                        default=list(STACKS))
    parser.add_argument("--lengths", nargs="+", type=int,
                        default=[16, 32, 64])
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps per length, after warm-up")
    parser.add_argument("--profile-length", type=int, default=32)
    parser.add_argument("--profile-steps", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=16,
                        help="shuffled epochs the token positions count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=common.DEFAULT_DATA_DIR)
    parser.add_argument("--model", default=None,
                        help="a Hugging Face BERT folder both stacks load "
                        "(default: the all-MiniLM-L6-v2 package)")
    parser.add_argument("--results", default=common.RESULTS)
    parser.add_argument("--output", default=DEFAULT_REPORT)
    parser.add_argument("--render", action="store_true",
                        help="only write the report from the JSON")
    # Internal: one stack's measurement, in its own process.
    parser.add_argument("--worker", choices=STACKS, help=argparse.SUPPRESS)
    parser.add_argument("--train-file", help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == constants.PEFT:
        return _peft_worker(args)
    if args.worker:
        return _keras_worker(args)
    path = os.path.join(args.results, NAME + ".json")
    if not args.render:
        payload = _run_stacks(args, list(sys.argv[1:] if argv is None
                                         else argv))
        common.write_json(path, payload)
    write_report(common.read_json(path), args.output)
    print(f"[step_profile] wrote {args.output}", flush=True)
    return 0


def _run_stacks(args, argv):
    from beft_keras import data as data_lib
    from beft_keras import models
    from benchmarks.peers import runs

    model = os.path.abspath(args.model or models.default_model())
    with tempfile.TemporaryDirectory(prefix="step_profile_") as work:
        files = runs.prepare_data(data_lib, args.task, args.seed,
                                  args.data_dir, work, quick=False)
        rows = [_measure_stack(stack, argv, model, files["train"], work)
                for stack in args.stacks]
    return {
        "name": NAME,
        # Not `command`: docs/benchmarks.md reads the files that have one,
        # and this file has its own report.
        "environment": common.environment(),
        "invocation": "python -m benchmarks.peers.step_profile "
        + " ".join(argv),
        "task": args.task,
        "seed": args.seed,
        "batch_size": constants.BATCH_SIZE,
        "learning_rate": constants.PAPER_SETTINGS[args.task][0],
        "profile_length": args.profile_length,
        "profile_steps": args.profile_steps,
        "steps": args.steps,
        "epochs": args.epochs,
        "model": model,
        "rows": rows,
    }


def _measure_stack(stack, argv, model, train_file, work):
    """One stack's worker, in its own process; its row."""
    output = os.path.join(work, f"{stack}.json")
    command = [sys.executable, "-m", "benchmarks.peers.step_profile",
               *argv, "--model", model, "--train-file", train_file,
               "--worker", stack, "--worker-output", output]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE",
               TF_CPP_MIN_LOG_LEVEL="2")
    if stack == constants.PEFT:
        env.update(USE_TF="0", USE_FLAX="0", USE_TORCH="1",
                   HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   TOKENIZERS_PARALLELISM="false")
    else:
        env["KERAS_BACKEND"] = stack
    load = os.getloadavg()[0]
    print(f"[step_profile] {stack}", flush=True)
    subprocess.run(command, cwd=common.ROOT, env=env, check=True)
    return dict(common.read_json(output), stack=stack,
                load_average_before=load)


def _timed_steps(step, batches, steps):
    """Per length: the median wall and CPU milliseconds of a step after
    `WARMUP_STEPS` (which compile, where a backend compiles)."""
    timings = {}
    for length, batch in batches.items():
        for _ in range(WARMUP_STEPS):
            step(batch)
        walls, cpus = [], []
        for _ in range(steps):
            wall, cpu = time.perf_counter(), time.process_time()
            step(batch)
            walls.append(1000 * (time.perf_counter() - wall))
            cpus.append(1000 * (time.process_time() - cpu))
        timings[str(length)] = {"wall_ms": statistics.median(walls),
                                "cpu_ms": statistics.median(cpus)}
    return timings


def _torch_profile(step, batch, steps):
    """Each ATen op's self CPU milliseconds and calls per step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step(batch)
    ops = [
        {"op": event.key,
         "self_cpu_ms": event.self_cpu_time_total / 1000 / steps,
         "calls": event.count / steps}
        for event in profiler.key_averages()
        if event.key.startswith("aten::") and event.self_cpu_time_total > 0
    ]
    return sorted(ops, key=lambda op: -op["self_cpu_ms"])


def _keras_worker(args):
    import keras
    import numpy as np

    from beft_keras import data as data_lib
    from beft_keras import models
    from beft_keras import pipeline
    from beft_keras import tuning

    spec = data_lib.get_task(args.task)
    run = pipeline.prepare(
        args.task, data_dir=args.data_dir, model=args.model, seed=args.seed,
        batch_size=constants.BATCH_SIZE,
        sequence_length=constants.MAX_LENGTH, pooling="cls",
        # The Hugging Face model reads a pair together.
        pair_encoding="cross" if len(spec.features) == 2 else None,
    )
    positions = steps = real_tokens = 0
    for _ in range(args.epochs):
        for features, _ in run.train_batches.as_numpy_iterator():
            positions += features["padding_mask"].size
            real_tokens += int(features["padding_mask"].sum())
            steps += 1
    model = run.classifier
    tuning.make_trainable(model, "value")
    models.compile_model(model, run.spec,
                         constants.PAPER_SETTINGS[args.task][0])
    features_spec, _ = run.train_batches.element_spec
    vocabulary = model.backbone.vocabulary_size
    rng = np.random.default_rng(args.seed)

    def batch(length):
        shape = (constants.BATCH_SIZE, length)
        x = {name: np.ones(shape, s.dtype.as_numpy_dtype)
             for name, s in features_spec.items()}
        x["token_ids"] = rng.integers(1000, vocabulary, shape).astype(
            features_spec["token_ids"].dtype.as_numpy_dtype)
        if "segment_ids" in x:
            x["segment_ids"][:] = 0
        return x, _labels(spec.is_regression, spec.num_classes, rng)

    batches = {length: batch(length) for length in args.lengths}
    profile_batch = batch(args.profile_length)

    def step(xy):
        model.train_on_batch(*xy)

    result = {
        "backend": keras.backend.backend(),
        "head": models.head_name(model),
        "steps_per_length": _timed_steps(step, batches, args.steps),
        "epoch_positions": positions / args.epochs,
        "epoch_steps": steps / args.epochs,
        "real_tokens": real_tokens // args.epochs,
    }
    if keras.backend.backend() == "torch":
        step(profile_batch)
        result["profile"] = _torch_profile(step, profile_batch,
                                           args.profile_steps)
    common.write_json(args.worker_output, result)
    return 0


def _labels(is_regression, num_classes, rng):
    if is_regression:
        return rng.uniform(0, 5, constants.BATCH_SIZE).astype("float32")
    return rng.integers(0, num_classes, constants.BATCH_SIZE)


def _peft_worker(args):
    import numpy as np
    import torch
    from peft import BeftConfig
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification
    from transformers import AutoTokenizer

    train = common.read_json(args.train_file)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    texts = [train["features"][name] for name in train["features"]]
    lengths = [len(ids) for ids in tokenizer(
        *texts, truncation=True, max_length=constants.MAX_LENGTH
    )["input_ids"]]
    positions, steps = per_batch_padding(
        lengths, constants.BATCH_SIZE, args.epochs, args.seed
    )
    torch.manual_seed(args.seed)
    num_labels = 1 if train["is_regression"] else train["num_classes"]
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=num_labels
    )
    model = get_peft_model(model, BeftConfig(task_type="SEQ_CLS"))
    model.train()
    # Trainer's optimizer: torch's AdamW, no weight decay.
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=constants.PAPER_SETTINGS[args.task][0], weight_decay=0.0,
    )
    rng = np.random.default_rng(args.seed)
    vocabulary = model.config.vocab_size

    def batch(length):
        shape = (constants.BATCH_SIZE, length)
        return {
            "input_ids": torch.tensor(rng.integers(1000, vocabulary, shape)),
            "attention_mask": torch.ones(shape, dtype=torch.long),
            "labels": torch.tensor(_labels(
                train["is_regression"], train["num_classes"], rng)),
        }

    def step(inputs):
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        loss.item()

    batches = {length: batch(length) for length in args.lengths}
    profile_batch = batch(args.profile_length)
    result = {
        "backend": "torch",
        "head": "cls (BertForSequenceClassification pooler)",
        "steps_per_length": _timed_steps(step, batches, args.steps),
        "epoch_positions": positions,
        "epoch_steps": steps,
        "real_tokens": int(sum(lengths)),
    }
    step(profile_batch)
    result["profile"] = _torch_profile(step, profile_batch,
                                       args.profile_steps)
    common.write_json(args.worker_output, result)
    return 0


def per_batch_padding(lengths, batch_size, epochs, seed):
    """Token positions and steps of an epoch (means over `epochs` seeded
    shuffles) when every batch is padded to its own longest example."""
    import numpy as np

    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    positions = steps = 0
    for _ in range(epochs):
        order = rng.permutation(len(lengths))
        for start in range(0, len(order), batch_size):
            members = lengths[order[start : start + batch_size]]
            positions += int(members.max()) * len(members)
            steps += 1
    return positions / epochs, steps / epochs


def write_report(payload, output):
    rows = {row["stack"]: row for row in payload["rows"]}
    env = payload["environment"]
    machine = env["machine"]
    lines = [
        "# Where the time goes: beft-keras and PEFT's BEFT tuner, step by "
        "step",
        "",
        f"Generated by `python -m benchmarks.peers.step_profile --render` "
        f"from `benchmarks/results/{NAME}.json`; every figure is read from "
        "it. What runs is in the module's docstring: identical batches of "
        f"{payload['batch_size']} rows of random token ids for every stack, "
        "b_v and the classifier trained at the "
        f"{payload['task']} paper rate ({payload['learning_rate']:g}), "
        "each stack in its own process, one at a time.",
        "",
        f"- Machine: {machine['cpu_model']}, `nproc` = {machine['nproc']}, "
        f"RAM {machine['memory_gib']} GiB, no GPU; "
        f"{machine['platform']}.",
        "- Versions: " + ", ".join(
            f"{k} {v}" for k, v in env["versions"].items() if v) + ".",
        f"- Command: `{payload['invocation'].strip()}`, started "
        f"{env['started']}; 1-minute load average before each stack: "
        + ", ".join(f"{s} {r['load_average_before']:.2f}"
                    for s, r in rows.items()) + ".",
        "",
    ]
    lines += step_tables(payload, "##")
    profiled = {s: rows[s] for s in TORCH_STACKS if s in rows}
    if profiled:
        lines += _profile_section(payload, profiled)
    with open(output, "w") as f:
        f.write("\n".join(lines) + "\n")


def step_tables(payload, heading):
    """The step at the same shape and the token positions per epoch, as
    markdown lines under `heading`-level titles."""
    rows = {row["stack"]: row for row in payload["rows"]}
    peft = rows.get(constants.PEFT)
    lines = [
        f"{heading} One step at the same shape",
        "",
        "Median milliseconds of a training step (wall, and the process's "
        f"CPU time) over {payload['steps']} steps after "
        f"{WARMUP_STEPS} of warm-up; **vs PEFT** is PEFT's wall time over "
        "the stack's (above 1: beft-keras is faster).",
        "",
        "| length | " + " | ".join(
            f"{s} wall ms | {s} CPU ms" + (" | vs PEFT" if s != "peft" else "")
            for s in rows) + " |",
        "|---|" + "".join(
            "---|---|" + ("---|" if s != "peft" else "") for s in rows),
    ]
    lengths = sorted({int(length) for r in rows.values()
                      for length in r["steps_per_length"]})
    for length in lengths:
        cells = []
        for stack, row in rows.items():
            t = row["steps_per_length"].get(str(length))
            cells += ["-", "-"] if t is None else [
                f"{t['wall_ms']:.1f}", f"{t['cpu_ms']:.1f}"]
            if stack != constants.PEFT:
                base = peft and peft["steps_per_length"].get(str(length))
                cells.append(f"{base['wall_ms'] / t['wall_ms']:.2f}x"
                             if base and t else "-")
        lines.append(f"| {length} | " + " | ".join(cells) + " |")
    lines += ["", f"{heading} Token positions an epoch pads to", "",
              f"{payload['task']}, seeded low-regime subset (seed "
              f"{payload['seed']}), mean over {payload['epochs']} shuffled "
              "epochs; **fewer than PEFT** is PEFT's positions over the "
              "stack's.", "",
              "| stack | batching | steps | token positions | real tokens "
              "| real share | fewer than PEFT |",
              "|---|---|---|---|---|---|---|"]
    for stack, row in rows.items():
        batching = ("each batch to its longest" if stack == constants.PEFT
                    else "length buckets")
        ratio = (f"{peft['epoch_positions'] / row['epoch_positions']:.2f}x"
                 if peft and stack != constants.PEFT else "")
        lines.append(
            f"| {stack} | {batching} | {row['epoch_steps']:.0f} | "
            f"{row['epoch_positions']:,.0f} | {row['real_tokens']:,} | "
            f"{row['real_tokens'] / row['epoch_positions']:.2f} | {ratio} |"
        )
    if peft:
        bound = peft["epoch_positions"] / peft["real_tokens"]
        lines += ["", f"No padding at all would leave the "
                  f"{peft['real_tokens']:,} real tokens, {bound:.2f}x fewer "
                  "positions than PEFT's: at PEFT's cost per position, no "
                  "batching can make an epoch's steps more than "
                  f"{bound:.2f}x faster than PEFT's."]
    return lines + [""]


def _profile_section(payload, profiled):
    names = {s: ("PEFT" if s == constants.PEFT else "beft-keras torch")
             for s in profiled}
    ops = {s: {op["op"]: op for op in r["profile"]}
           for s, r in profiled.items()}
    top = []
    for stack_ops in ops.values():
        for op in list(stack_ops)[:TOP_OPS]:
            if op not in top:
                top.append(op)
    lines = ["## Where a PyTorch step's CPU time goes", "",
             f"`torch.profiler` over {payload['profile_steps']} steps at "
             f"length {payload['profile_length']}: self CPU milliseconds "
             "and calls per step of each ATen op (the top "
             f"{TOP_OPS} of each stack).", "",
             "| op | " + " | ".join(
                 f"{names[s]} ms | {names[s]} calls" for s in profiled)
             + " |", "|---|" + "---|---|" * len(profiled)]
    for op in top:
        cells = []
        for stack in profiled:
            entry = ops[stack].get(op)
            cells += (["-", "-"] if entry is None else
                      [f"{entry['self_cpu_ms']:.1f}", f"{entry['calls']:g}"])
        lines.append(f"| `{op}` | " + " | ".join(cells) + " |")
    totals = []
    for stack in profiled:
        total = sum(op["self_cpu_ms"] for op in ops[stack].values())
        matmul = sum(ops[stack][op]["self_cpu_ms"] for op in MATMUL_OPS
                     if op in ops[stack])
        calls = sum(ops[stack][op]["calls"] for op in MATMUL_OPS
                    if op in ops[stack])
        totals.append((stack, total, matmul, calls))
    lines += ["", "| stack | ATen self CPU ms per step | matrix products "
              "(mm, addmm, bmm) ms | their calls | everything else ms |",
              "|---|---|---|---|---|"]
    for stack, total, matmul, calls in totals:
        lines.append(f"| {names[stack]} | {total:.1f} | {matmul:.1f} | "
                     f"{calls:g} | {total - matmul:.1f} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
