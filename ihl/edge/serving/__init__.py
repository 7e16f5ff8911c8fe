"""Serving's request handling, importable without TorchServe: reading a request
(``reading``), opening its images from their headers (``images``), the limits and batch
admission (``limits``) and the pose service that TorchServe's handler
(``serving/ihl_handler.py``) calls (``service``). The HTTP contract is docs/rest-api.md."""
