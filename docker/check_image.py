"""Checks run inside a built image (docker/check.Dockerfile), as the image's own user.

Each subcommand is one RUN step, so a failing build names the check that failed:

    user     the process runs as a non-root user with a writable home
    cli      `ihl --help` lists the stages
    predict  synthetic images -> one-epoch `ihl train` and `ihl detector train` -> `ihl
             predict` on the annotated boxes gives finite keypoints for each
    export   `ihl export` packs that checkpoint and detector into a TorchServe archive and
             KServe folder
    imports  the packages the Kubeflow components (and, in serve, TorchServe) need import
    kfp      a lightweight component runs through KFP's executor with nothing installed
    clean    no dev tools, no C compiler or build headers, no tests, data, checkpoints or
             VCS folders anywhere in the image
    serve    the image's ENTRYPOINT and CMD serve that archive, its HEALTHCHECK passes, a
             photo gets 17 keypoints, only the inference API listens beyond loopback,
             SIGTERM stops the launcher and the Java server, and nothing was written
             outside /tmp and the home folder (the pods' emptyDirs on a read-only root)

Only the standard library is used before the image's packages are under test, and there
is no ``from __future__ import annotations``: kfp reads a component's annotations as types.
"""

import base64
import importlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# Fixed, so that later steps find what earlier ones made (each RUN sees the previous layer).
WORK = Path(tempfile.gettempdir()) / "ihl-check"
DEV_TOOLS = ("pytest", "ruff", "moto", "uv")
# What the deps stage installs to build xtcocotools and purges in the same step.
COMPILERS = ("gcc", "cc", "c++", "x86_64-linux-gnu-gcc", "aarch64-linux-gnu-gcc")
BUILD_PACKAGES = ("gcc", "libc6-dev", "python3-dev", "python3.11-dev", "libpython3.11-dev")
BUILD_HEADERS = ("/usr/include/stdio.h", "/usr/include/python3.11/Python.h")
"""libc's and Debian's Python headers; the official base keeps its own in /usr/local."""
# Outside these trees nothing may look like project data, weights or test files.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/usr", "/opt/venv")
DATA_SUFFIXES = {".jpg", ".jpeg", ".png", ".pt", ".pth", ".ckpt", ".mar", ".npz", ".h5"}
VCS_OR_PROJECT_DIRS = {".git", ".dvc", "tests", "runs", "data", "benchmarks", ".venv"}


def fail(message: str) -> None:
    sys.exit(f"CHECK FAILED: {message}")


