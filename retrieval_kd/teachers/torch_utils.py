"""Small torch settings shared by the neural teachers."""

from __future__ import annotations

from retrieval_kd import cpu


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def pick_device(device: str | None) -> str:
    """The requested device, else CUDA when present, else CPU."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got '{name}'")
    return table[name]


def resolve_dtype(name: str, device: str | None) -> str:
    """``auto``: bfloat16 on a GPU with bf16 (else float16) or on a CPU with native bf16,
    else float32. Other names pass through. The resolved name is what identities record."""
    if name != "auto":
        return name
    import torch

    dev = pick_device(device)
    if dev.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if dev == "cpu" and cpu.cpu_has_bf16() else "float32"
