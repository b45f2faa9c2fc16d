"""Which framework builds run on which GPUs: the architectures a CUDA build has kernels for,
against a GPU's compute capability, and the PyTorch build the set-up installs for a
machine's GPUs.

Facts only, no framework: the set-up runs this file as a script before any framework is
installed (``nvidia-smi --query-gpu=compute_cap`` piped into ``builds.py torch-pip``), the
runner checks data-declared builds (ONNX Runtime) before a run, and the PyTorch worker checks
the installed build's ``torch.cuda.get_arch_list()`` when it starts.

Architecture names are written as ``torch.cuda.get_arch_list()`` writes them: ``sm_XY``, a
binary (SASS) for compute capability X.Y, which runs on GPUs X.Z with Z >= Y (same major);
``sm_XYa``, a binary with architecture-specific features, which runs on X.Y only; and
``compute_XY``, PTX, which the driver compiles for any GPU of capability X.Y or newer.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Capability = tuple[int, int]

_ARCH_RE = re.compile(r"^(sm|compute)_(\d+)(\d)([af]?)$")


def parse_arch(arch: str) -> tuple[str, Capability, str]:
    """``sm_86`` -> ``("sm", (8, 6), "")``; ``compute_120`` -> ``("compute", (12, 0), "")``."""
    match = _ARCH_RE.match(arch.strip())
    if match is None:
        raise ValueError(f"not a CUDA architecture name: {arch!r}")
    kind, major, minor, suffix = match.groups()
    return kind, (int(major), int(minor)), suffix


def runs_on(archs: Iterable[str], capability: Capability) -> bool:
    """Whether a build with kernels for ``archs`` runs on a GPU of ``capability``."""
    for arch in archs:
        kind, built, suffix = parse_arch(arch)
        if kind == "compute" and capability >= built:
            return True
        if kind == "sm" and suffix == "a" and capability == built:
            return True
        if kind == "sm" and suffix != "a" and built[0] == capability[0] and built <= capability:
            return True
    return False


def cap_text(capability: Capability) -> str:
    return f"{capability[0]}.{capability[1]}"


def parse_capability(text: str) -> Capability:
    """``7.0`` (as nvidia-smi's ``compute_cap`` writes it) -> ``(7, 0)``."""
    major, sep, minor = text.strip().partition(".")
    if not (sep and major.isdigit() and minor.isdigit()):
        raise ValueError(f"not a compute capability: {text!r}")
    return int(major), int(minor)


def arch_refusal(
    framework: str,
    archs: Sequence[str],
    capability: Capability,
    gpu_name: str,
    remedy: str | None = None,
) -> str | None:
    """None where ``framework`` (its name and build, as the message says it) runs on the
    GPU, else one line saying why not, and ``remedy`` when given."""
    if runs_on(archs, capability):
        return None
    have = ", ".join(archs) if archs else "none"
    message = (
        f"{framework} cannot run on {gpu_name} (compute capability {cap_text(capability)}): "
        f"its build has kernels for {have}"
    )
    return f"{message}; {remedy}" if remedy else message


@dataclass(frozen=True)
class TorchBuild:
    """A CUDA build of one PyTorch release on PyTorch's own package index."""

    #: The CUDA tag of the wheels' local version (``cu126``).
    cuda_tag: str
    #: Architectures of its kernels (``torch.cuda.get_arch_list()`` of the build).
    archs: tuple[str, ...]
    torch: str = "2.14.1"
    torchvision: str = "0.29.1"

    @property
    def index_url(self) -> str:
        return f"https://download.pytorch.org/whl/{self.cuda_tag}"

    def pip_args(self) -> list[str]:
        """``pip install`` arguments for this build of torch and torchvision."""
        return [
            f"torch=={self.torch}+{self.cuda_tag}",
            f"torchvision=={self.torchvision}+{self.cuda_tag}",
            "--index-url",
            self.index_url,
        ]


#: PyTorch 2.14's Linux x86 CUDA builds (its release support matrix), in the order the
#: set-up prefers them: the newest CUDA first; CUDA 12.6, the legacy build, where it alone
#: has the GPU's kernels (Volta, V100: compute capability 7.0; also Pascal and Maxwell).
#: CUDA 13 has no Volta kernels and PyTorch's CUDA 12.8 builds dropped them in 2.11; 2.15
#: drops the CUDA 12.6 build, so 2.14 is the last release that runs on a V100 (pyproject
#: keeps torch below 2.15).
TORCH_BUILDS: tuple[TorchBuild, ...] = (
    TorchBuild("cu130", ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")),
    TorchBuild("cu126", ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")),
)

#: ONNX Runtime's CUDA 12 GPU wheels for Linux x86 (onnxruntime-gpu on PyPI): SASS for
#: 6.0 to 9.0 and PTX for 9.0 (its packaging pipeline's CUDA architectures).
ORT_GPU_ARCHS: tuple[str, ...] = (
    "sm_60",
    "sm_70",
    "sm_75",
    "sm_80",
    "sm_86",
    "sm_90",
    "compute_90",
)


class NoBuild(ValueError):
    """No known build covers every GPU of the machine."""


def choose_torch_build(
    capabilities: Sequence[Capability], builds: Sequence[TorchBuild] = TORCH_BUILDS
) -> TorchBuild:
    """The first of ``builds`` whose kernels run on every GPU of ``capabilities``."""
    if not capabilities:
        raise NoBuild("no GPU capability given")
    for build in builds:
        if all(runs_on(build.archs, cap) for cap in capabilities):
            return build
    caps = ", ".join(sorted({cap_text(c) for c in capabilities}))
    known = "; ".join(f"{b.cuda_tag}: {', '.join(b.archs)}" for b in builds)
    raise NoBuild(
        f"no PyTorch {builds[0].torch} build runs on every GPU here (compute capability "
        f"{caps}); its builds have kernels for {known}"
    )


def torch_remedy(capability: Capability) -> str:
    """What to install instead, for a GPU the installed PyTorch cannot run on."""
    try:
        build = choose_torch_build([capability])
    except NoBuild:
        return f"no PyTorch {TORCH_BUILDS[0].torch} build has kernels for it"
    return f"install the {build.cuda_tag} build (`make setup` picks it from nvidia-smi)"


def main(argv: Sequence[str] | None = None) -> int:
    """``builds.py torch-pip [CAP ...]``: the pip arguments of the PyTorch build for GPUs of
    these compute capabilities (default: one a line on stdin, as nvidia-smi writes them)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "torch-pip":
        print("usage: builds.py torch-pip [CAPABILITY ...]", file=sys.stderr)
        return 2
    texts = args[1:] or [line for line in sys.stdin.read().split() if line]
    try:
        build = choose_torch_build([parse_capability(t) for t in texts])
    except ValueError as exc:
        print(f"builds.py: {exc}", file=sys.stderr)
        return 2
    print(" ".join(build.pip_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
