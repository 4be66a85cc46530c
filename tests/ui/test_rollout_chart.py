"""The rollout chart as a user sees it: ``rollout_health``'s page in a real ``dagster dev``, loaded
in headless Chromium, shows the progress table inline, the chart image rendered (a ``data:``
image the browser decoded: a broken image has no natural width) and the numbers plotted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.dagster_ui import chromium_page, completed_rollout, dagster_dev, require_chromium

pytestmark = [pytest.mark.slow, pytest.mark.services]


def test_rollout_health_page_renders_the_chart_and_the_progress(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEPLAT_HOME", str(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    require_chromium()  # first: without a browser there is no point preparing the rest
    rid = completed_rollout()
    with dagster_dev(tmp_path) as url, chromium_page() as page:
        page.goto(f"{url}/assets/rollout_health?partition={rid}")
        show_chart = chart_entry(page).get_by_text("[Show Markdown]")
        show_chart.wait_for(timeout=120_000)

        # the progress table renders inline: every phase, devices on the release rising to all
        body = page.inner_text("body")
        steps = re.findall(r"deploy_phase\s+(\d)\s+(\d+)\s+(\d+)", body)
        assert [phase for phase, _, _ in steps] == ["0", "1", "2"], body
        on_release = [int(on) for _, _, on in steps]
        assert 0 < on_release[0] < on_release[1] < on_release[2] == 200
        assert re.search(r"\bcomplete\b[^\n]*\b200\s+200\n", body), body

        show_chart.click()
        img = page.locator(f'img[alt="rollout {rid}"]')
        img.wait_for(timeout=60_000)
        page.wait_for_function(
            "el => el.complete && el.naturalWidth > 0", arg=img.element_handle(), timeout=60_000
        )
        width, height, src = img.evaluate("el => [el.naturalWidth, el.naturalHeight, el.src.slice(0, 22)]")
        assert src == "data:image/png;base64,"
        assert width > 300 and height > 200
        page.keyboard.press("Escape")

        # the numbers are drawn by the UI itself, across materializations
        page.get_by_role("button", name="Plots").click()
        page.get_by_role("button", name="Events").click()
        page.get_by_text("devices_on_release", exact=True).wait_for(timeout=60_000)
        drawn = page.evaluate(
            "() => Array.from(document.querySelectorAll('canvas')).filter(c => c.width > 0)"
        )
        assert len(drawn) >= 4  # devices on the release and sent, canary and baseline error rates


def chart_entry(page):
    """The ``chart`` row of the page's metadata table."""
    return page.locator("tr", has=page.locator("td", has_text=re.compile(r"^\s*chart\s*$")))
