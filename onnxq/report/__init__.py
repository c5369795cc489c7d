"""The human-readable report (``report.html``) of ``onnxq quantize`` and ``onnxq check``.

:func:`render_html` turns the report dict (the content of ``report.json``, schema
``onnxq.report/1``) into one self-contained HTML page: inline CSS, inline SVG charts and a few
lines of inline JavaScript, no network access. :func:`write_html` writes it atomically.
"""

from __future__ import annotations

from onnxq.report.html import render_html, write_html

__all__ = ["render_html", "write_html"]
