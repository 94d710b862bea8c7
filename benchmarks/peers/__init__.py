"""beft-keras side by side with Hugging Face PEFT's BEFT tuner (issue #15).

One invocation runs, back to back and one process at a time, on the same
task subset, seed, epochs, batch size (16), learning rate and longest
input (128 tokens), on the CPU:

- `peft`: transformers' `AutoModelForSequenceClassification` on the
  all-MiniLM-L6-v2 folder, `get_peft_model(model, BeftConfig(
  task_type="SEQ_CLS"))` (b_v of every layer plus the classifier), trained
  by `Trainer` with PEFT's defaults for padding and collation (tokenized
  with truncation, padded per batch by `DataCollatorWithPadding`),
  `max_grad_norm=1.0`, no evaluation during training, no checkpoints;
  then `save_model` (the adapter file) and the dev metric. Its own
  process: `python -m benchmarks.peers --peft-worker ...`.
- `tensorflow`, `jax`, `torch`: `beft tune --terms value` in a
  subprocess with `KERAS_BACKEND` set, in up to three variants:
  `default` (the library's own head and learning rate: mean pooling on
  this sentence-transformer, siamese pairs), `matched` (PEFT's learning
  rate and epochs passed explicitly; run only when they differ from the
  library's defaults, otherwise `default` is that run) and `cls`
  (`--pooling cls`, and `--pair-encoding cross` for sentence pairs: the
  same [CLS]-pooler head as the Hugging Face model, at PEFT's learning
  rate and epochs; run only if the CLI has `--pooling`).

Every run is one subprocess; the parent records the wall time of the
whole process (start-up, imports, loading, tokenizing, training,
evaluating, saving), its CPU seconds and peak RSS (`os.wait4`), the dev
metric, the trainable parameters and the size of the saved artifact
(PEFT's `adapter_model.safetensors`, beft-keras' `delta.safetensors`).
Phases: the PEFT worker times its own; for beft-keras, `results.json`'s
`wall_time_s` is the fine-tune and evaluation, the rest of the process is
start-up and preparation, and the per-epoch step times are read from
Keras' progress bar. The library is not modified, nor does it import
transformers or peft: only this script's PEFT worker does.

    python -m benchmarks.peers --quick      # smoke, minutes
    python -m benchmarks.peers --tasks sst2 --seeds 0 --epochs 3
    python -m benchmarks.peers              # the paper's settings, hours
    python -m benchmarks.peers --report     # docs/peers.md
    python -m benchmarks.peers.step_profile # what bounds the speed-up

`benchmarks.peers.step_profile` gives every stack the same batches: the
cost of one step at equal shapes, `torch.profiler`'s ops for the two
PyTorch stacks, and the token positions each stack's batching pads to
(docs/peers_profile.md).

Rows already in the results JSON (same stack, variant, task, seed,
epochs, learning rate and training-set size, finished) are skipped, so a
stopped run resumes where it stopped. Needs the `peers` extra
(`pip install -e ".[peers]"`).
"""

import argparse
import os
import sys

from benchmarks import common
from benchmarks.peers import constants
from benchmarks.peers import peft_worker
from benchmarks.peers import report
from benchmarks.peers import runs

DEFAULT_WORK = os.path.join(common.ROOT, "runs", "peers")
DEFAULT_REPORT = os.path.join(common.ROOT, "docs", "peers.md")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=constants.TASKS,
                        default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument(
        "--epochs", type=int, default=None,
        help="every run's epochs (default: the paper's for each task)",
    )
    parser.add_argument(
        "--learning-rate", type=float, default=None,
        help="PEFT's (and matched/cls) rate (default: the paper's per task)",
    )
    parser.add_argument("--stacks", nargs="+", choices=constants.STACKS,
                        default=list(constants.STACKS))
    parser.add_argument("--variants", nargs="+", choices=constants.VARIANTS,
                        default=list(constants.VARIANTS),
                        help="beft-keras variants to run (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: SST-2, seed 0, 1 epoch, "
                        f"{constants.QUICK_TRAIN} training and "
                        f"{constants.QUICK_DEV} dev examples, every stack; "
                        "results in peers_quick.json")
    parser.add_argument("--data-dir", default=common.DEFAULT_DATA_DIR)
    parser.add_argument("--model", default=None,
                        help="a Hugging Face BERT folder both stacks load "
                        "(default: the all-MiniLM-L6-v2 package)")
    parser.add_argument("--results", default=common.RESULTS)
    parser.add_argument("--work", default=DEFAULT_WORK,
                        help="folder for the runs' outputs and logs")
    parser.add_argument(
        "--omp-wait-policy", default="PASSIVE",
        help="OMP_WAIT_POLICY for every run (default: PASSIVE; 'none' "
        "leaves it unset): with OpenMP's default spinning, torch's two "
        "threads slow down tenfold when another job holds a core",
    )
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which one run is stopped")
    parser.add_argument("--rerun", action="store_true",
                        help="run rows already in the results JSON again")
    parser.add_argument("--report", action="store_true",
                        help="write the markdown report from the JSON only")
    parser.add_argument("--output", default=DEFAULT_REPORT,
                        help="the report's file (with --report)")
    # Internal: the PEFT run, in its own process.
    parser.add_argument("--peft-worker", action="store_true",
                        help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--train-file", help=argparse.SUPPRESS)
    parser.add_argument("--dev-file", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.peft_worker:
        return peft_worker.peft_worker(args)
    if args.report:
        return report.write_report(args.results, args.output)
    return runs.run_plan(args)
