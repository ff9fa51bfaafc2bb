"""One upload is one trace: the running stack's services export their spans by OTLP (the
standard OTEL_EXPORTER_OTLP_* variables) to a local receiver, and the upload's spans, from the
gateway through upload, the broker, the inference worker and history, all share the trace id the
client sent and hang together: every span's parent is in the trace, up to the client's."""

from __future__ import annotations

import uuid

import httpx
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.conftest import face_photo
from tests.e2e.test_walkthrough import bearer, wait_until_settled
from tests.otlp_receiver import OtlpReceiver
from tests.stack_harness import RunningStack, random_mobile

SERVICES = {"gateway", "upload", "inference", "history"}
# (service, span): the gateway's server span and its client span to upload, upload's server span and
# its publish, the worker's consume, stages and publish, history's consume of the outcome.
EXPECTED = {
    ("gateway", "POST /v1/images"),
    ("gateway", "/facerestore.upload.v1.UploadService/CreateUpload"),
    ("upload", "/facerestore.upload.v1.UploadService/CreateUpload"),
    ("upload", "publish image.uploaded"),
    ("inference", "consume image.uploaded"),
    ("inference", "restore.analyze"),
    ("inference", "restore.restore"),
    ("inference", "publish image.restored"),
    ("history", "consume image.uploaded"),
    ("history", "consume image.restored"),
}


def test_an_upload_is_one_trace_across_every_service(
    stack: RunningStack, client: httpx.Client, otlp_receiver: OtlpReceiver
) -> None:
    tokens = stack.sign_in(client, random_mobile())
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = client.post(
        "/v1/images",
        headers={**bearer(tokens), "traceparent": f"00-{trace_id}-{caller_span}-01"},
        files={"file": ("face.png", face_photo("Tom_Hanks_54745.png").read_bytes(), "image/png")},
    )
    assert response.status_code == 202, response.text
    assert wait_until_settled(client, tokens, response.json()["id"])["status"] == "done"

    spans = otlp_receiver.wait_for(trace_id, EXPECTED)
    assert SERVICES <= {span.service for span in spans}
    kinds = {(span.service, span.name): span.span.kind for span in spans}
    create = "/facerestore.upload.v1.UploadService/CreateUpload"
    assert kinds[("gateway", create)] == trace_pb2.Span.SPAN_KIND_CLIENT
    assert kinds[("upload", create)] == trace_pb2.Span.SPAN_KIND_SERVER
    assert kinds[("upload", "publish image.uploaded")] == trace_pb2.Span.SPAN_KIND_PRODUCER
    assert kinds[("inference", "consume image.uploaded")] == trace_pb2.Span.SPAN_KIND_CONSUMER

    # One tree: the gateway's server span continues the client's; every other span's parent is in the trace.
    ids = {span.span_id for span in spans}
    (root,) = [span for span in spans if span.parent_id == caller_span]
    assert (root.service, root.name) == ("gateway", "POST /v1/images")
    orphans = [(span.service, span.name) for span in spans if span is not root and span.parent_id not in ids]
    assert orphans == []
    # The broker hop: the worker's consume span descends from the upload service's server span.
    parents = {span.span_id: span for span in spans}
    consume = next(span for span in spans if span.service == "inference" and span.name == "consume image.uploaded")
    chain = []
    while consume.parent_id in parents:
        consume = parents[consume.parent_id]
        chain.append((consume.service, consume.name))
    assert ("upload", "/facerestore.upload.v1.UploadService/CreateUpload") in chain
    assert chain[-1] == ("gateway", "POST /v1/images")
