"""`box2mask models`: list the model versions of a registry, promote or roll back one."""

import argparse
import datetime


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        required=True,
        help="model registry folder (the one `box2mask retrain --registry` writes)",
    )
    parser.add_argument(
        "--promote",
        metavar="VERSION",
        help="make VERSION the promoted model (use an older version to roll back); a running "
        "annotator watching this registry switches to it without a restart",
    )


def _format_metrics(metrics: dict) -> str:
    keys = [k for k in ("miou", "boundary_f", "mask_ap") if k in metrics]
    return "  ".join(f"{k}={metrics[k]:.3f}" for k in keys) or "-"


def run(args: argparse.Namespace) -> int:
    from train.registry import ModelRegistry

    registry = ModelRegistry(args.registry)
    if args.promote:
        try:
            info = registry.promote(args.promote)
        except KeyError as err:
            print(f"error: {err.args[0]}")
            return 2
        print(f"promoted {info.version}")
    promoted = registry.promoted()
    versions = registry.list_versions()
    if not versions:
        print(f"no model versions in {args.registry} yet")
        return 0
    print(f"{'':2}{'version':<26}{'created (UTC)':<21}{'parent':<26}{'data':<14}metrics")
    for v in versions:
        mark = "* " if promoted and v.version == promoted.version else "  "
        created = datetime.datetime.fromtimestamp(v.created, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        print(
            f"{mark}{v.version:<26}{created:<21}{(v.parent or '-'):<26}{v.data_snapshot[:12]:<14}"
            f"{_format_metrics(v.metrics)}"
        )
    print("* = promoted")
    return 0
