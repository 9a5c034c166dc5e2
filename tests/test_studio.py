"""cnn-vis studio (cnnvis/studio.py, studio_page.py, studio_runs.py): a studio started here
on the offline model, driven by a real headless Chromium (Playwright, Debian's chromium) and
by Gradio's own client: a picture made, previewed, stopped and downloaded; eight clients at
once; bad uploads and requests that name paths."""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

import cnnvis
from cnnvis.errors import UserError
from cnnvis.studio import check_studio_options, credentials
from cnnvis.studio_runs import recipe_values

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
MODEL = "efficientnet_lite0"
MAX_MB, MAX_MEGAPIXELS = 1.0, 0.3   # the test studio's upload limits


def test_the_studio_listens_beyond_this_machine_only_with_a_password_or_when_told():
    assert credentials("127.0.0.1", None, False) is None
    assert credentials("::1", "ann:secret:x", False) == ("ann", "secret:x")
    with pytest.raises(UserError, match="--listen 0.0.0.0 lets anyone .* --auth USER:PASSWORD"):
        credentials("0.0.0.0", None, False)
    assert credentials("0.0.0.0", None, True) is None
    with pytest.raises(UserError, match="--auth takes USER:PASSWORD"):
        credentials("0.0.0.0", "ann", False)


def test_a_studio_option_without_the_studio_is_refused():
    with pytest.raises(UserError, match="--port is an option of the studio; add --studio"):
        check_studio_options({"port": 8000})
    check_studio_options({"studio": True, "port": 8000})


def test_the_studio_says_how_to_install_gradio_where_it_is_missing():
    code = ("import sys; sys.modules['gradio'] = None; from cnnvis.cli import main; "
            "sys.exit(main(['studio', '--port', '1']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 2
    assert "pip install 'cnn-vis[studio]'" in run.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------- a running studio

needs_gradio = pytest.mark.skipif(
    find_spec("gradio") is None or find_spec("gradio_client") is None,
    reason="needs Gradio and gradio_client (pip install 'cnn-vis[studio]' gradio_client)")
needs_chromium = pytest.mark.skipif(
    find_spec("playwright") is None or not os.access(CHROMIUM, os.X_OK),
    reason=f"needs Playwright (pip install playwright) and Debian's chromium at {CHROMIUM} "
           "(apt-get install chromium; .ci/run installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningStudio:
    def __init__(self, process: subprocess.Popen, url: str, tmp: Path, log: list[str]):
        self.process, self.url, self.tmp, self.log = process, url, tmp, log

    def root(self) -> Path:
        (root,) = self.tmp.glob("cnn-vis-studio-*")
        return root

    def started_runs(self) -> list[str]:
        """The sessions' folder names, in the order their runs started."""
        return re.findall(r"run \d+ for session (\w+) started", "\n".join(self.log))


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> RunningStudio:
    """`cnn-vis studio` on a free port, its temporary folder and working folder in a folder
    of the test's own (so that what it writes can be seen)."""
    tmp = tmp_path_factory.mktemp("studio")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp),
           "CNN_VIS_HOME": str(tmp_path_factory.mktemp("home"))}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cnn_vis.py"), "studio", "--port", str(port), "--gpu", "-1",
         "--max_upload_mb", str(MAX_MB), "--max_upload_megapixels", str(MAX_MEGAPIXELS)],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            log.append(line)
            if "cnn-vis studio: open http://" in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120):
        process.kill()
        pytest.fail("the studio did not start:\n" + "".join(log))
    yield RunningStudio(process, f"http://127.0.0.1:{port}/", tmp, log)
    process.terminate()
    process.wait(30)


def _photo(path: Path, size: int) -> Path:
    Image.fromarray(skimage.data.coffee()).resize((size, size), Image.Resampling.BICUBIC).save(path)
    return path


def _panel(**values) -> list:
    """The dream endpoint's picture options, in the page's order, at the table's defaults
    but for `values`. (After them the endpoint takes the browser's session key: "" for
    none, the session of the client's own session hash.)"""
    from cnnvis.studio_page import PANEL_OPTIONS
    options = {**recipe_values(None, MODEL), "output_iter": 5, **values}
    return [options[name] for name in PANEL_OPTIONS]


def _pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def model():
    return cnnvis.load_model(MODEL, device="cpu")


