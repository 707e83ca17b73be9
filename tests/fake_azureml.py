"""An in-process fake of the AzureML endpoints azure-ai-ml calls, for driving the real SDK offline.

Adapted from shared/spikes/azureml/fake_aml.py: the SDK's ARM, run-history and blob calls reach ``FakeAzureML``
through an azure-core RequestsTransport over a fake requests adapter (``make_transport``), and the blob clients the
SDK builds without that transport through a patched ``requests.Session.get_adapter`` (``patch_all_requests``).

What the fake does:
- one workspace (sub, rg, ws); a request naming another subscription, group or workspace gets ARM's own 404 codes
  (SubscriptionNotFound, ResourceGroupNotFound, ResourceNotFound);
- computes (``fake.computes``), datastores, code and environment assets, blob storage (``fake.blobs``);
- jobs run a script: ``fake.script`` is a list of (status, log lines); each ``GET job`` moves a job one step on and
  appends that step's lines to its std_log. At Completed or Failed, ``fake.outputs`` (path -> bytes) appear as the
  job's output_dir on the default datastore; a Failed job carries ``fake.error`` in its run details;
- ``fake.inject(method, pattern, status)`` answers the next matching requests with an error (a 503 to retry);
- blob GETs honour ``Range: bytes=N-`` (206, or 416 past the end), as Azure Storage does;
- every request is kept in ``fake.requests`` (method, url, headers, body) so a test can grep all of them.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

ARM = "management.azure.com"
API = "fake-api.azureml.test"  # run history / dataplane host, from the discovery URL
STUDIO = "https://ml.azure.com"
ACCOUNT = "fakestorage"
BLOB_HOST = f"{ACCOUNT}.blob.core.windows.net"
BLOBSTORE = "azureml-blobstore"  # workspaceblobstore's container
ARTIFACTS = "azureml"  # workspaceartifactstore's container
WS_PATH = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
                     r"Microsoft\.MachineLearningServices/workspaces/([^/]+)(.*)$", re.IGNORECASE)
DEFAULT_SCRIPT = [("Queued", []), ("Preparing", []), ("Running", ["starting"]), ("Completed", [])]
DATE = "Mon, 01 Jan 2024 00:00:00 GMT"


class FakeCredential:
    """A TokenCredential: an unsigned JWT whose aud is the requested resource."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any):
        from azure.core.credentials import AccessToken

        self.scopes.append(scopes)
        aud = scopes[0].rsplit("/.default", 1)[0] if scopes else ""
        payload = base64.urlsafe_b64encode(json.dumps({
            "aud": aud, "tid": "00000000-0000-0000-0000-000000000000", "oid": "11111111-1111-1111-1111-111111111111",
            "exp": int(time.time()) + 3600}).encode()).rstrip(b"=").decode()
        return AccessToken(f"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.", int(time.time()) + 3600)

    def close(self) -> None:
        pass


@dataclass
class FakeJob:
    name: str
    body: dict
    step: int = -1
    cancelled: int = 0  # GETs since cancel was asked
    log: list[str] = field(default_factory=list)


