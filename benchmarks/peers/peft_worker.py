"""The PEFT run, in its own process (`python -m benchmarks.peers
--peft-worker ...`): transformers' `Trainer` on PEFT's BEFT tuner, timed
phase by phase. The only code that imports transformers and peft, and
only inside its functions: `benchmarks.peers` imports this module for
every command, and only the worker's process may load them."""

import json
import os
import sys
import time

from benchmarks import common
from benchmarks.peers import constants
from benchmarks.peers import runs

EVAL_BATCH_SIZE = 64


def peft_worker(args):
    start = time.perf_counter()
    phases = {}
    import numpy as np
    import peft
    import torch
    import transformers
    from peft import BeftConfig
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification
    from transformers import AutoTokenizer
    from transformers import DataCollatorWithPadding
    from transformers import Trainer
    from transformers import TrainerCallback
    from transformers import TrainingArguments

    phases["import_s"] = time.perf_counter() - start
    t = time.perf_counter()
    train = common.read_json(args.train_file)
    dev = common.read_json(args.dev_file)
    phases["read_data_s"] = time.perf_counter() - t

    t = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def encode(examples):
        texts = [examples["features"][n] for n in examples["features"]]
        encoded = tokenizer(*texts, truncation=True,
                            max_length=constants.MAX_LENGTH)
        return [
            {**{k: v[i] for k, v in encoded.items()},
             "labels": examples["labels"][i]}
            for i in range(len(examples["labels"]))
        ]

    train_features, dev_features = encode(train), encode(dev)
    phases["tokenize_s"] = time.perf_counter() - t

    t = time.perf_counter()
    transformers.set_seed(args.seed)
    num_labels = 1 if train["is_regression"] else train["num_classes"]
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=num_labels
    )
    model = get_peft_model(model, BeftConfig(task_type="SEQ_CLS"))
    trainable, total = model.get_nb_trainable_parameters()
    phases["load_model_s"] = time.perf_counter() - t

    class StepTimes(TrainerCallback):
        """When each optimizer step ends, per epoch."""

        def __init__(self):
            self.epochs = []

        def on_epoch_begin(self, *unused, **kwargs):
            self.epochs.append([time.perf_counter()])

        def on_step_end(self, *unused, **kwargs):
            self.epochs[-1].append(time.perf_counter())

    step_times = StepTimes()
    training_args = TrainingArguments(
        output_dir=os.path.join(args.run_dir, "trainer"),
        per_device_train_batch_size=constants.BATCH_SIZE,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        max_grad_norm=1.0,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="epoch",
        report_to="none",
        seed=args.seed,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_features,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[step_times],
    )
    t = time.perf_counter()
    train_output = trainer.train()
    phases["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    prediction = trainer.predict(dev_features)
    logits = np.asarray(prediction.predictions)
    labels = np.asarray(dev["labels"])
    metrics = _peft_metrics(logits, labels, train["is_regression"])
    phases["evaluate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    adapter_dir = os.path.join(args.run_dir, "adapter")
    trainer.save_model(adapter_dir)
    adapter = os.path.join(adapter_dir, "adapter_model.safetensors")
    phases["save_s"] = time.perf_counter() - t
    phases["worker_total_s"] = time.perf_counter() - start

    epochs = []
    for times in step_times.epochs:
        steps = len(times) - 1
        if steps < 1:
            continue
        # As Keras' progress bar: the epoch's first step left out.
        step_s = ((times[-1] - times[1]) / (steps - 1) if steps > 1
                  else times[1] - times[0])
        epochs.append({"steps": steps, "seconds": times[-1] - times[0],
                       "step_s": step_s})
    main_metric = next(iter(metrics))
    result = {
        "metrics": metrics,
        "main_metric": main_metric,
        "main_metric_value": metrics[main_metric],
        "trainable_params": int(trainable),
        "trainable_percent": 100.0 * trainable / total,
        "head": "cls (BertForSequenceClassification pooler)",
        "resolved_learning_rate": args.learning_rate,
        "resolved_epochs": args.epochs,
        "artifact": "adapter_model.safetensors",
        "artifact_bytes": os.path.getsize(adapter),
        # `PeftModel.from_pretrained` needs it beside the adapter file; a
        # beft-keras delta carries its own description.
        "config_bytes": os.path.getsize(
            os.path.join(adapter_dir, "adapter_config.json")
        ),
        "adapter_files": sorted(os.listdir(adapter_dir)),
        "phases": phases,
        "steps": int(train_output.global_step),
        "epoch_step_s": [e["step_s"] for e in epochs],
        "steady_step_s": runs.steady(epochs),
        "train_loss": float(train_output.training_loss),
        "torch_threads": torch.get_num_threads(),
        "trainer": {
            "lr_scheduler_type": str(training_args.lr_scheduler_type),
            "weight_decay": training_args.weight_decay,
            "warmup_steps": training_args.warmup_steps,
            "adam_epsilon": training_args.adam_epsilon,
            "optim": str(training_args.optim),
        },
        "peft_version": peft.__version__,
        "transformers_version": transformers.__version__,
        "imported_tensorflow": "tensorflow" in sys.modules,
        "imported_keras": "keras" in sys.modules,
    }
    common.write_json(os.path.join(args.run_dir, "peft_result.json"), result)
    print(json.dumps({k: result[k] for k in
                      ("metrics", "trainable_params", "artifact_bytes",
                       "phases")}, indent=1, default=str))
    return 0


def _peft_metrics(logits, labels, is_regression):
    """GLUE's metrics, as beft-keras computes them: accuracy; Pearson and
    Spearman for STS-B."""
    import numpy as np

    if is_regression:
        import scipy.stats

        scores = logits.reshape(-1)
        return {
            "pearson": float(scipy.stats.pearsonr(labels, scores).statistic),
            "spearman": float(
                scipy.stats.spearmanr(labels, scores).statistic),
        }
    return {"accuracy": float(np.mean(np.argmax(logits, -1) == labels))}
