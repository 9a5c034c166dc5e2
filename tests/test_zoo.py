"""Model presets: discovery, downloads into the cache, the offline model's classifications."""
import dataclasses
import hashlib
import http.server
import io
import re
import tarfile
import threading

import pytest
from PIL import Image
from skimage import data as samples

import cnnvis
from cnnvis import zoo
from cnnvis.caffe import CaffeNet
from cnnvis.cli import main
from cnnvis.errors import UserError
from cnnvis.googlenet import googlenet_deploy
from cnnvis.caffe.writer import caffemodel_bytes


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_VIS_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CAFFE_ROOT", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def server():
    """Serves `files` (path -> bytes) on 127.0.0.1; 404 for anything else."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path not in files:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(files[self.path])))
            self.end_headers()
            self.wfile.write(files[self.path])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files = files
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield httpd
    httpd.shutdown()


def random_googlenet_weights(num_classes: int) -> bytes:
    """A caffemodel for the bundled GoogLeNet architecture, with random weights."""
    net = CaffeNet(googlenet_deploy(num_classes), None, seed=3)
    weights = {}
    for layer in net.layers:
        if layer.num_blobs:
            weights[layer.name] = [getattr(layer, f"blob{i}").numpy() for i in range(layer.num_blobs)]
    return caffemodel_bytes(weights)


def test_list_models_shows_presence(cache, capsys):
    assert main(["--list_models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(zoo.PRESETS)
    assert " missing " in rows["bvlc_googlenet"]
    assert " present " in rows["efficientnet_lite0"]       # weights come with its package
    (cache).mkdir()
    (cache / "bvlc_googlenet.caffemodel").write_bytes(b"x")
    assert main(["--list_models"]) == 0
    assert " present " in capsys.readouterr().out.splitlines()[1]


@pytest.mark.parametrize("name", list(zoo.PRESETS))
def test_list_layers_matches_the_architecture(name, cache, capsys):
    assert main(["--list_layers", "--model", name]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == zoo.architecture(zoo.preset(name)).blob_names
    assert zoo.preset(name).default_layer in listed
    assert not cache.exists()  # no download for an architecture


def test_list_layers_shows_shapes_for_googlenet(cache, capsys):
    assert main(["--list_layers"]) == 0
    shapes = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert shapes["inception_4d/3x3_reduce"] == "144 x 14 x 14"
    assert shapes["prob"] == "1000"


def classify(name: str, folder, capsys) -> list[tuple[int, float, str]]:
    path = folder / f"{name}.png"
    Image.fromarray(getattr(samples, name)()).save(path)
    assert main(["--classify", str(path), "--model", "efficientnet_lite0", "--gpu", "-1"]) == 0
    rows = [line.split(maxsplit=2) for line in capsys.readouterr().out.splitlines()]
    return [(int(i), float(v), label) for i, v, label in rows]


def test_efficientnet_classifies_chelsea_and_coffee(tmp_path, capsys):
    cat = classify("chelsea", tmp_path, capsys)
    assert 281 <= cat[0][0] <= 285, cat                 # a cat class on top
    assert cat[0][2] == "Egyptian cat"
    cup = classify("coffee", tmp_path, capsys)
    assert {index for index, _, _ in cup} & {967, 968, 504}, cup   # espresso, cup, coffee mug


def test_download_preset_from_local_server_then_load(cache, server, monkeypatch):
    payload = random_googlenet_weights(1000)
    server.files["/bvlc_googlenet.caffemodel"] = payload
    preset = dataclasses.replace(
        zoo.PRESETS["bvlc_googlenet"],
        weights=zoo.WeightFile("bvlc_googlenet.caffemodel", server.url + "/bvlc_googlenet.caffemodel",
                               sha1=hashlib.sha1(payload).hexdigest()))
    monkeypatch.setitem(zoo.PRESETS, "bvlc_googlenet", preset)
    model = zoo.load_model("bvlc_googlenet")   # downloads on first use
    assert (cache / "bvlc_googlenet.caffemodel").read_bytes() == payload
    assert model.labels[285] == "Egyptian cat"
    assert model.check_target("inception_4d/3x3_reduce") == (1, 144, 14, 14)


def test_download_checksum_mismatch_leaves_cache_clean(cache, server, monkeypatch, capsys):
    server.files["/w.caffemodel"] = b"not the real weights"
    preset = dataclasses.replace(
        zoo.PRESETS["bvlc_googlenet"],
        weights=zoo.WeightFile("bvlc_googlenet.caffemodel", server.url + "/w.caffemodel", sha1="0" * 40))
    monkeypatch.setitem(zoo.PRESETS, "bvlc_googlenet", preset)
    assert main(["--download", "bvlc_googlenet"]) == 2
    err = capsys.readouterr().err
    assert "sha1" in err and "/w.caffemodel" in err and str(cache / "bvlc_googlenet.caffemodel") in err
    assert list(cache.iterdir()) == [] if cache.exists() else True


def test_download_unpacks_tarball_member_at_any_depth(cache, server, monkeypatch):
    payload = random_googlenet_weights(205)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [("googlenet_places205/deploy_places205.protxt", b"name: 'x'"),
                           ("googlenet_places205/googlelet_places205_train_iter_2400000.caffemodel",
                            payload)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    server.files["/places.tar.gz"] = buffer.getvalue()
    source = dataclasses.replace(zoo.PRESETS["googlenet_places205"].weights,
                                 url=server.url + "/places.tar.gz")
    monkeypatch.setitem(zoo.PRESETS, "googlenet_places205",
                        dataclasses.replace(zoo.PRESETS["googlenet_places205"], weights=source))
    path = zoo.download(zoo.preset("googlenet_places205"), progress=False)
    assert path.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == ["googlenet_places205.caffemodel"]
    model = zoo.load_model("googlenet_places205")
    assert model.check_target("loss3/classifier") == (1, 205)


def test_unknown_model_and_offline_download_are_clear_errors(cache, monkeypatch):
    with pytest.raises(UserError, match="unknown model 'alexnet'"):
        zoo.preset("alexnet")
    preset = dataclasses.replace(
        zoo.PRESETS["googlenet_places365"],
        weights=dataclasses.replace(zoo.PRESETS["googlenet_places365"].weights,
                                    url="http://127.0.0.1:9/nothing.caffemodel"))
    monkeypatch.setitem(zoo.PRESETS, "googlenet_places365", preset)
    with pytest.raises(UserError, match=r"could not download .*save it as .*googlenet_places365.*"
                       r"Or dream now .*--model efficientnet_lite0 --initial_image photo.jpg"):
        zoo.load_model("googlenet_places365")
    assert not any(cache.glob("*")) if cache.exists() else True


def test_mean_colour_of_every_preset_is_bgr_pixels():
    for preset in zoo.PRESETS.values():
        assert all(90 < m < 130 for m in preset.mean_bgr)
        assert preset.mean_bgr[0] < preset.mean_bgr[2]   # blue mean below red mean: BGR order


@pytest.mark.parametrize("device, gpus, message", [
    ("tpu", 0, "device 'tpu' is not a device name PyTorch knows; use 'cpu'."),
    ("cuda:x", 2, "device 'cuda:x' is not a device name PyTorch knows; use one of 'cpu', 'cuda:0', 'cuda:1'."),
    ("cuda:3", 2, "device 'cuda:3': this machine has 2 CUDA device(s); use one of 'cpu', 'cuda:0', 'cuda:1'."),
    ("cuda:3", 0, "device 'cuda:3': this "),
    ("cuda", 0, "device 'cuda': this "),
])
def test_a_device_this_machine_lacks_is_a_user_error_naming_those_it_has(
        monkeypatch, model_files, device, gpus, message):
    monkeypatch.setattr(zoo.torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(zoo.torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(zoo.torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError) as error:
        zoo.torch_device(device)
    assert str(error.value).startswith(message)
    if gpus == 0 and device.startswith("cuda:"):
        assert str(error.value).endswith("; use 'cpu'.")
    deploy, weights = model_files
    for call in (lambda: cnnvis.load_model(deploy_txt=deploy, caffe_model=weights, device=device),
                 lambda: cnnvis.ModelSpec(deploy_txt=deploy, caffe_model=weights, device=device).check()):
        with pytest.raises(UserError, match=f"^{re.escape(message)}"):
            call()
    assert zoo.torch_device("cpu") == zoo.torch.device("cpu")
    if gpus:
        assert zoo.torch_device("cuda:1") == zoo.torch.device("cuda", 1)


def test_a_model_spec_is_checked_without_loading(model_files, tmp_path):
    deploy, weights = model_files
    cnnvis.ModelSpec(deploy_txt=deploy, caffe_model=weights, device="cpu").check()
    cases = [
        (cnnvis.ModelSpec("no_such_model"), "unknown model 'no_such_model'; --model takes one of"),
        (cnnvis.ModelSpec(deploy_txt=tmp_path / "none.prototxt", caffe_model=weights),
         "cannot read network definition (prototxt) '"),
        (cnnvis.ModelSpec(deploy_txt=deploy, caffe_model=tmp_path / "none.caffemodel"),
         "cannot read weights file (caffemodel) '"),
        (cnnvis.ModelSpec(deploy_txt=deploy, caffe_model=weights, backend="tf"), "unknown backend 'tf'"),
        (cnnvis.ModelSpec("efficientnet_lite0", deploy_txt=deploy), f"--deploy_txt {deploy} needs its weights"),
        (cnnvis.ModelSpec(deploy_txt=deploy, caffe_model=weights, precision="fp16", device="cpu"),
         "--precision fp16: fp16 runs on CUDA GPUs only"),
    ]
    for spec, message in cases:
        with pytest.raises(UserError, match=f"^{re.escape(message)}"):
            spec.check()
