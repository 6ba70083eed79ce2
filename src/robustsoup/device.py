"""Device choice for jobs (CUDA when present, else the CPU), the arithmetic a device runs fast
(precision and memory format), and GPU leases for concurrent jobs."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .facts import current_facts

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` fails clearly when there is none."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device; set device: auto or cpu")
        return torch.device("cuda")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ValueError(f"unknown device {preference!r}; expected auto, cpu or cuda")


# --- the C allocator on Linux ----------------------------------------------------------------
#
# glibc serves an allocation above its mmap threshold (128 KiB, raised only as large blocks are
# freed) with a fresh mmap and returns it with munmap on free, so each activation tensor of a
# forward or backward pass (2-10 MB for the default model) costs page faults and zeroing again.
# Keeping freed blocks in the heap is what tcmalloc and jemalloc do, and what PyTorch's CPU
# performance guides recommend; it changes no number, only where freed memory waits.

MALLOC_ENV = "ROBUSTSOUP_MALLOC_TUNING"  # 0: leave glibc's defaults
MMAP_THRESHOLD = 64 << 20  # blocks below 64 MiB come from the heap and return to it
TRIM_THRESHOLD = 256 << 20  # the heap gives memory back to the system beyond 256 MiB free at its top
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr, or no such name (not glibc)
        return False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (``mallopt``); True when set.

    An evaluation pass of the default model (forward and input gradient, 160 images, one thread) took
    99-102 ms against 111-119 ms with glibc's defaults (three alternated runs each, Intel AVX-512 CPU);
    the default DAG 284 s against 319 s, back to back.
    Does nothing (False) off glibc (macOS, musl) or with ``ROBUSTSOUP_MALLOC_TUNING=0``.
    """
    if os.environ.get(MALLOC_ENV, "1") == "0" or not _glibc():
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False


def configure_cuda(tf32: bool = True, deterministic: bool = False) -> dict:
    """Set the CUDA kernels' fast paths for this process; returns what was set (for the job's log).

    ``tf32`` (config ``cuda_tf32``): float32 matrix products and convolutions
    in TF32 on GPUs that have it (compute capability ≥ 8; 10 mantissa bits in
    the products, float32 accumulation), several times the float32 rate of
    those units; false keeps both in full float32 (torch computes
    convolutions in TF32 by default, so false is stricter than torch's
    default). ``cudnn.benchmark`` is on for training and every other job: the
    batch shapes of a job repeat, so timing cuDNN's algorithms once pays for
    itself (the chosen algorithm may differ between runs, a float-rounding
    difference). ``deterministic`` (every rule that trains nothing, see
    :mod:`robustsoup.snakemake_job`) turns it off and asks cuDNN for deterministic algorithms instead, so an
    evaluation computes the same bits in every run and in every job: the
    shards of a sharded evaluation then concatenate to exactly the unsharded
    one (``evaluate.shards``). Does nothing without CUDA.
    """
    if not torch.cuda.is_available():
        return {}
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    return {"tf32": tf32, "cudnn_benchmark": not deterministic, "cudnn_deterministic": deterministic}


def compile_model(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile(model)`` when ``enabled`` (config ``compile`` of a training section), else ``model``.

    The compiled module shares the model's parameters and buffers; the first
    batches of each shape pay the compilation (seconds to minutes), so it
    pays off only for long trainings: opt-in, measured, never a default.
    """
    current_facts().compiled_model(enabled)  # for the job's closing record
    return torch.compile(model) if enabled else model


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (Python's and NumPy's are not used for training)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# --- precision and memory format, chosen for the hardware ------------------------------------
#
# bf16 autocast is 1.5–3× faster than float32 where the hardware computes in bf16 (CUDA GPUs of
# compute capability ≥ 8, x86 CPUs with AVX512-BF16 or AMX, Arm CPUs with the BF16 extension) and
# ~10× *slower* where oneDNN emulates it (an AVX2-only CPU: 7 against 73–82 img/s of APGD
# training). `auto` therefore asks the hardware, never a config tuned on one machine.

PRECISIONS = ("auto", "float32", "bf16", "fp16")
NATIVE_BF16_ENV = "ROBUSTSOUP_NATIVE_BF16"  # 1/0: override the CPU detection (tests, odd kernels)


def _cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (so bf16 autocast is faster than float32).

    x86: the AVX512-BF16 or AMX-BF16 instructions and oneDNN's bf16 path
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` alone is not enough: it is
    True on any AVX-512 CPU, where bf16 is emulated). Arm: the BF16 extension
    (Linux ``bf16`` feature, macOS ``hw.optional.arm.FEAT_BF16``).
    ``ROBUSTSOUP_NATIVE_BF16=1`` or ``0`` overrides the detection.
    """
    forced = os.environ.get(NATIVE_BF16_ENV)
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes")
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "x86"):
        mkldnn = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return bool(mkldnn and ({"avx512_bf16", "amx_bf16"} & _cpu_flags()))
    if machine in ("arm64", "aarch64"):
        if platform.system() == "Darwin":
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True)
            return out.stdout.strip() == "1"
        return "bf16" in _cpu_flags()
    return False


