"""The optics evaluation (smoke run on tiny settings), its energy ledger, the docs generator
and the ``resnetbk optics`` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from resnetbk.cli import main
from resnetbk.optics import random_lorentz
from resnetbk.optics.evaluate import CONSTANTS, energy_ledger, markdown


def test_energy_ledger_accounting() -> None:
    led = energy_ledger(6, 6, photons=1e4, adc_bits=12)
    e_photon = 6.62607015e-34 * 299792458.0 / 1550e-9
    assert led["units"] == [2, 2] and led["optical_macs"] == 64
    eo = led["eo_encoder"]
    assert math.isclose(eo["optical_J"], 2 * 1e4 * e_photon, rel_tol=1e-12)
    adc = next(r for r in eo["rows"] if r["component"].startswith("ADC"))
    assert math.isclose(adc["energy_J"], 8 * CONSTANTS["adc_walden_fom_J"][0] * 2**12)
    assert math.isclose(eo["electrical_J"], sum(r["energy_J"] for r in eo["rows"]
                                                 if r["kind"] == "electrical"))
    assert led["slm_encoder"]["electrical_J"] > eo["electrical_J"]
    gpu = led["gpu"]
    assert math.isclose(gpu["compute_bound_J"], 700 * 2 * 42 / 790e12, rel_tol=1e-12)
    assert all(c["source"] for c in led["constants"].values())


def test_cli_compile_and_simulate(tmp_path: Path, gen: torch.Generator,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    L = random_lorentz(torch.tensor(1.2), generator=gen)
    f = tmp_path / "L.json"
    f.write_text(json.dumps(L.tolist()))
    assert main(["optics", "compile", str(f)]) == 0
    out = capsys.readouterr().out
    assert "diattenuator" in out and "transmission" in out
    w = tmp_path / "L.txt"
    w.write_text("\n".join(" ".join(f"{v:.17g}" for v in row) for row in L.tolist()))
    assert main(["optics", "simulate", str(w), "--photons", "1e4", "--angle-error", "0.005",
                 "--adc-bits", "12", "--samples", "50"]) == 0
    out = capsys.readouterr().out
    ideal = float(out.split("max|L_sim - L| / max|L| = ")[1].split(",")[0])
    assert ideal < 1e-12
    assert "readout rule applied to" in out
    assert main(["optics", "compile", "--random", "2", "--seed", "1"]) == 0
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3")
    assert main(["optics", "compile", str(bad)]) == 2
    assert "16 entries" in capsys.readouterr().err
    assert main(["optics", "compile", str(f), "--random", "1"]) == 2


def test_cli_evaluate_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tiny evaluation through the CLI: JSON, three PNGs, sane numbers, the docs section."""
    assert main(["optics", "evaluate", "--quick", "--out", str(tmp_path)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    results = json.loads((tmp_path / "optics_eval.json").read_text())
    for name in ("optics_accuracy.png", "optics_distortion.png", "optics_energy.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    cl = results["classifier"]
    for kind in ("software", "ideal", "noise_aware"):
        assert 0 <= cl["clean"][kind]["mean"] <= 1
    for rows in cl["sweeps"].values():
        for row in rows:
            for kind in ("ideal", "noise_aware"):
                assert 0 <= row[kind]["mean"] <= 1
                assert 0 <= row[f"{kind}_readout_rule_fraction"]["mean"] <= 1
    for rows in results["distortion"].values():
        for row in rows:
            assert math.isfinite(row["sigma_r_measured"]) and row["sigma_r_predicted"] > 0
    # the shot-noise prediction sigma_P / (1 - P^2) holds at small radius
    small = results["distortion"]["10000"][0]
    assert small["sigma_r_measured"] == pytest.approx(small["sigma_r_predicted"], rel=0.25)
    text = markdown(results)
    assert text.startswith("## Evaluation\n") and "### Verdict" in text
    assert "nan" not in text.lower()
