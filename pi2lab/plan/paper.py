"""PowerInfer-2's published results, as data: :mod:`pi2lab.plan.reproduce` sets its simulated
figures beside them; the phone profiles (:mod:`pi2lab.plan.phones`), the figures
(:mod:`pi2lab.viz.plan`) and the notebooks read them from here, as should anything else that
quotes one.

Source: arXiv 2406.06282, copied into :data:`PAPER`; tokens/s unless named otherwise.
"""

from __future__ import annotations

SOURCE = "PowerInfer-2, arXiv 2406.06282 (v1 decode tables, v3 ablation)"

MODELS: dict[str, str] = {
    "llama-7b": "Llama-7B (ReLU)",
    "llama-13b": "Llama-13B (ReLU)",
    "turbosparse-mistral-7b": "TurboSparse-Mistral-7B",
    "turbosparse-mixtral-47b": "TurboSparse-Mixtral-47B",
}
"""Decode-table models: built-in shape -> the paper's row name."""

ENGINES: dict[str, str] = {
    "powerinfer2": "PowerInfer-2",
    "llama.cpp-mmap": "llama.cpp",
    "llmflash": "LLM in a Flash",
}
"""Simulated engines -> the paper's column name."""

PAPER: dict = {
    # Decode tokens/s, OnePlus 12, 50% of FFN weights on flash (v1).
    "decode_oneplus12": {
        "llama-7b": {"powerinfer2": 11.7, "llama.cpp-mmap": 0.4, "llmflash": 2.8},
        "llama-13b": {"powerinfer2": 5.4, "llama.cpp-mmap": 0.2, "llmflash": 1.7},
        "turbosparse-mistral-7b": {"powerinfer2": 10.5, "llama.cpp-mmap": 0.4, "llmflash": 2.4},
        "turbosparse-mixtral-47b": {
            "powerinfer2": 9.96,
            "llama.cpp-mmap": 0.5,
            "llmflash": 2.4,
        },
    },
    # Bamboo-7B, OnePlus 12, 50% FFN on flash (v3), cumulative tokens/s.
    "ablation": {
        "baseline": 0.40,
        "+ neuron bundling": 1.09,
        "+ neuron cache": 4.18,
        "+ cluster pipeline": 9.60,
    },
    "ablation_hit_rate": 0.95,
    # TurboSparse-Mixtral-47B, OnePlus 12, all 19 GB available.
    "mixtral_19gb": {"powerinfer2": 11.68, "llmflash": 3.74, "llama.cpp-mmap": 0.55},
    "mixtral_half_ffn": 9.96,
    "in_memory_mistral": 12.5,  # motivation: TurboSparse-Mistral-7B in memory, OnePlus 12
    "in_memory_over_llama_cpp": 2.24,  # models that fit: in-memory decode over llama.cpp
    "llmflash_io_share": 0.767,  # motivation: LLM in a Flash's I/O share of latency
}
"""The paper's figures; tokens/s unless named otherwise."""

TARGETS = {"within": 0.25, "speedup_within": 0.35}
"""What a faithful reproduction would show (reported, never tuned toward): PowerInfer-2's
tokens/s within 25% of the paper's, its speed-ups over llama.cpp and LLM in a Flash within 35%
of the paper's."""