def native_bf16(device: torch.device | str) -> bool:
    """True when ``device`` runs bf16 arithmetic in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_native_bf16()
    return False


def machine_summary() -> str:
    """One line naming what decides the arithmetic: CPU capability, native bf16, threads, CUDA."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"cpu_capability={torch.backends.cpu.get_cpu_capability()} native_bf16={cpu_native_bf16()} "
        f"threads={torch.get_num_threads()} cuda={cuda}"
    )


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


@dataclass(frozen=True)
class Arithmetic:
    """How a job computes: ``precision`` float32, bf16 or fp16 autocast, and the memory format.

    Weights, optimizer state and losses stay float32 under every precision;
    fp16 (CUDA only) scales the loss (:meth:`grad_scaler`).
    """

    precision: str = "float32"
    channels_last: bool = False

    def autocast(self, device: torch.device | str):
        """The autocast context of a forward pass (nothing for float32)."""
        if self.precision == "float32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=torch.device(device).type, dtype=dtype)

    def grad_scaler(self, device: torch.device | str):
        """A loss scaler for fp16 (on ``device``'s type: CUDA, or the CPU, where only tests construct an fp16
        arithmetic), else None."""
        if self.precision == "fp16":
            return torch.amp.GradScaler(torch.device(device).type)
        return None

    @property
    def memory_format(self) -> str:
        return "channels_last" if self.channels_last else "contiguous"

    def record(self) -> dict:
        """What a sidecar and a timing table say of it."""
        return {"precision": self.precision, "memory_format": self.memory_format}

    def __str__(self) -> str:
        return f"{self.precision}, {self.memory_format}"


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """``auto`` → bf16 where ``device`` runs it natively, float32 elsewhere; explicit choices stay.

    Forcing bf16 where it is emulated is allowed but logged as a warning (it is
    several times slower than float32 there); fp16 needs CUDA.
    """
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; expected one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return "bf16" if native_bf16(device) else "float32"
    if requested == "bf16" and device.type in ("cpu", "cuda") and not native_bf16(device):
        what = (
            f"this CPU ({torch.backends.cpu.get_cpu_capability()}, no AVX512-BF16/AMX/Arm BF16)"
            if device.type == "cpu"
            else "this GPU"
        )
        _warn_once(
            f"precision bf16 was asked for, but {what} emulates bf16: expect training several times "
            "slower than float32. Set precision: auto (or float32) to use the fast path here."
        )
    if requested == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision fp16 needs a CUDA device (it runs with a loss scaler there); found {device}. "
            "Set precision: auto, float32 or bf16."
        )
    return requested


# oneDNN on AVX-512 CPUs (torch 2.14) crashes (SIGSEGV) in the backward pass of channels_last
# convolutions with fewer than 16 output channels once the batch size changes (the last, partial
# batch of an epoch) with 2 or more threads, and (session 8) the soup scorer's backward pass with the CPU
# limited to AVX2 (DNNL_MAX_CPU_ISA=AVX2) on one thread too; contiguous tensors are not affected.
CPU_CHANNELS_LAST_MIN_CHANNELS = 16


def _narrowest_conv(model: torch.nn.Module | None) -> int | None:
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] if model is not None else []
    return min(widths) if widths else None


