"""Make the three pictures of docs/visualization.md from a trained checkpoint (run by make_pictures.sh):
``report_gallery.png`` (the worst predictions of an eval report.html), ``attention_map.png`` (an inference.py
--attention picture) and ``web_page.png`` (app.py after grounding an example), the pages rendered by Debian's
headless Chromium through Playwright. Each PNG is palette-quantised to stay small.

    python docs/images/screenshot.py --eval_model CKPT --report REPORT.html --attention ATT.png --out docs/images \
        [--upload IMG --query TEXT]

The page grounds ``--query`` in the uploaded ``--upload`` image, or by default "the red square over the star" in the
bundled example ``shapes_2.png``.
"""
from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Optional, Sequence

from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def small_png(data: bytes, path: str, colours: int = 128) -> None:
    """Save PNG ``data`` palette-quantised to ``colours`` colours at ``path``."""
    with Image.open(io.BytesIO(data)) as img:
        img.convert("RGB").quantize(colours).save(path, optimize=True)
    print(f"{path}: {os.path.getsize(path) // 1024} KB")


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser("python docs/images/screenshot.py")
    p.add_argument("--eval_model", required=True)
    p.add_argument("--report", required=True, help="an eval.py --report report.html")
    p.add_argument("--attention", required=True, help="an inference.py --attention picture")
    p.add_argument("--out", required=True)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--upload", help="an image to upload on the page (default: pick the bundled shapes_2.png)")
    p.add_argument("--query", default="the red square over the star")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with open(args.attention, "rb") as fh:
        small_png(fh.read(), os.path.join(args.out, "attention_map.png"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "app.py"), "--eval_model", args.eval_model,
                               "--device", "cpu", "--port", str(port)], cwd=REPO_ROOT)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto("file://" + os.path.abspath(args.report))
            gallery = page.locator(".gallery").first
            small_png(gallery.screenshot(), os.path.join(args.out, "report_gallery.png"))
            page.goto(url)
            if args.upload:
                page.set_input_files("#upload", args.upload)
            else:
                page.check("input[value='shapes_2.png']")
            page.fill("#query", args.query)
            page.click("#submit")
            page.wait_for_selector("#box")
            small_png(page.screenshot(full_page=True), os.path.join(args.out, "web_page.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
