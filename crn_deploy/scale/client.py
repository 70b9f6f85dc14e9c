"""A small client for the ``crn-serve`` endpoint (stdlib HTTP, NumPy, OpenCV; no Ray needed).

    from crn_deploy.scale.client import SynthesisClient
    client = SynthesisClient("http://127.0.0.1:8000")
    rgb = client.synthesize(label_ids, instances=instance_ids)   # uint8 [H,W] (+ int32 [H,W]) -> [H',W',3]
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import cv2
import numpy as np

from ..errors import CrnError, UsageError
from .serve import FRAME_LABELS_HEADER, LABELS_TYPE, RAW_TYPE


class ServiceError(CrnError):
    """The endpoint answered with an error (its one-line message and HTTP status)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class SynthesisClient:
    """``retries``: how many times a request is sent again after the service failed to answer it (connection
    refused or reset, 5xx: a replica died or is being replaced), with a growing pause; requests are idempotent.
    A 4xx (bad input) is never retried."""

    def __init__(self, url: str, timeout: float = 60.0, retries: int = 3, backoff_s: float = 0.5) -> None:
        self.url, self.timeout, self.retries, self.backoff_s = url.rstrip("/"), timeout, retries, backoff_s

    def synthesize(self, labels: np.ndarray, instances: np.ndarray | None = None, *, raw: bool = True,
                   frame_labels: dict | None = None) -> np.ndarray:
        """One label map (uint8 ids [H,W], or colours [H,W,3|4]) -> uint8 RGB picture. ``raw`` sends and
        receives raw arrays (no PNG coding on either side); else PNG both ways. ``frame_labels``: the map is one
        frame named by its own labels (Replicator's idToLabels: ids up to 16 bits [H,W], or RGBA [H,W,4]); it
        travels as PNG with them."""
        labels = np.asarray(labels)
        if raw and labels.ndim == 2 and frame_labels is None:
            body, headers = self._raw_body(labels, instances)
            headers["Accept"] = RAW_TYPE
        else:
            if instances is not None:
                raise UsageError("instance maps travel in the raw form only: call with raw=True and id maps")
            body, headers = self.png_body(labels), {"Content-Type": "image/png"}
            if frame_labels is not None:
                headers[FRAME_LABELS_HEADER] = json.dumps(frame_labels, separators=(",", ":"))
        response, reply_headers = self._request("/synthesize", body, headers)
        if (reply_headers.get("Content-Type") or "").startswith(RAW_TYPE):
            shape = tuple(int(v) for v in reply_headers["X-Shape"].split(","))
            return np.frombuffer(response, np.uint8).reshape(shape)
        return cv2.imdecode(np.frombuffer(response, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]

    @staticmethod
    def png_body(labels: np.ndarray) -> bytes:
        if labels.ndim == 3 and labels.shape[-1] in (3, 4):  # OpenCV writes BGR(A)
            image = labels[..., [2, 1, 0, 3][: labels.shape[-1]]].astype(np.uint8)
        else:  # ids: 8 bits, or 16 where larger (a Replicator frame's)
            if labels.size and (labels.min() < 0 or labels.max() > 65535):
                raise UsageError(f"label ids {labels.min()}..{labels.max()} do not fit a 16-bit PNG; send ids "
                                 "0..65535 (map a Replicator frame's larger ids first)")
            image = labels.astype(np.uint16 if labels.size and labels.max() > 255 else np.uint8)
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image))
        if not ok:
            raise UsageError(f"cannot encode a label map of shape {list(labels.shape)} as PNG")
        return encoded.tobytes()

    @staticmethod
    def _raw_body(labels: np.ndarray, instances: np.ndarray | None) -> tuple[bytes, dict]:
        if labels.dtype != np.uint8:
            raise UsageError(f"label ids must be uint8, got {labels.dtype}")
        headers = {"Content-Type": LABELS_TYPE, "X-Shape": f"{labels.shape[0]},{labels.shape[1]}"}
        body = labels.tobytes()
        if instances is not None:
            headers["X-Instances"] = "1"
            body += np.ascontiguousarray(instances, "<i4").tobytes()
        return body, headers

    def ready(self) -> dict:
        return json.loads(self._once("/ready", None, None)[0])

    def healthy(self) -> bool:
        try:
            return json.loads(self._once("/healthz", None, None)[0]).get("status") == "ok"
        except (ServiceError, OSError):
            return False

    def _request(self, route: str, body: bytes | None = None, headers: dict | None = None):
        """(body, headers: an ``email.message.Message``, whose ``get`` ignores case), retried as the class says."""
        for attempt in range(self.retries + 1):
            try:
                return self._once(route, body, headers)
            except (ServiceError, OSError) as e:
                transient = e.status >= 500 if isinstance(e, ServiceError) else True
                if not transient or attempt == self.retries:
                    raise
                time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _once(self, route: str, body: bytes | None, headers: dict | None):
        request = urllib.request.Request(self.url + route, data=body, headers=headers or {},
                                         method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read(), response.headers
        except urllib.error.HTTPError as e:
            raise ServiceError(e.code, e.read().decode(errors="replace").strip()) from None
