"""BEFT on the distribution engines Keras ships: `keras.distribution` on
JAX (data and model parallel), `tf.distribute.MirroredStrategy` on
TensorFlow (data parallel). Nothing here distributes anything itself: it
picks the engine for the current backend, and says plainly when there is
none.

Keras imports are deferred to the functions, so that `check_supported` can
run before Keras is imported (which fixes the backend).
"""

import contextlib
import functools
import json
import os
import sys

DATA = "data"
MODEL = "model"
KINDS = (DATA, MODEL)
BACKENDS = ("tensorflow", "jax", "torch")
# The axis names of `model_parallel`'s device mesh: keras-hub's
# `get_layout_map` defaults.
BATCH_AXIS = "batch"
MODEL_AXIS = "model"
# The layout-map key that replicates every bias (see `model_parallel`).
BIAS_PATTERN = ".*bias"
# What each backend supports, in one line each: the error messages and
# `docs/distributed.md` say the same.
_TORCH = (
    "Keras 3 has no distribution API for the torch backend "
    "(`keras.distribution` is implemented for JAX only and `fit` runs on "
    "one device under torch): use KERAS_BACKEND=jax for data or model "
    "parallel, or KERAS_BACKEND=tensorflow for data parallel"
)
_TENSORFLOW_MODEL = (
    "Model parallel BEFT needs KERAS_BACKEND=jax: "
    "`keras.distribution.ModelParallel` is implemented for JAX only; on "
    "TensorFlow, Keras 3 distributes data parallel, through "
    "`tf.distribute.MirroredStrategy` (`--distribute data`)"
)


def check_supported(kind, backend=None):
    """Refuse, in one line, a distribution the backend has no engine for.

    It needs no Keras import, so a command line can check its arguments
    before Keras fixes the backend.

    Args:
        kind: str. `"data"` (data parallel) or `"model"` (model parallel,
            sharded weights).
        backend: str or None. `"jax"`, `"tensorflow"` or `"torch"`.
            Defaults to `None`: `KERAS_BACKEND`, else Keras' configured
            backend.

    Raises:
        ValueError: if `kind` or `backend` is unknown, or the backend has
            no Keras engine for `kind`: model parallel on TensorFlow, and
            anything on torch.

    Example:
    ```python
    beft_keras.distribution.check_supported("data", "jax")  # fine
    beft_keras.distribution.check_supported("model", "tensorflow")
    # ValueError: Model parallel BEFT needs KERAS_BACKEND=jax: ...
    ```
    """
    if kind not in KINDS:
        raise ValueError(
            f"`kind` must be one of {list(KINDS)}. Received: kind={kind!r}"
        )
    # Not `backend or ...`: an empty string is a bad value, not the default.
    backend = _backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(
            f"Distributed BEFT runs on the {', '.join(BACKENDS)} backends. "
            f"Received: backend={backend!r}"
        )
    if backend == "torch":
        raise ValueError(f"{_TORCH}.")
    if backend == "tensorflow" and kind == MODEL:
        raise ValueError(f"{_TENSORFLOW_MODEL}.")


