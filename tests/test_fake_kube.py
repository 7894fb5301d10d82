"""The fake Lease API answers the official kubernetes client as a real apiserver would."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import urllib3
from kubernetes.client import (
    ApiClient,
    CoordinationV1Api,
    V1DeleteOptions,
    V1Lease,
    V1LeaseSpec,
    V1ObjectMeta,
    V1Preconditions,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config

from tests.servers.kube import FakeKube

NS = "jobs"
ACQUIRED = datetime(2026, 11, 28, 16, 20, 54, 123456, tzinfo=UTC)
RENEWED = datetime(2026, 11, 28, 16, 21, 4, 654321, tzinfo=UTC)


def connect(fake: FakeKube, tmp_path: Path, token: str | None = None) -> ApiClient:
    kubeconfig = fake.write_kubeconfig(tmp_path / f"kubeconfig-{token}", namespace=NS, token=token)
    return new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture
def api(fake_kube: FakeKube, tmp_path: Path) -> Iterator[CoordinationV1Api]:
    with connect(fake_kube, tmp_path) as client:
        yield CoordinationV1Api(client)


def status_of(caught: pytest.ExceptionInfo[ApiException]) -> dict[str, object]:
    body: dict[str, object] = json.loads(caught.value.body)
    return body


def lease(name: str = "report", holder: str = "pod-a") -> V1Lease:
    spec = V1LeaseSpec(
        holder_identity=holder,
        lease_duration_seconds=15,
        acquire_time=ACQUIRED,
        renew_time=RENEWED,
        lease_transitions=0,
    )
    return V1Lease(metadata=V1ObjectMeta(name=name), spec=spec)


def test_create_then_read_round_trips_uid_version_and_micro_times(
    api: CoordinationV1Api,
    fake_kube: FakeKube,
) -> None:
    """A created Lease reads back with server-set identity and its MicroTimes intact."""
    created = api.create_namespaced_lease(NS, lease())
    read = api.read_namespaced_lease("report", NS)
    assert read.metadata.uid == created.metadata.uid and len(read.metadata.uid) == 36
    assert read.metadata.resource_version == created.metadata.resource_version
    assert read.metadata.namespace == NS and read.metadata.creation_timestamp is not None
    assert (read.spec.acquire_time, read.spec.renew_time) == (ACQUIRED, RENEWED)
    assert read.spec.holder_identity == "pod-a" and read.spec.lease_transitions == 0
    stored = fake_kube.leases.get_lease(NS, "report")
    assert stored is not None
    assert stored["spec"]["acquireTime"] == "2026-11-28T16:20:54.123456Z"


def test_micro_time_without_fraction_is_rejected_like_the_apiserver(
    api: CoordinationV1Api,
) -> None:
    """A whole-second datetime serializes without a fraction, which MicroTime parsing rejects."""
    body = lease()
    body.spec.renew_time = datetime(2026, 11, 28, 16, 21, 4, tzinfo=UTC)
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_lease(NS, body)
    assert caught.value.status == 400
    assert str(status_of(caught)["message"]).endswith('cannot parse "+00:00" as ".000000"')


def test_replace_with_current_version_bumps_it(api: CoordinationV1Api) -> None:
    """A replace carrying the current resourceVersion succeeds with a newer one."""
    created = api.create_namespaced_lease(NS, lease())
    created.spec.holder_identity = "pod-b"
    replaced = api.replace_namespaced_lease("report", NS, created)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert replaced.metadata.uid == created.metadata.uid
    assert api.read_namespaced_lease("report", NS).spec.holder_identity == "pod-b"


def test_replace_with_stale_version_conflicts(api: CoordinationV1Api) -> None:
    """A replace carrying an old resourceVersion gets 409 Conflict and changes nothing."""
    stale = api.create_namespaced_lease(NS, lease())
    fresh = api.read_namespaced_lease("report", NS)
    fresh.spec.holder_identity = "pod-b"
    api.replace_namespaced_lease("report", NS, fresh)
    stale.spec.holder_identity = "pod-c"
    with pytest.raises(ApiException) as caught:
        api.replace_namespaced_lease("report", NS, stale)
    assert (caught.value.status, caught.value.reason) == (409, "Conflict")
    assert status_of(caught)["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "report": the object has '
        "been modified; please apply your changes to the latest version and try again"
    )
    assert api.read_namespaced_lease("report", NS).spec.holder_identity == "pod-b"


def test_replace_without_version_is_invalid(api: CoordinationV1Api) -> None:
    """Leases do not allow unconditional updates: no resourceVersion is 422 Invalid."""
    api.create_namespaced_lease(NS, lease())
    with pytest.raises(ApiException) as caught:
        api.replace_namespaced_lease("report", NS, lease(holder="pod-b"))
    assert caught.value.status == 422
    assert "metadata.resourceVersion" in str(status_of(caught)["message"])


def test_create_twice_already_exists(api: CoordinationV1Api) -> None:
    """A second create of the same name gets 409 AlreadyExists."""
    api.create_namespaced_lease(NS, lease())
    with pytest.raises(ApiException) as caught:
        api.create_namespaced_lease(NS, lease(holder="pod-b"))
    assert (caught.value.status, caught.value.reason) == (409, "Conflict")
    status = status_of(caught)
    assert status["reason"] == "AlreadyExists"
    assert status["message"] == 'leases.coordination.k8s.io "report" already exists'


def test_read_missing_is_not_found(api: CoordinationV1Api) -> None:
    """Reading a Lease that does not exist gets 404 NotFound naming it."""
    with pytest.raises(ApiException) as caught:
        api.read_namespaced_lease("nope", NS)
    assert caught.value.status == 404
    assert status_of(caught)["message"] == 'leases.coordination.k8s.io "nope" not found'


def test_merge_patch_changes_spec_and_bumps_version(api: CoordinationV1Api) -> None:
    """A merge patch changes only the named fields and gets a newer resourceVersion."""
    created = api.create_namespaced_lease(NS, lease())
    patch = {"spec": {"holderIdentity": None, "leaseTransitions": 1}}
    patched = api.patch_namespaced_lease("report", NS, patch)
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    assert patched.spec.holder_identity is None and patched.spec.lease_transitions == 1
    assert patched.spec.renew_time == RENEWED


def test_patch_with_stale_version_conflicts(api: CoordinationV1Api) -> None:
    """A patch that names an old resourceVersion gets 409 Conflict."""
    created = api.create_namespaced_lease(NS, lease())
    api.patch_namespaced_lease("report", NS, {"spec": {"leaseTransitions": 1}})
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version}}
    with pytest.raises(ApiException) as caught:
        api.patch_namespaced_lease("report", NS, {**stale, "spec": {"leaseTransitions": 2}})
    assert caught.value.status == 409


def test_json_patch_test_and_replace(api: CoordinationV1Api) -> None:
    """A JSON patch applies when its test holds and fails with 422 when it does not."""
    api.create_namespaced_lease(NS, lease())
    ops = [
        {"op": "test", "path": "/spec/holderIdentity", "value": "pod-a"},
        {"op": "replace", "path": "/spec/holderIdentity", "value": "pod-b"},
    ]
    assert api.patch_namespaced_lease("report", NS, ops).spec.holder_identity == "pod-b"
    with pytest.raises(ApiException) as caught:
        api.patch_namespaced_lease("report", NS, ops)
    assert caught.value.status == 422


def test_delete_then_not_found(api: CoordinationV1Api) -> None:
    """A delete answers Success and the Lease is gone afterwards."""
    api.create_namespaced_lease(NS, lease())
    status = api.delete_namespaced_lease("report", NS)
    assert status["status"] == "Success"  # this client returns DELETE answers as dicts
    with pytest.raises(ApiException) as caught:
        api.read_namespaced_lease("report", NS)
    assert caught.value.status == 404


def test_delete_with_stale_precondition_conflicts(api: CoordinationV1Api) -> None:
    """A delete whose resourceVersion precondition is stale gets 409 and deletes nothing."""
    created = api.create_namespaced_lease(NS, lease())
    api.patch_namespaced_lease("report", NS, {"spec": {"leaseTransitions": 1}})
    options = V1DeleteOptions(
        preconditions=V1Preconditions(resource_version=created.metadata.resource_version)
    )
    with pytest.raises(ApiException) as caught:
        api.delete_namespaced_lease("report", NS, body=options)
    assert caught.value.status == 409
    assert api.read_namespaced_lease("report", NS).spec.lease_transitions == 1


def test_missing_token_is_unauthorized(tmp_path: Path) -> None:
    """With a token configured, a client without it gets 401 and one with it gets through."""
    with FakeKube(token="s3cret") as fake:
        with connect(fake, tmp_path, token="") as client, pytest.raises(ApiException) as caught:
            CoordinationV1Api(client).read_namespaced_lease("report", NS)
        assert (caught.value.status, caught.value.reason) == (401, "Unauthorized")
        with connect(fake, tmp_path) as client, pytest.raises(ApiException) as found:
            CoordinationV1Api(client).read_namespaced_lease("report", NS)
        assert found.value.status == 404


def test_denied_verb_is_forbidden_with_the_rbac_message(
    api: CoordinationV1Api,
    fake_kube: FakeKube,
) -> None:
    """A denied verb gets 403 with the apiserver's RBAC wording; other verbs still work."""
    fake_kube.deny("update", NS)
    created = api.create_namespaced_lease(NS, lease())
    with pytest.raises(ApiException) as caught:
        api.replace_namespaced_lease("report", NS, created)
    assert (caught.value.status, caught.value.reason) == (403, "Forbidden")
    assert status_of(caught)["message"] == (
        'leases.coordination.k8s.io "report" is forbidden: User '
        '"system:serviceaccount:default:ochinai" cannot update resource "leases" '
        'in API group "coordination.k8s.io" in the namespace "jobs"'
    )


