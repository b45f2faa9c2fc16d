"""How a machine's GPUs are connected, from ``nvidia-smi topo -m``: NVLink (P3, P4d, P5) or
PCIe only (G4dn, G5, G6), which decides how data-parallel training scales across them."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

#: Link kinds in the matrix: NV# is a bonded set of # NVLinks; the rest are PCIe paths,
#: from the closest (one PCIe switch) to the farthest (across CPU sockets).
PCIE_LINKS = ("PIX", "PXB", "PHB", "NODE", "SYS")
_GPU_RE = re.compile(r"^GPU(\d+)$")
_NVLINK_RE = re.compile(r"^NV(\d+)$")


def parse_topology(text: str) -> dict[str, Any]:
    """The GPU-to-GPU links of a ``nvidia-smi topo -m`` matrix.

    Returns ``links`` (``"i-j"`` for i < j to the link code), ``nvlink`` (True when every
    pair is NVLink-connected, False when none is, ``"partial"`` otherwise, None with one
    GPU), ``nvlinks_min`` (the fewest bonded NVLinks between a pair) and ``gpus``.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line.split() for line in lines if line.split()[:1] == ["GPU0"]), None)
    if header is None:
        raise ValueError("no GPU matrix in the nvidia-smi topo output")
    columns = [int(m.group(1)) for m in map(_GPU_RE.match, header) if m]
    links: dict[str, str] = {}
    for line in lines:
        tokens = line.split()
        row = _GPU_RE.match(tokens[0]) if tokens else None
        if row is None or tokens == header:
            continue
        i = int(row.group(1))
        for j, code in zip(columns, tokens[1 : 1 + len(columns)], strict=False):
            if i < j:
                links[f"{i}-{j}"] = code
    nv = [_NVLINK_RE.match(code) for code in links.values()]
    counts = [int(m.group(1)) for m in nv if m]
    nvlink: bool | str | None
    if not links:
        nvlink = None
    elif len(counts) == len(links):
        nvlink = True
    else:
        nvlink = "partial" if counts else False
    return {
        "gpus": len(columns),
        "links": links,
        "nvlink": nvlink,
        "nvlinks_min": min(counts) if counts and len(counts) == len(links) else None,
    }


def interconnect(timeout_s: float = 10.0) -> dict[str, Any]:
    """This machine's GPU interconnect, with the raw matrix; ``available`` False and a
    reason when nvidia-smi is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"available": False, "reason": "nvidia-smi not found"}
    try:
        proc = subprocess.run(
            [smi, "topo", "-m"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"available": False, "reason": f"nvidia-smi topo -m: {exc}"}
    if proc.returncode != 0:
        return {"available": False, "reason": f"nvidia-smi topo -m exited {proc.returncode}"}
    try:
        parsed = parse_topology(proc.stdout)
    except ValueError as exc:
        return {"available": False, "reason": str(exc), "matrix": proc.stdout}
    return {"available": True, **parsed, "matrix": proc.stdout}
