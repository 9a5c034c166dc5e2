"""Opening the user's input files: regular files only, of a sane size, with errors that say
what to fix.

A named pipe would block the run forever and a device (/dev/zero) would be read until the
memory runs out, so both are refused before a byte is read. Every problem is a UserError
that names the file and the option it came from.
"""
from __future__ import annotations

import errno
import glob
import os
import stat
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from cnnvis.errors import UserError

PathLike = str | os.PathLike[str]
MiB = 2 ** 20


def open_input(path: PathLike, what: str, option: str) -> BinaryIO:
    """Open `path` for reading in binary, refusing anything that is not a regular file.

    `what` names the file's role ("image", "network definition (prototxt)") and `option`
    the command-line option that gave it, for the messages.
    """
    try:
        # O_NONBLOCK: opening a named pipe for reading would otherwise wait for a writer.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise unreadable_file_error(what, path, option, exc) from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        kind = ("a directory; give the path of a file inside it" if stat.S_ISDIR(mode)
                else f"{_special_kind(mode)}, not a regular file; save the data to a file "
                     "and give its path")
        raise UserError(f"cannot read {what} '{path}': it is {kind} ({option}).")
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def read_input(path: PathLike, what: str, option: str, limit: int) -> bytes:
    """The bytes of the regular file `path`, refused when larger than `limit` bytes."""
    with open_input(path, what, option) as file:
        size = os.fstat(file.fileno()).st_size
        if size > limit:
            raise UserError(f"cannot read {what} '{path}': it is {size / MiB:.0f} MB, more than "
                            f"the {limit / MiB:.0f} MB such a file can sensibly be; check that "
                            f"{option} names the right file.")
        try:
            return file.read(limit + 1)
        except OSError as exc:
            raise unreadable_file_error(what, path, option, exc) from None


def unreadable_file_error(what: str, path: PathLike, option: str, exc: OSError) -> UserError:
    """UserError for a file that cannot be opened or read, with the usual fix for each cause."""
    if isinstance(exc, FileNotFoundError):
        problem = f"no such file; check the path given to {option} and its spelling"
    elif isinstance(exc, IsADirectoryError):
        problem = "it is a directory; give the path of a file inside it"
    elif isinstance(exc, PermissionError):
        problem = f"permission denied; make the file readable (chmod u+r '{path}')"
    elif exc.errno == errno.ENAMETOOLONG:
        problem = "the path is longer than the operating system allows; shorten it"
    else:
        problem = f"{exc.strerror or exc}; check the file and the disk"
    return UserError(f"cannot read {what} '{path}': {problem}")


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one existing file."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return Path(a).absolute() == Path(b).absolute()


IMAGE_SUFFIXES = frozenset(suffix for suffix, _ in Image.registered_extensions().items())


def image_files(source: str) -> list[Path] | None:
    """The images of a folder (its files whose suffix is an image format's) or of a glob
    pattern (`**` for any depth of folders), sorted; None when `source` is neither (a
    single image file)."""
    path = Path(source)
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError:   # e.g. a name too long: reading it as an image says what is wrong
        return None
    if is_dir:
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        what = "is a directory with no images in it"
    elif not exists and glob.has_magic(source):
        found = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        what = "matches no files"
    else:
        return None
    if not found:
        raise UserError(f"--initial_image '{source}' {what}; give the path of a file, a folder "
                        "of PNG or JPEG images, or a pattern such as 'photos/*.jpg'.")
    return found


def expanded(path: str | None) -> str | None:
    """`path` with ~ and $VARIABLES expanded ($CAFFE_ROOT in the 2015 commands)."""
    return path and os.path.expanduser(os.path.expandvars(path))
