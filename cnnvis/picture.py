"""One picture to a file: check the inputs, load the model, dream, save the PNG (with the
command that made it), keeping the image of a run that is stopped or stops being finite.
"""
from __future__ import annotations

import sys

from cnnvis.errors import Interrupted, NonFiniteImage, UserError
from cnnvis.imageio import PICTURE_SUFFIXES, check_writable_output, save_picture
from cnnvis.pixels import Picture
from cnnvis.plan import build_objective, check_combinations, new_seed, plan_picture, run_plan
from cnnvis.report import ConsoleObserver, describe_dream, parse_actions
from cnnvis.request import Outcome, Request, read_inputs
from cnnvis.signals import signals_deferred
from cnnvis.zoo import select_device

NON_FINITE_FIX = ("Lower --learning_rate (or the regularisation strengths --p_reg, --tv_reg, "
                  "their exponents --alpha, --beta, or the weights --l1_weight, --l2_weight)")


def write_picture(request: Request) -> Outcome:
    """Dream one picture into `--output_file` (a PNG)."""
    command, options = request.command, request.dream
    actions = parse_actions(command.iter_behavior)
    output = request.output
    check_writable_output(output, PICTURE_SUFFIXES)
    if command.output_depth == 16 and output.suffix.lower() != ".png":
        raise UserError(f"--output_depth 16 needs a PNG; {output} is 8-bit JPEG or WebP. Give "
                        f"--output_file {output.with_suffix('.png')}, or drop --output_depth.")
    inputs = read_inputs(command, output)
    check_combinations(options, inputs.photo is not None, inputs.guide is not None)
    device = select_device(command.gpu)
    spec = request.model_spec(inputs.mean_bgr, device)
    seed = command.seed if command.seed is not None else new_seed()
    plan = plan_picture(options, inputs.photo, inputs.mask, spec.input_size(), device, seed)
    model = spec.load()
    objective = build_objective(model, options, inputs.guide)

    png_text = request.png_text(model.name, seed)
    observer = ConsoleObserver(actions, output, command.output_depth, png_text,
                               total=len(plan.sizes) * options.num_steps,
                               show_size=(command.show_width, command.show_height))
    if "print" in actions:
        print(describe_dream(options, command.guide_image, command.mask), file=sys.stderr)

    def save(picture: Picture) -> None:
        with signals_deferred():   # a signal now waits for the file to be complete
            save_picture(output, picture.rgb(command.output_depth), png_text)

    try:
        try:
            picture = run_plan(plan, model, objective, callback=observer.report,
                               progress=observer.step_done)
        finally:
            observer.close()
    except NonFiniteImage as error:
        save(error.picture)
        raise UserError(f"{error}; the last finite image is saved as {output}. "
                        f"{NON_FINITE_FIX} and run again.") from None
    except Interrupted as interruption:
        if interruption.picture is None:
            raise
        save(interruption.picture)
        return Outcome(f"the current image is saved as {output}.", interruption)
    try:
        save(picture)
    except KeyboardInterrupt as stop:   # it came while the image was written, which finished
        return Outcome(f"the finished image is saved as {output}.", stop)
    return Outcome(f"wrote {output}")
