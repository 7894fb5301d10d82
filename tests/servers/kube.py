"""A fake Kubernetes API server for coordination.k8s.io/v1 Leases, served over real HTTP.

It answers SelfSubjectAccessReviews too (what ``ochinai doctor`` asks): allowed for
leases unless ``deny`` refused the verb, as the Lease endpoints themselves answer.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import socket
import struct
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest

Obj = dict[str, Any]
Answer = tuple[int, Obj | str, dict[str, str]]
GROUP = "coordination.k8s.io"
API_VERSION = f"{GROUP}/v1"
RESOURCE = f"leases.{GROUP}"
MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
# metav1.MicroTime is parsed with this Go layout: exactly six fraction digits, then "Z" or "+hh:mm".
MICRO_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_PATH = re.compile(r"/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?/?")
REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
_SYSTEM_META = {"name", "namespace", "uid", "resourceVersion", "creationTimestamp", "selfLink"}
_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
_FAULTS = {
    500: ("InternalError", "Internal error occurred: injected fault"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    429: ("TooManyRequests", "Too many requests, please try again later."),
}
_DISCOVERY: dict[str, Obj] = {  # the client needs no more discovery than this
    "/version": {
        **{"major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitTreeState": "clean"},
        **{"gitCommit": "0" * 40, "buildDate": "2025-08-27T00:00:00Z", "goVersion": "go1.24.6"},
        **{"compiler": "gc", "platform": "linux/amd64"},
    },
}


class ApiError(Exception):
    """A failure answered as a metav1.Status, shaped like the real apiserver's."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.headers = code, dict[str, str]()
        self.body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        self.body.update(message=message, reason=reason)
        self.body.update({"details": details} if details is not None else {}, code=code)


def _details(name: str | None, **extra: Any) -> Obj:
    return {**({"name": name} if name else {}), "group": GROUP, "kind": "leases", **extra}


