"""Child process of :func:`onnxq.check.htp.run_on_htp`: ``model folder n_feeds arch``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    import onnxruntime_qnn  # noqa: PLC0415

    model, folder, n, arch = argv[0], Path(argv[1]), int(argv[2]), argv[3]
    feeds = []
    for i in range(n):
        with np.load(folder / f"feed_{i}.npz") as z:
            feeds.append({k: z[k] for k in z.files})
    ort.register_execution_provider_library(
        "QNNExecutionProvider", onnxruntime_qnn.get_library_path()
    )
    so = ort.SessionOptions()
    so.log_severity_level = 0  # the backend's per-node validation verdicts are verbose logs
    # the HTP compiles a graph for fixed shapes: free input dimensions take the first feed's
    # sizes, and shape inference then gives every tensor the static shape the backend wants
    proto = onnx.load(model)
    for value in proto.graph.input:
        if feeds and value.name in feeds[0]:
            shape = feeds[0][value.name].shape
            for d, dim in enumerate(value.type.tensor_type.shape.dim):
                if d < len(shape) and not (dim.HasField("dim_value") and dim.dim_value > 0):
                    dim.Clear()
                    dim.dim_value = int(shape[d])
    for value in proto.graph.output:
        value.type.tensor_type.ClearField("shape")
    del proto.graph.value_info[:]
    proto = onnx.shape_inference.infer_shapes(proto)
    model = str(folder / "static.onnx")
    onnx.save(proto, model, save_as_external_data=proto.ByteSize() > 1 << 30)
    devices = [d for d in ort.get_ep_devices() if d.ep_name == "QNNExecutionProvider"]
    so.add_provider_for_devices(devices, {"backend_type": "htp", "htp_arch": arch})
    sess = ort.InferenceSession(model, so)
    names = [o.name for o in sess.get_outputs()]
    (folder / "names.txt").write_text("\n".join(names))
    for i, f in enumerate(feeds):
        outs = sess.run(None, f)
        np.savez(folder / f"out_{i}.npz", **{f"o{k}": v for k, v in enumerate(outs)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
