"""Section 6: beft-keras against Hugging Face PEFT's BEFT tuner
(`benchmarks.peers` and `benchmarks.peers.step_profile`, issue #15): the
means over seeds and the targets of each recorded comparison, newest
first, then where the time goes."""

import os

from benchmarks import common
from benchmarks.peers import report as peers_report
from benchmarks.peers import step_profile

TITLE = "## 6. Peers: Hugging Face PEFT's BEFT tuner"
# Each comparison's results folder, relative to `benchmarks/results/`,
# newest first, with its full report in docs/.
COMPARISONS = (
    ("peers_rerun", "peers_rerun.md",
     "after the end of tf.data's autotuning and delta format 3"),
    ("", "peers.md", "before those two changes"),
)


def section(results):
    lines = [
        TITLE, "",
        "The same SST-2 low-regime subset, seed, epochs (16), rate (4e-4), "
        "batch (16) and longest input (128) for PEFT's `BeftConfig` under "
        "`transformers`' `Trainer` and for `beft tune --terms value` on "
        "each backend, one process at a time; the `cls` variant uses PEFT's "
        "own [CLS]-pooler head. Commands, from the repository root:", "",
        "```sh",
        "python -m benchmarks.peers --tasks sst2 --seeds 0 1 2 --variants cls "
        "--results benchmarks/results/peers_rerun",
        "python -m benchmarks.peers --report --results "
        "benchmarks/results/peers_rerun --output docs/peers_rerun.md",
        "python -m benchmarks.peers.step_profile   # docs/peers_profile.md",
        "```", "",
    ]
    found = False
    for folder, doc, when in COMPARISONS:
        path = os.path.join(results, folder, "peers.json")
        if not os.path.exists(path):
            continue
        payload = common.read_json(path)
        if not any(r.get("status") == "ok" for r in payload["rows"]):
            continue
        found = True
        machine = payload["invocations"][-1]["machine"]
        lines += [f"### Run {when}", "",
                  f"On {machine['cpu_model']} (`nproc` = {machine['nproc']}); "
                  f"every run, its phases and load: [`docs/{doc}`]({doc}).", ""]
        # The peers report's summary, its titles a level lower.
        summary = peers_report.summary_section(payload)[2:]
        lines += [("#" + line) if line.startswith("###") else line
                  for line in summary]
    if not found:
        lines += ["**Not run.**", ""]
    path = os.path.join(results, step_profile.NAME + ".json")
    if os.path.exists(path):
        lines += ["### What bounds the speed-up", "",
                  "Every stack on the same batches, from "
                  "[`docs/peers_profile.md`](peers_profile.md), which also "
                  "shows where a PyTorch step's CPU time goes, op by op.", ""]
        lines += step_profile.step_tables(common.read_json(path), "####")
    return lines
