"""Large bundles on AWS: `nclav diff` and `nclav apply` of a 20 MB tree through the handlers.

The function URL stand-in refuses a request over 6 MB as AWS does (a binary body counts
base64-encoded), so the CLI must take the two-step path: ``POST /bundles/uploads`` answers an
S3 presigned PUT (moto), the CLI uploads there, ``POST /bundles/uploads/{sha256}/complete``
makes the API check the digest and store the bundle.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import pytest
from aws_harness import Deployment, FakeContext, Pump, Result, http_event
from click.testing import CliRunner

from functions_aws import api
from functions_aws.s3_blobs import S3BlobStore
from nclav.cli import main

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.slow, pytest.mark.terraform]

FUNCTION_URL_CAP = 6 * 1024 * 1024  # bytes of the request AWS hands the function


class CappedFunctionUrl(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sizes: list[int] = []  # noqa: RUF012 - what reached the function, per request

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if body is not None and len(base64.b64encode(body)) > FUNCTION_URL_CAP:
            self._send(413, b'{"message":"Request must be smaller than 6291456 bytes"}')
            return
        self.sizes.append(length)
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "host"}
        event = http_event(self.command, self.path, body=body, headers=headers)
        result = Result.of(api.handler(event, FakeContext("nclav-api")))
        self._send(result.status, result.body, result.headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {"content-type": "application/json"}).items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def function_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), CappedFunctionUrl)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def big_tree(root: Path, megabytes: int) -> Path:
    part = root / "alpha" / "db"
    part.mkdir(parents=True)
    (root / "alpha" / "config.yml").write_text(
        "id: alpha\nname: alpha\ncloud: local\nregion: local-1\n"
    )
    (part / "config.yml").write_text("id: db\nname: db\ndeclared_outputs: [size]\n")
    (part / "main.tf").write_text(
        'variable "nclav_enclave" { type = string }\n'
        'variable "nclav_partition" { type = string }\n'
        'output "size" { value = length(filebase64("${path.module}/blob-0.bin")) }\n'
    )
    for i in range(megabytes):
        (part / f"blob-{i}.bin").write_bytes(os.urandom(1024 * 1024))  # incompressible
    return root


def test_a_20_mb_tree_diffs_and_applies_through_a_6_mb_function_url(
    deployment: Deployment, function_url: str, tmp_path: Path
) -> None:
    tree = big_tree(tmp_path / "tree", 20)
    env = {"NCLAV_URL": function_url, "NCLAV_TOKEN": deployment.token}
    runner = CliRunner()

    diff = runner.invoke(main, ["diff", str(tree), "--output", "json"], env=env)
    assert diff.exit_code == 0, diff.output
    assert len(json.loads(diff.stdout)["changes"]) >= 2
    assert max(CappedFunctionUrl.sizes) < 1024 * 1024  # the bundle never went through the URL

    # What arrived was checked and stored; the upload itself is gone.
    blobs = S3BlobStore(deployment.bucket, client=boto3.client("s3"))
    assert blobs.list("uploads/") == []
    (bundle,) = blobs.list("bundles/")
    assert len(blobs.get(bundle)) > 20 * 1024 * 1024

    started = runner.invoke(main, ["apply", str(tree), "--no-wait", "--output", "json"], env=env)
    assert started.exit_code == 0, started.output
    run = json.loads(started.stdout)
    final = Pump(deployment).run(run.get("run", run))
    assert final["status"] == "succeeded", final
    alpha = deployment.api.ok("GET", "/enclaves/alpha")
    assert alpha["partitions"]["db"]["resolved_outputs"]["size"] == str(4 * -(-1024 * 1024 // 3))


def test_a_tampered_upload_is_refused(deployment: Deployment) -> None:
    good = b"x" * 1000
    sha = hashlib.sha256(good).hexdigest()
    grant = deployment.api.ok("POST", "/bundles/uploads", {"sha256": sha, "size": len(good)})
    assert grant["method"] == "PUT" and "X-Amz-Signature" in grant["url"]
    assert grant["headers"]["Content-Length"] == "1000"
    # Whoever writes the upload key, the API checks the bytes against their name.
    boto3.client("s3").put_object(
        Bucket=deployment.bucket, Key=f"uploads/{sha}.tar.gz", Body=b"y" * 1000
    )
    refused = deployment.api.request("POST", f"/bundles/uploads/{sha}/complete")
    assert refused.status == 422, refused
    missing = deployment.api.request("POST", f"/bundles/uploads/{sha}/complete")
    assert missing.status == 404, missing


def test_the_upload_answers_are_what_the_openapi_document_says(deployment: Deployment) -> None:
    """The two-step upload's success answers, checked against the API's own document (the
    local server, where the schemathesis suite runs, takes bundles directly: 404 there)."""
    from nclav.bundle import pack_directory
    from openapi_check import assert_conforms

    tree = Path(__file__).resolve().parents[2] / "examples" / "chain" / "enclaves"
    digest, data, _ = pack_directory(tree)
    sha = hashlib.sha256(data).hexdigest()
    doc = deployment.api.ok("GET", "/openapi.json")
    grant = deployment.api.request("POST", "/bundles/uploads", {"sha256": sha, "size": len(data)})
    assert_conforms(doc, "POST", "/bundles/uploads", grant.status, grant.json, "application/json")
    # What the CLI does with the grant (http.client: urllib adds headers the signature lacks).
    url = urlsplit(grant.json["url"])
    conn = http.client.HTTPConnection(url.netloc, timeout=30)
    try:
        conn.putrequest("PUT", f"{url.path}?{url.query}", skip_accept_encoding=True)
        for name, value in grant.json["headers"].items():
            conn.putheader(name, value)
        conn.endheaders(data)
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()[:300]
    finally:
        conn.close()
    done = deployment.api.request("POST", f"/bundles/uploads/{sha}/complete")
    pattern = "/bundles/uploads/{digest}/complete"
    assert_conforms(doc, "POST", pattern, done.status, done.json, "application/json")
    assert done.json["digest"] == digest
