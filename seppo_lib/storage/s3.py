"""S3 / MinIO `Store`: the only module in seppo that imports boto3.

- Endpoint: `storage.s3_endpoint_url`, else env `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or
  `S3_ENDPOINT_URL`, else AWS. Credentials come only from boto3's default chain (environment,
  shared files, instance / pod role), never from parameters.
- Every object carries its sha256 as user metadata (`x-amz-meta-sha256`); uploads are checked
  (size + sha256 read back with HEAD) and downloads are verified against it. With
  `checksum=True` the server also verifies a SHA256 checksum of every request / part.
- Every request (with its retries) is bounded by `storage.s3_time_budget_s` (default 120 s): see
  `seppo_lib.storage.s3_retry`; each retry logs a line, a request out of budget is one StorageError
  line naming the endpoint.
- `write_if` uses conditional PUT (`If-None-Match: *` / `If-Match: <etag>`); a server that
  answers "not implemented" switches the store to a `<key>.lease` object protocol (docs/storage.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from seppo_lib.paths import check_key
from seppo_lib.storage.base import ConflictError, StorageError, Store, local_io, sha256_file
from seppo_lib.storage.s3_retry import DEFAULT_TIME_BUDGET_S, BudgetSpentError, RetryBudget, attempt_timeouts

if TYPE_CHECKING:
    from seppo_lib.config import StorageConfig

log = logging.getLogger(__name__)

MiB = 1 << 20
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT_URL")
SHA256_META = "sha256"  # sent as the x-amz-meta-sha256 header
LEASE_SUFFIX = ".lease"
_ACCESS_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                 "ExpiredToken", "AllAccessDisabled", "InvalidClientTokenId"}
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_UNSUPPORTED_CODES = {"NotImplemented"}


class _ConditionalUnsupported(Exception):
    """The server rejected If-Match / If-None-Match as not implemented."""


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    if not uri.startswith("s3://"):
        raise StorageError(f"not an S3 URI: {uri!r}; use s3://bucket/prefix")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"S3 URI {uri!r} names no bucket; use s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _error_code(exc: ClientError) -> tuple[str, int]:
    return str(exc.response.get("Error", {}).get("Code", "")), int(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    )


class S3Store(Store):
    """Objects under `s3://bucket/prefix` on AWS S3 or any S3-compatible server (MinIO)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        settings: StorageConfig | None = None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        page_size: int = 1000,
        checksum: bool = True,
        conditional_writes: bool | None = None,
        lease_ttl: float = 60.0,
        time_budget: float | None = None,
    ) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.page_size, self.lease_ttl = page_size, lease_ttl
        self._checksum: dict[str, str] = {"ChecksumAlgorithm": "SHA256"} if checksum else {}
        self._conditional = conditional_writes  # None: try, and fall back to leases if refused
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize
        )
        from seppo_lib import config as seppo_config

        settings = settings or seppo_config.StorageConfig()
        budget = time_budget if time_budget is not None else (settings.s3_time_budget_s if settings is not None else DEFAULT_TIME_BUDGET_S)
        self.time_budget = float(budget)
        self._client = _make_client(settings, *attempt_timeouts(self.time_budget, connect_timeout, read_timeout))
        self.endpoint: str = self._client.meta.endpoint_url
        max_attempts = settings.s3_max_attempts + 1  # s3_max_attempts counts retries, as botocore did
        RetryBudget(self.time_budget, max_attempts, self.endpoint).register(self._client)

    @classmethod
    def from_uri(cls, uri: str, settings: StorageConfig | None = None, **options: Any) -> S3Store:
        """A store rooted at `s3://bucket/prefix`; `options` are the keyword arguments of `S3Store`."""
        bucket, prefix = parse_s3_uri(uri)
        return cls(bucket, prefix, settings, **options)

    # ---- keys and errors --------------------------------------------------------------
    def _key(self, key: str) -> str:
        check_key(key, self.uri)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        """Turn boto3 / botocore failures into StorageError / FileNotFoundError naming the URI."""
        try:
            yield
        except Boto3Error as exc:  # S3UploadFailedError etc. wrap the ClientError they caught
            inner = exc.__cause__ or exc.__context__
            raise self._translate(inner if isinstance(inner, Exception) else exc, key, action) from exc
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, key, action) from exc

    def _translate(self, exc: Exception, key: str, action: str) -> Exception:
        uri, endpoint = self.describe(key), self.endpoint
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(
                f"no S3 credentials to {action} {uri}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE, or run with an instance / pod role)"
            )
        if isinstance(exc, BudgetSpentError):
            return StorageError(
                f"S3 endpoint {endpoint} gave no usable answer to {action} {uri}: {exc} "
                "(storage.s3_time_budget_s); check the server is up and answering, or raise the budget"
            )
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return StorageError(
                f"cannot reach S3 endpoint {endpoint} to {action} {uri} ({type(exc).__name__}): "
                "set storage.s3_endpoint_url or AWS_ENDPOINT_URL, and check the server is up"
            )
        if not isinstance(exc, ClientError):
            return StorageError(f"S3 {action} of {uri} at {endpoint} failed: {exc}")
        code, status = _error_code(exc)
        no_key = status == 404 and code in ("404", "NotFound")  # a HEAD names no reason: ask about the bucket
        if code == "NoSuchBucket" or (no_key and not self._bucket_exists()):
            return StorageError(
                f"bucket {self.bucket!r} does not exist at endpoint {endpoint}: "
                f"create it or fix the storage URI (e.g. bank.uri={self.uri})"
            )
        if code == "NoSuchUpload":
            return StorageError(f"the multipart upload of {uri} was lost at {endpoint} (server restarted?): retry it")
        if status == 404 or code == "NoSuchKey":
            return FileNotFoundError(f"{uri} does not exist")
        if code in _ACCESS_CODES or status == 403:
            return StorageError(
                f"access denied to {uri} at {endpoint} ({code}): "
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or check the bucket policy"
            )
        if code in _CONFLICT_CODES or status == 412:
            return ConflictError(f"{uri} changed since it was read (another writer?); re-read and retry")
        message = exc.response.get("Error", {}).get("Message", "")
        return StorageError(f"S3 {action} of {uri} at {endpoint} failed: {code} {message}".rstrip())

    def _bucket_exists(self) -> bool:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            return _error_code(exc)[1] != 404
        except BotoCoreError:
            return True  # the original error stands
        return True

    def _verify(self, key: str, meta: Mapping[str, Any], size: int, digest: str, action: str) -> None:
        """Compare what the server holds (size, x-amz-meta-sha256) with the local bytes."""
        expected_size = meta.get("ContentLength", size)
        expected_sha = meta.get("Metadata", {}).get(SHA256_META)
        if expected_size != size or (expected_sha is not None and expected_sha != digest):
            raise StorageError(
                f"{action} of {self.describe(key)} failed its integrity check: server has {expected_size} bytes "
                f"sha256={expected_sha}, local copy has {size} bytes sha256={digest}; retry, or rewrite the object"
            )

    # ---- Store ----------------------------------------------------------------------
    def put_file(self, local: str | Path, key: str) -> None:
        local = Path(local)
        size, digest = local.stat().st_size, sha256_file(local)
        extra = {"Metadata": {SHA256_META: digest}, **self._checksum}
        with self._errors(key, "upload"):
            self._client.upload_file(str(local), self.bucket, self._key(key), ExtraArgs=extra, Config=self._transfer)
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        self._verify(key, head, size, digest, "upload")
        log.debug("uploaded %s (%d bytes) to %s", local, size, self.describe(key))

    def get_file(self, key: str, local: str | Path) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with local_io(local, "download to"), self._errors(key, "download"):
                head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
                self._client.download_file(self.bucket, self._key(key), str(tmp), Config=self._transfer)
            self._verify(key, head, tmp.stat().st_size, sha256_file(tmp), "download")
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)

    def _put(self, key: str, data: bytes, **conditions: str) -> str:
        meta = {SHA256_META: hashlib.sha256(data).hexdigest()}
        response = self._client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, Metadata=meta, **self._checksum, **conditions
        )
        return str(response["ETag"])

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(key, "write"):
            self._put(key, data)

    def _get(self, key: str) -> tuple[bytes, str]:
        with self._errors(key, "read"):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            data = response["Body"].read()
        self._verify(key, response, len(data), hashlib.sha256(data).hexdigest(), "read")
        return data, str(response["ETag"])

    def get_bytes(self, key: str) -> bytes:
        return self._get(key)[0]

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key, "check"):
                self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        root = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=root + prefix, PaginationConfig={"PageSize": self.page_size}
        )
        sizes: dict[str, int] = {}
        with self._errors(prefix, "list"):
            for page in pages:
                contents = page.get("Contents", [])
                sizes.update((o["Key"][len(root):], int(o["Size"])) for o in contents if not o["Key"].endswith("/"))  # no dir markers
        return dict(sorted(sizes.items()))

    def delete(self, key: str) -> None:
        with self._errors(key, "delete"):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            data, etag = self._get(key)
        except FileNotFoundError:
            return None, None
        return data, etag

    # ---- conditional writes -----------------------------------------------------------
    def write_if(self, key: str, data: bytes, expected: str | None) -> str:
        if self._conditional is not False:
            try:
                token = self._write_conditional(key, data, expected)
            except _ConditionalUnsupported:
                log.warning("S3 endpoint %s does not implement conditional writes; "
                            "falling back to %s objects (single writer)", self.endpoint, LEASE_SUFFIX)
                self._conditional = False
            else:
                self._conditional = True
                return token
        return self._write_with_lease(key, data, expected)

    def _write_conditional(self, key: str, data: bytes, expected: str | None) -> str:
        conditions = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            with self._errors(key, "conditional write"):
                try:
                    return self._put(key, data, **conditions)
                except ClientError as exc:
                    code, status = _error_code(exc)
                    if code in _UNSUPPORTED_CODES or status == 501:
                        raise _ConditionalUnsupported(code) from exc
                    raise
        except FileNotFoundError as exc:  # If-Match on an object deleted since it was read
            raise ConflictError(f"{self.describe(key)} was deleted since it was read; re-read and retry") from exc

    def _write_with_lease(self, key: str, data: bytes, expected: str | None) -> str:
        owner = self._acquire_lease(key)
        try:
            current = self._head_etag(key)
            if current != expected:
                raise ConflictError(f"{self.describe(key)} changed since it was read (another writer?); re-read, retry")
            with self._errors(key, "write"):
                return self._put(key, data)
        finally:
            self._release_lease(key, owner)

    def _head_etag(self, key: str) -> str | None:
        try:
            with self._errors(key, "check"):
                head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            return None
        return str(head["ETag"])

    def _read_lease(self, lease_key: str) -> dict[str, Any] | None:
        raw, _ = self.read_versioned(lease_key)
        if raw is None:
            return None
        try:
            lease = json.loads(raw)
            return {"owner": str(lease["owner"]), "expires": float(lease["expires"])}
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"lease {self.describe(lease_key)} has no valid owner/expires JSON: delete it") from exc

    def _acquire_lease(self, key: str) -> str:
        """Take `<key>.lease` (owner + expiry) or raise ConflictError while another writer holds it."""
        lease_key = key + LEASE_SUFFIX
        held = self._read_lease(lease_key)
        if held is not None and held["expires"] > time.time():
            raise ConflictError(
                f"{self.describe(key)} is being written by {held['owner']} (lease {self.describe(lease_key)} "
                f"expires in {held['expires'] - time.time():.0f}s); retry later, or delete the lease if it died"
            )
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.put_bytes(lease_key, json.dumps({"owner": owner, "expires": time.time() + self.lease_ttl}).encode())
        held = self._read_lease(lease_key)
        if held is None or held["owner"] != owner:  # two writers raced: the last PUT won
            raise ConflictError(f"{self.describe(key)}: another writer took the lease at the same time; retry")
        return owner

    def _release_lease(self, key: str, owner: str) -> None:
        lease_key = key + LEASE_SUFFIX
        held = self._read_lease(lease_key)
        if held is not None and held["owner"] == owner:
            self.delete(lease_key)


def _make_client(settings: StorageConfig, connect_timeout: float, read_timeout: float) -> Any:
    endpoint = settings.s3_endpoint_url or next((os.environ[n] for n in ENDPOINT_ENV if os.environ.get(n)), None)
    style = settings.s3_addressing_style
    if style == "auto" and endpoint:
        style = "path"  # MinIO and other self-hosted servers: no per-bucket DNS names
    boto_config = Config(
        region_name=settings.s3_region,
        retries={"mode": "adaptive", "total_max_attempts": 1},  # retries: RetryBudget (s3_retry.py)
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        s3={"addressing_style": style},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=boto_config)
