"""Print the requirements of pyproject.toml extras, one per line (a requirements file for `pip install -r`).

The Dockerfile installs each image's dependencies from this output *before* it copies the source, so
that the dependency layer depends on pyproject.toml alone: a code change rebuilds only the last layers
instead of reinstalling onnxruntime or PyTorch. Reading the extras from pyproject.toml keeps the
project's one list of dependencies the only one (no requirements files to drift from it).

Usage: python extra_requirements.py [--pyproject PATH] EXTRA [EXTRA ...]
Self-references (`gan-forge[serve]` inside another extra) are expanded; duplicates are printed once.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (e.g. an older base image): pip vendors the same parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

_SELF_REFERENCE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*\[([^\]]+)\]\s*$")


def _normalise(name: str) -> str:
    """PEP 503 name normalisation, so `gan_forge` and `Gan-Forge` are the project itself."""
    return re.sub(r"[-_.]+", "-", name).lower()


def extra_requirements(pyproject: dict[str, Any], extras: list[str]) -> list[str]:
    """The requirement strings of `extras`, in order, self-references expanded, each printed once."""
    project = pyproject["project"]
    name = _normalise(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", []))
    seen_extras: set[str] = set()

    def add(extra: str) -> None:
        if extra in seen_extras:
            return
        if extra not in optional:
            raise SystemExit(f"extra_requirements: pyproject.toml has no extra {extra!r} (has: {', '.join(optional)})")
        seen_extras.add(extra)
        for requirement in optional[extra]:
            match = _SELF_REFERENCE.match(requirement)
            if match and _normalise(match.group(1)) == name:
                for inner in match.group(2).split(","):
                    add(inner.strip())
            elif requirement not in out:
                out.append(requirement)

    for extra in extras:
        add(extra)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("extras", nargs="+")
    args = parser.parse_args(argv)
    with args.pyproject.open("rb") as handle:
        data = tomllib.load(handle)
    sys.stdout.write("".join(f"{line}\n" for line in extra_requirements(data, args.extras)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
