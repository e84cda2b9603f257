"""Checks of the self-contained HTML pages (run dashboard, study report): nothing loaded from outside the file,
and the page opens in headless Chromium with a clean console and a screenshot that is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

BROWSERS = ("chromium", "chromium-browser")
# what Chromium's stderr log says when a page misbehaves (console messages, script errors, blocked resources);
# a page without JavaScript logs no console message at all
CONSOLE_PROBLEMS = ("CONSOLE", "Uncaught", "Failed to load resource", "Not allowed to load local resource")


def assert_self_contained(text: str) -> None:
    """Every image inline (data: URI); no script, stylesheet, font or frame fetched from anywhere."""
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    assert sources, "the page has no image"
    outside = [src[:60] for src in sources if not src.startswith("data:image/png;base64,")]
    assert not outside, f"images not inline: {outside}"
    lowered = text.lower()
    for pattern in ('src="http', "src='http", 'href="http', "href='http", "<script", "<iframe", "@import",
                    "url(", '<link rel="stylesheet"'):
        assert pattern not in lowered, f"the page refers outside itself: {pattern}"
    links = re.findall(r'<link[^>]*\shref="([^"]*)"', text)
    assert all(link.startswith("data:") for link in links), links


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium; `make test` installs it where it "
                "runs as root with apt-get): the HTML screenshot check is skipped")


def screenshot_problems(page: Path, work_dir: Path, *, width_px: int = 1280, height_px: int = 2400) -> list[str]:
    """Open ``page`` in headless Chromium and take a screenshot; return what is wrong (empty: nothing): a non-zero
    exit, console messages or blocked resources in its log, or a blank screenshot (under 2 % of the pixels
    non-white, or fewer than 64 distinct colours: no plot drawn)."""
    from PIL import Image

    shot = work_dir / f"{page.stem}-screenshot.png"
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--enable-logging=stderr", "--v=0", f"--window-size={width_px},{height_px}",
               f"--user-data-dir={work_dir / 'chromium-profile'}", f"--screenshot={shot}", page.resolve().as_uri()]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    problems = [f"chromium exited with {proc.returncode}: {proc.stderr[-2000:]}"] if proc.returncode else []
    problems += [line for line in proc.stderr.splitlines() if any(p in line for p in CONSOLE_PROBLEMS)]
    if not shot.exists():
        return [*problems, "no screenshot was written"]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    inked = float(np.mean(np.any(pixels < 245, axis=-1)))
    colours = len(np.unique(pixels.reshape(-1, 3)[::7], axis=0))
    if inked < 0.02 or colours < 64:
        problems.append(f"the screenshot is blank: {100 * inked:.2f} % non-white pixels, {colours} colours")
    return problems


def assert_renders_in_chromium(page: Path, work_dir: Path) -> None:
    problems = screenshot_problems(page, work_dir)
    assert not problems, "\n".join(problems)
