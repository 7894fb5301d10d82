"""docker/compose.yaml, checked offline: no Docker engine is needed to run these.

The Compose Specification's JSON schema (tests/data/compose-spec/, see its SOURCE.md)
catches unknown keys and wrong shapes; the rest is ours: every registered job has a
one-shot service built from docker/Dockerfile, with settings that the jobs read and the
cluster's ConfigMap names too, and MinIO's port and credentials are what the jobs get.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.test_deploy import AWS_ENV, DOCKERFILE, JOBS, SETTING_ENV, config_data

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"
# Given by the Secret ochinai-secrets in the cluster, by docker/.env here.
FROM_SECRET = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


@functools.cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def job_services() -> dict[str, dict[str, Any]]:
    """The services that run `ochinai` itself (the image's entrypoint, not overridden)."""
    return {
        name: s
        for name, s in services().items()
        if s.get("image", "").startswith("ochinai:") and "entrypoint" not in s
    }


def test_the_vendored_schema_is_the_one_recorded() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_would_catch_a_mistake() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = {**compose(), "services": {"minio": {**services()["minio"], "helthcheck": {}}}}
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_every_registered_job_has_a_one_shot_service_and_status_comes_after_them() -> None:
    commands = {name: s["command"] for name, s in job_services().items()}
    assert {c[0] for c in commands.values()} == {*JOBS, "status"}
    for name, command in commands.items():
        assert name == command[0], f"service {name} runs {command}: name it after the job"
        assert "restart" not in services()[name], "one-shot: no restart policy"
    status = services()["status"]
    assert status["command"] == ["status", *JOBS]
    assert set(status["depends_on"]) == set(JOBS)
    assert all(
        d["condition"] == "service_completed_successfully" for d in status["depends_on"].values()
    )


def test_job_services_are_built_from_the_dockerfile_and_run_as_its_user() -> None:
    user = re.search(r"^USER (\d+:\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert user is not None
    images = {s["image"] for s in services().values() if s["image"].startswith("ochinai:")}
    assert images == {"ochinai:local"}
    for name, service in services().items():
        if not service["image"].startswith("ochinai:"):
            continue
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name
        assert (ROOT / service["build"]["dockerfile"]) == DOCKERFILE
        assert service["user"] == user.group(1), name
        assert service["read_only"] is True, name
        assert any(t.startswith("/tmp") for t in service["tmpfs"]), name


def test_job_settings_are_known_and_named_as_in_the_cluster() -> None:
    cluster = set(config_data())
    for name, service in job_services().items():
        env = service["environment"]
        unknown = sorted(n for n in env if n not in SETTING_ENV and n not in AWS_ENV)
        assert not unknown, f"{name}: not a setting: {unknown}"
        secret = sorted(n for n in env if n in SETTING_ENV and SETTING_ENV[n].secret)
        assert not secret, f"{name}: secrets belong in docker/.env: {secret}"
        elsewhere = sorted(set(env) - cluster - FROM_SECRET)
        assert not elsewhere, f"{name}: not in k8s/20-config.yaml: {elsewhere}"
        assert env["OCHINAI_LOCK"] == "s3", "no Kubernetes API here: the lock is an S3 object"


def test_minios_port_and_credentials_are_what_the_jobs_are_given() -> None:
    minio = services()["minio"]
    env = next(iter(job_services().values()))["environment"]
    endpoint = urlsplit(env["AWS_ENDPOINT_URL"])
    assert endpoint.hostname == "minio"
    assert any(port.endswith(f":{endpoint.port}") for port in minio["ports"])
    assert minio["command"][:2] == ["server", "/data"]  # MinIO's API on its default 9000
    assert endpoint.port == 9000
    assert variable(env["AWS_ACCESS_KEY_ID"]) == variable(minio["environment"]["MINIO_ROOT_USER"])
    assert variable(env["AWS_SECRET_ACCESS_KEY"]) == variable(
        minio["environment"]["MINIO_ROOT_PASSWORD"]
    )
    mc = services()["create-bucket"]["environment"]["MC_HOST_local"]
    assert mc == "http://${MINIO_ROOT_USER}:${MINIO_ROOT_PASSWORD}@minio:9000"
    bucket = urlsplit(env["OCHINAI_STORE"]).hostname
    assert services()["create-bucket"]["command"][-1] == f"local/{bucket}"
    assert services()["sample-data"]["command"] == ["--bucket", bucket]


def variable(value: str) -> str:
    """The variable a ``${NAME:?message}`` interpolation reads."""
    found = re.fullmatch(r"\$\{(\w+)(:?[-?][^}]*)?\}", value)
    assert found, f"{value!r} is not one ${{VARIABLE}}"
    return found.group(1)


def test_the_env_example_sets_every_variable_the_file_reads() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text(encoding="utf-8")))
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    example = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert set(example) == used
    assert len(example["MINIO_ROOT_PASSWORD"]) >= 8, "MinIO refuses shorter passwords"


def test_every_image_is_pinned_to_a_release() -> None:
    for name, service in services().items():
        image = service["image"]
        if image.startswith("ochinai:"):
            continue
        _, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.match(r"RELEASE\.\d{4}-\d\d-\d\dT", tag), name


def test_the_demo_services_mount_the_scripts_they_run() -> None:
    for name in ("sample-data", "demo-api"):
        service = services()[name]
        script = Path(service["entrypoint"][1])
        assert service["volumes"] == ["./:/demo:ro"]
        assert (COMPOSE.parent / script.relative_to("/demo")).is_file(), name


@pytest.mark.parametrize("name", ["minio", "demo-api"])
def test_long_running_services_have_a_healthcheck(name: str) -> None:
    assert services()[name]["healthcheck"]["test"][0] == "CMD"