def resolve_channels_last(
    requested: bool | str, device: torch.device | str, model: torch.nn.Module | None = None
) -> bool:
    """``auto`` → channels_last on CUDA and on CPUs with oneDNN (its convolutions prefer it: 1.3× float32
    APGD training of the default model on an AVX-512 CPU, 1.0–1.1× on an AVX2 one; never slower
    in our measurements), contiguous elsewhere, and contiguous on a CPU for a ``model`` with a
    convolution of fewer than 16 output channels (see :data:`CPU_CHANNELS_LAST_MIN_CHANNELS`)."""
    device = torch.device(device)
    width = _narrowest_conv(model) if device.type == "cpu" else None
    narrow = width is not None and width < CPU_CHANNELS_LAST_MIN_CHANNELS
    if isinstance(requested, bool):
        if requested and narrow:
            _warn_once(
                f"channels_last with convolutions of {width} channels can crash oneDNN's "
                "backward pass on this CPU; set channels_last: auto (or false) if training dies"
            )
        return requested
    if requested != "auto":
        raise ValueError(f"channels_last must be true, false or auto; found {requested!r}")
    if narrow:
        return False
    return device.type == "cuda" or (device.type == "cpu" and torch.backends.mkldnn.is_available())


def resolve_arithmetic(
    precision: str, channels_last: bool | str, device: torch.device | str, model: torch.nn.Module | None = None
) -> Arithmetic:
    """The :class:`Arithmetic` a config's ``precision`` / ``channels_last`` mean on ``device`` (for ``model``)."""
    arithmetic = Arithmetic(resolve_precision(precision, device), resolve_channels_last(channels_last, device, model))
    current_facts().resolved(arithmetic)  # for the job's closing record
    return arithmetic


# --- distinct GPUs for concurrent jobs -------------------------------------------------------
#
# Snakemake's `--resources gpu=N` only caps how many GPU jobs run at once; it never tells a job
# which device to use (snakemake issue 281), so N jobs would all land on GPU 0. Each GPU job
# therefore takes a lease: an exclusive flock on `<lease_dir>/gpu<id>.lock`, held for the job's
# lifetime. The kernel drops a flock when its process dies, so a crashed or killed job frees its
# device without any cleanup. The GPUs leased are the ones this process may use: those a
# `CUDA_VISIBLE_DEVICES` already set names (the user's choice, or SLURM's allocation), else all that
# nvidia-smi lists. Inside a SLURM job the leases are the job's own (a folder per job id): jobs the
# SLURM executor submitted each lease all of their own GPUs, and the concurrent jobs of a Snakemake run
# inside one allocation (`sbatch -n 4 snakemake …`) share its GPUs out.

GPU_IDS_ENV = "ROBUSTSOUP_GPU_IDS"
LEASE_DIR_ENV = "ROBUSTSOUP_GPU_LEASE_DIR"
DEFAULT_LEASE_DIR = Path("/tmp/robustsoup-gpu-leases")
LEASE_DIR_MODE = 0o1777  # every user may add lock files, as in /tmp (sticky: none removes another's)
LEASE_FILE_MODE = 0o666  # every user may lock and write another user's lock file


class NoFreeDeviceError(RuntimeError):
    """Every device stayed leased for longer than the timeout."""


def visible_gpu_ids() -> list[str]:
    """The GPUs this process may lease, without initialising CUDA in this process.

    ``ROBUSTSOUP_GPU_IDS`` (comma-separated) wins; then the entries of a ``CUDA_VISIBLE_DEVICES`` already
    set (indices or UUIDs, as the user or SLURM wrote them; empty or ``-1``: none); otherwise
    ``nvidia-smi``'s indices; none when neither is there (a CPU machine).
    """
    listed = os.environ.get(GPU_IDS_ENV)
    if listed is not None:
        return [i.strip() for i in listed.split(",") if i.strip()]
    restricted = os.environ.get("CUDA_VISIBLE_DEVICES")
    if restricted is not None:
        ids = [i.strip() for i in restricted.split(",") if i.strip()]
        return [] if not ids or ids[0].startswith("-") else ids  # CUDA stops at the first invalid entry
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def under_slurm() -> bool:
    """True inside a SLURM job (its leases are then the job's own: :func:`lease_folder`)."""
    return "SLURM_JOB_ID" in os.environ


