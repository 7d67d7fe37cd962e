"""Whole-model files: ``model.save("m.deepcore")`` and ``load_model``.

A ``.deepcore`` file is a zip archive with exactly two members, stored
uncompressed:

- ``config.json``: the architecture (every layer's class and config; for a
  functional model its calls in order, each naming the layer calls it reads;
  for a subclassed model its registered class, its ``get_config()`` and the
  input shapes it was built for), the compile configuration (losses, loss
  weights, metric names per output, optimizer class and config) and each
  random layer's stream position;
- ``model.weights.safetensors``: the weights by path ("<layer>/<weight>") and
  the optimizer's slots and step count ("optimizer/...").

Loading reads JSON and safetensors only: no pickle, no eval, no import by a
name taken from the file. Classes come from deepcore's own layers, losses and
optimizers, from classes registered with :func:`register_serializable`, or
from ``custom_objects``. Anything malformed (a truncated or corrupt archive,
an unexpected member, a path that leaves the archive, a declared size over
the limits, an unknown class, weights of the wrong shape) is a ValueError
naming the file and what is wrong. Saving is atomic (a temporary file
renamed over the target): a failed or killed save leaves the previous file.
"""
from __future__ import annotations

import json
import os
import zipfile

from ..saving import atomic_write, safetensors_bytes, safetensors_from_bytes
from .model import _OPT_PREFIX

FORMAT = "deepcore-model"
VERSION = 1
_CONFIG, _WEIGHTS = "config.json", "model.weights.safetensors"
#: The largest members load_model reads (declared sizes above are refused before reading).
MAX_CONFIG_BYTES = 64 << 20
MAX_WEIGHTS_BYTES = 64 << 30

_REGISTERED = {}


def register_serializable(package="Custom", name=None):
    """Class decorator (as ``keras.saving.register_keras_serializable``): a
    custom layer or model class that files may name as "package>Name".
    The class needs ``get_config()`` and ``from_config(config)``."""

    def register(cls):
        key = f"{package}>{name or cls.__name__}"
        _REGISTERED[key] = cls
        cls._registered_name = key
        return cls

    return register


def _class_key(obj):
    cls = type(obj)
    return getattr(cls, "_registered_name", None) if "_registered_name" in cls.__dict__ else cls.__name__


def _find_class(name, base, module, custom_objects, what, where):
    custom_objects = custom_objects or {}
    cls = custom_objects.get(name) or _REGISTERED.get(name)
    if cls is None and isinstance(name, str) and ">" not in name:
        cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{where}: unknown {what} class {name!r}; built-in {what}s are found by class name, "
                         f"custom ones must be registered with deepcore.saving.register_serializable or passed "
                         f"in custom_objects")
    return cls


# ---------------------------------------------------------------- to config
def _layer_config(layer):
    return {"class_name": _class_key(layer), "config": layer.get_config()}


def model_config(model):
    """The architecture as a JSON-able dict (Keras's get_config shape)."""
    from ..layers.core import InputLayer
    from .functional import Functional
    from .model import Model
    from .sequential import Sequential

    if isinstance(model, Sequential):
        model._require_built("get_config")
        return {"class_name": "Sequential",
                "config": {"name": model.name, "input_shape": list(model.input_shape[1:]),
                           "layers": [_layer_config(la) for la in model.layers]}}
    if isinstance(model, Functional):
        calls, count = [], {}
        # the calls in plan order; each names the (layer, call) outputs it reads
        producer = {s: (model._inputs[i]._node.layer.name, 0) for i, s in enumerate(model._plan.in_slots)}
        for st in model._plan.steps:
            k = count.get(st.layer.name, 0)
            count[st.layer.name] = k + 1
            calls.append({"layer": st.layer.name, "multi": st.multi, "inbound": [list(producer[i]) for i in st.ins]})
            if st.multi_out:  # [layer, call, output index] for each output of a layer with several
                for j, s in enumerate(st.out):
                    producer[s] = (st.layer.name, k, j)
            else:
                producer[st.out] = (st.layer.name, k)
        return {"class_name": "Functional",
                "config": {"name": model.name,
                           "layers": [_layer_config(la) for la in model.layers if not isinstance(la, InputLayer)],
                           "inputs": [{"name": t._node.layer.name, "shape": list(t.shape[1:])} for t in model.inputs],
                           "input_names": model.input_names,
                           "calls": calls,
                           "outputs": [list(producer[s]) for s in model._plan.out_slots],
                           "output_names": model.output_names}}
    if isinstance(model, Model):
        model._require_built("get_config")
        return {"class_name": _class_key(model), "config": model.get_config(),
                "build": {"input_shapes": [list(s) for s in model._input_shapes()]},
                "subclassed": True}
    raise TypeError(f"model_config: expected a deepcore Model, got {type(model).__name__}")


