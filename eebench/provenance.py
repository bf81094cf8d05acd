"""What a run was made with, recorded in its status.json (``provenance``) so that a reproduction can
say which versions, code, weights and data stand behind a number: eebench's version and git commit
(dirty or not), the libraries' versions, Python, the device, and the model's resolved revision (the
hub commit of the snapshot loaded, or the sha256 of a local folder's weights). Each split's source
and fingerprint are recorded beside it (Status.data)."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("torch", "transformers", "accelerate", "datasets", "numpy")
"""Versions recorded; ``compare`` warns when runs differ in them."""

COMPARED = ("eebench", "eebench_commit", *LIBRARIES)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: Path | None = None) -> str | None:
    """The commit of eebench's checkout, with ``+dirty`` when it has uncommitted changes; None for
    an installed wheel (no checkout)."""
    folder = folder or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def weights_sha256(folder: Path) -> str | None:
    """sha256 over a model folder's weight files (safetensors, else PyTorch bins), in name order."""
    files = sorted(Path(folder).glob("*.safetensors")) or sorted(Path(folder).glob("*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def model_revision(cfg) -> dict:
    """Where the backbone's weights came from: ``{"kind": "hub", "id", "commit"}`` (the snapshot in
    the local hub cache), ``{"kind": "folder", "path", "weights_sha256"}``, or ``{"kind": "random"}``."""
    from eebench.model.build import resolve_model_path

    if cfg.source == "random":
        return {"kind": "random", "model_type": cfg.name}
    where = resolve_model_path(cfg)
    if Path(where).is_dir():
        return {"kind": "folder", "path": str(Path(where).resolve()), "weights_sha256": weights_sha256(Path(where))}
    commit = None
    try:
        from huggingface_hub import snapshot_download

        commit = Path(snapshot_download(where, revision=cfg.revision, local_files_only=True)).name
    except Exception:  # not in the cache: the revision asked for is all that is known
        commit = cfg.revision
    return {"kind": "hub", "id": where, "revision": cfg.revision, "commit": commit}


def collect(model_cfg, device_fields: dict) -> dict:
    """The provenance record of a run started now."""
    return {"eebench": _version("eebench"), "eebench_commit": git_commit(),
            **{name: _version(name) for name in LIBRARIES},
            "python": platform.python_version(), "platform": platform.platform(),
            **device_fields, "model": model_revision(model_cfg)}


def differences(records: dict[str, dict | None]) -> list[str]:
    """One line per recorded version that differs between runs (``records``: run name → provenance)."""
    known = {name: p for name, p in records.items() if p}
    lines = []
    for key in COMPARED:
        values = {name: p.get(key) for name, p in known.items()}
        if len(set(values.values())) > 1:
            lines.append(f"{key} differs: " + ", ".join(f"{name} {value}" for name, value in values.items()))
    missing = [name for name, p in records.items() if not p]
    if missing and known:
        lines.append(f"no provenance recorded for {', '.join(missing)} (trained by an older eebench)")
    return lines
