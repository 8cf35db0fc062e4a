"""The ``bflsim`` command line.

    bflsim demo                          quick end-to-end job on the synthetic default
    bflsim run EXPERIMENT.toml           run an experiment file (all its scenarios), write run folders
    bflsim sweep EXPERIMENT.toml         run a grid of runs; skips complete points, resumes interrupted ones
    bflsim resume RUN_DIR                carry on an interrupted run after its last completed round
    bflsim report RUN_DIR... --out DIR   tables and figures of finished runs
    bflsim data [--download NAME]        where datasets are looked for, what is there; exit 1 if a file is broken
    bflsim audit RUN_DIR                 check a ledger-backed run against its chain and data;
                                         exit 0 pass, 1 mismatch, 2 could not check
    bflsim bench                         speed benchmarks, written as CSV
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import threading
import time
import tomllib
from importlib import resources
from pathlib import Path

from bflsim.config import ConfigError, parse_overrides
from bflsim.plans import Plan, load_plan, plan_from_dict
from bflsim.progress import VERBOSE_ENV, Progress
from bflsim.report import FIGURES
from bflsim.runfolder import exit_code, raise_on_signals
from bflsim.runner import resume_run, run_experiment, run_plan

DEFAULT_RUNS_DIR = Path("runs")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    raise_on_signals()  # SIGINT and SIGTERM end a run as `interrupted`, without a traceback
    set_verbosity(getattr(args, "verbose", False))
    if getattr(args, "tensorboard", None) is not None:
        from bflsim.runfolder import tracking

        tracking.set_root(args.tensorboard)
    try:
        return args.handler(args)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        # Every bad-input error of bflsim is a ValueError subclass with a full sentence.
        print(f"bflsim: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"bflsim: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"bflsim: {interrupted_line(err)}", file=sys.stderr)
        if argv is None:  # the program itself, not a caller in the same process
            exit_now_if_threads_linger(exit_code(err))
        return exit_code(err)


def set_verbosity(verbose: bool) -> None:
    """Framework noise off unless ``--verbose``: TensorFlow's C++ start-up lines (oneDNN,
    CPU features, absl) and Flower's deprecation notice. Set in the environment, before
    anything imports TensorFlow, so Ray's workers (started from this process) inherit it;
    a ``TF_CPP_MIN_LOG_LEVEL`` the user set is kept."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.pop(VERBOSE_ENV, None)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def exit_now_if_threads_linger(code: int, grace: float = 2.0) -> None:
    """Exit at once when threads of the stopped run still wait (a Flower worker blocked on a
    Ray task that ended with Ray): the interpreter would wait for them for ever. The run
    folder is already closed and Ray shut down, so nothing is lost."""
    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def interrupted_line(err: KeyboardInterrupt) -> str:
    """One line: which signal, where the completed rounds are, how to carry on."""
    how = err.args[0] if err.args else "SIGINT"
    if getattr(err, "summary", None):  # several runs at once (a parallel sweep)
        return f"interrupted ({how}); {err.summary}"  # type: ignore[attr-defined]
    run_dir = getattr(err, "run_dir", None)
    if run_dir is None:
        return f"interrupted ({how})"
    rounds = getattr(err, "rounds_kept", 0)
    kept = {0: "no round was completed", 1: "round 1 is kept"}.get(rounds, f"rounds 1-{rounds} are kept")
    again = "re-run the same command" if getattr(err, "in_plan", False) else f"bflsim resume {run_dir}"
    return f"interrupted ({how}); {kept} in {run_dir}" + (f"; to carry on: {again}" if rounds else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bflsim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="dataset folder (default: the experiment's data.data_dir, "
                                          "else $BFLSIM_DATA_DIR, else ./data)")
        p.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
        p.add_argument("--verbose", "-v", action="store_true",
                       help="also show the frameworks' own start-up logs and notices (TensorFlow, Flower), "
                            "which are filtered by default")

    def tensorboard(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tensorboard", type=Path, metavar="DIR",
                       help="also write per-round (per-epoch) scalars as TensorBoard event files under DIR "
                            "(then: tensorboard --logdir DIR)")

    for name, help_text in (
        ("run", "run an experiment file (all its scenarios)"),
        ("sweep", "run every point of an experiment's [sweep] grid or [[scenarios]]"),
    ):
        runner = sub.add_parser(name, help=help_text)
        runner.add_argument("experiment", type=Path, help="experiments/<name>.toml")
        runner.add_argument("--out", type=Path, default=DEFAULT_RUNS_DIR, help="parent folder of run folders (default: runs/)")
        runner.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a config value in every run, e.g. --set train.epochs=2 (TOML value syntax)")
        runner.add_argument("--only", action="append", default=[], metavar="POINT",
                            help="run only this scenario or grid point (repeatable)")
        runner.add_argument("--parallel", type=parallel_count, default="auto", metavar="N|auto",
                            help="federated points run at once (default auto: as many as the cores hold "
                                 "when every point is small, else one at a time with all cores)")
        common(runner)
        tensorboard(runner)
        runner.set_defaults(handler=cmd_run)

    launch = sub.add_parser("flwr-run", help="run one federated experiment under Flower's `flwr run`, on a SuperLink "
                                              "of its own (federation size from the experiment; stopped afterwards)")
    launch.add_argument("experiment", type=Path, help="experiments/<name>.toml (one federated run)")
    launch.add_argument("--out", type=Path, default=DEFAULT_RUNS_DIR, help="parent folder of run folders (default: runs/)")
    launch.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set federation.rounds=3 (TOML value syntax)")
    launch.add_argument("--data-dir", help="dataset folder (default: $BFLSIM_DATA_DIR, else ./data)")
    launch.add_argument("--port", type=int, metavar="P",
                        help="the SuperLink's port on 127.0.0.1 (Flower 1.41 serves its Runtime, Control and Fleet "
                             "APIs on one port; default: a free one)")
    launch.add_argument("--flwr-home", type=Path, metavar="DIR",
                        help="the SuperLink's FLWR_HOME: its connection, log and pid file (default: a new "
                             "temporary folder); a SuperLink kept there earlier is reused")
    launch.add_argument("--keep-superlink", action="store_true",
                        help="leave the SuperLink running for the next run with this --flwr-home "
                             "(stop it with bflsim flwr-stop DIR)")
    launch.set_defaults(handler=cmd_flwr_run)

    launch_stop = sub.add_parser("flwr-stop", help="stop a SuperLink kept by flwr-run --keep-superlink, "
                                                    "and only it (found by its FLWR_HOME)")
    launch_stop.add_argument("flwr_home", type=Path, metavar="DIR", help="its --flwr-home")
    launch_stop.set_defaults(handler=cmd_flwr_stop)

    resume = sub.add_parser("resume", help="carry on an interrupted federated run after its last completed round")
    resume.add_argument("run", type=Path, help="the run folder (runs/<name>-<time>, or a sweep point's folder)")
    common(resume)
    tensorboard(resume)
    resume.set_defaults(handler=cmd_resume)

    demo = sub.add_parser("demo", help="quick end-to-end job on the built-in synthetic data")
    demo.add_argument("--out", type=Path, default=DEFAULT_RUNS_DIR)
    common(demo)
    tensorboard(demo)
    demo.set_defaults(handler=cmd_demo)

    report = sub.add_parser("report", help="tables and figures of finished run folders")
    report.add_argument("runs", nargs="+", type=Path)
    report.add_argument("--out", type=Path, required=True)
    report.add_argument("--model", help="model of Table 5 and Figures 1, 3 (default: the runs' last model)")
    report.add_argument("--figure", choices=list(FIGURES), default="auto",
                        help="; ".join(f"{name}: {what}" for name, what in FIGURES.items()))
    report.set_defaults(handler=cmd_report)

    reproduce = sub.add_parser("reproduce", help="run every experiment behind results/ and rebuild it "
                                                  "(results/reproduce.toml; resumable; make paper)")
    reproduce.add_argument("--only", action="append", default=[], metavar="STEP", help="only this step (repeatable)")
    reproduce.add_argument("--dry-run", action="store_true", help="print the plan and its time, run nothing")
    reproduce.add_argument("--recipe", type=Path, default=Path("results/reproduce.toml"))
    reproduce.set_defaults(handler=cmd_reproduce)

    reference = sub.add_parser("config-reference", help="print every experiment key with its type, default and "
                                                         "meaning (Markdown; docs/CONFIG.md is this output)")
    reference.set_defaults(handler=cmd_config_reference)

    redraw = sub.add_parser("figures", help="redraw every figure (and the centralized tables) under a folder from the "
                                             "tidy rows committed beside it (seconds; trains nothing)")
    redraw.add_argument("folder", nargs="?", type=Path, default=Path("results"), help="default: results")
    redraw.set_defaults(handler=cmd_figures)

    data = sub.add_parser("data", help="where datasets are looked for and what is there "
                                       "(exit 1 when a file is missing or corrupt)")
    data.add_argument("datasets", nargs="*", metavar="NAME",
                      help="check only these datasets (default: every registered one)")
    data.add_argument("--data-dir")
    data.add_argument("--download", metavar="NAME", help="download a public dataset (nsl-kdd, cic-ids2017, all)")
    data.set_defaults(handler=cmd_data)

    audit = sub.add_parser("audit", help="check a ledger-backed run folder against its chain and data "
                                          "(exit 0 pass, 1 mismatch, 2 could not check)")
    audit.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                       help="a run folder (runs/<name>-<time>), or a folder of runs (an experiment's, "
                            "runs/<experiment>): each ledger-backed run below it is audited")
    audit.add_argument("--out", type=Path, metavar="FILE", help="also write what is printed to FILE")
    audit.add_argument("--rpc-url", help="read the chain at this JSON-RPC endpoint instead of replaying it")
    audit.add_argument("--data-dir", help="dataset folder, to recompute data digests, partitions and the test split "
                                          "(default: as the run recorded it, else $BFLSIM_DATA_DIR, else ./data)")
    audit.add_argument("--skip-data", "--no-data", dest="skip_data", action="store_true",
                       help="skip every check that needs the data (the verdict says so)")
    audit.add_argument("--rounds", default="all",
                       help="rounds whose global model is re-evaluated: all (default), none, sample:N, "
                            "or a list such as 1,5,last")
    audit.set_defaults(handler=cmd_audit)

    listing = sub.add_parser("list", help="every defence, attack, dataset and model, with parameters and references")
    listing.set_defaults(handler=cmd_list)

    bench = sub.add_parser("bench", help="speed benchmarks (CSV under --out)")
    bench.add_argument("--out", type=Path, default=Path("results/bench"))
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--suite", choices=("centralized", "federated", "chain", "ledger", "throughput", "scale",
                                           "realtime"),
                       default="centralized",
                       help="centralized: training/inference; federated: Flower/Ray vs plain loop; "
                            "chain: hashing, signing, finality, Krum, gas (Table 6); ledger: a round with/without it; "
                            "throughput: a whole sweep against its compute floor, nodes, memory, Krum (~15 min); "
                            "scale: set-up, round, memory, gas and audit against the number of nodes, per ledger mode; "
                            "realtime: an edge node's detection latency (p50/p99 per micro-batch), flows per second "
                            "and alert finality (~3 min)")
    bench.add_argument("--experiment", type=Path, default=None,
                       help="federated/ledger/throughput/scale suites: the experiment to run (default "
                            "experiments/bench_federated.toml, experiments/bench_ledger.toml, "
                            "experiments/sweep_attackers.toml, experiments/scale_batched.toml)")
    bench.add_argument("--nodes", default="10,100,1000,10000",
                       help="scale suite: federation sizes, comma-separated (default 10,100,1000,10000)")
    bench.add_argument("--ledgers", default="none,per-node,batched",
                       help="scale suite: ledgers, comma-separated, of none, per-node, batched")
    bench.add_argument("--merge", action="store_true",
                       help="scale suite: keep the points already in --out's scale_points.csv that this call does "
                            "not measure again, and draw the CSV and figure from all of them")
    bench.add_argument("--no-anvil", action="store_true", help="chain and realtime suites: embedded chain only")
    common(bench)
    bench.set_defaults(handler=cmd_bench)
    return parser


