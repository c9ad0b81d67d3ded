"""Headless Chromium driven over the Chrome DevTools protocol on a pipe
(`--remote-debugging-pipe`: JSON messages separated by NUL bytes on file descriptors 3 and 4),
so the browser tests need no websocket client and no driver download: only the system's
chromium. Every http(s) request a page makes is paused by the Fetch domain, failed and
counted; console errors, uncaught exceptions and every request URL are recorded."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, BINARIES) if p), None)


@dataclass
class PageLog:
    """What a page did while it loaded and ran."""

    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    blocked: list[str] = field(default_factory=list)  # http(s) requests stopped
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)


class Chromium:
    def __init__(self, binary: str, profile: Path, width: int = 1400, height: int = 1000):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        flags = [
            "--headless",
            "--no-sandbox",  # CI containers run as root
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        # The browser reads commands on fd 3 and writes replies on fd 4: a Python trampoline
        # moves the pipe ends there, then becomes the browser (a shell's `3<&N` takes only
        # one-digit fds).
        trampoline = (
            "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
            "os.execv(sys.argv[3], sys.argv[3:])"
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                trampoline,
                str(to_browser_r),
                str(from_browser_w),
                binary,
                *flags,
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._id = 0
        self._events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=self.session)
        patterns = [{"urlPattern": "http://*"}, {"urlPattern": "https://*"}]
        self.call("Fetch.enable", patterns=patterns, session=self.session)

    # -- protocol --------------------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any], session: str | None) -> int:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        return self._id

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params):
        wanted = self._send(method, params, session)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self._receive(deadline - time.monotonic())
            if message is None:
                break
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)
        raise TimeoutError(f"no reply to {method} within {timeout}s")

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate",
            session=self.session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        return result.get("result", {}).get("value")

    # -- pages -----------------------------------------------------------------------------

    def open(self, url: str, ready: str = "true", timeout: float = 60) -> PageLog:
        """Load `url`, wait for its load event and then for the JS expression `ready`;
        returns what the page did meanwhile."""
        self._events.clear()
        log = PageLog()
        self.call("Page.navigate", session=self.session, url=url)
        deadline = time.monotonic() + timeout
        loaded = False
        while time.monotonic() < deadline:
            self._drain(log)
            if not loaded:
                message = self._receive(0.2)
                if message is not None:
                    self._events.append(message)
                    loaded = message.get("method") == "Page.loadEventFired"
                continue
            if self.evaluate(ready):
                self._drain(log)
                return log
            time.sleep(0.2)
        raise TimeoutError(f"{url} did not get ready ({ready}) within {timeout}s")

    def _drain(self, log: PageLog) -> None:
        events, self._events = self._events, []
        for message in events:
            method, params = message.get("method"), message.get("params", {})
            if method == "Fetch.requestPaused":
                log.blocked.append(params["request"]["url"])
                self.call(
                    "Fetch.failRequest",
                    session=self.session,
                    requestId=params["requestId"],
                    errorReason="BlockedByClient",
                )
            elif method == "Network.requestWillBeSent":
                log.requests.append(params["request"]["url"])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                log.console_errors.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                log.exceptions.append(
                    details.get("exception", {}).get("description", details.get("text", ""))
                )
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                log.console_errors.append(params["entry"].get("text", ""))

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics", session=self.session)
            size = metrics["cssContentSize"]
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            )
        data = self.call("Page.captureScreenshot", session=self.session, **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
