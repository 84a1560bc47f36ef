"""What ``flwr-multilevel certs`` is given, checked before anything is written.

* Hosts per hub: ``hub-<d>=HOST[,HOST...]``. A site's certificates name
  only its own hosts, plus ``localhost`` and ``127.0.0.1`` (its SuperExec and
  the operator's ``flwr`` reach the SuperLink there). Identity names
  (``hub-<d>``, ``superlink-<d>``) are never hosts: a host ``hub-1`` in hub
  0's certificate would let it pass for hub 1.
* Counts: hubs and workers within bounds, before any key is made.
* The folder: a new folder in an existing, writable parent, or an existing
  writable folder without certificates; existing certificates are replaced
  only with ``force``, after moving them to a backup folder.

Errors are :class:`~flwr_multilevel.errors.ConfigError` (one line, exit 2).
"""

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from flwr_multilevel.errors import ConfigError

LOOPBACK = ("localhost", "127.0.0.1")
MAX_HUBS = 1000
MAX_KEYS = 10_000  # SuperNode keys in one federation (one per worker)
IDENTITY = re.compile(r"(hub|superlink)-\d+", re.IGNORECASE)
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
_ENTRY = re.compile(r"(?:hub-)?(\d+)=(.*)")
OWN_FILES = ("ca.key", "ca.pem")  # with every hub-<d>/: what a run of `certs` writes


def check_host(name: str) -> str:
    """Return ``name`` if it is an IP address or a DNS name, and not an identity.

    Raises
    ------
    ConfigError
        ``--host``: anything else (wildcards, URLs, ``hub-1``).

    Examples
    --------
    >>> check_host("10.0.0.5"), check_host("hub-0.example.org")
    ('10.0.0.5', 'hub-0.example.org')
    >>> check_host("hub-1")
    Traceback (most recent call last):
    ...
    flwr_multilevel.errors.ConfigError: --host: 'hub-1' is an identity name, not a host ...
    """
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    if IDENTITY.fullmatch(name):
        raise ConfigError(
            "--host",
            f"{name!r} is an identity name, not a host (a certificate naming it could pass for "
            "that hub); use the site's DNS name or IP address",
        )
    labels = name.rstrip(".").split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ConfigError("--host", f"expected a DNS name or an IP address, got {name!r}")
    return name


def site_hosts(hosts: Sequence[str]) -> list[str]:
    """Return a site's checked hosts followed by the loopback names, each once.

    Examples
    --------
    >>> site_hosts(["10.0.0.5", "127.0.0.1"])
    ['10.0.0.5', '127.0.0.1', 'localhost']
    >>> site_hosts([])
    ['localhost', '127.0.0.1']
    """
    return list(dict.fromkeys([*(check_host(h) for h in hosts), *LOOPBACK]))


def parse_hub_hosts(entries: Sequence[str]) -> dict[int, list[str]]:
    """Return the checked hosts per hub of ``--host`` entries ``hub-<d>=HOST[,HOST...]``.

    Repeated entries for one hub add up; every hub from 0 to the highest one
    named must have an entry (``<d>=HOST`` is short for ``hub-<d>=HOST``).

    Raises
    ------
    ConfigError
        ``--host``: an entry of another form, a bad host, or a hub left out.

    Examples
    --------
    >>> parse_hub_hosts(["hub-0=10.0.0.5", "hub-1=10.0.0.6,hub-1.example"])
    {0: ['10.0.0.5'], 1: ['10.0.0.6', 'hub-1.example']}
    """
    given: dict[int, list[str]] = {}
    for entry in entries:
        match = _ENTRY.fullmatch(entry.strip())
        names = [n.strip() for n in match.group(2).split(",") if n.strip()] if match else []
        if match is None or not names:
            raise ConfigError(
                "--host", f"expected hub-<d>=HOST[,HOST...] such as hub-0=10.0.0.5, got {entry!r}"
            )
        if int(match.group(1)) >= MAX_HUBS:
            raise ConfigError("--host", f"expected hubs 0..{MAX_HUBS - 1}, got {entry!r}")
        given.setdefault(int(match.group(1)), []).extend(names)
    missing = [d for d in range(max(given, default=-1) + 1) if d not in given]
    if missing:
        raise ConfigError("--host", f"expected an entry for every hub, hub-{missing[0]} has none")
    return {d: [check_host(h) for h in given[d]] for d in sorted(given)}


