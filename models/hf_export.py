"""A pruned model as a self-contained Hugging Face model directory: `AutoModelForCausalLM.from_pretrained(DIR,
trust_remote_code=True)` loads it where circuit-bench is not installed.

The directory holds config.json (the pruned config, with `auto_map`), configuration_circuit.py and
modeling_circuit.py (torch and transformers only), model.safetensors, the tokenizer's files and a generation
config. The modeling file is written from `models/pruned.py` itself, so the exported forward is ours line for
line; only its three imports from `models.types` are replaced by small local copies. A model with per-position
constants takes only its own prompt length and is refused.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

import models.pruned
from models.pruned import PrunedModel
from models.types import SCHEMES, BenchError, length_error

CONFIGURATION, MODELING = "configuration_circuit.py", "modeling_circuit.py"
MODEL_TYPE = "circuit-bench-pruned"
IMPORT = "from models.types import BenchError, length_error, scheme\n"

CONFIGURATION_SOURCE = f'''"""The configuration of a circuit-bench pruned model: its PrunedConfig as a dict."""
from transformers import PretrainedConfig


class CircuitConfig(PretrainedConfig):
    model_type = "{MODEL_TYPE}"

    def __init__(self, pruned: dict | None = None, **kwargs):
        self.pruned = pruned or {{}}
        super().__init__(**kwargs)
'''

WRAPPER_SOURCE = '''

# ---- the Hugging Face wrapper ------------------------------------------------------------------------------

from transformers import GenerationMixin, PreTrainedModel  # noqa: E402
from transformers.modeling_outputs import CausalLMOutputWithPast  # noqa: E402

from .configuration_circuit import CircuitConfig  # noqa: E402

CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"  # renamed in 5


class CircuitForCausalLM(PreTrainedModel, GenerationMixin):
    """The pruned model for `generate()` and pipelines: logits at every position, and a KV cache (`KVCache`) so
    that each new token costs one position."""

    config_class = CircuitConfig
    base_model_prefix = "model"
    _supports_cache_class = False

    def __init__(self, config: CircuitConfig):
        super().__init__(config)
        self.model = PrunedModel(PrunedConfig.from_dict(config.pruned))
        if self.model.cfg.tied:  # the checkpoint holds the embedding once
            self._tied_weights_keys = {"model.lm_head.weight": "model.wte.weight"}
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate() takes the model's own cache from its outputs

    def forward(self, input_ids=None, attention_mask=None, labels=None, past_key_values=None, use_cache=None,
                cache=None, **kwargs):
        past_key_values = cache if cache is not None else past_key_values  # the name changed in transformers 5
        if not getattr(self, "_indexed", False):  # a buffer not in the checkpoint: rebuilt once, where the model is
            for m in self.model.modules():
                if hasattr(m, "kv_list"):
                    m.kv_index = torch.tensor(m.kv_list, dtype=torch.long, device=m.q.weight.device)
            if self.model.cfg.tied:  # not in the checkpoint: the unembedding is the embedding
                self.model.lm_head.weight = self.model.wte.weight
            self._indexed = True
        cache = past_key_values if isinstance(past_key_values, KVCache) else None  # anything else: a fresh start
        if use_cache or cache is not None:
            logits, cache = self.model.cached(input_ids, cache)  # (B, T, V): the positions after the cache's
        else:
            logits = self.model(input_ids)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
        out = CausalLMOutputWithPast(loss=loss, logits=logits)
        out[CACHE_FIELD] = cache if use_cache or past_key_values is not None else None
        return out

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, use_cache=None, cache=None, **kwargs):
        past = cache if cache is not None else past_key_values
        if isinstance(past, KVCache):  # only what the cache has not seen
            input_ids = input_ids[:, past.length:]
        else:
            past = None
        use_cache = self.generation_config.use_cache if use_cache is None else use_cache
        return {"input_ids": input_ids, CACHE_FIELD: past, "use_cache": use_cache}

    def _init_weights(self, module):
        pass  # every weight comes from model.safetensors (a tied unembedding: the embedding)
'''


def shim() -> str:
    """Local stand-ins for what models/pruned.py imports from models.types."""
    table = {name: (s.positional, s.constants) for name, s in SCHEMES.items()}
    return (f"_SCHEMES = {table!r}  # name -> (positional, constants), from circuit-bench's models.types.SCHEMES\n\n\n"
            "class BenchError(Exception):\n    pass\n\n\n"
            "class _Scheme:\n    def __init__(self, positional, constants):\n"
            "        self.positional, self.constants = positional, constants\n\n\n"
            "def scheme(name):\n    return _Scheme(*_SCHEMES[name])\n\n\n"
            + inspect.getsource(length_error) + "\n")


def modeling_source() -> str:
    """models/pruned.py with its models.types import replaced by `shim()`, then the Hugging Face wrapper."""
    src = Path(models.pruned.__file__).read_text()
    if IMPORT not in src:
        raise RuntimeError(f"models/pruned.py no longer imports exactly {IMPORT!r}; update models/hf_export.py")
    return src.replace(IMPORT, shim()) + WRAPPER_SOURCE


def hf_config(model: PrunedModel, tokenizer) -> dict:
    return {"architectures": ["CircuitForCausalLM"], "model_type": MODEL_TYPE, "pruned": model.cfg.to_dict(),
            "auto_map": {"AutoConfig": "configuration_circuit.CircuitConfig",
                         "AutoModelForCausalLM": "modeling_circuit.CircuitForCausalLM"},
            "vocab_size": model.cfg.vocab_size, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": model.cfg.tied, "torch_dtype": "float32", "use_cache": True}


def write_hf(model: PrunedModel, tokenizer, out: Path, card: str) -> None:
    """Write the model directory into `out` (which must exist and be empty)."""
    if model.cfg.positional:
        raise BenchError("a per-position (--ablation mean) model takes only its own prompt length, so it cannot "
                         "generate; --format hf needs a position-free run (extract with --ablation mean-pooled)")
    state = {f"model.{k}": v.detach().to("cpu", torch.float32).clone().contiguous()
             for k, v in model.state_dict().items()
             if not (model.cfg.tied and k == "lm_head.weight")}  # a tied unembedding is the embedding: tied on load
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(model, tokenizer), indent=2, sort_keys=True) + "\n")
    (out / CONFIGURATION).write_text(CONFIGURATION_SOURCE)
    (out / MODELING).write_text(modeling_source())
    generation = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                  "pad_token_id": tokenizer.pad_token_id, "do_sample": False, "use_cache": True}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(str(out))
    (out / "README.md").write_text(card)
