"""Graph passes: rewrite an ONNX model and report what changed.

One pass a module. Each public pass takes a model (path or ``ModelProto``), never modifies its
input unless ``in_place=True``, and returns a result with ``model``, ``modified`` and what it
did. The ``*_graph`` functions work on an open :class:`onnxq.graph.editor.GraphEditor` so that
a pipeline (``equalize_model``) imports and exports the graph once.
"""