def check_counts(num_hubs: int, workers: int | Sequence[int]) -> list[int]:
    """Return the worker count of each hub, checked against the bounds.

    Raises
    ------
    ConfigError
        ``--hubs`` outside 1..1000, a worker count below 1, one count per
        hub expected, or more than 10000 workers in all.

    Examples
    --------
    >>> check_counts(2, 3), check_counts(2, [1, 4])
    ([3, 3], [1, 4])
    """
    if not 1 <= num_hubs <= MAX_HUBS:
        raise ConfigError("--hubs", f"expected an integer in 1..{MAX_HUBS}, got {num_hubs}")
    counts = [workers] * num_hubs if isinstance(workers, int) else list(workers)
    if len(counts) != num_hubs:
        raise ConfigError(
            "--workers", f"expected one count, or one per hub ({num_hubs}), got {len(counts)}"
        )
    if any(c < 1 for c in counts):
        raise ConfigError("--workers", f"expected integers >= 1, got {min(counts)}")
    if sum(counts) > MAX_KEYS:
        raise ConfigError(
            "--workers", f"expected at most {MAX_KEYS} workers in all, got {sum(counts)}"
        )
    return counts


def existing_certificates(folder: Path) -> list[Path]:
    """Return what an earlier ``certs`` wrote in ``folder`` (``ca.*``, ``hub-<d>/``)."""
    if not folder.is_dir():
        return []
    own = [folder / name for name in OWN_FILES if os.path.lexists(folder / name)]
    hubs = [p for p in folder.glob("hub-*") if re.fullmatch(r"hub-\d+", p.name)]
    return own + sorted(hubs)


def writable(path: Path) -> bool:
    """Return whether ``path`` may be written: permitted, and not marked read-only (mode).

    The mode counts even where the permission check passes anyway (as root).
    """
    return os.access(path, os.W_OK | os.X_OK) and bool(path.stat().st_mode & 0o222)


def check_cert_folder(folder: str | Path, force: bool = False) -> Path:
    """Check that certificates may be written to ``folder``; change nothing.

    Raises
    ------
    ConfigError
        ``OUT_DIR``: a file, a link, a read-only folder, a missing parent,
        or certificates already there without ``force``.
    """
    text = str(folder)
    path = Path(text).expanduser().absolute()
    if not text.strip() or "\x00" in text:
        raise ConfigError("OUT_DIR", f"expected a folder name, got {text!r}")
    if path.is_symlink():
        raise ConfigError("OUT_DIR", f"expected a folder, {text!r} is a symbolic link")
    if path.exists():
        if not path.is_dir():
            raise ConfigError("OUT_DIR", f"expected a folder, {text!r} is a file")
        if not writable(path):
            raise ConfigError("OUT_DIR", f"expected a writable folder, {text!r} is read-only")
        found = existing_certificates(path)
        if found and not force:
            raise ConfigError(
                "OUT_DIR",
                f"{text!r} already holds certificates ({found[0].name}); pass --force to replace "
                "them (the old ones are moved to OUT_DIR/backup-<time>/ first)",
            )
        return path
    if not path.parent.is_dir():
        raise ConfigError("OUT_DIR", f"expected an existing parent folder, {str(path.parent)!r}")
    if not writable(path.parent):
        raise ConfigError("OUT_DIR", f"cannot create {text!r}: {str(path.parent)!r} is read-only")
    return path


def backup_certificates(folder: Path) -> Path | None:
    """Move what an earlier ``certs`` wrote into ``folder/backup-<time>/``; return it (or None).

    The backup folder is private (mode 0700); moved keys keep their mode 0600.
    """
    found = existing_certificates(folder)
    if not found:
        return None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    backup = folder / f"backup-{stamp}"
    backup.mkdir(mode=0o700)
    for path in found:
        path.rename(backup / path.name)
    return backup


def hosts_per_hub(num_hubs: int, hosts: Mapping[int, Sequence[str]] | None) -> list[list[str]]:
    """Return each hub's certificate hosts: its own (checked) plus loopback; all-loopback if None.

    Raises
    ------
    ConfigError
        ``--host``: hosts given for another number of hubs than ``num_hubs``.

    Examples
    --------
    >>> hosts_per_hub(2, None)
    [['localhost', '127.0.0.1'], ['localhost', '127.0.0.1']]
    >>> hosts_per_hub(1, {0: ["10.0.0.5"]})
    [['10.0.0.5', 'localhost', '127.0.0.1']]
    """
    if hosts is None:
        return [site_hosts([]) for _ in range(num_hubs)]
    if sorted(hosts) != list(range(num_hubs)):
        raise ConfigError(
            "--host", f"expected hosts for hubs 0..{num_hubs - 1}, got hubs {sorted(hosts)}"
        )
    return [site_hosts(hosts[d]) for d in range(num_hubs)]
