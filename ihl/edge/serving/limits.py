"""The handler's limits and batch admission, counted from headers and boxes.

The limits are the ``handler`` section of the archive's model-config.yaml, which
``ihl export`` copies from serving/model-config.yaml: that file is the one place their
values are written. Pixels and crops are counted per image, per request and per batch
before any pixel is decoded, and crops again once the detector has found its persons.
"""

from __future__ import annotations

from typing import Any

from ihl.edge.serving.reading import Refusal, RequestError

LIMITS = (
    "max_pixels",  # one image
    "max_aspect_ratio",  # long side / short side of one image
    "max_request_pixels",  # all images of one request (KServe: its instances)
    "max_batch_pixels",  # all requests of one TorchServe batch
    "max_instances",  # images in one KServe v1 request
    "max_boxes",  # crops (person boxes, or 1 for a whole image) of one request
    "max_batch_crops",  # crops of one batch: it must finish inside responseTimeout
    "crops_per_forward",  # crops in one forward pass
)
BATCH_TIME_SHARE = 0.5
"""Share of responseTimeout a full batch may take: room for decoding and a busy node."""


def read_limits(settings: dict[str, Any]) -> dict[str, int]:
    """The handler section of model-config.yaml (``precision`` aside) as limits; refuses
    missing or unknown keys, and limits under which a request that passes the per-request
    limits could never fit a batch."""
    unknown, missing = sorted(set(settings) - set(LIMITS)), sorted(set(LIMITS) - set(settings))
    if unknown or missing:
        raise ValueError(
            f"model-config.yaml handler: unknown key(s) {unknown}, missing key(s) {missing}"
        )
    limits = {key: int(settings[key]) for key in LIMITS}
    for one, many in (
        ("max_pixels", "max_request_pixels"),
        ("max_request_pixels", "max_batch_pixels"),
        ("max_boxes", "max_batch_crops"),
    ):
        if limits[one] > limits[many]:
            raise ValueError(
                f"model-config.yaml handler: {one} ({limits[one]}) is larger than {many} "
                f"({limits[many]}), so some valid requests could never be served"
            )
    return limits


def check_instances(count: int, limits: dict[str, int]) -> None:
    """Refuse a KServe request with more instances than ``max_instances``, before reading any."""
    if count > limits["max_instances"]:
        raise RequestError(
            f"too many instances: {count}, at most {limits['max_instances']} per request "
            "(max_instances)",
            status=413,
        )


def check_request(items: list, limits: dict[str, int], detected: bool = False) -> None:
    """Refuse a request (all its items) over the per-request limits (naming the limit);
    ``detected``: its crops include the persons the detector found."""
    pixels = sum(item.pixels for item in items)
    if pixels > limits["max_request_pixels"]:
        raise RequestError(
            f"images too large: {pixels} pixels in one request, more than the limit of "
            f"{limits['max_request_pixels']} (max_request_pixels)",
            status=413,
        )
    crops = sum(item.crops for item in items)
    if crops > limits["max_boxes"]:
        found = " (with the persons the detector found)" if detected else ""
        raise RequestError(
            f"too many boxes: {crops} crops{found} in one request, at most "
            f"{limits['max_boxes']} (max_boxes)"
        )


def admit(requests: list, limits: dict[str, int], detected: bool = False) -> list:
    """Each request's items, or its ``Refusal``: a request over the per-request limits is
    refused, and those that would take their batch over ``max_batch_pixels`` or
    ``max_batch_crops`` get 429 (the same request alone fits), in arrival order."""
    out: list = []
    pixels = crops = 0
    for items in requests:
        if isinstance(items, Refusal):
            out.append(items)
            continue
        try:
            check_request(items, limits, detected)
        except RequestError as err:
            out.append(Refusal.of(err))
            continue
        more_pixels = sum(item.pixels for item in items)
        more_crops = sum(item.crops for item in items)
        over = [
            limit
            for limit, used, more in (
                ("max_batch_pixels", pixels, more_pixels),
                ("max_batch_crops", crops, more_crops),
            )
            if used + more > limits[limit]
        ]
        if over:
            out.append(
                Refusal(
                    429,
                    f"server busy: this request would take its batch over {limits[over[0]]} "
                    f"{over[0].removeprefix('max_batch_')} ({over[0]}); retry it",
                )
            )
            continue
        pixels, crops = pixels + more_pixels, crops + more_crops
        out.append(items)
    return out


def cap_crops(limits: dict[str, int], rate: float, response_timeout: float) -> None:
    """Lower ``max_batch_crops`` (and ``max_boxes`` with it) to what this worker can run in
    ``BATCH_TIME_SHARE`` of TorchServe's responseTimeout: past it TorchServe kills the worker
    and every request of the batch fails."""
    cap = max(1, int(rate * response_timeout * BATCH_TIME_SHARE))
    limits["max_batch_crops"] = min(limits["max_batch_crops"], cap)
    limits["max_boxes"] = min(limits["max_boxes"], limits["max_batch_crops"])