def data_parallel(devices=None):
    """A data-parallel distribution for the current backend.

    Every device holds all the weights and a slice of each batch; the
    gradients of the trainable variables are all-reduced after each step.
    With BEFT those are the value biases and the head, a few KB, whatever
    the size of the model. On JAX it is `keras.distribution.DataParallel`,
    on TensorFlow `tf.distribute.MirroredStrategy`; both are used the same
    way, through `scope()`: build (or load) and compile the model inside
    it, then train it as usual.

    Args:
        devices: list or None. The devices to replicate over: on JAX
            device strings such as `"cpu:0"` or `jax.Device`s, on
            TensorFlow device names such as `"/gpu:0"`. Defaults to `None`:
            every accelerator, else every CPU device
            (`keras.distribution.list_devices()`; on TensorFlow, the
            logical GPUs, else the logical CPUs).

    Returns:
        A `keras.distribution.DataParallel` (JAX) or a
        `tf.distribute.MirroredStrategy` (TensorFlow; the same one for the
        same devices, within a process: two strategies on the same
        devices break each other's all-reduces).

    Raises:
        ValueError: on the torch backend, which Keras does not distribute;
            if `devices` is not a non-empty list, names a device twice or
            a device this process does not have.

    Example:
    ```python
    distribution = beft_keras.distribution.data_parallel()
    with distribution.scope():
        classifier = keras_hub.models.BertTextClassifier.from_preset(
            "bert_base_en_uncased", num_classes=2
        )
        probe = beft_keras.BeftProbe(data=train_ds)
        beft_keras.BiasOnlyTrainable("all").apply(classifier)
        classifier.compile(optimizer=keras.optimizers.AdamW(1e-3))
        classifier.fit(train_ds, epochs=1, callbacks=[probe])
        probe.apply_selection()  # b_v and the head, still distributed
        classifier.fit(train_ds, epochs=5)
    ```
    """
    check_supported(DATA)
    _check_devices(devices)
    import keras

    if keras.backend.backend() == "jax":
        if devices is None:
            devices = keras.distribution.list_devices()
        return keras.distribution.DataParallel(devices=list(devices))
    import tensorflow as tf

    if devices is None:
        devices = [
            device.name
            for device in (
                tf.config.list_logical_devices("GPU")
                or tf.config.list_logical_devices("CPU")
            )
        ]
    # One strategy per set of devices and process: the all-reduces of two
    # `MirroredStrategy` objects on the same devices share collective keys,
    # and the second one's first step fails ("Shape mismatch in the
    # collective instance 100"; tensorflow/tensorflow#62790). Canonical
    # names, so that "/gpu:0" and "/device:GPU:0" share one.
    return _mirrored_strategy(tuple(_device_name(d) for d in devices))


def _check_devices(devices):
    # A str is a sequence too: "cpu:0" would be five devices named by its
    # characters; an empty list is no devices, not "every device".
    if devices is not None and (
        isinstance(devices, (str, bytes))
        or not isinstance(devices, (list, tuple))
        or not devices
    ):
        raise ValueError(
            "`devices` must be None (every device) or a non-empty list of "
            f"devices. Received: devices={devices!r}"
        )
    if devices is None:
        return
    # Checked here: the engines fail only later, and unclearly (JAX at the
    # first variable, `AssertionError`; TensorFlow accepts a GPU it lacks).
    names = [_device_name(device) for device in devices]
    known = _device_names()
    for device, name in zip(devices, names):
        if name not in known:
            raise ValueError(
                f"Unknown device {device!r}; this process has "
                f"{sorted(known)}. Received: devices={devices!r}"
            )
    if len(set(names)) < len(names):
        raise ValueError(
            "`devices` names a device more than once. Received: "
            f"devices={devices!r}"
        )


def _device_name(device):
    """A device's canonical name on the current backend: `"cpu:0"` on JAX
    (as Keras reads a name, `"cpu"` is `"cpu:0"`), `"/device:CPU:0"` on
    TensorFlow; `None` for what names no device."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        if isinstance(device, jax.Device):
            return f"{device.platform}:{device.id}"
        name = str(device)
        return name if ":" in name else f"{name}:0"
    import tensorflow as tf

    try:
        spec = tf.DeviceSpec.from_string(str(device))
    except ValueError:
        return None
    if spec.device_type is None or spec.device_index is None:
        return None
    return f"/device:{spec.device_type}:{spec.device_index}"


def _device_names():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return {
            f"{device.platform}:{device.id}"
            for device in jax.devices() + jax.devices("cpu")
        }
    import tensorflow as tf

    return {
        _device_name(device.name)
        for device in tf.config.list_logical_devices()
    }


@functools.cache
def _mirrored_strategy(devices):
    """The process's one `MirroredStrategy` on `devices` (see above): a
    memoised constructor, not state the library passes around."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(devices=list(devices))


