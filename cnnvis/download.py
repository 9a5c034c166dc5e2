"""Downloading and unpacking the model zoo's files: cached, verified, never partial.

Pretrained weights are fetched on first use into a cache directory
(`cache_dir()`) and reused afterwards without touching the network. Every file
is written to a temporary file next to its destination and renamed into place
only once it is complete and its checksum matches, so an interrupted or failed
download leaves nothing behind that a later run could mistake for a good file.
Every failure is a `UserError` that names the URL, what went wrong and the path
where the user can put the file by hand (e.g. on a machine without internet).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from .errors import UserError

CACHE_DIR_ENV = "CNN_VIS_HOME"
DEFAULT_CACHE_DIR = "~/.cache/cnn-vis"
TIMEOUT_S = 30.0  # per connection attempt and per read, not for the whole file
CHUNK_BYTES = 1 << 20


def cache_dir() -> Path:
    """The directory for downloaded models: `$CNN_VIS_HOME` if set, else ~/.cache/cnn-vis."""
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file's contents (`algorithm` as hashlib names it: "sha1", "sha256")."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, algorithm).hexdigest()


@contextmanager
def _temporary_file_beside(dest: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """An open temporary file in dest's directory (so that os.replace into dest is atomic).

    The file is deleted on leaving the block unless the caller has renamed it
    into place by then, so an error or Ctrl-C never leaves a partial file behind.
    """
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    temp_path = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file, temp_path
    finally:
        temp_path.unlink(missing_ok=True)


class _TruncatedError(Exception):
    """The server closed the connection before sending the whole file."""


def fetch(url: str, dest: Path, *, sha1: str | None = None, sha256: str | None = None,
          progress: bool = True) -> Path:
    """Download `url` to `dest` unless `dest` already exists; return `dest`.

    An existing `dest` is trusted as is (no network, no checksum), so a file the
    user has put there by hand is used. Otherwise the download streams into a
    temporary file, with a progress bar on stderr if `progress`, is checked
    against the sha1 and/or sha256 hex digests given, and is then renamed to
    `dest`. Parent directories are created as needed.

    Raises UserError (naming the URL, the problem and `dest`) if the download
    fails or the checksum does not match; nothing partial is left behind.
    """
    dest = Path(dest)
    if dest.exists():
        return dest
    expected_digests = {name: digest.lower() for name, digest in (("sha1", sha1), ("sha256", sha256))
                        if digest is not None}

    def failure(problem: str) -> UserError:
        return UserError(
            f"could not download {url}: {problem}. Run again later, "
            f"or download the file by other means and save it as {dest}.")

    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            dest.parent.mkdir(parents=True, exist_ok=True)  # only once the server answers
            with _temporary_file_beside(dest) as (file, temp_path):
                _copy_response(response, file, progress=progress, label=dest.name)
                file.close()  # flushed, so that the digest sees every byte
                for algorithm, expected in expected_digests.items():
                    actual = file_digest(temp_path, algorithm)
                    if actual != expected:
                        raise failure(f"the file's {algorithm} is {actual} but should be {expected} "
                                      "(the download is damaged or the file on the server has changed)")
                os.replace(temp_path, dest)
    except urllib.error.HTTPError as error:  # before URLError, its base class
        error.close()  # it holds the connection, for reading an error page we do not need
        raise failure(f"the server answered HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise failure(f"cannot connect ({error.reason})") from None
    except TimeoutError:
        raise failure(f"the server sent nothing for {TIMEOUT_S:g} s") from None
    except _TruncatedError as error:
        raise failure(str(error)) from None
    except (OSError, http.client.HTTPException) as error:  # connection reset, disk full, ...
        raise failure(f"{type(error).__name__}: {error}") from None
    return dest


def _copy_response(response: http.client.HTTPResponse, file: IO[bytes], *, progress: bool,
                   label: str) -> None:
    """Copy the response body to `file` in chunks, showing a progress bar if `progress`.

    Raises _TruncatedError if fewer bytes arrive than the Content-Length header
    announced (http.client then just reports end of data, it does not raise).
    """
    length_header = response.headers.get("Content-Length", "")
    expected_bytes = int(length_header) if length_header.isdigit() else None
    received_bytes = 0
    with tqdm(total=expected_bytes, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
              file=sys.stderr, disable=not progress) as bar:
        while chunk := response.read(CHUNK_BYTES):
            file.write(chunk)
            received_bytes += len(chunk)
            bar.update(len(chunk))
    if expected_bytes is not None and received_bytes < expected_bytes:
        raise _TruncatedError(
            f"the connection closed after {received_bytes} of {expected_bytes} bytes")


def unpack_tar(archive: Path, dest_dir: Path, members: Mapping[str, str]) -> None:
    """Extract the regular files `members` names from a .tar.gz (path or file name in archive -> file name).

    Only the named members are read; the archive's own paths never choose where
    a file goes (each goes to dest_dir / its plain file name), and a named member
    that is a link, a device or has an unsafe path (absolute, "..") is refused
    by tarfile's "data" filter. Each file is extracted to a temporary file and
    all are renamed into place only once every member has been read, so a
    failure leaves none of them in dest_dir.

    Raises UserError naming the archive and the member if a member is missing
    or unsafe, or the archive is not a readable .tar.gz.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    for file_name in members.values():
        if Path(file_name).name != file_name or file_name in ("", ".", ".."):
            raise ValueError(f"not a plain file name: {file_name!r}")
    fix = f"Delete {archive} and run again to download it afresh."
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        # The temporaries are deleted when the stack closes, unless renamed into place by then.
        with ExitStack() as temporaries, tarfile.open(archive, "r:gz") as tar:
            extracted: dict[str, Path] = {}  # member name -> its complete temporary file
            # One pass in archive order: a gzip stream cannot seek backwards cheaply.
            for info in tar:
                # A member is named by its path, or by its file name at any depth (archives
                # often wrap their files in a folder whose name the caller need not know).
                key = info.name if info.name in members else PurePosixPath(info.name).name
                if key not in members or key in extracted:
                    continue
                try:
                    safe_info = tarfile.data_filter(info, str(dest_dir))
                except tarfile.FilterError as error:
                    raise UserError(
                        f"{archive}: refusing member {info.name!r} ({error}). {fix}") from None
                if not safe_info.isfile():
                    raise UserError(f"{archive}: member {info.name!r} is not a regular file. {fix}")
                temporary = _temporary_file_beside(dest_dir / members[key])
                file, temp_path = temporaries.enter_context(temporary)
                with file, tar.extractfile(safe_info) as member_data:
                    shutil.copyfileobj(member_data, file, CHUNK_BYTES)
                extracted[key] = temp_path
            missing = [name for name in members if name not in extracted]
            if missing:
                raise UserError(
                    f"{archive} has no member {missing[0]!r} (it is not the expected archive). {fix}")
            for name, temp_path in extracted.items():
                os.replace(temp_path, dest_dir / members[name])
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise UserError(f"cannot unpack {list(members)} from {archive} ({error}); "
                        f"it is damaged or not a .tar.gz. {fix}") from None
