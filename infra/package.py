"""`make package`: ``chalice package`` of one stage, merged with infra/resources.json pinned to that stage.

infra/resources.json names every resource from its ``Stage`` parameter (``smart-sync-<stage>-connections``
and so on) while ``.chalice/config.json`` gives each stage's functions those names as environment
variables. So that a template can never be deployed under another stage's names, the merge template
handed to chalice has ``Stage`` pinned: its only allowed value is the stage packaged.

    python -m infra.package --stage prod build/package      # writes build/package/sam.json + deployment.zip

Needs no AWS account (chalice package builds the zip and the template locally; AWS_DEFAULT_REGION is
defaulted for it). Chalice keeps one dependency zip per state of the sources in .chalice/deployments;
all but the newest few are removed here, since every edit would otherwise leave 24 MB behind.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "infra" / "resources.json"
CONFIG = ROOT / ".chalice" / "config.json"
DEPLOYMENTS = ROOT / ".chalice" / "deployments"
KEEP_DEPLOYMENT_ZIPS = 3
DEFAULT_REGION = "us-east-1"


def stages() -> list[str]:
    """The stages .chalice/config.json defines."""
    config: dict[str, Any] = json.loads(CONFIG.read_text())
    return sorted(config.get("stages", {}))


def merge_template(stage: str) -> dict[str, Any]:
    """infra/resources.json with its ``Stage`` parameter fixed to ``stage``."""
    if stage not in stages():
        raise ValueError(f"unknown stage {stage!r}: .chalice/config.json defines {', '.join(stages())}")
    template: dict[str, Any] = json.loads(RESOURCES.read_text())
    parameter = template["Parameters"]["Stage"]
    parameter["Default"] = stage
    parameter["AllowedValues"] = [stage]
    parameter.pop("AllowedPattern", None)
    return template


def package(stage: str, out_dir: Path) -> Path:
    """Run ``chalice package`` for ``stage`` into ``out_dir``; returns the path of the SAM template."""
    chalice = Path(sys.executable).with_name("chalice")
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION}
    DEPLOYMENTS.mkdir(parents=True, exist_ok=True)
    # chalice writes its cached zip in place: a second packager (another test worker) must not reuse a half-written one.
    with (DEPLOYMENTS / ".package.lock").open("w") as lock, tempfile.TemporaryDirectory() as scratch:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merge_file = Path(scratch) / f"resources.{stage}.json"
        merge_file.write_text(json.dumps(merge_template(stage), indent=1))
        subprocess.run(
            [str(chalice), "package", "--stage", stage, "--merge-template", str(merge_file), str(out_dir)],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        prune_deployment_zips()
    return out_dir / "sam.json"


def prune_deployment_zips(keep: int = KEEP_DEPLOYMENT_ZIPS) -> None:
    zips = sorted(DEPLOYMENTS.glob("*.zip"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in zips[keep:]:
        old.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stage", default="prod")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    template = package(args.stage, args.out_dir)
    print(f"{template} (stage {args.stage})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
