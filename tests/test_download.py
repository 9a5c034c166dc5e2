"""Downloads against a local HTTP server; tar unpacking; nothing partial left after any failure."""
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from cnnvis.download import cache_dir, fetch, file_digest, unpack_tar
from cnnvis.errors import UserError

PAYLOAD = bytes(range(256)) * 40  # 10 KiB, several reads of the socket
PAYLOAD_SHA1 = hashlib.sha1(PAYLOAD).hexdigest()
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD in a few ways, chosen by path; counts requests on the server."""

    def do_GET(self):
        self.server.request_paths.append(self.path)
        if self.path == "/weights.bin":
            self._send(200, PAYLOAD, content_length=len(PAYLOAD))
        elif self.path == "/no-length.bin":  # body delimited by closing the connection
            self._send(200, PAYLOAD, content_length=None)
        elif self.path == "/truncated.bin":  # announces 1000 bytes, sends 100, closes
            self._send(200, PAYLOAD[:100], content_length=1000)
        elif self.path == "/stalled.bin":  # sends headers, then nothing until the test ends
            self._send(200, b"", content_length=len(PAYLOAD))
            self.server.test_finished.wait(timeout=10)
        else:
            self.send_error(404)

    def _send(self, status: int, body: bytes, content_length: int | None):
        self.send_response(status)
        if content_length is not None:
            self.send_header("Content-Length", str(content_length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 with a free port; `.url` and `.request_paths`."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.request_paths = []
    httpd.test_finished = threading.Event()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    # A short poll interval makes shutdown() quick.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield httpd
    httpd.test_finished.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _listing(directory: Path) -> list[str]:
    """All names under `directory`, hidden temporary files included."""
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


@pytest.mark.parametrize("path", ["/weights.bin", "/no-length.bin"])
def test_fetch_downloads_verifies_and_then_uses_the_cache(server, tmp_path, path):
    dest = tmp_path / "models" / "googlenet" / "weights.bin"  # parents do not exist yet
    assert fetch(server.url + path, dest, sha1=PAYLOAD_SHA1, sha256=PAYLOAD_SHA256.upper(),
                 progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert _listing(tmp_path) == ["models", "models/googlenet", "models/googlenet/weights.bin"]
    assert server.request_paths == [path]

    assert fetch(server.url + path, dest, sha1=PAYLOAD_SHA1, progress=False) == dest
    assert server.request_paths == [path]  # the second call did not touch the server


def test_fetch_without_checksum_and_progress_bar_on_stderr(server, tmp_path, capsys):
    dest = tmp_path / "weights.bin"
    fetch(server.url + "/weights.bin", dest)
    assert file_digest(dest, "sha1") == PAYLOAD_SHA1
    assert file_digest(dest, "sha256") == PAYLOAD_SHA256
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "weights.bin" in captured.err and "10.0k" in captured.err  # 10240 B, 1024-based units


def test_fetch_checksum_mismatch_names_url_digests_and_dest(server, tmp_path):
    url, dest = server.url + "/weights.bin", tmp_path / "weights.bin"
    wrong_sha1 = "0" * 40
    with pytest.raises(UserError) as raised:
        fetch(url, dest, sha1=wrong_sha1, progress=False)
    message = str(raised.value)
    assert url in message and str(dest) in message
    assert f"sha1 is {PAYLOAD_SHA1} but should be {wrong_sha1}" in message
    assert _listing(tmp_path) == []


def test_fetch_sha256_mismatch_is_checked_too(server, tmp_path):
    with pytest.raises(UserError, match=f"sha256 is {PAYLOAD_SHA256} but should be f{{64}}"):
        fetch(server.url + "/weights.bin", tmp_path / "w.bin", sha1=PAYLOAD_SHA1, sha256="F" * 64,
              progress=False)
    assert _listing(tmp_path) == []


def test_fetch_connection_dropped_mid_file(server, tmp_path):
    url, dest = server.url + "/truncated.bin", tmp_path / "weights.bin"
    with pytest.raises(UserError) as raised:
        fetch(url, dest, progress=False)
    message = str(raised.value)
    assert url in message and str(dest) in message
    assert "closed after 100 of 1000 bytes" in message
    assert _listing(tmp_path) == []


def test_fetch_server_stops_sending(server, tmp_path, monkeypatch):
    monkeypatch.setattr("cnnvis.download.TIMEOUT_S", 0.1)
    url, dest = server.url + "/stalled.bin", tmp_path / "weights.bin"
    with pytest.raises(UserError) as raised:
        fetch(url, dest, progress=False)
    message = str(raised.value)
    assert url in message and str(dest) in message
    assert "the server sent nothing for 0.1 s" in message
    assert _listing(tmp_path) == []


def test_fetch_http_error(server, tmp_path):
    url, dest = server.url + "/missing.bin", tmp_path / "cache" / "weights.bin"
    with pytest.raises(UserError) as raised:
        fetch(url, dest, progress=False)
    message = str(raised.value)
    assert url in message and str(dest) in message
    assert "HTTP 404 Not Found" in message
    assert _listing(tmp_path) == []  # not even the parent directory


def test_fetch_server_absent(tmp_path):
    # A socket that is bound but not listening: connecting to its port is refused,
    # and no other process can take the port while the test runs.
    with socket.socket() as bound_only:
        bound_only.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound_only.getsockname()[1]}/weights.bin"
        dest = tmp_path / "weights.bin"
        with pytest.raises(UserError) as raised:
            fetch(url, dest, progress=False)
    message = str(raised.value)
    assert url in message and str(dest) in message
    assert "cannot connect" in message and "refused" in message
    assert _listing(tmp_path) == []


def test_fetch_returns_existing_file_without_network(tmp_path):
    dest = tmp_path / "by_hand.caffemodel"
    dest.write_bytes(b"put here by the user")
    # Nothing listens at this URL; an existing file is used without checking it.
    assert fetch("http://127.0.0.1:9/x", dest, sha1="0" * 40, progress=False) == dest
    assert dest.read_bytes() == b"put here by the user"


def test_cache_dir_respects_cnn_vis_home(monkeypatch, tmp_path):
    monkeypatch.setenv("CNN_VIS_HOME", str(tmp_path / "zoo"))
    assert cache_dir() == tmp_path / "zoo"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CNN_VIS_HOME", "~/models")
    assert cache_dir() == tmp_path / "home" / "models"
    monkeypatch.delenv("CNN_VIS_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "cnn-vis"


def _write_tar_gz(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    """A .tar.gz with the given regular files (name -> content) and symlinks (name -> target)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


