"""The lock record as a coordination.k8s.io/v1 Lease, through the official kubernetes client."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ochinai.runtime.errors import (
    ConfigError,
    PermanentError,
    TransientError,
    http_status_error,
)
from ochinai.runtime.lock import LockRecord, LockRecordChanged, Versioned

T = TypeVar("T")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# (connect, read) seconds of each API call: a renewal must not hang past its deadline.
REQUEST_TIMEOUT = (5.0, 10.0)


def in_cluster() -> bool:
    """True inside a pod: the kubelet sets KUBERNETES_SERVICE_HOST in every container."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def coordination_api(kubeconfig: str | None = None) -> tuple[Any, str | None]:
    """A CoordinationV1Api (in-cluster config, else kubeconfig) and the kubeconfig's namespace."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if in_cluster() and not kubeconfig:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.CoordinationV1Api(client.ApiClient(configuration)), None
        # The client reads $KUBECONFIG once, at import; read it at call time instead.
        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
        api_client = config.new_client_from_config(config_file=kubeconfig)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        namespace = (active or {}).get("context", {}).get("namespace")
        return client.CoordinationV1Api(api_client), namespace
    except (ConfigException, OSError) as exc:
        raise ConfigError(
            f"no Kubernetes API to hold the lock: {exc}; run in a pod, set KUBECONFIG, "
            "or use OCHINAI_LOCK=s3"
        ) from exc


def pod_namespace(configured: str | None, kubeconfig_namespace: str | None) -> str:
    """OCHINAI_NAMESPACE, else the service account's namespace, else the kubeconfig's."""
    if configured:
        return configured
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
    except OSError:
        return kubeconfig_namespace or "default"


def micro_time(when: datetime) -> str:
    """MicroTime as the apiserver parses it: always six fractional digits, in UTC.

    The client would send ``datetime.isoformat()``, which drops the fraction when
    microsecond is 0, and the apiserver rejects that with 400.
    """
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _micro_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if value:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return datetime.fromtimestamp(0, UTC)


class LeaseBackend:
    """get/create/update of one Lease; 409 becomes LockRecordChanged, other failures our
    error classes."""

    def __init__(self, api: Any, namespace: str, lease_name: str) -> None:
        self.api = api
        self.namespace = namespace
        self.lease_name = lease_name

    @property
    def name(self) -> str:
        return f"lease {self.namespace}/{self.lease_name}"

    def _call(self, verb: str, fn: Callable[[], T]) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as exc:
            raise self._classify(verb, exc) from exc
        except (HTTPError, OSError) as exc:
            raise TransientError(
                f"{self.name}: {verb} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _classify(self, verb: str, exc: Any) -> Exception:
        status = int(exc.status or 0)
        if status == 409 or (status == 404 and verb == "update"):
            # 404 on update: deleted since we read it; read again like after a 409.
            return LockRecordChanged(f"{self.name}: {verb} conflicted (HTTP {status})")
        if status == 403:
            return PermanentError(
                f"{self.name}: forbidden: the service account may not {verb} "
                f"leases.coordination.k8s.io in namespace {self.namespace}; grant get, create "
                "and update on leases in the job's Role (docs/operating.md 'The lock')"
            )
        if status == 401:
            return PermanentError(
                f"{self.name}: unauthorized (401): the API token is missing or invalid"
            )
        if status == 0:  # the client gave up before an answer came
            return TransientError(f"{self.name}: {verb} failed: {exc.reason}")
        return http_status_error(status, f"{self.name}: {verb} failed ({exc.reason})")

    def _versioned(self, lease: Any) -> Versioned:
        spec = lease.spec
        record = LockRecord(
            holder=spec.holder_identity or "",
            duration_s=int(spec.lease_duration_seconds or 0),
            acquired=_micro_time(spec.acquire_time),
            renewed=_micro_time(spec.renew_time),
            transitions=int(spec.lease_transitions or 0),
            # A Lease deleted and made again has a new uid, and its transitions restart.
            epoch=str(lease.metadata.uid or ""),
        )
        return Versioned(record, str(lease.metadata.resource_version))

    def _body(self, record: LockRecord, version: str | None) -> Any:
        from kubernetes import client

        return client.V1Lease(
            api_version="coordination.k8s.io/v1",
            kind="Lease",
            metadata=client.V1ObjectMeta(
                name=self.lease_name,
                namespace=self.namespace,
                resource_version=version,
                labels={"app.kubernetes.io/name": "ochinai"},
            ),
            spec=client.V1LeaseSpec(
                holder_identity=record.holder,
                lease_duration_seconds=record.duration_s,
                # MicroTime strings: the client passes strings through unchanged.
                acquire_time=micro_time(record.acquired),  # type: ignore[arg-type]
                renew_time=micro_time(record.renewed),  # type: ignore[arg-type]
                lease_transitions=record.transitions,
            ),
        )

    def get(self) -> Versioned | None:
        from kubernetes.client.exceptions import ApiException

        def read() -> Any:
            try:
                return self.api.read_namespaced_lease(
                    self.lease_name, self.namespace, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        lease = self._call("get", read)
        return None if lease is None else self._versioned(lease)

    def create(self, record: LockRecord) -> Versioned:
        body = self._body(record, None)
        lease = self._call(
            "create",
            lambda: self.api.create_namespaced_lease(
                self.namespace, body, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return self._versioned(lease)

    def update(self, record: LockRecord, version: str) -> Versioned:
        body = self._body(record, version)
        lease = self._call(
            "update",
            lambda: self.api.replace_namespaced_lease(
                self.lease_name, self.namespace, body, _request_timeout=REQUEST_TIMEOUT
            ),
        )
        return self._versioned(lease)
