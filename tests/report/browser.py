"""Headless Chromium for the report tests: console problems, DOM dump, screenshot.

Console problems are read over the DevTools protocol on ``--remote-debugging-pipe`` (the
browser reads commands from its fd 3 and writes replies and events to its fd 4, each message
JSON ended by a NUL byte): the page is opened in a fresh target with the ``Runtime``, ``Log``
and ``Page`` domains enabled, and every uncaught exception, ``console.error``/``warn``/
``assert`` call and browser log entry of level error or warning (CSP violations, failed loads)
is collected until shortly after the load event; :func:`evaluate` runs a script in the loaded
page the same way. The DOM and the screenshot use the plain ``--dump-dom`` and ``--screenshot``
switches.

Chromium must be installed (``apt-get install -y --no-install-recommends chromium``); when it
is missing the tests fail, they do not skip.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = "apt-get install -y --no-install-recommends chromium"

#: Flags for this machine: the network is closed, so background connections must be off.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

_TIMEOUT_S = 60.0


def chromium_path() -> str:
    """The Chromium executable; fails the test (with the install line) when there is none."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"headless Chromium is needed for the report tests: {INSTALL_HINT}")


@contextmanager
def _profile() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="onnxq-chromium-") as folder:
        yield folder


def dump_dom(page: Path) -> str:
    """The page's DOM after load, serialized by ``--dump-dom``."""
    with _profile() as profile:
        result = subprocess.run(
            [chromium_path(), *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2200) -> Path:
    """A PNG of the page's first ``width`` x ``height`` CSS pixels (``--screenshot``)."""
    with _profile() as profile:
        result = subprocess.run(
            [
                chromium_path(),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                f"--screenshot={png}",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return png


class _Pipe:
    """A DevTools-protocol connection to a browser started with ``--remote-debugging-pipe``."""

    def __init__(self, process: subprocess.Popen[bytes], write_fd: int, read_fd: int) -> None:
        self.process = process
        self.write_fd = write_fd
        self.read_fd = read_fd
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._next_id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self._next_id

    def call(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send a command and wait for its reply; events seen meanwhile are kept."""
        sent = self.send(method, params, session)
        reply = self.wait(lambda m: m.get("id") == sent)
        assert reply is not None, f"no reply to {method}"
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply.get("result", {})

    def wait(self, done: Any, timeout: float = _TIMEOUT_S) -> dict[str, Any] | None:
        """Read messages until ``done(message)`` holds (returned) or ``timeout`` passes (None)."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if done(message):
                    return message
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    return None
                self._buffer += chunk


@contextmanager
def _devtools() -> Iterator[_Pipe]:
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # above 4 so the child's dup2 onto 3 and 4 cannot clobber one with the other
    child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
    child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(to_browser_r)
    os.close(from_browser_w)

    def wire_fds() -> None:  # runs in the child before exec
        os.dup2(child_r, 3)
        os.dup2(child_w, 4)

    with _profile() as profile:
        process = subprocess.Popen(
            [
                chromium_path(),
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire_fds,  # only dup2 and exec in the child: safe here
            close_fds=False,
        )
        os.close(child_r)
        os.close(child_w)
        pipe = _Pipe(process, to_browser_w, from_browser_r)
        try:
            yield pipe
        finally:
            try:
                pipe.send("Browser.close")
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout=10)
            os.close(to_browser_w)
            os.close(from_browser_r)


def _describe(event: dict[str, Any]) -> str | None:
    """A problem message for a console-type event, or None when the event is harmless."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        text = details.get("exception", {}).get("description") or details.get("text", "")
        return f"uncaught exception: {text} ({details.get('url', '')}:{details.get('lineNumber')})"
    if method == "Runtime.consoleAPICalled" and params.get("type") in {
        "error",
        "warning",
        "assert",
    }:
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        return f"console.{params['type']}: {args}"
    if method == "Log.entryAdded":
        entry = params.get("entry", {})
        if entry.get("level") in {"error", "warning"}:
            return f"log {entry.get('level')} ({entry.get('source')}): {entry.get('text')}"
    return None


@contextmanager
def _loaded(page: Path) -> Iterator[tuple[_Pipe, str]]:
    """A browser showing ``page`` (loaded) and the DevTools session attached to its tab."""
    with _devtools() as pipe:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.call("Page.navigate", {"url": page.as_uri()}, session=session)
        loaded = pipe.wait(lambda m: m.get("method") == "Page.loadEventFired")
        assert loaded is not None, "the page did not finish loading"
        yield pipe, session


def console_problems(page: Path, settle_s: float = 0.5) -> list[str]:
    """Errors and warnings the page raises while loading (and ``settle_s`` after its load).

    Parameters
    ----------
    page
        The HTML file.
    settle_s
        How long to keep listening after the load event (late timers, deferred errors).

    Returns
    -------
    list of str
        One line per problem; empty for a clean page.
    """
    with _loaded(page) as (pipe, session):
        pipe.wait(lambda m: False, timeout=settle_s)
        events = [e for e in pipe.events if e.get("sessionId") == session]
    return [text for text in map(_describe, events) if text is not None]


def evaluate(page: Path, expression: str) -> Any:
    """The JSON value of a JavaScript ``expression`` run in the loaded ``page``."""
    with _loaded(page) as (pipe, session):
        result = pipe.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session
        )
    assert "exceptionDetails" not in result, result["exceptionDetails"]
    return result["result"].get("value")
