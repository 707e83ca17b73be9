"""MergeAdapterWeights: fold a LoRA adapter into its base model and save a plain HF folder."""
from __future__ import annotations

from pathlib import Path


def merge_adapter(base_path: Path, adapter_path: Path, out_dir: Path, *, trust_remote_code: bool = False) -> None:
    """Merge the adapter at adapter_path into the fp32 base and save model, tokenizer and generation config.

    The base is always loaded in full precision, also for a QLoRA adapter: merging into 4-bit weights would
    round the merged weights back to 4 bits and wash out the small updates the adapter learned.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base_path, adapter_path, out_dir = Path(base_path), Path(adapter_path), Path(out_dir)
    if not (adapter_path / "adapter_config.json").is_file():
        # peft would take anything else for a hub name and try to download it
        raise FileNotFoundError(f"{adapter_path} is not a LoRA adapter folder (no adapter_config.json)")
    kwargs = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, **kwargs)
    merged = PeftModel.from_pretrained(base, adapter_path, is_trainable=False).merge_and_unload()
    merged.save_pretrained(out_dir)
    # the base's tokenizer, not one saved by training (that one may carry a training max_length or padding side)
    AutoTokenizer.from_pretrained(base_path, **kwargs).save_pretrained(out_dir)
    if (base_path / "generation_config.json").is_file():
        GenerationConfig.from_pretrained(base_path, local_files_only=True).save_pretrained(out_dir)
