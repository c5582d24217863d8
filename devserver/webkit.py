"""WebKitGTK (the Safari engine) for tests and benchmarks: a private Xvfb display, a private
PulseAudio daemon to play into, and a Selenium session on MiniBrowser through WebKitWebDriver
(shared/BROWSERS.md). ``missing()`` says what is not installed (``./dev test`` installs it as
root on Debian).
"""

from __future__ import annotations

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

DRIVER = shutil.which("WebKitWebDriver")
PULSEAUDIO = shutil.which("pulseaudio")
XVFB = shutil.which("Xvfb")
MINIBROWSER = next(
    (str(p) for p in Path("/usr/lib").glob("*/webkit2gtk-4.*/MiniBrowser") if os.access(p, os.X_OK)), None
)
START_TIMEOUT_S = 20  # for Xvfb to name its display, for PulseAudio to open its socket
DRIVER_TIMEOUT_S = 120  # any one WebDriver HTTP call (the default is no timeout at all)
PAGE_LOAD_TIMEOUT_S = 90


def missing() -> str | None:
    """Why WebKit cannot run here, or None."""
    if DRIVER and XVFB and MINIBROWSER:
        return None
    return "WebKitWebDriver, MiniBrowser or Xvfb not installed (apt-get install webkit2gtk-driver xvfb)"


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    """Xvfb on a free display it picks itself; returns the process and ``:N``.

    ``-displayfd`` writes the number and then a newline: the pipe must stay open until both
    arrived, else Xvfb dies with "Cannot write display number" (seen here, 1 run in 6), and a
    WebDriver session on a dead display hangs.
    """
    read, write = os.pipe()
    with tempfile.TemporaryFile() as log:  # not a pipe: nobody drains it while the tests run
        proc = subprocess.Popen(
            [XVFB, "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
            pass_fds=(write,),
            stderr=log,
        )
        os.close(write)
        got = b""
        deadline = time.monotonic() + START_TIMEOUT_S
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while not got.endswith(b"\n") and (left := deadline - time.monotonic()) > 0:
                if not select.select([pipe], [], [], left)[0]:
                    break
                chunk = pipe.read(16)
                if not chunk:  # Xvfb exited
                    break
                got += chunk
        number = got.decode().strip()
        if not got.endswith(b"\n") or not number.isdigit() or proc.poll() is not None:
            proc.kill()
            proc.wait(10)
            log.seek(0)
            err = log.read().decode(errors="replace")
            raise RuntimeError(f"Xvfb did not start (display {got!r}, exit {proc.returncode}): {err[-2000:]}")
    return proc, f":{number}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def display() -> Iterator[str]:
    """A private Xvfb display for the browser."""
    proc, name = start_xvfb()
    try:
        yield name
    finally:
        stop(proc)


@contextmanager
def audio_output() -> Iterator[dict[str, str]]:
    """A PulseAudio daemon with a null sink, private to the caller: its own XDG_RUNTIME_DIR, so
    it neither uses nor stops anyone else's. Yields the environment the browser needs to play
    into it, or ``{}`` (no audio output) where PulseAudio is not installed."""
    if not PULSEAUDIO:
        yield {}
        return
    runtime = tempfile.mkdtemp(prefix="pyclient-pulse-")
    env = {**os.environ, "XDG_RUNTIME_DIR": runtime}
    args = ["--daemonize=yes", "--exit-idle-time=-1", "-n", "--load=module-null-sink sink_name=null"]
    started = subprocess.run(
        [PULSEAUDIO, *args, "--load=module-native-protocol-unix"], env=env, capture_output=True, timeout=60
    )
    socket_path = Path(runtime) / "pulse" / "native"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not socket_path.exists() and time.monotonic() < deadline and started.returncode == 0:
        time.sleep(0.05)
    if not socket_path.exists():
        shutil.rmtree(runtime, ignore_errors=True)
        raise RuntimeError(f"PulseAudio did not start ({started.returncode}): {started.stderr.decode()[-2000:]}")
    try:
        yield {"XDG_RUNTIME_DIR": runtime}
    finally:
        subprocess.run([PULSEAUDIO, "--kill"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(runtime, ignore_errors=True)


@contextmanager
def session(display_name: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """A Selenium WebDriver session on MiniBrowser, every driver call with a deadline."""
    from selenium import webdriver
    from selenium.webdriver.remote.client_config import ClientConfig
    from selenium.webdriver.remote.remote_connection import RemoteConnection
    from selenium.webdriver.webkitgtk.options import Options
    from selenium.webdriver.webkitgtk.service import Service

    opts = Options()
    opts.binary_location = MINIBROWSER
    opts.add_argument("--automation")
    service = Service(DRIVER, env={**os.environ, "DISPLAY": display_name, **(env or {})})
    service.start()
    try:
        config = ClientConfig(remote_server_addr=service.service_url, timeout=DRIVER_TIMEOUT_S)
        driver = webdriver.Remote(command_executor=RemoteConnection(client_config=config), options=opts)
    except BaseException:
        service.stop()
        raise
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            service.stop()


def stats(driver: Any) -> dict[str, Any] | None:
    return driver.execute_script("return window.pyclientStats ? pyclientStats() : null")


def wait_for(driver: Any, condition: str, timeout_s: float = PAGE_LOAD_TIMEOUT_S) -> dict[str, Any]:
    """Poll ``condition`` (JS over ``s = pyclientStats()``) until it holds; return the stats."""
    script = f"const s = window.pyclientStats && pyclientStats(); return !!s && !!({condition});"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if driver.execute_script(script):
            return stats(driver)
        time.sleep(0.1)
    raise AssertionError(f"never true within {timeout_s} s: {condition}; stats: {stats(driver)}")


def click_unlock(driver: Any) -> bool:
    """Click the page's "Click to enable audio" if it is there, as a user would (a WebDriver
    click is a user gesture). The button leaves by itself once the context runs, possibly
    between finding it and clicking it: then there is nothing to click. Returns whether it
    clicked."""
    from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button.pyclient-audio-unlock"):
        try:
            button.click()
            return True
        except (StaleElementReferenceException, ElementNotInteractableException):
            pass
    return False


def enable_audio(driver: Any) -> dict[str, Any]:
    """Wait for the page's "Click to enable audio" (the context waits for a gesture: never
    silently), then click it; returns the stats from before the click."""
    s = wait_for(driver, "s.audio.unlock_shown")
    if not click_unlock(driver):
        raise AssertionError(f"the page said it shows 'Click to enable audio', but there was none: {stats(driver)}")
    return s
