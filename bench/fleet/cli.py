"""``bench fleet plan|launch|collect|down``: registered on the main parser by
:func:`register`; SkyPilot is imported only by the actions that need it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.analysis.pricing import DEFAULT_BASIS, build_pricing
from bench.fleet import collect, plan
from bench.fleet.run import fleet_ok, run_fleet
from bench.run.suites import SUITES
from bench.schema.record import ResultError
from bench.schema.spec import AUTO_PRECISION, PRECISIONS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: The project (the SkyPilot workdir): where pyproject.toml and the Makefile are.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _add_plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--instances",
        required=True,
        metavar="TYPE,TYPE",
        help="EC2 instance types, comma-separated, e.g. g4dn.xlarge,p3.2xlarge,g5.xlarge",
    )
    p.add_argument("--suite", choices=sorted(SUITES), default=plan.DEFAULT_SUITE)
    p.add_argument(
        "--precision",
        choices=(*PRECISIONS, AUTO_PRECISION),
        help="passed to `bench suite` (auto: bf16 where the GPU has it, else fp16)",
    )
    p.add_argument("--use-spot", action="store_true", help="spot instances")
    p.add_argument(
        "--spot-price",
        action="append",
        default=[],
        metavar="TYPE=PRICE",
        help="hourly spot price for the estimate and the report (default: the on-demand "
        "price, which a spot price never exceeds) (repeatable)",
    )
    p.add_argument(
        "--prices",
        action="append",
        type=Path,
        default=[],
        help="a price file overriding or adding catalogue entries (repeatable)",
    )
    p.add_argument(
        "--time-limit",
        type=int,
        default=plan.DEFAULT_TIME_LIMIT_MIN,
        metavar="MIN",
        help=f"minutes the suite may run (default {plan.DEFAULT_TIME_LIMIT_MIN})",
    )
    p.add_argument(
        "--setup-limit",
        type=int,
        default=plan.DEFAULT_SETUP_LIMIT_MIN,
        metavar="MIN",
        help=f"minutes `make setup` may take (default {plan.DEFAULT_SETUP_LIMIT_MIN})",
    )
    p.add_argument(
        "--grace-minutes",
        type=int,
        default=plan.DEFAULT_GRACE_MIN,
        metavar="MIN",
        help="minutes after the time limit before SkyPilot tears a cluster down whatever it "
        f"is doing, to bring the results back (default {plan.DEFAULT_GRACE_MIN})",
    )
    p.add_argument(
        "--disk-size", type=int, default=plan.DEFAULT_DISK_GB, metavar="GB", help="root disk"
    )
    p.add_argument("--region", default=plan.DEFAULT_REGION)
    p.add_argument("--image-id", help="an AMI or SkyPilot image tag (default: by GPU)")
    p.add_argument(
        "--max-cost",
        type=float,
        default=plan.DEFAULT_MAX_COST_USD,
        metavar="USD",
        help="refuse a launch whose estimated cost exceeds this many dollars "
        f"(default {plan.DEFAULT_MAX_COST_USD:g})",
    )


def _add_out(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        type=Path,
        default=plan.DEFAULT_OUT,
        help=f"results come back into OUT/<instance type>/ (default {plan.DEFAULT_OUT})",
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``fleet`` and its actions to the main parser's subcommands."""
    p = sub.add_parser(
        "fleet",
        help="benchmark several EC2 instance types in one command (SkyPilot)",
        description="One SkyPilot task per instance type: the project as workdir, `make "
        "setup` as set-up, a suite as run, each cluster torn down when its run ends; the "
        "results come back into OUT/<instance type>/ and a report is built over them. "
        "launch, down and collect --pull need the fleet extra (`make setup-fleet`); launch "
        "also needs AWS credentials SkyPilot can use.",
    )
    actions = p.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    q = actions.add_parser(
        "plan", help="print what would be launched and what it would cost; launch nothing"
    )
    _add_plan_args(q)
    q = actions.add_parser(
        "launch", help="launch every instance type, bring the results back, report"
    )
    _add_plan_args(q)
    _add_out(q)
    q = actions.add_parser(
        "collect", help="summarize and report the results brought back (--pull: fetch more)"
    )
    _add_out(q)
    q.add_argument(
        "--pull",
        action="store_true",
        help="first bring back the results of the fleet's clusters still up (SkyPilot)",
    )
    q.add_argument("--report", type=Path, help="report directory (default OUT/report)")
    q.add_argument("--title", default="Fleet benchmark report")
    q.add_argument("--prices", action="append", type=Path, default=[])
    q.add_argument("--spot-price", action="append", default=[], metavar="TYPE=PRICE")
    actions.add_parser("down", help="tear down every cluster this tool started")


