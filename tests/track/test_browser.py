"""The pages in a real browser: headless Chromium (the system's; CI installs it, see .ci/run)
opens report.html of a run and of a study and a compare.html from file:// URLs, with every
http(s) request blocked and counted. No console error, no exception, no request but the page
itself, and every figure drawn by plotly.js (an SVG with its traces, or parcoords' canvas).
Screenshots of the three pages land in the test's temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cdp_browser import Chromium, find_chromium

import genlab

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("GENLAB_REQUIRE_BROWSER"),
        reason="needs headless Chromium (apt-get install chromium); CI installs it",
    ),
]
READY = "document.body !== null && document.body.hasAttribute('data-figures-drawn')"
# For each figure placeholder, how many things plotly.js drew in it.
DRAWN_PER_FIGURE = """
Array.from(document.querySelectorAll('div.figure')).map(function (div) {
  return div.querySelectorAll('svg.main-svg .trace, svg.main-svg .parcoords').length;
})
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    assert CHROMIUM is not None, "GENLAB_REQUIRE_BROWSER is set but no chromium is installed"
    chromium = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def pages(tracked_run: Path, study: Path, track_root: Path) -> dict[str, Path]:
    trial = next((study / "trials" / "0000").iterdir())  # a run of the study's first trial
    compare = genlab.compare([tracked_run, trial], track_root / "compare.html")
    return {"run": tracked_run / "report.html", "study": study / "report.html", "compare": compare}


@pytest.mark.parametrize("name", ["run", "study", "compare"])
def test_the_page_works_offline_in_chromium(name, pages, browser, tmp_path):
    page = pages[name]
    log = browser.open(page.resolve().as_uri(), ready=READY)
    assert log.console_errors == [] and log.exceptions == []
    assert log.blocked == []  # nothing asked for the network
    assert log.requests == [page.resolve().as_uri()]  # the page itself, nothing else
    drawn = browser.evaluate(DRAWN_PER_FIGURE)
    figures = page.read_text().count('<div class="figure" id="figure-')
    assert len(drawn) == figures >= 2
    assert int(browser.evaluate("document.body.getAttribute('data-figures-drawn')")) == figures
    assert all(n > 0 for n in drawn), drawn
    shot = browser.screenshot(tmp_path / f"{name}.png")
    assert shot.stat().st_size > 50_000  # a drawn page, not a blank one


def test_blocked_requests_would_be_seen(browser, tmp_path):
    """The check above can fail: a page that fetches from the network is caught."""
    page = tmp_path / "remote.html"
    page.write_text(
        '<html><body><img src="https://example.invalid/x.png">'
        "<script>console.error('boom')</script></body></html>"
    )
    log = browser.open(page.as_uri())
    assert log.blocked == ["https://example.invalid/x.png"]
    assert "boom" in log.console_errors
