"""The web page of `pengi serve` in a real browser: headless Chromium (Debian's) driven by Playwright.

The server runs the default model shipped with pengi, so the answers read as captions. `.ci/run` installs
chromium; elsewhere the tests are skipped when it is missing. Set PENGI_SCREENSHOT=docs/serve-page.png to
refresh the screenshot in the docs.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from pengi import Pengi  # noqa: E402
from tests.serving_utils import ROOT, ServerProcess  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run",
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]  # a fake microphone
EXAMPLES = os.path.join(ROOT, "examples")

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install "
                                                                      "chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("browser") / "server.log"
    # no --model: the shipped default model; --model-thread: this module covers the in-process mode as well
    proc = ServerProcess("--model-thread", log_path=str(log)).start()
    yield proc
    assert proc.stop() == 0
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture(scope="module")
def model():
    return Pengi.from_pretrained().eval()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1000, "height": 1250})
    context.grant_permissions(["microphone"], origin=server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-state=ready]", timeout=30000)
    yield page
    assert errors == []
    assert all(url.startswith(server.url) or url.startswith(("data:", "blob:")) for url in requests), requests
    context.close()


def ask(page):
    page.wait_for_function("!document.getElementById('go').disabled")
    page.click("#go")
    page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=60000)
    assert page.inner_text("#error") == ""


def canvas_has_ink(page, selector: str) -> bool:
    return page.evaluate("""(sel) => {
        const c = document.querySelector(sel), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const first = [d[0], d[1], d[2]];
        for (let i = 0; i < d.length; i += 4) if (d[i] !== first[0] || d[i + 1] !== first[1]) return true;
        return false;
    }""", selector)


def test_upload_a_file_and_read_the_answer(page, model, server):
    path = os.path.join(EXAMPLES, "high_tone_loud.wav")
    page.set_input_files("#file", path)
    ask(page)
    assert page.inner_text("#answer") == model.generate(path, "generate audio caption")[0]
    assert "ms round trip" in page.inner_text("#latency") and "on the server" in page.inner_text("#latency")
    assert canvas_has_ink(page, "#wave") and canvas_has_ink(page, "#spec")
    assert "pengi-default" in page.inner_text("#model-line")
    health = page.evaluate("fetch('/health').then(r => r.json())")
    assert health["model_pid"] == server.proc.pid  # the model runs on a thread of the server process


def test_type_a_question(page, model):
    path = os.path.join(EXAMPLES, "noise_quiet.wav")
    page.set_input_files("#file", path)
    page.select_option("#task", "")
    question = "question: is the sound loud?"
    page.fill("#prompt", question)
    ask(page)
    assert page.inner_text("#answer") == model.generate(path, question)[0]


def test_a_long_recording_shows_its_timestamped_windows(page, model, tmp_path):
    path = os.path.join(EXAMPLES, "sequence_3s.flac")
    page.set_input_files("#file", path)
    page.wait_for_function("!document.getElementById('go').disabled")
    assert page.is_checked("#windows")  # checked by itself: the recording is longer than the model's clip
    ask(page)
    rows = page.eval_on_selector_all("#windows-table tbody tr",
                                     "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    expected = model.generate_windows(path, "generate audio caption")[0]
    assert rows == [[f"{w['start']:.2f} s", f"{w['end']:.2f} s", w["text"]] for w in expected]
    assert page.inner_text("#answer") == f"{len(expected)} windows"
    screenshot = os.environ.get("PENGI_SCREENSHOT")
    page.screenshot(path=screenshot or str(tmp_path / "page.png"), full_page=True)


def test_record_with_the_microphone(page):
    page.click("#record")
    page.wait_for_timeout(1500)
    page.click("#record")
    page.wait_for_function("document.getElementById('clip-info').textContent.startsWith('recording')")
    assert "uploaded as wav" in page.inner_text("#clip-info")  # webm/opus from MediaRecorder, converted here
    ask(page)
    assert page.inner_text("#answer").strip()


def test_a_file_that_is_not_audio_shows_the_servers_error(page, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("these are my notes, not a recording\n" * 20)
    page.set_input_files("#file", str(bad))
    page.wait_for_function("!document.getElementById('go').disabled")
    page.click("#go")
    page.wait_for_selector("body[data-state=error]", timeout=30000)
    assert "notes.wav" in page.inner_text("#error") and "cannot decode" in page.inner_text("#error")