def test_injected_500_surfaces_once(
    api: CoordinationV1Api,
    fake_kube: FakeKube,
) -> None:
    """An injected 500 reaches the caller as ApiException 500 and the next request succeeds."""
    api.create_namespaced_lease(NS, lease())
    fake_kube.fail_next(1, 500, verb="get")
    with pytest.raises(ApiException) as caught:
        api.read_namespaced_lease("report", NS)
    assert (caught.value.status, caught.value.reason) == (500, "Internal Server Error")
    assert api.read_namespaced_lease("report", NS).spec.holder_identity == "pod-a"
    assert [r.status for r in fake_kube.requests if r.verb == "get"] == [500, 200]


def test_fail_always_until_turned_off(
    api: CoordinationV1Api,
    fake_kube: FakeKube,
) -> None:
    """The failure switch answers every request with the status until it is turned off."""
    fake_kube.fail_always()  # 503 with no Retry-After, so the client retries nothing
    for _ in range(3):
        with pytest.raises(ApiException) as caught:
            api.list_namespaced_lease(NS)
        assert caught.value.status == 503
    fake_kube.stop_failing()
    assert api.list_namespaced_lease(NS).items == []
    assert [r.status for r in fake_kube.requests] == [503, 503, 503, 200]


def test_held_request_waits_for_release(
    api: CoordinationV1Api,
    fake_kube: FakeKube,
) -> None:
    """A held request is in flight until the test releases its gate."""
    gate = fake_kube.hold("create")
    worker = threading.Thread(target=api.create_namespaced_lease, args=(NS, lease()))
    worker.start()
    assert gate.arrived.wait(5)
    assert fake_kube.leases.get_lease(NS, "report") is None
    gate.release.set()
    worker.join(5)
    assert fake_kube.leases.get_lease(NS, "report") is not None