def lease_folder(lease_dir: str | Path | None = None) -> Path:
    """Where the lock files live: ``lease_dir``, ``ROBUSTSOUP_GPU_LEASE_DIR`` or
    :data:`DEFAULT_LEASE_DIR`, and inside a SLURM job its sub-folder ``slurm-<job id>`` (the ids of
    ``CUDA_VISIBLE_DEVICES`` there are the job's, which another job on the node may number alike)."""
    folder = Path(lease_dir or os.environ.get(LEASE_DIR_ENV) or DEFAULT_LEASE_DIR)
    return folder / f"slurm-{os.environ['SLURM_JOB_ID']}" if under_slurm() else folder


def _shared_folder(folder: Path) -> None:
    """Create ``folder`` (and any missing parent) open to every user (:data:`LEASE_DIR_MODE`), whatever the umask."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for path in missing:
        with contextlib.suppress(PermissionError):  # created by another user meanwhile: theirs to open
            os.chmod(path, LEASE_DIR_MODE)


def _lock_file(path: Path):
    """``path`` opened for locking: created writable by every user (:data:`LEASE_FILE_MODE`); another user's
    file that is not (left by an older version) is opened read-only, which flock accepts."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, LEASE_FILE_MODE)
    except PermissionError:
        return open(path)
    with contextlib.suppress(PermissionError):
        os.fchmod(fd, LEASE_FILE_MODE)  # the umask took bits off a file this process created
    return os.fdopen(fd, "r+")


@contextlib.contextmanager
def gpu_lease(
    gpu_ids: Sequence[str] | None = None,
    lease_dir: str | Path | None = None,
    timeout: float = 3600.0,
    poll: float = 0.5,
    count: int = 1,
) -> Iterator[str | None]:
    """Hold exclusive leases on ``count`` free GPUs and expose only them via ``CUDA_VISIBLE_DEVICES``.

    Yields the leased ids, comma-separated (a data-parallel training of ``gpus: N`` runs its ranks on
    the ``count`` = N of them), or None when there is nothing to lease (no GPUs). The GPUs are
    :func:`visible_gpu_ids` (so a ``CUDA_VISIBLE_DEVICES`` the user set is kept to, and narrowed);
    the lock files are in :func:`lease_folder`, which every user of the machine may use. All ``count``
    are taken at once or none (a job holding some while waiting for more could deadlock with another).
    Must run before CUDA is initialised in the process. Raises :class:`NoFreeDeviceError` after
    ``timeout`` seconds, and ``ValueError`` when fewer than ``count`` GPUs are visible.
    """
    ids = list(gpu_ids) if gpu_ids is not None else visible_gpu_ids()
    if not ids:
        yield None
        return
    if not 1 <= count <= len(ids):
        raise ValueError(
            f"a job asks for {count} GPUs but this machine offers {len(ids)} ({', '.join(ids)}); "
            f"lower the training section's gpus to at most {len(ids)}"
        )
    folder = lease_folder(lease_dir)
    _shared_folder(folder)
    deadline = time.monotonic() + timeout
    while True:
        held: list[tuple[str, object]] = []
        for gpu in ids:
            handle = _lock_file(folder / f"gpu{gpu}.lock")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            held.append((gpu, handle))
            if len(held) == count:
                break
        if len(held) == count:
            break
        for _, handle in held:  # not enough free: give back what was taken, wait
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        if time.monotonic() > deadline:
            busy = f"all of GPUs {ids} stayed leased" if count == 1 else f"fewer than {count} of GPUs {ids} were free"
            raise NoFreeDeviceError(
                f"{busy} for {timeout:.0f} s (lease files in {folder}); "
                "run fewer GPU jobs at once (--resources gpu=N) or free a device"
            )
        time.sleep(poll)
    for _, handle in held:
        if handle.writable():  # who holds it, for a person looking
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
    leased = ",".join(gpu for gpu, _ in held)
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = leased
    try:
        yield leased
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        for _, handle in held:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
