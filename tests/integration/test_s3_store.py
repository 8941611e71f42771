"""S3Store against a real S3 server (moto over HTTP on loopback)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from seppo_lib.config import StorageConfig
from seppo_lib.storage import ConflictError, StorageError, open_store, sha256_file
from seppo_lib.storage.s3 import MiB, S3Store, parse_s3_uri
from tests.integration.conftest import new_bucket, s3_client
from tests.servers import MotoProcess, free_port

pytestmark = pytest.mark.servers


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://bkt/a/b/") == ("bkt", "a/b")
    assert parse_s3_uri("s3://bkt") == ("bkt", "")
    with pytest.raises(StorageError, match="names no bucket"):
        parse_s3_uri("s3:///x")


def test_bytes_and_file_round_trip(s3_bucket: str, tmp_path: Path) -> None:
    store = open_store(s3_bucket)  # endpoint from AWS_ENDPOINT_URL (set by the s3_server fixture)
    assert isinstance(store, S3Store)
    store.put_bytes("x/one.json", b'{"a": 1}')
    assert store.get_bytes("x/one.json") == b'{"a": 1}'
    assert store.exists("x/one.json") and not store.exists("x/two.json")
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(3000))
    store.put_file(src, "x/w.bin")
    store.get_file("x/w.bin", tmp_path / "out" / "w.bin")
    assert (tmp_path / "out" / "w.bin").read_bytes() == src.read_bytes()
    assert store.describe("x/w.bin") == f"{s3_bucket}/x/w.bin"
    store.delete("x/w.bin")
    store.delete("x/w.bin")  # missing keys are ignored
    assert store.list() == ["x/one.json"]


def test_dir_round_trip_and_prefix_isolation(s3_server: str, s3_bucket: str, local_files: Path, tmp_path: Path) -> None:
    store = open_store(s3_bucket)
    sibling = open_store(s3_bucket + "2")  # s3://bucket/prefix2 must not leak into s3://bucket/prefix
    sibling.put_bytes("ckpt/a.txt", b"other")
    keys = store.put_dir(local_files, "ckpt")
    assert keys == ["ckpt/a.txt", "ckpt/sub/b.json", "ckpt/sub/deep/c.bin"]
    assert store.list() == keys and store.list("ckpt/sub/") == keys[1:]
    got = store.get_dir("ckpt", tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in got) == ["a.txt", "sub/b.json", "sub/deep/c.bin"]
    for path in got:
        assert path.read_bytes() == (local_files / path.relative_to(tmp_path / "back")).read_bytes()
    assert store.delete_prefix("ckpt") == 3 and store.list() == []
    assert sibling.list() == ["ckpt/a.txt"]
    bucket, prefix = parse_s3_uri(s3_bucket)
    s3_client(s3_server).put_object(Bucket=bucket, Key=f"{prefix}/made-in-console/", Body=b"")  # "folder" marker
    assert store.list() == []


def test_list_follows_pagination(s3_bucket: str) -> None:
    store = S3Store.from_uri(s3_bucket, page_size=3)
    calls: list[str] = []
    store._client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: calls.append(kw["model"].name))
    expected = [f"k/{i:02d}" for i in range(10)]
    for key in reversed(expected):
        store.put_bytes(key, key.encode())
    assert store.list("k/") == expected
    assert len(calls) == 4  # ceil(10 / 3) pages


def test_missing_key_is_file_not_found(s3_bucket: str, tmp_path: Path) -> None:
    store = open_store(s3_bucket)
    with pytest.raises(FileNotFoundError, match=f"{s3_bucket}/nope.json does not exist"):
        store.get_bytes("nope.json")
    with pytest.raises(FileNotFoundError, match="nope.bin does not exist"):
        store.get_file("nope.bin", tmp_path / "nope.bin")
    assert not (tmp_path / "nope.bin").exists() and list(tmp_path.iterdir()) == []
    assert store.read_versioned("nope.json") == (None, None)
    with pytest.raises(ValueError, match="escapes the store root"):
        store.get_bytes("../other/x")


def test_multipart_upload_is_verified(s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    store = S3Store.from_uri(s3_bucket, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    big = tmp_path / "big.safetensors"
    big.write_bytes(os.urandom(11 * MiB))
    store.put_file(big, "ckpt/big.safetensors")
    bucket, prefix = parse_s3_uri(s3_bucket)
    head = s3_client(s3_server).head_object(Bucket=bucket, Key=f"{prefix}/ckpt/big.safetensors", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"'), head["ETag"]  # three parts: 5 + 5 + 1 MiB
    assert head["Metadata"]["sha256"] == sha256_file(big)
    assert "ChecksumSHA256" in head  # the server checked a SHA256 of every part
    store.get_file("ckpt/big.safetensors", tmp_path / "copy")
    assert sha256_file(tmp_path / "copy") == sha256_file(big)


def test_corrupted_object_is_detected(s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    store = open_store(s3_bucket)
    store.put_bytes("w.bin", b"good weights")
    bucket, prefix = parse_s3_uri(s3_bucket)
    good_sha = hashlib.sha256(b"good weights").hexdigest()
    tampered = {"Body": b"evil weights", "Metadata": {"sha256": good_sha}}  # same size, stale digest
    s3_client(s3_server).put_object(Bucket=bucket, Key=f"{prefix}/w.bin", **tampered)
    with pytest.raises(StorageError, match="w.bin failed its integrity check"):
        store.get_bytes("w.bin")
    with pytest.raises(StorageError, match="integrity check"):
        store.get_file("w.bin", tmp_path / "w.bin")
    assert list(tmp_path.iterdir()) == []  # no partial or corrupt file left behind


def test_write_if_semantics(s3_bucket: str) -> None:
    store = open_store(s3_bucket)
    token = store.write_if("manifest.json", b"v1", None)
    with pytest.raises(ConflictError, match="manifest.json changed since it was read"):
        store.write_if("manifest.json", b"v1-again", None)
    assert store.read_versioned("manifest.json") == (b"v1", token)
    token2 = store.write_if("manifest.json", b"v2", token)
    assert token2 != token
    with pytest.raises(ConflictError):
        store.write_if("manifest.json", b"v3-stale", token)
    assert store.get_bytes("manifest.json") == b"v2"
    store.delete("manifest.json")
    with pytest.raises(ConflictError):
        store.write_if("manifest.json", b"v3", token2)


def _refuse_conditional_puts(store: S3Store) -> list[str]:
    """Make the client see what an older S3-compatible server answers to If-(None-)Match."""
    refused: list[str] = []

    def before_send(request: Any, **_: Any) -> AWSResponse | None:
        if "If-None-Match" in request.headers or "If-Match" in request.headers:
            refused.append(request.url)
            body = b"<Error><Code>NotImplemented</Code><Message>A header implies unimplemented functionality</Message></Error>"
            return AWSResponse(request.url, 501, {}, _Raw(body))
        return None

    store._client.meta.events.register_first("before-send.s3.PutObject", before_send)
    return refused


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def test_write_if_falls_back_to_a_lease_when_conditional_puts_are_refused(s3_bucket: str) -> None:
    store = S3Store.from_uri(s3_bucket)
    refused = _refuse_conditional_puts(store)
    token = store.write_if("manifest.json", b"v1", None)
    assert len(refused) == 1  # detected once, then the store stays on leases
    with pytest.raises(ConflictError):
        store.write_if("manifest.json", b"again", None)
    token2 = store.write_if("manifest.json", b"v2", token)
    with pytest.raises(ConflictError):
        store.write_if("manifest.json", b"stale", token)
    assert store.read_versioned("manifest.json") == (b"v2", token2)
    assert store.list() == ["manifest.json"] and len(refused) == 1  # leases released

    other = json.dumps({"owner": "trainer-7", "expires": time.time() + 30}).encode()
    store.put_bytes("manifest.json.lease", other)
    with pytest.raises(ConflictError, match="being written by trainer-7"):
        store.write_if("manifest.json", b"v3", token2)
    store.put_bytes("manifest.json.lease", json.dumps({"owner": "dead", "expires": time.time() - 1}).encode())
    store.write_if("manifest.json", b"v3", token2)  # an expired lease is taken over
    assert store.get_bytes("manifest.json") == b"v3" and not store.exists("manifest.json.lease")


def test_missing_bucket_is_named(s3_server: str) -> None:
    store = open_store("s3://no-such-bucket-here/bank")
    for call in (lambda: store.put_bytes("a", b"x"), lambda: store.exists("a"), lambda: store.list()):
        with pytest.raises(StorageError, match=f"bucket 'no-such-bucket-here' does not exist at endpoint {s3_server}"):
            call()


def test_no_credentials_is_explained(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no S3 credentials .* set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"):
        open_store(s3_bucket).get_bytes("a.json")


def test_unreachable_endpoint_fails_fast(aws_env: dict[str, str]) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = open_store("s3://bkt/x", StorageConfig(s3_endpoint_url=endpoint, s3_max_attempts=1))
    start = time.monotonic()
    with pytest.raises(StorageError, match=f"cannot reach S3 endpoint {endpoint}/? .*set storage.s3_endpoint_url"):
        store.put_bytes("a", b"x")
    assert time.monotonic() - start < 5


def test_bad_credentials_are_access_denied(aws_env: dict[str, str]) -> None:
    with MotoProcess(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as server:  # moto checks keys against IAM
        store = open_store("s3://bkt/x", StorageConfig(s3_endpoint_url=server.endpoint))
        with pytest.raises(StorageError, match="access denied to s3://bkt/x/a .*InvalidAccessKeyId.*AWS_ACCESS_KEY_ID"):
            store.put_bytes("a", b"x")


# ---- the server goes away and comes back -------------------------------------------------
@pytest.fixture(scope="module")
def moto_process(aws_env: dict[str, str]) -> Iterator[MotoProcess]:
    with MotoProcess() as server:
        yield server


class _Outage:
    """Kill the server just before a chosen request; bring it back (same port, empty state,
    bucket re-created) when the client reports its first failed attempt, i.e. during backoff."""

    def __init__(self, server: MotoProcess, bucket: str) -> None:
        self.server, self.bucket = server, bucket
        self.lock = threading.Lock()
        self.killed_at = self.back_at = 0.0
        self.retries: list[str] = []

    def kill(self, **_: Any) -> None:
        with self.lock:
            if not self.killed_at:
                self.server.kill()
                self.killed_at = time.monotonic()

    def observe(self, attempts: int, operation: Any, caught_exception: Exception | None = None,
                response: Any = None, **_: Any) -> None:
        if caught_exception is None and (response is None or response[0].status_code < 500):
            return
        failure = type(caught_exception).__name__ if caught_exception else response[0].status_code
        with self.lock:
            self.retries.append(f"{operation.name} attempt {attempts}: {failure}")
            if self.killed_at and not self.back_at:
                self.server.start()
                s3_client(self.server.endpoint).create_bucket(Bucket=self.bucket)
                self.back_at = time.monotonic()

    def report(self, outcome: str) -> str:
        return f"down {self.back_at - self.killed_at:.2f}s, failed attempts seen: {self.retries}, outcome: {outcome}"


def _store_with_outage(server: MotoProcess, kill_on: str, attempts: int = 5, **options: Any) -> tuple[S3Store, _Outage]:
    if not server.running:
        server.start()
    bucket = new_bucket(server.endpoint)
    settings = StorageConfig(s3_endpoint_url=server.endpoint, s3_max_attempts=attempts)
    store = S3Store.from_uri(f"s3://{bucket}/bank", settings, **options)
    outage = _Outage(server, bucket)
    store._client.meta.events.register(f"before-send.s3.{kill_on}", outage.kill)
    store._client.meta.events.register("needs-retry.s3", outage.observe)
    return store, outage


def test_put_survives_a_server_restart(moto_process: MotoProcess) -> None:
    store, outage = _store_with_outage(moto_process, "PutObject")
    store.put_bytes("manifest.json", b'{"ckpts": []}')
    print("\nS3 fault (PutObject):", outage.report("retry succeeded"))
    assert outage.killed_at and outage.back_at and outage.retries
    assert store.get_bytes("manifest.json") == b'{"ckpts": []}'


def test_multipart_upload_interrupted_by_a_server_restart(moto_process: MotoProcess, tmp_path: Path) -> None:
    store, outage = _store_with_outage(
        moto_process, "UploadPart", 3, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB
    )
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(11 * MiB))
    try:
        store.put_file(big, "ckpt-1/model.safetensors")
        outcome = "retry succeeded"
    except StorageError as exc:  # the restarted (in-memory) server lost the multipart upload
        outcome = f"StorageError: {exc}"
        assert "s3://" in str(exc) and moto_process.endpoint in str(exc)
    print("\nS3 fault (UploadPart):", outage.report(outcome))
    assert outage.killed_at and outage.back_at and outage.retries
    store.put_file(big, "ckpt-1/model.safetensors")  # a second attempt by the caller succeeds
    store.get_file("ckpt-1/model.safetensors", tmp_path / "back.safetensors")
    assert sha256_file(tmp_path / "back.safetensors") == sha256_file(big)