def _compile_config(model):
    if model.optimizer is None or model._losses is None:
        return None
    opt = model.optimizer
    return {"optimizer": {"class_name": type(opt).__name__, "config": opt.get_config()},
            "losses": [None if lo is None else {"class_name": type(lo).__name__, "config": lo.get_config()}
                       for lo in model._losses],
            "loss_weights": list(model._loss_weights),
            "metrics": [[m.name for m in ms] for ms in model._out_metrics],
            "output_names": model.output_names}


def _random_states(model):
    from ..layers.regularization import _RandomLayer

    return {layer.name: {"key_seed": int(layer._key_seed), "stream": int(layer._stream), "calls": int(layer._calls)}
            for layer in model.layers if isinstance(layer, _RandomLayer)}


def save_model(model, filepath, overwrite=True):
    """Write ``model`` to ``filepath`` (see the module docstring)."""
    filepath = os.fspath(filepath)
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"save: {filepath} exists and overwrite=False")
    model._require_built("save")
    config = {"format": FORMAT, "version": VERSION, "model": model_config(model),
              "compile": _compile_config(model), "random": _random_states(model)}
    text = json.dumps(config, indent=1, sort_keys=False).encode()
    weights = safetensors_bytes(*model._weight_tensors())

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(_CONFIG, text)
            z.writestr(_WEIGHTS, weights)

    atomic_write(filepath, write)