def _plan(args: argparse.Namespace) -> plan.FleetPlan:
    catalogue = build_pricing(price_files=args.prices).catalogue
    options = plan.FleetOptions(
        instances=plan.parse_instances(args.instances),
        suite=args.suite,
        precision=args.precision,
        use_spot=args.use_spot,
        spot_prices=plan.parse_spot_prices(args.spot_price),
        time_limit_min=args.time_limit,
        setup_limit_min=args.setup_limit,
        grace_min=args.grace_minutes,
        region=args.region,
        disk_gb=args.disk_size,
        image_id=args.image_id,
        max_cost_usd=args.max_cost,
    )
    return plan.plan_fleet(options, catalogue)


def _report(args: argparse.Namespace, out: Path, report_dir: Path, title: str) -> None:
    pricing = build_pricing(price_files=args.prices, spot=args.spot_price, basis=DEFAULT_BASIS)
    try:
        paths = collect.report(out, report_dir, pricing, title)
    except ImportError as exc:
        print(f"bench: no report: {exc} (install the report extra)", file=sys.stderr)
        return
    except ResultError as exc:
        print(f"bench: no report: {exc}", file=sys.stderr)
        return
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def cmd_plan(args: argparse.Namespace) -> int:
    fleet = _plan(args)
    print(plan.render(fleet))
    plan.check_budget(fleet)
    print("nothing launched (plan only)")
    return EXIT_OK


def cmd_launch(args: argparse.Namespace) -> int:
    fleet = _plan(args)
    plan.check_budget(fleet)
    from bench.fleet import sky_backend

    sky = sky_backend.load_sky()
    sky_backend.check_credentials()
    if not (PROJECT_ROOT / "Makefile").exists():
        raise plan.FleetError(f"{PROJECT_ROOT} is not the project (no Makefile): install with -e")
    print(plan.render(fleet), flush=True)
    manifest = run_fleet(
        fleet,
        sky_backend.SkyBackend(sky, PROJECT_ROOT),
        args.out,
        lambda line: print(line, flush=True),
    )
    print(collect.render_summary(collect.summarize(args.out)))
    _report(args, args.out, args.out / "report", "Fleet benchmark report")
    return EXIT_OK if fleet_ok(manifest, args.out) else EXIT_FAILED


def cmd_collect(args: argparse.Namespace) -> int:
    if args.pull:
        _pull(args.out)
    summaries = collect.summarize(args.out)
    if not summaries:
        raise ResultError(f"no fleet results under {args.out}")
    print(collect.render_summary(summaries))
    _report(args, args.out, args.report or args.out / "report", args.title)
    return EXIT_OK


def _pull(out: Path) -> None:
    manifest = collect.read_manifest(out)
    if manifest is None:
        raise ResultError(f"no {collect.MANIFEST} under {out}: nothing was launched there")
    from bench.fleet import sky_backend

    backend = sky_backend.SkyBackend(sky_backend.load_sky(), PROJECT_ROOT)
    by_cluster = {e.cluster_name: e.instance_type for e in manifest.instances.values()}
    up = backend.clusters(list(by_cluster))
    for name in up:
        instance = by_cluster[name]
        sky_backend.pull_results(name, f"{plan.REMOTE_RESULTS}/{instance}", out / instance)
        print(f"{instance}: results brought back from {name}")
    if not up:
        print("none of the fleet's clusters is up: nothing to bring back")


def cmd_down(args: argparse.Namespace) -> int:
    from bench.fleet import sky_backend

    backend = sky_backend.SkyBackend(sky_backend.load_sky(), PROJECT_ROOT)
    names = backend.clusters()
    if not names:
        print(f"no clusters named {plan.CLUSTER_PREFIX}* are up")
        return EXIT_OK
    print(f"tearing down: {', '.join(names)}", flush=True)
    backend.down(names)
    print("done")
    return EXIT_OK


ACTIONS = {"plan": cmd_plan, "launch": cmd_launch, "collect": cmd_collect, "down": cmd_down}


def cmd_fleet(args: argparse.Namespace) -> int:
    """``bench fleet ACTION``."""
    return ACTIONS[args.fleet_command](args)
