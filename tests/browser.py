"""Headless Chromium for tests that look at the HTML report in a real browser (Debian's chromium,
installed by `make test`; the flags keep it off the network and out of the user's profile)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def chromium(page: Path, tmp: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is missing: `make test` installs Debian's chromium"
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp / 'chromium'}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=timeout)


def dom(page: Path, tmp: Path) -> str:
    """The page's DOM as the browser built it."""
    out = chromium(page, tmp, "--dump-dom")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout
