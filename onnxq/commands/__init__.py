"""Subcommands of the ``onnxq`` command line that run whole jobs: quantize, check, inspect.

Each module defines ``register(subparsers, common)``, which adds its parser (``common`` is the
parent parser holding ``--json``, ``--quiet``, ``--debug`` and ``--log-level``), and
``run(args) -> int``, which returns the exit status (see :mod:`onnxq.cli`).
"""
