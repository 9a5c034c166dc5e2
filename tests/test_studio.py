"""cnn-vis studio (cnnvis/studio.py, studio_page.py, studio_runs.py): a studio started here
on the offline model, driven by a real headless Chromium (Playwright, Debian's chromium) and
by Gradio's own client: a picture made, previewed, stopped and downloaded; eight clients at
once; the queue's positions, and Stop of a run that waits; a clip dreamed and a zoom, their
frames shown as they come and their video downloaded; the layer gallery's pictures; bad
uploads and requests that name paths; SIGTERM."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
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
from tests.media import moving_square_frames, read_video, write_video

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
MODEL = "efficientnet_lite0"
MAX_MB, MAX_MEGAPIXELS, MAX_SECONDS = 1.0, 0.3, 2.0   # the test studio's upload limits


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
    def __init__(self, process: subprocess.Popen, url: str, tmp: Path, home: Path,
                 log: list[str]):
        self.process, self.url, self.tmp, self.home, self.log = process, url, tmp, home, log

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
    tmp, home = tmp_path_factory.mktemp("studio"), tmp_path_factory.mktemp("home")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "CNN_VIS_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cnn_vis.py"), "studio", "--port", str(port), "--gpu", "-1",
         "--max_upload_mb", str(MAX_MB), "--max_upload_megapixels", str(MAX_MEGAPIXELS),
         "--max_upload_seconds", str(MAX_SECONDS)],
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
    yield RunningStudio(process, f"http://127.0.0.1:{port}/", tmp, home, log)
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


# ------------------------------------------------------------------------------ the queue

@needs_gradio
@needs_chromium
def test_in_a_browser_the_queue_position_shows_and_stop_cancels_a_run_that_waits(
        studio, page, tmp_path):
    from gradio_client import Client
    from playwright.sync_api import expect
    busy, second = (Client(studio.url, verbose=False, analytics_enabled=False,
                           download_files=tmp_path / name) for name in ("busy", "second"))
    runs = len(studio.started_runs())
    running = busy.submit(None, MODEL, "", 0, 8, *_panel(num_steps=2000), "", api_name="/dream")
    while running.status().code.name != "PROCESSING":
        time.sleep(0.05)
    waiting = second.submit(None, MODEL, "", 1, 8, *_panel(num_steps=1), "", api_name="/dream")
    while waiting.status().code.name in ("STARTING", "JOINING_QUEUE"):
        time.sleep(0.05)
    assert (waiting.status().rank, waiting.status().queue_size) == (0, 1)   # first in line

    page.goto(studio.url)
    page.wait_for_function("() => localStorage.getItem('cnn-vis-studio-session')")
    page.locator("#option-num_steps input").fill("1")
    page.locator("#dream").click()
    expect(page.locator("#preview")).to_contain_text("queue: 2/2")   # Gradio's tracker
    page.locator("#stop").click()   # while it waits: it never runs
    busy.predict("", api_name="/stop")
    assert "stopped at step" in running.result(timeout=60)[2][0]["caption"]
    assert "1 steps" in waiting.result(timeout=60)[2][0]["caption"]
    expect(page.locator("#progress")).to_contain_text("stopped while it waited in the queue")
    expect(page.locator("#history img")).to_have_count(0)
    assert len(studio.started_runs()) == runs + 2   # the two clients' runs, not the page's


# ------------------------------------------------------------------------------ videos

def _clip(path: Path, frames: int = 3) -> Path:
    """A clip of `frames` frames of 224x224 (the network's input: no smaller size dreams) at
    10 frames a second, with a tone."""
    return write_video(path, moving_square_frames(frames, (224, 224), speed=min(8, 180 // frames),
                                                  side=40))


def _video_args(source: str, clip, *, frames: int = 3, frame_steps: int = 1,
                **panel) -> list:
    """The video endpoint's inputs: the source and clip, the picture tab's photo (none),
    model, layer, seed and depth, the animation options, the panel and the key."""
    from cnnvis.studio_video_page import SHOWN
    animation = {"frames": frames, "zoom": 1.05, "rotate": 0, "frame_steps": frame_steps,
                 "blend": 0.5, "coherence": 0.9}
    return [source, clip, None, MODEL, "", 0, 8, *(animation[name] for name in SHOWN),
            *_panel(**panel), ""]


def _api_frames(model, video: Path | None, **options) -> list[np.ndarray]:
    """The frames that the public API makes of a clip (or, for None, of a zoom from noise)."""
    options = {**recipe_values(None, MODEL), "output_iter": 5, **options}
    if video is None:
        return [frame.rgb for frame in cnnvis.animate(None, model, seed=0, **options)]
    from cnnvis.video import VideoInput
    with VideoInput(video) as clip:
        return [frame.rgb for frame in cnnvis.dream_video(clip.frames(1, None), model, seed=0,
                                                          **options)]


def _encoded(frames: list[np.ndarray], path: Path, sound: Path) -> list[np.ndarray]:
    """`frames` as the studio and the command line encode them, decoded again."""
    from cnnvis.video import VideoInput, video_writer
    with VideoInput(sound) as clip, video_writer(path, clip.fps, clip) as writer:
        for rgb in frames:
            writer.write(rgb)
    return read_video(path)[0]


@needs_gradio
@needs_chromium
def test_in_a_browser_a_clip_is_dreamed_its_frames_shown_as_they_come_and_downloaded(
        studio, model, page, tmp_path):
    from playwright.sync_api import expect
    clip = _clip(tmp_path / "clip.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:600])
    page.goto(studio.url)
    page.wait_for_function("() => localStorage.getItem('cnn-vis-studio-session')")
    page.locator("#option-num_steps input").fill("6")   # the picture tab's, for frame 1
    page.locator("#option-num_steps input").press("Tab")
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-frame_steps input").fill("4")
    page.locator("#video-frame_steps input").press("Tab")
    page.locator("#clip input[type=file]").set_input_files(clip)
    expect(page.locator("#clip")).to_contain_text("clip.mp4")   # uploaded
    page.locator("#make-video").click()
    counts, deadline = [], time.monotonic() + 120
    while (not counts or counts[-1] < 3) and time.monotonic() < deadline:
        count = page.locator("#video-made img").count()
        if not counts or count != counts[-1]:
            counts.append(count)
        time.sleep(0.05)
    assert counts[-1] == 3 and (1 in counts or 2 in counts)   # frames came one by one
    expect(page.locator("#video-progress")).to_contain_text(re.compile(r"3 frames, in \d+ s"))
    expect(page.locator("#video-command")).to_contain_text("--input_video clip.mp4")
    page.screenshot(path=tmp_path / "video_tab.png", full_page=True)   # to look at
    with page.expect_download() as download:
        page.locator("#video-download").click()
    video = tmp_path / "downloaded.mp4"
    download.value.save_as(video)

    expected = _api_frames(model, clip, num_steps=6, frame_steps=4)
    frames, rate, sound = read_video(video)
    assert len(frames) == 3 and rate == 10 and sound == pytest.approx(0.3, abs=0.05)
    assert np.array_equal(frames[0], _encoded(expected, tmp_path / "api.mp4", clip)[0])
    (folder,) = studio.root().glob("sessions/*/video-*_frames")
    assert [np.array_equal(_pixels(png), rgb)
            for png, rgb in zip(sorted(folder.glob("*.png")), expected)] == [True] * 3

    page.reload()   # a corrupt clip: a message on the page
    page.get_by_role("tab", name="Video").click()
    page.locator("#clip input[type=file]").set_input_files(broken)
    expect(page.locator("#clip")).to_contain_text("broken.mp4")   # uploaded
    page.locator("#make-video").click()
    page.get_by_text(re.compile("cannot read video 'broken.mp4': not a video FFmpeg can "
                                "decode")).first.wait_for()
    assert studio.process.poll() is None
    # A zoom shows its camera's controls instead of the clip's upload and coherence.
    expect(page.locator("#video-zoom")).to_be_hidden()
    expect(page.locator("#video-coherence")).to_be_visible()
    page.get_by_label("a zoom into the picture tab's photo").check()
    expect(page.locator("#video-zoom")).to_be_visible()
    expect(page.locator("#clip")).to_be_hidden()
    expect(page.locator("#video-coherence")).to_be_hidden()
    page.screenshot(path=tmp_path / "zoom_tab.png", full_page=True)   # to look at


@needs_gradio
def test_a_zoom_into_noise_and_bad_clips_through_the_client(studio, model, tmp_path):
    from gradio_client import Client, handle_file
    from cnnvis.studio_video_page import CLIP, ZOOM
    client = Client(studio.url, verbose=False, analytics_enabled=False,
                    download_files=tmp_path / "client")
    frames, progress, video, download, command = client.predict(
        *_video_args(ZOOM, None, frames=3, num_steps=2), api_name="/video")
    assert progress.startswith("3 frames, in ") and "--frames 3 --zoom 1.05" in command
    assert [item["caption"] for item in frames] == ["frame 1", "frame 2", "frame 3"]
    expected = _api_frames(model, None, num_steps=2, frames=3, zoom=1.05, frame_steps=1)
    assert [_pixels(item["image"]).tolist() for item in frames] == [
        rgb.tolist() for rgb in expected]
    assert len(read_video(Path(download))[0]) == 3

    # Stopped after a few frames: the frames made so far, and the video of them.
    job = client.submit(*_video_args(ZOOM, None, frames=200, num_steps=2), api_name="/video")
    while not job.outputs() or len(job.outputs()[-1][0]) < 2:
        time.sleep(0.05)
    client.predict("", api_name="/stop")
    frames, progress, video, download, command = job.result(timeout=60)
    made = len(frames)
    assert made >= 2 and progress.startswith(f"stopped after {made} of 200 frames, in ")
    assert len(read_video(Path(download))[0]) == made

    still = _photo(tmp_path / "still.png", 224)
    long = _clip(tmp_path / "long.mp4", frames=30)   # 3 s at 10 frames a second
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    for clip, message in ((still, "'still.png' is a still image, not a video"),
                          (long, r"lasts 3.0 s, more than this studio takes \(2 s, "
                                 "--max_upload_seconds"),
                          (text, "cannot read video 'notes.mp4': not a video FFmpeg"),
                          (None, "no video uploaded")):
        with pytest.raises(Exception, match=message):
            client.predict(*_video_args(CLIP, clip and handle_file(clip), num_steps=1),
                           api_name="/video")
    assert studio.process.poll() is None


# ------------------------------------------------------------------------------ the layer gallery

@needs_gradio
@needs_chromium
def test_in_a_browser_the_layer_gallerys_pictures_choose_the_layer(studio, model, page,
                                                                    monkeypatch):
    from playwright.sync_api import expect
    from cnnvis.gallery import layer_picture_files
    monkeypatch.setenv("CNN_VIS_HOME", str(studio.home))
    files = layer_picture_files(model)   # two of the gallery's pictures, as if it were made
    for layer, colour in (("stage2/block1", (200, 40, 40)), ("stage4/block1", (40, 40, 200))):
        files[layer].parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (224, 224), colour).save(files[layer])
    page.goto(studio.url)
    gallery = page.locator("#layer-gallery")
    expect(gallery.locator("img")).to_have_count(2)
    expect(gallery).to_contain_text("stage4/block1")
    gallery.locator("img").nth(1).click()
    expect(page.locator("#layer input")).to_have_value(re.compile("^stage4/block1: swirls"))


# ------------------------------------------------------------------------------ the end

def test_sigterm_ends_the_studio_with_status_143_and_its_folder_removed(studio):
    root = studio.root()
    studio.process.send_signal(signal.SIGTERM)
    assert studio.process.wait(30) == 128 + signal.SIGTERM
    assert not root.exists()
