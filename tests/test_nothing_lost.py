"""Nothing lost, ever: what happens around a run (saving, signals, the terminal, the operating
system's limits) never loses an image and never ends in a traceback.

Every outcome is either the image (exit 0, or 130/143 after a signal, with the image saved)
or exit 2 with one line that names the problem and the fix.
"""
from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnvis import imageio
from cnnvis.cli import main
from cnnvis.imageio import load_rgb
from tests.caffe_files import TINY_DREAM_NET
from tests.cli_contract import PREVIOUS_OUTPUT, refused

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = str(REPOSITORY / "cnn_vis.py")


def assert_png(path: Path, size: tuple[int, int]) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.size == size
        return image


# ----------------------------------------------------------------------------- signals


# Runs cnn_vis.py as `python cnn_vis.py ARGS` would, with Ctrl-C and SIGTERM as at a terminal
# (even where the tests run with them ignored), after an audit hook that, where the run first
# meets the audit event EVENT on NAME (a module, or a file's name; argv: EVENT NAME SCRIPT
# ARGS, EVENT "" for none), says so on stderr and waits for the signal there: so the signal
# meets the run at that moment on any machine, however loaded, never earlier or later.
WAIT_AT = """
import os, runpy, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
event, name = sys.argv[1:3]
del sys.argv[:3]
def wait_at(seen, arguments, met=[]):
    if event and seen == event and not met and os.path.basename(str(arguments[0])) == name:
        met.append(True)
        print(f"waiting for the signal at {event} {arguments[0]}", file=sys.stderr, flush=True)
        time.sleep(600)
sys.addaudithook(wait_at)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_until(argv: list[str], ready: str, stop: signal.Signals,
              wait_at: tuple[str, str] = ("", "")) -> tuple[int, str]:
    """Start cnn_vis.py, wait for a stderr line that starts with `ready`, send `stop`, and
    return the exit status and stderr. With `wait_at` (an audit event and a name: ("import",
    "torch"), ("open", "weights.caffemodel")), the run waits there for the signal, and
    `ready` is "waiting for the signal"."""
    process = subprocess.Popen([sys.executable, "-c", WAIT_AT, *wait_at, SCRIPT, *argv],
                               cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr],
                              daemon=True)
    reader.start()
    seen: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while not (seen and seen[-1].startswith(ready)):
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                assert process.poll() is None and time.monotonic() < deadline, "".join(seen)
        process.send_signal(stop)
        status = process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get())
    return status, "".join(seen)


@pytest.mark.parametrize("stop, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_steps_saves_the_current_image(tiny, output, stop, status):
    argv = tiny + ["--num_steps", "100000", "--output_iter", "1", "--iter_behavior", "print",
                   "--initial_size", "20x24"]
    code, err = run_until(argv, "size 1/1 20x24 step ", stop)
    assert code == status, err
    assert "Traceback" not in err
    assert f"interrupted; the current image is saved as {output}" in err
    image = assert_png(output, (24, 20))
    assert image.text["cnn-vis:seed"] == "0"
    assert not [p for p in output.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("wait_at", [("import", "torch"), ("open", "weights.caffemodel")],
                         ids=["importing", "loading"])
def test_ctrl_c_before_the_steps_is_one_line(tiny, output, wait_at):
    """Ctrl-C while PyTorch is imported, or while the caffemodel is read: one line, and the
    earlier result untouched. (The run waits for the signal there: a signal sent after a
    delay met, on a loaded machine, the end of the run instead, or the interpreter's
    start-up or exit.)"""
    code, err = run_until(tiny, "waiting for the signal", signal.SIGINT, wait_at)
    assert code == 130, err
    assert err.splitlines()[1:] == ["cnn-vis: interrupted."], err
    assert output.read_bytes() == PREVIOUS_OUTPUT
    assert not [p for p in output.parent.iterdir() if p.name.endswith(".tmp")]


def test_the_cnn_vis_command_guards_its_imports_too():
    """The installed `cnn-vis` command starts where cnn_vis.py does (whose Ctrl-C during
    imports is tested above): before PyTorch is imported."""
    from importlib.metadata import entry_points
    [command] = entry_points(group="console_scripts", name="cnn-vis")
    assert command.value == "cnnvis.launcher:run_command_line"
    result = subprocess.run([sys.executable, "-c", "import sys, cnnvis.launcher; "
                             "print('torch' in sys.modules)"], capture_output=True, text=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("stop, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_png_is_written_waits_for_the_file(tiny, output, monkeypatch, capsys,
                                                               stop, status):
    """The signal arrives in the middle of Pillow's writing: the file is finished first."""
    real_save = Image.Image.save
    final = []

    def save_and_signal(image, file, *args, **kwargs):
        if not final:
            final.append(True)
            signal.raise_signal(stop)   # to this thread; held back until the file is complete
        return real_save(image, file, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_and_signal)
    assert main(tiny) == status
    err = capsys.readouterr().err
    assert f"interrupted; the finished image is saved as {output}" in err
    assert_png(output, (16, 16))
    assert not [p for p in output.parent.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- the terminal


def shell(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=REPOSITORY, capture_output=True,
                          text=True, timeout=300)


def test_a_closed_stderr_still_gives_the_image(tiny, output):
    command = shlex.join([sys.executable, SCRIPT, *tiny, "--iter_behavior", "print",
                          "--output_iter", "1"])
    result = shell(f"{command} 2>&-")
    assert result.returncode == 0, result.stdout
    assert_png(output, (16, 16))


def test_a_reader_that_goes_away_still_gives_the_image(tiny, output):
    command = shlex.join([sys.executable, SCRIPT, *tiny, "--num_steps", "5",
                          "--iter_behavior", "print", "--output_iter", "1"])
    result = shell(f"{command} 2>&1 | head -n 1; exit ${{PIPESTATUS[0]}}")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1, result.stderr
    assert_png(output, (16, 16))


def test_listing_layers_into_head(model_files):
    command = shlex.join([sys.executable, SCRIPT, "--deploy_txt", str(model_files[0]),
                          "--list_layers"])
    result = shell(f"{command} | head -n 1; exit ${{PIPESTATUS[0]}}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("conv1") and result.stderr == ""


def test_an_unusable_display_writes_the_figures(tiny, output, tmp_path):
    env = {**os.environ, "DISPLAY": ":99"}   # set, but no X server answers there
    result = subprocess.run([sys.executable, SCRIPT, *tiny, "--iter_behavior", "show+plot_pix",
                             "--output_iter", "1"], cwd=REPOSITORY, capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "out_show.png").is_file() and (tmp_path / "out_pix.png").is_file()


def test_a_report_that_cannot_be_saved_does_not_stop_the_run(tiny_model, tmp_path, capsys):
    # The output's name is as long as the file system allows; "_1_1" makes the
    # intermediate file's name too long.
    output = tmp_path / ("d" * 251 + ".png")
    assert main(tiny_model + ["--num_steps", "2", "--iter_behavior", "save", "--output_iter", "1",
                              "--output_file", str(output)]) == 0
    err = capsys.readouterr().err
    assert err.count("'save' failed and is off for the rest of the run") == 1
    assert "longer than the operating system allows" in err
    assert_png(output, (16, 16))


# ----------------------------------------------------------------------------- paths and files


def test_paths_that_are_not_utf8(tiny_model, tmp_path, photo):
    odd_photo = os.fsdecode(os.fsencode(str(tmp_path)) + b"/ph\xe9.png")
    odd_output = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.png")
    Path(odd_photo).write_bytes(photo.read_bytes())
    assert main(tiny_model + ["--initial_image", odd_photo, "--num_steps", "1",
                              "--iter_behavior", "", "--output_file", odd_output]) == 0
    image = assert_png(Path(odd_output), (30, 20))
    assert "caf\\xe9.png" in image.text["cnn-vis:command"]


def test_a_long_legal_file_name(tiny, tmp_path):
    output = tmp_path / ("n" * 250 + ".png")
    assert main(tiny[:-1] + [str(output)]) == 0
    assert_png(output, (16, 16))


@pytest.mark.parametrize("option", ["--output_file", "--deploy_txt", "--caffe_model",
                                    "--initial_image", "--mean_image"])
def test_paths_longer_than_the_system_allows(tiny, output, capsys, option):
    long_path = "/tmp/" + "x" * 4096 + (".png" if option == "--output_file" else "")
    refused(tiny + [option, long_path], capsys, output, "longer than the operating system allows")


@pytest.mark.parametrize("option", ["--initial_image", "--deploy_txt", "--caffe_model",
                                    "--mean_image"])
def test_named_pipes_are_refused_without_waiting(tiny, output, tmp_path, capsys, option):
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    refused(tiny + [option, str(pipe)], capsys, output, "named pipe", "regular file", option)


def test_devices_are_refused(tiny, output, capsys):
    refused(tiny + ["--deploy_txt", "/dev/zero"], capsys, output, "a device", "--deploy_txt")


def test_replay_of_a_pipe_is_refused(tmp_path, capsys):
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    assert main(["--replay", str(pipe)]) == 2
    assert "named pipe" in capsys.readouterr().err


def test_the_output_may_not_be_the_input(tiny, tmp_path, capsys, photo):
    before = photo.read_bytes()
    assert main(tiny + ["--initial_image", str(photo), "--output_file", str(photo)]) == 2
    assert "is the --initial_image image itself" in capsys.readouterr().err
    assert photo.read_bytes() == before


def test_replay_may_not_overwrite_its_source(tiny, output, capsys):
    assert main(tiny) == 0
    capsys.readouterr()
    made = output.read_bytes()
    assert main(["--replay", str(output), "--trust_recorded_paths", "--output_file", str(output)]) == 2
    assert "is the --replay image itself" in capsys.readouterr().err
    assert output.read_bytes() == made


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("options, key_words", [
    (["--seed", "18446744073709551616"], ["--seed", "at most"]),
    (["--initial_size", "1" * 5000 + "x3"], ["--initial_size", "more than 9 digits"]),
    (["--num_sizes", "1000000000000"], ["--num_sizes", "at most 1000"]),
    (["--show_width", "0.001"], ["--show_width", "at least 0.5"]),
    (["--show_height", "1e6"], ["--show_height", "at most 100"]),
    (["--decay_rate", "1"], ["--decay_rate", "below 1"]),
    (["--learning_rate", "nan"], ["--learning_rate", "not a finite number"]),
])
def test_values_outside_their_working_range(tiny, output, capsys, options, key_words):
    refused(tiny + options, capsys, output, *key_words)


def test_a_negative_number_after_an_option_is_its_value(tiny, output):
    assert main(tiny + ["--tv_reg_step", "-1e-3", "--tv_reg_step_iter", "1"]) == 0
    with Image.open(output) as image:
        assert "--tv_reg_step -1e-3" in image.text["cnn-vis:command"]


def test_more_memory_than_the_machine_has(tiny, output, capsys, monkeypatch):
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2 ** 30 // 4096}   # a 1 GB machine
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    refused(tiny + ["--initial_size", "4000x4000"], capsys, output, "4000x4000", "needs about",
            "this machine has 1 GB")


def test_alpha_below_one_with_a_photo(tiny, output, capsys, photo):
    refused(tiny + ["--initial_image", str(photo), "--alpha", "0.5"], capsys, output,
            "--alpha 0.5", "infinite", "--p_reg 0")
    assert main(tiny + ["--alpha", "0.5"]) == 0   # from noise it is fine


def test_a_mean_colour_outside_the_pixel_range(tiny, output, capsys, tmp_path):
    mean = tmp_path / "mean.npy"
    np.save(mean, np.array([1e300, 100.0, 100.0]))
    refused(tiny + ["--mean_image", str(mean)], capsys, output, "outside the pixel range")


def test_nan_in_a_prototxt_names_the_layer_and_field(tiny, output, capsys, model_files):
    model_files[0].write_text(TINY_DREAM_NET.replace(
        'convolution_param { num_output: 8 kernel_size: 3 pad: 1 }',
        'convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { std: nan } }'))
    refused(tiny, capsys, output, "layer 'conv2'", "weight_filler.std", "not a finite number")


@pytest.mark.parametrize("prefix", ["\ufeff", "# un réseau minuscule, décrit à la main\n"],
                         ids=["byte-order-mark", "non-ascii-comment"])
def test_prototxts_that_editors_write(tiny, output, model_files, prefix):
    model_files[0].write_text(prefix + TINY_DREAM_NET, encoding="utf-8")
    assert main(tiny) == 0


def test_a_prototxt_that_is_not_utf8(tiny, output, capsys, model_files):
    model_files[0].write_bytes(b"# caf\xe9\n" + TINY_DREAM_NET.encode())
    refused(tiny, capsys, output, "is not UTF-8 text", "line 1", "save the file as UTF-8")


def test_a_very_large_photo_is_one_line(tmp_path, monkeypatch, caplog):
    path = tmp_path / "large.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # 1600 pixels: above, within 2x
    with caplog.at_level("WARNING", logger="cnnvis"):
        assert load_rgb(path).shape == (40, 40, 3)
    assert [r.getMessage() for r in caplog.records] == [
        f"cnn-vis: image '{path}' has 40x40 pixels; it takes a lot of memory and time."]


def test_a_model_file_cannot_make_caffe_write_a_file(tiny, output, tmp_path, capsys, model_files):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    model_files[0].write_text(TINY_DREAM_NET + f"""
layer {{ name: "dump" type: "HDF5Output" bottom: "conv2" bottom: "conv1"
        hdf5_output_param {{ file_name: "{victim}" }} }}
""")
    for backend in ("torch", "caffe"):
        message = refused(tiny + ["--backend", backend], capsys, output)
        assert "HDF5Output" in message or "pycaffe" in message, message
    assert victim.read_text() == "keep me"


# ----------------------------------------------------------------------------- fuzzing

HOSTILE_NUMBERS = ["0", "-1", "-1e-3", "1e308", "-1e308", "nan", "inf", "-inf", "1e-320",
                   "18446744073709551616", "abc", "", "0x10", "1_000", "３"]
OPTION_VALUES = {
    "--num_steps": st.sampled_from(["-1", "0", "1", "2", "nan", "1e3", "x"]),
    "--batch_size": st.sampled_from(["0", "1", "3", "1000000", "-2"]),
    "--initial_size": st.sampled_from(["x1", "x2", "16x16", "17x40", "x0", "0x5", "x-1", "x1e400",
                                       "1e9x2", "abc", "", "99999999999x1"]),
    "--final_size": st.sampled_from(["x1", "x1.5", "20x20", "x0.5", "15x15", "x"]),
    "--num_sizes": st.sampled_from(["1", "2", "3", "0", "1001", "-5"]),
    "--target_neuron": st.sampled_from(["0", "7", "8", "-1", "99999999999999999999"]),
    "--image_type": st.sampled_from(["amplify_layer", "amplify_neuron", "bogus"]),
    "--output_depth": st.sampled_from(["8", "16", "12", "x"]),
    "--seed": st.sampled_from(["0", "-1", "9223372036854775807", "9223372036854775808"]),
}
for flag in ["--learning_rate", "--decay_rate", "--alpha", "--p_reg", "--p_scale", "--beta",
             "--tv_reg", "--tv_reg_scale", "--tv_reg_step", "--l1_weight", "--grad_clip",
             "--initialization_scale", "--initialization_blur", "--learning_rate_decay_factor",
             "--show_width"]:
    OPTION_VALUES[flag] = st.sampled_from(HOSTILE_NUMBERS + ["0.5", "1", "2.5"])


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_option_values_give_an_image_or_one_message(tiny_model, tmp_path, capsys, data):
    output = tmp_path / "fuzz.png"
    output.unlink(missing_ok=True)
    argv = tiny_model + ["--num_steps", "1", "--iter_behavior", "", "--output_file", str(output)]
    for flag in data.draw(st.lists(st.sampled_from(sorted(OPTION_VALUES)), unique=True,
                                   max_size=4), label="options"):
        argv += [flag, data.draw(OPTION_VALUES[flag], label=flag)]
    status = main(argv)
    err = capsys.readouterr().err
    assert status in (0, 2), (argv, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if status == 0:
        assert_png(output, Image.open(output).size)
    else:
        [line] = [line for line in err.splitlines() if line.startswith("cnn-vis: error: ")]
        # Only a run that had an image keeps it: one that became non-finite.
        assert output.exists() == ("the last finite image is saved" in line), (argv, err)


def test_the_temporary_name_has_a_fixed_length(tmp_path):
    with imageio.atomic_write(tmp_path / ("t" * 250 + ".png")) as file:
        file.write(b"data")
    assert (tmp_path / ("t" * 250 + ".png")).read_bytes() == b"data"
