"""Section 5: OPT memory, b_v-only vs inference and full fine-tuning
(`benchmarks.decoder_memory`, issue 8)."""

import os

from benchmarks import common
from benchmarks import decoder_memory

TITLE = "## 5. Decoders: OPT memory, b_v-only vs inference and full"


def section(results):
    path = os.path.join(results, decoder_memory.NAME + ".json")
    if not os.path.exists(path):
        return [TITLE, "", "**Not run.**", ""]
    payload = common.read_json(path)
    return decoder_memory.markdown(payload, TITLE).splitlines() + [
        "",
        "Random weights of the real shapes: memory and step time do not "
        "depend on the weights' values. Everything about accuracy needs "
        "the real OPT weights: the paper's OPT results (b_v on prompted "
        "SST-2, RTE, CB, BoolQ, SQuAD, ...) are not reproduced here; the "
        "prompted pipeline is tested on tiny random OPT models only.",
        "",
    ]
