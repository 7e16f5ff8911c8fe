"""Prepare: find the dataset on the data volume (fetching it from DVC first if asked) and index it.

The images stay on the volume; only ``index.json`` (counts and a content
fingerprint) goes to the artifact store, and the Dataset artifact's metadata
says where on the volume the images are.
"""

from kfp.dsl import Dataset, Output

from components._base import ihl_component


@ihl_component
def prepare(
    dataset: str,
    data_source: str,
    data_path: str,
    dvc_repo: str,
    dvc_rev: str,
    volume: str,
    image: str,
    prepared: Output[Dataset],
):
    """Validate and index ``dataset`` ("synth", "coco", "mpii" or "crowdpose").

    ``data_source`` "volume": the dataset is at ``volume/data_path``. "dvc": it is
    ``data_path`` of the DVC-tracked git repository ``dvc_repo`` at ``dvc_rev``,
    downloaded once per commit to ``volume/dvc/<commit>/data_path``. Each download goes to
    its own temporary folder beside it and is renamed into place whole, so a retried task
    starts over and two runs fetching the same commit at once never share (or delete) one
    folder: the second rename finds the data in place and drops its own copy.
    Git credentials for a private ``dvc_repo`` come from the environment
    (``IHL_GIT_USERNAME``, ``IHL_GIT_TOKEN``: the pipeline's git secret), never from the
    URL, and no URL is printed or stored with credentials in it.
    ``image`` is not read: as an input it puts the image reference in the cache key.
    File digests are kept in ``volume/cache/fingerprints`` by (path, size, mtime), so
    an unchanged dataset is not read again; images are checked, not decoded.
    """
    import hashlib
    import os
    from pathlib import Path

    from ihl.edge.urls import redact, with_git_credentials
    from ihl.files import replacing_folder
    from ihl.prepare import prepare as prepare_dataset

    source = {"data_source": data_source}
    if data_source == "volume":
        root = Path(volume) / data_path
    elif data_source == "dvc":
        if not dvc_repo:
            raise ValueError("data_source 'dvc' needs dvc_repo (a git URL or path)")
        from dvc.api import DVCFileSystem

        shown = redact(dvc_repo)
        url = with_git_credentials(
            dvc_repo, os.environ.get("IHL_GIT_USERNAME", ""), os.environ.get("IHL_GIT_TOKEN", "")
        )
        try:  # git's and DVC's errors quote the URL, credentials included
            fs = DVCFileSystem(url, rev=dvc_rev or None)
            commit = fs.repo.get_rev()
        except Exception as err:
            raise RuntimeError(f"cannot read {shown}: {redact(str(err))}") from None
        root = Path(volume) / "dvc" / commit / data_path
        if not root.is_dir():
            print(f"fetching {data_path} from {shown} at {commit} to {root}")
            try:
                with replacing_folder(root) as partial:
                    fs.get(data_path.rstrip("/") + "/", f"{partial}/", recursive=True)
            except FileExistsError:
                if not root.is_dir():  # not another run's download that finished first
                    raise
        source |= {"dvc_repo": shown, "dvc_rev": dvc_rev, "commit": commit}
    else:
        raise ValueError(f"unknown data_source {data_source!r}; expected 'volume' or 'dvc'")
    # Digests of unchanged files (same path, size, mtime) are reused from the last run.
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    cache = Path(volume) / "cache" / "fingerprints" / f"{key}.json"
    summary = prepare_dataset(dataset, root.resolve(), Path(prepared.path), fingerprint_cache=cache)
    prepared.metadata.update({**summary, **source, "dataset": dataset, "root": str(root.resolve())})
