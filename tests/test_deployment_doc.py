"""docs/deployment.md, "On D machines", runs as written: two sites on this machine, then `collect`.

How the doc is run:

* Its command blocks marked ``<!-- on: the trusted machine -->`` or ``<!-- on: each site -->``
  run in the doc's order, each in the shell of its machine(s); a site block on every site
  at once, as the sites' operators would.
* A machine is a folder (its ``$HOME``) with one ``bash -e`` shell that runs its blocks one
  after the other, so exports, the working folder and background jobs carry over as in a
  terminal. Every shell is started by PID and stopped with everything below it.
* Substituted, where the doc says the operator substitutes: the example addresses
  ``10.0.0.5`` and ``10.0.0.6`` become the sites ``127.0.0.2`` and ``127.0.0.3`` (distinct
  loopback addresses, so each site has its own addresses and ports); in a site's shell the
  line ``export D=... HOST=...`` gets that site's hub and address.
* Emulated, being the network between machines: ``ssh HOST CMD`` runs CMD in HOST's folder,
  ``scp`` copies between the machines' folders. Everything else runs as typed.

Then the results folder `collect` wrote equals `flwr-multilevel deploy`'s on the same config:
the same history rows to 1e-6.
"""

import csv
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from flwr_multilevel.deploy.processes import ProcessGroup
from flwr_multilevel.deploy.runner import deploy
from flwr_multilevel.experiment.config import validate
from flwr_multilevel.experiment.prepare import prepare

pytestmark = pytest.mark.deployment

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "deployment.md"
SITES = {"10.0.0.5": "127.0.0.2", "10.0.0.6": "127.0.0.3"}  # the doc's hub 0, hub 1 -> here
TRUSTED, EACH_SITE = "the trusted machine", "each site"
BLOCK = re.compile(r"^<!-- on: (.+?) -->\n```bash\n(.*?)^```", re.S | re.M)
SITE_LINE = re.compile(r"export D=\d+ HOST=\S+")
FIXED_PORTS = [(site, port) for site in SITES.values() for port in (9092, 9093, 9100)]
FIXED_PORTS += [("127.0.0.1", 9094 + i) for i in range(4)]  # the SuperNodes' own ports
BLOCK_S = 900  # the longest block: both hubs' `flwr run` (4 rounds)
PREAMBLE = """
remote() { case "$1" in *:*) echo "$MACHINES/${1%%:*}/${1#*:}" ;; *) echo "$1" ;; esac; }
scp() {
  local a args=()
  for a in "$@"; do [ "$a" = -r ] || args+=("$(remote "$a")"); done
  cp -r "${args[@]}"
}
ssh() { local host=$1; shift; (cd "$MACHINES/$host" && HOME="$MACHINES/$host" bash -ec "$*"); }
"""


def blocks() -> list[tuple[str, str]]:
    """The doc's (machine, commands) blocks, in order, addresses substituted."""
    found = []
    for where, body in BLOCK.findall(DOC.read_text()):
        for example, here in SITES.items():
            body = body.replace(example, here)
        found.append((where, body))
    return found


class Shell:
    """One machine's shell: a ``bash -e`` fed block by block through its stdin."""

    def __init__(self, group: ProcessGroup, name: str, home: Path, machines: Path) -> None:
        home.mkdir(parents=True)
        self.name, self.log, self.sent = name, home / "shell.log", 0
        env = {"HOME": str(home), "MACHINES": str(machines), "PYTHONPATH": str(ROOT)}
        argv = ["bash", "--noprofile", "--norc", "-e"]
        self.proc = group.start(
            name, argv, env=env, log_path=self.log, cwd=home, stdin=subprocess.PIPE
        )
        self.write(PREAMBLE)

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def run(self, commands: str) -> str:
        """Send ``commands``; return the marker the shell prints once they all ran."""
        self.sent += 1
        marker = f"== block {self.sent} done =="
        self.write(f"{commands}\necho '{marker}'\n")
        return marker

    def wait(self, marker: str, timeout: float = BLOCK_S) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.log.read_text(errors="replace"):
            tail = self.log.read_text(errors="replace")[-3000:]
            assert self.proc.poll() is None, f"{self.name}: a command failed:\n{tail}"
            assert time.monotonic() < deadline, f"{self.name}: still running:\n{tail}"
            time.sleep(0.5)


def site_commands(body: str, hub: int, address: str) -> str:
    return SITE_LINE.sub(f"export D={hub} HOST={address}", body)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


def test_the_doc_shows_each_step_on_its_machines():
    where = [w for w, _ in blocks()]
    assert where == [TRUSTED, EACH_SITE, EACH_SITE, TRUSTED]
    site_blocks = [b for w, b in blocks() if w == EACH_SITE]
    assert len(SITE_LINE.findall(site_blocks[0])) == 1  # what each site's operator sets


def test_the_doc_runs_as_written_and_equals_deploy(tmp_path):
    busy = [f"{h}:{p}" for h, p in FIXED_PORTS if port_in_use(h, p)]
    if busy:
        pytest.fail(f"the doc's ports are taken by another process: {busy}")
    machines = tmp_path / "machines"
    with ProcessGroup() as group:
        trusted = Shell(group, "trusted", machines / "trusted", machines)
        sites = [
            Shell(group, f"site-{d}", machines / address, machines)
            for d, address in enumerate(SITES.values())
        ]
        for where, body in blocks():
            if where == TRUSTED:
                trusted.wait(trusted.run(body))
                continue
            markers = [
                shell.run(site_commands(body, d, address))
                for d, (shell, address) in enumerate(zip(sites, SITES.values(), strict=True))
            ]
            for shell, marker in zip(sites, markers, strict=True):
                shell.wait(marker)
    for d, address in enumerate(SITES.values()):
        site = machines / address / "mllsgd"
        assert not (site / "certs" / "ca.key").exists()  # the CA key stayed on the trusted machine
        assert sorted(p.name for p in (site / "certs").iterdir()) == ["ca.pem", f"hub-{d}"]
    results = machines / "trusted" / "results"
    for name in ("network.json", "history.csv", "rounds.csv", "summary.json", "config.yaml"):
        assert (results / name).is_file(), name
    assert list(results.glob("*.png"))

    cfg = OmegaConf.load(results / "config.yaml")
    cfg.output_dir = str(tmp_path / "deploy")
    outcome = deploy(prepare(validate(cfg)))  # type: ignore[arg-type]
    assert outcome.failed == {}
    got, want = rows(results / "history.csv"), rows(tmp_path / "deploy" / "history.csv")
    assert list(got[0]) == list(want[0]) and len(got) == len(want) == 3  # rounds 0, 2, 4
    for a, b in zip(got, want, strict=True):
        for key in set(a) - {"elapsed_s"}:
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-6), key