# -------------------------------------------------------------- from config
def _ref_key(ref):
    """A call's reference to a tensor, [layer, call] or [layer, call, output], as a
    dict key (None when it is not of that form, e.g. in a hand-edited file)."""
    if (isinstance(ref, list) and len(ref) in (2, 3) and isinstance(ref[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in ref[1:])):
        return tuple(ref)
    return None


def _read_archive(filepath):
    label = os.fspath(filepath)
    try:
        z = zipfile.ZipFile(label)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{label}: not a deepcore model file (not a zip archive: {e})") from None
    except OSError:
        raise
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        for n in names:
            if n.startswith("/") or ".." in n.replace("\\", "/").split("/") or ":" in n:
                raise ValueError(f"{label}: the archive names a path outside itself ({n!r}); refused")
        unexpected = sorted(set(names) - {_CONFIG, _WEIGHTS})
        if unexpected or len(names) != len(set(names)):
            raise ValueError(f"{label}: unexpected members {unexpected or 'duplicated'} in a deepcore model file "
                             f"(expected {_CONFIG} and {_WEIGHTS})")
        if _CONFIG not in names:
            raise ValueError(f"{label}: {_CONFIG} is missing: not a deepcore model file")
        out = {}
        for info in infos:
            limit = MAX_CONFIG_BYTES if info.filename == _CONFIG else MAX_WEIGHTS_BYTES
            if info.file_size > limit:
                raise ValueError(f"{label}: member {info.filename} declares {info.file_size} bytes, over the "
                                 f"limit of {limit}")
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise ValueError(f"{label}: member {info.filename} is compressed; deepcore writes (and reads) "
                                 f"stored members only")
            try:
                with z.open(info) as f:
                    data = f.read(limit + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
                raise ValueError(f"{label}: member {info.filename} cannot be read ({type(e).__name__}: {e}); the "
                                 f"file is truncated or corrupt") from None
            if len(data) != info.file_size:
                raise ValueError(f"{label}: member {info.filename} has {len(data)} bytes, its entry says "
                                 f"{info.file_size}: the file is truncated or corrupt")
            out[info.filename] = data
    try:
        config = json.loads(out[_CONFIG].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{label}: {_CONFIG} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{label}: {_CONFIG} is not a deepcore model configuration (format "
                         f"{config.get('format') if isinstance(config, dict) else type(config).__name__!r})")
    if config.get("version") != VERSION:
        raise ValueError(f"{label}: model file version {config.get('version')!r}; this deepcore reads version "
                         f"{VERSION}")
    return config, out.get(_WEIGHTS)


def _expect(cond, label, what):
    if not cond:
        raise ValueError(f"{label}: malformed {_CONFIG}: {what}")


def _build_layer(spec, custom_objects, label):
    from .. import layers as _layers
    from ..layers.base import Layer

    _expect(isinstance(spec, dict) and isinstance(spec.get("class_name"), str)
            and isinstance(spec.get("config"), dict), label, f"a layer entry must be {{class_name, config}}, got "
            f"{str(spec)[:200]}")
    cls = _find_class(spec["class_name"], Layer, _layers, custom_objects, "layer", label)
    try:
        return cls.from_config(dict(spec["config"]))
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{label}: layer {spec['config'].get('name', '?')!r} ({spec['class_name']}) cannot be "
                         f"made from its config: {e}") from None


def model_from_config(config, custom_objects=None, label="config"):
    """A new (untrained) model from model_config's dict."""
    from ..layers.core import Input
    from .functional import Functional
    from .model import Model
    from .sequential import Sequential

    _expect(isinstance(config, dict) and "class_name" in config and isinstance(config.get("config"), dict), label,
            "the model entry must be {class_name, config}")
    cname, cfg = config["class_name"], config["config"]
    if cname == "Sequential":
        _expect(isinstance(cfg.get("layers"), list) and isinstance(cfg.get("input_shape"), list), label,
                "a Sequential needs layers and input_shape")
        try:
            shape = [int(d) for d in cfg["input_shape"]]
        except (TypeError, ValueError):
            raise ValueError(f"{label}: malformed input_shape {cfg['input_shape']!r}") from None
        model = Sequential(name=str(cfg.get("name", "sequential")))
        model.add(Input(shape=shape))
        for spec in cfg["layers"]:
            try:
                model.add(_build_layer(spec, custom_objects, label))
            except ValueError as e:
                if str(e).startswith(label):
                    raise
                raise ValueError(f"{label}: {e}") from None
        return model
    if cname == "Functional":
        for key in ("layers", "inputs", "calls", "outputs"):
            _expect(isinstance(cfg.get(key), list), label, f"a functional model needs a list {key!r}")
        layers = {}
        for spec in cfg["layers"]:
            layer = _build_layer(spec, custom_objects, label)
            _expect(layer.name not in layers, label, f"two layers are named {layer.name!r}")
            layers[layer.name] = layer
        tensors = {}
        inputs = []
        for spec in cfg["inputs"]:
            _expect(isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("shape"),
                                                                                                list), label,
                    "an input must be {name, shape}")
            try:
                t = Input(shape=[int(d) for d in spec["shape"]], name=spec["name"])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{label}: input {spec['name']!r}: {e}") from None
            tensors[(spec["name"], 0)] = t
            inputs.append(t)
        count = {}
        for call in cfg["calls"]:
            _expect(isinstance(call, dict) and call.get("layer") in layers and isinstance(call.get("inbound"), list),
                    label, f"a call names an unknown layer or has no inbound list: {str(call)[:200]}")
            srcs = []
            for ref in call["inbound"]:
                _expect(_ref_key(ref) in tensors, label,
                        f"call of {call['layer']!r} reads {ref!r}, which no earlier call produced")
                srcs.append(tensors[_ref_key(ref)])
            layer = layers[call["layer"]]
            try:
                out = layer(srcs if call.get("multi") else srcs[0])
            except (ValueError, TypeError, IndexError) as e:
                raise ValueError(f"{label}: rebuilding the call of layer {call['layer']!r}: {e}") from None
            k = count.get(layer.name, 0)
            count[layer.name] = k + 1
            if isinstance(out, list):
                for j, t in enumerate(out):
                    tensors[(layer.name, k, j)] = t
            else:
                tensors[(layer.name, k)] = out
        outs = []
        for ref in cfg["outputs"]:
            _expect(_ref_key(ref) in tensors, label,
                    f"output {ref!r} is not produced by any call")
            outs.append(tensors[_ref_key(ref)])
        names = cfg.get("output_names")
        if isinstance(names, list) and len(names) == len(outs) and names != [t._node.layer.name for t in outs]:
            outputs = dict(zip(names, outs))
        else:
            outputs = outs if len(outs) > 1 else outs[0]
        return Functional(inputs if len(inputs) > 1 else inputs[0], outputs, name=str(cfg.get("name", "functional")))
    # a subclassed model: its registered class
    cls = _find_class(cname, Model, None, custom_objects, "model", label)
    try:
        model = cls.from_config(dict(cfg)) if hasattr(cls, "from_config") else cls(**cfg)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{label}: model class {cname} cannot be made from its config: {e}") from None
    build = config.get("build", {})
    shapes = build.get("input_shapes") if isinstance(build, dict) else None
    _expect(isinstance(shapes, list) and all(isinstance(s, list) for s in shapes), label,
            "a subclassed model needs build.input_shapes")
    model._build_from([tuple(int(d) for d in s) for s in shapes])
    return model


def _compile_from(model, cc, label):
    from .. import losses as _losses
    from .. import optimizers as _optimizers

    _expect(isinstance(cc, dict) and isinstance(cc.get("optimizer"), dict), label, "compile needs an optimizer")
    ocls = _find_class(cc["optimizer"].get("class_name"), _optimizers.Optimizer, _optimizers, None, "optimizer",
                       label)
    try:
        opt = ocls.from_config(dict(cc["optimizer"].get("config", {})))
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{label}: optimizer {ocls.__name__} cannot be made from its config: {e}") from None
    losses = []
    for spec in cc.get("losses") or []:
        if spec is None:
            losses.append(None)
            continue
        _expect(isinstance(spec, dict), label, "a loss entry must be {class_name, config}")
        lcls = _find_class(spec.get("class_name"), _losses.Loss, _losses, None, "loss", label)
        try:
            losses.append(lcls(**dict(spec.get("config", {}))))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{label}: loss {lcls.__name__} cannot be made from its config: {e}") from None
    _expect(len(losses) == model._n_outputs, label, f"{len(losses)} losses for {model._n_outputs} outputs")
    weights = cc.get("loss_weights") or [1.0] * len(losses)
    metrics = cc.get("metrics") or [[] for _ in losses]
    _expect(len(weights) == len(losses) and len(metrics) == len(losses), label,
            "loss_weights and metrics must have one entry per output")
    model.compile(optimizer=opt, loss=losses if len(losses) > 1 else losses[0],
                  loss_weights=[float(w) for w in weights] if len(losses) > 1 else None,
                  metrics=[list(m) for m in metrics] if len(losses) > 1 else list(metrics[0]))


def load_model(filepath, custom_objects=None, compile=True):  # noqa: A002 (Keras's argument name)
    """A model saved with ``model.save``: same architecture, weights and (with
    compile=True) optimizer state, so it predicts identically and training
    resumes where it stopped."""
    label = os.fspath(filepath)
    config, weights = _read_archive(label)
    model = model_from_config(config.get("model"), custom_objects, label)
    if weights is None:
        raise ValueError(f"{label}: {_WEIGHTS} is missing")
    tensors, metadata = safetensors_from_bytes(weights, f"{label}:{_WEIGHTS}")
    cc = config.get("compile")
    if compile and cc is not None:
        _compile_from(model, cc, label)  # before the weights: their optimizer state is restored with them
    else:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(_OPT_PREFIX)}
    model._load_weight_tensors(tensors, metadata, label)
    rnd = config.get("random") or {}
    _expect(isinstance(rnd, dict), label, "random must map layer names to stream positions")
    for layer in model.layers:
        st = rnd.get(layer.name)
        if st is not None:
            _expect(isinstance(st, dict) and all(isinstance(st.get(k), int) for k in ("key_seed", "stream", "calls")),
                    label, f"bad random state for layer {layer.name!r}")
            layer._key_seed, layer._stream, layer._calls = st["key_seed"], st["stream"], st["calls"]
    return model


def model_to_json(model):
    return json.dumps(model_config(model))


def model_from_json(text, custom_objects=None):
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"model_from_json: not valid JSON ({e})") from None
    return model_from_config(config, custom_objects, "model_from_json")