def run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        fail(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def check_user() -> None:
    if os.getuid() == 0 or os.getgid() == 0:
        fail(f"runs as uid {os.getuid()} gid {os.getgid()}; expected a non-root user")
    home = Path.home()
    if not os.access(home, os.W_OK):
        fail(f"home {home} is not writable by uid {os.getuid()}")
    print(f"uid {os.getuid()} gid {os.getgid()}, home {home} writable")


def check_cli() -> None:
    usage = run("ihl", "--help")
    missing = [c for c in ("synth", "train", "evaluate", "predict", "data") if c not in usage]
    if missing:
        fail(f"`ihl --help` does not list {missing}:\n{usage}")
    print(usage)


def annotated_boxes(data: Path) -> dict[str, list[list[float]]]:
    """The validation images' person boxes (x, y, w, h) by file name."""
    val = json.loads((data / "annotations" / "person_keypoints_val2017.json").read_text())
    names = {image["id"]: image["file_name"] for image in val["images"]}
    boxes: dict[str, list[list[float]]] = {name: [] for name in names.values()}
    for person in val["annotations"]:
        boxes[names[person["image_id"]]].append(person["bbox"])
    return boxes


def check_predict() -> None:
    data, run_dir, pred = WORK / "synth", WORK / "run", WORK / "pred"
    run("ihl", "synth", str(data), "--train", "4", "--val", "2", "--size", "160x120")
    detector = ("detector.min_size=96", "detector.max_size=128", "detector.epochs=1")
    sets = [a for item in detector for a in ("--set", item)]
    run("ihl", "detector", "train", str(data), "-o", str(WORK / "detector"), *sets)
    tiny = (
        f"data.root={data}",
        "model.input_size=[64, 64]",
        "model.deconv_channels=32",
        "loss.wasserstein=none",
        "train.epochs=1",
        "train.batch_size=2",
        "train.warmup_iters=1",
    )
    sets = [a for item in tiny for a in ("--set", item)]
    run("ihl", "train", "-c", "sample", "-o", str(run_dir), "--device", "cpu", *sets)
    checkpoint = run_dir / "checkpoints" / "best.pt"
    # The one-epoch detector finds anyone or no one: predict on the annotated boxes.
    val = json.loads((data / "annotations" / "person_keypoints_val2017.json").read_text())
    given = [
        {"image_id": p["image_id"], "category_id": 1, "bbox": p["bbox"], "score": 1.0}
        for p in val["annotations"]
    ]
    boxes = WORK / "boxes.json"
    boxes.write_text(json.dumps(given))
    images = str(data / "val2017")
    run("ihl", "predict", str(checkpoint), images, "-o", str(pred), "--boxes", str(boxes))
    results = json.loads((pred / "predictions.json").read_text())
    if len(results) != len(given):
        fail(f"expected one person per annotated box ({len(given)}), got {len(results)}")
    for person in results:
        values = person["keypoints"]
        if len(values) != 17 * 3 or not all(math.isfinite(v) for v in values):
            fail(f"bad keypoints for {person['file_name']}: {values}")
    print(f"trained one epoch and predicted {len(results)} people with 17 finite keypoints each")
    print("trained a one-epoch detector")


def check_export() -> None:
    out = WORK / "export"
    checkpoint = str(WORK / "run" / "checkpoints" / "best.pt")
    detector = str(WORK / "detector" / "detector.pt")
    run("ihl", "export", checkpoint, "--out", str(out), "--detector", detector)
    expected = ("model-store/ihl.mar", "config/config.properties", "model_card.md")
    missing = [name for name in expected if not (out / name).is_file()]
    if missing:
        fail(f"`ihl export` wrote no {missing} in {out}")
    size = (out / "model-store" / "ihl.mar").stat().st_size / 1e6
    print(f"exported {out}: ihl.mar ({size:.1f} MB), KServe config and model card")


def check_imports(target: str) -> None:
    modules = ["ihl", "torch", "torchvision", "kfp", "kfp.kubernetes", "dvc", "dvclive", "boto3"]
    modules += ["model_archiver"]
    if target == "serve":
        modules += ["ts"]
    for name in modules:
        importlib.import_module(name)
    print("imported", ", ".join(modules))
    # torchrun starts the multi-GPU training pods (PyTorchJob, pipeline train with GPUs).
    if shutil.which("torchrun") is None:
        fail("torchrun is not on PATH")
    if target == "serve":
        if shutil.which("torchserve") is None:
            fail("torchserve is not on PATH")
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        if java.returncode != 0 or '"17.' not in java.stderr:
            fail(f"expected a Java 17 runtime, `java -version` said:\n{java.stderr}")
        print(java.stderr.splitlines()[0])


def check_kfp() -> None:
    """What a Kubeflow pod does: the component's source, run by kfp's executor in this image."""
    from kfp import dsl, local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(WORK / "kfp"))

    @dsl.component(install_kfp_package=False)
    def joints(preset: str) -> int:
        from ihl.config import load

        return load(preset).model.num_joints

    task = joints(preset="sample")
    if task.output != 17:
        fail(f"the component returned {task.output!r}, expected 17 joints")
    print("kfp executor ran a component importing ihl: 17 joints")


