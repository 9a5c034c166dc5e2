"""The command line: parses the options (`cnnvis.arguments`), calls the library's workflow
for the command (`cnnvis.workflows`), and prints what it made. Every mistake ends in one
line naming the problem and the fix, with exit status 2; an internal error in exit
status 1; Ctrl-C and SIGTERM in 130 and 143, after saving what there is.
"""
from __future__ import annotations

import os
import sys
import traceback

import torch

from cnnvis import studio, workflows
from cnnvis.arguments import parse
from cnnvis.console import exit_status, guarded_process
from cnnvis.engine import keep_freed_memory
from cnnvis.errors import UserError
from cnnvis.settings import default

EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 2, 1
NOT_ENOUGH_MEMORY = ("error: this machine has not enough memory for the run; use smaller sizes "
                     "(--initial_size, --final_size) or a smaller --batch_size.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["studio"]:   # `cnn-vis studio`, the console script's word for --studio
        argv = ["--studio", *argv[1:]]
    debug = "--debug" in argv or os.environ.get("CNN_VIS_DEBUG") == "1"
    with guarded_process():
        try:
            return run(*parse(argv))
        except UserError as error:
            return _fail(f"error: {error}", debug)
        except KeyboardInterrupt as stop:
            print("cnn-vis: interrupted.", file=sys.stderr)
            return exit_status(stop)
        except MemoryError:
            return _fail(NOT_ENOUGH_MEMORY, debug)
        except OSError as error:   # the operating system refused something not checked before
            where = f" '{error.filename}'" if error.filename else ""
            return _fail(f"error: the operating system refused{where}: {error.strerror or error}; "
                         "check the path, the free disk space and the permissions.", debug)
        except Exception as error:  # noqa: BLE001 - the last line of defence: no traceback for users
            if _out_of_memory(error):
                return _fail(NOT_ENOUGH_MEMORY, debug)
            _fail(f"internal error: {type(error).__name__}: {error}. This is a bug; please report "
                  "it with the output of the same command with --debug.", debug)
            return EXIT_INTERNAL_ERROR


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"cnn-vis: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def _out_of_memory(error: Exception) -> bool:
    """PyTorch's allocators report a failed allocation as a RuntimeError (torch.OutOfMemoryError
    on CUDA)."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in text
                                             or "out of memory" in text))


def run(options: dict[str, object], argv: list[str]) -> int:
    """One command: a model tool, or what the options make."""
    studio.check_studio_options(options)
    if options.get("studio"):
        return studio.serve(options)
    model = {name: options[name] for name in ("model", "deploy_txt", "caffe_model", "gpu",
                                              "backend", "precision") if name in options}
    if options.get("layer_gallery"):
        print(workflows.layer_gallery(**{k: v for k, v in model.items()
                                         if k in ("model", "deploy_txt", "caffe_model", "gpu")}))
        return 0
    if options.get("list_recipes"):
        for name, description, models in workflows.list_recipes():
            layers = f" (its layer chosen for {', '.join(models)})" if models else ""
            print(f"{name:10} {description}{layers}")
        return 0
    if options.get("list_models"):
        print(f"{'name':22} {'trained on':40} {'weights':8} source")
        for name, trained_on, present, source in workflows.list_models():
            print(f"{name:22} {trained_on:40} {'present' if present else 'missing':8} {source}")
        return 0
    if options.get("download"):
        path = workflows.download(options["download"])
        print(f"{options['download']}: {path or 'weights come with the installed Python package'}")
        return 0
    if options.get("list_layers"):
        which = {k: v for k, v in model.items() if k in ("model", "deploy_txt")}
        notes = workflows.layer_notes(**which)
        for name, shape in workflows.list_layers(**which):
            print(f"{name:40} {' x '.join(str(d) for d in shape):16} {notes.get(name, '')}".rstrip())
        return 0
    if options.get("backend", default("backend")) == "torch":
        keep_freed_memory()   # faster on a CPU (see its docstring); a process-wide choice
    if options.get("classify"):
        for index, value, label in workflows.classify(options["classify"],
                                                      mean_image=options.get("mean_image"),
                                                      **model):
            print(f"{index:5d} {value:10.4f} {label}")
        return 0
    outcome = workflows.make(command_line=argv, **options)
    if outcome.stopped is not None:
        print(f"\ncnn-vis: interrupted; {outcome.written}", file=sys.stderr)
        return exit_status(outcome.stopped)
    print(outcome.written, file=sys.stderr)
    return 0

