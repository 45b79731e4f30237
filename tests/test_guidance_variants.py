"""benchmarks/guidance_variants.py: every variant judged over several sampler seeds, as decoder_quality.py judges."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import guidance_variants  # noqa: E402
from conftest import run_cli  # noqa: E402

SHIPPED_JUDGE = Path(__file__).resolve().parent.parent / "pretrained" / "judge.safetensors"


def test_parse_variant_reads_every_setting_and_refuses_unknown_ones():
    settings = guidance_variants.parse_variant("cfg=1.5,interval=100:800,ag=2")
    assert settings["cfg"] == 1.5 and settings["interval"] == (100, 800) and settings["ag"] == 2.0 and settings["apg"] is None
    try:
        guidance_variants.parse_variant("cfg=2,speed=3")
    except SystemExit as err:
        assert "unknown setting 'speed'" in str(err)
    else:
        raise AssertionError("an unknown setting was accepted")


def test_each_variant_is_the_mean_of_one_image_set_per_seed(tiny_clip_path, tiny_decoder_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # write_result's default folder: outputs/benchmarks under here
    code = run_cli(guidance_variants.main, ["--clip_model_path", tiny_clip_path, "--decoder_path", tiny_decoder_path,
                                            "--weak_decoder_path", tiny_decoder_path, "--judge_path", SHIPPED_JUDGE, "--per_class", 2,
                                            "--steps", 2, "--seeds", 1, 2, "--no-two_sample", "--device", "cpu", "--name", "variants",
                                            "--variants", "cfg=1.5", "cfg=1,ag=2"])
    result = json.loads((tmp_path / "outputs/benchmarks/variants.json").read_text())
    assert code == 0 and result["seeds"] == [1, 2] and [row["variant"] for row in result["results"]] == ["cfg=1.5", "cfg=1,ag=2"]
    for row in result["results"]:
        ratios = [seed["frechet_ratio"] for seed in row["per_seed"]]
        assert [seed["seed"] for seed in row["per_seed"]] == [1, 2] and row["num_images"] == 2 * 20
        assert abs(row["frechet_ratio"] - sum(ratios) / 2) < 1e-9 and ratios[0] != ratios[1]  # other seeds, other images
        assert set(row["attribute_terciles"]) == {"thickness", "slant", "width"}
        assert all(abs(sum(shares) - 1) < 1e-6 for shares in row["attribute_terciles"].values())
