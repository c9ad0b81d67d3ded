"""The `genlab` command. Thin: it parses arguments, calls the Python API and maps errors to
exit codes (2: the user's to fix, one line; 3: the stability guard aborted; 1: a bug)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from genlab import __version__
from genlab.errors import EXIT_INTERRUPTED, EXIT_OK, GenlabError, GuardAbort, RunInterrupted
from genlab.launch import add_launch_arguments, check_launch_arguments, launch, wants_launch
from genlab.track.console import make_console, protect_streams


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genlab",
        description="Train, tune and evaluate generative models from one YAML config.",
    )
    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a config")
    p.add_argument("config", help="YAML config file, e.g. examples/lm.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. optim.lr=3e-4")
    p.add_argument("--run-dir", help="where to write the run (default runs/<name>)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory")
    add_launch_arguments(p)

    p = sub.add_parser("resume", help="continue a run from its last healthy checkpoint")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.max_steps=2000")
    add_launch_arguments(p)

    p = sub.add_parser("generate", help="sample text (LM runs) or an image grid (VAE/GAN runs)")
    p.add_argument("run_dir")
    text = p.add_argument_group("language-model runs")
    text.add_argument("--prompt", help="text to continue (default: the start of a document)")
    text.add_argument("--max-new-tokens", type=int, help="tokens to generate (default 200)")
    text.add_argument("--temperature", type=float, help="0: greedy (default 0.8)")
    text.add_argument("--top-k", type=int, help="sample from the k likeliest (default 50; 0: off)")
    text.add_argument("--top-p", type=float, help="nucleus sampling (default: off)")
    images = p.add_argument_group("image runs (VAE, GAN)")
    images.add_argument("--num-samples", type=int, help="images in the grid (default 64)")
    images.add_argument(
        "--out", help="PNG to write (default RUN_DIR/samples/generated-step-N-seed-S.png)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", help="a checkpoints/step-N directory (default: the last)")
    p.add_argument("--threads", type=int, help="CPU threads (default: at most the CPUs available)")

    p = sub.add_parser("eval", help="evaluate a trained run; merges results into metrics.json")
    p.add_argument("run_dir")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument(
        "--metrics",
        default=None,
        help="comma-separated: perplexity,nll,bits_per_byte,bleu,chrf,robustness "
        "(default: all but robustness); classify runs: report,robustness",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="windows for perplexity (default: all), continuation pairs for BLEU/chrF (100)",
    )
    p.add_argument("--checkpoint", help="a checkpoints/step-N directory (default: the last)")
    p.add_argument("--threads", type=int, help="CPU threads (default: at most the CPUs available)")

    p = sub.add_parser("predict", help="label new texts or images with a classify run")
    p.add_argument("run_dir")
    p.add_argument("--input", required=True, help=".jsonl/.csv/.txt of texts, or image(s)")
    p.add_argument("--output", help=".jsonl or .csv to write (default: JSON lines on stdout)")
    p.add_argument("--checkpoint", help="a checkpoints/step-N directory (default: the last)")
    p.add_argument("--batch-size", type=int, default=None, help="default: train.batch_size")

    p = sub.add_parser("tune", help="search hyperparameters (the config's tune: section)")
    p.add_argument("config", help="YAML config with a tune: section")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. tune.n_trials=50")
    p.add_argument("--study-dir", help="where the study lives (default studies/<name>)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")

    p = sub.add_parser("export", help="export a run: Hugging Face, ONNX or GGUF, with parity")
    p.add_argument("run_dir")
    p.add_argument("--format", required=True, help="hf, onnx or gguf")
    p.add_argument("--out", help="where to write it (default RUN_DIR/export/<format>)")
    p.add_argument("--checkpoint", help="a checkpoints/step-N directory (default: the last)")
    p.add_argument("--adapter", action="store_true", help="hf, LoRA runs: the adapter alone")
    p.add_argument("--gguf-type", help="gguf: f32, f16 (default) or q8_0")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p = sub.add_parser("report", help="write the self-contained report.html of a run or study")
    p.add_argument("path", help="a run directory (runs/lm) or a study directory (studies/x)")
    p.add_argument("--out", help="where to write it (default PATH/report.html)")

    p = sub.add_parser("runs", help="list the runs in a directory with their status")
    p.add_argument("dir", nargs="?", default="runs", help="where to look (default runs)")

    p = sub.add_parser("compare", help="compare runs side by side in one HTML page")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more run directories")
    p.add_argument("--out", default="compare.html", help="where to write it (compare.html)")
    p = sub.add_parser("compress", help="prune / quantize a run; measure before and after")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="compress.* settings")
    p.add_argument("--out", help="output run directory (default RUN_DIR/compressed/<name>)")
    p.add_argument("--sweep", action="store_true", help="the default grid, one table and plot")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p = sub.add_parser("config", help="show every config key: meaning, default and range")
    p.add_argument(
        "--show",
        nargs="?",
        const="",
        default="",
        metavar="SECTION",
        help="a section or key (e.g. train, model.vae, optim.lr); default: everything",
    )
    p.add_argument("--markdown", action="store_true", help="as Markdown (docs/CONFIG.md)")

    p = sub.add_parser("data", help="prepare a dataset (clean, dedup, split, tokenize) or report")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("prepare", help="prepare the dataset a config describes (cached)")
    q.add_argument("config", help="YAML config file, e.g. examples/lm.yaml")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data.split.test=0.1")
    q.add_argument("--out", help="where to write it (default .cache/genlab/datasets/<key>)")
    q = data_sub.add_parser("report", help="show a prepared dataset's report")
    q.add_argument("dataset_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    protect_streams()  # a closed pipe or terminal never stops a run
    parser = build_parser()
    # Overrides may sit before or after options (`train cfg.yaml --overwrite optim.lr=1`);
    # argparse leaves the later ones unparsed, so collect them here.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    takes_overrides = args.command in ("train", "resume", "tune", "compress") or (
        args.command == "data" and args.data_command == "prepare"
    )
    if stray or (extra and not takes_overrides):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *extra]
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    # Under torchrun every rank meets the same bad input and the guard decides alike on every
    # rank: the message comes once, from rank 0.
    rank_zero = os.environ.get("RANK", "0") == "0"
    if argv is None:  # the command's own process: nothing in it compiles an optimizer
        from genlab.training import eager_optim

        eager_optim.skip_dynamo_import()
    trains = args.command in ("train", "resume")
    if trains:
        from genlab.training import elastic, goodput

        if argv is None:  # the command itself: the run's wall time starts with the process
            goodput.mark_process_start()
        repeated = elastic.recorded_exit()
        if repeated is not None:  # a restart cannot fix what stopped the last attempt
            return repeated
    try:
        if trains and wants_launch(args):
            return _launch(args, sys.argv[1:] if argv is None else argv)
        return _dispatch(args)
    except GenlabError as exc:
        if rank_zero:
            print(f"genlab: error: {exc}", file=sys.stderr)
        _record_exit(trains, exc.exit_code)
        return exc.exit_code
    except GuardAbort as exc:
        if rank_zero:
            print(exc.diagnosis, file=sys.stderr)
        _record_exit(trains, exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if rank_zero:
            print(f"genlab: {_interrupted(args, exc)}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _interrupted(args: argparse.Namespace, exc: KeyboardInterrupt) -> str:
    """What an interrupt left and the exact command that continues from it."""
    if args.command == "tune":
        return "interrupted; run the same command again to resume the study"
    if isinstance(exc, RunInterrupted):  # the loop saved a checkpoint and names it
        return exc.message
    if args.command not in ("train", "resume"):
        return "interrupted"
    run_dir = Path(args.run_dir) if args.run_dir else None
    if run_dir is None:
        try:
            from genlab import config

            run_dir = Path("runs") / config.load(args.config, args.overrides).name
        except GenlabError:
            return "interrupted"
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(p.name.startswith("step-") for p in checkpoints.iterdir()):
        where = shlex.quote(str(run_dir))
        return f"interrupted; continue from the last checkpoint with: genlab resume {where}"
    return (
        f"interrupted before the first checkpoint of {run_dir}; start again with the same "
        "command plus --overwrite"
    )


def _record_exit(trains: bool, code: int) -> None:
    if trains:
        from genlab.training.elastic import record_exit

        record_exit(code)


def _dispatch(args: argparse.Namespace) -> int:
    from genlab import api

    if args.command == "train":
        api.train(args.config, args.run_dir, args.overrides, overwrite=args.overwrite)
    elif args.command == "resume":
        api.resume(args.run_dir, args.overrides)
    elif args.command == "generate":
        result = api.generate(
            args.run_dir,
            prompt=args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            checkpoint=args.checkpoint,
            num_samples=args.num_samples,
            out=args.out,
            threads=args.threads,
        )
        print(result)  # the text, or where the image grids went
        if isinstance(result, str) and not result.strip():
            print(
                "genlab: note: the sample is only whitespace; try another --seed, or a --prompt "
                "such as 'The '",
                file=sys.stderr,
            )
    elif args.command == "tune":
        from genlab.tuning import print_summary

        print_summary(api.tune(args.config, args.overrides, args.study_dir, args.workers))
    elif args.command == "eval":
        results = api.evaluate(
            args.run_dir,
            split=args.split,
            metrics=args.metrics,
            num_samples=args.num_samples,
            checkpoint=args.checkpoint,
            threads=args.threads,
            console=make_console(stderr=True),
        )
        from genlab.evaluation.report import print_table  # imports torch: after the checks

        print_table(results, make_console())
    elif args.command == "export":
        result = api.export(
            args.run_dir,
            args.format,
            args.out,
            args.checkpoint,
            adapter=args.adapter,
            gguf_type=args.gguf_type,
            overwrite=args.overwrite,
            console=make_console(stderr=True),
        )
        print(f"exported to {result.path} (parity {'ok' if result.parity_ok else 'NOT met'})")
    elif args.command == "compress":
        from genlab.compression.table import print_table

        result = api.compress(
            args.run_dir, args.overrides, args.out, sweep=args.sweep, overwrite=args.overwrite
        )
        print_table(result.rows, make_console(), title=f"genlab compress → {result.out_dir}")
    elif args.command == "predict":
        from genlab.prediction import format_rows

        rows = api.predict(args.run_dir, args.input, args.output, args.checkpoint, args.batch_size)
        if args.output is None:
            sys.stdout.write(format_rows(rows, list(rows[0]["probs"]) if rows else []))
        else:
            print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    elif args.command == "data":
        _data(args)
    elif args.command in ("report", "compare"):
        if args.command == "report":
            out = api.report(args.path, args.out)
        else:
            out = api.compare(args.run_dirs, args.out)
        print(out)
    elif args.command == "runs":
        from genlab.track.runs import print_runs

        print_runs(api.runs(args.dir), Path(args.dir))
    elif args.command == "config":
        from genlab.config_reference import format_markdown, format_text, reference

        rows = reference(args.show or None)
        print((format_markdown if args.markdown else format_text)(rows), end="")
    return EXIT_OK


def _launch(args: argparse.Namespace, argv: list[str]) -> int:
    """Check what can be checked here, then start the worker processes (genlab.launch)."""
    from genlab import api

    check_launch_arguments(args)
    if args.command == "train":
        from genlab.track.rundir import check_new

        cfg = api.load_config(args.config, args.overrides)
        if args.node_rank == 0:  # the run directory is written from node 0
            root = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.name
            check_new(root, args.overwrite)
    elif args.node_rank == 0:
        from genlab.training.resumable import check_resumable

        check_resumable(Path(args.run_dir), args.overrides)
    return launch(args, argv)


def _data(args: argparse.Namespace) -> None:
    from genlab.data.prepare import prepare_dataset, show_dataset_report

    if args.data_command == "prepare":
        from genlab import config

        cfg = config.load(args.config, args.overrides)
        out = Path(args.out) if args.out else None
        prepared = prepare_dataset(cfg.data, cfg.seed, out, make_console(stderr=True))
        show_dataset_report(prepared.directory, make_console())
        state = "reused (unchanged inputs)" if prepared.cached else "built"
        print(f"dataset {state}: {prepared.directory}")
    else:
        show_dataset_report(Path(args.dataset_dir), make_console())


if __name__ == "__main__":
    sys.exit(main())
