"""A local web page to ground your own images: pick a bundled example or upload an image, type an expression, and
see the box, [REG]'s attention heatmap and the box's coordinates.

    python app.py                        # the MSA model that `python demo.py` trained
    python app.py --eval_model CKPT [--host 127.0.0.1] [--port 7860] [--device cpu]

The prediction is ``inference.py``'s (``inference.ground_images``, the attention from the same forward pass).
Uploads larger than ``--max_upload_mb`` or ``--max_pixels`` are refused on the page, as are unreadable images and
empty expressions. docs/visualization.md describes the page.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import sys
import threading
from typing import Any, Dict, List, Optional, Sequence

from PIL import Image, UnidentifiedImageError

from utils.errors import InputError, UsageError

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
EXAMPLES_DIR = os.path.join(REPO_ROOT, "assets", "examples")
MAX_QUERY_CHARS = 300


def demo_msa_model(demo_output_dir: str) -> str:
    """The MSA final model that ``python demo.py --output_dir demo_output_dir`` trained (recorded in its
    ``msa/msa_result.json``); ``InputError`` saying how to get one when there is none."""
    record = os.path.join(demo_output_dir, "msa", "msa_result.json")
    how = "run `python demo.py` to train one, or give --eval_model CKPT"
    try:
        with open(record) as fh:
            model = json.load(fh).get("final_model")
    except OSError:
        raise InputError(f"no model: {record} does not exist ({how})") from None
    except json.JSONDecodeError:
        raise InputError(f"no model: {record} is not valid JSON ({how})") from None
    if not model or not os.path.isfile(model):
        raise InputError(f"no model: {record} names no trained MSA final model ({how})")
    return model


def example_images(folder: str) -> List[str]:
    """File names of the bundled example pictures in ``folder`` (sorted)."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n.lower().endswith((".png", ".jpg", ".jpeg")))


def open_upload(data: bytes, max_pixels: int) -> Image.Image:
    """The uploaded bytes as an RGB image; ``ValueError`` with a message for the page when they are not a readable
    image or have more than ``max_pixels`` pixels (checked before decoding)."""
    if not data:
        raise ValueError("choose an example or upload an image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise ValueError(f"the image is {img.width}x{img.height} pixels; the limit is {max_pixels:,} pixels")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not a readable image ({type(exc).__name__})") from None


PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>CLIP-VG: ground an expression</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:62em}}label{{display:block;margin:.4em 0}}
.examples{{display:flex;gap:.6em;flex-wrap:wrap}}.examples label{{text-align:center;font-size:.8em}}
.examples img{{display:block;width:96px;height:96px;object-fit:contain;border:1px solid #ccc}}
#error{{color:#b00;font-weight:bold}}#result img{{max-width:100%}}input[type=text]{{width:30em}}</style></head>
<body><h1>CLIP-VG: ground a referring expression</h1>
<p>Model: <code>{model}</code></p>
<form method="post" action="/" enctype="multipart/form-data">
<fieldset><legend>Image: an example, or upload your own (an upload wins)</legend><div class="examples">{examples}</div>
<label>Upload (at most {max_mb} MB and {max_pixels:,} pixels): <input type="file" id="upload" name="upload"
 accept="image/*"></label></fieldset>
<label>Expression: <input type="text" id="query" name="query" value="{query}" maxlength="{max_chars}"
 placeholder="the red circle on the left"></label>
<button type="submit" id="submit">Ground it</button></form>
{error}{result}</body></html>
"""


def render_page(model_name: str, examples: List[str], limits: Dict[str, int], query: str = "",
                chosen: str = "", error: str = "", result: Optional[Dict[str, Any]] = None) -> str:
    """The page: the form (with ``chosen`` example selected), an error message or the result."""
    radios = []
    for name in examples:
        checked = " checked" if name == chosen else ""
        radios.append(f'<label><input type="radio" name="example" value="{html.escape(name)}"{checked}>'
                      f'<img src="/examples/{html.escape(name)}" alt="{html.escape(name)}">{html.escape(name)}'
                      "</label>")
    block = ""
    if result is not None:
        box = ", ".join(f"{v:.2f}" for v in result["box_xyxy"])
        block = (f'<div id="result"><h2>Result</h2><p>Box (x1, y1, x2, y2 in image pixels): '
                 f'<code id="box">[{box}]</code> on a {result["width"]}x{result["height"]} image</p>'
                 f'<img id="attention" alt="box and attention" src="data:image/png;base64,{result["png"]}"></div>')
    return PAGE.format(model=html.escape(model_name), examples="".join(radios), max_mb=limits["max_upload_mb"],
                       max_pixels=limits["max_pixels"], query=html.escape(query), max_chars=MAX_QUERY_CHARS,
                       error=f'<p id="error">{html.escape(error)}</p>' if error else "", result=block)


def create_app(model: Any, device: Any, args: argparse.Namespace, model_name: str, examples_dir: str,
               limits: Dict[str, int]) -> Any:
    """The Flask application around a loaded model (``inference.load_model``); ``args`` are inference's."""
    from flask import Flask, abort, request, send_from_directory

    import inference

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = limits["max_upload_mb"] * 1024 * 1024
    examples = example_images(examples_dir)
    lock = threading.Lock()  # one forward pass at a time on the shared model

    def page(**kwargs: Any) -> str:
        return render_page(model_name, examples, limits, **kwargs)

    @app.get("/")
    def index() -> str:
        return page(chosen=examples[0] if examples else "")

    @app.get("/examples/<name>")
    def example(name: str) -> Any:
        if name not in examples:
            abort(404)
        return send_from_directory(examples_dir, name)

    @app.errorhandler(413)
    def too_large(_: Any) -> Any:
        return page(error=f"the upload is larger than {limits['max_upload_mb']} MB"), 413

    @app.post("/")
    def ground() -> Any:
        query = request.form.get("query", "").strip()
        chosen = request.form.get("example", "")
        upload = request.files.get("upload")
        try:
            if upload is not None and upload.filename:
                data = upload.read()
            elif chosen in examples:
                with open(os.path.join(examples_dir, chosen), "rb") as fh:
                    data = fh.read()
            else:
                data = b""
            image = open_upload(data, limits["max_pixels"])
            if not query:
                raise ValueError("type an expression, e.g. 'the red circle on the left'")
            if len(query) > MAX_QUERY_CHARS:
                raise ValueError(f"the expression is longer than {MAX_QUERY_CHARS} characters")
        except ValueError as exc:
            return page(query=query, chosen=chosen, error=str(exc)), 400
        with lock:
            (grounding,) = inference.ground_images(model, [image], [query], args, device, args.attention_layer)
        result = {"box_xyxy": grounding.box_xyxy, "width": image.width, "height": image.height,
                  "png": base64.b64encode(grounding.attention_png).decode("ascii")}
        return page(query=query, chosen=chosen, result=result)

    return app


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python app.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--eval_model", default="",
                   help="checkpoint to serve (default: the MSA final model of `python demo.py`, see --demo_dir)")
    p.add_argument("--demo_dir", default="demo_out", help="demo.py's --output_dir, for the default model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", default=7860, type=int)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--attention_layer", default=-1, type=int,
                   help="fusion layer whose [REG] attention is shown (default -1: the last)")
    p.add_argument("--max_upload_mb", default=8, type=int, help="largest upload accepted, in MB (default 8)")
    p.add_argument("--max_pixels", default=4096 * 4096, type=int,
                   help="largest image accepted, in pixels (default 4096x4096)")
    p.add_argument("--examples", default=EXAMPLES_DIR, help="folder of example pictures offered on the page")
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point; ``argv`` like ``sys.argv[1:]``. Serves until interrupted."""
    import inference
    from utils.args import parse_args

    opts = build_parser().parse_args(argv)
    if not 0 < opts.port < 65536:
        raise UsageError(f"--port {opts.port}: must be between 1 and 65535")
    if opts.max_upload_mb < 1 or opts.max_pixels < 1:
        raise UsageError("--max_upload_mb and --max_pixels must be at least 1")
    checkpoint = opts.eval_model or demo_msa_model(opts.demo_dir)
    flags = ["--eval_model", checkpoint, "--attention_layer", str(opts.attention_layer)]
    args = parse_args("inference", flags + (["--device", opts.device] if opts.device else []))
    model, device = inference.load_model(args)
    limits = {"max_upload_mb": opts.max_upload_mb, "max_pixels": opts.max_pixels}
    app = create_app(model, device, args, os.path.basename(checkpoint), opts.examples, limits)
    print(f"serving {checkpoint} on http://{opts.host}:{opts.port} (Ctrl-C stops)", file=sys.stderr, flush=True)
    app.run(host=opts.host, port=opts.port, debug=False, use_reloader=False, threaded=True)


if __name__ == "__main__":
    from utils.cli import run_cli

    run_cli(main)
