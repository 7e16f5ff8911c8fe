"""A real TorchServe process for tests: free loopback ports, token auth on, stopped for sure.

``TorchServe(workdir, model_store, ...)`` writes a config from the repository's
serving/config.properties (or ``config``) with free 127.0.0.1 ports (and any overrides, e.g.
``enable_model_api="true"`` for registering archives; the gRPC ports are
free ones too), starts
``torchserve --foreground`` in ``workdir`` with a private TMPDIR (TorchServe
keeps its pid file in the temp folder, which other test sessions on the
machine share) and reads the keys TorchServe writes to ``key_file.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from servers import free_port

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "serving" / "config.properties"


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.lstrip().startswith("#")}


class TorchServe:
    def __init__(self, workdir: Path, model_store: Path, config: Path = CONFIG, **overrides: str):
        self.workdir = Path(workdir)
        self.model_store = Path(model_store)
        self.workdir.mkdir(parents=True, exist_ok=True)
        ports = {
            name: free_port()
            for name in ("inference", "management", "metrics", "grpc_inference", "grpc_management")
        }
        self.inference_url = f"http://127.0.0.1:{ports['inference']}"
        self.management_url = f"http://127.0.0.1:{ports['management']}"
        self.metrics_url = f"http://127.0.0.1:{ports['metrics']}"
        settings = _properties(Path(config).read_text()) | {
            "inference_address": self.inference_url,
            "management_address": self.management_url,
            "metrics_address": self.metrics_url,
            "grpc_inference_port": str(ports["grpc_inference"]),
            "grpc_management_port": str(ports["grpc_management"]),
            **overrides,
        }
        self.token_auth = settings.get("disable_token_authorization", "false") != "true"
        self.config = self.workdir / "config.properties"
        self.config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        self.log = self.workdir / "torchserve.log"
        self.process: subprocess.Popen | None = None

    def _env(self) -> dict[str, str]:
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
        return env | {
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.workdir / "logs"),
            "METRICS_LOCATION": str(self.workdir / "logs"),
            # One torch thread per worker: the tests share a small machine.
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
        }

    def _command(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "torchserve"), *args]

    def start(self, timeout: float = 180.0) -> TorchServe:
        """Start and wait until every model it loaded has a ready worker."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self._command(
                    "--start",
                    "--foreground",
                    "--ncs",
                    "--ts-config",
                    str(self.config),
                    "--model-store",
                    str(self.model_store),
                ),  # fmt: skip
                cwd=self.workdir,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited early:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"TorchServe not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def _get(self, url: str, api: str):
        request = urllib.request.Request(url, headers=self.headers(api))
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def _ready(self) -> bool:
        """Healthy, and every registered model has a worker that finished loading it."""
        if self.token_auth and not (self.workdir / "key_file.json").is_file():
            return False
        try:
            if self._get(f"{self.inference_url}/ping", "inference").get("status") != "Healthy":
                return False
            for model in self._get(f"{self.management_url}/models", "management")["models"]:
                [described] = self._get(
                    f"{self.management_url}/models/{model['modelName']}", "management"
                )
                if not any(w.get("status") == "READY" for w in described.get("workers", [])):
                    return False
            return True
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False

    def keys(self) -> dict[str, str]:
        """{"inference": key, "management": key} from key_file.json; an expired key is
        renewed first with the API key (TorchServe then rewrites the file)."""
        data = json.loads((self.workdir / "key_file.json").read_text())
        for api in ("inference", "management"):
            expires = datetime.strptime(data[api]["expiration time"][:19], "%Y-%m-%dT%H:%M:%S")
            if expires.replace(tzinfo=UTC) <= datetime.now(UTC):
                renew = urllib.request.Request(
                    f"{self.management_url}/token?type={api}",
                    method="POST",
                    headers={"Authorization": f"Bearer {data['API']['key']}"},
                )
                urllib.request.urlopen(renew, timeout=5).close()
                data = json.loads((self.workdir / "key_file.json").read_text())
        return {api: data[api]["key"] for api in ("inference", "management")}

    def headers(self, api: str = "inference") -> dict[str, str]:
        """The Authorization header for ``api`` (none when token auth is off)."""
        return {"Authorization": f"Bearer {self.keys()[api]}"} if self.token_auth else {}

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        logs = self.workdir / "logs" / "model_log.log"
        if logs.is_file():
            text += "\n--- model_log.log ---\n" + logs.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def worker_starts(self) -> int:
        """How many times a worker process was started (a restart counts again)."""
        logs = self.workdir / "logs" / "ts_log.log"
        text = logs.read_text(errors="replace") if logs.is_file() else ""
        return text.count("Torch worker started.")

    def worker_pids(self) -> list[int]:
        """The model workers (TorchServe's Python processes) under this server, from /proc."""
        parents, commands = {}, {}
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
                commands[int(entry.name)] = (entry / "cmdline").read_bytes()
            except (ValueError, OSError):
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        family, grown = {self.process.pid}, True
        while grown:
            more = {pid for pid, parent in parents.items() if parent in family} - family
            family, grown = family | more, bool(more)
        return sorted(pid for pid in family if b"model_service_worker" in commands.get(pid, b""))

    def worker_rss(self) -> int:
        """Resident bytes of this server's model workers, from /proc/PID/status."""
        total = 0
        for pid in self.worker_pids():
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(
                next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
            )
        return total * 1024

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            subprocess.run(
                self._command("--stop", "--foreground"),
                cwd=self.workdir, env=self._env(), capture_output=True, timeout=90,
            )  # fmt: skip
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Workers are children of the Java frontend: end any left in our session, by group.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process = None
        shutil.rmtree(self.workdir / "tmp", ignore_errors=True)
