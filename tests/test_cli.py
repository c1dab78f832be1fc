"""The pi2lab CLI: JSON output, and one line with exit status 2 on bad input."""

import json
import subprocess
import sys

import jax
import pytest

import pi2lab as pl
from pi2lab.cli import main

CFG = pl.ModelConfig(
    architecture="bamboo",
    vocab_size=97,
    hidden_size=48,
    intermediate_size=56,
    num_layers=2,
    num_heads=6,
    num_kv_heads=2,
    head_dim=10,
    ffn_activation="drelu",
    max_position_embeddings=64,
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    params = pl.init_params(CFG, jax.random.key(0), std=0.2)
    return pl.save_pretrained(
        pl.Model(config=CFG, params=params), tmp_path_factory.mktemp("cli") / "m"
    )


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "pi2lab.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_generate_builtin_json():
    proc = run_cli(
        "generate",
        "--model",
        "builtin",
        "--prompt",
        "Return the number of",
        "--max-new-tokens",
        "12",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["new_tokens"] >= 1 and out["text"]
    assert out["decode_tokens_per_s"] > 0 or out["new_tokens"] < 3


def test_info_counts_every_parameter(ckpt, capsys):
    assert main(["info", "--model", str(ckpt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    params = pl.load_pretrained(ckpt).params
    assert info["parameters"] == sum(a.size for a in jax.tree.leaves(params))
    assert info["bytes_ffn"] == 2 * 3 * 56 * 48 * 4
    assert info["architecture"] == "bamboo" and info["ffn_activation"] == "drelu"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--model", "{ckpt}", "--prompt", "hi"], "no tokenizer.json"),
        (["generate", "--model", "/nonexistent/model", "--prompt", "hi"], "no such checkpoint"),
        (["info", "--model", "/nonexistent/model"], "no such checkpoint"),
        (["generate", "--model", "builtin", "--prompt", "   "], "prompt is empty"),
        (["generate", "--model", "builtin", "--prompt", "word " * 600], "context"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(ckpt, args, message):
    proc = run_cli(*[a.replace("{ckpt}", str(ckpt)) for a in args])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("pi2lab ")