def model_parallel(backbone_or_preset, model_devices=None, devices=None):
    """A model-parallel distribution from keras-hub's layout for a backbone.

    The weights are sharded over a `(batch, model)` device mesh as the
    backbone's own `get_layout_map(device_mesh)` says (keras-hub ships one
    for Llama, Llama 3, Gemma, Qwen and the Qwen MoE backbones). The
    layout map gets one more entry, `".*bias"`, replicated on every
    device: the biases that BEFT adds (`beft_keras.add_biases`) or trains
    are a few KB, and each device needs all of them; keras-hub's maps do
    not mention biases, so this only makes the default explicit. JAX only:
    `keras.distribution.ModelParallel` has no TensorFlow or torch
    implementation.

    Build (or load) the model, add its biases and compile it inside
    `scope()`, so that every variable is created with its layout.

    Args:
        backbone_or_preset: a keras-hub backbone class (`LlamaBackbone`),
            a backbone or task model (its backbone's class is used), or a
            preset: a built-in preset name (`"llama3_8b_en"`) or a local
            preset folder in keras-hub's format. Nothing is downloaded.
        model_devices: int or None. How many devices each weight is split
            over (the mesh's `model` axis); the remaining factor of the
            device count replicates the sharded model data-parallel (the
            `batch` axis). Defaults to `None`: every device.
        devices: list or None. The devices, as for `data_parallel`.
            Defaults to `keras.distribution.list_devices()`.

    Returns:
        A `keras.distribution.ModelParallel`.

    Raises:
        ValueError: on TensorFlow or torch; if the backbone's class ships
            no layout map, the preset's class cannot be told without
            loading it, `devices` is not as `data_parallel` takes it, or
            `model_devices` does not divide the number of devices.

    Example:
    ```python
    distribution = beft_keras.distribution.model_parallel(
        "llama3_8b_en", model_devices=8
    )
    with distribution.scope():
        causal_lm = keras_hub.models.Llama3CausalLM.from_preset("llama3_8b_en")
        beft_keras.add_biases(causal_lm, "value")  # zeros, replicated
        beft_keras.BiasOnlyTrainable("value").apply(causal_lm)
        causal_lm.compile(optimizer=keras.optimizers.AdamW(1e-3))
        causal_lm.fit(train_ds, epochs=5)
    beft_keras.save_delta(causal_lm, "task.safetensors", base="llama3_8b_en")
    ```
    """
    check_supported(MODEL)
    import keras

    backbone_class = backbone_class_of(backbone_or_preset)
    get_layout_map = getattr(backbone_class, "get_layout_map", None)
    if get_layout_map is None:
        raise ValueError(
            f"keras-hub ships no layout map for {backbone_class.__name__}, "
            "so it cannot be sharded by `model_parallel`; the backbones "
            f"that have one: {', '.join(layout_map_backbones())}. Use "
            "`data_parallel()`, or a `keras.distribution.ModelParallel` "
            "with your own `LayoutMap`."
        )
    _check_devices(devices)
    devices = list(
        keras.distribution.list_devices() if devices is None else devices
    )
    model_devices = len(devices) if model_devices is None else model_devices
    if (
        not isinstance(model_devices, int)
        or isinstance(model_devices, bool)
        or model_devices < 1
        or len(devices) % model_devices
    ):
        raise ValueError(
            "`model_devices` must be a positive int dividing the number of "
            f"devices, {len(devices)}. Received: model_devices={model_devices!r}"
        )
    mesh = keras.distribution.DeviceMesh(
        shape=(len(devices) // model_devices, model_devices),
        axis_names=(BATCH_AXIS, MODEL_AXIS),
        devices=devices,
    )
    layout_map = get_layout_map(
        mesh,
        model_parallel_dim_name=MODEL_AXIS,
        data_parallel_dim_name=BATCH_AXIS,
    )
    # No axis at all: replicated, whatever the bias's rank.
    layout_map[BIAS_PATTERN] = ()
    return keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name=BATCH_AXIS
    )