@needs_gradio
def test_eight_clients_at_once_each_get_their_own_picture_first_come_first_served(
        studio, model, tmp_path):
    from gradio_client import Client
    clients = [Client(studio.url, verbose=False, analytics_enabled=False,
                      download_files=tmp_path / str(number)) for number in range(8)]
    jobs = []
    for seed, client in enumerate(clients):
        jobs.append(client.submit(None, MODEL, "", seed, 8, *_panel(num_steps=2), "",
                                  api_name="/dream"))
        # The next client asks only once the server holds this one's request.
        while jobs[-1].status().code.name in ("STARTING", "JOINING_QUEUE"):
            time.sleep(0.05)
    results = [job.result(timeout=300) for job in jobs]
    for seed, (client, result) in enumerate(zip(clients, results)):
        _, _, history, png, command, recorded = result
        assert len(history) == 1 and f"seed {seed}, 2 steps" in history[0]["caption"]
        expected = cnnvis.dream(None, model, seed=seed, num_steps=2, output_iter=5)
        assert np.array_equal(_pixels(png), np.asarray(expected))
        assert f"--seed {seed} " in command and json.loads(recorded)["seed"] == seed
    folders = studio.started_runs()[-8:]
    assert len(set(folders)) == 8   # a folder per session, in the order the clients asked
    assert folders == [hashlib.sha256(c.session_hash.encode()).hexdigest()[:32] for c in clients]
    for folder in folders:
        assert len(list((studio.root() / "sessions" / folder).glob("*.png"))) == 1
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{studio.process.pid}/status")
                         .read_text()).group(1)) * 1024
    print(f"\nstudio peak RSS after 8 clients: {peak / 2**20:.0f} MiB")
    assert peak < 3 * 2**30


BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(tmp_path):
    """A page of a fresh headless Chromium (Debian's), with a user folder of its own."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium", executable_path=CHROMIUM, args=BROWSER_ARGS, headless=True,
            viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        browser.set_default_timeout(60_000)
        yield browser.new_page()
        browser.close()


def _previews_seen(page, count: int) -> list[str]:
    """The preview's first `count` pictures (their addresses), as they come."""
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while len(seen) < count and time.monotonic() < deadline:
        source = page.locator("#preview img").first.get_attribute("src") if page.locator(
            "#preview img").count() else None
        if source and source not in seen:
            seen.append(source)
        time.sleep(0.05)
    return seen


@needs_gradio
@needs_chromium
def test_in_a_browser_a_photo_dreamed_with_a_recipe_previewed_stopped_and_downloaded(
        studio, model, page, tmp_path):
    from playwright.sync_api import expect
    photo = _photo(tmp_path / "coffee.png", 380)
    page.goto(studio.url)
    # The page has its session's key (the load event's) before it dreams.
    page.wait_for_function("() => localStorage.getItem('cnn-vis-studio-session')")
    page.locator("#photo input[type=file]").set_input_files(photo)
    page.locator("#recipe input").click()
    page.get_by_role("option", name="dream", exact=True).click()
    steps = page.locator("#option-num_steps input")
    expect(steps).to_have_value("30")   # the recipe's, shown in its control
    steps.fill("400")
    page.locator("#option-output_iter input").fill("2")   # a preview every 2 steps
    page.locator("#option-output_iter input").press("Tab")
    page.locator("#dream").click()
    assert len(_previews_seen(page, 6)) == 6   # and the dream shows in the screenshot
    expect(page.locator("#progress")).to_contain_text(
        re.compile(r"step \d+ of 800, about \d+ s left"))
    page.locator("#stop").click()
    expect(page.locator("#history")).to_contain_text(re.compile(r"stopped at step \d+ of 800"))
    expect(page.locator("#progress")).to_contain_text(re.compile(r"stopped at step \d+ of 800, in"))
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=tmp_path / "studio.png")
    if os.environ.get("CNN_VIS_STUDIO_SCREENSHOT"):   # the README's picture, made again
        with Image.open(tmp_path / "studio.png") as shot:   # 256 colours: a quarter the bytes
            shot.convert("RGB").quantize(256).save(ROOT / "docs" / "studio.png", optimize=True)

    steps.fill("2")
    steps.press("Tab")
    page.locator("#dream").click()
    expect(page.locator("#history img")).to_have_count(2)
    with page.expect_download() as download:
        page.locator("#download").click()
    png = tmp_path / "downloaded.png"
    download.value.save_as(png)
    options = {**recipe_values("dream", MODEL), "num_steps": 2, "output_iter": 2}
    expected = cnnvis.dream(_pixels(photo), model, seed=0, **options)
    assert np.array_equal(_pixels(png), np.asarray(expected))
    with Image.open(png) as image:
        assert image.text["cnn-vis:seed"] == "0"
        assert "--num_steps 2 " in image.text["cnn-vis:command"]
    page.reload()   # the session, and its history, outlive a refresh
    expect(page.locator("#history img")).to_have_count(2)
    page.locator("#history img").first.click()   # the stopped picture: to dream it again
    expect(page.locator("#command")).to_contain_text("--num_steps 400")
    expect(steps).to_have_value("400")


@needs_gradio
@needs_chromium
def test_in_a_browser_a_corrupt_upload_is_a_message_on_the_page(studio, page, tmp_path):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 50)
    page.goto(studio.url)
    page.locator("#photo input[type=file]").set_input_files(corrupt)
    page.locator("#dream").click()
    page.get_by_text(re.compile("cannot read image 'broken.png': not an image file Pillow can "
                                "decode")).first.wait_for()
    assert studio.process.poll() is None


