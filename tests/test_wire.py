"""shop/wire.py against Gradio itself: every payload the shop makes by hand is what Gradio makes, so a Gradio upgrade
that changes a format fails here, not in a shopper's browser. Real Gradio objects and a real served app, no mocks."""

from __future__ import annotations

import re
import time
from pathlib import Path

import gradio as gr
import pytest
from gradio import processing_utils, utils
from gradio.data_classes import FileData
from gradio_http import ROOT, Shopper, free_port
from helpers import wait_for
from PIL import Image
from starlette.middleware import Middleware

from shop import wire
from shop.server import Pictures

ROWS = [12, 5, 40]  # the catalog rows of the test gallery, in order


def pinned_gradio() -> str:
    """The gradio version requirements.txt pins."""
    match = re.search(r"^gradio==(\S+)\s*$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert match, "requirements.txt pins no gradio version"
    return match.group(1)


def test_gradio_is_the_version_wire_py_is_written_for():
    pinned = pinned_gradio()
    assert gr.__version__ == pinned, (
        f"wire.py is written for gradio {pinned}; check every payload before upgrading "
        f"(installed: gradio {gr.__version__})"
    )


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[str]:
    """Thumbnails named as the catalog names them (r<row>-<key>.jpg), in a folder whose name needs quoting in a URL."""
    folder = tmp_path_factory.mktemp("wire") / "thumbs ü#%"
    folder.mkdir()
    paths = []
    for i, row in enumerate(ROWS):
        path = folder / f"r{row}-{i:02x}ab.jpg"
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(path, "JPEG")
        paths.append(str(path))
    gr.set_static_paths([str(folder)])  # as app.py serves the thumbnail folder
    return paths


def test_gallery_data_is_what_gallery_postprocess_makes(pictures):
    root = "http://127.0.0.1:7860"
    for items in (
        [(wire.picture_url(root, p), f"caption {i}") for i, p in enumerate(pictures)],  # URLs
        [(wire.picture_url(None, p), f"caption {i}") for i, p in enumerate(pictures)],  # files
        [],
    ):
        assert wire.gallery_data(items) == gr.Gallery().postprocess(items).model_dump()


def test_file_data_is_gradios_file_data_with_gradios_own_url(pictures):
    path, root = pictures[0], "https://shop.example/sub"
    image = gr.Image()
    gradios = processing_utils.add_root_url(  # what Gradio sends for an Image output of this file
        processing_utils.move_files_to_cache(image.postprocess(path), image, postprocess=True), root, None
    )
    for made in (wire.file_data(root, path), wire.file_data(None, path)):
        assert list(made) == list(FileData.model_fields) and FileData(**made).model_dump() == made
    made = wire.file_data(root, path)
    assert made["url"] == f"{root}/{wire.file_route(path)}" and gradios["url"].startswith(f"{root}/gradio_api/")
    assert made["orig_name"] == gradios["orig_name"] and made["meta"] == gradios["meta"]
    assert made == gr.Gallery().postprocess([(made["url"], "")]).model_dump()[0]["image"]  # as a gallery's picture
    assert wire.file_data(root, None) is None and gr.Image().postprocess(None) is None


def test_file_route_names_the_picture_not_its_folder():
    assert wire.file_route("/tmp/thumbs ü#%/r1-ab.jpg") == "pictures/r1-ab.jpg"  # served by server.Pictures


def test_table_data_is_what_dataframe_postprocess_makes():
    headers = ["product", "found with", "rounds", "strategy"]
    for rows in (
        [["Round lamp no. 3", "This is it", 2, "mean"], ["", "gave up", "", "bayes"], ["", "mean of 1", 2.5, "mean"]],
        [],
    ):
        assert wire.table_data(headers, rows) == gr.Dataframe(headers=headers, value=[]).postprocess(rows).model_dump()


def test_update_and_skip_are_gradios():
    for value, visible in (("This is it", True), (None, False), ([], True)):
        made = wire.update(value, visible)
        assert made == gr.update(value=value, visible=visible) and utils.is_prop_update(made)
    assert wire.skip() == gr.skip() and utils.is_prop_update(wire.skip())


@pytest.fixture(scope="module")
def served(pictures):
    """A small app served for real: a gallery sent as the shop sends it, an Image output Gradio makes itself, the page
    root the shop works out, a click's row, and a session with state."""
    with gr.Blocks() as demo:
        gallery, image, root, row = gr.Gallery(), gr.Image(), gr.Textbox(), gr.Number()
        state, button, html, said = gr.State(None), gr.Button(), gr.HTML("<a>x</a>"), gr.Textbox()

        def show(request: gr.Request) -> list[dict]:
            return wire.gallery_data([(wire.picture_url(wire.page_root(request), p), "c") for p in pictures])

        def page_root(request: gr.Request) -> str:
            return wire.page_root(request) or ""

        def clicked(evt: gr.SelectData) -> int:
            found = wire.clicked_row(ROWS, evt)
            return -1 if found is None else found

        def product_of(evt: gr.EventData) -> str:
            return str(wire.event_value(evt, "product"))

        button.click(show, None, gallery, api_name="show", postprocess=False)
        button.click(lambda: pictures[1], None, image, api_name="gradio_image")
        button.click(page_root, None, root, api_name="page_root")
        gallery.select(clicked, None, row, api_name="clicked")
        html.click(product_of, None, said, api_name="html_click")
        button.click(lambda: {"kept": True}, None, state, api_name="keep")
    port = free_port()
    pictures_route = Middleware(Pictures, folder=Path(pictures[0]).parent)  # as app.py serves the thumbnails
    demo.queue().launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, app_kwargs={"middleware": [pictures_route]}
    )
    yield demo, f"http://127.0.0.1:{port}"
    demo.close()