def get_distribution(kind, model=None, model_devices=None, devices=None):
    """`data_parallel` or `model_parallel` by name, for a command line's
    `--distribute data|model`.

    Args:
        kind: str. `"data"` or `"model"`.
        model: the backbone or preset `model_parallel` needs; ignored for
            `"data"`. Defaults to `None`.
        model_devices: int or None. As for `model_parallel`.
        devices: list or None. As for `data_parallel`.

    Returns:
        The distribution, used through its `scope()`.

    Raises:
        ValueError: as `check_supported`, `data_parallel` and
            `model_parallel` raise; if `kind` is `"model"` and `model` is
            `None`.

    Example:
    ```python
    distribution = beft_keras.distribution.get_distribution(
        "model", "llama3_8b_en"
    )
    with distribution.scope():
        ...  # load, add biases, compile, fit
    ```
    """
    check_supported(kind)
    if kind == DATA:
        return data_parallel(devices=devices)
    if model is None:
        raise ValueError(
            "Model parallel needs the backbone or preset to shard: its "
            "class holds keras-hub's layout map. Received: model=None"
        )
    return model_parallel(model, model_devices=model_devices, devices=devices)


def num_replicas(distribution):
    """How many copies of the model a distribution trains in step: the
    devices of a `DataParallel` or `MirroredStrategy`, the `batch` axis of
    a `ModelParallel` mesh, 1 for `None`.

    Raises:
        TypeError: if `distribution` is not a distribution or `None`.

    Example:
    ```python
    beft_keras.distribution.num_replicas(
        beft_keras.distribution.data_parallel()
    )  # 8 on an 8-GPU host
    ```
    """
    if distribution is None:
        return 1
    replicas = getattr(distribution, "num_replicas_in_sync", None)
    if replicas is not None:
        return int(replicas)
    _check_distribution(distribution)
    return int(distribution.num_model_replicas)


def batch_multiple(distribution):
    """The number every batch's size must be a multiple of under
    `distribution`, the last batch of an epoch included.

    JAX shards each batch evenly over the mesh's data axis, and
    `keras.distribution` refuses a remainder (`IndivisibleError`): drop or
    pad a last partial batch. TensorFlow's `MirroredStrategy` splits an
    uneven batch itself, so any size does (1); so does no distribution.

    Raises:
        TypeError: if `distribution` is not a distribution or `None`.

    Example:
    ```python
    distribution = beft_keras.distribution.data_parallel()
    multiple = beft_keras.distribution.batch_multiple(distribution)
    train_ds = train_ds.batch(4 * multiple, drop_remainder=True)
    ```
    """
    if distribution is None or hasattr(distribution, "num_replicas_in_sync"):
        return 1
    _check_distribution(distribution)
    mesh = distribution.device_mesh
    return int(mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)])


def _check_distribution(distribution):
    # A `--distribute` string or a `scope()` passed by mistake would fail on
    # a missing attribute. Keras exports no `Distribution` base class: every
    # one has a device mesh.
    if not hasattr(distribution, "device_mesh"):
        raise TypeError(
            "Expected a distribution from `data_parallel` or "
            "`model_parallel` (a `keras.distribution` one or a "
            f"`tf.distribute.Strategy`), or None. Received: {distribution!r}"
        )