PLACES_MEMBERS = {
    "googlenet_places205/deploy_places205.protxt": "deploy_places205.prototxt",
    "googlenet_places205/googlelet_places205_train_iter_2400000.caffemodel": "places205.caffemodel",
}


def test_unpack_tar_extracts_only_the_named_members(tmp_path):
    archive = _write_tar_gz(tmp_path / "places.tar.gz", {
        "googlenet_places205/deploy_places205.protxt": b"name: 'GoogleNet'",
        "googlenet_places205/README": b"not wanted",
        "../evil": b"not wanted and never written",
        "googlenet_places205/googlelet_places205_train_iter_2400000.caffemodel": b"\x0a\x03abc",
    })
    dest_dir = tmp_path / "models"
    unpack_tar(archive, dest_dir, PLACES_MEMBERS)
    assert _listing(dest_dir) == ["deploy_places205.prototxt", "places205.caffemodel"]
    assert (dest_dir / "deploy_places205.prototxt").read_bytes() == b"name: 'GoogleNet'"
    assert (dest_dir / "places205.caffemodel").read_bytes() == b"\x0a\x03abc"
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("files, symlinks, member, problem", [
    ({"../evil": b"x"}, {}, "../evil", "outside the destination"),
    ({}, {"link": "/etc/passwd"}, "link", "refusing member 'link'"),
    ({}, {"link": "target"}, "link", "not a regular file"),
])
def test_unpack_tar_refuses_unsafe_members(tmp_path, files, symlinks, member, problem):
    archive = _write_tar_gz(tmp_path / "evil.tar.gz", {"good": b"ok", **files}, symlinks)
    dest_dir = tmp_path / "models"
    with pytest.raises(UserError, match=problem) as raised:
        unpack_tar(archive, dest_dir, {"good": "good", member: "evil"})
    assert str(archive) in str(raised.value) and repr(member) in str(raised.value)
    assert _listing(dest_dir) == []  # not even the good member
    assert _listing(tmp_path) == ["evil.tar.gz", "models"]


def test_unpack_tar_missing_member(tmp_path):
    archive = _write_tar_gz(tmp_path / "places.tar.gz",
                            {"googlenet_places205/deploy_places205.protxt": b"x"})
    dest_dir = tmp_path / "models"
    with pytest.raises(UserError) as raised:
        unpack_tar(archive, dest_dir, PLACES_MEMBERS)
    message = str(raised.value)
    assert str(archive) in message
    assert "no member 'googlenet_places205/googlelet_places205_train_iter_2400000.caffemodel'" in message
    assert f"Delete {archive}" in message
    assert _listing(dest_dir) == []


@pytest.mark.parametrize("damage", ["truncated", "not_gzip"])
def test_unpack_tar_corrupt_archive(tmp_path, damage):
    archive = _write_tar_gz(tmp_path / "places.tar.gz", {"weights": bytes(range(256)) * 400})
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"<html>404</html>")
    dest_dir = tmp_path / "models"
    with pytest.raises(UserError) as raised:
        unpack_tar(archive, dest_dir, {"weights": "weights.bin"})
    message = str(raised.value)
    assert str(archive) in message and "'weights'" in message and "damaged" in message
    assert _listing(dest_dir) == []


def test_unpack_tar_rejects_file_names_with_directories(tmp_path):
    archive = _write_tar_gz(tmp_path / "a.tar.gz", {"good": b"ok"})
    with pytest.raises(ValueError, match="plain file name"):
        unpack_tar(archive, tmp_path / "models", {"good": "../good"})