def check_clean() -> None:
    found = [t for t in DEV_TOOLS if importlib.util.find_spec(t) or shutil.which(t)]
    if found:
        fail(f"dev tools present: {found}")
    build = [c for c in COMPILERS if shutil.which(c)]
    build += [h for h in BUILD_HEADERS if Path(h).exists()]
    listed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *BUILD_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n")
    build += [line.split()[0] for line in listed if line.endswith(" installed")]
    if build:
        fail(f"build tools left in the image: {build}")
    bad = []
    for root, dirs, files in os.walk("/"):
        if root.startswith(SYSTEM_TREES):
            dirs[:] = []
            continue
        bad += [f"{root}/{d}" for d in dirs if d in VCS_OR_PROJECT_DIRS]
        bad += [f"{root}/{f}" for f in files if Path(f).suffix.lower() in DATA_SUFFIXES]
        bad += [f"{root}/{f}" for f in files if f == "conftest.py" or f.startswith(".env")]
    package = Path(importlib.import_module("ihl").__file__).parent
    bad += [str(p) for p in package.rglob("*") if p.name in ("tests", "conftest.py")]
    if bad:
        fail("project data, tests or VCS files in the image:\n" + "\n".join(sorted(bad)))
    print(f"no {', '.join(DEV_TOOLS)}, compiler or build headers; no tests, data or VCS folders")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def session_processes(sid: int) -> dict[int, str]:
    """The live processes in session ``sid``: pid -> command name (from /proc)."""
    names = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            names[int(stat.parent.name)] = (stat.parent / "comm").read_text().strip()
    return names


