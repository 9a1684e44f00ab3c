"""The framework's floor: the smallest Gradio app with the shop's event shape, for bench/load_bench.py.

    python bench/floor_app.py PICTURE_DIR --port P [--host 127.0.0.1] [--urls]

A 10-picture gallery whose `select` event (api_name "pick") returns 10 other pictures with captions, chosen at
random from PICTURE_DIR: the work any Gradio app pays per click, before any logic of its own. With `--urls` the
gallery carries URLs of the pictures (served by Gradio's file route) instead of files.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import gradio as gr


def main() -> None:
    """Serve the floor app until stopped."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pictures")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--urls", action="store_true")
    args = ap.parse_args()
    files = sorted(str(p) for p in Path(args.pictures).glob("*.jpg"))
    base = f"http://{args.host}:{args.port}/gradio_api/file="

    def gallery() -> list[tuple[str, str]]:
        return [(base + f if args.urls else f, f"product {i}") for i, f in enumerate(random.sample(files, 10))]

    def pick(evt: gr.SelectData) -> list[tuple[str, str]]:
        return gallery()

    gr.set_static_paths([args.pictures])
    with gr.Blocks() as demo:
        products = gr.Gallery(columns=5, allow_preview=False, interactive=False)
        demo.load(gallery, None, products, api_name="start")
        products.select(pick, None, products, api_name="pick", concurrency_limit=None)
    demo.queue(default_concurrency_limit=None).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
