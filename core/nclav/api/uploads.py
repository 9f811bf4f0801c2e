"""Two-step bundle uploads, for runtimes whose API takes small request bodies only.

An AWS function URL takes at most 6 MB per request, and a binary body arrives base64-encoded,
so ``POST /bundles`` cannot carry a bundle over ~4.5 MB there. Instead:

1. ``POST /bundles/uploads`` with ``{"sha256": <hex of the tar.gz bytes>, "size": <bytes>}``
   answers a URL to PUT the bytes to, straight into the blob store (an S3 presigned PUT bound
   to that length and checksum), and the headers to send with it.
2. The client PUTs the bundle there.
3. ``POST /bundles/uploads/{sha256}/complete``: the API reads what arrived, checks its SHA-256
   against the name it was uploaded under (whatever the URL bound), then stores it as
   ``POST /bundles`` does (same answer) and removes the upload.

Only a blob store with the ``SignedUploads`` capability offers this. The local server's
directory store does not: it has no size cap below ``POST /bundles``' own 64 MiB, so there
step 1 answers 404 and the client posts the bundle directly (``nclav`` does that by itself).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from pydantic import Field

from nclav.api.http import HttpError, NotFound, UnprocessableEntity, json_response
from nclav.api.router import RequestBody
from nclav.errors import NotFoundError
from nclav.ports import SignedUploads

if TYPE_CHECKING:
    from nclav.api.http import ApiRequest, ApiResponse
    from nclav.api.router import Router
    from nclav.ports import BlobStore
    from nclav.service import Service

UPLOADS = "uploads/"
URL_EXPIRES_S = 900
MAX_UPLOAD = 512 * 1024 * 1024


def upload_blob(sha256: str) -> str:
    return f"{UPLOADS}{sha256}.tar.gz"


class UploadRequest(RequestBody):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0, le=MAX_UPLOAD)


class NotNeeded(HttpError):
    """404: this server's blob store takes no signed uploads (POST /bundles has no small cap).

    Not a 5xx: nothing failed, the server offers the direct path instead."""

    def __init__(self) -> None:
        super().__init__(
            404,
            "not_available",
            "this server takes bundles directly: POST /bundles (up to 64 MiB); signed uploads "
            "are for runtimes with a small request cap (AWS function URLs)",
        )


def add_upload_routes(router: Router, service: Service, blobs: BlobStore) -> None:
    """``POST /bundles/uploads`` and ``POST /bundles/uploads/{digest}/complete``."""

    def start(_r: ApiRequest, _p: dict[str, str], body: UploadRequest) -> ApiResponse:
        if not isinstance(blobs, SignedUploads):
            raise NotNeeded
        url, headers = blobs.upload_url(
            upload_blob(body.sha256), body.size, body.sha256, URL_EXPIRES_S
        )
        doc = {
            "method": "PUT",
            "url": url,
            "headers": headers,
            "expires_in": URL_EXPIRES_S,
            "complete": f"/bundles/uploads/{body.sha256}/complete",
        }
        return json_response(200, doc)

    def complete(_r: ApiRequest, params: dict[str, str], _b: Any) -> ApiResponse:
        sha256 = params["digest"]
        key = upload_blob(sha256)
        try:
            data = blobs.get(key)
        except NotFoundError:
            raise NotFound(
                f"no upload {sha256}: PUT it to the URL POST /bundles/uploads gave"
            ) from None
        if hashlib.sha256(data).hexdigest() != sha256:
            blobs.delete(key)
            raise UnprocessableEntity(
                f"upload {sha256}: the bytes that arrived have another SHA-256; upload again"
            )
        doc = service.bundles.put(data)
        blobs.delete(key)
        return json_response(201 if doc["created"] else 200, doc)

    router.add(
        "POST",
        "/bundles/uploads",
        start,
        summary="A signed URL to upload a large bundle to (404: POST /bundles directly)",
        request_model=UploadRequest,
    )
    router.add(
        "POST",
        "/bundles/uploads/{digest}/complete",
        complete,
        summary="Check an uploaded bundle's SHA-256 and store it like POST /bundles",
        status=201,
    )


__all__ = ["URL_EXPIRES_S", "NotNeeded", "UploadRequest", "add_upload_routes", "upload_blob"]