def simulate_devices(count):
    """Split this host's CPU into `count` devices, to run and test
    distributed code on one machine.

    Call it before the backend starts: on JAX it sets
    `--xla_force_host_platform_device_count` in `XLA_FLAGS`, read when JAX
    first lists its devices; on TensorFlow it configures `count` logical
    CPU devices, which TensorFlow allows only before it initialises.

    Args:
        count: int. The number of CPU devices, at least 1.

    Returns:
        The device list: `keras.distribution.list_devices("cpu")` on JAX,
        the logical CPU device names on TensorFlow.

    Raises:
        ValueError: on torch, which Keras does not distribute.
        RuntimeError: if the backend has already started with another
            number of devices.

    Example:
    ```python
    import os
    os.environ["KERAS_BACKEND"] = "jax"
    import beft_keras.distribution
    beft_keras.distribution.simulate_devices(4)  # before any JAX work
    distribution = beft_keras.distribution.data_parallel()
    ```
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"`count` must be an int >= 1. Received: {count!r}")
    backend = _backend()
    check_supported(DATA, backend)
    if backend == "jax":
        flag = "--xla_force_host_platform_device_count"
        flags = [
            f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith(flag)
        ]
        os.environ["XLA_FLAGS"] = " ".join(flags + [f"{flag}={count}"])
        import jax

        devices = jax.devices("cpu")
        if len(devices) != count:
            raise RuntimeError(
                f"JAX started with {len(devices)} CPU device(s) before "
                f"`simulate_devices({count})`: call it before JAX is first "
                f"used, or set XLA_FLAGS={flag}={count} before Python starts."
            )
        return [f"cpu:{device.id}" for device in devices]
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        logical = tf.config.list_logical_devices("CPU")
        if len(logical) != count:
            raise RuntimeError(
                f"TensorFlow initialised with {len(logical)} logical CPU "
                f"device(s) before `simulate_devices({count})`: call it "
                "before TensorFlow runs anything."
            ) from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def boolean_inputs_as_int(data):
    """Boolean input tensors (keras-hub's padding masks) cast to `int32`,
    for `fit`, `evaluate` and `predict` under a TensorFlow
    `MirroredStrategy`.

    Keras 3's TensorFlow trainer averages the first batch over the
    replicas to build a model created under a strategy, and TensorFlow
    cannot average booleans (`AddN` has no bool kernel): a keras-hub
    backbone's boolean padding mask stops the fit before its first step.
    keras-hub backbones take an `int32` padding mask as well. The whole
    batch is averaged, so boolean labels and sample weights are cast too;
    other tensors pass unchanged, and so does everything on other
    backends, where nothing needs the cast.

    Args:
        data: a `tf.data.Dataset` of `x`, `(x, y)` or `(x, y,
            sample_weight)` batches, or a nested structure of arrays (an
            `x` dict).

    Returns:
        The same kind of object, its boolean tensors cast to `int32`.

    Example:
    ```python
    strategy = beft_keras.distribution.data_parallel()  # TensorFlow
    train_ds = beft_keras.distribution.boolean_inputs_as_int(train_ds)
    with strategy.scope():
        classifier.fit(train_ds, epochs=3)
    ```
    """
    import keras
    import numpy as np

    if keras.backend.backend() != "tensorflow":
        return data
    import tensorflow as tf

    def cast(value):
        if isinstance(value, tf.Tensor) and value.dtype == tf.bool:
            return tf.cast(value, "int32")
        if isinstance(value, np.ndarray) and value.dtype == bool:
            return value.astype("int32")
        return value

    if isinstance(data, tf.data.Dataset):
        return data.map(
            lambda *batch: keras.tree.map_structure(cast, batch)
            if len(batch) > 1
            else keras.tree.map_structure(cast, batch[0]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return keras.tree.map_structure(cast, data)


def placement_scope(variable):
    """A context in which new variables are placed as `variable` is.

    For a variable added to an already built, distributed model, such as
    the biases `beft_keras.add_biases` adds: on TensorFlow, a mirrored
    variable's strategy scope (a variable created outside it cannot be
    trained by that strategy); on JAX, when no Keras distribution is set,
    a scope that replicates new variables over the device mesh `variable`
    is sharded on. Otherwise, nothing: a Keras distribution in scope
    places new variables itself (through its layout map), and on a single
    device there is nothing to place.

    Args:
        variable: a `keras.Variable` of the model, e.g. the kernel of the
            layer that gets a bias.

    Returns:
        A context manager.

    Example:
    ```python
    with beft_keras.distribution.placement_scope(layer.kernel):
        bias = layer.add_weight(shape=(units,), initializer="zeros")
    ```
    """
    import keras

    backend = keras.backend.backend()
    value = getattr(variable, "value", variable)
    if backend == "tensorflow":
        strategy = getattr(value, "distribute_strategy", None)
        if strategy is not None:
            return strategy.scope()
    elif backend == "jax" and keras.distribution.distribution() is None:
        sharding = getattr(value, "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        if mesh is not None and mesh.devices.size > 1:
            device_mesh = keras.distribution.DeviceMesh(
                shape=tuple(mesh.devices.shape),
                axis_names=list(mesh.axis_names),
                devices=mesh.devices,
            )
            # An empty layout map: every new variable replicated.
            return keras.distribution.ModelParallel(
                layout_map=keras.distribution.LayoutMap(device_mesh)
            ).scope()
    return contextlib.nullcontext()


def model_scope(model):
    """The scope in which to rebuild a model's optimizer: on TensorFlow its
    `distribute_strategy`'s (an optimizer made outside a model's
    `MirroredStrategy` cannot update its mirrored variables); elsewhere
    nothing, as a JAX optimizer lays out its state as the variables it
    updates.

    Example:
    ```python
    with beft_keras.distribution.model_scope(model):
        model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    ```
    """
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        return contextlib.nullcontext()
    return strategy.scope()


def backbone_class_of(backbone_or_preset):
    """The keras-hub backbone class of a class, a model or a preset,
    without loading any weights or downloading anything.

    Args:
        backbone_or_preset: a `keras_hub.models.Backbone` subclass, a
            backbone or task instance, a built-in preset name, or a local
            preset folder in keras-hub's format (its `config.json` names
            the class).

    Returns:
        The backbone class.

    Raises:
        ValueError: if the class cannot be told.

    Example:
    ```python
    beft_keras.distribution.backbone_class_of("llama3_8b_en")
    # keras_hub.models.Llama3Backbone
    ```
    """
    import keras
    import keras_hub

    base = keras_hub.models.Backbone
    value = backbone_or_preset
    if isinstance(value, type) and issubclass(value, base):
        return value
    if isinstance(value, base):
        return type(value)
    if isinstance(getattr(value, "backbone", None), base):
        return type(value.backbone)
    if isinstance(value, (str, os.PathLike)):
        value = os.fspath(value)
        config_file = os.path.join(value, "config.json")
        if os.path.isfile(config_file):
            with open(config_file, encoding="utf-8") as file:
                config = json.load(file)
            registered = config.get("registered_name")
            found = registered and keras.saving.get_registered_object(
                registered
            )
            if isinstance(found, type) and issubclass(found, base):
                return found
            raise ValueError(
                f"Preset folder '{value}' is not a keras-hub backbone preset "
                "(its config.json names no keras-hub backbone class); pass "
                "the backbone class, e.g. `keras_hub.models.LlamaBackbone`."
            )
        matches = [
            cls for cls in _backbone_classes() if value in cls.presets
        ]
        if matches:
            # The most derived class: `Llama3Backbone`, not `LlamaBackbone`.
            return max(matches, key=lambda cls: len(cls.__mro__))
        raise ValueError(
            f"'{value}' is neither a local preset folder nor a keras-hub "
            "built-in preset name; pass the backbone class, e.g. "
            "`keras_hub.models.LlamaBackbone`."
        )
    raise ValueError(
        "Expected a keras-hub backbone class, backbone, task model or "
        f"preset. Received: {backbone_or_preset!r}"
    )


def layout_map_backbones():
    """The names of the keras-hub backbone classes that have a
    `get_layout_map`, their own or inherited, e.g. `["GemmaBackbone",
    "Llama3Backbone", "LlamaBackbone", ...]`."""
    return sorted({
        cls.__name__
        for cls in _backbone_classes()
        if getattr(cls, "get_layout_map", None) is not None
    })


def _backbone_classes():
    import keras_hub

    return [
        value
        for value in vars(keras_hub.models).values()
        if isinstance(value, type)
        and issubclass(value, keras_hub.models.Backbone)
    ]


def _backend():
    """Keras' backend once Keras is imported, `KERAS_BACKEND` before."""
    if "keras" not in sys.modules and os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    import keras

    return keras.backend.backend()