@pytest.mark.parametrize(
    "proxy",
    [None, {"X-Forwarded-Host": "shop.example", "X-Forwarded-Proto": "https"}],
    ids=["direct", "behind-a-proxy"],
)
def test_page_root_and_picture_url_are_gradios_own(served, pictures, proxy):
    """The root the shop works out is the one Gradio puts before its own files' URLs, proxies included; the
    picture's URL is under that root, and the shop's picture route serves the file."""
    import requests

    _, url = served
    shopper = Shopper(url)
    shopper.http.headers.update(proxy or {})
    root = shopper.call("page_root")[0]
    assert root == ("https://shop.example" if proxy else url)
    gradios = shopper.call("gradio_image")[0]
    assert gradios["url"].startswith(f"{root}/gradio_api/file=")
    assert wire.picture_url(root, pictures[1]) == wire.file_data(root, pictures[1])["url"]
    assert wire.picture_url(root, pictures[1]) == f"{root}/pictures/{Path(pictures[1]).name}"
    served_file = requests.get(wire.picture_url(url, pictures[1]), timeout=10)
    assert served_file.status_code == 200 and served_file.content == Path(pictures[1]).read_bytes()
    assert wire.page_root(None) is None and wire.page_root(gr.Request()) is None


def test_a_click_on_a_gallery_is_read_as_gradio_sends_it(served, pictures):
    """The gallery as the page holds it (sent with postprocess=False, as the shop sends it), and a click on it as a
    browser sends it: the row at that place; a stale picture or a wrong index gives None."""
    assert "select" in [getattr(e, "event_name", e) for e in gr.Gallery.EVENTS]
    _, url = served
    shopper = Shopper(url)
    items = shopper.call("show")[0]
    assert [wire.row_of_thumb(item) for item in items] == ROWS
    for index, item in enumerate(items):
        assert shopper.call("clicked", event_data={"index": index, "value": item, "selected": True})[0] == ROWS[index]
    assert shopper.call("clicked", event_data={"index": 0, "value": items[1], "selected": True})[0] == -1  # stale
    for index in (3, -1, True, None, [0, 1]):
        event = gr.SelectData(None, {"index": index, "value": None})
        assert wire.clicked_row(ROWS, event) is None
    assert wire.clicked_row(ROWS, gr.SelectData(None, {"index": 2, "value": None})) == ROWS[2]  # no picture: trusted


def test_a_value_sent_by_an_html_trigger_is_read_as_gradio_sends_it(served):
    """gr.HTML's `trigger('click', {product: ...})` (the product page's *View in shop*) as a browser sends it: the
    text; anything else (not text, too long, missing) is None."""
    _, url = served
    shopper = Shopper(url)
    assert shopper.call("html_click", event_data={"product": "p007"})[0] == "p007"
    for data in ({"product": 7}, {"product": "x" * 5000}, {}, None, ["p007"]):
        assert shopper.call("html_click", event_data=data)[0] == "None"


def test_forget_session_drops_gradios_record_of_a_session(served):
    demo, url = served
    shopper = Shopper(url)
    shopper.call("keep")
    session, holder, queue = shopper.session_hash, demo.state_holder, demo._queue
    deadline = time.time() + 10
    while queue.pending_event_ids_session.get(session) and time.time() < deadline:
        time.sleep(0.05)  # the finished event leaves the session's pending set
    assert session in holder and session in holder.session_data and session in holder.time_last_used
    assert session in queue.pending_messages_per_session and session in queue.pending_event_ids_session
    assert {"kept": True} in holder[session].state_data.values()
    wire.forget_session(demo, gr.Request(session_hash=session))
    assert session not in holder.session_data and session not in holder.time_last_used
    assert session not in queue.pending_messages_per_session and session not in queue.pending_event_ids_session


def test_calls_without_a_session_leave_none_behind(served):
    import requests

    demo, url = served
    holder, queue = demo.state_holder, demo._queue
    assert set(vars(wire.bare_session(demo))) == set(vars(gr.state_holder.SessionState(demo)))  # Gradio's fields
    wire.keep_no_sessions_for_calls(demo)
    shopper = Shopper(url)
    shopper.call("keep")  # a page's session: kept as before
    assert shopper.session_hash in holder.session_data
    sessions, http, event_ids = len(holder.session_data), requests.Session(), []
    for _ in range(12):  # as curl calls: no session hash
        posted = http.post(f"{url}/gradio_api/call/page_root", json={"data": []}, timeout=30)
        event_ids.append(posted.json()["event_id"])
        stream = http.get(f"{url}/gradio_api/call/page_root/{event_ids[-1]}", timeout=30).text
        assert "event: complete" in stream and url.rstrip("/") in stream  # the call works
    assert len(holder.session_data) == sessions  # no session kept for any of them
    time.sleep(1.1)  # the message queues of read results go at the next call's sweep (at most once a second)
    unread = http.post(f"{url}/gradio_api/call/page_root", json={"data": []}, timeout=30).json()["event_id"]
    wait_for(lambda: unread not in queue.event_ids_to_events)  # run (sweeping on its way), its result not read
    left = set(queue.pending_messages_per_session) | set(queue.pending_event_ids_session)
    assert not left & set(event_ids)
    assert unread in queue.pending_messages_per_session and unread in holder.calls  # kept while it may be read
    holder.sweep(now=time.monotonic() + wire.CALL_RESULT_KEEP_S + 1)  # never read: dropped too
    assert unread not in queue.pending_messages_per_session and unread not in holder.calls