def test_delay_past_the_client_timeout_is_a_urllib3_error(
    api: CoordinationV1Api,
    fake_kube: FakeKube,
) -> None:
    """An answer slower than the request timeout surfaces from urllib3, not as ApiException."""
    fake_kube.delay(0.3, verb="list")
    with pytest.raises(urllib3.exceptions.HTTPError):
        api.list_namespaced_lease(NS, _request_timeout=0.05)


def test_429_on_a_read_is_retried_inside_the_client(
    api: CoordinationV1Api,
    fake_kube: FakeKube,
) -> None:
    """urllib3 honours Retry-After on GET and PUT by itself, so one 429 never reaches the caller."""
    api.create_namespaced_lease(NS, lease())
    fake_kube.fail_next(1, 429, verb="get", retry_after=0)
    assert api.read_namespaced_lease("report", NS).spec.holder_identity == "pod-a"
    assert [r.status for r in fake_kube.requests if r.verb == "get"] == [429, 200]


def test_replace_of_a_missing_lease_creates_it_unless_the_uid_is_stale(
    api: CoordinationV1Api,
) -> None:
    """Leases allow create-on-update, but a body carrying a deleted Lease's uid gets 409."""
    created = api.replace_namespaced_lease("report", NS, lease())
    assert created.metadata.uid and created.metadata.resource_version
    api.delete_namespaced_lease("report", NS)
    with pytest.raises(ApiException) as caught:
        api.replace_namespaced_lease("report", NS, created)
    assert caught.value.status == 409
    assert "Precondition failed: UID in precondition" in str(status_of(caught)["message"])


def test_racing_replaces_exactly_one_wins(
    api: CoordinationV1Api,
    fake_kube: FakeKube,
) -> None:
    """Two replaces from the same resourceVersion: one wins, the other gets 409, every round."""
    api.create_namespaced_lease(NS, lease())
    for round_ in range(50):
        base = api.read_namespaced_lease("report", NS).metadata
        barrier, outcomes = threading.Barrier(2), dict[str, int]()
        holders = [f"pod-{i}-{round_}" for i in (1, 2)]
        args = [
            (api, V1Lease(metadata=base, spec=V1LeaseSpec(holder_identity=h)), barrier, outcomes)
            for h in holders
        ]
        threads = [threading.Thread(target=replace_at_once, args=a) for a in args]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(outcomes.values()) == [200, 409], outcomes
        winner = next(h for h, code in outcomes.items() if code == 200)
        assert api.read_namespaced_lease("report", NS).spec.holder_identity == winner


def replace_at_once(
    api: CoordinationV1Api, body: V1Lease, barrier: threading.Barrier, outcomes: dict[str, int]
) -> None:
    barrier.wait()
    try:
        api.replace_namespaced_lease("report", NS, body)
        outcomes[body.spec.holder_identity] = 200
    except ApiException as exc:
        outcomes[body.spec.holder_identity] = exc.status
