"""The pi2lab CLI: JSON output, and one line with exit status 2 on bad input."""

import dataclasses
import json
import subprocess
import sys

import jax
import pytest

import pi2lab as pl
from pi2lab.cli import main
from tests.conftest import tiny_config

CFG = tiny_config()


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


GEN = ["generate", "--model", "builtin", "--prompt", "hi", "--max-new-tokens", "2"]
# sampling knobs are checked before the (missing) layout is opened
GEN_OFFLOAD = [
    "generate",
    "--model",
    "/nonexistent/flash",
    "--engine",
    "llmflash",
    "--prompt",
    "hi",
]


def test_info_kernels_and_sparse_memory(capsys):
    assert main(["info", "--kernels", "--sparse", "--cluster-size", "8", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "bamboo" and info["kernel path"] in ("native", "jax")
    assert (
        "trained predictors" in info["sparse decoder"]
        and "clusters of [8]" in info["sparse decoder"]
    )
    parts = ("hot", "cold", "other", "dense_ffn", "predictor")
    assert info["sparse total MB"] == pytest.approx(
        sum(info[f"sparse {k} MB"] for k in parts), abs=0.05
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--model", "{ckpt}", "--prompt", "hi"], "no tokenizer.json"),
        (["generate", "--model", "/nonexistent/model", "--prompt", "hi"], "no such checkpoint"),
        (["info", "--model", "/nonexistent/model"], "no such checkpoint"),
        (["generate", "--model", "builtin", "--prompt", "   "], "prompt is empty"),
        (["generate", "--model", "builtin", "--prompt", "word " * 600], "context"),
        (["verify", "/nonexistent/flash"], "no flash.json"),
        (["convert", "--model", "{ckpt}", "--out", "{ckpt}.f", "--cluster-size", "5"], "56"),
        ([*GEN, "--temperature", "-1"], "temperature=-1.0: expected a finite number >= 0"),
        ([*GEN, "--top-p", "2"], "top_p=2.0: expected 0 < top_p <= 1"),
        ([*GEN, "--top-k", "-1"], "top_k=-1: expected an integer >= 0"),
        ([*GEN, "--engine", "sparse", "--temperature", "nan"], "temperature=nan"),
        ([*GEN_OFFLOAD, "--top-p", "0"], "top_p=0.0: expected 0 < top_p <= 1"),
        ([*GEN_OFFLOAD, "--prefetch", "-1"], "prefetch -1"),
        ([*GEN, "--prefetch", "1"], "--prefetch: applies to the offload engines"),
        (["profile", "--tokens", "0", "--out", "{ckpt}.npz"], "token limit=0"),
        (["train-predictors", "--tokens", "-5", "--out", "{ckpt}.p"], "token limit=-5"),
        (["fidelity", "--sequences", "0"], "sequences=0: expected at least 1"),
        (["fidelity", "--length", "1"], "length=1: expected at least 2"),
        (["fidelity", "--sequences", "9999", "--length", "512"], "the held_out split has"),
        (["train", "--out", "{ckpt}.t", "--steps", "0"], "steps=0: expected an integer >= 1"),
        (["train", "--out", "{ckpt}.t", "--lr", "-1"], "learning_rate=-1.0"),
        (["bench", "dense", "--steps", "-1"], "steps=-1: expected at least 1"),
        (["train-predictors", "--steps", "0", "--out", "{ckpt}.p"], "steps=0"),
        (
            ["convert", "--model", "{ckpt}", "--out", "{ckpt}.flash", "--dtype", "int8"],
            "hidden size 48",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(ckpt, args, message):
    proc = run_cli(*[a.replace("{ckpt}", str(ckpt)) for a in args])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("pi2lab ")


def test_convert_then_verify(ckpt, tmp_path, capsys):
    out = tmp_path / "flash"
    assert (
        main(
            [
                "convert",
                "--model",
                str(ckpt),
                "--out",
                str(out),
                "--dtype",
                "f16",
                "--json",
            ]
        )
        == 0
    )
    converted = json.loads(capsys.readouterr().out)
    assert main(["verify", str(out), "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert converted == verified and verified["dtype"] == "f16"
    assert verified["ffn_bytes"] == 2 * 56 // verified["cluster_size"] * verified["stride"]


def test_sparse_engine_generates_like_dense_with_the_oracle(tmp_path):
    """Without predictors beside the model, --engine sparse uses the oracle: same tokens."""
    from pi2lab.train.tokenizer import train_bpe

    tok = train_bpe([f"word{i} and word{i + 1} then more words" for i in range(50)], 300)
    cfg = dataclasses.replace(CFG, vocab_size=tok.get_vocab_size())
    params = pl.init_params(cfg, jax.random.key(1), std=0.2)
    path = pl.save_pretrained(
        pl.Model(config=cfg, params=params, tokenizer=tok), tmp_path / "with-tok"
    )
    outs = {}
    for engine in ("dense", "sparse"):
        proc = run_cli(
            "generate",
            "--model",
            str(path),
            "--prompt",
            "word3 and",
            "--engine",
            engine,
            "--max-new-tokens",
            "8",
            "--json",
        )
        assert proc.returncode == 0, proc.stderr
        outs[engine] = json.loads(proc.stdout)["text"]
        if engine == "sparse":
            assert "oracle" in proc.stderr
    assert outs["dense"] == outs["sparse"]


def test_profile_train_predictors_fidelity_pipeline(tmp_path):
    trace = tmp_path / "trace.npz"
    proc = run_cli("profile", "--model", "builtin", "--tokens", "300", "--out", str(trace))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["tokens"] == 300 and trace.is_file()
    assert all(0.5 < s < 1 for s in summary["sparsity_per_layer"])

    out = tmp_path / "sparse-model"
    proc = run_cli(
        "train-predictors",
        "--model",
        "builtin",
        "--tokens",
        "2000",
        "--steps",
        "20",
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (
        len(report["layers"]) == len(report["plan"]) and (out / "predictors.safetensors").is_file()
    )

    proc = run_cli(
        "fidelity",
        "--model",
        str(out),
        "--sequences",
        "1",
        "--length",
        "16",
        "--thresholds",
        "-100",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)["rows"][0]
    assert abs(row["perplexity_increase"]) < 1e-3 and row["greedy_agreement"] == 1.0


def test_profile_refuses_a_model_without_tokenizer(ckpt, tmp_path):
    proc = run_cli("profile", "--model", str(ckpt), "--out", str(tmp_path / "t.npz"))
    assert proc.returncode == 2 and "no tokenizer.json" in proc.stderr


def test_plan_refuses_zero_tokens_per_prompt(ckpt, tmp_path, capsys):
    layout = tmp_path / "flash"
    assert main(["convert", "--model", str(ckpt), "--out", str(layout), "--json"]) == 0
    capsys.readouterr()
    argv = ["plan", "--model", str(layout), "--memory-budget", "0.5", "--profile", "oneplus12"]
    assert main([*argv, "--tokens", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pi2lab plan: error: 3 prompts x 0 tokens") and err.count("\n") == 1


def test_help_lists_every_command_in_order():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert commands == [
        "generate",
        "profile",
        "train-predictors",
        "fidelity",
        "info",
        "train",
        "convert",
        "verify",
        "bench",
        "plan",
        "profile-hw",
        "reproduce",
        "simulate",
        "sweep",
    ]


def test_fidelity_reports_quantized_copies_against_float(capsys):
    from pi2lab.model.pretrained import load_pretrained
    from pi2lab.predict.fidelity import quantization_fidelity
    from pi2lab.train.corpus import corpus_sequences

    argv = ["fidelity", "--sequences", "1", "--length", "24", "--thresholds", "0"]
    assert main([*argv, "--weights", "int8", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["quantized"]
    m = load_pretrained("builtin")
    seqs = corpus_sequences(m, "held_out", 1, 24)
    want = quantization_fidelity(m, {"int8": load_pretrained("builtin", weights="int8")}, seqs)
    assert got["int8"] == pytest.approx(want["int8"]) and got["tokens"] == want["tokens"] == 23
    assert main([*argv, "--weights", "int4"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("int4: perplexity ") and "greedy agreement" in line
