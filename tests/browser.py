"""Headless Chromium driven over the DevTools protocol, for tests of what runs in browsers.

One ``Browser`` per module (start-up costs about a second); one ``Page`` per test, each in its
own browser context, so cookies and ``localStorage`` never leak between tests::

    async with Browser.launch() as browser:
        page = await browser.new_page()
        await page.goto("http://127.0.0.1:8080/page.html")
        assert await page.evaluate("document.title") == "Pricing"
        await page.close()

Only aiohttp is needed (its websocket client speaks CDP); Chromium is ``/usr/bin/chromium``
unless ``MA_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = os.environ.get("MA_CHROMIUM", "/usr/bin/chromium")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-port=0",
]


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None


class CdpError(RuntimeError):
    """A DevTools command failed, or JavaScript threw."""


class Browser:
    """A Chromium process and its DevTools websocket."""

    def __init__(self, process: asyncio.subprocess.Process, profile: Path) -> None:
        self.process = process
        self.profile = profile
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: list[tuple[str | None, str, dict[str, Any]]] = []
        self._event_arrived = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, *flags: str, timeout: float = 15) -> AsyncIterator[Browser]:
        """Start Chromium with a throw-away profile; stop it and remove the profile on exit.

        ``flags`` are added to the defaults, e.g. ``--host-resolver-rules=MAP *.acme.test
        127.0.0.1`` to serve made-up domains from a loopback server.
        """
        profile = Path(tempfile.mkdtemp(prefix="ma-chromium-"))
        process = await asyncio.create_subprocess_exec(
            CHROMIUM,
            *FLAGS,
            *flags,
            f"--user-data-dir={profile}",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        browser = cls(process, profile)
        try:
            await browser._connect(timeout)
            yield browser
        finally:
            await browser._stop()

    async def _connect(self, timeout: float) -> None:
        # Chromium writes the port it picked, and the browser target's path, to this file.
        active = self.profile / "DevToolsActivePort"
        async with asyncio.timeout(timeout):
            while not active.exists() or len(active.read_text().split()) < 2:
                if self.process.returncode is not None:
                    raise CdpError(f"{CHROMIUM} exited with {self.process.returncode}")
                await asyncio.sleep(0.05)
            port, path = active.read_text().split()[:2]
            self._session = aiohttp.ClientSession()
            self._ws = await self._session.ws_connect(
                f"ws://127.0.0.1:{port}{path}", max_msg_size=0
            )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                async with self._event_arrived:
                    self._events.append((data.get("sessionId"), data["method"], data["params"]))
                    self._event_arrived.notify_all()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CdpError("the DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        """Run one DevTools command (on a page when ``session_id`` is given); its result."""
        assert self._ws is not None, "the browser is not connected"
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        await self._ws.send_json(message)
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error'].get('message')}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def wait_for_event(
        self,
        method: str,
        session_id: str | None = None,
        since: int = 0,
        where: Callable[[dict[str, Any]], bool] = lambda params: True,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """The first event ``method`` at or after index ``since`` of the event log."""
        async with asyncio.timeout(timeout), self._event_arrived:
            while True:
                for session, name, params in self._events[since:]:
                    if name == method and session == session_id and where(params):
                        return params
                await self._event_arrived.wait()

    async def new_page(self) -> Page:
        """A blank tab in a fresh browser context: no cookies, no storage."""
        context = (await self.send("Target.createBrowserContext"))["browserContextId"]
        target = await self.send(
            "Target.createTarget", {"url": "about:blank", "browserContextId": context}
        )
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, target["targetId"], attached["sessionId"], context)
        await page.send("Page.enable")
        await page.send("Network.enable")
        return page

    async def _stop(self) -> None:
        with contextlib.suppress(Exception):
            if self._ws is not None:
                await self.send("Browser.close")
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab: navigate, evaluate JavaScript, read and set cookies."""

    def __init__(self, browser: Browser, target_id: str, session_id: str, context: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id
        self.context = context

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session_id)

    async def goto(self, url: str, timeout: float = 10) -> None:
        """Navigate and wait for the load event."""
        since = len(self.browser._events)
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigating to {url}: {result['errorText']}")
        await self.browser.wait_for_event(
            "Page.loadEventFired", self.session_id, since=since, timeout=timeout
        )

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises are awaited); JS errors raise."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 5, interval: float = 0.05) -> Any:
        """Poll until the expression is truthy (navigations in between are fine); its value."""
        async with asyncio.timeout(timeout):
            while True:
                with contextlib.suppress(CdpError):  # e.g. the context was destroyed mid-way
                    value = await self.evaluate(expression)
                    if value:
                        return value
                await asyncio.sleep(interval)

    async def cookies(self, url: str | None = None) -> dict[str, dict[str, Any]]:
        """The cookies the browser would send to ``url`` (the current page by default), by name:
        CDP ``Network.Cookie`` objects (``value``, ``domain``, ``expires``, ``sameSite``...)."""
        params = {"urls": [url]} if url else {}
        result = await self.send("Network.getCookies", params)
        return {cookie["name"]: cookie for cookie in result["cookies"]}

    async def set_cookie(self, name: str, value: str, url: str) -> None:
        """Set a cookie as if ``url``'s server had (host-only, ``Path=/``)."""
        result = await self.send(
            "Network.setCookie", {"name": name, "value": value, "url": url, "path": "/"}
        )
        if not result.get("success", True):
            raise CdpError(f"could not set cookie {name}={value!r} for {url}")

    async def screenshot(self, path: Path, width: int = 1366) -> None:
        """A PNG of the whole page (not only the viewport) at ``width`` CSS pixels."""
        metrics = await self.send("Page.getLayoutMetrics")
        height = int(metrics.get("cssContentSize", metrics.get("contentSize"))["height"])
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": max(height, 600), "deviceScaleFactor": 1, "mobile": False},
        )
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        with contextlib.suppress(CdpError):
            await self.browser.send("Target.closeTarget", {"targetId": self.target_id})
            await self.browser.send(
                "Target.disposeBrowserContext", {"browserContextId": self.context}
            )


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
