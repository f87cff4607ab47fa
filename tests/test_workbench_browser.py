"""One real-browser test of the workbench (Playwright for Python driving Debian's Chromium).

Loads the page, replaces the preset with a tiny one in the TOML editor, edits fields in the form
(a bad value shows a field-named error, a good one reaches the TOML), launches the run from the
Runs tab, waits for the gallery to show the finished run's grids, and saves screenshots of the
three main views under the test's output folder.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is missing: apt-get install chromium")

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "teacher.kimg": 0.032,
    "teacher.batch_size": 16,
    "distill.kimg": 0.016,
    "distill.batch_size": 8,
    "network.block_out_channels": [16, 32],
    "data.max_images": 64,
    "eval.final_fid_n": 0,
    "eval.live_fid_n": 0,
    "eval.grid_n": 8,
    "eval.psnr_n": 0,
    "eval.teacher_steps": 3,
    "eval.reference_n": 2,
    "eval.models": ["teacher-full", "teacher-truncated", "generator"],  # the quickstart leaves teacher-full out
}
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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
            page.wait_for_function(
                "() => document.querySelector('#preset-editor .cm-content').innerText.includes('alpha = 1.0')", timeout=20_000
            )
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


def _serve(tmp_path, **kwargs):
    """The workbench on a free loopback port: ``(demo, workbench, url)``."""
    from workbench.app import create_app, launch_kwargs

    demo, wb = create_app(tmp_path / "runs", tmp_path / "presets", REPO / "presets", **kwargs)
    port = _free_port()
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(wb, "127.0.0.1", port))
    return demo, wb, f"http://127.0.0.1:{port}/"


def _open_page(p, url: str):
    """Debian's Chromium (headless) on ``url`` at 1400×900, once the preset editor is on the page:
    ``(browser, page)``."""
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(url)
    page.wait_for_selector("#preset-editor .cm-content", timeout=120_000)
    return browser, page


def _type_into(page, selector: str, text: str) -> None:
    """Select a field's content and type ``text`` key by key, as a person does (a number box drops
    letters it cannot read, which ``fill`` would refuse to do)."""
    page.locator(selector).click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Backspace")
    if text:
        page.keyboard.type(text)


def _leaving_asks(page) -> bool:
    """Whether leaving or reloading the page now would ask first (what the page's beforeunload guard
    asks; a synthetic beforeunload event would also end Gradio's connection)."""
    return page.evaluate("() => window.rsdUnsavedEdits()")


def test_browser_form_never_shows_valid_for_what_the_toml_does_not_hold(tmp_path):
    """Trust defects of the Presets form, on one page load: letters or an empty value in a number
    field is an error on that field and keeps the TOML's key (no "Valid preset"); an unreadable list
    is never shown beside "Valid preset"; a fixed value's error goes away; Launch refuses while the
    form holds a value the TOML does not; picking another preset or leaving the page with unsaved
    edits asks first; after Save as new the Runs tab no longer speaks of unsaved edits."""
    demo, wb, url = _serve(tmp_path)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with playwright_api.sync_playwright() as p:
            browser, page = _open_page(p, url)
            validation = page.locator("#preset-validation")
            validation.get_by_text("Valid preset").wait_for(timeout=20_000)
            page.wait_for_function("() => typeof window.rsdUnsavedEdits === 'function'", timeout=20_000)
            assert not _leaving_asks(page)
            before = _editor_text(page)
            kimg_line = next(line for line in before.splitlines() if line.strip().startswith("kimg"))

            # defect 1: letters in a number field, then an emptied one
            page.locator("#section-teacher").get_by_text("Teacher (phase I)").first.click()
            page.locator("#field-teacher-kimg input").wait_for(timeout=10_000)
            for typed in ("abc", ""):
                _type_into(page, "#field-teacher-kimg input", typed)
                validation.get_by_text("teacher.kimg").wait_for(timeout=20_000)
                assert "Valid preset" not in validation.inner_text()
                assert "field-error" in page.locator("#field-teacher-kimg").get_attribute("class")
                assert kimg_line in _editor_text(page), "the TOML lost or changed the key the user did not delete"
                page.locator("#preset-current").get_by_text("unsaved changes").wait_for(timeout=10_000)
            page.screenshot(path=str(shots / "number-field-error.png"))

            # Launch refuses what the form shows but the TOML does not hold
            page.get_by_role("tab", name="3 · Runs").click()
            assert "✗" in page.locator("#launch-summary").inner_text()
            assert "secondary" in page.locator("#launch-button").get_attribute("class")  # it does not look ready
            page.locator("#launch-button").click()
            page.locator("#launch-msg").get_by_text("not launched").wait_for(timeout=20_000)
            assert wb.run_names() == []
            counted = re.search(r"has (\d+) problem", page.locator("#launch-summary").inner_text()).group(1)
            assert re.search(r"has (\d+) problem", page.locator("#launch-msg").inner_text()).group(1) == counted
            page.get_by_role("tab", name="1 · Presets").click()

            # defect 5: the fixed value's error goes away, and the value reaches the TOML
            _type_into(page, "#field-teacher-kimg input", "0.5")
            validation.get_by_text("Valid preset").wait_for(timeout=20_000)
            page.wait_for_function("() => !document.querySelector('#field-teacher-kimg').className.includes('field-error')", timeout=10_000)
            assert "kimg = 0.5" in _editor_text(page)

            # defect 2: an unreadable list is one problem, never beside "Valid preset"
            page.locator("#section-network").get_by_text("Network").first.click()
            _type_into(page, "#field-network-block-out-channels textarea, #field-network-block-out-channels input", "[16, ")
            validation.get_by_text("network.block_out_channels").wait_for(timeout=20_000)
            assert "Valid preset" not in validation.inner_text()
            _type_into(page, "#field-network-block-out-channels textarea, #field-network-block-out-channels input", "[16, 32]")
            validation.get_by_text("Valid preset").wait_for(timeout=20_000)
            assert "block_out_channels = [16, 32]" in _editor_text(page)

            # defect 4: unsaved edits are not dropped by picking another preset, nor by leaving silently
            assert _leaving_asks(page)
            edited = _editor_text(page)
            picker = page.locator("#preset-select input").first
            picker.click()
            other = next(n for _, n in wb.preset_choices() if n != "quickstart")
            page.get_by_role("option").filter(has_text=other).first.click()
            page.locator("#preset-switch-msg").get_by_text("unsaved edits").wait_for(timeout=20_000)
            assert page.locator("#preset-switch-row").bounding_box()["y"] < 900  # asked where the preset was picked, in view
            assert _editor_text(page) == edited
            page.screenshot(path=str(shots / "switch-asks.png"))
            page.locator("#preset-switch-no").click()
            page.locator("#preset-switch-row").wait_for(state="hidden", timeout=10_000)
            assert _editor_text(page) == edited

            # defect 3: after Save as new, nothing is unsaved any more, here and in the Runs tab
            page.locator("#preset-new-name input, #preset-new-name textarea").first.fill("mine")
            page.locator("#preset-save-as").click()
            page.locator("#preset-msg").get_by_text("Saved as").wait_for(timeout=20_000)
            assert not _leaving_asks(page)
            page.get_by_role("tab", name="3 · Runs").click()
            page.locator("#launch-summary").get_by_text("mine").wait_for(timeout=10_000)
            assert "unsaved" not in page.locator("#launch-summary").inner_text()
            assert "not launched" not in page.locator("#launch-msg").inner_text(), "a message about an earlier preset stayed"
            page.get_by_role("tab", name="1 · Presets").click()
            # saved: another preset now loads at once
            picker.click()
            page.get_by_role("option").filter(has_text=other).first.click()
            page.locator("#preset-current").get_by_text(other).wait_for(timeout=20_000)
            assert page.locator("#preset-switch-row").is_hidden()

            # edits of the newly loaded preset: leaving would ask again
            page.locator("#section-distill").get_by_text("Distillation (phase II)").first.click()
            _type_into(page, "#field-distill-alpha input", "1.0")
            page.locator("#preset-current").get_by_text("unsaved changes").wait_for(timeout=20_000)
            assert _leaving_asks(page)
            browser.close()
    finally:
        demo.close()
        wb.close()


def test_browser_three_runs_compared_on_one_axis_and_fresh_run_messages(tmp_path):
    """With the fake engine: three finished runs selected in Live plots show their FID curves in one
    plot on the global axis (markers, the stage boundary, the comparison table with final FIDs and
    the preset differences); in the Runs tab a resume replaces the launch message instead of
    standing beside it."""
    from test_workbench import FAKE_ENGINE

    engine = tmp_path / "fake_engine.py"
    engine.write_text(FAKE_ENGINE)
    demo, wb, url = _serve(tmp_path, engine_cmd=[sys.executable, str(engine)], grace_s=5)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    text = (REPO / "presets" / "quickstart.toml").read_text()
    try:
        for i, name in enumerate(("r-a", "r-b", "r-c")):
            wb.launch(text.replace("noise_sigma = 0.2", f"noise_sigma = 0.{i + 1}"), name)
        deadline = time.time() + 180
        while any(wb.run_status(n)["state"] != "done" for n in ("r-a", "r-b", "r-c")) and time.time() < deadline:
            time.sleep(0.5)
        with playwright_api.sync_playwright() as p:
            browser, page = _open_page(p, url)
            page.get_by_role("tab", name="4 · Live plots").click()
            compare = page.locator("#plots-compare input").first
            selected = page.locator("#plots-run input").first.input_value()
            assert selected in ("r-a", "r-b", "r-c")  # the newest run; "Compare with" adds the other two
            for other in {"r-a", "r-b", "r-c"} - {selected}:
                compare.click()
                page.get_by_role("option").filter(has_text=other).first.click()
            page.keyboard.press("Escape")
            page.wait_for_function(
                """() => {
                const shown = Array.from(document.querySelectorAll('#plot-fid .legendtext')).map(e => e.textContent).join('|');
                return ['r-a', 'r-b', 'r-c'].every(run => shown.includes(run + ' · generator (n=16)'));
            }""",
                timeout=60_000,
            )
            assert page.locator("#plot-fid .scatterlayer .point").count() >= 12  # markers: 2 teacher + 2 generator points per run
            page.locator("#plot-fid").get_by_text("distillation starts").wait_for(timeout=10_000)
            page.wait_for_function(
                """() => {
                const table = document.querySelector('#plots-table').innerText, diff = document.querySelector('#plots-diff').innerText;
                return ['r-a', 'r-b', 'r-c', '12.50 (n=16)'].every(t => table.includes(t)) && diff.includes('corruption.noise_sigma');
            }""",
                timeout=20_000,
            )
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / "compare.png"), full_page=True)

            # Runs tab: launch a long run, stop it, resume it: the launch message does not stay
            long_text = "# fake-mode: long\n" + text
            page.get_by_role("tab", name="1 · Presets").click()
            page.locator("#preset-editor .cm-content").click()
            page.keyboard.press("Control+A")
            page.keyboard.insert_text(long_text)
            page.get_by_role("tab", name="3 · Runs").click()
            page.locator("#launch-run-name input, #launch-run-name textarea").first.fill("r-long")
            page.locator("#launch-button").click()
            page.locator("#launch-msg").get_by_text("Launched").wait_for(timeout=30_000)
            page.wait_for_function("() => !document.querySelector('#run-stop').disabled", timeout=60_000)
            page.locator("#run-stop").click()
            page.locator("#run-action-msg").get_by_text("stop").first.wait_for(timeout=60_000)
            page.wait_for_function("() => !document.querySelector('#run-resume').disabled", timeout=60_000)
            page.locator("#run-resume").click()
            page.locator("#run-action-msg").get_by_text("Resumed").wait_for(timeout=30_000)
            assert "Launched" not in page.locator("#launch-msg").inner_text()
            page.screenshot(path=str(shots / "runs.png"), full_page=True)
            browser.close()
    finally:
        for run in wb.launcher.running():
            wb.launcher.stop(run, wait_s=10)
        demo.close()
        wb.close()


