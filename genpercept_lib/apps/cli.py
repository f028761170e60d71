"""``genpercept reproduce | train | evaluate | predict | toyworld``: the command line, a thin layer over the library.

``train`` fine-tunes one model of the paper's experiments into the cache the notebooks read
(``data/cache/finetune/``, keyed by the prior, the spec and the training config), so heavy runs can go
multi-GPU with ``accelerate launch -m genpercept_lib.apps.cli train --profile paper ...`` and the notebooks then
only evaluate.

Errors a user can fix (a wrong profile or task, a missing notebook, a bad path or file) print one line on
stderr and exit with status 2; anything else (a CUDA out-of-memory, a torch internal error, a bug) keeps its
traceback.

Only the subcommand that runs imports its modules (``train`` and ``predict`` need torch and diffusers: ~10 s on
a slow CPU), so ``genpercept --help`` and ``genpercept reproduce`` start at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import profiles
from . import reproduce  # no torch: `genpercept --help` and `genpercept reproduce` start quickly


class UserError(Exception):
    """An error caused by the command line's input: printed as one line, exit status 2."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the input is wrong" (one line), not "the program is wrong" (traceback):
    ValueError (our one-line messages, and the library's own input errors, which subclass it: DatasetError,
    ModelPathError, ImageReadError, ConfigError, ...), FileNotFoundError, and a failed notebook."""
    return (UserError, ValueError, FileNotFoundError, NotImplementedError, reproduce.NotebookFailed)


def _add_reproduce(p) -> None:
    p.add_argument("--profile", default="default", help="smoke | default | paper (default: default)")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 04 or 00,01")
    p.add_argument("--overrides", default=None, metavar="JSON",
                   help='change profile fields for an ablation, e.g. \'{"train_steps": 1200}\'')
    p.add_argument("--seed", type=int, default=None, help="the notebooks' seed (default 0)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="default: results/ for the default profile without overrides, else "
                        "results/runs/<profile>-<hash of the parameters>/")
    p.add_argument("--notebooks-dir", type=Path, default=None, help="default: <repo>/notebooks")
    p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: genpercept if registered)")
    p.add_argument("--jobs", type=int, default=None,
                   help="notebooks run at once, one process each (default: the profile's jobs: 2 for default; "
                        "a notebook marked runs_alone always runs alone)")
    p.add_argument("--no-wait", action="store_true",
                   help="if another reproduce writes into the same results folder, stop at once (exit 2) "
                        "instead of waiting for it")


def _run_reproduce(args) -> int:
    import json

    extra = {}
    if args.overrides:
        try:
            extra["overrides"] = json.loads(args.overrides)
        except ValueError as err:
            raise UserError(f"--overrides {args.overrides!r}: not JSON ({err})") from None
    if args.seed is not None:
        extra["seed"] = args.seed
    reproduce.run_notebooks(
        profile=args.profile, only=args.only, results_dir=args.results_dir,
        notebooks_dir=args.notebooks_dir, kernel_name=args.kernel, extra_parameters=extra or None, jobs=args.jobs,
        wait=not args.no_wait,
    )
    return 0


def _add_toyworld(p) -> None:
    p.add_argument("-o", "--output", type=Path, default=Path("toyworld_samples.png"))
    p.add_argument("--size", type=int, default=64, help="render size in pixels (>= 16)")
    p.add_argument("--index", type=int, default=0, help="scene index per domain (>= 0)")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="write --n scenes as a folder of images + labels (data/README.md) instead of the grid")
    p.add_argument("--task", default="depth", help="the label --export writes: depth | normal | dis | matting | seg")
    p.add_argument("--n", type=int, default=40, help="scenes --export writes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)


def _run_toyworld(args) -> int:
    if args.export is not None:
        from .. import userdata

        print(userdata.export_toyworld(args.export, args.task, args.n, args.size, args.seed))
        return 0
    from ..data import toyworld

    path = toyworld.write_sample_grid(args.output, size=args.size, index=args.index)
    print(path)
    return 0


def _add_train(p) -> None:
    from .. import schedule

    p.add_argument("--profile", default="default", help="smoke | default | paper (default: default)")
    from .. import pose, tasks  # noqa: F401  (importing pose registers the pose task)

    p.add_argument("--task", default="depth", help=" | ".join(tasks.names()))
    p.add_argument("--formulation", default="one_step", help="stochastic | deterministic | one_step")
    p.add_argument("--betas", type=float, nargs=2, default=schedule.SD21_BETAS, metavar=("START", "END"),
                   help="beta preset of the multi-step pipelines (default: SD2.1's 0.00085 0.012)")
    p.add_argument("--fraction", type=float, default=1.0, help="share of the training data (Table 2)")
    p.add_argument("--labels", default="clean", help="clean | reallike")
    p.add_argument("--init", default="prior", help="prior | scratch")
    p.add_argument("--pixel-loss", action="store_true", help="add the task's pixel-space loss (main models)")
    p.add_argument("--no-multires-noise", action="store_true", help="plain Gaussian noise (stochastic)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the profile's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate", action="store_true", help="then evaluate on the profile's held-out sets")
    g = p.add_argument_group("your own data (data/README.md): genpercept train --task T --data DIR -o OUT")
    g.add_argument("--data", type=Path, default=None, metavar="DIR", help="a folder of images + labels")
    g.add_argument("-o", "--output", type=Path, default=None, metavar="OUT",
                   help="where the fine-tuned U-Net, training.json and checkpoints go (a killed run resumes)")
    g.add_argument("--batch-size", type=int, default=None, help="default: the profile's")
    g.add_argument("--lr", type=float, default=None, help="default: the profile's")
    g.add_argument("--resolution", type=int, nargs="+", default=None, metavar="N",
                   help="training crop: one number (square) or H W (default: the profile's)")
    g.add_argument("--base", default=None, metavar="DIR",
                   help="an SD2.1 folder to start from (default: the profile's prior, the toy SD on a CPU)")
    g.add_argument("--depth-scale", type=float, default=1000.0,
                   help="16-bit depth PNG units per metre (default: %(default)s, millimetres)")


def _run_train_folder(args) -> int:
    from .. import userdata

    if args.output is None:
        raise UserError("--data needs -o OUT: the folder the fine-tuned model goes to")
    if args.formulation != "one_step" or args.labels != "clean" or args.init != "prior" or args.fraction != 1.0:
        raise UserError("--data trains the one-step model from the prior on the whole folder: drop --formulation, "
                        "--labels, --init and --fraction")
    cfg = profiles.setup(args.profile, args.seed, announce=False)
    userdata.train_folder(cfg, args.task, args.data, args.output, steps=args.steps, batch_size=args.batch_size,
                          lr=args.lr, resolution=args.resolution, base=args.base, depth_scale=args.depth_scale,
                          seed=args.seed, pixel_loss=args.pixel_loss)
    print(args.output)
    return 0


def _run_train(args) -> int:
    from .. import evaluate, experiment, finetune, pose, tasks
    from .. import prior as prior_lib
    from .. import spec as spec_lib

    # every option checked before anything is rendered or trained: a mistake is one line, at once
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps {args.steps}: expected >= 1")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed}: expected an integer >= 0")
    if args.data is not None:
        return _run_train_folder(args)
    if args.output is not None:
        raise UserError("-o OUT goes with --data DIR (your own data); the profile's models train into the cache")
    profiles.get_profile(args.profile)
    spec = spec_lib.FinetuneSpec(task=args.task, formulation=args.formulation, betas=tuple(args.betas),
                                 fraction=args.fraction, labels=args.labels, init=args.init,
                                 pixel_loss=args.pixel_loss, multires_noise=not args.no_multires_noise,
                                 steps=args.steps, seed=args.seed)  # task, formulation, betas, fraction, labels
    cfg = profiles.setup(args.profile, args.seed, announce=False)  # trains into the cache: no results folder
    prior = prior_lib.load_or_train_prior(cfg)
    trainer, runner = (pose, pose) if spec.task == pose.POSE.name else (finetune, experiment)  # pose: its own pipeline
    unet, history = trainer.finetune(cfg, spec, prior)
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return 0
    print(f"{spec.label()}: {len(history)} steps, last loss {history[-1]['loss']:.4f}" if history else spec.label())
    print(finetune.finetune_folder(cfg, spec, prior))
    if args.evaluate:
        df = runner.run(cfg, prior, spec, evaluate.eval_domains(cfg, spec.task))
        print(df[["dataset", "domain", *tasks.get(spec.task).metrics]].to_string(index=False))
    return 0


def _add_evaluate(p) -> None:
    p.add_argument("--task", required=True, help="depth | normal | dis | matting | seg")
    p.add_argument("--unet", required=True, type=Path, metavar="OUT", help="a folder genpercept train --data wrote")
    p.add_argument("--data", required=True, type=Path, metavar="DIR", help="a folder of images + labels")
    p.add_argument("--split", default="val", help="val | train | all (default: %(default)s)")
    p.add_argument("--image-blind", action="store_true",
                   help="add the image-blind row: the mean training label, the same guess for every image")
    p.add_argument("--base", default=None, metavar="DIR", help="default: the base recorded in OUT/training.json")
    p.add_argument("--profile", default="default", help="smoke | default | paper (processing, seed)")
    p.add_argument("--processing-res", type=int, default=None, help="default: the training resolution")
    p.add_argument("--depth-scale", type=float, default=None, help="default: the one the model trained with")
    p.add_argument("-o", "--output", type=Path, default=None, help="where metrics.csv and per_image.csv go "
                                                                  "(default: OUT/eval-<split>)")


def _run_evaluate(args) -> int:
    from .. import userdata

    cfg = profiles.setup(args.profile, None, announce=False)
    userdata.evaluate_folder(cfg, args.task, args.unet, args.data, args.split, image_blind=args.image_blind,
                             base=args.base, depth_scale=args.depth_scale, processing_res=args.processing_res,
                             out_dir=args.output)
    return 0


def _predict():
    """The predict app, loaded when its command runs (it imports the task registry, so torch)."""
    from . import predict

    return predict


def _add_predict(p) -> None:
    _predict().add_arguments(p)


def _run_predict(args) -> int:
    return _predict().run(args)


COMMANDS = {  # name: (adds its options, runs it)
    "reproduce": (_add_reproduce, _run_reproduce),
    "train": (_add_train, _run_train),
    "evaluate": (_add_evaluate, _run_evaluate),
    "toyworld": (_add_toyworld, _run_toyworld),
    "predict": (_add_predict, _run_predict),
}
HELP = {
    "reproduce": "run the numbered notebooks with papermill into results/",
    "train": "fine-tune one experiment's U-Net into the cache, or with --data DIR -o OUT on your own data",
    "evaluate": "score a model trained on your own data on a folder of images + labels",
    "toyworld": "write a sample grid PNG of every toy-world domain and label",
    "predict": "run a GenPercept checkpoint on images or folders of images",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand listed; only ``command``'s options are added (all of them when
    ``command`` is None), so a command imports only what it needs."""
    parser = argparse.ArgumentParser(prog="genpercept", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _) in COMMANDS.items():
        p = sub.add_parser(name, help=HELP.get(name))
        if command in (None, name):
            add(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), "")  # the top level has no options but -h
    args = build_parser(command).parse_args(argv)
    _, run = COMMANDS[args.command]
    try:
        return run(args)
    except reproduce.Interrupted as err:
        print(f"genpercept {args.command}: {err}", file=sys.stderr)
        return 143
    except _user_errors() as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"genpercept {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
