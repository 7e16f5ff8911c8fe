"""Edge adapters: where ihl meets DVC, DVCLive, S3, TorchServe, KServe and container images.

The core (config, data, models, train, evaluate, inference) never imports from here; each
adapter imports its heavy package inside the functions that need it.
"""