def _finished_run(folder: Path, teacher_fid: float, generator_fid: float, log_lines: int = 3) -> None:
    """A finished run's folder as the engine leaves it (frozen preset, status, one live FID, final
    metrics without a race record, a log of ``log_lines`` lines)."""
    folder.mkdir(parents=True)
    (folder / "preset.toml").write_text('[corruption]\noperator = "identity"\nnoise_sigma = 0.2\n')
    (folder / "status.json").write_text('{"state": "done", "stage": "evaluate"}')
    (folder / "events.jsonl").write_text(
        '{"time": 1.0, "stage": "distill", "kind": "fid", "model": "generator", "fid": 20.0, "n": 16, "kimg": 0.5}\n'
    )
    (folder / "metrics.json").write_text(
        f'{{"teacher-truncated": {{"fid": {teacher_fid}, "n": 16}}, "generator": {{"fid": {generator_fid}, "n": 16}}}}'
    )
    (folder / "log.txt").write_text("".join(f"log line {i}\n" for i in range(log_lines)))


def test_browser_log_follows_its_end_compare_offers_studies_and_preview_labels_rows(tmp_path):
    """Letters in a number field show that field's error and no Gradio error; an unsaved edit comes back
    after a reload; the log tail shows its last line without scrolling;
    "Compare with" never offers the selected
    run, offers a study folder (benchmarks/fidelity_study.py's layout) that draws all its runs, and
    the table gives the ratio of two equal final FIDs (1.000); the preview labels every row of images
    and lists the operator's settings."""
    runs = tmp_path / "runs"
    _finished_run(runs / "r-long-log", 12.5, 12.5, log_lines=300)
    for name in ("a", "b", "teachers/t"):
        _finished_run(runs / "study-s" / name, 40.0, 30.0)
    demo, wb, url = _serve(tmp_path)
    try:
        with playwright_api.sync_playwright() as p:
            browser, page = _open_page(p, url)
            # a preset picked from the list, then letters typed into a number field: the field's own error,
            # never Gradio's "not enough output values" (an event that changes nothing once answered with an empty dict)
            page.locator("#preset-select input").first.click()
            page.get_by_role("option").filter(has_text="fmnist-deblur-0.2").first.click()
            page.locator("#preset-current").get_by_text("fmnist-deblur-0.2").wait_for(timeout=20_000)
            page.wait_for_timeout(1000)
            _type_into(page, "#field-corruption-noise-sigma input", "abc")
            page.locator("#field-corruption-noise-sigma").get_by_text("the TOML keeps").wait_for(timeout=20_000)
            page.wait_for_timeout(1500)
            assert "output values" not in page.locator("body").inner_text()

            # an edit survives a reload: the new page offers it back, and restoring loads that preset with it
            _type_into(page, "#field-corruption-noise-sigma input", "0.35")
            page.wait_for_function(
                "() => document.querySelector('#preset-editor .cm-content').innerText.includes('noise_sigma = 0.35')", timeout=20_000
            )
            page.reload()
            page.wait_for_selector("#preset-editor .cm-content", timeout=120_000)
            page.locator("#preset-restore-msg").get_by_text("Unsaved edits of fmnist-deblur-0.2").wait_for(timeout=20_000)
            page.locator("#preset-restore-yes").click()
            page.wait_for_function(
                "() => document.querySelector('#preset-editor .cm-content').innerText.includes('noise_sigma = 0.35')", timeout=20_000
            )
            page.locator("#preset-current").get_by_text("fmnist-deblur-0.2").wait_for(timeout=20_000)
            assert "unsaved changes" in page.locator("#preset-current").inner_text()
            page.get_by_role("tab", name="3 · Runs").click()
            page.wait_for_function("() => document.querySelector('#run-log textarea').value.includes('log line 299')", timeout=30_000)
            page.wait_for_timeout(500)
            assert page.evaluate("""() => { const t = document.querySelector('#run-log textarea');
                                          return t.scrollHeight > t.clientHeight && t.scrollTop + t.clientHeight >= t.scrollHeight - 2;
                                          }""")

            page.get_by_role("tab", name="4 · Live plots").click()
            page.locator("#plots-compare input").first.click()
            options = page.get_by_role("option").all_inner_texts()
            assert "study-s/" in options and "study-s/teachers/t" in options and "r-long-log" not in options
            page.get_by_role("option").filter(has_text="study-s/").first.click()
            page.keyboard.press("Escape")
            page.wait_for_function(
                """() => {
                const table = document.querySelector('#plots-table').innerText;
                return ['study-s/a', 'study-s/b', 'study-s/teachers/t', '1.000', '0.750'].every(t => table.includes(t));
            }""",
                timeout=30_000,
            )

            page.get_by_role("tab", name="2 · Preview").click()
            page.locator("#preview-n input[type=number]").fill("6")
            page.locator("#preview-run").click()
            page.locator("#preview-info").get_by_text("Operator settings").wait_for(timeout=120_000)
            info = page.locator("#preview-info").inner_text()
            assert "kernel_size = 9" in info and "std = 2.0" in info and "1. clean test images" in info
            page.wait_for_function(
                "() => { const i = document.querySelector('#preview-image img'); return i && i.naturalHeight > 0; }", timeout=30_000
            )
            natural = page.evaluate(
                "() => { const i = document.querySelector('#preview-image img'); return [i.naturalWidth, i.naturalHeight]; }"
            )
            assert natural[0] == 2 * (6 * 33 + 1) and natural[1] > 2 * (3 * 33 + 1)  # tiles doubled, a label band above each row
            browser.close()
    finally:
        demo.close()
        wb.close()
