"""The KV cache, and what it costs: keys and values of past tokens, kept so that decoding
one new token computes one new row of attention instead of the whole T×T matrix again.

Read top to bottom: the cache (append per step, positions for RoPE, optional rolling window
as in Mistral) -> bytes per token and per sequence -> real published model shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from course_lib.config import ConfigError, check_divisible, check_positive, check_positive_values


# --------------------------------------------------------------------------- the cache
class KVCache:
    """Keys and values of one attention layer, shapes (B, H_kv, T_cached, D).

    ``update(k, v)`` appends the new tokens and returns every cached key and value;
    ``seq_len`` is how many tokens were seen so far, so the next token's position (what RoPE
    rotates by) is ``seq_len``. With ``window`` set, only the last ``window`` tokens are kept
    (Mistral's rolling buffer): memory stops growing with the sequence.
    """

    def __init__(self, window: int | None = None):
        if window is not None:  # None keeps every token
            check_positive_values("KVCache (None keeps every token)", window=window)
        self.window = window
        self.k: torch.Tensor | None = None  # (B, H_kv, T_cached, D)
        self.v: torch.Tensor | None = None  # (B, H_kv, T_cached, D)
        self.positions = torch.zeros(0, dtype=torch.long)  # (T_cached,) absolute positions stored
        self.key_positions = self.positions  # (T_k,) positions of the keys the last update returned
        self.seq_len = 0  # tokens seen so far = position of the next token

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, H_kv, T_new, D); return all keys/values to attend to (B, H_kv, T_k, D)."""
        if k.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(f"expected k and v of shape (B, H_kv, T_new, D) with equal B, H_kv, T_new; "
                             f"got {tuple(k.shape)} and {tuple(v.shape)}.")
        if self.k is not None and (k.shape[:2] != self.k.shape[:2] or k.size(-1) != self.k.size(-1)):
            raise ValueError(f"this cache holds (B, H_kv, T, D) = {tuple(self.k.shape)}; the new keys are "
                             f"{tuple(k.shape)}. Use one cache per layer and per batch (call reset()).")
        new_pos = torch.arange(self.seq_len, self.seq_len + k.size(2))  # (T_new,)
        k_all = k if self.k is None else torch.cat([self.k, k], dim=2)  # (B, H_kv, T_k, D)
        v_all = v if self.v is None else torch.cat([self.v, v], dim=2)  # (B, H_kv, T_k, D)
        self.key_positions = torch.cat([self.positions, new_pos])  # (T_k,)
        self.seq_len += k.size(2)
        keep = k_all.size(2) if self.window is None else min(self.window, k_all.size(2))
        self.k, self.v = k_all[:, :, -keep:], v_all[:, :, -keep:]  # (B, H_kv, keep, D)
        if keep < k_all.size(2):  # copy, so the dropped tokens' memory is really freed
            self.k, self.v = self.k.clone(), self.v.clone()
        self.positions = self.key_positions[-keep:]  # (keep,)
        return k_all, v_all

    def reset(self) -> None:
        self.__init__(self.window)

    @property
    def nbytes(self) -> int:
        """Bytes held now (keys + values)."""
        return 0 if self.k is None else self.k.nelement() * self.k.element_size() * 2


# --------------------------------------------------------------------------- what it costs
def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int = 1,
                   batch: int = 1, bytes_per_value: float = 2) -> int:
    """Bytes of a KV cache: 2 (K and V) × layers × kv heads × head size × tokens × batch ×
    bytes per number (2 for fp16/bf16, 4 for fp32, 1 for int8 caches)."""
    for name, val in (("n_layers", n_layers), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim),
                      ("seq_len", seq_len), ("batch", batch)):
        if not isinstance(val, int) or val < 0:
            raise ValueError(f"{name}={val!r}: expected a non-negative int.")
    if bytes_per_value <= 0:
        raise ValueError(f"bytes_per_value={bytes_per_value!r}: expected e.g. 2 (fp16), 4 (fp32) or 1 (int8).")
    return int(2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_value)


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a published config.json that fix the KV-cache size."""
    name: str
    n_layers: int  # num_hidden_layers
    d_model: int  # hidden_size
    n_heads: int  # num_attention_heads
    n_kv_heads: int  # num_key_value_heads (1 = MQA, < n_heads = GQA)
    max_positions: int  # max_position_embeddings (the trained context)
    sliding_window: int | None = None  # Mistral: the cache never holds more than this
    head_dim: int | None = None  # None = d_model // n_heads

    def __post_init__(self):
        try:
            check_positive(self, "n_layers", "d_model", "n_heads", "n_kv_heads", "max_positions")
            check_positive(self, "sliding_window", "head_dim", allow_none=True)
            check_divisible(self, "n_heads", "n_kv_heads", why="each key/value head serves the same number "
                            "of query heads; check the config numbers")
            if self.head_dim is None:
                check_divisible(self, "d_model", "n_heads", why="head_dim=None means d_model // n_heads; "
                                "give head_dim explicitly if the model's heads are not d_model // n_heads wide")
        except ConfigError as err:  # say which published model the numbers belong to
            raise ConfigError(f"{self.name}: {err}") from None

    @property
    def D(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def attention(self) -> str:
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else f"GQA ({self.n_heads // self.n_kv_heads} q heads per kv head)"

    def bytes_per_token(self, bytes_per_value: float = 2) -> int:
        return kv_cache_bytes(self.n_layers, self.n_kv_heads, self.D, 1, 1, bytes_per_value)

    def cache_bytes(self, seq_len: int, batch: int = 1, bytes_per_value: float = 2) -> int:
        """Bytes for `batch` sequences of `seq_len` tokens; a sliding window caps the tokens kept."""
        kept = seq_len if self.sliding_window is None else min(seq_len, self.sliding_window)
        return kv_cache_bytes(self.n_layers, self.n_kv_heads, self.D, kept, batch, bytes_per_value)


# From each model's published config.json (Hugging Face Hub), typed in here so nothing is downloaded.
PUBLISHED_CONFIGS = {
    "GPT-2 small": ModelShape("GPT-2 small", 12, 768, 12, 12, 1024),
    "LLaMA-2-7B": ModelShape("LLaMA-2-7B", 32, 4096, 32, 32, 4096),
    "LLaMA-2-13B": ModelShape("LLaMA-2-13B", 40, 5120, 40, 40, 4096),
    "LLaMA-2-70B": ModelShape("LLaMA-2-70B", 80, 8192, 64, 8, 4096),
    "Mistral-7B-v0.1": ModelShape("Mistral-7B-v0.1", 32, 4096, 32, 8, 32768, sliding_window=4096),
    "Llama-3-8B": ModelShape("Llama-3-8B", 32, 4096, 32, 8, 8192),
    "Falcon-7B": ModelShape("Falcon-7B", 32, 4544, 71, 1, 2048),
}


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
