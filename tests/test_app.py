"""The web page (app.py) end to end in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
upload an image, type an expression, read the box from the page and compare it with inference.py's; bad input gives
a message on the page; no model gives a one-line error saying how to get one."""
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

import app
import inference
from helpers_world import ROOT, free_port, world_with_checkpoint
from utils.errors import InputError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """app.py serving a tiny untrained checkpoint on 127.0.0.1 (a free port), with small limits to test them."""
    root = tmp_path_factory.mktemp("app")
    world = world_with_checkpoint(str(root), n_train_pseudo=4, n_val=4, seed=2)
    ckpt = world["ckpt"]
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), "--eval_model", ckpt, "--device", "cpu",
                             "--port", str(port), "--max_pixels", "20000", "--max_upload_mb", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"app.py did not start: {proc.stdout.read()[-3000:]}")
            time.sleep(0.3)
    yield {"url": url, "ckpt": ckpt, "root": root}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: the page test needs Debian's Chromium; install it with "
                    "`apt-get install chromium` (the README's `make test` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _submit(browser, url, query, upload=None):
    page = browser.new_page()
    page.goto(url)
    if upload is not None:
        page.set_input_files("#upload", str(upload))
    page.fill("#query", query)
    page.click("#submit")
    page.wait_for_selector("#box, #error")
    return page


def test_uploaded_image_gets_the_same_box_as_inference(served, browser, tmp_path):
    image = tmp_path / "mine.png"           # 64x40: padded on the canvas
    Image.radial_gradient("L").resize((64, 40)).convert("RGB").save(image)
    query = "the bright thing on the left"
    page = _submit(browser, served["url"], query, image)
    box_text = page.text_content("#box")
    page_box = [float(v) for v in re.findall(r"-?\d+\.\d+", box_text)]
    assert page.get_attribute("#attention", "src").startswith("data:image/png;base64,")
    expected = inference.main(["--eval_model", served["ckpt"], "--device", "cpu", "--image", str(image),
                               "--query", query])[0]["box_xyxy"]
    assert page_box == pytest.approx(expected, abs=1e-6)
    page.close()


def test_bundled_example_is_grounded(served, browser):
    page = browser.new_page()
    page.goto(served["url"])
    examples = page.query_selector_all("input[name=example]")
    assert len(examples) >= 3 and examples[0].is_checked()
    page.fill("#query", "the small star")
    page.click("#submit")
    page.wait_for_selector("#box")
    assert len(re.findall(r"\d+\.\d+", page.text_content("#box"))) == 4
    page.close()


@pytest.mark.parametrize("query, upload, message", [
    ("", None, "type an expression"),
    ("a dog", "text", "not a readable image"),
    ("a dog", "many_pixels", "the limit is 20,000 pixels"),
    ("a dog", "many_bytes", "larger than 1 MB"),
])
def test_bad_input_gives_a_message_on_the_page(served, browser, tmp_path, query, upload, message):
    path = None
    if upload == "text":
        path = tmp_path / "notes.png"
        path.write_text("not a picture")
    elif upload == "many_pixels":
        path = tmp_path / "big.png"
        Image.new("RGB", (200, 200)).save(path)
    elif upload == "many_bytes":
        path = tmp_path / "huge.png"
        path.write_bytes(os.urandom(1_200_000))
    page = _submit(browser, served["url"], query, path)
    assert message in page.text_content("#error")
    assert page.query_selector("#box") is None and "Traceback" not in page.content()
    page.close()


def test_no_model_says_how_to_get_one(tmp_path):
    with pytest.raises(InputError, match=r"no model: .*msa_result.json does not exist \(run `python demo.py`"):
        app.main(["--demo_dir", str(tmp_path / "nothing")])


def test_help_names_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        app.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--eval_model", "--host", "--port", "--device", "--max_pixels"))
