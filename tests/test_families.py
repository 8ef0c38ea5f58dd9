"""The model-family registry, and no branch on a family's name outside retrieval_kd/families."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from retrieval_kd import families
from retrieval_kd.errors import RkdError

PACKAGE = Path(families.__file__).parents[1]
NAMES = re.compile(r"""["'](bi-encoder|splade|colbert|cross-encoder|dense)["']""")
OTHER_MEANINGS = {
    "models/registry.py": "the model registry's download formats (sentence-transformer | splade | causal-lm)",
    "embcache.py": "the cache's vector layouts (dense rows | sparse CSR), which a family picks",
    "pipeline/kinds/retrieve.py": "the retrieve entry kinds (bm25 | dense | fusion)",
    "cli/retrieve_cmd.py": "the rkd retrieve commands (bm25 | dense | fusion)",
}
"""Files where one of the names means something other than a model family."""


def test_registry_names_aliases_and_parts():
    assert families.FAMILIES == ("bi-encoder", "splade", "colbert", "cross-encoder")
    assert [f.name for f in families.all_families()] == list(families.FAMILIES)
    assert families.get("dense") is families.get("bi-encoder") is families.BI_ENCODER
    assert families.index_kinds() == ("index.dense", "index.splade", "index.colbert")
    assert not families.CROSS_ENCODER.indexable and families.COLBERT.teacher_spec is None
    assert families.TEACHER_KINDS == ("cross-encoder", "bi-encoder", "splade")
    assert [s.model_fields["kind"].annotation.__args__[0] for s in families.teacher_specs()] \
        == list(families.TEACHER_KINDS)
    assert families.teacher_family("bm25") is None and families.teacher_family("splade") is families.SPLADE
    with pytest.raises(RkdError, match="unknown model family 'sparse'"):
        families.get("sparse")
    with pytest.raises(RkdError, match="cross-encoder is not indexable"):
        families.CROSS_ENCODER.index_encoder("minilm-l6")


def test_no_family_name_outside_the_families_package():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("families/") or rel in OTHER_MEANINGS:
            continue
        found += [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
                  if NAMES.search(line)]
    assert not found, "ask retrieval_kd.families instead of naming a family:\n" + "\n".join(found)
