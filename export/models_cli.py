"""`gan-models`: list a model repository's versions and choose which one is served (rollback included).

    gan-models list REPO                  every model: layout, versions, the one served
    gan-models serve REPO/NAME VERSION    serve VERSION (a running gan-serve swaps to it within GAN_MODEL_POLL_S)
    gan-models rollback REPO/NAME         serve the highest version below the one served now

Only `serving.json` is rewritten (atomically), so this is instant, needs no PyTorch (it imports nothing from
the trainer, unlike gan-export) and works on a repository a service is reading. It runs wherever the
repository is writable: the host of a bind-mounted folder, or the trainer image for the compose volume.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.versions import VersionError, is_model_folder, resolve, versions, write_serving


def _list(repository: Path) -> int:
    if not repository.is_dir():
        return _error(f"{repository}: no such model repository")
    folders = sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in (f for f in folders if is_model_folder(f)):
        try:
            served = resolve(folder)
        except VersionError as exc:
            print(f"{folder.name}: cannot tell which version is served: {exc}")
            continue
        if served.version is None:
            print(f"{folder.name}: flat layout (one version), served")
        else:
            print(f"{folder.name}: versions {', '.join(map(str, versions(folder)))}; serving {served.version}")
    return 0


def _serve(model_dir: Path, version: int) -> int:
    try:
        before = resolve(model_dir).label
        write_serving(model_dir, version)
    except VersionError as exc:
        return _error(str(exc))
    print(f"{model_dir.name}: serving version {version} (was {before})")
    return 0


def _rollback(model_dir: Path) -> int:
    try:
        current = resolve(model_dir).version
    except VersionError as exc:
        return _error(str(exc))
    if current is None:
        return _error(f"{model_dir}: flat layout, there is no older version to go back to")
    older = [v for v in versions(model_dir) if v < current]
    if not older:
        return _error(f"{model_dir}: version {current} is the oldest one")
    return _serve(model_dir, older[-1])


def _error(message: str) -> int:
    print(f"gan-models: error: {message}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan-models", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every model of REPO: its versions and the one served")
    listing.add_argument("repository", type=Path, metavar="REPO")
    serve = commands.add_parser("serve", help="serve VERSION of the model folder REPO/NAME")
    serve.add_argument("model_dir", type=Path, metavar="REPO/NAME")
    serve.add_argument("version", type=int, metavar="VERSION")
    rollback = commands.add_parser("rollback", help="serve the highest version below the one served now")
    rollback.add_argument("model_dir", type=Path, metavar="REPO/NAME")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        return _list(args.repository)
    if args.command == "serve":
        return _serve(args.model_dir, args.version)
    return _rollback(args.model_dir)


if __name__ == "__main__":
    sys.exit(main())
