"""Register: upload the exported model to the S3 model registry (skipped without a registry)."""

from kfp.dsl import Input, Model

from components._base import ihl_component


@ihl_component
def register(package: Input[Model], registry_uri: str, image: str) -> str:
    """Push ``package`` to ``registry_uri`` (``s3://bucket/prefix``) under its name and version
    and return that version's URI; "" when ``registry_uri`` is "" (nothing is uploaded).

    S3 credentials and endpoint come from boto3's environment (AWS_* variables).
    """
    from pathlib import Path

    from ihl.edge.registry.store import push

    if not registry_uri:
        print("registry_uri is empty: the model is not registered")
        return ""
    name, version = package.metadata["name"], package.metadata["version"]
    uri = push(Path(package.path), registry_uri, name, version)
    print(f"registered {name} {version} at {uri}")
    return uri
