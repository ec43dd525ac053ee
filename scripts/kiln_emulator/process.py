"""Emulator processes driven from Python (scripts/bench.py; the Rust tests have their own
harness): start `emulator.py --host 127.0.0.1 --port 0` in its own process group, read the
`KILN_EMULATOR_URL=` line it prints, call its control API, stop the whole group.

Standard library only: it runs under any python3, while the emulator itself runs under the
python given (default: this one; the emulator needs the venv of `scripts/emulator install`).
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

LAUNCHER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "emulator.py")
URL_LINE = "KILN_EMULATOR_URL="


class EmulatorFailure(Exception):
    """An emulator process did not start, or a control call failed."""


class StartFailed(EmulatorFailure):
    """The process did not print its URL (the message ends with its log's tail)."""


class ControlFailed(EmulatorFailure):
    """A control call was answered with an error or not at all."""


class EmulatorExited(ControlFailed):
    """A control call found the process gone."""


def spawn(cmd, **kwargs):
    """Popen in a new session (so in a process group of its own), stdin from /dev/null."""
    return subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, **kwargs)


def stop_group(proc, grace=5.0):
    """TERM the process group `proc` leads, KILL what is left of it after `grace` seconds."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Whatever the leader left in its group goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait()


class EmulatorProcess:
    """One emulator on a free loopback port. Its stdout and stderr go to
    `emulator-NAME.out` / `.log` in `workdir`; `url` is set once it is ready.

    `spawn(cmd, stdout=, stderr=)` starts the process (default: spawn above); it must put the
    process in a group of its own, which `stop` ends."""

    def __init__(self, workdir, name="emulator", python=None, launcher=LAUNCHER, timeout=90.0, spawn=spawn):
        self.name = name
        self.log_path = os.path.join(workdir, f"emulator-{name}.log")
        self.out_path = os.path.join(workdir, f"emulator-{name}.out")
        cmd = [python or sys.executable, launcher, "--host", "127.0.0.1", "--port", "0"]
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as log:
            self.proc = spawn(cmd, stdout=out, stderr=log)
        self.url = self._wait_for_url(timeout)
        if not self.url:
            tail = self.log_tail()
            self.stop()
            raise StartFailed(f"the emulator ({name}) did not start:\n{tail}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _wait_for_url(self, timeout):
        """The URL the process printed; None if it exited or `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while True:
            url = self._printed_url()
            if url or self.proc.poll() is not None or time.monotonic() >= deadline:
                return url
            time.sleep(0.05)

    def _printed_url(self):
        with open(self.out_path, encoding="utf-8", errors="replace") as out:
            for line in out:
                if line.startswith(URL_LINE):
                    return line.strip().split("=", 1)[1]
        return None

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    def exited(self):
        """Why the process is gone ("the NAME emulator exited (status N)"), or None while it runs."""
        if self.proc.poll() is None:
            return None
        return f"the {self.name} emulator exited (status {self.proc.returncode})"

    def control(self, method, path, body=None, timeout=60):
        """A control API call (`path` like /_kiln/requests): its JSON answer, None when empty."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                text = answer.read()
        except urllib.error.HTTPError as err:
            raise ControlFailed(f"emulator {method} {path}: {err.code} {err.read().decode(errors='replace')}") from err
        except OSError as err:
            gone = self.exited()
            if gone:
                raise EmulatorExited(gone) from err
            raise ControlFailed(f"emulator {method} {path}: {err}\n{self.log_tail()}") from err
        return json.loads(text) if text.strip() else None

    def behaviour(self, settings):
        return self.control("POST", "/_kiln/behaviour", settings)

    def faults(self, settings):
        return self.control("POST", "/_kiln/faults", settings)

    def seed(self, region=None):
        return self.control("POST", "/_kiln/seed", {"region": region} if region else {})

    def reset(self):
        return self.control("POST", "/_kiln/reset")

    def requests(self):
        return self.control("GET", "/_kiln/requests") or []

    def clear_requests(self):
        self.control("DELETE", "/_kiln/requests")

    def stop(self):
        stop_group(self.proc)
