"""One real-browser test of the workbench (Playwright for Python driving Debian's Chromium).

Loads the page, replaces the preset with a tiny one in the TOML editor, edits fields in the form
(a bad value shows a field-named error, a good one reaches the TOML), launches the run from the
Runs tab, waits for the gallery to show the finished run's grids, and saves screenshots of the
three main views under the test's output folder.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is missing: apt-get install chromium")

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "teacher.kimg": 0.032, "teacher.batch_size": 16, "distill.kimg": 0.016, "distill.batch_size": 8,
    "network.block_out_channels": [16, 32], "data.max_images": 64, "eval.final_fid_n": 0, "eval.live_fid_n": 0,
    "eval.grid_n": 8, "eval.psnr_n": 0, "eval.teacher_steps": 3, "eval.reference_n": 2,
}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _editor_text(page) -> str:
    return page.locator("#preset-editor .cm-content").inner_text()


def test_browser_edit_launch_gallery(tmp_path):
    from workbench import preset_edit as pe
    from workbench.app import create_app, launch_kwargs

    text = (REPO / "presets" / "quickstart.toml").read_text()
    for field, value in TINY.items():
        text = pe.set_field(text, field, value)
    demo, wb = create_app(tmp_path / "runs", tmp_path / "presets", REPO / "presets", grace_s=20)
    port = _free_port()
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(wb, "127.0.0.1", port))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#preset-editor .cm-content", timeout=120_000)
            assert 'name = "quickstart"' in _editor_text(page)

            # the raw TOML editor: replace everything with the tiny preset
            page.locator("#preset-editor .cm-content").click()
            page.keyboard.press("Control+A")
            page.keyboard.insert_text(text)
            page.wait_for_function("() => document.querySelector('#field-data-max-images input').value === '64'", timeout=20_000)

            # the form: a bad value gives a field-named error, a good one goes into the TOML
            resolution = page.locator("#field-data-resolution input")
            resolution.fill("31")
            page.locator("#preset-validation").get_by_text("data.resolution").wait_for(timeout=20_000)
            resolution.fill("32")
            page.locator("#preset-validation").get_by_text("Valid preset").wait_for(timeout=20_000)
            page.locator("#section-distill").get_by_text("Distillation (phase II)").first.click()
            alpha = page.locator("#field-distill-alpha input")
            alpha.fill("1.0")
            page.wait_for_function("() => document.querySelector('#preset-editor .cm-content').innerText.includes('alpha = 1.0')",
                                   timeout=20_000)
            assert "resolution = 32" in _editor_text(page)
            page.screenshot(path=str(shots / "presets.png"), full_page=True)

            # launch from the Runs tab
            page.get_by_role("tab", name="3 · Runs").click()
            page.locator("#launch-run-name input, #launch-run-name textarea").first.fill("browser-run")
            page.locator("#launch-button").click()
            page.locator("#launch-msg").get_by_text("Launched").wait_for(timeout=30_000)

            # the gallery follows the launched run and fills in when it is done
            page.get_by_role("tab", name="5 · Gallery").click()
            page.locator("#gallery-title-a").get_by_text("state done").wait_for(timeout=420_000)
            for model in ("measurements", "teacher-truncated", "teacher-full", "generator"):
                page.locator(f"#gallery-a-{model} img").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "gallery.png"), full_page=True)
            page.get_by_role("tab", name="3 · Runs").click()
            page.locator("#run-detail").get_by_text("done").first.wait_for(timeout=10_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / "runs.png"), full_page=True)
            browser.close()
        assert wb.run_status("browser-run")["state"] == "done"
        for name in ("presets.png", "runs.png", "gallery.png"):
            assert (shots / name).stat().st_size > 10_000
    finally:
        for run in wb.launcher.running():
            wb.launcher.stop(run, wait_s=30)
        demo.close()
        wb.close()


def test_browser_phone_shows_every_tab_the_whole_preset_name_and_a_read_only_save(tmp_path):
    """On a phone-sized viewport every tab is in view (none behind a "⋯" menu), the preset picker shows
    the longest shipped preset's whole name, and Save is disabled on read-only presets."""
    from workbench.app import create_app, launch_kwargs

    longest = max((p.stem for p in (REPO / "presets").glob("*.toml")), key=len)
    demo, wb = create_app(tmp_path / "runs", tmp_path / "presets", REPO / "presets")
    port = _free_port()
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(wb, "127.0.0.1", port))
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#preset-editor .cm-content", timeout=120_000)
            tabs = page.get_by_role("tab").all()
            assert [t.inner_text().strip() for t in tabs] == ["1 · Presets", "2 · Preview", "3 · Runs", "4 · Live plots", "5 · Gallery"]
            for tab in tabs:
                box = tab.bounding_box()
                assert tab.is_visible() and box and 0 <= box["x"] and box["x"] + box["width"] <= 390, tab.inner_text()
            assert page.locator("#preset-save").is_disabled(), "Save is offered on a read-only preset"

            picker = page.locator("#preset-select input").first
            picker.click()
            page.get_by_role("option").filter(has_text=longest).first.click()
            page.locator("#preset-current").get_by_text(longest).wait_for(timeout=20_000)
            assert picker.input_value().startswith(longest)
            shown, room = picker.evaluate("e => [e.scrollWidth, e.clientWidth]")
            assert shown <= room, f"the preset name is cut: {shown} px of text in {room} px"

            page.locator("#preset-new-name input, #preset-new-name textarea").first.fill("mine")
            page.locator("#preset-save-as").click()
            page.locator("#preset-msg").get_by_text("Saved as").wait_for(timeout=20_000)
            page.wait_for_function("() => !document.querySelector('#preset-save').disabled", timeout=20_000)
            browser.close()
    finally:
        demo.close()
        wb.close()