def _events(studio: RunningStudio, data: list) -> str:
    """What the studio answers to a raw call of its dream endpoint with `data` (the
    server-sent events, as text)."""
    import httpx
    call = httpx.post(f"{studio.url}gradio_api/call/dream", json={"data": data}, timeout=60)
    call.raise_for_status()
    return httpx.get(f"{studio.url}gradio_api/call/dream/{call.json()['event_id']}",
                     timeout=120).text


@needs_gradio
def test_bad_uploads_and_requests_naming_paths_are_messages_and_the_studio_keeps_serving(
        studio, tmp_path):
    import httpx
    from gradio_client import Client, handle_file
    client = Client(studio.url, verbose=False, analytics_enabled=False,
                    download_files=tmp_path / "client")

    def dream(photo):
        return client.predict(photo, MODEL, "", 0, 8, *_panel(num_steps=1), "",
                              api_name="/dream")

    rng = np.random.default_rng(0)
    heavy = tmp_path / "heavy.png"   # noise does not compress: 1.5 MB
    Image.fromarray(rng.integers(0, 256, (700, 700, 3), dtype=np.uint8)).save(heavy)
    wide = tmp_path / "wide.png"     # 0.36 million pixels of one colour, a few kB
    Image.new("RGB", (600, 600), (90, 120, 200)).save(wide)
    bomb = tmp_path / "bomb.png"     # 400 million pixels in 50 kB
    Image.new("1", (20_000, 20_000)).save(bomb)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + bytes(300))
    for photo, message in ((heavy, "exceeds the maximum|too large|MB"),
                           (wide, r"600x600 pixels, more than this studio takes \(0.3 million, "
                                  r"--max_upload_megapixels\)"),
                           (bomb, "cannot read image 'bomb.png': .*could be decompression bomb"),
                           (corrupt, "cannot read image 'corrupt.jpg': not an image file Pillow "
                                     "can decode")):
        with pytest.raises(Exception, match=message):
            dream(handle_file(photo))

    # A picture of this session, in its folder; the path of a file outside the studio.
    dream(handle_file(_photo(tmp_path / "coffee.png", 224)))
    (own,) = (studio.root() / "sessions" / hashlib.sha256(client.session_hash.encode())
              .hexdigest()[:32]).glob("*.png")
    outside = _photo(tmp_path / "outside.png", 224)
    panel = [MODEL, "", 0, 8, *_panel(num_steps=1), ""]   # "": no key, the session hash's
    for path in (str(outside), str(own), "/etc/passwd",
                 f"{studio.root()}/uploads/../../outside.png"):
        answer = _events(studio, [{"path": path, "meta": {"_type": "gradio.FileData"}}, *panel])
        assert "event: error" in answer and "not uploaded by a user" in answer
    answer = _events(studio, [{"path": "http://127.0.0.1:9/photo.png", "url": "http://127.0.0.1:9/",
                               "meta": {"_type": "gradio.FileData"}}, *panel])
    assert "not addresses; upload the file itself" in answer
    for path in (outside, own):   # neither is served
        assert httpx.get(f"{studio.url}gradio_api/file={path}").status_code in (403, 404)

    # An upload named ../../escape.png lands in the upload folder, and dreams.
    upload = httpx.post(f"{studio.url}gradio_api/upload",
                        files={"files": ("../../escape.png", outside.read_bytes(), "image/png")})
    (uploaded,) = upload.json()
    assert Path(uploaded).resolve().is_relative_to(studio.root() / "uploads")
    answer = _events(studio, [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}, *panel])
    assert "event: complete" in answer
    written = [path for path in studio.tmp.rglob("*") if path.is_file()
               and not path.is_relative_to(studio.root())]
    assert written == [] and not list((ROOT / "cnnvis").glob("*.pyi"))   # nor in the package
    assert [path for path in tmp_path.parent.rglob("escape.png")
            if not path.is_relative_to(studio.root() / "uploads")] == []
    assert studio.process.poll() is None


@needs_gradio
def test_an_atlas_fills_in_the_neurons_pictures_as_cnnvis_atlas_makes_them(studio, model,
                                                                             tmp_path):
    from gradio_client import Client
    client = Client(studio.url, verbose=False, analytics_enabled=False,
                    download_files=tmp_path)
    grid, progress = client.predict(MODEL, "stage2/block1", "3,0", 1, 7, "", api_name="/atlas")
    assert progress.startswith("2 neurons, in ")
    options = {**recipe_values("neuron", MODEL), "num_steps": 1, "target_layer": "stage2/block1"}
    expected = {f"neuron {result.job.options['target_neuron']}, seed {result.job.seed}": result.rgb
                for result in cnnvis.atlas(None, model, neurons="3,0", seed=7, **options)}
    assert sorted(expected) == ["neuron 0, seed 8", "neuron 3, seed 7"]
    assert {item["caption"]: _pixels(item["image"]).tolist() for item in grid} == {
        caption: rgb.tolist() for caption, rgb in expected.items()}
    with pytest.raises(Exception, match="--target_neuron 99 .*stage2/block1"):
        client.predict(MODEL, "stage2/block1", "0,99", 1, 7, "", api_name="/atlas")
