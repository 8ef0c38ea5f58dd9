"""scripts/llama_flags.sh: the llama.cpp build flags follow the CPU's flags, never AMX."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "llama_flags.sh"
AVX2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi2 avx2"
AVX512 = "avx512f avx512dq avx512cd avx512bw avx512vl"


def flags(tmp_path: Path, cpu_flags: str) -> set[str]:
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {cpu_flags}\nbugs\t\t: spectre_v1\n"
                    f"processor\t: 1\nflags\t\t: {cpu_flags}\n")
    out = subprocess.run(["bash", str(SCRIPT), str(info)], check=True, capture_output=True, text=True).stdout
    assert out.count("\n") == 1
    return set(out.split())


def test_avx2_cpu_gets_the_portable_set(tmp_path):
    got = flags(tmp_path, AVX2)
    assert {"-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON"} <= got
    assert not any("AVX512" in f or "VNNI" in f or "AMX" in f for f in got)


def test_avx512_cpu_gets_its_extensions_but_never_amx(tmp_path):
    got = flags(tmp_path, f"{AVX2} avx_vnni {AVX512} avx512vbmi avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8")
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AVX512_VBMI=ON",
            "-DGGML_AVX_VNNI=ON", "-DGGML_NATIVE=OFF"} <= got
    assert not any("AMX" in f for f in got)


@pytest.mark.parametrize("missing", AVX512.split())
def test_partial_avx512_is_not_used(tmp_path, missing):
    """GGML_AVX512 compiles for all five base subsets: one missing means none is enabled, nor
    the extensions that build on it."""
    present = " ".join(f for f in AVX512.split() if f != missing)
    got = flags(tmp_path, f"{AVX2} {present} avx512_vnni avx512_bf16")
    assert not any("AVX512" in f for f in got)


def test_flag_names_match_whole_words(tmp_path):
    """'avx512_vnni' alone is not 'avx_vnni'; a prefix of a flag is not the flag."""
    got = flags(tmp_path, f"{AVX2} {AVX512} avx512_vnni")
    assert "-DGGML_AVX_VNNI=ON" not in got and "-DGGML_AVX512_VNNI=ON" in got