def cmd_reproduce(args: argparse.Namespace) -> int:
    from bflsim.reproduce import read_recipe, reproduce

    return reproduce(read_recipe(args.recipe), only=set(args.only) or None, dry_run=args.dry_run)


def cmd_config_reference(args: argparse.Namespace) -> int:
    from bflsim.config.reference import config_reference

    print(config_reference(), end="")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from bflsim.report.redraw import redraw

    written, without_rows = redraw(args.folder)
    figures, tables = (len([p for p in written if p.suffix == suffix]) for suffix in (".pdf", ".tex"))
    print(f"redrew {figures} figures and {tables} tables under {args.folder}")
    for path in without_rows:
        print(f"not redrawn (no tidy rows beside it): {path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    plan = load_plan(args.experiment)
    if args.only:
        plan = plan.only(args.only)
    if args.set:
        plan = plan.with_overrides(parse_overrides(args.set))
    check_plan(plan, args.data_dir)
    if len(plan.points) == 1 and not plan.points[0][0].overrides and args.command == "run":
        print(f"run folder: {run_experiment(plan.points[0][1], args.out, args.data_dir, args.quiet)}")
        return 0
    for run_dir in run_plan(plan, args.out, args.data_dir, args.quiet, parallel=args.parallel):
        print(f"run folder: {run_dir}")
    return 0


def cmd_flwr_run(args: argparse.Namespace) -> int:
    from bflsim.fl.launch import flwr_run

    plan = load_plan(args.experiment)
    if args.set:
        plan = plan.with_overrides(parse_overrides(args.set))
    if len(plan.points) != 1:
        raise ConfigError(f"{args.experiment}: flwr-run runs one experiment; this file makes {len(plan.points)} runs "
                          f"({', '.join(p.name for p, _ in plan.points)}); run it with bflsim sweep")
    check_plan(plan, args.data_dir)  # the same refusals as bflsim run, before any process starts
    run_dir = flwr_run(args.experiment, args.set, args.out, args.data_dir, home=args.flwr_home, port=args.port,
                       keep=args.keep_superlink)
    print(f"run folder: {run_dir}")
    return 0


def cmd_flwr_stop(args: argparse.Namespace) -> int:
    from bflsim.fl.launch import flwr_stop

    stopped = flwr_stop(args.flwr_home)
    print(f"stopped {len(stopped)} processes started with FLWR_HOME={args.flwr_home.expanduser().absolute()}"
          + (f" (pids {', '.join(map(str, sorted(stopped)))})" if stopped else ""))
    return 0


def parallel_count(text: str) -> int | str:
    """``--parallel``: a whole number >= 1, or ``auto``."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1 or 'auto'; got {text!r}")
    return value


def check_plan(plan: Plan, data_dir: str | None) -> None:
    """Refuse what only the data or the chain can tell, for every federated point, before the
    first run starts (:func:`bflsim.fl.server_main.prepare_run`: too few training rows, a tiny
    node, bad values in the data, an RPC endpoint that cannot serve the run)."""
    federated = [(point, config) for point, config in plan.points if config.kind == "federated"]
    if not federated:
        return
    from bflsim.fl.server_main import prepare_run

    for point, config in federated:
        try:
            prepare_run(config, data_dir)
        except ValueError as err:
            if len(plan.points) == 1:
                raise
            raise ConfigError(f"point {point.name!r} ({point.label}): {err}") from err


def cmd_resume(args: argparse.Namespace) -> int:
    print(f"run folder: {resume_run(args.run, args.data_dir, args.quiet)}")
    return 0


def demo_plan() -> Plan:
    text = resources.files("bflsim").joinpath("demo.toml").read_text(encoding="utf-8")
    return plan_from_dict(tomllib.loads(text))


def cmd_demo(args: argparse.Namespace) -> int:
    from bflsim.audit import audit_run
    from bflsim.report.federated import write_federated_report

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    plan = demo_plan()
    plan = Plan(f"{plan.name}-{stamp}", plan.points, plan.raw)  # a fresh folder each time
    run_dirs = run_plan(plan, args.out, args.data_dir, args.quiet)
    report_dir = Path(args.out) / plan.name / "report"
    written = write_federated_report(run_dirs, report_dir)
    table = report_dir / "table4.md"
    if table.is_file():
        print(table.read_text())
    print(f"results: {', '.join(str(d / 'metrics.csv') for d in run_dirs)}")
    for path in written:
        if path.suffix == ".png":
            print(f"figure:  {path}")
    ok = True
    for run_dir in run_dirs:
        if (run_dir / "trail").is_dir():
            report = audit_run(run_dir)
            ok &= report.ok
            print(f"audit:   {run_dir.name}: {report.lines()[-1]} (bflsim audit {run_dir})")
    return 0 if ok else 1


def cmd_report(args: argparse.Namespace) -> int:
    """Tables and figures of run folders, or of folders holding them (a sweep, an experiment)."""
    from bflsim.report import write_report

    for path in write_report(args.runs, args.out, model=args.model, figure=args.figure):
        print(path)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from bflsim.data import data_report, download_dataset, resolve_data_dir

    if args.download:
        for path in download_dataset(args.download, resolve_data_dir(args.data_dir)):
            print(f"downloaded {path}")
    names = args.datasets or ([args.download] if args.download and args.download != "all" else None)
    report = data_report(args.data_dir, datasets=names)
    print(report)
    return 0 if report.ok else 1


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the audit of each run; exit 0 all pass, else the worst: 1 mismatch, 2 could not
    check (nor audit at all)."""
    from bflsim.audit import AuditError, audit_run

    runs = audit_targets(args.runs)
    lines: list[str] = []
    verdicts: list[int] = []
    for run in runs:
        block = [f"== {run}"] if len(runs) > 1 else []
        try:
            report = audit_run(run, rpc_url=args.rpc_url, data_dir=args.data_dir, check_data=not args.skip_data,
                               rounds=args.rounds)
        except AuditError as err:
            print(f"bflsim: cannot audit {run}: {err}", file=sys.stderr)
            block.append(f"cannot audit: {err}")
            verdicts.append(2)
        else:
            block += report.lines()
            verdicts.append(report.exit_code)
        print("\n".join(block), flush=True)  # as each run is audited: an experiment's audit takes minutes
        lines += block
    if len(runs) > 1:
        lines.append(f"{len(runs)} runs: " + ", ".join(f"{verdicts.count(code)} {name}" for code, name in
                                                       ((0, "PASS"), (1, "FAIL"), (2, "could not check"))))
        print(lines[-1])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return max(verdicts)


def audit_targets(paths: list[Path]) -> list[Path]:
    """The run folders to audit: each path that is a run (holds a manifest) as given; below a
    folder of runs, every run whose experiment has a ledger, in the
    order they were started. A path that is neither is kept, for the audit to refuse by name."""
    from bflsim.report.runs import find_runs
    from bflsim.runfolder import MANIFEST

    targets: list[Path] = []
    for path in paths:
        if (path / MANIFEST).is_file() or not path.is_dir():
            targets.append(path)
            continue
        below = [run.path for run in find_runs(path)
                 if run.manifest.get("config", {}).get("ledger", {}).get("backend", "none") != "none"]
        targets += below or [path]
    return targets


def cmd_list(args: argparse.Namespace) -> int:
    from bflsim.catalog import catalog_lines

    print("\n".join(catalog_lines()))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from bflsim.bench.model import run_centralized_bench
    from bflsim.bench.runs import run_federated_bench, run_ledger_bench

    progress = Progress(quiet=args.quiet)
    if args.suite == "federated":
        experiment = args.experiment or Path("experiments/bench_federated.toml")
        path = run_federated_bench(args.out, experiment, data_dir=args.data_dir, progress=progress)
    elif args.suite == "ledger":
        experiment = args.experiment or Path("experiments/bench_ledger.toml")
        path = run_ledger_bench(args.out, experiment, data_dir=args.data_dir, progress=progress)
    elif args.suite == "throughput":
        from bflsim.bench.throughput import run_throughput_bench

        experiment = args.experiment or Path("experiments/sweep_attackers.toml")
        path = run_throughput_bench(args.out, experiment, data_dir=args.data_dir, progress=progress)
    elif args.suite == "scale":
        from bflsim.bench.scale import LEDGERS, run_scale_bench

        nodes = [int(n) for n in args.nodes.split(",") if n.strip()]
        ledgers = [name.strip() for name in args.ledgers.split(",") if name.strip()]
        if unknown := sorted(set(ledgers) - set(LEDGERS)):
            raise ConfigError(f"--ledgers {unknown[0]!r}: expected some of {sorted(LEDGERS)}")
        experiment = args.experiment or Path("experiments/scale_batched.toml")
        path = run_scale_bench(args.out, experiment, data_dir=args.data_dir, progress=progress, nodes=nodes,
                               ledgers=ledgers, merge=args.merge)
    elif args.suite == "chain":
        from bflsim.bench.chain import run_chain_bench

        path = run_chain_bench(args.out, args.data_dir, repeats=max(args.repeats, 5), progress=progress,
                               anvil=not args.no_anvil)
    elif args.suite == "realtime":
        from bflsim.bench.realtime import run_realtime_bench

        path = run_realtime_bench(args.out, args.data_dir, progress=progress, anvil=not args.no_anvil)
    else:
        path = run_centralized_bench(args.out, data_dir=args.data_dir, repeats=args.repeats, progress=progress)
    print(f"benchmark: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