def listening(pids: set[int]) -> dict[int, str]:
    """TCP ports the processes ``pids`` listen on -> the address each is bound to."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    bound = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            if len(words) == 16 and words[:12] == bytes(10) + b"\xff\xff":
                words = words[12:]  # an IPv4-mapped IPv6 address
            bound[int(port, 16)] = socket.inet_ntop(
                socket.AF_INET if len(words) == 4 else socket.AF_INET6, words
            )
    return bound


def check_exposure(ports: dict[int, int], pids: set[int]) -> None:
    """Only the inference API listens beyond loopback: TorchServe's key does not cover the
    metrics API, and nothing outside the container needs management."""
    bound = listening(pids)
    inference = ports[8080]
    if ports[8081] not in bound or ports[8082] not in bound:
        fail(f"management or metrics is not listening on {ports}: {bound}")
    exposed = {p: a for p, a in bound.items() if a not in ("127.0.0.1", "::1") and p != inference}
    if exposed:
        fail(f"listening beyond loopback (only the inference port {inference} may): {exposed}")
    print(f"listening: {bound}; only {inference} (inference) beyond loopback")


def written_since(start: float) -> list[str]:
    """Files and folders changed since ``start`` outside /tmp and the home folder: what a
    read-only root filesystem would have refused."""
    skip = ("/proc", "/sys", "/dev", tempfile.gettempdir(), str(Path.home()))
    found = []
    for root, dirs, files in os.walk("/"):
        if root.startswith(skip):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = os.path.join(root, name)
            try:
                if not path.startswith(skip) and os.lstat(path).st_mtime >= start:
                    found.append(path)
            except OSError:
                continue
    return found


def predict_over_http(port: int, data: Path) -> None:
    """POST a synthetic photo and its annotated boxes to the served model with TorchServe's
    inference key."""
    key = json.loads((WORK / "key_file.json").read_text())["inference"]["key"]
    photo, boxes = sorted(annotated_boxes(data).items())[0]
    image = base64.b64encode((data / "val2017" / photo).read_bytes()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predictions/ihl",
        data=json.dumps({"image": image, "boxes": boxes}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    deadline = time.monotonic() + 120
    while True:  # the model may still be loading after the server is healthy
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
            break
        except urllib.error.HTTPError as err:
            if err.code not in (404, 503) or time.monotonic() > deadline:
                fail(f"POST /predictions/ihl: {err.code} {err.read()[:500]!r}")
            time.sleep(1)
    persons = answer.get("persons", [])
    ok = [len(p["keypoints"]) == 17 and all(len(v) == 3 for v in p["keypoints"]) for p in persons]
    if len(persons) != len(boxes) or not all(ok):
        fail(f"expected {len(boxes)} persons with 17 [x, y, score] keypoints, got {answer}")
    print(f"served {photo} with {len(boxes)} boxes: {len(persons)} persons, 17 keypoints each")


def check_serve() -> None:
    """Start the image's ENTRYPOINT + CMD, poll its HEALTHCHECK command, then SIGTERM it.

    The build shares the host's network, so ports move to free ones: the image's
    TS_*_ADDRESS variables to one set, a copy of its config file to another, gRPC to a
    third. The health check probes the first set, so it passes only if those variables
    take effect.
    """
    cmd = json.loads(os.environ["IMAGE_ENTRYPOINT"] or "null") or []
    cmd += json.loads(os.environ["IMAGE_CMD"])
    health = json.loads(os.environ["IMAGE_HEALTHCHECK"])
    if health[0] != "CMD":
        fail(f"expected an exec-form HEALTHCHECK, got {health}")
    env_ports = dict(zip((8080, 8081, 8082), free_ports(3), strict=True))
    file_ports = dict(zip((8080, 8081, 8082), free_ports(3), strict=True))

    def move(text: str, moves: dict[int, int]) -> str:
        for old, new in moves.items():
            text = re.sub(rf":{old}\b", f":{new}", text)
        return text

    env = {k: move(v, env_ports) if k.startswith("TS_") else v for k, v in os.environ.items()}
    grpc = free_ports(2)
    env |= {"TS_GRPC_INFERENCE_PORT": str(grpc[0]), "TS_GRPC_MANAGEMENT_PORT": str(grpc[1])}
    config = Path(cmd[cmd.index("--ts-config") + 1])
    local = WORK / "config.properties"
    local.write_text(move(config.read_text(), file_ports))
    cmd[cmd.index("--ts-config") + 1] = str(local)
    cmd[cmd.index("--model-store") + 1] = str(WORK / "export" / "model-store")
    probe = [move(part, env_ports) for part in health[1:]]
    log_path = WORK / "torchserve.log"
    started = time.time()
    with log_path.open("w") as log:
        server = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=WORK, env=env, start_new_session=True
        )
    try:
        start, deadline = time.monotonic(), time.monotonic() + 120
        # Docker runs the health check in the WORKDIR, TorchServe's working directory.
        while subprocess.run(probe, capture_output=True, cwd=WORK, check=False).returncode:
            if server.poll() is not None or time.monotonic() > deadline:
                fail(f"{cmd} never became healthy:\n{log_path.read_text()}")
            time.sleep(1)
        print(f"{' '.join(cmd)}: healthy after {time.monotonic() - start:.0f} s")
        predict_over_http(env_ports[8080], WORK / "synth")
        running = session_processes(server.pid)
        check_exposure(env_ports, set(running))
        server.send_signal(signal.SIGTERM)
        stop = time.monotonic()
        server.wait(30)
        while session_processes(server.pid) and time.monotonic() - stop < 30:
            time.sleep(0.5)
        left = session_processes(server.pid)
        if left:
            fail(f"after SIGTERM to {cmd[0]}, still running: {sorted(left.values())}")
        print(f"SIGTERM stopped {sorted(running.values())} in {time.monotonic() - stop:.1f} s")
        written = written_since(started)
        if written:
            fail("TorchServe wrote outside /tmp and the home folder:\n" + "\n".join(written))
        print("TorchServe wrote only in /tmp and the home folder")
    except subprocess.TimeoutExpired:
        fail(f"{cmd[0]} ignored SIGTERM for 30 s")
    finally:
        for pid in session_processes(server.pid):
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    check, target = sys.argv[1], os.environ.get("TARGET", "train")
    WORK.mkdir(exist_ok=True)
    checks = {
        "user": check_user,
        "cli": check_cli,
        "predict": check_predict,
        "imports": lambda: check_imports(target),
        "export": check_export,
        "kfp": check_kfp,
        "clean": check_clean,
        "serve": check_serve,
    }
    checks[check]()


if __name__ == "__main__":
    main()