class FakeAzureML:
    def __init__(self, sub: str = "00000000-0000-0000-0000-000000000000", rg: str = "rg", ws: str = "ws"):
        self.sub, self.rg, self.ws = sub, rg, ws
        self.script: list[tuple[str, list[str]]] = list(DEFAULT_SCRIPT)
        self.outputs: dict[str, bytes] = {}
        self.error = {"code": "UserError", "message": "Execution failed: tunecell exited with code 1"}
        self.computes = {"gpu-cluster": "AmlCompute", "cpu-cluster": "AmlCompute"}
        self.key_vault = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/kv-fake"
        self.jobs: dict[str, FakeJob] = {}
        self.blobs: dict[str, bytes] = {}
        self.codes: dict[str, dict] = {}
        self.envs: dict[str, dict] = {}
        self.requests: list[dict[str, Any]] = []
        self.log: list[tuple[str, str, str, str]] = []
        self._faults: list[list] = []  # [method, regex, status, times left]
        self.faults_served = 0
        self.lock = threading.RLock()

    # ---------------------------------------------------------------------------------------------- helpers
    @property
    def ws_id(self) -> str:
        return (f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/"
                f"Microsoft.MachineLearningServices/workspaces/{self.ws}")

    def inject(self, method: str, pattern: str, status: int = 503, times: int = 1) -> None:
        self._faults.append([method, re.compile(pattern), status, times])

    def job_put(self, name: Optional[str] = None) -> dict:
        """The body of the (last) job PUT."""
        puts = [r for r in self.requests if r["method"] == "PUT" and "/jobs/" in r["path"] and
                (name is None or r["path"].endswith(f"/jobs/{name}"))]
        return json.loads(puts[-1]["body"])

    def calls(self, start: int = 0) -> list[str]:
        out = []
        for method, host, path, _ in self.log[start:]:
            p = path.split(f"/workspaces/{self.ws}", 1)[-1] if f"/workspaces/{self.ws}" in path else path
            out.append(f"{method} {'<blob>' if host == BLOB_HOST else p}")
        return out

    def everything(self) -> bytes:
        """Every request's URL, headers and body, for grepping."""
        return b"\n".join(r["url"].encode() + b"\n" + json.dumps(r["headers"]).encode() + b"\n" + r["body"]
                          for r in self.requests)

    @staticmethod
    def _err(status: int, code: str, message: str) -> tuple[int, Any, dict]:
        return status, {"error": {"code": code, "message": message}}, {}

    # ---------------------------------------------------------------------------------------------- routing
    def handle(self, method: str, url: str, headers: dict, body: bytes) -> tuple[int, Any, dict]:
        u = urlsplit(url)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        with self.lock:
            self.log.append((method, u.netloc, u.path, u.query))
            self.requests.append({"method": method, "url": url, "path": u.path, "headers": dict(headers),
                                  "body": body or b""})
            for fault in self._faults:
                if fault[3] > 0 and fault[0] == method and fault[1].search(u.path):
                    fault[3] -= 1
                    self.faults_served += 1
                    return fault[2], {"error": {"code": "ServiceUnavailable", "message": "try again"}}, \
                        {"Retry-After": "0"}
            js = None
            if body and headers.get("Content-Type", "").startswith("application/json"):
                try:
                    js = json.loads(body)
                except ValueError:
                    js = None
            return self._route(method, u.netloc, u.path, q, body, js, headers)

    def _route(self, method, host, path, q, body, js, headers):
        if host == BLOB_HOST:
            return self._blob(method, path.lstrip("/"), q, body, headers)
        if host == ARM and path == "/discovery":
            api = f"https://{API}"
            return 200, {"api": api, "catalog": api, "experimentation": api, "history": api}, {}
        if host == ARM and path.startswith("/operationResults/"):
            return 200, {"status": "Succeeded"}, {}
        if host == API:
            return self._history(method, path, js)
        m = WS_PATH.match(path)
        if host == ARM and m:
            sub, rg, ws, rest = m.groups()
            if sub != self.sub:
                return self._err(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
            if rg.lower() != self.rg.lower():
                return self._err(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
            if ws != self.ws:
                return self._err(404, "ResourceNotFound", f"The Resource 'Microsoft.MachineLearningServices/"
                                 f"workspaces/{ws}' under resource group '{rg}' was not found.")
            return self._workspace(method, rest, q, js)
        return self._err(404, "NoRoute", f"the fake has no route for {method} {host}{path}")

    def _workspace(self, method, rest, q, js):
        ws = self.ws_id
        if rest in ("", "/") and method == "GET":
            return 200, {"id": ws, "name": self.ws, "location": "eastus",
                         "type": "Microsoft.MachineLearningServices/workspaces",
                         "properties": {"discoveryUrl": f"https://{ARM}/discovery",
                                        "workspaceId": "22222222-2222-2222-2222-222222222222",
                                        "keyVault": self.key_vault,
                                        "storageAccount": f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/"
                                                          f"providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"}}, {}
        m = re.fullmatch(r"/computes(?:/([^/]+))?", rest)
        if m:
            if m.group(1) is None:
                return 200, {"value": [self._compute(n) for n in self.computes]}, {}
            if m.group(1) not in self.computes:
                return self._err(404, "ResourceNotFound", f"compute {m.group(1)} not found")
            return 200, self._compute(m.group(1)), {}
        m = re.fullmatch(r"/datastores(?:/([^/]+))?(/listSecrets)?", rest)
        if m:
            name, secrets = m.groups()
            if secrets:
                return 200, {"secretsType": "AccountKey", "key": "ZmFrZWtleQ=="}, {}
            if name is None:
                return 200, {"value": [self._datastore("workspaceblobstore")]}, {}
            return 200, self._datastore(name), {}
        m = re.fullmatch(r"/codes/([^/]+)/versions(?:/([^/]+))?(/startPendingUpload)?", rest)
        if m:
            name, version, pending = m.groups()
            if method == "GET" and version is None:
                found = [c for c in self.codes.values()
                         if c["properties"].get("properties", {}).get("hash_sha256") == q.get("hash")]
                return 200, {"value": found}, {}
            if pending:
                container = str(uuid.uuid4())
                url = f"https://{BLOB_HOST}/{container}"
                return 200, {"blobReferenceForConsumption": {
                    "blobUri": url, "credential": {"credentialType": "SAS", "sasUri": url + "?sv=2021-08-06&sig=fake"}},
                    "pendingUploadId": uuid.uuid4().hex, "pendingUploadType": "TemporaryBlobReference"}, {}
            key = f"{name}:{version}"
            if method == "PUT":
                self.codes[key] = {"id": f"{ws}/codes/{name}/versions/{version}", "name": version,
                                   "type": "Microsoft.MachineLearningServices/workspaces/codes/versions",
                                   "properties": (js or {}).get("properties", {})}
                return 201, self.codes[key], {}
            return (200, self.codes[key], {}) if key in self.codes else self._err(404, "NotFound", "no such code")
        m = re.fullmatch(r"/environments/([^/]+)/versions/([^/]+)", rest)
        if m:
            key = ":".join(m.groups())
            if method == "PUT":
                self.envs[key] = {"id": f"{ws}/environments/{m.group(1)}/versions/{m.group(2)}", "name": m.group(2),
                                  "type": "Microsoft.MachineLearningServices/workspaces/environments/versions",
                                  "properties": (js or {}).get("properties", {})}
                return 201, self.envs[key], {}
            return (200, self.envs[key], {}) if key in self.envs else self._err(404, "NotFound", "no such env")
        m = re.fullmatch(r"/jobs/([^/]+)(/cancel)?", rest)
        if m:
            return self._job(method, m.group(1), bool(m.group(2)), js)
        return self._err(404, "NoRoute", f"the fake has no workspace route for {method} {rest}")

    def _compute(self, name: str) -> dict:
        return {"id": f"{self.ws_id}/computes/{name}", "name": name, "location": "eastus",
                "type": "Microsoft.MachineLearningServices/workspaces/computes",
                "properties": {"computeType": self.computes[name], "provisioningState": "Succeeded",
                               "properties": {"vmSize": "STANDARD_NC6S_V3",
                                              "scaleSettings": {"maxNodeCount": 4, "minNodeCount": 0}}}}

    def _datastore(self, name: str) -> dict:
        return {"id": f"{self.ws_id}/datastores/{name}", "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/datastores",
                "properties": {"datastoreType": "AzureBlob", "accountName": ACCOUNT,
                               "containerName": ARTIFACTS if name == "workspaceartifactstore" else BLOBSTORE,
                               "endpoint": "core.windows.net", "protocol": "https",
                               "isDefault": name == "workspaceblobstore",
                               "credentials": {"credentialsType": "AccountKey"}}}

    # ------------------------------------------------------------------------------------------------- jobs
    def status(self, name: str) -> str:
        job = self.jobs[name]
        if job.cancelled:
            return "CancelRequested" if job.cancelled == 1 else "Canceled"
        return "NotStarted" if job.step < 0 else self.script[min(job.step, len(self.script) - 1)][0]

    def _advance(self, job: FakeJob) -> None:
        if job.step >= len(self.script) - 1:
            return
        job.step += 1
        status, lines = self.script[job.step]
        job.log += lines
        self.blobs[f"{ARTIFACTS}/ExperimentRun/dcid.{job.name}/user_logs/std_log.txt"] = \
            "".join(line + "\n" for line in job.log).encode()
        if status in ("Completed", "Failed"):
            for rel, data in self.outputs.items():
                self.blobs[f"{BLOBSTORE}/azureml/{job.name}/output_dir/{rel}"] = data

    def _job(self, method, name, cancel, js):
        ws = self.ws_id
        if cancel and method == "POST":
            if name not in self.jobs:
                return self._err(404, "NotFound", f"job {name} not found")
            self.jobs[name].cancelled = max(self.jobs[name].cancelled, 1)
            return 202, b"", {"Location": f"https://{ARM}/operationResults/cancel-{name}", "Retry-After": "0"}
        if method == "PUT":
            props = (js or {}).get("properties", {})
            props["status"] = "NotStarted"
            props["services"] = {"Studio": {"endpoint": f"{STUDIO}/runs/{name}?wsid={ws}", "jobServiceType": "Studio"}}
            props.setdefault("outputs", {})["default"] = {  # the service adds it: jobs log to the artifact store
                "jobOutputType": "uri_folder", "mode": "ReadWriteMount",
                "uri": f"azureml://datastores/workspaceartifactstore/ExperimentRun/dcid.{name}"}
            body = {"id": f"{ws}/jobs/{name}", "name": name, "type": "Microsoft.MachineLearningServices/workspaces/jobs",
                    "properties": props, "systemData": {"createdAt": "2024-01-01T00:00:00Z", "createdBy": "test"}}
            self.jobs[name] = FakeJob(name, body)
            return 201, body, {}
        if method == "GET":
            job = self.jobs.get(name)
            if job is None:
                return self._err(404, "UserError", f"job {name} not found")
            if not job.cancelled:
                self._advance(job)
            body = json.loads(json.dumps(job.body))
            body["properties"]["status"] = self.status(name)
            if job.cancelled:  # CancelRequested once, then Canceled
                job.cancelled += 1
            return 200, body, {}
        return self._err(405, "MethodNotAllowed", method)

    def _history(self, method, path, js):
        m = re.search(r"/runs/([^/]+)/details$", path)
        if m and m.group(1) in self.jobs:
            name = m.group(1)
            status = self.status(name)
            log = f"{ARTIFACTS}/ExperimentRun/dcid.{name}/user_logs/std_log.txt"
            details = {"runId": name, "status": status, "target": "gpu-cluster", "warnings": [], "properties": {},
                       "logFiles": {"user_logs/std_log.txt": f"https://{BLOB_HOST}/{log}?sig=fake"}
                       if log in self.blobs else {}}
            if status == "Failed":
                details["error"] = {"error": dict(self.error)}
            return 200, details, {}
        if path.endswith("/rundata") and method == "POST":
            name = (js or {}).get("runId")
            return 200, {"runMetadata": {"runId": name, "status": self.status(name), "outputs": {},
                                         "properties": {}}}, {}
        if "/artifacts" in path or "/dataversion" in path or "/dataset" in path or "/models" in path:
            return 200, {"value": [], "continuationToken": None}, {}
        return self._err(404, "NoRoute", f"the fake has no run history route for {method} {path}")

    # ------------------------------------------------------------------------------------------------- blobs
    def _blob(self, method, key, q, body, headers):
        stamp = {"ETag": '"0x1"', "Last-Modified": DATE}
        if method == "PUT":
            comp = q.get("comp")
            if comp == "block":
                self.blobs[key + "#blocks"] = self.blobs.get(key + "#blocks", b"") + (body or b"")
            elif comp == "blocklist":
                self.blobs[key] = self.blobs.pop(key + "#blocks", b"")
            elif comp == "metadata":
                return 200, b"", stamp
            else:
                self.blobs[key] = body or b""
            return 201, b"", stamp
        if method in ("HEAD", "GET") and "comp" not in q:
            if key not in self.blobs:
                return 404, b"", {"x-ms-error-code": "BlobNotFound"}
            data = self.blobs[key]
            wanted = re.fullmatch(r"bytes=(\d+)-", headers.get("Range") or "")
            if wanted and method == "GET":  # a plain ranged read (the SDK's own downloads use x-ms-range)
                start = int(wanted.group(1))
                if start >= len(data):
                    return 416, b"", {"x-ms-error-code": "InvalidRange"}
                return 206, data[start:], {**stamp, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            answer = {**stamp, "Content-Length": str(len(data)), "x-ms-blob-type": "BlockBlob",
                      "Content-Range": f"bytes 0-{max(len(data) - 1, 0)}/{len(data)}"}
            return 200, (b"" if method == "HEAD" else data), answer
        if method == "GET" and q.get("comp") == "list":
            container, prefix = key.split("/")[0], q.get("prefix", "")
            names = sorted(k.split("/", 1)[1] for k in self.blobs
                           if k.startswith(container + "/") and "#" not in k and k.split("/", 1)[1].startswith(prefix))
            xml = ('<?xml version="1.0" encoding="utf-8"?><EnumerationResults><Blobs>' + "".join(
                f"<Blob><Name>{n}</Name><Properties><Content-Length>{len(self.blobs[container + '/' + n])}"
                f"</Content-Length><BlobType>BlockBlob</BlobType><Last-Modified>{DATE}</Last-Modified></Properties>"
                f"</Blob>" for n in names) + "</Blobs><NextMarker/></EnumerationResults>")
            return 200, xml.encode(), {"Content-Type": "application/xml"}
        return 400, b"", {}


# ------------------------------------------------------------------------------------------- requests plumbing
class FakeAdapter(BaseAdapter):
    def __init__(self, fake: FakeAzureML):
        super().__init__()
        self.fake = fake

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        status, payload, extra = self.fake.handle(request.method, request.url, dict(request.headers), body or b"")
        if isinstance(payload, (dict, list)):
            data, ctype = json.dumps(payload).encode(), "application/json"
        else:
            data, ctype = payload or b"", extra.pop("Content-Type", "application/octet-stream")
        response = requests.Response()
        response.status_code = status
        response.headers = CaseInsensitiveDict({"Content-Type": ctype, "Content-Length": str(len(data)),
                                                "x-ms-request-id": str(uuid.uuid4()), **extra})
        response.raw = _Raw(data)
        response.url, response.request, response.encoding = request.url, request, "utf-8"
        response.reason = "OK" if status < 400 else "Error"
        return response

    def close(self) -> None:
        pass


class _Raw(io.BytesIO):
    """Enough of urllib3's HTTPResponse for requests and azure-core streaming."""

    enforce_content_length = True

    def stream(self, chunk_size=1024, decode_content=True):
        while True:
            chunk = self.read(chunk_size)
            if not chunk:
                break
            yield chunk

    def release_conn(self) -> None:
        pass


def make_transport(fake: FakeAzureML):
    from azure.core.pipeline.transport import RequestsTransport

    session = requests.Session()
    session.mount("https://", FakeAdapter(fake))
    session.mount("http://", FakeAdapter(fake))
    return RequestsTransport(session=session, session_owner=False)


@contextlib.contextmanager
def patch_all_requests(fake: FakeAzureML):
    """Every requests.Session in the process answers from the fake (the SDK's own blob clients included)."""
    original = requests.Session.get_adapter
    adapter = FakeAdapter(fake)
    requests.Session.get_adapter = lambda self, url: adapter
    try:
        yield
    finally:
        requests.Session.get_adapter = original