def not_found(name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{RESOURCE} "{name}" not found', _details(name))


def conflict(name: str, why: str = MODIFIED) -> ApiError:
    msg = f'Operation cannot be fulfilled on {RESOURCE} "{name}": {why}'
    return ApiError(409, "Conflict", msg, _details(name))


def precondition_failed(ns: str, name: str, what: str, wanted: str, actual: str) -> ApiError:
    """storage.Preconditions.Check fails as an invalid-object StorageError, answered as 409."""
    why = (
        f"StorageError: invalid object, Code: 4, Key: /registry/leases/{ns}/{name}, "
        f"ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: {what} in precondition: "
        f"{wanted}, {what} in object meta: {actual}"
    )
    return conflict(name, why)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def micro_time(value: Any) -> str:
    """Parse a MicroTime as the apiserver does and return it as the apiserver writes it."""
    err = 'Lease in version "v1" cannot be handled as a Lease: parsing time'
    err = f'{err} "{value}" as "{MICRO_LAYOUT}": cannot parse'
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(.*)", str(value))
    if not isinstance(value, str) or m is None:
        raise bad_request(f'{err} "{value}" as "2006"')
    if not re.match(r"\.\d{6}", rest := m.group(2)):  # isoformat() drops a zero fraction
        raise bad_request(f'{err} "{rest}" as ".000000"')
    if not re.fullmatch(r"Z|[+-]\d\d:\d\d", rest[7:]):
        raise bad_request(f'{err} "{rest[7:]}" as "Z07:00"')
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad_request(f"{err}: {exc}") from None
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _decode_spec(spec: Any) -> Any:
    """Decode a LeaseSpec as the apiserver does: nulls dropped, MicroTimes rewritten in UTC."""
    if not isinstance(spec, dict):
        return spec
    spec = {k: v for k, v in spec.items() if v is not None}
    for key in ("acquireTime", "renewTime"):
        if key in spec:
            spec[key] = micro_time(spec[key])
    return spec


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch; a strategic merge patch of a Lease reduces to it."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        out[key] = _merge(out.get(key), value)
        if value is None:
            del out[key]
    return out


def _json_patch(doc: Obj, ops: Any) -> Obj:
    """RFC 6902 JSON patch with the add, replace, remove and test operations."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op.get("path", "").split("/")]
        kind, parent, key = op.get("op"), doc, parts[-1]
        try:
            for part in parts[1:-1]:
                parent = parent[int(part) if isinstance(parent, list) else part]
            if isinstance(parent, list):
                key = len(parent) if key == "-" else int(key)
            if kind not in ("add", "remove", "replace", "test"):
                raise bad_request(f"Unexpected kind: {kind}")
            if kind == "test" and parent[key] != op.get("value"):
                raise ApiError(422, "Invalid", f"testing value {op['path']} failed: test failed")
            if kind in ("remove", "replace"):  # replace is remove then add (RFC 6902 4.3)
                del parent[key]
            if kind in ("add", "replace") and isinstance(parent, list):
                if not 0 <= key <= len(parent):
                    raise IndexError(key)
                parent.insert(key, op["value"])
            elif kind in ("add", "replace"):
                parent[key] = op["value"]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "Invalid", f"cannot apply {kind} at {op.get('path')}") from None
    return doc


class LeaseStore:
    """Leases by (namespace, name), with a global resourceVersion counter as etcd keeps one."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.revision = 0
        self._objects: dict[tuple[str, str], Obj] = {}

    def get_lease(self, namespace: str, name: str) -> Obj | None:
        with self.lock:
            return copy.deepcopy(self._objects.get((namespace, name)))

    def list_leases(self, namespace: str) -> list[Obj]:
        with self.lock:
            found = [v for k, v in sorted(self._objects.items()) if k[0] == namespace]
            hide = ("kind", "apiVersion")  # list items carry no type meta
            return [copy.deepcopy({k: v for k, v in o.items() if k not in hide}) for o in found]

    def put_lease(self, namespace: str, obj: Obj) -> Obj:
        """Store obj as the apiserver would (system metadata filled or kept) and return it."""
        with self.lock:
            name = obj["metadata"]["name"]
            old = self._objects.get((namespace, name))
            old_meta = (old or {}).get("metadata", {})
            new: Obj = {"kind": "Lease", "apiVersion": API_VERSION, "metadata": {}}
            new["metadata"] = {
                "name": name,
                "namespace": namespace,
                "uid": old_meta.get("uid") or str(uuid.uuid4()),
                "resourceVersion": old_meta.get("resourceVersion"),
                "creationTimestamp": old_meta.get("creationTimestamp")
                or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                **{k: v for k, v in obj["metadata"].items() if k not in _SYSTEM_META},
            }
            if obj.get("spec") is not None:
                new["spec"] = _decode_spec(obj["spec"])
            # etcd3's GuaranteedUpdate writes nothing, and keeps the revision, for a no-op update.
            if new != old:
                self.revision += 1
                new["metadata"]["resourceVersion"] = str(self.revision)
                self._objects[(namespace, name)] = new
            return copy.deepcopy(new)

    def delete_lease(self, namespace: str, name: str) -> Obj | None:
        with self.lock:
            gone = self._objects.pop((namespace, name), None)
            self.revision += gone is not None  # a delete is a revision in etcd too
            return gone


class Request(NamedTuple):
    """One request as the server answered it."""

    method: str
    path: str
    verb: str
    status: int


@dataclass
class Gate:
    """Holds each matching request, once `arrived` is set, until `release` is set."""

    verb: str | None
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Fault:
    status: int
    verb: str | None
    remaining: int | None  # None: until stop_failing()
    retry_after: int | None


class FakeKube:
    """A Lease-only Kubernetes API on 127.0.0.1 with bearer auth, RBAC denials and faults."""

    def __init__(
        self,
        *,
        token: str | None = None,
        user: str = "system:serviceaccount:default:ochinai",
        # The Lease REST strategy (pkg/registry/coordination/lease/strategy.go) answers
        # AllowUnconditionalUpdate() false, so a PUT without metadata.resourceVersion gets
        # 422 Invalid "must be specified for an update"; and AllowCreateOnUpdate() true, so a
        # PUT to a missing Lease creates it (201) unless a metadata.uid in the body fails the
        # storage precondition (409).
        allow_unconditional_update: bool = False,
        allow_create_on_update: bool = True,
    ) -> None:
        self.token, self.user = token, user
        self.allow_unconditional_update = allow_unconditional_update
        self.allow_create_on_update = allow_create_on_update
        self.leases = LeaseStore()
        self.denied: set[tuple[str, str | None]] = set()
        self.reviews: list[Obj] = []  # the resourceAttributes of each access review asked
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._gates: list[Gate] = []
        self._delays: dict[str | None, float] = {}
        self._drops: dict[str, int] = {}
        self._log: list[Request] = []
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None

    def start(self) -> FakeKube:
        self._stopping.clear()
        self._server = _Server(self)
        serve = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        with self._lock:
            for gate in self._gates:
                gate.release.set()
        self._server.shutdown()
        with self._lock:
            for conn in self._conns:  # wake handler threads idling on keep-alive connections
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the handler threads
        self._server = None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeKube is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(
        self, path: Path, namespace: str = "default", token: str | None = None
    ) -> Path:
        """Write a kubeconfig for this server; token None means the server's token, "" none."""
        token = self.token if token is None else token
        context = {"cluster": "fake", "user": "fake", "namespace": namespace}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token} if token else {}}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
        }
        Path(path).write_text(json.dumps(config, indent=2))  # JSON is YAML to the loader
        return Path(path)

    def deny(self, verb: str, namespace: str | None = None) -> None:
        """Answer `verb` in `namespace` (None: in every namespace) with 403 Forbidden, and
        access reviews of it with not allowed."""
        self.denied.add((verb, namespace))

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        *,
        verb: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next `count` requests (for `verb` only, if given) with `status`."""
        with self._lock:
            self._faults.append(_Fault(status, verb, count, retry_after))

    def fail_always(
        self, status: int = 503, *, verb: str | None = None, retry_after: int | None = None
    ) -> None:
        """Answer every request (for `verb` only, if given) with `status` until stop_failing()."""
        with self._lock:
            self._faults.append(_Fault(status, verb, None, retry_after))

    def stop_failing(self) -> None:
        with self._lock:
            self._faults.clear()

    def hold(self, verb: str | None = None) -> Gate:
        """Hold requests (for `verb` only, if given) until the returned gate is released."""
        gate = Gate(verb)
        with self._lock:
            self._gates.append(gate)
        return gate

    def drop_answers(self, count: int = 1, *, verb: str = "update") -> None:
        """Apply the next `count` requests of `verb`, then reset the connection unanswered.

        The client sees a connection error for a write that happened (urllib3 then
        retries a PUT, which meets the resourceVersion it just changed: 409).
        """
        with self._lock:
            self._drops[verb] = self._drops.get(verb, 0) + count

    def take_drop(self, method: str) -> bool:
        """Whether the answer to this request is to be dropped (counts it down)."""
        verb = _VERBS.get(method, method.lower())
        with self._lock:
            if self._drops.get(verb, 0) > 0:
                self._drops[verb] -= 1
                return True
        return False

    def delay(self, seconds: float, verb: str | None = None) -> None:
        """Delay every request (for `verb` only, if given) by `seconds`; 0 turns it off."""
        with self._lock:
            self._delays[verb] = seconds

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._log)

    def handle(self, method: str, target: str, headers: Mapping[str, str], raw: bytes) -> Answer:
        """Answer one request (headers keyed in lower case): status, JSON or text, extra headers."""
        path = urlsplit(target).path
        match = _PATH.fullmatch(path)
        ns, name = match.groups() if match else (None, None)
        verb = _VERBS.get(method, method.lower())
        if match and not name:
            verb = {"get": "list", "delete": "deletecollection"}.get(verb, verb)
        try:
            self._pause(verb)
            self._inject(verb)
            if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if ns is None and path.rstrip("/") == REVIEWS and method == "POST":
                result = (201, self._review(raw), {})
            elif ns is None:
                result = self._discovery(path)
            else:
                self._authorize(verb, ns, name)
                code, obj = self._dispatch(verb, ns, name, headers.get("content-type", ""), raw)
                result = (code, obj, {})
        except ApiError as exc:
            result = (exc.code, exc.body, exc.headers)
        except Exception as exc:  # a fault in the fake itself: say so rather than drop the line
            error = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}")
            result = (error.code, error.body, {})
        with self._lock:
            self._log.append(Request(method, path, verb, result[0]))
        return result

    def _pause(self, verb: str) -> None:
        with self._lock:
            gates = [g for g in self._gates if g.verb in (None, verb) and not g.release.is_set()]
            seconds = self._delays.get(verb, self._delays.get(None, 0.0))
        for gate in gates:
            gate.arrived.set()
            gate.release.wait(timeout=30)
        if seconds:
            self._stopping.wait(seconds)

    def _inject(self, verb: str) -> None:
        with self._lock:
            fault = next((f for f in self._faults if f.verb in (None, verb)), None)
            if fault is None:
                return
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
        code, after = fault.status, fault.retry_after
        after = 1 if after is None and code == 429 else after  # the apiserver always sends one
        reason, message = _FAULTS.get(code, ("", f"injected fault {code}"))
        details: Obj | None = {"causes": [{"message": "injected fault"}]} if code == 500 else None
        details = {"retryAfterSeconds": after} if code == 429 else details
        error = ApiError(code, reason, message, details)
        error.headers = {"Retry-After": str(after)} if after is not None else {}
        raise error

    def _authorize(self, verb: str, ns: str, name: str | None) -> None:
        if (verb, ns) in self.denied or (verb, None) in self.denied:
            who = f'{RESOURCE} "{name}"' if name else RESOURCE
            msg = (
                f'{who} is forbidden: User "{self.user}" cannot {verb} resource "leases" '
                f'in API group "{GROUP}" in the namespace "{ns}"'
            )
            raise ApiError(403, "Forbidden", msg, _details(name))

    def _review(self, raw: bytes) -> Obj:
        """A SelfSubjectAccessReview answered as RBAC would: leases in coordination.k8s.io
        are allowed but for the verbs ``deny`` refused; anything else is not."""
        try:
            review = json.loads(raw)
            attributes = review["spec"]["resourceAttributes"]
        except (ValueError, KeyError, TypeError):
            raise bad_request(
                "SelfSubjectAccessReview: spec.resourceAttributes: Required value"
            ) from None
        with self._lock:
            self.reviews.append(dict(attributes))
        verb, ns = attributes.get("verb", ""), attributes.get("namespace")
        lease = (attributes.get("group"), attributes.get("resource")) == (GROUP, "leases")
        allowed = lease and (verb, ns) not in self.denied and (verb, None) not in self.denied
        status: Obj = {"allowed": allowed}
        if allowed:
            status["reason"] = 'RBAC: allowed by Role "ochinai-lease"'
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": review["spec"],
            "status": status,
        }

    def _discovery(self, path: str) -> Answer:
        if path.rstrip("/") in _DISCOVERY:
            return 200, _DISCOVERY[path.rstrip("/")], {}
        if path.startswith(("/api/", "/apis/")):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return 404, "404 page not found\n", {}

    def _dispatch(
        self, verb: str, ns: str, name: str | None, ctype: str, raw: bytes
    ) -> tuple[int, Obj]:
        try:
            body: Any = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None
        if verb in ("create", "update"):
            body = _decode_spec_of(body, ns)  # decoding fails before any other check
        if verb not in (
            ("list", "create") if name is None else ("get", "update", "patch", "delete")
        ):
            msg = "the server does not allow this method on the requested resource"
            raise ApiError(405, "MethodNotAllowed", msg, {})
        with self.leases.lock:
            if verb == "list":
                meta = {"resourceVersion": str(self.leases.revision)}
                items = self.leases.list_leases(ns)
                return 200, {
                    "kind": "LeaseList",
                    "apiVersion": API_VERSION,
                    "metadata": meta,
                    "items": items,
                }
            if name is None:
                return 201, self._create(ns, body)
            current = self.leases.get_lease(ns, name)
            if verb == "update":
                return self._update(ns, name, body, current)
            if current is None:
                raise not_found(name)
            if verb == "patch":
                return 200, self._patch(ns, name, ctype, body, current)
            if verb == "delete":
                return 200, self._delete(ns, name, body or {}, current)
            return 200, current

    def _create(self, ns: str, body: Obj) -> Obj:
        name = body["metadata"].get("name") or ""
        if not name:
            raise bad_request("metadata.name: Required value: name or generateName is required")
        if body["metadata"].get("resourceVersion"):  # etcd3 store.Create, answered as a bare 500
            raise ApiError(
                500, "Unknown", "resourceVersion should not be set on objects to be created"
            )
        if self.leases.get_lease(ns, name) is not None:
            raise ApiError(
                409, "AlreadyExists", f'{RESOURCE} "{name}" already exists', _details(name)
            )
        return self.leases.put_lease(ns, body)

    def _update(self, ns: str, name: str, body: Obj, current: Obj | None) -> tuple[int, Obj]:
        meta, actual = body["metadata"], (current or {}).get("metadata", {})
        if meta.get("name") != name:
            got = meta.get("name") or ""
            raise bad_request(
                f"the name of the object ({got}) does not match the name on the URL ({name})"
            )
        if current is None and not self.allow_create_on_update:
            raise not_found(name)
        if meta.get("uid") and meta["uid"] != actual.get("uid", ""):
            raise precondition_failed(ns, name, "UID", meta["uid"], actual.get("uid", ""))
        if current is None:
            return 201, self.leases.put_lease(ns, body)
        if meta.get("resourceVersion") in (None, "", "0"):
            if not self.allow_unconditional_update:
                text = "Invalid value: 0x0: must be specified for an update"
                path = "metadata.resourceVersion"
                causes = [{"reason": "FieldValueInvalid", "message": text, "field": path}]
                msg = f'{RESOURCE} "{name}" is invalid: {path}: {text}'
                raise ApiError(422, "Invalid", msg, {**_details(name), "causes": causes})
        elif meta["resourceVersion"] != actual["resourceVersion"]:
            raise conflict(name)
        return 200, self.leases.put_lease(ns, body)

    def _patch(self, ns: str, name: str, ctype: str, patch: Any, current: Obj) -> Obj:
        ctype = ctype.split(";")[0].strip()
        if ctype in _MERGE_TYPES and isinstance(patch, dict):
            patched = _merge(current, patch)
        elif ctype == "application/json-patch+json":
            patched = _json_patch(copy.deepcopy(current), patch)
        elif ctype in _MERGE_TYPES:
            raise bad_request(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        else:
            accepted = ", ".join(("application/json-patch+json", *_MERGE_TYPES))
            msg = "the body of the request was in an unknown format - "
            msg += f"accepted media types include: {accepted}"
            raise ApiError(415, "UnsupportedMediaType", msg, {})
        patched = _decode_spec_of(patched, ns)
        wanted = patched["metadata"].get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise conflict(name)
        patched["metadata"]["name"] = name
        return self.leases.put_lease(ns, patched)

    def _delete(self, ns: str, name: str, options: Obj, current: Obj) -> Obj:
        pre, meta = options.get("preconditions") or {}, current["metadata"]
        for what, key in (("UID", "uid"), ("ResourceVersion", "resourceVersion")):
            if pre.get(key) and pre[key] != meta[key]:
                raise precondition_failed(ns, name, what, pre[key], meta[key])
        self.leases.delete_lease(ns, name)
        details = _details(name, uid=meta["uid"])
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }


def _decode_spec_of(body: Any, ns: str) -> Obj:
    """Decode a Lease body: an object, in the request's namespace, with a valid spec."""
    if not isinstance(body, dict):
        raise bad_request('Lease in version "v1" cannot be handled as a Lease: not an object')
    body["metadata"] = body.get("metadata") or {}
    if body["metadata"].get("namespace") not in (None, "", ns):
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    return {**body, "spec": _decode_spec(body.get("spec"))}


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins every handler thread

    def __init__(self, fake: FakeKube) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        # One response goes out as two writes; without this, Nagle meets delayed ACKs (40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.fake._lock:
            self.server.fake._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._conns.discard(self.connection)
        super().finish()

    def _serve(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {key.lower(): value for key, value in self.headers.items()}
        code, body, extra = self.server.fake.handle(self.command, self.path, headers, raw)
        if self.server.fake.take_drop(self.command):
            # SO_LINGER 0: close with a reset, as a lost answer looks to the client.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            self.wfile = io.BytesIO()  # the handler's own flush must not meet the closed socket
            return
        text = isinstance(body, str)
        data = (
            body.encode()
            if isinstance(body, str)
            else json.dumps(body, separators=(",", ":")).encode()
        )
        with contextlib.suppress(OSError):  # the client went away, or stop() cut the line
            self.send_response(code)
            self.send_header(
                "Content-Type", "text/plain; charset=utf-8" if text else "application/json"
            )
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: `FakeKube.requests` is the record."""


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    """A started FakeKube, stopped after the test."""
    with FakeKube() as fake:
        yield fake
